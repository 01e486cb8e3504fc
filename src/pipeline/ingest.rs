//! The one ingest step both deployments run: a single process (`--role all`, one
//! [`WindowCore`] over every partition) and a worker (`--role worker`, one core per owned
//! partition). Per source partition a [`Cursor`] knows where reading is and which offsets a
//! previous process already handled; [`Cursor::ingest`] turns one decoded record into one
//! [`Ingested`] outcome, and a [`Tally`] is the one place outcomes become status figures and
//! metrics — counted in plain integers per record, applied to the shared status and the
//! Prometheus counters in one flush (no atomic, no allocation per accepted record).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CHECKPOINT_EVERY, Status, dead_letter, not_in_future};
use crate::event::{DecodeError, InvalidKind};
use crate::log::Record;
use crate::metrics::Metrics;
use crate::store::{DeadLetter, LateRecord};
use crate::window::{Aggregator, Outcome, Windows};

/// What one record did.
#[derive(Debug)]
pub enum Ingested {
    /// Re-read after a restart (handled by a previous process): it rebuilt the open windows
    /// and is counted nowhere else.
    Rebuilt,
    /// Aggregated into its windows.
    Accepted,
    /// Dropped: its `event_id` was already accepted on this partition.
    Duplicate,
    /// Too late for its windows; the record is kept for a later replay.
    Late(LateRecord),
    /// Refused by the decoder; the dead letter is kept.
    Invalid(DeadLetter),
}

/// Where reading one source partition is.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// Next offset to read.
    pub next: u64,
    /// Offsets below this were handled by a previous process (re-read to rebuild state).
    pub handled: u64,
    /// Offset of the last event-time index checkpoint.
    last_checkpoint: u64,
    /// The source chose where reading starts (Kafka: the group's committed offset) and no
    /// record was read yet: if the first one is past `next`, kappa does not know what came
    /// before it.
    start_unknown: bool,
    /// The max event time before `next` is known (read from the partition's beginning or
    /// from a stored resume point): only then are checkpoints written.
    indexed: bool,
    /// Where reading began past unread records, until the store has been told
    /// ([`Cursor::take_unindexed`]).
    unindexed_from: Option<u64>,
    /// Wall clock of the last record (or of the assignment): idleness.
    pub last_record_at: Instant,
    /// Offsets between the resume point and `handled` the previous process recorded as
    /// late: on re-reading they stay late, whatever made them so (idleness included).
    late_rereads: HashSet<u64>,
}

impl Cursor {
    /// A cursor resuming at `next`, with offsets below `handled` already handled and
    /// `late_rereads` among them recorded late.
    #[must_use]
    pub fn new(next: u64, handled: u64, late_rereads: HashSet<u64>) -> Self {
        Self {
            next,
            handled,
            last_checkpoint: next,
            start_unknown: false,
            indexed: true,
            unindexed_from: None,
            last_record_at: Instant::now(),
            late_rereads,
        }
    }

    /// The source puts this partition where it starts (no stored position): at `at` when
    /// the source says (Kafka: the group's committed offset), else where its first record
    /// will tell. Past records never read, the event-time index cannot cover it.
    #[must_use]
    pub fn where_the_source_starts(mut self, at: Option<u64>) -> Self {
        match at {
            Some(at) => {
                self.next = at;
                self.handled = self.handled.max(at);
                self.last_checkpoint = at;
                if at > 0 {
                    self.indexed = false;
                    self.unindexed_from = Some(at);
                }
            }
            None => self.start_unknown = true,
        }
        self
    }

    /// Still re-reading what a previous process handled.
    #[must_use]
    pub fn rebuilding(&self) -> bool {
        self.next < self.handled
    }

