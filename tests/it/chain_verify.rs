//! `verify` of incremental chains made by the binary (FORMAT.md v2.10.3): keyed verify of
//! the newest point checks its parents' referenced blocks and every file's content across
//! the archives, and reports the bytes read from each parent; damage in a parent block is
//! named; a missing parent is reported by session id and file name, keyed and keyless; a
//! healthy chain passes keyless; `--chain-dir` finds parents kept elsewhere.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::archive::Archive;

/// A real chain written by `coffer backup --incremental`: a full and two incrementals of
/// `tree`, changed in between (a >2 MiB file changed in its middle, files added, deleted,
/// copied). `archives` oldest first; `tree` holds what the newest point holds.
pub struct CliChain {
    pub t: TestDir,
    pub tree: PathBuf,
    pub out: PathBuf,
    pub archives: Vec<PathBuf>,
}

impl CliChain {
    pub fn newest(&self) -> &Path {
        self.archives.last().expect("three archives")
    }

    /// Run `coffer backup --incremental` of the tree and return the new archive.
    fn back_up(&mut self) {
        let before: Vec<PathBuf> = archives_in(&self.out);
        coffer_cmd()
            .arg("backup")
            .arg(&self.tree)
            .arg("--to")
            .arg(&self.out)
            .arg("-r")
            .arg(alice_pub())
            .args(["--job-name", "home", "--incremental", "--state-dir"])
            .arg(self.t.join("state"))
            .env("COFFER_STATE_DIR", self.t.join("state"))
            .assert()
            .success();
        let new: Vec<PathBuf> = archives_in(&self.out)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(new.len(), 1, "one new archive: {new:?}");
        self.archives.push(new[0].clone());
    }
}

pub fn archives_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Change `len` bytes at `at` of `path` in place (size kept) and give it mtime `sec`.
fn patch(path: &Path, at: usize, len: usize, seed: u64, sec: i64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at..at + len].copy_from_slice(&pseudo_random(len, seed));
    fs::write(path, &bytes).unwrap();
    set_mtime(path, sec, 0);
}

pub fn cli_chain() -> CliChain {
    let t = TestDir::new();
    let tree = t.join("tree");
    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    write_file(&tree.join("big.bin"), &pseudo_random(3 << 20, 1), 0o644);
    write_file(&tree.join("a.txt"), &pseudo_random(3000, 2), 0o644);
    write_file(
        &tree.join("b.txt"),
        b"deleted before the first incremental\n",
        0o644,
    );
    write_file(
        &tree.join("sub/keep.bin"),
        &pseudo_random(200_000, 3),
        0o600,
    );
    let mut c = CliChain {
        t,
        tree,
        out,
        archives: Vec::new(),
    };
    c.back_up();
    // First incremental: the middle of big.bin changed, a file added, one deleted, a copy.
    let tree = c.tree.clone();
    patch(&tree.join("big.bin"), 1_500_000, 100, 4, 1_800_000_000);
    write_file(&tree.join("new.txt"), &pseudo_random(5000, 5), 0o644);
    fs::remove_file(tree.join("b.txt")).unwrap();
    fs::copy(tree.join("a.txt"), tree.join("a-copy.txt")).unwrap();
    set_mtime(&tree.join("a-copy.txt"), 1_800_000_001, 0);
    c.back_up();
    // Second: big.bin changed elsewhere, another file added; its table lists both.
    patch(&tree.join("big.bin"), 2_700_000, 100, 6, 1_800_000_100);
    write_file(&tree.join("new2.txt"), &pseudo_random(7000, 7), 0o644);
    c.back_up();
    let newest = Archive::open(c.newest()).unwrap();
    assert_eq!(
        newest.params().chain.len(),
        2,
        "the newest lists both parents"
    );
    c
}

fn verify_json(args: &[&std::ffi::OsStr]) -> (i32, serde_json::Value) {
    let out = coffer_cmd()
        .arg("verify")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), doc["archives"][0].clone())
}

