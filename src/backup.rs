//! One backup run (a job session): walk the sources, read their files as one logical
//! stream cut into fixed blocks, seal the blocks in parallel, and write header, blocks,
//! encrypted index and trailer to a temporary file that is renamed when complete.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::archive::writer::ArchiveWriter;
use crate::error::{Error, Result};
use crate::format::frame::FRAME_PREFIX;
use crate::format::header::{self, HeaderBody};
use crate::format::index::{Entry, KIND_DIR, KIND_FILE, KIND_SYMLINK, Totals};
use crate::format::{Compression, SUITE_V1};
use crate::keys::{SessionId, SubKeys, new_session_id};
use crate::pipeline::{self, sink_stopped, slot_count};
/// Re-exported where they were defined before `progress` owned them (callers of the
/// library API keep working).
pub use crate::progress::{Observer, Quiet, Warning};
use crate::recipient::{Fingerprint, Recipient};
use crate::seal::{BlockSealer, Entropy};
use crate::storage::{self, Location};

/// What to back up and how. Shared by the command line and the job file.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub sources: Vec<PathBuf>,
    pub output: PathBuf,
    pub job_name: String,
    pub block_size: u32,
    pub segment_size: u32,
    pub compression: Compression,
    /// Do not cross into other file systems below a source.
    pub one_file_system: bool,
    /// Glob patterns matched against archive paths (e.g. `**/.cache`, `*.tmp`).
    pub exclude: Vec<String>,
    /// Replace an existing archive at `output`.
    pub overwrite: bool,
    /// The session id to use, when the caller must name the archive before it is written
    /// (jobs put it in the archive name). It must come from [`crate::keys::new_session_id`];
    /// `None` makes a fresh one.
    pub session_id: Option<SessionId>,
    /// Set from another thread (a signal handler) to stop the run: the backup returns
    /// [`Error::Cancelled`] soon after, and the partial archive is removed (the upload
    /// aborted) as for any other failure.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl BackupOptions {
    pub fn new(sources: Vec<PathBuf>, output: PathBuf) -> Self {
        BackupOptions {
            sources,
            output,
            job_name: String::new(),
            block_size: crate::DEFAULT_BLOCK_SIZE,
            segment_size: crate::DEFAULT_SEGMENT_SIZE,
            compression: Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL),
            one_file_system: true,
            exclude: Vec::new(),
            overwrite: false,
            session_id: None,
            cancel: None,
        }
    }
}

/// What a finished backup did.
#[derive(Clone, Debug)]
pub struct BackupReport {
    pub archive: PathBuf,
    pub session_id: SessionId,
    pub totals: Totals,
    /// Bytes of file data read.
    pub bytes_read: u64,
    /// Size of the archive file.
    pub bytes_written: u64,
    pub blocks: u64,
    pub warnings: Vec<Warning>,
    pub recipients: Vec<Fingerprint>,
    pub duration: Duration,
}

/// Run one backup session.
pub fn backup(
    opts: &BackupOptions,
    recipients: &[&dyn Recipient],
    observer: &dyn Observer,
) -> Result<BackupReport> {
    backup_with(opts, recipients, observer, Entropy::Os)
}

fn backup_with(
    opts: &BackupOptions,
    recipients: &[&dyn Recipient],
    observer: &dyn Observer,
    entropy: Entropy,
) -> Result<BackupReport> {
    let started = Instant::now();
    validate_options(opts, recipients)?;
    let sources = plan_sources(&opts.sources)?;
    let exclude = build_globs(&opts.exclude)?;
    std::thread::scope(|scope| {
        if observer.wants_totals() {
            // Counting alongside the run keeps the progress total from costing a second
            // pass before the first byte is read.
            let (sources, exclude) = (&sources, &exclude);
            scope.spawn(move || {
                let (files, bytes) = estimate(sources, exclude, opts.one_file_system);
                observer.totals(files, bytes);
            });
        }
        run_session(
            opts, recipients, observer, &sources, &exclude, started, entropy,
        )
    })
}

