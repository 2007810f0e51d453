//! Configuration: TOML, every table with `deny_unknown_fields`, validated at load so that a bad
//! file fails at start-up with the path of the bad field.
//!
//! ```toml
//! [engine]
//! shards = 0            # 0: one shard per core
//! batch = 4096          # points per hand-off batch
//! parsers = 0           # replay parser threads; 0: one per core
//!
//! [chain]               # the default chain: series that match no rule
//! detectors = [{ kind = "ewma", alpha = 0.05 }, { kind = "cusum" }]
//! combine = "max"
//! ring = 8             # default: the robust_z window, else 8
//! alert = { open = 0.99999, resolve = 0.99, min_points = 2, resolve_points = 5, cooldown = "0s" }
//!
//! [[rule]]              # first matching rule wins
//! name = "latency"
//! metric = "llm_*latency*"
//! labels = { model = "llama*" }
//! detectors = [{ kind = "page_hinkley", threshold = 25.0 }]
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use telltale_detect::params::{Count, Reach, ScoreLevel, Share, Span, Weight};
use telltale_detect::{
    Calibration, Combine, CusumParams, EwmaParams, KnnParams, NoveltyParams, PageHinkleyParams,
    RobustZParams, SameTimeParams,
};

use telltale_core::key::SeriesKey;
use telltale_core::time::parse_duration_ms;

/// Most detectors one chain may hold.
pub const MAX_DETECTORS: usize = 8;

/// A configuration error, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where: a field path such as `rule[0].alert.open`, or a file name.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid configuration at `{}`: {}",
                self.path, self.message
            )
        }
    }
}

impl ConfigError {
    /// An error at `path` (such as `kafka.brokers`) saying `message`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The default chain, used for series that match no rule.
    #[serde(default)]
    pub chain: ChainConfig,
    /// Per-series rules, tried in order; the first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// How `llm_prediction` records become derived series.
    #[serde(default)]
    pub llm: telltale_codec::llm::LlmConfig,
    /// `[kafka]`: the live engine's section, kept as TOML here and read (with the same
    /// unknown-field and path checks) by `telltale-kafka`, which owns its type.
    #[serde(default)]
    pub kafka: Option<toml::Table>,
    /// `[http]`: the live engine's endpoint, read by `telltale-kafka` likewise.
    #[serde(default)]
    pub http: Option<toml::Table>,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Shard workers; 0 means one per available core (default 0).
    #[serde(default)]
    pub shards: usize,
    /// Points per batch handed from the input thread to the shards (default 4096).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Parser threads for replayed files; 0 means one per available core (default 0).
    #[serde(default)]
    pub parsers: usize,
    /// How much older than its series' newest point a point may be and still be scored
    /// (default `5s`): it is scored in arrival order, at its series' newest time. Older points
    /// are rejected as `out_of_order`.
    #[serde(default = "default_lateness")]
    pub max_lateness: String,
    /// Unit of InfluxDB line protocol timestamps: `ns` (default, as Telegraf and the InfluxDB
    /// clients write them), `us`, `ms` or `s`.
    #[serde(default)]
    pub influx_precision: telltale_codec::influx::Precision,
}

fn default_lateness() -> String {
    "5s".into()
}

fn default_batch() -> usize {
    4096
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            batch: default_batch(),
            parsers: 0,
            max_lateness: default_lateness(),
            influx_precision: Default::default(),
        }
    }
}

/// One detector of a chain, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawDetector")]
pub enum DetectorSpec {
    /// EWMA z-score.
    Ewma(EwmaParams),
    /// Two-sided self-starting CUSUM.
    Cusum(CusumParams),
    /// Page-Hinkley (River semantics).
    PageHinkley(PageHinkleyParams),
    /// Robust z-score over the series' ring (its `window` must equal the chain's `ring`).
    RobustZ(RobustZParams),
    /// Static bounds: 1 outside them, 0 inside.
    Threshold(telltale_detect::ThresholdParams),
    /// Anomaly likelihood of the EWMA surprise against its own history.
    Likelihood(telltale_detect::LikelihoodParams),
    /// Seasonal (time-of-period) profile plus level offset; residual z-score.
    Seasonal(telltale_detect::SeasonalParams),
    /// Conformal k-nearest-neighbour rank of the newest window's shape.
    Knn(telltale_detect::KnnParams),
    /// Conformal rank of the newest shape's distance to the same time on previous days.
    SameTime(telltale_detect::SameTimeParams),
    /// Distance of the (smoothed) value from every value seen before, as a share of the range.
    Novelty(telltale_detect::NoveltyParams),
}

impl DetectorSpec {
    /// The `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorSpec::Ewma(_) => "ewma",
            DetectorSpec::Cusum(_) => "cusum",
            DetectorSpec::PageHinkley(_) => "page_hinkley",
            DetectorSpec::RobustZ(_) => "robust_z",
            DetectorSpec::Threshold(_) => "threshold",
            DetectorSpec::Likelihood(_) => "likelihood",
            DetectorSpec::Seasonal(_) => "seasonal",
            DetectorSpec::Knn(_) => "knn",
            DetectorSpec::SameTime(_) => "same_time",
            DetectorSpec::Novelty(_) => "novelty",
        }
    }
}

/// Marks the field path inside a detector table in an error message, so that [`Config::from_toml`]
/// can append it to the outer path (serde's internally tagged enums lose the inner path).
const FIELD_MARK: char = '\u{1}';

/// A detector table before its `kind` is dispatched.
#[derive(Deserialize)]
struct RawDetector {
    kind: String,
    #[serde(flatten)]
    rest: toml::Table,
}

impl TryFrom<RawDetector> for DetectorSpec {
    type Error = String;

