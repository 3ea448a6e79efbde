//! One archive file, read and written. This module opens one: the header (readable
//! without a key), the trailer, and, with an identity, the session keys and the
//! authenticated index. `writer` writes one front to back, `verify` checks one
//! (checksums alone, or every tag with a key), and `rekey` changes who can open one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::header::{self, HeaderBody, HeaderError, PREFIX_LEN, RawHeader, SUFFIX_LEN};
use crate::format::hex;
use crate::format::index::{BlockRef, Index, IndexError};
use crate::format::trailer::{TRAILER_LEN, Trailer};
use crate::format::v2::EntryV2;
use crate::keys::{SessionKey, SubKeys};
use crate::recipient::{Fingerprint, Identity};
use crate::seal::{BlockSealer, OpenError, header_mac_ok, open_index};
use crate::storage::{self, ArchiveSource, Location};

pub mod chain;
pub mod copy;
pub(crate) mod meta_writer;
mod rekey;
mod rekey_chain;
/// Public only for the signing benchmark (`benches/sign.rs`); not a stable API.
#[doc(hidden)]
pub mod sign;
pub mod v2;
pub(crate) mod verify;
mod verify_chain;
mod verify_content;
pub(crate) mod writer;

pub use rekey::{RekeyOptions, RekeyReport, rekey};
pub use verify::{ParentCheck, Problem, VerifyReport};

/// Largest encrypted index accepted (about ten million entries).
pub const MAX_INDEX_LEN: u64 = 1 << 30;

/// An archive whose header and trailer have been read (no key needed).
pub struct Archive {
    source: Arc<dyn ArchiveSource>,
    path: PathBuf,
    layout: Layout,
    file_len: u64,
}

/// The format-specific parts of an open archive.
enum Layout {
    V1 { header: RawHeader, trailer: Trailer },
    V2(Box<v2::OpenV2>),
}

/// An archive opened with a key: sub-keys and the authenticated index (v1: validated
/// whole; v2: the directory, with chunks opened and validated as they are read).
pub struct Unlocked {
    pub(crate) view: View,
    pub(crate) sealer: std::sync::Arc<BlockSealer>,
}

pub(crate) enum View {
    V1(Index),
    V2(Box<v2::IndexV2>),
}

impl Archive {
    /// Read and check the header and trailer.
    pub fn open(path: &Path) -> Result<Self> {
        let location = Location::parse(path)?;
        let source = storage::open_source(&location)?;
        Self::from_source(&location.display_path(), source)
    }

