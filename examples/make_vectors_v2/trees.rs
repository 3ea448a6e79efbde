//! The source trees of the v2 vectors and the real writer's runs over them.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer::backup::{BackupOptions, ChainOptions, Quiet, backup};
use coffer::keys::SessionId;
use coffer::recipient::Recipient;
use coffer::{Compression, SigningKey};
use rustix::fs::{CWD, FileType, Mode, XattrFlags, makedev, mknodat};

/// uid/gid of every source entry (set as root), as in v2.8.5.
pub const OWNER: u32 = 1000;
/// mtime of every source entry: 2025-11-30T00:00:00Z, as in v2.8.5.
pub const MTIME: i64 = 1_764_460_800;
/// Size of `big.bin` in the chain trees: three content windows (v2.4), the last partial.
pub const BIG: usize = 2_300_000;

/// Deterministic low-entropy bytes: a 1000-byte xorshift pattern repeated (zstd shrinks
/// it to a few hundred bytes per 64 KiB block; no two 1 MiB windows are equal).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let unit: Vec<u8> = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    unit.iter().copied().cycle().take(len).collect()
}

fn file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// A POSIX ACL xattr value (v2.7.1): owner rw, named user 1000 r, group r, mask r, other r.
pub fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// `security.capability` (VFS_CAP_REVISION_2, effective): cap_net_bind_service permitted.
pub const CAPABILITY: [u8; 20] = [
    0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A sparse file of `size` bytes with data at the given `(offset, bytes)` ranges.
fn sparse(path: &Path, size: u64, ranges: &[(u64, &[u8])]) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (at, bytes) in ranges {
        f.write_all_at(bytes, *at).unwrap();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Owner and mtime of every entry under `root` (root included), deepest first.
pub fn settle(root: &Path) {
    let mut all = Vec::new();
    collect(root, &mut all);
    all.reverse();
    settle_paths(&all);
}

/// Owner and mtime of exactly `paths` (touching others would change their ctime, and an
/// incremental would read them as changed).
fn settle_paths(paths: &[PathBuf]) {
    for p in paths {
        lchown(p, Some(OWNER), Some(OWNER)).unwrap();
        let t = filetime::FileTime::from_unix_time(MTIME, 0);
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    out.push(p.to_path_buf());
    if fs::symlink_metadata(p).unwrap().is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            collect(&n, out);
        }
    }
}

/// The non-UTF-8 file name of `basic` (bytes ff fe are not UTF-8).
pub const ODD_NAME: &[u8] = b"caf\xe9-\xff\xfe.txt";

/// `basic`: every entry kind and the xattr namespaces (needs root: device, `trusted.*`,
/// `security.capability`, owners).
pub fn basic(parent: &Path) -> PathBuf {
    let t = parent.join("t");
    fs::create_dir_all(t.join("dir")).unwrap();
    file(&t.join("a.txt"), b"Hello, coffer v2!\n");
    xattr(&t.join("a.txt"), "user.comment", b"basic vector");
    xattr(&t.join("a.txt"), "trusted.note", b"root only");
    xattr(&t.join("a.txt"), "system.posix_acl_access", &acl());
    fs::hard_link(t.join("a.txt"), t.join("dir/hard.txt")).unwrap();
    xattr(&t.join("dir"), "system.posix_acl_default", &acl());
    file(&t.join("tool"), b"#!/bin/sh\necho tool\n");
    fs::set_permissions(t.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    xattr(&t.join("tool"), "security.capability", &CAPABILITY);
    file(
        &t.join(OsStr::from_bytes(ODD_NAME)),
        b"a name that is not UTF-8\n",
    );
    symlink("a.txt", t.join("link")).unwrap();
    rustix::fs::mkfifoat(CWD, t.join("fifo"), Mode::from_raw_mode(0o644)).unwrap();
    mknodat(
        CWD,
        t.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .unwrap();
    sparse(
        &t.join("sparse.img"),
        1 << 20,
        &[(0, &[b's'; 4096]), (524_288, &[b'p'; 4096])],
    );
    settle(&t);
    t
}

/// The chain tree of v2.8.5 at point `n` (0 = `A`, 1 = `B`, 2 = `C`), built in place
/// from the previous point so that unchanged files keep their inode and ctime.
pub fn chain_point(t: &Path, n: usize) {
    match n {
        0 => {
            fs::create_dir_all(t).unwrap();
            file(&t.join("a.txt"), &pattern(100, 1));
            fs::hard_link(t.join("a.txt"), t.join("b.txt")).unwrap();
            file(&t.join("big.bin"), &pattern(BIG, 2));
            rustix::fs::mkfifoat(CWD, t.join("fifo"), Mode::from_raw_mode(0o644)).unwrap();
            sparse(
                &t.join("sparse.img"),
                1 << 20,
                &[(0, &pattern(4096, 3)), (524_288, &pattern(4096, 4))],
            );
        }
        1 => {
            // Window 1 of big.bin rewritten; c.txt a copy of a.txt; the FIFO deleted.
            rewrite(&t.join("big.bin"), 1_100_000, b"B was here");
            fs::copy(t.join("a.txt"), t.join("c.txt")).unwrap();
            fs::remove_file(t.join("fifo")).unwrap();
        }
        _ => {
            // Window 0 of big.bin rewritten; a new file.
            rewrite(&t.join("big.bin"), 5, b"C was here");
            file(&t.join("d.txt"), b"new in C\n");
        }
    }
    match n {
        0 => settle(t),
        1 => settle_paths(&[t.join("big.bin"), t.join("c.txt"), t.to_path_buf()]),
        _ => settle_paths(&[t.join("big.bin"), t.join("d.txt"), t.to_path_buf()]),
    }
}

fn rewrite(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// One run of the real writer.
pub struct Run<'a> {
    pub source: &'a Path,
    pub output: PathBuf,
    pub recipients: &'a [&'a dyn Recipient],
    pub session_id: SessionId,
    pub compression: Compression,
    /// `Some(state)`: join the chain kept there (job `home`).
    pub state: Option<&'a Path>,
    pub signing_key: Option<Arc<SigningKey>>,
}

impl Run<'_> {
    pub fn go(self) -> coffer::BackupReport {
        let mut opts = BackupOptions::new(vec![self.source.to_path_buf()], self.output);
        opts.block_size = 65_536;
        opts.segment_size = 4096;
        opts.compression = self.compression;
        opts.session_id = Some(self.session_id);
        opts.signing_key = self.signing_key;
        if let Some(state) = self.state {
            opts.job_name = "home".into();
            opts.chain = Some(ChainOptions::new(state.to_path_buf()));
        }
        backup(&opts, self.recipients, &Quiet).unwrap_or_else(|e| panic!("backup: {e}"))
    }
}
