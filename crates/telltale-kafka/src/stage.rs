//! What the stage thread does with each burst of messages the consumer thread copied out.
//!
//! - [`Score`]: decode (the decode layer replay uses), route through the same front end to the
//!   shards, flush: the scoring engine.
//! - [`Repartition`]: decode, and forward each valid line to the repartition topic on the
//!   partition of its series (the first stage of `[kafka] repartition = true`).
//!
//! Either way a message with any bad record goes to the dead-letter topic whole, and every
//! message the stage produces belongs to a numbered batch that [`Acks`] confirms; a burst's
//! offsets are stored once its last batch is confirmed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};
use telltale_codec::decode::{Decoded, Decoder, text_lines};
use telltale_core::event::{StreamName, Streams};
use telltale_core::reject::RejectReason;
use telltale_engine::Report;
use telltale_engine::front::Front;

use crate::Error;
use crate::acks::{Acks, RING};
use crate::burst::{Burst, Meta};
use crate::ingest::HttpBatch;
use crate::metrics::Metrics;
use crate::sink::{Producer, Stamps, dead_letter_headers, dlq_opaque, send_blocking};

/// A burst handler running on the stage thread.
pub(crate) trait Stage: Send {
    /// Handles `burst`; returns the number of the last batch holding its outputs.
    fn burst(&mut self, burst: &mut Burst) -> Result<u64, Error>;

    /// Number of the batch being filled.
    fn open_batch(&self) -> u64;

    /// Messages dead-lettered so far.
    fn dead_letters(&self) -> u64;

    /// Routes the records of an HTTP request and flushes them; returns the batch holding them.
    fn http(&mut self, batch: HttpBatch) -> Result<u64, Error> {
        // Only the scoring stage takes HTTP input.
        drop(batch);
        Ok(self.open_batch())
    }

    /// Ends the stage (the input is drained): the scoring stage's report, if any.
    fn finish(self: Box<Self>) -> Result<Option<Report>, Error>;
}

/// Where a stage sends dead letters.
pub(crate) struct Dlq {
    pub(crate) producer: Arc<Producer>,
    pub(crate) acks: Arc<Acks>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) topic: String,
    pub(crate) streams: Arc<Streams>,
    /// Input whose outputs were delivered before a restore.
    pub(crate) delivered: Arc<crate::acks::Delivered>,
}

impl Dlq {
    /// Sends message `m` of `burst`, unchanged, to the dead-letter topic with the reason in its
    /// headers, as part of batch `no`.
    fn send(&self, burst: &Burst, m: &Meta, no: u64, reason: &RejectReason) -> KafkaResult<()> {
        if self
            .delivered
            .skip(m.stream, m.offset, &self.metrics.already_delivered)
        {
            return Ok(());
        }
        self.metrics.reject(reason);
        let (topic, partition) = self.streams.with(m.stream, |s| match s {
            StreamName::Kafka { topic, partition } => (topic.clone(), *partition),
            StreamName::File(f) => (f.clone(), -1),
        });
        let (code, detail) = (reason.code(), reason.to_string());
        tracing::debug!(
            target: "telltale::kafka",
            "dead letter {topic}/{partition}@{}: {code}: {detail}",
            m.offset
        );
        let mut headers: OwnedHeaders =
            dead_letter_headers(code, &detail, &topic, partition, m.offset);
        for (key, value) in burst.headers(m) {
            headers = headers.insert(Header { key, value });
        }
        self.acks.sent(no);
        let mut record = BaseRecord::with_opaque_to(&self.topic, dlq_opaque(no))
            .payload(burst.payload(m))
            .headers(headers);
        if let Some(key) = burst.key(m) {
            record = record.key(key);
        }
        if let Some(ts) = m.timestamp {
            record = record.timestamp(ts);
        }
        send_blocking(&self.producer, &self.metrics, record)
            .inspect_err(|_| self.acks.failed(no, "dead letter".into()))
    }
}

/// The scoring stage: decode, route, score.
pub(crate) struct Score {
    /// Input stream of points that come over HTTP.
    pub(crate) http_stream: u32,
    pub(crate) front: Front,
    pub(crate) decoder: Decoder,
    pub(crate) decoded: Decoded,
    pub(crate) dlq: Dlq,
    /// Burst timestamps to the sink, ahead of the burst's last batch.
    pub(crate) stamps: Sender<Stamps>,
    pub(crate) recycled: Receiver<Vec<i64>>,
    pub(crate) dead: u64,
}

