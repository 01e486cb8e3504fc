//! `kappa run` and `kappa demo`: the pipeline thread, the HTTP server and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{DemoArgs, LogFormat, RunArgs};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Summary};
use crate::scale::Role;
use crate::server::{Ended, Options, Server, bind};

/// Peak resident set size of this process, from `/proc/self/status` (Linux).
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The first Ctrl-C or SIGTERM (`docker stop`, systemd) cancels `cancel` (graceful: commit
/// and exit 0); a second Ctrl-C exits at once.
fn on_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return; },
            () = terminated => {}
        }
        eprintln!("stopping: committing what was processed (Ctrl-C again to exit at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

/// Binds `http.listen` and starts the process's server in its role.
async fn start(
    cfg: &Config,
    opts: Options,
    cancel: &CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Server> {
    crate::server::check_role(cfg, opts)?;
    let listener = bind(cfg.http.listen).await?;
    Server::start(cfg, opts, listener, cancel, metrics).await
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Says on stderr where the server listens (scripts and the tests read it): a plain line,
/// or with `--log-format json` a JSON object like every other line there.
fn announce(addr: std::net::SocketAddr, log_format: LogFormat) {
    match log_format {
        LogFormat::Human => eprintln!("listening on http://{addr}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({ "level": "INFO", "fields": { "message": format!("listening on http://{addr}"), "listening": format!("http://{addr}") }, "target": "kappa" })
        ),
    }
}

/// `kappa run`, in every role.
///
/// # Errors
/// Start-up failure or a pipeline failure.
pub fn run(cfg: &Config, args: &RunArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let mode = if args.until_caught_up {
        Mode::UntilCaughtUp {
            drain: args.drain,
            until_final: None,
        }
    } else {
        Mode::Live
    };
    let opts = Options {
        role: args.role,
        mode,
        create: args.create,
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        on_ctrl_c(cancel.clone());
        let s = start(cfg, opts, &cancel, Arc::new(Metrics::new())).await?;
        let name = match args.role {
            Role::All => "",
            Role::Worker => " worker",
            Role::Merger => " merger",
        };
        tracing::info!(
            "kappa{name} serving on http://{} (metrics at /metrics, API at /api/…)",
            s.addr
        );
        announce(s.addr, log_format);
        match s.finish().await? {
            Ended::Pipeline(summary) => {
                if args.until_caught_up {
                    print_summary(&summary);
                }
            }
            Ended::Worker(s) => eprintln!(
                "worker stopped: {} records read, {} partials published in {:.1} s",
                s.records,
                s.partials,
                s.elapsed.as_secs_f64()
            ),
            Ended::Merger(s) => eprintln!(
                "merger stopped: {} messages ({} partials, {} keys) merged into {} final windows in {:.1} s ({:.3} s busy)",
                s.messages,
                s.partials,
                s.keys,
                s.windows,
                s.elapsed.as_secs_f64(),
                s.busy.as_secs_f64()
            ),
        }
        Ok(())
    })
}

fn print_summary(s: &Summary) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let rate = s.records as f64 / secs;
    #[allow(clippy::cast_precision_loss)]
    let mb = s.bytes as f64 / 1e6;
    let rss =
        peak_rss_bytes().map_or_else(|| "unknown".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
    println!(
        "processed {} records ({mb:.1} MB) in {secs:.3} s: {rate:.0} events/s, {:.1} MB/s; {} windows final; peak RSS {rss}",
        s.records,
        mb / secs,
        s.windows
    );
    println!(
        "new records: {} accepted, {} late, {} duplicates, {} invalid",
        s.accepted, s.late, s.duplicates, s.invalid
    );
    for (stream, r) in s.streams.iter().filter(|(_, r)| r.read > 0) {
        println!(
            "{stream}: {} read, {} accepted, {} late, {} duplicates, {} invalid",
            r.read - r.rebuilt,
            r.accepted,
            r.late,
            r.duplicates,
            r.invalid.iter().sum::<u64>()
        );
    }
}

/// The demo's reviews: at a hundredth of the events' `rate` (at least one a second), into
/// their own log, paced like the events.
fn spawn_reviews(
    cfg: &Config,
    events: &crate::generator::GenConfig,
    rate: f64,
    cancel: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<u64>>> {
    let mut reviews = crate::generator::reviews::ReviewRecords::new(
        crate::generator::reviews::ReviewConfig {
            seed: events.seed,
            start_ms: events.start_ms,
            per_second: (rate / 100.0).max(1.0),
            products: events.products,
            users: events.users,
        },
        0.01,
        0.002,
    );
    super::produce::spawn_paced_records(
        &cfg.for_stream(crate::stream::Stream::Reviews),
        "review-producer",
        Box::new(move |r| reviews.next_into(r)),
        cancel,
        // Not in `kappa_produced_records_total`, which the demo's lines show as events.
        Arc::new(Metrics::new()),
    )
}

/// The generator's catalogue for `seed` into the products stream of `cfg` (the demo's).
fn write_catalogue(cfg: &Config, seed: u64, products: u32, from_ms: i64) -> anyhow::Result<()> {
    let mut csv = Vec::new();
    crate::generator::products::products_csv(seed, products, from_ms, &mut csv)?;
    let entries = crate::products::from_csv(csv.as_slice(), cfg.pipeline.currency)
        .map_err(anyhow::Error::msg)?;
    let cfg = cfg.for_stream(crate::stream::Stream::Products);
    let mut sink = super::produce::open_sink(&cfg, false, Arc::new(Metrics::new()))?;
    let now = chrono::Utc::now().timestamp_millis();
    for e in &entries {
        sink.append(e.key().as_bytes(), &e.to_json(), now)?;
    }
    sink.finish()?;
    Ok(())
}

/// `kappa demo`: a paced generator and the pipeline in one process.
///
/// # Errors
/// Start-up failure or a pipeline failure.
pub fn demo(cfg: &Config, args: &DemoArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        anyhow::bail!(
            "--rate must be between 1 and 1000000 events/s for the demo, got {}",
            args.rate
        );
    }
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        on_ctrl_c(cancel.clone());
        if let Some(d) = args.duration {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                c.cancel();
            });
        }
        let metrics = Arc::new(Metrics::new());
        // The producer holds the log's writer lock: start it before the pipeline opens the log.
        let gen_cfg = crate::generator::GenConfig {
            seed: args.seed,
            start_ms: chrono::Utc::now().timestamp_millis(),
            base_rate: args.rate,
            late_share: 0.005,
            duplicate_share: 0.01,
            malformed_share: 0.002,
            session_doc_share: 0.01,
            ..crate::generator::GenConfig::default()
        };
        // The catalogue the session documents' purchases are completed from, valid from
        // an hour ago (its repricings fall in the next day).
        write_catalogue(cfg, args.seed, gen_cfg.products, gen_cfg.start_ms - 3_600_000)?;
        let review_producer = spawn_reviews(cfg, &gen_cfg, args.rate, cancel.clone())?;
        let producer = super::produce::spawn_paced(cfg, gen_cfg, cancel.clone(), metrics.clone())?;
        let opts = Options {
            role: Role::All,
            mode: Mode::Live,
            create: true,
        };
        let r = start(cfg, opts, &cancel, metrics).await?;
        let base = format!("http://{}", r.addr);
        println!(
            "kappa demo: producing about {} events/s into {} and {} reviews/s into {}, and processing them live",
            args.rate,
            cfg.log_dir().display(),
            (args.rate / 100.0).max(1.0),
            cfg.for_stream(crate::stream::Stream::Reviews).log_dir().display()
        );
        println!("  live page        {base}/");
        println!("  metrics          {base}/metrics");
        println!("  status           {base}/api/status");
        println!("  latest windows   {base}/api/latest");
        println!("  top products     {base}/api/top-products?size=1m&window=latest");
        println!("  open windows     {base}/api/provisional?size=1m");
        println!("  sales by category {base}/api/windows?aggregate=sales_by_category&size=1m");
        println!("  review ratings   {base}/api/windows?aggregate=rating_histogram&size=1m");
        let stop = args.duration.map_or_else(
            || "Ctrl-C to stop".to_string(),
            |d| format!("stops after {} (Ctrl-C stops it earlier)", crate::config::fmt_duration(d)),
        );
        println!("1-minute windows become final about {} after they end (the lateness bound). {stop}.", crate::config::fmt_duration(cfg.pipeline.max_delay));
        let shared = r.shared.clone();
        let printer_cancel = cancel.clone();
        let m = r.metrics.clone();
        let printer = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    () = printer_cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                let s = shared.status();
                let wm = s.watermark_ms.map_or_else(|| "-".into(), crate::event::time::format_rfc3339_ms);
                println!(
                    "[{:>4}s] produced {} · read {} · accepted {} · late {} · duplicates {} · invalid {} · windows final {} · watermark {wm} · reviews accepted {}",
                    started.elapsed().as_secs(),
                    m.produced_records.with_label_values(&["embedded"]).get(),
                    s.records,
                    s.accepted,
                    s.late,
                    s.duplicates,
                    s.invalid,
                    s.windows_finalised,
                    m.stream_records.with_label_values(&["reviews", "accepted"]).get(),
                );
            }
        });
        let result = r.finish().await;
        cancel.cancel();
        let _ = printer.await;
        let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
        let reviewed = review_producer.join().map_err(|_| anyhow::anyhow!("the review producer thread panicked"))??;
        println!("demo stopped: {produced} events and {reviewed} reviews produced; results stay in {}", cfg.store_path().display());
        result.map(|_| ())
    })
}
