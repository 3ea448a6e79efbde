//! `coffer list -i KEY`: every path in the archive; `--long` adds type, mode, size and mtime;
//! a key that is not a recipient fails with exit 2 and lists the archive's fingerprints;
//! `--json` entries carry the documented fields.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::Compression;
use coffer::recipient::Recipient;
use serde_json::Value;

struct Fixture {
    _t: TestDir,
    root: PathBuf,
    archive: PathBuf,
}

fn fixture() -> Fixture {
    let t = TestDir::new();
    let root = t.join("src").join("t");
    build_sample_tree(&root);
    let archive = t.join("a.coffer");
    backup_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub(), &bob_pub()],
    );
    Fixture {
        _t: t,
        root,
        archive,
    }
}

/// Every path of the source tree as the archive names it (`t`, `t/...`).
fn expected_paths(root: &Path) -> BTreeSet<String> {
    scan(root)
        .into_keys()
        .map(|rel| {
            let rel = rel.to_str().unwrap().to_string();
            if rel.is_empty() {
                "t".to_string()
            } else {
                format!("t/{rel}")
            }
        })
        .collect()
}

fn stdout_of(args: &[&str], archive: &Path) -> String {
    let out = coffer_cmd()
        .arg("list")
        .arg(archive)
        .args(args)
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[test]
fn lists_every_path_once() {
    let f = fixture();
    let key = alice_key();
    let stdout = stdout_of(&["-i", key.to_str().unwrap()], &f.archive);
    let lines: Vec<&str> = stdout.lines().collect();
    let got: BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(got.len(), lines.len(), "a path is listed twice:\n{stdout}");
    assert_eq!(got, expected_paths(&f.root));
    // Either recipient's key lists the same.
    let key = bob_key();
    assert_eq!(
        stdout_of(&["--identity", key.to_str().unwrap()], &f.archive),
        stdout
    );
}

#[test]
fn long_adds_type_mode_size_and_mtime() {
    let f = fixture();
    let key = alice_key();
    let stdout = stdout_of(&["-i", key.to_str().unwrap(), "--long"], &f.archive);
    let line = |path: &str| -> String {
        stdout
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
            .unwrap_or_else(|| panic!("{path} not listed:\n{stdout}"))
            .to_string()
    };
    // Every entry is listed, and every line has the five columns.
    assert_eq!(stdout.lines().count(), expected_paths(&f.root).len());
    for l in stdout.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(cols.len() >= 4, "short line {l:?}");
        assert_eq!(cols[0].len(), 10, "type+mode column in {l:?}");
        assert!(cols[1].parse::<u64>().is_ok(), "size column in {l:?}");
        assert!(
            cols[2].len() == 20 && cols[2].ends_with('Z'),
            "mtime in {l:?}"
        );
    }
    // script.sh: 0755, 18 bytes, mtime 1_600_000_000 + 2 * 3601 (see build_sample_tree).
    let l = line("t/script.sh");
    let cols: Vec<&str> = l.split_whitespace().collect();
    assert_eq!(cols[0], "-rwxr-xr-x", "{l}");
    assert_eq!(cols[1], "18", "{l}");
    assert_eq!(cols[2], "2020-09-13T14:26:42Z", "{l}");
    assert_eq!(cols[2], rfc3339(1_600_000_000 + 2 * 3_601));
    // hello.txt: 0600, 13 bytes, 2100-01-01; empty.txt: before 1970.
    let l = line("t/hello.txt");
    assert!(
        l.starts_with("-rw-------") && l.contains(" 13 2100-01-01T00:00:00Z "),
        "{l}"
    );
    let l = line("t/empty.txt");
    assert!(
        l.starts_with("-rw-r--r--") && l.contains(" 0 1969-12-20T10:13:20Z "),
        "{l}"
    );
    let l = line("t/docs/notes/zero");
    assert!(l.starts_with("-r--------"), "{l}");
    let multi = line("t/big/multi.bin");
    assert!(
        multi.contains(&format!(" {} ", 3 * SMALL_BLOCK as u64 + 12_345)),
        "{multi}"
    );
    // Folders and links.
    assert!(line("t/docs").starts_with("drwxr-x---"), "docs");
    assert!(line("t/nested/a/b").starts_with("drwx--x--x"));
    assert!(line("t/empty_dir").starts_with("drwx------"));
    let l = line("t/links/rel");
    assert!(
        l.starts_with('l') && l.ends_with(" t/links/rel -> ../hello.txt"),
        "{l}"
    );
    let l = line("t/links/dangling");
    assert!(l.ends_with(" -> does/not/exist"), "{l}");
}

