//! What signing adds to a backup (`cargo bench --bench sign`), side by side with what the
//! backup itself costs: the signature work for a 2 GiB archive at 1 MiB blocks (2,048
//! block tags and 3 meta tags into the transcript, the message, one Ed25519 signature)
//! against sealing one 1 MiB block, the unit the backup repeats 2,048 times.
//! docs/PERFORMANCE.md ("Signed archives") divides the first by 2,048 times the second.

use coffer::Compression;
use coffer::archive::sign::{Transcript, sign_section};
use coffer::format::frame::FRAME_PREFIX;
use coffer::format::v2::TrailerV2;
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::BlockSealer;
use coffer::signing::SigningKey;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const BLOCKS: u64 = 2048;

fn bench_sign(c: &mut Criterion) {
    let key = SigningKey::generate().expect("a signing key");
    let header = [0x89u8; 10];
    let body = vec![7u8; 180];
    let trailer = TrailerV2 {
        index_offset: 1 << 31,
        index_len: 1 << 20,
        block_count: BLOCKS,
        directory_len: 4096,
        signature_len: 72,
    };
    let mut g = c.benchmark_group("sign");
    g.bench_function("archive-2GiB-1MiB-blocks", |b| {
        b.iter(|| {
            let mut t = Transcript::new();
            for i in 0..BLOCKS {
                let mut tag = [0u8; 32];
                tag[..8].copy_from_slice(&i.to_le_bytes());
                t.block(black_box(&tag));
            }
            for kind in 1..=3u8 {
                t.meta(kind, &[kind; 32]);
            }
            let message = t.message(&header, &body, &trailer);
            black_box(sign_section(&key, &message))
        })
    });
    g.finish();

    let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
    let sealer = BlockSealer::new(
        &keys,
        [2; 16],
        1 << 20,
        coffer::DEFAULT_SEGMENT_SIZE,
        Compression::None,
    );
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let plain: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut g = c.benchmark_group("seal-for-sign");
    g.bench_function("one-1MiB-block", |b| {
        let mut buf = Vec::with_capacity(sealer.frame_capacity());
        b.iter(|| {
            buf.clear();
            buf.resize(FRAME_PREFIX, 0);
            buf.extend_from_slice(&plain);
            sealer.seal(&mut buf, 0, false);
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_sign);
criterion_main!(benches);
