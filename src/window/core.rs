//! [`WindowCore`]: routes events to windows, decides late and duplicate, finalises.

use std::collections::{BTreeMap, HashMap};

use super::WindowConfig;
use super::aggregate::{FinalWindow, PartialAgg, WindowAgg};
use super::assign::{window_end, window_start};
use super::watermark::PartitionState;
use crate::event::{Event, EventType, normalize_query};

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

/// The window operator. Feed it each partition's events in offset order (partitions may
/// interleave arbitrarily), call [`WindowCore::advance`] between batches, and store what it
/// returns.
#[derive(Debug)]
pub struct WindowCore {
    cfg: WindowConfig,
    bucket_ms: i64,
    parts: Vec<PartitionState>,
    /// Open windows keyed by (end, size index): finalisation pops from the front.
    windows: BTreeMap<(i64, usize), WindowAgg>,
    /// Every window ending at or before this is final (emitted earlier, maybe by a previous
    /// process). Never decreases.
    finalized_through: i64,
    /// Interned product ids and categories.
    intern: HashMap<Box<str>, u32, ahash::RandomState>,
    names: Vec<Box<str>>,
    query_buf: String,
}

impl WindowCore {
    /// A core for `partitions` source partitions that has seen nothing.
    #[must_use]
    pub fn new(cfg: WindowConfig, partitions: usize) -> Self {
        let bucket_ms = cfg.dedup_bucket_ms();
        Self {
            cfg,
            bucket_ms,
            parts: (0..partitions)
                .map(|_| PartitionState::new(i64::MIN))
                .collect(),
            windows: BTreeMap::new(),
            finalized_through: i64::MIN,
            intern: HashMap::default(),
            names: Vec::new(),
            query_buf: String::new(),
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

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.intern.get(s) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(s.into());
        self.intern.insert(s.into(), id);
        id
    }

    /// Processes one valid event read from `partition` at `offset`.
    ///
    /// `replaying` is true while re-reading records a previous process already handled
    /// (between the resume offset and its committed position): windows already final are
    /// then skipped silently instead of counting the event late.
    pub fn on_event(
        &mut self,
        partition: usize,
        offset: u64,
        ev: &Event<'_>,
        replaying: bool,
    ) -> Outcome {
        let delay = self.cfg.max_delay_ms;
        let bucket = self.bucket_ms;
        let st = &mut self.parts[partition];
        let max_before = st.max_ts;
        if ev.ts_ms < st.watermark(delay) {
            return Outcome::Late(LateReason::BelowWatermark);
        }
        // The earliest-ending window containing the event: if final, the event is late (only
        // possible after idleness or a drain; without them the watermark check covers it).
        let first_end = self
            .cfg
            .sizes_ms
            .iter()
            .map(|&s| window_end(ev.ts_ms, s))
            .min()
            .unwrap_or(i64::MAX);
        if !replaying && first_end <= self.finalized_through {
            st.observe(ev.ts_ms, delay, bucket);
            return Outcome::Late(LateReason::WindowClosed);
        }
        let id = xxhash_rust::xxh3::xxh3_128(ev.event_id.as_bytes());
        let fresh = st.first_sighting(ev.ts_ms, bucket, id);
        st.observe(ev.ts_ms, delay, bucket);
        if !fresh {
            return Outcome::Duplicate;
        }

        let (cat, prod) = if ev.event_type == EventType::Purchase {
            (self.intern(&ev.category), self.intern(&ev.product_id))
        } else {
            (0, 0)
        };
        if ev.event_type == EventType::Search {
            normalize_query(&ev.query, &mut self.query_buf);
        }
        let units = u64::from(ev.quantity);
        let revenue = u128::from(ev.price_minor) * u128::from(ev.quantity);
        let partitions = self.parts.len();
        for (i, &size) in self.cfg.sizes_ms.iter().enumerate() {
            let end = window_start(ev.ts_ms, size) + size;
            if end <= self.finalized_through {
                continue; // replaying into a window that is already final
            }
            let w = self
                .windows
                .entry((end, i))
                .or_insert_with(|| WindowAgg::new(partitions));
            w.first[partition].get_or_insert((offset, max_before));
            w.count(ev.event_type);
            match ev.event_type {
                EventType::Purchase => w.purchase(cat, prod, units, revenue),
                EventType::Search => w.search(&self.query_buf),
                EventType::View | EventType::AddCart => {}
            }
        }
        Outcome::Accepted
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
    pub fn advance(&mut self) -> Vec<FinalWindow> {
        self.finalise_to_watermark();
        let top_k = self.cfg.top_k;
        self.pop_final(|size, start, agg, names| agg.finish(size, start, top_k, names))
    }

    /// Finalises every open window, as if the input had ended.
    pub fn drain(&mut self) -> Vec<FinalWindow> {
        self.finalise_everything();
        let top_k = self.cfg.top_k;
        self.pop_final(|size, start, agg, names| agg.finish(size, start, top_k, names))
    }

    /// Like [`WindowCore::advance`], but hands out each window's full sums (a worker's
    /// partials: every key, no top-K cut) as (size, start, sums).
    pub fn advance_partials(&mut self) -> Vec<(i64, i64, PartialAgg)> {
        self.finalise_to_watermark();
        self.pop_final(|size, start, agg, names| (size, start, agg.to_partial(names)))
    }

    /// Like [`WindowCore::drain`], as partials.
    pub fn drain_partials(&mut self) -> Vec<(i64, i64, PartialAgg)> {
        self.finalise_everything();
        self.pop_final(|size, start, agg, names| (size, start, agg.to_partial(names)))
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
    /// each turned into its output by `f(size, start, aggregates, names)`.
    fn pop_final<T>(
        &mut self,
        mut f: impl FnMut(i64, i64, &WindowAgg, &[Box<str>]) -> T,
    ) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let (end, i) = *entry.key();
            if end > self.finalized_through {
                break;
            }
            let agg = entry.remove();
            let size = self.cfg.sizes_ms[i];
            out.push(f(size, end - size, &agg, &self.names));
        }
        out
    }

    /// The final form of one window made of partials (a merger): their sums, then the same
    /// sorting and top-K cut as a single process.
    pub fn merge_partials<'p>(
        &mut self,
        size_ms: i64,
        start_ms: i64,
        partials: impl IntoIterator<Item = &'p PartialAgg>,
    ) -> FinalWindow {
        let mut agg = WindowAgg::new(0);
        for p in partials {
            agg.absorb(p, &mut |name| self.intern(name));
        }
        agg.finish(size_ms, start_ms, self.cfg.top_k, &self.names)
    }

    /// The open windows in final form (provisional: they may still change).
    #[must_use]
    pub fn provisional(&self) -> Vec<FinalWindow> {
        self.windows
            .iter()
            .map(|(&(end, i), agg)| {
                let size = self.cfg.sizes_ms[i];
                agg.finish(size, end - size, self.cfg.top_k, &self.names)
            })
            .collect()
    }

    /// Number of open windows and the distinct keys they hold.
    #[must_use]
    pub fn open_state(&self) -> (usize, usize) {
        (
            self.windows.len(),
            self.windows.values().map(WindowAgg::keys).sum(),
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
