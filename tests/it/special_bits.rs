//! Set-uid and set-gid bits: anyone with a recipient's public key can write an archive, so
//! restore clears them unless `--preserve-special-bits` is given, and says how many it
//! cleared; when kept, they survive `--preserve-owner` (owner set before mode).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;
use coffer::Compression;
use coffer::backup::Quiet;
use coffer::restore::{RestoreOptions, RestoreReport};

/// A tree with a set-uid program, a set-gid folder and a sticky world-writable folder.
fn special_archive(t: &TestDir) -> std::path::PathBuf {
    let src = t.join("src/top");
    write_file(&src.join("bin/prog"), b"#!/bin/sh\n", 0o755);
    fs::set_permissions(src.join("bin/prog"), fs::Permissions::from_mode(0o4755)).unwrap();
    write_file(&src.join("shared/file"), b"x", 0o644);
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    archive
}

fn restore_with(archive: &Path, target: &Path, owner: bool, special: bool) -> RestoreReport {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        preserve_owner: owner,
        preserve_special_bits: special,
        ..Default::default()
    };
    restore_observed(archive, &alice_key(), &opts, &Quiet).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn regression_setuid_from_an_archive_is_cleared_by_default() {
    let t = TestDir::new();
    let archive = special_archive(&t);
    for owner in [false, true] {
        let target = t.join(format!("default-{owner}"));
        let report = restore_with(&archive, &target, owner, false);
        assert_eq!(mode(&target.join("top/bin/prog")), 0o755);
        assert_eq!(mode(&target.join("top/shared")), 0o775);
        // The sticky bit only restricts: kept.
        assert_eq!(mode(&target.join("top/tmp")), 0o1777);
        assert_eq!(report.special_bits_cleared, 2);
    }
}

#[test]
fn regression_preserve_owner_no_longer_drops_setuid() {
    let t = TestDir::new();
    let archive = special_archive(&t);
    let root = rustix::process::geteuid().is_root();
    // Both settings of --preserve-owner: chown after chmod used to clear set-uid.
    for owner in [false, true] {
        let target = t.join(format!("kept-{owner}"));
        let report = restore_with(&archive, &target, owner, true);
        if root && !owner {
            // As root without the owner, the bits would make set-uid-root programs: cleared.
            assert_eq!(mode(&target.join("top/bin/prog")), 0o755);
            assert_eq!(mode(&target.join("top/shared")), 0o775);
            assert_eq!(report.special_bits_cleared, 2);
            continue;
        }
        assert_eq!(mode(&target.join("top/bin/prog")), 0o4755, "owner={owner}");
        assert_eq!(mode(&target.join("top/shared")), 0o2775, "owner={owner}");
        assert_eq!(mode(&target.join("top/tmp")), 0o1777, "owner={owner}");
        assert_eq!(report.special_bits_cleared, 0);
        if owner {
            let src = fs::metadata(t.join("src/top/bin/prog")).unwrap();
            let got = fs::metadata(target.join("top/bin/prog")).unwrap();
            assert_eq!((got.uid(), got.gid()), (src.uid(), src.gid()));
        }
    }
}

#[test]
fn restore_says_how_many_special_bits_it_cleared() {
    let t = TestDir::new();
    let archive = special_archive(&t);
    let out = coffer_cmd()
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("cli"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // A policy, not a failure: exit 0.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("set-uid/set-gid bits or file capabilities cleared on 2 files or folders"),
        "{stderr}"
    );
    assert!(stderr.contains("--preserve-special-bits"), "{stderr}");

    let out = coffer_cmd()
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--json")
        .arg("--to")
        .arg(t.join("json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["special_bits_cleared"], 2);

    coffer_cmd()
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--preserve-special-bits")
        .arg("--preserve-owner")
        .arg("-q")
        .arg("--to")
        .arg(t.join("kept"))
        .assert()
        .success()
        .stderr("");
    assert_eq!(mode(&t.join("kept/top/bin/prog")), 0o4755);
}
