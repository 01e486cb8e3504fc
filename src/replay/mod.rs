//! Replays: recomputing results from the log, in place or into a new output version.
//!
//! A replay is one mechanism in three steps, whoever asks for it (the CLI in the
//! foreground, or `POST /api/replays` on a running server):
//! 1. [`resolve`] turns a [`ReplayRequest`] into a [`Plan`]: the version's configuration,
//!    the start of each partition (through kappa's event-time index: the last checkpoint
//!    whose max event time is below `from − max_delay`, so that late and duplicate
//!    decisions after it are the live ones), the log end, the windows to rewrite;
//! 2. [`Job::run`] creates the target version with those start positions and runs an
//!    ordinary [`Pipeline`] on it — the same code, guarantees and speed as live;
//! 3. an in-place correction then swaps the recomputed windows of `[from, to)` into the
//!    serving version in one store transaction ([`Store::copy_windows`]) and drops its
//!    scratch version; a new version is promoted (`--promote`) once caught up.

pub mod plan;

pub use plan::{LogView, Plan, ReplayRequest, RewriteRange, resolve};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::compare::Gate;
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline, PipelineError, Shared};
use crate::source::SourceError;
use crate::store::{
    GateCheck, Outcome, ReplayEnd, ReplayRecord, Store, StoreError, VersionInfo, VersionState,
};

/// Lag (records, on every partition) under which a new version counts as caught up and
/// `--promote` makes it serving.
pub const PROMOTE_MAX_LAG: u64 = 1000;

pub use crate::store::SCRATCH_PREFIX;

/// Failures of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request cannot be carried out as asked (a 400 over HTTP).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Where one partition of a replay stands.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionProgress {
    /// Source partition.
    pub partition: u32,
    /// Records read so far.
    pub done: u64,
    /// Records between the start and the log end when the replay started.
    pub total: u64,
    /// Next offset to read.
    pub position: u64,
}

/// A replay as the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayView {
    /// The history record (id, version, range, outcome, …).
    #[serde(flatten)]
    pub record: ReplayRecord,
    /// Still reading towards the log end as it was at start.
    pub active: bool,
    /// Records done over records to do, 0–1.
    pub progress: f64,
    /// Records done, all partitions.
    pub done: u64,
    /// Records to do, all partitions.
    pub total: u64,
    /// Records per second so far.
    pub rate: f64,
    /// Seconds to go at that rate.
    pub eta_seconds: Option<f64>,
    /// Per partition.
    pub partitions: Vec<PartitionProgress>,
}

/// A replay being carried out.
pub struct Job {
    /// What it does.
    pub plan: Plan,
    record: Mutex<ReplayRecord>,
    /// Fires to stop it.
    pub cancel: CancellationToken,
    /// The replay pipeline's status (positions, lag).
    pub shared: Arc<Shared>,
    started: Instant,
    active: AtomicBool,
    /// Carries on a replay a process that died left unfinished (its version exists, with
    /// the positions it had reached).
    resumed: bool,
}

impl Job {
    /// A job for `plan`, numbered `id`, recorded in the history as running.
    ///
    /// # Errors
    /// Store failure.
    pub fn start(store: &Store, plan: Plan, id: u64) -> Result<Arc<Self>, ReplayError> {
        let record = ReplayRecord {
            id,
            version: plan.version.clone(),
            in_place: plan.in_place,
            from: plan.request.from.clone(),
            to: plan.request.to.clone(),
            config: plan.fingerprint.clone(),
            plan: plan.request.plan.clone(),
            reason: plan.request.reason.clone().unwrap_or_default(),
            requested_by: plan.request.requested_by.clone().unwrap_or_default(),
            started_ms: chrono::Utc::now().timestamp_millis(),
            ended_ms: None,
            starts: plan.starts.iter().map(|p| p.next_offset).collect(),
            ends: plan.ends.clone(),
            records: 0,
            windows: 0,
            outcome: Outcome::Running,
        };
        Self::recorded(store, plan, record, false)
    }

