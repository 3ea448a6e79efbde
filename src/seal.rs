//! Sealing and opening one block frame, and the encrypted index section.
//!
//! A block's payload is PKCS#7-padded and cut into fixed CBC segments, each a standard
//! AES-256-CBC stream with its own IV; the padding therefore sits in the last segment. Encryption runs all
//! segments of a block at once, one lane per segment, through the `aes` crate's
//! parallel-blocks backend (8 lanes with AES-NI, 30 with VAES-256, 64 with AVX-512 VAES):
//! one CBC stream is latency-bound, many independent streams fill the pipeline.
//! Then HMAC-SHA256 over the frame (encrypt-then-MAC). Opening checks the tag before a
//! single byte is decrypted.

use aes::Aes256;
use cipher::consts::U16;
use cipher::typenum::Unsigned;
use cipher::{
    Array, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockModeDecrypt,
    BlockModeEncrypt, BlockSizeUser, InnerIvInit, KeyInit, ParBlocks,
};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::cell::RefCell;

use crate::format::frame::{
    FLAG_LAST, FLAG_ZSTD, FRAME_OVERHEAD, FRAME_PREFIX, FrameHeader, NONCE_OFFSET, checksum_ok,
};
use crate::format::{Compression, crc32c};
use crate::keys::{SessionId, SubKeys};

type Block = Array<u8, U16>;
type HmacSha256 = Hmac<Sha256>;

const INDEX_MAC_CONTEXT: &[u8] = b"coffer/v1/index";
/// Bytes sampled from a block to decide whether compressing it is worth the time.
const COMPRESSIBILITY_SAMPLE: usize = 16 * 1024;
/// Steps of every lane gathered into one contiguous tile. Lanes sit a power-of-two
/// distance apart (16 KiB segments), so touching them in turn one AES block at a time
/// evicts the same L1 set over and over; a tile turns that into one cache line per lane.
const TILE_STEPS: usize = 8;

/// Where a writer's random bytes (session key, block nonces, index IV) and its clock come
/// from. Outside this crate's own unit tests there is only [`Entropy::Os`]: the fixed
/// variant exists under `cfg(test)` alone, so neither the binary nor a library user can
/// write an archive with predictable nonces, even by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entropy {
    /// The thread-local CSPRNG (seeded from the OS) and the system clock.
    Os,
    /// SHA-256(seed ‖ purpose ‖ counter) and a fixed creation time: the golden-archive
    /// test writes the same bytes on every run and every machine.
    #[cfg(test)]
    Fixed(u64),
}

impl Entropy {
    /// Fill `out` with bytes for `purpose`; `counter` tells apart the draws of one purpose
    /// (the block index for nonces) so that parallel sealing stays deterministic.
    pub(crate) fn fill(self, purpose: &[u8], counter: u64, out: &mut [u8]) {
        match self {
            Entropy::Os => {
                // Purpose and counter only shape the fixed stream of the tests.
                let _ = (purpose, counter);
                rand::rng().fill_bytes(out)
            }
            #[cfg(test)]
            Entropy::Fixed(seed) => {
                use sha2::Digest;
                let digest = Sha256::new()
                    .chain_update(seed.to_le_bytes())
                    .chain_update(purpose)
                    .chain_update(counter.to_le_bytes())
                    .finalize();
                out.copy_from_slice(&digest[..out.len()]);
            }
        }
    }

    /// A fresh session key.
    pub(crate) fn session_key(self) -> crate::error::Result<crate::keys::SessionKey> {
        match self {
            Entropy::Os => crate::keys::SessionKey::generate(),
            #[cfg(test)]
            Entropy::Fixed(_) => {
                let mut key = [0u8; crate::keys::SESSION_KEY_LEN];
                self.fill(b"session-key", 0, &mut key);
                Ok(crate::keys::SessionKey::from_bytes(key))
            }
        }
    }

