//! A hostile S3 endpoint cannot make coffer take memory. A tiny HTTP server in the test
//! serves a real archive and lies in one answer: 1 GiB of body for the 36-byte trailer (or
//! the 8 KiB header) range, another range than asked, too few bytes, a 1 GiB error
//! document declared or streamed without a length. Keyless `coffer info` must fail with
//! exit 2 and an error naming the object and the offset, and its peak resident memory must
//! stay far below what the server offered.
//!
//! No moto: the server is a `TcpListener` thread that speaks just enough HTTP/1.1 for
//! object_store, so these tests always run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;
use coffer::Compression;
use coffer::recipient::Recipient;

/// What the lying answers offer: far more than any request of `info`.
const OFFERED: u64 = 1 << 30;
/// Peak RSS allowed to `coffer info`: ten times what it takes (about 10 MiB), a tenth of
/// [`OFFERED`]. Before the fix, buffering the lie took 1 GiB (5 GiB for the error bodies).
const MAX_PEAK: u64 = 100 << 20;
/// Bytes the server may get into the socket before a client that stopped reading makes its
/// writes fail (loopback socket buffers are a few MiB).
const MAX_SENT: u64 = 64 << 20;
const TRAILER_LEN: u64 = 36;
const BUCKET: &str = "bkp";
const KEY: &str = "x.coffer";

#[derive(Clone, Copy, Debug)]
enum Lie {
    /// 206 with the Content-Range asked for, but a Content-Length of [`OFFERED`] and that
    /// many bytes.
    LongBody,
    /// 206 naming [`OFFERED`] bytes from the object's start, and sending them.
    OtherRange,
    /// 206 with the Content-Range asked for, but 10 bytes.
    ShortBody,
    /// 403 with an error document of [`OFFERED`] bytes, declared in Content-Length.
    HugeError,
    /// 403 with an error document of [`OFFERED`] bytes in chunks, no length declared.
    EndlessError,
}

/// The lying server: honest but for each GET of a range starting at `lie_at`.
struct Server {
    port: u16,
    done: Arc<AtomicBool>,
    /// Bytes of lying body the server managed to write.
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(archive: Vec<u8>, lie: Lie, lie_at: u64) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let done = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop, count) = (done.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // Stops by itself: when the test is done, after a bounded number of connections,
            // or after a minute whatever happens.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut connections = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && connections < 32 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections += 1;
                        // A client that hangs up mid-answer is what a refusal looks like.
                        let _ = answer(stream, &archive, lie, lie_at, &count);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            port,
            done,
            sent,
            thread: Some(thread),
        }
    }

    /// Stop the server; the lying bytes it wrote.
    fn stop(mut self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
        self.sent.load(Ordering::Relaxed)
    }
}

