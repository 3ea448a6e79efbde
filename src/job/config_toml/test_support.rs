//! What the key modules' unit tests share: a job file parsed from text, its errors as
//! one string, and a minimal job to append keys to.

use crate::job::{JobError, JobFile};
use std::path::Path;

pub(super) fn parse(src: &str) -> Result<JobFile, String> {
    JobFile::parse(src, Path::new("/etc/coffer/jobs.toml")).map_err(|e| match e {
        JobError::Config(list) => list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    })
}

pub(super) const JOB: &str =
    "[job.home]\nsources = [\"/home\"]\ndestination = \"/b\"\nrecipients = [\"/k.pub\"]\n";
