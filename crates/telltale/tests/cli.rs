//! The `telltale` binary as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telltale"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("telltale-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn replay_of_the_bundled_sample_reports_every_fault_caught() {
    let o = bin()
        .args(["replay", "datasets/llm-serving", "--no-progress"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("30240 points, 21 series"), "{err}");
    assert!(
        err.contains("5/5 caught, 0 anomalies opened outside any fault"),
        "{err}"
    );
    let events = String::from_utf8(o.stdout).unwrap();
    assert!(events.lines().count() > 0);
    for l in events.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
}

#[test]
fn bad_config_fails_at_startup_naming_the_field() {
    let dir = temp("bad-config");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[chain]\ndetectors = [{ kind = \"ewma\", alpha = 2.0 }]\n",
    )
    .unwrap();
    let o = bin()
        .args(["replay", "datasets/llm-serving", "--config"])
        .arg(&cfg)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("chain.detectors[0].alpha"), "{err}");
    assert!(err.contains("(0, 1]"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "nothing is processed with a bad config"
    );
}

#[test]
fn missing_input_is_a_clear_error() {
    let o = bin()
        .args(["replay", "no/such/file.jsonl"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no/such/file.jsonl"), "{}", stderr(&o));
}

#[test]
fn replay_reads_standard_input_and_writes_rejects_to_a_file() {
    let dir = temp("stdin");
    let rejects = dir.join("rejects.jsonl");
    let mut child = bin()
        .args(["replay", "-", "--no-progress", "--rejects"])
        .arg(&rejects)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for t in 0..200 {
        let v = if t == 150 {
            1000.0
        } else {
            10.0 + (t % 5) as f64
        };
        input.push_str(&format!(
            "{{\"metric\":\"q\",\"timestamp\":{t},\"value\":{v}}}\n"
        ));
    }
    input.push_str("garbage\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let events = String::from_utf8(o.stdout).unwrap();
    assert!(events.contains("\"state\":\"open\""), "{events}");
    let r = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(r.lines().count(), 1);
    assert!(r.contains("\"line\":201"), "{r}");
    assert!(err.contains("200 points, 1 series"), "{err}");
}

#[test]
fn gen_is_deterministic_and_writes_stream_and_labels() {
    let (a, b) = (temp("gen-a"), temp("gen-b"));
    for d in [&a, &b] {
        let o = bin()
            .args(["gen", "--points", "300", "--seed", "7", "--out"])
            .arg(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(&a, "telemetry.jsonl"), read(&b, "telemetry.jsonl"));
    assert_eq!(read(&a, "labels.json"), read(&b, "labels.json"));
    assert_eq!(
        String::from_utf8(read(&a, "telemetry.jsonl"))
            .unwrap()
            .lines()
            .count(),
        300 * 21
    );
}

#[test]
fn bundled_sample_is_what_gen_makes() {
    let dir = temp("gen-sample");
    let o = bin().args(["gen", "--out"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["telemetry.jsonl", "labels.json"] {
        assert!(
            std::fs::read(dir.join(f)).unwrap()
                == std::fs::read(root().join("datasets/llm-serving").join(f)).unwrap(),
            "datasets/llm-serving/{f} is not reproduced by `telltale gen` (see its README)"
        );
    }
}

#[test]
fn bundled_llm_sample_is_what_gen_makes() {
    let dir = temp("gen-llm-sample");
    let o = bin()
        .args(["gen", "llm", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["predictions.jsonl", "labels.json"] {
        assert!(
            std::fs::read(dir.join(f)).unwrap()
                == std::fs::read(root().join("datasets/llm-predictions").join(f)).unwrap(),
            "datasets/llm-predictions/{f} is not reproduced by `telltale gen llm`"
        );
    }
}

#[test]
fn confidence_collapse_opens_during_the_episode_and_resolves_after() {
    let o = bin()
        .args([
            "replay",
            "datasets/llm-predictions",
            "--config",
            "configs/llm.toml",
            "--no-progress",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("1/1 caught, 0 anomalies opened outside any fault"),
        "{err}"
    );
    assert!(err.contains("0 rejects"), "{err}");
    let events: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty());
    // No configuration: the built-in llm-confidence rule applies. Episode: 00:30:00 to
    // 00:42:00. Every event is about the degraded model; the margin's anomaly opens inside the
    // episode and resolves after it.
    for e in &events {
        assert_eq!(e["series"]["labels"]["model"], "intent-clf-b", "{e}");
    }
    let margin: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["series"]["name"] == "llm_confidence_margin")
        .collect();
    assert_eq!(margin.len(), 2, "{margin:?}");
    assert_eq!(margin[0]["state"], "open");
    let opened = margin[0]["timestamp"].as_str().unwrap();
    assert!(
        ("2026-01-05T00:30:00".."2026-01-05T00:42:00").contains(&opened),
        "{opened}"
    );
    assert_eq!(margin[1]["state"], "resolved");
    assert!(
        margin[1]["timestamp"].as_str().unwrap() > "2026-01-05T00:42:00",
        "{}",
        margin[1]
    );
}

#[test]
fn bench_llm_prints_every_scorer_side_by_side() {
    let o = bin()
        .args([
            "bench",
            "llm",
            "--input",
            "datasets/llm-predictions/predictions.jsonl",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("5400 requests with truth"), "{out}");
    for s in [
        "margin",
        "mucs_margin",
        "entropy",
        "gini",
        "least_confidence",
        "disagreement",
        "APFD",
        "ROC-AUC",
        "TRC@5%",
    ] {
        assert!(out.contains(s), "{s} missing in\n{out}");
    }
    // On this stream, margin ranks mispredictions well above chance.
    let auc: f64 = out
        .lines()
        .find(|l| l.starts_with("margin "))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(auc > 0.9, "margin ROC-AUC {auc}");
}

#[test]
fn run_refuses_a_bad_kafka_config_before_connecting() {
    let d = temp("run-bad-config");
    let cases = [
        // No [kafka] section at all.
        ("", "[kafka] section"),
        // A drain that would outlast the session timeout.
        (
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\ndrain_timeout = \"60s\"\n",
            "kafka.drain_timeout",
        ),
        // A setting the at-least-once guarantee depends on.
        (
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[kafka.consumer]\n\"enable.auto.offset.store\" = \"true\"\n",
            "enable.auto.offset.store",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let cfg = d.join(format!("c{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let o = bin()
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    }
}

#[test]
fn bench_throughput_reports_engine_and_baseline_rates_for_every_format() {
    for (format, what) in [
        ("json", "JSON lines"),
        ("arrow", "Arrow IPC"),
        ("binary", "Arrow IPC"),
        ("parquet", "Parquet"),
    ] {
        let o = bin()
            .args([
                "bench",
                "throughput",
                "--series",
                "50",
                "--points",
                "40",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains(&format!("= 2000 points, {what}")), "{out}");
        assert!(out.contains("decode-only baseline"), "{out}");
        assert!(out.contains("x the baseline"), "{out}");
        assert!(out.contains("latency per point"), "{out}");
        assert!(out.contains("peak RSS"), "{out}");
    }
}

#[test]
fn gen_writes_arrow_and_parquet_that_replay_to_the_jsonl_events() {
    let d = temp("gen-columnar");
    let mut events = Vec::new();
    for format in ["jsonl", "arrow", "parquet"] {
        let dir = d.join(format);
        let o = bin()
            .args(["gen", "--points", "600", "--format", format, "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let out = dir.join("events.jsonl");
        let o = bin()
            .arg("replay")
            .arg(&dir)
            .args(["--no-progress", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("12600 points"), "{}", stderr(&o));
        let ids: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect();
        events.push(ids);
    }
    assert!(!events[0].is_empty());
    assert_eq!(events[0], events[1]);
    assert_eq!(events[0], events[2]);
    let o = bin().args(["gen", "--format", "parquet"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--format parquet needs a folder"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn columnar_file_with_a_bad_schema_fails_at_start_naming_the_column() {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let d = temp("bad-schema");
    let path = d.join("bad.arrow");
    let batch = RecordBatch::try_from_iter([
        (
            "timestamp",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        ),
        (
            "value",
            Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef,
        ),
        ("code", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let o = bin().arg("replay").arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("column `code` is Int64"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn validate_accepts_every_shipped_configuration_and_names_a_bad_field() {
    for cfg in [
        "configs/nab.toml",
        "configs/kafka.toml",
        "configs/llm.toml",
        "configs/docker.toml",
    ] {
        let o = bin()
            .args(["validate", "-c", cfg])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(o.status.success(), "{cfg}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("valid"),
            "{cfg}"
        );
    }
    let dir = temp("validate");
    for (text, field) in [
        (
            "[chain]\ndetectors = [{ kind = \"ewma\", alpha = 2.0 }]\n",
            "chain.detectors[0].alpha",
        ),
        (
            "[kafka]\nbrokers = \"b\"\ntopics = [\"t\"]\nbrokerz = 1\n",
            "kafka.brokerz",
        ),
        ("[http]\nlisten = \"nowhere\"\n", "http.listen"),
        ("[engin]\n", "engin"),
    ] {
        let cfg = dir.join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = bin().args(["validate", "-c"]).arg(&cfg).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(field), "{text}: {}", stderr(&o));
        let o = bin()
            .args(["validate", "--json", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["valid"], false);
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
}

#[test]
fn version_names_librdkafka_and_the_codecs_and_help_names_the_environment() {
    let o = bin().arg("--version").output().unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(out.contains("librdkafka 2."), "{out}");
    assert!(
        out.contains("features:") && out.contains("Parquet"),
        "{out}"
    );
    let o = bin().arg("--help").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("TELLTALE_KAFKA_BROKERS") && out.contains("TELLTALE_LOG"),
        "{out}"
    );
}

#[test]
fn format_flag_reads_a_file_whatever_its_extension() {
    let dir = temp("format-flag");
    let f = dir.join("points.txt");
    std::fs::write(
        &f,
        "svc,host=a ms=5 1700000000000000000\nsvc,host=a ms=6 1700000001000000000\n",
    )
    .unwrap();
    let out = bin()
        .args(["replay", "--no-progress", "--format", "influx", "-o"])
        .arg(dir.join("events.jsonl"))
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 points, 1 series"),
        "{}",
        stderr(&out)
    );
    // The same text read as Parquet fails before anything is processed, naming the file.
    let out = bin()
        .args(["replay", "--no-progress", "--format", "parquet"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("points.txt"), "{}", stderr(&out));
}

#[test]
fn a_malformed_arrow_stream_fails_with_a_message_not_an_abort() {
    // An input the `arrow_ipc` fuzz target found: the Arrow reader panics on it.
    let f = root().join("fuzz/corpus/arrow_ipc/regression-slice-offset");
    let out = bin()
        .args([
            "replay",
            "--no-progress",
            "--format",
            "arrow",
            "-o",
            "/dev/null",
        ])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("malformed columnar input"),
        "{}",
        stderr(&out)
    );
}
