//! The `coffer` command: argument parsing, messages and exit codes. No cryptography here;
//! everything is delegated to the library.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use coffer::Compression;

mod cli_job;
mod cli_ui;
use cli_ui::{Progress, human, outln, print_json, safe, safe_path};
use coffer::archive::Archive;
use coffer::backup::{self, BackupOptions};
use coffer::format::hex;
use coffer::progress::Warning;
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
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Read the passphrase of a protected private key from FILE (first line); also
    /// COFFER_PASSPHRASE_FILE. Without either, coffer asks on the terminal
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// Set once from `--passphrase-file` / COFFER_PASSPHRASE_FILE.
static PASSPHRASE_FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

fn read_passphrase(key: &Path) -> coffer::Result<zeroize::Zeroizing<String>> {
    let from_file = PASSPHRASE_FILE
        .get()
        .cloned()
        .flatten()
        .or_else(|| std::env::var_os("COFFER_PASSPHRASE_FILE").map(PathBuf::from));
    if let Some(file) = from_file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&file).map_err(|e| coffer::Error::io(&file, e))?,
        );
        let line = text.lines().next().unwrap_or_default();
        return Ok(zeroize::Zeroizing::new(line.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(coffer::Error::BadKey {
            path: key.to_path_buf(),
            detail: "the key is passphrase-protected; pass --passphrase-file or set COFFER_PASSPHRASE_FILE".into(),
        });
    }
    rpassword::prompt_password(format!("passphrase for {}: ", safe_path(key)))
        .map(zeroize::Zeroizing::new)
        .map_err(|e| coffer::Error::io(key, e))
}

/// Load a private key, asking for its passphrase only if it has one, and warn when the
/// file is readable by other users.
fn load_identity(path: &Path) -> anyhow::Result<RsaIdentity> {
    use std::os::unix::fs::PermissionsExt;
    let identity = RsaIdentity::load_with(path, &read_passphrase)?;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {}: private key is readable by other users (mode {:o}); chmod 600 it",
            safe_path(path),
            m.permissions().mode() & 0o777
        );
    }
    Ok(identity)
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
        after_help = "Example:\n  coffer backup ~/projects /etc -o nightly.coffer -r ops.key.pub -r escrow.key.pub\n  coffer backup /etc --to s3://backups/host1 -r ops.key.pub -r escrow.key.pub"
    )]
    Backup(BackupArgs),
    /// Restore an archive (or the chosen paths of it) into a folder
    #[command(
        after_help = "Example:\n  coffer restore nightly.coffer -i escrow.key --to /tmp/restored\n  coffer restore nightly.coffer -i ops.key --to out etc/hosts 'projects/**/*.rs'\n  coffer restore s3://backups/host1/backup-20261127T020000Z-1a2b3c4d.coffer -i ops.key --to out"
    )]
    Restore(RestoreArgs),
    /// Show an archive's header without a key (never shows file names)
    #[command(
        after_help = "Example:\n  coffer info nightly.coffer\n  coffer info --json /srv/backups/*.coffer"
    )]
    Info(InfoArgs),
    /// List the paths in an archive (needs a key)
    #[command(after_help = "Example:\n  coffer list nightly.coffer -i ops.key --long")]
    List(ListArgs),
    /// Check archives: checksums without a key, everything (MACs, decryption) with one
    #[command(
        after_help = "Example:\n  coffer verify /srv/backups/*.coffer          # bit rot, truncation\n  coffer verify nightly.coffer -i ops.key      # full authenticated check"
    )]
    Verify(VerifyArgs),
    /// Add or remove recipients (header only, or --reencrypt to lock removed keys out)
    #[command(
        after_help = "Example:\n  coffer rekey nightly.coffer -i ops.key --add new.key.pub --remove SHA256:3f2a9c01\n  coffer rekey nightly.coffer -i ops.key --remove old.key.pub --reencrypt --keep escrow.key.pub"
    )]
    Rekey(RekeyArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    #[command(after_help = "Example:\n  coffer completions bash > /etc/bash_completion.d/coffer")]
    Completions {
        /// Shell to generate completions for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this help
    #[command(after_help = "Example:\n  coffer man > /usr/local/share/man/man1/coffer.1")]
    Man,
    /// Backup jobs from the job file: list, check, run one now
    #[command(
        after_help = "Example:\n  coffer job list\n  coffer job check\n  coffer job run home"
    )]
    Job(cli_job::JobArgs),
    /// Run scheduled jobs in the foreground (for systemd and containers)
    #[command(
        after_help = "Example:\n  coffer daemon\n  coffer daemon --once   # run what is due now, then exit"
    )]
    Daemon(cli_job::DaemonArgs),
    /// Show recorded job sessions, newest first
    #[command(after_help = "Example:\n  coffer history\n  coffer history home --json")]
    History(cli_job::HistoryArgs),
    /// Delete archives that the jobs' retention no longer keeps
    #[command(after_help = "Example:\n  coffer prune --dry-run\n  coffer prune home")]
    Prune(cli_job::PruneArgs),
}

