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

/// The same points through each decoder of the engine's inputs: JSON lines, line protocol, a
/// Prometheus remote-write body (snappy + protobuf) and an OTLP request (protobuf), per point,
/// series ids and keys included.
fn decode(c: &mut Criterion) {
    use std::collections::BTreeMap;
    use telltale_codec::decode::{Decoded, Decoder};
    use telltale_codec::otlp::pb;
    use telltale_codec::remote_write as rw;

    let data = json_lines(3, 2000);
    let text = std::str::from_utf8(&data).unwrap();
    let json: Vec<&str> = text.lines().collect();
    let mut p = PointBuf::default();
    type Key = (String, Vec<(String, String)>);
    let mut series: BTreeMap<Key, Vec<(i64, f64)>> = BTreeMap::new();
    let mut influx = Vec::new();
    let esc = |s: &str| {
        s.replace(',', "\\,")
            .replace('=', "\\=")
            .replace(' ', "\\ ")
    };
    for l in &json {
        parse_json_line(l, &mut p).unwrap();
        let labels: Vec<(String, String)> = (0..p.label_count())
            .map(|i| (p.label(i).0.to_owned(), p.label(i).1.to_owned()))
            .collect();
        let tags: String = labels
            .iter()
            .map(|(k, v)| format!(",{}={}", esc(k), esc(v)))
            .collect();
        influx.push(format!(
            "{}{tags} value={} {}",
            esc(p.metric()),
            p.value,
            p.timestamp * 1_000_000
        ));
        series
            .entry((p.metric().to_owned(), labels))
            .or_default()
            .push((p.timestamp, p.value));
    }
    let write = rw::WriteRequest {
        timeseries: series
            .iter()
            .map(|((name, labels), samples)| rw::TimeSeries {
                labels: std::iter::once(("__name__".to_owned(), name.clone()))
                    .chain(labels.iter().cloned())
                    .map(|(name, value)| rw::Label { name, value })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| rw::Sample { value, timestamp })
                    .collect(),
            })
            .collect(),
    };
    let write = snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&write))
        .unwrap();
    let attrs = |labels: &[(String, String)]| -> Vec<pb::KeyValue> {
        labels
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: Some(pb::AnyValue {
                    value: Some(pb::any_value::Value::StringValue(v.clone())),
                }),
            })
            .collect()
    };
    let otlp = pb::ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: None,
            scope_metrics: vec![pb::ScopeMetrics {
                metrics: series
                    .iter()
                    .map(|((name, labels), samples)| pb::Metric {
                        name: name.clone(),
                        data: Some(pb::metric::Data::Gauge(pb::Gauge {
                            data_points: samples
                                .iter()
                                .map(|&(ts, v)| pb::NumberDataPoint {
                                    attributes: attrs(labels),
                                    start_time_unix_nano: 0,
                                    time_unix_nano: ts as u64 * 1_000_000,
                                    value: Some(pb::number_data_point::Value::AsDouble(v)),
                                })
                                .collect(),
                        })),
                    })
                    .collect(),
            }],
        }],
    };
    let otlp = prost::Message::encode_to_vec(&otlp);

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(json.len() as u64));
    let llm: std::sync::Arc<telltale_codec::llm::LlmConfig> =
        std::sync::Arc::new(Default::default());
    for (name, lines) in [
        ("json_lines", json.clone()),
        ("line_protocol", influx.iter().map(String::as_str).collect()),
    ] {
        g.bench_function(name, |b| {
            let mut d = Decoder::new(llm.clone());
            let mut out = Decoded::default();
            b.iter(|| {
                out.records.clear();
                out.keys.clear();
                for l in &lines {
                    d.line(black_box(l), 0, &mut out);
                }
                out.records.len()
            })
        });
    }
    g.bench_function("remote_write", |b| {
        let mut out = Decoded::default();
        b.iter(|| {
            out.records.clear();
            out.keys.clear();
            rw::decode(black_box(&write), 0, &mut out).unwrap();
            out.records.len()
        })
    });
    g.bench_function("otlp", |b| {
        let mut out = Decoded::default();
        let mut state = telltale_codec::otlp::Cumulative::default();
        b.iter(|| {
            out.records.clear();
            out.keys.clear();
            telltale_codec::otlp::decode(black_box(&otlp), 0, &mut state, &mut out).unwrap();
            out.records.len()
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
    // The built-in chain on series sampled every 5 minutes and three days old (past their
    // young phase: every detector scores), and the same chain holding (as the LLM confidence
    // rule does: a holding chain decides whether to learn each point after scoring it).
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
            let step = 300_000i64;
            let mut ts = 0i64;
            for k in 0..3 * 288 {
                ts += step;
                for (slot, v) in xs[k % STEPS].iter().enumerate() {
                    group.process(slot, ts, *v).unwrap();
                }
            }
            b.iter(|| {
                for x in &xs {
                    ts += step;
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

criterion_group!(benches, parse, decode, chain, full_replay);
criterion_main!(benches);
