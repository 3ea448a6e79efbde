//! The job file: every kind of mistake is reported at load time with the file, the line,
//! the job, the key and a clear message — before any backup starts.

use crate::job_common::*;
use coffer::job::{JobError, JobFile};
use predicates::prelude::*;
use std::path::Path;

/// Parse `body` (with `{KEY}` and `{DEST}` filled in) as `w`'s job file and return the
/// errors (parse errors, or else resolution errors).
fn problems(w: &World, body: &str) -> Vec<String> {
    let body = body
        .replace("{KEY}", keys().public.to_str().unwrap())
        .replace("{DEST}", w.mkdir("dest").to_str().unwrap());
    let path = w.join("jobs.toml");
    std::fs::write(&path, &body).unwrap();
    let result = JobFile::load(&path).and_then(|f| f.resolve_all(&f.jobs).map(|_| ()));
    match result {
        Ok(()) => Vec::new(),
        Err(JobError::Config(errors)) => errors
            .iter()
            .map(|e| {
                // Paths differ per test; keep what follows "jobs.toml".
                let s = e.to_string();
                s[s.find("jobs.toml").unwrap() + "jobs.toml".len()..].to_string()
            })
            .collect(),
        Err(other) => vec![format!("other error: {other}")],
    }
}

const HEAD: &str = "[defaults]\nrecipients = [\"{KEY}\"]\n\n";

#[test]
fn each_config_error_names_line_job_and_key() {
    // (name, job file after HEAD (lines 1-3), expected message fragments)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\ncolour = \"blue\"\n",
            &[
                ":7: job \"home\": key \"colour\": unknown key (expected one of sources, destination",
            ],
        ),
        (
            "unknown key in an inline table",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nretention = { keep_last = 7, keep_dialy = 3 }\n",
            &[
                ":7: job \"home\": key \"keep_dialy\": unknown key (expected one of keep_last, keep_daily, keep_weekly, keep_monthly)",
            ],
        ),
        (
            "unknown top-level table",
            "[jobs.home]\nsources = [\"/tmp\"]\n",
            &[
                ":4: key \"jobs\": unknown key (expected one of defaults, s3, job, metrics_textfile)",
            ],
        ),
        (
            "bad cron expression",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nschedule = \"61 * * * *\"\n",
            &[":7: job \"home\": key \"schedule\": bad cron expression \"61 * * * *\""],
        ),
        (
            "cron with a missing field",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nschedule = \"0 2 * *\"\n",
            &[":7: job \"home\": key \"schedule\": bad cron expression \"0 2 * *\""],
        ),
        (
            "cron that never fires",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nschedule = \"0 0 31 2 *\"\n",
            &[":7: job \"home\": key \"schedule\": cron expression \"0 0 31 2 *\" never fires"],
        ),
        (
            "missing recipient file",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nrecipients = [\"/nonexistent/ops.pub\"]\n",
            &[":7: job \"home\": key \"recipients\": /nonexistent/ops.pub:"],
        ),
        (
            "no recipients at all",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nrecipients = []\n",
            &[":7: job \"home\": key \"recipients\": no recipients"],
        ),
        (
            "missing destination folder",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"/nonexistent/backups\"\n",
            &[
                ":6: job \"home\": key \"destination\": /nonexistent/backups: destination folder does not exist",
            ],
        ),
        (
            "destination is a file",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{KEY}\"\n",
            &[
                ":6: job \"home\": key \"destination\":",
                "destination is not a folder",
            ],
        ),
        (
            "two jobs share a destination",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\n\n[job.etc]\nsources = [\"/etc\"]\ndestination = \"{DEST}/\"\n",
            &[
                ":10: job \"etc\": key \"destination\":",
                "is also the destination of job \"home\" (line 6); jobs must not share a destination",
            ],
        ),
        (
            "missing required key",
            "[job.home]\nsources = [\"/tmp\"]\n",
            &[":4: job \"home\": key \"destination\": required key is missing"],
        ),
        (
            "wrong type",
            "[job.home]\nsources = \"/tmp\"\ndestination = \"{DEST}\"\n",
            &[
                ":5: job \"home\": key \"sources\": invalid type: string \"/tmp\", expected an array",
            ],
        ),
        (
            "negative count",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nretention = { keep_daily = -1 }\n",
            &[":7: job \"home\": key \"keep_daily\": invalid value: integer `-1`"],
        ),
        (
            "retention that keeps nothing",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nretention = { keep_last = 0 }\n",
            &[":7: job \"home\": key \"retention\": retention keeps nothing"],
        ),
        (
            "unknown compression",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\ncompression = \"lz4\"\n",
            &[":7: job \"home\": key \"compression\": unknown compression \"lz4\""],
        ),
        (
            "bad exclude glob",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nexclude = [\"a[b\"]\n",
            &[":7: job \"home\": key \"exclude\": bad glob \"a[b\""],
        ),
        (
            "bad job name",
            "[job.\"my job\"]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\n",
            &[":4: job \"my job\": key \"name\": job name \"my job\" is not allowed"],
        ),
        (
            "duplicate job",
            "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\n[job.home]\nsources = [\"/tmp\"]\n",
            &[":7:", "duplicate key"],
        ),
        (
            "syntax error",
            "[job.home\nsources = [\"/tmp\"]\n",
            &[":4:", "expected `]`"],
        ),
    ];
    for (name, body, expected) in cases {
        let w = World::new();
        let got = problems(&w, &format!("{HEAD}{body}"));
        assert_eq!(got.len(), 1, "{name}: expected one error, got {got:?}");
        for frag in *expected {
            assert!(
                got[0].contains(frag),
                "{name}: {frag:?} not in {:?}",
                got[0]
            );
        }
    }
}

#[test]
fn errors_in_defaults_name_the_defaults_section() {
    let w = World::new();
    let got = problems(
        &w,
        "[defaults]\nrecipients = [\"{KEY}\"]\ncompresion = \"none\"\n\n[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\n",
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(":3: [defaults]: key \"compresion\": unknown key"),
        "{got:?}"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let w = World::new();
    let got = problems(
        &w,
        "[defaults]\nrecipients = [\"{KEY}\"]\n[job.a]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\nschedule = \"x\"\n[job.b]\nsources = [\"/tmp\"]\ndestination = \"{DEST}/b\"\ncompression = \"lz4\"\n",
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(":6: job \"a\": key \"schedule\""),
        "{got:?}"
    );
    assert!(
        got[1].starts_with(":10: job \"b\": key \"compression\""),
        "{got:?}"
    );
}

#[test]
fn relative_paths_are_relative_to_the_job_file() {
    let w = World::new();
    w.mkdir("backups/home");
    std::fs::write(
        w.config(),
        "[job.home]\nsources = [\"data\"]\ndestination = \"backups/home/\"\nrecipients = [\"k.pub\"]\n",
    )
    .unwrap();
    let f = JobFile::load(&w.config()).unwrap();
    let j = f.job("home").unwrap();
    assert_eq!(j.sources[0].value, w.join("data"));
    assert_eq!(j.destination.value, w.join("backups/home"));
    assert_eq!(j.recipients[0].value, w.join("k.pub"));
    assert!(j.catch_up, "catch_up defaults to true");
}

#[test]
fn job_check_prints_every_error_then_one_hint_and_exits_2() {
    let w = World::new();
    w.write_config(
        "[defaults]\nrecipients = [\"{KEY}\", \"/nonexistent/escrow.pub\"]\n\n[job.home]\nsources = [\"/nonexistent/src\"]\ndestination = \"/nonexistent/dest\"\n",
    );
    let out = w
        .coffer()
        .args(["job", "check"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].contains("jobs.toml:2: job \"home\": key \"recipients\": /nonexistent/escrow.pub"),
        "{err}"
    );
    assert!(
        lines[1].contains("jobs.toml:5: job \"home\": key \"sources\": /nonexistent/src"),
        "{err}"
    );
    assert!(lines[2].contains("jobs.toml:6: job \"home\": key \"destination\": /nonexistent/dest: destination folder does not exist"), "{err}");
    assert!(lines[3].starts_with("hint: "), "{err}");
    for l in &lines[..3] {
        assert!(l.starts_with("error: "), "{err}");
    }
}

#[test]
fn job_check_ok_describes_each_job() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"0 2 * * *\"\nretention = {{ keep_last = 3 }}\n"
    ));
    w.coffer()
        .args(["job", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "ok: job home: 1 source(s), 1 recipient(s)",
        ))
        .stdout(predicate::str::contains("schedule \"0 2 * * *\""))
        .stdout(predicate::str::contains("keep_last=3"));
}

