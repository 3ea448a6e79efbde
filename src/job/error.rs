//! The errors of the job layer: [`JobError`] for everything that can go wrong with jobs,
//! schedules and the catalog, and [`ConfigError`], one problem of the job file with the
//! file, line, job and key a person needs to find it.
//!
//! They live apart from the modules that raise them so every module of the layer imports
//! its errors from one place and none imports its parent.

use std::fmt;
use std::path::PathBuf;

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

/// One problem in the job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// `job "home"` or `[defaults]`, when known.
    pub section: Option<String>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(s) = &self.section {
            write!(f, "{s}: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "key {k:?}: ")?;
        }
        f.write_str(&self.message)
    }
}