fn run_session(
    opts: &BackupOptions,
    recipients: &[&dyn Recipient],
    observer: &dyn Observer,
    sources: &[(String, PathBuf)],
    exclude: &GlobSet,
    started: Instant,
    entropy: Entropy,
) -> Result<BackupReport> {
    let session_key = entropy.session_key()?;
    let session_id = match opts.session_id {
        Some(id) => id,
        None => new_session_id()?,
    };
    let keys = SubKeys::derive(&session_key, &session_id);
    let stanzas = recipients
        .iter()
        .map(|r| r.wrap(&session_key))
        .collect::<Result<Vec<_>>>()?;
    drop(session_key);
    let body = HeaderBody {
        session_id,
        created_at: entropy.now(),
        job_name: opts.job_name.clone(),
        suite: SUITE_V1,
        block_size: opts.block_size,
        segment_size: opts.segment_size,
        compression: opts.compression.code(),
        recipients: stanzas,
        signature: None,
    };
    let location = Location::parse(&opts.output)?;
    let mut out = ArchiveWriter::begin(
        storage::create_sink(&location, opts.overwrite)?,
        &body,
        &keys,
        entropy,
    )?;
    let own_file = out.local_identity();

    let sealer = Arc::new(
        BlockSealer::new(
            &keys,
            session_id,
            opts.block_size,
            opts.segment_size,
            opts.compression,
        )
        .with_entropy(entropy),
    );
    let frame_capacity = sealer.frame_capacity();
    let block_size = opts.block_size as usize;

    let work_sealer = Arc::clone(&sealer);
    let walked = pipeline::run(
        slot_count(),
        |feed| {
            let mut reader = StreamReader {
                feed,
                block_size,
                frame_capacity,
                current: None,
                filled: 0,
                held: None,
                stream_len: 0,
                observer,
                cancel: opts.cancel.as_deref(),
            };
            let mut walk = Walk {
                entries: Vec::new(),
                totals: Totals::default(),
                warnings: Vec::new(),
                observer,
                exclude,
                own_file,
                one_file_system: opts.one_file_system,
            };
            for (name, path) in sources {
                walk.source(name, path, &mut reader)?;
            }
            let stream_len = reader.finish()?;
            Ok((walk.entries, walk.totals, walk.warnings, stream_len))
        },
        move |slot: &mut Block, seq| {
            work_sealer.seal(&mut slot.buf, seq, slot.last);
        },
        |slot, _seq| {
            out.push(&slot.buf)?;
            observer.bytes_written(slot.buf.len() as u64);
            Ok(())
        },
    )?;
    #[allow(unused_mut)]
    let (mut entries, mut totals, warnings, stream_len) = walked;
    // Owners differ between machines (a laptop, CI); the golden archive records none.
    #[cfg(test)]
    if let Entropy::Fixed(_) = entropy {
        entries.iter_mut().for_each(|e| (e.uid, e.gid) = (0, 0));
    }
    totals.warnings = warnings.len() as u64;
    totals.bytes = stream_len;

    let written = out.finish(entries, stream_len, totals)?;
    Ok(BackupReport {
        archive: opts.output.clone(),
        session_id,
        totals,
        bytes_read: stream_len,
        bytes_written: written.len,
        blocks: written.blocks,
        warnings,
        recipients: recipients.iter().map(|r| r.fingerprint()).collect(),
        duration: started.elapsed(),
    })
}

fn validate_options(opts: &BackupOptions, recipients: &[&dyn Recipient]) -> Result<()> {
    if opts.sources.is_empty() {
        return Err(Error::InvalidOption("no sources to back up".into()));
    }
    if recipients.is_empty() {
        return Err(Error::InvalidOption(
            "no recipients: pass at least one public key with -r".into(),
        ));
    }
    if recipients.len() > header::MAX_RECIPIENTS {
        return Err(Error::InvalidOption(format!(
            "at most {} recipients",
            header::MAX_RECIPIENTS
        )));
    }
    for (i, r) in recipients.iter().enumerate() {
        if recipients[..i]
            .iter()
            .any(|o| o.fingerprint() == r.fingerprint())
        {
            return Err(Error::InvalidOption(format!(
                "recipient {} is given twice",
                r.fingerprint()
            )));
        }
    }
    if !(header::MIN_BLOCK_SIZE..=header::MAX_BLOCK_SIZE).contains(&opts.block_size) {
        return Err(Error::InvalidOption(format!(
            "block size must be between {} KiB and {} MiB",
            header::MIN_BLOCK_SIZE / 1024,
            header::MAX_BLOCK_SIZE >> 20
        )));
    }
    if opts.segment_size < header::MIN_SEGMENT_SIZE
        || !opts.segment_size.is_multiple_of(16)
        || opts.segment_size > opts.block_size
    {
        return Err(Error::InvalidOption(
            "segment size must be a multiple of 16, at least 4 KiB and at most the block size"
                .into(),
        ));
    }
    if opts.job_name.len() > 256 {
        return Err(Error::InvalidOption(
            "job name longer than 256 bytes".into(),
        ));
    }
    Ok(())
}

