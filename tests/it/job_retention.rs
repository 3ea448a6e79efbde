//! Retention: decisions on synthetic session lists at the bucket boundaries (table tests),
//! and `coffer prune` deleting whole archive files and updating the catalog.

use crate::job_common::*;
use chrono::{DateTime, FixedOffset, Utc};
use coffer::job::catalog::{Finish, SessionState, Trigger};
use coffer::job::retention::{Candidate, Retention, decide};
use predicates::prelude::*;
use std::path::PathBuf;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> Retention {
    Retention {
        keep_last: last,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
    }
}

/// Archives are given oldest first and numbered from 1; the expectation lists the kept
/// ones as `number:reason`, newest first.
struct Case {
    name: &'static str,
    policy: Retention,
    times: &'static [&'static str],
    kept: &'static [&'static str],
}

#[test]
fn retention_decisions_at_bucket_boundaries() {
    let cases = [
        Case {
            name: "keep_last keeps exactly the newest N",
            policy: policy(2, 0, 0, 0),
            times: &[
                "2024-01-01T10:00:00Z",
                "2024-01-01T11:00:00Z",
                "2024-01-01T12:00:00Z",
            ],
            kept: &["3:last #1", "2:last #2"],
        },
        Case {
            name: "daily: one second apart across midnight are two days",
            policy: policy(0, 2, 0, 0),
            times: &["2024-01-01T23:59:59Z", "2024-01-02T00:00:00Z"],
            kept: &["2:daily #1", "1:daily #2"],
        },
        Case {
            name: "daily: the newest of each day is kept, the rest of the day goes",
            policy: policy(0, 3, 0, 0),
            times: &[
                "2024-01-01T01:00:00Z",
                "2024-01-01T23:00:00Z",
                "2024-01-02T00:00:00Z",
                "2024-01-02T12:00:00Z",
                "2024-01-03T06:00:00Z",
            ],
            kept: &["5:daily #1", "4:daily #2", "2:daily #3"],
        },
        Case {
            name: "daily: a gap day does not use up a slot",
            policy: policy(0, 2, 0, 0),
            times: &[
                "2024-01-01T12:00:00Z",
                "2024-01-05T12:00:00Z",
                "2024-01-06T12:00:00Z",
            ],
            kept: &["3:daily #1", "2:daily #2"],
        },
        Case {
            name: "weekly: Sunday 23:59 and Monday 00:00 are different ISO weeks",
            policy: policy(0, 0, 2, 0),
            // 2024-01-07 is a Sunday.
            times: &["2024-01-07T23:59:00Z", "2024-01-08T00:00:00Z"],
            kept: &["2:weekly #1", "1:weekly #2"],
        },
        Case {
            name: "weekly: Monday to Sunday is one week",
            policy: policy(0, 0, 1, 0),
            times: &["2024-01-08T00:00:00Z", "2024-01-14T23:59:00Z"],
            kept: &["2:weekly #1"],
        },
        Case {
            name: "weekly: ISO week 1 of 2025 starts on 2024-12-30",
            policy: policy(0, 0, 2, 0),
            times: &[
                "2024-12-29T12:00:00Z",
                "2024-12-30T12:00:00Z",
                "2025-01-02T12:00:00Z",
            ],
            kept: &["3:weekly #1", "1:weekly #2"],
        },
        Case {
            name: "monthly: Jan 31 23:59:59 and Feb 1 00:00 are two months",
            policy: policy(0, 0, 0, 2),
            times: &["2024-01-31T23:59:59Z", "2024-02-01T00:00:00Z"],
            kept: &["2:monthly #1", "1:monthly #2"],
        },
        Case {
            name: "monthly: leap day belongs to February",
            policy: policy(0, 0, 0, 1),
            times: &["2024-02-01T00:00:00Z", "2024-02-29T23:00:00Z"],
            kept: &["2:monthly #1"],
        },
        Case {
            name: "archives kept by keep_last do not count for daily",
            policy: policy(1, 1, 0, 0),
            times: &[
                "2024-01-01T12:00:00Z",
                "2024-01-02T08:00:00Z",
                "2024-01-02T12:00:00Z",
            ],
            // #3 is last #1; its day is then used up, so daily goes to the previous day.
            kept: &["3:last #1", "1:daily #1"],
        },
        Case {
            name: "not enough periods: the oldest is kept too (borg's rule)",
            policy: policy(0, 5, 0, 0),
            times: &[
                "2024-01-01T08:00:00Z",
                "2024-01-01T09:00:00Z",
                "2024-01-02T09:00:00Z",
            ],
            kept: &["3:daily #1", "2:daily #2", "1:daily #3 (oldest)"],
        },
        Case {
            name: "one archive is always kept",
            policy: policy(0, 0, 0, 1),
            times: &["2024-06-01T00:00:00Z"],
            kept: &["1:monthly #1"],
        },
    ];
    for case in &cases {
        let cands: Vec<Candidate> = case
            .times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: i as i64 + 1,
                time: at(t),
            })
            .collect();
        let got: Vec<String> = decide(&case.policy, &cands, &Utc)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| format!("{}:{}", v.id, v.reason))
            .collect();
        assert_eq!(got, case.kept, "{}", case.name);
    }
}

