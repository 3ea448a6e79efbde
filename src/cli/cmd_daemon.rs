//! `coffer daemon`: the scheduler in the foreground, its log on stderr (one timestamped
//! line per event).

use chrono::Local;
use clap::Args;

use coffer::job::JobError;
use coffer::job::catalog::{SessionRow, SessionState, Trigger};
use coffer::job::prune::PruneReport;
use coffer::job::scheduler::{self, DaemonEvent, DaemonEvents, DaemonOptions, MetricsTarget};
use coffer::job::session::{SessionEvents, SessionOutcome};
use coffer::progress::Warning;

use super::jobs::{Locations, file_name, load_config, open_state, outcome_words};
use super::report::{EXIT_OK, minute, seconds};
use super::signals::stop_flag;
use super::ui::{human, safe};

/// `coffer daemon`
#[derive(Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    loc: Locations,
    /// Run whatever is due now, then exit (for tests and for cron)
    #[arg(long)]
    once: bool,
}

pub fn run(a: DaemonArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let scheduled: Vec<_> = file
        .jobs
        .iter()
        .filter(|j| {
            j.schedule.is_some()
                || j.monitoring.verify_schedule.is_some()
                || (!j.copies.is_empty() && j.copies.schedule.is_some())
        })
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
        DaemonOptions {
            once: a.once,
            metrics: file.metrics_textfile.clone().map(|path| MetricsTarget {
                path,
                jobs: file.jobs.clone(),
            }),
        },
        &stop,
        &DaemonLog,
    )?;
    if summary.stopped {
        log("daemon stopped");
    }
    Ok(if a.once { summary.exit_code() } else { EXIT_OK })
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
    fn notify_failed(&self, job: &str, error: &coffer::job::notify::PingError) {
        log(format!("job {job}: warning: {error}"));
    }
    fn copied(&self, run: &coffer::job::copies::TargetRun) {
        log(format!(
            "job {}: {}",
            run.job,
            super::copies::run_summary(run)
        ));
        for p in run.problems() {
            log(format!("job {}: warning: {p}", run.job));
        }
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
        let line = match e {
            DaemonEvent::Ready { jobs } => {
                let list: Vec<String> = jobs
                    .iter()
                    .map(|(name, next)| match next {
                        Some(t) => format!("{name} (next {})", minute(t)),
                        None => format!("{name} (never)"),
                    })
                    .collect();
                format!(
                    "daemon started (pid {}): {}",
                    std::process::id(),
                    list.join(", ")
                )
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
                format!("job {job}: {what} (scheduled {})", minute(scheduled))
            }
            DaemonEvent::Finished { outcome } => finished_line(outcome),
            DaemonEvent::Skipped { job, error } => format!("job {job}: not run: {error}"),
            DaemonEvent::Pruned { report } => pruned_line(report),
            DaemonEvent::PruneFailed { job, error } => {
                format!("job {job}: retention failed: {error}")
            }
            DaemonEvent::Idle {
                next: Some((job, t)),
            } => {
                format!("idle; next: job {job} at {}", minute(t))
            }
            DaemonEvent::Idle { next: None } => return,
            DaemonEvent::Stopping => "stop signal received; no new sessions will start".into(),
            DaemonEvent::VerifyStarted { job } => {
                format!("job {job}: verify of the kept archives started")
            }
            DaemonEvent::Verified { run } => {
                let took = seconds(run.finished_at_ms - run.started_at_ms);
                let verdict = if run.ok() {
                    "verify ok"
                } else {
                    "verify FAILED"
                };
                let mut line = format!(
                    "job {}: {verdict} in {took}: {}, {} read",
                    run.job,
                    run.summary(),
                    human(run.bytes)
                );
                for d in run.details.iter().skip(1).take(9) {
                    line.push_str(&format!("; {d}"));
                }
                line
            }
            DaemonEvent::VerifyFailed { job, error } => {
                format!("job {job}: verify failed: {error}")
            }
            DaemonEvent::MetricsFailed { path, error } => {
                format!(
                    "warning: cannot write the metrics to {}: {error}",
                    path.display()
                )
            }
        };
        log(line);
    }
}

fn finished_line(outcome: &SessionOutcome) -> String {
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
    format!(
        "job {}: session {} {} in {took}: {detail}",
        r.job,
        r.id,
        outcome_words(r.state)
    )
}

fn pruned_line(report: &PruneReport) -> String {
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
    line
}
