//! Reading the metadata format v2 stores beyond owner, mode and time, from the source during
//! a backup (docs/FORMAT.md v2.7.1, v2.7.3): extended attributes, the data ranges of sparse
//! files, hard-link identity and device numbers.
//!
//! Path-based like the walk; nothing here follows a symlink (`llistxattr`/`lgetxattr`).
//! Nothing here fails a backup on its own: what cannot be read is left out with a message
//! the caller turns into a warning.
//!
//! Linux is the target. On other systems extended attributes read as none and every file as
//! dense (their xattr namespaces and hole semantics differ from what v2 records).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::v2::{DataRange, Xattr};

/// Bounds of docs/FORMAT.md v2.7.2 rule 7: what a reader accepts, so what a writer stores.
pub const MAX_XATTRS: usize = 1024;
/// Longest xattr name, in bytes (also the kernel's `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value, in bytes (also the kernel's `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 65_536;
/// Largest Σ (name + value) of one entry's xattrs, in bytes.
pub const MAX_XATTR_TOTAL: usize = 262_144;
/// The namespaces a v2 xattr name may start with.
pub const XATTR_NAMESPACES: [&[u8]; 4] = [b"user.", b"trusted.", b"security.", b"system."];
/// Most data ranges one sparse file may record (docs/FORMAT.md v2.7.2 rule 8).
pub const MAX_DATA_RANGES: usize = 8192;

/// Whether `name` is a valid v2 xattr name (v2.7.2 rule 7): 1 ..= 255 bytes, no NUL, in
/// one of the four namespaces. The restore side uses it too, so both agree.
pub fn xattr_name_ok(name: &[u8]) -> bool {
    (1..=MAX_XATTR_NAME).contains(&name.len())
        && !name.contains(&0)
        && XATTR_NAMESPACES.iter().any(|ns| name.starts_with(ns))
}

