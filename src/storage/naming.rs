//! How archives are named in a destination folder, and how the temporary files of an
//! unfinished one are recognised and swept.
//!
//! A job session writes `DEST/<job>-<YYYYmmddTHHMMSSZ>-<first 8 hex digits of the session
//! id>.coffer`, and the plain `backup --to DIR` names its archive the same way (with its
//! `--job-name`, or `backup`), so archives sort by time and two never meet. While an archive
//! is written on a local disk it is a hidden `.NAME.XXXXXXXX.partial` file; older coffer
//! versions staged archives as `.<job>-<stamp>-<row>.staging`. A process killed outright
//! leaves those behind, and [`sweep_leftovers`] removes them (only ever for one job, so a
//! job never touches another's files).
//!
//! This is the storage layer's and not the job layer's because `backup --to` uses it
//! without any job. The UTC time stamp of a name is formatted by chrono, which the library
//! takes in only with the `jobs` feature, so the naming functions exist with it (the binary
//! always has it); recognising and sweeping leftovers needs nothing but std.

use std::path::{Path, PathBuf};

#[cfg(feature = "jobs")]
use chrono::{DateTime, Utc};

use super::Location;
#[cfg(feature = "jobs")]
use crate::format::hex;

/// `<job>-<YYYYmmddTHHMMSSZ>` of a session started at `t`.
#[cfg(feature = "jobs")]
pub fn archive_stem(job: &str, t: DateTime<Utc>) -> String {
    format!("{job}-{}", t.format("%Y%m%dT%H%M%SZ"))
}

/// The final name of an archive: `<job>-<YYYYmmddTHHMMSSZ>-<8 hex of the session id>.coffer`.
#[cfg(feature = "jobs")]
pub fn archive_name(job: &str, t: DateTime<Utc>, session_id: &[u8]) -> String {
    let h = hex(session_id);
    format!("{}-{}.coffer", archive_stem(job, t), &h[..h.len().min(8)])
}

/// Is `name` a temporary file of a session of `job`: `.<job>-<stamp>-<8 hex>.coffer.XXXXXXXX.partial`,
/// or, from coffer versions that staged archives, `.<job>-<stamp>-<row>.staging` and its
/// `..<job>-<stamp>-<row>.staging.XXXXXXXX.partial`?
pub fn is_leftover(name: &str, job: &str) -> bool {
    is_partial_archive(name, job) || is_staging_leftover(name, job)
}

/// `.<job>-<YYYYmmddTHHMMSSZ>-<8 hex>.coffer.<8 hex>.partial`
fn is_partial_archive(name: &str, job: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|r| r.strip_suffix(".partial"))
    else {
        return false;
    };
    let Some((archive, tag)) = rest.rsplit_once('.') else {
        return false;
    };
    if !is_partial_tag(tag) {
        return false;
    }
    let Some(core) = archive
        .strip_suffix(".coffer")
        .and_then(|c| c.strip_prefix(job))
        .and_then(|c| c.strip_prefix('-'))
    else {
        return false;
    };
    let b = core.as_bytes();
    b.len() == 25 && starts_with_stamp(b) && b[17..].iter().all(u8::is_ascii_hexdigit)
}

fn is_staging_leftover(name: &str, job: &str) -> bool {
    let core = if let Some(rest) = name.strip_prefix("..") {
        let Some(rest) = rest.strip_suffix(".partial") else {
            return false;
        };
        match rest.rsplit_once('.') {
            Some((core, tag)) if is_partial_tag(tag) => core,
            _ => return false,
        }
    } else if let Some(rest) = name.strip_prefix('.') {
        rest
    } else {
        return false;
    };
    let Some(core) = core.strip_suffix(".staging") else {
        return false;
    };
    let Some(rest) = core.strip_prefix(job).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    // YYYYmmddTHHMMSSZ-<row>
    let b = rest.as_bytes();
    b.len() > 17 && starts_with_stamp(b) && b[17..].iter().all(u8::is_ascii_digit)
}

/// Does `b` start with `YYYYmmddTHHMMSSZ-`, the time stamp of an archive name?
fn starts_with_stamp(b: &[u8]) -> bool {
    b.len() > 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
}

/// The 8 hex digits the local sink puts between an archive's name and `.partial`.
fn is_partial_tag(tag: &str) -> bool {
    tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Remove the temporary files of `job`'s sessions from `dest`. Only call this holding the
/// job's lock (otherwise a running session's files would go). Returns what was removed.
pub fn sweep_leftovers(dest: &Path, job: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    // In object storage an unfinished upload is invisible and leaves no name to sweep; the
    // bucket's lifecycle rule aborts it (README, S3).
    if Location::parse(dest).is_ok_and(|l| l.is_remote()) {
        return removed;
    }
    let Ok(entries) = std::fs::read_dir(dest) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_leftover(name, job) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name coffer versions that staged archives gave the staging file.
    #[cfg(feature = "jobs")]
    fn staging_name(job: &str, t: DateTime<Utc>, row: i64) -> String {
        format!(".{}-{row}.staging", archive_stem(job, t))
    }

    #[cfg(feature = "jobs")]
    #[test]
    fn archive_names() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            archive_name("home", t, &[0xab, 0xcd, 0xef, 0x01, 0x23, 0x45]),
            "home-20240506T070809Z-abcdef01.coffer"
        );
        assert_eq!(
            staging_name("home", t, 12),
            ".home-20240506T070809Z-12.staging"
        );
    }

    #[cfg(feature = "jobs")]
    #[test]
    fn partial_archive_of_a_session_is_a_leftover_and_nothing_else() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let name = archive_name("home", t, &[0xab, 0xcd, 0xef, 0x01, 2, 3]);
        let partial = format!(".{name}.0badf00d.partial");
        assert!(is_leftover(&partial, "home"));
        assert!(!is_leftover(&partial, "hom"));
        assert!(
            !is_leftover(&name, "home"),
            "a finished archive is never swept"
        );
        assert!(!is_leftover(&format!(".{name}.0badf00.partial"), "home"));
        assert!(!is_leftover(&format!(".{name}.0badf00d"), "home"));
        assert!(!is_leftover(
            ".home-20240506T070809Z-zzzzzzzz.coffer.0badf00d.partial",
            "home"
        ));
    }

    #[test]
    fn leftovers_are_recognised_per_job() {
        let staging = ".home-20240506T070809Z-12.staging";
        let partial = "..home-20240506T070809Z-12.staging.0badf00d.partial";
        assert!(is_leftover(staging, "home"));
        assert!(is_leftover(partial, "home"));
        // Another job whose name starts with this one's, and final archives, are not.
        assert!(!is_leftover(".home-2-20240506T070809Z-12.staging", "home"));
        assert!(is_leftover(".home-2-20240506T070809Z-12.staging", "home-2"));
        assert!(!is_leftover(
            "home-20240506T070809Z-abcdef01.coffer",
            "home"
        ));
        assert!(!is_leftover(
            "..home-20240506T070809Z-12.staging.xyz.partial",
            "home"
        ));
        assert!(!is_leftover(".home-20240506T070809Z-.staging", "home"));
    }
}
