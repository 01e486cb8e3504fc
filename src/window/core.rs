//! [`Windows`]: routes a stream's items to windows, decides late and duplicate,
//! finalises. What a window aggregates is the stream's [`Aggregator`]; [`WindowCore`] is
//! the shop events' ([`Shop`]).

use std::collections::{BTreeMap, HashMap};

use super::WindowConfig;
use super::aggregate::{FinalWindow, PartialAgg, WindowAgg};
use super::assign::{window_end, window_start};
use super::watermark::PartitionState;
use crate::event::{Event, EventType, normalize_query};

/// What one stream's windows aggregate. [`Windows`] decides, per partition and in offset
/// order, which items count (late, duplicate) and when a window is final; the aggregator
/// folds the items that count and finishes a window. Folding must be order-free (sums,
/// counts, lists sorted with total orders) for results to be deterministic.
pub trait Aggregator {
    /// One valid item (borrowing from its record).
    type Item<'a>;
    /// What is worked out once per item, before it is folded into each of its windows.
    type Prepared;
    /// An open window's running state.
    type Window;
    /// A final window.
    type Final;
    /// The item's dedup key and event time (epoch ms).
    fn key<'i>(item: &'i Self::Item<'_>) -> (&'i str, i64);
    /// Works out what folding needs (interned names, normalised text, labels).
    fn prepare(&mut self, item: &Self::Item<'_>) -> Self::Prepared;
    /// An empty window of size `size_ms`.
    fn open(&self, size_ms: i64) -> Self::Window;
    /// Whether the prepared item goes into windows of size `size_ms` at all (a window is
    /// not opened for an item none of its aggregates takes).
    #[inline]
    fn takes(&self, _prepared: &Self::Prepared, _size_ms: i64) -> bool {
        true
    }
    /// Folds one prepared item into a window.
    fn add(&self, w: &mut Self::Window, item: &Self::Item<'_>, prepared: &Self::Prepared);
    /// A window's final (or provisional) form.
    fn finish(&self, w: &Self::Window, size_ms: i64, start_ms: i64, top_k: usize) -> Self::Final;
    /// Distinct keys a window holds, for memory accounting.
    fn keys(w: &Self::Window) -> usize;
}

/// The shop events' aggregator: sales by category, top products, the funnel, top
/// searches. Products and categories are interned (resolved to strings when a window is
/// finished, so interning order never shows in results).
#[derive(Debug, Default)]
pub struct Shop {
    intern: HashMap<Box<str>, u32, ahash::RandomState>,
    names: Vec<Box<str>>,
    query_buf: String,
}

impl Shop {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.intern.get(s) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(s.into());
        self.intern.insert(s.into(), id);
        id
    }
}

impl Aggregator for Shop {
    type Item<'a> = Event<'a>;
    /// Interned (category, product) of a purchase.
    type Prepared = (u32, u32);
    type Window = WindowAgg;
    type Final = FinalWindow;

    #[inline]
    fn key<'i>(ev: &'i Event<'_>) -> (&'i str, i64) {
        (&ev.event_id, ev.ts_ms)
    }

    #[inline]
    fn prepare(&mut self, ev: &Event<'_>) -> (u32, u32) {
        if ev.event_type == EventType::Search {
            normalize_query(&ev.query, &mut self.query_buf);
        }
        match ev.event_type {
            EventType::Purchase => (self.intern(&ev.category), self.intern(&ev.product_id)),
            EventType::View | EventType::AddCart => {
                let cat = if ev.category.is_empty() {
                    super::aggregate::NO_CATEGORY
                } else {
                    self.intern(&ev.category)
                };
                (cat, self.intern(&ev.product_id))
            }
            EventType::Search => (0, 0),
        }
    }

    /// A 1-hour window keeps the funnel per key too (the hour's [`crate::rollup::Sums`]).
    fn open(&self, size_ms: i64) -> WindowAgg {
        if size_ms == crate::rollup::HOUR_MS {
            WindowAgg::with_funnel()
        } else {
            WindowAgg::new()
        }
    }

    #[inline]
    fn add(&self, w: &mut WindowAgg, ev: &Event<'_>, &(cat, prod): &(u32, u32)) {
        w.count(ev.event_type);
        match ev.event_type {
            EventType::Purchase => w.purchase(
                cat,
                prod,
                u64::from(ev.quantity),
                u128::from(ev.price_minor) * u128::from(ev.quantity),
            ),
            EventType::Search => w.search(&self.query_buf),
            EventType::View => w.view(cat, prod, false),
            EventType::AddCart => w.view(cat, prod, true),
        }
    }

    fn finish(&self, w: &WindowAgg, size_ms: i64, start_ms: i64, top_k: usize) -> FinalWindow {
        w.finish(size_ms, start_ms, top_k, &self.names)
    }

    fn keys(w: &WindowAgg) -> usize {
        w.keys()
    }
}

