//! The header reader on arbitrary bytes: `parse_prefix` and `RawHeader::parse` must return
//! an error or a header that satisfies every bound `validate` promises, never panic or
//! allocate beyond the input. A second pass wraps the input as a header body with a correct
//! length and checksum, so that the fuzzer reaches the postcard decoder and `validate`
//! without having to guess a CRC32C.
#![no_main]

use coffer::format::crc32c;
use coffer::format::header::{
    self, MAX_BODY_LEN, MAX_RECIPIENTS, PREFIX_LEN, RawHeader, SUFFIX_LEN,
};
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::{header_mac_ok, seal_header};
use libfuzzer_sys::fuzz_target;

fn check(bytes: Vec<u8>) {
    let len = bytes.len();
    let Ok(raw) = RawHeader::parse(bytes) else {
        return;
    };
    let body = &raw.body;
    assert_eq!(raw.len() as usize, len);
    assert!(len <= PREFIX_LEN + MAX_BODY_LEN as usize + SUFFIX_LEN);
    assert!(!body.recipients.is_empty() && body.recipients.len() <= MAX_RECIPIENTS);
    assert!(body.signature.is_none());
    assert!(body.segment_size <= body.block_size && body.segment_size % 16 == 0);
    // A header that parses re-encodes to one that parses to the same body, and a MAC made
    // with a key the input cannot know is refused.
    let keys = SubKeys::derive(&SessionKey::from_bytes([7; 32]), &body.session_id);
    assert!(!header_mac_ok(&raw, &keys) || raw.bytes == seal_header(body, &keys));
    let again = RawHeader::parse(seal_header(body, &keys)).expect("re-encoded header parses");
    assert_eq!(&again.body, body);
    assert!(header_mac_ok(&again, &keys));
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= PREFIX_LEN {
        let _ = header::parse_prefix(data[..PREFIX_LEN].try_into().unwrap());
    }
    check(data.to_vec());

    // The input as a body, framed with the right prefix, an (unknown) MAC and a right CRC.
    if data.len() <= MAX_BODY_LEN as usize {
        let mut bytes = Vec::with_capacity(PREFIX_LEN + data.len() + SUFFIX_LEN);
        bytes.extend_from_slice(&header::MAGIC);
        bytes.extend_from_slice(&coffer::format::FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&[0x5a; 32]);
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        check(bytes);
    }
});