#[test]
fn a_year_of_nightly_backups_under_the_example_policy() {
    // 400 nights at 02:00 UTC from 2023-01-01.
    let start = at("2023-01-01T02:00:00Z");
    let cands: Vec<Candidate> = (0..400)
        .map(|d| Candidate {
            id: d + 1,
            time: start + chrono::Duration::days(d),
        })
        .collect();
    let v = decide(&policy(7, 14, 8, 12), &cands, &Utc);
    let kept: Vec<_> = v.iter().filter(|v| v.keep).collect();
    let count = |p: &str| kept.iter().filter(|v| v.reason.starts_with(p)).count();
    assert_eq!(count("last"), 7);
    assert_eq!(count("daily"), 14);
    assert_eq!(count("weekly"), 8);
    assert_eq!(count("monthly"), 12);
    assert_eq!(kept.len(), 41);
    // The newest is kept, and every deletion names the policy.
    assert!(v[0].keep && v[0].reason == "last #1");
    for d in v.iter().filter(|v| !v.keep) {
        assert_eq!(
            d.reason,
            "not kept by keep_last=7, keep_daily=14, keep_weekly=8, keep_monthly=12"
        );
    }
}

#[test]
fn buckets_follow_the_given_time_zone() {
    // 22:30 UTC on Jan 31 is already Feb 1 at UTC+2.
    let cands = [
        Candidate {
            id: 1,
            time: at("2024-01-31T21:30:00Z"),
        },
        Candidate {
            id: 2,
            time: at("2024-01-31T22:30:00Z"),
        },
    ];
    let p = policy(0, 0, 0, 2);
    let utc: Vec<_> = decide(&p, &cands, &Utc)
        .into_iter()
        .map(|v| v.reason)
        .collect();
    assert_eq!(utc, ["monthly #1", "monthly #2 (oldest)"]);
    let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
    let local: Vec<_> = decide(&p, &cands, &plus2)
        .into_iter()
        .map(|v| v.reason)
        .collect();
    assert_eq!(local, ["monthly #1", "monthly #2"]);
}

/// Record synthetic sessions of `home` started at `times` (oldest first), each with an
/// archive file in `dest`, with the given state. Returns the archive paths.
fn seed(w: &World, dest: &std::path::Path, rows: &[(&str, SessionState)]) -> Vec<PathBuf> {
    let cat = w.catalog();
    let mut paths = Vec::new();
    for (i, (t, state)) in rows.iter().enumerate() {
        let t = at(t);
        let id = cat
            .begin("home", Trigger::Schedule, dest, t.timestamp_millis())
            .unwrap();
        let archive = dest.join(format!(
            "home-{}-{:08x}.coffer",
            t.format("%Y%m%dT%H%M%SZ"),
            i
        ));
        let completed = state.completed();
        if completed {
            std::fs::write(&archive, b"archive").unwrap();
        }
        cat.finish(
            id,
            *state,
            &Finish {
                archive: completed.then(|| archive.clone()),
                session_id: completed.then(|| format!("{i:032x}")),
                error: (!completed).then(|| "boom".to_string()),
                ..Finish::default()
            },
        )
        .unwrap();
        paths.push(archive);
    }
    paths
}

