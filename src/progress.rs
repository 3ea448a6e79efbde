//! What a running backup, restore, verify or rekey tells its caller: the [`Observer`] the
//! binary implements to draw progress bars and print warnings, and the [`Warning`]s a run
//! collects. Shared by every operation, so none of them imports another for it.

use std::path::{Path, PathBuf};

/// Something skipped or damaged during a run that did not stop it.
#[derive(Clone, Debug)]
pub struct Warning {
    pub path: PathBuf,
    pub message: String,
}

/// Told about progress as the run goes (the binary draws bars and prints warnings).
/// Every method has an empty default; implement what you show.
pub trait Observer: Sync {
    fn warning(&self, _warning: &Warning) {}
    /// A file was completely read (backup) or written (restore).
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    /// Data bytes processed: read from files (backup), restored or checked.
    fn bytes_done(&self, _bytes: u64) {}
    fn bytes_written(&self, _bytes: u64) {}
    /// Whether the run should spend a little work on finding totals for `totals`.
    fn wants_totals(&self) -> bool {
        false
    }
    /// Total files and bytes expected (an estimate for backup: files may change).
    fn totals(&self, _files: u64, _bytes: u64) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}
