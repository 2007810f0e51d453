//! `telltale run`, `telltale produce` and `telltale tail`: the Kafka side of the CLI.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use telltale_core::time::parse_duration_ms;
use telltale_engine::Config;
use telltale_kafka::client::{TailFormat, TailOptions, produce, tail};
use telltale_kafka::config::{Connection, LiveConfig};
use telltale_kafka::metrics::{Metrics, serve};

use crate::Failure;

/// Where the brokers are when no flag says: `$TELLTALE_KAFKA_BROKERS`, else 127.0.0.1:9092.
fn default_brokers() -> String {
    std::env::var("TELLTALE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The cluster a client command talks to: the `[kafka]` section of `config` (brokers, TLS,
/// SASL, raw properties) when given, with `brokers` overriding its brokers; else plaintext to
/// `brokers` or the default.
fn connection(config: Option<&Path>, brokers: Option<String>) -> Result<Connection, Failure> {
    let mut conn = match config {
        Some(p) => {
            let c = LiveConfig::from_file(p).map_err(|e| Failure(e.to_string(), 2))?;
            c.kafka
                .map(|k| k.connection())
                .ok_or_else(|| Failure(format!("{}: no [kafka] section", p.display()), 2))?
        }
        None => Connection::plain(&default_brokers()),
    };
    if let Some(b) = brokers {
        conn.brokers = b;
    }
    Ok(conn)
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// TOML configuration with a [kafka] section (brokers, topics, anomaly and dead-letter topics).
    #[arg(long, short)]
    config: PathBuf,
    /// Serve /metrics, /healthz and /readyz here (overrides [http] listen; "" disables).
    #[arg(long)]
    http: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// JSON-lines file of points (or - for stdin); one message per line, keyed by series id.
    input: PathBuf,
    /// Topic to write to.
    #[arg(long, short)]
    topic: String,
    /// Bootstrap servers (default: $TELLTALE_KAFKA_BROKERS, else 127.0.0.1:9092).
    #[arg(long, short)]
    brokers: Option<String>,
    /// Messages per second (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Connect as the [kafka] section of this configuration says (brokers, TLS, SASL).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Extra librdkafka properties, `key=value` (repeatable).
    #[arg(long = "set", short = 'X', value_parser = key_value)]
    set: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Topic of anomaly events.
    #[arg(long, short, default_value = "telltale-anomalies")]
    topic: String,
    /// Bootstrap servers (default: $TELLTALE_KAFKA_BROKERS, else 127.0.0.1:9092).
    #[arg(long, short)]
    brokers: Option<String>,
    /// Print each event's JSON as it is on the topic.
    #[arg(long)]
    json: bool,
    /// Start from the beginning of the topic (default: only new events).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when no event arrived for this long (e.g. 5s).
    #[arg(long)]
    idle_exit: Option<String>,
    /// Connect as the [kafka] section of this configuration says (brokers, TLS, SASL).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Extra librdkafka properties, `key=value` (repeatable).
    #[arg(long = "set", short = 'X', value_parser = key_value)]
    set: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchKafkaArgs {
    /// Bootstrap servers (default: $TELLTALE_KAFKA_BROKERS, else 127.0.0.1:9092).
    #[arg(long, short)]
    brokers: Option<String>,
    /// Messages in the pre-filled topic.
    #[arg(long, default_value_t = 500_000)]
    messages: usize,
    /// Series they belong to.
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Seconds of live traffic at half the engine's rate for the latency phase (0 skips it).
    #[arg(long, default_value_t = 10.0)]
    latency_seconds: f64,
    /// Alternating bare/engine reads of the filled topic; the best of each is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run the engine with `[kafka] exactly_once = true` (transactions every 100 ms; a message
    /// counts once its transaction commits).
    #[arg(long)]
    exactly_once: bool,
    /// Chains to run (default: the built-in default chain); its [kafka] section, if any, says
    /// how to connect (brokers, TLS, SASL).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(crate) fn run_bench(a: BenchKafkaArgs) -> Result<(), Failure> {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
    let config = match &a.config {
        Some(p) => Config::from_file(p).map_err(|e| Failure(e.to_string(), 2))?,
        None => Config::default(),
    };
    if a.messages == 0 || a.series == 0 || a.partitions <= 0 {
        return Err(Failure(
            "--messages, --series and --partitions must be positive".into(),
            2,
        ));
    }
    let conn = match &a.config {
        Some(p) if config.kafka.is_some() => connection(Some(p), a.brokers)?,
        _ => connection(None, a.brokers)?,
    };
    let opts = telltale_kafka::bench::BenchOptions {
        conn,
        messages: a.messages,
        series: a.series,
        partitions: a.partitions,
        latency_secs: a.latency_seconds,
        rounds: a.rounds,
        exactly_once: a.exactly_once,
    };
    let r = telltale_kafka::bench::bench(&opts, &config)?;
    println!(
        "Kafka consume ({} messages, {} series, {} partitions, broker {}; best of {} rounds{})",
        opts.messages,
        opts.series,
        opts.partitions,
        opts.conn.brokers,
        opts.rounds,
        if opts.exactly_once {
            "; exactly once"
        } else {
            ""
        }
    );
    println!("  fill (produce)             {:>10.0} msg/s", r.fill_rate);
    println!(
        "  bare rdkafka consumer      {:>10.0} msg/s   (baseline)",
        r.bare_rate
    );
    println!(
        "  telltale run (handled)     {:>10.0} msg/s   ratio {:.2}   ({} events)",
        r.engine_rate,
        r.engine_rate / r.bare_rate,
        r.engine_events
    );
    if r.latency_rate > 0.0 {
        let f = |l: telltale_engine::pipeline::LatencySummary| {
            let ms = |us: u64| us as f64 / 1000.0;
            format!(
                "p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            )
        };
        println!(
            "Latency at {:.0} msg/s (half the engine's rate)",
            r.latency_rate
        );
        println!("  produce -> verdict (telltale)   {}", f(r.engine_latency));
        println!("  produce -> receive (bare)       {}", f(r.bare_latency));
    }
    Ok(())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// Logs to stderr; the level comes from $TELLTALE_LOG (error, warn, info, debug, trace;
/// default info).
pub(crate) fn init_logging() {
    let level = std::env::var("TELLTALE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
}

pub(crate) fn run(a: RunArgs) -> Result<(), Failure> {
    init_logging();
    // Everything (the [kafka] section included) is checked before touching the network.
    let mut config = LiveConfig::from_file(&a.config).map_err(|e| Failure(e.to_string(), 2))?;
    if let Some(h) = a.http {
        config.http.listen = h;
        config
            .http
            .validate()
            .map_err(|e| Failure(e.to_string(), 2))?;
    }
    if config.kafka.is_none() {
        return Err(Failure(telltale_kafka::Error::NoKafka.to_string(), 2));
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while draining exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, shutdown.clone())?;
        signal_hook::flag::register(sig, shutdown.clone())?;
    }
    let metrics = Arc::new(Metrics::default());
    // HTTP input (remote write, OTLP) has no offsets to commit with a transaction, and its
    // events would be produced while a transaction commits: not with exactly_once.
    let exactly_once = config.kafka.as_ref().is_some_and(|k| k.exactly_once);
    let ingest = (!exactly_once).then(|| Arc::new(telltale_kafka::ingest::Ingest::default()));
    if !config.http.listen.is_empty() {
        let addr = config
            .http
            .listen
            .parse()
            .map_err(|e| Failure(format!("http.listen: {e}"), 2))?;
        let bound = serve(addr, metrics.clone(), ingest.clone())
            .map_err(|e| Failure(format!("cannot listen on {addr}: {e}"), 1))?;
        if exactly_once {
            tracing::info!(
                "serving /metrics, /healthz and /readyz (no HTTP input with exactly_once) on \
                 http://{bound}"
            );
        } else {
            tracing::info!(
                "serving /metrics, /healthz, /readyz and POST /api/v1/write on http://{bound}"
            );
        }
    }
    let summary = telltale_kafka::run::run_with(&config, shutdown, metrics, ingest)?;
    tracing::info!(
        "stopped: {} messages, {} points, {} series, {} events, {} dead letters",
        summary.messages,
        summary.report.points,
        summary.report.series,
        summary.report.total_events(),
        summary.dead_letters
    );
    Ok(())
}

pub(crate) fn run_produce(a: ProduceArgs) -> Result<(), Failure> {
    init_logging();
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Failure("--rate must be a positive number".into(), 2));
    }
    let mut input: Box<dyn io::BufRead> = if a.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let f = File::open(&a.input)
            .map_err(|e| Failure(format!("cannot open {}: {e}", a.input.display()), 2))?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let overrides: BTreeMap<String, String> = a.set.into_iter().collect();
    let conn = connection(a.config.as_deref(), a.brokers)?;
    let p = produce(&conn, &a.topic, &mut input, a.rate, &overrides)?;
    eprintln!(
        "produced {} messages to {} in {:.2} s ({:.0} msg/s), {} acknowledged",
        p.sent,
        a.topic,
        p.elapsed.as_secs_f64(),
        p.sent as f64 / p.elapsed.as_secs_f64().max(1e-9),
        p.acked
    );
    Ok(())
}

pub(crate) fn run_tail(a: TailArgs) -> Result<(), Failure> {
    init_logging();
    let idle_exit = a
        .idle_exit
        .as_deref()
        .map(|s| {
            parse_duration_ms(s)
                .filter(|d| *d > 0)
                .map(|d| Duration::from_millis(d as u64))
                .ok_or_else(|| Failure(format!("--idle-exit: `{s}` is not a duration"), 2))
        })
        .transpose()?;
    let opts = TailOptions {
        from_beginning: a.from_beginning,
        max: a.max,
        idle_exit,
        format: if a.json {
            TailFormat::Json
        } else {
            TailFormat::Human
        },
    };
    let overrides: BTreeMap<String, String> = a.set.into_iter().collect();
    let conn = connection(a.config.as_deref(), a.brokers)?;
    let mut out = io::stdout().lock();
    tail(&conn, &a.topic, &opts, &overrides, &mut out)?;
    Ok(())
}

/// `telltale gen serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Bootstrap servers (default: $TELLTALE_KAFKA_BROKERS, else 127.0.0.1:9092).
    #[arg(long, short)]
    brokers: Option<String>,
    /// Topic the telemetry goes to.
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// Interval between rounds of points, e.g. 1s.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// The control endpoint (faults and remediations).
    #[arg(long, default_value = "127.0.0.1:9466")]
    listen: String,
    /// Models (1 to 3), three metrics each.
    #[arg(long, default_value_t = 3)]
    models: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub(crate) fn run_serve(a: ServeArgs) -> Result<(), Failure> {
    init_logging();
    let interval = parse_duration_ms(&a.interval)
        .filter(|d| *d > 0)
        .ok_or_else(|| Failure(format!("--interval: `{}` is not a duration", a.interval), 2))?;
    let conn = connection(None, a.brokers)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| Failure(e.to_string(), 1))?;
    }
    let topic = a.topic.clone();
    telltale_kafka::demo::serve(
        &conn,
        &a.topic,
        Duration::from_millis(interval as u64),
        &a.listen,
        a.models,
        a.seed,
        stop,
        |addr| {
            eprintln!(
                "serving telemetry to {topic}; control on http://{addr}/ (POST /fault, POST /remediate, GET /status)"
            )
        },
    )
    .map_err(|e| Failure(e.to_string(), 1))
}