    /// Read and check the header and trailer of the archive `source` holds (`path` names
    /// it in messages). `copy` opens an archive through a source that passes the bytes it
    /// reads on to the destination.
    pub fn from_source(path: &Path, source: Arc<dyn ArchiveSource>) -> Result<Self> {
        let file_len = source.len();
        let truncated = |detail: &str| Error::Truncated {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        };
        let mut prefix = [0u8; PREFIX_LEN];
        if file_len < PREFIX_LEN as u64 {
            // A short file is a cut-off archive only if what it has matches the magic.
            let mut head = vec![0u8; file_len.min(8) as usize];
            source.read_exact_at(&mut head, 0)?;
            if head.is_empty() || head[..] != header::MAGIC[..head.len()] {
                return Err(Error::NotAnArchive {
                    path: path.to_path_buf(),
                });
            }
            return Err(truncated("shorter than a header"));
        }
        source.read_exact_at(&mut prefix, 0)?;
        if prefix[..8] == header::MAGIC && u16::from_le_bytes([prefix[8], prefix[9]]) == 2 {
            let open = v2::OpenV2::open(source.as_ref(), path, &prefix, file_len)?;
            return Ok(Archive {
                source,
                path: path.to_path_buf(),
                layout: Layout::V2(Box::new(open)),
                file_len,
            });
        }
        let body_len = header::parse_prefix(&prefix).map_err(|e| header_error(path, e))?;
        let header_len = PREFIX_LEN as u64 + body_len as u64 + SUFFIX_LEN as u64;
        if file_len < header_len + TRAILER_LEN as u64 {
            return Err(truncated("ends inside the header"));
        }
        let mut bytes = vec![0u8; header_len as usize];
        source.read_exact_at(&mut bytes, 0)?;
        let header = RawHeader::parse(bytes).map_err(|e| header_error(path, e))?;

        let mut tb = [0u8; TRAILER_LEN];
        source.read_exact_at(&mut tb, file_len - TRAILER_LEN as u64)?;
        let trailer = Trailer::decode(&tb).map_err(|detail| {
            if tb[24..32] == crate::format::trailer::TRAILER_MAGIC {
                Error::Corrupt {
                    path: path.to_path_buf(),
                    offset: file_len - TRAILER_LEN as u64,
                    detail: detail.into(),
                }
            } else {
                truncated(detail)
            }
        })?;
        let data_room = file_len - header_len - TRAILER_LEN as u64;
        let index_end = trailer.index_offset.checked_add(trailer.index_len);
        if index_end != Some(data_room) || trailer.index_len > MAX_INDEX_LEN {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                offset: file_len - TRAILER_LEN as u64,
                detail: format!(
                    "trailer places the index at {}+{} but the file has {data_room} bytes after the header (truncated or extended)",
                    trailer.index_offset, trailer.index_len
                ),
            });
        }
        Ok(Archive {
            source,
            path: path.to_path_buf(),
            layout: Layout::V1 { header, trailer },
            file_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version: 1 or 2.
    pub fn version(&self) -> u16 {
        match &self.layout {
            Layout::V1 { .. } => 1,
            Layout::V2(_) => 2,
        }
    }

    /// A v1 archive's header body.
    pub fn v1_header(&self) -> Option<&HeaderBody> {
        match &self.layout {
            Layout::V1 { header, .. } => Some(&header.body),
            Layout::V2(_) => None,
        }
    }

    pub fn v1_raw_header(&self) -> Option<&RawHeader> {
        match &self.layout {
            Layout::V1 { header, .. } => Some(header),
            Layout::V2(_) => None,
        }
    }

    pub fn v1_trailer(&self) -> Option<&Trailer> {
        match &self.layout {
            Layout::V1 { trailer, .. } => Some(trailer),
            Layout::V2(_) => None,
        }
    }

    /// A v2 archive's header, trailer and what the keyless reader rules established.
    pub fn v2(&self) -> Option<&v2::OpenV2> {
        match &self.layout {
            Layout::V1 { .. } => None,
            Layout::V2(open) => Some(open),
        }
    }

    /// The session parameters every version records, without a key.
    pub fn params(&self) -> Params<'_> {
        match &self.layout {
            Layout::V1 { header, trailer } => {
                let b = &header.body;
                Params {
                    version: 1,
                    session_id: b.session_id,
                    created_at: b.created_at,
                    job_name: &b.job_name,
                    block_size: b.block_size,
                    segment_size: b.segment_size,
                    compression: b.compression,
                    stanzas: &b.recipients,
                    block_count: trailer.block_count,
                    data_len: trailer.index_offset,
                    index_len: trailer.index_len,
                    chain: &[],
                    signer: None,
                }
            }
            Layout::V2(open) => {
                let f = &open.header.body.fields;
                Params {
                    version: 2,
                    session_id: f.session_id,
                    created_at: f.created_at,
                    job_name: &f.job_name,
                    block_size: f.block_size,
                    segment_size: f.segment_size,
                    compression: f.compression,
                    stanzas: &open.header.body.recipients,
                    block_count: open.trailer.block_count,
                    data_len: open.trailer.index_offset,
                    index_len: open.trailer.index_len,
                    chain: &f.chain,
                    signer: f.signer,
                }
            }
        }
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// File offset where the data section (first block) starts.
    pub fn data_start(&self) -> u64 {
        match &self.layout {
            Layout::V1 { header, .. } => header.len(),
            Layout::V2(open) => open.header.len(),
        }
    }

    /// Fingerprints of the archive's recipients.
    pub fn recipients(&self) -> Vec<Fingerprint> {
        self.params()
            .stanzas
            .iter()
            .map(|s| Fingerprint(s.fingerprint))
            .collect()
    }

    /// Unwrap the session key with `identity`, check the header MAC, and read, check and
    /// decode the index.
    pub fn unlock(&self, identity: &dyn Identity) -> Result<Unlocked> {
        let (session_key, keys) = self.session_keys(identity)?;
        drop(session_key);
        self.unlock_with(Arc::new(keys))
    }

    /// Unwrap the session key and check the header MAC with it.
    pub(crate) fn session_keys(&self, identity: &dyn Identity) -> Result<(SessionKey, SubKeys)> {
        let params = self.params();
        let mut session_key = None;
        for stanza in params.stanzas {
            // The stanza is ours by fingerprint but does not decrypt: it was changed.
            let unwrapped = identity
                .unwrap_stanza(stanza)
                .map_err(|_| Error::Tampered {
                    path: self.path.clone(),
                    what: format!(
                        "the recipient stanza for {}",
                        Fingerprint(stanza.fingerprint)
                    ),
                    offset: 0,
                })?;
            if let Some(k) = unwrapped {
                session_key = Some(k);
                break;
            }
        }
        let session_key = session_key.ok_or_else(|| Error::WrongKey {
            path: self.path.clone(),
            identity: identity.source().to_path_buf(),
            identity_fp: identity.fingerprint().to_string(),
            archive_fps: params
                .stanzas
                .iter()
                .map(|s| {
                    let fp = Fingerprint(s.fingerprint).to_string();
                    if s.label.is_empty() {
                        fp
                    } else {
                        format!("{fp} ({})", s.label)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let (keys, mac_ok) = match &self.layout {
            Layout::V1 { header, .. } => {
                let keys = SubKeys::derive(&session_key, &params.session_id);
                let ok = header_mac_ok(header, &keys);
                (keys, ok)
            }
            Layout::V2(open) => {
                let keys = SubKeys::derive_v2(&session_key, &params.session_id);
                let ok = crate::seal::meta::header_v2_mac_ok(&open.header, &keys);
                (keys, ok)
            }
        };
        if !mac_ok {
            return Err(Error::Tampered {
                path: self.path.clone(),
                what: "the header".into(),
                offset: 0,
            });
        }
        Ok((session_key, keys))
    }

    pub(crate) fn unlock_with(&self, keys: Arc<SubKeys>) -> Result<Unlocked> {
        let (body, trailer) = match &self.layout {
            Layout::V1 { header, trailer } => (&header.body, trailer),
            Layout::V2(open) => return open.unlock(self, keys),
        };
        let keys = &*keys;
        let index_at = self.data_start() + trailer.index_offset;
        let mut section = vec![0u8; trailer.index_len as usize];
        self.source.read_exact_at(&mut section, index_at)?;
        let plain = open_index(keys, &body.session_id, section).map_err(|e| match e {
            OpenError::Tag => Error::Tampered {
                path: self.path.clone(),
                what: "the index".into(),
                offset: index_at,
            },
            OpenError::Checksum => Error::Corrupt {
                path: self.path.clone(),
                offset: index_at,
                detail: "index checksum mismatch (storage damage)".into(),
            },
            OpenError::Malformed(m) => Error::Corrupt {
                path: self.path.clone(),
                offset: index_at,
                detail: m,
            },
        })?;
        let index: Index = match postcard::take_from_bytes::<Index>(&plain) {
            Ok((index, [])) => index,
            Ok(_) => {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    offset: index_at,
                    detail: "trailing bytes after the index".into(),
                });
            }
            Err(e) => {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    offset: index_at,
                    detail: format!("index does not decode: {e}"),
                });
            }
        };
        index
            .validate(body.block_size, trailer.index_offset)
            .map_err(|e| match e {
                IndexError::Unsafe { entry, reason } => Error::UnsafePath {
                    path: entry,
                    reason: format!("{reason}, in {}", self.path.display()),
                },
                IndexError::Corrupt(detail) => Error::Corrupt {
                    path: self.path.clone(),
                    offset: index_at,
                    detail,
                },
            })?;
        if index.blocks.len() as u64 != trailer.block_count {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                offset: self.file_len - TRAILER_LEN as u64,
                detail: "trailer block count disagrees with the index".into(),
            });
        }
        let sealer = std::sync::Arc::new(BlockSealer::new(
            keys,
            body.session_id,
            body.block_size,
            body.segment_size,
            body.compression(),
        ));
        Ok(Unlocked {
            view: View::V1(index),
            sealer,
        })
    }

    /// Read one block's frame into `buf`.
    pub fn read_frame(&self, block: &BlockRef, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(block.frame_len as usize, 0);
        self.source
            .read_exact_at(buf, self.data_start() + block.offset)
    }

    /// The archive's bytes, shareable with a reader thread.
    pub fn source(&self) -> Arc<dyn ArchiveSource> {
        Arc::clone(&self.source)
    }

    /// Map a block open failure to an error naming the block and its offset.
    pub fn block_error(&self, index: u64, block: &BlockRef, err: OpenError) -> Error {
        let offset = self.data_start() + block.offset;
        match err {
            OpenError::Tag => Error::Tampered {
                path: self.path.clone(),
                what: format!("block {index}"),
                offset,
            },
            OpenError::Checksum => Error::Corrupt {
                path: self.path.clone(),
                offset,
                detail: format!("block {index}: checksum mismatch (storage damage)"),
            },
            OpenError::Malformed(m) => Error::Corrupt {
                path: self.path.clone(),
                offset,
                detail: format!("block {index}: {m}"),
            },
        }
    }

    pub fn session_id_hex(&self) -> String {
        hex(&self.params().session_id)
    }
}

