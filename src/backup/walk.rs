//! The walk: each source's tree in file-name order (which is path order, FORMAT.md
//! v2.6.2), one index entry per folder, file, link and special file, file contents read
//! into the stream as they are met (only the data ranges of a sparse file). Excluded paths, the archive
//! being written and what cannot be read are skipped; each skip the user should know of
//! becomes a [`Warning`].

use crate::format::v2::content::{ContentDigest, ContentHasher};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::prefetch::{self, Pending, Prefetched};
use super::stream::{Block, BlockStream};
use crate::error::{Error, Result};
use crate::format::v2::{
    DataRange, EntryV2, Extent, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE,
    KIND_HARDLINK, KIND_SYMLINK, TotalsV2,
};
use crate::progress::{Observer, Warning};

/// The exclude patterns as one matcher.
pub(super) fn build_globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            Glob::new(p)
                .map_err(|e| Error::InvalidOption(format!("exclude pattern {p:?}: {e}")))?,
        );
    }
    b.build()
        .map_err(|e| Error::InvalidOption(format!("exclude patterns: {e}")))
}

/// Where the walk's entries go, in walk (= path) order: collected for a v1 index, or cut
/// into sealed chunks as they come for v2.
pub(super) trait EntrySink {
    /// The number the next entry pushed gets (hard links name their first name by it).
    fn next_number(&self) -> u64;
    fn push(&mut self, e: EntryV2) -> Result<()>;
}

/// What an incremental run adds to the walk (the chain state, `incremental.rs`): which
/// files are unchanged, reading changed ones window by window, recording each file.
pub(super) trait ChainWalk: Send {
    /// A non-file entry at `path`: a file the state had there is gone.
    fn passed(&mut self, path: &[u8]) -> Result<()>;
    /// The file at `path` with `meta`, when unchanged since the last run: what its entry
    /// reuses (its data is not read).
    fn unchanged(&mut self, path: &[u8], meta: &Metadata) -> Result<Option<Reused>>;
    /// Whether changed dense files are read with [`ChainWalk::read_dense`].
    fn reuses(&self) -> bool;
    /// Read a dense file window by window, referencing windows the chain holds and
    /// handing the others to `store` (which returns their stream offset): the data length
    /// and the extents, or the file's read error.
    fn read_dense(
        &mut self,
        file: &mut File,
        hasher: &mut ContentHasher,
        observer: &dyn Observer,
        store: &mut dyn FnMut(&[u8]) -> Result<u64>,
    ) -> Result<std::io::Result<(u64, Vec<Extent>)>>;
    /// Record a file entry just made (with its window hashes) for the next run.
    fn record(
        &mut self,
        e: &EntryV2,
        meta: &Metadata,
        windows: Option<Vec<[u8; 32]>>,
    ) -> Result<()>;
    /// A file at `path` was skipped: the state forgets it.
    fn forget(&mut self, path: &[u8]) -> Result<()>;
}

/// What an unchanged file's entry reuses from the chain state.
pub(super) struct Reused {
    pub extents: Vec<Extent>,
    pub ranges: Option<Vec<DataRange>>,
    pub hash: [u8; 32],
    /// The attributes recorded with the file, when the last run read them.
    pub xattrs: Option<Vec<crate::format::v2::Xattr>>,
}

/// What the walk found besides its entries: their totals and the warnings.
pub(super) struct Walked {
    pub totals: TotalsV2,
    pub warnings: Vec<Warning>,
}

/// Which format the walk records for: v1 keeps files, folders and symlinks with UTF-8
/// names; v2 keeps every name and kind, hard links, xattrs and holes.
#[derive(Clone, Copy)]
pub(super) struct Fidelity {
    pub v2: bool,
    pub xattrs: bool,
}

pub(super) struct Walk<'a, 'c> {
    found: Walked,
    observer: &'a dyn Observer,
    exclude: &'a GlobSet,
    /// The archive being written, when it is a local file (device, inode): never backed up.
    own_file: Option<(u64, u64)>,
    one_file_system: bool,
    fidelity: Fidelity,
    /// Inodes with more than one name, by (device, inode): the first name's entry number
    /// and how many names are still to come. Forgotten once all names were met, so it holds
    /// only inodes whose names are still being walked.
    links: HashMap<(u64, u64), (u64, u64)>,
    /// The chain state, when the run keeps one.
    chain: Option<&'c mut dyn ChainWalk>,
}