#[test]
fn prune_deletes_whole_archives_and_updates_the_catalog() {
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nretention = {{ keep_last = 2 }}\n"
    ));
    let paths = seed(
        &w,
        &dest,
        &[
            ("2024-03-01T02:00:00Z", SessionState::Succeeded),
            ("2024-03-02T02:00:00Z", SessionState::Warnings),
            ("2024-03-03T02:00:00Z", SessionState::Succeeded),
            ("2024-03-04T02:00:00Z", SessionState::Failed),
            ("2024-03-05T02:00:00Z", SessionState::Succeeded),
            ("2024-03-06T02:00:00Z", SessionState::Interrupted),
        ],
    );

    // Dry run: lists what would go and why, changes nothing.
    w.coffer()
        .args(["prune", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("job home: keep_last=2"))
        .stdout(
            predicate::str::contains("would delete")
                .and(predicate::str::contains("not kept by keep_last=2")),
        )
        .stdout(predicate::str::contains(
            "dry run: 2 archive(s) would be deleted",
        ));
    for p in [&paths[0], &paths[1], &paths[2], &paths[4]] {
        assert!(p.exists());
    }

    // Failed and interrupted sessions do not count: the two newest good ones stay.
    let out = w
        .coffer()
        .args(["prune", "home", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archives = doc["jobs"][0]["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 4);
    assert!(!paths[0].exists() && !paths[1].exists());
    assert!(paths[2].exists() && paths[4].exists());
    let rows = w.sessions("home");
    let deleted: Vec<i64> = rows
        .iter()
        .filter(|r| r.deleted_at_ms.is_some())
        .map(|r| r.id)
        .collect();
    assert_eq!(deleted, [2, 1]);
    assert!(
        rows.iter()
            .find(|r| r.id == 1)
            .unwrap()
            .deleted_reason
            .as_deref()
            .unwrap()
            .starts_with("retention: ")
    );
    // A second prune has nothing left to do.
    w.coffer()
        .args(["prune"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 archive(s) deleted"));
    // history marks deleted archives.
    w.coffer()
        .args(["history", "home"])
        .assert()
        .success()
        .stdout(predicate::str::contains("(deleted)"));
}

#[test]
fn archives_gone_from_disk_do_not_count_and_the_newest_good_one_stays() {
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nretention = {{ keep_monthly = 1 }}\n"
    ));
    let paths = seed(
        &w,
        &dest,
        &[
            ("2024-03-01T02:00:00Z", SessionState::Succeeded),
            ("2024-03-02T02:00:00Z", SessionState::Succeeded),
            ("2024-03-03T02:00:00Z", SessionState::Succeeded),
        ],
    );
    // Someone deleted the newest by hand: it does not count, and the newest remaining
    // good archive is kept.
    std::fs::remove_file(&paths[2]).unwrap();
    w.coffer().args(["prune"]).assert().success().stdout(
        predicate::str::contains("missing").and(predicate::str::contains("1 archive(s) deleted")),
    );
    assert!(!paths[0].exists() && paths[1].exists());
    let rows = w.sessions("home");
    assert_eq!(
        rows.iter()
            .find(|r| r.id == 3)
            .unwrap()
            .deleted_reason
            .as_deref(),
        Some("missing: the archive file was gone")
    );
}

#[test]
fn jobs_without_retention_keep_everything() {
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\n"
    ));
    let paths = seed(
        &w,
        &dest,
        &[
            ("2024-03-01T02:00:00Z", SessionState::Succeeded),
            ("2024-03-02T02:00:00Z", SessionState::Succeeded),
        ],
    );
    w.coffer()
        .args(["prune"])
        .assert()
        .success()
        .stdout("no job has a retention policy; nothing to prune\n");
    w.coffer()
        .args(["prune", "home"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "no retention policy; every archive is kept",
        ));
    assert!(paths.iter().all(|p| p.exists()));
}

/// An archive the destination holds as a symlink (someone with write access to the
/// folder swapped it) is removed as a link: what it points to, outside the destination,
/// is never deleted (docs/SECURITY.md, "Immutable targets").
#[test]
fn prune_never_follows_a_symlink_out_of_the_destination() {
    let w = World::new();
    let dest = w.mkdir("dest");
    let outside = w.mkdir("outside");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nretention = {{ keep_last = 1 }}\n"
    ));
    let paths = seed(
        &w,
        &dest,
        &[
            ("2024-03-01T02:00:00Z", SessionState::Succeeded),
            ("2024-03-02T02:00:00Z", SessionState::Succeeded),
        ],
    );
    let precious = outside.join("precious.coffer");
    std::fs::write(&precious, b"precious").unwrap();
    std::fs::remove_file(&paths[0]).unwrap();
    std::os::unix::fs::symlink(&precious, &paths[0]).unwrap();

    w.coffer().args(["prune", "home"]).assert().success();
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&paths[0]).is_err(),
        "the link itself is what the catalog recorded, and it goes"
    );
    assert!(paths[1].exists());
}
