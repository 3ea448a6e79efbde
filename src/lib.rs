//! coffer: write-only backups with hybrid envelope encryption.
//!
//! Every backup run (a job session) makes a fresh random session key, seals the data in
//! independent blocks (AES-256-CBC segments + HMAC-SHA256, encrypt-then-MAC), and stores
//! the session key only wrapped under each recipient's RSA public key (RSA-OAEP-SHA256).
//! The backup host needs public keys only; any one recipient's private key restores.
//!
//! The library never prints, prompts or exits; the `coffer` binary is a thin shell over
//! [`backup`], [`restore`] and [`archive`] (which includes [`archive::rekey`]).
#![forbid(unsafe_code)]

pub mod archive;
pub mod backup;
pub mod error;
pub mod format;
pub mod fsutil;
#[cfg(feature = "jobs")]
pub mod job;
pub mod keys;
mod pipeline;
pub mod progress;
pub mod recipient;
pub mod restore;
pub mod seal;
pub mod storage;

pub use error::{Error, Result};
pub use format::Compression;

/// Plaintext bytes per block unless the user chooses otherwise (1 MiB, as Veeam).
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// CBC segment size: 64 segments per default block, one per AVX-512 VAES lane.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024;
/// zstd level used by `--compression zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
