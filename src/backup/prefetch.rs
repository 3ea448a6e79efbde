//! Reading small files ahead, in parallel. A tree of small files costs system calls, not
//! bytes: open, read, list attributes, close — one file after another on the walking
//! thread, each waiting on the kernel (or the disk). The walk hands batches of entries
//! here; the small, dense, single-name files among them are opened, read, hashed and
//! their attributes listed on the rayon workers at once, and the walk then takes their
//! contents in path order, so the archive is the same as if it had read them itself.
//!
//! Bounded: at most [`BATCH_ENTRIES`] entries and [`BATCH_BYTES`] of file contents are
//! held at a time; a file larger than [`SMALL`] is read by the walk as before, and so is a
//! batch with fewer than [`MIN_ELIGIBLE`] small files (the workers are busy sealing: on a
//! tree of 28 KiB files, handing them a few files per batch cost 10 %; on a tree of
//! 200,000 files of 1–200 bytes, reading ahead saves 15–23 %).

use rayon::prelude::*;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::format::v2::Xattr;
use crate::format::v2::content::{ContentDigest, ContentHasher};

/// Files up to this size are read ahead: where a file costs its system calls, not its bytes.
pub(super) const SMALL: u64 = 4 * 1024;
/// Entries per batch.
pub(super) const BATCH_ENTRIES: usize = 256;
/// A batch is read ahead only when at least this many of its entries are eligible.
pub(super) const MIN_ELIGIBLE: usize = BATCH_ENTRIES / 2;
/// File bytes per batch (by their listed sizes).
pub(super) const BATCH_BYTES: u64 = 4 << 20;

/// An entry the walk met, waiting for its turn.
pub(super) struct Pending {
    pub path: PathBuf,
    pub meta: Metadata,
    pub archive_path: Vec<u8>,
}

/// A small file read on a worker.
pub(super) struct Prefetched {
    /// The open error, or the contents (or the read error).
    pub contents: Result<std::io::Result<Vec<u8>>, std::io::Error>,
    /// Attributes read through the open descriptor, and what could not be read.
    pub xattrs: (Vec<Xattr>, Vec<String>),
    pub digest: Option<ContentDigest>,
}

/// Whether the walk may take `meta`'s file from a read-ahead: a regular file, small, with
/// one name (a hard link's names are decided in walk order), and dense (a sparse file's
/// holes are found on the open file).
pub(super) fn eligible(meta: &Metadata) -> bool {
    meta.file_type().is_file()
        && meta.nlink() == 1
        && meta.len() <= SMALL
        && (meta.len() == 0 || meta.blocks().saturating_mul(512) >= meta.len())
}

/// Read the eligible files of `batch` on the workers; `None` for the others.
pub(super) fn read_ahead(
    batch: &[Pending],
    xattrs: bool,
    keep_windows: Option<usize>,
) -> Vec<Option<Prefetched>> {
    batch
        .par_iter()
        .map(|p| {
            eligible(&p.meta)
                .then(|| read_one(&p.path, &p.meta, xattrs, keep_windows))
                .flatten()
        })
        .collect()
}

/// `None` when the file grew past [`SMALL`] since it was listed: the walk reads it itself,
/// to its end, as any other file.
fn read_one(
    path: &Path,
    meta: &Metadata,
    xattrs: bool,
    keep_windows: Option<usize>,
) -> Option<Prefetched> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return Some(Prefetched {
                contents: Err(e),
                xattrs: (Vec::new(), Vec::new()),
                digest: None,
            });
        }
    };
    let xattrs = if xattrs {
        crate::fsmeta::read_xattrs_of(&file)
    } else {
        (Vec::new(), Vec::new())
    };
    // One byte more than listed, so a file that grew is noticed without reading it all.
    let mut data = Vec::with_capacity(meta.len() as usize + 1);
    let read = file.by_ref().take(SMALL + 1).read_to_end(&mut data);
    if data.len() as u64 > SMALL {
        return None;
    }
    let digest = read.is_ok().then(|| {
        let mut h = match keep_windows {
            Some(limit) => ContentHasher::keeping_windows(limit),
            None => ContentHasher::new(),
        };
        h.update(&data);
        h.finalize()
    });
    Some(Prefetched {
        contents: Ok(read.map(|_| data)),
        xattrs,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(path: &Path) -> Pending {
        Pending {
            path: path.to_path_buf(),
            meta: std::fs::symlink_metadata(path).unwrap(),
            archive_path: path.as_os_str().as_encoded_bytes().to_vec(),
        }
    }

    #[test]
    fn only_small_dense_single_name_files_are_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("small"), b"hello").unwrap();
        std::fs::write(d.join("empty"), b"").unwrap();
        std::fs::write(d.join("large"), vec![1u8; SMALL as usize + 1]).unwrap();
        std::fs::write(d.join("linked"), b"two names").unwrap();
        std::fs::hard_link(d.join("linked"), d.join("linked2")).unwrap();
        std::fs::create_dir(d.join("folder")).unwrap();
        let sparse = File::create(d.join("sparse")).unwrap();
        sparse.set_len(SMALL).unwrap();
        let names = ["small", "empty", "large", "linked", "folder", "sparse"];
        let batch: Vec<Pending> = names.iter().map(|n| pending(&d.join(n))).collect();
        let got = read_ahead(&batch, false, Some(4));
        let read: Vec<bool> = got.iter().map(Option::is_some).collect();
        assert_eq!(read, [true, true, false, false, false, false]);
        let small = got[0].as_ref().unwrap();
        assert_eq!(small.contents.as_ref().unwrap().as_ref().unwrap(), b"hello");
        let digest = small.digest.as_ref().unwrap();
        assert_eq!(
            digest.hash,
            crate::format::v2::content::content_hash(b"hello")
        );
        assert_eq!(digest.windows.as_deref(), Some(&[digest.hash][..]));
    }

    #[test]
    fn an_unreadable_file_reports_the_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        std::fs::write(&path, b"x").unwrap();
        let p = pending(&path);
        std::fs::remove_file(&path).unwrap();
        let got = read_ahead(&[p], true, None);
        assert!(got[0].as_ref().unwrap().contents.is_err());
    }
}
