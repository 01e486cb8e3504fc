//! One source partition's event-time progress: its watermark and its duplicate filter.

use std::collections::{BTreeMap, HashSet};

use super::assign::window_start;

/// Per-partition state that decides late and duplicate events.
///
/// The duplicate filter keeps the ids of accepted events grouped by *bucket* (the GCD of
/// the window sizes). An event is a duplicate when an accepted event with the same id and
/// an event time in the same bucket was already read on this partition. A bucket is
/// forgotten once the watermark passes its end: any event for it is late from then on, so
/// the filter loses nothing. Because a bucket never straddles a window, what a restart
/// rebuilds of the filter is exact for every window still open (see `docs/ARCHITECTURE.md`).
#[derive(Debug, Clone)]
pub struct PartitionState {
    /// Largest event time of any valid event read so far; `i64::MIN` before the first.
    pub max_ts: i64,
    /// Declared idle by the wall clock: excluded from the pipeline watermark.
    pub idle: bool,
    /// Read by this process (a consumer group may give other partitions to other
    /// processes): partitions not owned never hold the pipeline watermark.
    pub owned: bool,
    /// Accepted event-id hashes per bucket start.
    dedup: BTreeMap<i64, HashSet<u128, ahash::RandomState>>,
}

impl PartitionState {
    /// A partition that has read nothing (or resumes with `max_ts` as its history).
    #[must_use]
    pub fn new(max_ts: i64) -> Self {
        Self {
            max_ts,
            idle: false,
            owned: true,
            dedup: BTreeMap::new(),
        }
    }

    /// `max_ts − max_delay` (saturating: `i64::MIN` while nothing was read).
    #[must_use]
    pub fn watermark(&self, max_delay_ms: i64) -> i64 {
        self.max_ts.saturating_sub(max_delay_ms)
    }

    /// Records an accepted id; returns `false` if it was already present (a duplicate).
    pub fn first_sighting(&mut self, ts_ms: i64, bucket_ms: i64, id_hash: u128) -> bool {
        self.dedup
            .entry(window_start(ts_ms, bucket_ms))
            .or_default()
            .insert(id_hash)
    }

    /// Raises `max_ts` and forgets the buckets the watermark has passed.
    pub fn observe(&mut self, ts_ms: i64, max_delay_ms: i64, bucket_ms: i64) {
        if ts_ms > self.max_ts {
            self.max_ts = ts_ms;
            let wm = self.watermark(max_delay_ms);
            while let Some((&start, _)) = self.dedup.first_key_value() {
                if start.saturating_add(bucket_ms) > wm {
                    break;
                }
                self.dedup.pop_first();
            }
        }
    }

    /// Ids currently remembered (for tests and memory metrics).
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.dedup.values().map(HashSet::len).sum()
    }
}
