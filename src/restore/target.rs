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
    /// Device and inode of every folder this restore made or found, recorded when it was
    /// first opened: reopened later by name, a folder must still be the same one, so a
    /// user who renames folders around (swaps two restored folders in a parent they own)
    /// cannot make a later write or the final chmod/chown land on another folder.
    known: Mutex<HashMap<String, (u64, u64)>>,
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
            known: Mutex::new(HashMap::new()),
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
            self.check_identity(&rel[..end], &fd)?;
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

    /// The first time a folder is opened, remember which one it is; every later time,
    /// refuse another one under its name.
    fn check_identity(&self, rel: &str, fd: &OwnedFd) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::io(self.display(rel), e.into()))?;
        let id = (st.st_dev as u64, st.st_ino as u64);
        let mut known = self.known.lock().expect("folder identity lock");
        match known.get(rel) {
            Some(&was) if was != id => Err(Error::TargetChanged {
                path: self.display(rel),
                detail: "is no longer the folder the restore made or found there (it was replaced or renamed during the restore)".into(),
            }),
            Some(_) => Ok(()),
            None => {
                known.insert(rel.to_owned(), id);
                Ok(())
            }
        }
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

    /// Create the link `rel` → `link_target` with its owner and time. Links cannot be
    /// opened, so their owner and time are set by name: that happens inside a private
    /// staging folder (ours, 0700) where nobody else can swap the name for a hard link to
    /// another file, and the finished link is then renamed into place.
    pub fn symlink(
        &self,
        rel: &str,
        link_target: &str,
        meta: &Meta,
        overwrite: bool,
    ) -> Result<MetaProblems> {
        let (dir, name) = self.parent_of(rel)?;
        let staging = Staging::create(&dir, || self.display(rel))?;
        rustix::fs::symlinkat(link_target, &staging.fd, LINK_NAME)
            .map_err(|e| Error::io(self.display(rel), e.into()))?;
        let mut problems = Vec::new();
        if let Some((uid, gid)) = meta.owner.map(owner_ids)
            && let Err(e) =
                rustix::fs::chownat(&staging.fd, LINK_NAME, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
        {
            problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
        }
        if let Err(e) = rustix::fs::utimensat(
            &staging.fd,
            LINK_NAME,
            &meta.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            problems.push(format!("cannot set link time: {}", std::io::Error::from(e)));
        }
        rename_into(
            (&staging.fd, LINK_NAME),
            (&dir, name),
            overwrite,
            &self.display(rel),
        )?;
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
    let mut mode = meta.mode;
    if let Some((uid, gid)) = meta.owner.map(owner_ids)
        && let Err(e) = rustix::fs::fchown(&fd, uid, gid)
    {
        problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
        // Set-uid/set-gid meant "run as the archived owner"; on whoever owns it now they
        // would mean something else.
        if mode & 0o6000 != 0 {
            mode &= !0o6000;
            problems.push("set-uid/set-gid bits not restored without the owner".into());
        }
    }
    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)) {
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
        rename_into(
            (&self.dir, self.tmp.as_str()),
            (&self.dir, self.name.as_str()),
            overwrite,
            &self.dest,
        )?;
        self.done = true;
        Ok(())
    }
}

/// Rename `from` to `to`. Without `overwrite` an entry already at `to` is never replaced
/// (`RENAME_NOREPLACE`; where the kernel or file system lacks it, a hard link, which never
/// replaces either, then removing the old name).
fn rename_into(
    from: (&OwnedFd, &str),
    to: (&OwnedFd, &str),
    overwrite: bool,
    dest: &Path,
) -> Result<()> {
    let renamed = if overwrite {
        rustix::fs::renameat(from.0, from.1, to.0, to.1)
    } else {
        match rustix::fs::renameat_with(from.0, from.1, to.0, to.1, RenameFlags::NOREPLACE) {
            Err(Errno::INVAL | Errno::NOSYS) => {
                rustix::fs::linkat(from.0, from.1, to.0, to.1, AtFlags::empty())
                    .and_then(|()| rustix::fs::unlinkat(from.0, from.1, AtFlags::empty()))
            }
            other => other,
        }
    };
    match renamed {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(Error::Exists {
            path: dest.to_path_buf(),
        }),
        Err(e) => Err(Error::io(dest, e.into())),
    }
}

/// The name a link gets inside its staging folder.
const LINK_NAME: &str = "link";

/// A private folder beside a link's final place (same file system, so the link can be
/// renamed out of it): made by us with mode 0700, checked to be ours after opening, removed
/// when dropped.
struct Staging {
    parent: Arc<OwnedFd>,
    name: String,
    fd: OwnedFd,
}

impl Staging {
    fn create(parent: &Arc<OwnedFd>, dest: impl Fn() -> PathBuf) -> Result<Staging> {
        let name = temp_name();
        rustix::fs::mkdirat(&**parent, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| Error::io(dest(), e.into()))?;
        let staging = rustix::fs::openat(
            &**parent,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(|fd| Staging {
            parent: Arc::clone(parent),
            name: name.clone(),
            fd,
        })
        .map_err(|e| Error::io(dest(), e.into()))?;
        // Someone who can write the parent may have swapped our new folder for theirs
        // between mkdirat and openat: only a folder we own and nobody else can enter is used.
        let st = rustix::fs::fstat(&staging.fd).map_err(|e| Error::io(dest(), e.into()))?;
        if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
            return Err(Error::TargetChanged {
                path: dest(),
                detail: "the private folder made to create this link was replaced".into(),
            });
        }
        Ok(staging)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&self.fd, LINK_NAME, AtFlags::empty());
        let _ = rustix::fs::unlinkat(&*self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
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
    fn a_link_is_made_in_a_private_folder_that_is_then_removed() {
        let t = tempfile::tempdir().unwrap();
        let target = Target::open(t.path()).unwrap();
        target.make_dir("d").unwrap();
        let meta = Meta {
            owner: None,
            mode: 0o777,
            mtime_sec: 1_000_000_000,
            mtime_nsec: 5,
        };
        let problems = target.symlink("d/l", "../elsewhere", &meta, false).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<_> = std::fs::read_dir(t.path().join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["l"]);
        let link = t.path().join("d/l");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../elsewhere")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::symlink_metadata(&link).unwrap().mtime(),
            1_000_000_000
        );
        // Without overwrite, an existing name stays.
        assert!(matches!(
            target.symlink("d/l", "x", &meta, false),
            Err(Error::Exists { .. })
        ));
    }

    #[test]
    fn a_folder_replaced_under_its_name_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let target = Target::open(t.path()).unwrap();
        target.make_dir("a").unwrap();
        target.forget_dirs();
        std::fs::rename(t.path().join("a"), t.path().join("moved")).unwrap();
        std::fs::create_dir(t.path().join("a")).unwrap();
        assert!(matches!(
            target.create_file("a/f"),
            Err(Error::TargetChanged { .. })
        ));
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