    fn try_from(raw: RawDetector) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(t: toml::Table) -> Result<T, String> {
            serde_path_to_error::deserialize(t).map_err(|e| {
                let path = e.path().to_string();
                format!("{FIELD_MARK}{path}{FIELD_MARK}{}", e.into_inner().message())
            })
        }
        match raw.kind.as_str() {
            "ewma" => parse(raw.rest).map(DetectorSpec::Ewma),
            "cusum" => parse(raw.rest).map(DetectorSpec::Cusum),
            "page_hinkley" => parse(raw.rest).map(DetectorSpec::PageHinkley),
            "robust_z" => parse(raw.rest).map(DetectorSpec::RobustZ),
            "threshold" => parse(raw.rest).map(DetectorSpec::Threshold),
            "likelihood" => parse(raw.rest).map(DetectorSpec::Likelihood),
            "seasonal" => parse(raw.rest).map(DetectorSpec::Seasonal),
            "knn" => parse(raw.rest).map(DetectorSpec::Knn),
            "same_time" => parse(raw.rest).map(DetectorSpec::SameTime),
            "novelty" => parse(raw.rest).map(DetectorSpec::Novelty),
            other => Err(format!(
                "{FIELD_MARK}kind{FIELD_MARK}unknown detector kind `{other}`, expected one of: ewma, cusum, page_hinkley, robust_z, threshold, likelihood, seasonal, knn, same_time, novelty"
            )),
        }
    }
}

/// The built-in chain's detectors (see docs/ARCHITECTURE.md, "Default chain"), by position:
///
/// 0. `same_time`: the shape of the last hour in 15-minute means against the same hour on each
///    of the last two days; 1 when it beats the record of the last 17 days by a quarter;
/// 1. `ewma` and 2. `cusum`: the short-memory pair that judges a series while it is young (its
///    first two days), when nothing else can;
/// 3. `novelty` of the value, 4. of its level (time constant 30 minutes), 5. of its height over
///    the median of the last hour: beyond anything the series did;
/// 6. `knn` over 4-hour means: the shape of the last day against the 400 hours before it.
///
/// Every span is a duration, so one chain fits 10-second and hourly series; its state is under
/// 3 KiB per series.
pub fn default_detectors() -> Vec<DetectorSpec> {
    let span = |s: &str| Span::parse(s).expect("valid");
    vec![
        DetectorSpec::SameTime(SameTimeParams {
            periods: Count::new(2).expect("valid"),
            window: Count::new(4).expect("valid"),
            margin: 1,
            calibration: Calibration::Span(span("17d")),
            bucket: Some(span("15m")),
            ..SameTimeParams::default()
        }),
        DetectorSpec::Ewma(EwmaParams::default()),
        DetectorSpec::Cusum(CusumParams::default()),
        DetectorSpec::Novelty(NoveltyParams::default()),
        DetectorSpec::Novelty(NoveltyParams {
            smoothing: Weight::Span(span("30m")),
            saturation: Share::new(0.05).expect("valid"),
            ..NoveltyParams::default()
        }),
        DetectorSpec::Novelty(NoveltyParams {
            deviation: Reach::Span(span("1h")),
            ..NoveltyParams::default()
        }),
        DetectorSpec::Knn(KnnParams {
            window: Count::new(6).expect("valid"),
            k: Count::new(3).expect("valid"),
            reference: Count::new(100).expect("valid"),
            calibration: Calibration::Span(span("16d")),
            block: Some(span("4h")),
            ..KnnParams::default()
        }),
    ]
}

/// The built-in chain's ring: the last hour of 5-minute points for the quiet filter.
const DEFAULT_RING: usize = 16;

/// The built-in chain's suppression of repeated alarms.
const DEFAULT_SUPPRESS: &str = "8h";

/// The built-in chain's quiet filter: the shape ranks (0, 6) are silenced for a point within 1 %
/// of the range of the last hour's median.
fn default_quiet() -> telltale_detect::QuietParams {
    telltale_detect::QuietParams {
        share: Share::new(0.01).expect("valid"),
        window: Reach::Span(Span::parse("1h").expect("valid")),
        silences: telltale_detect::Silences::try_from(vec![0, 6]).expect("valid"),
    }
}

/// The built-in chain's hand-over: EWMA and CUSUM (1, 2) for the first two days.
fn default_young() -> YoungConfig {
    YoungConfig {
        span: "2d".into(),
        detectors: telltale_detect::Silences::try_from(vec![1, 2]).expect("valid"),
    }
}

/// Ring capacity of a chain without a windowed detector: enough for the out-of-order check and a
/// glance at recent points, without paying for a window nobody reads.
pub const SMALL_RING: usize = 8;

/// `[chain]`: detectors, how their scores combine, ring capacity, alerting.
///
/// Without `detectors` the chain is the built-in one, with its ring, suppression, quiet filter
/// and hand-over unless they are given; with `detectors`, those are off unless given (the quiet
/// filter and the hand-over name detector positions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawChainConfig")]
pub struct ChainConfig {
    /// Name used in events (default "default").
    #[serde(default = "default_chain_name")]
    pub name: String,
    /// Detectors, scored in order (default: ewma, cusum).
    #[serde(default = "default_detectors")]
    pub detectors: Vec<DetectorSpec>,
    /// How scores combine (default max).
    #[serde(default)]
    pub combine: Combine,
    /// Capacity of each series' ring of recent points: a power of two in [4, 4096] (default:
    /// the `robust_z` window when the chain has one, else 8).
    #[serde(default)]
    pub ring: Option<usize>,
    /// Alert state machine settings.
    #[serde(default)]
    pub alert: AlertConfig,
    /// While an anomaly is open, score against the baseline from before it and learn nothing,
    /// so that it stays open until the series returns to normal (default false: detectors keep
    /// adapting, and a lasting shift resolves once it is the new normal).
    #[serde(default)]
    pub hold: bool,
    /// Suppression of repeated alarms, a duration of event time such as `"8h"` ("0s": off;
    /// default: the built-in chain's). After a point whose score could open an anomaly, for
    /// this long a later point can open one only with a higher score; once it has passed, any
    /// score can again. Open anomalies still resolve on the scores themselves. `telltale bench`
    /// ranks rows by the same suppressed score, so what it measures is what opens live.
    #[serde(default = "default_suppress")]
    pub suppress: String,
    /// Recurrence filter (`[chain.recurrence]`, off by default): silences the scores of the
    /// detectors at the positions it names (`silences`, default all) for points whose deviation
    /// already happened one period earlier. It reads the chain's ring, which must then hold a
    /// period plus `margin` points (`ring = 512` for a day at 5-minute sampling).
    #[serde(default)]
    pub recurrence: Option<telltale_detect::RecurrenceParams>,
    /// Quiet filter (`[chain.quiet]`, off by default): silences the scores of the detectors at
    /// the positions it names (`silences`, default all) for points whose deviation from the
    /// median of the last `window` points is below `share` of the range the series has covered.
    #[serde(default)]
    pub quiet: Option<telltale_detect::QuietParams>,
    /// Young-series hand-over (`[chain.young]`, off by default): until a series has been seen
    /// for `span` of event time, only the detectors it names score; after that they are
    /// silenced and the others score.
    #[serde(default)]
    pub young: Option<YoungConfig>,
}

