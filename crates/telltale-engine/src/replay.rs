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

use telltale_codec::columnar::{self, ColumnChunk, ColumnarFormat, ColumnarReader};
use telltale_codec::csv::CsvLayout;
use telltale_codec::decode::{CsvSeries, Decoded, Decoder, Record};
use telltale_core::event::{StreamName, Streams};
use telltale_core::reject::RejectReason;

use crate::config::Plan;
use crate::front::Front;
use crate::pipeline::{Pipeline, Report, Sink};

/// Bytes per chunk handed to a parser.
const CHUNK: usize = 1 << 20;
/// Chunks in flight per parser.
const DEPTH: usize = 4;

/// The record format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines of text: native JSON (points and `llm_prediction` records) or InfluxDB line
    /// protocol, told apart line by line.
    JsonLines,
    /// `timestamp,value` CSV with a header; the series is named after the file.
    Csv,
    /// Arrow IPC or Parquet (see [`telltale_codec::columnar`]).
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
        Some("jsonl" | "ndjson" | "lp" | "influx") => Some(Format::JsonLines),
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

/// Expands the given paths: a folder contributes every `*.jsonl`, `*.ndjson`, `*.lp`, `*.influx`, `*.csv`, Arrow IPC
/// (`*.arrow`, `*.arrows`, `*.ipc`, `*.feather`) and `*.parquet` file below it, in path order; a
/// file is taken as it is (JSON lines unless its extension names another format).
pub fn discover(paths: &[PathBuf]) -> io::Result<Vec<Input>> {
    discover_as(paths, None)
}

/// [`discover`], reading every input given (files, standard input, files in folders) as
/// `format` when it is set, whatever its extension.
pub fn discover_as(paths: &[PathBuf], format: Option<Format>) -> io::Result<Vec<Input>> {
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
                        "{} holds no .jsonl, .ndjson, .lp, .influx, .csv, .arrow or .parquet file",
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
    if let Some(f) = format {
        for i in &mut inputs {
            i.format = Some(f);
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

/// A run of whole lines of one input.
#[derive(Debug, Default)]
struct Chunk {
    stream: u32,
    /// Line number of the first line.
    first_line: u64,
    data: Vec<u8>,
    /// Set for CSV inputs.
    csv: Option<Arc<CsvSeries>>,
    /// The first line is a CSV header: skip it (rejecting it if it was not a valid header).
    header: Option<Option<RejectReason>>,
    /// Rows of a columnar input (then `data` is empty and `first_line` is the first row's
    /// number).
    columns: Option<ColumnChunk>,
}

/// A decoded chunk.
#[derive(Debug, Default)]
struct Parsed {
    stream: u32,
    decoded: Decoded,
    data: Vec<u8>,
}

/// Splits a chunk into lines and hands them to the decoder.
fn parse(dec: &mut Decoder, mut chunk: Chunk, out: &mut Parsed) {
    out.stream = chunk.stream;
    let d = &mut out.decoded;
    if let Some(columns) = chunk.columns.take() {
        dec.columns(&columns, chunk.first_line, d);
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
            d.records.push(Record::Reject {
                pos: line,
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
                    d.records.push(Record::Reject {
                        pos: this,
                        reason: RejectReason::NotUtf8,
                        text: String::from_utf8_lossy(raw).into_owned(),
                    });
                    continue;
                }
            }
        };
        match &chunk.csv {
            Some(csv) => dec.csv_row(csv, text, this, d),
            None => dec.line(text, this, d),
        }
    }
    chunk.data.clear();
    out.data = std::mem::take(&mut chunk.data);
}

/// Feeds parsed chunks, taken round-robin from the parsers, into the front end.
fn route(
    mut front: Front,
    from_parsers: Vec<Receiver<Parsed>>,
    recycle_records: Sender<Vec<Record>>,
    recycle_data: Sender<Vec<u8>>,
    records: Arc<AtomicU64>,
) -> io::Result<Report> {
    let n = from_parsers.len();
    for k in 0.. {
        let Ok(mut parsed) = from_parsers[k % n].recv() else {
            break;
        };
        front.push(&mut parsed.decoded, parsed.stream);
        records.store(front.pipe.records(), Ordering::Relaxed);
        let _ = recycle_records.send(parsed.decoded.records);
        let _ = recycle_data.send(parsed.data);
    }
    front.finish()
}

/// Replays `inputs` through a pipeline built from `plan`, writing to `outputs`.
pub fn replay(
    plan: Plan,
    inputs: &[Input],
    outputs: impl Sink + 'static,
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
    let precision = plan.influx_precision;
    let front = Front::new(Pipeline::start(plan, streams, outputs), window_ms);
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
                    let mut decoder = Decoder::new(llm).with_precision(precision);
                    for chunk in rx {
                        let mut out = Parsed::default();
                        if let Ok(records) = recycled.try_recv() {
                            out.decoded.records = records;
                        }
                        parse(&mut decoder, chunk, &mut out);
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
            .spawn(move || route(front, from_parsers, records_tx, data_tx, records))
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
        let mut csv: Option<Arc<CsvSeries>> = None;
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
                // JSON starts with `{`; a line protocol line has `field=value`, which no CSV
                // header has.
                let first = buf.iter().find(|b| !b.is_ascii_whitespace()).copied();
                let first_line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
                format = Some(if first == Some(b'{') || first_line.contains(&b'=') {
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
                csv = Some(Arc::new(CsvSeries::new(layout, input.csv_name.clone())));
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
