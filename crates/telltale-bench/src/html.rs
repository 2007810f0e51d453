//! The self-contained HTML report: summary tables, and for every file an SVG plot of its values
//! with the label windows shaded and the detections marked, each chain's score trace beneath.
//! No script, no external resource: it opens from disk with the network off.

use std::fmt::Write;

use crate::corpus::Corpus;
use crate::report::SCOREBOARD;
use crate::run::ChainResult;

const WIDTH: f64 = 1100.0;
const VALUE_H: f64 = 140.0;
const SCORE_H: f64 = 46.0;
const MAX_BUCKETS: usize = 1100;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Min/max per pixel column, so that spikes survive downsampling.
fn polyline(values: &[f64], lo: f64, hi: f64, height: f64) -> String {
    let n = values.len().max(1);
    let buckets = n.min(MAX_BUCKETS);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = |v: f64| height - 2.0 - (v - lo) / span * (height - 4.0);
    let mut pts = String::with_capacity(buckets * 24);
    for b in 0..buckets {
        let (s, e) = (
            b * n / buckets,
            ((b + 1) * n / buckets).max(b * n / buckets + 1).min(n),
        );
        let chunk = &values[s..e];
        let (mn, mx) = chunk
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let x = b as f64 / buckets as f64 * WIDTH;
        let _ = write!(pts, "{x:.1},{:.1} {x:.1},{:.1} ", y(mx), y(mn));
    }
    pts
}

fn x_of(i: usize, n: usize) -> f64 {
    i as f64 / n.max(1) as f64 * WIDTH
}

