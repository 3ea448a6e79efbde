//! The catalog side of backup copy jobs (`copy_to`, see [`crate::job::copies`]): one row
//! per archive copied to a target, per copy that failed, and per copy that copy retention
//! deleted from its target. What a target holds is known from these rows, so copy
//! retention never has to list a target.

use rusqlite::{OptionalExtension, Row, params};
use std::path::{Path, PathBuf};

use super::{COLUMNS, Catalog, SessionRow, SessionState, path_text, read_row};
use crate::job::error::JobResult;

/// Migration 4: copies of a job's archives to its `copy_to` targets. `session` is the
/// session after which the copies ran (NULL when `copy_schedule` ran them);
/// `archive_session` is the session whose archive was copied (NULL when the target itself
/// could not be used, so no archive was tried).
pub(super) const COPY_MIGRATION: &str = "CREATE TABLE copies (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        job             TEXT    NOT NULL,
        session         INTEGER,
        target          TEXT    NOT NULL,
        archive         TEXT,
        archive_session INTEGER,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER NOT NULL,
        outcome         TEXT    NOT NULL CHECK (outcome IN ('copied', 'failed', 'deleted')),
        bytes           INTEGER NOT NULL DEFAULT 0,
        error           TEXT
    );
    CREATE INDEX copies_by_target ON copies (job, target, id);
    CREATE INDEX copies_by_archive ON copies (archive_session);";

/// What happened to one archive at one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Checked and written to the target.
    Copied,
    /// Not copied: the target was down or refused it, or the source is damaged.
    Failed,
    /// Deleted from the target by `copy_retention`.
    Deleted,
}

impl CopyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyOutcome::Copied => "copied",
            CopyOutcome::Failed => "failed",
            CopyOutcome::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "copied" => CopyOutcome::Copied,
            "deleted" => CopyOutcome::Deleted,
            _ => CopyOutcome::Failed,
        }
    }
}

/// One recorded copy (or copy deletion) at a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRow {
    /// Row id (ignored by [`Catalog::record_copy`]).
    pub id: i64,
    pub job: String,
    /// The session after which the copies ran; None when `copy_schedule` ran them.
    pub session: Option<i64>,
    pub target: PathBuf,
    /// The source archive; None when the target could not be used at all.
    pub archive: Option<PathBuf>,
    /// The session whose archive this is.
    pub archive_session: Option<i64>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub outcome: CopyOutcome,
    /// Bytes written to the target (0 unless copied).
    pub bytes: u64,
    pub error: Option<String>,
}

const COPY_COLUMNS: &str = "id, job, session, target, archive, archive_session, started_at_ms, \
     finished_at_ms, outcome, bytes, error";

fn read_copy(r: &Row<'_>) -> rusqlite::Result<CopyRow> {
    Ok(CopyRow {
        id: r.get(0)?,
        job: r.get(1)?,
        session: r.get(2)?,
        target: PathBuf::from(r.get::<_, String>(3)?),
        archive: r.get::<_, Option<String>>(4)?.map(PathBuf::from),
        archive_session: r.get(5)?,
        started_at_ms: r.get(6)?,
        finished_at_ms: r.get(7)?,
        outcome: CopyOutcome::parse(&r.get::<_, String>(8)?),
        bytes: r.get::<_, i64>(9)?.max(0) as u64,
        error: r.get(10)?,
    })
}

impl Catalog {
    /// Record one copy row; returns its id.
    pub fn record_copy(&self, c: &CopyRow) -> JobResult<i64> {
        self.conn
            .execute(
                "INSERT INTO copies (job, session, target, archive, archive_session,
                     started_at_ms, finished_at_ms, outcome, bytes, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    c.job,
                    c.session,
                    path_text(&c.target),
                    c.archive.as_deref().map(path_text),
                    c.archive_session,
                    c.started_at_ms,
                    c.finished_at_ms,
                    c.outcome.as_str(),
                    c.bytes.min(i64::MAX as u64) as i64,
                    c.error,
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    fn copy_query(&self, sql: &str, params: impl rusqlite::Params) -> JobResult<Vec<CopyRow>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params, read_copy)
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The copy rows about session `id` (what `history` shows with it): the copies and
    /// deletions of its archive, and a failure of a whole target after it.
    pub fn copies_of(&self, id: i64) -> JobResult<Vec<CopyRow>> {
        self.copy_query(
            &format!(
                "SELECT {COPY_COLUMNS} FROM copies
                 WHERE archive_session = ?1 OR (archive_session IS NULL AND session = ?1)
                 ORDER BY id"
            ),
            [id],
        )
    }

    /// The latest copy or failed copy at each of `job`'s targets (deletions left out),
    /// by target: what `status` shows.
    pub fn last_copies(&self, job: &str) -> JobResult<Vec<CopyRow>> {
        self.copy_query(
            &format!(
                "SELECT {COPY_COLUMNS} FROM copies WHERE id IN (
                     SELECT MAX(id) FROM copies WHERE job = ?1 AND outcome != 'deleted'
                     GROUP BY target)
                 ORDER BY target"
            ),
            [job],
        )
    }

