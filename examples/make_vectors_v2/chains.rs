//! Chain vectors: `chain2`, `chain3`, `signed-chain` and the must-fail chain vectors.

use std::path::Path;

use coffer::format::v2::ParentRef;

use crate::manifest::Manifest;
use crate::model::Built;
use crate::{
    CHAIN_IDS, CHAIN_KEYS, CHAIN_NAMES, CHAIN_TIMES, ChainRun, Ctx, chain_member, commitment_of,
    keys_lines, seq, session, sid,
};

fn write_members(dir: &Path, members: &[(usize, &Built)]) {
    for (n, b) in members {
        b.write(&dir.join(CHAIN_NAMES[*n]));
    }
}

fn header(ctx: &Ctx, run: &ChainRun, m: &mut Manifest, upto: usize) {
    for n in 0..=upto {
        let table = ["session", "session_b", "session_c"][n];
        if n == 0 {
            session(
                m,
                &seq(CHAIN_KEYS[0]),
                &sid(CHAIN_IDS[0]),
                &commitment_of(ctx, 0, run),
            );
        } else {
            m.table(table);
            m.str("session_key", &crate::manifest::hex(&seq(CHAIN_KEYS[n])));
            m.str("session_id", &crate::manifest::hex(&sid(CHAIN_IDS[n])));
            m.str(
                "commitment",
                &crate::manifest::hex(&commitment_of(ctx, n, run)),
            );
        }
        m.str("file", CHAIN_NAMES[n]);
        m.int("stream_len", run.models[n].stream_len.into());
        m.int("block_count", run.models[n].blocks.len() as i128);
        m.int("parents", run.models[n].fields.chain.len() as i128);
    }
}

/// Print each member's entries: the numbers of the worked example, docs/FORMAT.md v2.8.5.
fn print_members(run: &ChainRun) {
    for (n, m) in run.models.iter().enumerate() {
        println!("{} (stream_len {}):", CHAIN_NAMES[n], m.stream_len);
        for (i, e) in m.entries.iter().enumerate() {
            let x: Vec<String> = e
                .extents
                .iter()
                .map(|x| format!("({}, {}, {})", x.archive, x.offset, x.len))
                .collect();
            println!(
                "  {i} {} kind {} size {} ranges {:?} link {:?} extents {}",
                String::from_utf8_lossy(&e.path),
                e.kind,
                e.size,
                e.data_ranges,
                e.hardlink_to,
                x.join(", ")
            );
            if n == 1 && e.path == b"t/big.bin" {
                let bytes = postcard::to_stdvec(e).unwrap();
                println!(
                    "  postcard ({} bytes): {}",
                    bytes.len(),
                    crate::manifest::hex(&bytes)
                );
            }
        }
    }
}

