//! Backup jobs: a TOML job file, one-off runs, a cron scheduler, a SQLite session catalog
//! and retention.
//!
//! A *job* is a named entry of the job file (sources, excludes, destination, recipients,
//! schedule, retention, compression). Each run of a job is one *job session*: one new
//! session key and one new archive `DESTINATION/<job>-<YYYYmmddTHHMMSSZ>-<8 hex>.coffer`,
//! where the hex digits are the start of the archive's session id.
//!
//! - [`config`] parses and validates the job file (errors carry file, line, job and key);
//! - [`session`] runs one session under the job's lock and records it in the [`catalog`];
//! - [`scheduler`] evaluates cron schedules and runs due jobs (the `daemon` command);
//! - [`retention`] decides which archives to keep (keep-last/daily/weekly/monthly);
//! - [`lock`] holds one process-wide file lock per job (released if the process dies).
//!
//! Like the rest of the library, nothing here prints or exits: progress and log lines are
//! reported through the [`session::SessionEvents`] and [`scheduler::DaemonEvents`] traits.

pub mod catalog;
pub mod config;
pub mod lock;
pub mod paths;
pub mod prune;
pub mod retention;
pub mod scheduler;
pub mod session;

use std::path::PathBuf;

pub use catalog::{Catalog, SessionRow, SessionState, Trigger};
pub use config::{ConfigError, Job, JobFile, ResolvedJob};
pub use paths::StateDir;
pub use retention::Retention;
pub use session::{SessionOutcome, run_session};

/// Result alias of the job layer.
pub type JobResult<T> = std::result::Result<T, JobError>;

/// Everything that can go wrong with jobs, schedules and the catalog.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job file is invalid; every problem found, each with file, line, job and key.
    #[error("{}", config_summary(.0))]
    Config(Vec<ConfigError>),

    #[error("{path}: job file not found")]
    NoConfig { path: PathBuf },

    #[error("no job named {name:?} in {file}{}", known_jobs(.known))]
    UnknownJob {
        name: String,
        file: PathBuf,
        known: Vec<String>,
    },

    #[error("job {job:?} is already running{}", pid_note(*.pid))]
    Busy { job: String, pid: Option<u32> },

    #[error("another coffer daemon is already running with state folder {dir}{}", pid_note(*.pid))]
    DaemonBusy { dir: PathBuf, pid: Option<u32> },

    #[error("job {job:?}: stopped by a signal before the session started")]
    Cancelled { job: String },

    #[error("{path}: session catalog: {source}")]
    Catalog {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{path}: session catalog has schema version {found}; this coffer knows versions up to {supported}"
    )]
    CatalogVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot locate the {what}: {var} and HOME are both unset")]
    NoHome {
        what: &'static str,
        var: &'static str,
    },

    #[error("{file}: no job has a schedule, so the daemon has nothing to do")]
    NothingScheduled { file: PathBuf },

    /// An error of the backup itself (or of loading keys), as the `backup` command reports it.
    #[error(transparent)]
    Backup(#[from] crate::Error),
}

fn config_summary(errors: &[ConfigError]) -> String {
    match errors {
        [] => "invalid job file".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more problem(s))", rest.len()),
    }
}

fn known_jobs(known: &[String]) -> String {
    if known.is_empty() {
        " (it defines no jobs)".into()
    } else {
        format!(" (jobs: {})", known.join(", "))
    }
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl JobError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JobError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn catalog(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        JobError::Catalog {
            path: path.into(),
            source,
        }
    }

    /// A short hint telling the user what to do next.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            JobError::Config(errors) => {
                return errors
                    .iter()
                    .find_map(|e| e.hint.clone())
                    .or_else(|| Some("fix the job file, then run `coffer job check`".into()));
            }
            JobError::NoConfig { .. } => {
                "write a job file (see docs/JOBS.md) or pass --config FILE".into()
            }
            JobError::UnknownJob { .. } => "see `coffer job list`".into(),
            JobError::Busy { .. } => {
                "wait for it to finish, or pass --wait to queue behind it".into()
            }
            JobError::DaemonBusy { .. } => {
                "stop the other daemon, or give this one its own --state-dir".into()
            }
            JobError::Cancelled { .. } => return None,
            JobError::Catalog { .. } => {
                "check the state folder's permissions and free space (or pass --state-dir)".into()
            }
            JobError::CatalogVersion { .. } => {
                "use the newer coffer that wrote this catalog, or another --state-dir".into()
            }
            JobError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "check the path".into()
            }
            JobError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                "check the permissions, or run as a user who may read/write it".into()
            }
            JobError::Io { .. } => return None,
            JobError::NoHome { .. } => "set HOME, or pass --config and --state-dir".into(),
            JobError::NothingScheduled { .. } => {
                "add `schedule = \"0 2 * * *\"` to a job, or use `coffer job run JOB`".into()
            }
            JobError::Backup(e) => return e.hint(),
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
