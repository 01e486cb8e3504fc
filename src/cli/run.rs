//! `kappa run` and `kappa demo`: the pipeline thread, the HTTP server and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{DemoArgs, LogFormat, RunArgs};
use crate::config::Config;
use crate::http::{AppState, serve};
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline, Shared, Summary};
use crate::store::Store;

/// Peak resident set size of this process, from `/proc/self/status` (Linux).
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Everything a running pipeline needs, started: store, source, HTTP listener.
struct Running {
    shared: Arc<Shared>,
    control: Arc<crate::control::Control>,
    pipeline: std::thread::JoinHandle<anyhow::Result<Summary>>,
    http: tokio::task::JoinHandle<()>,
    http_stop: CancellationToken,
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    /// `--until-caught-up`: the version pipelines end by themselves, and are waited for.
    bounded: bool,
}

/// Opens the store and source, binds the HTTP listener and starts the pipeline thread.
async fn start(
    cfg: &Config,
    mode: Mode,
    create: bool,
    cancel: &CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Running> {
    if !cfg.http.listen.ip().is_loopback() && cfg.http.token.is_empty() {
        anyhow::bail!(
            "http.listen {} is not a loopback address: set http.token (KAPPA_HTTP__TOKEN) so that replays, cancel, promote and drop need it",
            cfg.http.listen
        );
    }
    let store = Store::open(&cfg.store_path())?;
    crate::control::recover_interrupted(&store)?;
    let (cfg, version) = main_version(cfg, &store, create)?;
    let cfg = &cfg;
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (http.listen / --listen)",
                cfg.http.listen
            )
        })?;
    let addr = listener.local_addr()?;
    // For the CLI's control commands (`kappa replay`, `versions`) to find this server.
    let _ = std::fs::write(
        cfg.data_dir.join(super::client::SERVER_FILE),
        format!("http://{addr}\n"),
    );
    // The embedded log opens at once (its errors end the start-up); Kafka connects on the
    // pipeline thread, retrying, while the HTTP server already answers /readyz with 503.
    let assignment = if matches!(mode, Mode::UntilCaughtUp { .. }) {
        crate::source::Assignment::Explicit
    } else {
        crate::source::Assignment::Group
    };
    let embedded = if cfg.kafka.brokers.is_empty() {
        let source = crate::source::open(
            cfg,
            Arc::new(store.clone()),
            &version,
            assignment,
            metrics.clone(),
            &|| false,
        )
        .with_context(|| format!("opening the log in {}", cfg.log_dir().display()))?;
        Some(Pipeline::new(
            cfg,
            &version,
            source,
            store.clone(),
            metrics.clone(),
            shared.clone(),
        )?)
    } else {
        shared.status.lock().expect("status lock").state = crate::pipeline::State::Connecting;
        None
    };
    let control =
        crate::control::Control::new(cfg.clone(), store.clone(), metrics.clone(), version.clone());
    // Every version this process computes runs in the same mode: a bounded run brings
    // each to the log end (and drains each with --drain), not only the main one.
    control.resume_versions(mode, cancel)?;
    let http_stop = CancellationToken::new();
    let st = AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        shared: shared.clone(),
        control: Some(control.clone()),
        token: cfg.http.token.clone(),
    };
    let stop = http_stop.clone();
    let http = tokio::spawn(serve(listener, st, cfg.http.clone(), async move {
        stop.cancelled().await
    }));
    let token = cancel.clone();
    let (cfg2, metrics2, shared2) = (cfg.clone(), metrics.clone(), shared.clone());
    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let pipeline = match embedded {
                Some(p) => p,
                None => {
                    let source = match crate::source::open(
                        &cfg2,
                        Arc::new(store.clone()),
                        &version,
                        assignment,
                        metrics2.clone(),
                        &|| token.is_cancelled(),
                    ) {
                        // Ctrl-C or SIGTERM while the brokers are awaited: a graceful stop.
                        Err(crate::source::SourceError::Cancelled) => {
                            return Ok(Summary::default());
                        }
                        other => other?,
                    };
                    Pipeline::new(&cfg2, &version, source, store, metrics2, shared2)?
                }
            };
            pipeline.run(mode, &token).map_err(anyhow::Error::from)
        })?;
    Ok(Running {
        shared,
        control,
        pipeline,
        http,
        http_stop,
        addr,
        metrics,
        bounded: assignment == crate::source::Assignment::Explicit,
    })
}

