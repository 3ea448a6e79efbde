//! `coffer status`: each job's health from the job file and the catalog, with an exit code
//! a Nagios/Icinga check can use as it is (0 ok, 1 warning, 2 critical). The last copy to
//! each `copy_to` target is shown too; one that failed is a warning.

use clap::Args;

use coffer::job::status::{Health, JobStatus, age_words, now_ms, overall, status_of};

use coffer::job::catalog::CopyOutcome;
use coffer::job::copies::flag_status;

use super::cmd_history::session_json;
use super::copies::copy_json;
use super::jobs::{Locations, load_config, open_state};
use super::report::{local_time, print_json, print_table, rfc3339_ms, seconds};
use super::ui::{human, outln, safe};

/// `coffer status`
#[derive(Args)]
pub struct StatusArgs {
    /// Only this job
    job: Option<String>,
    #[command(flatten)]
    loc: Locations,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(a: StatusArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let jobs = match &a.job {
        Some(name) => vec![file.job(name)?.clone()],
        None => file.jobs.clone(),
    };
    let st = open_state(a.loc.state_dir.as_deref())?;
    let mut statuses = jobs
        .iter()
        .map(|j| status_of(&st.catalog, j))
        .collect::<Result<Vec<_>, _>>()?;
    // The last copy to each target (`copy_to`): one that failed is a warning.
    let copies = jobs
        .iter()
        .map(|j| st.catalog.last_copies(&j.name))
        .collect::<Result<Vec<_>, _>>()?;
    for (s, c) in statuses.iter_mut().zip(&copies) {
        flag_status(s, c);
    }
    let worst = overall(&statuses);
    let now = now_ms();
    if a.json {
        let docs: Vec<_> = statuses
            .iter()
            .zip(&copies)
            .map(|(s, c)| {
                let mut doc = status_json(s, now);
                doc["last_copies"] = c.iter().map(copy_json).collect();
                doc
            })
            .collect();
        print_json(&serde_json::json!({
            "status": worst.as_str(),
            "exit_code": worst.exit_code(),
            "jobs": docs,
        }))?;
    } else if statuses.is_empty() {
        outln!("no jobs in {}", safe(&file.path.to_string_lossy()))?;
    } else {
        print_text(&statuses, now)?;
        for (s, c) in statuses.iter().zip(&copies) {
            for c in c {
                let verdict = match c.outcome {
                    CopyOutcome::Failed => format!(
                        "FAILED {}: {}",
                        local_time(c.finished_at_ms),
                        c.error.as_deref().unwrap_or("no error recorded")
                    ),
                    _ => format!("ok {}", local_time(c.finished_at_ms)),
                };
                outln!(
                    "{}: last copy to {}: {}",
                    s.job,
                    safe(&c.target.to_string_lossy()),
                    safe(&verdict)
                )?;
            }
        }
    }
    Ok(worst.exit_code())
}

fn status_json(s: &JobStatus, now: i64) -> serde_json::Value {
    let r = &s.recorded;
    serde_json::json!({
        "job": s.job,
        "status": s.health.as_str(),
        "reasons": s.reasons,
        "schedule": s.schedule,
        "overdue": s.overdue,
        "overdue_at": s.overdue_at_ms.and_then(rfc3339_ms),
        "last_success_at": s.last_success_ms().and_then(rfc3339_ms),
        "last_success_unix_ms": s.last_success_ms(),
        "age_secs": s.age_ms(now).map(|a| a as f64 / 1000.0),
        "last_outcome": r.last.as_ref().map(|l| l.state.as_str()),
        "last_session": r.last.as_ref().map(session_json),
        "running": r.running.as_ref().map(|l| l.id),
        "restore_points": r.restore_points,
        "last_verify": r.last_verify.as_ref().map(|v| serde_json::json!({
            "ok": v.ok(),
            "keyed": v.keyed,
            "finished_at": rfc3339_ms(v.finished_at_ms),
            "archives": v.archives,
            "damaged": v.damaged,
            "bytes": v.bytes,
            "details": v.details,
        })),
    })
}

fn print_text(statuses: &[JobStatus], now: i64) -> anyhow::Result<()> {
    let rows: Vec<[String; 9]> = statuses
        .iter()
        .map(|s| {
            let r = &s.recorded;
            let last = r.last.as_ref();
            let outcome = match (&r.running, last) {
                (Some(run), _) => format!("running ({})", run.id),
                (None, Some(l)) => l.state.to_string(),
                (None, None) => "never run".into(),
            };
            [
                s.job.clone(),
                s.health.as_str().to_uppercase() + if s.overdue { " (OVERDUE)" } else { "" },
                s.last_success_ms()
                    .map(local_time)
                    .unwrap_or_else(|| "never".into()),
                s.age_ms(now).map(age_words).unwrap_or_else(|| "-".into()),
                outcome,
                last.and_then(|l| l.bytes_written)
                    .map(human)
                    .unwrap_or_else(|| "-".into()),
                last.and_then(|l| l.duration_ms())
                    .map(seconds)
                    .unwrap_or_else(|| "-".into()),
                r.restore_points.to_string(),
                match &r.last_verify {
                    None => "never".into(),
                    Some(v) => format!(
                        "{}{} {}",
                        if v.ok() { "ok" } else { "FAILED" },
                        if v.keyed { " (keyed)" } else { "" },
                        local_time(v.finished_at_ms)
                    ),
                },
            ]
        })
        .collect();
    print_table(
        &[
            "JOB",
            "STATUS",
            "LAST SUCCESS",
            "AGE",
            "LAST OUTCOME",
            "SIZE",
            "DURATION",
            "POINTS",
            "VERIFY",
        ],
        &rows,
    )?;
    for s in statuses.iter().filter(|s| s.health != Health::Ok) {
        for why in &s.reasons {
            outln!("{}: {}", s.job, safe(why))?;
        }
    }
    Ok(())
}
