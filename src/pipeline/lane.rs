//! A stream read by the events' pipeline thread beside the events (issue 18: the reviews;
//! issue 20: the clicks): a second source, its own [`Windows`], its own cursors and
//! pending work — committed in the same store transaction as the events'
//! ([`crate::store::Store::commit_all`]), under the output version `{version}/{stream}`.
//! What differs between the streams is a [`Kind`]: its aggregator, how a record is read,
//! and where its final windows go in a commit.
//!
//! The rules are the events' ones, through the same code: [`Cursor::ingest`] (dedup by
//! id per partition and bucket, late below the partition watermark, the future bound,
//! dead letters), [`restore_from_store`] (resume points, handled offsets, late re-reads),
//! idleness after `pipeline.idle-timeout` of silence (reviews are sparse: a partition
//! without any must not hold the windows open forever).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Counts, Cursor, Ingested, PipelineError, mark_committed, owned_positions, restore_from_store,
};
use crate::config::Config;
use crate::declared::{Declared, DeclaredFinal, Item, Plan, Values};
use crate::log::{Record, RecordBatch};
use crate::metrics::Metrics;
use crate::review::agg::{ReviewFinal, Reviews};
use crate::scale::Scaled;
use crate::source::Source;
use crate::store::{Commit, DeadLetter, LateRecord, PartitionPosition, Store, VersionInfo};
use crate::stream::Stream;
use crate::window::{Aggregator, Windows};

/// Records per poll of a lane.
const BATCH: usize = 8192;

/// Polls a step makes at most while they come back full.
const BATCHES_PER_STEP: usize = 8;

/// A lane that found nothing is polled again after this (a poll of an empty log costs
/// a look at every partition).
const EMPTY_POLL_EVERY: Duration = Duration::from_millis(20);

/// What a lane's stream is: its aggregator, how its records are read, where its final
/// windows go in a commit.
pub(crate) trait Kind: Send + 'static {
    /// Its window aggregator.
    type Agg: Scaled + Aggregator<Window: Send, Final: Send> + Send;
    /// The stream.
    const STREAM: Stream;
    /// Reads `rec` and passes it through `cursor` into `core`.
    fn ingest(
        &self,
        cursor: &mut Cursor,
        core: &mut Windows<Self::Agg>,
        rec: &Record<'_>,
        cfg: &Config,
    ) -> Ingested;
    /// A commit of `finals` (the rest of `c` set by the lane).
    fn with_finals<'a>(
        c: Commit<'a>,
        finals: &'a [<Self::Agg as Aggregator>::Final],
        finalized_through: i64,
    ) -> Commit<'a>;
}

/// The reviews (`shop.reviews`).
pub(crate) struct ReviewKind;

impl Kind for ReviewKind {
    type Agg = Reviews;
    const STREAM: Stream = Stream::Reviews;

    fn ingest(
        &self,
        cursor: &mut Cursor,
        core: &mut Windows<Reviews>,
        rec: &Record<'_>,
        cfg: &Config,
    ) -> Ingested {
        let review = crate::review::decode(rec.value, cfg.pipeline.max_record_bytes);
        let p = rec.partition as usize;
        cursor.ingest(core, p, rec, review, cfg.pipeline.max_future)
    }

    fn with_finals<'a>(c: Commit<'a>, finals: &'a [ReviewFinal], _: i64) -> Commit<'a> {
        Commit {
            review_finals: finals,
            ..c
        }
    }
}

/// The clicks (`shop.clicks`, [`crate::clicks`]): any JSON objects, folded by the
/// aggregates declared on them.
pub(crate) struct ClickKind {
    clicks: crate::clicks::Clicks,
    plan: Plan,
}

impl ClickKind {
    /// The clicks of `cfg`, or `None` when no aggregate is declared on them.
    pub(crate) fn of(cfg: &Config) -> Option<Self> {
        if !cfg.reads_clicks() {
            return None;
        }
        Some(Self {
            clicks: cfg.clicks.compile().expect("validated [clicks]"),
            plan: cfg.declared_plan(Stream::Clicks),
        })
    }
}

impl ClickKind {
    /// Reads click `rec` and passes it through `cursor` into `core`'s partition `slot`.
    pub(crate) fn ingest_at(
        &self,
        cursor: &mut Cursor,
        core: &mut Windows<Declared>,
        slot: usize,
        rec: &Record<'_>,
        cfg: &Config,
    ) -> Ingested {
        let mut values = Values::new();
        let max_bytes = cfg.pipeline.max_record_bytes;
        let decoded = self
            .clicks
            .decode(rec.value, &self.plan.paths, max_bytes, &mut values);
        // Without an id field a click is its place in the log.
        let offset_id;
        let item = match decoded {
            Ok((ts_ms, id)) => Ok(Item {
                id: if let Some(id) = id {
                    id
                } else {
                    offset_id = rec.offset.to_string();
                    &offset_id
                },
                ts_ms,
                event_type: None,
                values: &values,
            }),
            Err(e) => Err(e),
        };
        cursor.ingest(core, slot, rec, item, cfg.pipeline.max_future)
    }
}

