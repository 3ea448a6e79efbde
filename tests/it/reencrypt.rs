//! `coffer rekey --reencrypt`: the archive is streamed into a new one under a new session
//! key and session id, so a removed recipient is locked out even if it kept the old
//! session key; the data restores byte for byte, and a failure leaves the original.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::common::*;
use crate::rekey::{data_section, fixture_v1 as fixture, fp, recipients_of, refused, rekey};
use coffer::Error;
use coffer::archive::{Archive, RekeyOptions};
use coffer::backup::Quiet;
use coffer::format::frame::{FLAG_ZSTD, FRAME_PREFIX};
use coffer::keys::{SessionId, SessionKey, SubKeys};
use coffer::recipient::{Identity, Recipient};
use coffer::seal::{BlockSealer, OpenError, header_mac_ok, open_index, seal_header};

/// What a recipient keeps from any time it could open the archive: the session key, which
/// its own private key unwraps from its stanza.
fn session_key_of(archive: &Path, key: &Path) -> (SessionKey, SessionId) {
    let a = Archive::open(archive).unwrap();
    let id = identity(key);
    let sk = a
        .v1_header()
        .unwrap()
        .recipients
        .iter()
        .find_map(|s| id.unwrap_stanza(s).unwrap())
        .expect("the key has a stanza in this archive");
    (sk, a.v1_header().unwrap().session_id)
}

/// What a removed recipient holding `session_key` can do: write itself a stanza and a
/// header MAC (both need nothing but the session key) over the archive's other bytes.
fn forge_stanza(archive: &Path, out: &Path, me: &dyn Recipient, session_key: &SessionKey) {
    let a = Archive::open(archive).unwrap();
    let mut body = a.v1_header().unwrap().clone();
    body.recipients.push(me.wrap(session_key).unwrap());
    let keys = SubKeys::derive(session_key, &body.session_id);
    let mut bytes = seal_header(&body, &keys);
    bytes.extend_from_slice(&data_section(archive));
    fs::write(out, bytes).unwrap();
}

#[test]
fn regression_rekey_remove_did_not_lock_out_the_removed_key() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let (alice, bob) = (identity(&alice_key()), identity(&bob_key()));
    let alice_pub_key = recipient(&alice_pub());
    let bob_pub_key = recipient(&bob_pub());
    // Bob unwrapped the session key while he was a recipient, and kept it.
    let (old_key, old_id) = session_key_of(&f.archive, &bob_key());
    let before = Archive::open(&f.archive).unwrap();
    let old_header = before.v1_header().unwrap().clone();
    let old_entries = before
        .unlock(&alice)
        .unwrap()
        .v1_index()
        .unwrap()
        .entries
        .clone();
    drop(before);

    // A header-only removal keeps the session key: bob is no longer listed, but his old
    // key still authenticates the header and he writes himself back in.
    let header_only = f.copy("header-only.coffer");
    let opts = RekeyOptions {
        remove: &[fp(&bob_pub())],
        ..Default::default()
    };
    coffer::archive::rekey(&header_only, &alice, &opts, &Quiet).unwrap();
    let a = Archive::open(&header_only).unwrap();
    assert!(matches!(a.unlock(&bob), Err(Error::WrongKey { .. })));
    assert!(header_mac_ok(
        a.v1_raw_header().unwrap(),
        &SubKeys::derive(&old_key, &old_id)
    ));
    let forged = f.t.join("forged-header-only.coffer");
    forge_stanza(&header_only, &forged, &bob_pub_key, &old_key);
    let a = Archive::open(&forged).unwrap();
    let u = a
        .unlock(&bob)
        .expect("the documented limit of a header-only removal");
    assert!(a.verify_blocks(&u, &Quiet).unwrap().is_ok());

    // Re-encrypted: new session key and id, and nothing of the old key opens the result.
    let opts = RekeyOptions {
        remove: &[fp(&bob_pub())],
        reencrypt: true,
        keep: &[&alice_pub_key],
        ..Default::default()
    };
    let report = coffer::archive::rekey(&f.archive, &alice, &opts, &Quiet).unwrap();
    assert!(report.reencrypted);
    assert_ne!(report.session_id, old_id);
    assert_eq!(report.recipients, vec![fp(&alice_pub())]);
    let a = Archive::open(&f.archive).unwrap();
    let new_id = a.v1_header().unwrap().session_id;
    assert_eq!(new_id, report.session_id);
    // Same content, so the same job name, creation time and block layout parameters.
    assert_eq!(a.v1_header().unwrap().created_at, old_header.created_at);
    assert_eq!(a.v1_header().unwrap().job_name, old_header.job_name);
    assert_eq!(a.v1_header().unwrap().block_size, old_header.block_size);
    assert_eq!(a.v1_header().unwrap().compression, old_header.compression);
    assert_eq!(
        a.v1_header().unwrap().recipients[0].label,
        old_header.recipients[0].label
    );

    assert!(matches!(a.unlock(&bob), Err(Error::WrongKey { .. })));
    for s in &a.v1_header().unwrap().recipients {
        assert!(bob.unwrap_stanza(s).unwrap().is_none());
    }
    let u = a.unlock(&alice).unwrap();
    assert_eq!(
        u.v1_index().unwrap().entries,
        old_entries,
        "entries must stay as they were"
    );
    let index_at = a.data_start() + a.v1_trailer().unwrap().index_offset;
    let index_section = fs::read(&f.archive).unwrap()
        [index_at as usize..(index_at + a.v1_trailer().unwrap().index_len) as usize]
        .to_vec();
    let h = a.v1_header().unwrap();
    let last = u.v1_index().unwrap().blocks.len() as u64 - 1;
    let (mut compressed, mut raw) = (0, 0);
    for id in [old_id, new_id] {
        let keys = SubKeys::derive(&old_key, &id);
        assert!(
            !header_mac_ok(a.v1_raw_header().unwrap(), &keys),
            "header MAC under the old key"
        );
        assert_eq!(
            open_index(&keys, &id, index_section.clone()),
            Err(OpenError::Tag),
            "index under the old key"
        );
        let old_sealer = BlockSealer::new(&keys, id, h.block_size, h.segment_size, h.compression());
        let mut frame = Vec::new();
        for (i, r) in u.v1_index().unwrap().blocks.iter().enumerate() {
            a.read_frame(r, &mut frame).unwrap();
            if frame[8] & FLAG_ZSTD != 0 {
                compressed += 1;
            } else {
                raw += 1;
            }
            let mut out = Vec::new();
            assert_eq!(
                old_sealer.open(&mut frame, i as u64, i as u64 == last, &mut out),
                Err(OpenError::Tag),
                "block {i} under the old key"
            );
            assert!(out.is_empty());
        }
    }
    assert!(
        compressed > 0 && raw > 0,
        "both kinds of block re-sealed ({compressed} compressed, {raw} raw)"
    );
    // The stanza bob can still forge gets him no further than the header he wrote.
    let forged = f.t.join("forged-reencrypted.coffer");
    forge_stanza(&f.archive, &forged, &bob_pub_key, &old_key);
    match Archive::open(&forged).unwrap().unlock(&bob) {
        Err(Error::Tampered { what, .. }) => assert_eq!(what, "the index"),
        other => panic!("forged stanza opened: {:?}", other.map(|_| ())),
    }

    // The remaining recipient gets every byte back, and the keyed check passes.
    assert!(a.verify_blocks(&u, &Quiet).unwrap().is_ok());
    drop(a);
    f.restores_with(&f.archive, &alice_key(), "alice-out");
    assert!(partial_files(f.t.path()).is_empty());
}

