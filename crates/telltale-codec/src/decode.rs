//! The one decode layer of replay and live: a record (a line of a file, a Kafka message's
//! line, a row of a columnar batch) becomes [`Record`]s — points, the derived values of an
//! `llm_prediction`, or a reject with its reason — and the keys of series the caller may not
//! know yet. Replay's parser threads and the live consumer both call a [`Decoder`], so every
//! record kind and every format behaves the same in both; the engine's front end
//! (`telltale_engine::front`) turns the records into pipeline points.

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use telltale_core::key::{IdMap, SeriesKey, series_id};
use telltale_core::reject::RejectReason;

use crate::columnar::{self, ColumnChunk, Row};
use crate::csv::CsvLayout;
use crate::influx::{self, KEY_ESCAPES, MEASUREMENT_ESCAPES, Precision};
use crate::json::{PointBuf, RawIdCache, parse_json_line};
use crate::llm::{
    LlmConfig, Prediction, REQUEST_MARGIN, derived_points, parse_prediction, series_labels,
};

/// One decoded record; `pos` is where it came from (a line or row number in replay, a message
/// offset live).
#[derive(Debug)]
pub enum Record {
    /// A point of series `id`.
    Point {
        /// Series id.
        id: u64,
        /// Milliseconds since the Unix epoch.
        ts: i64,
        /// Finite value.
        value: f64,
        /// Position.
        pos: u64,
    },
    /// The derived values of one `llm_prediction` (the front end averages them per window).
    Request {
        /// Series ids of the derived values (`count` of them).
        ids: [u64; 3],
        /// The values.
        values: [f64; 3],
        /// How many of `ids` / `values` are set.
        count: u8,
        /// Timestamp of the request.
        ts: i64,
        /// Position.
        pos: u64,
    },
    /// A record that cannot be used.
    Reject {
        /// Position.
        pos: u64,
        /// Why.
        reason: RejectReason,
        /// The record as text (lossy for bytes that are not UTF-8).
        text: String,
    },
}

/// What a decoder produced: records in input order, and the keys of series this decoder had
/// not announced before (the front end keeps them until the series' first point).
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records in input order.
    pub records: Vec<Record>,
    /// `(series id, key)` of series announced for the first time (repeats are harmless).
    pub keys: Vec<(u64, SeriesKey)>,
}

