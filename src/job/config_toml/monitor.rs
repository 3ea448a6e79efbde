//! The monitoring keys of the job file: `notify` and `verify_schedule`/`verify_max_rate`/
//! `verify_identity` (in a job or `[defaults]`) and the top-level `metrics_textfile`. Kept out of
//! `config_toml.rs`, which holds the backup keys.

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, RawDefaults, RawJob, check_schedule};
use crate::job::config::{Located, Monitoring};
use crate::job::notify::{Endpoint, Notify};

/// `notify = { start = URL, success = URL, failure = URL }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    start: Option<Spanned<String>>,
    success: Option<Spanned<String>>,
    failure: Option<Spanned<String>>,
}

fn check_notify(cx: &mut Ctx<'_>, raw: &RawNotify, section: &Option<String>) -> Notify {
    let mut url = |s: &Option<Spanned<String>>| {
        let s = s.as_ref()?;
        match Endpoint::parse(s.get_ref()) {
            Ok(e) => Some(e),
            Err(msg) => {
                cx.err(
                    s.span().start,
                    section.clone(),
                    "notify",
                    msg,
                    Some("write a full URL, e.g. \"https://hc-ping.com/<uuid>/start\""),
                );
                None
            }
        }
    };
    Notify {
        start: url(&raw.start),
        success: url(&raw.success),
        failure: url(&raw.failure),
    }
}

fn check_rate(cx: &mut Ctx<'_>, rate: &Spanned<u64>, section: &Option<String>) -> Option<u64> {
    if *rate.get_ref() == 0 {
        cx.err(
            rate.span().start,
            section.clone(),
            "verify_max_rate",
            "verify_max_rate = 0 would never read anything",
            Some(
                "give bytes per second, e.g. 20000000 for 20 MB/s, or remove the key for no limit",
            ),
        );
        return None;
    }
    Some(*rate.get_ref())
}

/// `verify_identity`: a local key file (loaded when the job is resolved).
fn check_identity(
    cx: &mut Ctx<'_>,
    raw: &Spanned<String>,
    section: &Option<String>,
) -> Option<Located<std::path::PathBuf>> {
    if raw.get_ref().is_empty() || raw.get_ref().starts_with("s3://") {
        cx.err(
            raw.span().start,
            section.clone(),
            "verify_identity",
            "verify_identity must be a local key file",
            Some("the private key file `coffer restore -i` takes, e.g. \"/etc/coffer/verify.key\""),
        );
        return None;
    }
    Some(cx.located_path(raw))
}

/// The monitoring keys of `[defaults]`.
pub(super) fn defaults(cx: &mut Ctx<'_>, raw: &RawDefaults) -> Monitoring {
    let section = Some("[defaults]".to_string());
    Monitoring {
        notify: raw
            .notify
            .as_ref()
            .map(|n| check_notify(cx, n, &section))
            .unwrap_or_default(),
        verify_schedule: raw
            .verify_schedule
            .as_ref()
            .and_then(|s| check_schedule(cx, s, &section, "verify_schedule")),
        verify_max_rate: raw
            .verify_max_rate
            .as_ref()
            .and_then(|r| check_rate(cx, r, &section)),
        verify_identity: raw
            .verify_identity
            .as_ref()
            .and_then(|k| check_identity(cx, k, &section)),
    }
}

/// A job's monitoring keys; each key the job does not set comes from `[defaults]` (a job's
/// `notify` table replaces the default table as a whole, like `recipients`).
pub(super) fn job(
    cx: &mut Ctx<'_>,
    defaults: &Monitoring,
    raw: &RawJob,
    section: &Option<String>,
) -> Monitoring {
    Monitoring {
        notify: match &raw.notify {
            Some(n) => check_notify(cx, n, section),
            None => defaults.notify.clone(),
        },
        verify_schedule: match &raw.verify_schedule {
            Some(s) => check_schedule(cx, s, section, "verify_schedule"),
            None => defaults.verify_schedule.clone(),
        },
        verify_max_rate: match &raw.verify_max_rate {
            Some(r) => check_rate(cx, r, section),
            None => defaults.verify_max_rate,
        },
        verify_identity: match &raw.verify_identity {
            Some(k) => check_identity(cx, k, section),
            None => defaults.verify_identity.clone(),
        },
    }
}

