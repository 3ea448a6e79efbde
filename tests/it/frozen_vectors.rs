//! Frozen test vectors stay byte for byte as they were frozen (FORMAT.md §14 for v1,
//! v2.11 for v2): every file under `fixtures/v1/` and `fixtures/v2/` is listed with its
//! SHA-256 in that folder's `SHA256SUMS`, and nothing is changed or removed (nor added
//! unlisted) without this test failing. Changing a frozen format needs a new version and
//! new vectors, never edited old ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every regular file under `dir` (relative, `/`-separated), but the manifest and the
/// folder's README (prose about the vectors, which may be corrected).
fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&path, base, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if rel != "SHA256SUMS" && rel != "README.md" {
                out.push(rel);
            }
        }
    }
}

/// Check `fixtures/<version>/` against its `SHA256SUMS` (`sha256sum` format: hash, two
/// spaces, path relative to the folder).
fn check_frozen(version: &str) {
    let dir = fixtures().join(version);
    let manifest = std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap_or_else(|e| panic!("fixtures/{version}/SHA256SUMS: {e}"));
    let listed: BTreeMap<String, String> = manifest
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("`<sha256>  <path>` lines");
            (path.to_string(), hash.to_string())
        })
        .collect();
    let mut present = Vec::new();
    files_under(&dir, &dir, &mut present);
    present.sort();
    let mut problems = Vec::new();
    for path in &present {
        match listed.get(path) {
            None => problems.push(format!(
                "{path}: not in SHA256SUMS (added after the freeze)"
            )),
            Some(want) => {
                let digest = Sha256::digest(std::fs::read(dir.join(path)).unwrap());
                let got: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                if &got != want {
                    problems.push(format!("{path}: changed since the freeze"));
                }
            }
        }
    }
    for path in listed.keys() {
        if !present.contains(path) {
            problems.push(format!("{path}: removed since the freeze"));
        }
    }
    assert!(
        problems.is_empty(),
        "fixtures/{version} differs from its frozen manifest:\n{}",
        problems.join("\n")
    );
}

#[test]
fn v1_vectors_are_byte_for_byte_as_frozen() {
    check_frozen("v1");
}

#[test]
fn v2_vectors_are_byte_for_byte_as_frozen() {
    check_frozen("v2");
}
