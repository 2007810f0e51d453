//! Replay of recorded telemetry: files, folders (NAB layout included) or standard input,
//! through the same pipeline as live mode.
//!
//! Threads: the caller reads inputs in chunks of whole lines (or record batches of a columnar
//! file) and deals them round-robin to parser threads; a router thread takes the parsed chunks back in the same round-robin order
//! (so input order is kept without a reorder buffer) and feeds the pipeline, which owns the
//! series table and hands batches to the shards. Parsing is the costly part of a replay, so it
//! is the part that runs in parallel.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::codec::{CsvLayout, PointBuf, RejectReason, parse_json_line};
use crate::columnar::{self, ColumnChunk, ColumnarFormat, ColumnarReader, Row};
use crate::config::Plan;
use crate::event::{Source, StreamName, Streams};
use crate::key::{IdMap, RawIdCache, SeriesKey, point_series_id, series_id};
use crate::llm::{
    LlmConfig, Prediction, REQUEST_MARGIN, derived_points, parse_prediction, series_labels,
};
use crate::pipeline::{Outputs, Pipeline, Report};

/// Bytes per chunk handed to a parser.
const CHUNK: usize = 1 << 20;
/// Chunks in flight per parser.
const DEPTH: usize = 4;

/// The record format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Native JSON lines.
    JsonLines,
    /// `timestamp,value` CSV with a header; the series is named after the file.
    Csv,
    /// Arrow IPC or Parquet (see [`crate::columnar`]).
    Columnar(ColumnarFormat),
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
        _ => ColumnarFormat::of(path).map(Format::Columnar),
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

/// Expands the given paths: a folder contributes every `*.jsonl`, `*.ndjson`, `*.csv`, Arrow IPC
/// (`*.arrow`, `*.arrows`, `*.ipc`, `*.feather`) and `*.parquet` file below it, in path order; a
/// file is taken as it is (JSON lines unless its extension names another format).
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
                    format!(
                        "{} holds no .jsonl, .ndjson, .csv, .arrow or .parquet file",
                        p.display()
                    ),
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
    // Columnar files name their columns in a schema: check it now, so a file the replay could
    // not read fails before anything is processed.
    for i in &inputs {
        if let Some(Format::Columnar(f)) = i.format {
            ColumnarReader::open(&i.path, f, &i.csv_name)?;
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
        let width = 30usize;
        let (pct, filled) = if self.total > 0 {
            let f = (bytes as f64 / self.total as f64).min(1.0);
            (format!("{:5.1}% ", 100.0 * f), (f * width as f64) as usize)
        } else {
            (String::new(), 0)
        };
        eprint!(
            "\r  [{}{}] {pct}{records} records  {:.2} M records/s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            records as f64 / secs / 1e6
        );
    }

    fn done(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(90));
        }
    }
}

/// How a CSV input's lines become points.
#[derive(Debug)]
struct CsvInfo {
    layout: CsvLayout,
    name: String,
    id: u64,
}

/// A run of whole lines of one input.
#[derive(Debug, Default)]
struct Chunk {
    stream: u32,
    /// Line number of the first line.
    first_line: u64,
    data: Vec<u8>,
    /// Set for CSV inputs.
    csv: Option<Arc<CsvInfo>>,
    /// The first line is a CSV header: skip it (rejecting it if it was not a valid header).
    header: Option<Option<RejectReason>>,
    /// Rows of a columnar input (then `data` is empty and `first_line` is the first row's
    /// number).
    columns: Option<ColumnChunk>,
}

/// One parsed record.
#[derive(Debug)]
enum Record {
    /// The derived values of one `llm_prediction` (aggregated per window by the router).
    Request {
        ids: [u64; 3],
        values: [f64; 3],
        count: u8,
        ts: i64,
        line: u64,
    },
    Point {
        id: u64,
        ts: i64,
        value: f64,
        line: u64,
    },
    Reject {
        line: u64,
        reason: RejectReason,
        text: String,
    },
}

/// A parsed chunk: records in line order, and the keys of series this parser had not seen.
#[derive(Debug, Default)]
struct Parsed {
    stream: u32,
    records: Vec<Record>,
    keys: Vec<(u64, SeriesKey)>,
    data: Vec<u8>,
}

