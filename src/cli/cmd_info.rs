//! `coffer info`: an archive's header, read without a key. It never shows file names: they
//! are inside the encrypted index.

use clap::Args;
use std::path::{Path, PathBuf};

use coffer::archive::Archive;
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
}

pub fn run(a: InfoArgs) -> anyhow::Result<u8> {
    let mut out = PerArchive::new(a.json);
    for path in &a.archives {
        match Archive::open(path) {
            Ok(ar) if a.json => out.push(info_json(path, &ar)),
            Ok(ar) => print_info(path, &ar)?,
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

fn info_json(path: &Path, ar: &Archive) -> serde_json::Value {
    let h = ar.params();
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
        // Declared, not checked: `verify --signer` checks it.
        "signer": ar.declared_signer().map(|f| f.to_string()),
    })
}

fn print_info(path: &Path, ar: &Archive) -> anyhow::Result<()> {
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
    // The archive names its signer's fingerprint, not the key: only a pinned key
    // (`verify --signer`) can check the signature.
    match ar.declared_signer() {
        Some(fp) => outln!("  signature:   signed by {fp} (not checked)")?,
        None => outln!("  signature:   unsigned")?,
    }
    Ok(())
}
