//! `coffer job run`, `history`, `job list` and locking through the real binary: a session
//! writes a restorable archive named `<job>-<UTC stamp>-<8 hex>.coffer` into the
//! destination and is recorded in the catalog, whether it succeeds, ends with warnings or
//! fails; a second run of a running job is refused (or waits with --wait).

use crate::job_common::*;
use coffer::job::catalog::SessionState;
use coffer::job::lock::LockDir;
use predicates::prelude::*;
use std::path::Path;
use std::time::Duration;

fn config(w: &World, src: &Path, dest: &Path, extra: &str) {
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\nexclude = [\"*.tmp\"]\ndestination = {dest:?}\n{extra}"
    ));
}

fn is_archive_name(name: &str, job: &str) -> bool {
    // <job>-YYYYmmddTHHMMSSZ-xxxxxxxx.coffer
    let Some(rest) = name.strip_prefix(&format!("{job}-")) else {
        return false;
    };
    let b = rest.as_bytes();
    rest.len() == 16 + 1 + 8 + 7
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..25]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && rest.ends_with(".coffer")
}

#[test]
fn job_run_writes_a_restorable_archive_and_records_the_session() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "compression = \"zstd\"\n");

    let out = w
        .coffer()
        .args(["job", "run", "home"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("job home: session 1 succeeded: 2 files"),
        "{stdout}"
    );

    let files = w.files(&dest);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(is_archive_name(&files[0], "home"), "{files:?}");
    let archive = dest.join(&files[0]);

    // Restore with the private key and compare.
    let to = w.join("restored");
    w.coffer()
        .args([
            "restore",
            archive.to_str().unwrap(),
            "-i",
            keys().private.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "-q",
        ])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(to.join("src/hello.txt")).unwrap(),
        b"hello, jobs\n"
    );
    assert_eq!(
        std::fs::read(to.join("src/sub/data.bin")).unwrap(),
        pseudo_random(70_000, 7)
    );
    assert!(!to.join("src/skip.tmp").exists(), "exclude applies");

    // The catalog has the session with its archive and session id.
    let rows = w.sessions("home");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.state, SessionState::Succeeded);
    assert_eq!(r.trigger, "manual");
    assert_eq!(r.archive.as_deref(), Some(archive.as_path()));
    let sid = r.session_id.clone().unwrap();
    assert_eq!(sid.len(), 32);
    assert!(
        files[0].contains(&sid[..8]),
        "archive name carries the session id"
    );
    assert_eq!((r.files, r.dirs), (Some(2), Some(2)));
    assert_eq!(r.bytes_read, Some(12 + 70_000));
    assert_eq!(
        r.bytes_written,
        Some(std::fs::metadata(&archive).unwrap().len())
    );
    assert_eq!(r.warning_count, 0);
    assert!(r.error.is_none() && r.finished_at_ms.is_some());
    assert!(r.pid > 0);

    // The archive header names the job and the session.
    let info = w
        .coffer()
        .args(["info", "--json", archive.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(doc["archives"][0]["job_name"], "home");
    assert_eq!(doc["archives"][0]["session_id"], sid.as_str());
}

#[test]
fn warnings_are_recorded_and_exit_1() {
    let w = World::new();
    let src = w.small_tree("src");
    // A socket cannot be backed up: a warning, the rest goes on.
    let _sock = std::os::unix::net::UnixListener::bind(src.join("app.sock")).unwrap();
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "");
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("app.sock"))
        .stderr(predicate::str::contains("finished with 1 warning(s)"));
    let r = &w.sessions("home")[0];
    assert_eq!(r.state, SessionState::Warnings);
    assert_eq!(r.warning_count, 1);
    assert!(
        r.warnings[0].contains("app.sock") && r.warnings[0].contains("socket not backed up"),
        "{:?}",
        r.warnings
    );
    assert!(
        r.archive.as_deref().is_some_and(Path::exists),
        "the archive is complete"
    );
}

#[test]
fn failures_are_recorded_with_the_error_and_exit_2() {
    let w = World::new();
    let dest = w.mkdir("dest");
    config(&w, &w.join("vanished"), &dest, "");
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("error: job home:").and(predicate::str::contains("vanished")),
        )
        .stderr(predicate::str::contains("hint: "));
    let r = &w.sessions("home")[0];
    assert_eq!(r.state, SessionState::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("vanished"),
        "{:?}",
        r.error
    );
    assert!(r.archive.is_none() && r.session_id.is_none());
    assert!(
        w.files(&dest).is_empty(),
        "no archive or temporary file left"
    );
}

/// A world whose job `home` (sources `src/`) has run once, successfully.
fn world_after_one_session() -> (World, std::path::PathBuf) {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "");
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
    (w, src)
}

