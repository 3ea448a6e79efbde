//! Selective restore: only the chosen paths and globs (plus the folders above them) are
//! written; a pattern that matches nothing is an error and nothing is written; and only the
//! blocks the chosen files need are read from the archive.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::Compression;

struct Fixture {
    t: TestDir,
    src_parent: PathBuf,
    archive: PathBuf,
}

fn fixture() -> Fixture {
    let t = TestDir::new();
    let src_parent = t.join("src");
    build_sample_tree(&src_parent.join("t"));
    let archive = t.join("a.coffer");
    backup_with(
        &[&src_parent.join("t")],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    Fixture {
        t,
        src_parent,
        archive,
    }
}

/// Every path below `dir` (relative, `/`-separated), without `dir` itself.
fn paths(dir: &Path) -> BTreeSet<String> {
    scan(dir)
        .into_keys()
        .map(|p| p.to_str().unwrap().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `wanted` plus every folder above each of them.
fn with_parents(wanted: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for w in wanted {
        let mut p = Some(w.to_string());
        while let Some(cur) = p {
            p = Path::new(&cur)
                .parent()
                .map(|x| x.to_str().unwrap().to_string())
                .filter(|x| !x.is_empty());
            out.insert(cur);
        }
    }
    out
}

/// Every restored file has the source's bytes.
fn same_bytes(f: &Fixture, target: &Path) {
    let n = assert_no_wrong_content(&f.src_parent, target);
    assert!(n > 0);
}

#[test]
fn only_the_chosen_paths_are_restored() {
    let f = fixture();
    let target = f.t.join("out");
    let report = try_restore(
        &f.archive,
        &alice_key(),
        &target,
        &["t/hello.txt", "t/big/multi.bin"],
        false,
    )
    .unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(
        paths(&target),
        with_parents(&["t/hello.txt", "t/big/multi.bin"])
    );
    same_bytes(&f, &target);
    // multi.bin spans 4 blocks; hello.txt one more at most.
    assert!(report.blocks <= 6, "{} blocks read", report.blocks);
}

#[test]
fn a_folder_selects_everything_below_it() {
    let f = fixture();
    let target = f.t.join("out");
    try_restore(&f.archive, &alice_key(), &target, &["t/docs/"], false).unwrap();
    let expected: BTreeSet<String> = paths(&f.src_parent)
        .into_iter()
        .filter(|p| p == "t" || p.starts_with("t/docs"))
        .collect();
    assert_eq!(paths(&target), expected);
    assert_trees_equal(&f.src_parent.join("t/docs"), &target.join("t/docs"));
}

#[test]
fn globs_select_matching_paths() {
    let f = fixture();
    let target = f.t.join("out");
    let report = try_restore(
        &f.archive,
        &alice_key(),
        &target,
        &["t/many/f00?", "t/unicode/**/*.md", "t/links/*"],
        false,
    )
    .unwrap();
    let mut want = vec![
        "t/unicode/日本語.md",
        "t/links/rel",
        "t/links/rel_dir",
        "t/links/abs",
        "t/links/dangling",
        "t/links/abs_dangling",
        "t/links/ünï-link",
    ];
    let many: Vec<String> = (0..10).map(|i| format!("t/many/f{i:03}")).collect();
    want.extend(many.iter().map(String::as_str));
    assert_eq!(paths(&target), with_parents(&want));
    assert_eq!(report.files, 11);
    assert_eq!(report.symlinks, 6);
    same_bytes(&f, &target);
    // Links are restored as links (not followed).
    assert_eq!(
        fs::read_link(target.join("t/links/rel")).unwrap(),
        Path::new("../hello.txt")
    );
}

#[test]
fn the_same_through_the_binary() {
    let f = fixture();
    let target = f.t.join("out");
    coffer_cmd()
        .arg("restore")
        .arg(&f.archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(&target)
        .args(["t/script.sh", "t/docs/**/*.txt"])
        .assert()
        .code(0);
    assert_eq!(
        paths(&target),
        with_parents(&["t/script.sh", "t/docs/notes/todo.txt"])
    );
    same_bytes(&f, &target);
}

#[test]
fn a_pattern_matching_nothing_fails_and_writes_nothing() {
    let f = fixture();
    for patterns in [
        vec!["t/no-such-file"],
        vec!["hello.txt"],
        vec!["t/hello.txt", "t/**/*.nothing"],
    ] {
        let target = f.t.join("out");
        let out = coffer_cmd()
            .arg("restore")
            .arg(&f.archive)
            .arg("-i")
            .arg(alice_key())
            .arg("--to")
            .arg(&target)
            .args(&patterns)
            .assert()
            .code(2)
            .get_output()
            .clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let bad = patterns.last().unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.contains(&format!("{bad:?}")),
            "{patterns:?}: {stderr}"
        );
        assert!(stderr.contains("matches nothing"), "{stderr}");
        assert!(stderr.contains("\nhint: "), "{stderr}");
        assert!(
            !target.exists(),
            "{patterns:?}: the target was created although nothing matched"
        );
        // Also into an existing, empty target: it stays empty.
        fs::create_dir(&target).unwrap();
        let r = try_restore(&f.archive, &alice_key(), &target, &patterns, false);
        assert!(matches!(r, Err(coffer::Error::InvalidOption(_))), "{r:?}");
        assert!(fs::read_dir(&target).unwrap().next().is_none());
        fs::remove_dir(&target).unwrap();
    }
}

#[test]
fn restoring_one_tiny_file_reads_a_small_fraction_of_the_archive() {
    let t = TestDir::new();
    let root = t.join("src").join("big");
    // ~20 MiB in 80 files of 256 KiB (multiples of the block size, so every file starts on
    // a block boundary whatever the walk order), plus one tiny file.
    let chunk = 4 * SMALL_BLOCK as usize;
    let data = pseudo_random(chunk + 80 * 4096, 77);
    for i in 0..80 {
        let start = i * 4096;
        write_file(
            &root.join(format!("d{}/file{i:03}.bin", i % 8)),
            &data[start..start + chunk],
            0o644,
        );
    }
    write_file(&root.join("d3/tiny.txt"), b"the one file we want\n", 0o600);
    let archive = t.join("big.coffer");
    let b = backup_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert_eq!(b.blocks, 80 * 4 + 1);
    let size = fs::metadata(&archive).unwrap().len();
    assert!(size > 20 << 20, "archive is {size} bytes");

    let target = t.join("out");
    let report = try_restore(&archive, &alice_key(), &target, &["big/d3/tiny.txt"], false).unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(report.blocks, 1, "one block holds the tiny file");
    assert!(
        report.archive_bytes_read * 20 < size,
        "read {} of {size} archive bytes (>= 5%)",
        report.archive_bytes_read
    );
    assert!(report.archive_bytes_read > 0);
    assert_eq!(
        fs::read(target.join("big/d3/tiny.txt")).unwrap(),
        b"the one file we want\n"
    );
    assert_eq!(
        paths(&target),
        with_parents(&["big/d3/tiny.txt"]),
        "nothing else written"
    );

    // One 256 KiB file: exactly the 4 or 5 blocks it spans (5 if it comes after the tiny
    // file in the stream and so does not start on a block boundary).
    let entries = entries_of(&archive, &alice_key());
    let e = entries
        .iter()
        .find(|e| e.path == b"big/d5/file013.bin")
        .unwrap();
    let bs = SMALL_BLOCK as u64;
    let offset = e.extents[0].offset;
    let spans = (offset + e.size - 1) / bs - offset / bs + 1;
    assert!(spans == 4 || spans == 5);
    let target = t.join("out2");
    let report = try_restore(
        &archive,
        &alice_key(),
        &target,
        &["big/d5/file013.bin"],
        false,
    )
    .unwrap();
    assert_eq!(report.blocks, spans);
    assert!(report.archive_bytes_read < (spans + 1) * bs);
    assert_eq!(
        fs::read(target.join("big/d5/file013.bin")).unwrap(),
        &data[13 * 4096..13 * 4096 + chunk]
    );

    // The binary reports the same in --json.
    let out = coffer_cmd()
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("out3"))
        .arg("--json")
        .arg("big/d3/tiny.txt")
        .assert()
        .code(0)
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["blocks"], 1);
    assert!(doc["archive_bytes_read"].as_u64().unwrap() * 20 < size);
}

/// A v2 index is read chunk by chunk: restoring one file of many reads the chunk that
/// holds it (and the directory), not the whole index; the whole tree reads all of it.
#[test]
fn a_selective_restore_reads_only_the_index_chunks_it_needs() {
    let t = TestDir::new();
    let root = t.join("many");
    for d in 0..40 {
        for f in 0..500 {
            let name =
                format!("dir{d:02}/a-long-file-name-so-the-index-spans-many-chunks-{f:04}.txt");
            write_file(&root.join(name), format!("{d} {f}\n").as_bytes(), 0o644);
        }
    }
    let archive = t.join("a.coffer");
    backup_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    let one = "many/dir27/a-long-file-name-so-the-index-spans-many-chunks-0311.txt";
    let selective = try_restore(&archive, &alice_key(), &t.join("one"), &[one], false).unwrap();
    assert_eq!(selective.files, 1);
    assert_eq!(fs::read(t.join("one").join(one)).unwrap(), b"27 311\n");
    let whole = try_restore(&archive, &alice_key(), &t.join("all"), &[], false).unwrap();
    assert_eq!(whole.files, 20_000);
    assert!(
        selective.index_bytes_read * 4 < whole.index_bytes_read,
        "one file read {} index bytes, the whole tree {}",
        selective.index_bytes_read,
        whole.index_bytes_read
    );
}