#[derive(Args)]
struct InfoArgs {
    /// Archives to describe
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    /// Archives to list
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Private key of one of the archive's recipients
    #[arg(short, long, value_name = "KEY")]
    identity: PathBuf,
    /// Add type, mode, size and modification time
    #[arg(short, long)]
    long: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// Archives to check
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Private key: check MACs and decrypt everything (writes nothing)
    #[arg(short, long, value_name = "KEY")]
    identity: Option<PathBuf>,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Print only problems
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct RekeyArgs {
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
    /// Protect the private key with a passphrase (asked twice, or --passphrase-file)
    #[arg(long)]
    passphrase: bool,
}

#[derive(Args)]
struct BackupArgs {
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
    /// Print the summary as one JSON document
    #[arg(long)]
    json: bool,
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
    /// Keep set-uid and set-gid bits (cleared by default: anyone with a recipient's public
    /// key can write an archive). Pass it, with --preserve-owner, for a full-system restore
    /// of archives you made yourself
    #[arg(long)]
    preserve_special_bits: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli_ui::init_logging(cli.verbose);
    install_panic_hook(cli.verbose);
    let _ = PASSPHRASE_FILE.set(cli.passphrase_file.clone());
    // Unwinding (rather than exiting in the hook) runs the destructors that remove a
    // backup's partial file or a restore's temporary files.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(cli).and_then(|code| cli_ui::flush_out().map(|()| code))
    }));
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        // `coffer list … | head`: the reader has all it wanted. Quiet, as other tools are.
        Ok(Err(err)) if err.chain().any(|e| e.is::<cli_ui::StdoutClosed>()) => {
            ExitCode::from(EXIT_OK)
        }
        Ok(Err(err)) => {
            report_error(&err);
            ExitCode::from(EXIT_FAILED)
        }
        // The hook has printed the one line.
        Err(_) => ExitCode::from(EXIT_FAILED),
    }
}

/// A panic is a bug in coffer. Users get one line and exit 2; the panic's location (and,
/// with RUST_BACKTRACE, its backtrace) only with `-vv` or RUST_BACKTRACE set. Only the first
/// panic is reported: one in a worker thread is raised again in the thread that joins it.
fn install_panic_hook(verbose: u8) {
    let details = verbose >= 2 || std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default = std::panic::take_hook();
    let reported = std::sync::atomic::AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        if details {
            default(info);
        }
        if !reported.swap(true, std::sync::atomic::Ordering::SeqCst) {
            use std::io::Write;
            // Not eprintln!: that panics when stderr is closed, inside the hook.
            let line = internal_error_line(panic_message(info.payload()));
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }));
}

/// The message a panic was raised with (`panic!("...")` gives a &str or a String).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

fn internal_error_line(message: &str) -> String {
    format!(
        "error: internal error: {} (please report this, with the command you ran)",
        safe(message)
    )
}

