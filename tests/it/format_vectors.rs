//! Format-v1 test vectors (fixtures/v1/*/, see fixtures/v1/README.md and docs/FORMAT.md).
//!
//! Every vector folder holds an archive and an `expected.toml` that states the outcome of
//! opening and restoring it. This test fails when any outcome changes, when a committed
//! vector disappears, and when the bytes of a fixed-key vector stop matching the
//! specification: those are decoded a second time here by an independent reader written
//! from docs/FORMAT.md (hand-rolled postcard, HKDF, HMAC, AES-CBC, RSA-OAEP), not by
//! coffer's own decoders.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer::archive::Archive;
use coffer::backup::Quiet;
use coffer::format::header::RawHeader;
use coffer::format::index::Index;
use coffer::keys::{SessionKey, SubKeys};
use coffer::recipient::{Identity, RsaIdentity};
use coffer::restore::{RestoreOptions, restore};
use coffer::seal::header_mac_ok;
use sha2::{Digest, Sha256};

/// Vectors are kept forever: each of these must exist and keep its outcome. New vectors
/// may be added; none is ever removed or regenerated.
const COMMITTED: &[&str] = &[
    "basic",
    "multiblock",
    "backup-api",
    "not-an-archive",
    "future-version",
    "truncated-half",
    "missing-trailer",
    "header-bitrot",
    "block-bitrot",
    "header-mac-tampered",
    "block-tampered",
    "index-tampered",
    "wrong-identity",
    "frames-reordered",
    "last-flag-missing",
    "signature-present",
    "unsafe-path",
    "file-through-symlink",
    "block-crc-mismatch-tag-ok",
    "index-crc-mismatch-tag-ok",
];

fn vectors_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

/// Every vector folder (a folder of fixtures/v1 with an expected.toml).
fn vector_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(vectors_root())
        .expect("fixtures/v1 exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in &dirs {
        assert!(
            d.join("expected.toml").is_file(),
            "{}: a vector folder without expected.toml",
            d.display()
        );
    }
    dirs
}

// ---------------------------------------------------------------------------------------
// A small TOML subset: `key = value` (strings, integers incl. 0o/0x, booleans, one-line
// arrays), `[table]`, `[[array-of-tables]]`, `#` comment lines.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i128),
    Bool(bool),
    Arr(Vec<Val>),
}

type Table = BTreeMap<String, Val>;

#[derive(Debug, Default)]
struct Manifest {
    top: Table,
    tables: BTreeMap<String, Table>,
    arrays: BTreeMap<String, Vec<Table>>,
}

fn parse_value(s: &str) -> (Val, &str) {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return (Val::Str(out), &rest[i + 1..]),
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    other => panic!("unsupported escape {other:?} in {s:?}"),
                },
                c => out.push(c),
            }
        }
        panic!("unterminated string: {s:?}");
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(']') {
                return (Val::Arr(items), r);
            }
            let (v, r) = parse_value(rest);
            items.push(v);
            rest = r.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let end = s.find([',', ']']).unwrap_or(s.len());
    let (tok, rest) = (s[..end].trim(), &s[end..]);
    let v = match tok {
        "true" => Val::Bool(true),
        "false" => Val::Bool(false),
        _ => {
            let t = tok.replace('_', "");
            let (neg, t) = match t.strip_prefix('-') {
                Some(t) => (true, t.to_string()),
                None => (false, t),
            };
            let n = if let Some(o) = t.strip_prefix("0o") {
                i128::from_str_radix(o, 8)
            } else if let Some(x) = t.strip_prefix("0x") {
                i128::from_str_radix(x, 16)
            } else {
                t.parse::<i128>()
            }
            .unwrap_or_else(|_| panic!("not a value: {tok:?}"));
            Val::Int(if neg { -n } else { n })
        }
    };
    (v, rest)
}

