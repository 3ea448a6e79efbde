//! Unit tests of the descriptor-relative target: refusals, no replacing, staging, bounded caches, special files, hard links, xattrs.

use super::*;

#[test]
fn dir_refuses_a_symlinked_folder() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = Target::open(t.path()).unwrap();
    target.make_dir("a").unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("b")).unwrap();
    assert!(matches!(
        target.make_dir("b"),
        Err(Error::UnsafePath { .. })
    ));
    assert!(matches!(
        target.create_file("b/x"),
        Err(Error::UnsafePath { .. })
    ));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn commit_without_overwrite_never_replaces() {
    let t = tempfile::tempdir().unwrap();
    let target = Target::open(t.path()).unwrap();
    std::fs::write(t.path().join("f"), b"theirs").unwrap();
    let f = target.create_file("f").unwrap();
    assert!(matches!(f.commit(false), Err(Error::Exists { .. })));
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"theirs");
    // The temporary file is gone too.
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
}

#[test]
fn a_link_is_made_in_a_private_folder_that_is_then_removed() {
    let t = tempfile::tempdir().unwrap();
    let target = Target::open(t.path()).unwrap();
    target.make_dir("d").unwrap();
    let meta = Meta {
        owner: None,
        mode: 0o777,
        mtime_sec: 1_000_000_000,
        mtime_nsec: 5,
    };
    let problems = target.symlink("d/l", "../elsewhere", &meta, false).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let names: Vec<_> = std::fs::read_dir(t.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["l"]);
    let link = t.path().join("d/l");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../elsewhere")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::symlink_metadata(&link).unwrap().mtime(),
        1_000_000_000
    );
    // Without overwrite, an existing name stays.
    assert!(matches!(
        target.symlink("d/l", "x", &meta, false),
        Err(Error::Exists { .. })
    ));
}

#[test]
fn a_folder_replaced_under_its_name_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let target = Target::open(t.path()).unwrap();
    target.make_dir("a").unwrap();
    target.forget_dirs();
    std::fs::rename(t.path().join("a"), t.path().join("moved")).unwrap();
    std::fs::create_dir(t.path().join("a")).unwrap();
    assert!(matches!(
        target.create_file("a/f"),
        Err(Error::TargetChanged { .. })
    ));
}

#[test]
fn the_folder_cache_stays_bounded() {
    let t = tempfile::tempdir().unwrap();
    let target = Target::open(t.path()).unwrap();
    for i in 0..DIR_CACHE * 2 {
        target.make_dir(format!("d{i}")).unwrap();
    }
    assert!(target.dirs.lock().unwrap().len() <= DIR_CACHE);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn meta(mode: u32, owner: Option<(u32, u32)>) -> Meta {
    Meta {
        owner,
        mode,
        mtime_sec: 1_234_567_890,
        mtime_nsec: 42,
    }
}

fn xattr(name: &str, value: &[u8]) -> Xattr {
    Xattr {
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

/// A version-2 file capability: cap_net_bind_service permitted and effective.
fn capability() -> Vec<u8> {
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&[0; 12]);
    cap
}

/// user::rw-, user:1234:r--, group::r--, mask::r--, other::--- (the kernel's format),
/// which agrees with mode 0640.
fn acl() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1234),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    acl
}

/// A target on the disk (the worktree's target folder): /tmp may be a tmpfs without
/// user xattrs.
fn disk_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/target-tests");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

#[test]
fn xattrs_are_set_after_the_owner_so_a_capability_survives() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        println!("skipped: trusted.*, security.capability and chown need root");
        return;
    }
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    let f = target.create_file("f").unwrap();
    f.write_at(0, b"#!/bin/true\n").unwrap();
    let xattrs = vec![
        xattr("security.capability", &capability()),
        xattr("system.posix_acl_access", &acl()),
        xattr("trusted.t", b"1"),
        xattr("user.u", b"\xff\x00binary"),
    ];
    let problems = set_meta_with_xattrs(&f.file, &meta(0o640, Some((1234, 1234))), &xattrs);
    if problems.iter().any(|p| p.contains("not supported")) {
        println!("skipped: the file system lacks xattrs or ACLs: {problems:?}");
        return;
    }
    assert!(problems.is_empty(), "{problems:?}");
    let path = f.commit(false).unwrap();
    let (read, messages) = crate::fsmeta::read_xattrs(&path);
    assert!(messages.is_empty(), "{messages:?}");
    // Verbatim, the ACL included (mode 0640 agrees with it, so chmod left it alone).
    assert_eq!(read, xattrs);
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o640));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 42));
}

#[test]
fn each_refused_xattr_is_one_problem_naming_it() {
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    let f = target.create_file("f").unwrap();
    let problems = set_xattrs(
        &f.file,
        &[
            xattr("user.ok", b"1"),
            xattr("nonsense.x", b"1"),
            Xattr {
                name: b"user.nul\0".to_vec(),
                value: Vec::new(),
            },
        ],
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("nonsense.x"), "{problems:?}");
    assert!(problems[1].contains("user.nul\\x00"), "{problems:?}");
}

#[test]
fn a_link_gets_its_own_xattrs_without_following() {
    if !is_root() {
        println!("skipped: trusted.* xattrs (the ones Linux allows on links) need root");
        return;
    }
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    std::fs::write(t.path().join("file"), b"x").unwrap();
    let problems = target
        .symlink_with_xattrs(
            "l",
            "file",
            &meta(0o777, None),
            &[xattr("trusted.link", b"mine"), xattr("user.x", b"1")],
            false,
        )
        .unwrap();
    // Linux allows no user.* attributes on links.
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("user.x"), "{problems:?}");
    let (on_link, _) = crate::fsmeta::read_xattrs(&t.path().join("l"));
    assert_eq!(on_link, [xattr("trusted.link", b"mine")]);
    let (on_file, _) = crate::fsmeta::read_xattrs(&t.path().join("file"));
    assert!(on_file.is_empty(), "followed the link: {on_file:?}");
    assert_eq!(names(t.path()), ["file", "l"]);
}

