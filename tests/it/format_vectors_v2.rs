//! Format v2 test vectors (fixtures/v2/, docs/FORMAT.md v2.11): every vector is run through
//! each command its `expected.toml` names — restore (whole, selected, with `--signer`),
//! keyless and keyed verify (with and without `--signer`), list through the library, info
//! through the binary — and each must reach the stated outcome: "ok", "problems" (a verify
//! report listing problems) or the `coffer::Error` variant. A restore that succeeds is
//! compared with the manifest's tree, and the fixed keys of the must-pass vectors are
//! checked against the archives independently of coffer's decoders (HKDF, header MAC,
//! commitment).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use coffer::archive::Archive;
use coffer::backup::Quiet;
use coffer::recipient::RsaIdentity;
use coffer::restore::RestoreOptions;
use coffer::signing::VerifyingKey;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::common::{TestDir, coffer_cmd};

/// Every vector fixtures/v2/ must hold (frozen: `frozen_vectors` pins their bytes, this list
/// that none disappears or goes unchecked).
const COMMITTED: &[&str] = &[
    "basic",
    "block-table-tag-mismatch",
    "chain-cycle",
    "chain-extent-outside-parent",
    "chain-lookalike-parent",
    "chain-missing-parent",
    "chain-self-parent",
    "chain2",
    "chain3",
    "chunk-last-flag-missing",
    "chunk-table-outside",
    "chunk-tag-not-recorded",
    "chunks-swapped",
    "content-hash-mismatch",
    "dotdot-bytes",
    "duplicate-path",
    "entries-out-of-order",
    "extents-short",
    "file-through-symlink",
    "future-version",
    "hardlink-forward",
    "hardlink-missing",
    "hardlink-to-folder",
    "multichunk",
    "public-key-forgery",
    "recipient-forged",
    "signature-flipped",
    "signature-section-missing",
    "signed",
    "signed-chain",
    "signed-other-key",
    "signed-rekeyed",
    "signed-stanza-swapped",
    "sparse-overlap",
    "unsigned-signer-required",
    "xattr-huge",
];

/// The commands a manifest may state an outcome for.
const COMMANDS: &[&str] = &[
    "restore",
    "restore_selected",
    "restore_signer",
    "verify",
    "verify_signer",
    "verify_keyed",
    "verify_keyed_signer",
    "list",
    "info",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v2")
}

// ---------------------------------------------------------------------------------------
// The manifest: `key = "string"` / `key = integer` lines, `[table]`, `[[entry]]`

type Table = BTreeMap<String, String>;

struct Manifest {
    top: Table,
    tables: BTreeMap<String, Table>,
    entries: Vec<Table>,
}

fn parse(text: &str) -> Manifest {
    let mut m = Manifest {
        top: Table::new(),
        tables: BTreeMap::new(),
        entries: Vec::new(),
    };
    enum At {
        Top,
        Table(String),
        Entry,
    }
    let mut at = At::Top;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[entry]]" {
            m.entries.push(Table::new());
            at = At::Entry;
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            m.tables.insert(name.to_string(), Table::new());
            at = At::Table(name.to_string());
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("bad line {line}"));
        let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(s) => s.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => match v.strip_prefix("0o") {
                Some(o) => i64::from_str_radix(o, 8).unwrap().to_string(),
                None => v.to_string(),
            },
        };
        let table = match &at {
            At::Top => &mut m.top,
            At::Table(n) => m.tables.get_mut(n).unwrap(),
            At::Entry => m.entries.last_mut().unwrap(),
        };
        assert!(table.insert(k.to_string(), v).is_none(), "key {k} twice");
    }
    m
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Vector {
    name: String,
    dir: PathBuf,
    m: Manifest,
}

impl Vector {
    fn load(name: &str) -> Vector {
        let dir = root().join(name);
        let text = fs::read_to_string(dir.join("expected.toml"))
            .unwrap_or_else(|e| panic!("{name}/expected.toml: {e}"));
        Vector {
            name: name.to_string(),
            dir,
            m: parse(&text),
        }
    }

