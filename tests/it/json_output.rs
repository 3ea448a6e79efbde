//! `--json` of backup, restore, info, list and verify: stdout is one JSON document and nothing
//! else, and each documented field is there with the right JSON type (and a value that
//! agrees with what happened).

use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::recipient::Recipient;
use serde_json::Value;

/// The JSON types checked for.
#[derive(Clone, Copy, Debug)]
enum T {
    Str,
    U64,
    I64,
    F64,
    Bool,
    Arr,
    /// A string or null.
    StrOrNull,
    /// An unsigned integer or null.
    U64OrNull,
}

fn has(v: &Value, field: &str, t: T) {
    let x = v
        .get(field)
        .unwrap_or_else(|| panic!("field {field:?} missing in {v}"));
    let ok = match t {
        T::Str => x.is_string(),
        T::U64 => x.is_u64(),
        T::I64 => x.is_i64(),
        T::F64 => x.is_f64() || x.is_u64(),
        T::Bool => x.is_boolean(),
        T::Arr => x.is_array(),
        T::StrOrNull => x.is_string() || x.is_null(),
        T::U64OrNull => x.is_u64() || x.is_null(),
    };
    assert!(ok, "field {field:?} should be {t:?}, is {x}");
}

/// Run a command with `--json` that must exit with `code`; stdout must be exactly one JSON
/// document (leading/trailing whitespace aside). Returns it and stderr.
fn run_json(cmd: &mut assert_cmd::Command, code: i32) -> (Value, String) {
    let out = cmd.assert().code(code).get_output().clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let trimmed = stdout.trim();
    assert!(
        trimmed.starts_with('{') && trimmed.ends_with('}'),
        "stdout is not only a JSON object:\n{stdout}"
    );
    // from_str rejects anything after the document.
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert!(doc.is_object());
    (doc, String::from_utf8(out.stderr).unwrap())
}

struct Fixture {
    t: TestDir,
    root: PathBuf,
    archive: PathBuf,
    counts: TreeCounts,
}