/// Print an error and its hint. Messages quote archive paths and file names, so the lines
/// are escaped as a whole: one place that no message can get around.
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
                eprintln!("error: {}", safe(&e.to_string()));
            } else {
                eprintln!("error: {}", safe(&format!("{}: {e}", context.join(": "))));
            }
            if let Some(h) = e.hint() {
                eprintln!("hint: {}", safe(&h));
            }
        }
        None => eprintln!("error: {}", safe(&format!("{err:#}"))),
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Keygen(a) => keygen(a),
        Command::Backup(a) => run_backup(a),
        Command::Restore(a) => run_restore(a),
        Command::Info(a) => run_info(a),
        Command::List(a) => run_list(a),
        Command::Verify(a) => run_verify(a),
        Command::Rekey(a) => run_rekey(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: the generators panic on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut script);
            cli_ui::write_out_bytes(&script)?;
            Ok(EXIT_OK)
        }
        Command::Job(a) => cli_job::run_job(a),
        Command::Daemon(a) => cli_job::run_daemon(a),
        Command::History(a) => cli_job::run_history(a),
        Command::Prune(a) => cli_job::run_prune(a),
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("cannot render the man page")?;
            cli_ui::write_out_bytes(&page)?;
            Ok(EXIT_OK)
        }
    }
}

fn keygen(a: KeygenArgs) -> anyhow::Result<u8> {
    let public_path = pub_path(&a.output);
    for p in [&a.output, &public_path] {
        if !a.force && p.symlink_metadata().is_ok() {
            return Err(coffer::Error::KeyExists { path: p.clone() }.into());
        }
    }
    let identity = RsaIdentity::generate(a.bits)?;
    let label = a
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let recipient = identity.to_recipient(label)?;
    let pem = if a.passphrase {
        let pass = new_passphrase(&a.output)?;
        identity.to_encrypted_pkcs8_pem(&pass)?
    } else {
        identity.to_pkcs8_pem()?
    };
    coffer::fsutil::write_atomic(&a.output, pem.as_bytes(), 0o600, a.force)?;
    coffer::fsutil::write_atomic(&public_path, recipient.to_pem()?.as_bytes(), 0o644, a.force)?;
    outln!("{}", identity.fingerprint())?;
    eprintln!(
        "wrote {} (private, {} bits, keep it offline) and {} (public, give it to backup hosts)",
        safe_path(&a.output),
        identity.bits(),
        safe_path(&public_path)
    );
    Ok(EXIT_OK)
}

