//! The `coffer` command as users run it: help, keygen, backup and restore, exit codes
//! (0 ok, 1 warnings, 2 failed) and messages (`error: ...` then `hint: ...`, never debug
//! output or a backtrace).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use coffer::recipient::Recipient;
use predicates::prelude::*;

/// Lines of a failed command's stderr, checked for the one-error-line-plus-hint form.
fn assert_error_form(stderr: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "expected `error:` and at most a `hint:` line, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("error: "), "{stderr}");
    if let Some(h) = lines.get(1) {
        assert!(h.starts_with("hint: "), "{stderr}");
    }
    for bad in [
        "Os {",
        "Error {",
        "Custom {",
        "kind:",
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
    ] {
        assert!(!stderr.contains(bad), "debug output {bad:?} in:\n{stderr}");
    }
    (lines[0].to_string(), lines.get(1).map(|s| s.to_string()))
}

/// Run a command that must fail with exit 2; returns its (error, hint) lines.
fn fails(cmd: &mut assert_cmd::Command) -> (String, Option<String>) {
    let out = cmd
        .env("RUST_BACKTRACE", "1")
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty(), "stdout on failure: {:?}", out.stdout);
    assert_error_form(&String::from_utf8(out.stderr).unwrap())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_lists_the_three_commands_and_exit_codes() {
    let out = coffer_cmd()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["keygen", "backup", "restore"] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    assert!(help.contains("Exit codes"), "{help}");
    for sub in ["keygen", "backup", "restore"] {
        coffer_cmd()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn keygen_writes_a_0600_private_key_and_a_public_key_and_prints_the_fingerprint() {
    let t = TestDir::new();
    let k = t.join("ops.key");
    let out = coffer_cmd()
        .args(["keygen", "-o", s(&k), "--bits", "2048"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let fp = stdout.trim();
    assert!(fp.starts_with("SHA256:"), "{stdout}");
    assert_eq!(fp.len(), "SHA256:".len() + 64, "{stdout}");
    assert!(
        fp[7..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase())
    );
    let pub_path = t.join("ops.key.pub");
    let mode = fs::metadata(&k).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    assert!(
        fs::read_to_string(&pub_path)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    // The printed fingerprint is the key's, both halves agree, and the key is 2048 bits.
    assert_eq!(recipient(&pub_path).fingerprint().to_string(), fp);
    assert_eq!(recipient(&pub_path).bits(), 2048);
    assert_eq!(identity(&k).bits(), 2048);
    assert_eq!(
        coffer::recipient::Identity::fingerprint(&identity(&k)).to_string(),
        fp
    );
    let before = (fs::read(&k).unwrap(), fs::read(&pub_path).unwrap());

    // Without --force an existing key is never replaced.
    let (err, _) = fails(coffer_cmd().args(["keygen", "-o", s(&k), "--bits", "2048"]));
    assert!(err.contains("--force"), "{err}");
    assert!(err.contains("ops.key"), "{err}");
    assert_eq!(fs::read(&k).unwrap(), before.0);
    assert_eq!(fs::read(&pub_path).unwrap(), before.1);
    // Nor is a lone public key, and then no private key is written either.
    let lone = t.join("lone.key");
    fs::write(t.join("lone.key.pub"), &before.1).unwrap();
    let (err, _) = fails(coffer_cmd().args(["keygen", "-o", s(&lone), "--bits", "2048"]));
    assert!(err.contains("lone.key.pub"), "{err}");
    assert!(!lone.exists());
    assert_eq!(fs::read(t.join("lone.key.pub")).unwrap(), before.1);

    // With --force it is replaced by a new key, still 0600.
    let out = coffer_cmd()
        .args(["keygen", "-o", s(&k), "--bits", "2048", "--force"])
        .assert()
        .success()
        .get_output()
        .clone();
    let fp2 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(fp2, fp);
    assert_ne!(fs::read(&k).unwrap(), before.0);
    assert_eq!(
        fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(recipient(&pub_path).fingerprint().to_string(), fp2);
    assert!(partial_files(t.path()).is_empty());
}

#[test]
fn exists_hint_fits_the_command_that_refused() {
    let t = TestDir::new();
    let k = t.join("x.key");
    fs::write(&k, "existing").unwrap();
    let (err, hint) = fails(coffer_cmd().args(["keygen", "-o", s(&k)]));
    assert!(err.contains("--force"), "{err}");
    // keygen really has no --overwrite, so the hint must not suggest it.
    coffer_cmd()
        .args(["keygen", "-o", s(&k), "--overwrite"])
        .assert()
        .code(2);
    if let Some(h) = hint {
        assert!(
            !h.contains("--overwrite"),
            "keygen hint names a flag keygen lacks: {h}"
        );
        assert!(!h.contains("restore"), "keygen hint is about restore: {h}");
    }
    // backup's refusal should not talk about restoring either.
    let src = t.join("tree");
    write_file(&src.join("f"), b"x", 0o644);
    let archive = t.join("a.coffer");
    fs::write(&archive, "existing").unwrap();
    let (_, hint) =
        fails(coffer_cmd().args(["backup", s(&src), "-o", s(&archive), "-r", s(&alice_pub())]));
    let hint = hint.expect("hint");
    assert!(hint.contains("--overwrite"), "{hint}");
    assert!(
        !hint.contains("restore"),
        "backup hint is about restore: {hint}"
    );
}

#[test]
fn keygen_refuses_keys_under_2048_bits_and_writes_nothing() {
    let t = TestDir::new();
    let k = t.join("small.key");
    let (err, hint) = fails(coffer_cmd().args(["keygen", "-o", s(&k), "--bits", "1024"]));
    assert!(err.contains("2048"), "{err}");
    assert!(hint.is_some());
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn backup_and_restore_round_trip_through_the_binary() {
    let t = TestDir::new();
    let src = t.join("src/tree");
    let n = build_sample_tree(&src);
    let summary = format!(
        "{} files, {} folders, {} links",
        n.files, n.dirs, n.symlinks
    );
    for compression in ["none", "zstd", "zstd:6"] {
        let archive = t.join(format!("{compression}.coffer"));
        let out = coffer_cmd()
            .args(["backup", s(&src), "-o", s(&archive)])
            .args(["-r", s(&alice_pub()), "-r", s(&bob_pub())])
            .args(["--compression", compression, "--block-size", "64K"])
            .assert()
            .success()
            .stderr("")
            .get_output()
            .clone();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains(&format!("backed up {summary}")), "{stdout}");
        for k in [alice_pub(), bob_pub()] {
            let fp = recipient(&k).fingerprint().to_string();
            assert!(stdout.contains(&format!("recipient:  {fp}")), "{stdout}");
        }
        for (name, key) in [("alice", alice_key()), ("bob", bob_key())] {
            let target = t.join(format!("out-{compression}-{name}"));
            coffer_cmd()
                .args(["restore", s(&archive), "-i", s(&key), "--to", s(&target)])
                .assert()
                .success()
                .stderr("")
                .stdout(predicate::str::contains(format!("restored {summary}")));
            assert_trees_equal(&src, &target.join("tree"));
        }
    }
}

#[test]
fn restore_of_chosen_paths_through_the_binary() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ])
        .assert()
        .success();
    let target = t.join("out");
    coffer_cmd()
        .args([
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
        ])
        .args(["tree/docs", "tree/hello.txt"])
        .assert()
        .success();
    assert_trees_equal(&src.join("docs"), &target.join("tree/docs"));
    assert_eq!(
        fs::read(target.join("tree/hello.txt")).unwrap(),
        b"hello, world\n"
    );
    let mut top: Vec<_> = fs::read_dir(target.join("tree"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["docs", "hello.txt"]);
}

#[test]
fn restore_over_an_existing_file_fails_until_overwrite_is_given() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ])
        .assert()
        .success();
    let target = t.join("out");
    fs::create_dir_all(target.join("tree")).unwrap();
    fs::write(target.join("tree/hello.txt"), "mine, do not touch\n").unwrap();
    let (err, hint) = fails(coffer_cmd().args([
        "restore",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--to",
        s(&target),
    ]));
    assert!(err.contains("hello.txt"), "{err}");
    assert!(hint.expect("a hint").contains("--overwrite"));
    assert_eq!(
        fs::read_to_string(target.join("tree/hello.txt")).unwrap(),
        "mine, do not touch\n"
    );
    // Nothing else was written: the conflict is found before any byte.
    assert_eq!(scan(&target).len(), 3, "{:?}", scan(&target).keys());
    coffer_cmd()
        .args([
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
        ])
        .arg("--overwrite")
        .assert()
        .success();
    assert_trees_equal(&src, &target.join("tree"));
}

#[test]
fn a_socket_in_the_source_is_a_warning_and_the_archive_still_restores() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    // FIFOs and devices are stored (format v2); a socket cannot be restored, so it is
    // skipped with a warning, as tar does.
    let fifo = src.join("docs/app.sock");
    let docs_mtime = fs::metadata(src.join("docs")).unwrap().modified().unwrap();
    let socket = std::os::unix::net::UnixListener::bind(&fifo).unwrap();
    let set_docs_mtime = || {
        fs::File::open(src.join("docs"))
            .unwrap()
            .set_modified(docs_mtime)
            .unwrap()
    };
    set_docs_mtime();
    let archive = t.join("a.coffer");
    let out = coffer_cmd()
        .args(["backup", s(&src), "-o", s(&archive), "-r", s(&alice_pub())])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning line in:\n{stderr}"));
    assert!(warning.contains(s(&fifo)), "{warning}");
    assert!(!stderr.contains("error:"), "{stderr}");
    assert!(archive.exists());

    let target = t.join("out");
    coffer_cmd()
        .args([
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
        ])
        .assert()
        .success()
        .stderr("");
    // Everything but the socket came back.
    drop(socket);
    fs::remove_file(&fifo).unwrap();
    set_docs_mtime();
    assert_trees_equal(&src, &target.join("tree"));
}

