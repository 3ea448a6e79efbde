//! Writes coffer's format-v2 test vectors into `fixtures/v2/` (see fixtures/v2/README.md and
//! docs/FORMAT.md v2.11). Run as root (the `basic` tree has a character device, `trusted.*`
//! and `security.capability` xattrs and owner 1000):
//!
//! ```text
//! COFFER_VECTORS_OUT=/tmp/v2-vectors cargo run --release --example make_vectors_v2
//! ```
//!
//! Format v2 is frozen with the vectors this generator wrote into `fixtures/v2/` on
//! 2026-11-30 (pinned by `fixtures/v2/SHA256SUMS`); it now writes only where
//! `COFFER_VECTORS_OUT` says, never over the frozen ones. It regenerates every vector
//! folder it knows (the keys under `keys/` are derived from fixed secrets and come out the
//! same). Every archive is first written by the real writer
//! (`coffer::backup::backup`, chains through its chain state), then taken apart with the
//! recipient's key and re-sealed under a fixed session key and id (`model.rs`), because the
//! public API draws session keys at random. Block nonces, meta IVs and OAEP seeds stay
//! random, so archive bytes differ between runs; keys, ids, commitments, entries and
//! stream offsets do not.

#[path = "make_vectors_v2/chains.rs"]
mod chains;
#[path = "make_vectors_v2/hostile.rs"]
mod hostile;
#[path = "make_vectors_v2/manifest.rs"]
mod manifest;
#[path = "make_vectors_v2/model.rs"]
mod model;
#[path = "make_vectors_v2/multichunk.rs"]
mod multichunk;
#[path = "make_vectors_v2/signed.rs"]
mod signed;
#[path = "make_vectors_v2/trees.rs"]
mod trees;
#[path = "make_vectors_v2/walk.rs"]
mod walk;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer::Compression;
use coffer::format::v2::ParentRef;
use coffer::keys::SessionId;
use coffer::recipient::{Recipient, RsaIdentity, RsaRecipient};
use coffer::{RekeyOptions, SigningKey};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use manifest::{Manifest, hex};
use model::{Built, Model, Spec};

/// RFC 8032 §7.1 test 1 secret: the vectors' signing key.
const SIGNER_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// RFC 8032 §7.1 test 2 secret: the "other" signer.
const OTHER_SECRET: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

/// Where the vectors are written. `fixtures/v2/` is frozen (FORMAT.md v2.11: its files are
/// pinned by `fixtures/v2/SHA256SUMS`), so the generator never writes there: it writes to
/// the folder `COFFER_VECTORS_OUT` names, to study how the frozen vectors were made or to
/// start the vectors of a next version.
pub fn root() -> PathBuf {
    match std::env::var_os("COFFER_VECTORS_OUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "fixtures/v2 is frozen; set COFFER_VECTORS_OUT to a scratch folder to write vectors there"
        ),
    }
}

pub fn seq(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

pub fn sid(start: u8) -> SessionId {
    std::array::from_fn(|i| start + i as u8)
}

fn unhex32(s: &str) -> [u8; 32] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

/// Write the PKCS#8 key of `secret` and its public key as `keys/<name>.pem`/`.pub.pem`.
fn signing_key(name: &str, secret: &str) -> Arc<SigningKey> {
    let dir = root().join("keys");
    fs::create_dir_all(&dir).unwrap();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&unhex32(secret));
    let pem = dalek
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let path = dir.join(format!("{name}.pem"));
    fs::write(&path, pem.as_bytes()).unwrap();
    let key = SigningKey::load(&path, &|_| unreachable!("not encrypted")).unwrap();
    fs::write(
        dir.join(format!("{name}.pub.pem")),
        key.verifying_key().to_pem().unwrap(),
    )
    .unwrap();
    Arc::new(key)
}

/// What every vector shares.
pub struct Ctx {
    pub rsa: RsaRecipient,
    pub id: RsaIdentity,
    pub signer: Arc<SigningKey>,
    pub other: Arc<SigningKey>,
    pub work: tempfile::TempDir,
}

impl Ctx {
    pub fn recipients(&self) -> [&dyn Recipient; 1] {
        [&self.rsa]
    }

    /// A fresh, empty vector folder.
    pub fn folder(&self, name: &str) -> PathBuf {
        let d = root().join(name);
        if d.exists() {
            fs::remove_dir_all(&d).unwrap();
        }
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A vector folder already made by [`Ctx::folder`].
    pub fn folder_keep(&self, name: &str) -> PathBuf {
        root().join(name)
    }

    /// The recipient's stanza for `key`.
    pub fn rsa_wrap(&self, key: &coffer::keys::SessionKey) -> coffer::format::header::Stanza {
        self.rsa.wrap(key).unwrap()
    }

    pub fn spec<'a>(
        &'a self,
        key: [u8; 32],
        id: SessionId,
        created_at: i64,
        job: &'a str,
    ) -> Spec<'a> {
        Spec {
            key,
            sid: id,
            created_at,
            job_name: job,
            recipients: vec![&self.rsa as &dyn Recipient],
            chain: Vec::new(),
            commitments: Vec::new(),
            signer: None,
        }
    }
}

