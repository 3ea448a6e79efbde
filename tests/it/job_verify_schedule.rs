//! `verify_schedule` through the daemon: a keyless verify of every kept archive, recorded
//! in the catalog and shown by `status` and `metrics`; damage makes both say so;
//! `verify_max_rate` slows the reading down.

use crate::job_common::*;
use predicates::prelude::*;

fn config(w: &World, extra: &str) -> std::path::PathBuf {
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nverify_schedule = \"* * * * *\"\n{extra}"
    ));
    dest
}

/// Make the verify due again (the daemon evaluated it this minute already).
fn forget_verify(w: &World) {
    let conn = rusqlite::Connection::open(w.state_dir().join("catalog.sqlite")).unwrap();
    conn.execute("DELETE FROM schedule WHERE job = 'home:verify'", [])
        .unwrap();
}

#[test]
fn scheduled_verify_is_recorded_and_finds_damage() {
    let w = World::new();
    config(&w, "");
    for _ in 0..2 {
        w.coffer().args(["job", "run", "home"]).assert().success();
    }
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains("job home: verify ok in"))
        .stderr(predicate::str::contains("2 archive(s) checked, 0 damaged"));
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    assert_eq!((v.archives, v.damaged), (2, 0));
    assert!(v.bytes > 140_000, "{}", v.bytes);
    w.coffer()
        .arg("status")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("ok 2"));
    let m = w.coffer().arg("metrics").output().unwrap();
    let text = String::from_utf8(m.stdout).unwrap();
    assert!(
        text.contains("coffer_last_verify_ok{job=\"home\"} 1\n"),
        "{text}"
    );

    // Flip a byte in the middle of the newest archive.
    let newest = w.sessions("home")[0].archive.clone().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    forget_verify(&w);
    let name = newest.file_name().unwrap().to_str().unwrap().to_string();
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("job home: verify FAILED"))
        .stderr(predicate::str::contains(format!("1 damaged ({name}: ")));
    w.coffer()
        .arg("status")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "home: last verify: 2 archive(s) checked, 1 damaged",
        ));
    let m = w.coffer().arg("metrics").output().unwrap();
    let text = String::from_utf8(m.stdout).unwrap();
    assert!(
        text.contains("coffer_last_verify_ok{job=\"home\"} 0\n"),
        "{text}"
    );
    let out = w.coffer().args(["status", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &doc["jobs"][0]["last_verify"];
    assert_eq!(
        (v["ok"].as_bool(), v["damaged"].as_u64()),
        (Some(false), Some(1))
    );
}

#[test]
fn verify_max_rate_slows_the_reading() {
    let w = World::new();
    // Two archives of about 75 KB at 100 KB/s: at least a second and a half.
    config(&w, "verify_max_rate = 100000\n");
    for _ in 0..2 {
        w.coffer().args(["job", "run", "home"]).assert().success();
    }
    w.coffer().args(["daemon", "--once"]).assert().success();
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    let took = v.finished_at_ms - v.started_at_ms;
    let least = (v.bytes * 1000 / 100_000) as i64 - 100;
    assert!(
        took >= least && least > 1000,
        "took {took} ms for {} bytes",
        v.bytes
    );
}
