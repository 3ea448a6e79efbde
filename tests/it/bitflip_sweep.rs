//! Damage sweeps: one flipped bit at each of several hundred positions spread over every
//! part of a small multi-block archive (header, block frames, index, trailer) must make both
//! restore and the keyed verify fail, and no file with wrong content (nor a `.partial`) may
//! be left in the restore target. Length fields that claim more than the file holds must
//! fail fast, without allocating what they claim.
//!
//! Positions are drawn from a seeded generator; set `COFFER_SWEEP_SEED` to try others. A
//! failure names the seed, the byte offset, the bit and the part of the archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use coffer::archive::Archive;
use coffer::backup::Quiet;
use coffer::format::frame::{FRAME_OVERHEAD, FRAME_PREFIX};
use coffer::format::header::{self, HeaderBody, PREFIX_LEN};
use coffer::format::index::{BlockRef, Index};
use coffer::format::trailer::{TRAILER_LEN, Trailer};
use coffer::format::{Compression, SUITE_V1};
use coffer::keys::{SessionKey, SubKeys};
use coffer::recipient::Recipient;
use coffer::seal::{seal_header, seal_index};
use coffer::{Error, Result};

/// SplitMix64: small, seeded, good enough to spread positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("COFFER_SWEEP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FF_EE00_2026)
}

/// Which part of the archive a byte belongs to, for messages and for spreading positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header,
    /// Frame `n`: its plain prefix, ciphertext and tag (everything its MAC covers).
    Frame(usize),
    /// The CRC32C that closes frame `n` (not covered by the block's MAC).
    FrameCrc(usize),
    /// The index section's IV, ciphertext and tag.
    Index,
    /// The CRC32C that closes the index section.
    IndexCrc,
    Trailer,
}

/// One good archive of a small tree (64 KiB blocks) and where its parts are.
struct Sweep {
    t: TestDir,
    src_parent: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    blocks: Vec<BlockRef>,
    index_at: usize,
    index_len: usize,
}

