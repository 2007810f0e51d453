//! Prometheus remote write (protocol 1.0): a snappy-compressed (block format) protobuf
//! `WriteRequest`. Each time series is a metric (`__name__`) with labels; each sample becomes a
//! point (its timestamp is already in milliseconds). Staleness markers (the special NaN
//! Prometheus writes when a series disappears) are not data and are skipped; any other
//! non-finite sample becomes a `non_finite_value` reject. Metadata is ignored.

use telltale_core::key::SeriesKey;
use telltale_core::reject::{MAX_LABELS, RejectReason};

use crate::decode::{Decoded, Record};
use crate::json::PointBuf;

/// `prometheus.WriteRequest` (fields 1; metadata, field 3, is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Largest decompressed body accepted (Prometheus sends a few MB at most).
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Prometheus' staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What a request held beyond its records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Series in the request.
    pub series: usize,
    /// Samples that became points or rejects.
    pub samples: usize,
    /// Staleness markers skipped.
    pub stale: usize,
}

/// Why a request body cannot be read at all (the whole request is refused: HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not snappy's block format.
    #[error("the body is not snappy-compressed (block format): {0}")]
    Snappy(String),
    /// Not a `WriteRequest`.
    #[error("the body is not a remote-write WriteRequest: {0}")]
    Protobuf(String),
}