fn parse_manifest(text: &str) -> Manifest {
    enum At {
        Top,
        Table(String),
        Array(String),
    }
    let mut m = Manifest::default();
    let mut at = At::Top;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            m.arrays
                .entry(name.trim().into())
                .or_default()
                .push(Table::new());
            at = At::Array(name.trim().into());
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            m.tables.entry(name.trim().into()).or_default();
            at = At::Table(name.trim().into());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not `key = value`: {raw:?}", n + 1));
        let (val, rest) = parse_value(value);
        assert!(
            rest.trim().is_empty(),
            "line {}: trailing text {rest:?}",
            n + 1
        );
        let table = match &at {
            At::Top => &mut m.top,
            At::Table(t) => m.tables.get_mut(t).unwrap(),
            At::Array(a) => m.arrays.get_mut(a).unwrap().last_mut().unwrap(),
        };
        table.insert(key.trim().into(), val);
    }
    m
}

fn get_str<'a>(t: &'a Table, key: &str) -> Option<&'a str> {
    match t.get(key) {
        Some(Val::Str(s)) => Some(s),
        None => None,
        Some(v) => panic!("{key}: expected a string, found {v:?}"),
    }
}

fn get_int(t: &Table, key: &str) -> Option<i128> {
    match t.get(key) {
        Some(Val::Int(n)) => Some(*n),
        None => None,
        Some(v) => panic!("{key}: expected an integer, found {v:?}"),
    }
}

fn req_str<'a>(t: &'a Table, key: &str) -> &'a str {
    get_str(t, key).unwrap_or_else(|| panic!("missing {key}"))
}

fn req_int(t: &Table, key: &str) -> i128 {
    get_int(t, key).unwrap_or_else(|| panic!("missing {key}"))
}

// ---------------------------------------------------------------------------------------
// Outcomes through the library: open, unlock, restore
// ---------------------------------------------------------------------------------------

/// The variant name of a coffer error (`Tampered { .. }` -> "Tampered").
fn variant_name(e: &coffer::Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

struct Vector {
    name: String,
    dir: PathBuf,
    manifest: Manifest,
}

impl Vector {
    fn load(dir: &Path) -> Vector {
        let text = fs::read_to_string(dir.join("expected.toml")).unwrap();
        Vector {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_path_buf(),
            manifest: parse_manifest(&text),
        }
    }

    fn archive(&self) -> PathBuf {
        self.dir
            .join(get_str(&self.manifest.top, "archive").unwrap_or("archive.coffer"))
    }

    fn identity(&self) -> PathBuf {
        self.dir
            .join(get_str(&self.manifest.top, "identity").unwrap_or("identity.pem"))
    }

    fn outcome(&self) -> &str {
        req_str(&self.manifest.top, "outcome")
    }

    fn entries(&self) -> &[Table] {
        self.manifest
            .arrays
            .get("entry")
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn session_key(&self) -> Option<[u8; 32]> {
        let p = self.dir.join("session_key.hex");
        p.exists().then(|| {
            unhex(&fs::read_to_string(p).unwrap())
                .try_into()
                .expect("32-byte session key")
        })
    }
}

/// Open, unlock and restore into `target`.
fn open_and_restore(v: &Vector, target: &Path) -> coffer::Result<()> {
    let archive = Archive::open(&v.archive())?;
    let identity = RsaIdentity::load(&v.identity())?;
    let unlocked = archive.unlock(&identity)?;
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        ..Default::default()
    };
    restore(&archive, &unlocked, &opts, &Quiet)?;
    Ok(())
}

/// Every path below `root` (not following links), relative, `/`-separated.
fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, fs::Metadata>) {
    let Ok(rd) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let m = fs::symlink_metadata(root.join(&r)).unwrap();
        let is_dir = m.is_dir();
        out.insert(r.clone(), m);
        if is_dir {
            walk(root, &r, out);
        }
    }
}