impl Kind for ClickKind {
    type Agg = Declared;
    const STREAM: Stream = Stream::Clicks;

    fn ingest(
        &self,
        cursor: &mut Cursor,
        core: &mut Windows<Declared>,
        rec: &Record<'_>,
        cfg: &Config,
    ) -> Ingested {
        self.ingest_at(cursor, core, rec.partition as usize, rec, cfg)
    }

    fn with_finals<'a>(c: Commit<'a>, finals: &'a [DeclaredFinal], through: i64) -> Commit<'a> {
        Commit {
            declared: finals,
            declared_through: Some(through),
            declared_merger_state: None,
            ..c
        }
    }
}

/// A stream read between the events' batches.
pub(crate) struct Lane<K: Kind> {
    kind: K,
    cfg: Config,
    version: String,
    source: Box<dyn Source>,
    store: Store,
    metrics: Arc<Metrics>,
    core: Windows<K::Agg>,
    cursors: Vec<Cursor>,
    owned: Vec<u32>,
    finals: Vec<<K::Agg as Aggregator>::Final>,
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
    counts: Counts,
    /// Windows committed since start.
    windows: u64,
}

/// What the events' pipeline asks of a lane, whatever its stream.
pub(crate) trait Stepping: Send {
    /// The stream it reads.
    fn stream(&self) -> Stream;
    /// Reads up to the log end as it is now, and no further (a bounded run).
    fn set_bounded(&mut self) -> Result<(), PipelineError>;
    /// Whether a bounded run read everything.
    fn exhausted(&mut self) -> bool;
    /// One poll (unless the last one found nothing very recently) and its records through
    /// the window core; then the windows the watermark passed. Returns the records read.
    fn step(&mut self, idle_timeout: Option<Duration>) -> Result<usize, PipelineError>;
    /// Finalises every open window, as if the input had ended (`--drain`).
    fn drain(&mut self);
    /// Whether enough waits to commit now: final windows, or many dead letters and late
    /// records.
    fn due(&self) -> bool;
    /// Records read since the last commit.
    fn uncommitted(&self) -> u64;
    /// The positions to commit with the pending windows, dead letters and late records.
    fn positions(&self) -> Vec<PartitionPosition>;
    /// This lane's part of a commit, with `positions` from [`Stepping::positions`].
    fn commit_part<'a>(&'a self, positions: &'a [PartitionPosition]) -> Commit<'a>;
    /// The commit of [`Stepping::commit_part`] is durable.
    fn committed(&mut self, positions: &[PartitionPosition]);
    /// Once a second: the log end, the outcome counters, the watermark and lag gauges.
    fn publish(&mut self) -> Result<(), PipelineError>;
    /// Outcomes since start.
    fn counts(&self) -> Counts;
}

/// The lanes `cfg` reads beside the events of output version `version`: the reviews
/// (with `reviews`, unless `reviews.read` is off) and the clicks (when an aggregate is
/// declared on them); a Kafka topic that does not exist is a warning and no lane.
///
/// # Errors
/// Store or source failure.
pub(crate) fn open_lanes(
    cfg: &Config,
    version: &str,
    store: &Store,
    metrics: &Arc<Metrics>,
    reviews: bool,
) -> Result<Vec<Box<dyn Stepping>>, PipelineError> {
    let mut lanes: Vec<Box<dyn Stepping>> = Vec::new();
    if reviews
        && cfg.reviews.read
        && let Some(l) = Lane::open(ReviewKind, cfg, version, store, metrics.clone())?
    {
        lanes.push(Box::new(l));
    }
    if let Some(kind) = ClickKind::of(cfg)
        && let Some(l) = Lane::open(kind, cfg, version, store, metrics.clone())?
    {
        lanes.push(Box::new(l));
    }
    Ok(lanes)
}

