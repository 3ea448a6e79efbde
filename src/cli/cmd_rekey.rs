//! `coffer rekey`: add or remove an archive's recipients (the header only; for an
//! incremental, of every archive of its chain), or re-encrypt every block under a new
//! session key (`--reencrypt`) so removed keys open nothing of it.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::{Archive, RekeyOptions, RekeyReport};
use coffer::format::hex;
use coffer::recipient::{Fingerprint, Identity, Recipient, RsaIdentity, RsaRecipient};

use super::keys::{load_identity, load_recipients, load_signing_key, read_passphrase};
use super::report::EXIT_OK;
use super::signals::stop_flag;
use super::ui::{Progress, outln, safe_path};

#[derive(Args)]
pub struct RekeyArgs {
    /// Archive to change (replaced atomically; a link is followed and stays a link)
    archive: PathBuf,
    /// Private key of one of the current recipients
    #[arg(short, long, value_name = "KEY")]
    identity: PathBuf,
    /// Public key of a recipient to add (repeatable)
    #[arg(long, value_name = "PUBKEY")]
    add: Vec<PathBuf>,
    /// Recipient to remove: fingerprint (or a unique prefix of 8+ hex digits) or key file
    #[arg(long, value_name = "FINGERPRINT")]
    remove: Vec<String>,
    /// Allow removing the recipient whose key is used for this rekey
    #[arg(long)]
    force: bool,
    /// Re-encrypt every block under a new session key, so removed keys open nothing of it
    #[arg(long)]
    reencrypt: bool,
    /// With --reencrypt: public key of a recipient that stays, besides the -i key (repeatable)
    #[arg(long, value_name = "PUBKEY", requires = "reencrypt")]
    keep: Vec<PathBuf>,
    /// With --reencrypt: sign the result with this signing key (a re-encrypted archive is
    /// otherwise unsigned; a plain rekey keeps the signature as it is)
    #[arg(long, value_name = "SIGNKEY", requires = "reencrypt")]
    sign_with: Option<PathBuf>,
    /// Another folder to look for an incremental's parent archives in, after the folder
    /// holding it (the whole chain is rekeyed)
    #[arg(long, value_name = "DIR")]
    chain_dir: Option<PathBuf>,
}

pub fn run(a: RekeyArgs) -> anyhow::Result<u8> {
    if a.add.is_empty() && a.remove.is_empty() && !a.reencrypt {
        anyhow::bail!(coffer::Error::InvalidOption(
            "nothing to do: pass --add PUBKEY, --remove FINGERPRINT and/or --reencrypt".into()
        ));
    }
    let identity = load_identity(&a.identity)?;
    let remove = removals(&a)?;
    let added = additions(&a.add)?;
    let refs: Vec<&dyn Recipient> = added.iter().map(|r| r as &dyn Recipient).collect();
    let kept = kept(&a, &identity, &remove)?;
    let keep: Vec<&dyn Recipient> = kept.iter().map(|r| r as &dyn Recipient).collect();
    let signing_key = a
        .sign_with
        .as_deref()
        .map(|p| load_signing_key(p, &read_passphrase).map(std::sync::Arc::new))
        .transpose()?;
    let opts = RekeyOptions {
        add: &refs,
        remove: &remove,
        force: a.force,
        reencrypt: a.reencrypt,
        keep: &keep,
        // Stopping a re-encryption part way leaves the original; a header rewrite is short.
        cancel: a.reencrypt.then(stop_flag).transpose()?,
        signing_key,
        chain_dir: a.chain_dir.as_deref(),
    };
    let progress = Progress::new("rekey", false);
    let result = coffer::archive::rekey(&a.archive, &identity, &opts, &progress);
    progress.finish();
    print_report(&result?)?;
    Ok(EXIT_OK)
}

