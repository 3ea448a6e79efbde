//! Archives on a local file system.
//!
//! Writing: the archive goes to a hidden temporary name in the destination folder (see
//! [`AtomicFile`]), in large aligned chunks written by two I/O threads with `O_DIRECT`
//! where the file system allows it ([`ChunkWriter`]). A backup's archive is read by nobody soon, so copying
//! gigabytes through the page cache costs CPU (on the machines measured, more than the
//! encryption) and evicts what the host really uses; direct writes also queue two requests
//! at the device. Where `O_DIRECT` is refused (tmpfs on older kernels, some network file
//! systems) the same chunks go through the page cache instead.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{ArchiveSink, ArchiveSource};
use crate::error::{Error, Result};
use crate::fsutil::{AtomicFile, ChunkWriter};

/// Writes one archive under a temporary name; see the module docs.
pub struct LocalSink {
    /// `None` only once committed.
    atomic: Option<AtomicFile>,
    writer: Option<ChunkWriter>,
    identity: (u64, u64),
    overwrite: bool,
}

impl LocalSink {
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        Self::create_with_mode(dest, overwrite, 0o644)
    }

    pub fn create_with_mode(dest: &Path, overwrite: bool, mode: u32) -> Result<Self> {
        let mut atomic = AtomicFile::create_direct(dest, mode, overwrite)?;
        let tmp = atomic.temp_path().to_path_buf();
        let direct = atomic.file().try_clone().map_err(|e| Error::io(&tmp, e))?;
        let meta = direct.metadata().map_err(|e| Error::io(&tmp, e))?;
        let writer = ChunkWriter::new(direct, &tmp, dest)?;
        Ok(LocalSink {
            atomic: Some(atomic),
            writer: Some(writer),
            identity: (meta.dev(), meta.ino()),
            overwrite,
        })
    }
}

impl ArchiveSink for LocalSink {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .as_mut()
            .expect("writer open until commit")
            .write_all(bytes)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        // Already finished by `prepare`, or finished here.
        if let Some(writer) = self.writer.take() {
            writer.finish()?;
        }
        // `AtomicFile::commit` fsyncs through its own descriptor: same inode, so it covers
        // every write made through the others.
        let atomic = self.atomic.take().expect("committed once");
        atomic.commit(self.overwrite)
    }

    fn prepare(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            writer.finish()?;
        }
        let atomic = self.atomic.as_mut().expect("not committed");
        let tmp = atomic.temp_path().to_path_buf();
        atomic.file().sync_all().map_err(|e| Error::io(&tmp, e))
    }

    fn local_identity(&self) -> Option<(u64, u64)> {
        Some(self.identity)
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        // Let the I/O threads stop before `AtomicFile` removes the temporary file.
        drop(self.writer.take());
    }
}

/// A finished archive file, read with positioned reads (shareable between threads).
pub struct LocalSource {
    file: File,
    path: PathBuf,
    len: u64,
}

impl LocalSource {
    pub fn open(path: &Path) -> Result<Self> {
        // Look before opening: opening a FIFO for reading would wait for a writer.
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            let kind = if meta.is_dir() {
                "a folder"
            } else {
                "a device, FIFO or socket"
            };
            return Err(Error::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(LocalSource {
            file,
            path: path.to_path_buf(),
            len,
        })
    }
}

impl ArchiveSource for LocalSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::CHUNK;

    fn write_through_sink(len: usize, pieces: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.coffer");
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut sink = Box::new(LocalSink::create(&dest, false).unwrap());
        let step = len.div_ceil(pieces.max(1)).max(1);
        for piece in data.chunks(step) {
            sink.write_all(piece).unwrap();
        }
        sink.commit().unwrap();
        let back = std::fs::read(&dest).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "content differs for len {len}");
        // Only the archive is left: no temporary file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        back
    }

    #[test]
    fn sink_writes_every_byte_in_order_across_chunk_and_alignment_edges() {
        const ALIGN: usize = 4096;
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + ALIGN + 17,
        ] {
            write_through_sink(len, 7);
        }
    }

    #[test]
    fn dropped_sink_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.coffer");
        {
            let mut sink = LocalSink::create(&dest, false).unwrap();
            sink.write_all(&vec![7u8; CHUNK * 2 + 5]).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
