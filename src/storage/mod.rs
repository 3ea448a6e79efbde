//! Where archives live: a local file system or an S3-compatible object store. The backup
//! writes through an [`ArchiveSink`] (append-only, visible under its name only once
//! committed), readers go through an [`ArchiveSource`] (positioned reads), and retention
//! checks and deletes whole archives with [`exists`] and [`delete`]. The pipeline never asks
//! which kind it has.
//!
//! [`naming`] names archives in a destination (`NAME-TIME-ID.coffer`) and recognises what an
//! interrupted run left there: `backup --to` and jobs share it.
//!
//! A location is written as a path everywhere (so flags, job files and messages stay the
//! same): `s3://bucket/prefix/name.coffer` is an object, anything else a local path.

pub mod local;
pub mod naming;
#[cfg(feature = "s3")]
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A place an archive or a folder of archives can be: parsed from a path-like string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `s3://bucket/key`; `key` has no leading slash and may be empty (bucket root).
    S3 {
        bucket: String,
        key: String,
    },
}

impl Location {
    /// `s3://bucket/key` is an object location; everything else is a local path.
    pub fn parse(path: &Path) -> Result<Self> {
        let Some(text) = path.to_str() else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        {
            return Err(Error::InvalidOption(format!(
                "{text}: not a valid S3 location (expected s3://bucket/key, bucket in lower case)"
            )));
        }
        if key.split('/').any(|c| c == "." || c == "..") {
            return Err(Error::InvalidOption(format!(
                "{text}: `.` and `..` are not allowed in an S3 key"
            )));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// The location as users wrote it, for messages and catalogs.
    pub fn display_path(&self) -> PathBuf {
        match self {
            Location::Local(p) => p.clone(),
            Location::S3 { bucket, key } => PathBuf::from(format!("s3://{bucket}/{key}")),
        }
    }

    /// The location of `name` inside this folder or prefix.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{name}")
                } else {
                    format!("{key}/{name}")
                };
                Location::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
        }
    }
}

/// An archive being written: bytes are appended in order; nothing is visible under the
/// final name until [`ArchiveSink::commit`] returns. Dropping a sink without committing
/// removes the partial file or aborts the upload.
pub trait ArchiveSink: Send {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// Make the archive durable and visible under its final name.
    fn commit(self: Box<Self>) -> Result<()>;
    /// Finish writing and make the bytes durable without making them visible, so that a
    /// set of archives can be written in full before any of them replaces its old file
    /// (a chain's rekey). Local files: written and fsynced under the temporary name; an
    /// object store has no such step (the upload completes at `commit`).
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }
    /// Device and inode of a local archive, so a backup never reads its own output.
    fn local_identity(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Positioned reads of a finished archive.
pub trait ArchiveSource: Send + Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`; an error if the archive ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Bytes and requests fetched from remote storage so far (`None` for local files).
    fn fetched(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Open a finished archive for reading.
pub fn open_source(location: &Location) -> Result<Arc<dyn ArchiveSource>> {
    match location {
        Location::Local(path) => Ok(Arc::new(local::LocalSource::open(path)?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => Ok(Arc::new(s3::S3Source::open(location)?)),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(no_s3(location)),
    }
}

/// Start writing an archive. Local files refuse to replace an existing one unless
/// `overwrite`; objects are checked too when the credentials allow asking.
pub fn create_sink(location: &Location, overwrite: bool) -> Result<Box<dyn ArchiveSink>> {
    match location {
        Location::Local(path) => Ok(Box::new(local::LocalSink::create(path, overwrite)?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => Ok(Box::new(s3::S3Sink::create(location, overwrite)?)),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(no_s3(location)),
    }
}

/// Start writing a replacement for an existing archive (rekey): a local file keeps the
/// old file's permissions; an object is replaced when its upload completes.
pub fn create_sink_keeping_mode(location: &Location) -> Result<Box<dyn ArchiveSink>> {
    match location {
        Location::Local(path) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            Ok(Box::new(local::LocalSink::create_with_mode(
                path, true, mode,
            )?))
        }
        _ => create_sink(location, true),
    }
}

/// Whether an archive exists; `None` when the credentials may not ask (a write-only
/// key cannot even look).
pub fn exists(location: &Location) -> Result<Option<bool>> {
    match location {
        Location::Local(path) => Ok(Some(path.symlink_metadata().is_ok())),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => s3::exists(location),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(no_s3(location)),
    }
}

/// Delete one archive; one that is already gone is not an error.
pub fn delete(location: &Location) -> Result<()> {
    match location {
        Location::Local(path) => match std::fs::remove_file(path) {
            Ok(()) => crate::fsutil::sync_parent(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        },
        #[cfg(feature = "s3")]
        Location::S3 { .. } => s3::delete(location),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(no_s3(location)),
    }
}

#[cfg(not(feature = "s3"))]
fn no_s3(location: &Location) -> Error {
    Error::InvalidOption(format!(
        "{}: this coffer was built without S3 support (cargo feature `s3`)",
        location.display_path().display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_and_everything_else_is_local() {
        assert_eq!(
            Location::parse(Path::new("s3://bkp/host1/a.coffer")).unwrap(),
            Location::S3 {
                bucket: "bkp".into(),
                key: "host1/a.coffer".into()
            }
        );
        assert_eq!(
            Location::parse(Path::new("s3://bkp")).unwrap(),
            Location::S3 {
                bucket: "bkp".into(),
                key: "".into()
            }
        );
        assert_eq!(
            Location::parse(Path::new("./s3:/x")).unwrap(),
            Location::Local("./s3:/x".into())
        );
        assert!(Location::parse(Path::new("s3:///key")).is_err());
        assert!(Location::parse(Path::new("s3://Upper/key")).is_err());
        assert!(Location::parse(Path::new("s3://b/../key")).is_err());
    }

    #[test]
    fn delete_removes_a_link_never_what_it_points_to() {
        // What `prune` relies on: an archive name replaced by a link out of the destination
        // costs the link, not the file it names.
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep me").unwrap();
        std::fs::create_dir(dir.path().join("dest")).unwrap();
        let link = dir.path().join("dest/a.coffer");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        delete(&Location::Local(link.clone())).unwrap();
        assert!(link.symlink_metadata().is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    }

    #[test]
    fn join_adds_one_separator() {
        let prefix = Location::parse(Path::new("s3://b/nightly")).unwrap();
        assert_eq!(
            prefix.join("a.coffer").display_path(),
            PathBuf::from("s3://b/nightly/a.coffer")
        );
        let root = Location::parse(Path::new("s3://b")).unwrap();
        assert_eq!(
            root.join("a.coffer").display_path(),
            PathBuf::from("s3://b/a.coffer")
        );
    }
}
