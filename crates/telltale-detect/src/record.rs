//! The record a rank detector's newest nonconformity is judged against when its calibration is
//! a span of time (`calibration = "8d"`): the largest nonconformity of that span, kept as the
//! maxima of 16 equal sub-spans, 76 bytes whatever the sampling rate.
//!
//! A conformal rank among the last `n` nonconformities is 1 exactly when the new one is above
//! them all; that is the score that opens an anomaly. The record gives the same verdict for the
//! nonconformities of the last span (to within one sub-span at its far end) without keeping
//! them: above the record scores 1, up to it the score is 0.99 × the share of the record it
//! reaches (so only a new record can pass an opening threshold above 0.99). With `exceed` above
//! 1, a new record must beat the old one that many times over: the record of a few days is a
//! noisy estimate of how far a normal shape can be, and a shape that only just beats it is
//! rarely an anomaly.
//! No score until the record has 10 values and covers a tenth of the span.

use serde::{Deserialize, Serialize};

/// Sub-spans kept.
const SLOTS: usize = 16;

/// The maxima of the sub-spans of the last span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Largest nonconformity of each sub-span, the newest at `head`.
    pub maxima: [f32; SLOTS],
    /// Index of the newest sub-span.
    pub head: u8,
    /// Start of the newest sub-span (ms), a multiple of the sub-span.
    pub start: i64,
    /// Nonconformities remembered so far (saturating).
    pub seen: u32,
    /// Timestamp of the first one.
    pub first: i64,
}

impl Record {
    fn slot_ms(span_ms: i64) -> i64 {
        (span_ms / SLOTS as i64).max(1)
    }

    /// The largest remembered nonconformity of the sub-spans that still overlap the span
    /// ending at `ts`.
    fn high(&self, span_ms: i64, ts: i64) -> f32 {
        let len = Self::slot_ms(span_ms);
        let behind = (ts.div_euclid(len) * len - self.start).max(0) / len;
        if behind >= SLOTS as i64 {
            return 0.0;
        }
        // Slots older than the span (those the next `behind` advances would clear) do not count.
        let live = SLOTS - behind as usize;
        (0..live)
            .map(|k| self.maxima[(usize::from(self.head) + SLOTS - k) % SLOTS])
            .fold(0.0, f32::max)
    }

    /// The score of `alpha` at `ts`: 1 when it beats the record of the span `exceed` times
    /// over (1: any new record), else 0.99 × the share of that bar it reaches; 0 while the
    /// record is too young.
    pub fn score(&self, span_ms: i64, ts: i64, alpha: f32, exceed: f64) -> f64 {
        if self.seen < 10 || ts.saturating_sub(self.first) < span_ms / 10 {
            return 0.0;
        }
        let high = self.high(span_ms, ts) * exceed as f32;
        if alpha > high {
            1.0
        } else if high > 0.0 {
            (0.99 * f64::from(alpha / high)).min(0.99)
        } else {
            0.0
        }
    }

    /// Remembers `alpha` at `ts` (non-decreasing).
    pub fn remember(&mut self, span_ms: i64, ts: i64, alpha: f32) {
        let len = Self::slot_ms(span_ms);
        let start = ts.div_euclid(len) * len;
        if self.seen == 0 {
            self.start = start;
            self.first = ts;
        }
        let steps = (start - self.start) / len;
        if steps > 0 {
            for _ in 0..steps.min(SLOTS as i64) {
                self.head = ((usize::from(self.head) + 1) % SLOTS) as u8;
                self.maxima[usize::from(self.head)] = 0.0;
            }
            self.start = start;
        }
        let h = usize::from(self.head);
        self.maxima[h] = self.maxima[h].max(alpha);
        self.seen = self.seen.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: above every nonconformity of the last span, or the share of its largest.
    fn plain(past: &[(i64, f32)], span: i64, ts: i64, alpha: f32) -> f64 {
        let high = past
            .iter()
            .filter(|(t, _)| *t > ts - span)
            .map(|(_, a)| *a)
            .fold(0.0, f32::max);
        if alpha > high {
            1.0
        } else {
            (0.99 * f64::from(alpha / high)).min(0.99)
        }
    }

    #[test]
    fn the_record_agrees_with_the_span_it_stands_for_to_within_a_sub_span() {
        let span = 16 * 3_600_000i64;
        let mut r = Record::default();
        let mut past = Vec::new();
        let mut agreed = 0;
        for i in 0..5000i64 {
            // Irregular steps of 1 to 30 minutes; a pattern of nonconformities with rare highs.
            let ts = i * 600_000 + (i * 7919 % 30) * 60_000;
            let alpha = ((i * 104_729 % 1000) as f32 / 100.0).powi(2);
            if i >= 200 {
                let got = r.score(span, ts, alpha, 1.0);
                // The record covers the span less at most one sub-span (an hour) at its far end.
                let whole = plain(&past, span, ts, alpha);
                let short = plain(&past, span - 3_600_000, ts, alpha);
                assert!(
                    got >= whole - 1e-6 && got <= short + 1e-6,
                    "{i}: {got} {whole} {short}"
                );
                agreed += usize::from(got == whole);
            }
            r.remember(span, ts, alpha);
            past.push((ts, alpha));
        }
        assert!(agreed > 4000, "{agreed}");
    }

    #[test]
    fn a_gap_longer_than_the_span_forgets_everything_and_youth_scores_nothing() {
        let span = 86_400_000;
        let mut r = Record::default();
        // A tenth of the span is 144 minutes.
        for i in 0..144 {
            assert_eq!(r.score(span, i * 60_000, 5.0, 1.0), 0.0, "too young");
            r.remember(span, i * 60_000, 5.0);
        }
        let now = 144 * 60_000;
        assert_eq!(
            r.score(span, now, 5.0, 1.0),
            0.99,
            "equal to the record is no record"
        );
        assert_eq!(r.score(span, now, 6.0, 1.0), 1.0);
        assert!((r.score(span, now, 2.5, 1.0) - 0.495).abs() < 1e-6);
        // Beating it by a quarter is needed with exceed = 1.25.
        assert!((r.score(span, now, 6.0, 1.25) - 0.99 * 6.0 / 6.25).abs() < 1e-6);
        assert_eq!(r.score(span, now, 6.3, 1.25), 1.0);
        // Two days later the old record no longer counts.
        assert_eq!(r.score(span, 3 * span, 0.1, 1.0), 1.0);
    }
}
