//! Changing who can open an archive.
//!
//! Plain `rekey` rewrites the header envelope only: the session key stays, so every block,
//! the index and the trailer are copied byte for byte. That cannot lock a removed
//! recipient out: whoever once unwrapped the session key keeps it, reads the data without
//! the header, and can even write itself a new stanza (the header MAC key derives from the
//! session key too). `reencrypt` therefore streams the archive into a new one under a new
//! session key and session id: every block is opened (tag checked before decryption) and
//! sealed again through the same pipeline and writer as a backup, so nothing of the old
//! key opens the result.
//!
//! Either way the new archive is written beside the real file and replaces it only when
//! complete (an object: when its upload completes); a failure leaves the original as it was.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::meta_writer::{IndexChunker, MetaKeys};
use super::verify::frame_tag_is;
use super::writer::{ArchiveWriter, ArchiveWriterV2};
use super::{Archive, Unlocked, View};
use crate::error::{Error, Result};
use crate::format::Compression;
use crate::format::frame::FRAME_PREFIX;
use crate::format::header::{self, HeaderBody, Stanza};
use crate::format::index::BlockRef;
use crate::format::index::Index;
use crate::format::v2::{HeaderBodyV2, HeaderFields, SIGNER_ED25519, SignerDecl};
use crate::keys::{SessionId, SessionKey, SubKeys, new_session_id};
use crate::pipeline::{self, sink_stopped, slot_count};
use crate::progress::Observer;
use crate::recipient::{Fingerprint, Identity, Recipient};
use crate::seal::meta::seal_header_v2;
use crate::seal::{BlockSealer, Entropy, OpenError, Opened, seal_header};
use crate::storage::{self, Location};

/// What to change.
#[derive(Default)]
pub struct RekeyOptions<'a> {
    /// Recipients to add.
    pub add: &'a [&'a dyn Recipient],
    /// Recipients to remove.
    pub remove: &'a [Fingerprint],
    /// Allow removing the recipient whose identity does the rekey.
    pub force: bool,
    /// Re-encrypt every block under a new session key and session id, so that a removed
    /// recipient's old session key opens nothing of the result.
    pub reencrypt: bool,
    /// With `reencrypt`: the public keys of the recipients that stay. The new session key
    /// must be wrapped for each of them anew, and the header holds only fingerprints.
    pub keep: &'a [&'a dyn Recipient],
    /// Set from another thread (a signal handler) to stop a re-encryption: it returns
    /// [`Error::Cancelled`] soon after and the original archive stays as it was.
    pub cancel: Option<Arc<AtomicBool>>,
    /// With `reencrypt` of a v2 archive: sign the result with this key. A re-encryption
    /// changes the session id and every tag, so the old signature cannot carry over; without
    /// a key the result is unsigned (FORMAT.md v2.9.6). Plain rekey keeps the signature.
    pub signing_key: Option<Arc<crate::signing::SigningKey>>,
    /// An incremental's parents are looked for next to it, then in this folder (its whole
    /// chain is rekeyed, FORMAT.md v2.8.3).
    pub chain_dir: Option<&'a Path>,
}

/// What a rekey changed.
#[derive(Clone, Debug)]
pub struct RekeyReport {
    /// The file that was replaced: a link given as the archive is resolved to its target.
    pub archive: PathBuf,
    pub added: Vec<Fingerprint>,
    pub removed: Vec<Fingerprint>,
    pub recipients: Vec<Fingerprint>,
    /// True when every block was sealed again under a new session key.
    pub reencrypted: bool,
    /// The archive's session id: new after a re-encryption, the old one otherwise.
    pub session_id: SessionId,
    pub blocks: u64,
    /// For an incremental: its parents, rekeyed with it (table order, oldest first).
    pub chain: Vec<PathBuf>,
}

