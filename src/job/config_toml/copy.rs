//! The copy keys of the job file (issue 18, backup copy jobs): `copy_to` (a job's own
//! list of targets), `copy_retention` and `copy_schedule` (in a job or `[defaults]`). Kept
//! out of `config_toml.rs`, which holds the backup keys. Only what needs no file system is
//! checked here: a target that is down at parse time must not stop the job (it makes a
//! session `warnings` when the copies run, see [`crate::job::copies`]).

use std::path::PathBuf;
use toml::Spanned;

use super::retention::{RawRetention, retention_of};
use super::{Ctx, SpannedList, check_schedule};
use crate::job::config::{Job, Located};
use crate::job::copies::CopyPolicy;
use crate::job::error::ConfigError;
use crate::job::retention::Retention;
use crate::storage::Location;

/// The three raw keys of one table (`copy_to` only in a job).
pub(super) struct RawCopy<'a> {
    pub(super) copy_to: Option<&'a SpannedList>,
    pub(super) copy_retention: Option<&'a Spanned<RawRetention>>,
    pub(super) copy_schedule: Option<&'a Spanned<String>>,
}

fn check_retention(
    cx: &mut Ctx<'_>,
    r: &Spanned<RawRetention>,
    section: &Option<String>,
) -> Option<Retention> {
    retention_of(cx, r, section, "copy_retention", "every copy")
}

/// `copy_retention` and `copy_schedule` of `[defaults]` (they apply to the jobs that have
/// a `copy_to`; `copy_to` itself is per job: two jobs copying into one folder would mix
/// their archives, as two jobs sharing a destination would).
pub(super) fn defaults(cx: &mut Ctx<'_>, raw: &RawCopy<'_>) -> CopyPolicy {
    let section = Some("[defaults]".to_string());
    CopyPolicy {
        targets: Vec::new(),
        retention: raw
            .copy_retention
            .and_then(|r| check_retention(cx, r, &section)),
        schedule: raw
            .copy_schedule
            .and_then(|s| check_schedule(cx, s, &section, "copy_schedule")),
    }
}

/// A job's copy keys; `copy_retention` and `copy_schedule` it does not set come from
/// `[defaults]`. `destination` is the job's own (a target equal to it is an error).
pub(super) fn job(
    cx: &mut Ctx<'_>,
    defaults: &CopyPolicy,
    raw: &RawCopy<'_>,
    destination: &Located<PathBuf>,
    section: &Option<String>,
) -> CopyPolicy {
    let mut targets: Vec<Located<PathBuf>> = Vec::new();
    if let Some(list) = raw.copy_to {
        for s in list.get_ref() {
            if let Some(t) = check_target(cx, s, destination, &targets, section) {
                targets.push(t);
            }
        }
    }
    let retention = raw
        .copy_retention
        .and_then(|r| check_retention(cx, r, section));
    let schedule = raw
        .copy_schedule
        .and_then(|s| check_schedule(cx, s, section, "copy_schedule"));
    // A job's own copy_retention or copy_schedule without a target is a mistake (a
    // forgotten copy_to); the defaults' are simply unused by a job without copies.
    if raw.copy_to.is_none() {
        let own = [
            ("copy_retention", raw.copy_retention.map(|r| r.span().start)),
            ("copy_schedule", raw.copy_schedule.map(|s| s.span().start)),
        ];
        for (key, at) in own {
            if let Some(at) = at {
                cx.err(
                    at,
                    section.clone(),
                    key,
                    format!("{key} without copy_to: the job copies nowhere"),
                    Some("add copy_to = [\"/mnt/usb/<job>\"] (folders or s3:// prefixes), or remove the key"),
                );
            }
        }
    }
    CopyPolicy {
        targets,
        retention: retention.or(defaults.retention),
        schedule: schedule.or_else(|| defaults.schedule.clone()),
    }
}

/// One `copy_to` entry: a folder (relative to the job file's folder) or an S3 prefix, as
/// `coffer copy --to` takes it; not empty, not the job's destination, not listed twice.
fn check_target(
    cx: &mut Ctx<'_>,
    s: &Spanned<String>,
    destination: &Located<PathBuf>,
    earlier: &[Located<PathBuf>],
    section: &Option<String>,
) -> Option<Located<PathBuf>> {
    let at = s.span().start;
    let bad = |cx: &mut Ctx<'_>, msg: String, hint: Option<&str>| {
        cx.err(at, section.clone(), "copy_to", msg, hint);
        None
    };
    if s.get_ref().is_empty() {
        return bad(cx, "empty path".into(), None);
    }
    let target = cx.located_path(s);
    if let Err(e) = Location::parse(&target.value) {
        let msg = match e {
            crate::Error::InvalidOption(m) => m,
            other => other.to_string(),
        };
        return bad(cx, msg, Some("write a folder or s3://bucket/prefix"));
    }
    let same = |a: &PathBuf, b: &PathBuf| {
        a.to_string_lossy().trim_end_matches('/') == b.to_string_lossy().trim_end_matches('/')
    };
    if same(&target.value, &destination.value) {
        return bad(
            cx,
            format!(
                "{} is the job's own destination: a copy must be somewhere else",
                target.value.display()
            ),
            Some("copy to another disk or an s3:// prefix"),
        );
    }
    if let Some(first) = earlier.iter().find(|e| same(&e.value, &target.value)) {
        return bad(
            cx,
            format!(
                "{} is listed twice (first on line {})",
                target.value.display(),
                first.line
            ),
            None,
        );
    }
    Some(target)
}

