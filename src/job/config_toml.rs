//! The job file as TOML text: the raw serde schema (every table `deny_unknown_fields`, every
//! value with its byte span) and its conversion into the domain types of [`super::config`].
//!
//! Parsing ([`JobFile::parse`]) checks everything that needs no file system: unknown keys,
//! types, job names, cron expressions, exclude globs, compression, retention, and jobs that
//! share a destination. It goes on after a problem so one run reports them all, each a
//! [`ConfigError`] with the file, the 1-based line, the section and the key; serde's own
//! errors (unknown keys, wrong types) arrive with a byte span only and are turned into the
//! same shape. Relative paths are made absolute here, against the folder holding the
//! file, so nothing later depends on the current folder.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

use super::chains::{ChainPolicy, check_full_every};
use super::config::{
    Job, JobFile, Located, MAX_JOB_NAME, job_section, shared_destination, valid_job_name,
};
use super::error::{ConfigError, JobError, JobResult};
use super::retention::Retention;
use super::schedule::Schedule;
use crate::Compression;
use retention::{RawRetention, check_retention};

mod copy;
#[cfg(feature = "s3")]
mod lock;
mod monitor;
mod retention;
mod signers;
#[cfg(test)]
mod test_support;

type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<Spanned<RawDefaults>>,
    /// Endpoint and region for `s3://` destinations (credentials stay in AWS_* variables).
    #[cfg(feature = "s3")]
    s3: Option<crate::storage::s3::S3Settings>,
    #[serde(default)]
    job: BTreeMap<Spanned<String>, Spanned<RawJob>>,
    /// Monitoring (see `monitor`): where the daemon writes Prometheus metrics.
    metrics_textfile: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    recipients: Option<SpannedList>,
    exclude: Option<Vec<Spanned<String>>>,
    compression: Option<Spanned<String>>,
    retention: Option<Spanned<RawRetention>>,
    catch_up: Option<bool>,
    one_file_system: Option<bool>,
    xattrs: Option<bool>,
    signing_key: Option<Spanned<String>>,
    signing_key_passphrase_file: Option<Spanned<String>>,
    full_every: Option<Spanned<u32>>,
    active_full: Option<Spanned<String>>,
    // Monitoring keys, checked in `monitor`.
    notify: Option<monitor::RawNotify>,
    verify_schedule: Option<Spanned<String>>,
    verify_max_rate: Option<Spanned<u64>>,
    verify_identity: Option<Spanned<String>>,
    // Pinned signers of scheduled verifies, checked in `signers`.
    signers: Option<SpannedList>,
    signers_file: Option<Spanned<String>>,
    // Copies, checked in `copy` (`copy_to` is per job).
    copy_retention: Option<Spanned<RawRetention>>,
    copy_schedule: Option<Spanned<String>>,
    // S3 Object Lock of the job's uploads, checked in `lock`.
    #[cfg(feature = "s3")]
    object_lock: Option<Spanned<lock::RawLock>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    sources: SpannedList,
    destination: Spanned<String>,
    exclude: Option<Vec<Spanned<String>>>,
    recipients: Option<SpannedList>,
    schedule: Option<Spanned<String>>,
    retention: Option<Spanned<RawRetention>>,
    compression: Option<Spanned<String>>,
    catch_up: Option<bool>,
    one_file_system: Option<bool>,
    xattrs: Option<bool>,
    signing_key: Option<Spanned<String>>,
    signing_key_passphrase_file: Option<Spanned<String>>,
    full_every: Option<Spanned<u32>>,
    active_full: Option<Spanned<String>>,
    // Monitoring keys, checked in `monitor`.
    notify: Option<monitor::RawNotify>,
    verify_schedule: Option<Spanned<String>>,
    verify_max_rate: Option<Spanned<u64>>,
    verify_identity: Option<Spanned<String>>,
    // Pinned signers of scheduled verifies, checked in `signers`.
    signers: Option<SpannedList>,
    signers_file: Option<Spanned<String>>,
    // Copies, checked in `copy`.
    copy_to: Option<SpannedList>,
    copy_retention: Option<Spanned<RawRetention>>,
    copy_schedule: Option<Spanned<String>>,
    // S3 Object Lock of the job's uploads, checked in `lock`.
    #[cfg(feature = "s3")]
    object_lock: Option<Spanned<lock::RawLock>>,
}