/// Change who can open an archive; see the module docs for the two modes. `identity` must
/// open the archive; its header MAC and index must authenticate (and with `reencrypt`,
/// every block), so a damaged or forged archive is never re-blessed.
pub fn rekey(
    path: &Path,
    identity: &dyn Identity,
    opts: &RekeyOptions<'_>,
    observer: &dyn Observer,
) -> Result<RekeyReport> {
    let path = &real_path(path)?;
    let archive = Archive::open(path)?;
    let (session_key, keys) = archive.session_keys(identity)?;
    let keys = Arc::new(keys);
    // Refuse to re-bless a damaged archive: the index must authenticate too (v2: every
    // index chunk, opened and checked as `list` would).
    let unlocked = archive.unlock_with(Arc::clone(&keys))?;
    let incremental = archive.version() == 2 && !archive.params().chain.is_empty();
    if archive.version() == 2 {
        unlocked.for_each_entry(&archive, |_, _| Ok(()))?;
    }
    if incremental && opts.reencrypt {
        // Re-sealing a chain means new session ids for every member, so new parent tables
        // and commitments in every child (signed fields) and new file names: not done.
        return Err(Error::InvalidOption(format!(
            "{}: --reencrypt of an incremental chain is not supported (each member would need a new session key and its children new parent tables); rekey without --reencrypt to change recipients, or make a new full backup for the new recipients and delete the old chain",
            path.display()
        )));
    }
    let staying = staying_recipients(&archive, identity, opts)?;
    let keep = if opts.reencrypt {
        Some(match_keep(opts.keep, &staying, path)?)
    } else if !opts.keep.is_empty() {
        return Err(Error::InvalidOption(
            "--keep is only needed with --reencrypt (without it the session key stays, and so do the stanzas of the remaining recipients)".into(),
        ));
    } else {
        None
    };
    if opts.signing_key.is_some() && !(opts.reencrypt && archive.version() == 2) {
        return Err(Error::InvalidOption(
            "a signing key is only used by --reencrypt of a format 2 archive (a plain rekey keeps the signature; format 1 cannot be signed)".into(),
        ));
    }

    if incremental {
        let stanzas = super::rekey_chain::stanzas(staying, opts.add, &session_key)?;
        drop(session_key);
        let chain = super::rekey_chain::rekey_chain(
            &archive,
            &unlocked,
            identity,
            (stanzas.clone(), &keys),
            opts,
            observer,
        )?;
        let p = archive.params();
        return Ok(RekeyReport {
            archive: path.clone(),
            added: opts.add.iter().map(|r| r.fingerprint()).collect(),
            removed: opts.remove.to_vec(),
            recipients: stanzas.iter().map(|s| Fingerprint(s.fingerprint)).collect(),
            reencrypted: false,
            session_id: p.session_id,
            blocks: p.block_count,
            chain,
        });
    }
    let location = Location::parse(path)?;
    let (stanzas, session_id, blocks) = match keep {
        None => {
            // The index was only checked; an archive of millions of entries need not hold
            // it through the copy.
            drop(unlocked);
            let mut stanzas: Vec<Stanza> = staying.into_iter().cloned().collect();
            for r in opts.add {
                stanzas.push(r.wrap(&session_key)?);
            }
            drop(session_key);
            let header = rekeyed_header(&archive, stanzas.clone(), &keys)?;
            copy_with_header(&archive, &header, &location, observer)?;
            let p = archive.params();
            (stanzas, p.session_id, p.block_count)
        }
        Some(keep) => {
            drop(session_key);
            let new_key = SessionKey::generate()?;
            let stanzas = reencrypted_stanzas(&staying, &keep, opts.add, &new_key)?;
            let session_id = new_session_id()?;
            let sink = storage::create_sink_keeping_mode(&location)?;
            let cancel = opts.cancel.as_deref();
            let blocks = match archive.v1_header() {
                Some(v1) => {
                    // Same content, so the same job name and creation time; everything
                    // secret and the session id are new.
                    let body = HeaderBody {
                        session_id,
                        recipients: stanzas.clone(),
                        ..v1.clone()
                    };
                    let new_keys = SubKeys::derive(&new_key, &session_id);
                    drop(new_key);
                    let out = ArchiveWriter::begin(sink, &body, &new_keys, Entropy::Os)?;
                    reencrypt(&archive, unlocked, out, cancel, observer)?
                }
                None => {
                    let old = &archive.v2().expect("v1 or v2").header.body.fields;
                    let body = HeaderBodyV2 {
                        fields: HeaderFields {
                            session_id,
                            // A signature is over the old session's tags: the new
                            // archive is unsigned (FORMAT.md v2.9.6) unless signed anew.
                            signer: opts.signing_key.as_ref().map(|k| SignerDecl {
                                scheme: SIGNER_ED25519,
                                fingerprint: k.fingerprint().0,
                            }),
                            ..old.clone()
                        },
                        recipients: stanzas.clone(),
                    };
                    let new_keys = SubKeys::derive_v2(&new_key, &session_id);
                    drop(new_key);
                    reencrypt_v2(&archive, &unlocked, sink, &body, &new_keys, opts, observer)?
                }
            };
            (stanzas, session_id, blocks)
        }
    };
    Ok(RekeyReport {
        archive: path.clone(),
        added: opts.add.iter().map(|r| r.fingerprint()).collect(),
        removed: opts.remove.to_vec(),
        recipients: stanzas.iter().map(|s| Fingerprint(s.fingerprint)).collect(),
        reencrypted: opts.reencrypt,
        session_id,
        blocks,
        chain: Vec::new(),
    })
}

