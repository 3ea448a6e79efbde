//! The jobs as the rest of the layer sees them, and their resolution against the file
//! system.
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
//! full_every  = 7                          # incrementals, a full every 7th session
//! ```
//!
//! [`JobFile::load`] reads the file and [`JobFile::parse`] (in [`super::config_toml`])
//! turns the text into [`Job`]s, checking everything that needs no file system.
//! Resolution ([`JobFile::resolve`]) is the part that does I/O: it loads the recipients'
//! keys and tests that the destination is a writable folder. Every problem is a
//! [`ConfigError`] naming the file, the line, the job and the key.
//!
//! Relative paths in the file are relative to the folder holding the file.

use std::path::{Path, PathBuf};

use super::chains::ChainPolicy;
use super::error::{ConfigError, JobError, JobResult};
use super::notify::Notify;
use super::retention::Retention;
use super::schedule::Schedule;
use crate::Compression;
use crate::backup::BackupOptions;
use crate::recipient::{Recipient, RsaRecipient};
use crate::signing::{SigningKey, VerifyingKey};
use std::sync::Arc;
use zeroize::Zeroizing;

/// A value with the line it was written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
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
    /// Store extended attributes and ACLs (`xattrs`, default true).
    pub xattrs: bool,
    /// Sign the job's archives with this key (`signing_key`, from the job or `[defaults]`).
    pub signing_key: Option<Located<PathBuf>>,
    /// The first line of this file is the signing key's passphrase, for a protected key
    /// (`signing_key_passphrase_file`): a scheduled run has nobody to ask.
    pub signing_key_passphrase_file: Option<Located<PathBuf>>,
    /// `full_every` and `active_full`: whether and how the job makes incrementals.
    pub chain: ChainPolicy,
    /// `notify`, `verify_schedule` and `verify_max_rate`.
    pub monitoring: Monitoring,
    /// `signers` and `signers_file`: whom a scheduled verify requires the archives to be
    /// signed by (empty: checksums only).
    pub signers: SignerFiles,
    /// `copy_to`, `copy_retention` and `copy_schedule` ([`super::copies`]).
    pub copies: super::copies::CopyPolicy,
    /// `object_lock` (the job's own, or `[defaults]`' for an S3 destination): the Object
    /// Lock retention of the job's uploads, in place of `[s3] object_lock`.
    #[cfg(feature = "s3")]
    pub object_lock: Option<crate::storage::s3::ObjectLock>,
}

/// The files a job pins its archives' signers with, as `verify --signer KEY.pub` and
/// `--signers FILE` take them: each a `.pub` (SPKI PEM or `ssh-ed25519` line) or an
/// allowed-signers file of several keys ([`crate::signing::load_allowed_signers`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignerFiles {
    /// `signers = ["host.sign.pub", …]`.
    pub keys: Vec<Located<PathBuf>>,
    /// `signers_file = "allowed_signers"`.
    pub file: Option<Located<PathBuf>>,
}

impl SignerFiles {
    /// No signer is pinned.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.file.is_none()
    }

    /// Every file with the job-file key it was written under.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &Located<PathBuf>)> {
        let keys = self.keys.iter().map(|k| ("signers", k));
        keys.chain(self.file.iter().map(|f| ("signers_file", f)))
    }
}

/// A job's monitoring keys (docs/JOBS.md "Monitoring").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Monitoring {
    /// URLs pinged when a session starts, succeeds or fails.
    pub notify: Notify,
    /// When the daemon verifies (keyless) every archive the job keeps.
    pub verify_schedule: Option<Located<Schedule>>,
    /// Bytes per second a scheduled verify may read (None: no limit).
    pub verify_max_rate: Option<u64>,
    /// `verify_identity`: a private key (as `restore -i` takes, without a passphrase) that
    /// makes the scheduled verify keyed. Meant for a verification host: a backup host that
    /// holds it loses the write-only property (docs/SECURITY.md).
    pub verify_identity: Option<Located<PathBuf>>,
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
    /// Top-level `metrics_textfile`: the daemon rewrites it after every session.
    pub metrics_textfile: Option<PathBuf>,
}

/// A job whose recipients are loaded and whose destination was found writable.
#[derive(Clone, Debug)]
pub struct ResolvedJob {
    pub job: Job,
    pub recipients: Vec<RsaRecipient>,
    pub signing_key: Option<Arc<SigningKey>>,
    /// The keys of `signers` and `signers_file`, each once (empty when none are pinned).
    pub signers: Vec<VerifyingKey>,
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
        opts.xattrs = j.xattrs;
        opts.overwrite = false;
        opts.signing_key = self.signing_key.clone();
        #[cfg(feature = "s3")]
        {
            opts.object_lock = j.object_lock;
        }
        opts
    }
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

