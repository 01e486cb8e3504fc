//! The product catalogue read by an events pipeline (issue 18, item 4): the
//! `shop.products` stream (a compacted topic, or `{data-dir}/streams/products`) loaded into
//! an [`AsOf`] that fills the category and price an event leaves out, from the entry valid
//! at the event's time ([`crate::event::decode_joined`]).
//!
//! When: a pipeline reads the whole catalogue, to the end it has when the pipeline starts,
//! before its first event; then, live, it reads what is appended between the events'
//! batches (a bounded run — a replay catching up, an audit — reads nothing more). An event
//! is joined with the entries read when it is processed. So a new version, a replay
//! or an audit joins every event with the catalogue as it stands when it starts — the as-of
//! join by event time alone — while a live pipeline keeps what it computed with the entries
//! it had: an entry that arrives after the events it should have enriched leaves them
//! dead-lettered (`no_catalogue_entry`) or at the old price until a replay fixes them. The
//! catalogue is read from its beginning at every start (a compacted topic is small), so it
//! has no positions to commit; its invalid records are dead letters of the `products`
//! stream, written again (by position, so once) at every start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PipelineError, dead_letter};
use crate::config::Config;
use crate::log::RecordBatch;
use crate::metrics::Metrics;
use crate::products::AsOf;
use crate::source::Source;
use crate::store::{Commit, DeadLetter, Store, VersionInfo};
use crate::stream::Stream;

/// Records per poll of the catalogue.
const BATCH: usize = 8192;

/// A poll that found nothing is repeated after this at the soonest.
const EMPTY_POLL_EVERY: Duration = Duration::from_millis(20);

/// The catalogue as read so far.
pub(crate) struct CatalogueLane {
    cfg: Config,
    version: String,
    /// Invalid records are kept for the store (else logged).
    keeps_dead_letters: bool,
    source: Box<dyn Source>,
    asof: AsOf,
    dead: Vec<DeadLetter>,
    batch: RecordBatch,
    last_poll: Option<Instant>,
    last_found: bool,
    /// Entries read since start.
    pub(crate) entries: u64,
}

impl CatalogueLane {
    /// The catalogue of `cfg` for output version `version`, read to its end as of now; `None`
    /// when the configuration does not read it or (Kafka) the topic does not exist.
    ///
    /// # Errors
    /// Store or source failure.
    ///
    /// `store`: where its invalid records become dead letters; a worker (`--role worker`),
    /// which keeps no results, has none and logs them.
    pub(crate) fn open(
        cfg: &Config,
        version: &str,
        store: Option<&Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, PipelineError> {
        if !cfg.products.read {
            return Ok(None);
        }
        let cfg = cfg.for_stream(Stream::Products);
        let version = Stream::Products.version(version);
        let Some(mut source) =
            crate::source::open_stream(&cfg, Arc::new(NoPositions), &version, metrics)?
        else {
            tracing::warn!(
                "no product catalogue: topic {} not found (events that leave out their category or price are dead-lettered; create it with `kappa topics apply`)",
                cfg.kafka.topic
            );
            return Ok(None);
        };
        if let Some(store) = store {
            store.bind_stream_source(Stream::Products, &source.id())?;
            store.ensure_version(&VersionInfo {
                name: version.clone(),
                config: String::new(),
                created_ms: chrono::Utc::now().timestamp_millis(),
                finalized_through: i64::MIN,
                state: crate::store::VersionState::Ready,
            })?;
        }
        source.no_wait();
        let ends = crate::source::log_end_offsets(&cfg)?;
        let mut lane = Self {
            cfg,
            version,
            keeps_dead_letters: store.is_some(),
            source,
            asof: AsOf::default(),
            dead: Vec::new(),
            batch: RecordBatch::new(),
            last_poll: None,
            last_found: false,
            entries: 0,
        };
        lane.read_to(&ends)?;
        Ok(Some(lane))
    }

    /// Reads until every partition is at `ends` (the whole catalogue at start).
    fn read_to(&mut self, ends: &[u64]) -> Result<(), PipelineError> {
        let mut next = vec![0u64; ends.len()];
        let _ = self.source.take_assignment();
        let mut progress = Instant::now();
        while next.iter().zip(ends).any(|(n, e)| n < e) {
            if self.poll(&mut next)? > 0 {
                progress = Instant::now();
            } else if progress.elapsed() > Duration::from_secs(10) {
                // Records below the end that never come (deleted by retention): what is
                // there is the catalogue.
                tracing::warn!(
                    "the product catalogue ends before its log end; going on with what was read"
                );
                break;
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        tracing::info!(
            entries = self.entries,
            products = self.asof.products(),
            "product catalogue read"
        );
        Ok(())
    }

    /// One poll into the catalogue; returns the records read.
    fn poll(&mut self, next: &mut [u64]) -> Result<usize, PipelineError> {
        self.batch.clear();
        let n = self.source.poll(&mut self.batch, BATCH)?;
        let currency = self.cfg.pipeline.currency;
        for rec in self.batch.iter() {
            if let Some(at) = next.get_mut(rec.partition as usize) {
                *at = rec.offset + 1;
            }
            match crate::products::decode(rec.value, currency) {
                Ok(e) => {
                    self.asof.insert(e);
                    self.entries += 1;
                }
                Err(e) if self.keeps_dead_letters => self.dead.push(dead_letter(&rec, e)),
                Err(e) => tracing::warn!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "invalid catalogue record, not used: {e}"
                ),
            }
        }
        Ok(n)
    }

    /// Reads what was appended since the last call (unless the last poll found nothing
    /// very recently).
    pub(crate) fn step(&mut self) -> Result<(), PipelineError> {
        if !self.last_found
            && self
                .last_poll
                .is_some_and(|t| t.elapsed() < EMPTY_POLL_EVERY)
        {
            return Ok(());
        }
        self.last_poll = Some(Instant::now());
        let mut next = Vec::new();
        self.last_found = self.poll(&mut next)? > 0;
        Ok(())
    }

    /// The entries read so far.
    pub(crate) fn asof(&self) -> &AsOf {
        &self.asof
    }

    /// Whether invalid catalogue records wait to be committed.
    pub(crate) fn due(&self) -> bool {
        !self.dead.is_empty()
    }

    /// The catalogue's part of a commit: its dead letters.
    pub(crate) fn commit_part(&self) -> Commit<'_> {
        Commit {
            version: &self.version,
            finals: &[],
            review_finals: &[],
            positions: &[],
            finalized_through: i64::MIN,
            checkpoints: &[],
            dead_letters: &self.dead,
            late: &[],
            merger_state: None,
        }
    }

    /// The commit of [`CatalogueLane::commit_part`] is durable.
    pub(crate) fn committed(&mut self) {
        self.dead.clear();
    }
}

/// The catalogue keeps no positions: it is read from its beginning at every start.
struct NoPositions;

impl crate::source::Starts for NoPositions {
    fn kept(&self, _version: &str) -> Result<std::collections::HashMap<u32, (u64, u64)>, String> {
        Ok(std::collections::HashMap::new())
    }
}