/// The shop events' window operator.
pub type WindowCore = Windows<Shop>;

/// An open window: its aggregates and, per source partition, the first accepted offset
/// that contributed and the partition's max event time before it — where a restart must
/// resume reading.
#[derive(Debug)]
struct Open<W> {
    agg: W,
    first: Vec<Option<(u64, i64)>>,
}

/// What became of one valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Aggregated into its windows.
    Accepted,
    /// Not aggregated: too late.
    Late(LateReason),
    /// Not aggregated: same `event_id` already accepted on this partition.
    Duplicate,
}

/// Why an event was late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateReason {
    /// Its event time is below its partition's watermark.
    BelowWatermark,
    /// Its window was already final although its partition's watermark had not passed it
    /// (the window closed while the partition was idle, or a `--drain` closed it).
    WindowClosed,
}

impl LateReason {
    /// Text kept with the late-event record.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BelowWatermark => "event time below the partition watermark",
            Self::WindowClosed => "window closed while its partition was idle",
        }
    }
}

/// Where to resume one partition after a restart: the offset to read from and the
/// partition's max event time before that offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResume {
    /// First offset to re-read.
    pub offset: u64,
    /// Max event time of the partition's records before `offset` (`i64::MIN` if none).
    pub max_ts_before: i64,
}

/// The window operator of one stream. Feed it each partition's items in offset order
/// (partitions may interleave arbitrarily), call [`Windows::advance`] between batches, and
/// store what it returns.
#[derive(Debug)]
pub struct Windows<A: Aggregator> {
    cfg: WindowConfig,
    bucket_ms: i64,
    parts: Vec<PartitionState>,
    /// Open windows keyed by (end, size index): finalisation pops from the front.
    windows: BTreeMap<(i64, usize), Open<A::Window>>,
    /// Every window ending at or before this is final (emitted earlier, maybe by a previous
    /// process). Never decreases.
    finalized_through: i64,
    agg: A,
}

impl<A: Aggregator + Default> Windows<A> {
    /// A core for `partitions` source partitions that has seen nothing.
    #[must_use]
    pub fn new(cfg: WindowConfig, partitions: usize) -> Self {
        Self::with(cfg, partitions, A::default())
    }
}

impl<A: Aggregator> Windows<A> {
    /// A core for `partitions` source partitions folding with `agg`.
    #[must_use]
    pub fn with(cfg: WindowConfig, partitions: usize, agg: A) -> Self {
        let bucket_ms = cfg.dedup_bucket_ms();
        Self {
            cfg,
            bucket_ms,
            parts: (0..partitions)
                .map(|_| PartitionState::new(i64::MIN))
                .collect(),
            windows: BTreeMap::new(),
            finalized_through: i64::MIN,
            agg,
        }
    }

