//! A v2 archive taken apart down to its plaintexts (header fields, block plaintexts,
//! entries, directory extras), and put back together under a chosen session key and id:
//! every block, meta frame, the header and (when a signing key is given) the signature are
//! sealed anew. The real writer decides what an archive holds; this only re-seals it, so
//! the vectors get fixed keys the public API does not let a caller choose.

use std::path::Path;

use coffer::format::crc32c;
use coffer::format::frame::FRAME_PREFIX;
use coffer::format::header::{PREFIX_LEN, SUFFIX_LEN};
use coffer::format::v2::validate::{
    RawHeaderV2, decode_block_chunk, decode_chunk, decode_directory,
};
use coffer::format::v2::{
    BLOCKS_PER_CHUNK, BlockChunkRef, BlockRefV2, ChunkRef, Directory, EntryV2, HeaderBodyV2,
    HeaderFields, META_BLOCKS, META_DIRECTORY, META_INDEX, ParentRef, SIGNATURE_LEN,
    SIGNER_ED25519, SignerDecl, TRAILER_LEN, TotalsV2, TrailerV2,
};
use coffer::keys::{SessionId, SessionKey, SubKeys};
use coffer::recipient::{Identity, Recipient};
use coffer::seal::meta::{commitment, meta_frame_tag, open_meta, seal_header_v2, seal_meta};
use coffer::seal::{BlockSealer, Entropy};
use coffer::{Compression, SigningKey};
use sha2::{Digest, Sha256};

/// An archive's contents, independent of its keys.
#[derive(Clone)]
pub struct Model {
    pub fields: HeaderFields,
    /// Plaintext of every block, in order.
    pub blocks: Vec<Vec<u8>>,
    pub entries: Vec<EntryV2>,
    /// Entries per index chunk, as the writer cut them.
    pub chunk_counts: Vec<u32>,
    pub stream_len: u64,
    pub totals: TotalsV2,
}

impl Model {
    /// Decode `bytes` (a v2 archive) with `id`, checking every tag on the way.
    pub fn load(bytes: &[u8], id: &dyn Identity) -> Model {
        let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        let h = PREFIX_LEN + body_len + SUFFIX_LEN;
        let header = RawHeaderV2::parse(bytes[..h].to_vec()).expect("a v2 header");
        let tb: &[u8; TRAILER_LEN] = bytes[bytes.len() - TRAILER_LEN..].try_into().unwrap();
        let trailer = TrailerV2::decode(tb).expect("a v2 trailer");
        let key = header
            .body
            .recipients
            .iter()
            .find_map(|s| id.unwrap_stanza(s).unwrap())
            .expect("the identity has a stanza");
        let sid = header.body.fields.session_id;
        let keys = SubKeys::derive_v2(&key, &sid);
        let at = |offset: u64, len: usize| &bytes[h + offset as usize..h + offset as usize + len];
        let dir_offset = trailer.index_offset + trailer.index_len - trailer.directory_len as u64;
        let plain = open_meta(
            &keys,
            &sid,
            META_DIRECTORY,
            0,
            true,
            at(dir_offset, trailer.directory_len as usize),
            None,
        )
        .expect("directory");
        let dir = decode_directory(&plain).unwrap();
        let mut entries = Vec::new();
        let mut chunk_counts = Vec::new();
        for (k, r) in dir.chunks.iter().enumerate() {
            let last = k + 1 == dir.chunks.len();
            let frame = at(r.offset, r.frame_len as usize);
            let plain = open_meta(&keys, &sid, META_INDEX, k as u64, last, frame, Some(&r.tag))
                .expect("index chunk");
            let chunk = decode_chunk(&plain).unwrap();
            chunk_counts.push(chunk.len() as u32);
            entries.extend(chunk);
        }
        let f = &header.body.fields;
        let compression = compression_of(f.compression);
        let sealer = BlockSealer::new(&keys, sid, f.block_size, f.segment_size, compression);
        let mut blocks = Vec::new();
        for (k, r) in dir.block_chunks.iter().enumerate() {
            let last = k + 1 == dir.block_chunks.len();
            let frame = at(r.offset, r.frame_len as usize);
            let plain = open_meta(
                &keys,
                &sid,
                META_BLOCKS,
                k as u64,
                last,
                frame,
                Some(&r.tag),
            )
            .expect("block-table chunk");
            let mut pos = r.first_block_offset;
            for b in decode_block_chunk(&plain).unwrap() {
                let i = blocks.len() as u64;
                let mut frame = at(pos, b.frame_len as usize).to_vec();
                let mut out = Vec::new();
                sealer
                    .open(&mut frame, i, i + 1 == trailer.block_count, &mut out)
                    .expect("block opens");
                blocks.push(out);
                pos += u64::from(b.frame_len);
            }
        }
        Model {
            fields: header.body.fields.clone(),
            blocks,
            entries,
            chunk_counts,
            stream_len: dir.stream_len,
            totals: dir.totals,
        }
    }