/// A new passphrase: from the passphrase file, or typed twice on the terminal.
fn new_passphrase(key: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let has_file = PASSPHRASE_FILE.get().cloned().flatten().is_some()
        || std::env::var_os("COFFER_PASSPHRASE_FILE").is_some();
    let pass = read_passphrase(key)?;
    if !has_file {
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

fn pub_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn load_recipients(paths: &[PathBuf]) -> anyhow::Result<Vec<RsaRecipient>> {
    let mut all: Vec<RsaRecipient> = Vec::new();
    for p in paths {
        all.extend(RsaRecipient::load_all(p)?);
    }
    Ok(all)
}

fn run_backup(a: BackupArgs) -> anyhow::Result<u8> {
    let recipients = load_recipients(&a.recipients)?;
    let refs: Vec<&dyn Recipient> = recipients.iter().map(|r| r as &dyn Recipient).collect();
    let mut opts = BackupOptions::new(a.sources, PathBuf::new());
    match (a.output, a.to) {
        (Some(output), _) => opts.output = output,
        (None, Some(dest)) => {
            // Named like a job's archives, so it sorts by time and never meets another.
            let session_id = coffer::keys::new_session_id()?;
            let stem = if a.job_name.is_empty() {
                "backup"
            } else {
                a.job_name.as_str()
            };
            let name = coffer::job::session::archive_name(stem, chrono::Utc::now(), &session_id);
            opts.output = dest.join(name);
            opts.session_id = Some(session_id);
        }
        (None, None) => unreachable!("clap requires -o or --to"),
    }
    opts.compression = a.compression;
    opts.block_size = a.block_size;
    opts.exclude = a.exclude;
    opts.job_name = a.job_name;
    opts.one_file_system = !a.cross_file_systems;
    opts.overwrite = a.overwrite;
    // Ctrl-C or SIGTERM stops the run cleanly: the partial file is removed, an upload is
    // aborted. A second signal ends the process at once.
    opts.cancel = Some(cli_job::stop_flag()?);
    tracing::info!(archive = %opts.output.display(), recipients = refs.len(), "backup starting");
    let progress = Progress::new("backup", a.quiet || a.json);
    let result = backup::backup(&opts, &refs, &progress);
    progress.finish();
    let report = result?;
    tracing::info!(
        blocks = report.blocks,
        bytes = report.bytes_read,
        "backup finished"
    );
    let t = &report.totals;
    let secs = report.duration.as_secs_f64().max(1e-9);
    if a.json {
        print_json(&serde_json::json!({
            "archive": report.archive.to_string_lossy(),
            "session_id": hex(&report.session_id),
            "files": t.files,
            "dirs": t.dirs,
            "symlinks": t.symlinks,
            "bytes_read": report.bytes_read,
            "bytes_written": report.bytes_written,
            "blocks": report.blocks,
            "duration_secs": secs,
            "recipients": report.recipients.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "warnings": warnings_json(&report.warnings),
        }))?;
    } else if !a.quiet {
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
        print_warning_summary(&report.warnings)?;
    }
    if report.warnings.is_empty() {
        Ok(EXIT_OK)
    } else {
        if !a.json {
            eprintln!(
                "finished with {} warning(s); the archive is complete, but the files named above are missing from it or changed while they were read",
                report.warnings.len()
            );
        }
        Ok(EXIT_WARNINGS)
    }
}

fn warnings_json(warnings: &[Warning]) -> Vec<serde_json::Value> {
    warnings
        .iter()
        .map(|w| serde_json::json!({"path": w.path.to_string_lossy(), "message": w.message}))
        .collect()
}

fn print_warning_summary(warnings: &[Warning]) -> anyhow::Result<()> {
    if warnings.is_empty() {
        return Ok(());
    }
    outln!("warnings:   {}", warnings.len())?;
    for w in warnings.iter().take(5) {
        outln!("            {}: {}", safe_path(&w.path), safe(&w.message))?;
    }
    if warnings.len() > 5 {
        outln!("            ... and {} more", warnings.len() - 5)?;
    }
    Ok(())
}

fn run_restore(a: RestoreArgs) -> anyhow::Result<u8> {
    let identity = load_identity(&a.identity)?;
    let archive = Archive::open(&a.archive)?;
    let unlocked = archive.unlock(&identity as &dyn Identity)?;
    let opts = RestoreOptions {
        target: a.to,
        overwrite: a.overwrite,
        patterns: a.patterns,
        preserve_owner: a.preserve_owner,
        preserve_special_bits: a.preserve_special_bits,
    };
    let progress = Progress::new("restore", a.quiet || a.json);
    let result = restore::restore(&archive, &unlocked, &opts, &progress);
    progress.finish();
    let report = result?;
    let secs = report.duration.as_secs_f64().max(1e-9);
    if a.json {
        print_json(&serde_json::json!({
            "archive": a.archive.to_string_lossy(),
            "target": opts.target.to_string_lossy(),
            "files": report.files,
            "dirs": report.dirs,
            "symlinks": report.symlinks,
            "bytes": report.bytes,
            "blocks": report.blocks,
            "archive_bytes_read": report.archive_bytes_read,
            "remote_bytes_fetched": report.remote_fetched.map(|(bytes, _)| bytes),
            "remote_requests": report.remote_fetched.map(|(_, requests)| requests),
            "duration_secs": secs,
            "special_bits_cleared": report.special_bits_cleared,
            "warnings": warnings_json(&report.warnings),
        }))?;
    } else if !a.quiet {
        outln!(
            "restored {} files, {} folders, {} links: {} in {:.2}s ({}/s) into {}",
            report.files,
            report.dirs,
            report.symlinks,
            human(report.bytes),
            secs,
            human((report.bytes as f64 / secs) as u64),
            safe_path(&opts.target)
        )?;
        print_warning_summary(&report.warnings)?;
    }
    // A policy, not a failure: said even with -q, on stderr, and the exit code stays 0.
    if report.special_bits_cleared > 0 && !a.json {
        eprintln!(
            "note: set-uid/set-gid bits cleared on {} files or folders (an archive can be written by anyone with a recipient's public key)",
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

/// One line for an error: the message and, on a second line, the hint.
fn one_line(err: &anyhow::Error) -> String {
    match err.chain().find_map(|e| e.downcast_ref::<coffer::Error>()) {
        Some(e) => e.to_string(),
        None => format!("{err:#}"),
    }
}

fn compression_name(code: u8) -> &'static str {
    match code {
        0 => "none",
        _ => "zstd",
    }
}

fn run_info(a: InfoArgs) -> anyhow::Result<u8> {
    let mut docs = Vec::new();
    let mut failed = false;
    for path in &a.archives {
        match Archive::open(path) {
            Ok(ar) => {
                let h = ar.header();
                let recipients: Vec<serde_json::Value> = h
                    .recipients
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "fingerprint": coffer::recipient::Fingerprint(s.fingerprint).to_string(),
                            "label": s.label,
                        })
                    })
                    .collect();
                if a.json {
                    docs.push(serde_json::json!({
                        "path": path.to_string_lossy(),
                        "ok": true,
                        "format_version": coffer::format::FORMAT_VERSION,
                        "session_id": hex(&h.session_id),
                        "job_name": h.job_name,
                        "created_at": rfc3339(h.created_at),
                        "created_at_unix": h.created_at,
                        "block_size": h.block_size,
                        "segment_size": h.segment_size,
                        "compression": compression_name(h.compression),
                        "block_count": ar.trailer().block_count,
                        "size": ar.file_len(),
                        "recipients": recipients,
                    }));
                } else {
                    outln!("{}", safe_path(path))?;
                    outln!(
                        "  format:      coffer v{} (AES-256-CBC + HMAC-SHA256, RSA-OAEP-SHA256)",
                        coffer::format::FORMAT_VERSION
                    )?;
                    outln!("  session:     {}", hex(&h.session_id))?;
                    // The job name and labels are not authenticated without a key: anyone
                    // who can write the file can change them and recompute the checksum.
                    outln!(
                        "  job:         {}",
                        if h.job_name.is_empty() {
                            "-".into()
                        } else {
                            safe(&h.job_name)
                        }
                    )?;
                    outln!("  created:     {}", rfc3339(h.created_at))?;
                    outln!(
                        "  block size:  {} (CBC segments of {})",
                        human(h.block_size as u64),
                        human(h.segment_size as u64)
                    )?;
                    outln!("  compression: {}", compression_name(h.compression))?;
                    outln!("  blocks:      {}", ar.trailer().block_count)?;
                    outln!(
                        "  size:        {} ({} bytes)",
                        human(ar.file_len()),
                        ar.file_len()
                    )?;
                    for (i, s) in h.recipients.iter().enumerate() {
                        outln!(
                            "  {} {}{}",
                            if i == 0 {
                                "recipients: "
                            } else {
                                "            "
                            },
                            coffer::recipient::Fingerprint(s.fingerprint),
                            if s.label.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", safe(&s.label))
                            }
                        )?;
                    }
                }
            }
            Err(e) => {
                failed = true;
                let e = anyhow::Error::from(e);
                if a.json {
                    docs.push(
                        serde_json::json!({"path": path.to_string_lossy(), "ok": false, "error": one_line(&e)}),
                    );
                } else {
                    report_error(&e);
                }
            }
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "archives": docs }))?;
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        coffer::format::index::KIND_DIR => "dir",
        coffer::format::index::KIND_SYMLINK => "symlink",
        _ => "file",
    }
}

