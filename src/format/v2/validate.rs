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
    HASH_SHA256, HeaderBodyV2, HeaderFields, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_FILE,
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
    if f.content_hash != HASH_SHA256 {
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

// ---------------------------------------------------------------------------------------
// Entries (v2.7.2)

/// Why an entry was refused: [`EntryError::Unsafe`] = [`UnsafePath`] (outside the target,
/// through a non-folder, or twice), [`EntryError::Corrupt`] every other rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    Unsafe { path: Vec<u8>, reason: String },
    Corrupt(String),
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::Unsafe { path, reason } => {
                write!(f, "unsafe path \"{}\": {reason}", path.escape_ascii())
            }
            EntryError::Corrupt(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EntryError {}

fn unsafe_path(path: &[u8], reason: impl Into<String>) -> EntryError {
    EntryError::Unsafe {
        path: path.to_vec(),
        reason: reason.into(),
    }
}

/// Rule 1: a relative, `/`-separated path that stays inside the target. Bytes, not UTF-8:
/// a non-UTF-8 name is valid.
pub fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path longer than 4096 bytes");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    if cfg!(windows) && path.contains(&b'\\') {
        return Err("backslash in path");
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty path component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Validates the entries of index chunk `k`, in order, against v2.7.2 rules 1, 2 and 4–9.
/// Rule 3 (the parent is a folder) is [`Ancestors`]'; the kind of a hard link's target
/// (entry `t`, rule 6) is the caller's to check, since entry `t` may sit in another chunk.
pub struct ChunkCheck<'a> {
    k: usize,
    first_path: &'a [u8],
    expected_count: u32,
    next_first: Option<&'a [u8]>,
    chain_len: usize,
    stream_len: u64,
    prev: Option<Vec<u8>>,
    seen: u32,
}

impl<'a> ChunkCheck<'a> {
    /// `k` must be a chunk of `d` (the caller iterates over `d.chunks`); `chain_len` =
    /// `|chain|` of the header.
    pub fn new(k: usize, d: &'a Directory, chain_len: usize) -> Self {
        let c: &ChunkRef = &d.chunks[k];
        ChunkCheck {
            k,
            first_path: &c.first_path,
            expected_count: c.entry_count,
            next_first: d.chunks.get(k + 1).map(|n| n.first_path.as_slice()),
            chain_len,
            stream_len: d.stream_len,
            prev: None,
            seen: 0,
        }
    }

    /// Check the next entry of the chunk; `number` is its global entry number (chunk `k`'s
    /// first entry is `Σ entry_count` of the chunks before it). For a hard link this checks
    /// `t < number` and that the link carries no metadata; that entry `t` is a file,
    /// symlink, FIFO or device is left to the caller, which may have to open another chunk.
    pub fn check(&mut self, e: &EntryV2, number: u64) -> Result<(), EntryError> {
        let corrupt = |m: String| {
            EntryError::Corrupt(format!(
                "entry {number} (\"{}\"): {m}",
                e.path.escape_ascii()
            ))
        };
        // 1. path
        check_path(&e.path).map_err(|r| unsafe_path(&e.path, r))?;
        // 2. order
        match &self.prev {
            None => {
                if e.path != self.first_path {
                    return Err(corrupt(format!(
                        "index chunk {} does not start with the path the directory records",
                        self.k
                    )));
                }
            }
            Some(prev) => {
                if e.path == *prev {
                    return Err(unsafe_path(&e.path, "duplicate entry"));
                }
                if path_cmp(&e.path, prev).is_lt() {
                    return Err(corrupt("entries out of order".into()));
                }
            }
        }
        // 4.–9.
        check_fields(e, number, self.chain_len, self.stream_len).map_err(corrupt)?;
        self.prev = Some(e.path.clone());
        self.seen += 1;
        Ok(())
    }

    /// After the chunk's last entry: `count` = the number of entries the chunk held. It
    /// must equal `ChunkRef.entry_count` (and every entry must have passed [`Self::check`]);
    /// the last path must come before the next chunk's `first_path`.
    pub fn finish(self, count: u32) -> Result<(), EntryError> {
        if count != self.expected_count || self.seen != count {
            return Err(EntryError::Corrupt(format!(
                "index chunk {} holds {count} entries, the directory says {}",
                self.k, self.expected_count
            )));
        }
        if let (Some(last), Some(next)) = (&self.prev, self.next_first) {
            if last == next {
                return Err(unsafe_path(last, "duplicate entry"));
            }
            if path_cmp(last, next).is_gt() {
                return Err(EntryError::Corrupt(format!(
                    "index chunk {}'s last entry comes after the next chunk's first",
                    self.k
                )));
            }
        }
        Ok(())
    }
}

/// Rules 4–9 of one entry.
fn check_fields(e: &EntryV2, number: u64, chain_len: usize, stream_len: u64) -> Result<(), String> {
    // 4. kind
    if e.kind > KIND_BLOCK {
        return Err(format!("unknown kind {}", e.kind));
    }
    // 5. common bounds
    if e.mode > 0o7777 {
        return Err(format!("mode {:#o} out of range", e.mode));
    }
    if e.mtime_nsec >= 1_000_000_000 {
        return Err("nanoseconds out of range".into());
    }
    // 6. fields by kind: everything not stated is "empty".
    let file = e.kind == KIND_FILE;
    let device = e.kind == KIND_CHAR || e.kind == KIND_BLOCK;
    if !file && (e.size != 0 || e.data_ranges.is_some() || !e.extents.is_empty()) {
        return Err("size, data ranges or extents on an entry that is not a file".into());
    }
    if file != e.content_hash.is_some() {
        return Err("a file has no content hash, or another kind has one".into());
    }
    if !device && (e.rdev_major != 0 || e.rdev_minor != 0) {
        return Err("device numbers on an entry that is not a device".into());
    }
    match (&e.link_target, e.kind) {
        (None, KIND_SYMLINK) => return Err("symlink without a target".into()),
        (Some(t), KIND_SYMLINK) => {
            if t.is_empty() || t.len() > MAX_PATH_LEN || t.contains(&0) {
                return Err("symlink target empty, too long or holding a NUL byte".into());
            }
        }
        (Some(_), _) => return Err("link target on an entry that is not a symlink".into()),
        (None, _) => {}
    }
    match (e.hardlink_to, e.kind) {
        (None, KIND_HARDLINK) => return Err("hard link without a target".into()),
        (Some(t), KIND_HARDLINK) => {
            if t >= number {
                return Err(format!("hard link to entry {t}, not an earlier one"));
            }
            if e.mode != 0 || e.uid != 0 || e.gid != 0 || e.mtime_sec != 0 || e.mtime_nsec != 0 {
                return Err("hard link with metadata of its own".into());
            }
            if !e.xattrs.is_empty() {
                return Err("hard link with extended attributes".into());
            }
        }
        (Some(_), _) => return Err("hard-link target on an entry that is not a hard link".into()),
        (None, _) => {}
    }
    debug_assert!(matches!(
        e.kind,
        KIND_FILE | KIND_DIR | KIND_SYMLINK | KIND_HARDLINK | KIND_FIFO | KIND_CHAR | KIND_BLOCK
    ));
    // 7. xattrs
    check_xattrs(&e.xattrs)?;
    if file {
        // 8. data ranges
        if let Some(ranges) = &e.data_ranges {
            check_ranges(ranges, e.size)?;
        }
        // 9. extents
        check_extents(&e.extents, e.data_len(), chain_len, stream_len)?;
    }
    Ok(())
}

fn check_xattrs(xattrs: &[Xattr]) -> Result<(), String> {
    if xattrs.len() > MAX_XATTRS {
        return Err(format!(
            "{} extended attributes, more than {MAX_XATTRS}",
            xattrs.len()
        ));
    }
    let mut total = 0usize;
    for (i, x) in xattrs.iter().enumerate() {
        if x.name.is_empty() || x.name.len() > MAX_XATTR_NAME || x.name.contains(&0) {
            return Err("extended attribute name empty, too long or holding a NUL byte".into());
        }
        if !XATTR_NAMESPACES.iter().any(|ns| x.name.starts_with(ns)) {
            return Err(format!(
                "extended attribute \"{}\" outside the user, trusted, security and system \
                 namespaces",
                x.name.escape_ascii()
            ));
        }
        if i > 0 && xattrs[i - 1].name >= x.name {
            return Err("extended attribute names not strictly increasing".into());
        }
        if x.value.len() > MAX_XATTR_VALUE {
            return Err("extended attribute value longer than 65 536 bytes".into());
        }
        total += x.name.len() + x.value.len();
        if total > MAX_XATTR_TOTAL {
            return Err("extended attributes larger than 262 144 bytes in all".into());
        }
    }
    Ok(())
}

fn check_ranges(ranges: &[DataRange], size: u64) -> Result<(), String> {
    if ranges.len() > MAX_RANGES {
        return Err(format!(
            "{} data ranges, more than {MAX_RANGES}",
            ranges.len()
        ));
    }
    // The first range may start at 0; every later one at least one byte after the
    // previous end (adjacent ranges are one range).
    let mut min_start = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let end = r.offset.checked_add(r.len);
        if r.len == 0 || end.is_none_or(|end| end > size) {
            return Err(format!("data range {i} empty or past the file's size"));
        }
        if r.offset < min_start {
            return Err(format!(
                "data range {i} overlaps, touches or precedes the previous"
            ));
        }
        min_start = end.unwrap().saturating_add(1);
    }
    Ok(())
}

