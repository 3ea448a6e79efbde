//! `coffer history`: the recorded job sessions from the catalog, newest first, each with
//! the copies of its archive to the job's `copy_to` targets. It reads
//! the state folder only, so it works when the job file is broken or gone.

use clap::Args;

use coffer::chain::ChainKind;
use coffer::job::catalog::{CopyRow, SessionRow};

use super::copies::{copy_json, history_line};

use super::jobs::{Locations, file_name, open_state};
use super::report::{Align, EXIT_OK, local_time, print_json, rfc3339_ms, seconds, table_lines};
use super::ui::{human, outln, safe};

/// `coffer history`
#[derive(Args)]
pub struct HistoryArgs {
    /// Only this job's sessions
    job: Option<String>,
    /// The job file is accepted but not read: it names no state folder, and history must
    /// work when the job file is broken or gone.
    #[command(flatten)]
    loc: Locations,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
    /// Show at most this many sessions, newest first (0: all)
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: usize,
}

pub fn run(a: HistoryArgs) -> anyhow::Result<u8> {
    let st = open_state(a.loc.state_dir.as_deref())?;
    let limit = (a.limit > 0).then_some(a.limit);
    let rows = st.catalog.sessions(a.job.as_deref(), limit)?;
    let copies = rows
        .iter()
        .map(|r| st.catalog.copies_of(r.id))
        .collect::<Result<Vec<_>, _>>()?;
    if a.json {
        let docs: Vec<_> = rows
            .iter()
            .zip(&copies)
            .map(|(r, c)| {
                let mut doc = session_json(r);
                doc["copies"] = c.iter().map(copy_json).collect();
                doc
            })
            .collect();
        print_json(&serde_json::json!({ "sessions": docs }))?;
    } else if rows.is_empty() {
        outln!("no sessions recorded")?;
    } else {
        print_sessions(&rows, &copies)?;
    }
    Ok(EXIT_OK)
}

/// One session in JSON (`history --json`, and the last session in `job list --json`).
pub fn session_json(r: &SessionRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "job": r.job,
        "state": r.state.as_str(),
        "trigger": r.trigger,
        "pid": r.pid,
        "started_at": rfc3339_ms(r.started_at_ms),
        "started_at_unix_ms": r.started_at_ms,
        "finished_at": r.finished_at_ms.and_then(rfc3339_ms),
        "duration_secs": r.duration_ms().map(|d| d as f64 / 1000.0),
        "files": r.files,
        "dirs": r.dirs,
        "symlinks": r.symlinks,
        "bytes_read": r.bytes_read,
        "bytes_written": r.bytes_written,
        "archive": r.archive.as_ref().map(|p| p.to_string_lossy()),
        "session_id": r.session_id,
        "warning_count": r.warning_count,
        "warnings": r.warnings,
        "error": r.error,
        "archive_deleted": r.deleted_at_ms.is_some(),
        "deleted_reason": r.deleted_reason,
        "kind": r.kind.map(ChainKind::as_str),
        "parents": r.parents,
        "full_reason": r.full_reason,
        "files_unchanged": r.files_unchanged,
        "bytes_referenced": r.bytes_referenced,
    })
}

/// A session's place in its chain, in a few words: `full`, `incr of 3f2a9c01, 2 parents`
/// (the oldest archive it reads from, usually the chain's full, and how many it reads
/// from), or `-` for a session that left no archive.
pub fn chain_words(r: &SessionRow) -> String {
    match r.kind {
        None => "-".into(),
        Some(ChainKind::Full) => "full".into(),
        Some(ChainKind::Incremental) => match r.parents.first() {
            Some(oldest) => format!(
                "incr of {}, {} parent{}",
                safe(oldest.get(..8).unwrap_or(oldest)),
                r.parents.len(),
                if r.parents.len() == 1 { "" } else { "s" }
            ),
            None => "incr".into(),
        },
    }
}

fn table_row(r: &SessionRow) -> [String; 9] {
    let archive = match (&r.archive, &r.deleted_reason) {
        (Some(p), Some(_)) => format!("{} (deleted)", file_name(p)),
        (Some(p), None) => p.to_string_lossy().into_owned(),
        (None, _) => "-".into(),
    };
    [
        r.id.to_string(),
        r.job.clone(),
        local_time(r.started_at_ms),
        r.duration_ms().map(seconds).unwrap_or_else(|| "-".into()),
        r.state.to_string(),
        chain_words(r),
        r.files.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
        r.bytes_read.map(human).unwrap_or_else(|| "-".into()),
        archive,
    ]
}

/// The table, each session followed by its error and first warnings.
fn print_sessions(rows: &[SessionRow], copies: &[Vec<CopyRow>]) -> anyhow::Result<()> {
    use Align::{Left, Right};
    let head = [
        "ID", "JOB", "STARTED", "DURATION", "OUTCOME", "KIND", "FILES", "BYTES", "ARCHIVE",
    ];
    let align = [Right, Left, Left, Left, Left, Left, Right, Right, Left];
    let cells: Vec<[String; 9]> = rows.iter().map(table_row).collect();
    let lines = table_lines(&head, &align, &cells);
    outln!("{}", lines[0])?;
    for ((row, line), copies) in rows.iter().zip(&lines[1..]).zip(copies) {
        outln!("{line}")?;
        if let Some(c) = history_line(copies) {
            outln!("      copies: {}", safe(&c))?;
        }
        if let Some(e) = &row.error {
            outln!("      {}: {}", row.state, safe(e))?;
        }
        if let Some(why) = &row.full_reason {
            outln!("      full: {}", safe(why))?;
        }
        for w in row.warnings.iter().take(3) {
            outln!("      warning: {}", safe(w))?;
        }
        if row.warning_count > 3 {
            outln!("      ... and {} more warning(s)", row.warning_count - 3)?;
        }
    }
    Ok(())
}
