//! Points that arrive over HTTP (Prometheus remote write, OTLP/HTTP) rather than from Kafka.
//!
//! The HTTP thread decodes a request and hands its records to the scoring stage's thread, which
//! routes them like a burst of messages and flushes them to the shards; the request is answered
//! once that is done. So an acknowledged request's points are in the engine — but not on a
//! broker: a crash before they are scored loses them (the sender does not resend an acknowledged
//! request). The Kafka input stays the durable path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use telltale_codec::decode::Decoded;

/// Records of one HTTP request, and where to say they are routed.
#[derive(Debug)]
pub struct HttpBatch {
    /// The records (positions are the request's number).
    pub decoded: Decoded,
    pub(crate) reply: Sender<()>,
}

/// The hand-off between the HTTP endpoint and the engine; outlives Kafka sessions.
#[derive(Debug)]
pub struct Ingest {
    tx: Sender<HttpBatch>,
    rx: Receiver<HttpBatch>,
    requests: AtomicU64,
    /// Previous points of cumulative OTLP series sent over HTTP.
    pub cumulative: std::sync::Mutex<telltale_codec::otlp::Cumulative>,
}

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The engine did not take the points in time (no session running, or overloaded):
    /// the sender should retry.
    Busy,
}

impl Default for Ingest {
    fn default() -> Self {
        // A few requests in flight: more wait in their HTTP threads (backpressure).
        let (tx, rx) = bounded(4);
        Self {
            tx,
            rx,
            requests: AtomicU64::new(0),
            cumulative: Default::default(),
        }
    }
}

impl Ingest {
    /// The number the next request's records are positioned at.
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands `decoded` to the engine and waits (up to `timeout`) until its points are routed
    /// to the shards.
    pub fn submit(&self, decoded: Decoded, timeout: Duration) -> Result<(), Refused> {
        let (reply, done) = bounded(1);
        self.tx
            .send_timeout(HttpBatch { decoded, reply }, timeout)
            .map_err(|_| Refused::Busy)?;
        done.recv_timeout(timeout).map_err(|_| Refused::Busy)
    }

    pub(crate) fn receiver(&self) -> Receiver<HttpBatch> {
        self.rx.clone()
    }
}
