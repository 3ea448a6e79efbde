//! Seal/open throughput per block size and lane strategy (`cargo bench --bench seal`).

use coffer::Compression;
use coffer::format::frame::FRAME_PREFIX;
use coffer::keys::{SessionKey, SubKeys};
use coffer::seal::{BlockSealer, LaneMode};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sealer(block: u32, mode: LaneMode, compression: Compression) -> BlockSealer {
    let keys = SubKeys::derive(&SessionKey::from_bytes([1; 32]), &[2; 16]);
    BlockSealer::new(
        &keys,
        [2; 16],
        block,
        coffer::DEFAULT_SEGMENT_SIZE.min(block),
        compression,
    )
    .with_lane_mode(mode)
}

fn bench_seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    for &block in &[256 * 1024u32, 1 << 20, 4 << 20] {
        let plain = data(block as usize);
        g.throughput(Throughput::Bytes(block as u64));
        for (name, mode) in [
            ("multi-lane", LaneMode::MultiLane),
            ("multi-lane-untiled", LaneMode::MultiLaneUntiled),
            ("sequential", LaneMode::Sequential),
        ] {
            let s = sealer(block, mode, Compression::None);
            let mut buf = Vec::with_capacity(s.frame_capacity());
            g.bench_with_input(BenchmarkId::new(name, block), &plain, |b, plain| {
                b.iter(|| {
                    buf.clear();
                    buf.resize(FRAME_PREFIX, 0);
                    buf.extend_from_slice(plain);
                    s.seal(&mut buf, 0, false);
                })
            });
        }
        let s = sealer(block, LaneMode::MultiLane, Compression::Zstd(1));
        let mut buf = Vec::with_capacity(s.frame_capacity());
        g.bench_with_input(
            BenchmarkId::new("multi-lane+zstd-incompressible", block),
            &plain,
            |b, plain| {
                b.iter(|| {
                    buf.clear();
                    buf.resize(FRAME_PREFIX, 0);
                    buf.extend_from_slice(plain);
                    s.seal(&mut buf, 0, false);
                })
            },
        );
    }
    g.finish();
}

/// AES-256-CBC alone (no MAC): how much the lanes buy, per segment size.
fn bench_lanes(c: &mut Criterion) {
    let mut g = c.benchmark_group("cbc-lanes");
    let block = 1usize << 20;
    let mut body = data(block);
    g.throughput(Throughput::Bytes(block as u64));
    for &seg in &[4096usize, 16384, 65536, 1 << 20] {
        for (name, mode) in [
            ("multi-lane", LaneMode::MultiLane),
            ("multi-lane-untiled", LaneMode::MultiLaneUntiled),
            ("sequential", LaneMode::Sequential),
        ] {
            g.bench_function(BenchmarkId::new(name, format!("seg{}K", seg / 1024)), |b| {
                b.iter(|| coffer::seal::encrypt_segments(&[7; 32], &mut body, seg, mode))
            });
        }
    }
    g.finish();
}

fn bench_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    for &block in &[256 * 1024u32, 1 << 20, 4 << 20] {
        let s = sealer(block, LaneMode::MultiLane, Compression::None);
        let mut frame = vec![0u8; FRAME_PREFIX];
        frame.extend_from_slice(&data(block as usize));
        s.seal(&mut frame, 0, false);
        let mut work = frame.clone();
        let mut out = Vec::with_capacity(block as usize);
        g.throughput(Throughput::Bytes(block as u64));
        g.bench_function(BenchmarkId::new("open", block), |b| {
            b.iter(|| {
                work.copy_from_slice(&frame);
                s.open(&mut work, 0, false, &mut out).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_lanes, bench_seal, bench_open
}
criterion_main!(benches);
