//! The catalog queries behind `status` and `metrics`: the latest finished session, the
//! latest success and how many restore points a job keeps. Kept apart from the session
//! bookkeeping in `catalog.rs`, which they only read.

use rusqlite::{OptionalExtension, params};

use super::{COLUMNS, Catalog, SessionRow, read_row};
use crate::job::error::JobResult;

impl Catalog {
    /// The latest session of `job` that ended (any state but `running`).
    pub fn last_finished(&self, job: &str) -> JobResult<Option<SessionRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM sessions WHERE job = ?1 AND state != 'running'
                     ORDER BY started_at_ms DESC, id DESC LIMIT 1"
                ),
                [job],
                read_row,
            )
            .optional()
            .map_err(self.err())
    }

    /// The latest session of `job` that left a complete archive (`succeeded` or
    /// `warnings`), deleted since or not: what "last success" means to monitoring.
    pub fn last_success(&self, job: &str) -> JobResult<Option<SessionRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM sessions
                     WHERE job = ?1 AND state IN ('succeeded', 'warnings')
                     ORDER BY started_at_ms DESC, id DESC LIMIT 1"
                ),
                [job],
                read_row,
            )
            .optional()
            .map_err(self.err())
    }

    /// A session of `job` recorded as running, if any (the newest).
    pub fn running_session(&self, job: &str) -> JobResult<Option<SessionRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM sessions WHERE job = ?1 AND state = 'running'
                     ORDER BY started_at_ms DESC, id DESC LIMIT 1"
                ),
                params![job],
                read_row,
            )
            .optional()
            .map_err(self.err())
    }

    /// How many restore points `job` keeps: complete archives not deleted (the rows of
    /// [`Catalog::good_archives`], counted without reading them).
    pub fn restore_points(&self, job: &str) -> JobResult<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sessions
                 WHERE job = ?1 AND state IN ('succeeded', 'warnings')
                   AND archive IS NOT NULL AND deleted_at_ms IS NULL",
                [job],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(n.max(0) as u64)
    }
}

/// Migration 3: scheduled verifies (`verify_schedule`), one row per completed run over a
/// job's kept archives. `details` is a JSON array of `archive: problem` lines (at most
/// [`super::MAX_STORED_WARNINGS`]); the counts are always exact.
pub(super) const VERIFY_MIGRATION: &str = "CREATE TABLE verifies (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        job             TEXT    NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER NOT NULL,
        archives        INTEGER NOT NULL,
        bytes           INTEGER NOT NULL,
        damaged         INTEGER NOT NULL,
        details         TEXT
    );
    CREATE INDEX verifies_by_job ON verifies (job, started_at_ms);";

/// Migration 4 (ops branch; renumber if another lands first): `keyed` is 1 for a verify
/// made with the job's `verify_identity` (every block's MAC and every file's content hash
/// checked), 0 for a keyless one (checksums only). Verifies before it were keyless.
pub(super) const VERIFY_KEYED_MIGRATION: &str =
    "ALTER TABLE verifies ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0;";

/// One completed verify of a job's kept archives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRun {
    pub id: i64,
    pub job: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Archives checked.
    pub archives: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Archives with a problem (damaged, unreadable or gone).
    pub damaged: u64,
    /// `archive: problem` lines.
    pub details: Vec<String>,
    /// Made with a key (`verify_identity`): MACs and content hashes checked, not only
    /// checksums.
    pub keyed: bool,
}

impl VerifyRun {
    pub fn ok(&self) -> bool {
        self.damaged == 0
    }

    /// One line: `3 archive(s) checked, 1 damaged (home-...coffer: block 7: checksum mismatch)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} archive(s) checked{}, {} damaged",
            self.archives,
            if self.keyed { " with a key" } else { "" },
            self.damaged
        );
        if let Some(first) = self.details.first() {
            s.push_str(&format!(" ({first})"));
        }
        s
    }
}