/// Per-thread parser state.
#[derive(Debug, Default)]
struct Parser {
    /// How predictions become derived points.
    llm: Arc<LlmConfig>,
    llm_scratch: Vec<f64>,
    /// Series this parser has sent the key of (CSV and derived series; JSON points use
    /// `raw_ids`).
    seen: IdMap<()>,
    /// Series ids of JSON points by their raw form.
    raw_ids: RawIdCache,
    point: PointBuf,
    scratch: Vec<u8>,
    /// Decoder of columnar inputs (with its own series-id cache).
    columns: columnar::Decoder,
}

impl Parser {
    fn parse(&mut self, mut chunk: Chunk, out: &mut Parsed) {
        out.stream = chunk.stream;
        if let Some(columns) = chunk.columns.take() {
            let first = chunk.first_line;
            let (records, keys) = (&mut out.records, &mut out.keys);
            self.columns.decode(
                &columns,
                |id, key| keys.push((id, key)),
                |i, row| {
                    let line = first + i as u64;
                    records.push(match row {
                        Row::Point { id, ts, value } => Record::Point {
                            id,
                            ts,
                            value,
                            line,
                        },
                        Row::Reject(reason) => Record::Reject {
                            line,
                            reason,
                            text: columnar::row_json(&columns, i),
                        },
                    });
                },
            );
            out.data = std::mem::take(&mut chunk.data);
            return;
        }
        let mut line = chunk.first_line;
        let mut data = &chunk.data[..];
        if let Some(header) = chunk.header {
            let end = data
                .iter()
                .position(|b| *b == b'\n')
                .map_or(data.len(), |i| i + 1);
            if let Some(reason) = header {
                out.records.push(Record::Reject {
                    line,
                    reason,
                    text: String::from_utf8_lossy(&data[..end]).trim_end().to_owned(),
                });
            }
            data = &data[end..];
            line += 1;
        }
        // Validating the whole chunk at once is much cheaper than line by line; only a chunk
        // holding invalid UTF-8 is checked per line (to reject just the bad lines).
        let chunk_is_utf8 = std::str::from_utf8(data).is_ok();
        for raw in data.split(|b| *b == b'\n') {
            let this = line;
            line += 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = if chunk_is_utf8 {
                // SAFETY: `raw` is a subslice of `data`, which was validated as UTF-8 above,
                // cut at b'\n' and b'\r' bytes, which are always whole characters.
                unsafe { std::str::from_utf8_unchecked(raw) }
            } else {
                match std::str::from_utf8(raw) {
                    Ok(t) => t,
                    Err(_) => {
                        out.records.push(Record::Reject {
                            line: this,
                            reason: RejectReason::NotUtf8,
                            text: String::from_utf8_lossy(raw).into_owned(),
                        });
                        continue;
                    }
                }
            };
            let parsed = match &chunk.csv {
                Some(csv) => csv.layout.parse(text).map(|(ts, value)| {
                    if self.seen.insert(csv.id, ()).is_none() {
                        out.keys.push((csv.id, SeriesKey::new(&csv.name, &[])));
                    }
                    (csv.id, ts, value)
                }),
                None => {
                    let r = parse_json_line(text, &mut self.point);
                    if r.is_err() {
                        // Not a point: maybe an `llm_prediction` record (its `labels` is a
                        // list of class names, so the point parser stops early).
                        if let Some(pred) = parse_prediction(text) {
                            match pred {
                                Ok(p) => self.push_derived(&p, this, out),
                                Err(reason) => out.records.push(Record::Reject {
                                    line: this,
                                    reason,
                                    text: text.to_owned(),
                                }),
                            }
                            continue;
                        }
                    }
                    r.map(|()| {
                        let (id, miss) = self.raw_ids.id(&self.point);
                        if miss {
                            // Sent on every cache miss: at least with the first point of each
                            // series this parser sees (the router ignores repeats).
                            out.keys.push((id, SeriesKey::from_point(&self.point)));
                        }
                        (id, self.point.timestamp, self.point.value)
                    })
                }
            };
            match parsed {
                Ok((id, ts, value)) => out.records.push(Record::Point {
                    id,
                    ts,
                    value,
                    line: this,
                }),
                Err(reason) => out.records.push(Record::Reject {
                    line: this,
                    reason,
                    text: text.to_owned(),
                }),
            }
        }
        chunk.data.clear();
        out.data = std::mem::take(&mut chunk.data);
    }

