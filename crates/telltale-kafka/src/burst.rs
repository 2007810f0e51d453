//! A burst: the messages of one poll round, copied out of librdkafka's buffers into one arena so
//! the consumer thread can hand them to the stage thread (decoding, routing, producing) and go
//! back to polling. Bursts are recycled: once warm, nothing is allocated per message.

use std::ops::Range;

use rdkafka::message::{BorrowedMessage, Headers as _, Message};

/// Where one message's parts sit in its burst's arena.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// Input stream (topic and partition) index.
    pub(crate) stream: u32,
    /// Offset in its partition.
    pub(crate) offset: i64,
    /// Kafka timestamp (ms), if the message has one.
    pub(crate) timestamp: Option<i64>,
    pub(crate) payload: Range<usize>,
    pub(crate) key: Option<Range<usize>>,
    /// Range in the burst's header list.
    pub(crate) headers: Range<usize>,
}

/// One header: name and value ranges in the arena.
#[derive(Debug, Clone)]
pub(crate) struct HeaderRef {
    name: Range<usize>,
    value: Option<Range<usize>>,
}

/// Messages of one poll round, in the order they were polled.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    /// Number of the burst in its session (bursts are handled in this order).
    pub(crate) seq: u64,
    bytes: Vec<u8>,
    pub(crate) msgs: Vec<Meta>,
    headers: Vec<HeaderRef>,
    /// Kafka timestamps of the messages (ms), for the latency histogram.
    pub(crate) stamps: Vec<i64>,
    /// Series to restore before the messages: (input stream, id, key, encoded state).
    pub(crate) restore: Vec<(u32, u64, telltale_core::key::SeriesKey, Vec<u8>)>,
    /// Snapshot rounds to write after the messages: (input stream, next offset to read).
    pub(crate) snapshot: Vec<(u32, i64)>,
}

impl Burst {
    /// Empties the burst for reuse (its buffers keep their capacity).
    pub(crate) fn clear(&mut self, seq: u64) {
        self.seq = seq;
        self.bytes.clear();
        self.msgs.clear();
        self.headers.clear();
        self.stamps.clear();
        self.restore.clear();
        self.snapshot.clear();
    }

    fn copy(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }

    /// Copies `m` (from input stream `stream`) into the burst.
    pub(crate) fn push(&mut self, stream: u32, m: &BorrowedMessage<'_>) {
        let first = self.headers.len();
        if let Some(h) = m.headers() {
            for i in 0..h.count() {
                let header = h.get(i);
                self.header(header.key, header.value);
            }
        }
        self.finish(
            stream,
            m.offset(),
            m.timestamp().to_millis(),
            m.payload(),
            m.key(),
            first,
        );
    }

    fn header(&mut self, name: &str, value: Option<&[u8]>) {
        let name = self.copy(name.as_bytes());
        let value = value.map(|v| self.copy(v));
        self.headers.push(HeaderRef { name, value });
    }

    fn finish(
        &mut self,
        stream: u32,
        offset: i64,
        timestamp: Option<i64>,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        first_header: usize,
    ) {
        let payload = self.copy(payload.unwrap_or(&[]));
        let key = key.map(|k| self.copy(k));
        if let Some(ts) = timestamp {
            self.stamps.push(ts);
        }
        self.msgs.push(Meta {
            stream,
            offset,
            timestamp,
            payload,
            key,
            headers: first_header..self.headers.len(),
        });
    }

    /// A message's payload.
    pub(crate) fn payload(&self, m: &Meta) -> &[u8] {
        &self.bytes[m.payload.clone()]
    }

    /// A message's key.
    pub(crate) fn key(&self, m: &Meta) -> Option<&[u8]> {
        m.key.clone().map(|k| &self.bytes[k])
    }

    /// A message's headers as (name, value).
    pub(crate) fn headers<'a>(
        &'a self,
        m: &Meta,
    ) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        self.headers[m.headers.clone()].iter().map(|h| {
            (
                // Copied from a `&str`: valid UTF-8.
                std::str::from_utf8(&self.bytes[h.name.clone()]).unwrap_or(""),
                h.value.clone().map(|v| &self.bytes[v]),
            )
        })
    }
}
