//! Restoring incremental chains (FORMAT.md v2.8.2, issue 16, reader side). The chains are
//! crafted from real full backups with the hostile_v2 toolkit: a later backup is taken
//! apart, its files' extents pointed into earlier archives (in several pieces, going
//! backwards, sharing bytes), its header given the parent table and its directory the
//! parents' commitments, everything re-sealed under its own keys — exactly what an
//! incremental writer produces, so these tests do not wait for the writer.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::hostile_v2::{Parts, chunks_of, find};
use coffer::Compression;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::format::v2::validate::RawHeaderV2;
use coffer::format::v2::{Extent, ParentRef};
use coffer::keys::SessionId;
use coffer::recipient::Recipient;
use coffer::seal::meta::{commitment, seal_header_v2};
use coffer::{Error, RestoreOptions};

fn back_up(root: &Path, archive: &Path, session_id: Option<SessionId>) {
    let alice = recipient(&alice_pub());
    let mut opts = BackupOptions::new(vec![root.to_path_buf()], archive.to_path_buf());
    opts.format = 2;
    opts.block_size = SMALL_BLOCK;
    opts.compression = Compression::None;
    opts.xattrs = false;
    opts.session_id = session_id;
    backup(&opts, &[&alice as &dyn Recipient], &Quiet).unwrap();
}

/// `parts` with `entries` and `parents` (table, oldest first): header re-sealed with the
/// table, directory given each parent's commitment (or `commitments` when given).
fn chained(
    parts: &mut Parts,
    entries: &[coffer::format::v2::EntryV2],
    parents: &[(&Parts, &str)],
) -> Vec<u8> {
    let mut header = RawHeaderV2::parse(parts.header.clone()).unwrap();
    header.body.fields.chain = parents
        .iter()
        .map(|(p, hint)| ParentRef {
            session_id: p.session_id,
            hint: hint.to_string(),
        })
        .collect();
    let original = std::mem::replace(&mut parts.header, seal_header_v2(&header.body, &parts.keys));
    let index = parts.seal_chunks(&chunks_of(entries, 3));
    let blocks = parts.seal_block_tables(&parts.block_tables);
    let commitments: Vec<[u8; 32]> = parents
        .iter()
        .map(|(p, _)| commitment(&p.keys, &p.session_id))
        .collect();
    let bytes = parts.assemble(&index, &blocks, |d| d.parent_commitments = commitments);
    parts.header = original;
    bytes
}

fn ext(archive: u32, offset: u64, len: u64) -> Extent {
    Extent {
        archive,
        offset,
        len,
    }
}

/// A chain of up to three archives in one folder: `a.coffer` (full), `b.coffer`
/// (incremental of A), `c.coffer` (incremental of A and B, flat table).
struct Chain {
    t: TestDir,
    /// What each restore point holds (its source tree).
    src_b: PathBuf,
    src_c: PathBuf,
    a: Parts,
    b: Parts,
    c: Parts,
}

impl Chain {
    fn path(&self, name: &str) -> PathBuf {
        self.t.join("arch").join(name)
    }

    /// B's entries, their data in A where A has it.
    fn b_entries(&self) -> Vec<coffer::format::v2::EntryV2> {
        let (a, b) = (&self.a, &self.b);
        let a_txt = a.entries[find(&a.entries, "t/a.txt")].extents[0].offset;
        let a_big = a.entries[find(&a.entries, "t/big.bin")].extents[0].offset;
        let b_big = b.entries[find(&b.entries, "t/big.bin")].extents[0].offset;
        let mut e = b.entries.clone();
        e[find(&b.entries, "t/a.txt")].extents = vec![ext(1, a_txt, 100)];
        // Window 1 changed: stored in B; windows 0, 2, 3 referenced (v2.8.5).
        e[find(&b.entries, "t/big.bin")].extents = vec![
            ext(1, a_big, 65_536),
            ext(0, b_big + 65_536, 65_536),
            ext(1, a_big + 131_072, 68_928),
        ];
        // A copy of a.txt: not stored again.
        e[find(&b.entries, "t/c.txt")].extents = vec![ext(1, a_txt, 100)];
        e
    }

