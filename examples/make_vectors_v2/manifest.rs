//! `expected.toml` of a v2 vector (the TOML subset of fixtures/v1/README.md).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A manifest being written.
pub struct Manifest(String);

impl Manifest {
    pub fn new(name: &str, description: &str) -> Manifest {
        let mut m = Manifest(format!(
            "# coffer format v2 test vector `{name}`: see fixtures/v2/README.md\nformat_version = 2\n"
        ));
        m.str("description", description);
        m
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        writeln!(self.0, "{key} = {}", quote(value)).unwrap();
        self
    }

    pub fn int(&mut self, key: &str, value: i128) -> &mut Self {
        writeln!(self.0, "{key} = {value}").unwrap();
        self
    }

    pub fn comment(&mut self, text: &str) -> &mut Self {
        for line in text.lines() {
            writeln!(self.0, "# {line}").unwrap();
        }
        self
    }

    pub fn table(&mut self, name: &str) -> &mut Self {
        write!(self.0, "\n[{name}]\n").unwrap();
        self
    }

    /// One `[[entry]]` per entry of the tree at `root`, path order, paths from `root`'s
    /// name; the second and later names of an inode as `hardlink` to the first.
    pub fn tree(&mut self, root: &Path) -> &mut Self {
        self.tree_where(root, |_| true)
    }

    /// [`Manifest::tree`] for the entries whose path `keep` accepts.
    pub fn tree_where(&mut self, root: &Path, keep: impl Fn(&[u8]) -> bool) -> &mut Self {
        let base = root.parent().unwrap();
        let mut all = Vec::new();
        walk(root, &mut all);
        // Path order (v2.6.2): `/` sorts before every other byte.
        let key = |p: &Path| -> Vec<u8> {
            let rel = p.strip_prefix(base).unwrap().as_os_str().as_bytes();
            rel.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
        };
        all.sort_by_key(|p| key(p));
        let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
        for p in all {
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            // The first name of every inode is remembered, listed or not.
            let first = if !ft.is_dir() && m.nlink() > 1 {
                let first = seen
                    .iter()
                    .find(|(ino, _)| *ino == m.ino())
                    .map(|s| s.1.clone());
                if first.is_none() {
                    seen.push((m.ino(), rel.clone()));
                }
                first
            } else {
                None
            };
            if !keep(&rel) {
                continue;
            }
            self.0.push_str("\n[[entry]]\n");
            self.str("path", &String::from_utf8_lossy(&rel));
            self.str("path_hex", &hex(&rel));
            if let Some(first) = first {
                self.str("kind", "hardlink");
                self.str("hardlink_hex", &hex(&first));
                continue;
            }
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_char_device() {
                "char"
            } else {
                panic!("unexpected kind at {}", p.display())
            };
            self.str("kind", kind);
            if !ft.is_symlink() {
                self.0
                    .push_str(&format!("mode = 0o{:o}\n", m.mode() & 0o7777));
            }
            self.int("uid", m.uid().into());
            self.int("gid", m.gid().into());
            self.int("mtime", m.mtime().into());
            if ft.is_file() {
                self.int("size", m.size().into());
                let bytes = fs::read(&p).unwrap();
                self.str("sha256", &hex(&Sha256::digest(&bytes)));
            }
            if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                self.str("link_target", &t.to_string_lossy());
            }
            if ft.is_char_device() {
                self.int("rdev_major", rustix::fs::major(m.rdev()).into());
                self.int("rdev_minor", rustix::fs::minor(m.rdev()).into());
            }
            if let Ok(v) = rustix::fs::lgetxattr(&p, "user.comment", &mut [0u8; 256]) {
                let mut buf = [0u8; 256];
                let n = rustix::fs::lgetxattr(&p, "user.comment", &mut buf).unwrap();
                assert_eq!(n, v);
                self.str("xattr_user_comment", &String::from_utf8_lossy(&buf[..n]));
            }
        }
        self
    }

    pub fn write(&self, dir: &Path) {
        fs::write(dir.join("expected.toml"), &self.0).unwrap();
    }
}

fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(p.to_path_buf());
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}
