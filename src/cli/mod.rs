//! The `kappa` command line: argument definitions (help text from the doc comments) and
//! dispatch to the commands.

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`):
/// `main` ends quietly on a broken pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

mod client;
mod produce;
mod read;
mod replay;
mod run;
pub use crate::text;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::config::Config;

/// kappa — a Kappa-architecture stream processor for e-commerce events.
///
/// Reads events from an append-only log (the embedded log under --data-dir by default),
/// computes event-time tumbling windows under watermarks and writes final, idempotent
/// window results to redb.
#[derive(Debug, Parser)]
#[command(
    name = "kappa",
    version,
    propagate_version = false,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file (TOML). Layering: defaults → file → KAPPA_* environment → flags.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the embedded log and the store [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use Apache Kafka at these bootstrap servers as the log instead of the embedded one.
    #[arg(long, global = true, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Kafka topic of the events [default: shop.events].
    #[arg(long, global = true, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Log lines on stderr: `human` (default) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people (ANSI colours on a terminal).
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce realistic traffic and process it live in one process; prints the URLs.
    Demo(DemoArgs),
    /// Run the pipeline and the HTTP server (metrics, health, JSON API).
    Run(RunArgs),
    /// Append events to the log: generated (seeded, realistic) or from a JSON-lines file.
    Produce(produce::ProduceArgs),
    /// Print the latest final windows.
    Query(read::QueryArgs),
    /// Write every final window result as JSON lines.
    Export(read::ExportArgs),
    /// Print the content hash of each final window and a digest per size and range: equal
    /// digests, equal results (across versions, stores and machines).
    Fingerprint(read::FingerprintArgs),
    /// List invalid records kept in the dead-letter store.
    DeadLetters(read::DeadLetterArgs),
    /// Recompute results from the log: correct the serving version in place over a time
    /// range, or build a new output version (`--version`); `status`, `cancel`, `history`.
    Replay(replay::ReplayArgs),
    /// Recompute a range of final windows from the log and compare them with the stored
    /// ones (hashes recomputed from the stored rows): equal, or the windows that differ
    /// with their diff; `--repair` rewrites those in place. Exit code 1 when windows differ
    /// and were not repaired.
    Audit(replay::AuditArgs),
    /// Output versions: `list`, `compare A B`, `promote V`, `drop V`.
    #[command(subcommand)]
    Versions(replay::VersionsCommand),
    /// Kafka topics as code: `apply` the specifications in topics/, `list` them.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Print the effective configuration (defaults, file, environment and flags merged) as
    /// TOML, or the one-line error that makes it invalid.
    Config,
}

/// `kappa topics …`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the missing topics described in topics/*.toml; report (never change) drift.
    Apply {
        /// Only say what would be created.
        #[arg(long)]
        dry_run: bool,
        /// Directory of the specifications [default: ./topics, else the ones built in].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show each specified topic's partitions and per-partition end offsets.
    List {
        /// Directory of the specifications [default: ./topics, else the ones built in].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Flags that override the `[pipeline]` and `[http]` configuration.
#[derive(Debug, Args, Default)]
pub struct PipelineFlags {
    /// HTTP listen address [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Output version to compute [default: the serving one, v1 on a fresh store].
    #[arg(long = "version", value_name = "NAME")]
    pub output_version: Option<String>,
    /// Window sizes, comma-separated [default: 1m,1h].
    #[arg(long, value_name = "SIZES")]
    pub window_sizes: Option<String>,
    /// Allowed out-of-orderness before an event is late [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub max_delay: Option<String>,
    /// Wall-clock silence after which a partition stops holding the watermark [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Entries in the top-K aggregates [default: 10].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
}

/// `kappa run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Process up to the log end as it was at start, commit, and exit.
    #[arg(long)]
    pub until_caught_up: bool,
    /// With --until-caught-up: also finalise the windows still open, as if the input ended.
    #[arg(long, requires = "until_caught_up")]
    pub drain: bool,
    /// With --version: create that output version when the store does not have it (a
    /// name not in the store is otherwise refused as a typo).
    #[arg(long)]
    pub create: bool,
    /// What this process does: `all` (read, window, store, serve), `worker` (publish
    /// partial aggregates of its source partitions to Kafka) or `merger` (merge them, store,
    /// serve). Worker and merger need Kafka.
    #[arg(long, value_enum, default_value_t = crate::scale::Role::All)]
    pub role: crate::scale::Role,
    /// Pipeline overrides.
    #[command(flatten)]
    pub flags: PipelineFlags,
}

/// `kappa demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 2m) instead of waiting for Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Events per second produced (at an average hour of the traffic curve).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pipeline overrides.
    #[command(flatten)]
    pub flags: PipelineFlags,
}

/// Parses a human duration (`30s`, `1h`).
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 30s or 5m: {e}"))
}

