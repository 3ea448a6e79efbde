//! Reading a v2 archive (docs/FORMAT.md v2.10.2): the keyless checks of header and
//! trailer at open; with a key, the header MAC and the directory at unlock; then index
//! chunks and block-table chunks opened on demand, each authenticated (and its tag matched
//! against the directory's record) before a byte of it is used. Entries are validated
//! chunk by chunk, so memory stays flat in the number of entries.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Archive, Unlocked, View};
use crate::error::{Error, Result};
use crate::format::header::{self, PREFIX_LEN, SUFFIX_LEN};
use crate::format::index::BlockRef;
use crate::format::v2::validate::{
    Ancestors, ChunkCheck, EntryError, RawHeaderV2, check_block_chunk, check_directory,
    check_trailer, decode_block_chunk, decode_chunk, decode_directory,
};
use crate::format::v2::{
    BLOCKS_PER_CHUNK, BlockRefV2, Directory, EntryV2, KIND_DIR, KIND_HARDLINK, META_BLOCKS,
    META_DIRECTORY, META_INDEX, TRAILER_LEN, TRAILER_MAGIC, TrailerV2, path_cmp,
};
use crate::keys::SubKeys;
use crate::seal::meta::open_meta;
use crate::seal::{BlockSealer, OpenError};
use crate::storage::ArchiveSource;

/// How many opened index chunks a reader keeps for random access (hard-link targets).
const CHUNK_CACHE: usize = 4;

/// A v2 archive's header and trailer, checked without a key (steps 1–7).
pub struct OpenV2 {
    pub header: RawHeaderV2,
    pub trailer: TrailerV2,
    /// The signature section's signature, its structure checked (step 7); `Some` exactly
    /// when the header declares a signer. Not verified: that needs a pinned key.
    pub signature: Option<[u8; crate::signing::SIGNATURE_LEN]>,
}

impl OpenV2 {
    pub(super) fn open(
        source: &dyn ArchiveSource,
        path: &Path,
        prefix: &[u8; PREFIX_LEN],
        file_len: u64,
    ) -> Result<Self> {
        let body_len = u32::from_le_bytes(prefix[10..14].try_into().expect("4 bytes"));
        if body_len > header::MAX_BODY_LEN {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                offset: 10,
                detail: format!(
                    "header claims {body_len} bytes (limit {})",
                    header::MAX_BODY_LEN
                ),
            });
        }
        let header_len = (PREFIX_LEN + body_len as usize + SUFFIX_LEN) as u64;
        if file_len < header_len + TRAILER_LEN as u64 {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                detail: "ends inside the header".into(),
            });
        }
        let mut bytes = vec![0u8; header_len as usize];
        source.read_exact_at(&mut bytes, 0)?;
        let header = RawHeaderV2::parse(bytes).map_err(|e| super::header_error(path, e))?;
        let mut tb = [0u8; TRAILER_LEN];
        let trailer_at = file_len - TRAILER_LEN as u64;
        source.read_exact_at(&mut tb, trailer_at)?;
        let trailer = TrailerV2::decode(&tb).map_err(|detail| {
            if tb[32..40] == TRAILER_MAGIC {
                Error::Corrupt {
                    path: path.to_path_buf(),
                    offset: trailer_at,
                    detail: detail.into(),
                }
            } else {
                Error::Truncated {
                    path: path.to_path_buf(),
                    detail: detail.into(),
                }
            }
        })?;
        let signed = header.body.fields.signer.is_some();
        check_trailer(&trailer, file_len, header_len, signed).map_err(|detail| Error::Corrupt {
            path: path.to_path_buf(),
            offset: trailer_at,
            detail,
        })?;
        // Step 7: the signature section sits between the index section and the trailer.
        let signature = match header.body.fields.signer {
            Some(decl) => {
                let mut section = [0u8; crate::format::v2::SIGNATURE_LEN as usize];
                let at = trailer_at - section.len() as u64;
                source.read_exact_at(&mut section, at)?;
                let sig = super::sign::parse_section(&section, decl.scheme).map_err(|detail| {
                    Error::Corrupt {
                        path: path.to_path_buf(),
                        offset: at,
                        detail,
                    }
                })?;
                Some(sig)
            }
            None => None,
        };
        Ok(OpenV2 {
            header,
            trailer,
            signature,
        })
    }

    /// Steps 9–12 after the session key: the directory, authenticated and checked.
    pub(super) fn unlock(&self, archive: &Archive, keys: Arc<SubKeys>) -> Result<Unlocked> {
        let f = &self.header.body.fields;
        let t = &self.trailer;
        let dir_at = archive.data_start() + t.index_offset + t.index_len - t.directory_len as u64;
        let mut frame = vec![0u8; t.directory_len as usize];
        archive.source.read_exact_at(&mut frame, dir_at)?;
        let plain = open_meta(&keys, &f.session_id, META_DIRECTORY, 0, true, &frame, None)
            .map_err(|e| meta_error(archive.path(), "the index directory", dir_at, e))?;
        let corrupt = |detail: String| Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: dir_at,
            detail,
        };
        let directory = decode_directory(&plain).map_err(corrupt)?;
        check_directory(&directory, t, f).map_err(corrupt)?;
        let mut starts = Vec::with_capacity(directory.chunks.len());
        let mut n = 0u64;
        for c in &directory.chunks {
            starts.push(n);
            n += u64::from(c.entry_count);
        }
        let sealer = Arc::new(BlockSealer::new(
            &keys,
            f.session_id,
            f.block_size,
            f.segment_size,
            if f.compression == 0 {
                crate::format::Compression::None
            } else {
                crate::format::Compression::Zstd(0)
            },
        ));
        let index = IndexV2 {
            directory,
            keys,
            session_id: f.session_id,
            block_size: f.block_size,
            chain_len: f.chain.len(),
            block_count: t.block_count,
            index_offset: t.index_offset,
            starts,
            chunks: Mutex::new(Vec::new()),
            blocks: Mutex::new(None),
            read: std::sync::atomic::AtomicU64::new(u64::from(t.directory_len)),
            targets: Mutex::new(std::collections::HashMap::new()),
        };
        Ok(Unlocked {
            view: View::V2(Box::new(index)),
            sealer,
        })
    }
}

