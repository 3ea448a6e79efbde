//! Archive signing keys (format v2.9): an Ed25519 [`SigningKey`] on the backup host signs
//! what it writes; a [`VerifyingKey`] (its public half) lets any reader check, without a
//! decryption key, which host wrote an archive. This module is the key layer only: key
//! files, fingerprints, and the raw sign / strict-verify operations on a message. What
//! message an archive's signature covers is the format's business (docs/FORMAT.md v2.9.3).
//!
//! Key files read:
//!
//! | signing key (private) | verifying key (public) |
//! |---|---|
//! | PKCS#8 PEM `PRIVATE KEY` (`coffer keygen --signing`, `openssl genpkey -algorithm ed25519`) | SPKI PEM `PUBLIC KEY` (`coffer keygen --signing`'s `.pub`, `openssl pkey -pubout`) |
//! | PKCS#8 PEM `ENCRYPTED PRIVATE KEY` (`coffer keygen --signing --passphrase`) | an OpenSSH `ssh-ed25519 AAAA… comment` line (`ssh-keygen -t ed25519`'s `.pub`) |
//! | OpenSSH `openssh-key-v1` ed25519 key, with or without passphrase (`ssh-keygen -t ed25519`) | an allowed-signers file of such lines and PEM blocks ([`load_allowed_signers`]) |
//!
//! The same 32-byte key has the same [`Fingerprint`] whatever file it came from.

use ed25519_dalek::Signer;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, ObjectIdentifier};
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use spki::EncodePublicKey;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::recipient::{Fingerprint, PassphraseFn, read_key_file};

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// The DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) up to the key itself: SEQUENCE,
/// AlgorithmIdentifier { id-Ed25519 1.3.101.112 }, BIT STRING of 33 bytes (0 unused bits).
/// The fingerprint hashes this and the 32 key bytes (FORMAT.md v2.9.1).
pub const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
// Key files are read by `recipient::read_key_file`: the same 256 KiB bound as identities
// and recipients (an allowed-signers file of 256 KiB holds ~2,500 keys).

const ED25519_OID: ObjectIdentifier = ed25519_dalek::pkcs8::ALGORITHM_OID;

/// What a key of another algorithm is, named for the error message.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "an RSA key".into(),
        "1.2.840.10045.2.1" => "an EC (ECDSA) key".into(),
        "1.3.101.110" => "an X25519 key (key agreement, not signing)".into(),
        "1.3.101.111" => "an X448 key (key agreement, not signing)".into(),
        "1.3.101.113" => "an Ed448 key".into(),
        other => format!("a key of algorithm {other}"),
    }
}

fn not_ed25519(what: &str) -> String {
    format!(
        "{what}; a coffer signing key must be Ed25519 (coffer keygen --signing, or ssh-keygen -t ed25519)"
    )
}

/// An Ed25519 public key that checks archive signatures. Holds the key, its fingerprint and
/// where it came from (for messages); no secret.
#[derive(Clone)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    fingerprint: Fingerprint,
    label: String,
    source: PathBuf,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VerifyingKey({}, {:?}, {})",
            self.fingerprint,
            self.label,
            self.source.display()
        )
    }
}

impl PartialEq for VerifyingKey {
    /// Two verifying keys are equal when they are the same key, whatever file they came from.
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for VerifyingKey {}

impl VerifyingKey {
    /// A verifying key from its 32 bytes. Refused: bytes that are not a point of the curve,
    /// and small-order ("weak") keys, for which a signature can be made without any secret
    /// (`verify_strict` refuses them too; refusing here says why, at load time).
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN], label: String, source: &Path) -> Result<Self> {
        let bad = |detail: &str| Error::BadKey {
            path: source.to_path_buf(),
            detail: detail.into(),
        };
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| bad("not a valid Ed25519 public key (not a curve point)"))?;
        if key.is_weak() {
            return Err(bad(
                "a small-order Ed25519 public key; signatures under it prove nothing",
            ));
        }
        Ok(VerifyingKey {
            fingerprint: fingerprint_of(bytes),
            key,
            label,
            source: source.to_path_buf(),
        })
    }

    /// Load the one verifying key in a file: an SPKI PEM `PUBLIC KEY`, or an `ssh-ed25519`
    /// line (`#` comments and blank lines around it allowed). A private key is refused: a
    /// verifier needs only the public half, and should not be handed the secret.
    pub fn load(path: &Path) -> Result<Self> {
        let mut all = load_allowed_signers(path)?;
        if all.len() != 1 {
            return Err(Error::BadKey {
                path: path.to_path_buf(),
                detail: format!(
                    "holds {} keys where one was expected (for several, use it as an allowed-signers file)",
                    all.len()
                ),
            });
        }
        Ok(all.remove(0))
    }

    /// SHA-256 of the key's SubjectPublicKeyInfo DER, the `signer` of a v2 header.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.to_bytes()
    }

    /// A short name for messages: the OpenSSH comment, else the file's stem.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file the key was read from (`<generated>` for a new key).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`, checked strictly
    /// (RFC 8032 with ed25519-dalek's `verify_strict`): a non-canonical `S` (≥ L) and a
    /// small-order `R` or key are refused, so one message has one valid signature per key
    /// and no signature verifies for every key.
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }

    /// SPKI PEM text (`-----BEGIN PUBLIC KEY-----`), the `.pub` file `keygen` writes.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("cannot encode public key: {e}")))
    }
}

