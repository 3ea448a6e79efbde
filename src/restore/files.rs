//! File contents: the blocks the selected files need, read in order, opened (tag first) in
//! parallel, and their plaintext written into files under temporary names. A file that lies
//! wholly inside one block is written by the worker that verified the block; files spanning
//! blocks by the ordered [`FileWriter`]. [`Policy`] is what both apply: the target, and what
//! of an entry's metadata is kept.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RestoreReport;
use super::target::{Meta, MetaProblems, NewFile, Target, set_meta_with_xattrs};
use crate::archive::verify::frame_tag_is;
use crate::archive::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::index::BlockRef;
use crate::format::v2::Xattr;
use crate::format::v2::content::ContentHasher;
use crate::format::v2::{DataRange, EntryV2 as Entry, KIND_FILE, KIND_SYMLINK};
use std::os::fd::AsFd;

/// Where a file's data bytes start in the archive's stream.
pub(super) fn pos(e: &Entry) -> u64 {
    e.extents.first().map_or(0, |x| x.offset)
}

/// How many data bytes a file has (its size, or the bytes of its data ranges).
pub(super) fn dlen(e: &Entry) -> u64 {
    e.data_len()
}
use crate::fsutil::{CHUNK, ChunkWriter, reopen_direct};
use crate::pipeline::{self, sink_stopped, slot_count};
use crate::progress::{Observer, Warning};
use crate::seal::{OpenError, Opened};

/// The archives file data is read from: member 0 is the archive being restored, member `k`
/// its parent `k` (FORMAT.md v2.7.1 extents), `None` for a parent no selected file needs
/// (never opened).
pub(super) struct Members<'a> {
    pub list: Vec<Option<(&'a Archive, &'a Unlocked)>>,
}

impl<'a> Members<'a> {
    pub fn get(&self, k: u32) -> Result<(&'a Archive, &'a Unlocked)> {
        self.list
            .get(k as usize)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Internal(format!("archive {k} of the chain is not open")))
    }
}

