//! zstd for block payloads: compress only when it pays (a small sample first, so that
//! media, archives and encrypted data cost almost nothing), and inflate exactly one
//! standard frame of the length the frame header gives.

use std::cell::RefCell;

use super::OpenError;
use crate::format::frame::FRAME_PREFIX;

/// Bytes sampled from a block to decide whether compressing it is worth the time.
const COMPRESSIBILITY_SAMPLE: usize = 16 * 1024;

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
pub(super) fn compress_in_place(buf: &mut Vec<u8>, level: i32) -> Option<usize> {
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

pub(super) fn decompress(
    payload: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), OpenError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
