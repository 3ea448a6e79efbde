//! How the job commands show backup copies (`copy_to`): the lines of one run at one
//! target (`job run`, the daemon's log), the `copies:` line of a session in `history`, and
//! copy rows in JSON (`history --json`, `status --json`).

use coffer::archive::copy::CopyStatus;
use coffer::job::catalog::{CopyOutcome, CopyRow};
use coffer::job::copies::TargetRun;

use super::jobs::file_name;
use super::report::{local_time, rfc3339_ms};
use super::ui::human;

/// The summary line of one run at one target (unescaped: callers escape once), e.g.
/// `copy to /mnt/usb/home: 2 copied (14.2 MiB), 3 already there; copy_retention kept 4,
/// deleted 1 (home-….coffer)`, or why the target was not usable.
pub fn run_summary(run: &TargetRun) -> String {
    let t = run.target.display();
    let r = &run.report;
    if let (Some(e), true) = (&run.error, r.archives.is_empty()) {
        return format!("copy to {t}: target not usable: {e}");
    }
    let mut line = format!(
        "copy to {t}: {} copied ({}), {} already there, {} failed",
        r.count(CopyStatus::Copied),
        human(r.bytes_copied()),
        r.count(CopyStatus::Skipped),
        r.count(CopyStatus::Failed),
    );
    if let Some(e) = &run.error {
        line.push_str(&format!("; target not usable: {e}"));
    }
    if run.stopped {
        line.push_str("; stopped (the rest is copied at the next run)");
    }
    if let Some(kept) = run.kept {
        let names: Vec<String> = run.deleted.iter().map(|p| file_name(p)).collect();
        line.push_str(&format!(
            "; copy_retention kept {kept}, deleted {}",
            names.len()
        ));
        if !names.is_empty() {
            line.push_str(&format!(" ({})", names.join(", ")));
        }
    }
    for (p, until) in &run.locked {
        match until {
            Some(ms) => line.push_str(&format!(
                "; kept {} (Object Lock until {})",
                file_name(p),
                local_time(*ms)
            )),
            None => line.push_str(&format!(
                "; kept {} (the server refused the delete: Object Lock)",
                file_name(p)
            )),
        }
    }
    line
}

/// The `copies:` line of a session in `history` (unescaped), e.g. `copied to /mnt/usb
/// (14.2 MiB); FAILED to s3://offsite/home: connection refused`.
pub fn history_line(rows: &[CopyRow]) -> Option<String> {
    let parts: Vec<String> = rows
        .iter()
        .map(|c| {
            let t = c.target.display();
            match c.outcome {
                CopyOutcome::Copied => format!("copied to {t} ({})", human(c.bytes)),
                CopyOutcome::Deleted => {
                    format!(
                        "deleted from {t} by copy_retention {}",
                        local_time(c.finished_at_ms)
                    )
                }
                CopyOutcome::Failed => format!(
                    "FAILED to {t}: {}",
                    c.error.as_deref().unwrap_or("no error recorded")
                ),
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One copy row in JSON.
pub fn copy_json(c: &CopyRow) -> serde_json::Value {
    serde_json::json!({
        "target": c.target.to_string_lossy(),
        "outcome": c.outcome.as_str(),
        "archive": c.archive.as_ref().map(|p| p.to_string_lossy()),
        "session": c.session,
        "archive_session": c.archive_session,
        "started_at": rfc3339_ms(c.started_at_ms),
        "finished_at": rfc3339_ms(c.finished_at_ms),
        "bytes": c.bytes,
        "error": c.error,
    })
}
