//! Detector kernels: ns per point for one series (a recurrence along time), and for a batch
//! across many series (struct-of-arrays banks, the form that vectorises).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use telltale_benches::{filled, stream};
use telltale_detect::params::{Count, Span, Weight};
use telltale_detect::score::{score_from_z, scores_from_z_in_place};
use telltale_detect::{
    Bank, Calibration, Cusum, CusumBank, CusumParams, Detector, Ewma, EwmaBank, EwmaParams,
    History, Knn, KnnParams, Novelty, NoveltyParams, PageHinkley, PageHinkleyBank,
    PageHinkleyParams, QuietParams, Reach, RecurrenceParams, RobustZ, RobustZBank, RobustZParams,
    SameTime, SameTimeParams, is_quiet, recurs,
};

fn span(s: &str) -> Span {
    Span::parse(s).unwrap()
}

/// Timestamps every 5 minutes.
fn every_5m(n: usize) -> Vec<i64> {
    (0..n as i64).map(|i| i * 300_000).collect()
}

const N: usize = 10_000;
const SERIES: usize = 4096;

fn single_series(c: &mut Criterion) {
    let xs = stream(N, 1);
    let mut out = vec![0.0; N];
    let mut g = c.benchmark_group("single_series");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("baseline_copy", |b| {
        b.iter(|| out.copy_from_slice(black_box(&xs)))
    });
    g.bench_function("ewma", |b| {
        b.iter(|| Ewma::new(EwmaParams::default()).update_batch(black_box(&xs), &mut out))
    });
    g.bench_function("cusum", |b| {
        b.iter(|| {
            Cusum::new(CusumParams::default())
                .unwrap()
                .update_batch(black_box(&xs), &mut out)
        })
    });
    g.bench_function("page_hinkley", |b| {
        b.iter(|| {
            PageHinkley::new(PageHinkleyParams::default()).update_batch(black_box(&xs), &mut out)
        })
    });
    g.bench_function("robust_z_w32", |b| {
        b.iter(|| {
            RobustZ::new(RobustZParams::default())
                .unwrap()
                .update_batch(black_box(&xs), &mut out)
        })
    });
    g.finish();
    // k-NN shapes (the NAB configuration's two): a history, reference and calibration per
    // series, so these are per point for one series; the detector starts warm.
    let mut g = c.benchmark_group("knn");
    g.throughput(Throughput::Elements(N as u64));
    let knn = |window: u32, calibration: u32, step: u32| {
        let p = KnnParams {
            window: window.try_into().unwrap(),
            calibration: Calibration::Set(Count::new(calibration).unwrap()),
            step: step.try_into().unwrap(),
            ..KnnParams::default()
        };
        let mut d = Knn::new(p).unwrap();
        let mut warm = vec![0.0; N];
        d.update_batch(&stream(N, 9), &mut warm);
        d
    };
    for (name, window, calibration, step) in
        [("w5_r200", 5, 1500, 1), ("w8_r200_step12", 8, 200, 12)]
    {
        g.bench_function(name, |b| {
            let mut d = knn(window, calibration, step);
            b.iter(|| d.update_batch(black_box(&xs), &mut out))
        });
    }
    // The built-in chain's: 4-hour blocks of 5-minute points (a distance pass every 48 points),
    // a record of 16 days; warm (a month of points seen).
    g.bench_function("block4h_w6_r100_record16d", |b| {
        let p = KnnParams {
            window: Count::new(6).unwrap(),
            k: Count::new(3).unwrap(),
            reference: Count::new(100).unwrap(),
            calibration: Calibration::Span(span("16d")),
            block: Some(span("4h")),
            ..KnnParams::default()
        };
        let warm = 30 * 288;
        let vals = stream(warm + N, 15);
        let ts = every_5m(warm + N);
        let mut d = Knn::new(p).unwrap();
        for (t, x) in ts[..warm].iter().zip(&vals) {
            d.step_at(*t, *x);
        }
        b.iter(|| {
            let mut probe = d.clone();
            let mut sum = 0.0;
            for (t, x) in ts[warm..].iter().zip(&vals[warm..]) {
                sum += probe.step_at(*t, black_box(*x)).score;
            }
            sum
        })
    });
    g.finish();
    // Same-time shapes (the NAB configuration's): per point, two binary searches by time and
    // 2 × 7 distances of 4 values; the detector starts with three days of 5-minute points.
    let mut g = c.benchmark_group("same_time");
    g.throughput(Throughput::Elements(N as u64));
    let warm = 3 * 288;
    let vals = stream(N + warm, 12);
    let ts: Vec<i64> = (0..(N + warm) as i64).map(|i| i * 300_000).collect();
    let mut d = SameTime::new(SameTimeParams::default()).unwrap();
    for (t, x) in ts[..warm].iter().zip(&vals) {
        d.step(*t, *x);
    }
    g.bench_function("w4_m3_2days", |b| {
        b.iter(|| {
            let mut probe = d.clone();
            let mut sum = 0.0;
            for (t, x) in ts[warm..].iter().zip(&vals[warm..]) {
                sum += probe.step(*t, black_box(*x)).score;
            }
            sum
        })
    });
    // The built-in chain's: 15-minute buckets (a ring of 197 values), shapes of 4 buckets
    // against the same time ±1 bucket on the last two days, a 17-day record.
    let mut d = SameTime::new(SameTimeParams {
        window: Count::new(4).unwrap(),
        margin: 1,
        calibration: Calibration::Span(span("17d")),
        bucket: Some(span("15m")),
        ..SameTimeParams::default()
    })
    .unwrap();
    for (t, x) in ts[..warm].iter().zip(&vals) {
        d.step(*t, *x);
    }
    g.bench_function("bucket15m_w4_m1_record17d", |b| {
        b.iter(|| {
            let mut probe = d.clone();
            let mut sum = 0.0;
            for (t, x) in ts[warm..].iter().zip(&vals[warm..]) {
                sum += probe.step(*t, black_box(*x)).score;
            }
            sum
        })
    });
    g.finish();
    // The recurrence filter (a veto the NAB chain puts on its point-level detectors): per point,
    // a 12-value median and two binary searches of a 1,024-point ring (two days at 5 minutes).
    let mut g = c.benchmark_group("recurrence");
    g.throughput(Throughput::Elements(N as u64));
    const RING: usize = 1024;
    let vals = stream(N + RING, 11);
    let ts: Vec<i64> = (0..(N + RING) as i64).map(|i| i * 300_000).collect();
    let p = RecurrenceParams::default();
    g.bench_function("ring1024_2days", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for i in RING..RING + N {
                let h = History {
                    ts: [&ts[i - RING..i], &[]],
                    val: [&vals[i - RING..i], &[]],
                };
                n += u32::from(recurs(&p, &h, ts[i], black_box(vals[i])));
            }
            n
        })
    });
    g.finish();
    // Novelty (the built-in chain's three): a scan of the 512-cell map of values seen; the
    // detector starts warm (10,000 points of 5-minute sampling seen).
    let mut g = c.benchmark_group("novelty");
    g.throughput(Throughput::Elements(N as u64));
    let ts = every_5m(2 * N);
    for (name, p) in [
        ("value", NoveltyParams::default()),
        (
            "level_30m",
            NoveltyParams {
                smoothing: Weight::Span(span("30m")),
                ..NoveltyParams::default()
            },
        ),
        (
            "height_over_median_1h",
            NoveltyParams {
                deviation: Reach::Span(span("1h")),
                ..NoveltyParams::default()
            },
        ),
    ] {
        let mut d = Novelty::new(p).unwrap();
        for (t, x) in ts[..N].iter().zip(&stream(N, 13)) {
            d.step_at(*t, *x);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut probe = d.clone();
                let mut sum = 0.0;
                for (t, x) in ts[N..].iter().zip(&xs) {
                    sum += probe.step_at(*t, black_box(*x)).score;
                }
                sum
            })
        });
    }
    g.finish();
    // The quiet filter: a 12-value median of the ring's newest points against the range.
    let mut g = c.benchmark_group("quiet");
    g.throughput(Throughput::Elements(N as u64));
    let vals = stream(N + 16, 14);
    let ts: Vec<i64> = (0..(N + 16) as i64).map(|i| i * 300_000).collect();
    // And the built-in chain's: the median of the points of the last hour the ring holds.
    for (name, q) in [
        ("median12", QuietParams::default()),
        (
            "median_1h",
            QuietParams {
                window: Reach::Span(span("1h")),
                ..QuietParams::default()
            },
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (mut lo, mut hi, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0u32);
                for i in 16..16 + N {
                    let x = black_box(vals[i]);
                    (lo, hi) = (lo.min(x), hi.max(x));
                    let h = History {
                        ts: [&ts[i - 16..i], &[]],
                        val: [&vals[i - 16..i], &[]],
                    };
                    n += u32::from(is_quiet(&q, &h, ts[i], x, lo, hi));
                }
                n
            })
        });
    }
    g.finish();
}

