//! Backup copy jobs (issue 18): a job's archives copied to its `copy_to` targets (folders
//! or S3 prefixes), keyless, with [`crate::archive::copy`], and thinned there by the
//! job's `copy_retention`.
//!
//! **When.** After each session that completed (`job run`, the daemon), or, with
//! `copy_schedule`, by the daemon on that schedule instead. Either way under the job's
//! lock, so no session or prune changes the archives being copied.
//!
//! **What.** Every archive the job keeps that the target lacks, oldest first (a restore
//! point's parents come with it), so a target that was down catches up at the next run.
//! With `copy_retention`, the choice is made by the job's own retention rules over the
//! restore points that are at the source or at the target ([`retention::decide_chains`]:
//! chains kept whole): an archive the rules would let go at the target is not copied
//! there, and one the target holds that the rules let go is deleted there. What a target
//! holds of the job's archives is known from the catalog (every copy is a row) and checked
//! with one look per archive; nothing else at a target is touched.
//!
//! **Failures.** A target that is down, or an archive that cannot be copied (a damaged
//! source is refused by the copy's checksum walk), is a problem of the run, never an error:
//! the session that ran the copies ends with `warnings`, each problem a warning line naming
//! the target. Retention at a target runs only when every copy to it went through, so a
//! half-caught-up target keeps what it has. An S3 object still under Object Lock is kept
//! and listed with the date it can go, as `prune` does; that is not a problem.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::catalog::{Catalog, CopyOutcome, CopyRow, SessionRow};
use super::config::{Job, Located};
use super::error::JobResult;
use super::prune::{Locks, refused};
use super::retention::{self, Candidate, ChainCandidate, Retention};
use super::schedule::Schedule;
use super::session::SessionEvents;
use crate::archive::copy::{self, CopyOptions, CopyReport, CopyStatus};
use crate::storage::{self, Location};

/// A job's copy keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyPolicy {
    /// `copy_to`: folders and S3 prefixes (a job's own; empty: no copies).
    pub targets: Vec<Located<PathBuf>>,
    /// `copy_retention`: what each target keeps (None: every copy is kept).
    pub retention: Option<Retention>,
    /// `copy_schedule`: when the daemon copies (None: after each completed session).
    pub schedule: Option<Located<Schedule>>,
}

impl CopyPolicy {
    /// Does the job copy anywhere?
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Do the copies run after each completed session (no `copy_schedule`)?
    pub fn after_sessions(&self) -> bool {
        !self.targets.is_empty() && self.schedule.is_none()
    }
}

/// What one run of the copies did at one target.
#[derive(Debug)]
pub struct TargetRun {
    pub job: String,
    pub target: PathBuf,
    /// The target could not be used at all (down, not a folder, unreachable): the
    /// archives after the failure were not tried and nothing was deleted there.
    pub error: Option<String>,
    /// Each archive copied, already there or failed.
    pub report: CopyReport,
    /// Restore points and parents copy retention keeps at the target (None: no
    /// `copy_retention`, or it did not run).
    pub kept: Option<usize>,
    /// Copies deleted from the target by `copy_retention`.
    pub deleted: Vec<PathBuf>,
    /// Copies retention let go but S3 Object Lock still holds, with the time (ms) they
    /// can go (None: the server refused the delete). Kept; retried by the next run.
    pub locked: Vec<(PathBuf, Option<i64>)>,
    /// Copies that could not be deleted, with the error.
    pub delete_failed: Vec<(PathBuf, String)>,
    /// The stop flag ended the run early (the rest is copied at the next run).
    pub stopped: bool,
}

impl TargetRun {
    fn new(job: &Job, target: &Path) -> Self {
        TargetRun {
            job: job.name.clone(),
            target: target.to_path_buf(),
            error: None,
            report: CopyReport::default(),
            kept: None,
            deleted: Vec::new(),
            locked: Vec::new(),
            delete_failed: Vec::new(),
            stopped: false,
        }
    }

    /// Everything reached the target and its retention went through.
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    /// One line per problem, each naming the target: the warnings a session records.
    pub fn problems(&self) -> Vec<String> {
        let t = self.target.display();
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("copy to {t}: target not usable: {e}"));
        }
        for a in self
            .report
            .archives
            .iter()
            .filter(|a| a.status == CopyStatus::Failed)
        {
            out.push(format!(
                "copy to {t}: {}: {}",
                a.source.display(),
                a.detail.as_deref().unwrap_or("not copied")
            ));
        }
        for (p, e) in &self.delete_failed {
            out.push(format!(
                "copy to {t}: copy_retention could not delete {}: {e}",
                p.display()
            ));
        }
        out
    }
}