pub fn write(ctx: &Ctx, run: &ChainRun) {
    print_members(run);
    let a = chain_member(ctx, run, 0, None);
    let b = chain_member(ctx, run, 1, None);
    let c = chain_member(ctx, run, 2, None);
    assert_eq!(run.models[1].fields.chain.len(), 1);
    assert_eq!(
        run.models[2].fields.chain.len(),
        2,
        "C's flat table: A and B"
    );

    // chain2
    let dir = ctx.folder("chain2");
    write_members(&dir, &[(0, &a), (1, &b)]);
    let mut m = Manifest::new(
        "chain2",
        "The two-archive chain of docs/FORMAT.md v2.8.5: full A and incremental B (big.bin's window 1 rewritten, c.txt a copy of a.txt, the FIFO deleted), both written by coffer's chain writer.",
    );
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("restore", "ok")
        .str("restore_signer", "SignatureRequired")
        .str("verify", "ok")
        .str("verify_keyed", "ok")
        .str("list", "ok")
        .str("info", "ok")
        .str("info_parents", "present");
    header(ctx, run, &mut m, 1);
    m.tree(&run.trees[1]);
    m.write(&dir);

    // chain3
    let dir = ctx.folder("chain3");
    write_members(&dir, &[(0, &a), (1, &b), (2, &c)]);
    let mut m = Manifest::new(
        "chain3",
        "A full and two incrementals; the third (C: big.bin's window 0 rewritten, d.txt new) references both earlier archives through a flat parent table of 2.",
    );
    m.str("archive", CHAIN_NAMES[2]);
    keys_lines(&mut m);
    m.str("select", "t/big.bin");
    m.str("restore", "ok")
        .str("restore_selected", "ok")
        .str("verify", "ok")
        .str("verify_keyed", "ok")
        .str("list", "ok")
        .str("info", "ok")
        .str("info_parents", "present");
    header(ctx, run, &mut m, 2);
    m.tree(&run.trees[2]);
    m.write(&dir);

    // signed-chain
    let sa = chain_member(ctx, run, 0, Some(&ctx.signer));
    let sb = chain_member(ctx, run, 1, Some(&ctx.signer));
    let dir = ctx.folder("signed-chain");
    write_members(&dir, &[(0, &sa), (1, &sb)]);
    let mut m = Manifest::new("signed-chain", "`chain2` with both members signed.");
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("restore", "ok")
        .str("restore_signer", "ok")
        .str("verify_signer", "ok")
        .str("verify_keyed_signer", "ok")
        .str("list", "ok");
    header(ctx, run, &mut m, 1);
    m.tree(&run.trees[1]);
    m.write(&dir);

    // chain-missing-parent
    let dir = ctx.folder("chain-missing-parent");
    write_members(&dir, &[(1, &b)]);
    let mut m = Manifest::new(
        "chain-missing-parent",
        "`chain2` without A: restore names A's session id a0a1…, its hint and the 4 files that need it (a.txt, big.bin, c.txt, sparse.img).",
    );
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("missing", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    m.int("files_needing", 4);
    m.str("restore", "MissingParent")
        .comment("keyed verify records a broken parent as a problem and goes on (v2.10.3): exit 2")
        .str("verify_keyed", "problems")
        .str("list", "ok")
        .str("info", "ok")
        .str("info_parents", "missing");
    m.write(&dir);

    // chain-lookalike-parent: A's session id under another session key.
    let mut spec = ctx.spec([0x55; 32], sid(CHAIN_IDS[0]), CHAIN_TIMES[0], "home");
    spec.chain = Vec::new();
    let lookalike = run.models[0].seal(&spec).finish(None, |_| {});
    let dir = ctx.folder("chain-lookalike-parent");
    write_members(&dir, &[(0, &lookalike), (1, &b)]);
    let mut m = Manifest::new(
        "chain-lookalike-parent",
        "`chain2` with A replaced by an archive of A's content and session id a0…af under another session key (55 repeated), for the same recipient: its commitment differs from B's record.",
    );
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("restore", "Tampered")
        .comment("keyed verify records a broken parent as a problem and goes on (v2.10.3): exit 2")
        .str("verify_keyed", "problems")
        .str("list", "ok");
    m.write(&dir);

    // chain-extent-outside-parent: a.txt's extent into A moved to end 50 bytes past A.
    let a_len = run.models[0].stream_len;
    let mut model = run.models[1].clone();
    for e in &mut model.entries {
        if e.path == b"t/a.txt" {
            assert_eq!(e.extents.len(), 1);
            assert_eq!(e.extents[0].archive, 1);
            e.extents[0].offset = a_len - 50;
        }
    }
    let outside = reseal_b(ctx, run, &model);
    let dir = ctx.folder("chain-extent-outside-parent");
    write_members(&dir, &[(0, &a), (1, &outside)]);
    let mut m = Manifest::new(
        "chain-extent-outside-parent",
        &format!(
            "`chain2` with t/a.txt's extent into A at offset {} (length 100), ending 50 bytes past A's stream_len {a_len}; re-sealed under B's key.",
            a_len - 50
        ),
    );
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("restore", "Corrupt")
        .comment("keyed verify records a broken parent as a problem and goes on (v2.10.3): exit 2")
        .str("verify_keyed", "problems")
        .str("list", "ok");
    m.write(&dir);

    // chain-cycle: A lists B as its parent, B lists A.
    let mut spec = ctx.spec(
        seq(CHAIN_KEYS[0]),
        sid(CHAIN_IDS[0]),
        CHAIN_TIMES[0],
        "home",
    );
    spec.chain = vec![ParentRef {
        session_id: sid(CHAIN_IDS[1]),
        hint: CHAIN_NAMES[1].into(),
    }];
    spec.commitments = vec![commitment_of(ctx, 1, run)];
    let cyclic = run.models[0].seal(&spec).finish(None, |_| {});
    let dir = ctx.folder("chain-cycle");
    write_members(&dir, &[(0, &cyclic), (1, &b)]);
    let mut m = Manifest::new(
        "chain-cycle",
        "`chain2` with A re-sealed listing B as its parent (B's true commitment): A and B each list the other.",
    );
    m.str("archive", CHAIN_NAMES[1]);
    keys_lines(&mut m);
    m.str("restore", "Corrupt")
        .comment("keyed verify records a broken parent as a problem and goes on (v2.10.3): exit 2")
        .str("verify_keyed", "problems")
        .str("info", "ok")
        .str("info_parents", "chain cycle")
        .str("list", "ok");
    m.write(&dir);

    // chain-self-parent: A listing its own session id.
    let mut spec = ctx.spec(
        seq(CHAIN_KEYS[0]),
        sid(CHAIN_IDS[0]),
        CHAIN_TIMES[0],
        "home",
    );
    spec.chain = vec![ParentRef {
        session_id: sid(CHAIN_IDS[0]),
        hint: CHAIN_NAMES[0].into(),
    }];
    spec.commitments = vec![commitment_of(ctx, 0, run)];
    let selfish = run.models[0].seal(&spec).finish(None, |_| {});
    let dir = ctx.folder("chain-self-parent");
    write_members(&dir, &[(0, &selfish)]);
    let mut m = Manifest::new(
        "chain-self-parent",
        "A re-sealed with a parent table listing its own session id (refused by the keyless header checks).",
    );
    m.str("archive", CHAIN_NAMES[0]);
    keys_lines(&mut m);
    m.str("restore", "Corrupt")
        .str("verify", "Corrupt")
        .str("verify_keyed", "Corrupt")
        .str("list", "Corrupt")
        .str("info", "Corrupt");
    m.write(&dir);
}

/// B's model re-sealed under B's key with its true parent table.
fn reseal_b(ctx: &Ctx, run: &ChainRun, model: &crate::model::Model) -> Built {
    let mut spec = ctx.spec(
        seq(CHAIN_KEYS[1]),
        sid(CHAIN_IDS[1]),
        CHAIN_TIMES[1],
        "home",
    );
    spec.chain = vec![ParentRef {
        session_id: sid(CHAIN_IDS[0]),
        hint: CHAIN_NAMES[0].into(),
    }];
    spec.commitments = vec![commitment_of(ctx, 0, run)];
    model.seal(&spec).finish(None, |_| {})
}
