//! The session catalog: every job session — started, succeeded, finished with warnings,
//! failed or interrupted — is a row of an embedded SQLite database in the state folder
//! (WAL mode, so `history` reads while a daemon writes). The schema carries a version
//! (`PRAGMA user_version`) and is brought up to date by ordered migrations when opened; a
//! catalog written by a newer coffer is refused rather than misread.
//!
//! Times are milliseconds since the Unix epoch (UTC).

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{JobError, JobResult};
use super::paths::{CHAINS_FILE, StateDir};
use crate::chain::ChainKind;

/// Schema migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: sessions and the scheduler's per-job bookkeeping.
    "CREATE TABLE sessions (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        job             TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN
                            ('running', 'succeeded', 'warnings', 'failed', 'interrupted')),
        trigger         TEXT    NOT NULL,
        pid             INTEGER NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        destination     TEXT    NOT NULL,
        session_id      TEXT,
        archive         TEXT,
        files           INTEGER,
        dirs            INTEGER,
        symlinks        INTEGER,
        bytes_read      INTEGER,
        bytes_written   INTEGER,
        warning_count   INTEGER NOT NULL DEFAULT 0,
        warnings        TEXT,
        error           TEXT,
        deleted_at_ms   INTEGER,
        deleted_reason  TEXT
    );
    CREATE INDEX sessions_by_job ON sessions (job, started_at_ms);
    CREATE INDEX sessions_running ON sessions (state) WHERE state = 'running';
    CREATE TABLE schedule (
        job             TEXT PRIMARY KEY,
        last_checked_ms INTEGER NOT NULL
    );",
    // 2: incremental chains (FORMAT.md v2.8): whether a session's archive is a full or an
    // incremental, and the parents it reads from (a JSON array of hex session ids, the
    // header's flat parent table, oldest first), which retention keeps with it. Every
    // archive written before chains existed is a full without parents.
    "ALTER TABLE sessions ADD COLUMN kind TEXT CHECK (kind IN ('full', 'incremental'));
    ALTER TABLE sessions ADD COLUMN parents TEXT;
    ALTER TABLE sessions ADD COLUMN full_reason TEXT;
    ALTER TABLE sessions ADD COLUMN files_unchanged INTEGER;
    ALTER TABLE sessions ADD COLUMN bytes_referenced INTEGER;
    UPDATE sessions SET kind = 'full', parents = '[]' WHERE archive IS NOT NULL;",
    // 3: scheduled verifies of the kept archives (`verify_schedule`).
    monitor::VERIFY_MIGRATION,
    // 4: copies of the archives to the jobs' `copy_to` targets.
    copies::COPY_MIGRATION,
    // 5: whether a scheduled verify was keyed (`verify_identity`).
    monitor::VERIFY_KEYED_MIGRATION,
];

/// The schema version this coffer writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// At most this many warning lines are stored per session (the count is always exact).
pub const MAX_STORED_WARNINGS: usize = 1000;

/// The state of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    Running,
    Succeeded,
    /// Finished with warnings: the archive is complete, but the files named are missing from
    /// it or changed while they were read.
    Warnings,
    Failed,
    /// Stopped by a signal, or its process died (found on a later start).
    Interrupted,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Running => "running",
            SessionState::Succeeded => "succeeded",
            SessionState::Warnings => "warnings",
            SessionState::Failed => "failed",
            SessionState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => SessionState::Running,
            "succeeded" => SessionState::Succeeded,
            "warnings" => SessionState::Warnings,
            "failed" => SessionState::Failed,
            "interrupted" => SessionState::Interrupted,
            _ => return None,
        })
    }

    /// Did the session leave a complete archive?
    pub fn completed(self) -> bool {
        matches!(self, SessionState::Succeeded | SessionState::Warnings)
    }

    /// Exit code of the command that ran it: 0 success, 1 warnings, 2 failed.
    pub fn exit_code(self) -> u8 {
        match self {
            SessionState::Succeeded => 0,
            SessionState::Warnings => 1,
            _ => 2,
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `coffer job run`.
    Manual,
    /// The daemon, at a scheduled time.
    Schedule,
    /// The daemon at start-up, for a scheduled time missed while it was down.
    CatchUp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
        }
    }
}

