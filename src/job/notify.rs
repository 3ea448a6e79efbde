//! Notifications: a job may ping a URL when a session starts, succeeds or fails
//! (`notify = { start = URL, success = URL, failure = URL }`), the way healthchecks.io,
//! Uptime Kuma and ntfy take them: a plain GET for start and success, a POST whose body is
//! the one-line error for a failure.
//!
//! A ping never changes a session: an endpoint that is down, slow or answers an error is a
//! [`PingError`] the caller logs, and the session's state stays what the backup made it.
//! Every ping is bounded in time ([`CONNECT_TIMEOUT`], [`TOTAL_TIMEOUT`]) so a dead
//! endpoint costs seconds, not the night.
//!
//! **Client.** `http://` URLs go through a minimal HTTP/1.1 client over
//! `std::net::TcpStream` (one request, `Connection: close`, the status line read and the
//! rest ignored): it needs no dependency, so notifications work in a build with the `jobs`
//! feature alone. `https://` needs TLS: with the `s3` feature (on by default) it goes
//! through the reqwest client coffer already has for object storage; a build without it
//! refuses `https://` URLs when the job file is read.
//!
//! URLs of monitoring services carry their check's secret in the path (healthchecks.io's
//! UUID, an ntfy topic), so messages name only the scheme, host and port ([`Endpoint::shown`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::catalog::SessionRow;

/// Longest wait for a TCP (and TLS) connection to an endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a whole ping may take, connection included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A failure ping's body is cut to this many bytes (ntfy's message limit is 4 KiB).
pub const MAX_BODY: usize = 1024;

/// Which moment of a session a ping reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingKind {
    Start,
    Success,
    Failure,
}

impl PingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PingKind::Start => "start",
            PingKind::Success => "success",
            PingKind::Failure => "failure",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A notification URL, checked when the job file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    scheme: Scheme,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    target: String,
}

impl Endpoint {
    /// Parse `http://host[:port]/path?query` (or `https://`, with the `s3` feature).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            if !cfg!(feature = "s3") {
                return Err(format!(
                    "{url:?}: https:// needs a coffer built with the s3 feature (its TLS client); use http:// or rebuild"
                ));
            }
            (Scheme::Https, r)
        } else {
            return Err(format!("{url:?}: not an http:// or https:// URL"));
        };
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "{url:?}: spaces and control characters must be percent-encoded"
            ));
        }
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let authority = authority.split('#').next().unwrap_or_default();
        let target = target.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err(format!(
                "{}: user names and passwords in notify URLs are not supported",
                shown(scheme, "…", None)
            ));
        }
        let default_port = if scheme == Scheme::Http { 80 } else { 443 };
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("{url:?}: bad host or port"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Endpoint {
            url: url.to_string(),
            scheme,
            host: host.to_string(),
            port,
            target,
        })
    }

    /// The URL as written.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://host:port`, for messages: the path often holds the check's secret.
    pub fn shown(&self) -> String {
        shown(self.scheme, &self.host, Some(self.port))
    }
}

