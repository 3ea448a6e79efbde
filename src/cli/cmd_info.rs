//! `coffer info`: an archive's header, read without a key. It never shows file names: they
//! are inside the encrypted index.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::Archive;
use coffer::archive::chain::parents_keyless;
use coffer::format::hex;
use coffer::recipient::Fingerprint;

use super::report::{PerArchive, rfc3339};
use super::ui::{human, outln, safe, safe_path};

#[derive(Args)]
pub struct InfoArgs {
    /// Archives to describe
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Another folder to look for an incremental's parents in (after the archive's own)
    #[arg(long, value_name = "DIR")]
    chain_dir: Option<PathBuf>,
}

pub fn run(a: InfoArgs) -> anyhow::Result<u8> {
    let mut out = PerArchive::new(a.json);
    for path in &a.archives {
        match Archive::open(path) {
            Ok(ar) if a.json => out.push(info_json(path, &ar, a.chain_dir.as_deref())),
            Ok(ar) => print_info(path, &ar, a.chain_dir.as_deref())?,
            Err(e) => out.fail(path, e),
        }
    }
    out.finish()
}

fn compression_name(code: u8) -> &'static str {
    match code {
        0 => "none",
        _ => "zstd",
    }
}

fn info_json(path: &Path, ar: &Archive, chain_dir: Option<&Path>) -> serde_json::Value {
    let h = ar.params();
    let parents: Vec<serde_json::Value> = parents_keyless(ar, chain_dir)
        .iter()
        .map(|p| {
            serde_json::json!({
                "session_id": hex(&p.session_id),
                "hint": p.hint,
                "present": p.archive.is_some(),
                "path": p.archive.as_ref().map(|a| a.path().to_string_lossy().into_owned()),
                "problem": p.problem,
            })
        })
        .collect();
    let recipients: Vec<serde_json::Value> = h
        .stanzas
        .iter()
        .map(|s| {
            serde_json::json!({
                "fingerprint": Fingerprint(s.fingerprint).to_string(),
                "label": s.label,
            })
        })
        .collect();
    serde_json::json!({
        "path": path.to_string_lossy(),
        "ok": true,
        "format_version": h.version,
        "session_id": hex(&h.session_id),
        "job_name": h.job_name,
        "created_at": rfc3339(h.created_at),
        "created_at_unix": h.created_at,
        "block_size": h.block_size,
        "segment_size": h.segment_size,
        "compression": compression_name(h.compression),
        "block_count": h.block_count,
        "size": ar.file_len(),
        "recipients": recipients,
        "kind": if h.chain.is_empty() { "full" } else { "incremental" },
        "parents": parents,
        // Declared, not checked: `verify --signer` checks it.
        "signer": ar.declared_signer().map(|f| f.to_string()),
    })
}

fn print_info(path: &Path, ar: &Archive, chain_dir: Option<&Path>) -> anyhow::Result<()> {
    let h = ar.params();
    outln!("{}", safe_path(path))?;
    outln!(
        "  format:      coffer v{} (AES-256-CBC + HMAC-SHA256, RSA-OAEP-SHA256)",
        h.version
    )?;
    outln!("  session:     {}", hex(&h.session_id))?;
    // The job name and labels are not authenticated without a key: anyone who can write
    // the file can change them and recompute the checksum.
    let job = if h.job_name.is_empty() {
        "-".into()
    } else {
        safe(h.job_name)
    };
    outln!("  job:         {job}")?;
    let created = rfc3339(h.created_at);
    outln!("  created:     {}", created.as_deref().unwrap_or("-"))?;
    outln!(
        "  block size:  {} (CBC segments of {})",
        human(h.block_size as u64),
        human(h.segment_size as u64)
    )?;
    outln!("  compression: {}", compression_name(h.compression))?;
    outln!("  blocks:      {}", h.block_count)?;
    outln!(
        "  size:        {} ({} bytes)",
        human(ar.file_len()),
        ar.file_len()
    )?;
    for (i, s) in h.stanzas.iter().enumerate() {
        let lead = if i == 0 {
            "recipients: "
        } else {
            "            "
        };
        let label = if s.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", safe(&s.label))
        };
        outln!("  {lead} {}{label}", Fingerprint(s.fingerprint))?;
    }
    if h.chain.is_empty() {
        outln!("  chain:       full archive")?;
    } else {
        outln!("  chain:       incremental, {} parent(s)", h.chain.len())?;
        // Located without a key (v2.8.2 step 2): a parent found here is only proven to be
        // the right one when a restore checks its commitment.
        for p in parents_keyless(ar, chain_dir) {
            let state = match (&p.archive, &p.problem) {
                (Some(_), Some(problem)) => safe(problem).into_owned(),
                (Some(a), None) => format!("present: {}", safe_path(a.path())),
                (None, _) => "missing".to_string(),
            };
            outln!("    {} ({}): {state}", hex(&p.session_id), safe(&p.hint))?;
        }
    }
    // The archive names its signer's fingerprint, not the key: only a pinned key
    // (`verify --signer`) can check the signature.
    match ar.declared_signer() {
        Some(fp) => outln!("  signature:   signed by {fp} (not checked)")?,
        None => outln!("  signature:   unsigned")?,
    }
    Ok(())
}