    /// The creation time written into the header, in seconds since the Unix epoch.
    pub(crate) fn now(self) -> i64 {
        match self {
            Entropy::Os => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            #[cfg(test)]
            Entropy::Fixed(_) => 1_700_000_000,
        }
    }
}

/// Why a frame or the index did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The keyless checksum does not match either: storage damage (bit rot, truncation).
    Checksum,
    /// The checksum matches but the tag does not: modified, moved or forged.
    Tag,
    Malformed(String),
}

/// Where [`BlockSealer::open_in_place`] left a block's plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// This range of the frame buffer.
    InFrame(std::ops::Range<usize>),
    /// The whole scratch buffer.
    InScratch,
}

/// How the CBC segments of a block are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneMode {
    /// All segments together, one lane each (the default).
    MultiLane,
    /// Multi-lane without tiling; kept to measure the cache-aliasing effect.
    MultiLaneUntiled,
    /// One segment after the other with `cbc::Encryptor` (reference, for benchmarks).
    Sequential,
}

/// Everything needed to seal and open the blocks of one session.
pub struct BlockSealer {
    enc: Aes256,
    iv: Aes256,
    mac: HmacSha256,
    session_id: SessionId,
    block_size: usize,
    segment_size: usize,
    compression: Compression,
    lane_mode: LaneMode,
    entropy: Entropy,
}

impl BlockSealer {
    pub fn new(
        keys: &SubKeys,
        session_id: SessionId,
        block_size: u32,
        segment_size: u32,
        compression: Compression,
    ) -> Self {
        BlockSealer {
            enc: Aes256::new_from_slice(keys.data_enc.as_ref()).expect("32-byte key"),
            iv: Aes256::new_from_slice(keys.data_iv.as_ref()).expect("32-byte key"),
            mac: <HmacSha256 as KeyInit>::new_from_slice(keys.data_mac.as_ref())
                .expect("HMAC takes any key length"),
            session_id,
            block_size: block_size as usize,
            segment_size: segment_size as usize,
            compression,
            lane_mode: LaneMode::MultiLane,
            entropy: Entropy::Os,
        }
    }

    /// Draw block nonces from `entropy` (the writer's; [`Entropy::Os`] unless a test).
    pub(crate) fn with_entropy(mut self, entropy: Entropy) -> Self {
        self.entropy = entropy;
        self
    }

