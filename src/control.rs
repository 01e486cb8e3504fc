//! The running server's control plane: replays started over HTTP and the pipelines of
//! output versions other than the one `kappa run` computes itself.
//!
//! Every version in the store advances while a server runs: the main pipeline computes
//! one (the serving version by default), and one more pipeline per other version keeps
//! it consuming live ("both versions advance until one is dropped"). A replay runs on its
//! own thread; a new version's replay thread goes on as that version's pipeline once it
//! has caught up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline, Shared};
use crate::replay::{self, Job, Plan, ReplayError, ReplayRequest, ReplayView, SCRATCH_PREFIX};
use crate::source::{self, Source, SourceError};
use crate::store::{Outcome, ReplayEnd, ReplayRecord, Store, StoreError, VersionState};

/// One output version as `kappa versions list` and `GET /api/versions` show it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// Name.
    pub name: String,
    /// Result-deciding configuration.
    pub config: String,
    /// The API and Grafana read it.
    pub serving: bool,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Every window ending at or before this is final (RFC 3339), if any.
    pub finalized_through: Option<String>,
    /// Next offset per partition.
    pub positions: Vec<u64>,
    /// Records behind the log end, all partitions.
    pub lag: u64,
    /// Bytes of its results and late records.
    pub size_bytes: u64,
    /// Of which the hourly sums, their rollups and the product index.
    pub sums_bytes: u64,
    /// Being computed by a running pipeline right now (server only).
    pub running: Option<bool>,
    /// `ready`, `building` (a replay builds it), `dropping`.
    pub state: &'static str,
    /// The replay building it, while `building`.
    pub replay: Option<u64>,
    /// Its final windows (all sizes).
    pub final_windows: usize,
    /// Digest of their fingerprints (`kappa fingerprint`): equal digests, equal results.
    pub digest: String,
}

/// Records between each position and its log end, in all.
fn lag(ends: &[u64], positions: &[u64]) -> u64 {
    ends.iter()
        .zip(positions)
        .map(|(e, p)| e.saturating_sub(*p))
        .sum()
}

/// The versions in the store (scratch versions of in-place corrections left out), lag
/// measured against `ends`.
///
/// # Errors
/// Store failure.
pub fn list_versions(store: &Store, ends: &[u64]) -> Result<Vec<VersionView>, StoreError> {
    let serving = store.serving()?;
    let mut out = Vec::new();
    for v in store.versions()? {
        if v.name.starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let positions: Vec<u64> = match store.load_state(&v.name)? {
            Some((_, ps)) => {
                let mut pos = vec![0; ends.len().max(ps.len())];
                for p in ps {
                    if let Some(slot) = pos.get_mut(p.partition as usize) {
                        *slot = p.next_offset;
                    }
                }
                pos
            }
            None => vec![0; ends.len()],
        };
        let lag = lag(ends, &positions);
        let prints = store.fingerprints(&v.name, i64::MIN, i64::MAX)?;
        out.push(VersionView {
            serving: v.name == serving,
            config: v.config.clone(),
            created: crate::event::time::format_rfc3339_ms(v.created_ms),
            finalized_through: (v.finalized_through != i64::MIN)
                .then(|| crate::event::time::format_rfc3339_ms(v.finalized_through)),
            positions,
            lag,
            size_bytes: store.version_bytes(&v.name)?,
            sums_bytes: store.sums_bytes(&v.name)?,
            running: None,
            state: v.state.as_str(),
            replay: match v.state {
                VersionState::Building { replay, .. } => Some(replay),
                _ => None,
            },
            final_windows: prints.len(),
            digest: crate::store::hex(crate::store::digest(&prints)),
            name: v.name,
        });
    }
    Ok(out)
}