#[test]
fn a_bad_job_file_stops_job_run_before_any_backup() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"every night\"\n"
    ));
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "jobs.toml:6: job \"home\": key \"schedule\"",
        ));
    assert!(w.files(&dest).is_empty());
    // Nothing was recorded: no session started.
    assert!(!w.state_dir().join("catalog.sqlite").exists() || w.sessions("home").is_empty());
}

#[test]
fn missing_job_file_and_unknown_job_are_clear() {
    let w = World::new();
    w.coffer()
        .args(["job", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("jobs.toml: job file not found"))
        .stderr(predicate::str::contains("hint: "));
    w.write_config("[defaults]\nrecipients = [\"{KEY}\"]\n");
    w.coffer()
        .args(["job", "run", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no job named \"nope\""));
}

#[test]
fn config_flag_overrides_the_environment() {
    let w = World::new();
    let other = w.join("other.toml");
    std::fs::write(
        &other,
        "[job.x]\nsources = [\"/tmp\"]\ndestination = \"/tmp\"\nrecipients = [\"k.pub\"]\n",
    )
    .unwrap();
    w.coffer()
        .args(["job", "list", "--config", other.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("x "));
    assert!(Path::new(&other).exists());
}

#[test]
fn default_locations_follow_xdg_and_fall_back_to_home() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    let home = w.mkdir("home");
    let body = format!(
        "[defaults]\nrecipients = [{:?}]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\n",
        keys().public
    );
    let bare = || {
        let mut c = assert_cmd::Command::cargo_bin("coffer").unwrap();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home);
        c
    };
    // No XDG variables: $HOME/.config/coffer/jobs.toml and $HOME/.local/state/coffer.
    std::fs::create_dir_all(home.join(".config/coffer")).unwrap();
    std::fs::write(home.join(".config/coffer/jobs.toml"), &body).unwrap();
    bare().args(["job", "run", "home", "-q"]).assert().success();
    assert!(home.join(".local/state/coffer/catalog.sqlite").is_file());

    // XDG variables win over HOME; --state-dir wins over both.
    let xdg_config = w.mkdir("xdg-config/coffer");
    std::fs::write(xdg_config.join("jobs.toml"), &body).unwrap();
    let xdg_state = w.join("xdg-state");
    bare()
        .env("XDG_CONFIG_HOME", w.join("xdg-config"))
        .env("XDG_STATE_HOME", &xdg_state)
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
    assert!(xdg_state.join("coffer/catalog.sqlite").is_file());
    let flag_state = w.join("flag-state");
    bare()
        .env("XDG_STATE_HOME", &xdg_state)
        .args(["history", "--state-dir", flag_state.to_str().unwrap()])
        .assert()
        .success()
        .stdout("no sessions recorded\n");
    bare()
        .env_remove("HOME")
        .args(["history"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot locate the state folder"));
}
