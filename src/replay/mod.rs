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

pub use plan::{Plan, ReplayRequest, RewriteRange, resolve};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline, PipelineError, Shared};
use crate::source::SourceError;
use crate::store::{ReplayRecord, Store, StoreError};

/// Lag (records, on every partition) under which a new version counts as caught up and
/// `--promote` makes it serving.
pub const PROMOTE_MAX_LAG: u64 = 1000;

/// Prefix of the scratch versions in-place corrections compute into (never listed).
pub const SCRATCH_PREFIX: &str = "_replay-";

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
            outcome: "running".into(),
        };
        store.record_replay(&record)?;
        Ok(Arc::new(Self {
            plan,
            record: Mutex::new(record),
            cancel: CancellationToken::new(),
            shared: Arc::new(Shared::default()),
            started: Instant::now(),
            active: AtomicBool::new(true),
        }))
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
            progress: if active { progress.min(1.0) } else { 1.0 },
            done,
            total,
            rate,
            eta_seconds,
            partitions,
        }
    }

    /// Updates the history record.
    pub(crate) fn finish(&self, store: &Store, outcome: &str, windows: u64) {
        let mut r = self.record.lock().expect("record lock");
        r.outcome = outcome.to_string();
        r.ended_ms = Some(chrono::Utc::now().timestamp_millis());
        r.records = self.shared.status().records;
        r.windows = windows;
        if let Err(e) = store.record_replay(&r) {
            tracing::error!("recording the outcome of replay {}: {e}", r.id);
        }
        drop(r);
        self.active.store(false, Ordering::Relaxed);
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
            "replay started"
        );
        let mut pipeline = None;
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            // A progress line every 10 s while it reads.
            scope.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if last.elapsed() >= std::time::Duration::from_secs(10) {
                        last = Instant::now();
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
                }
            });
            let r = self.run_inner(store, open, &mut pipeline, live_after);
            done.store(true, Ordering::Relaxed);
            r
        });
        metrics.replays_active.dec();
        metrics
            .replay_records
            .with_label_values(&[&version])
            .inc_by(self.view().done);
        match &result {
            Ok(windows) if self.cancel.is_cancelled() => self.finish(store, "cancelled", *windows),
            Ok(windows) => {
                metrics
                    .replay_progress
                    .with_label_values(&[&version])
                    .set(1.0);
                let outcome = match (self.plan.in_place, self.plan.request.promote) {
                    (true, _) => "completed",
                    (false, true) => "caught-up, promoted",
                    (false, false) => "caught-up",
                };
                self.finish(store, outcome, *windows);
            }
            Err(e) => self.finish(store, &format!("failed: {e}"), 0),
        }
        tracing::info!(
            replay = id,
            version,
            outcome = self.view().record.outcome,
            records = self.view().record.records,
            "replay finished"
        );
        if let (Some(mut p), true, Ok(_)) = (pipeline, live_after, &result)
            && !self.cancel.is_cancelled()
        {
            tracing::info!("output version {version} caught up; it goes on consuming live");
            if let Err(e) = p.run_phase(Mode::Live, &self.cancel) {
                tracing::error!("output version {version} stopped: {e}");
            }
        }
        result
    }

    fn run_inner(
        &self,
        store: &Store,
        open: &Opener<'_>,
        keep: &mut Option<Pipeline>,
        live_after: bool,
    ) -> Result<u64, ReplayError> {
        let plan = &self.plan;
        let target = plan.target_version(self.id());
        store.create_version(
            &crate::store::VersionInfo {
                name: target.clone(),
                config: plan.fingerprint.clone(),
                created_ms: chrono::Utc::now().timestamp_millis(),
                finalized_through: i64::MIN,
            },
            &plan.starts,
        )?;
        let result = (|| {
            let source = open(&target, &self.cancel)?;
            let pipeline = Pipeline::new(
                &plan.cfg,
                &target,
                source,
                store.clone(),
                Arc::new(Metrics::new()),
                self.shared.clone(),
            )?;
            let mut pipeline = if plan.from_earliest() {
                pipeline
            } else {
                pipeline.without_index()
            };
            // In place, the log up to its end now is taken as complete for the range: the
            // windows are drained (a larger --max-delay would otherwise hold them open), and
            // only those the serving version already has final are swapped in.
            // A new version in a server catches up with a log that keeps growing, then goes
            // on live; in the foreground it reads to the log end as it was at start.
            let mode = if plan.in_place {
                Mode::UntilCaughtUp { drain: true }
            } else if live_after {
                Mode::CatchUp {
                    max_lag: PROMOTE_MAX_LAG,
                }
            } else {
                Mode::UntilCaughtUp { drain: false }
            };
            let summary = pipeline.run_phase(mode, &self.cancel)?;
            Ok::<_, ReplayError>((summary.windows, pipeline))
        })();
        if !plan.in_place {
            return match result {
                Ok((windows, pipeline)) if !self.cancel.is_cancelled() => {
                    if plan.request.promote {
                        store.promote(&target)?;
                        tracing::info!(
                            "output version {target} caught up and promoted: it is serving now"
                        );
                    }
                    *keep = Some(pipeline);
                    Ok(windows)
                }
                other => {
                    // An unfinished new version is of no use: remove it.
                    store.drop_version(&target)?;
                    other.map(|(w, _)| w)
                }
            };
        }
        let out = match result {
            Ok(_) if !self.cancel.is_cancelled() => store
                .copy_windows(&target, &plan.version, plan.from_ms, plan.to_ms)
                .map_err(ReplayError::from),
            Ok(_) => Ok(0),
            Err(e) => Err(e),
        };
        store.drop_version(&target)?;
        out
    }
}

/// Opens a source for an output version (standalone: explicit assignment), giving up
/// when the token fires.
pub type Opener<'a> =
    dyn Fn(&str, &CancellationToken) -> Result<Box<dyn crate::source::Source>, SourceError> + 'a;