    /// The derived values of a prediction (margin, low confidence, disagreement).
    fn push_derived(&mut self, p: &Prediction, line: u64, out: &mut Parsed) {
        let labels = series_labels(p, &self.llm);
        let (mut ids, mut values, mut count) = ([0u64; 3], [0.0; 3], 0u8);
        for (metric, value) in derived_points(p, &self.llm, &mut self.llm_scratch) {
            let Some(value) = value else { continue };
            self.point.set(metric, &labels, p.timestamp, value);
            let id = point_series_id(&self.point, &mut self.scratch);
            if self.seen.insert(id, ()).is_none() {
                out.keys.push((id, SeriesKey::from_point(&self.point)));
            }
            ids[count as usize] = id;
            values[count as usize] = value;
            count += 1;
        }
        out.records.push(Record::Request {
            ids,
            values,
            count,
            ts: p.timestamp,
            line,
        });
        if self.llm.per_request {
            self.point
                .set(REQUEST_MARGIN, &labels, p.timestamp, values[0]);
            let id = point_series_id(&self.point, &mut self.scratch);
            if self.seen.insert(id, ()).is_none() {
                out.keys.push((id, SeriesKey::from_point(&self.point)));
            }
            out.records.push(Record::Point {
                id,
                ts: p.timestamp,
                value: values[0],
                line,
            });
        }
    }
}

/// Per-window means of the derived prediction series, kept by the router (the one place that
/// sees records in input order). A window's point is emitted when the first request of a later
/// window arrives, or at the end of the input; its timestamp is the window's end.
#[derive(Debug, Default)]
struct Aggregator {
    window: i64,
    acc: IdMap<Window>,
}

#[derive(Debug)]
struct Window {
    bucket: i64,
    sum: f64,
    n: u32,
    key: Option<SeriesKey>,
    line: u64,
}

impl Aggregator {
    fn emit(pipe: &mut Pipeline, id: u64, w: &mut Window, stream: u32, window: i64) {
        let key = &mut w.key;
        pipe.push_id(
            id,
            || {
                key.take()
                    .expect("the key of a derived series is kept until its first point")
            },
            (w.bucket + 1).saturating_mul(window),
            w.sum / f64::from(w.n),
            Source {
                stream,
                offset: w.line,
            },
        );
        w.sum = 0.0;
        w.n = 0;
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        pipe: &mut Pipeline,
        id: u64,
        keys: &mut Vec<(u64, SeriesKey)>,
        ts: i64,
        value: f64,
        stream: u32,
        line: u64,
    ) {
        let window = self.window;
        let bucket = ts.div_euclid(window);
        let w = self.acc.entry(id).or_insert(Window {
            bucket,
            sum: 0.0,
            n: 0,
            key: None,
            line,
        });
        if w.key.is_none()
            && !pipe.knows(id)
            && let Some(i) = keys.iter().position(|(k, _)| *k == id)
        {
            w.key = Some(keys.swap_remove(i).1);
        }
        // A request older than its series' open window is counted in that window.
        if w.n > 0 && bucket > w.bucket {
            Self::emit(pipe, id, w, stream, window);
        }
        if w.n == 0 {
            w.bucket = bucket.max(w.bucket);
        }
        w.sum += value;
        w.n += 1;
        w.line = line;
    }

    /// Emits every open window, oldest first (ties by series id, for determinism).
    fn flush(&mut self, pipe: &mut Pipeline, stream: u32) {
        let mut open: Vec<(i64, u64)> = self
            .acc
            .iter()
            .filter(|(_, w)| w.n > 0)
            .map(|(id, w)| (w.bucket, *id))
            .collect();
        open.sort_unstable();
        let window = self.window;
        for (_, id) in open {
            let w = self.acc.get_mut(&id).expect("present");
            Self::emit(pipe, id, w, stream, window);
        }
    }
}

