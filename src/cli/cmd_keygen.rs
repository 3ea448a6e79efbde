//! `coffer keygen`: a new RSA key pair, the private key (0600, optionally passphrase
//! protected) and FILE.pub beside it.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::recipient::{DEFAULT_RSA_BITS, Identity, RsaIdentity};

use super::keys::new_passphrase;
use super::report::EXIT_OK;
use super::ui::{outln, safe_path};

#[derive(Args)]
pub struct KeygenArgs {
    /// Private key file to write; the public key goes to FILE.pub
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// RSA modulus size in bits (at least 2048)
    #[arg(long, default_value_t = DEFAULT_RSA_BITS)]
    bits: usize,
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

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}
