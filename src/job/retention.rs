//! Which archives to keep: keep-last, then one per day, week and month, like `borg prune`.
//!
//! Rules are applied in order — last, daily, weekly, monthly — to the job's *good* archives
//! (sessions that succeeded or finished with warnings, whose archive still exists), newest
//! first. A period rule keeps the newest archive of each period (local calendar day, ISO
//! week, month) until it has kept its count; an archive kept by an earlier rule does not
//! count again, and if a rule runs out of archives before reaching its count it also keeps
//! the oldest archive (as borg does), so a young backup set is not thinned too early. The
//! newest good archive is always kept, whatever the rules say. Everything not kept is
//! deleted.
//!
//! **Chains** ([`decide_chains`]): an incremental archive holds only what changed; the rest
//! of its restore point is in its parents (FORMAT.md v2.8.1, a flat table naming every
//! archive it reads from). So a chain is pruned as a unit, as Veeam does: the rules above
//! choose the restore points to keep, and an archive — full or incremental — is deleted
//! only when no kept restore point needs it. A kept point needs itself and every archive
//! of its parent table; the table is flat, so nothing further (a parent's own parents) is
//! needed. The newest point is always kept, and with it everything a next incremental may
//! reference (v2.8.4: the newest archive and its parent table).

use chrono::{DateTime, Datelike, TimeZone, Utc};
use std::collections::HashMap;

/// How many archives to keep per rule. Zero turns a rule off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl Retention {
    /// True if no rule keeps anything.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (name, n) in [
            ("last", self.keep_last),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
        ] {
            if n > 0 {
                parts.push(format!("keep_{name}={n}"));
            }
        }
        if parts.is_empty() {
            f.write_str("keep nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One archive to decide about: an identifier of the caller's and its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    pub time: DateTime<Utc>,
}

/// The decision for one archive, with the reason a person reads in `prune --dry-run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// e.g. `last #1`, `daily #3`, `monthly #2 (oldest)`, `newest good archive`,
    /// `parent of session 12 (kept: daily #1)`, or for a deletion `not kept by keep_last=7,
    /// keep_daily=14`.
    pub reason: String,
    /// Kept only because this kept restore point (the newest that needs it) reads from it:
    /// not a restore point of its own any more ([`decide_chains`]).
    pub needed_by: Option<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Daily,
    Weekly,
    Monthly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
        }
    }

    /// The period an archive falls in, in the given time zone (None: every archive is its
    /// own period, for keep-last).
    fn period<Tz: TimeZone>(self, t: &DateTime<Utc>, tz: &Tz) -> Option<(i32, u32)> {
        let local = t.with_timezone(tz);
        match self {
            Rule::Last => None,
            Rule::Daily => Some((local.year(), local.ordinal())),
            Rule::Weekly => {
                let w = local.iso_week();
                Some((w.year(), w.week()))
            }
            Rule::Monthly => Some((local.year(), local.month())),
        }
    }
}

/// Decide about every candidate; periods are calendar periods in `tz` (the local time zone
/// in production). The result is sorted newest first. Candidates with equal times are
/// ordered by id (higher id = newer).
pub fn decide<Tz: TimeZone>(policy: &Retention, candidates: &[Candidate], tz: &Tz) -> Vec<Verdict> {
    let mut sorted: Vec<Candidate> = candidates.to_vec();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut reasons: Vec<Option<String>> = vec![None; sorted.len()];

    for (rule, count) in [
        (Rule::Last, policy.keep_last),
        (Rule::Daily, policy.keep_daily),
        (Rule::Weekly, policy.keep_weekly),
        (Rule::Monthly, policy.keep_monthly),
    ] {
        if count == 0 {
            continue;
        }
        let mut kept = 0u32;
        let mut last_period: Option<Option<(i32, u32)>> = None;
        for (i, c) in sorted.iter().enumerate() {
            let period = rule.period(&c.time, tz);
            let new_period = rule == Rule::Last || last_period != Some(period);
            if !new_period {
                continue;
            }
            last_period = Some(period);
            if reasons[i].is_none() {
                kept += 1;
                reasons[i] = Some(format!("{} #{kept}", rule.name()));
                if kept == count {
                    break;
                }
            }
        }
        // Not enough periods yet: the oldest archive is kept too (borg's behaviour).
        if kept < count
            && let Some(i) = sorted.len().checked_sub(1)
            && reasons[i].is_none()
        {
            kept += 1;
            reasons[i] = Some(format!("{} #{kept} (oldest)", rule.name()));
        }
    }
    if let Some(first) = reasons.first_mut()
        && first.is_none()
    {
        *first = Some("newest good archive".into());
    }
    sorted
        .iter()
        .zip(reasons)
        .map(|(c, reason)| Verdict {
            id: c.id,
            time: c.time,
            keep: reason.is_some(),
            reason: reason.unwrap_or_else(|| format!("not kept by {policy}")),
            needed_by: None,
        })
        .collect()
}

/// A restore point for [`decide_chains`]: the archive, and the archives its restore reads
/// from (its parent table), by candidate id. A parent that is not a candidate (deleted or
/// gone already) cannot be kept and is ignored here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCandidate {
    pub candidate: Candidate,
    pub parents: Vec<i64>,
}

