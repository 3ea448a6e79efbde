//! Backup copy jobs (`copy_to`, `copy_retention`, `copy_schedule`) through the binary:
//! after `job run` every target holds byte-identical archives that keyless `verify`
//! accepts; a target that is down makes the session `warnings` (exit 1) naming it and is
//! caught up at the next run; a damaged source archive is reported and not copied; copy
//! retention keeps chains whole at the target; `history` and `status` show the copies;
//! bad keys are config errors with their line; `copy_schedule` moves the copies to the
//! daemon; and an S3 prefix is a target like a folder (moto).

use crate::job_common::*;
use coffer::job::SessionState;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

/// A world with a small source tree `src` and an empty destination `dest` for job `home`.
fn home() -> (World, PathBuf, PathBuf) {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    (w, src, dest)
}

fn config(w: &World, src: &Path, dest: &Path, extra: &str) {
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\n{extra}"
    ));
}

fn archives(dir: &Path) -> Vec<String> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".coffer"))
        .collect();
    v.sort();
    v
}

fn verify_ok(w: &World, archive: &Path) {
    w.coffer().arg("verify").arg(archive).assert().success();
}

fn json(w: &World, args: &[&str]) -> serde_json::Value {
    let out = w.coffer().args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_folder_targets_hold_byte_identical_archives_that_verify() {
    let (w, src, dest) = home();
    let (usb, nas) = (w.mkdir("usb"), w.mkdir("nas"));
    config(&w, &src, &dest, &format!("copy_to = [{usb:?}, {nas:?}]\n"));
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(format!(
            "copy to {}: 1 copied",
            usb.display()
        )));
    let names = archives(&dest);
    assert_eq!(names.len(), 1);
    for target in [&usb, &nas] {
        assert_eq!(archives(target), names, "{}", target.display());
        let copy = target.join(&names[0]);
        assert!(std::fs::read(&copy).unwrap() == std::fs::read(dest.join(&names[0])).unwrap());
        verify_ok(&w, &copy);
    }
    // A second session copies only the new archive.
    w.coffer().args(["job", "run", "home"]).assert().code(0);
    assert_eq!(archives(&usb), archives(&dest));
    assert_eq!(archives(&nas).len(), 2);

    // history: a `copies:` line per session, and the rows in JSON.
    w.coffer()
        .arg("history")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "copies: copied to {} (",
            usb.display()
        )));
    let doc = json(&w, &["history", "--json"]);
    for s in doc["sessions"].as_array().unwrap() {
        let copies = s["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 2, "{s}");
        assert!(copies.iter().all(|c| c["outcome"] == "copied"), "{s}");
        assert!(
            copies.iter().all(|c| c["bytes"].as_u64().unwrap() > 0),
            "{s}"
        );
    }
    // status: the last copy per target, all ok.
    w.coffer()
        .arg("status")
        .assert()
        .code(0)
        .stdout(predicate::str::contains(format!(
            "home: last copy to {}: ok",
            nas.display()
        )));
    let doc = json(&w, &["status", "--json"]);
    assert_eq!(doc["jobs"][0]["last_copies"].as_array().unwrap().len(), 2);
}

#[test]
fn a_target_that_is_down_makes_warnings_and_is_caught_up_at_the_next_run() {
    let (w, src, dest) = home();
    let usb = w.mkdir("usb");
    // An unmounted disk: its folder is missing (and is never made by the copy).
    let offsite = w.join("offsite");
    config(
        &w,
        &src,
        &dest,
        &format!("copy_to = [{usb:?}, {offsite:?}]\n"),
    );
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "copy to {}: target not usable",
            offsite.display()
        )));
    assert!(!offsite.exists(), "the copy made the missing folder");
    assert_eq!(archives(&usb), archives(&dest), "the other target got it");
    let row = &w.sessions("home")[0];
    assert_eq!(row.state, SessionState::Warnings);
    assert!(row.warnings[0].contains(&offsite.display().to_string()));
    w.coffer()
        .arg("status")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "last copy to {}: FAILED",
            offsite.display()
        )));
    let doc = json(&w, &["history", "--json"]);
    let failed = &doc["sessions"][0]["copies"];
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["outcome"] == "failed" && c["target"] == offsite.to_str().unwrap()),
        "{failed}"
    );

    // The disk is back: the next run copies the missed archive and the new one.
    std::fs::create_dir(&offsite).unwrap();
    w.coffer().args(["job", "run", "home"]).assert().code(0);
    assert_eq!(archives(&dest).len(), 2);
    assert_eq!(archives(&offsite), archives(&dest));
    for name in archives(&offsite) {
        verify_ok(&w, &offsite.join(name));
    }
    w.coffer().arg("status").assert().code(0);
}

#[test]
fn a_damaged_source_archive_is_reported_and_not_copied() {
    let (w, src, dest) = home();
    let usb = w.join("usb");
    config(&w, &src, &dest, &format!("copy_to = [{usb:?}]\n"));
    // The first archive is made while the target is down, then damaged at the source.
    w.coffer().args(["job", "run", "home"]).assert().code(1);
    let first = archives(&dest).remove(0);
    let path = dest.join(&first);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    std::fs::create_dir(&usb).unwrap();

    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "copy to {}: {}",
            usb.display(),
            path.display()
        )));
    let copied = archives(&usb);
    assert_eq!(copied.len(), 1, "only the good archive: {copied:?}");
    assert_ne!(copied[0], first);
    assert!(
        std::fs::read_dir(&usb).unwrap().count() == 1,
        "nothing left behind"
    );
}

