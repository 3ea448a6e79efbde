//! `coffer rekey`: add and remove recipients by rewriting the header envelope only. Every
//! byte after the header stays as it was; the file is replaced atomically and a failed rekey
//! leaves the original byte for byte. Removing a recipient this way keeps the session key,
//! so the removed key still opens what it once unwrapped (the documented limit, and the
//! warning); `rekey --reencrypt` (tests/it/reencrypt.rs) locks it out.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use coffer::archive::{Archive, RekeyOptions};
use coffer::recipient::{Fingerprint, Recipient};
use coffer::{Compression, Error};

pub(crate) struct Fixture {
    pub(crate) t: TestDir,
    pub(crate) root: PathBuf,
    pub(crate) archive: PathBuf,
}

pub(crate) fn fixture(recipients: &[&Path]) -> Fixture {
    let t = TestDir::new();
    let root = t.join("src").join("t");
    build_sample_tree(&root);
    let archive = t.join("a.coffer");
    backup_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        recipients,
    );
    Fixture { t, root, archive }
}

/// [`fixture`] as a format v1 archive, for tests that reach into the v1 layout.
pub(crate) fn fixture_v1(recipients: &[&Path]) -> Fixture {
    let t = TestDir::new();
    let root = t.join("src").join("t");
    build_sample_tree(&root);
    let archive = t.join("a.coffer");
    backup_v1_with(
        &[&root],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        recipients,
    );
    Fixture { t, root, archive }
}

impl Fixture {
    /// Restore with `key` into a fresh folder and compare with the source.
    pub(crate) fn restores_with(&self, archive: &Path, key: &Path, name: &str) {
        let target = self.t.join(name);
        try_restore(archive, key, &target, &[], false)
            .unwrap_or_else(|e| panic!("{name}: restore failed: {e}"));
        assert_trees_equal(&self.root, &target.join("t"));
    }

    pub(crate) fn copy(&self, name: &str) -> PathBuf {
        let p = self.t.join(name);
        fs::copy(&self.archive, &p).unwrap();
        p
    }

    /// Names of the files in the archive's folder.
    pub(crate) fn dir_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub(crate) fn fp(pub_key: &Path) -> Fingerprint {
    recipient(pub_key).fingerprint()
}

pub(crate) fn recipients_of(archive: &Path) -> Vec<Fingerprint> {
    Archive::open(archive).unwrap().recipients()
}

/// The archive's bytes after the header (blocks, index, trailer).
pub(crate) fn data_section(archive: &Path) -> Vec<u8> {
    let start = Archive::open(archive).unwrap().data_start() as usize;
    fs::read(archive).unwrap()[start..].to_vec()
}

pub(crate) fn rekey(archive: &Path, identity: &Path) -> assert_cmd::Command {
    let mut c = coffer_cmd();
    c.arg("rekey").arg(archive).arg("-i").arg(identity);
    c
}

/// Run a rekey that must be refused: exit 2, an `error:` line and a `hint:` line, and the
/// archive (and its folder) exactly as before. Returns the error line.
pub(crate) fn refused(f: &Fixture, cmd: &mut assert_cmd::Command) -> String {
    let before = fs::read(&f.archive).unwrap();
    let names = f.dir_names();
    let out = cmd.assert().code(2).get_output().clone();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    assert!(
        fs::read(&f.archive).unwrap() == before,
        "a refused rekey changed the archive"
    );
    assert_eq!(f.dir_names(), names, "a refused rekey left files behind");
    lines[0].to_string()
}

#[test]
fn add_a_recipient_keeps_every_data_byte_and_the_new_key_restores() {
    let f = fixture(&[&alice_pub()]);
    let old_data = data_section(&f.archive);
    let old_session = Archive::open(&f.archive).unwrap().session_id_hex();
    assert!(matches!(
        try_restore(&f.archive, &bob_key(), &f.t.join("before"), &[], false),
        Err(Error::WrongKey { .. })
    ));

    let out = rekey(&f.archive, &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("added:     {}", fp(&bob_pub()))),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("recipient: {}", fp(&alice_pub()))));

    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&alice_pub()), fp(&bob_pub())]
    );
    // Everything from the old data start to the end equals everything from the new one.
    let new_data = data_section(&f.archive);
    assert!(
        new_data == old_data,
        "data section changed ({} -> {} bytes)",
        old_data.len(),
        new_data.len()
    );
    let a = Archive::open(&f.archive).unwrap();
    assert_eq!(a.session_id_hex(), old_session);
    assert_eq!(a.params().stanzas[1].label, "bob");
    drop(a);

    f.restores_with(&f.archive, &bob_key(), "bob-out");
    f.restores_with(&f.archive, &alice_key(), "alice-out");
    // Keyed and keyless verify pass on the rekeyed archive.
    coffer_cmd().arg("verify").arg(&f.archive).assert().code(0);
    coffer_cmd()
        .arg("verify")
        .arg(&f.archive)
        .arg("-i")
        .arg(bob_key())
        .assert()
        .code(0);
    assert_eq!(
        f.dir_names(),
        vec!["a.coffer", "alice-out", "bob-out", "src"]
    );
}

