//! Reader rules for format v2 (docs/FORMAT.md v2.10): header, trailer, meta frame prefix,
//! directory, block-table chunks and entries, each checked before use. Pure: no key is
//! ever touched here (the MACs are checked in `crate::seal::meta`).
//!
//! Every decoder bounds a count or a length against the bytes left (and against the
//! format's limit where one exists) *before* it allocates, instead of trusting postcard's
//! derived `Vec` decoding: serde only caps a collection's preallocation at 1 MiB, and a
//! `Vec<Xattr>` of two-byte encodings would still grow to 24 times the plaintext.

use serde::de::DeserializeOwned;
use std::fmt;

use super::{
    BLOCKS_PER_CHUNK, BlockChunkRef, BlockRefV2, ChunkRef, DataRange, Directory, EntryV2, Extent,
    HASH_BLAKE3, HeaderBodyV2, HeaderFields, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE,
    KIND_HARDLINK, KIND_SYMLINK, MAX_BLOCK_CHUNK, MAX_CHUNKS, MAX_DIRECTORY, MAX_ENTRIES,
    MAX_EXTENTS, MAX_HINT_LEN, MAX_INDEX_CHUNK, MAX_INDEX_SECTION, MAX_PARENTS, MAX_PATH_LEN,
    MAX_RANGES, MAX_XATTR_NAME, MAX_XATTR_TOTAL, MAX_XATTR_VALUE, MAX_XATTRS, META_BLOCKS,
    META_DIRECTORY, META_FLAG_LAST, META_FLAG_ZSTD, META_INDEX, META_OVERHEAD, META_PREFIX,
    MIN_ENTRY_ENCODING, MIN_META_FRAME, ParentRef, SIGNATURE_LEN, SIGNER_ED25519, SignerDecl,
    TRAILER_LEN, TRAILER_MAGIC, TrailerV2, VERSION, Xattr, parent, path_cmp,
};
use crate::format::header::{
    HeaderError, MAGIC, MAX_BLOCK_SIZE, MAX_BODY_LEN, MAX_RECIPIENTS, MIN_BLOCK_SIZE,
    MIN_SEGMENT_SIZE, PREFIX_LEN, SUFFIX_LEN, Stanza,
};
use crate::format::{SUITE_V1, crc32c};
use crate::keys::SessionId;

/// Stanza label and job name bound, as v1 (§10).
const MAX_LABEL_LEN: usize = 256;
/// Wrapped key bound, as v1 (§10): a 16 384-bit RSA modulus.
const MAX_WRAPPED_LEN: usize = 2048;
/// Smallest block frame: 61 bytes of framing and one AES block (v2.6.3).
const MIN_BLOCK_FRAME: u64 = 77;
/// Smallest encodings, for bounding counts before allocating: a `ChunkRef` (three
/// one-byte varints, an empty path's length, the tag), a `BlockChunkRef`, a `BlockRefV2`,
/// a `ParentRef` (id, empty hint), an `Xattr` (two empty byte strings), a `DataRange`,
/// an `Extent`, a `Stanza` (scheme, fingerprint, empty label and key).
const MIN_CHUNK_REF: usize = 3 + 1 + 32;
const MIN_BLOCK_CHUNK_REF: usize = 3 + 32;
const MIN_BLOCK_REF: usize = 1 + 32;
const MIN_PARENT_REF: usize = 16 + 1;
const MIN_XATTR: usize = 2;
const MIN_RANGE: usize = 2;
const MIN_EXTENT: usize = 3;
const MIN_STANZA: usize = 1 + 32 + 1 + 1;
const MIN_COMMITMENT: usize = 32;

/// The allowed xattr namespaces (v2.7.2 rule 7).
const XATTR_NAMESPACES: [&[u8]; 4] = [b"user.", b"trusted.", b"security.", b"system."];

