//! `telltale bench --report` writes a self-contained page that renders in headless Chromium.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("telltale-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small NAB-layout corpus: two files, one labelled window each.
fn corpus(dir: &Path) {
    let mut windows = serde_json::Map::new();
    for (cat, name, spike) in [("realA", "one", 600), ("realB", "two", 700)] {
        std::fs::create_dir_all(dir.join("data").join(cat)).unwrap();
        let mut s = String::from("timestamp,value\n");
        for i in 0..1000i64 {
            let v = if (spike..spike + 3).contains(&i) {
                90.0
            } else {
                10.0 + ((i * 7) % 5) as f64
            };
            writeln!(
                s,
                "2015-01-{:02} {:02}:{:02}:00,{v}",
                1 + i / 288,
                i / 12 % 24,
                i % 12 * 5
            )
            .unwrap();
        }
        std::fs::write(dir.join(format!("data/{cat}/{name}.csv")), s).unwrap();
        let t = |i: i64| {
            format!(
                "2015-01-{:02} {:02}:{:02}:00.000000",
                1 + i / 288,
                i / 12 % 24,
                i % 12 * 5
            )
        };
        windows.insert(
            format!("{cat}/{name}.csv"),
            serde_json::json!([[t(spike - 20), t(spike + 20)]]),
        );
    }
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    std::fs::write(
        dir.join("labels/combined_windows.json"),
        serde_json::to_string(&windows).unwrap(),
    )
    .unwrap();
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[1..4], b"PNG", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn report_is_self_contained_and_renders_in_headless_chromium() {
    let dir = temp("corpus");
    corpus(&dir);
    let report = dir.join("report.html");
    let o = Command::new(env!("CARGO_BIN_EXE_telltale"))
        .args(["bench", "--corpus"])
        .arg(&dir)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no network resource"
    );
    assert!(!html.contains("<script"), "no script needed");
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "a value plot and a score strip per file"
    );
    assert!(html.contains("realA/one.csv") && html.contains("class=\"win\""));

    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("Chromium is needed for this test: scripts/test.sh installs Debian's `chromium`");
    let png = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), (1200, 900));
    // A blank page compresses to a few kB; tables, text and plots make it far larger.
    assert!(
        bytes.len() > 30_000,
        "screenshot looks empty ({} bytes)",
        bytes.len()
    );
}

#[test]
fn scores_written_by_bench_score_back_to_the_same_totals() {
    let dir = temp("roundtrip");
    corpus(&dir);
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_telltale"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .expect("--json prints JSON on stdout")
    };
    let scores = dir.join("scores");
    let b = run(&[
        "bench",
        "--corpus",
        dir.to_str().unwrap(),
        "--scores",
        scores.to_str().unwrap(),
        "--json",
    ]);
    let written = scores.join("default/realA/one.csv");
    let text = std::fs::read_to_string(&written).unwrap();
    assert_eq!(text.lines().next(), Some("timestamp,value,anomaly_score"));
    assert_eq!(text.lines().count(), 1001, "a header and a line per row");
    let s = run(&[
        "bench",
        "score",
        "--results",
        scores.join("default").to_str().unwrap(),
        "--labels",
        dir.join("labels/combined_windows.json").to_str().unwrap(),
        "--json",
    ]);
    for profile in 0..3 {
        let (bp, sp) = (&b[0]["nab"][profile], &s[0]["nab"][profile]);
        assert_eq!(bp["profile"], sp["profile"]);
        assert_eq!(bp["score"], sp["score"], "{}", bp["profile"]);
        assert_eq!(bp["files"], sp["files"], "per-file results");
        assert_eq!(bp["files"].as_array().unwrap().len(), 2);
    }
    // the spikes are found: both windows detected under the standard profile
    let files = b[0]["nab"][0]["files"].as_array().unwrap();
    assert!(
        files.iter().all(|f| f["raw"].as_f64().unwrap() > 0.0),
        "{files:?}"
    );
}
