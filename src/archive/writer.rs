//! Writing one archive front to back: begin (the sealed header), push each sealed frame
//! as the pipeline hands it over (recording the block table as it goes), finish (the
//! sealed index and the trailer) and commit. Backup and `rekey --reencrypt` both write
//! through it, so their archives cannot differ in layout.

use crate::error::{Error, Result};
use crate::format::header::HeaderBody;
use crate::format::index::{BlockRef, Entry, Index, Totals};
use crate::format::trailer::Trailer;
use crate::keys::SubKeys;
use crate::seal::{Entropy, seal_header, seal_index_from};
use crate::storage::ArchiveSink;

use super::meta_writer::{BlockTable, IndexChunks, MetaKeys, write_chunks};
use super::sign::{Transcript, sign_section};
use crate::format::v2::{
    Directory, HeaderBodyV2, MAX_DIRECTORY, META_BLOCKS, META_DIRECTORY, META_INDEX, SIGNATURE_LEN,
    TotalsV2, TrailerV2,
};
use crate::seal::meta::{meta_frame_tag, seal_header_v2, seal_meta};
use crate::signing::SigningKey;
use std::sync::Arc;

/// An archive being written. Dropped before [`ArchiveWriter::finish`], the sink removes
/// the partial file (or aborts the upload).
pub(crate) struct ArchiveWriter<'k> {
    out: Box<dyn ArchiveSink>,
    keys: &'k SubKeys,
    header: &'k HeaderBody,
    header_len: u64,
    blocks: Vec<BlockRef>,
    data_len: u64,
    entropy: Entropy,
}

/// What [`ArchiveWriter::finish`] wrote.
pub(crate) struct Written {
    /// The archive's length in bytes.
    pub len: u64,
    pub blocks: u64,
}

impl<'k> ArchiveWriter<'k> {
    /// Write the header `body`, sealed under `keys`, to `out`.
    pub(crate) fn begin(
        mut out: Box<dyn ArchiveSink>,
        header: &'k HeaderBody,
        keys: &'k SubKeys,
        entropy: Entropy,
    ) -> Result<Self> {
        let bytes = seal_header(header, keys);
        out.write_all(&bytes)?;
        Ok(ArchiveWriter {
            out,
            keys,
            header,
            header_len: bytes.len() as u64,
            blocks: Vec::new(),
            data_len: 0,
            entropy,
        })
    }

    /// The header this archive begins with.
    pub(crate) fn header(&self) -> &'k HeaderBody {
        self.header
    }

    /// The sub-keys it is sealed under.
    pub(crate) fn keys(&self) -> &'k SubKeys {
        self.keys
    }

    /// The (device, inode) of a local archive file, so a walk can skip the archive itself.
    pub(crate) fn local_identity(&self) -> Option<(u64, u64)> {
        self.out.local_identity()
    }

    /// Append the next sealed frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Result<()> {
        self.out.write_all(frame)?;
        self.blocks.push(BlockRef {
            offset: self.data_len,
            frame_len: frame.len() as u32,
            raw_len: u32::from_le_bytes(frame[4..8].try_into().unwrap()),
        });
        self.data_len += frame.len() as u64;
        Ok(())
    }

    /// Seal the index (the entries with the block table written here), write it and the
    /// trailer, and commit.
    pub(crate) fn finish(
        mut self,
        entries: Vec<Entry>,
        stream_len: u64,
        totals: Totals,
    ) -> Result<Written> {
        let block_count = self.blocks.len() as u64;
        let index = Index {
            entries,
            blocks: std::mem::take(&mut self.blocks),
            stream_len,
            totals,
        };
        let plain = postcard::to_stdvec(&index)
            .map_err(|e| Error::Internal(format!("cannot encode index: {e}")))?;
        let sealed = seal_index_from(self.entropy, self.keys, &self.header.session_id, &plain);
        let trailer = Trailer {
            index_offset: self.data_len,
            index_len: sealed.len() as u64,
            block_count,
        }
        .encode();
        self.out.write_all(&sealed)?;
        self.out.write_all(&trailer)?;
        self.out.commit()?;
        Ok(Written {
            len: self.header_len + self.data_len + sealed.len() as u64 + trailer.len() as u64,
            blocks: block_count,
        })
    }
}

/// A v2 archive being written (docs/FORMAT.md v2.2): the sealed header, block frames as
/// the pipeline hands them over (their lengths and tags go to the block table), then the
/// spooled index chunks, the block-table chunks, the directory and the trailer. Dropped
/// before [`ArchiveWriterV2::finish`], the sink removes the partial file.
pub(crate) struct ArchiveWriterV2<'k> {
    out: Box<dyn ArchiveSink>,
    keys: MetaKeys<'k>,
    header_len: u64,
    table: BlockTable<'k>,
    sign: Option<Signing>,
}

