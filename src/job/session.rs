//! One job session: take the job's lock, record the session, run the backup, name the
//! archive, record the outcome.
//!
//! The session id is drawn first, so the archive is written straight to its final name,
//! `DEST/<job>-<YYYYmmddTHHMMSSZ>-<first 8 hex digits of the session id>.coffer`, through
//! the destination's own atomic write: a hidden `.NAME.XXXXXXXX.partial` file renamed when
//! complete on a local disk, a multipart upload completed at the end in object storage (no
//! rename exists there, and a write-only key could not copy). Nothing with a `.coffer`
//! name is ever incomplete. Names, and recognising what an unfinished session left behind,
//! are [`crate::storage::naming`]'s.
//!
//! **Stopping.** [`run_session`] watches a stop flag (set by the binary's SIGTERM/SIGINT
//! handler) while the backup runs on its own thread. When the flag is set, it cancels the
//! backup (which then removes its partial file or aborts its upload, as for any failure),
//! waits a few seconds for that, marks the session `interrupted`, and returns; a backup
//! stuck in a slow read is abandoned instead, and if it completes later it deletes its own
//! archive. The caller is expected to exit the process. Leftovers of a process that was
//! killed outright (`kill -9`, power loss) are removed, and its session marked
//! interrupted, by [`recover_stale`] on a later start; in object storage an upload cut
//! off that way stays invisible until the bucket's lifecycle rule aborts it.
//!
//! **Notifications.** A recorded session sends the job's `notify` pings
//! ([`super::notify`]): start when it begins (on its own thread), success or failure when it
//! ends. A ping that fails is only reported ([`SessionEvents::notify_failed`]).

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::catalog::{Catalog, Finish, SessionRow, SessionState, Trigger};
use super::chains;
use super::config::ResolvedJob;
use super::error::{JobError, JobResult};
use super::lock::{Lock, LockDir, pid_alive};
use super::notify;
use crate::backup::{self, BackupReport};
use crate::chain::ChainOptions;
use crate::format::hex;
use crate::keys::{SessionId, new_session_id};
use crate::progress::{Observer, Warning};
use crate::recipient::Recipient;
use crate::storage::{self, Location};

use crate::storage::naming::{archive_name, sweep_leftovers};

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
    /// The session was recorded and the backup starts; `row_id` is the session's catalog row, the number `history` shows.
    fn started(&self, _job: &str, _row_id: i64, _trigger: Trigger) {}
    /// A file was skipped or could not be read (the session will end with warnings).
    fn warning(&self, _job: &str, _warning: &Warning) {}
    /// A session of a dead process was found and marked interrupted.
    fn recovered(&self, _row: &SessionRow) {}
    /// A notification ping (`notify`) failed; the session is not changed by it.
    fn notify_failed(&self, _job: &str, _error: &super::notify::PingError) {}
    /// The copies to one `copy_to` target ran (after a session, or on `copy_schedule`).
    fn copied(&self, _run: &super::copies::TargetRun) {}
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

/// How to run one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    pub trigger: Trigger,
    pub lock: LockMode,
    /// Make this session a full even if the job's chain could take an incremental
    /// (`job run --full`). No effect on a job without `full_every`/`active_full`: every
    /// session of such a job is a full.
    pub force_full: bool,
}

impl SessionOptions {
    pub fn new(trigger: Trigger, lock: LockMode) -> Self {
        SessionOptions {
            trigger,
            lock,
            force_full: false,
        }
    }
}