/// The extended attributes of `path` (a symlink's own, never its target's): every name
/// `llistxattr` returns whose value `lgetxattr` can read, sorted by name bytes, within the
/// bounds of docs/FORMAT.md v2.7.2 rule 7.
///
/// The second vector says what was left out and why, one message each (the caller makes
/// them warnings): unreadable attributes, names outside the four namespaces or too long,
/// values over 64 KiB, and attributes past 1024 or past 256 KiB in total (those are dropped
/// in name order: the first that fit are kept). A file system without xattr support gives
/// nothing and no message; so does an attribute removed between listing and reading.
pub fn read_xattrs(path: &Path) -> (Vec<Xattr>, Vec<String>) {
    #[cfg(target_os = "linux")]
    {
        read_xattrs_linux(
            || rustix::fs::llistxattr_query(path),
            |buf| rustix::fs::llistxattr(path, buf),
            |name| rustix::fs::lgetxattr_query(path, name),
            |name, buf| rustix::fs::lgetxattr(path, name, buf),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        (Vec::new(), Vec::new())
    }
}

/// [`read_xattrs`] of an open regular file, through its descriptor: the same attributes,
/// without walking the path again (one system call per file when it has none, which is
/// what a backup of many small files pays).
pub fn read_xattrs_of(file: &std::fs::File) -> (Vec<Xattr>, Vec<String>) {
    #[cfg(target_os = "linux")]
    {
        read_xattrs_linux(
            || rustix::fs::flistxattr_query(file),
            |buf| rustix::fs::flistxattr(file, buf),
            |name| rustix::fs::fgetxattr_query(file, name),
            |name, buf| rustix::fs::fgetxattr(file, name, buf),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        (Vec::new(), Vec::new())
    }
}

/// How often a list or value that grew between asking its size and reading it is re-read
/// before giving up on it (another process rewriting it in a loop).
#[cfg(target_os = "linux")]
const RACE_RETRIES: usize = 8;

/// Longest name list read: the kernel's own limit (`XATTR_LIST_MAX`).
#[cfg(target_os = "linux")]
const MAX_LIST: usize = 65_536;

#[cfg(target_os = "linux")]
fn read_xattrs_linux(
    list_query: impl Fn() -> rustix::io::Result<usize>,
    list_read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get_query: impl Fn(&[u8]) -> rustix::io::Result<usize>,
    get_read: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> (Vec<Xattr>, Vec<String>) {
    use rustix::io::Errno;

    let mut messages = Vec::new();
    let list = match read_sized(list_query, list_read, MAX_LIST) {
        Ok(Some(list)) => list,
        // Grown past the kernel's own limit meanwhile: nothing sensible to store.
        Ok(None) => {
            messages.push("extended attributes not stored: their name list is too long".into());
            return (Vec::new(), messages);
        }
        Err(Errno::NOTSUP | Errno::NODATA) => return (Vec::new(), messages),
        Err(e) => {
            messages.push(format!(
                "extended attributes not stored: cannot list them: {}",
                std::io::Error::from(e)
            ));
            return (Vec::new(), messages);
        }
    };
    let mut names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    names.sort_unstable();
    names.dedup();

    let mut kept = Kept::default();
    for name in names {
        if !kept.name_fits(name) {
            continue;
        }
        let value = match read_sized(
            || get_query(name),
            |buf| get_read(name, buf),
            MAX_XATTR_VALUE,
        ) {
            Ok(Some(value)) => value,
            Ok(None) => {
                kept.messages.push(format!(
                    "extended attribute {} not stored: its value is over {MAX_XATTR_VALUE} bytes",
                    name.escape_ascii()
                ));
                continue;
            }
            // Removed since it was listed: it is simply not there any more.
            Err(Errno::NODATA) => continue,
            Err(e) => {
                kept.messages.push(format!(
                    "extended attribute {} not stored: cannot read it: {}",
                    name.escape_ascii(),
                    std::io::Error::from(e)
                ));
                continue;
            }
        };
        kept.add(name, value);
    }
    messages.append(&mut kept.messages);
    if kept.over_count > 0 {
        messages.push(format!(
            "{} extended attributes not stored: at most {MAX_XATTRS} are kept per entry (the first by name)",
            kept.over_count
        ));
    }
    (kept.out, messages)
}

/// The xattrs of one entry kept so far, offered in name order, within rule 7's bounds.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Default)]
struct Kept {
    out: Vec<Xattr>,
    /// Σ (name + value) of `out`.
    total: usize,
    /// Valid names past the first 1024 (one message for all of them).
    over_count: usize,
    messages: Vec<String>,
}

impl Kept {
    /// Whether a value for `name` is worth reading: a valid name, and room for one more.
    fn name_fits(&mut self, name: &[u8]) -> bool {
        if !xattr_name_ok(name) {
            self.messages.push(format!(
                "extended attribute {} not stored: its name is not 1 to {MAX_XATTR_NAME} bytes in the user., trusted., security. or system. namespace",
                name.escape_ascii()
            ));
            return false;
        }
        if self.out.len() >= MAX_XATTRS {
            self.over_count += 1;
            return false;
        }
        true
    }

    /// Keep `name` = `value` unless it would take the total past 256 KiB (a later, smaller
    /// one may still fit).
    fn add(&mut self, name: &[u8], value: Vec<u8>) {
        if value.len() > MAX_XATTR_VALUE {
            self.messages.push(format!(
                "extended attribute {} not stored: its value is over {MAX_XATTR_VALUE} bytes",
                name.escape_ascii()
            ));
            return;
        }
        if self.total + name.len() + value.len() > MAX_XATTR_TOTAL {
            self.messages.push(format!(
                "extended attribute {} not stored: with it the attributes would hold over {MAX_XATTR_TOTAL} bytes",
                name.escape_ascii()
            ));
            return;
        }
        self.total += name.len() + value.len();
        self.out.push(Xattr {
            name: name.to_vec(),
            value,
        });
    }
}

/// Read a variable-size kernel answer (an xattr list or value): ask its size, read into a
/// buffer of that size, and ask again when it grew meanwhile (`ERANGE`). `Ok(None)` when it
/// is longer than `max` (nothing that large is allocated).
#[cfg(target_os = "linux")]
fn read_sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    max: usize,
) -> rustix::io::Result<Option<Vec<u8>>> {
    let mut last = rustix::io::Errno::RANGE;
    for _ in 0..RACE_RETRIES {
        let len = query()?;
        if len > max {
            return Ok(None);
        }
        if len == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; len];
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e @ rustix::io::Errno::RANGE) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The data ranges of a sparse file (docs/FORMAT.md v2.7.3), for the entry's `data_ranges`.
///
/// `None` means dense: the file has at least as many allocated bytes as its size (the
/// common case, decided from `meta` without a system call), the file system does not report
/// holes (`SEEK_DATA` unsupported), or the scan found no hole. Otherwise `Some` ranges,
/// sorted, disjoint and not adjacent, within `[0, meta.len())` (a file that grew during the
/// scan is cut at the size recorded in `meta`); `Some(vec![])` is a file that is all hole.
/// More than 8192 ranges are reduced by counting the smallest holes as data until 8192
/// remain (they are then stored as zeros).
///
/// The file's position is put back where it was, so the caller can read it afterwards as
/// if this had not run.
pub fn data_ranges(file: &File, meta: &Metadata) -> std::io::Result<Option<Vec<DataRange>>> {
    let size = meta.len();
    if size == 0 || meta.blocks().saturating_mul(512) >= size {
        return Ok(None);
    }
    #[cfg(target_os = "linux")]
    {
        let ranges = match scan_data(file, size)? {
            Some(ranges) => ranges,
            None => return Ok(None),
        };
        if let [only] = ranges[..]
            && only.offset == 0
            && only.len == size
        {
            return Ok(None);
        }
        Ok(Some(limit_ranges(ranges, MAX_DATA_RANGES)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Ok(None)
    }
}

/// `SEEK_DATA`/`SEEK_HOLE` over `[0, size)`, adjacent ranges merged; `None` when the file
/// system does not support it. The position is restored afterwards.
#[cfg(target_os = "linux")]
fn scan_data(file: &File, size: u64) -> std::io::Result<Option<Vec<DataRange>>> {
    use rustix::fs::SeekFrom;
    use rustix::io::Errno;

    let was = rustix::fs::tell(file)?;
    let mut ranges: Vec<DataRange> = Vec::new();
    let mut at = 0u64;
    let scanned = loop {
        if at >= size {
            break Ok(true);
        }
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data at or after `at`: the rest is a hole.
            Err(Errno::NXIO) => break Ok(true),
            Err(Errno::INVAL | Errno::NOTSUP | Errno::OPNOTSUPP) if at == 0 => break Ok(false),
            Err(e) => break Err(e),
        };
        if start >= size {
            break Ok(true);
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            // Truncated between the two calls: the data ends where the file now ends.
            Err(Errno::NXIO) => break Ok(true),
            Err(e) => break Err(e),
        };
        if end <= start {
            // Cannot move forward (a file system answering oddly): count the rest as data
            // rather than loop.
            push_range(&mut ranges, start, size - start);
            break Ok(true);
        }
        push_range(&mut ranges, start, end - start);
        at = end;
    };
    rustix::fs::seek(file, SeekFrom::Start(was))?;
    Ok(scanned?.then_some(ranges))
}

/// Append a range, merging it into the previous one when they touch.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn push_range(ranges: &mut Vec<DataRange>, offset: u64, len: u64) {
    if let Some(last) = ranges.last_mut()
        && last.offset + last.len >= offset
    {
        let end = (offset + len).max(last.offset + last.len);
        last.len = end - last.offset;
        return;
    }
    ranges.push(DataRange { offset, len });
}

/// Reduce sorted, disjoint ranges to at most `max` by filling the smallest holes between
/// them (ties: the earlier hole first), so the fewest zero bytes are stored as data.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn limit_ranges(ranges: Vec<DataRange>, max: usize) -> Vec<DataRange> {
    if ranges.len() <= max || max == 0 {
        return ranges;
    }
    // Hole i lies between ranges i and i+1.
    let mut holes: Vec<(u64, usize)> = ranges
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].offset - (w[0].offset + w[0].len), i))
        .collect();
    holes.sort_unstable();
    let mut fill = vec![false; ranges.len()];
    for &(_, i) in &holes[..ranges.len() - max] {
        fill[i] = true;
    }
    let mut out: Vec<DataRange> = Vec::with_capacity(max);
    let mut joining = false;
    for (i, r) in ranges.iter().enumerate() {
        match out.last_mut() {
            Some(last) if joining => last.len = r.offset + r.len - last.offset,
            _ => out.push(*r),
        }
        joining = fill[i];
    }
    out
}

