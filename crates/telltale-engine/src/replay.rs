//! Replay of recorded telemetry: files, folders (NAB layout included) or standard input,
//! through the same pipeline as live mode.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::codec::{CsvLayout, PointBuf, RejectReason, parse_json_line};
use crate::config::Plan;
use crate::event::{Source, StreamName};
use crate::pipeline::{Outputs, Pipeline, Report};

/// The record format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Native JSON lines.
    JsonLines,
    /// `timestamp,value` CSV with a header; the series is named after the file.
    Csv,
}

/// One input to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Path, or `-` for standard input.
    pub path: PathBuf,
    /// Format (standard input is sniffed from its first line).
    pub format: Option<Format>,
    /// Series name for CSV inputs: the path relative to the folder given, without extension.
    pub csv_name: String,
    /// Size in bytes (0 when unknown).
    pub size: u64,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => Some(Format::JsonLines),
        Some("csv") => Some(Format::Csv),
        _ => None,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if format_of(&p).is_some() {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands the given paths: a folder contributes every `*.jsonl`, `*.ndjson` and `*.csv` below
/// it, in path order; a file is taken as it is (JSON lines unless it ends in `.csv`).
pub fn discover(paths: &[PathBuf]) -> io::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            inputs.push(Input {
                path: p.clone(),
                format: None,
                csv_name: "stdin".into(),
                size: 0,
            });
        } else if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            if files.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} holds no .jsonl, .ndjson or .csv file", p.display()),
                ));
            }
            for f in files {
                let rel = f.strip_prefix(p).unwrap_or(&f).with_extension("");
                inputs.push(Input {
                    size: f.metadata()?.len(),
                    format: format_of(&f),
                    csv_name: rel.to_string_lossy().replace('\\', "/"),
                    path: f,
                });
            }
        } else {
            let meta = p.metadata().map_err(|e| {
                io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()))
            })?;
            inputs.push(Input {
                size: meta.len(),
                format: Some(format_of(p).unwrap_or(Format::JsonLines)),
                csv_name: p
                    .file_stem()
                    .map_or_else(|| "series".into(), |s| s.to_string_lossy().into_owned()),
                path: p.clone(),
            });
        }
    }
    Ok(inputs)
}

/// A progress line on standard error, drawn only when it is a terminal.
#[derive(Debug)]
struct Progress {
    enabled: bool,
    total: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64, enabled: bool) -> Self {
        let now = Instant::now();
        Self {
            enabled: enabled && io::stderr().is_terminal(),
            total,
            start: now,
            last: now,
        }
    }

    fn tick(&mut self, bytes: u64, records: u64) {
        if !self.enabled || self.last.elapsed().as_millis() < 200 {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let pct = if self.total > 0 {
            format!("{:5.1}% ", 100.0 * bytes as f64 / self.total as f64)
        } else {
            String::new()
        };
        let width = 30usize;
        let filled = if self.total > 0 {
            ((bytes as f64 / self.total as f64) * width as f64) as usize
        } else {
            0
        };
        eprint!(
            "\r  [{}{}] {pct}{} records  {:.2} M records/s ",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            records,
            records as f64 / secs / 1e6
        );
    }

    fn done(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(90));
        }
    }
}

/// Replays `inputs` through a pipeline built from `plan`, writing to `outputs`.
pub fn replay(plan: Plan, inputs: &[Input], outputs: Outputs, progress: bool) -> io::Result<Report> {
    let streams: Arc<[StreamName]> = inputs
        .iter()
        .map(|i| StreamName::File(i.path.display().to_string()))
        .collect();
    let mut pipe = Pipeline::start(plan, streams, outputs);
    let total: u64 = inputs.iter().map(|i| i.size).sum();
    let mut bar = Progress::new(total, progress);
    let mut done_bytes = 0u64;
    let mut point = PointBuf::default();
    let mut line = Vec::with_capacity(4096);
    for (stream, input) in inputs.iter().enumerate() {
        let reader: Box<dyn Read> = if input.path.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(&input.path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", input.path.display()))
            })?)
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut format = input.format;
        let mut csv: Option<CsvLayout> = None;
        let mut lineno = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            done_bytes += n as u64;
            lineno += 1;
            let source = Source {
                stream: stream as u32,
                offset: lineno,
            };
            let Ok(text) = std::str::from_utf8(&line) else {
                pipe.reject(source, RejectReason::NotUtf8, &String::from_utf8_lossy(&line));
                continue;
            };
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let fmt = *format.get_or_insert(if text.trim_start().starts_with('{') {
                Format::JsonLines
            } else {
                Format::Csv
            });
            match fmt {
                Format::JsonLines => match parse_json_line(text, &mut point) {
                    Ok(()) => pipe.push(&point, source),
                    Err(reason) => pipe.reject(source, reason, text),
                },
                Format::Csv => {
                    let Some(layout) = csv else {
                        csv = Some(CsvLayout::from_header(text).unwrap_or_else(|| {
                            pipe.reject(
                                source,
                                RejectReason::Malformed(
                                    "CSV header must name `timestamp` and `value` columns; read as timestamp,value",
                                ),
                                text,
                            );
                            CsvLayout::from_header("timestamp,value").expect("valid")
                        }));
                        continue;
                    };
                    match layout.parse(text) {
                        Ok((ts, v)) => {
                            point.set(&input.csv_name, &[], ts, v);
                            pipe.push(&point, source);
                        }
                        Err(reason) => pipe.reject(source, reason, text),
                    }
                }
            }
            if lineno % 65_536 == 0 {
                bar.tick(done_bytes, pipe.records());
            }
        }
    }
    bar.done();
    let report = pipe.finish()?;
    io::stderr().flush()?;
    Ok(report)
}
