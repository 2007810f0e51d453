//! A chain group: the state of every series that shares one chain (detectors, ring, alerting),
//! in struct-of-arrays form, and the per-point path through it.

use telltale_detect::{
    Bank, CusumBank, EwmaBank, History, KnnBank, LikelihoodBank, NoveltyBank, PageHinkleyBank,
    RobustZBank, SameTimeBank, Scored, SeasonalBank, ThresholdBank,
};

use crate::alert::{AlertBank, Transition};
use crate::config::{ChainPlan, DetectorSpec, MAX_DETECTORS};
use crate::snapshot::{BankState, SeriesState, SnapshotError};
use telltale_core::reject::RejectReason;

/// One detector bank of a chain.
#[derive(Debug, Clone)]
enum AnyBank {
    Ewma(EwmaBank),
    Cusum(CusumBank),
    PageHinkley(PageHinkleyBank),
    RobustZ(RobustZBank),
    Threshold(ThresholdBank),
    Likelihood(LikelihoodBank),
    Seasonal(SeasonalBank),
    Knn(KnnBank),
    SameTime(SameTimeBank),
    Novelty(NoveltyBank),
}

/// A bank's state for one series before a point was learned, kept so a holding chain can
/// learn a point first and take it back if the chain then holds (one update per point instead
/// of a score-only pass and an update). Banks whose state is small and `Copy` have one; the
/// others are scored without learning first, as before.
#[derive(Debug, Clone, Copy)]
enum Undo {
    Ewma(<EwmaBank as Bank>::State),
    Cusum(<CusumBank as Bank>::State),
    PageHinkley(<PageHinkleyBank as Bank>::State),
    Likelihood(<LikelihoodBank as Bank>::State),
    /// Scored without learning: still to be learned if the chain does not hold.
    NotLearned,
}

impl AnyBank {
    fn new(spec: &DetectorSpec) -> Self {
        match spec {
            DetectorSpec::Ewma(p) => AnyBank::Ewma(EwmaBank::new(*p)),
            DetectorSpec::Cusum(p) => AnyBank::Cusum(CusumBank::new(*p)),
            DetectorSpec::PageHinkley(p) => AnyBank::PageHinkley(PageHinkleyBank::new(*p)),
            DetectorSpec::RobustZ(p) => AnyBank::RobustZ(RobustZBank::new(*p)),
            DetectorSpec::Threshold(p) => AnyBank::Threshold(ThresholdBank::new(*p)),
            DetectorSpec::Likelihood(p) => AnyBank::Likelihood(LikelihoodBank::new(*p)),
            DetectorSpec::Seasonal(p) => AnyBank::Seasonal(SeasonalBank::new(*p)),
            DetectorSpec::Knn(p) => AnyBank::Knn(KnnBank::new(*p)),
            DetectorSpec::SameTime(p) => AnyBank::SameTime(SameTimeBank::new(*p)),
            DetectorSpec::Novelty(p) => AnyBank::Novelty(NoveltyBank::new(*p)),
        }
    }

    fn add_series(&mut self) -> usize {
        match self {
            AnyBank::Ewma(b) => b.add_series(),
            AnyBank::Cusum(b) => b.add_series(),
            AnyBank::PageHinkley(b) => b.add_series(),
            AnyBank::RobustZ(b) => b.add_series(),
            AnyBank::Threshold(b) => b.add_series(),
            AnyBank::Likelihood(b) => b.add_series(),
            AnyBank::Seasonal(b) => b.add_series(),
            AnyBank::Knn(b) => b.add_series(),
            AnyBank::SameTime(b) => b.add_series(),
            AnyBank::Novelty(b) => b.add_series(),
        }
    }

    #[inline]
    fn update(&mut self, slot: usize, ts: i64, x: f64, evicted: Option<f64>) -> Scored {
        match self {
            AnyBank::Seasonal(b) => b.update(slot, ts, x),
            AnyBank::SameTime(b) => b.update(slot, ts, x),
            AnyBank::Ewma(b) => b.update(slot, ts, x, evicted),
            AnyBank::Cusum(b) => b.update(slot, ts, x, evicted),
            AnyBank::PageHinkley(b) => b.update(slot, ts, x, evicted),
            AnyBank::RobustZ(b) => b.update(slot, ts, x, evicted),
            AnyBank::Threshold(b) => b.update(slot, ts, x, evicted),
            AnyBank::Likelihood(b) => b.update(slot, ts, x, evicted),
            AnyBank::Knn(b) => b.update(slot, ts, x, evicted),
            AnyBank::Novelty(b) => b.update(slot, ts, x, evicted),
        }
    }