/// One session as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Catalog row number (what `history` shows as the session number).
    pub id: i64,
    pub job: String,
    pub state: SessionState,
    pub trigger: String,
    pub pid: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub destination: PathBuf,
    /// The archive's session id (hex), once the archive is complete.
    pub session_id: Option<String>,
    /// The archive, once complete.
    pub archive: Option<PathBuf>,
    pub files: Option<u64>,
    pub dirs: Option<u64>,
    pub symlinks: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    pub warning_count: u64,
    /// `path: message` lines (at most [`MAX_STORED_WARNINGS`]).
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// When retention deleted the archive (or found it gone).
    pub deleted_at_ms: Option<i64>,
    pub deleted_reason: Option<String>,
    /// Full or incremental, once the archive is complete (None for a session that left no
    /// archive).
    pub kind: Option<ChainKind>,
    /// The session ids (hex) of the archives this one reads from: its header's flat parent
    /// table, oldest first. Empty for a full.
    pub parents: Vec<String>,
    /// Why a session of an incremental job is a full (the writer's notice).
    pub full_reason: Option<String>,
    /// Files not read because they were unchanged since the last run (incrementals).
    pub files_unchanged: Option<u64>,
    /// Data bytes of this restore point held in parents rather than in this archive.
    pub bytes_referenced: Option<u64>,
}

impl SessionRow {
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished_at_ms.map(|f| (f - self.started_at_ms).max(0))
    }
}

fn parse_kind(s: &str) -> Option<ChainKind> {
    match s {
        "full" => Some(ChainKind::Full),
        "incremental" => Some(ChainKind::Incremental),
        _ => None,
    }
}

/// What a finished session produced, for [`Catalog::finish`].
#[derive(Clone, Debug, Default)]
pub struct Finish {
    pub session_id: Option<String>,
    pub archive: Option<PathBuf>,
    pub files: Option<u64>,
    pub dirs: Option<u64>,
    pub symlinks: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    pub warning_count: u64,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// The archive's place in its chain (from the backup's [`crate::chain::ChainReport`]).
    pub kind: Option<ChainKind>,
    pub parents: Vec<String>,
    pub full_reason: Option<String>,
    pub files_unchanged: Option<u64>,
    pub bytes_referenced: Option<u64>,
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

const COLUMNS: &str = "id, job, state, trigger, pid, started_at_ms, finished_at_ms, destination, \
     session_id, archive, files, dirs, symlinks, bytes_read, bytes_written, warning_count, \
     warnings, error, deleted_at_ms, deleted_reason, kind, parents, full_reason, \
     files_unchanged, bytes_referenced";

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    let state: String = r.get(2)?;
    let warnings: Option<String> = r.get(16)?;
    let kind: Option<String> = r.get(20)?;
    let parents: Option<String> = r.get(21)?;
    Ok(SessionRow {
        id: r.get(0)?,
        job: r.get(1)?,
        state: SessionState::parse(&state).unwrap_or(SessionState::Failed),
        trigger: r.get(3)?,
        pid: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
        started_at_ms: r.get(5)?,
        finished_at_ms: r.get(6)?,
        destination: PathBuf::from(r.get::<_, String>(7)?),
        session_id: r.get(8)?,
        archive: r.get::<_, Option<String>>(9)?.map(PathBuf::from),
        files: opt_u64(r.get(10)?),
        dirs: opt_u64(r.get(11)?),
        symlinks: opt_u64(r.get(12)?),
        bytes_read: opt_u64(r.get(13)?),
        bytes_written: opt_u64(r.get(14)?),
        warning_count: opt_u64(r.get(15)?).unwrap_or(0),
        warnings: warnings
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
        error: r.get(17)?,
        deleted_at_ms: r.get(18)?,
        deleted_reason: r.get(19)?,
        kind: kind.as_deref().and_then(parse_kind),
        parents: parents
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        full_reason: r.get(22)?,
        files_unchanged: opt_u64(r.get(23)?),
        bytes_referenced: opt_u64(r.get(24)?),
    })
}

