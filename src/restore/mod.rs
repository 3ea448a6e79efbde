//! Restore, in named phases: select the entries ([`select`]), `plan` (refuse conflicts
//! before writing a byte), make the folders, write the file contents from verified blocks
//! in parallel (`files.rs`), make the links, then set the folders' metadata. Files are
//! written under a temporary name and renamed only when all their bytes came from blocks
//! whose tags verified. Every write goes through `target.rs`: relative to open folder
//! descriptors, never by path, so a target shared with other users cannot redirect it.

mod files;
mod pieces;
mod select;
mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use files::Policy;
use select::{Open, Patterns, Selector, Step};
use std::collections::HashMap;
use target::{SpecialKind, not_permitted};

use crate::archive::chain::{self, Need, ParentArchive};
use crate::archive::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::v2::{
    EntryV2 as Entry, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_HARDLINK,
    KIND_SYMLINK,
};
use crate::progress::{Observer, Warning};
use crate::recipient::Identity;
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
    /// Another folder to look for an incremental's parent archives in, after the folder
    /// (or S3 prefix) of the archive itself (FORMAT.md v2.8.2).
    pub chain_dir: Option<PathBuf>,
}

/// Data read from one parent archive of an incremental.
#[derive(Clone, Debug, Default)]
pub struct ParentRead {
    /// The parent's session id, in hex.
    pub session_id: String,
    /// Where it was found.
    pub path: PathBuf,
    /// Bytes of its data section read (block frames).
    pub bytes: u64,
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
    /// For an incremental: the parents opened (only those the selected files need) and
    /// the data bytes read from each.
    pub parents_read: Vec<ParentRead>,
    /// Bytes of the archive's index read (v2: the chunks a selective restore needs, read
    /// twice: once to check and plan, once to restore; 0 for v1, read whole at unlock).
    pub index_bytes_read: u64,
    /// For an archive in object storage: bytes and GET requests fetched in all (header,
    /// index and blocks, including read-ahead), from the archive and the parents it
    /// opened.
    pub remote_fetched: Option<(u64, u64)>,
    /// Files and folders whose set-uid/set-gid bits were cleared (see
    /// [`RestoreOptions::preserve_special_bits`]).
    pub special_bits_cleared: u64,
    pub warnings: Vec<Warning>,
    pub duration: Duration,
}

/// Entries restored per batch: their files' contents are written through one run of the
/// block pipeline, then their links and special files, then the metadata of the folders
/// whose subtrees the batch completed. Bounds memory whatever the number of entries.
const BATCH: usize = 16_384;
/// ... and at most about this many bytes of names, link targets and extended attributes
/// (entries of a hostile index may carry 256 KiB of attributes each).
const BATCH_BYTES: usize = 32 << 20;

