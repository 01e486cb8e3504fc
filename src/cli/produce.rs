//! `kappa produce`: the seeded generator or a JSON-lines file, into the embedded log (or,
//! with `--output`, into a JSON-lines file).

use std::io::{BufRead, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generator::{GenConfig, GenRecord, Generator};
use crate::log::{LogConfig, LogWriter};
use crate::metrics::Metrics;
use crate::sink::{KafkaSink, LinesSink, Sink, SinkError};

/// `kappa produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The stream to produce: `events` (shop.events), `reviews` (shop.reviews), `products`
    /// (shop.products) or, with `--input`, `clicks` (shop.clicks).
    #[arg(long, default_value = "events", value_parser = crate::stream::Stream::parse)]
    pub stream: crate::stream::Stream,
    /// Append the events of this JSON-lines file (`-` for stdin) instead of generating.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write the generated records as JSON lines to this file (`-` for stdout) instead of
    /// the log.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    pub output: Option<PathBuf>,
    /// Stop after N records (events, or reviews with `--stream reviews`).
    #[arg(long, value_name = "N", alias = "records")]
    pub events: Option<u64>,
    /// Stop after this much wall time (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// Events per second at an average hour (the traffic curve and --sale scale it); 0 = as
    /// fast as possible. With a rate, event time follows the wall clock from --start.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Events per second of event time when --rate is 0.
    #[arg(long, default_value_t = 1000.0, value_name = "N")]
    pub sim_rate: f64,
    /// Seed: the same seed and --start give byte-identical events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first event: RFC 3339, `now`, or `auto` (the default): as fast as
    /// possible (--rate 0), just after the latest event time in the embedded log when it
    /// holds events (a second batch is not late against the first), else
    /// 2026-11-23T00:00:00Z (reproducible; always so with --kafka: a topic is not read
    /// back); paced (--rate > 0), now, or after the log's latest event time if later.
    /// `--stream products`: when the generated catalogue is valid from (`auto`:
    /// 2026-11-22T23:00:00Z, an hour before the events' fixed start).
    #[arg(long, default_value = "auto")]
    pub start: String,
    /// A flat rate: ignore the hourly traffic curve (for benchmarks at a fixed rate).
    #[arg(long)]
    pub flat: bool,
    /// Sale multiplier on traffic and purchase propensity (1 = normal day).
    #[arg(long, default_value_t = 1.0)]
    pub sale: f64,
    /// Products in the catalogue.
    #[arg(long, default_value_t = 5000)]
    pub products: u32,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Arrival disorder: event times lag emission by up to this much.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub disorder: Duration,
    /// Share of events that arrive 1–10 minutes late (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub late_share: f64,
    /// Share of records delivered twice (same event_id, same key) (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_share: f64,
    /// Share of malformed records (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_share: f64,
    /// Share of records that are session documents (`"schema":"session/1"`, 2–5 events of
    /// one session each) (0..1; events only).
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub session_docs: f64,
    /// Partitions when the log is created [default: log.partitions, 4]; 1–1024, validated
    /// as `log.partitions` (an existing log with another count is an error).
    #[arg(long)]
    pub partitions: Option<u32>,
}

fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The fixed first event time of a batch into an empty log (reproducible bytes).
const FIXED_START: &str = "2026-11-23T00:00:00Z";

/// When the generated catalogue is valid from by default: an hour before [`FIXED_START`].
const CATALOGUE_START: &str = "2026-11-22T23:00:00Z";

/// The latest event time among the last record of each partition of the embedded log
/// (records that do not decode are skipped), if it holds any.
fn log_event_time(cfg: &Config) -> anyhow::Result<Option<i64>> {
    let dir = cfg.log_dir();
    if !cfg.kafka.brokers.is_empty() || !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let mut reader = crate::log::LogReader::open(&dir)?;
    let rules = cfg.pipeline.decode_rules();
    let event_time = |value: &[u8]| match cfg.stream {
        crate::stream::Stream::Events => crate::event::decode_with(value, &rules).map(|e| e.ts_ms),
        crate::stream::Stream::Reviews => {
            crate::review::decode(value, rules.max_bytes).map(|r| r.created_ms)
        }
        crate::stream::Stream::Products => {
            crate::products::decode(value, rules.currency).map(|e| e.valid_from_ms)
        }
        // Clicks are appended from a file, never generated after what the log holds.
        crate::stream::Stream::Clicks => Err(crate::event::DecodeError::new(
            crate::event::InvalidKind::MissingField,
            "clicks are not generated",
        )),
    };
    let mut latest = None;
    for p in 0..reader.partitions() {
        let end = reader.end_offset(p)?;
        // A few records back: the last one may be malformed or a duplicate.
        reader.seek(p, end.saturating_sub(16))?;
        let mut batch = crate::log::RecordBatch::new();
        reader.read(p, 16, &mut batch)?;
        for rec in batch.iter() {
            if let Ok(ts) = event_time(rec.value) {
                latest = latest.max(Some(ts));
            }
        }
    }
    Ok(latest)
}

