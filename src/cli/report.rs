//! How every command reports a result: the exit-code table, the one error printer (for
//! library errors, job errors and anything else alike), the one JSON printer, the per-archive
//! results of `info`/`list`/`verify` (their JSON document written as it goes), the warning
//! summary, the one table printer, and the timestamp formats (all through chrono).

use chrono::{DateTime, Datelike, Local, TimeZone, Timelike, Utc};
use serde::Serialize;
use std::io::{self, BufWriter, Stdout, Write};
use std::path::Path;

use coffer::job::JobError;
use coffer::progress::Warning;

use super::ui::{buffered_out, json_text, json_text_at, outln, safe, safe_path, stdout_error};

/// Exit codes (documented in the README and in `coffer --help`).
pub const EXIT_OK: u8 = 0;
pub const EXIT_WARNINGS: u8 = 1;
pub const EXIT_FAILED: u8 = 2;

// ---- errors ---------------------------------------------------------------------------

/// Print an error and its hint. Messages quote archive paths and file names, so the lines
/// are escaped as a whole: one place that no message can get around.
///
/// A job error prints each problem of a job file on its own `error:` line, then one hint.
/// A library error is printed with the context the binary added in front of it.
pub fn print_error(err: &anyhow::Error) {
    if let Some(e) = err.downcast_ref::<JobError>() {
        print_job_error(e);
        return;
    }
    let lib = err.chain().find_map(|e| e.downcast_ref::<coffer::Error>());
    match lib {
        Some(e) => {
            let context: Vec<String> = err
                .chain()
                .take_while(|c| c.downcast_ref::<coffer::Error>().is_none())
                .map(|c| c.to_string())
                .collect();
            if context.is_empty() {
                error_line(&e.to_string());
            } else {
                error_line(&format!("{}: {e}", context.join(": ")));
            }
            hint_line(e.hint());
        }
        None => error_line(&format!("{err:#}")),
    }
}

fn print_job_error(e: &JobError) {
    match e {
        JobError::Config(errors) => {
            for c in errors {
                error_line(&c.to_string());
            }
        }
        other => error_line(&other.to_string()),
    }
    hint_line(e.hint());
}

/// `error: MESSAGE` on stderr, escaped.
pub fn error_line(message: &str) {
    eprintln!("error: {}", safe(message));
}

/// `hint: HINT` on stderr, escaped, when there is one.
pub fn hint_line(hint: Option<String>) {
    if let Some(h) = hint {
        eprintln!("hint: {}", safe(&h));
    }
}

/// One line for an error in a JSON document: the library's message without its hint.
pub fn one_line(err: &anyhow::Error) -> String {
    match err.chain().find_map(|e| e.downcast_ref::<coffer::Error>()) {
        Some(e) => e.to_string(),
        None => format!("{err:#}"),
    }
}

/// The message a panic was raised with (`panic!("...")` gives a &str or a String).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// The one line a panic (a bug in coffer) is reported with.
pub fn internal_error_line(message: &str) -> String {
    format!(
        "error: internal error: {} (please report this, with the command you ran)",
        safe(message)
    )
}

// ---- JSON -----------------------------------------------------------------------------

/// One JSON document, pretty-printed and safe on a terminal (see [`json_text`]).
pub fn print_json(doc: &serde_json::Value) -> anyhow::Result<()> {
    outln!("{}", json_text(doc))
}

/// The results of a command that takes several archives (`info`, `list`, `verify`): a
/// failure with one archive is reported and the others still run; the exit code is 2 if
/// any failed. With `--json`, everything is one document `{"archives": [...]}`, written as
/// each archive's part is ready (see [`ArchivesJson`]).
pub struct PerArchive {
    json: Option<ArchivesJson<BufWriter<Stdout>>>,
    failed: bool,
}

impl PerArchive {
    pub fn new(json: bool) -> Self {
        PerArchive {
            json: json.then(|| ArchivesJson::new(buffered_out())),
            failed: false,
        }
    }

    /// The JSON document of one archive (written only with `--json`). A write error is
    /// kept for [`PerArchive::finish`]: `info` and `verify` build each archive's document
    /// whole anyway, and nothing more is written after it.
    pub fn push(&mut self, doc: serde_json::Value) {
        if let Some(json) = &mut self.json {
            json.push(&doc);
        }
    }

