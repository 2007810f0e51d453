//! OpenTelemetry metrics (OTLP, protobuf `ExportMetricsServiceRequest`): what the OpenTelemetry
//! SDKs send over OTLP/HTTP and the Collector's Kafka exporter writes by default.
//!
//! A series is the metric's name plus the resource's attributes and the data point's (the
//! point's win on a clash); attribute values that are strings, booleans or numbers become label
//! text, others (arrays, maps, bytes) are left out. Timestamps are `time_unix_nano` in
//! milliseconds.
//!
//! | OTLP | series and value |
//! |---|---|
//! | gauge | `<name>`: the value |
//! | sum, delta, or cumulative non-monotonic | `<name>`: the value |
//! | sum, cumulative monotonic (a counter) | `<name>_rate`: increase per second since the series' previous point (the first point, and a reset, give none) |
//! | histogram, exponential histogram | `<name>_count`, `<name>_sum` per interval (cumulative ones as the difference from the previous point) and `<name>_mean` = sum / count when count > 0 |
//! | summary | `<name>` with a `quantile` label per quantile; `<name>_count`, `<name>_sum` as for histograms |
//!
//! The messages are declared here with prost's derive (field numbers from the OTLP `.proto`
//! files): the `opentelemetry-proto` crate's types come only with tonic, tokio and the
//! OpenTelemetry SDK, two dozen crates this engine does not otherwise need.

use telltale_core::key::IdMap;
use telltale_core::reject::{MAX_LABELS, RejectReason};

use crate::decode::{Decoded, Record};
use crate::json::PointBuf;

/// The OTLP messages read (fields this engine does not use are left out; prost skips them).
#[allow(missing_docs)]
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
        pub value: Option<any_value::Value>,
    }
    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
        }
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(oneof = "metric::Data", tags = "5, 7, 9, 10, 11")]
        pub data: Option<metric::Data>,
    }
    pub mod metric {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Data {
            #[prost(message, tag = "5")]
            Gauge(super::Gauge),
            #[prost(message, tag = "7")]
            Sum(super::Sum),
            #[prost(message, tag = "9")]
            Histogram(super::Histogram),
            #[prost(message, tag = "10")]
            ExponentialHistogram(super::ExponentialHistogram),
            #[prost(message, tag = "11")]
            Summary(super::Summary),
        }
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<HistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<ExponentialHistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<SummaryDataPoint>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(oneof = "number_data_point::Value", tags = "4, 6")]
        pub value: Option<number_data_point::Value>,
    }
    pub mod number_data_point {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(double, tag = "4")]
            AsDouble(f64),
            #[prost(sfixed64, tag = "6")]
            AsInt(i64),
        }
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramDataPoint {
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogramDataPoint {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, tag = "5")]
        pub sum: f64,
        #[prost(message, repeated, tag = "6")]
        pub quantile_values: Vec<ValueAtQuantile>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueAtQuantile {
        #[prost(double, tag = "1")]
        pub quantile: f64,
        #[prost(double, tag = "2")]
        pub value: f64,
    }
}

const CUMULATIVE: i32 = 2;

/// The previous point of each cumulative series (for rates and per-interval differences).
#[derive(Debug, Default)]
pub struct Cumulative {
    last: IdMap<(u64, i64, f64)>,
}

impl Cumulative {
    /// Entries before the state is cleared (bounded memory; a cleared series skips one point).
    pub const MAX: usize = 1 << 22;

    /// The increase of series `id` since its previous point and the seconds between them; none
    /// for its first point, a reset (a new start time, or a lower value) or a repeat.
    fn delta(&mut self, id: u64, start: u64, ts: i64, value: f64) -> Option<(f64, f64)> {
        if self.last.len() >= Self::MAX {
            self.last.clear();
        }
        let prev = self.last.insert(id, (start, ts, value));
        let (s0, t0, v0) = prev?;
        (s0 == start && value >= v0 && ts > t0).then(|| (value - v0, (ts - t0) as f64 / 1000.0))
    }
}

