//! The changelog: each series' state in a compacted topic, so that a partition's next owner
//! carries on with warm models (Kafka Streams' way, no cluster layer of our own).
//!
//! Input partition P's series go to partition P of the changelog topic (which therefore has as
//! many partitions as the input), keyed `s/<input topic>/<series id>`; after each round of
//! snapshots of one input partition a marker keyed `r/<input topic>` says which input offset the
//! round corresponds to and how many series it wrote. Compaction keeps the latest value per key
//! (the test broker never compacts: a reader takes the latest value per key itself anyway). A
//! partition's next owner reads its changelog partition to the end, restores the series of the
//! last complete round (a series record of another offset is a round cut short by a crash:
//! left out, the series starts afresh) and resumes from the marker's offset.

use std::collections::HashMap;

use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use telltale_core::key::SeriesKey;

use crate::Error;
use crate::config::Connection;

/// One series' snapshot as written to the changelog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SeriesRecord {
    /// The input offset the snapshot corresponds to (the next to read).
    pub(crate) offset: i64,
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    /// The series' state ([`telltale_engine::snapshot::SeriesState::encode`]).
    pub(crate) state: Vec<u8>,
}

/// The end of one round of snapshots of an input partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct RoundRecord {
    /// The input offset every snapshot of the round corresponds to.
    pub(crate) offset: i64,
    /// Series written in the round.
    pub(crate) series: u64,
}

/// Key of a series' record.
pub(crate) fn series_key(topic: &str, id: u64) -> String {
    format!("s/{topic}/{id:016x}")
}

/// Key of an input partition's round marker.
pub(crate) fn round_key(topic: &str) -> String {
    format!("r/{topic}")
}

/// What the changelog holds for one input partition.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// The offset of the last complete round (where to resume).
    pub(crate) offset: i64,
    /// Its series: id, key, encoded state.
    pub(crate) series: Vec<(u64, SeriesKey, Vec<u8>)>,
    /// Series records left out: of another round, or unreadable.
    pub(crate) stale: u64,
}

/// Reads partitions `parts` (input topic, partition) of the changelog `changelog` to their ends,
/// together, and returns what each holds for its input topic (`None`: no complete round yet).
pub(crate) fn read(
    conn: &Connection,
    changelog: &str,
    parts: &[(String, i32)],
) -> Result<Vec<Option<Restored>>, Error> {
    let mut wanted: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // Per changelog partition, the latest value of each key.
    let mut latest: HashMap<i32, HashMap<Vec<u8>, Option<Vec<u8>>>> = HashMap::new();
    crate::client::read_to_end(conn, changelog, Some(&wanted), |m| {
        if let Some(key) = m.key() {
            latest
                .entry(m.partition())
                .or_default()
                .insert(key.to_vec(), m.payload().map(<[u8]>::to_vec));
        }
    })?;
    Ok(parts
        .iter()
        .map(|(topic, p)| latest.get(p).and_then(|l| restored(l, topic)))
        .collect())
}

/// The last complete round of input topic `topic` among a changelog partition's latest values.
fn restored(latest: &HashMap<Vec<u8>, Option<Vec<u8>>>, topic: &str) -> Option<Restored> {
    let (series_prefix, round) = (format!("s/{topic}/"), round_key(topic));
    let marker = latest.get(round.as_bytes())?.as_deref()?;
    let marker = postcard::from_bytes::<RoundRecord>(marker).ok()?;
    let mut out = Restored {
        offset: marker.offset,
        ..Restored::default()
    };
    for (key, value) in latest {
        let Some(hex) = key.strip_prefix(series_prefix.as_bytes()) else {
            continue;
        };
        let Some(value) = value else { continue };
        let id = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        match (id, postcard::from_bytes::<SeriesRecord>(value)) {
            (Some(id), Ok(r)) if r.offset == marker.offset => {
                let labels: Vec<(&str, &str)> = r
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                out.series
                    .push((id, SeriesKey::new(&r.name, &labels), r.state));
            }
            _ => out.stale += 1,
        }
    }
    out.series.sort_unstable_by_key(|s| s.0);
    Some(out)
}
