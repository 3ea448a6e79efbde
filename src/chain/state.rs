//! The chain state on the backup host (FORMAT.md v2.8.4): one SQLite file
//! (`chains.sqlite`, mode 0600) holding, per job, the chain's parameters, its archives
//! (session id, file name, stream length, commitment, the archives each one's files
//! reference) and, per file of the newest restore point, what the next run needs to skip
//! it or reuse its unchanged windows: stat fields, content hash, window hashes, data
//! ranges and extents. No secret: nothing here unwraps, decrypts, MACs or signs.
//!
//! **Atomicity.** A run changes the state inside one SQLite transaction that it commits
//! only after its archive is durable ([`ChainState::complete`]); a run that fails or is
//! killed leaves the state as the last complete run left it (SQLite rolls the transaction
//! back). So the state is never ahead of storage.
//!
//! **Reading the last run's files.** The walk meets paths in path order, and the file
//! rows are keyed so that SQLite's byte order is path order (`/` stored as 0x00): the run
//! merges the two in one pass ([`ChainState::advance`]), reading rows a page at a time
//! through a second connection whose read transaction pins the state as it was when the
//! run began. Memory stays flat in file count.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::writer::StateWriter;
use crate::error::{Error, Result};
use crate::format::v2::DataRange;
use crate::keys::SessionId;

/// Schema version (`PRAGMA user_version`); a state with another version is not used.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
    CREATE TABLE chain (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL UNIQUE,
        host        TEXT NOT NULL,
        destination TEXT NOT NULL,
        params      TEXT NOT NULL
    );
    CREATE TABLE archive (
        chain       INTEGER NOT NULL,
        position    INTEGER NOT NULL,
        session_id  BLOB NOT NULL,
        file_name   TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        stream_len  INTEGER NOT NULL,
        commitment  BLOB NOT NULL,
        refs        BLOB NOT NULL,
        PRIMARY KEY (chain, position)
    ) WITHOUT ROWID;
    CREATE TABLE file (
        chain    INTEGER NOT NULL,
        key      BLOB NOT NULL,
        dev      INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        mtime    INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime    INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        hash     BLOB NOT NULL,
        fkey     INTEGER NOT NULL,
        data     BLOB NOT NULL,
        PRIMARY KEY (chain, key)
    ) WITHOUT ROWID;
    CREATE INDEX file_fkey ON file (fkey);
";

/// Rows read per page of the merge with the walk.
const PAGE: i64 = 512;

/// Archives per chain (the header's parent table holds at most 256).
pub(crate) const MAX_CHAIN: u32 = 256;

/// Who a run is: a chain continues only when all of it matches the chain's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunIdentity {
    pub job: String,
    pub host: String,
    /// The folder or S3 prefix the archive goes to.
    pub destination: String,
    /// Format version, recipients, block and segment size, compression, content hash
    /// and signer, as one canonical string.
    pub params: String,
}

/// An earlier archive of the chain.
#[derive(Clone, Debug)]
pub(crate) struct ArchiveRow {
    pub position: u32,
    pub session_id: SessionId,
    pub file_name: String,
    pub stream_len: u64,
    pub commitment: [u8; 32],
    /// Positions of the archives its files' extents reference (itself included).
    pub refs: Vec<u32>,
}

/// Where a piece of a file's data bytes is: archive `position` of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateExtent {
    pub position: u32,
    pub offset: u64,
    pub len: u64,
}

/// What the state knows of one file of the last restore point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileRow {
    /// The archive path with `/` as 0x00 (path order = byte order).
    pub key: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub hash: [u8; 32],
    pub data: FileData,
}

/// The variable part of a file row, one postcard blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct FileData {
    pub ranges: Option<Vec<DataRange>>,
    pub extents: Vec<StateExtent>,
    /// Window hashes (FORMAT.md v2.4) when the data has more than one window; `None` for
    /// one window (its hash is the content hash) or when there were too many to keep.
    pub windows: Option<Vec<[u8; 32]>>,
    /// The file's extended attributes as the run read them, so an unchanged file's are
    /// not listed again (any change to them changes the ctime); `None` when the run did
    /// not read attributes (`--no-xattrs`).
    pub xattrs: Option<Vec<crate::format::v2::Xattr>>,
}

impl FileRow {
    pub fn data_len(&self) -> u64 {
        self.data.extents.iter().map(|x| x.len).sum()
    }