impl ProduceArgs {
    fn gen_config(&self, cfg: &Config) -> anyhow::Result<GenConfig> {
        let start_ms = if self.start == "now" {
            now_ms()
        } else if self.start == "auto" {
            let after_log = log_event_time(cfg)?.map(|t| t + 1000);
            if self.rate > 0.0 {
                // Paced: event time follows the wall clock, never behind the log.
                after_log.map_or_else(now_ms, |t| t.max(now_ms()))
            } else {
                match after_log {
                    Some(t) => t,
                    None => crate::event::time::parse_rfc3339_ms(FIXED_START)
                        .expect("a valid RFC 3339 constant"),
                }
            }
        } else {
            crate::event::time::parse_rfc3339_ms(&self.start).with_context(|| {
                format!("--start {:?} is not an RFC 3339 time or `now`", self.start)
            })?
        };
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate must be 0 or a positive number, got {}", self.rate);
        }
        let cfg = GenConfig {
            seed: self.seed,
            start_ms,
            base_rate: if self.rate > 0.0 {
                self.rate
            } else {
                self.sim_rate
            },
            sale: self.sale,
            flat: self.flat,
            products: self.products,
            users: self.users,
            disorder_ms: to_ms(self.disorder),
            late_share: self.late_share,
            duplicate_share: self.duplicate_share,
            malformed_share: self.malformed_share,
            session_doc_share: self.session_docs,
            ..GenConfig::default()
        };
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cfg)
    }
}

/// The embedded log under the data directory, or the Kafka topic with `--kafka`.
/// `partitions_flag`: whether `--partitions` was given (its value, validated, is
/// `cfg.log.partitions`).
pub(super) fn open_sink(
    cfg: &Config,
    partitions_flag: bool,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Box<dyn Sink>> {
    if !cfg.kafka.brokers.is_empty() {
        return Ok(Box::new(KafkaSink::new(&cfg.kafka, metrics)?));
    }
    let dir = cfg.log_dir();
    // Without --partitions an existing log keeps its count; with it, a mismatch is an error.
    let existing = if dir.join("meta.json").exists() {
        Some(crate::log::LogReader::open(&dir)?.partitions())
    } else {
        None
    };
    let log_cfg = LogConfig {
        partitions: existing
            .filter(|_| !partitions_flag)
            .unwrap_or(cfg.log.partitions),
        segment_bytes: cfg.log.segment_bytes,
        fsync_interval: cfg.log.fsync_interval,
    };
    Ok(Box::new(LogWriter::open(&dir, &log_cfg)?))
}

/// Where `kappa produce` writes: the `--output` file (`-`: stdout) as JSON lines, else the
/// log of `cfg`'s stream.
fn output_sink(cfg: &Config, args: &ProduceArgs) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match &args.output {
        Some(out) if out.as_os_str() == "-" => {
            Box::new(LinesSink(Box::new(BufWriter::new(std::io::stdout()))))
        }
        Some(out) => Box::new(LinesSink(Box::new(BufWriter::new(
            std::fs::File::create(out)
                .with_context(|| format!("cannot create {}", out.display()))?,
        )))),
        None => open_sink(cfg, args.partitions.is_some(), Arc::new(Metrics::new()))?,
    })
}

/// Generates records paced in real time (event time follows the wall clock) into the log
/// until cancelled; returns the number produced. Used by the demo.
///
/// # Errors
/// The log cannot be opened.
pub fn spawn_paced(
    cfg: &Config,
    gen_cfg: GenConfig,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<u64>>> {
    gen_cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut generator = Generator::new(gen_cfg);
    spawn_paced_records(
        cfg,
        "producer",
        Box::new(move |r| generator.next_into(r)),
        cancel,
        metrics,
    )
}

/// [`spawn_paced`] for any generated records (`next` fills one), into the log of
/// `cfg`'s stream, on a thread called `name`.
///
/// # Errors
/// The log cannot be opened.
pub fn spawn_paced_records(
    cfg: &Config,
    name: &str,
    mut next: Box<dyn FnMut(&mut GenRecord) + Send>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<u64>>> {
    let mut writer = open_sink(cfg, false, metrics.clone())?;
    Ok(std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let produced = metrics.produced_records.with_label_values(&[writer.kind()]);
            let count_here = writer.kind() == "embedded"; // Kafka counts delivery reports instead
            let n = generate(&mut *next, None, None, true, &cancel, &mut |rec| {
                match rec {
                    Some(rec) => {
                        writer.append(&rec.key, &rec.value, now_ms())?;
                        if count_here {
                            produced.inc();
                        }
                    }
                    None => writer.flush()?,
                }
                Ok(())
            })?;
            writer.finish()?;
            Ok(n)
        })?)
}

