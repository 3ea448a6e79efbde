//! Recipients (who may open an archive) and identities (what opens it). A recipient wraps
//! the session key into a header stanza; an identity unwraps the stanza that is its own.
//! RSA-OAEP-SHA256 is the one scheme of format v1; another scheme is a new implementation
//! of these traits, not a change to the pipeline.

use crate::format::hex;
use pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sha2::{Digest, Sha256};
use spki::{DecodePublicKey, EncodePublicKey};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::header::{STANZA_RSA_OAEP_SHA256, Stanza};
use crate::keys::{SESSION_KEY_LEN, SessionKey};

/// OAEP label: binds every wrapped key to this format and scheme.
pub const OAEP_LABEL: &[u8] = b"coffer/v1/rsa-oaep";
/// Smallest RSA modulus accepted, for recipients and identities alike.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds the work a hostile key file can cause).
pub const MAX_RSA_BITS: usize = 16384;
/// Default size of keys made by `keygen`.
pub const DEFAULT_RSA_BITS: usize = 3072;
/// Key files are small; anything larger is refused before it is read whole.
const MAX_KEY_FILE: u64 = 256 * 1024;

/// SHA-256 of a public key's SubjectPublicKeyInfo DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    fn of(key: &RsaPublicKey) -> Result<Self> {
        let der = key
            .to_public_key_der()
            .map_err(|e| Error::Internal(format!("cannot encode public key: {e}")))?;
        Ok(Fingerprint(Sha256::digest(der.as_bytes()).into()))
    }

    /// Lower-case hex, the form users see and type.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Something that can wrap a session key so that only its owner can unwrap it.
pub trait Recipient: Send + Sync {
    fn fingerprint(&self) -> Fingerprint;
    /// A human name shown by `info` (the key file's stem by default).
    fn label(&self) -> &str;
    fn wrap(&self, session_key: &SessionKey) -> Result<Stanza>;
}

/// Something that can unwrap the session key from the stanza addressed to it.
pub trait Identity {
    fn fingerprint(&self) -> Fingerprint;
    /// Where the identity came from, for messages.
    fn source(&self) -> &Path;
    /// `Ok(None)` when the stanza is not addressed to this identity.
    fn unwrap_stanza(&self, stanza: &Stanza) -> Result<Option<SessionKey>>;
}

/// An RSA public key used as a recipient.
#[derive(Clone)]
pub struct RsaRecipient {
    key: RsaPublicKey,
    fingerprint: Fingerprint,
    label: String,
}

impl fmt::Debug for RsaRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaRecipient({}, {:?})", self.fingerprint, self.label)
    }
}

impl RsaRecipient {
    /// Load a recipient from a PEM file: an SPKI or PKCS#1 public key, or a private key
    /// (whose public half is used).
    pub fn load(path: &Path) -> Result<Self> {
        let mut all = Self::load_all(path)?;
        if all.len() != 1 {
            return Err(Error::BadKey {
                path: path.to_path_buf(),
                detail: format!("holds {} keys where one was expected", all.len()),
            });
        }
        Ok(all.remove(0))
    }