/// What a message held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Data points read.
    pub data_points: usize,
    /// Points produced.
    pub points: usize,
}

/// Why a body is not an OTLP metrics request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an OTLP ExportMetricsServiceRequest: {0}")]
pub struct BodyError(pub String);

fn attr_text(v: &pb::AnyValue) -> Option<String> {
    use pb::any_value::Value;
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
    })
}

/// Builds points with their series ids and keys.
struct Out<'a> {
    out: &'a mut Decoded,
    point: PointBuf,
    scratch: Vec<u8>,
    pos: u64,
    points: usize,
}

impl Out<'_> {
    fn push(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        extra: Option<(&str, String)>,
        ts: i64,
        value: f64,
    ) -> Option<u64> {
        let mut l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some((k, v)) = &extra {
            l.retain(|(x, _)| x != k);
            l.push((k, v.as_str()));
        }
        if l.len() > MAX_LABELS {
            self.reject(RejectReason::TooManyLabels, name, ts, value);
            return None;
        }
        if !value.is_finite() {
            self.reject(RejectReason::NonFiniteValue, name, ts, value);
            return None;
        }
        if let Err(reason) = telltale_core::reject::check_key(name, l.iter().copied()) {
            self.reject(reason, name, ts, value);
            return None;
        }
        self.point.set(name, &l, ts, value);
        let id = self.point.series_id(&mut self.scratch);
        self.out.keys.push((id, self.point.series_key()));
        self.out.records.push(Record::Point {
            id,
            ts,
            value,
            pos: self.pos,
        });
        self.points += 1;
        Some(id)
    }

    /// The series id `name` with `labels` would get (for cumulative state), without a point.
    fn id(&mut self, name: &str, labels: &[(String, String)]) -> u64 {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.point.set(name, &l, 0, 0.0);
        self.point.series_id(&mut self.scratch)
    }

    fn reject(&mut self, reason: RejectReason, name: &str, ts: i64, value: f64) {
        self.out.records.push(Record::Reject {
            pos: self.pos,
            reason,
            text: serde_json::json!({"metric": name, "timestamp": ts, "value": value.to_string()})
                .to_string(),
        });
    }
}

/// Labels of a data point: the resource's attributes, then the point's (which win).
fn labels(resource: &[(String, String)], attrs: &[pb::KeyValue]) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = resource.to_vec();
    for kv in attrs {
        if let Some(v) = kv.value.as_ref().and_then(attr_text) {
            l.retain(|(k, _)| *k != kv.key);
            l.push((kv.key.clone(), v));
        }
    }
    l
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

/// One histogram-like data point: its interval's start and end, count and sum.
struct Interval {
    start: u64,
    ts: i64,
    count: f64,
    sum: Option<f64>,
}

/// Count, sum and mean of a histogram-like point: per interval (`cumulative` ones as the
/// difference from the series' previous point).
fn counts(
    o: &mut Out<'_>,
    state: &mut Cumulative,
    name: &str,
    l: &[(String, String)],
    cumulative: bool,
    iv: Interval,
) {
    let Interval {
        start,
        ts,
        count,
        sum,
    } = iv;
    let (count, sum) = if cumulative {
        let id = o.id(&format!("{name}_count"), l);
        let Some((dc, _)) = state.delta(id, start, ts, count) else {
            if let Some(s) = sum {
                let sid = o.id(&format!("{name}_sum"), l);
                state.delta(sid, start, ts, s);
            }
            return;
        };
        let ds = sum.and_then(|s| {
            let sid = o.id(&format!("{name}_sum"), l);
            state.delta(sid, start, ts, s).map(|(d, _)| d)
        });
        (dc, ds)
    } else {
        (count, sum)
    };
    o.push(&format!("{name}_count"), l, None, ts, count);
    if let Some(s) = sum {
        o.push(&format!("{name}_sum"), l, None, ts, s);
        if count > 0.0 {
            o.push(&format!("{name}_mean"), l, None, ts, s / count);
        }
    }
}

