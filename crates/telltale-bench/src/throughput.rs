//! `telltale bench throughput`: the whole engine on a generated stream, beside a parse-only
//! baseline of the same bytes measured in the same run.

use std::io;
use std::path::Path;
use std::time::Instant;

use telltale_codec::columnar::{
    ColumnarFormat, ColumnarReader, ColumnarWriter, Decoder, Row, WriteAs,
};
use telltale_codec::json::RawIdCache;
use telltale_codec::json::{PointBuf, parse_json_line};

/// Label names of the generated stream.
pub const LABEL_NAMES: [&str; 2] = ["host", "region"];

/// A deterministic stream: `series` series (metric `bench_latency_ms`, labels `host` and
/// `region`), `points` points each, interleaved in time order (one point of every series per
/// 15 s step), values around 100 with noise and a rare spike. Calls `emit(host, region, ts,
/// value)` per point.
pub fn generate(series: usize, points: usize, mut emit: impl FnMut(&str, &str, i64, f64)) {
    let t0: i64 = 1_700_000_000_000;
    let hosts: Vec<String> = (0..series).map(|i| format!("h{i:06}")).collect();
    let regions: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for j in 0..points {
        for i in 0..series {
            // Cheap deterministic noise (an LCG step of the pair).
            let h = (i as u64)
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add((j as u64).wrapping_mul(1_442_695_040_888_963_407));
            let noise = ((h >> 33) % 1000) as f64 / 100.0;
            let spike = if (h >> 20).is_multiple_of(5000) {
                400.0
            } else {
                0.0
            };
            emit(
                &hosts[i],
                &regions[i % 8],
                t0 + j as i64 * 15_000,
                100.0 + noise + spike,
            );
        }
    }
}

/// The stream of [`generate`] as JSON lines.
pub fn generate_json(series: usize, points: usize) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(series * points * 110);
    generate(series, points, |host, region, ts, value| {
        let _ = writeln!(
            out,
            r#"{{"metric":"bench_latency_ms","labels":{{"host":"{host}","region":"{region}"}},"timestamp":{ts},"value":{value}}}"#,
        );
    });
    out
}

/// Writes the stream of [`generate`] to `path` as Arrow IPC or Parquet (dictionary-encoded
/// metric and labels, as `telltale gen` writes them); returns the file's size.
pub fn write_columnar(series: usize, points: usize, path: &Path, how: WriteAs) -> io::Result<u64> {
    let file = std::fs::File::create(path)?;
    let out = Box::new(io::BufWriter::with_capacity(1 << 20, file));
    let mut w = ColumnarWriter::new(out, how, &LABEL_NAMES)?;
    let mut err = None;
    generate(series, points, |host, region, ts, value| {
        if err.is_none()
            && let Err(e) = w.push(
                "bench_latency_ms",
                &[("host", host), ("region", region)],
                ts,
                value,
            )
        {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    w.finish()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Reads a columnar file on this thread into points and series ids (the decoder the replay
/// parsers use), doing nothing else: the floor under the engine for columnar input.
pub fn decode_baseline(path: &Path, format: ColumnarFormat) -> io::Result<Baseline> {
    let started = Instant::now();
    let mut decoder = Decoder::default();
    let mut points = 0u64;
    let mut check = 0u64;
    for chunk in ColumnarReader::open(path, format, "series")? {
        decoder.decode(
            &chunk?,
            |_, _| {},
            |_, row| {
                if let Row::Point { id, value, .. } = row {
                    check ^= id ^ value.to_bits();
                    points += 1;
                }
            },
        );
    }
    std::hint::black_box(check);
    Ok(Baseline {
        points,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// What the baseline did.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Lines parsed.
    pub points: u64,
    /// Seconds.
    pub secs: f64,
}

/// Parses every line of `input` on this thread into points and series ids (with the same
/// raw-form id cache the replay parsers use), doing nothing else: the floor under the engine.
pub fn parse_baseline(input: &[u8]) -> Baseline {
    let started = Instant::now();
    let text = std::str::from_utf8(input).unwrap_or("");
    let mut point = PointBuf::default();
    let mut ids = RawIdCache::default();
    let mut points = 0u64;
    let mut check = 0u64;
    for line in text.lines() {
        if parse_json_line(line, &mut point).is_ok() {
            let (id, _) = ids.id(&point);
            check ^= id ^ point.value.to_bits();
            points += 1;
        }
    }
    std::hint::black_box(check);
    Baseline {
        points,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// The process's peak resident memory so far, in bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resets the peak-memory mark (Linux: `5` to `/proc/self/clear_refs`), so that [`peak_rss`]
/// then measures only what follows. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_stream_parses_completely_and_is_deterministic() {
        let a = generate_json(10, 20);
        assert_eq!(a, generate_json(10, 20));
        let b = parse_baseline(&a);
        assert_eq!(b.points, 200);
    }

    #[test]
    fn columnar_stream_decodes_to_the_json_streams_points() {
        let dir = std::env::temp_dir().join(format!("telltale-tp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (how, format, file) in [
            (WriteAs::IpcFile, ColumnarFormat::ArrowIpc, "s.arrow"),
            (WriteAs::Parquet, ColumnarFormat::Parquet, "s.parquet"),
        ] {
            let path = dir.join(file);
            write_columnar(10, 20, &path, how).unwrap();
            assert_eq!(decode_baseline(&path, format).unwrap().points, 200);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peak_memory_is_readable() {
        assert!(peak_rss().is_some_and(|b| b > 0));
    }
}