    /// A job for `plan` whose history `record` (running) is written first.
    fn recorded(
        store: &Store,
        plan: Plan,
        record: ReplayRecord,
        resumed: bool,
    ) -> Result<Arc<Self>, ReplayError> {
        store.record_replay_gated(&record, plan.request.promote_if.as_deref())?;
        Ok(Arc::new(Self {
            plan,
            record: Mutex::new(record),
            cancel: CancellationToken::new(),
            shared: Arc::new(Shared::default()),
            started: Instant::now(),
            active: AtomicBool::new(true),
            resumed,
        }))
    }

    /// Carries on replay `record`, whose new version `info` a process that died left
    /// [`VersionState::Building`]: the same plan (configuration, starts, ends, the promise
    /// to promote) from the positions the version reached. Recorded as running again.
    ///
    /// # Errors
    /// A version that is not being built by this replay; store failure.
    pub fn resume(
        store: &Store,
        cfg: &crate::config::Config,
        mut record: ReplayRecord,
        info: &VersionInfo,
    ) -> Result<Arc<Self>, ReplayError> {
        let VersionState::Building { replay, promote } = info.state else {
            return Err(ReplayError::Invalid(format!(
                "{} is not being built by a replay",
                info.name
            )));
        };
        if replay != record.id {
            return Err(ReplayError::Invalid(format!(
                "{} is being built by replay {replay}, not {}",
                info.name, record.id
            )));
        }
        let cfg = cfg
            .with_fingerprint(&info.config)
            .map_err(|e| ReplayError::Invalid(format!("version {}: {e}", info.name)))?;
        let starts: Vec<_> = record
            .starts
            .iter()
            .enumerate()
            .map(|(p, &offset)| crate::store::PartitionPosition {
                partition: u32::try_from(p).unwrap_or(u32::MAX),
                next_offset: offset,
                resume_offset: offset,
                resume_max_ts: i64::MIN,
                max_ts: i64::MIN,
            })
            .collect();
        let records = record
            .ends
            .iter()
            .zip(&record.starts)
            .map(|(e, s)| e.saturating_sub(*s))
            .sum();
        let plan = Plan {
            request: ReplayRequest {
                from: record.from.clone(),
                to: record.to.clone(),
                version: Some(info.name.clone()),
                promote,
                promote_if: store.replay_gate(record.id)?,
                reason: Some(record.reason.clone()),
                plan: record.plan.clone(),
                requested_by: Some(record.requested_by.clone()),
                ..ReplayRequest::default()
            },
            version: info.name.clone(),
            in_place: false,
            cfg,
            fingerprint: info.config.clone(),
            from_ms: crate::event::time::parse_rfc3339_ms(&record.from).unwrap_or(i64::MIN),
            to_ms: i64::MAX,
            starts,
            ends: record.ends.clone(),
            records,
            rewrite: Vec::new(),
            by_record_time: None,
            notes: Vec::new(),
            declared: None,
        };
        record.outcome = Outcome::Running;
        record.ended_ms = None;
        Self::recorded(store, plan, record, true)
    }

