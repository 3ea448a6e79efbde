//! The logical stream: every file's bytes back to back, cut into fixed blocks that go to
//! the pipeline to be sealed. Each block is a frame buffer with the plaintext already at
//! its place in the frame, so sealing works in place.

use crate::format::v2::content::ContentHasher;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::frame::FRAME_PREFIX;
use crate::pipeline::{self, sink_stopped};
use crate::progress::Observer;

/// One pipeline slot: a frame buffer (plaintext at `FRAME_PREFIX..`) and its last flag.
#[derive(Default)]
pub(crate) struct Block {
    pub(super) buf: Vec<u8>,
    pub(super) last: bool,
}

/// Cuts the logical stream of file bytes into blocks. One full block is held back until
/// more data arrives, so that the last block can be flagged as last.
pub(super) struct BlockStream<'f, W> {
    feed: &'f mut pipeline::Feed<Block, W>,
    block_size: usize,
    frame_capacity: usize,
    current: Option<Block>,
    filled: usize,
    held: Option<Block>,
    stream_len: u64,
    observer: &'f dyn Observer,
    cancel: Option<&'f AtomicBool>,
}

impl<'f, W> BlockStream<'f, W>
where
    W: Fn(&mut Block, u64) + Send + Sync + 'static,
{
    pub(super) fn new(
        feed: &'f mut pipeline::Feed<Block, W>,
        block_size: usize,
        frame_capacity: usize,
        observer: &'f dyn Observer,
        cancel: Option<&'f AtomicBool>,
    ) -> Self {
        BlockStream {
            feed,
            block_size,
            frame_capacity,
            current: None,
            filled: 0,
            held: None,
            stream_len: 0,
            observer,
            cancel,
        }
    }

    /// Bytes of file data in the stream so far.
    pub(super) fn stream_len(&self) -> u64 {
        self.stream_len
    }

    fn current(&mut self) -> Result<&mut Block> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        if self.current.is_none() {
            let mut slot = self.feed.take().ok_or_else(sink_stopped)?;
            if slot.buf.capacity() < self.frame_capacity {
                slot.buf.reserve_exact(self.frame_capacity - slot.buf.len());
            }
            // Only grows the first time a buffer is used; later the frame is longer.
            slot.buf.resize(FRAME_PREFIX + self.block_size, 0);
            self.current = Some(slot);
            self.filled = 0;
        }
        Ok(self.current.as_mut().unwrap())
    }

    /// Read `file` to its end into the stream. The outer error stops the run (the writer
    /// failed); the inner one is this file's read error, which only skips the file.
    pub(super) fn read_file(
        &mut self,
        file: &mut File,
        hasher: Option<&mut ContentHasher>,
    ) -> Result<std::io::Result<u64>> {
        self.read_with(hasher, u64::MAX, |buf, _| file.read(buf))
    }

    /// Read up to `len` bytes of `file` from `offset` into the stream (positioned reads,
    /// for the data ranges of a sparse file); stops early at the end of the file.
    pub(super) fn read_range(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        hasher: Option<&mut ContentHasher>,
    ) -> Result<std::io::Result<u64>> {
        self.read_with(hasher, len, |buf, done| file.read_at(buf, offset + done))
    }

    /// Append bytes already read (a window an incremental had to store).
    pub(super) fn push_bytes(&mut self, data: &[u8]) -> Result<()> {
        let copied = self.read_with(None, data.len() as u64, |buf, done| {
            let from = done as usize;
            let n = buf.len().min(data.len() - from);
            buf[..n].copy_from_slice(&data[from..from + n]);
            Ok(n)
        })?;
        copied
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("copying into the stream: {e}")))
    }

    /// Fill the stream with `read` until it returns 0 or `limit` bytes came; each byte is
    /// also fed to `hasher`. `read` gets the buffer and the bytes read so far.
    fn read_with(
        &mut self,
        mut hasher: Option<&mut ContentHasher>,
        limit: u64,
        mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
    ) -> Result<std::io::Result<u64>> {
        let mut total = 0u64;
        loop {
            if total == limit {
                return Ok(Ok(total));
            }
            let end = FRAME_PREFIX + self.block_size;
            self.current()?;
            let filled = self.filled;
            let block = self.current.as_mut().expect("current block just ensured");
            let room =
                (end - FRAME_PREFIX - filled).min((limit - total).min(usize::MAX as u64) as usize);
            let buf = &mut block.buf[FRAME_PREFIX + filled..FRAME_PREFIX + filled + room];
            let n = match read(buf, total) {
                Ok(0) => return Ok(Ok(total)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            total += n as u64;
            self.observer.bytes_done(n as u64);
            self.filled += n;
            self.stream_len += n as u64;
            if self.filled == self.block_size {
                let full = self.current.take().unwrap();
                if let Some(prev) = self.held.replace(full) {
                    self.dispatch(prev, false);
                }
            }
        }
    }

    fn dispatch(&mut self, mut block: Block, last: bool) {
        block.last = last;
        self.feed.submit(block);
    }

    pub(super) fn finish(mut self) -> Result<u64> {
        let partial = self.current.take().filter(|_| self.filled > 0);
        match (self.held.take(), partial) {
            (Some(held), Some(mut cur)) => {
                self.dispatch(held, false);
                cur.buf.truncate(FRAME_PREFIX + self.filled);
                self.dispatch(cur, true);
            }
            (Some(held), None) => self.dispatch(held, true),
            (None, Some(mut cur)) => {
                cur.buf.truncate(FRAME_PREFIX + self.filled);
                self.dispatch(cur, true);
            }
            (None, None) => {}
        }
        Ok(self.stream_len)
    }
}