/// Feeds parsed chunks, taken round-robin from the parsers, into the pipeline.
fn route(
    mut pipe: Pipeline,
    from_parsers: Vec<Receiver<Parsed>>,
    recycle_records: Sender<Vec<Record>>,
    recycle_data: Sender<Vec<u8>>,
    records: Arc<AtomicU64>,
    window_ms: i64,
) -> io::Result<Report> {
    let n = from_parsers.len();
    let mut agg = Aggregator {
        window: window_ms,
        ..Aggregator::default()
    };
    let mut last_stream = 0;
    for k in 0.. {
        let Ok(mut parsed) = from_parsers[k % n].recv() else {
            break;
        };
        last_stream = parsed.stream;
        for r in parsed.records.drain(..) {
            match r {
                Record::Request {
                    ids,
                    values,
                    count,
                    ts,
                    line,
                } => {
                    for i in 0..count as usize {
                        agg.add(
                            &mut pipe,
                            ids[i],
                            &mut parsed.keys,
                            ts,
                            values[i],
                            parsed.stream,
                            line,
                        );
                    }
                }
                Record::Point {
                    id,
                    ts,
                    value,
                    line,
                } => {
                    let source = Source {
                        stream: parsed.stream,
                        offset: line,
                    };
                    let keys = &mut parsed.keys;
                    pipe.push_id(
                        id,
                        || {
                            let i = keys.iter().position(|(k, _)| *k == id).expect(
                                "a parser sends the key with the first point of a series it parses",
                            );
                            keys.swap_remove(i).1
                        },
                        ts,
                        value,
                        source,
                    );
                }
                Record::Reject { line, reason, text } => pipe.reject(
                    Source {
                        stream: parsed.stream,
                        offset: line,
                    },
                    reason,
                    &text,
                ),
            }
        }
        records.store(pipe.records(), Ordering::Relaxed);
        let _ = recycle_records.send(parsed.records);
        let _ = recycle_data.send(parsed.data);
    }
    agg.flush(&mut pipe, last_stream);
    pipe.finish()
}