/// Hard-link identity during one walk (docs/FORMAT.md v2.7.3): the first name met of an
/// inode with more than one name is stored with its data, every later name as a hard link
/// to that first entry.
///
/// Only non-folders with `st_nlink > 1` are remembered, by `(st_dev, st_ino)`, and an inode
/// is forgotten once as many names as its link count were seen, so memory follows the
/// number of multiply-linked inodes whose names are still to come.
#[derive(Debug, Default)]
pub struct HardLinks {
    /// (device, inode) → (entry number of the first name, names still to be seen).
    inodes: HashMap<(u64, u64), (u64, u64)>,
}

impl HardLinks {
    pub fn new() -> HardLinks {
        HardLinks::default()
    }

    /// Record that entry `entry_number` is a name of the inode `meta` describes (from
    /// `symlink_metadata`, so a symlink is its own inode). `Some(first)` when an earlier
    /// entry named the same inode: this one is then stored as a hard link to `first`.
    /// `None` for the first name, for folders and for inodes with one name.
    pub fn seen(&mut self, meta: &Metadata, entry_number: u64) -> Option<u64> {
        if meta.is_dir() || meta.nlink() <= 1 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        match self.inodes.get_mut(&key) {
            None => {
                self.inodes.insert(key, (entry_number, meta.nlink() - 1));
                None
            }
            Some((first, left)) => {
                let first = *first;
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.inodes.remove(&key);
                }
                Some(first)
            }
        }
    }

    /// Inodes remembered now (names of them still expected).
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }
}

