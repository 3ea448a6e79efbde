//! Keyed `verify` of a v2 archive, last step: every file's data bytes, read from its
//! extents, hash to the content hash its entry records (FORMAT.md v2.10.3). Blocks are
//! opened in parallel through the pipeline, in the order the files need them, each block
//! once for a run of files that share it; the hashing happens in that order on the sink.
//! Memory: the files waiting for a block (those sharing the current block) and one block.

use crate::format::v2::content::ContentHasher;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use super::verify::{Problem, VerifyReport, frame_tag_is};
use super::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::index::BlockRef;
use crate::format::v2::{Extent, KIND_FILE, display_path};
use crate::pipeline::{self, sink_stopped, slot_count};
use crate::seal::OpenError;

/// A file whose hash is being checked: its pieces (block, range inside the block's
/// plaintext), in data order.
struct Work {
    path: Vec<u8>,
    want: [u8; 32],
    pieces: VecDeque<(u64, std::ops::Range<usize>)>,
    hasher: ContentHasher,
    /// A block it needs could not be opened: its hash cannot be checked.
    lost: bool,
}

#[derive(Default)]
struct Slot {
    frame: Vec<u8>,
    plain: Vec<u8>,
    block: u64,
    r: BlockRef,
    last: bool,
    tag_differs: bool,
    failure: Option<OpenError>,
}

/// Hash every file of `unlocked` from the blocks its extents name and compare with its
/// content hash; each mismatch is a problem naming the file.
pub(super) fn check_content_hashes(
    archive: &Archive,
    unlocked: &Unlocked,
    report: &mut VerifyReport,
) -> Result<()> {
    let block_size = u64::from(archive.params().block_size);
    let count = unlocked.block_count();
    let last = count.saturating_sub(1);
    let stream_len = unlocked.stream_len();
    let sealer = Arc::clone(&unlocked.sealer);
    let (files_tx, files_rx) = channel::<Work>();
    let mut waiting = Waiting {
        files: files_rx,
        pending: VecDeque::new(),
        current: None,
        problems: Vec::new(),
    };
    pipeline::run(
        slot_count(),
        |feed| {
            let mut last_sent: Option<u64> = None;
            unlocked.for_each_entry(archive, |_, e| {
                let Some(want) = e.content_hash.filter(|_| e.kind == KIND_FILE) else {
                    return Ok(());
                };
                let pieces = pieces(&e.extents, block_size, stream_len).ok_or_else(|| {
                    Error::InvalidOption(format!(
                        "{}: {} has data in a parent archive (an incremental chain), which this build cannot verify",
                        archive.path().display(),
                        display_path(&e.path)
                    ))
                })?;
                let blocks: Vec<u64> = pieces.iter().map(|p| p.0).collect();
                // The sink learns of the file before any block it needs arrives.
                let _ = files_tx.send(Work {
                    path: e.path,
                    want,
                    pieces,
                    hasher: ContentHasher::new(),
                    lost: false,
                });
                for b in blocks {
                    if last_sent == Some(b) {
                        continue;
                    }
                    last_sent = Some(b);
                    let (r, tag) = unlocked.block(archive, b)?;
                    let mut slot: Slot = feed.take().ok_or_else(sink_stopped)?;
                    archive.read_frame(&r, &mut slot.frame)?;
                    slot.block = b;
                    slot.r = r;
                    slot.last = b == last;
                    slot.tag_differs = tag.is_some_and(|t| !frame_tag_is(&slot.frame, &t));
                    feed.submit(slot);
                }
                Ok(())
            })?;
            drop(files_tx);
            Ok(())
        },
        move |slot: &mut Slot, _| {
            if slot.tag_differs {
                slot.failure = Some(OpenError::Tag);
                return;
            }
            slot.failure = sealer
                .open(&mut slot.frame, slot.block, slot.last, &mut slot.plain)
                .err();
            if slot.failure.is_none() && slot.plain.len() != slot.r.raw_len as usize {
                slot.failure = Some(OpenError::Malformed("length differs from the index".into()));
            }
        },
        |slot, _| {
            // A damaged block was reported by the block pass already; the files it holds
            // are reported as not checked.
            let plain = slot.failure.is_none().then_some(&slot.plain[..]);
            waiting.block(slot.block, plain);
            Ok(())
        },
    )?;
    waiting.finish();
    let offset = archive.data_start();
    report
        .problems
        .extend(waiting.problems.into_iter().map(|detail| Problem {
            block: None,
            offset,
            detail,
        }));
    Ok(())
}

