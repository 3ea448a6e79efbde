//! Helpers shared by the job tests (tests/job_*.rs): a temp folder per test with its own
//! state folder and HOME (so no test touches the real home), keys, job files, and the
//! `coffer` binary with that environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coffer::job::catalog::SessionRow;
use coffer::job::{Catalog, StateDir};
use coffer::recipient::RsaIdentity;

/// A private key and its public key file.
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// The TEST-ONLY fixture keys if present; otherwise a 2048-bit pair generated once per
/// test binary.
pub fn keys() -> &'static KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys");
        let (private, public) = (fixtures.join("alice.key"), fixtures.join("alice.key.pub"));
        if private.is_file() && public.is_file() {
            return KeyPair { private, public };
        }
        let dir = tempfile::Builder::new()
            .prefix("coffer-job-keys-")
            .tempdir()
            .unwrap()
            .keep();
        let id = RsaIdentity::generate(2048).unwrap();
        let private = dir.join("test.key");
        let public = dir.join("test.key.pub");
        std::fs::write(&private, id.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        std::fs::write(
            &public,
            id.to_recipient("test".into()).unwrap().to_pem().unwrap(),
        )
        .unwrap();
        KeyPair { private, public }
    })
}

/// One test's world: a temp folder holding sources, destinations, the job file and state.
pub struct World {
    dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        World {
            dir: tempfile::Builder::new()
                .prefix("coffer-job-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.join("state")
    }

    pub fn config(&self) -> PathBuf {
        self.join("jobs.toml")
    }

    /// Write the job file; `{KEY}` is replaced by the public key's path.
    pub fn write_config(&self, body: &str) -> PathBuf {
        let body = body.replace("{KEY}", keys().public.to_str().unwrap());
        std::fs::write(self.config(), body).unwrap();
        self.config()
    }

    /// A small tree `name/` with a few files; returns its path.
    pub fn small_tree(&self, name: &str) -> PathBuf {
        let root = self.join(name);
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello, jobs\n").unwrap();
        std::fs::write(root.join("sub/data.bin"), pseudo_random(70_000, 7)).unwrap();
        std::fs::write(root.join("skip.tmp"), b"excluded").unwrap();
        root
    }

    /// A folder holding one sparse file of `gib` GiB: reading it takes a while (seconds),
    /// but it costs little disk space and no time to make.
    pub fn slow_tree(&self, name: &str, gib: u64) -> PathBuf {
        let root = self.join(name);
        std::fs::create_dir_all(&root).unwrap();
        crate::common::slow_sparse_file(&root.join("sparse.img"), gib << 30);
        root
    }

    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `coffer` with this world's state folder and a HOME inside the temp folder.
    pub fn coffer(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("coffer").unwrap();
        self.env(c.env_clear());
        c
    }

    /// The same as a std Command (for signals).
    pub fn coffer_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("coffer"));
        c.env_clear();
        self.env_std(&mut c);
        c
    }

    fn env<'a>(&self, c: &'a mut assert_cmd::Command) -> &'a mut assert_cmd::Command {
        c.env("HOME", self.join("home"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("COFFER_STATE_DIR", self.state_dir())
            .env("COFFER_CONFIG", self.config())
    }

    fn env_std(&self, c: &mut std::process::Command) {
        c.env("HOME", self.join("home"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("COFFER_STATE_DIR", self.state_dir())
            .env("COFFER_CONFIG", self.config());
    }

    /// The catalog, opened without recovering anything (to see raw rows).
    pub fn catalog(&self) -> Catalog {
        Catalog::open(&StateDir::new(self.state_dir())).unwrap()
    }

    pub fn sessions(&self, job: &str) -> Vec<SessionRow> {
        self.catalog().sessions(Some(job), None).unwrap()
    }

    /// Files in `dir` (names, sorted).
    pub fn files(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

/// Deterministic incompressible bytes (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Poll `cond` every 5 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Send a signal with the `kill` command.
pub fn kill(signal: &str, pid: u32) {
    let st = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {pid} failed");
}

/// Wait for a child with a time limit; kills it (and fails) if it does not end.
pub fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not end within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no
/// background backup running.
pub struct Guard(pub std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names in `dir` that are a session's temporary files (`.x.staging`, `..x.partial`).
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".partial") || n.ends_with(".staging"))
        .collect()
}
