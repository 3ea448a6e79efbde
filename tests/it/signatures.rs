//! Signed archives (docs/FORMAT.md v2.9): `backup --sign-with` signs, `verify --signer`
//! checks the signature without any decryption key (and with `-i` the keyed way too),
//! `restore --signer` refuses an unsigned archive, another signer or changed signed content
//! before writing anything. Forgeries are crafted the way their authors could: a party
//! holding only public keys writes with the library, a recipient re-seals a block under the
//! session key its private key unwraps, a storage attacker swaps a stanza or flips bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::*;
use coffer::Error;
use coffer::archive::Archive;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::format::Compression;
use coffer::format::frame::FRAME_PREFIX;
use coffer::format::v2::validate::{decode_block_chunk, decode_chunk, decode_directory};
use coffer::format::v2::{META_BLOCKS, META_DIRECTORY, META_INDEX};
use coffer::keys::{SessionId, SessionKey, SubKeys};
use coffer::recipient::{Identity, Recipient};
use coffer::seal::meta::{meta_frame_tag, open_meta, seal_header_v2, seal_meta};
use coffer::seal::{BlockSealer, Entropy};
use coffer::signing::{SigningKey, VerifyingKey};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A signing key pair written as `name` (PKCS#8 PEM, 0600) and `name.pub`.
fn signing_pair(t: &TestDir, name: &str) -> (PathBuf, PathBuf, SigningKey) {
    let key = SigningKey::generate().unwrap();
    let private = t.join(name);
    let public = t.join(format!("{name}.pub"));
    write_file(&private, key.to_pkcs8_pem().unwrap().as_bytes(), 0o600);
    fs::write(&public, key.verifying_key().to_pem().unwrap()).unwrap();
    (private, public, key)
}

/// A source tree of a few files, the larger one spanning several 64 KiB blocks.
fn source(t: &TestDir) -> PathBuf {
    let src = t.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write_file(&src.join("hello.txt"), b"hello, signed world\n", 0o644);
    write_file(
        &src.join("sub/data.bin"),
        &pseudo_random(200_000, 17),
        0o600,
    );
    src
}

/// `coffer backup` of `src` for alice, uncompressed 64 KiB blocks (so a re-sealed block
/// keeps its frame length), with `extra` arguments.
fn cli_backup(src: &Path, out: &Path, extra: &[&str]) {
    coffer_cmd()
        .args(["backup", s(src), "-o", s(out), "-r", s(&alice_pub())])
        .args(["--block-size", "64K", "--compression", "none", "-q"])
        .args(extra)
        .assert()
        .code(0);
}

/// Run coffer; returns exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = coffer_cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_fails(args: &[&str], needle: &str) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?} must fail\nstdout: {out}\nstderr: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in\n{err}"
    );
    err
}

fn assert_ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?} must pass\nstdout: {out}\nstderr: {err}");
    out
}

/// The restore target holds nothing (or does not exist).
fn assert_nothing_written(target: &Path) {
    if target.exists() {
        let left: Vec<_> = fs::read_dir(target).unwrap().collect();
        assert!(left.is_empty(), "restore wrote {left:?} before refusing");
    }
}

/// What a recipient holding `key` has: the session's v2 sub-keys, unwrapped from its stanza.
fn recipient_keys(archive: &Path, key: &Path) -> (SubKeys, SessionId) {
    let a = Archive::open(archive).unwrap();
    let h = &a.v2().unwrap().header.body;
    let id = identity(key);
    let session_key = h
        .recipients
        .iter()
        .find_map(|st| id.unwrap_stanza(st).unwrap())
        .expect("a stanza for this key");
    let sid = h.fields.session_id;
    (SubKeys::derive_v2(&session_key, &sid), sid)
}

