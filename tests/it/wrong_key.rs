//! Keys and files that cannot open an archive are refused with a typed error that says
//! why: a key that is not a recipient, a public key given as identity, a missing, garbage,
//! passphrase-protected or too small key, and files that are not archives.

use std::fs;
use std::io::ErrorKind;

use crate::common::*;
use coffer::Error;
use coffer::archive::Archive;
use coffer::recipient::{Identity, Recipient, RsaIdentity, RsaRecipient};
use coffer::{Compression, format::header::MAGIC};

/// An archive for alice and bob, in a fresh test folder.
fn archive_for_alice_and_bob() -> (TestDir, std::path::PathBuf) {
    let t = TestDir::new();
    let src = t.join("docs");
    write_file(&src.join("a.txt"), b"for alice and bob only\n", 0o644);
    let archive = t.join("ab.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub(), &bob_pub()],
    );
    (t, archive)
}

#[test]
fn key_that_is_not_a_recipient_is_wrong_key_listing_fingerprints() {
    let (t, archive) = archive_for_alice_and_bob();
    let target = t.join("out");
    let err = try_restore(&archive, &carol_key(), &target, &[], false).unwrap_err();
    let alice = recipient(&alice_pub()).fingerprint().to_string();
    let bob = recipient(&bob_pub()).fingerprint().to_string();
    let carol = identity(&carol_key()).fingerprint().to_string();
    assert!(
        alice.starts_with("SHA256:") && alice.len() == 7 + 64,
        "{alice}"
    );
    match &err {
        Error::WrongKey {
            path,
            identity,
            identity_fp,
            archive_fps,
        } => {
            assert_eq!(path, &archive);
            assert_eq!(identity, &carol_key());
            assert_eq!(identity_fp, &carol);
            assert!(archive_fps.contains(&alice), "{archive_fps}");
            assert!(archive_fps.contains(&bob), "{archive_fps}");
            assert!(!archive_fps.contains(&carol), "{archive_fps}");
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    let msg = err.to_string();
    for needle in [&alice, &bob, &carol, &archive.display().to_string()] {
        assert!(msg.contains(needle.as_str()), "{needle} not in: {msg}");
    }
    // Stanza labels (from the key file names) help the user pick the right key.
    assert!(msg.contains("(alice)") && msg.contains("(bob)"), "{msg}");
    assert!(err.hint().unwrap().contains("-i"), "{:?}", err.hint());
    assert!(!target.exists(), "a failed unlock created the target");
}

#[test]
fn each_recipient_key_unlocks_and_the_key_form_does_not_matter() {
    let (_t, archive) = archive_for_alice_and_bob();
    let a = Archive::open(&archive).unwrap();
    for k in [alice_key(), bob_key(), key("alice.pkcs1.key")] {
        let u = a
            .unlock(&identity(&k))
            .unwrap_or_else(|e| panic!("{}: {e}", k.display()));
        assert_eq!(u.entry_count(), 2, "docs and docs/a.txt");
    }
    // A private key given as a recipient stands for its public half.
    assert_eq!(
        recipient(&alice_key()).fingerprint(),
        recipient(&alice_pub()).fingerprint()
    );
    assert_eq!(
        recipient(&key("alice.pkcs1.key.pub")).fingerprint(),
        recipient(&alice_pub()).fingerprint()
    );
    assert_eq!(
        identity(&alice_key()).fingerprint(),
        recipient(&alice_pub()).fingerprint()
    );
}

#[test]
fn public_key_as_identity_is_refused() {
    for k in [alice_pub(), key("alice.pkcs1.key.pub")] {
        let err = RsaIdentity::load(&k).unwrap_err();
        match &err {
            Error::PublicKeyAsIdentity { path } => assert_eq!(path, &k),
            other => panic!(
                "{}: expected PublicKeyAsIdentity, got {other:?}",
                k.display()
            ),
        }
        assert!(err.to_string().contains(&k.display().to_string()));
        assert!(err.hint().unwrap().contains("private key"));
    }
}

#[test]
fn missing_key_file_is_io_not_found() {
    let t = TestDir::new();
    let missing = t.join("no-such.key");
    let e1 = RsaIdentity::load(&missing).unwrap_err();
    let e2 = RsaRecipient::load(&missing).unwrap_err();
    for err in [e1, e2] {
        match &err {
            Error::Io { path, source } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("expected Io NotFound, got {other:?}"),
        }
        assert!(err.to_string().contains("no-such.key"));
        assert_eq!(err.hint().as_deref(), Some("check the path"));
    }
}

#[test]
fn garbage_key_files_are_bad_key() {
    let t = TestDir::new();
    let pem = fs::read_to_string(alice_key()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"this is not a key\n".to_vec()),
        ("empty", Vec::new()),
        (
            "binary",
            pseudo_random(2000, 3)
                .into_iter()
                .map(|b| b | 0x80)
                .collect(),
        ),
        ("half-pem", pem.as_bytes()[..pem.len() / 2].to_vec()),
        (
            "bad-base64",
            b"-----BEGIN PRIVATE KEY-----\n!!!!not base64!!!!\n-----END PRIVATE KEY-----\n"
                .to_vec(),
        ),
        ("huge", vec![b'A'; 300 * 1024]),
    ];
    for (name, bytes) in cases {
        let p = t.join(name);
        fs::write(&p, &bytes).unwrap();
        for err in [
            RsaIdentity::load(&p).unwrap_err(),
            RsaRecipient::load(&p).unwrap_err(),
        ] {
            match &err {
                Error::BadKey { path, .. } => assert_eq!(path, &p),
                other => panic!("{name}: expected BadKey, got {other:?}"),
            }
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.hint().is_some());
        }
    }
}

