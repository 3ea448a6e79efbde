//! A damaged or modified archive never restores wrong bytes: every flipped byte, cut, extension
//! or reordering is refused with the right typed error (naming the archive, and for blocks
//! the block number and its offset), and whatever was written before the failure is complete
//! and correct, with no temporary file left behind.
//!
//! Positions come from the format: header = prefix (magic 8, version u16, body_len u32) +
//! body + HMAC 32 + CRC32C 4; frames = ct_len u32, raw_len u32, flags u8, nonce 16,
//! ciphertext, tag 32, crc 4; index section = iv 16 + ciphertext + tag 32 + crc 4;
//! trailer = the last 36 bytes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::archive::Archive;
use coffer::format::crc32c;
use coffer::format::frame::{FRAME_PREFIX, NONCE_OFFSET};
use coffer::format::index::BlockRef;
use coffer::format::trailer::TRAILER_LEN;
use coffer::{Compression, Error};

/// One good archive of a small tree, and where its parts are.
struct Fixture {
    t: TestDir,
    /// Folder holding the backed-up source folder `t/`.
    src_parent: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    index_at: usize,
    index_len: usize,
    blocks: Vec<BlockRef>,
}

impl Fixture {
    /// Files in stream order: a.txt (block 0), b.bin (blocks 0..=5), c.txt, d.bin (5..=6).
    fn new() -> Self {
        let t = TestDir::new();
        let src_parent = t.join("src");
        let root = src_parent.join("t");
        let b = SMALL_BLOCK as usize;
        write_file(&root.join("a.txt"), b"first file, all in block 0\n", 0o644);
        write_file(&root.join("b.bin"), &pseudo_random(5 * b + 1000, 11), 0o644);
        write_file(&root.join("c.txt"), b"small file in block 5\n", 0o600);
        write_file(&root.join("d.bin"), &pseudo_random(70_000, 12), 0o644);
        let archive = t.join("good.coffer");
        let report = backup_v1_with(
            &[&root],
            &archive,
            SMALL_BLOCK,
            Compression::None,
            &[&alice_pub()],
        );
        assert_eq!(report.blocks, 7);
        let a = Archive::open(&archive).unwrap();
        let u = a.unlock(&identity(&alice_key())).unwrap();
        let data_start = a.data_start() as usize;
        let index_at = data_start + a.v1_trailer().unwrap().index_offset as usize;
        let index_len = a.v1_trailer().unwrap().index_len as usize;
        let blocks = u.v1_index().unwrap().blocks.clone();
        let bytes = fs::read(&archive).unwrap();
        assert_eq!(index_at + index_len + TRAILER_LEN, bytes.len());
        // The good archive restores (so every failure below is caused by the damage).
        let target = t.join("good-out");
        try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
        assert_trees_equal(&root, &target.join("t"));
        Fixture {
            t,
            src_parent,
            bytes,
            data_start,
            index_at,
            index_len,
            blocks,
        }
    }

    fn block_at(&self, i: usize) -> usize {
        self.data_start + self.blocks[i].offset as usize
    }

    fn block_len(&self, i: usize) -> usize {
        self.blocks[i].frame_len as usize
    }

    /// Write `bytes` as archive `name`, restore it with alice into a fresh folder, check that
    /// nothing wrong was written, and return the outcome and the archive's path.
    fn restore(&self, name: &str, bytes: &[u8]) -> (Result<(), Error>, PathBuf) {
        let path = self.t.join(format!("{name}.coffer"));
        fs::write(&path, bytes).unwrap();
        let target = self.t.join(format!("{name}-out"));
        let r = try_restore(&path, &alice_key(), &target, &[], false).map(|_| ());
        assert_no_wrong_content(&self.src_parent, &target);
        assert!(partial_files(&target).is_empty(), "{name}: .partial left");
        if r.is_ok() {
            assert_trees_equal(&self.src_parent.join("t"), &target.join("t"));
        }
        (r, path)
    }

    /// Like [`Fixture::restore`] but the restore must fail; returns the error.
    fn fail(&self, name: &str, bytes: &[u8]) -> (Error, PathBuf) {
        let (r, path) = self.restore(name, bytes);
        match r {
            Ok(()) => panic!("{name}: damaged archive restored without an error"),
            Err(e) => (e, path),
        }
    }

    fn flipped(&self, at: usize, mask: u8) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[at] ^= mask;
        b
    }
}

fn names(err: &Error, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the archive {}: {msg}",
        path.display()
    );
    assert!(err.hint().is_some(), "no hint for {err:?}");
}

fn is_damage(err: &Error) -> bool {
    matches!(
        err,
        Error::Corrupt { .. } | Error::Tampered { .. } | Error::Truncated { .. }
    )
}

