//! Applying retention: decide with [`super::retention::decide_chains`] over the job's good
//! archives from the catalog (each a restore point, with the archives its parent table
//! names), delete the archives that are not kept (whole files or objects, nothing else),
//! and note each deletion in the catalog. An archive a kept restore point reads from is
//! never deleted.
//!
//! An archive whose file is already gone does not count toward any rule; a real prune notes
//! it in the catalog as missing. A dry run changes nothing.

use chrono::{DateTime, TimeZone, Utc};

use super::catalog::{Catalog, SessionRow};
use super::config::Job;
use super::error::JobResult;
use super::retention::{self, Candidate, ChainCandidate, Retention, Verdict};
use crate::storage::{self, Location};

/// What retention decided for one job.
#[derive(Debug)]
pub struct PrunePlan {
    pub job: String,
    /// None: the job has no retention, every archive is kept.
    pub policy: Option<Retention>,
    /// Each good archive (newest first) with its verdict.
    pub verdicts: Vec<(SessionRow, Verdict)>,
    /// Catalogued archives whose file no longer exists.
    pub missing: Vec<SessionRow>,
    /// Kept restore points that read from an archive no longer there (deleted, gone, or
    /// never catalogued): the catalog row id of the point and the parent's session id.
    /// Such a point cannot be restored; it is kept all the same (nothing is deleted for it).
    pub broken: Vec<(i64, String)>,
}

impl PrunePlan {
    pub fn to_delete(&self) -> impl Iterator<Item = &(SessionRow, Verdict)> {
        self.verdicts.iter().filter(|(_, v)| !v.keep)
    }
}

/// What a prune did.
#[derive(Debug)]
pub struct PruneReport {
    pub plan: PrunePlan,
    pub dry_run: bool,
    /// Archives deleted (none in a dry run).
    pub deleted: Vec<SessionRow>,
    /// Archives that could not be deleted, with the error.
    pub failed: Vec<(SessionRow, String)>,
    /// Archives retention let go but S3 Object Lock still holds (the job's `object_lock`,
    /// `[s3]`'s, or the bucket's default retention): kept, with the time (milliseconds)
    /// they can go, `None` when the server refused the delete (a lock coffer could not
    /// know of, or a policy). Retried by the next prune; not a failure.
    pub locked: Vec<(SessionRow, Option<i64>)>,
}

/// Decide, in time zone `tz`, what to keep of `job`'s archives.
pub fn plan<Tz: TimeZone>(catalog: &Catalog, job: &Job, tz: &Tz) -> JobResult<PrunePlan> {
    let mut good = Vec::new();
    let mut missing = Vec::new();
    for row in catalog.good_archives(&job.name)? {
        let exists = match row.archive.as_deref() {
            // A key that may not look (write-only) cannot tell: count the archive as there.
            Some(a) => storage::exists(&Location::parse(a)?)?.unwrap_or(true),
            None => false,
        };
        if exists {
            good.push(row);
        } else {
            missing.push(row);
        }
    }
    let Some(policy) = job.retention else {
        return Ok(PrunePlan {
            job: job.name.clone(),
            policy: None,
            verdicts: Vec::new(),
            missing,
            broken: Vec::new(),
        });
    };
    let by_session: std::collections::HashMap<&str, i64> = good
        .iter()
        .filter_map(|r| Some((r.session_id.as_deref()?, r.id)))
        .collect();
    let mut unresolved: Vec<(i64, String)> = Vec::new();
    let points: Vec<ChainCandidate> = good
        .iter()
        .map(|r| ChainCandidate {
            candidate: Candidate {
                id: r.id,
                time: DateTime::<Utc>::from_timestamp_millis(r.started_at_ms).unwrap_or_default(),
            },
            parents: r
                .parents
                .iter()
                .filter_map(|p| {
                    let found = by_session.get(p.as_str()).copied();
                    if found.is_none() {
                        unresolved.push((r.id, p.clone()));
                    }
                    found
                })
                .collect(),
        })
        .collect();
    let verdicts: Vec<(SessionRow, Verdict)> = retention::decide_chains(&policy, &points, tz)
        .into_iter()
        .map(|v| {
            let row = good
                .iter()
                .find(|r| r.id == v.id)
                .cloned()
                .expect("every verdict is about a candidate");
            (row, v)
        })
        .collect();
    // Only the restore points kept matter: the missing parent of a deleted point, or of an
    // archive kept only as a parent, harms nobody.
    let broken = unresolved
        .into_iter()
        .filter(|(id, _)| {
            verdicts
                .iter()
                .any(|(r, v)| r.id == *id && v.keep && v.needed_by.is_none())
        })
        .collect();
    Ok(PrunePlan {
        job: job.name.clone(),
        policy: Some(policy),
        verdicts,
        missing,
        broken,
    })
}