    /// Choose the lane strategy (benchmarks compare them; output is identical).
    pub fn with_lane_mode(mut self, mode: LaneMode) -> Self {
        self.lane_mode = mode;
        self
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Capacity a frame buffer needs so that sealing never reallocates.
    pub fn frame_capacity(&self) -> usize {
        self.block_size + 16 + FRAME_OVERHEAD
    }

    /// Seal the block whose `raw_len` plaintext bytes sit in `buf[FRAME_PREFIX..]`.
    /// On return `buf` holds the complete frame.
    pub fn seal(&self, buf: &mut Vec<u8>, index: u64, last: bool) {
        let raw_len = buf.len() - FRAME_PREFIX;
        assert!(
            raw_len > 0 && raw_len <= self.block_size,
            "block length out of range"
        );
        let mut flags = if last { FLAG_LAST } else { 0 };
        let mut payload_len = raw_len;
        if let Compression::Zstd(level) = self.compression
            && let Some(n) = compress_in_place(buf, level)
        {
            payload_len = n;
            flags |= FLAG_ZSTD;
        }

        // PKCS#7 on the last segment only: full segments are exact multiples of 16.
        let pad = 16 - (payload_len % 16);
        buf.truncate(FRAME_PREFIX + payload_len);
        buf.resize(FRAME_PREFIX + payload_len + pad, pad as u8);
        let ct_len = payload_len + pad;
        buf[0..4].copy_from_slice(&(ct_len as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&(raw_len as u32).to_le_bytes());
        buf[8] = flags;
        let mut nonce = [0u8; 16];
        self.entropy.fill(b"nonce", index, &mut nonce);
        buf[NONCE_OFFSET..FRAME_PREFIX].copy_from_slice(&nonce);

        let lanes = segment_count(ct_len, self.segment_size);
        let ivs = derive_ivs(&self.iv, &nonce, lanes);
        let body = &mut buf[FRAME_PREFIX..];
        warm_cache(body);
        match self.lane_mode {
            LaneMode::MultiLane => encrypt_lanes(&self.enc, &ivs, body, self.segment_size, true),
            LaneMode::MultiLaneUntiled => {
                encrypt_lanes(&self.enc, &ivs, body, self.segment_size, false)
            }
            LaneMode::Sequential => encrypt_sequential(&self.enc, &ivs, body, self.segment_size),
        }

        let tag = self.block_tag(index, buf);
        buf.extend_from_slice(&tag);
        let crc = crc32c(buf);
        buf.extend_from_slice(&crc.to_le_bytes());
    }

    fn block_tag(&self, index: u64, frame_without_tag: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(&self.session_id);
        m.update(&index.to_le_bytes());
        m.update(frame_without_tag);
        m.finalize().into_bytes().into()
    }

    /// Authenticate, then decrypt one whole frame into `out` (cleared first).
    /// `index` and `last` are where the reader expects this block to be.
    pub fn open(
        &self,
        frame: &mut [u8],
        index: u64,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        if let Opened::InFrame(range) = self.open_in_place(frame, index, last, out)? {
            out.extend_from_slice(&frame[range]);
        }
        Ok(())
    }

    /// Like [`BlockSealer::open`], without copying: an uncompressed block's plaintext is
    /// left in the frame (decrypted in place); a compressed one is inflated into `scratch`.
    pub fn open_in_place(
        &self,
        frame: &mut [u8],
        index: u64,
        last: bool,
        scratch: &mut Vec<u8>,
    ) -> Result<Opened, OpenError> {
        scratch.clear();
        // The checksum first, for every reader alike: a frame whose CRC32C is wrong is
        // refused even when its tag holds, so that restore, list and both verifies agree
        // on what is damaged. It costs little (hardware CRC32C) and fails closed.
        if !checksum_ok(frame) {
            return Err(OpenError::Checksum);
        }
        let header =
            FrameHeader::parse(frame, self.block_size as u32).map_err(OpenError::Malformed)?;
        if frame.len() != header.frame_len() {
            return Err(OpenError::Malformed(
                "frame length does not match its header".into(),
            ));
        }
        let ct_end = FRAME_PREFIX + header.ct_len as usize;
        let mut m = self.mac.clone();
        m.update(&self.session_id);
        m.update(&index.to_le_bytes());
        m.update(&frame[..ct_end]);
        if m.verify_slice(&frame[ct_end..ct_end + 32]).is_err() {
            // The checksum held, so this is not storage damage: modified, moved or forged.
            return Err(OpenError::Tag);
        }
        // The tag binds index and flags, so from here on the frame is the writer's own.
        if header.is_last() != last {
            return Err(OpenError::Malformed(if last {
                "the archive ends early: the last block is missing".into()
            } else {
                "a block marked last is followed by more blocks".into()
            }));
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&frame[NONCE_OFFSET..FRAME_PREFIX]);
        let body = &mut frame[FRAME_PREFIX..ct_end];
        let lanes = segment_count(body.len(), self.segment_size);
        let ivs = derive_ivs(&self.iv, &nonce, lanes);
        decrypt_lanes(&self.enc, &ivs, body, self.segment_size);
        let pad = *body.last().unwrap() as usize;
        if pad == 0 || pad > 16 || body[body.len() - pad..].iter().any(|&b| b as usize != pad) {
            return Err(OpenError::Malformed("bad padding".into()));
        }
        let payload = &body[..body.len() - pad];
        let raw_len = header.raw_len as usize;
        if header.is_compressed() {
            decompress(payload, raw_len, scratch)?;
            Ok(Opened::InScratch)
        } else {
            if payload.len() != raw_len {
                return Err(OpenError::Malformed("block length mismatch".into()));
            }
            Ok(Opened::InFrame(FRAME_PREFIX..FRAME_PREFIX + raw_len))
        }
    }
}

/// Number of CBC segments in a ciphertext of `ct_len` bytes: the padded payload is cut
/// into `segment_size` pieces, the last one holding the rest (and so the padding).
fn segment_count(ct_len: usize, segment_size: usize) -> usize {
    ct_len.div_ceil(segment_size).max(1)
}

/// IV of segment j = AES-256(data-iv key, nonce XOR j as a big-endian u32 in its last
/// four bytes): unpredictable, distinct per segment, as in NIST SP 800-38A appendix C.
fn derive_ivs(iv_cipher: &Aes256, nonce: &[u8; 16], lanes: usize) -> Vec<Block> {
    let mut ivs: Vec<Block> = (0..lanes as u32)
        .map(|j| {
            let mut b = Block::from(*nonce);
            for (x, y) in b[12..].iter_mut().zip(j.to_be_bytes()) {
                *x ^= y;
            }
            b
        })
        .collect();
    iv_cipher.encrypt_blocks(&mut ivs);
    ivs
}

/// Encrypt a padded payload's segments with `mode` under `key` (IVs from a zero nonce).
/// Exposed for the lane benchmarks; archives are sealed with [`BlockSealer::seal`].
#[doc(hidden)]
pub fn encrypt_segments(key: &[u8; 32], body: &mut [u8], segment_size: usize, mode: LaneMode) {
    let cipher = Aes256::new_from_slice(key).expect("32-byte key");
    let ivs = derive_ivs(&cipher, &[0; 16], segment_count(body.len(), segment_size));
    match mode {
        LaneMode::MultiLane => encrypt_lanes(&cipher, &ivs, body, segment_size, true),
        LaneMode::MultiLaneUntiled => encrypt_lanes(&cipher, &ivs, body, segment_size, false),
        LaneMode::Sequential => encrypt_sequential(&cipher, &ivs, body, segment_size),
    }
}

fn xor_block(a: &mut Block, b: &Block) {
    let x = u128::from_ne_bytes(a.0) ^ u128::from_ne_bytes(b.0);
    a.0 = x.to_ne_bytes();
}

/// Encrypt every segment of `body` as its own CBC stream, all lanes at once.
pub(crate) fn encrypt_lanes(
    cipher: &Aes256,
    ivs: &[Block],
    body: &mut [u8],
    segment_size: usize,
    tiled: bool,
) {
    let (blocks, rest) = Array::<u8, U16>::slice_as_chunks_mut(body);
    debug_assert!(rest.is_empty());
    cipher.encrypt_with_backend(LaneCbc {
        blocks,
        ivs,
        seg_blocks: segment_size / 16,
        tiled,
    });
}

struct LaneCbc<'a> {
    blocks: &'a mut [Block],
    ivs: &'a [Block],
    seg_blocks: usize,
    tiled: bool,
}

impl BlockSizeUser for LaneCbc<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for LaneCbc<'_> {
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let par = B::ParBlocksSize::USIZE;
        let lanes = self.ivs.len();
        let sb = self.seg_blocks;
        let n = self.blocks.len();
        let lane_len = |l: usize| if l + 1 < lanes { sb } else { n - l * sb };
        let tile_steps = if self.tiled { TILE_STEPS } else { 1 };
        let mut tile = vec![Block::default(); tile_steps * par];
        let mut batch = ParBlocks::<B>::default();

