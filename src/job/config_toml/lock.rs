//! The job file's per-job S3 Object Lock, `object_lock = { mode = "compliance", days = 30 }`
//! in a job or `[defaults]`: the retention the job's archives are uploaded with, in place of
//! `[s3] object_lock`. Checked here with the line of each bad value.
//!
//! A job's own `object_lock` with a local destination is an error, not a warning: the job
//! asks for archives nobody can delete, a folder cannot give that, and a backup that runs
//! anyway would leave the user believing in an immutability that is not there (fail
//! closed; docs/SECURITY.md "Immutable targets" says what a folder can do instead).
//! `[defaults]`' `object_lock` is the default of the jobs that write to S3, as `[s3]`'s
//! is: a job with a local destination does not inherit it, so one file can hold both.

use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::storage::s3::{LockMode, ObjectLock};

/// `{ mode = "...", days = N }`, before checking.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    mode: Spanned<String>,
    days: Spanned<i64>,
}

/// Longest retention accepted (as `--object-lock` and `[s3]`).
const MAX_DAYS: i64 = 36_500;

/// One `object_lock` table, checked; None (after reporting) when a value is bad.
fn check(cx: &mut Ctx<'_>, raw: &RawLock, section: &Option<String>) -> Option<ObjectLock> {
    let mode = match raw.mode.get_ref().as_str() {
        "compliance" => Some(LockMode::Compliance),
        "governance" => Some(LockMode::Governance),
        other => {
            cx.err(
                raw.mode.span().start,
                section.clone(),
                "object_lock",
                format!("mode {other:?}: expected \"compliance\" or \"governance\""),
                Some(
                    "compliance: nobody can shorten or lift the lock; governance: users with s3:BypassGovernanceRetention can",
                ),
            );
            None
        }
    };
    let days = *raw.days.get_ref();
    let days = if (1..=MAX_DAYS).contains(&days) {
        Some(days as u32)
    } else {
        cx.err(
            raw.days.span().start,
            section.clone(),
            "object_lock",
            format!("days = {days}: must be 1 to {MAX_DAYS}"),
            None,
        );
        None
    };
    Some(ObjectLock {
        mode: mode?,
        days: days?,
    })
}

/// `[defaults]`' `object_lock`.
pub(super) fn defaults(cx: &mut Ctx<'_>, raw: Option<&RawLock>) -> Option<ObjectLock> {
    check(cx, raw?, &Some("[defaults]".to_string()))
}

/// A job's `object_lock`: its own, else `[defaults]`' when the job writes to S3. Its own
/// with a local `destination` is an error (see the module docs).
pub(super) fn job(
    cx: &mut Ctx<'_>,
    default: Option<ObjectLock>,
    raw: Option<&Spanned<RawLock>>,
    destination: &str,
    section: &Option<String>,
) -> Option<ObjectLock> {
    let remote = destination.starts_with("s3://");
    let Some(raw) = raw else {
        return default.filter(|_| remote);
    };
    let lock = check(cx, raw.get_ref(), section);
    if !remote {
        cx.err(
            raw.span().start,
            section.clone(),
            "object_lock",
            format!(
                "object_lock needs an s3:// destination; {destination:?} is a folder, which cannot hold a retention"
            ),
            Some(
                "remove object_lock, or see \"Immutable targets\" in docs/SECURITY.md for append-only folders",
            ),
        );
        return None;
    }
    lock
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{JOB, parse};
    use crate::storage::s3::{LockMode, ObjectLock};

    const S3_JOB: &str = "[job.cloud]\nsources = [\"/home\"]\ndestination = \"s3://b/cloud\"\nrecipients = [\"/k.pub\"]\n";

    #[test]
    fn a_jobs_lock_replaces_the_default_and_local_jobs_do_not_inherit_it() {
        let f = parse(&format!(
            "[defaults]\nobject_lock = {{ mode = \"governance\", days = 7 }}\n{S3_JOB}[job.db]\nsources = [\"/db\"]\ndestination = \"s3://b/db\"\nrecipients = [\"/k.pub\"]\nobject_lock = {{ mode = \"compliance\", days = 30 }}\n{JOB}"
        ))
        .unwrap();
        let lock = |name: &str| f.job(name).unwrap().object_lock;
        assert_eq!(
            lock("cloud"),
            Some(ObjectLock {
                mode: LockMode::Governance,
                days: 7
            })
        );
        assert_eq!(
            lock("db"),
            Some(ObjectLock {
                mode: LockMode::Compliance,
                days: 30
            })
        );
        assert_eq!(lock("home"), None);
    }

    #[test]
    fn bad_locks_name_their_line_and_key() {
        let err = parse(&format!(
            "{S3_JOB}object_lock = {{ mode = \"legal\", days = 0 }}\n[defaults]\nobject_lock = {{ mode = \"compliance\", days = 36501 }}\n"
        ))
        .unwrap_err();
        for want in [
            "jobs.toml:5: job \"cloud\": key \"object_lock\": mode \"legal\": expected",
            "jobs.toml:5: job \"cloud\": key \"object_lock\": days = 0: must be 1 to 36500",
            "jobs.toml:7: [defaults]: key \"object_lock\": days = 36501",
        ] {
            assert!(err.contains(want), "{want}\n in: {err}");
        }
        let err = parse(&format!(
            "{JOB}object_lock = {{ mode = \"compliance\", days = 3 }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("jobs.toml:5: job \"home\": key \"object_lock\": object_lock needs an s3:// destination"),
            "{err}"
        );
        let err = parse(&format!(
            "{S3_JOB}object_lock = {{ mode = \"compliance\", days = 3, until = 4 }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("jobs.toml:5") && err.contains("until"),
            "{err}"
        );
    }
}
