//! Configuration: one serde tree, layered built-in defaults → TOML file (`--config`) →
//! `KAPPA_*` environment (`KAPPA_PIPELINE__MAX_DELAY=10s`: `__` nests, `_` is `-`) → CLI
//! flags, validated into a one-line error at start-up and passed explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::window::WindowConfig;

/// Upper bound of `pipeline.max-record-bytes`: half the log's record limit, so a line
/// `kappa produce --input` cuts to that limit is still oversize for every configuration.
pub const MAX_RECORD_LIMIT: usize = crate::log::MAX_RECORD_BYTES / 2;

/// A configuration that cannot be used, with a one-line explanation.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl PipelineSection {
    /// `[pipeline]`'s part of [`Config::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let p = self;
        if p.window_sizes.is_empty() {
            return bad("pipeline.window-sizes must name at least one size".into());
        }
        for s in &p.window_sizes {
            if s.subsec_nanos() != 0 || s.as_secs() == 0 || s.as_secs() > 31 * 86_400 {
                return bad(format!(
                    "pipeline.window-sizes: {} is not a whole number of seconds between 1s and 31days",
                    fmt_duration(*s)
                ));
            }
        }
        if p.max_delay > Duration::from_secs(7 * 86_400) {
            return bad(format!(
                "pipeline.max-delay {} is above 7 days",
                fmt_duration(p.max_delay)
            ));
        }
        if p.top_k == 0 || p.top_k > 10_000 {
            return bad(format!(
                "pipeline.top-k must be between 1 and 10000, got {}",
                p.top_k
            ));
        }
        if p.max_record_bytes < 256 || p.max_record_bytes > MAX_RECORD_LIMIT {
            return bad(format!(
                "pipeline.max-record-bytes must be between 256 and {MAX_RECORD_LIMIT}, got {}",
                p.max_record_bytes
            ));
        }
        if p.max_future > Duration::from_secs(7 * 86_400) {
            return bad(format!(
                "pipeline.max-future {} is above 7 days",
                fmt_duration(p.max_future)
            ));
        }
        if p.batch_records == 0 {
            return bad("pipeline.batch-records must be at least 1".into());
        }
        if !p.audit_every.is_zero() && p.audit_every < Duration::from_secs(1) {
            return bad(format!(
                "pipeline.audit-every {} is below 1s (0s turns audits off)",
                fmt_duration(p.audit_every)
            ));
        }
        if !p.version.is_empty()
            && !p
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return bad(format!(
                "pipeline.version {:?} must be letters, digits, '-', '_' or '.'",
                p.version
            ));
        }
        if p.accept_schemas.is_empty()
            || p.accept_schemas
                .iter()
                .any(|v| !crate::event::KNOWN_SCHEMAS.contains(v))
        {
            return bad(format!(
                "pipeline.accept-schemas {:?} must name schema versions this build knows ({:?})",
                p.accept_schemas,
                crate::event::KNOWN_SCHEMAS
            ));
        }
        Ok(())
    }
}

impl HttpSection {
    /// `[http]`'s part of [`Config::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let h = self;
        for (key, d) in [
            ("http.header-read-timeout", h.header_read_timeout),
            ("http.client-connect-timeout", h.client_connect_timeout),
            ("http.client-read-timeout", h.client_read_timeout),
            ("http.client-export-timeout", h.client_export_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
                return bad(format!(
                    "{key} must be between 100ms and 1day, got {}",
                    fmt_duration(d)
                ));
            }
        }
        if h.max_connections < 8 || h.max_connections > 1 << 20 {
            return bad(format!(
                "http.max-connections must be between 8 and 1048576, got {}",
                h.max_connections
            ));
        }
        Ok(())
    }
}

/// The whole configuration of a kappa process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Directory with the embedded log (`log/`) and the results store (`kappa.redb`).
    pub data_dir: PathBuf,
    /// The embedded log.
    pub log: LogSection,
    /// What the pipeline computes and how it batches.
    pub pipeline: PipelineSection,
    /// The HTTP server (metrics, health, JSON API).
    pub http: HttpSection,
    /// Apache Kafka as the log (instead of the embedded log) when `brokers` is set.
    pub kafka: KafkaSection,
    /// The reviews stream (`shop.reviews`).
    pub reviews: ReviewsSection,
    /// The product catalogue (`shop.products`).
    pub products: ProductsSection,
    /// Calendar rollups and ranges.
    pub rollups: RollupsSection,
    /// The clicks stream: any JSON objects, read by the aggregates declared on it.
    pub clicks: crate::clicks::ClicksSection,
    /// Declared aggregates (`[[aggregates]]`, issue 20): group-by and measures over any
    /// field of the events, windowed beside the built-in ones ([`crate::declared`]), or of
    /// the clicks.
    pub aggregates: Vec<crate::declared::Declaration>,
    /// The stream this configuration reads (not a key: set by [`Config::for_stream`]).
    #[serde(skip)]
    pub stream: crate::stream::Stream,
}