    /// C's entries: big.bin from A and B (going backwards in A), new.txt from B.
    fn c_entries(&self) -> Vec<coffer::format::v2::EntryV2> {
        let (a, b, c) = (&self.a, &self.b, &self.c);
        let a_txt = a.entries[find(&a.entries, "t/a.txt")].extents[0].offset;
        let a_big = a.entries[find(&a.entries, "t/big.bin")].extents[0].offset;
        let b_big = b.entries[find(&b.entries, "t/big.bin")].extents[0].offset;
        let b_new = b.entries[find(&b.entries, "t/new.txt")].extents[0].offset;
        let mut e = c.entries.clone();
        e[find(&c.entries, "t/a.txt")].extents = vec![ext(1, a_txt, 100)];
        e[find(&c.entries, "t/big.bin")].extents = vec![
            ext(1, a_big, 65_536),
            ext(2, b_big + 65_536, 65_536),
            ext(1, a_big + 131_072, 68_928),
        ];
        e[find(&c.entries, "t/c.txt")].extents = vec![ext(1, a_txt, 100)];
        e[find(&c.entries, "t/new.txt")].extents = vec![ext(2, b_new, 5000)];
        e
    }
}

fn chain() -> Chain {
    let t = TestDir::new();
    let arch = t.join("arch");
    fs::create_dir_all(&arch).unwrap();
    let a_txt = pseudo_random(100, 1);
    let big = pseudo_random(200_000, 2);
    let mut big2 = big.clone();
    big2[65_536..131_072].copy_from_slice(&pseudo_random(65_536, 3));
    let new = pseudo_random(5000, 4);
    // A: the full.
    let src_a = t.join("src_a/t");
    write_file(&src_a.join("a.txt"), &a_txt, 0o644);
    write_file(&src_a.join("big.bin"), &big, 0o644);
    write_file(
        &src_a.join("z.txt"),
        b"after big.bin in A's stream\n",
        0o644,
    );
    // B: big.bin's second window changed, a copy of a.txt, a new file.
    let src_b = t.join("src_b/t");
    write_file(&src_b.join("a.txt"), &a_txt, 0o644);
    write_file(&src_b.join("big.bin"), &big2, 0o644);
    write_file(&src_b.join("c.txt"), &a_txt, 0o644);
    write_file(&src_b.join("new.txt"), &new, 0o644);
    // C: the same files as B.
    let src_c = t.join("src_c/t");
    for n in ["a.txt", "big.bin", "c.txt", "new.txt"] {
        write_file(&src_c.join(n), &fs::read(src_b.join(n)).unwrap(), 0o644);
    }
    let (a, b, c) = (
        t.join("full-a.coffer"),
        t.join("full-b.coffer"),
        t.join("full-c.coffer"),
    );
    back_up(&src_a, &a, None);
    back_up(&src_b, &b, None);
    back_up(&src_c, &c, None);
    let mut chain = Chain {
        a: Parts::load(&a, &alice_key()),
        b: Parts::load(&b, &alice_key()),
        c: Parts::load(&c, &alice_key()),
        t,
        src_b,
        src_c,
    };
    fs::copy(&a, chain.path("a.coffer")).unwrap();
    let e = chain.b_entries();
    let b_bytes = chained(&mut chain.b, &e, &[(&chain.a, "a.coffer")]);
    fs::write(chain.path("b.coffer"), b_bytes).unwrap();
    let e = chain.c_entries();
    let c_bytes = chained(
        &mut chain.c,
        &e,
        &[(&chain.a, "a.coffer"), (&chain.b, "b.coffer")],
    );
    fs::write(chain.path("c.coffer"), c_bytes).unwrap();
    chain
}

fn restore_to(
    archive: &Path,
    target: &Path,
    patterns: &[&str],
) -> Result<coffer::RestoreReport, Error> {
    try_restore(archive, &alice_key(), target, patterns, false)
}

fn same_files(want: &Path, got: &Path, names: &[&str]) {
    for n in names {
        assert_eq!(
            fs::read(want.join(n)).unwrap(),
            fs::read(got.join(n)).unwrap(),
            "{n}"
        );
    }
}

const FILES: [&str; 4] = ["a.txt", "big.bin", "c.txt", "new.txt"];