/// How messages name a job's section: `job "home"`.
pub(super) fn job_section(name: &str) -> Option<String> {
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
            let recipients = self.load_recipients(job, &mut errors);
            let signing_key = self.load_signing_key(job, &mut errors);
            let signers = self.load_signers(job, signing_key.as_deref(), &mut errors);
            self.check_verify_identity(job, &mut errors);
            let dest = &job.destination;
            match test_destination(&dest.value) {
                Ok(real) => {
                    // Two spellings of one folder (a symlink, `..`) are one destination.
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
                    &job_section(&job.name),
                    "destination",
                    message,
                    Some(&hint),
                )),
            }
            out.push(ResolvedJob {
                job: job.clone(),
                recipients,
                signing_key,
                signers,
            });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(JobError::Config(errors))
        }
    }

    /// Load the job's recipients' keys; a key that cannot be loaded, or one listed twice,
    /// is a problem added to `errors`.
    fn load_recipients(&self, job: &Job, errors: &mut Vec<ConfigError>) -> Vec<RsaRecipient> {
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
        recipients
    }

    /// Load the job's signing key, its passphrase (if it has one) from the job's passphrase
    /// file; a key that cannot be loaded is a problem added to `errors`.
    fn load_signing_key(
        &self,
        job: &Job,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Arc<SigningKey>> {
        let key = job.signing_key.as_ref()?;
        let pass_file = job.signing_key_passphrase_file.as_ref();
        let passphrase = |_: &Path| -> crate::Result<Zeroizing<String>> {
            let Some(file) = pass_file else {
                return Err(crate::Error::BadKey {
                    path: key.value.clone(),
                    detail: "the signing key is passphrase-protected and the job names no signing_key_passphrase_file".into(),
                });
            };
            let text = Zeroizing::new(
                std::fs::read_to_string(&file.value)
                    .map_err(|e| crate::Error::io(&file.value, e))?,
            );
            Ok(Zeroizing::new(
                text.lines().next().unwrap_or_default().to_string(),
            ))
        };
        match SigningKey::load(&key.value, &passphrase) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                errors.push(self.error(
                    key.line,
                    &job_section(&job.name),
                    "signing_key",
                    e.to_string(),
                    e.hint().as_deref(),
                ));
                None
            }
        }
    }

    /// Load the keys of the job's `signers` and `signers_file`, as `verify --signer` and
    /// `--signers` do (a key named by two files counts once); a file that cannot be loaded
    /// is a problem added to `errors`. So is a pin the job's own archives could not pass:
    /// a job that signs with no key, or with one not pinned, would find every archive it
    /// writes from now on damaged at its next scheduled verify.
    fn load_signers(
        &self,
        job: &Job,
        signing_key: Option<&SigningKey>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<VerifyingKey> {
        let section = job_section(&job.name);
        let mut keys: Vec<VerifyingKey> = Vec::new();
        let mut failed = false;
        for (key, file) in job.signers.files() {
            match crate::signing::load_allowed_signers(&file.value) {
                Ok(found) => {
                    for k in found {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    errors.push(self.error(
                        file.line,
                        &section,
                        key,
                        e.to_string(),
                        e.hint().as_deref(),
                    ));
                }
            }
        }
        let Some((key, first)) = job.signers.files().next() else {
            return keys;
        };
        let own = match (&job.signing_key, signing_key) {
            (None, _) => Some(
                "the job pins signers but signs nothing (no signing_key): every archive it writes would fail its scheduled verify".to_string(),
            ),
            // A key that did not load is reported as such; an unloaded pin is no reference.
            (Some(_), None) => None,
            (Some(_), Some(_)) if failed => None,
            (Some(path), Some(k)) => (!keys.contains(k.verifying_key())).then(|| {
                format!(
                    "the job signs with {} ({}), which is not among its signers: every archive it writes would fail its scheduled verify",
                    k.fingerprint(),
                    path.value.display()
                )
            }),
        };
        if let Some(message) = own {
            errors.push(self.error(
                first.line,
                &section,
                key,
                message,
                Some("add the .pub of the job's signing_key to signers"),
            ));
        }
        keys
    }

    /// The job's `verify_identity` must load as the scheduled verify will load it (a
    /// private key without a passphrase: the daemon has nobody to ask); a key that does not
    /// is a problem added to `errors`. The key is loaded again by each verify
    /// ([`super::health::verify_job`]), so it is held in memory only while one runs.
    fn check_verify_identity(&self, job: &Job, errors: &mut Vec<ConfigError>) {
        let Some(key) = &job.monitoring.verify_identity else {
            return;
        };
        if let Err(e) = crate::recipient::RsaIdentity::load(&key.value) {
            errors.push(self.error(
                key.line,
                &job_section(&job.name),
                "verify_identity",
                e.to_string(),
                Some("a scheduled verify has nobody to ask for a passphrase: give it a key without one, readable only by the daemon's user"),
            ));
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

/// Two jobs share a destination: reported at `job`, naming `other`.
pub(super) fn shared_destination(file: &Path, job: &Job, other: &Job) -> ConfigError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
