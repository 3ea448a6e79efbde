//! A closed stdout (`coffer list … | head -2`, `| grep -m1`, `less` quit early) ends every
//! command that prints quietly: exit 0 and nothing on stderr, as ripgrep and the other Unix
//! tools do, instead of a "failed printing to stdout" panic with exit 101.

use std::path::Path;
use std::process::Stdio;

use crate::common::{SMALL_BLOCK, alice_key, alice_pub, backup_with, build_sample_tree};
use crate::job_common::World;
use coffer::Compression;

/// Run `coffer args` with stdout a pipe whose reader is already closed, so its very first
/// write fails with EPIPE (no race with a reader that might still be reading).
fn run_with_closed_stdout(w: &World, args: &[&str]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = w
        .coffer_std()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) && stderr.is_empty(),
        "coffer {}: {:?}, stderr: {stderr}",
        args.join(" "),
        out.status
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn regression_closed_stdout_ends_every_command_quietly() {
    let w = World::new();
    let tree = w.join("tree");
    build_sample_tree(&tree);
    let archive = w.join("a.coffer");
    backup_with(
        &[&tree],
        &archive,
        SMALL_BLOCK,
        Compression::Zstd(1),
        &[&alice_pub()],
    );
    let dest = w.mkdir("dest");
    let src = w.small_tree("src");
    let pubkey = alice_pub();
    w.write_config(&format!(
        "[job.home]\nsources = [{:?}]\ndestination = {:?}\nrecipients = [{:?}]\nretention = {{ keep_last = 1 }}\n",
        s(&src),
        s(&dest),
        s(&pubkey)
    ));
    w.coffer()
        .args(["job", "run", "home", "-q"])
        .assert()
        .success();
    let (a, key) = (s(&archive), alice_key());
    let key = s(&key);
    let out = w.join("out");
    let second = w.join("b.coffer");

    let commands: &[&[&str]] = &[
        &["info", a],
        &["info", "--json", a],
        &["list", "-i", key, a],
        &["list", "--long", "-i", key, a],
        &["list", "--json", "-i", key, a],
        &["verify", a],
        &["verify", "--json", a],
        &["verify", "-i", key, a],
        &["history"],
        &["history", "--json"],
        &["job", "list"],
        &["job", "list", "--json"],
        &["job", "check"],
        &["prune", "--dry-run"],
        &["prune", "--dry-run", "--json"],
        &["completions", "bash"],
        &["completions", "zsh"],
        &["man"],
        &["--help"],
        &["restore", a, "-i", key, "--to", s(&out)],
        &[
            "backup",
            s(&src),
            "-o",
            s(&second),
            "-r",
            s(&pubkey),
            "--json",
        ],
    ];
    for args in commands {
        run_with_closed_stdout(&w, args);
    }
    // The work was done all the same.
    assert!(out.join("tree/hello.txt").is_file());
    assert!(second.is_file());
}
