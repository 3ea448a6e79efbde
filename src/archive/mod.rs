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
use crate::keys::{SessionKey, SubKeys};
use crate::recipient::{Fingerprint, Identity};
use crate::seal::{BlockSealer, OpenError, header_mac_ok, open_index};
use crate::storage::{self, ArchiveSource, Location};

mod rekey;
mod verify;
pub(crate) mod writer;

pub use rekey::{RekeyOptions, RekeyReport, rekey};
pub use verify::{Problem, VerifyReport};

/// Largest encrypted index accepted (about ten million entries).
pub const MAX_INDEX_LEN: u64 = 1 << 30;

/// An archive whose header and trailer have been read (no key needed).
pub struct Archive {
    source: Arc<dyn ArchiveSource>,
    path: PathBuf,
    header: RawHeader,
    trailer: Trailer,
    file_len: u64,
}

/// An archive opened with a key: sub-keys and the authenticated, validated index.
pub struct Unlocked {
    pub index: Index,
    pub(crate) sealer: std::sync::Arc<BlockSealer>,
}

impl Archive {
    /// Read and check the header and trailer.
    pub fn open(path: &Path) -> Result<Self> {
        let location = Location::parse(path)?;
        let source = storage::open_source(&location)?;
        let path = &location.display_path();
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
            header,
            trailer,
            file_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &HeaderBody {
        &self.header.body
    }

    pub fn raw_header(&self) -> &RawHeader {
        &self.header
    }

    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// File offset where the data section (first block) starts.
    pub fn data_start(&self) -> u64 {
        self.header.len()
    }

    /// Fingerprints of the archive's recipients.
    pub fn recipients(&self) -> Vec<Fingerprint> {
        self.header
            .body
            .recipients
            .iter()
            .map(|s| Fingerprint(s.fingerprint))
            .collect()
    }

    /// Unwrap the session key with `identity`, check the header MAC, and read, check and
    /// decode the index.
    pub fn unlock(&self, identity: &dyn Identity) -> Result<Unlocked> {
        let (session_key, keys) = self.session_keys(identity)?;
        drop(session_key);
        self.unlock_with(&keys)
    }

    /// Unwrap the session key and check the header MAC with it.
    pub(crate) fn session_keys(&self, identity: &dyn Identity) -> Result<(SessionKey, SubKeys)> {
        let body = &self.header.body;
        let mut session_key = None;
        for stanza in &body.recipients {
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
            archive_fps: body
                .recipients
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
        let keys = SubKeys::derive(&session_key, &body.session_id);
        if !header_mac_ok(&self.header, &keys) {
            return Err(Error::Tampered {
                path: self.path.clone(),
                what: "the header".into(),
                offset: 0,
            });
        }
        Ok((session_key, keys))
    }

    pub(crate) fn unlock_with(&self, keys: &SubKeys) -> Result<Unlocked> {
        let body = &self.header.body;
        let index_at = self.data_start() + self.trailer.index_offset;
        let mut section = vec![0u8; self.trailer.index_len as usize];
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
            .validate(body.block_size, self.trailer.index_offset)
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
        if index.blocks.len() as u64 != self.trailer.block_count {
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
        Ok(Unlocked { index, sealer })
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
        hex(&self.header.body.session_id)
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
