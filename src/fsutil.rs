//! Writing files so that nothing half-written ever carries its final name:
//! temp file in the same folder → fsync → rename → fsync the folder.

use rand::Rng;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written under a temporary name next to its destination. Dropped without
/// [`AtomicFile::commit`], the temporary file is removed.
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Start writing `dest`. Fails if `dest` exists and `overwrite` is false.
    pub fn create(dest: &Path, mode: u32, overwrite: bool) -> Result<Self> {
        if !overwrite && dest.symlink_metadata().is_ok() {
            return Err(Error::Exists {
                path: dest.to_path_buf(),
            });
        }
        let tmp = temp_name(dest, "partial");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Like [`AtomicFile::create`], but the temporary file is opened with `O_DIRECT` when
    /// the file system takes it (checked with one aligned probe write), so writes bypass
    /// the page cache. Writers must then use aligned buffers, lengths and offsets.
    pub fn create_direct(dest: &Path, mode: u32, overwrite: bool) -> Result<Self> {
        let mut plain = Self::create(dest, mode, overwrite)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&plain.tmp);
        if let Ok(direct) = direct
            && probe_direct(&direct)
        {
            direct.set_len(0).map_err(|e| Error::io(&plain.tmp, e))?;
            plain.file = Some(direct);
        }
        Ok(plain)
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file open until commit")
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsync, rename into place, fsync the folder.
    pub fn commit(mut self, overwrite: bool) -> Result<()> {
        let file = self.file.take().expect("file open until commit");
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        if overwrite {
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        } else {
            // A hard link never replaces an existing file, so a destination that appeared
            // while we were writing is left alone.
            std::fs::hard_link(&self.tmp, &self.dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists {
                    path: self.dest.clone(),
                },
                _ => Error::io(&self.dest, e),
            })?;
            std::fs::remove_file(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
        }
        self.committed = true;
        sync_parent(&self.dest)?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Also after a failed commit (fsync or rename): the temporary file must not stay.
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

/// Whether an aligned write through this `O_DIRECT` descriptor works (some file systems
/// accept the flag at open and refuse the writes).
fn probe_direct(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    const ALIGN: usize = 4096;
    let raw = vec![0u8; 2 * ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN);
    file.write_all_at(&raw[start..start + ALIGN], 0).is_ok()
}

/// `dir/.NAME.<random>.<suffix>`: hidden, unique, in the same file system as `dest`.
pub fn temp_name(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "coffer".into());
    let tag: u32 = rand::rng().next_u32();
    dest.with_file_name(format!(".{name}.{tag:08x}.{suffix}"))
}

/// fsync the folder holding `path`, so that a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}

/// Write a small file atomically (key files).
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode, overwrite)?;
    f.file().write_all(bytes).map_err(|e| Error::io(dest, e))?;
    // The mode passed to open() is filtered by the umask; private keys must be 0600 exactly.
    use std::os::unix::fs::PermissionsExt;
    f.file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(dest, e))?;
    f.commit(overwrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.coffer");
        {
            let mut f = AtomicFile::create(&dest, 0o644, false).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_refuses_to_clobber_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k");
        write_atomic(&dest, b"one", 0o600, false).unwrap();
        assert!(matches!(
            write_atomic(&dest, b"two", 0o600, false),
            Err(Error::Exists { .. })
        ));
        write_atomic(&dest, b"two", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
