//! The restore target as open folder descriptors: the one place restore touches the file
//! system it writes into.
//!
//! The target folder is opened once, by the path the user gave. Everything below it is
//! reached with `openat(O_NOFOLLOW | O_DIRECTORY)` one name at a time from a descriptor, and
//! created with `mkdirat`, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `symlinkat` and
//! `renameat`; owner, mode and times are set on descriptors (`fchown`, `fchmod`,
//! `futimens`) or with `AT_SYMLINK_NOFOLLOW`. A local user who owns a folder inside the
//! target and swaps a folder restore made for a symlink therefore makes the next open fail;
//! nothing is ever written, chmod-ed or timed through the link. Because no call takes a
//! full path, names of 255 bytes and trees deeper than `PATH_MAX` restore too.
//!
//! Folder descriptors are cached (bounded, so memory and open descriptors stay flat in the
//! number of folders); entries arrive in walk order, so the folder a file goes into is
//! nearly always cached already.

use rand::Rng;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::index::parent;

/// Open folder descriptors kept at most; the cache is emptied when it is full (the next
/// files refill it with the folders they need).
const DIR_CACHE: usize = 256;

/// Mode of a folder restore creates, until its own mode is set at the end: nobody else can
/// enter it, or rename anything inside it, while the restore writes into it.
const NEW_DIR_MODE: u32 = 0o700;

/// Owner, mode and time to give a restored item. `mode` is already filtered by the caller's
/// policy (special bits).
pub(crate) struct Meta {
    pub owner: Option<(u32, u32)>,
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    fn timestamps(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime_sec,
            tv_nsec: self.mtime_nsec.into(),
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// What went wrong while setting metadata that does not stop a restore (a warning each).
pub(crate) type MetaProblems = Vec<String>;

pub(crate) struct Target {
    root: Arc<OwnedFd>,
    root_path: PathBuf,
    dirs: Mutex<HashMap<String, Arc<OwnedFd>>>,
}

impl Target {
    /// Create the target folder if needed and open it: the last lookup by path.
    pub fn open(path: &Path) -> Result<Target> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(path, e.into()))?;
        Ok(Target {
            root: Arc::new(root),
            root_path: path.to_path_buf(),
            dirs: Mutex::new(HashMap::new()),
        })
    }

    /// The path an entry has in the target, for messages only.
    pub fn display(&self, rel: &str) -> PathBuf {
        self.root_path.join(rel)
    }

    /// The open folder at `rel` ("" is the target itself), reached one name at a time
    /// without following links.
    pub fn dir(&self, rel: &str) -> Result<Arc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(Arc::clone(&self.root));
        }
        // Start from the deepest folder on the way that is open already.
        let (mut cur, mut done) = (Arc::clone(&self.root), 0usize);
        {
            let dirs = self.dirs.lock().expect("folder cache lock");
            let mut p = Some(rel);
            while let Some(at) = p {
                if let Some(fd) = dirs.get(at) {
                    (cur, done) = (Arc::clone(fd), at.len());
                    break;
                }
                p = parent(at);
            }
        }
        while done < rel.len() {
            let start = if done == 0 { 0 } else { done + 1 };
            let end = rel[start..].find('/').map_or(rel.len(), |i| start + i);
            let name = check_name(rel, &rel[start..end])?;
            let fd = rustix::fs::openat(
                &*cur,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.not_a_folder(&rel[..end], e))?;
            let fd = Arc::new(fd);
            let mut dirs = self.dirs.lock().expect("folder cache lock");
            if dirs.len() >= DIR_CACHE {
                dirs.clear();
            }
            dirs.insert(rel[..end].to_owned(), Arc::clone(&fd));
            (cur, done) = (fd, end);
        }
        Ok(cur)
    }

    /// Close the cached folders: the next [`Target::dir`] reaches every folder anew from the
    /// target, so one swapped for a link since it was opened is noticed.
    pub fn forget_dirs(&self) {
        self.dirs.lock().expect("folder cache lock").clear();
    }

    /// The open folder an entry lies in, and the entry's own name.
    fn parent_of<'a>(&self, rel: &'a str) -> Result<(Arc<OwnedFd>, &'a str)> {
        let (dir, name) = match rel.rfind('/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => ("", rel),
        };
        Ok((self.dir(dir)?, check_name(rel, name)?))
    }

    /// Create the folder `rel` (its parent exists), or accept a folder already there;
    /// anything else there (a link, a file) is refused.
    pub fn make_dir(&self, rel: &str) -> Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        match rustix::fs::mkdirat(&*dir, name, Mode::from_raw_mode(NEW_DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::io(self.display(rel), e.into())),
        }
        // Opening it (O_NOFOLLOW | O_DIRECTORY) is the check, and caches it for its files.
        self.dir(rel).map(drop)
    }

    /// Start a file: a new, empty file under a short temporary name in the entry's folder.
    pub fn create_file(&self, rel: &str) -> Result<NewFile> {
        let (dir, name) = self.parent_of(rel)?;
        let tmp = temp_name();
        let fd = rustix::fs::openat(
            &*dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io(self.display(rel), e.into()))?;
        Ok(NewFile {
            file: File::from(fd),
            pending: Pending {
                dir,
                tmp,
                name: name.to_owned(),
                dest: self.display(rel),
                done: false,
            },
        })
    }

    /// Create the link `rel` → `link_target` with its time (and owner), under a temporary
    /// name first, then renamed into place.
    pub fn symlink(
        &self,
        rel: &str,
        link_target: &str,
        meta: &Meta,
        overwrite: bool,
    ) -> Result<MetaProblems> {
        let (dir, name) = self.parent_of(rel)?;
        let tmp = temp_name();
        rustix::fs::symlinkat(link_target, &*dir, tmp.as_str())
            .map_err(|e| Error::io(self.display(rel), e.into()))?;
        let mut pending = Pending {
            dir,
            tmp,
            name: name.to_owned(),
            dest: self.display(rel),
            done: false,
        };
        let mut problems = Vec::new();
        if let Some((uid, gid)) = meta.owner.map(owner_ids)
            && let Err(e) = rustix::fs::chownat(
                &*pending.dir,
                pending.tmp.as_str(),
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            )
        {
            problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
        }
        if let Err(e) = rustix::fs::utimensat(
            &*pending.dir,
            pending.tmp.as_str(),
            &meta.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            problems.push(format!("cannot set link time: {}", std::io::Error::from(e)));
        }
        pending.commit(overwrite)?;
        Ok(problems)
    }

    fn not_a_folder(&self, rel: &str, e: Errno) -> Error {
        if e == Errno::LOOP || e == Errno::NOTDIR {
            Error::UnsafePath {
                path: rel.to_owned(),
                reason: "is a link or a file in the target, not a folder (it may have been replaced during the restore)".into(),
            }
        } else {
            Error::io(self.display(rel), e.into())
        }
    }
}