/// `[products]`: the product catalogue stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ProductsSection {
    /// Whether `kappa run` (a single process) reads the catalogue and fills the category
    /// and price an event leaves out from the entry valid at the event's time.
    pub read: bool,
}

impl Default for ProductsSection {
    fn default() -> Self {
        Self { read: true }
    }
}

/// `[rollups]`: calendar rollups of the hourly sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RollupsSection {
    /// IANA time zone of the days, weeks, months and years (`UTC`, `Asia/Seoul`, …).
    pub time_zone: String,
}

impl Default for RollupsSection {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
        }
    }
}

/// `[reviews]`: the reviews stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ReviewsSection {
    /// Whether `kappa run` (a single process) reads the reviews stream next to the events.
    pub read: bool,
    /// Reviews a product needs in a window to be ranked best or worst rated.
    pub min_reviews: u64,
}

impl Default for ReviewsSection {
    fn default() -> Self {
        Self {
            read: true,
            min_reviews: 3,
        }
    }
}

/// `[kafka]`: Kafka as the source and sink of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KafkaSection {
    /// Bootstrap servers (`host:port,...`); empty means the embedded log.
    pub brokers: String,
    /// Topic of the events.
    pub topic: String,
    /// Topic of the reviews.
    pub reviews_topic: String,
    /// Topic of the clicks (any JSON objects, `[clicks]`).
    pub clicks_topic: String,
    /// Compacted topic of the product catalogue.
    pub products_topic: String,
    /// Consumer group of live consumption.
    pub group_id: String,
    /// Topic where workers publish partial aggregates for the merger (`--role`).
    pub partials_topic: String,
    /// Consumer group of the workers (`kappa run --role worker`).
    pub worker_group_id: String,
    /// Compacted topic through which a merger tells workers which output versions to
    /// compute (replays across roles).
    pub control_topic: String,
    /// Consumer session timeout (a dead member's partitions move after this).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often librdkafka reports statistics (the lag comes from them).
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// How long a command that talks to Kafka once (`topics`, `produce`) waits for the
    /// brokers before it gives up with one line (`kappa run` keeps retrying instead).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Extra librdkafka properties (`"socket.timeout.ms" = "10000"`), applied last.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic: "shop.events".into(),
            reviews_topic: "shop.reviews".into(),
            clicks_topic: "shop.clicks".into(),
            products_topic: "shop.products".into(),
            group_id: "kappa".into(),
            partials_topic: "kappa.partials".into(),
            worker_group_id: "kappa-workers".into(),
            control_topic: "kappa.control".into(),
            session_timeout: Duration::from_secs(10),
            statistics_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// `[log]`: the embedded log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogSection {
    /// Partitions of a newly created log (an existing log keeps its own count).
    pub partitions: u32,
    /// Size at which a segment file is rolled.
    pub segment_bytes: u64,
    /// Longest time appended records may sit unsynced (fdatasync) on disk.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
}

/// `[pipeline]`: the windows and the batching of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PipelineSection {
    /// Output version this process computes; empty (the default) means the serving one
    /// (`v1` on a fresh store), computed with the configuration it was created with.
    pub version: String,
    /// Tumbling window sizes, whole seconds (`["1m", "1h"]` or `"1m,1h"`).
    #[serde(serialize_with = "ser_durations", deserialize_with = "de_durations")]
    pub window_sizes: Vec<Duration>,
    /// Bounded out-of-orderness: the watermark trails the max event time by this much.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// A partition with no records for this long (wall clock) stops holding the
    /// watermark back. `0s` disables idleness. Never applies to bounded runs.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Entries kept by the top-K aggregates.
    pub top_k: usize,
    /// Records larger than this are invalid (dead-lettered).
    pub max_record_bytes: usize,
    /// Events whose time is further than this ahead of their record's ingest time are
    /// invalid (one bad clock must not drag the watermark into the future).
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Most records read per poll.
    pub batch_records: usize,
    /// Longest time between store commits while records flow.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Event schema versions decoded; records of other versions are dead-lettered (`[1]`
    /// behaves as a build that predates schema 2).
    pub accept_schemas: Vec<u64>,
    /// Audit the serving version this often (`1h`; `0s`, the default, is off): each
    /// audit recomputes the final windows since the previous one from the log and
    /// compares them with the stored rows (`kappa audit`, reason `audit` in the history).
    #[serde(with = "humantime_serde")]
    pub audit_every: Duration,
    /// Scheduled audits also repair the windows that differ (in place).
    pub audit_repair: bool,
    /// The currency of every price (ISO 4217, 0 or 2 decimals): schema 1 prices are in it,
    /// schema 2 prices in another currency are dead-lettered (`currency_mismatch`).
    pub currency: crate::event::money::Currency,
}

