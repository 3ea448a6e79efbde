//! The health of each job, for `coffer status` and `coffer metrics`: when it last
//! succeeded, how its last session ended, whether it is overdue against its schedule, how
//! many restore points it keeps and what its last verify found.
//!
//! [`JobStatus::compute`] is a pure function of the job (its schedule), what the catalog
//! recorded and the time now; [`status_of`] reads the catalog for it.
//!
//! **Overdue.** A scheduled job is overdue when its last success is older than two
//! schedule intervals: the schedule fired twice after the last successful session started
//! and the second time has passed too (for a daily job, two nights in a row without a good
//! archive). Counting fire times rather than a fixed length works for irregular schedules
//! (`0 2 * * 1-5` is not overdue on Monday morning). A job with a session running now is
//! not overdue (the run is under way), and a job without a schedule is never overdue: it
//! runs when someone runs it.

use chrono::{DateTime, TimeZone, Utc};

use super::catalog::{Catalog, SessionRow, SessionState, VerifyRun};
use super::config::Job;
use super::error::JobResult;

/// How a job is doing, worst last (the order is the exit code's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Ok,
    /// Overdue, finished with warnings, never succeeded.
    Warning,
    /// The last session failed or was interrupted, or the last verify found damage.
    Failed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Failed => "failed",
        }
    }

    /// 0 all good, 1 something overdue or warned, 2 something failed (Nagios' OK,
    /// WARNING, CRITICAL).
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Failed => 2,
        }
    }
}

/// What the catalog says about one job.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The latest session that ended (any state but running).
    pub last: Option<SessionRow>,
    /// The latest session that left a complete archive.
    pub last_success: Option<SessionRow>,
    /// A session running now.
    pub running: Option<SessionRow>,
    /// Complete archives not deleted.
    pub restore_points: u64,
    /// The latest scheduled verify of the job's archives.
    pub last_verify: Option<VerifyRun>,
}

/// One job's health.
#[derive(Clone, Debug)]
pub struct JobStatus {
    pub job: String,
    /// The cron expression, if the job has a schedule.
    pub schedule: Option<String>,
    pub recorded: Recorded,
    /// When the job becomes overdue (ms since the epoch): the second scheduled time after
    /// its last success. None without a schedule or without a success.
    pub overdue_at_ms: Option<i64>,
    pub overdue: bool,
    pub health: Health,
    /// Why the health is not ok, one line each.
    pub reasons: Vec<String>,
}

impl JobStatus {
    /// The status of `job` from what the catalog recorded, at `now` (schedules are
    /// evaluated in `now`'s time zone).
    pub fn compute<Tz: TimeZone>(job: &Job, recorded: Recorded, now: &DateTime<Tz>) -> Self
    where
        DateTime<Tz>: croner::CronDateTime,
    {
        let schedule = job.schedule.as_ref().map(|s| &s.value);
        let tz = now.timezone();
        let overdue_at = match (schedule, &recorded.last_success) {
            (Some(s), Some(ok)) => tz
                .timestamp_millis_opt(ok.started_at_ms)
                .single()
                .and_then(|t| s.next_after(&t))
                .and_then(|first| s.next_after(&first)),
            _ => None,
        };
        let overdue = recorded.running.is_none() && overdue_at.as_ref().is_some_and(|t| now > t);

        let mut health = Health::Ok;
        let mut reasons = Vec::new();
        let mut flag = |h: Health, why: String| {
            health = health.max(h);
            reasons.push(why);
        };
        match &recorded.last {
            Some(r) if matches!(r.state, SessionState::Failed | SessionState::Interrupted) => {
                let error = r.error.as_deref().unwrap_or("no error recorded");
                let first = error.lines().next().unwrap_or_default();
                flag(
                    Health::Failed,
                    format!("last session ({}) {}: {first}", r.id, r.state),
                );
            }
            Some(r) if r.state == SessionState::Warnings => flag(
                Health::Warning,
                format!(
                    "last session ({}) finished with {} warning(s)",
                    r.id, r.warning_count
                ),
            ),
            _ => {}
        }
        if overdue {
            let since = recorded
                .last_success
                .as_ref()
                .map(|r| age_words(now.timestamp_millis() - r.started_at_ms))
                .unwrap_or_default();
            flag(
                Health::Warning,
                format!(
                    "overdue: the last success started {since} ago, and the schedule {:?} has fired twice since",
                    schedule.map(|s| s.expr()).unwrap_or_default()
                ),
            );
        }
        if schedule.is_some() && recorded.last_success.is_none() && recorded.running.is_none() {
            flag(
                Health::Warning,
                "no session of this scheduled job has succeeded yet".into(),
            );
        }
        if let Some(v) = &recorded.last_verify
            && !v.ok()
        {
            flag(Health::Failed, format!("last verify: {}", v.summary()));
        }
        JobStatus {
            job: job.name.clone(),
            schedule: schedule.map(|s| s.expr().to_string()),
            overdue_at_ms: overdue_at.map(|t| t.timestamp_millis()),
            overdue,
            health,
            reasons,
            recorded,
        }
    }