#[test]
fn two_archive_chain_restores_whole_and_selective() {
    let ch = chain();
    let out = ch.t.join("out");
    let r = restore_to(&ch.path("b.coffer"), &out, &[]).unwrap();
    same_files(&ch.src_b, &out.join("t"), &FILES);
    assert_eq!(r.files, 4);
    assert_eq!(r.parents_read.len(), 1);
    assert_eq!(
        r.parents_read[0].session_id,
        coffer::format::hex(&ch.a.session_id)
    );
    assert!(r.parents_read[0].bytes > 0);

    // a.txt alone: one block of A, nothing of B's data.
    let one = ch.t.join("one");
    let r = restore_to(&ch.path("b.coffer"), &one, &["t/a.txt"]).unwrap();
    same_files(&ch.src_b, &one.join("t"), &["a.txt"]);
    assert!(!one.join("t/big.bin").exists());
    assert_eq!(r.archive_bytes_read, 0);
    assert_eq!(r.parents_read.len(), 1);
    assert_eq!(r.blocks, 1);
}

#[test]
fn three_archive_chain_restores_whole_and_selective() {
    let ch = chain();
    let out = ch.t.join("out");
    let r = restore_to(&ch.path("c.coffer"), &out, &[]).unwrap();
    same_files(&ch.src_c, &out.join("t"), &FILES);
    assert_eq!(r.parents_read.len(), 2);

    let big = ch.t.join("big");
    restore_to(&ch.path("c.coffer"), &big, &["t/big.bin"]).unwrap();
    same_files(&ch.src_c, &big.join("t"), &["big.bin"]);
}

#[test]
fn selective_restore_reads_only_the_parents_it_needs() {
    let ch = chain();
    // new.txt of C lies in B only: A is neither opened nor read, and may even be absent.
    fs::remove_file(ch.path("a.coffer")).unwrap();
    let out = ch.t.join("out");
    let r = restore_to(&ch.path("c.coffer"), &out, &["t/new.txt"]).unwrap();
    same_files(&ch.src_c, &out.join("t"), &["new.txt"]);
    assert_eq!(r.archive_bytes_read, 0, "nothing of C's own data");
    assert_eq!(r.parents_read.len(), 1);
    assert_eq!(
        r.parents_read[0].session_id,
        coffer::format::hex(&ch.b.session_id)
    );
    assert_eq!(r.blocks, 1, "the one block of B holding new.txt");
    let frame = ch.b.block_tables[0]
        .iter()
        .map(|r| u64::from(r.frame_len))
        .collect::<Vec<_>>();
    assert!(frame.contains(&r.parents_read[0].bytes));
}