/// The (block, range in its plaintext) pieces of a file's data, in order; `None` when an
/// extent is in another archive. Extents are already checked to lie in the stream.
fn pieces(
    extents: &[Extent],
    block_size: u64,
    stream_len: u64,
) -> Option<VecDeque<(u64, std::ops::Range<usize>)>> {
    let mut out = VecDeque::new();
    for x in extents {
        if x.archive != 0 || x.offset + x.len > stream_len {
            return None;
        }
        let mut at = x.offset;
        let end = x.offset + x.len;
        while at < end {
            let b = at / block_size;
            let from = (at - b * block_size) as usize;
            let to = (end.min((b + 1) * block_size) - b * block_size) as usize;
            out.push_back((b, from..to));
            at = (b + 1) * block_size;
        }
    }
    Some(out)
}

/// The files whose pieces the blocks arriving in order are applied to. A file may name the
/// block just opened without having reached the sink yet (a run of files sharing a block
/// opens it once), so the current block is kept until the next one arrives: by then every
/// file that needs it has been sent.
struct Waiting {
    files: Receiver<Work>,
    pending: VecDeque<Work>,
    /// The last block delivered and its plaintext (`None`: it did not open).
    current: Option<(u64, Option<Vec<u8>>)>,
    problems: Vec<String>,
}

impl Waiting {
    /// Block `b` arrived (its plaintext, or `None` if it did not open).
    fn block(&mut self, b: u64, plain: Option<&[u8]>) {
        self.apply_current();
        self.current = Some((b, plain.map(<[u8]>::to_vec)));
        self.apply_current();
    }

    /// Apply the current block to every piece that needs it, front to back, taking in the
    /// files sent so far, until a piece needs a later block.
    fn apply_current(&mut self) {
        let Some((b, plain)) = self.current.take() else {
            return;
        };
        loop {
            if self.pending.is_empty() {
                match self.files.try_recv() {
                    Ok(w) => self.pending.push_back(w),
                    Err(_) => break,
                }
            }
            let w = self.pending.front_mut().expect("one pending");
            match w.pieces.front() {
                Some((pb, _)) if *pb != b => break,
                Some((_, range)) => {
                    match plain.as_deref().and_then(|p| p.get(range.clone())) {
                        Some(bytes) => w.hasher.update(bytes),
                        None => w.lost = true,
                    }
                    w.pieces.pop_front();
                }
                None => {
                    let w = self.pending.pop_front().expect("one pending");
                    self.done(w);
                }
            }
        }
        self.current = Some((b, plain));
    }

    fn done(&mut self, w: Work) {
        let path = display_path(&w.path);
        if w.lost {
            self.problems.push(format!(
                "{path}: content not checked (a block it needs is damaged)"
            ));
        } else if w.hasher.finalize().hash != w.want {
            self.problems.push(format!(
                "{path}: content does not match its content hash (the archive's writer recorded wrong data)"
            ));
        }
    }

    /// After the last block: what still waits is applied, then every file must be done.
    fn finish(&mut self) {
        self.apply_current();
        while let Ok(w) = self.files.try_recv() {
            self.pending.push_back(w);
        }
        self.apply_current();
        while let Some(w) = self.pending.pop_front() {
            if w.pieces.is_empty() {
                self.done(w);
            } else {
                self.problems.push(format!(
                    "{}: content not checked (its blocks were not read)",
                    display_path(&w.path)
                ));
            }
        }
    }
}