/// Write the contents of the selected files: empty ones first; then, per archive, the files
/// whose data is one extent in it, through the block pipeline run against that archive;
/// then the files in several pieces (or sharing bytes with another file of the batch)
/// through one ordered pipeline over the blocks of every archive they need. Each block's
/// tag is checked before a byte of it reaches a file. Returns the archive bytes read per
/// member.
pub(super) fn write_contents(
    members: &Members<'_>,
    policy: &Arc<Policy>,
    files: Vec<Entry>,
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<Vec<u64>> {
    let mut read = vec![0u64; members.list.len()];
    let (files, empty): (Vec<&Entry>, Vec<&Entry>) = files
        .iter()
        .filter(|e| e.kind == KIND_FILE)
        .partition(|e| dlen(e) > 0);
    let mut writer = FileWriter {
        policy,
        files: &[],
        next: 0,
        current: None,
        observer,
        report,
    };
    for e in &empty {
        let pf = writer.open(e)?;
        writer.finish(pf, e)?;
    }
    let (single, mut pieces): (Vec<&Entry>, Vec<&Entry>) =
        files.into_iter().partition(|e| e.extents.len() == 1);
    for k in 0..members.list.len() as u32 {
        let mut mine: Vec<&Entry> = single
            .iter()
            .copied()
            .filter(|e| e.extents[0].archive == k)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let (archive, unlocked) = members.get(k)?;
        // Files are written in stream order, as their blocks arrive.
        mine.sort_by_key(|e| pos(e));
        let block_size = archive.params().block_size as u64;
        let (in_block, spanning, shared) = split_single(mine, block_size);
        pieces.extend(shared);
        read[k as usize] += write_single(
            archive,
            unlocked,
            policy,
            in_block,
            &spanning,
            observer,
            &mut *writer.report,
        )?;
    }
    if !pieces.is_empty() {
        super::pieces::write_pieces(members, policy, &pieces, observer, writer.report, &mut read)?;
    }
    Ok(read)
}

/// Files with one extent in one archive, in stream order, split three ways: those inside
/// one block (written by the workers), those spanning blocks that the ordered writer can
/// take in stream order, and those starting before the previous spanning file ended (bytes
/// shared with it, as a copied file's are in an incremental): those go through the piece
/// pipeline, which needs no order.
fn split_single(files: Vec<&Entry>, block_size: u64) -> (Vec<&Entry>, Vec<&Entry>, Vec<&Entry>) {
    let (mut in_block, mut spanning, mut shared) = (Vec::new(), Vec::new(), Vec::new());
    let mut end = 0u64;
    for e in files {
        let (first, last) = block_span(e, block_size);
        if first == last {
            in_block.push(e);
        } else if pos(e) >= end {
            end = pos(e) + dlen(e);
            spanning.push(e);
        } else {
            shared.push(e);
        }
    }
    (in_block, spanning, shared)
}

/// The files of one archive whose data is one extent of it: those inside one block are
/// written by the worker that opened and verified that block, so small files are created on
/// every core at once (creating files, not copying bytes, is what a tree of small files
/// costs); those spanning blocks are written here, in stream order, as their blocks arrive.
/// Returns the archive bytes read.
fn write_single(
    archive: &Archive,
    unlocked: &Unlocked,
    policy: &Arc<Policy>,
    in_block: Vec<&Entry>,
    spanning: &[&Entry],
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<u64> {
    let block_size = archive.params().block_size as u64;
    let mut all: Vec<&Entry> = in_block.iter().chain(spanning).copied().collect();
    all.sort_by_key(|e| pos(e));
    let needed = needed_blocks(&all, block_size);
    let in_block = Arc::new(InBlockFiles {
        policy: Arc::clone(policy),
        block_size,
        entries: in_block.into_iter().cloned().collect(),
    });
    let mut writer = FileWriter {
        policy,
        files: spanning,
        next: 0,
        current: None,
        observer,
        report,
    };
    let archive_bytes = run_blocks(archive, unlocked, &needed, in_block, &mut writer)?;
    if writer.current.is_some() || writer.next < spanning.len() {
        return Err(Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: archive.data_start(),
            detail: "data stream ended before every file was complete".into(),
        });
    }
    Ok(archive_bytes)
}

/// The blocks the files' bytes lie in, ascending, each once (files are in stream order).
fn needed_blocks(files: &[&Entry], block_size: u64) -> Vec<u64> {
    let mut needed: Vec<u64> = Vec::new();
    for f in files {
        let (first, last) = block_span(f, block_size);
        let from = match needed.last() {
            Some(&l) if l >= first => l + 1,
            _ => first,
        };
        needed.extend(from..=last);
    }
    needed
}

/// Read the `needed` blocks in order, open them on the workers (which also write the files
/// lying inside one block) and hand them to `writer` in order; returns the archive bytes
/// read.
fn run_blocks(
    archive: &Archive,
    unlocked: &Unlocked,
    needed: &[u64],
    in_block: Arc<InBlockFiles>,
    writer: &mut FileWriter<'_>,
) -> Result<u64> {
    let block_size = archive.params().block_size as u64;
    let count = unlocked.block_count();
    let last_block = count.saturating_sub(1);
    let reader = archive.source();
    let data_start = archive.data_start();
    let mut archive_bytes = 0u64;
    // The sealer is shared with rayon workers for the duration of the run.
    let work_sealer = Arc::clone(&unlocked.sealer);
    pipeline::run(
        slot_count(),
        move |feed| {
            for &b in needed {
                let (r, tag) = unlocked.block(archive, b)?;
                let mut slot: Slot = feed.take().ok_or_else(sink_stopped)?;
                slot.frame.resize(r.frame_len as usize, 0);
                reader.read_exact_at(&mut slot.frame, data_start + r.offset)?;
                slot.block = b;
                slot.r = r;
                slot.last = b == last_block;
                slot.raw_len = r.raw_len as usize;
                // v2: the frame must be the one the block table recorded (what a signature
                // covers), besides carrying a valid tag.
                slot.tag_differs = tag.is_some_and(|t| !frame_tag_is(&slot.frame, &t));
                feed.submit(slot);
            }
            Ok(())
        },
        move |slot: &mut Slot, _seq| {
            if slot.tag_differs {
                slot.failure = Some(OpenError::Tag);
                return;
            }
            match work_sealer.open_in_place(&mut slot.frame, slot.block, slot.last, &mut slot.plain)
            {
                Ok(Opened::InFrame(range)) => slot.plain_range = Some(range),
                Ok(Opened::InScratch) => slot.plain_range = None,
                Err(e) => {
                    slot.failure = Some(e);
                    return;
                }
            }
            if slot.plain().len() != slot.raw_len {
                slot.failure = Some(OpenError::Malformed("length differs from the index".into()));
                return;
            }
            // The block's tag verified above: its plaintext may now reach files.
            in_block.write_files_of(slot);
        },
        |slot, _seq| {
            if let Some(e) = slot.failure.take() {
                return Err(archive.block_error(slot.block, &slot.r, e));
            }
            for w in slot.warnings.drain(..) {
                writer.warned(w);
            }
            for (path, size) in slot.files_done.drain(..) {
                writer.observer.bytes_done(size);
                writer.restored(&path, size);
            }
            if let Some(e) = slot.write_failure.take() {
                return Err(e);
            }
            archive_bytes += slot.frame.len() as u64;
            writer.report.blocks += 1;
            writer.write_block(slot.block * block_size, slot.plain())
        },
    )?;
    Ok(archive_bytes)
}

#[derive(Default)]
struct Slot {
    frame: Vec<u8>,
    plain: Vec<u8>,
    block: u64,
    r: BlockRef,
    tag_differs: bool,
    last: bool,
    /// Plaintext length the index gives for this block.
    raw_len: usize,
    /// Where the plaintext is: a range of `frame`, or all of `plain`.
    plain_range: Option<std::ops::Range<usize>>,
    failure: Option<OpenError>,
    /// Files the worker restored from this block (final path, size), warnings it met, and
    /// the error that stopped it; the sink reports them in stream order.
    files_done: Vec<(PathBuf, u64)>,
    warnings: Vec<Warning>,
    write_failure: Option<Error>,
}

impl Slot {
    fn plain(&self) -> &[u8] {
        match &self.plain_range {
            Some(range) => &self.frame[range.clone()],
            None => &self.plain[..],
        }
    }
}

/// The first and last block a (non-empty) file's bytes lie in.
fn block_span(e: &Entry, block_size: u64) -> (u64, u64) {
    (pos(e) / block_size, (pos(e) + dlen(e) - 1) / block_size)
}

/// The selected files that lie wholly inside one block, in stream order, with what a
/// worker needs to write them (the workers outlive any borrow of the restore's state).
struct InBlockFiles {
    policy: Arc<Policy>,
    block_size: u64,
    entries: Vec<Entry>,
}

impl InBlockFiles {
    /// Write every file that lies inside the slot's (verified) block; stops at the first
    /// error, which the sink reports.
    fn write_files_of(&self, slot: &mut Slot) {
        let start = slot.block * self.block_size;
        let end = start + self.block_size;
        let first = self.entries.partition_point(|e| pos(e) < start);
        let count = self.entries[first..].partition_point(|e| pos(e) < end);
        for e in &self.entries[first..first + count] {
            let from = (pos(e) - start) as usize;
            let Some(data) = slot.plain().get(from..from + dlen(e) as usize) else {
                slot.failure = Some(OpenError::Malformed(format!(
                    "the index places {:?} beyond the block's data",
                    crate::format::v2::display_path(&e.path)
                )));
                return;
            };
            let mut warnings = Vec::new();
            let written = self.policy.create(e, false).and_then(|mut pf| {
                pf.write(data)?;
                self.policy.finish(pf, e, &mut warnings)
            });
            slot.warnings.append(&mut warnings);
            match written {
                Ok(dest) => slot.files_done.push((dest, dlen(e))),
                Err(err) => {
                    slot.write_failure = Some(err);
                    return;
                }
            }
        }
    }
}

fn note(warnings: &mut Vec<Warning>, path: &Path, message: String) {
    warnings.push(Warning {
        path: path.to_path_buf(),
        message,
    });
}

/// How this restore writes: the target, and what it keeps of an entry's metadata. Shared
/// by the ordered writer and the workers that write files lying inside one block.
pub(super) struct Policy {
    pub target: Target,
    overwrite: bool,
    preserve_owner: bool,
    /// Set-uid/set-gid are kept (decided once, in [`Policy::new`]).
    keep_special_bits: bool,
    /// Entries whose set-uid/set-gid bits (or file capabilities) were cleared.
    special_cleared: AtomicU64,
    skip_xattrs: bool,
    root: bool,
}

impl Policy {
    pub fn new(opts: &super::RestoreOptions) -> Result<Policy> {
        Ok(Policy {
            target: Target::open(&opts.target)?,
            overwrite: opts.overwrite,
            preserve_owner: opts.preserve_owner,
            // Kept only when asked for, and, as root, only with the owner they belong to: a
            // set-uid bit on a file that root now owns would make a set-uid-root program.
            keep_special_bits: opts.preserve_special_bits
                && (opts.preserve_owner || !rustix::process::geteuid().is_root()),
            special_cleared: AtomicU64::new(0),
            skip_xattrs: opts.skip_xattrs,
            root: rustix::process::geteuid().is_root(),
        })
    }

    pub fn overwrite(&self) -> bool {
        self.overwrite
    }

    /// Whether the restore runs as root (device nodes, `trusted.*` attributes).
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Owner, extended attributes, mode and times, in that order (FORMAT.md v2.10.2 step
    /// 18: `chown` clears `security.capability`, so attributes follow it).
    pub fn apply_meta(&self, fd: impl AsFd, e: &Entry) -> MetaProblems {
        let (meta, xattrs) = self.meta(e);
        set_meta_with_xattrs(fd, &meta, &xattrs)
    }

    /// Files and folders whose set-uid/set-gid bits were cleared so far.
    pub fn special_cleared(&self) -> u64 {
        self.special_cleared.load(Ordering::Relaxed)
    }
    /// What of `e`'s metadata to apply. Set-uid and set-gid are cleared unless asked for
    /// (counted); the sticky bit stays, since it only ever restricts.
    ///
    /// Also the extended attributes to give `e`: none with `skip_xattrs`; without
    /// `preserve_special_bits`, no file capabilities (`security.capability`), which grant
    /// privileges as set-uid does and are as untrusted in an archive anyone with a public
    /// key can write. An entry that loses either is counted once.
    pub fn meta(&self, e: &Entry) -> (Meta, Vec<Xattr>) {
        let mut cleared = false;
        let mut mode = e.mode & 0o7777;
        if !self.keep_special_bits && mode & 0o6000 != 0 && e.kind != KIND_SYMLINK {
            mode &= !0o6000;
            cleared = true;
        }
        let mut xattrs = Vec::new();
        if !self.skip_xattrs {
            for x in &e.xattrs {
                if x.name == b"security.capability" && !self.keep_special_bits {
                    cleared = true;
                    continue;
                }
                xattrs.push(x.clone());
            }
        }
        if cleared {
            self.special_cleared.fetch_add(1, Ordering::Relaxed);
        }
        let meta = Meta {
            owner: self.preserve_owner.then_some((e.uid, e.gid)),
            mode,
            mtime_sec: e.mtime_sec,
            mtime_nsec: e.mtime_nsec,
        };
        (meta, xattrs)
    }

    /// Open a file's temporary name in its folder.
    /// `chunked`: the file is written piece by piece as its blocks arrive (a file inside
    /// one block is written at once, through the plain descriptor).
    pub(super) fn create(&self, e: &Entry, chunked: bool) -> Result<PartialFile> {
        let new = self.target.create_file(&e.path)?;
        // Small files gain nothing from it and would pay for two I/O threads each.
        let direct = (chunked && dlen(e) >= CHUNK as u64)
            .then(|| reopen_direct(&new.file))
            .flatten();
        // A sparse file is written at its ranges' offsets, never through the sequential
        // chunk writer.
        let direct = direct.filter(|_| e.data_ranges.is_none());
        let chunked = match direct {
            Some(direct) => {
                let plain = new
                    .file
                    .try_clone()
                    .map_err(|err| Error::io(new.dest(), err))?;
                Some(ChunkWriter::with_plain(direct, plain, new.dest())?)
            }
            None => None,
        };
        Ok(PartialFile {
            new,
            chunked,
            written: 0,
            ranges: e.data_ranges.clone().map(|r| (r, 0, 0)),
            hasher: e.content_hash.map(|_| ContentHasher::new()),
        })
    }

    /// Give a fully written file its owner, mode and times (in that order) and its final
    /// name; returns that name.
    pub(super) fn finish(
        &self,
        mut pf: PartialFile,
        e: &Entry,
        warnings: &mut Vec<Warning>,
    ) -> Result<PathBuf> {
        if let Some(writer) = pf.chunked.take() {
            writer.finish()?;
        }
        if pf.ranges.is_some() || dlen(e) < e.size {
            // The holes after the last data range.
            pf.new.set_len(e.size)?;
        }
        if let (Some(h), Some(want)) = (pf.hasher.take(), e.content_hash)
            && h.finalize().hash != want
        {
            // Every byte came from a block whose tag verified: the archive's writer
            // referenced the wrong bytes. The temporary file is removed when `pf` drops.
            return Err(Error::ContentMismatch {
                path: pf.new.dest().to_path_buf(),
            });
        }
        for message in self.apply_meta(&pf.new.file, e) {
            note(warnings, pf.new.dest(), message);
        }
        pf.new.commit(self.overwrite)
    }
}

/// A file being restored under a temporary name; removed if dropped unfinished.
pub(super) struct PartialFile {
    new: NewFile,
    /// Large files are written in aligned chunks, bypassing the page cache when it can.
    chunked: Option<ChunkWriter>,
    /// Data bytes written so far.
    pub(super) written: u64,
    /// A sparse file's data ranges, the one being filled and the bytes of it written.
    ranges: Option<(Vec<DataRange>, usize, u64)>,
    /// The content hash being computed, when the entry records one.
    hasher: Option<ContentHasher>,
}

impl PartialFile {
    /// Write the next data bytes: in order for a dense file; at their ranges' offsets for a
    /// sparse one (the holes between stay holes).
    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.written += data.len() as u64;
        let dest = self.new.dest().to_path_buf();
        match (&mut self.chunked, &mut self.ranges) {
            (Some(writer), _) => writer.write_all(data),
            (None, None) => self
                .new
                .file
                .write_all(data)
                .map_err(|err| Error::io(&dest, err)),
            (None, Some((ranges, k, done))) => {
                while !data.is_empty() {
                    let r = ranges.get(*k).ok_or_else(|| {
                        Error::Internal("data past a sparse file's ranges".into())
                    })?;
                    let n = ((r.len - *done) as usize).min(data.len());
                    self.new.write_at(r.offset + *done, &data[..n])?;
                    data = &data[n..];
                    *done += n as u64;
                    if *done == r.len {
                        *k += 1;
                        *done = 0;
                    }
                }
                Ok(())
            }
        }
    }
}

struct FileWriter<'a> {
    policy: &'a Policy,
    files: &'a [&'a Entry],
    next: usize,
    current: Option<PartialFile>,
    observer: &'a dyn Observer,
    report: &'a mut RestoreReport,
}

