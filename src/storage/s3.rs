//! Archives in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, R2), through
//! the `object_store` crate.
//!
//! - Writing streams the archive as a multipart upload in fixed parts, at most
//!   [`PARTS_IN_FLIGHT`] uploading at once, so memory stays bounded whatever the archive
//!   size; the object appears only when the upload completes, and a sink dropped before
//!   commit aborts the upload. An archive smaller than one part is a single PutObject. A
//!   backup needs only PutObject (and the multipart calls): it never reads or lists
//!   objects. It asks for the bucket's Object Lock configuration (`s3/bucket_lock.rs`),
//!   which a write-only key may be refused without harm.
//! - Reading uses ranged GETs. Reads that continue where the last one ended get a growing
//!   read-ahead window (verify and full restores stream); any other read fetches exactly the
//!   bytes asked for (a selective restore fetches only the blocks it needs). An answer with
//!   another range, length or object size than asked for is refused, and no response body
//!   is read past what was asked for (see `s3/bounded.rs`): memory is bounded by coffer's
//!   requests, never by what a server claims.
//! - Credentials and endpoint come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`), and
//!   [`S3Settings`] (job file fields) override endpoint and region. Transient errors are
//!   retried with exponential backoff by `object_store`.

mod bounded;
mod bucket_lock;
mod errors;
mod lock;

pub use bucket_lock::{BucketLock, DefaultRetention, Period, bucket_lock, sigv4};
pub use lock::{LockMode, ObjectLock, rfc3339_utc};

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::{ArchiveSink, ArchiveSource, Location};
use crate::error::{Error, RemoteProblem, Result};
use errors::{bad_answer, classify, concise, get_error, remote_error, store_error};

/// Multipart part size: above S3's 5 MiB minimum, equal for every part but the last (R2
/// requires that), and small enough that buffering stays within the memory budget.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploading at once while the next one is filled.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Bytes fetched when an archive is opened: the header (about 550 bytes per RSA-4096
/// recipient) comes with the same request that learns the object's size; a larger header
/// takes one more request.
const OPEN_FETCH: u64 = 8 << 10;
/// Largest read-ahead for sequential reads.
const MAX_READ_AHEAD: u64 = 8 << 20;

/// Endpoint and region overrides (job file fields); `None` falls back to `AWS_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Object Lock retention for every archive uploaded (see `s3/lock.rs`).
    pub object_lock: Option<ObjectLock>,
}

static SETTINGS: OnceLock<Mutex<S3Settings>> = OnceLock::new();

/// Set the overrides used by every S3 location opened afterwards (the binary calls this
/// once a job file has been read).
pub fn set_settings(settings: S3Settings) {
    *SETTINGS
        .get_or_init(|| Mutex::new(S3Settings::default()))
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = settings;
}

/// The overrides in force (the job file's `[s3]`, or what the command line set).
pub fn settings() -> S3Settings {
    SETTINGS
        .get()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default()
}

/// One runtime for every S3 call, driven from whichever thread needs a result.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coffer-s3")
        .enable_all()
        .build()
        .map_err(|e| Error::io("s3 runtime", e))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

fn split(location: &Location) -> (&str, &str) {
    match location {
        Location::S3 { bucket, key } => (bucket, key),
        Location::Local(_) => unreachable!("S3 storage is only built for s3:// locations"),
    }
}

fn connect(bucket: &str) -> Result<Arc<AmazonS3>> {
    connect_with(bucket, false, None)
}

/// With `checksums`: a client for uploads that S3 may lock, sending SHA-256 checksums, and
/// with `headers` on every request (the requests that make an object: the retention).
fn connect_with(
    bucket: &str,
    checksums: bool,
    headers: Option<reqwest::header::HeaderMap>,
) -> Result<Arc<AmazonS3>> {
    let mut client = ClientOptions::new().with_connect_timeout(Duration::from_secs(10));
    if let Some(headers) = headers {
        client = client.with_default_headers(headers);
    }
    let mut builder = builder(bucket, client)?.with_http_connector(bounded::BoundedConnector);
    if checksums {
        builder = builder.with_checksum_algorithm(Checksum::SHA256);
    }
    let store = builder
        .build()
        .map_err(|e| remote_error(&format!("s3://{bucket}"), RemoteProblem::Config, &e))?;
    Ok(Arc::new(store))
}

