//! The walk: each source's tree in file-name order, one index entry per folder, file and
//! link, file contents read into the stream as they are met. Excluded paths, the archive
//! being written and what cannot be read are skipped; each skip the user should know of
//! becomes a [`Warning`].

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::fs::{File, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::stream::{Block, BlockStream};
use crate::error::{Error, Result};
use crate::format::index::{Entry, KIND_DIR, KIND_FILE, KIND_SYMLINK, Totals};
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

/// What the walk found: the index entries, their totals and the warnings.
pub(super) struct Walked {
    pub entries: Vec<Entry>,
    pub totals: Totals,
    pub warnings: Vec<Warning>,
}

pub(super) struct Walk<'a> {
    found: Walked,
    observer: &'a dyn Observer,
    exclude: &'a GlobSet,
    /// The archive being written, when it is a local file (device, inode): never backed up.
    own_file: Option<(u64, u64)>,
    one_file_system: bool,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        observer: &'a dyn Observer,
        exclude: &'a GlobSet,
        own_file: Option<(u64, u64)>,
        one_file_system: bool,
    ) -> Self {
        Walk {
            found: Walked {
                entries: Vec::new(),
                totals: Totals::default(),
                warnings: Vec::new(),
            },
            observer,
            exclude,
            own_file,
            one_file_system,
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
        name: &str,
        root: &Path,
        stream: &mut BlockStream<'_, W>,
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
            let Some(archive_path) = archive_path(name, rel) else {
                self.warn(entry.path(), "name is not valid UTF-8; skipped".into());
                if skip_folder {
                    walker.skip_current_dir();
                }
                continue;
            };
            if entry.depth() > 0 && self.exclude.is_match(&archive_path) {
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
            if let Some(e) = self.entry(entry.path(), &meta, archive_path, stream)? {
                self.found.entries.push(e);
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
        archive_path: String,
        stream: &mut BlockStream<'_, W>,
    ) -> Result<Option<Entry>>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        let mut e = Entry {
            path: archive_path,
            kind: KIND_FILE,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            size: 0,
            offset: 0,
            link_target: None,
        };
        let ft = meta.file_type();
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
            if !self.file(path, meta, &mut e, stream)? {
                return Ok(None);
            }
        } else {
            self.warn(
                path,
                "special file (device, socket or FIFO) not backed up".into(),
            );
            return Ok(None);
        }
        Ok(Some(e))
    }

    fn link_target(&mut self, path: &Path) -> Option<String> {
        match std::fs::read_link(path) {
            Ok(t) => match t.into_os_string().into_string() {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    self.warn(path, "link target is not valid UTF-8; skipped".into());
                    None
                }
            },
            Err(err) => {
                self.warn(path, format!("cannot read link: {err}"));
                None
            }
        }
    }

    /// Read the file at `path` into the stream and record where in `e`; false if it was
    /// skipped. The error stops the run (the writer failed).
    fn file<W>(
        &mut self,
        path: &Path,
        meta: &Metadata,
        e: &mut Entry,
        stream: &mut BlockStream<'_, W>,
    ) -> Result<bool>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(err) => {
                self.warn(path, format!("cannot open: {err}"));
                return Ok(false);
            }
        };
        e.offset = stream.stream_len();
        match stream.read_file(&mut file)? {
            Ok(n) => e.size = n,
            Err(err) => {
                // The bytes read so far stay in the stream as unreferenced data; the file
                // is not listed, so a restore never yields a cut-off copy.
                self.warn(path, format!("read failed, file skipped: {err}"));
                return Ok(false);
            }
        }
        if e.size != meta.len() {
            // Written to while it was read (or a procfs/sysfs file, whose listed size is
            // not its content): the copy may mix old and new bytes, and the user should know.
            self.warn(
                path,
                format!(
                    "changed size while it was read ({} bytes listed, {} read); stored as read",
                    meta.len(),
                    e.size
                ),
            );
        }
        self.found.totals.files += 1;
        self.observer.file_done(path, e.size);
        Ok(true)
    }
}

fn io_reason(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// Files and bytes below the sources (metadata only), for progress totals.
pub(super) fn estimate(
    sources: &[(String, PathBuf)],
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
            if entry.depth() > 0 && archive_path(name, rel).is_some_and(|p| exclude.is_match(p)) {
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

/// `name` joined with the walked relative path, `/`-separated; `None` if not UTF-8.
fn archive_path(name: &str, rel: &Path) -> Option<String> {
    let mut p = name.to_string();
    for c in rel.components() {
        p.push('/');
        p.push_str(c.as_os_str().to_str()?);
    }
    Some(p)
}