#[test]
fn reencrypt_through_the_binary_removes_a_key_and_keeps_the_data() {
    let f = fixture(&[&alice_pub(), &bob_pub(), &carol_pub()]);
    let old_copy = f.copy("old-copy.coffer");
    let old = Archive::open(&f.archive).unwrap();
    let (old_session, old_labels) = (
        old.session_id_hex(),
        old.v1_header()
            .unwrap()
            .recipients
            .iter()
            .map(|s| s.label.clone())
            .collect::<Vec<_>>(),
    );
    drop(old);

    // Carol stays, and her stanza needs her public key.
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .args(["--reencrypt", "--remove"])
            .arg(bob_pub()),
    );
    assert!(
        e.contains("--keep") && e.contains(&fp(&carol_pub()).to_string()) && e.contains("carol"),
        "{e}"
    );
    assert!(
        !e.contains(&fp(&alice_pub()).to_string()),
        "-i's key counts: {e}"
    );
    // Bob's key is not one that stays.
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .args(["--reencrypt", "--remove"])
            .arg(bob_pub())
            .arg("--keep")
            .arg(carol_pub())
            .arg("--keep")
            .arg(bob_pub()),
    );
    assert!(e.contains("not a recipient that stays"), "{e}");
    // --keep means nothing without --reencrypt.
    let before = fs::read(&f.archive).unwrap();
    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(bob_pub())
        .arg("--keep")
        .arg(carol_pub())
        .assert()
        .code(2);
    assert!(fs::read(&f.archive).unwrap() == before);

    let out = rekey(&f.archive, &alice_key())
        .args(["--reencrypt", "--remove"])
        .arg(bob_pub())
        .arg("--keep")
        .arg(carol_pub())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let a = Archive::open(&f.archive).unwrap();
    let new_session = a.session_id_hex();
    assert_ne!(new_session, old_session);
    assert!(
        stdout.contains(&format!("removed:   {}", fp(&bob_pub()))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("session:   {new_session} (new; ")),
        "{stdout}"
    );
    // No warning: only the note that old copies are out of reach.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("note: copies of the old file"),
        "{stderr}"
    );
    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&alice_pub()), fp(&carol_pub())]
    );
    let labels: Vec<String> = a
        .v1_header()
        .unwrap()
        .recipients
        .iter()
        .map(|s| s.label.clone())
        .collect();
    assert_eq!(labels, vec![old_labels[0].clone(), old_labels[2].clone()]);
    drop(a);

    match try_restore(&f.archive, &bob_key(), &f.t.join("bob-new"), &[], false) {
        Err(Error::WrongKey { .. }) => {}
        other => panic!("bob opens the re-encrypted file: {:?}", other.map(|_| ())),
    }
    f.restores_with(&f.archive, &alice_key(), "alice-out");
    f.restores_with(&f.archive, &carol_key(), "carol-out");
    coffer_cmd().arg("verify").arg(&f.archive).assert().code(0);
    coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg("-i")
        .arg(carol_key())
        .assert()
        .code(0);
    // What the note says: a copy of the old file is another matter.
    f.restores_with(&old_copy, &bob_key(), "bob-old-copy");
    assert_eq!(
        f.dir_names(),
        vec![
            "a.coffer",
            "alice-out",
            "bob-old-copy",
            "carol-out",
            "old-copy.coffer",
            "src"
        ]
    );
}