/// What a recipient can do: change block 0's plaintext, seal it again under the session
/// key, and record the new tag in the block-table chunk and the directory (both re-sealed),
/// keeping every length, the trailer and the signature. Every MAC holds; only the signature
/// knows that the content is not the signer's.
fn recipient_forges(archive: &Path, out: &Path) {
    let (keys, sid) = recipient_keys(archive, &alice_key());
    let a = Archive::open(archive).unwrap();
    let v = a.v2().unwrap();
    let f = &v.header.body.fields;
    let t = v.trailer;
    let mut bytes = fs::read(archive).unwrap();
    let start = a.data_start() as usize;
    // Block 0: a full, uncompressed block at the start of the data section.
    let ct_len = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    let frame_len = FRAME_PREFIX + ct_len + 36;
    let sealer = BlockSealer::new(&keys, sid, f.block_size, f.segment_size, Compression::None);
    let mut plain = Vec::new();
    sealer
        .open(
            &mut bytes[start..start + frame_len].to_vec(),
            0,
            false,
            &mut plain,
        )
        .unwrap();
    plain[0] ^= 0x20;
    let mut frame = vec![0u8; FRAME_PREFIX];
    frame.extend_from_slice(&plain);
    sealer.seal(&mut frame, 0, false);
    assert_eq!(frame.len(), frame_len);
    let new_tag: [u8; 32] = frame[frame_len - 36..frame_len - 4].try_into().unwrap();
    bytes[start..start + frame_len].copy_from_slice(&frame);

    let dir_at = start + (t.index_offset + t.index_len) as usize - t.directory_len as usize;
    let dir_frame = bytes[dir_at..dir_at + t.directory_len as usize].to_vec();
    let mut dir = decode_directory(
        &open_meta(&keys, &sid, META_DIRECTORY, 0, true, &dir_frame, None).unwrap(),
    )
    .unwrap();
    let bc = dir.block_chunks[0];
    let bc_at = start + bc.offset as usize;
    let bc_frame = bytes[bc_at..bc_at + bc.frame_len as usize].to_vec();
    let last = dir.block_chunks.len() == 1;
    let mut records = decode_block_chunk(
        &open_meta(&keys, &sid, META_BLOCKS, 0, last, &bc_frame, Some(&bc.tag)).unwrap(),
    )
    .unwrap();
    records[0].tag = new_tag;
    // The file whose bytes changed (the first in the stream) gets its content hash fixed,
    // in the index chunk that holds it, so that every check a key can make passes.
    let ic = dir.chunks[0].clone();
    let ic_at = start + ic.offset as usize;
    let ic_frame = bytes[ic_at..ic_at + ic.frame_len as usize].to_vec();
    let ic_last = dir.chunks.len() == 1;
    let mut entries = decode_chunk(
        &open_meta(
            &keys,
            &sid,
            META_INDEX,
            0,
            ic_last,
            &ic_frame,
            Some(&ic.tag),
        )
        .unwrap(),
    )
    .unwrap();
    let e = entries
        .iter_mut()
        .find(|e| e.extents.first().is_some_and(|x| x.offset == 0))
        .expect("the file at stream offset 0");
    // A small file (one window): its content hash is plain BLAKE3 of its bytes (v2.4),
    // computed here with the blake3 crate, not coffer's hasher.
    let mut h = blake3::Hasher::new();
    for x in &e.extents {
        assert!(x.offset + x.len <= plain.len() as u64, "a small first file");
        h.update(&plain[x.offset as usize..(x.offset + x.len) as usize]);
    }
    e.content_hash = Some(*h.finalize().as_bytes());
    let new_ic = seal_meta(
        &keys,
        &sid,
        META_INDEX,
        0,
        ic_last,
        &postcard::to_stdvec(&entries).unwrap(),
        false,
        Entropy::Os,
    );
    assert_eq!(new_ic.len(), ic_frame.len());
    bytes[ic_at..ic_at + new_ic.len()].copy_from_slice(&new_ic);
    dir.chunks[0].tag = meta_frame_tag(&new_ic);
    let plain = postcard::to_stdvec(&records).unwrap();
    let new_bc = seal_meta(
        &keys,
        &sid,
        META_BLOCKS,
        0,
        last,
        &plain,
        false,
        Entropy::Os,
    );
    assert_eq!(new_bc.len(), bc_frame.len());
    bytes[bc_at..bc_at + new_bc.len()].copy_from_slice(&new_bc);
    dir.block_chunks[0].tag = meta_frame_tag(&new_bc);
    let plain = postcard::to_stdvec(&dir).unwrap();
    let new_dir = seal_meta(
        &keys,
        &sid,
        META_DIRECTORY,
        0,
        true,
        &plain,
        false,
        Entropy::Os,
    );
    assert_eq!(new_dir.len(), dir_frame.len());
    bytes[dir_at..dir_at + new_dir.len()].copy_from_slice(&new_dir);
    fs::write(out, bytes).unwrap();
}

