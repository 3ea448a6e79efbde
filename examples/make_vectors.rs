//! Writes coffer's format-v1 test vectors into `fixtures/v1/` (see fixtures/v1/README.md
//! and docs/FORMAT.md).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-format cargo run --example make_vectors
//! ```
//!
//! Vectors are kept forever. A vector folder that already holds an `expected.toml` is never
//! rewritten: archive bytes hold random block nonces, index IVs and OAEP seeds, so a rerun
//! would give different bytes (equally valid, but no longer the ones docs/FORMAT.md quotes).
//! Vectors derived from `basic` or `multiblock` are made from the committed archive files.
//! To add a vector, add it here and run the generator: only missing folders are written.
//!
//! The archives with a fixed session key are assembled by hand from the library's public
//! pieces, exactly as `coffer::backup::backup` does (that function makes a random session
//! key): `SessionKey::from_bytes`, `SubKeys::derive`, `Recipient::wrap`, `seal::seal_header`,
//! `BlockSealer::seal` over the logical stream, `seal_index`, `Trailer`. The generator checks
//! that a real `backup()` of the same tree yields the same index, so the two cannot drift.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use coffer::Compression;
use coffer::archive::Archive;
use coffer::backup::{BackupOptions, Quiet, backup};
use coffer::format::frame::{FLAG_LAST, FLAG_ZSTD, FRAME_PREFIX, NONCE_OFFSET};
use coffer::format::header::{HeaderBody, PREFIX_LEN, SUFFIX_LEN, SignatureSlot};
use coffer::format::index::{BlockRef, Entry, Index, KIND_DIR, KIND_FILE, KIND_SYMLINK, Totals};
use coffer::format::trailer::{TRAILER_LEN, Trailer};
use coffer::format::{SUITE_V1, crc32c};
use coffer::keys::{SessionId, SessionKey, SubKeys};
use coffer::recipient::{Identity, Recipient, RsaIdentity, RsaRecipient};
use coffer::seal::{BlockSealer, seal_header, seal_index};
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Label recorded in the stanzas of hand-assembled vectors.
const STANZA_LABEL: &str = "coffer-test-vector";
/// uid/gid recorded in hand-assembled indexes (restore does not apply them by default).
const OWNER: u32 = 1000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

// ---------------------------------------------------------------------------------------
// The trees
// ---------------------------------------------------------------------------------------

/// One entry of a vector's tree, with its content.
#[derive(Clone)]
struct Item {
    path: String,
    kind: u8,
    mode: u32,
    mtime: i64,
    nsec: u32,
    content: Vec<u8>,
    link: Option<String>,
}

fn dir(path: &str, mode: u32, mtime: i64, nsec: u32) -> Item {
    Item {
        path: path.into(),
        kind: KIND_DIR,
        mode,
        mtime,
        nsec,
        content: Vec::new(),
        link: None,
    }
}

fn file(path: &str, mode: u32, mtime: i64, nsec: u32, content: Vec<u8>) -> Item {
    Item {
        path: path.into(),
        kind: KIND_FILE,
        mode,
        mtime,
        nsec,
        content,
        link: None,
    }
}

fn symlink(path: &str, target: &str, mtime: i64, nsec: u32) -> Item {
    Item {
        path: path.into(),
        kind: KIND_SYMLINK,
        // lstat(2) reports 0777 for every symlink on Linux; that is what backup records.
        mode: 0o777,
        mtime,
        nsec,
        content: Vec::new(),
        link: Some(target.into()),
    }
}

/// The `basic` tree: a folder with two small text files, an empty file, an empty folder
/// and a symlink, in the order a backup walks them (sorted by name, depth first).
fn basic_tree() -> Vec<Item> {
    let mut lorem = String::new();
    for i in 1..=80 {
        writeln!(
            lorem,
            "line {i:03}: the quick brown fox jumps over the lazy dog"
        )
        .unwrap();
    }
    vec![
        dir("tree", 0o755, 1_700_000_000, 0),
        dir("tree/docs", 0o750, 1_700_000_100, 250_000_000),
        file(
            "tree/docs/hello.txt",
            0o644,
            1_700_000_200,
            123_456_789,
            b"Hello, coffer!\n".to_vec(),
        ),
        file(
            "tree/docs/lorem.txt",
            0o600,
            1_700_000_300,
            999_999_999,
            lorem.into_bytes(),
        ),
        dir("tree/empty-dir", 0o700, 1_700_000_400, 1),
        file("tree/empty.txt", 0o640, 1_700_000_500, 0, Vec::new()),
        symlink("tree/link", "docs/hello.txt", 1_700_000_600, 500),
    ]
}