    /// When the last success ended (ms since the epoch).
    pub fn last_success_ms(&self) -> Option<i64> {
        let r = self.recorded.last_success.as_ref()?;
        Some(r.finished_at_ms.unwrap_or(r.started_at_ms))
    }

    /// Milliseconds since the last success ended, at `now_ms`.
    pub fn age_ms(&self, now_ms: i64) -> Option<i64> {
        self.last_success_ms().map(|t| (now_ms - t).max(0))
    }
}

/// The status of `job` now, from the catalog.
pub fn status_of(catalog: &Catalog, job: &Job) -> JobResult<JobStatus> {
    status_at(catalog, job, &chrono::Local::now())
}

/// The status of `job` at `now`, from the catalog.
pub fn status_at<Tz: TimeZone>(
    catalog: &Catalog,
    job: &Job,
    now: &DateTime<Tz>,
) -> JobResult<JobStatus>
where
    DateTime<Tz>: croner::CronDateTime,
{
    let name = job.name.as_str();
    let recorded = Recorded {
        last: catalog.last_finished(name)?,
        last_success: catalog.last_success(name)?,
        running: catalog.running_session(name)?,
        restore_points: catalog.restore_points(name)?,
        last_verify: catalog.last_verify(name)?,
    };
    Ok(JobStatus::compute(job, recorded, now))
}

/// The worst health of all jobs (Ok when there are none).
pub fn overall(statuses: &[JobStatus]) -> Health {
    statuses
        .iter()
        .map(|s| s.health)
        .max()
        .unwrap_or(Health::Ok)
}

