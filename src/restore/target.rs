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
            target.make_dir(format!("d{i}")).unwrap();
        }
        assert!(target.dirs.lock().unwrap().len() <= DIR_CACHE);
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn meta(mode: u32, owner: Option<(u32, u32)>) -> Meta {
        Meta {
            owner,
            mode,
            mtime_sec: 1_234_567_890,
            mtime_nsec: 42,
        }
    }

    fn xattr(name: &str, value: &[u8]) -> Xattr {
        Xattr {
            name: name.as_bytes().to_vec(),
            value: value.to_vec(),
        }
    }

    /// A version-2 file capability: cap_net_bind_service permitted and effective.
    fn capability() -> Vec<u8> {
        let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
        cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
        cap.extend_from_slice(&[0; 12]);
        cap
    }

    /// user::rw-, user:1234:r--, group::r--, mask::r--, other::--- (the kernel's format),
    /// which agrees with mode 0640.
    fn acl() -> Vec<u8> {
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 1234),
            (0x04, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        acl
    }

    /// A target on the disk (the worktree's target folder): /tmp may be a tmpfs without
    /// user xattrs.
    fn disk_dir() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/target-tests");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn xattrs_are_set_after_the_owner_so_a_capability_survives() {
        use std::os::unix::fs::MetadataExt;
        if !is_root() {
            println!("skipped: trusted.*, security.capability and chown need root");
            return;
        }
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        let f = target.create_file("f").unwrap();
        f.write_at(0, b"#!/bin/true\n").unwrap();
        let xattrs = vec![
            xattr("security.capability", &capability()),
            xattr("system.posix_acl_access", &acl()),
            xattr("trusted.t", b"1"),
            xattr("user.u", b"\xff\x00binary"),
        ];
        let problems = set_meta_with_xattrs(&f.file, &meta(0o640, Some((1234, 1234))), &xattrs);
        if problems.iter().any(|p| p.contains("not supported")) {
            println!("skipped: the file system lacks xattrs or ACLs: {problems:?}");
            return;
        }
        assert!(problems.is_empty(), "{problems:?}");
        let path = f.commit(false).unwrap();
        let (read, messages) = crate::fsmeta::read_xattrs(&path);
        assert!(messages.is_empty(), "{messages:?}");
        // Verbatim, the ACL included (mode 0640 agrees with it, so chmod left it alone).
        assert_eq!(read, xattrs);
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o640));
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 42));
    }

    #[test]
    fn each_refused_xattr_is_one_problem_naming_it() {
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        let f = target.create_file("f").unwrap();
        let problems = set_xattrs(
            &f.file,
            &[
                xattr("user.ok", b"1"),
                xattr("nonsense.x", b"1"),
                Xattr {
                    name: b"user.nul\0".to_vec(),
                    value: Vec::new(),
                },
            ],
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("nonsense.x"), "{problems:?}");
        assert!(problems[1].contains("user.nul\\x00"), "{problems:?}");
    }

    #[test]
    fn a_link_gets_its_own_xattrs_without_following() {
        if !is_root() {
            println!("skipped: trusted.* xattrs (the ones Linux allows on links) need root");
            return;
        }
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        std::fs::write(t.path().join("file"), b"x").unwrap();
        let problems = target
            .symlink_with_xattrs(
                "l",
                "file",
                &meta(0o777, None),
                &[xattr("trusted.link", b"mine"), xattr("user.x", b"1")],
                false,
            )
            .unwrap();
        // Linux allows no user.* attributes on links.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("user.x"), "{problems:?}");
        let (on_link, _) = crate::fsmeta::read_xattrs(&t.path().join("l"));
        assert_eq!(on_link, [xattr("trusted.link", b"mine")]);
        let (on_file, _) = crate::fsmeta::read_xattrs(&t.path().join("file"));
        assert!(on_file.is_empty(), "followed the link: {on_file:?}");
        assert_eq!(names(t.path()), ["file", "l"]);
    }

    #[test]
    fn a_sparse_file_is_written_at_offsets_and_keeps_its_holes() {
        use std::os::unix::fs::MetadataExt;
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        let f = target.create_file("sparse").unwrap();
        f.write_at(1 << 20, &[1u8; 4096]).unwrap();
        f.write_at(512 << 20, &[2u8; 8192]).unwrap();
        f.set_len(1 << 30).unwrap();
        let path = f.commit(false).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "holes were filled: {} blocks",
            m.blocks()
        );
        let file = File::open(&path).unwrap();
        let mut buf = [9u8; 4];
        file.read_exact_at(&mut buf, (1 << 20) - 2).unwrap();
        assert_eq!(buf, [0, 0, 1, 1]);
        file.read_exact_at(&mut buf, (512 << 20) + 8190).unwrap();
        assert_eq!(buf, [2, 2, 0, 0]);
        if let Some(ranges) = crate::fsmeta::data_ranges(&file, &m).unwrap() {
            assert_eq!(ranges.len(), 2, "{ranges:?}");
        }
    }

    #[test]
    fn a_fifo_and_a_device_are_made_with_their_metadata() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        target.make_dir("dev").unwrap();
        let problems = target
            .special(
                "dev/fifo",
                SpecialKind::Fifo,
                (0, 0),
                &meta(0o620, None),
                &[],
                false,
            )
            .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let m = std::fs::symlink_metadata(t.path().join("dev/fifo")).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o7777, 0o620);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 42));
        // Without overwrite an existing name stays; with it, it is replaced.
        assert!(matches!(
            target.special(
                "dev/fifo",
                SpecialKind::Fifo,
                (0, 0),
                &meta(0o600, None),
                &[],
                false
            ),
            Err(Error::Exists { .. })
        ));
        target
            .special(
                "dev/fifo",
                SpecialKind::Fifo,
                (0, 0),
                &meta(0o600, None),
                &[],
                true,
            )
            .unwrap();
        let m = std::fs::symlink_metadata(t.path().join("dev/fifo")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);

        let null = target.special(
            "dev/null",
            SpecialKind::Char,
            (1, 3),
            &meta(0o666, Some((1234, 5678))),
            &[],
            false,
        );
        if !is_root() {
            assert!(null.as_ref().is_err_and(not_permitted), "{null:?}");
            println!("device part skipped: making devices needs root");
            return;
        }
        assert!(null.unwrap().is_empty());
        let m = std::fs::symlink_metadata(t.path().join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(crate::fsmeta::rdev_parts(m.rdev()), (1, 3));
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o666));
        target
            .special(
                "dev/blk",
                SpecialKind::Block,
                (7, 200),
                &meta(0o600, None),
                &[],
                false,
            )
            .unwrap();
        let m = std::fs::symlink_metadata(t.path().join("dev/blk")).unwrap();
        assert!(m.file_type().is_block_device());
        assert_eq!(crate::fsmeta::rdev_parts(m.rdev()), (7, 200));
        // No staging folder is left behind.
        assert_eq!(names(&t.path().join("dev")), ["blk", "fifo", "null"]);
    }

    #[test]
    fn hard_link_refuses_to_replace_without_overwrite() {
        use std::os::unix::fs::MetadataExt;
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        target.make_dir("d").unwrap();
        let f = target.create_file("a").unwrap();
        f.write_at(0, b"first").unwrap();
        f.commit(false).unwrap();
        std::fs::write(t.path().join("d/c"), b"theirs").unwrap();
        let ino = |p: &str| std::fs::symlink_metadata(t.path().join(p)).unwrap().ino();

        target.hard_link("a", "d/b", false).unwrap();
        assert_eq!(ino("d/b"), ino("a"));
        assert!(matches!(
            target.hard_link("a", "d/c", false),
            Err(Error::Exists { .. })
        ));
        assert_eq!(std::fs::read(t.path().join("d/c")).unwrap(), b"theirs");
        // With overwrite it is replaced, and a name that already is the inode stays so.
        target.hard_link("a", "d/c", true).unwrap();
        assert_eq!(ino("d/c"), ino("a"));
        target.hard_link("a", "d/b", true).unwrap();
        assert_eq!(ino("d/b"), ino("a"));
        assert_eq!(names(&t.path().join("d")), ["b", "c"]);
        // A link is linked as a link, never followed.
        std::os::unix::fs::symlink("a", t.path().join("s")).unwrap();
        target.hard_link("s", "d/s2", false).unwrap();
        assert!(
            std::fs::symlink_metadata(t.path().join("d/s2"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn non_utf8_names_restore_as_their_bytes() {
        let t = disk_dir();
        let target = Target::open(t.path()).unwrap();
        let dir: &[u8] = b"caf\xe9";
        let file: Vec<u8> = [dir, b"/\xff\xfe name"].concat();
        target.make_dir(dir).unwrap();
        let f = target.create_file(&file).unwrap();
        f.write_at(0, b"latin-1").unwrap();
        let dest = f.commit(false).unwrap();
        assert_eq!(dest, target.display(&file));
        assert_eq!(
            dest.strip_prefix(t.path()).unwrap().as_os_str().as_bytes(),
            &file[..]
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"latin-1");
        // &str callers (the v1 restore) keep working beside byte callers.
        target.make_dir("plain").unwrap();
        assert_eq!(target.display("plain"), t.path().join("plain"));
        // A NUL or a '..' component is refused, bytes or not.
        assert!(matches!(
            target.make_dir(b"caf\xe9/.."),
            Err(Error::UnsafePath { .. })
        ));
    }
}