    /// Seal every part under `key`/`sid` for `recipients`, with `chain` and `commitments`.
    /// The header declares `signer` when given (sign with [`Sealed::finish`]).
    pub fn seal(&self, spec: &Spec<'_>) -> Sealed {
        let session_key = SessionKey::from_bytes(spec.key);
        let keys = SubKeys::derive_v2(&session_key, &spec.sid);
        let mut fields = self.fields.clone();
        fields.session_id = spec.sid;
        fields.created_at = spec.created_at;
        fields.job_name = spec.job_name.to_string();
        fields.chain = spec.chain.clone();
        fields.signer = spec.signer.map(|s| SignerDecl {
            scheme: SIGNER_ED25519,
            fingerprint: s.fingerprint().0,
        });
        let recipients = spec
            .recipients
            .iter()
            .map(|r| r.wrap(&session_key).unwrap())
            .collect();
        let body = HeaderBodyV2 { fields, recipients };
        let f = &body.fields;
        let compression = compression_of(f.compression);
        let sealer = BlockSealer::new(&keys, spec.sid, f.block_size, f.segment_size, compression);
        let mut data = Vec::new();
        let mut block_refs = Vec::new();
        for (i, plain) in self.blocks.iter().enumerate() {
            let mut buf = vec![0u8; FRAME_PREFIX];
            buf.extend_from_slice(plain);
            sealer.seal(&mut buf, i as u64, i + 1 == self.blocks.len());
            let tag: [u8; 32] = buf[buf.len() - 36..buf.len() - 4].try_into().unwrap();
            block_refs.push(BlockRefV2 {
                frame_len: buf.len() as u32,
                tag,
            });
            data.extend_from_slice(&buf);
        }
        let compress = f.compression == 1;
        let mut sealed = Sealed {
            body,
            keys,
            sid: spec.sid,
            compress,
            data,
            index: Vec::new(),
            tables: Vec::new(),
            block_refs,
            commitments: spec.commitments.clone(),
            stream_len: self.stream_len,
            totals: self.totals,
        };
        let mut rest = &self.entries[..];
        let counts = &self.chunk_counts;
        let chunks: Vec<&[EntryV2]> = counts
            .iter()
            .map(|&n| {
                let (head, tail) = rest.split_at(n as usize);
                rest = tail;
                head
            })
            .collect();
        sealed.index = sealed.seal_chunks(&chunks);
        sealed.tables = sealed.seal_tables();
        sealed
    }
}

fn compression_of(id: u8) -> Compression {
    if id == 1 {
        Compression::Zstd(coffer::DEFAULT_ZSTD_LEVEL)
    } else {
        Compression::None
    }
}

/// The keys and header of a re-sealed archive.
pub struct Spec<'a> {
    pub key: [u8; 32],
    pub sid: SessionId,
    pub created_at: i64,
    pub job_name: &'a str,
    pub recipients: Vec<&'a dyn Recipient>,
    pub chain: Vec<ParentRef>,
    pub commitments: Vec<[u8; 32]>,
    pub signer: Option<&'a SigningKey>,
}

/// A sealed index chunk and what the directory records about it.
#[derive(Clone)]
pub struct IndexFrame {
    pub frame: Vec<u8>,
    pub entry_count: u32,
    pub first_path: Vec<u8>,
}

/// Every frame of an archive, sealed; [`Sealed::finish`] lays them out.
pub struct Sealed {
    pub body: HeaderBodyV2,
    pub keys: SubKeys,
    pub sid: SessionId,
    pub compress: bool,
    pub data: Vec<u8>,
    pub block_refs: Vec<BlockRefV2>,
    pub index: Vec<IndexFrame>,
    pub tables: Vec<Vec<u8>>,
    pub commitments: Vec<[u8; 32]>,
    pub stream_len: u64,
    pub totals: TotalsV2,
}

impl Sealed {
    pub fn meta(&self, kind: u8, n: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        seal_meta(
            &self.keys,
            &self.sid,
            kind,
            n,
            last,
            plain,
            self.compress,
            Entropy::Os,
        )
    }

    /// Seal `chunks` as index chunks 0.., the last with `FLAG_LAST`.
    pub fn seal_chunks(&self, chunks: &[&[EntryV2]]) -> Vec<IndexFrame> {
        chunks
            .iter()
            .enumerate()
            .map(|(k, c)| IndexFrame {
                frame: self.meta(
                    META_INDEX,
                    k as u64,
                    k + 1 == chunks.len(),
                    &postcard::to_stdvec(&c.to_vec()).unwrap(),
                ),
                entry_count: c.len() as u32,
                first_path: c[0].path.clone(),
            })
            .collect()
    }

