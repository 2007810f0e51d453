//! Replay end to end, through real files and the threaded pipeline.

use std::fmt::Write as _;
use std::path::PathBuf;

use telltale_bench::labels::LabelsFile;
use telltale_tests::{repo_root, run, temp_dir};

fn sample() -> PathBuf {
    repo_root().join("datasets/llm-serving")
}

#[test]
fn events_are_byte_identical_whatever_the_shard_and_parser_count() {
    let base = run(&[sample()], "[engine]\nshards = 1\nparsers = 1\nbatch = 64");
    assert!(base.report.total_events() > 0);
    for (shards, parsers, batch) in [(2, 2, 4096), (3, 1, 100), (5, 3, 1), (8, 2, 777)] {
        let other = run(
            &[sample()],
            &format!("[engine]\nshards = {shards}\nparsers = {parsers}\nbatch = {batch}"),
        );
        assert!(
            base.events.bytes() == other.events.bytes(),
            "events differ with {shards} shards, {parsers} parsers, batch {batch}"
        );
        assert_eq!(other.report.points, base.report.points);
    }
}

#[test]
fn bundled_sample_replay_catches_every_injected_fault() {
    let r = run(&[sample()], "");
    let labels = LabelsFile::read(&sample().join("labels.json")).unwrap();
    let score = labels.score(&r.summaries);
    let missed: Vec<_> = score
        .faults
        .iter()
        .filter(|f| !f.caught)
        .map(|f| &f.id)
        .collect();
    assert!(missed.is_empty(), "missed {missed:?}");
    assert_eq!(score.faults.len(), 5);
    assert!(
        score.unexpected_opens.is_empty(),
        "false alarms: {:?}",
        score.unexpected_opens
    );
    // every anomaly opened is resolved by the end of the stream
    assert_eq!(r.report.events[0], r.report.events[2]);
    assert_eq!(r.report.total_rejects(), 0);
}

#[test]
fn event_schema_and_ids_are_stable_across_runs() {
    let a = run(&[sample()], "").events.json_lines();
    let b = run(&[sample()], "[engine]\nshards = 3").events.json_lines();
    assert_eq!(a, b);
    let open = a.iter().find(|e| e["state"] == "open").unwrap();
    for field in [
        "id",
        "state",
        "series",
        "series_id",
        "chain",
        "timestamp",
        "onset",
        "value",
        "expected",
        "score",
        "severity",
        "detectors",
        "source",
    ] {
        assert!(open.get(field).is_some(), "missing {field} in {open}");
    }
    let resolved = a
        .iter()
        .find(|e| e["state"] == "resolved" && e["series_id"] == open["series_id"])
        .unwrap();
    assert_eq!(
        resolved["id"], open["id"],
        "open and resolved of one anomaly share the id"
    );
    assert!(
        open["source"]["file"]
            .as_str()
            .unwrap()
            .ends_with("telemetry.jsonl")
    );
}

