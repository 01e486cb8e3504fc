//! The pipeline loop: read a batch from the source, decode, feed the window core, and
//! commit final windows together with positions. Runs on one dedicated thread.
//!
//! Where the guarantees are enforced:
//! - exactly-once effect: [`Pipeline::commit`] writes finals, positions and index
//!   checkpoints in one store transaction;
//! - restart: [`Pipeline::restore`] seeks each partition to its resume offset and marks
//!   the already-handled offsets as replayed, so nothing is counted or recorded twice;
//! - determinism: the window core decides per partition, in offset order.

pub(crate) mod catalogue;
pub(crate) mod declared;
mod ingest;
pub(crate) mod lane;
mod status;

pub use ingest::{Counts, Cursor, Document, Ingested, Judging, Tally};
use lane::Stepping;
pub use lane::{ReviewReplay, replay_reviews};
pub use status::{PartitionStatus, Shared, State, Status};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::declared::Values;
use crate::event::{InvalidKind, Join, Rules, decode_joined};
use crate::log::{Record, RecordBatch};
use crate::metrics::Metrics;
use crate::source::{Source, SourceError};
use crate::store::{
    Commit, DEAD_LETTER_RAW_BYTES, DeadLetter, LateRecord, PartitionPosition, Store, StoreError,
    VersionInfo,
};
use crate::window::{FinalWindow, PartitionResume, WindowCore};

/// Records between two event-time index checkpoints of a partition.
pub const CHECKPOINT_EVERY: u64 = 10_000;

/// Batches at least this large are decoded on several threads.
const PARALLEL_DECODE_MIN: usize = 8192;

/// Records per piece of a batch decoded on several threads.
const DECODE_CHUNK: usize = 1024;

/// Hands every record of `batch` with its decoded event to `fold`, in order, while
/// `threads - 1` helpers decode ahead: the batch is cut into pieces of
/// [`DECODE_CHUNK`] records that any thread claims in order and decodes; this thread folds
/// each piece as soon as it is decoded, and decodes the next unclaimed piece itself
/// rather than wait for one. Folding stays sequential and in offset order (the
/// watermark, dedup and windows see what one thread would); only decoding overlaps it.
fn decode_each<'b, T: Send>(
    batch: &'b RecordBatch,
    threads: usize,
    decode: impl Fn(&Record<'b>) -> T + Sync,
    mut fold: impl FnMut(&Record<'b>, T),
) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    type Piece<T> = Vec<T>;
    /// Marks the decoding abandoned when a helper unwinds (its piece never comes).
    struct Abandon<'f>(&'f AtomicBool);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Ordering::Release);
            }
        }
    }
    let n = batch.len();
    let pieces = n.div_ceil(DECODE_CHUNK);
    let slots: Vec<Mutex<Option<Piece<T>>>> = (0..pieces).map(|_| Mutex::new(None)).collect();
    let claimed = AtomicUsize::new(0);
    let abandoned = AtomicBool::new(false);
    // Claims the next piece and decodes it into its slot; false when none is left.
    let decode_next = || {
        if claimed.load(Ordering::Relaxed) >= pieces {
            return false;
        }
        let c = claimed.fetch_add(1, Ordering::Relaxed);
        if c >= pieces {
            return false;
        }
        let piece: Piece<T> = (c * DECODE_CHUNK..((c + 1) * DECODE_CHUNK).min(n))
            .map(|i| decode(&batch.get(i)))
            .collect();
        *slots[c]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(piece);
        true
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| {
                let _abandon = Abandon(&abandoned);
                while decode_next() {}
            });
        }
        for (c, slot) in slots.iter().enumerate() {
            let piece = loop {
                let taken = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(p) = taken {
                    break p;
                }
                // Piece `c` is being decoded elsewhere: decode another, or wait for it.
                if !decode_next() {
                    assert!(
                        !abandoned.load(Ordering::Acquire),
                        "a decode thread panicked"
                    );
                    std::thread::yield_now();
                }
            };
            for (i, ev) in (c * DECODE_CHUNK..).zip(piece) {
                fold(&batch.get(i), ev);
            }
        }
    });
}

/// A record's event, or why it has none.
type Decoded<'b> = Result<crate::event::Event<'b>, crate::event::DecodeError>;

/// One record's event, with the catalogue as of its offset when the records are joined.
fn decode_record<'b>(
    rec: &Record<'b>,
    rules: &Rules,
    joined: Option<&catalogue::Joined>,
) -> Decoded<'b> {
    let at = joined.map(|j| j.at(rec.partition, rec.offset));
    decode_joined(rec.value, rules, at.as_ref().map(|a| a as &dyn Join))
}

/// [`decode_record`], and the values of the declared `paths` (taken out in the same scan).
fn decode_capturing_record<'b>(
    rec: &Record<'b>,
    rules: &Rules,
    joined: Option<&catalogue::Joined>,
    paths: &crate::declared::Paths,
) -> (Decoded<'b>, Values<'b>) {
    let at = joined.map(|j| j.at(rec.partition, rec.offset));
    let join = at.as_ref().map(|a| a as &dyn Join);
    let mut values = Values::new();
    let ev = crate::event::decode_capturing(rec.value, rules, join, paths, &mut values);
    (ev, values)
}

