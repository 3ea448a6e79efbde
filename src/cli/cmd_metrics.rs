//! `coffer metrics`: the jobs' Prometheus metrics on stdout, or written atomically to a
//! file for node_exporter's textfile collector.

use clap::Args;
use std::path::PathBuf;

use coffer::job::metrics;

use super::jobs::{Locations, load_config, open_state};
use super::report::EXIT_OK;
use super::ui::write_out_bytes;

/// `coffer metrics`
#[derive(Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    loc: Locations,
    /// Write the metrics to this file (atomically) instead of stdout, e.g.
    /// /var/lib/node_exporter/textfile/coffer.prom
    #[arg(long, value_name = "PATH")]
    textfile: Option<PathBuf>,
}

pub fn run(a: MetricsArgs) -> anyhow::Result<u8> {
    let file = load_config(&a.loc)?;
    let st = open_state(a.loc.state_dir.as_deref())?;
    let text = metrics::render(&metrics::collect(&st.catalog, &file.jobs)?);
    match &a.textfile {
        Some(path) => metrics::write_textfile(path, &text)?,
        None => write_out_bytes(text.as_bytes())?,
    }
    Ok(EXIT_OK)
}