    fn file(&self, key: &str) -> PathBuf {
        let rel = &self.m.top[key];
        let p = self.dir.join(rel);
        // git does not keep 0600; coffer warns about a private key others can read.
        if key == "identity" {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600));
        }
        p
    }

    fn archive(&self) -> PathBuf {
        self.file("archive")
    }

    fn identity(&self) -> RsaIdentity {
        RsaIdentity::load(&self.file("identity")).unwrap()
    }

    fn signers(&self) -> Vec<VerifyingKey> {
        vec![VerifyingKey::load(&self.file("signer")).unwrap()]
    }
}

// ---------------------------------------------------------------------------------------
// Running the commands

/// The variant name of an error (`Corrupt`, `MissingParent`, ...).
fn variant(e: &coffer::Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}

fn outcome(r: coffer::Result<bool>) -> String {
    match r {
        Ok(true) => "ok".into(),
        Ok(false) => "problems".into(),
        Err(e) => variant(&e),
    }
}

/// Run `command` on `v`; returns the outcome and, for a restore that succeeded, its target.
fn run(v: &Vector, command: &str, t: &TestDir) -> (String, Option<PathBuf>) {
    let archive = v.archive();
    let target = t.join(command);
    let keyless = |f: &dyn Fn(&Archive) -> coffer::Result<bool>| {
        outcome(Archive::open(&archive).and_then(|a| f(&a)))
    };
    let res = match command {
        "restore" | "restore_selected" | "restore_signer" => {
            let id = v.identity();
            let opts = RestoreOptions {
                target: target.clone(),
                patterns: match command {
                    "restore_selected" => vec![v.m.top["select"].clone()],
                    _ => Vec::new(),
                },
                signers: match command {
                    "restore_signer" => v.signers(),
                    _ => Vec::new(),
                },
                // Owners are part of the tree (1000:1000); applied only as root.
                preserve_owner: root_is_root(),
                ..Default::default()
            };
            outcome(Archive::open(&archive).and_then(|a| {
                let u = a.unlock(&id)?;
                coffer::restore_chain(&a, &u, &id, &opts, &Quiet).map(|_| true)
            }))
        }
        "verify" => keyless(&|a| a.verify_checksums(&Quiet).map(|r| r.is_ok())),
        "verify_signer" => keyless(&|a| {
            a.verify_signature_keyless(&v.signers(), &Quiet)
                .map(|r| r.is_ok())
        }),
        "verify_keyed" | "verify_keyed_signer" => {
            let id = v.identity();
            let signed = command == "verify_keyed_signer";
            keyless(&|a| {
                let signers = v.signers();
                if signed {
                    a.allowed_signer(&signers)?;
                }
                let u = a.unlock(&id)?;
                if signed {
                    u.verify_signature(a, &signers)?;
                }
                // An incremental with its parents (v2.10.3); a full as verify_blocks.
                let pinned = if signed { &signers[..] } else { &[] };
                a.verify_chain(&u, &id, None, pinned, &Quiet)
                    .map(|r| r.is_ok())
            })
        }
        "list" => {
            let id = v.identity();
            keyless(&|a| {
                let u = a.unlock(&id)?;
                u.for_each_entry(a, |_, _| Ok(()))?;
                Ok(true)
            })
        }
        "info" => return (info(v), None),
        other => panic!("unknown command {other}"),
    };
    let done = (res == "ok" && command.starts_with("restore")).then_some(target);
    (res, done)
}

/// `coffer info` through the binary: "ok" (exit 0, with the stated parent status and
/// signer fingerprint shown) or the error class its message names.
fn info(v: &Vector) -> String {
    let out = coffer_cmd().arg("info").arg(v.archive()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let classes = [
            ("corrupt archive", "Corrupt"),
            ("authentication failed", "Tampered"),
            ("is not supported", "UnsupportedVersion"),
            ("truncated", "Truncated"),
        ];
        return classes
            .iter()
            .find(|(needle, _)| stderr.contains(needle))
            .map_or_else(
                || format!("unknown error: {stderr}"),
                |(_, c)| c.to_string(),
            );
    }
    if let Some(p) = v.m.top.get("info_parents") {
        let line = format!("): {p}");
        if !stdout.contains(&line) {
            return format!("ok, but no parent line with `{line}`:\n{stdout}");
        }
    }
    if let Some(f) = v.m.top.get("signer_fingerprint")
        && !stdout.contains(f.as_str())
    {
        return format!("ok, but the signer {f} is not shown:\n{stdout}");
    }
    "ok".into()
}

