//! The product catalogue read by an events pipeline (issue 18, item 4): the
//! `shop.products` stream (a compacted topic, or `{data-dir}/streams/products`) loaded into
//! an [`AsOf`] that fills the category and price an event leaves out, from the entry valid
//! at the event's time ([`crate::event::decode_joined`]).
//!
//! When: a pipeline reads the whole catalogue, to the end it has when the pipeline starts,
//! before its first event; then, live, it reads what is appended between the events'
//! batches (a bounded run — a replay catching up, an audit — reads nothing more). An event
//! is joined with the entries read before it was read, and keeps that join when it is read
//! again after a restart:
//!
//! - **Epochs.** What the live pipeline reads of the catalogue between two commits becomes
//!   visible at the second one, as an epoch: from the events' handled marks then (per
//!   partition) on, the events see the entries read so far (so there are at most as many
//!   epochs as commits that follow catalogue updates). Epoch 0 covers every event before
//!   the first other one. The epochs of the version are
//!   committed with its positions ([`crate::store::CatalogueEpoch`], in the catalogue part
//!   `{version}/products`), so a restart tags every entry with the epoch it was first read
//!   in (by its catalogue position) and re-reads the events of the open windows with the
//!   same join; entries appended while kappa was down open a new epoch at the first event
//!   not yet handled.
//! - A Kafka topic's compaction must not remove a record a re-read still needs: keep
//!   `min.compaction.lag.ms` above the longest window plus a restart (a restart that
//!   finds fewer records than its epochs recorded says so).
//! - So a new version, a replay or an audit joins every event with the catalogue as it
//!   stands when it starts — the as-of join by event time alone — while a live pipeline
//!   keeps what it computed: an entry that arrives after the events it should have
//!   enriched leaves them dead-lettered (`no_catalogue_entry`) or at the old price until a
//!   replay fixes them.
//!
//! The catalogue is read from its beginning at every start (a compacted topic is small);
//! its invalid records are dead letters of the `products` stream, written again (by
//! position, so once) at every start. A worker (`--role worker`) keeps no results: its
//! epochs live as long as the process, and its invalid catalogue records are logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PipelineError, dead_letter};
use crate::config::Config;
use crate::log::RecordBatch;
use crate::metrics::Metrics;
use crate::products::AsOf;
use crate::source::Source;
use crate::store::{CatalogueEpoch, Commit, DeadLetter, Store, VersionInfo};
use crate::stream::Stream;

/// Records per poll of the catalogue.
const BATCH: usize = 8192;

/// A poll that found nothing is repeated after this at the soonest.
const EMPTY_POLL_EVERY: Duration = Duration::from_millis(20);

/// The catalogue as read so far, by epoch.
pub(crate) struct CatalogueLane {
    cfg: Config,
    version: String,
    /// Invalid records are kept for the store (else logged).
    keeps_dead_letters: bool,
    source: Box<dyn Source>,
    joined: Joined,
    /// Epochs from this index on are not committed yet.
    committed_epochs: usize,
    /// Entries read for the epoch not opened yet.
    unopened: u64,
    /// Per catalogue partition, the next position to read.
    next: Vec<u64>,
    dead: Vec<DeadLetter>,
    batch: RecordBatch,
    last_poll: Option<Instant>,
    last_found: bool,
    /// Entries read since start.
    entries: u64,
}

/// The entries read, by epoch: what the decoder joins with (shared with the decoding
/// threads).
#[derive(Debug, Default)]
pub(crate) struct Joined {
    asof: AsOf,
    /// Every epoch (committed ones first); an entry read past the last one's
    /// `catalogue_to` belongs to the next, not opened yet.
    epochs: Vec<CatalogueEpoch>,
}

impl Joined {
    /// The epoch the event at (`partition`, `offset`) is joined in: the last one opened
    /// at or before it.
    fn epoch_of(&self, partition: u32, offset: u64) -> u32 {
        let p = partition as usize;
        let e = self
            .epochs
            .iter()
            // A partition added since an epoch was opened: from its beginning.
            .rposition(|x| x.events_from.get(p).copied().unwrap_or(0) <= offset)
            .unwrap_or(0);
        u32::try_from(e).unwrap_or(u32::MAX)
    }

