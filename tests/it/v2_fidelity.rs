//! Format v2 keeps what a Linux file system has (docs/FORMAT.md v2.7): byte-exact names,
//! hard links, extended attributes and ACLs, file capabilities, FIFOs and devices, sparse
//! files. Each test backs a tree up through the library at format 2, restores it through
//! the `coffer` binary and compares with what the kernel reports (lstat, xattrs, getfacl,
//! getcap, du). What needs root, a tool or a file-system feature that is missing is skipped
//! with the reason printed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use coffer::Compression;
use coffer::backup::{BackupOptions, BackupReport, Quiet, backup};
use coffer::recipient::Recipient;
use serde_json::Value;

/// A temporary folder under the build's own temporary directory (the repository's file
/// system), not the system's /tmp, which may be a tmpfs without user xattrs or holes.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("coffer-v2-fidelity-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("create temp dir"),
        }
    }

    fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// Print why a test does not run here and return from it.
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("skipped: {}", format!($($arg)*));
        return;
    }};
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The path of a system tool, looked up in `PATH` and the sbin folders (setcap lives in
/// /usr/sbin, which a non-login PATH may lack).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Run a system tool; its output, or why it failed.
fn run(tool: &Path, args: &[&OsStr]) -> Result<Output, String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{} {:?}: {}",
            tool.display(),
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Back `sources` up to `output` through the library, writing format v2 explicitly.
fn backup_v2(sources: &[&Path], output: &Path) -> BackupReport {
    let r = recipient(&alice_pub());
    let mut opts = BackupOptions::new(
        sources.iter().map(|p| p.to_path_buf()).collect(),
        output.to_path_buf(),
    );
    opts.block_size = SMALL_BLOCK;
    opts.compression = Compression::Zstd(1);
    opts.format = 2;
    backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap_or_else(|e| panic!("backup: {e}"))
}

/// `coffer restore ARCHIVE -i alice --to TARGET ARGS…` through the binary; it must exit 0.
fn restore_cli(archive: &Path, target: &Path, args: &[&str]) -> Output {
    let out = coffer_cmd()
        .arg("restore")
        .arg(archive)
        .arg("-i")
        .arg(alice_key())
        .arg("--to")
        .arg(target)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "coffer restore {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`restore_cli`] with `--json`: the summary document.
fn restore_json(archive: &Path, target: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = restore_cli(archive, target, &all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "restore --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `coffer list ARCHIVE -i alice ARGS…`: its stdout, after a successful exit.
fn list_cli(archive: &Path, args: &[&str]) -> Vec<u8> {
    let out = coffer_cmd()
        .arg("list")
        .arg(archive)
        .arg("-i")
        .arg(alice_key())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "coffer list {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lhex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as coffer's listings show them: valid UTF-8 as itself, every other byte `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// A path from bytes (names need not be UTF-8).
fn bpath(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(rel))
}

/// The names in a folder, as bytes, sorted.
fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

#[test]
fn non_utf8_names_and_link_targets_restore_byte_exact_and_list_escapes_them() {
    let t = Scratch::new();
    let src = t.join("src");
    let file: &[u8] = b"caf\xe9.txt";
    let folder: &[u8] = b"dir\xff";
    let inner: &[u8] = b"dir\xff/caf\xe9";
    let target: &[u8] = b"dir\xff/caf\xe9";
    write_file(&bpath(&src, file), b"bonjour\n", 0o644);
    write_file(&bpath(&src, inner), b"inner bytes\n", 0o600);
    std::os::unix::fs::symlink(OsStr::from_bytes(target), src.join("link")).unwrap();
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(
        report.warnings.is_empty(),
        "nothing is skipped for its name: {:?}",
        report.warnings
    );

    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    let top = out.join("src");
    assert_eq!(names(&top), names(&src), "names restored as the same bytes");
    assert_eq!(names(&bpath(&top, folder)), vec![b"caf\xe9".to_vec()]);
    assert!(fs::symlink_metadata(bpath(&top, folder)).unwrap().is_dir());
    assert_eq!(fs::read(bpath(&top, file)).unwrap(), b"bonjour\n");
    assert_eq!(fs::read(bpath(&top, inner)).unwrap(), b"inner bytes\n");
    let got_target = fs::read_link(top.join("link")).unwrap();
    assert_eq!(got_target.as_os_str().as_bytes(), target);
    // Through the link, as a user would: it points at the restored inner file.
    assert_eq!(fs::read(top.join("link")).unwrap(), b"inner bytes\n");

    // Text listing: each byte that is not UTF-8 as \xNN.
    let text = String::from_utf8(list_cli(&archive, &[])).expect("list prints UTF-8 text");
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "src/caf\\xe9.txt",
        "src/dir\\xff",
        "src/dir\\xff/caf\\xe9",
        "src/link",
    ] {
        assert!(lines.contains(&want), "{want:?} not listed in:\n{text}");
    }
    let long = String::from_utf8(list_cli(&archive, &["-l"])).unwrap();
    assert!(
        long.contains("src/link -> dir\\xff/caf\\xe9"),
        "link target escaped in list -l:\n{long}"
    );

    // JSON: the escaped text plus the exact bytes in hex, only where the path is not UTF-8.
    let doc: Value = serde_json::from_slice(&list_cli(&archive, &["--json"])).unwrap();
    let entries = doc["archives"][0]["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {doc}"));
    let by_path: BTreeMap<&str, &Value> = entries
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    for rel in [file, folder, inner] {
        let full = [b"src/".as_slice(), rel].concat();
        let escaped = escape(&full);
        let e = by_path
            .get(escaped.as_str())
            .unwrap_or_else(|| panic!("{escaped:?} not in list --json: {doc}"));
        assert_eq!(
            e["path_hex"].as_str().map(str::to_ascii_lowercase),
            Some(lhex(&full)),
            "path_hex of {escaped:?}"
        );
    }
    let link = by_path.get("src/link").expect("link listed");
    assert!(
        link.get("path_hex").is_none(),
        "a UTF-8 path has no path_hex: {link}"
    );
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "dir\\xff/caf\\xe9");
    assert_eq!(
        link["target_hex"].as_str().map(str::to_ascii_lowercase),
        Some(lhex(target))
    );
}

#[test]
fn hard_link_set_across_folders_restores_as_one_inode_with_its_data_stored_once() {
    let t = Scratch::new();
    let src = t.join("src");
    let data = pseudo_random(1 << 20, 15);
    write_file(&src.join("a/first"), &data, 0o640);
    fs::create_dir_all(src.join("b")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("b/second")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("c/third")).unwrap();
    assert_eq!(fs::metadata(src.join("a/first")).unwrap().nlink(), 3);
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Random data does not compress: stored three times it would be over 3 MiB.
    let size = fs::metadata(&archive).unwrap().len();
    assert!(
        size < (1 << 20) + (256 << 10),
        "1 MiB with three names should be stored once, archive is {size} bytes"
    );

    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(summary["hardlinks"], 2, "{summary}");
    let top = out.join("src");
    let first = fs::symlink_metadata(top.join("a/first")).unwrap();
    assert!(first.is_file());
    assert_eq!(first.nlink(), 3, "the three names are one inode");
    assert_eq!(first.mode() & 0o7777, 0o640);
    for other in ["b/second", "c/third"] {
        let m = fs::symlink_metadata(top.join(other)).unwrap();
        assert_eq!(
            (m.dev(), m.ino()),
            (first.dev(), first.ino()),
            "{other} is not a link to a/first"
        );
    }
    assert_eq!(fs::read(top.join("c/third")).unwrap(), data);

    // Only the second name: its first name is not restored, so it becomes a file of its
    // own with the inode's data and mode.
    let only = t.join("only");
    let summary = restore_json(&archive, &only, &["src/b/second"]);
    assert_eq!(summary["files"], 1, "{summary}");
    let m = fs::symlink_metadata(only.join("src/b/second")).unwrap();
    assert!(m.is_file(), "not a regular file: {m:?}");
    assert_eq!(m.nlink(), 1);
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(fs::read(only.join("src/b/second")).unwrap(), data);
    assert!(
        !only.join("src/a").exists(),
        "the first name was restored too"
    );
    assert!(
        !only.join("src/c").exists(),
        "the third name was restored too"
    );

    // The second and third names without the first: still one inode between them.
    let two = t.join("two");
    restore_json(&archive, &two, &["src/b/second", "src/c/third"]);
    let b = fs::symlink_metadata(two.join("src/b/second")).unwrap();
    let c = fs::symlink_metadata(two.join("src/c/third")).unwrap();
    assert_eq!((b.ino(), b.nlink()), (c.ino(), 2), "{b:?} {c:?}");
    assert_eq!(fs::read(two.join("src/c/third")).unwrap(), data);
    assert!(!two.join("src/a").exists());
}

/// The value of extended attribute `name` of `path` (never following a link), `None` if
/// it has none of that name.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {} {name}: {e}", path.display()),
    }
}