/// Run the copies of `job` to each of its targets now, recording each copy in the
/// catalog (`session`: the session they follow, None for `copy_schedule`). The caller
/// holds the job's lock. Errors only when the catalog fails; every other problem is in the
/// returned runs ([`TargetRun::problems`]).
pub fn run_copies(
    catalog: &Catalog,
    job: &Job,
    session: Option<i64>,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<Vec<TargetRun>> {
    let archives = catalog.completed_archives(&job.name)?;
    let mut runs = Vec::new();
    for target in &job.copies.targets {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let run = copy_to_target(catalog, job, session, &archives, &target.value, stop)?;
        events.copied(&run);
        runs.push(run);
    }
    Ok(runs)
}

/// An archive of the job that the source or the target holds.
struct Present<'a> {
    row: &'a SessionRow,
    name: String,
    at_source: bool,
    at_target: bool,
    /// When the latest copy of it to this target finished (Object Lock's start).
    copied_at: Option<i64>,
}

fn copy_to_target(
    catalog: &Catalog,
    job: &Job,
    session: Option<i64>,
    archives: &[SessionRow],
    target: &Path,
    stop: &AtomicBool,
) -> JobResult<TargetRun> {
    let mut run = TargetRun::new(job, target);
    let new_row = |archive: Option<&SessionRow>, outcome, started, error: Option<String>| CopyRow {
        id: 0,
        job: job.name.clone(),
        session,
        target: target.to_path_buf(),
        archive: archive.and_then(|r| r.archive.clone()),
        archive_session: archive.map(|r| r.id),
        started_at_ms: started,
        finished_at_ms: now_ms(),
        outcome,
        bytes: 0,
        error,
    };
    let started = now_ms();
    let present = match survey(catalog, job, archives, target) {
        Ok(p) => p,
        Err(e) => {
            run.error = Some(e.clone());
            catalog.record_copy(&new_row(None, CopyOutcome::Failed, started, Some(e)))?;
            return Ok(run);
        }
    };
    let dest = Location::parse(target)?;

    // Which archives the target should hold: the rules over everything at either end.
    let keep: HashSet<i64> = match &job.copies.retention {
        None => present.iter().map(|p| p.row.id).collect(),
        Some(policy) => {
            let by_session: HashMap<&str, i64> = present
                .iter()
                .filter_map(|p| Some((p.row.session_id.as_deref()?, p.row.id)))
                .collect();
            let points: Vec<ChainCandidate> = present
                .iter()
                .map(|p| ChainCandidate {
                    candidate: Candidate {
                        id: p.row.id,
                        time: DateTime::<Utc>::from_timestamp_millis(p.row.started_at_ms)
                            .unwrap_or_default(),
                    },
                    parents: p
                        .row
                        .parents
                        .iter()
                        .filter_map(|s| by_session.get(s.as_str()).copied())
                        .collect(),
                })
                .collect();
            let verdicts = retention::decide_chains(policy, &points, &chrono::Local);
            run.kept = Some(verdicts.iter().filter(|v| v.keep).count());
            verdicts.iter().filter(|v| v.keep).map(|v| v.id).collect()
        }
    };

    // Copy what the target should hold and lacks, oldest first.
    let options = CopyOptions { dest: dest.clone() };
    let by_path: HashMap<&Path, &SessionRow> = archives
        .iter()
        .filter_map(|r| Some((r.archive.as_deref()?, r)))
        .collect();
    for p in present.iter().rev() {
        if !keep.contains(&p.row.id) || p.at_target || !p.at_source {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            run.stopped = true;
            break;
        }
        let Some(source) = p.row.archive.clone() else {
            continue;
        };
        let t0 = now_ms();
        match copy::copy(
            std::slice::from_ref(&source),
            &options,
            &crate::progress::Quiet,
        ) {
            Err(e) => {
                let e = e.to_string();
                run.error = Some(e.clone());
                catalog.record_copy(&new_row(Some(p.row), CopyOutcome::Failed, t0, Some(e)))?;
                break;
            }
            Ok(report) => {
                for a in &report.archives {
                    let outcome = match a.status {
                        CopyStatus::Copied => CopyOutcome::Copied,
                        CopyStatus::Failed => CopyOutcome::Failed,
                        // Already there: nothing happened worth a row.
                        CopyStatus::Skipped => continue,
                    };
                    let row = by_path.get(a.source.as_path()).copied();
                    let mut c = new_row(row, outcome, t0, a.detail.clone());
                    c.archive = Some(a.source.clone());
                    if outcome == CopyOutcome::Copied {
                        c.bytes = a.bytes;
                        c.error = None;
                    }
                    catalog.record_copy(&c)?;
                }
                run.report.archives.extend(report.archives);
            }
        }
    }

    // Retention at the target, only once it holds everything it should.
    let complete = run.error.is_none() && run.report.is_ok() && !run.stopped;
    if job.copies.retention.is_some() && complete {
        for p in present
            .iter()
            .filter(|p| p.at_target && !keep.contains(&p.row.id))
        {
            delete_copy(catalog, job, session, target, &dest, p, &mut run)?;
        }
    } else {
        run.kept = None;
    }
    Ok(run)
}

