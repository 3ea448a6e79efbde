//! The scheduler behind `coffer daemon`: evaluates each job's cron expression in the local
//! time zone, runs due jobs one session at a time, records every session, applies
//! retention after each completed session, and stops when the stop flag is set.
//!
//! **When is a job due?** The scheduler remembers, per job in the catalog, the time it last
//! evaluated the job's schedule. A job is due when its schedule fires in the window
//! (last evaluation, now]; however many times it fired in the window, it runs once.
//! - At start-up the window opens at the last evaluation recorded by an earlier daemon, so
//!   a run missed while the daemon was down runs once (`catch_up = true`, the default).
//!   With `catch_up = false`, or for a job never evaluated before, the window is the
//!   current minute only.
//! - While running, a job that fell due during another job's session runs after it.
//! - A job whose lock is held by another process (a manual `coffer job run`) is skipped
//!   and its window stays open, so it runs once the other session ends. A session
//!   interrupted by a stop signal leaves its window open too: it runs again at the next
//!   start (with catch-up).
//!
//! `--once` evaluates once, runs what is due and returns.

use chrono::{DateTime, Local, TimeZone, Timelike};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::catalog::{SessionState, Trigger, VerifyRun};
use super::config::ResolvedJob;
use super::error::{JobError, JobResult};
use super::health;
use super::metrics;
use super::prune::{self, PruneReport};
use super::schedule::Schedule;
use super::session::{self, Context, LockMode, SessionEvents, SessionOptions, SessionOutcome};