/// An Ed25519 private key that signs archives. The secret is wiped when the key is dropped
/// (ed25519-dalek's `zeroize`); Debug shows the fingerprint and the file, never the key.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}, {}, <redacted>)",
            self.public.fingerprint,
            self.public.source.display()
        )
    }
}

impl SigningKey {
    /// A new key from 32 bytes of the operating system's generator (the source of session
    /// keys; an Ed25519 private key is any 32 random bytes).
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SysRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|e| Error::Crypto(format!("OS random number generator failed: {e}")))?;
        Self::new(
            ed25519_dalek::SigningKey::from_bytes(&seed),
            Path::new("<generated>"),
        )
    }

    /// Load a signing key: PKCS#8 PEM (plain or passphrase-protected) or an OpenSSH
    /// ed25519 private key (plain or passphrase-protected). `passphrase` is asked only if
    /// the key needs one. A public key, or a key of another algorithm, is refused.
    pub fn load(path: &Path, passphrase: &PassphraseFn<'_>) -> Result<Self> {
        let text = read_key_file(path)?;
        let bad = |detail: String| Error::BadKey {
            path: path.to_path_buf(),
            detail,
        };
        let text = text.trim();
        if text.starts_with("ssh-")
            || text.contains("-----BEGIN PUBLIC KEY-----")
            || text.contains("-----BEGIN RSA PUBLIC KEY-----")
        {
            return Err(bad(
                "this is a public key; signing needs the private key (the file without .pub)"
                    .into(),
            ));
        }
        let key = if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let mut key = ssh_key::PrivateKey::from_openssh(text).map_err(|e| match e {
                // coffer's ssh-key reads RSA and ed25519 keys only; any other is not a signer.
                ssh_key::Error::AlgorithmUnknown => bad(not_ed25519(
                    "an OpenSSH key of another type (ECDSA, FIDO or other)",
                )),
                e => bad(format!("cannot read OpenSSH private key: {e}")),
            })?;
            // The algorithm is stored in the clear: refuse another kind of key before
            // asking for a passphrase that would be of no use.
            if key.algorithm() != ssh_key::Algorithm::Ed25519 {
                return Err(bad(not_ed25519(&format!(
                    "an OpenSSH {} key",
                    key.algorithm()
                ))));
            }
            if key.is_encrypted() {
                let pass = passphrase(path)?;
                key = key
                    .decrypt(pass.as_bytes())
                    .map_err(|_| bad("wrong passphrase (or damaged key)".into()))?;
            }
            let pair = key
                .key_data()
                .ed25519()
                .ok_or_else(|| bad(not_ed25519(&format!("an OpenSSH {} key", key.algorithm()))))?;
            // Checks that the stored public half is the secret's own.
            ed25519_dalek::SigningKey::try_from(pair)
                .map_err(|e| bad(format!("bad OpenSSH ed25519 key: {e}")))?
        } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            let (_, doc) = pkcs8::SecretDocument::from_pem(text)
                .map_err(|e| bad(format!("cannot read encrypted PKCS#8 key: {e}")))?;
            let encrypted = pkcs8::EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes())
                .map_err(|e| bad(format!("cannot read encrypted PKCS#8 key: {e}")))?;
            let pass = passphrase(path)?;
            let plain = encrypted
                .decrypt(pass.as_bytes())
                .map_err(|_| bad("wrong passphrase (or damaged key)".into()))?;
            pkcs8_private(plain.as_bytes()).map_err(bad)?
        } else if text.contains("-----BEGIN PRIVATE KEY-----") {
            let (_, doc) = pkcs8::SecretDocument::from_pem(text)
                .map_err(|e| bad(format!("cannot read PKCS#8 private key: {e}")))?;
            pkcs8_private(doc.as_bytes()).map_err(bad)?
        } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            return Err(bad(not_ed25519("an RSA key (PKCS#1)")));
        } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
            return Err(bad(not_ed25519("an EC key (SEC1)")));
        } else {
            return Err(bad(
                "no PEM or OpenSSH Ed25519 private key found in this file".into(),
            ));
        };
        Self::new(key, path)
    }

    fn new(key: ed25519_dalek::SigningKey, path: &Path) -> Result<Self> {
        let public =
            VerifyingKey::from_bytes(key.verifying_key().as_bytes(), label_from_path(path), path)?;
        Ok(SigningKey { key, public })
    }

    /// The Ed25519 signature (RFC 8032, pure Ed25519: deterministic) of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The public half, for the `.pub` file and for checking what this key signed.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public half's fingerprint, the `signer` a signed header declares.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// Where the key came from, for messages.
    pub fn source(&self) -> &Path {
        &self.public.source
    }

    /// PKCS#8 PEM text of the private key (zeroized when dropped): the RFC 8410 v1 form
    /// `openssl genpkey` and `ssh-keygen -m PKCS8` write, without the optional public key
    /// (the v2 form ed25519-dalek writes by default is refused by OpenSSL 3.0).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        self.keypair_bytes()
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("cannot encode private key: {e}")))
    }

    /// PKCS#8 PEM protected by `passphrase`: PBES2 with scrypt + AES-256-CBC, the scheme
    /// of passphrase-protected identities.
    pub fn to_encrypted_pkcs8_pem(&self, passphrase: &str) -> Result<Zeroizing<String>> {
        self.keypair_bytes()
            .to_pkcs8_encrypted_pem(passphrase, LineEnding::LF)
            .map_err(|e| Error::Crypto(format!("cannot encrypt private key: {e}")))
    }

    /// The secret alone, for PKCS#8 v1; `KeypairBytes` wipes it on drop (ed25519's
    /// `zeroize`, Cargo.toml).
    fn keypair_bytes(&self) -> ed25519_dalek::pkcs8::KeypairBytes {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
    }
}