/// The generation loop: pacing (event time follows the wall clock when `paced`), limits,
/// periodic flushes. `sink(Some(record))` appends, `sink(None)` flushes.
fn generate(
    next: &mut dyn FnMut(&mut GenRecord),
    events: Option<u64>,
    duration: Option<Duration>,
    paced: bool,
    cancel: &CancellationToken,
    sink: &mut dyn FnMut(Option<&GenRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut rec = GenRecord::default();
    let mut n = 0u64;
    let mut sim_start = None;
    let mut last_flush = Instant::now();
    while events.is_none_or(|e| n < e) {
        if n.is_multiple_of(1024)
            && (cancel.is_cancelled() || duration.is_some_and(|d| started.elapsed() >= d))
        {
            break;
        }
        next(&mut rec);
        if paced {
            let s0 = *sim_start.get_or_insert(rec.emit_at_ms);
            let due = Duration::from_millis(u64::try_from(rec.emit_at_ms - s0).unwrap_or(0));
            let elapsed = started.elapsed();
            if due > elapsed {
                sink(None)?;
                last_flush = Instant::now();
                let wait = due - elapsed;
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                if cancel.is_cancelled() {
                    break;
                }
            }
        }
        sink(Some(&rec))?;
        n += 1;
        if last_flush.elapsed() >= Duration::from_millis(50) {
            sink(None)?;
            last_flush = Instant::now();
        }
    }
    sink(None)?;
    Ok(n)
}

/// `kappa produce`.
///
/// # Errors
/// Bad arguments, an unreadable input, or a log failure.
pub fn produce(cfg: &Config, args: &ProduceArgs) -> anyhow::Result<()> {
    let cfg = &cfg.for_stream(args.stream);
    if args.stream == crate::stream::Stream::Products {
        return produce_products(cfg, args);
    }
    let cancel = CancellationToken::new();
    {
        let c = cancel.clone();
        let _ = ctrlc_hook(move || c.cancel());
    }
    if let Some(input) = &args.input {
        return produce_input(cfg, args, input, &cancel);
    }
    let gen_cfg = args.gen_config(cfg)?;
    if args.rate == 0.0 && args.events.is_none() && args.duration.is_none() {
        anyhow::bail!("with --rate 0 (as fast as possible) give --events N or --duration D");
    }
    let mut next: Box<dyn FnMut(&mut GenRecord)> = match args.stream {
        crate::stream::Stream::Events => {
            let mut generator = Generator::new(gen_cfg);
            Box::new(move |r| generator.next_into(r))
        }
        crate::stream::Stream::Products => unreachable!("produce_products"),
        crate::stream::Stream::Clicks => anyhow::bail!(
            "--stream clicks: clicks are not generated; append them from a JSON-lines file with --input FILE"
        ),
        crate::stream::Stream::Reviews => {
            let mut reviews = crate::generator::reviews::ReviewRecords::new(
                crate::generator::reviews::ReviewConfig {
                    seed: gen_cfg.seed,
                    start_ms: gen_cfg.start_ms,
                    per_second: gen_cfg.base_rate,
                    products: gen_cfg.products,
                    users: gen_cfg.users,
                },
                args.duplicate_share,
                args.malformed_share,
            );
            Box::new(move |r| reviews.next_into(r))
        }
    };
    let started = Instant::now();
    let paced = args.rate > 0.0;
    let mut sink = output_sink(cfg, args)?;
    let what = match args.stream {
        crate::stream::Stream::Events => "events",
        crate::stream::Stream::Reviews => "reviews",
        crate::stream::Stream::Products => "catalogue entries",
        crate::stream::Stream::Clicks => "clicks",
    };
    let mut last_report = Instant::now();
    let mut count = 0u64;
    let n = generate(
        &mut *next,
        args.events,
        args.duration,
        paced,
        &cancel,
        &mut |rec| {
            let Some(rec) = rec else {
                sink.flush()?;
                return Ok(());
            };
            sink.append(&rec.key, &rec.value, now_ms())?;
            count += 1;
            if count.is_multiple_of(65_536) && last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!("produced {count} {what}");
                last_report = Instant::now();
            }
            Ok(())
        },
    )?;
    sink.finish()?;
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs.max(1e-9);
    eprintln!("produced {n} {what} in {secs:.2} s ({rate:.0} {what}/s)");
    Ok(())
}

