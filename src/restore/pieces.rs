//! Files whose data is in several pieces (FORMAT.md v2.7.1: extents, in file order, each in
//! this archive or in a parent) or shares bytes with another file: one ordered pipeline
//! over the `(archive, block)` pairs their extents need, in file order. The source walks
//! the files' extents and reads each block (a run of pieces in one block is read once);
//! workers open the blocks, tag first; the sink walks the same extents again and writes
//! each piece, in order, into its file under a temporary name, hashing as it goes. Memory:
//! the slots in flight and one open file, whatever the files' sizes.

use std::sync::Arc;

use super::RestoreReport;
use super::files::{Members, PartialFile, Policy, dlen};
use crate::archive::verify::frame_tag_is;
use crate::error::{Error, Result};
use crate::format::index::BlockRef;
use crate::format::v2::EntryV2 as Entry;
use crate::pipeline::{self, sink_stopped, slot_count};
use crate::progress::{Observer, Warning};
use crate::seal::{BlockSealer, OpenError, Opened};

/// One piece of a file: `len` bytes at `from` in block `block` of member `member`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    file: usize,
    member: u32,
    block: u64,
    from: usize,
    len: usize,
}

/// The files' extents cut at block boundaries, in file order.
struct Walk<'a> {
    files: &'a [&'a Entry],
    /// Block size of each member (every member a file here uses is open).
    sizes: Vec<u64>,
    i: usize,
    j: usize,
    /// Bytes of extent `j` already handed out.
    done: u64,
}

impl<'a> Walk<'a> {
    fn new(files: &'a [&'a Entry], sizes: Vec<u64>) -> Self {
        Walk {
            files,
            sizes,
            i: 0,
            j: 0,
            done: 0,
        }
    }

    fn next_piece(&mut self) -> Option<Piece> {
        loop {
            let e = self.files.get(self.i)?;
            let Some(x) = e.extents.get(self.j) else {
                (self.i, self.j, self.done) = (self.i + 1, 0, 0);
                continue;
            };
            if self.done >= x.len {
                (self.j, self.done) = (self.j + 1, 0);
                continue;
            }
            let bs = self.sizes[x.archive as usize];
            let o = x.offset + self.done;
            let from = o % bs;
            let len = (x.len - self.done).min(bs - from);
            self.done += len;
            return Some(Piece {
                file: self.i,
                member: x.archive,
                block: o / bs,
                from: from as usize,
                len: len as usize,
            });
        }
    }
}

#[derive(Default)]
struct Slot {
    frame: Vec<u8>,
    plain: Vec<u8>,
    member: u32,
    block: u64,
    r: BlockRef,
    tag_differs: bool,
    last: bool,
    raw_len: usize,
    plain_range: Option<std::ops::Range<usize>>,
    failure: Option<OpenError>,
}

impl Slot {
    fn plain(&self) -> &[u8] {
        match &self.plain_range {
            Some(range) => &self.frame[range.clone()],
            None => &self.plain[..],
        }
    }
}

