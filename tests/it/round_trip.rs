//! Backup then restore gives back the same tree: bytes, kinds, modes, mtimes (with
//! nanoseconds) and symlink targets, with either recipient's key, with and without
//! compression; selective restore yields exactly what was asked for.

use std::fs;
use std::path::Path;

use crate::common::*;
use coffer::archive::Archive;
use coffer::recipient::Recipient;
use coffer::{Compression, Error};

/// Back up a sample tree for alice and bob, then restore it with each key.
fn round_trip_both_keys(compression: Compression) {
    let t = TestDir::new();
    let src = t.join("src/tree");
    let counts = build_sample_tree(&src);
    let archive = t.join("out/tree.coffer");
    fs::create_dir_all(t.join("out")).unwrap();
    let report = backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        compression,
        &[&alice_pub(), &bob_pub()],
    );
    assert_eq!(report.totals.files, counts.files);
    assert_eq!(report.totals.dirs, counts.dirs);
    assert_eq!(report.totals.symlinks, counts.symlinks);
    assert_eq!(report.bytes_read, counts.bytes);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(
        report.blocks >= counts.bytes / SMALL_BLOCK as u64,
        "{} blocks for {} bytes",
        report.blocks,
        counts.bytes
    );
    assert_eq!(
        report.bytes_written,
        fs::metadata(&archive).unwrap().len(),
        "report and file disagree on the archive size"
    );
    let fps = Archive::open(&archive).unwrap().recipients();
    assert_eq!(
        fps,
        vec![
            recipient(&alice_pub()).fingerprint(),
            recipient(&bob_pub()).fingerprint()
        ]
    );

    for (name, key) in [("alice", alice_key()), ("bob", bob_key())] {
        let target = t.join(format!("restored-{name}"));
        let r = try_restore(&archive, &key, &target, &[], false)
            .unwrap_or_else(|e| panic!("restore with {name}: {e}"));
        assert_eq!(r.files, counts.files, "{name}");
        assert_eq!(r.dirs, counts.dirs, "{name}");
        assert_eq!(r.symlinks, counts.symlinks, "{name}");
        assert_eq!(r.bytes, counts.bytes, "{name}");
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
        assert_trees_equal(&src, &target.join("tree"));
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            1,
            "only the source folder is restored at the top"
        );
        assert!(partial_files(&target).is_empty());
    }
}

#[test]
fn rich_tree_uncompressed_restores_with_each_recipient_key() {
    round_trip_both_keys(Compression::None);
}

#[test]
fn rich_tree_zstd_restores_with_each_recipient_key() {
    round_trip_both_keys(Compression::Zstd(1));
}

#[test]
fn rich_tree_zstd_high_level_round_trips() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(19),
        &[&alice_pub()],
    );
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_trees_equal(&src, &target.join("tree"));
}

#[test]
fn default_block_size_with_a_multi_megabyte_file() {
    let t = TestDir::new();
    let src = t.join("data");
    // ~2.5 MiB: three 1 MiB blocks, the last one partial; small files around it.
    write_file(&src.join("a-small.txt"), b"before the big one\n", 0o644);
    write_file(
        &src.join("big.bin"),
        &pseudo_random(2_621_440 + 77, 9),
        0o640,
    );
    write_file(&src.join("z-small.txt"), b"after the big one\n", 0o600);
    set_mtime(&src.join("big.bin"), 1_234_567_890, 987_654_321);
    set_mtime(&src, 1_111_111_111, 1);
    let archive = t.join("big.coffer");
    let report = backup_with(
        &[&src],
        &archive,
        coffer::DEFAULT_BLOCK_SIZE,
        Compression::Zstd(1),
        &[&alice_pub(), &bob_pub()],
    );
    assert_eq!(report.blocks, 3);
    assert_eq!(
        Archive::open(&archive).unwrap().params().block_size,
        1 << 20
    );
    // Incompressible data is stored raw, so the archive is a little larger than the data.
    let len = fs::metadata(&archive).unwrap().len();
    assert!(len > report.bytes_read, "{len} <= {}", report.bytes_read);
    for key in [alice_key(), bob_key()] {
        let target = t.join(format!(
            "out-{}",
            key.file_name().unwrap().to_string_lossy()
        ));
        try_restore(&archive, &key, &target, &[], false).unwrap();
        assert_trees_equal(&src, &target.join("data"));
    }
}

