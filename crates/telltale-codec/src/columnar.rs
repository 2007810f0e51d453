//! Columnar telemetry: Arrow IPC (file or stream) and Parquet, read and written.
//!
//! # Layout
//! One row per point. Columns are found by name:
//! - `timestamp` (required): `Timestamp` of any unit, `Date64`, or `Int64` milliseconds since
//!   the epoch;
//! - `value` (required): any float or integer type;
//! - `metric` (optional): the series name, a string column (plain or dictionary-encoded);
//!   without it every row belongs to one series named after the file, as for CSV;
//! - every other column is a label named after the column: a string column (plain or
//!   dictionary); a null leaves that label off the row's series.
//!
//! # Why it is fast
//! No text is parsed per point: a batch's timestamps and values are read as slices, and a
//! series is recognised by a hash of its string columns computed per distinct dictionary value
//! (per row only for plain string columns) and mixed across columns, then looked up in a
//! per-parser cache of series ids, like [`telltale_core::key::RawIdCache`] does for JSON. The canonical
//! key (and its id, the same as JSON input gives) is built only on a cache miss. Columns that
//! name series should therefore be dictionary-encoded, as `telltale gen` writes them.
//!
//! A 64-bit row hash maps two different series to one id with the same probability as two
//! series ids colliding (about n² / 2⁶⁵ for n series).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringDictionaryBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowDictionaryKeyType, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, DictionaryArray, RecordBatch};
use arrow_buffer::ArrowNativeType as _;
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use telltale_core::key::{IdMap, SeriesKey};
use telltale_core::reject::{MAX_LABELS, RejectReason};

/// Rows handed to one parser at a time (larger batches are sliced, without copying).
pub const MAX_ROWS: usize = 1 << 16;

/// A columnar file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnarFormat {
    /// Arrow IPC, file (`ARROW1` magic) or stream.
    ArrowIpc,
    /// Apache Parquet.
    Parquet,
}

impl ColumnarFormat {
    /// The format of a path, by extension: `.arrow`, `.arrows`, `.ipc`, `.feather` or
    /// `.parquet`.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("arrow" | "arrows" | "ipc" | "feather") => Some(Self::ArrowIpc),
            Some("parquet") => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::ArrowIpc => "arrow",
            Self::Parquet => "parquet",
        }
    }
}

/// Where each role's column is in a file's schema.
#[derive(Debug)]
pub struct Layout {
    timestamp: (usize, TsKind),
    value: usize,
    metric: Option<usize>,
    /// Label columns by label name, sorted by name.
    labels: Vec<(String, usize)>,
    /// Series name when there is no `metric` column.
    default_name: String,
    /// Mixed into every row hash so rows of files with different layouts never share a
    /// cache entry.
    seed: u64,
}