impl<'a, 'c> Walk<'a, 'c> {
    pub(super) fn new(
        observer: &'a dyn Observer,
        exclude: &'a GlobSet,
        own_file: Option<(u64, u64)>,
        one_file_system: bool,
        fidelity: Fidelity,
        chain: Option<&'c mut dyn ChainWalk>,
    ) -> Self {
        Walk {
            found: Walked {
                totals: TotalsV2::default(),
                warnings: Vec::new(),
            },
            observer,
            exclude,
            own_file,
            one_file_system,
            fidelity,
            links: HashMap::new(),
            chain,
        }
    }

    pub(super) fn finish(self) -> Walked {
        self.found
    }

    fn warn(&mut self, path: &Path, message: String) {
        let w = Warning {
            path: path.to_path_buf(),
            message,
        };
        self.observer.warning(&w);
        self.found.warnings.push(w);
    }

    /// Walk the source at `root`, stored under `name`.
    pub(super) fn source<W>(
        &mut self,
        name: &[u8],
        root: &Path,
        stream: &mut BlockStream<'_, W>,
        sink: &mut dyn EntrySink,
    ) -> Result<()>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        // A source that is itself a symlink is stored as a link too: walkdir would
        // otherwise descend into its target while the entry records a link, giving an
        // index whose children sit below a link, which every reader refuses.
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .same_file_system(self.one_file_system)
            .sort_by_file_name()
            .into_iter();
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        while let Some(item) = walker.next() {
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    self.walk_error(e, root)?;
                    continue;
                }
            };
            let skip_folder = entry.file_type().is_dir();
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            let archive_path = archive_path(name, rel);
            if !self.fidelity.v2 && std::str::from_utf8(&archive_path).is_err() {
                self.warn(entry.path(), "name is not valid UTF-8; skipped".into());
                if skip_folder {
                    walker.skip_current_dir();
                }
                continue;
            }
            if entry.depth() > 0
                && self
                    .exclude
                    .is_match(Path::new(OsStr::from_bytes(&archive_path)))
            {
                if skip_folder {
                    walker.skip_current_dir();
                }
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.warn(entry.path(), format!("cannot stat: {}", io_reason(&e)));
                    continue;
                }
            };
            if Some((meta.dev(), meta.ino())) == self.own_file {
                continue;
            }
            if prefetch::eligible(&meta) {
                batch_bytes += meta.len();
            }
            batch.push(Pending {
                path: entry.into_path(),
                meta,
                archive_path,
            });
            if batch.len() >= prefetch::BATCH_ENTRIES || batch_bytes >= prefetch::BATCH_BYTES {
                self.flush(&mut batch, stream, sink)?;
                batch_bytes = 0;
            }
        }
        self.flush(&mut batch, stream, sink)
    }

    /// Make the entries of `batch`, in order; the small files among them were read ahead
    /// on the workers (`prefetch.rs`), unless this run is an incremental, which must not
    /// read a file it finds unchanged.
    fn flush<W>(
        &mut self,
        batch: &mut Vec<Pending>,
        stream: &mut BlockStream<'_, W>,
        sink: &mut dyn EntrySink,
    ) -> Result<()>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        // Worth it only for a batch mostly of small files: the workers are busy sealing,
        // and a batch handed to them waits for a free one (measured: on a tree of 28 KiB
        // files, reading the few small ones ahead cost 10 %).
        let eligible = batch.iter().filter(|p| prefetch::eligible(&p.meta)).count();
        let ahead = self.fidelity.v2
            && eligible >= prefetch::MIN_ELIGIBLE
            && !self.chain.as_ref().is_some_and(|c| c.reuses());
        let mut fetched = if ahead {
            let keep = self.chain.is_some().then_some(super::MAX_WINDOWS);
            prefetch::read_ahead(batch, self.fidelity.xattrs, keep)
        } else {
            Vec::new()
        };
        fetched.resize_with(batch.len(), || None);
        for (p, f) in batch.drain(..).zip(fetched) {
            if let Some(e) = self.entry(&p.path, &p.meta, p.archive_path, f, stream, sink)? {
                sink.push(e)?;
            }
        }
        Ok(())
    }

    /// An entry that cannot be read: the source itself stops the run (it vanished or is
    /// unreadable), anything below it is a warning.
    fn walk_error(&mut self, e: walkdir::Error, root: &Path) -> Result<()> {
        let path = e.path().unwrap_or(root).to_path_buf();
        if e.depth() == 0 {
            return Err(match e.into_io_error() {
                Some(io) => Error::io(&path, io),
                None => Error::InvalidOption(format!("{}: cannot walk", path.display())),
            });
        }
        self.warn(&path, format!("cannot read: {}", io_reason(&e)));
        Ok(())
    }

    /// The index entry for `path`, its contents read into the stream if it is a file;
    /// `None` (after a warning) for what is skipped.
    fn entry<W>(
        &mut self,
        path: &Path,
        meta: &Metadata,
        archive_path: Vec<u8>,
        fetched: Option<Prefetched>,
        stream: &mut BlockStream<'_, W>,
        sink: &mut dyn EntrySink,
    ) -> Result<Option<EntryV2>>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        let ft = meta.file_type();
        if self.fidelity.v2 && !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some((first, left)) = self.links.get_mut(&key) {
                let first = *first;
                *left -= 1;
                if *left == 0 {
                    self.links.remove(&key);
                }
                self.found.totals.hardlinks += 1;
                if let Some(chain) = self.chain.as_deref_mut() {
                    chain.passed(&archive_path)?;
                }
                return Ok(Some(EntryV2 {
                    path: archive_path,
                    kind: KIND_HARDLINK,
                    hardlink_to: Some(first),
                    ..EntryV2::default()
                }));
            }
        }
        let mut e = EntryV2 {
            path: archive_path,
            kind: KIND_FILE,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            ..EntryV2::default()
        };
        if !ft.is_file()
            && let Some(chain) = self.chain.as_deref_mut()
        {
            chain.passed(&e.path)?;
        }
        if ft.is_dir() {
            e.kind = KIND_DIR;
            self.found.totals.dirs += 1;
        } else if ft.is_symlink() {
            let Some(target) = self.link_target(path) else {
                return Ok(None);
            };
            e.link_target = Some(target);
            e.kind = KIND_SYMLINK;
            self.found.totals.symlinks += 1;
        } else if ft.is_file() {
            if !self.file(path, meta, &mut e, fetched, stream)? {
                return Ok(None);
            }
        } else if self.fidelity.v2 && (ft.is_fifo() || ft.is_char_device() || ft.is_block_device())
        {
            e.kind = if ft.is_fifo() {
                KIND_FIFO
            } else if ft.is_char_device() {
                KIND_CHAR
            } else {
                KIND_BLOCK
            };
            if e.kind != KIND_FIFO {
                (e.rdev_major, e.rdev_minor) = crate::fsmeta::rdev_parts(meta.rdev());
            }
            self.found.totals.specials += 1;
        } else {
            let what = if ft.is_socket() {
                "socket not backed up (a socket cannot be restored)"
            } else {
                "special file (device or FIFO) not backed up"
            };
            self.warn(path, what.into());
            return Ok(None);
        }
        // A file's attributes were read through its descriptor while it was open.
        if self.fidelity.v2 && self.fidelity.xattrs && e.kind != KIND_FILE {
            let (xattrs, problems) = crate::fsmeta::read_xattrs(path);
            e.xattrs = xattrs;
            for p in problems {
                self.warn(path, p);
            }
        }
        if self.fidelity.v2 && e.kind != KIND_DIR && meta.nlink() > 1 {
            // This is the inode's first name: later names become links to this entry.
            self.links.insert(
                (meta.dev(), meta.ino()),
                (sink.next_number(), meta.nlink() - 1),
            );
        }
        Ok(Some(e))
    }

    fn link_target(&mut self, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read_link(path) {
            Ok(t) => {
                let t = t.into_os_string().into_vec();
                if t.is_empty() {
                    self.warn(path, "link target is empty; skipped".into());
                    None
                } else if !self.fidelity.v2 && std::str::from_utf8(&t).is_err() {
                    self.warn(path, "link target is not valid UTF-8; skipped".into());
                    None
                } else {
                    Some(t)
                }
            }
            Err(err) => {
                self.warn(path, format!("cannot read link: {err}"));
                None
            }
        }
    }

    /// Read the file at `path` into the stream (or, unchanged in an incremental, reuse
    /// what the chain holds) and record where in `e`; false if it was skipped. The error
    /// stops the run (the writer failed).
    fn file<W>(
        &mut self,
        path: &Path,
        meta: &Metadata,
        e: &mut EntryV2,
        fetched: Option<Prefetched>,
        stream: &mut BlockStream<'_, W>,
    ) -> Result<bool>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        let Some(chain) = self.chain.as_deref_mut() else {
            return self
                .read_file(path, meta, e, fetched, stream)
                .map(|r| r.is_some());
        };
        if let Some(reused) = chain.unchanged(&e.path, meta)? {
            e.size = meta.len();
            e.data_ranges = reused.ranges;
            e.extents = reused.extents;
            e.content_hash = Some(reused.hash);
            if let (true, Some(xattrs)) = (self.fidelity.xattrs, reused.xattrs) {
                // Unchanged since the last run, ctime included: so are its attributes.
                e.xattrs = xattrs;
            } else if self.fidelity.xattrs {
                // Not opened: the attributes are read by name, as for other kinds.
                let (xattrs, problems) = crate::fsmeta::read_xattrs(path);
                e.xattrs = xattrs;
                for p in problems {
                    self.warn(path, p);
                }
            }
            self.found.totals.files += 1;
            self.observer.file_done(path, e.size);
            return Ok(true);
        }
        let read = self.read_file(path, meta, e, fetched, stream)?;
        let chain = self.chain.as_deref_mut().expect("checked above");
        match read {
            Some(windows) => chain.record(e, meta, windows)?,
            None => {
                chain.forget(&e.path)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Read the file at `path` into the stream and record where in `e`: `None` if it was
    /// skipped, else its window hashes when the run keeps a chain.
    #[allow(
        clippy::option_option,
        reason = "skipped / read without / with windows"
    )]
    fn read_file<W>(
        &mut self,
        path: &Path,
        meta: &Metadata,
        e: &mut EntryV2,
        fetched: Option<Prefetched>,
        stream: &mut BlockStream<'_, W>,
    ) -> Result<Option<Option<Vec<[u8; 32]>>>>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        if let Some(f) = fetched {
            return self.take_prefetched(path, meta, e, f, stream);
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(err) => {
                self.warn(path, format!("cannot open: {err}"));
                return Ok(None);
            }
        };
        if self.fidelity.v2 && self.fidelity.xattrs {
            let (xattrs, problems) = crate::fsmeta::read_xattrs_of(&file);
            e.xattrs = xattrs;
            for p in problems {
                self.warn(path, p);
            }
        }
        let offset = stream.stream_len();
        let ranges = if self.fidelity.v2 {
            match crate::fsmeta::data_ranges(&file, meta) {
                Ok(r) => r,
                Err(err) => {
                    self.warn(path, format!("cannot find holes, read as dense: {err}"));
                    None
                }
            }
        } else {
            None
        };
        let mut hasher = self.fidelity.v2.then(|| match self.chain {
            Some(_) => ContentHasher::keeping_windows(super::MAX_WINDOWS),
            None => ContentHasher::new(),
        });
        let mut reused = None;
        let read = match (&ranges, self.chain.as_deref_mut(), hasher.as_mut()) {
            (None, Some(chain), Some(hasher)) if chain.reuses() => {
                let mut store = |bytes: &[u8]| {
                    let offset = stream.stream_len();
                    stream.push_bytes(bytes)?;
                    Ok(offset)
                };
                chain
                    .read_dense(&mut file, hasher, self.observer, &mut store)?
                    .map(|(n, extents)| {
                        reused = Some(extents);
                        (n, n)
                    })
            }
            (None, _, hasher) => stream.read_file(&mut file, hasher)?.map(|n| (n, n)),
            (Some(ranges), _, hasher) => read_ranges(stream, &file, ranges, hasher)?,
        };
        let (size, data_len) = match read {
            Ok(r) => r,
            Err(err) => {
                // The bytes read so far stay in the stream as unreferenced data; the file
                // is not listed, so a restore never yields a cut-off copy.
                self.warn(path, format!("read failed, file skipped: {err}"));
                return Ok(None);
            }
        };
        e.size = size;
        if let Some(mut ranges) = ranges {
            if data_len < ranges.iter().map(|r| r.len).sum::<u64>() {
                // Cut short while read (the file shrank): keep the ranges it still had.
                let mut left = data_len;
                ranges.retain_mut(|r| {
                    r.len = r.len.min(left);
                    left -= r.len;
                    r.len > 0
                });
                e.size = ranges.last().map_or(0, |r| r.offset + r.len);
            }
            e.data_ranges = Some(ranges);
        }
        self.check_size(path, meta, e.size);
        // v1 records where even an empty file sits in the stream; v2 needs no extent there.
        if let Some(extents) = reused {
            e.extents = extents;
        } else if data_len > 0 || !self.fidelity.v2 {
            e.extents = vec![Extent {
                archive: 0,
                offset,
                len: data_len,
            }];
        }
        Ok(Some(self.file_read(path, e, hasher.map(|h| h.finalize()))))
    }
}