/// Decodes a request body into points (positions `pos`, the request's number) and the keys of
/// every series in it; a series without `__name__` or with too many labels becomes one reject
/// per sample.
pub fn decode(body: &[u8], pos: u64, out: &mut Decoded) -> Result<Summary, BodyError> {
    // The length the body claims is checked before anything is allocated for it (found by the
    // fuzz target: 7 bytes claiming gigabytes).
    let claimed = snap::raw::decompress_len(body).map_err(|e| BodyError::Snappy(e.to_string()))?;
    if claimed > MAX_DECOMPRESSED {
        return Err(BodyError::Snappy(format!(
            "the body decompresses to {claimed} bytes, over the {MAX_DECOMPRESSED}-byte limit"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| BodyError::Snappy(e.to_string()))?;
    let request = <WriteRequest as prost::Message>::decode(&raw[..])
        .map_err(|e| BodyError::Protobuf(e.to_string()))?;
    let mut summary = Summary {
        series: request.timeseries.len(),
        ..Summary::default()
    };
    let (mut point, mut scratch) = (PointBuf::default(), Vec::new());
    for ts in &request.timeseries {
        let name = ts.labels.iter().find(|l| l.name == "__name__");
        let labels: Vec<(&str, &str)> = ts
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        let bad = match name {
            None => Some(RejectReason::MissingField("__name__")),
            Some(_) if labels.len() > MAX_LABELS => Some(RejectReason::TooManyLabels),
            Some(n) if n.value.is_empty() => Some(RejectReason::MissingField("__name__")),
            Some(n) => telltale_core::reject::check_key(&n.value, labels.iter().copied()).err(),
        };
        let id = if bad.is_none() {
            let name = name.map_or("", |n| n.value.as_str());
            point.set(name, &labels, 0, 0.0);
            let id = point.series_id(&mut scratch);
            out.keys.push((id, point.series_key()));
            Some(id)
        } else {
            None
        };
        for s in &ts.samples {
            if s.value.to_bits() == STALE_NAN {
                summary.stale += 1;
                continue;
            }
            summary.samples += 1;
            let reason = match (id, bad) {
                (_, Some(r)) => Some(r),
                _ if !s.value.is_finite() => Some(RejectReason::NonFiniteValue),
                _ => None,
            };
            out.records.push(match (id, reason) {
                (Some(id), None) => Record::Point {
                    id,
                    ts: s.timestamp,
                    value: s.value,
                    pos,
                },
                (_, reason) => Record::Reject {
                    pos,
                    reason: reason.unwrap_or(RejectReason::Malformed("remote write")),
                    text: sample_text(ts, s),
                },
            });
        }
    }
    Ok(summary)
}

/// A rejected sample as text (for the dead-letter record): its series and sample as JSON.
fn sample_text(ts: &TimeSeries, s: &Sample) -> String {
    let key = SeriesKey::new(
        ts.labels
            .iter()
            .find(|l| l.name == "__name__")
            .map_or("", |l| l.value.as_str()),
        &ts.labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect::<Vec<_>>(),
    );
    serde_json::json!({
        "series": key,
        "timestamp": s.timestamp,
        "value": if s.value.is_finite() { serde_json::json!(s.value) } else { serde_json::json!(s.value.to_string()) },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &WriteRequest) -> Vec<u8> {
        let raw = prost::Message::encode_to_vec(req);
        snap::raw::Encoder::new().compress_vec(&raw).unwrap()
    }

    fn series(name: Option<&str>, samples: &[(f64, i64)]) -> TimeSeries {
        let mut labels = vec![Label {
            name: "job".into(),
            value: "api".into(),
        }];
        if let Some(n) = name {
            labels.insert(
                0,
                Label {
                    name: "__name__".into(),
                    value: n.into(),
                },
            );
        }
        TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn samples_become_points_of_the_series_named_by_its_labels() {
        let req = WriteRequest {
            timeseries: vec![series(
                Some("http_requests"),
                &[
                    (1.0, 1000),
                    (f64::from_bits(STALE_NAN), 2000),
                    (f64::NAN, 3000),
                ],
            )],
        };
        let mut out = Decoded::default();
        let s = decode(&body(&req), 7, &mut out).unwrap();
        assert_eq!(
            s,
            Summary {
                series: 1,
                samples: 2,
                stale: 1
            }
        );
        let id = SeriesKey::new("http_requests", &[("job", "api")]).id();
        assert_eq!(out.keys[0].0, id);
        assert!(matches!(
            out.records[0],
            Record::Point { id: i, ts: 1000, value, pos: 7 } if i == id && value == 1.0
        ));
        assert!(matches!(
            out.records[1],
            Record::Reject {
                reason: RejectReason::NonFiniteValue,
                ..
            }
        ));
    }

    #[test]
    fn a_series_without_a_name_is_rejected_and_bad_bodies_are_refused() {
        let req = WriteRequest {
            timeseries: vec![series(None, &[(1.0, 1000)])],
        };
        let mut out = Decoded::default();
        decode(&body(&req), 0, &mut out).unwrap();
        assert!(matches!(
            out.records[0],
            Record::Reject {
                reason: RejectReason::MissingField("__name__"),
                ..
            }
        ));
        assert!(matches!(
            decode(b"not snappy", 0, &mut out),
            Err(BodyError::Snappy(_))
        ));
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(matches!(
            decode(&garbage, 0, &mut out),
            Err(BodyError::Protobuf(_))
        ));
        let mut truncated = body(&WriteRequest {
            timeseries: vec![series(Some("m"), &[(1.0, 1)])],
        });
        truncated.truncate(truncated.len() - 3);
        assert!(decode(&truncated, 0, &mut out).is_err());
    }

    #[test]
    fn a_body_encoded_by_hand_decodes() {
        // The fuzz seed: protobuf and snappy (one literal) written field by field, not by prost.
        let body = include_bytes!("../../../fuzz/corpus/remote_write/two_series");
        let mut out = Decoded::default();
        let s = decode(body, 0, &mut out).unwrap();
        assert_eq!((s.series, s.samples), (2, 3));
        let id = SeriesKey::new("http_requests_total", &[("job", "api")]).id();
        assert!(matches!(
            out.records[1],
            Record::Point { id: i, ts: 1_700_000_015_000, value, .. } if i == id && value == 2.5
        ));
    }

    #[test]
    fn a_body_claiming_a_huge_size_is_refused_before_allocating() {
        // A snappy header claiming ~4 GiB, from the fuzz target.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
        let mut out = Decoded::default();
        let e = decode(&body, 0, &mut out).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }
}