/// `[chain.young]`: which detectors judge a series while it is young, and for how long.
///
/// Detectors that compare a point with everything the series did (novelty, shape ranks) need a
/// representative history, a daily cycle at least; detectors with a short memory (an EWMA
/// z-score, a CUSUM) need minutes. A young series is judged by the second kind alone, a grown
/// one by the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoungConfig {
    /// How long a series is young: event time since its first point, e.g. "1d".
    pub span: String,
    /// Positions in the chain's `detectors` that score while the series is young (and only
    /// then).
    pub detectors: telltale_detect::Silences,
}

/// A validated [`YoungConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Young {
    /// How long a series is young, in milliseconds of event time.
    pub span_ms: i64,
    /// The detectors that score while it is young.
    pub detectors: telltale_detect::Silences,
}

fn default_chain_name() -> String {
    "default".into()
}

/// `[chain]` as written: what is left out is filled in by [`ChainConfig`]'s rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChainConfig {
    #[serde(default = "default_chain_name")]
    name: String,
    detectors: Option<Vec<DetectorSpec>>,
    #[serde(default)]
    combine: Combine,
    ring: Option<usize>,
    #[serde(default)]
    alert: AlertConfig,
    #[serde(default)]
    hold: bool,
    suppress: Option<String>,
    recurrence: Option<telltale_detect::RecurrenceParams>,
    quiet: Option<telltale_detect::QuietParams>,
    young: Option<YoungConfig>,
}

impl From<RawChainConfig> for ChainConfig {
    fn from(r: RawChainConfig) -> Self {
        let built_in = r.detectors.is_none();
        Self {
            name: r.name,
            detectors: r.detectors.unwrap_or_else(default_detectors),
            combine: r.combine,
            ring: r.ring.or(built_in.then_some(DEFAULT_RING)),
            alert: r.alert,
            hold: r.hold,
            suppress: r
                .suppress
                .unwrap_or_else(|| if built_in { DEFAULT_SUPPRESS } else { "0s" }.into()),
            recurrence: r.recurrence,
            quiet: r.quiet.or_else(|| built_in.then(default_quiet)),
            young: r.young.or_else(|| built_in.then(default_young)),
        }
    }
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            name: default_chain_name(),
            detectors: default_detectors(),
            combine: Combine::default(),
            ring: Some(DEFAULT_RING),
            alert: AlertConfig::default(),
            hold: false,
            suppress: DEFAULT_SUPPRESS.into(),
            recurrence: None,
            quiet: Some(default_quiet()),
            young: Some(default_young()),
        }
    }
}

/// Alert state machine settings (`alert = {...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Score at or above which a point counts towards opening an anomaly (default 0.99999,
    /// |z| ≈ 4.4 for a Gaussian score).
    #[serde(default = "default_open")]
    pub open: ScoreLevel,
    /// Score below which a point counts towards resolving it (default 0.99; must be ≤ open).
    #[serde(default = "default_resolve")]
    pub resolve: ScoreLevel,
    /// Score at or above which the anomaly is critical rather than a warning (default 0.999999).
    #[serde(default = "default_critical")]
    pub critical: ScoreLevel,
    /// Consecutive points at or above `open` needed to open (default 2; a score of exactly 1
    /// opens at once).
    #[serde(default = "default_min_points")]
    pub min_points: Count,
    /// Consecutive points below `resolve` needed to resolve (default 5).
    #[serde(default = "default_resolve_points")]
    pub resolve_points: Count,
    /// Event time after a resolve during which the series cannot open again, e.g. "5m" (default "0s").
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
}

fn default_open() -> ScoreLevel {
    ScoreLevel::new(0.99999).expect("valid")
}
fn default_resolve() -> ScoreLevel {
    ScoreLevel::new(0.99).expect("valid")
}
fn default_critical() -> ScoreLevel {
    ScoreLevel::new(0.999_999).expect("valid")
}
fn default_min_points() -> Count {
    Count::new(2).expect("valid")
}
fn default_resolve_points() -> Count {
    Count::new(5).expect("valid")
}
fn default_cooldown() -> String {
    "0s".into()
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            open: default_open(),
            resolve: default_resolve(),
            critical: default_critical(),
            min_points: default_min_points(),
            resolve_points: default_resolve_points(),
            cooldown: default_cooldown(),
        }
    }
}

/// `[[rule]]`: a chain for the series it matches. Fields left out take the default chain's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule (and chain) name, used in events.
    pub name: String,
    /// Glob on the metric name (`*` any run, `?` one character; default "*").
    #[serde(default = "default_glob")]
    pub metric: String,
    /// Globs on label values; a series must have every listed label and match each.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Detectors (default: the default chain's).
    pub detectors: Option<Vec<DetectorSpec>>,
    /// Combination (default: the default chain's).
    pub combine: Option<Combine>,
    /// Ring capacity (default: the default chain's when the rule inherits its detectors too;
    /// with its own, as for a chain of them: the `robust_z` window, else 8).
    pub ring: Option<usize>,
    /// Alert settings (default: the default chain's; a table given here replaces it whole,
    /// its omitted fields taking the built-in defaults).
    pub alert: Option<AlertConfig>,
    /// Hold the baseline while an anomaly is open (default: the default chain's).
    pub hold: Option<bool>,
    /// Suppression of repeated alarms (default: the default chain's when the rule inherits its
    /// detectors too, otherwise off; "0s": off).
    #[serde(default)]
    pub suppress: Option<String>,
    /// Recurrence filter (default: the default chain's when the rule inherits its detectors
    /// too, since `silences` names detector positions; otherwise off).
    #[serde(default)]
    pub recurrence: Option<telltale_detect::RecurrenceParams>,
    /// Quiet filter (default: the default chain's when the rule inherits its detectors too;
    /// otherwise off).
    #[serde(default)]
    pub quiet: Option<telltale_detect::QuietParams>,
    /// Young-series hand-over (default: the default chain's when the rule inherits its
    /// detectors too; otherwise off).
    #[serde(default)]
    pub young: Option<YoungConfig>,
}

