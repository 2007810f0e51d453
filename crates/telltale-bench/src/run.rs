//! Running telltale chains over a NAB-layout corpus through the engine's streaming path: each
//! row is scored by the chain before it is learned (no look-ahead); the probationary rows are
//! learned from like any other and only left out by the scorer.

use std::time::Instant;

use telltale_core::event::EventState;
use telltale_core::key::SeriesKey;
use telltale_engine::Plan;
use telltale_engine::chain::ChainGroup;

use crate::corpus::{Corpus, Series};
use crate::scorer::{ProfileResult, probation, score_corpus, score_corpus_at};

/// Event-level outcome: anomalies opened by the alert state machine against label windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventMetrics {
    /// Opens (after the probationary rows) whose row lies in a window.
    pub true_opens: u64,
    /// Opens (after the probationary rows) outside every window.
    pub false_opens: u64,
    /// Windows with at least one open inside.
    pub windows_hit: u64,
    /// Windows.
    pub windows: u64,
    /// Sum over hit windows of rows from the window start to the first open.
    pub delay_rows: u64,
}

impl EventMetrics {
    /// Share of opens that fall in a window.
    pub fn precision(&self) -> f64 {
        let all = self.true_opens + self.false_opens;
        if all == 0 {
            0.0
        } else {
            self.true_opens as f64 / all as f64
        }
    }
    /// Share of windows with an open.
    pub fn recall(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.windows_hit as f64 / self.windows as f64
        }
    }
    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    /// Mean rows from a window's start to its first open, over hit windows.
    pub fn mean_delay_rows(&self) -> f64 {
        if self.windows_hit == 0 {
            f64::NAN
        } else {
            self.delay_rows as f64 / self.windows_hit as f64
        }
    }
}

/// The result of one chain on a corpus.
#[derive(Debug, Clone)]
pub struct ChainResult {
    /// The chain's label (its configuration's name).
    pub name: String,
    /// Per-row combined scores, one series per corpus file.
    pub scores: Vec<Series>,
    /// Rows of each file where an anomaly was opened.
    pub opens: Vec<Vec<usize>>,
    /// NAB scores per profile (rows ranked by the score that can open an anomaly, at the
    /// threshold NAB's optimiser picks).
    pub nab: Vec<ProfileResult>,
    /// NAB scores per profile of the opened anomalies alone: each `open` a detection at its
    /// row, nothing else (what the chain's alerts are worth at its own threshold).
    pub opens_nab: Vec<ProfileResult>,
    /// Event-level metrics.
    pub events: EventMetrics,
    /// Rows processed.
    pub points: u64,
    /// Seconds spent in the engine (detection only, files already in memory).
    pub seconds: f64,
}

/// Runs `plan` over every file of `corpus` (each file one series, named by its path without
/// `.csv`; rules match on that name) and scores the result.
pub fn run_chain(name: &str, plan: &Plan, corpus: &Corpus) -> ChainResult {
    let start = Instant::now();
    let mut scores = Vec::with_capacity(corpus.files.len());
    let mut opens = Vec::with_capacity(corpus.files.len());
    let mut points = 0u64;
    for f in &corpus.files {
        let key = SeriesKey::new(f.name.trim_end_matches(".csv"), &[]);
        let mut group = ChainGroup::new(&plan.chains[plan.chain_for(&key)]);
        let slot = group.add_series();
        let mut s = Vec::with_capacity(f.values.len());
        let mut o = Vec::new();
        for (i, (&t, &v)) in f.timestamps.iter().zip(&f.values).enumerate() {
            match group.process(slot, t, v) {
                Ok(out) => {
                    s.push(out.rank);
                    if out.transition.is_some_and(|t| t.state == EventState::Open) {
                        o.push(i);
                    }
                }
                Err(_) => s.push(0.0),
            }
        }
        points += f.values.len() as u64;
        scores.push(Series {
            name: f.name.clone(),
            timestamps: f.timestamps.clone(),
            values: s,
            rejected: Vec::new(),
        });
        opens.push(o);
    }
    let seconds = start.elapsed().as_secs_f64();
    let nab = score_corpus(&scores, &corpus.windows);
    let decisions: Vec<Series> = scores
        .iter()
        .zip(&opens)
        .map(|(s, o)| {
            let mut values = vec![0.0; s.values.len()];
            for &i in o {
                values[i] = 1.0;
            }
            Series {
                values,
                ..s.clone()
            }
        })
        .collect();
    let opens_nab = score_corpus_at(&decisions, &corpus.windows, 1.0);
    let events = event_metrics(corpus, &opens);
    ChainResult {
        name: name.to_owned(),
        scores,
        opens,
        nab,
        opens_nab,
        events,
        points,
        seconds,
    }
}

fn event_metrics(corpus: &Corpus, opens: &[Vec<usize>]) -> EventMetrics {
    let mut m = EventMetrics::default();
    for (f, o) in corpus.files.iter().zip(opens) {
        let ws = corpus.windows.get(&f.name).map_or(&[][..], Vec::as_slice);
        let prob = probation(f.timestamps.len());
        let rows: Vec<(usize, usize)> = ws
            .iter()
            .filter_map(|(a, b)| {
                let l = f.timestamps.iter().position(|t| t == a)?;
                let r = f.timestamps.iter().position(|t| t == b)?;
                Some((l, r))
            })
            .collect();
        m.windows += rows.len() as u64;
        for &(l, r) in &rows {
            if let Some(first) = o.iter().find(|&&i| i >= l && i <= r) {
                m.windows_hit += 1;
                m.delay_rows += (first - l) as u64;
            }
        }
        for &i in o.iter().filter(|&&i| i >= prob) {
            if rows.iter().any(|&(l, r)| i >= l && i <= r) {
                m.true_opens += 1;
            } else {
                m.false_opens += 1;
            }
        }
    }
    m
}
