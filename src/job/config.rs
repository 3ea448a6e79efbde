//! The job file: parsing, validation and resolution.
//!
//! ```toml
//! [defaults]
//! recipients = ["/etc/coffer/ops.pub", "/etc/coffer/escrow.pub"]
//!
//! [job.home]
//! sources     = ["/home"]
//! exclude     = ["**/.cache", "**/node_modules", "*.tmp"]
//! destination = "/srv/backups/home"
//! schedule    = "0 2 * * *"
//! retention   = { keep_last = 7, keep_daily = 14, keep_weekly = 8, keep_monthly = 12 }
//! compression = "zstd"
//! ```
//!
//! Parsing ([`JobFile::parse`]) checks everything that needs no file system: unknown keys,
//! types, job names, cron expressions, exclude globs, compression, retention, and jobs that
//! share a destination. Resolution ([`JobFile::resolve`]) loads the recipients' keys and
//! tests that the destination is a writable folder. Every problem is a [`ConfigError`]
//! naming the file, the line, the job and the key.
//!
//! Relative paths in the file are relative to the folder holding the file.

use chrono::{DateTime, Local, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use toml::Spanned;

use super::retention::Retention;
use super::{JobError, JobResult};
use crate::Compression;
use crate::backup::BackupOptions;
use crate::recipient::{Recipient, RsaRecipient};

/// One problem in the job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// `job "home"` or `[defaults]`, when known.
    pub section: Option<String>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(s) = &self.section {
            write!(f, "{s}: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "key {k:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A value with the line it was written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
}

/// A cron expression (5 fields: minute hour day-of-month month day-of-week), evaluated in
/// the local time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("bad cron expression {expr:?}: {e}"))?;
        let s = Schedule {
            expr: expr.to_string(),
            cron,
        };
        if s.next_after(&Local::now()).is_none() {
            return Err(format!("cron expression {expr:?} never fires"));
        }
        Ok(s)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first time strictly after `t` that the schedule fires.
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>>
    where
        DateTime<Tz>: croner::CronDateTime,
    {
        self.cron.find_next_occurrence(t, false).ok()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

/// One job as written in the file, with the defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub name: String,
    /// Line of the job's table header.
    pub line: usize,
    pub sources: Vec<Located<PathBuf>>,
    pub destination: Located<PathBuf>,
    /// `[defaults]` exclude patterns followed by the job's own.
    pub exclude: Vec<String>,
    pub recipients: Vec<Located<PathBuf>>,
    pub schedule: Option<Located<Schedule>>,
    pub retention: Option<Retention>,
    pub compression: Compression,
    /// Run a schedule missed while the daemon was down once at start-up (default true).
    pub catch_up: bool,
    pub one_file_system: bool,
}

/// A parsed and validated job file.
#[derive(Clone, Debug)]
pub struct JobFile {
    pub path: PathBuf,
    /// Sorted by name.
    pub jobs: Vec<Job>,
    /// The `[s3]` table: endpoint and region for `s3://` destinations.
    #[cfg(feature = "s3")]
    pub s3: crate::storage::s3::S3Settings,
}

/// A job whose recipients are loaded and whose destination was found writable.
#[derive(Clone, Debug)]
pub struct ResolvedJob {
    pub job: Job,
    pub recipients: Vec<RsaRecipient>,
}

impl ResolvedJob {
    /// The backup options of one session of this job writing to `output`.
    pub fn backup_options(&self, output: PathBuf) -> BackupOptions {
        let j = &self.job;
        let mut opts =
            BackupOptions::new(j.sources.iter().map(|s| s.value.clone()).collect(), output);
        opts.job_name = j.name.clone();
        opts.exclude = j.exclude.clone();
        opts.compression = j.compression;
        opts.one_file_system = j.one_file_system;
        opts.overwrite = false;
        opts
    }
}

// ---- raw file structure ---------------------------------------------------------------

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
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
}

impl From<RawRetention> for Retention {
    fn from(r: RawRetention) -> Self {
        Retention {
            keep_last: r.keep_last.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
        }
    }
}

/// Where the sections start, to name the job of an error that serde reports by offset.
#[derive(Deserialize)]
struct Sections {
    defaults: Option<Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    job: BTreeMap<String, Spanned<serde::de::IgnoredAny>>,
}

/// Longest job name; names are used in file names.
pub const MAX_JOB_NAME: usize = 64;

/// Check a job name: letters, digits, `_`, `-` and `.`, starting with a letter or digit.
pub fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_JOB_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

struct Ctx<'a> {
    src: &'a str,
    file: &'a Path,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
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

fn job_section(name: &str) -> Option<String> {
    Some(format!("job {name:?}"))
}

impl JobFile {
    /// Read and parse the job file at `path`.
    pub fn load(path: &Path) -> JobResult<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JobError::NoConfig {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(JobError::io(path, e)),
        };
        Self::parse(&text, path)
    }

    /// Parse and validate the text of a job file read from `path` (used in messages and
    /// to resolve relative paths).
    pub fn parse(src: &str, path: &Path) -> JobResult<Self> {
        let raw: RawFile =
            toml::from_str(src).map_err(|e| JobError::Config(vec![toml_error(&e, src, path)]))?;
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut cx = Ctx {
            src,
            file: path,
            base,
            errors: Vec::new(),
        };

        #[cfg(feature = "s3")]
        let raw_s3 = raw.s3;
        let defaults = raw.defaults.map(Spanned::into_inner).unwrap_or_default();
        let defaults_section = Some("[defaults]".to_string());
        let default_compression = match &defaults.compression {
            Some(c) => parse_compression(&mut cx, c, &defaults_section),
            None => Some(Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL)),
        };
        let default_retention = defaults
            .retention
            .as_ref()
            .and_then(|r| check_retention(&mut cx, r, &defaults_section));
        let default_exclude = check_globs(
            &mut cx,
            defaults.exclude.as_deref().unwrap_or(&[]),
            &defaults_section,
        );
        let default_recipients: Option<Vec<Located<PathBuf>>> =
            defaults.recipients.as_ref().map(|list| {
                list.get_ref()
                    .iter()
                    .map(|r| Located {
                        value: cx.path(r.get_ref()),
                        line: cx.line(r.span().start),
                    })
                    .collect()
            });

        let mut jobs = Vec::new();
        for (name, job) in raw.job {
            let name_span = name.span();
            let name = name.into_inner();
            let job_span = job.span();
            let job = job.into_inner();
            let section = job_section(&name);
            let line = cx.line(job_span.start);
            if !valid_job_name(&name) {
                cx.err(
                    name_span.start,
                    section.clone(),
                    "name",
                    format!(
                        "job name {name:?} is not allowed: use 1 to {MAX_JOB_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit"
                    ),
                    Some("job names become part of archive and lock file names"),
                );
                continue;
            }
            let mut sources = Vec::new();
            if job.sources.get_ref().is_empty() {
                cx.err(
                    job.sources.span().start,
                    section.clone(),
                    "sources",
                    "no sources: list at least one file or folder",
                    None,
                );
            }
            for s in job.sources.get_ref() {
                if s.get_ref().is_empty() {
                    cx.err(
                        s.span().start,
                        section.clone(),
                        "sources",
                        "empty path",
                        None,
                    );
                } else {
                    sources.push(Located {
                        value: cx.path(s.get_ref()),
                        line: cx.line(s.span().start),
                    });
                }
            }
            let dest = job.destination.get_ref();
            if dest.is_empty() {
                cx.err(
                    job.destination.span().start,
                    section.clone(),
                    "destination",
                    "empty path",
                    None,
                );
            }
            let destination = Located {
                value: cx.path(dest),
                line: cx.line(job.destination.span().start),
            };
            let recipients = match &job.recipients {
                Some(list) => list
                    .get_ref()
                    .iter()
                    .map(|r| Located {
                        value: cx.path(r.get_ref()),
                        line: cx.line(r.span().start),
                    })
                    .collect(),
                None => default_recipients.clone().unwrap_or_default(),
            };
            if recipients.is_empty() {
                let at = job
                    .recipients
                    .as_ref()
                    .map(|r| r.span().start)
                    .unwrap_or(job_span.start);
                cx.err(
                    at,
                    section.clone(),
                    "recipients",
                    "no recipients: nobody could restore this job's archives",
                    Some("list public keys in `recipients` under [defaults] or in the job"),
                );
            }
            let schedule = job.schedule.as_ref().and_then(|s| {
                match Schedule::parse(s.get_ref()) {
                    Ok(sch) => Some(Located {
                        value: sch,
                        line: cx.line(s.span().start),
                    }),
                    Err(msg) => {
                        cx.err(
                            s.span().start,
                            section.clone(),
                            "schedule",
                            msg,
                            Some("use 5 cron fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 every day"),
                        );
                        None
                    }
                }
            });
            let retention = match &job.retention {
                Some(r) => check_retention(&mut cx, r, &section),
                None => default_retention,
            };
            let compression = match &job.compression {
                Some(c) => parse_compression(&mut cx, c, &section),
                None => default_compression,
            };
            let mut exclude = default_exclude.clone();
            exclude.extend(check_globs(
                &mut cx,
                job.exclude.as_deref().unwrap_or(&[]),
                &section,
            ));
            jobs.push(Job {
                name,
                line,
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
            });
        }

        // Jobs writing into one folder would mix their archives; each gets its own.
        // Reported at the later of the two lines, naming the earlier job.
        for j in &jobs {
            if let Some(other) = jobs.iter().find(|o| {
                o.destination.value == j.destination.value
                    && o.destination.line < j.destination.line
            }) {
                cx.errors.push(shared_destination(path, j, other));
            }
        }

        if cx.errors.is_empty() {
            Ok(JobFile {
                path: path.to_path_buf(),
                jobs,
                #[cfg(feature = "s3")]
                s3: raw_s3.unwrap_or_default(),
            })
        } else {
            cx.errors.sort_by_key(|e| e.line);
            Err(JobError::Config(cx.errors))
        }
    }

    /// The job called `name`.
    pub fn job(&self, name: &str) -> JobResult<&Job> {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| JobError::UnknownJob {
                name: name.to_string(),
                file: self.path.clone(),
                known: self.jobs.iter().map(|j| j.name.clone()).collect(),
            })
    }

    /// Load the job's recipients and test its destination.
    pub fn resolve(&self, job: &Job) -> JobResult<ResolvedJob> {
        let mut all = self.resolve_all(std::slice::from_ref(job))?;
        Ok(all.remove(0))
    }

    /// Resolve several jobs, reporting every problem of every job at once.
    pub fn resolve_all(&self, jobs: &[Job]) -> JobResult<Vec<ResolvedJob>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        let mut canonical: Vec<(PathBuf, &Job)> = Vec::new();
        for job in jobs {
            let section = job_section(&job.name);
            let mut recipients: Vec<RsaRecipient> = Vec::new();
            for r in &job.recipients {
                match RsaRecipient::load(&r.value) {
                    Ok(rec) => {
                        if recipients
                            .iter()
                            .any(|o| o.fingerprint() == rec.fingerprint())
                        {
                            errors.push(self.error(
                                r.line,
                                &section,
                                "recipients",
                                format!(
                                    "{}: recipient {} is listed twice",
                                    r.value.display(),
                                    rec.fingerprint()
                                ),
                                None,
                            ));
                        } else {
                            recipients.push(rec);
                        }
                    }
                    Err(e) => errors.push(self.error(
                        r.line,
                        &section,
                        "recipients",
                        e.to_string(),
                        e.hint().as_deref(),
                    )),
                }
            }
            let dest = &job.destination;
            match test_destination(&dest.value) {
                Ok(real) => {
                    if let Some((_, other)) = canonical.iter().find(|(p, _)| *p == real) {
                        let (later, earlier) = if other.destination.line > job.destination.line {
                            (*other, job)
                        } else {
                            (job, *other)
                        };
                        errors.push(shared_destination(&self.path, later, earlier));
                    }
                    canonical.push((real, job));
                }
                Err((message, hint)) => errors.push(self.error(
                    dest.line,
                    &section,
                    "destination",
                    message,
                    Some(&hint),
                )),
            }
            out.push(ResolvedJob {
                job: job.clone(),
                recipients,
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(JobError::Config(errors))
        }
    }

    /// Sources that do not exist now (for `job check`; a run records them as a failure).
    pub fn check_sources(&self, job: &Job) -> Vec<ConfigError> {
        job.sources
            .iter()
            .filter_map(|s| match s.value.symlink_metadata() {
                Ok(_) => None,
                Err(e) => Some(self.error(
                    s.line,
                    &job_section(&job.name),
                    "sources",
                    format!("{}: {e}", s.value.display()),
                    Some("check the path; a run with a missing source fails"),
                )),
            })
            .collect()
    }

    fn error(
        &self,
        line: usize,
        section: &Option<String>,
        key: &str,
        message: String,
        hint: Option<&str>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: Some(line),
            section: section.clone(),
            key: Some(key.to_string()),
            message,
            hint: hint.map(str::to_string),
        }
    }
}

