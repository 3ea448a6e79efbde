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
use target::{SpecialKind, not_permitted};

use crate::archive::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::v2::{
    EntryV2 as Entry, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_HARDLINK,
    KIND_SYMLINK,
};
use crate::progress::{Observer, Warning};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

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
    /// Do not restore extended attributes and ACLs.
    pub skip_xattrs: bool,
    /// Allowed signers: when not empty, the archive must be signed by one of them and the
    /// signature must verify (FORMAT.md v2.9.5) before anything is written.
    pub signers: Vec<crate::signing::VerifyingKey>,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
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
/// contents, hard links, symlinks, special files and folder metadata, in that order.
pub fn restore(
    archive: &Archive,
    unlocked: &Unlocked,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<RestoreReport> {
    let started = Instant::now();
    // The signature first: an unsigned archive, another signer or changed signed content
    // is refused before anything is read for restoring, let alone written.
    if !opts.signers.is_empty() {
        unlocked.verify_signature(archive, &opts.signers)?;
    }
    // Every entry is read (and validated) before anything is written.
    let mut entries = Vec::with_capacity(unlocked.entry_count().min(1 << 20) as usize);
    unlocked.for_each_entry(archive, |_, e| {
        entries.push(e);
        Ok(())
    })?;
    let selected = select(&entries, &opts.patterns)?;
    let links = resolve_links(&entries, &selected)?;
    plan(&selected, opts)?;
    if observer.wants_totals() {
        let files = selected.iter().filter(|e| e.kind == KIND_FILE);
        observer.totals(files.clone().count() as u64, files.map(|e| e.size).sum());
    }
    let policy = Arc::new(Policy::new(opts)?);
    let mut report = RestoreReport::default();
    make_folders(&policy, &selected, &mut report)?;
    // A hard link whose first name is not restored gets that name's data and metadata as
    // an object of its own.
    let copies: Vec<Entry> = links
        .iter()
        .filter(|(_, (_, how))| matches!(how, Link::Copy))
        .map(|(link, (t, _))| Entry {
            path: link.path.clone(),
            ..entries[*t as usize].clone()
        })
        .collect();
    let mut objects: Vec<&Entry> = selected.clone();
    objects.extend(copies.iter());
    let files: Vec<Entry> = objects
        .iter()
        .filter(|e| e.kind == KIND_FILE)
        .map(|e| (*e).clone())
        .collect();
    files::write_contents(archive, unlocked, &policy, files, observer, &mut report)?;
    make_links(&policy, &objects, observer, &mut report)?;
    make_specials(&policy, &objects, observer, &mut report)?;
    // Last of the objects: a link's first name may be a file, a symlink, a FIFO or a device.
    make_hard_links(&policy, &links, &mut report)?;
    set_folder_metadata(&policy, &selected, observer, &mut report)?;
    report.special_bits_cleared = policy.special_cleared();
    report.duration = started.elapsed();
    report.remote_fetched = archive.source().fetched();
    Ok(report)
}

/// How a selected hard link is restored: linked to its first name, or (when that name is
/// not restored) as a copy of it.
enum Link {
    /// A second name of the object restored at this path.
    To(Vec<u8>),
    Copy,
}

/// Each selected hard link with its first name's entry number and how it is restored.
/// Validation already checked that the number precedes the link and names a file, symlink,
/// FIFO or device.
fn resolve_links<'a>(
    entries: &[Entry],
    selected: &[&'a Entry],
) -> Result<Vec<(&'a Entry, (u64, Link))>> {
    let chosen: std::collections::HashSet<&[u8]> =
        selected.iter().map(|e| e.path.as_slice()).collect();
    // When the first name is not restored, the first selected link of its set becomes the
    // object and the others link to it: the names stay one inode.
    let mut stand_in: std::collections::HashMap<u64, Vec<u8>> = Default::default();
    let mut out = Vec::new();
    for e in selected.iter().filter(|e| e.kind == KIND_HARDLINK) {
        let t = e.hardlink_to.unwrap_or(u64::MAX);
        let target = entries.get(t as usize).ok_or_else(|| {
            Error::Internal(format!("hard link to entry {t}, which is not in the index"))
        })?;
        let how = if chosen.contains(target.path.as_slice()) {
            Link::To(target.path.clone())
        } else if let Some(first) = stand_in.get(&t) {
            Link::To(first.clone())
        } else {
            stand_in.insert(t, e.path.clone());
            Link::Copy
        };
        out.push((*e, (t, how)));
    }
    Ok(out)
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
        let dest = target.join(OsStr::from_bytes(&e.path));
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

/// Hard links, after the objects they name are in place: `linkat` to the first name (or
/// to the link that stands in for it).
fn make_hard_links(
    policy: &Policy,
    links: &[(&Entry, (u64, Link))],
    report: &mut RestoreReport,
) -> Result<()> {
    for (link, (_, how)) in links {
        match how {
            Link::To(existing) => {
                policy
                    .target
                    .hard_link(existing, &link.path, policy.overwrite())?;
                report.hardlinks += 1;
            }
            // Made as objects of their own with the other entries of their kind.
            Link::Copy => {}
        }
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
        let (meta, xattrs) = policy.meta(e);
        let problems = policy.target.symlink_with_xattrs(
            &e.path,
            link_target,
            &meta,
            &xattrs,
            policy.overwrite(),
        )?;
        let dest = policy.target.display(&e.path);
        for message in problems {
            warn(report, observer, &dest, message);
        }
        report.symlinks += 1;
    }
    Ok(())
}

/// FIFOs and device nodes. Devices only as root (a warning otherwise, as tar does).
fn make_specials(
    policy: &Policy,
    selected: &[&Entry],
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<()> {
    for e in selected
        .iter()
        .filter(|e| matches!(e.kind, KIND_FIFO | KIND_CHAR | KIND_BLOCK))
    {
        let dest = policy.target.display(&e.path);
        let kind = match e.kind {
            KIND_FIFO => SpecialKind::Fifo,
            KIND_CHAR => SpecialKind::Char,
            _ => SpecialKind::Block,
        };
        if kind != SpecialKind::Fifo && !policy.is_root() {
            warn(
                report,
                observer,
                &dest,
                "device node not restored: creating devices needs root".into(),
            );
            continue;
        }
        let (meta, xattrs) = policy.meta(e);
        let made = policy.target.special(
            &e.path,
            kind,
            (e.rdev_major, e.rdev_minor),
            &meta,
            &xattrs,
            policy.overwrite(),
        );
        let problems = match made {
            Err(err) if not_permitted(&err) => {
                warn(report, observer, &dest, format!("not restored: {err}"));
                continue;
            }
            made => made?,
        };
        for message in problems {
            warn(report, observer, &dest, message);
        }
        report.specials += 1;
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
                for message in policy.apply_meta(&*dir, e) {
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
