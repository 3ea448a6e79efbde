//! The index: every entry's path and metadata, each file's range in the logical data
//! stream, and the block table. It is stored encrypted and MACed (meta sub-keys); this
//! module only defines it and checks that a decoded index is self-consistent and safe.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::frame::FRAME_OVERHEAD;

pub const KIND_FILE: u8 = 0;
pub const KIND_DIR: u8 = 1;
pub const KIND_SYMLINK: u8 = 2;
/// Longest path accepted in an index (bytes).
pub const MAX_PATH_LEN: usize = 4096;

/// One file, folder or symlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, no `.`/`..`/empty components.
    pub path: String,
    pub kind: u8,
    /// Permission bits (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Bytes of file data (0 for folders and links).
    pub size: u64,
    /// Where the file's data starts in the logical stream.
    pub offset: u64,
    /// Symlink target, stored as written (never followed).
    pub link_target: Option<String>,
}

/// Where a block's frame sits, counted from the end of the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub offset: u64,
    pub frame_len: u32,
    pub raw_len: u32,
}

/// Totals recorded at backup time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries skipped with a warning during backup.
    pub warnings: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub entries: Vec<Entry>,
    pub blocks: Vec<BlockRef>,
    pub stream_len: u64,
    pub totals: Totals,
}

/// Why an index is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexError {
    /// An entry that would be unsafe to restore (traversal, through a link, duplicate).
    Unsafe { entry: String, reason: String },
    /// Inconsistent ranges, block table or values.
    Corrupt(String),
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::Unsafe { entry, reason } => write!(f, "entry {entry:?}: {reason}"),
            IndexError::Corrupt(d) => f.write_str(d),
        }
    }
}

/// Why a path from an index is refused.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path too long");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("NUL byte in path");
    }
    if path.contains('\\') && cfg!(windows) {
        return Err("backslash in path");
    }
    for c in path.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." => return Err("`.` component"),
            ".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent part of an index path, if any.
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

impl Index {
    /// Check everything a restore relies on, before a single byte is written:
    /// safe unique paths, parents that are folders listed earlier, file ranges that tile
    /// the stream in order, and a block table that tiles the data section.
    pub fn validate(&self, block_size: u32, data_len: u64) -> Result<(), IndexError> {
        self.validate_inner(block_size, data_len)
            .map_err(|(entry, reason)| match entry {
                Some(entry) => IndexError::Unsafe { entry, reason },
                None => IndexError::Corrupt(reason),
            })
    }

    fn validate_inner(
        &self,
        block_size: u32,
        data_len: u64,
    ) -> Result<(), (Option<String>, String)> {
        self.check_entries()?;
        self.check_blocks(block_size, data_len)
    }

    /// Every entry: a safe path below a listed folder, once; a known kind with the fields
    /// that kind has; file ranges in stream order.
    fn check_entries(&self) -> Result<(), (Option<String>, String)> {
        let unsafe_entry = |e: &Entry, why: &str| (Some(e.path.clone()), why.to_string());
        let corrupt = |e: &Entry, why: String| (None, format!("entry {:?}: {why}", e.path));
        let mut kinds: HashMap<&str, u8> = HashMap::with_capacity(self.entries.len());
        let mut next_offset = 0u64;
        for e in &self.entries {
            check_path(&e.path).map_err(|why| unsafe_entry(e, why))?;
            if let Some(p) = parent(&e.path) {
                match kinds.get(p) {
                    Some(&KIND_DIR) => {}
                    Some(_) => {
                        return Err(unsafe_entry(
                            e,
                            "its parent is not a folder (a path through a link or file)",
                        ));
                    }
                    None => {
                        return Err(unsafe_entry(e, "its parent folder is not listed before it"));
                    }
                }
            }
            if kinds.insert(&e.path, e.kind).is_some() {
                return Err(unsafe_entry(e, "duplicate path"));
            }
            match e.kind {
                KIND_FILE => {
                    // Ranges only move forward; a gap is data of a file that could not be
                    // read to its end during backup and was left out.
                    if e.offset < next_offset {
                        return Err(corrupt(e, "data range overlaps the previous file".into()));
                    }
                    next_offset = e
                        .offset
                        .checked_add(e.size)
                        .filter(|&end| end <= self.stream_len)
                        .ok_or_else(|| {
                            corrupt(e, format!("size {} beyond the data stream", e.size))
                        })?;
                }
                KIND_DIR => {}
                KIND_SYMLINK => match &e.link_target {
                    Some(t) if !t.is_empty() && t.len() <= MAX_PATH_LEN && !t.contains('\0') => {}
                    _ => return Err(corrupt(e, "bad symlink target".into())),
                },
                k => return Err(corrupt(e, format!("unknown kind {k}"))),
            }
            if e.kind != KIND_FILE && (e.size != 0 || e.offset != 0) {
                return Err(corrupt(e, "non-file with data".into()));
            }
            if e.kind != KIND_SYMLINK && e.link_target.is_some() {
                return Err(corrupt(e, "link target on a non-link".into()));
            }
            if e.mode > 0o7777 || e.mtime_nsec >= 1_000_000_000 {
                return Err(corrupt(e, "mode or time out of range".into()));
            }
        }
        Ok(())
    }