/// Offset of the signature section (72 bytes before the 44-byte trailer).
fn signature_at(archive: &Path) -> usize {
    fs::metadata(archive).unwrap().len() as usize - 44 - 72
}

fn fix_signature_crc(bytes: &mut [u8], at: usize) {
    let crc = crc32c::crc32c(&bytes[at..at + 68]);
    bytes[at + 68..at + 72].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn signed_archive_verifies_without_a_key_and_with_one_and_restores_with_signer() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, public, key) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    let fp = key.fingerprint().to_string();

    let out = assert_ok(&["verify", s(&archive), "--signer", s(&public)]);
    assert!(
        out.contains(&format!("signature by {fp} verified")),
        "{out}"
    );
    let out = assert_ok(&[
        "verify",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--signer",
        s(&public),
    ]);
    assert!(out.contains("keyed") && out.contains(&fp), "{out}");
    // An allowed-signers file naming another key too.
    let (_, other_pub, _) = signing_pair(&t, "other.sign");
    let allowed = t.join("allowed");
    let text = fs::read_to_string(&other_pub).unwrap() + &fs::read_to_string(&public).unwrap();
    fs::write(&allowed, text).unwrap();
    assert_ok(&["verify", s(&archive), "--signers", s(&allowed)]);

    let target = t.join("out");
    assert_ok(&[
        "restore",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--to",
        s(&target),
        "--signer",
        s(&public),
        "-q",
    ]);
    assert_trees_equal(&src, &target.join("src"));

    let out = assert_ok(&["info", s(&archive)]);
    assert!(
        out.contains(&format!("signed by {fp} (not checked)")),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&assert_ok(&["info", "--json", s(&archive)])).unwrap();
    let doc = json.get("archives").and_then(|a| a.get(0)).unwrap_or(&json);
    assert_eq!(doc["signer"], serde_json::json!(fp), "{json}");
}

#[test]
fn public_key_forgery_restores_without_signer_and_is_refused_with_it() {
    let t = TestDir::new();
    let src = source(&t);
    let (_, public, _) = signing_pair(&t, "host.sign");
    // Anyone holding alice's public key writes a valid, unsigned archive for her.
    let archive = t.join("forged.coffer");
    backup_with(
        &[&src],
        &archive,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    let out = assert_ok(&["info", s(&archive)]);
    assert!(out.contains("signature:   unsigned"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&assert_ok(&["info", "--json", s(&archive)])).unwrap();
    let doc = json.get("archives").and_then(|a| a.get(0)).unwrap_or(&json);
    assert!(doc["signer"].is_null(), "{json}");

    let target = t.join("plain");
    assert_ok(&[
        "restore",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--to",
        s(&target),
        "-q",
    ]);
    let target = t.join("pinned");
    assert_fails(
        &[
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "--signer",
            s(&public),
        ],
        "not signed",
    );
    assert_nothing_written(&target);
    assert_fails(
        &["verify", s(&archive), "--signer", s(&public)],
        "not signed",
    );

    // The library says which error it is, keyless and keyed.
    let keys = coffer::load_allowed_signers(&public).unwrap();
    let a = Archive::open(&archive).unwrap();
    assert!(matches!(
        a.verify_signature_keyless(&keys, &Quiet),
        Err(Error::SignatureRequired { .. })
    ));
    let u = a.unlock(&identity(&alice_key())).unwrap();
    assert!(matches!(
        u.verify_signature(&a, &keys),
        Err(Error::SignatureRequired { .. })
    ));

    // A v1 archive cannot be signed at all.
    let v1 = t.join("v1.coffer");
    backup_v1_with(
        &[&src],
        &v1,
        SMALL_BLOCK,
        Compression::None,
        &[&alice_pub()],
    );
    assert_fails(&["verify", s(&v1), "--signer", s(&public)], "not signed");
    let target = t.join("v1-out");
    assert_fails(
        &[
            "restore",
            s(&v1),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "--signer",
            s(&public),
        ],
        "not signed",
    );
    assert_nothing_written(&target);
}

#[test]
fn signed_by_another_key_is_an_unknown_signer() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, _, key) = signing_pair(&t, "intruder.sign");
    let (_, trusted, _) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    let fp = key.fingerprint().to_string();
    let err = assert_fails(
        &["verify", s(&archive), "--signer", s(&trusted)],
        "not an allowed signer",
    );
    assert!(err.contains(&fp), "{err}");
    let target = t.join("out");
    assert_fails(
        &[
            "restore",
            s(&archive),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "--signer",
            s(&trusted),
        ],
        "not an allowed signer",
    );
    assert_nothing_written(&target);
    let keys = coffer::load_allowed_signers(&trusted).unwrap();
    assert!(matches!(
        Archive::open(&archive).unwrap().verify_signature_keyless(&keys, &Quiet),
        Err(Error::UnknownSigner { fingerprint, .. }) if fingerprint == fp
    ));
}

