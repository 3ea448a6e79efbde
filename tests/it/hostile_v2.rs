//! Hostile format-v2 archives (docs/FORMAT.md v2.11 "Must fail", issue 15). Each is a real
//! v2 backup taken apart with the recipient's key, changed in one place and put back
//! together with every meta frame re-sealed under the archive's own keys (directory tags,
//! offsets and frame lengths and the trailer recomputed), so that it passes every check
//! before the one it targets: a refusal then comes from the change alone, not from a MAC
//! that the crafting broke. A benign archive reassembled the same way restores exactly.
//!
//! Each hostile archive must be refused by `restore`, `verify -i` and `list` through the
//! binary, with exit code 2 and its error class in the message, writing nothing outside
//! the restore target, and nothing at all when the index is at fault (restore reads and
//! validates the whole index before it writes). Two cases are about data, not the index:
//! `list` reads no block (v2.10.3), so it succeeds on them, and restore may have made
//! folders and other files (each with the right content) before it stops.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use coffer::archive::Archive;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::format::crc32c;
use coffer::format::header::{PREFIX_LEN, SUFFIX_LEN};
use coffer::format::v2::validate::{
    RawHeaderV2, decode_block_chunk, decode_chunk, decode_directory,
};
use coffer::format::v2::{
    BlockChunkRef, BlockRefV2, ChunkRef, DataRange, Directory, EntryV2, KIND_DIR, KIND_FILE,
    KIND_HARDLINK, KIND_SYMLINK, META_BLOCKS, META_DIRECTORY, META_INDEX, TRAILER_LEN, TrailerV2,
    Xattr,
};
use coffer::keys::{SessionId, SubKeys};
use coffer::recipient::{Identity, Recipient};
use coffer::seal::Entropy;
use coffer::seal::meta::{meta_frame_tag, open_meta, seal_meta};
use coffer::{Compression, Error};

// ---------------------------------------------------------------------------------------
// Toolkit: a v2 archive taken apart, and put back together

/// A v2 archive opened with alice's key and decoded down to its entries and block table.
struct Parts {
    /// The header, byte for byte (MAC and CRC included): never changed by reassembly.
    header: Vec<u8>,
    session_id: SessionId,
    keys: SubKeys,
    /// The header's `compression` is 1: meta frames are compressed when that pays.
    compress: bool,
    /// The data section (every block frame), copied as is.
    data: Vec<u8>,
    block_count: u64,
    /// Every entry, in index order (entry numbers are positions here).
    entries: Vec<EntryV2>,
    /// How many entries each of the writer's index chunks held.
    chunk_counts: Vec<u32>,
    /// Each block-table chunk's records.
    block_tables: Vec<Vec<BlockRefV2>>,
    directory: Directory,
}