impl<'a, 'c> Walk<'a, 'c> {
    /// A file read ahead on a worker: its contents go into the stream, as if read here.
    #[allow(
        clippy::option_option,
        reason = "skipped / read without / with windows"
    )]
    fn take_prefetched<W>(
        &mut self,
        path: &Path,
        meta: &Metadata,
        e: &mut EntryV2,
        f: Prefetched,
        stream: &mut BlockStream<'_, W>,
    ) -> Result<Option<Option<Vec<[u8; 32]>>>>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        let read = match f.contents {
            Ok(read) => read,
            Err(err) => {
                self.warn(path, format!("cannot open: {err}"));
                return Ok(None);
            }
        };
        let (xattrs, problems) = f.xattrs;
        e.xattrs = xattrs;
        for p in problems {
            self.warn(path, p);
        }
        let data = match read {
            Ok(data) => data,
            Err(err) => {
                self.warn(path, format!("read failed, file skipped: {err}"));
                return Ok(None);
            }
        };
        let offset = stream.stream_len();
        stream.push_bytes(&data)?;
        e.size = data.len() as u64;
        self.check_size(path, meta, e.size);
        if !data.is_empty() {
            e.extents = vec![Extent {
                archive: 0,
                offset,
                len: e.size,
            }];
        }
        Ok(Some(self.file_read(path, e, f.digest)))
    }

    /// A file was read whole: its content hash goes into its entry, it counts; returns
    /// its window hashes (when kept) for the chain state.
    fn file_read(
        &mut self,
        path: &Path,
        e: &mut EntryV2,
        digest: Option<ContentDigest>,
    ) -> Option<Vec<[u8; 32]>> {
        let (hash, windows) = match digest {
            Some(d) => (Some(d.hash), d.windows),
            None => (None, None),
        };
        e.content_hash = hash;
        self.found.totals.files += 1;
        self.observer.file_done(path, e.size);
        windows
    }

    /// Warn when a file's size changed while it was read.
    fn check_size(&mut self, path: &Path, meta: &Metadata, read: u64) {
        if read != meta.len() {
            // Written to while it was read (or a procfs/sysfs file, whose listed size is
            // not its content): the copy may mix old and new bytes, and the user should know.
            self.warn(
                path,
                format!(
                    "changed size while it was read ({} bytes listed, {read} read); stored as read",
                    meta.len(),
                ),
            );
        }
    }
}

