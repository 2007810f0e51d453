//! The alert state machine, per series, in struct-of-arrays form: `open` after enough
//! consecutive high scores (and not during a cooldown), `update` when an open anomaly becomes
//! critical, `resolved` after enough consecutive low scores. `open` and `resolve` thresholds
//! differ (hysteresis) so a score hovering near one level does not flap. A score of exactly 1
//! (certainty: a drift detector's alarm) opens at once, whatever `min_points` says. Opening
//! reads the score after the chain's suppression of repeated alarms; resolving and severity
//! read the score itself, so an open anomaly resolves only when the series is back.

pub use telltale_core::event::{EventState, Severity};

use crate::config::AlertParams;

/// A state change of one series' alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// What happened.
    pub state: EventState,
    /// Timestamp of the first high point of this anomaly (the event id derives from it).
    pub onset: i64,
    /// Severity after the change.
    pub severity: Severity,
}

const NORMAL: u8 = 0;
const OPEN: u8 = 1;

/// One series' alert state (see [`AlertBank::export`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertState {
    state: u8,
    severity: u8,
    above: u32,
    below: u32,
    run_start: i64,
    onset: i64,
    quiet_until: i64,
}

/// Alert state of many series.
#[derive(Debug, Clone, Default)]
pub struct AlertBank {
    state: Vec<u8>,
    severity: Vec<u8>,
    above: Vec<u32>,
    below: Vec<u32>,
    run_start: Vec<i64>,
    onset: Vec<i64>,
    quiet_until: Vec<i64>,
}