/// A block-table chunk in use: its number and each block's (data offset, record).
type BlockChunk = (usize, Vec<(u64, BlockRefV2)>);

/// A v2 archive's authenticated directory and what opening its chunks needs.
pub(crate) struct IndexV2 {
    pub(crate) directory: Directory,
    keys: Arc<SubKeys>,
    session_id: crate::keys::SessionId,
    block_size: u32,
    chain_len: usize,
    block_count: u64,
    index_offset: u64,
    /// The number of each chunk's first entry.
    starts: Vec<u64>,
    /// Recently opened index chunks, newest last.
    chunks: Mutex<Vec<(usize, Arc<Vec<EntryV2>>)>>,
    blocks: Mutex<Option<Arc<BlockChunk>>>,
    /// Bytes of the index section read so far (the directory included).
    pub(crate) read: std::sync::atomic::AtomicU64,
    /// The first names the hard links of the chunk being handed out point to.
    targets: Mutex<std::collections::HashMap<u64, EntryV2>>,
}

impl IndexV2 {
    pub(crate) fn block_count(&self) -> u64 {
        self.block_count
    }

    fn count_read(&self, n: usize) {
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Open, authenticate, decode and check index chunk `k` (rules of v2.7.2 but the
    /// parent rule, which needs the entries before the chunk).
    fn open_chunk(&self, archive: &Archive, k: usize) -> Result<Vec<EntryV2>> {
        let r = &self.directory.chunks[k];
        let at = archive.data_start() + r.offset;
        let mut frame = vec![0u8; r.frame_len as usize];
        archive.source.read_exact_at(&mut frame, at)?;
        self.count_read(frame.len());
        let last = k + 1 == self.directory.chunks.len();
        let what = format!("index chunk {k}");
        let plain = open_meta(
            &self.keys,
            &self.session_id,
            META_INDEX,
            k as u64,
            last,
            &frame,
            Some(&r.tag),
        )
        .map_err(|e| meta_error(archive.path(), &what, at, e))?;
        let entries = decode_chunk(&plain).map_err(|detail| Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: at,
            detail: format!("{what}: {detail}"),
        })?;
        let mut check = ChunkCheck::new(k, &self.directory, self.chain_len);
        let first = self.starts[k];
        for (i, e) in entries.iter().enumerate() {
            check
                .check(e, first + i as u64)
                .map_err(|err| entry_error(archive.path(), at, err))?;
        }
        check
            .finish(entries.len() as u32)
            .map_err(|err| entry_error(archive.path(), at, err))?;
        Ok(entries)
    }

    /// Chunk `k` through the small cache.
    fn chunk(&self, archive: &Archive, k: usize) -> Result<Arc<Vec<EntryV2>>> {
        if let Some((_, c)) = self.cache().iter().find(|(n, _)| *n == k) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(self.open_chunk(archive, k)?);
        let mut cache = self.cache();
        if cache.len() == CHUNK_CACHE {
            cache.remove(0);
        }
        cache.push((k, Arc::clone(&c)));
        Ok(c)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Arc<Vec<EntryV2>>)>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chunk holding entry `n`.
    fn chunk_of(&self, n: u64) -> Option<usize> {
        if n >= self.directory.entry_count {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= n) - 1)
    }

