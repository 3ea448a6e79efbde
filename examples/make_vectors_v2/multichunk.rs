//! `multichunk`: an index the real writer cuts into several chunks (its 256 KiB target,
//! v2.7.3, is not an option of the public API, so the tree has enough entries with long
//! names to pass it three times), with a hard link in the last chunk whose target is in the
//! first. A selective restore of `t/zz` needs the last chunk, and chunk 0 for the ancestor
//! `t` and the link's target; the chunks between are never read.

use std::fs;
use std::path::{Path, PathBuf};

use coffer::Compression;
use coffer::format::v2::KIND_HARDLINK;

use crate::manifest::Manifest;
use crate::model::Model;
use crate::{CHAIN_TIMES, Ctx, keys_lines, seq, session, sid};

/// Files of the bulk: 2200 entries of about 280 bytes, past twice the writer's 256 KiB
/// chunk target.
const FILES: usize = 2200;
pub const KEY: u8 = 0x60;
pub const ID: u8 = 0xd0;

fn file(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// `t/a-first.txt`, `t/bulk/<long>NNNN.txt` (empty files: the names are what fills the
/// index), `t/zz/last.txt` and `t/zz/link-to-first.txt`, a hard link to `t/a-first.txt`.
/// The bulk lies in one folder, so every entry's ancestors are in chunk 0 or in its own
/// chunk: a chunk is opened only for what is selected in it (v2.7.2 rule 3 checks the
/// parent of every entry of an opened chunk, which would otherwise open the chunks of the
/// folders in between).
fn tree(parent: &Path) -> PathBuf {
    let t = parent.join("t");
    fs::create_dir_all(t.join("zz")).unwrap();
    fs::create_dir_all(t.join("bulk")).unwrap();
    file(&t.join("a-first.txt"), b"first name of a linked inode\n");
    let name = "a-file-name-long-enough-that-a-few-thousand-fill-three-index-chunks-".repeat(3);
    for f in 0..FILES {
        file(&t.join("bulk").join(format!("{name}{f:04}.txt")), b"");
    }
    file(&t.join("zz/last.txt"), b"the last chunk\n");
    fs::hard_link(t.join("a-first.txt"), t.join("zz/link-to-first.txt")).unwrap();
    crate::trees::settle(&t);
    t
}

pub fn write(ctx: &Ctx) {
    let src = ctx.work.path().join("multichunk");
    let t = tree(&src);
    let raw = ctx.work.path().join("multichunk.coffer");
    crate::trees::Run {
        source: &t,
        output: raw.clone(),
        recipients: &ctx.recipients(),
        session_id: sid(ID),
        compression: Compression::Zstd(1),
        state: None,
        signing_key: None,
    }
    .go();
    let model = Model::load(&fs::read(&raw).unwrap(), &ctx.id);
    let chunks = model.chunk_counts.len();
    assert!(chunks >= 3, "the writer cut {chunks} chunk(s)");
    // Chunk of each entry; the link's and its target's.
    let chunk_of = |i: usize| {
        let mut n = 0;
        model
            .chunk_counts
            .iter()
            .position(|&c| {
                n += c as usize;
                i < n
            })
            .unwrap()
    };
    let link = model
        .entries
        .iter()
        .position(|e| e.path == b"t/zz/link-to-first.txt")
        .unwrap();
    assert_eq!(model.entries[link].kind, KIND_HARDLINK);
    let target = model.entries[link].hardlink_to.unwrap() as usize;
    assert_eq!(model.entries[target].path, b"t/a-first.txt");
    assert_eq!((chunk_of(target), chunk_of(link)), (0, chunks - 1));

    let key = seq(KEY);
    let sealed = model.seal(&ctx.spec(key, sid(ID), CHAIN_TIMES[0], "multichunk"));
    let commitment = sealed.commitment();
    let built = sealed.finish(None, |_| {});
    let dir = ctx.folder("multichunk");
    built.write(&dir.join("archive.coffer"));
    let size = fs::metadata(dir.join("archive.coffer")).unwrap().len();
    assert!(size <= 300_000, "multichunk is {size} bytes");

    let d = &built.directory;
    let frames: Vec<String> = d.chunks.iter().map(|c| c.frame_len.to_string()).collect();
    let tables: u64 = d.block_chunks.iter().map(|c| u64::from(c.frame_len)).sum();
    let last = chunks - 1;
    // Selective restore of t/zz: the directory, chunk 0 (the ancestors t and t/bulk, the
    // link's target), the last chunk and the block-table chunk, each read once (the
    // reader keeps the chunks it opened for the second pass).
    let wanted = u64::from(d.chunks[0].frame_len) + u64::from(d.chunks[last].frame_len);
    let select_bytes = u64::from(built.trailer.directory_len) + wanted + tables;

    let mut m = Manifest::new(
        "multichunk",
        &format!(
            "{} entries whose long names the writer cuts into {chunks} index chunks (zstd); t/zz/link-to-first.txt (chunk {last}) is a hard link to t/a-first.txt (chunk 0). Restoring t/zz alone reads chunks 0 and {last}, never the ones between.",
            model.entries.len()
        ),
    );
    m.str("archive", "archive.coffer");
    keys_lines(&mut m);
    m.str("select", "t/zz");
    m.comment("Whole: every entry restored (`entry_count`, the bulk not listed below).");
    m.comment("Selected: index bytes read (RestoreReport::index_bytes_read) = directory_len +");
    m.comment(
        "block_table_len + the frames of select_chunks, each read once; never the chunks between.",
    );
    m.str("restore", "ok")
        .str("restore_selected", "ok")
        .str("restore_signer", "SignatureRequired")
        .str("verify", "ok")
        .str("verify_keyed", "ok")
        .str("list", "ok")
        .str("info", "ok");
    m.int("entry_count", model.entries.len() as i128);
    m.int("index_chunks", chunks as i128);
    m.str("chunk_entry_counts", &join(&model.chunk_counts));
    m.str("chunk_frame_lens", &frames.join(" "));
    m.int("directory_len", built.trailer.directory_len.into());
    m.int("block_table_len", tables.into());
    m.str("select_chunks", &format!("0 {last}"));
    m.int("select_index_bytes_read", select_bytes.into());
    session(&mut m, &key, &sid(ID), &commitment);
    m.tree_where(&t, |rel| {
        rel == b"t" || rel == b"t/a-first.txt" || rel == b"t/bulk" || rel.starts_with(b"t/zz")
    });
    m.write(&dir);
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}
