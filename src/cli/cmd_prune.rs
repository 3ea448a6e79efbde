//! `coffer prune`: delete the archives the jobs' retention no longer keeps (or, with
//! `--dry-run`, say which and why).

use clap::Args;

use coffer::chain::ChainKind;
use coffer::job::catalog::SessionRow;
use coffer::job::prune::{self, PruneReport};

use super::jobs::{Locations, file_name, load_config, open_state};
use super::report::{EXIT_FAILED, EXIT_OK, error_line, local_time, print_json, rfc3339_ms};
use super::ui::{outln, safe};

/// `coffer prune`
#[derive(Args)]
pub struct PruneArgs {
    /// Only this job (default: every job with a retention policy)
    job: Option<String>,
    #[command(flatten)]
    loc: Locations,
    /// List what would be deleted and why; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(a: PruneArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let jobs: Vec<_> = match &a.job {
        Some(name) => vec![file.job(name)?.clone()],
        None => file
            .jobs
            .iter()
            .filter(|j| j.retention.is_some())
            .cloned()
            .collect(),
    };
    let st = open_state(a.loc.state_dir.as_deref())?;
    let mut reports = Vec::new();
    for job in &jobs {
        reports.push(prune::prune(&st.catalog, job, a.dry_run)?);
    }
    if a.json {
        let docs: Vec<_> = reports.iter().map(prune_json).collect();
        print_json(&serde_json::json!({ "dry_run": a.dry_run, "jobs": docs }))?;
    } else {
        if reports.is_empty() {
            outln!("no job has a retention policy; nothing to prune")?;
        }
        for r in &reports {
            print_prune_text(r)?;
        }
    }
    let failed = reports.iter().any(|r| !r.failed.is_empty());
    for r in &reports {
        for (row, err) in &r.failed {
            error_line(&format!("job {}: session {}: {err}", r.plan.job, row.id));
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// What retention kept and deleted, one line per archive (`prune`, `job run --prune`).
pub fn print_prune_text(r: &PruneReport) -> anyhow::Result<()> {
    let plan = &r.plan;
    let Some(policy) = plan.policy else {
        outln!(
            "job {}: no retention policy; every archive is kept",
            safe(&plan.job)
        )?;
        return Ok(());
    };
    outln!("job {}: {policy}", safe(&plan.job))?;
    for (row, v) in &plan.verdicts {
        let locked = r.locked.iter().find(|(l, _)| l.id == row.id);
        let action = match (v.keep, r.dry_run, locked) {
            (true, _, _) => "keep",
            (false, true, _) => "would delete",
            (false, false, Some(_)) => "keep, locked",
            (false, false, None) => "deleted",
        };
        outln!(
            "  {action:<12}  {}  {:<4}  {}  {}",
            local_time(row.started_at_ms),
            kind_word(row),
            safe(&row.archive.as_deref().map(file_name).unwrap_or_default()),
            v.reason
        )?;
    }
    for (id, parent) in &plan.broken {
        outln!(
            "  warning: session {id} reads from archive {} which is gone: it cannot be restored",
            safe(parent)
        )?;
    }
    for row in &plan.missing {
        outln!(
            "  {:<12}  {}  {:<4}  {}  file not found; no longer counted",
            "missing",
            local_time(row.started_at_ms),
            kind_word(row),
            safe(&row.archive.as_deref().map(file_name).unwrap_or_default())
        )?;
    }
    for (row, until) in &r.locked {
        let until = until.map_or(
            "a date the server did not say (it refused the delete)".into(),
            local_time,
        );
        outln!(
            "  {:<12}  {}  Object Lock holds it until {until}; deleted by a prune after that",
            "locked",
            safe(&row.archive.as_deref().map(file_name).unwrap_or_default()),
        )?;
    }
    let n = plan.to_delete().count();
    if r.dry_run {
        outln!("  dry run: {n} archive(s) would be deleted; nothing was changed")?;
    } else {
        outln!("  {} archive(s) deleted", r.deleted.len())?;
    }
    Ok(())
}

/// `full` or `incr` (`-` for an archive catalogued before chains were recorded).
fn kind_word(row: &SessionRow) -> &'static str {
    match row.kind {
        Some(ChainKind::Full) => "full",
        Some(ChainKind::Incremental) => "incr",
        None => "-",
    }
}

fn prune_json(r: &PruneReport) -> serde_json::Value {
    let archives: Vec<_> = r
        .plan
        .verdicts
        .iter()
        .map(|(row, v)| {
            serde_json::json!({
                "id": row.id,
                "archive": row.archive.as_ref().map(|p| p.to_string_lossy()),
                "started_at": rfc3339_ms(row.started_at_ms),
                "kind": row.kind.map(ChainKind::as_str),
                "parents": row.parents,
                "keep": v.keep,
                "reason": v.reason,
                "needed_by": v.needed_by,
                "deleted": r.deleted.iter().any(|d| d.id == row.id),
                "locked_until": r.locked.iter().find(|(l, _)| l.id == row.id).map(|(_, u)| u.and_then(rfc3339_ms)),
            })
        })
        .collect();
    let missing: Vec<_> = r
        .plan
        .missing
        .iter()
        .map(|row| serde_json::json!({"id": row.id, "archive": row.archive.as_ref().map(|p| p.to_string_lossy())}))
        .collect();
    serde_json::json!({
        "job": r.plan.job,
        "policy": r.plan.policy.map(|p| p.to_string()),
        "archives": archives,
        "missing": missing,
        "broken": r.plan.broken.iter().map(|(id, parent)| serde_json::json!({"id": id, "missing_parent": parent})).collect::<Vec<_>>(),
        "failed": r.failed.iter().map(|(row, e)| serde_json::json!({"id": row.id, "error": e})).collect::<Vec<_>>(),
    })
}