#[test]
fn missing_parent_names_its_session_id_hint_and_file_count() {
    let ch = chain();
    let moved = ch.t.join("elsewhere");
    fs::create_dir_all(&moved).unwrap();
    fs::rename(ch.path("a.coffer"), moved.join("a.coffer")).unwrap();
    let out = ch.t.join("out");
    let err = restore_to(&ch.path("b.coffer"), &out, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::MissingParent { files: 3, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&coffer::format::hex(&ch.a.session_id)),
        "{msg}"
    );
    assert!(
        msg.contains("a.coffer") && msg.contains("3 selected file"),
        "{msg}"
    );
    assert!(
        !out.join("t").exists(),
        "nothing written before the parents are found"
    );
    // A file needing no parent restores without it.
    restore_to(&ch.path("b.coffer"), &out, &["t/new.txt"]).unwrap();

    // Found through --chain-dir, under a name coffer gives archives (the hint is stale).
    let renamed = format!(
        "home-20261129T010000Z-{}.coffer",
        &coffer::format::hex(&ch.a.session_id)[..8]
    );
    fs::rename(moved.join("a.coffer"), moved.join(&renamed)).unwrap();
    let out2 = ch.t.join("out2");
    coffer_cmd()
        .args(["restore", "-q", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(&out2)
        .arg("--chain-dir")
        .arg(&moved)
        .arg(ch.path("b.coffer"))
        .assert()
        .success();
    same_files(&ch.src_b, &out2.join("t"), &FILES);
}

#[test]
fn look_alike_parent_with_the_same_session_id_is_tampered() {
    let ch = chain();
    // Anyone with alice's public key can write an archive with A's session id.
    let src = ch.t.join("src_a/t");
    let fake = ch.t.join("fake.coffer");
    back_up(&src, &fake, Some(ch.a.session_id));
    fs::rename(&fake, ch.path("a.coffer")).unwrap();
    let out = ch.t.join("out");
    let err = restore_to(&ch.path("b.coffer"), &out, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Tampered { .. }), "{msg}");
    assert!(msg.contains("is not the archive"), "{msg}");
    assert!(!out.join("t").exists());
}

#[test]
fn extent_outside_the_parents_stream_is_corrupt() {
    let mut ch = chain();
    let a_len: u64 = {
        let d = &ch.a.directory;
        d.stream_len
    };
    let mut e = ch.b_entries();
    e[find(&ch.b.entries, "t/c.txt")].extents = vec![ext(1, a_len - 50, 100)];
    fs::write(
        ch.path("b.coffer"),
        chained(&mut ch.b, &e, &[(&ch.a, "a.coffer")]),
    )
    .unwrap();
    let out = ch.t.join("out");
    let err = restore_to(&ch.path("b.coffer"), &out, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
    assert!(msg.contains("extent outside parent's stream"), "{msg}");
    assert!(!out.join("t").exists());
}

#[test]
fn parent_listing_its_child_is_a_chain_cycle() {
    let mut ch = chain();
    // A re-sealed with B as its parent: each lists the other.
    let e = ch.a.entries.clone();
    let a = chained(&mut ch.a, &e, &[(&ch.b, "b.coffer")]);
    fs::write(ch.path("a.coffer"), a).unwrap();
    let err = restore_to(&ch.path("b.coffer"), &ch.t.join("out"), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
    assert!(msg.contains("chain cycle"), "{msg}");
}

#[test]
fn wrong_bytes_referenced_are_a_content_mismatch_and_leave_no_file() {
    let mut ch = chain();
    let a_big = ch.a.entries[find(&ch.a.entries, "t/big.bin")].extents[0].offset;
    let b_big = ch.b.entries[find(&ch.b.entries, "t/big.bin")].extents[0].offset;
    let mut e = ch.b_entries();
    // The last window shifted by one byte, the hash unchanged.
    e[find(&ch.b.entries, "t/big.bin")].extents = vec![
        ext(1, a_big, 65_536),
        ext(0, b_big + 65_536, 65_536),
        ext(1, a_big + 131_073, 68_928),
    ];
    fs::write(
        ch.path("b.coffer"),
        chained(&mut ch.b, &e, &[(&ch.a, "a.coffer")]),
    )
    .unwrap();
    let out = ch.t.join("out");
    let err = restore_to(&ch.path("b.coffer"), &out, &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ContentMismatch { .. }), "{msg}");
    assert!(msg.contains("big.bin"), "{msg}");
    assert!(!out.join("t/big.bin").exists());
    let left: Vec<_> = fs::read_dir(out.join("t"))
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("big"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn restore_without_the_identity_refuses_an_incremental() {
    let ch = chain();
    let a = coffer::Archive::open(&ch.path("b.coffer")).unwrap();
    let u = a.unlock(&identity(&alice_key())).unwrap();
    let opts = RestoreOptions {
        target: ch.t.join("out"),
        ..Default::default()
    };
    let err = coffer::restore(&a, &u, &opts, &Quiet).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert!(!ch.t.join("out").exists());
}

#[test]
fn info_shows_the_parents_and_whether_each_is_present() {
    let ch = chain();
    let sid = coffer::format::hex(&ch.a.session_id);
    let out = coffer_cmd()
        .arg("info")
        .arg(ch.path("b.coffer"))
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(text.contains("incremental, 1 parent"), "{text}");
    assert!(text.contains(&sid) && text.contains("present"), "{text}");
    fs::remove_file(ch.path("a.coffer")).unwrap();
    let out = coffer_cmd()
        .args(["info", "--json"])
        .arg(ch.path("b.coffer"))
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let doc = if v.is_array() { v[0].clone() } else { v };
    let doc = if doc.get("archives").is_some() {
        doc["archives"][0].clone()
    } else {
        doc
    };
    assert_eq!(doc["kind"], "incremental", "{doc}");
    assert_eq!(doc["parents"][0]["session_id"], sid.as_str());
    assert_eq!(doc["parents"][0]["present"], false);
}