    /// The catalogue as the record at (`partition`, `offset`) sees it.
    pub(crate) fn at(&self, partition: u32, offset: u64) -> At<'_> {
        At {
            joined: self,
            partition,
            offset,
        }
    }
}

/// The catalogue as an event at (`partition`, `offset`) sees it: the decoder's
/// [`crate::event::Join`] for one record (its epoch is looked up only when the record
/// leaves something out).
pub(crate) struct At<'a> {
    joined: &'a Joined,
    partition: u32,
    offset: u64,
}

impl crate::event::Join for At<'_> {
    fn lookup(&self, product: &str, ts_ms: i64) -> Result<(&str, u64), String> {
        let epoch = self.joined.epoch_of(self.partition, self.offset);
        self.joined
            .asof
            .at_epoch(product, ts_ms, epoch)
            .map(|e| (e.category.as_str(), e.price))
    }
}

impl CatalogueLane {
    /// The catalogue of `cfg` for output version `version`, read to its end as of now, with
    /// the version's committed epochs; `None` when the configuration does not read it or
    /// (Kafka) the topic does not exist. `store`: where its epochs and invalid records are
    /// kept; a worker, which keeps no results, has none.
    ///
    /// # Errors
    /// Store or source failure.
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
        let mut epochs = Vec::new();
        if let Some(store) = store {
            store.bind_stream_source(Stream::Products, &source.id())?;
            store.ensure_version(&VersionInfo {
                name: version.clone(),
                config: String::new(),
                created_ms: chrono::Utc::now().timestamp_millis(),
                finalized_through: i64::MIN,
                state: crate::store::VersionState::Ready,
            })?;
            epochs = store.catalogue_epochs(&version)?;
        }
        source.no_wait();
        let ends = crate::source::log_end_offsets(&cfg)?;
        let mut lane = Self {
            cfg,
            version,
            keeps_dead_letters: store.is_some(),
            source,
            committed_epochs: epochs.len(),
            joined: Joined {
                asof: AsOf::default(),
                epochs,
            },
            unopened: 0,
            next: vec![0; ends.len()],
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
        let _ = self.source.take_assignment();
        let mut progress = Instant::now();
        while self.next.iter().zip(ends).any(|(n, e)| n < e) {
            if self.poll()? > 0 {
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
        if let Some(last) = self.joined.epochs.last()
            && last
                .catalogue_to
                .iter()
                .zip(&self.next)
                .any(|(to, n)| n < to)
        {
            tracing::warn!(
                "the product catalogue holds fewer records than when its last epoch was committed (compacted or deleted since?): events re-read after this restart may be joined differently than before"
            );
        }
        tracing::info!(
            entries = self.entries,
            products = self.joined.asof.products(),
            epochs = self.joined.epochs.len(),
            "product catalogue read"
        );
        Ok(())
    }

    /// One poll into the catalogue, each entry in the epoch it belongs to; returns the
    /// records read.
    fn poll(&mut self) -> Result<usize, PipelineError> {
        self.batch.clear();
        let n = self.source.poll(&mut self.batch, BATCH)?;
        let currency = self.cfg.pipeline.currency;
        for rec in self.batch.iter() {
            let q = rec.partition as usize;
            if self.next.len() <= q {
                self.next.resize(q + 1, 0);
            }
            self.next[q] = rec.offset + 1;
            match crate::products::decode(rec.value, currency) {
                Ok(e) => {
                    // The first epoch whose reads reached it, else the one to open next.
                    // The first epoch whose reads reached it (each epoch read at least as
                    // far as the one before), else the one to open next.
                    let epochs = &self.joined.epochs;
                    let epoch = epochs.partition_point(|x| {
                        x.catalogue_to.get(q).is_none_or(|&to| rec.offset >= to)
                    });
                    if epoch == epochs.len() {
                        self.unopened += 1;
                    }
                    self.joined
                        .asof
                        .insert_in(e, u32::try_from(epoch).unwrap_or(u32::MAX));
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

    /// Opens the next epoch when entries were read for it (or none exists yet): the events
    /// from `events_next` (per partition: the next offset each will read) on see them. The
    /// first epoch covers every event from the beginning.
    pub(crate) fn open_epoch(&mut self, events_next: &[u64]) {
        let epochs = &mut self.joined.epochs;
        if self.unopened == 0 && !epochs.is_empty() {
            return;
        }
        let events_from = if epochs.is_empty() {
            vec![0; events_next.len()]
        } else {
            events_next.to_vec()
        };
        epochs.push(CatalogueEpoch {
            events_from,
            catalogue_to: self.next.clone(),
        });
        self.unopened = 0;
    }

    /// Reads what was appended since the last call (unless the last poll found nothing
    /// very recently). The entries wait, invisible, for the next epoch: the pipeline opens
    /// one when it commits ([`CatalogueLane::open_epoch`]), so there are at most as many
    /// epochs as commits that follow catalogue updates.
    pub(crate) fn step(&mut self) -> Result<(), PipelineError> {
        if !self.last_found
            && self
                .last_poll
                .is_some_and(|t| t.elapsed() < EMPTY_POLL_EVERY)
        {
            return Ok(());
        }
        self.last_poll = Some(Instant::now());
        self.last_found = self.poll()? > 0;
        Ok(())
    }

    /// The entries read, by epoch.
    pub(crate) fn joined(&self) -> &Joined {
        &self.joined
    }

    /// Whether epochs or invalid catalogue records wait to be committed.
    pub(crate) fn due(&self) -> bool {
        !self.dead.is_empty() || self.committed_epochs < self.joined.epochs.len()
    }

    /// The catalogue's part of a commit: its new epochs and dead letters (`epochs` from
    /// [`CatalogueLane::new_epochs`]).
    pub(crate) fn commit_part<'a>(&'a self, epochs: &'a [(u32, CatalogueEpoch)]) -> Commit<'a> {
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
            epochs,
            declared: &[],
            declared_through: None,
            declared_merger_state: None,
        }
    }

    /// The epochs not committed yet, numbered.
    pub(crate) fn new_epochs(&self) -> Vec<(u32, CatalogueEpoch)> {
        let epochs = &self.joined.epochs;
        (self.committed_epochs..epochs.len())
            .map(|i| (u32::try_from(i).unwrap_or(u32::MAX), epochs[i].clone()))
            .collect()
    }

    /// The commit of [`CatalogueLane::commit_part`] is durable.
    pub(crate) fn committed(&mut self) {
        self.dead.clear();
        self.committed_epochs = self.joined.epochs.len();
    }
}

/// The catalogue keeps no positions: it is read from its beginning at every start.
struct NoPositions;

impl crate::source::Starts for NoPositions {
    fn kept(&self, _version: &str) -> Result<std::collections::HashMap<u32, (u64, u64)>, String> {
        Ok(std::collections::HashMap::new())
    }
}

/// The join across restarts, against a batch model: catalogue entries appended, events
/// read on two partitions, commits and crashes, interleaved at random. An event is joined
/// with the entries read before the last commit (or start) before it; read again after a
/// restart (below the committed position, where a restart re-reads), it gets the same
/// answer.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::event::Join;
    use crate::products::Entry;

    const BASE: i64 = 1_700_000_000_000;

    #[derive(Debug, Clone)]
    enum Op {
        /// A catalogue entry appended (product, valid from minute, price).
        Entry(u8, i64, u64),
        /// An event read on a partition (partition, product, minute).
        Event(u32, u8, i64),
        Commit,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, 0i64..6, 1u64..1000).prop_map(|(p, m, c)| Op::Entry(p, m, c)),
            6 => (0u32..2, 0u8..3, 0i64..8).prop_map(|(q, p, m)| Op::Event(q, p, m)),
            1 => Just(Op::Commit),
            1 => Just(Op::Crash),
        ]
    }

    fn entry(product: u8, minute: i64, price: u64) -> Entry {
        Entry {
            product_id: format!("p_{product}"),
            name: "n".into(),
            brand: "b".into(),
            category: format!("c{price}"),
            price,
            valid_from_ms: BASE + minute * 60_000,
        }
    }

    /// The batch answer: among `entries`, the product's latest `valid_from` at or before
    /// `ts`, the last appended of a key.
    fn model(entries: &[Entry], product: u8, ts: i64) -> Option<u64> {
        crate::products::model_entry(entries, product, ts).map(|e| e.price)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn joins_are_decided_once_across_restarts(ops in prop::collection::vec(op(), 0..50)) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
            let store = Store::open(&cfg.store_path()).unwrap();
            let mut writer = crate::log::LogWriter::open(
                &cfg.for_stream(Stream::Products).log_dir(),
                &crate::log::LogConfig {
                    partitions: 1,
                    segment_bytes: 1 << 20,
                    fsync_interval: Duration::from_secs(1),
                },
            )
            .unwrap();
            let open = |handled: &[u64]| {
                let mut lane = CatalogueLane::open(&cfg, "v1", Some(&store), Arc::new(Metrics::new()))
                    .unwrap()
                    .unwrap();
                lane.open_epoch(handled);
                lane
            };
            // Entries visible to new events (`read`), and read but waiting for an epoch.
            let (mut appended, mut read, mut pending): (Vec<Entry>, usize, usize) =
                (Vec::new(), 0, 0);
            let mut lane = open(&[0, 0]);
            // Per partition, the events (product, ts) by offset, and the first answer of each.
            let mut events: [Vec<(u8, i64)>; 2] = [Vec::new(), Vec::new()];
            let mut first: HashMap<(u32, usize), Option<u64>> = HashMap::new();
            let (mut next, mut handled) = ([0usize; 2], [0usize; 2]);
            let join = |lane: &CatalogueLane, q: u32, o: usize, (p, ts): (u8, i64)| {
                lane.joined()
                    .at(q, o as u64)
                    .lookup(&format!("p_{p}"), ts)
                    .ok()
                    .map(|(_, price)| price)
            };
            for op in &ops {
                match *op {
                    Op::Entry(p, m, c) => {
                        let e = entry(p, m, c);
                        writer.append(e.key().as_bytes(), &e.to_json(), 0).unwrap();
                        writer.flush().unwrap();
                        appended.push(e);
                    }
                    Op::Event(q, p, m) => {
                        lane.poll().unwrap();
                        pending = appended.len();
                        let qi = q as usize;
                        let ev = (p, BASE + m * 60_000 + 30_000);
                        let o = next[qi];
                        if o == events[qi].len() {
                            events[qi].push(ev);
                        }
                        let ev = events[qi][o];
                        let got = join(&lane, q, o, ev);
                        match first.get(&(q, o)) {
                            Some(was) => prop_assert_eq!(got, *was, "re-read {}:{}", q, o),
                            None => {
                                prop_assert_eq!(got, model(&appended[..read], ev.0, ev.1));
                                first.insert((q, o), got);
                            }
                        }
                        next[qi] += 1;
                    }
                    Op::Commit => {
                        // Never back, even while re-reading (as `Cursor::handled_mark`).
                        for q in 0..2 {
                            handled[q] = handled[q].max(next[q]);
                        }
                        // What was read since the last commit is seen from here on.
                        lane.open_epoch(&handled.map(|x| x as u64));
                        read = pending;
                        let epochs = lane.new_epochs();
                        store.commit_all(&[lane.commit_part(&epochs)]).unwrap();
                        lane.committed();
                    }
                    Op::Crash => {
                        drop(lane);
                        // Uncommitted reads are lost: those events are new again.
                        for q in 0..2 {
                            first.retain(|&(p, o), _| p as usize != q || o < handled[q]);
                            events[q].truncate(events[q].len().max(handled[q]));
                        }
                        lane = open(&handled.map(|x| x as u64));
                        read = appended.len();
                        pending = read;
                        // A restart re-reads from before the handled mark.
                        next = [0, 0];
                    }
                }
            }
            let _ = (read, pending);
        }
    }
}
