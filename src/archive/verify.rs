//! Checking an archive without restoring it: keyless (every checksum: bit rot and
//! truncation) or keyed (every tag and decryption as well). Every bad block is reported,
//! not only the first.

use super::sign::Transcript;
use super::{Archive, Unlocked};
use crate::error::Result;
use crate::format::index::BlockRef;
use crate::format::trailer::TRAILER_LEN;
use crate::progress::Observer;
use crate::seal::OpenError;

/// Whether a block frame may go on to be opened as the one the v2 block table records with
/// `tag`: it carries that tag (the 32 bytes before its checksum), or its checksum fails, in
/// which case opening it reports the damage as damage (FORMAT.md §9 step 13: the CRC comes
/// first) rather than as a tag mismatch.
pub(crate) fn frame_tag_is(frame: &[u8], tag: &[u8; 32]) -> bool {
    let n = frame.len();
    let carries = n >= 36 && frame[n - 36..n - 4] == tag[..];
    carries || !crate::format::frame::checksum_ok(frame)
}

/// One problem found by `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The member of a chain the problem is in, when it is not the archive checked (a
    /// parent): `block` and `offset` are then that file's.
    pub archive: Option<std::path::PathBuf>,
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
    /// The signer whose signature was checked and verified (`--signer`); `None` when no
    /// signature was checked.
    pub signer: Option<crate::recipient::Fingerprint>,
    /// For an incremental checked as a chain: each parent of its table, in table order.
    pub parents: Vec<ParentCheck>,
}

