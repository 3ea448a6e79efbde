//! `verify` of an incremental restore point with its chain (FORMAT.md v2.10.3).
//!
//! Keyless: the archive's own keyless walk, then each parent of its (flat) table located
//! as a restore would and walked the same way; a parent not found, or one closing a cycle,
//! is a problem naming its session id and hint. Keyed: the archive's own blocks and index,
//! then every parent opened with the same identity and proven by its commitment (v2.8.2
//! steps 2–6), each parent block an extent of this restore point references opened once,
//! in block order, and finally every file's content hash computed from its extents across
//! the archives through one ordered pipeline. Every problem is recorded and the check goes
//! on; only an I/O failure of the archive itself ends it.

use std::path::Path;

use super::chain::{self, Need, ParentArchive, parents_keyless};
use super::verify::{ParentCheck, Problem, VerifyReport};
use super::verify_content::check_content_hashes;
use super::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::hex;
use crate::format::v2::KIND_FILE;
use crate::progress::Observer;
use crate::recipient::Identity;
use crate::signing::VerifyingKey;

/// A set of block numbers, one bit each (a parent's needed blocks).
struct Blocks(Vec<u64>);

impl Blocks {
    fn new(count: u64) -> Self {
        Blocks(vec![0; count.div_ceil(64) as usize])
    }

    fn set(&mut self, n: u64) {
        if let Some(w) = self.0.get_mut((n / 64) as usize) {
            *w |= 1 << (n % 64);
        }
    }