impl<K: Kind> Lane<K> {
    /// The lane of `kind` for output version `version`, or `None` when (Kafka) its topic
    /// does not exist.
    ///
    /// # Errors
    /// Store or source failure.
    pub(crate) fn open(
        kind: K,
        cfg: &Config,
        version: &str,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, PipelineError> {
        let cfg = cfg.for_stream(K::STREAM);
        let version = K::STREAM.version(version);
        let Some(source) =
            crate::source::open_stream(&cfg, Arc::new(store.clone()), &version, metrics.clone())?
        else {
            tracing::warn!(
                "not reading {}: topic {} not found (create it with `kappa topics apply`, then restart)",
                K::STREAM,
                cfg.kafka.topic
            );
            return Ok(None);
        };
        Self::with_source(kind, cfg, version, source, store, metrics).map(Some)
    }

    fn with_source(
        kind: K,
        cfg: Config,
        version: String,
        mut source: Box<dyn Source>,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        store.bind_stream_source(K::STREAM, &source.id())?;
        store.ensure_version(&VersionInfo {
            name: version.clone(),
            config: cfg.results_fingerprint(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            finalized_through: i64::MIN,
            state: crate::store::VersionState::Ready,
        })?;
        source.no_wait();
        let partitions = source.partitions() as usize;
        tracing::info!(version, "reading the {} stream too", K::STREAM);
        Ok(Self {
            core: K::Agg::core(&cfg, partitions),
            kind,
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

    /// One poll of the source and its records through the core; returns how many.
    fn read_batch(&mut self) -> Result<usize, PipelineError> {
        self.batch.clear();
        let n = self.source.poll(&mut self.batch, BATCH)?;
        let now = Instant::now();
        for rec in self.batch.iter() {
            let p = rec.partition as usize;
            let outcome = self
                .kind
                .ingest(&mut self.cursors[p], &mut self.core, &rec, &self.cfg);
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
        Ok(n)
    }

    /// Commits this lane's pending work by itself (a replay of the stream alone).
    fn commit_alone(&mut self) -> Result<(), PipelineError> {
        let positions = self.positions();
        self.store.commit_all(&[self.commit_part(&positions)])?;
        self.committed(&positions);
        Ok(())
    }
}

impl<K: Kind> Stepping for Lane<K> {
    fn stream(&self) -> Stream {
        K::STREAM
    }

    fn set_bounded(&mut self) -> Result<(), PipelineError> {
        Ok(self.source.set_bounded()?)
    }

    fn exhausted(&mut self) -> bool {
        self.source.exhausted()
    }

    fn step(&mut self, idle_timeout: Option<Duration>) -> Result<usize, PipelineError> {
        if let Some(owned) = self.source.take_assignment() {
            let mut core = K::Agg::core(&self.cfg, self.ends.len());
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
        // A backlog is read on, a few batches per step: the events' poll before this one
        // may have waited for records that did not come (50 ms on Kafka), and a busy
        // stream of clicks must not be held to a batch per wait.
        let mut n = 0;
        for _ in 0..BATCHES_PER_STEP {
            let got = self.read_batch()?;
            n += got;
            if got < BATCH {
                break;
            }
        }
        self.last_found = n > 0;
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

    fn drain(&mut self) {
        self.finals.extend(self.core.drain());
    }

    fn due(&self) -> bool {
        !self.finals.is_empty() || self.dead.len() + self.late.len() > 50_000
    }

    fn uncommitted(&self) -> u64 {
        self.records
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        owned_positions(&self.core, &self.cursors)
    }

    fn commit_part<'a>(&'a self, positions: &'a [PartitionPosition]) -> Commit<'a> {
        let through = self.core.finalized_through();
        let c = Commit {
            version: &self.version,
            finals: &[],
            review_finals: &[],
            positions,
            finalized_through: through,
            checkpoints: &[],
            dead_letters: &self.dead,
            late: &self.late,
            merger_state: None,
            epochs: &[],
            declared: &[],
            declared_through: None,
            declared_merger_state: None,
        };
        K::with_finals(c, &self.finals, through)
    }

    fn committed(&mut self, positions: &[PartitionPosition]) {
        let label = [K::STREAM.as_str()];
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

    fn publish(&mut self) -> Result<(), PipelineError> {
        self.ends = self.source.end_offsets()?;
        let m = &self.metrics;
        let stream = K::STREAM.as_str();
        self.unflushed.apply_stream(K::STREAM, m);
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

    fn counts(&self) -> Counts {
        self.counts
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
    if !cfg.reviews.read {
        return Err(PipelineError::NoStream(
            "no reviews to replay: reviews.read is off".into(),
        ));
    }
    let Some(mut lane) = Lane::open(ReviewKind, cfg, &scratch, store, Arc::new(Metrics::new()))?
    else {
        return Err(PipelineError::NoStream(
            "no reviews to replay: the reviews topic does not exist".into(),
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
