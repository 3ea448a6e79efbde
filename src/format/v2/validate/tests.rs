//! Unit tests of the header, trailer, meta-frame prefix, directory and block-table rules.

use super::*;
use crate::format::header::{STANZA_RSA_OAEP_SHA256, close};
use crate::format::v2::TotalsV2;

pub(crate) fn sample_body() -> HeaderBodyV2 {
    HeaderBodyV2 {
        fields: HeaderFields {
            session_id: [0xb0; 16],
            created_at: 1_764_460_800,
            job_name: "home".into(),
            suite: SUITE_V1,
            block_size: 65_536,
            segment_size: 16_384,
            compression: 1,
            content_hash: HASH_BLAKE3,
            chain: vec![ParentRef {
                session_id: [0xa0; 16],
                hint: "home-20261129T010000Z-a0a1a2a3.coffer".into(),
            }],
            signer: Some(SignerDecl {
                scheme: SIGNER_ED25519,
                fingerprint: [4; 32],
            }),
        },
        recipients: vec![Stanza {
            scheme: STANZA_RSA_OAEP_SHA256,
            fingerprint: [1; 32],
            label: "ops".into(),
            wrapped_key: vec![5; 384],
        }],
    }
}

fn header_bytes(b: &HeaderBodyV2) -> Vec<u8> {
    let mut bytes = b.encode_unsealed();
    close(&mut bytes, &[6; 32]);
    bytes
}

/// A header whose body is `body` verbatim, closed with a right length and CRC.
fn header_with_body(body: &[u8]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    close(&mut bytes, &[6; 32]);
    bytes
}

fn malformed(b: &HeaderBodyV2) -> bool {
    matches!(
        RawHeaderV2::parse(header_bytes(b)),
        Err(HeaderError::Malformed(_))
    )
}

#[test]
fn header_round_trip_and_signed_prefix() {
    let b = sample_body();
    let bytes = header_bytes(&b);
    let raw = RawHeaderV2::parse(bytes.clone()).unwrap();
    assert_eq!(raw.body, b);
    assert_eq!(raw.len(), bytes.len() as u64);
    let (body, r) = b.encode();
    assert_eq!(raw.signed_len, r);
    assert_eq!(raw.signed_body(), &body[..r]);
    assert_eq!(raw.signed_body(), postcard::to_stdvec(&b.fields).unwrap());
    let (auth, tag) = raw.authenticated_and_tag();
    assert_eq!(auth, &bytes[..bytes.len() - 36]);
    assert_eq!(tag, &[6; 32]);
    // The unsigned, full form too.
    let mut b = sample_body();
    b.fields.chain.clear();
    b.fields.signer = None;
    assert_eq!(RawHeaderV2::parse(header_bytes(&b)).unwrap().body, b);
}

#[test]
fn header_prefix_checksum_and_length() {
    let bytes = header_bytes(&sample_body());
    for (version, want) in [(1u16, 1u16), (3, 3)] {
        let mut b = bytes.clone();
        b[8..10].copy_from_slice(&version.to_le_bytes());
        assert_eq!(
            RawHeaderV2::parse(b).unwrap_err(),
            HeaderError::UnsupportedVersion(want)
        );
    }
    let mut b = bytes.clone();
    b[0] ^= 1;
    assert_eq!(RawHeaderV2::parse(b).unwrap_err(), HeaderError::BadMagic);
    let mut b = bytes.clone();
    b[10..14].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
    assert_eq!(
        RawHeaderV2::parse(b).unwrap_err(),
        HeaderError::BodyTooLarge(MAX_BODY_LEN + 1)
    );
    let mut b = bytes.clone();
    b.pop();
    assert!(matches!(
        RawHeaderV2::parse(b),
        Err(HeaderError::Malformed(_))
    ));
    for i in 14..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert_eq!(
            RawHeaderV2::parse(b).unwrap_err(),
            HeaderError::Checksum,
            "flip at {i}"
        );
    }
    // Trailing bytes after the recipients, with a right length and CRC.
    let (mut body, _) = sample_body().encode();
    body.push(0);
    assert!(matches!(
        RawHeaderV2::parse(header_with_body(&body)),
        Err(HeaderError::Malformed(m)) if m.contains("trailing")
    ));
}

