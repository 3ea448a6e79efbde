//! Archive format v1: pure encode/decode of the header, block frames, index and trailer.
//! Nothing here touches files; every length read is bounded before it is used.
//! docs/FORMAT.md is the specification of these bytes and must stay true to this code.

pub mod frame;
pub mod header;
pub mod index;
pub mod trailer;
pub mod v2;

/// The one format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Cipher suite 1: AES-256-CBC segments + HMAC-SHA256, HKDF-SHA256, RSA-OAEP-SHA256.
pub const SUITE_V1: u8 = 1;

/// Compression of data blocks, recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at the given level; blocks that do not shrink are stored raw.
    Zstd(i32),
}

impl Compression {
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "off" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL)),
            _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (-7..=19).contains(&level) && level != 0 => {
                    Ok(Compression::Zstd(level))
                }
                _ => Err(format!(
                    "unknown compression {s:?}: use none, zstd or zstd:LEVEL (-7..=19, not 0)"
                )),
            },
        }
    }
}

/// CRC32C (Castagnoli), the keyless checksum on every frame and section.
pub fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

/// Lower-case hex of bytes: how session ids and fingerprints are written everywhere (file
/// names, `info`, JSON, the catalog).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
