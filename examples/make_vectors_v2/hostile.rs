//! `future-version` and the index/structure must-fail vectors of docs/FORMAT.md v2.11, all
//! made from `basic`'s model under `basic`'s fixed keys. Each changes one thing and seals
//! everything else anew (chunk frames, block tables, directory, header MAC), so the change
//! is what a reader meets: `Model` and `Sealed` (model.rs) carry the real writer's entries
//! and blocks, and the edits below are the only difference from `basic`.
//!
//! `basic` has 10 entries (path order): 0 `t`, 1 `t/a.txt`, 2 `t/caf\xe9-\xff\xfe.txt`,
//! 3 `t/dir`, 4 `t/dir/hard.txt` (hard link to 1), 5 `t/fifo`, 6 `t/link`, 7 `t/null`,
//! 8 `t/sparse.img`, 9 `t/tool`. The writer puts them in one chunk; the vectors cut them
//! into three (`CUT`), so the chunk-level changes have neighbours and the entry-level ones
//! cross chunk boundaries where that is the point.

use coffer::format::crc32c;
use coffer::format::v2::{DataRange, EntryV2, META_INDEX};
use coffer::seal::meta::meta_frame_tag;

use crate::manifest::Manifest;
use crate::model::{Built, IndexFrame, Model, Sealed};
use crate::{CHAIN_TIMES, Ctx, keys_lines, seq, sid};

/// Entries per chunk of the re-cut `basic`: `t`, `t/a.txt`, the odd name | `t/dir`, its
/// hard link, `t/fifo` | `t/link` … `t/tool`.
const CUT: [u32; 3] = [3, 3, 4];

const PATHS: [&[u8]; 10] = [
    b"t",
    b"t/a.txt",
    b"t/caf\xe9-\xff\xfe.txt",
    b"t/dir",
    b"t/dir/hard.txt",
    b"t/fifo",
    b"t/link",
    b"t/null",
    b"t/sparse.img",
    b"t/tool",
];

/// Commands and outcomes of a vector whose index is at fault: every keyed command meets
/// it before anything is written; keyless `verify` and `info` read no plaintext, and the
/// vectors are re-MACed with valid CRCs, so they pass.
/// `selected`: the outcome of restoring `t/tool` alone (the class, or "ok" when the fault
/// lies in chunk 1, which that restore never opens).
/// `verify`: keyless verify's outcome.
fn index_outcomes(m: &mut Manifest, class: &str, selected: &str, verify: &str) {
    m.str("restore", class)
        .str("restore_selected", selected)
        .str("verify", verify)
        .str("verify_keyed", class)
        .str("list", class)
        .str("info", "ok");
}

fn seal(ctx: &Ctx, model: &Model) -> Sealed {
    model.seal(&ctx.spec(seq(0), sid(0xf0), CHAIN_TIMES[0], "basic"))
}

/// `basic` cut into `counts` chunks, with `edit` applied to its entries.
fn cut(basic: &Model, counts: &[u32], edit: impl FnOnce(&mut Vec<EntryV2>)) -> Model {
    let mut m = basic.clone();
    edit(&mut m.entries);
    m.chunk_counts = counts.to_vec();
    assert_eq!(m.chunk_counts.iter().sum::<u32>() as usize, m.entries.len());
    m
}

fn vector(ctx: &Ctx, name: &str, description: &str, built: &Built) -> Manifest {
    let dir = ctx.folder(name);
    built.write(&dir.join("archive.coffer"));
    let mut m = Manifest::new(name, description);
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    // t/tool, in the last chunk: a selective restore opens that chunk and chunk 0 (the
    // ancestor t) and no other, so it meets a fault there and passes one in chunk 1.
    m.str("select", "t/tool");
    m
}

fn write(ctx: &Ctx, name: &str, description: &str, built: &Built, class: &str) {
    write_sel(ctx, name, description, built, class, class);
}

fn write_sel(ctx: &Ctx, name: &str, description: &str, built: &Built, class: &str, selected: &str) {
    let mut m = vector(ctx, name, description, built);
    index_outcomes(&mut m, class, selected, "ok");
    m.write(&ctx.folder_keep(name));
}

/// The plaintext length of `entries` as one chunk, rounded as AES-CBC with PKCS#7 pads it:
/// two uncompressed chunks with equal values seal to frames of equal length.
fn ct_len(entries: &[EntryV2]) -> usize {
    (postcard::to_stdvec(&entries.to_vec()).unwrap().len() / 16 + 1) * 16
}

