//! `coffer copy`: copy archives (a restore point with its whole chain) to a folder or an S3
//! prefix without a key, each checked on the way (see `coffer::archive::copy`).

use clap::Args;
use std::path::PathBuf;

use coffer::archive::copy::{self, CopyOptions, CopyReport, CopyStatus};
use coffer::storage::Location;

use super::report::{EXIT_FAILED, EXIT_OK, print_json};
use super::ui::{Progress, human, outln, safe, safe_path};

#[derive(Args)]
pub struct CopyArgs {
    /// Archives to copy; a restore point of an incremental chain brings its parents
    #[arg(required = true, value_name = "SRC")]
    sources: Vec<PathBuf>,
    /// Destination folder (must exist) or S3 prefix (s3://bucket/prefix)
    #[arg(long, value_name = "DEST")]
    to: PathBuf,
    /// S3 Object Lock for every archive written: compliance:DAYS or governance:DAYS (the
    /// bucket must have Object Lock enabled)
    #[arg(long, value_name = "MODE:DAYS")]
    object_lock: Option<String>,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Print only problems
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: CopyArgs) -> anyhow::Result<u8> {
    apply_object_lock(a.object_lock.as_deref(), &a.to)?;
    let options = CopyOptions {
        dest: Location::parse(&a.to)?,
    };
    let progress = Progress::new("copy", a.quiet || a.json);
    let report = copy::copy(&a.sources, &options, &progress);
    progress.finish();
    let report = report?;
    if a.json {
        let mut doc = copy_json(&report);
        doc["object_lock"] = lock_words(&a.to).into();
        print_json(&doc)?;
    } else {
        print_text(&report, a.quiet)?;
        if !a.quiet
            && let Some(lock) = lock_words(&a.to)
        {
            outln!("object lock: {}", safe(&lock))?;
        }
    }
    Ok(if report.is_ok() { EXIT_OK } else { EXIT_FAILED })
}

/// `--object-lock MODE:DAYS` for archives written to `dest`: only an S3 destination can
/// hold it. Without the flag, the job file's `[s3] object_lock` (if any) stays in force.
pub fn apply_object_lock(flag: Option<&str>, dest: &std::path::Path) -> anyhow::Result<()> {
    let Some(flag) = flag else { return Ok(()) };
    if !Location::parse(dest)?.is_remote() {
        anyhow::bail!(
            "--object-lock applies to s3:// destinations; for a folder, see \"Immutable targets\" in docs/SECURITY.md"
        );
    }
    #[cfg(feature = "s3")]
    {
        let mut settings = coffer::storage::s3::settings();
        settings.object_lock = Some(coffer::storage::s3::ObjectLock::parse(flag)?);
        coffer::storage::s3::set_settings(settings);
    }
    Ok(())
}

/// The Object Lock archives written to `dest` get (S3 only; see
/// `coffer::storage::s3::lock_description`): the flag's or `[s3]`'s retention, else the
/// bucket's default as the bucket reports it, or "unknown (...)" when the key may not ask.
pub fn lock_words(dest: &std::path::Path) -> Option<String> {
    #[cfg(feature = "s3")]
    {
        let location = Location::parse(dest).ok()?;
        let explicit = coffer::storage::s3::settings().object_lock;
        coffer::storage::s3::lock_description(&location, explicit.as_ref())
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = dest;
        None
    }
}

fn copy_json(report: &CopyReport) -> serde_json::Value {
    serde_json::json!({
        "ok": report.is_ok(),
        "copied": report.count(CopyStatus::Copied),
        "skipped": report.count(CopyStatus::Skipped),
        "failed": report.count(CopyStatus::Failed),
        "bytes_copied": report.bytes_copied(),
        "archives": report.archives,
    })
}

fn print_text(report: &CopyReport, quiet: bool) -> anyhow::Result<()> {
    for a in &report.archives {
        let (src, dest) = (safe_path(&a.source), safe_path(&a.dest));
        let parent = a
            .parent_of
            .as_ref()
            .map(|p| format!(", parent of {}", safe_path(p)))
            .unwrap_or_default();
        match a.status {
            CopyStatus::Copied if !quiet => outln!(
                "copied: {src} -> {dest} ({}{parent}, checksums ok)",
                human(a.bytes)
            )?,
            CopyStatus::Skipped if !quiet => outln!(
                "skipped: {dest}: {}{parent}",
                safe(a.detail.as_deref().unwrap_or("already there"))
            )?,
            CopyStatus::Failed => {
                for p in &a.problems {
                    eprintln!("error: {src}: offset {}: {}", p.offset, safe(&p.detail));
                }
                eprintln!(
                    "FAILED: {src}: {}{parent}",
                    safe(a.detail.as_deref().unwrap_or("not copied"))
                );
            }
            _ => {}
        }
    }
    if !quiet {
        outln!(
            "{} copied ({}), {} already there, {} failed",
            report.count(CopyStatus::Copied),
            human(report.bytes_copied()),
            report.count(CopyStatus::Skipped),
            report.count(CopyStatus::Failed)
        )?;
    }
    Ok(())
}
