//! `coffer restore`: an archive, or the chosen paths of it, into a folder.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::Archive;
use coffer::recipient::Identity;
use coffer::restore::{self, RestoreOptions, RestoreReport};

use super::keys::{SignerArgs, load_identity};
use super::report::{EXIT_OK, EXIT_WARNINGS, print_json, print_warning_summary, warnings_json};
use super::ui::{Progress, human, outln, safe_path};

#[derive(Args)]
pub struct RestoreArgs {
    /// Archive to restore
    archive: PathBuf,
    /// Private key of one of the archive's recipients
    #[arg(short, long, value_name = "KEY")]
    identity: PathBuf,
    /// Folder to restore into (created if missing)
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Only these paths or glob patterns (a folder selects everything below it)
    #[arg(value_name = "PATH")]
    patterns: Vec<String>,
    /// Replace files that already exist in the target
    #[arg(long)]
    overwrite: bool,
    /// Restore owner and group too (needs root)
    #[arg(long)]
    preserve_owner: bool,
    /// Keep set-uid and set-gid bits (cleared by default: anyone with a recipient's public
    /// key can write an archive). As root, kept only together with --preserve-owner: pass
    /// both for a full-system restore of archives you made yourself
    #[arg(long)]
    preserve_special_bits: bool,
    /// Do not restore extended attributes and ACLs
    #[arg(long)]
    no_xattrs: bool,
    /// Another folder holding the parents of an incremental archive (searched after the
    /// archive's own folder)
    #[arg(long, value_name = "DIR")]
    chain_dir: Option<PathBuf>,
    #[command(flatten)]
    signers: SignerArgs,
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as one JSON document
    #[arg(long)]
    json: bool,
}

pub fn run(a: RestoreArgs) -> anyhow::Result<u8> {
    let signers = a.signers.load()?;
    let identity = load_identity(&a.identity)?;
    let archive = Archive::open(&a.archive)?;
    // Signed and by an allowed key: known without a key, so said before the unlock.
    if !signers.is_empty() {
        archive.allowed_signer(&signers)?;
    }
    let unlocked = archive.unlock(&identity as &dyn Identity)?;
    let opts = RestoreOptions {
        target: a.to,
        overwrite: a.overwrite,
        patterns: a.patterns,
        preserve_owner: a.preserve_owner,
        preserve_special_bits: a.preserve_special_bits,
        skip_xattrs: a.no_xattrs,
        signers,
        chain_dir: a.chain_dir,
    };
    let progress = Progress::new("restore", a.quiet || a.json);
    let result = restore::restore_chain(&archive, &unlocked, &identity, &opts, &progress);
    progress.finish();
    let report = result?;
    if a.json {
        print_json(&summary_json(&report, &a.archive, &opts.target))?;
    } else if !a.quiet {
        print_summary(&report, &opts.target)?;
    }
    // A policy, not a failure: said even with -q, on stderr, and the exit code stays 0.
    if report.special_bits_cleared > 0 && !a.json {
        eprintln!(
            "note: set-uid/set-gid bits or file capabilities cleared on {} files or folders (an archive can be written by anyone with a recipient's public key)",
            report.special_bits_cleared
        );
        eprintln!(
            "hint: pass --preserve-special-bits to keep them when you trust this archive's origin"
        );
    }
    Ok(if report.warnings.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    })
}

fn summary_json(report: &RestoreReport, archive: &Path, target: &Path) -> serde_json::Value {
    serde_json::json!({
        "archive": archive.to_string_lossy(),
        "target": target.to_string_lossy(),
        "files": report.files,
        "dirs": report.dirs,
        "symlinks": report.symlinks,
        "hardlinks": report.hardlinks,
        "specials": report.specials,
        "bytes": report.bytes,
        "blocks": report.blocks,
        "archive_bytes_read": report.archive_bytes_read,
        "parents_read": report
            .parents_read
            .iter()
            .map(|p| serde_json::json!({
                "session_id": p.session_id,
                "archive": p.path.to_string_lossy(),
                "bytes": p.bytes,
            }))
            .collect::<Vec<_>>(),
        "index_bytes_read": report.index_bytes_read,
        "remote_bytes_fetched": report.remote_fetched.map(|(bytes, _)| bytes),
        "remote_requests": report.remote_fetched.map(|(_, requests)| requests),
        "duration_secs": report.duration.as_secs_f64().max(1e-9),
        "special_bits_cleared": report.special_bits_cleared,
        "warnings": warnings_json(&report.warnings),
    })
}

fn print_summary(report: &RestoreReport, target: &Path) -> anyhow::Result<()> {
    let secs = report.duration.as_secs_f64().max(1e-9);
    outln!(
        "restored {} files, {} folders, {} links: {} in {:.2}s ({}/s) into {}",
        report.files,
        report.dirs,
        report.symlinks,
        human(report.bytes),
        secs,
        human((report.bytes as f64 / secs) as u64),
        safe_path(target)
    )?;
    print_warning_summary(&report.warnings)
}