/// What every format version records about a session, readable without a key.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    pub version: u16,
    pub session_id: crate::keys::SessionId,
    pub created_at: i64,
    pub job_name: &'a str,
    pub block_size: u32,
    pub segment_size: u32,
    /// 0 = none, 1 = zstd.
    pub compression: u8,
    pub stanzas: &'a [crate::format::header::Stanza],
    pub block_count: u64,
    /// Bytes of block frames (the data section).
    pub data_len: u64,
    /// Bytes of the index section.
    pub index_len: u64,
    /// v2: the parents of an incremental (empty for a full and for v1).
    pub chain: &'a [crate::format::v2::ParentRef],
    pub signer: Option<crate::format::v2::SignerDecl>,
}

impl Unlocked {
    /// A v1 archive's whole index.
    pub fn v1_index(&self) -> Option<&Index> {
        match &self.view {
            View::V1(index) => Some(index),
            View::V2(_) => None,
        }
    }

    pub fn block_count(&self) -> u64 {
        match &self.view {
            View::V1(index) => index.blocks.len() as u64,
            View::V2(v) => v.block_count(),
        }
    }

    /// Length of the logical stream of file data.
    pub fn stream_len(&self) -> u64 {
        match &self.view {
            View::V1(index) => index.stream_len,
            View::V2(v) => v.directory.stream_len,
        }
    }