/// What signing an archive needs while it is written (FORMAT.md v2.9.4).
struct Signing {
    key: Arc<SigningKey>,
    /// `header[0, 10)` and `body[0, r)`, as written.
    header_prefix: Vec<u8>,
    signed_body: Vec<u8>,
    transcript: Transcript,
}

impl<'k> ArchiveWriterV2<'k> {
    /// Write the header `body`, sealed under the session's sub-keys, to `out`. With a
    /// signing key (which `body` must declare as its `signer`), the archive is signed.
    pub(crate) fn begin(
        mut out: Box<dyn ArchiveSink>,
        body: &HeaderBodyV2,
        keys: MetaKeys<'k>,
        signing_key: Option<Arc<SigningKey>>,
    ) -> Result<Self> {
        let declared = body.fields.signer.map(|s| s.fingerprint);
        if declared != signing_key.as_ref().map(|k| k.fingerprint().0) {
            return Err(Error::Internal(
                "the header's signer does not match the signing key".into(),
            ));
        }
        let bytes = seal_header_v2(body, keys.keys);
        let sign = signing_key.map(|key| {
            let (_, r) = body.encode();
            Signing {
                key,
                header_prefix: bytes[..10].to_vec(),
                signed_body: bytes[14..14 + r].to_vec(),
                transcript: Transcript::new(),
            }
        });
        out.write_all(&bytes)?;
        Ok(ArchiveWriterV2 {
            out,
            keys,
            header_len: bytes.len() as u64,
            table: BlockTable::new(keys)?,
            sign,
        })
    }

    /// The (device, inode) of a local archive file, so a walk can skip the archive itself.
    pub(crate) fn local_identity(&self) -> Option<(u64, u64)> {
        self.out.local_identity()
    }

    /// Append the next sealed block frame.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Result<()> {
        self.out.write_all(frame)?;
        if let Some(s) = &mut self.sign {
            // The block frame's tag sits before its 4-byte checksum (FORMAT.md §6.2); the
            // pipeline hands frames over in block order.
            let n = frame.len();
            s.transcript
                .block(frame[n - 36..n - 4].try_into().expect("a whole frame"));
        }
        self.table.push(frame)
    }

    /// Write the index section (index chunks, block-table chunks, directory) and the
    /// trailer, and commit.
    pub(crate) fn finish(
        mut self,
        chunks: IndexChunks,
        stream_len: u64,
        totals: TotalsV2,
        parent_commitments: Vec<[u8; 32]>,
    ) -> Result<Written> {
        let index_offset = self.table.data_len;
        let block_count = self.table.blocks;
        let entry_count = chunks.entries;
        let spooled = chunks.len();
        let blocks = self.table.finish()?;
        let spooled = spooled + blocks.len();
        let out = &mut self.out;
        let (chunk_refs, block_refs) =
            write_chunks(chunks, blocks, index_offset, &mut |b| out.write_all(b))?;
        let directory = Directory {
            chunks: chunk_refs,
            block_chunks: block_refs,
            entry_count,
            stream_len,
            parent_commitments,
            totals,
        };
        let plain = postcard::to_stdvec(&directory)
            .map_err(|e| Error::Internal(format!("cannot encode the directory: {e}")))?;
        if plain.len() > MAX_DIRECTORY {
            return Err(Error::Internal(format!(
                "the index directory would take {} bytes (limit {MAX_DIRECTORY}): too many files for one archive",
                plain.len()
            )));
        }
        let frame = seal_meta(
            self.keys.keys,
            &self.keys.session_id,
            META_DIRECTORY,
            0,
            true,
            &plain,
            self.keys.compress,
            self.keys.entropy,
        );
        self.out.write_all(&frame)?;
        let index_len = spooled + frame.len() as u64;
        let trailer = TrailerV2 {
            index_offset,
            index_len,
            block_count,
            directory_len: frame.len() as u32,
            signature_len: if self.sign.is_some() {
                SIGNATURE_LEN
            } else {
                0
            },
        };
        let mut signature_len = 0;
        if let Some(mut s) = self.sign.take() {
            // M: every meta frame's kind and tag, in file order.
            for c in &directory.chunks {
                s.transcript.meta(META_INDEX, &c.tag);
            }
            for c in &directory.block_chunks {
                s.transcript.meta(META_BLOCKS, &c.tag);
            }
            s.transcript.meta(META_DIRECTORY, &meta_frame_tag(&frame));
            let message = s
                .transcript
                .message(&s.header_prefix, &s.signed_body, &trailer);
            let section = sign_section(&s.key, &message);
            self.out.write_all(&section)?;
            signature_len = section.len() as u64;
        }
        let trailer = trailer.encode();
        self.out.write_all(&trailer)?;
        self.out.commit()?;
        Ok(Written {
            len: self.header_len + index_offset + index_len + signature_len + trailer.len() as u64,
            blocks: block_count,
        })
    }
}