fn severity_of(p: &AlertParams, score: f64) -> Severity {
    if score >= p.critical {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

impl AlertBank {
    /// Adds a series in the normal state; returns its slot.
    pub fn add_series(&mut self) -> usize {
        self.state.push(NORMAL);
        self.severity.push(0);
        self.above.push(0);
        self.below.push(0);
        self.run_start.push(0);
        self.onset.push(0);
        self.quiet_until.push(i64::MIN);
        self.state.len() - 1
    }

    /// Bytes of state per series.
    pub fn bytes_per_series() -> usize {
        2 + 2 * size_of::<u32>() + 3 * size_of::<i64>()
    }

    /// One series' alert state, for a snapshot.
    pub fn export(&self, slot: usize) -> AlertState {
        AlertState {
            state: self.state[slot],
            severity: self.severity[slot],
            above: self.above[slot],
            below: self.below[slot],
            run_start: self.run_start[slot],
            onset: self.onset[slot],
            quiet_until: self.quiet_until[slot],
        }
    }

    /// Overwrites one series' alert state from a snapshot.
    pub fn import(&mut self, slot: usize, a: &AlertState) {
        self.state[slot] = a.state;
        self.severity[slot] = a.severity;
        self.above[slot] = a.above;
        self.below[slot] = a.below;
        self.run_start[slot] = a.run_start;
        self.onset[slot] = a.onset;
        self.quiet_until[slot] = a.quiet_until;
    }

    /// Whether the series has an open anomaly.
    pub fn is_open(&self, slot: usize) -> bool {
        self.state[slot] == OPEN
    }

    /// Feeds one combined score observed at `ts`, and what is left of it after the chain's
    /// suppression of repeated alarms (`rank`, which opens; `score` resolves); returns the
    /// transition, if any.
    #[inline]
    pub fn step(
        &mut self,
        p: &AlertParams,
        slot: usize,
        ts: i64,
        score: f64,
        rank: f64,
    ) -> Option<Transition> {
        if self.state[slot] == NORMAL {
            let score = rank;
            if score >= p.open {
                if self.above[slot] == 0 {
                    self.run_start[slot] = ts;
                }
                self.above[slot] = self.above[slot].saturating_add(1);
                // A score of exactly 1 is certainty (a drift detector's alarm, or a deviation
                // beyond ~8 sigma): it opens without waiting for `min_points`.
                let enough = self.above[slot] >= p.min_points || score >= 1.0;
                if enough && ts >= self.quiet_until[slot] {
                    let severity = severity_of(p, score);
                    self.state[slot] = OPEN;
                    self.severity[slot] = severity as u8;
                    self.onset[slot] = self.run_start[slot];
                    self.below[slot] = 0;
                    return Some(Transition {
                        state: EventState::Open,
                        onset: self.onset[slot],
                        severity,
                    });
                }
            } else {
                self.above[slot] = 0;
            }
            return None;
        }
        let current = if self.severity[slot] == Severity::Critical as u8 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        if score < p.resolve {
            self.below[slot] += 1;
            if self.below[slot] >= p.resolve_points {
                self.state[slot] = NORMAL;
                self.above[slot] = 0;
                self.quiet_until[slot] = ts.saturating_add(p.cooldown_ms);
                return Some(Transition {
                    state: EventState::Resolved,
                    onset: self.onset[slot],
                    severity: current,
                });
            }
        } else {
            self.below[slot] = 0;
            if current == Severity::Warning && score >= p.critical {
                self.severity[slot] = Severity::Critical as u8;
                return Some(Transition {
                    state: EventState::Update,
                    onset: self.onset[slot],
                    severity: Severity::Critical,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(min_points: u32, resolve_points: u32, cooldown_ms: i64) -> AlertParams {
        AlertParams {
            open: 0.99,
            resolve: 0.9,
            critical: 0.999,
            min_points,
            resolve_points,
            cooldown_ms,
        }
    }

    fn run(p: &AlertParams, scores: &[f64]) -> Vec<(usize, EventState, i64, Severity)> {
        let mut b = AlertBank::default();
        b.add_series();
        scores
            .iter()
            .enumerate()
            .filter_map(|(t, s)| {
                b.step(p, 0, t as i64 * 10, *s, *s)
                    .map(|tr| (t, tr.state, tr.onset, tr.severity))
            })
            .collect()
    }

    #[test]
    fn opens_after_min_points_with_onset_at_first_high_point() {
        let p = params(2, 1, 0);
        let got = run(&p, &[0.1, 0.995, 0.1, 0.995, 0.995, 0.995]);
        assert_eq!(got, vec![(4, EventState::Open, 30, Severity::Warning)]);
    }

    #[test]
    fn certain_score_opens_without_waiting_for_min_points() {
        let p = params(3, 1, 0);
        let got = run(&p, &[0.1, 1.0]);
        assert_eq!(got, vec![(1, EventState::Open, 10, Severity::Critical)]);
    }

    #[test]
    fn hysteresis_keeps_it_open_between_resolve_and_open() {
        let p = params(1, 2, 0);
        // 0.95 is below open but above resolve: stays open; two points below 0.9 resolve.
        let got = run(&p, &[0.995, 0.95, 0.95, 0.5, 0.95, 0.5, 0.5, 0.5]);
        assert_eq!(
            got,
            vec![
                (0, EventState::Open, 0, Severity::Warning),
                (6, EventState::Resolved, 0, Severity::Warning),
            ]
        );
    }

    #[test]
    fn escalation_emits_one_update() {
        let p = params(1, 1, 0);
        let got = run(&p, &[0.995, 0.9999, 0.9999, 0.1]);
        assert_eq!(
            got,
            vec![
                (0, EventState::Open, 0, Severity::Warning),
                (1, EventState::Update, 0, Severity::Critical),
                (3, EventState::Resolved, 0, Severity::Critical),
            ]
        );
    }

    #[test]
    fn cooldown_delays_a_reopen_in_event_time() {
        let p = params(1, 1, 25);
        // resolved at t=1 (ts 10): quiet until ts 35, so the high point at ts 20 and 30 wait,
        // and the anomaly opens at ts 40 with its onset at ts 20.
        let got = run(&p, &[0.995, 0.1, 0.995, 0.995, 0.995]);
        assert_eq!(
            got,
            vec![
                (0, EventState::Open, 0, Severity::Warning),
                (1, EventState::Resolved, 0, Severity::Warning),
                (4, EventState::Open, 20, Severity::Warning),
            ]
        );
    }
}