#[test]
fn compressible_content_shrinks_with_zstd_and_round_trips() {
    let t = TestDir::new();
    let src = t.join("logs");
    let text = compressible(3 * SMALL_BLOCK as usize + 999);
    write_file(&src.join("app.log"), &text, 0o644);
    let zstd = t.join("zstd.coffer");
    let none = t.join("none.coffer");
    backup_with(
        &[&src],
        &zstd,
        SMALL_BLOCK,
        Compression::Zstd(3),
        &[&alice_pub()],
    );
    backup_with(
        &[&src],
        &none,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let zlen = fs::metadata(&zstd).unwrap().len();
    let nlen = fs::metadata(&none).unwrap().len();
    assert!(
        zlen * 10 < text.len() as u64,
        "zstd archive {zlen} bytes for {} bytes of text",
        text.len()
    );
    assert!(
        nlen > text.len() as u64,
        "uncompressed archive {nlen} bytes"
    );
    assert_eq!(Archive::open(&zstd).unwrap().params().compression, 1);
    assert_eq!(Archive::open(&none).unwrap().params().compression, 0);
    for a in [&zstd, &none] {
        let target = t.join(format!("out-{}", a.file_stem().unwrap().to_string_lossy()));
        try_restore(a, &alice_key(), &target, &[], false).unwrap();
        assert_trees_equal(&src, &target.join("logs"));
    }
}

#[test]
fn stream_of_exactly_whole_blocks_round_trips() {
    // Two files that together fill exactly two blocks: the last block is a full one.
    let t = TestDir::new();
    let src = t.join("aligned");
    let b = SMALL_BLOCK as usize;
    write_file(&src.join("a"), &pseudo_random(b + 100, 1), 0o644);
    write_file(&src.join("b"), &pseudo_random(b - 100, 2), 0o644);
    let archive = t.join("a.coffer");
    let report = backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert_eq!(report.blocks, 2);
    assert_eq!(report.bytes_read, 2 * b as u64);
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_trees_equal(&src, &target.join("aligned"));
}

#[test]
fn tree_without_file_data_round_trips() {
    // Only folders, empty files and links: no block at all.
    let t = TestDir::new();
    let src = t.join("hollow");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    write_file(&src.join("a/zero"), b"", 0o600);
    std::os::unix::fs::symlink("a/zero", src.join("link")).unwrap();
    set_mtime(&src.join("a/b/c"), 1_000_000_000, 5);
    set_mtime(&src.join("a/b"), 1_000_000_001, 6);
    set_mtime(&src, 1_000_000_002, 7);
    let archive = t.join("h.coffer");
    let report = backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    assert_eq!(report.blocks, 0);
    assert_eq!(report.bytes_read, 0);
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_trees_equal(&src, &target.join("hollow"));
}

#[test]
fn regression_a_source_that_is_a_symlink_to_a_folder_is_stored_as_a_link() {
    // It used to be recorded as a link with its target's files below it: the backup
    // succeeded and every reader refused the index (a path through a link).
    let t = TestDir::new();
    write_file(&t.join("in/real/f.txt"), b"data\n", 0o644);
    std::os::unix::fs::symlink("real", t.join("in/link")).unwrap();
    let archive = t.join("link.coffer");
    let report = backup_with(
        &[&t.join("in/link")],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!((report.totals.symlinks, report.totals.files), (1, 0));
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("real")
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
}

#[test]
fn single_file_and_several_sources_are_stored_under_their_names() {
    let t = TestDir::new();
    let file = t.join("in/notes.txt");
    write_file(&file, b"just a file\n", 0o640);
    set_mtime(&file, 1_650_000_000, 111);
    let tree = t.join("in/tree");
    build_sample_tree(&tree);
    let archive = t.join("multi.coffer");
    backup_with(
        &[&file, &tree],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&bob_pub()],
    );
    let target = t.join("out");
    try_restore(&archive, &bob_key(), &target, &[], false).unwrap();
    let mut top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["notes.txt", "tree"]);
    // A single file is a tree of one entry.
    assert_trees_equal(&file, &target.join("notes.txt"));
    assert_trees_equal(&tree, &target.join("tree"));
}