/// Answer one request on its own connection (`Connection: close`).
fn answer(
    stream: TcpStream,
    archive: &[u8],
    lie: Lie,
    lie_at: u64,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = value.trim().strip_prefix("bytes=").and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            });
        }
    }
    let mut out = stream;
    let len = archive.len() as u64;
    let head = |status: &str, headers: &[String]| {
        let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text
    };
    let method = request_line.split(' ').next().unwrap_or("");
    let path_ok = request_line.contains(&format!("/{BUCKET}/{KEY} "));
    match (method, range) {
        ("HEAD", _) if path_ok => {
            out.write_all(head("200 OK", &[format!("Content-Length: {len}")]).as_bytes())?
        }
        ("GET", Some((first, _))) if path_ok && first >= len => {
            let body = "<Error><Code>InvalidRange</Code></Error>";
            let headers = [format!("Content-Length: {}", body.len())];
            out.write_all(head("416 Range Not Satisfiable", &headers).as_bytes())?;
            out.write_all(body.as_bytes())?;
        }
        ("GET", Some((first, last))) if path_ok && first == lie_at => {
            let end = (last + 1).min(len);
            let asked = format!("Content-Range: bytes {first}-{}/{len}", end - 1);
            match lie {
                Lie::LongBody => {
                    let headers = [asked, format!("Content-Length: {OFFERED}")];
                    out.write_all(head("206 Partial Content", &headers).as_bytes())?;
                    send_zeros(&mut out, OFFERED, false, sent)?;
                }
                Lie::OtherRange => {
                    let headers = [
                        format!("Content-Range: bytes 0-{}/{OFFERED}", OFFERED - 1),
                        format!("Content-Length: {OFFERED}"),
                    ];
                    out.write_all(head("206 Partial Content", &headers).as_bytes())?;
                    send_zeros(&mut out, OFFERED, false, sent)?;
                }
                Lie::ShortBody => {
                    let headers = [asked, "Content-Length: 10".to_string()];
                    out.write_all(head("206 Partial Content", &headers).as_bytes())?;
                    out.write_all(&archive[first as usize..first as usize + 10])?;
                }
                Lie::HugeError => {
                    let headers = [
                        "Content-Type: application/xml".to_string(),
                        format!("Content-Length: {OFFERED}"),
                    ];
                    out.write_all(head("403 Forbidden", &headers).as_bytes())?;
                    send_zeros(&mut out, OFFERED, false, sent)?;
                }
                Lie::EndlessError => {
                    let headers = [
                        "Content-Type: application/xml".to_string(),
                        "Transfer-Encoding: chunked".to_string(),
                    ];
                    out.write_all(head("403 Forbidden", &headers).as_bytes())?;
                    send_zeros(&mut out, OFFERED, true, sent)?;
                }
            }
        }
        ("GET", Some((first, last))) if path_ok => {
            let end = (last + 1).min(len);
            let headers = [
                format!("Content-Range: bytes {first}-{}/{len}", end - 1),
                format!("Content-Length: {}", end - first),
            ];
            out.write_all(head("206 Partial Content", &headers).as_bytes())?;
            out.write_all(&archive[first as usize..end as usize])?;
        }
        _ => {
            let body = "<Error><Code>NoSuchKey</Code></Error>";
            let headers = [format!("Content-Length: {}", body.len())];
            out.write_all(head("404 Not Found", &headers).as_bytes())?;
            out.write_all(body.as_bytes())?;
        }
    }
    out.flush()
}

