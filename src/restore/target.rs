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
//!
//! Paths (`rel`) are byte strings relative to the target, `/`-separated, as format v2
//! stores them: any `impl AsRef<[u8]>` (`&str`, `&String`, `&[u8]`, `&Vec<u8>`), so a
//! non-UTF-8 name restores as the bytes it was.
//!
//! What format v2 adds (docs/FORMAT.md v2.7.1, v2.10.2 step 18): hard links
//! ([`Target::hard_link`], `linkat` between two open folders), FIFOs and devices
//! ([`Target::special`], `mknodat` in a private staging folder like links), extended
//! attributes ([`set_meta_with_xattrs`], and for links and special files the `_with_xattrs`
//! forms), and sparse files ([`NewFile::write_at`] and [`NewFile::set_len`]).

use rand::Rng;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::v2::Xattr;
use crate::fsmeta::rdev_from_parts;

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

/// What kind of special file [`Target::special`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecialKind {
    Fifo,
    Char,
    Block,
}

pub(crate) struct Target {
    root: Arc<OwnedFd>,
    root_path: PathBuf,
    dirs: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
    /// Device and inode of every folder this restore made or found, recorded when it was
    /// first opened: reopened later by name, a folder must still be the same one, so a
    /// user who renames folders around (swaps two restored folders in a parent they own)
    /// cannot make a later write or the final chmod/chown land on another folder.
    known: Mutex<HashMap<Vec<u8>, (u64, u64)>>,
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
    pub fn display(&self, rel: impl AsRef<[u8]>) -> PathBuf {
        self.root_path.join(OsStr::from_bytes(rel.as_ref()))
    }

