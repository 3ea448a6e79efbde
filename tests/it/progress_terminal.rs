//! Progress on a terminal: `coffer backup` draws a progress line on stderr when stderr is a
//! terminal, and none when stderr is not a terminal, with `-q`, or with `--json`.
//!
//! The terminal is a pseudo-terminal made by util-linux `script -qec CMD /dev/null`; stdout
//! is sent to /dev/null inside it so that only stderr reaches the terminal capture. Without
//! `script` these tests print why and pass.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Whether util-linux `script` is usable here.
fn have_script() -> bool {
    match Command::new("script").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let v = String::from_utf8_lossy(&out.stdout);
            if v.contains("util-linux") {
                true
            } else {
                eprintln!("skipped: `script` is not util-linux ({v})");
                false
            }
        }
        _ => {
            eprintln!("skipped: util-linux `script` is not installed");
            false
        }
    }
}

fn q(p: &Path) -> String {
    let s = p.to_str().unwrap();
    assert!(!s.contains('\''), "unquotable path {s}");
    format!("'{s}'")
}

struct Fixture {
    t: TestDir,
    src: PathBuf,
}

/// A folder with one 64 MiB file (sparse: quick to make, read as zeros).
fn fixture() -> Fixture {
    let t = TestDir::new();
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    let f = File::create(src.join("big.bin")).unwrap();
    f.set_len(64 << 20).unwrap();
    Fixture { t, src }
}

impl Fixture {
    /// `coffer backup` of the source into `name`, with `extra` arguments, as a shell line.
    fn backup_line(&self, name: &str, extra: &str) -> String {
        let bin = assert_cmd::cargo::cargo_bin("coffer");
        format!(
            "{} backup {} -o {} -r {} --compression none {extra}",
            q(&bin),
            q(&self.src),
            q(&self.t.join(name)),
            q(&alice_pub()),
        )
    }

    /// Run `line` under a pseudo-terminal with stdout discarded; returns what the terminal
    /// showed (stderr only) and the exit status.
    fn on_terminal(&self, line: &str) -> (String, i32) {
        let out = Command::new("script")
            .arg("-qec")
            .arg(format!("{line} >/dev/null"))
            .arg("/dev/null")
            .env("TERM", "xterm-256color")
            .env("COLUMNS", "120")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .output()
            .expect("run script");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }
}

/// A progress line: the verb, a byte count in MiB and the ETA field.
fn has_progress(captured: &str) -> bool {
    captured.contains("backup") && captured.contains("MiB") && captured.contains("ETA")
}

#[test]
fn a_terminal_shows_a_progress_line() {
    if !have_script() {
        return;
    }
    let f = fixture();
    let (captured, code) = f.on_terminal(&f.backup_line("a.coffer", ""));
    assert_eq!(code, 0, "backup failed under script:\n{captured}");
    assert!(
        has_progress(&captured),
        "no progress line on the terminal:\n{captured:?}"
    );
    assert!(
        captured.contains("64.00 MiB"),
        "total size shown: {captured:?}"
    );
    assert!(f.t.join("a.coffer").exists());
}

#[test]
fn quiet_and_json_show_no_progress_on_a_terminal() {
    if !have_script() {
        return;
    }
    let f = fixture();
    for (name, extra) in [("q.coffer", "-q"), ("j.coffer", "--json")] {
        let (captured, code) = f.on_terminal(&f.backup_line(name, extra));
        assert_eq!(code, 0, "{extra}: {captured}");
        assert!(
            !has_progress(&captured) && !captured.contains("MiB"),
            "{extra}: progress shown:\n{captured:?}"
        );
        assert!(f.t.join(name).exists());
    }
}

#[test]
fn no_progress_without_a_terminal() {
    let f = fixture();
    for (name, extra) in [
        ("plain.coffer", vec![]),
        ("q.coffer", vec!["-q"]),
        ("j.coffer", vec!["--json"]),
    ] {
        let out = coffer_cmd()
            .arg("backup")
            .arg(&f.src)
            .arg("-o")
            .arg(f.t.join(name))
            .arg("-r")
            .arg(alice_pub())
            .args(["--compression", "none"])
            .args(&extra)
            .assert()
            .code(0)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{extra:?}: stderr not empty: {stderr:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("ETA"), "{extra:?}: {stdout}");
        if !extra.is_empty() && extra[0] == "-q" {
            assert!(stdout.is_empty(), "-q prints nothing: {stdout}");
        }
    }
}
