//! `coffer backup`: one new archive from files and folders, to `-o FILE` or into a folder
//! or S3 prefix (`--to`, named like a job's archives).

use clap::Args;
use std::path::PathBuf;

use coffer::Compression;
use coffer::backup::{self, BackupOptions, BackupReport};
use coffer::format::hex;
use coffer::recipient::{Fingerprint, Recipient};

use super::keys::{load_recipients, load_signing_key, read_passphrase};
use super::report::{
    EXIT_OK, EXIT_WARNINGS, print_json, print_warning_summary, warnings_json, warnings_note,
};
use super::signals::stop_flag;
use super::ui::{Progress, human, outln, safe_path};

#[derive(Args)]
pub struct BackupArgs {
    /// Files and folders to back up; each is stored under its own name
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<PathBuf>,
    /// Archive to write: a file, or an object s3://bucket/key
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    output: Option<PathBuf>,
    /// Folder or s3://bucket/prefix to write a new archive into, named NAME-TIME-ID.coffer
    #[arg(long, value_name = "DEST")]
    to: Option<PathBuf>,
    /// S3 Object Lock for the archive: compliance:DAYS or governance:DAYS (the bucket must
    /// have Object Lock enabled)
    #[arg(long, value_name = "MODE:DAYS")]
    object_lock: Option<String>,
    /// Public key of a recipient who may restore (repeat for several)
    #[arg(short, long = "recipient", value_name = "PUBKEY", required = true)]
    recipients: Vec<PathBuf>,
    /// none, zstd (level 1) or zstd:LEVEL; blocks that do not shrink are stored raw
    #[arg(long, default_value = "zstd")]
    compression: Compression,
    /// Plaintext bytes per block, e.g. 1M, 4M, 256K
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    block_size: u32,
    /// Glob of archive paths to leave out (repeatable), e.g. '**/.cache'
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Name recorded in the archive header
    #[arg(long, default_value = "")]
    job_name: String,
    /// Descend into other file systems mounted below a source
    #[arg(long)]
    cross_file_systems: bool,
    /// Do not store extended attributes and ACLs
    #[arg(long)]
    no_xattrs: bool,
    /// Replace an existing archive file
    #[arg(long)]
    overwrite: bool,
    /// Continue the incremental chain of --job-name: files unchanged since its last run
    /// are not read, only what changed is stored. A full starts the chain when there is
    /// none (or it cannot continue: the summary says why)
    #[arg(long)]
    incremental: bool,
    /// With --incremental: make this run a full, starting a new chain
    #[arg(long, requires = "incremental")]
    full: bool,
    /// With --incremental: folder of the chain state [default: $COFFER_STATE_DIR,
    /// $XDG_STATE_HOME/coffer or ~/.local/state/coffer]
    #[arg(long, value_name = "DIR", requires = "incremental")]
    state_dir: Option<PathBuf>,
    /// Sign the archive with this signing key (coffer keygen --signing, or an OpenSSH
    /// ed25519 key), so readers can check which host wrote it (verify/restore --signer)
    #[arg(long, value_name = "SIGNKEY")]
    sign_with: Option<PathBuf>,
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
    /// Print the summary as one JSON document
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1M or 256K"))?;
    // Checked: a wrapped product (2^64 + 64 KiB) would pass as a small size.
    n.checked_mul(mult)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub fn run(a: BackupArgs) -> anyhow::Result<u8> {
    let recipients = load_recipients(&a.recipients)?;
    let refs: Vec<&dyn Recipient> = recipients.iter().map(|r| r as &dyn Recipient).collect();
    let opts = options(&a)?;
    super::cmd_copy::apply_object_lock(a.object_lock.as_deref(), &opts.output)?;
    tracing::info!(archive = %opts.output.display(), recipients = refs.len(), "backup starting");
    let progress = Progress::new("backup", a.quiet || a.json);
    let result = backup::backup(&opts, &refs, &progress);
    progress.finish();
    let report = result?;
    let signer = opts.signing_key.as_ref().map(|k| k.fingerprint());
    tracing::info!(
        blocks = report.blocks,
        bytes = report.bytes_read,
        "backup finished"
    );
    if a.json {
        let mut doc = summary_json(&report, signer);
        doc["object_lock"] = super::cmd_copy::lock_words(&opts.output).into();
        print_json(&doc)?;
    } else if !a.quiet {
        print_summary(&report, signer)?;
        if let Some(lock) = super::cmd_copy::lock_words(&opts.output) {
            outln!("object lock: {}", super::ui::safe(&lock))?;
        }
    }
    if report.warnings.is_empty() {
        Ok(EXIT_OK)
    } else {
        if !a.json {
            warnings_note(report.warnings.len());
        }
        Ok(EXIT_WARNINGS)
    }
}

fn options(a: &BackupArgs) -> anyhow::Result<BackupOptions> {
    let mut opts = BackupOptions::new(a.sources.clone(), PathBuf::new());
    match (&a.output, &a.to) {
        (Some(output), _) => opts.output = output.clone(),
        (None, Some(dest)) => {
            // Named like a job's archives, so it sorts by time and never meets another.
            let session_id = coffer::keys::new_session_id()?;
            let stem = if a.job_name.is_empty() {
                "backup"
            } else {
                a.job_name.as_str()
            };
            let name = coffer::storage::naming::archive_name(stem, chrono::Utc::now(), &session_id);
            opts.output = dest.join(name);
            opts.session_id = Some(session_id);
        }
        (None, None) => unreachable!("clap requires -o or --to"),
    }
    opts.compression = a.compression;
    opts.block_size = a.block_size;
    opts.exclude = a.exclude.clone();
    opts.job_name = a.job_name.clone();
    opts.one_file_system = !a.cross_file_systems;
    opts.xattrs = !a.no_xattrs;
    opts.overwrite = a.overwrite;
    // Ctrl-C or SIGTERM stops the run cleanly: the partial file is removed, an upload is
    // aborted. A second signal ends the process at once.
    opts.cancel = Some(stop_flag()?);
    if a.incremental {
        if a.job_name.is_empty() {
            anyhow::bail!(
                "--incremental needs --job-name NAME: the chain state is kept per job name"
            );
        }
        let state = coffer::job::paths::StateDir::resolve(
            a.state_dir.as_deref(),
            &coffer::job::paths::process_env,
        )?;
        let mut chain = coffer::chain::ChainOptions::new(state.chains_path());
        chain.full = a.full.then(|| "--full was given".to_string());
        opts.chain = Some(chain);
    }
    opts.signing_key = a
        .sign_with
        .as_deref()
        .map(|p| load_signing_key(p, &read_passphrase).map(std::sync::Arc::new))
        .transpose()?;
    Ok(opts)
}

fn summary_json(report: &BackupReport, signer: Option<Fingerprint>) -> serde_json::Value {
    let t = &report.totals;
    serde_json::json!({
        "archive": report.archive.to_string_lossy(),
        "session_id": hex(&report.session_id),
        "files": t.files,
        "dirs": t.dirs,
        "symlinks": t.symlinks,
        "bytes_read": report.bytes_read,
        "bytes_written": report.bytes_written,
        "blocks": report.blocks,
        "duration_secs": report.duration.as_secs_f64().max(1e-9),
        "recipients": report.recipients.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "signer": signer.map(|f| f.to_string()),
        "chain": {
            "kind": report.chain.kind.as_str(),
            "parents": report.chain.parents.iter().map(|p| hex(p)).collect::<Vec<_>>(),
            "full_reason": report.chain.full_reason,
            "files_unchanged": report.chain.files_unchanged,
            "bytes_referenced": report.chain.bytes_referenced,
        },
        "warnings": warnings_json(&report.warnings),
    })
}

fn print_summary(report: &BackupReport, signer: Option<Fingerprint>) -> anyhow::Result<()> {
    let t = &report.totals;
    let secs = report.duration.as_secs_f64().max(1e-9);
    outln!(
        "backed up {} files, {} folders, {} links in {:.2}s",
        t.files,
        t.dirs,
        t.symlinks,
        secs
    )?;
    outln!(
        "read:       {} ({}/s)",
        human(report.bytes_read),
        human((report.bytes_read as f64 / secs) as u64)
    )?;
    let ratio = if report.bytes_read > 0 {
        format!(
            " ({:.1}% of the data read)",
            100.0 * report.bytes_written as f64 / report.bytes_read as f64
        )
    } else {
        String::new()
    };
    outln!("written:    {}{ratio}", human(report.bytes_written))?;
    outln!("archive:    {}", safe_path(&report.archive))?;
    outln!("session:    {}", hex(&report.session_id))?;
    for fp in &report.recipients {
        outln!("recipient:  {fp}")?;
    }
    if let Some(fp) = signer {
        outln!("signed by:  {fp}")?;
    }
    let c = &report.chain;
    match (c.kind, &c.full_reason) {
        (coffer::chain::ChainKind::Incremental, _) => outln!(
            "chain:      incremental over {} parent(s); {} files unchanged, {} held in parents",
            c.parents.len(),
            c.files_unchanged,
            human(c.bytes_referenced)
        )?,
        (_, Some(reason)) => outln!("chain:      full ({})", super::ui::safe(reason))?,
        _ => {}
    }
    print_warning_summary(&report.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_block_size_does_not_wrap_around() {
        assert_eq!(parse_size("256K"), Ok(256 * 1024));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        // (2^54 + 64) KiB is 2^64 + 64 KiB: it wrapped to a valid 64 KiB.
        assert!(parse_size("18014398509482048K").is_err());
        assert!(parse_size("4096M").is_err());
    }
}
