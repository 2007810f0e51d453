//! The scorer reproduces NAB's official totals from the published detectors' per-row scores.
//!
//! Needs the NAB corpus with its reference scores (`$TELLTALE_NAB_DIR`): skipped with a line
//! saying so when it is absent, failed when `TELLTALE_REQUIRE_NAB=1`.

mod common;

use telltale_bench::corpus::{Rows, read_tree, read_windows};
use telltale_bench::scorer::score_corpus;

fn check(detector: &str, want: [Option<f64>; 3]) {
    let Some(dir) = common::nab_dir(
        &format!("the official {detector} totals"),
        "reference-scores",
    ) else {
        return;
    };
    let windows = read_windows(&dir.join("labels/combined_windows.json")).unwrap();
    let scored = read_tree(
        &dir.join("reference-scores").join(detector),
        "anomaly_score",
        Rows::Scores,
    )
    .unwrap();
    assert_eq!(scored.len(), 58);
    let results = score_corpus(&scored, &windows);
    for (r, w) in results.iter().zip(want) {
        if let Some(w) = w {
            assert!(
                (r.normalized - w).abs() <= 0.01,
                "{detector} {}: {} vs official {w}",
                r.profile,
                r.normalized
            );
        }
    }
}

#[test]
fn reproduces_windowed_gaussian_official_totals() {
    check(
        "windowedGaussian",
        [Some(39.650), Some(20.868), Some(47.410)],
    );
}

#[test]
fn reproduces_artime_official_totals() {
    check("ARTime", [Some(74.854), Some(65.154), Some(80.362)]);
}

#[test]
fn reproduces_numenta_official_standard_and_low_fn_totals() {
    // low-FP is 63.117 in the official table but 63.209 with the current sweeper (NAB README).
    check("numenta", [Some(70.101), Some(63.209), Some(74.320)]);
}
