//! Archives are written safely: under a temporary name that is renamed only when complete,
//! never over an existing file unless asked, never through a link, and a failed backup
//! leaves nothing behind.

use std::fs;
use std::path::Path;

use crate::common::*;
use coffer::archive::Archive;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::recipient::Recipient;
use coffer::{Compression, Error};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Names directly inside `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn backup_into_a_missing_folder_fails_and_leaves_nothing() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let out = t.join("no/such/folder/a.coffer");
    let assert = coffer_cmd()
        .args(["backup", s(&src), "-o", s(&out), "-r", s(&alice_pub())])
        .assert()
        .code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("no/such/folder"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert_eq!(names(t.path()), ["tree"], "backup created something");
}

#[test]
fn successful_backup_leaves_only_the_archive() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let out_dir = t.join("out");
    fs::create_dir(&out_dir).unwrap();
    // Through the library...
    backup_with(
        &[&src],
        &out_dir.join("lib.coffer"),
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    // ...and through the binary.
    coffer_cmd()
        .args(["backup", s(&src), "-o", s(&out_dir.join("cli.coffer"))])
        .args(["-r", s(&alice_pub()), "-q"])
        .assert()
        .success();
    assert_eq!(names(&out_dir), ["cli.coffer", "lib.coffer"]);
    assert!(partial_files(&out_dir).is_empty());
    for a in ["cli.coffer", "lib.coffer"] {
        Archive::open(&out_dir.join(a)).unwrap();
    }
}

#[test]
fn backup_refuses_to_replace_an_archive_without_overwrite() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"version one", 0o644);
    let archive = t.join("a.coffer");
    let backup_cmd = || {
        let mut c = coffer_cmd();
        c.args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ]);
        c
    };
    backup_cmd().assert().success();
    let first = fs::read(&archive).unwrap();

    write_file(&src.join("f"), b"version two", 0o644);
    let out = backup_cmd().assert().code(2).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(s(&archive)), "{stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(fs::read(&archive).unwrap(), first, "archive was changed");
    assert_eq!(names(t.path()), ["a.coffer", "tree"]);

    // The library says so with a typed error.
    let r = recipient(&alice_pub());
    let opts = BackupOptions::new(vec![src.clone()], archive.clone());
    let err = backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap_err();
    assert!(
        matches!(&err, Error::Exists { path } if path == &archive),
        "{err:?}"
    );
    assert_eq!(fs::read(&archive).unwrap(), first);

    // With --overwrite the archive is replaced by the new one.
    backup_cmd().arg("--overwrite").assert().success();
    assert_ne!(fs::read(&archive).unwrap(), first);
    assert_eq!(names(t.path()), ["a.coffer", "tree"]);
    let target = t.join("restored");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_eq!(fs::read(target.join("tree/f")).unwrap(), b"version two");
}

#[test]
fn backup_never_writes_through_a_link_at_the_output_path() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    fs::create_dir(t.join("elsewhere")).unwrap();
    let victim = t.join("elsewhere/victim");
    let archive = t.join("a.coffer");
    std::os::unix::fs::symlink(&victim, &archive).unwrap();
    let opts = BackupOptions::new(vec![src.clone()], archive.clone());
    let r = recipient(&alice_pub());
    let err = backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");
    assert!(fs::symlink_metadata(&victim).is_err());
    // Overwriting replaces the link itself.
    let mut opts = opts;
    opts.overwrite = true;
    backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap();
    assert!(fs::symlink_metadata(&archive).unwrap().is_file());
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "wrote through the link"
    );
    assert!(partial_files(t.path()).is_empty());
}

#[test]
fn failed_backup_leaves_no_archive_and_no_partial_file() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let archive = t.join("a.coffer");
    let r = recipient(&alice_pub());
    for opts in [
        // A missing second source.
        BackupOptions::new(vec![src.clone(), t.join("missing")], archive.clone()),
        // Two sources with the same name.
        BackupOptions::new(vec![src.clone(), t.join("x/tree")], archive.clone()),
        // A block size out of range.
        {
            let mut o = BackupOptions::new(vec![src.clone()], archive.clone());
            o.block_size = 1000;
            o
        },
    ] {
        fs::create_dir_all(t.join("x/tree")).unwrap();
        assert!(backup(&opts, &[&r as &dyn Recipient], &Quiet).is_err());
        assert!(!archive.exists());
        assert!(partial_files(t.path()).is_empty());
    }
    // No recipients at all.
    let opts = BackupOptions::new(vec![src.clone()], archive.clone());
    assert!(matches!(
        backup(&opts, &[], &Quiet),
        Err(Error::InvalidOption(_))
    ));
    assert!(!archive.exists());
}

#[test]
fn archive_written_inside_its_own_source_does_not_contain_itself() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let archive = src.join("self.coffer");
    let report = backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert!(report.warnings.is_empty());
    let paths: Vec<Vec<u8>> = entries_of(&archive, &alice_key())
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(paths, [&b"tree"[..], b"tree/f"]);
    assert_eq!(names(&src), ["f", "self.coffer"]);
}

#[test]
fn restore_leaves_no_partial_file_and_refuses_a_file_as_target() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert!(partial_files(&target).is_empty());
    assert_trees_equal(&src, &target.join("tree"));

    let file_target = t.join("a-file");
    fs::write(&file_target, "keep me").unwrap();
    let err = try_restore(&archive, &alice_key(), &file_target, &[], true).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
    assert_eq!(fs::read_to_string(&file_target).unwrap(), "keep me");
}

#[test]
fn failed_final_rename_leaves_no_partial_file() {
    // --overwrite onto a path that is a folder: the data is written, the rename fails.
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let out = t.join("out");
    let archive_dir = out.join("a.coffer");
    fs::create_dir_all(&archive_dir).unwrap();
    let mut opts = BackupOptions::new(vec![src.clone()], archive_dir.clone());
    opts.overwrite = true;
    let r = recipient(&alice_pub());
    let err = backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(archive_dir.is_dir());
    assert_eq!(
        names(&out),
        ["a.coffer"],
        "a temporary archive was left behind"
    );
}

#[test]
fn failed_keygen_leaves_no_copy_of_the_private_key() {
    let t = TestDir::new();
    let k = t.join("k.key");
    fs::create_dir(&k).unwrap();
    coffer_cmd()
        .args(["keygen", "-o", s(&k), "--bits", "2048", "--force"])
        .assert()
        .code(2);
    assert_eq!(names(t.path()), ["k.key"], "key material left behind");
}
