//! `coffer verify`: checksums without a key (bit rot, truncation), everything with one
//! (MACs and decryption: deliberate changes too). Writes nothing.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::{Archive, ParentCheck, VerifyReport};
use coffer::recipient::{Identity, RsaIdentity};
use coffer::signing::VerifyingKey;

use super::keys::{SignerArgs, load_identity};
use super::report::PerArchive;
use super::ui::{Progress, human, outln, safe, safe_path};

#[derive(Args)]
pub struct VerifyArgs {
    /// Archives to check
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Private key: check MACs and decrypt everything (writes nothing)
    #[arg(short, long, value_name = "KEY")]
    identity: Option<PathBuf>,
    #[command(flatten)]
    signers: SignerArgs,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Print only problems
    #[arg(short, long)]
    quiet: bool,
    /// Another folder to look for an incremental's parent archives in, after the folder
    /// holding it
    #[arg(long, value_name = "DIR")]
    chain_dir: Option<PathBuf>,
}

/// What a keyless `verify` cannot tell, in its text and JSON output.
const KEYLESS_NOTE: &str = "not authenticated: use -i KEY to detect deliberate changes";

pub fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    let signers = a.signers.load()?;
    let identity = a.identity.as_deref().map(load_identity).transpose()?;
    let mut out = PerArchive::new(a.json);
    for path in &a.archives {
        let chain_dir = a.chain_dir.as_deref();
        match check(
            path,
            identity.as_ref(),
            &signers,
            chain_dir,
            a.quiet || a.json,
        ) {
            Ok(report) => {
                if !report.is_ok() {
                    out.mark_failed();
                }
                if a.json {
                    out.push(verify_json(path, &report));
                } else {
                    print_report(path, &report, a.quiet, !signers.is_empty())?;
                }
            }
            Err(e) => out.fail(path, e),
        }
    }
    let failed = out.failed();
    let code = out.finish()?;
    if failed && !a.json {
        eprintln!(
            "hint: restore damaged archives from another copy; `coffer verify -i KEY` tells forgery from bit rot"
        );
    }
    Ok(code)
}

/// With `signers`, the signature too: keyless from the frames' own tags, or keyed from the
/// authenticated records before the blocks are checked. An incremental is checked with its
/// chain: its parents found next to it or in `chain_dir`.
fn check(
    path: &Path,
    identity: Option<&RsaIdentity>,
    signers: &[VerifyingKey],
    chain_dir: Option<&Path>,
    quiet: bool,
) -> coffer::Result<VerifyReport> {
    let progress = Progress::new("verify", quiet);
    let result = Archive::open(path).and_then(|ar| match identity {
        Some(id) => {
            if !signers.is_empty() {
                ar.allowed_signer(signers)?;
            }
            let unlocked = ar.unlock(id as &dyn Identity)?;
            let signer = if signers.is_empty() {
                None
            } else {
                Some(unlocked.verify_signature(&ar, signers)?)
            };
            let mut report = ar.verify_chain(
                &unlocked,
                id as &dyn Identity,
                chain_dir,
                signers,
                &progress,
            )?;
            report.signer = signer;
            Ok(report)
        }
        None => ar.verify_chain_keyless(chain_dir, signers, &progress),
    });
    progress.finish();
    result
}

/// Checksums catch bit rot, not an attacker: anyone who can write the file can change it
/// and recompute them. Said where the result is read.
fn note(report: &VerifyReport) -> Option<&'static str> {
    match (report.keyed, report.signer) {
        (true, _) => None,
        (false, None) => Some(KEYLESS_NOTE),
        (false, Some(_)) => Some(SIGNED_NOTE),
    }
}

/// What a keyless signature check proves and what it leaves to a keyed one.
const SIGNED_NOTE: &str =
    "the signer signed exactly these tags; use -i KEY to check the data under them";

fn mode(report: &VerifyReport) -> &'static str {
    if report.keyed { "keyed" } else { "checksums" }
}

fn verify_json(path: &Path, report: &VerifyReport) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "archive": p.archive.as_ref().map(|a| a.to_string_lossy()),
                "block": p.block,
                "offset": p.offset,
                "detail": p.detail,
            })
        })
        .collect();
    serde_json::json!({
        "path": path.to_string_lossy(),
        "ok": report.is_ok(),
        "keyed": report.keyed,
        "authenticated": report.keyed,
        "note": note(report),
        "signer": report.signer.map(|f| f.to_string()),
        "blocks_checked": report.blocks_checked,
        "bytes_checked": report.bytes_checked,
        "problems": problems,
        "parents": report.parents.iter().map(parent_json).collect::<Vec<_>>(),
    })
}

/// One parent of a chain: where it was found and what was read of it.
fn parent_json(p: &ParentCheck) -> serde_json::Value {
    serde_json::json!({
        "session_id": p.session_id,
        "hint": p.hint,
        "path": p.path.as_ref().map(|p| p.to_string_lossy()),
        "found": p.path.is_some(),
        "files": p.files,
        "blocks_checked": p.blocks_checked,
        "bytes_read": p.bytes_read,
    })
}

fn print_report(
    path: &Path,
    report: &VerifyReport,
    quiet: bool,
    want_signature: bool,
) -> anyhow::Result<()> {
    let mode = mode(report);
    if report.is_ok() {
        if !quiet {
            let path = safe_path(path);
            let mut size = format!(
                "{} blocks, {}",
                report.blocks_checked,
                human(report.bytes_checked)
            );
            if !report.parents.is_empty() {
                let read: u64 = report.parents.iter().map(|p| p.bytes_read).sum();
                size.push_str(&format!(
                    "; {} parent(s), {} read from them",
                    report.parents.len(),
                    human(read)
                ));
            }
            let signed = report
                .signer
                .map(|f| format!(", signature by {f} verified"))
                .unwrap_or_default();
            match note(report) {
                Some(note) => outln!("ok: {path} ({size}): checksums ok{signed} ({note})")?,
                None => outln!("ok: {path} ({size}, {mode}{signed})")?,
            }
        }
        return Ok(());
    }
    for p in &report.problems {
        // A parent's problem names the parent's file, where its offset is.
        eprintln!(
            "error: {}: offset {}: {}",
            safe_path(p.archive.as_deref().unwrap_or(path)),
            p.offset,
            safe(&p.detail)
        );
    }
    let unchecked = if want_signature && report.signer.is_none() {
        "; the signature was not checked"
    } else {
        ""
    };
    eprintln!(
        "FAILED: {} ({} problem(s) in {} blocks, {mode}){unchecked}",
        safe_path(path),
        report.problems.len(),
        report.blocks_checked
    );
    Ok(())
}