    /// Learns `x` if the bank can take it back ([`AnyBank::undo`]), otherwise only scores it;
    /// either way the score is the one [`AnyBank::update`] would give.
    #[inline]
    fn update_undoable(
        &mut self,
        slot: usize,
        ts: i64,
        x: f64,
        evicted: Option<f64>,
    ) -> (Scored, Undo) {
        match self {
            AnyBank::Ewma(b) => {
                let u = Undo::Ewma(b.snapshot(slot));
                (b.update(slot, ts, x, evicted), u)
            }
            AnyBank::Cusum(b) => {
                let u = Undo::Cusum(b.snapshot(slot));
                (b.update(slot, ts, x, evicted), u)
            }
            AnyBank::PageHinkley(b) => {
                let u = Undo::PageHinkley(b.snapshot(slot));
                (b.update(slot, ts, x, evicted), u)
            }
            AnyBank::Likelihood(b) => {
                let u = Undo::Likelihood(b.snapshot(slot));
                (b.update(slot, ts, x, evicted), u)
            }
            _ => (self.score_only(slot, ts, x, evicted), Undo::NotLearned),
        }
    }

    /// Takes back what [`AnyBank::update_undoable`] learned.
    #[inline]
    fn undo(&mut self, slot: usize, u: &Undo) {
        match (self, u) {
            (AnyBank::Ewma(b), Undo::Ewma(s)) => b.restore(slot, s),
            (AnyBank::Cusum(b), Undo::Cusum(s)) => b.restore(slot, s),
            (AnyBank::PageHinkley(b), Undo::PageHinkley(s)) => b.restore(slot, s),
            (AnyBank::Likelihood(b), Undo::Likelihood(s)) => b.restore(slot, s),
            _ => {}
        }
    }

    /// Scores `x` without learning it (the state is put back as it was).
    fn score_only(&mut self, slot: usize, ts: i64, x: f64, evicted: Option<f64>) -> Scored {
        fn keep<B: Bank>(b: &mut B, slot: usize, ts: i64, x: f64, evicted: Option<f64>) -> Scored {
            let before = b.snapshot(slot);
            let out = b.update(slot, ts, x, evicted);
            b.restore(slot, &before);
            out
        }
        match self {
            AnyBank::Seasonal(b) => b.score_only(slot, ts, x),
            AnyBank::Ewma(b) => keep(b, slot, ts, x, evicted),
            AnyBank::Cusum(b) => keep(b, slot, ts, x, evicted),
            AnyBank::PageHinkley(b) => keep(b, slot, ts, x, evicted),
            AnyBank::RobustZ(b) => keep(b, slot, ts, x, evicted),
            AnyBank::Threshold(b) => keep(b, slot, ts, x, evicted),
            AnyBank::Likelihood(b) => keep(b, slot, ts, x, evicted),
            AnyBank::Knn(b) => b.score_only(slot, ts, x),
            AnyBank::SameTime(b) => b.score_only(slot, ts, x),
            AnyBank::Novelty(b) => b.score_only(slot, ts, x),
        }
    }

    /// One series' state.
    fn export(&self, slot: usize) -> BankState {
        match self {
            AnyBank::Ewma(b) => BankState::Ewma(b.snapshot(slot)),
            AnyBank::Cusum(b) => BankState::Cusum(b.snapshot(slot)),
            AnyBank::PageHinkley(b) => BankState::PageHinkley(b.snapshot(slot)),
            AnyBank::RobustZ(b) => BankState::RobustZ(b.snapshot(slot)),
            AnyBank::Threshold(_) => BankState::Threshold,
            AnyBank::Likelihood(b) => BankState::Likelihood(b.snapshot(slot)),
            AnyBank::Seasonal(b) => BankState::Seasonal(b.snapshot(slot)),
            AnyBank::Knn(b) => BankState::Knn(b.snapshot(slot)),
            AnyBank::SameTime(b) => BankState::SameTime(b.snapshot(slot)),
            AnyBank::Novelty(b) => BankState::Novelty(b.snapshot(slot)),
        }
    }