impl Score {
    /// Decodes one message and routes its records; a message with any bad record is
    /// dead-lettered whole and none of its records are scored.
    fn message(&mut self, burst: &Burst, m: &Meta) -> Result<(), Error> {
        let d = &mut self.decoded;
        let verdict = self
            .decoder
            .message(burst.payload(m), m.offset as u64, d)
            .map(|_| d.first_reject());
        let reason = match verdict {
            Ok(None) => {
                self.front.push(d, m.stream);
                return Ok(());
            }
            Ok(Some(reason)) | Err(reason) => reason,
        };
        d.records.clear();
        // The keys announced stay with the front end: the decoder will not announce them again.
        self.front.take_keys(d);
        self.dead += 1;
        let no = self.front.pipe.open_batch();
        self.dlq.send(burst, m, no, &reason)?;
        Ok(())
    }
}

impl Stage for Score {
    fn burst(&mut self, burst: &mut Burst) -> Result<u64, Error> {
        let metrics = self.dlq.metrics.clone();
        let routed_before = self.front.pipe.records();
        for (stream, id, key, state) in burst.restore.drain(..) {
            match self.front.pipe.restore(id, key, stream, &state) {
                Ok(()) => metrics.restored.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if metrics.restore_ignored.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            target: "telltale::kafka",
                            "a changelog snapshot was not restored ({e}); its series starts                              afresh (telltale_changelog_ignored_snapshots counts them)"
                        );
                    }
                    0
                }
            };
        }
        for i in 0..burst.msgs.len() {
            let m = burst.msgs[i].clone();
            self.message(burst, &m)?;
        }
        let split = self.front.pipe.split_series();
        if split > 0 && metrics.split_series.swap(split, Ordering::Relaxed) == 0 {
            tracing::warn!(
                target: "telltale::kafka",
                "a series arrives on more than one partition: the input is not keyed by series, \
                 so its points can come out of order and, with several instances, reach two \
                 models (key messages by series, or set [kafka] repartition = true; \
                 telltale_series_on_several_partitions counts them)"
            );
        }
        metrics
            .series
            .store(self.front.pipe.series() as u64, Ordering::Relaxed);
        metrics
            .points_in
            .fetch_add(self.front.pipe.records() - routed_before, Ordering::Relaxed);
        // The burst's timestamps go to the sink before its last batch does, so the sink has them
        // when that batch is done, however fast the shards are.
        for &(stream, offset) in &burst.snapshot {
            self.front.pipe.snapshot(stream, offset);
        }
        let last = self.front.pipe.open_batch();
        let fresh = self.recycled.try_recv().unwrap_or_default();
        let _ = self
            .stamps
            .send((last, std::mem::replace(&mut burst.stamps, fresh)));
        let flushed = self.front.pipe.flush();
        debug_assert_eq!(flushed, last);
        Ok(last)
    }

    fn open_batch(&self) -> u64 {
        self.front.pipe.open_batch()
    }

    fn dead_letters(&self) -> u64 {
        self.dead
    }

    fn http(&mut self, mut batch: HttpBatch) -> Result<u64, Error> {
        let metrics = &self.dlq.metrics;
        let before = self.front.pipe.records();
        self.front.push(&mut batch.decoded, self.http_stream);
        metrics
            .points_in
            .fetch_add(self.front.pipe.records() - before, Ordering::Relaxed);
        metrics
            .series
            .store(self.front.pipe.series() as u64, Ordering::Relaxed);
        let last = self.front.pipe.flush();
        let _ = batch.reply.send(());
        Ok(last)
    }

    fn finish(self: Box<Self>) -> Result<Option<Report>, Error> {
        // A window of derived LLM series still open stays unemitted: its requests were read,
        // but a partial mean would be a false point (a restart resumes from the committed
        // offsets).
        let Score { front, stamps, .. } = *self;
        drop(stamps);
        Ok(Some(front.pipe.finish()?))
    }
}

/// Largest payload the repartition stage puts in one message (librdkafka's default
/// `message.max.bytes` is 1 MB).
const MAX_FORWARD: usize = 512 * 1024;

/// The first stage of `repartition = true`: valid lines go to the repartition topic, on
/// partition `series id mod partitions`, grouped per partition into one message per burst.
pub(crate) struct Repartition {
    pub(crate) decoder: Decoder,
    pub(crate) decoded: Decoded,
    pub(crate) dlq: Dlq,
    pub(crate) topic: String,
    /// Per repartition-topic partition: the lines forwarded in this burst.
    pub(crate) out: Vec<Vec<u8>>,
    /// Per line of the message being read: (partition, byte range in the payload).
    pub(crate) scratch: Vec<(usize, std::ops::Range<usize>)>,
    pub(crate) batch: u64,
    pub(crate) dead: u64,
}

impl Repartition {
    /// A first stage forwarding to `partitions` partitions of `topic`.
    pub(crate) fn new(decoder: Decoder, dlq: Dlq, topic: String, partitions: usize) -> Self {
        Self {
            decoder,
            decoded: Decoded::default(),
            dlq,
            topic,
            out: vec![Vec::new(); partitions.max(1)],
            scratch: Vec::new(),
            batch: 0,
            dead: 0,
        }
    }

