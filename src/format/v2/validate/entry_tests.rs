//! Unit tests of the entry rules, the ancestor stack and the bounded decoders.

use super::tests::*;
use super::*;
use crate::format::v2::KIND_FIFO;

#[test]
fn paths_are_bytes_and_stay_inside() {
    for ok in [
        &b"a"[..],
        b"a/b",
        b"t/\xff\xfe.bin",
        b"...",
        b"a/.b",
        b"a..b",
    ] {
        assert_eq!(check_path(ok), Ok(()), "{ok:?}");
    }
    let long = vec![b'a'; MAX_PATH_LEN + 1];
    for bad in [
        &b""[..],
        b"/a",
        b"a/",
        b"a//b",
        b".",
        b"a/./b",
        b"..",
        b"\xff/../x",
        b"a/..",
        b"a\0b",
        &long,
    ] {
        assert!(check_path(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(check_path(&long[..MAX_PATH_LEN]), Ok(()));
}

fn entry(path: &str, kind: u8) -> EntryV2 {
    EntryV2 {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_sec: 1_764_460_800,
        ..EntryV2::default()
    }
}

fn file(path: &str, size: u64, extents: Vec<Extent>) -> EntryV2 {
    EntryV2 {
        size,
        extents,
        content_hash: Some([3; 32]),
        ..entry(path, KIND_FILE)
    }
}

fn ext(archive: u32, offset: u64, len: u64) -> Extent {
    Extent {
        archive,
        offset,
        len,
    }
}

/// Archive A of FORMAT.md v2.8.5 (chunk 0 of [`layout`]), with a symlink in `u` as
/// chunk 1.
pub(crate) fn chunk0() -> Vec<EntryV2> {
    vec![
        entry("t", KIND_DIR),
        file("t/a.txt", 100, vec![ext(0, 0, 100)]),
        EntryV2 {
            hardlink_to: Some(1),
            ..EntryV2::default()
        }
        .with_path("t/b.txt", KIND_HARDLINK),
        file("t/big.bin", 200_000, vec![ext(0, 100, 200_000)]),
        entry("t/fifo", KIND_FIFO),
        EntryV2 {
            data_ranges: Some(vec![
                DataRange {
                    offset: 0,
                    len: 4096,
                },
                DataRange {
                    offset: 524_288,
                    len: 4096,
                },
            ]),
            ..file("t/sparse.img", 1_048_576, vec![ext(0, 200_100, 8192)])
        },
    ]
}

impl EntryV2 {
    fn with_path(mut self, path: &str, kind: u8) -> Self {
        self.path = path.as_bytes().to_vec();
        self.kind = kind;
        self
    }
}

fn check_all(entries: &[EntryV2], k: usize, d: &Directory) -> Result<(), EntryError> {
    let mut c = ChunkCheck::new(k, d, 1);
    let base: u64 = d.chunks[..k].iter().map(|c| c.entry_count as u64).sum();
    for (i, e) in entries.iter().enumerate() {
        c.check(e, base + i as u64)?;
    }
    c.finish(entries.len() as u32)
}

fn corrupt(entries: &[EntryV2]) -> bool {
    matches!(
        check_all(entries, 0, &layout().0),
        Err(EntryError::Corrupt(_))
    )
}

#[test]
fn a_valid_chunk_passes() {
    let (d, _, _) = layout();
    assert_eq!(check_all(&chunk0(), 0, &d), Ok(()));
    let link = EntryV2 {
        link_target: Some(b"\xff/anywhere".to_vec()),
        xattrs: vec![Xattr {
            name: b"user.x".to_vec(),
            value: vec![],
        }],
        ..entry("u", KIND_SYMLINK)
    };
    assert_eq!(check_all(&[link], 1, &d), Ok(()));
}

#[test]
fn order_and_duplicates() {
    let (d, _, _) = layout();
    let mut v = chunk0();
    v.swap(3, 4);
    assert!(corrupt(&v), "out of order");
    let mut v = chunk0();
    v[4].path = b"t/big.bin".to_vec();
    assert!(matches!(
        check_all(&v, 0, &d),
        Err(EntryError::Unsafe { reason, .. }) if reason.contains("duplicate")
    ));
    let mut v = chunk0();
    v[0].path = b"s".to_vec();
    assert!(corrupt(&v), "first path not the directory's");
    // Last entry equal to / after the next chunk's first path.
    let mut d2 = d.clone();
    d2.chunks[1].first_path = b"t/sparse.img".to_vec();
    assert!(matches!(
        check_all(&chunk0(), 0, &d2),
        Err(EntryError::Unsafe { .. })
    ));
    d2.chunks[1].first_path = b"t/q".to_vec();
    assert!(matches!(
        check_all(&chunk0(), 0, &d2),
        Err(EntryError::Corrupt(_))
    ));
    // Entry count.
    assert!(corrupt(&chunk0()[..5]));
    let mut c = ChunkCheck::new(0, &d, 1);
    c.check(&chunk0()[0], 0).unwrap();
    assert!(c.finish(6).is_err(), "entries not checked");
    // An unsafe path comes before order.
    let mut v = chunk0();
    v[2].path = b"t/../b".to_vec();
    assert!(matches!(
        check_all(&v, 0, &d),
        Err(EntryError::Unsafe { .. })
    ));
}

#[test]
fn field_rules() {
    type Edit = fn(&mut Vec<EntryV2>);
    let edits: &[(&str, Edit)] = &[
        ("kind", |v| v[4].kind = 7),
        ("mode", |v| v[1].mode = 0o10000),
        ("nsec", |v| v[1].mtime_nsec = 1_000_000_000),
        ("folder size", |v| v[0].size = 1),
        ("folder hash", |v| v[0].content_hash = Some([0; 32])),
        ("folder rdev", |v| v[0].rdev_minor = 1),
        ("fifo target", |v| v[4].link_target = Some(b"x".to_vec())),
        ("fifo extents", |v| v[4].extents = vec![ext(0, 0, 1)]),
        ("fifo ranges", |v| v[4].data_ranges = Some(vec![])),
        ("file no hash", |v| v[1].content_hash = None),
        ("file rdev", |v| v[1].rdev_major = 1),
        ("file link", |v| v[1].hardlink_to = Some(0)),
        ("symlink no target", |v| v[4].kind = KIND_SYMLINK),
        ("symlink empty", |v| {
            v[4].kind = KIND_SYMLINK;
            v[4].link_target = Some(vec![])
        }),
        ("symlink nul", |v| {
            v[4].kind = KIND_SYMLINK;
            v[4].link_target = Some(b"a\0".to_vec())
        }),
        ("symlink long", |v| {
            v[4].kind = KIND_SYMLINK;
            v[4].link_target = Some(vec![b'a'; 4097])
        }),
        ("hard link forward", |v| v[2].hardlink_to = Some(2)),
        ("hard link far", |v| v[2].hardlink_to = Some(1 << 63)),
        ("hard link none", |v| v[2].hardlink_to = None),
        ("hard link mode", |v| v[2].mode = 0o644),
        ("hard link uid", |v| v[2].uid = 1),
        ("hard link gid", |v| v[2].gid = 1),
        ("hard link mtime", |v| v[2].mtime_sec = 1),
        ("hard link nsec", |v| v[2].mtime_nsec = 1),
        ("hard link xattr", |v| {
            v[2].xattrs = vec![Xattr {
                name: b"user.a".to_vec(),
                value: vec![],
            }]
        }),
        ("xattr namespace", |v| {
            v[0].xattrs = vec![Xattr {
                name: b"other.a".to_vec(),
                value: vec![],
            }]
        }),
        ("xattr empty name", |v| {
            v[0].xattrs = vec![Xattr {
                name: vec![],
                value: vec![],
            }]
        }),
        ("xattr nul", |v| {
            v[0].xattrs = vec![Xattr {
                name: b"user.\0".to_vec(),
                value: vec![],
            }]
        }),
        ("xattr name long", |v| {
            let mut name = b"user.".to_vec();
            name.resize(256, b'a');
            v[0].xattrs = vec![Xattr {
                name,
                value: vec![],
            }]
        }),
        ("xattr order", |v| {
            let x = |n: &[u8]| Xattr {
                name: n.to_vec(),
                value: vec![],
            };
            v[0].xattrs = vec![x(b"user.b"), x(b"user.a")]
        }),
        ("xattr twice", |v| {
            let x = Xattr {
                name: b"user.a".to_vec(),
                value: vec![],
            };
            v[0].xattrs = vec![x.clone(), x]
        }),
        ("xattr value", |v| {
            v[0].xattrs = vec![Xattr {
                name: b"user.a".to_vec(),
                value: vec![0; 65_537],
            }]
        }),
        ("xattr total", |v| {
            v[0].xattrs = (0..5u8)
                .map(|i| Xattr {
                    name: vec![b'u', b's', b'e', b'r', b'.', b'a' + i],
                    value: vec![0; 60_000],
                })
                .collect()
        }),
        ("xattr count", |v| {
            v[0].xattrs = (0..1025u32)
                .map(|i| Xattr {
                    name: format!("user.{i:05}").into_bytes(),
                    value: vec![],
                })
                .collect()
        }),
        ("range overlap", |v| {
            v[5].data_ranges.as_mut().unwrap()[1].offset = 4095
        }),
        ("range adjacent", |v| {
            v[5].data_ranges.as_mut().unwrap()[1].offset = 4096
        }),
        ("range empty", |v| {
            v[5].data_ranges.as_mut().unwrap()[0].len = 0
        }),
        ("range past size", |v| {
            v[5].data_ranges.as_mut().unwrap()[1].offset = 1_048_576 - 4095
        }),
        ("range overflow", |v| {
            v[5].data_ranges.as_mut().unwrap()[1].offset = u64::MAX - 10
        }),
        ("extents short", |v| v[3].extents[0].len -= 1),
        ("extent empty", |v| v[3].extents.push(ext(0, 0, 0))),
        ("extent past stream", |v| v[3].extents[0].offset = 8293),
        ("extent archive", |v| v[3].extents[0].archive = 2),
        ("extent overflow", |v| v[3].extents[0].offset = u64::MAX),
        ("extents sum overflow", |v| {
            v[3].extents = vec![ext(1, 0, u64::MAX), ext(1, 0, 200_001)]
        }),
        ("extents sparse", |v| v[5].extents[0].len = 1_048_576),
        ("too many extents", |v| {
            v[3].size = 8193;
            v[3].extents = (0..8193).map(|i| ext(1, i, 1)).collect()
        }),
        ("too many ranges", |v| {
            v[5].data_ranges = Some(
                (0..8193)
                    .map(|i| DataRange {
                        offset: 2 * i,
                        len: 1,
                    })
                    .collect(),
            );
            v[5].extents = vec![ext(1, 0, 8193)]
        }),
    ];
    for (what, edit) in edits {
        let mut v = chunk0();
        edit(&mut v);
        assert!(corrupt(&v), "{what} accepted");
    }
    // Limits reached exactly pass.
    let mut v = chunk0();
    v[3].size = 8192;
    v[3].extents = (0..8192).map(|i| ext(1, i, 1)).collect();
    v[5].data_ranges = Some(
        (0..8192)
            .map(|i| DataRange {
                offset: 2 * i,
                len: 1,
            })
            .collect(),
    );
    v[5].extents = vec![ext(1, 1000, 8192)];
    v[0].xattrs = (0..1024u32)
        .map(|i| Xattr {
            name: format!("trusted.{i:05}").into_bytes(),
            value: vec![],
        })
        .collect();
    assert_eq!(check_all(&v, 0, &layout().0), Ok(()));
}

#[test]
fn ancestors_check_parents_in_order() {
    let mut a = Ancestors::new();
    for e in chunk0() {
        a.check_parent(&e).unwrap();
    }
    a.check_parent(&entry("u", KIND_DIR)).unwrap();
    a.check_parent(&entry("u/v", KIND_DIR)).unwrap();
    a.check_parent(&entry("u/v/w", KIND_FILE)).unwrap();
    a.check_parent(&entry("u/x", KIND_FILE)).unwrap();
    assert!(a.stack.len() <= 3);
    // Parent missing: "u/y/z" without "u/y".
    assert!(matches!(
        a.check_parent(&entry("u/y/z", KIND_FILE)),
        Err(EntryError::Unsafe { reason, .. }) if reason.contains("not in the archive")
    ));
    // file-through-symlink.
    let mut a = Ancestors::new();
    a.check_parent(&entry("t", KIND_DIR)).unwrap();
    a.check_parent(&entry("t/l", KIND_SYMLINK)).unwrap();
    assert!(matches!(
        a.check_parent(&entry("t/l/f", KIND_FILE)),
        Err(EntryError::Unsafe { reason, .. }) if reason.contains("not a folder")
    ));
    // A sibling whose name extends the folder's is not under it.
    let mut a = Ancestors::new();
    a.check_parent(&entry("t", KIND_DIR)).unwrap();
    a.check_parent(&entry("tt", KIND_FILE)).unwrap();
    assert!(a.check_parent(&entry("t/x", KIND_FILE)).is_err());
    // An out-of-order reader seeds what it looked up.
    let mut a = Ancestors::new();
    assert!(a.check_parent(&entry("t/d/x", KIND_FILE)).is_err());
    a.push_known(b"t".to_vec());
    a.push_known(b"t/d".to_vec());
    a.check_parent(&entry("t/d/x", KIND_FILE)).unwrap();
    a.push_known(b"u".to_vec());
    assert_eq!(a.stack.len(), 1, "non-ancestors popped");
}

/// postcard's own decoding, consumed exactly (`from_bytes` ignores trailing bytes).
fn exact<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(b) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err("trailing bytes".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn decoders_agree_with_postcard() {
    let mut entries = chunk0();
    entries[0].xattrs = vec![Xattr {
        name: b"user.a".to_vec(),
        value: b"v".to_vec(),
    }];
    entries[4].link_target = Some(b"x".to_vec());
    entries[4].hardlink_to = Some(7);
    let bytes = postcard::to_stdvec(&entries).unwrap();
    assert_eq!(decode_chunk(&bytes).unwrap(), entries);
    // Every single-byte change: when ours accepts, postcard decodes the same; when
    // only postcard accepts, it is for a bound.
    for i in 0..bytes.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= x;
            let theirs = exact::<Vec<EntryV2>>(&b);
            match decode_chunk(&b) {
                Ok(ours) => assert_eq!(Ok(ours), theirs, "byte {i} ^ {x:#x}"),
                Err(e) => {
                    if theirs.is_ok() {
                        assert!(
                            e.contains("limit") || e.contains("bytes are left"),
                            "byte {i} ^ {x:#x}: {e}"
                        )
                    }
                }
            }
        }
    }
    let mut with_trailing = bytes.clone();
    with_trailing.push(0);
    assert!(
        decode_chunk(&with_trailing)
            .unwrap_err()
            .contains("trailing")
    );

    let records: Vec<BlockRefV2> = (0..5)
        .map(|i| BlockRefV2 {
            frame_len: 65_613 + i,
            tag: [i as u8; 32],
        })
        .collect();
    let bytes = postcard::to_stdvec(&records).unwrap();
    assert_eq!(decode_block_chunk(&bytes).unwrap(), records);
    assert!(decode_block_chunk(&bytes[..bytes.len() - 1]).is_err());

    let (mut d, _, _) = layout();
    d.totals.files = 3;
    d.totals.warnings = 1 << 40;
    let bytes = postcard::to_stdvec(&d).unwrap();
    assert_eq!(decode_directory(&bytes).unwrap(), d);
    let mut with_trailing = bytes.clone();
    with_trailing.push(0);
    assert!(decode_directory(&with_trailing).is_err());
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x80;
        if let Ok(ours) = decode_directory(&b) {
            assert_eq!(Ok(ours), exact::<Directory>(&b), "byte {i}");
        }
    }
}

#[test]
fn counts_are_bounded_before_allocating() {
    // Entry count: more than the bytes left / 17, and absurd.
    let smallest = EntryV2 {
        path: b"t".to_vec(),
        kind: KIND_DIR,
        ..EntryV2::default()
    };
    let one = postcard::to_stdvec(&vec![smallest]).unwrap();
    assert_eq!(
        one.len() - 1,
        17,
        "the folder entry `t` is a smallest encoding"
    );
    assert!(decode_chunk(&one).is_ok());
    let mut two = one.clone();
    two[0] = 2;
    assert!(decode_chunk(&two).unwrap_err().contains("bytes are left"));
    let mut huge = postcard::to_stdvec(&(1u64 << 40)).unwrap();
    huge.extend_from_slice(&one[1..]);
    assert!(decode_chunk(&huge).unwrap_err().contains("bytes are left"));
    // Block records beyond a chunk, parents, chunk refs.
    let mut b = postcard::to_stdvec(&(BLOCKS_PER_CHUNK as u64 + 1)).unwrap();
    b.resize(b.len() + 33 * (BLOCKS_PER_CHUNK + 1), 0);
    assert!(decode_block_chunk(&b).unwrap_err().contains("limit"));
    let mut d = postcard::to_stdvec(&(u64::MAX)).unwrap();
    d.resize(100, 0);
    assert!(decode_directory(&d).is_err());
}

/// Regression for the `xattr-huge` vector (FORMAT.md v2.11): an xattr value length
/// claiming 1 GiB is refused from its varint, before any buffer is reserved for it.
#[test]
fn regression_xattr_value_claiming_one_gib() {
    let mut e = entry("t", KIND_DIR);
    e.xattrs = vec![Xattr {
        name: b"user.big".to_vec(),
        value: vec![7; 4],
    }];
    let good = postcard::to_stdvec(&vec![e]).unwrap();
    // The value's length varint (04) sits right before its 4 bytes at the end, which
    // are followed by data_ranges None, no extents, content_hash None.
    let at = good.len() - 3 - 4 - 1;
    assert_eq!(good[at], 4);
    let claim = postcard::to_stdvec(&(1u64 << 30)).unwrap();
    let bad = [&good[..at], &claim[..], &good[at + 1..]].concat();
    let err = decode_chunk(&bad).unwrap_err();
    assert!(err.contains("extended attribute value"), "{err}");
    // Within the bytes left but above the 64 KiB bound: refused by the bound.
    let mut big = entry("t", KIND_DIR);
    big.xattrs = vec![Xattr {
        name: b"user.big".to_vec(),
        value: vec![7; MAX_XATTR_VALUE + 1],
    }];
    let bytes = postcard::to_stdvec(&vec![big]).unwrap();
    assert!(decode_chunk(&bytes).unwrap_err().contains("limit"));
}