/// Each source is stored under its own name at the top of the archive
/// (`~/projects` → `projects/…`), so two sources must not share a name.
fn plan_sources(sources: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for src in sources {
        src.symlink_metadata().map_err(|e| Error::io(src, e))?;
        let absolute = std::path::absolute(src).map_err(|e| Error::io(src, e))?;
        let mut normal: PathBuf = absolute.components().collect();
        if normal.ends_with("..") {
            // `..` or `/x/y/..` names the folder it leads to; only the kernel knows which
            // (`y` may be a link), so ask it. The walk itself still starts at `src`.
            normal = std::fs::canonicalize(src).map_err(|e| Error::io(src, e))?;
        }
        let name = match normal.file_name() {
            Some(n) => n.to_str().map(str::to_owned).ok_or_else(|| {
                Error::InvalidOption(format!("{}: source name is not UTF-8", src.display()))
            })?,
            None => {
                return Err(Error::InvalidOption(format!(
                    "{}: cannot back up the file system root as one source; name its folders (e.g. /etc /home)",
                    src.display()
                )));
            }
        };
        if name == ".." || name == "." {
            return Err(Error::InvalidOption(format!(
                "{}: give the folder by name",
                src.display()
            )));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Error::InvalidOption(format!(
                "two sources are both named {name:?}; archive paths would collide"
            )));
        }
        out.push((name, src.clone()));
    }
    Ok(out)
}

fn build_globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            Glob::new(p)
                .map_err(|e| Error::InvalidOption(format!("exclude pattern {p:?}: {e}")))?,
        );
    }
    b.build()
        .map_err(|e| Error::InvalidOption(format!("exclude patterns: {e}")))
}

/// One pipeline slot: a frame buffer (plaintext at `FRAME_PREFIX..`) and its last flag.
#[derive(Default)]
pub(crate) struct Block {
    buf: Vec<u8>,
    last: bool,
}

/// Cuts the logical stream of file bytes into blocks. One full block is held back until
/// more data arrives, so that the last block can be flagged as last.
struct StreamReader<'f, W> {
    feed: &'f mut pipeline::Feed<Block, W>,
    block_size: usize,
    frame_capacity: usize,
    current: Option<Block>,
    filled: usize,
    held: Option<Block>,
    stream_len: u64,
    observer: &'f dyn Observer,
    cancel: Option<&'f AtomicBool>,
}

impl<W> StreamReader<'_, W>
where
    W: Fn(&mut Block, u64) + Send + Sync + 'static,
{
    fn current(&mut self) -> Result<&mut Block> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        if self.current.is_none() {
            let mut slot = self.feed.take().ok_or_else(sink_stopped)?;
            if slot.buf.capacity() < self.frame_capacity {
                slot.buf.reserve_exact(self.frame_capacity - slot.buf.len());
            }
            // Only grows the first time a buffer is used; later the frame is longer.
            slot.buf.resize(FRAME_PREFIX + self.block_size, 0);
            self.current = Some(slot);
            self.filled = 0;
        }
        Ok(self.current.as_mut().unwrap())
    }

    /// Read `file` to its end into the stream. The outer error stops the run (the writer
    /// failed); the inner one is this file's read error, which only skips the file.
    fn read_file(&mut self, file: &mut File) -> Result<std::io::Result<u64>> {
        let mut total = 0u64;
        loop {
            let end = FRAME_PREFIX + self.block_size;
            self.current()?;
            let filled = self.filled;
            let block = self.current.as_mut().expect("current block just ensured");
            let n = match file.read(&mut block.buf[FRAME_PREFIX + filled..end]) {
                Ok(0) => return Ok(Ok(total)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Err(e)),
            };
            total += n as u64;
            self.observer.bytes_done(n as u64);
            self.filled += n;
            self.stream_len += n as u64;
            if self.filled == self.block_size {
                let full = self.current.take().unwrap();
                if let Some(prev) = self.held.replace(full) {
                    self.dispatch(prev, false);
                }
            }
        }
    }

    fn dispatch(&mut self, mut block: Block, last: bool) {
        block.last = last;
        self.feed.submit(block);
    }

    fn finish(mut self) -> Result<u64> {
        let partial = self.current.take().filter(|_| self.filled > 0);
        match (self.held.take(), partial) {
            (Some(held), Some(mut cur)) => {
                self.dispatch(held, false);
                cur.buf.truncate(FRAME_PREFIX + self.filled);
                self.dispatch(cur, true);
            }
            (Some(held), None) => self.dispatch(held, true),
            (None, Some(mut cur)) => {
                cur.buf.truncate(FRAME_PREFIX + self.filled);
                self.dispatch(cur, true);
            }
            (None, None) => {}
        }
        Ok(self.stream_len)
    }
}

