//! Reading a NAB-layout corpus, its label windows, and per-row anomaly scores produced by
//! other detectors (`<results>/<detector>/<category>/<name>.csv` with `timestamp,anomaly_score`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use telltale_core::time::parse_rfc3339;

use crate::BenchError;

/// One file's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Path relative to the data folder, `/`-separated (`realKnownCause/nyc_taxi.csv`).
    pub name: String,
    /// Timestamps, ms since the epoch.
    pub timestamps: Vec<i64>,
    /// Values (for data files) or anomaly scores (for results files).
    pub values: Vec<f64>,
    /// Rows that could not be used, as `line N: <reason>: `text``, with replay's reason codes
    /// (`malformed`, `bad_timestamp`, `non_finite_value`, `out_of_order`, and `duplicate` for
    /// a timestamp already read): left out, never fatal. Leaving out a repeated timestamp
    /// keeps its first occurrence, the row NAB's scorer finds a window edge at.
    pub rejected: Vec<String>,
}

/// Label windows per file: inclusive `[start, end]` timestamps in ms.
pub type Windows = BTreeMap<String, Vec<(i64, i64)>>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> BenchError {
    BenchError::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads `labels/combined_windows.json`.
pub fn read_windows(path: &Path) -> Result<Windows, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let raw: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_str(&text).map_err(|e| format_err(path, e.to_string()))?;
    raw.into_iter()
        .map(|(file, ws)| {
            let ws = ws
                .iter()
                .map(|[a, b]| match (parse_rfc3339(a), parse_rfc3339(b)) {
                    (Some(a), Some(b)) => Ok((a, b)),
                    _ => Err(format_err(path, format!("{file}: bad window [{a}, {b}]"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((file, ws))
        })
        .collect()
}

/// Which rows of a file are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// A series to run a chain over: a row whose timestamp repeats or goes back is left out
    /// (its first occurrence stays), as replay would not score it.
    Series,
    /// Per-row scores produced elsewhere: every readable row is kept, aligned with the data
    /// file's rows as NAB's scorer reads them.
    Scores,
}

/// Reads one CSV file with a header naming `timestamp` and the value column `column`.
pub fn read_csv(path: &Path, name: String, column: &str, rows: Rows) -> Result<Series, BenchError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| format_err(path, "empty file"))?
        .split(',')
        .map(str::trim)
        .collect();
    let find = |c: &str| {
        header
            .iter()
            .position(|h| *h == c)
            .ok_or_else(|| format_err(path, format!("no `{c}` column in the header")))
    };
    let (ti, vi) = (find("timestamp")?, find(column)?);
    let mut s = Series {
        name,
        timestamps: Vec::new(),
        values: Vec::new(),
        rejected: Vec::new(),
    };
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let t = fields.get(ti).map(|t| parse_rfc3339(t.trim()));
        let v = fields.get(vi).map(|v| v.trim().parse::<f64>().ok());
        let last = s
            .timestamps
            .last()
            .copied()
            .filter(|_| rows == Rows::Series);
        let reason = match (t, v) {
            (None, _) | (_, None) => Some("malformed"),
            (Some(None), _) => Some("bad_timestamp"),
            (_, Some(v)) if !v.is_some_and(f64::is_finite) => Some("non_finite_value"),
            (Some(Some(t)), _) if last == Some(t) => Some("duplicate"),
            (Some(Some(t)), _) if last.is_some_and(|l| t < l) => Some("out_of_order"),
            _ => None,
        };
        match (reason, t, v) {
            (None, Some(Some(t)), Some(Some(v))) => {
                s.timestamps.push(t);
                s.values.push(v);
            }
            (r, ..) => s.rejected.push(format!(
                "line {}: {}: `{line}`",
                n + 2,
                r.unwrap_or("malformed")
            )),
        }
    }
    Ok(s)
}

fn walk_csv(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BenchError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_csv(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "csv") {
            out.push(p);
        }
    }
    Ok(())
}

/// Every `*.csv` below `dir`, read with `column` as the value, named by relative path.
pub fn read_tree(dir: &Path, column: &str, rows: Rows) -> Result<Vec<Series>, BenchError> {
    let mut files = Vec::new();
    walk_csv(dir, &mut files)?;
    files
        .iter()
        .map(|f| {
            let rel = f
                .strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .replace('\\', "/");
            read_csv(f, rel, column, rows)
        })
        .collect()
}

/// A NAB-layout corpus: `data/` and `labels/combined_windows.json`.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The data files, in path order.
    pub files: Vec<Series>,
    /// Their label windows.
    pub windows: Windows,
}

impl Corpus {
    /// Reads a corpus folder (rows that cannot be read are left out and listed in each
    /// series' `rejected`).
    pub fn read(root: &Path) -> Result<Self, BenchError> {
        let files = read_tree(&root.join("data"), "value", Rows::Series)?;
        let windows = read_windows(&root.join("labels/combined_windows.json"))?;
        if files.is_empty() {
            return Err(format_err(root, "no data/<category>/<name>.csv files"));
        }
        Ok(Self { files, windows })
    }
}

#[cfg(test)]
mod rejected_rows {
    use super::*;

    #[test]
    fn repeated_and_unordered_timestamps_are_left_out_with_their_reason() {
        let dir = std::env::temp_dir().join(format!("telltale-corpus-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("series.csv");
        std::fs::write(
            &f,
            "timestamp,value\n2018-06-23 07:00:00,1\n2018-06-23 07:05:00,2\n2018-06-23 07:05:00,3\n2018-06-23 07:01:00,4\n2018-06-23 07:10:00,inf\nsoon,5\n2018-06-23 07:15:00,6\n",
        )
        .unwrap();
        let s = read_csv(&f, "series.csv".into(), "value", Rows::Series).unwrap();
        assert_eq!(
            s.values,
            vec![1.0, 2.0, 6.0],
            "the first occurrence is kept"
        );
        let reasons: Vec<&str> = s
            .rejected
            .iter()
            .map(|r| r.split(": ").nth(1).unwrap())
            .collect();
        assert_eq!(
            reasons,
            vec![
                "duplicate",
                "out_of_order",
                "non_finite_value",
                "bad_timestamp"
            ]
        );
        // Scores produced elsewhere keep every readable row.
        let scores = read_csv(&f, "series.csv".into(), "value", Rows::Scores).unwrap();
        assert_eq!(scores.values, vec![1.0, 2.0, 3.0, 4.0, 6.0]);
    }

    #[test]
    fn an_unreadable_row_is_left_out_not_fatal() {
        let dir = std::env::temp_dir().join(format!("telltale-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("series.csv");
        std::fs::write(
            &f,
            "timestamp,value\n2018-06-23 06:55:00,1.5\n2018-06-23 07:00:00,\n2018-06-23 07:05:00,2.5\n",
        )
        .unwrap();
        let s = read_csv(&f, "series.csv".into(), "value", Rows::Series).unwrap();
        assert_eq!(s.values, vec![1.5, 2.5]);
        assert_eq!(
            s.rejected,
            vec!["line 3: non_finite_value: `2018-06-23 07:00:00,`".to_owned()]
        );
    }
}