#[test]
fn restore_of_one_file_writes_that_file_and_its_folders_only() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = t.join("out");
    let r = try_restore(
        &archive,
        &alice_key(),
        &target,
        &["tree/big/multi.bin"],
        false,
    )
    .unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(r.symlinks, 0);
    let got = scan(&target);
    let paths: Vec<String> = got
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(paths, ["", "tree", "tree/big", "tree/big/multi.bin"]);
    assert_eq!(
        fs::read(target.join("tree/big/multi.bin")).unwrap(),
        fs::read(src.join("big/multi.bin")).unwrap()
    );
    let s = scan(&src);
    assert_eq!(
        got[Path::new("tree/big/multi.bin")],
        s[Path::new("big/multi.bin")]
    );
    assert_eq!(got[Path::new("tree/big")], s[Path::new("big")]);
    assert_eq!(got[Path::new("tree")], s[Path::new("")]);
}

#[test]
fn restore_of_a_folder_pattern_writes_everything_below_it() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub(), &bob_pub()],
    );
    let target = t.join("out");
    // Trailing slash allowed; a folder selects its whole subtree.
    try_restore(&archive, &bob_key(), &target, &["tree/unicode/"], false).unwrap();
    assert_trees_equal(&src.join("unicode"), &target.join("tree/unicode"));
    let top: Vec<_> = fs::read_dir(target.join("tree"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["unicode"]);
}

#[test]
fn restore_by_glob_selects_matching_files_in_several_folders() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = t.join("out");
    let r = try_restore(&archive, &alice_key(), &target, &["tree/**/*.txt"], false).unwrap();
    let files: Vec<String> = scan(&target)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [
            "tree/big/compressible.txt",
            "tree/docs/notes/todo.txt",
            "tree/empty.txt",
            "tree/hello.txt",
            "tree/unicode/emoji-🎉.txt",
            "tree/unicode/héllo wörld.txt",
        ]
    );
    assert_eq!(r.files, files.len() as u64);
    for f in &files {
        let rel = f.strip_prefix("tree/").unwrap();
        assert_eq!(
            fs::read(target.join(f)).unwrap(),
            fs::read(src.join(rel)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn pattern_that_matches_nothing_is_an_error_and_writes_nothing() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = t.join("out");
    let err = try_restore(&archive, &alice_key(), &target, &["big/multi.bin"], false).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
    assert!(err.to_string().contains("big/multi.bin"), "{err}");
    assert!(
        !target.exists(),
        "target created by a restore that selected nothing"
    );
}

#[test]
fn restoring_twice_needs_overwrite_and_then_gives_the_same_tree() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    // Change a restored file: the second restore must not silently keep or clobber it.
    write_file(&target.join("tree/hello.txt"), b"changed\n", 0o600);
    let err = try_restore(&archive, &alice_key(), &target, &[], false).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");
    assert_eq!(
        fs::read(target.join("tree/hello.txt")).unwrap(),
        b"changed\n"
    );
    try_restore(&archive, &alice_key(), &target, &[], true).unwrap();
    assert_trees_equal(&src, &target.join("tree"));
}

#[test]
fn thousands_of_small_files_sharing_blocks_restore_exactly() {
    // Small files packed many to a block are written by the workers that open the blocks;
    // files that straddle a block boundary by the ordered writer. Both kinds, many of each,
    // in many folders, must come back byte for byte with their metadata.
    let t = TestDir::new();
    let src = t.join("many");
    let mut bytes = 0u64;
    let mut next_len = 7usize;
    for i in 0..2_000u32 {
        next_len = (next_len * 7919 + 13) % 3_000 + 1;
        let path = src.join(format!("d{:02}/f{i:04}", i % 37));
        write_file(
            &path,
            &pseudo_random(next_len, u64::from(i)),
            0o600 + (i % 64),
        );
        set_mtime(&path, 1_600_000_000 + i64::from(i), i * 1000);
        bytes += next_len as u64;
    }
    // One file far larger than a block among them.
    write_file(&src.join("d05/large"), &pseudo_random(300_000, 99), 0o644);
    bytes += 300_000;
    let archive = t.join("many.coffer");
    let report = backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert_eq!(report.totals.files, 2_001);
    assert!(report.blocks > 40, "{} blocks", report.blocks);
    let target = t.join("out");
    let r = try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_eq!(r.files, 2_001);
    assert_eq!(r.bytes, bytes);
    assert_eq!(r.blocks, report.blocks);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_trees_equal(&src, &target.join("many"));
    assert!(partial_files(&target).is_empty());
}