/// A copy target must hold one job's archives only: one that is another job's destination
/// or copy target would mix them (and that job's retention would delete this one's
/// copies). Reported at the later line, naming the earlier job.
pub(super) fn check_shared_targets(cx: &mut Ctx<'_>, jobs: &[Job]) {
    let norm = |p: &PathBuf| p.to_string_lossy().trim_end_matches('/').to_string();
    for j in jobs {
        for t in &j.copies.targets {
            let clash = jobs.iter().find_map(|o| {
                if o.name == j.name {
                    return None;
                }
                if norm(&o.destination.value) == norm(&t.value) {
                    return Some((o, o.destination.line, "destination"));
                }
                o.copies
                    .targets
                    .iter()
                    .find(|ot| norm(&ot.value) == norm(&t.value) && ot.line < t.line)
                    .map(|ot| (o, ot.line, "copy target"))
            });
            if let Some((other, line, what)) = clash {
                cx.errors.push(ConfigError {
                    file: cx.file.to_path_buf(),
                    line: Some(t.line),
                    section: crate::job::config::job_section(&j.name),
                    key: Some("copy_to".into()),
                    message: format!(
                        "{} is also the {what} of job {:?} (line {line}); a copy target holds one job's archives",
                        t.value.display(),
                        other.name
                    ),
                    hint: Some("give each job its own copy folder, e.g. /mnt/usb/<job>".into()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{JOB, parse};

    #[test]
    fn copy_keys_come_from_the_job_or_the_defaults() {
        let f = parse(&format!(
            "[defaults]\ncopy_retention = {{ keep_daily = 30 }}\ncopy_schedule = \"0 5 * * *\"\n{JOB}copy_to = [\"s3://offsite/home\", \"usb/home\"]\n[job.etc]\nsources = [\"/etc\"]\ndestination = \"/c\"\nrecipients = [\"/k.pub\"]\ncopy_to = [\"/mnt/etc/\"]\ncopy_retention = {{ keep_last = 3 }}\n[job.var]\nsources = [\"/var\"]\ndestination = \"/v\"\nrecipients = [\"/k.pub\"]\n"
        ))
        .unwrap();
        let (etc, home, var) = (&f.jobs[0].copies, &f.jobs[1].copies, &f.jobs[2].copies);
        let targets: Vec<&Path> = home.targets.iter().map(|t| t.value.as_path()).collect();
        assert_eq!(
            targets,
            [
                Path::new("s3://offsite/home"),
                Path::new("/etc/coffer/usb/home")
            ]
        );
        assert_eq!(home.targets[0].line, 8);
        assert_eq!(home.retention.unwrap().keep_daily, 30);
        assert_eq!(home.schedule.as_ref().unwrap().value.expr(), "0 5 * * *");
        assert_eq!(etc.retention.unwrap().keep_last, 3);
        assert!(!etc.after_sessions() && !home.after_sessions());
        // The defaults alone copy nothing.
        assert!(var.targets.is_empty() && !var.after_sessions());
    }

    #[test]
    fn bad_copy_keys_name_their_line_and_key() {
        let err = parse(&format!(
            "{JOB}copy_to = [\"\", \"/b\", \"s3://Bad_Bucket/x\", \"/u\", \"/u/\"]\ncopy_schedule = \"every night\"\ncopy_retention = {{ keep_last = 0 }}\n[job.etc]\nsources = [\"/etc\"]\ndestination = \"/c\"\nrecipients = [\"/k.pub\"]\ncopy_schedule = \"0 5 * * *\"\n[job.var]\nsources = [\"/var\"]\ndestination = \"/u\"\nrecipients = [\"/k.pub\"]\n"
        ))
        .unwrap_err();
        for want in [
            "jobs.toml:5: job \"home\": key \"copy_to\": empty path",
            "jobs.toml:5: job \"home\": key \"copy_to\": /b is the job's own destination",
            "jobs.toml:5: job \"home\": key \"copy_to\": s3://Bad_Bucket/x: not a valid S3 location",
            "jobs.toml:5: job \"home\": key \"copy_to\": /u is listed twice (first on line 5)",
            "jobs.toml:5: job \"home\": key \"copy_to\": /u is also the destination of job \"var\"",
            "jobs.toml:6: job \"home\": key \"copy_schedule\": bad cron expression",
            "jobs.toml:7: job \"home\": key \"copy_retention\": copy_retention keeps nothing",
            "jobs.toml:12: job \"etc\": key \"copy_schedule\": copy_schedule without copy_to",
        ] {
            assert!(err.contains(want), "{want}\n in: {err}");
        }
    }
}