#[test]
fn add_several_and_a_private_key_file_as_recipient() {
    let f = fixture(&[&alice_pub()]);
    // A private key file also works as a recipient: its public half is used.
    rekey(&f.archive, &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .arg("--add")
        .arg(carol_key())
        .assert()
        .code(0);
    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&alice_pub()), fp(&bob_pub()), fp(&carol_pub())]
    );
    f.restores_with(&f.archive, &carol_key(), "carol-out");
}

#[test]
fn remove_without_reencrypt_unlists_the_key_and_warns_that_it_still_opens_the_data() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let old_copy = f.copy("old-copy.coffer");
    let old_data = data_section(&f.archive);

    let out = rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(bob_pub())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&format!("removed:   {}", fp(&bob_pub()))));
    // One line, and the exit code of a successful rekey.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("warning: removed keys still open this archive's data")
            && stderr.contains("--reencrypt"),
        "{stderr}"
    );

    assert_eq!(recipients_of(&f.archive), vec![fp(&alice_pub())]);
    assert!(data_section(&f.archive) == old_data);
    match try_restore(&f.archive, &bob_key(), &f.t.join("bob-new"), &[], false) {
        Err(Error::WrongKey { identity_fp, .. }) => {
            assert_eq!(identity_fp, fp(&bob_pub()).to_string())
        }
        other => panic!("bob still opens the rekeyed file: {:?}", other.map(|_| ())),
    }
    assert!(!f.t.join("bob-new").exists());
    f.restores_with(&f.archive, &alice_key(), "alice-new");
    // The documented limit: a copy of the old file still opens with the removed key.
    f.restores_with(&old_copy, &bob_key(), "bob-old-copy");
}

#[test]
fn removing_the_last_recipient_is_refused() {
    let f = fixture(&[&alice_pub()]);
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--remove")
            .arg(alice_pub())
            .arg("--force"),
    );
    assert!(e.contains("every recipient"), "{e}");
    // Also when the removal and the identity differ: bob removes alice and himself.
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let e = refused(
        &f,
        rekey(&f.archive, &bob_key())
            .arg("--remove")
            .arg(alice_pub())
            .arg("--remove")
            .arg(bob_pub())
            .arg("--force"),
    );
    assert!(e.contains("every recipient"), "{e}");
}

#[test]
fn removing_your_own_key_needs_force_and_another_recipient() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--remove")
            .arg(alice_pub()),
    );
    assert!(e.contains("--force"), "{e}");
    assert!(e.contains(&fp(&alice_pub()).to_string()), "{e}");

    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(alice_pub())
        .arg("--force")
        .assert()
        .code(0);
    assert_eq!(recipients_of(&f.archive), vec![fp(&bob_pub())]);
    assert!(matches!(
        try_restore(&f.archive, &alice_key(), &f.t.join("alice-out"), &[], false),
        Err(Error::WrongKey { .. })
    ));
    f.restores_with(&f.archive, &bob_key(), "bob-out");
}