impl PipelineFlags {
    fn overrides(&self, cli: &Cli) -> Value {
        let mut root = Map::new();
        if let Some(d) = &cli.data_dir {
            root.insert("data-dir".into(), json!(d));
        }
        let mut k = Map::new();
        if let Some(b) = &cli.kafka {
            k.insert("brokers".into(), json!(b));
        }
        if let Some(t) = &cli.topic {
            k.insert("topic".into(), json!(t));
        }
        if !k.is_empty() {
            root.insert("kafka".into(), Value::Object(k));
        }
        let mut p = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.into(), v);
            }
        };
        put("version", self.output_version.clone().map(Value::from));
        put("window-sizes", self.window_sizes.clone().map(Value::from));
        put("max-delay", self.max_delay.clone().map(Value::from));
        put("idle-timeout", self.idle_timeout.clone().map(Value::from));
        put("top-k", self.top_k.map(Value::from));
        if !p.is_empty() {
            root.insert("pipeline".into(), Value::Object(p));
        }
        if let Some(l) = &self.listen {
            root.insert("http".into(), json!({ "listen": l }));
        }
        Value::Object(root)
    }
}

fn load_config(cli: &Cli, flags: Option<&PipelineFlags>) -> anyhow::Result<Config> {
    let overrides = match flags {
        Some(f) => f.overrides(cli),
        None => PipelineFlags::default().overrides(cli),
    };
    Ok(Config::load(cli.config.as_deref(), &overrides)?)
}

/// [`load_config`] with `kappa produce`'s flags (`--partitions` is `log.partitions`, so
/// it is validated like the file and the environment).
fn produce_config(cli: &Cli, a: &produce::ProduceArgs) -> anyhow::Result<Config> {
    let mut overrides = PipelineFlags::default().overrides(cli);
    if let (Some(n), Value::Object(root)) = (a.partitions, &mut overrides) {
        root.insert("log".into(), json!({ "partitions": n }));
    }
    Ok(Config::load(cli.config.as_deref(), &overrides)?)
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever stopped the command; `main` prints it as one line.
pub fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Demo(a) => run::demo(&load_config(cli, Some(&a.flags))?, a),
        Command::Run(a) => run::run(&load_config(cli, Some(&a.flags))?, a, cli.log_format),
        Command::Produce(a) => produce::produce(&produce_config(cli, a)?, a),
        Command::Query(a) => read::query(&load_config(cli, None)?, a),
        Command::Export(a) => read::export(&load_config(cli, None)?, a),
        Command::Fingerprint(a) => read::fingerprint(&load_config(cli, None)?, a),
        Command::DeadLetters(a) => read::dead_letters(&load_config(cli, None)?, a),
        Command::Topics(t) => topics(&load_config(cli, None)?, t),
        Command::Replay(a) => replay::replay(&load_config(cli, None)?, cli.config.as_deref(), a),
        Command::Audit(a) => replay::audit(&load_config(cli, None)?, a),
        Command::Versions(v) => replay::versions(&load_config(cli, None)?, v),
        Command::Config => {
            print!(
                "{}",
                toml::to_string_pretty(&load_config(cli, None)?.redacted())?
            );
            Ok(())
        }
    }
}

fn topics(cfg: &Config, cmd: &TopicsCommand) -> anyhow::Result<()> {
    if cfg.kafka.brokers.is_empty() {
        anyhow::bail!("topics need Kafka: pass --kafka BROKERS (or set kafka.brokers)");
    }
    match cmd {
        TopicsCommand::Apply { dry_run, dir } => {
            let (specs, from) = crate::topics::specs(dir.as_deref())?;
            if from != "topics" {
                eprintln!("(topic specifications: {from})");
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let results = rt.block_on(crate::topics::apply(&cfg.kafka, &specs, *dry_run))?;
            for (name, r) in results {
                match r {
                    crate::topics::Applied::Created if *dry_run => {
                        out!("{name}: would be created")
                    }
                    crate::topics::Applied::Created => out!("{name}: created"),
                    crate::topics::Applied::UpToDate => out!("{name}: up to date"),
                    crate::topics::Applied::Drift(d) => {
                        out!("{name}: DRIFT (not changed; fix the broker or the spec):");
                        for line in d {
                            out!("  {line}");
                        }
                    }
                }
            }
        }
        TopicsCommand::List { dir } => {
            let (specs, from) = crate::topics::specs(dir.as_deref())?;
            if from != "topics" {
                eprintln!("(topic specifications: {from})");
            }
            let mut failed = 0;
            for spec in specs {
                match crate::topics::end_offsets(&cfg.kafka, &spec.name) {
                    Ok(ends) => {
                        let list: Vec<String> = ends
                            .iter()
                            .enumerate()
                            .map(|(p, e)| format!("{p}:{e}"))
                            .collect();
                        out!(
                            "{} partitions={} end offsets {}",
                            spec.name,
                            ends.len(),
                            list.join(" ")
                        );
                    }
                    // Nothing answers at all: one line, not one per topic.
                    Err(e @ crate::topics::TopicsError::Unreachable(_)) => return Err(e.into()),
                    Err(e) => {
                        eprintln!("{}: {e}", spec.name);
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} topic(s) could not be listed");
            }
        }
    }
    Ok(())
}