/// Check the requested change against the archive's recipients; returns the stanzas that
/// stay, in header order.
pub(super) fn staying_recipients<'a>(
    archive: &'a Archive,
    identity: &dyn Identity,
    opts: &RekeyOptions<'_>,
) -> Result<Vec<&'a Stanza>> {
    let path = archive.path();
    let old_stanzas = archive.params().stanzas;
    let present = archive.recipients();
    for fp in opts.remove {
        if !present.contains(fp) {
            return Err(Error::InvalidOption(format!(
                "{fp} is not a recipient of {}",
                path.display()
            )));
        }
        if *fp == identity.fingerprint() && !opts.force {
            return Err(Error::InvalidOption(format!(
                "refusing to remove {fp}, the key you are using ({}); pass --force if you mean it",
                identity.source().display()
            )));
        }
    }
    let staying: Vec<&Stanza> = old_stanzas
        .iter()
        .filter(|s| !opts.remove.contains(&Fingerprint(s.fingerprint)))
        .collect();
    for r in opts.add {
        let fp = r.fingerprint();
        if old_stanzas.iter().any(|s| s.fingerprint == fp.0) {
            return Err(Error::InvalidOption(format!(
                "{fp} ({}) is already a recipient of {}",
                r.label(),
                path.display()
            )));
        }
    }
    let count = staying.len() + opts.add.len();
    if count == 0 {
        return Err(Error::InvalidOption(
            "refusing to remove every recipient: nobody could open the archive again".into(),
        ));
    }
    if count > header::MAX_RECIPIENTS {
        return Err(Error::InvalidOption(format!(
            "at most {} recipients",
            header::MAX_RECIPIENTS
        )));
    }
    Ok(staying)
}

/// The stanzas of the re-encrypted archive: `new_key` wrapped for every staying recipient
/// (through its `keep` public key, keeping its label) and every added one.
fn reencrypted_stanzas(
    staying: &[&Stanza],
    keep: &[&dyn Recipient],
    add: &[&dyn Recipient],
    new_key: &SessionKey,
) -> Result<Vec<Stanza>> {
    let mut recipients = Vec::with_capacity(staying.len() + add.len());
    for (stanza, r) in staying.iter().zip(keep) {
        // The same recipient keeps the name `info` shows for it.
        let mut s = r.wrap(new_key)?;
        s.label.clone_from(&stanza.label);
        recipients.push(s);
    }
    for r in add {
        recipients.push(r.wrap(new_key)?);
    }
    Ok(recipients)
}

/// The archive's header with `stanzas` in place of its recipients, sealed again under the
/// session's (unchanged) header key. v2: every byte before the recipients (what a signature
/// covers) is kept exactly.
pub(super) fn rekeyed_header(
    archive: &Archive,
    stanzas: Vec<Stanza>,
    keys: &SubKeys,
) -> Result<Vec<u8>> {
    if let Some(v1) = archive.v1_header() {
        let body = HeaderBody {
            recipients: stanzas,
            ..v1.clone()
        };
        return Ok(seal_header(&body, keys));
    }
    let raw = &archive.v2().expect("v1 or v2").header;
    let body = HeaderBodyV2 {
        fields: raw.body.fields.clone(),
        recipients: stanzas,
    };
    let (encoded, r) = body.encode();
    if encoded[..r] != *raw.signed_body() {
        // Postcard is canonical, so this cannot happen; if it did, a signature would break.
        return Err(Error::Internal(
            "re-encoding the header changed its signed fields".into(),
        ));
    }
    Ok(seal_header_v2(&body, keys))
}

/// A local archive path with every link resolved, once: the replacement is then written
/// beside the real file and renamed over it. Renaming over a link would replace the link
/// with a new file and leave the real archive with its old recipients.
pub(super) fn real_path(path: &Path) -> Result<PathBuf> {
    match Location::parse(path)? {
        Location::Local(p) => std::fs::canonicalize(&p).map_err(|e| Error::io(&p, e)),
        Location::S3 { .. } => Ok(path.to_path_buf()),
    }
}