#[derive(Debug, Clone, Copy)]
enum TsKind {
    /// Multiply by this to get milliseconds (1 for ms and `Int64`/`Date64`).
    Mul(i64),
    /// Divide by this to get milliseconds.
    Div(i64),
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_string_column(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(k, v) => k.is_dictionary_key_type() && is_string(v),
        t => is_string(t),
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Layout {
    /// Finds the columns of `schema`; `default_name` names the series when there is no
    /// `metric` column. The error names the offending column.
    pub fn new(schema: &Schema, default_name: &str) -> io::Result<Self> {
        let names = || {
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
        let ts = find("timestamp")
            .ok_or_else(|| bad(format!("no `timestamp` column (columns: {})", names())))?;
        let ts_kind = match schema.field(ts).data_type() {
            DataType::Int64 | DataType::Date64 => TsKind::Mul(1),
            DataType::Timestamp(TimeUnit::Second, _) => TsKind::Mul(1000),
            DataType::Timestamp(TimeUnit::Millisecond, _) => TsKind::Mul(1),
            DataType::Timestamp(TimeUnit::Microsecond, _) => TsKind::Div(1000),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => TsKind::Div(1_000_000),
            t => {
                return Err(bad(format!(
                    "column `timestamp` is {t}: it must be a Timestamp, Date64 or Int64 milliseconds"
                )));
            }
        };
        let value = find("value")
            .ok_or_else(|| bad(format!("no `value` column (columns: {})", names())))?;
        let vt = schema.field(value).data_type();
        if !((vt.is_floating() && *vt != DataType::Float16) || vt.is_integer()) {
            return Err(bad(format!(
                "column `value` is {vt}: it must be Float64, Float32 or an integer type"
            )));
        }
        let metric = find("metric");
        let mut labels = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if i == ts || i == value || Some(i) == metric {
                continue;
            }
            if !is_string_column(f.data_type()) {
                return Err(bad(format!(
                    "column `{}` is {}: columns other than timestamp and value are the metric \
                     name or labels and must be strings (Utf8, or a dictionary of Utf8)",
                    f.name(),
                    f.data_type()
                )));
            }
            labels.push((f.name().clone(), i));
        }
        if let Some(m) = metric
            && !is_string_column(schema.field(m).data_type())
        {
            return Err(bad(format!(
                "column `metric` is {}: it must be strings (Utf8, or a dictionary of Utf8)",
                schema.field(m).data_type()
            )));
        }
        labels.sort();
        let mut seed_text = format!("{}|{}|", metric.is_some(), default_name);
        for (name, _) in &labels {
            seed_text.push_str(name);
            seed_text.push('|');
        }
        Ok(Self {
            timestamp: (ts, ts_kind),
            value,
            metric,
            labels,
            default_name: default_name.to_owned(),
            seed: xxh3_64_with_seed(seed_text.as_bytes(), 0x05ee_dc01_u64),
        })
    }
}

/// A batch of rows of one input, with its layout.
#[derive(Debug, Clone)]
pub struct ColumnChunk {
    /// The rows.
    pub batch: RecordBatch,
    /// Where the columns are.
    pub layout: Arc<Layout>,
}

/// An open columnar input: its layout and its batches, in order.
pub struct ColumnarReader {
    /// Where the columns are.
    pub layout: Arc<Layout>,
    batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
    /// Rows in the whole input, when the format says (Parquet).
    total_rows: Option<u64>,
    /// Batches in the whole input, when the format says (Arrow IPC file).
    total_batches: Option<usize>,
    rows_read: u64,
    batches_read: usize,
    /// The reader panicked on malformed input (see [`contained`]).
    failed: bool,
}

impl std::fmt::Debug for ColumnarReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnarReader")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// Whether `head` starts an Arrow IPC stream or file.
pub fn looks_like_arrow(head: &[u8]) -> bool {
    head.starts_with(b"ARROW1") || head.starts_with(&[0xff, 0xff, 0xff, 0xff])
}

impl ColumnarReader {
    /// Opens a file of `format`; `default_name` names the series if it has no `metric` column.
    pub fn open(path: &Path, format: ColumnarFormat, default_name: &str) -> io::Result<Self> {
        contained(|| Self::open_inner(path, format, default_name))?
    }

    fn open_inner(path: &Path, format: ColumnarFormat, default_name: &str) -> io::Result<Self> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        match format {
            ColumnarFormat::Parquet => Self::parquet(file, default_name).map_err(named),
            ColumnarFormat::ArrowIpc => {
                let mut file = BufReader::new(file);
                let mut magic = [0u8; 6];
                let n = read_full(&mut file, &mut magic)?;
                file.rewind()?;
                if magic[..n].starts_with(b"ARROW1") {
                    let r = arrow_ipc::reader::FileReader::try_new_buffered(file, None)
                        .map_err(|e| named(arrow_err(e)))?;
                    let layout = Layout::new(&r.schema(), default_name).map_err(named)?;
                    let batches = r.num_batches();
                    Ok(Self::new(layout, Box::new(r), None, Some(batches)))
                } else {
                    Self::ipc_stream(file, default_name).map_err(named)
                }
            }
        }
    }

    /// Reads an Arrow IPC stream (for standard input).
    pub fn ipc_stream(input: impl Read + Send + 'static, default_name: &str) -> io::Result<Self> {
        let r = contained(|| arrow_ipc::reader::StreamReader::try_new(input, None))?
            .map_err(arrow_err)?;
        let layout = Layout::new(&r.schema(), default_name)?;
        Ok(Self::new(layout, Box::new(r), None, None))
    }

    fn parquet(file: File, default_name: &str) -> io::Result<Self> {
        check_parquet_dictionaries(&file).map_err(|e| bad(e.to_string()))?;
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(EndChecked(
            file,
        ))
        .map_err(|e| bad(e.to_string()))?;
        let rows = u64::try_from(b.metadata().file_metadata().num_rows()).ok();
        let layout = Layout::new(b.schema(), default_name)?;
        let r = b
            .with_batch_size(MAX_ROWS)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self::new(layout, Box::new(r), rows, None))
    }

    fn new(
        layout: Layout,
        batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
        total_rows: Option<u64>,
        total_batches: Option<usize>,
    ) -> Self {
        Self {
            layout: Arc::new(layout),
            batches,
            total_rows,
            total_batches,
            rows_read: 0,
            batches_read: 0,
            failed: false,
        }
    }
}