impl PipelineSection {
    /// What the decoder accepts under this configuration.
    #[must_use]
    pub fn decode_rules(&self) -> crate::event::Rules {
        crate::event::Rules {
            max_bytes: self.max_record_bytes,
            schemas: crate::event::Schemas::of(&self.accept_schemas),
            currency: self.currency,
        }
    }
}

/// `[http]`: the HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpSection {
    /// Address to listen on (`127.0.0.1:9464`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Bearer token the state-changing endpoints (replay, cancel, promote, drop) require
    /// when set; required to listen on an address other than loopback.
    pub token: String,
    /// A connection that has not sent a complete request head this long after it opened,
    /// or after its previous response, is closed, as is a request whose body sends
    /// nothing for this long: slow headers, stalled bodies and idle keep-alive connections
    /// cannot hold the server's connections.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Most connections served at once. A new connection beyond it closes the one that has
    /// been silent longest (the health checks of a prober that sends at once get in).
    pub max_connections: usize,
    /// How long the CLI (`query`, `export`, `replay`, `versions`, `dead-letters`) waits to
    /// connect to a running kappa.
    #[serde(with = "humantime_serde")]
    pub client_connect_timeout: Duration,
    /// How long the CLI waits for each read from a running kappa before giving up.
    #[serde(with = "humantime_serde")]
    pub client_read_timeout: Duration,
    /// `kappa export` through a server: the server writes the whole export before its first
    /// byte, so the CLI waits this long instead of `client-read-timeout`.
    #[serde(with = "humantime_serde")]
    pub client_export_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            log: LogSection::default(),
            pipeline: PipelineSection::default(),
            http: HttpSection::default(),
            kafka: KafkaSection::default(),
            reviews: ReviewsSection::default(),
            clicks: crate::clicks::ClicksSection::default(),
            products: ProductsSection::default(),
            rollups: RollupsSection::default(),
            aggregates: Vec::new(),
            stream: crate::stream::Stream::Events,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            partitions: 4,
            segment_bytes: 256 << 20,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            version: String::new(),
            window_sizes: vec![Duration::from_secs(60), Duration::from_secs(3600)],
            max_delay: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            top_k: 10,
            max_record_bytes: 64 << 10,
            max_future: Duration::from_secs(86_400),
            batch_records: 65_536,
            commit_interval: Duration::from_millis(500),
            accept_schemas: crate::event::KNOWN_SCHEMAS.to_vec(),
            audit_every: Duration::ZERO,
            audit_repair: false,
            currency: crate::event::money::Currency::EUR,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: String::new(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            client_connect_timeout: Duration::from_secs(5),
            client_read_timeout: Duration::from_secs(30),
            client_export_timeout: Duration::from_secs(600),
        }
    }
}

fn ser_durations<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
}

fn de_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(v) => v,
        Form::Text(s) => s
            .trim_matches(['[', ']'])
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect(),
    };
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            humantime::parse_duration(s)
                .map_err(|e| serde::de::Error::custom(format!("window size {s:?}: {e}")))
        })
        .collect()
}

pub use crate::event::time::fmt_duration;