    /// Overwrites one series' state; false when the state is another detector's.
    fn import(&mut self, slot: usize, state: &BankState) -> bool {
        match (self, state) {
            (AnyBank::Ewma(b), BankState::Ewma(s)) => b.restore(slot, s),
            (AnyBank::Cusum(b), BankState::Cusum(s)) => b.restore(slot, s),
            (AnyBank::PageHinkley(b), BankState::PageHinkley(s)) => b.restore(slot, s),
            (AnyBank::RobustZ(b), BankState::RobustZ(s)) => b.restore(slot, s),
            (AnyBank::Threshold(_), BankState::Threshold) => {}
            (AnyBank::Likelihood(b), BankState::Likelihood(s)) => b.restore(slot, s),
            (AnyBank::Seasonal(b), BankState::Seasonal(s)) => b.restore(slot, s),
            (AnyBank::Knn(b), BankState::Knn(s)) => b.restore(slot, s),
            (AnyBank::SameTime(b), BankState::SameTime(s)) => b.restore(slot, s),
            (AnyBank::Novelty(b), BankState::Novelty(s)) => b.restore(slot, s),
            _ => return false,
        }
        true
    }

    fn bytes_per_series(&self) -> usize {
        match self {
            AnyBank::Ewma(b) => b.bytes_per_series(),
            AnyBank::Cusum(b) => b.bytes_per_series(),
            AnyBank::PageHinkley(b) => b.bytes_per_series(),
            AnyBank::RobustZ(b) => b.bytes_per_series(),
            AnyBank::Threshold(b) => b.bytes_per_series(),
            AnyBank::Likelihood(b) => b.bytes_per_series(),
            AnyBank::Seasonal(b) => b.bytes_per_series(),
            AnyBank::Knn(b) => b.bytes_per_series(),
            AnyBank::SameTime(b) => b.bytes_per_series(),
            AnyBank::Novelty(b) => b.bytes_per_series(),
        }
    }
}

/// Fixed-capacity rings of recent (timestamp, value), one per series, in one contiguous slab.
#[derive(Debug, Clone)]
pub struct RingSlab {
    mask: usize,
    ts: Vec<i64>,
    val: Vec<f64>,
    head: Vec<u32>,
    len: Vec<u32>,
}

impl RingSlab {
    /// Rings of `capacity` (a power of two) points.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity.is_power_of_two());
        Self {
            mask: capacity - 1,
            ts: Vec::new(),
            val: Vec::new(),
            head: Vec::new(),
            len: Vec::new(),
        }
    }

    fn cap(&self) -> usize {
        self.mask + 1
    }

    /// Empties one series' ring.
    pub fn clear(&mut self, slot: usize) {
        self.head[slot] = 0;
        self.len[slot] = 0;
    }

    /// Adds an empty ring; returns its slot.
    pub fn add_series(&mut self) -> usize {
        let cap = self.cap();
        self.ts.resize(self.ts.len() + cap, 0);
        self.val.resize(self.val.len() + cap, 0.0);
        self.head.push(0);
        self.len.push(0);
        self.len.len() - 1
    }

    /// Points in the ring.
    pub fn len(&self, slot: usize) -> usize {
        self.len[slot] as usize
    }

    /// Timestamp of the newest point.
    #[inline]
    pub fn last_ts(&self, slot: usize) -> Option<i64> {
        let n = self.len[slot] as usize;
        (n > 0).then(|| {
            let i = (self.head[slot] as usize + n - 1) & self.mask;
            self.ts[slot * self.cap() + i]
        })
    }

    /// The value the next push will evict (when the ring is full).
    #[inline]
    pub fn next_evicted(&self, slot: usize) -> Option<f64> {
        (self.len[slot] as usize == self.cap())
            .then(|| self.val[slot * self.cap() + self.head[slot] as usize])
    }

    /// Appends a point, overwriting the oldest when full.
    #[inline]
    pub fn push(&mut self, slot: usize, ts: i64, v: f64) {
        let cap = self.cap();
        let n = self.len[slot] as usize;
        let head = self.head[slot] as usize;
        let i = slot * cap + ((head + n) & self.mask);
        self.ts[i] = ts;
        self.val[i] = v;
        if n == cap {
            self.head[slot] = ((head + 1) & self.mask) as u32;
        } else {
            self.len[slot] = (n + 1) as u32;
        }
    }

    /// The ring's points, oldest first.
    pub fn iter(&self, slot: usize) -> impl Iterator<Item = (i64, f64)> + '_ {
        let cap = self.cap();
        let (h, n) = (self.head[slot] as usize, self.len[slot] as usize);
        (0..n).map(move |k| {
            let i = slot * cap + ((h + k) & self.mask);
            (self.ts[i], self.val[i])
        })
    }

    /// The ring's points, oldest first, as the two contiguous runs they occupy.
    pub fn history(&self, slot: usize) -> History<'_> {
        let cap = self.cap();
        let (h, n) = (self.head[slot] as usize, self.len[slot] as usize);
        let base = slot * cap;
        let first = n.min(cap - h);
        let ts = &self.ts[base..base + cap];
        let val = &self.val[base..base + cap];
        History {
            ts: [&ts[h..h + first], &ts[..n - first]],
            val: [&val[h..h + first], &val[..n - first]],
        }
    }

    /// Bytes per series.
    pub fn bytes_per_series(&self) -> usize {
        self.cap() * (size_of::<i64>() + size_of::<f64>()) + 2 * size_of::<u32>()
    }
}