/// Checks that every dictionary page of a Parquet file holds as many values as it claims.
///
/// The Parquet reader sizes a dictionary by the count its page header claims before it decodes
/// the page: a 2 KB file claiming a billion values took 13 GB (found by fuzzing). A dictionary
/// page is PLAIN-encoded, so its size bounds its count (a bit per boolean, the type's width per
/// fixed-width value, a 4-byte length per byte array). Only each column chunk's first page is
/// looked at (a dictionary comes first), so the check reads a page header or a dictionary per
/// column chunk.
fn check_parquet_dictionaries(file: &File) -> parquet::errors::Result<()> {
    use parquet::basic::Type;
    use parquet::column::page::Page;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(EndChecked(file.try_clone()?))?;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        for c in 0..group.num_columns() {
            let column = group.metadata().column(c);
            // Bits per value at the least.
            let bits = match column.column_type() {
                Type::BOOLEAN => 1,
                Type::INT32 | Type::FLOAT | Type::BYTE_ARRAY => 32,
                Type::INT64 | Type::DOUBLE => 64,
                Type::INT96 => 96,
                Type::FIXED_LEN_BYTE_ARRAY => 8 * column.column_descr().type_length().max(1) as u64,
            };
            let mut pages = group.get_column_page_reader(c)?;
            if !pages.peek_next_page()?.is_some_and(|m| m.is_dict) {
                continue;
            }
            if let Some(Page::DictionaryPage {
                buf, num_values, ..
            }) = pages.get_next_page()?
                && u64::from(num_values) * bits > buf.len() as u64 * 8
            {
                return Err(parquet::errors::ParquetError::General(format!(
                    "column `{}`: a dictionary page claims {num_values} values in {} bytes",
                    column.column_path().string(),
                    buf.len()
                )));
            }
        }
    }
    Ok(())
}

/// A Parquet file whose streams fail when read past its end, instead of reading nothing.
///
/// The Parquet reader decodes page headers from a stream and skips what a header's fields
/// claim by copying that many bytes to nowhere; at the end of the file such a copy succeeds
/// with nothing read, so a crafted header that claims millions of fields keeps the reader busy
/// for minutes (one read system call each) before it fails. A well-formed file is never read
/// past its end: its page headers lie inside it.
struct EndChecked(File);

impl parquet::file::reader::Length for EndChecked {
    fn len(&self) -> u64 {
        parquet::file::reader::Length::len(&self.0)
    }
}

impl parquet::file::reader::ChunkReader for EndChecked {
    type T = PastEndFails<BufReader<File>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        parquet::file::reader::ChunkReader::get_read(&self.0, start).map(PastEndFails)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        parquet::file::reader::ChunkReader::get_bytes(&self.0, start, length)
    }
}

/// A reader whose end is an error (see [`EndChecked`]).
struct PastEndFails<R>(R);

impl<R: Read> Read for PastEndFails<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 if !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a page header runs past the end of the file",
            )),
            n => Ok(n),
        }
    }
}

impl ColumnarReader {
    /// The share of the input read so far, when the format tells its size (Parquet: rows;
    /// Arrow IPC file: batches; an IPC stream does not).
    pub fn fraction_read(&self) -> Option<f64> {
        match (self.total_rows, self.total_batches) {
            (Some(t), _) => Some(self.rows_read as f64 / t.max(1) as f64),
            (None, Some(t)) => Some(self.batches_read as f64 / t.max(1) as f64),
            (None, None) => None,
        }
    }
}

impl Iterator for ColumnarReader {
    type Item = io::Result<ColumnChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let batch = match contained(|| self.batches.next()) {
            Ok(b) => b?,
            Err(e) => {
                // The reader cannot go on after a panic: this is the input's last item.
                self.failed = true;
                return Some(Err(e));
            }
        };
        // A reader that failed cannot be trusted to go on (the Parquet reader repeats its
        // error forever): an error is the input's last item.
        self.failed = batch.is_err();
        Some(batch.map_err(arrow_err).map(|batch| {
            self.rows_read += batch.num_rows() as u64;
            self.batches_read += 1;
            ColumnChunk {
                batch,
                layout: self.layout.clone(),
            }
        }))
    }
}

/// Runs `f`, turning a panic into an error. The Arrow and Parquet readers assert on some
/// malformed inputs instead of returning an error (found by the `arrow_ipc` fuzz target); a bad
/// file must fail the replay with a message, not abort the process.
fn contained<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("the reader failed");
        bad(format!("malformed columnar input: {why}"))
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn arrow_err(e: ArrowError) -> io::Error {
    match e {
        ArrowError::IoError(_, e) => e,
        e => bad(e.to_string()),
    }
}

/// One decoded row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Row {
    /// A point of series `id`.
    Point {
        /// Series id.
        id: u64,
        /// Milliseconds since the epoch.
        ts: i64,
        /// Value (finite).
        value: f64,
    },
    /// The row is rejected.
    Reject(RejectReason),
}