/// The daemon's log, as events; the binary turns them into lines on stderr.
pub trait DaemonEvents: SessionEvents {
    fn event(&self, _event: &DaemonEvent<'_>) {}
}

/// Something the daemon did or decided.
pub enum DaemonEvent<'a> {
    /// Started, with the scheduled jobs and their next run times.
    Ready {
        jobs: Vec<(&'a str, Option<DateTime<Local>>)>,
    },
    /// A job is due (the scheduled time it serves).
    Due {
        job: &'a str,
        scheduled: DateTime<Local>,
        trigger: Trigger,
    },
    /// A session ended (succeeded, warnings, failed or interrupted).
    Finished { outcome: &'a SessionOutcome },
    /// A due job was not run (e.g. already running elsewhere); it stays due.
    Skipped { job: &'a str, error: &'a JobError },
    /// Retention ran after a session.
    Pruned { report: &'a PruneReport },
    /// Retention failed after a session.
    PruneFailed { job: &'a str, error: &'a JobError },
    /// Nothing to do until then (the job that fires next, and when).
    Idle {
        next: Option<(&'a str, DateTime<Local>)>,
    },
    /// The stop flag was seen.
    Stopping,
    /// A scheduled verify of a job's kept archives starts.
    VerifyStarted { job: &'a str },
    /// A scheduled verify ended and was recorded.
    Verified { run: &'a VerifyRun },
    /// A scheduled verify could not run (the catalog could not be read or written).
    VerifyFailed { job: &'a str, error: &'a JobError },
    /// The metrics textfile could not be written (the daemon goes on).
    MetricsFailed {
        path: &'a std::path::Path,
        error: &'a JobError,
    },
}

/// How to run the daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Evaluate once, run what is due, return.
    pub once: bool,
    /// Rewrite this metrics textfile at start and after every session (`metrics_textfile`).
    pub metrics: Option<MetricsTarget>,
}

/// The metrics textfile the daemon keeps up to date, and the jobs it describes (every job
/// of the job file, scheduled or not, as `coffer metrics` writes it).
#[derive(Clone, Debug)]
pub struct MetricsTarget {
    pub path: std::path::PathBuf,
    pub jobs: Vec<super::config::Job>,
}

/// Rewrite the metrics textfile, if there is one; a failure is reported, not fatal.
fn refresh_metrics(cx: &Context<'_>, opts: &DaemonOptions, events: &dyn DaemonEvents) {
    let Some(target) = &opts.metrics else {
        return;
    };
    let written = metrics::collect(cx.catalog, &target.jobs)
        .and_then(|m| metrics::write_textfile(&target.path, &metrics::render(&m)));
    if let Err(error) = written {
        events.event(&DaemonEvent::MetricsFailed {
            path: &target.path,
            error: &error,
        });
    }
}

/// What the daemon did before it returned.
#[derive(Debug, Default)]
pub struct DaemonSummary {
    pub outcomes: Vec<SessionOutcome>,
    /// Due jobs that could not run, and failed prunes.
    pub errors: usize,
    /// Scheduled copies (`copy_schedule`) that did not all reach their targets.
    pub warnings: usize,
    /// Returned because the stop flag was set.
    pub stopped: bool,
}

impl DaemonSummary {
    /// Exit code for `daemon --once`: the worst of the sessions run (0, 1 or 2).
    pub fn exit_code(&self) -> u8 {
        let worst = self
            .outcomes
            .iter()
            .map(|o| o.state().exit_code())
            .max()
            .unwrap_or(0);
        if self.errors > 0 {
            2
        } else if self.warnings > 0 {
            worst.max(1)
        } else {
            worst
        }
    }
}

/// Start of the minute holding `t`.
fn minute_floor<Tz: TimeZone>(t: &DateTime<Tz>) -> DateTime<Tz> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or_else(|| t.clone())
}

/// Where the due window of a job opens (exclusive); see the module docs.
pub fn window_start<Tz: TimeZone>(
    last_checked: Option<DateTime<Tz>>,
    catch_up: bool,
    first_pass: bool,
    now: &DateTime<Tz>,
) -> DateTime<Tz> {
    let this_minute = minute_floor(now) - chrono::Duration::seconds(1);
    match last_checked {
        Some(last) if catch_up || !first_pass => last,
        Some(last) => last.max(this_minute),
        None => this_minute,
    }
}

/// The first time in (after, now] at which `schedule` fires.
pub fn due_in<Tz: TimeZone>(
    schedule: &Schedule,
    after: &DateTime<Tz>,
    now: &DateTime<Tz>,
) -> Option<DateTime<Tz>>
where
    DateTime<Tz>: croner::CronDateTime,
{
    schedule.next_after(after).filter(|t| t <= now)
}

fn from_ms(ms: i64) -> Option<DateTime<Local>> {
    Local.timestamp_millis_opt(ms).single()
}

/// Run the scheduler over `jobs` (the scheduled ones are used) until `stop` is set, or
/// for one pass with `opts.once`.
pub fn run_daemon(
    cx: &Context<'_>,
    jobs: &[ResolvedJob],
    opts: DaemonOptions,
    stop: &AtomicBool,
    events: &dyn DaemonEvents,
) -> JobResult<DaemonSummary> {
    let _daemon_lock = cx.locks.try_daemon()?.ok_or_else(|| JobError::DaemonBusy {
        dir: cx
            .locks
            .daemon_path()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_default(),
        pid: cx.locks.daemon_holder(),
    })?;
    session::recover_stale(cx, events)?;

    let scheduled: Vec<(&ResolvedJob, &Schedule)> = jobs
        .iter()
        .filter_map(|j| j.job.schedule.as_ref().map(|s| (j, &s.value)))
        .collect();
    let verifies: Vec<(&ResolvedJob, &Schedule)> = jobs
        .iter()
        .filter_map(|j| {
            let s = j.job.monitoring.verify_schedule.as_ref()?;
            Some((j, &s.value))
        })
        .collect();
    let copies: Vec<(&ResolvedJob, &Schedule)> = jobs
        .iter()
        .filter(|j| !j.job.copies.is_empty())
        .filter_map(|j| Some((j, &j.job.copies.schedule.as_ref()?.value)))
        .collect();
    // The daemon wakes for every kind of schedule.
    let wake_on: Vec<(&ResolvedJob, &Schedule)> = scheduled
        .iter()
        .chain(&verifies)
        .chain(&copies)
        .copied()
        .collect();
    let now = Local::now();
    events.event(&DaemonEvent::Ready {
        jobs: scheduled
            .iter()
            .map(|(j, s)| (j.job.name.as_str(), s.next_after(&now)))
            .collect(),
    });

    refresh_metrics(cx, &opts, events);
    let mut summary = DaemonSummary::default();
    let mut first_pass = true;
    let mut last_idle = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            events.event(&DaemonEvent::Stopping);
            summary.stopped = true;
            break;
        }
        let now = Local::now();
        let due = due_jobs(cx, &scheduled, first_pass, &now)?;
        for job in due {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            run_due(cx, job, &now, stop, events, &mut summary)?;
            refresh_metrics(cx, &opts, events);
        }
        // Scheduled verifies, then scheduled copies: each runs when its own schedule fired.
        let extras = [
            (verify_if_due as DueTask, &verifies),
            (copy_if_due, &copies),
        ];
        'extras: for (task, list) in extras {
            for (job, schedule) in list {
                if stop.load(Ordering::SeqCst) {
                    break 'extras;
                }
                if task(
                    cx,
                    job,
                    schedule,
                    first_pass,
                    &now,
                    stop,
                    events,
                    &mut summary,
                )? {
                    refresh_metrics(cx, &opts, events);
                }
            }
        }
        first_pass = false;
        if opts.once {
            summary.stopped = stop.load(Ordering::SeqCst);
            break;
        }
        sleep_until_due(&wake_on, stop, events, &mut last_idle);
    }
    Ok(summary)
}

/// One due job: the scheduled time it serves, the job, and why it runs.
type Due<'a> = (DateTime<Local>, &'a ResolvedJob, Trigger);

