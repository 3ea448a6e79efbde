//! `verify_identity`: the scheduled verify made with a key, through the daemon. Keyed, it
//! checks what no checksum can (every block's MAC, every file's content hash, an
//! incremental's parent blocks): a data block rewritten with its CRC recomputed passes a
//! keyless verify and fails the keyed one. The run is recorded as keyed and shown so by
//! `status` and `metrics`.

use crate::common::coffer_cmd;
use crate::job_common::*;
use coffer::archive::Archive;
use coffer::format::frame::FrameHeader;
use predicates::prelude::*;

fn forget_verify(w: &World) {
    let conn = rusqlite::Connection::open(w.state_dir().join("catalog.sqlite")).unwrap();
    conn.execute("DELETE FROM schedule WHERE job = 'home:verify'", [])
        .unwrap();
}

/// Rewrite a ciphertext byte of the archive's first data frame and recompute the frame's
/// CRC32C, as a forger with write access can: the checksums hold, the MAC does not.
fn forge_first_block(path: &std::path::Path) {
    let archive = Archive::open(path).unwrap();
    let at = archive.data_start() as usize;
    let block_size = archive.params().block_size;
    drop(archive);
    let mut bytes = std::fs::read(path).unwrap();
    let frame = FrameHeader::parse(&bytes[at..at + 9], block_size).unwrap();
    let len = frame.frame_len();
    bytes[at + 9 + frame.ct_len as usize / 2] ^= 0x01;
    let crc = coffer::format::crc32c(&bytes[at..at + len - 4]);
    bytes[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn keyed_scheduled_verify_finds_a_forged_block_the_checksums_miss() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nfull_every = 3\nverify_schedule = \"* * * * *\"\nverify_identity = {:?}\n",
        keys().private
    ));
    // A full and an incremental reading its files from it.
    for _ in 0..2 {
        w.coffer().args(["job", "run", "home"]).assert().success();
    }
    let rows = w.sessions("home");
    assert_eq!(
        rows.iter().filter(|r| r.parents.is_empty()).count(),
        1,
        "one full, one incremental"
    );
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains("job home: verify ok in"))
        .stderr(predicate::str::contains(
            "2 archive(s) checked with a key, 0 damaged",
        ));
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    assert!(v.keyed && v.ok(), "{v:?}");
    let doc: serde_json::Value = serde_json::from_slice(
        &w.coffer()
            .args(["status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(doc["jobs"][0]["last_verify"]["keyed"], true, "{doc}");
    let m = String::from_utf8(w.coffer().arg("metrics").output().unwrap().stdout).unwrap();
    assert!(
        m.contains("coffer_last_verify_keyed{job=\"home\"} 1\n"),
        "{m}"
    );

    // The full, forged: every checksum still holds, so a keyless verify passes ...
    let full = rows.iter().find(|r| r.parents.is_empty()).unwrap();
    let full = full.archive.clone().unwrap();
    forge_first_block(&full);
    coffer_cmd().arg("verify").arg(&full).assert().success();
    // ... and the keyed one does not, for the full and for the incremental that reads it.
    forget_verify(&w);
    let name = full.file_name().unwrap().to_str().unwrap().to_string();
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("job home: verify FAILED"))
        .stderr(predicate::str::contains(
            "2 archive(s) checked with a key, 2 damaged",
        ))
        .stderr(predicate::str::contains(name.as_str()));
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    assert!(v.keyed && !v.ok(), "{v:?}");
    w.coffer()
        .arg("status")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "home: last verify: 2 archive(s) checked with a key, 2 damaged",
        ));
}

#[test]
fn a_verify_identity_that_does_not_load_is_a_config_error() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    let encrypted =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/alice.encrypted.key");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nverify_schedule = \"0 4 * * 0\"\nverify_identity = {encrypted:?}\n"
    ));
    w.coffer()
        .args(["job", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "jobs.toml:8: job \"home\": key \"verify_identity\"",
        ))
        .stderr(predicate::str::contains("passphrase"));
}
