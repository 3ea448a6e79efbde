//! What reaches the terminal: progress bars and warnings as they happen, logging setup,
//! the escaping of untrusted text before it is printed (also inside JSON documents), and
//! the one way to stdout (`outln!`, which turns a closed pipe into [`StdoutClosed`], and
//! [`buffered_out`] for a document written piece by piece).

use coffer::progress::{Observer, Warning};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// `println!` that returns an error instead of panicking; see [`write_out`].
macro_rules! outln {
    () => {
        $crate::cli::ui::write_out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::ui::write_out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

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
        let line = format!("warning: {}: {}", safe_path(&w.path), safe(&w.message));
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
            bar.set_message(format!("{count}  {}", safe_path(path)));
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

/// Would `c` let printed text act on the terminal or pass for other output? C0 controls
/// (newline and carriage return fake lines, ESC starts escape sequences), DEL, C1 controls
/// (U+009B is a one-character CSI on some terminals), the Unicode line and paragraph
/// separators, and the bidi controls that reorder what is shown (Trojan Source).
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// Text that came from an archive (job name, recipient labels, paths, link targets), a file
/// name or a message quoting one, made safe to print: the characters of [`needs_escape`]
/// are shown as `\n`, `\x1b`, `\u{202e}`. Everything else, accents and emoji included, is
/// kept. JSON output needs none of this: serde_json escapes control characters itself.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path made safe to print as [`safe`] does; bytes that are not UTF-8 are shown as
/// `\xNN` rather than all as the same U+FFFD.
pub fn safe_path(p: &Path) -> Cow<'_, str> {
    safe_bytes(p.as_os_str().as_bytes())
}

/// A name from an archive (bytes) made safe to print, as [`safe_path`].
pub fn safe_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return safe(s);
    }
    Cow::Owned(escape_invalid(bytes))
}

/// Bytes as text with every byte that is not part of valid UTF-8 written `\xNN` and
/// everything else made safe as [`safe`] does.
pub fn escape_invalid(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&safe(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// One JSON document, pretty-printed. serde_json escapes C0 controls but writes DEL, C1
/// controls, the line separators and bidi controls as they are; they are written as `\uXXXX`
/// here (the same string to any JSON reader), so the document is safe on a terminal too. A
/// raw newline in the output is layout: inside strings serde_json has escaped it already.
pub fn json_text(doc: &serde_json::Value) -> String {
    json_text_at(doc, 0)
}

/// [`json_text`] of a value that sits `depth` levels deep in a larger pretty-printed
/// document: every line after the first is indented as serde_json indents it there. A
/// document written piece by piece (`list --json`) is so byte for byte the one that
/// [`json_text`] gives for the whole: the escaping is per character and a raw newline is
/// never inside a string, so neither cares where the document is cut.
pub fn json_text_at<T: Serialize + ?Sized>(value: &T, depth: usize) -> String {
    let text = serde_json::to_string_pretty(value)
        .expect("coffer's JSON documents have string keys only, so they always serialize");
    if depth == 0 && !text.chars().any(|c| c != '\n' && needs_escape(c)) {
        return text;
    }
    let indent = "  ".repeat(depth);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c == '\n' {
            out.push('\n');
            out.push_str(&indent);
        } else if needs_escape(c) {
            // Every such character is in the Basic Multilingual Plane: one \u escape.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The reader of stdout went away (`coffer list … | head`). Not a failure: `main` ends the
/// command quietly with exit 0, as ripgrep and the other Unix tools do.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The error a failed write to stdout is reported with: [`StdoutClosed`] for a closed pipe.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Write a line to stdout. All of the binary's stdout goes through here (`outln!`) or
/// [`write_out_bytes`]: `println!` panics when the pipe is closed, this returns
/// [`StdoutClosed`] for `?` to carry up to `main`.
pub fn write_out(line: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(stdout_error)
}

/// Stdout for a document written piece by piece (`list --json`), buffered so that a large
/// document costs few write calls. Its errors go through [`stdout_error`], as
/// [`write_out`]'s do; the caller flushes it (dropping it would lose a write error).
pub fn buffered_out() -> BufWriter<Stdout> {
    BufWriter::with_capacity(64 * 1024, std::io::stdout())
}

/// Write bytes as they are to stdout (generated completions, the man page), then flush.
pub fn write_out_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    flush_out_after(|out| out.write_all(bytes))
}

/// Flush stdout, so that an error on the last buffered bytes is seen, not lost at exit.
pub fn flush_out() -> anyhow::Result<()> {
    flush_out_after(|_| Ok(()))
}

fn flush_out_after(
    write: impl FnOnce(&mut std::io::StdoutLock<'_>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_escapes_controls_separators_and_bidi_and_keeps_the_rest() {
        assert!(matches!(safe("plain/path ünï 日本 🎉"), Cow::Borrowed(_)));
        assert_eq!(safe("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(safe("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(safe("\0\x7f"), "\\x00\\x7f");
        assert_eq!(safe("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(safe("x\u{2028}y\u{2029}"), "x\\u{2028}y\\u{2029}");
        assert_eq!(safe("\u{202e}fdp.exe"), "\\u{202e}fdp.exe");
        assert_eq!(
            safe("\u{2066}\u{2069}\u{200f}"),
            "\\u{2066}\\u{2069}\\u{200f}"
        );
        // Zero-width joiners are part of ordinary emoji and stay.
        assert_eq!(safe("👩\u{200d}💻"), "👩\u{200d}💻");
    }

    #[test]
    fn json_text_escapes_what_serde_json_leaves_and_reads_back_the_same() {
        let value = "a\nb\x1b[31m\x7f\u{9b}\u{202e}\u{2028}é🎉";
        let doc = serde_json::json!({ "path": value });
        let text = json_text(&doc);
        assert!(
            !text.chars().any(|c| c != '\n' && needs_escape(c)),
            "{text}"
        );
        assert!(text.contains("\\u007f\\u009b\\u202e\\u2028é🎉"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn safe_path_shows_bytes_that_are_not_utf8() {
        use std::ffi::OsStr;
        let p = Path::new(OsStr::from_bytes(b"dir/a\xff\nb"));
        assert_eq!(safe_path(p), "dir/a\\xff\\nb");
        assert_eq!(safe_path(Path::new("dir/ok")), "dir/ok");
    }
}
