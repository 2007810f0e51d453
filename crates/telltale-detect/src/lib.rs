#![doc = include_str!("../README.md")]

/// Defines `fn name(args)` whose body is compiled three times — for the baseline target, for
/// AVX2 and for AVX-512F — and runs the widest the CPU supports, chosen at run time. The body
/// must be plain safe code (loops the compiler vectorises); all copies perform the same IEEE
/// operations in the same order (Rust never fuses `a * b + c`), so results are bit-identical
/// whichever copy runs.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn wide512($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn wide256($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above), the only
                    // requirement of the `target_feature` function.
                    return unsafe { wide512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above), the only
                    // requirement of the `target_feature` function.
                    return unsafe { wide256($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

mod bank;
mod combine;
pub mod confidence;
mod cusum;
mod earlier;
mod error;
mod ewma;
mod knn;
mod likelihood;
mod novelty;
mod page_hinkley;
pub mod params;
mod quiet;
pub mod record;
mod recurrence;
mod robust;
mod same_time;
pub mod score;
mod seasonal;
mod threshold;

pub use combine::Combine;
pub use cusum::{Cusum, CusumBank, CusumParams, CusumState};
pub use error::ParamError;
pub use ewma::{Ewma, EwmaBank, EwmaParams, EwmaState};
pub use knn::{Calibration, Knn, KnnBank, KnnParams, KnnState};
pub use likelihood::{Likelihood, LikelihoodBank, LikelihoodParams, LikelihoodState};
pub use novelty::{MAX_SPAN_POINTS, Novelty, NoveltyBank, NoveltyParams, NoveltyState};
pub use page_hinkley::{PageHinkley, PageHinkleyBank, PageHinkleyParams, PageHinkleyState, PhMode};
pub use params::Reach;
pub use quiet::{QuietParams, is_quiet};
pub use record::Record;
pub use recurrence::{History, MAX_RECURRENCE_WINDOW, RecurrenceParams, Silences, recurs};
pub use robust::{RobustZ, RobustZBank, RobustZParams, SortedWindow};
pub use same_time::{SameTime, SameTimeBank, SameTimeParams, SameTimeState};
pub use seasonal::{Seasonal, SeasonalBank, SeasonalParams, SeasonalState};
pub use threshold::{Threshold, ThresholdBank, ThresholdParams};

/// What a detector says about one point: its score in [0, 1] and the value it expected
/// (its forecast or reference level, taken before the point was learned).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Anomaly score in [0, 1]; 1 means the detector is certain this point is anomalous
    /// (for drift detectors: a change was detected at this point).
    pub score: f64,
    /// The value the detector expected at this point (NaN when it has no opinion yet).
    pub expected: f64,
}

/// A streaming detector of one series. Each point is scored with the state built from the
/// points before it, then learned.
pub trait Detector {
    /// Scores then learns each of `xs` in order, writing the scores to `out`
    /// (`out.len()` must equal `xs.len()`). Inputs must be finite.
    fn update_batch(&mut self, xs: &[f64], out: &mut [f64]);

    /// Scores then learns one point.
    fn update(&mut self, x: f64) -> f64 {
        let mut out = [0.0];
        self.update_batch(&[x], &mut out);
        out[0]
    }
}

/// The state of one kind of detector for many series, in struct-of-arrays form: one vector per
/// state field, indexed by the series' slot.
pub trait Bank {
    /// The detector's parameters.
    type Params;
    /// The state of one series, for snapshots and restores.
    type State;

    /// An empty bank.
    fn new(params: Self::Params) -> Self;
    /// Adds a series in its initial state and returns its slot.
    fn add_series(&mut self) -> usize;
    /// Number of series in the bank.
    fn len(&self) -> usize;
    /// True when the bank holds no series.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Scores then learns `x`, observed at `ts` (milliseconds since the epoch, non-decreasing
    /// per series), for the series in `slot`. `evicted` is the value that leaves the series'
    /// window as `x` enters it (only windowed detectors use it); `ts` is read only by detectors
    /// whose parameters are spans of time.
    fn update(&mut self, slot: usize, ts: i64, x: f64, evicted: Option<f64>) -> Scored;
    /// A copy of one series' state.
    fn snapshot(&self, slot: usize) -> Self::State;
    /// Overwrites one series' state.
    fn restore(&mut self, slot: usize, state: &Self::State);
    /// Bytes of state one series occupies in this bank.
    fn bytes_per_series(&self) -> usize;
}