/// Turns batches into points: reusable buffers and the series-id cache of one parser thread.
#[derive(Debug, Default)]
pub struct Decoder {
    ids: IdMap<u64>,
    hashes: Vec<u64>,
    dict: Vec<u64>,
    ts: Vec<i64>,
    values: Vec<f64>,
}

/// Hash of a null string cell.
const NULL_HASH: u64 = 0x6e75_6c6c_6e75_6c6c;

#[inline]
fn mix(h: u64, c: u64) -> u64 {
    (h.rotate_left(23) ^ c).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn str_hash(s: &str) -> u64 {
    xxh3_64_with_seed(s.as_bytes(), 0x5712)
}

/// The string in row `i` of a string column (plain or dictionary), `None` when null.
fn str_at(a: &dyn Array, i: usize) -> Option<&str> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i),
        DataType::Utf8View => a.as_string_view().value(i),
        DataType::Dictionary(k, _) => {
            let (key, values) = match &**k {
                DataType::Int8 => dict_key::<Int8Type>(a, i),
                DataType::Int16 => dict_key::<Int16Type>(a, i),
                DataType::Int32 => dict_key::<Int32Type>(a, i),
                DataType::Int64 => dict_key::<Int64Type>(a, i),
                DataType::UInt8 => dict_key::<UInt8Type>(a, i),
                DataType::UInt16 => dict_key::<UInt16Type>(a, i),
                DataType::UInt32 => dict_key::<UInt32Type>(a, i),
                DataType::UInt64 => dict_key::<UInt64Type>(a, i),
                _ => return None,
            };
            return str_at(values.as_ref(), key);
        }
        _ => return None,
    })
}

fn dict_key<K: ArrowDictionaryKeyType>(a: &dyn Array, i: usize) -> (usize, &ArrayRef) {
    let d = a.as_dictionary::<K>();
    (d.keys().value(i).as_usize(), d.values())
}

/// Mixes the hash of each row's string in column `a` into `hashes`.
fn mix_column(a: &dyn Array, hashes: &mut [u64], dict: &mut Vec<u64>) {
    fn dictionary<K: ArrowDictionaryKeyType>(
        d: &DictionaryArray<K>,
        hashes: &mut [u64],
        dict: &mut Vec<u64>,
    ) {
        let values = d.values();
        dict.clear();
        dict.extend(
            (0..values.len()).map(|j| str_at(values.as_ref(), j).map_or(NULL_HASH, str_hash)),
        );
        let keys = d.keys();
        if keys.null_count() == 0 {
            for (h, k) in hashes.iter_mut().zip(keys.values().iter()) {
                *h = mix(*h, dict.get(k.as_usize()).copied().unwrap_or(NULL_HASH));
            }
        } else {
            for (i, h) in hashes.iter_mut().enumerate() {
                let c = if keys.is_null(i) {
                    NULL_HASH
                } else {
                    dict.get(keys.value(i).as_usize())
                        .copied()
                        .unwrap_or(NULL_HASH)
                };
                *h = mix(*h, c);
            }
        }
    }
    match a.data_type() {
        DataType::Dictionary(k, _) => match &**k {
            DataType::Int8 => dictionary(a.as_dictionary::<Int8Type>(), hashes, dict),
            DataType::Int16 => dictionary(a.as_dictionary::<Int16Type>(), hashes, dict),
            DataType::Int32 => dictionary(a.as_dictionary::<Int32Type>(), hashes, dict),
            DataType::Int64 => dictionary(a.as_dictionary::<Int64Type>(), hashes, dict),
            DataType::UInt8 => dictionary(a.as_dictionary::<UInt8Type>(), hashes, dict),
            DataType::UInt16 => dictionary(a.as_dictionary::<UInt16Type>(), hashes, dict),
            DataType::UInt32 => dictionary(a.as_dictionary::<UInt32Type>(), hashes, dict),
            DataType::UInt64 => dictionary(a.as_dictionary::<UInt64Type>(), hashes, dict),
            _ => unreachable!("layout accepts only integer dictionary keys"),
        },
        _ => {
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = mix(*h, str_at(a, i).map_or(NULL_HASH, str_hash));
            }
        }
    }
}

