//! Applying retention: decide with [`super::retention::decide`] over the job's good
//! archives from the catalog, delete the archives that are not kept (whole files or
//! objects, nothing else), and note each deletion in the catalog.
//!
//! An archive whose file is already gone does not count toward any rule; a real prune notes
//! it in the catalog as missing. A dry run changes nothing.

use chrono::{DateTime, TimeZone, Utc};

use super::catalog::{Catalog, SessionRow};
use super::config::Job;
use super::error::JobResult;
use super::retention::{self, Candidate, Retention, Verdict};
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
        });
    };
    let candidates: Vec<Candidate> = good
        .iter()
        .map(|r| Candidate {
            id: r.id,
            time: DateTime::<Utc>::from_timestamp_millis(r.started_at_ms).unwrap_or_default(),
        })
        .collect();
    let verdicts = retention::decide(&policy, &candidates, tz)
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
    Ok(PrunePlan {
        job: job.name.clone(),
        policy: Some(policy),
        verdicts,
        missing,
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
    };
    if dry_run {
        return Ok(report);
    }
    for row in &report.plan.missing {
        catalog.mark_deleted(row.id, "missing: the archive file was gone")?;
    }
    for (row, verdict) in report.plan.to_delete() {
        let Some(archive) = row.archive.as_deref() else {
            continue;
        };
        if let Err(e) = Location::parse(archive).and_then(|l| storage::delete(&l)) {
            report.failed.push((row.clone(), e.to_string()));
            continue;
        }
        catalog.mark_deleted(row.id, &format!("retention: {}", verdict.reason))?;
        report.deleted.push(row.clone());
    }
    Ok(report)
}
