//! `coffer job list|check|run`, `coffer daemon`, `coffer history` and `coffer prune`:
//! arguments, messages and exit codes over the library's `coffer::job`.
//!
//! Errors are printed here (every problem of a job file gets its own `error:` line, then
//! one `hint:` line), so each entry point returns the exit code: 0 success, 1 finished with
//! warnings, 2 failed (as `coffer backup`).

use chrono::{DateTime, Local, Utc};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use coffer::job::catalog::{SessionRow, SessionState, Trigger};
use coffer::job::lock::LockDir;
use coffer::job::paths::{self, StateDir};
use coffer::job::prune::{self, PruneReport};
use coffer::job::scheduler::{self, DaemonEvent, DaemonEvents, DaemonOptions};
use coffer::job::session::{self, Context, LockMode, SessionEvents, SessionOutcome};
use coffer::job::{Catalog, JobError, JobFile};
use coffer::progress::Warning;

const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 2;

/// Where the job file and the state folder are. Every job command takes both, even one
/// that reads only one of them, so scripts can pass the same flags to all.
#[derive(Args, Clone, Debug)]
pub struct Locations {
    /// Job file [default: $COFFER_CONFIG, $XDG_CONFIG_HOME/coffer/jobs.toml or ~/.config/coffer/jobs.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of the session catalog and locks [default: $COFFER_STATE_DIR, $XDG_STATE_HOME/coffer or ~/.local/state/coffer]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Subcommand)]
enum JobCommand {
    /// List jobs with their schedule, next run time and last outcome
    #[command(after_help = "Example:\n  coffer job list\n  coffer job list --json")]
    List(JobListArgs),
    /// Validate the job file, load every recipient key, test destinations and sources
    #[command(after_help = "Example:\n  coffer job check --config /etc/coffer/jobs.toml")]
    Check(JobCheckArgs),
    /// Run one session of a job now (exit code as for backup)
    #[command(
        after_help = "Example:\n  coffer job run home\n  coffer job run home --wait --prune   # queue behind a running session, apply retention after"
    )]
    Run(JobRunArgs),
}

#[derive(Args)]
struct JobListArgs {
    #[command(flatten)]
    loc: Locations,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JobCheckArgs {
    #[command(flatten)]
    loc: Locations,
}

#[derive(Args)]
struct JobRunArgs {
    /// Name of the job (a [job.NAME] table of the job file)
    job: String,
    #[command(flatten)]
    loc: Locations,
    /// If the job is already running, wait for that session to end instead of failing
    #[arg(long)]
    wait: bool,
    /// Apply the job's retention after a session that completed
    #[arg(long)]
    prune: bool,
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
}

/// `coffer daemon`
#[derive(Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    loc: Locations,
    /// Run whatever is due now, then exit (for tests and for cron)
    #[arg(long)]
    once: bool,
}

/// `coffer history`
#[derive(Args)]
pub struct HistoryArgs {
    /// Only this job's sessions
    job: Option<String>,
    /// The job file is accepted but not read: it names no state folder, and history must
    /// work when the job file is broken or gone.
    #[command(flatten)]
    loc: Locations,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Show at most this many sessions, newest first (0: all)
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: usize,
}

