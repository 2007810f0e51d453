//! The confidence scorers against golden values computed independently with numpy/scipy
//! (`fixtures/confidence/make_golden.py`: Dirichlet-drawn vectors, 2 to 1,000 classes, 0 to 8
//! mutants).

use telltale_detect::confidence::{disagreement, entropy, gini, least_confidence, margin, smooth};

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
        "{what}: {a} vs golden {b}"
    );
}

#[test]
fn scorers_match_numpy_scipy_golden_values() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/confidence/golden.json"
    );
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 72);
    let vec = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    for c in cases {
        let p = vec(&c["probs"]);
        let mutants = vec(&c["mutants"]);
        close(margin(&p), c["margin"].as_f64().unwrap(), "margin");
        close(
            least_confidence(&p),
            c["least_confidence"].as_f64().unwrap(),
            "least confidence",
        );
        close(entropy(&p), c["entropy"].as_f64().unwrap(), "entropy");
        close(gini(&p), c["gini"].as_f64().unwrap(), "gini");
        close(
            disagreement(&p, &mutants),
            c["disagreement"].as_f64().unwrap(),
            "disagreement",
        );
        let mut s = vec![0.0; p.len()];
        smooth(&p, &mutants, true, &mut s);
        for (a, b) in s.iter().zip(vec(&c["smoothed_with_original"])) {
            close(*a, b, "smoothed with original");
        }
        close(
            margin(&s),
            c["smoothed_margin"].as_f64().unwrap(),
            "smoothed margin",
        );
        smooth(&p, &mutants, false, &mut s);
        for (a, b) in s.iter().zip(vec(&c["smoothed_without_original"])) {
            close(*a, b, "smoothed without original");
        }
    }
}