    /// The block table: frames back to back filling the data section, every block full
    /// but the last, their plaintext adding up to the stream.
    fn check_blocks(&self, block_size: u32, data_len: u64) -> Result<(), (Option<String>, String)> {
        let mut at = 0u64;
        let mut raw = 0u64;
        let n = self.blocks.len();
        for (i, b) in self.blocks.iter().enumerate() {
            let bad = |m: String| (None, m);
            if b.offset != at {
                return Err(bad(format!(
                    "block {i}: offset {} out of sequence",
                    b.offset
                )));
            }
            if (b.frame_len as usize) <= FRAME_OVERHEAD
                || b.frame_len as u64 > block_size as u64 + 16 + FRAME_OVERHEAD as u64
            {
                return Err(bad(format!(
                    "block {i}: frame length {} out of range",
                    b.frame_len
                )));
            }
            let full = i + 1 < n;
            if b.raw_len == 0 || b.raw_len > block_size || (full && b.raw_len != block_size) {
                return Err(bad(format!("block {i}: length {} out of range", b.raw_len)));
            }
            at += b.frame_len as u64;
            raw += b.raw_len as u64;
        }
        if at != data_len {
            return Err((
                None,
                format!("block table covers {at} bytes but the data section holds {data_len}"),
            ));
        }
        if raw != self.stream_len {
            return Err((
                None,
                "block table does not match the data stream length".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: u8, offset: u64, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            size,
            offset,
            link_target: (kind == KIND_SYMLINK).then(|| "x".to_string()),
        }
    }

    fn index(entries: Vec<Entry>, stream_len: u64) -> Index {
        let blocks = if stream_len == 0 {
            vec![]
        } else {
            vec![BlockRef {
                offset: 0,
                frame_len: (FRAME_OVERHEAD + 16 * (stream_len as usize / 16 + 1)) as u32,
                raw_len: stream_len as u32,
            }]
        };
        Index {
            entries,
            blocks,
            stream_len,
            totals: Totals::default(),
        }
    }

    fn data_len(ix: &Index) -> u64 {
        ix.blocks.iter().map(|b| b.frame_len as u64).sum()
    }

    #[test]
    fn accepts_a_normal_tree() {
        let ix = index(
            vec![
                entry("a", KIND_DIR, 0, 0),
                entry("a/f", KIND_FILE, 0, 10),
                entry("a/l", KIND_SYMLINK, 0, 0),
                entry("g", KIND_FILE, 10, 5),
            ],
            15,
        );
        ix.validate(1 << 20, data_len(&ix)).unwrap();
    }

    #[test]
    fn refuses_hostile_paths() {
        for p in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", ""] {
            let ix = index(vec![entry(p, KIND_DIR, 0, 0)], 0);
            assert!(ix.validate(1 << 20, 0).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn refuses_file_through_symlink_and_duplicates() {
        let ix = index(
            vec![
                entry("a", KIND_SYMLINK, 0, 0),
                entry("a/f", KIND_FILE, 0, 0),
            ],
            0,
        );
        assert!(
            ix.validate(1 << 20, 0)
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
        let ix = index(
            vec![entry("a", KIND_DIR, 0, 0), entry("a", KIND_DIR, 0, 0)],
            0,
        );
        assert!(
            ix.validate(1 << 20, 0)
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
    }

    #[test]
    fn refuses_huge_claimed_sizes_and_bad_block_tables() {
        let ix = index(vec![entry("f", KIND_FILE, 0, u64::MAX)], 10);
        assert!(ix.validate(1 << 20, data_len(&ix)).is_err());
        let ix = index(vec![entry("f", KIND_FILE, 0, 10)], 10);
        assert!(ix.validate(1 << 20, data_len(&ix) + 1).is_err());
    }
}