fn run_list(a: ListArgs) -> anyhow::Result<u8> {
    let identity = load_identity(&a.identity)?;
    let mut docs = Vec::new();
    let mut failed = false;
    for path in &a.archives {
        let opened = Archive::open(path).and_then(|ar| ar.unlock(&identity as &dyn Identity));
        let unlocked = match opened {
            Ok(u) => u,
            Err(e) => {
                failed = true;
                let e = anyhow::Error::from(e);
                if a.json {
                    docs.push(
                        serde_json::json!({"path": path.to_string_lossy(), "ok": false, "error": one_line(&e)}),
                    );
                } else {
                    report_error(&e);
                }
                continue;
            }
        };
        let entries = &unlocked.index.entries;
        if a.json {
            let list: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "path": e.path,
                        "type": kind_name(e.kind),
                        "mode": format!("{:04o}", e.mode),
                        "size": e.size,
                        "mtime": rfc3339(e.mtime_sec),
                        "mtime_unix": e.mtime_sec,
                        "uid": e.uid,
                        "gid": e.gid,
                        "target": e.link_target,
                    })
                })
                .collect();
            docs.push(
                serde_json::json!({"path": path.to_string_lossy(), "ok": true, "entries": list}),
            );
        } else {
            if a.archives.len() > 1 {
                outln!("{}:", safe_path(path))?;
            }
            for e in entries {
                if a.long {
                    let t = match e.kind {
                        coffer::format::index::KIND_DIR => 'd',
                        coffer::format::index::KIND_SYMLINK => 'l',
                        _ => '-',
                    };
                    let link = e
                        .link_target
                        .as_ref()
                        .map(|t| format!(" -> {}", safe(t)))
                        .unwrap_or_default();
                    outln!(
                        "{t}{} {:>12} {} {}{link}",
                        mode_string(e.mode),
                        e.size,
                        rfc3339(e.mtime_sec),
                        safe(&e.path)
                    )?;
                } else {
                    outln!("{}", safe(&e.path))?;
                }
            }
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "archives": docs }))?;
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// What a keyless `verify` cannot tell, in its text and JSON output.
const KEYLESS_NOTE: &str = "not authenticated: use -i KEY to detect deliberate changes";

