//! The index decoder on arbitrary bytes, as `Archive::unlock` runs it once the index MAC
//! has verified: postcard decode (must consume every byte), then `Index::validate`. An index
//! that validates must keep every promise restore relies on. The sealed-section reader
//! (`open_index`) gets the raw bytes too, and sealing then opening the input must give it
//! back unchanged.
#![no_main]

use coffer::format::frame::FRAME_OVERHEAD;
use coffer::format::index::{Index, KIND_DIR, KIND_FILE, check_path, parent};
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::{open_index, seal_index};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

const SESSION_ID: [u8; 16] = [3; 16];

/// What a validated index promises (docs/SECURITY.md, "Failing closed").
fn check_valid(index: &Index, block_size: u32, data_len: u64) {
    let mut kinds: HashMap<&str, u8> = HashMap::new();
    let mut next = 0u64;
    for e in &index.entries {
        assert!(
            check_path(&e.path).is_ok(),
            "unsafe path accepted: {:?}",
            e.path
        );
        if let Some(p) = parent(&e.path) {
            assert_eq!(
                kinds.get(p),
                Some(&KIND_DIR),
                "parent of {:?} not a folder",
                e.path
            );
        }
        assert!(
            kinds.insert(&e.path, e.kind).is_none(),
            "duplicate {:?}",
            e.path
        );
        if e.kind == KIND_FILE {
            assert!(e.offset >= next);
            next = e.offset + e.size;
            assert!(next <= index.stream_len);
        } else {
            assert_eq!((e.size, e.offset), (0, 0));
        }
    }
    let mut at = 0u64;
    let mut raw = 0u64;
    for (i, b) in index.blocks.iter().enumerate() {
        assert_eq!(b.offset, at);
        assert!(b.frame_len as usize > FRAME_OVERHEAD);
        assert!(b.raw_len > 0 && b.raw_len <= block_size);
        if i + 1 < index.blocks.len() {
            assert_eq!(b.raw_len, block_size);
        }
        at += b.frame_len as u64;
        raw += b.raw_len as u64;
    }
    assert_eq!(at, data_len);
    assert_eq!(raw, index.stream_len);
}

fuzz_target!(|data: &[u8]| {
    if let Ok((index, [])) = postcard::take_from_bytes::<Index>(data) {
        // The data section length the block table claims, so that decoding goes on past
        // the table check; and one that cannot match.
        let claimed = index
            .blocks
            .iter()
            .fold(0u64, |n, b| n.saturating_add(b.frame_len as u64));
        for block_size in [64 * 1024, 1 << 20] {
            for data_len in [claimed, claimed.wrapping_add(1)] {
                if index.validate(block_size, data_len).is_ok() {
                    check_valid(&index, block_size, data_len);
                }
            }
        }
        // The writer's encoding of a decoded index decodes to the same index.
        let again = postcard::to_stdvec(&index).expect("index serializes");
        let (back, rest) =
            postcard::take_from_bytes::<Index>(&again).expect("re-encoded index decodes");
        assert!(rest.is_empty());
        assert_eq!(back, index);
    }

    let keys = SubKeys::derive(&SessionKey::from_bytes([9; 32]), &SESSION_ID);
    let _ = open_index(&keys, &SESSION_ID, data.to_vec());
    let sealed = seal_index(&keys, &SESSION_ID, data);
    let opened = open_index(&keys, &SESSION_ID, sealed).expect("sealed index opens");
    assert_eq!(opened, data);
});
