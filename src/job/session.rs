//! One job session: take the job's lock, record the session, run the backup, name the
//! archive, record the outcome.
//!
//! The session id is drawn first, so the archive is written straight to its final name,
//! `DEST/<job>-<YYYYmmddTHHMMSSZ>-<first 8 hex digits of the session id>.coffer`, through
//! the destination's own atomic write: a hidden `.NAME.XXXXXXXX.partial` file renamed when
//! complete on a local disk, a multipart upload completed at the end in object storage (no
//! rename exists there, and a write-only key could not copy). Nothing with a `.coffer`
//! name is ever incomplete.
//!
//! **Stopping.** This function watches a stop flag (set by the binary's SIGTERM/SIGINT
//! handler) while the backup runs on its own thread. When the flag is set, it cancels the
//! backup (which then removes its partial file or aborts its upload, as for any failure),
//! waits a few seconds for that, marks the session `interrupted`, and returns; a backup
//! stuck in a slow read is abandoned instead, and if it completes later it deletes its own
//! archive. The caller is expected to exit the process. Leftovers of a process that was
//! killed outright (`kill -9`, power loss) are removed, and its session marked
//! interrupted, by [`recover_stale`] on a later start; in object storage an upload cut
//! off that way stays invisible until the bucket's lifecycle rule aborts it.

use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::catalog::{Catalog, Finish, SessionRow, SessionState, Trigger};
use super::config::ResolvedJob;
use super::error::{JobError, JobResult};
use super::lock::{LockDir, pid_alive};
use crate::backup::{self, BackupReport};
use crate::format::hex;
use crate::keys::new_session_id;
use crate::progress::{Observer, Warning};
use crate::recipient::Recipient;
use crate::storage::{self, Location};

/// The catalog and the locks of one state folder.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub locks: &'a LockDir,
}

/// What to do when the job is already running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Fail with [`JobError::Busy`].
    Fail,
    /// Wait for the running session to end (a stop signal ends the wait).
    Wait,
}

/// Told about a session as it goes. Every method has an empty default.
pub trait SessionEvents: Sync {
    /// The job is locked by another process (its pid, if known); waiting for it.
    fn waiting(&self, _job: &str, _holder: Option<u32>) {}
    /// The session was recorded and the backup starts.
    fn started(&self, _job: &str, _session: i64, _trigger: Trigger) {}
    /// A file was skipped or could not be read (the session will end with warnings).
    fn warning(&self, _job: &str, _warning: &Warning) {}
    /// A session of a dead process was found and marked interrupted.
    fn recovered(&self, _row: &SessionRow) {}
}

/// Ignores every event.
pub struct NoEvents;
impl SessionEvents for NoEvents {}

/// How a session ended.
#[derive(Debug)]
pub struct SessionOutcome {
    /// The catalog row as recorded at the end.
    pub row: SessionRow,
    /// The backup's report, if it completed.
    pub report: Option<BackupReport>,
    /// The error that failed it, if it failed.
    pub error: Option<crate::Error>,
}

impl SessionOutcome {
    pub fn state(&self) -> SessionState {
        self.row.state
    }
}

/// Why a session is marked interrupted when its process is gone.
fn died_reason(pid: u32) -> String {
    format!("the coffer process (pid {pid}) ended before the session finished (killed or crashed)")
}

/// The message recorded for a session stopped by SIGTERM/SIGINT.
pub const STOPPED_REASON: &str = "stopped by a signal; the unfinished archive was removed";

enum Msg {
    Warning(Warning),
    Done(crate::Result<BackupReport>),
}

struct Forward(mpsc::Sender<Msg>);
impl Observer for Forward {
    fn warning(&self, w: &Warning) {
        let _ = self.0.send(Msg::Warning(w.clone()));
    }
}

/// `<job>-<YYYYmmddTHHMMSSZ>` of a session started at `t`.
pub fn archive_stem(job: &str, t: DateTime<Utc>) -> String {
    format!("{job}-{}", t.format("%Y%m%dT%H%M%SZ"))
}