#[test]
fn recipient_forged_block_is_a_bad_signature_but_restores_without_signer() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, public, _) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    let forged = t.join("forged.coffer");
    recipient_forges(&archive, &forged);

    // Every MAC holds: without --signer, a recipient's forgery restores (why signatures
    // exist), and its content is not the signer's.
    let target = t.join("plain");
    assert_ok(&[
        "restore",
        s(&forged),
        "-i",
        s(&alice_key()),
        "--to",
        s(&target),
        "-q",
    ]);
    assert_eq!(
        fs::read(target.join("src/hello.txt")).unwrap(),
        b"Hello, signed world\n",
        "the recipient's content"
    );
    assert_ok(&["verify", s(&forged), "-i", s(&alice_key())]);

    assert_fails(
        &["verify", s(&forged), "--signer", s(&public)],
        "does not verify",
    );
    assert_fails(
        &[
            "verify",
            s(&forged),
            "-i",
            s(&alice_key()),
            "--signer",
            s(&public),
        ],
        "does not verify",
    );
    let target = t.join("pinned");
    assert_fails(
        &[
            "restore",
            s(&forged),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "--signer",
            s(&public),
        ],
        "does not verify",
    );
    assert_nothing_written(&target);
    let keys = coffer::load_allowed_signers(&public).unwrap();
    let a = Archive::open(&forged).unwrap();
    assert!(matches!(
        a.verify_signature_keyless(&keys, &Quiet),
        Err(Error::BadSignature { .. })
    ));
    let u = a.unlock(&identity(&alice_key())).unwrap();
    assert!(matches!(
        u.verify_signature(&a, &keys),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn flipped_signature_bytes_are_a_bad_signature_or_corrupt() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, public, _) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    let at = signature_at(&archive);
    let original = fs::read(&archive).unwrap();

    // Signature bytes changed, CRC fixed: the structure holds, the signature does not.
    let flipped = t.join("flipped.coffer");
    let mut bytes = original.clone();
    bytes[at + 4 + 10] ^= 0x01;
    fix_signature_crc(&mut bytes, at);
    fs::write(&flipped, &bytes).unwrap();
    assert_fails(
        &["verify", s(&flipped), "--signer", s(&public)],
        "does not verify",
    );
    let target = t.join("pinned");
    assert_fails(
        &[
            "restore",
            s(&flipped),
            "-i",
            s(&alice_key()),
            "--to",
            s(&target),
            "--signer",
            s(&public),
        ],
        "does not verify",
    );
    assert_nothing_written(&target);
    // Not asked for, the signature is not checked (only its structure).
    assert_ok(&[
        "restore",
        s(&flipped),
        "-i",
        s(&alice_key()),
        "--to",
        s(&t.join("plain")),
        "-q",
    ]);

    // Without the CRC fixed, every command refuses the archive at open (Corrupt).
    let damaged = t.join("damaged.coffer");
    let mut bytes = original.clone();
    bytes[at + 4 + 10] ^= 0x01;
    fs::write(&damaged, &bytes).unwrap();
    assert_fails(&["info", s(&damaged)], "signature section");
    assert!(matches!(
        Archive::open(&damaged),
        Err(Error::Corrupt { .. })
    ));

    // Damage in a block: keyless verify --signer reports it and says the signature was not
    // checked (the transcript of a damaged archive proves nothing either way).
    let mut bytes = original.clone();
    let block_byte = Archive::open(&archive).unwrap().data_start() as usize + 100;
    bytes[block_byte] ^= 0x01;
    fs::write(&damaged, &bytes).unwrap();
    let err = assert_fails(
        &["verify", s(&damaged), "--signer", s(&public)],
        "checksum mismatch",
    );
    assert!(err.contains("the signature was not checked"), "{err}");

    // Another scheme or length, CRC fixed: Corrupt too.
    for (offset, value) in [(0usize, 2u8), (2, 63)] {
        let mut bytes = original.clone();
        bytes[at + offset] = value;
        fix_signature_crc(&mut bytes, at);
        fs::write(&damaged, &bytes).unwrap();
        assert!(
            matches!(Archive::open(&damaged), Err(Error::Corrupt { .. })),
            "offset {offset}"
        );
    }
}

