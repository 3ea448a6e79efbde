//! A file whose size changes between the walk's `lstat` and the end of its read is stored
//! at the size actually read, with a warning naming it (exit 1). Deterministic stand-ins
//! for a file written to during the backup: a procfs file lists size 0 and reads as text
//! (it "grows"), a sysfs attribute lists 4096 bytes and reads as a few (it "shrinks").
#![cfg(target_os = "linux")]

use std::fs;
use std::path::Path;

use crate::common::*;
use coffer::backup::{BackupOptions, Quiet, backup};

const GROWS: &str = "/proc/version";
const SHRINKS: &str = "/sys/devices/system/cpu/online";

#[test]
fn regression_a_file_that_changes_size_during_backup_is_stored_as_read_with_a_warning() {
    let (grows, shrinks) = (Path::new(GROWS), Path::new(SHRINKS));
    // The premise: listed size and content differ, both ways.
    let grown = fs::read(grows).unwrap();
    assert!(fs::metadata(grows).unwrap().len() < grown.len() as u64);
    let shrunk = fs::read(shrinks).unwrap();
    assert!(fs::metadata(shrinks).unwrap().len() > shrunk.len() as u64);

    let t = TestDir::new();
    let out = t.join("a.coffer");
    let alice = recipient(&alice_pub());
    let opts = BackupOptions::new(vec![grows.into(), shrinks.into()], out.clone());
    let report = backup(&opts, &[&alice], &Quiet).unwrap();
    let warned: Vec<(&Path, &str)> = report
        .warnings
        .iter()
        .map(|w| (w.path.as_path(), w.message.as_str()))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    // Sources are walked in name order (the archive's path order), not as given.
    let mut sources = [grows, shrinks];
    sources.sort_by_key(|p| Path::new(p).file_name().map(|n| n.to_os_string()));
    for (w, path) in warned.iter().zip(sources) {
        assert_eq!(w.0, path, "{warned:?}");
        assert!(w.1.contains("changed size"), "{warned:?}");
    }
    assert_eq!(report.totals.files, 2);
    assert_eq!(report.totals.warnings, 2);

    // Both files are in the archive, at the size read, and restore as read.
    let entries = entries_of(&out, &alice_key());
    let sizes: Vec<(&[u8], u64)> = entries.iter().map(|e| (&e.path[..], e.size)).collect();
    assert_eq!(
        sizes,
        [
            (&b"online"[..], shrunk.len() as u64),
            (&b"version"[..], grown.len() as u64)
        ]
    );
    let target = t.join("restored");
    try_restore(&out, &alice_key(), &target, &[], false).unwrap();
    assert_eq!(fs::read(target.join("version")).unwrap(), grown);
    assert_eq!(fs::read(target.join("online")).unwrap(), shrunk);

    // The binary exits 1 and names the file.
    let cli = coffer_cmd()
        .arg("backup")
        .arg(grows)
        .arg("-o")
        .arg(t.join("b.coffer"))
        .arg("-r")
        .arg(alice_pub())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(GROWS) && stderr.contains("changed size"),
        "{stderr}"
    );
}