/// Recompute the header CRC after an edit (a forger can; only the MAC stops them).
fn fix_header_crc(bytes: &mut [u8], header_len: usize) {
    let crc = crc32c(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
}

fn fix_frame_crc(bytes: &mut [u8], at: usize, len: usize) {
    let crc = crc32c(&bytes[at..at + len - 4]);
    bytes[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn flipped_magic_is_not_an_archive() {
    let fx = Fixture::new();
    for at in [0, 1, 4, 7] {
        let (err, path) = fx.fail(&format!("magic{at}"), &fx.flipped(at, 0x20));
        assert!(
            matches!(err, Error::NotAnArchive { .. }),
            "byte {at}: {err:?}"
        );
        names(&err, &path);
    }
}

#[test]
fn flipped_version_is_unsupported_version() {
    let fx = Fixture::new();
    for (at, mask, want) in [(8, 0x01u8, 0u16), (8, 0x02, 3), (9, 0x01, 257)] {
        let (err, path) = fx.fail(&format!("version{at}-{mask}"), &fx.flipped(at, mask));
        match &err {
            Error::UnsupportedVersion { version, .. } => assert_eq!(*version, want),
            other => panic!("byte {at}: {other:?}"),
        }
        names(&err, &path);
    }
}

#[test]
fn flipped_header_length_body_mac_or_checksum_is_damage() {
    let fx = Fixture::new();
    let h = fx.data_start;
    let positions = [
        ("len-lo", 10, 0x01),
        ("len-mid", 11, 0x01),
        ("len-hi", 13, 0x01),
        ("body-session-id", 14, 0x01),
        ("body-created-at", 14 + 16, 0x01),
        ("body-middle", (14 + h - 36) / 2, 0x10),
        ("body-last", h - 37, 0x01),
        ("mac-first", h - 36, 0x80),
        ("mac-middle", h - 20, 0x04),
        ("mac-last", h - 5, 0x01),
        ("crc", h - 2, 0x40),
    ];
    for (name, at, mask) in positions {
        let (err, path) = fx.fail(name, &fx.flipped(at, mask));
        assert!(is_damage(&err), "{name} (byte {at}): {err:?}");
        names(&err, &path);
    }
}

#[test]
fn forged_header_with_fixed_checksum_fails_authentication() {
    let fx = Fixture::new();
    let h = fx.data_start;
    for (name, at) in [
        ("session-id", 14),
        ("created-at", 14 + 16),
        ("mac", h - 36),
        ("mac-end", h - 5),
    ] {
        let mut b = fx.flipped(at, 0x01);
        fix_header_crc(&mut b, h);
        let (err, path) = fx.fail(&format!("forged-{name}"), &b);
        match &err {
            Error::Tampered { what, offset, .. } => {
                assert!(what.contains("header"), "{name}: {err}");
                assert_eq!(*offset, 0);
            }
            other => panic!("{name}: expected Tampered, got {other:?}"),
        }
        names(&err, &path);
    }
}

#[test]
fn forged_wrapped_key_of_the_identity_is_reported_as_tampering_of_the_archive() {
    let fx = Fixture::new();
    let good = fx.t.join("good.coffer");
    let wrapped = Archive::open(&good)
        .unwrap()
        .v1_header()
        .unwrap()
        .recipients[0]
        .wrapped_key
        .clone();
    let at = fx
        .bytes
        .windows(wrapped.len())
        .position(|w| w == wrapped.as_slice())
        .expect("wrapped key is in the header");
    let mut b = fx.flipped(at + 100, 0x01);
    fix_header_crc(&mut b, fx.data_start);
    let (err, path) = fx.fail("forged-wrapped-key", &b);
    assert!(is_damage(&err), "expected Tampered/Corrupt, got {err:?}");
    names(&err, &path);
}

/// Checks that a block failure names the archive, the block and the block's offset.
fn names_block(err: &Error, path: &Path, block: usize, offset: usize) {
    names(err, path);
    let msg = err.to_string();
    assert!(msg.contains(&format!("block {block}")), "{msg}");
    assert!(
        msg.contains(&offset.to_string()),
        "offset {offset} not in: {msg}"
    );
    match err {
        Error::Corrupt { offset: o, .. } | Error::Tampered { offset: o, .. } => {
            assert_eq!(*o, offset as u64)
        }
        other => panic!("expected Corrupt or Tampered, got {other:?}"),
    }
}

#[test]
fn flipped_byte_in_a_block_is_refused_naming_the_block() {
    let fx = Fixture::new();
    let k = 2;
    let at = fx.block_at(k);
    let len = fx.block_len(k);
    for (name, off, mask) in [
        ("ct-len", 0, 0x10),
        ("ct-len-hi", 3, 0x01),
        ("raw-len", 4, 0x01),
        ("flags-zstd", 8, 0x01),
        ("flags-last", 8, 0x02),
        ("flags-unknown", 8, 0x80),
        ("nonce", NONCE_OFFSET + 3, 0x01),
        ("ciphertext-first", FRAME_PREFIX, 0x01),
        ("ciphertext-middle", FRAME_PREFIX + 30_000, 0x80),
        ("ciphertext-last", len - 37, 0x01),
        ("tag-first", len - 36, 0x01),
        ("tag-last", len - 5, 0x01),
    ] {
        let (err, path) = fx.fail(&format!("block-{name}"), &fx.flipped(at + off, mask));
        names_block(&err, &path, k, at);
    }
}

#[test]
fn forged_block_with_fixed_checksum_fails_authentication() {
    let fx = Fixture::new();
    for (k, off) in [(0usize, FRAME_PREFIX + 5), (3, NONCE_OFFSET), (6, 8)] {
        let at = fx.block_at(k);
        let len = fx.block_len(k);
        let mut b = fx.flipped(at + off, 0x02);
        fix_frame_crc(&mut b, at, len);
        let (err, path) = fx.fail(&format!("forged-block{k}"), &b);
        assert!(
            matches!(&err, Error::Tampered { what, .. } if what == &format!("block {k}")),
            "block {k}: {err:?}"
        );
        names_block(&err, &path, k, at);
    }
}

#[test]
fn flipped_byte_in_the_index_is_refused() {
    let fx = Fixture::new();
    let (at, len) = (fx.index_at, fx.index_len);
    for (name, off) in [
        ("iv", 3),
        ("ciphertext", 40),
        ("ct-last", len - 37),
        ("tag", len - 30),
    ] {
        let (err, path) = fx.fail(&format!("index-{name}"), &fx.flipped(at + off, 0x01));
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::Tampered { .. }),
            "{name}: {err:?}"
        );
        names(&err, &path);
    }
    // With the checksum fixed, the tag still refuses it.
    let mut b = fx.flipped(at + 40, 0x01);
    fix_frame_crc(&mut b, at, len);
    let (err, path) = fx.fail("index-forged", &b);
    match &err {
        Error::Tampered { what, offset, .. } => {
            assert!(what.contains("index"), "{err}");
            assert_eq!(*offset, at as u64);
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
    names(&err, &path);
}

#[test]
fn flipped_byte_in_the_trailer_is_refused() {
    let fx = Fixture::new();
    let start = fx.bytes.len() - TRAILER_LEN;
    for off in 0..TRAILER_LEN {
        let (err, path) = fx.fail(&format!("trailer{off}"), &fx.flipped(start + off, 0x04));
        assert!(is_damage(&err), "trailer byte {off}: {err:?}");
        names(&err, &path);
    }
}

#[test]
fn truncated_archive_is_refused() {
    let fx = Fixture::new();
    let n = fx.bytes.len();
    let h = fx.data_start;
    for len in [
        0,
        3,
        7,
        8,
        13,
        14,
        100,
        h - 1,
        h,
        h + 1,
        fx.block_at(1) + 50,
        fx.block_at(6),
        fx.index_at,
        fx.index_at + 10,
        n - TRAILER_LEN,
        n - TRAILER_LEN + 1,
        n - 1,
    ] {
        let (err, path) = fx.fail(&format!("cut{len}"), &fx.bytes[..len]);
        if len < 8 {
            assert!(
                matches!(err, Error::NotAnArchive { .. } | Error::Truncated { .. }),
                "cut at {len}: {err:?}"
            );
        } else {
            assert!(is_damage(&err), "cut at {len}: {err:?}");
        }
        names(&err, &path);
    }
}

#[test]
fn appended_bytes_are_refused() {
    let fx = Fixture::new();
    let trailer = fx.bytes[fx.bytes.len() - TRAILER_LEN..].to_vec();
    for (name, extra) in [
        ("one", vec![0u8]),
        ("zeros", vec![0u8; 4096]),
        ("random", pseudo_random(1000, 5)),
        // A second copy of the valid trailer: the trailer itself decodes, but no longer
        // describes the file.
        ("trailer-copy", trailer),
    ] {
        let mut b = fx.bytes.clone();
        b.extend_from_slice(&extra);
        let (err, path) = fx.fail(&format!("append-{name}"), &b);
        assert!(is_damage(&err), "{name}: {err:?}");
        names(&err, &path);
    }
}

#[test]
fn swapped_block_frames_are_refused() {
    let fx = Fixture::new();
    let (i, j) = (1, 2);
    let len = fx.block_len(i);
    assert_eq!(
        len,
        fx.block_len(j),
        "full uncompressed blocks have equal frames"
    );
    let mut b = fx.bytes.clone();
    let (x, y) = (fx.block_at(i), fx.block_at(j));
    let first = b[x..x + len].to_vec();
    b.copy_within(y..y + len, x);
    b[y..y + len].copy_from_slice(&first);
    let (err, path) = fx.fail("swapped", &b);
    assert!(
        matches!(&err, Error::Tampered { what, .. } if what == "block 1"),
        "{err:?}"
    );
    names_block(&err, &path, i, x);
}

#[test]
fn block_from_another_session_is_refused() {
    // Same tree, same key, same block layout: only the session differs.
    let fx = Fixture::new();
    let other = fx.t.join("other.coffer");
    backup_v1_with(
        &[&fx.src_parent.join("t")],
        &other,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let other_bytes = fs::read(&other).unwrap();
    let k = 3;
    let (at, len) = (fx.block_at(k), fx.block_len(k));
    let other_at =
        Archive::open(&other).unwrap().data_start() as usize + fx.blocks[k].offset as usize;
    let mut b = fx.bytes.clone();
    b[at..at + len].copy_from_slice(&other_bytes[other_at..other_at + len]);
    let (err, path) = fx.fail("transplant", &b);
    assert!(
        matches!(&err, Error::Tampered { what, .. } if what == "block 3"),
        "{err:?}"
    );
    names_block(&err, &path, k, at);
}

#[test]
fn damaged_block_does_not_stop_restoring_files_elsewhere() {
    // Blocks are independent: a file that does not touch the damaged block restores.
    let fx = Fixture::new();
    let at = fx.block_at(6) + FRAME_PREFIX + 10;
    let bytes = fx.flipped(at, 0x01);
    let path = fx.t.join("damaged-last.coffer");
    fs::write(&path, &bytes).unwrap();
    let target = fx.t.join("damaged-last-out");
    try_restore(&path, &alice_key(), &target, &["t/a.txt"], false).unwrap();
    assert_eq!(
        fs::read(target.join("t/a.txt")).unwrap(),
        fs::read(fx.src_parent.join("t/a.txt")).unwrap()
    );
    // The file that needs it fails, and leaves nothing wrong behind.
    let target = fx.t.join("damaged-last-out-d");
    let err = try_restore(&path, &alice_key(), &target, &["t/d.bin"], false).unwrap_err();
    names_block(&err, &path, 6, fx.block_at(6));
    assert!(!target.join("t/d.bin").exists());
    assert_no_wrong_content(&fx.src_parent, &target);
    assert!(partial_files(&target).is_empty());
}

#[test]
fn no_single_flipped_byte_anywhere_yields_wrong_content() {
    // A sweep over the whole file: every flip makes restore fail with a damage error. A
    // flip in a frame's or the index's CRC32C alone leaves the tag valid, and is refused
    // all the same, as storage damage (the checksum is checked before the tag).
    let fx = Fixture::new();
    let n = fx.bytes.len();
    let mut crc_only: Vec<std::ops::Range<usize>> = (0..fx.blocks.len())
        .map(|k| {
            let end = fx.block_at(k) + fx.block_len(k);
            end - 4..end
        })
        .collect();
    crc_only.push(fx.index_at + fx.index_len - 4..fx.index_at + fx.index_len);
    let mut positions: Vec<usize> = (0..n).step_by(1499).collect();
    positions.extend((0..fx.data_start).step_by(7));
    positions.extend(n - TRAILER_LEN..n);
    positions.extend(crc_only.iter().flat_map(|r| r.clone()));
    positions.sort_unstable();
    positions.dedup();
    let mut failures = 0;
    for at in positions {
        let (r, path) = fx.restore(&format!("sweep{at}"), &fx.flipped(at, 0x08));
        let Err(err) = r else {
            panic!("flip at {at} was accepted");
        };
        failures += 1;
        if crc_only.iter().any(|c| c.contains(&at)) {
            assert!(
                matches!(&err, Error::Corrupt { detail, .. } if detail.contains("checksum mismatch")),
                "flip at {at} (a CRC32C only): {err:?}"
            );
        }
        assert!(
            is_damage(&err)
                || matches!(
                    err,
                    Error::NotAnArchive { .. } | Error::UnsupportedVersion { .. }
                ),
            "flip at {at}: unexpected error kind {err:?}"
        );
        names(&err, &path);
        fs::remove_file(&path).unwrap();
        let target = fx.t.join(format!("sweep{at}-out"));
        if target.exists() {
            fs::remove_dir_all(&target).unwrap();
        }
    }
    assert!(failures > 100, "only {failures} flips failed");
}