/// Apply `job`'s retention (periods in the local time zone). With `dry_run`, only plan.
pub fn prune(catalog: &Catalog, job: &Job, dry_run: bool) -> JobResult<PruneReport> {
    let plan = plan(catalog, job, &chrono::Local)?;
    let mut report = PruneReport {
        plan,
        dry_run,
        deleted: Vec::new(),
        failed: Vec::new(),
        locked: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }
    for row in &report.plan.missing {
        catalog.mark_deleted(row.id, "missing: the archive file was gone")?;
    }
    let mut locks = Locks::default();
    for (row, verdict) in report.plan.to_delete() {
        let Some(archive) = row.archive.as_deref() else {
            continue;
        };
        let location = match Location::parse(archive) {
            Ok(l) => l,
            Err(e) => {
                report.failed.push((row.clone(), e.to_string()));
                continue;
            }
        };
        // Never ask S3 to delete what it must keep: on a versioned (locked) bucket the
        // delete would only hide the object behind a delete marker.
        let lock_days = locks.days(Some(job), &location);
        if let Some(days) = lock_days {
            let until = locked_until(row, days);
            if until > chrono::Utc::now().timestamp_millis() {
                report.locked.push((row.clone(), Some(until)));
                continue;
            }
        }
        match storage::delete(&location) {
            Ok(()) => {}
            Err(e) if lock_days.is_some() && refused(&e) => {
                report.locked.push((row.clone(), None));
                continue;
            }
            Err(e) => {
                report.failed.push((row.clone(), e.to_string()));
                continue;
            }
        }
        catalog.mark_deleted(row.id, &format!("retention: {}", verdict.reason))?;
        report.deleted.push(row.clone());
    }
    Ok(report)
}

/// The lock days of each bucket a prune (or a copy target's retention) meets, asked once.
#[derive(Default)]
pub(super) struct Locks {
    #[cfg(feature = "s3")]
    buckets: std::collections::HashMap<String, Option<u32>>,
}

impl Locks {
    /// Days the archives at `location` are locked for from their upload: `job`'s
    /// `object_lock` (for the job's own archives; copies are uploaded without it),
    /// `[s3]`'s, or the bucket's default retention (which S3 gives every object uploaded
    /// without its own). None: not locked, or not known to be (a key without
    /// s3:GetBucketObjectLockConfiguration); then a refused delete is a failure, as a
    /// missing permission must be.
    pub(super) fn days(&mut self, job: Option<&Job>, location: &Location) -> Option<u32> {
        #[cfg(feature = "s3")]
        if let Location::S3 { bucket, .. } = location {
            use crate::storage::s3::{self, BucketLock};
            let own = job.and_then(|j| j.object_lock);
            if let Some(lock) = own.or(s3::settings().object_lock) {
                return Some(lock.days);
            }
            return *self.buckets.entry(bucket.clone()).or_insert_with(|| {
                match s3::bucket_lock(bucket) {
                    BucketLock::Default(r) => Some(r.max_days()),
                    _ => None,
                }
            });
        }
        let _ = (job, location);
        None
    }
}

/// When the archive of `row` may go: its retention was set to `days` from the moment its
/// upload began, before the session finished, so the end of the session plus `days` is
/// never earlier than the object's own date.
fn locked_until(row: &SessionRow, days: u32) -> i64 {
    row.finished_at_ms.unwrap_or(row.started_at_ms) + i64::from(days) * 86_400_000
}

/// A delete the server refused (AccessDenied; ObjectLocked on stores that say so).
pub(super) fn refused(e: &crate::error::Error) -> bool {
    match e {
        crate::error::Error::Remote {
            problem, detail, ..
        } => *problem == crate::error::RemoteProblem::Denied || detail.contains("ObjectLocked"),
        _ => false,
    }
}