impl Parts {
    /// Take `archive` apart with `key`: header and trailer parsed as a reader does, the
    /// session key unwrapped, the directory, every index chunk and every block-table chunk
    /// opened (tags checked against the directory) and decoded.
    fn load(archive: &Path, key: &Path) -> Parts {
        let bytes = fs::read(archive).unwrap();
        let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        let h = PREFIX_LEN + body_len + SUFFIX_LEN;
        let header = RawHeaderV2::parse(bytes[..h].to_vec()).expect("a v2 header");
        let tb: &[u8; TRAILER_LEN] = bytes[bytes.len() - TRAILER_LEN..].try_into().unwrap();
        let trailer = TrailerV2::decode(tb).expect("a v2 trailer");
        assert_eq!(
            trailer.signature_len, 0,
            "the toolkit handles unsigned archives"
        );
        let id = identity(key);
        let session_key = header
            .body
            .recipients
            .iter()
            .find_map(|s| id.unwrap_stanza(s).unwrap())
            .expect("the key has a stanza in this archive");
        let session_id = header.body.fields.session_id;
        let keys = SubKeys::derive_v2(&session_key, &session_id);
        let frame = |offset: u64, len: usize| {
            let at = h + offset as usize;
            &bytes[at..at + len]
        };
        let dir_offset = trailer.index_offset + trailer.index_len - trailer.directory_len as u64;
        let plain = open_meta(
            &keys,
            &session_id,
            META_DIRECTORY,
            0,
            true,
            frame(dir_offset, trailer.directory_len as usize),
            None,
        )
        .expect("the directory opens");
        let directory = decode_directory(&plain).unwrap();
        let mut entries = Vec::new();
        let mut chunk_counts = Vec::new();
        let c = directory.chunks.len();
        for (k, r) in directory.chunks.iter().enumerate() {
            let plain = open_meta(
                &keys,
                &session_id,
                META_INDEX,
                k as u64,
                k + 1 == c,
                frame(r.offset, r.frame_len as usize),
                Some(&r.tag),
            )
            .expect("an index chunk opens");
            let chunk = decode_chunk(&plain).unwrap();
            chunk_counts.push(chunk.len() as u32);
            entries.extend(chunk);
        }
        let m = directory.block_chunks.len();
        let block_tables = directory
            .block_chunks
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let plain = open_meta(
                    &keys,
                    &session_id,
                    META_BLOCKS,
                    k as u64,
                    k + 1 == m,
                    frame(r.offset, r.frame_len as usize),
                    Some(&r.tag),
                )
                .expect("a block-table chunk opens");
                decode_block_chunk(&plain).unwrap()
            })
            .collect();
        Parts {
            compress: header.body.fields.compression == 1,
            session_id,
            keys,
            data: bytes[h..h + trailer.index_offset as usize].to_vec(),
            block_count: trailer.block_count,
            header: bytes[..h].to_vec(),
            entries,
            chunk_counts,
            block_tables,
            directory,
        }
    }

    /// Seal `plain` as meta frame `n` of `kind` under the archive's keys (a fresh IV).
    fn seal(&self, kind: u8, n: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        seal_meta(
            &self.keys,
            &self.session_id,
            kind,
            n,
            last,
            plain,
            self.compress,
            Entropy::Os,
        )
    }

    /// Seal index chunks as a writer does: chunk `k` is frame `k`, the last one `FLAG_LAST`.
    fn seal_chunks(&self, chunks: &[Chunk]) -> Vec<Sealed> {
        chunks
            .iter()
            .enumerate()
            .map(|(k, c)| c.seal(self, k as u64, k + 1 == chunks.len()))
            .collect()
    }

    /// Seal block-table chunks as a writer does.
    fn seal_block_tables(&self, tables: &[Vec<BlockRefV2>]) -> Vec<Vec<u8>> {
        tables
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let plain = postcard::to_stdvec(t).unwrap();
                self.seal(META_BLOCKS, k as u64, k + 1 == tables.len(), &plain)
            })
            .collect()
    }

    /// The whole archive: the original header and data section, then `index` and
    /// `blocks` frames back to back in that order, a directory recording each frame where
    /// it lies (offset, length, tag; entry counts and first paths from `index`), changed
    /// by `edit` before it is sealed, and a trailer for these lengths.
    fn assemble(
        &self,
        index: &[Sealed],
        blocks: &[Vec<u8>],
        edit: impl FnOnce(&mut Directory),
    ) -> Vec<u8> {
        let mut section = Vec::new();
        let mut pos = self.data.len() as u64;
        let mut dir = self.directory.clone();
        dir.chunks = index
            .iter()
            .map(|s| {
                let r = ChunkRef {
                    offset: pos,
                    frame_len: s.frame.len() as u32,
                    entry_count: s.entry_count,
                    first_path: s.first_path.clone(),
                    tag: meta_frame_tag(&s.frame),
                };
                pos += s.frame.len() as u64;
                section.extend_from_slice(&s.frame);
                r
            })
            .collect();
        dir.entry_count = index.iter().map(|s| u64::from(s.entry_count)).sum();
        assert_eq!(blocks.len(), self.directory.block_chunks.len());
        dir.block_chunks = blocks
            .iter()
            .zip(&self.directory.block_chunks)
            .map(|(frame, old)| {
                let r = BlockChunkRef {
                    offset: pos,
                    frame_len: frame.len() as u32,
                    first_block_offset: old.first_block_offset,
                    tag: meta_frame_tag(frame),
                };
                pos += frame.len() as u64;
                section.extend_from_slice(frame);
                r
            })
            .collect();
        edit(&mut dir);
        let dir_frame = self.seal(META_DIRECTORY, 0, true, &postcard::to_stdvec(&dir).unwrap());
        section.extend_from_slice(&dir_frame);
        let trailer = TrailerV2 {
            index_offset: self.data.len() as u64,
            index_len: section.len() as u64,
            block_count: self.block_count,
            directory_len: dir_frame.len() as u32,
            signature_len: 0,
        };
        let mut out = self.header.clone();
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&section);
        out.extend_from_slice(&trailer.encode());
        out
    }

    /// `entries` cut into chunks of `per_chunk`, everything sealed anew as a writer would.
    fn rebuild(&self, entries: &[EntryV2], per_chunk: usize) -> Vec<u8> {
        let index = self.seal_chunks(&chunks_of(entries, per_chunk));
        let blocks = self.seal_block_tables(&self.block_tables);
        self.assemble(&index, &blocks, |_| {})
    }

    /// Entry number of `path`.
    fn find(&self, path: &str) -> usize {
        find(&self.entries, path)
    }
}

