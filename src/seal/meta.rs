//! Format v2's keyed parts (docs/FORMAT.md v2.3, v2.4, v2.6.1): sealing and opening meta
//! frames (index chunks, block-table chunks, the directory), the v2 header MAC and the
//! chain commitment. The keys are [`SubKeys::derive_v2`]'s: the same field names as v1,
//! v2 labels, so a v1 index or header never opens here.
//!
//! A meta frame is one AES-256-CBC stream (random IV, PKCS#7) and an HMAC-SHA256 tag over
//! the frame's plain fields and ciphertext, bound to the session id, the frame's kind (a
//! plain field under the tag) and its number `n` among frames of its kind. Opening checks
//! the CRC, the prefix and the tag before a single byte is decrypted.

use aes::Aes256;
use cipher::{Array, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use hmac::Mac;

use super::compress::{compress_in_place, decompress};
use super::{Block, Entropy, HmacSha256, OpenError};
use crate::format::crc32c;
use crate::format::frame::FRAME_PREFIX;
use crate::format::header;
use crate::format::v2::validate::{RawHeaderV2, meta_bound, parse_meta_prefix};
use crate::format::v2::{
    HeaderBodyV2, META_BLOCKS, META_FLAG_LAST, META_FLAG_ZSTD, META_INDEX, META_OVERHEAD,
    META_PREFIX, META_SUFFIX, MIN_META_FRAME,
};
use crate::keys::{SessionId, SubKeys};

const META_MAC_CONTEXT: &[u8] = b"coffer/v2/meta";
const HEADER_MAC_CONTEXT: &[u8] = b"coffer/v2/header";
const COMMITMENT_CONTEXT: &[u8] = b"coffer/v2/commitment";
const IV_OFFSET: usize = 10;

/// The purpose label of a meta frame's IV draw: one per kind, the counter being `n`, so
/// that no two frames of one archive draw the same bytes from a fixed test stream.
fn iv_purpose(kind: u8) -> &'static [u8] {
    match kind {
        META_INDEX => b"meta-iv/index",
        META_BLOCKS => b"meta-iv/blocks",
        _ => b"meta-iv/directory",
    }
}

fn meta_mac(keys: &SubKeys, session_id: &SessionId, n: u64, authenticated: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.meta_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(META_MAC_CONTEXT);
    m.update(session_id);
    m.update(&n.to_le_bytes());
    m.update(authenticated);
    m
}

