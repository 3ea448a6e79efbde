//! Which entries a restore writes: those the user's paths or glob patterns name, plus every
//! folder above them.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::v2::{EntryV2 as Entry, KIND_DIR, parent};

/// An archive path (bytes) as the path glob patterns are matched against.
fn as_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// Entries chosen by the patterns, plus the folders above them.
///
/// Linear in the number of entries: each path is matched against the patterns once. An
/// entry is chosen when it matches or its folder was chosen; the folders above chosen
/// entries are then added in one pass backwards. Both passes rely on what index validation
/// guarantees: every parent is a folder listed before its children.
pub fn select<'a>(entries: &'a [Entry], patterns: &[String]) -> Result<Vec<&'a Entry>> {
    if patterns.is_empty() {
        return Ok(entries.iter().collect());
    }
    let set = build_patterns(patterns)?;
    let mut matched = vec![false; patterns.len()];
    let mut chosen = vec![false; entries.len()];
    let mut chosen_dirs: HashSet<&[u8]> = HashSet::new();
    let mut hits = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        set.matches_into(as_path(&e.path), &mut hits);
        for &h in &hits {
            matched[h] = true;
        }
        let covered = !hits.is_empty() || parent(&e.path).is_some_and(|p| chosen_dirs.contains(p));
        if covered {
            chosen[i] = true;
            if e.kind == KIND_DIR {
                chosen_dirs.insert(&e.path);
            }
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::InvalidOption(format!(
            "pattern {:?} matches nothing in the archive (paths start with the source's name, e.g. `projects/...`; see `coffer list`)",
            patterns[i]
        )));
    }
    // Children come after their folders, so walking backwards meets every chosen entry
    // before the folders it needs.
    let mut needed: HashSet<&[u8]> = HashSet::new();
    let mut wanted = chosen;
    for (i, e) in entries.iter().enumerate().rev() {
        if wanted[i] || needed.contains(e.path.as_slice()) {
            wanted[i] = true;
            if let Some(p) = parent(&e.path) {
                needed.insert(p);
            }
        }
    }
    Ok(entries
        .iter()
        .zip(wanted)
        .filter_map(|(e, w)| w.then_some(e))
        .collect())
}

/// The patterns as one set; a trailing `/` is ignored (a folder selects what is below it).
fn build_patterns(patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_end_matches('/');
        let g = Glob::new(p).map_err(|e| Error::InvalidOption(format!("pattern {p:?}: {e}")))?;
        set.add(g);
    }
    set.build()
        .map_err(|e| Error::InvalidOption(format!("patterns: {e}")))
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

    /// The selection rule written the obvious way (quadratic: every ancestor of every
    /// entry against the patterns), to check the linear one against.
    fn reference<'a>(entries: &'a [Entry], patterns: &[String]) -> Vec<&'a str> {
        let set = build_patterns(patterns).unwrap();
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

    #[test]
    fn linear_selection_matches_the_obvious_rule() {
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
        entries.sort_by(|x, y| x.path.cmp(&y.path));
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
            let got: Vec<&str> = select(&entries, &patterns)
                .unwrap()
                .into_iter()
                .map(text)
                .collect();
            assert_eq!(got, reference(&entries, &patterns), "{patterns:?}");
        }
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_named() {
        let entries = vec![entry("top", KIND_DIR), entry("top/f", KIND_FILE)];
        let err = select(&entries, &["top/f".into(), "nope/*".into()]).unwrap_err();
        assert!(err.to_string().contains("\"nope/*\""), "{err}");
    }
}
