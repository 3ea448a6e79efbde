//! What an incremental run adds to the walk (FORMAT.md v2.8.4): files whose size, times,
//! inode and device are unchanged are not read — their entries reuse the extents and
//! content hash the chain state recorded; a changed file is read in 1 MiB windows and
//! each window whose hash equals the last version's window at the same place (or, for a
//! new path, a copy's or rename's, found by its first window) is referenced instead of
//! stored again. Every file of a run that keeps a chain, full or incremental, is recorded
//! in the state for the next run.
//!
//! Extents in the state name archives by their position in the chain; in the archive
//! they name them by their place in its parent table (0 = this archive). This module
//! maps between the two and collects which archives this run's entries reference.

use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use super::walk::{ChainWalk, Reused};
use crate::chain::state::{ChainState, FileData, FileRow, StateExtent, path_key};
use crate::error::Result;
use crate::format::v2::content::{ContentHasher, WINDOW};
use crate::format::v2::{EntryV2, Extent, MAX_EXTENTS};
use crate::progress::Observer;

/// An archive the run may reference: its chain position and stream length.
#[derive(Clone, Copy)]
pub(super) struct Referable {
    pub position: u32,
    pub stream_len: u64,
}

/// The chain side of one run.
pub(super) struct Incremental<'s> {
    state: &'s mut ChainState,
    /// Whether the last run's files may be referenced (an incremental) or only recorded.
    incremental: bool,
    /// This run's position in the chain.
    own: u32,
    /// Whether this run reads extended attributes (and records them).
    xattrs: bool,
    /// The header's parent table, in order: extent archive `k` is `parents[k − 1]`.
    parents: Vec<Referable>,
    /// Chain positions this run's entries reference.
    pub refs: BTreeSet<u32>,
    /// The last run's row for the file being walked, when it changed.
    prev: Option<FileRow>,
    buf: Vec<u8>,
    pub files_unchanged: u64,
    /// Data bytes of this run's entries held in parents.
    pub bytes_referenced: u64,
    /// Data bytes read but found in the chain (not stored again).
    pub bytes_read_referenced: u64,
}

impl<'s> Incremental<'s> {
    pub(super) fn new(
        state: &'s mut ChainState,
        incremental: bool,
        own: u32,
        parents: Vec<Referable>,
        xattrs: bool,
    ) -> Self {
        Incremental {
            state,
            incremental,
            own,
            xattrs,
            parents,
            refs: BTreeSet::new(),
            prev: None,
            buf: Vec::new(),
            files_unchanged: 0,
            bytes_referenced: 0,
            bytes_read_referenced: 0,
        }
    }

    /// State extents as the archive's, when every archive they name may be referenced
    /// and every piece lies inside its archive's stream.
    fn mapped(&self, extents: &[StateExtent]) -> Option<Vec<Extent>> {
        extents
            .iter()
            .map(|x| {
                let end = x.offset.checked_add(x.len)?;
                if x.position == self.own {
                    return Some(Extent {
                        archive: 0,
                        offset: x.offset,
                        len: x.len,
                    });
                }
                let k = self.parents.iter().position(|p| p.position == x.position)?;
                (end <= self.parents[k].stream_len).then_some(Extent {
                    archive: k as u32 + 1,
                    offset: x.offset,
                    len: x.len,
                })
            })
            .collect()
    }

    fn note(&mut self, extents: &[Extent]) {
        for x in extents {
            let position = match x.archive {
                0 => self.own,
                k => self.parents[k as usize - 1].position,
            };
            self.refs.insert(position);
        }
    }

    /// A file of the chain whose first window hashes to `w` (a copy or a rename).
    fn copy_of(&self, w: &[u8; 32]) -> Result<Option<(Vec<Extent>, FileRow)>> {
        Ok(self
            .state
            .lookup(w)?
            .into_iter()
            .find_map(|row| Some((self.mapped(&row.data.extents)?, row))))
    }
}