/// [`decide`] over restore points, then the chain rule (see the module docs): every
/// archive a kept point reads from is kept too, its reason naming the newest kept point
/// that needs it (`parent of session 12 (kept: daily #1)`). So the archives deleted are the
/// candidates minus the kept points and their parents. Newest first, as [`decide`].
pub fn decide_chains<Tz: TimeZone>(
    policy: &Retention,
    points: &[ChainCandidate],
    tz: &Tz,
) -> Vec<Verdict> {
    let candidates: Vec<Candidate> = points.iter().map(|p| p.candidate).collect();
    let mut verdicts = decide(policy, &candidates, tz);
    let index: HashMap<i64, usize> = verdicts
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id, i))
        .collect();
    let parents: HashMap<i64, &[i64]> = points
        .iter()
        .map(|p| (p.candidate.id, p.parents.as_slice()))
        .collect();
    // The restore points the rules keep, newest first: only they extend the kept set (an
    // archive kept as a parent is not restorable through its own parents any more).
    let kept: Vec<(i64, String)> = verdicts
        .iter()
        .filter(|v| v.keep)
        .map(|v| (v.id, v.reason.clone()))
        .collect();
    for (point, reason) in kept {
        for parent in parents.get(&point).copied().unwrap_or_default() {
            let Some(&i) = index.get(parent) else {
                continue;
            };
            let v = &mut verdicts[i];
            if !v.keep {
                v.keep = true;
                v.reason = format!("parent of session {point} (kept: {reason})");
                v.needed_by = Some(point);
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn kept(policy: Retention, times: &[&str]) -> Vec<String> {
        let cands: Vec<Candidate> = times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: i as i64,
                time: at(t),
            })
            .collect();
        decide(&policy, &cands, &Utc)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| v.time.format("%Y-%m-%dT%H:%M").to_string())
            .collect()
    }

    #[test]
    fn keep_nothing_still_keeps_the_newest() {
        let v = kept(
            Retention::default(),
            &["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"],
        );
        assert_eq!(v, ["2024-01-02T00:00"]);
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let p = Retention {
            keep_last: 3,
            ..Default::default()
        };
        assert!(decide(&p, &[], &Utc).is_empty());
    }

    fn point(id: i64, t: &str, parents: &[i64]) -> ChainCandidate {
        ChainCandidate {
            candidate: Candidate { id, time: at(t) },
            parents: parents.to_vec(),
        }
    }

    #[test]
    fn a_kept_incremental_keeps_its_parents_and_nothing_more() {
        // Chain 1: full 1, incrementals 2 and 3 (3 reads from 1 only). Chain 2: full 4,
        // incremental 5 reading from 4.
        let points = [
            point(1, "2024-03-01T02:00:00Z", &[]),
            point(2, "2024-03-02T02:00:00Z", &[1]),
            point(3, "2024-03-03T02:00:00Z", &[1]),
            point(4, "2024-03-04T02:00:00Z", &[]),
            point(5, "2024-03-05T02:00:00Z", &[4]),
        ];
        let p = Retention {
            keep_last: 1,
            ..Default::default()
        };
        let v = decide_chains(&p, &points, &Utc);
        let keep: Vec<(i64, &str)> = v
            .iter()
            .filter(|v| v.keep)
            .map(|v| (v.id, v.reason.as_str()))
            .collect();
        assert_eq!(
            keep,
            [(5, "last #1"), (4, "parent of session 5 (kept: last #1)")]
        );
        assert_eq!(v[1].needed_by, Some(5));
        // Keeping point 3 keeps the full 1 but not incremental 2, which 3 does not read.
        let p = Retention {
            keep_daily: 3,
            ..Default::default()
        };
        let v = decide_chains(&p, &points, &Utc);
        let kept: Vec<i64> = v.iter().filter(|v| v.keep).map(|v| v.id).collect();
        assert_eq!(kept, [5, 4, 3, 1]);
        let one = v.iter().find(|v| v.id == 1).unwrap();
        assert_eq!(one.reason, "parent of session 3 (kept: daily #3)");
    }

    #[test]
    fn daily_buckets_split_at_local_midnight() {
        // 23:30 UTC and 00:30 UTC are the same local day at UTC+2 but not in UTC.
        let cands = [
            Candidate {
                id: 1,
                time: at("2024-03-01T23:30:00Z"),
            },
            Candidate {
                id: 2,
                time: at("2024-03-02T00:30:00Z"),
            },
        ];
        let p = Retention {
            keep_daily: 1,
            ..Default::default()
        };
        let utc = decide(&p, &cands, &Utc);
        assert!(utc[0].keep && utc[0].reason == "daily #1");
        // The oldest-rule: only one day was needed and found, so id 1 goes in UTC.
        assert!(!utc[1].keep);
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let local = decide(
            &Retention {
                keep_daily: 2,
                ..Default::default()
            },
            &cands,
            &plus2,
        );
        // Both fall on 2024-03-02 local: one day only, the newest is daily #1, the other
        // is kept as the oldest because the rule wanted two days.
        assert_eq!(local[0].reason, "daily #1");
        assert_eq!(local[1].reason, "daily #2 (oldest)");
    }
}