#[test]
fn wrong_identity_fails_and_lists_the_fingerprints() {
    let f = fixture();
    let out = coffer_cmd()
        .arg("list")
        .arg(&f.archive)
        .arg("-i")
        .arg(carol_key())
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty(), "no entries on a failure");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(f.archive.to_str().unwrap()), "{stderr}");
    for k in [alice_pub(), bob_pub()] {
        let fp = recipient(&k).fingerprint().to_string();
        assert!(lines[0].contains(&fp), "{fp} not listed: {stderr}");
    }
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    // No file name leaks to a holder of the wrong key.
    assert!(!stderr.contains("hello.txt"));

    // --json: the failure is in the document.
    let out = coffer_cmd()
        .arg("list")
        .arg(&f.archive)
        .arg("--json")
        .arg("-i")
        .arg(carol_key())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &doc["archives"][0];
    assert_eq!(a["ok"], false);
    assert!(a.get("entries").is_none());
    let fp = recipient(&alice_pub()).fingerprint().to_string();
    assert!(a["error"].as_str().unwrap().contains(&fp), "{a}");
}

#[test]
fn public_key_as_identity_is_refused() {
    let f = fixture();
    let out = coffer_cmd()
        .arg("list")
        .arg(&f.archive)
        .arg("-i")
        .arg(alice_pub())
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn json_entries_carry_the_documented_fields() {
    let f = fixture();
    let key = alice_key();
    let stdout = stdout_of(&["-i", key.to_str().unwrap(), "--json"], &f.archive);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let archives = doc["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1);
    let a = &archives[0];
    assert_eq!(a["path"], f.archive.to_str().unwrap());
    assert_eq!(a["ok"], true);
    let entries = a["entries"].as_array().unwrap();
    let paths: BTreeSet<String> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, expected_paths(&f.root));
    for e in entries {
        for field in [
            "path",
            "type",
            "mode",
            "size",
            "mtime",
            "mtime_unix",
            "uid",
            "gid",
            "target",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        let ty = e["type"].as_str().unwrap();
        assert!(["file", "dir", "symlink"].contains(&ty), "{e}");
        let mode = e["mode"].as_str().unwrap();
        assert!(
            mode.len() >= 4 && u32::from_str_radix(mode, 8).is_ok(),
            "mode {mode:?} is not an octal string"
        );
        assert!(e["size"].is_u64() && e["uid"].is_u64() && e["gid"].is_u64());
        let unix = e["mtime_unix"].as_i64().unwrap();
        assert_eq!(e["mtime"], rfc3339(unix), "{e}");
        if ty == "symlink" {
            assert!(e["target"].is_string(), "{e}");
        } else {
            assert!(e["target"].is_null(), "{e}");
        }
    }
    let by_path = |p: &str| entries.iter().find(|e| e["path"] == p).unwrap();
    let e = by_path("t/script.sh");
    assert_eq!(e["type"], "file");
    assert_eq!(e["mode"], "0755");
    assert_eq!(e["size"], 18);
    assert_eq!(e["mtime_unix"], 1_600_000_000 + 2 * 3_601);
    let e = by_path("t/empty.txt");
    assert_eq!(e["mtime_unix"], -1_000_000);
    assert_eq!(e["mtime"], "1969-12-20T10:13:20Z");
    let e = by_path("t/docs");
    assert_eq!(e["type"], "dir");
    assert_eq!(e["mode"], "0750");
    let e = by_path("t/links/abs");
    assert_eq!(e["type"], "symlink");
    assert_eq!(e["target"], "/etc/hostname");
    let e = by_path("t/unicode/日本語.md");
    assert_eq!(e["size"], "日本語のテキスト\n".len());
}

#[test]
fn several_archives_are_listed_under_their_names() {
    let f = fixture();
    let t = TestDir::new();
    let other_root = t.join("other");
    write_file(&other_root.join("only-here.txt"), b"x", 0o644);
    let other = t.join("b.coffer");
    backup_with(
        &[&other_root],
        &other,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let key = alice_key();
    let out = coffer_cmd()
        .arg("list")
        .arg(&f.archive)
        .arg(&other)
        .arg("-i")
        .arg(&key)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = format!("{}:", f.archive.display());
    let second = format!("{}:", other.display());
    let i = stdout.find(&first).expect("first archive heading");
    let j = stdout.find(&second).expect("second archive heading");
    assert!(i < j);
    assert!(stdout[j..].contains("other/only-here.txt"));
    assert!(!stdout[..j].contains("only-here.txt"));
    assert!(stdout[i..j].contains("t/hello.txt"));
}