/// Seal `plain` as meta frame `n` of `kind` (v2.6.1): the whole frame, CRC included.
/// `compress` is the header's `compression = 1`; the payload is the zstd frame only when
/// that saves more than one AES block. `last` sets `FLAG_LAST`.
///
/// Panics when `plain` is empty or above `bound(kind)`, or `kind` is unknown: a writer
/// that produced such a plaintext has a bug, and sealing it would write an archive every
/// reader refuses.
#[allow(clippy::too_many_arguments)]
pub fn seal_meta(
    keys: &SubKeys,
    session_id: &SessionId,
    kind: u8,
    n: u64,
    last: bool,
    plain: &[u8],
    compress: bool,
    entropy: Entropy,
) -> Vec<u8> {
    let bound = meta_bound(kind).expect("a known meta frame kind");
    assert!(
        !plain.is_empty() && plain.len() <= bound,
        "meta frame plaintext of {} bytes out of range",
        plain.len()
    );
    let mut flags = if last { META_FLAG_LAST } else { 0 };
    // compress_in_place works on a block frame buffer (payload after FRAME_PREFIX bytes)
    // and keeps the result only when |Z| + 16 < raw_len.
    let mut zbuf = Vec::new();
    let mut payload = plain;
    if compress {
        zbuf.reserve(FRAME_PREFIX + plain.len());
        zbuf.resize(FRAME_PREFIX, 0);
        zbuf.extend_from_slice(plain);
        if let Some(z) = compress_in_place(&mut zbuf, crate::DEFAULT_ZSTD_LEVEL) {
            payload = &zbuf[FRAME_PREFIX..FRAME_PREFIX + z];
            flags |= META_FLAG_ZSTD;
        }
    }
    let pad = 16 - payload.len() % 16;
    let ct_len = payload.len() + pad;
    let mut out = Vec::with_capacity(META_OVERHEAD + ct_len);
    out.extend_from_slice(&(ct_len as u32).to_le_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out.push(kind);
    out.push(flags);
    let mut iv = [0u8; 16];
    entropy.fill(iv_purpose(kind), n, &mut iv);
    out.extend_from_slice(&iv);
    out.extend_from_slice(payload);
    out.resize(META_PREFIX + ct_len, pad as u8);
    let cipher = Aes256::new_from_slice(keys.meta_enc.as_ref()).expect("32-byte key");
    let (blocks, _) = Array::slice_as_chunks_mut(&mut out[META_PREFIX..]);
    cbc::Encryptor::<Aes256>::inner_iv_init(cipher, &Block::from(iv)).encrypt_blocks(blocks);
    let tag: [u8; 32] = meta_mac(keys, session_id, n, &out)
        .finalize()
        .into_bytes()
        .into();
    out.extend_from_slice(&tag);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The tag of a sealed meta frame (what the directory records for index and block-table
/// chunks). The frame must be whole: at least [`MIN_META_FRAME`] bytes.
pub fn meta_frame_tag(frame: &[u8]) -> [u8; 32] {
    assert!(frame.len() >= MIN_META_FRAME, "not a whole meta frame");
    let at = frame.len() - META_SUFFIX;
    frame[at..at + 32].try_into().unwrap()
}

/// Open meta frame `n` of `kind` (v2.6.1 "Opening meta frame"), in this order: CRC
/// ([`OpenError::Checksum`]); prefix bounds, kind and frame length
/// ([`OpenError::Malformed`]); tag ([`OpenError::Tag`]) and, where the directory records
/// one, equality with `expected_tag` ([`OpenError::Tag`]); `FLAG_LAST` = `last`
/// ([`OpenError::Malformed`]); then decryption, padding and decompression to exactly
/// `raw_len` bytes ([`OpenError::Malformed`]). Returns the plaintext, to decode exactly.
pub fn open_meta(
    keys: &SubKeys,
    session_id: &SessionId,
    kind: u8,
    n: u64,
    last: bool,
    frame: &[u8],
    expected_tag: Option<&[u8; 32]>,
) -> Result<Vec<u8>, OpenError> {
    if frame.len() < MIN_META_FRAME {
        return Err(OpenError::Malformed("meta frame cut short".into()));
    }
    let crc_at = frame.len() - 4;
    if crc32c(&frame[..crc_at]) != u32::from_le_bytes(frame[crc_at..].try_into().unwrap()) {
        return Err(OpenError::Checksum);
    }
    let prefix = parse_meta_prefix(frame[..META_PREFIX].try_into().unwrap(), kind)
        .map_err(OpenError::Malformed)?;
    if frame.len() != prefix.frame_len() {
        return Err(OpenError::Malformed(
            "meta frame length does not match its header".into(),
        ));
    }
    let ct_end = META_PREFIX + prefix.ct_len as usize;
    let tag = &frame[ct_end..ct_end + 32];
    if meta_mac(keys, session_id, n, &frame[..ct_end])
        .verify_slice(tag)
        .is_err()
    {
        // The checksum held, so this is not storage damage: modified, moved or forged.
        return Err(OpenError::Tag);
    }
    // Tags are public (the directory and the file both hold them): a plain comparison.
    if expected_tag.is_some_and(|want| want.as_slice() != tag) {
        return Err(OpenError::Tag);
    }
    // The tag binds n, kind and flags: from here on the frame is the writer's own.
    if prefix.is_last() != last {
        return Err(OpenError::Malformed(if last {
            "the last meta frame of its kind is missing".into()
        } else {
            "a meta frame marked last is followed by more of its kind".into()
        }));
    }
    let iv = Block::try_from(&frame[IV_OFFSET..META_PREFIX]).expect("16 bytes");
    let mut body = frame[META_PREFIX..ct_end].to_vec();
    let cipher = Aes256::new_from_slice(keys.meta_enc.as_ref()).expect("32-byte key");
    let (blocks, _) = Array::slice_as_chunks_mut(&mut body);
    cbc::Decryptor::<Aes256>::inner_iv_init(cipher, &iv).decrypt_blocks(blocks);
    let pad = *body.last().expect("ct_len ≥ 16") as usize;
    if pad == 0 || pad > 16 || body[body.len() - pad..].iter().any(|&b| b as usize != pad) {
        return Err(OpenError::Malformed("bad meta frame padding".into()));
    }
    body.truncate(body.len() - pad);
    let raw_len = prefix.raw_len as usize;
    if prefix.is_compressed() {
        // raw_len ≤ bound(kind) ≤ 16 MiB, checked above: the output buffer is bounded.
        let mut out = Vec::new();
        decompress(&body, raw_len, &mut out)?;
        Ok(out)
    } else if body.len() != raw_len {
        Err(OpenError::Malformed("meta frame length mismatch".into()))
    } else {
        Ok(body)
    }
}

fn header_mac(keys: &SubKeys, authenticated: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.header_mac.as_ref())
        .expect("HMAC takes any key length");
    m.update(HEADER_MAC_CONTEXT);
    m.update(authenticated);
    m
}

/// Encode a v2 header and close it with its MAC (context `coffer/v2/header`) and CRC.
pub fn seal_header_v2(body: &HeaderBodyV2, keys: &SubKeys) -> Vec<u8> {
    let mut bytes = body.encode_unsealed();
    let tag: [u8; 32] = header_mac(keys, &bytes).finalize().into_bytes().into();
    header::close(&mut bytes, &tag);
    bytes
}

/// Check a v2 header's MAC (constant time).
pub fn header_v2_mac_ok(raw: &RawHeaderV2, keys: &SubKeys) -> bool {
    let (authenticated, tag) = raw.authenticated_and_tag();
    header_mac(keys, authenticated).verify_slice(tag).is_ok()
}

/// The archive's chain commitment (v2.4): `HMAC-SHA256(K_chain-commit,
/// "coffer/v2/commitment" ‖ session_id)`. Public: it opens and forges nothing.
pub fn commitment(keys: &SubKeys, session_id: &SessionId) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(keys.chain_commit.as_ref())
        .expect("HMAC takes any key length");
    m.update(COMMITMENT_CONTEXT);
    m.update(session_id);
    m.finalize().into_bytes().into()
}

/// Whether `expected` (a child's `parent_commitments` record) is this archive's commitment,
/// compared without an early exit, so a look-alike parent learns nothing from how long the
/// refusal took.
pub(crate) fn commitment_is(keys: &SubKeys, session_id: &SessionId, expected: &[u8; 32]) -> bool {
    let ours = commitment(keys, session_id);
    ours.iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::HeaderError;
    use crate::format::v2::validate::tests::sample_body;
    use crate::format::v2::{MAX_BLOCK_CHUNK, MAX_DIRECTORY, MAX_INDEX_CHUNK, META_DIRECTORY};
    use crate::keys::SessionKey;
    use crate::seal::tests::pseudo_random;

    const SID: SessionId = [0xb0; 16];

    fn keys() -> SubKeys {
        SubKeys::derive_v2(&SessionKey::from_bytes([1; 32]), &SID)
    }

    fn seal(kind: u8, n: u64, last: bool, plain: &[u8], compress: bool) -> Vec<u8> {
        seal_meta(
            &keys(),
            &SID,
            kind,
            n,
            last,
            plain,
            compress,
            Entropy::Fixed(7),
        )
    }

    fn open(kind: u8, n: u64, last: bool, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_meta(&keys(), &SID, kind, n, last, frame, None)
    }

    #[test]
    fn round_trips_every_kind_compressed_or_not() {
        for kind in [META_INDEX, META_BLOCKS, META_DIRECTORY] {
            for plain in [
                vec![1u8],
                vec![b'a'; 15],
                vec![b'a'; 16],
                vec![b'a'; 100_000],
                pseudo_random(50_000, 3),
            ] {
                for compress in [false, true] {
                    let f = seal(kind, 3, true, &plain, compress);
                    assert_eq!(open(kind, 3, true, &f).unwrap(), plain);
                    let t = meta_frame_tag(&f);
                    assert_eq!(
                        open_meta(&keys(), &SID, kind, 3, true, &f, Some(&t)).unwrap(),
                        plain
                    );
                    let zstd = f[9] & META_FLAG_ZSTD != 0;
                    assert_eq!(zstd, compress && plain.len() == 100_000, "{}", plain.len());
                    assert_eq!(
                        f.len(),
                        62 + u32::from_le_bytes(f[..4].try_into().unwrap()) as usize
                    );
                }
            }
        }
        // The largest plaintext of each kind seals and opens.
        for (kind, bound) in [
            (META_INDEX, MAX_INDEX_CHUNK),
            (META_BLOCKS, MAX_BLOCK_CHUNK),
            (META_DIRECTORY, MAX_DIRECTORY),
        ] {
            let plain = pseudo_random(bound, 5);
            let f = seal(kind, 0, true, &plain, true);
            assert_eq!(f.len(), bound + 16 + 62);
            assert_eq!(open(kind, 0, true, &f).unwrap(), plain);
        }
    }

    #[test]
    fn fresh_ivs_per_kind_and_number() {
        let a = seal(META_INDEX, 0, false, b"same", false);
        let b = seal(META_INDEX, 1, false, b"same", false);
        let c = seal(META_BLOCKS, 0, false, b"same", false);
        assert_ne!(a[10..26], b[10..26]);
        assert_ne!(a[10..26], c[10..26]);
        let os = seal_meta(
            &keys(),
            &SID,
            META_INDEX,
            0,
            false,
            b"same",
            false,
            Entropy::Os,
        );
        let os2 = seal_meta(
            &keys(),
            &SID,
            META_INDEX,
            0,
            false,
            b"same",
            false,
            Entropy::Os,
        );
        assert_ne!(os[10..26], os2[10..26]);
    }

    #[test]
    fn every_flip_is_refused_and_the_crc_comes_first() {
        let plain = pseudo_random(3000, 9);
        for compress in [false, true] {
            let plain = if compress {
                vec![b'z'; 3000]
            } else {
                plain.clone()
            };
            let f = seal(META_INDEX, 2, false, &plain, compress);
            for i in 0..f.len() {
                for bit in [0x01, 0x80] {
                    let mut b = f.clone();
                    b[i] ^= bit;
                    assert_eq!(
                        open(META_INDEX, 2, false, &b),
                        Err(OpenError::Checksum),
                        "{i}"
                    );
                }
            }
            // With the CRC fixed, the flip reaches the prefix checks or the tag.
            for i in 0..f.len() - 4 {
                let mut b = f.clone();
                b[i] ^= 0x01;
                let n = b.len();
                let crc = crc32c(&b[..n - 4]);
                b[n - 4..].copy_from_slice(&crc.to_le_bytes());
                let err = open(META_INDEX, 2, false, &b).unwrap_err();
                if i < META_PREFIX - 16 {
                    assert!(
                        matches!(err, OpenError::Malformed(_) | OpenError::Tag),
                        "{i}"
                    );
                } else {
                    assert_eq!(err, OpenError::Tag, "{i}");
                }
            }
            assert!(open(META_INDEX, 2, false, &f[..f.len() - 1]).is_err());
            let mut longer = f.clone();
            longer.insert(30, 0);
            assert!(open(META_INDEX, 2, false, &longer).is_err());
        }
    }

    #[test]
    fn wrong_place_kind_session_or_last_flag_is_refused() {
        let f = seal(META_INDEX, 2, false, b"entries", false);
        assert_eq!(open(META_INDEX, 3, false, &f), Err(OpenError::Tag));
        assert!(matches!(
            open(META_BLOCKS, 2, false, &f),
            Err(OpenError::Malformed(_))
        ));
        assert!(matches!(
            open(META_INDEX, 2, true, &f),
            Err(OpenError::Malformed(_))
        ));
        let other = SubKeys::derive_v2(&SessionKey::from_bytes([1; 32]), &[0xa0; 16]);
        assert_eq!(
            open_meta(&other, &[0xa0; 16], META_INDEX, 2, false, &f, None),
            Err(OpenError::Tag)
        );
        // Same session key and id, v1 keys: the v2 labels keep them apart.
        let v1 = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &SID);
        assert_eq!(
            open_meta(&v1, &SID, META_INDEX, 2, false, &f, None),
            Err(OpenError::Tag)
        );
        // A kind changed in the prefix, CRC fixed: the tag binds it.
        let mut b = f.clone();
        b[8] = META_BLOCKS;
        let n = b.len();
        let crc = crc32c(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(open(META_BLOCKS, 2, false, &b), Err(OpenError::Tag));
        // A valid frame that is not the one the directory recorded.
        let again = seal(META_INDEX, 2, false, b"entrieS", false);
        assert_eq!(
            open_meta(
                &keys(),
                &SID,
                META_INDEX,
                2,
                false,
                &again,
                Some(&meta_frame_tag(&f))
            ),
            Err(OpenError::Tag)
        );
        // The last flag missing on the last chunk.
        let last = seal(META_INDEX, 4, false, b"entries", false);
        assert!(matches!(
            open(META_INDEX, 4, true, &last),
            Err(OpenError::Malformed(_))
        ));
    }

    #[test]
    fn swapped_frames_are_refused() {
        // Two frames of equal length swapped: each fails at the other's position.
        let a = seal(META_INDEX, 0, false, b"first chunk", false);
        let b = seal(META_INDEX, 1, false, b"other chunk", false);
        assert_eq!(a.len(), b.len());
        assert_eq!(open(META_INDEX, 0, false, &b), Err(OpenError::Tag));
        assert_eq!(open(META_INDEX, 1, false, &a), Err(OpenError::Tag));
        // From another archive under the same key but another id.
        let other = seal_meta(
            &keys(),
            &[1; 16],
            META_INDEX,
            0,
            false,
            b"first chunk",
            false,
            Entropy::Fixed(7),
        );
        assert_eq!(open(META_INDEX, 0, false, &other), Err(OpenError::Tag));
    }

    /// Frames that pass tag and CRC (a key holder wrote them) but break the payload rules.
    #[test]
    fn bad_payloads_under_a_valid_tag_are_malformed() {
        let k = keys();
        let reseal = |raw_len: u32, flags: u8, payload: &[u8]| {
            let pad = 16 - payload.len() % 16;
            let mut f = Vec::new();
            f.extend_from_slice(&((payload.len() + pad) as u32).to_le_bytes());
            f.extend_from_slice(&raw_len.to_le_bytes());
            f.push(META_INDEX);
            f.push(flags);
            f.extend_from_slice(&[9; 16]);
            f.extend_from_slice(payload);
            f.resize(f.len() + pad, pad as u8);
            let cipher = Aes256::new_from_slice(k.meta_enc.as_ref()).unwrap();
            let (blocks, _) = Array::slice_as_chunks_mut(&mut f[META_PREFIX..]);
            cbc::Encryptor::<Aes256>::inner_iv_init(cipher, &Block::from([9; 16]))
                .encrypt_blocks(blocks);
            let tag: [u8; 32] = meta_mac(&k, &SID, 0, &f).finalize().into_bytes().into();
            f.extend_from_slice(&tag);
            let crc = crc32c(&f);
            f.extend_from_slice(&crc.to_le_bytes());
            f
        };
        let ok = reseal(5, META_FLAG_LAST, b"hello");
        assert_eq!(open(META_INDEX, 0, true, &ok).unwrap(), b"hello");
        for (what, f) in [
            ("raw_len", reseal(6, META_FLAG_LAST, b"hello")),
            (
                "not zstd",
                reseal(5, META_FLAG_LAST | META_FLAG_ZSTD, b"hello"),
            ),
            ("zstd length", {
                let z = zstd::bulk::compress(&[b'a'; 400], 1).unwrap();
                reseal(401, META_FLAG_LAST | META_FLAG_ZSTD, &z)
            }),
        ] {
            assert!(
                matches!(open(META_INDEX, 0, true, &f), Err(OpenError::Malformed(_))),
                "{what}"
            );
        }
        let z = zstd::bulk::compress(&[b'a'; 400], 1).unwrap();
        let f = reseal(400, META_FLAG_LAST | META_FLAG_ZSTD, &z);
        assert_eq!(open(META_INDEX, 0, true, &f).unwrap(), vec![b'a'; 400]);
    }

    #[test]
    fn header_v2_round_trip_mac_and_flips() {
        let k = keys();
        let bytes = seal_header_v2(&sample_body(), &k);
        let raw = RawHeaderV2::parse(bytes.clone()).unwrap();
        assert_eq!(raw.body, sample_body());
        assert!(header_v2_mac_ok(&raw, &k));
        let v1 = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &SID);
        assert!(
            !header_v2_mac_ok(&raw, &v1),
            "a v1 header key opens a v2 header"
        );
        let other = SubKeys::derive_v2(&SessionKey::from_bytes([2; 32]), &SID);
        assert!(!header_v2_mac_ok(&raw, &other));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            match RawHeaderV2::parse(b.clone()) {
                Err(_) => {}
                Ok(raw) => panic!("flip at {i} accepted: {:?}", raw.body),
            }
            // The CRC recomputed: only the MAC stands in the way.
            let n = b.len();
            if i >= n - 4 {
                continue;
            }
            let crc = crc32c(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
            match RawHeaderV2::parse(b) {
                Err(e) => assert_ne!(e, HeaderError::Checksum, "flip at {i}"),
                Ok(raw) => assert!(!header_v2_mac_ok(&raw, &k), "flip at {i} accepted"),
            }
        }
    }

    #[test]
    fn commitment_of_the_worked_example() {
        // FORMAT.md v2.8.5, archive A.
        let id: SessionId = std::array::from_fn(|i| 0xa0 + i as u8);
        let sk = SessionKey::from_bytes(std::array::from_fn(|i| i as u8));
        let k = SubKeys::derive_v2(&sk, &id);
        assert_eq!(
            crate::format::hex(&commitment(&k, &id)),
            "f086f3afd84c84c4fa4aee079a108555ae37f1d976943212cc0ca61be7f1cff8"
        );
        // Another session key under the same id (a look-alike parent) commits differently.
        let look_alike = SubKeys::derive_v2(&SessionKey::from_bytes([0x20; 32]), &id);
        assert_ne!(commitment(&look_alike, &id), commitment(&k, &id));
    }
}