        for g0 in (0..lanes).step_by(par) {
            let gl = par.min(lanes - g0);
            if gl * 8 <= par {
                // A handful of lanes (a small last block): a full batch would be mostly
                // junk, and one chain per lane costs less.
                for lane in g0..g0 + gl {
                    let mut chain = self.ivs[lane];
                    for i in lane * sb..lane * sb + lane_len(lane) {
                        xor_block(&mut chain, &self.blocks[i]);
                        backend.encrypt_block_inplace(&mut chain);
                        self.blocks[i] = chain;
                    }
                }
                continue;
            }
            for k in 0..gl {
                batch[k] = self.ivs[g0 + k];
            }
            let common = (g0..g0 + gl).map(lane_len).min().unwrap_or(0);
            let mut step = 0;
            while step < common {
                let t = tile_steps.min(common - step);
                for k in 0..gl {
                    let base = (g0 + k) * sb + step;
                    for s in 0..t {
                        tile[s * par + k] = self.blocks[base + s];
                    }
                }
                for s in 0..t {
                    let row = &mut tile[s * par..s * par + gl];
                    for (k, b) in row.iter().enumerate() {
                        xor_block(&mut batch[k], b);
                    }
                    // Lanes past `gl` carry junk that is computed and dropped: one full
                    // batch costs the same as a partial one.
                    backend.encrypt_par_blocks_inplace(&mut batch);
                    row.copy_from_slice(&batch[..gl]);
                }
                for k in 0..gl {
                    let base = (g0 + k) * sb + step;
                    for s in 0..t {
                        self.blocks[base + s] = tile[s * par + k];
                    }
                }
                step += t;
            }
            // The last segment of a block is usually shorter than the others; finish
            // its remaining steps alone.
            for k in 0..gl {
                let lane = g0 + k;
                let mut chain = batch[k];
                for i in lane * sb + common..lane * sb + lane_len(lane) {
                    xor_block(&mut chain, &self.blocks[i]);
                    backend.encrypt_block_inplace(&mut chain);
                    self.blocks[i] = chain;
                }
            }
        }
    }
}