    /// The open folder at `rel` ("" is the target itself), reached one name at a time
    /// without following links.
    pub fn dir(&self, rel: impl AsRef<[u8]>) -> Result<Arc<OwnedFd>> {
        let rel = rel.as_ref();
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
            let end = rel[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rel.len(), |i| start + i);
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
            dirs.insert(rel[..end].to_vec(), Arc::clone(&fd));
            (cur, done) = (fd, end);
        }
        Ok(cur)
    }

    /// The first time a folder is opened, remember which one it is; every later time,
    /// refuse another one under its name.
    fn check_identity(&self, rel: &[u8], fd: &OwnedFd) -> Result<()> {
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
                known.insert(rel.to_vec(), id);
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
    fn parent_of<'a>(&self, rel: &'a [u8]) -> Result<(Arc<OwnedFd>, &'a [u8])> {
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        Ok((self.dir(dir)?, check_name(rel, name)?))
    }

    /// Create the folder `rel` (its parent exists), or accept a folder already there;
    /// anything else there (a link, a file) is refused.
    pub fn make_dir(&self, rel: impl AsRef<[u8]>) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_of(rel)?;
        match rustix::fs::mkdirat(&*dir, name, Mode::from_raw_mode(NEW_DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::io(self.display(rel), e.into())),
        }
        // Opening it (O_NOFOLLOW | O_DIRECTORY) is the check, and caches it for its files.
        self.dir(rel).map(drop)
    }

    /// Start a file: a new, empty file under a short temporary name in the entry's folder.
    pub fn create_file(&self, rel: impl AsRef<[u8]>) -> Result<NewFile> {
        let rel = rel.as_ref();
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
                name: name.to_vec(),
                dest: self.display(rel),
                done: false,
            },
        })
    }

    /// Create the link `rel` → `link_target` with its owner and time. Links cannot be
    /// opened, so their owner and time are set by name: that happens inside a private
    /// staging folder (ours, 0700) where nobody else can swap the name for a hard link to
    /// another file, and the finished link is then renamed into place.
    #[cfg(test)]
    pub fn symlink(
        &self,
        rel: impl AsRef<[u8]>,
        link_target: impl AsRef<[u8]>,
        meta: &Meta,
        overwrite: bool,
    ) -> Result<MetaProblems> {
        self.symlink_with_xattrs(rel, link_target, meta, &[], overwrite)
    }

    /// [`Target::symlink`] that also gives the link its own extended attributes (after the
    /// owner, before the time), set by name inside the staging folder without following
    /// the link (see [`set_xattrs_at`]). Linux refuses `user.*` attributes on links: each
    /// refused one is a problem line, as is every one when `/proc` is not mounted.
    pub fn symlink_with_xattrs(
        &self,
        rel: impl AsRef<[u8]>,
        link_target: impl AsRef<[u8]>,
        meta: &Meta,
        xattrs: &[Xattr],
        overwrite: bool,
    ) -> Result<MetaProblems> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_of(rel)?;
        let staging = Staging::create(&dir, || self.display(rel))?;
        rustix::fs::symlinkat(link_target.as_ref(), &staging.fd, LINK_NAME)
            .map_err(|e| Error::io(self.display(rel), e.into()))?;
        let mut problems = Vec::new();
        if let Some((uid, gid)) = meta.owner.map(owner_ids)
            && let Err(e) =
                rustix::fs::chownat(&staging.fd, LINK_NAME, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
        {
            problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
        }
        problems.extend(set_xattrs_at(&staging.fd, LINK_NAME, xattrs));
        if let Err(e) = rustix::fs::utimensat(
            &staging.fd,
            LINK_NAME,
            &meta.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            problems.push(format!("cannot set link time: {}", std::io::Error::from(e)));
        }
        rename_into(
            (&staging.fd, LINK_NAME.as_bytes()),
            (&dir, name),
            overwrite,
            &self.display(rel),
        )?;
        Ok(problems)
    }

    /// Make the FIFO or device `rel` with owner, extended attributes, mode and time, in
    /// that order (docs/FORMAT.md v2.10.2 step 18). `rdev` is (major, minor), ignored for a
    /// FIFO. `meta.mode` is used as given (the caller's policy has filtered it); the
    /// set-uid/set-gid bits are dropped, with a problem line, when the owner cannot be set.
    ///
    /// Such a node is never opened (opening a device can act on the hardware; opening a
    /// FIFO blocks), so its metadata is set by name, which is only safe where nobody else
    /// can swap the name: it is made with `mknodat` inside a private staging folder, like a
    /// link, given its metadata there and renamed into place under the same rule as a file
    /// (without `overwrite` an existing name is never replaced: [`Error::Exists`]).
    ///
    /// Making a device needs `CAP_MKNOD` (root outside a user namespace). Without it this
    /// returns `Err(Error::Io)` whose source is `PermissionDenied` and nothing is made;
    /// [`not_permitted`] tells that error apart, for the caller to report as a warning
    /// ("device not restored: needs root") and go on. A FIFO needs no privilege.
    ///
    /// Whether to make devices at all is the caller's policy: a device node from an archive
    /// anyone with a public key could have written (say `/dev/sda`'s numbers, mode 0666) is
    /// raw access to hardware, so it deserves the same trust as set-uid bits.
    pub fn special(
        &self,
        rel: impl AsRef<[u8]>,
        kind: SpecialKind,
        rdev: (u32, u32),
        meta: &Meta,
        xattrs: &[Xattr],
        overwrite: bool,
    ) -> Result<MetaProblems> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_of(rel)?;
        let staging = Staging::create(&dir, || self.display(rel))?;
        let (file_type, dev) = match kind {
            SpecialKind::Fifo => (FileType::Fifo, 0),
            SpecialKind::Char => (FileType::CharacterDevice, rdev_from_parts(rdev)),
            SpecialKind::Block => (FileType::BlockDevice, rdev_from_parts(rdev)),
        };
        // Mode 0600 until the real one is set, after the owner.
        rustix::fs::mknodat(
            &staging.fd,
            LINK_NAME,
            file_type,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .map_err(|e| Error::io(self.display(rel), e.into()))?;
        let mut problems = Vec::new();
        let mut mode = meta.mode;
        if let Some((uid, gid)) = meta.owner.map(owner_ids)
            && let Err(e) =
                rustix::fs::chownat(&staging.fd, LINK_NAME, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
        {
            problems.push(format!("cannot set owner: {}", std::io::Error::from(e)));
            if mode & 0o6000 != 0 {
                mode &= !0o6000;
                problems.push("set-uid/set-gid bits not restored without the owner".into());
            }
        }
        problems.extend(set_xattrs_at(&staging.fd, LINK_NAME, xattrs));
        // No AT_SYMLINK_NOFOLLOW (Linux refuses it for chmod): the name is the node just
        // made, in a folder nobody else can enter.
        if let Err(e) = rustix::fs::chmodat(
            &staging.fd,
            LINK_NAME,
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        ) {
            problems.push(format!(
                "cannot set permissions: {}",
                std::io::Error::from(e)
            ));
        }
        if let Err(e) = rustix::fs::utimensat(
            &staging.fd,
            LINK_NAME,
            &meta.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            problems.push(format!("cannot set time: {}", std::io::Error::from(e)));
        }
        rename_into(
            (&staging.fd, LINK_NAME.as_bytes()),
            (&dir, name),
            overwrite,
            &self.display(rel),
        )?;
        Ok(problems)
    }

    /// Make `new` another name of the entry at `existing` (restored earlier by this
    /// restore): `linkat` between the two parents' open folders, never following a link
    /// (a symlink at `existing` gets a second name, its target is not touched).
    ///
    /// Without `overwrite` an entry already at `new` is never replaced ([`Error::Exists`]).
    /// With it, the link is made under a temporary name and renamed over `new` in one step,
    /// so `new` never goes missing; if `new` already is that same inode, nothing changes.
    ///
    /// Limit: linking works on a name, so a user who can write the folder of `existing`
    /// and swaps that name for a hard link to another file of theirs on the same file
    /// system makes `new` name that file instead; linking changes neither its content nor
    /// its owner or mode.
    pub fn hard_link(
        &self,
        existing: impl AsRef<[u8]>,
        new: impl AsRef<[u8]>,
        overwrite: bool,
    ) -> Result<()> {
        let (existing, new) = (existing.as_ref(), new.as_ref());
        let (edir, ename) = self.parent_of(existing)?;
        let (ndir, nname) = self.parent_of(new)?;
        let dest = self.display(new);
        if !overwrite {
            return match rustix::fs::linkat(&*edir, ename, &*ndir, nname, AtFlags::empty()) {
                Ok(()) => Ok(()),
                Err(Errno::EXIST) => Err(Error::Exists { path: dest }),
                Err(e) => Err(Error::io(dest, e.into())),
            };
        }
        let tmp = temp_name();
        rustix::fs::linkat(&*edir, ename, &*ndir, tmp.as_str(), AtFlags::empty())
            .map_err(|e| Error::io(&dest, e.into()))?;
        // Removed again by its Drop if the rename fails.
        let mut pending = Pending {
            dir: Arc::clone(&ndir),
            tmp,
            name: nname.to_vec(),
            dest,
            done: false,
        };
        let linked = identity_at(&ndir, pending.tmp.as_bytes());
        pending.commit(true)?;
        // rename(2) does nothing when both names are links to one inode: the temporary
        // name is then still there. Remove it only if it is still our link.
        if linked.is_some() && identity_at(&ndir, pending.tmp.as_bytes()) == linked {
            let _ = rustix::fs::unlinkat(&*ndir, pending.tmp.as_str(), AtFlags::empty());
        }
        Ok(())
    }

    fn not_a_folder(&self, rel: &[u8], e: Errno) -> Error {
        if e == Errno::LOOP || e == Errno::NOTDIR {
            Error::UnsafePath {
                path: crate::format::v2::display_path(rel),
                reason: "is a link or a file in the target, not a folder (it may have been replaced during the restore)".into(),
            }
        } else {
            Error::io(self.display(rel), e.into())
        }
    }
}