/// Where the sections start, to name the job of an error that serde reports by offset.
#[derive(Deserialize)]
struct Sections {
    defaults: Option<Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    job: BTreeMap<String, Spanned<serde::de::IgnoredAny>>,
}

/// The state of one parse: the text (for line numbers), the file (for messages), the folder
/// relative paths start from, and every problem found so far.
struct Ctx<'a> {
    src: &'a str,
    file: &'a Path,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    fn new(src: &'a str, file: &'a Path) -> Self {
        let base = std::path::absolute(file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("/"));
        Ctx {
            src,
            file,
            base,
            errors: Vec::new(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        line_of(self.src, offset)
    }

    fn err(
        &mut self,
        offset: usize,
        section: Option<String>,
        key: &str,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line(offset)),
            section,
            key: Some(key.to_string()),
            message: message.into(),
            hint: hint.map(str::to_string),
        });
    }

    fn path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if s.starts_with("s3://") {
            return p.to_path_buf();
        }
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        normalize(&joined)
    }

    /// A path of the file with the line it was written on.
    fn located_path(&self, s: &Spanned<String>) -> Located<PathBuf> {
        Located {
            value: self.path(s.get_ref()),
            line: self.line(s.span().start),
        }
    }

    fn paths(&self, list: &[Spanned<String>]) -> Vec<Located<PathBuf>> {
        list.iter().map(|s| self.located_path(s)).collect()
    }
}

/// 1-based line of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Lexical normalization: drop `.` components and trailing slashes (not `..`: symlinks).
fn normalize(p: &Path) -> PathBuf {
    p.components().filter(|c| *c != Component::CurDir).collect()
}

impl JobFile {
    /// Parse and validate the text of a job file read from `path` (used in messages and
    /// to resolve relative paths).
    pub fn parse(src: &str, path: &Path) -> JobResult<Self> {
        let raw: RawFile =
            toml::from_str(src).map_err(|e| JobError::Config(vec![toml_error(&e, src, path)]))?;
        let mut cx = Ctx::new(src, path);
        let raw_defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
        let defaults = Defaults::check(&mut cx, &raw_defaults);
        let jobs: Vec<Job> = raw
            .job
            .into_iter()
            .filter_map(|(name, job)| check_job(&mut cx, &defaults, name, job))
            .collect();
        check_shared_destinations(&mut cx, &jobs);
        copy::check_shared_targets(&mut cx, &jobs);
        let metrics_textfile = monitor::metrics_textfile(&mut cx, raw.metrics_textfile.as_ref());
        if cx.errors.is_empty() {
            Ok(JobFile {
                path: path.to_path_buf(),
                jobs,
                #[cfg(feature = "s3")]
                s3: raw.s3.unwrap_or_default(),
                metrics_textfile: metrics_textfile.map(|p| p.value),
            })
        } else {
            cx.errors.sort_by_key(|e| e.line);
            Err(JobError::Config(cx.errors))
        }
    }
}