/// Reference: each segment with `cbc::Encryptor`, one after the other.
pub(crate) fn encrypt_sequential(
    cipher: &Aes256,
    ivs: &[Block],
    body: &mut [u8],
    segment_size: usize,
) {
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(body);
    for (seg, iv) in lane_slices(blocks, ivs.len(), segment_size / 16).zip(ivs) {
        cbc::Encryptor::<Aes256>::inner_iv_init(cipher.clone(), iv).encrypt_blocks(seg);
    }
}

/// Split a block's AES blocks into its segments: all full-size but the last, which takes
/// the rest.
fn lane_slices(
    blocks: &mut [Block],
    lanes: usize,
    seg_blocks: usize,
) -> impl Iterator<Item = &mut [Block]> {
    let mut rest = blocks;
    (0..lanes).map(move |l| {
        let take = if l + 1 < lanes {
            seg_blocks
        } else {
            rest.len()
        };
        let (seg, tail) = std::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        seg
    })
}

/// CBC decryption is parallel within a segment already; decrypt segment by segment.
fn decrypt_lanes(cipher: &Aes256, ivs: &[Block], body: &mut [u8], segment_size: usize) {
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(body);
    for (seg, iv) in lane_slices(blocks, ivs.len(), segment_size / 16).zip(ivs) {
        cbc::Decryptor::<Aes256>::inner_iv_init(cipher.clone(), iv).decrypt_blocks(seg);
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compress `buf[FRAME_PREFIX..]` in place if that saves space; returns the new payload
/// length. A small sample is tried first so that incompressible blocks (media, archives,
/// encrypted data) cost almost nothing.
fn compress_in_place(buf: &mut Vec<u8>, level: i32) -> Option<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        let n = COMPRESSOR.with_borrow_mut(|slot| {
            if slot.as_ref().map(|(l, _)| *l) != Some(level) {
                *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, c) = slot.as_mut()?;
            let raw = &buf[FRAME_PREFIX..];
            if raw.len() > COMPRESSIBILITY_SAMPLE * 2 {
                let sample = &raw[..COMPRESSIBILITY_SAMPLE];
                scratch.clear();
                scratch.reserve(zstd::zstd_safe::compress_bound(sample.len()));
                let n = c.compress_to_buffer(sample, scratch).ok()?;
                if n * 100 > sample.len() * 97 {
                    return None;
                }
            }
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            let n = c.compress_to_buffer(raw, scratch).ok()?;
            // Output larger than the input minus one AES block is not worth keeping.
            (n + 16 < raw.len()).then_some(n)
        })?;
        buf.truncate(FRAME_PREFIX);
        buf.extend_from_slice(&scratch[..n]);
        Some(n)
    })
}