    /// The job's number.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.record.lock().expect("record lock").id
    }

    /// Whether it still reads towards the log end it started with.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Progress as shown to people.
    #[must_use]
    pub fn view(&self) -> ReplayView {
        let status = self.shared.status();
        let record = self.record.lock().expect("record lock").clone();
        let active = self.is_active();
        let partitions: Vec<PartitionProgress> = self
            .plan
            .starts
            .iter()
            .map(|s| {
                let p = s.partition;
                let end = self.plan.ends.get(p as usize).copied().unwrap_or(0);
                let position = status
                    .partitions
                    .iter()
                    .find(|x| x.partition == p)
                    .map_or(s.next_offset, |x| x.position.max(s.next_offset));
                let total = end.saturating_sub(s.next_offset);
                let done = if active {
                    position.min(end).saturating_sub(s.next_offset)
                } else {
                    total.min(position.saturating_sub(s.next_offset))
                };
                PartitionProgress {
                    partition: p,
                    done,
                    total,
                    position,
                }
            })
            .collect();
        let done: u64 = partitions.iter().map(|p| p.done).sum();
        let total: u64 = partitions.iter().map(|p| p.total).sum();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let (rate, progress) = (
            done as f64 / secs,
            if total == 0 {
                1.0
            } else {
                done as f64 / total as f64
            },
        );
        #[allow(clippy::cast_precision_loss)]
        let eta_seconds = (active && rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate);
        ReplayView {
            record,
            active,
            progress: progress.min(1.0),
            done,
            total,
            rate,
            eta_seconds,
            partitions,
        }
    }

    /// Ends the replay: `end`'s change to the versions and the history record with
    /// `outcome`, in one store transaction ([`Store::end_replay`]). When that fails, the
    /// record says so and what the replay built is discarded. Returns the windows written.
    pub(crate) fn finish(
        &self,
        store: &Store,
        outcome: Outcome,
        windows: u64,
        end: ReplayEnd<'_>,
    ) -> Result<u64, StoreError> {
        let mut record = self.settle(outcome, windows);
        // A correction's declared windows are compared by content before its transaction.
        let declared = match end {
            ReplayEnd::Swap {
                scratch,
                from_ms,
                to_ms,
                ..
            }
            | ReplayEnd::DryRun {
                scratch,
                from_ms,
                to_ms,
                ..
            } => declared_changes(store, scratch, (from_ms, to_ms)),
            _ => None,
        };
        let end = end.with_declared(declared.as_ref());
        let result = store.end_replay(&mut record, end);
        if let Err(e) = &result {
            tracing::error!("ending replay {}: {e}", record.id);
            record = self.settle(Outcome::Failed(e.to_string()), 0);
            let fallback = match end {
                ReplayEnd::Swap { scratch, .. } | ReplayEnd::DryRun { scratch, .. } => {
                    ReplayEnd::Discard { version: scratch }
                }
                _ => ReplayEnd::RecordOnly,
            };
            if let Err(e) = store.end_replay(&mut record, fallback) {
                tracing::error!("recording the outcome of replay {}: {e}", record.id);
            }
        }
        *self.record.lock().expect("record lock") = record;
        self.active.store(false, Ordering::Relaxed);
        result
    }

    /// The history record with `outcome`, as of now.
    fn settle(&self, outcome: Outcome, windows: u64) -> ReplayRecord {
        let mut r = self.record.lock().expect("record lock");
        r.outcome = outcome;
        r.ended_ms = Some(chrono::Utc::now().timestamp_millis());
        r.records = self.shared.status().records;
        r.windows = windows;
        r.clone()
    }

    /// Carries the replay out on this thread: builds the target version from the plan's
    /// start positions; then, in place, swaps the recomputed windows of the range into the
    /// serving version, or, for a new version, promotes it when asked once it is caught up
    /// (within [`PROMOTE_MAX_LAG`] records of the log end on every partition). With
    /// `live_after` (a server), a new version then goes on consuming live on this thread
    /// until `cancel` fires; otherwise its positions stay and `kappa run` resumes it.
    ///
    /// `open` opens a source for a version (standalone: explicit assignment).
    ///
    /// # Errors
    /// Store, source or pipeline failure (recorded as the outcome too).
    pub fn run(
        &self,
        store: &Store,
        metrics: &Metrics,
        open: &Opener<'_>,
        live_after: bool,
    ) -> Result<u64, ReplayError> {
        metrics.replays_active.inc();
        let version = self.plan.version.clone();
        let id = self.id();
        tracing::info!(
            replay = id,
            version,
            in_place = self.plan.in_place,
            from = self.plan.request.from,
            records = self.plan.records,
            resumed = self.resumed,
            "replay started"
        );
        // Dropped when the replay ends: the progress thread then stops at once (a sleeping
        // one held every replay's end up to its next wake-up).
        let (done, ended) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|scope| {
            // A progress line every 10 s while it reads.
            scope.spawn(|| {
                let ended = ended;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    ended.recv_timeout(std::time::Duration::from_secs(10))
                {
                    let v = self.view();
                    metrics
                        .replay_progress
                        .with_label_values(&[&version])
                        .set(v.progress);
                    tracing::info!(
                        replay = id,
                        "replay progress {:.1}% ({}/{} records, {:.0}/s, ETA {})",
                        v.progress * 100.0,
                        v.done,
                        v.total,
                        v.rate,
                        v.eta_seconds
                            .map_or_else(|| "-".into(), |s| format!("{s:.0}s"))
                    );
                }
            });
            let r = self.compute(store, open, live_after);
            drop(done);
            r
        });
        metrics.replays_active.dec();
        metrics
            .replay_records
            .with_label_values(&[&version])
            .inc_by(self.view().done);
        let plan = &self.plan;
        let ended = self.end(store, result.as_ref().map(|(w, _)| *w));
        self.count_audit(store, metrics);
        if ended.is_ok() && !self.cancel.is_cancelled() && result.is_ok() {
            metrics
                .replay_progress
                .with_label_values(&[&version])
                .set(1.0);
        }
        let record = self.view().record;
        tracing::info!(
            replay = id,
            version,
            outcome = %record.outcome,
            records = record.records,
            "replay finished"
        );
        let (windows, pipeline) = result.map_err(Computed::into_inner)?;
        ended?;
        if let (Some(mut p), true) = (pipeline, live_after)
            && !plan.in_place
            && !self.cancel.is_cancelled()
        {
            tracing::info!("output version {version} caught up; it goes on consuming live");
            if let Err(e) = p.run_phase(Mode::Live, &self.cancel) {
                tracing::error!("output version {version} stopped: {e}");
            }
        }
        Ok(windows)
    }

    /// An ended audit into the audit metrics, from the diff recorded with it: equal or
    /// mismatched with the windows checked and those that differ; failed (or cancelled)
    /// when it recorded none.
    fn count_audit(&self, store: &Store, metrics: &Metrics) {
        if !self.plan.request.audit {
            return;
        }
        let record = self.view().record;
        let diff = match record.outcome {
            Outcome::DryRun | Outcome::Completed => store
                .replay_diff(record.id)
                .ok()
                .flatten()
                .and_then(|j| serde_json::from_slice::<crate::compare::Comparison>(&j).ok()),
            _ => None,
        };
        let result = match diff {
            Some(c) => {
                metrics
                    .audit_windows_checked
                    .inc_by(c.summary.windows_compared);
                metrics
                    .audit_windows_mismatched
                    .inc_by(c.summary.windows_differing);
                if c.summary.windows_differing == 0 {
                    "equal"
                } else {
                    tracing::warn!(
                        replay = record.id,
                        "audit {}: {} of {} final windows of {} differ from their recomputation from the log{} (`kappa replay show {}`)",
                        record.id,
                        c.summary.windows_differing,
                        c.summary.windows_compared,
                        record.version,
                        if self.plan.request.dry_run {
                            ""
                        } else {
                            "; repaired in place"
                        },
                        record.id
                    );
                    "mismatched"
                }
            }
            None => "failed",
        };
        metrics.audits.with_label_values(&[result]).inc();
    }

    /// The version this replay writes, marked with what it is for: a new version
    /// [`VersionState::Building`] (with the promise to promote), a correction's scratch
    /// [`VersionState::Correcting`] its target — so that a restart knows.
    #[must_use]
    pub fn target_info(&self, created_ms: i64) -> VersionInfo {
        let plan = &self.plan;
        let replay = self.id();
        VersionInfo {
            name: plan.target_version(replay),
            config: plan.fingerprint.clone(),
            created_ms,
            finalized_through: i64::MIN,
            state: if plan.in_place {
                VersionState::Correcting {
                    replay,
                    target: plan.version.clone(),
                }
            } else {
                VersionState::Building {
                    replay,
                    promote: plan.request.promote,
                }
            },
        }
    }

    /// Ends the replay by what computing its version gave — the one place that decides,
    /// for every executor, between the swap of a correction, a caught-up version (promoted
    /// if promised), a discard (cancelled, failed) and a failure before anything was made.
    fn end(&self, store: &Store, computed: Result<u64, &Computed>) -> Result<u64, StoreError> {
        let plan = &self.plan;
        let target = plan.target_version(self.id());
        let (outcome, windows, end) = match computed {
            // Nothing of this replay's was created: nothing to remove.
            Err(Computed::NotCreated(e)) => {
                (Outcome::Failed(e.to_string()), 0, ReplayEnd::RecordOnly)
            }
            Err(Computed::Failed(e)) => (
                Outcome::Failed(e.to_string()),
                0,
                ReplayEnd::Discard { version: &target },
            ),
            Ok(w) if self.cancel.is_cancelled() => (
                Outcome::Cancelled(None),
                w,
                ReplayEnd::Discard { version: &target },
            ),
            // `--dry-run --diff`: what the swap would change is recorded; nothing changes.
            Ok(_) if plan.in_place && plan.request.dry_run => (
                Outcome::DryRun,
                0,
                ReplayEnd::DryRun {
                    scratch: &target,
                    from_ms: plan.from_ms,
                    to_ms: plan.to_ms,
                    audit: plan.request.audit,
                    declared: None,
                },
            ),
            Ok(w) if plan.in_place => (
                Outcome::Completed,
                w,
                ReplayEnd::Swap {
                    scratch: &target,
                    from_ms: plan.from_ms,
                    to_ms: plan.to_ms,
                    audit: plan.request.audit,
                    declared: None,
                },
            ),
            Ok(w) => (
                if plan.request.promote {
                    Outcome::CaughtUpPromoted
                } else {
                    Outcome::CaughtUp
                },
                w,
                ReplayEnd::CaughtUp {
                    version: &target,
                    gate: None,
                },
            ),
        };
        // A promotion gate compares the caught-up version with the serving one now; the
        // store transaction that promotes checks the serving version is still that one.
        let serving;
        let refusal;
        let end = match (end, &plan.request.promote_if) {
            (ReplayEnd::CaughtUp { version, .. }, Some(text)) if plan.request.promote => {
                serving = store.serving()?;
                refusal = gate_refusal(store, text, (&serving, version), plan.from_ms);
                ReplayEnd::CaughtUp {
                    version,
                    gate: Some(GateCheck {
                        against: &serving,
                        refusal: refusal.as_deref(),
                    }),
                }
            }
            (end, _) => end,
        };
        self.finish(store, outcome, windows, end)
    }

    /// Carries the replay out with workers computing its version (`--role merger`: this
    /// process merges what they publish): follows their progress, and once the version is
    /// final as far as `main` (a new version) or drained (a correction's scratch), tells
    /// them to stop and ends it like [`Job::run`]. Returns without ending it when
    /// `workers` says the merger is shutting down (the next start rolls a correction back;
    /// a new version stays).
    pub fn run_remote(&self, store: &Store, metrics: &Metrics, workers: &dyn Workers, main: &str) {
        metrics.replays_active.inc();
        let id = self.id();
        let plan = &self.plan;
        let version = plan.target_version(id);
        let finalized = |v: &str| -> Result<i64, StoreError> {
            Ok(store.version(v)?.map_or(i64::MIN, |i| i.finalized_through))
        };
        // The events' declared aggregates of a correction's scratch are drained with it, and
        // merged apart (their own final point): its swap waits for both.
        let declares = !plan
            .cfg
            .declared_plan(crate::stream::Stream::Events)
            .aggregates
            .is_empty();
        let caught_up = || -> Result<bool, StoreError> {
            let ft = finalized(&version)?;
            if plan.in_place {
                let declared = !declares || store.declared_through(&version)? == i64::MAX;
                return Ok(ft == i64::MAX && declared);
            }
            let main_ft = finalized(main)?;
            Ok(main_ft > i64::MIN && ft >= main_ft)
        };
        let computed = loop {
            // Progress: the positions the workers reported through the merger.
            if let Some(pos) = workers.positions(&version) {
                let mut st = self.shared.status.lock().expect("status lock");
                st.partitions = pos
                    .iter()
                    .map(|(&partition, &position)| crate::pipeline::PartitionStatus {
                        partition,
                        position,
                        owned: true,
                        ..crate::pipeline::PartitionStatus::default()
                    })
                    .collect();
                st.records = plan
                    .starts
                    .iter()
                    .map(|s| {
                        pos.get(&s.partition)
                            .map_or(0, |&p| p.saturating_sub(s.next_offset))
                    })
                    .sum();
            }
            if workers.shutting_down() {
                metrics.replays_active.dec();
                return;
            }
            if self.cancel.is_cancelled() {
                break Ok(0);
            }
            match caught_up() {
                Ok(true) if plan.in_place => break Ok(0),
                Ok(true) => {
                    break Ok(store
                        .window_count_all(&version, &plan.cfg.window_config().sizes_ms)
                        .unwrap_or(0));
                }
                Ok(false) => std::thread::sleep(std::time::Duration::from_millis(200)),
                Err(e) => break Err(Computed::Failed(e.into())),
            }
        };
        // A new version that caught up stays computed by the workers (it goes on live).
        if self.cancel.is_cancelled() || plan.in_place || computed.is_err() {
            workers.stop(&version);
        }
        let _ = self.end(store, computed.as_ref().map(|w| *w));
        self.count_audit(store, metrics);
        metrics.replays_active.dec();
        tracing::info!(replay = id, outcome = %self.view().record.outcome, "replay finished");
    }

    /// Computes the target version from the plan's starts (or, resumed, from where it
    /// stands) up to the log end: the version is created first, marked with what it is for
    /// ([`VersionState::Building`] with the promise to promote, or
    /// [`VersionState::Correcting`] its target), so a restart knows.
    fn compute(
        &self,
        store: &Store,
        open: &Opener<'_>,
        live_after: bool,
    ) -> Result<(u64, Option<Pipeline>), Computed> {
        let plan = &self.plan;
        let id = self.id();
        let target = plan.target_version(id);
        if !self.resumed {
            let info = self.target_info(chrono::Utc::now().timestamp_millis());
            store
                .create_version(&info, &plan.starts)
                .map_err(|e| Computed::NotCreated(e.into()))?;
        }
        let source = open(&target, &self.cancel).map_err(|e| Computed::Failed(e.into()))?;
        let pipeline = Pipeline::new(
            &plan.cfg,
            &target,
            source,
            store.clone(),
            Arc::new(Metrics::new()),
            self.shared.clone(),
        )
        .map_err(|e| Computed::Failed(e.into()))?;
        // A new version reads the clicks its aggregates are declared on too (the reviews
        // have their own replay); a correction in place recomputes the events' windows.
        let pipeline = if plan.in_place {
            pipeline
        } else {
            pipeline
                .with_streams(false)
                .map_err(|e| Computed::Failed(e.into()))?
        };
        let mut pipeline = if plan.from_earliest() && !self.resumed {
            pipeline
        } else {
            pipeline.without_index()
        };
        // In place, the log up to its end now is taken as complete for the range: the
        // windows are drained (a larger --max-delay would otherwise hold them open), and
        // only those the serving version already has final are swapped in.
        // A new version in a server catches up with a log that keeps growing, then goes
        // on live; in the foreground it reads to the log end as it was at start.
        // With `--to`, a correction stops reading once every window starting before it
        // is final: what comes after cannot change them (it would be late there, as live).
        let mode = if plan.in_place {
            Mode::UntilCaughtUp {
                drain: true,
                until_final: plan.range_final_at(),
            }
        } else if live_after {
            Mode::CatchUp {
                max_lag: PROMOTE_MAX_LAG,
            }
        } else {
            Mode::UntilCaughtUp {
                drain: false,
                until_final: None,
            }
        };
        let summary = pipeline
            .run_phase(mode, &self.cancel)
            .map_err(|e| Computed::Failed(e.into()))?;
        Ok((summary.windows, Some(pipeline)))
    }
}