/// The `keep` public key of each staying recipient, in the order of `staying`.
fn match_keep<'k>(
    keep: &[&'k dyn Recipient],
    staying: &[&Stanza],
    path: &Path,
) -> Result<Vec<&'k dyn Recipient>> {
    if let Some(r) = keep
        .iter()
        .find(|r| !staying.iter().any(|s| s.fingerprint == r.fingerprint().0))
    {
        return Err(Error::InvalidOption(format!(
            "--keep {} ({}) is not a recipient that stays in {}",
            r.fingerprint(),
            r.label(),
            path.display()
        )));
    }
    let mut found = Vec::with_capacity(staying.len());
    let mut missing = Vec::new();
    for s in staying {
        match keep.iter().find(|r| r.fingerprint().0 == s.fingerprint) {
            Some(r) => found.push(*r),
            None if s.label.is_empty() => missing.push(Fingerprint(s.fingerprint).to_string()),
            None => missing.push(format!("{} ({})", Fingerprint(s.fingerprint), s.label)),
        }
    }
    if !missing.is_empty() {
        return Err(Error::InvalidOption(format!(
            "--reencrypt wraps a new session key for every recipient that stays, so it needs their public keys: pass --keep PUBKEY for {}",
            missing.join(", ")
        )));
    }
    Ok(found)
}

/// Write `header` followed by every byte after the archive's old header.
fn copy_with_header(
    archive: &Archive,
    header: &[u8],
    location: &Location,
    observer: &dyn Observer,
) -> Result<()> {
    write_with_header(archive, header, location, observer)?.commit()
}

/// [`copy_with_header`] up to the commit: the replacement written in full, not yet in place.
pub(super) fn write_with_header(
    archive: &Archive,
    header: &[u8],
    location: &Location,
    observer: &dyn Observer,
) -> Result<Box<dyn storage::ArchiveSink>> {
    let mut out = storage::create_sink_keeping_mode(location)?;
    out.write_all(header)?;
    let start = archive.data_start();
    let to_copy = archive.file_len() - start;
    observer.totals(1, to_copy);
    let source = archive.source();
    let mut copied = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while copied < to_copy {
        let n = (to_copy - copied).min(buf.len() as u64) as usize;
        source.read_exact_at(&mut buf[..n], start + copied)?;
        out.write_all(&buf[..n])?;
        copied += n as u64;
        observer.bytes_done(n as u64);
    }
    Ok(out)
}

thread_local! {
    /// A compressed block's plaintext, inflated here before it moves into the frame: one
    /// buffer per worker rather than per slot keeps memory at a backup's.
    static INFLATED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One pipeline slot: a frame of the old archive, opened and sealed again in place.
#[derive(Default)]
struct Slot {
    frame: Vec<u8>,
    block: u64,
    r: BlockRef,
    last: bool,
    /// Plaintext length the index gives for this block.
    raw_len: usize,
    failure: Option<OpenError>,
}

/// Stream every block of a v1 `archive` into `out`, a new archive begun under new keys:
/// same block boundaries and plaintext, so the index entries stay valid as they are and
/// only the block table is new. Returns the number of blocks.
fn reencrypt(
    archive: &Archive,
    unlocked: Unlocked,
    mut out: ArchiveWriter<'_>,
    cancel: Option<&AtomicBool>,
    observer: &dyn Observer,
) -> Result<u64> {
    let h = out.header();
    let new = Arc::new(resealer(
        h.session_id,
        h.block_size,
        h.segment_size,
        h.compression,
        out.keys(),
    ));
    reseal_blocks(archive, &unlocked, new, cancel, observer, |frame| {
        out.push(frame)
    })?;
    let View::V1(index) = unlocked.view else {
        return Err(Error::Internal(
            "re-encryption of a v2 archive as v1".into(),
        ));
    };
    let Index {
        entries,
        stream_len,
        totals,
        ..
    } = index;
    Ok(out.finish(entries, stream_len, totals)?.blocks)
}

/// Open every block of `archive` (tag first) and seal its plaintext again with `new`, in
/// parallel; the new frames go to `push` in order.
fn reseal_blocks(
    archive: &Archive,
    unlocked: &Unlocked,
    new: Arc<BlockSealer>,
    cancel: Option<&AtomicBool>,
    observer: &dyn Observer,
    mut push: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let old = Arc::clone(&unlocked.sealer);
    let frame_capacity = new.frame_capacity();
    let count = unlocked.block_count();
    let last = count.saturating_sub(1);
    observer.totals(count, unlocked.stream_len());
    pipeline::run(
        slot_count(),
        |feed| {
            for i in 0..count {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(Error::Cancelled);
                }
                let (r, tag) = unlocked.block(archive, i)?;
                let mut slot: Slot = feed.take().ok_or_else(sink_stopped)?;
                if slot.frame.capacity() < frame_capacity {
                    slot.frame.reserve_exact(frame_capacity - slot.frame.len());
                }
                archive.read_frame(&r, &mut slot.frame)?;
                slot.block = i;
                slot.r = r;
                slot.last = i == last;
                slot.raw_len = r.raw_len as usize;
                if tag.is_some_and(|t| !frame_tag_is(&slot.frame, &t)) {
                    slot.failure = Some(OpenError::Tag);
                }
                feed.submit(slot);
            }
            Ok(())
        },
        move |slot: &mut Slot, _| {
            if slot.failure.is_none() {
                reseal(&old, &new, slot)
            }
        },
        |slot, _| {
            if let Some(e) = slot.failure.take() {
                return Err(archive.block_error(slot.block, &slot.r, e));
            }
            push(&slot.frame)?;
            observer.bytes_done(slot.raw_len as u64);
            observer.bytes_written(slot.frame.len() as u64);
            Ok(())
        },
    )
}