impl Decoder {
    /// Decodes `chunk`, calling `row(i, row)` for each row `i` in order and `key(id, key)` for
    /// a series this decoder has not seen (or has evicted) just before its first row.
    pub fn decode(
        &mut self,
        chunk: &ColumnChunk,
        mut key: impl FnMut(u64, SeriesKey),
        mut row: impl FnMut(usize, Row),
    ) {
        let (b, l) = (&chunk.batch, &*chunk.layout);
        let n = b.num_rows();
        // Series hashes, column by column.
        self.hashes.clear();
        self.hashes.resize(n, l.seed);
        if let Some(m) = l.metric {
            mix_column(b.column(m).as_ref(), &mut self.hashes, &mut self.dict);
        }
        for (_, c) in &l.labels {
            mix_column(b.column(*c).as_ref(), &mut self.hashes, &mut self.dict);
        }
        // Timestamps and values as slices of the column when their types allow.
        let ts_col = b.column(l.timestamp.0);
        let ts: &[i64] = match (ts_col.data_type(), l.timestamp.1) {
            (DataType::Int64, TsKind::Mul(1)) => ts_col.as_primitive::<Int64Type>().values(),
            (DataType::Timestamp(TimeUnit::Millisecond, _), _) => {
                ts_col.as_primitive::<TimestampMillisecondType>().values()
            }
            (DataType::Date64, _) => ts_col.as_primitive::<Date64Type>().values(),
            (t, kind) => {
                let raw: &[i64] = match t {
                    DataType::Timestamp(TimeUnit::Second, _) => {
                        ts_col.as_primitive::<TimestampSecondType>().values()
                    }
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        ts_col.as_primitive::<TimestampMicrosecondType>().values()
                    }
                    _ => ts_col.as_primitive::<TimestampNanosecondType>().values(),
                };
                self.ts.clear();
                self.ts.extend(raw.iter().map(|v| match kind {
                    TsKind::Mul(m) => v.saturating_mul(m),
                    TsKind::Div(d) => v.div_euclid(d),
                }));
                &self.ts
            }
        };
        let v_col = b.column(l.value);
        let values: &[f64] = if let Some(v) = v_col.as_primitive_opt::<Float64Type>() {
            v.values()
        } else {
            self.values.clear();
            let t = v_col.data_type();
            macro_rules! widen {
                ($($ty:ty),*) => {{
                    $(if let Some(v) = v_col.as_primitive_opt::<$ty>() {
                        self.values.extend(v.values().iter().map(|x| *x as f64));
                    })*
                }};
            }
            widen!(
                Float32Type,
                Int8Type,
                Int16Type,
                Int32Type,
                Int64Type,
                UInt8Type,
                UInt16Type,
                UInt32Type,
                UInt64Type
            );
            debug_assert_eq!(self.values.len(), n, "value type {t} widened");
            &self.values
        };
        let nulls = ts_col.null_count() + v_col.null_count() > 0;
        for i in 0..n {
            if nulls {
                if ts_col.is_null(i) {
                    row(i, Row::Reject(RejectReason::MissingField("timestamp")));
                    continue;
                }
                if v_col.is_null(i) {
                    row(i, Row::Reject(RejectReason::MissingField("value")));
                    continue;
                }
            }
            let value = values[i];
            if !value.is_finite() {
                row(i, Row::Reject(RejectReason::NonFiniteValue));
                continue;
            }
            let h = fmix(self.hashes[i]);
            let id = match self.ids.get(&h) {
                Some(id) => *id,
                None => match series_key(b, l, i) {
                    Ok(k) => {
                        let id = k.id();
                        if self.ids.len() >= crate::json::RawIdCache::MAX {
                            self.ids.clear();
                        }
                        self.ids.insert(h, id);
                        key(id, k);
                        id
                    }
                    Err(r) => {
                        row(i, Row::Reject(r));
                        continue;
                    }
                },
            };
            row(
                i,
                Row::Point {
                    id,
                    ts: ts[i],
                    value,
                },
            );
        }
    }
}

/// The canonical key of row `i`.
fn series_key(b: &RecordBatch, l: &Layout, i: usize) -> Result<SeriesKey, RejectReason> {
    let name = match l.metric {
        Some(m) => match str_at(b.column(m).as_ref(), i) {
            Some("") => return Err(RejectReason::Malformed("`metric` is empty")),
            Some(s) => s,
            None => return Err(RejectReason::MissingField("metric")),
        },
        None => &l.default_name,
    };
    let labels: Vec<(&str, &str)> = l
        .labels
        .iter()
        .filter_map(|(k, c)| Some((k.as_str(), str_at(b.column(*c).as_ref(), i)?)))
        .collect();
    if labels.len() > MAX_LABELS {
        return Err(RejectReason::TooManyLabels);
    }
    telltale_core::reject::check_key(name, labels.iter().copied())?;
    Ok(SeriesKey::new(name, &labels))
}

/// Row `i` as a JSON object (for the rejects output).
pub fn row_json(chunk: &ColumnChunk, i: usize) -> String {
    let (b, l) = (&chunk.batch, &*chunk.layout);
    let mut labels = serde_json::Map::new();
    for (k, c) in &l.labels {
        if let Some(v) = str_at(b.column(*c).as_ref(), i) {
            labels.insert(k.clone(), v.into());
        }
    }
    let num = |c: usize| -> serde_json::Value {
        let a = b.column(c);
        if a.is_null(i) {
            return serde_json::Value::Null;
        }
        let s = arrow_cast_display(a.as_ref(), i);
        serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
    };
    serde_json::json!({
        "metric": l.metric.map_or(Some(l.default_name.as_str()), |m| str_at(b.column(m).as_ref(), i)),
        "labels": labels,
        "timestamp": num(l.timestamp.0),
        "value": num(l.value),
    })
    .to_string()
}