/// Write `files` (each non-empty) piece by piece; adds the bytes read from each member to
/// `read`.
pub(super) fn write_pieces(
    members: &Members<'_>,
    policy: &Policy,
    files: &[&Entry],
    observer: &dyn Observer,
    report: &mut RestoreReport,
    read: &mut [u64],
) -> Result<()> {
    // Every archive these files use must be open (the restore opened every parent the
    // selected files reference, and checked their extents against it).
    for e in files {
        for x in &e.extents {
            members.get(x.archive)?;
        }
    }
    let sizes: Vec<u64> = members
        .list
        .iter()
        .map(|m| m.map_or(1, |(a, _)| u64::from(a.params().block_size)))
        .collect();
    let sealers: Vec<Option<Arc<BlockSealer>>> = members
        .list
        .iter()
        .map(|m| m.map(|(_, u)| Arc::clone(&u.sealer)))
        .collect();
    let feed_sizes = sizes.clone();
    let mut walk = Walk::new(files, sizes);
    let mut pending: Option<Piece> = None;
    let mut current: Option<(usize, PartialFile)> = None;
    pipeline::run(
        slot_count(),
        move |feed| {
            let mut walk = Walk::new(files, feed_sizes);
            let mut prev = None;
            while let Some(p) = walk.next_piece() {
                // A run of pieces in one block (consecutive extents) reads it once; the sink
                // takes them all from that slot.
                if prev == Some((p.member, p.block)) {
                    continue;
                }
                prev = Some((p.member, p.block));
                let (archive, unlocked) = members.get(p.member)?;
                let (r, tag) = unlocked.block(archive, p.block)?;
                let mut slot: Slot = feed.take().ok_or_else(sink_stopped)?;
                slot.frame.resize(r.frame_len as usize, 0);
                archive
                    .source()
                    .read_exact_at(&mut slot.frame, archive.data_start() + r.offset)?;
                slot.member = p.member;
                slot.block = p.block;
                slot.r = r;
                slot.last = p.block + 1 == unlocked.block_count();
                slot.raw_len = r.raw_len as usize;
                slot.tag_differs = tag.is_some_and(|t| !frame_tag_is(&slot.frame, &t));
                feed.submit(slot);
            }
            Ok(())
        },
        move |slot: &mut Slot, _seq| {
            if slot.tag_differs {
                slot.failure = Some(OpenError::Tag);
                return;
            }
            let Some(sealer) = sealers[slot.member as usize].as_ref() else {
                slot.failure = Some(OpenError::Malformed("archive not open".into()));
                return;
            };
            match sealer.open_in_place(&mut slot.frame, slot.block, slot.last, &mut slot.plain) {
                Ok(Opened::InFrame(range)) => slot.plain_range = Some(range),
                Ok(Opened::InScratch) => slot.plain_range = None,
                Err(e) => {
                    slot.failure = Some(e);
                    return;
                }
            }
            if slot.plain().len() != slot.raw_len {
                slot.failure = Some(OpenError::Malformed("length differs from the index".into()));
            }
        },
        |slot, _seq| {
            let (archive, _) = members.get(slot.member)?;
            if let Some(e) = slot.failure.take() {
                return Err(archive.block_error(slot.block, &slot.r, e));
            }
            read[slot.member as usize] += slot.frame.len() as u64;
            report.blocks += 1;
            let mut wrote = false;
            while let Some(p) = pending.take().or_else(|| walk.next_piece()) {
                if (p.member, p.block) != (slot.member, slot.block) {
                    pending = Some(p);
                    break;
                }
                wrote = true;
                let e = files[p.file];
                if current.as_ref().is_none_or(|(f, _)| *f != p.file) {
                    current = Some((p.file, policy.create(e, true)?));
                }
                let data =
                    slot.plain()
                        .get(p.from..p.from + p.len)
                        .ok_or_else(|| Error::Corrupt {
                            path: archive.path().to_path_buf(),
                            offset: archive.data_start() + slot.r.offset,
                            detail: format!(
                                "block {}: the index places data of {:?} beyond the block's data",
                                slot.block,
                                crate::format::v2::display_path(&e.path)
                            ),
                        })?;
                let (_, pf) = current.as_mut().expect("opened above");
                pf.write(data)?;
                observer.bytes_done(p.len as u64);
                if pf.written == dlen(e) {
                    let (_, pf) = current.take().expect("open");
                    finish(policy, pf, e, observer, report)?;
                }
            }
            if !wrote {
                return Err(Error::Internal(format!(
                    "block {} of archive {} was read for no piece",
                    slot.block, slot.member
                )));
            }
            Ok(())
        },
    )?;
    if current.is_some() || pending.is_some() || walk.next_piece().is_some() {
        return Err(Error::Internal(
            "the blocks ended before every file was complete".into(),
        ));
    }
    Ok(())
}

/// Check the content hash, set the metadata and give the file its final name; count it.
fn finish(
    policy: &Policy,
    pf: PartialFile,
    e: &Entry,
    observer: &dyn Observer,
    report: &mut RestoreReport,
) -> Result<()> {
    let mut warnings: Vec<Warning> = Vec::new();
    let finished = policy.finish(pf, e, &mut warnings);
    for w in warnings {
        observer.warning(&w);
        report.warnings.push(w);
    }
    let dest = finished?;
    report.files += 1;
    report.bytes += dlen(e);
    observer.file_done(&dest, dlen(e));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::v2::{Extent, KIND_FILE};

    fn file(extents: &[(u32, u64, u64)]) -> Entry {
        Entry {
            path: b"f".to_vec(),
            kind: KIND_FILE,
            size: extents.iter().map(|x| x.2).sum(),
            extents: extents
                .iter()
                .map(|&(archive, offset, len)| Extent {
                    archive,
                    offset,
                    len,
                })
                .collect(),
            ..Entry::default()
        }
    }

    #[test]
    fn extents_are_cut_at_block_boundaries_in_file_order() {
        // Block size 10 in both members; an extent going backwards and one sharing bytes.
        let a = file(&[(1, 5, 12), (0, 0, 3)]);
        let b = file(&[(1, 0, 4)]);
        let files = [&a, &b];
        let mut w = Walk::new(&files, vec![10, 10]);
        let got: Vec<(usize, u32, u64, usize, usize)> = std::iter::from_fn(|| w.next_piece())
            .map(|p| (p.file, p.member, p.block, p.from, p.len))
            .collect();
        assert_eq!(
            got,
            [
                (0, 1, 0, 5, 5),
                (0, 1, 1, 0, 7),
                (0, 0, 0, 0, 3),
                (1, 1, 0, 0, 4)
            ]
        );
    }
}
