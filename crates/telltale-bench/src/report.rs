//! Plain-text tables of benchmark results.

use std::fmt::Write;

use crate::run::ChainResult;
use crate::scorer::ProfileResult;

/// The published NAB v1.1 scoreboard (standard profile), for context beside our rows.
pub const SCOREBOARD: [(&str, f64); 10] = [
    ("ARTime", 74.9),
    ("Numenta HTM", 70.1),
    ("CAD OSE", 69.9),
    ("earthgecko Skyline", 58.2),
    ("KNN CAD", 58.0),
    ("Relative Entropy", 54.6),
    ("Random Cut Forest", 51.7),
    ("Twitter ADVec", 47.1),
    ("Windowed Gaussian", 39.6),
    ("Random", 11.0),
];

fn nab_cells(r: &[ProfileResult]) -> String {
    r.iter()
        .map(|p| format!("{:>8.2}", p.normalized))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One row per scored detector: name and the three normalised scores.
pub fn score_table(rows: &[(String, Vec<ProfileResult>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>8} {:>8} {:>8}",
        "detector", "standard", "low_FP", "low_FN"
    );
    for (name, r) in rows {
        let _ = writeln!(s, "{name:<28} {}", nab_cells(r));
    }
    s
}

/// One row per chain: NAB scores (rows ranked by the score that can open, at NAB's optimised
/// threshold), the NAB standard score of the opened anomalies alone, event-level metrics,
/// throughput.
pub fn chain_table(rows: &[ChainResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9} {:>10}",
        "chain",
        "standard",
        "low_FP",
        "low_FN",
        "opens",
        "prec",
        "recall",
        "F1",
        "delay",
        "points/s"
    );
    for r in rows {
        let e = &r.events;
        let _ = writeln!(
            s,
            "{:<20} {} {:>8.2} {:>6.2} {:>6.2} {:>6.2} {:>9} {:>10}",
            r.name,
            nab_cells(&r.nab),
            r.opens_nab.first().map_or(f64::NAN, |p| p.normalized),
            e.precision(),
            e.recall(),
            e.f1(),
            if e.mean_delay_rows().is_nan() {
                "-".to_owned()
            } else {
                format!("{:.1} rows", e.mean_delay_rows())
            },
            format!("{:.1} M", r.points as f64 / r.seconds.max(1e-9) / 1e6),
        );
    }
    s
}