fn verify_text(archive: &Path, extra: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = coffer_cmd()
        .arg("verify")
        .arg(archive)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

fn session_id(p: &Path) -> String {
    Archive::open(p).unwrap().session_id_hex()
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Flip one byte `at` bytes into the data section of `archive` (inside block 0's frame).
fn flip_data_byte(archive: &Path, at: u64) {
    let start = Archive::open(archive).unwrap().data_start();
    let mut bytes = fs::read(archive).unwrap();
    bytes[(start + at) as usize] ^= 0x01;
    fs::write(archive, &bytes).unwrap();
}

#[test]
fn keyed_verify_of_the_newest_point_checks_its_parents_and_reports_their_bytes() {
    let c = cli_chain();
    let key = alice_key();
    let (code, doc) = verify_json(&[c.newest().as_os_str(), "-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["keyed"], true);
    let parents = doc["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{doc}");
    for (p, archive) in parents.iter().zip(&c.archives) {
        assert_eq!(p["session_id"], session_id(archive), "{doc}");
        assert_eq!(p["found"], true, "{doc}");
        assert!(p["files"].as_u64().unwrap() >= 1, "{doc}");
        assert!(p["blocks_checked"].as_u64().unwrap() >= 1, "{doc}");
        // The referenced blocks at least once (the check), and again for the hashes.
        assert!(p["bytes_read"].as_u64().unwrap() > 0, "{doc}");
    }
    // The full holds most of big.bin: what is read of it is most of its blocks.
    assert!(
        parents[0]["bytes_read"].as_u64().unwrap() > 2 << 20,
        "{doc}"
    );
    let (code, text) = verify_text(c.newest(), &["-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 parent(s)"), "{text}");
}

#[test]
fn a_flipped_byte_in_a_parent_block_the_newest_point_uses_fails_verify_naming_it() {
    let c = cli_chain();
    let full = &c.archives[0];
    // Block 0 of the full holds a.txt, which every point still references.
    flip_data_byte(full, 1000);
    let key = alice_key();
    let (code, doc) = verify_json(&[c.newest().as_os_str(), "-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["ok"], false);
    let problems = doc["problems"].as_array().unwrap();
    let in_full: Vec<&serde_json::Value> = problems
        .iter()
        .filter(|p| p["archive"] == full.to_string_lossy().as_ref())
        .collect();
    assert!(!in_full.is_empty(), "{doc}");
    assert_eq!(in_full[0]["block"], 0, "{doc}");
    assert!(
        in_full[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&session_id(full)),
        "{doc}"
    );
    let (code, text) = verify_text(c.newest(), &["-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&file_name(full)), "{text}");
    assert!(text.contains("block 0"), "{text}");
    // Keyless finds the same damage (a checksum) in the same member.
    let (code, text) = verify_text(c.newest(), &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&file_name(full)) && text.contains("block 0"),
        "{text}"
    );
}

#[test]
fn a_deleted_parent_is_reported_by_session_id_and_file_name_keyed_and_keyless() {
    let c = cli_chain();
    let gone = &c.archives[1];
    let (sid, name) = (session_id(gone), file_name(gone));
    fs::remove_file(gone).unwrap();
    let key = alice_key();
    for extra in [vec!["-i".as_ref(), key.as_os_str()], vec![]] {
        let (code, text) = verify_text(c.newest(), &extra);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains(&sid) && text.contains(&name), "{text}");
        assert!(text.contains("not found"), "{text}");
        let mut args = vec![c.newest().as_os_str()];
        args.extend(extra.iter().copied());
        let (code, doc) = verify_json(&args);
        assert_eq!(code, 2, "{doc}");
        assert_eq!(doc["parents"][1]["found"], false, "{doc}");
        assert_eq!(doc["parents"][1]["session_id"], sid.as_str(), "{doc}");
        assert_eq!(doc["parents"][0]["found"], true, "{doc}");
    }
    // Keyed: how many files of the restore point need it.
    let (_, text) = verify_text(c.newest(), &["-i".as_ref(), key.as_os_str()]);
    assert!(text.contains("file(s) of this restore point"), "{text}");
}

#[test]
fn keyless_verify_of_a_healthy_chain_passes_and_walks_every_member() {
    let c = cli_chain();
    let (code, doc) = verify_json(&[c.newest().as_os_str()]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["keyed"], false);
    let parents = doc["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2);
    for (p, archive) in parents.iter().zip(&c.archives) {
        assert_eq!(p["path"], archive.to_string_lossy().as_ref(), "{doc}");
        // Keyless walks the whole member.
        let blocks = Archive::open(archive).unwrap().params().block_count;
        assert_eq!(p["blocks_checked"], blocks, "{doc}");
    }
}

#[test]
fn parents_kept_in_another_folder_are_found_with_chain_dir() {
    let c = cli_chain();
    let elsewhere = c.t.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    for p in &c.archives[..2] {
        fs::rename(p, elsewhere.join(p.file_name().unwrap())).unwrap();
    }
    let key = alice_key();
    let keyed = ["-i".as_ref(), key.as_os_str()];
    assert_eq!(verify_text(c.newest(), &keyed).0, 2);
    let with_dir = [
        keyed[0],
        keyed[1],
        "--chain-dir".as_ref(),
        elsewhere.as_os_str(),
    ];
    let (code, text) = verify_text(c.newest(), &with_dir);
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify_text(c.newest(), &["--chain-dir".as_ref(), elsewhere.as_os_str()]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_look_alike_parent_fails_keyed_verify_on_its_commitment() {
    let c = cli_chain();
    // The first incremental replaced by another archive with its session id but another
    // session key: the keyless checks pass, the commitment does not.
    let victim = &c.archives[1];
    let sid = Archive::open(victim).unwrap().params().session_id;
    let forged = c.t.join("forged.coffer");
    let mut opts = coffer::backup::BackupOptions::new(vec![c.tree.clone()], forged.clone());
    opts.format = 2;
    opts.session_id = Some(sid);
    let alice = recipient(&alice_pub());
    coffer::backup::backup(
        &opts,
        &[&alice as &dyn coffer::recipient::Recipient],
        &coffer::backup::Quiet,
    )
    .unwrap();
    fs::rename(&forged, victim).unwrap();
    let key = alice_key();
    let (code, text) = verify_text(c.newest(), &["-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("commitment"), "{text}");
}

#[test]
fn wrong_bytes_referenced_in_a_parent_are_a_content_problem_naming_the_file() {
    use crate::hostile_v2::{Parts, find};
    let c = cli_chain();
    // The newest point re-sealed with a.txt's extent into the full shifted by one byte:
    // every block still opens, only the content hash tells.
    let parts = Parts::load(c.newest(), &alice_key());
    let mut entries = parts.entries.clone();
    let i = find(&entries, "tree/a.txt");
    assert_eq!(
        entries[i].extents[0].archive, 1,
        "a.txt is held in the full"
    );
    entries[i].extents[0].offset += 1;
    fs::write(c.newest(), parts.rebuild(&entries, 3)).unwrap();
    let key = alice_key();
    let (code, doc) = verify_json(&[c.newest().as_os_str(), "-i".as_ref(), key.as_os_str()]);
    assert_eq!(code, 2, "{doc}");
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{doc}");
    let detail = problems[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("tree/a.txt") && detail.contains("content hash"),
        "{doc}"
    );
    // Keyless cannot tell: the checksums of every member hold.
    assert_eq!(verify_text(c.newest(), &[]).0, 0);
}

#[test]
fn verify_blocks_of_an_incremental_alone_reports_files_in_parents_as_not_checked() {
    // The library's single-archive check does not open parents: it says what it skipped
    // instead of passing (or refusing the whole check, as before chains were verified).
    let c = cli_chain();
    let a = Archive::open(c.newest()).unwrap();
    let u = a.unlock(&identity(&alice_key())).unwrap();
    let report = a.verify_blocks(&u, &coffer::backup::Quiet).unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p
            .detail
            .contains("data in parent archives and were not checked")),
        "{:?}",
        report.problems
    );
    // With its chain, the same archive passes.
    let report = a
        .verify_chain(
            &u,
            &identity(&alice_key()),
            None,
            &[],
            &coffer::backup::Quiet,
        )
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.parents.len(), 2);
}
