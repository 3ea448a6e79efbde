//! An archive made by an attacker who holds a recipient's public key is correctly
//! encrypted and authenticated, so only its content can be hostile. Restore must refuse
//! hostile index entries (escaping paths, paths through links, duplicates, sizes and block
//! tables that do not fit) before writing anything, and never write outside its target.
//!
//! The archives are crafted with the library's public format pieces (the same ones backup
//! uses); a benign archive made the same way restores, which shows that the crafting is
//! right and that each refusal is caused by the hostile part alone.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::format::frame::FRAME_PREFIX;
use coffer::format::header::{self, HeaderBody, STANZA_RSA_OAEP_SHA256, Stanza};
use coffer::format::index::{BlockRef, Entry, Index, KIND_DIR, KIND_FILE, KIND_SYMLINK, Totals};
use coffer::format::trailer::Trailer;
use coffer::format::{Compression, SUITE_V1};
use coffer::keys::{SessionKey, SubKeys};
use coffer::recipient::Recipient;
use coffer::seal::{BlockSealer, seal_header, seal_index};
use coffer::{Error, Result};

const BLOCK: u32 = SMALL_BLOCK;

fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: KIND_DIR,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_sec: 1_600_000_000,
        mtime_nsec: 0,
        size: 0,
        offset: 0,
        link_target: None,
    }
}

fn file(path: &str, offset: u64, size: u64) -> Entry {
    Entry {
        kind: KIND_FILE,
        mode: 0o644,
        size,
        offset,
        ..dir(path)
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        kind: KIND_SYMLINK,
        link_target: Some(target.into()),
        ..dir(path)
    }
}

/// What to put in a crafted archive.
struct Craft {
    entries: Vec<Entry>,
    /// The logical data stream (file contents back to back).
    data: Vec<u8>,
    /// Replace the block table the crafting computed.
    blocks: Option<Vec<BlockRef>>,
    /// Replace the index's stream length.
    stream_len: Option<u64>,
    /// Replace the trailer's block count.
    block_count: Option<u64>,
    /// Add a second stanza for alice (same fingerprint).
    duplicate_stanza: bool,
    /// Replace the serialized index with these bytes (still sealed with the right keys).
    raw_index: Option<Vec<u8>>,
    /// Cut the data into blocks of these sizes instead of full blocks.
    chunk_sizes: Option<Vec<usize>>,
}

impl Craft {
    fn new(entries: Vec<Entry>, data: Vec<u8>) -> Self {
        Craft {
            entries,
            data,
            blocks: None,
            stream_len: None,
            block_count: None,
            duplicate_stanza: false,
            raw_index: None,
            chunk_sizes: None,
        }
    }