/// An archive made through the binary with `backup --json`, whose document is checked.
fn fixture() -> (Fixture, Value) {
    let t = TestDir::new();
    let root = t.join("src").join("t");
    let counts = build_sample_tree(&root);
    let archive = t.join("a.coffer");
    let (doc, stderr) = run_json(
        coffer_cmd()
            .arg("backup")
            .arg(&root)
            .arg("-o")
            .arg(&archive)
            .arg("-r")
            .arg(alice_pub())
            .arg("-r")
            .arg(bob_pub())
            .args(["--block-size", "64K", "--json"]),
        0,
    );
    assert!(stderr.is_empty(), "stderr: {stderr}");
    (
        Fixture {
            t,
            root,
            archive,
            counts,
        },
        doc,
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_json() {
    let (f, doc) = fixture();
    for (field, t) in [
        ("archive", T::Str),
        ("session_id", T::Str),
        ("files", T::U64),
        ("dirs", T::U64),
        ("symlinks", T::U64),
        ("bytes_read", T::U64),
        ("bytes_written", T::U64),
        ("blocks", T::U64),
        ("duration_secs", T::F64),
        ("recipients", T::Arr),
        ("warnings", T::Arr),
    ] {
        has(&doc, field, t);
    }
    assert_eq!(doc["archive"], s(&f.archive));
    let sid = doc["session_id"].as_str().unwrap();
    assert!(sid.len() == 32 && sid.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(doc["files"], f.counts.files);
    assert_eq!(doc["dirs"], f.counts.dirs);
    assert_eq!(doc["symlinks"], f.counts.symlinks);
    assert_eq!(doc["bytes_read"], f.counts.bytes);
    assert_eq!(
        doc["bytes_written"],
        std::fs::metadata(&f.archive).unwrap().len()
    );
    let recipients: Vec<&str> = doc["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let alice = recipient(&alice_pub()).fingerprint().to_string();
    let bob = recipient(&bob_pub()).fingerprint().to_string();
    assert_eq!(recipients, vec![alice.as_str(), bob.as_str()]);
    assert!(doc["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn backup_json_with_warnings_is_still_one_document() {
    let t = TestDir::new();
    let root = t.join("t");
    write_file(&root.join("ok.txt"), b"fine\n", 0o644);
    // A socket is skipped with a warning (exit 1): it cannot be restored.
    let _socket = std::os::unix::net::UnixListener::bind(root.join("app.sock")).unwrap();
    let (doc, stderr) = run_json(
        coffer_cmd()
            .arg("backup")
            .arg(&root)
            .arg("-o")
            .arg(t.join("a.coffer"))
            .arg("-r")
            .arg(alice_pub())
            .arg("--json"),
        1,
    );
    let warnings = doc["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{doc}");
    has(&warnings[0], "path", T::Str);
    has(&warnings[0], "message", T::Str);
    assert!(warnings[0]["path"].as_str().unwrap().ends_with("app.sock"));
    // The warning may be printed on stderr as it happens, never on stdout.
    assert!(!stderr.contains('{'), "{stderr}");
}

#[test]
fn restore_json() {
    let (f, _) = fixture();
    let target = f.t.join("out");
    let (doc, stderr) = run_json(
        coffer_cmd()
            .arg("restore")
            .arg(&f.archive)
            .arg("-i")
            .arg(alice_key())
            .arg("--to")
            .arg(&target)
            .arg("--json"),
        0,
    );
    assert!(stderr.is_empty(), "{stderr}");
    for (field, t) in [
        ("archive", T::Str),
        ("target", T::Str),
        ("files", T::U64),
        ("dirs", T::U64),
        ("symlinks", T::U64),
        ("bytes", T::U64),
        ("blocks", T::U64),
        ("archive_bytes_read", T::U64),
        ("duration_secs", T::F64),
        ("warnings", T::Arr),
    ] {
        has(&doc, field, t);
    }
    assert_eq!(doc["archive"], s(&f.archive));
    assert_eq!(doc["target"], s(&target));
    assert_eq!(doc["files"], f.counts.files);
    assert_eq!(doc["dirs"], f.counts.dirs);
    assert_eq!(doc["symlinks"], f.counts.symlinks);
    assert_eq!(doc["bytes"], f.counts.bytes);
    assert_trees_equal(&f.root, &target.join("t"));
}

#[test]
fn info_json() {
    let (f, backup) = fixture();
    let (doc, stderr) = run_json(coffer_cmd().args(["info", "--json"]).arg(&f.archive), 0);
    assert!(stderr.is_empty());
    let archives = doc["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1);
    let a = &archives[0];
    for (field, t) in [
        ("path", T::Str),
        ("ok", T::Bool),
        ("format_version", T::U64),
        ("session_id", T::Str),
        ("job_name", T::Str),
        ("created_at", T::Str),
        ("created_at_unix", T::I64),
        ("block_size", T::U64),
        ("segment_size", T::U64),
        ("compression", T::Str),
        ("block_count", T::U64),
        ("size", T::U64),
        ("recipients", T::Arr),
    ] {
        has(a, field, t);
    }
    assert!(a.get("error").is_none());
    assert_eq!(a["session_id"], backup["session_id"]);
    assert_eq!(a["block_count"], backup["blocks"]);
    assert_eq!(a["size"], backup["bytes_written"]);
    assert_eq!(a["block_size"], 65536);
    let created = a["created_at"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "not RFC 3339 UTC: {created}"
    );
    assert!(["none", "zstd"].contains(&a["compression"].as_str().unwrap()));
    for r in a["recipients"].as_array().unwrap() {
        has(r, "fingerprint", T::Str);
        has(r, "label", T::Str);
    }
}

#[test]
fn list_json() {
    let (f, _) = fixture();
    let (doc, _) = run_json(
        coffer_cmd()
            .args(["list", "--json", "--long", "-i"])
            .arg(alice_key())
            .arg(&f.archive),
        0,
    );
    let a = &doc["archives"][0];
    has(a, "path", T::Str);
    has(a, "ok", T::Bool);
    has(a, "entries", T::Arr);
    let entries = a["entries"].as_array().unwrap();
    assert_eq!(
        entries.len() as u64,
        f.counts.files + f.counts.dirs + f.counts.symlinks
    );
    for e in entries {
        has(e, "path", T::Str);
        has(e, "type", T::Str);
        has(e, "mode", T::Str);
        has(e, "size", T::U64);
        has(e, "mtime", T::Str);
        has(e, "mtime_unix", T::I64);
        has(e, "uid", T::U64);
        has(e, "gid", T::U64);
        has(e, "target", T::StrOrNull);
    }
}

#[test]
fn verify_json() {
    let (f, backup) = fixture();
    let mut bytes = std::fs::read(&f.archive).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    let bad = f.t.join("bad.coffer");
    std::fs::write(&bad, &bytes).unwrap();
    let junk = f.t.join("junk.coffer");
    std::fs::write(&junk, b"not an archive").unwrap();

    for keyed in [false, true] {
        let mut cmd = coffer_cmd();
        cmd.args(["verify", "--json"]);
        if keyed {
            cmd.arg("-i").arg(alice_key());
        }
        let (doc, stderr) = run_json(cmd.arg(&f.archive).arg(&bad).arg(&junk), 2);
        assert!(
            !stderr.contains("FAILED"),
            "text report with --json: {stderr}"
        );
        let a = doc["archives"].as_array().unwrap();
        assert_eq!(a.len(), 3);
        for x in &a[..2] {
            has(x, "path", T::Str);
            has(x, "ok", T::Bool);
            has(x, "keyed", T::Bool);
            has(x, "authenticated", T::Bool);
            has(x, "note", T::StrOrNull);
            has(x, "blocks_checked", T::U64);
            has(x, "bytes_checked", T::U64);
            has(x, "problems", T::Arr);
            assert_eq!(x["keyed"], keyed);
            assert_eq!(x["authenticated"], keyed);
            if keyed {
                assert!(x["note"].is_null());
            } else {
                assert!(x["note"].as_str().unwrap().contains("not authenticated"));
            }
            for p in x["problems"].as_array().unwrap() {
                has(p, "block", T::U64OrNull);
                has(p, "offset", T::U64);
                has(p, "detail", T::Str);
            }
        }
        assert_eq!(a[0]["ok"], true);
        assert_eq!(a[0]["blocks_checked"], backup["blocks"]);
        assert_eq!(a[1]["ok"], false);
        assert!(!a[1]["problems"].as_array().unwrap().is_empty());
        // An archive that cannot be read at all: path, ok and error only.
        has(&a[2], "path", T::Str);
        assert_eq!(a[2]["ok"], false);
        has(&a[2], "error", T::Str);
    }
}

#[test]
fn failures_are_in_the_document_and_stdout_stays_pure() {
    let (f, _) = fixture();
    let junk = f.t.join("junk.coffer");
    std::fs::write(&junk, b"not an archive").unwrap();
    let (doc, stderr) = run_json(
        coffer_cmd()
            .args(["info", "--json"])
            .arg(&junk)
            .arg(&f.archive),
        2,
    );
    assert!(stderr.is_empty(), "{stderr}");
    let a = doc["archives"].as_array().unwrap();
    assert_eq!(a[0]["ok"], false);
    has(&a[0], "error", T::Str);
    assert_eq!(a[1]["ok"], true);

    let (doc, _) = run_json(
        coffer_cmd()
            .args(["list", "--json", "-i"])
            .arg(carol_key())
            .arg(&f.archive),
        2,
    );
    assert_eq!(doc["archives"][0]["ok"], false);
    has(&doc["archives"][0], "error", T::Str);
}

/// A file name that is not valid UTF-8 (Linux allows any bytes but `/` and NUL).
fn non_utf8(dir: &Path, stem: &[u8], ext: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut name = stem.to_vec();
    name.push(0xff);
    name.extend_from_slice(ext.as_bytes());
    dir.join(std::ffi::OsStr::from_bytes(&name))
}

#[test]
fn json_with_a_non_utf8_archive_path_is_still_a_document() {
    let (f, _) = fixture();
    let odd = non_utf8(f.t.path(), b"nightly-", ".coffer");
    std::fs::copy(&f.archive, &odd).unwrap();
    let (doc, _) = run_json(coffer_cmd().args(["info", "--json"]).arg(&odd), 0);
    assert_eq!(doc["archives"][0]["ok"], true);
    assert!(doc["archives"][0]["path"].is_string());
    let (doc, _) = run_json(coffer_cmd().args(["verify", "--json"]).arg(&odd), 0);
    assert_eq!(doc["archives"][0]["ok"], true);
    let (doc, _) = run_json(
        coffer_cmd()
            .args(["list", "--json", "-i"])
            .arg(alice_key())
            .arg(&odd),
        0,
    );
    assert_eq!(doc["archives"][0]["ok"], true);
    // A missing archive under such a name: the error is in the document.
    let missing = non_utf8(f.t.path(), b"missing-", ".coffer");
    let (doc, _) = run_json(coffer_cmd().args(["info", "--json"]).arg(&missing), 2);
    assert_eq!(doc["archives"][0]["ok"], false);
    // restore into such a folder.
    let target = non_utf8(f.t.path(), b"out-", "");
    let (doc, _) = run_json(
        coffer_cmd()
            .arg("restore")
            .arg(&f.archive)
            .arg("-i")
            .arg(alice_key())
            .arg("--to")
            .arg(&target)
            .arg("--json"),
        0,
    );
    assert!(doc["target"].is_string());
}

#[test]
fn regression_a_non_utf8_file_name_was_skipped_and_is_now_stored() {
    let t = TestDir::new();
    let root = t.join("t");
    write_file(&root.join("ok.txt"), b"fine\n", 0o644);
    write_file(&non_utf8(&root, b"bad-", ".txt"), b"kept\n", 0o644);
    let archive = t.join("a.coffer");
    let (doc, _) = run_json(
        coffer_cmd()
            .arg("backup")
            .arg(&root)
            .arg("-o")
            .arg(&archive)
            .arg("-r")
            .arg(alice_pub())
            .arg("--json"),
        0,
    );
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["files"], 2);
    // `list --json` shows the name readably and its exact bytes in `path_hex`.
    let (list, _) = run_json(
        coffer_cmd()
            .arg("list")
            .arg(&archive)
            .arg("-i")
            .arg(alice_key())
            .arg("--json"),
        0,
    );
    let entries = list["archives"][0]["entries"].as_array().unwrap();
    let bad = entries
        .iter()
        .find(|e| e.get("path_hex").is_some())
        .unwrap_or_else(|| panic!("no path_hex in {list}"));
    let hex: String = b"t/bad-".iter().map(|b| format!("{b:02x}")).collect();
    assert!(bad["path_hex"].as_str().unwrap().starts_with(&hex), "{bad}");
    assert!(bad["path"].as_str().unwrap().contains("\\x"), "{bad}");
}
