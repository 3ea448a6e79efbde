//! Unit tests of signing keys: RFC 8032 vectors, key files (PEM, encrypted, OpenSSH), refusals, strict verification.

use super::*;
use ed25519_dalek::Verifier;
use std::process::Command;

/// RFC 8032 §7.1 TEST 1: secret key, public key, and the signature of the empty message.
const T1_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const T1_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const T1_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
/// TEST 1's secret as openssl writes it (`openssl pkey -inform DER` of the RFC 8410
/// PKCS#8 DER `302e020100300506032b657004220420 ‖ secret`), and its public key
/// (`openssl pkey -pubout`).
const T1_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
    MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
    -----END PRIVATE KEY-----\n";
const T1_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
    MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
    -----END PUBLIC KEY-----\n";
/// `openssl pkey -pubin -in t1.pub -outform DER | sha256sum` for TEST 1's public key,
/// computed once with OpenSSL 3.0.19 and hard-coded, so the test needs no openssl.
const T1_FINGERPRINT: &str = "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9";

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn no_passphrase(p: &Path) -> Result<Zeroizing<String>> {
    panic!("a passphrase was asked for {}", p.display())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn detail(e: Error) -> String {
    match e {
        Error::BadKey { detail, .. } => detail,
        other => panic!("expected BadKey, got {other:?}"),
    }
}

/// `ssh-keygen` if it is installed; tests that need it print why they skip.
fn ssh_keygen(args: &[&str]) -> bool {
    match Command::new("ssh-keygen").args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!(
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("skipped: ssh-keygen is not installed ({e})");
            false
        }
    }
}

#[test]
fn rfc8032_test1_fingerprint_is_openssls_spki_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SigningKey::load(&write(dir.path(), "t1", T1_PRIVATE_PEM), &no_passphrase).unwrap();
    let vk = VerifyingKey::load(&write(dir.path(), "t1.pub", T1_PUBLIC_PEM)).unwrap();
    assert_eq!(sk.verifying_key().to_bytes(), unhex::<32>(T1_PUBLIC));
    assert_eq!(vk, *sk.verifying_key());
    assert_eq!(sk.fingerprint().to_hex(), T1_FINGERPRINT);
    assert_eq!(vk.fingerprint().to_hex(), T1_FINGERPRINT);
    // The hard-coded prefix is the DER the spki encoder writes.
    let der = vk.key.to_public_key_der().unwrap();
    assert_eq!(&der.as_bytes()[..12], &SPKI_PREFIX);
    assert_eq!(&der.as_bytes()[12..], &unhex::<32>(T1_PUBLIC));
    // And the key signs as RFC 8032 says.
    let sig = sk.sign(b"");
    assert_eq!(sig, unhex::<64>(T1_SIG));
    assert!(vk.verify_strict(b"", &sig));
    assert_eq!(
        sk.key.to_bytes(),
        unhex::<32>(T1_SECRET),
        "openssl's PEM holds TEST 1's secret"
    );
    // What coffer writes is byte for byte what openssl writes, so OpenSSL 3.0 (which
    // refuses PKCS#8 v2 Ed25519 keys) reads coffer's keys.
    assert_eq!(*sk.to_pkcs8_pem().unwrap(), T1_PRIVATE_PEM);
    assert_eq!(vk.to_pem().unwrap(), T1_PUBLIC_PEM);
}

#[test]
fn sign_then_verify_strict_round_trip() {
    let a = SigningKey::generate().unwrap();
    let b = SigningKey::generate().unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    let msg = b"coffer/v2/signature transcript";
    let sig = a.sign(msg);
    assert!(a.verifying_key().verify_strict(msg, &sig));
    assert_eq!(sig, a.sign(msg), "Ed25519 is deterministic");
    assert!(!a.verifying_key().verify_strict(b"another message", &sig));
    assert!(!b.verifying_key().verify_strict(msg, &sig));
    for bit in [0, 7, 255, 256, 511] {
        let mut flipped = sig;
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !a.verifying_key().verify_strict(msg, &flipped),
            "bit {bit} flipped"
        );
    }
}