/// Renders the report.
pub fn render(corpus: &Corpus, results: &[ChainResult], command: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>telltale bench report</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff}}
h1{{font-size:22px}} h2{{font-size:18px;margin-top:32px}} h3{{font-size:14px;margin:18px 0 4px}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:right}}
th{{background:#f3f5f7}} td:first-child,th:first-child{{text-align:left}}
svg{{display:block;background:#fbfcfd;border:1px solid #e3e8ee}}
.win{{fill:#f7c948;fill-opacity:.35}} .val{{fill:none;stroke:#2f6fbd;stroke-width:1}}
.score{{fill:none;stroke:#7a4fbf;stroke-width:1}} .thr{{stroke:#c0392b;stroke-dasharray:4 3;stroke-width:1}}
.det{{stroke:#c0392b;stroke-width:1.5}} .open{{fill:#c0392b}} .legend span{{margin-right:16px}}
code{{background:#f3f5f7;padding:1px 4px}}
</style></head><body>
<h1>telltale bench report</h1>
<p>Command: <code>{}</code></p>
"#,
        esc(command)
    );
    // Summary per chain.
    let _ = write!(
        h,
        "<h2>Summary</h2><table><tr><th>chain</th><th>NAB standard</th><th>low FP</th><th>low FN</th>\
         <th>threshold (standard)</th><th>precision</th><th>recall</th><th>F1</th><th>mean delay (rows)</th><th>points/s</th></tr>"
    );
    for r in results {
        let e = &r.events;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.4}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1} M</td></tr>",
            esc(&r.name),
            r.nab[0].normalized,
            r.nab[1].normalized,
            r.nab[2].normalized,
            r.nab[0].threshold,
            e.precision(),
            e.recall(),
            e.f1(),
            e.mean_delay_rows(),
            r.points as f64 / r.seconds.max(1e-9) / 1e6
        );
    }
    h.push_str("</table><p>Published NAB scoreboard (standard): ");
    h.push_str(
        &SCOREBOARD
            .iter()
            .map(|(n, s)| format!("{} {s}", esc(n)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    h.push_str("</p>");
    // Per category: raw NAB score (standard) per chain.
    let mut categories: Vec<&str> = corpus
        .files
        .iter()
        .map(|f| f.name.split('/').next().unwrap_or(""))
        .collect();
    categories.dedup();
    h.push_str("<h2>By category (raw NAB standard score at the global threshold; windows)</h2><table><tr><th>category</th><th>windows</th>");
    for r in results {
        let _ = write!(h, "<th>{}</th>", esc(&r.name));
    }
    h.push_str("</tr>");
    for c in &categories {
        let windows: usize = corpus
            .files
            .iter()
            .filter(|f| f.name.starts_with(&format!("{c}/")))
            .map(|f| corpus.windows.get(&f.name).map_or(0, Vec::len))
            .sum();
        let _ = write!(h, "<tr><td>{}</td><td>{windows}</td>", esc(c));
        for r in results {
            let raw: f64 = r.nab[0]
                .files
                .iter()
                .filter(|(n, _)| n.starts_with(&format!("{c}/")))
                .map(|(_, s)| s.score)
                .sum();
            let _ = write!(h, "<td>{raw:.2}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    // Per file plots.
    h.push_str(
        "<h2>Files</h2><p class=\"legend\"><span>blue: values</span><span>yellow: label windows</span>\
         <span>purple: chain score (0–1)</span><span>red dashes: NAB standard threshold</span>\
         <span>red ticks: rows at or above it</span><span>red dots: anomalies opened</span></p>",
    );
    for (fi, f) in corpus.files.iter().enumerate() {
        let n = f.values.len();
        let (lo, hi) = f
            .values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let _ = write!(
            h,
            "<h3 id=\"f{fi}\">{} <small>({n} rows)</small></h3>",
            esc(&f.name)
        );
        let windows = corpus.windows.get(&f.name).map_or(&[][..], Vec::as_slice);
        let win_rects: String = windows
            .iter()
            .filter_map(|(a, b)| {
                let l = f.timestamps.iter().position(|t| t == a)?;
                let r = f.timestamps.iter().position(|t| t == b)?;
                Some((x_of(l, n), x_of(r + 1, n)))
            })
            .map(|(x0, x1)| {
                format!(
                    "<rect class=\"win\" x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"100%\"/>",
                    (x1 - x0).max(1.0)
                )
            })
            .collect();
        let _ = write!(
            h,
            "<svg width=\"{WIDTH}\" height=\"{VALUE_H}\" viewBox=\"0 0 {WIDTH} {VALUE_H}\">{win_rects}<polyline class=\"val\" points=\"{}\"/></svg>",
            polyline(&f.values, lo, hi, VALUE_H)
        );
        for r in results {
            let scores = &r.scores[fi].values;
            let thr = r.nab[0].threshold;
            let ty = SCORE_H - 2.0 - thr.min(1.0) * (SCORE_H - 4.0);
            let mut marks = String::new();
            let mut last_x = -1.0;
            for (i, s) in scores.iter().enumerate() {
                if *s >= thr {
                    let x = x_of(i, n);
                    if x - last_x >= 1.0 {
                        let _ = write!(
                            marks,
                            "<line class=\"det\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"6\"/>"
                        );
                        last_x = x;
                    }
                }
            }
            for &i in &r.opens[fi] {
                let _ = write!(
                    marks,
                    "<circle class=\"open\" cx=\"{:.1}\" cy=\"10\" r=\"2.5\"/>",
                    x_of(i, n)
                );
            }
            let _ = write!(
                h,
                "<svg width=\"{WIDTH}\" height=\"{SCORE_H}\" viewBox=\"0 0 {WIDTH} {SCORE_H}\" aria-label=\"{}\">{win_rects}\
                 <line class=\"thr\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/><polyline class=\"score\" points=\"{}\"/>{marks}\
                 <text x=\"4\" y=\"{:.0}\" font-size=\"10\" fill=\"#555\">{}</text></svg>",
                esc(&r.name),
                polyline(scores, 0.0, 1.0, SCORE_H),
                SCORE_H - 4.0,
                esc(&r.name)
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}