impl FileWriter<'_> {
    fn open(&mut self, e: &Entry) -> Result<PartialFile> {
        self.policy.create(e, true)
    }

    fn finish(&mut self, pf: PartialFile, e: &Entry) -> Result<()> {
        let mut warnings = Vec::new();
        let finished = self.policy.finish(pf, e, &mut warnings);
        for w in warnings {
            self.warned(w);
        }
        self.restored(&finished?, dlen(e));
        Ok(())
    }

    fn warned(&mut self, w: Warning) {
        self.observer.warning(&w);
        self.report.warnings.push(w);
    }

    /// Count a file that now has its final name, whichever thread wrote it.
    fn restored(&mut self, dest: &Path, size: u64) {
        self.report.files += 1;
        self.report.bytes += size;
        self.observer.file_done(dest, size);
    }

    /// Deliver one verified block whose plaintext starts at stream offset `start`.
    fn write_block(&mut self, start: u64, data: &[u8]) -> Result<()> {
        let end = start + data.len() as u64;
        loop {
            if self.current.is_none() {
                if self.next >= self.files.len() {
                    return Ok(());
                }
                let e = self.files[self.next];
                if pos(e) >= end {
                    return Ok(());
                }
                let pf = self.open(e)?;
                self.current = Some(pf);
            }
            let e = self.files[self.next];
            let pf = self.current.as_mut().unwrap();
            let file_pos = pos(e) + pf.written;
            if file_pos < start {
                return Err(Error::Internal(format!(
                    "internal error: block at {start} skipped data of {:?}",
                    crate::format::v2::display_path(&e.path)
                )));
            }
            let from = (file_pos - start) as usize;
            let take = ((dlen(e) - pf.written) as usize).min(data.len().saturating_sub(from));
            if take > 0 {
                pf.write(&data[from..from + take])?;
                self.observer.bytes_done(take as u64);
            }
            if pf.written == dlen(e) {
                let pf = self.current.take().unwrap();
                self.next += 1;
                self.finish(pf, e)?;
            } else {
                return Ok(());
            }
        }
    }
}
