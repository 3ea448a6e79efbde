//! `coffer keygen --signing`: an Ed25519 archive signing key (0600) and its public half
//! (0644), the fingerprint on stdout, passphrase protection as for identities, and files
//! that OpenSSL reads as the same key (the fingerprint is OpenSSL's SPKI DER SHA-256,
//! docs/FORMAT.md v2.9.1). openssl is installed by .ci/run; without it the test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use coffer::signing::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn no_passphrase(p: &Path) -> coffer::Result<Zeroizing<String>> {
    panic!("a passphrase was asked for {}", p.display())
}

/// Run `coffer keygen --signing …` expecting success; returns the printed fingerprint.
fn keygen(args: &[&str]) -> String {
    let out = coffer_cmd()
        .args(["keygen", "--signing"])
        .args(args)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("signing key"), "{stderr}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn keygen_signing_writes_0600_key_and_0644_pub_and_prints_the_fingerprint() {
    let t = TestDir::new();
    let key = t.join("host.sign");
    let public = t.join("host.sign.pub");
    let fp = keygen(&["-o", s(&key)]);
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 64, "{fp}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&public), 0o644);
    assert!(
        fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(
        fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );

    // Both halves load as the printed key, and what one signs the other verifies.
    let signer = SigningKey::load(&key, &no_passphrase).unwrap();
    let verifier = VerifyingKey::load(&public).unwrap();
    assert_eq!(signer.fingerprint().to_string(), fp);
    assert_eq!(verifier.fingerprint().to_string(), fp);
    assert!(verifier.verify_strict(b"archive", &signer.sign(b"archive")));

    // OpenSSL reads both files as this key, and its SPKI DER hashes to the fingerprint.
    let der = openssl(&["pkey", "-pubin", "-in", s(&public), "-outform", "DER"]);
    assert_eq!(
        coffer::Fingerprint(Sha256::digest(&der).into()).to_string(),
        fp
    );
    let derived = openssl(&["pkey", "-in", s(&key), "-pubout"]);
    assert_eq!(derived, fs::read(&public).unwrap());

    // An existing key is not replaced without --force; --force makes a new one.
    let before = fs::read(&key).unwrap();
    let out = coffer_cmd()
        .args(["keygen", "--signing", "-o", s(&key)])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(fs::read(&key).unwrap(), before);
    let fp2 = keygen(&["-o", s(&key), "--force"]);
    assert_ne!(fp2, fp);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(
        VerifyingKey::load(&public)
            .unwrap()
            .fingerprint()
            .to_string(),
        fp2
    );

    // --bits is an RSA option: refused with --signing, nothing written.
    let other = t.join("other.sign");
    coffer_cmd()
        .args(["keygen", "--signing", "--bits", "4096", "-o", s(&other)])
        .assert()
        .code(2);
    assert!(!other.exists());
}

#[test]
fn keygen_signing_with_passphrase_file_encrypts_the_key() {
    let t = TestDir::new();
    let key = t.join("locked.sign");
    let pass = t.join("pass.txt");
    fs::write(&pass, "a long enough passphrase\n").unwrap();
    let fp = keygen(&["-o", s(&key), "--passphrase", "--passphrase-file", s(&pass)]);
    assert_eq!(mode(&key), 0o600);
    let pem = fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
        "{pem}"
    );

    // It loads with the passphrase (the first line of the file) and only with it.
    let right = |_: &Path| Ok(Zeroizing::new("a long enough passphrase".to_string()));
    let signer = SigningKey::load(&key, &right).unwrap();
    assert_eq!(signer.fingerprint().to_string(), fp);
    let wrong = |_: &Path| Ok(Zeroizing::new("another passphrase".to_string()));
    let err = SigningKey::load(&key, &wrong).unwrap_err().to_string();
    assert!(
        err.contains("wrong passphrase") && err.contains("locked.sign"),
        "{err}"
    );
    // OpenSSL decrypts it too (PBES2, scrypt + AES-256-CBC) to the same key.
    let der = openssl(&[
        "pkey",
        "-in",
        s(&key),
        "-passin",
        &format!("file:{}", s(&pass)),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert_eq!(
        coffer::Fingerprint(Sha256::digest(&der).into()).to_string(),
        fp
    );

    // A passphrase shorter than 8 characters is refused before anything is written.
    let short = t.join("short.txt");
    fs::write(&short, "short\n").unwrap();
    let weak = t.join("weak.sign");
    let out = coffer_cmd()
        .args(["keygen", "--signing", "--passphrase", "-o", s(&weak)])
        .args(["--passphrase-file", s(&short)])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 8"));
    assert!(!weak.exists() && !t.join("weak.sign.pub").exists());
}