#[test]
fn header_field_rules() {
    type Edit = fn(&mut HeaderBodyV2);
    let edits: &[(&str, Edit)] = &[
        ("suite", |b| b.fields.suite = 2),
        ("block small", |b| b.fields.block_size = MIN_BLOCK_SIZE - 1),
        ("block large", |b| b.fields.block_size = MAX_BLOCK_SIZE + 1),
        ("segment small", |b| b.fields.segment_size = 4080),
        ("segment odd", |b| b.fields.segment_size = 4100),
        ("segment > block", |b| b.fields.segment_size = 65_536 + 16),
        ("compression", |b| b.fields.compression = 2),
        ("hash 0", |b| b.fields.content_hash = 0),
        // Id 1 was SHA-256 over windows in an earlier draft; v2 is frozen with BLAKE3 only.
        ("hash sha256 draft", |b| b.fields.content_hash = 1),
        ("hash 3", |b| b.fields.content_hash = 3),
        ("self parent", |b| b.fields.chain[0].session_id = [0xb0; 16]),
        ("duplicate parent", |b| {
            let p = b.fields.chain[0].clone();
            b.fields.chain.push(p)
        }),
        ("257 parents", |b| {
            b.fields.chain = (0..=MAX_PARENTS)
                .map(|i| ParentRef {
                    session_id: [
                        i as u8,
                        (i >> 8) as u8,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                        7,
                    ],
                    hint: String::new(),
                })
                .collect()
        }),
        ("hint", |b| b.fields.chain[0].hint = "h".repeat(256)),
        ("signer", |b| b.fields.signer.as_mut().unwrap().scheme = 2),
        ("no recipient", |b| b.recipients.clear()),
        ("65 recipients", |b| {
            let s = b.recipients[0].clone();
            b.recipients = (0..=MAX_RECIPIENTS)
                .map(|i| Stanza {
                    fingerprint: [i as u8; 32],
                    ..s.clone()
                })
                .collect()
        }),
        ("same fingerprint", |b| {
            let s = b.recipients[0].clone();
            b.recipients.push(s)
        }),
        ("label", |b| b.recipients[0].label = "l".repeat(257)),
        ("wrapped", |b| b.recipients[0].wrapped_key = vec![1; 2049]),
        ("job name", |b| b.fields.job_name = "j".repeat(257)),
    ];
    for (what, edit) in edits {
        let mut b = sample_body();
        edit(&mut b);
        assert!(malformed(&b), "{what} accepted");
    }
    // The largest values allowed pass.
    let mut b = sample_body();
    b.fields.chain[0].hint = "h".repeat(255);
    b.fields.job_name = "j".repeat(256);
    b.recipients[0].label = "l".repeat(256);
    b.recipients[0].wrapped_key = vec![1; 2048];
    assert!(RawHeaderV2::parse(header_bytes(&b)).is_ok());
}

#[test]
fn trailer_round_trip_flips_and_missing_magic() {
    let t = TrailerV2 {
        index_offset: 1,
        index_len: 2,
        block_count: 3,
        directory_len: 4,
        signature_len: 72,
    };
    let bytes = t.encode();
    assert_eq!(TrailerV2::decode(&bytes), Ok(t));
    for i in 0..TRAILER_LEN {
        let mut b = bytes;
        b[i] ^= 0x80;
        let err = TrailerV2::decode(&b).unwrap_err();
        assert_eq!(err == NO_TRAILER, (32..40).contains(&i), "flip at {i}");
    }
}

/// A consistent layout: 4 blocks (stream 208 292 bytes in 64 KiB blocks), two index
/// chunks, one block-table chunk, the directory.
pub(crate) fn layout() -> (Directory, TrailerV2, HeaderFields) {
    let h = sample_body().fields;
    let index_offset = 4 * 65_613;
    let tag = [0; 32];
    let d = Directory {
        chunks: vec![
            ChunkRef {
                offset: index_offset,
                frame_len: 1000,
                entry_count: 6,
                first_path: b"t".to_vec(),
                tag,
            },
            ChunkRef {
                offset: index_offset + 1000,
                frame_len: 510,
                entry_count: 1,
                first_path: b"u".to_vec(),
                tag,
            },
        ],
        block_chunks: vec![BlockChunkRef {
            offset: index_offset + 1510,
            frame_len: 222,
            first_block_offset: 0,
            tag,
        }],
        entry_count: 7,
        stream_len: 208_292,
        parent_commitments: vec![[9; 32]],
        totals: TotalsV2::default(),
    };
    let t = TrailerV2 {
        index_offset,
        index_len: 1510 + 222 + 318,
        block_count: 4,
        directory_len: 318,
        signature_len: 72,
    };
    (d, t, h)
}