#[test]
fn history_shows_every_session_as_text_and_json() {
    let (w, src) = world_after_one_session();
    std::fs::rename(&src, w.join("moved")).unwrap();
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .code(2);

    let out = w
        .coffer()
        .args(["history", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = doc["sessions"].as_array().unwrap();
    assert_eq!(s.len(), 2);
    // Newest first.
    assert_eq!(s[0]["state"], "failed");
    assert!(s[0]["error"].as_str().unwrap().contains("src"));
    assert_eq!(s[1]["state"], "succeeded");
    for key in [
        "id",
        "job",
        "started_at",
        "duration_secs",
        "files",
        "bytes_read",
        "archive",
        "session_id",
        "warnings",
        "error",
    ] {
        assert!(s[1].get(key).is_some(), "{key} missing");
    }
    assert_eq!(s[1]["job"], "home");
    assert_eq!(s[1]["files"], 2);

    let text = w
        .coffer()
        .args(["history", "home"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("OUTCOME"), "{text}");
    assert!(
        text.contains("succeeded") && text.contains("failed"),
        "{text}"
    );
    w.coffer()
        .args(["history", "other"])
        .assert()
        .success()
        .stdout("no sessions recorded\n");
}

#[test]
fn job_list_shows_schedule_next_run_and_last_outcome() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "schedule = \"0 2 * * *\"\n");
    w.coffer().args(["job", "list"]).assert().success().stdout(
        predicate::str::contains("home  0 2 * * *").and(predicate::str::contains("never run")),
    );
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
    let out = w
        .coffer()
        .args(["job", "list", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let j = &doc["jobs"][0];
    assert_eq!(j["name"], "home");
    assert_eq!(j["schedule"], "0 2 * * *");
    assert!(j["next_run"].as_str().unwrap().contains("T02:00:00"), "{j}");
    assert_eq!(j["last"]["state"], "succeeded");
}

#[test]
fn a_second_run_of_a_running_job_is_refused_with_a_clear_message() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "");
    // This test process holds the job's lock, as a running session would.
    let locks = LockDir::new(w.state_dir().join("locks"));
    let held = locks.try_job("home").unwrap().unwrap();
    let out = w
        .coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "error: job \"home\" is already running (pid {})",
            std::process::id()
        )
    );
    assert!(
        err.contains("hint: wait for it to finish, or pass --wait"),
        "{err}"
    );
    assert!(w.files(&dest).is_empty());
    assert!(
        w.sessions("home").is_empty(),
        "a refused run is not a session"
    );
    drop(held);
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
}

#[test]
fn wait_queues_behind_the_running_session() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    config(&w, &src, &dest, "");
    let locks = LockDir::new(w.state_dir().join("locks"));
    let held = locks.try_job("home").unwrap().unwrap();
    let mut child = Guard(
        w.coffer_std()
            .args(["job", "run", "home", "--wait", "-q"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "must wait while the lock is held"
    );
    assert!(w.files(&dest).is_empty());
    drop(held);
    let st = wait_child(&mut child.0, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("job home is running"), "{err}");
    assert_eq!(w.files(&dest).len(), 1);
}

#[test]
fn two_jobs_do_not_block_each_other_and_have_separate_locks() {
    let w = World::new();
    let a = w.small_tree("a");
    let b = w.small_tree("b");
    let (da, db) = (w.mkdir("da"), w.mkdir("db"));
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.a]\nsources = [{a:?}]\ndestination = {da:?}\n[job.b]\nsources = [{b:?}]\ndestination = {db:?}\n"
    ));
    let locks = LockDir::new(w.state_dir().join("locks"));
    let _held = locks.try_job("a").unwrap().unwrap();
    w.coffer()
        .args(["job", "run", "b", "-q"])
        .assert()
        .success();
    assert_eq!(w.files(&db).len(), 1);
}

/// SQLite makes a missing database 0666 less the umask, so 0644 under the usual 022: in a
/// state folder the user made with an open mode, everyone could read the catalog.
#[test]
fn regression_catalog_created_0600_under_umask_022() {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let w = World::new();
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(w.state_dir())
        .unwrap();
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "umask 022 && exec \"$0\" history"])
        .arg(assert_cmd::cargo::cargo_bin("coffer"))
        .env_clear()
        .env("HOME", w.join("home"))
        .env("COFFER_STATE_DIR", w.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"no sessions recorded\n");
    let mode = std::fs::metadata(w.state_dir().join("catalog.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `job`, `daemon` and `prune` took `--config` but `history` refused it ("unexpected
/// argument"), so a script could not pass the same flags to every job command.
#[test]
fn regression_history_accepts_config() {
    let (w, _) = world_after_one_session();
    for json in [false, true] {
        let mut cmd = w.coffer();
        cmd.env_remove("COFFER_CONFIG")
            .args(["history", "--config"])
            .arg(w.config())
            .arg("--state-dir")
            .arg(w.state_dir());
        if json {
            cmd.arg("--json");
        }
        cmd.assert()
            .success()
            .stdout(predicate::str::contains("succeeded"));
    }
    // History reads only the catalog: it still works when the job file is broken.
    std::fs::write(w.config(), "[job.home\n").unwrap();
    w.coffer()
        .args(["history", "--config"])
        .arg(w.config())
        .assert()
        .success()
        .stdout(predicate::str::contains("succeeded"));
}