/// The jobs due at `now`, earliest first (then by name). A job not due has its window
/// closed at `now`; a due job's window stays open until its session has run.
fn due_jobs<'a>(
    cx: &Context<'_>,
    scheduled: &[(&'a ResolvedJob, &Schedule)],
    first_pass: bool,
    now: &DateTime<Local>,
) -> JobResult<Vec<Due<'a>>> {
    let mut due = Vec::new();
    for (job, schedule) in scheduled {
        let name = job.job.name.as_str();
        let last = cx.catalog.last_checked(name)?.and_then(from_ms);
        let after = window_start(last, job.job.catch_up, first_pass, now);
        match due_in(schedule, &after, now) {
            Some(at) => {
                let trigger = if at < minute_floor(now) {
                    Trigger::CatchUp
                } else {
                    Trigger::Schedule
                };
                due.push((at, *job, trigger));
            }
            None => cx.catalog.set_last_checked(name, now.timestamp_millis())?,
        }
    }
    due.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.job.name.cmp(&b.1.job.name)));
    Ok(due)
}

/// Run one session of a due job, then retention if it completed. A job that cannot run
/// now (busy, or its backup could not start) is skipped and counted; only a failing
/// catalog ends the daemon.
fn run_due(
    cx: &Context<'_>,
    (at, job, trigger): Due<'_>,
    now: &DateTime<Local>,
    stop: &AtomicBool,
    events: &dyn DaemonEvents,
    summary: &mut DaemonSummary,
) -> JobResult<()> {
    let name = job.job.name.as_str();
    events.event(&DaemonEvent::Due {
        job: name,
        scheduled: at,
        trigger,
    });
    match session::run_session(
        cx,
        job,
        SessionOptions::new(trigger, LockMode::Fail),
        stop,
        events,
    ) {
        Ok(outcome) => {
            events.event(&DaemonEvent::Finished { outcome: &outcome });
            if outcome.state() != SessionState::Interrupted {
                cx.catalog.set_last_checked(name, now.timestamp_millis())?;
            }
            if outcome.state().completed() && job.job.retention.is_some() {
                prune_after(cx, job, events, summary);
            }
            summary.outcomes.push(outcome);
        }
        Err(error @ JobError::Cancelled { .. }) => {
            events.event(&DaemonEvent::Skipped {
                job: name,
                error: &error,
            });
        }
        Err(error @ (JobError::Busy { .. } | JobError::Backup(_) | JobError::Io { .. })) => {
            summary.errors += 1;
            events.event(&DaemonEvent::Skipped {
                job: name,
                error: &error,
            });
        }
        // The catalog itself failing is not something to keep scheduling through.
        Err(other) => return Err(other),
    }
    Ok(())
}

/// The catalog's key for when the daemon last evaluated a job's `verify_schedule` (job
/// names cannot hold `:`, so it never meets a job's own key).
fn verify_key(job: &str) -> String {
    format!("{job}:verify")
}

