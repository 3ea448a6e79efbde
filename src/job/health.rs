//! Scheduled health checks (`verify_schedule`): a keyless verify of every archive a job
//! keeps — every frame's checksum, the index and the trailer, as `coffer verify` without a
//! key does — recorded in the catalog as one [`VerifyRun`] and surfaced by `status` and
//! `metrics`. No key is needed, so any host that can read the destination can run it (or
//! keyed, with `verify_identity`: see below).
//!
//! It reads every byte of every kept archive; in object storage that is a download of the
//! whole destination, so `verify_max_rate` limits the reading to so many bytes per second.
//! An archive that cannot be opened (gone, truncated, not an archive) counts as damaged.
//!
//! A job that pins signers (`signers`, `signers_file`) has each archive's signature checked
//! in the same reading, as `coffer verify --signer` does keylessly: an unsigned archive, one
//! signed by a key not pinned, or one whose signature does not verify counts as damaged.
//! Each archive is checked on its own, not with its chain: the members of an incremental's
//! chain are kept archives of the job too, so each is read and checked once here, where a
//! chain check per archive would read a parent again for every child.
//!
//! Keyed, with the job's `verify_identity` (on a verification host that holds a recipient's
//! private key): each archive is unlocked and checked as `coffer verify -i KEY` checks it,
//! by the library's [`Archive::verify_chain`]: header MAC and index, every block's tag and
//! decryption, every file's content hash, and for an incremental the parent blocks its
//! files use and the files' hashes across the chain (so those parent blocks are read once
//! more for each child). With pinned signers, each signature is checked keyed too. Damage a
//! forger hides from the checksums (a block rewritten with its CRC recomputed) is found
//! this way only. The run is recorded as keyed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::catalog::{Catalog, MAX_STORED_WARNINGS, VerifyRun};
use super::config::Job;
use super::error::JobResult;
use crate::archive::{Archive, VerifyReport};
use crate::progress::Observer;
use crate::recipient::{Identity, RsaIdentity};
use crate::signing::VerifyingKey;

/// Slows a verify to `rate` bytes per second: after each block it sleeps until the bytes
/// read so far are within the rate (the verify reads as the observer is told, on the same
/// thread). A set stop flag ends the sleeping, so a stopping daemon is not held up by it.
struct Throttle<'a> {
    rate: Option<u64>,
    stop: &'a AtomicBool,
    start: Instant,
    bytes: Mutex<u64>,
}

impl Observer for Throttle<'_> {
    fn bytes_done(&self, n: u64) {
        let mut total = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *total += n;
        let Some(rate) = self.rate else {
            return;
        };
        let due = Duration::from_secs_f64(*total as f64 / rate as f64);
        drop(total);
        while !self.stop.load(Ordering::SeqCst) {
            let Some(left) = due.checked_sub(self.start.elapsed()) else {
                break;
            };
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// Verify every archive `job` keeps (keyless, or keyed with the job's `verify_identity`),
/// reading at most `job`'s `verify_max_rate` bytes per second, and record the run. With
/// `signers` (the job's pinned signers), each archive's signature by one of them too. None
/// if `stop` was set before the end (nothing is recorded: a partial check says nothing
/// about the archives not reached). A `verify_identity` that does not load is an error
/// (nothing is recorded: the verify that was asked for did not happen).
pub fn verify_job(
    catalog: &Catalog,
    job: &Job,
    signers: &[VerifyingKey],
    stop: &AtomicBool,
) -> JobResult<Option<VerifyRun>> {
    let started_at_ms = chrono::Utc::now().timestamp_millis();
    // Loaded for this run only: the key is in memory while the verify runs, no longer.
    let identity = match &job.monitoring.verify_identity {
        Some(key) => Some(RsaIdentity::load(&key.value)?),
        None => None,
    };
    let throttle = Throttle {
        rate: job.monitoring.verify_max_rate,
        stop,
        start: Instant::now(),
        bytes: Mutex::new(0),
    };
    let (mut archives, mut damaged, mut details) = (0u64, 0u64, Vec::new());
    for row in catalog.good_archives(&job.name)? {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let Some(path) = row.archive.as_deref() else {
            continue;
        };
        archives += 1;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| path.to_string_lossy().into_owned());
        let mut note = |what: String| {
            if details.len() < MAX_STORED_WARNINGS {
                details.push(format!("{name}: {what}"));
            }
        };
        let checked = Archive::open(path).and_then(|a| match &identity {
            Some(id) => verify_keyed(&a, id, signers, &throttle),
            None if signers.is_empty() => a.verify_checksums(&throttle),
            // Unsigned, another signer, a bad signature: an error, counted below.
            None => a.verify_signature_keyless(signers, &throttle),
        });
        match checked {
            Ok(report) if report.is_ok() => {}
            Ok(report) => {
                damaged += 1;
                for p in &report.problems {
                    match p.block {
                        Some(b) => note(format!("block {b} at offset {}: {}", p.offset, p.detail)),
                        None => note(format!("offset {}: {}", p.offset, p.detail)),
                    }
                }
            }
            Err(e) => {
                damaged += 1;
                note(e.to_string());
            }
        }
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let mut run = VerifyRun {
        id: 0,
        job: job.name.clone(),
        started_at_ms,
        finished_at_ms: chrono::Utc::now().timestamp_millis(),
        archives,
        bytes: *throttle.bytes.lock().unwrap_or_else(|e| e.into_inner()),
        damaged,
        details,
        keyed: identity.is_some(),
    };
    run.id = catalog.record_verify(&run)?;
    Ok(Some(run))
}

/// The keyed check of one archive, as `coffer verify -i KEY` makes it: unlock (header MAC,
/// index), the signature with `signers`, then the library's chain verify (its own blocks
/// and content hashes, and an incremental's parents as far as it uses them, found next to
/// it).
fn verify_keyed(
    archive: &Archive,
    identity: &RsaIdentity,
    signers: &[VerifyingKey],
    observer: &dyn Observer,
) -> crate::Result<VerifyReport> {
    let unlocked = archive.unlock(identity as &dyn Identity)?;
    if !signers.is_empty() {
        unlocked.verify_signature(archive, signers)?;
    }
    archive.verify_chain(
        &unlocked,
        identity as &dyn Identity,
        None,
        signers,
        observer,
    )
}