/// Write `total` zero bytes (as chunks of a chunked body if `chunked`), counting them.
fn send_zeros(
    out: &mut TcpStream,
    total: u64,
    chunked: bool,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let block = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if chunked {
            out.write_all(format!("{n:x}\r\n").as_bytes())?;
        }
        out.write_all(&block[..n])?;
        if chunked {
            out.write_all(b"\r\n")?;
        }
        sent.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// What a run of the binary gave.
struct Run {
    code: Option<i32>,
    stderr: String,
    /// Peak resident memory (VmHWM), bytes.
    peak: u64,
}

/// Run `cmd` to its end, sampling its peak resident memory every millisecond. VmHWM only
/// grows, so the last sample before exit is the peak up to then; a reader that buffered
/// the lie would need far longer than a millisecond to pull 1 GiB through loopback, so a
/// run that was not bounded cannot slip between two samples.
fn run_measured(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run coffer");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let started = Instant::now();
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().expect("wait for coffer") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("coffer info did not finish in two minutes");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Run {
        code: status.code(),
        stderr: reader.join().expect("stderr reader"),
        peak,
    }
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A real archive larger than the 8 KiB read at open, so the trailer takes its own GET.
fn archive_bytes(t: &TestDir) -> Vec<u8> {
    let src = t.join("src");
    write_file(&src.join("data.bin"), &pseudo_random(64 << 10, 5), 0o644);
    let out = t.join("a.coffer");
    backup_v1_with(
        &[&src],
        &out,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.len() as u64 > (8 << 10) + TRAILER_LEN);
    bytes
}

/// Keyless `coffer info` of the object on the server at `port`.
fn info_cmd(port: u16) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("coffer"));
    cmd.args(["info", &format!("s3://{BUCKET}/{KEY}")])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    for var in [
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "RUST_LOG",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Keyless `coffer info` against a server that lies at `lie_at`; checks the exit code, the
/// bound on memory and on what the client read, and returns the stderr.
fn info_against(archive: &[u8], lie: Lie, lie_at: u64) -> String {
    let server = Server::start(archive.to_vec(), lie, lie_at);
    let run = run_measured(info_cmd(server.port));
    let sent = server.stop();
    eprintln!(
        "{lie:?} at {lie_at}: exit {:?}, peak RSS {} KiB, server wrote {} KiB of lie\n{}",
        run.code,
        run.peak >> 10,
        sent >> 10,
        run.stderr
    );
    assert_eq!(run.code, Some(2), "{lie:?}: {}", run.stderr);
    assert!(
        run.peak > 0 && run.peak < MAX_PEAK,
        "{lie:?}: peak RSS {} MiB with {} MiB offered",
        run.peak >> 20,
        OFFERED >> 20
    );
    assert!(
        sent < MAX_SENT,
        "{lie:?}: the client read on: the server wrote {} MiB",
        sent >> 20
    );
    run.stderr
}

fn assert_names(stderr: &str, offset: u64, detail: &str) {
    let expected = format!(
        "s3://{BUCKET}/{KEY}: object storage answered the read at offset {offset} wrongly: {detail}"
    );
    assert!(
        stderr.contains(&expected),
        "want {expected:?} in:\n{stderr}"
    );
}

#[test]
fn regression_s3_oversized_range_body_is_bounded() {
    let t = TestDir::new();
    let archive = archive_bytes(&t);
    let trailer_at = archive.len() as u64 - TRAILER_LEN;
    let stderr = info_against(&archive, Lie::LongBody, trailer_at);
    assert_names(
        &stderr,
        trailer_at,
        &format!("Content-Length {OFFERED} for a 36-byte range"),
    );
    // The first GET, which also learns the object's size.
    let stderr = info_against(&archive, Lie::LongBody, 0);
    assert_names(
        &stderr,
        0,
        &format!("Content-Length {OFFERED} for a 8192-byte range"),
    );
}

#[test]
fn s3_answer_with_another_range_or_too_few_bytes_is_refused() {
    let t = TestDir::new();
    let archive = archive_bytes(&t);
    let len = archive.len() as u64;
    let trailer_at = len - TRAILER_LEN;
    let stderr = info_against(&archive, Lie::OtherRange, trailer_at);
    assert_names(
        &stderr,
        trailer_at,
        &format!(
            "Content-Range \"bytes 0-{}/{OFFERED}\" for bytes {trailer_at}..{len} asked",
            OFFERED - 1
        ),
    );
    let stderr = info_against(&archive, Lie::ShortBody, trailer_at);
    assert_names(&stderr, trailer_at, "Content-Length 10 for a 36-byte range");
}

#[test]
fn regression_s3_oversized_error_body_is_bounded() {
    let t = TestDir::new();
    let archive = archive_bytes(&t);
    let trailer_at = archive.len() as u64 - TRAILER_LEN;
    let stderr = info_against(&archive, Lie::HugeError, trailer_at);
    assert_names(
        &stderr,
        trailer_at,
        &format!("status 403 with a {OFFERED}-byte body (at most 1048576 accepted)"),
    );
    let stderr = info_against(&archive, Lie::EndlessError, trailer_at);
    assert_names(
        &stderr,
        trailer_at,
        "more than the 1048576 bytes of body it may send",
    );
}

#[test]
fn the_lying_server_is_honest_outside_its_lie() {
    // The checks above are only worth something if the same server, not lying, serves an
    // archive `info` reads: the lie sits where no request goes.
    let t = TestDir::new();
    let archive = archive_bytes(&t);
    let server = Server::start(archive.clone(), Lie::LongBody, u64::MAX);
    let out = info_cmd(server.port).output().unwrap();
    assert_eq!(server.stop(), 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fingerprint = recipient(&alice_pub()).fingerprint().to_string();
    assert!(stdout.contains(&fingerprint), "{stdout}");
    assert!(
        stdout.contains(&format!("({} bytes)", archive.len())),
        "{stdout}"
    );
}
