//! Prometheus metrics of the jobs, in the text exposition format (version 0.0.4), for
//! `coffer metrics` and node_exporter's textfile collector.
//!
//! Every metric is a gauge labelled `job`, taken from [`super::status`]: the last success,
//! the last finished session (duration, bytes written, warnings), the restore points kept,
//! the last verify and a hash of the recipients. A metric with nothing to say for a job
//! (no verify yet, a recipient key that cannot be read) is left out for that job rather
//! than given a made-up value — except the last success, which is 0 for a job that never
//! succeeded, so that the usual alert (`time() - coffer_last_success_timestamp_seconds >
//! 2 * 86400`) fires for it too.
//!
//! [`write_textfile`] replaces the file atomically (temp file, fsync, rename), so the
//! collector never reads half a file.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::catalog::Catalog;
use super::config::Job;
use super::error::{JobError, JobResult};
use super::status::{JobStatus, status_of};
use crate::recipient::{Fingerprint, Recipient, RsaRecipient};

/// One job's metrics: its status and the hash of its recipients.
#[derive(Clone, Debug)]
pub struct JobMetrics {
    pub status: JobStatus,
    /// [`recipients_hash`] of the job's recipients; None when a key could not be read.
    pub recipients_hash: Option<u64>,
}

/// A stable hash of a recipient set: SHA-256 over the sorted fingerprints, its first 48
/// bits. 48 bits so the gauge's float64 holds it exactly; it only has to change when the
/// set changes (an alert on `changes(coffer_recipients_hash[1d]) > 0`), not resist forgery.
pub fn recipients_hash(fingerprints: &[Fingerprint]) -> u64 {
    let mut sorted: Vec<[u8; 32]> = fingerprints.iter().map(|f| f.0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    for f in &sorted {
        h.update(f);
    }
    let d = h.finalize();
    d[..6]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// [`recipients_hash`] of `job`'s recipients as its key files hold them now; None if one
/// cannot be read (the job's sessions would fail too, which `status` reports).
pub fn job_recipients_hash(job: &Job) -> Option<u64> {
    let fps: Option<Vec<Fingerprint>> = job
        .recipients
        .iter()
        .map(|r| RsaRecipient::load(&r.value).ok().map(|k| k.fingerprint()))
        .collect();
    fps.map(|f| recipients_hash(&f))
}

/// The metrics of `jobs` from the catalog, now.
pub fn collect(catalog: &Catalog, jobs: &[Job]) -> JobResult<Vec<JobMetrics>> {
    jobs.iter()
        .map(|job| {
            Ok(JobMetrics {
                status: status_of(catalog, job)?,
                recipients_hash: job_recipients_hash(job),
            })
        })
        .collect()
}

/// A label value escaped for the exposition format: `\`, `"` and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds as seconds with three decimals (exact: no float rounding).
fn secs(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// One metric family: name, help, and each job's value (None: left out for that job).
type Family<'a> = (&'a str, &'a str, fn(&JobMetrics) -> Option<String>);

const FAMILIES: &[Family<'static>] = &[
    (
        "coffer_last_success_timestamp_seconds",
        "When the job's last session that left a complete archive ended, in seconds since the epoch (0: never).",
        |m| {
            Some(
                m.status
                    .recorded
                    .last_success
                    .as_ref()
                    .map(|r| secs(r.finished_at_ms.unwrap_or(r.started_at_ms)))
                    .unwrap_or_else(|| "0".into()),
            )
        },
    ),
    (
        "coffer_session_duration_seconds",
        "How long the job's last finished session took.",
        |m| {
            let r = m.status.recorded.last.as_ref()?;
            r.duration_ms().map(secs)
        },
    ),
    (
        "coffer_session_bytes",
        "Bytes the job's last finished session wrote (its archive's size; 0 if it failed).",
        |m| {
            let r = m.status.recorded.last.as_ref()?;
            Some(r.bytes_written.unwrap_or(0).to_string())
        },
    ),
    (
        "coffer_session_warnings",
        "Warnings of the job's last finished session (files missing from its archive or changed while read).",
        |m| {
            let r = m.status.recorded.last.as_ref()?;
            Some(r.warning_count.to_string())
        },
    ),
    (
        "coffer_restore_points",
        "Complete archives of the job that retention has kept.",
        |m| Some(m.status.recorded.restore_points.to_string()),
    ),
    (
        "coffer_last_verify_ok",
        "1 if the job's last scheduled verify found every kept archive intact, 0 if not (absent: never verified).",
        |m| {
            let v = m.status.recorded.last_verify.as_ref()?;
            Some(if v.ok() { "1" } else { "0" }.into())
        },
    ),
    (
        "coffer_last_verify_keyed",
        "1 if the job's last scheduled verify was keyed (MACs and content hashes checked with verify_identity), 0 if keyless (checksums only).",
        |m| {
            let v = m.status.recorded.last_verify.as_ref()?;
            Some(if v.keyed { "1" } else { "0" }.into())
        },
    ),
    (
        "coffer_recipients_hash",
        "A 48-bit hash of the job's sorted recipient fingerprints: it changes when the recipient set changes.",
        |m| m.recipients_hash.map(|h| h.to_string()),
    ),
    (
        "coffer_job_health",
        "The job's status as `coffer status` reports it: 0 ok, 1 warning (overdue, warnings), 2 failed.",
        |m| Some(m.status.health.exit_code().to_string()),
    ),
];

/// The exposition text of `metrics`: every family with its HELP and TYPE lines, one
/// sample per job.
pub fn render(metrics: &[JobMetrics]) -> String {
    let mut out = String::new();
    for (name, help, value) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for m in metrics {
            if let Some(v) = value(m) {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {v}", escape_label(&m.status.job));
            }
        }
    }
    out
}

/// Replace the text file at `path` with `text`, atomically, mode 0644 (the collector
/// usually runs as another user; the metrics hold no secret).
pub fn write_textfile(path: &Path, text: &str) -> JobResult<()> {
    let io = |e: crate::Error| match e {
        crate::Error::Io { source, .. } => JobError::io(path, source),
        other => JobError::Backup(other),
    };
    let mut f = crate::fsutil::AtomicFile::create(path, 0o644, true).map_err(io)?;
    f.write_all(text.as_bytes())
        .map_err(|e| JobError::io(path, e))?;
    f.commit(true).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_hash_ignores_order_and_fits_a_float() {
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        let h = recipients_hash(&[a, b]);
        assert_eq!(h, recipients_hash(&[b, a]));
        assert_ne!(h, recipients_hash(&[a]));
        assert!(h < 1 << 48);
        assert_eq!(h as f64 as u64, h);
    }

    #[test]
    fn labels_and_seconds_are_written_exactly() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(secs(1_714_960_800_123), "1714960800.123");
        assert_eq!(secs(5), "0.005");
    }

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("coffer.prom");
        write_textfile(&p, "a 1\n").unwrap();
        write_textfile(&p, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
