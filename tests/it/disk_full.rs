//! A full disk during backup and during restore: a clear error that names the path (exit 2
//! from the binary, `ErrorKind::StorageFull` from the library), and no partial output left:
//! no archive under its final name, no `.partial`, no restored file with wrong content.
//!
//! The full disk is a 2 MiB tmpfs mounted for the test. Mounting needs root (or
//! CAP_SYS_ADMIN); where it cannot be made the tests print why and pass without checking.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use coffer::archive::Archive;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::recipient::Recipient;
use coffer::{Compression, Error};

/// A small tmpfs, unmounted when dropped (before its `TestDir` is removed).
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mount a tmpfs of `size` (mount(8) syntax) at `dir`, or say why not.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Mount the small file system or print why the test is skipped.
fn small_fs(t: &TestDir, test: &str) -> Option<SmallFs> {
    match SmallFs::mount(&t.join("full"), "2m") {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIPPED {test}: no small file system to fill: {why}");
            None
        }
    }
}

/// Every entry below `dir`, as relative paths (for messages).
fn listing(dir: &Path) -> Vec<PathBuf> {
    scan(dir)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

fn assert_storage_full(stderr: &str, names: &Path) {
    assert!(
        stderr.contains("No space left on device"),
        "error does not say the disk is full: {stderr}"
    );
    assert!(
        stderr.contains(&names.display().to_string()),
        "error does not name {}: {stderr}",
        names.display()
    );
}

#[test]
fn backup_onto_a_full_disk_fails_clearly_and_leaves_no_archive() {
    let t = TestDir::new();
    let Some(small) = small_fs(
        &t,
        "backup_onto_a_full_disk_fails_clearly_and_leaves_no_archive",
    ) else {
        return;
    };
    let dest = small.dir.clone();
    // An earlier archive that fits, and must survive the failed run.
    let little = t.join("src/little");
    write_file(&little.join("a.bin"), &pseudo_random(300_000, 1), 0o644);
    let earlier = dest.join("earlier.coffer");
    backup_with(
        &[&little],
        &earlier,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );

    let src = t.join("src/big");
    write_file(&src.join("one.bin"), &pseudo_random(3 << 20, 2), 0o644);
    write_file(&src.join("two.bin"), &pseudo_random(2 << 20, 3), 0o644);
    let out = dest.join("big.coffer");

    // The binary: exit 2, and the message names the archive and the cause.
    let run = coffer_cmd()
        .args(["backup", "--quiet", "--compression", "none", "-r"])
        .arg(alice_pub())
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "stderr: {stderr}");
    assert_storage_full(&stderr, &out);
    assert_eq!(
        listing(&dest),
        vec![PathBuf::from("earlier.coffer")],
        "the failed backup left something behind"
    );

    // The library: a typed I/O error of kind StorageFull naming the archive.
    let alice = recipient(&alice_pub());
    let mut opts = BackupOptions::new(vec![src.clone()], out.clone());
    opts.compression = Compression::None;
    match backup(&opts, &[&alice as &dyn Recipient], &Quiet) {
        Err(Error::Io { path, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
            assert_eq!(path, out);
        }
        other => panic!("expected a storage-full I/O error, got {other:?}"),
    }
    assert_eq!(listing(&dest), vec![PathBuf::from("earlier.coffer")]);

    // The space of the removed temporary file is free again: a small archive still fits.
    let again = dest.join("again.coffer");
    backup_with(
        &[&little],
        &again,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    for p in [&earlier, &again] {
        let a = Archive::open(p).unwrap();
        let u = a.unlock(&identity(&alice_key())).unwrap();
        assert!(a.verify_blocks(&u, &Quiet).unwrap().is_ok());
    }
}

#[test]
fn restore_onto_a_full_disk_fails_clearly_and_leaves_no_partial_file() {
    let t = TestDir::new();
    let Some(small) = small_fs(
        &t,
        "restore_onto_a_full_disk_fails_clearly_and_leaves_no_partial_file",
    ) else {
        return;
    };
    let src_parent = t.join("src");
    let src = src_parent.join("data");
    // Files in stream order: some fit before the disk fills, one is cut by it.
    write_file(&src.join("a-small.txt"), b"fits easily\n", 0o644);
    write_file(&src.join("b-half.bin"), &pseudo_random(1 << 20, 4), 0o644);
    write_file(&src.join("c-big.bin"), &pseudo_random(4 << 20, 5), 0o644);
    write_file(&src.join("d-after.txt"), b"never reached\n", 0o644);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );

    let target = small.dir.join("cli");
    let run = coffer_cmd()
        .args(["restore", "--quiet", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(&target)
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "stderr: {stderr}");
    assert_storage_full(&stderr, &target);
    let kept = assert_no_wrong_content(&src_parent, &target);
    assert!(partial_files(&target).is_empty());
    assert!(
        !target.join("data/c-big.bin").exists(),
        "the file cut by the full disk has its final name"
    );
    eprintln!("restore kept {kept} complete files: {:?}", listing(&target));
    fs::remove_dir_all(&target).unwrap();

    // The library: a typed I/O error of kind StorageFull.
    let target = small.dir.join("lib");
    match try_restore(&archive, &alice_key(), &target, &[], false) {
        Err(Error::Io { path, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
            assert!(path.starts_with(&target), "{}", path.display());
        }
        other => panic!("expected a storage-full I/O error, got {other:?}"),
    }
    assert_no_wrong_content(&src_parent, &target);
    assert!(partial_files(&target).is_empty());
}

/// The error should name the file the user asked for (`data/c-big.bin`), not the temporary
/// name restore was writing it under, which it has already removed when the user reads it.
#[test]
fn restore_onto_a_full_disk_names_the_file_not_its_temp_name() {
    let t = TestDir::new();
    let Some(small) = small_fs(
        &t,
        "restore_onto_a_full_disk_names_the_file_not_its_temp_name",
    ) else {
        return;
    };
    let src = t.join("src/data");
    write_file(&src.join("c-big.bin"), &pseudo_random(4 << 20, 5), 0o644);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = small.dir.join("out");
    let run = coffer_cmd()
        .args(["restore", "--quiet", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(&target)
        .arg(&archive)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "stderr: {stderr}");
    assert_storage_full(&stderr, &target.join("data/c-big.bin"));
    assert!(
        !stderr.contains(".partial") && !stderr.contains(".coffer-"),
        "names a temporary file: {stderr}"
    );
}