impl Decoded {
    /// The reason of the first reject among the records, if any.
    pub fn first_reject(&self) -> Option<RejectReason> {
        self.records.iter().find_map(|r| match r {
            Record::Reject { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

/// A CSV input: its column layout and the one series it holds.
#[derive(Debug)]
pub struct CsvSeries {
    /// Column positions.
    pub layout: CsvLayout,
    /// Series name (the file's path without extension).
    pub name: String,
    /// Its id.
    pub id: u64,
}

impl CsvSeries {
    /// The series `name` read with `layout`.
    pub fn new(layout: CsvLayout, name: String) -> Self {
        let id = series_id(&name, std::iter::empty(), &mut Vec::new());
        Self { layout, name, id }
    }
}

/// Per-thread decoder state: reusable buffers and series-id caches; allocates nothing per
/// point once warm.
#[derive(Debug, Default)]
pub struct Decoder {
    llm: Arc<LlmConfig>,
    llm_scratch: Vec<f64>,
    /// Series whose key this decoder has announced (CSV and derived series; JSON points use
    /// `raw_ids`).
    seen: IdMap<()>,
    /// Series ids of JSON points by their raw form.
    raw_ids: RawIdCache,
    point: PointBuf,
    scratch: Vec<u8>,
    columns: columnar::Decoder,
    influx: influx::Line,
    /// Unit of line protocol timestamps.
    precision: Precision,
    /// Series ids of line protocol fields by the raw spelling of their series set and key.
    influx_ids: IdMap<u64>,
    /// Ids of line protocol series sets (measurement and tags) by their raw spelling.
    influx_sets: IdMap<u64>,
    /// Routing key of the last line decoded (see [`Decoder::last_route`]).
    route: u64,
    /// Previous points of cumulative OTLP series.
    cumulative: crate::otlp::Cumulative,
}

impl Decoder {
    /// A decoder turning predictions into derived series as `llm` says.
    pub fn new(llm: Arc<LlmConfig>) -> Self {
        Self {
            llm,
            ..Self::default()
        }
    }

    /// Line protocol timestamps are in `precision` (default nanoseconds).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Decodes one Kafka message: an OTLP metrics request (protobuf; detected by its first
    /// byte, field 1's tag, and a clean decode), else lines of JSON or line protocol.
    /// `Ok(true)` for OTLP. Whatever cannot be read at all is an `Err` (the caller rejects the
    /// whole message); bad lines or points are rejects among the records.
    pub fn message(
        &mut self,
        payload: &[u8],
        pos: u64,
        out: &mut Decoded,
    ) -> Result<bool, RejectReason> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err(RejectReason::EmptyMessage);
        }
        if payload[0] == 0x0a {
            let keep = (out.records.len(), out.keys.len());
            match crate::otlp::decode(payload, pos, &mut self.cumulative, out) {
                Ok(_) => {
                    self.route = out.records[keep.0..]
                        .iter()
                        .find_map(|r| match r {
                            Record::Point { id, .. } => Some(*id),
                            _ => None,
                        })
                        .unwrap_or(0);
                    return Ok(true);
                }
                Err(_) => {
                    out.records.truncate(keep.0);
                    out.keys.truncate(keep.1);
                    if std::str::from_utf8(payload).is_err() {
                        return Err(RejectReason::Malformed(
                            "neither text lines nor an OTLP metrics request (protobuf)",
                        ));
                    }
                }
            }
        }
        for line in text_lines(payload)? {
            self.line(line, pos, out);
        }
        Ok(false)
    }

    /// Decodes one line of text: JSON (a point or an `llm_prediction` record) when it starts
    /// with `{`, InfluxDB line protocol otherwise.
    pub fn line(&mut self, text: &str, pos: u64, out: &mut Decoded) {
        if text.trim_start().starts_with('{') {
            self.json_line(text, pos, out);
        } else {
            self.influx_line(text, pos, out);
        }
    }

    /// The key that keeps together what the last decoded line feeds: a JSON point's series id,
    /// a prediction's first derived series (every derived series of it shares its labels), a
    /// line protocol line's series set (measurement and tags, whatever its fields).
    pub fn last_route(&self) -> u64 {
        self.route
    }

    /// Decodes one line of InfluxDB line protocol (see [`crate::influx`]): a point per numeric
    /// field; a comment line gives nothing.
    pub fn influx_line(&mut self, text: &str, pos: u64, out: &mut Decoded) {
        if text.trim_start().starts_with('#') {
            return;
        }
        if let Err(reason) = influx::parse_line(text, &mut self.influx) {
            out.records.push(Record::Reject {
                pos,
                reason,
                text: text.to_owned(),
            });
            return;
        }
        let l = &self.influx;
        if l.tags.len() > telltale_core::reject::MAX_LABELS {
            out.records.push(Record::Reject {
                pos,
                reason: RejectReason::TooManyLabels,
                text: text.to_owned(),
            });
            return;
        }
        let ts = self.precision.to_ms(l.timestamp);
        let set = xxh3_64(text[l.series.clone()].as_bytes());
        let mut names = None;
        self.route = match self.influx_sets.get(&set) {
            Some(id) => *id,
            None => {
                let (measurement, tags) = names.get_or_insert_with(|| influx_names(text, l));
                if let Err(reason) = telltale_core::reject::check_key(measurement, borrowed(tags)) {
                    out.records.push(Record::Reject {
                        pos,
                        reason,
                        text: text.to_owned(),
                    });
                    return;
                }
                self.point.set(measurement, &borrowed(tags), ts, 0.0);
                let id = self.point.series_id(&mut self.scratch);
                bounded_insert(&mut self.influx_sets, set, id);
                id
            }
        };
        let first_record = out.records.len();
        for (key, value) in &l.fields {
            let raw = xxh3_64_with_seed(text[key.clone()].as_bytes(), set);
            let id = match self.influx_ids.get(&raw) {
                Some(id) => *id,
                None => {
                    let (measurement, tags) = names.get_or_insert_with(|| influx_names(text, l));
                    let mut field = String::new();
                    influx::unescape(&text[key.clone()], KEY_ESCAPES, &mut field);
                    let metric = format!("{measurement}_{field}");
                    if metric.len() > telltale_core::reject::MAX_NAME_BYTES {
                        out.records.truncate(first_record);
                        out.records.push(Record::Reject {
                            pos,
                            reason: RejectReason::LabelTooLong,
                            text: text.to_owned(),
                        });
                        return;
                    }
                    self.point.set(&metric, &borrowed(tags), ts, *value);
                    let id = self.point.series_id(&mut self.scratch);
                    bounded_insert(&mut self.influx_ids, raw, id);
                    // Sent on every cache miss: at least with the series' first point.
                    out.keys.push((id, self.point.series_key()));
                    id
                }
            };
            out.records.push(Record::Point {
                id,
                ts,
                value: *value,
                pos,
            });
        }
    }

    /// Decodes one JSON line: a point, or an `llm_prediction` record.
    pub fn json_line(&mut self, text: &str, pos: u64, out: &mut Decoded) {
        let r = parse_json_line(text, &mut self.point);
        if r.is_err() {
            // Not a point: maybe an `llm_prediction` record (its `labels` is a list of class
            // names, so the point parser stops early).
            if let Some(pred) = parse_prediction(text) {
                match pred {
                    Ok(p) => self.push_derived(&p, pos, out),
                    Err(reason) => out.records.push(Record::Reject {
                        pos,
                        reason,
                        text: text.to_owned(),
                    }),
                }
                return;
            }
        }
        let r = r.and_then(|()| {
            let p = &self.point;
            telltale_core::reject::check_key(p.metric(), (0..p.label_count()).map(|i| p.label(i)))
        });
        out.records.push(match r {
            Ok(()) => {
                let (id, miss) = self.raw_ids.id(&self.point);
                self.route = id;
                if miss {
                    // Sent on every cache miss: at least with the first point of each series
                    // this decoder sees.
                    out.keys.push((id, self.point.series_key()));
                }
                Record::Point {
                    id,
                    ts: self.point.timestamp,
                    value: self.point.value,
                    pos,
                }
            }
            Err(reason) => Record::Reject {
                pos,
                reason,
                text: text.to_owned(),
            },
        });
    }

    /// Decodes one CSV data row of `csv`.
    pub fn csv_row(&mut self, csv: &CsvSeries, text: &str, pos: u64, out: &mut Decoded) {
        let record = match csv.layout.parse(text) {
            Ok((ts, value)) => {
                announce(&mut self.seen, csv.id, out, || {
                    SeriesKey::new(&csv.name, &[])
                });
                Record::Point {
                    id: csv.id,
                    ts,
                    value,
                    pos,
                }
            }
            Err(reason) => Record::Reject {
                pos,
                reason,
                text: text.to_owned(),
            },
        };
        out.records.push(record);
    }

    /// Decodes the rows of a columnar batch; row `i` gets position `first + i`.
    pub fn columns(&mut self, chunk: &ColumnChunk, first: u64, out: &mut Decoded) {
        let (records, keys) = (&mut out.records, &mut out.keys);
        self.columns.decode(
            chunk,
            |id, key| keys.push((id, key)),
            |i, row| {
                let pos = first + i as u64;
                records.push(match row {
                    Row::Point { id, ts, value } => Record::Point { id, ts, value, pos },
                    Row::Reject(reason) => Record::Reject {
                        pos,
                        reason,
                        text: columnar::row_json(chunk, i),
                    },
                });
            },
        );
    }

    /// The derived values of a prediction (margin, low confidence, disagreement), and its own
    /// margin as a point when `llm.per_request` is set.
    fn push_derived(&mut self, p: &Prediction, pos: u64, out: &mut Decoded) {
        let labels = series_labels(p, &self.llm);
        if let Err(reason) = telltale_core::reject::check_key("", labels.iter().copied()) {
            out.records.push(Record::Reject {
                pos,
                reason,
                text: format!("llm_prediction of model {:?}", p.model),
            });
            return;
        }
        let (mut ids, mut values, mut count) = ([0u64; 3], [0.0; 3], 0u8);
        for (metric, value) in derived_points(p, &self.llm, &mut self.llm_scratch) {
            let Some(value) = value else { continue };
            let id = self.derived_id(metric, &labels, p.timestamp, value, out);
            ids[count as usize] = id;
            values[count as usize] = value;
            count += 1;
        }
        self.route = ids[0];
        out.records.push(Record::Request {
            ids,
            values,
            count,
            ts: p.timestamp,
            pos,
        });
        if self.llm.per_request {
            let id = self.derived_id(REQUEST_MARGIN, &labels, p.timestamp, values[0], out);
            out.records.push(Record::Point {
                id,
                ts: p.timestamp,
                value: values[0],
                pos,
            });
        }
    }

    fn derived_id(
        &mut self,
        metric: &str,
        labels: &[(&str, &str)],
        ts: i64,
        value: f64,
        out: &mut Decoded,
    ) -> u64 {
        self.point.set(metric, labels, ts, value);
        let id = self.point.series_id(&mut self.scratch);
        let point = &self.point;
        announce(&mut self.seen, id, out, || point.series_key());
        id
    }
}

/// The non-blank lines of a message's text, or why it has none to read (empty, not UTF-8).
pub fn text_lines(payload: &[u8]) -> Result<impl Iterator<Item = &str>, RejectReason> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(RejectReason::EmptyMessage);
    }
    let text = std::str::from_utf8(payload).map_err(|_| RejectReason::NotUtf8)?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()))
}

