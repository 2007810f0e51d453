#![doc = include_str!("../README.md")]

pub mod llm;

use std::collections::BTreeMap;

use telltale_bench::labels::{Fault, LabelsFile, SeriesRef};
use telltale_core::time::format_rfc3339;

/// SplitMix64: a tiny, well-mixed, seedable generator (no dependency, stable across versions).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed.
    pub seed: u64,
    /// Points per series.
    pub points: usize,
    /// Interval between points, ms.
    pub interval_ms: i64,
    /// Timestamp of the first point, ms since the epoch.
    pub start_ms: i64,
    /// Number of models (1 to 8); each has seven metrics.
    pub models: usize,
    /// Inject faults (off gives a healthy stream).
    pub faults: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            points: 1440,
            interval_ms: 15_000,
            // 2026-01-05T00:00:00Z
            start_ms: 1_767_571_200_000,
            models: 3,
            faults: true,
        }
    }
}

const MODELS: [&str; 8] = [
    "llama3-8b",
    "mixtral-8x7b",
    "qwen2-72b",
    "gemma2-27b",
    "phi3-mini",
    "llama3-70b",
    "mistral-7b",
    "deepseek-v2",
];

/// The metrics of one model: name, base level per model index, relative noise.
const METRICS: [(&str, [f64; 3], f64); 7] = [
    ("llm_latency_p50_ms", [180.0, 350.0, 600.0], 0.04),
    ("llm_latency_p99_ms", [650.0, 1200.0, 2100.0], 0.06),
    ("llm_ttft_ms", [90.0, 160.0, 280.0], 0.05),
    ("llm_tokens_per_s", [95.0, 60.0, 35.0], 0.03),
    ("llm_error_rate", [0.002, 0.003, 0.004], 0.2),
    ("llm_gpu_mem_gb", [42.0, 68.0, 74.0], 0.003),
    ("llm_queue_depth", [6.0, 10.0, 14.0], 0.0),
];

/// The kinds of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LatencyCreep,
    ErrorBurst,
    TokenRateDrop,
    MemoryLeak,
    LevelShift,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::LatencyCreep => "latency_creep",
            Kind::ErrorBurst => "error_burst",
            Kind::TokenRateDrop => "token_rate_drop",
            Kind::MemoryLeak => "memory_leak",
            Kind::LevelShift => "level_shift",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Injected {
    kind: Kind,
    model: usize,
    metric: usize,
    start: usize,
    len: usize,
}

impl Injected {
    /// Multiplicative (or additive for error rate) effect at point `t`, relative to base.
    fn apply(&self, t: usize, base: f64, x: f64) -> f64 {
        if t < self.start || t >= self.start + self.len {
            return x;
        }
        let k = (t - self.start) as f64 / self.len as f64;
        match self.kind {
            // p99 climbs by up to +80% over the first 60% of the window, then holds.
            Kind::LatencyCreep => x * (1.0 + 0.8 * (k / 0.6).min(1.0)),
            Kind::ErrorBurst => x + 0.05,
            Kind::TokenRateDrop => x * 0.6,
            // Memory grows 20% of base over the window, then the process is restarted.
            Kind::MemoryLeak => x + 0.2 * base * k,
            Kind::LevelShift => x * 1.35,
        }
    }

    fn description(&self) -> &'static str {
        match self.kind {
            Kind::LatencyCreep => {
                "p99 latency ramps up to +80% over 60% of the window, then holds until rollback"
            }
            Kind::ErrorBurst => "error rate jumps by 5 percentage points",
            Kind::TokenRateDrop => "tokens/s drops to 60% of normal",
            Kind::MemoryLeak => "GPU memory grows linearly by 20% until the process restarts",
            Kind::LevelShift => "p50 latency steps up by 35%",
        }
    }
}

fn plan_faults(cfg: &GenConfig) -> Vec<Injected> {
    if !cfg.faults || cfg.points < 200 {
        return Vec::new();
    }
    let n = cfg.points;
    let m = |i: usize| i % cfg.models;
    let at = |f: f64| (n as f64 * f) as usize;
    let len = |f: f64| ((n as f64 * f) as usize).max(10);
    vec![
        Injected {
            kind: Kind::LatencyCreep,
            model: m(0),
            metric: 1,
            start: at(0.15),
            len: len(0.12),
        },
        Injected {
            kind: Kind::ErrorBurst,
            model: m(1),
            metric: 4,
            start: at(0.32),
            len: len(0.03),
        },
        Injected {
            kind: Kind::TokenRateDrop,
            model: m(2),
            metric: 3,
            start: at(0.45),
            len: len(0.08),
        },
        Injected {
            kind: Kind::MemoryLeak,
            model: m(0),
            metric: 5,
            start: at(0.6),
            len: len(0.15),
        },
        Injected {
            kind: Kind::LevelShift,
            model: m(1),
            metric: 0,
            start: at(0.82),
            len: len(0.08),
        },
    ]
}

