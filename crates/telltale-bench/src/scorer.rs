//! The NAB v1.1 scoring rules (nab/sweeper.py, optimizer.py, scorer.py), ported operation by
//! operation so that the official totals are reproduced:
//!
//! - the first `min(floor(0.15·n), 750)` rows of a file are probationary: never scored;
//! - inside a window `[l, r]` of width `w` rows, a detection at row `i` is worth
//!   `A_TP · σ(−(r − i + 1)/w) / σ(−1)` with `σ(y) = 2/(1 + e^{5y}) − 1`; a window counts once,
//!   with its earliest detection; a window with none costs `−A_FN`;
//! - a detection outside every window costs `A_FP · σ(|i − r'|/(w' − 1))` after a window
//!   (`r'`, `w'` the previous window; σ is −1 past 3) and `−A_FP` before the first;
//! - one global threshold per detector and profile: the rows of all files pooled, every distinct
//!   score tried (and 1.1, no detection), the best total kept (ties: the highest threshold);
//! - normalised score `100 · (S − S_null)/(S_perfect − S_null)`, `S_null = −A_FN · windows`,
//!   `S_perfect = A_TP · windows`.

use crate::corpus::{Series, Windows};

/// A cost profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Name, as in NAB's `config/profiles.json`.
    pub name: &'static str,
    /// Weight of a true positive.
    pub tp: f64,
    /// Weight of a false negative.
    pub fn_: f64,
    /// Weight of a false positive.
    pub fp: f64,
}

/// NAB's three profiles.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fn_: 1.0,
        fp: 0.11,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fn_: 1.0,
        fp: 0.22,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fn_: 2.0,
        fp: 0.11,
    },
];

/// NAB's `scaledSigmoid`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 * (1.0 / (1.0 + (-(-5.0 * y)).exp())) - 1.0
    }
}

/// Rows scored before this index are probationary.
pub fn probation(n: usize) -> usize {
    ((0.15 * n as f64).floor()).min(0.15 * 5000.0) as usize
}

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// In the probationary period: not scored.
    Probationary,
    /// Outside every window.
    Outside,
    /// In the window with this corpus-wide index.
    Window(u32),
}

/// One row with its anomaly score and its sweep score (what a detection there is worth).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// The detector's anomaly score.
    pub score: f64,
    /// Value of a detection at this row under the profile.
    pub sweep: f64,
    /// Window membership.
    pub tag: Tag,
}

/// NAB's `calcSweepScore`: the rows of one file. Windows get ids `first_window..`.
pub fn sweep_rows(
    timestamps: &[i64],
    scores: &[f64],
    windows: &[(i64, i64)],
    first_window: u32,
    p: &Profile,
) -> Vec<Row> {
    assert_eq!(timestamps.len(), scores.len(), "one score per row");
    let max_tp = scaled_sigmoid(-1.0);
    let prob = probation(timestamps.len());
    let index_of = |t: i64| timestamps.iter().position(|x| *x == t);
    let mut next = 0usize;
    // (right index, width, id) of the window we are in; (right index, width) of the last one.
    let mut cur: Option<(usize, f64, u32, i64)> = None;
    let mut prev: Option<(usize, f64)> = None;
    let mut rows = Vec::with_capacity(timestamps.len());
    for (i, (&t, &score)) in timestamps.iter().zip(scores).enumerate() {
        if next < windows.len() && t == windows[next].0 {
            let (l, r) = windows[next];
            let right = index_of(r).expect("window end is a row timestamp");
            let left = index_of(l).expect("window start is a row timestamp");
            cur = Some((
                right,
                (right - left + 1) as f64,
                first_window + next as u32,
                r,
            ));
            next += 1;
        }
        let sweep = match (cur, prev) {
            (Some((right, width, _, _)), _) => {
                let position = -((right as f64) - (i as f64) + 1.0) / width;
                scaled_sigmoid(position) * p.tp / max_tp
            }
            (None, None) => -p.fp,
            (None, Some((pr, pw))) => {
                let position = (pr as f64 - i as f64).abs() / (pw - 1.0);
                scaled_sigmoid(position) * p.fp
            }
        };
        let tag = if i < prob {
            Tag::Probationary
        } else {
            cur.map_or(Tag::Outside, |c| Tag::Window(c.2))
        };
        rows.push(Row { score, sweep, tag });
        if let Some((right, width, _, end)) = cur
            && t == end
        {
            prev = Some((right, width));
            cur = None;
        }
    }
    rows
}

