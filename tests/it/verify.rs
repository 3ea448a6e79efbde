//! `coffer verify`: without a key every frame, the index and the trailer are checked against
//! their CRC32C (bit rot, truncation); with a key every block's tag is checked and every block
//! decrypted (forgery). Every damaged block is reported, not only the first; nothing is
//! written; several archives are checked in one call and any failure gives exit 2.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::Compression;
use coffer::archive::Archive;
use coffer::backup::Quiet;
use coffer::format::crc32c;
use coffer::format::frame::FRAME_PREFIX;
use coffer::format::index::BlockRef;
use coffer::format::trailer::TRAILER_LEN;
use serde_json::Value;

/// A good archive of several 64 KiB blocks, and where its blocks are.
struct Fixture {
    t: TestDir,
    archive: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    index_at: usize,
    blocks: Vec<BlockRef>,
}

fn fixture() -> Fixture {
    let t = TestDir::new();
    let root = t.join("src").join("t");
    let b = SMALL_BLOCK as usize;
    write_file(&root.join("a.txt"), b"a small file\n", 0o644);
    write_file(&root.join("b.bin"), &pseudo_random(6 * b + 999, 5), 0o644);
    write_file(&root.join("c.txt"), &compressible(3 * b), 0o644);
    let archive = t.join("good.coffer");
    let report = backup_v1_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    assert!(report.blocks >= 8, "{} blocks", report.blocks);
    let a = Archive::open(&archive).unwrap();
    let u = a.unlock(&identity(&alice_key())).unwrap();
    let data_start = a.data_start() as usize;
    let index_at = data_start + a.v1_trailer().unwrap().index_offset as usize;
    let blocks = u.v1_index().unwrap().blocks.clone();
    let bytes = fs::read(&archive).unwrap();
    Fixture {
        t,
        archive,
        bytes,
        data_start,
        index_at,
        blocks,
    }
}

impl Fixture {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.t.join(format!("{name}.coffer"));
        fs::write(&p, bytes).unwrap();
        p
    }

    fn block_at(&self, i: usize) -> usize {
        self.data_start + self.blocks[i].offset as usize
    }

    fn block_end(&self, i: usize) -> usize {
        self.block_at(i) + self.blocks[i].frame_len as usize
    }
}

/// The library's keyless verdict: `Err` when the archive does not even open.
fn keyless(path: &Path) -> Result<coffer::archive::VerifyReport, coffer::Error> {
    Archive::open(path)?.verify_checksums(&Quiet)
}

fn keyed(path: &Path) -> Result<coffer::archive::VerifyReport, coffer::Error> {
    let a = Archive::open(path)?;
    let u = a.unlock(&identity(&alice_key()))?;
    a.verify_blocks(&u, &Quiet)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn keyless_passes_on_a_good_archive() {
    let f = fixture();
    let r = keyless(&f.archive).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(!r.keyed);
    assert_eq!(r.blocks_checked, f.blocks.len() as u64);
    assert_eq!(r.bytes_checked, f.bytes.len() as u64);

    let out = coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.stderr.is_empty());
    assert!(
        stdout.starts_with(&format!(
            "ok: {} ({} blocks",
            f.archive.display(),
            f.blocks.len()
        )),
        "{stdout}"
    );
    // Checksums are not a security check, and the output says so.
    assert!(
        stdout.ends_with(
            "): checksums ok (not authenticated: use -i KEY to detect deliberate changes)\n"
        ),
        "{stdout}"
    );

    // -q: nothing at all on success.
    coffer_cmd()
        .args(["verify", "-q"])
        .arg(&f.archive)
        .assert()
        .code(0)
        .stdout("")
        .stderr("");
}

