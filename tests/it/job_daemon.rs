//! The scheduler and signals through the real binary: `daemon --once` with a schedule that
//! is due and one that is not, catch-up, retention after a run, SIGTERM/SIGINT during a
//! session (no partial archive left, session recorded as interrupted) and `kill -9`
//! (the session shows as interrupted on the next start, its temporary file is removed).

use crate::job_common::*;
use chrono::{Local, Timelike};
use coffer::job::catalog::{Finish, SessionState, Trigger};
use coffer::job::lock::LockDir;
use coffer::job::session::STOPPED_REASON;
use predicates::prelude::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A cron expression that fired `hours_ago` hours ago (never in the current minute).
fn fired_hours_ago(hours_ago: u32) -> String {
    let now = Local::now();
    format!(
        "{} {} * * *",
        now.minute(),
        (now.hour() + 24 - hours_ago) % 24
    )
}

/// A cron expression that fires in about half an hour, not now.
fn not_due_now() -> String {
    format!("{} * * * *", (Local::now().minute() + 30) % 60)
}

#[test]
fn daemon_once_runs_the_due_job_and_not_the_other() {
    let w = World::new();
    let (a, b) = (w.small_tree("a"), w.small_tree("b"));
    let (da, db) = (w.mkdir("dest-due"), w.mkdir("dest-later"));
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.due]\nsources = [{a:?}]\ndestination = {da:?}\nschedule = \"* * * * *\"\n\n[job.later]\nsources = [{b:?}]\ndestination = {db:?}\nschedule = \"{}\"\n",
        not_due_now()
    ));
    let out = w
        .coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .get_output()
        .clone();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(log.contains("job due: due (scheduled"), "{log}");
    assert!(
        log.contains("job due: session 1 started (schedule)"),
        "{log}"
    );
    assert!(log.contains("job due: session 1 succeeded"), "{log}");
    assert!(!log.contains("job later: due"), "{log}");
    assert_eq!(w.files(&da).len(), 1);
    assert!(w.files(&db).is_empty());
    let rows = w.sessions("due");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].state, rows[0].trigger.as_str()),
        (SessionState::Succeeded, "schedule")
    );
    assert!(w.sessions("later").is_empty());
}

#[test]
fn a_run_missed_while_the_daemon_was_down_runs_once_unless_catch_up_is_off() {
    let w = World::new();
    let (a, b) = (w.small_tree("a"), w.small_tree("b"));
    let (da, db) = (w.mkdir("da"), w.mkdir("db"));
    let sched = fired_hours_ago(2);
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.nightly]\nsources = [{a:?}]\ndestination = {da:?}\nschedule = \"{sched}\"\n\n[job.strict]\nsources = [{b:?}]\ndestination = {db:?}\nschedule = \"{sched}\"\ncatch_up = false\n"
    ));
    // An earlier daemon last looked at both jobs three days ago.
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3)).timestamp_millis();
    let cat = w.catalog();
    cat.set_last_checked("nightly", three_days_ago).unwrap();
    cat.set_last_checked("strict", three_days_ago).unwrap();
    drop(cat);

    let out = w
        .coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .get_output()
        .clone();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        log.contains("job nightly: missed while the daemon was down; catching up"),
        "{log}"
    );
    let rows = w.sessions("nightly");
    assert_eq!(rows.len(), 1, "three missed nights run once");
    assert_eq!(rows[0].trigger, "catch-up");
    assert!(w.sessions("strict").is_empty(), "catch_up = false");
    // The next pass has nothing to catch up.
    w.coffer().args(["daemon", "--once"]).assert().success();
    assert_eq!(w.sessions("nightly").len(), 1);
}

#[test]
fn the_daemon_applies_retention_after_a_successful_run() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"* * * * *\"\nretention = {{ keep_last = 1 }}\n"
    ));
    // An older good archive from a week ago.
    let old = dest.join("home-old.coffer");
    std::fs::write(&old, b"old").unwrap();
    let cat = w.catalog();
    let t = (chrono::Utc::now() - chrono::Duration::days(7)).timestamp_millis();
    let id = cat.begin("home", Trigger::Schedule, &dest, t).unwrap();
    cat.finish(
        id,
        SessionState::Succeeded,
        &Finish {
            archive: Some(old.clone()),
            ..Finish::default()
        },
    )
    .unwrap();
    drop(cat);

    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "job home: retention kept 1, deleted 1 (home-old.coffer)",
        ));
    assert!(!old.exists());
    let files = w.files(&dest);
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with("home-2"), "{files:?}");
}

#[test]
fn daemon_refuses_to_start_twice_or_without_schedules() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\n"
    ));
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no job has a schedule"));
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"* * * * *\"\n"
    ));
    let locks = LockDir::new(w.state_dir().join("locks"));
    let _other_daemon = locks.try_daemon().unwrap().unwrap();
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "another coffer daemon is already running",
        ));
    assert!(w.files(&dest).is_empty());
}

