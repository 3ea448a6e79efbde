//! Copies of archives between locations (a folder, an S3 prefix), without a key: the
//! 3-2-1 rule's second and off-site copies.
//!
//! Each archive is read once. The keyless verify walk ([`Archive::verify_checksums`]) reads
//! it through a [`Tee`] that passes every byte it reads, in file order, on to the
//! destination's [`ArchiveSink`]; so what reaches the destination is exactly what the
//! checksums were checked over, and memory stays bounded by one frame plus the sink's
//! buffers. The sink is committed (temporary file renamed, multipart upload completed) only
//! when the walk found no problem and every byte of the archive went through the checks; a
//! damaged source is reported and leaves nothing at the destination.
//!
//! A restore point of an incremental chain brings its parents (FORMAT.md v2.8.1: the flat
//! parent table, oldest first), copied before it under the same file names, so the copy's
//! parent hints find them. An archive the destination already holds is skipped; one of the
//! same name with other content is never replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Archive;
use super::chain::parents_keyless;
use super::verify::Problem;
use crate::error::{Error, Result};
use crate::keys::SessionId;
use crate::progress::Observer;
use crate::storage::{self, ArchiveSink, ArchiveSource, Location};

/// Out-of-order bytes (the trailer and signature section read when the archive is opened)
/// held until the stream reaches them. They are a few hundred bytes; the bound only keeps a
/// reader that jumps around from growing it.
const MAX_HELD: usize = 1 << 20;

/// Where and how to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// A folder (which must exist) or an S3 prefix.
    pub dest: Location,
}

/// What happened to one archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    /// Checked and written.
    Copied,
    /// The destination already holds this archive (same length, header and trailer).
    Skipped,
    /// Not copied: damaged, unreadable, or a different archive under its name there.
    Failed,
}

/// One archive of a copy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopiedArchive {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub status: CopyStatus,
    /// The archive's length.
    pub bytes: u64,
    /// Set when it was copied as a parent of the restore point named here.
    pub parent_of: Option<PathBuf>,
    /// Why it was skipped or failed.
    pub detail: Option<String>,
    /// What the checksum walk found (a failed, damaged source).
    #[serde(serialize_with = "problems_json")]
    pub problems: Vec<Problem>,
}

fn problems_json<S: serde::Serializer>(
    p: &[Problem],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(p.len()))?;
    for p in p {
        seq.serialize_element(&serde_json::json!({
            "block": p.block, "offset": p.offset, "detail": p.detail
        }))?;
    }
    seq.end()
}

/// What a copy did, one row per archive in the order they were handled.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub archives: Vec<CopiedArchive>,
}

impl CopyReport {
    pub fn count(&self, status: CopyStatus) -> usize {
        self.archives.iter().filter(|a| a.status == status).count()
    }
    pub fn is_ok(&self) -> bool {
        self.count(CopyStatus::Failed) == 0
    }
    /// Bytes written to the destination.
    pub fn bytes_copied(&self) -> u64 {
        self.archives
            .iter()
            .filter(|a| a.status == CopyStatus::Copied)
            .map(|a| a.bytes)
            .sum()
    }
}

/// Copy `sources` (archives; a restore point with its chain) into `options.dest`. Errors
/// only when the destination itself is unusable; each archive's outcome is in the report.
pub fn copy(
    sources: &[PathBuf],
    options: &CopyOptions,
    observer: &dyn Observer,
) -> Result<CopyReport> {
    if let Location::Local(dir) = &options.dest {
        // A missing folder is not made: an unmounted USB disk must not turn into a folder
        // on the root file system.
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidOption(format!(
                "{}: the copy destination is not a folder",
                dir.display()
            )));
        }
    }
    let mut report = CopyReport::default();
    // Session ids handled in this run and whether they reached the destination: a parent
    // shared by several restore points is copied once.
    let mut done: HashMap<SessionId, bool> = HashMap::new();
    for src in sources {
        copy_point(src, options, observer, &mut done, &mut report);
    }
    Ok(report)
}