/// Run the scheduled verify of `job` if its `verify_schedule` fired in its window (the same
/// window rules as sessions, see the module docs). The job's lock is held while it runs, so
/// no session or prune changes the archives under it; a job whose lock is held elsewhere
/// is skipped and stays due. Returns whether a verify ran. Damage found counts as an error
/// of the pass (`daemon --once` exits 2).
#[allow(clippy::too_many_arguments)]
fn verify_if_due(
    cx: &Context<'_>,
    job: &ResolvedJob,
    schedule: &Schedule,
    first_pass: bool,
    now: &DateTime<Local>,
    stop: &AtomicBool,
    events: &dyn DaemonEvents,
    summary: &mut DaemonSummary,
) -> JobResult<bool> {
    let name = job.job.name.as_str();
    let key = verify_key(name);
    let Some(_lock) = due_and_locked(cx, job, &key, schedule, first_pass, now, events)? else {
        return Ok(false);
    };
    events.event(&DaemonEvent::VerifyStarted { job: name });
    match health::verify_job(cx.catalog, &job.job, &job.signers, stop) {
        Ok(Some(run)) => {
            cx.catalog.set_last_checked(&key, now.timestamp_millis())?;
            if !run.ok() {
                summary.errors += 1;
            }
            events.event(&DaemonEvent::Verified { run: &run });
        }
        // Stopped: nothing recorded, and the verify stays due for the next start.
        Ok(None) => return Ok(false),
        Err(error) => {
            summary.errors += 1;
            cx.catalog.set_last_checked(&key, now.timestamp_millis())?;
            events.event(&DaemonEvent::VerifyFailed {
                job: name,
                error: &error,
            });
        }
    }
    Ok(true)
}

/// A task the daemon runs on a job's own schedule beside its sessions (a scheduled verify,
/// scheduled copies): whether it ran.
type DueTask = fn(
    &Context<'_>,
    &ResolvedJob,
    &Schedule,
    bool,
    &DateTime<Local>,
    &AtomicBool,
    &dyn DaemonEvents,
    &mut DaemonSummary,
) -> JobResult<bool>;

/// The job's lock when `schedule` (checked under catalog key `key`) fired in its window
/// (the window rules of sessions, see the module docs); `None` when it is not due (the
/// window then moves on) or when the job's lock is held elsewhere (reported as skipped;
/// it stays due). What a scheduled verify and scheduled copies share.
fn due_and_locked(
    cx: &Context<'_>,
    job: &ResolvedJob,
    key: &str,
    schedule: &Schedule,
    first_pass: bool,
    now: &DateTime<Local>,
    events: &dyn DaemonEvents,
) -> JobResult<Option<super::lock::Lock>> {
    let name = job.job.name.as_str();
    let last = cx.catalog.last_checked(key)?.and_then(from_ms);
    let after = window_start(last, job.job.catch_up, first_pass, now);
    if due_in(schedule, &after, now).is_none() {
        cx.catalog.set_last_checked(key, now.timestamp_millis())?;
        return Ok(None);
    }
    let lock = cx.locks.try_job(name)?;
    if lock.is_none() {
        let error = JobError::Busy {
            job: name.to_string(),
            pid: cx.locks.job_holder(name),
        };
        events.event(&DaemonEvent::Skipped {
            job: name,
            error: &error,
        });
    }
    Ok(lock)
}

/// Run the copies of `job` to its targets if its `copy_schedule` fired in its window (the
/// window rules of sessions, see the module docs), under the job's lock; a job whose lock
/// is held elsewhere is skipped and stays due, as copies stopped by the stop flag do.
/// Returns whether copies ran. A problem at a target counts as a warning of the pass
/// (`daemon --once` exits 1), never as a failure.
#[allow(clippy::too_many_arguments)]
fn copy_if_due(
    cx: &Context<'_>,
    job: &ResolvedJob,
    schedule: &Schedule,
    first_pass: bool,
    now: &DateTime<Local>,
    stop: &AtomicBool,
    events: &dyn DaemonEvents,
    summary: &mut DaemonSummary,
) -> JobResult<bool> {
    let name = job.job.name.as_str();
    // Job names cannot hold `:`, so the key never meets a job's own.
    let key = format!("{name}:copy");
    let Some(_lock) = due_and_locked(cx, job, &key, schedule, first_pass, now, events)? else {
        return Ok(false);
    };
    let runs = super::copies::run_copies(cx.catalog, &job.job, None, stop, events)?;
    if stop.load(Ordering::SeqCst) {
        return Ok(true);
    }
    cx.catalog.set_last_checked(&key, now.timestamp_millis())?;
    if runs.iter().any(|r| !r.ok()) {
        summary.warnings += 1;
    }
    Ok(true)
}