    /// Restores after a restart: windows ending at or before `finalized_through` are final
    /// already; each partition resumes with its recorded history (`resume[p].max_ts_before`).
    /// The caller then re-reads each partition from `resume[p].offset`, passing
    /// `replaying = true` for the offsets the previous process had already read.
    pub fn restore(&mut self, finalized_through: i64, resume: &[PartitionResume]) {
        self.finalized_through = finalized_through;
        for (st, r) in self.parts.iter_mut().zip(resume) {
            *st = PartitionState::new(r.max_ts_before);
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Processes one valid item read from `partition` at `offset`.
    ///
    /// `replaying` is true while re-reading records a previous process already handled
    /// (between the resume offset and its committed position): windows already final are
    /// then skipped silently instead of counting the event late.
    #[inline]
    pub fn on_event(
        &mut self,
        partition: usize,
        offset: u64,
        item: &A::Item<'_>,
        replaying: bool,
    ) -> Outcome {
        let max_before = self.parts[partition].max_ts;
        self.on_item(partition, offset, max_before, item, replaying)
    }

    /// [`Windows::on_event`] for one of several items of the record at `offset` (a session
    /// document's inner events): `max_before` is the partition's max event time before the
    /// record — where a restart resuming at `offset` starts, before its first item.
    pub fn on_item(
        &mut self,
        partition: usize,
        offset: u64,
        max_before: i64,
        item: &A::Item<'_>,
        replaying: bool,
    ) -> Outcome {
        let (id, ts) = A::key(item);
        let delay = self.cfg.max_delay_ms;
        let bucket = self.bucket_ms;
        let st = &mut self.parts[partition];
        if ts < st.watermark(delay) {
            return Outcome::Late(LateReason::BelowWatermark);
        }
        // The earliest-ending window containing the event: if final, the event is late (only
        // possible after idleness or a drain; without them the watermark check covers it).
        let first_end = self
            .cfg
            .sizes_ms
            .iter()
            .map(|&s| window_end(ts, s))
            .min()
            .unwrap_or(i64::MAX);
        if !replaying && first_end <= self.finalized_through {
            st.observe(ts, delay, bucket);
            return Outcome::Late(LateReason::WindowClosed);
        }
        let hash = xxhash_rust::xxh3::xxh3_128(id.as_bytes());
        let fresh = st.first_sighting(ts, bucket, hash);
        st.observe(ts, delay, bucket);
        if !fresh {
            return Outcome::Duplicate;
        }

        self.fold(partition, offset, max_before, item);
        Outcome::Accepted
    }

    /// Folds `item` into each of its windows that is not final yet. `max_before` is the
    /// partition's max event time before the record, where a restart resuming there starts.
    #[inline]
    fn fold(&mut self, partition: usize, offset: u64, max_before: i64, item: &A::Item<'_>) {
        let ts = A::key(item).1;
        let prepared = self.agg.prepare(item);
        let partitions = self.parts.len();
        for (i, &size) in self.cfg.sizes_ms.iter().enumerate() {
            let end = window_start(ts, size) + size;
            if end <= self.finalized_through || !self.agg.takes(&prepared, size) {
                // Replaying into a window that is already final, or none of its kind.
                continue;
            }
            let agg = &self.agg;
            let w = self.windows.entry((end, i)).or_insert_with(|| Open {
                agg: agg.open(size),
                first: vec![None; partitions],
            });
            w.first[partition].get_or_insert((offset, max_before));
            self.agg.add(&mut w.agg, item, &prepared);
        }
    }

    /// Folds an item another core over the same records accepted (a follower: the
    /// declared aggregates beside the shop's core). That core decided lateness and
    /// duplicates once for both; here the item only goes into its windows not final yet,
    /// so a re-read after a restart does exactly what the first reading did.
    pub fn follow(&mut self, partition: usize, offset: u64, max_before: i64, item: &A::Item<'_>) {
        self.fold(partition, offset, max_before, item);
    }

    /// A follower's finalisation: every window ending at or before `through` (the leading
    /// core's final point) is final now, oldest end first.
    pub fn advance_to(&mut self, through: i64) -> Vec<A::Final> {
        self.finalized_through = self.finalized_through.max(through);
        let top_k = self.cfg.top_k;
        self.pop_final(|a, size, start, w| a.finish(w, size, start, top_k))
    }

    /// Re-reads an event the previous process recorded as late: it is not aggregated, but it
    /// moves the partition's max event time exactly as it did then.
    pub fn replay_late(&mut self, partition: usize, ts_ms: i64) {
        self.parts[partition].observe(ts_ms, self.cfg.max_delay_ms, self.bucket_ms);
    }

    /// Marks a partition idle (excluded from the pipeline watermark) or active again.
    pub fn set_idle(&mut self, partition: usize, idle: bool) {
        self.parts[partition].idle = idle;
    }

    /// Whether a partition is currently idle.
    #[must_use]
    pub fn is_idle(&self, partition: usize) -> bool {
        self.parts[partition].idle
    }

    /// A partition's watermark (`i64::MIN` before its first event).
    #[must_use]
    pub fn partition_watermark(&self, partition: usize) -> i64 {
        self.parts[partition].watermark(self.cfg.max_delay_ms)
    }

    /// Minimum watermark over owned, non-idle partitions. When every one is idle, the
    /// largest partition watermark: a stream that went quiet finalises what it has read,
    /// but nothing beyond any partition's own progress. `None` without partitions.
    #[must_use]
    pub fn pipeline_watermark(&self) -> Option<i64> {
        let delay = self.cfg.max_delay_ms;
        let owned = || self.parts.iter().filter(|p| p.owned);
        owned()
            .filter(|p| !p.idle)
            .map(|p| p.watermark(delay))
            .min()
            .or_else(|| owned().map(|p| p.watermark(delay)).max())
    }

    /// Marks which partitions this process reads; the others never hold the watermark.
    pub fn set_owned(&mut self, owned: &[u32]) {
        for (i, st) in self.parts.iter_mut().enumerate() {
            st.owned = owned.iter().any(|&p| p as usize == i);
        }
    }

    /// Whether this process reads `partition`.
    #[must_use]
    pub fn is_owned(&self, partition: usize) -> bool {
        self.parts[partition].owned
    }

    /// Everything ending at or before this is final.
    #[must_use]
    pub fn finalized_through(&self) -> i64 {
        self.finalized_through
    }

    /// Finalises every window the pipeline watermark has reached, oldest end first.
    pub fn advance(&mut self) -> Vec<A::Final> {
        self.finalise_to_watermark();
        let top_k = self.cfg.top_k;
        self.pop_final(|a, size, start, w| a.finish(w, size, start, top_k))
    }

    /// Finalises every open window, as if the input had ended.
    pub fn drain(&mut self) -> Vec<A::Final> {
        self.finalise_everything();
        let top_k = self.cfg.top_k;
        self.pop_final(|a, size, start, w| a.finish(w, size, start, top_k))
    }

    /// Moves the finalisation point to the pipeline watermark.
    fn finalise_to_watermark(&mut self) {
        if let Some(wm) = self.pipeline_watermark() {
            self.finalized_through = self.finalized_through.max(wm);
        }
    }

    /// Moves the finalisation point past every open window.
    fn finalise_everything(&mut self) {
        if let Some((&(end, _), _)) = self.windows.last_key_value() {
            self.finalized_through = self.finalized_through.max(end);
        }
    }

    /// Removes the windows ending at or before the finalisation point, oldest end first,
    /// each turned into its output by `f(aggregator, size, start, window)`.
    fn pop_final<T>(&mut self, mut f: impl FnMut(&A, i64, i64, &A::Window) -> T) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let (end, i) = *entry.key();
            if end > self.finalized_through {
                break;
            }
            let open = entry.remove();
            let size = self.cfg.sizes_ms[i];
            out.push(f(&self.agg, size, end - size, &open.agg));
        }
        out
    }

