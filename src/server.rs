//! One kappa process, started and stopped as a whole: its role's thread (the pipeline, a
//! worker or the merger), the registry of its replays and the HTTP API, sharing one store,
//! one metrics registry and one status.
//!
//! `kappa run` (every role) and `kappa demo` start it on the listener they bind; the tests
//! start it in-process on port 0. Stopping is by the `shutdown` token: the role's thread
//! commits what it processed and ends, then the replays stop, then the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::Control;
use crate::http::{AppState, serve};
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline, Shared, State, Summary};
use crate::scale::merger::MergerSummary;
use crate::scale::worker::WorkerSummary;
use crate::scale::{Role, merger, worker};
use crate::source::{Assignment, SourceError};
use crate::store::Store;

/// The file in the data directory that names the address of the server computing it, for
/// the CLI's read and control commands (`kappa replay`, `versions`, `query`).
pub const SERVER_FILE: &str = "kappa.server";

/// How a process computes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `--role`.
    pub role: Role,
    /// Live, or until caught up (`--role all` only).
    pub mode: Mode,
    /// `--create`: a `pipeline.version` the store does not have yet may be created.
    pub create: bool,
}

/// What the role's thread reported when it ended.
#[derive(Debug)]
pub enum Ended {
    /// `--role all`.
    Pipeline(Summary),
    /// `--role worker`.
    Worker(WorkerSummary),
    /// `--role merger`.
    Merger(MergerSummary),
}

/// A started process.
pub struct Server {
    /// Where the HTTP API listens.
    pub addr: std::net::SocketAddr,
    /// Status and provisional windows of the role's thread.
    pub shared: Arc<Shared>,
    /// The metrics it exports.
    pub metrics: Arc<Metrics>,
    /// Its replays (none for a worker: a worker computes what the merger orders).
    pub control: Option<Arc<Control>>,
    thread: std::thread::JoinHandle<anyhow::Result<Ended>>,
    http: tokio::task::JoinHandle<()>,
    http_stop: CancellationToken,
    data_dir: std::path::PathBuf,
    /// `--until-caught-up`: the versions' pipelines end by themselves and are waited for.
    bounded: bool,
    role: Role,
}

/// Binds `listen` (`http.listen`, `--listen`), with an error that names the setting.
///
/// # Errors
/// The address is taken or cannot be bound.
pub async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen / --listen)"))
}

/// Refuses a server reachable from other machines without a token for its
/// state-changing endpoints.
///
/// # Errors
/// `http.listen` is not a loopback address and `http.token` is empty.
pub fn check_exposure(cfg: &Config) -> anyhow::Result<()> {
    if !cfg.http.listen.ip().is_loopback() && cfg.http.token.is_empty() {
        anyhow::bail!(
            "http.listen {} is not a loopback address: set http.token (KAPPA_HTTP__TOKEN) so that its state-changing endpoints (replays, cancel, promote, drop) need it",
            cfg.http.listen
        );
    }
    Ok(())
}

