//! Incremental jobs in the job file: `full_every` and `active_full` are read from the job
//! or `[defaults]`, checked with clear messages (a `full_every` of 0 is refused), and turn
//! into the chain options each session hands the writer — none at all for a job without
//! them, whose sessions stay fulls.

use crate::job_common::*;
use chrono::{Local, TimeZone};
use coffer::job::catalog::{Finish, SessionState, Trigger};
use coffer::job::chains::{self, MAX_CHAIN_LEN};
use coffer::job::{JobError, JobFile, StateDir};
use predicates::prelude::*;

const HEAD: &str = "[defaults]\nrecipients = [\"{KEY}\"]\n\n";

/// Parse `body` after [`HEAD`] (`{DEST}` filled in) and return the error lines.
fn problems(w: &World, body: &str) -> Vec<String> {
    let dest = w.mkdir("dest");
    let text = format!("{HEAD}{body}").replace("{DEST}", dest.to_str().unwrap());
    let path = w.write_config(&text);
    match JobFile::load(&path) {
        Ok(_) => Vec::new(),
        Err(JobError::Config(errors)) => errors
            .iter()
            .map(|e| {
                let s = e.to_string();
                s[s.find("jobs.toml").unwrap() + "jobs.toml".len()..].to_string()
            })
            .collect(),
        Err(other) => vec![format!("other error: {other}")],
    }
}

const JOB: &str = "[job.home]\nsources = [\"/tmp\"]\ndestination = \"{DEST}\"\n";

#[test]
fn full_every_and_active_full_errors_name_line_job_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "full_every = 0",
            "full_every = 0\n",
            ":7: job \"home\": key \"full_every\": full_every = 0 is not allowed: it counts the sessions of a chain, the full included, so it is at least 1",
        ),
        (
            "negative",
            "full_every = -3\n",
            ":7: job \"home\": key \"full_every\":",
        ),
        (
            "not a number",
            "full_every = \"7\"\n",
            ":7: job \"home\": key \"full_every\":",
        ),
        (
            "longer than a chain may be",
            "full_every = 257\n",
            ":7: job \"home\": key \"full_every\": full_every = 257 is more than a chain may hold (256 archives)",
        ),
        (
            "bad active_full cron",
            "active_full = \"0 3 * * funday\"\n",
            ":7: job \"home\": key \"active_full\": bad cron expression \"0 3 * * funday\"",
        ),
        (
            "active_full that never fires",
            "active_full = \"0 0 31 2 *\"\n",
            ":7: job \"home\": key \"active_full\": cron expression \"0 0 31 2 *\" never fires",
        ),
    ];
    for (name, extra, want) in cases {
        let w = World::new();
        let got = problems(&w, &format!("{JOB}{extra}"));
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert!(got[0].starts_with(want), "{name}: {got:?}");
    }
    assert_eq!(MAX_CHAIN_LEN, 256);
}

#[test]
fn full_every_zero_is_refused_by_the_cli_with_a_hint() {
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nfull_every = 0\n"
    ));
    for args in [
        &["job", "check"][..],
        &["job", "run", "home"],
        &["job", "list"],
    ] {
        w.coffer()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "key \"full_every\": full_every = 0 is not allowed",
            ))
            .stderr(predicate::str::contains("hint: e.g. full_every = 7"));
    }
    assert!(w.files(&dest).is_empty(), "no session ran");
}

#[test]
fn chain_keys_come_from_the_job_or_the_defaults_each_on_its_own() {
    let w = World::new();
    let dest = w.mkdir("dest");
    let other = w.mkdir("other");
    let plain = w.mkdir("plain");
    let path = w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\nactive_full = \"0 3 * * 0\"\n\n\
         [job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nfull_every = 7\n\n\
         [job.etc]\nsources = [\"/etc\"]\ndestination = {other:?}\nactive_full = \"@monthly\"\n\n\
         [job.var]\nsources = [\"/var\"]\ndestination = {plain:?}\n"
    ));
    let f = JobFile::load(&path).unwrap();
    let home = f.job("home").unwrap();
    assert_eq!(home.chain.full_every, Some(7));
    let af = home.chain.active_full.as_ref().unwrap();
    assert_eq!((af.value.expr(), af.line), ("0 3 * * 0", 3));
    let etc = f.job("etc").unwrap();
    assert_eq!(etc.chain.full_every, None);
    assert_eq!(
        etc.chain.active_full.as_ref().unwrap().value.expr(),
        "@monthly"
    );
    // A default active_full makes every job incremental.
    assert!(f.jobs.iter().all(|j| j.chain.is_incremental()));

    let path = w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.var]\nsources = [\"/var\"]\ndestination = {plain:?}\n"
    ));
    let f = JobFile::load(&path).unwrap();
    assert!(!f.jobs[0].chain.is_incremental());
}