    /// Load every recipient in a file: one PEM key (public, or private whose public half is
    /// used), or a recipients file of OpenSSH `ssh-rsa` lines with `#` comments.
    pub fn load_all(path: &Path) -> Result<Vec<Self>> {
        let text = read_key_file(path)?;
        if text.contains("-----BEGIN") {
            let key = match parse_key(&text, path, None)? {
                ParsedKey::Public(k) => k,
                ParsedKey::Private(k) => k.to_public_key(),
            };
            return Ok(vec![Self::new(key, label_from_path(path), path)?]);
        }
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, comment) = parse_ssh_public(line).map_err(|detail| Error::BadKey {
                path: path.to_path_buf(),
                detail: format!("line {}: {detail}", n + 1),
            })?;
            let label = if comment.is_empty() {
                label_from_path(path)
            } else {
                comment.chars().take(64).collect()
            };
            let r = Self::new(key, label, path)?;
            if out
                .iter()
                .any(|o: &RsaRecipient| o.fingerprint == r.fingerprint)
            {
                return Err(Error::BadKey {
                    path: path.to_path_buf(),
                    detail: format!("line {}: {} is listed twice", n + 1, r.fingerprint),
                });
            }
            out.push(r);
        }
        if out.is_empty() {
            return Err(Error::BadKey {
                path: path.to_path_buf(),
                detail: "no key found in this file".into(),
            });
        }
        Ok(out)
    }

    pub fn new(key: RsaPublicKey, label: String, path: &Path) -> Result<Self> {
        check_bits(modulus_bits(&key), path)?;
        Ok(RsaRecipient {
            fingerprint: Fingerprint::of(&key)?,
            key,
            label,
        })
    }

    /// SPKI PEM text of this key.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("cannot encode public key: {e}")))
    }

    pub fn bits(&self) -> usize {
        modulus_bits(&self.key)
    }
}

impl Recipient for RsaRecipient {
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn wrap(&self, session_key: &SessionKey) -> Result<Stanza> {
        let wrapped = self
            .key
            .encrypt(
                &mut rand::rng(),
                Oaep::<Sha256>::new_with_label(OAEP_LABEL),
                session_key.expose(),
            )
            .map_err(|e| Error::Crypto(format!("RSA-OAEP wrap failed: {e}")))?;
        Ok(Stanza {
            scheme: STANZA_RSA_OAEP_SHA256,
            fingerprint: self.fingerprint.0,
            label: self.label.clone(),
            wrapped_key: wrapped,
        })
    }
}

/// An RSA private key used as an identity. Its Debug output never shows key material.
pub struct RsaIdentity {
    key: RsaPrivateKey,
    fingerprint: Fingerprint,
    path: PathBuf,
}

impl fmt::Debug for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RsaIdentity({}, {})",
            self.fingerprint,
            self.path.display()
        )
    }
}

impl RsaIdentity {
    /// Load a private key from a PKCS#8 or PKCS#1 PEM file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &|p: &Path| {
            Err(Error::BadKey {
                path: p.to_path_buf(),
                detail: "the key is passphrase-protected and no passphrase was given".into(),
            })
        })
    }

    /// Load a private key: PKCS#8 (plain or passphrase-protected), PKCS#1, or OpenSSH
    /// (plain or passphrase-protected). `passphrase` is asked only if the key needs one.
    pub fn load_with(path: &Path, passphrase: &PassphraseFn<'_>) -> Result<Self> {
        let text = read_key_file(path)?;
        if text.trim_start().starts_with("ssh-rsa ") {
            return Err(Error::PublicKeyAsIdentity {
                path: path.to_path_buf(),
            });
        }
        match parse_key(&text, path, Some(passphrase))? {
            ParsedKey::Private(k) => Self::new(*k, path.to_path_buf()),
            ParsedKey::Public(_) => Err(Error::PublicKeyAsIdentity {
                path: path.to_path_buf(),
            }),
        }
    }

    /// PKCS#8 PEM protected by `passphrase` (PBES2: scrypt + AES-256-CBC).
    pub fn to_encrypted_pkcs8_pem(&self, passphrase: &str) -> Result<Zeroizing<String>> {
        self.key
            .to_pkcs8_encrypted_pem(passphrase, LineEnding::LF)
            .map_err(|e| Error::Crypto(format!("cannot encrypt private key: {e}")))
    }

    fn new(key: RsaPrivateKey, path: PathBuf) -> Result<Self> {
        check_bits(modulus_bits(&key), &path)?;
        let fingerprint = Fingerprint::of(&key.to_public_key())?;
        Ok(RsaIdentity {
            key,
            fingerprint,
            path,
        })
    }

    /// Make a new key pair. `bits` must be at least [`MIN_RSA_BITS`].
    pub fn generate(bits: usize) -> Result<Self> {
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || !bits.is_multiple_of(8) {
            return Err(Error::InvalidOption(format!(
                "--bits {bits}: choose a multiple of 8 between {MIN_RSA_BITS} and {MAX_RSA_BITS}"
            )));
        }
        let key = RsaPrivateKey::new(&mut rand::rng(), bits)
            .map_err(|e| Error::Crypto(format!("RSA key generation failed: {e}")))?;
        Self::new(key, PathBuf::from("<generated>"))
    }

    /// PKCS#8 PEM text of the private key (zeroized when dropped).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::Internal(format!("cannot encode private key: {e}")))
    }

    /// The public half, as a recipient.
    pub fn to_recipient(&self, label: String) -> Result<RsaRecipient> {
        RsaRecipient::new(self.key.to_public_key(), label, &self.path)
    }

    pub fn bits(&self) -> usize {
        modulus_bits(&self.key)
    }
}