/// Set owner, extended attributes, mode and times on an open file or folder; what could not be set is returned (a warning each). The owner goes first because changing it clears the set-uid and set-gid bits the mode may then set (and `security.capability`);
///: owner, then `xattrs`, then mode, then times
/// (docs/FORMAT.md v2.10.2 step 18). The attributes come after the owner because `chown`
/// clears `security.capability`, and before the mode so that the archived mode has the
/// last word over the permission bits a POSIX ACL (`system.posix_acl_access`) implies.
///
/// `xattrs` are applied as given: dropping privilege-granting ones from an untrusted
/// archive (`security.capability`, like set-uid bits) is the caller's policy.
pub(crate) fn set_meta_with_xattrs(fd: impl AsFd, meta: &Meta, xattrs: &[Xattr]) -> MetaProblems {
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
    problems.extend(set_xattrs(&fd, xattrs));
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

/// Set each extended attribute on an open file or folder (`fsetxattr`, created or
/// replaced); every one that fails is one problem line naming it (not permitted, e.g.
/// `trusted.*` without root; not supported by the target's file system; refused value).
/// Attributes the target already has and the list does not name are left alone.
pub(crate) fn set_xattrs(fd: impl AsFd, xattrs: &[Xattr]) -> MetaProblems {
    xattrs
        .iter()
        .filter_map(|x| {
            let set = check_xattr(x).and_then(|()| {
                rustix::fs::fsetxattr(&fd, &x.name[..], &x.value, XattrFlags::empty())
            });
            set.err().map(|e| xattr_problem(x, e))
        })
        .collect()
}

/// Set extended attributes on the entry `name` in the open folder `dir` without following
/// it, for what cannot be opened (links, FIFOs, devices). Linux has no `*xattrat` call
/// before 6.13, so this uses `lsetxattr` on `/proc/self/fd/<dir>/<name>`: the kernel
/// resolves the folder through the descriptor itself, never through a path someone could
/// change, and `lsetxattr` does not follow `name`. `dir` MUST be a folder nobody else can
/// write (the private staging folder), since the name is looked up anew for every call.
/// Without `/proc` every attribute is a problem line.
fn set_xattrs_at(dir: &OwnedFd, name: &str, xattrs: &[Xattr]) -> MetaProblems {
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()));
    xattrs
        .iter()
        .filter_map(|x| {
            let set = check_xattr(x).and_then(|()| {
                rustix::fs::lsetxattr(&path, &x.name[..], &x.value, XattrFlags::empty())
            });
            set.err().map(|e| xattr_problem(x, e))
        })
        .collect()
}