/// Decodes every record of `batch` and folds it in order: on several threads when the
/// batch is large ([`decode_each`]), else in the loop with nothing materialised.
fn decode_all<'b, T: Send>(
    batch: &'b RecordBatch,
    threads: usize,
    decode: impl Fn(&Record<'b>) -> T + Sync,
    mut fold: impl FnMut(&Record<'b>, T),
) {
    if threads > 1 && batch.len() >= PARALLEL_DECODE_MIN {
        decode_each(batch, threads, decode, fold);
    } else {
        for rec in batch.iter() {
            fold(&rec, decode(&rec));
        }
    }
}

/// Failures that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing or reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stream asked for is not read (off in the configuration, or no Kafka topic).
    #[error("{0}")]
    NoStream(String),
}

/// When the pipeline stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Consume until cancelled, tailing the log.
    Live,
    /// Consume up to the log end as it was at start, commit, stop. With `drain`, also
    /// finalise the windows still open, as if the input had ended.
    UntilCaughtUp {
        /// Finalise open windows at the end.
        drain: bool,
        /// Stop early, once every window ending at or before this is final (an in-place
        /// correction with `--to` needs nothing after its range).
        until_final: Option<i64>,
    },
    /// Consume as live (the log keeps growing) until every owned partition is within
    /// `max_lag` records of the log end, then commit and stop: a new version catching up.
    CatchUp {
        /// Records behind the end that still count as caught up.
        max_lag: u64,
    },
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Records read (including re-read ones after a restart).
    pub records: u64,
    /// Bytes of record values read.
    pub bytes: u64,
    /// Windows committed as final.
    pub windows: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// New records (not re-read after a restart) aggregated, late, duplicate, invalid.
    pub accepted: u64,
    /// See `accepted`.
    pub late: u64,
    /// See `accepted`.
    pub duplicates: u64,
    /// See `accepted`.
    pub invalid: u64,
    /// The other streams' outcomes, when the pipeline read them too (reviews, clicks).
    pub streams: Vec<(crate::stream::Stream, Counts)>,
}

/// Work done since the last commit: lost on a crash, redone from the store's positions.
#[derive(Default)]
struct Pending {
    finals: Vec<(FinalWindow, Instant)>,
    dead: Vec<DeadLetter>,
    late: Vec<LateRecord>,
    records: u64,
}

/// One running pipeline: the core, the source and the bookkeeping around them.
pub struct Pipeline {
    cfg: Config,
    source: Box<dyn Source>,
    store: Store,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    core: WindowCore,
    version: String,
    partitions: usize,
    /// Where reading each partition is.
    cursors: Vec<Cursor>,
    pending: Pending,
    status: Status,
    ends: Vec<u64>,
    /// Partitions this process reads (all of an embedded log; a consumer group's share).
    owned: Vec<u32>,
    /// Outcomes per partition since the last flush to status and metrics (counted
    /// locally: no atomic per record on the hot path).
    tally: Tally,
    /// Threads decoding a batch (the records are independent; the window core then takes
    /// them in order on this thread, so results do not depend on it).
    decode_threads: usize,
    /// "Caught up" was logged since the last (re)assignment.
    caught_up_logged: bool,
    /// Writes event-time index checkpoints (only a pipeline that read each partition from
    /// its beginning or from a checkpoint knows the exact max event time before an offset).
    write_index: bool,
    /// The other streams (reviews, clicks), read on this thread between the events' batches
    /// and committed in the same transactions ([`Pipeline::with_streams`]).
    lanes: Vec<Box<dyn Stepping>>,
    /// The product catalogue events are joined with (read whole at start, then between
    /// batches).
    catalogue: Option<catalogue::CatalogueLane>,
    /// The declared aggregates' core, following `core` (none declared: `None`).
    declared: Option<declared::Follower>,
}