#[test]
fn signed_then_rekeyed_stays_valid_and_the_new_recipient_restores_with_signer() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, public, _) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    let before = fs::read(&archive).unwrap();
    let before_start = Archive::open(&archive).unwrap().data_start() as usize;
    assert_ok(&[
        "rekey",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--add",
        s(&bob_pub()),
    ]);
    let after = fs::read(&archive).unwrap();
    let after_start = Archive::open(&archive).unwrap().data_start() as usize;
    // Everything after the header, the signature section included, is kept byte for byte.
    assert!(after_start > before_start);
    assert_eq!(after[after_start..], before[before_start..]);

    assert_ok(&["verify", s(&archive), "--signer", s(&public)]);
    let target = t.join("bob");
    assert_ok(&[
        "restore",
        s(&archive),
        "-i",
        s(&bob_key()),
        "--to",
        s(&target),
        "--signer",
        s(&public),
        "-q",
    ]);
    assert_trees_equal(&src, &target.join("src"));

    // Re-encrypted: unsigned unless signed anew.
    let plain = t.join("reencrypted.coffer");
    fs::copy(&archive, &plain).unwrap();
    assert_ok(&[
        "rekey",
        s(&plain),
        "-i",
        s(&alice_key()),
        "--reencrypt",
        "--keep",
        s(&bob_pub()),
    ]);
    assert_fails(&["verify", s(&plain), "--signer", s(&public)], "not signed");
    assert_ok(&[
        "rekey",
        s(&archive),
        "-i",
        s(&alice_key()),
        "--reencrypt",
        "--keep",
        s(&bob_pub()),
        "--sign-with",
        s(&sign),
    ]);
    assert_ok(&["verify", s(&archive), "--signer", s(&public)]);
    assert_ok(&[
        "restore",
        s(&archive),
        "-i",
        s(&bob_key()),
        "--to",
        s(&t.join("bob2")),
        "--signer",
        s(&public),
        "-q",
    ]);
}

#[test]
fn swapped_stanza_passes_keyless_check_and_is_refused_at_restore() {
    let t = TestDir::new();
    let src = source(&t);
    let (sign, public, _) = signing_pair(&t, "host.sign");
    let archive = t.join("a.coffer");
    cli_backup(&src, &archive, &["--sign-with", s(&sign)]);
    // A storage attacker wraps a key K' of its own for alice and MACs the header under it.
    let a = Archive::open(&archive).unwrap();
    let mut body = a.v2().unwrap().header.body.clone();
    let other = SessionKey::generate().unwrap();
    body.recipients = vec![recipient(&alice_pub()).wrap(&other).unwrap()];
    let keys = SubKeys::derive_v2(&other, &body.fields.session_id);
    let mut bytes = seal_header_v2(&body, &keys);
    bytes.extend_from_slice(&fs::read(&archive).unwrap()[a.data_start() as usize..]);
    let swapped = t.join("swapped.coffer");
    fs::write(&swapped, bytes).unwrap();

    // Stanzas are not signed: the keyless check passes.
    assert_ok(&["verify", s(&swapped), "--signer", s(&public)]);
    // Under K' no signed tag verifies: the directory is refused, nothing is released.
    let alice = alice_key();
    for signer in [None, Some(&public)] {
        let target = t.join(format!("out-{}", signer.is_some()));
        let mut args = vec!["restore", s(&swapped), "-i", s(&alice), "--to", s(&target)];
        if let Some(p) = signer {
            args.extend(["--signer", s(p)]);
        }
        assert_fails(&args, "authentication failed");
        assert_nothing_written(&target);
    }
}