/// `coffer prune`
#[derive(Args)]
pub struct PruneArgs {
    /// Only this job (default: every job with a retention policy)
    job: Option<String>,
    #[command(flatten)]
    loc: Locations,
    /// List what would be deleted and why; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

// ---- entry points (called from main.rs) -----------------------------------------------

pub fn run_job(a: JobArgs) -> anyhow::Result<u8> {
    report(match a.command {
        JobCommand::List(a) => job_list(a),
        JobCommand::Check(a) => job_check(a),
        JobCommand::Run(a) => job_run(a),
    })
}

pub fn run_daemon(a: DaemonArgs) -> anyhow::Result<u8> {
    report(daemon(a))
}

pub fn run_history(a: HistoryArgs) -> anyhow::Result<u8> {
    report(history(a))
}

pub fn run_prune(a: PruneArgs) -> anyhow::Result<u8> {
    report(prune_cmd(a))
}

/// Print a job error (all problems of a job file, then one hint) and turn it into exit 2.
/// Anything else (stdout closed or failing) goes up to `main`, which handles it for every
/// command alike.
fn report(result: anyhow::Result<u8>) -> anyhow::Result<u8> {
    match result.map_err(|e| e.downcast::<JobError>()) {
        Ok(code) => Ok(code),
        Err(Ok(e)) => {
            print_error(&e);
            Ok(EXIT_FAILED)
        }
        Err(Err(other)) => Err(other),
    }
}

fn print_error(e: &JobError) {
    match e {
        JobError::Config(errors) => {
            for c in errors {
                eprintln!("error: {}", safe(&c.to_string()));
            }
        }
        other => eprintln!("error: {}", safe(&other.to_string())),
    }
    if let Some(h) = e.hint() {
        eprintln!("hint: {}", safe(&h));
    }
}

// ---- shared helpers -------------------------------------------------------------------

struct Opened {
    catalog: Catalog,
    locks: LockDir,
}

impl Opened {
    fn cx(&self) -> Context<'_> {
        Context {
            catalog: &self.catalog,
            locks: &self.locks,
        }
    }
}

/// Open the catalog and mark sessions of dead processes interrupted.
fn open_state(flag: Option<&Path>) -> Result<Opened, JobError> {
    let state = StateDir::resolve(flag, &paths::process_env)?;
    let catalog = Catalog::open(&state)?;
    let locks = LockDir::new(state.locks_dir());
    let opened = Opened { catalog, locks };
    session::recover_stale(&opened.cx(), &Quiet)?;
    Ok(opened)
}

fn load_config(loc: &Locations) -> Result<JobFile, JobError> {
    let path = paths::config_path(loc.config.as_deref(), &paths::process_env)?;
    let file = JobFile::load(&path)?;
    #[cfg(feature = "s3")]
    coffer::storage::s3::set_settings(file.s3.clone());
    Ok(file)
}

/// A flag set by SIGTERM or SIGINT; a second signal ends the process at once (exit 2).
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, JobError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        let io = |e| JobError::Io {
            path: PathBuf::from("signal handler"),
            source: e,
        };
        signal_hook::flag::register_conditional_shutdown(
            sig,
            EXIT_FAILED as i32,
            Arc::clone(&flag),
        )
        .map_err(io)?;
        signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(io)?;
    }
    Ok(flag)
}

struct Quiet;
impl SessionEvents for Quiet {}

use crate::cli_ui::{human, outln, print_json, safe, safe_path};

fn local_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// One line of the daemon's log. Lines quote file names and archive paths, so the message
/// is escaped here, once for every event.
fn log(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        safe(msg.as_ref())
    );
}

/// "succeeded", "finished with warnings", "failed", "interrupted".
fn outcome_words(state: SessionState) -> &'static str {
    match state {
        SessionState::Warnings => "finished with warnings",
        other => other.as_str(),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string_lossy().into_owned())
}

// ---- job list -------------------------------------------------------------------------

fn job_list(a: JobListArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let st = open_state(a.loc.state_dir.as_deref())?;
    let now = Local::now();
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for job in &file.jobs {
        let next = job.schedule.as_ref().and_then(|s| s.value.next_after(&now));
        let last = st.catalog.last_session(&job.name)?;
        if a.json {
            docs.push(serde_json::json!({
                "name": job.name,
                "schedule": job.schedule.as_ref().map(|s| s.value.expr()),
                "next_run": next.map(|t| t.to_rfc3339()),
                "destination": job.destination.value.to_string_lossy(),
                "retention": job.retention.map(|r| r.to_string()),
                "last": last.as_ref().map(session_json),
            }));
        } else {
            rows.push([
                job.name.clone(),
                job.schedule
                    .as_ref()
                    .map(|s| s.value.expr().to_string())
                    .unwrap_or_else(|| "-".into()),
                next.map(|t| t.format("%Y-%m-%d %H:%M %:z").to_string())
                    .unwrap_or_else(|| "-".into()),
                last.map(|l| format!("{} {}", l.state, local_time(l.started_at_ms)))
                    .unwrap_or_else(|| "never run".into()),
            ]);
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "config": file.path.to_string_lossy(), "jobs": docs }))?;
    } else if rows.is_empty() {
        outln!("no jobs in {}", safe_path(&file.path))?;
    } else {
        print_table(&["JOB", "SCHEDULE", "NEXT RUN", "LAST"], &rows)?;
    }
    Ok(EXIT_OK)
}

