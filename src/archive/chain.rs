//! The parents of an incremental archive, found and checked (FORMAT.md v2.8.2): located by
//! their file-name hint, then by the session-id suffix of coffer's archive names, next to
//! the child and in an optional `--chain-dir`; a candidate counts only when its keyless
//! header checks pass and its session id is the one the child lists. A parent is unlocked
//! with the identity that opened the child, and its commitment is recomputed and compared
//! with the child's authenticated `parent_commitments` record before a byte of its index
//! or blocks is used: that is what refuses a look-alike written by someone holding only
//! the public keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Archive, Unlocked, View};
use crate::error::{Error, Result};
use crate::format::hex;
use crate::format::v2::ParentRef;
use crate::keys::SessionId;
use crate::recipient::Identity;
use crate::storage::Location;

/// A parent archive, unlocked and proven to be the one its child was made from.
pub struct ParentArchive {
    pub archive: Archive,
    pub unlocked: Unlocked,
}

/// What a keyless look for one parent found ([`parents_keyless`]).
pub struct ParentStatus {
    pub session_id: SessionId,
    pub hint: String,
    /// The parent, when a candidate passed the keyless checks with the right session id.
    pub archive: Option<Archive>,
    /// Why the chain is broken at this parent even though it was found (a cycle).
    pub problem: Option<String>,
}

/// A parent's hint is trusted only as a plain file name in the folder being searched: a
/// hint naming another folder (`/`, `..`) is ignored, never followed.
fn hint_is_plain(hint: &str) -> bool {
    !hint.is_empty()
        && hint != "."
        && hint != ".."
        && !hint.contains('/')
        && !hint.contains('\0')
        && !hint.contains('\\')
}

/// The folder holding `child` (local), or its S3 prefix.
fn folder_of(child: &Path) -> Result<Location> {
    Ok(match Location::parse(child)? {
        Location::Local(p) => Location::Local(match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }),
        Location::S3 { bucket, key } => Location::S3 {
            bucket,
            key: key.rsplit_once('/').map_or("", |(d, _)| d).to_string(),
        },
    })
}

/// Candidate locations for `parent`, in the order v2.8.2 step 2 gives: the hint, then files
/// named `*-<first 8 hex of the session id>.coffer` (sorted by name), in `folder`. An object
/// store is searched by the hint only (listing a prefix would be a request per page).
fn candidates_in(folder: &Location, parent: &ParentRef) -> Vec<Location> {
    let mut out = Vec::new();
    if hint_is_plain(&parent.hint) {
        out.push(folder.join(&parent.hint));
    }
    if let Location::Local(dir) = folder {
        let suffix = format!("-{}.coffer", &hex(&parent.session_id)[..8]);
        let mut named: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| d.file_name().into_string().ok())
            .filter(|n| n.ends_with(&suffix) && *n != parent.hint)
            .collect();
        named.sort();
        out.extend(named.into_iter().map(|n| folder.join(&n)));
    }
    out
}

/// Find parent `parent` of `child`: the first candidate that opens as a v2 archive (keyless
/// checks, FORMAT.md v2.10.2 steps 1–7) with the parent's session id. Candidates that fail
/// are skipped: another archive is not a look-alike, just another archive.
pub fn locate(child: &Archive, parent: &ParentRef, chain_dir: Option<&Path>) -> Option<Archive> {
    let mut folders = Vec::new();
    if let Ok(f) = folder_of(child.path()) {
        folders.push(f);
    }
    if let Some(d) = chain_dir {
        folders.push(Location::Local(d.to_path_buf()));
    }
    for folder in &folders {
        for loc in candidates_in(folder, parent) {
            let Ok(a) = Archive::open(&loc.display_path()) else {
                continue;
            };
            if a.version() == 2 && a.params().session_id == parent.session_id {
                return Some(a);
            }
        }
    }
    None
}

/// The cycle guard (v2.8.2 step 3): a parent must not list its child (nor any archive met
/// on the way, `visited`) as its own parent.
fn cycle(parent: &Archive, visited: &[SessionId]) -> Option<String> {
    parent
        .params()
        .chain
        .iter()
        .find(|p| visited.contains(&p.session_id))
        .map(|p| {
            format!(
                "chain cycle: ancestor {} lists {} as its parent",
                parent.session_id_hex(),
                hex(&p.session_id)
            )
        })
}

/// Every parent of `archive`'s table, looked for without a key: for `info` and keyless
/// `verify`. The table is flat (v2.8.1), so it names every ancestor; each found one is
/// checked for a cycle back to `archive` or to another member.
pub fn parents_keyless(archive: &Archive, chain_dir: Option<&Path>) -> Vec<ParentStatus> {
    let table = archive.params().chain;
    let mut members: Vec<SessionId> = vec![archive.params().session_id];
    members.extend(table.iter().map(|p| p.session_id));
    table
        .iter()
        .map(|p| {
            let found = locate(archive, p, chain_dir);
            // A member may list older members (its own flat table), never itself or a newer
            // one: those are the ids after it in this table, and the child.
            let problem = found.as_ref().and_then(|a| {
                let at = members.iter().position(|m| *m == p.session_id).unwrap_or(0);
                let newer: Vec<SessionId> = std::iter::once(members[0])
                    .chain(members[at + 1..].iter().copied())
                    .collect();
                cycle(a, &newer)
            });
            ParentStatus {
                session_id: p.session_id,
                hint: p.hint.clone(),
                archive: found,
                problem,
            }
        })
        .collect()
}

