//! Notifications through the binary, against HTTP servers started by the test: the start
//! ping arrives before the success ping, a failure is POSTed with its one-line error, and
//! an endpoint that is down or never answers costs a few seconds and never fails the job.

use crate::job_common::*;
use coffer::job::catalog::SessionState;
use predicates::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server saw it: method, target, body.
type Seen = (String, String, String);

/// A local HTTP server answering 200 to everything; returns its base URL and what it saw.
fn server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split(' ');
            let (method, target) = (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            );
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            log.lock()
                .unwrap()
                .push((method, target, String::from_utf8(body).unwrap()));
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        }
    });
    (base, seen)
}

fn config(w: &World, src: &std::path::Path, notify: &str) {
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\nnotify = {notify}\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\n"
    ));
}

#[test]
fn start_then_success_pings_arrive_in_order() {
    let w = World::new();
    let src = w.small_tree("src");
    let (base, seen) = server();
    config(
        &w,
        &src,
        &format!(
            "{{ start = \"{base}/hc/start\", success = \"{base}/hc?ok=1\", failure = \"{base}/hc/fail\" }}"
        ),
    );
    w.coffer().args(["job", "run", "home"]).assert().success();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("GET".into(), "/hc/start".into(), String::new()),
            ("GET".into(), "/hc?ok=1".into(), String::new()),
        ]
    );
}

#[test]
fn a_failure_is_posted_with_its_one_line_error() {
    let w = World::new();
    let (base, seen) = server();
    config(
        &w,
        &w.join("vanished"),
        &format!(
            "{{ start = \"{base}/start\", success = \"{base}/ok\", failure = \"{base}/fail\" }}"
        ),
    );
    w.coffer().args(["job", "run", "home"]).assert().code(2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("GET", "/start"));
    let (method, target, body) = &seen[1];
    assert_eq!((method.as_str(), target.as_str()), ("POST", "/fail"));
    let recorded = w.sessions("home")[0].error.clone().unwrap();
    assert_eq!(body, recorded.lines().next().unwrap());
    assert!(
        body.contains("vanished") && !body.contains('\n'),
        "{body:?}"
    );
}

#[test]
fn dead_endpoints_cost_seconds_and_never_fail_the_job() {
    let w = World::new();
    let src = w.small_tree("src");
    // Nothing listens on this port once the listener is dropped.
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // This one completes the TCP handshake (the kernel's backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    config(
        &w,
        &src,
        &format!("{{ start = \"http://{silent_addr}/start\", success = \"http://{refused}/ok\" }}"),
    );
    let t = Instant::now();
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "warning: job home: notify start ping to http://{silent_addr} failed: no answer within 5 s"
        )))
        .stderr(predicate::str::contains(format!(
            "warning: job home: notify success ping to http://{refused} failed: cannot connect"
        )));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(w.sessions("home")[0].state, SessionState::Succeeded);
    drop(silent);
}

#[cfg(feature = "s3")]
#[test]
fn an_https_endpoint_that_is_down_is_a_warning_too() {
    let w = World::new();
    let src = w.small_tree("src");
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config(
        &w,
        &src,
        &format!("{{ success = \"https://{refused}/ok\" }}"),
    );
    let t = Instant::now();
    w.coffer()
        .args(["job", "run", "home"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "warning: job home: notify success ping to https://{refused} failed: cannot connect"
        )));
    assert!(t.elapsed() < Duration::from_secs(10));
}
