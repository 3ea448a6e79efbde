//! Incremental chains under kill -9, and on S3 (FORMAT.md v2.8.4): the chain state is
//! never ahead of what is stored, and an incremental needs nothing but the state (a
//! write-only key suffices).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chain_backup::{archive_of, cp_a, full_reason, kind, restore_ok};
use crate::common::*;
use crate::s3_storage::server;

/// Deterministic generator for the kill moments and the changes (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const BIG: u64 = 64 << 20;
const ROUNDS: u32 = 22;
/// Small files (in `DIRS` folders): rows for the state to write, stats for the walk.
const SMALL: u64 = 400;
const DIRS: u64 = 10;

fn archive_name(j: &serde_json::Value) -> String {
    archive_of(j)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

struct KillChain {
    t: TestDir,
    src: PathBuf,
    bigdir: PathBuf,
    dest: PathBuf,
    state: PathBuf,
}

/// What a restore point must hold: the `src` snapshot, and `bigdir/big.bin`'s digest and
/// time (a snapshot of 64 MiB per round would be 1.4 GiB of copies).
struct Expected {
    snap: PathBuf,
    big_sha: Vec<u8>,
    big_mtime: (i64, i64),
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(fs::read(path).unwrap()).to_vec()
}

impl KillChain {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("coffer"));
        cmd.env_remove("RUST_LOG")
            .arg("backup")
            .arg(&self.src)
            .arg(&self.bigdir)
            .arg("--to")
            .arg(&self.dest)
            .args(["--job-name", "kill", "--incremental", "--json", "-r"])
            .arg(alice_pub())
            .arg("--state-dir")
            .arg(&self.state);
        cmd
    }

    fn run(&self) -> (serde_json::Value, Duration) {
        let start = Instant::now();
        let out = self.cmd().output().unwrap();
        assert!(
            out.status.success(),
            "the run after a kill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            serde_json::from_slice(&out.stdout).unwrap(),
            start.elapsed(),
        )
    }

    /// Archives under their final names.
    fn archives(&self) -> BTreeSet<String> {
        fs::read_dir(&self.dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n.ends_with(".coffer"))
            .collect()
    }

    /// Change the tree for round `r`: a window in the middle of the big file, a new file,
    /// a rewritten one, a deleted one.
    fn change(&self, r: u32, rng: &mut Rng) {
        let big = self.bigdir.join("big.bin");
        let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        let at = rng.next() % (BIG - 70_000);
        f.write_all_at(&pseudo_random(65_536, 1000 + r as u64), at)
            .unwrap();
        drop(f);
        set_mtime(&big, 1_700_000_000 + r as i64, r * 7);
        write_file(
            &self.src.join(format!("new/r{r:02}.bin")),
            &pseudo_random(20_000 + r as usize, 2000 + r as u64),
            0o644,
        );
        let i = rng.next() % SMALL;
        write_file(
            &self.src.join(format!("many/{:02}/f{i:04}", i % DIRS)),
            &pseudo_random(900, 3000 + r as u64),
            0o600,
        );
        let gone = self.src.join(format!(
            "many/{:02}/f{:04}",
            (i + 7) % DIRS,
            (i + 7) % SMALL
        ));
        let _ = fs::remove_file(gone);
    }

    /// Snapshot restore point `r` (the tree as it is now).
    fn expect(&self, r: u32) -> Expected {
        let snap = self.t.join(format!("snap{r:02}"));
        cp_a(&self.src, &snap);
        let m = fs::metadata(self.bigdir.join("big.bin")).unwrap();
        Expected {
            snap,
            big_sha: sha(&self.bigdir.join("big.bin")),
            big_mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    /// Restore `name` and compare it with what it captured.
    fn check(&self, name: &str, want: &Expected) {
        let out = self.t.join("restored");
        let _ = fs::remove_dir_all(&out);
        restore_ok(&self.dest.join(name), &out, &[]);
        assert_trees_equal(&want.snap, &out.join("src"));
        let big = out.join("bigdir/big.bin");
        assert!(sha(&big) == want.big_sha, "{name}: big.bin differs");
        let m = fs::metadata(&big).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), want.big_mtime, "{name}");
        fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn kill_9_during_incrementals_never_leaves_the_state_ahead_of_storage() {
    let t = TestDir::new();
    let c = KillChain {
        src: t.join("src"),
        bigdir: t.join("bigdir"),
        dest: t.join("dest"),
        state: t.join("state"),
        t,
    };
    fs::create_dir_all(&c.dest).unwrap();
    write_file(
        &c.bigdir.join("big.bin"),
        &pseudo_random(BIG as usize, 7),
        0o644,
    );
    for i in 0..SMALL {
        write_file(
            &c.src.join(format!("many/{:02}/f{i:04}", i % DIRS)),
            &pseudo_random(1000, i),
            0o644,
        );
    }
    let mut rng = Rng(0x00c0_ffee_d00d_f00d);
    let mut expected: BTreeMap<String, u32> = BTreeMap::new();
    let mut wants: Vec<Expected> = Vec::new();

    // The full (restore point 0), then one incremental to measure how long one takes
    // (point 1, of round 0's changes); round r's archives capture point r + 1.
    wants.push(c.expect(0));
    let (j, _) = c.run();
    assert_eq!(kind(&j), "full");
    expected.insert(archive_name(&j), 0);
    c.change(0, &mut rng);
    wants.push(c.expect(1));
    let (j, took) = c.run();
    assert_eq!(kind(&j), "incremental", "{j}");
    expected.insert(archive_name(&j), 1);
    let span = took.as_millis().max(50) as u64 * 6 / 5;
    let mut incrementals_after_kill = 0;
    let mut archives_from_killed_runs = 0;

    for r in 1..=ROUNDS {
        c.change(r, &mut rng);
        wants.push(c.expect(r + 1));
        let before = c.archives();
        let mut child = c
            .cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next() % span));
        let _ = child.kill();
        child.wait().unwrap();
        let after_kill = c.archives();
        archives_from_killed_runs += after_kill.difference(&before).count();

        // The next run succeeds, continues the chain from what is stored (never from an
        // archive the state has and storage has not), and restores to this round's tree.
        let (j, _) = c.run();
        let name = archive_name(&j);
        match kind(&j) {
            "incremental" => incrementals_after_kill += 1,
            _ => {
                let why = full_reason(&j);
                assert!(
                    !why.is_empty() && !why.contains("no longer"),
                    "round {r}: {why}"
                );
            }
        }
        let stored: BTreeSet<String> = c
            .archives()
            .iter()
            .map(|n| n[n.len() - 15..n.len() - 7].to_string())
            .collect();
        for p in j["chain"]["parents"].as_array().unwrap() {
            let p = p.as_str().unwrap();
            assert!(
                stored.contains(&p[..8]),
                "round {r}: parent {p} is not stored"
            );
        }
        c.check(&name, &wants[r as usize + 1]);
        for n in c.archives().difference(&before) {
            expected.insert(n.clone(), r + 1);
        }
        expected.remove(&name);
    }
    // Every archive under a final name is complete and restores to the tree it captured.
    for (name, r) in &expected {
        c.check(name, &wants[*r as usize]);
    }
    assert!(
        archives_from_killed_runs < ROUNDS as usize,
        "no kill landed inside a run ({span} ms)"
    );
    assert!(
        incrementals_after_kill >= ROUNDS / 2,
        "only {incrementals_after_kill} of {ROUNDS} runs after a kill were incrementals"
    );
    eprintln!(
        "{ROUNDS} kills over {span} ms: {archives_from_killed_runs} killed runs finished, \
         {incrementals_after_kill} incrementals after a kill"
    );
}