// ---------------------------------------------------------------------------------------
// Comparing a restored tree with the manifest

fn root_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every entry under `dir`, `dir` itself not counted.
fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            1 + if fs::symlink_metadata(&p).unwrap().is_dir() {
                count_entries(&p)
            } else {
                0
            }
        })
        .sum()
}

/// Differences between the restored `target` and the manifest's entries (all of them, or
/// for a selective restore only those under `select` and their folders), and for a whole
/// restore the number of entries when the manifest lists only some (`entry_count`).
fn compare(v: &Vector, target: &Path, select: Option<&str>) -> Vec<String> {
    let mut diffs = Vec::new();
    let root = root_is_root();
    if let Some(n) = v.m.top.get("entry_count").filter(|_| select.is_none()) {
        let got = count_entries(target);
        if got.to_string() != *n {
            diffs.push(format!("{got} entries restored, expected {n}"));
        }
    }
    for e in &v.m.entries {
        let rel = unhex(&e["path_hex"]);
        if let Some(s) = select {
            let s = s.as_bytes();
            let under = |a: &[u8], b: &[u8]| a.starts_with(&[b, b"/"].concat());
            let wanted = rel == s || under(s, &rel) || under(&rel, s);
            if !wanted {
                if fs::symlink_metadata(target.join(std::ffi::OsStr::from_bytes(&rel))).is_ok() {
                    diffs.push(format!("{}: restored but not selected", e["path"]));
                }
                continue;
            }
        }
        let p = target.join(std::ffi::OsStr::from_bytes(&rel));
        let name = &e["path"];
        let Ok(m) = fs::symlink_metadata(&p) else {
            diffs.push(format!("{name}: missing"));
            continue;
        };
        let ft = m.file_type();
        let kind = e["kind"].as_str();
        let ok_kind = match kind {
            "dir" => ft.is_dir(),
            "file" | "hardlink" => ft.is_file(),
            "symlink" => ft.is_symlink(),
            "fifo" => ft.is_fifo(),
            "char" => ft.is_char_device(),
            _ => false,
        };
        if !ok_kind {
            // Devices are made only as root (FORMAT.md v2.12 question 5).
            if kind != "char" || root {
                diffs.push(format!("{name}: kind {ft:?}, expected {kind}"));
            }
            continue;
        }
        if kind == "hardlink" {
            let first = target.join(std::ffi::OsStr::from_bytes(&unhex(&e["hardlink_hex"])));
            match fs::symlink_metadata(&first) {
                Ok(f) if f.ino() == m.ino() => {}
                // A selected link without its target is a file of its own (v2.8.2).
                Ok(_) | Err(_) if select.is_some() => {}
                _ => diffs.push(format!("{name}: not a hard link to {}", first.display())),
            }
            continue;
        }
        let want = |k: &str| e.get(k).map(|s| s.parse::<i64>().unwrap());
        if let Some(mode) = want("mode")
            && i64::from(m.mode() & 0o7777) != mode
        {
            diffs.push(format!(
                "{name}: mode {:o}, expected {mode:o}",
                m.mode() & 0o7777
            ));
        }
        if want("mtime").is_some_and(|t| t != m.mtime()) {
            diffs.push(format!("{name}: mtime {}", m.mtime()));
        }
        if root && want("uid").is_some_and(|u| u != i64::from(m.uid())) {
            diffs.push(format!("{name}: uid {}", m.uid()));
        }
        if let Some(size) = want("size")
            && size != m.size() as i64
        {
            diffs.push(format!("{name}: size {}, expected {size}", m.size()));
        }
        // The forged file of `recipient-forged` holds the recipient's bytes (check_forged).
        let forged = v.m.top.get("forged_path") == Some(name);
        if let Some(want) = e.get("sha256").filter(|_| !forged) {
            let got = hex(&Sha256::digest(fs::read(&p).unwrap()));
            if got != *want {
                diffs.push(format!("{name}: content sha256 {got}, expected {want}"));
            }
        }
        if let Some(t) = e.get("link_target") {
            let got = fs::read_link(&p).unwrap();
            if got.as_os_str().to_string_lossy() != *t {
                diffs.push(format!("{name}: link target {}", got.display()));
            }
        }
        if kind == "char" {
            let dev = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
            let want = (
                want("rdev_major").unwrap() as u32,
                want("rdev_minor").unwrap() as u32,
            );
            if dev != want {
                diffs.push(format!("{name}: rdev {dev:?}, expected {want:?}"));
            }
        }
        if let Some(c) = e.get("xattr_user_comment") {
            let mut buf = [0u8; 256];
            match rustix::fs::lgetxattr(&p, "user.comment", &mut buf) {
                Ok(n) if buf[..n] == *c.as_bytes() => {}
                other => diffs.push(format!("{name}: user.comment {other:?}")),
            }
        }
    }
    diffs
}

