//! The chain state's writes, on a thread of their own. A run records one row per file it
//! walks (every file, in a full): as SQLite B-tree work on the walking thread, that cost a
//! tree of small files a tenth of its time. Here the walk hands rows over a bounded
//! channel and goes on; the thread owns the run's connection and its one transaction, in
//! the order the walk sent them, so a lookup sees every row sent before it. Dropped
//! without [`StateWriter::finish`], the thread drops the connection with the transaction
//! open: SQLite rolls it back.
//!
//! Two things wait until they are needed. Rows of files the walk found gone are listed
//! in a temporary table and deleted at the commit, and the row a changed file replaces is
//! copied to another first: until then a lookup still finds the last restore point's
//! content at a later path (a rename, or a rotated log). And the copy lookup
//! index, which a full does not keep (`state.rs`), is built by the first lookup of a run
//! that has none — an incremental with a new or renamed file — not in the full's tail,
//! where it cost a first full 2–3 % of its time.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

use super::state::{Completed, FileRow, file_row, fkey};
use crate::error::{Error, Result};

/// Batches queued before the walk waits for the writer.
const QUEUE: usize = 16;
/// Rows handed over at once: one wake-up of the writer per batch, not per file.
const BATCH: usize = 256;

enum Op {
    Batch(Vec<Op>),
    /// A file's row; `true` when it replaces the last restore point's row of its path.
    Put(Box<FileRow>, bool),
    /// A file's row goes at the commit (the file is gone).
    Delete(Vec<u8>),
    /// A row that cannot be decoded goes now: the walk may record its file again.
    DeleteNow(Vec<u8>),
    /// Forget a replaced chain's files and archives.
    DropChain(i64),
    Lookup([u8; 32], std::sync::mpsc::Sender<Result<Vec<FileRow>>>),
    Finish(Box<Completed>, std::sync::mpsc::Sender<Result<()>>),
}

