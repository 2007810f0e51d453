//! Which pipeline batches are fully acknowledged by the broker.
//!
//! Every message the engine produces (an anomaly event or a dead letter) belongs to one pipeline
//! batch. A batch is *acknowledged* when the merger has handed all its outputs to the producer
//! and the broker has acknowledged every one of them. The consumer stores the offset of a message
//! only once the batch holding its last point is acknowledged, and batches are confirmed in
//! order, so offsets advance in order per partition.
//!
//! Counters live in a fixed ring indexed by batch number; the consumer never lets more than
//! [`RING`]` / 2` batches be in flight, so two live batches never share a counter. Increments happen
//! before the batch is handed (merger thread) or before it is flushed (consumer thread, for dead
//! letters); decrements happen on the producer's delivery thread. Nothing here locks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Batches that may be in flight at once, times two.
pub const RING: u64 = 4096;

/// Shared acknowledgement state.
#[derive(Debug)]
pub struct Acks {
    outstanding: Box<[AtomicU32]>,
    /// Batches below this number have been handed to the producer in full.
    handed: AtomicU64,
    /// The first delivery failure; once set, no offset is stored again.
    failed: OnceLock<String>,
}

/// Per input stream, the offset below which the input's outputs were delivered before: input
/// read again only to bring restored models up to date (from a changelog round to the committed
/// offset), whose events and dead letters are not sent a second time.
///
/// A fixed table of [`Delivered::STREAMS`] streams (32 KB), written by the consumer thread when
/// it restores a partition, read by the merger and the stage thread per event or dead letter;
/// a stream beyond it is never marked (its outputs are sent again: at-least-once still holds).
#[derive(Debug)]
pub struct Delivered {
    below: Box<[AtomicI64]>,
}

impl Default for Delivered {
    fn default() -> Self {
        Self {
            below: (0..Self::STREAMS).map(|_| AtomicI64::new(-1)).collect(),
        }
    }
}

impl Delivered {
    /// Streams the table holds.
    pub const STREAMS: usize = 4096;

    /// Outputs of `stream`'s input below `offset` were delivered (-1: none); returns whether
    /// the stream fits the table.
    pub fn set(&self, stream: u32, offset: i64) -> bool {
        self.below
            .get(stream as usize)
            .map(|b| b.store(offset, Ordering::Release))
            .is_some()
    }

    /// Whether the outputs of input record `offset` of `stream` were delivered before.
    #[inline]
    pub fn already(&self, stream: u32, offset: i64) -> bool {
        self.below
            .get(stream as usize)
            .is_some_and(|b| offset < b.load(Ordering::Acquire))
    }

    /// [`Delivered::already`], counting each such output in `skipped`: whether to leave it out.
    #[inline]
    pub fn skip(&self, stream: u32, offset: i64, skipped: &AtomicU64) -> bool {
        let already = self.already(stream, offset);
        if already {
            skipped.fetch_add(1, Ordering::Relaxed);
        }
        already
    }
}

/// Set when librdkafka reports that every broker is down (consumer or producer side).
#[derive(Debug, Default)]
pub struct BrokersLost(pub std::sync::atomic::AtomicBool);

impl Default for Acks {
    fn default() -> Self {
        Self {
            outstanding: (0..RING).map(|_| AtomicU32::new(0)).collect(),
            handed: AtomicU64::new(0),
            failed: OnceLock::new(),
        }
    }
}

impl Acks {
    /// A message of batch `no` is about to be produced.
    #[inline]
    pub fn sent(&self, no: u64) {
        self.outstanding[(no % RING) as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// The broker acknowledged a message of batch `no`.
    #[inline]
    pub fn acked(&self, no: u64) {
        self.outstanding[(no % RING) as usize].fetch_sub(1, Ordering::AcqRel);
    }

    /// A message of batch `no` could not be delivered: the batch never completes, and the
    /// engine stops (its offsets stay uncommitted, so a restart reprocesses it).
    pub fn failed(&self, no: u64, why: String) {
        let _ = self.failed.set(format!("batch {no}: {why}"));
    }

    /// Something other than a delivery failed (a transaction): as [`Acks::failed`].
    pub fn fail(&self, why: String) {
        let _ = self.failed.set(why);
    }

    /// Batches handed to the producer in full so far.
    pub fn handed_batches(&self) -> u64 {
        self.handed.load(Ordering::Acquire)
    }

    /// The first delivery failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Every output of batch `no` has been handed to the producer.
    #[inline]
    pub fn handed(&self, no: u64) {
        self.handed.store(no + 1, Ordering::Release);
    }

    /// Advances `confirmed` (the first batch not known to be acknowledged) as far as it goes.
    pub fn advance(&self, confirmed: &mut u64) {
        if self.failed.get().is_some() {
            return;
        }
        let handed = self.handed.load(Ordering::Acquire);
        while *confirmed < handed
            && self.outstanding[(*confirmed % RING) as usize].load(Ordering::Acquire) == 0
        {
            *confirmed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_confirmed_only_when_handed_and_every_message_acked() {
        let a = Acks::default();
        let mut c = 0;
        a.sent(0);
        a.sent(0);
        a.advance(&mut c);
        assert_eq!(c, 0, "not handed yet");
        a.handed(0);
        a.acked(0);
        a.advance(&mut c);
        assert_eq!(c, 0, "one message still unacknowledged");
        a.acked(0);
        a.advance(&mut c);
        assert_eq!(c, 1);
    }

    #[test]
    fn batches_are_confirmed_in_order() {
        let a = Acks::default();
        let mut c = 0;
        a.sent(0);
        a.handed(0);
        a.handed(1);
        a.handed(2);
        a.advance(&mut c);
        assert_eq!(c, 0, "batch 0 holds back 1 and 2");
        a.acked(0);
        a.advance(&mut c);
        assert_eq!(c, 3);
    }

    #[test]
    fn outputs_below_a_streams_mark_were_delivered_and_a_stream_past_the_table_never_is() {
        let d = Delivered::default();
        assert!(!d.already(3, 0), "unmarked");
        assert!(d.set(3, 100));
        assert!(d.already(3, 99));
        assert!(!d.already(3, 100));
        assert!(!d.already(4, 0), "another stream");
        assert!(d.set(3, -1));
        assert!(!d.already(3, 0), "cleared");
        let past = Delivered::STREAMS as u32;
        assert!(!d.set(past, 100));
        assert!(!d.already(past, 0));
    }

    #[test]
    fn a_failed_delivery_stops_confirmation() {
        let a = Acks::default();
        let mut c = 0;
        a.sent(0);
        a.failed(0, "boom".into());
        a.handed(0);
        a.handed(1);
        a.advance(&mut c);
        assert_eq!(c, 0);
        assert!(a.failure().unwrap().contains("boom"));
    }
}