/// For `recipient-forged`: the forged file holds the recipient's bytes, not the signer's.
fn check_forged(v: &Vector, target: &Path) -> Vec<String> {
    let Some(path) = v.m.top.get("forged_path") else {
        return Vec::new();
    };
    let got = hex(&Sha256::digest(fs::read(target.join(path)).unwrap()));
    if got == v.m.top["forged_sha256"] {
        Vec::new()
    } else {
        vec![format!("{path}: sha256 {got}, expected the forged content")]
    }
}

// ---------------------------------------------------------------------------------------
// Independent checks of the fixed keys

type HmacSha256 = hmac::Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hkdf(key: &[u8], salt: &[u8], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(salt), key)
        .expand(info.as_bytes(), &mut out)
        .unwrap();
    out
}

/// The archive `file` (or the vector's own) under the `[table]` keys: its header's session
/// id, its header MAC under `coffer/v2/header-mac`, and the commitment (v2.4).
fn check_keys(v: &Vector, table: &str) -> Vec<String> {
    let Some(s) = v.m.tables.get(table) else {
        return Vec::new();
    };
    let key = unhex(&s["session_key"]);
    let id = unhex(&s["session_id"]);
    let file = s.get("file").map_or_else(|| v.archive(), |f| v.dir.join(f));
    let bytes = fs::read(&file).unwrap();
    let mut diffs = Vec::new();
    let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    if bytes[8..10] != [2, 0] || bytes[14..30] != id[..] {
        diffs.push(format!(
            "{}: not v2 with session id {}",
            file.display(),
            s["session_id"]
        ));
    }
    let mac = hmac(
        &hkdf(&key, &id, "coffer/v2/header-mac"),
        &[b"coffer/v2/header", &bytes[..14 + body_len]],
    );
    if bytes[14 + body_len..46 + body_len] != mac {
        diffs.push(format!("{}: header MAC differs", file.display()));
    }
    let commitment = hmac(
        &hkdf(&key, &id, "coffer/v2/chain-commit"),
        &[b"coffer/v2/commitment", &id],
    );
    if hex(&commitment) != s["commitment"] {
        diffs.push(format!("{table}: commitment {}", hex(&commitment)));
    }
    diffs
}

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn committed_v2_vectors_are_all_present() {
    let mut found: Vec<String> = fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| root().join(n).join("expected.toml").exists())
        .collect();
    found.sort();
    let mut want: Vec<String> = COMMITTED.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "fixtures/v2 and COMMITTED differ");
}