/// A number cell as text (floats in full precision; NaN and infinities as words).
fn arrow_cast_display(a: &dyn Array, i: usize) -> String {
    macro_rules! try_types {
        ($($ty:ty),*) => {{
            $(if let Some(v) = a.as_primitive_opt::<$ty>() {
                return format!("{:?}", v.value(i));
            })*
        }};
    }
    try_types!(
        Float64Type,
        Float32Type,
        Int8Type,
        Int16Type,
        Int32Type,
        Int64Type,
        UInt8Type,
        UInt16Type,
        UInt32Type,
        UInt64Type,
        TimestampSecondType,
        TimestampMillisecondType,
        TimestampMicrosecondType,
        TimestampNanosecondType,
        Date64Type
    );
    String::new()
}

/// Writes points as Arrow IPC or Parquet in the layout [`ColumnarReader`] reads, with the
/// metric and every label dictionary-encoded.
pub struct ColumnarWriter {
    out: Out,
    schema: Arc<Schema>,
    label_names: Vec<String>,
    ts: TimestampMillisecondBuilder,
    value: Float64Builder,
    metric: StringDictionaryBuilder<Int32Type>,
    labels: Vec<StringDictionaryBuilder<Int32Type>>,
    rows: usize,
}

impl std::fmt::Debug for ColumnarWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnarWriter")
            .field("labels", &self.label_names)
            .finish_non_exhaustive()
    }
}

enum Out {
    IpcFile(arrow_ipc::writer::FileWriter<Box<dyn Write + Send>>),
    IpcStream(arrow_ipc::writer::StreamWriter<Box<dyn Write + Send>>),
    Parquet(Box<parquet::arrow::ArrowWriter<Box<dyn Write + Send>>>),
}

/// Which container to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAs {
    /// Arrow IPC file format (random access, `ARROW1` magic).
    IpcFile,
    /// Arrow IPC stream format (for pipes).
    IpcStream,
    /// Parquet (Snappy-compressed pages).
    Parquet,
}

