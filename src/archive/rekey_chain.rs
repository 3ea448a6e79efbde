//! Plain `rekey` of an incremental restore point: every archive of its chain, all or
//! nothing (FORMAT.md v2.8.3).
//!
//! The members are the restore point and every parent its flat table lists (v2.8.1: every
//! archive its files may reference). Each parent is located as a restore would, unlocked
//! with the same identity and proven by its commitment before anything of it is trusted;
//! its index must authenticate too, so a damaged or forged member is never re-blessed.
//! Each member's replacement (new stanzas over the same session key, every other byte
//! copied) is written and fsynced under a temporary name; only when every one is written
//! are they renamed into place, the parents oldest first and the restore point last. A
//! failure before the renames leaves every member as it was (the temporary files are
//! removed). A crash between renames leaves members each valid under old or new stanzas
//! (the session keys are the same); rerunning the rekey of the restore point completes it,
//! as a parent that already has the change is accepted as it is.

use std::path::PathBuf;

use super::chain;
use super::rekey::{RekeyOptions, real_path, rekeyed_header, write_with_header};
use super::{Archive, Unlocked};
use crate::error::{Error, Result};
use crate::format::header::{self, Stanza};
use crate::keys::{SessionKey, SubKeys};
use crate::progress::Observer;
use crate::recipient::{Fingerprint, Identity, Recipient};
use crate::storage::{ArchiveSink, Location};

/// The restore point's new stanzas: those that stay, then each added recipient's wrap of
/// the (unchanged) session key.
pub(super) fn stanzas(
    staying: Vec<&Stanza>,
    add: &[&dyn Recipient],
    session_key: &SessionKey,
) -> Result<Vec<Stanza>> {
    let mut out: Vec<Stanza> = staying.into_iter().cloned().collect();
    for r in add {
        out.push(r.wrap(session_key)?);
    }
    Ok(out)
}

/// A parent's new stanzas: the same change as the restore point's, applied leniently (a
/// recipient already added or already removed is left so: a rerun after a crash between
/// the renames finds some parents changed).
fn parent_stanzas(
    parent: &Archive,
    opts: &RekeyOptions<'_>,
    session_key: &SessionKey,
) -> Result<Vec<Stanza>> {
    let mut out: Vec<Stanza> = parent
        .params()
        .stanzas
        .iter()
        .filter(|s| !opts.remove.contains(&Fingerprint(s.fingerprint)))
        .cloned()
        .collect();
    for r in opts.add {
        if !out.iter().any(|s| s.fingerprint == r.fingerprint().0) {
            out.push(r.wrap(session_key)?);
        }
    }
    if out.is_empty() || out.len() > header::MAX_RECIPIENTS {
        return Err(Error::InvalidOption(format!(
            "{}: this change would leave the chain member with {} recipients",
            parent.path().display(),
            out.len()
        )));
    }
    Ok(out)
}

/// One member's replacement, written in full and durable, not yet in place.
struct Written {
    path: PathBuf,
    sink: Box<dyn ArchiveSink>,
}

/// Rekey `archive` (the restore point, unlocked as `unlocked` with `identity`) and every
/// parent in its table; `point` is the restore point's new stanzas and its sub-keys.
/// Returns the parents' paths, rekeyed.
pub(super) fn rekey_chain(
    archive: &Archive,
    unlocked: &Unlocked,
    identity: &dyn Identity,
    point: (Vec<Stanza>, &SubKeys),
    opts: &RekeyOptions<'_>,
    observer: &dyn Observer,
) -> Result<Vec<PathBuf>> {
    let table = archive.params().chain;
    let needs = super::verify_chain::needs(archive, unlocked, table.len())?;
    let mut written: Vec<Written> = Vec::with_capacity(table.len() + 1);
    for (k, need) in needs.iter().enumerate().skip(1) {
        // Every parent is a member, whether or not this point's files still use it: the
        // chain is rekeyed as a whole (v2.8.3).
        let parent =
            chain::open_parent(archive, unlocked, k, identity, opts.chain_dir, need.files)?;
        let p = &parent.archive;
        // The index must authenticate, as for a single archive's rekey.
        parent.unlocked.for_each_entry(p, |_, _| Ok(()))?;
        let (session_key, keys) = p.session_keys(identity)?;
        let stanzas = parent_stanzas(p, opts, &session_key)?;
        drop(session_key);
        let header = rekeyed_header(p, stanzas, &keys)?;
        written.push(write_member(p, &header, observer)?);
    }
    let (stanzas, keys) = point;
    let header = rekeyed_header(archive, stanzas, keys)?;
    written.push(write_member(archive, &header, observer)?);
    // Every member is written: now the renames, the restore point last.
    let mut done: Vec<PathBuf> = Vec::with_capacity(written.len());
    let last = written.len() - 1;
    for (i, w) in written.into_iter().enumerate() {
        let Written { path, sink } = w;
        if let Err(e) = sink.commit() {
            if done.is_empty() {
                return Err(e);
            }
            return Err(Error::Io {
                path,
                source: std::io::Error::other(format!(
                    "{e}; the chain is partly rekeyed ({} of {} members: {}), each member still opens with its recipients; run the same rekey again to complete it",
                    done.len(),
                    last + 1,
                    done.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        if i < last {
            done.push(path);
        }
    }
    Ok(done)
}

/// Write a member's replacement beside its real file (a link is resolved: the file it
/// points to is replaced), fsynced, not renamed.
fn write_member(member: &Archive, header: &[u8], observer: &dyn Observer) -> Result<Written> {
    let path = real_path(member.path())?;
    let location = Location::parse(&path)?;
    let mut sink = write_with_header(member, header, &location, observer)?;
    sink.prepare()?;
    Ok(Written { path, sink })
}