struct Walk<'a> {
    entries: Vec<Entry>,
    totals: Totals,
    warnings: Vec<Warning>,
    observer: &'a dyn Observer,
    exclude: &'a GlobSet,
    own_file: Option<(u64, u64)>,
    one_file_system: bool,
}

impl Walk<'_> {
    fn warn(&mut self, path: &Path, message: String) {
        let w = Warning {
            path: path.to_path_buf(),
            message,
        };
        self.observer.warning(&w);
        self.warnings.push(w);
    }

    fn source<W>(&mut self, name: &str, root: &Path, reader: &mut StreamReader<'_, W>) -> Result<()>
    where
        W: Fn(&mut Block, u64) + Send + Sync + 'static,
    {
        // A source that is itself a symlink is stored as a link too: walkdir would
        // otherwise descend into its target while the entry records a link, giving an
        // index whose children sit below a link, which every reader refuses.
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .same_file_system(self.one_file_system)
            .sort_by_file_name()
            .into_iter();
        let mut walker = walker;
        while let Some(item) = walker.next() {
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    if e.depth() == 0 {
                        // The source itself vanished or is unreadable.
                        return Err(match e.into_io_error() {
                            Some(io) => Error::io(&path, io),
                            None => {
                                Error::InvalidOption(format!("{}: cannot walk", path.display()))
                            }
                        });
                    }
                    self.warn(&path, format!("cannot read: {}", io_reason(&e)));
                    continue;
                }
            };
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            let archive_path = match archive_path(name, rel) {
                Some(p) => p,
                None => {
                    self.warn(entry.path(), "name is not valid UTF-8; skipped".into());
                    if entry.file_type().is_dir() {
                        walker.skip_current_dir();
                    }
                    continue;
                }
            };
            if entry.depth() > 0 && self.exclude.is_match(&archive_path) {
                if entry.file_type().is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.warn(entry.path(), format!("cannot stat: {}", io_reason(&e)));
                    continue;
                }
            };
            if Some((meta.dev(), meta.ino())) == self.own_file {
                continue;
            }
            let mut e = Entry {
                path: archive_path,
                kind: KIND_FILE,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime_sec: meta.mtime(),
                mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                size: 0,
                offset: 0,
                link_target: None,
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                e.kind = KIND_DIR;
                self.totals.dirs += 1;
            } else if ft.is_symlink() {
                match std::fs::read_link(entry.path()) {
                    Ok(t) => match t.into_os_string().into_string() {
                        Ok(t) if !t.is_empty() => e.link_target = Some(t),
                        _ => {
                            self.warn(
                                entry.path(),
                                "link target is not valid UTF-8; skipped".into(),
                            );
                            continue;
                        }
                    },
                    Err(err) => {
                        self.warn(entry.path(), format!("cannot read link: {err}"));
                        continue;
                    }
                }
                e.kind = KIND_SYMLINK;
                self.totals.symlinks += 1;
            } else if ft.is_file() {
                let mut file = match File::open(entry.path()) {
                    Ok(f) => f,
                    Err(err) => {
                        self.warn(entry.path(), format!("cannot open: {err}"));
                        continue;
                    }
                };
                e.offset = reader.stream_len;
                match reader.read_file(&mut file)? {
                    Ok(n) => e.size = n,
                    Err(err) => {
                        // The bytes read so far stay in the stream as unreferenced data;
                        // the file is not listed, so a restore never yields a cut-off copy.
                        self.warn(entry.path(), format!("read failed, file skipped: {err}"));
                        continue;
                    }
                }
                if e.size != meta.len() {
                    // Written to while it was read (or a procfs/sysfs file, whose listed
                    // size is not its content): the copy may mix old and new bytes, and
                    // the user should know.
                    self.warn(
                        entry.path(),
                        format!(
                            "changed size while it was read ({} bytes listed, {} read); stored as read",
                            meta.len(),
                            e.size
                        ),
                    );
                }
                self.totals.files += 1;
                self.observer.file_done(entry.path(), e.size);
            } else {
                self.warn(
                    entry.path(),
                    "special file (device, socket or FIFO) not backed up".into(),
                );
                continue;
            }
            self.entries.push(e);
        }
        Ok(())
    }
}

fn io_reason(e: &dyn std::fmt::Display) -> String {
    e.to_string()
}