    /// With `--json`, an archive's listing whose entries `produce` hands over one by one as
    /// it reads them (a v2 index is read chunk by chunk, so nothing holds them all). An
    /// error `produce` meets midway ends the listing with `"ok": false` and the error, the
    /// entries before it kept; a write error (a closed pipe) is returned at once.
    pub fn push_entries_with<T: Serialize>(
        &mut self,
        path: &Path,
        produce: impl FnOnce(&mut dyn FnMut(T) -> anyhow::Result<()>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let Some(json) = &mut self.json else {
            return Ok(());
        };
        if json.push_entries_with(&path.to_string_lossy(), produce)? {
            self.failed = true;
        }
        Ok(())
    }

    /// Mark the command failed without reporting anything (the caller has).
    pub fn mark_failed(&mut self) {
        self.failed = true;
    }

    /// An archive that could not be read: an `error:` line, or `"ok": false` in JSON, in
    /// the archive's place in the document.
    pub fn fail(&mut self, path: &Path, err: impl Into<anyhow::Error>) {
        self.failed = true;
        let err = err.into();
        match &mut self.json {
            Some(json) => json.push(
                &serde_json::json!({"path": path.to_string_lossy(), "ok": false, "error": one_line(&err)}),
            ),
            None => print_error(&err),
        }
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// End the JSON document (with `--json`) and give the exit code.
    pub fn finish(self) -> anyhow::Result<u8> {
        if let Some(json) = self.json {
            json.finish()?;
        }
        Ok(if self.failed { EXIT_FAILED } else { EXIT_OK })
    }
}

/// The document `{"archives": [...]}` written piece by piece: its opening before the first
/// archive, each archive's part when it is ready, and inside a listing each entry on its
/// own. Built whole as one `serde_json::Value`, the entries of a large index were held a
/// second time, many times their size (issue 15: 7.2 GB for a 55 MB archive). The bytes
/// are exactly those [`json_text`] gives for the whole document: the pieces are
/// [`json_text_at`] at their depth, joined with serde_json's pretty layout (two spaces a
/// level, `[]` when empty).
struct ArchivesJson<W: Write> {
    out: W,
    /// Archives written so far: the first one opens the document.
    archives: usize,
    /// A write failed: nothing more is written.
    stopped: bool,
    /// That write's error, until it is reported.
    error: Option<io::Error>,
}

/// The depth of an archive's object in the document, and of an entry in its listing.
const ARCHIVE_DEPTH: usize = 2;
const ENTRY_DEPTH: usize = 4;

impl<W: Write> ArchivesJson<W> {
    fn new(out: W) -> Self {
        ArchivesJson {
            out,
            archives: 0,
            stopped: false,
            error: None,
        }
    }

    /// Run `write` unless an earlier write failed; keep its error.
    fn write_with(&mut self, write: impl FnOnce(&mut W, usize) -> io::Result<()>) {
        if self.stopped {
            return;
        }
        if let Err(e) = write(&mut self.out, self.archives) {
            self.stopped = true;
            self.error = Some(e);
        }
        self.archives += 1;
    }

    /// The write error not reported yet, if any.
    fn take_error(&mut self) -> anyhow::Result<()> {
        self.error.take().map_or(Ok(()), |e| Err(stdout_error(e)))
    }

    fn push(&mut self, doc: &impl Serialize) {
        self.write_with(|out, before| {
            open_archive(out, before)?;
            out.write_all(json_text_at(doc, ARCHIVE_DEPTH).as_bytes())
        });
    }

    /// The document `{"entries": [...], "ok": true, "path": PATH}` of an archive, each
    /// entry written as it is serialized.
    #[cfg(test)]
    fn push_entries<T: Serialize>(
        &mut self,
        path: &str,
        entries: impl IntoIterator<Item = T>,
    ) -> anyhow::Result<()> {
        self.push_entries_with(path, |emit| entries.into_iter().try_for_each(emit))
            .map(|_| ())
    }

    /// An archive's listing `{"entries": [...], "ok": true, "path": PATH}` with the entries
    /// `produce` hands over, each written as it is serialized; true when `produce` failed
    /// (its error is then in the document, with `"ok": false`).
    fn push_entries_with<T: Serialize>(
        &mut self,
        path: &str,
        produce: impl FnOnce(&mut dyn FnMut(T) -> anyhow::Result<()>) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let mut failed = false;
        self.write_with(|out, before| {
            open_archive(out, before)?;
            out.write_all(b"{\n      \"entries\": [")?;
            let mut any = false;
            let mut write_error: Option<io::Error> = None;
            let produced = produce(&mut |entry: T| {
                let written = out
                    .write_all(if any { b",\n        " } else { b"\n        " })
                    .and_then(|()| out.write_all(json_text_at(&entry, ENTRY_DEPTH).as_bytes()));
                any = true;
                written.map_err(|e| {
                    let stop = anyhow::anyhow!("{e}");
                    write_error = Some(e);
                    stop
                })
            });
            if let Some(e) = write_error {
                return Err(e);
            }
            if any {
                out.write_all(b"\n      ")?;
            }
            out.write_all(b"],\n      ")?;
            if let Err(err) = produced {
                failed = true;
                out.write_all(b"\"error\": ")?;
                out.write_all(json_text_at(&one_line(&err), ARCHIVE_DEPTH).as_bytes())?;
                out.write_all(b",\n      \"ok\": false,\n      \"path\": ")?;
            } else {
                out.write_all(b"\"ok\": true,\n      \"path\": ")?;
            }
            out.write_all(json_text_at(path, ARCHIVE_DEPTH).as_bytes())?;
            out.write_all(b"\n    }")
        });
        self.take_error()?;
        Ok(failed)
    }

    /// Close the document (with its final newline) and flush; a write error not reported
    /// yet is returned now.
    fn finish(mut self) -> anyhow::Result<W> {
        self.write_with(|out, archives| {
            let end: &[u8] = if archives == 0 {
                b"{\n  \"archives\": []\n}\n"
            } else {
                b"\n  ]\n}\n"
            };
            out.write_all(end)?;
            out.flush()
        });
        self.take_error()?;
        Ok(self.out)
    }
}

/// What comes before an archive's object: the document's opening, or the comma after the
/// archive before.
fn open_archive(out: &mut impl Write, before: usize) -> io::Result<()> {
    let text: &[u8] = if before == 0 {
        b"{\n  \"archives\": [\n    "
    } else {
        b",\n    "
    };
    out.write_all(text)
}

// ---- warnings -------------------------------------------------------------------------

/// The warnings of a backup or restore in its JSON summary.
pub fn warnings_json(warnings: &[Warning]) -> Vec<serde_json::Value> {
    warnings
        .iter()
        .map(|w| serde_json::json!({"path": w.path.to_string_lossy(), "message": w.message}))
        .collect()
}

/// The first five warnings again under the summary (they were printed as they happened,
/// possibly far above).
pub fn print_warning_summary(warnings: &[Warning]) -> anyhow::Result<()> {
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

/// The stderr line under a run that finished with warnings (`backup`, `job run`).
pub fn warnings_note(count: impl std::fmt::Display) {
    eprintln!(
        "finished with {count} warning(s); the archive is complete, but the files named above are missing from it or changed while they were read"
    );
}

// ---- tables ---------------------------------------------------------------------------

/// How a column's cells are padded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table as lines of text, the head first: columns two spaces apart, each as wide as its
/// widest cell, the last one not padded. Cells are escaped here: job names and archive
/// paths are shown as text.
pub fn table_lines<const N: usize>(
    head: &[&str; N],
    align: &[Align; N],
    rows: &[[String; N]],
) -> Vec<String> {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.each_ref().map(|c| safe(c).into_owned()))
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            if i + 1 == N {
                s.push_str(c);
            } else if align[i] == Align::Right {
                s.push_str(&format!("{c:>w$}  "));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(head.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

/// A table with every column left-aligned (see [`table_lines`]).
pub fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    for line in table_lines(head, &[Align::Left; N], rows) {
        outln!("{line}")?;
    }
    Ok(())
}

// ---- timestamps -----------------------------------------------------------------------

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds). Formatted from chrono's fields
/// rather than with `%Y`, which adds a `+` to years past 9999: a hostile archive can carry
/// any time, and the output stays the plain year.
fn utc_text(t: DateTime<Utc>) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Seconds since the epoch as RFC 3339 UTC; `None` past what chrono represents (about
/// 262,000 years either side), which only a hostile archive carries.
pub fn rfc3339(secs: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp(secs, 0).map(utc_text)
}

/// Milliseconds since the epoch (the session catalog's times) as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(utc_text)
}

/// Milliseconds since the epoch in local time, to the second, or `-`.
pub fn local_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A scheduled time, to the minute with its UTC offset (`2026-11-27 02:00 +01:00`).
pub fn minute<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.format("%Y-%m-%d %H:%M %:z").to_string()
}

/// A duration in milliseconds as seconds with one decimal (`12.3 s`).
pub fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ui::StdoutClosed;

    #[test]
    fn regression_panic_printed_a_backtrace_not_one_line() {
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
    fn timestamps_are_the_plain_rfc3339_of_the_old_calendar_code() {
        // Values from the hand-written days-to-civil algorithm this replaced.
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_800).unwrap(), "10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(-62_198_755_200).unwrap(), "-001-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(
            rfc3339_ms(1_700_000_000_999).unwrap(),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn table_columns_are_padded_escaped_and_aligned() {
        let rows = [
            ["7".to_string(), "a\nb".to_string(), "x".to_string()],
            ["12".to_string(), "c".to_string(), "last".to_string()],
        ];
        let lines = table_lines(
            &["ID", "NAME", "END"],
            &[Align::Right, Align::Left, Align::Left],
            &rows,
        );
        assert_eq!(lines, ["ID  NAME  END", " 7  a\\nb  x", "12  c     last"]);
    }

    /// A writer that takes `room` bytes, then fails as a closed pipe does.
    #[derive(Debug)]
    struct ClosesAfter {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for ClosesAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() + buf.len() > self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn listing(path: &str, entries: &[serde_json::Value]) -> serde_json::Value {
        serde_json::json!({"path": path, "ok": true, "entries": entries})
    }

    #[test]
    fn archives_json_written_in_pieces_is_json_text_of_the_whole() {
        let odd = "a\nb\x1b[31m\x7f\u{9b}\u{202e}\u{2028}\"\\é🎉";
        let entry = |p: &str| serde_json::json!({"path": p, "n": [1, 2], "x": null, "e": {}});
        let entries = [entry("one"), entry(odd), serde_json::json!([])];
        let failed = serde_json::json!({"path": odd, "ok": false, "error": "no"});
        let cases: [&[(&str, &[serde_json::Value])]; 4] = [
            &[],
            &[("empty", &[])],
            &[(odd, &entries)],
            &[("x", &entries[..1]), ("", &[]), (odd, &entries)],
        ];
        for (n, archives) in cases.into_iter().enumerate() {
            for fail_at in 0..=archives.len() {
                let mut json = ArchivesJson::new(Vec::new());
                let mut docs = Vec::new();
                for (i, (path, list)) in archives.iter().enumerate() {
                    if i == fail_at {
                        json.push(&failed);
                        docs.push(failed.clone());
                    }
                    json.push_entries(path, list.iter()).unwrap();
                    docs.push(listing(path, list));
                }
                let whole = json_text(&serde_json::json!({ "archives": docs }));
                let written = String::from_utf8(json.finish().unwrap()).unwrap();
                assert_eq!(
                    written,
                    format!("{whole}\n"),
                    "case {n}, failure at {fail_at}"
                );
            }
        }
    }

    #[test]
    fn archives_json_writes_each_archive_before_the_next_is_read() {
        let mut json = ArchivesJson::new(Vec::new());
        json.push_entries("a", [serde_json::json!({"path": "first"})])
            .unwrap();
        let so_far = String::from_utf8(json.out.clone()).unwrap();
        assert!(so_far.ends_with("\"path\": \"a\"\n    }"), "{so_far}");
        assert!(so_far.contains("\"first\""), "{so_far}");
    }

    #[test]
    fn archives_json_stops_at_a_closed_pipe_and_reports_it_once() {
        let out = ClosesAfter {
            written: Vec::new(),
            room: 40,
        };
        let mut json = ArchivesJson::new(out);
        let long = "x".repeat(100);
        let err = json.push_entries("a", [&long]).unwrap_err();
        assert!(err.is::<StdoutClosed>(), "{err:#}");
        let before = json.out.written.len();
        json.push(&serde_json::json!({"ok": false}));
        assert!(json.push_entries("b", [1]).is_ok());
        assert_eq!(json.out.written.len(), before, "written after the error");
    }

    #[test]
    fn archives_json_keeps_a_write_error_of_push_for_finish() {
        let mut json = ArchivesJson::new(ClosesAfter {
            written: Vec::new(),
            room: 10,
        });
        json.push(&serde_json::json!({"path": "x".repeat(50)}));
        let err = json.finish().unwrap_err();
        assert!(err.is::<StdoutClosed>(), "{err:#}");
    }
}
