//! Key material as the command line meets it: the passphrase of a protected private key
//! (from `--passphrase-file`, COFFER_PASSPHRASE_FILE or the terminal), private keys
//! (identities) and public keys (recipients) loaded from files, and archive signing keys
//! and the verifying keys of allowed signers. The keys themselves, and every use of them,
//! are the library's; `coffer keygen` is `cmd_keygen`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use zeroize::Zeroizing;

use coffer::recipient::{PassphraseFn, RsaIdentity, RsaRecipient};
use coffer::signing::{SigningKey, VerifyingKey};

use super::ui::safe_path;

/// Set once from `--passphrase-file`.
static PASSPHRASE_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Remember `--passphrase-file` for every key the command loads.
pub fn set_passphrase_file(file: Option<PathBuf>) {
    let _ = PASSPHRASE_FILE.set(file);
}

/// The passphrase file: `--passphrase-file`, else COFFER_PASSPHRASE_FILE.
fn passphrase_file() -> Option<PathBuf> {
    PASSPHRASE_FILE
        .get()
        .cloned()
        .flatten()
        .or_else(|| std::env::var_os("COFFER_PASSPHRASE_FILE").map(PathBuf::from))
}

/// The passphrase of `key`: the first line of the passphrase file, or asked on the
/// terminal. Without either, an error that names both ways to give it.
pub fn read_passphrase(key: &Path) -> coffer::Result<Zeroizing<String>> {
    if let Some(file) = passphrase_file() {
        let text = Zeroizing::new(
            std::fs::read_to_string(&file).map_err(|e| coffer::Error::io(&file, e))?,
        );
        let line = text.lines().next().unwrap_or_default();
        return Ok(Zeroizing::new(line.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(coffer::Error::BadKey {
            path: key.to_path_buf(),
            detail: "the key is passphrase-protected; pass --passphrase-file or set COFFER_PASSPHRASE_FILE".into(),
        });
    }
    rpassword::prompt_password(format!("passphrase for {}: ", safe_path(key)))
        .map(Zeroizing::new)
        .map_err(|e| coffer::Error::io(key, e))
}

/// A new passphrase for `key`: from the passphrase file, or typed twice on the terminal.
pub fn new_passphrase(key: &Path) -> anyhow::Result<Zeroizing<String>> {
    let pass = read_passphrase(key)?;
    if passphrase_file().is_none() {
        let again = rpassword::prompt_password("repeat the passphrase: ")
            .map_err(|e| coffer::Error::io(key, e))?;
        if again != *pass {
            anyhow::bail!(coffer::Error::InvalidOption(
                "the passphrases do not match".into()
            ));
        }
    }
    if pass.chars().count() < 8 {
        anyhow::bail!(coffer::Error::InvalidOption(
            "passphrase shorter than 8 characters".into()
        ));
    }
    Ok(pass)
}

/// Load a private key, asking for its passphrase only if it has one, and warn when the
/// file is readable by other users.
pub fn load_identity(path: &Path) -> anyhow::Result<RsaIdentity> {
    let identity = RsaIdentity::load_with(path, &read_passphrase)?;
    warn_if_readable(path);
    Ok(identity)
}

/// Load an archive signing key (PKCS#8 PEM or OpenSSH ed25519), calling `passphrase` only
/// if the key is protected, and warn when the file is readable by other users. Commands
/// pass [`read_passphrase`] (--passphrase-file, COFFER_PASSPHRASE_FILE or the terminal);
/// `keygen` passes the passphrase it was just given.
pub fn load_signing_key(path: &Path, passphrase: &PassphraseFn<'_>) -> anyhow::Result<SigningKey> {
    let key = SigningKey::load(path, passphrase)?;
    warn_if_readable(path);
    Ok(key)
}

/// The verifying keys in each of `paths`: each a `.pub` (SPKI PEM or `ssh-ed25519`
/// line) or an allowed-signers file of several. A key named by two files counts once.
pub fn load_signers(paths: &[PathBuf]) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut all: Vec<VerifyingKey> = Vec::new();
    for p in paths {
        for key in coffer::signing::load_allowed_signers(p)? {
            if !all.contains(&key) {
                all.push(key);
            }
        }
    }
    Ok(all)
}

/// `--signer KEY.pub` (repeatable) and `--signers FILE`: the keys an archive must be signed
/// by (`verify`, `restore`).
#[derive(clap::Args, Debug, Default)]
pub struct SignerArgs {
    /// Require a signature by this key (repeatable): a .pub from `coffer keygen --signing`
    /// or an `ssh-ed25519` line; unsigned archives and other signers are refused
    #[arg(long = "signer", value_name = "KEY.pub")]
    pub signer: Vec<PathBuf>,
    /// Require a signature by one of the keys in this allowed-signers file (repeatable)
    #[arg(long = "signers", value_name = "FILE")]
    pub signers: Vec<PathBuf>,
}

impl SignerArgs {
    /// Every allowed key; empty when neither option was given.
    pub fn load(&self) -> anyhow::Result<Vec<VerifyingKey>> {
        let files: Vec<PathBuf> = self.signer.iter().chain(&self.signers).cloned().collect();
        load_signers(&files)
    }
}

/// A private key that other users can read is no longer private: say so.
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {}: private key is readable by other users (mode {:o}); chmod 600 it",
            safe_path(path),
            m.permissions().mode() & 0o777
        );
    }
}

/// Every public key in each file (a file may hold several).
pub fn load_recipients(paths: &[PathBuf]) -> anyhow::Result<Vec<RsaRecipient>> {
    let mut all: Vec<RsaRecipient> = Vec::new();
    for p in paths {
        all.extend(RsaRecipient::load_all(p)?);
    }
    Ok(all)
}