fn shared_destination(file: &Path, job: &Job, other: &Job) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: Some(job.destination.line),
        section: job_section(&job.name),
        key: Some("destination".into()),
        message: format!(
            "{} is also the destination of job {:?} (line {}); jobs must not share a destination",
            job.destination.value.display(),
            other.name,
            other.destination.line
        ),
        hint: Some("give each job its own destination folder, e.g. /srv/backups/<job>".into()),
    }
}

/// Is `dest` a folder we can create files in? Returns its canonical path.
fn test_destination(dest: &Path) -> Result<PathBuf, (String, String)> {
    let shown = dest.display();
    match crate::storage::Location::parse(dest) {
        // Not contacted here: a write-only key could only test by uploading an object it
        // could never delete. The first session reports what is wrong.
        Ok(remote @ crate::storage::Location::S3 { .. }) => {
            let shown = remote.display_path();
            let text = shown.to_string_lossy();
            return Ok(PathBuf::from(text.trim_end_matches('/')));
        }
        Ok(_) => {}
        Err(e) => {
            return Err((
                e.to_string(),
                "write s3://bucket/prefix (bucket names are lower case)".into(),
            ));
        }
    }
    match std::fs::metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                format!("{shown}: destination folder does not exist"),
                format!("create it: mkdir -p {shown}"),
            ));
        }
        Err(e) => {
            return Err((
                format!("{shown}: {e}"),
                "check the path and its permissions".into(),
            ));
        }
        Ok(m) if !m.is_dir() => {
            return Err((
                format!("{shown}: destination is not a folder"),
                "point destination at a folder".into(),
            ));
        }
        Ok(_) => {}
    }
    let probe = crate::fsutil::temp_name(&dest.join("coffer-write-test"), "probe");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(f) => {
            drop(f);
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            return Err((
                format!("{shown}: destination is not writable: {e}"),
                "check the folder's owner and permissions, or run as a user who may write it"
                    .into(),
            ));
        }
    }
    std::fs::canonicalize(dest).map_err(|e| (format!("{shown}: {e}"), "check the path".into()))
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

