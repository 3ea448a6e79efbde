//! A run that keeps a chain (`BackupOptions::chain`): open the state and decide full or
//! incremental before the header is written (the parent table is a header field), walk
//! with [`Incremental`], and record the archive in the state once it is durable
//! (FORMAT.md v2.8.4).

use std::path::Path;

use super::BackupOptions;
use super::incremental::{Incremental, Referable};
use super::walk::ChainWalk;
use crate::chain::state::{ChainState, Completed, Decision, RunIdentity};
use crate::chain::{ChainKind, ChainReport};
use crate::error::{Error, Result};
use crate::format::v2::{HASH_BLAKE3, ParentRef};
use crate::keys::SessionId;
use crate::recipient::Recipient;
use crate::storage::Location;

/// The chain side of one run, from the decision to the record.
pub(super) struct ChainRun {
    state: ChainState,
    decision: Decision,
    file_name: String,
}

/// What the walk left for the record.
pub(super) struct Walked {
    refs: Vec<u32>,
    files_unchanged: u64,
    pub bytes_referenced: u64,
    pub bytes_read_referenced: u64,
}

impl ChainRun {
    /// Open the chain state for this run, if the options keep one.
    pub fn begin(
        opts: &BackupOptions,
        recipients: &[&dyn Recipient],
        location: &Location,
    ) -> Result<Option<ChainRun>> {
        let Some(chain) = &opts.chain else {
            return Ok(None);
        };
        if opts.format != 2 {
            return Err(Error::InvalidOption(
                "incremental chains need format v2".into(),
            ));
        }
        if opts.job_name.is_empty() {
            return Err(Error::InvalidOption(
                "an incremental needs a job name (--job-name): the chain state is kept per job"
                    .into(),
            ));
        }
        let (destination, file_name, local_dir) = place(location)?;
        let who = RunIdentity {
            job: opts.job_name.clone(),
            host: host_id(),
            destination,
            params: params(opts, recipients),
        };
        let exists = |name: &str| local_dir.as_ref().map(|d| d.join(name).exists());
        let (state, decision) = ChainState::begin(
            &chain.state,
            &who,
            chain.full.as_deref(),
            chain.full_every,
            &exists,
        )?;
        Ok(Some(ChainRun {
            state,
            decision,
            file_name,
        }))
    }

    /// The header's parent table.
    pub fn parent_refs(&self) -> Vec<ParentRef> {
        self.decision
            .parents
            .iter()
            .map(|p| ParentRef {
                session_id: p.session_id,
                hint: p.file_name.clone(),
            })
            .collect()
    }

    /// The directory's parent commitments, in the same order.
    pub fn commitments(&self) -> Vec<[u8; 32]> {
        self.decision.parents.iter().map(|p| p.commitment).collect()
    }

    /// Walk with the chain: `walk` gets the chain side and returns what it returns;
    /// `xattrs`: whether the run reads extended attributes.
    pub fn walk<T>(
        &mut self,
        xattrs: bool,
        walk: impl FnOnce(&mut dyn ChainWalk) -> Result<T>,
    ) -> Result<(T, Walked)> {
        let parents = self
            .decision
            .parents
            .iter()
            .map(|p| Referable {
                position: p.position,
                stream_len: p.stream_len,
            })
            .collect();
        let incremental = self.decision.full_reason.is_none();
        let mut inc = Incremental::new(
            &mut self.state,
            incremental,
            self.decision.position,
            parents,
            xattrs,
        );
        let out = walk(&mut inc)?;
        let walked = Walked {
            refs: inc.refs.iter().copied().collect(),
            files_unchanged: inc.files_unchanged,
            bytes_referenced: inc.bytes_referenced,
            bytes_read_referenced: inc.bytes_read_referenced,
        };
        drop(inc);
        Ok((out, walked))
    }

    /// The archive is durable: record it and commit the state. Returns the report.
    pub fn complete(
        self,
        walked: &Walked,
        session_id: SessionId,
        created_at: i64,
        stream_len: u64,
        commitment: [u8; 32],
    ) -> Result<ChainReport> {
        let report = ChainReport {
            kind: if self.decision.full_reason.is_none() {
                ChainKind::Incremental
            } else {
                ChainKind::Full
            },
            parents: self.decision.parents.iter().map(|p| p.session_id).collect(),
            full_reason: self.decision.full_reason.clone(),
            files_unchanged: walked.files_unchanged,
            bytes_referenced: walked.bytes_referenced,
        };
        self.state.complete(Completed {
            position: self.decision.position,
            session_id,
            file_name: self.file_name,
            created_at,
            stream_len,
            commitment,
            refs: walked.refs.clone(),
        })?;
        Ok(report)
    }
}

/// Where the archive goes: the destination (folder or S3 prefix), the archive's file
/// name, and the local folder to check earlier archives in.
fn place(location: &Location) -> Result<(String, String, Option<std::path::PathBuf>)> {
    match location {
        Location::Local(path) => {
            let name = file_name(path)?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            let dir = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
            Ok((dir.to_string_lossy().into_owned(), name, Some(dir)))
        }
        Location::S3 { bucket, key } => {
            let (prefix, name) = match key.rsplit_once('/') {
                Some((p, n)) => (format!("{p}/"), n.to_string()),
                None => (String::new(), key.clone()),
            };
            // An incremental never reads the bucket (write-only keys suffice): whether an
            // earlier archive is still there is not checked.
            Ok((format!("s3://{bucket}/{prefix}"), name, None))
        }
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::InvalidOption(format!(
                "{}: an archive in a chain needs a UTF-8 file name",
                path.display()
            ))
        })
}

/// What must not change within a chain (FORMAT.md v2.8.4), as one canonical string.
fn params(opts: &BackupOptions, recipients: &[&dyn Recipient]) -> String {
    let mut fps: Vec<String> = recipients
        .iter()
        .map(|r| r.fingerprint().to_hex())
        .collect();
    fps.sort();
    fps.dedup();
    let signer = opts.signing_key.as_ref().map_or("none".to_string(), |k| {
        crate::format::hex(&k.fingerprint().0)
    });
    format!(
        "format=2 recipients={} block_size={} segment_size={} compression={} content_hash={} signer={}",
        fps.join(","),
        opts.block_size,
        opts.segment_size,
        opts.compression.code(),
        HASH_BLAKE3,
        signer
    )
}

/// This machine, as a chain state records it: a digest of its machine id (the id itself
/// is not stored), else of its host name.
fn host_id() -> String {
    use sha2::{Digest, Sha256};
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    crate::format::hex(&Sha256::digest(format!("coffer/host/{id}").as_bytes())[..16])
}
