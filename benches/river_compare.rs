//! telltale's side of `scripts/compare-river.py`: the same detectors River runs, on the same
//! stream (a file of little-endian f64 written by the script), timed the same way (fresh
//! detector, then only the per-point loop; median of the runs). Prints one JSON object.
//!
//!   river-compare STREAM.f64 [RUNS]

use std::time::Instant;

use telltale_detect::params::{Alpha, Count};
use telltale_detect::{Detector, Ewma, EwmaParams, PageHinkley, PageHinkleyParams};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` (which returns a count) `runs` times; (median seconds, count of the last run).
fn time(runs: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut secs = Vec::with_capacity(runs);
    let mut count = 0;
    for _ in 0..runs {
        let t = Instant::now();
        count = std::hint::black_box(f());
        secs.push(t.elapsed().as_secs_f64());
    }
    (median(secs), count)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: river-compare STREAM.f64 [RUNS]");
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("RUNS"));
    let bytes = std::fs::read(&path).expect("read the stream");
    let xs: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let n = xs.len() as f64;

    // Page-Hinkley with River's defaults, reading the drift flag after every point.
    let (ph_secs, ph_drifts) = time(runs, || {
        let mut d = PageHinkley::new(PageHinkleyParams::default());
        let mut c = 0;
        for &x in &xs {
            d.step(x);
            c += usize::from(d.drift_detected());
        }
        c
    });

    // EWMA z-score, fading factor 0.01, alarm at |z| > 4 (score above 1 - P(|Z| >= 4)).
    let params = EwmaParams {
        alpha: Alpha::new(0.01).expect("alpha"),
        warmup: Count::new(2).expect("warmup"),
    };
    let level = 1.0 - 6.334_248_366_623_996e-5;
    let (ewma_secs, ewma_alarms) = time(runs, || {
        let mut d = Ewma::new(params);
        let mut c = 0;
        for &x in &xs {
            c += usize::from(d.step(x).score > level);
        }
        c
    });
    // The z-only path: what River's loop computes (z, compared with the threshold).
    let (z_secs, z_alarms) = time(runs, || {
        let mut d = Ewma::new(params);
        let mut c = 0;
        for &x in &xs {
            c += usize::from(d.step_z(x).abs() > 4.0);
        }
        c
    });
    // The same detector over the whole series as one batch (z pass, then the vectorised score
    // pass): how the engine runs a series' points when it has many of them at once.
    let mut out = vec![0.0; xs.len()];
    let (batch_secs, batch_alarms) = time(runs, || {
        let mut d = Ewma::new(params);
        d.update_batch(&xs, &mut out);
        out.iter().filter(|s| **s > level).count()
    });

    println!(
        "{{\"points\":{},\"runs\":{runs},\
         \"page_hinkley\":{{\"pts_per_s\":{:.0},\"drifts\":{ph_drifts}}},\
         \"ewma_zscore\":{{\"pts_per_s\":{:.0},\"alarms\":{ewma_alarms}}},\
         \"ewma_zscore_batch\":{{\"pts_per_s\":{:.0},\"alarms\":{batch_alarms}}},\
         \"ewma_z_only\":{{\"pts_per_s\":{:.0},\"alarms\":{z_alarms}}}}}",
        xs.len(),
        n / ph_secs,
        n / ewma_secs,
        n / batch_secs,
        n / z_secs
    );
}
