//! The command line: the top-level parser, its global flags and the list of commands with
//! their help texts, and what is generated from them (shell completions, the man page).
//! Each command's own flags are in its `cmd_*.rs`, beside the code that reads them.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

use super::cmd_backup::BackupArgs;
use super::cmd_copy::CopyArgs;
use super::cmd_daemon::DaemonArgs;
use super::cmd_history::HistoryArgs;
use super::cmd_info::InfoArgs;
use super::cmd_job::JobArgs;
use super::cmd_keygen::KeygenArgs;
use super::cmd_list::ListArgs;
use super::cmd_metrics::MetricsArgs;
use super::cmd_prune::PruneArgs;
use super::cmd_rekey::RekeyArgs;
use super::cmd_restore::RestoreArgs;
use super::cmd_status::StatusArgs;
use super::cmd_verify::VerifyArgs;
use super::report::EXIT_OK;
use super::ui::write_out_bytes;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read the passphrase of a protected private key from FILE (first line); also
    /// COFFER_PASSPHRASE_FILE. Without either, coffer asks on the terminal
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Copy archives (whole chains) to a folder or S3 prefix without a key, checking them
    #[command(
        after_help = "Example:\n  coffer copy /srv/backups/*.coffer --to s3://offsite/host1\n  coffer copy s3://backups/host1/home-20261127T020000Z-1a2b3c4d.coffer --to /mnt/usb/home"
    )]
    Copy(CopyArgs),
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
    Job(JobArgs),
    /// Run scheduled jobs in the foreground (for systemd and containers)
    #[command(
        after_help = "Example:\n  coffer daemon\n  coffer daemon --once   # run what is due now, then exit"
    )]
    Daemon(DaemonArgs),
    /// Show recorded job sessions, newest first
    #[command(after_help = "Example:\n  coffer history\n  coffer history home --json")]
    History(HistoryArgs),
    /// Delete archives that the jobs' retention no longer keeps
    #[command(after_help = "Example:\n  coffer prune --dry-run\n  coffer prune home")]
    Prune(PruneArgs),
    /// Each job's health: last success, overdue, restore points, last verify (exit 0 ok, 1 warning, 2 failed)
    #[command(after_help = "Example:\n  coffer status\n  coffer status home --json")]
    Status(StatusArgs),
    /// Prometheus metrics of the jobs, on stdout or into a textfile collector's file
    #[command(
        after_help = "Example:\n  coffer metrics\n  coffer metrics --textfile /var/lib/node_exporter/textfile/coffer.prom"
    )]
    Metrics(MetricsArgs),
}

/// `coffer completions SHELL`
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    // Into a buffer first: the generators panic on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut script);
    write_out_bytes(&script)?;
    Ok(EXIT_OK)
}

/// `coffer man`
pub fn man() -> anyhow::Result<u8> {
    use anyhow::Context;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    write_out_bytes(&page)?;
    Ok(EXIT_OK)
}