/// A manifest's identity and signer lines (paths relative to a vector folder).
pub fn keys_lines(m: &mut Manifest) {
    m.str("identity", "../../v1/basic/identity.pem");
    m.str("signer", "../keys/signer.pub.pem");
}

pub fn session(m: &mut Manifest, key: &[u8; 32], id: &SessionId, commitment: &[u8; 32]) {
    m.table("session");
    m.str("session_key", &hex(key));
    m.str("session_id", &hex(id));
    m.str("commitment", &hex(commitment));
}

/// Restore point `n` of the chain tree, written by the real writer, re-sealed: the models.
pub struct ChainRun {
    pub models: Vec<Model>,
    /// The source tree after each point, copied (hard links kept) for its manifest.
    pub trees: Vec<PathBuf>,
}

pub const CHAIN_NAMES: [&str; 3] = [
    "home-20261129T010000Z-a0a1a2a3.coffer",
    "home-20261130T010000Z-b0b1b2b3.coffer",
    "home-20261201T010000Z-c0c1c2c3.coffer",
];
pub const CHAIN_TIMES: [i64; 3] = [1_795_914_000, 1_796_000_400, 1_796_086_800];
pub const CHAIN_KEYS: [u8; 3] = [0x00, 0x20, 0x40];
pub const CHAIN_IDS: [u8; 3] = [0xa0, 0xb0, 0xc0];

