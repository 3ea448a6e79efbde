//! Which entries a restore writes: those the user's paths or glob patterns name, everything
//! below a named folder, and the folders above them — decided entry by entry as the index
//! streams past in path order, holding only the current entry's ancestors.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::v2::{EntryV2 as Entry, KIND_DIR};

/// An archive path (bytes) as the path glob patterns are matched against.
fn as_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// The user's patterns.
pub(super) struct Patterns {
    set: Option<GlobSet>,
    texts: Vec<String>,
    matched: Vec<bool>,
    hits: Vec<usize>,
}

impl Patterns {
    /// Patterns as given; none means everything. A trailing `/` is ignored (a folder
    /// selects what is below it).
    pub(super) fn new(patterns: &[String]) -> Result<Self> {
        let set = if patterns.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                let p = p.trim_end_matches('/');
                let g = Glob::new(p)
                    .map_err(|e| Error::InvalidOption(format!("pattern {p:?}: {e}")))?;
                b.add(g);
            }
            Some(
                b.build()
                    .map_err(|e| Error::InvalidOption(format!("patterns: {e}")))?,
            )
        };
        Ok(Patterns {
            set,
            texts: patterns.to_vec(),
            matched: vec![false; patterns.len()],
            hits: Vec::new(),
        })
    }

    /// The literal beginning of every pattern (up to its first glob character), or `None`
    /// when there are no patterns. Every path a pattern can match starts with its prefix,
    /// and a prefix's paths are one range of the index: only those chunks need reading.
    pub(super) fn prefixes(&self) -> Option<Vec<Vec<u8>>> {
        self.set.as_ref()?;
        Some(
            self.texts
                .iter()
                .map(|p| {
                    let p = p.trim_end_matches('/');
                    let end = p.find(['*', '?', '[', '{', '\\']).unwrap_or(p.len());
                    p.as_bytes()[..end].to_vec()
                })
                .collect(),
        )
    }

    /// Whether `path` matches a pattern (true for every path without patterns).
    fn matches(&mut self, path: &[u8]) -> bool {
        let Some(set) = &self.set else {
            return true;
        };
        set.matches_into(as_path(path), &mut self.hits);
        for &h in &self.hits {
            self.matched[h] = true;
        }
        !self.hits.is_empty()
    }

    /// Every pattern must have matched something.
    pub(super) fn check_all_matched(&self) -> Result<()> {
        match self.matched.iter().position(|m| !m) {
            Some(i) => Err(Error::InvalidOption(format!(
                "pattern {:?} matches nothing in the archive (paths start with the source's name, e.g. `projects/...`; see `coffer list`)",
                self.texts[i]
            ))),
            None => Ok(()),
        }
    }
}

/// A folder on the way to the current entry.
pub(super) struct Open {
    /// The folder's entry, without its extended attributes (a hostile index could nest
    /// 2,048 folders each carrying 256 KiB of them): `number` finds them again.
    pub entry: Entry,
    pub number: u64,
    /// Named by a pattern, or below a named folder: everything in it is restored.
    pub chosen: bool,
    /// To be restored: chosen, or above something chosen.
    pub needed: bool,
}

/// What one entry means for the restore.
pub(super) struct Step {
    /// Folders left behind (their subtrees are complete), deepest first.
    pub closed: Vec<Open>,
    /// Folders above the entry that became needed with it, outermost first: to be made
    /// now, before the entry.
    pub newly_needed: Vec<Entry>,
    /// The entry is restored.
    pub chosen: bool,
}

/// Decides, entry by entry in path order, what is restored. Holds the ancestors of the
/// current entry only (a path's depth), so it is flat in the number of entries.
pub(super) struct Selector {
    pub patterns: Patterns,
    stack: Vec<Open>,
}

impl Selector {
    pub(super) fn new(patterns: Patterns) -> Self {
        Selector {
            patterns,
            stack: Vec::new(),
        }
    }

    /// The next entry (in path order).
    pub(super) fn next(&mut self, number: u64, e: &Entry) -> Step {
        let mut closed = Vec::new();
        while let Some(top) = self.stack.last() {
            let under = e.path.len() > top.entry.path.len()
                && e.path.starts_with(&top.entry.path)
                && e.path[top.entry.path.len()] == b'/';
            if under {
                break;
            }
            closed.push(self.stack.pop().expect("non-empty"));
        }
        let covered = self.stack.last().is_some_and(|t| t.chosen);
        let chosen = self.patterns.matches(&e.path) || covered;
        let mut newly_needed = Vec::new();
        if chosen {
            for open in &mut self.stack {
                if !open.needed {
                    open.needed = true;
                    newly_needed.push(open.entry.clone());
                }
            }
        }
        if e.kind == KIND_DIR {
            self.stack.push(Open {
                entry: Entry {
                    xattrs: Vec::new(),
                    ..e.clone()
                },
                number,
                chosen,
                needed: chosen,
            });
        }
        Step {
            closed,
            newly_needed,
            chosen,
        }
    }