fn default_glob() -> String {
    "*".into()
}

/// The rule added after the user's rules (unless one of them is named `llm-confidence`): the
/// derived LLM confidence series get a holding chain, so a confidence collapse stays open until
/// the model is back to its earlier confidence (see docs/ARCHITECTURE.md, "LLM predictions").
pub fn builtin_llm_rule() -> RuleConfig {
    RuleConfig {
        name: "llm-confidence".into(),
        metric: "llm_confidence_*".into(),
        labels: BTreeMap::new(),
        detectors: Some(vec![
            DetectorSpec::Ewma(EwmaParams {
                warmup: Count::new(10).expect("valid"),
                ..EwmaParams::default()
            }),
            DetectorSpec::Cusum(CusumParams {
                warmup: Count::new(10).expect("valid"),
                ..CusumParams::default()
            }),
        ]),
        combine: None,
        ring: None,
        alert: Some(AlertConfig {
            resolve_points: Count::new(3).expect("valid"),
            ..AlertConfig::default()
        }),
        hold: Some(true),
        // A confidence collapse stays open until the model is back; a second one within hours
        // is a second anomaly.
        suppress: Some("0s".into()),
        recurrence: None,
        quiet: None,
        young: None,
    }
}

/// Validated alert settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertParams {
    /// See [`AlertConfig::open`].
    pub open: f64,
    /// See [`AlertConfig::resolve`].
    pub resolve: f64,
    /// See [`AlertConfig::critical`].
    pub critical: f64,
    /// See [`AlertConfig::min_points`].
    pub min_points: u32,
    /// See [`AlertConfig::resolve_points`].
    pub resolve_points: u32,
    /// Cooldown in milliseconds of event time.
    pub cooldown_ms: i64,
}

/// A validated chain.
#[derive(Debug, Clone)]
pub struct ChainPlan {
    /// Name used in events.
    pub name: String,
    /// Detectors in scoring order.
    pub detectors: Vec<DetectorSpec>,
    /// Score combination.
    pub combine: Combine,
    /// Ring capacity (power of two).
    pub ring: usize,
    /// Alerting.
    pub alert: AlertParams,
    /// Each detector's parameters as a JSON object, rendered once for events.
    pub params_json: Vec<Box<serde_json::value::RawValue>>,
    /// Hold the baseline while an anomaly is open.
    pub hold: bool,
    /// Suppression of repeated alarms in milliseconds of event time, 0 = off (see
    /// [`ChainConfig::suppress`]).
    pub suppress_ms: i64,
    /// Recurrence filter (see [`ChainConfig::recurrence`]).
    pub recurrence: Option<telltale_detect::RecurrenceParams>,
    /// Quiet filter (see [`ChainConfig::quiet`]).
    pub quiet: Option<telltale_detect::QuietParams>,
    /// Young-series hand-over (see [`ChainConfig::young`]).
    pub young: Option<Young>,
    /// Lateness accepted, in milliseconds (see [`EngineConfig::max_lateness`]).
    pub max_lateness_ms: i64,
    /// What a series snapshot of this chain depends on, hashed: the build's version, the
    /// detectors' parameters, the ring, hold, suppression and filters (not the chain's name). A
    /// snapshot with another fingerprint is not restored ([`crate::snapshot`]).
    pub fingerprint: u64,
}

/// Glob with `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Box<str>);

impl Glob {
    /// Compiles a glob.
    pub fn new(p: &str) -> Self {
        Self(p.into())
    }

    /// Whether `s` matches (whole string).
    pub fn matches(&self, s: &str) -> bool {
        let (p, s): (Vec<char>, Vec<char>) = (self.0.chars().collect(), s.chars().collect());
        let (mut pi, mut si) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while si < s.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = si;
                pi += 1;
            } else if let Some(st) = star {
                pi = st + 1;
                mark += 1;
                si = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Metric glob.
    pub metric: Glob,
    /// Label name → value glob.
    pub labels: Vec<(String, Glob)>,
    /// Index of its chain in [`Plan::chains`].
    pub chain: usize,
}

impl Rule {
    /// Whether the rule applies to `key`.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.metric.matches(&key.name)
            && self
                .labels
                .iter()
                .all(|(k, g)| key.label(k).is_some_and(|v| g.matches(v)))
    }
}

/// The validated, compiled configuration the engine runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shard workers (resolved: never 0).
    pub shards: usize,
    /// Points per batch.
    pub batch: usize,
    /// Parser threads for replay (resolved: never 0).
    pub parsers: usize,
    /// Chains; index 0 is the default chain.
    pub chains: Vec<ChainPlan>,
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Prediction handling.
    pub llm: telltale_codec::llm::LlmConfig,
    /// `llm.window` in milliseconds.
    pub llm_window_ms: i64,
    /// Unit of line protocol timestamps.
    pub influx_precision: telltale_codec::influx::Precision,
}

impl Plan {
    /// The chain a series gets: the first matching rule's, else the default (0).
    pub fn chain_for(&self, key: &SeriesKey) -> usize {
        self.rules
            .iter()
            .find(|r| r.matches(key))
            .map_or(0, |r| r.chain)
    }
}