impl ChainWalk for Incremental<'_> {
    /// A non-file entry at `path` (or a file that was skipped): whatever file the state
    /// had there is gone.
    fn passed(&mut self, path: &[u8]) -> Result<()> {
        if self.state.advance(path)?.is_some() {
            self.state.forget(path)?;
        }
        Ok(())
    }

    /// The file at `path` with `meta`: its reused data when it is unchanged since the last
    /// run; otherwise `None`, and its last version is kept for window reuse.
    fn unchanged(&mut self, path: &[u8], meta: &Metadata) -> Result<Option<Reused>> {
        self.prev = None;
        let Some(row) = self.state.advance(path)? else {
            return Ok(None);
        };
        let same = row.size == meta.len()
            && row.mtime == (meta.mtime(), meta.mtime_nsec() as u32)
            && row.ctime == (meta.ctime(), meta.ctime_nsec() as u32)
            && row.ino == meta.ino()
            && row.dev == meta.dev();
        let data_len = match &row.data.ranges {
            None => row.size,
            Some(r) => r.iter().map(|r| r.len).sum(),
        };
        // A row that does not add up (a state edited by hand) is read again, never
        // trusted into an entry a reader would refuse.
        if same
            && row.data_len() == data_len
            && row.data.extents.len() <= MAX_EXTENTS
            && let Some(extents) = self.mapped(&row.data.extents)
        {
            self.files_unchanged += 1;
            self.bytes_referenced += data_len;
            self.note(&extents);
            return Ok(Some(Reused {
                extents,
                ranges: row.data.ranges,
                hash: row.hash,
                xattrs: row.data.xattrs.filter(|_| self.xattrs),
            }));
        }
        self.prev = Some(row);
        Ok(None)
    }

    /// Whether a changed dense file should be read window by window for reuse.
    fn reuses(&self) -> bool {
        self.incremental
    }

    /// Read a dense file window by window: each window found in the chain (the last
    /// version's at the same place, or a copy's found by the first window) is referenced,
    /// the others go to the stream. Returns the data length and extents, or the file's
    /// read error.
    fn read_dense(
        &mut self,
        file: &mut File,
        hasher: &mut ContentHasher,
        observer: &dyn Observer,
        store: &mut dyn FnMut(&[u8]) -> Result<u64>,
    ) -> Result<std::io::Result<(u64, Vec<Extent>)>> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(WINDOW as usize, 0);
        let mut cand = self
            .prev
            .take()
            .and_then(|row| Some((self.mapped(&row.data.extents)?, row)));
        let mut extents: Vec<Extent> = Vec::new();
        let mut total = 0u64;
        let mut i = 0u64;
        let result = loop {
            let n = match fill(file, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if n == 0 && i > 0 {
                break Ok(());
            }
            let w = hasher.update_window(&buf[..n]);
            if i == 0 && n > 0 && cand.is_none() {
                cand = self.copy_of(&w)?;
            }
            let reuse = cand
                .as_ref()
                .filter(|_| extents.len() + 2 < MAX_EXTENTS)
                .and_then(|(ext, row)| {
                    let same =
                        window_hash(row, i) == Some(w) && window_len(row.data_len(), i) == n as u64;
                    same.then(|| slice(ext, i * WINDOW, n as u64)).flatten()
                });
            match reuse {
                Some(pieces) => {
                    pieces.into_iter().for_each(|p| push(&mut extents, p));
                    self.bytes_read_referenced += n as u64;
                    self.bytes_referenced += n as u64;
                    observer.bytes_done(n as u64);
                }
                None if n > 0 => {
                    let offset = store(&buf[..n])?;
                    push(
                        &mut extents,
                        Extent {
                            archive: 0,
                            offset,
                            len: n as u64,
                        },
                    );
                }
                None => {}
            }
            total += n as u64;
            i += 1;
            if (n as u64) < WINDOW {
                break Ok(());
            }
        };
        self.buf = buf;
        Ok(result.map(|()| (total, extents)))
    }

    /// Record the file `e` (just written into this archive's index) for the next run.
    fn record(
        &mut self,
        e: &EntryV2,
        meta: &Metadata,
        windows: Option<Vec<[u8; 32]>>,
    ) -> Result<()> {
        self.note(&e.extents);
        let extents = e
            .extents
            .iter()
            .map(|x| StateExtent {
                position: match x.archive {
                    0 => self.own,
                    k => self.parents[k as usize - 1].position,
                },
                offset: x.offset,
                len: x.len,
            })
            .collect();
        let row = FileRow {
            key: path_key(&e.path),
            dev: meta.dev(),
            ino: meta.ino(),
            size: e.size,
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
            hash: e.content_hash.unwrap_or_default(),
            data: FileData {
                ranges: e.data_ranges.clone(),
                extents,
                // One window's hash is the content hash.
                windows: windows.filter(|w| w.len() > 1),
                xattrs: self.xattrs.then(|| e.xattrs.clone()),
            },
        };
        self.state.put(row)
    }

    /// A file that was skipped: the state forgets it.
    fn forget(&mut self, path: &[u8]) -> Result<()> {
        self.prev = None;
        self.state.forget(path)
    }
}