fn check_extents(
    extents: &[Extent],
    data_len: u64,
    chain_len: usize,
    stream_len: u64,
) -> Result<(), String> {
    if extents.len() > MAX_EXTENTS {
        return Err(format!(
            "{} extents, more than {MAX_EXTENTS}",
            extents.len()
        ));
    }
    let mut sum = 0u64;
    for (i, x) in extents.iter().enumerate() {
        let end = x.offset.checked_add(x.len);
        if x.len == 0 || end.is_none() {
            return Err(format!("extent {i} empty or overflowing"));
        }
        if x.archive as usize > chain_len {
            return Err(format!(
                "extent {i} names archive {}, not in the chain",
                x.archive
            ));
        }
        // An extent into a parent is checked against that parent's stream length when its
        // directory is read (v2.8.2), before any byte of it is used.
        if x.archive == 0 && end.is_some_and(|end| end > stream_len) {
            return Err(format!("extent {i} ends past this archive's stream"));
        }
        sum = sum
            .checked_add(x.len)
            .ok_or_else(|| "extent lengths overflow".to_string())?;
    }
    if sum != data_len {
        return Err(format!(
            "extents hold {sum} bytes, the file's data is {data_len}"
        ));
    }
    Ok(())
}

/// Rule 3 for a reader that goes through entries in path order: the stack of the current
/// entry's ancestors, each with its kind. Path order puts a folder right before its
/// subtree, so popping every entry that is not an ancestor of the next one leaves exactly
/// its ancestors; memory is one path's depth.
///
/// Every entry is pushed, not only folders, so that "the parent is a symlink" is told from
/// "the parent is missing"; a non-folder is popped by the next entry not under it.
#[derive(Debug, Default)]
pub struct Ancestors {
    stack: Vec<(Vec<u8>, u8)>,
}

/// Whether `anc` is a proper ancestor of `path` (a prefix ending at a `/`).
fn is_ancestor(anc: &[u8], path: &[u8]) -> bool {
    path.len() > anc.len() && path.starts_with(anc) && path[anc.len()] == b'/'
}

impl Ancestors {
    pub fn new() -> Self {
        Ancestors::default()
    }

    fn pop_to(&mut self, path: &[u8]) {
        while self
            .stack
            .last()
            .is_some_and(|(a, _)| !is_ancestor(a, path))
        {
            self.stack.pop();
        }
    }

    /// Rule 3 for `e` (entries given in path order): if its path has a parent, that parent
    /// is an entry of kind folder. Then `e` becomes a possible ancestor of what follows.
    pub fn check_parent(&mut self, e: &EntryV2) -> Result<(), EntryError> {
        self.pop_to(&e.path);
        if let Some(p) = parent(&e.path) {
            match self.stack.last() {
                Some((a, kind)) if a.as_slice() == p => {
                    if *kind != KIND_DIR {
                        return Err(unsafe_path(&e.path, "its parent is not a folder"));
                    }
                }
                _ => {
                    return Err(unsafe_path(
                        &e.path,
                        "its parent folder is not in the archive",
                    ));
                }
            }
        }
        self.stack.push((e.path.clone(), e.kind));
        Ok(())
    }

    /// Seed a folder the caller looked up itself (an out-of-order reader starting inside
    /// the index: the folders above the first entry it reads, outermost first).
    pub fn push_known(&mut self, path: Vec<u8>) {
        self.pop_to(&path);
        self.stack.push((path, KIND_DIR));
    }
}

// ---------------------------------------------------------------------------------------
// Meta frame plaintexts