/// The client configuration of `bucket`: credentials from the environment, endpoint and
/// region from the settings or the environment, retries. Shared by the archive client and
/// the bucket's Object Lock query (`s3/bucket_lock.rs`), so both reach the same server as
/// the same user.
/// `client` goes in first: `with_client_options` replaces the whole set, allow_http too.
fn builder(bucket: &str, client: ClientOptions) -> Result<AmazonS3Builder> {
    // reqwest is built without a bundled TLS provider (see Cargo.toml); an error only means
    // one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let overrides = settings();
    let mut builder = AmazonS3Builder::from_env()
        .with_client_options(client)
        .with_bucket_name(bucket);
    let endpoint = overrides.endpoint.or_else(|| {
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    });
    if let Some(endpoint) = endpoint {
        // An explicit http:// endpoint (a MinIO or Garage on the LAN) is the user's choice;
        // requests are SigV4-signed, so the secret key never crosses the wire either way.
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if let Some(region) = overrides.region {
        builder = builder.with_region(region);
    } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        builder = builder.with_region("us-east-1");
    }
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 6,
        retry_timeout: Duration::from_secs(90),
    };
    Ok(builder.with_retry(retry))
}

/// The store, object path and display URL of an archive; a bucket or prefix is refused.
fn archive_object(location: &Location) -> Result<(Arc<AmazonS3>, ObjectPath, String)> {
    let (bucket, key) = split(location);
    let url = location.display_path().display().to_string();
    if key.is_empty() || key.ends_with('/') {
        return Err(Error::InvalidOption(format!(
            "{url}: name an archive object, not a bucket or prefix"
        )));
    }
    Ok((connect(bucket)?, object_path(key), url))
}

fn object_path(key: &str) -> ObjectPath {
    ObjectPath::from(key)
}

/// Writes one archive object; see the module docs.
pub struct S3Sink {
    /// Parts, completion and abort.
    store: Arc<AmazonS3>,
    /// The requests that make the object (PutObject, CreateMultipartUpload): the same
    /// client as `store`, or under Object Lock one that adds the retention headers.
    create: Arc<AmazonS3>,
    path: ObjectPath,
    url: String,
    overwrite: bool,
    buf: Vec<u8>,
    upload: Option<MultipartId>,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    done: Vec<PartId>,
    committed: bool,
}

impl S3Sink {
    /// Under the Object Lock in force for every upload (`[s3] object_lock`, the flag).
    pub fn create(location: &Location, overwrite: bool) -> Result<Self> {
        Self::create_with(location, overwrite, settings().object_lock)
    }

    /// Under the Object Lock `lock` (a job's own), or none.
    pub fn create_with(
        location: &Location,
        overwrite: bool,
        lock: Option<ObjectLock>,
    ) -> Result<Self> {
        let (mut store, path, url) = archive_object(location)?;
        let mut create = Arc::clone(&store);
        let (bucket, _) = split(location);
        // S3 refuses an upload that the bucket's default retention locks unless it carries
        // an integrity checksum, as it does one with its own retention. The default is
        // asked for (once per bucket and a few minutes); a key that may not read it gets
        // the checksums all the same, as they cost a hash and no request.
        let create_headers = match lock {
            Some(lock) => {
                lock.check()?;
                Some(lock.headers()?)
            }
            None => match bucket_lock(bucket) {
                BucketLock::Disabled | BucketLock::NoDefault => None,
                BucketLock::Default(_) | BucketLock::Unknown(_) => Some(lock::checksum_headers()),
            },
        };
        if let Some(headers) = create_headers {
            store = connect_with(bucket, true, None)?;
            create = connect_with(bucket, true, Some(headers))?;
        }
        if !overwrite {
            // A write-only key may not ask (HeadObject needs s3:GetObject): then the name's
            // random session part is what keeps archives apart.
            match block_on(store.head(&path))? {
                Ok(_) => {
                    return Err(Error::Exists {
                        path: location.display_path(),
                    });
                }
                Err(e) => match classify(&e) {
                    RemoteProblem::NotFound | RemoteProblem::Denied => {}
                    problem => return Err(remote_error(&url, problem, &e)),
                },
            }
        }
        Ok(S3Sink {
            store,
            create,
            path,
            url,
            overwrite,
            buf: Vec::with_capacity(PART_SIZE),
            upload: None,
            in_flight: VecDeque::new(),
            done: Vec::new(),
            committed: false,
        })
    }