    pub fn entry_count(&self) -> u64 {
        match &self.view {
            View::V1(index) => index.entries.len() as u64,
            View::V2(v) => v.directory.entry_count,
        }
    }

    /// Where block `i` is and, for v2, the tag the block table records for it.
    pub(crate) fn block(&self, archive: &Archive, i: u64) -> Result<(BlockRef, Option<[u8; 32]>)> {
        match &self.view {
            View::V1(index) => index
                .blocks
                .get(i as usize)
                .map(|b| (*b, None))
                .ok_or_else(|| Error::Internal(format!("block {i} is not in the index"))),
            View::V2(v) => v.block(archive, i),
        }
    }

    /// Every entry in index (path) order, each validated before `f` sees it. A v1 index
    /// is converted to the v2 shape (paths as bytes, one extent per file, no content
    /// hash); a v2 index is read chunk by chunk, so memory stays flat in the entry count.
    pub fn for_each_entry(
        &self,
        archive: &Archive,
        mut f: impl FnMut(u64, EntryV2) -> Result<()>,
    ) -> Result<()> {
        match &self.view {
            View::V1(index) => {
                for (i, e) in index.entries.iter().enumerate() {
                    f(i as u64, v1_entry(e))?;
                }
                Ok(())
            }
            View::V2(v) => v.for_each_entry(archive, &mut f),
        }
    }