/// An age in the largest whole units that fit: `3d 4h`, `5h 12m`, `40s`.
pub fn age_words(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobFile;
    use std::path::{Path, PathBuf};

    fn job(schedule: Option<&str>) -> Job {
        let sched = schedule
            .map(|s| format!("schedule = {s:?}\n"))
            .unwrap_or_default();
        let text = format!(
            "[job.home]\nsources = [\"/home\"]\ndestination = \"/b\"\nrecipients = [\"/k.pub\"]\n{sched}"
        );
        JobFile::parse(&text, Path::new("/etc/jobs.toml"))
            .unwrap()
            .jobs
            .remove(0)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn row(id: i64, state: SessionState, started: &str) -> SessionRow {
        let t = at(started).timestamp_millis();
        SessionRow {
            id,
            job: "home".into(),
            state,
            trigger: "schedule".into(),
            pid: 1,
            started_at_ms: t,
            finished_at_ms: (state != SessionState::Running).then_some(t + 60_000),
            destination: PathBuf::from("/b"),
            session_id: None,
            archive: None,
            files: None,
            dirs: None,
            symlinks: None,
            bytes_read: None,
            bytes_written: Some(1000),
            warning_count: u64::from(state == SessionState::Warnings),
            warnings: Vec::new(),
            error: (state == SessionState::Failed).then(|| "disk full\nmore".into()),
            deleted_at_ms: None,
            deleted_reason: None,
            kind: None,
            parents: Vec::new(),
            full_reason: None,
            files_unchanged: None,
            bytes_referenced: None,
        }
    }

    fn succeeded_at(s: &str) -> Recorded {
        let r = row(1, SessionState::Succeeded, s);
        Recorded {
            last: Some(r.clone()),
            last_success: Some(r),
            restore_points: 1,
            ..Recorded::default()
        }
    }

    #[test]
    fn a_daily_job_is_overdue_after_two_missed_nights() {
        let j = job(Some("0 2 * * *"));
        let rec = succeeded_at("2024-05-06T02:00:00Z");
        // The next night passed without a run: late, but not yet overdue.
        let s = JobStatus::compute(&j, rec.clone(), &at("2024-05-07T12:00:00Z"));
        assert!(!s.overdue, "{:?}", s.reasons);
        assert_eq!(s.health, Health::Ok);
        assert_eq!(
            s.overdue_at_ms,
            Some(at("2024-05-08T02:00:00Z").timestamp_millis())
        );
        // The second night passed too.
        let s = JobStatus::compute(&j, rec.clone(), &at("2024-05-08T02:00:01Z"));
        assert!(s.overdue);
        assert_eq!(s.health, Health::Warning);
        assert!(s.reasons[0].starts_with("overdue: the last success started 2d 0h ago"));
        // A session running now is the catch-up: not overdue.
        let mut running = rec;
        running.running = Some(row(2, SessionState::Running, "2024-05-08T02:00:00Z"));
        let s = JobStatus::compute(&j, running, &at("2024-05-08T02:10:00Z"));
        assert!(!s.overdue);
    }

    #[test]
    fn irregular_schedules_count_fire_times() {
        // Weekdays only: Friday's success is not overdue on Monday evening.
        let j = job(Some("0 2 * * 1-5"));
        let rec = succeeded_at("2024-05-10T02:00:00Z"); // a Friday
        let s = JobStatus::compute(&j, rec.clone(), &at("2024-05-13T20:00:00Z"));
        assert!(!s.overdue);
        let s = JobStatus::compute(&j, rec, &at("2024-05-14T02:00:01Z"));
        assert!(s.overdue);
    }

    #[test]
    fn a_job_without_a_schedule_is_never_overdue() {
        let j = job(None);
        let s = JobStatus::compute(
            &j,
            succeeded_at("2020-01-01T00:00:00Z"),
            &at("2024-05-08T00:00:00Z"),
        );
        assert!(!s.overdue && s.overdue_at_ms.is_none());
        assert_eq!(s.health, Health::Ok);
        // Nor does one that never ran warn: it runs when someone runs it.
        let s = JobStatus::compute(&j, Recorded::default(), &at("2024-05-08T00:00:00Z"));
        assert_eq!(s.health, Health::Ok);
    }

    #[test]
    fn outcomes_map_to_health() {
        let j = job(Some("0 2 * * *"));
        let now = at("2024-05-06T12:00:00Z");
        let mut rec = succeeded_at("2024-05-06T02:00:00Z");
        rec.last = Some(row(2, SessionState::Failed, "2024-05-06T03:00:00Z"));
        let s = JobStatus::compute(&j, rec.clone(), &now);
        assert_eq!(s.health, Health::Failed);
        assert_eq!(s.reasons, ["last session (2) failed: disk full"]);
        rec.last = Some(row(2, SessionState::Interrupted, "2024-05-06T03:00:00Z"));
        assert_eq!(
            JobStatus::compute(&j, rec.clone(), &now).health,
            Health::Failed
        );
        rec.last = Some(row(2, SessionState::Warnings, "2024-05-06T03:00:00Z"));
        assert_eq!(JobStatus::compute(&j, rec, &now).health, Health::Warning);
        // A scheduled job that never succeeded is not green.
        let s = JobStatus::compute(&j, Recorded::default(), &now);
        assert_eq!(s.health, Health::Warning);
        assert_eq!(overall(&[s]), Health::Warning);
        assert_eq!(overall(&[]), Health::Ok);
    }

    #[test]
    fn ages_read_in_whole_units() {
        assert_eq!(age_words(40_000), "40s");
        assert_eq!(age_words(3_725_000), "1h 2m");
        assert_eq!(age_words(2 * 86_400_000 + 3_600_000), "2d 1h");
    }
}