/// What the chain made of one point.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Per-detector scores (first `n` used).
    pub scores: [f64; MAX_DETECTORS],
    /// Detectors in the chain.
    pub n: usize,
    /// Combined score.
    pub score: f64,
    /// The combined score after the suppression of repeated alarms (`[chain] suppress`): what
    /// can open an anomaly, and what `telltale bench` ranks rows by (the score itself when the
    /// chain does not suppress).
    pub rank: f64,
    /// What the chain expected (first detector with an opinion).
    pub expected: f64,
    /// Alert transition, if the point caused one.
    pub transition: Option<Transition>,
}

/// All series on one shard that use one chain.
#[derive(Debug, Clone)]
pub struct ChainGroup {
    plan: ChainPlan,
    banks: Vec<AnyBank>,
    ring: RingSlab,
    alert: AlertBank,
    /// Smallest and largest value each series has taken (kept only for the quiet filter).
    range: Vec<(f64, f64)>,
    /// The suppression of repeated alarms (kept only when the chain suppresses).
    suppress: Vec<Suppress>,
    /// Each series' first timestamp (kept only for the young-series hand-over).
    born: Vec<i64>,
}

/// One series' suppression of repeated alarms: the last score that passed and when.
#[derive(Debug, Clone, Copy)]
struct Suppress {
    high: f64,
    at: i64,
}

impl Suppress {
    const NONE: Self = Self {
        high: 0.0,
        at: i64::MIN,
    };

    /// The score that may open an anomaly: `score` when it is above the last score that passed
    /// within `window_ms` of event time (or none passed that recently), else 0.
    #[inline]
    fn pass(&mut self, window_ms: i64, ts: i64, score: f64) -> f64 {
        if ts.saturating_sub(self.at) > window_ms {
            self.high = 0.0;
        }
        if score > self.high {
            (self.high, self.at) = (score, ts);
            score
        } else {
            0.0
        }
    }
}

impl ChainGroup {
    /// An empty group for `plan`.
    pub fn new(plan: &ChainPlan) -> Self {
        Self {
            banks: plan.detectors.iter().map(AnyBank::new).collect(),
            ring: RingSlab::new(plan.ring),
            alert: AlertBank::default(),
            range: Vec::new(),
            suppress: Vec::new(),
            born: Vec::new(),
            plan: plan.clone(),
        }
    }

    /// The chain's plan.
    pub fn plan(&self) -> &ChainPlan {
        &self.plan
    }

    /// The group's rings.
    pub fn ring(&self) -> &RingSlab {
        &self.ring
    }

    /// Adds a series; returns its slot in the group.
    pub fn add_series(&mut self) -> usize {
        for b in &mut self.banks {
            b.add_series();
        }
        self.alert.add_series();
        if self.plan.quiet.is_some() {
            self.range.push((f64::INFINITY, f64::NEG_INFINITY));
        }
        if self.plan.suppress_ms > 0 {
            self.suppress.push(Suppress::NONE);
        }
        if self.plan.young.is_some() {
            self.born.push(i64::MIN);
        }
        self.ring.add_series()
    }

    /// The whole state of the series in `slot` ([`crate::snapshot`]).
    pub fn export(&self, slot: usize) -> SeriesState {
        SeriesState {
            banks: self.banks.iter().map(|b| b.export(slot)).collect(),
            ring: self.ring.iter(slot).collect(),
            alert: self.alert.export(slot),
            suppress: self.suppress.get(slot).map(|s| (s.high, s.at)),
            born: self.born.get(slot).copied(),
            range: self.range.get(slot).copied(),
        }
    }

    /// Adds a series in the state a snapshot of this chain holds; returns its slot. The state
    /// must come from [`SeriesState::decode`] with this group's plan.
    pub fn add_series_from(&mut self, state: &SeriesState) -> Result<usize, SnapshotError> {
        self.fits(state)?;
        let slot = self.add_series();
        self.restore(slot, state)?;
        Ok(slot)
    }