/// `kappa produce --stream products`: the catalogue entries of a CSV (`--input x.csv`, the
/// header `products::CSV_HEADER` in any order), of JSON lines of `product/1` records
/// (`--input`), or of the generator's catalogue for `--seed` and `--products` (valid from
/// `--start`, about one product in ten repriced later that day). Each record is keyed
/// `product_id@valid_from`, the key a compacted topic keeps one record of.
fn produce_products(cfg: &Config, args: &ProduceArgs) -> anyhow::Result<()> {
    let currency = cfg.pipeline.currency;
    let started = Instant::now();
    let entries = match &args.input {
        Some(path)
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            crate::products::from_csv(std::io::BufReader::new(f), currency)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    crate::products::decode(l.as_bytes(), currency)
                        .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        None => {
            // A catalogue is valid from a fixed point by default (an hour before the
            // generator's first event time), not from now: events of any batch find
            // their entries, and its repricings fall among them.
            let start_ms = if args.start == "auto" {
                crate::event::time::parse_rfc3339_ms(CATALOGUE_START).expect("a valid constant")
            } else {
                args.gen_config(cfg)?.start_ms
            };
            let mut csv = Vec::new();
            crate::generator::products::products_csv(args.seed, args.products, start_ms, &mut csv)?;
            crate::products::from_csv(csv.as_slice(), currency).map_err(anyhow::Error::msg)?
        }
    };
    let mut sink = output_sink(cfg, args)?;
    for e in &entries {
        sink.append(e.key().as_bytes(), &e.to_json(), now_ms())?;
    }
    sink.finish()?;
    eprintln!(
        "produced {} catalogue entries in {:.2} s",
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Extracts `user_id` for the record key without a full decode (malformed lines get an
/// empty key and still go through, to be dead-lettered by the pipeline).
fn user_id_of(line: &[u8]) -> &[u8] {
    #[derive(serde::Deserialize)]
    struct K<'a> {
        #[serde(borrow)]
        user_id: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(K { user_id: Some(raw) }) = serde_json::from_slice::<K<'_>>(line) else {
        return b"";
    };
    // A string's text (as written: the shop's ids have no escapes), or a number's (the
    // clicks of Flink's example have `"user_id":101`): borrowed from `line`.
    let text = raw.get();
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner,
        Some(_) => return b"",
        None if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => text,
        None => return b"",
    };
    let start = text.as_ptr() as usize - line.as_ptr() as usize;
    &line[start..start + text.len()]
}

/// Where an import stopped, for the one error line that says what is in the log.
struct Import<'a> {
    /// The input, printable.
    name: &'a str,
    /// Lines known to be in the log (all lines appended before the last good flush).
    appended: u64,
    /// `(line number, position)` of every line appended since the last good flush.
    unflushed: Vec<(u64, Option<(u32, u64)>)>,
}

impl Import<'_> {
    /// A good flush: every line appended so far is in the log.
    fn flushed(&mut self) {
        self.appended += self.unflushed.len() as u64;
        self.unflushed.clear();
    }

    /// The error of a failed append (of line `failed`) or flush: the cause, how many lines
    /// are in the log and the line to resume from — exactly, from the log's written ends.
    fn stopped(
        &self,
        cause: &SinkError,
        failed: Option<u64>,
        ends: Option<Vec<u64>>,
    ) -> anyhow::Error {
        let name = self.name;
        let Some(ends) = ends else {
            let resume = self.unflushed.first().map(|l| l.0).or(failed).unwrap_or(1);
            return anyhow::anyhow!(
                "{cause}; {name}: {} lines appended for sure, resume from line {resume} \
                 (`tail -n +{resume}`; lines after it may be in already)",
                self.appended
            );
        };
        let in_log = |pos: Option<(u32, u64)>| {
            pos.is_some_and(|(p, o)| ends.get(p as usize).is_some_and(|&end| o < end))
        };
        let written: Vec<u64> = self
            .unflushed
            .iter()
            .filter(|l| in_log(l.1))
            .map(|l| l.0)
            .collect();
        let resume = self
            .unflushed
            .iter()
            .filter(|l| !in_log(l.1))
            .map(|l| l.0)
            .chain(failed)
            .min();
        let appended = self.appended + written.len() as u64;
        let Some(resume) = resume else {
            return anyhow::anyhow!("{cause}; {name}: all {appended} lines read were appended");
        };
        let later = written.iter().filter(|&&l| l > resume).count();
        let later = if later == 0 {
            String::new()
        } else {
            format!(
                "; {later} later lines are in the log already (other partitions), and come \
                 again as duplicates, which the pipeline counts once"
            )
        };
        anyhow::anyhow!(
            "{cause}; {name}: {appended} lines appended, resume from line {resume} \
             (`tail -n +{resume}`){later}"
        )
    }
}