/// A device number (`st_rdev`) as the (major, minor) pair v2 stores, in Linux's encoding.
pub fn rdev_parts(rdev: u64) -> (u32, u32) {
    let dev = rdev as rustix::fs::Dev;
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// The device number for a (major, minor) pair: the inverse of [`rdev_parts`].
#[allow(clippy::useless_conversion)] // `Dev` is not u64 on every system
pub fn rdev_from_parts((major, minor): (u32, u32)) -> u64 {
    u64::from(rustix::fs::makedev(major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;

    fn r(offset: u64, len: u64) -> DataRange {
        DataRange { offset, len }
    }

    /// A folder on a disk file system (the worktree's target folder), not tmpfs, so xattrs
    /// and holes behave as on a real source.
    fn disk_dir() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fsmeta-tests");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::tempdir_in(base).unwrap()
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn xattrs_round_trip_sorted_and_bounded() {
        let d = disk_dir();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        if let Err(e) = rustix::fs::setxattr(&f, "user.b", b"2", rustix::fs::XattrFlags::empty()) {
            println!("skipped: this file system refuses user xattrs ({e})");
            return;
        }
        rustix::fs::setxattr(&f, "user.a", b"", rustix::fs::XattrFlags::empty()).unwrap();
        // Small enough for one ext4 block (file systems without large xattr support).
        let big = vec![7u8; 2_000];
        rustix::fs::setxattr(&f, "user.c", &big, rustix::fs::XattrFlags::empty()).unwrap();
        let (xattrs, messages) = read_xattrs(&f);
        assert!(messages.is_empty(), "{messages:?}");
        let names: Vec<&[u8]> = xattrs.iter().map(|x| &x.name[..]).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.b", b"user.c"]);
        assert_eq!(xattrs[0].value, b"");
        assert_eq!(xattrs[1].value, b"2");
        assert_eq!(xattrs[2].value, big);
    }

    #[test]
    fn xattrs_past_the_bounds_are_left_out_with_a_message() {
        let mut kept = Kept::default();
        for i in 0..5 {
            let name = format!("user.v{i}");
            assert!(kept.name_fits(name.as_bytes()));
            kept.add(name.as_bytes(), vec![1u8; 60_000]);
        }
        // 4 × 60 007 fit in 262 144, the fifth does not; a small one still does.
        assert_eq!(kept.out.len(), 4);
        assert_eq!(kept.messages.len(), 1, "{:?}", kept.messages);
        assert!(kept.messages[0].contains("user.v4"));
        kept.add(b"user.w", vec![2u8; 100]);
        assert_eq!(kept.out.len(), 5);
        kept.add(b"user.x", vec![0u8; MAX_XATTR_VALUE + 1]);
        assert!(!kept.name_fits(b"other.x"));
        assert_eq!(kept.messages.len(), 3, "{:?}", kept.messages);

        let mut kept = Kept::default();
        for i in 0..MAX_XATTRS + 3 {
            let name = format!("user.{i:05}");
            if kept.name_fits(name.as_bytes()) {
                kept.add(name.as_bytes(), Vec::new());
            }
        }
        assert_eq!((kept.out.len(), kept.over_count), (MAX_XATTRS, 3));
        assert!(kept.messages.is_empty());
    }

    #[test]
    fn xattrs_of_a_symlink_are_its_own() {
        let d = disk_dir();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        if rustix::fs::setxattr(&f, "user.t", b"1", rustix::fs::XattrFlags::empty()).is_err() {
            println!("skipped: this file system refuses user xattrs");
            return;
        }
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let (xattrs, messages) = read_xattrs(&l);
        assert!(messages.is_empty(), "{messages:?}");
        assert!(
            xattrs.iter().all(|x| x.name != b"user.t"),
            "the target's xattrs were read through the link: {xattrs:?}"
        );
    }

    #[test]
    fn privileged_xattrs_and_a_posix_acl_are_read_as_root() {
        if !is_root() {
            println!("skipped: trusted.* and security.capability need root");
            return;
        }
        let d = disk_dir();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        // A version-2 capability: cap_net_bind_service (bit 10) permitted + effective.
        let mut cap = Vec::new();
        cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
        cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
        cap.extend_from_slice(&0u32.to_le_bytes());
        cap.extend_from_slice(&[0; 8]);
        // user::rw-, user:1234:r--, group::r--, mask::r--, other::---
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
        let flags = rustix::fs::XattrFlags::empty();
        for (name, value) in [
            ("trusted.t", &b"v"[..]),
            ("security.capability", &cap),
            ("system.posix_acl_access", &acl),
        ] {
            if let Err(e) = rustix::fs::setxattr(&f, name, value, flags) {
                println!("skipped: the file system refuses {name} ({e})");
                return;
            }
        }
        let (xattrs, messages) = read_xattrs(&f);
        assert!(messages.is_empty(), "{messages:?}");
        let get = |n: &[u8]| xattrs.iter().find(|x| x.name == n).map(|x| x.value.clone());
        assert_eq!(get(b"trusted.t").as_deref(), Some(&b"v"[..]));
        assert_eq!(get(b"security.capability"), Some(cap));
        assert_eq!(get(b"system.posix_acl_access"), Some(acl));
        let mut sorted = xattrs.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(sorted, xattrs);
    }

    #[test]
    fn xattr_names_follow_rule_7() {
        assert!(xattr_name_ok(b"user.x"));
        assert!(xattr_name_ok(b"system.posix_acl_access"));
        assert!(!xattr_name_ok(b""));
        assert!(!xattr_name_ok(b"user"));
        assert!(!xattr_name_ok(b"os2.x"));
        assert!(!xattr_name_ok(b"user.a\0b"));
        let long = [b"user.".as_slice(), &[b'a'; 250]].concat();
        assert!(xattr_name_ok(&long));
        assert!(!xattr_name_ok(&[long.as_slice(), b"a"].concat()));
    }

    #[test]
    fn a_sparse_gibibyte_with_two_data_ranges() {
        let d = disk_dir();
        let path = d.path().join("sparse");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(1 << 30).unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        f.write_all_at(&[2u8; 8192], 512 << 20).unwrap();
        f.sync_all().unwrap();
        f.seek(SeekFrom::Start(123)).unwrap();
        let meta = f.metadata().unwrap();
        let ranges = data_ranges(&f, &meta).unwrap();
        let Some(ranges) = ranges else {
            println!("skipped: the file system does not report holes");
            return;
        };
        // File systems allocate in blocks of their own size: the ranges hold the written
        // bytes and may be rounded out to those blocks, no further.
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert!(
            ranges[0].offset <= 1 << 20 && ranges[0].offset + ranges[0].len >= (1 << 20) + 4096
        );
        assert!(ranges[0].len <= 1 << 20, "{ranges:?}");
        assert!(ranges[1].offset <= 512 << 20);
        assert!(ranges[1].offset + ranges[1].len >= (512 << 20) + 8192);
        assert!(ranges[1].len <= 1 << 20, "{ranges:?}");
        // The position is where it was.
        assert_eq!(f.stream_position().unwrap(), 123);
    }

    #[test]
    fn dense_files_and_files_of_holes() {
        let d = disk_dir();
        let path = d.path().join("dense");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[3u8; 100_000]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(data_ranges(&f, &f.metadata().unwrap()).unwrap(), None);

        let path = d.path().join("hole");
        let f = File::create(&path).unwrap();
        f.set_len(10 << 20).unwrap();
        let meta = f.metadata().unwrap();
        match data_ranges(&f, &meta).unwrap() {
            Some(ranges) => assert_eq!(ranges, []),
            None => println!("skipped: the file system does not report holes"),
        }
    }

    #[test]
    fn too_many_ranges_fill_the_smallest_holes() {
        // Holes: 10, 1, 5, 1 (between ranges 0-1, 1-2, 2-3, 3-4).
        let ranges = vec![r(0, 10), r(20, 10), r(31, 4), r(40, 2), r(43, 7)];
        assert_eq!(limit_ranges(ranges.clone(), 5), ranges);
        assert_eq!(
            limit_ranges(ranges.clone(), 3),
            [r(0, 10), r(20, 15), r(40, 10)]
        );
        assert_eq!(limit_ranges(ranges.clone(), 2), [r(0, 10), r(20, 30)]);
        assert_eq!(limit_ranges(ranges, 1), [r(0, 50)]);
        let many: Vec<_> = (0..10_000u64).map(|i| r(i * 10, 5 + i % 3)).collect();
        let limited = limit_ranges(many, MAX_DATA_RANGES);
        assert_eq!(limited.len(), MAX_DATA_RANGES);
        assert!(
            limited
                .windows(2)
                .all(|w| w[0].offset + w[0].len < w[1].offset)
        );
        // The last range starts at 99 990 and holds 5 + 9 999 % 3 = 5 bytes.
        assert_eq!(limited.last().map(|l| l.offset + l.len), Some(99_995));
    }

    #[test]
    fn touching_ranges_are_merged() {
        let mut ranges = Vec::new();
        push_range(&mut ranges, 0, 10);
        push_range(&mut ranges, 10, 5);
        push_range(&mut ranges, 20, 5);
        assert_eq!(ranges, [r(0, 15), r(20, 5)]);
    }

    #[test]
    fn hard_link_map_names_the_first_entry_then_forgets() {
        let d = disk_dir();
        let a = d.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        std::fs::hard_link(&a, d.path().join("b")).unwrap();
        std::fs::hard_link(&a, d.path().join("c")).unwrap();
        let single = d.path().join("single");
        std::fs::write(&single, b"y").unwrap();
        let meta = std::fs::symlink_metadata(&a).unwrap();

        let mut links = HardLinks::new();
        assert_eq!(
            links.seen(&std::fs::symlink_metadata(d.path()).unwrap(), 0),
            None
        );
        assert_eq!(links.seen(&meta, 1), None);
        assert_eq!(
            links.seen(&std::fs::symlink_metadata(&single).unwrap(), 2),
            None
        );
        assert_eq!(links.len(), 1);
        assert_eq!(links.seen(&meta, 3), Some(1));
        assert_eq!(links.seen(&meta, 4), Some(1));
        // All three names seen: forgotten.
        assert!(links.is_empty());
    }

    #[test]
    fn device_numbers_split_and_join() {
        use std::os::unix::fs::FileTypeExt;
        assert_eq!(rdev_parts(rdev_from_parts((1, 3))), (1, 3));
        assert_eq!(rdev_parts(rdev_from_parts((259, 1 << 19))), (259, 1 << 19));
        if let Ok(m) = std::fs::metadata("/dev/null")
            && m.file_type().is_char_device()
        {
            assert_eq!(rdev_parts(m.rdev()), (1, 3));
        }
    }
}
