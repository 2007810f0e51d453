//! A corpus with rows that cannot be used is scored without them, and says how many it left out.

use telltale_bench::corpus::Corpus;
use telltale_bench::run::run_chain;
use telltale_engine::config::Config;

#[test]
fn a_corpus_with_an_empty_value_and_a_repeated_timestamp_scores_and_counts_the_rejects() {
    let dir = std::env::temp_dir().join(format!("telltale-rows-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data/cat")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    // Four days of 5-minute points with a spike on day 3, one empty value, one repeated
    // timestamp and one that goes back.
    let mut csv = String::from("timestamp,value\n");
    let mut rows = 0;
    for i in 0..4 * 288 {
        let (d, h, m) = (1 + i / 288, i % 288 / 12, i % 12 * 5);
        let ts = format!("2020-01-{d:02} {h:02}:{m:02}:00");
        let v = if i == 3 * 288 + 100 {
            500.0
        } else {
            100.0 + (i * 7 % 11) as f64
        };
        match i {
            500 => csv.push_str(&format!("{ts},\n")),
            600 => csv.push_str(&format!("{ts},{v}\n{ts},{v}\n")),
            700 => csv.push_str(&format!("{ts},{v}\n2020-01-01 00:00:00,1\n")),
            _ => csv.push_str(&format!("{ts},{v}\n")),
        }
        rows += 1;
    }
    std::fs::write(dir.join("data/cat/series.csv"), csv).unwrap();
    std::fs::write(
        dir.join("labels/combined_windows.json"),
        r#"{"cat/series.csv": [["2020-01-04 06:00:00", "2020-01-04 12:00:00"]]}"#,
    )
    .unwrap();
    let corpus = Corpus::read(&dir).unwrap();
    let f = &corpus.files[0];
    let reasons: Vec<&str> = f
        .rejected
        .iter()
        .map(|r| r.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(reasons, ["non_finite_value", "duplicate", "out_of_order"]);
    assert_eq!(
        f.values.len(),
        rows - 1,
        "the empty value left out, the rest kept"
    );
    let plan = Config::default().plan().unwrap();
    let r = run_chain("default", &plan, &corpus);
    assert_eq!(r.points, (rows - 1) as u64);
    // The spike inside the window is found, by the ranked rows and by the opens alike.
    assert_eq!(r.events.windows_hit, 1, "{:?}", r.events);
    assert!(r.nab[0].normalized > 0.0, "{:?}", r.nab[0].normalized);
    assert!(r.opens_nab[0].normalized > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
