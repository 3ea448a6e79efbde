//! Archive signatures (docs/FORMAT.md v2.9): the signed transcript, the signature section,
//! and the checks a reader runs — keyless (tags read from the frames themselves, nothing
//! decrypted) and keyed (tags from the authenticated directory and block-table chunks, no
//! data frame read). The writer and both checks build the transcript with [`Transcript`],
//! so what is signed and what is checked cannot drift apart.

use sha2::{Digest, Sha256};

use super::{Archive, Unlocked, View};
use crate::error::{Error, Result};
use crate::format::crc32c;
use crate::format::v2::{SIGNATURE_LEN, SIGNER_ED25519, TrailerV2};
use crate::recipient::Fingerprint;
use crate::signing::{self, SigningKey, VerifyingKey};

/// Context of the transcript digest `T` (20 ASCII bytes).
const TRANSCRIPT_CONTEXT: &[u8; 20] = b"coffer/v2/transcript";
/// Context of the signed message (19 ASCII bytes).
const MESSAGE_CONTEXT: &[u8; 19] = b"coffer/v2/signature";
/// The signed message: the context and `T`.
pub const MESSAGE_LEN: usize = 19 + 32;

/// The running digests `B` (block tags) and `M` (meta frames' kind and tag), fed in file
/// order as the archive is written or walked (v2.9.3).
pub struct Transcript {
    blocks: Sha256,
    meta: Sha256,
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

impl Transcript {
    pub fn new() -> Self {
        Transcript {
            blocks: Sha256::new(),
            meta: Sha256::new(),
        }
    }

    /// The next block's tag, in block order.
    pub fn block(&mut self, tag: &[u8; 32]) {
        self.blocks.update(tag);
    }

    /// The next meta frame's kind and tag, in file order.
    pub fn meta(&mut self, kind: u8, tag: &[u8; 32]) {
        self.meta.update([kind]);
        self.meta.update(tag);
    }

    /// The message that is signed: `"coffer/v2/signature" ‖ T`, where `T` binds magic and
    /// version (`header[0, 10)`), the signed header prefix `body[0, r)` with its length, `B`,
    /// `M` and the trailer's first 40 bytes.
    pub fn message(
        self,
        header: &[u8],
        signed_body: &[u8],
        trailer: &TrailerV2,
    ) -> [u8; MESSAGE_LEN] {
        let mut t = Sha256::new();
        t.update(TRANSCRIPT_CONTEXT);
        t.update(&header[..10]);
        t.update((signed_body.len() as u32).to_le_bytes());
        t.update(signed_body);
        t.update(self.blocks.finalize());
        t.update(self.meta.finalize());
        t.update(&trailer.encode()[..40]);
        let mut out = [0u8; MESSAGE_LEN];
        out[..19].copy_from_slice(MESSAGE_CONTEXT);
        out[19..].copy_from_slice(&t.finalize());
        out
    }
}

/// The signature section (v2.9.2): scheme, signature length, signature, CRC32C.
pub(crate) fn encode_section(
    signature: &[u8; signing::SIGNATURE_LEN],
) -> [u8; SIGNATURE_LEN as usize] {
    let mut out = [0u8; SIGNATURE_LEN as usize];
    out[0..2].copy_from_slice(&SIGNER_ED25519.to_le_bytes());
    out[2..4].copy_from_slice(&(signing::SIGNATURE_LEN as u16).to_le_bytes());
    out[4..68].copy_from_slice(signature);
    let crc = crc32c(&out[..68]);
    out[68..72].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Check a signature section's structure against the header's declared `scheme` (v2.10.2
/// step 7) and return the signature. Every failure is `Corrupt`.
pub(crate) fn parse_section(
    bytes: &[u8; SIGNATURE_LEN as usize],
    scheme: u16,
) -> Result<[u8; signing::SIGNATURE_LEN], String> {
    if crc32c(&bytes[..68]) != u32::from_le_bytes(bytes[68..72].try_into().expect("4 bytes")) {
        return Err("signature section: checksum mismatch (storage damage)".into());
    }
    let got = u16::from_le_bytes([bytes[0], bytes[1]]);
    if got != scheme {
        return Err(format!(
            "signature section of scheme {got} where the header declares scheme {scheme}"
        ));
    }
    let len = u16::from_le_bytes([bytes[2], bytes[3]]);
    if len as usize != signing::SIGNATURE_LEN {
        return Err(format!(
            "signature of {len} bytes where scheme {scheme} has {}",
            signing::SIGNATURE_LEN
        ));
    }
    Ok(bytes[4..68].try_into().expect("64 bytes"))
}

/// Sign `message` with `key` and return the signature section.
pub fn sign_section(key: &SigningKey, message: &[u8; MESSAGE_LEN]) -> [u8; SIGNATURE_LEN as usize] {
    encode_section(&key.sign(message))
}

impl Archive {
    /// v2.10.2 step 8 (v2.9.5 step 2): the archive declares a signer, and it is one of
    /// `signers`; returns that key. A v1 archive cannot be signed: `SignatureRequired`.
    /// Keyless; checks no signature (see [`Archive::verify_signature_keyless`] and
    /// [`Unlocked::verify_signature`]).
    pub fn allowed_signer<'s>(&self, signers: &'s [VerifyingKey]) -> Result<&'s VerifyingKey> {
        let required = || Error::SignatureRequired {
            path: self.path().to_path_buf(),
        };
        let decl = self
            .v2()
            .and_then(|v| v.header.body.fields.signer)
            .ok_or_else(required)?;
        if decl.scheme != SIGNER_ED25519 {
            // Refused when the header was parsed; kept so that a new scheme cannot slip by.
            return Err(Error::Corrupt {
                path: self.path().to_path_buf(),
                offset: 0,
                detail: format!("unknown signature scheme {}", decl.scheme),
            });
        }
        signers
            .iter()
            .find(|k| k.fingerprint().0 == decl.fingerprint)
            .ok_or_else(|| Error::UnknownSigner {
                path: self.path().to_path_buf(),
                fingerprint: Fingerprint(decl.fingerprint).to_string(),
            })
    }

    /// The fingerprint of the key the header declares as signer, if any (keyless, not
    /// checked: `info` shows it as "(not checked)").
    pub fn declared_signer(&self) -> Option<Fingerprint> {
        self.v2()
            .and_then(|v| v.header.body.fields.signer)
            .map(|s| Fingerprint(s.fingerprint))
    }

    /// Check `message` against the stored signature with `key`.
    fn check_signature(&self, key: &VerifyingKey, message: &[u8; MESSAGE_LEN]) -> Result<()> {
        let v = self.v2().expect("a signer was found, so the archive is v2");
        let signature = v
            .signature
            .as_ref()
            .ok_or_else(|| Error::SignatureRequired {
                path: self.path().to_path_buf(),
            })?;
        if key.verify_strict(message, signature) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                path: self.path().to_path_buf(),
                fingerprint: key.fingerprint().to_string(),
            })
        }
    }

    /// The message the signer must have signed, given the walked or recorded tags.
    fn signed_message(&self, transcript: Transcript) -> [u8; MESSAGE_LEN] {
        let v = self.v2().expect("a v2 archive");
        transcript.message(&v.header.bytes, v.header.signed_body(), &v.trailer)
    }

    /// Keyless signature check (FORMAT.md v2.9.5 steps 1–5): the signer is allowed, then
    /// every data frame and every meta frame is walked as keyless `verify` walks them
    /// (bounds, CRC, meta kinds in order, last flags), their tags fed into the transcript,
    /// and the signature verified. Decrypts nothing.
    ///
    /// Returns the walk's report. When the walk found problems (damage), the signature is
    /// not checked and `report.signer` stays `None`; otherwise it is the signer's
    /// fingerprint, or the error is `BadSignature`.
    pub fn verify_signature_keyless(
        &self,
        signers: &[VerifyingKey],
        observer: &dyn crate::progress::Observer,
    ) -> Result<super::VerifyReport> {
        let key = self.allowed_signer(signers)?;
        let mut transcript = Transcript::new();
        let mut report = self.walk_checksums(observer, Some(&mut transcript))?;
        if report.is_ok() {
            self.check_signature(key, &self.signed_message(transcript))?;
            report.signer = Some(key.fingerprint());
        }
        Ok(report)
    }
}