/// Appends one point as a line of telltale's native JSON-lines format (with its newline).
pub fn write_json_line(
    line: &mut Vec<u8>,
    metric: &str,
    labels: &[(&str, &str)],
    ts: i64,
    value: f64,
) {
    let string = |line: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *line, s).expect("writing to a Vec cannot fail");
    };
    line.extend_from_slice(b"{\"metric\":");
    string(line, metric);
    line.extend_from_slice(b",\"labels\":{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        string(line, k);
        line.push(b':');
        string(line, v);
    }
    line.extend_from_slice(b"},\"timestamp\":");
    line.extend_from_slice(ts.to_string().as_bytes());
    line.extend_from_slice(b",\"value\":");
    serde_json::to_writer(&mut *line, &value).expect("writing to a Vec cannot fail");
    line.extend_from_slice(b"}\n");
}

/// The label names every generated series carries.
pub const LABEL_NAMES: [&str; 2] = ["model", "region"];

/// Labels of one series.
fn labels(model: usize) -> [(&'static str, &'static str); 2] {
    [
        (LABEL_NAMES[0], MODELS[model]),
        (LABEL_NAMES[1], "eu-west-1"),
    ]
}

/// Generates the stream in time order, calling `emit(metric, labels, timestamp_ms, value)` for
/// every point, and returns the labels of the injected faults.
pub fn generate(
    cfg: &GenConfig,
    mut emit: impl FnMut(&str, &[(&str, &str)], i64, f64),
) -> LabelsFile {
    assert!((1..=MODELS.len()).contains(&cfg.models), "1 to 8 models");
    let faults = plan_faults(cfg);
    let mut rng = Rng::new(cfg.seed);
    let day_ms = 86_400_000.0;
    for t in 0..cfg.points {
        let ts = cfg.start_ms + t as i64 * cfg.interval_ms;
        let load = 1.0 + 0.15 * (std::f64::consts::TAU * ts as f64 / day_ms).sin();
        for model in 0..cfg.models {
            let scale = 1.0 + 0.1 * (model / 3) as f64;
            for (mi, (name, bases, noise)) in METRICS.iter().enumerate() {
                let base = bases[model % 3] * scale;
                let e = rng.normal();
                let mut x = match mi {
                    0..=2 => base * load * (1.0 + noise * e),
                    3 => base / load.sqrt() * (1.0 + noise * e),
                    4 => (base * (1.0 + noise * e)).max(0.0),
                    5 => base * (1.0 + noise * e),
                    _ => {
                        let mean = base * load;
                        (mean + mean.sqrt() * e).round().max(0.0)
                    }
                };
                for f in faults.iter().filter(|f| f.model == model && f.metric == mi) {
                    x = f.apply(t, base, x);
                }
                // `+ 0.0` turns -0.0 into 0.0: `max` may return either zero, and debug and
                // release builds differ in which.
                let x = (x * 10_000.0).round() / 10_000.0 + 0.0;
                emit(name, &labels(model), ts, x);
            }
        }
    }
    LabelsFile {
        generator: format!(
            "telltale gen --seed {} --points {} --interval-ms {} --models {}",
            cfg.seed, cfg.points, cfg.interval_ms, cfg.models
        ),
        faults: faults
            .iter()
            .enumerate()
            .map(|(i, f)| Fault {
                id: format!("f{}-{}", i + 1, f.kind.name()),
                kind: f.kind.name().into(),
                series: vec![SeriesRef {
                    name: METRICS[f.metric].0.into(),
                    labels: labels(f.model)
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                }],
                start: format_rfc3339(cfg.start_ms + f.start as i64 * cfg.interval_ms),
                end: format_rfc3339(cfg.start_ms + (f.start + f.len) as i64 * cfg.interval_ms),
                description: f.description().into(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let cfg = GenConfig {
            points: 300,
            ..GenConfig::default()
        };
        let run = |seed| {
            let mut v = Vec::new();
            generate(
                &GenConfig {
                    seed,
                    ..cfg.clone()
                },
                |m, _, ts, x| v.push((m.to_owned(), ts, x)),
            );
            v
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        assert_eq!(run(1).len(), 300 * 3 * 7);
    }

    #[test]
    fn labels_name_every_fault_kind_inside_the_stream() {
        let cfg = GenConfig::default();
        let labels = generate(&cfg, |_, _, _, _| {});
        let kinds: Vec<_> = labels.faults.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "latency_creep",
                "error_burst",
                "token_rate_drop",
                "memory_leak",
                "level_shift"
            ]
        );
        let end = format_rfc3339(cfg.start_ms + cfg.points as i64 * cfg.interval_ms);
        assert!(
            labels
                .faults
                .iter()
                .all(|f| f.start < f.end && f.end <= end)
        );
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(7);
        let xs: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
    }
}