/// Compare a restored tree with the manifest's entries; returns the differences.
fn compare_tree(v: &Vector, target: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found = BTreeMap::new();
    walk(target, "", &mut found);
    let listed: BTreeSet<&str> = v.entries().iter().map(|e| req_str(e, "path")).collect();
    for p in found.keys() {
        if !listed.contains(p.as_str()) {
            problems.push(format!("restored {p:?}, which the manifest does not list"));
        }
    }
    for e in v.entries() {
        let path = req_str(e, "path");
        let Some(m) = found.get(path) else {
            problems.push(format!("{path}: not restored"));
            continue;
        };
        let dest = target.join(path);
        let kind = req_str(e, "kind");
        let got_kind = if m.file_type().is_symlink() {
            "symlink"
        } else if m.is_dir() {
            "dir"
        } else if m.is_file() {
            "file"
        } else {
            "other"
        };
        if got_kind != kind {
            problems.push(format!("{path}: kind {got_kind}, expected {kind}"));
            continue;
        }
        // Restore cannot set a symlink's own mode; Linux always shows 0777.
        if kind != "symlink" {
            let mode = (m.permissions().mode() & 0o7777) as i128;
            if mode != req_int(e, "mode") {
                problems.push(format!(
                    "{path}: mode {mode:o}, expected {:o}",
                    req_int(e, "mode")
                ));
            }
        }
        let mtime = (m.mtime() as i128, m.mtime_nsec() as i128);
        let want = (req_int(e, "mtime"), req_int(e, "mtime_nsec"));
        if mtime != want {
            problems.push(format!("{path}: mtime {mtime:?}, expected {want:?}"));
        }
        match kind {
            "file" => {
                let data = fs::read(&dest).unwrap();
                if data.len() as i128 != req_int(e, "size") {
                    problems.push(format!("{path}: size {}", data.len()));
                }
                if hex(&Sha256::digest(&data)) != req_str(e, "sha256") {
                    problems.push(format!("{path}: content sha256 differs"));
                }
            }
            "symlink" => {
                let t = fs::read_link(&dest).unwrap();
                if t.to_str() != get_str(e, "link_target") {
                    problems.push(format!("{path}: link target {t:?}"));
                }
            }
            _ => {}
        }
    }
    problems
}

/// Check one vector's stated outcome; returns what is wrong with it.
fn check_outcome(v: &Vector) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let result = open_and_restore(v, &target);
    let mut problems = Vec::new();
    match (v.outcome(), result) {
        ("ok", Ok(())) => problems.extend(compare_tree(v, &target)),
        ("ok", Err(e)) => problems.push(format!("expected ok, got {}: {e}", variant_name(&e))),
        ("error", Ok(())) => problems.push(format!(
            "expected error {}, but the archive restored",
            req_str(&v.manifest.top, "error")
        )),
        ("error", Err(e)) => {
            // A vector made for v1-only readers may state what a reader of v1 and v2
            // reports instead (a "future" version 2 is a v2 header now).
            let want = get_str(&v.manifest.top, "error_v1_v2_reader")
                .unwrap_or_else(|| req_str(&v.manifest.top, "error"));
            if variant_name(&e) != want {
                problems.push(format!(
                    "expected error {want}, got {}: {e}",
                    variant_name(&e)
                ));
            }
            // Nothing beside the target, and no half-written file left in it.
            for entry in fs::read_dir(tmp.path()).unwrap() {
                let name = entry.unwrap().file_name();
                if name != "target" {
                    problems.push(format!("{name:?} written outside the restore target"));
                }
            }
            let mut found = BTreeMap::new();
            walk(&target, "", &mut found);
            let temporary = |p: &str| {
                let name = p.rsplit('/').next().unwrap_or(p);
                name.ends_with(".partial")
                    || (name.starts_with(".coffer-") && name.ends_with(".tmp"))
            };
            for p in found.keys().filter(|p| temporary(p)) {
                problems.push(format!("temporary file {p} left behind"));
            }
        }
        (other, _) => problems.push(format!("unknown outcome {other:?}")),
    }
    problems
}

#[test]
fn committed_vectors_are_all_present() {
    let present: BTreeSet<String> = vector_dirs()
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in COMMITTED {
        assert!(
            present.contains(*name),
            "vector {name} is gone: vectors are kept forever"
        );
    }
}

