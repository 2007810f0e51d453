//! `telltale`: the command-line front of the engine. Thin: parsing arguments, opening files,
//! printing summaries; everything else lives in the library crates.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mimalloc::MiMalloc;
use telltale_bench::corpus::{Corpus, Rows, read_tree, read_windows};
use telltale_bench::labels::{Collect, EventSummary, LabelsFile};
use telltale_bench::report::{SCOREBOARD, chain_table, score_table};
use telltale_bench::run::run_chain;
use telltale_bench::scorer::score_corpus;
use telltale_codec::columnar::{ColumnarFormat, ColumnarWriter, WriteAs};
use telltale_core::time::{format_rfc3339, parse_duration_ms, parse_rfc3339};
use telltale_engine::replay::{Format, discover, discover_as, replay};
use telltale_engine::{Config, Outputs, Report};
use telltale_gen::{GenConfig, generate};

mod kafka;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Streaming anomaly detection for the telemetry of LLM and AI platforms.
#[derive(Debug, Parser)]
#[command(
    name = "telltale",
    version,
    about,
    after_help = "Environment:\n  TELLTALE_KAFKA_BROKERS  bootstrap servers for produce, tail and bench kafka (default 127.0.0.1:9092)\n  TELLTALE_LOG            log level of run: error, warn, info (default), debug"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay recorded telemetry (files, folders, or - for stdin) through the engine.
    Replay(ReplayArgs),
    /// Write a deterministic synthetic telemetry stream of an LLM serving platform
    /// (`gen llm`: a stream of LLM classifier predictions).
    Gen(GenCommandArgs),
    /// Benchmark detector chains on a NAB-layout corpus, or score others' per-row scores.
    Bench(BenchArgs),
    /// Run the live engine: consume telemetry from Kafka, produce anomaly events to Kafka.
    Run(kafka::RunArgs),
    /// Replay recorded telemetry (JSON lines) into a Kafka topic, keyed by series.
    Produce(kafka::ProduceArgs),
    /// Print the anomaly events of a Kafka topic.
    Tail(kafka::TailArgs),
    /// Check a configuration: exit 0 when it is valid, 2 naming the bad field.
    Validate(ValidateArgs),
    /// Act on anomaly events: policies of graduated steps, verified by the anomaly's resolution,
    /// high-risk steps after an approval, every decision to an audit topic.
    Remediate(RemediateArgs),
}

#[derive(Debug, Args)]
struct RemediateArgs {
    /// The remediator's TOML configuration ([remediator], [[policy]], [[policy.step]]).
    #[arg(long, short)]
    config: PathBuf,
    /// Decide and audit everything, execute nothing.
    #[arg(long)]
    dry_run: bool,
}

fn run_remediate(a: RemediateArgs) -> Result<(), Failure> {
    let (config, policies) = telltale_remediate::policy::Config::from_file(&a.config)
        .map_err(|e| Failure(format!("{e} (in {})", a.config.display()), 2))?;
    kafka::init_logging();
    telltale_remediate::run::run(&config, policies, a.dry_run)
        .map_err(|e| Failure(e.to_string(), 1))
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The TOML configuration to check.
    #[arg(long, short)]
    config: PathBuf,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: BenchRunArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Score per-row anomaly scores produced elsewhere (NAB results layout).
    Score(ScoreArgs),
    /// Rank LLM predictions by each confidence scorer against their truth (TRC, APFD, ROC-AUC).
    Llm(BenchLlmArgs),
    /// The live engine against a bare rdkafka consumer on the same broker: rates and latency.
    Kafka(kafka::BenchKafkaArgs),
    /// The whole engine on a generated stream beside a parse-only baseline of the same input.
    Throughput(ThroughputArgs),
}

/// The input format `telltale bench throughput` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ThroughputFormat {
    /// JSON lines.
    #[value(name = "jsonl", alias = "json")]
    Json,
    /// Arrow IPC file (columnar, dictionary-encoded series columns).
    #[value(alias = "binary")]
    Arrow,
    /// Parquet (columnar, Snappy).
    Parquet,
}