/// Load an allowed-signers file: the verifying keys a restore or verify accepts.
///
/// The format is line-oriented: blank lines and lines starting with `#` are ignored; each
/// other line is one OpenSSH public key, `ssh-ed25519 BASE64 [comment]` (a `.pub` of
/// `ssh-keygen -t ed25519`); and a PEM `PUBLIC KEY` block, from its `-----BEGIN` line to its
/// `-----END` line, is one key (so `cat host1.sign.pub host2.sign.pub > signers` works).
/// Unlike OpenSSH's own allowed_signers file, no principals or options precede the key.
/// A file holding a single key (a `.pub`) is an allowed-signers file of one key.
///
/// Refused, naming the line: a key of another type (`ssh-rsa`, an RSA `PUBLIC KEY`), a
/// private key, a key listed twice, and a file with no key.
pub fn load_allowed_signers(path: &Path) -> Result<Vec<VerifyingKey>> {
    let text = read_key_file(path)?;
    let at = |n: usize, detail: String| Error::BadKey {
        path: path.to_path_buf(),
        detail: format!("line {n}: {detail}"),
    };
    let mut out: Vec<VerifyingKey> = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    while let Some((n, line)) = lines.next() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let mut block = String::from(line);
            let mut ended = false;
            for (_, l) in lines.by_ref() {
                block.push('\n');
                block.push_str(l);
                if l.starts_with("-----END ") {
                    ended = true;
                    break;
                }
            }
            if !ended {
                return Err(at(n, format!("PEM block {label} has no END line")));
            }
            parse_pem_public(label, &block, path).map_err(|d| at(n, d))?
        } else {
            parse_ssh_public(line, path).map_err(|d| at(n, d))?
        };
        if out.contains(&key) {
            return Err(at(n, format!("{} is listed twice", key.fingerprint)));
        }
        out.push(key);
    }
    if out.is_empty() {
        return Err(Error::BadKey {
            path: path.to_path_buf(),
            detail: "no key found in this file".into(),
        });
    }
    Ok(out)
}