impl Identity for RsaIdentity {
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn source(&self) -> &Path {
        &self.path
    }
    fn unwrap_stanza(&self, stanza: &Stanza) -> Result<Option<SessionKey>> {
        if stanza.scheme != STANZA_RSA_OAEP_SHA256 || stanza.fingerprint != self.fingerprint.0 {
            return Ok(None);
        }
        // Blinded decryption: the private-key operation's timing must not depend on the key.
        let plain = Zeroizing::new(
            self.key
                .decrypt_blinded(
                    &mut rand::rng(),
                    Oaep::<Sha256>::new_with_label(OAEP_LABEL),
                    &stanza.wrapped_key,
                )
                .map_err(|_| Error::Crypto(format!(
                    "{}: the recipient stanza for {} does not decrypt (damaged header or forged stanza)",
                    self.path.display(),
                    self.fingerprint
                )))?,
        );
        let bytes: [u8; SESSION_KEY_LEN] = plain.as_slice().try_into().map_err(|_| {
            Error::Crypto(format!(
                "recipient stanza for {} holds {} bytes, expected {SESSION_KEY_LEN}",
                self.fingerprint,
                plain.len()
            ))
        })?;
        Ok(Some(SessionKey::from_bytes(bytes)))
    }
}

enum ParsedKey {
    Public(RsaPublicKey),
    Private(Box<RsaPrivateKey>),
}

/// A key file's text, refused before reading past [`MAX_KEY_FILE`] bytes or if it is not
/// text. Shared by recipients, identities and signing keys.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<String>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::BadKey {
                path: path.to_path_buf(),
                detail: "not a key file (binary data)".into(),
            },
            _ => Error::io(path, e),
        })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(Error::BadKey {
            path: path.to_path_buf(),
            detail: format!("file is larger than {MAX_KEY_FILE} bytes; not a key"),
        });
    }
    Ok(text)
}

/// Asked for the passphrase of the key file at the given path.
pub type PassphraseFn<'a> = dyn Fn(&Path) -> Result<Zeroizing<String>> + 'a;

/// An OpenSSH public key line: `ssh-rsa BASE64 [comment]`.
fn parse_ssh_public(line: &str) -> std::result::Result<(RsaPublicKey, String), String> {
    let key = ssh_key::PublicKey::from_openssh(line)
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    let rsa = key
        .key_data()
        .rsa()
        .ok_or_else(|| format!("{} key: coffer needs RSA (ssh-rsa)", key.algorithm()))?;
    let public = RsaPublicKey::try_from(rsa).map_err(|e| format!("bad RSA key: {e}"))?;
    Ok((public, key.comment().to_string()))
}

