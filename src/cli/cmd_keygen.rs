//! `coffer keygen`: a new RSA key pair, the private key (0600, optionally passphrase
//! protected) and FILE.pub beside it; with `--signing`, an Ed25519 archive signing key
//! written the same way.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::recipient::{DEFAULT_RSA_BITS, Identity, RsaIdentity};
use coffer::signing::SigningKey;
use zeroize::Zeroizing;

use super::keys::{load_signers, load_signing_key, new_passphrase};
use super::report::EXIT_OK;
use super::ui::{outln, safe_path};

#[derive(Args)]
pub struct KeygenArgs {
    /// Private key file to write; the public key goes to FILE.pub
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// RSA modulus size in bits (at least 2048)
    #[arg(long, default_value_t = DEFAULT_RSA_BITS, conflicts_with = "signing")]
    bits: usize,
    /// Make an Ed25519 archive signing key for a backup host (FILE, and FILE.pub for the
    /// hosts that check signatures) instead of an RSA key pair
    #[arg(long)]
    signing: bool,
    /// Replace existing key files
    #[arg(long)]
    force: bool,
    /// Protect the private key with a passphrase (asked twice, or --passphrase-file)
    #[arg(long)]
    passphrase: bool,
}

pub fn run(a: KeygenArgs) -> anyhow::Result<u8> {
    let public_path = pub_path(&a.output);
    for p in [&a.output, &public_path] {
        if !a.force && p.symlink_metadata().is_ok() {
            return Err(coffer::Error::KeyExists { path: p.clone() }.into());
        }
    }
    if a.signing {
        return signing_keygen(&a, &public_path);
    }
    let identity = RsaIdentity::generate(a.bits)?;
    let label = a
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let recipient = identity.to_recipient(label)?;
    let pem = if a.passphrase {
        let pass = new_passphrase(&a.output)?;
        identity.to_encrypted_pkcs8_pem(&pass)?
    } else {
        identity.to_pkcs8_pem()?
    };
    coffer::fsutil::write_atomic(&a.output, pem.as_bytes(), 0o600, a.force)?;
    coffer::fsutil::write_atomic(&public_path, recipient.to_pem()?.as_bytes(), 0o644, a.force)?;
    outln!("{}", identity.fingerprint())?;
    eprintln!(
        "wrote {} (private, {} bits, keep it offline) and {} (public, give it to backup hosts)",
        safe_path(&a.output),
        identity.bits(),
        safe_path(&public_path)
    );
    Ok(EXIT_OK)
}

/// `keygen --signing`: the private key as PKCS#8 PEM (encrypted with --passphrase, as
/// identities are), the public key as SPKI PEM, then both read back.
fn signing_keygen(a: &KeygenArgs, public_path: &Path) -> anyhow::Result<u8> {
    let key = SigningKey::generate()?;
    let pass = if a.passphrase {
        Some(new_passphrase(&a.output)?)
    } else {
        None
    };
    let pem = match &pass {
        Some(p) => key.to_encrypted_pkcs8_pem(p)?,
        None => key.to_pkcs8_pem()?,
    };
    coffer::fsutil::write_atomic(&a.output, pem.as_bytes(), 0o600, a.force)?;
    let public_pem = key.verifying_key().to_pem()?;
    coffer::fsutil::write_atomic(public_path, public_pem.as_bytes(), 0o644, a.force)?;
    // Read both files back through the loaders every command uses for these keys: a key
    // file that does not load, or names another key, is found now rather than on the day
    // it is needed. The passphrase is the one just given, not asked again.
    let given = |_: &Path| Ok(Zeroizing::new(pass.as_deref().cloned().unwrap_or_default()));
    let private = load_signing_key(&a.output, &given)?;
    let public = load_signers(&[public_path.to_path_buf()])?;
    if private.fingerprint() != key.fingerprint()
        || public
            .iter()
            .map(|k| k.fingerprint())
            .ne([key.fingerprint()])
    {
        return Err(coffer::Error::Internal(format!(
            "{} or {} does not read back as the key just made",
            a.output.display(),
            public_path.display()
        ))
        .into());
    }
    outln!("{}", key.fingerprint())?;
    eprintln!(
        "wrote {} (private Ed25519 signing key, keep it on the backup host that signs) and {} (public, give it to the hosts that check its signatures)",
        safe_path(&a.output),
        safe_path(public_path)
    );
    Ok(EXIT_OK)
}

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}