/// One point for each of SERIES series per step, 16 steps.
fn many_series(c: &mut Criterion) {
    const STEPS: usize = 16;
    let xs: Vec<Vec<f64>> = (0..STEPS).map(|s| stream(SERIES, 100 + s as u64)).collect();
    let mut out = vec![0.0; SERIES];
    let mut g = c.benchmark_group("many_series");
    g.throughput(Throughput::Elements((SERIES * STEPS) as u64));
    g.bench_function(BenchmarkId::new("ewma_dense", SERIES), |b| {
        let mut bank: EwmaBank = filled(EwmaParams::default(), SERIES);
        b.iter(|| {
            for x in &xs {
                bank.update_dense(black_box(x), &mut out);
            }
        })
    });
    g.bench_function(BenchmarkId::new("ewma_by_slot", SERIES), |b| {
        let mut bank: EwmaBank = filled(EwmaParams::default(), SERIES);
        b.iter(|| {
            for x in &xs {
                for (slot, v) in x.iter().enumerate() {
                    out[slot] = bank.update(slot, 0, *v, None).score;
                }
            }
        })
    });
    g.bench_function(BenchmarkId::new("cusum_dense", SERIES), |b| {
        let mut bank: CusumBank = filled(CusumParams::default(), SERIES);
        b.iter(|| {
            for x in &xs {
                bank.update_dense(black_box(x), &mut out);
            }
        })
    });
    g.bench_function(BenchmarkId::new("page_hinkley_dense", SERIES), |b| {
        let mut bank: PageHinkleyBank = filled(PageHinkleyParams::default(), SERIES);
        b.iter(|| {
            for x in &xs {
                bank.update_dense(black_box(x), &mut out);
            }
        })
    });
    g.bench_function(BenchmarkId::new("page_hinkley_by_slot", SERIES), |b| {
        let mut bank: PageHinkleyBank = filled(PageHinkleyParams::default(), SERIES);
        b.iter(|| {
            for x in &xs {
                for (slot, v) in x.iter().enumerate() {
                    out[slot] = bank.update(slot, 0, *v, None).score;
                }
            }
        })
    });
    g.bench_function(BenchmarkId::new("robust_z_by_slot", SERIES), |b| {
        let bank: RobustZBank = filled(RobustZParams::default(), SERIES);
        // no eviction: the window fills over the 16 steps (within its capacity of 32)
        b.iter(|| {
            let mut bank = bank.clone();
            for x in &xs {
                for (slot, v) in x.iter().enumerate() {
                    out[slot] = bank.update(slot, 0, *v, None).score;
                }
            }
        })
    });
    g.finish();
}