fn parse_key(text: &str, path: &Path, passphrase: Option<&PassphraseFn<'_>>) -> Result<ParsedKey> {
    let bad = |detail: String| Error::BadKey {
        path: path.to_path_buf(),
        detail,
    };
    let text = text.trim();
    if text.starts_with("ssh-rsa ") || text.starts_with("ssh-") {
        let (key, _) = parse_ssh_public(text.lines().next().unwrap_or_default()).map_err(bad)?;
        return Ok(ParsedKey::Public(key));
    }
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let mut key = ssh_key::PrivateKey::from_openssh(text)
            .map_err(|e| bad(format!("cannot read OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            let Some(ask) = passphrase else {
                // As a recipient only the public half is needed, which OpenSSH stores in
                // the clear.
                let rsa = key
                    .public_key()
                    .key_data()
                    .rsa()
                    .ok_or_else(|| bad(format!("{} key: coffer needs RSA", key.algorithm())))?;
                return RsaPublicKey::try_from(rsa)
                    .map(ParsedKey::Public)
                    .map_err(|e| bad(format!("bad RSA key: {e}")));
            };
            let pass = ask(path)?;
            key = key
                .decrypt(pass.as_bytes())
                .map_err(|_| bad("wrong passphrase (or damaged key)".into()))?;
        }
        let pair = key
            .key_data()
            .rsa()
            .ok_or_else(|| bad(format!("{} key: coffer needs RSA", key.algorithm())))?;
        return RsaPrivateKey::try_from(pair)
            .map(|k| ParsedKey::Private(Box::new(k)))
            .map_err(|e| bad(format!("bad RSA key: {e}")));
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let ask = passphrase.ok_or_else(|| {
            bad("this passphrase-protected private key cannot be a recipient; use its .pub".into())
        })?;
        let pass = ask(path)?;
        return RsaPrivateKey::from_pkcs8_encrypted_pem(text, pass.as_bytes())
            .map(|k| ParsedKey::Private(Box::new(k)))
            .map_err(|_| bad("wrong passphrase (or not an RSA key)".into()));
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs8_pem(text)
            .map(|k| ParsedKey::Private(Box::new(k)))
            .map_err(|e| bad(format!("cannot read PKCS#8 RSA private key: {e}")))
    } else if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        RsaPrivateKey::from_pkcs1_pem(text)
            .map(|k| ParsedKey::Private(Box::new(k)))
            .map_err(|e| bad(format!("cannot read PKCS#1 RSA private key: {e}")))
    } else if text.contains("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(text)
            .map(ParsedKey::Public)
            .map_err(|e| bad(format!("cannot read SPKI RSA public key: {e}")))
    } else if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(text)
            .map(ParsedKey::Public)
            .map_err(|e| bad(format!("cannot read PKCS#1 RSA public key: {e}")))
    } else {
        Err(bad("no PEM RSA key found in this file".into()))
    }
}

/// The key size as RSA counts it: the bit length of the modulus. `size()` is the length in
/// whole bytes, so `size() * 8` would pass a 2041-bit key as 2048.
fn modulus_bits(key: &impl PublicKeyParts) -> usize {
    key.n().bit_width() as usize
}

fn check_bits(bits: usize, path: &Path) -> Result<()> {
    if bits < MIN_RSA_BITS {
        return Err(Error::KeyTooSmall {
            path: path.to_path_buf(),
            bits,
            min: MIN_RSA_BITS,
        });
    }
    if bits > MAX_RSA_BITS {
        return Err(Error::BadKey {
            path: path.to_path_buf(),
            detail: format!("RSA key has {bits} bits; coffer accepts at most {MAX_RSA_BITS}"),
        });
    }
    Ok(())
}

/// "ops.key.pub" -> "ops": the label recorded in the stanza by default.
fn label_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".pub").unwrap_or(&name);
    let name = name
        .strip_suffix(".key")
        .or_else(|| name.strip_suffix(".pem"))
        .unwrap_or(name);
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_file_names() {
        assert_eq!(label_from_path(Path::new("/x/ops.key.pub")), "ops");
        assert_eq!(label_from_path(Path::new("escrow.pem")), "escrow");
        assert_eq!(label_from_path(Path::new("plain")), "plain");
    }

    #[test]
    fn fingerprint_display_is_prefixed_hex() {
        let fp = Fingerprint([0xab; 32]);
        assert_eq!(fp.to_string(), format!("SHA256:{}", "ab".repeat(32)));
    }
}
