//! One lock per job (and one for the daemon): an exclusive advisory lock (`flock`) on a
//! file in the state folder. The kernel releases it when the holding process dies, however
//! it dies, so a `kill -9` never leaves a job locked. The holder writes its pid into the
//! file for messages. std's `File::try_lock` is used: no extra crate and no unsafe code.
//!
//! The file is opened without following a symlink and is never truncated: the state folder
//! may be one a user made by hand, and a link planted at a lock's name must not make coffer
//! (often root) write into the file it points to.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::{JobError, JobResult};

/// The folder of lock files.
#[derive(Clone, Debug)]
pub struct LockDir {
    dir: PathBuf,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LockDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LockDir { dir: dir.into() }
    }

    /// Path of the lock file of job `name`.
    pub fn job_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("job-{name}.lock"))
    }

    /// Path of the daemon's lock file.
    pub fn daemon_path(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    /// Take the lock of job `name` if it is free.
    pub fn try_job(&self, name: &str) -> JobResult<Option<Lock>> {
        try_lock(&self.job_path(name))
    }

    /// Take the daemon lock if it is free.
    pub fn try_daemon(&self) -> JobResult<Option<Lock>> {
        try_lock(&self.daemon_path())
    }

    /// Wait for the lock of job `name`, polling so that `stop` is noticed; `None` if
    /// stopped first. `waiting` is called once, with the holder's pid, if the lock was busy.
    pub fn wait_job(
        &self,
        name: &str,
        stop: &AtomicBool,
        waiting: &mut dyn FnMut(Option<u32>),
    ) -> JobResult<Option<Lock>> {
        let path = self.job_path(name);
        let mut told = false;
        loop {
            if let Some(lock) = try_lock(&path)? {
                return Ok(Some(lock));
            }
            if !told {
                waiting(holder_pid(&path));
                told = true;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid written by the current (or last) holder of job `name`'s lock.
    pub fn job_holder(&self, name: &str) -> Option<u32> {
        holder_pid(&self.job_path(name))
    }

    /// The pid of the daemon holding (or last holding) the daemon lock.
    pub fn daemon_holder(&self) -> Option<u32> {
        holder_pid(&self.daemon_path())
    }
}

/// The pid record: always this many bytes (the pid left-aligned, spaces, a newline), so a
/// new holder overwrites the last one's without truncating the file. Wider than any pid
/// (a u32 has at most 10 digits) and than what older versions wrote (the bare digits).
const PID_RECORD: usize = 11;

/// Open a lock file (created 0600; for writing only if `create`), refusing a symlink
/// (O_NOFOLLOW) and anything but a regular file. O_NONBLOCK so that a FIFO cannot hang it.
fn open_lock_file(path: &Path, create: bool) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "is a symbolic link; lock files are never followed (remove the link)",
                )
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "is not a regular file; a lock file must be one (remove it)",
        ));
    }
    Ok(file)
}

fn try_lock(path: &Path) -> JobResult<Option<Lock>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| JobError::io(dir, e))?;
    }
    let mut file = open_lock_file(path, true).map_err(|e| JobError::io(path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(JobError::io(path, e)),
    }
    let record = format!("{:<width$}\n", std::process::id(), width = PID_RECORD - 1);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(record.as_bytes()))
        .map_err(|e| JobError::io(path, e))?;
    Ok(Some(Lock {
        _file: file,
        path: path.to_path_buf(),
    }))
}

fn holder_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    open_lock_file(path, false)
        .ok()?
        .take(PID_RECORD as u64)
        .read_to_string(&mut s)
        .ok()?;
    s.lines().next()?.trim().parse().ok()
}

/// Is a process with this pid alive (Linux: `/proc/<pid>` exists)? A zombie counts as alive
/// until reaped; the lock check catches it anyway.
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockDir::new(dir.path());
        let first = locks.try_job("home").unwrap().expect("free lock");
        assert!(locks.try_job("home").unwrap().is_none());
        assert!(locks.try_job("other").unwrap().is_some());
        assert_eq!(locks.job_holder("home"), Some(std::process::id()));
        drop(first);
        assert!(locks.try_job("home").unwrap().is_some());
    }

    #[test]
    fn wait_returns_none_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockDir::new(dir.path());
        let _held = locks.try_job("home").unwrap().unwrap();
        let stop = AtomicBool::new(true);
        let mut told = None;
        let got = locks
            .wait_job("home", &stop, &mut |pid| told = Some(pid))
            .unwrap();
        assert!(got.is_none());
        assert_eq!(told, Some(Some(std::process::id())));
    }

    #[test]
    fn regression_job_lock_does_not_follow_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockDir::new(dir.path().join("locks"));
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious contents\n").unwrap();
        std::os::unix::fs::symlink(&target, locks.job_path("home")).unwrap();
        std::os::unix::fs::symlink(&target, locks.daemon_path()).unwrap();
        for err in [
            locks.try_job("home").unwrap_err(),
            locks.try_daemon().unwrap_err(),
        ] {
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        let stop = AtomicBool::new(false);
        assert!(locks.wait_job("home", &stop, &mut |_| {}).is_err());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "precious contents\n"
        );
        // Nor is the link read for the holder's pid.
        std::fs::write(&target, "4242\n").unwrap();
        assert_eq!(locks.job_holder("home"), None);
    }

    #[test]
    fn lock_file_that_is_a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockDir::new(dir.path());
        let made = std::process::Command::new("mkfifo")
            .arg(locks.job_path("home"))
            .status()
            .unwrap();
        assert!(made.success());
        let err = locks.try_job("home").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // Reading the holder opens it read-only: without O_NONBLOCK that would wait for a
        // writer forever.
        assert_eq!(locks.job_holder("home"), None);
    }

    #[test]
    fn a_longer_old_pid_is_overwritten_without_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let locks = LockDir::new(dir.path());
        // What an older coffer with a 10-digit pid left behind.
        std::fs::write(locks.job_path("home"), "4000000000").unwrap();
        let _held = locks.try_job("home").unwrap().unwrap();
        assert_eq!(locks.job_holder("home"), Some(std::process::id()));
        assert_eq!(
            std::fs::metadata(locks.job_path("home")).unwrap().len(),
            PID_RECORD as u64
        );
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
