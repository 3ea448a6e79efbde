//! coffer: write-only backups with hybrid envelope encryption.
//!
//! Every backup run (a *job session*) makes a fresh random session key, seals the data in
//! independent blocks (AES-256-CBC segments + HMAC-SHA256, encrypt-then-MAC), and stores
//! the session key only wrapped under each recipient's RSA public key (RSA-OAEP-SHA256).
//! The backup host needs public keys only; any one recipient's private key restores.
//!
//! # The API
//!
//! | to | use |
//! |---|---|
//! | write an archive | [`backup()`] with [`BackupOptions`] → [`BackupReport`] |
//! | open, inspect, unlock an archive | [`Archive`] (`open`, `header`, `recipients`, `unlock` → [`Unlocked`]) |
//! | restore all or part | [`restore()`] (an incremental: [`restore_chain()`]) with [`RestoreOptions`] → [`RestoreReport`] |
//! | check an archive | [`Archive::verify_checksums`] (no key), [`Archive::verify_blocks`] (keyed) |
//! | change recipients | [`rekey()`] with [`RekeyOptions`] |
//! | keys | [`Recipient`] / [`Identity`], implemented by [`RsaRecipient`] / [`RsaIdentity`] |
//! | follow progress | [`Observer`] ([`Quiet`] ignores everything), [`Warning`] |
//! | where archives live | [`Location`] (a path or `s3://bucket/key`) |
//! | named jobs (feature `jobs`) | [`job`] |
//! | errors | [`Error`]: each names a path, offset or block; [`Error::hint`] says what to do |
//!
//! ```no_run
//! use coffer::{Archive, BackupOptions, Quiet, Recipient, RestoreOptions, RsaIdentity, RsaRecipient};
//! use std::path::PathBuf;
//!
//! # fn main() -> coffer::Result<()> {
//! // On the backup host: public keys only.
//! let ops = RsaRecipient::load("ops.key.pub".as_ref())?;
//! let opts = BackupOptions::new(vec![PathBuf::from("/etc")], PathBuf::from("etc.coffer"));
//! let report = coffer::backup(&opts, &[&ops as &dyn Recipient], &Quiet)?;
//! println!("{} files in {}", report.totals.files, report.archive.display());
//!
//! // Anywhere, with one recipient's private key.
//! let archive = Archive::open("etc.coffer".as_ref())?;
//! let unlocked = archive.unlock(&RsaIdentity::load("ops.key".as_ref())?)?;
//! let restore = RestoreOptions { target: "/tmp/etc".into(), ..Default::default() };
//! coffer::restore(&archive, &unlocked, &restore, &Quiet)?;
//! # Ok(())
//! # }
//! ```
//!
//! The library never prints, prompts or exits; the `coffer` binary (`src/main.rs`,
//! `src/cli/`) is a thin shell over it. The modules marked hidden (`format`, `seal`,
//! `keys`, `fsutil`) are internals, public only for the fuzz targets, the test vectors and
//! the binary; docs/ARCHITECTURE.md maps them.
#![forbid(unsafe_code)]

pub mod archive;
pub mod backup;
pub mod chain;
pub mod error;
#[doc(hidden)]
pub mod format;
#[doc(hidden)]
pub mod fsmeta;
#[doc(hidden)]
pub mod fsutil;
#[cfg(feature = "jobs")]
pub mod job;
#[doc(hidden)]
pub mod keys;
mod pipeline;
pub mod progress;
pub mod recipient;
pub mod restore;
#[doc(hidden)]
pub mod seal;
pub mod signing;
pub mod storage;

pub use archive::{Archive, RekeyOptions, RekeyReport, Unlocked, VerifyReport, rekey};
pub use backup::{BackupOptions, BackupReport, backup};
pub use error::{Error, Result};
pub use format::Compression;
pub use progress::{Observer, Quiet, Warning};
pub use recipient::{Fingerprint, Identity, Recipient, RsaIdentity, RsaRecipient};
pub use restore::{RestoreOptions, RestoreReport, restore, restore_chain};
pub use signing::{SigningKey, VerifyingKey, load_allowed_signers};
pub use storage::Location;

/// Plaintext bytes per block unless the user chooses otherwise (1 MiB, as Veeam).
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// CBC segment size: 64 segments per default block, one per AVX-512 VAES lane.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024;
/// zstd level used by `--compression zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