    fn fits(&self, state: &SeriesState) -> Result<(), SnapshotError> {
        if state.banks.len() != self.banks.len()
            || state.ring.len() > self.ring.cap()
            || state.suppress.is_some() != (self.plan.suppress_ms > 0)
            || state.born.is_some() != self.plan.young.is_some()
            || state.range.is_some() != self.plan.quiet.is_some()
        {
            return Err(SnapshotError::Mismatch);
        }
        Ok(())
    }

    /// Overwrites the state of the series in `slot` with a snapshot of this chain (a series
    /// whose partition came back after another instance had it).
    pub fn restore(&mut self, slot: usize, state: &SeriesState) -> Result<(), SnapshotError> {
        self.fits(state)?;
        for (bank, s) in self.banks.iter_mut().zip(&state.banks) {
            if !bank.import(slot, s) {
                return Err(SnapshotError::Mismatch);
            }
        }
        self.ring.clear(slot);
        for &(ts, v) in &state.ring {
            self.ring.push(slot, ts, v);
        }
        self.alert.import(slot, &state.alert);
        if let (Some(s), Some((high, at))) = (self.suppress.get_mut(slot), state.suppress) {
            *s = Suppress { high, at };
        }
        if let (Some(b), Some(born)) = (self.born.get_mut(slot), state.born) {
            *b = born;
        }
        if let (Some(r), Some(range)) = (self.range.get_mut(slot), state.range) {
            *r = range;
        }
        Ok(())
    }

    /// Bytes of state per series in this group.
    pub fn bytes_per_series(&self) -> usize {
        self.banks
            .iter()
            .map(AnyBank::bytes_per_series)
            .sum::<usize>()
            + self.ring.bytes_per_series()
            + AlertBank::bytes_per_series()
            + usize::from(self.plan.quiet.is_some()) * size_of::<(f64, f64)>()
            + usize::from(self.plan.suppress_ms > 0) * size_of::<Suppress>()
            + usize::from(self.plan.young.is_some()) * size_of::<i64>()
    }