impl Server {
    /// Opens the store, starts the role's thread and serves the HTTP API on `listener`
    /// until `shutdown` is cancelled and the thread has ended (see [`Server::finish`]).
    ///
    /// # Errors
    /// A role that needs Kafka without brokers, a bounded worker or merger, the store, the
    /// embedded log (Kafka is connected to on the role's thread, retrying), or a
    /// `pipeline.version` the store does not have without `create`.
    pub async fn start(
        cfg: &Config,
        opts: Options,
        listener: tokio::net::TcpListener,
        shutdown: &CancellationToken,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        check_role(cfg, opts)?;
        let store = Store::open(&cfg.store_path())?;
        if opts.role == Role::Merger {
            merger::roll_back_unfinished(cfg, &store, &metrics)?;
        }
        if opts.role != Role::Worker {
            crate::control::recover_interrupted(&store)?;
        }
        let (cfg, version) = if opts.role == Role::Worker {
            let v = if cfg.pipeline.version.is_empty() {
                "v1".to_string()
            } else {
                cfg.pipeline.version.clone()
            };
            (cfg.clone(), v)
        } else {
            main_version(cfg, &store, opts.create)?
        };
        let shared = Arc::new(Shared::default());
        let addr = listener.local_addr()?;
        let ctx = Ctx {
            cfg,
            version,
            store: store.clone(),
            metrics: metrics.clone(),
            shared: shared.clone(),
            token: shutdown.clone(),
        };
        let (thread, control) = match opts.role {
            Role::All => ctx.all(opts.mode)?,
            Role::Worker => ctx.worker()?,
            Role::Merger => ctx.merger()?,
        };
        if opts.role != Role::Worker {
            // The CLI's read and control commands on this data directory come here.
            let _ = std::fs::write(
                ctx.cfg.data_dir.join(SERVER_FILE),
                format!("http://{addr}\n"),
            );
        }
        let http_stop = CancellationToken::new();
        let st = AppState {
            store,
            metrics: metrics.clone(),
            shared: shared.clone(),
            control: control.clone(),
            token: ctx.cfg.http.token.clone(),
        };
        let stop = http_stop.clone();
        let http = tokio::spawn(serve(listener, st, ctx.cfg.http.clone(), async move {
            stop.cancelled().await;
        }));
        Ok(Self {
            addr,
            shared,
            metrics,
            control,
            thread,
            http,
            http_stop,
            data_dir: ctx.cfg.data_dir.clone(),
            bounded: matches!(opts.mode, Mode::UntilCaughtUp { .. }),
            role: opts.role,
        })
    }

    /// Waits for the role's thread (it ends on `shutdown`, or by itself when bounded),
    /// then for the versions it computes when bounded, stops the replays and the HTTP
    /// server.
    ///
    /// # Errors
    /// What ended the role's thread, or its panic.
    pub async fn finish(self) -> anyhow::Result<Ended> {
        let Self {
            thread,
            http,
            http_stop,
            control,
            bounded,
            data_dir,
            role,
            ..
        } = self;
        let name = match role {
            Role::All => "pipeline",
            Role::Worker => "worker",
            Role::Merger => "merger",
        };
        let ended = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))?;
        if let Some(control) = control {
            tokio::task::spawn_blocking(move || {
                if bounded {
                    control.join_versions();
                }
                control.stop();
            })
            .await?;
        }
        if role != Role::Worker {
            let _ = std::fs::remove_file(data_dir.join(SERVER_FILE));
        }
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
        ended
    }
}

/// The combinations [`Server::start`] refuses, before anything is opened or bound (the
/// CLI asks before it binds `http.listen`).
///
/// # Errors
/// A worker or merger without Kafka or bounded; a server off loopback without a token.
pub fn check_role(cfg: &Config, opts: Options) -> anyhow::Result<()> {
    if opts.role != Role::All {
        let name = opts.role.as_str();
        if cfg.kafka.brokers.is_empty() {
            anyhow::bail!(
                "--role {name} needs Kafka: set kafka.brokers (--kafka HOST:PORT or KAPPA_KAFKA__BROKERS)"
            );
        }
        if matches!(opts.mode, Mode::UntilCaughtUp { .. }) {
            anyhow::bail!("--until-caught-up is for --role all; workers and a merger run live");
        }
    }
    check_exposure(cfg)
}

/// What the role's thread is started with.
#[derive(Clone)]
struct Ctx {
    cfg: Config,
    version: String,
    store: Store,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    token: CancellationToken,
}

type Started = (
    std::thread::JoinHandle<anyhow::Result<Ended>>,
    Option<Arc<Control>>,
);

