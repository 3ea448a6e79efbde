//! Incremental chains on the backup host (FORMAT.md v2.8): the options a run takes to be
//! an incremental, what it reports about its place in the chain, and the local state
//! (`state`) that lets a run reference bytes earlier archives already hold without a
//! single secret: paths, metadata, content and window hashes, extents and each
//! archive's commitment.

#[cfg(feature = "jobs")]
pub(crate) mod state;
#[cfg(feature = "jobs")]
mod writer;

use std::path::PathBuf;

use crate::keys::SessionId;

/// How a run may join a chain. Without it (`BackupOptions::chain = None`) every run is a
/// full archive and no state is kept.
#[derive(Clone, Debug)]
pub struct ChainOptions {
    /// The state database (`chains.sqlite`, FORMAT.md v2.8.4); created when missing.
    pub state: PathBuf,
    /// Make this run a full: the user (`--full`) or a schedule (`active_full`) asked; the
    /// reason is reported as the notice.
    pub full: Option<String>,
    /// A full after this many archives in a chain (`full_every`: the full counts).
    pub full_every: Option<u32>,
}

impl ChainOptions {
    pub fn new(state: PathBuf) -> Self {
        ChainOptions {
            state,
            full: None,
            full_every: None,
        }
    }
}

/// Whether a run wrote a full archive or an incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    Full,
    Incremental,
}

impl ChainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Full => "full",
            ChainKind::Incremental => "incremental",
        }
    }
}

/// A run's place in its chain.
#[derive(Clone, Debug)]
pub struct ChainReport {
    pub kind: ChainKind,
    /// The parents the archive's header lists (its flat parent table, oldest first):
    /// every earlier archive its files' data is read from. Empty for a full.
    pub parents: Vec<SessionId>,
    /// Why a run that could have been an incremental (chain options given) is a full:
    /// the one-line notice. `None` for an incremental and for runs without chain options.
    pub full_reason: Option<String>,
    /// Files whose data was not read because size, times, inode and device were
    /// unchanged since the last run.
    pub files_unchanged: u64,
    /// Data bytes of this restore point held in parents rather than in this archive.
    pub bytes_referenced: u64,
}

impl Default for ChainReport {
    fn default() -> Self {
        ChainReport {
            kind: ChainKind::Full,
            parents: Vec::new(),
            full_reason: None,
            files_unchanged: 0,
            bytes_referenced: 0,
        }
    }
}