/// The final name of an archive: `<job>-<YYYYmmddTHHMMSSZ>-<8 hex of the session id>.coffer`.
pub fn archive_name(job: &str, t: DateTime<Utc>, session_id: &[u8]) -> String {
    let h = hex(session_id);
    format!("{}-{}.coffer", archive_stem(job, t), &h[..h.len().min(8)])
}

#[cfg(test)]
fn staging_name(job: &str, t: DateTime<Utc>, row: i64) -> String {
    format!(".{}-{row}.staging", archive_stem(job, t))
}

/// Is `name` a temporary file of a session of `job`: `.<job>-<stamp>-<8 hex>.coffer.XXXXXXXX.partial`,
/// or, from coffer versions that staged archives, `.<job>-<stamp>-<row>.staging` and its
/// `..<job>-<stamp>-<row>.staging.XXXXXXXX.partial`?
pub fn is_leftover(name: &str, job: &str) -> bool {
    is_partial_archive(name, job) || is_staging_leftover(name, job)
}

/// `.<job>-<YYYYmmddTHHMMSSZ>-<8 hex>.coffer.<8 hex>.partial`
fn is_partial_archive(name: &str, job: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".partial"))
    else {
        return false;
    };
    let Some((archive, tag)) = rest.rsplit_once('.') else {
        return false;
    };
    if tag.len() != 8 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Some(core) = archive
        .strip_suffix(".coffer")
        .and_then(|c| c.strip_prefix(job))
        .and_then(|c| c.strip_prefix('-'))
    else {
        return false;
    };
    let b = core.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(u8::is_ascii_hexdigit)
}

fn is_staging_leftover(name: &str, job: &str) -> bool {
    let core = if let Some(rest) = name.strip_prefix("..") {
        let Some(rest) = rest.strip_suffix(".partial") else {
            return false;
        };
        match rest.rsplit_once('.') {
            Some((core, tag)) if tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
                core
            }
            _ => return false,
        }
    } else if let Some(rest) = name.strip_prefix('.') {
        rest
    } else {
        return false;
    };
    let Some(core) = core.strip_suffix(".staging") else {
        return false;
    };
    let Some(rest) = core.strip_prefix(job).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    // YYYYmmddTHHMMSSZ-<row>
    let b = rest.as_bytes();
    b.len() > 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(u8::is_ascii_digit)
}