/// Deterministic xorshift, for positions.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn keyless_catches_a_single_flipped_bit_anywhere() {
    let f = fixture();
    let len = f.bytes.len();
    let mut rng = Rng(0x00C0_FFEE_D00D_F00D);
    // 100 random positions over the whole file, plus one in each region for certain.
    let mut positions: Vec<(usize, u8)> = (0..100)
        .map(|_| {
            let r = rng.next();
            ((r % len as u64) as usize, 1u8 << ((r >> 32) % 8))
        })
        .collect();
    positions.extend([
        (3, 0x01),                      // magic
        (8, 0x02),                      // version
        (12, 0x40),                     // body length
        (f.data_start - 1, 0x80),       // header CRC
        (f.data_start, 0x01),           // block 0 ct_len
        (f.block_at(1) + 8, 0x04),      // block 1 flags
        (f.block_at(2) + 100, 0x10),    // block 2 ciphertext
        (f.block_end(3) - 1, 0x01),     // block 3 CRC
        (f.index_at + 20, 0x08),        // index
        (len - TRAILER_LEN + 2, 0x20),  // trailer index offset
        (len - TRAILER_LEN + 17, 0x01), // trailer block count
        (len - 1, 0x80),                // trailer CRC
    ]);
    let regions = |p: usize| {
        if p < f.data_start {
            "header"
        } else if p < f.index_at {
            "blocks"
        } else if p < len - TRAILER_LEN {
            "index"
        } else {
            "trailer"
        }
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut paths = Vec::new();
    for (n, &(pos, mask)) in positions.iter().enumerate() {
        let mut bytes = f.bytes.clone();
        bytes[pos] ^= mask;
        let p = f.write(&format!("flip{n:03}"), &bytes);
        match keyless(&p) {
            Err(_) => {}
            Ok(r) => assert!(
                !r.is_ok(),
                "bit {mask:#04x} flipped at {pos} ({}) passed the keyless check",
                regions(pos)
            ),
        }
        *seen.entry(regions(pos)).or_default() += 1;
        paths.push(p);
    }
    assert_eq!(seen.len(), 4, "every region was hit: {seen:?}");

    // The command agrees, archive by archive, and exits 2.
    let out = coffer_cmd()
        .args(["verify", "--json"])
        .args(&paths)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc = json_of(&out);
    let archives = doc["archives"].as_array().unwrap();
    assert_eq!(archives.len(), paths.len());
    for (a, p) in archives.iter().zip(&paths) {
        assert_eq!(a["path"], p.to_str().unwrap());
        assert_eq!(a["ok"], false, "{a}");
    }
    // And one at a time: exit 2 for a sample of them (every 10th).
    for p in paths.iter().step_by(10) {
        coffer_cmd().arg("verify").arg(p).assert().code(2);
    }
}

#[test]
fn every_bad_block_is_reported_not_only_the_first() {
    let f = fixture();
    let mut bytes = f.bytes.clone();
    let damaged = [1usize, 4, 6];
    for &b in &damaged {
        let at = f.block_at(b) + FRAME_PREFIX + 37;
        bytes[at] ^= 0x04;
    }
    let p = f.write("three-bad", &bytes);

    let r = keyless(&p).unwrap();
    let got: Vec<Option<u64>> = r.problems.iter().map(|x| x.block).collect();
    assert_eq!(
        got,
        damaged.iter().map(|&b| Some(b as u64)).collect::<Vec<_>>(),
        "{:?}",
        r.problems
    );
    for (problem, &b) in r.problems.iter().zip(&damaged) {
        assert_eq!(problem.offset, f.block_at(b) as u64);
        assert!(problem.detail.contains(&format!("block {b}")));
    }
    assert_eq!(
        r.blocks_checked,
        f.blocks.len() as u64,
        "walked every block"
    );

    // Keyed: the same three blocks fail their tags.
    let r = keyed(&p).unwrap();
    let got: Vec<Option<u64>> = r.problems.iter().map(|x| x.block).collect();
    assert_eq!(
        got,
        damaged.iter().map(|&b| Some(b as u64)).collect::<Vec<_>>()
    );

    let out = coffer_cmd()
        .arg("verify")
        .arg(&p)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for &b in &damaged {
        let line = format!("offset {}: block {b}:", f.block_at(b));
        assert!(stderr.contains(&line), "{line:?} missing:\n{stderr}");
    }
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    assert!(stderr.contains(&format!("FAILED: {}", p.display())));

    let out = coffer_cmd()
        .args(["verify", "--json"])
        .arg(&p)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc = json_of(&out);
    let problems = doc["archives"][0]["problems"].as_array().unwrap();
    let blocks: Vec<u64> = problems
        .iter()
        .map(|x| x["block"].as_u64().unwrap())
        .collect();
    assert_eq!(blocks, vec![1, 4, 6]);
}