#[derive(Debug, Args)]
struct ThroughputArgs {
    /// Series in the generated stream.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Points per series (interleaved in time order).
    #[arg(long, default_value_t = 100)]
    points: usize,
    /// Input format.
    #[arg(long, value_enum, default_value_t = ThroughputFormat::Json)]
    format: ThroughputFormat,
    /// Chains to run (default: the built-in default chain).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchLlmArgs {
    /// JSON lines of `llm_prediction` records (those with `truth` are scored).
    #[arg(long)]
    input: PathBuf,
    /// Leave the original prompt out of MuCS smoothing (only the mutants are averaged).
    #[arg(long)]
    exclude_original: bool,
}

#[derive(Debug, Args)]
struct BenchRunArgs {
    /// Corpus folder: data/<category>/<name>.csv and labels/combined_windows.json.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Chain configurations to compare, one row each (default: the built-in default chain).
    #[arg(long = "config", short)]
    configs: Vec<PathBuf>,
    /// Print the results as JSON on stdout (per chain and profile, with each file's raw
    /// score); the tables then go to stderr.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report (tables and a plot per file) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write each chain's per-row scores here in NAB's results layout
    /// (<DIR>/<chain>/<category>/<name>.csv: timestamp,value,anomaly_score), which
    /// `telltale bench score --results DIR` (or NAB's own scorer) reads back.
    #[arg(long)]
    scores: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScoreArgs {
    /// A detector's results (<category>/<name>.csv with timestamp,anomaly_score), or a folder of
    /// such folders, one per detector.
    #[arg(long)]
    results: PathBuf,
    /// Label windows (default: labels/combined_windows.json beside the results folder).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Print the results as JSON on stdout (per detector and profile, with each file's raw
    /// score); the table then goes to stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Inputs: JSON lines, InfluxDB line protocol, CSV, Arrow IPC or Parquet files, folders of them (NAB layout included), or - for stdin (JSON lines, line protocol, CSV or an Arrow IPC stream).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// TOML configuration (default: the built-in default chain).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write anomaly events here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Write rejected records here instead of stderr.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Score events against this labels file (default: labels.json in a folder input).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Shard workers (overrides the configuration; 0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Read every input as this format, whatever its extension (default: by extension; text
    /// lines are JSON or line protocol, told apart line by line).
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
}

/// `telltale replay --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    /// JSON lines (points and `llm_prediction` records).
    Jsonl,
    /// InfluxDB line protocol.
    Influx,
    /// CSV with `timestamp` and `value` columns.
    Csv,
    /// Arrow IPC (file or stream).
    Arrow,
    /// Parquet.
    Parquet,
}