#[test]
fn non_canonical_s_is_refused() {
    // S + L is the same scalar mod L: a second encoding of a valid signature, which a
    // lax verifier would accept (malleability). Little-endian L = 2^252 + 2774…8493.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let sk = SigningKey::generate().unwrap();
    let sig = sk.sign(b"m");
    let mut malleated = sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        malleated[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L < 2^256 since S < L < 2^253");
    assert!(sk.verifying_key().verify_strict(b"m", &sig));
    assert!(!sk.verifying_key().verify_strict(b"m", &malleated));
}

#[test]
fn regression_small_order_key_would_verify_anything() {
    // A = identity point, R = identity, S = 0: lax verification accepts this for every
    // message. Such a key is refused when loaded, whatever the file.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let lax = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    assert!(
        lax.verify(b"any", &ed25519_dalek::Signature::from_bytes(&forged))
            .is_ok(),
        "the forgery the refusal is for"
    );
    let err = VerifyingKey::from_bytes(&identity, "x".into(), Path::new("weak.pub")).unwrap_err();
    assert!(detail(err).contains("small-order"));
    assert!(
        lax.verify_strict(b"any", &ed25519_dalek::Signature::from_bytes(&forged))
            .is_err()
    );
}

#[test]
fn pem_private_and_public_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SigningKey::generate().unwrap();
    let private = write(dir.path(), "host.sign", &sk.to_pkcs8_pem().unwrap());
    let public = write(
        dir.path(),
        "host.sign.pub",
        &sk.verifying_key().to_pem().unwrap(),
    );
    let loaded = SigningKey::load(&private, &no_passphrase).unwrap();
    assert_eq!(loaded.fingerprint(), sk.fingerprint());
    assert_eq!(loaded.source(), private);
    assert_eq!(loaded.sign(b"x"), sk.sign(b"x"));
    let vk = VerifyingKey::load(&public).unwrap();
    assert_eq!(vk.fingerprint(), sk.fingerprint());
    assert_eq!(vk.label(), "host");
    assert!(vk.verify_strict(b"x", &loaded.sign(b"x")));
    // Each file in the other's place is refused, saying which half is needed.
    assert!(detail(SigningKey::load(&public, &no_passphrase).unwrap_err()).contains("public key"));
    assert!(detail(VerifyingKey::load(&private).unwrap_err()).contains("private key"));
}

#[test]
fn encrypted_pem_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let sk = SigningKey::generate().unwrap();
    let pem = sk.to_encrypted_pkcs8_pem("correct horse battery").unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let path = write(dir.path(), "host.sign", &pem);
    let asked = std::cell::Cell::new(0);
    let good = |p: &Path| {
        assert_eq!(p, path);
        asked.set(asked.get() + 1);
        Ok(Zeroizing::new("correct horse battery".to_string()))
    };
    let loaded = SigningKey::load(&path, &good).unwrap();
    assert_eq!(loaded.fingerprint(), sk.fingerprint());
    assert_eq!(asked.get(), 1);
    let wrong = |_: &Path| Ok(Zeroizing::new("incorrect horse".to_string()));
    assert!(detail(SigningKey::load(&path, &wrong).unwrap_err()).contains("wrong passphrase"));
}

#[test]
fn openssh_keys_give_the_same_fingerprint_as_pem() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("id_plain");
    let locked = dir.path().join("id_locked");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    if !ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "host1",
        "-f",
        &p(&plain),
    ]) || !ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "s3cret pass",
        "-f",
        &p(&locked),
    ]) {
        return;
    }
    let sk = SigningKey::load(&plain, &no_passphrase).unwrap();
    let line = VerifyingKey::load(&dir.path().join("id_plain.pub")).unwrap();
    assert_eq!(sk.fingerprint(), line.fingerprint());
    assert_eq!(line.label(), "host1", "the OpenSSH comment names the key");
    assert!(line.verify_strict(b"m", &sk.sign(b"m")));
    // The coffer fingerprint is SHA-256 of the SPKI form of the same 32 bytes.
    let pem = write(dir.path(), "as.pub", &sk.verifying_key().to_pem().unwrap());
    assert_eq!(
        VerifyingKey::load(&pem).unwrap().fingerprint(),
        sk.fingerprint()
    );

    let pass = |_: &Path| Ok(Zeroizing::new("s3cret pass".to_string()));
    let sk2 = SigningKey::load(&locked, &pass).unwrap();
    let line2 = VerifyingKey::load(&dir.path().join("id_locked.pub")).unwrap();
    assert_eq!(sk2.fingerprint(), line2.fingerprint());
    let wrong = |_: &Path| Ok(Zeroizing::new("not it".to_string()));
    assert!(detail(SigningKey::load(&locked, &wrong).unwrap_err()).contains("wrong passphrase"));
}

