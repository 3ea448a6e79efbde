//! Sealing and opening: one block frame, the encrypted index section, and the header MAC.
//! Everything in the archive that a key touches is here; `format/` only encodes and
//! decodes.
//!
//! A block's payload is compressed when that pays (`compress`), PKCS#7-padded and cut
//! into fixed CBC segments, each a standard AES-256-CBC stream with its own IV, encrypted
//! all at once (`lanes`). Then HMAC-SHA256 over the frame (encrypt-then-MAC). Opening
//! checks the checksum and the tag before a single byte is decrypted.

mod compress;
mod lanes;
/// Format v2 meta frames and header (public for tests that craft hostile archives).
pub mod meta;

use aes::Aes256;
use cipher::consts::U16;
use cipher::{Array, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::format::frame::{
    FLAG_LAST, FLAG_ZSTD, FRAME_OVERHEAD, FRAME_PREFIX, FrameHeader, NONCE_OFFSET, checksum_ok,
};
use crate::format::header::{self, HeaderBody, RawHeader};
use crate::format::{Compression, crc32c};
use crate::keys::{SessionId, SubKeys};
use compress::{compress_in_place, decompress};
pub use lanes::{LaneMode, encrypt_segments};
use lanes::{
    decrypt_lanes, derive_ivs, encrypt_lanes, encrypt_sequential, segment_count, warm_cache,
};

type Block = Array<u8, U16>;
type HmacSha256 = Hmac<Sha256>;

const INDEX_MAC_CONTEXT: &[u8] = b"coffer/v1/index";
const HEADER_MAC_CONTEXT: &[u8] = b"coffer/v1/header";

/// Where a writer's random bytes (session key, block nonces, index IV) and its clock come
/// from. Outside this crate's own unit tests there is only [`Entropy::Os`]: the fixed
/// variant exists under `cfg(test)` alone, so neither the binary nor a library user can
/// write an archive with predictable nonces, even by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entropy {
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
    let tag: [u8; 32] = index_mac(keys, session_id, &out)
        .finalize()
        .into_bytes()
        .into();
    out.extend_from_slice(&tag);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The index MAC over `iv_and_ct`, ready to finalize or verify.
fn index_mac(keys: &SubKeys, session_id: &SessionId, iv_and_ct: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.meta_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(INDEX_MAC_CONTEXT);
    m.update(session_id);
    m.update(iv_and_ct);
    m
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
    if index_mac(keys, session_id, &section[..tag_at])
        .verify_slice(&section[tag_at..tag_at + 32])
        .is_err()
    {
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

/// Encode a header and close it with its MAC (header-mac sub-key) and checksum.
pub fn seal_header(body: &HeaderBody, keys: &SubKeys) -> Vec<u8> {
    let mut bytes = header::encode_unsealed(body);
    let tag = header_tag(keys, &bytes);
    header::close(&mut bytes, &tag);
    bytes
}

/// Check a header's MAC with the session's sub-keys (constant time).
pub fn header_mac_ok(raw: &RawHeader, keys: &SubKeys) -> bool {
    let (authenticated, tag) = raw.authenticated_and_tag();
    header_mac(keys, authenticated).verify_slice(tag).is_ok()
}

fn header_tag(keys: &SubKeys, authenticated: &[u8]) -> [u8; 32] {
    header_mac(keys, authenticated)
        .finalize()
        .into_bytes()
        .into()
}

fn header_mac(keys: &SubKeys, authenticated: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.header_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(HEADER_MAC_CONTEXT);
    m.update(authenticated);
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::header::tests::sample;
    use crate::keys::SessionKey;

    fn sealer(compression: Compression, mode: LaneMode) -> BlockSealer {
        let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
        BlockSealer::new(&keys, [2; 16], 1 << 20, 16384, compression).with_lane_mode(mode)
    }

    /// Xorshift bytes: incompressible, and the same on every run.
    pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn header_round_trip_and_mac() {
        let keys = SubKeys::derive(&SessionKey::from_bytes([3; 32]), &[9; 16]);
        let bytes = seal_header(&sample(), &keys);
        let raw = RawHeader::parse(bytes.clone()).unwrap();
        assert_eq!(raw.body, sample());
        assert!(header_mac_ok(&raw, &keys));
        let other = SubKeys::derive(&SessionKey::from_bytes([4; 32]), &[9; 16]);
        assert!(!header_mac_ok(&raw, &other));
    }

    #[test]
    fn every_flipped_header_byte_is_caught() {
        let keys = SubKeys::derive(&SessionKey::from_bytes([3; 32]), &[9; 16]);
        let bytes = seal_header(&sample(), &keys);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            match RawHeader::parse(b) {
                Err(_) => {}
                Ok(raw) => assert!(!header_mac_ok(&raw, &keys), "flip at {i} accepted"),
            }
        }
    }
}
