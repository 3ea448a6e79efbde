//! The fixed-size trailer at the end of an archive: where the index is, how many blocks
//! there are, and a closing magic so that a cut-off file is recognised as such.

use super::crc32c;

pub const TRAILER_MAGIC: [u8; 8] = *b"\x89CFREND\n";
/// index_offset (u64) + index_len (u64) + block_count (u64) + magic + crc32c.
pub const TRAILER_LEN: usize = 8 + 8 + 8 + 8 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the index section, counted from the end of the header.
    pub index_offset: u64,
    pub index_len: u64,
    pub block_count: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        out[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.block_count.to_le_bytes());
        out[24..32].copy_from_slice(&TRAILER_MAGIC);
        let crc = crc32c(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse a trailer. `Err` says what is wrong with it.
    pub fn decode(bytes: &[u8; TRAILER_LEN]) -> Result<Self, &'static str> {
        if bytes[24..32] != TRAILER_MAGIC {
            return Err("no trailer at the end of the file (truncated or not finished)");
        }
        if crc32c(&bytes[..32]) != u32::from_le_bytes(bytes[32..36].try_into().unwrap()) {
            return Err("trailer checksum mismatch");
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().unwrap());
        Ok(Trailer {
            index_offset: u(0..8),
            index_len: u(8..16),
            block_count: u(16..24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_flip() {
        let t = Trailer {
            index_offset: 123,
            index_len: 456,
            block_count: 7,
        };
        let bytes = t.encode();
        assert_eq!(Trailer::decode(&bytes), Ok(t));
        for i in 0..TRAILER_LEN {
            let mut b = bytes;
            b[i] ^= 0x80;
            assert!(Trailer::decode(&b).is_err(), "flip at {i} accepted");
        }
    }
}