impl Pipeline {
    /// Prepares a pipeline computing output version `version` with `cfg`: binds the store
    /// to the source and creates or checks the version; the state is restored from the
    /// committed positions once the source says which partitions are ours.
    ///
    /// # Errors
    /// Store or source failure, or a store built from another log or configuration.
    pub fn new(
        cfg: &Config,
        version: &str,
        mut source: Box<dyn Source>,
        store: Store,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
    ) -> Result<Self, PipelineError> {
        store.bind_source(&source.id())?;
        let version = version.to_string();
        let info = store.ensure_version(&VersionInfo {
            name: version.clone(),
            config: cfg.results_fingerprint(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            finalized_through: i64::MIN,
            state: crate::store::VersionState::Ready,
        })?;
        // A topic deleted and recreated has a new id, even when refilled past the
        // positions the store holds (which offset checks alone cannot see).
        if let Some(id) = source.incarnation()
            && let Some(was) = store.bind_incarnation(&version, info.created_ms, &id)?
        {
            source.history_changed(&format!(
                "the topic was deleted and recreated (its id was {was} when version {version} began reading it, it is {id} now)"
            ))?;
        }
        let partitions = source.partitions() as usize;
        metrics.init_partitions(source.kind(), source.partitions());
        metrics
            .serving_version
            .with_label_values(&[&store.serving()?])
            .set(1);
        // State is built by `restore` once the source says which partitions are ours.
        let core = WindowCore::new(cfg.window_config(), partitions);
        let status = Status {
            state: State::Starting,
            version: version.clone(),
            source: source.kind().into(),
            ..Status::default()
        };
        let mut pipeline = Self {
            cfg: cfg.clone(),
            source,
            store,
            metrics,
            shared,
            core,
            version,
            partitions,
            cursors: vec![Cursor::new(0, 0, Default::default()); partitions],
            pending: Pending::default(),
            status,
            ends: vec![0; partitions],
            tally: Tally::new(partitions),
            owned: Vec::new(),
            write_index: true,
            lanes: Vec::new(),
            catalogue: None,
            declared: declared::Follower::open(cfg, partitions),
            caught_up_logged: false,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        };
        pipeline.catalogue = catalogue::CatalogueLane::open(
            &pipeline.cfg,
            &pipeline.version,
            Some(&pipeline.store),
            pipeline.metrics.clone(),
        )?;
        pipeline.refresh_lag()?;
        pipeline.publish(false);
        Ok(pipeline)
    }

    /// Also reads the clicks stream when aggregates are declared on it, and with `reviews`
    /// the reviews stream (unless `reviews.read` is off), each into `{version}/{stream}`,
    /// committing every stream in one transaction; a Kafka topic that does not exist is
    /// a warning.
    ///
    /// # Errors
    /// Store or source failure.
    pub fn with_streams(mut self, reviews: bool) -> Result<Self, PipelineError> {
        self.lanes = lane::open_lanes(
            &self.cfg,
            &self.version,
            &self.store,
            &self.metrics,
            reviews,
        )?;
        Ok(self)
    }

    /// Turns event-time index checkpoints off (replays that start mid-log).
    pub fn without_index(mut self) -> Self {
        self.write_index = false;
        self
    }

    /// The output version this pipeline computes.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// (Re)builds the state for the partitions this process owns, from the store: drops
    /// uncommitted work, restores each partition's resume point and seeks the owned ones
    /// there. Called for the first assignment and after every rebalance.
    fn restore(&mut self, owned: &[u32]) -> Result<(), PipelineError> {
        let mut core = WindowCore::new(self.cfg.window_config(), self.partitions);
        let cursors = restore_from_store(
            &self.store,
            &self.version,
            self.source.as_mut(),
            owned,
            &mut core,
        )?;
        // The declared core resumes where the shop's does (the positions are the earlier
        // of both cores' resume points), its history as restored there.
        if let Some(d) = &mut self.declared {
            let resume: Vec<PartitionResume> = (0..self.partitions)
                .map(|p| PartitionResume {
                    offset: cursors[p].next,
                    max_ts_before: core.max_event_time(p),
                })
                .collect();
            d.restore(&self.store, &self.version, &resume, owned)?;
        }
        // Entries appended while nothing read them: the events not handled yet see them.
        if let Some(c) = &mut self.catalogue {
            let handled: Vec<u64> = cursors.iter().map(Cursor::handled_mark).collect();
            c.open_epoch(&handled);
        }
        self.core = core;
        self.cursors = cursors;
        self.pending = Pending::default();
        self.owned = owned.to_vec();
        self.caught_up_logged = false;
        self.status.state = if self
            .owned
            .iter()
            .any(|&p| self.cursors[p as usize].rebuilding())
        {
            State::Recovering
        } else {
            State::Running
        };
        Ok(())
    }

    /// Runs until `cancel` fires or, in [`Mode::UntilCaughtUp`], the log end as of start
    /// is reached. Commits before returning.
    ///
    /// # Errors
    /// Source or store failure (the last commit stands; a restart resumes from it).
    pub fn run(mut self, mode: Mode, cancel: &CancellationToken) -> Result<Summary, PipelineError> {
        self.run_phase(mode, cancel)
    }

    /// [`Pipeline::run`] without giving the pipeline up: a replay catches up, then goes on
    /// live with the same state.
    ///
    /// # Errors
    /// Source or store failure (the last commit stands; a restart resumes from it).
    pub fn run_phase(
        &mut self,
        mode: Mode,
        cancel: &CancellationToken,
    ) -> Result<Summary, PipelineError> {
        let result = self.run_inner(mode, cancel);
        self.shared.set_ready(false);
        self.metrics.pipeline_up.set(0);
        if let Err(e) = &result {
            self.status.state = State::Failed;
            self.status.error = Some(e.to_string());
            self.publish(false);
        }
        result
    }

    fn run_inner(
        &mut self,
        mode: Mode,
        cancel: &CancellationToken,
    ) -> Result<Summary, PipelineError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        if let Mode::UntilCaughtUp { .. } = mode {
            self.source.set_bounded()?;
            for l in &mut self.lanes {
                l.set_bounded()?;
            }
        }
        let idle_timeout = match mode {
            Mode::Live if !self.cfg.pipeline.idle_timeout.is_zero() => {
                Some(self.cfg.pipeline.idle_timeout)
            }
            _ => None,
        };
        // Reading the log overlaps the decoding and the fold of the batch before, when
        // there is a core for it (on one, the hand-over cost 5 % of a replay). Two batches
        // are then in memory: each half as large, so memory stays what it was.
        let mut batch_records = self.cfg.pipeline.batch_records;
        if std::thread::available_parallelism().map_or(1, usize::from) > 1
            && self.source.read_ahead()
        {
            batch_records = batch_records.div_ceil(2);
        }
        let mut batch = RecordBatch::new();
        let mut last_commit = Instant::now();
        let mut last_refresh = Instant::now() - Duration::from_secs(10);
        let mut last_lag_check = last_refresh;
        self.metrics.pipeline_up.set(1);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(owned) = self.source.take_assignment() {
                self.restore(&owned)?;
                self.shared
                    .set_ready(self.source.healthy() && !self.owned.is_empty());
            }
            batch.clear();
            let n = self.source.poll(&mut batch, batch_records)?;
            // Not before the first assignment: the cursors' handled marks are not known.
            if mode == Mode::Live
                && !self.owned.is_empty()
                && let Some(c) = &mut self.catalogue
            {
                c.step()?;
            }
            if n > 0 {
                summary.bytes += self.ingest_batch(&batch);
            }
            for l in &mut self.lanes {
                l.step(idle_timeout)?;
            }
            summary.records += n as u64;
            self.pending.records += n as u64;
            let now = Instant::now();
            self.advance(now);

            if self.reached_end(mode, n, &mut last_lag_check)? {
                break;
            }
            if n == 0 {
                if let Some(t) = idle_timeout {
                    self.detect_idle(t);
                }
                self.advance(now);
            }
            if self.commit_due(last_commit) {
                summary.windows += self.commit_or_stall(cancel)?;
                last_commit = Instant::now();
            }
            self.report(n, &mut last_refresh)?;
            // No sleep when nothing came: a source's poll waits for data itself (briefly).
        }
        if let Mode::UntilCaughtUp { drain: true, .. } = mode
            && !cancel.is_cancelled()
        {
            let now = Instant::now();
            let finals = self.core.drain();
            self.pending
                .finals
                .extend(finals.into_iter().map(|f| (f, now)));
            if let Some(d) = &mut self.declared {
                d.drain();
            }
            for l in &mut self.lanes {
                l.drain();
            }
        }
        summary.windows += self.commit_or_stall(cancel)?;
        self.end_run(&mut summary, cancel)?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Finalises what the pipeline watermark reached, in both window cores.
    fn advance(&mut self, now: Instant) {
        let finals = self.core.advance();
        self.pending
            .finals
            .extend(finals.into_iter().map(|f| (f, now)));
        if let Some(d) = &mut self.declared {
            d.advance_to(self.core.finalized_through());
        }
    }