impl Unlocked {
    /// Keyed signature check (FORMAT.md v2.9.5 "Keyed", v2.10.2 step 13): the signer is
    /// allowed; `B` from the block-table chunks' recorded tags and `M` from the directory's
    /// chunk records and the directory frame's own tag, every one of them authenticated
    /// under this session key; then the signature. No data frame and no index chunk is
    /// read; every frame opened later must carry its recorded tag, which the readers check.
    /// Returns the signer's fingerprint.
    pub fn verify_signature(
        &self,
        archive: &Archive,
        signers: &[VerifyingKey],
    ) -> Result<Fingerprint> {
        let key = archive.allowed_signer(signers)?;
        let View::V2(index) = &self.view else {
            return Err(Error::SignatureRequired {
                path: archive.path().to_path_buf(),
            });
        };
        let mut transcript = Transcript::new();
        index.signed_tags(archive, &mut transcript)?;
        archive.check_signature(key, &archive.signed_message(transcript))?;
        Ok(key.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_round_trip_and_refusals() {
        let sig = [7u8; 64];
        let s = encode_section(&sig);
        assert_eq!(parse_section(&s, 1).unwrap(), sig);
        assert!(parse_section(&s, 2).unwrap_err().contains("scheme"));
        let mut bad = s;
        bad[10] ^= 1;
        assert!(parse_section(&bad, 1).unwrap_err().contains("checksum"));
        let mut len = s;
        len[2] = 63;
        let crc = crc32c(&len[..68]);
        len[68..72].copy_from_slice(&crc.to_le_bytes());
        assert!(parse_section(&len, 1).unwrap_err().contains("63 bytes"));
    }

    #[test]
    fn transcript_separates_blocks_from_meta_and_binds_every_part() {
        let trailer = TrailerV2 {
            index_offset: 100,
            index_len: 200,
            block_count: 1,
            directory_len: 78,
            signature_len: 72,
        };
        let header = [9u8; 20];
        let msg = |f: &dyn Fn(&mut Transcript), body: &[u8], t: &TrailerV2| {
            let mut tr = Transcript::new();
            f(&mut tr);
            tr.message(&header, body, t)
        };
        let base = msg(&|t| t.block(&[1; 32]), b"body", &trailer);
        assert_eq!(&base[..19], MESSAGE_CONTEXT);
        // The same tag as a meta frame's is a different transcript.
        assert_ne!(base, msg(&|t| t.meta(1, &[1; 32]), b"body", &trailer));
        assert_ne!(base, msg(&|t| t.block(&[2; 32]), b"body", &trailer));
        assert_ne!(base, msg(&|t| t.block(&[1; 32]), b"bodz", &trailer));
        let other = TrailerV2 {
            index_len: 201,
            ..trailer
        };
        assert_ne!(base, msg(&|t| t.block(&[1; 32]), b"body", &other));
        assert_eq!(base, msg(&|t| t.block(&[1; 32]), b"body", &trailer));
    }
}