    /// The sessions of `job` whose archive was copied to `target` and not deleted there
    /// since, each with when the latest copy finished.
    pub fn held_copies(&self, job: &str, target: &Path) -> JobResult<Vec<(i64, i64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT archive_session, finished_at_ms, outcome FROM copies
                 WHERE id IN (SELECT MAX(id) FROM copies
                              WHERE job = ?1 AND target = ?2 AND archive_session IS NOT NULL
                                AND outcome IN ('copied', 'deleted')
                              GROUP BY archive_session)",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![job, path_text(target)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, o)| o == "copied")
            .map(|(s, t, _)| (s, t))
            .collect())
    }

    /// Every session of `job` that left a complete archive, deleted since or not, newest
    /// first: what a copy target may still hold.
    pub fn completed_archives(&self, job: &str) -> JobResult<Vec<SessionRow>> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM sessions
                 WHERE job = ?1 AND state IN ('succeeded', 'warnings') AND archive IS NOT NULL
                 ORDER BY started_at_ms DESC, id DESC"
            ),
            [job],
        )
    }

    /// Add `lines` to the warnings of finished session `id`; a session that succeeded
    /// becomes one with warnings (its copies did not all reach their targets). Returns
    /// the row as it is now.
    pub fn add_warnings(&self, id: i64, lines: &[String]) -> JobResult<Option<SessionRow>> {
        let Some(row) = self.get(id)? else {
            return Ok(None);
        };
        if lines.is_empty() || !row.state.completed() {
            return Ok(Some(row));
        }
        let mut warnings = row.warnings.clone();
        let room = super::MAX_STORED_WARNINGS.saturating_sub(warnings.len());
        warnings.extend(lines.iter().take(room).cloned());
        let text = serde_json::to_string(&warnings).expect("strings always serialize");
        self.conn
            .execute(
                "UPDATE sessions SET state = ?2, warning_count = warning_count + ?3,
                     warnings = ?4 WHERE id = ?1",
                params![
                    id,
                    SessionState::Warnings.as_str(),
                    lines.len() as i64,
                    text
                ],
            )
            .map_err(self.err())?;
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
                read_row,
            )
            .optional()
            .map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StateDir;
    use crate::job::catalog::{Finish, Trigger};

    fn copy(session: i64, target: &str, outcome: CopyOutcome) -> CopyRow {
        CopyRow {
            id: 0,
            job: "home".into(),
            session: Some(session),
            target: target.into(),
            archive: Some(format!("/b/{session}.coffer").into()),
            archive_session: Some(session),
            started_at_ms: 10 * session,
            finished_at_ms: 10 * session + 5,
            outcome,
            bytes: 100,
            error: (outcome == CopyOutcome::Failed).then(|| "down".into()),
        }
    }

    #[test]
    fn held_copies_follow_the_latest_copy_or_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&StateDir::new(dir.path().join("s"))).unwrap();
        for (s, t, o) in [
            (1, "/usb", CopyOutcome::Copied),
            (2, "/usb", CopyOutcome::Failed),
            (2, "/usb", CopyOutcome::Copied),
            (3, "/usb", CopyOutcome::Copied),
            (1, "/usb", CopyOutcome::Deleted),
            (1, "/nas", CopyOutcome::Copied),
            (3, "/nas", CopyOutcome::Failed),
        ] {
            c.record_copy(&copy(s, t, o)).unwrap();
        }
        let mut held = c.held_copies("home", Path::new("/usb")).unwrap();
        held.sort();
        assert_eq!(held, [(2, 25), (3, 35)]);
        let last = c.last_copies("home").unwrap();
        let last: Vec<(&str, CopyOutcome)> = last
            .iter()
            .map(|r| (r.target.to_str().unwrap(), r.outcome))
            .collect();
        assert_eq!(
            last,
            [("/nas", CopyOutcome::Failed), ("/usb", CopyOutcome::Copied)]
        );
        assert_eq!(c.copies_of(1).unwrap().len(), 3);
    }

    #[test]
    fn copy_warnings_turn_a_success_into_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&StateDir::new(dir.path().join("s"))).unwrap();
        let id = c
            .begin("home", Trigger::Manual, Path::new("/b"), 1)
            .unwrap();
        let done = Finish {
            archive: Some("/b/a.coffer".into()),
            ..Finish::default()
        };
        c.finish(id, SessionState::Succeeded, &done).unwrap();
        let row = c
            .add_warnings(id, &["copy to /usb: down".into()])
            .unwrap()
            .unwrap();
        assert_eq!(row.state, SessionState::Warnings);
        assert_eq!(row.warning_count, 1);
        assert_eq!(row.warnings, ["copy to /usb: down"]);
    }
}
