//! A job's `signers` / `signers_file`: the keys its scheduled verify (`verify_schedule`)
//! requires every kept archive to be signed by, as `verify --signer` / `--signers` check
//! keylessly. A missing or bad key file, or a pin the job's own archives could not pass, is
//! a configuration error at its line; `job check` shows the pinned fingerprints; an
//! unsigned archive or one signed by another key is damage for `daemon`, `status` and
//! `metrics`.

use std::path::{Path, PathBuf};

use crate::job_common::*;
use coffer::signing::SigningKey;
use predicates::prelude::*;

/// A signing key written as `name` (PKCS#8 PEM, 0600) and `name.pub`; returns the paths
/// and the key's fingerprint.
fn signing_pair(w: &World, name: &str) -> (PathBuf, PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let key = SigningKey::generate().unwrap();
    let private = w.join(name);
    let public = w.join(format!("{name}.pub"));
    std::fs::write(&private, key.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&public, key.verifying_key().to_pem().unwrap()).unwrap();
    (private, public, key.fingerprint().to_string())
}

/// Job `home` (sources, destination, recipients, a verify due every minute, incrementals)
/// with `extra` keys; the job's table starts at line 3.
fn write_job(w: &World, extra: &str) {
    let src = w.join("src");
    let dest = w.join("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nverify_schedule = \"* * * * *\"\nfull_every = 3\n{extra}"
    ));
}

/// `coffer job check`'s exit code and stderr.
fn check_err(w: &World) -> String {
    let out = w.coffer().args(["job", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn assert_has(text: &str, want: &str) {
    assert!(text.contains(want), "{want:?}\n in: {text}");
}

/// Make the verify due again (the daemon evaluated it this minute already).
fn forget_verify(w: &World) {
    let conn = rusqlite::Connection::open(w.state_dir().join("catalog.sqlite")).unwrap();
    conn.execute("DELETE FROM schedule WHERE job = 'home:verify'", [])
        .unwrap();
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn signer_files_that_are_missing_bad_or_do_not_pin_the_jobs_key_are_config_errors() {
    let w = World::new();
    w.small_tree("src");
    w.mkdir("dest");
    let (sign, sign_pub, _) = signing_pair(&w, "host.sign");
    let (_, other_pub, _) = signing_pair(&w, "other.sign");
    let missing = w.join("nowhere.pub");
    let garbage = w.join("allowed_signers");
    std::fs::write(&garbage, "# hosts\nssh-rsa AAAAB3NzaC1yc2E= old\n").unwrap();

    // Line 8: `signing_key`, 9: `signers`, 10: `signers_file`.
    write_job(
        &w,
        &format!(
            "signing_key = {sign:?}\nsigners = [{missing:?}, \"{{KEY}}\"]\nsigners_file = {garbage:?}\n"
        ),
    );
    let err = check_err(&w);
    assert_has(&err, "jobs.toml:9: job \"home\": key \"signers\": ");
    assert_has(&err, &missing.display().to_string());
    // An RSA recipient key is not a signer key.
    assert_has(&err, "Ed25519");
    assert_has(&err, "jobs.toml:10: job \"home\": key \"signers_file\": ");
    assert_has(&err, "line 2");

    // Pinned, but not the key the job signs with: its own archives would fail.
    write_job(
        &w,
        &format!("signing_key = {sign:?}\nsigners = [{other_pub:?}]\n"),
    );
    let err = check_err(&w);
    assert_has(
        &err,
        "jobs.toml:9: job \"home\": key \"signers\": the job signs with",
    );
    assert_has(&err, "which is not among its signers");

    // Pinned, and the job signs nothing. The pin comes from [defaults] here.
    let src = w.join("src");
    let dest = w.join("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\nsigners_file = {sign_pub:?}\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\n"
    ));
    let err = check_err(&w);
    assert_has(&err, "jobs.toml:3: job \"home\": key \"signers_file\": ");
    assert_has(&err, "signs nothing (no signing_key)");
    // The daemon refuses to start on the same errors.
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\nsigners_file = {sign_pub:?}\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nverify_schedule = \"* * * * *\"\n"
    ));
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("signs nothing"));

    // An empty path is refused when the file is parsed.
    write_job(&w, &format!("signing_key = {sign:?}\nsigners = [\"\"]\n"));
    assert_has(
        &check_err(&w),
        "jobs.toml:9: job \"home\": key \"signers\": empty path",
    );
}