    /// The open windows in final form (provisional: they may still change).
    #[must_use]
    pub fn provisional(&self) -> Vec<A::Final> {
        self.windows
            .iter()
            .map(|(&(end, i), w)| {
                let size = self.cfg.sizes_ms[i];
                self.agg.finish(&w.agg, size, end - size, self.cfg.top_k)
            })
            .collect()
    }

    /// Number of open windows and the distinct keys they hold.
    #[must_use]
    pub fn open_state(&self) -> (usize, usize) {
        (
            self.windows.len(),
            self.windows.values().map(|w| A::keys(&w.agg)).sum(),
        )
    }

    /// Where each partition must resume after a crash so that re-reading rebuilds exactly
    /// the open state: the first offset that contributed to any open window, or the next
    /// unread offset (`next_offsets[p]`) when none did.
    #[must_use]
    pub fn resume_points(&self, next_offsets: &[u64]) -> Vec<PartitionResume> {
        let mut out: Vec<PartitionResume> = next_offsets
            .iter()
            .zip(&self.parts)
            .map(|(&offset, st)| PartitionResume {
                offset,
                max_ts_before: st.max_ts,
            })
            .collect();
        for w in self.windows.values() {
            for (r, first) in out.iter_mut().zip(&w.first) {
                if let Some((offset, max_ts_before)) = *first
                    && offset < r.offset
                {
                    *r = PartitionResume {
                        offset,
                        max_ts_before,
                    };
                }
            }
        }
        out
    }