/// The fingerprints of `--remove`, each resolved against the archive's recipients.
fn removals(a: &RekeyArgs) -> anyhow::Result<Vec<Fingerprint>> {
    let archive = Archive::open(&a.archive)?;
    let present = archive.recipients();
    let mut remove = Vec::new();
    for spec in &a.remove {
        let fp = resolve_fingerprint(spec, &present)?;
        if !remove.contains(&fp) {
            remove.push(fp);
        }
    }
    Ok(remove)
}

/// The keys of `--add`; one given twice is an error.
fn additions(paths: &[PathBuf]) -> anyhow::Result<Vec<RsaRecipient>> {
    let added = load_recipients(paths)?;
    for (i, r) in added.iter().enumerate() {
        if added[..i]
            .iter()
            .any(|o| o.fingerprint() == r.fingerprint())
        {
            anyhow::bail!(coffer::Error::InvalidOption(format!(
                "{} is given twice with --add",
                r.fingerprint()
            )));
        }
    }
    Ok(added)
}

/// The recipients that stay with `--reencrypt`: `--keep`, and the key doing the rekey
/// unless it is removed.
fn kept(
    a: &RekeyArgs,
    identity: &RsaIdentity,
    remove: &[Fingerprint],
) -> anyhow::Result<Vec<RsaRecipient>> {
    let mut kept = load_recipients(&a.keep)?;
    if a.reencrypt
        && !remove.contains(&identity.fingerprint())
        && !kept
            .iter()
            .any(|r| r.fingerprint() == identity.fingerprint())
    {
        // Its public half is at hand.
        kept.push(identity.to_recipient(String::new())?);
    }
    Ok(kept)
}

fn print_report(report: &RekeyReport) -> anyhow::Result<()> {
    for fp in &report.added {
        outln!("added:     {fp}")?;
    }
    for fp in &report.removed {
        outln!("removed:   {fp}")?;
    }
    for fp in &report.recipients {
        outln!("recipient: {fp}")?;
    }
    // An incremental's parents get the same change (FORMAT.md v2.8.3).
    for p in &report.chain {
        outln!("parent:    {} (rekeyed too)", safe_path(p))?;
    }
    if report.reencrypted {
        outln!(
            "session:   {} (new; {} blocks re-encrypted)",
            hex(&report.session_id),
            report.blocks
        )?;
    }
    // Exit 0 all the same: the rekey did all it was asked; exit 1 means a run skipped
    // something, and this is a property of the mode, which the line names.
    if !report.removed.is_empty() && !report.reencrypted {
        eprintln!(
            "warning: removed keys still open this archive's data wherever they once unwrapped it (any copy, any backup of this file); pass --reencrypt to lock them out"
        );
    } else if !report.removed.is_empty() {
        eprintln!(
            "note: copies of the old file (other disks, snapshots, object versions) still open with removed keys"
        );
    }
    Ok(())
}

/// A fingerprint given as `SHA256:hex`, hex, a unique prefix (8+ hex digits), or a key file.
fn resolve_fingerprint(spec: &str, present: &[Fingerprint]) -> anyhow::Result<Fingerprint> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(RsaRecipient::load(path)?.fingerprint());
    }
    let hexpart = spec
        .strip_prefix("SHA256:")
        .or_else(|| spec.strip_prefix("sha256:"))
        .unwrap_or(spec)
        .to_ascii_lowercase();
    if hexpart.len() < 8 || !hexpart.chars().all(|c| c.is_ascii_hexdigit()) {
        anyhow::bail!(coffer::Error::InvalidOption(format!(
            "--remove {spec:?}: give a fingerprint (SHA256:… or 8+ hex digits) or a public key file"
        )));
    }
    let hits: Vec<_> = present
        .iter()
        .filter(|fp| fp.to_hex().starts_with(&hexpart))
        .collect();
    match hits.as_slice() {
        [one] => Ok(**one),
        [] => anyhow::bail!(coffer::Error::InvalidOption(format!(
            "--remove {spec}: no recipient of this archive has that fingerprint (see `coffer info`)"
        ))),
        _ => anyhow::bail!(coffer::Error::InvalidOption(format!(
            "--remove {spec}: prefix matches several recipients; give more digits"
        ))),
    }
}
