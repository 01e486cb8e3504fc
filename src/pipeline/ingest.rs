//! The one ingest step both deployments run: a single process (`--role all`, one
//! [`WindowCore`] over every partition) and a worker (`--role worker`, one core per owned
//! partition). Per source partition a [`Cursor`] knows where reading is and which offsets a
//! previous process already handled; [`Cursor::ingest`] turns one decoded record into one
//! [`Ingested`] outcome, and a [`Tally`] is the one place outcomes become status figures and
//! metrics — counted in plain integers per record, applied to the shared status and the
//! Prometheus counters in one flush (no atomic, no allocation per accepted record).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CHECKPOINT_EVERY, Status, dead_letter, not_in_future};
use crate::event::{DecodeError, InvalidKind};
use crate::log::Record;
use crate::metrics::Metrics;
use crate::store::{DeadLetter, LateRecord};
use crate::window::{Aggregator, Outcome, Shop, WindowCore, Windows};

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

/// A session document's dead letter: one reason per bad inner event (`bad`, of `total`).
fn document_letter(rec: &Record<'_>, bad: &[DecodeError], total: usize) -> Option<DeadLetter> {
    let first = bad.first()?;
    let reasons: Vec<&str> = bad.iter().map(|e| e.message.as_str()).collect();
    Some(dead_letter(
        rec,
        DecodeError {
            kind: first.kind,
            message: format!(
                "{} of {total} events of the session document: {}",
                bad.len(),
                reasons.join("; ")
            ),
        },
    ))
}

