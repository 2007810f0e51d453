//! Series snapshots: one series' whole state in a chain (every detector's, the ring, the alert,
//! the suppression, the quiet filter's range, its age), encoded compactly, so that a series can
//! move between instances (the changelog) and carry on as if it had never stopped.
//!
//! The encoding is postcard (serde's data model in a compact binary form; NaN and infinities
//! as they are). A snapshot starts with the format version and the chain's fingerprint
//! ([`ChainPlan::fingerprint`]: the build's version and everything the state's layout and
//! meaning depend on), read before anything else: a snapshot of another build or chain
//! configuration is refused, never misread.

use serde::{Deserialize, Serialize};
use telltale_detect::{
    CusumState, EwmaState, KnnState, LikelihoodState, NoveltyState, PageHinkleyState,
    SameTimeState, SeasonalState,
};

use crate::alert::AlertState;
use crate::config::ChainPlan;

/// Version of the snapshot encoding; part of every chain's fingerprint.
pub const FORMAT: u32 = 1;

/// One detector's state for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum BankState {
    Ewma(EwmaState),
    Cusum(CusumState),
    PageHinkley(PageHinkleyState),
    RobustZ(Vec<f64>),
    Threshold,
    Likelihood(LikelihoodState),
    Seasonal(SeasonalState),
    Knn(KnnState),
    SameTime(SameTimeState),
    Novelty(NoveltyState),
}

/// What a snapshot starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: u32,
    chain: u64,
}

/// One series' state in a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub(crate) banks: Vec<BankState>,
    pub(crate) ring: Vec<(i64, f64)>,
    pub(crate) alert: AlertState,
    pub(crate) suppress: Option<(f64, i64)>,
    pub(crate) born: Option<i64>,
    pub(crate) range: Option<(f64, f64)>,
}

/// Why a snapshot was not restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Another encoding version.
    #[error("snapshot format {found}, this build reads {FORMAT}")]
    Format {
        /// The snapshot's.
        found: u32,
    },
    /// Another build or chain configuration.
    #[error(
        "snapshot of another build or chain configuration (fingerprint {found:016x}, this chain {expected:016x})"
    )]
    Chain {
        /// The snapshot's.
        found: u64,
        /// This chain's.
        expected: u64,
    },
    /// Not a snapshot this build can read.
    #[error("unreadable snapshot: {0}")]
    Malformed(String),
    /// Its detectors are not the chain's.
    #[error("snapshot does not match the chain's detectors")]
    Mismatch,
}

impl SeriesState {
    /// Encodes the state for `plan`'s chain.
    pub fn encode(&self, plan: &ChainPlan) -> Vec<u8> {
        let header = Header {
            format: FORMAT,
            chain: plan.fingerprint,
        };
        let mut out = postcard::to_allocvec(&header).expect("a header encodes");
        out.extend(postcard::to_allocvec(self).expect("a series state encodes"));
        out
    }