/// The first four bytes of an RFC 8878 zstd frame (0xFD2FB528, little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

fn decompress(payload: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), OpenError> {
    // Exactly one standard frame, as writers make: libzstd on its own would also accept
    // several frames back to back, skippable frames and legacy (pre-1.0) frames.
    if !payload.starts_with(&ZSTD_MAGIC)
        || zstd::zstd_safe::find_frame_compressed_size(payload) != Ok(payload.len())
    {
        return Err(OpenError::Malformed(
            "compressed payload is not exactly one zstd frame".into(),
        ));
    }
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| OpenError::Malformed(format!("zstd: {e}")))?,
            );
        }
        let d = slot.as_mut().unwrap();
        // Capacity bounds the output: raw_len, itself bounded by the block size.
        out.reserve_exact(raw_len);
        let n = d
            .decompress_to_buffer(payload, out)
            .map_err(|e| OpenError::Malformed(format!("zstd: {e}")))?;
        if n != raw_len {
            out.clear();
            return Err(OpenError::Malformed("decompressed length mismatch".into()));
        }
        Ok(())
    })
}

/// Encrypt and authenticate the serialized index: `iv ‖ ct ‖ tag ‖ crc32c`.
pub fn seal_index(keys: &SubKeys, session_id: &SessionId, plain: &[u8]) -> Vec<u8> {
    seal_index_from(Entropy::Os, keys, session_id, plain)
}