#[test]
fn passphrase_protected_key_is_bad_key_with_a_way_out() {
    let k = key("alice.encrypted.key");
    let err = RsaIdentity::load(&k).unwrap_err();
    assert!(matches!(err, Error::BadKey { .. }), "{err:?}");
    assert!(err.to_string().contains("passphrase"), "{err}");
}

/// `name` (private) and `name.pub` are refused as recipients and as an identity, as keys
/// of `bits` bits.
fn assert_too_small(name: &str, bits: usize) {
    let private = key(name);
    let public = key(&format!("{name}.pub"));
    for err in [
        RsaRecipient::load(&public).unwrap_err(),
        RsaRecipient::load(&private).unwrap_err(),
        RsaIdentity::load(&private).unwrap_err(),
    ] {
        match &err {
            Error::KeyTooSmall { bits: b, min, path } => {
                assert_eq!((*b, *min), (bits, 2048));
                assert!(path.to_string_lossy().contains(name));
            }
            other => panic!("expected KeyTooSmall, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("{bits} bits")), "{err}");
    }
}

#[test]
fn key_of_1024_bits_is_too_small_as_recipient_and_as_identity() {
    assert_too_small("small1024.pem", 1024);
    // And no new key that small can be made.
    assert!(matches!(
        RsaIdentity::generate(1024),
        Err(Error::InvalidOption(_))
    ));
}

/// A 2041-bit modulus fills 256 bytes, so counting bytes × 8 let it pass as 2048 bits.
#[test]
fn regression_2041_bit_key_is_refused() {
    assert_too_small("odd2041.pem", 2041);
    let public = key("odd2041.pem.pub");
    // Through the binary: a backup to it is refused before anything is written.
    let t = TestDir::new();
    write_file(&t.join("src/a.txt"), b"data\n", 0o644);
    let out = coffer_cmd()
        .arg("backup")
        .arg(t.join("src"))
        .arg("-o")
        .arg(t.join("a.coffer"))
        .arg("-r")
        .arg(&public)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("2041 bits"), "{stderr}");
    assert!(!t.join("a.coffer").exists());
}

#[test]
fn files_that_are_not_archives_are_refused() {
    let t = TestDir::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", pseudo_random(10_000, 1)),
        (
            "text",
            b"hello, I am a text file that is long enough\n".repeat(10),
        ),
        ("pem", fs::read(alice_key()).unwrap()),
        ("eight", b"12345678".to_vec()),
    ];
    for (name, bytes) in cases {
        let p = t.join(name);
        fs::write(&p, &bytes).unwrap();
        let err = Archive::open(&p).err().expect("opened a non-archive");
        match &err {
            Error::NotAnArchive { path } => assert_eq!(path, &p),
            other => panic!("{name}: expected NotAnArchive, got {other:?}"),
        }
        assert!(err.to_string().contains(&p.display().to_string()));
        assert!(err.hint().unwrap().contains("coffer backup"));
    }
}

#[test]
fn tiny_files_are_not_an_archive_or_truncated() {
    let t = TestDir::new();
    for (name, bytes) in [
        ("three", b"abc".to_vec()),
        ("empty", Vec::new()),
        ("magic-only", MAGIC.to_vec()),
        ("magic-plus", [&MAGIC[..], &[1, 0, 5]].concat()),
    ] {
        let p = t.join(name);
        fs::write(&p, &bytes).unwrap();
        let err = Archive::open(&p).err().expect("opened a tiny file");
        assert!(
            matches!(err, Error::NotAnArchive { .. } | Error::Truncated { .. }),
            "{name}: {err:?}"
        );
        if name.starts_with("magic") {
            assert!(matches!(err, Error::Truncated { .. }), "{name}: {err:?}");
        }
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn missing_archive_is_io_not_found() {
    let t = TestDir::new();
    let p = t.join("nope.coffer");
    let err = Archive::open(&p).err().unwrap();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn identity_debug_output_shows_no_key_material() {
    let id = identity(&alice_key());
    let shown = format!("{id:?}");
    assert!(shown.contains("SHA256:"), "{shown}");
    let pem = fs::read_to_string(alice_key()).unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(&body_line[..20]), "{shown}");
    assert!(shown.len() < 300, "{shown}");
}
