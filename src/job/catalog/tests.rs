//! Unit tests of the session catalog: creation (mode, WAL), migrations, refusing a newer
//! catalog, session rows and the chain columns.

use super::*;

#[test]
fn new_catalog_is_at_the_current_version_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
    let mode: String = c
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(c);
    // Reopening does not migrate again.
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn regression_catalog_created_0600() {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    // A state folder that already exists, made with an open mode.
    let state = dir.path().join("state");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&state)
        .unwrap();
    let c = Catalog::open(&StateDir::new(&state)).unwrap();
    c.begin("home", Trigger::Manual, Path::new("/dest"), 1)
        .unwrap();
    let mode =
        |name: &str| std::fs::metadata(state.join(name)).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode("catalog.sqlite").unwrap(), 0o600);
    // While the catalog is open in WAL mode, SQLite's side files exist: same mode.
    assert_eq!(mode("catalog.sqlite-wal").unwrap(), 0o600);
    assert_eq!(mode("catalog.sqlite-shm").unwrap(), 0o600);
}

#[test]
fn catalog_from_a_newer_coffer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match Catalog::open_path(&path) {
        Err(JobError::CatalogVersion { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
        other => panic!("expected a version error, got {:?}", other.err()),
    }
}

#[test]
fn finish_only_changes_running_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    let id = c
        .begin("home", Trigger::Manual, Path::new("/d"), 1)
        .unwrap();
    assert_eq!(c.running().unwrap().len(), 1);
    assert!(c.mark_interrupted(id, "stopped").unwrap());
    assert!(
        !c.finish(id, SessionState::Succeeded, &Finish::default())
            .unwrap()
    );
    let row = c.get(id).unwrap().unwrap();
    assert_eq!(row.state, SessionState::Interrupted);
    assert_eq!(row.error.as_deref(), Some("stopped"));
    assert!(c.running().unwrap().is_empty());
}

#[test]
fn warnings_round_trip_and_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    let id = c
        .begin("home", Trigger::Schedule, Path::new("/d"), 1)
        .unwrap();
    let warnings: Vec<String> = (0..MAX_STORED_WARNINGS + 5)
        .map(|i| format!("f{i}: gone"))
        .collect();
    c.finish(
        id,
        SessionState::Warnings,
        &Finish {
            archive: Some("/d/a.coffer".into()),
            warning_count: warnings.len() as u64,
            warnings,
            ..Finish::default()
        },
    )
    .unwrap();
    let row = c.get(id).unwrap().unwrap();
    assert_eq!(row.warning_count as usize, MAX_STORED_WARNINGS + 5);
    assert_eq!(row.warnings.len(), MAX_STORED_WARNINGS);
    assert_eq!(row.warnings[0], "f0: gone");
    assert_eq!(c.good_archives("home").unwrap().len(), 1);
    c.mark_deleted(id, "retention").unwrap();
    assert!(c.good_archives("home").unwrap().is_empty());
}

#[test]
fn version_1_catalog_migrates_its_archives_to_fulls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute_batch(
        "INSERT INTO sessions (job, state, trigger, pid, started_at_ms, destination, archive)
             VALUES ('home', 'succeeded', 'manual', 1, 5, '/d', '/d/a.coffer');
         INSERT INTO sessions (job, state, trigger, pid, started_at_ms, destination)
             VALUES ('home', 'failed', 'manual', 1, 6, '/d');",
    )
    .unwrap();
    drop(conn);
    let c = Catalog::open_path(&path).unwrap();
    assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
    let rows = c.sessions(Some("home"), None).unwrap();
    assert_eq!(rows[0].kind, None, "a failed session left no archive");
    assert_eq!(rows[1].kind, Some(ChainKind::Full));
    assert!(rows[1].parents.is_empty());
    assert_eq!(c.last_full_ms("home").unwrap(), Some(5));
}

#[test]
fn chain_fields_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    let full = c
        .begin("home", Trigger::Manual, Path::new("/d"), 1)
        .unwrap();
    c.finish(
        full,
        SessionState::Succeeded,
        &Finish {
            archive: Some("/d/a.coffer".into()),
            kind: Some(ChainKind::Full),
            full_reason: Some("no chain state yet".into()),
            ..Finish::default()
        },
    )
    .unwrap();
    let incr = c
        .begin("home", Trigger::Manual, Path::new("/d"), 2)
        .unwrap();
    c.finish(
        incr,
        SessionState::Succeeded,
        &Finish {
            archive: Some("/d/b.coffer".into()),
            kind: Some(ChainKind::Incremental),
            parents: vec!["aa".repeat(16)],
            files_unchanged: Some(3),
            bytes_referenced: Some(4096),
            ..Finish::default()
        },
    )
    .unwrap();
    let row = c.get(incr).unwrap().unwrap();
    assert_eq!(row.kind, Some(ChainKind::Incremental));
    assert_eq!(row.parents, ["aa".repeat(16)]);
    assert_eq!(
        (row.files_unchanged, row.bytes_referenced),
        (Some(3), Some(4096))
    );
    let row = c.get(full).unwrap().unwrap();
    assert_eq!(row.full_reason.as_deref(), Some("no chain state yet"));
    // The last full is the full's start, not the incremental's.
    assert_eq!(c.last_full_ms("home").unwrap(), Some(1));
    assert_eq!(c.chains_path(), dir.path().join("chains.sqlite"));
}

#[test]
fn schedule_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&StateDir::new(dir.path())).unwrap();
    assert_eq!(c.last_checked("home").unwrap(), None);
    c.set_last_checked("home", 5).unwrap();
    c.set_last_checked("home", 7).unwrap();
    assert_eq!(c.last_checked("home").unwrap(), Some(7));
}