    pub(crate) fn entry(&self, archive: &Archive, n: u64) -> Result<EntryV2> {
        if let Some(e) = self.lock_targets().get(&n) {
            return Ok(e.clone());
        }
        let k = self.chunk_of(n).ok_or_else(|| Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: archive.data_start() + self.index_offset,
            detail: format!("entry {n} is past the end of the index"),
        })?;
        let c = self.chunk(archive, k)?;
        Ok(c[(n - self.starts[k]) as usize].clone())
    }

    /// Look up, for the chunk about to be handed out, the first names its hard links point to
    /// in earlier chunks: each such chunk is opened once for all the links into it, and
    /// the entries are kept until the next chunk, so that checking the links' kinds and
    /// [`IndexV2::entry`] calls on them (`list` shows the first name, restore links to it)
    /// open nothing more. Without this, links pointing in turn into more chunks than the
    /// cache holds would re-open a chunk per link (a crafted index's way to cost minutes per
    /// MB). Memory: those first names, each at most one entry of an earlier chunk.
    fn resolve_link_targets(
        &self,
        archive: &Archive,
        entries: &[EntryV2],
        first: u64,
    ) -> Result<()> {
        let mut wanted: Vec<u64> = entries
            .iter()
            .filter(|e| e.kind == KIND_HARDLINK)
            .filter_map(|e| e.hardlink_to)
            .filter(|&t| t < first)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = std::collections::HashMap::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            let Some(k) = self.chunk_of(wanted[i]) else {
                break; // reported by the caller's own lookup
            };
            let chunk = self.chunk(archive, k)?;
            let end = self.starts[k] + chunk.len() as u64;
            while i < wanted.len() && wanted[i] < end {
                let t = wanted[i];
                found.insert(t, chunk[(t - self.starts[k]) as usize].clone());
                i += 1;
            }
        }
        *self.lock_targets() = found;
        Ok(())
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, EntryV2>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry in order, each chunk checked whole before its entries are handed out;
    /// parents and hard-link targets are checked as they are met.
    pub(crate) fn for_each_entry(
        &self,
        archive: &Archive,
        f: &mut dyn FnMut(u64, EntryV2) -> Result<()>,
    ) -> Result<()> {
        let all: Vec<usize> = (0..self.directory.chunks.len()).collect();
        self.for_each_entry_in(archive, &all, f)
    }

    /// The entries of index chunks `chunks` (ascending), in order, each checked as in
    /// [`IndexV2::for_each_entry`]. Where a chunk does not follow the one before, the
    /// ancestors of its first entry are looked up first and handed out too (those not handed
    /// out yet), so the caller always sees a folder before what is in it.
    pub(crate) fn for_each_entry_in(
        &self,
        archive: &Archive,
        chunks: &[usize],
        f: &mut dyn FnMut(u64, EntryV2) -> Result<()>,
    ) -> Result<()> {
        let mut ancestors = Ancestors::new();
        // The last path handed out: ancestors at or before it were handed out already.
        let mut last: Option<Vec<u8>> = None;
        let mut prev: Option<usize> = None;
        for &k in chunks {
            let at = archive.data_start() + self.directory.chunks[k].offset;
            // Through the small cache: a second pass over a few chunks (a selective
            // restore checks, then restores) reads them once.
            let entries = self.chunk(archive, k)?;
            let first = self.starts[k];
            if prev.is_none_or(|p| p + 1 != k) {
                for (n, a) in self.ancestors_of(archive, &entries[0].path)? {
                    ancestors
                        .check_parent(&a)
                        .map_err(|err| entry_error(archive.path(), at, err))?;
                    if last.as_deref().is_none_or(|l| path_cmp(&a.path, l).is_gt()) {
                        last = Some(a.path.clone());
                        f(n, a)?;
                    }
                }
            }
            prev = Some(k);
            self.resolve_link_targets(archive, &entries, first)?;
            for e in entries.iter() {
                ancestors
                    .check_parent(e)
                    .map_err(|err| entry_error(archive.path(), at, err))?;
                if e.kind == KIND_HARDLINK {
                    let t = e.hardlink_to.unwrap_or(u64::MAX);
                    let kind = if t >= first {
                        entries[(t - first) as usize].kind
                    } else {
                        self.entry(archive, t)?.kind
                    };
                    if kind == KIND_DIR || kind == KIND_HARDLINK {
                        return Err(Error::Corrupt {
                            path: archive.path().to_path_buf(),
                            offset: at,
                            detail: format!(
                                "entry {:?}: a hard link to a folder or to another link",
                                crate::format::v2::display_path(&e.path)
                            ),
                        });
                    }
                }
            }
            last = entries.last().map(|e| e.path.clone());
            for (i, e) in entries.iter().enumerate() {
                f(first + i as u64, e.clone())?;
            }
        }
        Ok(())
    }

    /// The entries of `path`'s ancestors, outermost first, each looked up by path (binary
    /// search over the chunks' first paths). Each must exist and be a folder.
    fn ancestors_of(&self, archive: &Archive, path: &[u8]) -> Result<Vec<(u64, EntryV2)>> {
        let mut out = Vec::new();
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&c| c == b'/') {
            end += i;
            let a = &path[..end];
            match self.lookup(archive, a)? {
                Some((n, e)) if e.kind == KIND_DIR => out.push((n, e)),
                _ => {
                    return Err(Error::UnsafePath {
                        path: crate::format::v2::display_path(path),
                        reason: format!(
                            "its parent is not a folder listed before it, in {}",
                            archive.path().display()
                        ),
                    });
                }
            }
            end += 1;
        }
        Ok(out)
    }

    /// The entry at `path`, if the index has one: the one chunk that can hold it is found by
    /// its first path and opened.
    pub(crate) fn lookup(&self, archive: &Archive, path: &[u8]) -> Result<Option<(u64, EntryV2)>> {
        let chunks = &self.directory.chunks;
        let k = chunks.partition_point(|c| path_cmp(&c.first_path, path).is_le());
        if k == 0 {
            return Ok(None);
        }
        let c = self.chunk(archive, k - 1)?;
        Ok(c.iter()
            .position(|e| e.path == path)
            .map(|i| (self.starts[k - 1] + i as u64, c[i].clone())))
    }

    /// The index chunks that can hold a path starting with one of `prefixes` (bytes, as
    /// paths are compared: a prefix's paths are one contiguous range in path order), in
    /// order. An empty prefix needs every chunk.
    pub(crate) fn chunks_for(&self, prefixes: &[Vec<u8>]) -> Vec<usize> {
        let chunks = &self.directory.chunks;
        let mut need = vec![false; chunks.len()];
        for p in prefixes {
            // The first chunk that can hold a path >= p: the last one starting at or before p.
            let from = chunks
                .partition_point(|c| path_cmp(&c.first_path, p).is_le())
                .saturating_sub(1);
            // The first chunk starting after every path with prefix p.
            let to = chunks.partition_point(|c| {
                c.first_path.starts_with(p) || path_cmp(&c.first_path, p).is_le()
            });
            for n in &mut need[from..to.max(from + 1).min(chunks.len())] {
                *n = true;
            }
        }
        (0..chunks.len()).filter(|&k| need[k]).collect()
    }

    /// Block `i`'s place, plaintext length and recorded tag, from its block-table chunk.
    pub(crate) fn block(&self, archive: &Archive, i: u64) -> Result<(BlockRef, Option<[u8; 32]>)> {
        if i >= self.block_count {
            return Err(Error::Internal(format!(
                "block {i} is not in the block table"
            )));
        }
        let k = (i / BLOCKS_PER_CHUNK as u64) as usize;
        let chunk = {
            let mut held = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
            match held.as_ref() {
                Some(c) if c.0 == k => Arc::clone(c),
                _ => {
                    let c = Arc::new(self.open_block_chunk(archive, k)?);
                    *held = Some(Arc::clone(&c));
                    c
                }
            }
        };
        let (offset, r) = chunk.1[(i % BLOCKS_PER_CHUNK as u64) as usize];
        let raw_len = if i + 1 < self.block_count {
            self.block_size
        } else {
            (self.directory.stream_len - (self.block_count - 1) * u64::from(self.block_size)) as u32
        };
        Ok((
            BlockRef {
                offset,
                frame_len: r.frame_len,
                raw_len,
            },
            Some(r.tag),
        ))
    }

    fn open_block_chunk(&self, archive: &Archive, k: usize) -> Result<BlockChunk> {
        let r = &self.directory.block_chunks[k];
        let at = archive.data_start() + r.offset;
        let mut frame = vec![0u8; r.frame_len as usize];
        archive.source.read_exact_at(&mut frame, at)?;
        self.count_read(frame.len());
        let last = k + 1 == self.directory.block_chunks.len();
        let what = format!("block-table chunk {k}");
        let plain = open_meta(
            &self.keys,
            &self.session_id,
            META_BLOCKS,
            k as u64,
            last,
            &frame,
            Some(&r.tag),
        )
        .map_err(|e| meta_error(archive.path(), &what, at, e))?;
        let corrupt = |detail: String| Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: at,
            detail: format!("{what}: {detail}"),
        };
        let records = decode_block_chunk(&plain).map_err(corrupt)?;
        let trailer = &archive.v2().expect("a v2 archive").trailer;
        check_block_chunk(&records, k, &self.directory, trailer, self.block_size)
            .map_err(corrupt)?;
        let mut offset = r.first_block_offset;
        let placed = records
            .into_iter()
            .map(|rec| {
                let here = offset;
                offset += u64::from(rec.frame_len);
                (here, rec)
            })
            .collect();
        Ok((k, placed))
    }
}

