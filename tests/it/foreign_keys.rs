//! Keys made by other tools work as recipients and identities: `openssl genpkey`,
//! `openssl genrsa`, `ssh-keygen -t rsa` (plain and passphrase-protected), and coffer's
//! own passphrase-protected keys. The tools are installed by .ci/run; a test whose tool is
//! missing fails in CI rather than passing silently.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn tool(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); install openssl and openssh-client"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Back up a small tree to every recipient given, then restore with each identity.
fn round_trip(t: &TestDir, recipients: &[&Path], identities: &[(&Path, Option<&Path>)]) {
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"hello from a foreign key\n", 0o644);
    write_file(&src.join("sub/b.bin"), &pseudo_random(300_000, 7), 0o600);
    let archive = t.join("a.coffer");
    let mut backup = coffer_cmd();
    backup.args(["backup", s(&src), "-o", s(&archive), "-q"]);
    for r in recipients {
        backup.args(["-r", s(r)]);
    }
    backup.assert().code(0);
    for (i, (id, pass_file)) in identities.iter().enumerate() {
        let out = t.join(format!("out{i}"));
        let mut restore = coffer_cmd();
        restore.args(["restore", s(&archive), "-i", s(id), "--to", s(&out), "-q"]);
        if let Some(p) = pass_file {
            restore.args(["--passphrase-file", s(p)]);
        }
        restore.assert().code(0);
        assert_trees_equal(&src, &out.join("src"));
    }
}

#[test]
fn openssl_genpkey_and_genrsa_keys_are_recipients_and_identities() {
    let t = TestDir::new();
    let pk8 = t.join("genpkey.pem");
    let pk1 = t.join("genrsa.pem");
    tool(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        s(&pk8),
    ]));
    tool(Command::new("openssl").args(["genrsa", "-traditional", "-out", s(&pk1), "2048"]));
    let pk8_pub = t.join("genpkey.pub.pem");
    let pk1_pub = t.join("genrsa.pub.pem");
    tool(Command::new("openssl").args(["pkey", "-in", s(&pk8), "-pubout", "-out", s(&pk8_pub)]));
    tool(Command::new("openssl").args([
        "rsa",
        "-in",
        s(&pk1),
        "-RSAPublicKey_out",
        "-out",
        s(&pk1_pub),
    ]));
    assert!(
        std::fs::read_to_string(&pk1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    round_trip(&t, &[&pk8_pub, &pk1_pub], &[(&pk8, None), (&pk1, None)]);
}

#[test]
fn ssh_keygen_keys_plain_and_passphrase_protected() {
    let t = TestDir::new();
    let plain = t.join("id_plain");
    let locked = t.join("id_locked");
    tool(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "",
        "-C",
        "plain@test",
        "-f",
        s(&plain),
    ]));
    tool(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "correct horse",
        "-f",
        s(&locked),
    ]));
    let pass = t.join("pass.txt");
    std::fs::write(&pass, "correct horse\n").unwrap();
    // A recipients file: OpenSSH public lines with comments and blank lines.
    let team = t.join("team.txt");
    let lines = format!(
        "# ops and escrow\n\n{}{}",
        std::fs::read_to_string(plain.with_extension("pub")).unwrap(),
        std::fs::read_to_string(t.join("id_locked.pub")).unwrap()
    );
    std::fs::write(&team, lines).unwrap();
    round_trip(&t, &[&team], &[(&plain, None), (&locked, Some(&pass))]);

    // The comment becomes the stanza label shown by `info`.
    let info = coffer_cmd()
        .args(["info", s(&t.join("a.coffer"))])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("(plain@test)"));

    // A wrong passphrase is a one-line error naming the key, exit 2.
    let wrong = t.join("wrong.txt");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = coffer_cmd()
        .args([
            "restore",
            s(&t.join("a.coffer")),
            "-i",
            s(&locked),
            "--to",
            s(&t.join("x")),
        ])
        .args(["--passphrase-file", s(&wrong)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong passphrase") && err.contains("id_locked"),
        "{err}"
    );
    assert!(!t.join("x").exists());
}

#[test]
fn coffer_keygen_passphrase_key_needs_its_passphrase() {
    let t = TestDir::new();
    let key = t.join("locked.key");
    let pass = t.join("pass.txt");
    std::fs::write(&pass, "a long enough passphrase\n").unwrap();
    coffer_cmd()
        .args([
            "keygen",
            "-o",
            s(&key),
            "--bits",
            "2048",
            "--passphrase",
            "--passphrase-file",
            s(&pass),
        ])
        .assert()
        .code(0);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("BEGIN ENCRYPTED PRIVATE KEY")
    );
    round_trip(&t, &[&t.join("locked.key.pub")], &[(&key, Some(&pass))]);
    // Without a passphrase source and no terminal: a clear error, not a hang.
    let out = coffer_cmd()
        .args(["list", s(&t.join("a.coffer")), "-i", s(&key)])
        .env_remove("COFFER_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
    // The environment variable works as well as the flag.
    coffer_cmd()
        .args(["list", s(&t.join("a.coffer")), "-i", s(&key)])
        .env("COFFER_PASSPHRASE_FILE", &pass)
        .assert()
        .code(0)
        .stdout(predicates::str::contains("src/a.txt"));
}