/// Every extended attribute name of `path`, sorted.
fn xattr_names(path: &Path) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    let n = rustix::fs::llistxattr(path, &mut buf[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", path.display()));
    let mut v: Vec<Vec<u8>> = buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    v.sort();
    v
}

#[test]
fn xattrs_in_user_trusted_and_security_namespaces_round_trip_and_no_xattrs_restores_none() {
    if !is_root() {
        skip!("trusted.* and security.* attributes need root");
    }
    let t = Scratch::new();
    let src = t.join("src");
    write_file(&src.join("f"), b"with attributes\n", 0o644);
    fs::create_dir_all(src.join("d")).unwrap();
    // Values are bytes: NULs, high bytes, an empty value, one of 3000 bytes.
    let attrs: Vec<(&Path, &str, Vec<u8>)> = vec![
        (Path::new(""), "user.top", b"the source folder".to_vec()),
        (
            Path::new("f"),
            "user.coffer.bin",
            vec![0, 1, 0xff, 0xfe, b'\n', 0, 0x80],
        ),
        (Path::new("f"), "user.empty", Vec::new()),
        (Path::new("f"), "trusted.coffer", pseudo_random(3000, 7)),
        (
            Path::new("f"),
            "security.coffer",
            b"label\0with nul".to_vec(),
        ),
        (Path::new("d"), "user.folder", b"folder attr".to_vec()),
        (Path::new("d"), "trusted.folder", vec![0xe9; 17]),
    ];
    for (rel, name, value) in &attrs {
        let p = src.join(rel);
        if let Err(e) = rustix::fs::lsetxattr(&p, *name, value, rustix::fs::XattrFlags::empty()) {
            skip!("cannot set {name} on {}: {e}", p.display());
        }
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    let top = out.join("src");
    for (rel, name, value) in &attrs {
        let got = xattr(&top.join(rel), name);
        assert_eq!(
            got.as_deref(),
            Some(value.as_slice()),
            "{name} of {}",
            rel.display()
        );
    }
    for rel in ["", "f", "d"] {
        assert_eq!(
            xattr_names(&top.join(rel)),
            xattr_names(&src.join(rel)),
            "attribute names of {rel:?}"
        );
    }

    let bare = t.join("bare");
    restore_cli(&archive, &bare, &["--no-xattrs"]);
    assert_eq!(fs::read(bare.join("src/f")).unwrap(), b"with attributes\n");
    for (rel, name, _) in &attrs {
        assert_eq!(
            xattr(&bare.join("src").join(rel), name),
            None,
            "{name} of {} restored despite --no-xattrs",
            rel.display()
        );
    }
}

#[test]
fn access_and_default_acls_on_a_folder_round_trip() {
    let (Some(setfacl), Some(getfacl)) = (tool("setfacl"), tool("getfacl")) else {
        skip!("setfacl/getfacl not installed (the acl package)");
    };
    let t = Scratch::new();
    let src = t.join("src");
    let shared = src.join("shared");
    fs::create_dir_all(&shared).unwrap();
    // Numeric ids (65534 is nobody/nogroup), so the test needs no user database entries.
    for args in [
        &["-m", "u:65534:r-x,g:65534:rwx"][..],
        &["-d", "-m", "u::rwx,g::r-x,o::---,u:65534:rwx"][..],
    ] {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(shared.as_os_str());
        if let Err(e) = run(&setfacl, &a) {
            skip!("cannot set an ACL here: {e}");
        }
    }
    // Made after the default ACL: it inherits an access ACL from it.
    write_file(&shared.join("inherits"), b"x", 0o640);
    let acl = |p: &Path| -> String {
        let out = run(
            &getfacl,
            &[OsStr::new("-n"), OsStr::new("--omit-header"), p.as_os_str()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(out.stdout).unwrap()
    };
    let want_dir = acl(&shared);
    let want_file = acl(&shared.join("inherits"));
    assert!(
        want_dir.contains("user:65534:r-x") && want_dir.contains("default:user:65534:rwx"),
        "the source ACLs were not set:\n{want_dir}"
    );
    assert!(
        want_file.contains("user:65534:rwx"),
        "no inherited ACL:\n{want_file}"
    );
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    assert_eq!(acl(&out.join("src/shared")), want_dir, "folder ACLs");
    assert_eq!(
        acl(&out.join("src/shared/inherits")),
        want_file,
        "the file's ACL"
    );
}

#[test]
fn file_capability_is_restored_only_with_preserve_special_bits_and_owner() {
    if !is_root() {
        skip!("setting file capabilities needs root");
    }
    let (Some(setcap), Some(getcap)) = (tool("setcap"), tool("getcap")) else {
        skip!("setcap/getcap not installed (the libcap2-bin package)");
    };
    let t = Scratch::new();
    let src = t.join("src");
    let prog = src.join("bin/ping");
    write_file(&prog, b"#!/bin/sh\necho pong\n", 0o755);
    if let Err(e) = run(&setcap, &[OsStr::new("cap_net_raw+ep"), prog.as_os_str()]) {
        skip!("cannot set a file capability here: {e}");
    }
    let caps = |p: &Path| -> String {
        let out = run(&getcap, &[p.as_os_str()]).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(out.stdout).unwrap()
    };
    let has_net_raw = |s: &str| s.contains("cap_net_raw=ep") || s.contains("cap_net_raw+ep");
    assert!(has_net_raw(&caps(&prog)), "not set: {}", caps(&prog));
    let value = xattr(&prog, "security.capability").expect("security.capability set");
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let kept = t.join("kept");
    let summary = restore_json(
        &archive,
        &kept,
        &["--preserve-special-bits", "--preserve-owner"],
    );
    let got = kept.join("src/bin/ping");
    assert!(
        has_net_raw(&caps(&got)),
        "capability lost: {:?}",
        caps(&got)
    );
    assert_eq!(
        xattr(&got, "security.capability"),
        Some(value),
        "capability not byte-exact"
    );
    assert_eq!(summary["special_bits_cleared"], 0, "{summary}");
    assert_eq!(fs::read(&got).unwrap(), b"#!/bin/sh\necho pong\n");

    // By default, and as root with --preserve-special-bits alone (the program would now
    // belong to root), the capability is dropped and counted.
    for (name, args) in [
        ("default", &[][..]),
        ("special-only", &["--preserve-special-bits"][..]),
    ] {
        let target = t.join(name);
        let summary = restore_json(&archive, &target, args);
        let got = target.join("src/bin/ping");
        assert_eq!(caps(&got).trim(), "", "{name}: capability restored");
        assert_eq!(xattr(&got, "security.capability"), None, "{name}");
        assert_eq!(summary["special_bits_cleared"], 1, "{name}: {summary}");
        assert_eq!(
            fs::symlink_metadata(&got).unwrap().mode() & 0o7777,
            0o755,
            "{name}: the program's mode"
        );
    }
    // The text summary says so too, on stderr, with exit code 0.
    let out = restore_cli(&archive, &t.join("text"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cleared on 1 ") && stderr.contains("--preserve-special-bits"),
        "no note of the cleared capability: {stderr}"
    );
}

#[test]
fn fifo_and_character_device_are_recreated_with_their_mode_and_rdev() {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    mknodat(
        CWD,
        src.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // chmod, not the mode given to mknod, which the umask narrows.
    fs::set_permissions(src.join("pipe"), fs::Permissions::from_mode(0o640)).unwrap();
    let root = is_root();
    if root {
        let dev = makedev(1, 3);
        if let Err(e) = mknodat(
            CWD,
            src.join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            dev,
        ) {
            skip!("cannot make a device node here: {e}");
        }
        fs::set_permissions(src.join("null"), fs::Permissions::from_mode(0o620)).unwrap();
    } else {
        eprintln!("device node part skipped: making one needs root");
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    assert_eq!(summary["specials"], if root { 2 } else { 1 }, "{summary}");
    let mut names = vec!["pipe"];
    if root {
        names.push("null");
    }
    for name in names {
        let want = fs::symlink_metadata(src.join(name)).unwrap();
        let got = fs::symlink_metadata(out.join("src").join(name)).unwrap();
        let kind = |m: &fs::Metadata| (m.file_type().is_fifo(), m.file_type().is_char_device());
        assert_eq!(kind(&got), kind(&want), "{name}: kind");
        assert_eq!(got.mode() & 0o7777, want.mode() & 0o7777, "{name}: mode");
        assert_eq!(got.rdev(), want.rdev(), "{name}: rdev");
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (want.mtime(), want.mtime_nsec()),
            "{name}: mtime"
        );
    }
    if root {
        let got = fs::symlink_metadata(out.join("src/null")).unwrap();
        assert_eq!(got.rdev(), makedev(1, 3));
    }
}

/// The data segments of a file, by `SEEK_DATA`/`SEEK_HOLE`: `(offset, len)`.
fn data_segments(f: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match seek(f, SeekFrom::Data(at)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let end = seek(f, SeekFrom::Hole(start)).unwrap().min(size);
        out.push((start, end - start));
        at = end;
    }
    out
}

fn read_at(f: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// `du --block-size=1 PATH`: the bytes the file occupies on disk.
fn du(du: &Path, p: &Path) -> u64 {
    let out = run(du, &[OsStr::new("--block-size=1"), p.as_os_str()]).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn sparse_file_of_10_gib_restores_with_its_holes() {
    let Some(du_tool) = tool("du") else {
        skip!("du not installed");
    };
    const SIZE: u64 = 10 << 30;
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    let path = src.join("sparse.img");
    let f = File::create(&path).unwrap();
    f.set_len(SIZE).unwrap();
    // At the start, unaligned in the middle, and at the very end.
    let pieces: Vec<(u64, Vec<u8>)> = vec![
        (0, pseudo_random(3000, 1)),
        ((4 << 30) + 3 * 4096 + 100, pseudo_random(5000, 2)),
        (SIZE - 4096, pseudo_random(4096, 3)),
    ];
    for (at, data) in &pieces {
        f.write_all_at(data, *at).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let before = du(&du_tool, &path);
    if before >= 1 << 20 {
        skip!("the file system does not keep holes ({before} bytes used for 10 GiB)");
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let archive_len = fs::metadata(&archive).unwrap().len();
    assert!(
        archive_len < 1 << 20,
        "holes were stored: archive is {archive_len} bytes"
    );

    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    let got_path = out.join("src/sparse.img");
    let got = File::open(&got_path).unwrap();
    let want = File::open(&path).unwrap();
    assert_eq!(got.metadata().unwrap().len(), SIZE);
    for (at, data) in &pieces {
        assert_eq!(&read_at(&got, *at, data.len() as u64), data, "data at {at}");
    }
    // Equal everywhere: outside the data segments of either file both read as zeros, so
    // comparing those segments of both compares all 10 GiB.
    let mut segments = data_segments(&want, SIZE);
    segments.extend(data_segments(&got, SIZE));
    let covered: u64 = segments.iter().map(|s| s.1).sum();
    assert!(covered < 64 << 20, "too much data to compare: {segments:?}");
    for (at, len) in segments {
        assert!(
            read_at(&got, at, len) == read_at(&want, at, len),
            "content differs in [{at}, {})",
            at + len
        );
    }
    let after = du(&du_tool, &got_path);
    assert!(
        after <= before + (64 << 10),
        "restored file uses {after} bytes on disk, the original {before}"
    );
}

#[test]
fn socket_in_the_source_is_skipped_with_a_warning_naming_it() {
    let t = Scratch::new();
    let src = t.join("src");
    write_file(&src.join("keep.txt"), b"kept\n", 0o644);
    let sock = src.join("daemon.sock");
    let _listener = match std::os::unix::net::UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => skip!("cannot make a socket here: {e}"),
    };
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert_eq!(w.path, sock, "{w:?}");
    assert!(w.message.contains("socket"), "{w:?}");

    let listed = String::from_utf8(list_cli(&archive, &[])).unwrap();
    assert!(!listed.contains("daemon.sock"), "{listed}");
    assert!(listed.lines().any(|l| l == "src/keep.txt"), "{listed}");
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    assert_eq!(fs::read(out.join("src/keep.txt")).unwrap(), b"kept\n");
    assert!(fs::symlink_metadata(out.join("src/daemon.sock")).is_err());
}

#[test]
fn hard_linked_fifo_and_symlink_restore_as_one_inode_each() {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(src.join("other")).unwrap();
    mknodat(
        CWD,
        src.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::hard_link(src.join("pipe"), src.join("other/pipe")).unwrap();
    std::os::unix::fs::symlink("pipe", src.join("sym")).unwrap();
    // link(2) makes a second name of the symlink itself, not of what it points to.
    fs::hard_link(src.join("sym"), src.join("other/sym")).unwrap();
    assert_eq!(fs::symlink_metadata(src.join("sym")).unwrap().nlink(), 2);
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let doc: Value = serde_json::from_slice(&list_cli(&archive, &["--json"])).unwrap();
    let kinds: BTreeMap<&str, &str> = doc["archives"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds["src/other/pipe"], "fifo", "first name in path order");
    assert_eq!(kinds["src/pipe"], "hardlink");
    assert_eq!(kinds["src/other/sym"], "symlink");
    assert_eq!(kinds["src/sym"], "hardlink");

    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    assert_eq!(summary["hardlinks"], 2, "{summary}");
    for (a, b) in [("pipe", "other/pipe"), ("sym", "other/sym")] {
        let ma = fs::symlink_metadata(out.join("src").join(a)).unwrap();
        let mb = fs::symlink_metadata(out.join("src").join(b)).unwrap();
        assert_eq!((ma.dev(), ma.ino()), (mb.dev(), mb.ino()), "{a} and {b}");
        assert_eq!(ma.nlink(), 2, "{a}");
    }
    assert!(
        fs::symlink_metadata(out.join("src/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read_link(out.join("src/sym")).unwrap(),
        Path::new("pipe")
    );
}

#[test]
fn restoring_a_hard_link_set_again_with_overwrite_keeps_one_inode() {
    let t = Scratch::new();
    let src = t.join("src");
    write_file(&src.join("a/first"), b"same inode\n", 0o644);
    fs::create_dir_all(src.join("b")).unwrap();
    fs::hard_link(src.join("a/first"), src.join("b/second")).unwrap();
    let archive = t.join("a.coffer");
    backup_v2(&[&src], &archive);
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    restore_cli(&archive, &out, &["--overwrite"]);
    let a = fs::symlink_metadata(out.join("src/a/first")).unwrap();
    let b = fs::symlink_metadata(out.join("src/b/second")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(a.nlink(), 2);
    assert_eq!(fs::read(out.join("src/b/second")).unwrap(), b"same inode\n");
    // No temporary name left behind by the replacing link.
    assert_eq!(names(&out.join("src/b")), vec![b"second".to_vec()]);
}

#[test]
fn non_utf8_names_are_selected_by_glob_patterns() {
    let t = Scratch::new();
    let src = t.join("src");
    write_file(&bpath(&src, b"dir\xff/caf\xe9"), b"inner\n", 0o644);
    write_file(&src.join("plain.txt"), b"plain\n", 0o644);
    let archive = t.join("a.coffer");
    backup_v2(&[&src], &archive);
    for pattern in ["src/dir*", "src/dir?/caf?", "**/caf*"] {
        let out = t.join(format!("out-{}", pattern.len()));
        restore_cli(&archive, &out, &[pattern]);
        assert_eq!(
            fs::read(bpath(&out, b"src/dir\xff/caf\xe9"))
                .ok()
                .as_deref(),
            Some(&b"inner\n"[..]),
            "{pattern} did not select the non-UTF-8 file"
        );
        assert!(!out.join("src/plain.txt").exists(), "{pattern}");
    }
}

#[test]
fn sparse_files_all_hole_and_with_a_trailing_hole_restore_their_size() {
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    let hole = File::create(src.join("all-hole")).unwrap();
    hole.set_len(1 << 30).unwrap();
    let tail = File::create(src.join("trailing-hole")).unwrap();
    tail.set_len(1 << 30).unwrap();
    let data = pseudo_random(8192, 9);
    tail.write_all_at(&data, 1 << 20).unwrap();
    tail.sync_all().unwrap();
    if hole.metadata().unwrap().blocks() > 0 || tail.metadata().unwrap().blocks() > 64 {
        skip!("the file system does not keep holes");
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    let h = fs::metadata(out.join("src/all-hole")).unwrap();
    assert_eq!(h.len(), 1 << 30);
    assert_eq!(h.blocks(), 0, "an all-hole file got data blocks");
    let f = File::open(out.join("src/trailing-hole")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 30);
    assert_eq!(read_at(&f, 1 << 20, 8192), data);
    assert_eq!(data_segments(&f, 1 << 30), data_segments(&tail, 1 << 30));
}

#[test]
fn xattrs_on_a_symlink_and_a_fifo_round_trip() {
    if !is_root() {
        skip!("trusted.* attributes (the namespace Linux allows on links and FIFOs) need root");
    }
    use rustix::fs::{CWD, FileType, Mode, XattrFlags, lsetxattr, mknodat};
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("link")).unwrap();
    mknodat(
        CWD,
        src.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    for (name, value) in [("link", b"on the link"), ("pipe", b"on the fifo")] {
        if let Err(e) = lsetxattr(src.join(name), "trusted.coffer", value, XattrFlags::empty()) {
            skip!("cannot set trusted.coffer on a {name}: {e}");
        }
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    assert_eq!(
        xattr(&out.join("src/link"), "trusted.coffer").as_deref(),
        Some(&b"on the link"[..])
    );
    assert_eq!(
        xattr(&out.join("src/pipe"), "trusted.coffer").as_deref(),
        Some(&b"on the fifo"[..])
    );
    // On the link itself, not on what it names.
    assert_eq!(
        fs::read_link(out.join("src/link")).unwrap(),
        Path::new("nowhere")
    );
}

#[test]
fn setuid_file_with_a_capability_counts_once_in_special_bits_cleared() {
    if !is_root() {
        skip!("setting file capabilities needs root");
    }
    let Some(setcap) = tool("setcap") else {
        skip!("setcap not installed (the libcap2-bin package)");
    };
    let t = Scratch::new();
    let src = t.join("src");
    let prog = src.join("prog");
    write_file(&prog, b"#!/bin/sh\n", 0o755);
    if let Err(e) = run(&setcap, &[OsStr::new("cap_net_raw+ep"), prog.as_os_str()]) {
        skip!("cannot set a file capability here: {e}");
    }
    // After setcap: chmod keeps the capability (only chown and writes clear it).
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o4755)).unwrap();
    assert!(xattr(&prog, "security.capability").is_some());
    let archive = t.join("a.coffer");
    backup_v2(&[&src], &archive);
    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    let got = out.join("src/prog");
    assert_eq!(fs::symlink_metadata(&got).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(xattr(&got, "security.capability"), None);
    // One file had its privileges taken away: the count is of entries, not of bits.
    assert_eq!(summary["special_bits_cleared"], 1, "{summary}");
}

#[test]
fn restore_without_root_skips_devices_and_trusted_xattrs_with_warnings() {
    if !is_root() {
        skip!("the source (a device node, trusted.* attributes) needs root to make");
    }
    let Some(setpriv) = tool("setpriv") else {
        skip!("setpriv not installed (util-linux), needed to restore as another user");
    };
    use rustix::fs::{CWD, FileType, Mode, XattrFlags, lsetxattr, makedev, mknodat};
    let t = Scratch::new();
    // The unprivileged user must reach the archive, its key and the target.
    fs::set_permissions(t.join(""), fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    mknodat(
        CWD,
        src.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o644),
        makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        src.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    write_file(&src.join("f"), b"data\n", 0o644);
    for (name, value) in [("user.kept", &b"u"[..]), ("trusted.lost", &b"t"[..])] {
        if let Err(e) = lsetxattr(src.join("f"), name, value, XattrFlags::empty()) {
            skip!("cannot set {name}: {e}");
        }
    }
    let archive = t.join("a.coffer");
    backup_v2(&[&src], &archive);
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o644)).unwrap();
    let key = t.join("nobody.key");
    fs::copy(alice_key(), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let home = t.join("home");
    fs::create_dir_all(&home).unwrap();
    for p in [&key, &home] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let out = home.join("out");
    // The build's folders must be reachable by that user too (not so under a private home).
    let reachable = Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args([
            "/bin/sh",
            "-c",
            r#"test -x "$1" && test -r "$2" && test -w "$3""#,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .arg(&archive)
        .arg(&home)
        .status();
    if !reachable.is_ok_and(|s| s.success()) {
        skip!("user 65534 cannot reach the coffer binary, the archive or the target here");
    }
    let run_as_nobody = Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .arg("restore")
        .arg(&archive)
        .arg("-i")
        .arg(&key)
        .arg("--to")
        .arg(&out)
        .arg("--json")
        .env("HOME", &home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run_as_nobody.stdout);
    let stderr = String::from_utf8_lossy(&run_as_nobody.stderr);
    if !run_as_nobody.status.success() && run_as_nobody.status.code() != Some(1) {
        if stderr.contains("setpriv") {
            skip!("cannot switch user here: {stderr}");
        }
        panic!("restore as nobody failed: {stdout}\n{stderr}");
    }
    assert_eq!(
        run_as_nobody.status.code(),
        Some(1),
        "warnings: exit 1\n{stderr}"
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    let warnings = summary["warnings"].as_array().unwrap();
    let about = |name: &str| -> Vec<String> {
        let p = out.join("src").join(name);
        warnings
            .iter()
            .filter(|w| w["path"] == p.to_str().unwrap())
            .map(|w| w["message"].as_str().unwrap().to_string())
            .collect()
    };
    let null = about("null");
    assert!(
        null.len() == 1 && null[0].contains("root"),
        "{null:?} in {summary}"
    );
    let f = about("f");
    assert!(
        f.len() == 1 && f[0].contains("trusted.lost"),
        "{f:?} in {summary}"
    );
    assert_eq!(warnings.len(), 2, "{summary}");
    assert_eq!(summary["specials"], 1, "{summary}");
    assert!(fs::symlink_metadata(out.join("src/null")).is_err());
    assert!(
        fs::symlink_metadata(out.join("src/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let f = out.join("src/f");
    assert_eq!(fs::read(&f).unwrap(), b"data\n");
    assert_eq!(xattr(&f, "user.kept").as_deref(), Some(&b"u"[..]));
    assert_eq!(xattr(&f, "trusted.lost"), None);
}

#[test]
fn hard_link_between_two_sources_restores_as_one_inode() {
    let t = Scratch::new();
    let one = t.join("one");
    let two = t.join("two");
    write_file(&one.join("f"), b"shared by two sources\n", 0o644);
    fs::create_dir_all(&two).unwrap();
    fs::hard_link(one.join("f"), two.join("g")).unwrap();
    let archive = t.join("a.coffer");
    // Given in reverse: the archive orders sources by name, so one/f is the first name.
    let report = backup_v2(&[&two, &one], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    assert_eq!(summary["hardlinks"], 1, "{summary}");
    let f = fs::symlink_metadata(out.join("one/f")).unwrap();
    let g = fs::symlink_metadata(out.join("two/g")).unwrap();
    assert_eq!((f.dev(), f.ino()), (g.dev(), g.ino()));
    assert_eq!(f.nlink(), 2);
    assert_eq!(
        fs::read(out.join("two/g")).unwrap(),
        b"shared by two sources\n"
    );
}

#[test]
fn block_device_and_large_device_numbers_are_recreated() {
    if !is_root() {
        skip!("making device nodes needs root");
    }
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    let t = Scratch::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    // Numbers past 8 bits of major and 20 bits of minor use every part of the encoding.
    let nodes = [
        ("loop", FileType::BlockDevice, makedev(7, 0)),
        (
            "big-char",
            FileType::CharacterDevice,
            makedev(4000, 1_000_000),
        ),
        ("big-block", FileType::BlockDevice, makedev(259, 300_000)),
    ];
    for (name, kind, dev) in nodes {
        if let Err(e) = mknodat(CWD, src.join(name), kind, Mode::from_raw_mode(0o600), dev) {
            skip!("cannot make device node {name} here: {e}");
        }
    }
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let doc: Value = serde_json::from_slice(&list_cli(&archive, &["--json"])).unwrap();
    let entries = doc["archives"][0]["entries"].as_array().unwrap();
    let rdev_of = |p: &str| {
        entries
            .iter()
            .find(|e| e["path"] == p)
            .map(|e| (e["type"].clone(), e["rdev"].clone()))
    };
    assert_eq!(
        rdev_of("src/big-char"),
        Some((Value::from("chardev"), Value::from("4000:1000000")))
    );
    assert_eq!(
        rdev_of("src/loop"),
        Some((Value::from("blockdev"), Value::from("7:0")))
    );
    let out = t.join("out");
    let summary = restore_json(&archive, &out, &[]);
    assert_eq!(summary["specials"], 3, "{summary}");
    for (name, kind, dev) in nodes {
        let m = fs::symlink_metadata(out.join("src").join(name)).unwrap();
        assert_eq!(
            m.file_type().is_block_device(),
            kind == FileType::BlockDevice,
            "{name}"
        );
        assert_eq!(
            m.file_type().is_char_device(),
            kind == FileType::CharacterDevice,
            "{name}"
        );
        assert_eq!(m.rdev(), dev, "{name}: rdev");
        assert_eq!(m.mode() & 0o7777, 0o600, "{name}: mode");
    }
}

#[test]
fn source_folder_with_a_non_utf8_name_round_trips() {
    let t = Scratch::new();
    let src = bpath(&t.join(""), b"r\xe9sum\xe9s");
    write_file(&src.join("cv.txt"), b"cv\n", 0o644);
    let archive = t.join("a.coffer");
    let report = backup_v2(&[&src], &archive);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let text = String::from_utf8(list_cli(&archive, &[])).unwrap();
    assert!(
        text.lines().any(|l| l == "r\\xe9sum\\xe9s/cv.txt"),
        "{text}"
    );
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    assert_eq!(names(&out), vec![b"r\xe9sum\xe9s".to_vec()]);
    assert_eq!(
        fs::read(bpath(&out, b"r\xe9sum\xe9s/cv.txt")).unwrap(),
        b"cv\n"
    );
}

#[test]
fn backup_no_xattrs_stores_none() {
    let t = Scratch::new();
    let src = t.join("src");
    write_file(&src.join("f"), b"with an attribute\n", 0o644);
    if let Err(e) = rustix::fs::lsetxattr(
        src.join("f"),
        "user.kept",
        b"v",
        rustix::fs::XattrFlags::empty(),
    ) {
        skip!("user.* attributes not supported here: {e}");
    }
    let archive = t.join("a.coffer");
    coffer_cmd()
        .arg("backup")
        .arg(&src)
        .arg("-o")
        .arg(&archive)
        .arg("-r")
        .arg(alice_pub())
        .arg("--no-xattrs")
        .assert()
        .success();
    let listing = String::from_utf8(list_cli(&archive, &["--json"])).unwrap();
    assert!(!listing.contains("user.kept"), "{listing}");
    let out = t.join("out");
    restore_cli(&archive, &out, &[]);
    assert_eq!(xattr(&out.join("src/f"), "user.kept"), None);
    // Without the flag the attribute is stored.
    let with = t.join("b.coffer");
    backup_v2(&[&src], &with);
    let listing = String::from_utf8(list_cli(&with, &["--json"])).unwrap();
    assert!(listing.contains("user.kept"), "{listing}");
}
