//! A CRC32C that does not match while the tag does (vectors `block-crc-mismatch-tag-ok`
//! and `index-crc-mismatch-tag-ok`): every reader checks the checksum before the tag and
//! refuses the frame or index as storage damage (`Corrupt`, "checksum mismatch"). Restore,
//! list and both verifies agree (docs/FORMAT.md section 9).

use std::fs;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::Error;
use coffer::archive::{Archive, VerifyReport};
use coffer::backup::Quiet;
use coffer::format::crc32c;

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(name)
        .join("archive.coffer")
}

/// The vectors' key, copied with mode 0600 (git does not keep it, and coffer warns).
fn vector_key(t: &TestDir) -> PathBuf {
    let dest = t.join("identity.pem");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/basic/identity.pem"),
        &dest,
    )
    .unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
    dest
}

fn assert_checksum_error<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::Corrupt { detail, .. }) if detail.contains("checksum mismatch") => {}
        other => panic!("{what}: expected Corrupt (checksum mismatch), got {other:?}"),
    }
}

fn assert_checksum_problem(what: &str, report: &VerifyReport, block: Option<u64>) {
    assert!(
        report.problems.len() == 1
            && report.problems[0].block == block
            && report.problems[0].detail.contains("checksum mismatch"),
        "{what}: {:?}",
        report.problems
    );
}

/// Exit code and stderr of `coffer ARGS`.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = coffer_cmd().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// With the checksum of `section` recomputed, the archive restores: its tag is intact, and
/// the CRC alone is what the readers refuse.
fn assert_only_the_crc_is_wrong(t: &TestDir, archive: &Path, section: Range<usize>, key: &Path) {
    let mut bytes = fs::read(archive).unwrap();
    let crc_at = section.end - 4;
    let crc = crc32c(&bytes[section.start..crc_at]);
    assert_ne!(bytes[crc_at..section.end], crc.to_le_bytes());
    bytes[crc_at..section.end].copy_from_slice(&crc.to_le_bytes());
    let fixed = t.join("fixed.coffer");
    fs::write(&fixed, &bytes).unwrap();
    try_restore(&fixed, key, &t.join("fixed-out"), &[], false)
        .expect("the vector with its CRC fixed restores");
}

#[test]
fn block_crc_mismatch_with_a_valid_tag_is_refused_by_restore_and_both_verifies() {
    let t = TestDir::new();
    let key = vector_key(&t);
    let path = vector("block-crc-mismatch-tag-ok");
    let archive = Archive::open(&path).unwrap();
    let identity = identity(&key);
    let unlocked = archive.unlock(&identity).unwrap();
    let start = archive.data_start() as usize;
    let frame = start..start + unlocked.v1_index().unwrap().blocks[0].frame_len as usize;
    assert_only_the_crc_is_wrong(&t, &path, frame, &key);

    assert_checksum_error(
        "restore",
        try_restore(&path, &key, &t.join("out"), &[], false),
    );
    assert_checksum_problem(
        "keyed verify",
        &archive.verify_blocks(&unlocked, &Quiet).unwrap(),
        Some(0),
    );
    assert_checksum_problem(
        "keyless verify",
        &archive.verify_checksums(&Quiet).unwrap(),
        Some(0),
    );
    let out = t.join("cli-out");
    for args in [
        vec!["restore", s(&path), "-i", s(&key), "--to", s(&out)],
        vec!["verify", s(&path), "-i", s(&key)],
        vec!["verify", s(&path)],
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("checksum mismatch"), "{args:?}: {stderr}");
    }
    // `list` reads the index and no block, so a damaged block does not stop it (as for
    // any other block damage; `verify` is the command that reads every block).
    let (code, stderr) = run(&["list", s(&path), "-i", s(&key)]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn index_crc_mismatch_with_a_valid_tag_is_refused_by_every_reader() {
    let t = TestDir::new();
    let key = vector_key(&t);
    let path = vector("index-crc-mismatch-tag-ok");
    let archive = Archive::open(&path).unwrap();
    let index_at = (archive.data_start() + archive.v1_trailer().unwrap().index_offset) as usize;
    let index = index_at..index_at + archive.v1_trailer().unwrap().index_len as usize;
    assert_only_the_crc_is_wrong(&t, &path, index, &key);

    // Restore, list and the keyed verify all unlock first, and unlocking refuses the index.
    assert_checksum_error("unlock", archive.unlock(&identity(&key)).map(|_| ()));
    assert_checksum_error(
        "restore",
        try_restore(&path, &key, &t.join("out"), &[], false),
    );
    assert_checksum_problem(
        "keyless verify",
        &archive.verify_checksums(&Quiet).unwrap(),
        None,
    );
    let out = t.join("cli-out");
    for args in [
        vec!["restore", s(&path), "-i", s(&key), "--to", s(&out)],
        vec!["list", s(&path), "-i", s(&key)],
        vec!["verify", s(&path), "-i", s(&key)],
        vec!["verify", s(&path)],
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("checksum mismatch"), "{args:?}: {stderr}");
    }
}