#[test]
fn copy_retention_keeps_chains_whole_at_the_target() {
    let (w, src, dest) = home();
    let usb = w.mkdir("usb");
    config(
        &w,
        &src,
        &dest,
        &format!("full_every = 3\ncopy_to = [{usb:?}]\ncopy_retention = {{ keep_last = 1 }}\n"),
    );
    for i in 0..5 {
        std::fs::write(src.join(format!("new-{i}.txt")), format!("session {i}")).unwrap();
        w.coffer().args(["job", "run", "home"]).assert().code(0);
    }
    // The source keeps everything (no retention); the target the newest restore point
    // and every archive it reads from, nothing else.
    let mut rows = w.sessions("home");
    assert_eq!(archives(&dest).len(), 5);
    let newest = rows.remove(0);
    let name = |r: &coffer::job::SessionRow| -> String {
        r.archive
            .as_deref()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let mut want: Vec<String> = vec![name(&newest)];
    for p in &newest.parents {
        let parent = rows
            .iter()
            .find(|r| r.session_id.as_deref() == Some(p.as_str()))
            .expect("the parent is a session of the job");
        want.push(name(parent));
    }
    want.sort();
    assert_eq!(archives(&usb), want, "newest {:?}", newest.kind);
    for n in &want {
        verify_ok(&w, &usb.join(n));
    }
    // The deletions are recorded with the sessions whose copies went.
    let doc = json(&w, &["history", "--json"]);
    let deleted = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["copies"].as_array().unwrap().clone())
        .filter(|c| c["outcome"] == "deleted")
        .count();
    assert_eq!(deleted, 5 - want.len());
}

#[test]
fn bad_copy_keys_are_config_errors_with_their_line() {
    let (w, src, dest) = home();
    config(
        &w,
        &src,
        &dest,
        &format!("copy_to = [{dest:?}, \"s3://No_Such/x\"]\ncopy_schedule = \"every night\"\n"),
    );
    w.coffer()
        .args(["job", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "jobs.toml:7: job \"home\": key \"copy_to\": ",
        ))
        .stderr(predicate::str::contains("is the job's own destination"))
        .stderr(predicate::str::contains("not a valid S3 location"))
        .stderr(predicate::str::contains(
            "jobs.toml:8: job \"home\": key \"copy_schedule\": bad cron expression",
        ));
    config(&w, &src, &dest, "copy_retention = { keep_last = 2 }\n");
    w.coffer()
        .args(["job", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "jobs.toml:7: job \"home\": key \"copy_retention\": copy_retention without copy_to",
        ));
    // A good one is shown by `job check`.
    let usb = w.mkdir("usb");
    config(
        &w,
        &src,
        &dest,
        &format!("copy_to = [{usb:?}]\ncopy_retention = {{ keep_daily = 7 }}\n"),
    );
    w.coffer()
        .args(["job", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "copies to {} after each session, copy retention: keep_daily=7",
            usb.display()
        )));
}

#[test]
fn copy_schedule_moves_the_copies_from_job_run_to_the_daemon() {
    let (w, src, dest) = home();
    let usb = w.mkdir("usb");
    config(
        &w,
        &src,
        &dest,
        &format!("copy_to = [{usb:?}]\ncopy_schedule = \"* * * * *\"\n"),
    );
    w.coffer().args(["job", "run", "home"]).assert().code(0);
    assert!(
        archives(&usb).is_empty(),
        "job run left the copy to the daemon"
    );
    // The schedule fires every minute: `daemon --once` finds it due and copies.
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains(format!(
            "job home: copy to {}: 1 copied",
            usb.display()
        )));
    assert_eq!(archives(&usb), archives(&dest));
}

#[test]
fn an_s3_prefix_is_a_copy_target_with_retention() {
    let Some(s3) = crate::s3_storage::server() else {
        return;
    };
    let (w, src, dest) = home();
    let unique = w
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_lowercase();
    let prefix = format!("jobcopy/{unique}");
    let target = s3.url(&prefix);
    config(
        &w,
        &src,
        &dest,
        &format!("copy_to = [{target:?}]\ncopy_retention = {{ keep_last = 1 }}\n"),
    );
    let run = || {
        let mut c = w.coffer();
        c.env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &s3.admin.key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.admin.secret)
            .args(["job", "run", "home"]);
        c
    };
    run().assert().code(0);
    std::fs::write(src.join("more.txt"), b"second session").unwrap();
    run().assert().code(0);
    assert_eq!(archives(&dest).len(), 2);
    // keep_last = 1 at the target: only the newest (a full) is left there.
    let newest: PathBuf = w.sessions("home")[0].archive.clone().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(s3.list(&prefix), std::slice::from_ref(&name));
    assert!(s3.download(&format!("{prefix}/{name}")) == std::fs::read(&newest).unwrap());
    let doc = json(&w, &["history", "--json"]);
    let outcomes: Vec<&str> = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["copies"].as_array().unwrap())
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    // Newest session first: its copy; then the first session's copy and its deletion.
    assert_eq!(outcomes, ["copied", "copied", "deleted"]);
}
