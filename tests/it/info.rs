//! `coffer info`: the header, without a key. It shows the format version, session id, job
//! name, creation time, block size, compression, recipients (fingerprint and label) and the
//! archive size — and never a file name. Several archives are reported in one call; a bad one
//! among good ones makes the exit code 2 while the good ones are still reported; a file that
//! is not an archive, an archive of a future format version and a truncated archive each give
//! one error line naming the file plus a hint.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::Compression;
use coffer::backup::{BackupOptions, BackupReport, Quiet, backup};
use coffer::recipient::{Recipient, RsaRecipient};
use serde_json::Value;

/// Names that must never show up in `info` output.
const SECRET_NAMES: &[&str] = &[
    "marmoset-root",
    "quokka-tax-returns-2031.pdf",
    "pangolin-diary",
    "axolotl-passwords.kdbx",
    "narwhal-link",
    "ocelot.txt",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fingerprint(pub_key: &Path) -> String {
    recipient(pub_key).fingerprint().to_string()
}

/// A tree whose every name is distinctive (see [`SECRET_NAMES`]).
fn secret_tree(parent: &Path) -> PathBuf {
    let root = parent.join("marmoset-root");
    write_file(
        &root.join("quokka-tax-returns-2031.pdf"),
        &pseudo_random(150_000, 7),
        0o600,
    );
    write_file(
        &root.join("pangolin-diary/axolotl-passwords.kdbx"),
        b"hunter2\n",
        0o600,
    );
    write_file(&root.join("pangolin-diary/ocelot.txt"), b"meow\n", 0o644);
    std::os::unix::fs::symlink("ocelot.txt", root.join("pangolin-diary/narwhal-link")).unwrap();
    root
}

fn backup_named(
    src: &Path,
    out: &Path,
    job: &str,
    block_size: u32,
    compression: Compression,
    recipients: &[&Path],
) -> BackupReport {
    let rs: Vec<RsaRecipient> = recipients.iter().map(|p| recipient(p)).collect();
    let refs: Vec<&dyn Recipient> = rs.iter().map(|r| r as &dyn Recipient).collect();
    let mut opts = BackupOptions::new(vec![src.to_path_buf()], out.to_path_buf());
    opts.job_name = job.to_string();
    opts.block_size = block_size;
    opts.compression = compression;
    backup(&opts, &refs, &Quiet).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn assert_no_names(what: &str, text: &str) {
    for name in SECRET_NAMES {
        assert!(
            !text.contains(name),
            "{what} shows the file name {name:?}:\n{text}"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` since the epoch.
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

struct Fixture {
    t: TestDir,
    archive: PathBuf,
    report: BackupReport,
    before: i64,
    after: i64,
}

fn fixture() -> Fixture {
    let t = TestDir::new();
    let root = secret_tree(&t.join("src"));
    let archive = t.join("nightly.coffer");
    let before = chrono::Utc::now().timestamp();
    let report = backup_named(
        &root,
        &archive,
        "nightly-db",
        SMALL_BLOCK,
        Compression::Zstd(3),
        &[&alice_pub(), &bob_pub()],
    );
    let after = chrono::Utc::now().timestamp();
    Fixture {
        t,
        archive,
        report,
        before,
        after,
    }
}

#[test]
fn text_shows_every_header_field_without_a_key() {
    let f = fixture();
    let out = coffer_cmd()
        .arg("info")
        .arg(&f.archive)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.is_empty(), "stderr: {stderr}");
    let size = fs::metadata(&f.archive).unwrap().len();

    assert!(stdout.starts_with(s(&f.archive)), "{stdout}");
    assert!(stdout.contains("coffer v2"), "format version: {stdout}");
    assert!(
        stdout.contains(&format!("session:     {}", hex(&f.report.session_id))),
        "session id: {stdout}"
    );
    assert!(stdout.contains("job:         nightly-db"), "{stdout}");
    // The creation time is one of the seconds the backup ran in.
    let created = (f.before..=f.after)
        .map(rfc3339)
        .find(|c| stdout.contains(&format!("created:     {c}")));
    assert!(created.is_some(), "created-at not in {stdout}");
    assert!(stdout.contains("block size:  64.0 KiB"), "{stdout}");
    assert!(stdout.contains("compression: zstd"), "{stdout}");
    assert!(
        stdout.contains(&format!("blocks:      {}", f.report.blocks)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("({size} bytes)")),
        "archive size {size}: {stdout}"
    );
    let alice = format!("{} (alice)", fingerprint(&alice_pub()));
    let bob = format!("{} (bob)", fingerprint(&bob_pub()));
    assert!(stdout.contains(&alice), "{alice} missing: {stdout}");
    assert!(stdout.contains(&bob), "{bob} missing: {stdout}");
    assert!(!stdout.contains("carol"), "{stdout}");
    assert_no_names("info", &stdout);
}

#[test]
fn compression_none_and_empty_job_name_are_shown_as_such() {
    let t = TestDir::new();
    let root = secret_tree(&t.join("src"));
    let archive = t.join("plain.coffer");
    backup_named(
        &root,
        &archive,
        "",
        1 << 20,
        Compression::None,
        &[&carol_pub()],
    );
    let out = coffer_cmd().arg("info").arg(&archive).assert().code(0);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("compression: none"), "{stdout}");
    assert!(stdout.contains("job:         -"), "{stdout}");
    assert!(stdout.contains("block size:  1.0 MiB"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} (carol)", fingerprint(&carol_pub()))),
        "{stdout}"
    );
    assert_no_names("info", &stdout);
}

#[test]
fn json_has_every_field_and_no_file_name() {
    let f = fixture();
    let out = coffer_cmd()
        .arg("info")
        .arg("--json")
        .arg(&f.archive)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_no_names("info --json", &stdout);
    assert!(out.stderr.is_empty());
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let archives = doc["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1);
    let a = &archives[0];
    assert_eq!(a["path"], s(&f.archive));
    assert_eq!(a["ok"], true);
    assert_eq!(a["format_version"], 2);
    assert_eq!(a["session_id"], hex(&f.report.session_id));
    assert_eq!(a["job_name"], "nightly-db");
    let created = a["created_at_unix"].as_i64().unwrap();
    assert!((f.before..=f.after).contains(&created), "{created}");
    assert_eq!(a["created_at"], rfc3339(created));
    assert_eq!(a["block_size"], SMALL_BLOCK);
    assert_eq!(a["segment_size"], coffer::DEFAULT_SEGMENT_SIZE);
    assert_eq!(a["compression"], "zstd");
    assert_eq!(a["block_count"], f.report.blocks);
    assert_eq!(a["size"], fs::metadata(&f.archive).unwrap().len());
    assert_eq!(a["size"], f.report.bytes_written);
    let recipients = a["recipients"].as_array().unwrap();
    let got: Vec<(&str, &str)> = recipients
        .iter()
        .map(|r| {
            (
                r["fingerprint"].as_str().unwrap(),
                r["label"].as_str().unwrap(),
            )
        })
        .collect();
    let (fa, fb) = (fingerprint(&alice_pub()), fingerprint(&bob_pub()));
    assert_eq!(got, vec![(fa.as_str(), "alice"), (fb.as_str(), "bob")]);
}

#[test]
fn several_archives_are_each_reported() {
    let t = TestDir::new();
    let root = secret_tree(&t.join("src"));
    let one = t.join("one.coffer");
    let two = t.join("two.coffer");
    let r1 = backup_named(
        &root,
        &one,
        "job-one",
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let r2 = backup_named(
        &root,
        &two,
        "job-two",
        1 << 20,
        Compression::Zstd(1),
        &[&bob_pub()],
    );
    let out = coffer_cmd()
        .arg("info")
        .arg(&one)
        .arg(&two)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_no_names("info", &stdout);
    let at_one = stdout.find(s(&one)).expect("first archive named");
    let at_two = stdout.find(s(&two)).expect("second archive named");
    assert!(at_one < at_two, "reported in the order given:\n{stdout}");
    let (first, second) = stdout.split_at(at_two);
    assert!(first.contains(&hex(&r1.session_id)) && first.contains("job-one"));
    assert!(first.contains(&fingerprint(&alice_pub())));
    assert!(second.contains(&hex(&r2.session_id)) && second.contains("job-two"));
    assert!(second.contains(&fingerprint(&bob_pub())));
    assert_eq!(stdout.matches("session:").count(), 2);

    let out = coffer_cmd()
        .args(["info", "--json"])
        .arg(&one)
        .arg(&two)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = doc["archives"].as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["session_id"], hex(&r1.session_id));
    assert_eq!(a[1]["session_id"], hex(&r2.session_id));
    assert_eq!(a[0]["compression"], "none");
    assert_eq!(a[1]["block_size"], 1 << 20);
}

#[test]
fn one_bad_archive_among_good_ones_fails_but_the_good_ones_are_reported() {
    let f = fixture();
    let good2 = f.t.join("copy.coffer");
    fs::copy(&f.archive, &good2).unwrap();
    let bad = f.t.join("bad.coffer");
    fs::write(&bad, b"this is not an archive at all, just some text\n").unwrap();

    let out = coffer_cmd()
        .arg("info")
        .arg(&f.archive)
        .arg(&bad)
        .arg(&good2)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.contains(s(&f.archive)), "{stdout}");
    assert!(stdout.contains(s(&good2)), "{stdout}");
    assert_eq!(
        stdout
            .matches(&format!("session:     {}", hex(&f.report.session_id)))
            .count(),
        2,
        "{stdout}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(s(&bad)));
    assert!(lines[1].starts_with("hint: "));

    let out = coffer_cmd()
        .args(["info", "--json"])
        .arg(&f.archive)
        .arg(&bad)
        .arg(&good2)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = doc["archives"].as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["ok"], true);
    assert_eq!(a[0]["session_id"], hex(&f.report.session_id));
    assert_eq!(a[1]["ok"], false);
    assert_eq!(a[1]["path"], s(&bad));
    assert!(
        a[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a coffer archive")
    );
    assert_eq!(a[2]["ok"], true);
    assert_eq!(a[2]["path"], s(&good2));
}

/// Run `info` on one broken file: exit 2, nothing on stdout, one error line naming the file,
/// then a hint. Returns the error line.
fn info_fails(path: &Path) -> String {
    let out = coffer_cmd()
        .env("RUST_BACKTRACE", "1")
        .arg("info")
        .arg(path)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "want an error and a hint line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(s(path)),
        "error does not name the file:\n{stderr}"
    );
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

#[test]
fn not_an_archive_is_one_error_line_with_a_hint() {
    let t = TestDir::new();
    let text = t.join("notes.txt");
    fs::write(
        &text,
        "just some notes, long enough to hold a header and a trailer. ".repeat(10),
    )
    .unwrap();
    let e = info_fails(&text);
    assert!(e.contains("not a coffer archive"), "{e}");

    let empty = t.join("empty.coffer");
    fs::write(&empty, b"").unwrap();
    let e = info_fails(&empty);
    assert!(e.contains("not a coffer archive"), "{e}");

    let missing = t.join("missing.coffer");
    info_fails(&missing);
}

#[test]
fn future_format_version_is_refused_by_name() {
    let f = fixture();
    let mut bytes = fs::read(&f.archive).unwrap();
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    let future = f.t.join("future.coffer");
    fs::write(&future, &bytes).unwrap();
    let e = info_fails(&future);
    assert!(e.contains("version 3"), "{e}");
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn truncated_archive_is_refused_by_name() {
    let f = fixture();
    let bytes = fs::read(&f.archive).unwrap();
    for (name, len) in [
        ("tiny", 5),
        ("in-header", 40),
        ("half", bytes.len() / 2),
        ("minus-one", bytes.len() - 1),
    ] {
        let cut = f.t.join(format!("{name}.coffer"));
        fs::write(&cut, &bytes[..len]).unwrap();
        let e = info_fails(&cut);
        assert!(e.contains("truncated"), "{name}: {e}");
    }
}

#[test]
fn a_folder_or_fifo_is_refused_with_a_hint_and_without_hanging() {
    let t = TestDir::new();
    let dir = t.join("backups.coffer");
    fs::create_dir(&dir).unwrap();
    let e = info_fails(&dir);
    assert!(e.contains("not"), "{e}");

    let fifo = t.join("fifo.coffer");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = coffer_cmd()
        .arg("info")
        .arg(&fifo)
        .timeout(std::time::Duration::from_secs(5))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "info on a FIFO hung or did not fail"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("\nhint: "), "{stderr}");
}