/// Set owner, then mode, then times on an open file or folder; what could not be set is
/// returned (a warning each). The owner goes first because changing it clears the set-uid
/// and set-gid bits the mode may then set.
pub(crate) fn set_meta(fd: impl AsFd, meta: &Meta) -> MetaProblems {
    let mut problems = Vec::new();
    if let Some((uid, gid)) = meta.owner.map(owner_ids)
        && let Err(e) = rustix::fs::fchown(&fd, uid, gid)
    {
        problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
    }
    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)) {
        problems.push(format!(
            "cannot set permissions: {}",
            std::io::Error::from(e)
        ));
    }
    if let Err(e) = rustix::fs::futimens(&fd, &meta.timestamps()) {
        problems.push(format!("cannot set time: {}", std::io::Error::from(e)));
    }
    problems
}

/// An archive's owner ids for `chown`; -1 (which `chown` reads as "leave it") is left
/// alone rather than passed on.
fn owner_ids((uid, gid): (u32, u32)) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid)),
    )
}

/// A name inside one folder: never empty, `.`, `..` or with a slash (the index refuses
/// such paths already; this keeps the descriptor walk safe on its own).
fn check_name<'a>(rel: &str, name: &'a str) -> Result<&'a str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::UnsafePath {
            path: rel.to_owned(),
            reason: "empty, '.' or '..' component".into(),
        });
    }
    Ok(name)
}

/// `.coffer-<16 hex>.tmp`: 27 bytes, so a final name of the full 255 bytes still fits.
fn temp_name() -> String {
    format!(".coffer-{:016x}.tmp", rand::rng().next_u64())
}

/// A file being written under its temporary name; removed if dropped before
/// [`NewFile::commit`].
pub(crate) struct NewFile {
    pub file: File,
    pending: Pending,
}

impl NewFile {
    /// The path it will have, for messages.
    pub fn dest(&self) -> &Path {
        &self.pending.dest
    }

    /// Give it its final name. Without `overwrite`, an entry that appeared under that name
    /// meanwhile is never replaced.
    pub fn commit(mut self, overwrite: bool) -> Result<PathBuf> {
        self.pending.commit(overwrite)?;
        Ok(std::mem::take(&mut self.pending.dest))
    }
}

/// A temporary name in an open folder, renamed to its final name or removed.
struct Pending {
    dir: Arc<OwnedFd>,
    tmp: String,
    name: String,
    dest: PathBuf,
    done: bool,
}

impl Pending {
    fn commit(&mut self, overwrite: bool) -> Result<()> {
        let flags = if overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        let renamed = rustix::fs::renameat_with(
            &*self.dir,
            self.tmp.as_str(),
            &*self.dir,
            self.name.as_str(),
            flags,
        );
        let renamed = match renamed {
            // A file system without RENAME_NOREPLACE: a hard link never replaces either.
            Err(Errno::INVAL) if !overwrite => rustix::fs::linkat(
                &*self.dir,
                self.tmp.as_str(),
                &*self.dir,
                self.name.as_str(),
                AtFlags::empty(),
            )
            .and_then(|()| rustix::fs::unlinkat(&*self.dir, self.tmp.as_str(), AtFlags::empty())),
            other => other,
        };
        match renamed {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(Errno::EXIST) => Err(Error::Exists {
                path: self.dest.clone(),
            }),
            Err(e) => Err(Error::io(&self.dest, e.into())),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&*self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_refuses_a_symlinked_folder() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = Target::open(t.path()).unwrap();
        target.make_dir("a").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("b")).unwrap();
        assert!(matches!(
            target.make_dir("b"),
            Err(Error::UnsafePath { .. })
        ));
        assert!(matches!(
            target.create_file("b/x"),
            Err(Error::UnsafePath { .. })
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_without_overwrite_never_replaces() {
        let t = tempfile::tempdir().unwrap();
        let target = Target::open(t.path()).unwrap();
        std::fs::write(t.path().join("f"), b"theirs").unwrap();
        let f = target.create_file("f").unwrap();
        assert!(matches!(f.commit(false), Err(Error::Exists { .. })));
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"theirs");
        // The temporary file is gone too.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_folder_cache_stays_bounded() {
        let t = tempfile::tempdir().unwrap();
        let target = Target::open(t.path()).unwrap();
        for i in 0..DIR_CACHE * 2 {
            target.make_dir(&format!("d{i}")).unwrap();
        }
        assert!(target.dirs.lock().unwrap().len() <= DIR_CACHE);
    }
}