fn produce_input(
    cfg: &Config,
    args: &ProduceArgs,
    input: &PathBuf,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let name = super::text::printable(&input.display().to_string()).into_owned();
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(input).with_context(|| format!("cannot read {name}"))?,
        ))
    };
    let mut writer = open_sink(cfg, args.partitions.is_some(), Arc::new(Metrics::new()))?;
    let started = Instant::now();
    let mut n = 0u64;
    let mut line_no = 0u64;
    let mut skipped = 0u64;
    let mut unflushed_bytes = 0usize;
    let mut import = Import {
        name: &name,
        appended: 0,
        unflushed: Vec::new(),
    };
    let mut reader = reader;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {name} after line {line_no}"))?
            == 0
        {
            break;
        }
        line_no += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            skipped += 1;
            continue;
        }
        let key = user_id_of(&line).to_vec();
        // A line the log cannot hold is appended cut, still larger than any configuration
        // accepts (`pipeline.max-record-bytes` ≤ MAX_RECORD_LIMIT): the pipeline dead-letters
        // it (`oversize`) at its position like any invalid record, with its first 4 KiB.
        let value = if key.len() + line.len() > crate::log::MAX_RECORD_BYTES {
            eprintln!(
                "line {line_no} of {name}: {} bytes, more than a log record holds ({}): \
                 appended cut to {} bytes, to be dead-lettered (oversize)",
                line.len(),
                crate::log::MAX_RECORD_BYTES,
                crate::config::MAX_RECORD_LIMIT + 1
            );
            &line[..=crate::config::MAX_RECORD_LIMIT]
        } else {
            &line[..]
        };
        match writer.append(&key, value, now_ms()) {
            Ok(pos) => import.unflushed.push((line_no, pos)),
            Err(e) => return Err(import.stopped(&e, Some(line_no), writer.abandon())),
        }
        n += 1;
        unflushed_bytes += value.len();
        // Written every 1 MiB (or 65536 lines): a failed write leaves at most that much
        // of the input in doubt, in line order.
        if unflushed_bytes >= 1 << 20 || import.unflushed.len() >= 65_536 {
            if let Err(e) = writer.flush() {
                return Err(import.stopped(&e, None, writer.abandon()));
            }
            import.flushed();
            unflushed_bytes = 0;
            if cancel.is_cancelled() {
                break;
            }
        }
        if args.events.is_some_and(|e| n >= e) {
            break;
        }
    }
    if let Err(e) = writer.finish() {
        return Err(import.stopped(&e, None, writer.abandon()));
    }
    eprintln!(
        "appended {n} records from {name} in {:.2} s ({skipped} blank lines skipped)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs a Ctrl-C and SIGTERM (`docker stop`) handler without a runtime (the producer
/// is synchronous): the first stops producing gracefully (flushed, summary printed), a
/// second Ctrl-C exits at once.
pub(super) fn ctrlc_hook(f: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let terminated = async {
                    match term.as_mut() {
                        Some(t) => t.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let stop = tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    _ = terminated => true,
                };
                if stop {
                    f();
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                }
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::user_id_of;

    #[test]
    fn the_key_is_the_user_id_as_a_string_or_a_number() {
        assert_eq!(user_id_of(br#"{"user_id":"u_7","x":1}"#), b"u_7");
        // Flink's example clicks: a number (all of them went to one partition before).
        assert_eq!(user_id_of(br#"{"user_id":101,"page":"/"}"#), b"101");
        assert_eq!(user_id_of(br#"{"user_id":-3.5}"#), b"-3.5");
        for none in [
            &br#"{"user_id":null}"#[..],
            br#"{"user_id":{"a":1}}"#,
            br#"{"user_id":"a\"b"}"#,
            br#"{"page":"/"}"#,
            b"not json",
        ] {
            assert_eq!(user_id_of(none), b"", "{}", String::from_utf8_lossy(none));
        }
    }
}