    /// The set blocks, in increasing order.
    fn iter(&self) -> impl Iterator<Item = u64> + Send + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl Archive {
    /// Keyless `verify` of the archive and, for an incremental, every member of its chain
    /// that is found (next to it or in `chain_dir`): each one's checksums, or with
    /// `signers` its keyless signature check too. A missing member or a cycle is a problem.
    pub fn verify_chain_keyless(
        &self,
        chain_dir: Option<&Path>,
        signers: &[VerifyingKey],
        observer: &dyn Observer,
    ) -> Result<VerifyReport> {
        let walk = |a: &Archive| {
            if signers.is_empty() {
                a.verify_checksums(observer)
            } else {
                a.verify_signature_keyless(signers, observer)
            }
        };
        let mut report = walk(self)?;
        if self.version() != 2 {
            return Ok(report);
        }
        for status in parents_keyless(self, chain_dir) {
            let session_id = hex(&status.session_id);
            let mut check = ParentCheck {
                session_id: session_id.clone(),
                hint: status.hint.clone(),
                ..ParentCheck::default()
            };
            match &status.archive {
                None => report.problems.push(Problem {
                    archive: None,
                    block: None,
                    offset: 0,
                    detail: missing(&session_id, &status.hint, chain_dir),
                }),
                Some(parent) => {
                    check.path = Some(parent.path().to_path_buf());
                    if let Some(detail) = status.problem {
                        report.problems.push(Problem {
                            archive: None,
                            block: None,
                            offset: 0,
                            detail,
                        });
                    }
                    let path = Some(parent.path().to_path_buf());
                    match walk(parent) {
                        Ok(r) => {
                            check.blocks_checked = r.blocks_checked;
                            check.bytes_read = r.bytes_checked;
                            report
                                .problems
                                .extend(r.problems.into_iter().map(|p| Problem {
                                    archive: path.clone(),
                                    detail: format!("ancestor {session_id}: {}", p.detail),
                                    ..p
                                }));
                        }
                        Err(e) => report.problems.push(Problem {
                            archive: path,
                            block: None,
                            offset: 0,
                            detail: format!("ancestor {session_id}: {e}"),
                        }),
                    }
                }
            }
            report.parents.push(check);
        }
        Ok(report)
    }

    /// Keyed `verify` of the archive and, for an incremental, of its chain as far as this
    /// restore point uses it: every parent in the table opened with `identity` and checked
    /// against its commitment (and with `signers`, its signature), each parent block an
    /// extent references checked once, and every file's content hash computed from its
    /// extents across the archives. `unlocked` is this archive opened with `identity`.
    pub fn verify_chain(
        &self,
        unlocked: &Unlocked,
        identity: &dyn Identity,
        chain_dir: Option<&Path>,
        signers: &[VerifyingKey],
        observer: &dyn Observer,
    ) -> Result<VerifyReport> {
        if self.version() != 2 || self.params().chain.is_empty() {
            return self.verify_blocks(unlocked, observer);
        }
        let mut report = self.verify_own_blocks(unlocked, observer)?;
        let table = self.params().chain;
        let index_at = self.data_start() + self.params().data_len;
        let needs = match needs(self, unlocked, table.len()) {
            Ok(n) => n,
            // The index does not open: reported by the own-blocks pass; nothing says which
            // parents the files need.
            Err(e) => {
                if report.is_ok() {
                    report.problems.push(Problem {
                        archive: None,
                        block: None,
                        offset: index_at,
                        detail: e.to_string(),
                    });
                }
                return Ok(report);
            }
        };
        let mut parents: Vec<Option<ParentArchive>> = Vec::with_capacity(table.len());
        for (k, p) in table.iter().enumerate().map(|(i, p)| (i + 1, p)) {
            let session_id = hex(&p.session_id);
            let need = &needs[k];
            let mut check = ParentCheck {
                session_id: session_id.clone(),
                hint: p.hint.clone(),
                files: need.files,
                ..ParentCheck::default()
            };
            let opened = chain::open_parent(self, unlocked, k, identity, chain_dir, need.files)
                .and_then(|parent| {
                    check.path = Some(parent.archive.path().to_path_buf());
                    chain::check_extent_end(self, &parent, need.end, &need.entry)?;
                    Ok(parent)
                });
            match opened {
                Ok(parent) => {
                    if !signers.is_empty()
                        && let Err(e) = parent.unlocked.verify_signature(&parent.archive, signers)
                    {
                        report.problems.push(parent_problem(&session_id, &e));
                    }
                    parents.push(Some(parent));
                }
                Err(e) => {
                    report.problems.push(parent_problem(&session_id, &e));
                    parents.push(None);
                }
            }
            report.parents.push(check);
        }
        // Each parent block an extent of this restore point references, once, in order.
        let mut sets: Vec<Option<Blocks>> = parents
            .iter()
            .map(|p| p.as_ref().map(|p| Blocks::new(p.unlocked.block_count())))
            .collect();
        let sizes: Vec<u64> = parents
            .iter()
            .map(|p| {
                p.as_ref()
                    .map_or(1, |p| u64::from(p.archive.params().block_size))
            })
            .collect();
        unlocked.for_each_entry(self, |_, e| {
            for x in e.extents.iter().filter(|x| x.archive != 0 && x.len > 0) {
                let k = x.archive as usize - 1;
                if let Some(Some(set)) = sets.get_mut(k) {
                    let bs = sizes[k];
                    for b in x.offset / bs..=(x.offset + x.len - 1) / bs {
                        set.set(b);
                    }
                }
            }
            Ok(())
        })?;
        for (i, (parent, set)) in parents.iter().zip(&sets).enumerate() {
            let (Some(parent), Some(set)) = (parent, set) else {
                continue;
            };
            let mut sub = VerifyReport::default();
            // The frames' exact lengths are in the block table; a block each is close
            // enough for a progress bar.
            let estimate = set.count() * u64::from(parent.archive.params().block_size);
            observer.totals(set.count(), estimate);
            parent
                .archive
                .check_blocks(&parent.unlocked, set.iter(), observer, &mut sub)?;
            let check = &mut report.parents[i];
            check.blocks_checked = sub.blocks_checked;
            check.bytes_read = sub.bytes_checked;
            let session_id = check.session_id.clone();
            let path = Some(parent.archive.path().to_path_buf());
            report
                .problems
                .extend(sub.problems.into_iter().map(|p| Problem {
                    archive: path.clone(),
                    detail: format!("ancestor {session_id}: {}", p.detail),
                    ..p
                }));
        }
        drop(sets);
        // Every file's content, from its extents in whichever archives hold them.
        let mut members: Vec<Option<(&Archive, &Unlocked)>> = vec![Some((self, unlocked))];
        members.extend(
            parents
                .iter()
                .map(|p| p.as_ref().map(|p| (&p.archive, &p.unlocked))),
        );
        let mut read = vec![0u64; members.len()];
        // Files needing a parent that is not open are covered by that parent's problem.
        check_content_hashes(&members, self, unlocked, &mut report, &mut read)?;
        for (check, bytes) in report.parents.iter_mut().zip(&read[1..]) {
            check.bytes_read += bytes;
        }
        Ok(report)
    }
}

/// One scan of the index: what the files need of each parent (index 1..=`parents`).
pub(super) fn needs(archive: &Archive, unlocked: &Unlocked, parents: usize) -> Result<Vec<Need>> {
    let mut needs = vec![Need::default(); parents + 1];
    unlocked.for_each_entry(archive, |_, e| {
        if e.kind != KIND_FILE {
            return Ok(());
        }
        Need::note(&mut needs, &e);
        Ok(())
    })?;
    Ok(needs)
}

/// A parent that could not be used, as a problem of the child. The error names the
/// parent's file (or, when missing, its session id and hint).
fn parent_problem(session_id: &str, e: &Error) -> Problem {
    let detail = match e {
        Error::MissingParent {
            session_id,
            hint,
            files,
            ..
        } => format!(
            "needs its parent archive {session_id} ({hint}), which was not found; {files} file(s) of this restore point have data in it"
        ),
        _ => format!("ancestor {session_id}: {e}"),
    };
    Problem {
        archive: None,
        block: None,
        offset: 0,
        detail,
    }
}

/// The problem of a member not found by a keyless check.
fn missing(session_id: &str, hint: &str, chain_dir: Option<&Path>) -> String {
    let where_ = match chain_dir {
        Some(d) => format!("next to it or in {}", d.display()),
        None => "next to it".into(),
    };
    format!("needs its parent archive {session_id} ({hint}), which was not found {where_}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sets_iterate_in_order_once() {
        let mut s = Blocks::new(130);
        for b in [129, 3, 64, 3, 0, 63, 200] {
            s.set(b);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 3, 63, 64, 129]);
        assert_eq!(s.count(), 5);
    }
}
