//! Prints the numbers of the worked example of docs/FORMAT.md v2.13: `basic`'s layout,
//! header fields, sub-keys, first block frame, index chunk, block table, directory and
//! trailer, read back from the archive just written. Offsets, lengths and plaintexts do not
//! change between regenerations; nonces, IVs, ciphertexts, tags and the wrapped key do.

use coffer::format::header::{PREFIX_LEN, SUFFIX_LEN};
use coffer::format::v2::validate::RawHeaderV2;
use coffer::format::v2::{TRAILER_LEN, TrailerV2};
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::meta::open_meta;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::manifest::hex;

const LABELS: [&str; 7] = [
    "coffer/v1/data-enc",
    "coffer/v1/data-iv",
    "coffer/v1/data-mac",
    "coffer/v2/meta-enc",
    "coffer/v2/meta-mac",
    "coffer/v2/header-mac",
    "coffer/v2/chain-commit",
];

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap()
}

fn short(b: &[u8]) -> String {
    if b.len() <= 24 {
        hex(b)
    } else {
        format!(
            "{}…{} ({} bytes)",
            hex(&b[..8]),
            hex(&b[b.len() - 4..]),
            b.len()
        )
    }
}

/// A meta frame at file offset `at`: its fields, and its plaintext opened with `keys` as
/// frame `(kind, n, last)`.
fn meta(
    bytes: &[u8],
    at: usize,
    len: usize,
    (kind, n, last): (u8, u64, bool),
    keys: &SubKeys,
    sid: &[u8; 16],
) -> Vec<u8> {
    let f = &bytes[at..at + len];
    let ct = u32::from_le_bytes(f[0..4].try_into().unwrap()) as usize;
    println!(
        "  meta frame kind {kind} n {n} at {at} len {len}: ct_len {ct} raw_len {} kind {} flags {:02x} iv [{}, {}) ct [{}, {}) tag [{}, {}) crc [{}, {})",
        u32::from_le_bytes(f[4..8].try_into().unwrap()),
        f[8],
        f[9],
        at + 10,
        at + 26,
        at + 26,
        at + 26 + ct,
        at + 26 + ct,
        at + 58 + ct,
        at + 58 + ct,
        at + 62 + ct
    );
    open_meta(keys, sid, kind, n, last, f, None).unwrap()
}

pub fn print(bytes: &[u8], key: &[u8; 32]) {
    let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let h = PREFIX_LEN + body_len + SUFFIX_LEN;
    let header = RawHeaderV2::parse(bytes[..h].to_vec()).unwrap();
    let tb: &[u8; TRAILER_LEN] = bytes[bytes.len() - TRAILER_LEN..].try_into().unwrap();
    let t = TrailerV2::decode(tb).unwrap();
    println!(
        "basic walk: file_len {} H {h} body_len {body_len}",
        bytes.len()
    );
    println!(
        "  data [{h}, {}) index [{}, {}) trailer [{}, {})",
        h + t.index_offset as usize,
        h + t.index_offset as usize,
        h + (t.index_offset + t.index_len) as usize,
        bytes.len() - TRAILER_LEN,
        bytes.len()
    );
    // Header fields in wire order, with their file offsets.
    let f = &header.body.fields;
    let s = &header.body.recipients[0];
    let fields: Vec<(&str, Vec<u8>)> = vec![
        ("session_id", enc(&f.session_id)),
        ("created_at", enc(&f.created_at)),
        ("job_name", enc(&f.job_name)),
        ("suite", enc(&f.suite)),
        ("block_size", enc(&f.block_size)),
        ("segment_size", enc(&f.segment_size)),
        ("compression", enc(&f.compression)),
        ("content_hash", enc(&f.content_hash)),
        ("chain", enc(&f.chain)),
        ("signer", enc(&f.signer)),
        ("recipients count", enc(&header.body.recipients.len())),
        ("scheme", enc(&s.scheme)),
        ("fingerprint", enc(&s.fingerprint)),
        ("label", enc(&s.label)),
        ("wrapped_key", enc(&s.wrapped_key)),
    ];
    let mut at = 14;
    for (name, b) in &fields {
        println!("  {at:5} {name}: {}", short(b));
        at += b.len();
    }
    assert_eq!(at, 14 + body_len);
    println!("  {at:5} mac, {} crc", at + 32);
    println!(
        "  created_at {} job {:?} label {:?}",
        f.created_at, f.job_name, s.label
    );
    // Sub-keys (v2.4), independently of coffer's SubKeys.
    let sid = f.session_id;
    let hk = Hkdf::<Sha256>::new(Some(&sid), key);
    for l in LABELS {
        let mut out = [0u8; 32];
        hk.expand(l.as_bytes(), &mut out).unwrap();
        println!("  {l}: {}", hex(&out));
    }
    let keys = SubKeys::derive_v2(&SessionKey::from_bytes(*key), &sid);
    // Block 0.
    let b = &bytes[h..];
    let ct = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let raw = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    println!(
        "  block 0 at {h}: ct_len {ct} raw_len {raw} flags {:02x} nonce [{}, {}) ct [{}, {}) tag [{}, {}) crc [{}, {}) frame_len {}",
        b[8],
        h + 9,
        h + 25,
        h + 25,
        h + 25 + ct,
        h + 25 + ct,
        h + 57 + ct,
        h + 57 + ct,
        h + 61 + ct,
        61 + ct
    );
    // The index section: chunk 0, then whatever follows up to the directory.
    let dir_at = h + (t.index_offset + t.index_len) as usize - t.directory_len as usize;
    let dir = meta(
        bytes,
        dir_at,
        t.directory_len as usize,
        (3, 0, true),
        &keys,
        &sid,
    );
    println!("  directory plaintext: {}", hex(&dir));
    let d = coffer::format::v2::validate::decode_directory(&dir).unwrap();
    for (k, c) in d.chunks.iter().enumerate() {
        let at = h + c.offset as usize;
        let last = k + 1 == d.chunks.len();
        let plain = meta(
            bytes,
            at,
            c.frame_len as usize,
            (1, k as u64, last),
            &keys,
            &sid,
        );
        println!("  index chunk {k} plaintext ({} bytes):", plain.len());
        let entries = coffer::format::v2::validate::decode_chunk(&plain).unwrap();
        println!("    count {}", hex(&enc(&entries.len())));
        for e in &entries {
            println!(
                "    {:?}: {}",
                String::from_utf8_lossy(&e.path),
                hex(&enc(e))
            );
        }
    }
    for (k, c) in d.block_chunks.iter().enumerate() {
        let at = h + c.offset as usize;
        let last = k + 1 == d.block_chunks.len();
        let plain = meta(
            bytes,
            at,
            c.frame_len as usize,
            (2, k as u64, last),
            &keys,
            &sid,
        );
        println!("  block-table chunk {k} plaintext: {}", hex(&plain));
    }
    println!("  trailer: {}", hex(tb));
}