    /// Write the archive: header ‖ frames ‖ sealed index ‖ trailer, for alice.
    fn write(&self, path: &Path) {
        let session_key = SessionKey::from_bytes([0x5a; 32]);
        let session_id = [0x17; 16];
        let keys = SubKeys::derive(&session_key, &session_id);
        let alice = recipient(&alice_pub());
        let mut stanzas: Vec<Stanza> = vec![alice.wrap(&session_key).unwrap()];
        if self.duplicate_stanza {
            stanzas.push(alice.wrap(&session_key).unwrap());
        }
        assert_eq!(stanzas[0].scheme, STANZA_RSA_OAEP_SHA256);
        let body = HeaderBody {
            session_id,
            created_at: 1_700_000_000,
            job_name: "hostile".into(),
            suite: SUITE_V1,
            block_size: BLOCK,
            segment_size: 16 * 1024,
            compression: Compression::None.code(),
            recipients: stanzas,
            signature: None,
        };
        let mut out = seal_header(&body, &keys);

        let sealer = BlockSealer::new(&keys, session_id, BLOCK, 16 * 1024, Compression::None);
        let chunks: Vec<&[u8]> = match &self.chunk_sizes {
            None => self.data.chunks(BLOCK as usize).collect(),
            Some(sizes) => {
                let mut rest = self.data.as_slice();
                sizes
                    .iter()
                    .map(|&n| {
                        let (c, r) = rest.split_at(n);
                        rest = r;
                        c
                    })
                    .collect()
            }
        };
        let mut blocks = Vec::new();
        let mut data_len = 0u64;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut buf = vec![0u8; FRAME_PREFIX];
            buf.extend_from_slice(chunk);
            sealer.seal(&mut buf, i as u64, i + 1 == chunks.len());
            blocks.push(BlockRef {
                offset: data_len,
                frame_len: buf.len() as u32,
                raw_len: chunk.len() as u32,
            });
            data_len += buf.len() as u64;
            out.extend_from_slice(&buf);
        }
        let blocks = self.blocks.clone().unwrap_or(blocks);
        let index = Index {
            entries: self.entries.clone(),
            blocks: blocks.clone(),
            stream_len: self.stream_len.unwrap_or(self.data.len() as u64),
            totals: Totals::default(),
        };
        let plain = match &self.raw_index {
            Some(raw) => raw.clone(),
            None => postcard::to_stdvec(&index).unwrap(),
        };
        let sealed = seal_index(&keys, &session_id, &plain);
        let trailer = Trailer {
            index_offset: data_len,
            index_len: sealed.len() as u64,
            block_count: self.block_count.unwrap_or(blocks.len() as u64),
        };
        out.extend_from_slice(&sealed);
        out.extend_from_slice(&trailer.encode());
        fs::write(path, out).unwrap();
    }
}

/// A test folder laid out as `work/{archive, target/, outside/}` so that anything written
/// outside the target is easy to see.
struct Scene {
    t: TestDir,
}

impl Scene {
    fn new() -> Self {
        let s = Scene { t: TestDir::new() };
        fs::create_dir_all(s.outside()).unwrap();
        s
    }
    fn archive(&self) -> PathBuf {
        self.t.join("hostile.coffer")
    }
    fn target(&self) -> PathBuf {
        self.t.join("target")
    }
    /// A folder next to the target that nothing may ever be written into.
    fn outside(&self) -> PathBuf {
        self.t.join("outside")
    }

    fn restore(&self, craft: &Craft) -> Result<coffer::restore::RestoreReport> {
        craft.write(&self.archive());
        try_restore(&self.archive(), &alice_key(), &self.target(), &[], false)
    }

    /// Nothing appeared outside the target: only the archive, the (maybe absent) target
    /// and the empty `outside` folder are in the test folder, and `/tmp` holds none of the
    /// names the crafted entries aim at.
    fn assert_nothing_outside(&self, names: &[&str]) {
        let mut top: Vec<String> = fs::read_dir(self.t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "target")
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["hostile.coffer", "outside"],
            "written outside the target"
        );
        assert_eq!(fs::read_dir(self.outside()).unwrap().count(), 0);
        for n in names {
            let p = Path::new("/tmp").join(n);
            assert!(
                fs::symlink_metadata(&p).is_err(),
                "{} was written",
                p.display()
            );
        }
    }

    /// The target holds nothing at all (not created, or empty).
    fn assert_target_empty(&self) {
        if let Ok(rd) = fs::read_dir(self.target()) {
            let left: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
            assert!(left.is_empty(), "refused restore wrote {left:?}");
        }
    }
}

/// A unique name for entries aimed at /tmp, so the check cannot be fooled by leftovers.
fn unique(tag: &str) -> String {
    format!("coffer-hostile-{tag}-{}", std::process::id())
}

fn expect_unsafe_or_corrupt(err: &Error) {
    assert!(
        matches!(err, Error::UnsafePath { .. } | Error::Corrupt { .. }),
        "expected UnsafePath or Corrupt, got {err:?}"
    );
}