    /// Seal `block_refs` as block-table chunks.
    pub fn seal_tables(&self) -> Vec<Vec<u8>> {
        let parts: Vec<&[BlockRefV2]> = self.block_refs.chunks(BLOCKS_PER_CHUNK).collect();
        parts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let plain = postcard::to_stdvec(&t.to_vec()).unwrap();
                self.meta(META_BLOCKS, k as u64, k + 1 == parts.len(), &plain)
            })
            .collect()
    }

    /// This archive's commitment (v2.4).
    pub fn commitment(&self) -> [u8; 32] {
        commitment(&self.keys, &self.sid)
    }

    /// The directory as the frames lie (before `edit`).
    pub fn directory(&self) -> Directory {
        let mut pos = self.data.len() as u64;
        let chunks = self
            .index
            .iter()
            .map(|s| {
                let r = ChunkRef {
                    offset: pos,
                    frame_len: s.frame.len() as u32,
                    entry_count: s.entry_count,
                    first_path: s.first_path.clone(),
                    tag: meta_frame_tag(&s.frame),
                };
                pos += s.frame.len() as u64;
                r
            })
            .collect();
        let mut first_block_offset = 0u64;
        let block_chunks = self
            .tables
            .iter()
            .enumerate()
            .map(|(k, frame)| {
                let r = BlockChunkRef {
                    offset: pos,
                    frame_len: frame.len() as u32,
                    first_block_offset,
                    tag: meta_frame_tag(frame),
                };
                let start = k * BLOCKS_PER_CHUNK;
                let end = (start + BLOCKS_PER_CHUNK).min(self.block_refs.len());
                first_block_offset += self.block_refs[start..end]
                    .iter()
                    .map(|b| u64::from(b.frame_len))
                    .sum::<u64>();
                pos += frame.len() as u64;
                r
            })
            .collect();
        Directory {
            chunks,
            block_chunks,
            entry_count: self.index.iter().map(|s| u64::from(s.entry_count)).sum(),
            stream_len: self.stream_len,
            parent_commitments: self.commitments.clone(),
            totals: self.totals,
        }
    }

    /// The archive: header, data, index frames, block tables, the directory (`edit`ed,
    /// then sealed), the signature when the header declares a signer (made with `signer`),
    /// and the trailer.
    pub fn finish(&self, signer: Option<&SigningKey>, edit: impl FnOnce(&mut Directory)) -> Built {
        let mut dir = self.directory();
        edit(&mut dir);
        let dir_frame = self.meta(META_DIRECTORY, 0, true, &postcard::to_stdvec(&dir).unwrap());
        let mut section = Vec::new();
        let mut meta_tags = Vec::new();
        for s in &self.index {
            section.extend_from_slice(&s.frame);
            meta_tags.push((META_INDEX, meta_frame_tag(&s.frame)));
        }
        for t in &self.tables {
            section.extend_from_slice(t);
            meta_tags.push((META_BLOCKS, meta_frame_tag(t)));
        }
        section.extend_from_slice(&dir_frame);
        meta_tags.push((META_DIRECTORY, meta_frame_tag(&dir_frame)));
        let signed = self.body.fields.signer.is_some();
        let trailer = TrailerV2 {
            index_offset: self.data.len() as u64,
            index_len: section.len() as u64,
            block_count: self.block_refs.len() as u64,
            directory_len: dir_frame.len() as u32,
            signature_len: if signed { SIGNATURE_LEN } else { 0 },
        };
        let header = seal_header_v2(&self.body, &self.keys);
        let signature = signer.filter(|_| signed).map(|key| {
            let (body, r) = self.body.encode();
            let msg = message(&header, &body[..r], &self.block_refs, &meta_tags, &trailer);
            section_bytes(&key.sign(&msg))
        });
        Built {
            header,
            data: self.data.clone(),
            section,
            signature,
            trailer,
            directory: dir,
        }
    }
}

/// The signed message of v2.9.3, computed from the tags.
pub fn message(
    header: &[u8],
    signed_body: &[u8],
    blocks: &[BlockRefV2],
    meta: &[(u8, [u8; 32])],
    trailer: &TrailerV2,
) -> Vec<u8> {
    let mut b = Sha256::new();
    for r in blocks {
        b.update(r.tag);
    }
    let mut m = Sha256::new();
    for (kind, tag) in meta {
        m.update([*kind]);
        m.update(tag);
    }
    let mut t = Sha256::new();
    t.update(b"coffer/v2/transcript");
    t.update(&header[..10]);
    t.update((signed_body.len() as u32).to_le_bytes());
    t.update(signed_body);
    t.update(b.finalize());
    t.update(m.finalize());
    t.update(&trailer.encode()[..40]);
    let mut out = b"coffer/v2/signature".to_vec();
    out.extend_from_slice(&t.finalize());
    out
}

/// The signature section (v2.9.2).
pub fn section_bytes(sig: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&SIGNER_ED25519.to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes());
    out.extend_from_slice(sig);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// An assembled archive, in parts, so a hostile vector can change one.
#[derive(Clone)]
pub struct Built {
    pub header: Vec<u8>,
    pub data: Vec<u8>,
    pub section: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub trailer: TrailerV2,
    pub directory: Directory,
}

impl Built {
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.section);
        if let Some(s) = &self.signature {
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&self.trailer.encode());
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}