    /// Bytes of the index section read so far: v1 reads it whole at unlock; v2 reads the
    /// directory at unlock and chunks as they are needed.
    pub fn index_bytes_read(&self) -> u64 {
        match &self.view {
            View::V1(_) => 0,
            View::V2(v) => v.read.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The index chunks a restore of paths starting with `prefixes` reads (`None`: all of
    /// them; always all for v1, whose index is one piece).
    pub(crate) fn chunk_plan(&self, prefixes: Option<Vec<Vec<u8>>>) -> Option<Vec<usize>> {
        match &self.view {
            View::V1(_) => None,
            View::V2(v) => prefixes.map(|p| v.chunks_for(&p)),
        }
    }

    /// As [`Unlocked::for_each_entry`], for the chunks of `plan` only (with the ancestors
    /// of each chunk's entries that lie outside it).
    pub(crate) fn for_each_entry_in(
        &self,
        archive: &Archive,
        plan: Option<&[usize]>,
        mut f: impl FnMut(u64, EntryV2) -> Result<()>,
    ) -> Result<()> {
        match (&self.view, plan) {
            (View::V2(v), Some(chunks)) => v.for_each_entry_in(archive, chunks, &mut f),
            _ => self.for_each_entry(archive, f),
        }
    }

    /// The entry numbered `n` (hard-link targets), validated.
    pub fn entry(&self, archive: &Archive, n: u64) -> Result<EntryV2> {
        match &self.view {
            View::V1(index) => index
                .entries
                .get(n as usize)
                .map(v1_entry)
                .ok_or_else(|| Error::Internal(format!("entry {n} is not in the index"))),
            View::V2(v) => v.entry(archive, n),
        }
    }
}

/// A v1 entry in the v2 shape.
fn v1_entry(e: &crate::format::index::Entry) -> EntryV2 {
    use crate::format::v2::Extent;
    EntryV2 {
        path: e.path.as_bytes().to_vec(),
        kind: e.kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime_sec: e.mtime_sec,
        mtime_nsec: e.mtime_nsec,
        size: e.size,
        link_target: e.link_target.as_ref().map(|t| t.as_bytes().to_vec()),
        extents: if e.size > 0 {
            vec![Extent {
                archive: 0,
                offset: e.offset,
                len: e.size,
            }]
        } else {
            Vec::new()
        },
        ..EntryV2::default()
    }
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    let path = path.to_path_buf();
    match e {
        HeaderError::BadMagic => Error::NotAnArchive { path },
        HeaderError::UnsupportedVersion(version) => Error::UnsupportedVersion { path, version },
        HeaderError::BodyTooLarge(n) => Error::Corrupt {
            path,
            offset: 10,
            detail: format!("header claims {n} bytes (limit {})", header::MAX_BODY_LEN),
        },
        HeaderError::Checksum => Error::Corrupt {
            path,
            offset: 0,
            detail: "header checksum mismatch".into(),
        },
        HeaderError::Malformed(detail) => Error::Corrupt {
            path,
            offset: PREFIX_LEN as u64,
            detail,
        },
    }
}