    /// Largest event time seen on a partition.
    #[must_use]
    pub fn max_event_time(&self, partition: usize) -> i64 {
        self.parts[partition].max_ts
    }
}

/// An aggregator whose windows can be computed apart, per source partition (workers), and
/// added up (the merger) into exactly what one operator over every partition finishes.
pub trait Mergeable: Aggregator {
    /// A window's full sums, self-contained (every key, no top-K cut), as published.
    type Partial;
    /// The sums of `w`.
    fn partial(&self, w: &Self::Window) -> Self::Partial;
    /// A window made of `partials`, finished as [`Aggregator::finish`] does.
    fn merged<'p>(
        &mut self,
        partials: impl IntoIterator<Item = &'p Self::Partial>,
        size_ms: i64,
        start_ms: i64,
        top_k: usize,
    ) -> Self::Final
    where
        Self::Partial: 'p;
    /// Keys a partial holds (the merger's summary).
    fn partial_keys(p: &Self::Partial) -> usize;
}

impl Mergeable for Shop {
    type Partial = PartialAgg;

    fn partial(&self, w: &WindowAgg) -> PartialAgg {
        w.to_partial(&self.names)
    }

    fn merged<'p>(
        &mut self,
        partials: impl IntoIterator<Item = &'p PartialAgg>,
        size_ms: i64,
        start_ms: i64,
        top_k: usize,
    ) -> FinalWindow {
        let mut w = self.open(size_ms);
        for p in partials {
            w.absorb(p, &mut |name| self.intern(name));
        }
        self.finish(&w, size_ms, start_ms, top_k)
    }

    fn partial_keys(p: &PartialAgg) -> usize {
        p.categories.len() + p.products.len() + p.queries.len()
    }
}

impl<A: Mergeable> Windows<A> {
    /// Like [`Windows::advance`], but hands out each window's full sums (a worker's
    /// partials) as (size, start, sums).
    pub fn advance_partials(&mut self) -> Vec<(i64, i64, A::Partial)> {
        self.finalise_to_watermark();
        self.pop_final(|a, size, start, w| (size, start, a.partial(w)))
    }

    /// [`Windows::advance_to`], as partials (a worker's follower).
    pub fn advance_partials_to(&mut self, through: i64) -> Vec<(i64, i64, A::Partial)> {
        self.finalized_through = self.finalized_through.max(through);
        self.pop_final(|a, size, start, w| (size, start, a.partial(w)))
    }

    /// Like [`Windows::drain`], as partials.
    pub fn drain_partials(&mut self) -> Vec<(i64, i64, A::Partial)> {
        self.finalise_everything();
        self.pop_final(|a, size, start, w| (size, start, a.partial(w)))
    }

    /// The final form of one window made of partials (a merger): their sums, then the same
    /// sorting and top-K cut as a single process.
    pub fn merge_partials<'p>(
        &mut self,
        size_ms: i64,
        start_ms: i64,
        partials: impl IntoIterator<Item = &'p A::Partial>,
    ) -> A::Final
    where
        A::Partial: 'p,
    {
        self.agg.merged(partials, size_ms, start_ms, self.cfg.top_k)
    }
}