    /// Wait for the oldest part in flight.
    fn wait_oldest(&mut self) -> Result<()> {
        if let Some(part) = self.in_flight.pop_front() {
            let outcome =
                block_on(part)?.map_err(|e| remote_error(&self.url, RemoteProblem::Other, &e))?;
            self.done
                .push(outcome.map_err(|e| store_error(&self.url, e))?);
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let id = block_on(self.create.create_multipart(&self.path))?
                .map_err(|e| store_error(&self.url, e))?;
            self.upload = Some(id);
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_SIZE));
        let index = self.done.len() + self.in_flight.len();
        tracing::debug!(object = %self.url, part = index + 1, bytes = part.len(), "uploading part");
        let (store, path) = (Arc::clone(&self.store), self.path.clone());
        let id = self.upload.clone().expect("created above");
        let future = async move {
            store
                .put_part(&path, &id, index, PutPayload::from(part))
                .await
        };
        self.in_flight.push_back(runtime()?.spawn(future));
        Ok(())
    }
}

impl ArchiveSink for S3Sink {
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(PART_SIZE - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == PART_SIZE {
                self.send_part()?;
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_none() {
            // Small archive: one PutObject. Create mode where the store supports it, so a
            // same-named object that appeared meanwhile is not replaced.
            let payload = PutPayload::from(std::mem::take(&mut self.buf));
            let mode = if self.overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            let put = block_on(self.create.put_opts(&self.path, payload.clone(), opts))?;
            match put {
                Ok(_) => {}
                Err(e) if classify(&e) == RemoteProblem::Exists => {
                    return Err(Error::Exists {
                        path: self.url.clone().into(),
                    });
                }
                // A store without conditional writes: the session id in the name already
                // keeps archives apart, so write it plainly.
                Err(object_store::Error::NotImplemented { .. })
                | Err(object_store::Error::NotSupported { .. }) => {
                    block_on(self.create.put(&self.path, payload))?
                        .map_err(|e| store_error(&self.url, e))?;
                }
                Err(e) => return Err(store_error(&self.url, e)),
            }
            self.committed = true;
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let id = self.upload.clone().expect("checked above");
        let parts = std::mem::take(&mut self.done);
        match block_on(self.store.complete_multipart(&self.path, &id, parts))? {
            Ok(_) => {
                self.committed = true;
                Ok(())
            }
            // Drop aborts the upload.
            Err(e) => Err(store_error(&self.url, e)),
        }
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Uploaded parts are billed until aborted; a killed process cannot get here, which
        // is what the bucket lifecycle rule in the README is for.
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        if let Some(id) = self.upload.take()
            && let Ok(rt) = runtime()
        {
            let aborted = rt.block_on(self.store.abort_multipart(&self.path, &id));
            tracing::debug!(object = %self.url, ok = aborted.is_ok(), "multipart upload aborted");
        }
    }
}

/// Reads one archive object with ranged GETs.
pub struct S3Source {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    url: String,
    len: u64,
    window: Mutex<Window>,
    fetched: AtomicU64,
    requests: AtomicU64,
}

/// The bytes of the last GET and where the next sequential read would start.
#[derive(Default)]
struct Window {
    start: u64,
    bytes: bytes::Bytes,
    read_ahead: u64,
}

impl S3Source {
    pub fn open(location: &Location) -> Result<Self> {
        let (store, path, url) = archive_object(location)?;
        // The first GET brings the size and the header in one request; unlike HEAD, its
        // error body says whether the bucket or the object is missing.
        let (len, bytes) = match block_on(ranged_get(&*store, &path, 0..OPEN_FETCH))? {
            Ok(answer) => answer.check(&url, None)?,
            // An empty object has no first byte to ask for.
            Err(e) if bad_answer(&e).is_none() && e.to_string().contains("416") => {
                let meta = block_on(store.head(&path))?.map_err(|e| store_error(&url, e))?;
                (meta.size, bytes::Bytes::new())
            }
            Err(e) => return Err(get_error(&url, 0, e)),
        };
        let requests = 1;
        Ok(S3Source {
            store,
            path,
            url,
            len,
            fetched: AtomicU64::new(bytes.len() as u64),
            window: Mutex::new(Window {
                start: 0,
                bytes,
                read_ahead: 0,
            }),
            requests: AtomicU64::new(requests),
        })
    }

    fn get(&self, start: u64, end: u64) -> Result<bytes::Bytes> {
        let answer = block_on(ranged_get(&*self.store, &self.path, start..end))?
            .map_err(|e| get_error(&self.url, start, e))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.fetched
            .fetch_add(answer.bytes.len() as u64, Ordering::Relaxed);
        // Every read lies inside the size learned at open, so a shorter answer can only come
        // from another object of the same name (or a server that lies): refused in `check`.
        let (_, bytes) = answer.check(&self.url, Some(self.len))?;
        Ok(bytes)
    }
}

/// A ranged GET's answer, before it is checked against the request.
struct Answer {
    asked: Range<u64>,
    /// The object's size, as the answer declares it.
    size: u64,
    range: Range<u64>,
    bytes: bytes::Bytes,
}

/// GET `range`, or up to the object's end where that comes first. The HTTP layer
/// ([`bounded`]) has refused an answer that names another range or declares another length
/// before reading its body, and counts the body as it comes, so what is collected here is
/// never more than was asked for.
async fn ranged_get(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    range: Range<u64>,
) -> object_store::Result<Answer> {
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        ..Default::default()
    };
    let result = store.get_opts(path, opts).await?;
    let (size, got) = (result.meta.size, result.range.clone());
    Ok(Answer {
        asked: range,
        size,
        range: got,
        bytes: result.bytes().await?,
    })
}

impl Answer {
    /// The object's size and the bytes, if they are what was asked for: the range asked
    /// (shortened only at the object's end), all its bytes, and the object size `known`
    /// from earlier requests. These hold already when the HTTP layer let the answer
    /// through; checked again here so that the reader's bytes never rest on a layer below.
    fn check(self, url: &str, known: Option<u64>) -> Result<(u64, bytes::Bytes)> {
        let Answer {
            asked,
            size,
            range,
            bytes,
        } = self;
        let wrong = |detail: String| Error::RemoteAnswer {
            location: url.to_string(),
            offset: asked.start,
            detail,
        };
        if let Some(known) = known.filter(|&k| k != size) {
            return Err(wrong(format!(
                "the object is now {size} bytes long, not {known} (replaced while being read?)"
            )));
        }
        let expected = asked.start..asked.end.min(size);
        if expected.is_empty() {
            return Err(wrong(format!(
                "an object of {size} bytes, which has no byte {}",
                asked.start
            )));
        }
        if range != expected {
            return Err(wrong(format!(
                "bytes {}..{} for bytes {}..{} asked",
                range.start, range.end, expected.start, expected.end
            )));
        }
        if bytes.len() as u64 != expected.end - expected.start {
            return Err(wrong(format!(
                "{} bytes for the {}-byte range {}..{}",
                bytes.len(),
                expected.end - expected.start,
                expected.start,
                expected.end
            )));
        }
        Ok((size, bytes))
    }
}

impl ArchiveSource for S3Source {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| Error::Truncated {
                path: self.url.clone().into(),
                detail: format!("read of {} bytes at {offset} past the end", buf.len()),
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let w_end = window.start + window.bytes.len() as u64;
        if offset >= window.start && end <= w_end {
            let from = (offset - window.start) as usize;
            buf.copy_from_slice(&window.bytes[from..from + buf.len()]);
            return Ok(());
        }
        // Continuing into or just past the window: a stream. Keep what the window already
        // has, fetch from its end, and read further ahead each time.
        let sequential = !window.bytes.is_empty() && offset >= window.start && offset <= w_end;
        let (from, ahead) = if sequential {
            (
                w_end,
                (window.read_ahead * 2).clamp(1 << 20, MAX_READ_AHEAD),
            )
        } else {
            (offset, 0)
        };
        let fetch_end = (end + ahead).min(self.len);
        let bytes = self.get(from, fetch_end)?;
        let have = (from - offset) as usize;
        if have > 0 {
            let kept = (offset - window.start) as usize;
            buf[..have].copy_from_slice(&window.bytes[kept..kept + have]);
        }
        let rest = buf.len() - have;
        buf[have..].copy_from_slice(&bytes[..rest]);
        *window = Window {
            start: from,
            bytes,
            read_ahead: ahead,
        };
        Ok(())
    }