impl Unlocked {
    /// The child's record of parent `k`'s commitment (`k` ≥ 1), from its authenticated
    /// directory.
    fn parent_commitment(&self, k: usize) -> Option<[u8; 32]> {
        match &self.view {
            View::V1(_) => None,
            View::V2(v) => v.directory.parent_commitments.get(k - 1).copied(),
        }
    }
}

/// Locate, unlock and check parent `k` (1-based, as extents number it) of `child`
/// (v2.8.2 steps 2–5, and the directory of step 6). `files`: how many selected files need
/// it, for the message when it is missing.
pub(crate) fn open_parent(
    child: &Archive,
    child_unlocked: &Unlocked,
    k: usize,
    identity: &dyn Identity,
    chain_dir: Option<&Path>,
    files: u64,
) -> Result<ParentArchive> {
    let table = child.params().chain;
    let p = table
        .get(k.wrapping_sub(1))
        .ok_or_else(|| Error::Internal(format!("parent {k} is not in the parent table")))?;
    let archive = locate(child, p, chain_dir).ok_or_else(|| Error::MissingParent {
        path: child.path().to_path_buf(),
        session_id: hex(&p.session_id),
        hint: p.hint.clone(),
        files,
    })?;
    if let Some(detail) = cycle(&archive, &[child.params().session_id]) {
        return Err(Error::Corrupt {
            path: archive.path().to_path_buf(),
            offset: 0,
            detail,
        });
    }
    // WrongKey names the parent; a header MAC failure is Tampered on the parent.
    let (session_key, keys) = archive.session_keys(identity)?;
    drop(session_key);
    let expected = child_unlocked
        .parent_commitment(k)
        .ok_or_else(|| Error::Internal(format!("no commitment recorded for parent {k}")))?;
    if !crate::seal::meta::commitment_is(&keys, &p.session_id, &expected) {
        return Err(Error::Tampered {
            path: archive.path().to_path_buf(),
            what: format!(
                "ancestor {} ({}) is not the archive {} was made from (its commitment differs)",
                hex(&p.session_id),
                archive.path().display(),
                child.path().display()
            ),
            offset: 0,
        });
    }
    let unlocked = archive.unlock_with(Arc::new(keys))?;
    Ok(ParentArchive { archive, unlocked })
}

/// Step 6: every extent into a parent ends within that parent's stream. `end` is the
/// furthest end among the selected files' extents into it, `entry` the file it belongs to.
pub(crate) fn check_extent_end(
    child: &Archive,
    parent: &ParentArchive,
    end: u64,
    entry: &[u8],
) -> Result<()> {
    let stream_len = parent.unlocked.stream_len();
    if end > stream_len {
        return Err(Error::Corrupt {
            path: child.path().to_path_buf(),
            offset: child.data_start(),
            detail: format!(
                "entry {:?}: extent outside parent's stream (ends at {end}, parent {} holds {stream_len} bytes)",
                crate::format::v2::display_path(entry),
                parent.archive.session_id_hex()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_naming_other_folders_are_ignored() {
        assert!(hint_is_plain("home-20261129T010000Z-a0a1a2a3.coffer"));
        for bad in [
            "",
            ".",
            "..",
            "../x.coffer",
            "/etc/x.coffer",
            "a/b",
            "a\\b",
            "a\0b",
        ] {
            assert!(!hint_is_plain(bad), "{bad:?}");
        }
    }

    #[test]
    fn folder_of_local_and_s3() {
        assert_eq!(
            folder_of(Path::new("x.coffer")).unwrap(),
            Location::Local(PathBuf::from("."))
        );
        assert_eq!(
            folder_of(Path::new("/a/b/x.coffer")).unwrap(),
            Location::Local(PathBuf::from("/a/b"))
        );
        assert_eq!(
            folder_of(Path::new("s3://bk/p/q/x.coffer")).unwrap(),
            Location::S3 {
                bucket: "bk".into(),
                key: "p/q".into()
            }
        );
    }

    #[test]
    fn candidates_hint_first_then_suffix_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let sid = [0xa0u8; 16];
        for n in ["b-x-a0a0a0a0.coffer", "a-x-a0a0a0a0.coffer", "other.coffer"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let p = ParentRef {
            session_id: sid,
            hint: "h.coffer".into(),
        };
        let folder = Location::Local(dir.path().to_path_buf());
        let names: Vec<String> = candidates_in(&folder, &p)
            .iter()
            .map(|l| {
                l.display_path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["h.coffer", "a-x-a0a0a0a0.coffer", "b-x-a0a0a0a0.coffer"]
        );
    }
}

/// What the selected files of a restore point need of one parent: how many of them, and
/// the furthest end of their extents into it with the file it belongs to (checked against
/// the parent's stream once it is open, [`check_extent_end`]). Index 0 (this archive) is
/// unused.
#[derive(Clone, Default)]
pub(crate) struct Need {
    pub files: u64,
    pub end: u64,
    pub entry: Vec<u8>,
}

impl Need {
    /// Count what file entry `e` needs of each parent.
    pub(crate) fn note(needs: &mut [Need], e: &crate::format::v2::EntryV2) {
        let mut seen: Vec<u32> = Vec::new();
        for x in e.extents.iter().filter(|x| x.archive != 0) {
            let Some(n) = needs.get_mut(x.archive as usize) else {
                continue; // refused by the index checks (archive ≤ |chain|)
            };
            if !seen.contains(&x.archive) {
                seen.push(x.archive);
                n.files += 1;
            }
            let end = x.offset.saturating_add(x.len);
            if end > n.end {
                n.end = end;
                n.entry.clone_from(&e.path);
            }
        }
    }
}