/// Restore `archive` (already unlocked) into `opts.target`, in two passes over the index
/// as it streams (v2: chunk by chunk; with patterns, only the chunks that can hold a
/// match): the first checks every entry and refuses conflicts before anything is written,
/// the second restores in batches — folders as they come, then per batch file contents,
/// symlinks, FIFOs and devices, hard links, and the metadata of completed folders.
///
/// An incremental whose selected files need a parent needs the identity to open it: use
/// [`restore_chain`] (this refuses such a restore before writing anything).
pub fn restore(
    archive: &Archive,
    unlocked: &Unlocked,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<RestoreReport> {
    restore_inner(archive, unlocked, None, opts, observer)
}

/// [`restore`] for any archive, an incremental included: after the first pass, the parents
/// the selected files need (only those) are located next to the archive or in
/// `opts.chain_dir`, unlocked with `identity` and proven to be the archives this one was
/// made from (FORMAT.md v2.8.2), and every extent into each is checked against its stream,
/// all before the target is touched.
pub fn restore_chain(
    archive: &Archive,
    unlocked: &Unlocked,
    identity: &dyn Identity,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<RestoreReport> {
    restore_inner(archive, unlocked, Some(identity), opts, observer)
}

fn restore_inner(
    archive: &Archive,
    unlocked: &Unlocked,
    identity: Option<&dyn Identity>,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<RestoreReport> {
    let started = Instant::now();
    // The signature first: an unsigned archive, another signer or changed signed content
    // is refused before anything is read for restoring, let alone written.
    if !opts.signers.is_empty() {
        unlocked.verify_signature(archive, &opts.signers)?;
    }
    let plan = unlocked.chunk_plan(Patterns::new(&opts.patterns)?.prefixes());
    let plan = plan.as_deref();
    let (chosen, needs) = scan(archive, unlocked, plan, opts, observer)?;
    let parents = open_parents(archive, unlocked, identity, opts, &needs)?;
    let mut list = vec![Some((archive, unlocked))];
    list.extend(
        parents
            .iter()
            .map(|p| p.as_ref().map(|p| (&p.archive, &p.unlocked))),
    );
    let members = files::Members { list };
    let policy = Arc::new(Policy::new(opts)?);
    let mut run = Run {
        archive,
        unlocked,
        members: &members,
        read: vec![0; members.list.len()],
        policy: &policy,
        observer,
        chosen: &chosen,
        stand_ins: HashMap::new(),
        batch: Batch::default(),
        report: RestoreReport::default(),
    };
    let mut selector = Selector::new(Patterns::new(&opts.patterns)?);
    unlocked.for_each_entry_in(archive, plan, |n, e| {
        let step = selector.next(n, &e);
        run.entry(e, step)
    })?;
    run.batch
        .closed
        .extend(selector.finish().into_iter().filter(|o| o.needed));
    run.flush()?;
    let read = run.read;
    let mut report = run.report;
    report.archive_bytes_read = read[0];
    report.parents_read = parents
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.as_ref().map(|p| ParentRead {
                session_id: p.archive.session_id_hex(),
                path: p.archive.path().to_path_buf(),
                bytes: read[i + 1],
            })
        })
        .collect();
    report.special_bits_cleared = policy.special_cleared();
    report.index_bytes_read = unlocked.index_bytes_read();
    report.duration = started.elapsed();
    report.remote_fetched = parents
        .iter()
        .flatten()
        .map(|p| p.archive.source().fetched())
        .fold(archive.source().fetched(), |sum, f| match (sum, f) {
            (Some((b, r)), Some((b2, r2))) => Some((b + b2, r + r2)),
            (sum, f) => sum.or(f),
        });
    Ok(report)
}

/// Open the parents the selected files need (v2.8.2 steps 2–6), in table order, each
/// checked before the next; `None` for the others. With required signers, each parent's
/// signature is verified too.
fn open_parents(
    archive: &Archive,
    unlocked: &Unlocked,
    identity: Option<&dyn Identity>,
    opts: &RestoreOptions,
    needs: &[Need],
) -> Result<Vec<Option<ParentArchive>>> {
    let mut parents = Vec::new();
    for (k, need) in needs.iter().enumerate().skip(1) {
        if need.files == 0 {
            parents.push(None);
            continue;
        }
        let identity = identity.ok_or_else(|| {
            Error::InvalidOption(format!(
                "{}: an incremental archive; restoring it needs its parents, opened with the identity (restore_chain)",
                archive.path().display()
            ))
        })?;
        let p = chain::open_parent(
            archive,
            unlocked,
            k,
            identity,
            opts.chain_dir.as_deref(),
            need.files,
        )?;
        if !opts.signers.is_empty() {
            p.unlocked.verify_signature(&p.archive, &opts.signers)?;
        }
        chain::check_extent_end(archive, &p, need.end, &need.entry)?;
        parents.push(Some(p));
    }
    Ok(parents)
}

/// Entry numbers restored, one bit each: how a hard link whose first name comes earlier is
/// made (linked to it, or a copy when it is not restored).
struct Chosen(Vec<u64>);

impl Chosen {
    fn set(&mut self, n: u64) {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    fn get(&self, n: u64) -> bool {
        self.0
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }
}

/// The first pass: every entry read and validated, the selection made (every pattern must
/// match), conflicts in the target refused before anything is written, totals counted.
fn scan(
    archive: &Archive,
    unlocked: &Unlocked,
    plan: Option<&[usize]>,
    opts: &RestoreOptions,
    observer: &dyn Observer,
) -> Result<(Chosen, Vec<Need>)> {
    let target = &opts.target;
    if target.symlink_metadata().is_ok() && !target.is_dir() {
        return Err(Error::InvalidOption(format!(
            "{}: restore target exists and is not a folder",
            target.display()
        )));
    }
    let mut selector = Selector::new(Patterns::new(&opts.patterns)?);
    let mut chosen = Chosen(Vec::new());
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut needs = vec![Need::default(); archive.params().chain.len() + 1];
    // Hard-link sets whose first name is not selected: one selected link restores it.
    let mut stand_ins = std::collections::HashSet::new();
    unlocked.for_each_entry_in(archive, plan, |n, e| {
        let step = selector.next(n, &e);
        for a in &step.newly_needed {
            refuse_conflict(a, opts)?;
        }
        if step.chosen {
            chosen.set(n);
            refuse_conflict(&e, opts)?;
            if e.kind == KIND_FILE {
                files += 1;
                bytes += e.size;
                Need::note(&mut needs, &e);
            }
            if e.kind == KIND_HARDLINK {
                let t = e.hardlink_to.unwrap_or(u64::MAX);
                if !chosen.get(t) && stand_ins.insert(t) {
                    Need::note(&mut needs, &unlocked.entry(archive, t)?);
                }
            }
        }
        Ok(())
    })?;
    selector.patterns.check_all_matched()?;
    observer.totals(files, bytes);
    Ok((chosen, needs))
}

/// A folder where a file goes (or the reverse), or an existing file without `overwrite`.
/// (Advisory: the writes themselves never replace what appears meanwhile unless
/// `overwrite` is given.)
fn refuse_conflict(e: &Entry, opts: &RestoreOptions) -> Result<()> {
    let dest = opts.target.join(OsStr::from_bytes(&e.path));
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
    Ok(())
}

/// What one batch restores after its folders were made.
#[derive(Default)]
struct Batch {
    files: Vec<Entry>,
    symlinks: Vec<Entry>,
    specials: Vec<Entry>,
    /// Hard links and the path of the object each is a second name of.
    hard_links: Vec<(Entry, Vec<u8>)>,
    /// Folders whose subtrees are complete, deepest first: their metadata goes last.
    closed: Vec<Open>,
    /// About how many bytes the entries above hold.
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.files.len() + self.symlinks.len() + self.specials.len() + self.hard_links.len()
    }
}

/// About the memory an entry takes beyond its fixed fields.
fn entry_bytes(e: &Entry) -> usize {
    let xattrs: usize = e
        .xattrs
        .iter()
        .map(|x| x.name.len() + x.value.len() + 48)
        .sum();
    200 + e.path.len()
        + e.link_target.as_ref().map_or(0, Vec::len)
        + xattrs
        + e.extents.len() * 24
        + e.data_ranges.as_ref().map_or(0, |r| r.len() * 16)
}

/// The second pass.
struct Run<'a> {
    archive: &'a Archive,
    unlocked: &'a Unlocked,
    /// The archive and its open parents, where file data is read from.
    members: &'a files::Members<'a>,
    /// Data bytes read from each member.
    read: Vec<u64>,
    policy: &'a Arc<Policy>,
    observer: &'a dyn Observer,
    chosen: &'a Chosen,
    /// For a hard-link set whose first name is not restored: the link restored in its
    /// place, which the set's other selected names link to (so they stay one inode).
    stand_ins: HashMap<u64, Vec<u8>>,
    batch: Batch,
    report: RestoreReport,
}