/// Apply the job's retention after a completed session; a failure is reported and
/// counted, and the daemon goes on.
fn prune_after(
    cx: &Context<'_>,
    job: &ResolvedJob,
    events: &dyn DaemonEvents,
    summary: &mut DaemonSummary,
) {
    match prune::prune(cx.catalog, &job.job, false) {
        Ok(report) => events.event(&DaemonEvent::Pruned { report: &report }),
        Err(error) => {
            summary.errors += 1;
            events.event(&DaemonEvent::PruneFailed {
                job: &job.job.name,
                error: &error,
            });
        }
    }
}

/// Sleep until the next scheduled time (at most a minute, so clock changes and jobs left
/// due are looked at again), waking early when `stop` is set. The idle event is sent only
/// when the next scheduled run changes (not every minute).
fn sleep_until_due(
    scheduled: &[(&ResolvedJob, &Schedule)],
    stop: &AtomicBool,
    events: &dyn DaemonEvents,
    last_idle: &mut Option<(String, DateTime<Local>)>,
) {
    let now = Local::now();
    let next = scheduled
        .iter()
        .filter_map(|(j, s)| s.next_after(&now).map(|t| (j.job.name.as_str(), t)))
        .min_by_key(|(_, t)| *t);
    let key = next.map(|(j, t)| (j.to_string(), t));
    if key != *last_idle {
        events.event(&DaemonEvent::Idle { next });
        *last_idle = key;
    }
    let cap = now + chrono::Duration::seconds(60);
    let wake = next.map(|(_, t)| t.min(cap)).unwrap_or(cap);
    while !stop.load(Ordering::SeqCst) && Local::now() < wake {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// (last checked, catch_up, first pass, now, due at)
    type Case = (
        Option<&'static str>,
        bool,
        bool,
        &'static str,
        Option<&'static str>,
    );

    #[test]
    fn due_window_table() {
        let daily = Schedule::parse("0 2 * * *").unwrap();
        // (last checked, catch_up, first pass, now, due at)
        let cases: &[Case] = &[
            // never checked: only the current minute counts
            (
                None,
                true,
                true,
                "2024-05-06T02:00:30Z",
                Some("2024-05-06T02:00:00Z"),
            ),
            (None, true, true, "2024-05-06T02:01:00Z", None),
            // daemon was down over 02:00: catch up once
            (
                Some("2024-05-05T23:00:00Z"),
                true,
                true,
                "2024-05-06T09:00:00Z",
                Some("2024-05-06T02:00:00Z"),
            ),
            // ... unless catch_up = false
            (
                Some("2024-05-05T23:00:00Z"),
                false,
                true,
                "2024-05-06T09:00:00Z",
                None,
            ),
            // catch_up = false still runs in the current minute, once
            (
                Some("2024-05-05T23:00:00Z"),
                false,
                true,
                "2024-05-06T02:00:10Z",
                Some("2024-05-06T02:00:00Z"),
            ),
            (
                Some("2024-05-06T02:00:05Z"),
                false,
                true,
                "2024-05-06T02:00:10Z",
                None,
            ),
            // while running, the window is since the last pass, whatever catch_up says
            (
                Some("2024-05-06T01:59:00Z"),
                false,
                false,
                "2024-05-06T03:10:00Z",
                Some("2024-05-06T02:00:00Z"),
            ),
            // already checked after the time: not again
            (
                Some("2024-05-06T02:00:00Z"),
                true,
                false,
                "2024-05-06T02:00:59Z",
                None,
            ),
            // a window of several days still runs once (the first missed time is reported)
            (
                Some("2024-05-01T00:00:00Z"),
                true,
                true,
                "2024-05-06T09:00:00Z",
                Some("2024-05-01T02:00:00Z"),
            ),
        ];
        for (i, (last, catch_up, first, now, want)) in cases.iter().enumerate() {
            let now = t(now);
            let after = window_start(last.map(t), *catch_up, *first, &now);
            assert_eq!(due_in(&daily, &after, &now), want.map(t), "case {i}");
        }
    }

    #[test]
    fn schedules_use_the_given_time_zone() {
        let daily = Schedule::parse("0 2 * * *").unwrap();
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        // 02:00 at UTC+2 is 00:00 UTC.
        let now = t("2024-05-06T00:00:20Z").with_timezone(&plus2);
        let after = window_start(None, true, true, &now);
        assert_eq!(
            due_in(&daily, &after, &now).map(|d| d.with_timezone(&Utc)),
            Some(t("2024-05-06T00:00:00Z"))
        );
    }
}