/// Files and bytes below the sources (metadata only), for progress totals.
fn estimate(sources: &[(String, PathBuf)], exclude: &GlobSet, one_file_system: bool) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    for (name, root) in sources {
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(false)
            .same_file_system(one_file_system)
            .into_iter();
        while let Some(Ok(entry)) = walker.next() {
            let rel = entry.path().strip_prefix(root).unwrap_or(Path::new(""));
            if entry.depth() > 0 && archive_path(name, rel).is_some_and(|p| exclude.is_match(p)) {
                if entry.file_type().is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            if entry.file_type().is_file() {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

/// `name` joined with the walked relative path, `/`-separated; `None` if not UTF-8.
fn archive_path(name: &str, rel: &Path) -> Option<String> {
    let mut p = name.to_string();
    for c in rel.components() {
        p.push('/');
        p.push_str(c.as_os_str().to_str()?);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::header::{STANZA_RSA_OAEP_SHA256, Stanza};
    use crate::keys::SessionKey;
    use sha2::{Digest, Sha256};
    use std::fs;

    /// SHA-256 and length of the archive below, as the writer produced it before the
    /// archive layer was split into modules (commit "golden archive test"). Any change
    /// to how an archive is laid out, sealed or encoded changes it.
    const GOLDEN_SHA256: &str = "821bbcb527f83a3dfbc42ba77654a11e39e3960b9545a34e2ee691cb17be45ab";
    const GOLDEN_LEN: u64 = 160_121;

    /// Wraps by a fixed, reversible scramble instead of RSA-OAEP (whose padding is
    /// random): the golden test is about the writer, not about one recipient scheme.
    struct FixedRecipient;

    impl Recipient for FixedRecipient {
        fn fingerprint(&self) -> Fingerprint {
            Fingerprint([7; 32])
        }
        fn label(&self) -> &str {
            "golden"
        }
        fn wrap(&self, session_key: &SessionKey) -> Result<Stanza> {
            Ok(Stanza {
                scheme: STANZA_RSA_OAEP_SHA256,
                fingerprint: [7; 32],
                label: "golden".into(),
                wrapped_key: session_key.expose().iter().map(|b| b ^ 0x5a).collect(),
            })
        }
    }

    fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A small tree whose every recorded attribute is fixed: contents, modes, mtimes.
    /// Blocks of 64 KiB with 4 KiB segments, so the stream spans several blocks, some
    /// compressed and some not, each of several CBC lanes.
    fn golden_tree(root: &Path) {
        let src = root.join("src");
        fs::create_dir_all(src.join("docs")).unwrap();
        let text: Vec<u8> = (0..120_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .take(120_000)
            .collect();
        fs::write(src.join("docs/text.txt"), text).unwrap();
        fs::write(src.join("noise.bin"), pseudo_random(150_000, 0x9E37_79B9)).unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("docs/text.txt", src.join("link")).unwrap();
        let t = filetime::FileTime::from_unix_time(1_600_000_000, 500);
        for (p, mode) in [
            ("docs/text.txt", 0o644),
            ("noise.bin", 0o600),
            ("empty", 0o640),
            ("docs", 0o750),
            ("", 0o755),
        ] {
            let p = src.join(p);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            filetime::set_file_mtime(&p, t).unwrap();
        }
        filetime::set_symlink_file_times(src.join("link"), t, t).unwrap();
    }

    fn golden_archive(root: &Path, name: &str) -> Vec<u8> {
        let out = root.join(name);
        let mut opts = BackupOptions::new(vec![root.join("src")], out.clone());
        opts.job_name = "golden".into();
        opts.block_size = 64 * 1024;
        opts.segment_size = 4096;
        opts.session_id = Some([3; 16]);
        let recipients: [&dyn Recipient; 1] = [&FixedRecipient];
        backup_with(&opts, &recipients, &Quiet, Entropy::Fixed(14)).unwrap();
        fs::read(out).unwrap()
    }

    /// An archive written with fixed randomness is byte-identical to the one the writer
    /// produced before the archive layer was reorganised.
    #[test]
    fn an_archive_written_with_fixed_randomness_matches_the_golden_bytes() {
        let dir = tempfile::tempdir().unwrap();
        golden_tree(dir.path());
        let bytes = golden_archive(dir.path(), "a.coffer");
        assert_eq!(
            bytes,
            golden_archive(dir.path(), "b.coffer"),
            "not deterministic"
        );
        let archive = crate::archive::Archive::open(&dir.path().join("a.coffer")).unwrap();
        let report = archive.verify_checksums(&Quiet).unwrap();
        assert!(report.is_ok() && report.blocks_checked > 2, "{report:?}");
        let hash = crate::format::hex(&Sha256::digest(&bytes));
        assert_eq!(
            (hash.as_str(), bytes.len() as u64),
            (GOLDEN_SHA256, GOLDEN_LEN)
        );
    }
}
