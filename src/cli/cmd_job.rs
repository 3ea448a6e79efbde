//! `coffer job list|check|run`: the jobs of the job file, checked or run once now.

use chrono::{DateTime, Local};
use clap::{Args, Subcommand};

use coffer::chain::ChainKind;
use coffer::job::catalog::SessionRow;
use coffer::job::catalog::{SessionState, Trigger};
use coffer::job::prune;
use coffer::job::session::{self, LockMode, SessionEvents, SessionOptions, SessionOutcome};
use coffer::job::{JobError, ResolvedJob};
use coffer::progress::Warning;

use super::cmd_history::{chain_words, session_json};
use super::cmd_prune::print_prune_text;
use super::copies::run_summary;
use super::jobs::{Locations, load_config, open_state, outcome_words};
use super::report::{
    EXIT_FAILED, EXIT_OK, error_line, hint_line, local_time, minute, print_json, print_table,
    warnings_note,
};
use super::signals::stop_flag;
use super::ui::{human, outln, safe, safe_path};

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
        after_help = "Example:\n  coffer job run home\n  coffer job run home --wait --prune   # queue behind a running session, apply retention after\n  coffer job run home --full           # start a new chain (a job with full_every or active_full)"
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
    /// Make this session a full archive, starting a new chain (for a job with full_every
    /// or active_full; every session of another job is a full anyway)
    #[arg(long)]
    full: bool,
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: JobArgs) -> anyhow::Result<u8> {
    match a.command {
        JobCommand::List(a) => list(a),
        JobCommand::Check(a) => check(a),
        JobCommand::Run(a) => run_now(a),
    }
}

// ---- job list -------------------------------------------------------------------------

