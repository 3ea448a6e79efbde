//! Backup jobs: a TOML job file, one-off runs, a cron scheduler, a SQLite session catalog
//! and retention.
//!
//! A *job* is a named entry of the job file (sources, excludes, destination, recipients,
//! schedule, retention, compression). Each run of a job is one *job session*: one new
//! session key and one new archive `DESTINATION/<job>-<YYYYmmddTHHMMSSZ>-<8 hex>.coffer`,
//! where the hex digits are the start of the archive's session id.
//!
//! - [`config`] holds the jobs as the rest of the layer sees them ([`Job`], [`JobFile`]) and
//!   resolves them against the file system (recipients' keys, writable destinations);
//! - [`config_toml`] reads the TOML text: the raw schema and the errors that carry file,
//!   line, job and key;
//! - [`chains`] decides how a job's sessions join incremental chains (`full_every`,
//!   `active_full`, `job run --full`);
//! - [`schedule`] is the cron [`Schedule`] of a job;
//! - [`error`] holds [`JobError`] and [`ConfigError`];
//! - [`session`] runs one job session under the job's lock and records it in the [`catalog`];
//! - [`scheduler`] evaluates schedules and runs due jobs (the `daemon` command);
//! - [`retention`] decides which archives to keep (keep-last/daily/weekly/monthly, then
//!   every archive a kept restore point reads from) and [`prune`] applies it;
//! - [`copies`] copies the archives to the job's `copy_to` targets after a session (or on
//!   `copy_schedule`) and applies `copy_retention` there;
//! - [`lock`] holds one process-wide file lock per job (released if the process dies);
//! - [`paths`] finds the job file and the state folder.
//! - monitoring: [`status`] (each job's health, overdue), [`metrics`] (Prometheus text),
//!   [`notify`] (pings around sessions) and [`health`] (the scheduled keyless verify).
//!
//! How archives are named and how a job's leftovers are recognised in a destination is not
//! here but in [`crate::storage::naming`]: the plain `backup --to` names its archives the
//! same way without any job.
//!
//! Like the rest of the library, nothing here prints or exits: progress and log lines are
//! reported through the [`session::SessionEvents`] and [`scheduler::DaemonEvents`] traits.

pub mod catalog;
pub mod chains;
pub mod config;
pub mod config_toml;
pub mod copies;
pub mod error;
pub mod health;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod prune;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod session;
pub mod status;

pub use catalog::{Catalog, SessionRow, SessionState, Trigger};
pub use config::{Job, JobFile, ResolvedJob};
pub use error::{ConfigError, JobError, JobResult};
pub use paths::StateDir;
pub use retention::Retention;
pub use schedule::Schedule;
pub use session::{SessionOutcome, run_session};