/// The `[defaults]` table, checked: what a job that does not set a key gets.
struct Defaults {
    /// None when the default itself is invalid (already reported).
    compression: Option<Compression>,
    retention: Option<Retention>,
    exclude: Vec<String>,
    /// None when `[defaults]` names no recipients (an empty list is Some).
    recipients: Option<Vec<Located<PathBuf>>>,
    catch_up: Option<bool>,
    one_file_system: Option<bool>,
    xattrs: Option<bool>,
    signing_key: Option<Located<PathBuf>>,
    signing_key_passphrase_file: Option<Located<PathBuf>>,
    /// `full_every` and `active_full` of `[defaults]` (each None when unset or invalid).
    chain: ChainPolicy,
    /// `notify`, `verify_schedule`, `verify_max_rate` of `[defaults]`.
    monitoring: super::config::Monitoring,
    /// `signers` and `signers_file` of `[defaults]`.
    signers: super::config::SignerFiles,
    /// `copy_retention` and `copy_schedule` of `[defaults]`.
    copies: super::copies::CopyPolicy,
    /// `object_lock` of `[defaults]` (for the jobs that write to S3).
    #[cfg(feature = "s3")]
    object_lock: Option<crate::storage::s3::ObjectLock>,
}

impl Defaults {
    fn check(cx: &mut Ctx<'_>, raw: &RawDefaults) -> Self {
        let section = Some("[defaults]".to_string());
        let compression = match &raw.compression {
            Some(c) => parse_compression(cx, c, &section),
            None => Some(Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL)),
        };
        let retention = raw
            .retention
            .as_ref()
            .and_then(|r| check_retention(cx, r, &section));
        let exclude = check_globs(cx, raw.exclude.as_deref().unwrap_or(&[]), &section);
        let recipients = raw.recipients.as_ref().map(|list| cx.paths(list.get_ref()));
        Defaults {
            compression,
            retention,
            exclude,
            recipients,
            catch_up: raw.catch_up,
            one_file_system: raw.one_file_system,
            xattrs: raw.xattrs,
            signing_key: raw.signing_key.as_ref().map(|s| cx.located_path(s)),
            signing_key_passphrase_file: raw
                .signing_key_passphrase_file
                .as_ref()
                .map(|s| cx.located_path(s)),
            chain: ChainPolicy {
                full_every: raw
                    .full_every
                    .as_ref()
                    .and_then(|n| check_full_every_key(cx, n, &section)),
                active_full: raw
                    .active_full
                    .as_ref()
                    .and_then(|s| check_schedule(cx, s, &section, "active_full")),
            },
            monitoring: monitor::defaults(cx, raw),
            signers: signers::defaults(
                cx,
                &signers::RawSigners {
                    signers: raw.signers.as_ref(),
                    signers_file: raw.signers_file.as_ref(),
                },
            ),
            copies: copy::defaults(
                cx,
                &copy::RawCopy {
                    copy_to: None,
                    copy_retention: raw.copy_retention.as_ref(),
                    copy_schedule: raw.copy_schedule.as_ref(),
                },
            ),
            #[cfg(feature = "s3")]
            object_lock: lock::defaults(cx, raw.object_lock.as_ref().map(Spanned::get_ref)),
        }
    }
}

