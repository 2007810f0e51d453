//! The front end shared by replay and live: decoded records (see `telltale_codec::decode`)
//! become pipeline points. It keeps the keys decoders announce until their series' first point,
//! routes points, records rejects, and averages the derived values of `llm_prediction` records
//! per window of event time (the one place that sees records in input order does it).

use std::io;

use telltale_codec::decode::{Decoded, Record};
use telltale_core::event::Source;
use telltale_core::key::{IdMap, SeriesKey};

use crate::pipeline::{Pipeline, Report};

/// Records in, pipeline points out.
#[derive(Debug)]
pub struct Front {
    /// The pipeline fed (its batches and flushes are the caller's to drive).
    pub pipe: Pipeline,
    /// Keys announced by decoders whose series has no point in the pipeline yet.
    keys: IdMap<SeriesKey>,
    windows: Windows,
}

impl Front {
    /// A front end feeding `pipe`; derived prediction series are averaged over `window_ms`.
    pub fn new(pipe: Pipeline, window_ms: i64) -> Self {
        Self {
            pipe,
            keys: IdMap::default(),
            windows: Windows {
                window: window_ms.max(1),
                open: IdMap::default(),
            },
        }
    }

    /// Keeps the keys of `d` (for series the pipeline does not know yet).
    pub fn take_keys(&mut self, d: &mut Decoded) {
        for (id, key) in d.keys.drain(..) {
            if !self.pipe.knows(id) {
                self.keys.entry(id).or_insert(key);
            }
        }
    }

    /// Routes every record of `d` (from input `stream`), in order, and empties it.
    pub fn push(&mut self, d: &mut Decoded, stream: u32) {
        self.take_keys(d);
        for r in d.records.drain(..) {
            match r {
                Record::Point { id, ts, value, pos } => {
                    let keys = &mut self.keys;
                    self.pipe.push_id(
                        id,
                        || take_key(keys, id),
                        ts,
                        value,
                        Source {
                            stream,
                            offset: pos,
                        },
                    );
                }
                Record::Request {
                    ids,
                    values,
                    count,
                    ts,
                    pos,
                } => {
                    for i in 0..count as usize {
                        self.windows.add(
                            &mut self.pipe,
                            &mut self.keys,
                            ids[i],
                            ts,
                            values[i],
                            Source {
                                stream,
                                offset: pos,
                            },
                        );
                    }
                }
                Record::Reject { pos, reason, text } => self.pipe.reject(
                    Source {
                        stream,
                        offset: pos,
                    },
                    reason,
                    &text,
                ),
            }
        }
    }

    /// Emits every open window (the input has ended), then finishes the pipeline.
    pub fn finish(mut self) -> io::Result<Report> {
        self.windows.flush(&mut self.pipe, &mut self.keys);
        self.pipe.finish()
    }
}

fn take_key(keys: &mut IdMap<SeriesKey>, id: u64) -> SeriesKey {
    keys.remove(&id)
        .expect("a decoder announces a series' key before or with its first point")
}

/// Per-window means of the derived prediction series. A window's point is emitted when the
/// first request of a later window arrives, or at the end of the input; its timestamp is the
/// window's end. Holds one entry per derived series.
#[derive(Debug)]
struct Windows {
    window: i64,
    open: IdMap<Window>,
}

#[derive(Debug)]
struct Window {
    bucket: i64,
    sum: f64,
    n: u32,
    source: Source,
}

impl Windows {
    fn emit(
        pipe: &mut Pipeline,
        keys: &mut IdMap<SeriesKey>,
        id: u64,
        w: &mut Window,
        window: i64,
    ) {
        pipe.push_id(
            id,
            || take_key(keys, id),
            (w.bucket + 1).saturating_mul(window),
            w.sum / f64::from(w.n),
            w.source,
        );
        w.sum = 0.0;
        w.n = 0;
    }

    fn add(
        &mut self,
        pipe: &mut Pipeline,
        keys: &mut IdMap<SeriesKey>,
        id: u64,
        ts: i64,
        value: f64,
        source: Source,
    ) {
        let window = self.window;
        let bucket = ts.div_euclid(window);
        let w = self.open.entry(id).or_insert(Window {
            bucket,
            sum: 0.0,
            n: 0,
            source,
        });
        // A request older than its series' open window is counted in that window.
        if w.n > 0 && bucket > w.bucket {
            Self::emit(pipe, keys, id, w, window);
        }
        if w.n == 0 {
            w.bucket = bucket.max(w.bucket);
        }
        w.sum += value;
        w.n += 1;
        w.source = source;
    }

    /// Emits every open window, oldest first (ties by series id, for determinism).
    fn flush(&mut self, pipe: &mut Pipeline, keys: &mut IdMap<SeriesKey>) {
        let mut open: Vec<(i64, u64)> = self
            .open
            .iter()
            .filter(|(_, w)| w.n > 0)
            .map(|(id, w)| (w.bucket, *id))
            .collect();
        open.sort_unstable();
        let window = self.window;
        for (_, id) in open {
            let w = self.open.get_mut(&id).expect("present");
            Self::emit(pipe, keys, id, w, window);
        }
    }
}