/// The archives of the job at the source (kept by the catalog) or at the target (copied
/// there and not deleted since, or found there), newest first. An error when the target
/// cannot be looked at (a missing folder: an unmounted disk is not made into a folder on
/// the root file system; an unreachable bucket).
fn survey<'a>(
    catalog: &Catalog,
    job: &Job,
    archives: &'a [SessionRow],
    target: &Path,
) -> Result<Vec<Present<'a>>, String> {
    let dest = Location::parse(target).map_err(|e| e.to_string())?;
    if let Location::Local(dir) = &dest {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err("not a folder".into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    "the folder does not exist (a disk not mounted?); it is not created".into(),
                );
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let held: HashMap<i64, i64> = catalog
        .held_copies(&job.name, target)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for row in archives {
        let Some(name) = row
            .archive
            .as_deref()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
        else {
            continue;
        };
        let at_source = row.deleted_at_ms.is_none();
        let copied_at = held.get(&row.id).copied();
        if !at_source && copied_at.is_none() {
            continue;
        }
        let at_target = match storage::exists(&dest.join(name)) {
            Ok(Some(there)) => there,
            // A key that may not look: trust what the catalog recorded.
            Ok(None) => copied_at.is_some(),
            Err(e) => return Err(e.to_string()),
        };
        if !at_source && !at_target {
            continue;
        }
        out.push(Present {
            row,
            name: name.to_string(),
            at_source,
            at_target,
            copied_at,
        });
    }
    Ok(out)
}

/// Delete one copy copy retention let go, as `prune` deletes an archive: never asking S3
/// to delete an object its Object Lock still holds.
fn delete_copy(
    catalog: &Catalog,
    job: &Job,
    session: Option<i64>,
    target: &Path,
    dest: &Location,
    p: &Present<'_>,
    run: &mut TargetRun,
) -> JobResult<()> {
    let location = dest.join(&p.name);
    let shown = location.display_path();
    let lock_days = Locks::default().days(None, &location);
    if let Some(days) = lock_days {
        // The lock was set when the copy was uploaded; without a record of that, the
        // session's end is the earliest it can have been (the server has the last word).
        let from = p
            .copied_at
            .unwrap_or(p.row.finished_at_ms.unwrap_or(p.row.started_at_ms));
        let until = from + i64::from(days) * 86_400_000;
        if until > now_ms() {
            run.locked.push((shown, Some(until)));
            return Ok(());
        }
    }
    let started = now_ms();
    match storage::delete(&location) {
        Ok(()) => {}
        Err(e) if lock_days.is_some() && refused(&e) => {
            run.locked.push((shown, None));
            return Ok(());
        }
        Err(e) => {
            run.delete_failed.push((shown, e.to_string()));
            return Ok(());
        }
    }
    catalog.record_copy(&CopyRow {
        id: 0,
        job: job.name.clone(),
        session,
        target: target.to_path_buf(),
        archive: p.row.archive.clone(),
        archive_session: Some(p.row.id),
        started_at_ms: started,
        finished_at_ms: now_ms(),
        outcome: CopyOutcome::Deleted,
        bytes: 0,
        error: None,
    })?;
    run.deleted.push(shown);
    Ok(())
}

/// Add what the last copies to each target say to a job's status: a last copy that failed
/// is a warning (the next run retries it), with the target and the error as its reason.
pub fn flag_status(status: &mut super::status::JobStatus, last: &[CopyRow]) {
    for c in last.iter().filter(|c| c.outcome == CopyOutcome::Failed) {
        let error = c.error.as_deref().unwrap_or("no error recorded");
        status.health = status.health.max(super::status::Health::Warning);
        status.reasons.push(format!(
            "last copy to {} failed: {}",
            c.target.display(),
            error.lines().next().unwrap_or_default()
        ));
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
