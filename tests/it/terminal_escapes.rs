//! Text output never passes control characters from an archive or a file name to the
//! terminal: `info` (job name, recipient labels: unauthenticated without a key), `list`
//! (paths, link targets), `verify` and error messages show them escaped (`\n`, `\x1b`,
//! `\u{202e}`), one line per line. `--json` keeps the exact values, escaped the JSON way.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::recipient::Recipient;

/// A file name with a newline (a fake line), a colour escape and a bidi override.
const EVIL_NAME: &str = "evil\n\x1b[31mred\u{202e}txt";
const EVIL_NAME_SHOWN: &str = "evil\\n\\x1b[31mred\\u{202e}txt";
const EVIL_TARGET: &str = "target\n\x1b[31m";
const EVIL_TARGET_SHOWN: &str = "target\\n\\x1b[31m";
const EVIL_JOB: &str = "nightly\n\x1b[2Jok: fake line";
const EVIL_JOB_SHOWN: &str = "nightly\\n\\x1b[2Jok: fake line";
/// The label comes from the public key's file name.
const EVIL_LABEL: &str = "ops\x1b[31m\nfake";
const EVIL_LABEL_SHOWN: &str = "ops\\x1b[31m\\nfake";

/// An archive for alice (under the hostile label) of `src/` holding a hostile file name and
/// a link with a hostile target, made with a hostile job name.
fn hostile_archive(t: &TestDir) -> PathBuf {
    let src = t.join("src");
    write_file(&src.join(EVIL_NAME), b"data\n", 0o644);
    std::os::unix::fs::symlink(EVIL_TARGET, src.join("link")).unwrap();
    let public = t.join(format!("{EVIL_LABEL}.pub"));
    fs::copy(alice_pub(), &public).unwrap();
    let r = recipient(&public);
    let archive = t.join("a.coffer");
    let mut opts = BackupOptions::new(vec![src], archive.clone());
    opts.job_name = EVIL_JOB.into();
    backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap();
    archive
}

/// No raw control character may reach the terminal; newlines only end lines.
fn assert_clean(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "{what}: raw {bad:?} in {text:?}");
}

fn run(args: &[&str], paths: &[&Path], code: i32) -> (String, String) {
    let out = coffer_cmd()
        .args(args)
        .args(paths)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_clean("stdout", &stdout);
    assert_clean("stderr", &stderr);
    (stdout, stderr)
}

#[test]
fn regression_list_escapes_control_characters_in_paths() {
    let t = TestDir::new();
    let archive = hostile_archive(&t);
    let key = alice_key();

    let (stdout, _) = run(&["list", "-i"], &[&key, &archive], 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per entry: {stdout}");
    assert!(
        lines.contains(&format!("src/{EVIL_NAME_SHOWN}").as_str()),
        "{stdout}"
    );

    let (stdout, _) = run(&["list", "--long", "-i"], &[&key, &archive], 0);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout.contains(&format!("src/link -> {EVIL_TARGET_SHOWN}\n")),
        "{stdout}"
    );

    // JSON keeps the exact bytes; serde_json escapes them.
    let (stdout, _) = run(&["list", "--json", "-i"], &[&key, &archive], 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entries = doc["archives"][0]["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == format!("src/{EVIL_NAME}"))
    );
    assert!(entries.iter().any(|e| e["target"] == EVIL_TARGET));
}

#[test]
fn regression_info_escapes_job_name_and_labels() {
    let t = TestDir::new();
    let archive = hostile_archive(&t);

    let (stdout, _) = run(&["info"], &[&archive], 0);
    assert!(
        stdout.contains(&format!("  job:         {EVIL_JOB_SHOWN}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(" ({EVIL_LABEL_SHOWN})\n")),
        "{stdout}"
    );
    assert!(!stdout.lines().any(|l| l.starts_with("ok: ")), "{stdout}");

    let (stdout, _) = run(&["info", "--json"], &[&archive], 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["archives"][0]["job_name"], EVIL_JOB);
    assert_eq!(doc["archives"][0]["recipients"][0]["label"], EVIL_LABEL);
}

#[test]
fn regression_verify_and_errors_escape_archive_paths() {
    let t = TestDir::new();
    let archive = hostile_archive(&t);
    // An archive file whose own name is hostile (a glob over a storage folder finds it).
    let named = t.join("bad\n\x1b[31m.coffer");
    let named_shown = format!("{}", t.join("bad\\n\\x1b[31m.coffer").display());
    fs::copy(&archive, &named).unwrap();

    let (stdout, _) = run(&["verify"], &[&named], 0);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!("ok: {named_shown} (")),
        "{stdout}"
    );

    let mut bytes = fs::read(&named).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    fs::write(&named, &bytes).unwrap();
    let (_, stderr) = run(&["verify"], &[&named], 2);
    assert!(
        stderr.contains(&format!("error: {named_shown}: ")),
        "{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            ["error: ", "FAILED: ", "hint: "]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line that is not coffer's: {line:?} in {stderr}"
        );
    }

    // An error naming a path from the archive: the file is already in the target.
    let to = t.join("out");
    write_file(&to.join("src").join(EVIL_NAME), b"mine\n", 0o644);
    let (_, stderr) = run(
        &["restore", "--to", to.to_str().unwrap(), "-i"],
        &[&alice_key(), &archive],
        2,
    );
    assert!(stderr.contains(EVIL_NAME_SHOWN), "{stderr}");
    for line in stderr.lines() {
        assert!(
            line.starts_with("error: ") || line.starts_with("hint: "),
            "a line that is not coffer's: {line:?} in {stderr}"
        );
    }
}