fn run_verify(a: VerifyArgs) -> anyhow::Result<u8> {
    let identity = a.identity.as_deref().map(load_identity).transpose()?;
    let mut docs = Vec::new();
    let mut failed = false;
    for path in &a.archives {
        let progress = Progress::new("verify", a.quiet || a.json);
        let result = Archive::open(path).and_then(|ar| match &identity {
            Some(id) => {
                let unlocked = ar.unlock(id as &dyn Identity)?;
                ar.verify_blocks(&unlocked, &progress)
            }
            None => ar.verify_checksums(&progress),
        });
        progress.finish();
        match result {
            Ok(report) => {
                failed |= !report.is_ok();
                let mode = if report.keyed { "keyed" } else { "checksums" };
                // Checksums catch bit rot, not an attacker: anyone who can write the file
                // can change it and recompute them. Say so where the result is read.
                let note = (!report.keyed).then_some(KEYLESS_NOTE);
                if a.json {
                    let problems: Vec<serde_json::Value> = report
                        .problems
                        .iter()
                        .map(|p| serde_json::json!({"block": p.block, "offset": p.offset, "detail": p.detail}))
                        .collect();
                    docs.push(serde_json::json!({
                        "path": path.to_string_lossy(),
                        "ok": report.is_ok(),
                        "keyed": report.keyed,
                        "authenticated": report.keyed,
                        "note": note,
                        "blocks_checked": report.blocks_checked,
                        "bytes_checked": report.bytes_checked,
                        "problems": problems,
                    }));
                } else if report.is_ok() {
                    if !a.quiet {
                        let path = safe_path(path);
                        let size = format!(
                            "{} blocks, {}",
                            report.blocks_checked,
                            human(report.bytes_checked)
                        );
                        match note {
                            Some(note) => outln!("ok: {path} ({size}): checksums ok ({note})")?,
                            None => outln!("ok: {path} ({size}, {mode})")?,
                        }
                    }
                } else {
                    for p in &report.problems {
                        eprintln!(
                            "error: {}: offset {}: {}",
                            safe_path(path),
                            p.offset,
                            safe(&p.detail)
                        );
                    }
                    eprintln!(
                        "FAILED: {} ({} problem(s) in {} blocks, {mode})",
                        safe_path(path),
                        report.problems.len(),
                        report.blocks_checked
                    );
                }
            }
            Err(e) => {
                failed = true;
                let e = anyhow::Error::from(e);
                if a.json {
                    docs.push(
                        serde_json::json!({"path": path.to_string_lossy(), "ok": false, "error": one_line(&e)}),
                    );
                } else {
                    report_error(&e);
                }
            }
        }
    }
    if a.json {
        print_json(&serde_json::json!({ "archives": docs }))?;
    }
    if failed && !a.json {
        eprintln!(
            "hint: restore damaged archives from another copy; `coffer verify -i KEY` tells forgery from bit rot"
        );
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

fn run_rekey(a: RekeyArgs) -> anyhow::Result<u8> {
    if a.add.is_empty() && a.remove.is_empty() && !a.reencrypt {
        anyhow::bail!(coffer::Error::InvalidOption(
            "nothing to do: pass --add PUBKEY, --remove FINGERPRINT and/or --reencrypt".into()
        ));
    }
    let identity = load_identity(&a.identity)?;
    let archive = Archive::open(&a.archive)?;
    let present = archive.recipients();
    let mut remove = Vec::new();
    for spec in &a.remove {
        let fp = resolve_fingerprint(spec, &present)?;
        if !remove.contains(&fp) {
            remove.push(fp);
        }
    }
    drop(archive);
    let added = load_recipients(&a.add)?;
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
    let refs: Vec<&dyn Recipient> = added.iter().map(|r| r as &dyn Recipient).collect();
    let mut kept = load_recipients(&a.keep)?;
    if a.reencrypt
        && !remove.contains(&identity.fingerprint())
        && !kept
            .iter()
            .any(|r| r.fingerprint() == identity.fingerprint())
    {
        // The key doing the rekey stays a recipient, and its public half is at hand.
        kept.push(identity.to_recipient(String::new())?);
    }
    let keep: Vec<&dyn Recipient> = kept.iter().map(|r| r as &dyn Recipient).collect();
    let opts = coffer::archive::RekeyOptions {
        add: &refs,
        remove: &remove,
        force: a.force,
        reencrypt: a.reencrypt,
        keep: &keep,
        // Stopping a re-encryption part way leaves the original; a header rewrite is short.
        cancel: a.reencrypt.then(cli_job::stop_flag).transpose()?,
    };
    let progress = Progress::new("rekey", false);
    let result = coffer::archive::rekey(&a.archive, &identity, &opts, &progress);
    progress.finish();
    let report = result?;
    for fp in &report.added {
        outln!("added:     {fp}")?;
    }
    for fp in &report.removed {
        outln!("removed:   {fp}")?;
    }
    for fp in &report.recipients {
        outln!("recipient: {fp}")?;
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
    Ok(EXIT_OK)
}

/// A fingerprint given as `SHA256:hex`, hex, a unique prefix (8+ hex digits), or a key file.
fn resolve_fingerprint(
    spec: &str,
    present: &[coffer::recipient::Fingerprint],
) -> anyhow::Result<coffer::recipient::Fingerprint> {
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

/// Seconds since the epoch as an RFC 3339 UTC timestamp (proleptic Gregorian calendar).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_escaped_line_asking_for_a_report() {
        let from_str: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        let from_string: Box<dyn std::any::Any + Send> = Box::new(format!("bad {}\n\x1b[2J", 7));
        let other: Box<dyn std::any::Any + Send> = Box::new(42u32);
        assert_eq!(
            internal_error_line(panic_message(from_str.as_ref())),
            "error: internal error: index out of bounds (please report this, with the command you ran)"
        );
        assert_eq!(
            internal_error_line(panic_message(from_string.as_ref())),
            "error: internal error: bad 7\\n\\x1b[2J (please report this, with the command you ran)"
        );
        assert_eq!(panic_message(other.as_ref()), "unknown panic");
    }

    #[test]
    fn regression_block_size_does_not_wrap_around() {
        assert_eq!(parse_size("256K"), Ok(256 * 1024));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        // (2^54 + 64) KiB is 2^64 + 64 KiB: it wrapped to a valid 64 KiB.
        assert!(parse_size("18014398509482048K").is_err());
        assert!(parse_size("4096M").is_err());
    }
}