/// Why computing a replay's version failed.
enum Computed {
    /// Before its version was created (a name taken, …): nothing to clean up.
    NotCreated(ReplayError),
    /// Afterwards: what it built is discarded.
    Failed(ReplayError),
}

impl Computed {
    fn into_inner(self) -> ReplayError {
        match self {
            Self::NotCreated(e) | Self::Failed(e) => e,
        }
    }
}

impl std::fmt::Display for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotCreated(e) | Self::Failed(e) => e.fmt(f),
        }
    }
}

/// The workers that compute a replay's version in a scaled-out deployment, as the
/// merger's control plane sees them ([`Job::run_remote`]).
pub trait Workers {
    /// The positions they reported for `version`, per partition.
    fn positions(&self, version: &str) -> Option<std::collections::BTreeMap<u32, u64>>;
    /// Tells them to stop computing `version`.
    fn stop(&self, version: &str);
    /// The merger is shutting down (not a cancel).
    fn shutting_down(&self) -> bool;
}

/// Opens a source for an output version (standalone: explicit assignment), giving up
/// when the token fires.
pub type Opener<'a> =
    dyn Fn(&str, &CancellationToken) -> Result<Box<dyn crate::source::Source>, SourceError> + 'a;

/// What a correction into `scratch` changes in its target's declared windows starting in
/// `range` (the events' aggregates: a correction does not recompute the clicks), listing
/// at most 100 windows as the recorded diff does; none when neither declares any. A
/// failure to read them is logged and leaves them out of the recorded diff.
fn declared_changes(
    store: &Store,
    scratch: &str,
    range: (i64, i64),
) -> Option<crate::compare::DeclaredComparison> {
    let target = match store.version(scratch) {
        Ok(Some(crate::store::VersionInfo {
            state: crate::store::VersionState::Correcting { target, .. },
            ..
        })) => target,
        _ => return None,
    };
    let streams = [crate::stream::Stream::Events];
    crate::query::compare_declared_of(store, (&target, scratch), range, 100, &streams)
        .inspect_err(|e| tracing::error!("comparing the declared windows of {scratch}: {e}"))
        .ok()
        .flatten()
}