/// A session document's late record: the first late inner event's time, the late ones
/// named (`events[1], events[4]: …`, read back by [`late_inner`]); `size`: the smallest
/// window size.
fn document_late(
    rec: &Record<'_>,
    late: &[(usize, i64, &'static str)],
    size: i64,
) -> Option<LateRecord> {
    let &(_, ts, reason) = late.first()?;
    let which: Vec<String> = late.iter().map(|l| format!("events[{}]", l.0)).collect();
    Some(LateRecord {
        partition: rec.partition,
        offset: rec.offset,
        event_ts: ts,
        window_start: crate::window::assign::window_start(ts, size),
        window_size: size,
        reason: format!("{}: {reason}", which.join(", ")),
    })
}

/// How a session document's inner events are decoded and judged.
#[derive(Clone, Copy)]
pub struct Judging<'a> {
    /// The decoder's rules.
    pub rules: &'a crate::event::Rules,
    /// The catalogue as of the document's offset, when events are joined.
    pub catalogue: Option<&'a dyn crate::event::Join>,
    /// How far after its record's ingest time an event may be.
    pub max_future: Duration,
}

/// What one session document did ([`Cursor::ingest_document`]).
#[derive(Debug)]
pub struct Document {
    /// Its inner events' outcomes (one record read).
    pub counts: Counts,
    /// The document's dead letter, if any inner event (or the document) was invalid.
    pub dead: Option<DeadLetter>,
    /// The document's late record, if any inner event was late.
    pub late: Option<LateRecord>,
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
    /// Among them, session documents: which of their inner events were late.
    late_documents: HashMap<u64, Vec<usize>>,
}

/// The inner events a session document's late record names (`events[1], events[4]: …`,
/// as [`Cursor::ingest_document`] writes it), or `None` for an ordinary record's.
#[must_use]
pub fn late_inner(reason: &str) -> Option<Vec<usize>> {
    let (names, _) = reason.split_once(": ")?;
    names
        .split(", ")
        .map(|n| n.strip_prefix("events[")?.strip_suffix(']')?.parse().ok())
        .collect()
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
            late_documents: HashMap::new(),
        }
    }

    /// Which inner events of the session documents among the late re-reads were late
    /// (from their late records, [`late_inner`]).
    #[must_use]
    pub fn with_late_documents(mut self, late: HashMap<u64, Vec<usize>>) -> Self {
        self.late_documents = late;
        self
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
        self.ingest_then(core, slot, rec, decoded, max_future, |_| {})
    }

    /// [`Cursor::ingest`], then `accepted(item)` when `core` aggregated the item, re-read
    /// or new (a follower folds exactly those).
    #[inline]
    pub fn ingest_then<'b, A: Aggregator>(
        &mut self,
        core: &mut Windows<A>,
        slot: usize,
        rec: &Record<'b>,
        decoded: Result<A::Item<'b>, DecodeError>,
        max_future: Duration,
        accepted: impl FnOnce(&A::Item<'b>),
    ) -> Ingested {
        let replaying = self.read(rec);
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
                Outcome::Accepted => {
                    accepted(&ev);
                    if replaying {
                        Ingested::Rebuilt
                    } else {
                        Ingested::Accepted
                    }
                }
                _ if replaying => Ingested::Rebuilt,
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

    /// Moves past `rec`; whether it is re-read (handled by a previous process).
    #[inline]
    fn read(&mut self, rec: &Record<'_>) -> bool {
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
        rec.offset < self.handled
    }

    /// A session document (`"schema":"session/1"`, [`crate::event::session`]) through
    /// `core`: each inner event is judged alone, in document order, at the document's
    /// offset. The document is one record of the log, so it is at most one dead letter
    /// (one reason per bad inner event, `events[i]: …`) and one late record (the first late
    /// inner event's time, the late ones named); the counts are per inner event. Re-read
    /// after a restart, the inner events its late record names stay late (as an ordinary
    /// record's late re-read does, idleness included); the others go through the core
    /// again as re-read. `accepted(event, its bytes, max_before)` is told each inner event
    /// `core` aggregated (re-read or new), as [`Cursor::ingest_then`] does.
    pub fn ingest_document(
        &mut self,
        core: &mut WindowCore,
        slot: usize,
        rec: &Record<'_>,
        judging: &Judging<'_>,
        accepted: &mut dyn FnMut(&crate::event::Event<'_>, &[u8], i64),
    ) -> Document {
        let Judging {
            rules,
            catalogue,
            max_future,
        } = *judging;
        let inner = match crate::event::session::explode(rec.value, rules.max_bytes) {
            Ok(inner) => inner,
            Err(e) => {
                let outcome = self.ingest::<Shop>(core, slot, rec, Err(e), max_future);
                let mut counts = Counts::default();
                counts.add(&outcome);
                return Document {
                    counts,
                    dead: match outcome {
                        Ingested::Invalid(d) => Some(d),
                        _ => None,
                    },
                    late: None,
                };
            }
        };
        let replaying = self.read(rec);
        // A restart resumes at the document: before its first inner event.
        let max_before = core.max_event_time(slot);
        let mut doc = Document {
            counts: Counts {
                read: 1,
                rebuilt: u64::from(replaying),
                ..Counts::default()
            },
            dead: None,
            late: None,
        };
        let mut bad: Vec<DecodeError> = Vec::new();
        let mut late: Vec<(usize, i64, &'static str)> = Vec::new();
        for i in &inner {
            // Errors name the inner event (explode's own already do).
            let decoded = match &i.record {
                Ok(bytes) => crate::event::decode_joined(bytes, rules, catalogue)
                    .and_then(|ev| {
                        not_in_future(ev.ts_ms, rec, max_future)?;
                        Ok(ev)
                    })
                    .map_err(|e| DecodeError {
                        kind: e.kind,
                        message: format!("events[{}]: {}", i.index, e.message),
                    }),
                Err(e) => Err(e.clone()),
            };
            match decoded {
                Err(_) if replaying => {}
                Err(e) => {
                    let n = InvalidKind::ALL
                        .iter()
                        .position(|k| *k == e.kind)
                        .unwrap_or(0);
                    doc.counts.invalid[n] += 1;
                    bad.push(e);
                }
                // Recorded late before a restart: late again, whatever made it so.
                Ok(ev)
                    if replaying
                        && self
                            .late_documents
                            .get(&rec.offset)
                            .is_some_and(|l| l.contains(&i.index)) =>
                {
                    core.replay_late(slot, ev.ts_ms);
                }
                Ok(ev) => match core.on_item(slot, rec.offset, max_before, &ev, replaying) {
                    Outcome::Accepted => {
                        if let Ok(bytes) = &i.record {
                            accepted(&ev, bytes, max_before);
                        }
                        if !replaying {
                            doc.counts.accepted += 1;
                        }
                    }
                    _ if replaying => {}
                    Outcome::Duplicate => doc.counts.duplicates += 1,
                    Outcome::Late(reason) => {
                        doc.counts.late += 1;
                        late.push((i.index, ev.ts_ms, reason.as_str()));
                    }
                },
            }
        }
        doc.dead = document_letter(rec, &bad, inner.len());
        doc.late = document_late(rec, &late, core.config().sizes_ms[0]);
        doc
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

impl Counts {
    /// Adds these counts to a stream's own counters (`kappa_stream_records_total`: the
    /// streams besides the events).
    pub fn apply_stream(&self, stream: crate::stream::Stream, metrics: &Metrics) {
        for (outcome, n) in [
            ("accepted", self.accepted),
            ("duplicate", self.duplicates),
            ("late", self.late),
            ("invalid", self.invalid_total()),
            ("rebuilt", self.rebuilt),
        ] {
            metrics
                .stream_records
                .with_label_values(&[stream.as_str(), outcome])
                .inc_by(n);
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

    /// Counts a session document's outcomes on partition `p`.
    pub fn count_all(&mut self, p: usize, counts: &Counts) {
        self.unflushed[p].merge(counts);
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
        self.take(|p, c| {
            also(p, c);
            c.apply(p, source, metrics, status);
        });
    }

    /// Hands each partition's counts since the last flush to `f` and starts again from
    /// zero.
    pub fn take(&mut self, mut f: impl FnMut(u32, &Counts)) {
        for (p, c) in self.unflushed.iter_mut().enumerate() {
            if *c == Counts::default() {
                continue;
            }
            f(u32::try_from(p).expect("partition fits u32"), c);
            *c = Counts::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A document's inner event late because its 10 s window had closed while its
    /// partition was idle (the 1 min window around it still open) stays late when the
    /// document is re-read after a restart: it must not reach the open window then.
    #[test]
    fn a_late_inner_event_stays_late_on_re_reading() {
        let cfg = crate::window::WindowConfig {
            sizes_ms: vec![10_000, 60_000],
            max_delay_ms: 15_000,
            top_k: 3,
        };
        let base = 1_700_000_040_000_i64; // a minute boundary
        let at = |s: i64| crate::event::time::format_rfc3339_ms(base + s * 1000);
        let rules = crate::event::Rules::new(65_536);
        let future = Duration::from_secs(86_400);
        let view = |id: &str, s: i64| {
            format!(
                r#"{{"event_id":"{id}","type":"view","product_id":"p","category":"c","price":"1.00","ts":"{}"}}"#,
                at(s)
            )
        };
        let doc = format!(
            r#"{{"schema":"session/1","session_id":"s","user_id":"u","events":[{},{}]}}"#,
            view("a", 25),
            view("b", 35)
        );
        let other = format!(
            r#"{{"schema":1,"event_id":"o","event_type":"view","user_id":"u","session_id":"s","product_id":"p","category":"c","price":"1.00","ts":"{}"}}"#,
            at(45)
        );
        fn rec(p: u32, value: &[u8], ts: i64) -> Record<'_> {
            Record {
                partition: p,
                offset: 0,
                timestamp_ms: ts,
                key: b"",
                value,
            }
        }
        let ingest_ts = base + 3_600_000;
        // Partition 1 moves on; partition 0, idle, no longer holds the watermark: the
        // 10 s windows up to 30 s are final, the minute is not.
        let run = |core: &mut WindowCore, c: &mut [Cursor; 2], replaying_doc: bool| {
            let o = rec(1, other.as_bytes(), ingest_ts);
            let ev = crate::event::decode_with(o.value, &rules);
            c[1].ingest(core, 1, &o, ev, future);
            if !replaying_doc {
                core.set_idle(0, true);
                let _ = core.advance();
                core.set_idle(0, false);
            }
            c[0].ingest_document(
                core,
                0,
                &rec(0, doc.as_bytes(), ingest_ts),
                &Judging {
                    rules: &rules,
                    catalogue: None,
                    max_future: future,
                },
                &mut |_, _, _| {},
            )
        };
        let mut core = WindowCore::new(cfg.clone(), 2);
        let mut c = [
            Cursor::new(0, 0, HashSet::new()),
            Cursor::new(0, 0, HashSet::new()),
        ];
        let d = run(&mut core, &mut c, false);
        let late = d.late.expect("events[0] is late: its window closed");
        assert_eq!(late_inner(&late.reason), Some(vec![0]), "{}", late.reason);
        let resume = core.resume_points(&[1, 1]);
        let ft = core.finalized_through();
        let minute = |core: &mut WindowCore| {
            core.drain()
                .into_iter()
                .find(|w| w.size_ms == 60_000)
                .map(|w| w.events_by_type)
        };
        let want = minute(&mut core);
        // A restart from the commit after both records: re-reading rebuilds the minute.
        let restart = |documents: HashMap<u64, Vec<usize>>| {
            let mut core = WindowCore::new(cfg.clone(), 2);
            core.restore(ft, &resume);
            let mut c = [
                Cursor::new(resume[0].offset, 1, [0].into()).with_late_documents(documents),
                Cursor::new(resume[1].offset, 1, HashSet::new()),
            ];
            run(&mut core, &mut c, true);
            minute(&mut core)
        };
        assert_eq!(want.map(|c| c[1]), Some(2), "b and the other view");
        assert_eq!(restart([(0, vec![0])].into()), want);
        // Without the list, the late one would reach the open minute.
        assert_ne!(restart(HashMap::new()), want);
    }

    /// Session documents against their events: one partition of documents (inner events
    /// with and without ids, duplicates, late ones, invalid ones), read with a crash and
    /// restart from the last commit at random points, gives the final windows of the same
    /// events read one record each without a crash.
    mod documents {
        use super::*;
        use crate::window::FinalWindow;
        use proptest::prelude::*;

        const BASE: i64 = 1_700_000_000_000;

        fn inner() -> impl Strategy<Value = String> {
            (
                prop::option::of(0u8..12),
                0u8..3,
                -40_000i64..40_000,
                0u8..4,
                prop::bool::weighted(0.1),
            )
                .prop_map(|(id, ty, jitter, product, bad)| {
                    let ty = ["view", "purchase", "search"][usize::from(ty)];
                    let id = id.map_or(String::new(), |i| format!(r#""event_id":"e{i}","#));
                    let ts = crate::event::time::format_rfc3339_ms(BASE + jitter);
                    let ts = if bad { String::new() } else { format!(r#","ts":"{ts}""#) };
                    format!(
                        r#"{{{id}"type":"{ty}","product_id":"p_{product}","category":"c","price":"2.50","quantity":2,"query":"q {product}"{ts}}}"#
                    )
                })
        }

        fn documents() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec((prop::collection::vec(inner(), 1..5), 0u8..3, prop::bool::weighted(0.2)), 0..25)
                .prop_map(|docs| {
                    let mut out: Vec<String> = Vec::new();
                    for (i, (events, session, again)) in docs.into_iter().enumerate() {
                        let doc = format!(
                            r#"{{"schema":"session/1","session_id":"s_{session}","user_id":"u_1","events":[{}]}}"#,
                            events.join(",")
                        );
                        out.push(doc.clone());
                        if again && i % 2 == 0 {
                            out.push(doc); // a re-delivered document
                        }
                    }
                    out
                })
        }

        fn rec(offset: u64, value: &[u8]) -> Record<'_> {
            Record {
                partition: 0,
                offset,
                timestamp_ms: BASE + 3_600_000,
                key: b"",
                value,
            }
        }

        fn cfg() -> crate::window::WindowConfig {
            crate::window::WindowConfig {
                sizes_ms: vec![10_000, 60_000],
                max_delay_ms: 15_000,
                top_k: 3,
            }
        }

        /// The documents' events one record each, no crash; `drain` finalises every open
        /// window after the events of that document (a bounded run that drained a prefix).
        fn flat(docs: &[String], drain: usize) -> Vec<FinalWindow> {
            let rules = crate::event::Rules::new(65_536);
            let mut core = WindowCore::new(cfg(), 1);
            let mut c = Cursor::new(0, 0, HashSet::new());
            let mut out = Vec::new();
            let mut offset = 0;
            for (at, d) in docs.iter().enumerate() {
                for i in crate::event::session::explode(d.as_bytes(), 65_536).unwrap() {
                    let Ok(bytes) = i.record else { continue };
                    let r = rec(offset, &bytes);
                    let ev = crate::event::decode_with(&bytes, &rules);
                    c.ingest(&mut core, 0, &r, ev, Duration::from_secs(86_400));
                    offset += 1;
                    out.extend(core.advance());
                }
                if at == drain {
                    out.extend(core.drain());
                }
            }
            out.extend(core.drain());
            out
        }

        /// The documents as records, committing after `commit` and after the drain at
        /// `drain`, and crashing once after `crash` (restarting from the last commit, with
        /// the late records committed so far).
        fn documents_with_crash(
            docs: &[String],
            commit: usize,
            drain: usize,
            crash: usize,
        ) -> Vec<FinalWindow> {
            let rules = crate::event::Rules::new(65_536);
            let future = Duration::from_secs(86_400);
            let mut core = WindowCore::new(cfg(), 1);
            let mut c = Cursor::new(0, 0, HashSet::new());
            let (mut committed, mut pending) = (Vec::new(), Vec::new());
            let mut saved = None;
            let (mut late, mut pending_late) = (Vec::new(), Vec::new());
            let mut crashed = false;
            let mut at = 0usize;
            while at < docs.len() {
                let d = c.ingest_document(
                    &mut core,
                    0,
                    &rec(at as u64, docs[at].as_bytes()),
                    &Judging {
                        rules: &rules,
                        catalogue: None,
                        max_future: future,
                    },
                    &mut |_, _, _| {},
                );
                pending_late.extend(d.late);
                pending.extend(core.advance());
                if at == drain {
                    pending.extend(core.drain());
                }
                if at == commit || at == drain {
                    committed.append(&mut pending);
                    late.append(&mut pending_late);
                    c.committed();
                    saved = Some((
                        core.finalized_through(),
                        core.resume_points(&[c.next]),
                        c.handled_mark(),
                    ));
                }
                if at == crash && !crashed {
                    crashed = true;
                    pending.clear();
                    pending_late.clear();
                    core = WindowCore::new(cfg(), 1);
                    let (from, handled) = match &saved {
                        Some((ft, resume, handled)) => {
                            core.restore(*ft, resume);
                            (resume[0].offset, *handled)
                        }
                        None => (0, 0),
                    };
                    let reread = late
                        .iter()
                        .filter(|l: &&LateRecord| l.offset >= from && l.offset < handled);
                    let documents = reread
                        .clone()
                        .filter_map(|l| Some((l.offset, late_inner(&l.reason)?)))
                        .collect();
                    c = Cursor::new(from, handled, reread.map(|l| l.offset).collect())
                        .with_late_documents(documents);
                    at = usize::try_from(from).unwrap();
                    continue;
                }
                at += 1;
            }
            committed.extend(pending);
            committed.extend(core.drain());
            committed
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            #[test]
            fn documents_equal_their_events_across_a_crash(
                docs in documents(),
                commit in 0usize..30,
                drain in prop_oneof![Just(usize::MAX), 0usize..30],
                crash in 0usize..30,
            ) {
                let key = |w: &FinalWindow| (w.size_ms, w.start_ms);
                let mut want = flat(&docs, drain);
                want.sort_by_key(key);
                let mut got = documents_with_crash(&docs, commit, drain, crash.max(commit));
                got.sort_by_key(key);
                prop_assert_eq!(got, want);
            }
        }
    }
}