/// A postcard reader over one plaintext that bounds every count before allocating.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    /// Bytes consumed so far, given the original length.
    fn consumed(&self, total: usize) -> usize {
        total - self.rest.len()
    }

    fn take<T: DeserializeOwned>(&mut self, what: &str) -> Result<T, String> {
        let (v, rest) =
            postcard::take_from_bytes::<T>(self.rest).map_err(|e| format!("{what}: {e}"))?;
        self.rest = rest;
        Ok(v)
    }

    /// A sequence length (postcard: a usize varint, a u64 varint on 64-bit targets),
    /// refused when above `max` or when `min_each` bytes per element would not fit in the
    /// bytes left.
    fn count(&mut self, what: &str, max: usize, min_each: usize) -> Result<usize, String> {
        let n: u64 = self.take(what)?;
        let fits = (self.rest.len() / min_each.max(1)) as u64;
        if n > max as u64 {
            return Err(format!("{what}: {n} is more than the limit {max}"));
        }
        if n > fits {
            return Err(format!(
                "{what}: {n} claimed but only {} bytes are left",
                self.rest.len()
            ));
        }
        Ok(n as usize)
    }

    /// A byte string (postcard `Vec<u8>`): its length is checked against `max` and the
    /// bytes left before it is copied.
    fn bytes(&mut self, what: &str, max: usize) -> Result<Vec<u8>, String> {
        let n = self.count(what, max, 1)?;
        let (v, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(v.to_vec())
    }

    fn option(&mut self, what: &str) -> Result<bool, String> {
        match self.take::<u8>(what)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(format!("{what}: option tag {t}")),
        }
    }

    fn finish(&self, what: &str) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} trailing bytes after the {what}",
                self.rest.len()
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Header (v2.3, v2.10.2 step 5)

/// A v2 header read from disk: CRC and every bound checked, MAC not yet (that needs the
/// keys: `crate::seal::meta::header_v2_mac_ok`). Untrusted until then.
#[derive(Clone, Debug)]
pub struct RawHeaderV2 {
    /// Every byte of the header, MAC and CRC included.
    pub bytes: Vec<u8>,
    pub body: HeaderBodyV2,
    /// `r`: the length of the signed prefix of the body (fields 1–10), i.e. the offset of
    /// the recipients' count varint in the body.
    pub signed_len: usize,
}

