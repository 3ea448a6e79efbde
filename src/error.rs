//! The library's error type. Every variant names the file, archive offset or block it is
//! about, and [`Error::hint`] gives the one-line "what to do next" that the binary prints.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in coffer's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a coffer archive (bad magic bytes)")]
    NotAnArchive { path: PathBuf },

    #[error("{path}: not a regular file ({kind})")]
    NotAFile { path: PathBuf, kind: &'static str },

    #[error(
        "{path}: archive format version {version} is not supported (this coffer reads versions 1 and 2)"
    )]
    UnsupportedVersion { path: PathBuf, version: u16 },

    #[error("{path}: archive is truncated ({detail})")]
    Truncated { path: PathBuf, detail: String },

    #[error("{path}: corrupt archive at offset {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },

    #[error(
        "{path}: authentication failed for {what} at offset {offset}: the archive was modified or damaged"
    )]
    Tampered {
        path: PathBuf,
        what: String,
        offset: u64,
    },

    #[error(
        "{path}: no recipient of this archive matches identity {identity} ({identity_fp}); the archive is for {archive_fps}"
    )]
    WrongKey {
        path: PathBuf,
        identity: PathBuf,
        identity_fp: String,
        archive_fps: String,
    },

    #[error("{path}: {detail}")]
    BadKey { path: PathBuf, detail: String },

    #[error("{path}: this is a public key; restoring needs a private key (identity)")]
    PublicKeyAsIdentity { path: PathBuf },

    #[error("{path}: RSA key has {bits} bits; coffer requires at least {min} bits")]
    KeyTooSmall {
        path: PathBuf,
        bits: usize,
        min: usize,
    },

    #[error("refusing unsafe path in archive index: \"{path}\" ({reason})")]
    UnsafePath { path: String, reason: String },

    /// A restored file's bytes do not hash to the content hash its entry records: every
    /// block authenticated, so the archive's writer referenced wrong bytes (a bug or an
    /// edited state on the backup host), never storage damage.
    #[error(
        "{path}: restored content does not match the archive's content hash; the file was not restored"
    )]
    ContentMismatch { path: PathBuf },

    /// An incremental archive's parent (an earlier archive of its chain, FORMAT.md v2.8.2)
    /// was not found next to it nor in `--chain-dir`.
    #[error(
        "{path}: needs its parent archive {session_id} ({hint}), which was not found; {files} selected file(s) need it"
    )]
    MissingParent {
        path: PathBuf,
        session_id: String,
        hint: String,
        files: u64,
    },

    /// The backup host's chain state (FORMAT.md v2.8.4) could not be read or written
    /// while a run was using it.
    #[error("{path}: chain state: {detail}")]
    State { path: PathBuf, detail: String },

    /// A signer is required (`--signer`) and the archive is unsigned (or is a v1 archive,
    /// which cannot carry a signature): anyone holding a recipient's public key can write
    /// an unsigned archive, so it proves nothing about who wrote it.
    #[error("{path}: the archive is not signed, and a signature by an allowed signer is required")]
    SignatureRequired { path: PathBuf },

    /// The archive is signed, but by a key that is not among the allowed signers.
    #[error("{path}: the archive is signed by {fingerprint}, which is not an allowed signer")]
    UnknownSigner { path: PathBuf, fingerprint: String },

    /// The signature does not verify over the archive's signed content (FORMAT.md v2.9.3):
    /// something the signer signed (a header field, a tag, the trailer) changed since.
    #[error(
        "{path}: the signature by {fingerprint} does not verify: signed content of the archive was changed"
    )]
    BadSignature { path: PathBuf, fingerprint: String },

    /// Something in the restore target changed under the restore (another user renamed or
    /// replaced a folder it made or was using).
    #[error("{path}: {detail}")]
    TargetChanged { path: PathBuf, detail: String },

    #[error("{path}: already exists")]
    Exists { path: PathBuf },

    #[error("{path}: a key file already exists; refusing to replace it without --force")]
    KeyExists { path: PathBuf },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("stopped by a signal before the archive was complete")]
    Cancelled,

    #[error("{location}: {}: {detail}", problem.describe())]
    Remote {
        location: String,
        problem: RemoteProblem,
        detail: String,
    },

    /// Object storage answered a ranged read with something other than the bytes asked for
    /// (another range, another length, another object size): nothing of it is used.
    #[error("{location}: object storage answered the read at offset {offset} wrongly: {detail}")]
    RemoteAnswer {
        location: String,
        offset: u64,
        detail: String,
    },

    /// A cryptographic operation failed (the OS random number generator, RSA).
    #[error("{0}")]
    Crypto(String),

    /// Something inside coffer that is neither the user's input nor the archive's nor a
    /// cipher's: a value that does not encode, a worker that stopped or panicked.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Build an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A short hint telling the user what to do about this error.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "check the path".into()
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                "check the file's permissions, or run as a user who may read/write it".into()
            }
            Error::Io { .. } => "check the path, the disk and the permissions".into(),
            Error::NotAnArchive { .. } | Error::NotAFile { .. } => {
                "pass a file written by `coffer backup`".into()
            }
            Error::UnsupportedVersion { .. } => "use a newer coffer to read this archive".into(),
            Error::Truncated { .. } => {
                "the file was cut short (interrupted copy or upload?); restore from another copy"
                    .into()
            }
            Error::Corrupt { .. } | Error::Tampered { .. } => {
                "do not trust this copy; run `coffer verify` and restore from another copy".into()
            }
            Error::WrongKey { .. } => {
                "pass -i with the private key of one of the fingerprints listed".into()
            }
            Error::BadKey { .. } => {
                "pass an RSA key: PEM (coffer keygen, openssl genpkey/genrsa) or OpenSSH (ssh-keygen -t rsa); check the passphrase".into()
            }
            Error::PublicKeyAsIdentity { .. } => {
                "pass the private key file (without .pub) to -i".into()
            }
            Error::KeyTooSmall { .. } => "make a new key with `coffer keygen` (3072 bits)".into(),
            Error::UnsafePath { .. } => {
                "this archive was crafted or damaged; nothing outside the target was written".into()
            }
            Error::ContentMismatch { .. } => {
                "the archive's writer recorded wrong data for this file; run `coffer verify -i KEY` and restore it from another backup".into()
            }
            Error::MissingParent { .. } => {
                "put the parent archive next to this one, or pass --chain-dir with the folder holding it".into()
            }
            Error::State { .. } => {
                "check the disk holding the state folder; deleting the chain state makes the next run a full".into()
            }
            Error::SignatureRequired { .. } => {
                "anyone with a recipient's public key can write an unsigned archive; do not trust it, or restore without --signer if you know where it came from".into()
            }
            Error::UnknownSigner { .. } => {
                "pass the signer's .pub with --signer if you trust that host; otherwise do not trust this archive".into()
            }
            Error::BadSignature { .. } => {
                "the archive was changed after it was signed (by a recipient or in storage); do not trust this copy".into()
            }
            Error::TargetChanged { .. } => {
                "another user is changing the restore target; restore into a folder only you can write to, then move what you need".into()
            }
            Error::Exists { .. } => "choose another path, or pass --overwrite to replace it".into(),
            Error::KeyExists { .. } => {
                "choose another name; archives made for the old key still need the old key".into()
            }
            Error::InvalidOption(_) => "see `coffer help`".into(),
            Error::Remote { problem, .. } => problem.hint().into(),
            Error::RemoteAnswer { .. } => {
                "the endpoint does not answer like S3 (a broken proxy or gateway, or a hostile server); check AWS_ENDPOINT_URL".into()
            }
            Error::Cancelled => {
                "no partial archive was kept (a rekey leaves the original as it was); run it again"
                    .into()
            }
            Error::Crypto(_) | Error::Internal(_) => return None,
        })
    }
}

