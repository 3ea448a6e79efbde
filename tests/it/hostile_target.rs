//! Restore into a target shared with other users: a folder swapped for a symlink while the
//! restore runs changes nothing outside the target, and names and paths at the system's
//! limits restore (the restore works relative to folder descriptors, never by path).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::*;
use coffer::Compression;
use coffer::backup::Observer;
use coffer::restore::RestoreOptions;
use coffer::{Error, backup};

/// Plays the local user who owns `top` in the target: after the first file is restored, it
/// moves the folder `victim` away and puts a symlink to `outside` in its place.
struct Swapper {
    victim: PathBuf,
    outside: PathBuf,
    swapped: Mutex<bool>,
}

impl Observer for Swapper {
    fn file_done(&self, _path: &Path, _bytes: u64) {
        let mut swapped = self.swapped.lock().unwrap();
        if !*swapped {
            fs::rename(&self.victim, self.victim.with_extension("moved")).unwrap();
            std::os::unix::fs::symlink(&self.outside, &self.victim).unwrap();
            *swapped = true;
        }
    }
}

/// A folder's mode, owner and mtime, and each name inside with its mode and content.
type Snapshot = (u32, u32, i64, i64, Vec<(String, u32, Vec<u8>)>);

/// What an outsider could have had changed: mode, owner, times and the names inside.
fn snapshot(dir: &Path) -> Snapshot {
    let m = fs::metadata(dir).unwrap();
    let mut inside: Vec<(String, u32, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let bytes = if m.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().into_string().unwrap(), m.mode(), bytes)
        })
        .collect();
    inside.sort();
    (m.mode(), m.uid(), m.mtime(), m.mtime_nsec(), inside)
}

#[test]
fn regression_restore_race_folder_swapped_for_symlink_changes_nothing_outside() {
    let t = TestDir::new();
    let src = t.join("src/top");
    // A file spanning blocks (the ordered writer) and many small files in the folder that
    // gets swapped (the workers), which is archived world-writable.
    write_file(&src.join("a/big.bin"), &pseudo_random(300_000, 1), 0o644);
    for i in 0..200 {
        write_file(&src.join(format!("d/f{i:03}")), b"restored data", 0o644);
    }
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
    set_mtime(&src.join("d"), 1_000_000_000, 0);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );

    // The outsider's folder: private, with a private file in it.
    let outside = t.join("outside");
    fs::create_dir(&outside).unwrap();
    write_file(&outside.join("secret"), b"root's", 0o600);
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(&outside);

    let target = t.join("target");
    let observer = Swapper {
        victim: target.join("top/d"),
        outside: outside.clone(),
        swapped: Mutex::new(false),
    };
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let result = restore_observed(&archive, &alice_key(), &opts, &observer);
    assert!(*observer.swapped.lock().unwrap(), "the swap never ran");
    assert_eq!(
        snapshot(&outside),
        before,
        "something outside the target changed"
    );
    // The swap is noticed: the folder restore made is no longer where it was.
    match result {
        Err(Error::UnsafePath { path, .. }) => assert_eq!(path, "top/d"),
        other => panic!("expected the swapped folder to be refused, got {other:?}"),
    }
    // The link itself is left as the outsider made it.
    assert_eq!(fs::read_link(target.join("top/d")).unwrap(), outside);
}