impl InputFormat {
    fn format(self) -> Format {
        match self {
            // One text decoder reads both, line by line.
            InputFormat::Jsonl | InputFormat::Influx => Format::JsonLines,
            InputFormat::Csv => Format::Csv,
            InputFormat::Arrow => Format::Columnar(ColumnarFormat::ArrowIpc),
            InputFormat::Parquet => Format::Columnar(ColumnarFormat::Parquet),
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct GenCommandArgs {
    #[command(subcommand)]
    command: Option<GenCommand>,
    #[command(flatten)]
    telemetry: GenArgs,
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// Write a seeded stream of LLM classifier predictions with a labelled confidence collapse.
    Llm(GenLlmArgs),
    /// Run a live synthetic LLM serving platform: telemetry to a Kafka topic, and an HTTP
    /// endpoint that injects faults and applies remediations (the closed-loop demo).
    Serve(kafka::ServeArgs),
}

#[derive(Debug, Args)]
struct GenLlmArgs {
    /// Output: a folder (gets predictions.jsonl and labels.json) or - for JSON lines on stdout.
    #[arg(long, short, default_value = "-")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Requests per model (three models).
    #[arg(long, default_value_t = 1800)]
    requests: usize,
    /// Interval between two requests of one model, e.g. 2s.
    #[arg(long, default_value = "2s")]
    interval: String,
    /// Mutated prompts per request.
    #[arg(long, default_value_t = 4)]
    mutants: usize,
    /// First timestamp (RFC 3339).
    #[arg(long, default_value = "2026-01-05T00:00:00Z")]
    start: String,
    /// Leave out the degradation episode.
    #[arg(long)]
    no_episode: bool,
}

/// A file format `telltale gen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GenFormat {
    /// JSON lines (telemetry.jsonl).
    Jsonl,
    /// Arrow IPC: a file (telemetry.arrow) in a folder, a stream on stdout.
    Arrow,
    /// Parquet, Snappy-compressed (telemetry.parquet; not on stdout).
    Parquet,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Output: a folder (gets telemetry.<format> and labels.json) or - for stdout.
    #[arg(long, short, default_value = "-")]
    out: PathBuf,
    /// File format; columnar files have columns timestamp, value, metric, model, region.
    #[arg(long, value_enum, default_value_t = GenFormat::Jsonl)]
    format: GenFormat,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Points per series.
    #[arg(long, default_value_t = 1440)]
    points: usize,
    /// Interval between points, e.g. 15s.
    #[arg(long, default_value = "15s")]
    interval: String,
    /// Models (1 to 8); each has seven metrics.
    #[arg(long, default_value_t = 3)]
    models: usize,
    /// First timestamp (RFC 3339).
    #[arg(long, default_value = "2026-01-05T00:00:00Z")]
    start: String,
    /// Generate a healthy stream with no injected faults.
    #[arg(long)]
    no_faults: bool,
}

/// An error for the user: printed as `error: ...`, with an exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

/// `--version`: the package version, librdkafka's version and features, and the input codecs.
fn version() -> &'static str {
    Box::leak(
        format!(
            "{}\nlibrdkafka {}\ninputs: JSON lines (points, llm_prediction), CSV, Arrow IPC (uncompressed, LZ4, Zstandard), Parquet (uncompressed, Snappy, LZ4, Zstandard)",
            env!("CARGO_PKG_VERSION"),
            telltale_kafka::client::librdkafka_description(),
        )
        .into_boxed_str(),
    )
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().version(version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Replay(a) => run_replay(a),
        Command::Gen(a) => match a.command {
            Some(GenCommand::Llm(l)) => run_gen_llm(l),
            Some(GenCommand::Serve(a)) => kafka::run_serve(a),
            None => run_gen(a.telemetry),
        },
        Command::Bench(a) => match a.command {
            Some(BenchCommand::Score(s)) => run_bench_score(s),
            Some(BenchCommand::Llm(l)) => run_bench_llm(l),
            Some(BenchCommand::Kafka(k)) => kafka::run_bench(k),
            Some(BenchCommand::Throughput(t)) => run_bench_throughput(t),
            None => run_bench(a.run),
        },
        Command::Run(a) => kafka::run(a),
        Command::Produce(a) => kafka::run_produce(a),
        Command::Tail(a) => kafka::run_tail(a),
        Command::Validate(a) => run_validate(a),
        Command::Remediate(a) => run_remediate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run_validate(a: ValidateArgs) -> Result<(), Failure> {
    let verdict = telltale_kafka::config::LiveConfig::from_file(&a.config)
        .and_then(|c| Ok((c.engine.plan()?.chains.len(), c.kafka.is_some())));
    match (verdict, a.json) {
        (Ok((chains, kafka)), json) => {
            if json {
                print_json(&serde_json::json!({
                    "config": a.config, "valid": true, "chains": chains, "kafka": kafka,
                }))?;
            } else {
                println!(
                    "{}: valid ({chains} chain(s){})",
                    a.config.display(),
                    if kafka { ", [kafka] section" } else { "" }
                );
            }
            Ok(())
        }
        (Err(e), true) => {
            print_json(&serde_json::json!({
                "config": a.config, "valid": false, "field": e.path, "error": e.to_string(),
            }))?;
            Err(Failure(e.to_string(), 2))
        }
        (Err(e), false) => Err(Failure(e.to_string(), 2)),
    }
}

fn create(path: &Path) -> Result<Box<dyn Write + Send>, Failure> {
    let f = File::create(path)
        .map_err(|e| Failure(format!("cannot create {}: {e}", path.display()), 1))?;
    Ok(Box::new(BufWriter::with_capacity(1 << 16, f)))
}

/// One line per file with rows left out (as replay rejects them).
fn warn_rejected(files: &[telltale_bench::corpus::Series]) {
    for f in files.iter().filter(|f| !f.rejected.is_empty()) {
        eprintln!(
            "{}: {} row(s) left out (first: {})",
            f.name,
            f.rejected.len(),
            f.rejected[0]
        );
    }
}

fn run_replay(a: ReplayArgs) -> Result<(), Failure> {
    let mut config = match &a.config {
        Some(p) => Config::from_file(p).map_err(|e| Failure(e.to_string(), 2))?,
        None => Config::default(),
    };
    if let Some(n) = a.shards {
        config.engine.shards = n;
    }
    let plan = config.plan().map_err(|e| Failure(e.to_string(), 2))?;
    let inputs = discover_as(&a.inputs, a.format.map(InputFormat::format))
        .map_err(|e| Failure(e.to_string(), 2))?;
    let labels_path = a.labels.clone().or_else(|| {
        a.inputs
            .iter()
            .filter(|p| p.is_dir())
            .map(|p| p.join("labels.json"))
            .find(|p| p.is_file())
    });
    let labels = labels_path
        .as_deref()
        .map(LabelsFile::read)
        .transpose()
        .map_err(|e| Failure(e, 2))?;
    let events: Box<dyn Write + Send> = match &a.out {
        Some(p) => create(p)?,
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
    };
    let rejects: Box<dyn Write + Send> = match &a.rejects {
        Some(p) => create(p)?,
        None => Box::new(io::stderr()),
    };
    let start = Instant::now();
    let outputs = Outputs { events, rejects };
    let (report, summaries) = if labels.is_some() {
        let (sink, summaries) = Collect::new(outputs);
        let report = replay(plan, &inputs, sink, !a.no_progress)?;
        (report, summaries.try_iter().collect())
    } else {
        (replay(plan, &inputs, outputs, !a.no_progress)?, Vec::new())
    };
    let secs = start.elapsed().as_secs_f64();
    print_summary(&report, secs, a.rejects.is_none());
    if let (Some(labels), Some(path)) = (labels, labels_path) {
        print_faults(&labels, &summaries, &path);
    }
    Ok(())
}

fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

fn print_summary(r: &Report, secs: f64, rejects_on_stderr: bool) {
    let rejects = r.total_rejects();
    eprintln!(
        "telltale replay: {} points, {} series, {} events ({} open, {} update, {} resolved), {} rejects",
        r.points,
        r.series,
        r.total_events(),
        r.events[0],
        r.events[1],
        r.events[2],
        rejects
    );
    if rejects > 0 {
        let by: Vec<String> = r.rejects.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let hint = if rejects_on_stderr {
            " (records above; --rejects FILE to keep them)"
        } else {
            ""
        };
        eprintln!("  rejects by reason: {}{hint}", by.join(", "));
    }
    eprintln!(
        "  {:.3} s, {:.2} M records/s, {} shards, state {} B/series + {} B of key",
        secs,
        r.records as f64 / secs.max(1e-9) / 1e6,
        r.shards,
        r.bytes_per_series,
        r.key_bytes_per_series
    );
    if r.latency.samples > 0 {
        eprintln!(
            "  engine latency per point: p50 {} µs, p99 {} µs, max {} µs (a batch's first point in → its verdicts out)",
            r.latency.p50_us, r.latency.p99_us, r.latency.max_us
        );
    }
}

fn run_bench_throughput(a: ThroughputArgs) -> Result<(), Failure> {
    use telltale_bench::throughput::{
        decode_baseline, generate_json, parse_baseline, peak_rss, reset_peak_rss, write_columnar,
    };
    use telltale_codec::columnar::ColumnarFormat;
    if a.series == 0 || a.points == 0 {
        return Err(Failure("--series and --points must be positive".into(), 2));
    }
    let config = match &a.config {
        Some(p) => Config::from_file(p).map_err(|e| Failure(e.to_string(), 2))?,
        None => Config::default(),
    };
    let plan = config.plan().map_err(|e| Failure(e.to_string(), 2))?;
    let ext = match a.format {
        ThroughputFormat::Json => "jsonl",
        ThroughputFormat::Arrow => "arrow",
        ThroughputFormat::Parquet => "parquet",
    };
    let path =
        std::env::temp_dir().join(format!("telltale-throughput-{}.{ext}", std::process::id()));
    let cannot_write = |e: io::Error| Failure(format!("cannot write {}: {e}", path.display()), 1);
    let (bytes, base, what, base_what) = match a.format {
        ThroughputFormat::Json => {
            let input = generate_json(a.series, a.points);
            let base = parse_baseline(&input);
            std::fs::write(&path, &input).map_err(cannot_write)?;
            (input.len() as u64, base, "JSON lines", "parse + series id")
        }
        ThroughputFormat::Arrow | ThroughputFormat::Parquet => {
            let (how, format, what) = if a.format == ThroughputFormat::Arrow {
                (WriteAs::IpcFile, ColumnarFormat::ArrowIpc, "Arrow IPC")
            } else {
                (WriteAs::Parquet, ColumnarFormat::Parquet, "Parquet")
            };
            let bytes = write_columnar(a.series, a.points, &path, how).map_err(cannot_write)?;
            let base = decode_baseline(&path, format)
                .map_err(|e| Failure(format!("cannot read {}: {e}", path.display()), 1))?;
            (bytes, base, what, "read + series id")
        }
    };
    let inputs = discover(std::slice::from_ref(&path)).map_err(|e| Failure(e.to_string(), 1))?;
    let reset = reset_peak_rss();
    let before = peak_rss().unwrap_or(0);
    let start = Instant::now();
    let report = replay(
        plan,
        &inputs,
        Outputs {
            events: Box::new(io::sink()),
            rejects: Box::new(io::sink()),
        },
        false,
    );
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    let report = report?;
    let peak = peak_rss().unwrap_or(0);
    let base_rate = base.points as f64 / base.secs;
    let rate = report.points as f64 / secs;
    println!(
        "throughput: {} series x {} points = {} points, {what} ({:.1} MB), {} shards",
        a.series,
        a.points,
        report.points,
        bytes as f64 / 1e6,
        report.shards
    );
    println!(
        "  decode-only baseline (one thread, {base_what:<17})  {:>7.2} M points/s",
        base_rate / 1e6
    );
    println!(
        "  whole engine (read, parse, route, score, events)     {:>7.2} M points/s   {:.2} x the baseline",
        rate / 1e6,
        rate / base_rate
    );
    let l = report.latency;
    println!(
        "  latency per point (a batch's first point in -> its verdicts out): p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        l.p50_us, l.p99_us, l.p999_us, l.max_us
    );
    println!(
        "  state {} B/series + {} B of key; peak RSS during the engine run {:.1} MB{}",
        report.bytes_per_series,
        report.key_bytes_per_series,
        peak as f64 / 1e6,
        if reset {
            format!(" (process before it: {:.1} MB)", before as f64 / 1e6)
        } else {
            " (peak mark not resettable here: includes the generated input)".into()
        }
    );
    Ok(())
}

fn print_faults(labels: &LabelsFile, summaries: &[EventSummary], path: &Path) {
    let score = labels.score(summaries);
    eprintln!(
        "faults ({}): {}/{} caught, {} anomalies opened outside any fault",
        path.display(),
        score.caught(),
        score.faults.len(),
        score.unexpected_opens.len()
    );
    for f in &score.faults {
        match (&f.series, f.delay_ms) {
            (Some(series), Some(d)) => {
                eprintln!(
                    "  caught  {:<16} {:<22} after {:>7}  on {series}",
                    f.kind,
                    f.id,
                    human_ms(d)
                )
            }
            _ => eprintln!("  MISSED  {:<16} {}", f.kind, f.id),
        }
    }
    for (series, onset) in score.unexpected_opens.iter().take(10) {
        eprintln!("  unexpected open at {onset} on {series}");
    }
    if score.unexpected_opens.len() > 10 {
        eprintln!("  … and {} more", score.unexpected_opens.len() - 10);
    }
}

/// The stream writer of `gen`: `DIR/<file>` for a folder, stdout for `-`.
fn gen_output(out: &Path, file: &str) -> Result<Box<dyn Write + Send>, Failure> {
    if out.as_os_str() == "-" {
        Ok(Box::new(BufWriter::with_capacity(1 << 16, io::stdout())))
    } else {
        std::fs::create_dir_all(out)?;
        Ok(create(&out.join(file))?)
    }
}

/// Writes `DIR/labels.json`; returns its path.
fn write_labels(out: &Path, labels: &LabelsFile) -> Result<PathBuf, Failure> {
    let path = out.join("labels.json");
    let mut f = create(&path)?;
    serde_json::to_writer_pretty(&mut f, labels)?;
    f.write_all(b"\n")?;
    f.flush()?;
    Ok(path)
}

/// `--interval` and `--start` of the generators, in milliseconds.
fn interval_and_start(interval: &str, start: &str) -> Result<(i64, i64), Failure> {
    let interval_ms = parse_duration_ms(interval)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            Failure(
                format!("--interval `{interval}` is not a duration such as 15s or 2s"),
                2,
            )
        })?;
    let start_ms = parse_rfc3339(start)
        .ok_or_else(|| Failure(format!("--start `{start}` is not RFC 3339"), 2))?;
    Ok((interval_ms, start_ms))
}

fn run_gen(a: GenArgs) -> Result<(), Failure> {
    let (interval_ms, start_ms) = interval_and_start(&a.interval, &a.start)?;
    if !(1..=8).contains(&a.models) {
        return Err(Failure("--models must be 1 to 8".into(), 2));
    }
    let cfg = GenConfig {
        seed: a.seed,
        points: a.points,
        interval_ms,
        start_ms,
        models: a.models,
        faults: !a.no_faults,
    };
    let to_stdout = a.out.as_os_str() == "-";
    let file = match a.format {
        GenFormat::Jsonl => "telemetry.jsonl",
        GenFormat::Arrow => "telemetry.arrow",
        GenFormat::Parquet if to_stdout => {
            return Err(Failure(
                "--format parquet needs a folder (--out DIR): Parquet cannot be streamed; use --format arrow for a stream on stdout".into(),
                2,
            ));
        }
        GenFormat::Parquet => "telemetry.parquet",
    };
    let out = gen_output(&a.out, file)?;
    let mut err: Option<io::Error> = None;
    let labels = match a.format {
        GenFormat::Jsonl => {
            let mut out = out;
            let mut line = Vec::with_capacity(256);
            let labels = generate(&cfg, |metric, labels, ts, value| {
                if err.is_some() {
                    return;
                }
                line.clear();
                telltale_gen::write_json_line(&mut line, metric, labels, ts, value);
                if let Err(e) = out.write_all(&line) {
                    err = Some(e);
                }
            });
            if err.is_none() {
                out.flush()?;
            }
            labels
        }
        GenFormat::Arrow | GenFormat::Parquet => {
            let how = match (a.format, to_stdout) {
                (GenFormat::Parquet, _) => WriteAs::Parquet,
                (_, true) => WriteAs::IpcStream,
                _ => WriteAs::IpcFile,
            };
            let mut w = ColumnarWriter::new(out, how, &telltale_gen::LABEL_NAMES)?;
            let labels = generate(&cfg, |metric, labels, ts, value| {
                if err.is_none()
                    && let Err(e) = w.push(metric, labels, ts, value)
                {
                    err = Some(e);
                }
            });
            if err.is_none() {
                w.finish()?;
            }
            labels
        }
    };
    if let Some(e) = err {
        return Err(e.into());
    }
    if !to_stdout {
        let path = write_labels(&a.out, &labels)?;
        eprintln!(
            "telltale gen: {} points of {} series from {} to {} in {}, {} faults in {}",
            cfg.points * cfg.models * 7,
            cfg.models * 7,
            format_rfc3339(start_ms),
            format_rfc3339(start_ms + (cfg.points as i64 - 1) * interval_ms),
            a.out.join(file).display(),
            labels.faults.len(),
            path.display()
        );
    }
    Ok(())
}

fn run_bench(a: BenchRunArgs) -> Result<(), Failure> {
    let corpus_dir = a
        .corpus
        .ok_or_else(|| Failure("--corpus DIR is required (or use `bench score`)".into(), 2))?;
    let mut chains = Vec::new();
    if a.configs.is_empty() {
        chains.push(("default".to_owned(), Config::default()));
    }
    for p in &a.configs {
        let c = Config::from_file(p).map_err(|e| Failure(e.to_string(), 2))?;
        let name = p.file_stem().map_or_else(
            || p.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        chains.push((name, c));
    }
    let plans = chains
        .into_iter()
        .map(|(n, c)| {
            c.plan()
                .map(|p| (n, p))
                .map_err(|e| Failure(e.to_string(), 2))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let corpus = Corpus::read(&corpus_dir).map_err(|e| Failure(e.to_string(), 2))?;
    warn_rejected(&corpus.files);
    let progress = io::stderr().is_terminal();
    let mut results = Vec::new();
    for (i, (name, plan)) in plans.iter().enumerate() {
        if progress {
            eprint!("\r  [{}/{}] running {name} …", i + 1, plans.len());
        }
        results.push(run_chain(name, plan, &corpus));
    }
    if progress {
        eprint!("\r{}\r", " ".repeat(60));
    }
    let table = format!(
        "{}\npublished (standard): {}\n",
        chain_table(&results),
        SCOREBOARD
            .iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if a.json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    eprintln!(
        "telltale bench: {} files, {} rows, {} chain(s) in {:.2} s",
        corpus.files.len(),
        results.first().map_or(0, |r| r.points),
        results.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.report {
        let command: Vec<String> = std::env::args().collect();
        let html = telltale_bench::html::render(&corpus, &results, &command.join(" "));
        std::fs::write(path, html)
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display()), 1))?;
        eprintln!("report: {}", path.display());
    }
    if let Some(dir) = &a.scores {
        for r in &results {
            write_scores(&dir.join(&r.name), &corpus, r)?;
        }
        eprintln!("scores: {}", dir.display());
    }
    if a.json {
        let doc: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "chain": r.name,
                    "nab": r.nab.iter().map(profile_json).collect::<Vec<_>>(),
                    "opens_nab": r.opens_nab.iter().map(profile_json).collect::<Vec<_>>(),
                    "precision": r.events.precision(),
                    "recall": r.events.recall(),
                    "f1": r.events.f1(),
                    "mean_delay_rows": r.events.mean_delay_rows(),
                    "points": r.points,
                    "points_per_second": r.points as f64 / r.seconds.max(1e-9),
                })
            })
            .collect();
        print_json(&serde_json::Value::from(doc))?;
    }
    Ok(())
}