#[test]
fn wrong_key_fails_with_the_fingerprints_and_a_hint() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"x", 0o644);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args(["backup", s(&src), "-o", s(&archive), "-q"])
        .args(["-r", s(&alice_pub()), "-r", s(&bob_pub())])
        .assert()
        .success();
    let target = t.join("out");
    let (err, hint) = fails(coffer_cmd().args([
        "restore",
        s(&archive),
        "-i",
        s(&carol_key()),
        "--to",
        s(&target),
    ]));
    for k in [alice_pub(), bob_pub(), carol_pub()] {
        let fp = recipient(&k).fingerprint().to_string();
        assert!(err.contains(&fp), "{fp} not in {err}");
    }
    assert!(hint.expect("hint").contains("-i"));
    assert!(!target.exists());
}

#[test]
fn every_failure_is_one_error_line_and_a_hint() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ])
        .assert()
        .success();
    let garbage = t.join("garbage.key");
    fs::write(&garbage, "not a key").unwrap();
    let not_archive = t.join("notes.txt");
    fs::write(&not_archive, "just some text, long enough to have a header").unwrap();
    let missing = t.join("missing");
    let to = t.join("out");
    let small = key("small1024.pem.pub");
    let restore = |archive: &Path, key: &Path| {
        let mut c = coffer_cmd();
        c.args(["restore", s(archive), "-i", s(key), "--to", s(&to)]);
        c
    };
    let backup = |src: &Path, out: &Path, key: &Path| {
        let mut c = coffer_cmd();
        c.args(["backup", s(src), "-o", s(out), "-r", s(key)]);
        c
    };
    let cases: Vec<(&str, assert_cmd::Command, Vec<String>)> = vec![
        (
            "missing key",
            restore(&archive, &missing),
            vec![s(&missing).into()],
        ),
        (
            "garbage key",
            restore(&archive, &garbage),
            vec!["garbage.key".into()],
        ),
        (
            "public key as identity",
            restore(&archive, &alice_pub()),
            vec!["alice.key.pub".into(), "public key".into()],
        ),
        (
            "small identity",
            restore(&archive, &key("small1024.pem")),
            vec!["1024".into()],
        ),
        (
            "not an archive",
            restore(&not_archive, &alice_key()),
            vec!["notes.txt".into(), "not a coffer archive".into()],
        ),
        (
            "missing archive",
            restore(&missing, &alice_key()),
            vec![s(&missing).into()],
        ),
        (
            "missing source",
            backup(&missing, &t.join("new.coffer"), &alice_pub()),
            vec![s(&missing).into()],
        ),
        (
            "small recipient",
            backup(&src, &t.join("new.coffer"), &small),
            vec!["1024".into()],
        ),
        (
            "existing archive",
            backup(&src, &archive, &alice_pub()),
            vec![s(&archive).into()],
        ),
        (
            "missing output folder",
            backup(&src, &missing.join("x.coffer"), &alice_pub()),
            vec![s(&missing).into()],
        ),
        (
            "bad block size",
            {
                let mut c = backup(&src, &t.join("new.coffer"), &alice_pub());
                c.args(["--block-size", "32K"]);
                c
            },
            vec!["block size".into()],
        ),
    ];
    for (name, mut cmd, needles) in cases {
        let (err, hint) = fails(&mut cmd);
        for n in needles {
            assert!(err.contains(&n), "{name}: {n:?} not in {err}");
        }
        assert!(hint.is_some(), "{name}: no hint after {err}");
    }
    assert!(!to.exists());
    assert!(!t.join("new.coffer").exists());
    assert!(partial_files(t.path()).is_empty());
}