/// One `[job.NAME]` table with the defaults applied. None only when the name is invalid:
/// a job with other problems is still returned, so the shared-destination check sees it.
fn check_job(
    cx: &mut Ctx<'_>,
    defaults: &Defaults,
    name: Spanned<String>,
    job: Spanned<RawJob>,
) -> Option<Job> {
    let name_span = name.span();
    let name = name.into_inner();
    let job_start = job.span().start;
    let job = job.into_inner();
    let section = job_section(&name);
    if !valid_job_name(&name) {
        cx.err(
            name_span.start,
            section,
            "name",
            format!(
                "job name {name:?} is not allowed: use 1 to {MAX_JOB_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit"
            ),
            Some("job names become part of archive and lock file names"),
        );
        return None;
    }
    // The order of the checks is the order of the messages on one line.
    let sources = check_sources(cx, &job.sources, &section);
    let destination = check_destination(cx, &job.destination, &section);
    let recipients = check_recipients(cx, &job, defaults, job_start, &section);
    let schedule = job
        .schedule
        .as_ref()
        .and_then(|s| check_schedule(cx, s, &section, "schedule"));
    // Each key on its own: a job's `full_every` keeps the default `active_full`.
    let chain = ChainPolicy {
        full_every: match &job.full_every {
            Some(n) => check_full_every_key(cx, n, &section),
            None => defaults.chain.full_every,
        },
        active_full: match &job.active_full {
            Some(s) => check_schedule(cx, s, &section, "active_full"),
            None => defaults.chain.active_full.clone(),
        },
    };
    let retention = match &job.retention {
        Some(r) => check_retention(cx, r, &section),
        None => defaults.retention,
    };
    let compression = match &job.compression {
        Some(c) => parse_compression(cx, c, &section),
        None => defaults.compression,
    };
    let monitoring = monitor::job(cx, &defaults.monitoring, &job, &section);
    let raw_signers = signers::RawSigners {
        signers: job.signers.as_ref(),
        signers_file: job.signers_file.as_ref(),
    };
    let signers = signers::job(cx, &defaults.signers, &raw_signers, &section);
    let raw_copy = copy::RawCopy {
        copy_to: job.copy_to.as_ref(),
        copy_retention: job.copy_retention.as_ref(),
        copy_schedule: job.copy_schedule.as_ref(),
    };
    let copies = copy::job(cx, &defaults.copies, &raw_copy, &destination, &section);
    #[cfg(feature = "s3")]
    let object_lock = lock::job(
        cx,
        defaults.object_lock,
        job.object_lock.as_ref(),
        job.destination.get_ref(),
        &section,
    );
    let mut exclude = defaults.exclude.clone();
    exclude.extend(check_globs(
        cx,
        job.exclude.as_deref().unwrap_or(&[]),
        &section,
    ));
    Some(Job {
        name,
        line: cx.line(job_start),
        sources,
        destination,
        exclude,
        recipients,
        schedule,
        retention,
        compression: compression.unwrap_or(Compression::None),
        catch_up: job.catch_up.or(defaults.catch_up).unwrap_or(true),
        one_file_system: job
            .one_file_system
            .or(defaults.one_file_system)
            .unwrap_or(true),
        xattrs: job.xattrs.or(defaults.xattrs).unwrap_or(true),
        // A job's own key replaces the default key, and with it the default passphrase
        // file (which belongs to the default key).
        signing_key_passphrase_file: match &job.signing_key {
            Some(_) => job
                .signing_key_passphrase_file
                .as_ref()
                .map(|s| cx.located_path(s)),
            None => job
                .signing_key_passphrase_file
                .as_ref()
                .map(|s| cx.located_path(s))
                .or_else(|| defaults.signing_key_passphrase_file.clone()),
        },
        signing_key: job
            .signing_key
            .as_ref()
            .map(|s| cx.located_path(s))
            .or_else(|| defaults.signing_key.clone()),
        chain,
        monitoring,
        signers,
        copies,
        #[cfg(feature = "s3")]
        object_lock,
    })
}

fn check_sources(
    cx: &mut Ctx<'_>,
    list: &SpannedList,
    section: &Option<String>,
) -> Vec<Located<PathBuf>> {
    if list.get_ref().is_empty() {
        cx.err(
            list.span().start,
            section.clone(),
            "sources",
            "no sources: list at least one file or folder",
            None,
        );
    }
    let mut sources = Vec::new();
    for s in list.get_ref() {
        if s.get_ref().is_empty() {
            cx.err(
                s.span().start,
                section.clone(),
                "sources",
                "empty path",
                None,
            );
        } else {
            sources.push(cx.located_path(s));
        }
    }
    sources
}

fn check_destination(
    cx: &mut Ctx<'_>,
    dest: &Spanned<String>,
    section: &Option<String>,
) -> Located<PathBuf> {
    if dest.get_ref().is_empty() {
        cx.err(
            dest.span().start,
            section.clone(),
            "destination",
            "empty path",
            None,
        );
    }
    cx.located_path(dest)
}

