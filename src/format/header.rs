//! The header envelope: session parameters and recipient stanzas, closed by an HMAC
//! (header-mac sub-key) and a CRC32C. It never holds file names or sizes. Encoding and
//! decoding only: the MAC is computed and checked in [`crate::seal`].

use serde::{Deserialize, Serialize};

use super::{Compression, FORMAT_VERSION, SUITE_V1, crc32c};
use crate::keys::SessionId;

/// First eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"\x89COFFER\n";
/// magic + version (u16) + body length (u32).
pub const PREFIX_LEN: usize = 14;
/// HMAC-SHA256 tag + CRC32C after the body.
pub const SUFFIX_LEN: usize = 32 + 4;
/// A header body is small (a few stanzas); anything larger is refused before allocating.
pub const MAX_BODY_LEN: u32 = 1 << 20;
/// At most this many recipients in one archive.
pub const MAX_RECIPIENTS: usize = 64;
/// Stanza scheme 1: RSA-OAEP, SHA-256 and MGF1-SHA-256, label "coffer/v1/rsa-oaep".
pub const STANZA_RSA_OAEP_SHA256: u16 = 1;
/// Block sizes accepted by readers and writers.
pub const MIN_BLOCK_SIZE: u32 = 64 * 1024;
pub const MAX_BLOCK_SIZE: u32 = 16 * 1024 * 1024;
/// CBC segment sizes accepted (multiples of 16).
pub const MIN_SEGMENT_SIZE: u32 = 4096;
const MAX_LABEL_LEN: usize = 256;
const MAX_WRAPPED_LEN: usize = MAX_RSA_BYTES;
const MAX_RSA_BYTES: usize = 16384 / 8;

/// One recipient's copy of the session key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stanza {
    pub scheme: u16,
    pub fingerprint: [u8; 32],
    pub label: String,
    pub wrapped_key: Vec<u8>,
}

/// The reserved, versioned place for a sender signature. Format v1 writers never set it;
/// v1 readers refuse an archive that carries one, because they cannot check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureSlot {
    pub scheme: u16,
    pub key_id: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The header's fields, in wire order (postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderBody {
    pub session_id: SessionId,
    /// Seconds since the Unix epoch, UTC.
    pub created_at: i64,
    pub job_name: String,
    pub suite: u8,
    pub block_size: u32,
    pub segment_size: u32,
    /// 0 = none, 1 = zstd.
    pub compression: u8,
    pub recipients: Vec<Stanza>,
    pub signature: Option<SignatureSlot>,
}

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    BadMagic,
    UnsupportedVersion(u16),
    BodyTooLarge(u32),
    Checksum,
    Malformed(String),
}

impl HeaderBody {
    pub fn compression(&self) -> Compression {
        match self.compression {
            0 => Compression::None,
            // The level is a writer's choice and does not matter to readers.
            _ => Compression::Zstd(0),
        }
    }

    /// Check every bound a reader relies on.
    pub fn validate(&self) -> Result<(), HeaderError> {
        let bad = |m: &str| Err(HeaderError::Malformed(m.to_string()));
        if self.suite != SUITE_V1 {
            return bad("unknown cipher suite");
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return bad("block size out of range");
        }
        if self.segment_size < MIN_SEGMENT_SIZE
            || !self.segment_size.is_multiple_of(16)
            || self.segment_size > self.block_size
        {
            return bad("segment size out of range");
        }
        if self.compression > 1 {
            return bad("unknown compression");
        }
        if self.recipients.is_empty() || self.recipients.len() > MAX_RECIPIENTS {
            return bad("recipient count out of range");
        }
        for (i, s) in self.recipients.iter().enumerate() {
            if s.label.len() > MAX_LABEL_LEN || s.wrapped_key.len() > MAX_WRAPPED_LEN {
                return bad("recipient stanza too large");
            }
            if self.recipients[..i]
                .iter()
                .any(|o| o.fingerprint == s.fingerprint)
            {
                return bad("two recipient stanzas share one fingerprint");
            }
        }
        if self.job_name.len() > MAX_LABEL_LEN {
            return bad("job name too long");
        }
        if self.signature.is_some() {
            return bad("archive carries a signature of a scheme this version cannot check");
        }
        Ok(())
    }
}

