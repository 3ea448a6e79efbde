//! `coffer copy` through the binary: archives copied without a key, checked on the way,
//! byte-identical at the destination (a folder or an S3 prefix on the moto server), a
//! damaged source refused with nothing left behind, an archive already there skipped, and
//! a restore point of an incremental chain copied with its parents.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::s3_storage::server;

/// The `.coffer` files of `dir`, sorted by name.
fn archives_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "coffer"))
        .collect();
    v.sort();
    v
}

/// One archive of `src` written into the new folder `dir`.
fn backup_into(src: &Path, dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    coffer_cmd()
        .arg("backup")
        .arg(src)
        .arg("--to")
        .arg(dir)
        .arg("-r")
        .arg(alice_pub())
        .args(["--job-name", "home", "-q"])
        .assert()
        .success();
    let a = archives_in(dir);
    assert_eq!(a.len(), 1);
    a[0].clone()
}

/// `coffer copy SRC... --to DEST --json`: its exit code and JSON document.
fn copy_json(sources: &[&Path], dest: &str) -> (i32, serde_json::Value) {
    let out = coffer_cmd()
        .arg("copy")
        .args(sources)
        .args(["--to", dest, "--json"])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), doc)
}

fn verify_ok(archive: &Path) {
    coffer_cmd()
        .arg("verify")
        .arg(archive)
        .arg("-q")
        .assert()
        .success();
}

/// Every file in `dir`, hidden temporary files included.
fn everything_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn local_copy_is_byte_identical_verifies_and_a_second_copy_is_skipped() {
    let t = TestDir::new();
    build_sample_tree(&t.join("src"));
    let archive = backup_into(&t.join("src"), &t.join("a"));
    fs::create_dir(t.join("b")).unwrap();
    let dest = t.join("b");

    let (code, doc) = copy_json(&[&archive], dest.to_str().unwrap());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        (doc["copied"].as_u64(), doc["skipped"].as_u64()),
        (Some(1), Some(0)),
        "{doc}"
    );
    let copied = dest.join(archive.file_name().unwrap());
    assert!(fs::read(&copied).unwrap() == fs::read(&archive).unwrap());
    assert_eq!(
        doc["bytes_copied"].as_u64(),
        Some(fs::metadata(&archive).unwrap().len())
    );
    assert_eq!(everything_in(&dest).len(), 1, "no temporary file left");
    verify_ok(&copied);

    // Again: nothing written, the archive already there is said so.
    let before = fs::metadata(&copied).unwrap();
    let (code, doc) = copy_json(&[&archive], dest.to_str().unwrap());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        (doc["copied"].as_u64(), doc["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{doc}"
    );
    assert_eq!(doc["archives"][0]["status"], "skipped");
    let after = fs::metadata(&copied).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );

    // Text output says the same.
    coffer_cmd()
        .arg("copy")
        .arg(&archive)
        .arg("--to")
        .arg(&dest)
        .assert()
        .success()
        .stdout(predicates::str::contains("skipped: "))
        .stdout(predicates::str::contains("0 copied"));
}

#[test]
fn a_damaged_source_is_refused_and_leaves_nothing_at_the_destination() {
    let t = TestDir::new();
    fs::create_dir(t.join("src")).unwrap();
    write_file(&t.join("src/big.bin"), &pseudo_random(3 << 20, 7), 0o644);
    let archive = backup_into(&t.join("src"), &t.join("a"));
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&archive, &bytes).unwrap();
    fs::create_dir(t.join("b")).unwrap();

    let (code, doc) = copy_json(&[&archive], t.join("b").to_str().unwrap());
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["failed"].as_u64(), Some(1), "{doc}");
    let row = &doc["archives"][0];
    assert_eq!(row["status"], "failed");
    assert!(row["detail"].as_str().unwrap().contains("damaged"), "{doc}");
    assert!(!row["problems"].as_array().unwrap().is_empty(), "{doc}");
    assert!(
        everything_in(&t.join("b")).is_empty(),
        "{:?}",
        everything_in(&t.join("b"))
    );

    // The text form names the damage.
    coffer_cmd()
        .arg("copy")
        .arg(&archive)
        .arg("--to")
        .arg(t.join("b"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("checksum mismatch"))
        .stderr(predicates::str::contains("FAILED: "));
    assert!(everything_in(&t.join("b")).is_empty());
}

