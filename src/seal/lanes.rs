//! Multi-lane CBC: every CBC segment of a block is its own AES-256-CBC stream, and the
//! segments of one block are encrypted all at once, one lane per segment, through the `aes`
//! crate's parallel-blocks backend (8 lanes with AES-NI, 30 with VAES-256, 64 with AVX-512
//! VAES): one CBC stream is latency-bound, many independent streams fill the pipeline.
//! Decryption is parallel within a segment already and goes segment by segment.

use aes::Aes256;
use cipher::consts::U16;
use cipher::typenum::Unsigned;
use cipher::{
    Array, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockModeDecrypt,
    BlockModeEncrypt, BlockSizeUser, InnerIvInit, KeyInit, ParBlocks,
};

use super::Block;

/// Steps of every lane gathered into one contiguous tile. Lanes sit a power-of-two
/// distance apart (16 KiB segments), so touching them in turn one AES block at a time
/// evicts the same L1 set over and over; a tile turns that into one cache line per lane.
const TILE_STEPS: usize = 8;

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

/// Number of CBC segments in a ciphertext of `ct_len` bytes: the padded payload is cut
/// into `segment_size` pieces, the last one holding the rest (and so the padding).
pub(super) fn segment_count(ct_len: usize, segment_size: usize) -> usize {
    ct_len.div_ceil(segment_size).max(1)
}

/// IV of segment j = AES-256(data-iv key, nonce XOR j as a big-endian u32 in its last
/// four bytes): unpredictable, distinct per segment, as in NIST SP 800-38A appendix C.
pub(super) fn derive_ivs(iv_cipher: &Aes256, nonce: &[u8; 16], lanes: usize) -> Vec<Block> {
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
/// Exposed for the lane benchmarks; archives are sealed with
/// [`crate::seal::BlockSealer::seal`].
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
pub(super) fn decrypt_lanes(cipher: &Aes256, ivs: &[Block], body: &mut [u8], segment_size: usize) {
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(body);
    for (seg, iv) in lane_slices(blocks, ivs.len(), segment_size / 16).zip(ivs) {
        cbc::Decryptor::<Aes256>::inner_iv_init(cipher.clone(), iv).decrypt_blocks(seg);
    }
}

/// One sequential pass over a block, a load per cache line, before the lanes start: the
/// block was filled on the reader thread's core, and 64 lanes 16 KiB apart each pull their
/// own stream of lines, more streams than the hardware prefetcher follows. A straight pass
/// streams it into this core's cache first.
pub(super) fn warm_cache(block: &[u8]) {
    let mut acc = 0u8;
    for line in block.chunks(64) {
        acc ^= line[0];
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{SessionKey, SubKeys};
    use crate::seal::tests::pseudo_random;

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
}