/// Remove the temporary files of `job`'s sessions from `dest`. Only call this holding the
/// job's lock (otherwise a running session's files would go). Returns what was removed.
pub fn sweep_leftovers(dest: &Path, job: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    // In object storage an unfinished upload is invisible and leaves no name to sweep; the
    // bucket's lifecycle rule aborts it (README, S3).
    if Location::parse(dest).is_ok_and(|l| l.is_remote()) {
        return removed;
    }
    let Ok(entries) = std::fs::read_dir(dest) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_leftover(name, job) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Mark sessions whose process died as interrupted, and remove their temporary files when
/// their job's lock can be taken. A running row is stale if its pid is gone, or if its
/// job's lock is free (the pid was reused by an unrelated process). Returns the rows
/// marked.
pub fn recover_stale(cx: &Context<'_>, events: &dyn SessionEvents) -> JobResult<Vec<SessionRow>> {
    recover(cx, None, events)
}

/// [`recover_stale`] for one job whose lock the caller holds.
fn recover(
    cx: &Context<'_>,
    held: Option<&str>,
    events: &dyn SessionEvents,
) -> JobResult<Vec<SessionRow>> {
    let mut marked = Vec::new();
    for row in cx.catalog.running()? {
        let ours = held == Some(row.job.as_str());
        if held.is_some() && !ours {
            continue;
        }
        let lock = if ours {
            None
        } else {
            cx.locks.try_job(&row.job)?
        };
        let stale = ours || lock.is_some() || !pid_alive(row.pid);
        if !stale {
            continue;
        }
        if cx.catalog.mark_interrupted(row.id, &died_reason(row.pid))? {
            events.recovered(&row);
            if let Some(r) = cx.catalog.get(row.id)? {
                marked.push(r);
            }
        }
        if ours || lock.is_some() {
            sweep_leftovers(&row.destination, &row.job);
        }
    }
    Ok(marked)
}

/// Run one session of `job` now. See the module docs for what happens on `stop`.
pub fn run_session(
    cx: &Context<'_>,
    job: &ResolvedJob,
    trigger: Trigger,
    mode: LockMode,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<SessionOutcome> {
    let name = job.job.name.as_str();
    let _lock = match mode {
        LockMode::Fail => cx.locks.try_job(name)?.ok_or_else(|| JobError::Busy {
            job: name.to_string(),
            pid: cx.locks.job_holder(name),
        })?,
        LockMode::Wait => cx
            .locks
            .wait_job(name, stop, &mut |pid| events.waiting(name, pid))?
            .ok_or_else(|| JobError::Cancelled {
                job: name.to_string(),
            })?,
    };
    if stop.load(Ordering::SeqCst) {
        return Err(JobError::Cancelled {
            job: name.to_string(),
        });
    }
    recover(cx, Some(name), events)?;
    let dest = job.job.destination.value.clone();
    sweep_leftovers(&dest, name);

    let started = Utc::now();
    let id = cx
        .catalog
        .begin(name, trigger, &dest, started.timestamp_millis())?;
    events.started(name, id, trigger);
    let session_id = match new_session_id() {
        Ok(sid) => sid,
        Err(e) => return fail_before_start(cx, id, e.into()),
    };
    let archive = dest.join(archive_name(name, started, &session_id));
    let mut opts = job.backup_options(archive.clone());
    opts.session_id = Some(session_id);
    let cancel = Arc::new(AtomicBool::new(false));
    opts.cancel = Some(Arc::clone(&cancel));
    let recipients = job.recipients.clone();
    let abandoned = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let spawned = {
        let abandoned = Arc::clone(&abandoned);
        let archive = archive.clone();
        std::thread::Builder::new()
            .name("coffer-session".into())
            .spawn(move || {
                let refs: Vec<&dyn Recipient> =
                    recipients.iter().map(|r| r as &dyn Recipient).collect();
                let result = backup::backup(&opts, &refs, &Forward(tx.clone()));
                if abandoned.load(Ordering::SeqCst) {
                    // The session was recorded as interrupted: an archive it completed
                    // anyway must not stay behind uncatalogued.
                    if result.is_ok() {
                        let _ = Location::parse(&archive).and_then(|l| storage::delete(&l));
                    }
                    return;
                }
                let _ = tx.send(Msg::Done(result));
            })
    };
    if let Err(e) = spawned {
        return fail_before_start(cx, id, JobError::io(&archive, e));
    }

    let mut warnings: Vec<String> = Vec::new();
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break None;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Warning(w)) => {
                events.warning(name, &w);
                if warnings.len() < super::catalog::MAX_STORED_WARNINGS {
                    warnings.push(format!("{}: {}", w.path.display(), w.message));
                }
            }
            Ok(Msg::Done(r)) => break Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Some(Err(crate::Error::Crypto(
                    "the backup thread ended without a result (panic)".into(),
                )));
            }
        }
    };

    let Some(result) = result else {
        // Ask the backup to stop and give it a moment to remove its partial file or abort
        // its upload; a backup stuck in a slow read is abandoned instead (see module docs).
        cancel.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + CANCEL_GRACE;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Msg::Done(_)) | Err(_) => break,
                Ok(Msg::Warning(_)) => {}
            }
        }
        abandoned.store(true, Ordering::SeqCst);
        sweep_leftovers(&dest, name);
        cx.catalog.mark_interrupted(id, STOPPED_REASON)?;
        return finish_outcome(cx, id, None, None);
    };
    match result {
        Ok(report) => {
            let state = if report.warnings.is_empty() {
                SessionState::Succeeded
            } else {
                SessionState::Warnings
            };
            cx.catalog.finish(
                id,
                state,
                &Finish {
                    session_id: Some(hex(&report.session_id)),
                    archive: Some(archive),
                    files: Some(report.totals.files),
                    dirs: Some(report.totals.dirs),
                    symlinks: Some(report.totals.symlinks),
                    bytes_read: Some(report.bytes_read),
                    bytes_written: Some(report.bytes_written),
                    warning_count: report.warnings.len() as u64,
                    warnings,
                    error: None,
                },
            )?;
            finish_outcome(cx, id, Some(report), None)
        }
        Err(e) => {
            cx.catalog.finish(
                id,
                SessionState::Failed,
                &Finish {
                    warning_count: warnings.len() as u64,
                    warnings,
                    error: Some(e.to_string()),
                    ..Finish::default()
                },
            )?;
            finish_outcome(cx, id, None, Some(e))
        }
    }
}