/// An index chunk before sealing: its plaintext and what the directory records about it.
#[derive(Clone)]
struct Chunk {
    plain: Vec<u8>,
    entry_count: u32,
    first_path: Vec<u8>,
}

impl Chunk {
    fn of(entries: &[EntryV2]) -> Chunk {
        Chunk {
            plain: postcard::to_stdvec(&entries.to_vec()).unwrap(),
            entry_count: entries.len() as u32,
            first_path: entries[0].path.clone(),
        }
    }

    fn seal(&self, parts: &Parts, n: u64, last: bool) -> Sealed {
        Sealed {
            frame: parts.seal(META_INDEX, n, last, &self.plain),
            entry_count: self.entry_count,
            first_path: self.first_path.clone(),
        }
    }
}

/// A sealed index chunk frame and what the directory records about it.
#[derive(Clone)]
struct Sealed {
    frame: Vec<u8>,
    entry_count: u32,
    first_path: Vec<u8>,
}

fn chunks_of(entries: &[EntryV2], per_chunk: usize) -> Vec<Chunk> {
    entries.chunks(per_chunk).map(Chunk::of).collect()
}

fn find(entries: &[EntryV2], path: &str) -> usize {
    entries
        .iter()
        .position(|e| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("no entry {path}"))
}

/// Insert `e` as entry `at`, keeping every hard link pointing at the same entry.
fn insert(entries: &mut Vec<EntryV2>, at: usize, e: EntryV2) {
    for x in entries.iter_mut() {
        if let Some(t) = x.hardlink_to.as_mut()
            && *t >= at as u64
        {
            *t += 1;
        }
    }
    entries.insert(at, e);
}

/// Swap entries `i` and `j`, keeping every hard link pointing at the same entry.
fn swap(entries: &mut [EntryV2], i: usize, j: usize) {
    for x in entries.iter_mut() {
        match x.hardlink_to {
            Some(t) if t == i as u64 => x.hardlink_to = Some(j as u64),
            Some(t) if t == j as u64 => x.hardlink_to = Some(i as u64),
            _ => {}
        }
    }
    entries.swap(i, j);
}

// ---------------------------------------------------------------------------------------
// The source tree and the refusal checks

/// A backed-up tree: `src/t` with files (one of three blocks), folders, a hard link and a
/// symlink pointing at `outside` (an empty folder beside the restore targets: anything
/// written through the link would land there).
struct Fixture {
    t: TestDir,
    src_parent: PathBuf,
    outside: PathBuf,
    parts: Parts,
}

/// Entries of [`fixture`]'s archive, in path order.
const PATHS: [&str; 10] = [
    "t",
    "t/a.txt",
    "t/big.bin",
    "t/docs",
    "t/docs/notes",
    "t/docs/notes/todo.txt",
    "t/docs/readme.md",
    "t/hard",
    "t/link",
    "t/z.txt",
];

