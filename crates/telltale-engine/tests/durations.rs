//! The built-in chain's spans are durations: the same series sampled every 5 minutes or every
//! minute gets the same anomalies flagged.

use telltale_core::event::EventState;
use telltale_engine::Config;
use telltale_engine::chain::ChainGroup;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// An injected anomaly: its name and event-time span.
struct Fault {
    name: &'static str,
    start: i64,
    end: i64,
}

const FAULTS: [Fault; 3] = [
    Fault {
        name: "spike",
        start: 4 * DAY + 10 * HOUR,
        end: 4 * DAY + 10 * HOUR + 15 * MIN,
    },
    Fault {
        name: "level shift",
        start: 6 * DAY + 3 * HOUR,
        end: 6 * DAY + 6 * HOUR,
    },
    Fault {
        name: "stuck sensor",
        start: 8 * DAY + 13 * HOUR,
        end: 8 * DAY + 17 * HOUR,
    },
];

/// A daily load curve with noise (a fixed pseudo-random sequence), and the three faults.
fn value(t: i64, i: i64) -> f64 {
    let phase = (t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
    let noise = ((i.wrapping_mul(7919) % 1009) as f64 / 1009.0 - 0.5) * 4.0;
    let normal = 100.0 + 30.0 * phase.sin() + noise;
    let inside = |f: &Fault| t >= f.start && t < f.end;
    if inside(&FAULTS[0]) {
        normal + 80.0
    } else if inside(&FAULTS[1]) {
        normal + 45.0
    } else if inside(&FAULTS[2]) {
        // Stuck at the value it had when it froze.
        100.0 + 30.0 * ((FAULTS[2].start % DAY) as f64 / DAY as f64 * std::f64::consts::TAU).sin()
    } else {
        normal
    }
}

/// Which faults the built-in chain opens an anomaly for (an open from the fault's start to an
/// hour after its end), and how many opens fall outside every fault after the series' first
/// two days (its hand-over).
fn flagged(step: i64) -> (Vec<&'static str>, usize) {
    let plan = Config::default().plan().unwrap();
    let mut g = ChainGroup::new(&plan.chains[0]);
    let s = g.add_series();
    let mut opens = Vec::new();
    for i in 0..(10 * DAY / step) {
        let t = i * step;
        let out = g.process(s, t, value(t, i)).unwrap();
        if out
            .transition
            .is_some_and(|tr| tr.state == EventState::Open)
        {
            opens.push(t);
        }
    }
    let caught = |f: &Fault| opens.iter().any(|t| *t >= f.start && *t <= f.end + HOUR);
    let names = FAULTS
        .iter()
        .filter(|f| caught(f))
        .map(|f| f.name)
        .collect();
    let stray = opens
        .iter()
        .filter(|t| **t >= 2 * DAY)
        .filter(|t| !FAULTS.iter().any(|f| **t >= f.start && **t <= f.end + HOUR))
        .count();
    (names, stray)
}

#[test]
fn the_same_anomalies_are_flagged_at_5_minute_and_1_minute_sampling() {
    let (five, stray_five) = flagged(5 * MIN);
    let (one, stray_one) = flagged(MIN);
    assert_eq!(
        five,
        ["spike", "level shift", "stuck sensor"],
        "5-minute sampling"
    );
    assert_eq!(
        one, five,
        "1-minute sampling flags what 5-minute sampling flags"
    );
    assert_eq!(
        (stray_five, stray_one),
        (0, 0),
        "no open outside the faults"
    );
}
