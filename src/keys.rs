//! Key material owned by one job session: the random session key and the HKDF sub-keys
//! derived from it. Nothing here is ever written in clear, printed or logged.

use hkdf::Hkdf;
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of a session key in bytes (AES-256 / HMAC-SHA256 strength).
pub const SESSION_KEY_LEN: usize = 32;
/// Length of a session id in bytes.
pub const SESSION_ID_LEN: usize = 16;

/// A session id: public, random, unique per job session. It salts the key derivation and
/// is bound into every block tag, so blocks cannot move between archives.
pub type SessionId = [u8; SESSION_ID_LEN];

/// The per-session secret that every sub-key is derived from. Zeroized on drop; its Debug
/// output never shows the bytes.
pub struct SessionKey(Zeroizing<[u8; SESSION_KEY_LEN]>);

impl SessionKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; SESSION_KEY_LEN]);
        SysRng
            .try_fill_bytes(key.as_mut())
            .map_err(|e| Error::Crypto(format!("OS random number generator failed: {e}")))?;
        Ok(SessionKey(key))
    }

    /// Wrap known bytes (an unwrapped stanza, or a test vector).
    pub fn from_bytes(bytes: [u8; SESSION_KEY_LEN]) -> Self {
        SessionKey(Zeroizing::new(bytes))
    }

    pub(crate) fn expose(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// A fresh random session id.
pub fn new_session_id() -> Result<SessionId> {
    let mut id = [0u8; SESSION_ID_LEN];
    SysRng
        .try_fill_bytes(&mut id)
        .map_err(|e| Error::Crypto(format!("OS random number generator failed: {e}")))?;
    Ok(id)
}

/// HKDF `info` labels, one per purpose, so that no key is ever used for two jobs.
pub mod labels {
    pub const DATA_ENC: &[u8] = b"coffer/v1/data-enc";
    pub const DATA_IV: &[u8] = b"coffer/v1/data-iv";
    pub const DATA_MAC: &[u8] = b"coffer/v1/data-mac";
    pub const META_ENC: &[u8] = b"coffer/v1/meta-enc";
    pub const META_MAC: &[u8] = b"coffer/v1/meta-mac";
    pub const HEADER_MAC: &[u8] = b"coffer/v1/header-mac";

    /// Format v2 (docs/FORMAT.md v2.4): every key whose MAC input or layout changed gets
    /// a v2 label, so a v1 index or header can never pass as a v2 one under one session
    /// key. The data keys keep their v1 labels: v2 blocks are v1 blocks.
    pub const V2_META_ENC: &[u8] = b"coffer/v2/meta-enc";
    pub const V2_META_MAC: &[u8] = b"coffer/v2/meta-mac";
    pub const V2_HEADER_MAC: &[u8] = b"coffer/v2/header-mac";
    pub const V2_CHAIN_COMMIT: &[u8] = b"coffer/v2/chain-commit";
}

type KeyBytes = Zeroizing<[u8; 32]>;

/// The sub-keys of one session: HKDF-SHA256(ikm = session key, salt = session id).
/// [`SubKeys::derive`] fills the meta and header keys with v1 labels,
/// [`SubKeys::derive_v2`] with v2 labels; the data keys are the same in both.
pub struct SubKeys {
    pub(crate) data_enc: KeyBytes,
    pub(crate) data_iv: KeyBytes,
    pub(crate) data_mac: KeyBytes,
    pub(crate) meta_enc: KeyBytes,
    pub(crate) meta_mac: KeyBytes,
    pub(crate) header_mac: KeyBytes,
    /// The key of an archive's chain commitment (FORMAT.md v2.4). Always derived with its
    /// v2 label, also by [`SubKeys::derive`]: v1 has no commitment and never reads it, and
    /// one label per purpose means deriving it costs one HMAC and can collide with nothing,
    /// whereas an `Option` would make every v2 caller handle a "no key" case that cannot
    /// occur.
    pub(crate) chain_commit: KeyBytes,
}

impl fmt::Debug for SubKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubKeys(<redacted>)")
    }
}