/// xorshift64: seeded pseudo-random bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The `multiblock` tree: one 150 000-byte file made of a seeded random 4 KiB pattern
/// repeated (so zstd shrinks every block, and blocks 0 and 1 hold the same plaintext and
/// have frames of the same length), then a small file. With 64 KiB blocks: 3 blocks.
fn multiblock_tree() -> Vec<Item> {
    let pattern = pseudo_random(4096, 0x00c0_ffee);
    let big: Vec<u8> = pattern.iter().copied().cycle().take(150_000).collect();
    vec![
        dir("multi", 0o755, 1_710_000_000, 0),
        file("multi/pattern.bin", 0o644, 1_710_000_100, 42, big),
        file(
            "multi/z.txt",
            0o644,
            1_710_000_200,
            0,
            b"the last file, in the last block\n".to_vec(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Hand assembly, as backup.rs does it
// ---------------------------------------------------------------------------------------

struct Spec {
    session_key: [u8; 32],
    session_id: SessionId,
    created_at: i64,
    job_name: &'static str,
    block_size: u32,
    segment_size: u32,
    compression: Compression,
    items: Vec<Item>,
    /// Seal the final block without the last-block flag (a rule-breaking vector).
    omit_last_flag: bool,
    signature: Option<SignatureSlot>,
}

fn entries_of(items: &[Item], owner: u32) -> (Vec<Entry>, Vec<u8>, Totals) {
    let mut stream = Vec::new();
    let mut totals = Totals::default();
    let entries = items
        .iter()
        .map(|it| {
            let mut e = Entry {
                path: it.path.clone(),
                kind: it.kind,
                mode: it.mode,
                uid: owner,
                gid: owner,
                mtime_sec: it.mtime,
                mtime_nsec: it.nsec,
                size: 0,
                offset: 0,
                link_target: it.link.clone(),
            };
            match it.kind {
                KIND_FILE => {
                    // As backup.rs: a file's offset is the stream position, empty or not.
                    e.offset = stream.len() as u64;
                    e.size = it.content.len() as u64;
                    stream.extend_from_slice(&it.content);
                    totals.files += 1;
                }
                KIND_DIR => totals.dirs += 1,
                _ => totals.symlinks += 1,
            }
            e
        })
        .collect();
    totals.bytes = stream.len() as u64;
    (entries, stream, totals)
}

/// Assemble a complete archive. Returns its bytes.
fn assemble(spec: &Spec, recipient: &dyn Recipient) -> Res<Vec<u8>> {
    let session_key = SessionKey::from_bytes(spec.session_key);
    let keys = SubKeys::derive(&session_key, &spec.session_id);
    let stanza = recipient.wrap(&session_key)?;
    drop(session_key);
    let body = HeaderBody {
        session_id: spec.session_id,
        created_at: spec.created_at,
        job_name: spec.job_name.into(),
        suite: SUITE_V1,
        block_size: spec.block_size,
        segment_size: spec.segment_size,
        compression: spec.compression.code(),
        recipients: vec![stanza],
        signature: spec.signature.clone(),
    };
    let mut out = seal_header(&body, &keys);

    let (entries, stream, totals) = entries_of(&spec.items, OWNER);
    let sealer = BlockSealer::new(
        &keys,
        spec.session_id,
        spec.block_size,
        spec.segment_size,
        spec.compression,
    );
    let chunks: Vec<&[u8]> = stream.chunks(spec.block_size as usize).collect();
    let mut blocks = Vec::new();
    let mut data_len = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len() && !spec.omit_last_flag;
        let mut buf = vec![0u8; FRAME_PREFIX];
        buf.extend_from_slice(chunk);
        sealer.seal(&mut buf, i as u64, last);
        blocks.push(BlockRef {
            offset: data_len,
            frame_len: buf.len() as u32,
            raw_len: chunk.len() as u32,
        });
        data_len += buf.len() as u64;
        out.extend_from_slice(&buf);
    }
    let block_count = blocks.len() as u64;
    let index = Index {
        entries,
        blocks,
        stream_len: stream.len() as u64,
        totals,
    };
    let plain = postcard::to_stdvec(&index)?;
    let sealed = seal_index(&keys, &spec.session_id, &plain);
    let trailer = Trailer {
        index_offset: data_len,
        index_len: sealed.len() as u64,
        block_count,
    };
    out.extend_from_slice(&sealed);
    out.extend_from_slice(&trailer.encode());
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reading an archive's layout back (for derived vectors and the worked example)
// ---------------------------------------------------------------------------------------

struct Layout {
    header_len: usize,
    /// (file offset, frame length) of every frame.
    frames: Vec<(usize, usize)>,
    index_at: usize,
    index_len: usize,
    trailer_at: usize,
}

impl Layout {
    fn of(bytes: &[u8]) -> Layout {
        let body_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        let header_len = PREFIX_LEN + body_len + SUFFIX_LEN;
        let trailer_at = bytes.len() - TRAILER_LEN;
        let t = Trailer::decode(bytes[trailer_at..].try_into().unwrap()).expect("trailer");
        let index_at = header_len + t.index_offset as usize;
        let mut frames = Vec::new();
        let mut at = header_len;
        while at < index_at {
            let ct_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let len = FRAME_PREFIX + ct_len + 36;
            frames.push((at, len));
            at += len;
        }
        assert_eq!(at, index_at, "frames tile the data section");
        Layout {
            header_len,
            frames,
            index_at,
            index_len: t.index_len as usize,
            trailer_at,
        }
    }
}

/// Recompute the CRC32C at the end of `section` (all bytes before it).
fn fix_crc(section: &mut [u8]) {
    let n = section.len();
    let crc = crc32c(&section[..n - 4]);
    section[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

struct Manifest {
    text: String,
}

impl Manifest {
    fn new(name: &str, description: &str) -> Self {
        let mut text = String::new();
        writeln!(
            text,
            "# coffer format v1 test vector `{name}`: see fixtures/v1/README.md"
        )
        .unwrap();
        writeln!(text, "format_version = 1").unwrap();
        writeln!(text, "description = {}", q(description)).unwrap();
        writeln!(text, "archive = \"archive.coffer\"").unwrap();
        Manifest { text }
    }

    fn kv(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        writeln!(self.text, "{key} = {value}").unwrap();
        self
    }

    fn s(&mut self, key: &str, value: &str) -> &mut Self {
        self.kv(key, q(value))
    }

    fn table(&mut self, header: &str) -> &mut Self {
        writeln!(self.text, "\n{header}").unwrap();
        self
    }

    fn entries(&mut self, items: &[Item], owner: Option<u32>) -> &mut Self {
        for it in items {
            self.table("[[entry]]");
            self.s("path", &it.path);
            let kind = match it.kind {
                KIND_FILE => "file",
                KIND_DIR => "dir",
                _ => "symlink",
            };
            self.s("kind", kind);
            self.kv("mode", format!("0o{:o}", it.mode));
            self.kv("mtime", it.mtime);
            self.kv("mtime_nsec", it.nsec);
            if let Some(o) = owner {
                self.kv("uid", o).kv("gid", o);
            }
            self.kv("size", it.content.len());
            if it.kind == KIND_FILE {
                self.s("sha256", &hex(&Sha256::digest(&it.content)));
            }
            if let Some(t) = &it.link {
                self.s("link_target", t);
            }
        }
        self
    }

    fn write(&self, dir: &Path) -> Res<()> {
        fs::write(dir.join("expected.toml"), &self.text)?;
        Ok(())
    }
}

/// HKDF-SHA256 sub-keys, computed here from the documented labels (SubKeys keeps its
/// bytes private); the test recomputes them and checks the header MAC with them.
fn sub_keys_hex(session_key: &[u8; 32], session_id: &[u8; 16]) -> Vec<(&'static str, String)> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(session_id), session_key);
    [
        ("data_enc", "coffer/v1/data-enc"),
        ("data_iv", "coffer/v1/data-iv"),
        ("data_mac", "coffer/v1/data-mac"),
        ("meta_enc", "coffer/v1/meta-enc"),
        ("meta_mac", "coffer/v1/meta-mac"),
        ("header_mac", "coffer/v1/header-mac"),
    ]
    .into_iter()
    .map(|(name, info)| {
        let mut okm = [0u8; 32];
        hk.expand(info.as_bytes(), &mut okm).expect("32 bytes");
        (name, hex(&okm))
    })
    .collect()
}

/// IV of segment `j` of a block: AES-256-ECB(data-iv key, nonce XOR (j as u32 BE in 12..16)).
fn segment_iv(data_iv_key: &[u8], nonce: &[u8], j: u32) -> [u8; 16] {
    use cipher::{BlockCipherEncrypt, KeyInit};
    let cipher = aes::Aes256::new_from_slice(data_iv_key).expect("32-byte key");
    let mut b = [0u8; 16];
    b.copy_from_slice(nonce);
    for (x, y) in b[12..].iter_mut().zip(j.to_be_bytes()) {
        *x ^= y;
    }
    let mut block = cipher::Array::from(b);
    cipher.encrypt_block(&mut block);
    block.into()
}

/// The `[session]`, `[layout]` and `[[block]]` tables of a fixed-key vector: everything a
/// decryptor writer wants to compare against while debugging.
fn describe_session(m: &mut Manifest, spec: &Spec, bytes: &[u8], fingerprint: &str) {
    let layout = Layout::of(bytes);
    let keys = sub_keys_hex(&spec.session_key, &spec.session_id);
    m.table("[session]");
    m.s("session_key", &hex(&spec.session_key));
    m.s("session_id", &hex(&spec.session_id));
    m.s("fingerprint", fingerprint);
    for (name, value) in &keys {
        m.s(name, value);
    }
    m.table("[header]");
    m.kv("created_at", spec.created_at);
    m.s("job_name", spec.job_name);
    m.kv("block_size", spec.block_size);
    m.kv("segment_size", spec.segment_size);
    m.kv("compression", spec.compression.code());
    m.table("[layout]");
    m.kv("file_len", bytes.len());
    m.kv("header_len", layout.header_len);
    m.kv("data_start", layout.header_len);
    m.kv("index_offset", layout.index_at - layout.header_len);
    m.kv("index_file_offset", layout.index_at);
    m.kv("index_len", layout.index_len);
    m.kv("trailer_file_offset", layout.trailer_at);
    let data_iv = &keys[1].1;
    let data_iv = (0..32)
        .map(|i| u8::from_str_radix(&data_iv[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    for (i, &(at, len)) in layout.frames.iter().enumerate() {
        let f = &bytes[at..at + len];
        let ct_len = u32::from_le_bytes(f[0..4].try_into().unwrap());
        let nonce = &f[NONCE_OFFSET..FRAME_PREFIX];
        let segments = (ct_len as usize)
            .div_ceil(spec.segment_size as usize)
            .max(1);
        let ivs: Vec<String> = (0..segments as u32)
            .map(|j| q(&hex(&segment_iv(&data_iv, nonce, j))))
            .collect();
        m.table("[[block]]");
        m.kv("index", i);
        m.kv("file_offset", at);
        m.kv("offset", at - layout.header_len);
        m.kv("frame_len", len);
        m.kv("ct_len", ct_len);
        m.kv("raw_len", u32::from_le_bytes(f[4..8].try_into().unwrap()));
        m.kv("flags", f[8]);
        m.s("nonce", &hex(nonce));
        m.kv("segment_ivs", format!("[{}]", ivs.join(", ")));
        m.s("tag", &hex(&f[len - 36..len - 4]));
    }
}

// ---------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------

struct Gen {
    root: PathBuf,
    identity: RsaIdentity,
    recipient: RsaRecipient,
    written: Vec<String>,
    kept: Vec<String>,
}

impl Gen {
    /// `Some(dir)` when the vector must be written; `None` when it exists already.
    fn start(&mut self, name: &str) -> Res<Option<PathBuf>> {
        let dir = self.root.join(name);
        if dir.join("expected.toml").exists() {
            self.kept.push(name.into());
            return Ok(None);
        }
        fs::create_dir_all(&dir)?;
        self.written.push(name.into());
        Ok(Some(dir))
    }

    /// A fixed-key, ok vector assembled by hand; returns the archive bytes (existing or new).
    fn fixed_key_ok(&mut self, name: &str, description: &str, spec: &Spec) -> Res<Vec<u8>> {
        let Some(dir) = self.start(name)? else {
            return Ok(fs::read(self.root.join(name).join("archive.coffer"))?);
        };
        let bytes = assemble(spec, &self.recipient)?;
        fs::write(dir.join("archive.coffer"), &bytes)?;
        fs::write(dir.join("session_key.hex"), hex(&spec.session_key) + "\n")?;
        let mut m = Manifest::new(name, description);
        m.s("identity", identity_for(name));
        m.s("outcome", "ok");
        describe_session(&mut m, spec, &bytes, &self.recipient.fingerprint().to_hex());
        m.entries(&spec.items, Some(OWNER));
        m.write(&dir)?;
        Ok(bytes)
    }

    /// A fixed-key vector that breaks a reader rule although every MAC is valid.
    fn fixed_key_error(
        &mut self,
        name: &str,
        description: &str,
        spec: &Spec,
        error: &str,
    ) -> Res<()> {
        let Some(dir) = self.start(name)? else {
            return Ok(());
        };
        let bytes = assemble(spec, &self.recipient)?;
        fs::write(dir.join("archive.coffer"), &bytes)?;
        fs::write(dir.join("session_key.hex"), hex(&spec.session_key) + "\n")?;
        let mut m = Manifest::new(name, description);
        m.s("identity", "../basic/identity.pem");
        m.s("outcome", "error").s("error", error);
        m.table("[session]");
        m.s("session_key", &hex(&spec.session_key));
        m.s("session_id", &hex(&spec.session_id));
        m.write(&dir)
    }

    /// A vector made by changing bytes of another vector's archive.
    fn derived(
        &mut self,
        name: &str,
        from: &str,
        description: &str,
        error: &str,
        bytes: Vec<u8>,
    ) -> Res<()> {
        let Some(dir) = self.start(name)? else {
            return Ok(());
        };
        fs::write(dir.join("archive.coffer"), &bytes)?;
        let mut m = Manifest::new(name, description);
        m.s("derived_from", from);
        // Every vector's archive is for the one test key in basic/.
        m.s("identity", "../basic/identity.pem");
        m.s("outcome", "error").s("error", error);
        m.write(&dir)
    }
}

fn identity_for(name: &str) -> &'static str {
    if name == "basic" {
        "identity.pem"
    } else {
        "../basic/identity.pem"
    }
}

fn basic_spec() -> Spec {
    Spec {
        session_key: std::array::from_fn(|i| i as u8),
        session_id: std::array::from_fn(|i| 0xf0 + i as u8),
        created_at: 1_735_689_600,
        job_name: "format-v1-basic",
        block_size: 64 * 1024,
        segment_size: 4096,
        compression: Compression::None,
        items: basic_tree(),
        omit_last_flag: false,
        signature: None,
    }
}

fn multiblock_spec() -> Spec {
    Spec {
        session_key: std::array::from_fn(|i| 0x20 + i as u8),
        session_id: std::array::from_fn(|i| 0xe0 + i as u8),
        created_at: 1_735_689_601,
        job_name: "format-v1-multiblock",
        block_size: 64 * 1024,
        segment_size: 16 * 1024,
        compression: Compression::Zstd(1),
        items: multiblock_tree(),
        omit_last_flag: false,
        signature: None,
    }
}

/// Make `items` on disk under `root` (modes and times as listed; parents first).
fn materialize(root: &Path, items: &[Item]) -> Res<()> {
    for it in items {
        let p = root.join(&it.path);
        match it.kind {
            KIND_DIR => fs::create_dir(&p)?,
            KIND_FILE => {
                fs::write(&p, &it.content)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(it.mode))?;
                let t = filetime::FileTime::from_unix_time(it.mtime, it.nsec);
                filetime::set_file_times(&p, t, t)?;
            }
            _ => {
                std::os::unix::fs::symlink(it.link.as_deref().unwrap(), &p)?;
                let t = filetime::FileTime::from_unix_time(it.mtime, it.nsec);
                filetime::set_symlink_file_times(&p, t, t)?;
            }
        }
    }
    // Folder modes and times last, deepest first, so that filling them does not bump them.
    for it in items.iter().rev().filter(|it| it.kind == KIND_DIR) {
        let p = root.join(&it.path);
        fs::set_permissions(&p, fs::Permissions::from_mode(it.mode))?;
        let t = filetime::FileTime::from_unix_time(it.mtime, it.nsec);
        filetime::set_file_times(&p, t, t)?;
    }
    Ok(())
}

/// Back up `spec`'s tree with the real `backup()` and check that its index is the one the
/// hand assembly writes (uid/gid aside). Returns the archive bytes.
fn backup_api_archive(spec: &Spec, gen_: &Gen) -> Res<Vec<u8>> {
    let tmp = tempfile::tempdir()?;
    materialize(tmp.path(), &spec.items)?;
    let out = tmp.path().join("out.coffer");
    let mut opts = BackupOptions::new(vec![tmp.path().join("tree")], out.clone());
    opts.job_name = "format-v1-backup-api".into();
    opts.block_size = spec.block_size;
    opts.segment_size = spec.segment_size;
    opts.compression = spec.compression;
    // These are the v1 vectors: kept forever, written by the v1 writer.
    opts.format = 1;
    backup(&opts, &[&gen_.recipient], &Quiet)?;

    let archive = Archive::open(&out)?;
    let unlocked = archive.unlock(&gen_.identity)?;
    let (mut expected, stream, totals) = entries_of(&spec.items, 0);
    let index = unlocked.v1_index().ok_or("not a v1 archive")?;
    let mut got = index.entries.clone();
    for e in got.iter_mut().chain(expected.iter_mut()) {
        e.uid = 0;
        e.gid = 0;
    }
    assert_eq!(
        got, expected,
        "backup() and the hand assembly disagree on the entries"
    );
    assert_eq!(index.stream_len, stream.len() as u64);
    assert_eq!(index.totals, totals);
    Ok(fs::read(&out)?)
}

fn main() -> Res<()> {
    let root = fixtures();
    let basic_dir = root.join("basic");
    let identity_path = basic_dir.join("identity.pem");
    if !identity_path.exists() {
        return Err(format!(
            "{} is missing: make it once with `openssl genpkey -algorithm RSA -pkeyopt \
             rsa_keygen_bits:2048 -out {0}` and `openssl pkey -in {0} -pubout -out \
             fixtures/v1/basic/identity.pub.pem`",
            identity_path.display()
        )
        .into());
    }
    let identity = RsaIdentity::load(&identity_path)?;
    let recipient = RsaRecipient::load(&basic_dir.join("identity.pub.pem"))?;
    assert_eq!(identity.fingerprint(), recipient.fingerprint());
    let recipient = identity.to_recipient(STANZA_LABEL.into())?;
    let mut g = Gen {
        root,
        identity,
        recipient,
        written: Vec::new(),
        kept: Vec::new(),
    };

    // --- ok vectors -------------------------------------------------------------------
    let basic = basic_spec();
    let basic_bytes = g.fixed_key_ok(
        "basic",
        "A folder with two small text files, an empty file, an empty folder and a symlink; \
         fixed session key; one block of two CBC segments, stored uncompressed.",
        &basic,
    )?;
    let multi = multiblock_spec();
    let multi_bytes = g.fixed_key_ok(
        "multiblock",
        "A 150 000-byte file (a seeded random 4 KiB pattern, repeated) and a small file; \
         64 KiB blocks, so 3 blocks, each zstd-compressed; fixed session key.",
        &multi,
    )?;
    // Checked on every run, even when the vector exists: the writer must still agree.
    let api_bytes = backup_api_archive(&basic, &g)?;
    if let Some(dir) = g.start("backup-api")? {
        fs::write(dir.join("archive.coffer"), &api_bytes)?;
        let mut m = Manifest::new(
            "backup-api",
            "The basic tree backed up by coffer::backup::backup() itself (random session \
             key, so no session_key.hex; uid/gid are the generating user's).",
        );
        m.s("identity", "../basic/identity.pem");
        m.s("outcome", "ok");
        m.entries(&basic.items, None);
        m.write(&dir)?;
    }

    // --- derived from basic: keyless failures ---------------------------------------------
    let l = Layout::of(&basic_bytes);
    let mut b = basic_bytes.clone();
    b[1] = b'X';
    g.derived(
        "not-an-archive",
        "basic",
        "Second magic byte changed ('C' -> 'X').",
        "NotAnArchive",
        b,
    )?;
    let mut b = basic_bytes.clone();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    g.derived(
        "future-version",
        "basic",
        "Format version field set to 2 (header CRC not recomputed: the version is checked first).",
        "UnsupportedVersion",
        b,
    )?;
    let b = basic_bytes[..basic_bytes.len() / 2].to_vec();
    g.derived(
        "truncated-half",
        "basic",
        "The first half of the archive only.",
        "Truncated",
        b,
    )?;
    let b = basic_bytes[..l.trailer_at].to_vec();
    g.derived(
        "missing-trailer",
        "basic",
        "The 36-byte trailer removed.",
        "Truncated",
        b,
    )?;
    let mac_at = l.header_len - SUFFIX_LEN;
    let mut b = basic_bytes.clone();
    b[mac_at + 5] ^= 0x01;
    g.derived(
        "header-bitrot",
        "basic",
        "One bit of the header MAC flipped, header CRC32C left as it was: storage damage.",
        "Corrupt",
        b,
    )?;
    let (f0, f0_len) = l.frames[0];
    let mut b = basic_bytes.clone();
    b[f0 + FRAME_PREFIX + 100] ^= 0x01;
    g.derived(
        "block-bitrot",
        "basic",
        "One bit of block 0's ciphertext flipped, frame CRC32C left as it was: storage damage.",
        "Corrupt",
        b,
    )?;

    // --- derived from basic: forgeries (CRC32C recomputed, so only a MAC can tell) -----------
    let mut b = basic_bytes.clone();
    b[mac_at + 5] ^= 0x01;
    fix_crc(&mut b[..l.header_len]);
    g.derived(
        "header-mac-tampered",
        "basic",
        "One bit of the header MAC flipped and the header CRC32C recomputed.",
        "Tampered",
        b,
    )?;
    let mut b = basic_bytes.clone();
    b[f0 + FRAME_PREFIX + 100] ^= 0x01;
    fix_crc(&mut b[f0..f0 + f0_len]);
    g.derived(
        "block-tampered",
        "basic",
        "One bit of block 0's ciphertext flipped and the frame CRC32C recomputed.",
        "Tampered",
        b,
    )?;
    let mut b = basic_bytes.clone();
    b[l.index_at + 16 + 3] ^= 0x01;
    fix_crc(&mut b[l.index_at..l.index_at + l.index_len]);
    g.derived(
        "index-tampered",
        "basic",
        "One bit of the index ciphertext flipped and the index CRC32C recomputed.",
        "Tampered",
        b,
    )?;

    // --- derived from basic: a checksum broken, every tag intact ----------------------------
    // Readers check a frame's or the index's CRC32C before its tag, and refuse a mismatch
    // even though the tag would verify (docs/FORMAT.md section 9, steps 10 and 13).
    let mut b = basic_bytes.clone();
    b[f0 + f0_len - 1] ^= 0x01;
    g.derived(
        "block-crc-mismatch-tag-ok",
        "basic",
        "One bit of block 0's CRC32C flipped; the block's tag still verifies. Every reader \
         checks the checksum before the tag and refuses the block as storage damage.",
        "Corrupt",
        b,
    )?;
    let mut b = basic_bytes.clone();
    b[l.index_at + l.index_len - 1] ^= 0x01;
    g.derived(
        "index-crc-mismatch-tag-ok",
        "basic",
        "One bit of the index section's CRC32C flipped; the index tag still verifies. Every \
         reader checks the checksum before the tag and refuses the index as storage damage.",
        "Corrupt",
        b,
    )?;

    if let Some(dir) = g.start("wrong-identity")? {
        if !dir.join("identity.pem").exists() {
            return Err(
                "fixtures/v1/wrong-identity/identity.pem is missing: make it with \
                        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
                    .into(),
            );
        }
        fs::write(dir.join("archive.coffer"), &basic_bytes)?;
        let mut m = Manifest::new(
            "wrong-identity",
            "The basic archive, opened with an RSA key that is not among its recipients \
             (identity.pem here: a second 2048-bit key made with openssl genpkey).",
        );
        m.s("derived_from", "basic");
        m.s("identity", "identity.pem");
        m.s("outcome", "error").s("error", "WrongKey");
        m.write(&dir)?;
    }

    // --- derived from multiblock ------------------------------------------------------------
    let l = Layout::of(&multi_bytes);
    assert_eq!(l.frames.len(), 3, "multiblock has 3 blocks");
    let ((a, a_len), (c, c_len)) = (l.frames[0], l.frames[1]);
    assert_eq!(a_len, c_len, "blocks 0 and 1 have frames of one length");
    for (i, &(at, _)) in l.frames.iter().enumerate() {
        let flags = multi_bytes[at + 8];
        assert_ne!(flags & FLAG_ZSTD, 0, "every block compressed");
        assert_eq!(
            flags & FLAG_LAST != 0,
            i == 2,
            "only the last block is flagged last"
        );
    }
    let mut b = multi_bytes.clone();
    b[a..a + a_len].copy_from_slice(&multi_bytes[c..c + c_len]);
    b[c..c + c_len].copy_from_slice(&multi_bytes[a..a + a_len]);
    g.derived(
        "frames-reordered",
        "multiblock",
        "Frames of blocks 0 and 1 swapped. Both hold the same plaintext and have the same \
         length, and every CRC32C is intact: only the block number bound into each tag tells.",
        "Tampered",
        b,
    )?;

    // --- fixed key, valid MACs, but a reader rule broken ----------------------------------
    let mut spec = basic_spec();
    spec.session_id = std::array::from_fn(|i| 0xd0 + i as u8);
    spec.omit_last_flag = true;
    g.fixed_key_error(
        "last-flag-missing",
        "The basic tree whose only (so last) block was sealed without the last-block flag; \
         every tag is valid. A reader must refuse it: the archive may have lost its end.",
        &spec,
        "Corrupt",
    )?;
    let mut spec = basic_spec();
    spec.session_id = std::array::from_fn(|i| 0xc0 + i as u8);
    spec.signature = Some(SignatureSlot {
        scheme: 1,
        key_id: b"signer".to_vec(),
        signature: vec![0x5a; 64],
    });
    g.fixed_key_error(
        "signature-present",
        "The header carries a signature slot (Some); the header MAC is valid. v1 readers \
         cannot check any signature scheme and must refuse the archive.",
        &spec,
        "Corrupt",
    )?;
    let mut spec = basic_spec();
    spec.session_id = std::array::from_fn(|i| 0xb0 + i as u8);
    spec.items = vec![
        dir("tree", 0o755, 1_700_000_000, 0),
        file(
            "../escape.txt",
            0o644,
            1_700_000_000,
            0,
            b"gotcha\n".to_vec(),
        ),
    ];
    g.fixed_key_error(
        "unsafe-path",
        "The authenticated index lists a file at `../escape.txt`. A reader must refuse the \
         whole index before it writes anything.",
        &spec,
        "UnsafePath",
    )?;
    let mut spec = basic_spec();
    spec.session_id = std::array::from_fn(|i| 0xa0 + i as u8);
    spec.items = vec![
        dir("tree", 0o755, 1_700_000_000, 0),
        symlink("tree/link", "/tmp", 1_700_000_000, 0),
        file(
            "tree/link/planted.txt",
            0o644,
            1_700_000_000,
            0,
            b"gotcha\n".to_vec(),
        ),
    ];
    g.fixed_key_error(
        "file-through-symlink",
        "The authenticated index lists `tree/link` as a symlink to /tmp, then a file \
         `tree/link/planted.txt` below it. A parent must be a folder listed earlier.",
        &spec,
        "UnsafePath",
    )?;

    println!("written: {}", g.written.join(", "));
    println!("kept (already present): {}", g.kept.join(", "));
    Ok(())
}