    /// The folders still open at the end, deepest first.
    pub(super) fn finish(&mut self) -> Vec<Open> {
        let mut out = Vec::new();
        while let Some(o) = self.stack.pop() {
            out.push(o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::v2::{KIND_FILE, KIND_SYMLINK};

    fn entry(path: &str, kind: u8) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            link_target: (kind == KIND_SYMLINK).then(|| b"x".to_vec()),
            ..Entry::default()
        }
    }

    fn text(e: &Entry) -> &str {
        std::str::from_utf8(&e.path).unwrap()
    }

    /// What the streaming selector restores, in the order it restores it.
    fn select<'a>(entries: &'a [Entry], patterns: &[String]) -> Result<Vec<&'a str>> {
        let mut s = Selector::new(Patterns::new(patterns)?);
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let step = s.next(i as u64, e);
            for n in &step.newly_needed {
                let p = entries.iter().find(|x| x.path == n.path).unwrap();
                out.push(text(p));
            }
            if step.chosen {
                out.push(text(e));
            }
        }
        s.patterns.check_all_matched()?;
        Ok(out)
    }

    /// The selection rule written the obvious way (quadratic: every ancestor of every
    /// entry against the patterns), to check the streaming one against.
    fn reference<'a>(entries: &'a [Entry], patterns: &[String]) -> Vec<&'a str> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p.trim_end_matches('/')).unwrap());
        }
        let set = b.build().unwrap();
        let covered = |path: &str| {
            let mut p = Some(path);
            while let Some(cur) = p {
                if set.is_match(cur) {
                    return true;
                }
                p = cur.rfind('/').map(|i| &cur[..i]);
            }
            false
        };
        let chosen: Vec<&str> = entries.iter().map(text).filter(|p| covered(p)).collect();
        entries
            .iter()
            .map(text)
            .filter(|p| {
                chosen
                    .iter()
                    .any(|c| c == p || c.starts_with(&format!("{p}/")))
            })
            .collect()
    }

    fn tree() -> Vec<Entry> {
        let mut entries = vec![entry("top", KIND_DIR)];
        for d in ["a", "b", "a b", "src"] {
            entries.push(entry(&format!("top/{d}"), KIND_DIR));
            entries.push(entry(&format!("top/{d}/deep"), KIND_DIR));
            for f in ["x.rs", "y.txt", "d"] {
                entries.push(entry(&format!("top/{d}/{f}"), KIND_FILE));
                entries.push(entry(&format!("top/{d}/deep/{f}"), KIND_FILE));
            }
            entries.push(entry(&format!("top/{d}/link"), KIND_SYMLINK));
        }
        entries.sort_by(|x, y| crate::format::v2::path_cmp(&x.path, &y.path));
        entries
    }

    #[test]
    fn streaming_selection_matches_the_obvious_rule() {
        let entries = tree();
        let cases: &[&[&str]] = &[
            &["top/a"],
            &["top/a/"],
            &["**/*.rs"],
            &["**/*[!d]"],
            &["top/*/deep", "top/b/y.txt"],
            &["top/a b/deep/d", "**/link"],
            &["top"],
        ];
        for patterns in cases {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            let mut got = select(&entries, &patterns).unwrap();
            got.sort_by(|x, y| crate::format::v2::path_cmp(x.as_bytes(), y.as_bytes()));
            assert_eq!(got, reference(&entries, &patterns), "{patterns:?}");
        }
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_named() {
        let entries = vec![entry("top", KIND_DIR), entry("top/f", KIND_FILE)];
        let err = select(&entries, &["top/f".into(), "nope/*".into()]).unwrap_err();
        assert!(err.to_string().contains("\"nope/*\""), "{err}");
    }

    #[test]
    fn prefixes_stop_at_the_first_glob_character() {
        let p = Patterns::new(&["top/a/".into(), "src/*.rs".into(), "**/x".into()]).unwrap();
        let got = p.prefixes().unwrap();
        assert_eq!(got, [&b"top/a"[..], b"src/", b""]);
        assert!(Patterns::new(&[]).unwrap().prefixes().is_none());
    }

    #[test]
    fn folders_close_deepest_first_once_their_subtree_ends() {
        let entries = tree();
        let mut s = Selector::new(Patterns::new(&[]).unwrap());
        let mut closed = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let step = s.next(i as u64, e);
            closed.extend(step.closed.into_iter().map(|o| o.entry.path));
        }
        closed.extend(s.finish().into_iter().map(|o| o.entry.path));
        // Every folder closes once, after everything below it was seen.
        let folders = entries.iter().filter(|e| e.kind == KIND_DIR).count();
        assert_eq!(closed.len(), folders);
        assert_eq!(closed.first().unwrap(), b"top/a/deep");
        assert_eq!(closed.last().unwrap(), b"top");
    }
}
