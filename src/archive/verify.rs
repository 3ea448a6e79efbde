//! Checking an archive without restoring it: keyless (every checksum: bit rot and
//! truncation) or keyed (every tag and decryption as well). Every bad block is reported,
//! not only the first.

use super::{Archive, Unlocked};
use crate::error::Result;
use crate::format::trailer::TRAILER_LEN;
use crate::progress::Observer;
use crate::seal::OpenError;

/// One problem found by `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Block number, or `None` for the header, index or trailer.
    pub block: Option<u64>,
    /// File offset of the damaged part.
    pub offset: u64,
    pub detail: String,
}

/// What `verify` checked and found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// True when the check used a key (MACs, decryption); false for checksums only.
    pub keyed: bool,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Archive {
    /// Keyless check against the checksums: every frame, the index section, the trailer.
    /// Finds bit rot and truncation; reports every bad block, not just the first.
    pub fn verify_checksums(&self, observer: &dyn Observer) -> Result<VerifyReport> {
        use crate::format::frame::checksum_ok;
        let mut report = VerifyReport::default();
        let start = self.data_start();
        let end = start + self.trailer.index_offset;
        let block_size = self.header.body.block_size;
        let mut at = start;
        let mut block = 0u64;
        let mut buf = Vec::new();
        let mut typical_len: Option<u64> = None;
        observer.totals(self.trailer.block_count, end - start);
        while at < end {
            let frame_len = match self.frame_len_at(at, end, block_size)? {
                Some(len) => len,
                None => {
                    // The length field itself is damaged: assume the usual frame length
                    // and try to pick up the next frame there.
                    report.problems.push(Problem {
                        block: Some(block),
                        offset: at,
                        detail: format!("block {block}: damaged frame header"),
                    });
                    match typical_len {
                        Some(l) if at + l <= end => {
                            at += l;
                            block += 1;
                            continue;
                        }
                        _ => {
                            report.problems.push(Problem {
                                block: None,
                                offset: at,
                                detail: "cannot locate the frames after this point".into(),
                            });
                            break;
                        }
                    }
                }
            };
            buf.resize(frame_len as usize, 0);
            self.source.read_exact_at(&mut buf, at)?;
            let mut frame_len = frame_len;
            if !checksum_ok(&buf) {
                report.problems.push(Problem {
                    block: Some(block),
                    offset: at,
                    detail: format!("block {block}: checksum mismatch"),
                });
                // The length field itself may be the damaged part while still looking
                // plausible: step by the usual length if only that leads to a good frame.
                if let Some(l) = typical_len.filter(|&l| l != frame_len && at + l <= end)
                    && !self.frame_ok_at(at + frame_len, end, block_size)
                    && self.frame_ok_at(at + l, end, block_size)
                {
                    frame_len = l;
                }
            }
            typical_len.get_or_insert(frame_len);
            observer.bytes_done(frame_len);
            report.blocks_checked += 1;
            report.bytes_checked += frame_len;
            at += frame_len;
            block += 1;
        }
        if block != self.trailer.block_count {
            report.problems.push(Problem {
                block: None,
                offset: self.file_len - TRAILER_LEN as u64,
                detail: format!(
                    "found {block} blocks but the trailer records {}",
                    self.trailer.block_count
                ),
            });
        }
        self.check_index_checksum(&mut report)?;
        Ok(report)
    }

    /// The length of the frame at `at` as its header gives it, if that header parses and
    /// the frame ends by `end`.
    fn frame_len_at(&self, at: u64, end: u64, block_size: u32) -> Result<Option<u64>> {
        use crate::format::frame::{FRAME_PREFIX, FrameHeader};
        let mut prefix = [0u8; FRAME_PREFIX];
        let avail = (end - at).min(FRAME_PREFIX as u64) as usize;
        self.source.read_exact_at(&mut prefix[..avail], at)?;
        Ok(FrameHeader::parse(&prefix[..avail], block_size)
            .ok()
            .map(|h| h.frame_len() as u64)
            .filter(|&len| at + len <= end))
    }

    /// Check the index section's length rule and CRC32C, as opening it with a key does
    /// first; count the header, index and trailer as checked.
    fn check_index_checksum(&self, report: &mut VerifyReport) -> Result<()> {
        let index_at = self.data_start() + self.trailer.index_offset;
        let n = self.trailer.index_len;
        if !crate::seal::index_len_ok(n) {
            report.problems.push(Problem {
                block: None,
                offset: index_at,
                detail: "index section has a bad length".into(),
            });
        } else {
            let mut section = vec![0u8; n as usize];
            self.source.read_exact_at(&mut section, index_at)?;
            let at = section.len() - 4;
            if crate::format::crc32c(&section[..at])
                != u32::from_le_bytes(section[at..].try_into().unwrap())
            {
                report.problems.push(Problem {
                    block: None,
                    offset: index_at,
                    detail: "index checksum mismatch (storage damage)".into(),
                });
            }
        }
        self.count_envelope(report);
        Ok(())
    }

    /// Count the header, the index section and the trailer as checked.
    fn count_envelope(&self, report: &mut VerifyReport) {
        report.bytes_checked += self.trailer.index_len + self.header.len() + TRAILER_LEN as u64;
    }

    /// Whether `pos` is the end of the data section or the start of a frame whose checksum
    /// holds (used to find the next frame after a damaged one).
    fn frame_ok_at(&self, pos: u64, end: u64, block_size: u32) -> bool {
        use crate::format::frame::{FRAME_PREFIX, FrameHeader, checksum_ok};
        if pos == end {
            return true;
        }
        if pos + FRAME_PREFIX as u64 > end {
            return false;
        }
        let mut prefix = [0u8; FRAME_PREFIX];
        if self.source.read_exact_at(&mut prefix, pos).is_err() {
            return false;
        }
        let Ok(h) = FrameHeader::parse(&prefix, block_size) else {
            return false;
        };
        if pos + h.frame_len() as u64 > end {
            return false;
        }
        let mut buf = vec![0u8; h.frame_len()];
        self.source.read_exact_at(&mut buf, pos).is_ok() && checksum_ok(&buf)
    }

    /// Full check with a key: header MAC and index (by `unlock`), then every block's tag
    /// and decryption. Nothing is written; every bad block is reported.
    pub fn verify_blocks(
        &self,
        unlocked: &Unlocked,
        observer: &dyn Observer,
    ) -> Result<VerifyReport> {
        #[derive(Default)]
        struct Slot {
            frame: Vec<u8>,
            plain: Vec<u8>,
            block: u64,
            failure: Option<OpenError>,
        }
        let blocks = &unlocked.index.blocks;
        let last = blocks.len().saturating_sub(1) as u64;
        let sealer = std::sync::Arc::clone(&unlocked.sealer);
        let mut report = VerifyReport {
            keyed: true,
            ..Default::default()
        };
        observer.totals(blocks.len() as u64, self.trailer.index_offset);
        crate::pipeline::run(
            rayon::current_num_threads() * 2 + 2,
            |feed| {
                for (i, r) in blocks.iter().enumerate() {
                    let mut slot: Slot = feed.take().ok_or_else(crate::pipeline::sink_stopped)?;
                    self.read_frame(r, &mut slot.frame)?;
                    slot.block = i as u64;
                    feed.submit(slot);
                }
                Ok(())
            },
            move |slot: &mut Slot, _| {
                // Opening checks the frame's checksum before its tag, so a keyed check
                // also reports everything the keyless one does.
                slot.failure = sealer
                    .open(
                        &mut slot.frame,
                        slot.block,
                        slot.block == last,
                        &mut slot.plain,
                    )
                    .err();
            },
            |slot, _| {
                observer.bytes_done(slot.frame.len() as u64);
                report.blocks_checked += 1;
                report.bytes_checked += slot.frame.len() as u64;
                let r = &blocks[slot.block as usize];
                if slot.failure.is_none() && slot.plain.len() != r.raw_len as usize {
                    slot.failure =
                        Some(OpenError::Malformed("length differs from the index".into()));
                }
                if let Some(e) = slot.failure.take() {
                    report.problems.push(Problem {
                        block: Some(slot.block),
                        offset: self.data_start() + r.offset,
                        detail: self.block_error(slot.block, r, e).to_string(),
                    });
                }
                Ok(())
            },
        )?;
        // `unlock` already checked the index section (length, checksum, tag).
        self.count_envelope(&mut report);
        Ok(report)
    }
}
