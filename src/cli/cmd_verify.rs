//! `coffer verify`: checksums without a key (bit rot, truncation), everything with one
//! (MACs and decryption: deliberate changes too). Writes nothing.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::{Archive, VerifyReport};
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
}

/// What a keyless `verify` cannot tell, in its text and JSON output.
const KEYLESS_NOTE: &str = "not authenticated: use -i KEY to detect deliberate changes";

pub fn run(a: VerifyArgs) -> anyhow::Result<u8> {
    let signers = a.signers.load()?;
    let identity = a.identity.as_deref().map(load_identity).transpose()?;
    let mut out = PerArchive::new(a.json);
    for path in &a.archives {
        match check(path, identity.as_ref(), &signers, a.quiet || a.json) {
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
/// authenticated records before the blocks are checked.
fn check(
    path: &Path,
    identity: Option<&RsaIdentity>,
    signers: &[VerifyingKey],
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
            let mut report = ar.verify_blocks(&unlocked, &progress)?;
            report.signer = signer;
            Ok(report)
        }
        None if !signers.is_empty() => ar.verify_signature_keyless(signers, &progress),
        None => ar.verify_checksums(&progress),
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
        .map(|p| serde_json::json!({"block": p.block, "offset": p.offset, "detail": p.detail}))
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
            let size = format!(
                "{} blocks, {}",
                report.blocks_checked,
                human(report.bytes_checked)
            );
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
        eprintln!(
            "error: {}: offset {}: {}",
            safe_path(path),
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