fn validate_alert(path: &str, a: &AlertConfig) -> Result<AlertParams, ConfigError> {
    if a.resolve > a.open {
        return Err(err(
            format!("{path}.resolve"),
            format!("{} must be <= open ({})", a.resolve.get(), a.open.get()),
        ));
    }
    if a.critical < a.open {
        return Err(err(
            format!("{path}.critical"),
            format!("{} must be >= open ({})", a.critical.get(), a.open.get()),
        ));
    }
    let cooldown_ms = parse_duration_ms(&a.cooldown).ok_or_else(|| {
        err(
            format!("{path}.cooldown"),
            format!(
                "`{}` is not a duration such as \"30s\", \"5m\", \"1h\"",
                a.cooldown
            ),
        )
    })?;
    Ok(AlertParams {
        open: a.open.get(),
        resolve: a.resolve.get(),
        critical: a.critical.get(),
        min_points: a.min_points.get(),
        resolve_points: a.resolve_points.get(),
        cooldown_ms,
    })
}

/// A filter's `silences` must name positions of the chain's detectors.
fn check_silences(
    field: &str,
    silences: telltale_detect::Silences,
    detectors: usize,
) -> Result<(), ConfigError> {
    match silences.highest().filter(|&i| i >= detectors) {
        Some(highest) => Err(err(
            field.to_owned(),
            format!(
                "position {highest} names no detector: the chain has {detectors} (positions from 0)"
            ),
        )),
        None => Ok(()),
    }
}

/// See [`ChainPlan::fingerprint`].
fn fingerprint(
    params: &[Box<serde_json::value::RawValue>],
    ring: usize,
    hold: bool,
    suppress_ms: i64,
    recurrence: Option<&telltale_detect::RecurrenceParams>,
    quiet: Option<&telltale_detect::QuietParams>,
    young: &Option<Young>,
) -> u64 {
    let mut text = format!(
        "telltale {} snapshot {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::snapshot::FORMAT
    );
    for p in params {
        text.push_str(p.get());
        text.push('\n');
    }
    text.push_str(&format!(
        "{ring} {hold} {suppress_ms} {recurrence:?} {quiet:?} {young:?}"
    ));
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

#[allow(clippy::too_many_arguments)]
fn validate_chain(
    path: &str,
    name: &str,
    detectors: &[DetectorSpec],
    combine: Combine,
    ring: Option<usize>,
    alert: &AlertConfig,
    hold: bool,
    suppress: &str,
    recurrence: Option<&telltale_detect::RecurrenceParams>,
    quiet: Option<&telltale_detect::QuietParams>,
    young: Option<&YoungConfig>,
) -> Result<ChainPlan, ConfigError> {
    let suppress_ms = parse_duration_ms(suppress).ok_or_else(|| {
        err(
            format!("{path}.suppress"),
            format!("`{suppress}` is not a duration such as \"8h\" (or \"0s\" for off)"),
        )
    })?;
    let window = detectors.iter().find_map(|d| match d {
        DetectorSpec::RobustZ(p) => Some(p.window.get() as usize),
        _ => None,
    });
    let ring = ring.or(window).unwrap_or(SMALL_RING);
    if !(4..=4096).contains(&ring) || !ring.is_power_of_two() {
        return Err(err(
            format!("{path}.ring"),
            format!("{ring} is not a power of two in [4, 4096]"),
        ));
    }
    if detectors.is_empty() || detectors.len() > MAX_DETECTORS {
        return Err(err(
            format!("{path}.detectors"),
            format!(
                "a chain needs 1 to {MAX_DETECTORS} detectors, got {}",
                detectors.len()
            ),
        ));
    }
    let mut params_json = Vec::new();
    for (i, d) in detectors.iter().enumerate() {
        let dpath = format!("{path}.detectors[{i}]");
        let checked = match d {
            DetectorSpec::Cusum(p) => p.validate(),
            DetectorSpec::RobustZ(p) => {
                if p.window.get() as usize != ring {
                    return Err(err(
                        format!("{dpath}.window"),
                        format!(
                            "{} must equal the chain's ring capacity ({ring}): robust_z scores over the ring",
                            p.window.get()
                        ),
                    ));
                }
                p.validate()
            }
            DetectorSpec::Threshold(p) => p.validate(),
            DetectorSpec::Seasonal(p) => p.validate(),
            DetectorSpec::Knn(p) => p.validate(),
            DetectorSpec::SameTime(p) => p.validate(),
            DetectorSpec::Novelty(p) => p.validate(),
            DetectorSpec::Ewma(_) | DetectorSpec::PageHinkley(_) | DetectorSpec::Likelihood(_) => {
                Ok(())
            }
        };
        checked.map_err(|e| err(format!("{dpath}.{}", e.name), e.to_string()))?;
        let json = serde_json::to_string(d).expect("params serialise");
        params_json.push(serde_json::value::RawValue::from_string(json).expect("valid JSON"));
    }
    if let Some(r) = recurrence {
        r.validate()
            .map_err(|e| err(format!("{path}.recurrence.{}", e.name), e.to_string()))?;
        check_silences(
            &format!("{path}.recurrence.silences"),
            r.silences,
            detectors.len(),
        )?;
    }
    if let Some(q) = quiet {
        q.validate()
            .map_err(|e| err(format!("{path}.quiet.{}", e.name), e.to_string()))?;
        if let telltale_detect::Reach::Points(n) = q.window
            && n as usize >= ring
        {
            return Err(err(
                format!("{path}.quiet.window"),
                format!("{n} points do not fit before the point in the chain's ring ({ring})"),
            ));
        }
        check_silences(
            &format!("{path}.quiet.silences"),
            q.silences,
            detectors.len(),
        )?;
    }
    let young = match young {
        None => None,
        Some(y) => {
            let span_ms = parse_duration_ms(&y.span)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    err(
                        format!("{path}.young.span"),
                        format!("`{}` is not a duration > 0 such as \"1d\"", y.span),
                    )
                })?;
            check_silences(
                &format!("{path}.young.detectors"),
                y.detectors,
                detectors.len(),
            )?;
            Some(Young {
                span_ms,
                detectors: y.detectors,
            })
        }
    };
    let fingerprint = fingerprint(
        &params_json,
        ring,
        hold,
        suppress_ms,
        recurrence,
        quiet,
        &young,
    );
    Ok(ChainPlan {
        name: name.to_owned(),
        detectors: detectors.to_vec(),
        combine,
        ring,
        alert: validate_alert(&format!("{path}.alert"), alert)?,
        params_json,
        hold,
        suppress_ms,
        fingerprint,
        recurrence: recurrence.copied(),
        quiet: quiet.copied(),
        young,
        max_lateness_ms: 0,
    })
}

