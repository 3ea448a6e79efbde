//! `rekey` of an incremental restore point rekeys its whole chain, all or nothing
//! (FORMAT.md v2.8.3), through the binary on chains it wrote: after a rekey to a new
//! recipient the new key restores the tree and the old one is refused in every member; a
//! rekey that fails part way (a damaged member after another's replacement was written, a
//! missing member) leaves every member byte for byte as it was; `--reencrypt` of a chain
//! is refused; a rerun after a partial change completes it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::chain_verify::{CliChain, archives_in, cli_chain};
use crate::common::*;
use coffer::archive::Archive;
use coffer::recipient::Recipient;

fn rekey(archive: &Path, key: &Path) -> assert_cmd::Command {
    let mut c = coffer_cmd();
    c.arg("rekey").arg(archive).arg("-i").arg(key);
    c
}

fn fingerprint(pubkey: &Path) -> coffer::recipient::Fingerprint {
    recipient(pubkey).fingerprint()
}

fn contents(c: &CliChain) -> Vec<(PathBuf, Vec<u8>)> {
    archives_in(&c.out)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn restore(archive: &Path, key: &Path, target: &Path) -> std::process::Output {
    coffer_cmd()
        .arg("restore")
        .arg(archive)
        .arg("-i")
        .arg(key)
        .arg("--to")
        .arg(target)
        .output()
        .unwrap()
}

#[test]
fn chain_rekey_to_a_new_recipient_rekeys_every_member_and_restores_with_the_new_key() {
    let c = cli_chain();
    let out = rekey(c.newest(), &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .arg("--remove")
        .arg(alice_pub())
        .arg("--force")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("rekeyed too").count(), 2, "{text}");
    for p in &c.archives {
        assert_eq!(
            Archive::open(p).unwrap().recipients(),
            vec![fingerprint(&bob_pub())],
            "{}",
            p.display()
        );
    }
    let target = c.t.join("restored");
    let r = restore(c.newest(), &bob_key(), &target);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_trees_equal(&c.tree, &target.join("tree"));
    // The old key opens no member.
    let r = restore(c.newest(), &alice_key(), &c.t.join("refused"));
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no recipient"));
    for p in &c.archives {
        let a = Archive::open(p).unwrap();
        assert!(
            matches!(
                a.unlock(&identity(&alice_key())),
                Err(coffer::Error::WrongKey { .. })
            ),
            "{}",
            p.display()
        );
    }
    // Commitments are unchanged: the keyed chain verify with the new key passes.
    coffer_cmd()
        .arg("verify")
        .arg(c.newest())
        .arg("-i")
        .arg(bob_key())
        .assert()
        .success();
}

#[test]
fn a_chain_rekey_failing_part_way_leaves_every_member_unchanged() {
    let c = cli_chain();
    // The first incremental's index damaged: the full's replacement is written before it
    // is found, then the rekey fails.
    let inc = &c.archives[1];
    let a = Archive::open(inc).unwrap();
    let index_at = a.data_start() + a.params().data_len;
    drop(a);
    let mut bytes = fs::read(inc).unwrap();
    bytes[index_at as usize + 40] ^= 0x01;
    fs::write(inc, &bytes).unwrap();
    let before = contents(&c);
    let out = rekey(c.newest(), &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&inc.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
    // Found and refused on its own damage, after the full's replacement was written.
    assert!(
        err.contains("corrupt") && !err.contains("not found"),
        "{err}"
    );
    // Every member as it was, and no temporary file left beside them.
    assert_eq!(contents(&c), before);
}

#[test]
fn a_chain_rekey_with_a_missing_member_names_it_and_changes_nothing() {
    let c = cli_chain();
    let gone = &c.archives[0];
    let sid = Archive::open(gone).unwrap().session_id_hex();
    fs::remove_file(gone).unwrap();
    let before = contents(&c);
    let out = rekey(c.newest(), &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&sid), "{err}");
    assert_eq!(contents(&c), before);
}

#[test]
fn reencrypt_of_a_chain_is_refused_and_changes_nothing() {
    let c = cli_chain();
    let before = contents(&c);
    let out = rekey(c.newest(), &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .arg("--reencrypt")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--reencrypt of an incremental chain"), "{err}");
    assert_eq!(contents(&c), before);
}

#[test]
fn a_rerun_after_a_partial_chain_rekey_completes_it() {
    let c = cli_chain();
    // As after a crash between the renames: the full already has bob, the rest not.
    rekey(&c.archives[0], &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .assert()
        .success();
    rekey(c.newest(), &alice_key())
        .arg("--add")
        .arg(bob_pub())
        .assert()
        .success();
    let want = vec![fingerprint(&alice_pub()), fingerprint(&bob_pub())];
    for p in &c.archives {
        assert_eq!(
            Archive::open(p).unwrap().recipients(),
            want,
            "{}",
            p.display()
        );
    }
    let target = c.t.join("restored");
    let r = restore(c.newest(), &bob_key(), &target);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_trees_equal(&c.tree, &target.join("tree"));
}