/// The unescaped measurement and tags of a parsed line protocol line (a new series only).
fn influx_names(text: &str, l: &influx::Line) -> (String, Vec<(String, String)>) {
    let mut measurement = String::new();
    influx::unescape(
        &text[l.measurement.clone()],
        MEASUREMENT_ESCAPES,
        &mut measurement,
    );
    let tags = l
        .tags
        .iter()
        .map(|(k, v)| {
            let (mut key, mut value) = (String::new(), String::new());
            influx::unescape(&text[k.clone()], KEY_ESCAPES, &mut key);
            influx::unescape(&text[v.clone()], KEY_ESCAPES, &mut value);
            (key, value)
        })
        .collect();
    (measurement, tags)
}

fn borrowed(tags: &[(String, String)]) -> Vec<(&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Inserts into a cache bounded like [`RawIdCache`]: cleared when full.
fn bounded_insert(map: &mut IdMap<u64>, key: u64, id: u64) {
    if map.len() >= RawIdCache::MAX {
        map.clear();
    }
    map.insert(key, id);
}

/// Announces a series' key the first time this decoder produces a point of it.
fn announce(seen: &mut IdMap<()>, id: u64, out: &mut Decoded, key: impl FnOnce() -> SeriesKey) {
    if seen.insert(id, ()).is_none() {
        out.keys.push((id, key()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(lines: &[String]) -> Vec<Option<&'static str>> {
        let mut d = Decoder::new(Default::default());
        lines
            .iter()
            .map(|l| {
                let mut out = Decoded::default();
                d.line(l, 0, &mut out);
                out.first_reject().map(|r| r.code())
            })
            .collect()
    }

    #[test]
    fn names_and_label_values_over_the_limits_are_rejected_in_every_text_format() {
        use telltale_core::reject::{MAX_LABEL_VALUE_BYTES, MAX_NAME_BYTES};
        let long_value = "v".repeat(100 * 1024);
        let at_limit = "v".repeat(MAX_LABEL_VALUE_BYTES);
        let long_name = "n".repeat(MAX_NAME_BYTES + 1);
        let json = |metric: &str, key: &str, value: &str| {
            format!(
                r#"{{"metric":"{metric}","labels":{{"{key}":"{value}"}},"timestamp":1,"value":1}}"#
            )
        };
        let lines = vec![
            json("m", "k", &long_value),
            json("m", "k", &at_limit),
            json(&long_name, "k", "v"),
            json("m", &long_name, "v"),
            format!("m,k={long_value} f=1 1"),
            format!("m,k={at_limit} f=1 1"),
            format!("m,k=v {long_name}=1 1"),
        ];
        assert_eq!(
            reasons(&lines),
            vec![
                Some("label_too_long"),
                None,
                Some("label_too_long"),
                Some("label_too_long"),
                Some("label_too_long"),
                None,
                Some("label_too_long"),
            ]
        );
    }
}