    /// Hash of window 0: the key a copy or rename is looked up by.
    pub fn first_window(&self) -> [u8; 32] {
        match &self.data.windows {
            Some(w) if !w.is_empty() => w[0],
            _ => self.hash,
        }
    }
}

/// The lookup key of a first-window hash.
pub(super) fn fkey(first_window: &[u8; 32]) -> i64 {
    i64::from_le_bytes(first_window[..8].try_into().unwrap())
}

/// A path as a file row's key.
pub(crate) fn path_key(path: &[u8]) -> Vec<u8> {
    path.iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

/// What [`ChainState::begin`] decided.
pub(crate) struct Decision {
    /// `None`: an incremental; `Some(reason)`: a full, and why.
    pub full_reason: Option<String>,
    /// This run's position in the chain (0 for a full).
    pub position: u32,
    /// The archives this run may reference, oldest first: the header's parent table.
    pub parents: Vec<ArchiveRow>,
}

/// The state of one job's chain, open for one run.
pub(crate) struct ChainState {
    path: PathBuf,
    /// The run's connection while [`ChainState::begin`] decides; then the writer's.
    conn: Option<Connection>,
    writer: Option<StateWriter>,
    /// The snapshot the merge reads (incrementals only).
    reader: Option<Connection>,
    chain: i64,
    page: VecDeque<FileRow>,
    /// The last key read into `page`; `None` before the first page.
    read_to: Option<Vec<u8>>,
    exhausted: bool,
    /// The key of the last row the merge matched to a path of the walk: a `put` of that
    /// key replaces a row of the last restore point.
    met: Option<Vec<u8>>,
}

/// The archive a run wrote, recorded by [`ChainState::complete`].
pub(crate) struct Completed {
    pub position: u32,
    pub session_id: SessionId,
    pub file_name: String,
    pub created_at: i64,
    pub stream_len: u64,
    pub commitment: [u8; 32],
    pub refs: Vec<u32>,
}

impl ChainState {
    /// Open the state at `path` for a run of `who`, decide full or incremental, and begin
    /// the run's transaction. `forced`: a full the caller asked for; `full_every`: chain
    /// length; `archive_exists`: whether an earlier archive is still where it was written
    /// (`None` when that cannot be known without reading the destination).
    pub fn begin(
        path: &Path,
        who: &RunIdentity,
        forced: Option<&str>,
        full_every: Option<u32>,
        archive_exists: &dyn Fn(&str) -> Option<bool>,
    ) -> Result<(ChainState, Decision)> {
        let (conn, fresh) = open_state(path)?;
        let err = state_error(path);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
        let mut st = ChainState {
            path: path.to_path_buf(),
            conn: Some(conn),
            writer: None,
            reader: None,
            chain: 0,
            page: VecDeque::new(),
            read_to: None,
            exhausted: false,
            met: None,
        };
        let found = st.find_chain(who)?;
        let newest = match &found {
            Some((id, _)) => {
                st.chain = *id;
                st.newest(*id)?
            }
            None => None,
        };
        let parents = match &newest {
            Some(n) => st.parents_of(n)?,
            None => Vec::new(),
        };
        let reason = if let Some(reason) = fresh {
            Some(reason)
        } else if let Some(f) = forced {
            Some(f.to_string())
        } else {
            match (&found, &newest) {
                (None, _) => Some(format!(
                    "no earlier run of job {:?} in the chain state",
                    who.job
                )),
                (Some((_, mismatch)), _) if mismatch.is_some() => mismatch.clone(),
                (Some(_), None) => Some("the chain has no complete archive".into()),
                (Some(_), Some(n)) => {
                    continuation_problem(n, full_every, archive_exists).or_else(|| {
                        parents.iter().find_map(|p| {
                            (archive_exists(&p.file_name) == Some(false)).then(|| {
                                format!(
                                    "the chain's archive {} is no longer at the destination",
                                    p.file_name
                                )
                            })
                        })
                    })
                }
            }
        };
        let mut old_chain = None;
        let decision = match (reason, found, newest) {
            (None, Some(_), Some(newest)) => {
                // The reader's transaction starts with its first page: the state as the
                // last complete run left it, whatever this run writes.
                let reader = Connection::open(path).map_err(&err)?;
                reader.busy_timeout(Duration::from_secs(30)).map_err(&err)?;
                reader.execute_batch("BEGIN").map_err(&err)?;
                st.reader = Some(reader);
                Decision {
                    full_reason: None,
                    position: newest.position + 1,
                    parents,
                }
            }
            (reason, found, _) => {
                old_chain = found.map(|(id, _)| id);
                st.start_chain(who)?;
                Decision {
                    full_reason: Some(reason.unwrap_or_default()),
                    position: 0,
                    parents: Vec::new(),
                }
            }
        };
        let conn = st.conn.take().expect("held until here");
        st.writer = Some(StateWriter::start(conn, st.chain, path)?);
        if let Some(old) = old_chain {
            // The job's old chain is forgotten inside the run's transaction, but on the
            // writer: a full does not wait before its walk for a delete of every row.
            st.writer().drop_chain(old)?;
        }
        Ok((st, decision))
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("used only while deciding")
    }

    fn writer(&self) -> &StateWriter {
        self.writer.as_ref().expect("started when the run begins")
    }

    /// The chain row of `who.job`, and why it cannot be continued (another host,
    /// destination or parameters), if so.
    fn find_chain(&self, who: &RunIdentity) -> Result<Option<(i64, Option<String>)>> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, host, destination, params FROM chain WHERE job = ?1",
                [&who.job],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(state_error(&self.path))?;
        Ok(row.map(|(id, host, dest, params)| {
            let why = if host != who.host {
                Some("the chain state was written by another host".to_string())
            } else if dest != who.destination {
                Some(format!("the destination changed (the chain is in {dest})"))
            } else if params != who.params {
                Some(params_change(&params, &who.params))
            } else {
                None
            };
            (id, why)
        }))
    }

    fn newest(&self, chain: i64) -> Result<Option<ArchiveRow>> {
        self.conn()
            .query_row(
                "SELECT position, session_id, file_name, stream_len, commitment, refs
                 FROM archive WHERE chain = ?1 ORDER BY position DESC LIMIT 1",
                [chain],
                archive_row,
            )
            .optional()
            .map_err(state_error(&self.path))?
            .transpose()
    }

    /// The archives `newest`'s files reference, oldest first.
    fn parents_of(&self, newest: &ArchiveRow) -> Result<Vec<ArchiveRow>> {
        let mut out = Vec::new();
        for &p in &newest.refs {
            let row = self
                .conn()
                .query_row(
                    "SELECT position, session_id, file_name, stream_len, commitment, refs
                     FROM archive WHERE chain = ?1 AND position = ?2",
                    params![self.chain, p],
                    archive_row,
                )
                .optional()
                .map_err(state_error(&self.path))?
                .transpose()?
                .ok_or_else(|| self.corrupt(format!("archive {p} of the chain is not recorded")))?;
            out.push(row);
        }
        out.sort_by_key(|a| a.position);
        Ok(out)
    }

    /// A new chain for `who` (a full run); the job's old chain, if any, is dropped by the
    /// writer ([`StateWriter::drop_chain`]).
    fn start_chain(&mut self, who: &RunIdentity) -> Result<()> {
        let err = state_error(&self.path);
        // A full records every file and looks nothing up: without the copy lookup index
        // its rows are appended, not also inserted at random places of an index, and it
        // ends without building one. The first later run that looks a copy up builds it
        // (`writer.rs`). Inside the run's transaction.
        self.conn()
            .execute_batch("DROP INDEX IF EXISTS file_fkey")
            .map_err(&err)?;
        // The job's name is unique: the old chain's row goes now (its files' and
        // archives' rows with it, on the writer).
        self.conn()
            .execute("DELETE FROM chain WHERE job = ?1", [&who.job])
            .map_err(&err)?;
        self.conn()
            .execute(
                "INSERT INTO chain (job, host, destination, params) VALUES (?1, ?2, ?3, ?4)",
                params![who.job, who.host, who.destination, who.params],
            )
            .map_err(&err)?;
        self.chain = self.conn().last_insert_rowid();
        Ok(())
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::State {
            path: self.path.clone(),
            detail,
        }
    }

    /// The last run's row for the file at `path` (in walk order), if it had one. Rows of
    /// paths before it that the walk did not meet are of files that are gone: dropped.
    pub fn advance(&mut self, path: &[u8]) -> Result<Option<FileRow>> {
        if self.reader.is_none() {
            return Ok(None);
        }
        let key = path_key(path);
        loop {
            if self.page.is_empty() && !self.exhausted {
                self.read_page()?;
            }
            let Some(front) = self.page.front() else {
                return Ok(None);
            };
            match front.key.as_slice().cmp(&key) {
                std::cmp::Ordering::Less => {
                    let gone = self.page.pop_front().unwrap();
                    self.delete(&gone.key)?;
                }
                std::cmp::Ordering::Equal => {
                    self.met = Some(key);
                    return Ok(self.page.pop_front());
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    fn read_page(&mut self) -> Result<()> {
        let reader = self
            .reader
            .as_ref()
            .expect("incremental runs read the state");
        let err = state_error(&self.path);
        let mut stmt = reader
            .prepare_cached(
                "SELECT key, dev, ino, size, mtime, mtime_ns, ctime, ctime_ns, hash, data
                 FROM file WHERE chain = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
            )
            .map_err(&err)?;
        let from = self.read_to.clone().unwrap_or_default();
        let rows = stmt
            .query_map(params![self.chain, from, PAGE], file_row)
            .map_err(&err)?;
        let mut n = 0;
        for row in rows {
            let (key, row) = row.map_err(&err)?;
            match row {
                Some(row) => self.page.push_back(row),
                // Undecodable: gone from the merge, so the walk reads that file again
                // (and records it anew: the row goes now, not at the commit).
                None => self.writer().delete_now(key.clone())?,
            }
            self.read_to = Some(key);
            n += 1;
        }
        if n < PAGE {
            self.exhausted = true;
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.writer().delete(key.to_vec())
    }

    /// Forget the row of `path` (it is no longer a file).
    pub fn forget(&self, path: &[u8]) -> Result<()> {
        self.delete(&path_key(path))
    }

    /// Record (or replace) a file of this run.
    pub fn put(&self, row: FileRow) -> Result<()> {
        let replaces = self.met.as_deref() == Some(row.key.as_slice());
        self.writer().put(row, replaces)
    }

    /// Files of the chain (the last restore point's, and this run's so far) whose first
    /// window hashes to `first_window`: candidates for a copied or renamed file. The rows
    /// of files the walk found gone are still there (the writer drops them at the
    /// commit), and a changed file's replaced row is kept aside for the run, so a file
    /// renamed or copied to a later path is found (a rotated log: `app.log` rewritten,
    /// its old content now `app.log.1`).
    pub fn lookup(&self, first_window: &[u8; 32]) -> Result<Vec<FileRow>> {
        self.writer().lookup(first_window)
    }

    /// The archive is durable: record it and commit the run's changes. Rows the walk did
    /// not reach (files after the last one met) are gone and dropped first.
    pub fn complete(mut self, done: Completed) -> Result<()> {
        while self.reader.is_some() && (!self.page.is_empty() || !self.exhausted) {
            if self.page.is_empty() {
                self.read_page()?;
            }
            while let Some(gone) = self.page.pop_front() {
                self.delete(&gone.key)?;
            }
        }
        if let Some(reader) = self.reader.take() {
            // End the read snapshot first: a checkpoint may then move the run's pages in.
            reader
                .execute_batch("COMMIT")
                .map_err(state_error(&self.path))?;
        }
        self.writer.take().expect("started").finish(done)
    }
}

/// Why the newest archive `n` cannot be continued, if so.
fn continuation_problem(
    n: &ArchiveRow,
    full_every: Option<u32>,
    archive_exists: &dyn Fn(&str) -> Option<bool>,
) -> Option<String> {
    let length = n.position + 1;
    if let Some(every) = full_every
        && length >= every
    {
        return Some(format!(
            "full_every = {every}: the chain already has {length} archive(s)"
        ));
    }
    if length >= MAX_CHAIN {
        return Some(format!("the chain has reached {MAX_CHAIN} archives"));
    }
    if archive_exists(&n.file_name) == Some(false) {
        return Some(format!(
            "the last archive {} is no longer at the destination",
            n.file_name
        ));
    }
    None
}

/// A one-line reason naming which parameter changed.
fn params_change(old: &str, new: &str) -> String {
    let field = |s: &str, name: &str| {
        s.split(' ')
            .find_map(|kv| kv.strip_prefix(name).map(str::to_string))
            .unwrap_or_default()
    };
    for (name, what) in [
        ("recipients=", "the recipients changed"),
        ("block_size=", "the block size changed"),
        ("segment_size=", "the segment size changed"),
        ("compression=", "the compression changed"),
        ("content_hash=", "the content hash changed"),
        ("signer=", "the signing key changed"),
        ("format=", "the format version changed"),
    ] {
        if field(old, name) != field(new, name) {
            return what.to_string();
        }
    }
    "the chain's parameters changed".into()
}

fn state_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::State {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn archive_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ArchiveRow>> {
    let position: u32 = r.get(0)?;
    let session_id: Vec<u8> = r.get(1)?;
    let commitment: Vec<u8> = r.get(4)?;
    let refs: Vec<u8> = r.get(5)?;
    let bad = |what: &str| Error::Internal(format!("chain state: bad {what} in an archive row"));
    Ok((|| {
        Ok(ArchiveRow {
            position,
            session_id: session_id.try_into().map_err(|_| bad("session id"))?,
            file_name: r.get(2).map_err(|_| bad("file name"))?,
            stream_len: r.get::<_, i64>(3).map_err(|_| bad("stream length"))? as u64,
            commitment: commitment.try_into().map_err(|_| bad("commitment"))?,
            refs: postcard::from_bytes(&refs).map_err(|_| bad("references"))?,
        })
    })())
}

/// A file row and its key; `None` for a row whose fields do not decode (a state edited
/// by hand, or by a bug): the run treats its file as having no last version, and its
/// row is replaced or dropped like any other.
pub(super) fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, Option<FileRow>)> {
    let key: Vec<u8> = r.get(0)?;
    let hash: Vec<u8> = r.get(8)?;
    let data: Vec<u8> = r.get(9)?;
    let (Ok(hash), Ok(data)) = (
        <[u8; 32]>::try_from(hash),
        postcard::from_bytes::<FileData>(&data),
    ) else {
        return Ok((key, None));
    };
    let row = FileRow {
        key: key.clone(),
        dev: r.get::<_, i64>(1)? as u64,
        ino: r.get::<_, i64>(2)? as u64,
        size: r.get::<_, i64>(3)? as u64,
        mtime: (r.get(4)?, r.get(5)?),
        ctime: (r.get(6)?, r.get(7)?),
        hash,
        data,
    };
    Ok((key, Some(row)))
}

/// Open the state, creating it (0600, its folder 0700) when missing. A state that cannot
/// be used — unreadable, failing SQLite's integrity check, another schema — is moved
/// aside and a new one made; the second value is then the reason this run is a full.
fn open_state(path: &Path) -> Result<(Connection, Option<String>)> {
    let err = state_error(path);
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    let existed = path.exists();
    if existed {
        match check(path) {
            Ok(conn) => return Ok((conn, None)),
            Err(why) => {
                let aside = path.with_extension(format!(
                    "sqlite.unusable-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                std::fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(side));
                }
                let conn = create(path).map_err(&err)?;
                return Ok((
                    conn,
                    Some(format!(
                        "the chain state {} is unusable ({why}); moved aside to {}",
                        path.display(),
                        aside.display()
                    )),
                ));
            }
        }
    }
    let conn = create(path).map_err(&err)?;
    Ok((
        conn,
        Some("no chain state yet (the first run starts a chain)".into()),
    ))
}

/// Open an existing state, or say why it cannot be used.
fn check(path: &Path) -> std::result::Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    configure(&conn).map_err(|e| e.to_string())?;
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if ok != "ok" {
        return Err(format!("integrity check: {ok}"));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version != SCHEMA_VERSION {
        return Err(format!(
            "schema version {version}, this coffer uses {SCHEMA_VERSION}"
        ));
    }
    Ok(conn)
}

fn create(path: &Path) -> rusqlite::Result<Connection> {
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 before SQLite opens it: paths and hashes of the host's files.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path);
    }
    let conn = Connection::open(path)?;
    // 16 KiB pages, not SQLite's 4 KiB: a full writes every row, and its commit copies
    // each page from the WAL into the database with a read and a write call; a quarter
    // of the calls took the end of a first full (after its archive is durable) from
    // 28–44 ms to 18–26 ms on the bench tree, for 2 % more bytes. Fixed when the file is
    // made: a state made before keeps its page size.
    conn.execute_batch("PRAGMA page_size = 16384")?;
    configure(&conn)?;
    conn.execute_batch(&format!(
        "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    // NORMAL (WAL): a power cut may undo the last commit, never corrupt the file. That
    // leaves the state one archive behind storage — the next run references the archive
    // before, which still exists — never ahead; and a run does not wait for an fsync of
    // its state after the one of its archive.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}