fn fixture() -> Fixture {
    let t = TestDir::new();
    let src_parent = t.join("src");
    let root = src_parent.join("t");
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    write_file(&root.join("a.txt"), b"alpha, linked twice\n", 0o644);
    write_file(&root.join("big.bin"), &pseudo_random(150_000, 7), 0o600);
    write_file(&root.join("docs/notes/todo.txt"), b"- refuse\n", 0o644);
    write_file(&root.join("docs/readme.md"), b"# readme\n\nwords\n", 0o644);
    write_file(&root.join("z.txt"), b"last of the stream\n", 0o640);
    fs::hard_link(root.join("a.txt"), root.join("hard")).unwrap();
    symlink(&outside, root.join("link")).unwrap();
    let archive = t.join("good.coffer");
    back_up(&root, &archive);
    let parts = Parts::load(&archive, &alice_key());
    let paths: Vec<String> = parts
        .entries
        .iter()
        .map(|e| String::from_utf8(e.path.clone()).unwrap())
        .collect();
    assert_eq!(paths, PATHS);
    assert_eq!(parts.entries[7].kind, KIND_HARDLINK);
    assert_eq!(parts.entries[7].hardlink_to, Some(1));
    assert_eq!(parts.entries[8].kind, KIND_SYMLINK);
    assert_eq!(
        parts.block_count, 3,
        "150 000 bytes and more in 64 KiB blocks"
    );
    Fixture {
        t,
        src_parent,
        outside,
        parts,
    }
}

/// Back `root` up to `archive` at format 2, for alice, in 64 KiB blocks, uncompressed (so
/// meta frame lengths follow plaintext lengths), without xattrs (whatever the file system).
fn back_up(root: &Path, archive: &Path) {
    let alice = recipient(&alice_pub());
    let mut opts = BackupOptions::new(vec![root.to_path_buf()], archive.to_path_buf());
    opts.format = 2;
    opts.block_size = SMALL_BLOCK;
    opts.compression = Compression::None;
    opts.xattrs = false;
    backup(&opts, &[&alice as &dyn Recipient], &Quiet).unwrap();
}

/// The error class a hostile archive must be refused with, as the binary prints it.
#[derive(Clone, Copy, Debug)]
enum Class {
    Corrupt,
    Tampered,
    UnsafePath,
    UnsupportedVersion,
    ContentMismatch,
}

impl Class {
    fn needle(self) -> &'static str {
        match self {
            Class::Corrupt => "corrupt archive",
            Class::Tampered => "authentication failed",
            Class::UnsafePath => "refusing unsafe path",
            Class::UnsupportedVersion => "archive format version 3 is not supported",
            Class::ContentMismatch => "does not match the archive's content hash",
        }
    }
}

/// What the hostile part is: the index (every command refuses; restore writes nothing),
/// or data reached only when blocks are read (`list` succeeds; restore stops mid-way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Index,
    Data,
}

