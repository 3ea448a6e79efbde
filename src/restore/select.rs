//! Which entries a restore writes: those the user's paths or glob patterns name, plus every
//! folder above them.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::index::{Entry, parent};

/// Entries chosen by the patterns, plus the folders above them.
pub fn select<'a>(entries: &'a [Entry], patterns: &[String]) -> Result<Vec<&'a Entry>> {
    if patterns.is_empty() {
        return Ok(entries.iter().collect());
    }
    let mut globs = Vec::with_capacity(patterns.len());
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_end_matches('/');
        let g = Glob::new(p).map_err(|e| Error::InvalidOption(format!("pattern {p:?}: {e}")))?;
        set.add(g.clone());
        globs.push(g.compile_matcher());
    }
    let set: GlobSet = set
        .build()
        .map_err(|e| Error::InvalidOption(format!("patterns: {e}")))?;
    let mut chosen: HashSet<&str> = HashSet::new();
    let mut matched = vec![false; globs.len()];
    for e in entries {
        // An entry is chosen when it or one of its folders matches.
        let mut p: Option<&str> = Some(&e.path);
        while let Some(cur) = p {
            let hits = set.matches(cur);
            if !hits.is_empty() {
                for h in hits {
                    matched[h] = true;
                }
                chosen.insert(&e.path);
                break;
            }
            p = parent(cur);
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::InvalidOption(format!(
            "pattern {:?} matches nothing in the archive (paths start with the source's name, e.g. `projects/...`; see `coffer list`)",
            patterns[i]
        )));
    }
    let mut wanted: HashSet<&str> = HashSet::new();
    for path in &chosen {
        let mut p = Some(*path);
        while let Some(cur) = p {
            if !wanted.insert(cur) {
                break;
            }
            p = parent(cur);
        }
    }
    Ok(entries
        .iter()
        .filter(|e| wanted.contains(e.path.as_str()))
        .collect())
}