    /// After the last commit of a run: the state, the status, the summary's outcomes.
    fn end_run(
        &mut self,
        summary: &mut Summary,
        cancel: &CancellationToken,
    ) -> Result<(), PipelineError> {
        self.refresh_lag()?;
        self.status.state = if cancel.is_cancelled() {
            State::Stopped
        } else {
            State::CaughtUp
        };
        self.publish(true);
        summary.accepted = self.status.accepted;
        summary.late = self.status.late;
        summary.duplicates = self.status.duplicates;
        summary.invalid = self.status.invalid;
        for l in &mut self.lanes {
            l.publish()?;
            summary.streams.push((l.stream(), l.counts()));
        }
        Ok(())
    }

    /// Whether to commit now: final windows (of any stream), many dead letters and late
    /// records, new catalogue epochs, or records read for `commit-interval`.
    fn commit_due(&self, last_commit: Instant) -> bool {
        let lane_records: u64 = self.lanes.iter().map(|l| l.uncommitted()).sum();
        !self.pending.finals.is_empty()
            || self.declared.as_ref().is_some_and(|d| !d.finals.is_empty())
            || self.pending.dead.len() + self.pending.late.len() > 50_000
            || self.lanes.iter().any(|l| l.due())
            || self
                .catalogue
                .as_ref()
                .is_some_and(catalogue::CatalogueLane::due)
            || (self.pending.records + lane_records > 0
                && last_commit.elapsed() >= self.cfg.pipeline.commit_interval)
    }

    /// Whether a bounded mode got where it stops after a poll that returned `n` records:
    /// the log end (`UntilCaughtUp`), the final point asked for, or within `max_lag` of
    /// the log end on every owned partition (`CatchUp`, checked on its own clock: sharing
    /// the status clock kept the status — a replay's progress — from being published
    /// while catching up).
    fn reached_end(
        &mut self,
        mode: Mode,
        n: usize,
        last_lag_check: &mut Instant,
    ) -> Result<bool, PipelineError> {
        match mode {
            Mode::Live => Ok(false),
            Mode::UntilCaughtUp { until_final, .. } => Ok((n == 0
                && self.source.exhausted()
                && self.lanes.iter_mut().all(|l| l.exhausted()))
                || until_final.is_some_and(|t| self.core.finalized_through() >= t)),
            Mode::CatchUp { max_lag } => {
                if n > 0 && last_lag_check.elapsed() < Duration::from_secs(1) {
                    return Ok(false);
                }
                self.refresh_lag()?;
                *last_lag_check = Instant::now();
                Ok(!self.owned.is_empty()
                    && self.source.lag_known()
                    && self.owned.iter().all(|&p| {
                        self.ends[p as usize].saturating_sub(self.cursors[p as usize].next)
                            <= max_lag
                    }))
            }
        }
    }

