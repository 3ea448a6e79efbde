//! Signature vectors and `content-hash-mismatch`, all made from `basic` / `signed`.

use std::fs;
use std::path::Path;

use coffer::Compression;
use coffer::format::crc32c;
use coffer::format::v2::content::content_hash;
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::meta::seal_header_v2;

use crate::manifest::Manifest;
use crate::model::{Built, Model};
use crate::{CHAIN_TIMES, Ctx, keys_lines, seq, sid};

fn vector(ctx: &Ctx, name: &str, description: &str, built: &Built) -> Manifest {
    let dir = ctx.folder(name);
    built.write(&dir.join("archive.coffer"));
    let mut m = Manifest::new(name, description);
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    m
}

pub fn write(ctx: &Ctx, basic: &Model, tree: &Path, signed: &Built) {
    let key = seq(0);
    let id = sid(0xf0);

    // signed-other-key
    let mut spec = ctx.spec(key, id, CHAIN_TIMES[0], "basic");
    spec.signer = Some(&ctx.other);
    let other = basic.seal(&spec).finish(Some(&ctx.other), |_| {});
    let mut m = vector(
        ctx,
        "signed-other-key",
        "`basic` signed by the RFC 8032 test 2 key (keys/other-signer.pem), checked against keys/signer.pub.pem.",
        &other,
    );
    m.str("restore", "ok")
        .str("restore_signer", "UnknownSigner")
        .str("verify_signer", "UnknownSigner")
        .str("verify_keyed_signer", "UnknownSigner")
        .str("list", "ok");
    m.write(&ctx.folder_keep("signed-other-key"));

    // unsigned-signer-required: basic's own archive, with --signer.
    let dir = ctx.folder("unsigned-signer-required");
    let mut m = Manifest::new(
        "unsigned-signer-required",
        "`basic` (unsigned) where a signer is required.",
    );
    m.str("archive", "../basic/archive.coffer");
    m.str("derived_from", "basic");
    keys_lines(&mut m);
    m.str("restore", "ok")
        .str("restore_signer", "SignatureRequired")
        .str("verify_signer", "SignatureRequired")
        .str("verify_keyed_signer", "SignatureRequired");
    m.write(&dir);

    // public-key-forgery: the real writer with the recipient's public key only.
    let dir = ctx.folder("public-key-forgery");
    crate::trees::Run {
        source: tree,
        output: dir.join("archive.coffer"),
        recipients: &ctx.recipients(),
        session_id: sid(0x70),
        compression: Compression::None,
        state: None,
        signing_key: None,
    }
    .go();
    let mut m = Manifest::new(
        "public-key-forgery",
        "The `basic` tree written by coffer::backup::backup() for the recipient's public key alone (random session key): anyone can write it, so it passes without --signer and fails with it.",
    );
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    m.str("restore", "ok")
        .str("restore_signer", "SignatureRequired")
        .str("verify_signer", "SignatureRequired")
        .str("list", "ok");
    m.write(&dir);

    // recipient-forged: a recipient changes a.txt's bytes in block 0 (and its content
    // hash), re-seals everything under the session key it knows, keeps the signature.
    let mut forged = basic.clone();
    let a = forged
        .entries
        .iter()
        .position(|e| e.path == b"t/a.txt")
        .unwrap();
    let x = forged.entries[a].extents[0];
    assert_eq!(x.archive, 0);
    let at = x.offset as usize;
    forged.blocks[0][at..at + 5].copy_from_slice(b"HACKD");
    let data = forged.blocks[0][at..at + x.len as usize].to_vec();
    forged.entries[a].content_hash = Some(content_hash(&data));
    let mut spec = ctx.spec(key, id, CHAIN_TIMES[0], "basic");
    spec.signer = Some(&ctx.signer);
    let mut built = forged.seal(&spec).finish(None, |_| {});
    built.signature = signed.signature.clone();
    let mut m = vector(
        ctx,
        "recipient-forged",
        "`signed` after a recipient rewrote the first 5 bytes of t/a.txt to HACKD (block 0 re-sealed, a.txt's content hash, index, block table and directory re-sealed under the session key), keeping the signature.",
        &built,
    );
    m.str("forged_path", "t/a.txt");
    m.str("forged_sha256", &crate::manifest::hex(&sha2_of(&data)));
    m.str("restore", "ok")
        .str("restore_signer", "BadSignature")
        .str("verify_signer", "BadSignature")
        .str("verify_keyed_signer", "BadSignature")
        .str("verify_keyed", "ok");
    m.write(&ctx.folder_keep("recipient-forged"));

    // signature-flipped
    let mut flipped = signed.clone();
    let sig = flipped.signature.as_mut().unwrap();
    sig[4 + 10] ^= 0x01;
    let crc = crc32c(&sig[..68]);
    sig[68..72].copy_from_slice(&crc.to_le_bytes());
    let mut m = vector(
        ctx,
        "signature-flipped",
        "`signed` with bit 0 of signature byte 10 flipped, the section's CRC32C recomputed.",
        &flipped,
    );
    m.str("restore", "ok")
        .str("restore_signer", "BadSignature")
        .str("verify", "ok")
        .str("verify_signer", "BadSignature")
        .str("verify_keyed_signer", "BadSignature");
    m.write(&ctx.folder_keep("signature-flipped"));

    // signature-section-missing
    let mut missing = signed.clone();
    missing.signature = None;
    missing.trailer.signature_len = 0;
    let mut m = vector(
        ctx,
        "signature-section-missing",
        "`signed` without its signature section: the header declares a signer, the trailer says signature_len 0.",
        &missing,
    );
    for c in ["restore", "verify", "verify_signer", "verify_keyed", "list"] {
        m.str(c, "Corrupt");
    }
    m.write(&ctx.folder_keep("signature-section-missing"));

    // signed-stanza-swapped: the stanza wraps another key K' (ee repeated); header MAC
    // under K'. The signed bytes are unchanged.
    let other_key = SessionKey::from_bytes([0xee; 32]);
    let mut body = coffer::format::v2::validate::RawHeaderV2::parse(signed.header.clone())
        .unwrap()
        .body;
    body.recipients = vec![ctx.rsa_wrap(&other_key)];
    let mut swapped = signed.clone();
    swapped.header = seal_header_v2(&body, &SubKeys::derive_v2(&other_key, &id));
    let mut m = vector(
        ctx,
        "signed-stanza-swapped",
        "`signed` with its stanza replaced by a wrap of another session key K' (ee repeated) and the header MAC recomputed under K': the signature still verifies keyless; a keyed reader fails at the directory tag.",
        &swapped,
    );
    m.str("restore", "Tampered")
        .str("restore_signer", "Tampered")
        .str("verify", "ok")
        .str("verify_signer", "ok")
        .str("verify_keyed", "Tampered")
        .str("list", "Tampered");
    m.write(&ctx.folder_keep("signed-stanza-swapped"));

    // content-hash-mismatch: a.txt's extent shifted by one byte, hash unchanged.
    let mut shifted = basic.clone();
    shifted.entries[a].extents[0].offset += 1;
    let built = shifted
        .seal(&ctx.spec(key, id, CHAIN_TIMES[0], "basic"))
        .finish(None, |_| {});
    let mut m = vector(
        ctx,
        "content-hash-mismatch",
        "`basic` with t/a.txt's extent moved one byte forward, its content hash unchanged; re-sealed under basic's key.",
        &built,
    );
    m.str("mismatch_path", "t/a.txt");
    m.str("restore", "ContentMismatch")
        .str("verify", "ok")
        .str("verify_keyed", "problems")
        .str("list", "ok");
    m.write(&ctx.folder_keep("content-hash-mismatch"));
    let _ = fs::metadata(tree);
}

fn sha2_of(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}