fn run(cmd: &mut assert_cmd::Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything in the test folder but its root and `skip` (the restore target).
fn snapshot(t: &TestDir, skip: &Path) -> BTreeMap<PathBuf, Node> {
    let skip = skip.strip_prefix(t.path()).unwrap();
    scan(t.path())
        .into_iter()
        .filter(|(p, _)| !p.as_os_str().is_empty() && !p.starts_with(skip))
        .collect()
}

/// Write `bytes` as `<name>.coffer` and check that restore, `verify -i` and `list` refuse
/// it with `class` and exit code 2, and that nothing is written outside the target (and,
/// for an index problem, nothing at all). Returns restore's stderr.
fn assert_refused(fx: &Fixture, name: &str, bytes: &[u8], class: Class, scope: Scope) -> String {
    let archive = fx.t.join(format!("{name}.coffer"));
    fs::write(&archive, bytes).unwrap();
    let target = fx.t.join(format!("restore-{name}"));
    let before = snapshot(&fx.t, &target);
    let key = alice_key();

    let out = run(coffer_cmd()
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(&key)
        .arg("--to")
        .arg(&target));
    let restore_err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{name}: restore: {restore_err}");
    assert!(
        restore_err.contains(class.needle()),
        "{name}: restore must fail with {class:?}: {restore_err}"
    );
    match scope {
        Scope::Index => {
            let written: Vec<_> = fs::read_dir(&target)
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            assert!(
                written.is_empty(),
                "{name}: restore wrote {written:?} from an archive whose index is hostile"
            );
        }
        Scope::Data => {
            assert_no_wrong_content(&fx.src_parent, &target);
            assert_eq!(partial_files(&target), Vec::<PathBuf>::new(), "{name}");
        }
    }
    assert!(
        fs::read_dir(&fx.outside).unwrap().next().is_none(),
        "{name}: restore wrote through the symlink"
    );
    assert!(
        snapshot(&fx.t, &target) == before,
        "{name}: restore changed something outside its target"
    );

    let out = run(coffer_cmd().arg("verify").arg("-i").arg(&key).arg(&archive));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{name}: verify -i: {err}");
    assert!(
        err.contains(class.needle()),
        "{name}: verify -i must fail with {class:?}: {err}"
    );

    let out = run(coffer_cmd().arg("list").arg("-i").arg(&key).arg(&archive));
    let err = stderr(&out);
    match scope {
        Scope::Index => {
            assert_eq!(out.status.code(), Some(2), "{name}: list: {err}");
            assert!(
                err.contains(class.needle()),
                "{name}: list must fail with {class:?}: {err}"
            );
        }
        Scope::Data => assert_eq!(out.status.code(), Some(0), "{name}: list: {err}"),
    }
    assert!(snapshot(&fx.t, &target) == before, "{name}");
    let _ = fs::remove_dir_all(&target);
    restore_err
}

/// `coffer list -i KEY archive` in 1 GiB of address space: refused with `class`, not
/// killed by a failed allocation (coffer needs far less to read a small archive).
fn list_refused_in_small_memory(archive: &Path, class: Class) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("coffer"))
        .args(["list", "-i"])
        .arg(alice_key())
        .arg(archive)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(class.needle()), "{err}");
    assert!(!err.contains("memory allocation"), "{err}");
}

// ---------------------------------------------------------------------------------------
// The control: reassembly alone changes nothing a reader can tell

#[test]
fn reassembled_archive_restores_exactly() {
    let fx = fixture();
    let p = &fx.parts;
    for per_chunk in [1, 3, 10] {
        let archive = fx.t.join(format!("benign-{per_chunk}.coffer"));
        fs::write(&archive, p.rebuild(&p.entries, per_chunk)).unwrap();
        let a = Archive::open(&archive).unwrap();
        assert_eq!(a.version(), 2);
        let target = fx.t.join(format!("benign-{per_chunk}"));
        coffer_cmd()
            .arg("restore")
            .arg(&archive)
            .arg("-i")
            .arg(alice_key())
            .arg("--to")
            .arg(&target)
            .assert()
            .code(0);
        let restored = target.join("t");
        assert_trees_equal(&fx.src_parent.join("t"), &restored);
        assert_eq!(
            fs::metadata(restored.join("a.txt")).unwrap().ino(),
            fs::metadata(restored.join("hard")).unwrap().ino(),
            "the hard link is a hard link again"
        );
        coffer_cmd()
            .arg("verify")
            .arg("-i")
            .arg(alice_key())
            .arg(&archive)
            .assert()
            .code(0);
        let out = coffer_cmd()
            .arg("list")
            .arg("-i")
            .arg(alice_key())
            .arg(&archive)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let listed = String::from_utf8(out.stdout).unwrap();
        for path in PATHS {
            assert!(listed.contains(path), "{path} not listed: {listed}");
        }
        // Reloading gives the same entries, cut as asked.
        let again = Parts::load(&archive, &alice_key());
        assert_eq!(again.entries, p.entries);
        assert_eq!(again.chunk_counts.len(), PATHS.len().div_ceil(per_chunk));
    }
}