/// [`seal_index`] with the IV drawn from `entropy`.
pub(crate) fn seal_index_from(
    entropy: Entropy,
    keys: &SubKeys,
    session_id: &SessionId,
    plain: &[u8],
) -> Vec<u8> {
    let mut iv = [0u8; 16];
    entropy.fill(b"index-iv", 0, &mut iv);
    let pad = 16 - plain.len() % 16;
    let mut out = Vec::with_capacity(16 + plain.len() + pad + 36);
    out.extend_from_slice(&iv);
    out.extend_from_slice(plain);
    out.resize(16 + plain.len() + pad, pad as u8);
    let cipher = Aes256::new_from_slice(keys.meta_enc.as_ref()).expect("32-byte key");
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(&mut out[16..]);
    cbc::Encryptor::<Aes256>::inner_iv_init(cipher, &Block::from(iv)).encrypt_blocks(blocks);
    let tag = index_tag(keys, session_id, &out);
    out.extend_from_slice(&tag);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn index_tag(keys: &SubKeys, session_id: &SessionId, iv_and_ct: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.meta_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(INDEX_MAC_CONTEXT);
    m.update(session_id);
    m.update(iv_and_ct);
    m.finalize().into_bytes().into()
}

/// The index section's length rule: IV, at least one AES block of ciphertext, tag and
/// checksum, the ciphertext a whole number of AES blocks.
pub fn index_len_ok(len: u64) -> bool {
    len >= 16 + 16 + 36 && (len - 16 - 36).is_multiple_of(16)
}

/// Check the checksum, authenticate, then decrypt the index section; returns the
/// serialized index.
pub fn open_index(
    keys: &SubKeys,
    session_id: &SessionId,
    mut section: Vec<u8>,
) -> Result<Vec<u8>, OpenError> {
    let n = section.len();
    if !index_len_ok(n as u64) {
        return Err(OpenError::Malformed(
            "index section has a bad length".into(),
        ));
    }
    // As for block frames: the checksum is checked first and refuses the section even
    // when the tag holds.
    if crc32c(&section[..n - 4]) != u32::from_le_bytes(section[n - 4..].try_into().unwrap()) {
        return Err(OpenError::Checksum);
    }
    let tag_at = n - 36;
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.meta_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(INDEX_MAC_CONTEXT);
    m.update(session_id);
    m.update(&section[..tag_at]);
    if m.verify_slice(&section[tag_at..tag_at + 32]).is_err() {
        return Err(OpenError::Tag);
    }
    let iv = Block::try_from(&section[..16]).expect("16 bytes");
    let cipher = Aes256::new_from_slice(keys.meta_enc.as_ref()).expect("32-byte key");
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(&mut section[16..tag_at]);
    cbc::Decryptor::<Aes256>::inner_iv_init(cipher, &iv).decrypt_blocks(blocks);
    let pad = section[tag_at - 1] as usize;
    if pad == 0
        || pad > 16
        || section[tag_at - pad..tag_at]
            .iter()
            .any(|&b| b as usize != pad)
    {
        return Err(OpenError::Malformed("bad index padding".into()));
    }
    section.truncate(tag_at - pad);
    section.drain(..16);
    Ok(section)
}

/// One sequential pass over a block, a load per cache line, before the lanes start: the
/// block was filled on the reader thread's core, and 64 lanes 16 KiB apart each pull their
/// own stream of lines, more streams than the hardware prefetcher follows. A straight pass
/// streams it into this core's cache first.
fn warm_cache(block: &[u8]) {
    let mut acc = 0u8;
    for line in block.chunks(64) {
        acc ^= line[0];
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SessionKey;

    fn sealer(compression: Compression, mode: LaneMode) -> BlockSealer {
        let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
        BlockSealer::new(&keys, [2; 16], 1 << 20, 16384, compression).with_lane_mode(mode)
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn frame_for(data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; FRAME_PREFIX];
        buf.extend_from_slice(data);
        buf
    }

    /// The multi-lane output must equal `cbc::Encryptor` run on each segment alone.
    #[test]
    fn multi_lane_matches_reference_cbc_for_odd_lengths() {
        let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
        let cipher = Aes256::new_from_slice(keys.data_enc.as_ref()).unwrap();
        let iv_cipher = Aes256::new_from_slice(keys.data_iv.as_ref()).unwrap();
        for &seg in &[4096usize, 16384] {
            for &payload in &[
                1usize,
                15,
                16,
                17,
                4095,
                4096,
                16384,
                16400,
                100_000,
                1 << 20,
                (1 << 20) - 5,
            ] {
                let pad = 16 - payload % 16;
                let mut plain = pseudo_random(payload, payload as u64);
                plain.resize(payload + pad, pad as u8);
                let lanes = segment_count(plain.len(), seg);
                let ivs = derive_ivs(&iv_cipher, &[7; 16], lanes);
                let mut reference = plain.clone();
                // Reference: cbc::Encryptor on each segment alone.
                for (chunk, iv) in reference.chunks_mut(seg).zip(&ivs) {
                    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(chunk);
                    cbc::Encryptor::<Aes256>::inner_iv_init(cipher.clone(), iv)
                        .encrypt_blocks(blocks);
                }
                assert_eq!(reference.chunks(seg).count(), lanes);
                for tiled in [true, false] {
                    let mut ours = plain.clone();
                    encrypt_lanes(&cipher, &ivs, &mut ours, seg, tiled);
                    assert_eq!(ours, reference, "payload {payload} seg {seg} tiled {tiled}");
                }
                let mut back = reference.clone();
                decrypt_lanes(&cipher, &ivs, &mut back, seg);
                assert_eq!(back, plain);
            }
        }
    }

    #[test]
    fn seal_open_round_trip_all_modes() {
        for mode in [
            LaneMode::MultiLane,
            LaneMode::MultiLaneUntiled,
            LaneMode::Sequential,
        ] {
            for compression in [Compression::None, Compression::Zstd(1)] {
                let s = sealer(compression, mode);
                for data in [
                    pseudo_random(1 << 20, 5),
                    vec![b'a'; 300_000],
                    pseudo_random(12345, 9),
                    vec![0u8; 1],
                ] {
                    let mut frame = frame_for(&data);
                    s.seal(&mut frame, 3, true);
                    let mut out = Vec::new();
                    s.open(&mut frame.clone(), 3, true, &mut out).unwrap();
                    assert_eq!(out, data);
                }
            }
        }
    }

    #[test]
    fn compression_only_when_it_helps() {
        let s = sealer(Compression::Zstd(1), LaneMode::MultiLane);
        let mut f = frame_for(&vec![b'x'; 1 << 20]);
        s.seal(&mut f, 0, false);
        assert!(f.len() < 10_000);
        let data = pseudo_random(1 << 20, 1);
        let mut f = frame_for(&data);
        s.seal(&mut f, 0, false);
        assert_eq!(f[8] & FLAG_ZSTD, 0);
        assert_eq!(f.len(), FRAME_OVERHEAD + (1 << 20) + 16);
    }

    #[test]
    fn wrong_index_flag_or_any_flip_is_refused() {
        let s = sealer(Compression::None, LaneMode::MultiLane);
        let mut frame = frame_for(&pseudo_random(40_000, 3));
        s.seal(&mut frame, 1, false);
        let mut out = Vec::new();
        assert_eq!(
            s.open(&mut frame.clone(), 2, false, &mut out),
            Err(OpenError::Tag)
        );
        assert!(s.open(&mut frame.clone(), 1, true, &mut out).is_err());
        for i in (0..frame.len()).step_by(997) {
            let mut f = frame.clone();
            f[i] ^= 4;
            assert!(s.open(&mut f, 1, false, &mut out).is_err(), "flip at {i}");
            assert!(out.is_empty(), "bytes released from a bad frame");
        }
    }

    #[test]
    fn a_wrong_checksum_is_refused_even_when_the_tag_holds() {
        let s = sealer(Compression::None, LaneMode::MultiLane);
        let mut frame = frame_for(&pseudo_random(40_000, 3));
        s.seal(&mut frame, 0, true);
        let n = frame.len();
        frame[n - 1] ^= 0x01;
        let mut out = Vec::new();
        assert_eq!(
            s.open(&mut frame, 0, true, &mut out),
            Err(OpenError::Checksum)
        );
        assert!(
            out.is_empty(),
            "bytes released from a frame with a bad checksum"
        );

        let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
        let mut sealed = seal_index(&keys, &[2; 16], &pseudo_random(1000, 4));
        let n = sealed.len();
        sealed[n - 1] ^= 0x01;
        assert_eq!(
            open_index(&keys, &[2; 16], sealed),
            Err(OpenError::Checksum)
        );
    }

    #[test]
    fn zstd_payload_is_exactly_one_frame_of_raw_len_bytes() {
        let data = vec![b'a'; 5000];
        let one = zstd::bulk::compress(&data, 1).unwrap();
        let mut out = Vec::new();
        decompress(&one, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
        // The frame declares (and holds) more, or fewer, bytes than raw_len.
        assert!(decompress(&one, data.len() - 1, &mut out).is_err());
        assert!(decompress(&one, data.len() + 1, &mut out).is_err());
        // Bytes after the frame: junk, or a second frame that would make up raw_len.
        let mut trailing = one.clone();
        trailing.push(0);
        assert!(decompress(&trailing, data.len(), &mut out).is_err());
        let half = zstd::bulk::compress(&data[..2500], 1).unwrap();
        let two = [half.clone(), half].concat();
        assert!(decompress(&two, data.len(), &mut out).is_err());
        // A skippable frame (magic 0x184D2A50, length 0) before the real one.
        let skippable = [&[0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0][..], &one].concat();
        assert!(decompress(&skippable, data.len(), &mut out).is_err());
    }

    #[test]
    fn index_round_trip_and_tamper() {
        let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
        let plain = pseudo_random(1000, 4);
        let sealed = seal_index(&keys, &[2; 16], &plain);
        assert_eq!(open_index(&keys, &[2; 16], sealed.clone()).unwrap(), plain);
        assert!(open_index(&keys, &[3; 16], sealed.clone()).is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(open_index(&keys, &[2; 16], bad), Err(OpenError::Checksum));
    }
}