/// The thread that writes one run's changes to the state.
pub(crate) struct StateWriter {
    tx: Option<SyncSender<Op>>,
    /// Puts and deletes not yet handed over (sent before any lookup or the finish, so
    /// the writer applies everything in the walk's order).
    pending: std::cell::RefCell<Vec<Op>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl StateWriter {
    /// Start the writer on `conn` (its transaction already begun) for chain row `chain`.
    pub fn start(conn: Connection, chain: i64, path: &Path) -> Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let path_buf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("coffer-state".into())
            .spawn(move || run(conn, chain, &path_buf, rx))
            .map_err(|e| Error::Internal(format!("cannot start the chain state writer: {e}")))?;
        Ok(StateWriter {
            tx: Some(tx),
            pending: std::cell::RefCell::new(Vec::with_capacity(BATCH)),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    fn send(&self, op: Op) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(|| self.stopped())
    }

    fn stopped(&self) -> Error {
        Error::State {
            path: self.path.clone(),
            detail: "the state writer stopped".into(),
        }
    }

    pub fn put(&self, row: FileRow, replaces: bool) -> Result<()> {
        self.queue(Op::Put(Box::new(row), replaces))
    }

    pub fn delete(&self, key: Vec<u8>) -> Result<()> {
        self.queue(Op::Delete(key))
    }

    pub fn delete_now(&self, key: Vec<u8>) -> Result<()> {
        self.queue(Op::DeleteNow(key))
    }

    fn queue(&self, op: Op) -> Result<()> {
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.push(op);
            pending.len() >= BATCH
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Hand the pending puts and deletes over.
    fn flush(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            return Ok(());
        }
        self.send(Op::Batch(batch))
    }

    /// Forget chain row `old`'s files and archives (a full replaced it).
    pub fn drop_chain(&self, old: i64) -> Result<()> {
        self.queue(Op::DropChain(old))
    }

    /// Rows whose first window hashes to `first_window` (after every row sent so far).
    pub fn lookup(&self, first_window: &[u8; 32]) -> Result<Vec<FileRow>> {
        let (reply, answer) = channel();
        self.flush()?;
        self.send(Op::Lookup(*first_window, reply))?;
        answer.recv().map_err(|_| self.stopped())?
    }

    /// Record the archive and commit everything; the first error of any earlier write is
    /// returned here if there was one.
    pub fn finish(mut self, done: Completed) -> Result<()> {
        let (reply, answer) = channel();
        self.flush()?;
        self.send(Op::Finish(Box::new(done), reply))?;
        let result = answer.recv().map_err(|_| self.stopped())?;
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }
}

/// The writer thread: apply each operation in order; after the first failure, answer
/// every lookup and the finish with it and apply nothing more.
fn run(conn: Connection, chain: i64, path: &Path, rx: Receiver<Op>) {
    // The rows are the run's bookkeeping, its archive the work: when both cores are busy
    // sealing (a full), this thread takes what they leave idle (waits for reads) rather
    // than a share of theirs. A failure leaves the default priority.
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
    let mut failed: Option<String> = None;
    // Prepared once: a cached statement is looked up by its text on every row.
    let prepared = conn
        .execute_batch(GONE_TABLE)
        .and_then(|()| Ok((conn.prepare(INSERT)?, has_index(&conn)?)));
    let (mut insert, mut indexed) = match prepared {
        Ok((s, indexed)) => (Some(s), indexed),
        Err(e) => {
            failed = Some(e.to_string());
            (None, false)
        }
    };
    let error = |detail: &str| Error::State {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let ops = rx.into_iter().flat_map(|op| match op {
        Op::Batch(ops) => ops,
        op => vec![op],
    });
    for op in ops {
        match op {
            Op::Put(row, replaces) if failed.is_none() => {
                if replaces {
                    failed = conn
                        .prepare_cached(KEEP_REPLACED)
                        .and_then(|mut s| s.execute(params![chain, row.key]))
                        .err()
                        .map(|e| e.to_string());
                    if failed.is_some() {
                        continue;
                    }
                }
                let insert = insert.as_mut().expect("prepared unless failed");
                failed = put(insert, chain, &row).err().map(|e| e.to_string());
            }
            Op::Delete(key) if failed.is_none() => {
                failed = conn
                    .prepare_cached("INSERT INTO temp.gone (key) VALUES (?1)")
                    .and_then(|mut s| s.execute(params![key]))
                    .err()
                    .map(|e| e.to_string());
            }
            Op::DeleteNow(key) if failed.is_none() => {
                failed = conn
                    .prepare_cached("DELETE FROM file WHERE chain = ?1 AND key = ?2")
                    .and_then(|mut s| s.execute(params![chain, key]))
                    .err()
                    .map(|e| e.to_string());
            }
            Op::DropChain(old) if failed.is_none() => {
                failed = ["file", "archive"]
                    .iter()
                    .find_map(|table| {
                        conn.execute(&format!("DELETE FROM {table} WHERE chain = ?1"), [old])
                            .err()
                    })
                    .map(|e| e.to_string());
            }
            Op::Put(..) | Op::Delete(_) | Op::DeleteNow(_) | Op::Batch(_) | Op::DropChain(_) => {}
            Op::Lookup(w, reply) => {
                if failed.is_none() && !indexed {
                    failed = build_index(&conn).err().map(|e| e.to_string());
                    indexed = true;
                }
                let answer = match &failed {
                    Some(f) => Err(error(f)),
                    None => lookup(&conn, chain, &w).map_err(|e| error(&e.to_string())),
                };
                let _ = reply.send(answer);
            }
            Op::Finish(done, reply) => {
                let answer = match &failed {
                    Some(f) => Err(error(f)),
                    None => finish(&conn, chain, &done).map_err(|e| error(&e.to_string())),
                };
                let _ = reply.send(answer);
                return;
            }
        }
    }
}

/// The keys of the rows deleted at the commit, and the last restore point's rows of
/// changed files, for the run's lookups (temporary tables: memory stays flat however many
/// files are gone or changed).
const GONE_TABLE: &str = "
    CREATE TEMP TABLE IF NOT EXISTS gone (key BLOB NOT NULL);
    CREATE TEMP TABLE IF NOT EXISTS replaced (
        key BLOB NOT NULL, dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER,
        mtime_ns INTEGER, ctime INTEGER, ctime_ns INTEGER, hash BLOB, fkey INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS temp.replaced_fkey ON replaced (fkey);";

/// Keep the row a changed file is about to replace.
const KEEP_REPLACED: &str = "INSERT INTO temp.replaced
     SELECT key, dev, ino, size, mtime, mtime_ns, ctime, ctime_ns, hash, fkey, data
     FROM file WHERE chain = ?1 AND key = ?2";

const INSERT: &str = "INSERT OR REPLACE INTO file
     (chain, key, dev, ino, size, mtime, mtime_ns, ctime, ctime_ns, hash, fkey, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

fn put(insert: &mut rusqlite::Statement<'_>, chain: i64, row: &FileRow) -> rusqlite::Result<()> {
    let data = postcard::to_stdvec(&row.data)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    insert.execute(params![
        chain,
        row.key,
        row.dev as i64,
        row.ino as i64,
        row.size as i64,
        row.mtime.0,
        row.mtime.1,
        row.ctime.0,
        row.ctime.1,
        row.hash.as_slice(),
        fkey(&row.first_window()),
        data,
    ])?;
    Ok(())
}

/// Rows of this run and of the last restore point (replaced ones included) whose first
/// window is `w`, at most 8 of each.
fn lookup(conn: &Connection, chain: i64, w: &[u8; 32]) -> rusqlite::Result<Vec<FileRow>> {
    const COLUMNS: &str = "key, dev, ino, size, mtime, mtime_ns, ctime, ctime_ns, hash, data";
    let mut rows = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM file WHERE fkey = ?1 AND chain = ?2 LIMIT 8"
    ))?;
    for row in stmt.query_map(params![fkey(w), chain], file_row)? {
        rows.push(row?);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM temp.replaced WHERE fkey = ?1 LIMIT 8"
    ))?;
    for row in stmt.query_map(params![fkey(w)], file_row)? {
        rows.push(row?);
    }
    Ok(rows
        .into_iter()
        .filter_map(|(_, row)| row.filter(|r| r.first_window() == *w))
        .collect())
}

fn finish(conn: &Connection, chain: i64, done: &Completed) -> rusqlite::Result<()> {
    let refs = postcard::to_stdvec(&done.refs)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT OR REPLACE INTO archive
         (chain, position, session_id, file_name, created_at, stream_len, commitment, refs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            chain,
            done.position,
            done.session_id.as_slice(),
            done.file_name,
            done.created_at,
            done.stream_len as i64,
            done.commitment.as_slice(),
            refs,
        ],
    )?;
    conn.execute(
        "DELETE FROM file WHERE chain = ?1 AND key IN (SELECT key FROM temp.gone)",
        [chain],
    )?;
    conn.execute_batch("COMMIT")
}

/// Whether the state has the copy lookup index (a full drops it).
fn has_index(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'file_fkey'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Build the copy lookup index over every row of the state (nothing when it exists).
fn build_index(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE INDEX IF NOT EXISTS file_fkey ON file (fkey)")
}
