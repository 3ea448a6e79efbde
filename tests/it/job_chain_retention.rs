//! Retention over incremental chains: a chain is pruned as a unit. The rules choose the
//! restore points to keep; an archive (full or incremental) is deleted only when no kept
//! point reads from it. A seeded random walk over schedules, chain shapes and GFS settings
//! checks the rule after every prune, and `coffer prune` is checked on a seeded catalog.

use crate::job_common::*;
use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use coffer::chain::ChainKind;
use coffer::job::catalog::{Finish, SessionState, Trigger};
use coffer::job::retention::{Candidate, ChainCandidate, Retention, decide, decide_chains};
use predicates::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// xorshift64*: a fixed seed gives the same walk on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// An archive still present: its time and the archives it reads from.
struct Archive {
    time: DateTime<Utc>,
    parents: Vec<i64>,
}

/// Check one prune's verdicts over `live`; returns the ids it deletes.
fn check_prune<Tz: TimeZone>(
    case: &str,
    policy: &Retention,
    live: &BTreeMap<i64, Archive>,
    tz: &Tz,
) -> BTreeSet<i64> {
    let points: Vec<ChainCandidate> = live
        .iter()
        .map(|(&id, a)| ChainCandidate {
            candidate: Candidate { id, time: a.time },
            parents: a.parents.clone(),
        })
        .collect();
    let verdicts = decide_chains(policy, &points, tz);
    assert_eq!(verdicts.len(), live.len(), "{case}");
    let kept: BTreeSet<i64> = verdicts.iter().filter(|v| v.keep).map(|v| v.id).collect();
    let deleted: BTreeSet<i64> = verdicts.iter().filter(|v| !v.keep).map(|v| v.id).collect();
    // The rules alone, without chains: the restore points kept.
    let cands: Vec<Candidate> = points.iter().map(|p| p.candidate).collect();
    let points_kept: BTreeSet<i64> = decide(policy, &cands, tz)
        .into_iter()
        .filter(|v| v.keep)
        .map(|v| v.id)
        .collect();
    let needed: BTreeSet<i64> = points_kept
        .iter()
        .flat_map(|id| live[id].parents.iter().copied())
        .collect();

    // The newest restore point is kept, and with it everything a next incremental may
    // reference.
    let newest = *live.keys().next_back().unwrap();
    assert!(points_kept.contains(&newest), "{case}: newest not kept");
    // Every kept restore point keeps all its parents; nothing needed is deleted.
    for id in &points_kept {
        for p in &live[id].parents {
            assert!(
                kept.contains(p),
                "{case}: {id} kept but its parent {p} is not"
            );
        }
    }
    assert!(
        deleted.is_disjoint(&needed),
        "{case}: a needed archive is deleted"
    );
    // And no more is kept than that: deleted = candidates - (kept points ∪ their parents).
    let expected: BTreeSet<i64> = live
        .keys()
        .copied()
        .filter(|id| !points_kept.contains(id) && !needed.contains(id))
        .collect();
    assert_eq!(deleted, expected, "{case}");
    // Each archive kept only as a parent names a kept point that reads from it.
    for v in verdicts
        .iter()
        .filter(|v| v.keep && !points_kept.contains(&v.id))
    {
        let by = v
            .needed_by
            .unwrap_or_else(|| panic!("{case}: {} kept without a reason", v.id));
        assert!(points_kept.contains(&by), "{case}");
        assert!(live[&by].parents.contains(&v.id), "{case}");
        assert!(
            v.reason
                .starts_with(&format!("parent of session {by} (kept: ")),
            "{case}: {}",
            v.reason
        );
    }
    deleted
}

#[test]
fn property_every_kept_point_keeps_its_parents_after_every_prune() {
    let mut rng = Rng(0x00c0_ffee_5eed_0016);
    for case_no in 0..400 {
        let policy = Retention {
            keep_last: rng.below(4) as u32,
            keep_daily: rng.below(5) as u32,
            keep_weekly: rng.below(4) as u32,
            keep_monthly: rng.below(3) as u32,
        };
        let full_every = 1 + rng.below(8);
        let sessions = 1 + rng.below(80);
        let prune_every = 1 + rng.below(4);
        let tz = FixedOffset::east_opt(3600 * (rng.below(25) as i32 - 12)).unwrap();
        let case = format!("case {case_no}: {policy}, full_every={full_every}");

        let mut live: BTreeMap<i64, Archive> = BTreeMap::new();
        let mut time = Utc.with_ymd_and_hms(2024, 1, 1, 2, 0, 0).unwrap();
        let mut chain_len = 0;
        for id in 1..=sessions as i64 {
            // Hours to days apart, sometimes several a day.
            time += Duration::minutes(30 + rng.below(3 * 24 * 60) as i64);
            // The writer's rule (FORMAT.md v2.8.4): an incremental may reference only the
            // newest archive and its parent table, so those must still be there.
            let newest = live
                .iter()
                .next_back()
                .map(|(id, a)| (*id, a.parents.clone()));
            let full = chain_len >= full_every || newest.is_none() || rng.chance(10);
            let parents = match (&newest, full) {
                (Some((n, n_parents)), false) => {
                    let mut pool = n_parents.clone();
                    pool.push(*n);
                    let mut chosen: Vec<i64> =
                        pool.into_iter().filter(|_| !rng.chance(3)).collect();
                    chosen.sort_unstable();
                    for p in &chosen {
                        assert!(live.contains_key(p), "{case}: referenced {p} was deleted");
                    }
                    chosen
                }
                _ => Vec::new(),
            };
            chain_len = if full { 1 } else { chain_len + 1 };
            live.insert(id, Archive { time, parents });
            if (id as u64).is_multiple_of(prune_every) {
                for gone in check_prune(&case, &policy, &live, &tz) {
                    live.remove(&gone);
                }
            }
        }
        // Whatever was deleted along the way, the points kept now are whole.
        check_prune(&case, &policy, &live, &tz);
    }
}