#[test]
fn regression_restore_of_255_byte_names_and_paths_beyond_path_max() {
    let t = TestDir::new();
    let src = t.join("src/top");
    // 255 bytes: the longest name Linux file systems take. The temporary name restore
    // writes under must not be longer.
    let long_name = "n".repeat(255);
    write_file(&src.join(&long_name), b"longest name", 0o644);
    // A path of about 4,000 bytes below the source, as deep as the source's own file
    // system lets us create it by path.
    let mut deep = src.clone();
    let component = "d".repeat(100);
    while deep.as_os_str().len() + component.len() + 10 < 4000 {
        deep.push(&component);
    }
    fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("f"), b"deep file", 0o600);
    let rel_deep = deep.strip_prefix(t.join("src")).unwrap().join("f");
    assert!(rel_deep.as_os_str().len() > 3850);

    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );

    // Restored below a long target path, the deep file's full path exceeds PATH_MAX
    // (4,096 bytes): only a restore that never uses full paths can create it.
    let target = t.join("x".repeat(200));
    let report = try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_eq!(report.files, 2);
    assert!(target.join(&rel_deep).as_os_str().len() > 4096);
    assert_eq!(
        fs::read(target.join("top").join(&long_name)).unwrap(),
        b"longest name"
    );
    // Read it back the way restore wrote it: one folder at a time.
    let mut dir = fs::File::open(&target).unwrap();
    let parts: Vec<_> = rel_deep.iter().collect();
    for part in &parts[..parts.len() - 1] {
        let next = Path::new("/proc/self/fd")
            .join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string())
            .join(part);
        dir = fs::File::open(next).unwrap();
    }
    let file = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string())
        .join("f");
    assert_eq!(fs::read(&file).unwrap(), b"deep file");
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn regression_backup_of_dotdot_is_named_after_the_folder() {
    let t = TestDir::new();
    write_file(&t.join("project/sub/file"), b"x", 0o644);
    let archive = t.join("a.coffer");
    // `/…/project/sub/..` is the folder `project`, not the file system root.
    let source = t.join("project/sub/..");
    let recipient = recipient(&alice_pub());
    let opts = backup::BackupOptions::new(vec![source], archive.clone());
    backup::backup(
        &opts,
        &[&recipient as &dyn coffer::recipient::Recipient],
        &backup::Quiet,
    )
    .unwrap();
    let paths: Vec<Vec<u8>> = entries_of(&archive, &alice_key())
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        paths,
        [&b"project"[..], b"project/sub", b"project/sub/file"]
    );

    // And `coffer backup ..` from inside a folder, through the binary.
    let archive2 = t.join("b.coffer");
    coffer_cmd()
        .current_dir(t.join("project/sub"))
        .args(["backup", "..", "-q", "-o"])
        .arg(&archive2)
        .arg("-r")
        .arg(alice_pub())
        .assert()
        .success();
    let listing = coffer_cmd()
        .arg("list")
        .arg(&archive2)
        .arg("-i")
        .arg(alice_key())
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing.lines().any(|l| l == "project/sub/file"),
        "{listing}"
    );
}

/// Plays the local user who owns the folder holding two restored folders: after the first
/// file is restored, it swaps their names.
struct NameSwapper {
    a: PathBuf,
    b: PathBuf,
    swapped: Mutex<bool>,
}

impl Observer for NameSwapper {
    fn file_done(&self, _path: &Path, _bytes: u64) {
        let mut swapped = self.swapped.lock().unwrap();
        if !*swapped {
            let tmp = self.a.with_extension("swap");
            fs::rename(&self.a, &tmp).unwrap();
            fs::rename(&self.b, &self.a).unwrap();
            fs::rename(&tmp, &self.b).unwrap();
            *swapped = true;
        }
    }
}

#[test]
fn regression_restore_swapped_folder_names_never_get_each_others_metadata() {
    let t = TestDir::new();
    let src = t.join("src/top");
    // A private folder and a world-writable one, side by side.
    for i in 0..50 {
        write_file(&src.join(format!("private/f{i:02}")), b"secret", 0o600);
        write_file(&src.join(format!("public/f{i:02}")), b"open", 0o644);
    }
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("public"), fs::Permissions::from_mode(0o777)).unwrap();
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = t.join("target");
    let observer = NameSwapper {
        a: target.join("top/private"),
        b: target.join("top/public"),
        swapped: Mutex::new(false),
    };
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let result = restore_observed(&archive, &alice_key(), &opts, &observer);
    assert!(*observer.swapped.lock().unwrap(), "the swap never ran");
    assert!(
        matches!(result, Err(Error::TargetChanged { .. })),
        "expected the swap to be refused, got {result:?}"
    );
    // The folder holding the private files (now under the public name) never became 0777.
    let private_now = target.join("top/public");
    assert_ne!(
        fs::metadata(&private_now).unwrap().mode() & 0o777,
        0o777,
        "the private folder got the public folder's mode"
    );
    for entry in fs::read_dir(&private_now).unwrap() {
        let p = entry.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_file() {
            assert_eq!(fs::read(&p).unwrap(), b"secret", "{}", p.display());
        }
    }
}