#[test]
fn job_check_shows_the_pinned_fingerprints() {
    let w = World::new();
    w.small_tree("src");
    w.mkdir("dest");
    let (sign, sign_pub, fp) = signing_pair(&w, "host.sign");
    let (_, old_pub, old_fp) = signing_pair(&w, "old.sign");
    // An allowed-signers file of two keys, one of them also named by `signers`: once each.
    let allowed = w.join("allowed_signers");
    let text =
        std::fs::read_to_string(&sign_pub).unwrap() + &std::fs::read_to_string(&old_pub).unwrap();
    std::fs::write(&allowed, text).unwrap();
    write_job(
        &w,
        &format!("signing_key = {sign:?}\nsigners = [{sign_pub:?}]\nsigners_file = {allowed:?}\n"),
    );
    w.coffer()
        .args(["job", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "scheduled verify requires a signature by {fp} or {old_fp}\n"
        )));
}

#[test]
fn scheduled_verify_requires_the_pinned_signers() {
    let w = World::new();
    w.small_tree("src");
    w.mkdir("dest");
    let (sign, sign_pub, _) = signing_pair(&w, "host.sign");
    let (other, _, other_fp) = signing_pair(&w, "other.sign");
    let pinned = format!("signing_key = {sign:?}\nsigners = [{sign_pub:?}]\n");

    // A full and an incremental, both signed by the pinned key.
    write_job(&w, &pinned);
    for _ in 0..2 {
        w.coffer().args(["job", "run", "home"]).assert().success();
    }
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains("job home: verify ok in"))
        .stderr(predicate::str::contains("2 archive(s) checked, 0 damaged"));
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    assert_eq!((v.archives, v.damaged), (2, 0));

    // Before the pin, the job wrote one archive signed by another key and one unsigned.
    write_job(&w, &format!("signing_key = {other:?}\n"));
    w.coffer().args(["job", "run", "home"]).assert().success();
    write_job(&w, "");
    w.coffer().args(["job", "run", "home"]).assert().success();
    let sessions = w.sessions("home");
    let unsigned = name(sessions[0].archive.as_deref().unwrap());
    let by_other = name(sessions[1].archive.as_deref().unwrap());

    write_job(&w, &pinned);
    forget_verify(&w);
    let out = w.coffer().args(["daemon", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let log = String::from_utf8(out.stderr).unwrap();
    assert_has(&log, "job home: verify FAILED");
    assert_has(&log, "4 archive(s) checked, 2 damaged");
    let v = w.catalog().last_verify("home").unwrap().unwrap();
    assert_eq!((v.archives, v.damaged), (4, 2), "{:?}", v.details);
    let details = v.details.join("\n");
    assert_has(&details, &format!("{unsigned}: "));
    assert_has(&details, "the archive is not signed");
    assert_has(&details, &format!("{by_other}: "));
    assert_has(
        &details,
        &format!("signed by {other_fp}, which is not an allowed signer"),
    );
    w.coffer()
        .arg("status")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "home: last verify: 4 archive(s) checked, 2 damaged",
        ));
    let m = w.coffer().arg("metrics").output().unwrap();
    let text = String::from_utf8(m.stdout).unwrap();
    assert_has(&text, "coffer_last_verify_ok{job=\"home\"} 0\n");

    // Without the pin the same archives pass: only their checksums are checked.
    write_job(&w, &format!("signing_key = {sign:?}\n"));
    forget_verify(&w);
    w.coffer()
        .args(["daemon", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains("4 archive(s) checked, 0 damaged"));
}
