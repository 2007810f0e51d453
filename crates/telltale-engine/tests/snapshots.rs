//! A pipeline exports the series of one input stream on request, and another pipeline restored
//! from those snapshots carries on exactly as the first.

use std::io;
use std::sync::{Arc, Mutex};

use telltale_core::event::Source;
use telltale_core::event::{StreamName, Streams};
use telltale_core::key::SeriesKey;
use telltale_engine::Config;
use telltale_engine::pipeline::{Pipeline, Sink};
use telltale_engine::shard::{Emitted, Rejected, Snapshotted};

#[derive(Default)]
struct Seen {
    events: Vec<String>,
    snapshots: Vec<Snapshotted>,
    rounds: Vec<(u32, i64, u64)>,
}

struct Capture(Arc<Mutex<Seen>>);

impl Sink for Capture {
    fn event(&mut self, e: &Emitted) -> io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .events
            .push(String::from_utf8_lossy(&e.json).into_owned());
        Ok(())
    }
    fn reject(&mut self, _: &Rejected, _: &Streams) -> io::Result<()> {
        Ok(())
    }
    fn snapshot(&mut self, s: &Snapshotted) -> io::Result<()> {
        self.0.lock().unwrap().snapshots.push(s.clone());
        Ok(())
    }
    fn snapshot_round(&mut self, stream: u32, offset: i64, series: u64) -> io::Result<()> {
        self.0.lock().unwrap().rounds.push((stream, offset, series));
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn start() -> (Pipeline, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let streams = Streams::new(vec![
        StreamName::File("p0".into()),
        StreamName::File("p1".into()),
    ]);
    let plan = Config::default().plan().unwrap();
    (Pipeline::start(plan, streams, Capture(seen.clone())), seen)
}

/// Four series, two per stream: a noisy level with a spike on day 3 (past the young phase).
fn point(i: i64, s: usize) -> (i64, f64) {
    let t = i * 300_000;
    let spike = if i == 3 * 288 + 50 + s as i64 * 7 {
        80.0
    } else {
        0.0
    };
    (t, 100.0 + ((i * 7919 + s as i64 * 13) % 17) as f64 + spike)
}

fn keys() -> Vec<SeriesKey> {
    (0..4)
        .map(|s| SeriesKey::new("svc_latency_ms", &[("host", &format!("h{s}"))]))
        .collect()
}

fn push(p: &mut Pipeline, i: i64, only_stream: Option<u32>) {
    for (s, key) in keys().into_iter().enumerate() {
        let stream = (s % 2) as u32;
        if only_stream.is_some_and(|o| o != stream) {
            continue;
        }
        let (t, x) = point(i, s);
        let k = key.clone();
        p.push_id(
            k.id(),
            move || k,
            t,
            x,
            Source {
                stream,
                offset: i as u64,
            },
        );
    }
}

#[test]
fn a_stream_restored_from_its_snapshots_carries_on_as_if_it_had_not_moved() {
    let cut = 3 * 288;
    let (mut whole, seen_whole) = start();
    for i in 0..cut {
        push(&mut whole, i, None);
    }
    whole.snapshot(0, cut);
    whole.flush();
    // Stream 0's two series, then the round, with the offset handed through.
    let snaps = loop {
        let s = seen_whole.lock().unwrap();
        if !s.rounds.is_empty() {
            break s.snapshots.clone();
        }
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(seen_whole.lock().unwrap().rounds, [(0, cut, 2)]);
    let ids: Vec<u64> = snaps.iter().map(|s| s.id).collect();
    let mut want: Vec<u64> = keys().iter().step_by(2).map(SeriesKey::id).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "stream 0's series, by id");
    assert!(
        snaps
            .iter()
            .all(|s| s.offset == cut && &*s.chain == "default")
    );
    // Another pipeline takes stream 0 over from the snapshots; both carry on.
    let (mut moved, seen_moved) = start();
    for s in &snaps {
        moved
            .restore(s.id, (*s.key).clone(), 0, &s.state)
            .expect("restored");
    }
    let before = seen_whole.lock().unwrap().events.len();
    for i in cut..5 * 288 {
        push(&mut whole, i, Some(0));
        push(&mut moved, i, Some(0));
    }
    whole.finish().unwrap();
    moved.finish().unwrap();
    let after: Vec<String> = seen_whole.lock().unwrap().events[before..]
        .iter()
        .filter(|e| e.contains("\"h0\"") || e.contains("\"h2\""))
        .cloned()
        .collect();
    let moved_events = seen_moved.lock().unwrap().events.clone();
    assert!(
        !after.is_empty(),
        "the spikes after the cut opened anomalies"
    );
    assert_eq!(moved_events, after, "the same events, ids included");
    // A cold pipeline would not have: the series would be young again.
    let (mut cold, seen_cold) = start();
    for i in cut..5 * 288 {
        push(&mut cold, i, Some(0));
    }
    cold.finish().unwrap();
    assert_ne!(seen_cold.lock().unwrap().events, after);
}