#[test]
fn a_sparse_file_is_written_at_offsets_and_keeps_its_holes() {
    use std::os::unix::fs::MetadataExt;
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    let f = target.create_file("sparse").unwrap();
    f.write_at(1 << 20, &[1u8; 4096]).unwrap();
    f.write_at(512 << 20, &[2u8; 8192]).unwrap();
    f.set_len(1 << 30).unwrap();
    let path = f.commit(false).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes were filled: {} blocks",
        m.blocks()
    );
    let file = File::open(&path).unwrap();
    let mut buf = [9u8; 4];
    file.read_exact_at(&mut buf, (1 << 20) - 2).unwrap();
    assert_eq!(buf, [0, 0, 1, 1]);
    file.read_exact_at(&mut buf, (512 << 20) + 8190).unwrap();
    assert_eq!(buf, [2, 2, 0, 0]);
    if let Some(ranges) = crate::fsmeta::data_ranges(&file, &m).unwrap() {
        assert_eq!(ranges.len(), 2, "{ranges:?}");
    }
}

#[test]
fn a_fifo_and_a_device_are_made_with_their_metadata() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    target.make_dir("dev").unwrap();
    let problems = target
        .special(
            "dev/fifo",
            SpecialKind::Fifo,
            (0, 0),
            &meta(0o620, None),
            &[],
            false,
        )
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let m = std::fs::symlink_metadata(t.path().join("dev/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o620);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 42));
    // Without overwrite an existing name stays; with it, it is replaced.
    assert!(matches!(
        target.special(
            "dev/fifo",
            SpecialKind::Fifo,
            (0, 0),
            &meta(0o600, None),
            &[],
            false
        ),
        Err(Error::Exists { .. })
    ));
    target
        .special(
            "dev/fifo",
            SpecialKind::Fifo,
            (0, 0),
            &meta(0o600, None),
            &[],
            true,
        )
        .unwrap();
    let m = std::fs::symlink_metadata(t.path().join("dev/fifo")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);

    let null = target.special(
        "dev/null",
        SpecialKind::Char,
        (1, 3),
        &meta(0o666, Some((1234, 5678))),
        &[],
        false,
    );
    if !is_root() {
        assert!(null.as_ref().is_err_and(not_permitted), "{null:?}");
        println!("device part skipped: making devices needs root");
        return;
    }
    assert!(null.unwrap().is_empty());
    let m = std::fs::symlink_metadata(t.path().join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(crate::fsmeta::rdev_parts(m.rdev()), (1, 3));
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o666));
    target
        .special(
            "dev/blk",
            SpecialKind::Block,
            (7, 200),
            &meta(0o600, None),
            &[],
            false,
        )
        .unwrap();
    let m = std::fs::symlink_metadata(t.path().join("dev/blk")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(crate::fsmeta::rdev_parts(m.rdev()), (7, 200));
    // No staging folder is left behind.
    assert_eq!(names(&t.path().join("dev")), ["blk", "fifo", "null"]);
}

#[test]
fn hard_link_refuses_to_replace_without_overwrite() {
    use std::os::unix::fs::MetadataExt;
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    target.make_dir("d").unwrap();
    let f = target.create_file("a").unwrap();
    f.write_at(0, b"first").unwrap();
    f.commit(false).unwrap();
    std::fs::write(t.path().join("d/c"), b"theirs").unwrap();
    let ino = |p: &str| std::fs::symlink_metadata(t.path().join(p)).unwrap().ino();

    target.hard_link("a", "d/b", false).unwrap();
    assert_eq!(ino("d/b"), ino("a"));
    assert!(matches!(
        target.hard_link("a", "d/c", false),
        Err(Error::Exists { .. })
    ));
    assert_eq!(std::fs::read(t.path().join("d/c")).unwrap(), b"theirs");
    // With overwrite it is replaced, and a name that already is the inode stays so.
    target.hard_link("a", "d/c", true).unwrap();
    assert_eq!(ino("d/c"), ino("a"));
    target.hard_link("a", "d/b", true).unwrap();
    assert_eq!(ino("d/b"), ino("a"));
    assert_eq!(names(&t.path().join("d")), ["b", "c"]);
    // A link is linked as a link, never followed.
    std::os::unix::fs::symlink("a", t.path().join("s")).unwrap();
    target.hard_link("s", "d/s2", false).unwrap();
    assert!(
        std::fs::symlink_metadata(t.path().join("d/s2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn non_utf8_names_restore_as_their_bytes() {
    let t = disk_dir();
    let target = Target::open(t.path()).unwrap();
    let dir: &[u8] = b"caf\xe9";
    let file: Vec<u8> = [dir, b"/\xff\xfe name"].concat();
    target.make_dir(dir).unwrap();
    let f = target.create_file(&file).unwrap();
    f.write_at(0, b"latin-1").unwrap();
    let dest = f.commit(false).unwrap();
    assert_eq!(dest, target.display(&file));
    assert_eq!(
        dest.strip_prefix(t.path()).unwrap().as_os_str().as_bytes(),
        &file[..]
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"latin-1");
    // &str callers (the v1 restore) keep working beside byte callers.
    target.make_dir("plain").unwrap();
    assert_eq!(target.display("plain"), t.path().join("plain"));
    // A NUL or a '..' component is refused, bytes or not.
    assert!(matches!(
        target.make_dir(b"caf\xe9/.."),
        Err(Error::UnsafePath { .. })
    ));
}