impl SubKeys {
    /// Derive every sub-key of a format v1 session.
    pub fn derive(session_key: &SessionKey, session_id: &SessionId) -> Self {
        Self::derive_with(
            session_key,
            session_id,
            [labels::META_ENC, labels::META_MAC, labels::HEADER_MAC],
        )
    }

    /// Derive every sub-key of a format v2 session (FORMAT.md v2.4): data keys under the
    /// v1 labels, meta and header keys under the v2 labels.
    pub fn derive_v2(session_key: &SessionKey, session_id: &SessionId) -> Self {
        Self::derive_with(
            session_key,
            session_id,
            [
                labels::V2_META_ENC,
                labels::V2_META_MAC,
                labels::V2_HEADER_MAC,
            ],
        )
    }

    /// `meta_header` = the labels of meta-enc, meta-mac and header-mac.
    fn derive_with(
        session_key: &SessionKey,
        session_id: &SessionId,
        meta_header: [&[u8]; 3],
    ) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(session_id), session_key.expose());
        let expand = |info: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
            hk.expand(info, out.as_mut())
                .expect("32-byte HKDF output is always valid");
            out
        };
        SubKeys {
            data_enc: expand(labels::DATA_ENC),
            data_iv: expand(labels::DATA_IV),
            data_mac: expand(labels::DATA_MAC),
            meta_enc: expand(meta_header[0]),
            meta_mac: expand(meta_header[1]),
            header_mac: expand(meta_header[2]),
            chain_commit: expand(labels::V2_CHAIN_COMMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_are_distinct_and_deterministic() {
        let sk = SessionKey::from_bytes([7u8; 32]);
        let a = SubKeys::derive(&sk, &[1u8; 16]);
        let b = SubKeys::derive(&sk, &[1u8; 16]);
        assert_eq!(*a.data_enc, *b.data_enc);
        let all = [
            *a.data_enc,
            *a.data_iv,
            *a.data_mac,
            *a.meta_enc,
            *a.meta_mac,
            *a.header_mac,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "sub-keys {i} and {j} collide");
            }
        }
        let other_session = SubKeys::derive(&sk, &[2u8; 16]);
        assert_ne!(*a.data_enc, *other_session.data_enc);
    }

    #[test]
    fn v2_keeps_the_data_keys_and_changes_meta_and_header_keys() {
        let sk = SessionKey::from_bytes([7u8; 32]);
        let v1 = SubKeys::derive(&sk, &[1u8; 16]);
        let v2 = SubKeys::derive_v2(&sk, &[1u8; 16]);
        assert_eq!(*v1.data_enc, *v2.data_enc);
        assert_eq!(*v1.data_iv, *v2.data_iv);
        assert_eq!(*v1.data_mac, *v2.data_mac);
        assert_eq!(*v1.chain_commit, *v2.chain_commit);
        let all = [
            *v2.data_enc,
            *v2.data_iv,
            *v2.data_mac,
            *v2.meta_enc,
            *v2.meta_mac,
            *v2.header_mac,
            *v2.chain_commit,
            *v1.meta_enc,
            *v1.meta_mac,
            *v1.header_mac,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "sub-keys {i} and {j} collide");
            }
        }
    }

    #[test]
    fn chain_commit_key_of_the_worked_example() {
        // FORMAT.md v2.8.5, archive A: session key 00..1f, session id a0..af.
        let sk = SessionKey::from_bytes(std::array::from_fn(|i| i as u8));
        let id: SessionId = std::array::from_fn(|i| 0xa0 + i as u8);
        let k = SubKeys::derive_v2(&sk, &id);
        assert_eq!(
            crate::format::hex(k.chain_commit.as_ref()),
            "248e8a12483e7f4fcf9a867e550c19ec69140c3ec17bca268355f5101b07eb53"
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let sk = SessionKey::from_bytes([0xAB; 32]);
        let shown = format!(
            "{sk:?} {:?} {:?}",
            SubKeys::derive(&sk, &[0; 16]),
            SubKeys::derive_v2(&sk, &[0; 16])
        );
        assert!(!shown.to_lowercase().contains("ab, ab"));
        assert!(!shown.contains("171"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn generated_session_keys_differ() {
        let a = SessionKey::generate().unwrap();
        let b = SessionKey::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
    }
}