/// Run one session of `job` now. See the module docs for what happens on `stop`.
pub fn run_session(
    cx: &Context<'_>,
    job: &ResolvedJob,
    how: SessionOptions,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<SessionOutcome> {
    let name = job.job.name.as_str();
    let trigger = how.trigger;
    let _lock = lock_job(cx, name, how.lock, stop, events)?;
    if stop.load(Ordering::SeqCst) {
        return Err(JobError::Cancelled {
            job: name.to_string(),
        });
    }
    recover(cx, Some(name), events)?;
    let dest = job.job.destination.value.clone();
    sweep_leftovers(&dest, name);

    let started = Utc::now();
    // Decided under the lock, before the session is recorded: the catalog's last full is
    // the one `active_full` counts from.
    let chain = chains::chain_options(
        cx.catalog,
        &job.job,
        how.force_full,
        &started.with_timezone(&chrono::Local),
    )?;
    let row_id = cx
        .catalog
        .begin(name, trigger, &dest, started.timestamp_millis())?;
    events.started(name, row_id, trigger);
    let notify = &job.job.monitoring.notify;
    let pending = notify::ping_start(notify);
    let result = run_started(cx, job, row_id, started, chain, stop, events)
        .and_then(|o| copy_after(cx, job, o, stop, events));
    let outcome = match &result {
        Ok(o) => Ok(&o.row),
        Err(e) => Err(e.to_string()),
    };
    for e in notify::ping_end(pending, notify, outcome) {
        events.notify_failed(name, &e);
    }
    result
}

/// The recorded session `row_id` of `job`, from its start to its outcome.
fn run_started(
    cx: &Context<'_>,
    job: &ResolvedJob,
    row_id: i64,
    started: chrono::DateTime<Utc>,
    chain: Option<ChainOptions>,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<SessionOutcome> {
    let name = job.job.name.as_str();
    let dest = job.job.destination.value.clone();
    let session_id = match new_session_id() {
        Ok(sid) => sid,
        Err(e) => return fail_before_start(cx, row_id, e.into()),
    };
    let archive = dest.join(archive_name(name, started, &session_id));
    let backup = match BackupThread::spawn(job, &archive, session_id, chain) {
        Ok(b) => b,
        Err(e) => return fail_before_start(cx, row_id, JobError::io(&archive, e)),
    };
    let mut warnings = Vec::new();
    match backup.wait(name, stop, events, &mut warnings) {
        Some(result) => record_result(cx, row_id, archive, result, warnings),
        None => {
            backup.stop();
            sweep_leftovers(&dest, name);
            cx.catalog.mark_interrupted(row_id, STOPPED_REASON)?;
            finish_outcome(cx, row_id, None, None)
        }
    }
}

/// The copies to the job's `copy_to` targets after a session that completed (unless
/// `copy_schedule` runs them), still under the job's lock and before the end is notified:
/// a target that is down or a copy that failed makes the session `warnings`, one warning
/// line per problem naming the target ([`super::copies`]).
fn copy_after(
    cx: &Context<'_>,
    job: &ResolvedJob,
    mut outcome: SessionOutcome,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<SessionOutcome> {
    if !outcome.state().completed() || !job.job.copies.after_sessions() {
        return Ok(outcome);
    }
    let runs = super::copies::run_copies(cx.catalog, &job.job, Some(outcome.row.id), stop, events)?;
    let problems: Vec<String> = runs.iter().flat_map(|r| r.problems()).collect();
    if !problems.is_empty()
        && let Some(row) = cx.catalog.add_warnings(outcome.row.id, &problems)?
    {
        outcome.row = row;
    }
    Ok(outcome)
}

/// Take the job's lock: fail at once if another process holds it, or wait for it (a stop
/// signal ends the wait).
fn lock_job(
    cx: &Context<'_>,
    name: &str,
    mode: LockMode,
    stop: &AtomicBool,
    events: &dyn SessionEvents,
) -> JobResult<Lock> {
    match mode {
        LockMode::Fail => cx.locks.try_job(name)?.ok_or_else(|| JobError::Busy {
            job: name.to_string(),
            pid: cx.locks.job_holder(name),
        }),
        LockMode::Wait => cx
            .locks
            .wait_job(name, stop, &mut |pid| events.waiting(name, pid))?
            .ok_or_else(|| JobError::Cancelled {
                job: name.to_string(),
            }),
    }
}

/// The backup of one session, running on its own thread so the session can watch the
/// stop flag while it runs.
struct BackupThread {
    rx: mpsc::Receiver<Msg>,
    /// Asks the backup to stop (it removes its partial file or aborts its upload).
    cancel: Arc<AtomicBool>,
    /// Set when the session gave up on the backup: an archive it completes anyway is
    /// deleted by the thread itself.
    abandoned: Arc<AtomicBool>,
}

impl BackupThread {
    fn spawn(
        job: &ResolvedJob,
        archive: &Path,
        session_id: SessionId,
        chain: Option<ChainOptions>,
    ) -> std::io::Result<Self> {
        let mut opts = job.backup_options(archive.to_path_buf());
        opts.session_id = Some(session_id);
        opts.chain = chain;
        let cancel = Arc::new(AtomicBool::new(false));
        opts.cancel = Some(Arc::clone(&cancel));
        let recipients = job.recipients.clone();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_abandoned = Arc::clone(&abandoned);
        let archive = archive.to_path_buf();
        std::thread::Builder::new()
            .name("coffer-session".into())
            .spawn(move || {
                let refs: Vec<&dyn Recipient> =
                    recipients.iter().map(|r| r as &dyn Recipient).collect();
                let result = backup::backup(&opts, &refs, &Forward(tx.clone()));
                if thread_abandoned.load(Ordering::SeqCst) {
                    // The session was recorded as interrupted: an archive it completed
                    // anyway must not stay behind uncatalogued.
                    if result.is_ok() {
                        let _ = Location::parse(&archive).and_then(|l| storage::delete(&l));
                    }
                    return;
                }
                let _ = tx.send(Msg::Done(result));
            })?;
        Ok(BackupThread {
            rx,
            cancel,
            abandoned,
        })
    }

    /// Pass warnings on (and keep the first ones for the catalog) until the backup ends.
    /// None: the stop flag was set first.
    fn wait(
        &self,
        name: &str,
        stop: &AtomicBool,
        events: &dyn SessionEvents,
        warnings: &mut Vec<String>,
    ) -> Option<crate::Result<BackupReport>> {
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Msg::Warning(w)) => {
                    events.warning(name, &w);
                    if warnings.len() < super::catalog::MAX_STORED_WARNINGS {
                        warnings.push(format!("{}: {}", w.path.display(), w.message));
                    }
                }
                Ok(Msg::Done(r)) => return Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(Err(crate::Error::Internal(
                        "the backup thread ended without a result (panic)".into(),
                    )));
                }
            }
        }
    }

    /// Ask the backup to stop and give it a moment to remove its partial file or abort its
    /// upload; a backup stuck in a slow read is abandoned instead (see module docs).
    fn stop(self) {
        self.cancel.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + CANCEL_GRACE;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(Msg::Done(_)) | Err(_) => break,
                Ok(Msg::Warning(_)) => {}
            }
        }
        self.abandoned.store(true, Ordering::SeqCst);
    }
}

