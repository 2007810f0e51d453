//! Properties every detector keeps: finite input gives a finite score in [0, 1], and a state
//! that is serialised and deserialised produces the same future output as the original.

use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};
use telltale_detect::{
    Cusum, CusumParams, Detector, Ewma, EwmaParams, Likelihood, LikelihoodParams, PageHinkley,
    PageHinkleyParams, RobustZ, RobustZParams,
};

/// A detector run over a slice of points, returning its scores.
type Run = Box<dyn FnMut(&[f64]) -> Vec<f64>>;

fn detectors() -> Vec<Run> {
    fn run<D: Detector>(mut d: D) -> impl FnMut(&[f64]) -> Vec<f64> {
        move |xs| {
            let mut out = vec![0.0; xs.len()];
            d.update_batch(xs, &mut out);
            out
        }
    }
    vec![
        Box::new(run(Ewma::new(EwmaParams::default()))),
        Box::new(run(Cusum::new(CusumParams::default()).unwrap())),
        Box::new(run(PageHinkley::new(PageHinkleyParams::default()))),
        Box::new(run(RobustZ::new(RobustZParams::default()).unwrap())),
        Box::new(run(Likelihood::new(LikelihoodParams::default()))),
    ]
}

fn roundtrip_then_compare<D>(mut d: D, head: &[f64], tail: &[f64])
where
    D: Detector + Serialize + DeserializeOwned,
{
    let mut out = vec![0.0; head.len()];
    d.update_batch(head, &mut out);
    let json = serde_json::to_string(&d).unwrap();
    let mut restored: D = serde_json::from_str(&json).unwrap();
    let (mut a, mut b) = (vec![0.0; tail.len()], vec![0.0; tail.len()]);
    d.update_batch(tail, &mut a);
    restored.update_batch(tail, &mut b);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

fn values() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![
            -1e6f64..1e6,
            Just(0.0),
            Just(42.0),
            (-1e100f64..1e100),
            (-1e-100f64..1e-100),
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn finite_input_gives_finite_score_in_unit_interval(xs in values()) {
        for mut d in detectors() {
            for s in d(&xs) {
                prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s), "score {s}");
            }
        }
    }

    #[test]
    fn serialised_state_gives_identical_future_output(xs in values(), cut in 0usize..400) {
        let cut = cut.min(xs.len());
        let (head, tail) = xs.split_at(cut);
        roundtrip_then_compare(Ewma::new(EwmaParams::default()), head, tail);
        roundtrip_then_compare(Cusum::new(CusumParams::default()).unwrap(), head, tail);
        roundtrip_then_compare(PageHinkley::new(PageHinkleyParams::default()), head, tail);
        roundtrip_then_compare(RobustZ::new(RobustZParams::default()).unwrap(), head, tail);
        roundtrip_then_compare(Likelihood::new(LikelihoodParams::default()), head, tail);
    }
}