impl Config {
    /// Loads defaults → `file` → `KAPPA_*` environment → `overrides` (CLI flags, as a
    /// partial tree of the same shape), then validates.
    ///
    /// # Errors
    /// One line naming the bad key or value.
    pub fn load(file: Option<&Path>, overrides: &serde_json::Value) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only `KAPPA_*` variables that name a configuration key are configuration; others
        // (a compose file's own `KAPPA_TOKEN`, …) are not read — but one that looks like a
        // key with a typo is an error naming the key it resembles.
        let keys = EnvKeys::of_defaults();
        keys.check_typos(std::env::vars().map(|(k, _)| k))?;
        fig = fig
            .merge(Env::prefixed("KAPPA_").filter_map(move |k| {
                let key = env_key(k.as_str());
                keys.known(&key).then(|| key.into())
            }))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().map_err(|e| ConfigError(one_line(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults → the TOML `text`, validated; no environment (the config fuzz target and
    /// tests use it).
    ///
    /// # Errors
    /// One line naming the bad key or value.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError(one_line(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot.
    ///
    /// # Errors
    /// One line naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pipeline.validate()?;
        let bad = |m: String| Err(ConfigError(m));
        if self.log.partitions == 0 || self.log.partitions > 1024 {
            return bad(format!(
                "log.partitions must be between 1 and 1024, got {}",
                self.log.partitions
            ));
        }
        self.http.validate()?;
        crate::rollup::Calendar::new(&self.rollups.time_zone)
            .map_err(|e| ConfigError(format!("rollups.time-zone: {e}")))?;
        if self.log.segment_bytes < 1 << 16 {
            return bad(format!(
                "log.segment-bytes must be at least 65536, got {}",
                self.log.segment_bytes
            ));
        }
        crate::declared::Plan::compile(&self.aggregates).map_err(ConfigError)?;
        self.clicks.compile().map_err(ConfigError)?;
        Ok(())
    }

    /// The declared aggregates of every stream, compiled.
    #[must_use]
    pub fn plan(&self) -> crate::declared::Plan {
        crate::declared::Plan::compile(&self.aggregates).expect("validated declarations")
    }

    /// The aggregates declared on `stream`, with what reading that stream takes out first
    /// (a click's time and id fields).
    #[must_use]
    pub fn declared_plan(&self, stream: crate::stream::Stream) -> crate::declared::Plan {
        let first = match stream {
            crate::stream::Stream::Clicks => self.clicks.first_paths(),
            _ => Vec::new(),
        };
        self.plan().only(stream, &first)
    }

    /// Whether an aggregate is declared on the clicks (then a single process reads them).
    #[must_use]
    pub fn reads_clicks(&self) -> bool {
        self.aggregates.iter().any(|d| d.stream == "clicks")
    }

    /// The result-deciding part, for the window core.
    #[must_use]
    pub fn window_config(&self) -> WindowConfig {
        let mut sizes_ms: Vec<i64> = self
            .pipeline
            .window_sizes
            .iter()
            .map(|d| i64::try_from(d.as_millis()).expect("validated size"))
            .collect();
        sizes_ms.sort_unstable();
        sizes_ms.dedup();
        WindowConfig {
            sizes_ms,
            max_delay_ms: i64::try_from(self.pipeline.max_delay.as_millis())
                .expect("validated delay"),
            top_k: self.pipeline.top_k,
        }
    }

    /// Canonical text of everything that decides results: two versions with equal text
    /// compute equal results from the same log.
    #[must_use]
    pub fn results_fingerprint(&self) -> String {
        let w = self.window_config();
        let sizes: Vec<String> = w
            .sizes_ms
            .iter()
            .map(|&s| fmt_duration(Duration::from_millis(s.unsigned_abs())))
            .collect();
        let mut schemas = self.pipeline.accept_schemas.clone();
        schemas.sort_unstable();
        schemas.dedup();
        let mut fp = format!(
            "window-sizes=[{}] max-delay={} top-k={} max-record-bytes={} max-future={}",
            sizes.join(","),
            fmt_duration(self.pipeline.max_delay),
            w.top_k,
            self.pipeline.max_record_bytes,
            fmt_duration(self.pipeline.max_future)
        );
        // Written only when restricted, so versions made before schema 2 keep their text.
        if schemas != crate::event::KNOWN_SCHEMAS {
            let list: Vec<String> = schemas.iter().map(u64::to_string).collect();
            fp.push_str(&format!(" schemas=[{}]", list.join(",")));
        }
        // Likewise only when not the default (versions made before it were in euros).
        if self.pipeline.currency != crate::event::money::Currency::EUR {
            fp.push_str(&format!(" currency={}", self.pipeline.currency));
        }
        // Only when not UTC (versions made before rollups had UTC days).
        if self.stream == crate::stream::Stream::Events && self.rollups.time_zone != "UTC" {
            fp.push_str(&format!(" time-zone={}", self.rollups.time_zone));
        }
        if self.stream == crate::stream::Stream::Reviews {
            fp.push_str(&format!(" min-reviews={}", self.reviews.min_reviews));
        }
        // Only when some are declared (versions made before them have none); the events'
        // version and its clicks part both carry every declaration.
        let plan = self.plan();
        let declaring = matches!(
            self.stream,
            crate::stream::Stream::Events | crate::stream::Stream::Clicks
        );
        if declaring && !plan.aggregates.is_empty() {
            let texts: Vec<&str> = plan
                .aggregates
                .iter()
                .map(|a| a.canonical.as_str())
                .collect();
            fp.push_str(&format!(" aggregates=[{}]", unspaced(&texts.join(","))));
            if self.reads_clicks() {
                let clicks = serde_json::to_string(&self.clicks).expect("serialises");
                fp.push_str(&format!(" clicks={}", unspaced(&clicks)));
            }
        }
        fp
    }

    /// This configuration with the result-deciding settings of `fingerprint` (the text
    /// [`Config::results_fingerprint`] wrote for an output version) in place of its own.
    ///
    /// # Errors
    /// Text that is not a fingerprint.
    pub fn with_fingerprint(&self, fingerprint: &str) -> Result<Config, ConfigError> {
        let bad = || ConfigError(format!("unreadable version configuration {fingerprint:?}"));
        let mut c = self.clone();
        c.pipeline.accept_schemas = crate::event::KNOWN_SCHEMAS.to_vec();
        c.pipeline.currency = crate::event::money::Currency::EUR;
        c.rollups.time_zone = "UTC".into();
        c.aggregates = Vec::new();
        c.clicks = crate::clicks::ClicksSection::default();
        for item in fingerprint.split_whitespace() {
            let (key, value) = item.split_once('=').ok_or_else(bad)?;
            let list = || -> Vec<&str> {
                value
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect()
            };
            let dur = |v: &str| humantime::parse_duration(v).map_err(|_| bad());
            match key {
                "window-sizes" => {
                    c.pipeline.window_sizes =
                        list().into_iter().map(dur).collect::<Result<_, _>>()?;
                }
                "max-delay" => c.pipeline.max_delay = dur(value)?,
                "top-k" => c.pipeline.top_k = value.parse().map_err(|_| bad())?,
                "max-record-bytes" => {
                    c.pipeline.max_record_bytes = value.parse().map_err(|_| bad())?
                }
                "max-future" => c.pipeline.max_future = dur(value)?,
                "min-reviews" => c.reviews.min_reviews = value.parse().map_err(|_| bad())?,
                "time-zone" => c.rollups.time_zone = value.to_string(),
                "aggregates" => c.aggregates = serde_json::from_str(value).map_err(|_| bad())?,
                "clicks" => c.clicks = serde_json::from_str(value).map_err(|_| bad())?,
                "currency" => {
                    c.pipeline.currency =
                        crate::event::money::Currency::parse(value).map_err(|_| bad())?;
                }
                "schemas" => {
                    c.pipeline.accept_schemas = list()
                        .into_iter()
                        .map(|v| v.parse().map_err(|_| bad()))
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(bad()),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// This configuration with its secrets (`http.token`, Kafka passwords, keys and
    /// secrets among `kafka.properties`) replaced by `********`, for printing.
    #[must_use]
    pub fn redacted(&self) -> Config {
        const MASK: &str = "********";
        let mut c = self.clone();
        if !c.http.token.is_empty() {
            c.http.token = MASK.into();
        }
        for (k, v) in &mut c.kafka.properties {
            let k = k.to_ascii_lowercase();
            if ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|s| k.contains(s))
                && !k.ends_with(".location")
            {
                *v = MASK.into();
            }
        }
        c
    }

    /// The embedded log of the stream this configuration reads: `{data_dir}/log` for the
    /// events ([`crate::stream::Stream::log_dir`]).
    #[must_use]
    pub fn log_dir(&self) -> PathBuf {
        self.stream.log_dir(&self.data_dir)
    }

    /// This configuration reading `stream`: its embedded log directory and Kafka topic.
    #[must_use]
    pub fn for_stream(&self, stream: crate::stream::Stream) -> Config {
        let mut c = self.clone();
        c.stream = stream;
        match stream {
            crate::stream::Stream::Events => {}
            crate::stream::Stream::Reviews => c.kafka.topic.clone_from(&self.kafka.reviews_topic),
            crate::stream::Stream::Products => {
                c.kafka.topic.clone_from(&self.kafka.products_topic);
            }
            crate::stream::Stream::Clicks => c.kafka.topic.clone_from(&self.kafka.clicks_topic),
        }
        c
    }

    /// `{data_dir}/kappa.redb`.
    #[must_use]
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("kappa.redb")
    }
}

/// `text` with its whitespace escaped (`\u0020`): the fingerprint is split at whitespace,
/// and JSON strings keep theirs.
fn unspaced(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_whitespace() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Figment's error as one line: the first problem, with the key and the source.
/// `HTTP__TOKEN` (after `KAPPA_`) → `http.token`.
fn env_key(var: &str) -> String {
    var.to_ascii_lowercase()
        .replace("__", ".")
        .replace('_', "-")
}

/// The configuration keys an environment variable may set: the leaves of the default tree
/// (and anything under a table that is empty by default, such as `kafka.properties`).
#[derive(Clone)]
struct EnvKeys {
    leaves: Vec<String>,
    tables: Vec<String>,
}

impl EnvKeys {
    fn of_defaults() -> Self {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut EnvKeys) {
            match v {
                serde_json::Value::Object(m) if m.is_empty() => out.tables.push(prefix.into()),
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                _ => out.leaves.push(prefix.into()),
            }
        }
        let mut keys = Self {
            leaves: Vec::new(),
            tables: Vec::new(),
        };
        let tree = serde_json::to_value(Config::default()).unwrap_or_default();
        walk("", &tree, &mut keys);
        keys
    }

    fn known(&self, key: &str) -> bool {
        self.leaves.iter().any(|l| l == key)
            || self.tables.iter().any(|t| {
                key.strip_prefix(t.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            })
    }

    /// An error for the first `KAPPA_*` variable that is no key but is within two edits of
    /// one.
    fn check_typos(&self, vars: impl Iterator<Item = String>) -> Result<(), ConfigError> {
        for var in vars {
            let Some(rest) = var.strip_prefix("KAPPA_") else {
                continue;
            };
            let key = env_key(rest);
            if self.known(&key) {
                continue;
            }
            let closest = self
                .leaves
                .iter()
                .map(|l| (edit_distance(l, &key), l))
                .min();
            if let Some((d, leaf)) = closest
                && d <= 2
            {
                return Err(ConfigError(format!(
                    "{var} is not a configuration variable; did you mean KAPPA_{} ({leaf})?",
                    leaf.to_ascii_uppercase()
                        .replace('.', "__")
                        .replace('-', "_")
                )));
            }
        }
        Ok(())
    }
}

/// Levenshtein distance (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The first error, naming the key and where the value came from (a file, the
/// environment; flags need no saying). One line, except a TOML syntax error, which keeps
/// its line, column and caret.
fn one_line(e: &figment::Error) -> String {
    use figment::error::Kind;
    let first = e.clone().into_iter().next().unwrap_or_else(|| e.clone());
    let mut msg = match &first.kind {
        Kind::UnknownField(field, expected) => format!(
            "unknown key {field:?}; the keys here are {}",
            expected.join(", ")
        ),
        kind => kind.to_string(),
    };
    if !first.path.is_empty() {
        msg = format!("{}: {msg}", first.path.join("."));
    }
    if let Some(md) = &first.metadata {
        let src = match &md.source {
            Some(figment::Source::File(path)) => Some(path.display().to_string()),
            Some(figment::Source::Custom(s)) => Some(s.clone()),
            // Built-in defaults and command-line flags (serialized in code).
            Some(figment::Source::Code(_)) => None,
            Some(other) => Some(other.to_string()),
            None => Some(md.name.to_string()),
        };
        if let Some(src) = src {
            msg = if msg.contains("TOML parse error") {
                format!("{src}: {}", msg.trim_end())
            } else {
                format!("{msg} (from {src})")
            };
        }
    }
    if msg.contains("TOML parse error") {
        msg.trim_end().to_string()
    } else {
        msg.replace('\n', " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        Config::load(Some(f.path()), &serde_json::json!({}))
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &serde_json::json!({})).unwrap();
        assert_eq!(c.window_config(), WindowConfig::default());
    }

    #[test]
    fn file_then_flags() {
        let c = load_toml("data-dir = \"/tmp/x\"\n[pipeline]\nmax-delay = \"10s\"\nwindow-sizes = [\"5m\", \"1m\"]\n").unwrap();
        assert_eq!(c.pipeline.max_delay, Duration::from_secs(10));
        assert_eq!(c.window_config().sizes_ms, vec![60_000, 300_000]);
        let over = serde_json::json!({"pipeline": {"max-delay": "2s"}});
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"[pipeline]\nmax-delay = \"10s\"\n").unwrap();
        assert_eq!(
            Config::load(Some(f.path()), &over)
                .unwrap()
                .pipeline
                .max_delay,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_toml("[pipeline]\nmax-dely = \"10s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-dely"), "{e}");
        assert!(!e.contains('\n'));
        let e = load_toml("[pipeline]\nmax-delay = \"ten seconds\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-delay"), "{e}");
        let e = load_toml("[pipeline]\nwindow-sizes = [\"1.5s\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("window-sizes"), "{e}");
    }

    #[test]
    fn durations_print_in_days_hours_minutes_and_read_back() {
        let d = |s: u64| fmt_duration(Duration::from_secs(s));
        assert_eq!(d(31 * 86_400), "31days");
        assert_eq!(d(86_400), "1day");
        assert_eq!(d(90_061), "1day1h1m1s");
        assert_eq!(d(0), "0s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1s500ms");
        for secs in [
            1,
            59,
            3600,
            86_399,
            7 * 86_400,
            31 * 86_400,
            400 * 86_400 + 7,
        ] {
            let text = d(secs);
            assert!(!text.contains("month") && !text.contains("year"), "{text}");
            assert_eq!(
                humantime::parse_duration(&text).unwrap(),
                Duration::from_secs(secs)
            );
        }
        // Below 30 days, what humantime wrote (stored configurations keep their text).
        for secs in [1, 61, 3661, 86_400, 7 * 86_400 + 5, 29 * 86_400] {
            let old = humantime::format_duration(Duration::from_secs(secs)).to_string();
            assert_eq!(d(secs), old.replace(' ', ""));
        }
    }

    #[test]
    fn bounds_of_max_future_max_record_bytes_and_currency() {
        let e = load_toml("[pipeline]\nmax-future = \"36500days\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: pipeline.max-future 36500days is above 7 days"
        );
        assert!(load_toml("[pipeline]\nmax-future = \"7days\"\n").is_ok());
        let e = load_toml("[pipeline]\nmax-record-bytes = 40000000\n").unwrap_err();
        assert!(e.to_string().contains("max-record-bytes"), "{e}");
        let e = load_toml("[pipeline]\ncurrency = \"KWD\"\n").unwrap_err();
        assert!(e.to_string().contains("pipeline.currency"), "{e}");
        assert!(e.to_string().contains("3 decimal places"), "{e}");
        let c = load_toml("[pipeline]\ncurrency = \"JPY\"\n").unwrap();
        assert!(c.results_fingerprint().ends_with(" currency=JPY"));
        assert!(!Config::default().results_fingerprint().contains("currency"));
    }

    #[test]
    fn fingerprint_changes_with_results_config_only() {
        let a = Config::default();
        let mut b = a.clone();
        b.pipeline.batch_records = 7;
        assert_eq!(a.results_fingerprint(), b.results_fingerprint());
        b.pipeline.max_delay = Duration::from_secs(31);
        assert_ne!(a.results_fingerprint(), b.results_fingerprint());
    }

    #[test]
    fn a_fingerprint_reads_back_into_the_same_settings() {
        let mut a = Config::default();
        a.pipeline.window_sizes = vec![Duration::from_secs(300), Duration::from_secs(7200)];
        a.pipeline.max_delay = Duration::from_secs(5400);
        a.pipeline.top_k = 3;
        a.pipeline.max_record_bytes = 1000;
        a.pipeline.max_future = Duration::from_secs(60);
        a.pipeline.accept_schemas = vec![1];
        a.pipeline.currency = crate::event::money::Currency::parse("JPY").unwrap();
        let b = Config::default()
            .with_fingerprint(&a.results_fingerprint())
            .unwrap();
        assert_eq!(a, b);
        let d = Config::default();
        assert_eq!(d.with_fingerprint(&d.results_fingerprint()).unwrap(), d);
        assert!(d.with_fingerprint("top-k=x").is_err());
        assert!(d.with_fingerprint("colour=blue").is_err());
    }
}