/// Job `big` over a sparse file that takes seconds to read.
fn slow_world(schedule: &str) -> (World, std::path::PathBuf) {
    let w = World::new();
    let src = w.slow_tree("big", 16);
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.big]\nsources = [{src:?}]\ndestination = {dest:?}\n{schedule}"
    ));
    (w, dest)
}

/// Wait until the session's temporary archive exists (the backup is under way).
fn wait_for_partial(dest: &Path, child: &mut std::process::Child) {
    let seen = wait_for(Duration::from_secs(10), || {
        temp_files(dest).iter().any(|n| n.ends_with(".partial"))
    });
    if !seen {
        let _ = child.kill();
        panic!("no partial archive appeared in {}", dest.display());
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended too soon for this test"
    );
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
    s
}

#[test]
fn sigterm_stops_the_daemon_cleanly_during_a_session() {
    let (w, dest) = slow_world("schedule = \"* * * * *\"\n");
    let mut child = Guard(
        w.coffer_std()
            .arg("daemon")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_partial(&dest, &mut child.0);
    let sent = Instant::now();
    kill("-TERM", child.0.id());
    let st = wait_child(&mut child.0, Duration::from_secs(10));
    let took = sent.elapsed();
    let log = stderr_of(&mut child.0);
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(3), "took {took:?} to stop");
    assert!(log.contains("stop signal received"), "{log}");
    assert!(log.contains("job big: session 1 interrupted"), "{log}");
    // No partial, staging or final archive left.
    assert_eq!(w.files(&dest), Vec::<String>::new());
    let rows = w.sessions("big");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, SessionState::Interrupted);
    assert_eq!(rows[0].error.as_deref(), Some(STOPPED_REASON));
    assert!(rows[0].archive.is_none() && rows[0].finished_at_ms.is_some());
}

#[test]
fn sigint_interrupts_job_run_with_exit_2_and_no_partial_archive() {
    let (w, dest) = slow_world("");
    let mut child = Guard(
        w.coffer_std()
            .args(["job", "run", "big"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_partial(&dest, &mut child.0);
    kill("-INT", child.0.id());
    let st = wait_child(&mut child.0, Duration::from_secs(10));
    let err = stderr_of(&mut child.0);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("error: job big: session 1 interrupted: stopped by a signal"),
        "{err}"
    );
    assert_eq!(w.files(&dest), Vec::<String>::new());
    assert_eq!(w.sessions("big")[0].state, SessionState::Interrupted);
    // The lock went with the process.
    let locks = LockDir::new(w.state_dir().join("locks"));
    assert!(locks.try_job("big").unwrap().is_some());
}

#[test]
fn kill_9_leaves_a_running_row_that_the_next_start_marks_interrupted() {
    let (w, dest) = slow_world("");
    let mut child = Guard(
        w.coffer_std()
            .args(["job", "run", "big", "-q"])
            .spawn()
            .unwrap(),
    );
    wait_for_partial(&dest, &mut child.0);
    let pid = child.0.id();
    kill("-KILL", pid);
    let st = wait_child(&mut child.0, Duration::from_secs(10));
    assert_eq!(st.code(), None, "killed by a signal");

    // Raw catalog: still "running", and the temporary archive is still there.
    let rows = w.sessions("big");
    assert_eq!(rows[0].state, SessionState::Running);
    assert_eq!(rows[0].pid, pid);
    assert!(!temp_files(&dest).is_empty());

    // The next start of coffer (any command that opens the catalog) finds it.
    let out = w
        .coffer()
        .args(["history", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &doc["sessions"][0];
    assert_eq!(s["state"], "interrupted");
    assert!(
        s["error"].as_str().unwrap().contains(&format!("pid {pid}")),
        "{s}"
    );
    assert!(s["archive"].is_null());
    // Its lock was free, so its temporary files were removed.
    assert_eq!(w.files(&dest), Vec::<String>::new());
}

#[test]
fn sigterm_while_idle_stops_the_daemon_at_once() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"{}\"\n",
        not_due_now()
    ));
    let mut child = Guard(
        w.coffer_std()
            .arg("daemon")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The daemon writes its pid into its lock once its signal handlers are in place.
    let locks = LockDir::new(w.state_dir().join("locks"));
    assert!(wait_for(Duration::from_secs(5), || locks.daemon_holder()
        == Some(child.0.id())));
    let sent = Instant::now();
    kill("-TERM", child.0.id());
    let st = wait_child(&mut child.0, Duration::from_secs(5));
    let log = stderr_of(&mut child.0);
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert!(
        log.contains("daemon started") && log.contains("daemon stopped"),
        "{log}"
    );
    assert!(w.files(&dest).is_empty());
}