#[test]
fn every_v2_vector_has_its_stated_outcome_per_command() {
    let mut failures = Vec::new();
    for name in COMMITTED {
        let v = Vector::load(name);
        let t = TestDir::new();
        let mut stated = 0;
        for &command in COMMANDS {
            let Some(want) = v.m.top.get(command) else {
                continue;
            };
            stated += 1;
            let (got, restored) = run(&v, command, &t);
            if got != *want {
                failures.push(format!("{}: {command}: got {got}, expected {want}", v.name));
                continue;
            }
            if let Some(target) = restored {
                let select = (command == "restore_selected").then(|| v.m.top["select"].as_str());
                let mut diffs = compare(&v, &target, select);
                diffs.extend(check_forged(&v, &target));
                for d in diffs {
                    failures.push(format!("{}: {command}: {d}", v.name));
                }
            }
        }
        assert!(stated > 0, "{name}: no outcome stated");
        for table in ["session", "session_b", "session_c"] {
            for d in check_keys(&v, table) {
                failures.push(format!("{}: {d}", v.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn v2_chain_vectors_restore_with_the_parents_they_name() {
    // chain2's B needs A (v2.8.5): the restore reports reading A.
    let v = Vector::load("chain2");
    let t = TestDir::new();
    let id = v.identity();
    let a = Archive::open(&v.archive()).unwrap();
    let u = a.unlock(&id).unwrap();
    let opts = RestoreOptions {
        target: t.join("out"),
        ..Default::default()
    };
    let report = coffer::restore_chain(&a, &u, &id, &opts, &Quiet).unwrap();
    let parents: Vec<&str> = report
        .parents_read
        .iter()
        .map(|p| p.session_id.as_str())
        .collect();
    assert_eq!(parents, ["a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]);
    // chain-missing-parent names A's id and the files that need it.
    let v = Vector::load("chain-missing-parent");
    let a = Archive::open(&v.archive()).unwrap();
    let u = a.unlock(&id).unwrap();
    let opts = RestoreOptions {
        target: t.join("missing"),
        ..Default::default()
    };
    let e = coffer::restore_chain(&a, &u, &id, &opts, &Quiet).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&v.m.top["missing"]), "{text}");
    assert!(text.contains(&v.m.top["files_needing"]), "{text}");
}

#[test]
fn v2_multichunk_selective_restore_reads_only_the_chunks_it_needs() {
    // v2.6.2: the chunks holding the selected subtree, plus those holding its ancestors and
    // its hard links' targets; `select_index_bytes_read` counts the directory, the block
    // table and each of those chunks once (the reader keeps them for its second pass).
    let v = Vector::load("multichunk");
    let t = TestDir::new();
    let id = v.identity();
    let a = Archive::open(&v.archive()).unwrap();
    let restore = |to: &str, patterns: Vec<String>| {
        let u = a.unlock(&id).unwrap();
        let opts = RestoreOptions {
            target: t.join(to),
            patterns,
            ..Default::default()
        };
        coffer::restore_chain(&a, &u, &id, &opts, &Quiet).unwrap()
    };
    let int = |k: &str| v.m.top[k].parse::<u64>().unwrap();
    let frames: Vec<u64> = v.m.top["chunk_frame_lens"]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(frames.len() as u64, int("index_chunks"));
    assert!(frames.len() >= 3, "{frames:?}");
    let selected = restore("one", vec![v.m.top["select"].clone()]);
    let needed: Vec<usize> = v.m.top["select_chunks"]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        needed,
        [0, frames.len() - 1],
        "ancestor `t` and the link's target: chunk 0"
    );
    let chunks: u64 = needed.iter().map(|&k| frames[k]).sum();
    let expected = int("directory_len") + int("block_table_len") + chunks;
    assert_eq!(int("select_index_bytes_read"), expected);
    assert_eq!(
        selected.index_bytes_read, expected,
        "chunks between 0 and the last were read"
    );
    // The link's target is not selected: the link is restored as a file of its own, with
    // the target's data (chunk 0 read for it).
    assert_eq!((selected.files, selected.hardlinks), (2, 0), "{selected:?}");
    assert_eq!(
        fs::read(t.join("one/t/zz/link-to-first.txt")).unwrap(),
        b"first name of a linked inode\n"
    );
    // A whole restore reads every chunk.
    let whole = restore("all", Vec::new());
    assert!(whole.index_bytes_read >= int("directory_len") + frames.iter().sum::<u64>());
    assert_eq!(count_entries(&t.join("all")) as u64, int("entry_count"));
}