/// The job's own recipients, else those of `[defaults]`; none at all is an error (the
/// archives could never be restored), reported at the job's list or its table header.
fn check_recipients(
    cx: &mut Ctx<'_>,
    job: &RawJob,
    defaults: &Defaults,
    job_start: usize,
    section: &Option<String>,
) -> Vec<Located<PathBuf>> {
    let recipients = match &job.recipients {
        Some(list) => cx.paths(list.get_ref()),
        None => defaults.recipients.clone().unwrap_or_default(),
    };
    if recipients.is_empty() {
        let at = job
            .recipients
            .as_ref()
            .map(|r| r.span().start)
            .unwrap_or(job_start);
        cx.err(
            at,
            section.clone(),
            "recipients",
            "no recipients: nobody could restore this job's archives",
            Some("list public keys in `recipients` under [defaults] or in the job"),
        );
    }
    recipients
}

/// A cron expression: `schedule`, or `active_full` (`key`).
fn check_schedule(
    cx: &mut Ctx<'_>,
    s: &Spanned<String>,
    section: &Option<String>,
    key: &str,
) -> Option<Located<Schedule>> {
    match Schedule::parse(s.get_ref()) {
        Ok(sch) => Some(Located {
            value: sch,
            line: cx.line(s.span().start),
        }),
        Err(msg) => {
            cx.err(
                s.span().start,
                section.clone(),
                key,
                msg,
                Some("use 5 cron fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 every day"),
            );
            None
        }
    }
}

fn check_full_every_key(
    cx: &mut Ctx<'_>,
    n: &Spanned<u32>,
    section: &Option<String>,
) -> Option<u32> {
    match check_full_every(*n.get_ref()) {
        Ok(n) => Some(n),
        Err((msg, hint)) => {
            cx.err(
                n.span().start,
                section.clone(),
                "full_every",
                msg,
                Some(hint),
            );
            None
        }
    }
}

/// Jobs writing into one folder would mix their archives; each gets its own.
/// Reported at the later of the two lines, naming the earlier job.
fn check_shared_destinations(cx: &mut Ctx<'_>, jobs: &[Job]) {
    for j in jobs {
        if let Some(other) = jobs.iter().find(|o| {
            o.destination.value == j.destination.value && o.destination.line < j.destination.line
        }) {
            cx.errors.push(shared_destination(cx.file, j, other));
        }
    }
}

fn parse_compression(
    cx: &mut Ctx<'_>,
    c: &Spanned<String>,
    section: &Option<String>,
) -> Option<Compression> {
    match c.get_ref().parse::<Compression>() {
        Ok(c) => Some(c),
        Err(msg) => {
            cx.err(c.span().start, section.clone(), "compression", msg, None);
            None
        }
    }
}

fn check_globs(
    cx: &mut Ctx<'_>,
    globs: &[Spanned<String>],
    section: &Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for g in globs {
        match globset::Glob::new(g.get_ref()) {
            Ok(_) => out.push(g.get_ref().clone()),
            Err(e) => cx.err(
                g.span().start,
                section.clone(),
                "exclude",
                format!("bad glob {:?}: {}", g.get_ref(), e.kind()),
                None,
            ),
        }
    }
    out
}

/// Turn a TOML/serde error into a [`ConfigError`] with line, section and key.
fn toml_error(e: &toml::de::Error, src: &str, file: &Path) -> ConfigError {
    let span = e.span();
    let raw = e.message().trim().to_string();
    let section = span.as_ref().and_then(|s| section_at(src, s.start));
    let mut key = span.as_ref().and_then(|s| key_at(src, s.clone()));
    let mut hint = None;
    let message = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        key = Some(name.to_string());
        let expected = tail
            .trim_start_matches(", ")
            .trim_start_matches("expected ")
            .replace('`', "");
        if expected.is_empty() {
            "unknown key".to_string()
        } else {
            hint = Some("check the spelling; see docs/JOBS.md for every key".to_string());
            format!("unknown key (expected {expected})")
        }
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        key = Some(name.to_string());
        "required key is missing".to_string()
    } else {
        raw.replace("a sequence", "an array").replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
    };
    ConfigError {
        file: file.to_path_buf(),
        line: span.map(|s| line_of(src, s.start)),
        section,
        key,
        message,
        hint,
    }
}

