//! Terminal presentation for the binary: progress bars, warnings, logging setup.

use coffer::backup::{Observer, Warning};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shows a progress bar on stderr when it is a terminal (and not quiet / JSON), prints
/// warnings as they happen, and keeps them for the summary.
pub struct Progress {
    bar: Option<ProgressBar>,
    pub warnings: Mutex<Vec<Warning>>,
    files_done: AtomicU64,
    files_total: AtomicU64,
}

impl Progress {
    /// `verb` is shown before the bar ("backup", "restore", "verify").
    pub fn new(verb: &str, quiet: bool) -> Self {
        let show = !quiet && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{verb} {{bar:30}} {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}} {{wide_msg}}"
                ))
                .expect("valid progress template"),
            );
            bar
        });
        Progress {
            bar,
            warnings: Mutex::new(Vec::new()),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn warning(&self, w: &Warning) {
        let line = format!("warning: {}: {}", w.path.display(), w.message);
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
        self.warnings.lock().expect("not poisoned").push(w.clone());
    }
    fn file_done(&self, path: &Path, _bytes: u64) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            let total = self.files_total.load(Ordering::Relaxed);
            let count = if total >= done {
                format!("{done}/{total} files")
            } else {
                format!("{done} files")
            };
            bar.set_message(format!("{count}  {}", path.display()));
        }
    }
    fn bytes_done(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
    fn wants_totals(&self) -> bool {
        self.bar.is_some()
    }
    fn totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
    }
}

/// `-v` shows info, `-vv` debug; RUST_LOG, when set, wins. Logs go to stderr.
pub fn init_logging(verbose: u8) {
    // -vv is coffer's own debug output; the HTTP stack's joins in only at -vvv.
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "coffer=debug,info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn human(n: u64) -> String {
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