    /// One record through `core` (its partition `slot` there): the outcome, with the late
    /// record or dead letter to keep. An item more than `max_future` after the record's
    /// ingest time is invalid.
    pub fn ingest<'b, A: Aggregator>(
        &mut self,
        core: &mut Windows<A>,
        slot: usize,
        rec: &Record<'b>,
        decoded: Result<A::Item<'b>, DecodeError>,
        max_future: Duration,
    ) -> Ingested {
        let replaying = rec.offset < self.handled;
        if self.start_unknown {
            self.start_unknown = false;
            // History before this record was never read: the event-time index cannot
            // cover this partition (replays use the log's record times instead).
            self.indexed = rec.offset <= self.next;
            if !self.indexed {
                self.unindexed_from = Some(rec.offset);
            }
        }
        self.next = rec.offset + 1;
        let decoded = decoded.and_then(|ev| {
            not_in_future(A::key(&ev).1, rec, max_future)?;
            Ok(ev)
        });
        match decoded {
            Err(_) if replaying => Ingested::Rebuilt,
            Err(e) => Ingested::Invalid(dead_letter(rec, e)),
            Ok(ev) if replaying && self.late_rereads.contains(&rec.offset) => {
                core.replay_late(slot, A::key(&ev).1);
                Ingested::Rebuilt
            }
            Ok(ev) => match core.on_event(slot, rec.offset, &ev, replaying) {
                _ if replaying => Ingested::Rebuilt,
                Outcome::Accepted => Ingested::Accepted,
                Outcome::Duplicate => Ingested::Duplicate,
                Outcome::Late(reason) => {
                    let size = core.config().sizes_ms[0];
                    let ts = A::key(&ev).1;
                    Ingested::Late(LateRecord {
                        partition: rec.partition,
                        offset: rec.offset,
                        event_ts: ts,
                        window_start: crate::window::assign::window_start(ts, size),
                        window_size: size,
                        reason: reason.as_str().into(),
                    })
                }
            },
        }
    }

    /// The offset to checkpoint the event-time index at, when one is due (every
    /// [`CHECKPOINT_EVERY`] records, never while rebuilding nor when the history before
    /// the first record read is unknown); marks it written.
    pub fn checkpoint_due(&mut self) -> Option<u64> {
        (self.indexed && !self.rebuilding() && self.next >= self.last_checkpoint + CHECKPOINT_EVERY)
            .then(|| {
                self.last_checkpoint = self.next;
                self.next
            })
    }

    /// Where reading began past records never read, once: for the store to stop using this
    /// partition's checkpoints ([`crate::store::Store::mark_unindexed`]), for good.
    pub fn take_unindexed(&mut self) -> Option<u64> {
        self.unindexed_from.take()
    }

    /// The "handled" mark to commit: never moved back, even while rebuilding.
    #[must_use]
    pub fn handled_mark(&self) -> u64 {
        self.next.max(self.handled)
    }

    /// Everything read is committed: it counts as handled from now on.
    pub fn committed(&mut self) {
        self.handled = self.handled_mark();
    }

    /// Caught up with `end` and silent for `timeout`.
    #[must_use]
    pub fn idle(&self, end: u64, timeout: Duration) -> bool {
        self.next >= end && self.last_record_at.elapsed() >= timeout
    }
}

/// Outcome counts of one partition. Workers publish their running totals with every
/// progress message, so that a merger exports what a single process does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records read, re-read ones included.
    pub read: u64,
    /// Records re-read to rebuild state.
    pub rebuilt: u64,
    /// See [`Ingested`].
    pub accepted: u64,
    /// See [`Ingested`].
    pub duplicates: u64,
    /// See [`Ingested`].
    pub late: u64,
    /// Invalid records by kind, in [`InvalidKind::ALL`] order.
    pub invalid: [u64; InvalidKind::ALL.len()],
}

impl Counts {
    /// Counts one outcome.
    #[inline]
    pub fn add(&mut self, outcome: &Ingested) {
        self.read += 1;
        match outcome {
            Ingested::Rebuilt => self.rebuilt += 1,
            Ingested::Accepted => self.accepted += 1,
            Ingested::Duplicate => self.duplicates += 1,
            Ingested::Late(_) => self.late += 1,
            Ingested::Invalid(d) => {
                let i = InvalidKind::ALL
                    .iter()
                    .position(|k| k.as_str() == d.kind)
                    .unwrap_or(0);
                self.invalid[i] += 1;
            }
        }
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: &Counts) {
        self.read += other.read;
        self.rebuilt += other.rebuilt;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.late += other.late;
        for (a, b) in self.invalid.iter_mut().zip(other.invalid) {
            *a += b;
        }
    }