impl RawHeaderV2 {
    /// Parse and check a whole header (`bytes` = prefix, body, 32-byte MAC, CRC).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, HeaderError> {
        let bad = |m: String| HeaderError::Malformed(m);
        if bytes.len() < PREFIX_LEN {
            return Err(bad("header too short".into()));
        }
        if bytes[..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let len = u32::from_le_bytes(bytes[10..14].try_into().unwrap());
        if len > MAX_BODY_LEN {
            return Err(HeaderError::BodyTooLarge(len));
        }
        let len = len as usize;
        if bytes.len() != PREFIX_LEN + len + SUFFIX_LEN {
            return Err(bad("header length mismatch".into()));
        }
        let crc_at = bytes.len() - 4;
        if crc32c(&bytes[..crc_at]) != u32::from_le_bytes(bytes[crc_at..].try_into().unwrap()) {
            return Err(HeaderError::Checksum);
        }
        let (body, signed_len) = decode_body(&bytes[PREFIX_LEN..PREFIX_LEN + len]).map_err(bad)?;
        check_body(&body).map_err(bad)?;
        Ok(RawHeaderV2 {
            bytes,
            body,
            signed_len,
        })
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes the MAC covers (prefix and body) and the stored tag.
    pub fn authenticated_and_tag(&self) -> (&[u8], &[u8]) {
        let mac_at = self.bytes.len() - SUFFIX_LEN;
        (&self.bytes[..mac_at], &self.bytes[mac_at..mac_at + 32])
    }

    /// `body[0, r)`: fields 1–10, the bytes a signature covers and `rekey` copies verbatim.
    pub fn signed_body(&self) -> &[u8] {
        &self.bytes[PREFIX_LEN..PREFIX_LEN + self.signed_len]
    }
}

/// Decode a header body field by field, so that `r` is known and every count is bounded
/// before anything is allocated.
fn decode_body(body: &[u8]) -> Result<(HeaderBodyV2, usize), String> {
    let mut c = Cursor::new(body);
    let session_id: SessionId = c.take("session id")?;
    let created_at: i64 = c.take("creation time")?;
    let job_name: String = {
        let b = c.bytes("job name", MAX_LABEL_LEN)?;
        String::from_utf8(b).map_err(|_| "job name is not UTF-8".to_string())?
    };
    let suite: u8 = c.take("suite")?;
    let block_size: u32 = c.take("block size")?;
    let segment_size: u32 = c.take("segment size")?;
    let compression: u8 = c.take("compression")?;
    let content_hash: u8 = c.take("content hash algorithm")?;
    let n = c.count("parents", MAX_PARENTS, MIN_PARENT_REF)?;
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        let session_id: SessionId = c.take("parent session id")?;
        let hint = c.bytes("parent hint", MAX_HINT_LEN)?;
        let hint = String::from_utf8(hint).map_err(|_| "parent hint is not UTF-8".to_string())?;
        chain.push(ParentRef { session_id, hint });
    }
    let signer: Option<SignerDecl> = c.take("signer")?;
    let r = c.consumed(body.len());
    let n = c.count("recipients", MAX_RECIPIENTS, MIN_STANZA)?;
    let mut recipients = Vec::with_capacity(n);
    for _ in 0..n {
        let scheme: u16 = c.take("stanza scheme")?;
        let fingerprint: [u8; 32] = c.take("stanza fingerprint")?;
        let label = c.bytes("stanza label", MAX_LABEL_LEN)?;
        let label =
            String::from_utf8(label).map_err(|_| "stanza label is not UTF-8".to_string())?;
        let wrapped_key = c.bytes("wrapped key", MAX_WRAPPED_LEN)?;
        recipients.push(Stanza {
            scheme,
            fingerprint,
            label,
            wrapped_key,
        });
    }
    c.finish("header body")?;
    let fields = HeaderFields {
        session_id,
        created_at,
        job_name,
        suite,
        block_size,
        segment_size,
        compression,
        content_hash,
        chain,
        signer,
    };
    Ok((HeaderBodyV2 { fields, recipients }, r))
}