/// What went wrong talking to object storage, as far as the user can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteProblem {
    /// Unknown access key, wrong secret, expired token.
    Credentials,
    /// Valid credentials without permission for this request.
    Denied,
    NoBucket,
    NotFound,
    Exists,
    /// Bad endpoint, region or URL settings.
    Config,
    /// Network or server errors left after the retries.
    Other,
}

impl RemoteProblem {
    fn describe(self) -> &'static str {
        match self {
            RemoteProblem::Credentials => "credentials refused",
            RemoteProblem::Denied => "access denied",
            RemoteProblem::NoBucket => "no such bucket",
            RemoteProblem::NotFound => "no such object",
            RemoteProblem::Exists => "object already exists",
            RemoteProblem::Config => "bad S3 settings",
            RemoteProblem::Other => "object storage request failed",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            RemoteProblem::Credentials => {
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
            }
            RemoteProblem::Denied => {
                "the key lacks permission for this request; a write-only backup key can upload but not read, list or delete (see README, S3)"
            }
            RemoteProblem::NoBucket => {
                "create the bucket, or check its name, AWS_ENDPOINT_URL and AWS_REGION"
            }
            RemoteProblem::NotFound => "check the object name (s3://bucket/key)",
            RemoteProblem::Exists => "choose another name, or pass --overwrite to replace it",
            RemoteProblem::Config => "check AWS_ENDPOINT_URL, AWS_REGION and the s3:// location",
            RemoteProblem::Other => {
                "check AWS_ENDPOINT_URL and the network; transient errors were already retried"
            }
        }
    }
}