/// Copy one restore point: its parents first, then itself.
fn copy_point(
    src: &Path,
    options: &CopyOptions,
    observer: &dyn Observer,
    done: &mut HashMap<SessionId, bool>,
    report: &mut CopyReport,
) {
    let failed = |detail: String, report: &mut CopyReport| {
        report.archives.push(CopiedArchive {
            source: src.to_path_buf(),
            dest: dest_of(src, &options.dest).unwrap_or_default(),
            status: CopyStatus::Failed,
            bytes: 0,
            parent_of: None,
            detail: Some(detail),
            problems: Vec::new(),
        })
    };
    let archive = match Archive::open(src) {
        Ok(a) => a,
        Err(e) => return failed(e.to_string(), report),
    };
    let mut members: Vec<Archive> = Vec::new();
    for parent in parents_keyless(&archive, None) {
        let name = format!(
            "{} ({})",
            crate::format::hex(&parent.session_id),
            parent.hint
        );
        match (parent.archive, parent.problem) {
            (_, Some(problem)) => return failed(problem, report),
            (None, None) => {
                return failed(
                    format!("its parent {name} was not found next to it; the chain is not copied"),
                    report,
                );
            }
            (Some(a), None) => members.push(a),
        }
    }
    let point = archive.path().to_path_buf();
    members.push(archive);
    let last = members.len() - 1;
    for (i, member) in members.iter().enumerate() {
        let sid = member.params().session_id;
        if let Some(&ok) = done.get(&sid) {
            if ok {
                continue;
            }
            return failed(
                format!(
                    "its chain member {} could not be copied",
                    member.path().display()
                ),
                report,
            );
        }
        let mut row = copy_one(member, options, observer);
        if i != last {
            row.parent_of = Some(point.clone());
        }
        let ok = row.status != CopyStatus::Failed;
        done.insert(sid, ok);
        report.archives.push(row);
        if !ok {
            if i != last {
                failed(
                    "not copied: a parent of its chain could not be copied".into(),
                    report,
                );
            }
            return;
        }
    }
}

/// The destination of `src`: its file name in `dest`.
fn dest_of(src: &Path, dest: &Location) -> Result<PathBuf> {
    let name = match Location::parse(src)? {
        Location::Local(p) => p.file_name().and_then(|n| n.to_str()).map(str::to_string),
        Location::S3 { key, .. } => key.rsplit('/').next().map(str::to_string),
    };
    let name = name
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .ok_or_else(|| {
            Error::InvalidOption(format!("{}: no file name to copy it under", src.display()))
        })?;
    Ok(dest.join(&name).display_path())
}

fn copy_one(src: &Archive, options: &CopyOptions, observer: &dyn Observer) -> CopiedArchive {
    let mut row = CopiedArchive {
        source: src.path().to_path_buf(),
        dest: PathBuf::new(),
        status: CopyStatus::Failed,
        bytes: src.file_len(),
        parent_of: None,
        detail: None,
        problems: Vec::new(),
    };
    match copy_checked(src, options, observer, &mut row) {
        Ok(status) => row.status = status,
        Err(e) => {
            row.status = CopyStatus::Failed;
            row.detail.get_or_insert(e.to_string());
        }
    }
    row
}

fn copy_checked(
    src: &Archive,
    options: &CopyOptions,
    observer: &dyn Observer,
    row: &mut CopiedArchive,
) -> Result<CopyStatus> {
    row.dest = dest_of(src.path(), &options.dest)?;
    let dest = Location::parse(&row.dest)?;
    if let Some(detail) = already_there(src, &dest)? {
        row.detail = Some(detail);
        return Ok(CopyStatus::Skipped);
    }
    let sink = storage::create_sink(&dest, false)?;
    let tee = Arc::new(Tee::new(
        storage::open_source(&Location::parse(src.path())?)?,
        sink,
    ));
    let archive = Archive::from_source(src.path(), tee.clone())?;
    if archive.params().session_id != src.params().session_id
        || archive.file_len() != src.file_len()
    {
        return Err(Error::InvalidOption(format!(
            "{}: the archive changed while it was being copied",
            src.path().display()
        )));
    }
    let report = archive.verify_checksums(observer)?;
    drop(archive);
    if !report.is_ok() {
        // Dropping the tee drops the sink: the temporary file goes, the upload is aborted.
        row.problems = report.problems;
        row.detail = Some("damaged: not copied (checksum problems)".into());
        return Ok(CopyStatus::Failed);
    }
    Arc::try_unwrap(tee)
        .map_err(|_| Error::Internal("the copy's reader is still in use".into()))?
        .finish(src.path())?;
    Ok(CopyStatus::Copied)
}

/// Whether `dest` already holds `src`: `Some(why)` when it does, `None` when there is
/// nothing under the name (or the credentials may not look), an error when something else
/// is there. Compared cheaply, without reading either whole: same length, same header
/// (its random session id names one backup run; recipients, parameters and the parent
/// table come with it) and same bytes after the index section (the trailer with its
/// layout and counts, and a v2 signature). Damage inside a held copy is for `verify` on
/// the destination to find.
fn already_there(src: &Archive, dest: &Location) -> Result<Option<String>> {
    match dest {
        Location::Local(path) => match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
            // Never read or write through a link in the destination: it may lead anywhere.
            Ok(m) if !m.file_type().is_file() => {
                return Err(Error::InvalidOption(format!(
                    "{}: exists and is not a regular file (a symbolic link?); not replaced",
                    path.display()
                )));
            }
            Ok(_) => {}
        },
        Location::S3 { .. } => {
            if storage::exists(dest)? != Some(true) {
                return Ok(None);
            }
        }
    }
    let theirs = Archive::open(&dest.display_path())?;
    if same_archive(src, &theirs)? {
        return Ok(Some(
            "already there (same length, header and trailer)".into(),
        ));
    }
    Err(Error::Exists {
        path: dest.display_path(),
    })
}

