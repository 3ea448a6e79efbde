//! `coffer list --json` writes its document piece by piece (issue 15: built whole as one
//! `serde_json::Value` it took 7.2 GB for a 55 MB archive), and the bytes are the ones the
//! whole document gave: same field order, same layout, same terminal-safe escaping, a failed
//! archive in its place among the others.

use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::archive::Archive;
use coffer::format::v2::{EntryV2 as Entry, KIND_DIR, KIND_SYMLINK};
use coffer::{Compression, Identity};
use serde_json::{Value, json};

/// Names that serde_json leaves as they are (DEL, C1, line separators, bidi controls) or
/// escapes itself (C0 controls, quote, backslash), and plain Unicode.
const ODD_NAMES: [&str; 9] = [
    "new\nline",
    "esc\x1b[31mred",
    "del\x7f and c1 \u{9b}2J",
    "line\u{2028}para\u{2029}",
    "bidi\u{202e}fdp.exe",
    "isolate\u{2066}x\u{2069} mark\u{200e}\u{61c}",
    "quote\"back\\slash\ttab",
    "日本語 🎉 é",
    "\u{1}\u{1f}",
];

/// A tree of odd names (a file, a folder and a link with an odd target of each) and
/// an mtime before 1970.
fn odd_tree(root: &Path) {
    for (i, name) in ODD_NAMES.iter().enumerate() {
        write_file(&root.join(name), name.as_bytes(), 0o640 + i as u32 % 8);
        std::fs::create_dir_all(root.join(format!("dir {name}"))).unwrap();
        std::os::unix::fs::symlink(format!("../{name}"), root.join(format!("link {name}")))
            .unwrap();
    }
    set_mtime(&root.join(ODD_NAMES[0]), -1_000_000_000, 0);
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_DIR => "dir",
        KIND_SYMLINK => "symlink",
        _ => "file",
    }
}

/// An entry as `list --json` built it when the document was one `serde_json::Value`.
fn entry_value(e: &Entry) -> Value {
    json!({
        "path": String::from_utf8(e.path.clone()).unwrap(),
        "type": kind_name(e.kind),
        "mode": format!("{:04o}", e.mode),
        "size": e.size,
        "mtime": chrono::DateTime::from_timestamp(e.mtime_sec, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "mtime_unix": e.mtime_sec,
        "uid": e.uid,
        "gid": e.gid,
        "target": e.link_target.clone().map(|t| String::from_utf8(t).unwrap()),
    })
}

/// One archive's part of the reference document, read through the library.
fn archive_value(path: &Path) -> Value {
    let id = identity(&alice_key());
    let read = Archive::open(path).and_then(|a| {
        let u = a.unlock(&id as &dyn Identity)?;
        let mut entries = Vec::new();
        u.for_each_entry(&a, |_, e| {
            entries.push(entry_value(&e));
            Ok(())
        })?;
        Ok(entries)
    });
    match read {
        Ok(entries) => {
            json!({"path": path.to_string_lossy(), "ok": true, "entries": entries})
        }
        Err(e) => json!({"path": path.to_string_lossy(), "ok": false, "error": e.to_string()}),
    }
}

/// A character a terminal would act on, other than the newlines of the layout.
fn unsafe_on_terminal(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{9}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Pretty JSON with the characters a terminal would act on (serde_json writes some of them
/// as they are) as `\uXXXX`: the escaping the binary has always given its JSON documents.
fn terminal_safe_pretty(doc: &Value) -> String {
    let text = serde_json::to_string_pretty(doc).unwrap();
    let mut out = String::new();
    for c in text.chars() {
        if unsafe_on_terminal(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn list_json_is_streamed_and_identical() {
    let t = TestDir::new();
    let odd_root = t.join("src").join("odd \u{202e}\x7f");
    odd_tree(&odd_root);
    let sample_root = t.join("src").join("sample");
    build_sample_tree(&sample_root);

    // Archive file names are quoted in the document too.
    let odd = t.join("odd\u{2028}\x1b.coffer");
    backup_with(
        &[&odd_root],
        &odd,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    let sample = t.join("sample.coffer");
    backup_with(
        &[&sample_root],
        &sample,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&bob_pub(), &alice_pub()],
    );
    // Not for alice: fails to unlock, between archives that list.
    let not_ours = t.join("carol \u{9b}.coffer");
    backup_with(
        &[&sample_root],
        &not_ours,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&carol_pub()],
    );
    let missing = t.join("missing.coffer");

    let archives: Vec<PathBuf> = vec![odd.clone(), not_ours, sample, missing, odd];
    let out = coffer_cmd()
        .arg("list")
        .args(&archives)
        .arg("-i")
        .arg(alice_key())
        .arg("--json")
        .assert()
        .code(2)
        .get_output()
        .clone();

    let docs: Vec<Value> = archives.iter().map(|a| archive_value(a)).collect();
    let oks: Vec<bool> = docs.iter().map(|d| d["ok"] == true).collect();
    assert_eq!(oks, [true, false, true, false, true]);
    let entries = docs[0]["entries"].as_array().unwrap();
    assert!(entries.len() > 3 * ODD_NAMES.len(), "{entries:?}");
    let expected = terminal_safe_pretty(&json!({ "archives": docs }));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Compared line by line first, so that a difference is shown where it is.
    for (n, (got, want)) in stdout.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {}", n + 1);
    }
    assert_eq!(stdout, format!("{expected}\n"));
    // The escaping is the terminal-safe one, not only serde_json's.
    assert!(stdout.contains("bidi\\u202efdp.exe"), "{stdout}");
    assert!(stdout.contains("odd\\u2028\\u001b.coffer"), "{stdout}");
    assert!(!stdout.chars().any(unsafe_on_terminal), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
