//! Archives on a local file system.
//!
//! Writing: the archive goes to a hidden temporary name in the destination folder (see
//! [`AtomicFile`]), in large aligned chunks written by two I/O threads with `O_DIRECT`
//! where the file system allows it. A backup's archive is read by nobody soon, so copying
//! gigabytes through the page cache costs CPU (on the machines measured, more than the
//! encryption) and evicts what the host really uses; direct writes also queue two requests
//! at the device. Where `O_DIRECT` is refused (tmpfs on older kernels, some network file
//! systems) the same chunks go through the page cache instead.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{ArchiveSink, ArchiveSource};
use crate::error::{Error, Result};
use crate::fsutil::AtomicFile;

/// Bytes per write: large enough that the device streams (measured: 4 MiB direct writes
/// reach ~1.2 GB/s here, 8 MiB ~1.6 GB/s, with two in flight more), small enough that the
/// three buffers stay well inside the memory budget.
pub const CHUNK: usize = 8 << 20;
/// Alignment `O_DIRECT` needs for buffer address, length and file offset (covers 512-byte
/// and 4 KiB logical blocks).
const ALIGN: usize = 4096;
const IO_THREADS: usize = 2;
const BUFFERS: usize = IO_THREADS + 1;

/// A buffer whose usable part starts at an `ALIGN` boundary.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let raw = vec![0u8; CHUNK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + CHUNK]
    }
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + CHUNK]
    }
}

/// A chunk handed to the I/O threads: `len` bytes of `buf` belong at file offset `at`.
struct Job {
    buf: AlignedBuf,
    len: usize,
    at: u64,
}

/// Writes one archive under a temporary name; see the module docs.
pub struct LocalSink {
    /// `None` only once committed.
    atomic: Option<AtomicFile>,
    path: PathBuf,
    identity: (u64, u64),
    /// The chunk being filled.
    current: Option<AlignedBuf>,
    filled: usize,
    /// File offset of `current`.
    at: u64,
    jobs: Option<SyncSender<Job>>,
    empties: Receiver<AlignedBuf>,
    workers: Vec<JoinHandle<std::io::Result<()>>>,
    /// A descriptor without `O_DIRECT` for the unaligned tail and the final fsync.
    plain: File,
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
        let plain = OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let meta = plain.metadata().map_err(|e| Error::io(&tmp, e))?;

        let (job_tx, job_rx) = sync_channel::<Job>(IO_THREADS);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (empty_tx, empty_rx) = sync_channel::<AlignedBuf>(BUFFERS);
        let direct = Arc::new(direct);
        let mut workers = Vec::with_capacity(IO_THREADS);
        for i in 0..IO_THREADS {
            let jobs = Arc::clone(&job_rx);
            let empties = empty_tx.clone();
            let file = Arc::clone(&direct);
            let worker = std::thread::Builder::new()
                .name(format!("coffer-write-{i}"))
                .spawn(move || -> std::io::Result<()> {
                    loop {
                        let job = match jobs.lock().map(|rx| rx.recv()) {
                            Ok(Ok(job)) => job,
                            _ => return Ok(()),
                        };
                        file.write_all_at(&job.buf.as_ref()[..job.len], job.at)?;
                        // The sink may already be gone (after an error elsewhere).
                        let _ = empties.send(job.buf);
                    }
                })
                .map_err(|e| Error::io(&tmp, e))?;
            workers.push(worker);
        }
        // Two spare buffers wait in the empty list; the third is `current`.
        for _ in 0..BUFFERS - 1 {
            empty_tx
                .send(AlignedBuf::new())
                .expect("receiver alive and room for every buffer");
        }
        Ok(LocalSink {
            atomic: Some(atomic),
            path: dest.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            current: Some(AlignedBuf::new()),
            filled: 0,
            at: 0,
            jobs: Some(job_tx),
            empties: empty_rx,
            workers,
            plain,
            overwrite,
        })
    }

    /// Hand the full current chunk to the I/O threads and take an empty one.
    fn ship(&mut self) -> Result<()> {
        let buf = self.current.take().expect("a current buffer between calls");
        let job = Job {
            buf,
            len: self.filled,
            at: self.at,
        };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.worker_error());
        }
        self.at += self.filled as u64;
        self.filled = 0;
        match self.empties.recv() {
            Ok(buf) => {
                self.current = Some(buf);
                Ok(())
            }
            Err(_) => Err(self.worker_error()),
        }
    }

    /// Stop the I/O threads and return the first error one of them met.
    fn join_workers(&mut self) -> Result<()> {
        self.jobs = None;
        let mut first = Ok(());
        for worker in self.workers.drain(..) {
            let outcome = match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            if let (Ok(()), Err(e)) = (&first, outcome) {
                first = Err(Error::io(&self.path, e));
            }
        }
        first
    }

    fn worker_error(&mut self) -> Error {
        match self.join_workers() {
            Err(e) => e,
            Ok(()) => Error::io(
                &self.path,
                std::io::Error::other("archive writer threads stopped"),
            ),
        }
    }
}

impl ArchiveSink for LocalSink {
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let buf = self
                .current
                .as_mut()
                .expect("a current buffer between calls");
            let n = bytes.len().min(CHUNK - self.filled);
            buf.as_mut()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == CHUNK {
                self.ship()?;
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        // Everything but the last partial chunk goes out aligned; the tail through `plain`.
        let aligned = self.filled & !(ALIGN - 1);
        let tail = self.current.take().expect("a current buffer between calls");
        let tail_bytes = tail.as_ref()[aligned..self.filled].to_vec();
        let tail_at = self.at + aligned as u64;
        self.current = Some(tail);
        if aligned > 0 {
            self.filled = aligned;
            self.ship()?;
        }
        self.join_workers()?;
        self.plain
            .write_all_at(&tail_bytes, tail_at)
            .map_err(|e| Error::io(&self.path, e))?;
        // `AtomicFile::commit` fsyncs through its own descriptor: same inode, so it covers
        // every write made through the others.
        let atomic = self.atomic.take().expect("committed once");
        atomic.commit(self.overwrite)
    }

    fn local_identity(&self) -> Option<(u64, u64)> {
        Some(self.identity)
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        // Let the I/O threads finish before `AtomicFile` removes the temporary file.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
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