#[test]
fn trailer_rules() {
    let (_, t, _) = layout();
    let h = 1000u64;
    let file_len = h + t.index_offset + t.index_len + 72 + 44;
    assert_eq!(check_trailer(&t, file_len, h, true), Ok(()));
    assert!(check_trailer(&t, file_len + 1, h, true).is_err());
    assert!(check_trailer(&t, 10, h, true).is_err());
    // Declared signer without a section, and a section without a signer.
    assert!(check_trailer(&t, file_len, h, false).is_err());
    let mut u = t;
    u.signature_len = 0;
    assert!(check_trailer(&u, file_len - 72, h, true).is_err());
    assert_eq!(check_trailer(&u, file_len - 72, h, false), Ok(()));
    type Edit = fn(&mut TrailerV2);
    let edits: &[(&str, Edit)] = &[
        ("directory short", |t| t.directory_len = 77),
        ("directory long", |t| t.directory_len = 16_777_295),
        ("no chunk", |t| t.directory_len = (t.index_len - 77) as u32),
        ("blocks without data", |t| t.block_count = 0),
        ("too many blocks", |t| {
            t.block_count = t.index_offset / 77 + 1
        }),
        ("overflow", |t| t.index_offset = u64::MAX),
    ];
    for (what, edit) in edits {
        let mut u = t;
        edit(&mut u);
        let fl = (h + u.index_offset.wrapping_add(u.index_len) + 72 + 44).max(file_len);
        assert!(check_trailer(&u, fl, h, true).is_err(), "{what} accepted");
        assert!(
            check_trailer(&u, file_len, h, true).is_err(),
            "{what} accepted"
        );
    }
    // Data without blocks.
    let mut u = t;
    u.index_offset = 0;
    let fl = h + u.index_len + 72 + 44;
    assert!(check_trailer(&u, fl, h, true).is_err());
    u.block_count = 0;
    assert_eq!(check_trailer(&u, fl, h, true), Ok(()));
    let mut u = t;
    u.index_len = MAX_INDEX_SECTION + 1;
    let fl = h + u.index_offset + u.index_len + 72 + 44;
    assert!(check_trailer(&u, fl, h, true).is_err());
    let mut u = t;
    u.directory_len = 16_777_294;
    u.index_len = 16_777_294 + 78;
    let fl = h + u.index_offset + u.index_len + 72 + 44;
    assert_eq!(check_trailer(&u, fl, h, true), Ok(()));
}

fn prefix(ct_len: u32, raw_len: u32, kind: u8, flags: u8) -> [u8; META_PREFIX] {
    let mut p = [0u8; META_PREFIX];
    p[0..4].copy_from_slice(&ct_len.to_le_bytes());
    p[4..8].copy_from_slice(&raw_len.to_le_bytes());
    p[8] = kind;
    p[9] = flags;
    p
}

#[test]
fn meta_prefix_bounds() {
    let ok = parse_meta_prefix(&prefix(32, 20, META_INDEX, META_FLAG_LAST), META_INDEX).unwrap();
    assert_eq!(ok.frame_len(), 94);
    assert!(ok.is_last() && !ok.is_compressed());
    for (kind, bound) in [
        (META_INDEX, MAX_INDEX_CHUNK),
        (META_BLOCKS, MAX_BLOCK_CHUNK),
        (META_DIRECTORY, MAX_DIRECTORY),
    ] {
        let b = bound as u32;
        assert!(parse_meta_prefix(&prefix(b + 16, b, kind, 3), kind).is_ok());
        assert!(parse_meta_prefix(&prefix(b + 32, b, kind, 0), kind).is_err());
        assert!(parse_meta_prefix(&prefix(b + 16, b + 1, kind, 0), kind).is_err());
    }
    let bad = [
        prefix(32, 20, 0, 0),
        prefix(32, 20, 4, 0),
        prefix(32, 20, META_BLOCKS, 0),
        prefix(32, 0, META_INDEX, 0),
        prefix(0, 20, META_INDEX, 0),
        prefix(40, 20, META_INDEX, 0),
        prefix(32, 20, META_INDEX, 0x04),
        prefix(32, 20, META_INDEX, 0x80),
    ];
    for p in bad {
        assert!(parse_meta_prefix(&p, META_INDEX).is_err(), "{p:?} accepted");
    }
}

