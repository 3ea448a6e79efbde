//! Keyed `verify` of a v2 archive, last step: every file's data bytes, read from its
//! extents (in the archive or, for an incremental, in its parents), hash to the content
//! hash its entry records (FORMAT.md v2.10.3). Blocks are opened in parallel through one
//! ordered pipeline over `(archive, block)` pairs, in the order the files need them, each
//! block once for a run of pieces that share it; the hashing happens in that order on the
//! sink. Memory: the files waiting for a block (those sharing the current block) and one
//! block, whatever the number of files or members.

use crate::format::v2::content::ContentHasher;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use super::verify::{Problem, VerifyReport, frame_tag_is};
use super::{Archive, Unlocked};
use crate::error::Result;
use crate::format::index::BlockRef;
use crate::format::v2::{Extent, KIND_FILE, display_path};
use crate::pipeline::{self, sink_stopped, slot_count};
use crate::seal::{BlockSealer, OpenError};

/// Where a piece of a file's data is: member (0 the archive, `k` its parent `k`), block,
/// and the range inside the block's plaintext.
type Piece = (u32, u64, std::ops::Range<usize>);

/// A block of a member, as `(member, block)`.
type BlockAt = (u32, u64);

/// A file whose hash is being checked: its pieces, in data order.
struct Work {
    path: Vec<u8>,
    want: [u8; 32],
    pieces: VecDeque<Piece>,
    hasher: ContentHasher,
    /// A block it needs could not be opened: its hash cannot be checked.
    lost: bool,
}

#[derive(Default)]
struct Slot {
    frame: Vec<u8>,
    plain: Vec<u8>,
    member: u32,
    block: u64,
    r: BlockRef,
    last: bool,
    tag_differs: bool,
    failure: Option<OpenError>,
}

/// The archives a restore point's files are read from: `members[0]` the archive itself,
/// `members[k]` its parent `k` when it is open (`None`: missing or refused, reported
/// already by the caller).
pub(super) type Members<'a> = [Option<(&'a Archive, &'a Unlocked)>];

/// Hash every file of `unlocked` (the index of `archive`, `members[0]`) from the blocks
/// its extents name, in this archive or its parents, and compare with its content hash;
/// each mismatch is a problem naming the file. Adds the bytes read from each member to
/// `read`. Returns how many files were skipped because a member they need is not open.
pub(super) fn check_content_hashes(
    members: &Members<'_>,
    archive: &Archive,
    unlocked: &Unlocked,
    report: &mut VerifyReport,
    read: &mut [u64],
) -> Result<u64> {
    let geometry: Vec<Option<(u64, u64, u64)>> = members
        .iter()
        .map(|m| {
            m.map(|(a, u)| {
                let bs = u64::from(a.params().block_size);
                (bs, u.stream_len(), u.block_count())
            })
        })
        .collect();
    let sealers: Vec<Option<Arc<BlockSealer>>> = members
        .iter()
        .map(|m| m.map(|(_, u)| Arc::clone(&u.sealer)))
        .collect();
    let (files_tx, files_rx) = channel::<Work>();
    let mut waiting = Waiting {
        files: files_rx,
        pending: VecDeque::new(),
        current: None,
        problems: Vec::new(),
    };
    let mut skipped = 0u64;
    let skipped_ref = &mut skipped;
    pipeline::run(
        slot_count(),
        |feed| {
            let mut last_sent: Option<(u32, u64)> = None;
            unlocked.for_each_entry(archive, |_, e| {
                let Some(want) = e.content_hash.filter(|_| e.kind == KIND_FILE) else {
                    return Ok(());
                };
                let Some(pieces) = pieces(&e.extents, &geometry) else {
                    *skipped_ref += 1;
                    return Ok(());
                };
                let blocks: Vec<(u32, u64)> = pieces.iter().map(|p| (p.0, p.1)).collect();
                // The sink learns of the file before any block it needs arrives.
                let _ = files_tx.send(Work {
                    path: e.path,
                    want,
                    pieces,
                    hasher: ContentHasher::new(),
                    lost: false,
                });
                for (m, b) in blocks {
                    if last_sent == Some((m, b)) {
                        continue;
                    }
                    last_sent = Some((m, b));
                    let (a, u) = members[m as usize].expect("pieces() checked it is open");
                    let (r, tag) = u.block(a, b)?;
                    let mut slot: Slot = feed.take().ok_or_else(sink_stopped)?;
                    a.read_frame(&r, &mut slot.frame)?;
                    slot.member = m;
                    slot.block = b;
                    slot.r = r;
                    slot.last = b + 1 == u.block_count();
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
            let Some(sealer) = sealers[slot.member as usize].as_ref() else {
                slot.failure = Some(OpenError::Malformed("archive not open".into()));
                return;
            };
            slot.failure = sealer
                .open(&mut slot.frame, slot.block, slot.last, &mut slot.plain)
                .err();
            if slot.failure.is_none() && slot.plain.len() != slot.r.raw_len as usize {
                slot.failure = Some(OpenError::Malformed("length differs from the index".into()));
            }
        },
        |slot, _| {
            read[slot.member as usize] += slot.frame.len() as u64;
            // A damaged block was reported by the block pass already; the files it holds
            // are reported as not checked.
            let plain = slot.failure.is_none().then_some(&slot.plain[..]);
            waiting.block((slot.member, slot.block), plain);
            Ok(())
        },
    )?;
    waiting.finish();
    let offset = archive.data_start();
    report
        .problems
        .extend(waiting.problems.into_iter().map(|detail| Problem {
            archive: None,
            block: None,
            offset,
            detail,
        }));
    Ok(skipped)
}

/// The pieces of a file's data, in order; `None` when an extent is in a member that is not
/// open. `geometry[k]`: block size, stream length and block count of member `k`. An extent
/// outside its member's stream (refused by the index checks for the archive itself and by
/// the parent's extent-end check) also gives `None` rather than a read out of bounds.
fn pieces(extents: &[Extent], geometry: &[Option<(u64, u64, u64)>]) -> Option<VecDeque<Piece>> {
    let mut out = VecDeque::new();
    for x in extents {
        let (block_size, stream_len, _) = (*geometry.get(x.archive as usize)?)?;
        if x.offset.checked_add(x.len)? > stream_len {
            return None;
        }
        let mut at = x.offset;
        let end = x.offset + x.len;
        while at < end {
            let b = at / block_size;
            let from = (at - b * block_size) as usize;
            let to = (end.min((b + 1) * block_size) - b * block_size) as usize;
            out.push_back((x.archive, b, from..to));
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
    /// The last block delivered (member, block) and its plaintext (`None`: it did not
    /// open).
    current: Option<(BlockAt, Option<Vec<u8>>)>,
    problems: Vec<String>,
}

impl Waiting {
    /// Block `b` (member, block) arrived: its plaintext, or `None` if it did not open.
    fn block(&mut self, b: BlockAt, plain: Option<&[u8]>) {
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
                Some((pm, pb, _)) if (*pm, *pb) != b => break,
                Some((_, _, range)) => {
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
