//! Block frames: `ct_len ‖ raw_len ‖ flags ‖ nonce ‖ ciphertext ‖ tag ‖ crc32c`.
//! The header fields are plain so that a keyless reader can walk the frames; they are
//! covered by the block's tag all the same.

use super::crc32c;

/// ct_len (u32) + raw_len (u32) + flags (u8) + nonce (16).
pub const FRAME_PREFIX: usize = 4 + 4 + 1 + 16;
/// HMAC-SHA256 tag + CRC32C.
pub const FRAME_SUFFIX: usize = 32 + 4;
pub const FRAME_OVERHEAD: usize = FRAME_PREFIX + FRAME_SUFFIX;
pub const NONCE_OFFSET: usize = 9;

/// Payload was zstd-compressed before encryption.
pub const FLAG_ZSTD: u8 = 0b01;
/// This is the last block of the archive.
pub const FLAG_LAST: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_LAST;

/// The plain fields at the start of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub ct_len: u32,
    pub raw_len: u32,
    pub flags: u8,
}

impl FrameHeader {
    /// Parse and bound the fields against the archive's block size.
    pub fn parse(prefix: &[u8], block_size: u32) -> Result<Self, String> {
        if prefix.len() < 9 {
            return Err("frame header cut short".into());
        }
        let ct_len = u32::from_le_bytes(prefix[0..4].try_into().unwrap());
        let raw_len = u32::from_le_bytes(prefix[4..8].try_into().unwrap());
        let flags = prefix[8];
        // Compressed payloads are only kept when smaller than the raw data, so no payload
        // exceeds the block size, and PKCS#7 adds 1..=16 bytes.
        if ct_len == 0 || ct_len % 16 != 0 || ct_len > block_size + 16 {
            return Err(format!("ciphertext length {ct_len} out of range"));
        }
        if raw_len == 0 || raw_len > block_size {
            return Err(format!("block length {raw_len} out of range"));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(format!("unknown frame flags {flags:#04x}"));
        }
        Ok(FrameHeader {
            ct_len,
            raw_len,
            flags,
        })
    }

    pub fn frame_len(&self) -> usize {
        FRAME_OVERHEAD + self.ct_len as usize
    }

    pub fn is_last(&self) -> bool {
        self.flags & FLAG_LAST != 0
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

/// Keyless check of one whole frame's CRC32C.
pub fn checksum_ok(frame: &[u8]) -> bool {
    if frame.len() < FRAME_OVERHEAD {
        return false;
    }
    let at = frame.len() - 4;
    crc32c(&frame[..at]) == u32::from_le_bytes(frame[at..].try_into().unwrap())
}