/// Encode a header up to its MAC: prefix and body, the bytes the MAC covers. A writer
/// then appends the tag and checksum with [`close`] (see [`crate::seal::seal_header`]).
pub fn encode_unsealed(body: &HeaderBody) -> Vec<u8> {
    let body_bytes = postcard::to_stdvec(body).expect("header body always serializes");
    let mut out = Vec::with_capacity(PREFIX_LEN + body_bytes.len() + SUFFIX_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&body_bytes);
    out
}

/// Append the MAC `tag` and the checksum over everything before it.
pub fn close(unsealed: &mut Vec<u8>, tag: &[u8; 32]) {
    unsealed.extend_from_slice(tag);
    let crc = crc32c(unsealed);
    unsealed.extend_from_slice(&crc.to_le_bytes());
}

/// Read the fixed prefix: returns the body length, bounded.
pub fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<u32, HeaderError> {
    if prefix[..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([prefix[8], prefix[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let len = u32::from_le_bytes(prefix[10..14].try_into().unwrap());
    if len > MAX_BODY_LEN {
        return Err(HeaderError::BodyTooLarge(len));
    }
    Ok(len)
}

/// A header read from disk, not yet authenticated.
#[derive(Clone, Debug)]
pub struct RawHeader {
    pub body: HeaderBody,
    /// Every byte of the header, including MAC and checksum.
    pub bytes: Vec<u8>,
}

impl RawHeader {
    /// Parse and check a whole header (`bytes` = prefix + body + suffix).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, HeaderError> {
        if bytes.len() < PREFIX_LEN + SUFFIX_LEN {
            return Err(HeaderError::Malformed("header too short".into()));
        }
        let len = parse_prefix(bytes[..PREFIX_LEN].try_into().unwrap())? as usize;
        if bytes.len() != PREFIX_LEN + len + SUFFIX_LEN {
            return Err(HeaderError::Malformed("header length mismatch".into()));
        }
        let crc_at = bytes.len() - 4;
        let stored = u32::from_le_bytes(bytes[crc_at..].try_into().unwrap());
        if crc32c(&bytes[..crc_at]) != stored {
            return Err(HeaderError::Checksum);
        }
        let (body, rest): (HeaderBody, &[u8]) =
            postcard::take_from_bytes(&bytes[PREFIX_LEN..PREFIX_LEN + len])
                .map_err(|e| HeaderError::Malformed(format!("header body: {e}")))?;
        if !rest.is_empty() {
            return Err(HeaderError::Malformed(
                "trailing bytes in header body".into(),
            ));
        }
        body.validate()?;
        Ok(RawHeader { body, bytes })
    }

    /// The bytes the MAC covers (prefix and body) and the stored tag.
    pub fn authenticated_and_tag(&self) -> (&[u8], &[u8]) {
        let mac_at = self.bytes.len() - SUFFIX_LEN;
        (&self.bytes[..mac_at], &self.bytes[mac_at..mac_at + 32])
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> HeaderBody {
        HeaderBody {
            session_id: [9; 16],
            created_at: 1_700_000_000,
            job_name: "nightly".into(),
            suite: SUITE_V1,
            block_size: 1 << 20,
            segment_size: 16384,
            compression: 1,
            recipients: vec![Stanza {
                scheme: STANZA_RSA_OAEP_SHA256,
                fingerprint: [1; 32],
                label: "ops".into(),
                wrapped_key: vec![5; 384],
            }],
            signature: None,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let mut bytes = encode_unsealed(&sample());
        close(&mut bytes, &[6; 32]);
        let raw = RawHeader::parse(bytes.clone()).unwrap();
        assert_eq!(raw.body, sample());
        assert_eq!(raw.authenticated_and_tag().1, &[6; 32]);
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        assert_eq!(RawHeader::parse(bytes).unwrap_err(), HeaderError::Checksum);
    }

    #[test]
    fn refuses_future_version_and_huge_length() {
        let mut p = [0u8; PREFIX_LEN];
        p[..8].copy_from_slice(&MAGIC);
        p[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(parse_prefix(&p), Err(HeaderError::UnsupportedVersion(2)));
        p[8..10].copy_from_slice(&1u16.to_le_bytes());
        p[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_prefix(&p), Err(HeaderError::BodyTooLarge(u32::MAX)));
    }

    #[test]
    fn refuses_signature_and_duplicate_fingerprints() {
        let mut b = sample();
        b.signature = Some(SignatureSlot {
            scheme: 1,
            key_id: vec![],
            signature: vec![],
        });
        assert!(b.validate().is_err());
        let mut b = sample();
        b.recipients.push(b.recipients[0].clone());
        assert!(b.validate().is_err());
    }
}