/// The version the main pipeline computes and the configuration it computes it with:
/// `pipeline.version` when set (its configuration must then match the stored one), else
/// the serving version with the configuration it was created with.
fn main_version(cfg: &Config, store: &Store, create: bool) -> anyhow::Result<(Config, String)> {
    let named = &cfg.pipeline.version;
    if !named.is_empty() {
        let versions: Vec<String> = store
            .versions()?
            .into_iter()
            .map(|v| v.name)
            .filter(|n| !n.starts_with(crate::replay::SCRATCH_PREFIX))
            .collect();
        // A new name on a store that has versions is a typo until said otherwise.
        if !create && !versions.is_empty() && !versions.contains(named) {
            anyhow::bail!(
                "no output version {named} (the store has {}): `kappa run --version {named} --create` computes a new one from the log's beginning",
                versions.join(", ")
            );
        }
        return Ok((cfg.clone(), named.clone()));
    }
    let serving = store.serving()?;
    match store.version(&serving)? {
        Some(info) => {
            let stored = cfg.with_fingerprint(&info.config)?;
            // Only a configuration someone gave (file, environment, flags) is worth a
            // warning; the built-in defaults are not a request.
            let given = cfg.results_fingerprint();
            let defaults = Config::default().results_fingerprint();
            if stored.results_fingerprint() != given && given != defaults {
                tracing::warn!(
                    "serving version {serving} keeps the configuration it was created with ({}); the one given ({}) applies to new versions: `kappa replay --from earliest --version NEW --config FILE`",
                    info.config,
                    cfg.results_fingerprint()
                );
            }
            Ok((stored, serving))
        }
        None => Ok((cfg.clone(), serving)),
    }
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

/// Waits for the pipeline thread, then stops the HTTP server.
async fn finish(r: Running, data_dir: &std::path::Path) -> anyhow::Result<Summary> {
    let data_dir = data_dir.to_path_buf();
    let Running {
        pipeline,
        http,
        http_stop,
        control,
        bounded,
        ..
    } = r;
    let summary = tokio::task::spawn_blocking(move || pipeline.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    tokio::task::spawn_blocking(move || {
        if bounded {
            control.join_versions();
        }
        control.stop();
    })
    .await?;
    let _ = std::fs::remove_file(data_dir.join(super::client::SERVER_FILE));
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    summary
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

/// `kappa run`.
///
/// # Errors
/// Start-up failure or a pipeline failure.
pub fn run(cfg: &Config, args: &RunArgs, log_format: LogFormat) -> anyhow::Result<()> {
    if args.role != crate::scale::Role::All {
        return run_role(cfg, args, log_format);
    }
    let mode = if args.until_caught_up {
        Mode::UntilCaughtUp {
            drain: args.drain,
            until_final: None,
        }
    } else {
        Mode::Live
    };
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        on_ctrl_c(cancel.clone());
        let r = start(cfg, mode, args.create, &cancel, Arc::new(Metrics::new())).await?;
        tracing::info!(
            "kappa serving on http://{} (metrics at /metrics, API at /api/…)",
            r.addr
        );
        announce(r.addr, log_format);
        let summary = finish(r, &cfg.data_dir).await?;
        if args.until_caught_up {
            print_summary(&summary);
        }
        Ok(())
    })
}

/// `kappa run --role worker|merger`.
fn run_role(cfg: &Config, args: &RunArgs, log_format: LogFormat) -> anyhow::Result<()> {
    use crate::scale::{Role, merger, worker};
    let role = args.role;
    let name = if role == Role::Worker {
        "worker"
    } else {
        "merger"
    };
    if cfg.kafka.brokers.is_empty() {
        anyhow::bail!(
            "--role {name} needs Kafka: set kafka.brokers (--kafka HOST:PORT or KAPPA_KAFKA__BROKERS)"
        );
    }
    if args.until_caught_up {
        anyhow::bail!("--until-caught-up is for --role all; workers and a merger run live");
    }
    if !cfg.http.listen.ip().is_loopback() && cfg.http.token.is_empty() {
        anyhow::bail!(
            "http.listen {} is not a loopback address: set http.token (KAPPA_HTTP__TOKEN)",
            cfg.http.listen
        );
    }
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        on_ctrl_c(cancel.clone());
        let metrics = Arc::new(Metrics::new());
        // A worker's store holds no results (they live at the merger); it backs /api/status.
        let store = Store::open(&cfg.store_path())?;
        if role == Role::Merger {
            // An in-place correction a previous merger left unfinished is rolled back: the
            // workers stop its scratch version, which is dropped; its record is marked.
            for v in store.versions()? {
                if v.name.starts_with(crate::replay::SCRATCH_PREFIX) {
                    let stop = crate::scale::VersionOrder {
                        version: v.name.clone(),
                        active: false,
                        config: v.config.clone(),
                        starts: Vec::new(),
                        ends: Vec::new(),
                        incarnation: v.created_ms,
                    };
                    crate::scale::publish_order(&cfg.kafka, &stop, metrics.clone())?;
                }
            }
            crate::control::recover_interrupted(&store)?;
        }
        let (cfg, version) = if role == Role::Merger {
            main_version(cfg, &store, args.create)?
        } else {
            let v = if cfg.pipeline.version.is_empty() { "v1".to_string() } else { cfg.pipeline.version.clone() };
            (cfg.clone(), v)
        };
        let shared = Arc::new(Shared::default());
        {
            let mut st = shared.status.lock().expect("status lock");
            st.state = crate::pipeline::State::Connecting;
            st.version.clone_from(&version);
            st.source = format!("kafka ({name})");
        }
        let listener = tokio::net::TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen / --listen)", cfg.http.listen))?;
        let addr = listener.local_addr()?;
        if role == Role::Merger {
            // The CLI's read and control commands on this data directory come here.
            let _ = std::fs::write(
                cfg.data_dir.join(super::client::SERVER_FILE),
                format!("http://{addr}\n"),
            );
        }
        let http_stop = CancellationToken::new();
        // A merger's replays are computed by the workers (told through the control topic).
        let positions = crate::scale::Positions::default();
        let control = (role == Role::Merger).then(|| {
            crate::control::Control::new_remote(
                cfg.clone(),
                store.clone(),
                metrics.clone(),
                version.clone(),
                positions.clone(),
            )
        });
        let st = AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            shared: shared.clone(),
            control: control.clone(),
            token: cfg.http.token.clone(),
        };
        let stop = http_stop.clone();
        let http = tokio::spawn(serve(listener, st, cfg.http.clone(), async move {
        stop.cancelled().await
    }));
        tracing::info!("kappa {name} serving on http://{addr} (metrics at /metrics)");
        announce(addr, log_format);
        let token = cancel.clone();
        let cfg_dir = cfg.data_dir.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || -> anyhow::Result<String> {
            if role == Role::Worker {
                let s = worker::supervise(&cfg, &version, metrics, shared, &token)?;
                Ok(format!("worker stopped: {} records read, {} partials published in {:.1} s", s.records, s.partials, s.elapsed.as_secs_f64()))
            } else {
                let s = merger::run(&cfg, &version, store, metrics, shared, &positions, &token)?;
                Ok(format!(
                    "merger stopped: {} messages ({} partials, {} keys) merged into {} final windows in {:.1} s ({:.3} s busy)",
                    s.messages, s.partials, s.keys, s.windows, s.elapsed.as_secs_f64(), s.busy.as_secs_f64()
                ))
            }
        })?;
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?;
        if let Some(c) = control {
            tokio::task::spawn_blocking(move || c.stop()).await?;
        }
        if role == Role::Merger {
            let _ = std::fs::remove_file(cfg_dir.join(super::client::SERVER_FILE));
        }
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        eprintln!("{}", result?);
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
            ..crate::generator::GenConfig::default()
        };
        let producer = super::produce::spawn_paced(cfg, gen_cfg, cancel.clone(), metrics.clone())?;
        let r = start(cfg, Mode::Live, true, &cancel, metrics).await?;
        let base = format!("http://{}", r.addr);
        println!("kappa demo: producing about {} events/s into {} and processing them live", args.rate, cfg.log_dir().display());
        println!("  live page        {base}/");
        println!("  metrics          {base}/metrics");
        println!("  status           {base}/api/status");
        println!("  latest windows   {base}/api/latest");
        println!("  top products     {base}/api/top-products?size=1m&window=latest");
        println!("  open windows     {base}/api/provisional?size=1m");
        println!("  sales by category {base}/api/windows?aggregate=sales_by_category&size=1m");
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
                    "[{:>4}s] produced {} · read {} · accepted {} · late {} · duplicates {} · invalid {} · windows final {} · watermark {wm}",
                    started.elapsed().as_secs(),
                    m.produced_records.with_label_values(&["embedded"]).get(),
                    s.records,
                    s.accepted,
                    s.late,
                    s.duplicates,
                    s.invalid,
                    s.windows_finalised
                );
            }
        });
        let result = finish(r, &cfg.data_dir).await;
        cancel.cancel();
        let _ = printer.await;
        let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
        println!("demo stopped: {produced} events produced; results stay in {}", cfg.store_path().display());
        result.map(|_| ())
    })
}
