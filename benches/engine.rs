//! The engine's replay path: parsing alone, one chain's per-point path, and the full threaded
//! replay of a generated stream (parse → route → shards → merge), printed beside each other so
//! the reader sees where the time goes.

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telltale_benches::{json_lines, stream};
use telltale_codec::json::{PointBuf, parse_json_line};
use telltale_engine::chain::ChainGroup;
use telltale_engine::replay::{discover, replay};
use telltale_engine::{Config, Outputs};

fn parse(c: &mut Criterion) {
    let data = json_lines(3, 2000);
    let text = std::str::from_utf8(&data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("json_line", |b| {
        let mut p = PointBuf::default();
        b.iter(|| {
            for l in &lines {
                parse_json_line(black_box(l), &mut p).unwrap();
            }
        })
    });
    g.bench_function("json_line_and_series_id", |b| {
        let mut p = PointBuf::default();
        let mut scratch = Vec::new();
        b.iter(|| {
            let mut acc = 0u64;
            for l in &lines {
                parse_json_line(black_box(l), &mut p).unwrap();
                acc ^= p.series_id(&mut scratch);
            }
            acc
        })
    });
    g.bench_function("json_line_and_cached_series_id", |b| {
        // What a replay parser does: the raw-form cache hit skips building the canonical key.
        let mut p = PointBuf::default();
        let mut cache = telltale_codec::json::RawIdCache::default();
        b.iter(|| {
            let mut acc = 0u64;
            for l in &lines {
                parse_json_line(black_box(l), &mut p).unwrap();
                acc ^= cache.id(&p).0;
            }
            acc
        })
    });
    g.finish();
}

fn chain(c: &mut Criterion) {
    const SERIES: usize = 1024;
    const STEPS: usize = 32;
    let xs: Vec<Vec<f64>> = (0..STEPS).map(|s| stream(SERIES, 7 + s as u64)).collect();
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements((SERIES * STEPS) as u64));
    // The default chain, and the same chain holding (as the LLM confidence rule does): a
    // holding chain decides whether to learn each point after scoring it.
    for (name, toml) in [
        ("default_chain_process", ""),
        ("holding_chain_process", "[chain]\nhold = true"),
    ] {
        let plan = Config::from_toml(toml).unwrap().plan().unwrap();
        g.bench_function(name, |b| {
            let mut group = ChainGroup::new(&plan.chains[0]);
            for _ in 0..SERIES {
                group.add_series();
            }
            let mut ts = 0i64;
            b.iter(|| {
                for x in &xs {
                    ts += 1;
                    for (slot, v) in x.iter().enumerate() {
                        black_box(group.process(slot, ts, *v).unwrap());
                    }
                }
            })
        });
    }
    g.finish();
}

fn full_replay(c: &mut Criterion) {
    let data = json_lines(8, 5000);
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
    let dir = std::env::temp_dir().join(format!("telltale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stream.jsonl");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let inputs = discover(std::slice::from_ref(&path)).unwrap();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(lines));
    g.sample_size(10);
    g.bench_function("json_lines_default_chain", |b| {
        b.iter(|| {
            let plan = Config::default().plan().unwrap();
            let out = Outputs {
                events: Box::new(std::io::sink()),
                rejects: Box::new(std::io::sink()),
            };
            let r = replay(plan, &inputs, out, false).unwrap();
            assert_eq!(r.points, lines);
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, parse, chain, full_replay);
criterion_main!(benches);