fn chain_run(ctx: &Ctx) -> ChainRun {
    let base = ctx.work.path().join("chain");
    let src = base.join("src");
    let t = src.join("t");
    let out = base.join("out");
    fs::create_dir_all(&out).unwrap();
    let state = base.join("chains.sqlite");
    let mut models = Vec::new();
    let mut trees = Vec::new();
    for n in 0..3 {
        trees::chain_point(&t, n);
        let report = trees::Run {
            source: &t,
            output: out.join(CHAIN_NAMES[n]),
            recipients: &ctx.recipients(),
            session_id: sid(CHAIN_IDS[n]),
            compression: Compression::Zstd(1),
            state: Some(&state),
            signing_key: None,
        }
        .go();
        let want = if n == 0 {
            coffer::backup::ChainKind::Full
        } else {
            coffer::backup::ChainKind::Incremental
        };
        assert_eq!(report.chain.kind, want, "point {n}: {:?}", report.chain);
        let bytes = fs::read(out.join(CHAIN_NAMES[n])).unwrap();
        models.push(Model::load(&bytes, &ctx.id));
        let copy = base.join(format!("tree{n}"));
        copy_tree(&src, &copy);
        trees.push(copy.join("t"));
    }
    ChainRun { models, trees }
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .args(["-a"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a");
}

/// Re-seal chain member `n` of `run` (parents as the writer listed them, commitments of
/// the re-sealed parents), signed by `signer` when given.
pub fn chain_member(ctx: &Ctx, run: &ChainRun, n: usize, signer: Option<&SigningKey>) -> Built {
    let m = &run.models[n];
    let mut spec = ctx.spec(
        seq(CHAIN_KEYS[n]),
        sid(CHAIN_IDS[n]),
        CHAIN_TIMES[n],
        "home",
    );
    spec.signer = signer;
    for p in &m.fields.chain {
        let k = CHAIN_IDS
            .iter()
            .position(|&b| p.session_id == sid(b))
            .unwrap();
        assert_eq!(p.hint, CHAIN_NAMES[k]);
        spec.chain.push(ParentRef {
            session_id: sid(CHAIN_IDS[k]),
            hint: CHAIN_NAMES[k].into(),
        });
        let parent = run.models[k].seal(&ctx.spec(seq(CHAIN_KEYS[k]), sid(CHAIN_IDS[k]), 0, ""));
        spec.commitments.push(parent.commitment());
    }
    m.seal(&spec).finish(signer, |_| {})
}

pub fn commitment_of(ctx: &Ctx, n: usize, run: &ChainRun) -> [u8; 32] {
    run.models[n]
        .seal(&ctx.spec(seq(CHAIN_KEYS[n]), sid(CHAIN_IDS[n]), 0, ""))
        .commitment()
}

fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root: the basic tree has a device, trusted.* xattrs and owners"
    );
    let ctx = Ctx {
        rsa: RsaRecipient::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/basic/identity.pub.pem"),
        )
        .unwrap(),
        id: RsaIdentity::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/basic/identity.pem"),
        )
        .unwrap(),
        signer: signing_key("signer", SIGNER_SECRET),
        other: signing_key("other-signer", OTHER_SECRET),
        work: tempfile::tempdir().unwrap(),
    };

    // basic, signed, signed-rekeyed and the vectors made from them.
    let src = ctx.work.path().join("basic");
    let t = trees::basic(&src);
    let raw = ctx.work.path().join("basic.coffer");
    trees::Run {
        source: &t,
        output: raw.clone(),
        recipients: &ctx.recipients(),
        session_id: sid(0xf0),
        compression: Compression::None,
        state: None,
        signing_key: None,
    }
    .go();
    let basic = Model::load(&fs::read(&raw).unwrap(), &ctx.id);
    let key = seq(0);
    let spec = ctx.spec(key, sid(0xf0), CHAIN_TIMES[0], "basic");
    let sealed = basic.seal(&spec);
    let commitment = sealed.commitment();
    let built = sealed.finish(None, |_| {});
    let dir = ctx.folder("basic");
    built.write(&dir.join("archive.coffer"));
    // The numbers of FORMAT.md v2.13, the worked example.
    walk::print(&built.bytes(), &key);
    let mut m = Manifest::new(
        "basic",
        "A full, unsigned archive of every entry kind: folder, file, symlink, a non-UTF-8 name, a hard-link pair across folders, FIFO, character device, xattrs (user., trusted., security.capability, POSIX ACLs) and a sparse file.",
    );
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    m.comment("Outcome per command: \"ok\", \"problems\" (a report listing problems) or a coffer::Error variant.");
    m.comment("Restoring the device, trusted.* xattrs and owners needs root.");
    m.str("restore", "ok")
        .str("restore_signer", "SignatureRequired")
        .str("verify", "ok")
        .str("verify_signer", "SignatureRequired")
        .str("verify_keyed", "ok")
        .str("list", "ok")
        .str("info", "ok");
    session(&mut m, &key, &sid(0xf0), &commitment);
    m.table("header");
    m.int("block_size", 65_536)
        .int("segment_size", 4096)
        .int("compression", 0);
    m.int("stream_len", basic.stream_len.into());
    m.int("block_count", basic.blocks.len() as i128);
    m.tree(&t);
    m.write(&dir);

    // signed
    let mut spec = ctx.spec(key, sid(0xf0), CHAIN_TIMES[0], "basic");
    spec.signer = Some(&ctx.signer);
    let signed = basic.seal(&spec).finish(Some(&ctx.signer), |_| {});
    let dir = ctx.folder("signed");
    signed.write(&dir.join("archive.coffer"));
    let mut m = Manifest::new(
        "signed",
        "`basic`, signed with the RFC 8032 test 1 key (keys/signer.pem).",
    );
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    m.str("signer_fingerprint", &ctx.signer.fingerprint().to_string());
    m.str("restore", "ok")
        .str("restore_signer", "ok")
        .str("verify", "ok")
        .str("verify_signer", "ok")
        .str("verify_keyed", "ok")
        .str("verify_keyed_signer", "ok")
        .str("list", "ok")
        .str("info", "ok");
    session(&mut m, &key, &sid(0xf0), &commitment);
    m.tree(&t);
    m.write(&dir);

    // signed-rekeyed: `signed` after `rekey --add` of fixtures/keys/bob.key.pub.
    let dir = ctx.folder("signed-rekeyed");
    let path = dir.join("archive.coffer");
    signed.write(&path);
    let bob = RsaRecipient::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/bob.key.pub"),
    )
    .unwrap();
    let add: [&dyn Recipient; 1] = [&bob];
    coffer::rekey(
        &path,
        &ctx.id,
        &RekeyOptions {
            add: &add,
            ..Default::default()
        },
        &coffer::Quiet,
    )
    .unwrap();
    let mut m = Manifest::new(
        "signed-rekeyed",
        "`signed` after `coffer rekey --add fixtures/keys/bob.key.pub`: stanzas changed, signature still valid; bob restores with --signer.",
    );
    m.str("archive", "archive.coffer");
    m.str("identity", "../../keys/bob.key");
    m.str("signer", "../keys/signer.pub.pem");
    m.str("restore", "ok")
        .str("restore_signer", "ok")
        .str("verify_signer", "ok")
        .str("verify_keyed_signer", "ok")
        .str("list", "ok");
    session(&mut m, &key, &sid(0xf0), &commitment);
    m.tree(&t);
    m.write(&dir);

    let run = chain_run(&ctx);
    chains::write(&ctx, &run);
    signed::write(&ctx, &basic, &t, &signed);
    hostile::write_all(&ctx, &basic);
    multichunk::write(&ctx);
    println!("wrote {}", root().display());
}