    /// After each poll: readiness, a diverged source, the status and lag once a second,
    /// and the state once the log end is reached.
    fn report(&mut self, n: usize, last_refresh: &mut Instant) -> Result<(), PipelineError> {
        self.shared
            .set_ready(self.source.healthy() && !self.owned.is_empty());
        if let Some(why) = self.source.diverged()
            && self.status.state != State::Diverged
        {
            // The source logged it once and reads nothing more: say so until a restart.
            self.status.state = State::Diverged;
            self.status.error = Some(why);
            self.publish(false);
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            self.refresh_lag()?;
            for l in &mut self.lanes {
                l.publish()?;
            }
            self.publish(true);
            *last_refresh = Instant::now();
        }
        if n == 0 && matches!(self.status.state, State::Recovering | State::Starting) {
            self.status.state = State::Running;
        }
        if n == 0 && !self.caught_up_logged {
            self.caught_up_logged = true;
            tracing::info!(
                version = self.version,
                records = self.status.records,
                "caught up with the log end"
            );
        }
        Ok(())
    }

    /// Every record of `batch` through its partition's cursor (decoded on several threads
    /// when the batch is large); returns the bytes read.
    fn ingest_batch<'b>(&mut self, batch: &'b RecordBatch) -> u64 {
        // Idleness is per batch: a clock read per record would cost more than it tells.
        let now = Instant::now();
        let mut seen = vec![false; self.partitions];
        let mut bytes = 0;
        let rules = self.cfg.pipeline.decode_rules();
        let max_future = self.cfg.pipeline.max_future;
        // Out of `self` while the batch is ingested (it is only read).
        let cat = self.catalogue.take();
        let joined = cat.as_ref().map(catalogue::CatalogueLane::joined);
        let threads = self.decode_threads;
        // Shared with the decoding threads (only read).
        let paths = self.declared.as_ref().map(|d| d.paths.clone());
        let mut fold = |rec: &Record<'b>, ev: Decoded<'b>, values: &Values<'b>| {
            bytes += rec.value.len() as u64;
            seen[rec.partition as usize] = true;
            self.ingest(rec, ev, values, joined, max_future);
        };
        // Without declared aggregates the decoded records carry no values at all.
        match &paths {
            None => decode_all(
                batch,
                threads,
                |rec| decode_record(rec, &rules, joined),
                |rec, ev| fold(rec, ev, &Values::new()),
            ),
            Some(p) => decode_all(
                batch,
                threads,
                |rec| decode_capturing_record(rec, &rules, joined, p),
                |rec, (ev, values)| fold(rec, ev, &values),
            ),
        }
        self.catalogue = cat;
        for (p, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
            self.cursors[p].last_record_at = now;
            if self.core.is_idle(p) {
                self.core.set_idle(p, false);
            }
        }
        bytes
    }

    /// One record through its partition's cursor; what it leaves to commit is kept.
    #[inline]
    fn ingest<'b>(
        &mut self,
        rec: &Record<'b>,
        ev: Result<crate::event::Event<'b>, crate::event::DecodeError>,
        values: &Values<'b>,
        joined: Option<&catalogue::Joined>,
        max_future: Duration,
    ) {
        let p = rec.partition as usize;
        if ev.is_err() && crate::event::session::is_session(rec.value) {
            let at = joined.map(|j| j.at(rec.partition, rec.offset));
            self.ingest_document(rec, at.as_ref().map(|a| a as &dyn Join), max_future);
            return;
        }
        let max_before = self.core.max_event_time(p);
        let follower = &mut self.declared;
        let outcome = self.cursors[p].ingest_then(&mut self.core, p, rec, ev, max_future, |ev| {
            if let Some(d) = follower {
                d.follow(p, rec.offset, max_before, ev, values);
            }
        });
        self.tally.count(p, &outcome);
        match outcome {
            Ingested::Late(l) => self.pending.late.push(l),
            Ingested::Invalid(d) => self.pending.dead.push(d),
            Ingested::Rebuilt | Ingested::Accepted | Ingested::Duplicate => {}
        }
    }

    /// A session document: its inner events through the partition's cursor.
    #[cold]
    fn ingest_document(&mut self, rec: &Record<'_>, join: Option<&dyn Join>, max_future: Duration) {
        let p = rec.partition as usize;
        let rules = self.cfg.pipeline.decode_rules();
        let follower = &mut self.declared;
        let mut accepted = |ev: &crate::event::Event<'_>, bytes: &[u8], max_before: i64| {
            if let Some(d) = follower {
                d.follow_inner(p, rec.offset, max_before, ev, bytes);
            }
        };
        let judging = Judging {
            rules: &rules,
            catalogue: join,
            max_future,
        };
        let doc = self.cursors[p].ingest_document(&mut self.core, p, rec, &judging, &mut accepted);
        self.tally.count_all(p, &doc.counts);
        self.pending.dead.extend(doc.dead);
        self.pending.late.extend(doc.late);
    }

    fn detect_idle(&mut self, timeout: Duration) {
        for p in 0..self.partitions {
            if !self.core.is_idle(p) && self.cursors[p].idle(self.ends[p], timeout) {
                tracing::info!(
                    partition = p,
                    "partition idle for {}: no longer holding the watermark back",
                    crate::config::fmt_duration(timeout)
                );
                self.core.set_idle(p, true);
            }
        }
    }

    /// [`Pipeline::commit`]; when the store fails at the storage level (a full disk), stops
    /// consuming and says so — not ready, state `stalled`, the error in the status and one
    /// log line — and retries with backoff, reopening the store, until the commit succeeds
    /// or `cancel` fires. Nothing is lost: the uncommitted work stays in memory and the last
    /// commit stands on disk.
    fn commit_or_stall(&mut self, cancel: &CancellationToken) -> Result<u64, PipelineError> {
        let mut backoff = Duration::from_millis(200);
        let mut stalled = false;
        loop {
            match self.commit() {
                Ok(n) => {
                    if stalled {
                        tracing::info!(
                            version = self.version,
                            "store writable again; consuming resumed"
                        );
                        self.status.state = State::Running;
                        self.status.error = None;
                    }
                    return Ok(n);
                }
                Err(PipelineError::Store(e)) if Store::is_io_failure(&e) => {
                    if !stalled {
                        tracing::error!(
                            version = self.version,
                            "store write failed ({e}); not consuming until a commit succeeds (free space on {}); retrying",
                            self.store.path().display()
                        );
                        stalled = true;
                    }
                    self.shared.set_ready(false);
                    self.status.state = State::Stalled;
                    self.status.error = Some(format!("store: {e}"));
                    self.publish(false);
                    let until = Instant::now() + backoff;
                    while Instant::now() < until {
                        if cancel.is_cancelled() {
                            return Err(PipelineError::Store(e));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Err(e) = self.store.reopen() {
                        tracing::debug!("reopening the store: {e}");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pending finals, dead letters, late records, positions and checkpoints in one
    /// transaction. Returns the number of windows committed.
    fn commit(&mut self) -> Result<u64, PipelineError> {
        let mut positions = owned_positions(&self.core, &self.cursors);
        if let Some(d) = &self.declared {
            let next: Vec<u64> = self.cursors.iter().map(|c| c.next).collect();
            d.resume_earlier(&next, &mut positions);
        }
        let mut checkpoints = Vec::new();
        for p in 0..self.partitions {
            let partition = u32::try_from(p).expect("partition fits u32");
            // Kept before the commit below: no checkpoint of such a partition is used again.
            if let Some(from) = self.cursors[p].take_unindexed() {
                self.store.mark_unindexed(partition, from)?;
            }
            if self.write_index
                && let Some(at) = self.cursors[p].checkpoint_due()
            {
                checkpoints.push((partition, at, self.core.max_event_time(p)));
            }
        }
        // The catalogue entries read since the last commit: seen by the events read from
        // here on (never below a handled mark: re-read events keep their epoch).
        if let Some(c) = &mut self.catalogue {
            let marks: Vec<u64> = self.cursors.iter().map(Cursor::handled_mark).collect();
            c.open_epoch(&marks);
        }
        let finals: Vec<FinalWindow> = self.pending.finals.iter().map(|(f, _)| f.clone()).collect();
        let started = Instant::now();
        let lane_positions: Vec<Vec<PartitionPosition>> =
            self.lanes.iter().map(|l| l.positions()).collect();
        let mut commits = vec![Commit {
            version: &self.version,
            finals: &finals,
            review_finals: &[],
            positions: &positions,
            finalized_through: self.core.finalized_through(),
            checkpoints: &checkpoints,
            dead_letters: &self.pending.dead,
            late: &self.pending.late,
            merger_state: None,
            epochs: &[],
            declared: self.declared.as_ref().map_or(&[], |d| &d.finals),
            declared_through: self
                .declared
                .as_ref()
                .map(declared::Follower::finalized_through),
            declared_merger_state: None,
        }];
        for (l, p) in self.lanes.iter().zip(&lane_positions) {
            commits.push(l.commit_part(p));
        }
        let epochs = self
            .catalogue
            .as_ref()
            .map(catalogue::CatalogueLane::new_epochs)
            .unwrap_or_default();
        if let Some(c) = self.catalogue.as_ref().filter(|c| c.due()) {
            commits.push(c.commit_part(&epochs));
        }
        self.store.commit_all(&commits)?;
        drop(commits);
        for (l, p) in self.lanes.iter_mut().zip(&lane_positions) {
            l.committed(p);
        }
        if let Some(c) = &mut self.catalogue {
            c.committed();
        }
        if let Some(d) = &mut self.declared {
            d.finals.clear();
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.count_committed_windows();
        self.metrics
            .dead_letters
            .inc_by(self.pending.dead.len() as u64);
        let n = finals.len() as u64;
        self.status.windows_finalised += n;
        self.pending.finals.clear();
        self.pending.dead.clear();
        self.pending.late.clear();
        self.pending.records = 0;
        mark_committed(&mut self.cursors, self.source.as_mut(), &positions);
        Ok(n)
    }

    /// The pending final windows are committed: their finalisation delay and count.
    fn count_committed_windows(&self) {
        for (f, at) in &self.pending.finals {
            let delay = at.elapsed();
            self.metrics.finalisation_delay.observe(delay.as_secs_f64());
            // One line per window for `scripts/bench`'s latency figures (off by default).
            tracing::debug!(
                target: "kappa::finalisation",
                delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
                size_ms = f.size_ms,
                start_ms = f.start_ms,
                "window committed"
            );
            self.metrics
                .windows_finalised
                .with_label_values(&[&crate::config::fmt_duration(Duration::from_millis(
                    f.size_ms.unsigned_abs(),
                ))])
                .inc();
        }
    }

    fn refresh_lag(&mut self) -> Result<(), PipelineError> {
        self.ends = self.source.end_offsets()?;
        Ok(())
    }

    /// Publishes status (and, with `provisional`, the open windows) for readers and
    /// updates the gauges.
    fn publish(&mut self, provisional: bool) {
        let m = &self.metrics;
        self.tally
            .flush(self.source.kind(), m, &mut self.status, |_, _| {});
        self.status.partitions = (0..self.partitions)
            .map(|p| {
                let wm = self.core.partition_watermark(p);
                let lag = self.ends[p].saturating_sub(self.cursors[p].next);
                let label = p.to_string();
                m.consumer_lag
                    .with_label_values(&[&label])
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
                if wm != i64::MIN {
                    m.partition_watermark
                        .with_label_values(&[&label])
                        .set(wm as f64 / 1000.0);
                }
                PartitionStatus {
                    partition: u32::try_from(p).expect("partition fits u32"),
                    position: self.cursors[p].next,
                    // The end Kafka's statistics gave may be older than what was read.
                    end_offset: self.ends[p].max(self.cursors[p].next),
                    lag,
                    watermark_ms: (wm != i64::MIN).then_some(wm),
                    idle: self.core.is_idle(p),
                    owned: self.core.is_owned(p),
                }
            })
            .collect();
        let wm = self.core.pipeline_watermark().filter(|&w| w != i64::MIN);
        if let Some(w) = wm {
            m.watermark.set(w as f64 / 1000.0);
            m.watermark_lag
                .set((chrono::Utc::now().timestamp_millis() - w) as f64 / 1000.0);
        }
        self.status.watermark_ms = wm;
        let ft = self.core.finalized_through();
        self.status.finalized_through_ms = (ft != i64::MIN).then_some(ft);
        let (mut open, _) = self.core.open_state();
        open += self.declared.as_ref().map_or(0, |d| d.open_state().0);
        self.status.open_windows = open;
        m.open_windows.set(i64::try_from(open).unwrap_or(i64::MAX));
        *self.shared.status.lock().expect("status lock") = self.status.clone();
        if provisional {
            *self.shared.provisional.write().expect("provisional lock") = self.core.provisional();
        }
    }
}

/// The positions to commit, of the partitions `core` owns: a partition this process never
/// read has none (a 0 there would later make it re-read from the start what another
/// member of the group read, instead of starting at the group's offset); one it read
/// before keeps what the store has. Shared by every stream's pipeline.
pub(crate) fn owned_positions<A: crate::window::Aggregator>(
    core: &crate::window::Windows<A>,
    cursors: &[Cursor],
) -> Vec<PartitionPosition> {
    let next: Vec<u64> = cursors.iter().map(|c| c.next).collect();
    let resume = core.resume_points(&next);
    (0..cursors.len())
        .filter(|&p| core.is_owned(p))
        .map(|p| PartitionPosition {
            partition: u32::try_from(p).expect("partition fits u32"),
            // Never move the "handled" mark back, even while re-reading after a restart.
            next_offset: cursors[p].handled_mark(),
            resume_offset: resume[p].offset,
            resume_max_ts: resume[p].max_ts_before,
            max_ts: core.max_event_time(p),
        })
        .collect()
}

/// `positions` are committed: everything read counts as handled, and the source is told
/// (Kafka: the group's offsets).
pub(crate) fn mark_committed(
    cursors: &mut [Cursor],
    source: &mut dyn Source,
    positions: &[PartitionPosition],
) {
    for c in cursors {
        c.committed();
    }
    let committed: Vec<(u32, u64)> = positions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    source.commit_positions(&committed);
}

/// Rebuilds `core` (new, for every partition of `source`) and the cursors of the `owned`
/// partitions from what the store committed for `version`: each owned partition resumes at
/// its resume point (seeked there) with the offsets below its committed position marked
/// handled and the late ones among them kept late; a partition without a stored position
/// starts where the source puts it. Shared by every stream's pipeline.
///
/// # Errors
/// Store or source failure.
pub(crate) fn restore_from_store<A: crate::window::Aggregator>(
    store: &Store,
    version: &str,
    source: &mut dyn Source,
    owned: &[u32],
    core: &mut crate::window::Windows<A>,
) -> Result<Vec<Cursor>, PipelineError> {
    let partitions = source.partitions() as usize;
    let mut next = vec![0; partitions];
    let mut handled = vec![0; partitions];
    // Partitions the store has a position for; the others start where the source puts
    // them (offset 0 of the embedded log; the group's committed offset in Kafka).
    let mut known = vec![false; partitions];
    if let Some((finalized_through, positions)) = store.load_state(version)? {
        let mut resume = vec![
            PartitionResume {
                offset: 0,
                max_ts_before: i64::MIN
            };
            partitions
        ];
        for p in positions
            .iter()
            .filter(|p| (p.partition as usize) < partitions)
        {
            let i = p.partition as usize;
            resume[i] = PartitionResume {
                offset: p.resume_offset,
                max_ts_before: p.resume_max_ts,
            };
            handled[i] = p.next_offset;
            known[i] = true;
        }
        core.restore(finalized_through, &resume);
        for (p, r) in resume.iter().enumerate() {
            next[p] = r.offset;
        }
    }
    core.set_owned(owned);
    let reread: u64 = owned
        .iter()
        .map(|&p| handled[p as usize] - next[p as usize])
        .sum();
    tracing::info!(
        version,
        ?owned,
        "state restored from the store; re-reading {reread} records to rebuild the open windows"
    );
    let mut cursors: Vec<Cursor> = (0..partitions)
        .map(|i| Cursor::new(next[i], handled[i], Default::default()))
        .collect();
    for &p in owned {
        let i = p as usize;
        let late = store.late_between(version, p, next[i], handled[i])?;
        let documents = late
            .iter()
            .filter_map(|l| Some((l.offset, ingest::late_inner(&l.reason)?)))
            .collect();
        let cursor = Cursor::new(next[i], handled[i], late.iter().map(|l| l.offset).collect())
            .with_late_documents(documents);
        cursors[i] = if known[i] {
            source.seek(p, next[i])?;
            cursor
        } else {
            cursor.where_the_source_starts(source.assigned_offset(p))
        };
    }
    Ok(cursors)
}

/// Refuses an event time more than `max_future` after the record's ingest time.
pub(crate) fn not_in_future(
    ts_ms: i64,
    rec: &Record<'_>,
    max_future: Duration,
) -> Result<(), crate::event::DecodeError> {
    let max_future_ms = i64::try_from(max_future.as_millis()).unwrap_or(i64::MAX);
    if ts_ms > rec.timestamp_ms.saturating_add(max_future_ms) {
        Err(crate::event::DecodeError {
            kind: InvalidKind::FutureTimestamp,
            message: format!(
                "event time {} is more than {} after the record's ingest time {}",
                crate::event::time::format_rfc3339_ms(ts_ms),
                crate::config::fmt_duration(max_future),
                crate::event::time::format_rfc3339_ms(rec.timestamp_ms)
            ),
        })
    } else {
        Ok(())
    }
}

/// The dead letter of an invalid record.
pub(crate) fn dead_letter(rec: &Record<'_>, e: crate::event::DecodeError) -> DeadLetter {
    DeadLetter {
        partition: rec.partition,
        offset: rec.offset,
        record_ts: rec.timestamp_ms,
        kind: e.kind.as_str().into(),
        reason: e.message,
        size: rec.value.len() as u64,
        raw: rec.value[..rec.value.len().min(DEAD_LETTER_RAW_BYTES)].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<'b>(rec: &Record<'b>) -> Decoded<'b> {
        decode_record(rec, &Rules::new(1 << 20), None)
    }

    /// Every record reaches the fold once, in offset order, with the event one thread
    /// decodes for it (valid and invalid alike), whatever the number of threads and
    /// however the batch is cut into pieces.
    #[test]
    fn decoding_ahead_folds_every_record_in_order() {
        let mut batch = RecordBatch::new();
        for i in 0..(3 * DECODE_CHUNK + 17) as u64 {
            let value = if i % 7 == 3 {
                format!("not json {i}")
            } else {
                format!(
                    r#"{{"schema":1,"event_id":"e{i}","event_type":"view","user_id":"u","session_id":"s","product_id":"p_{}","category":"c","price":"1.00","ts":"2026-11-23T10:00:{:02}Z"}}"#,
                    i % 13,
                    i % 60
                )
            };
            batch.push(i as u32 % 3, i, 0, b"", value.as_bytes());
        }
        let want: Vec<(u64, String)> = batch
            .iter()
            .map(|r| (r.offset, format!("{:?}", decode(&r))))
            .collect();
        for threads in 1..=4 {
            let mut got = Vec::new();
            decode_each(&batch, threads, decode, |rec, ev| {
                got.push((rec.offset, format!("{ev:?}")));
            });
            assert_eq!(got, want, "{threads} threads");
        }
        assert!(want.iter().any(|w| w.1.starts_with("Ok")), "{:?}", want[0]);
        assert!(want.iter().any(|w| w.1.starts_with("Err")));
    }

    /// A helper that panics while decoding stops the batch with that panic: the pipeline
    /// thread does not wait forever for the piece that never comes.
    #[test]
    fn a_panicking_decode_thread_is_not_waited_for() {
        // Only a helper (scoped threads have no name) fails, on the first record of a
        // piece; the pipeline thread takes its time over piece 0 so that a helper starts.
        fn failing<'b>(rec: &Record<'b>) -> Decoded<'b> {
            if rec.offset.is_multiple_of(DECODE_CHUNK as u64) {
                assert!(
                    std::thread::current().name() == Some("pipeline"),
                    "a decode bug"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            decode(rec)
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let mut batch = RecordBatch::new();
                for i in 0..(8 * DECODE_CHUNK) as u64 {
                    batch.push(0, i, 0, b"", b"{}");
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decode_each(&batch, 2, failing, |_, _| {});
                }));
                tx.send(r.is_err()).unwrap();
            })
            .unwrap();
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("decode_each returned within 20 s");
        assert!(panicked);
    }
}