/// [`reencrypt`] for a v2 archive: the blocks sealed again into a v2 writer, then the
/// same entries (their stream offsets hold: block boundaries are kept) cut into index
/// chunks under the new keys, signed with `opts.signing_key` if given. Returns the number
/// of blocks.
fn reencrypt_v2(
    archive: &Archive,
    unlocked: &Unlocked,
    sink: Box<dyn storage::ArchiveSink>,
    body: &HeaderBodyV2,
    keys: &SubKeys,
    opts: &RekeyOptions<'_>,
    observer: &dyn Observer,
) -> Result<u64> {
    let cancel = opts.cancel.as_deref();
    let f = &body.fields;
    let meta_keys = MetaKeys {
        keys,
        session_id: f.session_id,
        compress: f.compression != 0,
        entropy: Entropy::Os,
    };
    let mut out = ArchiveWriterV2::begin(sink, body, meta_keys, opts.signing_key.clone())?;
    let new = Arc::new(resealer(
        f.session_id,
        f.block_size,
        f.segment_size,
        f.compression,
        keys,
    ));
    reseal_blocks(archive, unlocked, new, cancel, observer, |frame| {
        out.push(frame)
    })?;
    let mut chunker = IndexChunker::new(meta_keys)?;
    unlocked.for_each_entry(archive, |_, e| chunker.push(&e))?;
    let View::V2(index) = &unlocked.view else {
        return Err(Error::Internal("a v1 index in a v2 re-encryption".into()));
    };
    let written = out.finish(
        chunker.finish()?,
        index.directory.stream_len,
        index.directory.totals,
        Vec::new(),
    )?;
    Ok(written.blocks)
}

/// The sealer for the new archive's blocks.
fn resealer(
    session_id: SessionId,
    block_size: u32,
    segment_size: u32,
    compression: u8,
    keys: &SubKeys,
) -> BlockSealer {
    // The header records only whether blocks are compressed, not the level; the backup
    // default keeps a re-encryption as fast as a backup.
    let compression = match compression {
        0 => Compression::None,
        _ => Compression::Zstd(crate::DEFAULT_ZSTD_LEVEL),
    };
    BlockSealer::new(keys, session_id, block_size, segment_size, compression)
}

/// Open one old frame and seal its plaintext again in place (on a worker thread); a frame
/// that does not open is recorded in the slot, for the writer to report in order.
fn reseal(old: &BlockSealer, new: &BlockSealer, slot: &mut Slot) {
    // The tag is checked before anything is decrypted; only then does the plaintext move
    // to where `seal` takes it: `frame[FRAME_PREFIX..]`.
    let opened = INFLATED.with_borrow_mut(|inflated| {
        match old.open_in_place(&mut slot.frame, slot.block, slot.last, inflated)? {
            Opened::InFrame(range) => {
                debug_assert_eq!(range.start, FRAME_PREFIX);
                slot.frame.truncate(range.end);
            }
            Opened::InScratch => {
                slot.frame.truncate(FRAME_PREFIX);
                slot.frame.extend_from_slice(inflated);
            }
        }
        Ok::<(), OpenError>(())
    });
    if let Err(e) = opened {
        slot.failure = Some(e);
        return;
    }
    if slot.frame.len() - FRAME_PREFIX != slot.raw_len {
        slot.failure = Some(OpenError::Malformed("length differs from the index".into()));
        return;
    }
    new.seal(&mut slot.frame, slot.block, slot.last);
}