/// Cells are escaped here: job names and archive paths are shown as text.
fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.each_ref().map(|c| safe(c).into_owned()))
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        outln!("{}", s.trim_end())
    };
    line(head.to_vec())?;
    for r in rows {
        line(r.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

// ---- job check ------------------------------------------------------------------------

fn job_check(a: JobCheckArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let mut errors = Vec::new();
    let resolved = match file.resolve_all(&file.jobs) {
        Ok(r) => r,
        Err(JobError::Config(e)) => {
            errors.extend(e);
            Vec::new()
        }
        Err(other) => return Err(other.into()),
    };
    for job in &file.jobs {
        errors.extend(file.check_sources(job));
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(JobError::Config(errors).into());
    }
    let now = Local::now();
    for r in &resolved {
        let j = &r.job;
        let schedule = match &j.schedule {
            Some(s) => format!(
                "schedule {:?} (next {})",
                s.value.expr(),
                s.value
                    .next_after(&now)
                    .map(|t| t.format("%Y-%m-%d %H:%M %:z").to_string())
                    .unwrap_or_else(|| "never".into())
            ),
            None => "no schedule".into(),
        };
        outln!(
            "ok: job {}: {} source(s), {} recipient(s), destination {} writable, {}, retention: {}",
            safe(&j.name),
            j.sources.len(),
            r.recipients.len(),
            safe_path(&j.destination.value),
            schedule,
            j.retention
                .map(|p| p.to_string())
                .unwrap_or_else(|| "keep every archive".into())
        )?;
    }
    if resolved.is_empty() {
        outln!("ok: {} defines no jobs", safe_path(&file.path))?;
    }
    Ok(EXIT_OK)
}

// ---- job run --------------------------------------------------------------------------

/// Prints warnings (and the wait) as they happen.
struct RunEvents;
impl SessionEvents for RunEvents {
    fn waiting(&self, job: &str, holder: Option<u32>) {
        let pid = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
        eprintln!(
            "job {} is running{pid}; waiting for it to finish",
            safe(job)
        );
    }
    fn warning(&self, _job: &str, w: &Warning) {
        eprintln!("warning: {}: {}", safe_path(&w.path), safe(&w.message));
    }
}

fn job_run(a: JobRunArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let job = file.job(&a.job)?;
    let resolved = file.resolve(job)?;
    let stop = stop_flag()?;
    let st = open_state(a.loc.state_dir.as_deref())?;
    let mode = if a.wait {
        LockMode::Wait
    } else {
        LockMode::Fail
    };
    let outcome = session::run_session(
        &st.cx(),
        &resolved,
        Trigger::Manual,
        mode,
        &stop,
        &RunEvents,
    )?;
    // A closed stdout (`| head`) must not skip the retention that was asked for: the
    // printing error is returned after it.
    let printed = print_outcome(&outcome, a.quiet);
    let mut code = outcome.row.state.exit_code();
    if a.prune && outcome.state().completed() && job.retention.is_some() {
        let report = prune::prune(&st.catalog, job, false)?;
        if !a.quiet && printed.is_ok() {
            print_prune_text(&report)?;
        }
        if !report.failed.is_empty() {
            code = EXIT_FAILED;
        }
    }
    printed.map(|()| code)
}

fn print_outcome(o: &SessionOutcome, quiet: bool) -> anyhow::Result<()> {
    let row = &o.row;
    match row.state {
        SessionState::Succeeded | SessionState::Warnings => {
            if !quiet && let Some(r) = &o.report {
                let t = &r.totals;
                let secs = r.duration.as_secs_f64().max(1e-9);
                outln!(
                    "job {}: session {} {}: {} files, {} folders, {} links: {} read, {} written in {:.2}s",
                    safe(&row.job),
                    row.id,
                    outcome_words(row.state),
                    t.files,
                    t.dirs,
                    t.symlinks,
                    human(r.bytes_read),
                    human(r.bytes_written),
                    secs
                )?;
                outln!("archive:    {}", safe_path(&r.archive))?;
                outln!("session:    {}", row.session_id.as_deref().unwrap_or("-"))?;
            }
            if row.state == SessionState::Warnings {
                eprintln!(
                    "finished with {} warning(s); the archive is complete, but the files named above are missing from it or changed while they were read",
                    row.warning_count
                );
            }
        }
        SessionState::Failed => match &o.error {
            Some(e) => {
                eprintln!("error: {}", safe(&format!("job {}: {e}", row.job)));
                if let Some(h) = e.hint() {
                    eprintln!("hint: {}", safe(&h));
                }
            }
            None => eprintln!(
                "error: job {}: {}",
                safe(&row.job),
                safe(row.error.as_deref().unwrap_or("failed"))
            ),
        },
        SessionState::Interrupted | SessionState::Running => {
            eprintln!(
                "error: job {}: session {} interrupted: {}",
                safe(&row.job),
                row.id,
                safe(row.error.as_deref().unwrap_or("stopped"))
            );
        }
    }
    Ok(())
}

// ---- daemon ---------------------------------------------------------------------------

/// The daemon's log on stderr, one timestamped line per event.
struct DaemonLog;

impl SessionEvents for DaemonLog {
    fn started(&self, job: &str, session: i64, trigger: Trigger) {
        log(format!(
            "job {job}: session {session} started ({})",
            trigger.as_str()
        ));
    }
    fn warning(&self, job: &str, w: &Warning) {
        log(format!(
            "job {job}: warning: {}: {}",
            w.path.display(),
            w.message
        ));
    }
    fn recovered(&self, row: &SessionRow) {
        log(format!(
            "job {}: session {} (pid {}) was left running by a process that is gone; marked interrupted",
            row.job, row.id, row.pid
        ));
    }
}

impl DaemonEvents for DaemonLog {
    fn event(&self, e: &DaemonEvent<'_>) {
        match e {
            DaemonEvent::Ready { jobs } => {
                let list: Vec<String> = jobs
                    .iter()
                    .map(|(name, next)| match next {
                        Some(t) => format!("{name} (next {})", t.format("%Y-%m-%d %H:%M %:z")),
                        None => format!("{name} (never)"),
                    })
                    .collect();
                log(format!(
                    "daemon started (pid {}): {}",
                    std::process::id(),
                    list.join(", ")
                ));
            }
            DaemonEvent::Due {
                job,
                scheduled,
                trigger,
            } => {
                let what = if *trigger == Trigger::CatchUp {
                    "missed while the daemon was down; catching up"
                } else {
                    "due"
                };
                log(format!(
                    "job {job}: {what} (scheduled {})",
                    scheduled.format("%Y-%m-%d %H:%M %:z")
                ));
            }
            DaemonEvent::Finished { outcome } => {
                let r = &outcome.row;
                let took = r.duration_ms().map(seconds).unwrap_or_default();
                let detail = match r.state {
                    SessionState::Succeeded | SessionState::Warnings => format!(
                        "{} files, {} read, {} written, {} warning(s) -> {}",
                        r.files.unwrap_or(0),
                        human(r.bytes_read.unwrap_or(0)),
                        human(r.bytes_written.unwrap_or(0)),
                        r.warning_count,
                        r.archive
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                    _ => r.error.clone().unwrap_or_default(),
                };
                log(format!(
                    "job {}: session {} {} in {took}: {detail}",
                    r.job,
                    r.id,
                    outcome_words(r.state)
                ));
            }
            DaemonEvent::Skipped { job, error } => {
                log(format!("job {job}: not run: {error}"));
            }
            DaemonEvent::Pruned { report } => {
                let kept = report.plan.verdicts.iter().filter(|(_, v)| v.keep).count();
                let names: Vec<String> = report
                    .deleted
                    .iter()
                    .filter_map(|r| r.archive.as_deref().map(file_name))
                    .collect();
                let mut line = format!(
                    "job {}: retention kept {kept}, deleted {}",
                    report.plan.job,
                    names.len()
                );
                if !names.is_empty() {
                    line.push_str(&format!(" ({})", names.join(", ")));
                }
                for (row, err) in &report.failed {
                    line.push_str(&format!("; could not delete session {}: {err}", row.id));
                }
                log(line);
            }
            DaemonEvent::PruneFailed { job, error } => {
                log(format!("job {job}: retention failed: {error}"));
            }
            DaemonEvent::Idle { next } => {
                if let Some((job, t)) = next {
                    log(format!(
                        "idle; next: job {job} at {}",
                        t.format("%Y-%m-%d %H:%M %:z")
                    ));
                }
            }
            DaemonEvent::Stopping => log("stop signal received; no new sessions will start"),
        }
    }
}

fn daemon(a: DaemonArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let scheduled: Vec<_> = file
        .jobs
        .iter()
        .filter(|j| j.schedule.is_some())
        .cloned()
        .collect();
    if scheduled.is_empty() {
        return Err(JobError::NothingScheduled { file: file.path }.into());
    }
    // Every scheduled job is checked before any backup starts.
    let resolved = file.resolve_all(&scheduled)?;
    let stop = stop_flag()?;
    let st = open_state(a.loc.state_dir.as_deref())?;
    let summary = scheduler::run_daemon(
        &st.cx(),
        &resolved,
        DaemonOptions { once: a.once },
        &stop,
        &DaemonLog,
    )?;
    if summary.stopped {
        log("daemon stopped");
    }
    Ok(if a.once { summary.exit_code() } else { EXIT_OK })
}

// ---- history --------------------------------------------------------------------------

fn session_json(r: &SessionRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "job": r.job,
        "state": r.state.as_str(),
        "trigger": r.trigger,
        "pid": r.pid,
        "started_at": rfc3339_ms(r.started_at_ms),
        "started_at_unix_ms": r.started_at_ms,
        "finished_at": r.finished_at_ms.and_then(rfc3339_ms),
        "duration_secs": r.duration_ms().map(|d| d as f64 / 1000.0),
        "files": r.files,
        "dirs": r.dirs,
        "symlinks": r.symlinks,
        "bytes_read": r.bytes_read,
        "bytes_written": r.bytes_written,
        "archive": r.archive.as_ref().map(|p| p.to_string_lossy()),
        "session_id": r.session_id,
        "warning_count": r.warning_count,
        "warnings": r.warnings,
        "error": r.error,
        "archive_deleted": r.deleted_at_ms.is_some(),
        "deleted_reason": r.deleted_reason,
    })
}

fn history(a: HistoryArgs) -> anyhow::Result<u8> {
    let st = open_state(a.loc.state_dir.as_deref())?;
    let limit = (a.limit > 0).then_some(a.limit);
    let rows = st.catalog.sessions(a.job.as_deref(), limit)?;
    if a.json {
        let docs: Vec<_> = rows.iter().map(session_json).collect();
        print_json(&serde_json::json!({ "sessions": docs }))?;
        return Ok(EXIT_OK);
    }
    if rows.is_empty() {
        outln!("no sessions recorded")?;
        return Ok(EXIT_OK);
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let archive = match (&r.archive, &r.deleted_reason) {
                (Some(p), Some(_)) => format!("{} (deleted)", file_name(p)),
                (Some(p), None) => p.to_string_lossy().into_owned(),
                (None, _) => "-".into(),
            };
            [
                r.id.to_string(),
                safe(&r.job).into_owned(),
                local_time(r.started_at_ms),
                r.duration_ms().map(seconds).unwrap_or_else(|| "-".into()),
                r.state.to_string(),
                r.files.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                r.bytes_read.map(human).unwrap_or_else(|| "-".into()),
                safe(&archive).into_owned(),
            ]
        })
        .collect();
    let mut widths = [0usize; 8];
    let head = [
        "ID", "JOB", "STARTED", "DURATION", "OUTCOME", "FILES", "BYTES", "ARCHIVE",
    ];
    for (i, h) in head.iter().enumerate() {
        widths[i] = table
            .iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(h.len());
    }
    let fmt = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            if i + 1 == cells.len() {
                s.push_str(c);
            } else if i == 0 || i == 5 || i == 6 {
                s.push_str(&format!("{c:>w$}  "));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    outln!("{}", fmt(&head))?;
    for (row, cells) in rows.iter().zip(&table) {
        outln!(
            "{}",
            fmt(&cells.iter().map(String::as_str).collect::<Vec<_>>())
        )?;
        if let Some(e) = &row.error {
            outln!("      {}: {}", row.state, safe(e))?;
        }
        for w in row.warnings.iter().take(3) {
            outln!("      warning: {}", safe(w))?;
        }
        if row.warning_count > 3 {
            outln!("      ... and {} more warning(s)", row.warning_count - 3)?;
        }
    }
    Ok(EXIT_OK)
}

// ---- prune ----------------------------------------------------------------------------

fn prune_cmd(a: PruneArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let jobs: Vec<_> = match &a.job {
        Some(name) => vec![file.job(name)?.clone()],
        None => file
            .jobs
            .iter()
            .filter(|j| j.retention.is_some())
            .cloned()
            .collect(),
    };
    let st = open_state(a.loc.state_dir.as_deref())?;
    let mut reports = Vec::new();
    for job in &jobs {
        reports.push(prune::prune(&st.catalog, job, a.dry_run)?);
    }
    if a.json {
        let docs: Vec<_> = reports.iter().map(prune_json).collect();
        print_json(&serde_json::json!({ "dry_run": a.dry_run, "jobs": docs }))?;
    } else {
        if reports.is_empty() {
            outln!("no job has a retention policy; nothing to prune")?;
        }
        for r in &reports {
            print_prune_text(r)?;
        }
    }
    let failed = reports.iter().any(|r| !r.failed.is_empty());
    for r in &reports {
        for (row, err) in &r.failed {
            eprintln!(
                "error: {}",
                safe(&format!("job {}: session {}: {err}", r.plan.job, row.id))
            );
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

fn print_prune_text(r: &PruneReport) -> anyhow::Result<()> {
    let plan = &r.plan;
    let Some(policy) = plan.policy else {
        outln!(
            "job {}: no retention policy; every archive is kept",
            safe(&plan.job)
        )?;
        return Ok(());
    };
    outln!("job {}: {policy}", safe(&plan.job))?;
    for (row, v) in &plan.verdicts {
        let action = match (v.keep, r.dry_run) {
            (true, _) => "keep",
            (false, true) => "would delete",
            (false, false) => "deleted",
        };
        outln!(
            "  {action:<12}  {}  {}  ({})",
            local_time(row.started_at_ms),
            safe(&row.archive.as_deref().map(file_name).unwrap_or_default()),
            v.reason
        )?;
    }
    for row in &plan.missing {
        outln!(
            "  {:<12}  {}  {}  (file not found; no longer counted)",
            "missing",
            local_time(row.started_at_ms),
            safe(&row.archive.as_deref().map(file_name).unwrap_or_default())
        )?;
    }
    let n = plan.to_delete().count();
    if r.dry_run {
        outln!("  dry run: {n} archive(s) would be deleted; nothing was changed")?;
    } else {
        outln!("  {} archive(s) deleted", r.deleted.len())?;
    }
    Ok(())
}

fn prune_json(r: &PruneReport) -> serde_json::Value {
    let archives: Vec<_> = r
        .plan
        .verdicts
        .iter()
        .map(|(row, v)| {
            serde_json::json!({
                "id": row.id,
                "archive": row.archive.as_ref().map(|p| p.to_string_lossy()),
                "started_at": rfc3339_ms(row.started_at_ms),
                "keep": v.keep,
                "reason": v.reason,
                "deleted": r.deleted.iter().any(|d| d.id == row.id),
            })
        })
        .collect();
    let missing: Vec<_> = r
        .plan
        .missing
        .iter()
        .map(|row| serde_json::json!({"id": row.id, "archive": row.archive.as_ref().map(|p| p.to_string_lossy())}))
        .collect();
    serde_json::json!({
        "job": r.plan.job,
        "policy": r.plan.policy.map(|p| p.to_string()),
        "archives": archives,
        "missing": missing,
        "failed": r.failed.iter().map(|(row, e)| serde_json::json!({"id": row.id, "error": e})).collect::<Vec<_>>(),
    })
}
