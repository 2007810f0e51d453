//! Helpers shared by the end-to-end tests.

pub mod broker;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use telltale_bench::labels::{Collect, EventSummary};
use telltale_engine::replay::{discover, replay};
use telltale_engine::{Config, Outputs, Report};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf()
}

/// A `Write` that appends to a shared buffer.
#[derive(Debug, Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    /// The bytes written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("lock").clone()
    }
    /// The lines written so far, parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.bytes())
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

/// The outcome of a replay: report, events and rejects.
#[derive(Debug)]
pub struct Run {
    /// The report.
    pub report: Report,
    /// Event bytes.
    pub events: SharedBuf,
    /// A summary of every event, in output order.
    pub summaries: Vec<EventSummary>,
    /// Reject bytes.
    pub rejects: SharedBuf,
}

/// Replays `paths` with `config` (TOML), returning everything it wrote.
pub fn run(paths: &[PathBuf], config: &str) -> Run {
    let plan = Config::from_toml(config)
        .expect("config")
        .plan()
        .expect("plan");
    let inputs = discover(paths).expect("inputs");
    let (events, rejects) = (SharedBuf::default(), SharedBuf::default());
    let (sink, summaries) = Collect::new(Outputs {
        events: Box::new(events.clone()),
        rejects: Box::new(rejects.clone()),
    });
    let report = replay(plan, &inputs, sink, false).expect("replay");
    Run {
        report,
        summaries: summaries.try_iter().collect(),
        events,
        rejects,
    }
}

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("telltale-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Python packages the tests use as real outside peers (pinned).
pub const PYTHON_PEERS: &[&str] = &[
    "influxdb-client==1.50.0",
    "cloudevents==2.2.0",
    "opentelemetry-sdk==1.45.0",
    "opentelemetry-exporter-otlp-proto-http==1.45.0",
    "opentelemetry-proto==1.45.0",
];

/// A Python interpreter with [`PYTHON_PEERS`] installed: the virtual environment
/// `target/test-venv` (which `scripts/test.sh` makes), made here if it is missing.
pub fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let venv = repo_root().join("target/test-venv");
        let py = venv.join("bin/python3");
        let ready = venv.join(".peers");
        if std::fs::read_to_string(&ready).ok().as_deref() != Some(&PYTHON_PEERS.join(" ")) {
            let ok = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv {} failed", venv.display());
            let ok = std::process::Command::new(&py)
                .args(["-m", "pip", "install", "-q"])
                .args(PYTHON_PEERS)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {PYTHON_PEERS:?} failed");
            std::fs::write(&ready, PYTHON_PEERS.join(" ")).expect("write marker");
        }
        py
    })
    .clone()
}

/// Runs a Python script with [`python`]; returns its standard output.
pub fn python_output(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}