#[test]
fn benign_crafted_archive_restores() {
    let s = Scene::new();
    let data = pseudo_random(2 * BLOCK as usize + 500, 1);
    let craft = Craft::new(
        vec![
            dir("top"),
            file("top/a", 0, 1000),
            dir("top/sub"),
            file("top/sub/b", 1000, data.len() as u64 - 1000),
            link("top/l", "/tmp"),
        ],
        data.clone(),
    );
    let r = s.restore(&craft).unwrap();
    assert_eq!(r.files, 2);
    assert_eq!(fs::read(s.target().join("top/a")).unwrap(), &data[..1000]);
    assert_eq!(
        fs::read(s.target().join("top/sub/b")).unwrap(),
        &data[1000..]
    );
    assert_eq!(
        fs::read_link(s.target().join("top/l")).unwrap(),
        Path::new("/tmp")
    );
    s.assert_nothing_outside(&[]);
}

#[test]
fn dot_dot_entry_is_refused() {
    let s = Scene::new();
    for path in ["../escape", "../outside/escape", "top/../../escape"] {
        let mut entries = vec![dir("top")];
        if !path.starts_with("top") {
            entries.clear();
        }
        entries.push(file(path, 0, 5));
        let err = s
            .restore(&Craft::new(entries, b"evil\n".to_vec()))
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{path}: {err:?}");
        assert!(err.to_string().contains(path), "{err}");
        assert!(err.hint().is_some());
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn absolute_entry_is_refused() {
    let s = Scene::new();
    let in_tmp = format!("/tmp/{}", unique("abs"));
    let beside = s.outside().join("abs").display().to_string();
    for path in [in_tmp.as_str(), beside.as_str(), "/abs/path"] {
        let err = s
            .restore(&Craft::new(vec![file(path, 0, 5)], b"evil\n".to_vec()))
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{path}: {err:?}");
        s.assert_target_empty();
        s.assert_nothing_outside(&[&unique("abs")]);
        assert!(!Path::new("/abs/path").exists());
    }
}

#[test]
fn dot_dot_inside_a_folder_path_is_refused() {
    let s = Scene::new();
    let x = unique("x");
    let through_tmp = format!("a/../../../../../../../../tmp/{x}");
    for path in ["a/../../x", "a/./b", "a//b", "a/", through_tmp.as_str()] {
        let err = s
            .restore(&Craft::new(
                vec![dir("a"), file(path, 0, 5)],
                b"evil\n".to_vec(),
            ))
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{path}: {err:?}");
        s.assert_target_empty();
        s.assert_nothing_outside(&[&x]);
    }
}

#[test]
fn file_below_a_symlink_is_refused() {
    let s = Scene::new();
    let x = unique("s-x");
    for link_target in [
        "/tmp".to_string(),
        s.outside().display().to_string(),
        "..".into(),
    ] {
        let craft = Craft::new(
            vec![link("s", &link_target), file(&format!("s/{x}"), 0, 5)],
            b"evil\n".to_vec(),
        );
        let err = s.restore(&craft).unwrap_err();
        assert!(
            matches!(err, Error::UnsafePath { .. }),
            "{link_target}: {err:?}"
        );
        s.assert_target_empty();
        s.assert_nothing_outside(&[&x]);
    }
    // Also when the link sits in a folder and the file is deeper below it.
    let craft = Craft::new(
        vec![
            dir("top"),
            link("top/s", "/tmp"),
            dir("top/s/deeper"),
            file(&format!("top/s/deeper/{x}"), 0, 5),
        ],
        b"evil\n".to_vec(),
    );
    let err = s.restore(&craft).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err:?}");
    s.assert_target_empty();
    s.assert_nothing_outside(&[&x, "deeper"]);
}

#[test]
fn link_then_folder_of_the_same_name_is_refused() {
    // `d` is first a link out of the target, then claimed to be a folder with a file in it.
    let s = Scene::new();
    let out = s.outside().display().to_string();
    let craft = Craft::new(
        vec![link("d", &out), dir("d"), file("d/x", 0, 5)],
        b"evil\n".to_vec(),
    );
    let err = s.restore(&craft).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err:?}");
    s.assert_target_empty();
    s.assert_nothing_outside(&[]);
}