/// Writes one chain's per-row scores as `<dir>/<category>/<name>.csv`.
fn write_scores(
    dir: &Path,
    corpus: &Corpus,
    r: &telltale_bench::run::ChainResult,
) -> Result<(), Failure> {
    for (data, scored) in corpus.files.iter().zip(&r.scores) {
        let path = dir.join(&data.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure(format!("cannot create {}: {e}", parent.display()), 1))?;
        }
        let mut f = create(&path)?;
        writeln!(f, "timestamp,value,anomaly_score")?;
        for ((t, v), s) in data.timestamps.iter().zip(&data.values).zip(&scored.values) {
            writeln!(f, "{},{v},{s}", format_rfc3339(*t))?;
        }
        f.flush()?;
    }
    Ok(())
}

/// One profile's result as JSON: normalised and raw score, threshold, and per file the raw
/// score with its row counts at that threshold (NAB's `<detector>_<profile>_scores.csv`).
fn profile_json(p: &telltale_bench::scorer::ProfileResult) -> serde_json::Value {
    serde_json::json!({
        "profile": p.profile,
        "score": p.normalized,
        "raw": p.raw,
        "threshold": p.threshold,
        "files": p.files.iter().map(|(name, s)| serde_json::json!({
            "file": name, "raw": s.score, "tp": s.tp, "fp": s.fp, "fn": s.fn_, "tn": s.tn,
        })).collect::<Vec<_>>(),
    })
}