fn decode_entry(c: &mut Cursor) -> Result<EntryV2, String> {
    // Byte strings are bounded only by the bytes left (they cannot allocate more than the
    // plaintext holds), so that an over-long path is still refused by rule 1 as
    // [`UnsafePath`]; sequences of structs by their limit as well, since those grow in
    // memory beyond their encoding.
    let path = c.bytes("path", usize::MAX)?;
    let kind = c.take("kind")?;
    let mode = c.take("mode")?;
    let uid = c.take("uid")?;
    let gid = c.take("gid")?;
    let mtime_sec = c.take("mtime")?;
    let mtime_nsec = c.take("mtime nanoseconds")?;
    let size = c.take("size")?;
    let rdev_major = c.take("rdev major")?;
    let rdev_minor = c.take("rdev minor")?;
    let link_target = match c.option("link target")? {
        true => Some(c.bytes("link target", usize::MAX)?),
        false => None,
    };
    let hardlink_to = c.take("hard-link target")?;
    let n = c.count("extended attributes", MAX_XATTRS, MIN_XATTR)?;
    let mut xattrs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = c.bytes("extended attribute name", MAX_XATTR_NAME)?;
        let value = c.bytes("extended attribute value", MAX_XATTR_VALUE)?;
        xattrs.push(Xattr { name, value });
    }
    let data_ranges = match c.option("data ranges")? {
        true => {
            let n = c.count("data ranges", MAX_RANGES, MIN_RANGE)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.take::<DataRange>("data range")?);
            }
            Some(v)
        }
        false => None,
    };
    let n = c.count("extents", MAX_EXTENTS, MIN_EXTENT)?;
    let mut extents = Vec::with_capacity(n);
    for _ in 0..n {
        extents.push(c.take::<Extent>("extent")?);
    }
    let content_hash = c.take("content hash")?;
    Ok(EntryV2 {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime_sec,
        mtime_nsec,
        size,
        rdev_major,
        rdev_minor,
        link_target,
        hardlink_to,
        xattrs,
        data_ranges,
        extents,
        content_hash,
    })
}

/// Decode an index chunk's plaintext (`Vec<EntryV2>`), consumed exactly. The count is
/// refused before allocating when it exceeds the bytes left divided by 17 (v2.7.2).
pub fn decode_chunk(plain: &[u8]) -> Result<Vec<EntryV2>, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("entry count", usize::MAX, MIN_ENTRY_ENCODING)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(decode_entry(&mut c).map_err(|e| format!("entry {i} of the chunk: {e}"))?);
    }
    c.finish("index chunk")?;
    Ok(out)
}

/// Decode a block-table chunk's plaintext (`Vec<BlockRefV2>`), consumed exactly.
pub fn decode_block_chunk(plain: &[u8]) -> Result<Vec<BlockRefV2>, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("block record count", BLOCKS_PER_CHUNK, MIN_BLOCK_REF)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.take::<BlockRefV2>("block record")?);
    }
    c.finish("block-table chunk")?;
    Ok(out)
}