/// Hash of window `i` of a recorded file, when known.
fn window_hash(row: &FileRow, i: u64) -> Option<[u8; 32]> {
    match &row.data.windows {
        Some(w) => w.get(i as usize).copied(),
        None if i == 0 && row.data_len() <= WINDOW => Some(row.hash),
        None => None,
    }
}

/// Length of window `i` of `data_len` data bytes.
fn window_len(data_len: u64, i: u64) -> u64 {
    data_len.saturating_sub(i * WINDOW).min(WINDOW)
}

/// Data bytes `[from, from + len)` of a file with `extents`, as extents.
fn slice(extents: &[Extent], mut from: u64, mut len: u64) -> Option<Vec<Extent>> {
    let mut out = Vec::new();
    for x in extents {
        if len == 0 {
            break;
        }
        if from >= x.len {
            from -= x.len;
            continue;
        }
        let take = (x.len - from).min(len);
        out.push(Extent {
            archive: x.archive,
            offset: x.offset + from,
            len: take,
        });
        len -= take;
        from = 0;
    }
    (len == 0).then_some(out)
}

/// Append `x`, merged into the last extent when it continues it.
fn push(extents: &mut Vec<Extent>, x: Extent) {
    if let Some(last) = extents.last_mut()
        && last.archive == x.archive
        && last.offset + last.len == x.offset
    {
        last.len += x.len;
        return;
    }
    extents.push(x);
}

/// Read until `buf` is full or the file ends.
fn fill(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(archive: u32, offset: u64, len: u64) -> Extent {
        Extent {
            archive,
            offset,
            len,
        }
    }

    #[test]
    fn slice_maps_data_offsets_through_the_extents() {
        let ext = [x(1, 100, 10), x(0, 0, 5), x(2, 50, 20)];
        assert_eq!(slice(&ext, 0, 10), Some(vec![x(1, 100, 10)]));
        assert_eq!(slice(&ext, 8, 4), Some(vec![x(1, 108, 2), x(0, 0, 2)]));
        assert_eq!(slice(&ext, 12, 10), Some(vec![x(0, 2, 3), x(2, 50, 7)]));
        assert_eq!(slice(&ext, 30, 5), Some(vec![x(2, 65, 5)]));
        assert_eq!(slice(&ext, 32, 5), None, "past the data");
    }

    #[test]
    fn push_merges_only_continuing_extents() {
        let mut v = Vec::new();
        push(&mut v, x(1, 0, 10));
        push(&mut v, x(1, 10, 5));
        push(&mut v, x(0, 15, 5));
        push(&mut v, x(1, 15, 5));
        assert_eq!(v, vec![x(1, 0, 15), x(0, 15, 5), x(1, 15, 5)]);
    }

    #[test]
    fn window_lengths() {
        assert_eq!(window_len(0, 0), 0);
        assert_eq!(window_len(WINDOW + 3, 0), WINDOW);
        assert_eq!(window_len(WINDOW + 3, 1), 3);
        assert_eq!(window_len(WINDOW + 3, 2), 0);
    }
}