#[test]
fn quiet_prints_nothing_on_success() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    coffer_cmd()
        .args(["restore", s(&archive), "-i", s(&alice_key())])
        .args(["--to", s(&t.join("out")), "--quiet"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    assert_eq!(fs::read(t.join("out/tree/f")).unwrap(), b"data");
}

#[test]
fn excluded_paths_are_left_out() {
    let t = TestDir::new();
    let src = t.join("tree");
    build_sample_tree(&src);
    let archive = t.join("a.coffer");
    coffer_cmd()
        .args([
            "backup",
            s(&src),
            "-o",
            s(&archive),
            "-r",
            s(&alice_pub()),
            "-q",
        ])
        .args(["--exclude", "tree/many", "--exclude", "**/*.bin"])
        .assert()
        .success();
    let target = t.join("out");
    coffer_cmd()
        .args([
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "-q",
        ])
        .assert()
        .success();
    let got = scan(&target.join("tree"));
    assert!(
        !got.keys().any(|p| p.starts_with("many")),
        "{:?}",
        got.keys()
    );
    assert!(
        !got.keys()
            .any(|p| p.extension().is_some_and(|e| e == "bin"))
    );
    assert!(got.contains_key(Path::new("docs/readme.md")));
    assert!(got.contains_key(Path::new("big/compressible.txt")));
}

#[test]
fn bad_option_values_are_usage_errors() {
    let t = TestDir::new();
    let src = t.join("tree");
    write_file(&src.join("f"), b"data", 0o644);
    let out = t.join("a.coffer");
    for (flag, value) in [
        ("--compression", "brotli"),
        ("--compression", "zstd:0"),
        ("--block-size", "lots"),
    ] {
        coffer_cmd()
            .args(["backup", s(&src), "-o", s(&out), "-r", s(&alice_pub())])
            .args([flag, value])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(value));
    }
    // No recipient at all.
    coffer_cmd()
        .args(["backup", s(&src), "-o", s(&out)])
        .assert()
        .code(2);
    assert!(!out.exists());
}

#[test]
fn interrupted_backup_stops_cleanly_and_leaves_no_partial_file() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    // Seconds of reading, little disk space.
    slow_sparse_file(&src.join("sparse.img"), 4 << 30);
    let dest = t.join("dest");
    fs::create_dir_all(&dest).unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("coffer"))
        .arg("backup")
        .arg(&src)
        .arg("-o")
        .arg(dest.join("a.coffer"))
        .arg("-r")
        .arg(alice_pub())
        .args(["--compression", "none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the archive is being written, then interrupt as Ctrl-C would.
    let started = std::time::Instant::now();
    while fs::read_dir(&dest).unwrap().count() == 0 {
        assert!(started.elapsed().as_secs() < 30, "backup never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let (err, hint) = assert_error_form(&stderr);
    assert!(err.contains("stopped by a signal"), "{err}");
    assert!(hint.unwrap().contains("no partial archive"));
    let left: Vec<_> = fs::read_dir(&dest).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