    /// Sends what partition `p` collected, as part of the open batch.
    fn send(&mut self, p: usize, timestamp: Option<i64>) -> Result<(), Error> {
        if self.out[p].is_empty() {
            return Ok(());
        }
        let mut lines = std::mem::take(&mut self.out[p]);
        let sent = self.send_whole(p, &lines, timestamp);
        lines.clear();
        self.out[p] = lines;
        sent
    }

    /// Forwards a message as it is to partition `p`, as part of the open batch.
    fn send_whole(
        &mut self,
        p: usize,
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> Result<(), Error> {
        let no = self.batch;
        self.dlq.acks.sent(no);
        let mut record = BaseRecord::with_opaque_to(&self.topic, no as usize)
            .partition(p as i32)
            .payload(payload);
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        send_blocking(&self.dlq.producer, &self.dlq.metrics, record).inspect_err(|_| {
            self.dlq.acks.failed(no, "repartition".into());
        })?;
        Ok(())
    }

    fn message(&mut self, burst: &Burst, m: &Meta, first_ts: Option<i64>) -> Result<(), Error> {
        let payload = burst.payload(m);
        let n = self.out.len() as u64;
        self.scratch.clear();
        let mut reason = None;
        if payload.first() == Some(&0x0a) {
            // Maybe an OTLP request: it goes on whole (its points cannot be split into lines),
            // to the partition of its first series.
            let d = &mut self.decoded;
            d.records.clear();
            d.keys.clear();
            match self.decoder.message(payload, m.offset as u64, d) {
                Err(r) => reason = Some(r),
                Ok(true) => {
                    if let Some(r) = d.first_reject() {
                        reason = Some(r);
                    } else {
                        let p = (self.decoder.last_route() % n) as usize;
                        return self.send_whole(p, payload, m.timestamp.or(first_ts));
                    }
                }
                // Text after all: read line by line below.
                Ok(false) => {}
            }
        }
        if let Some(reason) = reason {
            self.dead += 1;
            self.dlq.send(burst, m, self.batch, &reason)?;
            return Ok(());
        }
        match text_lines(payload) {
            Err(r) => reason = Some(r),
            Ok(lines) => {
                for line in lines {
                    let d = &mut self.decoded;
                    d.records.clear();
                    d.keys.clear();
                    self.decoder.line(line, m.offset as u64, d);
                    if let Some(r) = d.first_reject() {
                        reason = Some(r);
                        break;
                    }
                    if d.records.is_empty() {
                        // A comment line.
                        continue;
                    }
                    // What one line feeds stays together: a point's series, a prediction's
                    // derived series (they share its labels), a line protocol line's fields.
                    let id = self.decoder.last_route();
                    // Lines are slices of the payload.
                    let start = line.as_ptr() as usize - payload.as_ptr() as usize;
                    self.scratch
                        .push(((id % n) as usize, start..start + line.len()));
                }
            }
        }
        if let Some(reason) = reason {
            self.dead += 1;
            self.dlq.send(burst, m, self.batch, &reason)?;
            return Ok(());
        }
        for i in 0..self.scratch.len() {
            let (p, range) = self.scratch[i].clone();
            if self.out[p].len() + range.len() + 1 > MAX_FORWARD {
                self.send(p, first_ts)?;
            }
            self.out[p].extend_from_slice(&payload[range]);
            self.out[p].push(b'\n');
        }
        Ok(())
    }
}

impl Stage for Repartition {
    fn burst(&mut self, burst: &mut Burst) -> Result<u64, Error> {
        // Forwarded messages carry the burst's earliest input timestamp, so the scoring stage
        // measures latency from the original produce.
        let first_ts = burst.stamps.iter().copied().min();
        for i in 0..burst.msgs.len() {
            let m = burst.msgs[i].clone();
            self.message(burst, &m, first_ts)?;
        }
        for p in 0..self.out.len() {
            self.send(p, first_ts)?;
        }
        let no = self.batch;
        self.dlq.acks.handed(no);
        self.batch += 1;
        Ok(no)
    }

    fn open_batch(&self) -> u64 {
        self.batch
    }

    fn dead_letters(&self) -> u64 {
        self.dead
    }

    fn finish(self: Box<Self>) -> Result<Option<Report>, Error> {
        self.dlq
            .producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Error::Delivery(e.to_string()))?;
        Ok(None)
    }
}

/// Keeps a stage within [`RING`]` / 2` unconfirmed batches (so no two live batches share an
/// acknowledgement counter); returns false if a delivery failed meanwhile.
pub(crate) fn wait_for_room(acks: &Acks, confirmed: &mut u64, open: u64) -> bool {
    loop {
        acks.advance(confirmed);
        if acks.failure().is_some() {
            return false;
        }
        if open - *confirmed < RING / 2 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