#[test]
fn sessions_of_an_incremental_job_get_chain_options_others_none() {
    let w = World::new();
    let dest = w.mkdir("dest");
    let plain = w.mkdir("plain");
    let path = w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\
         [job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nfull_every = 3\n\
         [job.var]\nsources = [\"/var\"]\ndestination = {plain:?}\n"
    ));
    let f = JobFile::load(&path).unwrap();
    let cat = w.catalog();
    let now = Local::now();

    let var = f.job("var").unwrap();
    assert!(
        chains::chain_options(&cat, var, false, &now)
            .unwrap()
            .is_none()
    );
    assert!(
        chains::chain_options(&cat, var, true, &now)
            .unwrap()
            .is_none()
    );

    let home = f.job("home").unwrap();
    let opts = chains::chain_options(&cat, home, false, &now)
        .unwrap()
        .unwrap();
    // The state sits next to the catalog (FORMAT.md v2.8.4).
    assert_eq!(opts.state, w.state_dir().join("chains.sqlite"));
    assert_eq!(opts.state, StateDir::new(w.state_dir()).chains_path());
    assert_eq!(opts.full_every, Some(3));
    assert_eq!(opts.full, None);
    let forced = chains::chain_options(&cat, home, true, &now)
        .unwrap()
        .unwrap();
    assert_eq!(
        forced.full.as_deref(),
        Some("a full was asked for (job run --full)")
    );
}

/// Record a completed session of `job` of the given kind, started at `ms`.
fn record(w: &World, job: &str, ms: i64, kind: coffer::chain::ChainKind) {
    let cat = w.catalog();
    let id = cat
        .begin(job, Trigger::Schedule, &w.join("dest"), ms)
        .unwrap();
    cat.finish(
        id,
        SessionState::Succeeded,
        &Finish {
            archive: Some(w.join(format!("dest/{job}-{ms}.coffer"))),
            session_id: Some(format!("{ms:032x}")),
            kind: Some(kind),
            ..Finish::default()
        },
    )
    .unwrap();
}

#[test]
fn active_full_forces_a_full_once_its_cron_fired_since_the_last_full() {
    use coffer::chain::ChainKind::{Full, Incremental};
    let w = World::new();
    let dest = w.mkdir("dest");
    // Sundays at 03:00 local time; 2026-03-15 is a Sunday.
    let path = w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nactive_full = \"0 3 * * 0\"\n"
    ));
    let f = JobFile::load(&path).unwrap();
    let home = f.job("home").unwrap();
    let local = |s: &str| {
        Local
            .from_local_datetime(
                &chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap(),
            )
            .single()
            .unwrap()
    };
    let full_for = |now: &str| {
        chains::chain_options(&w.catalog(), home, false, &local(now))
            .unwrap()
            .unwrap()
            .full
    };

    // No full yet: nothing to force (the writer's first session is a full anyway).
    assert_eq!(full_for("2026-03-16 02:00"), None);
    // A full on Saturday, incrementals after it: Sunday 03:00 has not come yet.
    record(
        &w,
        "home",
        local("2026-03-14 02:00").timestamp_millis(),
        Full,
    );
    record(
        &w,
        "home",
        local("2026-03-15 02:00").timestamp_millis(),
        Incremental,
    );
    assert_eq!(full_for("2026-03-15 02:59"), None);
    // It fired since the last full (the incremental does not count): a full.
    let why = full_for("2026-03-16 02:00").expect("active full due");
    assert_eq!(
        why,
        "active_full \"0 3 * * 0\" fired at 2026-03-15 03:00 since the last full"
    );
    // Once the active full is made, the next sessions are not forced until next Sunday.
    record(
        &w,
        "home",
        local("2026-03-16 02:00").timestamp_millis(),
        Full,
    );
    assert_eq!(full_for("2026-03-17 02:00"), None);
    assert!(full_for("2026-03-23 02:00").is_some());
}
