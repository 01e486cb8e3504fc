//! The reviews stream read by the events' pipeline thread (issue 18): a second source,
//! its own [`Windows`] of [`Reviews`], its own cursors and pending work — committed in the
//! same store transaction as the events' ([`crate::store::Store::commit_all`]), under the
//! output version `{version}/reviews`.
//!
//! The rules are the events' ones, through the same code: [`Cursor::ingest`] (dedup by
//! `review_id` per partition and bucket, late below the partition watermark, the future
//! bound, dead letters), [`restore_from_store`] (resume points, handled offsets, late
//! re-reads), idleness after `pipeline.idle-timeout` of silence (reviews are sparse: a
//! partition without any must not hold the windows open forever).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Counts, Cursor, Ingested, PipelineError, mark_committed, owned_positions, restore_from_store,
};
use crate::config::Config;
use crate::log::RecordBatch;
use crate::metrics::Metrics;
use crate::review::agg::{ReviewFinal, Reviews};
use crate::source::Source;
use crate::store::{Commit, DeadLetter, LateRecord, PartitionPosition, Store, VersionInfo};
use crate::stream::Stream;
use crate::window::Windows;

/// Records per poll of the reviews.
const BATCH: usize = 8192;

/// A lane that found nothing is polled again after this (a poll of an empty log costs
/// a look at every partition).
const EMPTY_POLL_EVERY: Duration = Duration::from_millis(20);

/// The reviews, read between the events' batches.
pub(crate) struct Lane {
    cfg: Config,
    version: String,
    source: Box<dyn Source>,
    store: Store,
    metrics: Arc<Metrics>,
    core: Windows<Reviews>,
    cursors: Vec<Cursor>,
    owned: Vec<u32>,
    finals: Vec<ReviewFinal>,
    dead: Vec<DeadLetter>,
    late: Vec<LateRecord>,
    /// Records read since the last commit.
    records: u64,
    batch: RecordBatch,
    last_poll: Option<Instant>,
    last_found: bool,
    ends: Vec<u64>,
    /// Outcomes since the last publication, and in all.
    unflushed: Counts,
    /// Outcomes since start.
    pub(crate) counts: Counts,
    /// Windows committed since start.
    pub(crate) windows: u64,
}