/// The error for a meta frame that did not open.
fn meta_error(path: &Path, what: &str, offset: u64, e: OpenError) -> Error {
    match e {
        OpenError::Tag => Error::Tampered {
            path: path.to_path_buf(),
            what: what.to_string(),
            offset,
        },
        OpenError::Checksum => Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            detail: format!("{what}: checksum mismatch (storage damage)"),
        },
        OpenError::Malformed(m) => Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            detail: format!("{what}: {m}"),
        },
    }
}

fn entry_error(path: &Path, offset: u64, e: EntryError) -> Error {
    match e {
        EntryError::Unsafe {
            path: entry,
            reason,
        } => Error::UnsafePath {
            path: crate::format::v2::display_path(&entry),
            reason: format!("{reason}, in {}", path.display()),
        },
        EntryError::Corrupt(detail) => Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            detail,
        },
    }
}

impl IndexV2 {
    /// Feed the signature transcript from authenticated records (FORMAT.md v2.9.5, keyed):
    /// `B` from every block-table chunk's recorded tags (each chunk opened and checked, its
    /// tag matched against the directory's record), `M` from the directory's chunk records
    /// and the directory frame's own tag. The directory frame is read and authenticated
    /// again here and must decode to the directory in use, so the tag that is checked
    /// against the signature is the one of the directory this reader trusts.
    pub(crate) fn signed_tags(
        &self,
        archive: &Archive,
        transcript: &mut super::sign::Transcript,
    ) -> Result<()> {
        for k in 0..self.directory.block_chunks.len() {
            let (_, records) = self.open_block_chunk(archive, k)?;
            for (_, r) in &records {
                transcript.block(&r.tag);
            }
        }
        for c in &self.directory.chunks {
            transcript.meta(META_INDEX, &c.tag);
        }
        for c in &self.directory.block_chunks {
            transcript.meta(META_BLOCKS, &c.tag);
        }
        let t = &archive.v2().expect("a v2 archive").trailer;
        let dir_at = archive.data_start() + t.index_offset + t.index_len - t.directory_len as u64;
        let mut frame = vec![0u8; t.directory_len as usize];
        archive.source.read_exact_at(&mut frame, dir_at)?;
        let plain = open_meta(
            &self.keys,
            &self.session_id,
            META_DIRECTORY,
            0,
            true,
            &frame,
            None,
        )
        .map_err(|e| meta_error(archive.path(), "the index directory", dir_at, e))?;
        if decode_directory(&plain).ok().as_ref() != Some(&self.directory) {
            return Err(Error::Tampered {
                path: archive.path().to_path_buf(),
                what: "the index directory (changed while it was read)".into(),
                offset: dir_at,
            });
        }
        transcript.meta(META_DIRECTORY, &crate::seal::meta::meta_frame_tag(&frame));
        Ok(())
    }
}