pub fn write_all(ctx: &Ctx, basic: &Model) {
    let paths: Vec<&[u8]> = basic.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, PATHS, "basic's entries moved: update hostile.rs");
    assert_eq!(basic.fields.compression, 0, "equal frames need no zstd");
    let find = |p: &[u8]| PATHS.iter().position(|x| *x == p).unwrap();

    // future-version: the header says 3, its CRC made to hold.
    let mut built = seal(ctx, basic).finish(None, |_| {});
    built.header[8..10].copy_from_slice(&3u16.to_le_bytes());
    let h = built.header.len();
    let crc = crc32c(&built.header[..h - 4]);
    built.header[h - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut m = vector(
        ctx,
        "future-version",
        "`basic` with version 3 in its header (bytes 8..10), the header CRC32C recomputed: refused by every command at the version check (v2.10.2 step 3).",
        &built,
    );
    for c in [
        "restore",
        "verify",
        "verify_signer",
        "verify_keyed",
        "list",
        "info",
    ] {
        m.str(c, "UnsupportedVersion");
    }
    m.write(&ctx.folder_keep("future-version"));

    // chunk-table-outside: chunk 1's recorded offset 1 MiB on, past the index section.
    let built =
        seal(ctx, &cut(basic, &CUT, |_| {})).finish(None, |d| d.chunks[1].offset += 1 << 20);
    write(
        ctx,
        "chunk-table-outside",
        "`basic` cut into chunks of 3, 3 and 4 entries; the directory records chunk 1 at an offset 1 MiB further on, past the index section.",
        &built,
        "Corrupt",
    );

    // chunks-swapped: two chunk frames of one length trade places; the directory still
    // records them where the writer put them. The first cut (fewest chunks, then in
    // order) with two uncompressed chunks of equal length.
    let n = basic.entries.len();
    let (counts, a, b) = (1u32..1 << (n - 1))
        .map(|mask| {
            // Bit i set: a chunk ends after entry i.
            let mut counts = Vec::new();
            let mut start = 0;
            for i in 0..n {
                if i + 1 == n || mask & (1 << i) != 0 {
                    counts.push((i + 1 - start) as u32);
                    start = i + 1;
                }
            }
            counts
        })
        .filter_map(|counts| {
            let mut at = 0;
            let lens: Vec<usize> = counts
                .iter()
                .map(|&c| {
                    at += c as usize;
                    ct_len(&basic.entries[at - c as usize..at])
                })
                .collect();
            // Neither is the last chunk: FLAG_LAST stays on the last frame, so only the
            // chunk numbers in the MACs tell.
            let n = lens.len() - 1;
            let pair = (0..n)
                .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                .find(|&(a, b)| lens[a] == lens[b])?;
            Some((counts, pair.0, pair.1))
        })
        .min_by_key(|(counts, _, _)| counts.len())
        .expect("two chunks of equal length");
    let sealed = seal(ctx, &cut(basic, &counts, |_| {}));
    let mut built = sealed.finish(None, |_| {});
    let at = |k: usize| -> usize { sealed.index[..k].iter().map(|f| f.frame.len()).sum() };
    let len = sealed.index[a].frame.len();
    assert_eq!(len, sealed.index[b].frame.len());
    built.section[at(a)..at(a) + len].copy_from_slice(&sealed.index[b].frame);
    built.section[at(b)..at(b) + len].copy_from_slice(&sealed.index[a].frame);
    write(
        ctx,
        "chunks-swapped",
        &format!(
            "`basic` cut into chunks of {} entries; the frames of chunks {a} and {b} (both {len} bytes) swapped in place, the directory unchanged: each frame's MAC binds its number.",
            counts
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        &built,
        "Tampered",
    );

    // chunk-last-flag-missing: every chunk sealed validly, the last without FLAG_LAST.
    let mut sealed = seal(ctx, &cut(basic, &CUT, |_| {}));
    let mut rest = &basic.entries[..];
    for (k, &c) in CUT.iter().enumerate() {
        let (head, tail) = rest.split_at(c as usize);
        rest = tail;
        sealed.index[k].frame = sealed.meta(
            META_INDEX,
            k as u64,
            false,
            &postcard::to_stdvec(&head.to_vec()).unwrap(),
        );
    }
    let mut m = vector(
        ctx,
        "chunk-last-flag-missing",
        "`basic` cut into chunks of 3, 3 and 4 entries, every chunk sealed and MACed without FLAG_LAST (the directory records those frames).",
        &sealed.finish(None, |_| {}),
    );
    // The flag is in the clear: the keyless walk of the meta frames sees it too.
    index_outcomes(&mut m, "Corrupt", "Corrupt", "problems");
    m.write(&ctx.folder_keep("chunk-last-flag-missing"));

    // chunk-tag-not-recorded: chunk 2 sealed again (a fresh IV): a valid frame of the same
    // length, but the directory records the first sealing's tag.
    let mut sealed = seal(ctx, &cut(basic, &CUT, |_| {}));
    let recorded = meta_frame_tag(&sealed.index[2].frame);
    let again = sealed.seal_chunks(&[
        &basic.entries[..3],
        &basic.entries[3..6],
        &basic.entries[6..],
    ]);
    sealed.index[2] = again[2].clone();
    assert_ne!(meta_frame_tag(&sealed.index[2].frame), recorded);
    write(
        ctx,
        "chunk-tag-not-recorded",
        "`basic` cut into chunks of 3, 3 and 4 entries; chunk 2 sealed a second time (same plaintext, fresh IV, valid MAC and FLAG_LAST) while the directory records the tag of the first sealing.",
        &sealed.finish(None, |d| d.chunks[2].tag = recorded),
        "Tampered",
    );

    // entries-out-of-order: t/null and t/sparse.img swapped inside chunk 2.
    let model = cut(basic, &CUT, |e| {
        e.swap(find(b"t/null"), find(b"t/sparse.img"))
    });
    write(
        ctx,
        "entries-out-of-order",
        "`basic` cut into chunks of 3, 3 and 4 entries, t/sparse.img stored before t/null inside chunk 2.",
        &seal(ctx, &model).finish(None, |_| {}),
        "Corrupt",
    );

    // duplicate-path: t/sparse.img renamed t/null, right after t/null.
    let model = cut(basic, &CUT, |e| {
        e[find(b"t/sparse.img")].path = b"t/null".to_vec()
    });
    write(
        ctx,
        "duplicate-path",
        "`basic` cut into chunks of 3, 3 and 4 entries, t/sparse.img renamed t/null: entries 7 and 8 of chunk 2 share a path.",
        &seal(ctx, &model).finish(None, |_| {}),
        "UnsafePath",
    );

    // dotdot-bytes: a `..` component amid bytes that are not UTF-8 (ff, fe, fd never are).
    let hostile: &[u8] = b"t/dir/\xff\xfe/../../../../\xfdescape";
    let model = cut(basic, &CUT, |e| e[find(b"t/fifo")].path = hostile.to_vec());
    write_sel(
        ctx,
        "dotdot-bytes",
        "`basic` cut into chunks of 3, 3 and 4 entries, t/fifo (the last entry of chunk 1, not a first path) renamed to the bytes 74 2f 64 69 72 2f ff fe 2f 2e 2e 2f 2e 2e 2f 2e 2e 2f 2e 2e 2f fd 65 73 63 61 70 65 (\"t/dir/\\xff\\xfe/../../../../\\xfdescape\").",
        &seal(ctx, &model).finish(None, |_| {}),
        "UnsafePath",
        "ok",
    );

    // file-through-symlink: a file t/link/evil right after the symlink t/link, as the
    // first entry of the next chunk (the parent check reaches back into chunk 1).
    let model = cut(basic, &[3, 4, 4], |e| {
        let mut evil = e[find(b"t/tool")].clone();
        evil.path = b"t/link/evil".to_vec();
        e.insert(find(b"t/link") + 1, evil);
    });
    write(
        ctx,
        "file-through-symlink",
        "`basic` with a file t/link/evil (t/tool's entry renamed) after the symlink t/link (target a.txt), cut into chunks of 3, 4 and 4 entries: t/link ends chunk 1, t/link/evil begins chunk 2.",
        &seal(ctx, &model).finish(None, |_| {}),
        "UnsafePath",
    );

    // hard links: to a later entry, past the end, to a folder.
    let hard = find(b"t/dir/hard.txt");
    for (name, to, what) in [
        ("hardlink-forward", 9u64, "entry 9 (t/tool), a later entry"),
        (
            "hardlink-missing",
            1 << 63,
            "entry 2^63, past the end of the index",
        ),
        (
            "hardlink-to-folder",
            0,
            "entry 0, the folder t (in chunk 0)",
        ),
    ] {
        let model = cut(basic, &CUT, |e| e[hard].hardlink_to = Some(to));
        write_sel(
            ctx,
            name,
            &format!(
                "`basic` cut into chunks of 3, 3 and 4 entries; t/dir/hard.txt (entry 4, chunk 1) is a hard link to {what}."
            ),
            &seal(ctx, &model).finish(None, |_| {}),
            "Corrupt",
            "ok",
        );
    }

    // xattr-huge: t/a.txt's user.comment value length varint made 2^30 in the chunk's
    // postcard plaintext, nothing after it but the entry's remaining bytes.
    let mut sealed = seal(ctx, &cut(basic, &CUT, |_| {}));
    let mut plain = postcard::to_stdvec(&basic.entries[..3].to_vec()).unwrap();
    let marker = b"\x0cuser.comment\x0cbasic vector";
    let at = plain
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a.txt's user.comment");
    let len_at = at + 13;
    plain.splice(len_at..len_at + 1, [0x80, 0x80, 0x80, 0x80, 0x04]);
    sealed.index[0] = IndexFrame {
        frame: sealed.meta(META_INDEX, 0, false, &plain),
        entry_count: 3,
        first_path: b"t".to_vec(),
    };
    write(
        ctx,
        "xattr-huge",
        "`basic` cut into chunks of 3, 3 and 4 entries; in chunk 0's plaintext the length of t/a.txt's user.comment value (0c) replaced by the varint 80 80 80 80 04 (2^30), the chunk re-sealed: refused while decoding, before 1 GiB is allocated.",
        &sealed.finish(None, |_| {}),
        "Corrupt",
    );

    // sparse-overlap: t/sparse.img's second data range moved to start inside the first.
    let model = cut(basic, &CUT, |e| {
        let s = &mut e[find(b"t/sparse.img")];
        assert_eq!(s.data_ranges.as_ref().map(Vec::len), Some(2));
        s.data_ranges = Some(vec![
            DataRange {
                offset: 0,
                len: 4096,
            },
            DataRange {
                offset: 2048,
                len: 4096,
            },
        ]);
    });
    write(
        ctx,
        "sparse-overlap",
        "`basic` cut into chunks of 3, 3 and 4 entries; t/sparse.img's data ranges (0, 4096) and (2048, 4096): overlapping, still 8192 data bytes as its extents hold.",
        &seal(ctx, &model).finish(None, |_| {}),
        "Corrupt",
    );

    // extents-short: t/tool's extent one byte short of its size.
    let tool = &basic.entries[find(b"t/tool")];
    assert_eq!((tool.extents.len(), tool.data_ranges.is_none()), (1, true));
    let model = cut(basic, &CUT, |e| e[find(b"t/tool")].extents[0].len -= 1);
    write(
        ctx,
        "extents-short",
        &format!(
            "`basic` cut into chunks of 3, 3 and 4 entries; t/tool ({} bytes, dense) with its one extent {} bytes long.",
            tool.size,
            tool.size - 1
        ),
        &seal(ctx, &model).finish(None, |_| {}),
        "Corrupt",
    );

    // block-table-tag-mismatch: block 0 recorded with another tag; the block table and
    // the directory re-sealed, so both are valid and only the record is wrong.
    let mut sealed = seal(ctx, basic);
    assert_eq!(sealed.block_refs.len(), 1);
    sealed.block_refs[0].tag[0] ^= 1;
    sealed.tables = sealed.seal_tables();
    let built = sealed.finish(None, |_| {});
    let mut m = vector(
        ctx,
        "block-table-tag-mismatch",
        "`basic` (one index chunk) with the first byte of block 0's tag flipped in its block-table record, the block-table chunk and directory re-sealed: the frame's own MAC holds, the recorded tag differs.",
        &built,
    );
    // The data is at fault, reached only when blocks are read: list reads none, keyed
    // verify records the block as a problem and goes on (v2.10.3).
    m.str("restore", "Tampered")
        .str("restore_selected", "Tampered")
        .str("verify", "ok")
        .str("verify_keyed", "problems")
        .str("list", "ok")
        .str("info", "ok");
    m.write(&ctx.folder_keep("block-table-tag-mismatch"));
}