#[test]
fn reencrypt_alone_rotates_the_session_key() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let old_data = data_section(&f.archive);
    let (old_key, old_id) = session_key_of(&f.archive, &bob_key());
    let out = rekey(&f.archive, &alice_key())
        .arg("--reencrypt")
        .arg("--keep")
        .arg(bob_pub())
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&alice_pub()), fp(&bob_pub())]
    );
    let a = Archive::open(&f.archive).unwrap();
    assert_ne!(a.v1_header().unwrap().session_id, old_id);
    let (new_key, _) = session_key_of(&f.archive, &bob_key());
    let old_keys = SubKeys::derive(&old_key, &a.v1_header().unwrap().session_id);
    assert!(!header_mac_ok(a.v1_raw_header().unwrap(), &old_keys));
    assert!(header_mac_ok(
        a.v1_raw_header().unwrap(),
        &SubKeys::derive(&new_key, &a.v1_header().unwrap().session_id)
    ));
    drop(a);
    assert!(data_section(&f.archive) != old_data);
    f.restores_with(&f.archive, &bob_key(), "bob-out");
    f.restores_with(&f.archive, &alice_key(), "alice-out");
}

#[test]
fn reencrypt_of_a_damaged_block_fails_and_leaves_the_original() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let original = fs::read(&f.archive).unwrap();
    let a = Archive::open(&f.archive).unwrap();
    let u = a.unlock(&identity(&alice_key())).unwrap();
    // A block past the first, so the new archive is well under way when it is met.
    let k = u.v1_index().unwrap().blocks.len() / 2;
    assert!(k > 1);
    let at = (a.data_start() + u.v1_index().unwrap().blocks[k].offset) as usize;
    let len = u.v1_index().unwrap().blocks[k].frame_len as usize;
    drop(a);

    for (forged, expect) in [
        (true, "authentication failed"),
        (false, "checksum mismatch"),
    ] {
        let mut damaged = original.clone();
        damaged[at + FRAME_PREFIX + 7] ^= 0x20;
        if forged {
            let crc = coffer::format::crc32c(&damaged[at..at + len - 4]);
            damaged[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
        }
        fs::write(&f.archive, &damaged).unwrap();
        let e = refused(
            &f,
            rekey(&f.archive, &alice_key())
                .args(["--reencrypt", "--remove"])
                .arg(bob_pub()),
        );
        assert!(
            e.contains(&format!("block {k}")) && e.contains(expect),
            "{e}"
        );
        assert!(partial_files(f.t.path()).is_empty());
    }

    // Stopped by a signal part way: the same, through the library.
    fs::write(&f.archive, &original).unwrap();
    let (alice, bob) = (recipient(&alice_pub()), recipient(&bob_pub()));
    let opts = RekeyOptions {
        reencrypt: true,
        keep: &[&alice, &bob],
        cancel: Some(Arc::new(AtomicBool::new(true))),
        signing_key: None,
        ..Default::default()
    };
    let err =
        coffer::archive::rekey(&f.archive, &identity(&alice_key()), &opts, &Quiet).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(fs::read(&f.archive).unwrap() == original);
    assert_eq!(f.dir_names(), vec!["a.coffer", "src"]);
}

#[test]
fn reencrypt_an_archive_without_data_blocks() {
    let t = TestDir::new();
    let src = t.join("only-dirs");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/empty"), b"").unwrap();
    let archive: PathBuf = t.join("e.coffer");
    backup_v1_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        coffer::Compression::None,
        &[&alice_pub()],
    );
    assert_eq!(
        Archive::open(&archive)
            .unwrap()
            .v1_trailer()
            .unwrap()
            .block_count,
        0
    );
    rekey(&archive, &alice_key())
        .arg("--reencrypt")
        .assert()
        .code(0);
    let target = t.join("out");
    try_restore(&archive, &alice_key(), &target, &[], false).unwrap();
    assert_trees_equal(&src, &target.join("only-dirs"));
}