impl Run<'_> {
    fn entry(&mut self, e: Entry, step: Step) -> Result<()> {
        self.batch
            .closed
            .extend(step.closed.into_iter().filter(|o| o.needed));
        for a in &step.newly_needed {
            self.make_dir(a)?;
        }
        if step.chosen {
            match e.kind {
                KIND_DIR => self.make_dir(&e)?,
                KIND_HARDLINK => self.hard_link(e)?,
                _ => self.object(e),
            }
        }
        if self.batch.len() >= BATCH || self.batch.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Folders, parents first (the index lists them so). One planted in the target as a
    /// link is refused, never descended through.
    fn make_dir(&mut self, e: &Entry) -> Result<()> {
        self.policy.target.make_dir(&e.path)?;
        self.report.dirs += 1;
        Ok(())
    }

    fn object(&mut self, e: Entry) {
        self.batch.bytes += entry_bytes(&e);
        match e.kind {
            KIND_FILE => self.batch.files.push(e),
            KIND_SYMLINK => self.batch.symlinks.push(e),
            _ => self.batch.specials.push(e),
        }
    }

    /// A hard link: a second name of its first name's object when that is restored (or of
    /// the link standing in for it); otherwise the first such link becomes the object
    /// itself, with the first name's data and metadata.
    fn hard_link(&mut self, e: Entry) -> Result<()> {
        let t = e.hardlink_to.unwrap_or(u64::MAX);
        if self.chosen.get(t) {
            let existing = self.unlocked.entry(self.archive, t)?.path;
            self.batch.hard_links.push((e, existing));
        } else if let Some(first) = self.stand_ins.get(&t) {
            let existing = first.clone();
            self.batch.hard_links.push((e, existing));
        } else {
            let target = self.unlocked.entry(self.archive, t)?;
            self.stand_ins.insert(t, e.path.clone());
            self.object(Entry {
                path: e.path,
                ..target
            });
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let b = std::mem::take(&mut self.batch);
        let (policy, observer) = (self.policy, self.observer);
        let report = &mut self.report;
        let read = files::write_contents(self.members, policy, b.files, observer, report)?;
        for (total, n) in self.read.iter_mut().zip(read) {
            *total += n;
        }
        make_links(policy, &b.symlinks, observer, report)?;
        make_specials(policy, &b.specials, observer, report)?;
        // Last of the objects: a link's first name may be a file, a symlink, a FIFO or a
        // device.
        for (link, existing) in &b.hard_links {
            policy
                .target
                .hard_link(existing, &link.path, policy.overwrite())?;
            report.hardlinks += 1;
        }
        set_folder_metadata(
            self.archive,
            self.unlocked,
            policy,
            &b.closed,
            observer,
            report,
        )
    }
}

/// Links last of the entries: nothing of the restore is ever written through them.
fn make_links(
    policy: &Policy,
    selected: &[Entry],
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
    selected: &[Entry],
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

/// Folder owners, permissions and times once nothing more goes into them, deepest first,
/// so that writing into them neither fails (read-only folders) nor bumps their times. Each
/// folder is reached again from the target without following links: one swapped for a
/// link meanwhile is refused.
fn set_folder_metadata(
    archive: &Archive,
    unlocked: &Unlocked,
    policy: &Policy,
    closed: &[Open],
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<()> {
    if closed.is_empty() {
        return Ok(());
    }
    policy.target.forget_dirs();
    // One folder that cannot be reached (replaced by another user) must not leave every
    // other folder at 0700 and owned by the restoring user: go on, report the first error.
    let mut first_error = None;
    for o in closed {
        // The stack kept the folder without its extended attributes.
        let full = unlocked.entry(archive, o.number)?;
        let e = &full;
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