#[test]
fn truncation_is_detected() {
    let f = fixture();
    let len = f.bytes.len();
    for (name, cut) in [
        ("in-header", 30),
        ("after-header", f.data_start),
        ("in-block", f.block_at(2) + 500),
        ("at-index", f.index_at),
        ("in-trailer", len - 10),
    ] {
        let p = f.write(name, &f.bytes[..cut]);
        let r = keyless(&p);
        assert!(
            r.as_ref().map(|r| !r.is_ok()).unwrap_or(true),
            "{name}: truncated archive passed"
        );
        let out = coffer_cmd()
            .arg("verify")
            .arg(&p)
            .assert()
            .code(2)
            .get_output()
            .clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(p.to_str().unwrap()) && stderr.contains("truncated"),
            "{name}: {stderr}"
        );
    }
    // A whole block cut out of the middle, trailer kept: the offsets no longer add up.
    let mut bytes = f.bytes[..f.block_at(3)].to_vec();
    bytes.extend_from_slice(&f.bytes[f.block_at(4)..]);
    let p = f.write("block-removed", &bytes);
    assert!(keyless(&p).map(|r| !r.is_ok()).unwrap_or(true));
    coffer_cmd().arg("verify").arg(&p).assert().code(2);
}

#[test]
fn keyed_verify_passes_a_good_archive() {
    let f = fixture();
    let r = keyed(&f.archive).unwrap();
    assert!(r.is_ok() && r.keyed, "{:?}", r.problems);
    assert_eq!(r.blocks_checked, f.blocks.len() as u64);
    let out = coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg("-i")
        .arg(alice_key())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("keyed"), "{stdout}");
}

#[test]
fn keyed_verify_catches_a_forged_block_that_keyless_misses() {
    let f = fixture();
    let mut bytes = f.bytes.clone();
    let b = 2;
    let (start, end) = (f.block_at(b), f.block_end(b));
    bytes[start + FRAME_PREFIX + 1000] ^= 0xff;
    // The forger recomputes the frame's CRC32C.
    let crc = crc32c(&bytes[start..end - 4]);
    bytes[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    let p = f.write("forged", &bytes);

    // Keyless: the checksums all match, so the forgery is not seen.
    let r = keyless(&p).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    coffer_cmd().arg("verify").arg(&p).assert().code(0);

    // Keyed: block 2's tag fails.
    let r = keyed(&p).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].block, Some(b as u64));
    assert_eq!(r.problems[0].offset, start as u64);
    assert!(
        r.problems[0].detail.contains("authentication failed"),
        "{}",
        r.problems[0].detail
    );
    let out = coffer_cmd()
        .arg("verify")
        .arg(&p)
        .arg("-i")
        .arg(alice_key())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("block 2"), "{stderr}");
    assert!(stderr.contains("FAILED"), "{stderr}");
}

#[test]
fn keyed_verify_with_a_wrong_key_fails() {
    let f = fixture();
    let out = coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg("-i")
        .arg(carol_key())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("no recipient"), "{stderr}");
}

