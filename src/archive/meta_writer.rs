//! The v2 index section as it is written (docs/FORMAT.md v2.6): entries cut into index
//! chunks and block records cut into block-table chunks, each sealed as a meta frame as
//! soon as it is full and spooled (ciphertext only) to an unnamed temporary file, so that
//! memory stays flat in the number of files and in data size. Only the directory's small
//! per-chunk records stay in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::error::{Error, Result};
use crate::format::v2::{
    BLOCKS_PER_CHUNK, BlockChunkRef, BlockRefV2, ChunkRef, EntryV2, MAX_INDEX_CHUNK, META_BLOCKS,
    META_INDEX,
};
use crate::keys::{SessionId, SubKeys};
use crate::seal::Entropy;
use crate::seal::meta::{meta_frame_tag, seal_meta};

/// Plaintext size at which an index chunk is sealed. Below the 1 MiB bound so that a
/// selective restore decrypts little around the entries it needs (FORMAT.md v2.12 q. 4),
/// large enough for zstd to find the repetition in sorted paths.
pub(crate) const CHUNK_TARGET: usize = 256 << 10;

/// Sealed frames of one kind, appended to a spool file. A frame is sealed only when the
/// next one starts (or at the end), because its last flag is in its MAC.
struct Spool {
    file: File,
    len: u64,
    count: u64,
}

impl Spool {
    fn new() -> Result<Self> {
        Ok(Spool {
            file: crate::fsutil::spool_file()?,
            len: 0,
            count: 0,
        })
    }

    /// Append a sealed frame; returns its position in the spool, its length and tag.
    fn append(&mut self, frame: &[u8]) -> Result<(u64, u32, [u8; 32])> {
        self.file
            .write_all(frame)
            .map_err(|e| Error::io(crate::fsutil::spool_dir(), e))?;
        let at = self.len;
        self.len += frame.len() as u64;
        self.count += 1;
        Ok((at, frame.len() as u32, meta_frame_tag(frame)))
    }

    /// Copy the spooled frames to `out`, in order.
    fn copy_to(mut self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let dir = crate::fsutil::spool_dir();
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&dir, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = self.len;
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            self.file
                .read_exact(&mut buf[..n])
                .map_err(|e| Error::io(&dir, e))?;
            out(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// What sealing a meta frame needs.
#[derive(Clone, Copy)]
pub(crate) struct MetaKeys<'k> {
    pub keys: &'k SubKeys,
    pub session_id: SessionId,
    pub compress: bool,
    pub entropy: Entropy,
}

impl MetaKeys<'_> {
    fn seal(&self, kind: u8, n: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        seal_meta(
            self.keys,
            &self.session_id,
            kind,
            n,
            last,
            plain,
            self.compress,
            self.entropy,
        )
    }
}

/// Entries in path order → sealed index chunks.
pub(crate) struct IndexChunker<'k> {
    keys: MetaKeys<'k>,
    spool: Spool,
    /// The chunk being filled: its entries' encodings, their count and first path.
    body: Vec<u8>,
    count: u32,
    first_path: Vec<u8>,
    /// A full chunk waiting for the next entry (so that the last one is flagged last).
    held: Option<(Vec<u8>, u32, Vec<u8>)>,
    refs: Vec<ChunkRef>,
    entries: u64,
    scratch: Vec<u8>,
}

/// The sealed index chunks of a finished walk.
pub(crate) struct IndexChunks {
    spool: Spool,
    /// Chunk records with offsets relative to the spool's start.
    pub refs: Vec<ChunkRef>,
    pub entries: u64,
}

impl IndexChunks {
    pub(crate) fn len(&self) -> u64 {
        self.spool.len
    }
}

impl<'k> IndexChunker<'k> {
    pub(crate) fn new(keys: MetaKeys<'k>) -> Result<Self> {
        Ok(IndexChunker {
            keys,
            spool: Spool::new()?,
            body: Vec::new(),
            count: 0,
            first_path: Vec::new(),
            held: None,
            refs: Vec::new(),
            entries: 0,
            scratch: Vec::new(),
        })
    }

    /// The number the next entry gets.
    pub(crate) fn next_number(&self) -> u64 {
        self.entries
    }

    /// Add the next entry (in path order).
    pub(crate) fn push(&mut self, e: &EntryV2) -> Result<()> {
        self.scratch.clear();
        let encoded = postcard::to_extend(e, std::mem::take(&mut self.scratch))
            .map_err(|err| Error::Internal(format!("cannot encode an index entry: {err}")))?;
        // A count varint takes at most 5 bytes in front of the entries.
        if self.count > 0 && self.body.len() + encoded.len() + 5 > CHUNK_TARGET {
            self.cut()?;
        }
        if self.body.len() + encoded.len() + 5 > MAX_INDEX_CHUNK {
            return Err(Error::Internal(format!(
                "index entry of {} bytes does not fit a chunk",
                encoded.len()
            )));
        }
        if self.count == 0 {
            self.first_path.clear();
            self.first_path.extend_from_slice(&e.path);
        }
        self.body.extend_from_slice(&encoded);
        self.scratch = encoded;
        self.count += 1;
        self.entries += 1;
        Ok(())
    }