fn same_archive(a: &Archive, b: &Archive) -> Result<bool> {
    if a.file_len() != b.file_len() || a.data_start() != b.data_start() {
        return Ok(false);
    }
    let tail_at = |x: &Archive| x.data_start() + x.params().data_len + x.params().index_len;
    if tail_at(a) != tail_at(b) {
        return Ok(false);
    }
    let ranges = [(0, a.data_start()), (tail_at(a), a.file_len())];
    for (from, to) in ranges {
        let len = usize::try_from(to - from)
            .map_err(|_| Error::Internal("header larger than memory".into()))?;
        let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
        a.source.read_exact_at(&mut x, from)?;
        b.source.read_exact_at(&mut y, from)?;
        if x != y {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An [`ArchiveSource`] that passes what is read through it on to a sink, in file order:
/// a read that continues the stream (starts at or before the next unwritten byte and ends
/// after it) is written; a read further on is held (bounded) until the stream reaches it.
pub(crate) struct Tee {
    inner: Arc<dyn ArchiveSource>,
    state: Mutex<TeeState>,
}

struct TeeState {
    sink: Option<Box<dyn ArchiveSink>>,
    /// Bytes written so far: the stream's next offset.
    written: u64,
    held: Vec<(u64, Vec<u8>)>,
    held_len: usize,
}

impl Tee {
    pub(crate) fn new(inner: Arc<dyn ArchiveSource>, sink: Box<dyn ArchiveSink>) -> Self {
        Tee {
            inner,
            state: Mutex::new(TeeState {
                sink: Some(sink),
                written: 0,
                held: Vec::new(),
                held_len: 0,
            }),
        }
    }

    /// Write the held bytes that continue the stream and commit. Every byte of the archive
    /// must have been read through the tee (so checked): a gap fails closed rather than
    /// copying bytes nothing checked.
    pub(crate) fn finish(self, path: &Path) -> Result<()> {
        let len = self.inner.len();
        let mut state = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut sink = state.sink.take().expect("finished once");
        while state.written < len {
            let at = state.written;
            let Some((start, bytes)) = state
                .held
                .iter()
                .find(|(s, b)| *s <= at && at < s + b.len() as u64)
            else {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    offset: at,
                    detail: "these bytes were not checked while copying; not copied".into(),
                });
            };
            let from = (at - start) as usize;
            sink.write_all(&bytes[from..])?;
            state.written = start + bytes.len() as u64;
        }
        sink.commit()
    }
}

impl ArchiveSource for Tee {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_exact_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let written = state.written;
        if offset <= written && end > written {
            let sink = state.sink.as_mut().expect("sink open until finished");
            sink.write_all(&buf[(written - offset) as usize..])?;
            state.written = end;
        } else if offset > written && state.held_len + buf.len() <= MAX_HELD {
            state.held_len += buf.len();
            state.held.push((offset, buf.to_vec()));
        }
        Ok(())
    }

    fn fetched(&self) -> Option<(u64, u64)> {
        self.inner.fetched()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `len` bytes (byte i = i mod 251) and a sink recording what it got.
    struct Bytes(Vec<u8>);
    impl ArchiveSource for Bytes {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
    }
    /// The bytes a sink got and whether it was committed.
    type Got = Arc<Mutex<(Vec<u8>, bool)>>;
    struct Recorder(Got);
    impl ArchiveSink for Recorder {
        fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
            self.0.lock().unwrap().0.extend_from_slice(bytes);
            Ok(())
        }
        fn commit(self: Box<Self>) -> Result<()> {
            self.0.lock().unwrap().1 = true;
            Ok(())
        }
    }

    fn tee(len: usize) -> (Tee, Got, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let got = Arc::new(Mutex::new((Vec::new(), false)));
        let t = Tee::new(
            Arc::new(Bytes(data.clone())),
            Box::new(Recorder(got.clone())),
        );
        (t, got, data)
    }

    fn read(t: &Tee, offset: u64, len: usize) {
        t.read_exact_at(&mut vec![0u8; len], offset).unwrap();
    }

    #[test]
    fn tee_writes_rereads_and_held_tail_once_in_order() {
        let (t, got, data) = tee(1000);
        read(&t, 0, 10); // header prefix
        read(&t, 0, 100); // whole header: re-reads the prefix
        read(&t, 960, 40); // trailer, at open: held
        read(&t, 100, 4); // a frame prefix, then the frame
        read(&t, 100, 500);
        read(&t, 600, 360);
        t.finish(Path::new("x")).unwrap();
        let got = got.lock().unwrap();
        assert!(got.1, "committed");
        assert!(got.0 == data);
    }

    #[test]
    fn tee_refuses_to_commit_bytes_nothing_read() {
        let (t, got, _) = tee(1000);
        read(&t, 0, 100);
        read(&t, 960, 40);
        read(&t, 300, 660); // skipped 100..300 (a damaged frame stepped over)
        let err = t.finish(Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("offset 100"), "{err}");
        assert!(!got.lock().unwrap().1, "not committed");
    }
}
