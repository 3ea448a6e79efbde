//! The `coffer` command: argument parsing, messages and exit codes. No cryptography here;
//! everything is delegated to the library.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use coffer::Compression;
use coffer::archive::Archive;
use coffer::backup::{self, BackupOptions, Observer, Warning};
use coffer::recipient::{DEFAULT_RSA_BITS, Identity, Recipient, RsaIdentity, RsaRecipient};
use coffer::restore::{self, RestoreOptions};

/// Exit codes (documented in the README).
const EXIT_OK: u8 = 0;
const EXIT_WARNINGS: u8 = 1;
const EXIT_FAILED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Write-only encrypted backups: the backup host holds public keys only",
    long_about = "coffer makes encrypted backup archives that only the holders of the recipients' \
private keys can read. Each run makes a fresh session key, seals the data with AES-256-CBC and \
HMAC-SHA256, and wraps the session key under each recipient's RSA public key.\n\n\
Exit codes: 0 success, 1 finished with warnings, 2 failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new RSA key pair (private key 0600 + public key .pub)
    #[command(
        after_help = "Example:\n  coffer keygen -o ops.key\n  coffer keygen -o escrow.key --bits 4096"
    )]
    Keygen(KeygenArgs),
    /// Back up files and folders into one new encrypted archive
    #[command(
        after_help = "Example:\n  coffer backup ~/projects /etc -o nightly.coffer -r ops.key.pub -r escrow.key.pub"
    )]
    Backup(BackupArgs),
    /// Restore an archive (or the chosen paths of it) into a folder
    #[command(
        after_help = "Example:\n  coffer restore nightly.coffer -i escrow.key --to /tmp/restored\n  coffer restore nightly.coffer -i ops.key --to out etc/hosts 'projects/**/*.rs'"
    )]
    Restore(RestoreArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// Private key file to write; the public key goes to FILE.pub
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// RSA modulus size in bits (at least 2048)
    #[arg(long, default_value_t = DEFAULT_RSA_BITS)]
    bits: usize,
    /// Replace existing key files
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct BackupArgs {
    /// Files and folders to back up; each is stored under its own name
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<PathBuf>,
    /// Archive file to write
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
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
    /// Replace an existing archive file
    #[arg(long)]
    overwrite: bool,
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct RestoreArgs {
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
    /// Print nothing but errors and warnings
    #[arg(short, long)]
    quiet: bool,
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
    u32::try_from(n * mult).map_err(|_| format!("{s:?} is too large"))
}

/// Prints warnings as they happen.
struct Stderr;
impl Observer for Stderr {
    fn warning(&self, w: &Warning) {
        eprintln!("warning: {}: {}", w.path.display(), w.message);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            report_error(&err);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn report_error(err: &anyhow::Error) {
    let lib = err.chain().find_map(|e| e.downcast_ref::<coffer::Error>());
    match lib {
        Some(e) => {
            let context: Vec<String> = err
                .chain()
                .take_while(|c| c.downcast_ref::<coffer::Error>().is_none())
                .map(|c| c.to_string())
                .collect();
            if context.is_empty() {
                eprintln!("error: {e}");
            } else {
                eprintln!("error: {}: {e}", context.join(": "));
            }
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
        }
        None => eprintln!("error: {err:#}"),
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Keygen(a) => keygen(a),
        Command::Backup(a) => run_backup(a),
        Command::Restore(a) => run_restore(a),
    }
}

fn keygen(a: KeygenArgs) -> anyhow::Result<u8> {
    let public_path = pub_path(&a.output);
    for p in [&a.output, &public_path] {
        if !a.force && p.symlink_metadata().is_ok() {
            return Err(coffer::Error::Exists { path: p.clone() })
                .context("refusing to replace a key (pass --force)");
        }
    }
    let identity = RsaIdentity::generate(a.bits)?;
    let label = a
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let recipient = identity.to_recipient(label)?;
    coffer::fsutil::write_atomic(
        &a.output,
        identity.to_pkcs8_pem()?.as_bytes(),
        0o600,
        a.force,
    )?;
    coffer::fsutil::write_atomic(&public_path, recipient.to_pem()?.as_bytes(), 0o644, a.force)?;
    println!("{}", identity.fingerprint());
    eprintln!(
        "wrote {} (private, {} bits, keep it offline) and {} (public, give it to backup hosts)",
        a.output.display(),
        identity.bits(),
        public_path.display()
    );
    Ok(EXIT_OK)
}

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn load_recipients(paths: &[PathBuf]) -> anyhow::Result<Vec<RsaRecipient>> {
    paths
        .iter()
        .map(|p| RsaRecipient::load(p).map_err(anyhow::Error::from))
        .collect()
}

fn run_backup(a: BackupArgs) -> anyhow::Result<u8> {
    let recipients = load_recipients(&a.recipients)?;
    let refs: Vec<&dyn Recipient> = recipients.iter().map(|r| r as &dyn Recipient).collect();
    let mut opts = BackupOptions::new(a.sources, a.output);
    opts.compression = a.compression;
    opts.block_size = a.block_size;
    opts.exclude = a.exclude;
    opts.job_name = a.job_name;
    opts.one_file_system = !a.cross_file_systems;
    opts.overwrite = a.overwrite;
    let report = backup::backup(&opts, &refs, &Stderr)?;
    if !a.quiet {
        let t = &report.totals;
        let secs = report.duration.as_secs_f64().max(1e-9);
        println!(
            "backed up {} files, {} folders, {} links: {} read, {} written in {:.2}s ({}/s)",
            t.files,
            t.dirs,
            t.symlinks,
            human(report.bytes_read),
            human(report.bytes_written),
            secs,
            human((report.bytes_read as f64 / secs) as u64)
        );
        println!("archive:    {}", report.archive.display());
        println!("session:    {}", hex(&report.session_id));
        for fp in &report.recipients {
            println!("recipient:  {fp}");
        }
    }
    if report.warnings.is_empty() {
        Ok(EXIT_OK)
    } else {
        eprintln!(
            "finished with {} warning(s); the archive is complete but lacks the files named above",
            report.warnings.len()
        );
        Ok(EXIT_WARNINGS)
    }
}

fn run_restore(a: RestoreArgs) -> anyhow::Result<u8> {
    let identity = RsaIdentity::load(&a.identity)?;
    let archive = Archive::open(&a.archive)?;
    let unlocked = archive.unlock(&identity as &dyn Identity)?;
    let opts = RestoreOptions {
        target: a.to,
        overwrite: a.overwrite,
        patterns: a.patterns,
        preserve_owner: a.preserve_owner,
    };
    let report = restore::restore(&archive, &unlocked, &opts, &Stderr)?;
    if !a.quiet {
        let secs = report.duration.as_secs_f64().max(1e-9);
        println!(
            "restored {} files, {} folders, {} links: {} in {:.2}s ({}/s) into {}",
            report.files,
            report.dirs,
            report.symlinks,
            human(report.bytes),
            secs,
            human((report.bytes as f64 / secs) as u64),
            opts.target.display()
        );
    }
    Ok(if report.warnings.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