/// Decode the directory's plaintext, consumed exactly.
pub fn decode_directory(plain: &[u8]) -> Result<Directory, String> {
    let mut c = Cursor::new(plain);
    let n = c.count("index chunk count", MAX_CHUNKS, MIN_CHUNK_REF)?;
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let offset = c.take("chunk offset")?;
        let frame_len = c.take("chunk frame length")?;
        let entry_count = c.take("chunk entry count")?;
        let first_path = c.bytes("chunk first path", usize::MAX)?;
        let tag = c.take("chunk tag")?;
        chunks.push(ChunkRef {
            offset,
            frame_len,
            entry_count,
            first_path,
            tag,
        });
    }
    let n = c.count("block-table chunk count", usize::MAX, MIN_BLOCK_CHUNK_REF)?;
    let mut block_chunks = Vec::with_capacity(n);
    for _ in 0..n {
        block_chunks.push(c.take::<BlockChunkRef>("block-table chunk reference")?);
    }
    let entry_count = c.take("entry count")?;
    let stream_len = c.take("stream length")?;
    let n = c.count("parent commitments", MAX_PARENTS, MIN_COMMITMENT)?;
    let mut parent_commitments = Vec::with_capacity(n);
    for _ in 0..n {
        parent_commitments.push(c.take::<[u8; 32]>("parent commitment")?);
    }
    let totals = c.take("totals")?;
    c.finish("directory")?;
    Ok(Directory {
        chunks,
        block_chunks,
        entry_count,
        stream_len,
        parent_commitments,
        totals,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::header::{STANZA_RSA_OAEP_SHA256, close};
    use crate::format::v2::{KIND_FIFO, TotalsV2};

    pub(crate) fn sample_body() -> HeaderBodyV2 {
        HeaderBodyV2 {
            fields: HeaderFields {
                session_id: [0xb0; 16],
                created_at: 1_764_460_800,
                job_name: "home".into(),
                suite: SUITE_V1,
                block_size: 65_536,
                segment_size: 16_384,
                compression: 1,
                content_hash: HASH_SHA256,
                chain: vec![ParentRef {
                    session_id: [0xa0; 16],
                    hint: "home-20261129T010000Z-a0a1a2a3.coffer".into(),
                }],
                signer: Some(SignerDecl {
                    scheme: SIGNER_ED25519,
                    fingerprint: [4; 32],
                }),
            },
            recipients: vec![Stanza {
                scheme: STANZA_RSA_OAEP_SHA256,
                fingerprint: [1; 32],
                label: "ops".into(),
                wrapped_key: vec![5; 384],
            }],
        }
    }

    fn header_bytes(b: &HeaderBodyV2) -> Vec<u8> {
        let mut bytes = b.encode_unsealed();
        close(&mut bytes, &[6; 32]);
        bytes
    }

    /// A header whose body is `body` verbatim, closed with a right length and CRC.
    fn header_with_body(body: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        close(&mut bytes, &[6; 32]);
        bytes
    }

    fn malformed(b: &HeaderBodyV2) -> bool {
        matches!(
            RawHeaderV2::parse(header_bytes(b)),
            Err(HeaderError::Malformed(_))
        )
    }

    #[test]
    fn header_round_trip_and_signed_prefix() {
        let b = sample_body();
        let bytes = header_bytes(&b);
        let raw = RawHeaderV2::parse(bytes.clone()).unwrap();
        assert_eq!(raw.body, b);
        assert_eq!(raw.len(), bytes.len() as u64);
        let (body, r) = b.encode();
        assert_eq!(raw.signed_len, r);
        assert_eq!(raw.signed_body(), &body[..r]);
        assert_eq!(raw.signed_body(), postcard::to_stdvec(&b.fields).unwrap());
        let (auth, tag) = raw.authenticated_and_tag();
        assert_eq!(auth, &bytes[..bytes.len() - 36]);
        assert_eq!(tag, &[6; 32]);
        // The unsigned, full form too.
        let mut b = sample_body();
        b.fields.chain.clear();
        b.fields.signer = None;
        assert_eq!(RawHeaderV2::parse(header_bytes(&b)).unwrap().body, b);
    }

    #[test]
    fn header_prefix_checksum_and_length() {
        let bytes = header_bytes(&sample_body());
        for (version, want) in [(1u16, 1u16), (3, 3)] {
            let mut b = bytes.clone();
            b[8..10].copy_from_slice(&version.to_le_bytes());
            assert_eq!(
                RawHeaderV2::parse(b).unwrap_err(),
                HeaderError::UnsupportedVersion(want)
            );
        }
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert_eq!(RawHeaderV2::parse(b).unwrap_err(), HeaderError::BadMagic);
        let mut b = bytes.clone();
        b[10..14].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
        assert_eq!(
            RawHeaderV2::parse(b).unwrap_err(),
            HeaderError::BodyTooLarge(MAX_BODY_LEN + 1)
        );
        let mut b = bytes.clone();
        b.pop();
        assert!(matches!(
            RawHeaderV2::parse(b),
            Err(HeaderError::Malformed(_))
        ));
        for i in 14..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_eq!(
                RawHeaderV2::parse(b).unwrap_err(),
                HeaderError::Checksum,
                "flip at {i}"
            );
        }
        // Trailing bytes after the recipients, with a right length and CRC.
        let (mut body, _) = sample_body().encode();
        body.push(0);
        assert!(matches!(
            RawHeaderV2::parse(header_with_body(&body)),
            Err(HeaderError::Malformed(m)) if m.contains("trailing")
        ));
    }

    #[test]
    fn header_field_rules() {
        type Edit = fn(&mut HeaderBodyV2);
        let edits: &[(&str, Edit)] = &[
            ("suite", |b| b.fields.suite = 2),
            ("block small", |b| b.fields.block_size = MIN_BLOCK_SIZE - 1),
            ("block large", |b| b.fields.block_size = MAX_BLOCK_SIZE + 1),
            ("segment small", |b| b.fields.segment_size = 4080),
            ("segment odd", |b| b.fields.segment_size = 4100),
            ("segment > block", |b| b.fields.segment_size = 65_536 + 16),
            ("compression", |b| b.fields.compression = 2),
            ("hash 0", |b| b.fields.content_hash = 0),
            ("hash blake3", |b| b.fields.content_hash = 2),
            ("self parent", |b| b.fields.chain[0].session_id = [0xb0; 16]),
            ("duplicate parent", |b| {
                let p = b.fields.chain[0].clone();
                b.fields.chain.push(p)
            }),
            ("257 parents", |b| {
                b.fields.chain = (0..=MAX_PARENTS)
                    .map(|i| ParentRef {
                        session_id: [
                            i as u8,
                            (i >> 8) as u8,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                            7,
                        ],
                        hint: String::new(),
                    })
                    .collect()
            }),
            ("hint", |b| b.fields.chain[0].hint = "h".repeat(256)),
            ("signer", |b| b.fields.signer.as_mut().unwrap().scheme = 2),
            ("no recipient", |b| b.recipients.clear()),
            ("65 recipients", |b| {
                let s = b.recipients[0].clone();
                b.recipients = (0..=MAX_RECIPIENTS)
                    .map(|i| Stanza {
                        fingerprint: [i as u8; 32],
                        ..s.clone()
                    })
                    .collect()
            }),
            ("same fingerprint", |b| {
                let s = b.recipients[0].clone();
                b.recipients.push(s)
            }),
            ("label", |b| b.recipients[0].label = "l".repeat(257)),
            ("wrapped", |b| b.recipients[0].wrapped_key = vec![1; 2049]),
            ("job name", |b| b.fields.job_name = "j".repeat(257)),
        ];
        for (what, edit) in edits {
            let mut b = sample_body();
            edit(&mut b);
            assert!(malformed(&b), "{what} accepted");
        }
        // The largest values allowed pass.
        let mut b = sample_body();
        b.fields.chain[0].hint = "h".repeat(255);
        b.fields.job_name = "j".repeat(256);
        b.recipients[0].label = "l".repeat(256);
        b.recipients[0].wrapped_key = vec![1; 2048];
        assert!(RawHeaderV2::parse(header_bytes(&b)).is_ok());
    }

    #[test]
    fn trailer_round_trip_flips_and_missing_magic() {
        let t = TrailerV2 {
            index_offset: 1,
            index_len: 2,
            block_count: 3,
            directory_len: 4,
            signature_len: 72,
        };
        let bytes = t.encode();
        assert_eq!(TrailerV2::decode(&bytes), Ok(t));
        for i in 0..TRAILER_LEN {
            let mut b = bytes;
            b[i] ^= 0x80;
            let err = TrailerV2::decode(&b).unwrap_err();
            assert_eq!(err == NO_TRAILER, (32..40).contains(&i), "flip at {i}");
        }
    }

    /// A consistent layout: 4 blocks (stream 208 292 bytes in 64 KiB blocks), two index
    /// chunks, one block-table chunk, the directory.
    pub(crate) fn layout() -> (Directory, TrailerV2, HeaderFields) {
        let h = sample_body().fields;
        let index_offset = 4 * 65_613;
        let tag = [0; 32];
        let d = Directory {
            chunks: vec![
                ChunkRef {
                    offset: index_offset,
                    frame_len: 1000,
                    entry_count: 6,
                    first_path: b"t".to_vec(),
                    tag,
                },
                ChunkRef {
                    offset: index_offset + 1000,
                    frame_len: 510,
                    entry_count: 1,
                    first_path: b"u".to_vec(),
                    tag,
                },
            ],
            block_chunks: vec![BlockChunkRef {
                offset: index_offset + 1510,
                frame_len: 222,
                first_block_offset: 0,
                tag,
            }],
            entry_count: 7,
            stream_len: 208_292,
            parent_commitments: vec![[9; 32]],
            totals: TotalsV2::default(),
        };
        let t = TrailerV2 {
            index_offset,
            index_len: 1510 + 222 + 318,
            block_count: 4,
            directory_len: 318,
            signature_len: 72,
        };
        (d, t, h)
    }

    #[test]
    fn trailer_rules() {
        let (_, t, _) = layout();
        let h = 1000u64;
        let file_len = h + t.index_offset + t.index_len + 72 + 44;
        assert_eq!(check_trailer(&t, file_len, h, true), Ok(()));
        assert!(check_trailer(&t, file_len + 1, h, true).is_err());
        assert!(check_trailer(&t, 10, h, true).is_err());
        // Declared signer without a section, and a section without a signer.
        assert!(check_trailer(&t, file_len, h, false).is_err());
        let mut u = t;
        u.signature_len = 0;
        assert!(check_trailer(&u, file_len - 72, h, true).is_err());
        assert_eq!(check_trailer(&u, file_len - 72, h, false), Ok(()));
        type Edit = fn(&mut TrailerV2);
        let edits: &[(&str, Edit)] = &[
            ("directory short", |t| t.directory_len = 77),
            ("directory long", |t| t.directory_len = 16_777_295),
            ("no chunk", |t| t.directory_len = (t.index_len - 77) as u32),
            ("blocks without data", |t| t.block_count = 0),
            ("too many blocks", |t| {
                t.block_count = t.index_offset / 77 + 1
            }),
            ("overflow", |t| t.index_offset = u64::MAX),
        ];
        for (what, edit) in edits {
            let mut u = t;
            edit(&mut u);
            let fl = (h + u.index_offset.wrapping_add(u.index_len) + 72 + 44).max(file_len);
            assert!(check_trailer(&u, fl, h, true).is_err(), "{what} accepted");
            assert!(
                check_trailer(&u, file_len, h, true).is_err(),
                "{what} accepted"
            );
        }
        // Data without blocks.
        let mut u = t;
        u.index_offset = 0;
        let fl = h + u.index_len + 72 + 44;
        assert!(check_trailer(&u, fl, h, true).is_err());
        u.block_count = 0;
        assert_eq!(check_trailer(&u, fl, h, true), Ok(()));
        let mut u = t;
        u.index_len = MAX_INDEX_SECTION + 1;
        let fl = h + u.index_offset + u.index_len + 72 + 44;
        assert!(check_trailer(&u, fl, h, true).is_err());
        let mut u = t;
        u.directory_len = 16_777_294;
        u.index_len = 16_777_294 + 78;
        let fl = h + u.index_offset + u.index_len + 72 + 44;
        assert_eq!(check_trailer(&u, fl, h, true), Ok(()));
    }

    fn prefix(ct_len: u32, raw_len: u32, kind: u8, flags: u8) -> [u8; META_PREFIX] {
        let mut p = [0u8; META_PREFIX];
        p[0..4].copy_from_slice(&ct_len.to_le_bytes());
        p[4..8].copy_from_slice(&raw_len.to_le_bytes());
        p[8] = kind;
        p[9] = flags;
        p
    }

    #[test]
    fn meta_prefix_bounds() {
        let ok =
            parse_meta_prefix(&prefix(32, 20, META_INDEX, META_FLAG_LAST), META_INDEX).unwrap();
        assert_eq!(ok.frame_len(), 94);
        assert!(ok.is_last() && !ok.is_compressed());
        for (kind, bound) in [
            (META_INDEX, MAX_INDEX_CHUNK),
            (META_BLOCKS, MAX_BLOCK_CHUNK),
            (META_DIRECTORY, MAX_DIRECTORY),
        ] {
            let b = bound as u32;
            assert!(parse_meta_prefix(&prefix(b + 16, b, kind, 3), kind).is_ok());
            assert!(parse_meta_prefix(&prefix(b + 32, b, kind, 0), kind).is_err());
            assert!(parse_meta_prefix(&prefix(b + 16, b + 1, kind, 0), kind).is_err());
        }
        let bad = [
            prefix(32, 20, 0, 0),
            prefix(32, 20, 4, 0),
            prefix(32, 20, META_BLOCKS, 0),
            prefix(32, 0, META_INDEX, 0),
            prefix(0, 20, META_INDEX, 0),
            prefix(40, 20, META_INDEX, 0),
            prefix(32, 20, META_INDEX, 0x04),
            prefix(32, 20, META_INDEX, 0x80),
        ];
        for p in bad {
            assert!(parse_meta_prefix(&p, META_INDEX).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn directory_rules() {
        let (d, t, h) = layout();
        assert_eq!(check_directory(&d, &t, &h), Ok(()));
        type Edit = fn(&mut Directory, &mut TrailerV2, &mut HeaderFields);
        let edits: &[(&str, Edit)] = &[
            ("no chunk", |d, _, _| d.chunks.clear()),
            ("first chunk moved", |d, _, _| d.chunks[0].offset += 1),
            ("gap", |d, _, _| d.chunks[1].offset += 1),
            ("frame short", |d, _, _| d.chunks[0].frame_len = 77),
            ("frame long", |d, _, _| d.chunks[0].frame_len = 1_048_655),
            ("empty chunk", |d, _, _| {
                d.chunks[0].entry_count = 0;
                d.entry_count = 1
            }),
            ("count", |d, _, _| d.entry_count = 8),
            ("unsafe first path", |d, _, _| {
                d.chunks[1].first_path = b"../u".to_vec()
            }),
            ("first paths equal", |d, _, _| {
                d.chunks[1].first_path = b"t".to_vec()
            }),
            ("first paths decrease", |d, _, _| {
                d.chunks[1].first_path = b"s".to_vec()
            }),
            // "t/x" < "t!" bytewise, but in path order "t/x" (t\0x) comes first.
            ("path order", |d, _, _| {
                d.chunks[0].first_path = b"t!".to_vec();
                d.chunks[1].first_path = b"t/x".to_vec()
            }),
            ("missing block chunk", |d, _, _| d.block_chunks.clear()),
            ("block chunk moved", |d, _, _| d.block_chunks[0].offset += 1),
            ("block frame short", |d, _, _| {
                d.block_chunks[0].frame_len = 77
            }),
            ("first block", |d, _, _| {
                d.block_chunks[0].first_block_offset = 1
            }),
            ("stream", |d, _, _| d.stream_len = 3 * 65_536),
            ("stream long", |d, _, _| d.stream_len = 4 * 65_536 + 1),
            ("commitments", |d, _, _| d.parent_commitments.clear()),
            ("parents", |_, _, h| h.chain.clear()),
            ("directory", |_, t, _| t.directory_len -= 1),
        ];
        for (what, edit) in edits {
            let (mut d, mut t, mut h) = layout();
            edit(&mut d, &mut t, &mut h);
            assert!(check_directory(&d, &t, &h).is_err(), "{what} accepted");
        }
        // Two block-table chunks: the second must start after the first, before the index.
        let (mut d, mut t, h) = layout();
        t.block_count = 65_537;
        t.index_offset = 65_537 * 77;
        d.stream_len = 65_537 * 65_536;
        let mut h = h;
        h.block_size = 65_536;
        d.chunks[0].offset = t.index_offset;
        d.chunks[1].offset = t.index_offset + 1000;
        d.block_chunks[0].offset = t.index_offset + 1510;
        d.block_chunks.push(BlockChunkRef {
            offset: t.index_offset + 1732,
            frame_len: 100,
            first_block_offset: 65_536 * 77,
            tag: [0; 32],
        });
        t.index_len += 100;
        assert_eq!(check_directory(&d, &t, &h), Ok(()));
        d.block_chunks[1].first_block_offset = 0;
        assert!(check_directory(&d, &t, &h).is_err());
        d.block_chunks[1].first_block_offset = t.index_offset;
        assert!(check_directory(&d, &t, &h).is_err());
    }

    #[test]
    fn block_chunk_rules() {
        let (d, t, _) = layout();
        let rec = |frame_len| BlockRefV2 {
            frame_len,
            tag: [0; 32],
        };
        let good = vec![rec(65_613); 4];
        assert_eq!(check_block_chunk(&good, 0, &d, &t, 65_536), Ok(()));
        assert!(check_block_chunk(&good, 1, &d, &t, 65_536).is_err());
        assert!(check_block_chunk(&good[..3], 0, &d, &t, 65_536).is_err());
        let mut five = good.clone();
        five.push(rec(77));
        assert!(check_block_chunk(&five, 0, &d, &t, 65_536).is_err());
        // Tiling: one byte short, one long.
        let mut bad = good.clone();
        bad[3] = rec(65_612);
        assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
        // Frame bounds, even when the sum holds.
        let mut bad = good.clone();
        bad[0] = rec(76);
        bad[1] = rec(65_613 * 2 - 76);
        assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
        let mut bad = good;
        bad[0] = rec(65_614);
        bad[1] = rec(65_612);
        assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
    }

    #[test]
    fn paths_are_bytes_and_stay_inside() {
        for ok in [
            &b"a"[..],
            b"a/b",
            b"t/\xff\xfe.bin",
            b"...",
            b"a/.b",
            b"a..b",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
        let long = vec![b'a'; MAX_PATH_LEN + 1];
        for bad in [
            &b""[..],
            b"/a",
            b"a/",
            b"a//b",
            b".",
            b"a/./b",
            b"..",
            b"\xff/../x",
            b"a/..",
            b"a\0b",
            &long,
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(check_path(&long[..MAX_PATH_LEN]), Ok(()));
    }

    fn entry(path: &str, kind: u8) -> EntryV2 {
        EntryV2 {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime_sec: 1_764_460_800,
            ..EntryV2::default()
        }
    }

    fn file(path: &str, size: u64, extents: Vec<Extent>) -> EntryV2 {
        EntryV2 {
            size,
            extents,
            content_hash: Some([3; 32]),
            ..entry(path, KIND_FILE)
        }
    }

    fn ext(archive: u32, offset: u64, len: u64) -> Extent {
        Extent {
            archive,
            offset,
            len,
        }
    }

    /// Archive A of FORMAT.md v2.8.5 (chunk 0 of [`layout`]), with a symlink in `u` as
    /// chunk 1.
    pub(crate) fn chunk0() -> Vec<EntryV2> {
        vec![
            entry("t", KIND_DIR),
            file("t/a.txt", 100, vec![ext(0, 0, 100)]),
            EntryV2 {
                hardlink_to: Some(1),
                ..EntryV2::default()
            }
            .with_path("t/b.txt", KIND_HARDLINK),
            file("t/big.bin", 200_000, vec![ext(0, 100, 200_000)]),
            entry("t/fifo", KIND_FIFO),
            EntryV2 {
                data_ranges: Some(vec![
                    DataRange {
                        offset: 0,
                        len: 4096,
                    },
                    DataRange {
                        offset: 524_288,
                        len: 4096,
                    },
                ]),
                ..file("t/sparse.img", 1_048_576, vec![ext(0, 200_100, 8192)])
            },
        ]
    }

    impl EntryV2 {
        fn with_path(mut self, path: &str, kind: u8) -> Self {
            self.path = path.as_bytes().to_vec();
            self.kind = kind;
            self
        }
    }

    fn check_all(entries: &[EntryV2], k: usize, d: &Directory) -> Result<(), EntryError> {
        let mut c = ChunkCheck::new(k, d, 1);
        let base: u64 = d.chunks[..k].iter().map(|c| c.entry_count as u64).sum();
        for (i, e) in entries.iter().enumerate() {
            c.check(e, base + i as u64)?;
        }
        c.finish(entries.len() as u32)
    }

    fn corrupt(entries: &[EntryV2]) -> bool {
        matches!(
            check_all(entries, 0, &layout().0),
            Err(EntryError::Corrupt(_))
        )
    }

    #[test]
    fn a_valid_chunk_passes() {
        let (d, _, _) = layout();
        assert_eq!(check_all(&chunk0(), 0, &d), Ok(()));
        let link = EntryV2 {
            link_target: Some(b"\xff/anywhere".to_vec()),
            xattrs: vec![Xattr {
                name: b"user.x".to_vec(),
                value: vec![],
            }],
            ..entry("u", KIND_SYMLINK)
        };
        assert_eq!(check_all(&[link], 1, &d), Ok(()));
    }

    #[test]
    fn order_and_duplicates() {
        let (d, _, _) = layout();
        let mut v = chunk0();
        v.swap(3, 4);
        assert!(corrupt(&v), "out of order");
        let mut v = chunk0();
        v[4].path = b"t/big.bin".to_vec();
        assert!(matches!(
            check_all(&v, 0, &d),
            Err(EntryError::Unsafe { reason, .. }) if reason.contains("duplicate")
        ));
        let mut v = chunk0();
        v[0].path = b"s".to_vec();
        assert!(corrupt(&v), "first path not the directory's");
        // Last entry equal to / after the next chunk's first path.
        let mut d2 = d.clone();
        d2.chunks[1].first_path = b"t/sparse.img".to_vec();
        assert!(matches!(
            check_all(&chunk0(), 0, &d2),
            Err(EntryError::Unsafe { .. })
        ));
        d2.chunks[1].first_path = b"t/q".to_vec();
        assert!(matches!(
            check_all(&chunk0(), 0, &d2),
            Err(EntryError::Corrupt(_))
        ));
        // Entry count.
        assert!(corrupt(&chunk0()[..5]));
        let mut c = ChunkCheck::new(0, &d, 1);
        c.check(&chunk0()[0], 0).unwrap();
        assert!(c.finish(6).is_err(), "entries not checked");
        // An unsafe path comes before order.
        let mut v = chunk0();
        v[2].path = b"t/../b".to_vec();
        assert!(matches!(
            check_all(&v, 0, &d),
            Err(EntryError::Unsafe { .. })
        ));
    }

    #[test]
    fn field_rules() {
        type Edit = fn(&mut Vec<EntryV2>);
        let edits: &[(&str, Edit)] = &[
            ("kind", |v| v[4].kind = 7),
            ("mode", |v| v[1].mode = 0o10000),
            ("nsec", |v| v[1].mtime_nsec = 1_000_000_000),
            ("folder size", |v| v[0].size = 1),
            ("folder hash", |v| v[0].content_hash = Some([0; 32])),
            ("folder rdev", |v| v[0].rdev_minor = 1),
            ("fifo target", |v| v[4].link_target = Some(b"x".to_vec())),
            ("fifo extents", |v| v[4].extents = vec![ext(0, 0, 1)]),
            ("fifo ranges", |v| v[4].data_ranges = Some(vec![])),
            ("file no hash", |v| v[1].content_hash = None),
            ("file rdev", |v| v[1].rdev_major = 1),
            ("file link", |v| v[1].hardlink_to = Some(0)),
            ("symlink no target", |v| v[4].kind = KIND_SYMLINK),
            ("symlink empty", |v| {
                v[4].kind = KIND_SYMLINK;
                v[4].link_target = Some(vec![])
            }),
            ("symlink nul", |v| {
                v[4].kind = KIND_SYMLINK;
                v[4].link_target = Some(b"a\0".to_vec())
            }),
            ("symlink long", |v| {
                v[4].kind = KIND_SYMLINK;
                v[4].link_target = Some(vec![b'a'; 4097])
            }),
            ("hard link forward", |v| v[2].hardlink_to = Some(2)),
            ("hard link far", |v| v[2].hardlink_to = Some(1 << 63)),
            ("hard link none", |v| v[2].hardlink_to = None),
            ("hard link mode", |v| v[2].mode = 0o644),
            ("hard link uid", |v| v[2].uid = 1),
            ("hard link gid", |v| v[2].gid = 1),
            ("hard link mtime", |v| v[2].mtime_sec = 1),
            ("hard link nsec", |v| v[2].mtime_nsec = 1),
            ("hard link xattr", |v| {
                v[2].xattrs = vec![Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![],
                }]
            }),
            ("xattr namespace", |v| {
                v[0].xattrs = vec![Xattr {
                    name: b"other.a".to_vec(),
                    value: vec![],
                }]
            }),
            ("xattr empty name", |v| {
                v[0].xattrs = vec![Xattr {
                    name: vec![],
                    value: vec![],
                }]
            }),
            ("xattr nul", |v| {
                v[0].xattrs = vec![Xattr {
                    name: b"user.\0".to_vec(),
                    value: vec![],
                }]
            }),
            ("xattr name long", |v| {
                let mut name = b"user.".to_vec();
                name.resize(256, b'a');
                v[0].xattrs = vec![Xattr {
                    name,
                    value: vec![],
                }]
            }),
            ("xattr order", |v| {
                let x = |n: &[u8]| Xattr {
                    name: n.to_vec(),
                    value: vec![],
                };
                v[0].xattrs = vec![x(b"user.b"), x(b"user.a")]
            }),
            ("xattr twice", |v| {
                let x = Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![],
                };
                v[0].xattrs = vec![x.clone(), x]
            }),
            ("xattr value", |v| {
                v[0].xattrs = vec![Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![0; 65_537],
                }]
            }),
            ("xattr total", |v| {
                v[0].xattrs = (0..5u8)
                    .map(|i| Xattr {
                        name: vec![b'u', b's', b'e', b'r', b'.', b'a' + i],
                        value: vec![0; 60_000],
                    })
                    .collect()
            }),
            ("xattr count", |v| {
                v[0].xattrs = (0..1025u32)
                    .map(|i| Xattr {
                        name: format!("user.{i:05}").into_bytes(),
                        value: vec![],
                    })
                    .collect()
            }),
            ("range overlap", |v| {
                v[5].data_ranges.as_mut().unwrap()[1].offset = 4095
            }),
            ("range adjacent", |v| {
                v[5].data_ranges.as_mut().unwrap()[1].offset = 4096
            }),
            ("range empty", |v| {
                v[5].data_ranges.as_mut().unwrap()[0].len = 0
            }),
            ("range past size", |v| {
                v[5].data_ranges.as_mut().unwrap()[1].offset = 1_048_576 - 4095
            }),
            ("range overflow", |v| {
                v[5].data_ranges.as_mut().unwrap()[1].offset = u64::MAX - 10
            }),
            ("extents short", |v| v[3].extents[0].len -= 1),
            ("extent empty", |v| v[3].extents.push(ext(0, 0, 0))),
            ("extent past stream", |v| v[3].extents[0].offset = 8293),
            ("extent archive", |v| v[3].extents[0].archive = 2),
            ("extent overflow", |v| v[3].extents[0].offset = u64::MAX),
            ("extents sum overflow", |v| {
                v[3].extents = vec![ext(1, 0, u64::MAX), ext(1, 0, 200_001)]
            }),
            ("extents sparse", |v| v[5].extents[0].len = 1_048_576),
            ("too many extents", |v| {
                v[3].size = 8193;
                v[3].extents = (0..8193).map(|i| ext(1, i, 1)).collect()
            }),
            ("too many ranges", |v| {
                v[5].data_ranges = Some(
                    (0..8193)
                        .map(|i| DataRange {
                            offset: 2 * i,
                            len: 1,
                        })
                        .collect(),
                );
                v[5].extents = vec![ext(1, 0, 8193)]
            }),
        ];
        for (what, edit) in edits {
            let mut v = chunk0();
            edit(&mut v);
            assert!(corrupt(&v), "{what} accepted");
        }
        // Limits reached exactly pass.
        let mut v = chunk0();
        v[3].size = 8192;
        v[3].extents = (0..8192).map(|i| ext(1, i, 1)).collect();
        v[5].data_ranges = Some(
            (0..8192)
                .map(|i| DataRange {
                    offset: 2 * i,
                    len: 1,
                })
                .collect(),
        );
        v[5].extents = vec![ext(1, 1000, 8192)];
        v[0].xattrs = (0..1024u32)
            .map(|i| Xattr {
                name: format!("trusted.{i:05}").into_bytes(),
                value: vec![],
            })
            .collect();
        assert_eq!(check_all(&v, 0, &layout().0), Ok(()));
    }

    #[test]
    fn ancestors_check_parents_in_order() {
        let mut a = Ancestors::new();
        for e in chunk0() {
            a.check_parent(&e).unwrap();
        }
        a.check_parent(&entry("u", KIND_DIR)).unwrap();
        a.check_parent(&entry("u/v", KIND_DIR)).unwrap();
        a.check_parent(&entry("u/v/w", KIND_FILE)).unwrap();
        a.check_parent(&entry("u/x", KIND_FILE)).unwrap();
        assert!(a.stack.len() <= 3);
        // Parent missing: "u/y/z" without "u/y".
        assert!(matches!(
            a.check_parent(&entry("u/y/z", KIND_FILE)),
            Err(EntryError::Unsafe { reason, .. }) if reason.contains("not in the archive")
        ));
        // file-through-symlink.
        let mut a = Ancestors::new();
        a.check_parent(&entry("t", KIND_DIR)).unwrap();
        a.check_parent(&entry("t/l", KIND_SYMLINK)).unwrap();
        assert!(matches!(
            a.check_parent(&entry("t/l/f", KIND_FILE)),
            Err(EntryError::Unsafe { reason, .. }) if reason.contains("not a folder")
        ));
        // A sibling whose name extends the folder's is not under it.
        let mut a = Ancestors::new();
        a.check_parent(&entry("t", KIND_DIR)).unwrap();
        a.check_parent(&entry("tt", KIND_FILE)).unwrap();
        assert!(a.check_parent(&entry("t/x", KIND_FILE)).is_err());
        // An out-of-order reader seeds what it looked up.
        let mut a = Ancestors::new();
        assert!(a.check_parent(&entry("t/d/x", KIND_FILE)).is_err());
        a.push_known(b"t".to_vec());
        a.push_known(b"t/d".to_vec());
        a.check_parent(&entry("t/d/x", KIND_FILE)).unwrap();
        a.push_known(b"u".to_vec());
        assert_eq!(a.stack.len(), 1, "non-ancestors popped");
    }

    /// postcard's own decoding, consumed exactly (`from_bytes` ignores trailing bytes).
    fn exact<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes::<T>(b) {
            Ok((v, [])) => Ok(v),
            Ok(_) => Err("trailing bytes".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn decoders_agree_with_postcard() {
        let mut entries = chunk0();
        entries[0].xattrs = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"v".to_vec(),
        }];
        entries[4].link_target = Some(b"x".to_vec());
        entries[4].hardlink_to = Some(7);
        let bytes = postcard::to_stdvec(&entries).unwrap();
        assert_eq!(decode_chunk(&bytes).unwrap(), entries);
        // Every single-byte change: when ours accepts, postcard decodes the same; when
        // only postcard accepts, it is for a bound.
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let theirs = exact::<Vec<EntryV2>>(&b);
                match decode_chunk(&b) {
                    Ok(ours) => assert_eq!(Ok(ours), theirs, "byte {i} ^ {x:#x}"),
                    Err(e) => {
                        if theirs.is_ok() {
                            assert!(
                                e.contains("limit") || e.contains("bytes are left"),
                                "byte {i} ^ {x:#x}: {e}"
                            )
                        }
                    }
                }
            }
        }
        let mut with_trailing = bytes.clone();
        with_trailing.push(0);
        assert!(
            decode_chunk(&with_trailing)
                .unwrap_err()
                .contains("trailing")
        );

        let records: Vec<BlockRefV2> = (0..5)
            .map(|i| BlockRefV2 {
                frame_len: 65_613 + i,
                tag: [i as u8; 32],
            })
            .collect();
        let bytes = postcard::to_stdvec(&records).unwrap();
        assert_eq!(decode_block_chunk(&bytes).unwrap(), records);
        assert!(decode_block_chunk(&bytes[..bytes.len() - 1]).is_err());

        let (mut d, _, _) = layout();
        d.totals.files = 3;
        d.totals.warnings = 1 << 40;
        let bytes = postcard::to_stdvec(&d).unwrap();
        assert_eq!(decode_directory(&bytes).unwrap(), d);
        let mut with_trailing = bytes.clone();
        with_trailing.push(0);
        assert!(decode_directory(&with_trailing).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x80;
            if let Ok(ours) = decode_directory(&b) {
                assert_eq!(Ok(ours), exact::<Directory>(&b), "byte {i}");
            }
        }
    }

    #[test]
    fn counts_are_bounded_before_allocating() {
        // Entry count: more than the bytes left / 17, and absurd.
        let smallest = EntryV2 {
            path: b"t".to_vec(),
            kind: KIND_DIR,
            ..EntryV2::default()
        };
        let one = postcard::to_stdvec(&vec![smallest]).unwrap();
        assert_eq!(
            one.len() - 1,
            17,
            "the folder entry `t` is a smallest encoding"
        );
        assert!(decode_chunk(&one).is_ok());
        let mut two = one.clone();
        two[0] = 2;
        assert!(decode_chunk(&two).unwrap_err().contains("bytes are left"));
        let mut huge = postcard::to_stdvec(&(1u64 << 40)).unwrap();
        huge.extend_from_slice(&one[1..]);
        assert!(decode_chunk(&huge).unwrap_err().contains("bytes are left"));
        // Block records beyond a chunk, parents, chunk refs.
        let mut b = postcard::to_stdvec(&(BLOCKS_PER_CHUNK as u64 + 1)).unwrap();
        b.resize(b.len() + 33 * (BLOCKS_PER_CHUNK + 1), 0);
        assert!(decode_block_chunk(&b).unwrap_err().contains("limit"));
        let mut d = postcard::to_stdvec(&(u64::MAX)).unwrap();
        d.resize(100, 0);
        assert!(decode_directory(&d).is_err());
    }

    /// Regression for the `xattr-huge` vector (FORMAT.md v2.11): an xattr value length
    /// claiming 1 GiB is refused from its varint, before any buffer is reserved for it.
    #[test]
    fn regression_xattr_value_claiming_one_gib() {
        let mut e = entry("t", KIND_DIR);
        e.xattrs = vec![Xattr {
            name: b"user.big".to_vec(),
            value: vec![7; 4],
        }];
        let good = postcard::to_stdvec(&vec![e]).unwrap();
        // The value's length varint (04) sits right before its 4 bytes at the end, which
        // are followed by data_ranges None, no extents, content_hash None.
        let at = good.len() - 3 - 4 - 1;
        assert_eq!(good[at], 4);
        let claim = postcard::to_stdvec(&(1u64 << 30)).unwrap();
        let bad = [&good[..at], &claim[..], &good[at + 1..]].concat();
        let err = decode_chunk(&bad).unwrap_err();
        assert!(err.contains("extended attribute value"), "{err}");
        // Within the bytes left but above the 64 KiB bound: refused by the bound.
        let mut big = entry("t", KIND_DIR);
        big.xattrs = vec![Xattr {
            name: b"user.big".to_vec(),
            value: vec![7; MAX_XATTR_VALUE + 1],
        }];
        let bytes = postcard::to_stdvec(&vec![big]).unwrap();
        assert!(decode_chunk(&bytes).unwrap_err().contains("limit"));
    }
}