impl Config {
    /// Parses TOML text; errors carry the path of the bad field.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("", e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut path = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_owned();
            if let Some((field, msg)) = message
                .strip_prefix(FIELD_MARK)
                .and_then(|rest| rest.split_once(FIELD_MARK))
            {
                if !field.is_empty() && field != "." {
                    path = format!("{path}.{field}");
                }
                message = msg.to_owned();
            }
            err(path, message)
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::from_toml(&text).map_err(|mut e| {
            e.message = format!("{} (in {})", e.message, path.display());
            e
        })
    }

    /// Validates cross-field constraints and compiles rules.
    pub fn plan(&self) -> Result<Plan, ConfigError> {
        if self.engine.batch == 0 {
            return Err(err("engine.batch", "must be >= 1"));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = if self.engine.shards == 0 {
            cores
        } else {
            self.engine.shards
        };
        let parsers = if self.engine.parsers == 0 {
            cores
        } else {
            self.engine.parsers
        };
        if parsers > 256 {
            return Err(err("engine.parsers", format!("{parsers} is more than 256")));
        }
        if shards > 1024 {
            return Err(err("engine.shards", format!("{shards} is more than 1024")));
        }
        let lateness = parse_duration_ms(&self.engine.max_lateness).ok_or_else(|| {
            err(
                "engine.max_lateness",
                format!(
                    "`{}` is not a duration such as \"5s\"",
                    self.engine.max_lateness
                ),
            )
        })?;
        let c = &self.chain;
        let mut chains = vec![validate_chain(
            "chain",
            &c.name,
            &c.detectors,
            c.combine,
            c.ring,
            &c.alert,
            c.hold,
            &c.suppress,
            c.recurrence.as_ref(),
            c.quiet.as_ref(),
            c.young.as_ref(),
        )?];
        let mut rules = Vec::new();
        let builtin = builtin_llm_rule();
        let user_has_builtin_name = self.rules.iter().any(|r| r.name == builtin.name);
        let all_rules: Vec<&RuleConfig> = self
            .rules
            .iter()
            .chain((!user_has_builtin_name).then_some(&builtin))
            .collect();
        for (i, r) in all_rules.into_iter().enumerate() {
            let path = format!("rule[{i}]");
            if r.name.is_empty() {
                return Err(err(format!("{path}.name"), "must not be empty"));
            }
            if chains.iter().any(|ch| ch.name == r.name) {
                return Err(err(
                    format!("{path}.name"),
                    format!("`{}` is already the name of another chain", r.name),
                ));
            }
            // The default chain's ring serves its detectors: a rule with its own sizes its own.
            let ring = r.ring.or(c.ring.filter(|_| r.detectors.is_none()));
            let detectors = r.detectors.clone().unwrap_or_else(|| {
                // Inherit the default chain's detectors, resizing robust_z to this rule's ring.
                c.detectors
                    .iter()
                    .map(|d| match (d, r.ring) {
                        (DetectorSpec::RobustZ(p), Some(ring)) => {
                            DetectorSpec::RobustZ(RobustZParams {
                                window: Count::new(ring as u32).unwrap_or(p.window),
                                ..*p
                            })
                        }
                        (other, _) => other.clone(),
                    })
                    .collect()
            });
            let alert = r.alert.as_ref().unwrap_or(&c.alert);
            chains.push(validate_chain(
                &path,
                &r.name,
                &detectors,
                r.combine.unwrap_or(c.combine),
                ring,
                alert,
                r.hold.unwrap_or(c.hold),
                // Inherited only with the detectors, as the built-in chain's filters are.
                r.suppress.as_deref().unwrap_or(if r.detectors.is_none() {
                    &c.suppress
                } else {
                    "0s"
                }),
                // Inherited only with the detectors: `silences` names their positions.
                r.recurrence
                    .as_ref()
                    .or(c.recurrence.as_ref().filter(|_| r.detectors.is_none())),
                r.quiet
                    .as_ref()
                    .or(c.quiet.as_ref().filter(|_| r.detectors.is_none())),
                r.young
                    .as_ref()
                    .or(c.young.as_ref().filter(|_| r.detectors.is_none())),
            )?);
            rules.push(Rule {
                metric: Glob::new(&r.metric),
                labels: r
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Glob::new(v)))
                    .collect(),
                chain: chains.len() - 1,
            });
        }
        if !(0.0..=1.0).contains(&self.llm.low_margin) {
            return Err(err(
                "llm.low_margin",
                format!("{} is not in [0, 1]", self.llm.low_margin),
            ));
        }
        let llm_window_ms = parse_duration_ms(&self.llm.window)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                err(
                    "llm.window",
                    format!(
                        "`{}` is not a positive duration such as \"1m\"",
                        self.llm.window
                    ),
                )
            })?;
        for ch in &mut chains {
            ch.max_lateness_ms = lateness;
        }
        Ok(Plan {
            llm_window_ms,
            influx_precision: self.engine.influx_precision,
            llm: self.llm.clone(),
            shards,
            parsers,
            batch: self.engine.batch,
            chains,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, ConfigError> {
        Config::from_toml(text)?.plan()
    }

    #[test]
    fn empty_config_gives_the_built_in_default_chain() {
        let p = plan("").unwrap();
        assert_eq!(
            p.chains.len(),
            2,
            "the default chain and the built-in llm-confidence rule"
        );
        assert_eq!(p.chains[1].name, "llm-confidence");
        assert!(p.chains[1].hold);
        assert_eq!(
            p.chain_for(&SeriesKey::new("llm_confidence_margin", &[("model", "m")])),
            1
        );
        assert_eq!(p.chain_for(&SeriesKey::new("llm_latency_p99_ms", &[])), 0);
        let kinds: Vec<_> = p.chains[0]
            .detectors
            .iter()
            .map(DetectorSpec::kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "same_time",
                "ewma",
                "cusum",
                "novelty",
                "novelty",
                "novelty",
                "knn"
            ]
        );
        let c = &p.chains[0];
        assert_eq!((c.ring, c.suppress_ms), (16, 8 * 3_600_000));
        assert!(
            c.quiet
                .is_some_and(|q| q.silences.contains(0) && q.silences.contains(6))
        );
        let y = c.young.expect("built-in hand-over");
        assert_eq!(y.span_ms, 2 * 86_400_000);
        assert!(y.detectors.contains(1) && y.detectors.contains(2) && !y.detectors.contains(0));
        assert_eq!(p.batch, 4096);
        assert!(p.shards >= 1);
    }

    #[test]
    fn the_built_in_chain_keeps_its_filters_unless_told_and_own_detectors_drop_them() {
        // A setting given beside the built-in detectors replaces only itself.
        let p = plan("[chain]\nsuppress = \"1h\"\nring = 32").unwrap();
        let c = &p.chains[0];
        assert_eq!((c.ring, c.suppress_ms), (32, 3_600_000));
        assert!(c.quiet.is_some() && c.young.is_some());
        // The user's own detectors: no suppression, quiet filter or hand-over unless asked.
        let p = plan("[chain]\ndetectors = [{ kind = \"ewma\" }]").unwrap();
        let c = &p.chains[0];
        assert_eq!((c.ring, c.suppress_ms), (SMALL_RING, 0));
        assert!(c.quiet.is_none() && c.young.is_none());
        // The hand-over is checked and named.
        let e = plan("[chain]\ndetectors = [{ kind = \"ewma\" }]\n[chain.young]\nspan = \"2d\"\ndetectors = [3]").unwrap_err();
        assert_eq!(e.path, "chain.young.detectors");
        let e = plan("[chain.young]\nspan = \"soon\"\ndetectors = [1]").unwrap_err();
        assert_eq!(e.path, "chain.young.span");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = plan("[chain]\ndetectors = [{ kind = \"ewma\", alpah = 0.1 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].alpah");
        assert!(e.message.contains("unknown field `alpah`"), "{e}");
        assert!(
            e.message.contains("alpha"),
            "suggests the known fields: {e}"
        );
        let e = plan("[engine]\nshard = 2").unwrap_err();
        assert_eq!(e.path, "engine.shard");
        assert!(e.message.contains("shard"), "{e}");
    }

    #[test]
    fn knn_parameters_are_checked_and_named_with_their_path() {
        let p = plan("[chain]\ndetectors = [{ kind = \"knn\", window = 5, calibration = 1500 }]")
            .unwrap();
        assert!(
            matches!(p.chains[0].detectors[0], DetectorSpec::Knn(k) if k.window.get() == 5 && k.reference.get() == 200 && k.step.get() == 1)
        );
        let p = plan("[chain]\ndetectors = [{ kind = \"knn\", step = 12 }]").unwrap();
        assert!(matches!(p.chains[0].detectors[0], DetectorSpec::Knn(k) if k.step.get() == 12));
        let e = plan("[chain]\ndetectors = [{ kind = \"knn\", step = 0 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].step");
        let e =
            plan("[chain]\ndetectors = [{ kind = \"knn\", k = 9, reference = 4 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].k");
        let e = plan("[chain]\ndetectors = [{ kind = \"knn\", neighbours = 3 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].neighbours");
    }

    #[test]
    fn quiet_is_checked_named_and_inherited_only_with_the_detectors() {
        let p = plan(
            "[chain]\nring = 16\ndetectors = [{ kind = \"ewma\" }, { kind = \"cusum\" }]\n[chain.quiet]\nsilences = [0]\n[[rule]]\nname = \"same\"\nmetric = \"a\"\n[[rule]]\nname = \"own\"\nmetric = \"b\"\ndetectors = [{ kind = \"ewma\" }]",
        )
        .unwrap();
        let q = p.chains[0].quiet.expect("set");
        assert!(q.silences.contains(0) && !q.silences.contains(1));
        assert_eq!(
            (q.share.get(), q.window),
            (0.01, telltale_detect::Reach::Points(12))
        );
        assert_eq!(p.chains[1].quiet, Some(q), "inherited with the detectors");
        assert_eq!(p.chains[2].quiet, None, "own detectors: off");
        assert!(
            plan("[chain]\ndetectors = [{ kind = \"ewma\" }]")
                .unwrap()
                .chains[0]
                .quiet
                .is_none(),
            "off for the user's own detectors"
        );
        let e = plan(
            "[chain]\nring = 16\ndetectors = [{ kind = \"ewma\" }]\n[chain.quiet]\nsilences = [2]",
        )
        .unwrap_err();
        assert_eq!(e.path, "chain.quiet.silences");
        let e = plan("[chain.quiet]\nshare = 1.5").unwrap_err();
        assert_eq!(e.path, "chain.quiet.share");
        let e = plan("[chain]\nring = 1024\n[chain.quiet]\nwindow = 65").unwrap_err();
        assert_eq!(e.path, "chain.quiet.window");
        let e = plan("[chain]\nring = 8\n[chain.quiet]\nwindow = 12").unwrap_err();
        assert_eq!(e.path, "chain.quiet.window");
        assert!(e.message.contains("ring"), "{e}");
        let e = plan("[chain.quiet]\nshares = 0.1").unwrap_err();
        assert_eq!(e.path, "chain.quiet.shares");
    }

    #[test]
    fn recurrence_is_checked_named_and_inherited_only_with_the_detectors() {
        let p = plan(
            "[chain]\ndetectors = [{ kind = \"ewma\" }, { kind = \"cusum\" }]\n[chain.recurrence]\nsilences = [1]\n[[rule]]\nname = \"same\"\nmetric = \"a\"\n[[rule]]\nname = \"own\"\nmetric = \"b\"\ndetectors = [{ kind = \"ewma\" }]",
        )
        .unwrap();
        let r = p.chains[0].recurrence.expect("set");
        assert!(!r.silences.contains(0) && r.silences.contains(1));
        assert_eq!((r.periods.get(), r.margin, r.window.get()), (2, 6, 12));
        assert_eq!(
            p.chains[1].recurrence,
            Some(r),
            "inherits with the detectors"
        );
        assert_eq!(p.chains[2].recurrence, None, "own detectors: off");
        assert!(plan("[chain]").unwrap().chains[0].recurrence.is_none());
        let e = plan(
            "[chain]\ndetectors = [{ kind = \"ewma\" }]\n[chain.recurrence]\nsilences = [0, 3]",
        )
        .unwrap_err();
        assert_eq!(e.path, "chain.recurrence.silences");
        assert!(e.message.contains("position 3"), "{e}");
        let e = plan("[chain.recurrence]\nmargin = 100").unwrap_err();
        assert_eq!(e.path, "chain.recurrence.margin");
        let e = plan("[chain.recurrence]\nratios = 1.0").unwrap_err();
        assert_eq!(e.path, "chain.recurrence.ratios");
    }

    #[test]
    fn novelty_parameters_are_checked_and_named_with_their_path() {
        let p = plan("[chain]\ndetectors = [{ kind = \"novelty\", smoothing = 0.3 }]").unwrap();
        assert!(matches!(
            p.chains[0].detectors[0],
            DetectorSpec::Novelty(s) if s.smoothing.at(1) == 0.3 && s.saturation.get() == 0.1
        ));
        let e =
            plan("[chain]\ndetectors = [{ kind = \"novelty\", saturation = 2.0 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].saturation");
        assert!(e.message.contains("(0, 1]"), "{e}");
        let e = plan("[chain]\ndetectors = [{ kind = \"novelty\", smooth = 0.3 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].smooth");
    }

    #[test]
    fn same_time_parameters_are_checked_and_named_with_their_path() {
        let p = plan("[chain]\ndetectors = [{ kind = \"same_time\", window = 3 }]").unwrap();
        assert!(matches!(
            p.chains[0].detectors[0],
            DetectorSpec::SameTime(s) if s.window.get() == 3 && s.periods.get() == 2 && s.margin == 3
        ));
        let e = plan("[chain]\ndetectors = [{ kind = \"same_time\", periods = 9 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].periods");
        let e = plan("[chain]\ndetectors = [{ kind = \"same_time\", lag = 1 }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].lag");
    }

    #[test]
    fn suppress_is_inherited_with_the_detectors_and_off_for_the_llm_confidence_rule() {
        let p = plan("[chain]\nsuppress = \"2h\"\n[[rule]]\nname = \"r\"\nmetric = \"m\"\n[[rule]]\nname = \"q\"\nmetric = \"q\"\nsuppress = \"0s\"\n[[rule]]\nname = \"own\"\nmetric = \"o\"\ndetectors = [{ kind = \"ewma\" }]").unwrap();
        let by_name = |n: &str| p.chains.iter().find(|c| c.name == n).unwrap().suppress_ms;
        assert_eq!(by_name("own"), 0, "own detectors: not inherited");
        assert_eq!(by_name("default"), 7_200_000);
        assert_eq!(by_name("r"), 7_200_000);
        assert_eq!(by_name("q"), 0);
        assert_eq!(by_name("llm-confidence"), 0);
        let e = plan("[chain]\nsuppress = \"100\"").unwrap_err();
        assert_eq!(e.path, "chain.suppress");
        let e = plan("[chain]\nrank_window = 100").unwrap_err();
        assert_eq!(e.path, "chain.rank_window");
    }

    #[test]
    fn out_of_range_parameter_is_named_with_its_path() {
        let e = plan("[[rule]]\nname = \"r\"\ndetectors = [{ kind = \"cusum\" }, { kind = \"ewma\", alpha = 1.5 }]")
            .unwrap_err();
        assert_eq!(e.path, "rule[0].detectors[1].alpha");
        assert!(e.message.contains("(0, 1]"), "{e}");
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let e = plan("[chain.alert]\nopen = 0.9\nresolve = 0.95").unwrap_err();
        assert_eq!(e.path, "chain.alert.resolve");
        let e = plan("[chain]\nring = 24").unwrap_err();
        assert_eq!(e.path, "chain.ring");
        let e = plan("[chain]\nring = 64\ndetectors = [{ kind = \"robust_z\" }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].window");
        let e = plan("[chain.alert]\ncooldown = \"5 minutes\"").unwrap_err();
        assert_eq!(e.path, "chain.alert.cooldown");
        let e = plan("[[rule]]\nname = \"r\"\ndetectors = [{ kind = \"cusum\", warmup = 1 }]")
            .unwrap_err();
        assert_eq!(e.path, "rule[0].detectors[0].warmup");
        let e = plan("[[rule]]\nname = \"default\"").unwrap_err();
        assert_eq!(e.path, "rule[0].name");
        let e = plan("[chain]\ndetectors = [{ kind = \"arima\" }]").unwrap_err();
        assert_eq!(e.path, "chain.detectors[0].kind");
        assert!(e.message.contains("arima"), "{e}");
    }

    #[test]
    fn rules_match_by_metric_and_label_globs_first_wins() {
        let p = plan(
            r#"
[chain]
detectors = [{ kind = "ewma" }, { kind = "cusum" }, { kind = "robust_z" }]
[[rule]]
name = "llama-latency"
metric = "llm_*latency*"
labels = { model = "llama*" }
ring = 64
[[rule]]
name = "latency"
metric = "llm_*latency*"
detectors = [{ kind = "page_hinkley" }]
"#,
        )
        .unwrap();
        let k = |m: &str, model: &str| SeriesKey::new(m, &[("model", model)]);
        assert_eq!(p.chain_for(&k("llm_latency_p99_ms", "llama3-8b")), 1);
        assert_eq!(p.chain_for(&k("llm_latency_p99_ms", "mixtral")), 2);
        assert_eq!(p.chain_for(&k("llm_tokens_per_s", "llama3-8b")), 0);
        assert_eq!(p.chain_for(&SeriesKey::new("llm_latency_p50", &[])), 2);
        // The inherited robust_z follows the rule's ring.
        assert_eq!(p.chains[1].ring, 64);
        match &p.chains[1].detectors[2] {
            DetectorSpec::RobustZ(r) => assert_eq!(r.window.get(), 64),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn glob_matching() {
        let g = Glob::new("a*b?c*");
        assert!(g.matches("abxc"));
        assert!(g.matches("a123bxcdef"));
        assert!(!g.matches("abc"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("x").matches("x"));
        assert!(!Glob::new("x").matches("xy"));
    }
}
