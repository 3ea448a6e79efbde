//! Crash safety: `kill -9` a running `coffer backup` or `coffer restore` at random moments.
//!
//! Backup: the destination folder must never hold a file under the archive's final name
//! unless that file is a complete archive (opens, and a keyed verify of every block passes);
//! a temporary `.NAME.xxxxxxxx.partial` left behind by the kill must never open as an
//! archive unless it is itself complete (killed between the last write and the rename); and
//! an earlier archive in the same folder is never touched and still verifies.
//!
//! Restore: no file in the target carries its final name with wrong content; whatever is
//! half written only exists under a temporary `.coffer-<16 hex>.tmp` name.
//!
//! Kill moments are drawn from a seeded generator (`COFFER_CRASH_SEED` to try others)
//! between the process start and a little past the time a full run takes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use coffer::archive::Archive;
use coffer::backup::Quiet;

/// Killed runs per test (the issue asks for at least 20 for backup). Runs that finish
/// before their kill moment are checked as well but do not count.
const BACKUP_KILLS: usize = 22;
const RESTORE_KILLS: usize = 10;
/// Give up drawing moments after this many runs (a machine so fast that runs end first).
const MAX_ROUNDS: usize = 120;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max)`.
    fn duration(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }
}

fn seed() -> u64 {
    std::env::var("COFFER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0DEA_DBEE_F202)
}

/// Fast deterministic incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// About 100 MB: four large files (several blocks each) and two thousand small ones in
/// forty folders (many renames during restore, shared blocks during backup).
fn build_big_tree(root: &Path) -> u64 {
    let mut total = 0u64;
    for i in 0..4 {
        let data = random_bytes(20 << 20, 1000 + i);
        total += data.len() as u64;
        write_file(&root.join(format!("big/{i}.bin")), &data, 0o644);
    }
    let mut rng = Rng(7);
    for d in 0..40 {
        for f in 0..50 {
            let len = (rng.next() % 20_000) as usize;
            let data = random_bytes(len, (d * 1000 + f) as u64);
            total += len as u64;
            write_file(
                &root.join(format!("small/d{d:02}/f{f:03}.dat")),
                &data,
                0o644,
            );
        }
    }
    total
}

fn coffer_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("coffer")
}

fn spawn_backup(src: &Path, out: &Path) -> Child {
    Command::new(coffer_bin())
        .args(["backup", "--quiet", "--compression", "none", "-r"])
        .arg(alice_pub())
        .arg("-o")
        .arg(out)
        .arg(src)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coffer backup")
}

fn spawn_restore(archive: &Path, target: &Path) -> Child {
    Command::new(coffer_bin())
        .args(["restore", "--quiet", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(target)
        .arg(archive)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coffer restore")
}

/// Wait up to `after`, then SIGKILL (`Child::kill`) unless the process already ended.
/// Returns true if the process was killed, false if it finished on its own (successfully).
fn kill_after(mut child: Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(
                status.success(),
                "coffer failed on its own: {status}: {err}"
            );
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Time one complete run (the median of three, the first warms the page cache).
fn time_run(mut run: impl FnMut(usize) -> Child) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|i| {
            let started = Instant::now();
            let status = run(i).wait().unwrap();
            assert!(status.success());
            started.elapsed()
        })
        .collect();
    times.sort();
    times[1]
}

fn keyed_verify(path: &Path) -> Result<(), String> {
    let a = Archive::open(path).map_err(|e| e.to_string())?;
    let u = a
        .unlock(&identity(&alice_key()))
        .map_err(|e| e.to_string())?;
    let r = a.verify_blocks(&u, &Quiet).map_err(|e| e.to_string())?;
    if r.is_ok() {
        Ok(())
    } else {
        Err(format!("{:?}", r.problems))
    }
}

/// `.NAME.xxxxxxxx.partial` (fsutil::temp_name) for a final name NAME.
fn temp_name_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".partial")?;
    let (base, tag) = rest.rsplit_once('.')?;
    (tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(base)
}

/// `.coffer-<16 hex>.tmp`: the temporary name restore writes a file under.
fn is_restore_temp_name(name: &str) -> bool {
    name.strip_prefix(".coffer-")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|tag| tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Debug, Default)]
struct BackupTally {
    killed: usize,
    completed: usize,
    final_names: usize,
    partials: usize,
    complete_partials: usize,
}

#[test]
fn killed_backups_never_leave_an_archive_that_looks_complete() {
    let t = TestDir::new();
    let src = t.join("src/data");
    let bytes = build_big_tree(&src);
    let dest = t.join("dest");
    fs::create_dir_all(&dest).unwrap();

    // The earlier archive, which every later run must leave alone.
    let earlier = dest.join("earlier.coffer");
    let mut full = time_run(|i| {
        let p = if i == 0 {
            earlier.clone()
        } else {
            dest.join(format!("timing-{i}.coffer"))
        };
        spawn_backup(&src, &p)
    });
    for i in 1..3 {
        fs::remove_file(dest.join(format!("timing-{i}.coffer"))).unwrap();
    }
    keyed_verify(&earlier).unwrap();
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.len(), m.mtime(), m.mtime_nsec())
    };
    let earlier_stamp = stamp(&earlier);
    eprintln!("{bytes} bytes; a full backup takes {full:?}");

    let seed = seed();
    let mut rng = Rng(seed);
    let mut tally = BackupTally::default();
    for round in 0..MAX_ROUNDS {
        if tally.killed >= BACKUP_KILLS {
            break;
        }
        let name = format!("run-{round:02}.coffer");
        let out = dest.join(&name);
        // Mostly anywhere inside the run; every fourth near its end, where the index and
        // trailer are written, the file is synced and renamed.
        let at = if round % 4 == 3 {
            full * 3 / 4 + rng.duration(full / 2)
        } else {
            rng.duration(full)
        };
        let started = Instant::now();
        if kill_after(spawn_backup(&src, &out), at) {
            tally.killed += 1;
        } else {
            tally.completed += 1;
            // Runs get faster once caches are warm (or the machine quiets down): aim the
            // next kills inside the run as it is now, so that enough of them land.
            full = full.min(started.elapsed());
        }
        let ctx = format!("seed {seed:#x}, round {round}, kill after {at:?}");
        for entry in fs::read_dir(&dest).unwrap() {
            let entry = entry.unwrap();
            let file = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if file == "earlier.coffer" {
                continue;
            }
            if let Some(base) = temp_name_of(&file) {
                assert_eq!(base, name, "{ctx}: stray temp file {file}");
                tally.partials += 1;
                // A temporary file opens only if it is whole: killed after the trailer was
                // written, before the rename. Then it verifies completely too.
                if Archive::open(&path).is_ok() {
                    keyed_verify(&path).unwrap_or_else(|e| {
                        panic!("{ctx}: {file} opens as an archive but is not complete: {e}")
                    });
                    tally.complete_partials += 1;
                }
            } else {
                assert_eq!(file, name, "{ctx}: unexpected file in the destination");
                tally.final_names += 1;
                keyed_verify(&path).unwrap_or_else(|e| {
                    panic!("{ctx}: {file} carries the final name but is not complete: {e}")
                });
            }
            fs::remove_file(&path).unwrap();
        }
        assert_eq!(
            stamp(&earlier),
            earlier_stamp,
            "{ctx}: the earlier archive changed"
        );
    }
    keyed_verify(&earlier).unwrap();
    eprintln!("seed {seed:#x}: {tally:?}");
    assert!(
        tally.killed >= BACKUP_KILLS,
        "only {} runs were killed: {tally:?}",
        tally.killed
    );
}

#[test]
fn killed_restores_never_leave_wrong_content_under_a_final_name() {
    let t = TestDir::new();
    let src_parent = t.join("src");
    let src = src_parent.join("data");
    build_big_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        coffer::DEFAULT_BLOCK_SIZE,
        coffer::Compression::None,
        &[&alice_pub()],
    );
    let mut full = time_run(|i| spawn_restore(&archive, &t.join(format!("timing-{i}"))));
    for i in 0..3 {
        assert_trees_equal(&src, &t.join(format!("timing-{i}/data")));
        fs::remove_dir_all(t.join(format!("timing-{i}"))).unwrap();
    }
    eprintln!("a full restore takes {full:?}");

    let seed = seed() ^ 0x5EED;
    let mut rng = Rng(seed);
    let mut stats: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..MAX_ROUNDS {
        if stats.get("killed").copied().unwrap_or(0) >= RESTORE_KILLS {
            break;
        }
        let target = t.join(format!("out-{round:02}"));
        let at = rng.duration(full);
        let started = Instant::now();
        let killed = kill_after(spawn_restore(&archive, &target), at);
        if !killed {
            full = full.min(started.elapsed());
        }
        *stats
            .entry(if killed { "killed" } else { "completed" })
            .or_default() += 1;
        let ctx = format!("seed {seed:#x}, round {round}, kill after {at:?}");
        if !target.exists() {
            continue;
        }
        for (rel, node) in scan(&target) {
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
            let Node::File { .. } = node else { continue };
            let name = name.unwrap();
            if is_restore_temp_name(&name) {
                // Half-written data lives only under a temporary name (short, so that a
                // final name of 255 bytes still fits: it does not carry the final name).
                *stats.entry("temp files").or_default() += 1;
                continue;
            }
            let got = fs::read(target.join(&rel)).unwrap();
            let want = fs::read(src_parent.join(&rel)).unwrap();
            assert!(
                got == want,
                "{ctx}: {} has its final name but wrong content ({} of {} bytes)",
                rel.display(),
                got.len(),
                want.len()
            );
            *stats.entry("final files").or_default() += 1;
        }
        if !killed {
            assert_trees_equal(&src, &target.join("data"));
        }
        fs::remove_dir_all(&target).unwrap();
    }
    eprintln!("seed {seed:#x}: {stats:?}");
    assert!(
        stats.get("killed").copied().unwrap_or(0) >= RESTORE_KILLS,
        "{stats:?}"
    );
}