    /// `self - earlier`, field by field (a running total's growth).
    #[must_use]
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = Counts {
            read: self.read.saturating_sub(earlier.read),
            rebuilt: self.rebuilt.saturating_sub(earlier.rebuilt),
            accepted: self.accepted.saturating_sub(earlier.accepted),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            late: self.late.saturating_sub(earlier.late),
            invalid: [0; InvalidKind::ALL.len()],
        };
        for (i, v) in d.invalid.iter_mut().enumerate() {
            *v = self.invalid[i].saturating_sub(earlier.invalid[i]);
        }
        d
    }

    /// Records handled for the first time (not re-read).
    #[must_use]
    pub fn new_records(&self) -> u64 {
        self.read - self.rebuilt
    }

    /// Invalid records of every kind.
    #[must_use]
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }

    /// Applies these counts of source partition `partition` to the status and the
    /// Prometheus counters (`source`: the consumed source's kind label). The one place
    /// outcomes reach `/api/status` and `/metrics`.
    pub fn apply(&self, partition: u32, source: &str, metrics: &Metrics, status: &mut Status) {
        status.records += self.read;
        status.accepted += self.accepted;
        status.duplicates += self.duplicates;
        status.late += self.late;
        status.invalid += self.invalid_total();
        let label = partition.to_string();
        if self.read > 0 {
            metrics
                .records_consumed
                .with_label_values(&[source, &label])
                .inc_by(self.read);
        }
        if self.duplicates > 0 {
            metrics
                .duplicate_records
                .with_label_values(&[&label])
                .inc_by(self.duplicates);
        }
        if self.late > 0 {
            metrics
                .late_records
                .with_label_values(&[&label])
                .inc_by(self.late);
        }
        for (k, &n) in InvalidKind::ALL.iter().zip(&self.invalid) {
            if n > 0 {
                metrics
                    .invalid_records
                    .with_label_values(&[k.as_str()])
                    .inc_by(n);
            }
        }
    }
}

/// Outcomes counted per partition since the last flush.
#[derive(Debug, Default)]
pub struct Tally {
    unflushed: Vec<Counts>,
}

impl Tally {
    /// A tally over `partitions` source partitions.
    #[must_use]
    pub fn new(partitions: usize) -> Self {
        Self {
            unflushed: vec![Counts::default(); partitions],
        }
    }

    /// Counts `outcome` on partition `p`.
    #[inline]
    pub fn count(&mut self, p: usize, outcome: &Ingested) {
        self.unflushed[p].add(outcome);
    }

    /// What partition `p` counted since the last flush.
    #[must_use]
    pub fn pending(&self, p: usize) -> &Counts {
        &self.unflushed[p]
    }

    /// Applies everything counted to `status` and `metrics` (see [`Counts::apply`]) and
    /// starts again from zero; calls `also` with each partition's counts first.
    pub fn flush(
        &mut self,
        source: &str,
        metrics: &Metrics,
        status: &mut Status,
        mut also: impl FnMut(u32, &Counts),
    ) {
        for (p, c) in self.unflushed.iter_mut().enumerate() {
            if *c == Counts::default() {
                continue;
            }
            let p = u32::try_from(p).expect("partition fits u32");
            also(p, c);
            c.apply(p, source, metrics, status);
            *c = Counts::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowCore;

    /// Feeds invalid records at `offsets` (the window core plays no part in them).
    fn feed(c: &mut Cursor, core: &mut WindowCore, offsets: std::ops::Range<u64>) {
        for offset in offsets {
            let rec = Record {
                partition: 0,
                offset,
                timestamp_ms: 0,
                key: b"",
                value: b"not json",
            };
            c.ingest(
                core,
                0,
                &rec,
                crate::event::decode(rec.value, 64),
                Duration::from_secs(1),
            );
        }
    }

    #[test]
    fn checkpoints_are_written_only_where_the_history_before_is_known() {
        let mut core = WindowCore::new(crate::config::Config::default().window_config(), 1);
        // The source starts the partition at its beginning.
        let mut c = Cursor::new(0, 0, HashSet::new()).where_the_source_starts(None);
        feed(&mut c, &mut core, 0..CHECKPOINT_EVERY);
        assert_eq!(c.checkpoint_due(), Some(CHECKPOINT_EVERY));
        // The source starts it past records kappa never read (a group's committed offset).
        let mut c = Cursor::new(0, 0, HashSet::new()).where_the_source_starts(None);
        feed(&mut c, &mut core, 500..500 + 2 * CHECKPOINT_EVERY);
        assert_eq!(c.checkpoint_due(), None);
        // Said once, for the store to keep.
        assert_eq!(c.take_unindexed(), Some(500));
        assert_eq!(c.take_unindexed(), None);
        // The same, said by the source: the cursor is there before any record.
        let mut c = Cursor::new(0, 0, HashSet::new()).where_the_source_starts(Some(700));
        assert_eq!(c.next, 700);
        feed(&mut c, &mut core, 700..700 + 2 * CHECKPOINT_EVERY);
        assert_eq!(c.checkpoint_due(), None);
        assert_eq!(c.take_unindexed(), Some(700));
        // A stored resume point: what came before is known.
        let mut c = Cursor::new(500, 500, HashSet::new());
        feed(&mut c, &mut core, 500..500 + CHECKPOINT_EVERY);
        assert_eq!(c.checkpoint_due(), Some(500 + CHECKPOINT_EVERY));
    }
}