/// Every bound of v2.3.1 (v2.10.2 step 5).
fn check_body(b: &HeaderBodyV2) -> Result<(), String> {
    let f = &b.fields;
    if f.suite != SUITE_V1 {
        return Err("unknown cipher suite".into());
    }
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&f.block_size) {
        return Err("block size out of range".into());
    }
    if f.segment_size < MIN_SEGMENT_SIZE
        || !f.segment_size.is_multiple_of(16)
        || f.segment_size > f.block_size
    {
        return Err("segment size out of range".into());
    }
    if f.compression > 1 {
        return Err("unknown compression".into());
    }
    if f.content_hash != HASH_BLAKE3 {
        return Err(format!("unknown content hash algorithm {}", f.content_hash));
    }
    if f.job_name.len() > MAX_LABEL_LEN {
        return Err("job name too long".into());
    }
    if f.chain.len() > MAX_PARENTS {
        return Err("too many parents".into());
    }
    for (i, p) in f.chain.iter().enumerate() {
        if p.session_id == f.session_id {
            return Err("the archive lists itself as its own parent".into());
        }
        if f.chain[..i].iter().any(|o| o.session_id == p.session_id) {
            return Err("a parent is listed twice".into());
        }
        if p.hint.len() > MAX_HINT_LEN {
            return Err("parent hint too long".into());
        }
    }
    if let Some(s) = &f.signer
        && s.scheme != SIGNER_ED25519
    {
        return Err(format!("unknown signature scheme {}", s.scheme));
    }
    if b.recipients.is_empty() || b.recipients.len() > MAX_RECIPIENTS {
        return Err("recipient count out of range".into());
    }
    for (i, s) in b.recipients.iter().enumerate() {
        if s.label.len() > MAX_LABEL_LEN || s.wrapped_key.len() > MAX_WRAPPED_LEN {
            return Err("recipient stanza too large".into());
        }
        if b.recipients[..i]
            .iter()
            .any(|o| o.fingerprint == s.fingerprint)
        {
            return Err("two recipient stanzas share one fingerprint".into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Trailer (v2.6.5, v2.10.2 step 6)

/// What [`TrailerV2::decode`] says when the last 44 bytes carry no trailer magic: the
/// file was cut off or never finished [`Truncated`], where any other error is damage.
pub const NO_TRAILER: &str = "no v2 trailer at the end of the file (truncated or not finished)";

impl TrailerV2 {
    /// Parse the last 44 bytes of a file: magic (else [`NO_TRAILER`]), then CRC32C.
    pub fn decode(bytes: &[u8; TRAILER_LEN]) -> Result<Self, &'static str> {
        if bytes[32..40] != TRAILER_MAGIC {
            return Err(NO_TRAILER);
        }
        if crc32c(&bytes[..40]) != u32::from_le_bytes(bytes[40..44].try_into().unwrap()) {
            return Err("trailer checksum mismatch");
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        Ok(TrailerV2 {
            index_offset: u64_at(0),
            index_len: u64_at(8),
            block_count: u64_at(16),
            directory_len: u32_at(24),
            signature_len: u32_at(28),
        })
    }
}

/// Step 6's checks of a decoded trailer against the file and header lengths; `signed` =
/// the header's `signer` is `Some`. Every failure is [`Corrupt`].
pub fn check_trailer(
    t: &TrailerV2,
    file_len: u64,
    header_len: u64,
    signed: bool,
) -> Result<(), String> {
    let room = header_len
        .checked_add(TRAILER_LEN as u64)
        .and_then(|n| file_len.checked_sub(n))
        .ok_or("the file is shorter than its header and trailer")?;
    let sections = t
        .index_offset
        .checked_add(t.index_len)
        .and_then(|n| n.checked_add(t.signature_len as u64));
    if sections != Some(room) {
        return Err(format!(
            "data, index and signature lengths do not add up to the {room} bytes between \
             header and trailer"
        ));
    }
    let want_sig = if signed { SIGNATURE_LEN } else { 0 };
    if t.signature_len != want_sig {
        return Err(format!(
            "signature section of {} bytes where {want_sig} are expected",
            t.signature_len
        ));
    }
    let max_dir = (MAX_DIRECTORY + META_OVERHEAD + 16) as u32;
    if !(MIN_META_FRAME as u32..=max_dir).contains(&t.directory_len) {
        return Err(format!("directory length {} out of range", t.directory_len));
    }
    if t.index_len < t.directory_len as u64 + MIN_META_FRAME as u64 {
        return Err("the index section holds no index chunk".into());
    }
    if t.index_len > MAX_INDEX_SECTION {
        return Err(format!("index section length {} out of range", t.index_len));
    }
    if (t.block_count == 0) != (t.index_offset == 0) {
        return Err("block count and data section length disagree".into());
    }
    if t.block_count > t.index_offset / MIN_BLOCK_FRAME {
        return Err(format!(
            "{} blocks cannot fit in {} bytes of data",
            t.block_count, t.index_offset
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Meta frame prefix (v2.6.1)

/// The plain fields at the start of a meta frame, bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaPrefix {
    pub ct_len: u32,
    pub raw_len: u32,
    pub kind: u8,
    pub flags: u8,
}

impl MetaPrefix {
    /// The whole frame's length: `62 + ct_len`.
    pub fn frame_len(&self) -> usize {
        META_OVERHEAD + self.ct_len as usize
    }

    pub fn is_last(&self) -> bool {
        self.flags & META_FLAG_LAST != 0
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & META_FLAG_ZSTD != 0
    }
}

/// `bound(kind)`: the largest plaintext of a meta frame kind; `None` for unknown kinds.
pub fn meta_bound(kind: u8) -> Option<usize> {
    match kind {
        META_INDEX => Some(MAX_INDEX_CHUNK),
        META_BLOCKS => Some(MAX_BLOCK_CHUNK),
        META_DIRECTORY => Some(MAX_DIRECTORY),
        _ => None,
    }
}

/// Parse and bound a meta frame's prefix; `expected_kind` is the kind the reader expects
/// at this position.
pub fn parse_meta_prefix(
    prefix: &[u8; META_PREFIX],
    expected_kind: u8,
) -> Result<MetaPrefix, String> {
    let ct_len = u32::from_le_bytes(prefix[0..4].try_into().unwrap());
    let raw_len = u32::from_le_bytes(prefix[4..8].try_into().unwrap());
    let kind = prefix[8];
    let flags = prefix[9];
    let bound = meta_bound(kind).ok_or_else(|| format!("unknown meta frame kind {kind}"))?;
    if kind != expected_kind {
        return Err(format!(
            "meta frame of kind {kind} where kind {expected_kind} is expected"
        ));
    }
    if raw_len == 0 || raw_len as usize > bound {
        return Err(format!(
            "meta frame plaintext length {raw_len} out of range"
        ));
    }
    if ct_len < 16 || ct_len as usize > bound + 16 || !ct_len.is_multiple_of(16) {
        return Err(format!(
            "meta frame ciphertext length {ct_len} out of range"
        ));
    }
    if flags & !(META_FLAG_ZSTD | META_FLAG_LAST) != 0 {
        return Err(format!("unknown meta frame flags {flags:#04x}"));
    }
    Ok(MetaPrefix {
        ct_len,
        raw_len,
        kind,
        flags,
    })
}

// ---------------------------------------------------------------------------------------
// Directory (v2.6.4, v2.10.2 step 12) and block-table chunks (v2.6.3, step 16)

/// `ceil(a / b)` for b > 0.
fn ceil_div(a: u64, b: u64) -> u64 {
    a / b + u64::from(!a.is_multiple_of(b))
}

/// Step 12 after the directory opened: `h` is the (authenticated) header, `t` the trailer
/// already passed by [`check_trailer`].
pub fn check_directory(d: &Directory, t: &TrailerV2, h: &HeaderFields) -> Result<(), String> {
    if d.chunks.is_empty() || d.chunks.len() > MAX_CHUNKS {
        return Err(format!("{} index chunks out of range", d.chunks.len()));
    }
    let overflow = || "frame offsets overflow".to_string();
    let mut pos = t.index_offset;
    let mut entries: u64 = 0;
    let max_chunk = (MAX_INDEX_CHUNK + META_OVERHEAD + 16) as u32;
    for (k, c) in d.chunks.iter().enumerate() {
        if c.offset != pos {
            return Err(format!(
                "index chunk {k} at data offset {} where {pos} is expected",
                c.offset
            ));
        }
        if !(MIN_META_FRAME as u32..=max_chunk).contains(&c.frame_len) {
            return Err(format!(
                "index chunk {k}: frame length {} out of range",
                c.frame_len
            ));
        }
        if c.entry_count == 0 {
            return Err(format!("index chunk {k} holds no entry"));
        }
        pos = pos.checked_add(c.frame_len as u64).ok_or_else(overflow)?;
        entries += c.entry_count as u64;
        if let Err(reason) = check_path(&c.first_path) {
            return Err(format!("index chunk {k}: first path is unsafe: {reason}"));
        }
        if k > 0 && path_cmp(&d.chunks[k - 1].first_path, &c.first_path).is_ge() {
            return Err(format!(
                "index chunk {k}: first path does not follow the previous chunk's"
            ));
        }
    }
    if entries != d.entry_count || d.entry_count > MAX_ENTRIES {
        return Err(format!(
            "entry count {} does not match the chunks' {entries}",
            d.entry_count
        ));
    }
    let want_block_chunks = ceil_div(t.block_count, BLOCKS_PER_CHUNK as u64);
    if d.block_chunks.len() as u64 != want_block_chunks {
        return Err(format!(
            "{} block-table chunks for {} blocks",
            d.block_chunks.len(),
            t.block_count
        ));
    }
    let max_block_chunk = (MAX_BLOCK_CHUNK + META_OVERHEAD + 16) as u32;
    for (k, b) in d.block_chunks.iter().enumerate() {
        if b.offset != pos {
            return Err(format!(
                "block-table chunk {k} at data offset {} where {pos} is expected",
                b.offset
            ));
        }
        if !(MIN_META_FRAME as u32..=max_block_chunk).contains(&b.frame_len) {
            return Err(format!(
                "block-table chunk {k}: frame length {} out of range",
                b.frame_len
            ));
        }
        pos = pos.checked_add(b.frame_len as u64).ok_or_else(overflow)?;
        let first_ok = match k {
            0 => b.first_block_offset == 0,
            _ => b.first_block_offset > d.block_chunks[k - 1].first_block_offset,
        };
        if !first_ok || b.first_block_offset >= t.index_offset {
            return Err(format!(
                "block-table chunk {k}: first block offset {} out of place",
                b.first_block_offset
            ));
        }
    }
    let directory_at = t
        .index_offset
        .checked_add(t.index_len)
        .and_then(|n| n.checked_sub(t.directory_len as u64))
        .ok_or_else(overflow)?;
    if pos != directory_at {
        return Err(format!(
            "the index section's frames end at {pos}, the directory starts at {directory_at}"
        ));
    }
    if ceil_div(d.stream_len, h.block_size as u64) != t.block_count {
        return Err(format!(
            "a stream of {} bytes is not {} blocks",
            d.stream_len, t.block_count
        ));
    }
    if d.parent_commitments.len() != h.chain.len() {
        return Err(format!(
            "{} parent commitments for {} parents",
            d.parent_commitments.len(),
            h.chain.len()
        ));
    }
    Ok(())
}

/// Step 16 for block-table chunk `k`, after it opened and decoded into `records`.
pub fn check_block_chunk(
    records: &[BlockRefV2],
    k: usize,
    d: &Directory,
    t: &TrailerV2,
    block_size: u32,
) -> Result<(), String> {
    let m = d.block_chunks.len();
    let Some(this) = d.block_chunks.get(k) else {
        return Err(format!("block-table chunk {k} is not in the directory"));
    };
    let want = if k + 1 < m {
        BLOCKS_PER_CHUNK as u64
    } else {
        // Wraps only if the directory did not pass `check_directory`: refused below then.
        t.block_count
            .wrapping_sub((BLOCKS_PER_CHUNK as u64).wrapping_mul(m as u64 - 1))
    };
    if records.len() as u64 != want {
        return Err(format!(
            "block-table chunk {k} holds {} records where {want} are expected",
            records.len()
        ));
    }
    let max_frame = block_size as u64 + MIN_BLOCK_FRAME;
    let mut end = this.first_block_offset;
    for (i, r) in records.iter().enumerate() {
        if !(MIN_BLOCK_FRAME..=max_frame).contains(&(r.frame_len as u64)) {
            return Err(format!(
                "block-table chunk {k}, record {i}: frame length {} out of range",
                r.frame_len
            ));
        }
        end = end
            .checked_add(r.frame_len as u64)
            .ok_or_else(|| format!("block-table chunk {k}: block offsets overflow"))?;
    }
    let next = match d.block_chunks.get(k + 1) {
        Some(n) => n.first_block_offset,
        None => t.index_offset,
    };
    if end != next {
        return Err(format!(
            "block-table chunk {k}'s blocks end at {end}, the next start at {next}"
        ));
    }
    Ok(())
}

mod entries;
pub use entries::*;

#[cfg(test)]
mod entry_tests;
#[cfg(test)]
pub(crate) mod tests;
