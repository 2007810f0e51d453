//! The committed NAB configuration keeps the scores the README reports.
//!
//! Needs the NAB corpus (`$TELLTALE_NAB_DIR`): skipped with a line saying so when it is absent,
//! failed when `TELLTALE_REQUIRE_NAB=1`.

mod common;

use std::path::PathBuf;

use telltale_bench::corpus::Corpus;
use telltale_bench::run::run_chain;
use telltale_engine::config::Config;

#[test]
fn committed_nab_config_keeps_its_reported_scores() {
    let Some(dir) = common::nab_dir("committed_nab_config_keeps_its_reported_scores", "data")
    else {
        return;
    };
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/nab.toml");
    let plan = Config::from_file(&config).unwrap().plan().unwrap();
    let corpus = Corpus::read(&dir).unwrap();
    let r = run_chain("nab", &plan, &corpus);
    let got: Vec<f64> = r.nab.iter().map(|p| p.normalized).collect();
    // README: 76.50 / 68.61 / 81.17 (standard, low FP, low FN). The run is deterministic; the
    // margin only absorbs floating-point differences between builds.
    for (g, want) in got.iter().zip([76.50, 68.61, 81.17]) {
        assert!((g - want).abs() < 0.01, "{got:?}");
    }
}