    fn fetched(&self) -> Option<(u64, u64)> {
        Some((
            self.fetched.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        ))
    }
}

/// The Object Lock an archive written to `location` gets, in words: the retention it is
/// uploaded with when there is one (`explicit`: the job's, `--object-lock` or `[s3]`'s),
/// else the bucket's default retention as the bucket reports it (one request; a key that
/// may not read it gives "unknown (...)"). None for a local location. Never an error:
/// this informs, it does not decide whether a backup succeeded.
pub fn lock_description(location: &Location, explicit: Option<&ObjectLock>) -> Option<String> {
    let Location::S3 { bucket, .. } = location else {
        return None;
    };
    Some(match explicit {
        Some(lock) => format!(
            "{} {} day{} (set on upload)",
            lock.mode_name(),
            lock.days,
            if lock.days == 1 { "" } else { "s" }
        ),
        None => bucket_lock(bucket).describe(),
    })
}

/// See [`super::exists`].
pub fn exists(location: &Location) -> Result<Option<bool>> {
    let (bucket, key) = split(location);
    let url = location.display_path().display().to_string();
    let store = connect(bucket)?;
    match block_on(store.head(&object_path(key)))? {
        Ok(_) => Ok(Some(true)),
        Err(e) => match classify(&e) {
            RemoteProblem::NotFound => Ok(Some(false)),
            RemoteProblem::Denied => Ok(None),
            problem => Err(remote_error(&url, problem, &e)),
        },
    }
}

/// See [`super::delete`].
pub fn delete(location: &Location) -> Result<()> {
    let (bucket, key) = split(location);
    let url = location.display_path().display().to_string();
    let store = connect(bucket)?;
    match block_on(store.delete(&object_path(key)))? {
        Ok(()) => Ok(()),
        Err(e) if classify(&e) == RemoteProblem::NotFound => Ok(()),
        Err(e) => Err(store_error(&url, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(asked: Range<u64>, size: u64, range: Range<u64>, len: usize) -> Answer {
        Answer {
            asked,
            size,
            range,
            bytes: bytes::Bytes::from(vec![0u8; len]),
        }
    }

    fn refused(answer: Answer, known: Option<u64>) -> String {
        match answer.check("s3://b/k", known) {
            Err(e @ Error::RemoteAnswer { offset: 100, .. }) => e.to_string(),
            other => panic!("expected a refusal at offset 100, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_is_the_range_asked_for_shortened_only_at_the_object_end() {
        let (size, bytes) = answer(100..136, 1000, 100..136, 36)
            .check("u", None)
            .unwrap();
        assert_eq!((size, bytes.len()), (1000, 36));
        let (_, bytes) = answer(100..8292, 120, 100..120, 20)
            .check("u", Some(120))
            .unwrap();
        assert_eq!(bytes.len(), 20);
        assert!(
            refused(answer(100..136, 1000, 100..136, 36), Some(999))
                .contains("now 1000 bytes long, not 999")
        );
        assert!(
            refused(answer(100..136, 1000, 0..36, 36), None)
                .contains("bytes 0..36 for bytes 100..136")
        );
        assert!(
            refused(answer(100..136, 1000, 100..136, 10), None)
                .contains("10 bytes for the 36-byte range")
        );
        assert!(refused(answer(100..136, 50, 100..136, 36), None).contains("no byte 100"));
    }
}