/// Replays `inputs` through a pipeline built from `plan`, writing to `outputs`.
pub fn replay(
    plan: Plan,
    inputs: &[Input],
    outputs: Outputs,
    progress: bool,
) -> io::Result<Report> {
    let streams = Streams::new(
        inputs
            .iter()
            .map(|i| StreamName::File(i.path.display().to_string()))
            .collect(),
    );
    let parsers = plan.parsers.max(1);
    let llm = Arc::new(plan.llm.clone());
    let window_ms = plan.llm_window_ms;
    let pipe = Pipeline::start(plan, streams, outputs);
    let (records_tx, records_rx) = crossbeam_channel::unbounded::<Vec<Record>>();
    let (data_tx, data_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    let mut to_parsers = Vec::with_capacity(parsers);
    let mut from_parsers = Vec::with_capacity(parsers);
    let mut workers = Vec::with_capacity(parsers);
    for i in 0..parsers {
        let (tx, rx) = bounded::<Chunk>(DEPTH);
        let (ptx, prx) = bounded::<Parsed>(DEPTH);
        let recycled = records_rx.clone();
        let llm = llm.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("telltale-parse-{i}"))
                .spawn(move || {
                    let mut parser = Parser {
                        llm,
                        ..Parser::default()
                    };
                    for chunk in rx {
                        let mut out = Parsed::default();
                        if let Ok(records) = recycled.try_recv() {
                            out.records = records;
                        }
                        parser.parse(chunk, &mut out);
                        if ptx.send(out).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn parser thread"),
        );
        to_parsers.push(tx);
        from_parsers.push(prx);
    }
    let records = Arc::new(AtomicU64::new(0));
    let router = {
        let records = records.clone();
        std::thread::Builder::new()
            .name("telltale-route".into())
            .spawn(move || route(pipe, from_parsers, records_tx, data_tx, records, window_ms))
            .expect("spawn router thread")
    };

    let total: u64 = inputs.iter().map(|i| i.size).sum();
    let mut bar = Progress::new(total, progress);
    let read_result = read_inputs(inputs, &to_parsers, &data_rx, |bytes| {
        bar.tick(bytes, records.load(Ordering::Relaxed));
    });
    drop(to_parsers);
    for w in workers {
        w.join()
            .map_err(|_| io::Error::other("a parser thread panicked"))?;
    }
    let report = router
        .join()
        .map_err(|_| io::Error::other("the router thread panicked"))?;
    bar.done();
    read_result?;
    let report = report?;
    io::stderr().flush()?;
    Ok(report)
}

/// Reads every input in chunks of whole lines and deals them to the parsers round-robin.
fn read_inputs(
    inputs: &[Input],
    to_parsers: &[Sender<Chunk>],
    recycled: &Receiver<Vec<u8>>,
    mut tick: impl FnMut(u64),
) -> io::Result<()> {
    let mut k = 0usize;
    let mut bytes_done = 0u64;
    for (stream, input) in inputs.iter().enumerate() {
        let stdin = input.path.as_os_str() == "-";
        let columnar = match input.format {
            Some(Format::Columnar(f)) => {
                Some(ColumnarReader::open(&input.path, f, &input.csv_name)?)
            }
            None if stdin => {
                // An Arrow IPC stream on standard input is recognised by its first bytes.
                let arrow =
                    columnar::looks_like_arrow(io::BufRead::fill_buf(&mut io::stdin().lock())?);
                if arrow {
                    Some(ColumnarReader::ipc_stream(io::stdin(), &input.csv_name)?)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(reader) = columnar {
            let size = input.size;
            read_columnar(reader, stream as u32, to_parsers, &mut k, |done| {
                tick(bytes_done + done.map_or(0, |f| (f * size as f64) as u64));
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.path.display())))?;
            bytes_done += size;
            continue;
        }
        let mut reader: Box<dyn Read> = if stdin {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(&input.path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", input.path.display()),
                )
            })?)
        };
        let mut carry: Vec<u8> = Vec::new();
        let mut line = 1u64;
        let mut format = input.format;
        let mut csv: Option<Arc<CsvInfo>> = None;
        let mut eof = false;
        let mut long_line = false;
        while !eof {
            let mut buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK + 4096));
            buf.clear();
            buf.append(&mut carry);
            // Fill to CHUNK bytes (or EOF); a line longer than that gets another CHUNK.
            let target = if long_line { buf.len() + CHUNK } else { CHUNK };
            long_line = false;
            while buf.len() < target {
                let start = buf.len();
                buf.resize(target.max(start + 4096), 0);
                let n = reader.read(&mut buf[start..])?;
                buf.truncate(start + n);
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            if !eof {
                // Keep the partial last line for the next chunk.
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => carry.extend_from_slice(&buf[i + 1..]),
                    None => {
                        // A line longer than a chunk: keep reading until it ends.
                        carry = std::mem::take(&mut buf);
                        long_line = true;
                        continue;
                    }
                }
                let keep = buf.len() - carry.len();
                buf.truncate(keep);
            }
            if buf.is_empty() {
                continue;
            }
            let mut header = None;
            if format.is_none() {
                let first = buf.iter().find(|b| !b.is_ascii_whitespace()).copied();
                format = Some(if first == Some(b'{') {
                    Format::JsonLines
                } else {
                    Format::Csv
                });
            }
            if format == Some(Format::Csv) && csv.is_none() {
                let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
                let text = String::from_utf8_lossy(&buf[..end]);
                let (layout, reject) = match CsvLayout::from_header(&text) {
                    Some(l) => (l, None),
                    None => (
                        CsvLayout::from_header("timestamp,value").expect("valid"),
                        Some(RejectReason::Malformed(
                            "CSV header must name `timestamp` and `value` columns; read as timestamp,value",
                        )),
                    ),
                };
                header = Some(reject);
                let name = input.csv_name.clone();
                let id = series_id(&name, std::iter::empty(), &mut Vec::new());
                csv = Some(Arc::new(CsvInfo { layout, name, id }));
            }
            let lines = buf.iter().filter(|b| **b == b'\n').count() as u64;
            bytes_done += buf.len() as u64;
            let chunk = Chunk {
                stream: stream as u32,
                first_line: line,
                data: buf,
                csv: csv.clone(),
                header,
                columns: None,
            };
            line += lines + u64::from(eof && chunk.data.last() != Some(&b'\n'));
            if to_parsers[k % to_parsers.len()].send(chunk).is_err() {
                return Err(io::Error::other("a parser thread stopped early"));
            }
            k += 1;
            tick(bytes_done);
        }
    }
    Ok(())
}

/// Deals the batches of a columnar input to the parsers round-robin (batches larger than
/// [`columnar::MAX_ROWS`] are sliced, without copying); `tick` gets the fraction read when the
/// format knows its size.
fn read_columnar(
    mut reader: ColumnarReader,
    stream: u32,
    to_parsers: &[Sender<Chunk>],
    k: &mut usize,
    mut tick: impl FnMut(Option<f64>),
) -> io::Result<()> {
    let mut row = 1u64;
    while let Some(chunk) = reader.next() {
        let chunk = chunk.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read the batch at row {row}: {e}"))
        })?;
        let rows = chunk.batch.num_rows();
        let mut at = 0;
        while at < rows {
            let len = (rows - at).min(columnar::MAX_ROWS);
            let piece = ColumnChunk {
                batch: chunk.batch.slice(at, len),
                layout: chunk.layout.clone(),
            };
            let sent = to_parsers[*k % to_parsers.len()].send(Chunk {
                stream,
                first_line: row,
                columns: Some(piece),
                ..Chunk::default()
            });
            if sent.is_err() {
                return Err(io::Error::other("a parser thread stopped early"));
            }
            *k += 1;
            at += len;
            row += len as u64;
        }
        tick(reader.fraction_read());
    }
    Ok(())
}