/// An xattr name with a NUL cannot be passed to the kernel; the index validation refuses
/// it already, this keeps these functions safe on their own.
fn check_xattr(x: &Xattr) -> rustix::io::Result<()> {
    if x.name.is_empty() || x.name.contains(&0) {
        return Err(Errno::INVAL);
    }
    Ok(())
}

fn xattr_problem(x: &Xattr, e: Errno) -> String {
    format!(
        "cannot set extended attribute {}: {}",
        x.name.escape_ascii(),
        std::io::Error::from(e)
    )
}

/// Whether `err` is the kernel refusing an operation for lack of privilege (`EPERM`,
/// `EACCES`): what [`Target::special`] returns for a device made without root, which the
/// caller reports as a warning rather than stopping the restore.
pub(crate) fn not_permitted(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

/// Device and inode of the entry `name` in `dir`, not following it; `None` if absent.
#[allow(clippy::unnecessary_cast)] // not u64 on every system
fn identity_at(dir: &OwnedFd, name: &[u8]) -> Option<(u64, u64)> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// An archive's owner ids for `chown`; -1 (which `chown` reads as "leave it") is left
/// alone rather than passed on.
fn owner_ids((uid, gid): (u32, u32)) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid)),
    )
}

/// The folder part of a relative path (before its last `/`), `None` at the top.
fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

/// A name inside one folder: never empty, `.`, `..` or with a slash (the index refuses
/// such paths already; this keeps the descriptor walk safe on its own).
fn check_name<'a>(rel: &[u8], name: &'a [u8]) -> Result<&'a [u8]> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::UnsafePath {
            path: crate::format::v2::display_path(rel),
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

    /// Write `bytes` at `offset` (`pwrite`, the file position is not used), for a sparse
    /// file's data ranges: a new file is all hole, so bytes never written stay holes once
    /// [`NewFile::set_len`] gives the file its size. Errors name the final path.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(self.dest(), e))
    }

    /// Give the file its logical size (`ftruncate`): after the last data range of a sparse
    /// file, so a trailing hole is a hole and not written zeros.
    pub fn set_len(&self, size: u64) -> Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| Error::io(self.dest(), e))
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
    name: Vec<u8>,
    dest: PathBuf,
    done: bool,
}

impl Pending {
    fn commit(&mut self, overwrite: bool) -> Result<()> {
        rename_into(
            (&self.dir, self.tmp.as_bytes()),
            (&self.dir, &self.name[..]),
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
    from: (&OwnedFd, &[u8]),
    to: (&OwnedFd, &[u8]),
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
mod tests;