fn scoring(c: &mut Criterion) {
    let zs: Vec<f64> = stream(N, 3).iter().map(|x| (x - 100.0) * 2.0).collect();
    let mut out = vec![0.0; N];
    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("score_from_z_scalar_loop", |b| {
        b.iter(|| {
            for (z, o) in black_box(&zs).iter().zip(out.iter_mut()) {
                *o = score_from_z(*z);
            }
        })
    });
    g.bench_function("scores_from_z_in_place", |b| {
        b.iter(|| {
            out.copy_from_slice(black_box(&zs));
            scores_from_z_in_place(&mut out);
        })
    });
    g.finish();
}

/// Per-request confidence scoring: MuCS smoothing of the original and its mutants, then margin,
/// entropy, Gini and disagreement, for 4 to 1,000 classes and 0 to 8 mutants.
fn confidence(c: &mut Criterion) {
    use telltale_detect::confidence::{disagreement, entropy, gini, margin, smooth};
    let mut g = c.benchmark_group("confidence");
    for k in [4usize, 32, 1000] {
        for m in [0usize, 8] {
            let raw = stream(k * (m + 1), k as u64);
            let vecs: Vec<f64> = raw.iter().map(|x| (x - 90.0).abs()).collect();
            let (orig, mutants) = vecs.split_at(k);
            let mut smoothed = vec![0.0; k];
            g.throughput(Throughput::Elements(1));
            g.bench_function(
                BenchmarkId::new(format!("request_k{k}"), format!("m{m}")),
                |b| {
                    b.iter(|| {
                        smooth(black_box(orig), black_box(mutants), true, &mut smoothed);
                        margin(&smoothed)
                            + entropy(&smoothed)
                            + gini(&smoothed)
                            + disagreement(orig, mutants)
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, single_series, many_series, scoring, confidence);
criterion_main!(benches);