    /// Decodes a snapshot for `plan`'s chain: refused, before its body is read, when it comes
    /// from another encoding, build or chain configuration.
    pub fn decode(bytes: &[u8], plan: &ChainPlan) -> Result<Self, SnapshotError> {
        let (header, body): (Header, _) = postcard::take_from_bytes(bytes)
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if header.format != FORMAT {
            return Err(SnapshotError::Format {
                found: header.format,
            });
        }
        if header.chain != plan.fingerprint {
            return Err(SnapshotError::Chain {
                found: header.chain,
                expected: plan.fingerprint,
            });
        }
        let (state, rest): (Self, _) =
            postcard::take_from_bytes(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed(format!(
                "{} bytes after the state",
                rest.len()
            )));
        }
        if state.banks.len() != plan.detectors.len() {
            return Err(SnapshotError::Mismatch);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainGroup;
    use crate::config::Config;

    /// A daily curve of 5-minute points with noise, gaps and a few spikes.
    fn stream(n: i64) -> Vec<(i64, f64)> {
        (0..n)
            .filter(|i| i % 701 > 5)
            .map(|i| {
                let t = i * 300_000 + (i * 7919 % 40) * 1000;
                let phase = (t % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
                let spike = if i % 1009 == 500 { 40.0 } else { 0.0 };
                (
                    t,
                    50.0 + 10.0 * phase.sin() + ((i * 31) % 17) as f64 * 0.3 + spike,
                )
            })
            .collect()
    }

    /// Every detector kind, the filters and a holding chain.
    const CHAINS: [&str; 3] = [
        "",
        "[chain]\nring = 32\nsuppress = \"2h\"\ndetectors = [{ kind = \"ewma\" }, { kind = \"cusum\" }, { kind = \"page_hinkley\" }, { kind = \"robust_z\" }, { kind = \"threshold\", above = 95.0 }, { kind = \"likelihood\", long = \"2d\" }, { kind = \"seasonal\" }, { kind = \"knn\", step = 12, window = 4, reference = 50, calibration = 50 }]\n[chain.quiet]\nwindow = \"1h\"\nsilences = [5]",
        "[chain]\nhold = true\ndetectors = [{ kind = \"same_time\" }, { kind = \"novelty\", deviation = 12 }, { kind = \"knn\", block = \"1h\", window = 4, reference = 60, calibration = \"3d\" }]\n[chain.young]\nspan = \"1d\"\ndetectors = [1]",
    ];

    #[test]
    fn a_restored_series_scores_as_if_it_never_stopped() {
        let points = stream(6 * 288);
        for toml in CHAINS {
            let plan = Config::from_toml(toml).unwrap().plan().unwrap();
            let chain = &plan.chains[0];
            for cut in [1, 300, 3 * 288 + 17] {
                let mut whole = ChainGroup::new(chain);
                let a = whole.add_series();
                for &(t, x) in &points[..cut] {
                    whole.process(a, t, x).unwrap();
                }
                let bytes = whole.export(a).encode(chain);
                let mut moved = ChainGroup::new(chain);
                moved.add_series(); // another series first: the slot differs
                let state = SeriesState::decode(&bytes, chain).unwrap();
                let b = moved.add_series_from(&state).unwrap();
                // Bit for bit (NaN marks empty buckets, so not with `==`).
                assert_eq!(
                    moved.export(b).encode(chain),
                    whole.export(a).encode(chain),
                    "{toml}: cut {cut}"
                );
                let mut opens = 0;
                for &(t, x) in &points[cut..] {
                    let (p, q) = (
                        whole.process(a, t, x).unwrap(),
                        moved.process(b, t, x).unwrap(),
                    );
                    assert_eq!(
                        p.score.to_bits(),
                        q.score.to_bits(),
                        "{toml}: cut {cut}, t {t}"
                    );
                    assert_eq!(p.transition, q.transition, "{toml}: cut {cut}, t {t}");
                    opens += usize::from(p.transition.is_some());
                }
                assert!(opens > 0, "{toml}: the comparison saw transitions");
            }
        }
    }

    #[test]
    fn a_snapshot_of_another_chain_or_format_is_refused_not_misread() {
        let plans: Vec<_> = CHAINS
            .iter()
            .map(|t| Config::from_toml(t).unwrap().plan().unwrap())
            .collect();
        let mut g = ChainGroup::new(&plans[0].chains[0]);
        let s = g.add_series();
        for &(t, x) in &stream(500) {
            g.process(s, t, x).unwrap();
        }
        let bytes = g.export(s).encode(&plans[0].chains[0]);
        // Another chain: refused on the fingerprint, before the body is read.
        let e = SeriesState::decode(&bytes, &plans[1].chains[0]).unwrap_err();
        assert!(matches!(e, SnapshotError::Chain { .. }), "{e}");
        // The same detectors with one parameter changed: another fingerprint too.
        let tweaked = Config::from_toml("[chain]\nsuppress = \"9h\"")
            .unwrap()
            .plan()
            .unwrap();
        assert!(matches!(
            SeriesState::decode(&bytes, &tweaked.chains[0]),
            Err(SnapshotError::Chain { .. })
        ));
        // Another format version.
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(matches!(
            SeriesState::decode(&other, &plans[0].chains[0]),
            Err(SnapshotError::Format { found: 2 })
        ));
        // Truncated or garbage: malformed, never a state.
        for cut in [0, 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                SeriesState::decode(&bytes[..cut], &plans[0].chains[0]).is_err(),
                "{cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SeriesState::decode(&longer, &plans[0].chains[0]),
            Err(SnapshotError::Malformed(_))
        ));
        // The chain's own: restored.
        assert!(SeriesState::decode(&bytes, &plans[0].chains[0]).is_ok());
    }
}