#[test]
fn adding_a_present_recipient_is_refused() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key()).arg("--add").arg(bob_pub()),
    );
    assert!(e.contains("already a recipient"), "{e}");
    // The same key twice on the command line.
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--add")
            .arg(carol_pub())
            .arg("--add")
            .arg(carol_pub()),
    );
    assert!(e.contains("twice"), "{e}");
    // The private key file of a present recipient is the same recipient.
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--add")
            .arg(alice_key()),
    );
    assert!(e.contains("already a recipient"), "{e}");
    // So is the same key in PKCS#1 form (the fingerprint is of the key, not the file).
    let pkcs1 = key("alice.pkcs1.key.pub");
    assert_eq!(fp(&pkcs1), fp(&alice_pub()));
    let e = refused(&f, rekey(&f.archive, &bob_key()).arg("--add").arg(&pkcs1));
    assert!(e.contains("already a recipient"), "{e}");
}

#[test]
fn removing_an_unknown_or_malformed_fingerprint_is_refused() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let carol = fp(&carol_pub()).to_string();
    for spec in [
        carol.clone(),
        carol_pub().to_str().unwrap().to_string(),
        carol.trim_start_matches("SHA256:")[..12].to_string(),
    ] {
        let e = refused(
            &f,
            rekey(&f.archive, &alice_key()).arg("--remove").arg(&spec),
        );
        assert!(
            e.contains("not a recipient") || e.contains("no recipient"),
            "{spec}: {e}"
        );
    }
    // Too short, or not hex at all.
    for spec in ["abc123", "SHA256:xyz", "not-a-fingerprint-or-a-file"] {
        let e = refused(
            &f,
            rekey(&f.archive, &alice_key()).arg("--remove").arg(spec),
        );
        assert!(e.contains("--remove"), "{spec}: {e}");
    }
    // Nothing to do at all.
    refused(&f, &mut rekey(&f.archive, &alice_key()));
}

#[test]
fn remove_by_prefix_full_fingerprint_and_key_file() {
    let alice = fp(&alice_pub()).to_hex();
    let bob = fp(&bob_pub()).to_hex();
    let carol = fp(&carol_pub()).to_hex();
    assert_ne!(&alice[..8], &bob[..8], "fixture keys share a prefix");
    assert_ne!(&carol[..8], &bob[..8], "fixture keys share a prefix");

    // An 8-digit prefix, upper case.
    let f = fixture(&[&alice_pub(), &bob_pub(), &carol_pub()]);
    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(bob[..8].to_ascii_uppercase())
        .assert()
        .code(0);
    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&alice_pub()), fp(&carol_pub())]
    );
    // SHA256: and a longer prefix.
    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(format!("SHA256:{}", &carol[..20]))
        .assert()
        .code(0);
    assert_eq!(recipients_of(&f.archive), vec![fp(&alice_pub())]);

    // The full fingerprint, and a key file (public and private).
    let f = fixture(&[&alice_pub(), &bob_pub(), &carol_pub()]);
    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(fp(&bob_pub()).to_string())
        .assert()
        .code(0);
    rekey(&f.archive, &alice_key())
        .arg("--remove")
        .arg(carol_key())
        .assert()
        .code(0);
    assert_eq!(recipients_of(&f.archive), vec![fp(&alice_pub())]);
    f.restores_with(&f.archive, &alice_key(), "alice-out");
    assert!(matches!(
        try_restore(&f.archive, &carol_key(), &f.t.join("carol-out"), &[], false),
        Err(Error::WrongKey { .. })
    ));
}

#[test]
fn add_and_remove_in_one_call_rotates_a_key() {
    let f = fixture(&[&alice_pub(), &bob_pub()]);
    let old_data = data_section(&f.archive);
    rekey(&f.archive, &bob_key())
        .arg("--add")
        .arg(carol_pub())
        .arg("--remove")
        .arg(alice_pub())
        .assert()
        .code(0);
    assert_eq!(
        recipients_of(&f.archive),
        vec![fp(&bob_pub()), fp(&carol_pub())]
    );
    assert!(data_section(&f.archive) == old_data);
    f.restores_with(&f.archive, &carol_key(), "carol-out");
}

#[test]
fn a_recipient_file_that_is_not_a_key_is_an_error() {
    let f = fixture(&[&alice_pub()]);
    let text = f.t.join("notes.txt");
    fs::write(&text, "these are notes, not a key\n").unwrap();
    let empty = f.t.join("empty.pub");
    fs::write(&empty, "").unwrap();
    let pem = f.t.join("broken.pub");
    fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nAAAAnotbase64!!\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    for bad in [&text, &empty, &pem] {
        let e = refused(&f, rekey(&f.archive, &alice_key()).arg("--add").arg(bad));
        assert!(
            e.contains(bad.to_str().unwrap()),
            "error names the file: {e}"
        );
    }
    // A missing file, and a key that is too small.
    refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--add")
            .arg(f.t.join("missing.pub")),
    );
    refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--add")
            .arg(key("small1024.pem.pub")),
    );
    assert_eq!(recipients_of(&f.archive), vec![fp(&alice_pub())]);
}

