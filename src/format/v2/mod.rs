//! Archive format v2 (docs/FORMAT.md, "Format v2"): the types of the v2 header,
//! meta frames (index chunks, block-table chunks, directory), entries and trailer, with
//! their encodings. Pure encode/decode like the rest of `format/`: never a key. The rules a
//! reader checks live in [`validate`].

use serde::{Deserialize, Serialize};

use super::crc32c;
use super::header::{MAGIC, PREFIX_LEN, Stanza};
use crate::keys::SessionId;

pub mod content;
pub mod validate;

/// Header bytes 8..10 of a v2 archive.
pub const VERSION: u16 = 2;

/// Entry kinds (v2.7.1).
pub const KIND_FILE: u8 = 0;
pub const KIND_DIR: u8 = 1;
pub const KIND_SYMLINK: u8 = 2;
pub const KIND_HARDLINK: u8 = 3;
pub const KIND_FIFO: u8 = 4;
pub const KIND_CHAR: u8 = 5;
pub const KIND_BLOCK: u8 = 6;

/// Meta frame kinds (v2.6.1).
pub const META_INDEX: u8 = 1;
pub const META_BLOCKS: u8 = 2;
pub const META_DIRECTORY: u8 = 3;

/// Meta frame layout: ct_len, raw_len, kind, flags, iv | ct | tag, crc.
pub const META_PREFIX: usize = 4 + 4 + 1 + 1 + 16;
pub const META_SUFFIX: usize = 32 + 4;
pub const META_OVERHEAD: usize = META_PREFIX + META_SUFFIX;
/// Smallest meta frame: one AES block of ciphertext.
pub const MIN_META_FRAME: usize = META_OVERHEAD + 16;
pub const META_FLAG_ZSTD: u8 = 0x01;
pub const META_FLAG_LAST: u8 = 0x02;

/// Largest plaintext of each meta frame kind (`bound(kind)`).
pub const MAX_INDEX_CHUNK: usize = 1 << 20;
pub const MAX_BLOCK_CHUNK: usize = BLOCKS_PER_CHUNK * 38;
pub const MAX_DIRECTORY: usize = 16 << 20;
/// Block-table records per chunk (every chunk but the last is full).
pub const BLOCKS_PER_CHUNK: usize = 65_536;
/// Index chunks per archive.
pub const MAX_CHUNKS: usize = 1 << 20;
/// Entries per archive.
pub const MAX_ENTRIES: u64 = 1 << 40;
/// Index section length (a sanity bound: nothing is allocated from it).
pub const MAX_INDEX_SECTION: u64 = 1 << 40;

/// Parents per archive and the length of a parent's file-name hint.
pub const MAX_PARENTS: usize = 256;
pub const MAX_HINT_LEN: usize = 255;

/// Per-entry bounds (v2.7.2).
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_XATTRS: usize = 1024;
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 65_536;
pub const MAX_XATTR_TOTAL: usize = 262_144;
pub const MAX_RANGES: usize = 8192;
pub const MAX_EXTENTS: usize = 8192;
/// The smallest possible postcard encoding of an entry: a count varint larger than the
/// bytes left divided by this is refused before allocating.
pub const MIN_ENTRY_ENCODING: usize = 17;

/// Content hash algorithms (header field 8): 2 = BLAKE3 over 1 MiB windows (v2.4), the only
/// one. Id 1 (SHA-256 over windows, an earlier draft) is refused like any unknown id.
pub const HASH_BLAKE3: u8 = 2;
/// Signature schemes (SignerDecl, signature section).
pub const SIGNER_ED25519: u16 = 1;
/// Signature section length for Ed25519: scheme, sig_len, 64 bytes, crc.
pub const SIGNATURE_LEN: u32 = 2 + 2 + 64 + 4;

/// A parent of an incremental archive, keyless (v2.3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub session_id: SessionId,
    /// The parent's file name when this archive was written: a hint, never trusted.
    pub hint: String,
}

/// Who signed the archive (v2.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerDecl {
    pub scheme: u16,
    pub fingerprint: [u8; 32],
}

/// The signed fields of the header body, fields 1–10 in wire order. Kept apart from the
/// recipients so that its encoding is the exact byte prefix a signature covers and `rekey`
/// copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderFields {
    pub session_id: SessionId,
    pub created_at: i64,
    pub job_name: String,
    pub suite: u8,
    pub block_size: u32,
    pub segment_size: u32,
    pub compression: u8,
    pub content_hash: u8,
    pub chain: Vec<ParentRef>,
    pub signer: Option<SignerDecl>,
}

