//! Shared helpers for coffer's integration tests: a temporary folder per test, the
//! committed TEST-ONLY fixture keys, a rich sample tree, and a byte-for-byte,
//! metadata-for-metadata tree comparison that never follows links.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer::archive::Archive;
use coffer::backup::{BackupOptions, BackupReport, Quiet, backup};
use coffer::recipient::{Recipient, RsaIdentity, RsaRecipient};
use coffer::restore::{RestoreOptions, RestoreReport};
use coffer::{Compression, Error};

/// Block size used wherever several blocks are wanted without much data.
pub const SMALL_BLOCK: u32 = 64 * 1024;

/// A temporary folder that lives as long as the test.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("coffer-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// Path of a committed TEST-ONLY fixture key (see fixtures/keys/README.md).
pub fn key(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keys")
        .join(name);
    // git does not keep 0600, and coffer rightly warns about a private key that others
    // can read: give the checked-out private keys the mode they would have in real use.
    if !name.ends_with(".pub") && !name.ends_with(".md") {
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
    }
    path
}

pub fn alice_pub() -> PathBuf {
    key("alice.key.pub")
}
pub fn alice_key() -> PathBuf {
    key("alice.key")
}
pub fn bob_pub() -> PathBuf {
    key("bob.key.pub")
}
pub fn bob_key() -> PathBuf {
    key("bob.key")
}
pub fn carol_pub() -> PathBuf {
    key("carol.key.pub")
}
pub fn carol_key() -> PathBuf {
    key("carol.key")
}

pub fn recipient(path: &Path) -> RsaRecipient {
    RsaRecipient::load(path).unwrap_or_else(|e| panic!("load recipient {}: {e}", path.display()))
}

pub fn identity(path: &Path) -> RsaIdentity {
    RsaIdentity::load(path).unwrap_or_else(|e| panic!("load identity {}: {e}", path.display()))
}

/// Deterministic incompressible bytes (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Highly compressible text.
pub fn compressible(len: usize) -> Vec<u8> {
    let line = b"coffer keeps the same line over and over: lorem ipsum dolor sit amet 0123456789\n";
    line.iter().copied().cycle().take(len).collect()
}