impl Catalog {
    /// Record a completed verify of `job`'s archives; returns its row id.
    pub fn record_verify(&self, run: &VerifyRun) -> JobResult<i64> {
        let details = if run.details.is_empty() {
            None
        } else {
            let kept = &run.details[..run.details.len().min(super::MAX_STORED_WARNINGS)];
            Some(serde_json::to_string(kept).expect("strings always serialize"))
        };
        self.conn
            .execute(
                "INSERT INTO verifies (job, started_at_ms, finished_at_ms, archives, bytes,
                     damaged, details, keyed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run.job,
                    run.started_at_ms,
                    run.finished_at_ms,
                    run.archives as i64,
                    run.bytes as i64,
                    run.damaged as i64,
                    details,
                    run.keyed
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The latest completed verify of `job`.
    pub fn last_verify(&self, job: &str) -> JobResult<Option<VerifyRun>> {
        self.conn
            .query_row(
                "SELECT id, job, started_at_ms, finished_at_ms, archives, bytes, damaged, details,
                        keyed
                 FROM verifies WHERE job = ?1 ORDER BY started_at_ms DESC, id DESC LIMIT 1",
                [job],
                |r| {
                    let details: Option<String> = r.get(7)?;
                    Ok(VerifyRun {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        started_at_ms: r.get(2)?,
                        finished_at_ms: r.get(3)?,
                        archives: r.get::<_, i64>(4)?.max(0) as u64,
                        bytes: r.get::<_, i64>(5)?.max(0) as u64,
                        damaged: r.get::<_, i64>(6)?.max(0) as u64,
                        details: details
                            .and_then(|d| serde_json::from_str(&d).ok())
                            .unwrap_or_default(),
                        keyed: r.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Trigger;
    use super::*;
    use crate::job::StateDir;
    use crate::job::catalog::{Finish, SessionState};
    use std::path::Path;

    #[test]
    fn monitoring_queries_pick_the_right_rows() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
        let ok = c
            .begin("home", Trigger::Manual, Path::new("/d"), 1000)
            .unwrap();
        let f = Finish {
            archive: Some("/d/a.coffer".into()),
            ..Finish::default()
        };
        c.finish(ok, SessionState::Succeeded, &f).unwrap();
        let bad = c
            .begin("home", Trigger::Manual, Path::new("/d"), 2000)
            .unwrap();
        c.finish(bad, SessionState::Failed, &Finish::default())
            .unwrap();
        let run = c
            .begin("home", Trigger::Manual, Path::new("/d"), 3000)
            .unwrap();
        c.begin("other", Trigger::Manual, Path::new("/e"), 4000)
            .unwrap();
        assert_eq!(c.last_finished("home").unwrap().unwrap().id, bad);
        assert_eq!(c.last_success("home").unwrap().unwrap().id, ok);
        assert_eq!(c.running_session("home").unwrap().unwrap().id, run);
        assert_eq!(c.restore_points("home").unwrap(), 1);
        c.mark_deleted(ok, "pruned").unwrap();
        assert_eq!(c.restore_points("home").unwrap(), 0);
        assert_eq!(c.last_success("home").unwrap().unwrap().id, ok);
        assert!(c.last_success("other").unwrap().is_none());
    }

    #[test]
    fn verifies_are_recorded_and_the_latest_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
        assert!(c.last_verify("home").unwrap().is_none());
        let mut run = VerifyRun {
            id: 0,
            job: "home".into(),
            started_at_ms: 10,
            finished_at_ms: 20,
            archives: 3,
            bytes: 300,
            damaged: 0,
            details: Vec::new(),
            keyed: false,
        };
        c.record_verify(&run).unwrap();
        assert!(!c.last_verify("home").unwrap().unwrap().keyed);
        run.started_at_ms = 30;
        run.damaged = 1;
        run.details = vec!["a.coffer: block 1: checksum mismatch".into()];
        run.keyed = true;
        let id = c.record_verify(&run).unwrap();
        let last = c.last_verify("home").unwrap().unwrap();
        assert_eq!(last, VerifyRun { id, ..run });
        assert!(!last.ok());
        assert_eq!(
            last.summary(),
            "3 archive(s) checked with a key, 1 damaged (a.coffer: block 1: checksum mismatch)"
        );
    }
}