#[test]
fn a_failed_rekey_leaves_the_original_intact() {
    let f = fixture_v1(&[&alice_pub()]);
    let original = fs::read(&f.archive).unwrap();
    fs::set_permissions(&f.archive, fs::Permissions::from_mode(0o640)).unwrap();

    // A bad key to add, together with a valid one: nothing is added.
    let bad = f.t.join("bad.pub");
    fs::write(&bad, "garbage").unwrap();
    refused(
        &f,
        rekey(&f.archive, &alice_key())
            .arg("--add")
            .arg(bob_pub())
            .arg("--add")
            .arg(&bad),
    );
    // A key that cannot open the archive.
    let e = refused(
        &f,
        rekey(&f.archive, &carol_key()).arg("--add").arg(bob_pub()),
    );
    assert!(e.contains("no recipient"), "{e}");
    assert!(fs::read(&f.archive).unwrap() == original);

    // A damaged archive (its index fails authentication) is not re-blessed.
    let a = Archive::open(&f.archive).unwrap();
    let index_at = (a.data_start() + a.v1_trailer().unwrap().index_offset) as usize;
    drop(a);
    let mut damaged = original.clone();
    damaged[index_at + 40] ^= 0x01;
    let crc_at = damaged.len() - coffer::format::trailer::TRAILER_LEN - 4;
    let crc = coffer::format::crc32c(&damaged[index_at..crc_at]);
    damaged[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(&f.archive, &damaged).unwrap();
    let e = refused(
        &f,
        rekey(&f.archive, &alice_key()).arg("--add").arg(bob_pub()),
    );
    assert!(e.contains("authentication failed"), "{e}");
    assert!(fs::read(&f.archive).unwrap() == damaged);

    // And through the library, with the original back in place.
    fs::write(&f.archive, &original).unwrap();
    let bob = recipient(&bob_pub());
    let opts = RekeyOptions {
        add: &[&bob as &dyn Recipient],
        remove: &[fp(&carol_pub())],
        ..Default::default()
    };
    let err = coffer::archive::rekey(
        &f.archive,
        &identity(&alice_key()),
        &opts,
        &coffer::backup::Quiet,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert!(fs::read(&f.archive).unwrap() == original);

    // A successful rekey keeps the file's mode.
    rekey(&f.archive, &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .assert()
        .code(0);
    let mode = fs::metadata(&f.archive).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        f.dir_names(),
        vec!["a.coffer", "bad.pub", "src"],
        "no temporary file left"
    );
}

#[test]
fn regression_rekey_through_a_symlink_replaced_the_link() {
    for reencrypt in [false, true] {
        let f = fixture(&[&alice_pub()]);
        // The archive lives in another folder, reached through a relative link.
        let real_dir = f.t.join("real");
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("a.coffer");
        fs::rename(&f.archive, &real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("real/a.coffer", &f.archive).unwrap();

        let mut cmd = rekey(&f.archive, &alice_key());
        cmd.arg("--add").arg(bob_pub());
        if reencrypt {
            cmd.arg("--reencrypt");
        }
        cmd.assert().code(0);

        let link = fs::symlink_metadata(&f.archive).unwrap();
        assert!(link.file_type().is_symlink(), "the link was replaced");
        assert_eq!(
            fs::read_link(&f.archive).unwrap(),
            Path::new("real/a.coffer")
        );
        assert_eq!(
            recipients_of(&real),
            vec![fp(&alice_pub()), fp(&bob_pub())],
            "the target kept its old recipients (reencrypt: {reencrypt})"
        );
        let mode = fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // The temporary file went beside the target and is gone; nothing beside the link.
        let names = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&real_dir), vec!["a.coffer"]);
        assert_eq!(f.dir_names(), vec!["a.coffer", "real", "src"]);
        f.restores_with(&f.archive, &bob_key(), "bob-out");
    }
}
