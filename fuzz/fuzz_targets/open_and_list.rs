//! Whole-archive reading on arbitrary bytes, as `coffer verify`, `coffer list` and the
//! first half of `coffer restore` do it: `Archive::open` (header and trailer, no key), the
//! keyless frame walk `verify_checksums`, `unlock` with the fixture identity and with the
//! fixed session keys of the v1 test vectors, listing every entry, and the keyed
//! `verify_blocks`. None of it may panic, hang or allocate what the input only claims.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coffer::archive::Archive;
use coffer::backup::Quiet;
use coffer::format::header::Stanza;
use coffer::keys::SessionKey;
use coffer::recipient::{Fingerprint, Identity, RsaIdentity};
use libfuzzer_sys::fuzz_target;

/// Session keys of the v1 vectors: `basic` and most others (00..1f), `multiblock` (20..3f).
const KEY_A: [u8; 32] = seq(0x00);
const KEY_B: [u8; 32] = seq(0x20);

const fn seq(start: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = start + i as u8;
        i += 1;
    }
    k
}

/// Claims every stanza and "unwraps" it to a fixed session key, so that archives made with
/// the vectors' well-known keys (fixtures/v1/*/session_key.hex) unlock without RSA.
struct FixedKey([u8; 32]);

impl Identity for FixedKey {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint([0; 32])
    }
    fn source(&self) -> &Path {
        Path::new("fixed-session-key")
    }
    fn unwrap_stanza(&self, _stanza: &Stanza) -> coffer::Result<Option<SessionKey>> {
        Ok(Some(SessionKey::from_bytes(self.0)))
    }
}

/// The v1 vectors' identity (fixtures/v1/basic/identity.pem). RSA-OAEP decryption costs
/// milliseconds, which would cut the fuzzer to a few dozen runs a second, so the genuine
/// wrapped keys of the seed archives (whose session keys the vectors publish) are answered
/// from a table; every other stanza goes through the real RSA unwrap.
struct FixtureIdentity {
    rsa: RsaIdentity,
    known: Vec<(Vec<u8>, [u8; 32])>,
}

impl Identity for FixtureIdentity {
    fn fingerprint(&self) -> Fingerprint {
        self.rsa.fingerprint()
    }
    fn source(&self) -> &Path {
        self.rsa.source()
    }
    fn unwrap_stanza(&self, stanza: &Stanza) -> coffer::Result<Option<SessionKey>> {
        if stanza.scheme == 1
            && stanza.fingerprint == self.rsa.fingerprint().0
            && let Some((_, key)) = self.known.iter().find(|(w, _)| *w == stanza.wrapped_key)
        {
            return Ok(Some(SessionKey::from_bytes(*key)));
        }
        self.rsa.unwrap_stanza(stanza)
    }
}

fn fixture_identity() -> &'static FixtureIdentity {
    static ID: OnceLock<FixtureIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v1");
        let rsa = RsaIdentity::load(&v1.join("basic/identity.pem")).expect("fixture identity");
        let mut known = Vec::new();
        for (vector, key) in [("basic", KEY_A), ("multiblock", KEY_B)] {
            let archive = Archive::open(&v1.join(vector).join("archive.coffer")).expect("vector");
            for s in archive.params().stanzas {
                // Check once that the table tells the truth.
                let real = rsa.unwrap_stanza(s).expect("genuine stanza unwraps");
                assert!(real.is_some());
                known.push((s.wrapped_key.clone(), key));
            }
        }
        FixtureIdentity { rsa, known }
    })
}

/// Where each input is written to be opened as an archive. libFuzzer ends the process
/// without running destructors, so the file is never removed here: `scripts/fuzz.sh`
/// points `COFFER_FUZZ_SCRATCH` at its scratch folder, which it removes (every run used
/// to leave a file in /dev/shm).
fn scratch_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if let Some(d) = std::env::var_os("COFFER_FUZZ_SCRATCH") {
            PathBuf::from(d)
        } else if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("coffer-fuzz-{}.coffer", std::process::id()))
    })
}

fn list(archive: &Archive, identity: &dyn Identity) {
    let Ok(unlocked) = archive.unlock(identity) else {
        return;
    };
    let mut out = String::new();
    // Either version's entries, streamed (v2: chunk by chunk, each validated first).
    let _ = unlocked.for_each_entry(archive, |_, e| {
        out.push_str(&format!(
            "{} {:o} {} {:?} {:?}\n",
            e.kind, e.mode, e.size, e.path, e.link_target
        ));
        Ok(())
    });
    std::hint::black_box(out);
    if let Ok(report) = archive.verify_blocks(&unlocked, &Quiet) {
        assert!(report.keyed);
    }
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    std::fs::write(path, data).expect("write scratch archive");
    let Ok(archive) = Archive::open(path) else {
        return;
    };
    assert!(archive.data_start() + archive.params().data_len <= data.len() as u64);
    let _ = archive.verify_checksums(&Quiet);
    list(&archive, &FixedKey(KEY_A));
    list(&archive, &FixedKey(KEY_B));
    list(&archive, fixture_identity());
});
