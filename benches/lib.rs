//! Seeded inputs shared by the benchmarks.

use telltale_gen::Rng;

/// A bank holding `n` series in their initial state.
pub fn filled<B: telltale_detect::Bank>(params: B::Params, n: usize) -> B {
    let mut bank = B::new(params);
    for _ in 0..n {
        bank.add_series();
    }
    bank
}

/// `n` points of a noisy level with a step in the middle, seeded.
pub fn stream(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| 100.0 + if i >= n / 2 { 5.0 } else { 0.0 } + rng.normal())
        .collect()
}

/// The JSON lines of the synthetic LLM-serving stream (`models` × 7 series × `points`).
pub fn json_lines(models: usize, points: usize) -> Vec<u8> {
    let cfg = telltale_gen::GenConfig {
        models,
        points,
        ..Default::default()
    };
    let mut out = Vec::new();
    telltale_gen::generate(&cfg, |metric, labels, ts, value| {
        telltale_gen::write_json_line(&mut out, metric, labels, ts, value);
    });
    out
}