/// Why promotion gate `text` does not hold for `version` against `serving` (none: it
/// holds), comparing the windows from `from` on: before it the new version has none, and
/// the one holding `from` only its part from `from`. The declared windows are compared
/// when the gate counts them, over the aggregates both versions declare.
fn gate_refusal(
    store: &Store,
    text: &str,
    (serving, version): (&str, &str),
    from: i64,
) -> Option<String> {
    // Checked when the replay was planned: a stored gate that no longer reads is a
    // refusal.
    let gate = match Gate::parse(text) {
        Ok(g) => g,
        Err(e) => return Some(e),
    };
    let unchecked = |what: &str, e: &dyn std::fmt::Display| {
        Some(format!(
            "--promote-if {text:?} cannot be checked: comparing {what}with {serving}: {e}"
        ))
    };
    let mut c = match crate::compare::compare(store, serving, version, gate.scope(from)) {
        Ok(c) => c,
        Err(e) => return unchecked("", &e),
    };
    if gate.needs_declared() {
        let pair = (serving, version);
        match crate::query::compare_declared_shared(store, pair, (from, i64::MAX), 10) {
            Ok(d) => c.declared = d,
            Err(e) => return unchecked("the declared aggregates ", &e),
        }
    }
    gate.refusal(&c)
}
