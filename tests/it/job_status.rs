//! `coffer status` through the binary over seeded catalogs: exit 0 when every job is fine,
//! 1 when one is overdue (or warned), 2 when one failed; the text and JSON say why.

use crate::job_common::*;
use chrono::{Duration as Days, Utc};
use coffer::job::catalog::{Finish, SessionState, Trigger};
use predicates::prelude::*;
use std::path::Path;

/// Job `home` (daily at 02:00) and job `adhoc` (no schedule, never run).
fn config(w: &World) -> std::path::PathBuf {
    let dest = w.mkdir("dest");
    let other = w.mkdir("dest-adhoc");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nschedule = \"0 2 * * *\"\n\n[job.adhoc]\nsources = [\"/tmp\"]\ndestination = {other:?}\n"
    ));
    dest
}

/// Record a session of `home` that started `hours_ago` hours ago and took a minute.
pub fn seed(w: &World, dest: &Path, hours_ago: i64, state: SessionState) -> i64 {
    let cat = w.catalog();
    let started = Utc::now() - Days::hours(hours_ago);
    let id = cat
        .begin("home", Trigger::Schedule, dest, started.timestamp_millis())
        .unwrap();
    let completed = state.completed();
    let archive = dest.join(format!("home-{id}.coffer"));
    cat.finish(
        id,
        state,
        &Finish {
            archive: completed.then(|| archive.clone()),
            session_id: completed.then(|| format!("{id:032x}")),
            bytes_written: Some(4096),
            warning_count: u64::from(state == SessionState::Warnings),
            error: (!completed).then(|| "disk full\nsecond line".to_string()),
            ..Finish::default()
        },
    )
    .unwrap();
    // `finish` stamps the real time; make the session end a minute after it started.
    let conn = rusqlite::Connection::open(w.state_dir().join("catalog.sqlite")).unwrap();
    conn.execute(
        "UPDATE sessions SET finished_at_ms = started_at_ms + 60000 WHERE id = ?1",
        [id],
    )
    .unwrap();
    id
}

#[test]
fn status_is_0_when_every_job_is_fine() {
    let w = World::new();
    let dest = config(&w);
    seed(&w, &dest, 30, SessionState::Failed);
    seed(&w, &dest, 5, SessionState::Succeeded);
    w.coffer()
        .arg("status")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("home").and(predicate::str::contains("OK")))
        .stdout(predicate::str::contains("4.0 KiB"))
        .stdout(predicate::str::contains("60.0 s"))
        .stdout(predicate::str::contains("never run"));
    let out = w.coffer().args(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "ok");
    let home = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "home")
        .unwrap();
    assert_eq!(home["last_outcome"], "succeeded");
    assert_eq!(home["restore_points"], 1);
    assert_eq!(home["overdue"], false);
    assert_eq!(home["last_verify"], serde_json::Value::Null);
    assert_eq!(home["last_session"]["bytes_written"], 4096);
    let age = home["age_secs"].as_f64().unwrap();
    assert!((5.0 * 3600.0 - 120.0..5.0 * 3600.0).contains(&age), "{age}");
}

#[test]
fn status_is_1_when_a_job_is_overdue() {
    let w = World::new();
    let dest = config(&w);
    // Three days ago: the daily schedule fired at least twice since.
    seed(&w, &dest, 72, SessionState::Succeeded);
    w.coffer()
        .arg("status")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("WARNING (OVERDUE)"))
        .stdout(predicate::str::contains(
            "home: overdue: the last success started 3d",
        ));
    // Only the other job: fine.
    w.coffer().args(["status", "adhoc"]).assert().code(0);
}

#[test]
fn status_is_1_when_the_last_session_warned() {
    let w = World::new();
    let dest = config(&w);
    seed(&w, &dest, 2, SessionState::Warnings);
    w.coffer()
        .arg("status")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("finished with 1 warning(s)"));
}

#[test]
fn status_is_2_when_the_last_session_failed() {
    let w = World::new();
    let dest = config(&w);
    seed(&w, &dest, 72, SessionState::Succeeded);
    seed(&w, &dest, 1, SessionState::Failed);
    w.coffer()
        .arg("status")
        .assert()
        .code(2)
        .stdout(predicate::str::contains("FAILED"))
        .stdout(predicate::str::contains(
            "home: last session (2) failed: disk full",
        ))
        .stdout(predicate::str::contains("second line").not());
    let out = w.coffer().args(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["status"].as_str(), doc["exit_code"].as_u64()),
        (Some("failed"), Some(2))
    );
}

#[test]
fn a_scheduled_job_that_never_succeeded_is_not_ok() {
    let w = World::new();
    config(&w);
    w.coffer()
        .arg("status")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("has succeeded yet"));
}