/// The score of one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    /// Threshold: rows with `score >= threshold` are detections.
    pub threshold: f64,
    /// Raw (unnormalised) score.
    pub score: f64,
    /// Detections inside windows.
    pub tp: u64,
    /// Non-detections outside windows.
    pub tn: u64,
    /// Detections outside windows.
    pub fp: u64,
    /// Non-detections inside windows.
    pub fn_: u64,
}

/// NAB's `calcScoreByThreshold`: the score at every distinct anomaly score, highest first.
pub fn scores_by_threshold(rows: &[Row], p: &Profile) -> Vec<ThresholdScore> {
    let mut scorable: Vec<&Row> = rows.iter().filter(|r| r.tag != Tag::Probationary).collect();
    // A stable sort, highest score first, as Python's `sort(reverse=True)`.
    scorable.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut tn = scorable.iter().filter(|r| r.tag == Tag::Outside).count() as u64;
    let mut fn_ = scorable.len() as u64 - tn;
    let (mut tp, mut fp) = (0u64, 0u64);
    // Window parts in order of first appearance in the sorted list (Python dict order), after
    // the false-positive part: the sum is taken in that order, as NAB does.
    let mut slot_of = std::collections::HashMap::new();
    let mut parts: Vec<f64> = vec![0.0];
    for r in &scorable {
        if let Tag::Window(w) = r.tag {
            slot_of.entry(w).or_insert_with(|| {
                parts.push(-p.fn_);
                parts.len() - 1
            });
        }
    }
    let total = |parts: &[f64]| parts.iter().fold(0.0, |a, b| a + b);
    let mut out = Vec::new();
    // NAB starts at 1.1 (no detection), above every score in [0, 1]; scores of other ranges
    // start just above their highest.
    let mut threshold = match scorable.first() {
        Some(r) if r.score >= 1.1 => r.score + 1.0,
        _ => 1.1,
    };
    for r in scorable {
        if r.score != threshold {
            out.push(ThresholdScore {
                threshold,
                score: total(&parts),
                tp,
                tn,
                fp,
                fn_,
            });
            threshold = r.score;
        }
        match r.tag {
            Tag::Window(w) => {
                tp += 1;
                fn_ -= 1;
                let s = slot_of[&w];
                parts[s] = parts[s].max(r.sweep);
            }
            _ => {
                fp += 1;
                tn -= 1;
                parts[0] += r.sweep;
            }
        }
    }
    out.push(ThresholdScore {
        threshold,
        score: total(&parts),
        tp,
        tn,
        fp,
        fn_,
    });
    out
}

/// NAB's optimiser: the best threshold for rows pooled over a corpus (ties: the highest).
pub fn best_threshold(pooled: &[Row], p: &Profile) -> ThresholdScore {
    scores_by_threshold(pooled, p)
        .into_iter()
        .fold(None::<ThresholdScore>, |best, s| match best {
            Some(b) if b.score >= s.score => Some(b),
            _ => Some(s),
        })
        .expect("at least the no-detection threshold")
}

/// NAB's `scoreDataSet`: one file's score at `threshold`.
pub fn score_at(rows: &[Row], threshold: f64, p: &Profile) -> ThresholdScore {
    let all = scores_by_threshold(rows, p);
    let mut prev: Option<ThresholdScore> = None;
    for s in &all {
        if s.threshold == threshold {
            return *s;
        }
        if s.threshold < threshold {
            // Above the file's first threshold (no detection) when the file's scores are all
            // below the corpus's highest.
            return prev.unwrap_or(*s);
        }
        prev = Some(*s);
    }
    *all.last().expect("non-empty")
}

/// The outcome of scoring a detector on a corpus under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// Profile name.
    pub profile: &'static str,
    /// The global threshold.
    pub threshold: f64,
    /// Sum of the files' raw scores at that threshold.
    pub raw: f64,
    /// Normalised score (null detector 0, perfect 100).
    pub normalized: f64,
    /// Per file: name and raw score.
    pub files: Vec<(String, ThresholdScore)>,
}

/// Scores per-row anomaly scores (`scores[i]` aligned with `files[i]`) under every profile, at
/// the threshold NAB's optimiser picks for each.
pub fn score_corpus(scored: &[Series], windows: &Windows) -> Vec<ProfileResult> {
    score_corpus_with(scored, windows, None)
}

/// Scores per-row anomaly scores at one given threshold under every profile (rows at or above
/// it are detections): for a detector whose rows are already decisions, such as 1 where an
/// anomaly was opened and 0 elsewhere.
pub fn score_corpus_at(scored: &[Series], windows: &Windows, threshold: f64) -> Vec<ProfileResult> {
    score_corpus_with(scored, windows, Some(threshold))
}

