//! Page-Hinkley against River 0.26.1's golden files: exact drift indices on every stream and
//! bit-identical per-point state on the committed traces.

use std::path::{Path, PathBuf};

use telltale_detect::{PageHinkley, PageHinkleyParams};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/river")
}

fn read_stream(name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(fixtures().join("streams").join(name)).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("value"));
    lines.map(|l| l.parse::<f64>().unwrap()).collect()
}

#[test]
fn page_hinkley_matches_river_drift_indices_on_every_golden_file() {
    let mut dir: Vec<_> = std::fs::read_dir(fixtures().join("golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dir.sort();
    assert_eq!(dir.len(), 11, "expected every Page-Hinkley golden file");
    for path in dir {
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let params: PageHinkleyParams = serde_json::from_value(golden["params"].clone()).unwrap();
        let xs = read_stream(golden["input"].as_str().unwrap());
        assert_eq!(xs.len() as u64, golden["n_points"].as_u64().unwrap());
        let mut ph = PageHinkley::new(params);
        let drifts: Vec<u64> = xs
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| {
                let s = ph.step(x);
                assert_eq!(ph.drift_detected(), s.score == 1.0);
                ph.drift_detected().then_some(i as u64)
            })
            .collect();
        let want: Vec<u64> = golden["drift_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(drifts, want, "{}", path.display());
    }
}

#[test]
fn page_hinkley_state_is_bit_identical_to_river_traces() {
    for (trace, stream, params) in [
        (
            "nyc_taxi__page_hinkley_default",
            "stream_e_nyc_taxi.csv",
            PageHinkleyParams::default(),
        ),
        (
            "mean_shift__page_hinkley_tuned",
            "stream_a_mean_shift.csv",
            serde_json::from_str(r#"{"delta": 0.25, "threshold": 25.0}"#).unwrap(),
        ),
    ] {
        let xs = read_stream(stream);
        let text =
            std::fs::read_to_string(fixtures().join(format!("traces/{trace}.trace.csv"))).unwrap();
        let mut ph = PageHinkley::new(params);
        let mut rows = 0;
        for line in text.lines().skip(1) {
            let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            let i = f[0] as usize;
            assert_eq!(f[1], xs[i]);
            ph.step(xs[i]);
            let s = &ph.state;
            let got = [
                s.n,
                s.mean,
                s.sum_increase,
                s.sum_decrease,
                s.min_increase,
                s.max_decrease,
                s.test_increase(),
                s.test_decrease(),
            ];
            for (k, (g, w)) in got.iter().zip(&f[2..10]).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{trace} row {i} column {k}: {g} vs {w}"
                );
            }
            assert_eq!(f[10] == 1.0, ph.drift_detected(), "{trace} row {i}");
            rows += 1;
        }
        assert_eq!(rows, 2500);
    }
}