#[test]
fn duplicate_paths_are_refused() {
    let s = Scene::new();
    for entries in [
        vec![dir("a"), dir("a")],
        vec![file("f", 0, 2), file("f", 2, 3)],
        vec![dir("a"), file("a/f", 0, 5), link("a/f", "/etc/passwd")],
    ] {
        let err = s
            .restore(&Craft::new(entries, b"evil\n".to_vec()))
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err:?}");
        assert!(err.to_string().contains("duplicate"), "{err}");
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn entry_whose_folder_is_not_listed_first_is_refused() {
    let s = Scene::new();
    for entries in [
        vec![file("nodir/x", 0, 5)],
        vec![file("a/x", 0, 5), dir("a")],
        vec![file("f", 0, 0), file("f/x", 0, 5)],
    ] {
        let err = s
            .restore(&Craft::new(entries, b"evil\n".to_vec()))
            .unwrap_err();
        expect_unsafe_or_corrupt(&err);
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn nul_in_path_or_link_target_is_refused() {
    let s = Scene::new();
    for entries in [
        vec![file("a\0b", 0, 5)],
        vec![link("l", "/tmp\0x"), file("z", 0, 5)],
        vec![link("l", ""), file("z", 0, 5)],
    ] {
        let err = s
            .restore(&Craft::new(entries, b"evil\n".to_vec()))
            .unwrap_err();
        expect_unsafe_or_corrupt(&err);
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn file_size_beyond_the_stream_is_refused() {
    let s = Scene::new();
    for entries in [
        vec![file("big", 0, 1 << 40)],
        vec![file("big", 0, u64::MAX)],
        vec![file("a", 0, 5), file("b", 5, 1)],
        // Ranges that overlap.
        vec![file("a", 0, 5), file("b", 2, 3)],
    ] {
        let err = s
            .restore(&Craft::new(entries, b"12345".to_vec()))
            .unwrap_err();
        expect_unsafe_or_corrupt(&err);
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

/// Regression (partial read during backup made the archive unrestorable): bytes of a
/// file that failed part-way stay in the stream unreferenced, so ranges may skip bytes.
#[test]
fn stream_gaps_left_by_unreadable_files_restore_the_listed_files() {
    let s = Scene::new();
    s.restore(&Craft::new(
        vec![file("a", 1, 2), file("b", 4, 1)],
        b"12345".to_vec(),
    ))
    .unwrap();
    assert_eq!(fs::read(s.target().join("a")).unwrap(), b"23");
    assert_eq!(fs::read(s.target().join("b")).unwrap(), b"5");
}

#[test]
fn folder_or_link_claiming_data_is_refused() {
    let s = Scene::new();
    let mut d = dir("d");
    d.size = 5;
    let mut l = link("l", "x");
    l.offset = 3;
    let mut f = file("f", 0, 5);
    f.link_target = Some("/etc/passwd".into());
    for entries in [vec![d, file("f", 0, 5)], vec![l, file("f", 0, 5)], vec![f]] {
        let err = s
            .restore(&Craft::new(entries, b"12345".to_vec()))
            .unwrap_err();
        expect_unsafe_or_corrupt(&err);
        s.assert_target_empty();
    }
    let mut k = file("k", 0, 5);
    k.kind = 9;
    let err = s
        .restore(&Craft::new(vec![k], b"12345".to_vec()))
        .unwrap_err();
    expect_unsafe_or_corrupt(&err);
    s.assert_target_empty();
    s.assert_nothing_outside(&[]);
}

#[test]
fn block_table_pointing_outside_the_file_is_refused() {
    let s = Scene::new();
    let data = pseudo_random(BLOCK as usize + 100, 2);
    let entries = vec![file("f", 0, data.len() as u64)];
    // Learn the honest table, then bend it.
    let probe = Craft::new(entries.clone(), data.clone());
    probe.write(&s.archive());
    let a = coffer::archive::Archive::open(&s.archive()).unwrap();
    let honest = a
        .unlock(&identity(&alice_key()))
        .unwrap()
        .v1_index()
        .unwrap()
        .blocks
        .clone();
    drop(a);
    assert_eq!(honest.len(), 2);
    let mut far = honest.clone();
    far[1].offset = 1 << 40;
    let mut long = honest.clone();
    long[1].frame_len += 1 << 20;
    let mut overlap = honest.clone();
    overlap[1].offset = 0;
    let mut short_full = honest.clone();
    short_full[0].raw_len -= 16;
    let mut missing = honest.clone();
    missing.pop();
    let mut extra = honest.clone();
    extra.push(BlockRef {
        offset: honest[0].offset + 10_000_000,
        ..honest[1]
    });
    for (name, blocks) in [
        ("far", far),
        ("long", long),
        ("overlap", overlap),
        ("short-full", short_full),
        ("missing", missing),
        ("extra", extra),
    ] {
        let mut c = Craft::new(entries.clone(), data.clone());
        c.blocks = Some(blocks);
        let err = s.restore(&c).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err:?}");
        s.assert_target_empty();
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn stream_length_or_block_count_that_disagrees_is_refused() {
    let s = Scene::new();
    let data = pseudo_random(1000, 3);
    let entries = vec![file("f", 0, 1000)];
    let mut c = Craft::new(entries.clone(), data.clone());
    c.stream_len = Some(2000);
    expect_unsafe_or_corrupt(&s.restore(&c).unwrap_err());
    let mut c = Craft::new(entries, data);
    c.block_count = Some(5);
    let err = s.restore(&c).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    s.assert_target_empty();
    s.assert_nothing_outside(&[]);
}

#[test]
fn two_stanzas_with_one_fingerprint_are_refused() {
    let s = Scene::new();
    let mut c = Craft::new(vec![file("f", 0, 5)], b"12345".to_vec());
    c.duplicate_stanza = true;
    let err = s.restore(&c).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("fingerprint"), "{err}");
    s.assert_target_empty();
    s.assert_nothing_outside(&[]);
}

#[test]
fn index_that_does_not_decode_is_corrupt() {
    let s = Scene::new();
    for raw in [Vec::new(), vec![0xff; 40], pseudo_random(3000, 4)] {
        let mut c = Craft::new(vec![file("f", 0, 5)], b"12345".to_vec());
        c.raw_index = Some(raw);
        let err = s.restore(&c).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        s.assert_target_empty();
    }
    s.assert_nothing_outside(&[]);
}

#[test]
fn links_planted_in_the_target_are_never_written_through() {
    // The index is benign, but the target already holds `top` as a link to a folder
    // outside it. Restore must not create `top/a` through that link, overwrite or not.
    let s = Scene::new();
    let craft = Craft::new(
        vec![dir("top"), file("top/a", 0, 5), dir("top/sub")],
        b"12345".to_vec(),
    );
    fs::create_dir_all(s.target()).unwrap();
    std::os::unix::fs::symlink(s.outside(), s.target().join("top")).unwrap();
    for overwrite in [false, true] {
        craft.write(&s.archive());
        let err = try_restore(&s.archive(), &alice_key(), &s.target(), &[], overwrite).unwrap_err();
        assert!(
            matches!(err, Error::Exists { .. } | Error::UnsafePath { .. }),
            "overwrite={overwrite}: {err:?}"
        );
        s.assert_nothing_outside(&[]);
        assert!(
            fs::symlink_metadata(s.target().join("top"))
                .unwrap()
                .is_symlink()
        );
    }
}

#[test]
fn existing_link_in_place_of_a_file_is_replaced_not_followed() {
    // With --overwrite, a link where a file is restored is replaced by the file; the
    // link's target outside is left untouched.
    let s = Scene::new();
    let victim = s.outside().join("victim");
    let craft = Craft::new(vec![dir("top"), file("top/a", 0, 5)], b"12345".to_vec());
    fs::create_dir_all(s.target().join("top")).unwrap();
    std::os::unix::fs::symlink(&victim, s.target().join("top/a")).unwrap();
    craft.write(&s.archive());
    let err = try_restore(&s.archive(), &alice_key(), &s.target(), &[], false).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");
    assert!(!victim.exists());
    try_restore(&s.archive(), &alice_key(), &s.target(), &[], true).unwrap();
    let a = s.target().join("top/a");
    assert!(fs::symlink_metadata(&a).unwrap().is_file());
    assert_eq!(fs::read(&a).unwrap(), b"12345");
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "wrote through the link"
    );
}

/// A crafted archive whose first block holds fewer bytes than its block table entry says
/// (every block still authenticates: the attacker holds the session key). The table is
/// fixed up by [`table_claiming_full_blocks`] so that it passes validation.
fn short_first_block(s: &Scene) -> Craft {
    let data = pseudo_random(BLOCK as usize + 1000, 8);
    let entries = vec![
        dir("top"),
        file("top/a", 0, 60_000),
        file("top/b", 60_000, data.len() as u64 - 60_000),
    ];
    let mut c = Craft::new(entries, data);
    // Block 0 really holds 1000 bytes, block 1 a full block; the table will claim the
    // opposite.
    c.chunk_sizes = Some(vec![1000, BLOCK as usize]);
    c.write(&s.archive());
    c.blocks = Some(table_claiming_full_blocks(s, &c));
    c
}

#[test]
fn block_shorter_than_its_table_entry_never_yields_a_wrong_file() {
    let s = Scene::new();
    let c = short_first_block(&s);
    let err = s.restore(&c).expect_err("a short block was accepted");
    assert!(!matches!(err, Error::UnsafePath { .. }), "{err:?}");
    // No file may exist with bytes other than the data stream's at its range.
    for (name, lo, hi) in [
        ("top/a", 0usize, 60_000usize),
        ("top/b", 60_000, c.data.len()),
    ] {
        if let Ok(got) = fs::read(s.target().join(name)) {
            assert!(got == c.data[lo..hi], "{name} restored with wrong bytes");
        }
    }
    assert!(partial_files(&s.target()).is_empty());
    s.assert_nothing_outside(&[]);
}

#[test]
fn block_shorter_than_its_table_entry_is_corrupt() {
    let s = Scene::new();
    let c = short_first_block(&s);
    let err = s.restore(&c).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("hostile.coffer"), "{err}");
}

/// The real frames' offsets and lengths, but raw lengths of a full first block and the
/// rest in the second, so that the table passes validation.
fn table_claiming_full_blocks(s: &Scene, c: &Craft) -> Vec<BlockRef> {
    let bytes = fs::read(s.archive()).unwrap();
    let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let data_start = header::PREFIX_LEN + body_len + header::SUFFIX_LEN;
    let sizes = c.chunk_sizes.as_ref().unwrap();
    let mut at = 0u64;
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let frame = &bytes[data_start + at as usize..];
        let ct_len = u32::from_le_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize,
            n
        );
        let frame_len = (ct_len + coffer::format::frame::FRAME_OVERHEAD) as u32;
        let raw_len = if i == 0 {
            BLOCK
        } else {
            (c.data.len() - BLOCK as usize) as u32
        };
        out.push(BlockRef {
            offset: at,
            frame_len,
            raw_len,
        });
        at += frame_len as u64;
    }
    out
}

#[test]
fn unsafe_path_error_names_the_hostile_entry_as_its_path() {
    let s = Scene::new();
    let err = s
        .restore(&Craft::new(
            vec![file("../escape", 0, 5)],
            b"evil\n".to_vec(),
        ))
        .unwrap_err();
    match &err {
        // restore.rs fills `path` with the index path; unlock should do the same.
        Error::UnsafePath { path, .. } => assert_eq!(path, "../escape", "{err}"),
        other => panic!("expected UnsafePath, got {other:?}"),
    }
    s.assert_target_empty();
}