pub fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A point in time from seconds (may be negative) and nanoseconds since the epoch.
pub fn time(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// Set the mtime of a file or folder (never a link) with std only.
pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_modified(time(sec, nsec))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Counts of what [`build_sample_tree`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeCounts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Build a rich sample tree at `root` (created): nested folders, empty files and folders,
/// 0-byte and multi-block files (for 64 KiB blocks), a file of exactly one block, many
/// small files sharing blocks, compressible text, relative/absolute/dangling symlinks,
/// unicode names, several modes and exact mtimes (with nanoseconds, one before 1970).
pub fn build_sample_tree(root: &Path) -> TreeCounts {
    let block = SMALL_BLOCK as usize;
    fs::create_dir_all(root).unwrap();
    let mut files: Vec<(&str, Vec<u8>, u32)> = vec![
        ("empty.txt", Vec::new(), 0o644),
        ("hello.txt", b"hello, world\n".to_vec(), 0o600),
        ("script.sh", b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        ("secret.conf", b"password = not-really\n".to_vec(), 0o640),
        ("docs/readme.md", b"# docs\n\nsome words\n".to_vec(), 0o644),
        ("docs/notes/todo.txt", b"- write tests\n".to_vec(), 0o600),
        ("docs/notes/zero", Vec::new(), 0o400),
        ("nested/a/b/c/d/leaf.bin", pseudo_random(1000, 1), 0o644),
        // Spans 4 blocks and ends mid-block.
        ("big/multi.bin", pseudo_random(3 * block + 12_345, 2), 0o644),
        // Exactly one block long.
        ("big/exact.bin", pseudo_random(block, 3), 0o600),
        ("big/compressible.txt", compressible(300_000), 0o644),
        (
            "unicode/héllo wörld.txt",
            "ünïcödé content\n".as_bytes().to_vec(),
            0o644,
        ),
        (
            "unicode/日本語.md",
            "日本語のテキスト\n".as_bytes().to_vec(),
            0o644,
        ),
        (
            "unicode/emoji-🎉.txt",
            "🎉🎉🎉\n".as_bytes().to_vec(),
            0o644,
        ),
        ("unicode/Ελληνικά/αρχείο", b"greek\n".to_vec(), 0o640),
    ];
    let many: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("many/f{i:03}"),
                pseudo_random((i * 137) % 5000, 100 + i as u64),
            )
        })
        .collect();
    for (p, data) in &many {
        files.push((p.as_str(), data.clone(), 0o644));
    }
    let dirs: &[(&str, u32)] = &[
        ("docs", 0o750),
        ("docs/notes", 0o755),
        ("empty_dir", 0o700),
        ("nested", 0o755),
        ("nested/a", 0o755),
        ("nested/a/b", 0o711),
        ("nested/a/b/c", 0o755),
        ("nested/a/b/c/d", 0o700),
        ("big", 0o755),
        ("unicode", 0o755),
        ("unicode/Ελληνικά", 0o750),
        ("unicode/空のフォルダ", 0o755),
        ("many", 0o755),
        ("links", 0o755),
    ];
    for (d, _) in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut bytes = 0u64;
    for (p, data, mode) in &files {
        write_file(&root.join(p), data, *mode);
        bytes += data.len() as u64;
    }
    let links: &[(&str, &str)] = &[
        ("links/rel", "../hello.txt"),
        ("links/rel_dir", "../docs"),
        ("links/abs", "/etc/hostname"),
        ("links/dangling", "does/not/exist"),
        ("links/abs_dangling", "/nonexistent/coffer-test-target"),
        ("links/ünï-link", "../unicode/日本語.md"),
    ];
    for (l, t) in links {
        std::os::unix::fs::symlink(t, root.join(l)).unwrap();
    }
    // File times, some with nanoseconds, one before 1970 and one far in the future.
    for (i, (p, _, _)) in files.iter().enumerate() {
        let (sec, nsec) = match i {
            0 => (-1_000_000, 500),
            1 => (4_102_444_800, 999_999_999),
            _ => (
                1_600_000_000 + i as i64 * 3_601,
                (i as u32 * 7_919_111) % 1_000_000_000,
            ),
        };
        set_mtime(&root.join(p), sec, nsec);
    }
    // Folder modes and times last, deepest first.
    let mut all_dirs: Vec<(&str, u32)> = dirs.to_vec();
    all_dirs.sort_by_key(|(d, _)| std::cmp::Reverse(d.matches('/').count()));
    for (i, (d, mode)) in all_dirs.iter().enumerate() {
        let p = root.join(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        set_mtime(
            &p,
            1_500_000_000 + i as i64 * 86_400,
            123_456_789 + i as u32,
        );
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    set_mtime(root, 1_400_000_000, 42);
    TreeCounts {
        files: files.len() as u64,
        dirs: dirs.len() as u64 + 1,
        symlinks: links.len() as u64,
        bytes,
    }
}

/// What the comparison knows about one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        mtime: (i64, i64),
        len: u64,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Link {
        target: PathBuf,
        mtime: (i64, i64),
    },
    Other,
}

/// Every entry under `root` (relative paths; `root` itself is ""), never following links.
pub fn scan(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    scan_into(root, Path::new(""), &mut out);
    out
}

fn scan_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    // `root.join("")` would add a trailing slash, which fails on a file.
    let path = join(root, rel);
    let m = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let mtime = (m.mtime(), m.mtime_nsec());
    let ft = m.file_type();
    let node = if ft.is_symlink() {
        Node::Link {
            target: fs::read_link(&path).unwrap(),
            mtime,
        }
    } else if ft.is_dir() {
        Node::Dir {
            mode: m.mode() & 0o7777,
            mtime,
        }
    } else if ft.is_file() {
        Node::File {
            mode: m.mode() & 0o7777,
            mtime,
            len: m.len(),
        }
    } else {
        Node::Other
    };
    out.insert(rel.to_path_buf(), node);
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            scan_into(root, &rel.join(n), out);
        }
    }
}

