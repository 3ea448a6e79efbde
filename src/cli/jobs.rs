//! What the job commands (`job`, `daemon`, `history`, `prune`) share: the `--config` and
//! `--state-dir` flags, opening the job file and the state folder, and a few words they
//! all print alike. The plain commands (`backup`, `restore`, ...) do not use this module.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::job::catalog::SessionState;
use coffer::job::lock::LockDir;
use coffer::job::paths::{self, StateDir};
use coffer::job::session::{self, Context, SessionEvents};
use coffer::job::{Catalog, JobError, JobFile};

/// Where the job file and the state folder are. Every job command takes both, even one
/// that reads only one of them, so scripts can pass the same flags to all.
#[derive(Args, Clone, Debug)]
pub struct Locations {
    /// Job file [default: $COFFER_CONFIG, $XDG_CONFIG_HOME/coffer/jobs.toml or ~/.config/coffer/jobs.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder of the session catalog and locks [default: $COFFER_STATE_DIR, $XDG_STATE_HOME/coffer or ~/.local/state/coffer]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The state folder, opened: the session catalog and the job locks.
pub struct Opened {
    pub catalog: Catalog,
    locks: LockDir,
}

impl Opened {
    pub fn cx(&self) -> Context<'_> {
        Context {
            catalog: &self.catalog,
            locks: &self.locks,
        }
    }
}

/// Open the catalog and mark sessions of dead processes interrupted.
pub fn open_state(flag: Option<&Path>) -> Result<Opened, JobError> {
    let state = StateDir::resolve(flag, &paths::process_env)?;
    let catalog = Catalog::open(&state)?;
    let locks = LockDir::new(state.locks_dir());
    let opened = Opened { catalog, locks };
    session::recover_stale(&opened.cx(), &Quiet)?;
    Ok(opened)
}

/// Read the job file (and hand its S3 settings to the library).
pub fn load_config(loc: &Locations) -> Result<JobFile, JobError> {
    let path = paths::config_path(loc.config.as_deref(), &paths::process_env)?;
    let file = JobFile::load(&path)?;
    #[cfg(feature = "s3")]
    coffer::storage::s3::set_settings(file.s3.clone());
    Ok(file)
}

/// Session events nobody is shown (recovering stale sessions before a command).
struct Quiet;
impl SessionEvents for Quiet {}

/// "succeeded", "finished with warnings", "failed", "interrupted".
pub fn outcome_words(state: SessionState) -> &'static str {
    match state {
        SessionState::Warnings => "finished with warnings",
        other => other.as_str(),
    }
}

/// An archive's file name (the folder is the job's destination, shown elsewhere).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string_lossy().into_owned())
}