#[test]
fn passphrase_protected_signing_key_through_passphrase_file_and_job_file() {
    let t = TestDir::new();
    let src = source(&t);
    let key = SigningKey::generate().unwrap();
    let sign = t.join("host.sign");
    write_file(
        &sign,
        key.to_encrypted_pkcs8_pem("correct horse battery")
            .unwrap()
            .as_bytes(),
        0o600,
    );
    let public = t.join("host.sign.pub");
    fs::write(&public, key.verifying_key().to_pem().unwrap()).unwrap();
    let pass = t.join("pass");
    fs::write(&pass, "correct horse battery\n").unwrap();

    let archive = t.join("a.coffer");
    cli_backup(
        &src,
        &archive,
        &["--sign-with", s(&sign), "--passphrase-file", s(&pass)],
    );
    assert_ok(&["verify", s(&archive), "--signer", s(&public)]);
    // Without the passphrase there is no signature: the backup fails, writing nothing.
    let none = t.join("none.coffer");
    let (code, _, err) = run(&[
        "backup",
        s(&src),
        "-o",
        s(&none),
        "-r",
        s(&alice_pub()),
        "--sign-with",
        s(&sign),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("passphrase"), "{err}");
    assert!(!none.exists());

    // A job file: the key and its passphrase file in [defaults].
    let w = crate::job_common::World::new();
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{}\"]\nsigning_key = {:?}\nsigning_key_passphrase_file = {:?}\n\n[job.home]\nsources = [{:?}]\ndestination = {:?}\n",
        s(&alice_pub()),
        s(&sign),
        s(&pass),
        s(&src),
        s(&dest)
    ));
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
    let files = w.files(&dest);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_ok(&["verify", s(&dest.join(&files[0])), "--signer", s(&public)]);
    // A job's own key without a passphrase file is a configuration error.
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{}\"]\n\n[job.home]\nsources = [{:?}]\ndestination = {:?}\nsigning_key = {:?}\n",
        s(&alice_pub()),
        s(&src),
        s(&dest),
        s(&sign)
    ));
    let out = w
        .coffer()
        .args(["job", "run", "home", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signing_key_passphrase_file"), "{err}");
}

/// Bit-flip sweep over a small signed archive: every byte, one bit each, must be refused by
/// the keyless signature check. The bytes the signature leaves out on purpose (stanzas,
/// `body_len`, header MAC, the CRCs) are caught by the checksums, keylessly too.
#[test]
fn every_flipped_byte_of_a_signed_archive_fails_keyless_verify_signer() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    write_file(&src.join("a.txt"), b"a small signed file\n", 0o644);
    write_file(&src.join("b.bin"), &pseudo_random(3000, 5), 0o644);
    let key = Arc::new(SigningKey::generate().unwrap());
    let signers: Vec<VerifyingKey> = vec![key.verifying_key().clone()];
    let archive = t.join("a.coffer");
    let mut opts = BackupOptions::new(vec![src.clone()], archive.clone());
    opts.block_size = SMALL_BLOCK;
    opts.signing_key = Some(Arc::clone(&key));
    let r = recipient(&alice_pub());
    backup(&opts, &[&r as &dyn Recipient], &Quiet).unwrap();
    let original = fs::read(&archive).unwrap();
    let report = Archive::open(&archive)
        .unwrap()
        .verify_signature_keyless(&signers, &Quiet)
        .unwrap();
    assert!(report.is_ok() && report.signer == Some(key.fingerprint()));

    let flipped = t.join("flipped.coffer");
    for at in 0..original.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= bit;
            fs::write(&flipped, &bytes).unwrap();
            let outcome =
                Archive::open(&flipped).and_then(|a| a.verify_signature_keyless(&signers, &Quiet));
            if let Ok(report) = outcome {
                assert!(
                    !report.is_ok(),
                    "flip {bit:#04x} at byte {at} of {} passed keyless verify --signer",
                    original.len()
                );
            }
        }
    }
}