impl Lane {
    /// The reviews lane of output version `version`, or `None` when the configuration
    /// does not read reviews or (Kafka) the reviews topic does not exist.
    ///
    /// # Errors
    /// Store or source failure.
    pub(crate) fn open(
        cfg: &Config,
        version: &str,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, PipelineError> {
        if !cfg.reviews.read {
            return Ok(None);
        }
        let cfg = cfg.for_stream(Stream::Reviews);
        let version = Stream::Reviews.version(version);
        let Some(source) =
            crate::source::open_stream(&cfg, Arc::new(store.clone()), &version, metrics.clone())?
        else {
            tracing::warn!(
                "not reading reviews: topic {} not found (create it with `kappa topics apply`, then restart)",
                cfg.kafka.topic
            );
            return Ok(None);
        };
        Self::with_source(cfg, version, source, store, metrics).map(Some)
    }

    fn with_source(
        cfg: Config,
        version: String,
        mut source: Box<dyn Source>,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        store.bind_stream_source(Stream::Reviews, &source.id())?;
        store.ensure_version(&VersionInfo {
            name: version.clone(),
            config: cfg.results_fingerprint(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            finalized_through: i64::MIN,
            state: crate::store::VersionState::Ready,
        })?;
        source.no_wait();
        let partitions = source.partitions() as usize;
        Ok(Self {
            core: Self::new_core(&cfg, partitions),
            cfg,
            version,
            source,
            store: store.clone(),
            metrics,
            cursors: Vec::new(),
            owned: Vec::new(),
            finals: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
            records: 0,
            batch: RecordBatch::new(),
            last_poll: None,
            last_found: false,
            ends: vec![0; partitions],
            unflushed: Counts::default(),
            counts: Counts::default(),
            windows: 0,
        })
    }

    fn new_core(cfg: &Config, partitions: usize) -> Windows<Reviews> {
        Windows::with(
            cfg.window_config(),
            partitions,
            Reviews::new(cfg.reviews.min_reviews),
        )
    }

    /// The output version the reviews are committed under.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Reads up to the log end as it is now, and no further (a bounded run).
    pub(crate) fn set_bounded(&mut self) -> Result<(), PipelineError> {
        Ok(self.source.set_bounded()?)
    }

    /// Whether a bounded run read everything.
    pub(crate) fn exhausted(&mut self) -> bool {
        self.source.exhausted()
    }

    /// One poll (unless the last one found nothing very recently) and its records through
    /// the window core; then the windows the watermark passed. Returns the records read.
    pub(crate) fn step(&mut self, idle_timeout: Option<Duration>) -> Result<usize, PipelineError> {
        if let Some(owned) = self.source.take_assignment() {
            let mut core = Self::new_core(&self.cfg, self.ends.len());
            self.cursors = restore_from_store(
                &self.store,
                &self.version,
                self.source.as_mut(),
                &owned,
                &mut core,
            )?;
            self.core = core;
            self.owned = owned;
            self.finals.clear();
            self.dead.clear();
            self.late.clear();
        }
        if !self.last_found
            && self
                .last_poll
                .is_some_and(|t| t.elapsed() < EMPTY_POLL_EVERY)
        {
            return Ok(0);
        }
        self.last_poll = Some(Instant::now());
        self.batch.clear();
        let n = self.source.poll(&mut self.batch, BATCH)?;
        self.last_found = n > 0;
        let max_bytes = self.cfg.pipeline.max_record_bytes;
        let max_future = self.cfg.pipeline.max_future;
        let now = Instant::now();
        for rec in self.batch.iter() {
            let p = rec.partition as usize;
            let review = crate::review::decode(rec.value, max_bytes);
            let outcome = self.cursors[p].ingest(&mut self.core, p, &rec, review, max_future);
            self.unflushed.add(&outcome);
            match outcome {
                Ingested::Late(l) => self.late.push(l),
                Ingested::Invalid(d) => self.dead.push(d),
                Ingested::Rebuilt | Ingested::Accepted | Ingested::Duplicate => {}
            }
            self.cursors[p].last_record_at = now;
            if self.core.is_idle(p) {
                self.core.set_idle(p, false);
            }
        }
        self.records += n as u64;
        if n == 0
            && let Some(t) = idle_timeout
        {
            for &p in &self.owned {
                let i = p as usize;
                if !self.core.is_idle(i) && self.cursors[i].idle(self.ends[i], t) {
                    self.core.set_idle(i, true);
                }
            }
        }
        self.finals.extend(self.core.advance());
        Ok(n)
    }

    /// Finalises every open window, as if the input had ended (`--drain`).
    pub(crate) fn drain(&mut self) {
        self.finals.extend(self.core.drain());
    }

    /// Whether enough waits to commit now: final windows, or many dead letters and late
    /// records.
    pub(crate) fn due(&self) -> bool {
        !self.finals.is_empty() || self.dead.len() + self.late.len() > 50_000
    }

    /// Records read since the last commit.
    pub(crate) fn uncommitted(&self) -> u64 {
        self.records
    }

    /// The positions to commit with the pending windows, dead letters and late records.
    pub(crate) fn positions(&self) -> Vec<PartitionPosition> {
        owned_positions(&self.core, &self.cursors)
    }

    /// This lane's part of a commit, with `positions` from [`Lane::positions`].
    pub(crate) fn commit_part<'a>(&'a self, positions: &'a [PartitionPosition]) -> Commit<'a> {
        Commit {
            version: &self.version,
            finals: &[],
            review_finals: &self.finals,
            positions,
            finalized_through: self.core.finalized_through(),
            checkpoints: &[],
            dead_letters: &self.dead,
            late: &self.late,
            merger_state: None,
            epochs: &[],
            declared: &[],
            declared_through: None,
        }
    }

    /// The commit of [`Lane::commit_part`] is durable.
    pub(crate) fn committed(&mut self, positions: &[PartitionPosition]) {
        let label = [Stream::Reviews.as_str()];
        self.metrics
            .stream_windows_finalised
            .with_label_values(&label)
            .inc_by(self.finals.len() as u64);
        self.windows += self.finals.len() as u64;
        self.finals.clear();
        self.dead.clear();
        self.late.clear();
        self.records = 0;
        mark_committed(&mut self.cursors, self.source.as_mut(), positions);
    }

    /// Once a second: the log end, the outcome counters, the watermark and lag gauges.
    pub(crate) fn publish(&mut self) -> Result<(), PipelineError> {
        self.ends = self.source.end_offsets()?;
        let m = &self.metrics;
        let stream = Stream::Reviews.as_str();
        self.unflushed.apply_stream(Stream::Reviews, m);
        self.counts.merge(&self.unflushed);
        self.unflushed = Counts::default();
        let lag: u64 = self
            .owned
            .iter()
            .map(|&p| self.ends[p as usize].saturating_sub(self.cursors[p as usize].next))
            .sum();
        m.stream_lag
            .with_label_values(&[stream])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        if let Some(wm) = self.core.pipeline_watermark().filter(|&w| w != i64::MIN) {
            m.stream_watermark
                .with_label_values(&[stream])
                .set(wm as f64 / 1000.0);
        }
        let (open, _) = self.core.open_state();
        m.stream_open_windows
            .with_label_values(&[stream])
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// What [`replay_reviews`] did.
#[derive(Debug, Clone, Copy)]
pub struct ReviewReplay {
    /// Reviews' outcomes.
    pub counts: Counts,
    /// Windows made final.
    pub windows: u64,
}

/// `kappa replay --stream reviews`: recomputes the reviews part of `version` from the
/// beginning of the reviews log (up to its end now) with `cfg` — its window sizes, lateness
/// bound, top-K and `reviews.min-reviews` — into a scratch part, then puts that part in the
/// place of the version's in one transaction ([`Store::replace_version`]): windows the
/// reviews' watermark passed are final, the others stay open with their resume points for
/// the live pipeline. Until then the version's reviews are untouched; a crash leaves the
/// scratch part, removed by the next such replay. The events' results are not touched.
///
/// # Errors
/// Store or source failure; the configuration does not read reviews (or, Kafka, the topic
/// does not exist); cancelled.
pub fn replay_reviews(
    cfg: &Config,
    store: &Store,
    version: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<ReviewReplay, PipelineError> {
    if store
        .merger_state(&Stream::Reviews.version(version))?
        .is_some()
    {
        return Err(PipelineError::NoStream(format!(
            "the reviews of {version} are merged from workers' partials: a replay of the reviews alone is a single process's (its windows would not match the merger's state)"
        )));
    }
    let scratch = format!("{}reviews-{version}", crate::store::SCRATCH_PREFIX);
    let scratch_part = Stream::Reviews.version(&scratch);
    store.remove_version(&scratch_part)?;
    let Some(mut lane) = Lane::open(cfg, &scratch, store, Arc::new(Metrics::new()))? else {
        return Err(PipelineError::NoStream(
            "no reviews to replay: reviews.read is off, or the reviews topic does not exist".into(),
        ));
    };
    lane.set_bounded()?;
    loop {
        if cancel.is_cancelled() {
            return Err(PipelineError::Source(crate::source::SourceError::Cancelled));
        }
        let n = lane.step(None)?;
        if lane.due() {
            lane.commit_alone()?;
        }
        if n == 0 && lane.exhausted() {
            break;
        }
    }
    // No drain: windows the reviews' watermark has not passed stay open, with their
    // resume points, for the live pipeline to go on with (as a replay of the events does).
    lane.commit_alone()?;
    lane.publish()?;
    store.replace_version(&scratch_part, &Stream::Reviews.version(version))?;
    Ok(ReviewReplay {
        counts: lane.counts,
        windows: lane.windows,
    })
}

impl Lane {
    /// Commits this lane's pending work by itself (a replay of the reviews).
    fn commit_alone(&mut self) -> Result<(), PipelineError> {
        let positions = self.positions();
        self.store.commit_all(&[self.commit_part(&positions)])?;
        self.committed(&positions);
        Ok(())
    }
}