fn check_retention(
    cx: &mut Ctx<'_>,
    r: &Spanned<RawRetention>,
    section: &Option<String>,
) -> Option<Retention> {
    let policy = Retention::from(*r.get_ref());
    if policy.is_empty() {
        cx.err(
            r.span().start,
            section.clone(),
            "retention",
            "retention keeps nothing (every keep_* is 0 or missing)",
            Some("set keep_last, keep_daily, keep_weekly or keep_monthly above 0, or remove retention to keep every archive"),
        );
        return None;
    }
    Some(policy)
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
        assert_eq!(j.compression, Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL));
    }

    #[test]
    fn key_at_finds_inline_table_keys() {
        let src = "retention = { keep_last = -1 }\n";
        let start = src.find("-1").unwrap();
        assert_eq!(key_at(src, start..start + 2).as_deref(), Some("keep_last"));
        assert_eq!(key_at("colour = 1\n", 0..6).as_deref(), Some("colour"));
    }

    #[test]
    fn schedules_are_five_field_cron_or_a_nickname() {
        assert!(Schedule::parse("0 2 * * *").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("30 3 * * sun").is_ok());
        assert!(Schedule::parse("0 0 2 * * *").is_err(), "no seconds field");
        assert!(Schedule::parse("0 2 * * * 2030").is_err(), "no year field");
        assert!(
            Schedule::parse("0 0 31 2 *")
                .unwrap_err()
                .contains("never fires")
        );
    }

    #[test]
    fn job_names_are_checked() {
        for ok in ["home", "db-1", "a.b", "X_9"] {
            assert!(valid_job_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_job_name(bad), "{bad}");
        }
    }
}