/// How long a stopped session waits for its backup to clean up before abandoning it.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Record a session that failed before its backup began.
fn fail_before_start(cx: &Context<'_>, id: i64, err: JobError) -> JobResult<SessionOutcome> {
    cx.catalog.finish(
        id,
        SessionState::Failed,
        &Finish {
            error: Some(err.to_string()),
            ..Finish::default()
        },
    )?;
    Err(err)
}

fn finish_outcome(
    cx: &Context<'_>,
    id: i64,
    report: Option<BackupReport>,
    error: Option<crate::Error>,
) -> JobResult<SessionOutcome> {
    let row = cx.catalog.get(id)?.ok_or_else(|| {
        JobError::catalog(cx.catalog.path(), rusqlite::Error::QueryReturnedNoRows)
    })?;
    Ok(SessionOutcome { row, report, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            archive_name("home", t, &[0xab, 0xcd, 0xef, 0x01, 0x23, 0x45]),
            "home-20240506T070809Z-abcdef01.coffer"
        );
        assert_eq!(
            staging_name("home", t, 12),
            ".home-20240506T070809Z-12.staging"
        );
    }

    #[test]
    fn partial_archive_of_a_session_is_a_leftover_and_nothing_else() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = archive_name("home", t, &[0xab, 0xcd, 0xef, 0x01, 2, 3]);
        let partial = format!(".{name}.0badf00d.partial");
        assert!(is_leftover(&partial, "home"));
        assert!(!is_leftover(&partial, "hom"));
        assert!(
            !is_leftover(&name, "home"),
            "a finished archive is never swept"
        );
        assert!(!is_leftover(&format!(".{name}.0badf00.partial"), "home"));
        assert!(!is_leftover(&format!(".{name}.0badf00d"), "home"));
        assert!(!is_leftover(
            ".home-20240506T070809Z-zzzzzzzz.coffer.0badf00d.partial",
            "home"
        ));
    }
    #[test]
    fn leftovers_are_recognised_per_job() {
        let staging = ".home-20240506T070809Z-12.staging";
        let partial = "..home-20240506T070809Z-12.staging.0badf00d.partial";
        assert!(is_leftover(staging, "home"));
        assert!(is_leftover(partial, "home"));
        // Another job whose name starts with this one's, and final archives, are not.
        assert!(!is_leftover(".home-2-20240506T070809Z-12.staging", "home"));
        assert!(is_leftover(".home-2-20240506T070809Z-12.staging", "home-2"));
        assert!(!is_leftover(
            "home-20240506T070809Z-abcdef01.coffer",
            "home"
        ));
        assert!(!is_leftover(
            "..home-20240506T070809Z-12.staging.xyz.partial",
            "home"
        ));
        assert!(!is_leftover(".home-20240506T070809Z-.staging", "home"));
    }
}
