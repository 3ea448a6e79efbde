//! Generated help: shell completion scripts and the man page come from the same definitions
//! as `--help`; every subcommand's help has an example and every option a help text.

use crate::common::*;

fn stdout_ok(args: &[&str]) -> String {
    let out = coffer_cmd()
        .args(args)
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        out.stderr.is_empty(),
        "{args:?}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The names listed under `Commands:` in a help text (without `help`).
fn commands_in(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            if line.trim().is_empty() || !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap().to_string();
            if name != "help" {
                out.push(name);
            }
        }
    }
    out
}

/// Every subcommand path below the top level, depth first: `["backup"]`, `["job", "run"]`.
fn all_subcommands() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = commands_in(&stdout_ok(&["help"]))
        .into_iter()
        .map(|c| vec![c])
        .collect();
    while let Some(path) = todo.pop() {
        let mut args = vec!["help"];
        args.extend(path.iter().map(String::as_str));
        for sub in commands_in(&stdout_ok(&args)) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push(path);
    }
    out
}

const CORE: &[&str] = &[
    "keygen",
    "backup",
    "restore",
    "info",
    "list",
    "verify",
    "rekey",
    "completions",
    "man",
];

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = stdout_ok(&["completions", shell]);
        assert!(script.len() > 200, "{shell}: script too short");
        assert!(script.contains("coffer"), "{shell}: no `coffer`");
        for sub in ["backup", "restore", "verify", "rekey"] {
            assert!(script.contains(sub), "{shell}: no subcommand {sub}");
        }
        // Flags of subcommands are completed too.
        assert!(script.contains("recipient"), "{shell}: no --recipient");
    }
    let bash = stdout_ok(&["completions", "bash"]);
    assert!(
        bash.contains("complete"),
        "bash script registers with `complete`"
    );
    let fish = stdout_ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c coffer"));
    let zsh = stdout_ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef coffer"));
    let ps = stdout_ok(&["completions", "powershell"]);
    assert!(ps.contains("Register-ArgumentCompleter"));
}

#[test]
fn unknown_shell_is_a_usage_error() {
    coffer_cmd()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stdout("");
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let man = stdout_ok(&["man"]);
    assert!(
        man.lines().any(|l| l.starts_with(".TH coffer 1")),
        "no .TH line"
    );
    assert!(man.contains(".SH NAME") && man.contains(".SH SYNOPSIS"));
    assert!(man.contains(".SH SUBCOMMANDS"));
    for sub in CORE {
        assert!(
            man.contains(&format!("coffer\\-{sub}(1)")),
            "man page does not name {sub}"
        );
    }
    for sub in commands_in(&stdout_ok(&["help"])) {
        assert!(man.contains(&format!("coffer\\-{}", sub.replace('-', "\\-"))));
    }
    // The exit codes are documented there.
    assert!(man.contains("Exit codes"));
}

#[test]
fn every_subcommand_help_has_an_example() {
    let subs = all_subcommands();
    for core in CORE {
        assert!(
            subs.iter().any(|p| p == &[core.to_string()]),
            "{core} is not listed by `coffer help`"
        );
    }
    let mut missing = Vec::new();
    for path in &subs {
        let mut args = vec!["help"];
        args.extend(path.iter().map(String::as_str));
        let help = stdout_ok(&args);
        let example = help.split_once("Example").map(|(_, rest)| {
            rest.lines()
                .skip(1)
                .any(|l| l.trim_start().starts_with("coffer "))
        });
        if example != Some(true) {
            missing.push(path.join(" "));
        }
        // `--help` shows the same example.
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        assert!(stdout_ok(&args).contains("Example"), "{path:?} --help");
    }
    assert!(missing.is_empty(), "no example in the help of: {missing:?}");
}

/// Options and arguments of a help text whose description is empty.
fn undocumented(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    let mut section = "";
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        if section != "Options:" && section != "Arguments:" {
            continue;
        }
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let is_item = (2..=6).contains(&indent)
            && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['));
        if !is_item {
            continue;
        }
        // The text follows the flag after two spaces, or (long help) on the next line.
        let same_line = t
            .split_once("  ")
            .map(|(_, text)| !text.trim().is_empty())
            .unwrap_or(false);
        let next_line = lines
            .get(i + 1)
            .map(|n| {
                let nt = n.trim_start();
                n.len() - nt.len() > indent + 2 && !nt.is_empty()
            })
            .unwrap_or(false);
        if !same_line && !next_line {
            out.push(t.to_string());
        }
    }
    out
}

#[test]
fn every_option_has_a_help_line() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for path in all_subcommands() {
        let mut args = vec!["help"];
        args.extend(path.iter().map(String::as_str));
        let help = stdout_ok(&args);
        assert!(help.contains("Options:"), "{path:?}: no options section");
        for item in undocumented(&help) {
            bad.push(format!("coffer {}: {item}", path.join(" ")));
        }
        checked += help
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
            .count();
    }
    let top = stdout_ok(&["help"]);
    for item in undocumented(&top) {
        bad.push(format!("coffer: {item}"));
    }
    assert!(
        checked > 40,
        "only {checked} option lines found: parser broken?"
    );
    assert!(
        bad.is_empty(),
        "options without help text:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_parser_finds_a_missing_help_line() {
    let help = "Usage: x\n\nOptions:\n  -o, --output <FILE>  Archive file to write\n      --bare\n  -h, --help           Print help\n";
    assert_eq!(undocumented(help), vec!["--bare"]);
    let long = "Options:\n  -v, --verbose\n          More output\n\n      --bare\n\n  -h, --help\n          Print help\n";
    assert_eq!(undocumented(long), vec!["--bare"]);
}