/// The section (`[defaults]` or a job) an error at `offset` is in: the table header on that
/// line if there is one, else the last section header before it.
fn section_at(src: &str, offset: usize) -> Option<String> {
    let line_start = src[..offset.min(src.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let line = src[line_start..].lines().next().unwrap_or("").trim();
    if let Some(header) = line.strip_prefix('[') {
        let header = header.trim_start_matches('[');
        let header = header.split(']').next().unwrap_or(header);
        let mut parts = header.split('.').map(|p| p.trim().trim_matches('"'));
        return match (parts.next(), parts.next()) {
            (Some("job"), Some(name)) if !name.is_empty() => Some(format!("job {name:?}")),
            (Some("defaults"), _) => Some("[defaults]".into()),
            _ => None,
        };
    }
    let sections: Sections = toml::from_str(src).ok()?;
    let mut best: Option<(usize, String)> = None;
    let mut consider = |start: usize, name: String| {
        if start <= offset && best.as_ref().is_none_or(|(b, _)| start >= *b) {
            best = Some((start, name));
        }
    };
    if let Some(d) = &sections.defaults {
        consider(d.span().start, "[defaults]".into());
    }
    for (name, j) in &sections.job {
        consider(j.span().start, format!("job {name:?}"));
    }
    best.map(|(_, s)| s)
}

/// The key an error span is about: the span itself if it is a bare key, else the key
/// before the `=` that precedes the span on its line.
fn key_at(src: &str, span: std::ops::Range<usize>) -> Option<String> {
    let is_key = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let text = src.get(span.clone())?;
    let line_start = src[..span.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let before = &src[line_start..span.start];
    if is_key(text) && !before.contains('=') {
        return Some(text.to_string());
    }
    let (lhs, _) = before.rsplit_once('=')?;
    let k = lhs
        .trim_end()
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',' || c == '.')
        .next()?
        .trim_matches('"');
    is_key(k).then(|| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> JobResult<JobFile> {
        JobFile::parse(src, Path::new("/etc/coffer/jobs.toml"))
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let f = parse(
            "[defaults]\nrecipients = [\"keys/ops.pub\"]\nexclude = [\"*.tmp\"]\n\n[job.home]\nsources = [\"/home\"]\ndestination = \"/srv/b/home\"\nexclude = [\"**/.cache\"]\n",
        )
        .unwrap();
        let j = &f.jobs[0];
        assert_eq!(j.name, "home");
        assert_eq!(j.line, 5);
        assert_eq!(
            j.recipients[0].value,
            PathBuf::from("/etc/coffer/keys/ops.pub")
        );
        assert_eq!(j.recipients[0].line, 2);
        assert_eq!(j.exclude, ["*.tmp", "**/.cache"]);
        assert!(j.catch_up && j.one_file_system && j.schedule.is_none() && j.retention.is_none());
        assert!(j.xattrs);
        assert_eq!(j.compression, Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL));
    }

    #[test]
    fn xattrs_comes_from_the_job_or_the_defaults() {
        let f = parse(
            "[defaults]\nrecipients = [\"k.pub\"]\nxattrs = false\n\n[job.a]\nsources = [\"/a\"]\ndestination = \"/b\"\n\n[job.c]\nsources = [\"/c\"]\ndestination = \"/d\"\nxattrs = true\n",
        )
        .unwrap();
        assert!(!f.jobs[0].xattrs);
        assert!(f.jobs[1].xattrs);
    }

    #[test]
    fn key_at_finds_inline_table_keys() {
        let src = "retention = { keep_last = -1 }\n";
        let start = src.find("-1").unwrap();
        assert_eq!(key_at(src, start..start + 2).as_deref(), Some("keep_last"));
        assert_eq!(key_at("colour = 1\n", 0..6).as_deref(), Some("colour"));
    }
}