#[test]
fn every_vector_has_its_stated_outcome() {
    let mut failures = Vec::new();
    for dir in vector_dirs() {
        let v = Vector::load(&dir);
        for p in check_outcome(&v) {
            failures.push(format!("{}: {p}", v.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Session key, key hierarchy and an independent reader, for fixed-key ok vectors
// ---------------------------------------------------------------------------------------

#[test]
fn fixed_key_vectors_follow_the_documented_key_hierarchy() {
    let mut checked = 0;
    for dir in vector_dirs() {
        let v = Vector::load(&dir);
        let Some(session_key) = v.session_key() else {
            continue;
        };
        if v.outcome() != "ok" {
            continue;
        }
        let archive = Archive::open(&v.archive()).unwrap();
        let raw = archive.v1_raw_header().unwrap();
        let session_id = raw.body.session_id;

        // The identity's stanza unwraps to a key that verifies the header MAC, and so does
        // the key in session_key.hex: both derive the same sub-keys.
        let identity = RsaIdentity::load(&v.identity()).unwrap();
        let stanza = raw
            .body
            .recipients
            .iter()
            .find(|s| s.fingerprint == identity.fingerprint().0)
            .expect("a stanza for the vector's identity");
        let unwrapped = identity
            .unwrap_stanza(stanza)
            .unwrap()
            .expect("the stanza is addressed to this identity");
        assert!(
            header_mac_ok(raw, &SubKeys::derive(&unwrapped, &session_id)),
            "{}: unwrapped key does not verify the header MAC",
            v.name
        );
        assert!(
            header_mac_ok(
                raw,
                &SubKeys::derive(&SessionKey::from_bytes(session_key), &session_id)
            ),
            "{}: session_key.hex does not verify the header MAC",
            v.name
        );
        let wrong = SessionKey::from_bytes([0x55; 32]);
        assert!(!header_mac_ok(raw, &SubKeys::derive(&wrong, &session_id)));

        let bytes = fs::read(v.archive()).unwrap();
        let problems = independent_read(&v, &bytes, &session_key, raw);
        assert!(
            problems.is_empty(),
            "{}: the archive does not match docs/FORMAT.md:\n{}",
            v.name,
            problems.join("\n")
        );
        checked += 1;
    }
    assert!(checked >= 2, "the fixed-key ok vectors were not found");
}

/// A cursor over postcard bytes, decoded by hand as docs/FORMAT.md describes.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.pos + n <= self.b.len(), "postcard data cut short");
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    /// LEB128, at most `max` bytes (3 for u16, 5 for u32, 10 for u64).
    fn varint(&mut self, max: usize) -> u64 {
        let mut out = 0u64;
        for i in 0..max {
            let b = self.u8();
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return out;
            }
        }
        panic!("varint longer than {max} bytes");
    }
    fn u16(&mut self) -> u16 {
        self.varint(3).try_into().unwrap()
    }
    fn u32(&mut self) -> u32 {
        self.varint(5).try_into().unwrap()
    }
    fn u64(&mut self) -> u64 {
        self.varint(10)
    }
    fn i64(&mut self) -> i64 {
        let z = self.u64();
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u64() as usize;
        self.take(n)
    }
    fn string(&mut self) -> String {
        String::from_utf8(self.bytes().to_vec()).expect("UTF-8")
    }
    fn option(&mut self) -> bool {
        match self.u8() {
            0 => false,
            1 => true,
            t => panic!("bad Option tag {t}"),
        }
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().unwrap()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn aes(key: &[u8]) -> aes::Aes256 {
    use cipher::KeyInit;
    aes::Aes256::new_from_slice(key).unwrap()
}

/// AES-256-CBC decryption without padding removal, from the block primitive.
fn cbc_decrypt(key: &[u8], iv: &[u8], ct: &[u8]) -> Vec<u8> {
    use cipher::BlockCipherDecrypt;
    assert!(ct.len().is_multiple_of(16));
    let c = aes(key);
    let mut prev: [u8; 16] = iv.try_into().unwrap();
    let mut out = Vec::with_capacity(ct.len());
    for chunk in ct.chunks(16) {
        let mut b = cipher::Array::from(<[u8; 16]>::try_from(chunk).unwrap());
        c.decrypt_block(&mut b);
        out.extend(b.iter().zip(prev).map(|(x, y)| x ^ y));
        prev = chunk.try_into().unwrap();
    }
    out
}

fn pkcs7_unpad(mut b: Vec<u8>) -> Vec<u8> {
    let pad = *b.last().unwrap() as usize;
    assert!((1..=16).contains(&pad), "bad padding");
    assert!(b[b.len() - pad..].iter().all(|&x| x as usize == pad));
    b.truncate(b.len() - pad);
    b
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64"),
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Decode the whole archive from docs/FORMAT.md alone and compare with the manifest.
fn independent_read(v: &Vector, b: &[u8], session_key: &[u8; 32], raw: &RawHeader) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    let m = &v.manifest;

    // Header prefix, body, MAC, CRC.
    check(&b[..8] == b"\x89COFFER\n", "magic".into());
    check(b[8..10] == [1, 0], "version".into());
    let body_len = u32::from_le_bytes(b[10..14].try_into().unwrap()) as usize;
    let hl = 14 + body_len + 36;
    check(
        crc32c::crc32c(&b[..hl - 4]) == u32::from_le_bytes(b[hl - 4..hl].try_into().unwrap()),
        "header CRC32C".into(),
    );
    let mut c = Cur {
        b: &b[14..14 + body_len],
        pos: 0,
    };
    let session_id: [u8; 16] = c.array();
    let created_at = c.i64();
    let job_name = c.string();
    let suite = c.u8();
    let block_size = c.u32();
    let segment_size = c.u32();
    let compression = c.u8();
    let n_recipients = c.u64();
    let mut stanzas = Vec::new();
    for _ in 0..n_recipients {
        let scheme = c.u16();
        let fp: [u8; 32] = c.array();
        let label = c.string();
        let wrapped = c.bytes().to_vec();
        stanzas.push((scheme, fp, label, wrapped));
    }
    check(!c.option(), "signature slot must be None".into());
    check(c.pos == body_len, "header body has trailing bytes".into());
    // Field order agrees with coffer's own decoder.
    let body = &raw.body;
    check(body.session_id == session_id, "session_id".into());
    check(body.created_at == created_at, "created_at".into());
    check(body.job_name == job_name, "job_name".into());
    check(
        (
            body.suite,
            body.block_size,
            body.segment_size,
            body.compression,
        ) == (suite, block_size, segment_size, compression),
        "suite/block_size/segment_size/compression".into(),
    );
    check(body.recipients.len() == stanzas.len(), "recipients".into());
    for (s, (scheme, fp, label, wrapped)) in body.recipients.iter().zip(&stanzas) {
        check(
            s.scheme == *scheme && s.fingerprint == *fp && s.label == *label,
            "stanza fields".into(),
        );
        check(s.wrapped_key == *wrapped, "wrapped key".into());
    }
    if let Some(h) = m.tables.get("header") {
        check(
            req_int(h, "created_at") == created_at as i128,
            "manifest created_at".into(),
        );
        check(
            req_str(h, "job_name") == job_name,
            "manifest job_name".into(),
        );
        check(
            req_int(h, "block_size") == block_size as i128,
            "manifest block_size".into(),
        );
        check(
            req_int(h, "segment_size") == segment_size as i128,
            "manifest segment_size".into(),
        );
        check(
            req_int(h, "compression") == compression as i128,
            "manifest compression".into(),
        );
    }

    // Key hierarchy: HKDF-SHA256(salt = session id, ikm = session key, info = label).
    let hk = hkdf::Hkdf::<Sha256>::new(Some(&session_id), session_key);
    let sub = |info: &str| {
        let mut k = [0u8; 32];
        hk.expand(info.as_bytes(), &mut k).unwrap();
        k
    };
    let data_enc = sub("coffer/v1/data-enc");
    let data_iv = sub("coffer/v1/data-iv");
    let data_mac = sub("coffer/v1/data-mac");
    let meta_enc = sub("coffer/v1/meta-enc");
    let meta_mac = sub("coffer/v1/meta-mac");
    let header_mac = sub("coffer/v1/header-mac");
    let session = m.tables.get("session").expect("[session] table");
    check(
        req_str(session, "session_key") == hex(session_key),
        "manifest session_key vs session_key.hex".into(),
    );
    check(
        req_str(session, "session_id") == hex(&session_id),
        "manifest session_id".into(),
    );
    for (name, key) in [
        ("data_enc", data_enc),
        ("data_iv", data_iv),
        ("data_mac", data_mac),
        ("meta_enc", meta_enc),
        ("meta_mac", meta_mac),
        ("header_mac", header_mac),
    ] {
        check(
            req_str(session, name) == hex(&key),
            format!("sub-key {name}"),
        );
    }
    let tag = hmac_sha256(&header_mac, &[b"coffer/v1/header", &b[..hl - 36]]);
    check(tag[..] == b[hl - 36..hl - 4], "header MAC".into());

    // Recipient: fingerprint = SHA-256(SPKI DER); RSA-OAEP-SHA256 (MGF1-SHA256) with label.
    let pub_pem = v.identity().with_file_name("identity.pub.pem");
    let spki_fp = fs::read_to_string(&pub_pem).ok().map(|pem| {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_decode(&b64);
        <[u8; 32]>::from(Sha256::digest(&der))
    });
    let fp_hex = req_str(session, "fingerprint");
    if let Some(fp) = spki_fp {
        check(hex(&fp) == fp_hex, "fingerprint of identity.pub.pem".into());
    }
    let stanza = stanzas.iter().find(|s| hex(&s.1) == fp_hex);
    check(
        stanza.is_some(),
        "no stanza with the manifest's fingerprint".into(),
    );
    if let Some((scheme, _, _, wrapped)) = stanza {
        use pkcs8::DecodePrivateKey;
        check(*scheme == 1, "stanza scheme".into());
        let pem = fs::read_to_string(v.identity()).unwrap();
        let key = rsa::PrivateKey::from_pkcs8_pem(&pem).unwrap();
        let plain = key
            .decrypt(
                rsa::Oaep::<Sha256>::new_with_label(&b"coffer/v1/rsa-oaep"[..]),
                wrapped,
            )
            .expect("RSA-OAEP unwrap");
        check(
            plain == session_key,
            "unwrapped session key != session_key.hex".into(),
        );
    }

    // Trailer.
    let t = &b[b.len() - 36..];
    check(&t[24..32] == b"\x89CFREND\n", "trailer magic".into());
    check(
        crc32c::crc32c(&t[..32]) == u32::from_le_bytes(t[32..36].try_into().unwrap()),
        "trailer CRC32C".into(),
    );
    let le = |r: std::ops::Range<usize>| u64::from_le_bytes(t[r].try_into().unwrap()) as usize;
    let (index_offset, index_len, block_count) = (le(0..8), le(8..16), le(16..24));
    check(
        index_offset + index_len == b.len() - hl - 36,
        "trailer offsets".into(),
    );
    if let Some(l) = m.tables.get("layout") {
        for (k, got) in [
            ("file_len", b.len()),
            ("header_len", hl),
            ("data_start", hl),
            ("index_offset", index_offset),
            ("index_file_offset", hl + index_offset),
            ("index_len", index_len),
            ("trailer_file_offset", b.len() - 36),
        ] {
            check(req_int(l, k) == got as i128, format!("layout {k}"));
        }
    }

    // Index section: iv ‖ ct ‖ tag ‖ crc; tag first, then decrypt.
    let sec = &b[hl + index_offset..hl + index_offset + index_len];
    let n = sec.len();
    check(
        crc32c::crc32c(&sec[..n - 4]) == u32::from_le_bytes(sec[n - 4..].try_into().unwrap()),
        "index CRC32C".into(),
    );
    let tag = hmac_sha256(
        &meta_mac,
        &[b"coffer/v1/index", &session_id, &sec[..n - 36]],
    );
    check(tag[..] == sec[n - 36..n - 4], "index tag".into());
    let plain = pkcs7_unpad(cbc_decrypt(&meta_enc, &sec[..16], &sec[16..n - 36]));
    let mut c = Cur { b: &plain, pos: 0 };
    struct E {
        path: String,
        kind: u8,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        nsec: u32,
        size: u64,
        offset: u64,
        link: Option<String>,
    }
    let entries: Vec<E> = (0..c.u64())
        .map(|_| E {
            path: c.string(),
            kind: c.u8(),
            mode: c.u32(),
            uid: c.u32(),
            gid: c.u32(),
            mtime: c.i64(),
            nsec: c.u32(),
            size: c.u64(),
            offset: c.u64(),
            link: c.option().then(|| c.string()),
        })
        .collect();
    let blocks: Vec<(u64, u32, u32)> = (0..c.u64()).map(|_| (c.u64(), c.u32(), c.u32())).collect();
    let stream_len = c.u64();
    let totals: Vec<u64> = (0..5).map(|_| c.u64()).collect();
    check(c.pos == plain.len(), "index has trailing bytes".into());
    check(blocks.len() == block_count, "trailer block count".into());
    // Same reading as coffer's decoder.
    let ix: Index = postcard::from_bytes(&plain).expect("coffer decodes the index");
    check(ix.entries.len() == entries.len(), "index entries".into());
    for (a, e) in ix.entries.iter().zip(&entries) {
        check(
            a.path == e.path
                && a.kind == e.kind
                && a.mode == e.mode
                && (a.uid, a.gid) == (e.uid, e.gid)
                && (a.mtime_sec, a.mtime_nsec) == (e.mtime, e.nsec)
                && (a.size, a.offset) == (e.size, e.offset)
                && a.link_target == e.link,
            format!("entry {} decodes differently", e.path),
        );
    }
    check(
        ix.blocks
            .iter()
            .map(|r| (r.offset, r.frame_len, r.raw_len))
            .eq(blocks.iter().copied()),
        "block table".into(),
    );
    check(ix.stream_len == stream_len, "stream_len".into());
    let t = ix.totals;
    check(
        vec![t.files, t.dirs, t.symlinks, t.bytes, t.warnings] == totals,
        "totals".into(),
    );

    // Blocks: CRC, tag (before decrypting), last flag, per-segment CBC, padding, zstd.
    let mut stream = Vec::new();
    let want_blocks = m.arrays.get("block").map(Vec::as_slice).unwrap_or(&[]);
    check(
        want_blocks.is_empty() || want_blocks.len() == blocks.len(),
        "manifest block count".into(),
    );
    for (i, &(offset, frame_len, raw_len)) in blocks.iter().enumerate() {
        let at = hl + offset as usize;
        let f = &b[at..at + frame_len as usize];
        let ct_len = u32::from_le_bytes(f[0..4].try_into().unwrap()) as usize;
        let f_raw = u32::from_le_bytes(f[4..8].try_into().unwrap());
        let flags = f[8];
        let nonce = &f[9..25];
        check(
            f.len() == 25 + ct_len + 36,
            format!("block {i}: frame length"),
        );
        check(f_raw == raw_len, format!("block {i}: raw_len"));
        check(
            crc32c::crc32c(&f[..f.len() - 4])
                == u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap()),
            format!("block {i}: CRC32C"),
        );
        let tag = hmac_sha256(
            &data_mac,
            &[&session_id, &(i as u64).to_le_bytes(), &f[..25 + ct_len]],
        );
        check(
            tag[..] == f[25 + ct_len..25 + ct_len + 32],
            format!("block {i}: tag"),
        );
        check(flags & !3 == 0, format!("block {i}: unknown flags"));
        check(
            (flags & 2 != 0) == (i + 1 == blocks.len()),
            format!("block {i}: last-block flag"),
        );
        let ct = &f[25..25 + ct_len];
        let mut padded = Vec::new();
        let mut ivs = Vec::new();
        for (j, seg) in ct.chunks(segment_size as usize).enumerate() {
            use cipher::BlockCipherEncrypt;
            let mut x: [u8; 16] = nonce.try_into().unwrap();
            for (a, bb) in x[12..].iter_mut().zip((j as u32).to_be_bytes()) {
                *a ^= bb;
            }
            let mut iv = cipher::Array::from(x);
            aes(&data_iv).encrypt_block(&mut iv);
            padded.extend(cbc_decrypt(&data_enc, &iv, seg));
            ivs.push(hex(&iv));
        }
        let payload = pkcs7_unpad(padded);
        let data = if flags & 1 != 0 {
            zstd::bulk::decompress(&payload, raw_len as usize).expect("zstd")
        } else {
            payload
        };
        check(data.len() == raw_len as usize, format!("block {i}: length"));
        if i + 1 < blocks.len() {
            check(raw_len == block_size, format!("block {i}: not full"));
        }
        stream.extend_from_slice(&data);
        if let Some(w) = want_blocks.get(i) {
            check(
                req_int(w, "index") == i as i128,
                format!("block {i}: index"),
            );
            check(
                req_int(w, "file_offset") == at as i128,
                format!("block {i}: file_offset"),
            );
            check(
                req_int(w, "offset") == offset as i128,
                format!("block {i}: offset"),
            );
            check(
                req_int(w, "frame_len") == frame_len as i128,
                format!("block {i}: frame_len"),
            );
            check(
                req_int(w, "ct_len") == ct_len as i128,
                format!("block {i}: ct_len"),
            );
            check(
                req_int(w, "raw_len") == raw_len as i128,
                format!("block {i}: raw_len"),
            );
            check(
                req_int(w, "flags") == flags as i128,
                format!("block {i}: flags"),
            );
            check(
                req_str(w, "nonce") == hex(nonce),
                format!("block {i}: nonce"),
            );
            check(
                req_str(w, "tag") == hex(&tag),
                format!("block {i}: manifest tag"),
            );
            let want_ivs = match w.get("segment_ivs") {
                Some(Val::Arr(a)) => a.clone(),
                _ => Vec::new(),
            };
            let got_ivs: Vec<Val> = ivs.into_iter().map(Val::Str).collect();
            check(want_ivs == got_ivs, format!("block {i}: segment IVs"));
        }
    }
    check(stream.len() as u64 == stream_len, "stream length".into());

    // Entries against the manifest, content from the decrypted stream.
    check(
        entries.len() == v.entries().len(),
        "manifest entry count".into(),
    );
    for (e, w) in entries.iter().zip(v.entries()) {
        let kind = match e.kind {
            0 => "file",
            1 => "dir",
            2 => "symlink",
            _ => "?",
        };
        let p = &e.path;
        check(req_str(w, "path") == p, format!("{p}: path order"));
        check(req_str(w, "kind") == kind, format!("{p}: kind"));
        check(req_int(w, "mode") == e.mode as i128, format!("{p}: mode"));
        check(
            req_int(w, "mtime") == e.mtime as i128,
            format!("{p}: mtime"),
        );
        check(
            req_int(w, "mtime_nsec") == e.nsec as i128,
            format!("{p}: mtime_nsec"),
        );
        check(req_int(w, "size") == e.size as i128, format!("{p}: size"));
        if let Some(uid) = get_int(w, "uid") {
            check(uid == e.uid as i128, format!("{p}: uid"));
        }
        if let Some(gid) = get_int(w, "gid") {
            check(gid == e.gid as i128, format!("{p}: gid"));
        }
        check(
            get_str(w, "link_target") == e.link.as_deref(),
            format!("{p}: link"),
        );
        if e.kind == 0 {
            let data = &stream[e.offset as usize..(e.offset + e.size) as usize];
            check(
                req_str(w, "sha256") == hex(&Sha256::digest(data)),
                format!("{p}: content"),
            );
        } else {
            check(
                e.offset == 0 && e.size == 0,
                format!("{p}: non-file with data"),
            );
        }
    }
    problems
}