/// One PEM block of an allowed-signers (or `.pub`) file.
fn parse_pem_public(
    label: &str,
    block: &str,
    path: &Path,
) -> std::result::Result<VerifyingKey, String> {
    match label {
        "PUBLIC KEY" => {}
        "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "OPENSSH PRIVATE KEY" => {
            return Err(
                "this is a private key; give verifiers its public half (the .pub file)".into(),
            );
        }
        "RSA PUBLIC KEY" => return Err(not_ed25519("an RSA key (PKCS#1)")),
        other => return Err(format!("a PEM {other}, not an Ed25519 PUBLIC KEY")),
    }
    let (_, doc) =
        spki::Document::from_pem(block).map_err(|e| format!("cannot read PEM public key: {e}"))?;
    let info = spki::SubjectPublicKeyInfoRef::try_from(doc.as_bytes())
        .map_err(|e| format!("cannot read SPKI public key: {e}"))?;
    if info.algorithm.oid != ED25519_OID {
        return Err(not_ed25519(&algorithm_name(&info.algorithm.oid)));
    }
    // RFC 8410: no parameters, and the BIT STRING is the 32 key bytes.
    if info.algorithm.parameters.is_some() {
        return Err("Ed25519 public key with algorithm parameters (RFC 8410 allows none)".into());
    }
    let bytes: &[u8; PUBLIC_KEY_LEN] = info
        .subject_public_key
        .as_bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or("Ed25519 public key is not 32 bytes")?;
    VerifyingKey::from_bytes(bytes, label_from_path(path), path).map_err(detail_of)
}

/// One `ssh-ed25519 BASE64 [comment]` line.
fn parse_ssh_public(line: &str, path: &Path) -> std::result::Result<VerifyingKey, String> {
    // Name another key type before parsing: ssh-key is built without ECDSA support, so it
    // would only say "unknown algorithm".
    let kind = line.split_whitespace().next().unwrap_or_default();
    if kind != "ssh-ed25519"
        && ["ssh-", "ecdsa-", "sk-"]
            .iter()
            .any(|p| kind.starts_with(p))
    {
        return Err(not_ed25519(&format!(
            "an OpenSSH {} key",
            clean_label(kind)
        )));
    }
    let key = ssh_key::PublicKey::from_openssh(line)
        .map_err(|e| format!("not an OpenSSH public key or PEM block: {e}"))?;
    let ed = key
        .key_data()
        .ed25519()
        .ok_or_else(|| not_ed25519(&format!("an OpenSSH {} key", key.algorithm())))?;
    let label = if key.comment().is_empty() {
        label_from_path(path)
    } else {
        clean_label(key.comment().as_ref())
    };
    VerifyingKey::from_bytes(&ed.0, label, path).map_err(detail_of)
}

/// A PKCS#8 PrivateKeyInfo (DER) holding an Ed25519 key; another algorithm is named.
fn pkcs8_private(der: &[u8]) -> std::result::Result<ed25519_dalek::SigningKey, String> {
    let info = pkcs8::PrivateKeyInfoRef::try_from(der)
        .map_err(|e| format!("cannot read PKCS#8 private key: {e}"))?;
    if info.algorithm.oid != ED25519_OID {
        return Err(not_ed25519(&algorithm_name(&info.algorithm.oid)));
    }
    // Also checks that a stored public key (PKCS#8 v2) is the secret's own.
    ed25519_dalek::SigningKey::from_pkcs8_der(der)
        .map_err(|e| format!("bad PKCS#8 Ed25519 private key: {e}"))
}

fn detail_of(e: Error) -> String {
    match e {
        Error::BadKey { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// SHA-256 of the SubjectPublicKeyInfo DER of an Ed25519 key (FORMAT.md v2.9.1), the same
/// whether the key came from PEM, an OpenSSH line or a private key.
fn fingerprint_of(key: &[u8; PUBLIC_KEY_LEN]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(SPKI_PREFIX);
    h.update(key);
    Fingerprint(h.finalize().into())
}

/// "host.sign.pub" -> "host": the name messages use for a key without an OpenSSH comment.
fn label_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned());
    let name = name.strip_suffix(".pub").unwrap_or(&name);
    let name = name
        .strip_suffix(".sign")
        .or_else(|| name.strip_suffix(".pem"))
        .unwrap_or(name);
    clean_label(name)
}

/// Labels end up in messages on a terminal: no control characters, at most 64 characters.
fn clean_label(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests;