/// Create the catalog file, mode 0600, if it is missing. SQLite would create it 0666 less
/// the umask (so 0644), readable by everyone when the state folder is one that already
/// existed with an open mode; the catalog names files and archives. An empty file is an
/// empty database to SQLite, and SQLite gives its -wal and -shm files the database's mode.
fn create_private(path: &Path) -> JobResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(JobError::io(path, e)),
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Catalog {
    /// Open (creating if needed) the catalog of a state folder.
    pub fn open(state: &StateDir) -> JobResult<Self> {
        state.create()?;
        Self::open_path(&state.catalog_path())
    }

    /// Open (creating if needed) the catalog at `path` and migrate it to [`SCHEMA_VERSION`].
    pub fn open_path(path: &Path) -> JobResult<Self> {
        let err = |e| JobError::catalog(path, e);
        create_private(path)?;
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        debug_assert!(mode.eq_ignore_ascii_case("wal") || mode == "memory");
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        migrate(&mut conn, path)?;
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The incremental chains' state of the same state folder (`chains.sqlite`, next to
    /// the catalog).
    pub fn chains_path(&self) -> PathBuf {
        self.path.with_file_name(CHAINS_FILE)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> JobError + '_ {
        move |e| JobError::catalog(&self.path, e)
    }

    /// The schema version of the open catalog.
    pub fn schema_version(&self) -> JobResult<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err())
    }

    /// Record a new running session of `job` by this process, started at `started_at_ms`;
    /// returns its row id.
    pub fn begin(
        &self,
        job: &str,
        trigger: Trigger,
        destination: &Path,
        started_at_ms: i64,
    ) -> JobResult<i64> {
        self.conn
            .execute(
                "INSERT INTO sessions (job, state, trigger, pid, started_at_ms, destination)
                 VALUES (?1, 'running', ?2, ?3, ?4, ?5)",
                params![
                    job,
                    trigger.as_str(),
                    std::process::id() as i64,
                    started_at_ms,
                    path_text(destination)
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record how a running session ended. Returns false if it was no longer running
    /// (e.g. already marked interrupted).
    pub fn finish(&self, id: i64, state: SessionState, f: &Finish) -> JobResult<bool> {
        let warnings = if f.warnings.is_empty() {
            None
        } else {
            let kept = &f.warnings[..f.warnings.len().min(MAX_STORED_WARNINGS)];
            Some(serde_json::to_string(kept).expect("strings always serialize"))
        };
        let parents = serde_json::to_string(&f.parents).expect("strings always serialize");
        let n = self
            .conn
            .execute(
                "UPDATE sessions SET state = ?2, finished_at_ms = ?3, session_id = ?4,
                     archive = ?5, files = ?6, dirs = ?7, symlinks = ?8, bytes_read = ?9,
                     bytes_written = ?10, warning_count = ?11, warnings = ?12, error = ?13,
                     kind = ?14, parents = ?15, full_reason = ?16, files_unchanged = ?17,
                     bytes_referenced = ?18
                 WHERE id = ?1 AND state = 'running'",
                params![
                    id,
                    state.as_str(),
                    now_ms(),
                    f.session_id,
                    f.archive.as_deref().map(path_text),
                    f.files.map(|v| v as i64),
                    f.dirs.map(|v| v as i64),
                    f.symlinks.map(|v| v as i64),
                    f.bytes_read.map(|v| v as i64),
                    f.bytes_written.map(|v| v as i64),
                    f.warning_count as i64,
                    warnings,
                    f.error,
                    f.kind.map(ChainKind::as_str),
                    f.kind.map(|_| parents),
                    f.full_reason,
                    f.files_unchanged.map(|v| v as i64),
                    f.bytes_referenced.map(|v| v as i64),
                ],
            )
            .map_err(self.err())?;
        Ok(n == 1)
    }

    /// Mark a running session interrupted. Returns false if it was not running.
    pub fn mark_interrupted(&self, id: i64, reason: &str) -> JobResult<bool> {
        self.finish(
            id,
            SessionState::Interrupted,
            &Finish {
                error: Some(reason.to_string()),
                ..Finish::default()
            },
        )
    }

    /// One session by row id.
    pub fn get(&self, id: i64) -> JobResult<Option<SessionRow>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                read_row,
            )
            .optional()
            .map_err(self.err())
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> JobResult<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params, read_row)
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Sessions recorded as running (some may belong to dead processes).
    pub fn running(&self) -> JobResult<Vec<SessionRow>> {
        self.query(
            &format!("SELECT {COLUMNS} FROM sessions WHERE state = 'running' ORDER BY id"),
            [],
        )
    }

    /// Sessions, newest first, of one job or all; at most `limit` if given.
    pub fn sessions(&self, job: Option<&str>, limit: Option<usize>) -> JobResult<Vec<SessionRow>> {
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64).unwrap_or(-1);
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sessions WHERE (?1 IS NULL OR job = ?1)
                 ORDER BY started_at_ms DESC, id DESC LIMIT ?2"
            ),
            params![job, limit],
        )
    }

    /// The latest session of `job`.
    pub fn last_session(&self, job: &str) -> JobResult<Option<SessionRow>> {
        Ok(self.sessions(Some(job), Some(1))?.into_iter().next())
    }

    /// Sessions of `job` that left a complete archive not yet deleted, newest first.
    pub fn good_archives(&self, job: &str) -> JobResult<Vec<SessionRow>> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sessions
                 WHERE job = ?1 AND state IN ('succeeded', 'warnings')
                   AND archive IS NOT NULL AND deleted_at_ms IS NULL
                 ORDER BY started_at_ms DESC, id DESC"
            ),
            [job],
        )
    }

    /// When the latest full of `job` that completed started (deleted since or not): an
    /// `active_full` schedule that fired after it makes the next session a full.
    pub fn last_full_ms(&self, job: &str) -> JobResult<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MAX(started_at_ms) FROM sessions
                 WHERE job = ?1 AND kind = 'full' AND state IN ('succeeded', 'warnings')",
                [job],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Note that a session's archive was deleted (by retention, or found missing).
    pub fn mark_deleted(&self, id: i64, reason: &str) -> JobResult<()> {
        self.conn
            .execute(
                "UPDATE sessions SET deleted_at_ms = ?2, deleted_reason = ?3 WHERE id = ?1",
                params![id, now_ms(), reason],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// When the scheduler last evaluated `job`'s schedule.
    pub fn last_checked(&self, job: &str) -> JobResult<Option<i64>> {
        self.conn
            .query_row(
                "SELECT last_checked_ms FROM schedule WHERE job = ?1",
                [job],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    pub fn set_last_checked(&self, job: &str, at_ms: i64) -> JobResult<()> {
        self.conn
            .execute(
                "INSERT INTO schedule (job, last_checked_ms) VALUES (?1, ?2)
                 ON CONFLICT (job) DO UPDATE SET last_checked_ms = excluded.last_checked_ms",
                params![job, at_ms],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> JobResult<()> {
    let err = |e| JobError::catalog(path, e);
    // IMMEDIATE: two processes opening a new catalog at once migrate one after the other.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(JobError::CatalogVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for sql in &MIGRATIONS[version.max(0) as usize..] {
        tx.execute_batch(sql).map_err(err)?;
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Milliseconds since the Unix epoch, now (the catalog's unit of time).
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

mod copies;
mod monitor;
pub use copies::{CopyOutcome, CopyRow};
pub use monitor::VerifyRun;

#[cfg(test)]
mod tests;
