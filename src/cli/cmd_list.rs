//! `coffer list`: the paths in an archive's index (needs a key: the index is encrypted).

use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use coffer::archive::Archive;
use coffer::format::index::{Entry, KIND_DIR, KIND_SYMLINK};
use coffer::recipient::Identity;

use super::keys::load_identity;
use super::report::{PerArchive, rfc3339};
use super::ui::{outln, safe, safe_path};

#[derive(Args)]
pub struct ListArgs {
    /// Archives to list
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// Private key of one of the archive's recipients
    #[arg(short, long, value_name = "KEY")]
    identity: PathBuf,
    /// Add type, mode, size and modification time
    #[arg(short, long)]
    long: bool,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(a: ListArgs) -> anyhow::Result<u8> {
    let identity = load_identity(&a.identity)?;
    let mut out = PerArchive::new(a.json);
    for path in &a.archives {
        let opened = Archive::open(path).and_then(|ar| ar.unlock(&identity as &dyn Identity));
        let unlocked = match opened {
            Ok(u) => u,
            Err(e) => {
                out.fail(path, e);
                continue;
            }
        };
        let entries = &unlocked.index.entries;
        if a.json {
            out.push_entries(path, entries.iter().map(EntryJson::new))?;
            continue;
        }
        if a.archives.len() > 1 {
            outln!("{}:", safe_path(path))?;
        }
        for e in entries {
            if a.long {
                print_long(e)?;
            } else {
                outln!("{}", safe(&e.path))?;
            }
        }
    }
    out.finish()
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_DIR => "dir",
        KIND_SYMLINK => "symlink",
        _ => "file",
    }
}

/// One entry of `list --json`, serialized on its own as the document is written. The
/// fields are in the order serde_json wrote them when each entry was a `serde_json::Value`
/// (sorted by key): the output stays byte for byte what it was.
#[derive(Serialize)]
struct EntryJson<'a> {
    gid: u32,
    /// Permission bits in octal, at least four digits (`0644`).
    mode: String,
    /// RFC 3339 UTC, or null for a time chrono cannot show.
    mtime: Option<String>,
    mtime_unix: i64,
    path: &'a str,
    size: u64,
    target: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    uid: u32,
}

impl<'a> EntryJson<'a> {
    fn new(e: &'a Entry) -> Self {
        EntryJson {
            gid: e.gid,
            mode: format!("{:04o}", e.mode),
            mtime: rfc3339(e.mtime_sec),
            mtime_unix: e.mtime_sec,
            path: &e.path,
            size: e.size,
            target: e.link_target.as_deref(),
            kind: kind_name(e.kind),
            uid: e.uid,
        }
    }
}

/// `drwxr-xr-x         4096 2026-11-27T02:00:00Z etc`, as `ls -l` shows it.
fn print_long(e: &Entry) -> anyhow::Result<()> {
    let t = match e.kind {
        KIND_DIR => 'd',
        KIND_SYMLINK => 'l',
        _ => '-',
    };
    let link = e
        .link_target
        .as_ref()
        .map(|t| format!(" -> {}", safe(t)))
        .unwrap_or_default();
    outln!(
        "{t}{} {:>12} {} {}{link}",
        mode_string(e.mode),
        e.size,
        rfc3339(e.mtime_sec).as_deref().unwrap_or("-"),
        safe(&e.path)
    )
}

fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}