/// Decodes an `ExportMetricsServiceRequest` into points (position `pos`); `state` keeps the
/// previous point of cumulative series.
pub fn decode(
    body: &[u8],
    pos: u64,
    state: &mut Cumulative,
    out: &mut Decoded,
) -> Result<Summary, BodyError> {
    let req = <pb::ExportMetricsServiceRequest as prost::Message>::decode(body)
        .map_err(|e| BodyError(e.to_string()))?;
    let mut o = Out {
        out,
        point: PointBuf::default(),
        scratch: Vec::new(),
        pos,
        points: 0,
    };
    let mut data_points = 0;
    for rm in &req.resource_metrics {
        let resource: Vec<(String, String)> = rm
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref().and_then(attr_text)?)))
            .collect();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                use pb::metric::Data;
                let name = m.name.as_str();
                match &m.data {
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            data_points += 1;
                            let l = labels(&resource, &p.attributes);
                            o.push(name, &l, None, ms(p.time_unix_nano), number(p));
                        }
                    }
                    Some(Data::Sum(s)) => {
                        for p in &s.data_points {
                            data_points += 1;
                            let l = labels(&resource, &p.attributes);
                            let ts = ms(p.time_unix_nano);
                            if s.aggregation_temporality == CUMULATIVE && s.is_monotonic {
                                let rate = format!("{name}_rate");
                                let id = o.id(&rate, &l);
                                if let Some((d, secs)) =
                                    state.delta(id, p.start_time_unix_nano, ts, number(p))
                                {
                                    o.push(&rate, &l, None, ts, d / secs);
                                }
                            } else {
                                o.push(name, &l, None, ts, number(p));
                            }
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        let points = h.data_points.iter().map(|p| {
                            (
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                p.count,
                                p.sum,
                            )
                        });
                        let cumulative = h.aggregation_temporality == CUMULATIVE;
                        data_points +=
                            histogram(&mut o, state, &resource, name, cumulative, points);
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        let points = h.data_points.iter().map(|p| {
                            (
                                &p.attributes,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                p.count,
                                p.sum,
                            )
                        });
                        let cumulative = h.aggregation_temporality == CUMULATIVE;
                        data_points +=
                            histogram(&mut o, state, &resource, name, cumulative, points);
                    }
                    Some(Data::Summary(s)) => {
                        for p in &s.data_points {
                            data_points += 1;
                            let l = labels(&resource, &p.attributes);
                            let ts = ms(p.time_unix_nano);
                            for q in &p.quantile_values {
                                o.push(
                                    name,
                                    &l,
                                    Some(("quantile", q.quantile.to_string())),
                                    ts,
                                    q.value,
                                );
                            }
                            let iv = Interval {
                                start: p.start_time_unix_nano,
                                ts,
                                count: p.count as f64,
                                sum: Some(p.sum),
                            };
                            counts(&mut o, state, name, &l, true, iv);
                        }
                    }
                    None => {}
                }
            }
        }
    }
    Ok(Summary {
        data_points,
        points: o.points,
    })
}

/// Histogram data points (plain or exponential: the same fields matter) as interval counts;
/// returns how many there were.
fn histogram<'a>(
    o: &mut Out<'_>,
    state: &mut Cumulative,
    resource: &[(String, String)],
    name: &str,
    cumulative: bool,
    points: impl Iterator<Item = (&'a Vec<pb::KeyValue>, u64, u64, u64, Option<f64>)>,
) -> usize {
    let mut n = 0;
    for (attrs, start, time, count, sum) in points {
        n += 1;
        let l = labels(resource, attrs);
        let iv = Interval {
            start,
            ts: ms(time),
            count: count as f64,
            sum,
        };
        counts(o, state, name, &l, cumulative, iv);
    }
    n
}

fn number(p: &pb::NumberDataPoint) -> f64 {
    match p.value {
        Some(pb::number_data_point::Value::AsDouble(d)) => d,
        Some(pb::number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}
