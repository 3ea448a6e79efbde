//! Archives in S3-compatible object storage, through the real binary, against a real S3
//! server process on 127.0.0.1: moto's server mode with IAM enforced
//! (tests/s3/moto_server.py), which makes a bucket and three users: `admin` (everything),
//! `writer` (PutObject and multipart only: the backup host) and `reader` (GetObject and
//! ListBucket: the restore host).
//!
//! Without python3 + moto these tests print why and pass, unless COFFER_REQUIRE_S3 is
//! set (CI sets it): then a server that cannot start fails them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use crate::common::*;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub(crate) struct Creds {
    pub(crate) key: String,
    pub(crate) secret: String,
}

pub(crate) struct Server {
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) admin: Creds,
    pub(crate) writer: Creds,
    pub(crate) reader: Creds,
    // Held for the life of the test binary: the server stops when its stdin closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn start_server() -> Result<Server, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/moto_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    stdout
        .read_line(&mut line)
        .map_err(|e| format!("reading the server's first line: {e}"))?;
    // Keep reading: a closed pipe would kill the server at its next write (SIGPIPE).
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    if line.trim().is_empty() {
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "the S3 test server did not start ({status}); install it with: pip install 'moto[server]==5.2.5'"
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("server said {line:?}: {e}"))?;
    let creds = |who: &str| Creds {
        key: v[who]["key"].as_str().unwrap().to_string(),
        secret: v[who]["secret"].as_str().unwrap().to_string(),
    };
    Ok(Server {
        endpoint: v["endpoint"].as_str().unwrap().to_string(),
        bucket: v["bucket"].as_str().unwrap().to_string(),
        admin: creds("admin"),
        writer: creds("writer"),
        reader: creds("reader"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    })
}

/// The shared server, or `None` (after saying why) when it cannot run here.
pub(crate) fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start_server) {
        Ok(s) => Some(s),
        Err(why) if std::env::var_os("COFFER_REQUIRE_S3").is_some() => {
            panic!("COFFER_REQUIRE_S3 is set but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no S3 test server: {why}");
            None
        }
    }
}

impl Server {
    pub(crate) fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// `coffer` talking to this server as `who`.
    pub(crate) fn coffer(&self, who: &Creds) -> assert_cmd::Command {
        let mut c = coffer_cmd();
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &who.key)
            .env("AWS_SECRET_ACCESS_KEY", &who.secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        c
    }