#[test]
fn another_archive_or_a_symlink_under_the_name_is_never_replaced_nor_followed() {
    let t = TestDir::new();
    build_sample_tree(&t.join("src"));
    let archive = backup_into(&t.join("src"), &t.join("a"));
    let name = archive.file_name().unwrap();
    fs::create_dir(t.join("b")).unwrap();

    // Another file under the same name: refused, left as it was.
    fs::write(t.join("b").join(name), b"something else").unwrap();
    let (code, doc) = copy_json(&[&archive], t.join("b").to_str().unwrap());
    assert_eq!(code, 2, "{doc}");
    assert_eq!(fs::read(t.join("b").join(name)).unwrap(), b"something else");

    // A symlink under the name, pointing out of the destination: neither read through nor
    // written through, and its target is untouched.
    fs::create_dir(t.join("c")).unwrap();
    let outside = t.join("outside.coffer");
    fs::copy(&archive, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("c").join(name)).unwrap();
    let (code, doc) = copy_json(&[&archive], t.join("c").to_str().unwrap());
    assert_eq!(code, 2, "{doc}");
    assert!(
        doc["archives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{doc}"
    );
    assert!(
        fs::symlink_metadata(t.join("c").join(name))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::read(&outside).unwrap() == fs::read(&archive).unwrap());

    // A destination folder that does not exist is not made.
    let (code, _) = {
        let out = coffer_cmd()
            .arg("copy")
            .arg(&archive)
            .arg("--to")
            .arg(t.join("missing"))
            .output()
            .unwrap();
        (out.status.code().unwrap(), ())
    };
    assert_eq!(code, 2);
    assert!(!t.join("missing").exists());
}

#[test]
fn a_restore_point_brings_its_whole_chain_and_restores_from_the_copy() {
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    fs::create_dir(t.join("a")).unwrap();
    let run = || {
        coffer_cmd()
            .arg("backup")
            .arg(&src)
            .arg("--to")
            .arg(t.join("a"))
            .arg("-r")
            .arg(alice_pub())
            .args(["--job-name", "j", "--incremental", "--state-dir"])
            .arg(t.join("state"))
            .arg("-q")
            .assert()
            .success();
    };
    run();
    let full = archives_in(&t.join("a"));
    assert_eq!(full.len(), 1);
    write_file(
        &src.join("changed.txt"),
        b"a change between the runs",
        0o644,
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run();
    let both = archives_in(&t.join("a"));
    assert_eq!(both.len(), 2);
    let point = both.iter().find(|p| **p != full[0]).unwrap().clone();
    fs::create_dir(t.join("b")).unwrap();

    let (code, doc) = copy_json(&[&point], t.join("b").to_str().unwrap());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["copied"].as_u64(), Some(2), "{doc}");
    // Parents first.
    assert_eq!(
        doc["archives"][0]["source"].as_str().unwrap(),
        full[0].to_str().unwrap(),
        "{doc}"
    );
    assert!(doc["archives"][0]["parent_of"].is_string(), "{doc}");
    for a in &both {
        let copy = t.join("b").join(a.file_name().unwrap());
        assert!(fs::read(&copy).unwrap() == fs::read(a).unwrap());
    }

    // The copy restores on its own (its parent found next to it).
    coffer_cmd()
        .arg("restore")
        .arg(t.join("b").join(point.file_name().unwrap()))
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("out"))
        .arg("-q")
        .assert()
        .success();
    assert_trees_equal(&src, &t.join("out/src"));

    // Copying the point and its parent again: both already there.
    let (code, doc) = copy_json(&[&full[0], &point], t.join("b").to_str().unwrap());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        (doc["copied"].as_u64(), doc["skipped"].as_u64()),
        (Some(0), Some(2)),
        "{doc}"
    );

    // Without its parent, a point is not copied at all.
    fs::create_dir(t.join("lonely")).unwrap();
    fs::copy(&point, t.join("lonely").join(point.file_name().unwrap())).unwrap();
    fs::create_dir(t.join("c")).unwrap();
    let (code, doc) = copy_json(
        &[&t.join("lonely").join(point.file_name().unwrap())],
        t.join("c").to_str().unwrap(),
    );
    assert_eq!(code, 2, "{doc}");
    assert!(
        doc["archives"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{doc}"
    );
    assert!(everything_in(&t.join("c")).is_empty());
}

#[test]
fn disk_to_s3_and_back_is_byte_identical_and_verifies() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    // More than one 8 MiB part: the upload is a multipart one.
    write_file(&src.join("big.bin"), &pseudo_random(10 << 20, 3), 0o644);
    let archive = backup_into(&src, &t.join("a"));
    let name = archive.file_name().unwrap().to_str().unwrap();
    let prefix = s3.url("copies/home");

    let out = s3
        .coffer(&s3.admin)
        .arg("copy")
        .arg(&archive)
        .args(["--to", &prefix, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s3.download(&format!("copies/home/{name}")) == fs::read(&archive).unwrap());
    s3.coffer(&s3.reader)
        .args(["verify", &format!("{prefix}/{name}"), "-q"])
        .assert()
        .success();

    // Again: skipped, nothing uploaded.
    let out = s3
        .coffer(&s3.admin)
        .arg("copy")
        .arg(&archive)
        .args(["--to", &prefix, "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["skipped"].as_u64(), Some(1), "{doc}");

    // And back to disk, from S3 (S3 to S3 is the same path: a source and a sink).
    fs::create_dir(t.join("back")).unwrap();
    s3.coffer(&s3.reader)
        .args(["copy", &format!("{prefix}/{name}"), "--to"])
        .arg(t.join("back"))
        .arg("-q")
        .assert()
        .success();
    let back = t.join("back").join(name);
    assert!(fs::read(&back).unwrap() == fs::read(&archive).unwrap());
    verify_ok(&back);

    // S3 to S3.
    s3.coffer(&s3.admin)
        .args([
            "copy",
            &format!("{prefix}/{name}"),
            "--to",
            &s3.url("copies/again"),
            "-q",
        ])
        .assert()
        .success();
    assert!(s3.download(&format!("copies/again/{name}")) == fs::read(&archive).unwrap());
}