fn list(a: JobListArgs) -> anyhow::Result<u8> {
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
                "incremental": job.chain.is_incremental(),
                "full_every": job.chain.full_every,
                "active_full": job.chain.active_full.as_ref().map(|s| s.value.expr()),
                "copy_to": job.copies.targets.iter().map(|t| t.value.to_string_lossy()).collect::<Vec<_>>(),
                "last": last.as_ref().map(session_json),
            }));
        } else {
            rows.push([
                job.name.clone(),
                job.schedule
                    .as_ref()
                    .map(|s| s.value.expr().to_string())
                    .unwrap_or_else(|| "-".into()),
                next.map(|t| minute(&t)).unwrap_or_else(|| "-".into()),
                last.map(|l| match l.kind {
                    Some(_) => format!(
                        "{} {} ({})",
                        l.state,
                        local_time(l.started_at_ms),
                        chain_words(&l)
                    ),
                    None => format!("{} {}", l.state, local_time(l.started_at_ms)),
                })
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

// ---- job check ------------------------------------------------------------------------

fn check(a: JobCheckArgs) -> anyhow::Result<u8> {
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
        print_checked(r, &now)?;
    }
    if resolved.is_empty() {
        outln!("ok: {} defines no jobs", safe_path(&file.path))?;
    }
    Ok(EXIT_OK)
}

/// The `ok:` line of one job that passed every check.
fn print_checked(r: &ResolvedJob, now: &DateTime<Local>) -> anyhow::Result<()> {
    let j = &r.job;
    let schedule = match &j.schedule {
        Some(s) => format!(
            "schedule {:?} (next {})",
            s.value.expr(),
            s.value
                .next_after(now)
                .map(|t| minute(&t))
                .unwrap_or_else(|| "never".into())
        ),
        None => "no schedule".into(),
    };
    // The pinned keys by fingerprint: what an operator compares with `keygen`'s output.
    let signers = if r.signers.is_empty() {
        String::new()
    } else {
        let fps: Vec<String> = r
            .signers
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect();
        format!(
            ", scheduled verify requires a signature by {}",
            fps.join(" or ")
        )
    };
    outln!(
        "ok: job {}: {} source(s), {} recipient(s), destination {} writable, {}, retention: {}, {}{signers}",
        safe(&j.name),
        j.sources.len(),
        r.recipients.len(),
        safe_path(&j.destination.value),
        schedule,
        j.retention
            .map(|p| p.to_string())
            .unwrap_or_else(|| "keep every archive".into()),
        j.chain
    )?;
    if !j.copies.is_empty() {
        let targets: Vec<String> = j
            .copies
            .targets
            .iter()
            .map(|t| safe_path(&t.value).to_string())
            .collect();
        let when = match &j.copies.schedule {
            Some(s) => format!("on copy_schedule {:?}", s.value.expr()),
            None => "after each session".into(),
        };
        outln!(
            "    copies to {} {when}, copy retention: {} (targets are not contacted by check)",
            targets.join(", "),
            j.copies
                .retention
                .map(|p| p.to_string())
                .unwrap_or_else(|| "keep every copy".into()),
        )?;
    }
    Ok(())
}

// ---- job run --------------------------------------------------------------------------

/// Prints warnings (and the wait) as they happen; keeps the copies' summary lines for
/// after the session's own lines.
#[derive(Default)]
struct RunEvents {
    copies: std::sync::Mutex<Vec<String>>,
}
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
    fn notify_failed(&self, job: &str, error: &coffer::job::notify::PingError) {
        eprintln!("warning: job {}: {}", safe(job), safe(&error.to_string()));
    }
    fn copied(&self, run: &coffer::job::copies::TargetRun) {
        for p in run.problems() {
            eprintln!("warning: job {}: {}", safe(&run.job), safe(&p));
        }
        let mut lines = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(run_summary(run));
    }
}

fn run_now(a: JobRunArgs) -> anyhow::Result<u8> {
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
    let how = SessionOptions {
        force_full: a.full,
        ..SessionOptions::new(Trigger::Manual, mode)
    };
    let events = RunEvents::default();
    let outcome = session::run_session(&st.cx(), &resolved, how, &stop, &events)?;
    // A closed stdout (`| head`) must not skip the retention that was asked for: the
    // printing error is returned after it.
    let copies = events
        .copies
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let printed = print_outcome(&outcome, a.quiet).and_then(|()| {
        if a.quiet {
            return Ok(());
        }
        if outcome.state().completed() {
            print_lock(job, outcome.report.as_ref().map(|r| r.archive.as_path()))?;
        }
        for line in &copies {
            outln!("{}", safe(line))?;
        }
        Ok(())
    });
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

/// `object lock: ...` for an archive the session wrote to S3: the job's own retention,
/// `[s3]`'s, or what the bucket gives it (see `coffer::storage::s3::lock_description`).
fn print_lock(job: &coffer::job::Job, archive: Option<&std::path::Path>) -> anyhow::Result<()> {
    #[cfg(feature = "s3")]
    if let Some(archive) = archive
        && let Ok(location) = coffer::storage::Location::parse(archive)
    {
        let explicit = job
            .object_lock
            .or(coffer::storage::s3::settings().object_lock);
        if let Some(words) = coffer::storage::s3::lock_description(&location, explicit.as_ref()) {
            outln!("object lock: {}", safe(&words))?;
        }
    }
    let _ = (job, archive);
    Ok(())
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
                print_chain(row, r)?;
            }
            // Warnings of the backup itself (files), and those of its copies (`copy_to`,
            // printed as they happened).
            let files = o.report.as_ref().map_or(0, |r| r.warnings.len() as u64);
            if files > 0 {
                warnings_note(files);
            }
            if row.warning_count > files {
                eprintln!(
                    "the archive is complete, but {} of its copies did not reach their target (named above); the next run retries them",
                    row.warning_count - files
                );
            }
        }
        SessionState::Failed => match &o.error {
            Some(e) => {
                error_line(&format!("job {}: {e}", row.job));
                hint_line(e.hint());
            }
            None => error_line(&format!(
                "job {}: {}",
                row.job,
                row.error.as_deref().unwrap_or("failed")
            )),
        },
        SessionState::Interrupted | SessionState::Running => error_line(&format!(
            "job {}: session {} interrupted: {}",
            row.job,
            row.id,
            row.error.as_deref().unwrap_or("stopped")
        )),
    }
    Ok(())
}

/// The `chain:` line of a completed session: a full and why (for a job that makes
/// incrementals), or an incremental with its parents and what it did not store again.
fn print_chain(row: &SessionRow, r: &coffer::BackupReport) -> anyhow::Result<()> {
    let c = &r.chain;
    match c.kind {
        ChainKind::Full => match &c.full_reason {
            Some(why) => outln!("chain:      full ({})", safe(why)),
            None => outln!("chain:      full"),
        },
        ChainKind::Incremental => outln!(
            "chain:      {}: {} file(s) unchanged, {} in parents",
            chain_words(row),
            c.files_unchanged,
            human(c.bytes_referenced)
        ),
    }
}