    /// Scores, learns and alerts on one point. A point older than the series' newest by at most
    /// the plan's lateness is scored at the newest time (in arrival order); an older one is
    /// rejected.
    #[inline]
    pub fn process(&mut self, slot: usize, ts: i64, x: f64) -> Result<Outcome, RejectReason> {
        let ts = match self.ring.last_ts(slot) {
            Some(last) if ts < last => {
                if last - ts > self.plan.max_lateness_ms {
                    return Err(RejectReason::OutOfOrder);
                }
                last
            }
            _ => ts,
        };
        let evicted = self.ring.next_evicted(slot);
        let n = self.banks.len();
        // Whether the point repeats what the series did at the same time on each of the last
        // `periods` periods (read from the ring before the point enters it); if so the named
        // detectors' scores are silenced, before the hold decision and the combination.
        let recurring = self
            .plan
            .recurrence
            .as_ref()
            .filter(|p| telltale_detect::recurs(p, &self.ring.history(slot), ts, x))
            .map(|p| p.silences);
        // Whether the point moves less than a share of the range the series has covered (this
        // point included) away from its recent median; if so the quiet filter's detectors are
        // silenced the same way.
        let quiet = self.plan.quiet.as_ref().and_then(|p| {
            let (lo, hi) = &mut self.range[slot];
            (*lo, *hi) = (lo.min(x), hi.max(x));
            telltale_detect::is_quiet(p, &self.ring.history(slot), ts, x, *lo, *hi)
                .then_some(p.silences)
        });
        // While the series is young only the young detectors score; after, only the others.
        let young = self.plan.young.map(|y| {
            let born = &mut self.born[slot];
            if *born == i64::MIN {
                *born = ts;
            }
            if ts.saturating_sub(*born) < y.span_ms {
                y.detectors.complement()
            } else {
                y.detectors
            }
        });
        let silence = |scores: &mut [f64; MAX_DETECTORS]| {
            for set in [recurring, quiet, young].into_iter().flatten() {
                for (i, s) in scores[..n].iter_mut().enumerate() {
                    if set.contains(i) {
                        *s = 0.0;
                    }
                }
            }
        };
        let mut scores = [0.0; MAX_DETECTORS];
        let mut expected = f64::NAN;
        // A holding chain first scores without learning; a point that is anomalous (score at or
        // above `resolve`) or arrives while an anomaly is open is not learned, so the baseline
        // from before the anomaly stays, and the anomaly stays open until the series is back.
        //
        // Banks that can take a point back learn it at once and restore their state if the
        // chain holds; the others score first and learn after. Same results as scoring every
        // bank without learning and then learning, with one update per point instead of two.
        if self.plan.hold {
            let mut undo = [Undo::NotLearned; MAX_DETECTORS];
            for ((bank, out), u) in self.banks.iter_mut().zip(&mut scores).zip(&mut undo) {
                let (s, k) = bank.update_undoable(slot, ts, x, evicted);
                *out = s.score;
                *u = k;
                if expected.is_nan() {
                    expected = s.expected;
                }
            }
            silence(&mut scores);
            let hold = self.alert.is_open(slot)
                || self.plan.combine.combine(&scores[..n]) >= self.plan.alert.resolve;
            if hold {
                for (bank, u) in self.banks.iter_mut().zip(&undo) {
                    bank.undo(slot, u);
                }
            } else {
                for (bank, u) in self.banks.iter_mut().zip(&undo) {
                    if matches!(u, Undo::NotLearned) {
                        bank.update(slot, ts, x, evicted);
                    }
                }
                self.ring.push(slot, ts, x);
            }
        } else {
            expected = f64::NAN;
            for (bank, out) in self.banks.iter_mut().zip(scores.iter_mut()) {
                let s = bank.update(slot, ts, x, evicted);
                *out = s.score;
                if expected.is_nan() {
                    expected = s.expected;
                }
            }
            silence(&mut scores);
            self.ring.push(slot, ts, x);
        }
        let score = self.plan.combine.combine(&scores[..n]);
        let rank = match self.suppress.get_mut(slot) {
            Some(s) => s.pass(self.plan.suppress_ms, ts, score),
            None => score,
        };
        let transition = self.alert.step(&self.plan.alert, slot, ts, score, rank);
        Ok(Outcome {
            scores,
            n,
            score,
            rank,
            expected,
            transition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn suppression_passes_only_new_highs_within_its_span() {
        let mut r = Suppress::NONE;
        // Points 10 minutes apart, a span of 30 minutes.
        let (step, span) = (600_000, 1_800_000);
        let passed: Vec<f64> = [0.1, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.5, 0.99]
            .iter()
            .enumerate()
            .map(|(i, s)| r.pass(span, i as i64 * step, *s))
            .collect();
        // 0.95 passed at 20 min; until 50 min nothing lower passes; at 60 min it is more than
        // the span ago, so 0.9 passes again.
        assert_eq!(passed, vec![0.1, 0.9, 0.95, 0.0, 0.0, 0.0, 0.9, 0.0, 0.99]);
    }

    #[test]
    fn a_suppressed_chain_opens_once_per_burst_and_resolves_on_its_scores() {
        let cfg = |suppress: &str| {
            let plan = Config::from_toml(&format!(
                "[chain]\nsuppress = \"{suppress}\"\ndetectors = [{{ kind = \"threshold\", above = 5.0 }}]\nalert = {{ open = 0.5, resolve = 0.5, min_points = 1, resolve_points = 2 }}"
            ))
            .unwrap()
            .plan()
            .unwrap();
            let mut g = ChainGroup::new(&plan.chains[0]);
            let s = g.add_series();
            let mut events = Vec::new();
            // Above 5 from minute 10 to 14, normal, above again at 20 and 21: minutes apart.
            for m in 0..40i64 {
                let x = if (10..15).contains(&m) || (20..22).contains(&m) {
                    9.0
                } else {
                    1.0
                };
                let out = g.process(s, m * 60_000, x).unwrap();
                if let Some(t) = out.transition {
                    events.push((m, t.state));
                }
            }
            events
        };
        use telltale_core::event::EventState::{Open, Resolved};
        // Without suppression: two anomalies. With an hour of it, the second burst is no
        // higher than the first and opens nothing; the first still resolves when the series
        // is back (on its scores, not on the suppressed ones).
        assert_eq!(
            cfg("0s"),
            vec![(10, Open), (16, Resolved), (20, Open), (23, Resolved)]
        );
        assert_eq!(cfg("1h"), vec![(10, Open), (16, Resolved)]);
    }

    #[test]
    fn ring_keeps_the_newest_points_and_reports_evictions() {
        let mut r = RingSlab::new(4);
        r.add_series();
        let s = r.add_series();
        for t in 0..6 {
            assert_eq!(r.next_evicted(s), (t >= 4).then(|| (t - 4) as f64));
            r.push(s, t, t as f64);
        }
        assert_eq!(
            r.iter(s).collect::<Vec<_>>(),
            vec![(2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0)]
        );
        assert_eq!(r.last_ts(s), Some(5));
        assert_eq!(r.len(0), 0);
    }

    #[test]
    fn a_point_later_than_the_lateness_is_rejected_and_one_within_it_scored() {
        let plan = Config::default().plan().unwrap();
        assert_eq!(
            plan.chains[0].max_lateness_ms, 5_000,
            "the default lateness"
        );
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        g.process(s, 10_000, 1.0).unwrap();
        g.process(s, 10_000, 1.0).unwrap();
        g.process(s, 5_000, 1.0).unwrap();
        assert_eq!(g.ring.last_ts(s), Some(10_000), "scored at the newest time");
        assert_eq!(
            g.process(s, 4_999, 1.0).unwrap_err(),
            RejectReason::OutOfOrder
        );
        let plan = Config::from_toml("[engine]\nmax_lateness = \"0s\"")
            .unwrap()
            .plan()
            .unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        g.process(s, 100, 1.0).unwrap();
        assert_eq!(g.process(s, 99, 1.0).unwrap_err(), RejectReason::OutOfOrder);
        let e = Config::from_toml("[engine]\nmax_lateness = \"soon\"")
            .unwrap()
            .plan()
            .unwrap_err();
        assert_eq!(e.path, "engine.max_lateness");
    }

    /// A spike at 03:00 every day: from the third day the recurrence filter silences the
    /// detectors it names at the spike, and leaves the others alone.
    #[test]
    fn recurring_daily_spike_is_silenced_in_the_named_detectors_only() {
        let config = crate::config::Config::from_toml(
            "[chain]\nring = 1024\ndetectors = [{ kind = \"ewma\" }, { kind = \"ewma\", alpha = 0.1 }]\n[chain.recurrence]\nsilences = [0]",
        )
        .unwrap();
        let plan = config.plan().unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        let mut plain_plan = plan.chains[0].clone();
        plain_plan.recurrence = None;
        let mut plain = ChainGroup::new(&plain_plan);
        plain.add_series();
        let (min, day) = (60_000i64, 86_400_000i64);
        let mut spikes = Vec::new();
        for i in 0..(4 * 288) {
            let t = i * 5 * min;
            let spike = t % day == 3 * 60 * min;
            let noise = ((i * 7919) % 13) as f64 / 130.0;
            let x = if spike { 10.0 } else { 1.0 + noise };
            let out = g.process(s, t, x).unwrap();
            let without = plain.process(s, t, x).unwrap();
            assert_eq!(out.scores[1], without.scores[1], "t = {t}");
            if spike {
                assert!(without.scores[0] > 0.99, "the spike stands out every day");
                spikes.push((t / day, out.scores[0], out.scores[1]));
            } else {
                // Noise of a size seen at the same times before may be silenced too; nothing
                // that stands out is.
                assert!(
                    out.scores[0] == without.scores[0]
                        || (out.scores[0] == 0.0 && without.scores[0] < 0.99),
                    "t = {t}: {} vs {}",
                    out.scores[0],
                    without.scores[0]
                );
            }
        }
        assert_eq!(spikes.len(), 4);
        for (day, first, second) in spikes {
            assert!(
                second > 0.99,
                "day {day}: the unnamed detector still scores ({second})"
            );
            if day >= 2 {
                assert_eq!(first, 0.0, "day {day}: silenced");
            } else {
                assert!(first > 0.99, "day {day}: not yet a habit ({first})");
            }
        }
    }

    /// A series that once spanned 0 to 100 then sits near 50 with wiggles of 0.1: the quiet
    /// filter silences the wiggles in the detector it names and leaves the other alone; a move
    /// of 10 is not quiet.
    #[test]
    fn quiet_points_are_silenced_in_the_named_detectors_only() {
        let config = crate::config::Config::from_toml(
            "[chain]\nring = 64\ndetectors = [{ kind = \"ewma\" }, { kind = \"ewma\", alpha = 0.1 }]\n[chain.quiet]\nshare = 0.01\nsilences = [0]",
        )
        .unwrap();
        let plan = config.plan().unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        let mut plain_plan = plan.chains[0].clone();
        plain_plan.quiet = None;
        let mut plain = ChainGroup::new(&plain_plan);
        plain.add_series();
        let xs = [0.0, 100.0]
            .into_iter()
            .chain((0..300).map(|i| 50.0 + ((i * 7919) % 13) as f64 / 130.0))
            .chain([60.0]);
        let mut silenced = 0;
        for (i, x) in xs.enumerate() {
            let t = i as i64 * 60_000;
            let out = g.process(s, t, x).unwrap();
            let without = plain.process(s, t, x).unwrap();
            assert_eq!(out.scores[1], without.scores[1], "t = {t}");
            if x == 60.0 {
                assert_eq!(
                    out.scores[0], without.scores[0],
                    "a move of 10 is not quiet"
                );
                assert!(out.scores[0] > 0.99);
            } else if out.scores[0] != without.scores[0] {
                assert_eq!(out.scores[0], 0.0);
                silenced += 1;
            }
        }
        assert!(silenced > 100, "the wiggles are quiet: {silenced}");
    }

    /// The holding path learns undoable banks at once and takes the point back when it holds;
    /// this checks it against the plain definition (score every bank without learning, then
    /// learn all of them unless the chain holds), with a bank of each kind.
    #[test]
    fn holding_chain_learns_exactly_what_score_then_learn_would() {
        let config = crate::config::Config::from_toml(
            "[chain]\nhold = true\ndetectors = [{ kind = \"ewma\" }, { kind = \"cusum\" }, { kind = \"robust_z\", window = 16 }, { kind = \"page_hinkley\" }]",
        )
        .unwrap();
        let plan = config.plan().unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let mut reference = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        reference.add_series();
        let mut held = 0;
        for t in 0..2000i64 {
            let noise = ((t * 7919) % 13) as f64 / 13.0 - 0.5;
            let x = if (600..900).contains(&t) { 25.0 } else { 10.0 }
                + noise
                + if t % 97 == 0 { 8.0 } else { 0.0 };
            let got = g.process(s, t, x).unwrap();
            // Reference: score without learning, decide, then learn.
            let r = &mut reference;
            let evicted = r.ring.next_evicted(s);
            let n = r.banks.len();
            let mut scores = [0.0; MAX_DETECTORS];
            for (bank, out) in r.banks.iter_mut().zip(scores.iter_mut()) {
                *out = bank.score_only(s, t, x, evicted).score;
            }
            let score = r.plan.combine.combine(&scores[..n]);
            let hold = r.alert.is_open(s) || score >= r.plan.alert.resolve;
            if hold {
                held += 1;
            } else {
                for bank in r.banks.iter_mut() {
                    bank.update(s, t, x, evicted);
                }
                r.ring.push(s, t, x);
            }
            let transition = r.alert.step(&r.plan.alert, s, t, score, score);
            assert_eq!(got.scores[..n], scores[..n], "t = {t}");
            assert_eq!(got.transition, transition, "t = {t}");
        }
        assert!(
            held > 100,
            "the stream must make the chain hold ({held} held)"
        );
    }

    #[test]
    fn holding_chain_stays_open_through_a_shift_and_resolves_when_it_ends() {
        let config = crate::config::Config::from_toml("[chain]\nhold = true").unwrap();
        let plan = config.plan().unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        let mut states = Vec::new();
        for t in 0..600i64 {
            let noise = ((t * 7919) % 13) as f64 / 13.0 - 0.5;
            let x = if (200..400).contains(&t) { 20.0 } else { 10.0 } + noise;
            if let Some(tr) = g.process(s, t, x).unwrap().transition {
                states.push((t, tr.state));
            }
        }
        use crate::alert::EventState::*;
        assert_eq!(states.len(), 2, "{states:?}");
        assert_eq!(states[0].1, Open);
        assert!((200..205).contains(&states[0].0), "{states:?}");
        assert_eq!(states[1].1, Resolved);
        assert!(
            (400..410).contains(&states[1].0),
            "resolved only once the shift ends: {states:?}"
        );
    }

    #[test]
    fn level_shift_opens_then_resolves() {
        let plan = Config::default().plan().unwrap();
        let mut g = ChainGroup::new(&plan.chains[0]);
        let s = g.add_series();
        let mut states = Vec::new();
        for t in 0..400i64 {
            let noise = ((t * 7919) % 13) as f64 / 13.0 - 0.5;
            let x = if t >= 200 { 20.0 } else { 10.0 } + noise;
            if let Some(tr) = g.process(s, t, x).unwrap().transition {
                states.push((t, tr.state));
            }
        }
        use crate::alert::EventState::*;
        assert_eq!(states.first(), Some(&(200, Open)), "{states:?}");
        assert_eq!(states.last().map(|s| s.1), Some(Resolved), "{states:?}");
        assert!(states.iter().all(|(t, _)| *t >= 200), "{states:?}");
    }
}