#[test]
fn bad_records_are_rejected_with_a_reason_and_the_run_goes_on() {
    let dir = temp_dir("bad-records");
    let path = dir.join("in.jsonl");
    let mut text = Vec::new();
    let good = |ts: i64, v: f64| {
        format!(r#"{{"metric":"m","labels":{{"a":"1"}},"timestamp":{ts},"value":{v}}}"#)
    };
    for t in 0..10 {
        text.extend_from_slice(good(t * 1000, 1.0).as_bytes());
        text.push(b'\n');
    }
    for bad in [
        "{not json",
        r#"{"metric":"m","timestamp":1}"#,
        r#"{"metric":"m","timestamp":20000,"value":"NaN"}"#,
        r#"{"metric":"m","labels":{"a":"1"},"timestamp":500,"value":1}"#, // out of order
        "",
        r#"{"metric":"m","timestamp":"tuesday","value":1}"#,
    ] {
        text.extend_from_slice(bad.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(b"{\"metric\":\"m\xff\",\"timestamp\":1,\"value\":1}\n");
    text.extend_from_slice(good(30_000, 2.0).as_bytes());
    std::fs::write(&path, &text).unwrap();

    let r = run(std::slice::from_ref(&path), "");
    assert_eq!(
        r.report.points, 11,
        "the good points around the bad ones are all scored"
    );
    let rejects = r.rejects.json_lines();
    let got: Vec<(u64, &str)> = rejects
        .iter()
        .map(|j| {
            (
                j["source"]["line"].as_u64().unwrap(),
                j["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (11, "malformed"),
            (12, "missing_field"),
            (13, "non_finite_value"),
            (14, "out_of_order"),
            (16, "bad_timestamp"),
            (17, "not_utf8"),
        ]
    );
    assert_eq!(r.report.total_rejects(), 6);
    assert_eq!(rejects[1]["detail"], "missing field `value`");
    assert_eq!(rejects[0]["record"], "{not json");
}

#[test]
fn nab_layout_folder_replays_each_csv_as_a_series_named_after_its_path() {
    let dir = temp_dir("nab-layout");
    std::fs::create_dir_all(dir.join("data/realA")).unwrap();
    std::fs::create_dir_all(dir.join("data/realB")).unwrap();
    for (file, spike_at) in [("data/realA/one.csv", 300), ("data/realB/two.csv", 350)] {
        let mut s = String::from("timestamp,value\n");
        for i in 0..400i64 {
            let v = if i == spike_at || i == spike_at + 1 {
                500.0
            } else {
                10.0 + (i % 7) as f64 * 0.1
            };
            let h = i / 12;
            writeln!(
                s,
                "2014-04-{:02} {:02}:{:02}:00,{v}",
                1 + h / 24,
                h % 24,
                (i % 12) * 5
            )
            .unwrap();
        }
        std::fs::write(dir.join(file), s).unwrap();
    }
    std::fs::write(dir.join("data/README.md"), "not an input").unwrap();
    let r = run(&[dir.join("data")], "");
    assert_eq!(r.report.series, 2);
    assert_eq!(r.report.points, 800);
    let names: Vec<String> = r
        .events
        .json_lines()
        .iter()
        .filter(|e| e["state"] == "open")
        .map(|e| e["series"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["realA/one", "realB/two"]);
}

#[test]
fn chunk_boundaries_and_long_lines_lose_no_record() {
    let dir = temp_dir("chunks");
    let path = dir.join("big.jsonl");
    let mut s = String::new();
    let n = 40_000;
    for i in 0..n {
        // an unknown field of varying length moves line ends across chunk boundaries
        writeln!(
            s,
            r#"{{"metric":"m{}","pad":"{}","timestamp":{i},"value":{}}}"#,
            i % 3,
            "x".repeat(i % 97),
            i % 11
        )
        .unwrap();
    }
    // one line longer than a whole chunk
    writeln!(
        s,
        r#"{{"metric":"m0","pad":"{}","timestamp":{n},"value":1}}"#,
        "y".repeat(3 << 20)
    )
    .unwrap();
    // last line without a newline
    write!(s, r#"{{"metric":"m1","timestamp":{},"value":1}}"#, n + 1).unwrap();
    std::fs::write(&path, s).unwrap();
    let r = run(&[path], "[engine]\nparsers = 3");
    assert_eq!(r.report.points, n as u64 + 2);
    assert_eq!(r.report.series, 3);
    assert_eq!(r.report.total_rejects(), 0);
}

#[test]
fn readme_configuration_example_is_valid_and_matches_the_defaults() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("```toml\n[engine]")
        .expect("README has the config example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let example = &readme[start..end];
    let config = telltale_engine::Config::from_toml(example).unwrap();
    config.plan().unwrap();
    // The example's [engine] and [chain] spell out the built-in defaults.
    let defaults = telltale_engine::Config::default();
    assert_eq!(config.engine, defaults.engine);
    assert_eq!(config.chain, defaults.chain);
    assert_eq!(config.rules.len(), 1);
}

#[test]
fn bad_llm_predictions_are_rejected_and_good_ones_become_derived_series() {
    let dir = temp_dir("llm-rejects");
    let path = dir.join("p.jsonl");
    let mut s = String::new();
    for t in 0..130 {
        writeln!(
            s,
            r#"{{"model":"m","task":"t","timestamp":{},"labels":["a","b"],"probs":[0.8,0.2],"mutants":[[0.7,0.3]],"truth":"a"}}"#,
            t * 1000
        )
        .unwrap();
    }
    for bad in [
        r#"{"model":"m","task":"t","timestamp":200000,"labels":["a","b"],"probs":[0.8,0.1,0.1]}"#,
        r#"{"model":"m","task":"t","timestamp":200000,"probs":[1.2,-0.2]}"#,
        r#"{"model":"m","task":"t","timestamp":200000,"probs":[0.9,0.5]}"#,
        r#"{"task":"t","timestamp":200000,"probs":[0.5,0.5]}"#,
    ] {
        writeln!(s, "{bad}").unwrap();
    }
    std::fs::write(&path, s).unwrap();
    let r = run(std::slice::from_ref(&path), "");
    let reasons: Vec<String> = r
        .rejects
        .json_lines()
        .iter()
        .map(|j| {
            format!(
                "{}: {}",
                j["reason"].as_str().unwrap(),
                j["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "bad_probabilities: vector has 3 entries, the label set 2",
            "bad_probabilities: vector holds a negative probability",
            "bad_probabilities: probabilities sum to 1.4, far from 1",
            "missing_field: missing field `model`",
        ]
    );
    // 130 requests over 130 s: three one-minute windows (0-60 s, 60-120 s, 120-130 s),
    // each a point of llm_confidence_margin, llm_confidence_low_share and llm_confidence_disagreement.
    assert_eq!(r.report.series, 3);
    assert_eq!(r.report.points, 9);
}

#[test]
fn per_request_low_confidence_events_are_opt_in() {
    let sample = repo_root().join("datasets/llm-predictions");
    let off = run(std::slice::from_ref(&sample), "");
    let names = |r: &telltale_tests::Run| -> Vec<String> {
        r.events
            .json_lines()
            .iter()
            .map(|e| e["series"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        !names(&off)
            .iter()
            .any(|n| n == "llm_confidence_request_margin")
    );
    let on = run(
        &[sample],
        r#"
[llm]
per_request = true
[[rule]]
name = "low-confidence-request"
metric = "llm_confidence_request_margin"
detectors = [{ kind = "threshold", below = 0.2 }]
alert = { min_points = 1, resolve_points = 1 }
"#,
    );
    let requests = names(&on)
        .iter()
        .filter(|n| *n == "llm_confidence_request_margin")
        .count();
    // one open and one resolved per run of low-confidence requests: a loud stream
    assert!(requests > 100, "{requests}");
}

#[test]
fn every_committed_configuration_is_valid() {
    let dir = repo_root().join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = telltale_engine::Config::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            config
                .plan()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "found {n} configurations");
}

/// The bundled sample converted to Arrow IPC and Parquet (by the same writer `telltale gen`
/// uses) replays to the same events as its JSON lines: same ids, states, scores; only the
/// source differs (file name, and row number for line).
#[test]
fn arrow_and_parquet_replay_to_the_same_events_as_json_lines() {
    use telltale_codec::columnar::{ColumnarWriter, WriteAs};
    let dir = temp_dir("columnar-same-events");
    let json = run(&[sample()], "");
    let text = std::fs::read_to_string(sample().join("telemetry.jsonl")).unwrap();
    let strip = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("source");
                e
            })
            .collect()
    };
    let expected = strip(json.events.json_lines());
    assert!(!expected.is_empty());
    for (how, file) in [
        (WriteAs::IpcFile, "t.arrow"),
        (WriteAs::IpcStream, "t.arrows"),
        (WriteAs::Parquet, "t.parquet"),
    ] {
        let path = dir.join(file);
        let out = Box::new(std::fs::File::create(&path).unwrap());
        let mut w = ColumnarWriter::new(out, how, &["model", "region"]).unwrap();
        for line in text.lines() {
            let p: serde_json::Value = serde_json::from_str(line).unwrap();
            let labels: Vec<(&str, &str)> = p["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            w.push(
                p["metric"].as_str().unwrap(),
                &labels,
                p["timestamp"].as_i64().unwrap(),
                p["value"].as_f64().unwrap(),
            )
            .unwrap();
        }
        w.finish().unwrap();
        let r = run(std::slice::from_ref(&path), "[engine]\nparsers = 3");
        assert_eq!(r.report.points, json.report.points, "{file}");
        assert_eq!(r.report.total_rejects(), 0, "{file}");
        let events = r.events.json_lines();
        assert_eq!(
            events[0]["source"]["file"],
            path.display().to_string(),
            "{file}"
        );
        assert_eq!(strip(events), expected, "{file}");
    }
}