/// A v2 header body: the signed fields, then the recipient stanzas (field 11, last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderBodyV2 {
    pub fields: HeaderFields,
    pub recipients: Vec<Stanza>,
}

impl HeaderBodyV2 {
    /// The body's bytes and `r`, the length of the signed prefix (fields 1–10).
    pub fn encode(&self) -> (Vec<u8>, usize) {
        let mut out = postcard::to_stdvec(&self.fields).expect("header fields serialize");
        let r = out.len();
        out.extend_from_slice(&postcard::to_stdvec(&self.recipients).expect("stanzas serialize"));
        (out, r)
    }

    /// The header up to its MAC: magic, version 2, body length, body.
    pub fn encode_unsealed(&self) -> Vec<u8> {
        let (body, _) = self.encode();
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + 36);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// One extended attribute, stored as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// A range of a sparse file that holds data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRange {
    pub offset: u64,
    pub len: u64,
}

/// Where a piece of a file's data bytes is: `archive` 0 = this archive, `k` = the header's
/// `chain[k-1]`; `offset` in that archive's logical stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub archive: u32,
    pub offset: u64,
    pub len: u64,
}

/// One entry of the index (v2.7.1), in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryV2 {
    /// Relative `/`-separated path as bytes, never re-coded.
    pub path: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// File: logical size, holes included; 0 otherwise.
    pub size: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub link_target: Option<Vec<u8>>,
    /// Hard link: the entry number of the inode's first name.
    pub hardlink_to: Option<u64>,
    /// Sorted by name bytes.
    pub xattrs: Vec<Xattr>,
    /// File: `None` = dense, `Some` = only these ranges hold data.
    pub data_ranges: Option<Vec<DataRange>>,
    pub extents: Vec<Extent>,
    pub content_hash: Option<[u8; 32]>,
}

impl EntryV2 {
    /// Bytes of data the file holds: its size when dense, else the sum of its ranges.
    pub fn data_len(&self) -> u64 {
        match &self.data_ranges {
            None => self.size,
            Some(r) => r.iter().map(|r| r.len).sum(),
        }
    }
}

/// A block as the block table records it (v2.6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRefV2 {
    pub frame_len: u32,
    pub tag: [u8; 32],
}

/// Where an index chunk is, and what it starts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub offset: u64,
    pub frame_len: u32,
    pub entry_count: u32,
    pub first_path: Vec<u8>,
    pub tag: [u8; 32],
}

/// Where a block-table chunk is, and where its first block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockChunkRef {
    pub offset: u64,
    pub frame_len: u32,
    pub first_block_offset: u64,
    pub tag: [u8; 32],
}

/// Totals recorded at backup time: informational, not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsV2 {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub stored_bytes: u64,
    pub referenced_bytes: u64,
    pub warnings: u64,
}

/// The directory (v2.6.4): the last meta frame, opened first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub chunks: Vec<ChunkRef>,
    pub block_chunks: Vec<BlockChunkRef>,
    pub entry_count: u64,
    pub stream_len: u64,
    pub parent_commitments: Vec<[u8; 32]>,
    pub totals: TotalsV2,
}

pub const TRAILER_MAGIC: [u8; 8] = *b"\x89CFEND2\n";
pub const TRAILER_LEN: usize = 44;

/// The v2 trailer (v2.6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrailerV2 {
    pub index_offset: u64,
    pub index_len: u64,
    pub block_count: u64,
    pub directory_len: u32,
    pub signature_len: u32,
}

impl TrailerV2 {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.block_count.to_le_bytes());
        out[24..28].copy_from_slice(&self.directory_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.signature_len.to_le_bytes());
        out[32..40].copy_from_slice(&TRAILER_MAGIC);
        let crc = crc32c(&out[..40]);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Path order (v2.6.2): bytes compared with every `/` taken as 0x00, so a folder sorts
/// immediately before its subtree and siblings by name bytes.
pub fn path_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'/' { 0u8 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// The parent part of a path (before its last `/`), if any.
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&c| c == b'/').map(|i| &path[..i])
}

/// A path (bytes) as text for messages: valid UTF-8 as it is, every other byte as `\xNN`,
/// so two names that differ only in bytes that are not UTF-8 never print the same.
pub fn display_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