/// Read the data ranges of a sparse file into the stream: `(size, data bytes)` read, or
/// the file's read error. A range cut short (the file shrank) ends the read there; the
/// size is the one listed when the ranges were found.
fn read_ranges<W>(
    stream: &mut BlockStream<'_, W>,
    file: &File,
    ranges: &[DataRange],
    mut hasher: Option<&mut ContentHasher>,
) -> Result<std::io::Result<(u64, u64)>>
where
    W: Fn(&mut Block, u64) + Send + Sync + 'static,
{
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Ok(Err(e)),
    };
    let mut data = 0u64;
    for r in ranges {
        let n = match stream.read_range(file, r.offset, r.len, hasher.as_deref_mut())? {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        data += n;
        if n < r.len {
            break;
        }
    }
    Ok(Ok((size, data)))
}

fn io_reason(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// Files and bytes below the sources (metadata only), for progress totals.
pub(super) fn estimate(
    sources: &[(Vec<u8>, PathBuf)],
    exclude: &GlobSet,
    one_file_system: bool,
) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    for (name, root) in sources {
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .same_file_system(one_file_system)
            .into_iter();
        while let Some(Ok(entry)) = walker.next() {
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            let p = archive_path(name, rel);
            if entry.depth() > 0 && exclude.is_match(Path::new(OsStr::from_bytes(&p))) {
                if entry.file_type().is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            if entry.file_type().is_file() {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

/// `name` joined with the walked relative path, `/`-separated, as bytes.
fn archive_path(name: &[u8], rel: &Path) -> Vec<u8> {
    let mut p = name.to_vec();
    for c in rel.components() {
        p.push(b'/');
        p.extend_from_slice(c.as_os_str().as_bytes());
    }
    p
}