/// `doc`, pretty-printed, on stdout.
fn print_json(doc: &serde_json::Value) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, doc)?;
    writeln!(out)?;
    Ok(())
}

fn run_bench_score(a: ScoreArgs) -> Result<(), Failure> {
    let labels = a.labels.clone().unwrap_or_else(|| {
        a.results
            .parent()
            .unwrap_or(Path::new("."))
            .join("labels/combined_windows.json")
    });
    let windows = read_windows(&labels).map_err(|e| Failure(format!("{e} (give --labels)"), 2))?;
    // A folder of detectors, or one detector's folder of categories.
    let mut detectors: Vec<(String, PathBuf)> = Vec::new();
    let direct = read_tree(&a.results, "anomaly_score", Rows::Scores)
        .map_err(|e| Failure(e.to_string(), 2))?;
    warn_rejected(&direct);
    let nested = direct.iter().any(|s| s.name.matches('/').count() >= 2);
    if nested {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&a.results)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            detectors.push((name, d));
        }
    } else {
        let name = a
            .results
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        detectors.push((name, a.results.clone()));
    }
    let mut rows = Vec::new();
    for (name, dir) in detectors {
        let scored = read_tree(&dir, "anomaly_score", Rows::Scores)
            .map_err(|e| Failure(e.to_string(), 2))?;
        rows.push((name, score_corpus(&scored, &windows)));
    }
    if a.json {
        eprint!("{}", score_table(&rows));
    } else {
        print!("{}", score_table(&rows));
    }
    if a.json {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, r)| {
                serde_json::json!({
                    "detector": name,
                    "nab": r.iter().map(profile_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&serde_json::Value::from(doc))?;
    }
    Ok(())
}

fn run_gen_llm(a: GenLlmArgs) -> Result<(), Failure> {
    let (interval_ms, start_ms) = interval_and_start(&a.interval, &a.start)?;
    let cfg = telltale_gen::llm::LlmGenConfig {
        seed: a.seed,
        requests: a.requests,
        interval_ms,
        start_ms,
        mutants: a.mutants,
        episode: !a.no_episode,
    };
    let to_stdout = a.out.as_os_str() == "-";
    let mut out = gen_output(&a.out, "predictions.jsonl")?;
    let mut err: Option<io::Error> = None;
    let labels = telltale_gen::llm::generate_llm(&cfg, |r| {
        if err.is_some() {
            return;
        }
        let line = serde_json::json!({
            "model": r.model,
            "task": r.task,
            "request_id": r.request_id,
            "timestamp": r.timestamp,
            "labels": r.classes,
            "probs": r.probs,
            "mutants": r.mutants,
            "truth": r.classes[r.truth],
            "deployment": "prod",
        });
        let res = serde_json::to_writer(&mut out, &line)
            .map_err(io::Error::other)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = res {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    out.flush()?;
    if !to_stdout {
        let path = write_labels(&a.out, &labels)?;
        eprintln!(
            "telltale gen llm: {} predictions of 3 models in {}, episode labels in {}",
            cfg.requests * 3,
            a.out.join("predictions.jsonl").display(),
            path.display()
        );
    }
    Ok(())
}

fn run_bench_llm(a: BenchLlmArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&a.input)
        .map_err(|e| Failure(format!("cannot read {}: {e}", a.input.display()), 2))?;
    let mut predictions = Vec::new();
    let mut rejected = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match telltale_codec::llm::parse_prediction(line) {
            Some(Ok(p)) => predictions.push(p),
            Some(Err(reason)) => {
                rejected += 1;
                eprintln!("line {}: rejected: {reason}", i + 1);
            }
            None => rejected += 1,
        }
    }
    let (n, faults, results) = telltale_bench::llm::evaluate(&predictions, !a.exclude_original);
    if n == 0 {
        return Err(Failure("no prediction with a `truth` to score".into(), 2));
    }
    print!("{}", telltale_bench::llm::table(n, faults, &results));
    if rejected > 0 {
        eprintln!("{rejected} line(s) were not valid predictions");
    }
    Ok(())
}
