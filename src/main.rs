//! The `coffer` command: parse the command line, set up logging and the panic hook, run the
//! command and turn its result into the exit code. The commands are in `src/cli/` (see
//! `cli/mod.rs`); no cryptography here, everything is delegated to the library.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

mod cli;
use cli::args::{self, Cli, Command};
use cli::report::{self, EXIT_FAILED, EXIT_OK};
use cli::{cmd_backup, cmd_copy, cmd_daemon, cmd_history, cmd_info, cmd_job, cmd_keygen, cmd_list};
use cli::{cmd_metrics, cmd_prune, cmd_rekey, cmd_restore, cmd_status, cmd_verify, keys, ui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::init_logging(cli.verbose);
    install_panic_hook(cli.verbose);
    keys::set_passphrase_file(cli.passphrase_file.clone());
    // Unwinding (rather than exiting in the hook) runs the destructors that remove a
    // backup's partial file or a restore's temporary files.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(cli).and_then(|code| ui::flush_out().map(|()| code))
    }));
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        // `coffer list … | head`: the reader has all it wanted. Quiet, as other tools are.
        Ok(Err(err)) if err.chain().any(|e| e.is::<ui::StdoutClosed>()) => ExitCode::from(EXIT_OK),
        Ok(Err(err)) => {
            report::print_error(&err);
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
            let line = report::internal_error_line(report::panic_message(info.payload()));
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }));
}

/// Run one command; its exit code, or the error `main` reports.
fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Keygen(a) => cmd_keygen::run(a),
        Command::Backup(a) => cmd_backup::run(a),
        Command::Restore(a) => cmd_restore::run(a),
        Command::Copy(a) => cmd_copy::run(a),
        Command::Info(a) => cmd_info::run(a),
        Command::List(a) => cmd_list::run(a),
        Command::Verify(a) => cmd_verify::run(a),
        Command::Rekey(a) => cmd_rekey::run(a),
        Command::Completions { shell } => args::completions(shell),
        Command::Man => args::man(),
        Command::Job(a) => cmd_job::run(a),
        Command::Daemon(a) => cmd_daemon::run(a),
        Command::History(a) => cmd_history::run(a),
        Command::Prune(a) => cmd_prune::run(a),
        Command::Status(a) => cmd_status::run(a),
        Command::Metrics(a) => cmd_metrics::run(a),
    }
}