fn score_corpus_with(
    scored: &[Series],
    windows: &Windows,
    threshold: Option<f64>,
) -> Vec<ProfileResult> {
    let n_windows: usize = scored
        .iter()
        .map(|s| windows.get(&s.name).map_or(0, Vec::len))
        .sum();
    PROFILES
        .iter()
        .map(|p| {
            let mut first = 0u32;
            let per_file: Vec<Vec<Row>> = scored
                .iter()
                .map(|s| {
                    let ws = windows.get(&s.name).map_or(&[][..], Vec::as_slice);
                    let rows = sweep_rows(&s.timestamps, &s.values, ws, first, p);
                    first += ws.len() as u32;
                    rows
                })
                .collect();
            let pooled: Vec<Row> = per_file.iter().flatten().copied().collect();
            let best = match threshold {
                None => best_threshold(&pooled, p),
                Some(t) => score_at(&pooled, t, p),
            };
            let files: Vec<(String, ThresholdScore)> = scored
                .iter()
                .zip(&per_file)
                .map(|(s, rows)| (s.name.clone(), score_at(rows, best.threshold, p)))
                .collect();
            let raw = files.iter().map(|(_, s)| s.score).sum::<f64>();
            let null = -p.fn_ * n_windows as f64;
            let perfect = p.tp * n_windows as f64;
            ProfileResult {
                profile: p.name,
                threshold: best.threshold,
                raw,
                normalized: 100.0 * (raw - null) / (perfect - null),
                files,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Profile = PROFILES[0];

    #[test]
    fn scaled_sigmoid_known_values() {
        assert!((scaled_sigmoid(0.0) - 0.0).abs() < 1e-15);
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        assert_eq!(probation(1000), 150);
        assert_eq!(probation(10_000), 750);
    }

    #[test]
    fn hand_computed_file() {
        // 20 rows, probation = 3; one window over rows 10..=13 (width 4).
        let ts: Vec<i64> = (0..20).collect();
        let mut scores = vec![0.0; 20];
        scores[11] = 0.9; // detection 3 rows before the window's end: y = -(13-11+1)/4 = -0.75
        scores[17] = 0.8; // false positive 4 rows after the window: y = 4/3
        let rows = sweep_rows(&ts, &scores, &[(10, 13)], 0, &P);
        assert_eq!(rows[2].tag, Tag::Probationary);
        assert_eq!(rows[11].tag, Tag::Window(0));
        let tp = scaled_sigmoid(-0.75) / scaled_sigmoid(-1.0);
        let fp = scaled_sigmoid(4.0 / 3.0) * 0.11;
        assert!((rows[11].sweep - tp).abs() < 1e-15);
        assert!((rows[17].sweep - fp).abs() < 1e-15);
        // threshold 0.85: only the TP; 0.8: TP + FP; 1.1: the window is missed
        assert!((score_at(&rows, 0.9, &P).score - tp).abs() < 1e-12);
        assert!((score_at(&rows, 0.8, &P).score - (tp + fp)).abs() < 1e-12);
        assert_eq!(score_at(&rows, 1.1, &P).score, -1.0);
        // the FP only costs: the best threshold keeps the TP alone
        let best = best_threshold(&rows, &P);
        assert_eq!(best.threshold, 0.9);
        assert_eq!((best.tp, best.fp), (1, 0));
    }

    #[test]
    fn scores_above_one_are_scored_like_their_scaled_copy() {
        let ts: Vec<i64> = (0..20).collect();
        let mut scores = vec![0.0; 20];
        scores[11] = 0.9;
        scores[17] = 0.8;
        let scaled: Vec<f64> = scores.iter().map(|s| s * 3.0).collect();
        let rows = sweep_rows(&ts, &scores, &[(10, 13)], 0, &P);
        let rows3 = sweep_rows(&ts, &scaled, &[(10, 13)], 0, &P);
        let (best, best3) = (best_threshold(&rows, &P), best_threshold(&rows3, &P));
        assert_eq!(best.score, best3.score);
        assert!((best3.threshold - 2.7).abs() < 1e-12);
        assert_eq!(score_at(&rows3, 2.7, &P).score, best.score);
        // no detection is still a threshold: above the highest score
        assert_eq!(scores_by_threshold(&rows3, &P)[0].score, -1.0);
        // a threshold above all of a file's scores (another file's were higher): no detection
        assert_eq!(score_at(&rows, 5.0, &P).score, -1.0);
    }
}