#[test]
fn rsa_and_ecdsa_keys_are_refused_as_signers() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = crate::recipient::RsaIdentity::generate(2048).unwrap();
    let private = write(dir.path(), "ops.key", &rsa.to_pkcs8_pem().unwrap());
    let public = write(
        dir.path(),
        "ops.key.pub",
        &rsa.to_recipient("ops".into()).unwrap().to_pem().unwrap(),
    );
    let e = detail(SigningKey::load(&private, &no_passphrase).unwrap_err());
    assert!(
        e.contains("an RSA key") && e.contains("must be Ed25519"),
        "{e}"
    );
    let e = detail(VerifyingKey::load(&public).unwrap_err());
    assert!(
        e.contains("an RSA key") && e.contains("must be Ed25519"),
        "{e}"
    );

    let ssh = dir.path().join("id_rsa");
    if !ssh_keygen(&[
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "",
        "-f",
        ssh.to_str().unwrap(),
    ]) {
        return;
    }
    let e = detail(SigningKey::load(&ssh, &no_passphrase).unwrap_err());
    assert!(
        e.contains("ssh-rsa") && e.contains("must be Ed25519"),
        "{e}"
    );
    let e = detail(VerifyingKey::load(&dir.path().join("id_rsa.pub")).unwrap_err());
    assert!(e.contains("line 1") && e.contains("ssh-rsa"), "{e}");
    let ec = dir.path().join("id_ecdsa");
    assert!(ssh_keygen(&[
        "-q",
        "-t",
        "ecdsa",
        "-N",
        "",
        "-f",
        ec.to_str().unwrap()
    ]));
    let e = detail(SigningKey::load(&ec, &no_passphrase).unwrap_err());
    assert!(e.contains("ECDSA") && e.contains("must be Ed25519"), "{e}");
    let e = detail(VerifyingKey::load(&dir.path().join("id_ecdsa.pub")).unwrap_err());
    assert!(e.contains("ecdsa") && e.contains("must be Ed25519"), "{e}");
}

#[test]
fn allowed_signers_file_takes_lines_and_pem_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = [(); 3].map(|()| SigningKey::generate().unwrap());
    let ssh_line = |k: &SigningKey, comment: &str| {
        let public = ssh_key::public::Ed25519PublicKey(k.verifying_key().to_bytes());
        ssh_key::PublicKey::new(public.into(), comment)
            .to_openssh()
            .unwrap()
    };
    let text = format!(
        "# backup hosts\n\n{}\n  {}  \n{}",
        ssh_line(&a, "host-a"),
        ssh_line(&b, ""),
        c.verifying_key().to_pem().unwrap()
    );
    let path = write(dir.path(), "signers", &text);
    let keys = load_allowed_signers(&path).unwrap();
    let fps: Vec<_> = keys.iter().map(VerifyingKey::fingerprint).collect();
    assert_eq!(fps, [a.fingerprint(), b.fingerprint(), c.fingerprint()]);
    assert_eq!(keys[0].label(), "host-a");
    assert_eq!(keys[1].label(), "signers");
    let e = detail(VerifyingKey::load(&path).unwrap_err());
    assert!(e.contains("holds 3 keys"), "{e}");

    let twice = write(
        dir.path(),
        "twice",
        &format!("{text}\n{}\n", ssh_line(&a, "again")),
    );
    let e = detail(load_allowed_signers(&twice).unwrap_err());
    assert!(e.contains("line 9") && e.contains("listed twice"), "{e}");
    let empty = write(dir.path(), "empty", "# nobody yet\n\n");
    assert!(detail(load_allowed_signers(&empty).unwrap_err()).contains("no key"));
    let private = write(
        dir.path(),
        "mixed",
        &format!("{}\n{}", ssh_line(&a, ""), *a.to_pkcs8_pem().unwrap()),
    );
    let e = detail(load_allowed_signers(&private).unwrap_err());
    assert!(e.contains("line 2") && e.contains("private key"), "{e}");
    let cut = write(
        dir.path(),
        "cut",
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n",
    );
    assert!(detail(load_allowed_signers(&cut).unwrap_err()).contains("no END line"));
    let junk = write(dir.path(), "junk", "principal@example ssh-ed25519 AAAA\n");
    assert!(detail(load_allowed_signers(&junk).unwrap_err()).contains("line 1"));
}

#[test]
fn debug_output_redacts_the_secret() {
    let sk = SigningKey::new(
        ed25519_dalek::SigningKey::from_bytes(&[0xAB; 32]),
        Path::new("host.sign"),
    )
    .unwrap();
    let pem = sk.to_pkcs8_pem().unwrap();
    let body = pem.lines().nth(1).unwrap().to_string();
    let shown = format!("{sk:?} {:?}", sk.verifying_key());
    assert!(shown.contains("redacted"), "{shown}");
    assert!(shown.contains(&sk.fingerprint().to_string()), "{shown}");
    for leak in ["171", "ab, ab", "abab", "ABAB", &body[16..40]] {
        assert!(!shown.contains(leak), "{leak:?} in {shown}");
    }
}
