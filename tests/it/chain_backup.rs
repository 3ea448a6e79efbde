//! Incremental chains written by `coffer backup --incremental` (FORMAT.md v2.8, issue 16),
//! through the binary: a chain of sessions over a tree that changes every time restores
//! each point exactly, whole and selectively; what makes a run a full and why; a wrong
//! extent planted in the state is caught on restore; a missing ancestor is named.
//! The kill -9 rounds and the S3 chain are in `chain_backup_kill.rs`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde::{Deserialize, Serialize};

/// One job's chain: its source folder `src`, destination `dest` and state folder.
pub struct Chain {
    pub t: TestDir,
    pub src: PathBuf,
    pub dest: PathBuf,
    pub state: PathBuf,
}

impl Chain {
    pub fn new() -> Chain {
        let t = TestDir::new();
        let (src, dest, state) = (t.join("src"), t.join("dest"), t.join("state"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dest).unwrap();
        Chain {
            t,
            src,
            dest,
            state,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state.join("chains.sqlite")
    }

    /// `coffer backup SRC --to DEST --incremental ... EXTRA --json` (recipient alice unless
    /// EXTRA names one); the JSON summary.
    pub fn backup(&self, extra: &[&str]) -> serde_json::Value {
        let mut cmd = self.backup_cmd(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "backup failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    }

    pub fn backup_cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("coffer"));
        cmd.env_remove("RUST_LOG")
            .arg("backup")
            .arg(&self.src)
            .arg("--to")
            .arg(&self.dest)
            .args([
                "--job-name",
                "job",
                "--incremental",
                "--json",
                "--state-dir",
            ])
            .arg(&self.state);
        if !extra.contains(&"-r") {
            cmd.arg("-r").arg(alice_pub());
        }
        cmd.args(extra);
        cmd
    }
}

/// `coffer restore ARCHIVE -i alice --to TO PATTERNS --json`.
pub fn restore(archive: &Path, to: &Path, patterns: &[&str]) -> std::process::Output {
    coffer_cmd()
        .arg("restore")
        .arg(archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(to)
        .arg("--json")
        .args(patterns)
        .output()
        .unwrap()
}

pub fn restore_ok(archive: &Path, to: &Path, patterns: &[&str]) -> serde_json::Value {
    let out = restore(archive, to, patterns);
    assert!(
        out.status.success(),
        "restore of {} {patterns:?} failed: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cp -a FROM TO`: the expected snapshot, with modes, times, links and holes.
pub fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

pub fn kind(j: &serde_json::Value) -> &str {
    j["chain"]["kind"].as_str().unwrap()
}

pub fn full_reason(j: &serde_json::Value) -> String {
    j["chain"]["full_reason"].as_str().unwrap_or("").to_string()
}

pub fn archive_of(j: &serde_json::Value) -> PathBuf {
    PathBuf::from(j["archive"].as_str().unwrap())
}

/// Bump a path's mtime to a distinct, known time (the tests change files faster than
/// some clocks tick; distinct times also make the snapshots' times checkable).
fn stamp(path: &Path, n: i64) {
    set_mtime(path, 1_700_000_000 + n * 1000, (n as u32) * 1_111);
}

/// Overwrite `bytes` at `offset` of the file at `path`, in place.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Session `n` (1-based) of the changing tree.
fn change_tree(src: &Path, n: u32) {
    let p = |s: &str| src.join(s);
    match n {
        1 => {
            write_file(&p("big.bin"), &pseudo_random(4 << 20, 1), 0o644);
            write_file(&p("app.log"), &compressible(200_000), 0o640);
            write_file(&p("docs/a.txt"), b"document a\n", 0o644);
            write_file(&p("docs/b.txt"), &pseudo_random(70_000, 2), 0o600);
            write_file(&p("docs/sub/deep.txt"), b"deep\n", 0o644);
            // Names around `d/` in byte order: `d.txt` sorts before `d/` with `/` as
            // 0x2f but after it as 0x00 (the state's key order).
            write_file(&p("d/inner"), b"inner\n", 0o644);
            write_file(&p("d.txt"), b"d dot txt\n", 0o644);
            write_file(&p("d-x"), b"d dash x\n", 0o644);
            write_file(&p("photo.raw"), &pseudo_random(1_500_000, 3), 0o644);
            write_file(&p("will_be_dir"), b"a file for now\n", 0o644);
            write_file(&p("will_be_file/x"), b"x\n", 0o644);
            write_file(&p("will_be_file/y"), &pseudo_random(5000, 4), 0o644);
            write_file(&p("doomed.txt"), b"deleted in session 3\n", 0o644);
            write_file(&p("h1"), &pseudo_random(3000, 5), 0o644);
            symlink("docs/a.txt", p("link")).unwrap();
            // Sparse: 8 MiB with data at 1 MiB and 6 MiB only.
            let f = fs::File::create(p("sparse.img")).unwrap();
            f.set_len(8 << 20).unwrap();
            drop(f);
            patch(&p("sparse.img"), 1 << 20, &pseudo_random(10_000, 6));
            patch(&p("sparse.img"), 6 << 20, &pseudo_random(20_000, 7));
        }
        2 => {
            // The middle of the big file, and one new small file: little to store.
            patch(&p("big.bin"), (2 << 20) + 1000, &pseudo_random(4096, 20));
            write_file(&p("new2.txt"), b"added in session 2\n", 0o644);
        }
        3 => {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(p("app.log"))
                .unwrap();
            f.write_all(b"appended line in session 3\n").unwrap();
            drop(f);
            fs::remove_file(p("doomed.txt")).unwrap();
            fs::rename(p("docs/a.txt"), p("docs/renamed_a.txt")).unwrap();
            fs::copy(p("photo.raw"), p("photo copy.raw")).unwrap();
            fs::set_permissions(p("docs/b.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        4 => {
            fs::remove_file(p("link")).unwrap();
            symlink("../elsewhere/target", p("link")).unwrap();
            fs::remove_file(p("will_be_dir")).unwrap();
            write_file(&p("will_be_dir/now_inside"), b"inside\n", 0o644);
            fs::remove_dir_all(p("will_be_file")).unwrap();
            write_file(&p("will_be_file"), &pseudo_random(6000, 40), 0o600);
            stamp(&p("will_be_dir/now_inside"), 4);
        }
        5 => {
            fs::hard_link(p("h1"), p("docs/h2")).unwrap();
            patch(&p("sparse.img"), 4 << 20, &pseudo_random(30_000, 50));
            write_file(&p("docs/sub/new5.bin"), &pseudo_random(2 << 20, 51), 0o644);
            // The big file goes back to its first content: every window is in the full.
            write_file(&p("big.bin"), &pseudo_random(4 << 20, 1), 0o644);
        }
        6 => {
            write_file(&p("docs/sub/deep.txt"), b"deep, changed in 6\n", 0o644);
        }
        _ => unreachable!(),
    }
    // Folder times last: the changes above moved them.
    for d in ["", "docs", "docs/sub", "d"] {
        let path = if d.is_empty() {
            src.to_path_buf()
        } else {
            p(d)
        };
        stamp(&path, n as i64 + 100);
    }
}

#[test]
fn six_sessions_restore_every_point_exactly_whole_and_selectively() {
    let c = Chain::new();
    let mut points = Vec::new();
    for n in 1..=6u32 {
        change_tree(&c.src, n);
        let j = c.backup(&[]);
        let snap = c.t.join(format!("snap{n}"));
        cp_a(&c.src, &snap);
        if n == 1 {
            assert_eq!(kind(&j), "full", "{j}");
            assert!(!full_reason(&j).is_empty());
        } else {
            assert_eq!(kind(&j), "incremental", "session {n}: {j}");
            assert!(!j["chain"]["parents"].as_array().unwrap().is_empty());
            assert!(j["chain"]["files_unchanged"].as_u64().unwrap() > 0, "{j}");
        }
        let written = j["bytes_written"].as_u64().unwrap();
        match n {
            // One 1 MiB window of big.bin and a small file.
            2 => assert!(written <= 2 << 20, "session 2 wrote {written}: {j}"),
            // The copy and the rename are referenced: only the appended log window.
            3 => assert!(written <= 1 << 20, "session 3 wrote {written}: {j}"),
            // big.bin is back to session 1's bytes: only new5.bin and the sparse file.
            5 => assert!(
                written <= (3 << 20) + (1 << 20),
                "session 5 wrote {written}"
            ),
            6 => assert!(written <= 256 << 10, "session 6 wrote {written}"),
            _ => {}
        }
        points.push((archive_of(&j), snap));
    }
    // Nothing changed: nothing read, next to nothing written, the same tree.
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "incremental");
    assert_eq!(j["bytes_read"], 0, "{j}");
    assert!(j["bytes_written"].as_u64().unwrap() <= 64 << 10, "{j}");
    points.push((archive_of(&j), c.t.join("snap6")));
    for (n, (archive, snap)) in points.iter().enumerate() {
        let out = c.t.join(format!("out{n}"));
        let r = restore_ok(archive, &out, &[]);
        assert_trees_equal(snap, &out.join("src"));
        assert_eq!(
            r["parents_read"].as_array().unwrap().is_empty(),
            n == 0,
            "point {n}: {r}"
        );
        // A sub-folder.
        let sub = c.t.join(format!("sub{n}"));
        restore_ok(archive, &sub, &["src/docs"]);
        assert_trees_equal(&snap.join("docs"), &sub.join("src/docs"));
        // A single file, its bytes, mode and time.
        let one = c.t.join(format!("one{n}"));
        restore_ok(archive, &one, &["src/big.bin"]);
        let (want, got) = (snap.join("big.bin"), one.join("src/big.bin"));
        assert_eq!(
            fs::read(&want).unwrap(),
            fs::read(&got).unwrap(),
            "point {n}"
        );
        let (mw, mg) = (fs::metadata(&want).unwrap(), fs::metadata(&got).unwrap());
        assert_eq!(
            (mw.mode(), mw.mtime(), mw.mtime_nsec()),
            (mg.mode(), mg.mtime(), mg.mtime_nsec())
        );
        assert!(!one.join("src/app.log").exists());
    }
    // The hard link is one inode again.
    let last = c.t.join("out5/src");
    assert_eq!(
        fs::metadata(last.join("h1")).unwrap().ino(),
        fs::metadata(last.join("docs/h2")).unwrap().ino()
    );
}

/// A small tree for the tests of one behaviour each.
fn small_tree(src: &Path) {
    write_file(&src.join("a.bin"), &pseudo_random(100_000, 1), 0o644);
    write_file(&src.join("b.bin"), &pseudo_random(100_000, 2), 0o644);
    write_file(&src.join("big.bin"), &pseudo_random(3 << 20, 3), 0o644);
    write_file(&src.join("keep.txt"), b"keep\n", 0o644);
}

/// Run an incremental, check it is one, and that it restores to the source as it is.
fn incremental_restores(c: &Chain, n: u32) -> serde_json::Value {
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "incremental", "{j}");
    let out = c.t.join(format!("check{n}"));
    restore_ok(&archive_of(&j), &out, &[]);
    assert_trees_equal(&c.src, &out.join("src"));
    j
}

#[test]
fn a_lost_corrupt_or_mismatched_state_makes_a_full_saying_why() {
    let c = Chain::new();
    small_tree(&c.src);
    let first = c.backup(&[]);
    assert_eq!(kind(&first), "full");
    assert!(full_reason(&first).contains("no chain state"), "{first}");
    incremental_restores(&c, 1);

    // State deleted.
    fs::remove_dir_all(&c.state).unwrap();
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "full");
    assert!(full_reason(&j).contains("no chain state"), "{j}");
    incremental_restores(&c, 2);

    // State corrupted: its header overwritten.
    assert!(
        !c.state.join("chains.sqlite-wal").exists()
            || fs::metadata(c.state.join("chains.sqlite-wal"))
                .unwrap()
                .len()
                == 0,
        "the last run left its changes in the WAL"
    );
    patch(&c.state_file(), 0, &[0xa5; 100]);
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "full", "{j}");
    let why = full_reason(&j);
    assert!(
        why.contains("unusable") && why.contains("moved aside"),
        "{why}"
    );
    let aside: Vec<_> = fs::read_dir(&c.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chains.sqlite.unusable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        &fs::read(c.state.join(&aside[0])).unwrap()[..100],
        &[0xa5; 100][..],
        "the corrupt state is kept as it was"
    );
    incremental_restores(&c, 3);

    // Recipients changed.
    let bob = bob_pub();
    let j = c.backup(&["-r", bob.to_str().unwrap()]);
    assert_eq!(kind(&j), "full");
    assert!(full_reason(&j).contains("recipients"), "{j}");
    let j = c.backup(&["-r", bob.to_str().unwrap()]);
    assert_eq!(
        kind(&j),
        "incremental",
        "the same new recipients continue: {j}"
    );

    // Block size changed (back to alice: a recipient change too, so that first).
    let j = c.backup(&[]);
    assert!(full_reason(&j).contains("recipients"), "{j}");
    let j = c.backup(&["--block-size", "256K"]);
    assert_eq!(kind(&j), "full");
    assert!(full_reason(&j).contains("block size"), "{j}");
    let j = c.backup(&["--block-size", "256K"]);
    assert_eq!(kind(&j), "incremental", "{j}");

    // --full.
    let j = c.backup(&["--block-size", "256K", "--full"]);
    assert_eq!(kind(&j), "full");
    assert!(full_reason(&j).contains("--full"), "{j}");

    // The last archive gone from the destination.
    let j = c.backup(&["--block-size", "256K"]);
    assert_eq!(kind(&j), "incremental", "{j}");
    fs::remove_file(archive_of(&j)).unwrap();
    let j2 = c.backup(&["--block-size", "256K"]);
    assert_eq!(kind(&j2), "full");
    let name = archive_of(&j)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(full_reason(&j2).contains(&name), "{j2}");
    let out = c.t.join("last");
    restore_ok(&archive_of(&j2), &out, &[]);
    assert_trees_equal(&c.src, &out.join("src"));
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct DataRange {
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StateExtent {
    position: u32,
    offset: u64,
    len: u64,
}

/// The state's file row `data` blob (src/chain/state.rs `FileData`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct FileData {
    ranges: Option<Vec<DataRange>>,
    extents: Vec<StateExtent>,
    windows: Option<Vec<[u8; 32]>>,
    /// Extended attributes as (name, value) pairs.
    xattrs: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn state_key(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

fn read_data(db: &rusqlite::Connection, path: &str) -> FileData {
    let blob: Vec<u8> = db
        .query_row(
            "SELECT data FROM file WHERE key = ?1",
            [state_key(path)],
            |r| r.get(0),
        )
        .unwrap();
    postcard::from_bytes(&blob).unwrap()
}

#[test]
fn a_wrong_extent_planted_in_the_state_fails_that_files_restore() {
    let c = Chain::new();
    small_tree(&c.src);
    let full = c.backup(&[]);
    {
        let db = rusqlite::Connection::open(c.state_file()).unwrap();
        let mut a = read_data(&db, "src/a.bin");
        let b = read_data(&db, "src/b.bin");
        assert_eq!(a.extents.len(), 1, "{a:?}");
        assert_eq!(a.extents[0].len, b.extents[0].len);
        assert_ne!(a.extents[0].offset, b.extents[0].offset);
        // Other bytes of the same length in the same parent: b.bin's.
        a.extents[0].offset = b.extents[0].offset;
        let n = db
            .execute(
                "UPDATE file SET data = ?1 WHERE key = ?2",
                rusqlite::params![postcard::to_stdvec(&a).unwrap(), state_key("src/a.bin")],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "incremental", "{j}");
    assert_eq!(
        j["chain"]["files_unchanged"], 4,
        "a.bin must be taken from the state: {j}"
    );
    let archive = archive_of(&j);
    for patterns in [&[][..], &["src/a.bin"][..]] {
        let out = c.t.join(format!("out{}", patterns.len()));
        let o = restore(&archive, &out, patterns);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("a.bin") && err.contains("content"), "{err}");
        assert!(!out.join("src/a.bin").exists(), "a wrong a.bin was left");
        assert!(partial_files(&out).is_empty(), "{:?}", partial_files(&out));
    }
    // The full it points into is fine, and so is a file of the incremental that does not
    // use the wrong extent.
    let out = c.t.join("full");
    restore_ok(&archive_of(&full), &out, &[]);
    assert_trees_equal(&c.src, &out.join("src"));
    let out = c.t.join("b");
    restore_ok(&archive, &out, &["src/b.bin"]);
    assert_eq!(
        fs::read(out.join("src/b.bin")).unwrap(),
        fs::read(c.src.join("b.bin")).unwrap()
    );
}

#[test]
fn a_deleted_ancestor_is_named_and_files_that_do_not_need_it_still_restore() {
    let c = Chain::new();
    small_tree(&c.src);
    let s1 = c.backup(&[]);
    write_file(&c.src.join("n2.txt"), &pseudo_random(5000, 20), 0o644);
    let s2 = c.backup(&[]);
    write_file(&c.src.join("n3.txt"), &pseudo_random(7000, 30), 0o644);
    let s3 = c.backup(&[]);
    assert_eq!(kind(&s3), "incremental");
    let parents: Vec<&str> = s3["chain"]["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let sid1 = s1["session_id"].as_str().unwrap();
    assert_eq!(parents, [sid1, s2["session_id"].as_str().unwrap()]);
    fs::remove_file(archive_of(&s1)).unwrap();

    let out = c.t.join("all");
    let o = restore(&archive_of(&s3), &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let name1 = archive_of(&s1)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(err.contains(sid1) && err.contains(&name1), "{err}");
    assert!(!out.join("src/a.bin").exists());

    for (file, json) in [("n3.txt", &s3), ("n2.txt", &s2)] {
        let out = c.t.join(format!("sel-{file}"));
        let r = restore_ok(&archive_of(&s3), &out, &[&format!("src/{file}")]);
        assert_eq!(
            fs::read(out.join("src").join(file)).unwrap(),
            fs::read(c.src.join(file)).unwrap()
        );
        let read: Vec<&str> = r["parents_read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["session_id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = if std::ptr::eq(json, &s3) {
            vec![]
        } else {
            vec![s2["session_id"].as_str().unwrap()]
        };
        assert_eq!(read, want, "{r}");
    }
    // The next run cannot reference the deleted ancestor: a full, naming it.
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "full");
    assert!(full_reason(&j).contains(&name1), "{j}");
}

/// The merge with the last run's rows dropped the row of `a.bin` (renamed to `z.bin`, a
/// later path) before `z.bin` was read, so the rename was not found and all of it was
/// stored again.
#[test]
fn regression_rename_to_a_later_name_is_referenced_not_stored_again() {
    let c = Chain::new();
    write_file(&c.src.join("a.bin"), &pseudo_random(3 << 20, 1), 0o644);
    write_file(&c.src.join("m.txt"), b"m\n", 0o644);
    c.backup(&[]);
    fs::rename(c.src.join("a.bin"), c.src.join("z.bin")).unwrap();
    let j = c.backup(&[]);
    assert_referenced(&c, &j, 64 << 10, 3 << 20, "the renamed file");
}

/// `j` is an incremental that wrote less than `max_written` bytes (`what` was not stored
/// again) and referenced at least `min_referenced`, and it restores to the source.
fn assert_referenced(
    c: &Chain,
    j: &serde_json::Value,
    max_written: u64,
    min_referenced: u64,
    what: &str,
) {
    assert_eq!(kind(j), "incremental", "{j}");
    let written = j["bytes_written"].as_u64().unwrap();
    assert!(written < max_written, "{what} was stored again: {j}");
    let referenced = j["chain"]["bytes_referenced"].as_u64().unwrap();
    assert!(referenced >= min_referenced, "{j}");
    let out = c.t.join("out");
    restore_ok(&archive_of(j), &out, &[]);
    assert_trees_equal(&c.src, &out.join("src"));
}

/// A full keeps no copy lookup index (building it was a serial cost at the end of every
/// first full), in a state of 16 KiB pages; the first incremental that looks a copy up
/// builds it, and finds the copy. The rows of files found gone stay until the commit, so the index built after the
/// walk passed them still finds a rename; they are gone once the run is committed.
#[test]
fn a_full_keeps_no_lookup_index_and_the_first_copy_lookup_builds_it() {
    let c = Chain::new();
    write_file(&c.src.join("a.bin"), &pseudo_random(2 << 20, 7), 0o644);
    write_file(&c.src.join("b.txt"), b"b\n", 0o644);
    c.backup(&[]);
    let has_index = || {
        let db = rusqlite::Connection::open(c.state_file()).unwrap();
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'file_fkey'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    };
    let rows = || {
        let db = rusqlite::Connection::open(c.state_file()).unwrap();
        db.query_row("SELECT count(*) FROM file", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert!(!has_index(), "a full built the lookup index");
    let page_size: i64 = rusqlite::Connection::open(c.state_file())
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, 16384, "a new state has 16 KiB pages");
    // Nothing new: no lookup, still no index.
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "incremental");
    assert!(
        !has_index(),
        "an incremental without a lookup built the index"
    );
    // a.bin renamed to a later path: the lookup builds the index and finds it.
    fs::rename(c.src.join("a.bin"), c.src.join("c.bin")).unwrap();
    let j = c.backup(&[]);
    assert!(has_index(), "the lookup did not build the index");
    assert_eq!(
        rows(),
        2,
        "the gone row of a.bin was not deleted at the commit"
    );
    assert_referenced(&c, &j, 64 << 10, 2 << 20, "the renamed file");
}

/// A rotated log: `app.log` rewritten, its old content moved to `app.log.1`, a later
/// path. The walk replaced `app.log`'s row before it met `app.log.1`, so the old content
/// was no longer found and all of it was stored again (found in review of the deferred
/// deletes, which had dropped the lookup on the run's read snapshot).
#[test]
fn regression_a_rotated_log_is_referenced_not_stored_again() {
    let c = Chain::new();
    write_file(&c.src.join("app.log"), &pseudo_random(3 << 20, 11), 0o644);
    c.backup(&[]);
    fs::rename(c.src.join("app.log"), c.src.join("app.log.1")).unwrap();
    write_file(&c.src.join("app.log"), &pseudo_random(100_000, 12), 0o644);
    let j = c.backup(&[]);
    assert_referenced(&c, &j, 100_000 + (64 << 10), 3 << 20, "the rotated log");
}

/// A file row whose `data` blob did not decode (a state damaged where SQLite's integrity
/// check does not look) failed every later run with "bad data in a file row", naming no
/// file, until the state was deleted by hand.
#[test]
fn regression_an_undecodable_state_row_does_not_stop_every_run() {
    let c = Chain::new();
    small_tree(&c.src);
    c.backup(&[]);
    {
        let db = rusqlite::Connection::open(c.state_file()).unwrap();
        let n = db
            .execute(
                "UPDATE file SET data = x'05ffffffffff' WHERE key = ?1",
                [state_key("src/b.bin")],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let j = c.backup(&[]);
    assert_eq!(kind(&j), "incremental", "{j}");
    assert_eq!(j["chain"]["files_unchanged"], 3, "b.bin is read again: {j}");
    assert!(j["bytes_written"].as_u64().unwrap() >= 100_000, "{j}");
    let out = c.t.join("out");
    restore_ok(&archive_of(&j), &out, &[]);
    assert_trees_equal(&c.src, &out.join("src"));
    // The row was replaced: the next run skips b.bin again.
    let j = c.backup(&[]);
    assert_eq!(j["chain"]["files_unchanged"], 4, "{j}");
}