impl Ctx {
    /// `--role all`: the pipeline of the main version, and every other version's through
    /// the control registry.
    fn all(&self, mode: Mode) -> anyhow::Result<Started> {
        let cfg = &self.cfg;
        let assignment = if matches!(mode, Mode::UntilCaughtUp { .. }) {
            Assignment::Explicit
        } else {
            Assignment::Group
        };
        // The embedded log opens at once (its errors end the start-up); Kafka connects on
        // the pipeline thread, retrying, while the HTTP server already answers /readyz
        // with 503.
        let embedded = if cfg.kafka.brokers.is_empty() {
            let source = crate::source::open(
                cfg,
                Arc::new(self.store.clone()),
                &self.version,
                assignment,
                self.metrics.clone(),
                &|| false,
            )
            .with_context(|| format!("opening the log in {}", cfg.log_dir().display()))?;
            Some(self.pipeline(source)?)
        } else {
            self.shared.status.lock().expect("status lock").state = State::Connecting;
            None
        };
        let control = Control::new(
            cfg.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.version.clone(),
        );
        // Every version this process computes runs in the same mode: a bounded run brings
        // each to the log end (and drains each with --drain), not only the main one.
        control.resume_versions(mode, &self.token)?;
        let ctx = self.clone();
        let thread = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let pipeline = match embedded {
                    Some(p) => p,
                    None => {
                        let source = match crate::source::open(
                            &ctx.cfg,
                            Arc::new(ctx.store.clone()),
                            &ctx.version,
                            assignment,
                            ctx.metrics.clone(),
                            &|| ctx.token.is_cancelled(),
                        ) {
                            // Ctrl-C or SIGTERM while the brokers are awaited: a graceful
                            // stop.
                            Err(SourceError::Cancelled) => {
                                return Ok(Ended::Pipeline(Summary::default()));
                            }
                            other => other?,
                        };
                        ctx.pipeline(source)?
                    }
                };
                Ok(Ended::Pipeline(pipeline.run(mode, &ctx.token)?))
            })?;
        Ok((thread, Some(control)))
    }

    fn pipeline(&self, source: Box<dyn crate::source::Source>) -> anyhow::Result<Pipeline> {
        Ok(Pipeline::new(
            &self.cfg,
            &self.version,
            source,
            self.store.clone(),
            self.metrics.clone(),
            self.shared.clone(),
        )?
        .with_streams(true)?)
    }

    /// A worker: its store holds no results (they live at the merger); it backs
    /// `/api/status`.
    fn worker(&self) -> anyhow::Result<Started> {
        self.mark_connecting("worker");
        let ctx = self.clone();
        let thread = std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || {
                let s =
                    worker::supervise(&ctx.cfg, &ctx.version, ctx.metrics, ctx.shared, &ctx.token)?;
                Ok(Ended::Worker(s))
            })?;
        Ok((thread, None))
    }

    /// The merger: its replays are computed by the workers, told through the control
    /// topic.
    fn merger(&self) -> anyhow::Result<Started> {
        self.mark_connecting("merger");
        let positions = crate::scale::Positions::default();
        let control = Control::new_remote(
            self.cfg.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.version.clone(),
            positions.clone(),
        );
        // Which workers read which partitions, for the metrics.
        let watch =
            crate::scale::group::watch(&self.cfg, self.metrics.clone(), self.token.clone())?;
        let ctx = self.clone();
        let thread = std::thread::Builder::new()
            .name("merger".into())
            .spawn(move || {
                let s = merger::run(
                    &ctx.cfg,
                    &ctx.version,
                    ctx.store,
                    ctx.metrics,
                    ctx.shared,
                    &positions,
                    &ctx.token,
                );
                // The watch ends with the token; a merger that failed ends it first.
                ctx.token.cancel();
                let _ = watch.join();
                Ok(Ended::Merger(s?))
            })?;
        Ok((thread, Some(control)))
    }

    fn mark_connecting(&self, name: &str) {
        let mut st = self.shared.status.lock().expect("status lock");
        st.state = State::Connecting;
        st.version.clone_from(&self.version);
        st.source = format!("kafka ({name})");
    }
}

/// The version the main pipeline computes and the configuration it computes it with:
/// `pipeline.version` when set (its configuration must then match the stored one), else
/// the serving version with the configuration it was created with.
pub(crate) fn main_version(
    cfg: &Config,
    store: &Store,
    create: bool,
) -> anyhow::Result<(Config, String)> {
    let named = &cfg.pipeline.version;
    if !named.is_empty() {
        crate::replay::plan::check_version_name(named)?;
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
