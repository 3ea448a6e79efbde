//! `coffer list`: the paths in an archive's index (needs a key: the index is encrypted).

use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

use coffer::archive::Archive;
use coffer::format::hex;
use coffer::format::v2::{
    EntryV2, KIND_BLOCK, KIND_CHAR, KIND_DIR, KIND_FIFO, KIND_HARDLINK, KIND_SYMLINK,
};
use coffer::recipient::Identity;

use super::keys::load_identity;
use super::report::{PerArchive, rfc3339};
use super::ui::{escape_invalid, outln, safe_bytes, safe_path};

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
        let opened = Archive::open(path).and_then(|ar| {
            let u = ar.unlock(&identity as &dyn Identity)?;
            Ok((ar, u))
        });
        let (ar, unlocked) = match opened {
            Ok(x) => x,
            Err(e) => {
                out.fail(path, e);
                continue;
            }
        };
        // Entries are printed as the index is read (chunk by chunk for v2); a hard link
        // shows its first name, looked up by number.
        let first_name = |n: Option<u64>| -> coffer::Result<Option<Vec<u8>>> {
            n.map(|n| unlocked.entry(&ar, n).map(|t| t.path))
                .transpose()
        };
        if a.json {
            out.push_entries_with(path, |emit| {
                let mut failure = None;
                let read = unlocked.for_each_entry(&ar, |_, e| {
                    let to = first_name(e.hardlink_to)?;
                    if let Err(err) = emit(EntryJson::new(&e, to.as_deref())) {
                        failure = Some(err);
                        return Err(coffer::Error::Cancelled);
                    }
                    Ok(())
                });
                match failure {
                    Some(err) => Err(err),
                    None => read.map_err(Into::into),
                }
            })?;
            continue;
        }
        if a.archives.len() > 1 {
            outln!("{}:", safe_path(path))?;
        }
        let mut failure = None;
        let read = unlocked.for_each_entry(&ar, |_, e| {
            let printed = if a.long {
                first_name(e.hardlink_to).map(|to| print_long(&e, to.as_deref()))
            } else {
                Ok(outln!("{}", safe_bytes(&e.path)))
            };
            match printed {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => {
                    failure = Some(err);
                    Err(coffer::Error::Cancelled)
                }
                Err(e) => Err(e),
            }
        });
        if let Some(err) = failure {
            return Err(err);
        }
        if let Err(e) = read {
            out.fail(path, e);
        }
    }
    out.finish()
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_DIR => "dir",
        KIND_SYMLINK => "symlink",
        KIND_HARDLINK => "hardlink",
        KIND_FIFO => "fifo",
        KIND_CHAR => "chardev",
        KIND_BLOCK => "blockdev",
        _ => "file",
    }
}

/// Bytes as JSON text: a name that is valid UTF-8 as itself; otherwise with each byte that
/// is not as `\xNN` (for reading), and the exact bytes in hex next to it (`path_hex`).
fn text_and_hex(b: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (escape_invalid(b), Some(hex(b))),
    }
}

/// One entry of `list --json`, serialized on its own as the document is written. Fields
/// in sorted order (as serde_json writes a `Value`); the optional ones only when they
/// apply, so a listing of plain files reads as it always did.
#[derive(Serialize)]
struct EntryJson {
    gid: u32,
    /// Hard link: the path of the inode's first name in the archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    link_to: Option<String>,
    /// Permission bits in octal, at least four digits (`0644`).
    mode: String,
    /// RFC 3339 UTC, or null for a time chrono cannot show.
    mtime: Option<String>,
    mtime_unix: i64,
    path: String,
    /// The path's exact bytes in hex, present only when the path is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    /// Devices: `major:minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rdev: Option<String>,
    size: u64,
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    uid: u32,
    /// Extended attribute names (values are not listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<String>,
}

impl EntryJson {
    fn new(e: &EntryV2, link_to: Option<&[u8]>) -> Self {
        let (path, path_hex) = text_and_hex(&e.path);
        let (target, target_hex) = match &e.link_target {
            Some(t) => {
                let (t, h) = text_and_hex(t);
                (Some(t), h)
            }
            None => (None, None),
        };
        EntryJson {
            gid: e.gid,
            link_to: link_to.map(|p| text_and_hex(p).0),
            mode: format!("{:04o}", e.mode),
            mtime: rfc3339(e.mtime_sec),
            mtime_unix: e.mtime_sec,
            path,
            path_hex,
            rdev: matches!(e.kind, KIND_CHAR | KIND_BLOCK)
                .then(|| format!("{}:{}", e.rdev_major, e.rdev_minor)),
            size: e.size,
            target,
            target_hex,
            kind: kind_name(e.kind),
            uid: e.uid,
            xattrs: e.xattrs.iter().map(|x| text_and_hex(&x.name).0).collect(),
        }
    }
}

/// `drwxr-xr-x         4096 2026-11-27T02:00:00Z etc`, as `ls -l` shows it (a hard link as
/// `h`, with the name it links to).
fn print_long(e: &EntryV2, link_to: Option<&[u8]>) -> anyhow::Result<()> {
    let t = match e.kind {
        KIND_DIR => 'd',
        KIND_SYMLINK => 'l',
        KIND_HARDLINK => 'h',
        KIND_FIFO => 'p',
        KIND_CHAR => 'c',
        KIND_BLOCK => 'b',
        _ => '-',
    };
    let link = match (&e.link_target, link_to) {
        (Some(t), _) => format!(" -> {}", safe_bytes(t)),
        (None, Some(to)) => format!(" link to {}", safe_bytes(to)),
        _ => String::new(),
    };
    let size = if matches!(e.kind, KIND_CHAR | KIND_BLOCK) {
        format!("{}, {}", e.rdev_major, e.rdev_minor)
    } else {
        e.size.to_string()
    };
    outln!(
        "{t}{} {:>12} {} {}{link}",
        mode_string(e.mode),
        size,
        rfc3339(e.mtime_sec).as_deref().unwrap_or("-"),
        safe_bytes(&e.path)
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