fn shown(scheme: Scheme, host: &str, port: Option<u16>) -> String {
    let s = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    match port {
        Some(p) => format!("{s}://{host}:{p}"),
        None => format!("{s}://{host}"),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(a: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return match tail {
            "" => Some((host, None)),
            t => Some((host, Some(t.strip_prefix(':')?))),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => None,
        None => Some((a, None)),
    }
}

/// The URLs a job pings (each optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub start: Option<Endpoint>,
    pub success: Option<Endpoint>,
    pub failure: Option<Endpoint>,
}

impl Notify {
    pub fn is_empty(&self) -> bool {
        self.start.is_none() && self.success.is_none() && self.failure.is_none()
    }

    pub fn endpoint(&self, kind: PingKind) -> Option<&Endpoint> {
        match kind {
            PingKind::Start => self.start.as_ref(),
            PingKind::Success => self.success.as_ref(),
            PingKind::Failure => self.failure.as_ref(),
        }
    }
}

/// A start ping on its way: sent on its own thread, so the backup does not wait for a
/// slow endpoint; [`ping_end`] waits for it, so the endpoint sees start before the end.
pub enum Pending {
    /// The job has no start URL.
    None,
    Sending(std::thread::JoinHandle<Result<(), PingError>>),
    /// Sent already (no thread could be started).
    Sent(Result<(), PingError>),
}

/// Send the start ping of a session (if the job has one) on its own thread.
pub fn ping_start(notify: &Notify) -> Pending {
    let Some(e) = notify.start.clone() else {
        return Pending::None;
    };
    let inline = e.clone();
    match std::thread::Builder::new()
        .name("coffer-notify".into())
        .spawn(move || ping(&e, PingKind::Start, ""))
    {
        Ok(h) => Pending::Sending(h),
        Err(_) => Pending::Sent(ping(&inline, PingKind::Start, "")),
    }
}

/// After a session: wait for the start ping, then send the success ping (the session left
/// a complete archive: succeeded or warnings) or the failure ping with the one-line error
/// (failed, interrupted, or `Err` with the error that ended it before it was recorded).
/// Returns the pings that failed, for the caller to log; nothing here changes the session.
pub fn ping_end(
    pending: Pending,
    notify: &Notify,
    outcome: Result<&SessionRow, String>,
) -> Vec<PingError> {
    let mut failed = Vec::new();
    let start = match pending {
        Pending::None => Ok(()),
        Pending::Sending(h) => h.join().unwrap_or(Ok(())),
        Pending::Sent(r) => r,
    };
    if let Err(e) = start {
        failed.push(e);
    }
    let (kind, message) = match outcome {
        Ok(row) if row.state.completed() => (PingKind::Success, String::new()),
        Ok(row) => (
            PingKind::Failure,
            row.error
                .clone()
                .unwrap_or_else(|| format!("session {} {}", row.id, row.state)),
        ),
        Err(message) => (PingKind::Failure, message),
    };
    if let Some(e) = notify.endpoint(kind)
        && let Err(err) = ping(e, kind, &message)
    {
        failed.push(err);
    }
    failed
}

/// A ping that did not get a 2xx answer in time.
#[derive(Debug, thiserror::Error)]
#[error("notify {kind} ping to {endpoint} failed: {detail}")]
pub struct PingError {
    pub kind: &'static str,
    /// Scheme, host and port only (see the module docs).
    pub endpoint: String,
    pub detail: String,
}

/// Send the `kind` ping to `endpoint`: GET for start and success, POST with `message` (cut
/// to one line of at most [`MAX_BODY`] bytes) for a failure. Takes at most about
/// [`TOTAL_TIMEOUT`].
pub fn ping(endpoint: &Endpoint, kind: PingKind, message: &str) -> Result<(), PingError> {
    let body = (kind == PingKind::Failure).then(|| one_line(message));
    let result = match endpoint.scheme {
        Scheme::Http => http_request(endpoint, body.as_deref()),
        Scheme::Https => https_request(endpoint, body.as_deref()),
    };
    result.map_err(|detail| PingError {
        kind: kind.as_str(),
        endpoint: endpoint.shown(),
        detail,
    })
}

/// The first line of `s`, at most [`MAX_BODY`] bytes (cut at a character boundary).
pub fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    let mut end = line.len().min(MAX_BODY);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// One HTTP/1.1 request over a plain TCP connection; Ok on a 2xx status line.
fn http_request(e: &Endpoint, body: Option<&str>) -> Result<(), String> {
    let deadline = Instant::now() + TOTAL_TIMEOUT;
    let addrs = (e.host.as_str(), e.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {}: {err}", e.host))?;
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left.min(CONNECT_TIMEOUT)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last = format!("cannot connect: {err}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let method = if body.is_some() { "POST" } else { "GET" };
    let host = if e.host.contains(':') {
        format!("[{}]", e.host)
    } else {
        e.host.clone()
    };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: coffer/{}\r\nAccept: */*\r\nConnection: close\r\n",
        e.target,
        e.port,
        env!("CARGO_PKG_VERSION")
    );
    let body = body.unwrap_or_default();
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let timed_out = |what: &str| format!("no answer within {} s ({what})", TOTAL_TIMEOUT.as_secs());
    let left = |deadline: Instant| {
        let d = deadline.saturating_duration_since(Instant::now());
        // A zero timeout means "none" to the socket: never let it be zero.
        d.max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left(deadline)))
        .and_then(|()| stream.write_all(req.as_bytes()))
        .map_err(|err| format!("cannot send the request: {err}"))?;
    // Read until the status line is complete; the rest of the answer is not needed.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        if Instant::now() >= deadline {
            return Err(timed_out("reading the status"));
        }
        stream
            .set_read_timeout(Some(left(deadline)))
            .map_err(|err| err.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out("reading the status"));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the answer: {err}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP".to_string())?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status {status}"))
    }
}

/// One HTTPS request through reqwest (async; a small runtime of its own per ping, built
/// only when an `https://` ping is sent).
#[cfg(feature = "s3")]
fn https_request(e: &Endpoint, body: Option<&str>) -> Result<(), String> {
    // reqwest is built without a bundled TLS provider (see Cargo.toml): install ring's, as
    // the S3 client does; an error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the HTTP client: {err}"))?;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot start the HTTP client: {err}"))?;
    let request = match body {
        Some(b) => client
            .post(e.url())
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(b.to_string()),
        None => client.get(e.url()),
    };
    rt.block_on(async move {
        let answer = request.send().await.map_err(|err| {
            // reqwest's message names the URL; keep the kind only.
            let what = if err.is_timeout() {
                "no answer in time"
            } else if err.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            what.to_string()
        })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP status {}", status.as_u16()))
        }
    })
}

#[cfg(not(feature = "s3"))]
fn https_request(_: &Endpoint, _: Option<&str>) -> Result<(), String> {
    // Refused when the job file is read (Endpoint::parse); kept for completeness of the match.
    Err("https:// needs a coffer built with the s3 feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_shown_without_their_path() {
        let e = Endpoint::parse("http://hc.lan:8000/ping/abc-123?x=1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("hc.lan", 8000));
        assert_eq!(e.target, "/ping/abc-123?x=1");
        assert_eq!(e.shown(), "http://hc.lan:8000");
        let e = Endpoint::parse("http://[::1]/x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("::1", 80, "/x")
        );
        let e = Endpoint::parse("http://h?q").unwrap();
        assert_eq!(e.target, "/?q");
        for bad in [
            "ftp://h/",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        #[cfg(feature = "s3")]
        assert_eq!(Endpoint::parse("https://hc-ping.com/u").unwrap().port, 443);
    }

    #[test]
    fn failure_bodies_are_one_bounded_line() {
        assert_eq!(one_line("disk full\nat /srv"), "disk full");
        let long = "é".repeat(MAX_BODY);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_BODY && cut.chars().all(|c| c == 'é'));
    }
}