/// The top-level `metrics_textfile`: where the daemon writes the metrics after each
/// session (node_exporter's textfile collector reads `*.prom`).
pub(super) fn metrics_textfile(
    cx: &mut Ctx<'_>,
    raw: Option<&Spanned<String>>,
) -> Option<Located<std::path::PathBuf>> {
    let raw = raw?;
    let path = cx.located_path(raw);
    if raw.get_ref().is_empty() || raw.get_ref().starts_with("s3://") {
        cx.err(
            raw.span().start,
            None,
            "metrics_textfile",
            "metrics_textfile must be a local file path",
            Some("e.g. \"/var/lib/node_exporter/textfile/coffer.prom\""),
        );
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{JOB, parse};

    #[test]
    fn monitoring_keys_come_from_the_job_or_the_defaults() {
        let f = parse(&format!(
            "metrics_textfile = \"m/coffer.prom\"\n[defaults]\nnotify = {{ failure = \"http://ntfy.lan/backups\" }}\nverify_schedule = \"0 4 * * 0\"\n{JOB}verify_max_rate = 1000\n[job.etc]\nsources = [\"/etc\"]\ndestination = \"/c\"\nrecipients = [\"/k.pub\"]\nnotify = {{ start = \"http://hc.lan/x/start\", success = \"http://hc.lan/x\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            f.metrics_textfile.as_deref(),
            Some(Path::new("/etc/coffer/m/coffer.prom"))
        );
        let etc = &f.jobs[0].monitoring;
        let home = &f.jobs[1].monitoring;
        assert_eq!(
            home.notify.failure.as_ref().unwrap().url(),
            "http://ntfy.lan/backups"
        );
        assert!(home.notify.start.is_none());
        assert_eq!(home.verify_max_rate, Some(1000));
        assert_eq!(
            home.verify_schedule.as_ref().unwrap().value.expr(),
            "0 4 * * 0"
        );
        // The job's own table replaces the default one.
        assert!(etc.notify.failure.is_none() && etc.notify.start.is_some());
        assert!(etc.verify_max_rate.is_none());
        assert!(home.verify_identity.is_none());
    }

    #[test]
    fn verify_identity_comes_from_the_job_or_the_defaults() {
        let f = parse(&format!(
            "[defaults]\nverify_identity = \"keys/verify.key\"\n{JOB}[job.etc]\nsources = [\"/etc\"]\ndestination = \"/c\"\nrecipients = [\"/k.pub\"]\nverify_identity = \"/k/etc.key\"\n"
        ))
        .unwrap();
        let key = |i: usize| f.jobs[i].monitoring.verify_identity.clone().unwrap();
        assert_eq!(
            (key(0).value, key(0).line),
            (std::path::PathBuf::from("/k/etc.key"), 11)
        );
        assert_eq!(key(1).value, Path::new("/etc/coffer/keys/verify.key"));
        let err = parse(&format!("{JOB}verify_identity = \"s3://b/k\"\n")).unwrap_err();
        assert!(
            err.contains("jobs.toml:5: job \"home\": key \"verify_identity\": verify_identity must be a local key file"),
            "{err}"
        );
    }

    #[test]
    fn bad_monitoring_keys_name_their_line_and_key() {
        let err = parse(&format!(
            "{JOB}notify = {{ start = \"ftp://x\", finish = \"http://x\" }}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("jobs.toml:5") && err.contains("finish"),
            "{err}"
        );
        let err = parse(&format!(
            "{JOB}notify = {{ start = \"ftp://x\" }}\nverify_schedule = \"61 * * * *\"\nverify_max_rate = 0\n"
        ))
        .unwrap_err();
        for want in [
            "jobs.toml:5: job \"home\": key \"notify\": \"ftp://x\": not an http:// or https:// URL",
            "jobs.toml:6: job \"home\": key \"verify_schedule\": bad cron expression",
            "jobs.toml:7: job \"home\": key \"verify_max_rate\": verify_max_rate = 0",
        ] {
            assert!(err.contains(want), "{want}\n in: {err}");
        }
    }
}