impl ColumnarWriter {
    /// A writer of points whose labels are among `label_names` (a label outside them is an
    /// error when written).
    pub fn new(out: Box<dyn Write + Send>, how: WriteAs, label_names: &[&str]) -> io::Result<Self> {
        let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let mut fields = vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("value", DataType::Float64, false),
            Field::new("metric", dict(), false),
        ];
        let mut label_names: Vec<String> = label_names.iter().map(|s| (*s).to_owned()).collect();
        label_names.sort();
        label_names.dedup();
        for l in &label_names {
            if matches!(l.as_str(), "timestamp" | "value" | "metric") {
                return Err(bad(format!("a label cannot be called `{l}`")));
            }
            fields.push(Field::new(l, dict(), true));
        }
        let schema = Arc::new(Schema::new(fields));
        let out = match how {
            WriteAs::IpcFile | WriteAs::IpcStream => {
                let opts = arrow_ipc::writer::IpcWriteOptions::default()
                    .with_dictionary_handling(arrow_ipc::writer::DictionaryHandling::Delta);
                if how == WriteAs::IpcFile {
                    Out::IpcFile(
                        arrow_ipc::writer::FileWriter::try_new_with_options(out, &schema, opts)
                            .map_err(arrow_err)?,
                    )
                } else {
                    Out::IpcStream(
                        arrow_ipc::writer::StreamWriter::try_new_with_options(out, &schema, opts)
                            .map_err(arrow_err)?,
                    )
                }
            }
            WriteAs::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(1 << 20))
                    .build();
                Out::Parquet(Box::new(
                    parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props))
                        .map_err(|e| bad(e.to_string()))?,
                ))
            }
        };
        Ok(Self {
            out,
            schema,
            labels: label_names
                .iter()
                .map(|_| StringDictionaryBuilder::new())
                .collect(),
            label_names,
            ts: TimestampMillisecondBuilder::with_capacity(MAX_ROWS).with_timezone("UTC"),
            value: Float64Builder::with_capacity(MAX_ROWS),
            metric: StringDictionaryBuilder::new(),
            rows: 0,
        })
    }

    /// Appends a point.
    pub fn push(
        &mut self,
        metric: &str,
        labels: &[(&str, &str)],
        ts: i64,
        value: f64,
    ) -> io::Result<()> {
        for (k, _) in labels {
            if self
                .label_names
                .binary_search_by(|n| n.as_str().cmp(k))
                .is_err()
            {
                return Err(bad(format!(
                    "label `{k}` is not a column of this file (columns: {})",
                    self.label_names.join(", ")
                )));
            }
        }
        self.ts.append_value(ts);
        self.value.append_value(value);
        self.metric.append_value(metric);
        for (name, b) in self.label_names.iter().zip(&mut self.labels) {
            match labels.iter().find(|(k, _)| k == name) {
                Some((_, v)) => b.append_value(v),
                None => b.append_null(),
            }
        }
        self.rows += 1;
        if self.rows == MAX_ROWS {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        // Dictionaries keep their values across batches, so each batch's dictionary extends the
        // previous one (an IPC delta) instead of replacing it.
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.metric.finish_preserve_values()),
        ];
        columns.extend(
            self.labels
                .iter_mut()
                .map(|b| Arc::new(b.finish_preserve_values()) as ArrayRef),
        );
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_err)?;
        self.rows = 0;
        match &mut self.out {
            Out::IpcFile(w) => w.write(&batch).map_err(arrow_err),
            Out::IpcStream(w) => w.write(&batch).map_err(arrow_err),
            Out::Parquet(w) => w.write(&batch).map_err(|e| bad(e.to_string())),
        }
    }

    /// Writes the last batch and the footer.
    pub fn finish(mut self) -> io::Result<()> {
        self.write_batch()?;
        match self.out {
            Out::IpcFile(mut w) => {
                w.finish().map_err(arrow_err)?;
                w.into_inner().map_err(arrow_err)?.flush()
            }
            Out::IpcStream(mut w) => {
                w.finish().map_err(arrow_err)?;
                w.into_inner().map_err(arrow_err)?.flush()
            }
            Out::Parquet(w) => {
                let mut inner = w.into_inner().map_err(|e| bad(e.to_string()))?;
                inner.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, Float32Array, Int64Array, StringArray};

    fn chunk(columns: Vec<(&str, ArrayRef)>, default_name: &str) -> io::Result<ColumnChunk> {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let layout = Arc::new(Layout::new(&batch.schema(), default_name)?);
        Ok(ColumnChunk { batch, layout })
    }

    fn decode(c: &ColumnChunk) -> (Vec<Row>, Vec<(u64, SeriesKey)>) {
        let (mut rows, mut keys) = (Vec::new(), Vec::new());
        Decoder::default().decode(c, |id, k| keys.push((id, k)), |_, r| rows.push(r));
        (rows, keys)
    }

    #[test]
    fn rows_become_points_of_the_same_series_ids_as_json_and_bad_rows_are_rejected() {
        let region: DictionaryArray<Int32Type> =
            vec![Some("eu"), None, Some("eu"), Some("us"), Some("eu")]
                .into_iter()
                .collect();
        let c = chunk(
            vec![
                (
                    "timestamp",
                    Arc::new(Int64Array::from(vec![
                        Some(1),
                        Some(2),
                        None,
                        Some(4),
                        Some(5),
                    ])) as ArrayRef,
                ),
                (
                    "value",
                    Arc::new(Float32Array::from(vec![
                        Some(1.5),
                        Some(2.0),
                        Some(3.0),
                        Some(f32::NAN),
                        None,
                    ])) as ArrayRef,
                ),
                (
                    "metric",
                    Arc::new(StringArray::from(vec!["lat", "lat", "lat", "lat", "lat"]))
                        as ArrayRef,
                ),
                ("region", Arc::new(region) as ArrayRef),
            ],
            "unused",
        )
        .unwrap();
        let (rows, keys) = decode(&c);
        let eu = SeriesKey::new("lat", &[("region", "eu")]);
        let bare = SeriesKey::new("lat", &[]);
        assert_eq!(
            rows,
            vec![
                Row::Point {
                    id: eu.id(),
                    ts: 1,
                    value: 1.5
                },
                Row::Point {
                    id: bare.id(),
                    ts: 2,
                    value: 2.0
                },
                Row::Reject(RejectReason::MissingField("timestamp")),
                Row::Reject(RejectReason::NonFiniteValue),
                Row::Reject(RejectReason::MissingField("value")),
            ]
        );
        // A null label leaves the label off; each new series' key comes once.
        assert_eq!(keys, vec![(eu.id(), eu), (bare.id(), bare)]);
        let json: serde_json::Value = serde_json::from_str(&row_json(&c, 4)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"metric": "lat", "labels": {"region": "eu"}, "timestamp": 5, "value": null})
        );
    }

    #[test]
    fn without_a_metric_column_the_series_is_named_after_the_file() {
        let c = chunk(
            vec![
                (
                    "timestamp",
                    Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef,
                ),
                ("value", Arc::new(Int64Array::from(vec![3, 4])) as ArrayRef),
            ],
            "realKnownCause/machine_temperature",
        )
        .unwrap();
        let id = SeriesKey::new("realKnownCause/machine_temperature", &[]).id();
        assert_eq!(
            decode(&c).0,
            vec![
                Row::Point {
                    id,
                    ts: 10,
                    value: 3.0
                },
                Row::Point {
                    id,
                    ts: 20,
                    value: 4.0
                },
            ]
        );
    }

    #[test]
    fn a_parquet_page_header_past_the_end_of_the_file_is_an_error() {
        // The stream page headers are read from: its end is an error, not an empty read.
        let mut r = PastEndFails(io::Cursor::new(vec![1u8, 2]));
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        let err = r.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            r.read(&mut []).unwrap(),
            0,
            "an empty read is not past the end"
        );
        // Found by fuzzing: a sound footer, then page headers whose claims the reader used to
        // skip one empty read at a time, for minutes. Refused on opening (the first page header
        // is read to look for a dictionary) or on reading: an error, as the input's last item.
        let data = include_bytes!("../../../fuzz/corpus/parquet/regression-slow-reject");
        let path = std::env::temp_dir().join(format!(
            "telltale-columnar-past-end-{}.parquet",
            std::process::id()
        ));
        std::fs::write(&path, data).unwrap();
        let refused = match ColumnarReader::open(&path, ColumnarFormat::Parquet, "x") {
            Err(_) => true,
            Ok(reader) => {
                let mut results: Vec<_> = reader.collect();
                results.pop().is_some_and(|r| r.is_err())
            }
        };
        std::fs::remove_file(&path).ok();
        assert!(refused);
    }

    #[test]
    fn a_parquet_dictionary_claiming_more_values_than_it_holds_is_refused() {
        // Found by fuzzing: a 1.8 KB file whose dictionary page claims 1.7 billion values (the
        // Parquet reader allocated 13 GB for them).
        let data = include_bytes!("../../../fuzz/corpus/parquet/regression-dictionary-claim");
        let path = std::env::temp_dir().join(format!(
            "telltale-columnar-dictionary-{}.parquet",
            std::process::id()
        ));
        std::fs::write(&path, data).unwrap();
        let err = ColumnarReader::open(&path, ColumnarFormat::Parquet, "x").unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(
            err.to_string()
                .contains("a dictionary page claims 1690898694 values in 160 bytes"),
            "{err}"
        );
    }

    #[test]
    fn the_share_read_is_known_for_ipc_files_and_parquet() {
        let dir = std::env::temp_dir().join(format!("telltale-columnar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (how, format, file) in [
            (WriteAs::IpcFile, ColumnarFormat::ArrowIpc, "p.arrow"),
            (WriteAs::Parquet, ColumnarFormat::Parquet, "p.parquet"),
        ] {
            let path = dir.join(file);
            let out = Box::new(File::create(&path).unwrap());
            let mut w = ColumnarWriter::new(out, how, &["host"]).unwrap();
            // Two batches: MAX_ROWS, then MAX_ROWS / 2.
            for i in 0..(MAX_ROWS + MAX_ROWS / 2) as i64 {
                w.push("m", &[("host", "a")], i, 1.0).unwrap();
            }
            w.finish().unwrap();
            let mut r = ColumnarReader::open(&path, format, "x").unwrap();
            assert_eq!(r.fraction_read(), Some(0.0), "{file}");
            let mut seen = Vec::new();
            while let Some(c) = r.next() {
                c.unwrap();
                seen.push(r.fraction_read().unwrap());
            }
            assert_eq!(seen.last(), Some(&1.0), "{file}: {seen:?}");
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{file}: {seen:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_schema_without_the_needed_columns_is_refused_naming_the_column() {
        let ts = || Arc::new(Int64Array::from(vec![1])) as ArrayRef;
        let no_value = chunk(vec![("timestamp", ts()), ("v", ts())], "x").unwrap_err();
        assert!(
            no_value
                .to_string()
                .contains("no `value` column (columns: timestamp, v)"),
            "{no_value}"
        );
        let numeric_label = chunk(
            vec![("timestamp", ts()), ("value", ts()), ("host", ts())],
            "x",
        )
        .unwrap_err();
        assert!(
            numeric_label.to_string().contains("column `host` is Int64"),
            "{numeric_label}"
        );
        let text_ts = Arc::new(StringArray::from(vec!["2026-01-01"])) as ArrayRef;
        let bad_ts = chunk(vec![("timestamp", text_ts), ("value", ts())], "x").unwrap_err();
        assert!(
            bad_ts.to_string().contains("column `timestamp` is Utf8"),
            "{bad_ts}"
        );
    }
}