#[test]
fn directory_rules() {
    let (d, t, h) = layout();
    assert_eq!(check_directory(&d, &t, &h), Ok(()));
    type Edit = fn(&mut Directory, &mut TrailerV2, &mut HeaderFields);
    let edits: &[(&str, Edit)] = &[
        ("no chunk", |d, _, _| d.chunks.clear()),
        ("first chunk moved", |d, _, _| d.chunks[0].offset += 1),
        ("gap", |d, _, _| d.chunks[1].offset += 1),
        ("frame short", |d, _, _| d.chunks[0].frame_len = 77),
        ("frame long", |d, _, _| d.chunks[0].frame_len = 1_048_655),
        ("empty chunk", |d, _, _| {
            d.chunks[0].entry_count = 0;
            d.entry_count = 1
        }),
        ("count", |d, _, _| d.entry_count = 8),
        ("unsafe first path", |d, _, _| {
            d.chunks[1].first_path = b"../u".to_vec()
        }),
        ("first paths equal", |d, _, _| {
            d.chunks[1].first_path = b"t".to_vec()
        }),
        ("first paths decrease", |d, _, _| {
            d.chunks[1].first_path = b"s".to_vec()
        }),
        // "t/x" < "t!" bytewise, but in path order "t/x" (t\0x) comes first.
        ("path order", |d, _, _| {
            d.chunks[0].first_path = b"t!".to_vec();
            d.chunks[1].first_path = b"t/x".to_vec()
        }),
        ("missing block chunk", |d, _, _| d.block_chunks.clear()),
        ("block chunk moved", |d, _, _| d.block_chunks[0].offset += 1),
        ("block frame short", |d, _, _| {
            d.block_chunks[0].frame_len = 77
        }),
        ("first block", |d, _, _| {
            d.block_chunks[0].first_block_offset = 1
        }),
        ("stream", |d, _, _| d.stream_len = 3 * 65_536),
        ("stream long", |d, _, _| d.stream_len = 4 * 65_536 + 1),
        ("commitments", |d, _, _| d.parent_commitments.clear()),
        ("parents", |_, _, h| h.chain.clear()),
        ("directory", |_, t, _| t.directory_len -= 1),
    ];
    for (what, edit) in edits {
        let (mut d, mut t, mut h) = layout();
        edit(&mut d, &mut t, &mut h);
        assert!(check_directory(&d, &t, &h).is_err(), "{what} accepted");
    }
    // Two block-table chunks: the second must start after the first, before the index.
    let (mut d, mut t, h) = layout();
    t.block_count = 65_537;
    t.index_offset = 65_537 * 77;
    d.stream_len = 65_537 * 65_536;
    let mut h = h;
    h.block_size = 65_536;
    d.chunks[0].offset = t.index_offset;
    d.chunks[1].offset = t.index_offset + 1000;
    d.block_chunks[0].offset = t.index_offset + 1510;
    d.block_chunks.push(BlockChunkRef {
        offset: t.index_offset + 1732,
        frame_len: 100,
        first_block_offset: 65_536 * 77,
        tag: [0; 32],
    });
    t.index_len += 100;
    assert_eq!(check_directory(&d, &t, &h), Ok(()));
    d.block_chunks[1].first_block_offset = 0;
    assert!(check_directory(&d, &t, &h).is_err());
    d.block_chunks[1].first_block_offset = t.index_offset;
    assert!(check_directory(&d, &t, &h).is_err());
}

#[test]
fn block_chunk_rules() {
    let (d, t, _) = layout();
    let rec = |frame_len| BlockRefV2 {
        frame_len,
        tag: [0; 32],
    };
    let good = vec![rec(65_613); 4];
    assert_eq!(check_block_chunk(&good, 0, &d, &t, 65_536), Ok(()));
    assert!(check_block_chunk(&good, 1, &d, &t, 65_536).is_err());
    assert!(check_block_chunk(&good[..3], 0, &d, &t, 65_536).is_err());
    let mut five = good.clone();
    five.push(rec(77));
    assert!(check_block_chunk(&five, 0, &d, &t, 65_536).is_err());
    // Tiling: one byte short, one long.
    let mut bad = good.clone();
    bad[3] = rec(65_612);
    assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
    // Frame bounds, even when the sum holds.
    let mut bad = good.clone();
    bad[0] = rec(76);
    bad[1] = rec(65_613 * 2 - 76);
    assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
    let mut bad = good;
    bad[0] = rec(65_614);
    bad[1] = rec(65_612);
    assert!(check_block_chunk(&bad, 0, &d, &t, 65_536).is_err());
}