#[test]
fn a_whole_old_chain_goes_once_no_kept_point_needs_it() {
    let t = |d: u32| Utc.with_ymd_and_hms(2024, 3, d, 2, 0, 0).unwrap();
    // Chain A: 1 (full), 2 and 3 reading from 1. Chain B: 4 (full), 5 reading from 4.
    let points = [
        (1, vec![]),
        (2, vec![1]),
        (3, vec![1, 2]),
        (4, vec![]),
        (5, vec![4]),
    ]
    .map(|(id, parents)| ChainCandidate {
        candidate: Candidate {
            id,
            time: t(id as u32),
        },
        parents,
    });
    let keep = |policy: Retention| -> Vec<(i64, String)> {
        decide_chains(&policy, &points, &Utc)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| (v.id, v.reason))
            .collect()
    };
    let last = |n| Retention {
        keep_last: n,
        ..Default::default()
    };
    assert_eq!(
        keep(last(1)),
        [
            (5, "last #1".into()),
            (4, "parent of session 5 (kept: last #1)".into())
        ]
    );
    // Keeping incremental 3 keeps its whole table (1 and 2); 2 is not kept for itself.
    assert_eq!(
        keep(last(3)),
        [
            (5, "last #1".into()),
            (4, "last #2".into()),
            (3, "last #3".into()),
            (2, "parent of session 3 (kept: last #3)".into()),
            (1, "parent of session 3 (kept: last #3)".into()),
        ]
    );
}

/// Record completed sessions of `home` (oldest first): (day of March 2024, kind, indexes
/// of the parents among the earlier rows). Returns the archive paths.
fn seed_chain(w: &World, dest: &Path, rows: &[(u32, ChainKind, &[usize])]) -> Vec<PathBuf> {
    let cat = w.catalog();
    let mut paths = Vec::new();
    let sid = |i: usize| format!("{:08x}{}", 0xa0a1_a2a0 + i, "00".repeat(12));
    for (i, (day, kind, parents)) in rows.iter().enumerate() {
        let t = Utc.with_ymd_and_hms(2024, 3, *day, 2, 0, 0).unwrap();
        let id = cat
            .begin("home", Trigger::Schedule, dest, t.timestamp_millis())
            .unwrap();
        let archive = dest.join(format!(
            "home-{}-{}.coffer",
            t.format("%Y%m%dT%H%M%SZ"),
            &sid(i)[..8]
        ));
        std::fs::write(&archive, b"archive").unwrap();
        cat.finish(
            id,
            SessionState::Succeeded,
            &Finish {
                archive: Some(archive.clone()),
                session_id: Some(sid(i)),
                kind: Some(*kind),
                parents: parents.iter().map(|&p| sid(p)).collect(),
                ..Finish::default()
            },
        )
        .unwrap();
        paths.push(archive);
    }
    paths
}

#[test]
fn prune_keeps_the_parents_of_kept_points_and_says_why() {
    use ChainKind::{Full, Incremental};
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nfull_every = 3\nretention = {{ keep_last = 2 }}\n"
    ));
    let paths = seed_chain(
        &w,
        &dest,
        &[
            (1, Full, &[]),
            (2, Incremental, &[0]),
            (3, Incremental, &[0, 1]),
            (4, Full, &[]),
            (5, Incremental, &[3]),
            (6, Incremental, &[3]),
        ],
    );
    // keep_last = 2 keeps sessions 6 and 5; both read from the full, session 4. The first
    // chain (1-3) is needed by no kept point.
    w.coffer()
        .args(["prune", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "parent of session 6 (kept: last #1)",
        ))
        .stdout(predicate::str::contains(
            "incr  home-20240306T020000Z-a0a1a2a5.coffer  last #1",
        ))
        .stdout(predicate::str::contains(
            "dry run: 3 archive(s) would be deleted",
        ));
    assert!(paths.iter().all(|p| p.exists()));

    let out = w
        .coffer()
        .args(["prune", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archives = doc["jobs"][0]["archives"].as_array().unwrap();
    let four = archives.iter().find(|a| a["id"] == 4).unwrap();
    assert_eq!(four["keep"], true);
    assert_eq!(four["needed_by"], 6);
    assert_eq!(four["kind"], "full");
    let six = archives.iter().find(|a| a["id"] == 6).unwrap();
    assert_eq!(six["kind"], "incremental");
    assert_eq!(six["parents"].as_array().unwrap().len(), 1);
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(p.exists(), i >= 3, "archive {}", i + 1);
    }
}

#[test]
fn a_kept_point_whose_parent_is_gone_is_reported_and_nothing_is_deleted_for_it() {
    use ChainKind::{Full, Incremental};
    let w = World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [\"/tmp\"]\ndestination = {dest:?}\nfull_every = 3\nretention = {{ keep_last = 1 }}\n"
    ));
    let paths = seed_chain(&w, &dest, &[(1, Full, &[]), (2, Incremental, &[0])]);
    std::fs::remove_file(&paths[0]).unwrap();
    w.coffer()
        .args(["prune"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "warning: session 2 reads from archive a0a1a2a0000000000000000000000000 which is gone",
        ))
        .stdout(predicate::str::contains("0 archive(s) deleted"));
    assert!(paths[1].exists());
}