impl Sweep {
    fn new() -> Self {
        let t = TestDir::new();
        let src_parent = t.join("src");
        let root = src_parent.join("tree");
        let b = SMALL_BLOCK as usize;
        write_file(
            &root.join("a.txt"),
            b"first file, at the start of block 0\n",
            0o644,
        );
        write_file(&root.join("docs/notes.txt"), &compressible(90_000), 0o640);
        write_file(
            &root.join("data/b.bin"),
            &pseudo_random(3 * b + 777, 41),
            0o600,
        );
        write_file(&root.join("data/c.bin"), &pseudo_random(20_000, 42), 0o644);
        write_file(&root.join("empty"), b"", 0o644);
        fs::create_dir_all(root.join("empty_dir")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let archive = t.join("good.coffer");
        let report = backup_v1_with(
            &[&root],
            &archive,
            SMALL_BLOCK,
            Compression::Zstd(1),
            &[&alice_pub()],
        );
        assert!(report.blocks >= 5, "{} blocks", report.blocks);
        let a = Archive::open(&archive).unwrap();
        let u = a.unlock(&identity(&alice_key())).unwrap();
        // One zstd block (the text) and raw ones (random data), so both paths are swept.
        assert!(
            u.v1_index()
                .unwrap()
                .blocks
                .iter()
                .any(|b| (b.frame_len as usize) < b.raw_len as usize)
        );
        let bytes = fs::read(&archive).unwrap();
        let s = Sweep {
            data_start: a.data_start() as usize,
            blocks: u.v1_index().unwrap().blocks.clone(),
            index_at: (a.data_start() + a.v1_trailer().unwrap().index_offset) as usize,
            index_len: a.v1_trailer().unwrap().index_len as usize,
            t,
            src_parent,
            bytes,
        };
        assert_eq!(s.index_at + s.index_len + TRAILER_LEN, s.bytes.len());
        // The undamaged archive restores and verifies, so every failure below is the flip's.
        let out = s.t.join("good-out");
        try_restore(&archive, &alice_key(), &out, &[], false).unwrap();
        assert_trees_equal(&root, &out.join("tree"));
        assert!(keyed_verify(&archive).unwrap().is_ok());
        s
    }

    fn part(&self, at: usize) -> Part {
        if at < self.data_start {
            return Part::Header;
        }
        if at >= self.bytes.len() - TRAILER_LEN {
            return Part::Trailer;
        }
        if at >= self.index_at {
            return if at >= self.index_at + self.index_len - 4 {
                Part::IndexCrc
            } else {
                Part::Index
            };
        }
        let rel = (at - self.data_start) as u64;
        let n = self
            .blocks
            .iter()
            .position(|b| rel < b.offset + b.frame_len as u64)
            .expect("inside the data section");
        let end = self.blocks[n].offset + self.blocks[n].frame_len as u64;
        if rel >= end - 4 {
            Part::FrameCrc(n)
        } else {
            Part::Frame(n)
        }
    }

    fn frame_range(&self, n: usize) -> (usize, usize) {
        let at = self.data_start + self.blocks[n].offset as usize;
        (at, at + self.blocks[n].frame_len as usize)
    }

    /// At least `total` distinct (byte, bit) positions: the first and last byte of every
    /// part, every plain field of every frame, then a seeded spread with a share per part.
    fn positions(&self, rng: &mut Rng, total: usize) -> Vec<(usize, u8)> {
        let mut bytes: Vec<usize> = Vec::new();
        let end = self.bytes.len();
        // Header: the prefix (magic, version, body length), then a spread.
        bytes.extend(0..PREFIX_LEN);
        bytes.extend([
            self.data_start - 1,
            self.data_start - 36,
            self.data_start - 5,
        ]);
        // Frames: every plain field (lengths, flags, some nonce bytes), the first and last
        // bytes of the ciphertext, the tag.
        for n in 0..self.blocks.len() {
            let (a, z) = self.frame_range(n);
            bytes.extend(a..a + 9);
            bytes.extend([
                a + 9,
                a + FRAME_PREFIX - 1,
                a + FRAME_PREFIX,
                z - 37,
                z - 36,
                z - 5,
            ]);
        }
        // Index: IV, first ciphertext byte, the tag.
        let (ia, iz) = (self.index_at, self.index_at + self.index_len - 4);
        bytes.extend([ia, ia + 15, ia + 16, iz - 33, iz - 32, iz - 1]);
        // Trailer: every byte.
        bytes.extend(end - TRAILER_LEN..end - 4);
        // A seeded spread: a fixed share for each part, the rest over the whole file.
        let spread = |rng: &mut Rng, from: usize, to: usize, n: usize, out: &mut Vec<usize>| {
            for _ in 0..n {
                out.push(from + rng.below(to - from));
            }
        };
        spread(rng, 0, self.data_start - 4, 90, &mut bytes);
        for n in 0..self.blocks.len() {
            let (a, z) = self.frame_range(n);
            spread(rng, a, z - 4, 40, &mut bytes);
        }
        spread(rng, ia, iz, 60, &mut bytes);
        let mut out = std::collections::BTreeSet::new();
        for at in bytes {
            if self.covered(at) {
                out.insert((at, 1u8 << rng.below(8)));
            }
        }
        while out.len() < total {
            let at = rng.below(end);
            if self.covered(at) {
                out.insert((at, 1u8 << rng.below(8)));
            }
        }
        out.into_iter().collect()
    }

    /// Bytes covered by a MAC. The CRC32C that closes each frame and the index section lies
    /// outside them (docs/FORMAT.md §6.2, §7): a flip there leaves every tag valid, and
    /// every reader refuses it all the same, as storage damage (§9: the checksum is
    /// checked before the tag). Those bytes are swept separately below.
    fn covered(&self, at: usize) -> bool {
        !matches!(self.part(at), Part::FrameCrc(_) | Part::IndexCrc)
    }

    /// Every byte position of a checksum outside a MAC.
    fn crc_positions(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for n in 0..self.blocks.len() {
            let (_, z) = self.frame_range(n);
            out.extend(z - 4..z);
        }
        let iz = self.index_at + self.index_len;
        out.extend(iz - 4..iz);
        out
    }
}

/// Open, unlock with alice and check every block. `Ok(report)` only if every step ran.
fn keyed_verify(path: &Path) -> Result<coffer::archive::VerifyReport> {
    let a = Archive::open(path)?;
    let u = a.unlock(&identity(&alice_key()))?;
    a.verify_blocks(&u, &Quiet)
}

fn damage(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= mask;
    b
}

#[test]
fn every_flipped_bit_fails_restore_and_keyed_verify() {
    let s = Sweep::new();
    let seed = seed();
    let mut rng = Rng(seed);
    let positions = s.positions(&mut rng, 520);
    assert!(positions.len() >= 500, "only {} positions", positions.len());
    let mut per_part = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    let path = s.t.join("damaged.coffer");
    for (i, &(at, mask)) in positions.iter().enumerate() {
        let part = s.part(at);
        let key = match part {
            Part::Frame(_) => "frames".to_string(),
            p => format!("{p:?}").to_lowercase(),
        };
        *per_part.entry(key).or_default() += 1;
        let what = format!("seed {seed:#x}: byte {at} bit mask {mask:#04x} ({part:?})");
        fs::write(&path, damage(&s.bytes, at, mask)).unwrap();
        let target = s.t.join(format!("out-{i}"));
        match try_restore(&path, &alice_key(), &target, &[], false) {
            Ok(_) => failures.push(format!("{what}: restore succeeded")),
            Err(Error::Io { path, source }) => failures.push(format!(
                "{what}: I/O error instead of damage: {path:?}: {source}"
            )),
            Err(_) => {}
        }
        assert_no_wrong_content(&s.src_parent, &target);
        assert!(partial_files(&target).is_empty(), "{what}: .partial left");
        match keyed_verify(&path) {
            Ok(report) if report.is_ok() => {
                failures.push(format!("{what}: keyed verify found nothing"))
            }
            _ => {}
        }
        let _ = fs::remove_dir_all(&target);
    }
    eprintln!(
        "swept {} positions (seed {seed:#x}): {per_part:?}",
        positions.len()
    );
    for part in ["header", "frames", "index", "trailer"] {
        assert!(
            per_part.get(part).copied().unwrap_or(0) >= 30,
            "too few positions in the {part}: {per_part:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} flips were not caught:\n  {}",
        failures.len(),
        positions.len(),
        failures.join("\n  ")
    );
}

/// Flips in a checksum that no MAC covers (the CRC32C closing each frame and the index
/// section): the tags still hold, and restore, the keyless and the keyed verify all
/// report the storage damage; restore leaves no wrong content behind.
#[test]
fn flipped_checksums_fail_restore_and_both_verifies() {
    let s = Sweep::new();
    let path = s.t.join("crc.coffer");
    for (i, at) in s.crc_positions().into_iter().enumerate() {
        let what = format!("byte {at} ({:?})", s.part(at));
        fs::write(&path, damage(&s.bytes, at, 1 << (i % 8))).unwrap();
        let target = s.t.join(format!("crc-out-{i}"));
        match try_restore(&path, &alice_key(), &target, &[], false) {
            Err(Error::Corrupt { detail, .. }) if detail.contains("checksum mismatch") => {}
            other => panic!("{what}: restore gave {other:?}"),
        }
        assert_no_wrong_content(&s.src_parent, &target);
        assert!(partial_files(&target).is_empty(), "{what}: .partial left");
        let keyless = Archive::open(&path)
            .unwrap()
            .verify_checksums(&Quiet)
            .unwrap();
        assert!(!keyless.is_ok(), "{what}: keyless verify found nothing");
        assert!(
            !matches!(keyed_verify(&path), Ok(r) if r.is_ok()),
            "{what}: keyed verify found nothing"
        );
        let _ = fs::remove_dir_all(&target);
    }
}

// ---------------------------------------------------------------------------------------
// Lengths that claim more than the file holds.

/// A header (for alice, fixed session key) followed by `rest` and a trailer; returns the
/// file and the sub-keys, so that a test can seal an index.
fn header_for_alice() -> (Vec<u8>, SubKeys, [u8; 16]) {
    let session_key = SessionKey::from_bytes([0x33; 32]);
    let session_id = [0x44; 16];
    let keys = SubKeys::derive(&session_key, &session_id);
    let body = HeaderBody {
        session_id,
        created_at: 1_700_000_000,
        job_name: String::new(),
        suite: SUITE_V1,
        block_size: SMALL_BLOCK,
        segment_size: 16 * 1024,
        compression: 0,
        recipients: vec![recipient(&alice_pub()).wrap(&session_key).unwrap()],
        signature: None,
    };
    (seal_header(&body, &keys), keys, session_id)
}

fn trailer(index_offset: u64, index_len: u64, block_count: u64) -> [u8; TRAILER_LEN] {
    Trailer {
        index_offset,
        index_len,
        block_count,
    }
    .encode()
}

/// Run the binary on `file` with its address space capped well below what the file claims,
/// and expect a clean, fast refusal (exit 2, an error naming the file), not an abort.
fn refuses_in_small_memory(file: &Path, args: &[&str]) {
    let started = Instant::now();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1048576 && exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("coffer"))
        .args(args)
        .arg(file)
        .env_remove("RUST_LOG");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "coffer {args:?} on {}: {:?}, stderr: {stderr}",
        file.display(),
        out.status
    );
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn expect_refused(file: &Path) -> Error {
    let started = Instant::now();
    let err = match Archive::open(file) {
        Err(e) => e,
        Ok(a) => match a.unlock(&identity(&alice_key())) {
            Err(e) => e,
            Ok(_) => panic!("{} opened and unlocked", file.display()),
        },
    };
    assert!(
        matches!(
            err,
            Error::Corrupt { .. } | Error::Truncated { .. } | Error::Tampered { .. }
        ),
        "{}: {err:?}",
        file.display()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    err
}

#[test]
fn a_100_byte_file_claiming_4_gib_fails_fast_in_small_memory() {
    let t = TestDir::new();
    // 100 bytes whose header claims a 4 GiB body.
    let mut claims_body = Vec::with_capacity(100);
    claims_body.extend_from_slice(&header::MAGIC);
    claims_body.extend_from_slice(&1u16.to_le_bytes());
    claims_body.extend_from_slice(&u32::MAX.to_le_bytes());
    claims_body.resize(100, 0xAB);
    let p = t.join("claims-body.coffer");
    fs::write(&p, &claims_body).unwrap();
    expect_refused(&p);
    refuses_in_small_memory(&p, &["info"]);

    // 100 bytes: a body length that fits the file but not the trailer after it.
    let mut short = claims_body.clone();
    short[10..14].copy_from_slice(&40u32.to_le_bytes());
    let p = t.join("short.coffer");
    fs::write(&p, &short).unwrap();
    expect_refused(&p);

    // A real header, then a trailer placing a 4 GiB index inside a file of a few hundred
    // bytes: every way of making the numbers fit the file (an offset that wraps, a length
    // that overflows) is refused before anything is allocated.
    let (head, _, _) = header_for_alice();
    let four_gib = 4u64 << 30;
    for (name, off, len) in [
        ("index-4g", 0, four_gib),
        ("index-wraps", 0u64.wrapping_sub(four_gib), four_gib),
        ("index-overflows", 1, u64::MAX),
        ("index-max", u64::MAX, u64::MAX),
    ] {
        let mut f = head.clone();
        f.extend_from_slice(&trailer(off, len, 1));
        let p = t.join(format!("{name}.coffer"));
        fs::write(&p, &f).unwrap();
        expect_refused(&p);
        refuses_in_small_memory(&p, &["verify"]);
        refuses_in_small_memory(&p, &["list", "-i", alice_key().to_str().unwrap()]);
    }
}

#[test]
fn an_authentic_index_claiming_billions_of_entries_fails_fast() {
    // Someone with alice's public key makes a correctly sealed index whose counts and
    // lengths (postcard varints) claim far more than its few bytes hold.
    let t = TestDir::new();
    let varint = |mut n: u64, out: &mut Vec<u8>| loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        } else {
            out.push(b | 0x80);
        }
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = Vec::new();
    varint(4 << 30, &mut v); // 4 Gi entries, then nothing
    cases.push(("entries", v));
    let mut v = Vec::new();
    varint(1, &mut v); // 1 entry whose path claims 4 GiB
    varint(4 << 30, &mut v);
    v.extend_from_slice(b"tree");
    cases.push(("path", v));
    let mut v = Vec::new();
    varint(0, &mut v); // no entries, 2^60 blocks
    varint(1 << 60, &mut v);
    cases.push(("blocks", v));
    let mut v = Vec::new();
    varint(u64::MAX, &mut v); // u64::MAX entries
    cases.push(("entries-max", v));
    for (name, plain) in cases {
        let (mut f, keys, sid) = header_for_alice();
        let sealed = seal_index(&keys, &sid, &plain);
        f.extend_from_slice(&sealed);
        f.extend_from_slice(&trailer(0, sealed.len() as u64, 0));
        let p = t.join(format!("{name}.coffer"));
        fs::write(&p, &f).unwrap();
        let err = expect_refused(&p);
        assert!(err.to_string().contains("index"), "{name}: {err}");
        refuses_in_small_memory(&p, &["list", "-i", alice_key().to_str().unwrap()]);
    }
}

#[test]
fn block_table_claiming_huge_frames_is_refused_before_reading() {
    // A block table entry whose frame is far larger than any frame can be is refused by
    // index validation, before restore allocates a buffer of that size.
    let (mut f, keys, sid) = header_for_alice();
    let index = Index {
        entries: Vec::new(),
        blocks: vec![BlockRef {
            offset: 0,
            frame_len: u32::MAX,
            raw_len: SMALL_BLOCK,
        }],
        stream_len: SMALL_BLOCK as u64,
        totals: Default::default(),
    };
    let plain = postcard::to_stdvec(&index).unwrap();
    let sealed = seal_index(&keys, &sid, &plain);
    // No frame bytes at all: the index says the data section is 4 GiB.
    f.extend_from_slice(&sealed);
    f.extend_from_slice(&trailer(0, sealed.len() as u64, 1));
    let t = TestDir::new();
    let p = t.join("huge-frame.coffer");
    fs::write(&p, &f).unwrap();
    let err = expect_refused(&p);
    assert!(err.to_string().contains("frame length"), "{err}");
    assert!(FRAME_OVERHEAD < u32::MAX as usize);
    refuses_in_small_memory(&p, &["verify", "-i", alice_key().to_str().unwrap()]);
}