#[test]
fn an_s3_chain_is_written_with_a_write_only_key_and_restored_with_a_read_only_one() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("big.bin"), &pseudo_random(5 << 20, 1), 0o644);
    write_file(&src.join("keep.txt"), b"from the full\n", 0o644);
    for i in 0..20u64 {
        write_file(
            &src.join(format!("small/f{i}")),
            &pseudo_random(3000, i),
            0o644,
        );
    }
    let state = t.join("state");
    let prefix = "chain-inc/";
    let run = || -> serde_json::Value {
        let out = s3
            .coffer(&s3.writer)
            .arg("backup")
            .arg(&src)
            .args([
                "--to",
                &s3.url(prefix),
                "--job-name",
                "s3chain",
                "--incremental",
            ])
            .args(["--block-size", "256K", "--json", "--state-dir"])
            .arg(&state)
            .arg("-r")
            .arg(alice_pub())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let restore = |archive: &str, to: &Path, patterns: &[&str]| -> serde_json::Value {
        let out = s3
            .coffer(&s3.reader)
            .args(["restore", archive, "--json", "-i"])
            .arg(alice_key())
            .arg("--to")
            .arg(to)
            .args(patterns)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let s1 = run();
    assert_eq!(kind(&s1), "full");
    let snap1 = t.join("snap1");
    cp_a(&src, &snap1);
    // The middle of the big file, and a new file.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    f.write_all_at(&pseudo_random(1000, 9), 2_600_000).unwrap();
    drop(f);
    write_file(&src.join("new2.txt"), b"from the second\n", 0o644);
    // The write-only key can read nothing (no GET, no HEAD, no LIST): an incremental that
    // needed the bucket would fail here.
    let s2 = run();
    assert_eq!(kind(&s2), "incremental", "{s2}");
    // One 1 MiB window of big.bin, the new file and the index.
    assert!(
        s2["bytes_written"].as_u64().unwrap() < (1 << 20) + (64 << 10),
        "{s2}"
    );
    let snap2 = t.join("snap2");
    cp_a(&src, &snap2);
    write_file(&src.join("new3.txt"), b"from the third\n", 0o644);
    let s3j = run();
    assert_eq!(kind(&s3j), "incremental", "{s3j}");
    assert_eq!(
        s3j["chain"]["parents"].as_array().unwrap().len(),
        2,
        "{s3j}"
    );
    assert_eq!(s3.list("chain-inc").len(), 3);

    for (j, snap, n) in [(&s1, &snap1, 1), (&s2, &snap2, 2), (&s3j, &src, 3)] {
        let out = t.join(format!("out{n}"));
        let r = restore(j["archive"].as_str().unwrap(), &out, &[]);
        assert_trees_equal(snap, &out.join("src"));
        assert_eq!(r["parents_read"].as_array().unwrap().len(), n - 1, "{r}");
    }
    // A selective restore reads only the archive and the parent holding its file, a few
    // ranged reads each.
    let archive = s3j["archive"].as_str().unwrap();
    let one = t.join("one");
    let r = restore(archive, &one, &["src/keep.txt"]);
    assert_eq!(
        fs::read(one.join("src/keep.txt")).unwrap(),
        b"from the full\n"
    );
    let parents = r["parents_read"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "{r}");
    assert_eq!(parents[0]["session_id"], s1["session_id"]);
    let requests = r["remote_requests"].as_u64().unwrap();
    let fetched = r["remote_bytes_fetched"].as_u64().unwrap();
    eprintln!("selective restore over S3: {requests} requests, {fetched} bytes: {r}");
    // Regression: the count was the restore point's object only, not the parent it read.
    let parent_bytes = parents[0]["bytes"].as_u64().unwrap();
    assert!(
        fetched >= parent_bytes && requests >= 2,
        "the parent's {parent_bytes} bytes are not in remote_bytes_fetched: {r}"
    );
    assert!(
        requests <= 16,
        "{requests} requests for one small file: {r}"
    );
    assert!(
        fetched < 1 << 20,
        "fetched {fetched} bytes for one small file: {r}"
    );
}