/// A history record as a (finished) replay view. Only a replay that got to the end
/// (completed, caught up) is shown done; for one cancelled, failed or interrupted, progress
/// is the records it read over those it had to read (per-partition positions are not kept).
#[must_use]
pub fn view_of_record(r: &ReplayRecord) -> ReplayView {
    let finished = r.outcome.is_done();
    let total: u64 = r
        .starts
        .iter()
        .zip(&r.ends)
        .map(|(s, e)| e.saturating_sub(*s))
        .sum();
    let partitions: Vec<replay::PartitionProgress> = if finished {
        r.starts
            .iter()
            .enumerate()
            .map(|(p, &s)| {
                let end = r.ends.get(p).copied().unwrap_or(s);
                replay::PartitionProgress {
                    partition: u32::try_from(p).unwrap_or(u32::MAX),
                    done: end.saturating_sub(s),
                    total: end.saturating_sub(s),
                    position: end,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let done = if finished {
        total
    } else {
        r.records.min(total)
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = match r.ended_ms {
        Some(end) if end > r.started_ms => r.records as f64 * 1000.0 / (end - r.started_ms) as f64,
        _ => 0.0,
    };
    #[allow(clippy::cast_precision_loss)]
    let progress = if total == 0 || finished {
        1.0
    } else {
        done as f64 / total as f64
    };
    ReplayView {
        record: r.clone(),
        active: false,
        progress,
        done,
        total,
        rate,
        eta_seconds: None,
        partitions,
    }
}

struct Runner {
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<u64, Arc<Job>>,
    runners: HashMap<String, Runner>,
}

/// Replays and version pipelines of one running server.
pub struct Control {
    cfg: Config,
    store: Store,
    metrics: Arc<Metrics>,
    /// The version the main pipeline computes (not managed here).
    main_version: String,
    /// A merger's control plane: replays are computed by the workers, told through the
    /// control topic of this Kafka configuration (`--role merger`).
    remote: Option<crate::config::KafkaSection>,
    /// A merger's view of the workers' positions per version (replay progress).
    positions: crate::scale::Positions,
    /// Set by [`Control::stop`].
    shutting_down: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
}

/// Failures of a control request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Bad request (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown replay or version (404).
    #[error("{0}")]
    NotFound(String),
    /// Refused in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl From<ReplayError> for ControlError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Invalid(m) => Self::Invalid(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Mismatch(m) => Self::Conflict(m),
            e @ StoreError::NoVersion(_) => Self::NotFound(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<SourceError> for ControlError {
    fn from(e: SourceError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Opens a standalone source for a version of `cfg`'s log.
fn opener(
    cfg: Config,
    store: Store,
    metrics: Arc<Metrics>,
) -> impl Fn(&str, &CancellationToken) -> Result<Box<dyn Source>, SourceError> {
    move |version, cancel| {
        source::open(
            &cfg,
            Arc::new(store.clone()),
            version,
            source::Assignment::Explicit,
            metrics.clone(),
            &|| cancel.is_cancelled(),
        )
    }
}

/// Next replay number: one more than the history's last.
///
/// # Errors
/// Store failure.
pub fn next_replay_id(store: &Store) -> Result<u64, StoreError> {
    Ok(store.replays()?.last().map_or(1, |r| r.id + 1))
}

/// Cleans up after a process that died mid-replay or mid-drop: scratch versions of
/// in-place corrections and versions being dropped are removed (the serving version was
/// never half-written: a swap is one transaction), and running records become
/// `interrupted`. A new version that was still being built keeps its positions and its
/// promise to be promoted: the next server carries its replay on
/// ([`Control::resume_versions`]), which records it as running again.
///
/// # Errors
/// Store failure.
pub fn recover_interrupted(store: &Store) -> Result<(), StoreError> {
    store.remove_unfinished()?;
    // Scratch versions a store written before version states left behind.
    for v in store.versions()? {
        if v.name.starts_with(SCRATCH_PREFIX) {
            store.remove_version(&v.name)?;
        }
    }
    for mut r in store.replays()? {
        if r.outcome == Outcome::Running {
            r.outcome = Outcome::Interrupted;
            r.ended_ms = Some(chrono::Utc::now().timestamp_millis());
            store.record_replay(&r)?;
        }
    }
    Ok(())
}

/// Cancels replay `id` that no process is carrying on (a process building a new version
/// died, and no server has resumed it): its unfinished version is removed and the record
/// says `cancelled`, in one transaction.
///
/// # Errors
/// Unknown replay, one with nothing unfinished; store failure.
pub fn cancel_unfinished(store: &Store, id: u64) -> Result<ReplayView, ControlError> {
    let mut record = store
        .replays()?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ControlError::NotFound(format!("no replay {id}")))?;
    let building = store
        .versions()?
        .into_iter()
        .find(|v| matches!(v.state, VersionState::Building { replay, .. } if replay == id));
    let Some(version) = building else {
        return Err(ControlError::Conflict(format!(
            "replay {id} has finished ({})",
            record.outcome
        )));
    };
    record.outcome = Outcome::Cancelled(None);
    record.ended_ms = Some(chrono::Utc::now().timestamp_millis());
    store.end_replay(
        &mut record,
        ReplayEnd::Discard {
            version: &version.name,
        },
    )?;
    Ok(view_of_record(&record))
}

/// The workers of a merger's control plane, as a replay sees them: their progress comes
/// from the merger's loop, and they are told to stop on the control topic.
struct RemoteWorkers {
    control: Arc<Control>,
    kafka: crate::config::KafkaSection,
    /// The order that started the version (a stop order repeats it, inactive).
    order: crate::scale::VersionOrder,
}

impl replay::Workers for RemoteWorkers {
    fn positions(&self, version: &str) -> Option<BTreeMap<u32, u64>> {
        self.control
            .positions
            .lock()
            .expect("positions lock")
            .get(version)
            .cloned()
    }

    fn stop(&self, version: &str) {
        let order = crate::scale::VersionOrder {
            active: false,
            starts: Vec::new(),
            ends: Vec::new(),
            ..self.order.clone()
        };
        if let Err(e) =
            crate::scale::publish_order(&self.kafka, &order, self.control.metrics.clone())
        {
            tracing::error!(version, "telling the workers to stop: {e}");
        }
    }

    fn shutting_down(&self) -> bool {
        self.control
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The scheduled audits of a server (`pipeline.audit-every`): one every `every` while
/// the control plane lives, never two at once; a failure to start one is logged and the
/// next goes on from where it would have ended.
fn audit_schedule(control: &std::sync::Weak<Control>, every: std::time::Duration) {
    let mut next_from = None;
    let mut running: Option<u64> = None;
    let mut last = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200).min(every));
        let Some(c) = control.upgrade() else { return };
        if c.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if last.elapsed() < every {
            continue;
        }
        if let Some(id) = running
            && c.replay(id).is_ok_and(|v| v.active)
        {
            continue;
        }
        last = std::time::Instant::now();
        match c.start_scheduled_audit(&mut next_from, every) {
            Ok(id) => running = id,
            Err(e) => tracing::warn!("scheduled audit not started: {e}"),
        }
    }
}

impl Control {
    /// A control plane for a server whose main pipeline computes `main_version`.
    #[must_use]
    pub fn new(
        cfg: Config,
        store: Store,
        metrics: Arc<Metrics>,
        main_version: String,
    ) -> Arc<Self> {
        Self::with_audits(Self {
            cfg,
            store,
            metrics,
            main_version,
            remote: None,
            positions: crate::scale::Positions::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// `control`, with its scheduled audits started when `pipeline.audit-every` asks.
    fn with_audits(control: Self) -> Arc<Self> {
        let every = control.cfg.pipeline.audit_every;
        let control = Arc::new(control);
        if !every.is_zero() {
            let weak = Arc::downgrade(&control);
            let spawned = std::thread::Builder::new()
                .name("audits".into())
                .spawn(move || audit_schedule(&weak, every));
            if let Err(e) = spawned {
                tracing::error!("scheduled audits not started: {e}");
            }
        }
        control
    }

    /// Starts the audit of the serving version's windows that became final since the
    /// previous one (from `next_from`; the first covers `every`, at least the largest
    /// window size, of history), up to where windows of the largest size are final.
    /// Returns its replay number, or `None` when nothing new is final.
    fn start_scheduled_audit(
        self: &Arc<Self>,
        next_from: &mut Option<i64>,
        every: std::time::Duration,
    ) -> Result<Option<u64>, ControlError> {
        let serving = self.store.serving()?;
        let Some(info) = self.store.version(&serving)? else {
            return Ok(None);
        };
        let sizes = self
            .cfg
            .with_fingerprint(&info.config)
            .map_err(|e| ControlError::Internal(e.0))?
            .window_config()
            .sizes_ms;
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if info.finalized_through == i64::MIN {
            return Ok(None);
        }
        // Windows starting before `hi` end before `finalized_through`: all final.
        let hi = info.finalized_through.saturating_sub(largest);
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let lookback = every_ms.max(largest);
        let lo = next_from.unwrap_or_else(|| hi.saturating_sub(lookback));
        if hi <= lo {
            return Ok(None);
        }
        *next_from = Some(hi);
        let req = ReplayRequest::audit(
            crate::event::time::format_rfc3339_ms(lo),
            Some(crate::event::time::format_rfc3339_ms(hi)),
            None,
            self.cfg.pipeline.audit_repair,
            "kappa (pipeline.audit-every)".into(),
        );
        let v = self.start_replay(&req)?;
        Ok(v["id"].as_u64())
    }

    /// A merger's control plane: a replay into a new version publishes an order on the
    /// control topic; the workers compute the version's partials, the merger merges them,
    /// and the replay is caught up once the version is final as far as the main one.
    #[must_use]
    pub fn new_remote(
        cfg: Config,
        store: Store,
        metrics: Arc<Metrics>,
        main_version: String,
        positions: crate::scale::Positions,
    ) -> Arc<Self> {
        let remote = Some(cfg.kafka.clone());
        Self::with_audits(Self {
            cfg,
            store,
            metrics,
            main_version,
            remote,
            positions,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The next replay's number; refused while a new version of the same name is built.
    fn next_id(&self, inner: &Inner, plan: &Plan) -> Result<u64, ControlError> {
        if inner
            .jobs
            .values()
            .any(|j| j.is_active() && j.plan.version == plan.version && !plan.in_place)
        {
            return Err(ControlError::Conflict(format!(
                "version {} is already being built",
                plan.version
            )));
        }
        Ok(next_replay_id(&self.store)?.max(inner.jobs.keys().last().map_or(1, |k| k + 1)))
    }

    /// Starts a replay across workers and a merger (see [`Control::new_remote`]). A new
    /// version: the workers compute it from the plan's starts, live; it is caught up once
    /// final as far as the main one. In place: they compute a scratch version from the
    /// starts up to the log end as it is now and drain it; this process then swaps its
    /// windows of the range into the serving version, as a single process does.
    fn start_remote(
        self: &Arc<Self>,
        req: &ReplayRequest,
        kafka: &crate::config::KafkaSection,
    ) -> Result<serde_json::Value, ControlError> {
        let plan = self.plan(req)?;
        let lines = plan.describe();
        if req.dry_run && !req.diff {
            return Ok(serde_json::json!({ "lines": lines }));
        }
        let inner = self.inner.lock().expect("control lock");
        let id = self.next_id(&inner, &plan)?;
        let in_place = plan.in_place;
        let version = plan.target_version(id);
        let start_order = crate::scale::VersionOrder {
            version: version.clone(),
            active: true,
            config: plan.fingerprint.clone(),
            starts: plan
                .starts
                .iter()
                .map(|s| (s.partition, s.resume_offset, s.resume_max_ts))
                .collect(),
            ends: if in_place {
                plan.ends.clone()
            } else {
                Vec::new()
            },
            incarnation: chrono::Utc::now().timestamp_millis(),
        };
        let job = Job::start(&self.store, plan, id)?;
        if let Err(e) = self
            .store
            .create_version(&job.target_info(start_order.incarnation), &[])
        {
            let _ = job.finish(
                &self.store,
                Outcome::Failed(e.to_string()),
                0,
                ReplayEnd::RecordOnly,
            );
            return Err(e.into());
        }
        if let Err(e) = crate::scale::publish_order(kafka, &start_order, self.metrics.clone()) {
            let _ = job.finish(
                &self.store,
                Outcome::Failed(e.to_string()),
                0,
                ReplayEnd::Discard { version: &version },
            );
            return Err(ControlError::Internal(e.to_string()));
        }
        tracing::info!(
            replay = id,
            version,
            in_place,
            "replay started: the workers compute the version, the merger merges it"
        );
        let (store, metrics, main) = (
            self.store.clone(),
            self.metrics.clone(),
            self.main_version.clone(),
        );
        let workers = RemoteWorkers {
            control: self.clone(),
            kafka: kafka.clone(),
            order: start_order,
        };
        let j = job.clone();
        let runner_key = version.clone();
        let thread = std::thread::Builder::new()
            .name(format!("replay-{id}"))
            .spawn(move || j.run_remote(&store, &metrics, &workers, &main))
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        Ok(self.register(inner, job, runner_key, thread, lines))
    }

    /// Starts a pipeline for every version other than the main one, in the main one's
    /// `mode` (a bounded run brings every version to the log end, drained with `--drain`:
    /// see [`Control::join_versions`]); cancelling `parent` stops them.
    ///
    /// # Errors
    /// Store failure.
    pub fn resume_versions(
        self: &Arc<Self>,
        mode: Mode,
        parent: &CancellationToken,
    ) -> Result<(), ControlError> {
        let history = self.store.replays()?;
        for v in self.store.versions()? {
            if v.name == self.main_version || v.name.starts_with(SCRATCH_PREFIX) {
                continue;
            }
            match v.state {
                // A replay a process that died left unfinished goes on in a live server,
                // promise included; a bounded run computes its version like any other.
                VersionState::Building { replay, .. } if mode == Mode::Live => {
                    let record = history.iter().find(|r| r.id == replay).cloned();
                    let Some(record) = record else {
                        tracing::error!(
                            "output version {} is being built by replay {replay}, which is not in the history: `kappa replay cancel {replay}` removes it",
                            v.name
                        );
                        continue;
                    };
                    let job = Job::resume(&self.store, &self.cfg, record, &v)?;
                    tracing::info!("replay {replay}: carrying on building {}", v.name);
                    let inner = self.inner.lock().expect("control lock");
                    self.spawn_job(inner, job)?;
                }
                VersionState::Ready | VersionState::Building { .. } => {
                    let cfg = self
                        .cfg
                        .with_fingerprint(&v.config)
                        .map_err(|e| ControlError::Internal(format!("version {}: {e}", v.name)))?;
                    self.spawn_runner(v.name, cfg, mode, parent.child_token())?;
                }
                VersionState::Correcting { .. } | VersionState::Dropping => {}
            }
        }
        Ok(())
    }

    /// Waits until the version pipelines end by themselves (bounded runs).
    pub fn join_versions(&self) {
        let threads: Vec<_> = {
            let mut inner = self.inner.lock().expect("control lock");
            inner
                .runners
                .values_mut()
                .filter_map(|r| r.thread.take())
                .collect()
        };
        for t in threads {
            let _ = t.join();
        }
    }

    fn spawn_runner(
        self: &Arc<Self>,
        version: String,
        mut cfg: Config,
        mode: Mode,
        cancel: CancellationToken,
    ) -> Result<(), ControlError> {
        cfg.pipeline.idle_timeout = std::time::Duration::ZERO;
        let (store, metrics, token) = (self.store.clone(), self.metrics.clone(), cancel.clone());
        let name = version.clone();
        tracing::info!("output version {version}: resuming its pipeline");
        let thread = std::thread::Builder::new()
            .name(format!("version-{version}"))
            .spawn(move || {
                let open = opener(cfg.clone(), store.clone(), metrics);
                let run = || -> Result<(), ReplayError> {
                    let source = open(&name, &token)?;
                    let p = Pipeline::new(
                        &cfg,
                        &name,
                        source,
                        store,
                        Arc::new(Metrics::new()),
                        Arc::new(Shared::default()),
                    )?
                    .with_streams(false)?;
                    p.without_index().run(mode, &token)?;
                    Ok(())
                };
                if let Err(e) = run() {
                    tracing::error!("output version {name} stopped: {e}");
                }
            })
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.inner.lock().expect("control lock").runners.insert(
            version,
            Runner {
                cancel,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    /// Resolves a request against the store and the log as it is now.
    ///
    /// # Errors
    /// A bad request; store or source failure.
    pub fn plan(&self, req: &ReplayRequest) -> Result<Plan, ControlError> {
        let log = replay::LogView::of(&self.cfg)?;
        Ok(replay::resolve(&self.cfg, &self.store, &log, req)?)
    }

    /// Starts a replay on its own thread; a dry run only resolves it.
    ///
    /// # Errors
    /// A bad request, a version already being built, store failure.
    pub fn start_replay(
        self: &Arc<Self>,
        req: &ReplayRequest,
    ) -> Result<serde_json::Value, ControlError> {
        if let Some(k) = &self.remote {
            return self.start_remote(req, k);
        }
        let plan = self.plan(req)?;
        let lines = plan.describe();
        let inner = self.inner.lock().expect("control lock");
        let id = self.next_id(&inner, &plan)?;
        let job = Job::start(&self.store, plan, id)?;
        let mut v = self.spawn_job(inner, job)?;
        v["lines"] = serde_json::json!(lines);
        Ok(v)
    }

    /// Runs `job` on its own thread, kept under the version it builds (a new version's
    /// thread goes on as its pipeline; an in-place one is kept so that a shutdown waits for
    /// it); answers with its view.
    fn spawn_job(
        &self,
        inner: std::sync::MutexGuard<'_, Inner>,
        job: Arc<Job>,
    ) -> Result<serde_json::Value, ControlError> {
        let id = job.id();
        let (store, metrics, cfg) = (self.store.clone(), self.metrics.clone(), self.cfg.clone());
        let j = job.clone();
        let thread = std::thread::Builder::new()
            .name(format!("replay-{id}"))
            .spawn(move || {
                let open = opener(cfg, store.clone(), metrics.clone());
                match j.run(&store, &metrics, &open, true) {
                    Ok(_) => tracing::info!("replay {id}: {}", j.view().record.outcome),
                    Err(e) => tracing::error!("replay {id} failed: {e}"),
                }
            })
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let key = job.plan.target_version(id);
        Ok(self.register(inner, job, key, thread, Vec::new()))
    }

    /// Keeps a started replay (its job and the thread carrying it, under the version it
    /// builds) and answers with its view and plan lines.
    fn register(
        &self,
        mut inner: std::sync::MutexGuard<'_, Inner>,
        job: Arc<Job>,
        key: String,
        thread: JoinHandle<()>,
        lines: Vec<String>,
    ) -> serde_json::Value {
        inner.runners.insert(
            key,
            Runner {
                cancel: job.cancel.clone(),
                thread: Some(thread),
            },
        );
        inner.jobs.insert(job.id(), job.clone());
        drop(inner);
        self.update_metrics();
        let mut v = serde_json::to_value(job.view()).unwrap_or_default();
        v["lines"] = serde_json::json!(lines);
        v
    }

    /// One replay: running ones from memory, finished ones from the history.
    ///
    /// # Errors
    /// Unknown id; store failure.
    pub fn replay(&self, id: u64) -> Result<ReplayView, ControlError> {
        if let Some(j) = self.inner.lock().expect("control lock").jobs.get(&id) {
            return Ok(j.view());
        }
        self.store
            .replays()?
            .iter()
            .find(|r| r.id == id)
            .map(view_of_record)
            .ok_or_else(|| ControlError::NotFound(format!("no replay {id}")))
    }

    /// Every replay, oldest first.
    ///
    /// # Errors
    /// Store failure.
    pub fn replays(&self) -> Result<Vec<ReplayView>, ControlError> {
        let jobs = self.inner.lock().expect("control lock").jobs.clone();
        Ok(self
            .store
            .replays()?
            .iter()
            .map(|r| {
                jobs.get(&r.id)
                    .map_or_else(|| view_of_record(r), |j| j.view())
            })
            .collect())
    }

    /// Cancels a running replay: an in-place correction leaves the serving version as it
    /// was; a new version still catching up is removed.
    ///
    /// # Errors
    /// Unknown or finished replay.
    pub fn cancel(&self, id: u64) -> Result<ReplayView, ControlError> {
        let job = self
            .inner
            .lock()
            .expect("control lock")
            .jobs
            .get(&id)
            .cloned();
        match job {
            Some(j) if j.is_active() => {
                j.cancel.cancel();
                for _ in 0..600 {
                    if !j.is_active() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(j.view())
            }
            Some(j) => {
                let outcome = j.view().record.outcome;
                let hint = if j.plan.in_place || self.store.version(&j.plan.version)?.is_none() {
                    String::new()
                } else {
                    format!(
                        "; to remove the version it built: kappa versions drop {}",
                        j.plan.version
                    )
                };
                Err(ControlError::Conflict(format!(
                    "replay {id} has finished ({outcome}){hint}"
                )))
            }
            // Nothing here carries it on: a version a dead process left being built goes.
            None => cancel_unfinished(&self.store, id),
        }
    }

    /// Versions, with whether a pipeline of this server computes each.
    ///
    /// # Errors
    /// Store or source failure.
    pub fn versions(&self) -> Result<Vec<VersionView>, ControlError> {
        let ends = source::log_end_offsets(&self.cfg)?;
        let inner = self.inner.lock().expect("control lock");
        let mut out = list_versions(&self.store, &ends)?;
        for v in &mut out {
            v.running = Some(v.name == self.main_version || inner.runners.contains_key(&v.name));
        }
        if self.remote.is_some() {
            // A merger's store positions are on the partials topic: the source positions
            // are the workers' reported ones.
            let reported = self.positions.lock().expect("positions lock");
            for v in &mut out {
                let at = reported.get(&v.name);
                v.positions = (0..ends.len())
                    .map(|p| {
                        let p = u32::try_from(p).unwrap_or(u32::MAX);
                        at.and_then(|m| m.get(&p)).copied().unwrap_or(0)
                    })
                    .collect();
                v.lag = lag(&ends, &v.positions);
            }
        }
        Ok(out)
    }

    /// Makes `version` serving.
    ///
    /// # Errors
    /// Unknown version, or one still being built.
    pub fn promote(&self, version: &str) -> Result<(), ControlError> {
        // Every check is in the store's transaction that promotes.
        self.store.promote(version)?;
        self.update_metrics();
        Ok(())
    }

    /// Stops `version`'s pipeline and deletes it: checked and marked
    /// [`VersionState::Dropping`] in one store transaction first (so nothing promotes it
    /// meanwhile), removed once its pipeline has stopped.
    ///
    /// # Errors
    /// The serving version, the main pipeline's version, one a replay is building, an
    /// unknown one.
    pub fn drop_version(&self, version: &str) -> Result<(), ControlError> {
        if version == self.main_version {
            return Err(ControlError::Conflict(format!(
                "{version} is the version this server's main pipeline computes: promote another one, restart `kappa run` (it computes the serving version), then drop {version}"
            )));
        }
        self.store.begin_drop(version)?;
        let runner = self
            .inner
            .lock()
            .expect("control lock")
            .runners
            .remove(version);
        if let Some(mut r) = runner {
            r.cancel.cancel();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(k) = &self.remote {
            // The workers stop computing it.
            let info = self.store.version(version)?;
            let stop = crate::scale::VersionOrder {
                version: version.to_string(),
                active: false,
                incarnation: info.as_ref().map_or(0, |i| i.created_ms),
                config: info.map(|i| i.config).unwrap_or_default(),
                starts: Vec::new(),
                ends: Vec::new(),
            };
            crate::scale::publish_order(k, &stop, self.metrics.clone())
                .map_err(|e| ControlError::Internal(e.to_string()))?;
        }
        self.store.remove_version(version)?;
        Ok(())
    }

    /// Refreshes the replay and serving-version metrics.
    pub fn update_metrics(&self) {
        let inner = self.inner.lock().expect("control lock");
        for j in inner.jobs.values().filter(|j| j.is_active()) {
            let v = j.view();
            self.metrics
                .replay_progress
                .with_label_values(&[&j.plan.version])
                .set(v.progress);
        }
        drop(inner);
        if let Ok(serving) = self.store.serving() {
            self.metrics.serving_version.reset();
            self.metrics
                .serving_version
                .with_label_values(&[&serving])
                .set(1);
        }
    }

    /// Stops every replay and version pipeline (each commits first).
    pub fn stop(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.inner.lock().expect("control lock");
        for j in inner.jobs.values() {
            j.cancel.cancel();
        }
        let runners: Vec<Runner> = inner.runners.drain().map(|(_, r)| r).collect();
        drop(inner);
        for mut r in runners {
            r.cancel.cancel();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}