/// Record how the backup of a session ended: succeeded or with warnings (with the archive
/// and its totals), or failed (with the error).
fn record_result(
    cx: &Context<'_>,
    row_id: i64,
    archive: PathBuf,
    result: crate::Result<BackupReport>,
    warnings: Vec<String>,
) -> JobResult<SessionOutcome> {
    match result {
        Ok(report) => {
            let state = if report.warnings.is_empty() {
                SessionState::Succeeded
            } else {
                SessionState::Warnings
            };
            cx.catalog.finish(
                row_id,
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
                    kind: Some(report.chain.kind),
                    parents: report.chain.parents.iter().map(|p| hex(p)).collect(),
                    full_reason: report.chain.full_reason.clone(),
                    files_unchanged: Some(report.chain.files_unchanged),
                    bytes_referenced: Some(report.chain.bytes_referenced),
                },
            )?;
            finish_outcome(cx, row_id, Some(report), None)
        }
        Err(e) => {
            cx.catalog.finish(
                row_id,
                SessionState::Failed,
                &Finish {
                    warning_count: warnings.len() as u64,
                    warnings,
                    error: Some(e.to_string()),
                    ..Finish::default()
                },
            )?;
            finish_outcome(cx, row_id, None, Some(e))
        }
    }
}

/// How long a stopped session waits for its backup to clean up before abandoning it.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Record a session that failed before its backup began.
fn fail_before_start(cx: &Context<'_>, row_id: i64, err: JobError) -> JobResult<SessionOutcome> {
    cx.catalog.finish(
        row_id,
        SessionState::Failed,
        &Finish {
            error: Some(err.to_string()),
            ..Finish::default()
        },
    )?;
    Err(err)
}

/// The outcome of a session as the catalog recorded it.
fn finish_outcome(
    cx: &Context<'_>,
    row_id: i64,
    report: Option<BackupReport>,
    error: Option<crate::Error>,
) -> JobResult<SessionOutcome> {
    let row = cx.catalog.get(row_id)?.ok_or_else(|| {
        JobError::catalog(cx.catalog.path(), rusqlite::Error::QueryReturnedNoRows)
    })?;
    Ok(SessionOutcome { row, report, error })
}
