//! Every file entry of a v2 archive carries the content hash of its own bytes (FORMAT.md
//! v2.4), computed as the file is read into the block stream: whatever the files' sizes
//! and wherever the block boundaries and 1 MiB hash windows fall, the index keeps walk
//! order and hard links name the right entry, also when a large file is followed by
//! thousands of entries without data.

use std::fs;
use std::path::Path;

use crate::chain_backup::restore_ok;
use crate::common::*;
use coffer::Compression;
use coffer::format::v2::content::content_hash;
use coffer::format::v2::{KIND_FILE, KIND_HARDLINK};

/// Every file entry's content hash is the hash of the source file's bytes, and the
/// entries are in path order.
fn assert_hashes_match(archive: &Path, source_parent: &Path) -> usize {
    let entries = entries_of(archive, &alice_key());
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "index entries are not in path order");
    let mut files = 0;
    for e in entries.iter().filter(|e| e.kind == KIND_FILE) {
        let rel = std::str::from_utf8(&e.path).unwrap();
        let bytes = fs::read(source_parent.join(rel)).unwrap();
        assert_eq!(
            e.content_hash,
            Some(content_hash(&bytes)),
            "wrong content hash for {rel} ({} bytes)",
            bytes.len()
        );
        files += 1;
    }
    files
}

fn verify_keyed(archive: &Path) {
    let out = coffer_cmd()
        .arg("verify")
        .arg(archive)
        .arg("-i")
        .arg(alice_key())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "keyed verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore_and_compare(archive: &Path, source: &Path, target: &Path) {
    restore_ok(archive, target, &[]);
    assert_trees_equal(source, &target.join(source.file_name().unwrap()));
}

#[test]
fn files_of_every_size_across_block_boundaries_get_their_own_hash() {
    let tmp = TestDir::new();
    let src = tmp.join("src");
    fs::create_dir(&src).unwrap();
    // Sizes around the 64 KiB block and the 1 MiB hash window, so that files start and
    // end anywhere in a block and span one, two or many blocks and windows.
    let block = SMALL_BLOCK as usize;
    let window = 1 << 20;
    let sizes = [
        0,
        1,
        4095,
        4097,
        block - 1,
        block,
        block + 1,
        3 * block + 17,
        window - 1,
        window,
        window + 1,
        2 * window + block / 2,
        5,
        70_000,
    ];
    for (i, len) in sizes.iter().enumerate() {
        write_file(
            &src.join(format!("f{i:02}")),
            &pseudo_random(*len, i as u64),
            0o644,
        );
    }
    let archive = tmp.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert_eq!(assert_hashes_match(&archive, tmp.path()), sizes.len());
    verify_keyed(&archive);
    restore_and_compare(&archive, &src, &tmp.join("out"));
}

#[test]
fn a_large_file_followed_by_thousands_of_entries_without_data_completes() {
    let tmp = TestDir::new();
    let src = tmp.join("src");
    fs::create_dir(&src).unwrap();
    // The large file's last block is still being filled while 6,000 links follow.
    write_file(&src.join("a-large"), &pseudo_random(3 << 20, 1), 0o644);
    fs::create_dir(src.join("b-links")).unwrap();
    for i in 0..6000 {
        std::os::unix::fs::symlink("../a-large", src.join(format!("b-links/l{i:05}"))).unwrap();
    }
    // A hard link whose two names are 5,000 entries apart.
    write_file(&src.join("c-linked"), &pseudo_random(200_000, 2), 0o644);
    fs::create_dir(src.join("d-more")).unwrap();
    for i in 0..5000 {
        fs::create_dir(src.join(format!("d-more/{i:05}"))).unwrap();
    }
    fs::hard_link(src.join("c-linked"), src.join("e-second-name")).unwrap();
    write_file(&src.join("f-last"), &pseudo_random(100_000, 3), 0o644);
    let archive = tmp.join("a.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    assert_eq!(assert_hashes_match(&archive, tmp.path()), 3);
    let entries = entries_of(&archive, &alice_key());
    let first = entries
        .iter()
        .position(|e| e.path.ends_with(b"/c-linked"))
        .unwrap();
    let link = entries
        .iter()
        .find(|e| e.path.ends_with(b"/e-second-name"))
        .unwrap();
    assert_eq!(link.kind, KIND_HARDLINK);
    assert_eq!(link.hardlink_to, Some(first as u64));
    verify_keyed(&archive);
    restore_and_compare(&archive, &src, &tmp.join("out"));
}