fn join(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Assert that two trees are equal: same entries, kinds, mode bits, mtimes (seconds and
/// nanoseconds) of files, folders and links, link targets, and file bytes. Links are
/// never followed. Lists every difference on failure.
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    let a = scan(expected);
    let b = scan(actual);
    let mut diffs = Vec::new();
    for (p, na) in &a {
        match b.get(p) {
            None => diffs.push(format!("missing: {}", p.display())),
            Some(nb) if nb != na => diffs.push(format!(
                "differs: {}: expected {na:?}, got {nb:?}",
                p.display()
            )),
            Some(Node::File { .. }) => {
                let x = fs::read(join(expected, p)).unwrap();
                let y = fs::read(join(actual, p)).unwrap();
                if x != y {
                    let at = x.iter().zip(&y).position(|(u, v)| u != v);
                    diffs.push(format!(
                        "content differs: {} (first at {at:?})",
                        p.display()
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            diffs.push(format!("unexpected: {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees {} and {} differ:\n  {}",
        expected.display(),
        actual.display(),
        diffs.join("\n  ")
    );
}

/// After a failed restore: every regular file in `target` must be byte-identical to the
/// same path under `source_parent` (where the backed-up source folder lives), and no
/// temporary `.partial` file may be left. Returns how many files were found.
pub fn assert_no_wrong_content(source_parent: &Path, target: &Path) -> usize {
    if fs::symlink_metadata(target).is_err() {
        return 0;
    }
    let mut files = 0;
    for (rel, node) in scan(target) {
        let name = rel.to_string_lossy();
        assert!(
            !name.ends_with(".partial"),
            "temporary file left in the target: {}",
            rel.display()
        );
        if let Node::File { .. } = node {
            let got = fs::read(target.join(&rel)).unwrap();
            let want = fs::read(source_parent.join(&rel)).unwrap_or_else(|e| {
                panic!(
                    "{} exists in the target but not in the source: {e}",
                    rel.display()
                )
            });
            assert!(
                got == want,
                "{} was restored with wrong content ({} bytes, expected {})",
                rel.display(),
                got.len(),
                want.len()
            );
            files += 1;
        }
    }
    files
}

/// Every path below `dir` with a temporary name: an archive's `.NAME.xxxxxxxx.partial`
/// or a restored file's or link's `.coffer-<16 hex>.tmp`.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    if fs::symlink_metadata(dir).is_err() {
        return Vec::new();
    }
    scan(dir)
        .into_keys()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".partial") || (name.starts_with(".coffer-") && name.ends_with(".tmp"))
        })
        .collect()
}

/// A file of `size` bytes that takes seconds to back up but little disk space: one byte
/// every `size / 16384` bytes. Format v2 stores only a sparse file's data ranges, so a file
/// of holes alone would be read at once; 16,384 ranges are more than an entry holds
/// (8,192), so the smallest holes are read as data, about half the file, as zeros from
/// the page cache (64 MiB of disk for the written blocks).
pub fn slow_sparse_file(path: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let step = size / 16_384;
    for i in 0..16_384u64 {
        f.write_all_at(b"x", i * step).unwrap();
    }
}

/// Back up `sources` to `output` through the library.
pub fn backup_with(
    sources: &[&Path],
    output: &Path,
    block_size: u32,
    compression: Compression,
    recipients: &[&Path],
) -> BackupReport {
    backup_as(2, sources, output, block_size, compression, recipients)
}

/// [`backup_with`] writing format v1: for the tests of v1 readers that reach into the v1
/// layout (v1 archives stay readable forever).
pub fn backup_v1_with(
    sources: &[&Path],
    output: &Path,
    block_size: u32,
    compression: Compression,
    recipients: &[&Path],
) -> BackupReport {
    backup_as(1, sources, output, block_size, compression, recipients)
}

fn backup_as(
    format: u16,
    sources: &[&Path],
    output: &Path,
    block_size: u32,
    compression: Compression,
    recipients: &[&Path],
) -> BackupReport {
    let rs: Vec<RsaRecipient> = recipients.iter().map(|p| recipient(p)).collect();
    let refs: Vec<&dyn Recipient> = rs.iter().map(|r| r as &dyn Recipient).collect();
    let mut opts = BackupOptions::new(
        sources.iter().map(|p| p.to_path_buf()).collect(),
        output.to_path_buf(),
    );
    opts.block_size = block_size;
    opts.compression = compression;
    opts.format = format;
    backup(&opts, &refs, &Quiet).unwrap_or_else(|e| panic!("backup failed: {e}"))
}

/// Every entry of an archive (either format), in index order.
pub fn entries_of(archive: &Path, key: &Path) -> Vec<coffer::format::v2::EntryV2> {
    let a = coffer::archive::Archive::open(archive).unwrap();
    let u = a.unlock(&identity(key)).unwrap();
    let mut out = Vec::new();
    u.for_each_entry(&a, |_, e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    out
}

/// Open, unlock and restore through the library, returning the first error.
pub fn try_restore(
    archive: &Path,
    key: &Path,
    target: &Path,
    patterns: &[&str],
    overwrite: bool,
) -> Result<RestoreReport, Error> {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        overwrite,
        patterns: patterns.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    restore_observed(archive, key, &opts, &Quiet)
}

/// Open, unlock and restore through the library with `opts`, telling `observer`.
pub fn restore_observed(
    archive: &Path,
    key: &Path,
    opts: &RestoreOptions,
    observer: &dyn coffer::progress::Observer,
) -> Result<RestoreReport, Error> {
    let id = RsaIdentity::load(key)?;
    let a = Archive::open(archive)?;
    let u = a.unlock(&id)?;
    coffer::restore_chain(&a, &u, &id, opts, observer)
}

/// The `coffer` binary built for this test run.
pub fn coffer_cmd() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("coffer").expect("coffer binary");
    c.env_remove("RUST_LOG");
    c
}