/// What `verify` of a chain did with one parent of the archive's table.
#[derive(Clone, Debug, Default)]
pub struct ParentCheck {
    /// The parent's session id, in hex.
    pub session_id: String,
    /// The file-name hint the child records for it.
    pub hint: String,
    /// Where it was found; `None` when it was not (a problem says so).
    pub path: Option<std::path::PathBuf>,
    /// Keyed: how many of the restore point's files have data in it.
    pub files: u64,
    /// Blocks of it checked: keyless, all of them; keyed, each block an extent of the
    /// restore point references, once.
    pub blocks_checked: u64,
    /// Bytes read from it: the blocks checked, and keyed, the blocks read again to hash the
    /// files' contents.
    pub bytes_read: u64,
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
        self.walk_checksums(observer, None)
    }

    /// The keyless walk; with a `transcript` (v2), every block frame's tag and every meta
    /// frame's kind and tag are fed into it in file order (FORMAT.md v2.9.5 steps 3–4).
    /// The tags are read from the frames the walk reads anyway, so a signature check costs
    /// one SHA-256 of 32 bytes per frame on top of the checksums.
    pub(crate) fn walk_checksums(
        &self,
        observer: &dyn Observer,
        mut transcript: Option<&mut Transcript>,
    ) -> Result<VerifyReport> {
        use crate::format::frame::checksum_ok;
        let mut report = VerifyReport::default();
        let params = self.params();
        let start = self.data_start();
        let end = start + params.data_len;
        let block_size = params.block_size;
        let mut at = start;
        let mut block = 0u64;
        let mut buf = Vec::new();
        let mut typical_len: Option<u64> = None;
        observer.totals(params.block_count, end - start);
        while at < end {
            let frame_len = match self.frame_len_at(at, end, block_size)? {
                Some(len) => len,
                None => {
                    // The length field itself is damaged: assume the usual frame length
                    // and try to pick up the next frame there.
                    report.problems.push(Problem {
                        archive: None,
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
                                archive: None,
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
                    archive: None,
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
            if let Some(t) = transcript.as_deref_mut()
                && buf.len() >= 36
            {
                // A block frame's tag sits before its 4-byte checksum (FORMAT.md §6.2).
                let n = buf.len();
                t.block(buf[n - 36..n - 4].try_into().expect("32 bytes"));
            }
            observer.bytes_done(frame_len);
            report.blocks_checked += 1;
            report.bytes_checked += frame_len;
            at += frame_len;
            block += 1;
        }
        if block != params.block_count {
            report.problems.push(Problem {
                archive: None,
                block: None,
                offset: self.file_len - self.trailer_len(),
                detail: format!(
                    "found {block} blocks but the trailer records {}",
                    params.block_count
                ),
            });
        }
        if self.version() == 2 {
            self.check_meta_checksums(&mut report, transcript)?;
        } else {
            self.check_index_checksum(&mut report)?;
        }
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
        let index_at = self.data_start() + self.params().data_len;
        let n = self.params().index_len;
        if !crate::seal::index_len_ok(n) {
            report.problems.push(Problem {
                archive: None,
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
                    archive: None,
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
        let signature = self.v2().map_or(0, |v| u64::from(v.trailer.signature_len));
        report.bytes_checked +=
            self.params().index_len + signature + self.data_start() + self.trailer_len();
    }

    fn trailer_len(&self) -> u64 {
        match self.version() {
            1 => TRAILER_LEN as u64,
            _ => crate::format::v2::TRAILER_LEN as u64,
        }
    }

    /// v2: walk the meta frames of the index section by their length fields and check each
    /// one's CRC32C, as opening it with a key does first, and the order a keyless reader can
    /// see: index chunks, then block-table chunks, then the directory as the section's last
    /// `directory_len` bytes, `FLAG_LAST` on exactly the last frame of each kind (FORMAT.md
    /// v2.9.5 step 4). With a `transcript`, each frame's kind and tag are fed into it.
    fn check_meta_checksums(
        &self,
        report: &mut VerifyReport,
        mut transcript: Option<&mut Transcript>,
    ) -> Result<()> {
        use crate::format::v2::{
            META_DIRECTORY, META_FLAG_LAST, META_OVERHEAD, META_PREFIX, MIN_META_FRAME,
        };
        let params = self.params();
        let mut at = self.data_start() + params.data_len;
        let end = at + params.index_len;
        let dir_len = self.v2().map_or(0, |v| u64::from(v.trailer.directory_len));
        let dir_at = end - dir_len;
        let mut frame = Vec::new();
        // The previous frame's kind and last flag.
        let mut prev: Option<(u8, bool)> = None;
        while at < end {
            let mut prefix = [0u8; META_PREFIX];
            let fits = at + META_PREFIX as u64 <= end;
            let len = if fits {
                self.source.read_exact_at(&mut prefix, at)?;
                let ct_len = u32::from_le_bytes(prefix[0..4].try_into().expect("4 bytes"));
                Some(META_OVERHEAD as u64 + u64::from(ct_len))
                    .filter(|&l| l >= MIN_META_FRAME as u64 && at + l <= end)
            } else {
                None
            };
            let Some(len) = len else {
                // A damaged length leaves no way to find the next frame.
                report.problems.push(Problem {
                    archive: None,
                    block: None,
                    offset: at,
                    detail: "index section: damaged frame header".into(),
                });
                break;
            };
            frame.resize(len as usize, 0);
            self.source.read_exact_at(&mut frame, at)?;
            let n = frame.len() - 4;
            let (kind, last) = (frame[8], frame[9] & META_FLAG_LAST != 0);
            if crate::format::crc32c(&frame[..n])
                != u32::from_le_bytes(frame[n..].try_into().expect("4 bytes"))
            {
                report.problems.push(Problem {
                    archive: None,
                    block: None,
                    offset: at,
                    detail: format!(
                        "index section: checksum mismatch in a frame of kind {kind} (storage damage)"
                    ),
                });
            } else if let Some(detail) = meta_order_problem(prev, kind, last, at, len, dir_at) {
                report.problems.push(Problem {
                    archive: None,
                    block: None,
                    offset: at,
                    detail: format!("index section: {detail}"),
                });
            }
            if let Some(t) = transcript.as_deref_mut() {
                t.meta(kind, frame[n - 32..n].try_into().expect("32 bytes"));
            }
            prev = Some((kind, last));
            at += len;
        }
        if at == end && prev.is_some_and(|p| p != (META_DIRECTORY, true)) {
            report.problems.push(Problem {
                archive: None,
                block: None,
                offset: dir_at,
                detail: "index section: does not end with the directory".into(),
            });
        }
        self.count_envelope(report);
        Ok(())
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
    /// and decryption, then (v2) every file's content hash. Nothing is written; every bad
    /// block is reported. An incremental's files with data in a parent are reported as not
    /// checked: [`Archive::verify_chain`] opens the parents and checks them too.
    pub fn verify_blocks(
        &self,
        unlocked: &Unlocked,
        observer: &dyn Observer,
    ) -> Result<VerifyReport> {
        let mut report = self.verify_own_blocks(unlocked, observer)?;
        if self.version() == 2 {
            let mut read = [0u64];
            let skipped = super::verify_content::check_content_hashes(
                &[Some((self, unlocked))],
                self,
                unlocked,
                &mut report,
                &mut read,
            )?;
            if skipped > 0 {
                report.problems.push(Problem {
                    archive: None,
                    block: None,
                    offset: self.data_start(),
                    detail: format!(
                        "{skipped} file(s) have data in parent archives and were not checked: verify the chain with its parents"
                    ),
                });
            }
        }
        Ok(report)
    }

    /// The archive's own part of a keyed check: header MAC and index (by `unlock`), every
    /// index chunk (v2), then every block's tag and decryption; no content hash.
    pub(crate) fn verify_own_blocks(
        &self,
        unlocked: &Unlocked,
        observer: &dyn Observer,
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            keyed: true,
            ..Default::default()
        };
        // v2: every index chunk is opened and every entry checked, as `list` would.
        if self.version() == 2
            && let Err(e) = unlocked.for_each_entry(self, |_, _| Ok(()))
        {
            report.problems.push(Problem {
                archive: None,
                block: None,
                offset: self.data_start() + self.params().data_len,
                detail: e.to_string(),
            });
        }
        let count = unlocked.block_count();
        observer.totals(count, self.params().data_len);
        self.check_blocks(unlocked, 0..count, observer, &mut report)?;
        // `unlock` already checked the index section (length, checksum, tag).
        self.count_envelope(&mut report);
        Ok(report)
    }

    /// Open `blocks` (increasing block numbers) of the archive, tag first, in parallel;
    /// each one that fails is a problem in `report`, the check going on.
    pub(crate) fn check_blocks(
        &self,
        unlocked: &Unlocked,
        blocks: impl Iterator<Item = u64> + Send,
        observer: &dyn Observer,
        report: &mut VerifyReport,
    ) -> Result<()> {
        #[derive(Default)]
        struct Slot {
            frame: Vec<u8>,
            plain: Vec<u8>,
            block: u64,
            r: BlockRef,
            /// The frame's tag is not the one the v2 block table records.
            tag_differs: bool,
            failure: Option<OpenError>,
        }
        let last = unlocked.block_count().saturating_sub(1);
        let sealer = std::sync::Arc::clone(&unlocked.sealer);
        crate::pipeline::run(
            rayon::current_num_threads() * 2 + 2,
            |feed| {
                for i in blocks {
                    let (r, tag) = unlocked.block(self, i)?;
                    let mut slot: Slot = feed.take().ok_or_else(crate::pipeline::sink_stopped)?;
                    self.read_frame(&r, &mut slot.frame)?;
                    slot.block = i;
                    slot.r = r;
                    slot.tag_differs = tag.is_some_and(|t| !frame_tag_is(&slot.frame, &t));
                    feed.submit(slot);
                }
                Ok(())
            },
            move |slot: &mut Slot, _| {
                if slot.tag_differs {
                    slot.failure = Some(OpenError::Tag);
                    return;
                }
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
                let r = &slot.r;
                if slot.failure.is_none() && slot.plain.len() != r.raw_len as usize {
                    slot.failure =
                        Some(OpenError::Malformed("length differs from the index".into()));
                }
                if let Some(e) = slot.failure.take() {
                    report.problems.push(Problem {
                        archive: None,
                        block: Some(slot.block),
                        offset: self.data_start() + r.offset,
                        detail: self.block_error(slot.block, r, e).to_string(),
                    });
                }
                Ok(())
            },
        )
    }
}

/// What is wrong with the order of a meta frame of `kind` (last flag `last`) at `at`, of
/// `len` bytes, after a frame `prev`, when the directory starts at `dir_at`.
fn meta_order_problem(
    prev: Option<(u8, bool)>,
    kind: u8,
    last: bool,
    at: u64,
    len: u64,
    dir_at: u64,
) -> Option<String> {
    use crate::format::v2::{META_BLOCKS, META_DIRECTORY, META_INDEX};
    if at == dir_at {
        if kind != META_DIRECTORY || !last {
            return Some(format!(
                "a frame of kind {kind} where the trailer places the directory"
            ));
        }
    } else if kind == META_DIRECTORY || (at < dir_at && at + len > dir_at) || at > dir_at {
        return Some(format!(
            "a frame of kind {kind} that does not fit the directory's place"
        ));
    }
    match prev {
        None if kind != META_INDEX => Some(format!(
            "begins with a frame of kind {kind} instead of an index chunk"
        )),
        Some((p, p_last)) if p == kind && p_last => {
            Some(format!("a frame of kind {kind} after the one flagged last"))
        }
        Some((p, p_last)) if p != kind && (kind < p || !p_last) => Some(format!(
            "a frame of kind {kind} after a frame of kind {p} {}",
            if kind < p {
                "(out of order)"
            } else {
                "not flagged last"
            }
        )),
        _ if kind == META_BLOCKS || kind == META_INDEX || kind == META_DIRECTORY => None,
        _ => Some(format!("unknown frame kind {kind}")),
    }
}

#[cfg(test)]
mod tests {
    use super::meta_order_problem;
    use crate::format::v2::{META_BLOCKS, META_DIRECTORY, META_INDEX};

    #[test]
    fn meta_frames_must_come_in_kind_order_with_last_flags_and_the_directory_last() {
        // (prev, kind, last, at, len) with the directory at 1000.
        let ok = |prev, kind, last, at, len| meta_order_problem(prev, kind, last, at, len, 1000);
        assert_eq!(ok(None, META_INDEX, false, 0, 100), None);
        assert_eq!(
            ok(Some((META_INDEX, false)), META_INDEX, true, 100, 100),
            None
        );
        assert_eq!(
            ok(Some((META_INDEX, true)), META_BLOCKS, true, 200, 100),
            None
        );
        assert_eq!(
            ok(Some((META_BLOCKS, true)), META_DIRECTORY, true, 1000, 78),
            None
        );
        assert_eq!(
            ok(Some((META_INDEX, true)), META_DIRECTORY, true, 1000, 78),
            None
        );
        // Refused: a block-table chunk first, an index chunk after a block-table chunk, a
        // kind after one not flagged last, a frame after the last of its kind, the directory
        // elsewhere or unflagged, a frame across the directory's start, an unknown kind.
        assert!(ok(None, META_BLOCKS, true, 0, 100).is_some());
        assert!(ok(Some((META_BLOCKS, true)), META_INDEX, true, 200, 100).is_some());
        assert!(ok(Some((META_INDEX, false)), META_BLOCKS, true, 200, 100).is_some());
        assert!(ok(Some((META_INDEX, true)), META_INDEX, true, 200, 100).is_some());
        assert!(ok(Some((META_INDEX, true)), META_DIRECTORY, true, 500, 78).is_some());
        assert!(ok(Some((META_BLOCKS, true)), META_DIRECTORY, false, 1000, 78).is_some());
        assert!(ok(Some((META_INDEX, false)), META_INDEX, false, 950, 100).is_some());
        assert!(ok(Some((META_INDEX, true)), 9, true, 200, 100).is_some());
    }
}