/// Every entry below `dir` with its size and mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    scan(dir)
        .into_keys()
        .map(|rel| {
            let m = fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, (m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

#[test]
fn verify_writes_nothing() {
    let f = fixture();
    let work = f.t.join("work");
    fs::create_dir(&work).unwrap();
    let before = snapshot(f.t.path());
    for args in [
        vec![],
        vec!["-i", alice_key().to_str().unwrap()],
        vec!["--json"],
    ] {
        coffer_cmd()
            .current_dir(&work)
            .arg("verify")
            .arg(&f.archive)
            .args(&args)
            .assert()
            .code(0);
    }
    assert_eq!(snapshot(f.t.path()), before);
    // Also on a damaged archive (keyed and keyless).
    let mut bytes = f.bytes.clone();
    bytes[f.block_at(1) + 200] ^= 1;
    let bad = f.write("bad", &bytes);
    let before_bad = snapshot(f.t.path());
    for args in [vec![], vec!["-i", alice_key().to_str().unwrap()]] {
        coffer_cmd()
            .current_dir(&work)
            .arg("verify")
            .arg(&bad)
            .args(&args)
            .assert()
            .code(2);
    }
    assert_eq!(snapshot(f.t.path()), before_bad);
    assert_eq!(fs::read(&bad).unwrap(), bytes);
    assert_eq!(fs::read(&f.archive).unwrap(), f.bytes);
    assert!(fs::read_dir(&work).unwrap().next().is_none());
}

#[test]
fn several_archives_fail_if_any_fails() {
    let f = fixture();
    let good2 = f.t.join("good2.coffer");
    fs::copy(&f.archive, &good2).unwrap();
    let mut bytes = f.bytes.clone();
    bytes[f.block_at(0) + FRAME_PREFIX + 3] ^= 0x01;
    let bad = f.write("bad", &bytes);
    let junk = f.t.join("junk.coffer");
    fs::write(&junk, b"junk").unwrap();

    // All good: exit 0, one ok line each.
    let out = coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg(&good2)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok: ")).count(), 2);

    let out = coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg(&bad)
        .arg(&junk)
        .arg(&good2)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.contains(&format!("ok: {} ", f.archive.display())));
    assert!(stdout.contains(&format!("ok: {} ", good2.display())));
    assert!(
        stderr.contains(&format!("FAILED: {}", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains(junk.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");

    let out = coffer_cmd()
        .args(["verify", "--json"])
        .arg(&f.archive)
        .arg(&bad)
        .arg(&junk)
        .arg(&good2)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc = json_of(&out);
    let a = doc["archives"].as_array().unwrap();
    let oks: Vec<bool> = a.iter().map(|x| x["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, vec![true, false, false, true]);
    assert!(a[2]["error"].is_string());
}

#[test]
fn json_has_the_documented_fields() {
    let f = fixture();
    let mut bytes = f.bytes.clone();
    bytes[f.block_at(5) + 50] ^= 0x10;
    bytes[f.index_at + 30] ^= 0x10;
    let bad = f.write("bad", &bytes);
    let out = coffer_cmd()
        .args(["verify", "--json"])
        .arg(&f.archive)
        .arg(&bad)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let doc = json_of(&out);
    let a = doc["archives"].as_array().unwrap();
    assert_eq!(a.len(), 2);
    for x in a {
        assert!(x["path"].is_string());
        assert!(x["ok"].is_boolean());
        assert_eq!(x["keyed"], false);
        assert!(x["blocks_checked"].is_u64());
        assert!(x["bytes_checked"].is_u64());
        assert!(x["problems"].is_array());
    }
    assert_eq!(a[0]["ok"], true);
    assert_eq!(a[0]["blocks_checked"], f.blocks.len());
    assert_eq!(a[0]["bytes_checked"], f.bytes.len());
    assert_eq!(a[0]["problems"].as_array().unwrap().len(), 0);
    assert_eq!(a[1]["ok"], false);
    let problems = a[1]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0]["block"], 5);
    assert_eq!(problems[0]["offset"], f.block_at(5));
    assert!(problems[0]["detail"].is_string());
    assert!(problems[1]["block"].is_null(), "index problem has no block");
    assert_eq!(problems[1]["offset"], f.index_at);
    assert!(problems[1]["detail"].as_str().unwrap().contains("index"));

    let out = coffer_cmd()
        .args(["verify", "--json", "-i"])
        .arg(alice_key())
        .arg(&f.archive)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let doc = json_of(&out);
    let x = &doc["archives"][0];
    assert_eq!(x["keyed"], true);
    assert_eq!(x["ok"], true);
    assert_eq!(x["blocks_checked"], f.blocks.len());
    assert!(out.stderr.is_empty());
}

#[test]
fn keyed_verify_catches_a_forged_header_that_keyless_misses() {
    let f = fixture();
    let mut bytes = f.bytes.clone();
    // The session id is the first field of the header body (offset 14); the forger fixes
    // the header's CRC32C (the last 4 bytes of the header).
    bytes[14 + 3] ^= 0x01;
    let crc_at = f.data_start - 4;
    let crc = crc32c(&bytes[..crc_at]);
    bytes[crc_at..f.data_start].copy_from_slice(&crc.to_le_bytes());
    let p = f.write("forged-header", &bytes);

    assert!(keyless(&p).unwrap().is_ok());
    coffer_cmd().arg("verify").arg(&p).assert().code(0);

    match keyed(&p) {
        Err(coffer::Error::Tampered { what, .. }) => assert_eq!(what, "the header"),
        other => panic!("forged header not caught: {:?}", other.map(|r| r.problems)),
    }
    let out = coffer_cmd()
        .arg("verify")
        .arg(&p)
        .arg("-i")
        .arg(alice_key())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("authentication failed"), "{stderr}");
}

#[test]
fn keyed_verify_catches_whatever_keyless_catches() {
    let f = fixture();
    let mut missed = Vec::new();
    // A flipped bit in a block's checksum, in the index's checksum.
    let cases = [
        ("block 3 crc", f.block_end(3) - 2),
        ("index crc", f.bytes.len() - TRAILER_LEN - 3),
    ];
    for (what, pos) in cases {
        let mut bytes = f.bytes.clone();
        bytes[pos] ^= 0x01;
        let p = f.write(&what.replace(' ', "-"), &bytes);
        assert!(!keyless(&p).unwrap().is_ok(), "{what}: keyless passed");
        let keyed_ok = keyed(&p).map(|r| r.is_ok()).unwrap_or(false);
        let cli = coffer_cmd()
            .arg("verify")
            .arg(&p)
            .arg("-i")
            .arg(alice_key())
            .output()
            .unwrap();
        if keyed_ok || cli.status.code() != Some(2) {
            missed.push(what);
        }
    }
    assert!(
        missed.is_empty(),
        "`verify -i` says ok where `verify` fails: {missed:?}"
    );
}

#[test]
fn a_damaged_length_field_does_not_hide_the_blocks_after_it() {
    let f = fixture();
    // Blocks 0..=5 hold random data and have the same frame length.
    assert_eq!(f.blocks[1].frame_len, f.blocks[0].frame_len);
    let mut bytes = f.bytes.clone();
    bytes[f.block_at(1)] ^= 0x01; // ct_len no longer a multiple of 16
    bytes[f.block_at(3) + FRAME_PREFIX + 5000] ^= 0x80;
    bytes[f.block_end(5) - 1] ^= 0x02; // the CRC itself
    let p = f.write("three-kinds", &bytes);
    let r = keyless(&p).unwrap();
    let got: Vec<Option<u64>> = r.problems.iter().map(|x| x.block).collect();
    assert_eq!(got, vec![Some(1), Some(3), Some(5)], "{:?}", r.problems);
    assert!(
        r.problems[0].detail.contains("frame header"),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_plausible_but_wrong_length_field_does_not_misname_blocks() {
    let f = fixture();
    let ct_len = f.blocks[1].frame_len as usize - coffer::format::frame::FRAME_OVERHEAD;
    assert_eq!(ct_len, SMALL_BLOCK as usize + 16, "block 1 is stored raw");
    let mut bytes = f.bytes.clone();
    // One bit of block 1's ct_len: 65552 -> 65536, still a valid-looking length.
    bytes[f.block_at(1)] ^= 0x10;
    // And real damage further on, in block 8.
    let last = f.blocks.len() - 2;
    bytes[f.block_at(last) + FRAME_PREFIX + 5] ^= 0x01;
    let p = f.write("len-flip", &bytes);
    let r = keyless(&p).unwrap();
    let got: Vec<Option<u64>> = r.problems.iter().map(|x| x.block).collect();
    assert_eq!(
        got,
        vec![Some(1), Some(last as u64)],
        "only the two damaged blocks should be named: {:#?}",
        r.problems
    );
    assert_eq!(r.blocks_checked, f.blocks.len() as u64);
}