    /// Close the chunk being filled: seal the held one (now known not to be last) and
    /// hold this one.
    fn cut(&mut self) -> Result<()> {
        let full = (
            std::mem::take(&mut self.body),
            std::mem::replace(&mut self.count, 0),
            std::mem::take(&mut self.first_path),
        );
        if let Some(prev) = self.held.replace(full) {
            self.seal(prev, false)?;
        }
        Ok(())
    }

    fn seal(
        &mut self,
        (body, count, first_path): (Vec<u8>, u32, Vec<u8>),
        last: bool,
    ) -> Result<()> {
        let mut plain = Vec::with_capacity(body.len() + 5);
        let mut varint = [0u8; 5];
        let head = postcard::to_slice(&(count as u64), &mut varint)
            .map_err(|err| Error::Internal(format!("cannot encode a count: {err}")))?;
        plain.extend_from_slice(head);
        plain.extend_from_slice(&body);
        let n = self.spool.count;
        let frame = self.keys.seal(META_INDEX, n, last, &plain);
        let (offset, frame_len, tag) = self.spool.append(&frame)?;
        self.refs.push(ChunkRef {
            offset,
            frame_len,
            entry_count: count,
            first_path,
            tag,
        });
        Ok(())
    }

    /// Seal what is left; the last chunk is flagged last. An archive has at least one
    /// entry (a source's root), so there is always a chunk.
    pub(crate) fn finish(mut self) -> Result<IndexChunks> {
        if self.count > 0 {
            self.cut()?;
        }
        let held = self
            .held
            .take()
            .ok_or_else(|| Error::Internal("an archive without entries".into()))?;
        self.seal(held, true)?;
        Ok(IndexChunks {
            spool: self.spool,
            refs: self.refs,
            entries: self.entries,
        })
    }
}

/// Block records (frame length and tag, in block order) → sealed block-table chunks.
pub(crate) struct BlockTable<'k> {
    keys: MetaKeys<'k>,
    spool: Spool,
    records: Vec<BlockRefV2>,
    /// Data offset of the first block of `records`.
    first_offset: u64,
    held: Option<(Vec<BlockRefV2>, u64)>,
    refs: Vec<BlockChunkRef>,
    /// Data offset after the last block pushed.
    pub data_len: u64,
    pub blocks: u64,
}

/// The sealed block-table chunks of a finished data section.
pub(crate) struct BlockChunks {
    spool: Spool,
    /// Records with offsets relative to the spool's start.
    pub refs: Vec<BlockChunkRef>,
}

impl BlockChunks {
    pub(crate) fn len(&self) -> u64 {
        self.spool.len
    }
}

impl<'k> BlockTable<'k> {
    pub(crate) fn new(keys: MetaKeys<'k>) -> Result<Self> {
        Ok(BlockTable {
            keys,
            spool: Spool::new()?,
            records: Vec::new(),
            first_offset: 0,
            held: None,
            refs: Vec::new(),
            data_len: 0,
            blocks: 0,
        })
    }

    /// Record the next sealed block frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Result<()> {
        if self.records.len() == BLOCKS_PER_CHUNK {
            let full = (std::mem::take(&mut self.records), self.first_offset);
            if let Some(prev) = self.held.replace(full) {
                self.seal(prev, false)?;
            }
            self.first_offset = self.data_len;
        }
        // The block frame's tag sits before its 4-byte checksum (FORMAT.md §6.2).
        let n = frame.len();
        let tag: [u8; 32] = frame[n - 36..n - 4].try_into().expect("32 bytes");
        self.records.push(BlockRefV2 {
            frame_len: n as u32,
            tag,
        });
        self.data_len += n as u64;
        self.blocks += 1;
        Ok(())
    }

    fn seal(&mut self, (records, first_offset): (Vec<BlockRefV2>, u64), last: bool) -> Result<()> {
        let plain = postcard::to_stdvec(&records)
            .map_err(|err| Error::Internal(format!("cannot encode the block table: {err}")))?;
        let n = self.spool.count;
        let frame = self.keys.seal(META_BLOCKS, n, last, &plain);
        let (offset, frame_len, tag) = self.spool.append(&frame)?;
        self.refs.push(BlockChunkRef {
            offset,
            frame_len,
            first_block_offset: first_offset,
            tag,
        });
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<BlockChunks> {
        if !self.records.is_empty() {
            let full = (std::mem::take(&mut self.records), self.first_offset);
            if let Some(prev) = self.held.replace(full) {
                self.seal(prev, false)?;
            }
        }
        if let Some(held) = self.held.take() {
            self.seal(held, true)?;
        }
        Ok(BlockChunks {
            spool: self.spool,
            refs: self.refs,
        })
    }
}

/// Write the index chunks then the block-table chunks through `out`, and return their
/// records with data offsets (the index section starts at data offset `index_offset`).
pub(crate) fn write_chunks(
    index: IndexChunks,
    blocks: BlockChunks,
    index_offset: u64,
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<(Vec<ChunkRef>, Vec<BlockChunkRef>)> {
    let mut chunk_refs = index.refs;
    for r in &mut chunk_refs {
        r.offset += index_offset;
    }
    let blocks_at = index_offset + index.spool.len;
    let mut block_refs = blocks.refs;
    for r in &mut block_refs {
        r.offset += blocks_at;
    }
    index.spool.copy_to(out)?;
    blocks.spool.copy_to(out)?;
    Ok((chunk_refs, block_refs))
}