    fn coffer_std(&self, who: &Creds) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("coffer"));
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &who.key)
            .env("AWS_SECRET_ACCESS_KEY", &who.secret)
            .env_remove("RUST_LOG");
        c
    }

    /// Direct access to the bucket as admin, to look at what coffer left there.
    pub(crate) fn admin_store(&self) -> Arc<dyn ObjectStore> {
        // coffer's reqwest has no bundled TLS provider (Cargo.toml); this client needs one too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(&self.bucket)
                .with_access_key_id(&self.admin.key)
                .with_secret_access_key(&self.admin.secret)
                .build()
                .unwrap(),
        )
    }

    pub(crate) fn download(&self, key: &str) -> Vec<u8> {
        let store = self.admin_store();
        rt().block_on(async {
            store
                .get(&ObjectPath::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    /// An object of another bucket of this server, read as admin.
    pub(crate) fn admin_store_of(&self, bucket: &str, key: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(&self.admin.key)
            .with_secret_access_key(&self.admin.secret)
            .build()
            .unwrap();
        rt().block_on(async {
            store
                .get(&ObjectPath::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    pub(crate) fn upload(&self, key: &str, bytes: Vec<u8>) {
        let store = self.admin_store();
        rt().block_on(async {
            store
                .put(&ObjectPath::from(key), PutPayload::from(bytes))
                .await
                .unwrap();
        });
    }

    /// Object names under `prefix/`.
    pub(crate) fn list(&self, prefix: &str) -> Vec<String> {
        let store = self.admin_store();
        let mut names: Vec<String> = rt().block_on(async {
            store
                .list_with_delimiter(Some(&ObjectPath::from(prefix)))
                .await
                .unwrap()
                .objects
                .into_iter()
                .map(|m| m.location.filename().unwrap().to_string())
                .collect()
        });
        names.sort();
        names
    }
}

pub(crate) fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `coffer backup SRC -o URL -r KEY... EXTRA... -q` as the write-only backup host.
fn writer_backup(s3: &Server, src: &Path, url: &str, recipients: &[&Path], extra: &[&str]) {
    let mut cmd = s3.coffer(&s3.writer);
    cmd.arg("backup")
        .arg(src)
        .args(["-o", url, "-q"])
        .args(extra);
    for r in recipients {
        cmd.arg("-r").arg(r);
    }
    cmd.assert().success();
}

/// Run a restore that must fail (exit 2); its stderr.
fn restore_fails(s3: &Server, who: &Creds, url: &str, key: &Path, to: &Path) -> String {
    let out = s3
        .coffer(who)
        .args(["restore", url, "-i"])
        .arg(key)
        .arg("--to")
        .arg(to)
        .assert()
        .code(2)
        .get_output()
        .clone();
    stderr_of(&out)
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

#[test]
fn backup_with_a_write_only_key_restores_with_a_read_only_key() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    let url = s3.url("write-only/a.coffer");

    writer_backup(s3, &src, &url, &[&alice_pub(), &bob_pub()], &[]);
    s3.coffer(&s3.reader)
        .args(["restore", &url, "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("out"))
        .arg("-q")
        .assert()
        .success();
    assert_trees_equal(&src, &t.join("out/src"));
    s3.coffer(&s3.reader)
        .args(["list", &url, "-i"])
        .arg(bob_key())
        .assert()
        .success()
        .stdout(predicates::str::contains("src/"));

    // The backup host can neither read what it wrote nor delete it.
    let err = restore_fails(s3, &s3.writer, &url, &alice_key(), &t.join("out2"));
    assert!(
        err.contains("access denied") && err.contains("403"),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains("write-only"),
        "{err}"
    );
    assert!(!t.join("out2").join("src").exists());
}

#[test]
fn backup_to_a_prefix_names_the_archive_itself() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    let out = s3
        .coffer(&s3.writer)
        .arg("backup")
        .arg(&src)
        .args([
            "--to",
            &s3.url("named"),
            "--job-name",
            "host1",
            "--json",
            "-r",
        ])
        .arg(alice_pub())
        .assert()
        .success()
        .get_output()
        .clone();
    let archive = json_of(&out)["archive"].as_str().unwrap().to_string();
    let names = s3.list("named");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("host1-") && names[0].ends_with(".coffer"));
    assert_eq!(archive, s3.url(&format!("named/{}", names[0])));
}

#[test]
fn archive_bytes_are_the_same_on_s3_and_on_disk() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    write_file(&src.join("big.bin"), &pseudo_random(9 << 20, 3), 0o644);
    let url = s3.url("same-bytes/a.coffer");
    writer_backup(s3, &src, &url, &[&alice_pub()], &["--compression", "none"]);

    // Downloaded, the object is an ordinary archive file: it verifies and restores.
    let local = t.join("downloaded.coffer");
    std::fs::write(&local, s3.download("same-bytes/a.coffer")).unwrap();
    coffer_cmd()
        .arg("verify")
        .arg(&local)
        .arg("-i")
        .arg(alice_key())
        .assert()
        .success();
    let info_remote = json_of(
        &s3.coffer(&s3.reader)
            .args(["info", "--json", &url])
            .output()
            .unwrap(),
    );
    let info_local = json_of(
        &coffer_cmd()
            .args(["info", "--json"])
            .arg(&local)
            .output()
            .unwrap(),
    );
    let (r, l) = (&info_remote["archives"][0], &info_local["archives"][0]);
    assert_eq!(r["session_id"], l["session_id"]);
    assert_eq!(r["size"], l["size"]);

    // And an archive made on disk, uploaded as it is, restores from the bucket.
    let on_disk = t.join("disk.coffer");
    coffer_cmd()
        .arg("backup")
        .arg(&src)
        .arg("-o")
        .arg(&on_disk)
        .arg("-r")
        .arg(alice_pub())
        .arg("-q")
        .assert()
        .success();
    s3.upload("same-bytes/disk.coffer", std::fs::read(&on_disk).unwrap());
    s3.coffer(&s3.reader)
        .args(["restore", &s3.url("same-bytes/disk.coffer"), "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("out"))
        .arg("-q")
        .assert()
        .success();
    assert_trees_equal(&src, &t.join("out/src"));
    assert_eq!(
        s3.download("same-bytes/disk.coffer"),
        std::fs::read(&on_disk).unwrap()
    );
}

#[test]
fn selective_restore_fetches_only_the_blocks_it_needs() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_file(&src.join("big.bin"), &pseudo_random(12 << 20, 5), 0o644);
    write_file(&src.join("note.txt"), b"the one file we want\n", 0o644);
    let url = s3.url("selective/a.coffer");
    let small_blocks = ["--block-size", "64K", "--compression", "none"];
    writer_backup(s3, &src, &url, &[&alice_pub()], &small_blocks);
    let object_len = s3.download("selective/a.coffer").len() as u64;

    let out = s3
        .coffer(&s3.reader)
        .args(["restore", &url, "--json", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("one"))
        .arg("src/note.txt")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report = json_of(&out);
    let fetched = report["remote_bytes_fetched"].as_u64().unwrap();
    assert_eq!(report["blocks"], 1);
    assert!(
        fetched * 20 < object_len,
        "fetched {fetched} of {object_len} bytes for one small file"
    );
    assert_eq!(
        std::fs::read(t.join("one/src/note.txt")).unwrap(),
        b"the one file we want\n"
    );
    assert!(!t.join("one/src/big.bin").exists());

    // A full restore streams the object about once.
    let out = s3
        .coffer(&s3.reader)
        .args(["restore", &url, "--json", "-i"])
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("all"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let fetched = json_of(&out)["remote_bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched >= object_len && fetched <= object_len + (16 << 10),
        "fetched {fetched} for an object of {object_len}"
    );
    assert_trees_equal(&src, &t.join("all/src"));
}

#[test]
fn verify_on_s3_passes_and_then_finds_a_damaged_block() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_file(&src.join("data.bin"), &pseudo_random(3 << 20, 8), 0o644);
    let key = "verify/a.coffer";
    let url = s3.url(key);
    let small_blocks = ["--block-size", "256K", "--compression", "none"];
    writer_backup(s3, &src, &url, &[&alice_pub()], &small_blocks);
    s3.coffer(&s3.reader)
        .args(["verify", &url])
        .assert()
        .success();
    s3.coffer(&s3.reader)
        .args(["verify", &url, "-i"])
        .arg(alice_key())
        .assert()
        .success();

    let mut bytes = s3.download(key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    s3.upload(key, bytes);
    for keyed in [false, true] {
        let mut cmd = s3.coffer(&s3.reader);
        cmd.args(["verify", &url]);
        if keyed {
            cmd.arg("-i").arg(alice_key());
        }
        let out = cmd.assert().code(2).get_output().clone();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        assert!(text.contains("FAILED") && text.contains("block"), "{text}");
    }
}

/// As the restore host: `removed` no longer opens the object at `url`, and `kept` restores
/// it equal to `src`.
fn restores_only_with(
    s3: &Server,
    t: &TestDir,
    src: &Path,
    url: &str,
    removed: &Path,
    kept: &Path,
) {
    let out = s3
        .coffer(&s3.reader)
        .args(["restore", url, "-i"])
        .arg(removed)
        .arg("--to")
        .arg(t.join("removed"))
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("no recipient"),
        "{}",
        stderr_of(&out)
    );
    s3.coffer(&s3.reader)
        .args(["restore", url, "-q", "-i"])
        .arg(kept)
        .arg("--to")
        .arg(t.join("kept"))
        .assert()
        .success();
    assert_trees_equal(src, &t.join("kept").join(src.file_name().unwrap()));
}

#[test]
fn rekey_on_s3_rewrites_the_header_and_keeps_every_other_byte() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    let key = "rekey/a.coffer";
    let url = s3.url(key);
    writer_backup(s3, &src, &url, &[&alice_pub(), &bob_pub()], &[]);
    let before = s3.download(key);

    s3.coffer(&s3.admin)
        .args(["rekey", &url, "-i"])
        .arg(alice_key())
        .arg("--remove")
        .arg(bob_pub())
        .arg("--add")
        .arg(carol_pub())
        .assert()
        .success();
    let after = s3.download(key);
    let local_before = t.join("before.coffer");
    std::fs::write(&local_before, &before).unwrap();
    let data_start = coffer::archive::Archive::open(&local_before)
        .unwrap()
        .data_start() as usize;
    let new_start = after.len() - (before.len() - data_start);
    assert_eq!(&after[new_start..], &before[data_start..]);

    restores_only_with(s3, &t, &src, &url, &bob_key(), &carol_key());
}

#[test]
fn reencrypt_on_s3_replaces_the_object_under_a_new_session_key() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    // Larger than two upload parts, so the new object is a multipart upload that completes
    // only after every block of the old one was read.
    write_file(
        &src.join("big.bin"),
        &pseudo_random(2 * coffer::storage::s3::PART_SIZE + 12_345, 7),
        0o644,
    );
    let key = "reencrypt/a.coffer";
    let url = s3.url(key);
    writer_backup(s3, &src, &url, &[&alice_pub(), &bob_pub()], &[]);
    let local_before = t.join("before.coffer");
    std::fs::write(&local_before, s3.download(key)).unwrap();

    let out = s3
        .coffer(&s3.admin)
        .args(["rekey", &url, "--reencrypt", "-i"])
        .arg(alice_key())
        .arg("--remove")
        .arg(bob_pub())
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(stderr_of(&out).starts_with("note: "), "{}", stderr_of(&out));
    let local_after = t.join("after.coffer");
    std::fs::write(&local_after, s3.download(key)).unwrap();
    let (before, after) = (
        coffer::archive::Archive::open(&local_before).unwrap(),
        coffer::archive::Archive::open(&local_after).unwrap(),
    );
    assert_ne!(before.session_id_hex(), after.session_id_hex());
    assert_eq!(after.recipients().len(), 1);
    // One object under the prefix: the upload replaced it, nothing was left beside it.
    assert_eq!(s3.list("reencrypt"), vec!["a.coffer"]);

    restores_only_with(s3, &t, &src, &url, &bob_key(), &alice_key());
}

#[test]
fn job_with_an_s3_destination_runs_records_history_and_prunes() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    let state = t.join("state");
    let config = t.join("jobs.toml");
    std::fs::write(
        &config,
        format!(
            "[s3]\nendpoint = {:?}\nregion = \"us-east-1\"\n\n[job.home]\nsources = [{:?}]\nrecipients = [{:?}]\ndestination = {:?}\nretention = {{ keep_last = 1 }}\n",
            s3.endpoint,
            src,
            alice_pub(),
            s3.url("jobs/home")
        ),
    )
    .unwrap();
    let job = |who: &Creds| {
        let mut c = s3.coffer(who);
        c.env_remove("AWS_ENDPOINT_URL")
            .env("COFFER_CONFIG", &config)
            .env("COFFER_STATE_DIR", &state)
            .env("HOME", t.join("home"));
        c
    };
    job(&s3.writer).args(["job", "check"]).assert().success();
    // The backup host's write-only key is enough for sessions.
    for _ in 0..3 {
        job(&s3.writer)
            .args(["job", "run", "home", "-q"])
            .assert()
            .success();
    }
    let names = s3.list("jobs/home");
    assert_eq!(names.len(), 3, "{names:?}");

    let out = job(&s3.writer)
        .args(["history", "home", "--json"])
        .output()
        .unwrap();
    let history = json_of(&out);
    let text = history.to_string();
    assert_eq!(
        text.matches(&s3.url("jobs/home/home-")).count(),
        3,
        "{text}"
    );

    // Retention needs delete permission: the write-only key is refused, clearly.
    let out = job(&s3.writer).args(["prune", "home"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(said.contains("access denied"), "{said}");
    assert_eq!(s3.list("jobs/home").len(), 3);

    job(&s3.admin).args(["prune", "home"]).assert().success();
    let left = s3.list("jobs/home");
    assert_eq!(left.len(), 1, "{left:?}");
    let newest = history["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| r["id"].as_i64())
        .unwrap()["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        newest,
        s3.url(&format!("jobs/home/{}", left[0])),
        "the newest archive is kept"
    );
    s3.coffer(&s3.reader)
        .args([
            "restore",
            &s3.url(&format!("jobs/home/{}", left[0])),
            "-q",
            "-i",
        ])
        .arg(alice_key())
        .arg("--to")
        .arg(t.join("out"))
        .assert()
        .success();
}

/// Start a backup of `bytes` of data as the writer with -vv, wait until it has sent
/// `parts` parts, then hand the process over.
fn backup_until_parts_sent(
    s3: &Server,
    t: &TestDir,
    key: &str,
    parts: u64,
) -> (Child, std::thread::JoinHandle<Vec<String>>) {
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_file(&src.join("big.bin"), &pseudo_random(96 << 20, 11), 0o644);
    let mut child = s3
        .coffer_std(&s3.writer)
        .arg("-vv")
        .arg("backup")
        .arg(&src)
        .args(["-o", &s3.url(key), "--compression", "none", "-r"])
        .arg(alice_pub())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let wanted = format!("part={parts}");
    loop {
        let line = lines
            .next()
            .expect("the backup ended before uploading enough parts")
            .unwrap();
        if line.contains("uploading part") && line.contains(&wanted) {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe; hand back what it said.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
    (child, rest)
}

#[test]
fn upload_killed_midway_leaves_no_object() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let key = "killed/a.coffer";
    let (mut child, _) = backup_until_parts_sent(s3, &t, key, 2);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(s3.list("killed").is_empty(), "{:?}", s3.list("killed"));
    let out = s3
        .coffer(&s3.reader)
        .args(["info", &s3.url(key)])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("no such object"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn interrupted_backup_aborts_its_upload() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let key = "interrupted/a.coffer";
    let (mut child, _) = backup_until_parts_sent(s3, &t, key, 2);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(s3.list("interrupted").is_empty());
}

#[test]
fn bad_credentials_and_missing_things_are_one_clear_error_each() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    build_sample_tree(&src);
    let wrong_secret = Creds {
        key: s3.writer.key.clone(),
        secret: "not-the-secret".into(),
    };
    let unknown_key = Creds {
        key: "AKIAUNKNOWNUNKNOWN00".into(),
        secret: "whatever".into(),
    };
    for (who, code) in [
        (&wrong_secret, "SignatureDoesNotMatch"),
        (&unknown_key, "InvalidAccessKeyId"),
    ] {
        let out = s3
            .coffer(who)
            .arg("backup")
            .arg(&src)
            .args(["-o", &s3.url("creds/a.coffer"), "-r"])
            .arg(alice_pub())
            .assert()
            .code(2)
            .get_output()
            .clone();
        let err = stderr_of(&out);
        assert!(
            err.contains("credentials refused") && err.contains(code),
            "{err}"
        );
        assert!(err.contains("hint: check AWS_ACCESS_KEY_ID"), "{err}");
        assert_eq!(err.lines().count(), 2, "one error line and one hint: {err}");
    }
    assert!(s3.list("creds").is_empty());

    let cases = [
        ("s3://no-such-bucket/a.coffer", "no such bucket"),
        (&*s3.url("missing/none.coffer"), "no such object"),
    ];
    for (url, said) in cases {
        let out = s3
            .coffer(&s3.admin)
            .args(["info", url])
            .assert()
            .code(2)
            .get_output()
            .clone();
        let err = stderr_of(&out);
        assert!(err.contains(said) && err.contains(url), "{err}");
    }
    let out = s3
        .coffer(&s3.writer)
        .arg("backup")
        .arg(&src)
        .args(["-o", "s3://no-such-bucket/a.coffer", "-r"])
        .arg(alice_pub())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("no such bucket") || err.contains("access denied"),
        "{err}"
    );
}
