//! Restore, in named phases: select the entries ([`select`]), `plan` (refuse conflicts
//! before writing a byte), make the folders, write the file contents from verified blocks
//! in parallel (`files.rs`), make the links, then set the folders' metadata. Files are
//! written under a temporary name and renamed only when all their bytes came from blocks
//! whose tags verified. Every write goes through `target.rs`: relative to open folder
//! descriptors, never by path, so a target shared with other users cannot redirect it.

mod files;
mod select;
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use select::select;

use files::Policy;
use target::set_meta;

use crate::archive::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::index::{Entry, KIND_DIR, KIND_FILE, KIND_SYMLINK};
use crate::progress::{Observer, Warning};

/// Where and what to restore. Shared by the command line and jobs.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Replace files that already exist in the target.
    pub overwrite: bool,
    /// Paths or glob patterns; empty means everything. A pattern that names a folder
    /// selects everything below it.
    pub patterns: Vec<String>,
    /// Restore owner and group too (needs root).
    pub preserve_owner: bool,
    /// Keep set-uid and set-gid bits. Off by default: anyone with a recipient's public key
    /// can write an archive, so these bits are not trusted unless asked for. As root they
    /// are kept only with `preserve_owner` (and only where the owner could be set).
    pub preserve_special_bits: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Blocks read, authenticated and decrypted.
    pub blocks: u64,
    /// Bytes read from the archive's data section.
    pub archive_bytes_read: u64,
    /// For an archive in object storage: bytes and GET requests fetched in all (header,
    /// index and blocks, including read-ahead).
    pub remote_fetched: Option<(u64, u64)>,
    /// Files and folders whose set-uid/set-gid bits were cleared (see
    /// [`RestoreOptions::preserve_special_bits`]).
    pub special_bits_cleared: u64,
    pub warnings: Vec<Warning>,
    pub duration: Duration,
}

/// Restore `archive` (already unlocked) into `opts.target`: plan, then folders, file
/// contents, links and folder metadata, in that order.
pub fn restore(
    archive: &Archive,
    unlocked: &Unlocked,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let selected = select(&unlocked.index.entries, &opts.patterns)?;
    plan(&selected, opts)?;
    if observer.wants_totals() {
        let files = selected.iter().filter(|e| e.kind == KIND_FILE);
        observer.totals(files.clone().count() as u64, files.map(|e| e.size).sum());
    }
    let policy = Arc::new(Policy::new(opts)?);
    let mut report = RestoreReport::default();
    make_folders(&policy, &selected, &mut report)?;
    files::write_contents(archive, unlocked, &policy, &selected, observer, &mut report)?;
    make_links(&policy, &selected, observer, &mut report)?;
    set_folder_metadata(&policy, &selected, observer, &mut report)?;
    report.special_bits_cleared = policy.special_cleared();
    report.duration = started.elapsed();
    report.remote_fetched = archive.source().fetched();
    Ok(report)
}

/// Refuse conflicts before anything is written: a target that is not a folder, a folder
/// where a file goes (or the reverse), an existing file without `overwrite`. (Advisory: the
/// writes themselves never replace what appears meanwhile unless `overwrite` is given.)
fn plan(selected: &[&Entry], opts: &RestoreOptions) -> Result<()> {
    let target = &opts.target;
    if target.symlink_metadata().is_ok() && !target.is_dir() {
        return Err(Error::InvalidOption(format!(
            "{}: restore target exists and is not a folder",
            target.display()
        )));
    }
    for e in selected {
        let dest = target.join(&e.path);
        if let Ok(m) = dest.symlink_metadata() {
            let ok = if e.kind == KIND_DIR {
                m.is_dir()
            } else {
                opts.overwrite && !m.is_dir()
            };
            if !ok {
                return Err(Error::Exists { path: dest });
            }
        }
    }
    Ok(())
}

/// Folders, parents first (the index lists them so). One planted in the target as a link
/// is refused, never descended through.
fn make_folders(policy: &Policy, selected: &[&Entry], report: &mut RestoreReport) -> Result<()> {
    for e in selected.iter().filter(|e| e.kind == KIND_DIR) {
        policy.target.make_dir(&e.path)?;
        report.dirs += 1;
    }
    Ok(())
}

/// Links last of the entries: nothing of the restore is ever written through them.
fn make_links(
    policy: &Policy,
    selected: &[&Entry],
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<()> {
    for e in selected.iter().filter(|e| e.kind == KIND_SYMLINK) {
        let link_target = e.link_target.as_deref().unwrap_or_default();
        let meta = policy.meta(e);
        let problems = policy
            .target
            .symlink(&e.path, link_target, &meta, policy.overwrite())?;
        let dest = policy.target.display(&e.path);
        for message in problems {
            warn(report, observer, &dest, message);
        }
        report.symlinks += 1;
    }
    Ok(())
}

/// Folder owners, permissions and times last, deepest first, so that writing into them
/// neither fails (read-only folders) nor bumps their times. Each folder is reached again
/// from the target without following links: one swapped for a link meanwhile is refused.
fn set_folder_metadata(
    policy: &Policy,
    selected: &[&Entry],
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<()> {
    policy.target.forget_dirs();
    // One folder that cannot be reached (replaced by another user) must not leave every
    // other folder at 0700 and owned by the restoring user: go on, report the first error.
    let mut first_error = None;
    for e in selected.iter().rev().filter(|e| e.kind == KIND_DIR) {
        let dest = policy.target.display(&e.path);
        match policy.target.dir(&e.path) {
            Ok(dir) => {
                for message in set_meta(&*dir, &policy.meta(e)) {
                    warn(report, observer, &dest, message);
                }
            }
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn warn(report: &mut RestoreReport, observer: &dyn Observer, path: &Path, message: String) {
    let w = Warning {
        path: path.to_path_buf(),
        message,
    };
    observer.warning(&w);
    report.warnings.push(w);
}
