//! Incremental jobs (FORMAT.md v2.8): when a job's session is a full and when it may be an
//! incremental, as the job file asks.
//!
//! A job with `full_every = N` or `active_full = "<cron>"` is *incremental*: each of its
//! sessions hands the writer [`ChainOptions`] (the state `chains.sqlite` beside the
//! catalog, `full_every`, and a forced full when asked). The writer then makes an
//! incremental when its state allows and a full otherwise, reporting why. A job with
//! neither key gives no chain options, so every session is a full, as before chains.
//!
//! Two things force a full from here: `job run NAME --full`, and an `active_full` schedule
//! that fired since the job's last full (like Veeam's weekly active full): the catalog
//! records each session's kind, so "the last full" is the latest completed session
//! recorded as one.

use chrono::{DateTime, Local, TimeZone};

use super::catalog::Catalog;
use super::config::{Job, Located};
use super::error::JobResult;
use super::schedule::Schedule;
use crate::chain::ChainOptions;

/// The longest chain the format allows (FORMAT.md v2.8.4: a run that would make a chain
/// longer is a full); a larger `full_every` could never be honoured.
pub const MAX_CHAIN_LEN: u32 = 256;

/// How a job makes incrementals: the `full_every` and `active_full` keys.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ChainPolicy {
    /// Sessions per chain, the full included (1..=[`MAX_CHAIN_LEN`]).
    pub full_every: Option<u32>,
    /// A full when this schedule fired since the job's last full.
    pub active_full: Option<Located<Schedule>>,
}

impl ChainPolicy {
    /// Does the job make incrementals at all?
    pub fn is_incremental(&self) -> bool {
        self.full_every.is_some() || self.active_full.is_some()
    }
}

impl std::fmt::Display for ChainPolicy {
    /// `full_every=7, active_full="0 3 * * sun"`, or `every session a full`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.full_every {
            parts.push(format!("full_every={n}"));
        }
        if let Some(s) = &self.active_full {
            parts.push(format!("active_full={:?}", s.value.expr()));
        }
        if parts.is_empty() {
            f.write_str("every session a full")
        } else {
            write!(f, "incremental: {}", parts.join(", "))
        }
    }
}

/// Check a `full_every` value: 0 would make a chain without its full.
pub fn check_full_every(n: u32) -> Result<u32, (String, &'static str)> {
    if n == 0 {
        return Err((
            "full_every = 0 is not allowed: it counts the sessions of a chain, the full included, so it is at least 1 (1 makes every session a full)".into(),
            "e.g. full_every = 7 for a full every seventh session; remove the key for fulls only",
        ));
    }
    if n > MAX_CHAIN_LEN {
        return Err((
            format!("full_every = {n} is more than a chain may hold ({MAX_CHAIN_LEN} archives)"),
            "use a smaller full_every, or active_full for a full on a schedule",
        ));
    }
    Ok(n)
}

/// The fire time of `active_full` in (last full, now], the earliest: the session that
/// starts now is a full. None when the schedule has not fired since, or when the job has
/// no full yet (its first session is a full anyway: there is no chain to join).
pub fn active_full_due<Tz: TimeZone>(
    schedule: &Schedule,
    last_full: Option<&DateTime<Tz>>,
    now: &DateTime<Tz>,
) -> Option<DateTime<Tz>>
where
    DateTime<Tz>: croner::CronDateTime,
{
    schedule.next_after(last_full?).filter(|t| t <= now)
}

/// The chain options of a session of `job` starting now: None for a job without
/// `full_every` or `active_full` (every session a full). `force_full` is `job run --full`.
pub fn chain_options(
    catalog: &Catalog,
    job: &Job,
    force_full: bool,
    now: &DateTime<Local>,
) -> JobResult<Option<ChainOptions>> {
    let policy = &job.chain;
    if !policy.is_incremental() {
        return Ok(None);
    }
    let mut opts = ChainOptions::new(catalog.chains_path());
    opts.full_every = policy.full_every;
    opts.full = if force_full {
        Some("a full was asked for (job run --full)".into())
    } else {
        active_full_reason(catalog, job, now)?
    };
    Ok(Some(opts))
}

/// Why the `active_full` schedule makes this session a full, if it does.
fn active_full_reason(
    catalog: &Catalog,
    job: &Job,
    now: &DateTime<Local>,
) -> JobResult<Option<String>> {
    let Some(schedule) = &job.chain.active_full else {
        return Ok(None);
    };
    let last = catalog
        .last_full_ms(&job.name)?
        .and_then(|ms| Local.timestamp_millis_opt(ms).single());
    Ok(
        active_full_due(&schedule.value, last.as_ref(), now).map(|fired| {
            format!(
                "active_full {:?} fired at {} since the last full",
                schedule.value.expr(),
                fired.format("%Y-%m-%d %H:%M")
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn active_full_is_due_once_the_cron_fired_since_the_last_full() {
        // Sundays 03:00; 2026-03-15 is a Sunday.
        let weekly = Schedule::parse("0 3 * * 0").unwrap();
        let last = at("2026-03-14T02:00:00Z");
        assert_eq!(
            active_full_due(&weekly, Some(&last), &at("2026-03-15T02:59:00Z")),
            None
        );
        assert_eq!(
            active_full_due(&weekly, Some(&last), &at("2026-03-16T02:00:00Z")),
            Some(at("2026-03-15T03:00:00Z"))
        );
        // A full made after the fire time resets it.
        let after = at("2026-03-15T04:00:00Z");
        assert_eq!(
            active_full_due(&weekly, Some(&after), &at("2026-03-16T02:00:00Z")),
            None
        );
        // No full yet: the first session is a full without being asked.
        assert_eq!(
            active_full_due(&weekly, None, &at("2026-03-16T02:00:00Z")),
            None
        );
    }

    #[test]
    fn full_every_bounds() {
        assert!(check_full_every(0).unwrap_err().0.contains("at least 1"));
        assert_eq!(check_full_every(1), Ok(1));
        assert_eq!(check_full_every(MAX_CHAIN_LEN), Ok(MAX_CHAIN_LEN));
        assert!(check_full_every(MAX_CHAIN_LEN + 1).is_err());
    }

    #[test]
    fn policy_display() {
        assert_eq!(ChainPolicy::default().to_string(), "every session a full");
        let p = ChainPolicy {
            full_every: Some(7),
            active_full: Some(Located {
                value: Schedule::parse("0 3 * * 0").unwrap(),
                line: 1,
            }),
        };
        assert!(p.is_incremental());
        assert_eq!(
            p.to_string(),
            "incremental: full_every=7, active_full=\"0 3 * * 0\""
        );
    }
}
