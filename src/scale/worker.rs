//! The worker (`kappa run --role worker`): one window core per source partition it owns in
//! the worker group; publishes each window's full sums per partition to `kappa.partials`
//! when that partition's watermark passes the window's end.
//!
//! Positions: a worker has no store. Its position on a partition is the offset it commits
//! to its consumer group, with a resume state as that commit's metadata (one request: the
//! broker keeps both or neither) — only after everything published before has been
//! acknowledged by Kafka. The state holds the partition's resume point (the first offset of
//! any still-open window) and what a restart needs to decide exactly as before: the max
//! event time before that offset, how far windows were published, and how far it had read.
//! Whoever owns the partition next — this process after a restart, or another worker after
//! a rebalance — resumes from there and re-publishes at most what was published since;
//! repeats are harmless. Every version has a group of its own (`kappa-workers` for the
//! live one, `kappa-workers.<version>@<incarnation>` for a replay), so one partition's
//! commit holds one version's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Msg, PartialHead, Published};
use super::{Result, ScaleError};
use crate::config::Config;
use crate::declared::{Declared, Values};
use crate::log::{Record, RecordBatch};
use crate::metrics::Metrics;
use crate::pipeline::declared::Follower;
use crate::pipeline::lane::ClickKind;
use crate::pipeline::{Counts, Cursor, Ingested, PartitionStatus, Shared, Tally};
use crate::review::agg::Reviews;
use crate::sink::{KafkaSink, Sink};
use crate::source::{KafkaSource, Source};
use crate::stream::Stream;
use crate::window::{Aggregator, PartitionResume, Shop, Windows};

/// A stream workers compute: how one of its records is read.
trait Computed: super::Scaled {
    /// One record of an owned partition through its part; its late record or dead letter
    /// is published (once: not when re-read by a later owner), its outcomes counted.
    ///
    /// # Errors
    /// Publishing failed.
    fn ingest(
        part: &mut Part<Self>,
        rec: &Record<'_>,
        reading: &Reading<'_>,
        out: &Out,
        sink: &mut KafkaSink,
        tally: &mut Tally,
    ) -> Result<()>;
}

impl Computed for Shop {
    /// Joined with the catalogue as of the record's position; a session document is
    /// exploded into its events; what the shop's core accepts, the declared aggregates'
    /// follower folds too.
    fn ingest(
        part: &mut Part<Self>,
        rec: &Record<'_>,
        reading: &Reading<'_>,
        out: &Out,
        sink: &mut KafkaSink,
        tally: &mut Tally,
    ) -> Result<()> {
        let max_future = reading.cfg.pipeline.max_future;
        let at = reading.joined.map(|j| j.at(rec.partition, rec.offset));
        let join = at.as_ref().map(|a| a as &dyn crate::event::Join);
        let Part {
            core,
            cursor,
            declared,
            ..
        } = part;
        let mut values = Values::new();
        let ev = match declared {
            Some(d) => crate::event::decode_capturing(
                rec.value,
                &reading.rules,
                join,
                &d.paths,
                &mut values,
            ),
            None => crate::event::decode_joined(rec.value, &reading.rules, join),
        };
        if ev.is_err() && crate::event::session::is_session(rec.value) {
            let doc = cursor.ingest_document(
                core,
                0,
                rec,
                &crate::pipeline::Judging {
                    rules: &reading.rules,
                    catalogue: join,
                    max_future,
                },
                &mut |ev, bytes, max_before| {
                    if let Some(d) = declared.as_mut() {
                        d.follow_inner(0, rec.offset, max_before, ev, bytes);
                    }
                },
            );
            tally.count_all(rec.partition as usize, &doc.counts);
            let late = doc.late.map(Ingested::Late);
            for outcome in late.into_iter().chain(doc.dead.map(Ingested::Invalid)) {
                out.kept(sink, outcome)?;
            }
            return Ok(());
        }
        let max_before = core.max_event_time(0);
        let outcome = cursor.ingest_then(core, 0, rec, ev, max_future, |ev| {
            if let Some(d) = declared {
                d.follow(0, rec.offset, max_before, ev, &values);
            }
        });
        tally.count(rec.partition as usize, &outcome);
        out.kept(sink, outcome)
    }
}

impl Computed for Reviews {
    fn ingest(
        part: &mut Part<Self>,
        rec: &Record<'_>,
        reading: &Reading<'_>,
        out: &Out,
        sink: &mut KafkaSink,
        tally: &mut Tally,
    ) -> Result<()> {
        let pipeline = &reading.cfg.pipeline;
        let review = crate::review::decode(rec.value, pipeline.max_record_bytes);
        let outcome = part
            .cursor
            .ingest(&mut part.core, 0, rec, review, pipeline.max_future);
        tally.count(rec.partition as usize, &outcome);
        out.kept(sink, outcome)
    }
}

impl Computed for Declared {
    /// A click (the aggregates declared on the clicks are a stream of their own across
    /// roles).
    fn ingest(
        part: &mut Part<Self>,
        rec: &Record<'_>,
        reading: &Reading<'_>,
        out: &Out,
        sink: &mut KafkaSink,
        tally: &mut Tally,
    ) -> Result<()> {
        let clicks = reading
            .clicks
            .as_ref()
            .expect("a clicks worker reads clicks");
        let outcome = clicks.ingest_at(&mut part.cursor, &mut part.core, 0, rec, reading.cfg);
        tally.count(rec.partition as usize, &outcome);
        out.kept(sink, outcome)
    }
}

/// Prefix of the commit metadata this version of kappa writes.
const META: &str = "kappa-worker/1";

/// One owned source partition.
struct Part<A: Aggregator> {
    core: Windows<A>,
    /// The aggregates declared on the events, following the shop's `core` (published under
    /// the version's [`super::declared_part`], through the same points); none for other
    /// streams or when none is declared.
    declared: Option<Follower>,
    /// Where reading is; offsets below its handled mark were read by a previous owner
    /// (re-read to rebuild state only).
    cursor: Cursor,
    /// Every window ending at or before this has been published for this partition
    /// (`i64::MAX`: drained, a bounded version's partition is done).
    published: i64,
    /// Reported idle to the merger.
    idle: bool,
    /// Outcomes of the partition's records from its start through the handled mark, across
    /// owners (published with each progress message: the merger's counters).
    counts: Counts,
}

/// What a worker resumes a partition with (after its offset in the state record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    max_ts_before: i64,
    published: i64,
    handled: u64,
    /// Outcome totals through `handled` (absent in states of older workers: zeros).
    counts: Counts,
}

fn encode_meta(version: &str, offset: u64, r: Resume) -> String {
    let c = &r.counts;
    let mut s = format!(
        "{META} {version} {offset} {} {} {} {} {} {} {} {} {}",
        r.max_ts_before,
        r.published,
        r.handled,
        c.read,
        c.rebuilt,
        c.accepted,
        c.duplicates,
        c.late,
        c.invalid.len()
    );
    for n in c.invalid {
        s.push_str(&format!(" {n}"));
    }
    s
}

/// The outcome totals at the end of a state record (none: zeros).
fn decode_counts<'a>(mut it: impl Iterator<Item = &'a str>) -> Option<Counts> {
    let Some(first) = it.next() else {
        return Some(Counts::default());
    };
    let num = |s: Option<&str>| s?.parse::<u64>().ok();
    let mut c = Counts {
        read: num(Some(first))?,
        rebuilt: num(it.next())?,
        accepted: num(it.next())?,
        duplicates: num(it.next())?,
        late: num(it.next())?,
        ..Counts::default()
    };
    let kinds = num(it.next())?;
    if kinds != c.invalid.len() as u64 {
        return None;
    }
    for v in &mut c.invalid {
        *v = num(it.next())?;
    }
    it.next().is_none().then_some(c)
}

/// The resume offset and state in `meta`, if it was written by a worker of `version`.
fn decode_meta(version: &str, meta: &str) -> Option<(u64, Resume)> {
    let mut it = meta.split(' ');
    if it.next()? != META || it.next()? != version {
        return None;
    }
    let offset = it.next()?.parse().ok()?;
    let r = Resume {
        max_ts_before: it.next()?.parse().ok()?,
        published: it.next()?.parse().ok()?,
        handled: it.next()?.parse().ok()?,
        counts: Counts::default(),
    };
    let counts = decode_counts(it)?;
    Some((offset, Resume { counts, ..r }))
}

impl<A: Computed> Part<A> {
    /// `seed`: where to start (offset, max event time before it) when the partition has no
    /// state and no committed offset (a replay's start).
    fn new(
        cfg: &Config,
        version: &str,
        committed: Option<&(Option<u64>, String)>,
        p: u32,
        seed: Option<(u64, i64)>,
    ) -> Self {
        let mut core = A::core(cfg, 1);
        let (offset, meta) = match committed {
            Some((Some(o), meta)) => (*o, meta.as_str()),
            _ => (seed.map_or(0, |s| s.0), ""),
        };
        let resume = decode_meta(version, meta).map(|(_, r)| r);
        if resume.is_none() && offset > 0 {
            tracing::warn!(
                partition = p,
                offset,
                "no resume state of this version in the committed offset's metadata ({meta:?}); starting at the group's offset with empty windows"
            );
        }
        let r = resume.unwrap_or(Resume {
            max_ts_before: seed.filter(|s| s.0 == offset).map_or(i64::MIN, |s| s.1),
            published: i64::MIN,
            handled: 0,
            counts: Counts::default(),
        });
        let resume = [PartitionResume {
            offset,
            max_ts_before: r.max_ts_before,
        }];
        core.restore(r.published, &resume);
        // Both cores resume from the earlier of their points (`commit_entry`), and the
        // follower's windows are published through the shop's points.
        let declared = (cfg.stream == Stream::Events)
            .then(|| Follower::open(cfg, 1))
            .flatten()
            .map(|mut f| {
                f.restore_at(r.published, &resume);
                f
            });
        // A worker has no store of late records: re-read records are decided again.
        Self {
            core,
            declared,
            cursor: Cursor::new(offset, r.handled, Default::default()),
            published: r.published,
            idle: false,
            counts: r.counts,
        }
    }

    /// The resume state of this partition: offset and state record.
    fn commit_entry(&self, version: &str) -> (u64, String) {
        let next = [self.cursor.next];
        let mut resume = self.core.resume_points(&next)[0];
        if let Some(d) = &self.declared {
            let r = d.resume_points(&next)[0];
            if r.offset < resume.offset {
                resume = r;
            }
        }
        let meta = encode_meta(
            version,
            resume.offset,
            Resume {
                max_ts_before: resume.max_ts_before,
                published: self.published,
                handled: self.cursor.handled_mark(),
                counts: self.counts,
            },
        );
        (resume.offset, meta)
    }
}

/// What one worker run did.
#[derive(Debug, Default)]
pub struct WorkerSummary {
    /// Records read.
    pub records: u64,
    /// Partials published.
    pub partials: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs the worker of `main_version` and, beside it, one for every other output version
/// the control topic says is active (a replay across roles), each on its own thread, in
/// its own consumer group (`worker-group-id.version`) and with its own configuration;
/// stops those the control topic stops. Until `cancel`.
///
/// # Errors
/// The main version's worker failed.
pub fn supervise(
    cfg: &Config,
    main_version: &str,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    cancel: &CancellationToken,
) -> Result<WorkerSummary> {
    let mut others: BTreeMap<String, VersionLoop> = BTreeMap::new();
    // A loop that failed is started again, but not more than every 5 s.
    let mut failed_at: BTreeMap<String, Instant> = BTreeMap::new();
    let main = {
        let (cfg, v, m, token) = (
            cfg.clone(),
            main_version.to_string(),
            metrics.clone(),
            cancel.clone(),
        );
        std::thread::Builder::new()
            .name(format!("worker-{v}"))
            .spawn(move || run::<Shop>(&cfg, &v, None, m, shared, &token))?
    };
    let mut streams = [Stream::Reviews, Stream::Clicks].map(StreamLoop::new);
    let mut warned = false;
    while !cancel.is_cancelled() && !main.is_finished() {
        for s in &mut streams {
            s.keep(cfg, main_version, &metrics, cancel)?;
        }
        // Loops that ended by themselves (an error): logged, retried later.
        let ended: Vec<String> = others
            .iter_mut()
            .filter_map(|(v, l)| l.ended().then(|| v.clone()))
            .collect();
        for v in ended {
            if let Some(l) = others.remove(&v) {
                l.stop(&v);
                failed_at.insert(v, Instant::now());
            }
        }
        match super::read_orders(&cfg.kafka) {
            Ok(orders) => {
                for (v, order) in orders {
                    if v == main_version {
                        continue;
                    }
                    // A loop for another creation of this name stops first.
                    if others
                        .get(&v)
                        .is_some_and(|l| !order.active || l.incarnation != order.incarnation)
                        && let Some(l) = others.remove(&v)
                    {
                        tracing::info!(version = v, "the merger stopped this output version");
                        l.stop(&v);
                    }
                    let backoff = failed_at
                        .get(&v)
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
                    if !order.active || others.contains_key(&v) || backoff {
                        continue;
                    }
                    if let Some(l) = VersionLoop::start(cfg, &v, order, &metrics, cancel)? {
                        others.insert(v, l);
                    }
                }
                warned = false;
            }
            Err(e) if !warned => {
                tracing::warn!("reading the control topic {}: {e}", cfg.kafka.control_topic);
                warned = true;
            }
            Err(_) => {}
        }
        for _ in 0..10 {
            if cancel.is_cancelled() || main.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    cancel.cancel();
    for (v, l) in others {
        l.stop(&v);
    }
    for s in streams {
        s.stop();
    }
    main.join().map_err(|_| ScaleError::Panicked)?
}

/// The loop of a version the merger ordered (a replay's): its incarnation, stop token and
/// thread, and its clicks' thread when it reads them.
struct VersionLoop {
    incarnation: i64,
    token: CancellationToken,
    handle: std::thread::JoinHandle<Result<WorkerSummary>>,
    clicks: Option<std::thread::JoinHandle<Result<WorkerSummary>>>,
}

impl VersionLoop {
    /// Starts computing version `v` as `order` says, in its own group (per incarnation);
    /// `None` when its configuration does not read (logged).
    fn start(
        cfg: &Config,
        v: &str,
        order: super::VersionOrder,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>> {
        let mut vcfg = match cfg.with_fingerprint(&order.config) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(version = v, "cannot compute this version: {e}");
                return Ok(None);
            }
        };
        vcfg.kafka.worker_group_id =
            format!("{}.{v}@{}", cfg.kafka.worker_group_id, order.incarnation);
        let token = cancel.child_token();
        let (t, name, m) = (token.clone(), v.to_string(), metrics.clone());
        tracing::info!(
            version = v,
            "the merger asks for this output version: computing it"
        );
        let incarnation = order.incarnation;
        let clicks = Self::start_clicks(&vcfg, v, &order, metrics, &token)?;
        let handle = std::thread::Builder::new()
            .name(format!("worker-{v}"))
            .spawn(move || {
                run::<Shop>(
                    &vcfg,
                    &name,
                    Some(&order),
                    m,
                    Arc::new(Shared::default()),
                    &t,
                )
            })?;
        Ok(Some(Self {
            incarnation,
            token,
            handle,
            clicks,
        }))
    }

    /// A new version reads the clicks its aggregates are declared on from their beginning,
    /// as a single process's replay does (its start is the events'): a thread of its own,
    /// in its own group (the version's + `.clicks`), into its clicks part. (An in-place
    /// correction's scratch version, bounded, recomputes the events only.) When it fails,
    /// the version's loop starts again ([`VersionLoop::ended`]).
    fn start_clicks(
        vcfg: &Config,
        v: &str,
        order: &super::VersionOrder,
        metrics: &Arc<Metrics>,
        token: &CancellationToken,
    ) -> Result<Option<std::thread::JoinHandle<Result<WorkerSummary>>>> {
        if !vcfg.reads_clicks() || !order.ends.is_empty() {
            return Ok(None);
        }
        let mut ccfg = vcfg.for_stream(Stream::Clicks);
        ccfg.kafka.worker_group_id = format!("{}.clicks", vcfg.kafka.worker_group_id);
        let version = Stream::Clicks.version(v);
        let corder = super::VersionOrder {
            version: version.clone(),
            starts: Vec::new(),
            ..order.clone()
        };
        let (t, m) = (token.clone(), metrics.clone());
        let handle = std::thread::Builder::new()
            .name(format!("worker-{version}"))
            .spawn(move || {
                if !crate::source::topic_exists(&ccfg.kafka)? {
                    tracing::warn!(
                        version,
                        "not reading clicks: topic {} not found",
                        ccfg.kafka.topic
                    );
                    return Ok(WorkerSummary::default());
                }
                let shared = Arc::new(Shared::default());
                let r = run::<Declared>(&ccfg, &version, Some(&corder), m, shared, &t);
                if let Err(e) = &r {
                    tracing::error!(version, "its clicks' worker stopped: {e}");
                }
                r
            })?;
        Ok(Some(handle))
    }

    /// Whether it ended by itself: its events' thread, or its clicks' thread with an error
    /// (then both start again, from their groups' commits). A clicks' thread that ended
    /// without one (no clicks topic) is forgotten.
    fn ended(&mut self) -> bool {
        if self.handle.is_finished() {
            return true;
        }
        match self.clicks.take_if(|c| c.is_finished()) {
            Some(c) => matches!(c.join(), Ok(Err(_)) | Err(_)),
            None => false,
        }
    }

    /// Stops it and waits for its thread; how it ended is logged.
    fn stop(self, v: &str) {
        self.token.cancel();
        if let Some(c) = self.clicks {
            let _ = c.join(); // its end is logged in it
        }
        match self.handle.join() {
            Ok(Err(e)) => tracing::error!(version = v, "its worker stopped: {e}"),
            Err(_) => tracing::error!(version = v, "its worker panicked"),
            Ok(Ok(_)) => {}
        }
    }
}

/// The worker of the main version's reviews or clicks, beside its events' one: its own
/// thread, its own consumer group (`worker-group-id.reviews`, `.clicks`) on the stream's
/// topic; its messages carry the version's part (`v1/reviews`, `v1/clicks`). Started
/// again 5 s after a failure; not started when the configuration does not read the
/// stream, nor (after a warning) when the topic does not exist, as a single process.
struct StreamLoop {
    stream: Stream,
    running: Option<VersionLoop>,
    failed_at: Option<Instant>,
    /// Ended by itself without an error (no topic): not started again.
    done: bool,
}

impl StreamLoop {
    fn new(stream: Stream) -> Self {
        Self {
            stream,
            running: None,
            failed_at: None,
            done: false,
        }
    }

    /// Starts it if it is not running and should.
    fn keep(
        &mut self,
        cfg: &Config,
        main_version: &str,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let stream = self.stream;
        if let Some(l) = self.running.take_if(|l| l.handle.is_finished()) {
            let failed = matches!(l.handle.join(), Ok(Err(_)) | Err(_));
            if failed {
                tracing::error!(
                    version = main_version,
                    "the {stream}' worker stopped; starting it again in 5 s"
                );
                self.failed_at = Some(Instant::now());
            } else {
                self.done = true;
            }
        }
        let backoff = self
            .failed_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        let reads = match stream {
            Stream::Reviews => cfg.reviews.read,
            Stream::Clicks => cfg.reads_clicks(),
            Stream::Events | Stream::Products => false,
        };
        if !reads || self.done || backoff || self.running.is_some() {
            return Ok(());
        }
        let mut scfg = cfg.for_stream(stream);
        scfg.kafka.worker_group_id = format!("{}.{stream}", cfg.kafka.worker_group_id);
        let version = stream.version(main_version);
        let token = cancel.child_token();
        let (t, m) = (token.clone(), metrics.clone());
        let handle = std::thread::Builder::new()
            .name(format!("worker-{version}"))
            .spawn(move || {
                if !crate::source::topic_exists(&scfg.kafka)? {
                    tracing::warn!(
                        "not reading {stream}: topic {} not found (create it with `kappa topics apply`, then restart)",
                        scfg.kafka.topic
                    );
                    return Ok(WorkerSummary::default());
                }
                let shared = Arc::new(Shared::default());
                let r = match stream {
                    Stream::Clicks => run::<Declared>(&scfg, &version, None, m, shared, &t),
                    _ => run::<Reviews>(&scfg, &version, None, m, shared, &t),
                };
                if let Err(e) = &r {
                    tracing::error!(version, "{e}");
                }
                r
            })?;
        self.running = Some(VersionLoop {
            incarnation: 0,
            token,
            handle,
            clicks: None,
        });
        Ok(())
    }

    fn stop(self) {
        if let Some(l) = self.running {
            l.stop(self.stream.as_str());
        }
    }
}

/// What every message of one version's worker carries, and the messages built from it.
struct Out {
    version: String,
    /// The version's [`super::declared_part`], when aggregates are declared on its events.
    declared: Option<String>,
    partitions: u32,
    fingerprint: String,
    /// The source's end offsets as last read (progress messages carry them: the merger's lag).
    ends: Vec<u64>,
}

impl Out {
    /// Reports `partition` idle or active again.
    fn idle(&self, sink: &mut KafkaSink, partition: u32, idle: bool) -> Result<()> {
        for version in std::iter::once(&self.version).chain(&self.declared) {
            let msg = Msg::Idle {
                version: version.clone(),
                partitions: self.partitions,
                partition,
                idle,
            };
            publish(sink, &msg)?;
        }
        Ok(())
    }

    /// Publishes the partials of windows the partition just finalised, then the progress
    /// range `(part.published, through]` announcing them, and the same for the events'
    /// declared aggregates (their windows of the range, `i64::MAX`: every one); returns
    /// how many partials.
    fn publish_windows<A: Computed>(
        &self,
        sink: &mut KafkaSink,
        partition: u32,
        part: &mut Part<A>,
        partials: Vec<(i64, i64, A::Partial)>,
        through: i64,
        checkpoint: Option<(u64, i64)>,
    ) -> Result<u64> {
        let range = Range {
            partition,
            from: part.published,
            through,
            position: part.cursor.next,
        };
        let mut n = self.publish_range(sink, &self.version, &range, partials, checkpoint)?;
        if let (Some(d), Some(name)) = (part.declared.as_mut(), &self.declared) {
            let partials = if through == i64::MAX {
                d.drain_partials()
            } else {
                d.advance_partials(through)
            };
            n += self.publish_range(sink, name, &range, partials, None)?;
        }
        part.published = through;
        Ok(n)
    }

    /// Publishes `partials` of `version` (or a part of it), then the progress message of
    /// `range` listing them.
    fn publish_range<P: Published>(
        &self,
        sink: &mut KafkaSink,
        version: &str,
        range: &Range,
        partials: Vec<(i64, i64, P)>,
        checkpoint: Option<(u64, i64)>,
    ) -> Result<u64> {
        let n = partials.len() as u64;
        let mut nonempty = Vec::with_capacity(partials.len());
        for (size_ms, start_ms, sums) in partials {
            nonempty.push((size_ms, start_ms));
            let head = PartialHead {
                version: version.to_string(),
                partitions: self.partitions,
                partition: range.partition,
                config: self.fingerprint.clone(),
                size_ms,
                start_ms,
                watermark: range.through,
            };
            publish(sink, &P::message(head, sums))?;
        }
        let msg = Msg::Progress {
            version: version.to_string(),
            partitions: self.partitions,
            partition: range.partition,
            config: self.fingerprint.clone(),
            from: range.from,
            through: range.through,
            nonempty,
            checkpoint,
            position: range.position,
        };
        publish(sink, &msg)?;
        Ok(n)
    }
}

/// A progress range of one source partition: windows ending in `(from, through]` are
/// complete on it; it was read up to `position`.
struct Range {
    partition: u32,
    from: i64,
    through: i64,
    position: u64,
}

impl Out {
    /// Publishes a record's late record or dead letter, if it has one.
    fn kept(&self, sink: &mut KafkaSink, outcome: Ingested) -> Result<()> {
        let version = self.version.clone();
        let msg = match outcome {
            Ingested::Late(record) => Msg::Late { version, record },
            Ingested::Invalid(letter) => Msg::Dead { version, letter },
            Ingested::Rebuilt | Ingested::Accepted | Ingested::Duplicate => return Ok(()),
        };
        publish(sink, &msg)
    }

    /// Publishes each owned partition's outcome totals (before every commit: the merger's
    /// counters follow the records read, not only the windows made final).
    fn totals<A: Computed>(
        &self,
        sink: &mut KafkaSink,
        parts: &BTreeMap<u32, Part<A>>,
    ) -> Result<()> {
        for (&partition, part) in parts {
            let msg = Msg::Totals {
                version: self.version.clone(),
                partitions: self.partitions,
                partition,
                position: part.cursor.next,
                end: self.ends.get(partition as usize).copied().unwrap_or(0),
                counts: part.counts,
            };
            publish(sink, &msg)?;
        }
        Ok(())
    }
}

/// Publishes one message to `kappa.partials`.
fn publish(sink: &mut KafkaSink, msg: &Msg) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    sink.append(msg.key().as_bytes(), &msg.encode(), now)?;
    Ok(())
}

/// A worker's source and where its version starts and ends.
struct Input {
    source: KafkaSource,
    /// Where partitions without state start (a replay's order): (offset, max ts before).
    seeds: std::collections::HashMap<u32, (u64, i64)>,
    /// A bounded version's end offsets (empty: live).
    ends: Vec<u64>,
    /// The version's creation: its resume states and consumer group belong to it.
    instance: String,
    /// The catalogue the events are joined with, as a single process reads it (a bounded
    /// version's keeps what it read at start).
    catalogue: Option<crate::pipeline::catalogue::CatalogueLane>,
}

impl Input {
    /// Joins the worker group of `version` (as `order` says, if it is a replay's).
    fn connect(
        stream: Stream,
        cfg: &Config,
        version: &str,
        order: Option<&super::VersionOrder>,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Result<Self> {
        let seeds: std::collections::HashMap<u32, (u64, i64)> = order
            .map(|o| {
                o.starts
                    .iter()
                    .map(|&(p, off, ts)| (p, (off, ts)))
                    .collect()
            })
            .unwrap_or_default();
        let ends: Vec<u64> = order.map(|o| o.ends.clone()).unwrap_or_default();
        // Resume states and the consumer group belong to one creation of the version.
        let instance = order.map_or_else(
            || version.to_string(),
            |o| format!("{version}@{}", o.incarnation),
        );
        let mut k = cfg.kafka.clone();
        k.group_id.clone_from(&cfg.kafka.worker_group_id);
        let source = KafkaSource::connect(
            &k,
            Arc::new(GroupStarts(
                seeds.iter().map(|(&p, &(o, _))| (p, o)).collect(),
            )),
            &instance,
            crate::source::Assignment::Group,
            metrics.clone(),
            &|| cancel.is_cancelled(),
        )?;
        let catalogue = match stream {
            Stream::Events => crate::pipeline::catalogue::CatalogueLane::open(
                cfg,
                version,
                None,
                metrics.clone(),
            )?,
            _ => None,
        };
        Ok(Self {
            source,
            seeds,
            ends,
            instance,
            catalogue,
        })
    }
}

/// A worker's starts: kept in its consumer group (committed offsets, its resume state in
/// their metadata); a partition with nothing committed starts at the replay's seed offset,
/// else at the beginning.
struct GroupStarts(std::collections::HashMap<u32, u64>);

impl crate::source::Starts for GroupStarts {
    fn kept(&self, _version: &str) -> Result<std::collections::HashMap<u32, (u64, u64)>, String> {
        Ok(std::collections::HashMap::new())
    }
    fn seed(&self, partition: u32) -> Option<u64> {
        self.0.get(&partition).copied()
    }
    fn in_group(&self) -> bool {
        true
    }
}

/// Runs a worker for `version` until `cancel`.
///
/// # Errors
/// Kafka failures (an undelivered partial ends the worker: its positions were not
/// committed, so its successor re-publishes).
fn run<A: Computed>(
    cfg: &Config,
    version: &str,
    order: Option<&super::VersionOrder>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    cancel: &CancellationToken,
) -> Result<WorkerSummary> {
    let started = Instant::now();
    let Input {
        mut source,
        seeds,
        ends,
        instance,
        mut catalogue,
    } = Input::connect(cfg.stream, cfg, version, order, &metrics, cancel)?;
    let partitions = source.partitions();
    let declares =
        cfg.stream == Stream::Events && !cfg.declared_plan(Stream::Events).aggregates.is_empty();
    let mut out = Out {
        version: version.to_string(),
        declared: declares.then(|| super::declared_part(version)),
        partitions,
        fingerprint: cfg.results_fingerprint(),
        ends: Vec::new(),
    };
    // The main version's events' worker is what this process's /metrics and /api/status
    // report; another stream's outcomes go to its own counters.
    let main = order.is_none() && cfg.stream == Stream::Events;
    if main {
        metrics.init_partitions("kafka", partitions);
        metrics.pipeline_up.set(1);
    }
    let mut sink = KafkaSink::for_topic(&cfg.kafka, &cfg.kafka.partials_topic, metrics.clone())?;
    let clicks = (cfg.stream == Stream::Clicks)
        .then(|| ClickKind::of(cfg))
        .flatten();
    let mut parts: BTreeMap<u32, Part<A>> = BTreeMap::new();
    let mut batch = RecordBatch::new();
    let mut summary = WorkerSummary::default();
    let mut tally = Tally::new(partitions as usize);
    let mut last_commit = Instant::now();
    let mut last_refresh = Instant::now() - Duration::from_secs(10);
    let mut uncommitted = false;
    tracing::info!(
        version,
        group = cfg.kafka.worker_group_id,
        topic = cfg.kafka.topic,
        "worker started"
    );
    let result = (|| -> Result<()> {
        loop {
            if let Some(owned) = source.take_assignment() {
                parts = assign(&owned, &mut source, cfg, &instance, &seeds, &out, &mut sink)?;
                open_epoch(catalogue.as_mut(), &parts, partitions);
                shared.status.lock().expect("status lock").state = crate::pipeline::State::Running;
            }
            if cancel.is_cancelled() {
                break;
            }
            batch.clear();
            let n = source.poll(&mut batch, cfg.pipeline.batch_records)?;
            let joined = read_catalogue(&mut catalogue, ends.is_empty() && !parts.is_empty())?;
            let reading = Reading {
                cfg,
                ends: &ends,
                joined,
                rules: cfg.pipeline.decode_rules(),
                clicks: clicks.as_ref(),
            };
            let touched = ingest_batch(&batch, &mut parts, &reading, &out, &mut sink, &mut tally)?;
            summary.records += n as u64;
            uncommitted |= n > 0;
            flush_tally(cfg.stream, &mut tally, &metrics, &shared, &mut parts);
            let report = main.then_some((&*shared, &*metrics));
            refresh_ends(&mut source, &mut out, &parts, report, &mut last_refresh)?;
            wake(&mut parts, &touched, &out, &mut sink)?;
            // Idleness, as in a single process (live versions only).
            let timeout = cfg.pipeline.idle_timeout;
            if n == 0 && !timeout.is_zero() && ends.is_empty() && source.lag_known() {
                let log_ends = source.end_offsets()?;
                detect_idle(&mut parts, &log_ends, timeout, &out, &mut sink)?;
            }
            let (n, drained) = publish_final(&mut parts, &touched, &ends, &out, &mut sink)?;
            summary.partials += n;
            uncommitted |= drained;
            if uncommitted && last_commit.elapsed() >= cfg.pipeline.commit_interval {
                open_epoch(catalogue.as_mut(), &parts, partitions);
                commit(&mut sink, &source, &parts, &instance, &out)?;
                uncommitted = false;
                last_commit = Instant::now();
            }
            shared.set_ready(source.healthy() && !parts.is_empty());
            sink.flush()?;
        }
        if uncommitted {
            commit(&mut sink, &source, &parts, &instance, &out)?;
        }
        Ok(())
    })();
    if main {
        metrics.pipeline_up.set(0);
        shared.set_ready(false);
    }
    result?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The tally of a batch into the metrics, the status and each part's counts (records
/// re-read to rebuild a part are not counted again in it).
fn flush_tally<A: Computed>(
    stream: Stream,
    tally: &mut Tally,
    metrics: &Metrics,
    shared: &Shared,
    parts: &mut BTreeMap<u32, Part<A>>,
) {
    let mut part_counts = |p: u32, c: &Counts| {
        if let Some(part) = parts.get_mut(&p) {
            part.counts.merge(&Counts {
                read: c.read - c.rebuilt,
                rebuilt: 0,
                ..*c
            });
        }
    };
    if stream == Stream::Events {
        let mut st = shared.status.lock().expect("status lock");
        tally.flush("kafka", metrics, &mut st, part_counts);
    } else {
        tally.take(|p, c| {
            part_counts(p, c);
            c.apply_stream(stream, metrics);
        });
    }
}

/// Parts that were idle and got records are active again: the merger is told.
fn wake<A: Computed>(
    parts: &mut BTreeMap<u32, Part<A>>,
    touched: &[u32],
    out: &Out,
    sink: &mut KafkaSink,
) -> Result<()> {
    for &p in touched {
        let part = parts.get_mut(&p).expect("touched partitions are owned");
        if part.idle {
            part.idle = false;
            out.idle(sink, p, false)?;
        }
    }
    Ok(())
}

/// The parts of a new assignment, from their resume states. Revoked partitions'
/// uncommitted work is dropped: their next owner resumes from the last commit, which only
/// covers what was acknowledged.
fn assign<A: Computed>(
    owned: &[u32],
    source: &mut KafkaSource,
    cfg: &Config,
    instance: &str,
    seeds: &std::collections::HashMap<u32, (u64, i64)>,
    out: &Out,
    sink: &mut KafkaSink,
) -> Result<BTreeMap<u32, Part<A>>> {
    let committed = source.take_group_state();
    let parts = owned
        .iter()
        .map(|&p| {
            let part = Part::new(cfg, instance, committed.get(&p), p, seeds.get(&p).copied());
            (p, part)
        })
        .collect();
    // A new owner starts active: an idle mark its predecessor left must not make the merger
    // close windows without the records this owner is about to read.
    for &p in owned {
        out.idle(sink, p, false)?;
    }
    Ok(parts)
}

/// A partition caught up with its log end and silent for `timeout` no longer holds the
/// merger's windows back: reported idle.
fn detect_idle<A: Computed>(
    parts: &mut BTreeMap<u32, Part<A>>,
    log_ends: &[u64],
    timeout: Duration,
    out: &Out,
    sink: &mut KafkaSink,
) -> Result<()> {
    for (&p, part) in parts {
        let end = log_ends.get(p as usize).copied().unwrap_or(u64::MAX);
        // Only with no open window: its events are all in published partials, so nothing
        // of it is lost when the merger closes windows without it.
        let open =
            part.core.open_state().0 + part.declared.as_ref().map_or(0, |d| d.open_state().0);
        if !part.idle && open == 0 && part.cursor.idle(end, timeout) {
            tracing::info!(
                version = out.version,
                partition = p,
                "partition idle for {}: no longer holding the merger's windows back",
                crate::config::fmt_duration(timeout)
            );
            part.idle = true;
            out.idle(sink, p, true)?;
        }
    }
    Ok(())
}

/// Live, what was appended to the catalogue (visible from the next commit on); the
/// catalogue the batch is joined with.
fn read_catalogue(
    catalogue: &mut Option<crate::pipeline::catalogue::CatalogueLane>,
    live: bool,
) -> Result<Option<&crate::pipeline::catalogue::Joined>> {
    if let Some(c) = catalogue.as_mut().filter(|_| live) {
        c.step()?;
    }
    Ok(catalogue
        .as_ref()
        .map(crate::pipeline::catalogue::CatalogueLane::joined))
}

/// The catalogue entries read so far become visible to the events of each owned
/// partition not handled yet (at an assignment and at each commit, as a single process).
fn open_epoch<A: Computed>(
    c: Option<&mut crate::pipeline::catalogue::CatalogueLane>,
    parts: &BTreeMap<u32, Part<A>>,
    partitions: u32,
) {
    if let Some(c) = c {
        let marks: Vec<u64> = (0..partitions)
            .map(|p| parts.get(&p).map_or(0, |x| x.cursor.handled_mark()))
            .collect();
        c.open_epoch(&marks);
    }
}

/// How a batch is read: the configuration, a bounded version's ends, the catalogue.
struct Reading<'a> {
    cfg: &'a Config,
    ends: &'a [u64],
    joined: Option<&'a crate::pipeline::catalogue::Joined>,
    rules: crate::event::Rules,
    /// How a click is read (a clicks worker's).
    clicks: Option<&'a ClickKind>,
}

/// Every record of `batch` through its partition's cursor: late records and dead letters
/// are published (once: not when re-read by a later owner), outcomes counted in `tally`.
/// Returns the partitions that had records.
fn ingest_batch<A: Computed>(
    batch: &RecordBatch,
    parts: &mut BTreeMap<u32, Part<A>>,
    reading: &Reading<'_>,
    out: &Out,
    sink: &mut KafkaSink,
    tally: &mut Tally,
) -> Result<Vec<u32>> {
    let ends = reading.ends;
    let mut touched = Vec::new();
    let now = Instant::now();
    for rec in batch.iter() {
        let Some(part) = parts.get_mut(&rec.partition) else {
            continue;
        };
        if ends
            .get(rec.partition as usize)
            .is_some_and(|&e| rec.offset >= e)
        {
            continue; // past a bounded version's end
        }
        if touched.last() != Some(&rec.partition) && !touched.contains(&rec.partition) {
            touched.push(rec.partition);
            part.cursor.last_record_at = now;
        }
        A::ingest(part, &rec, reading, out, sink, tally)?;
    }
    Ok(touched)
}

/// Publishes the windows the `touched` partitions finalised, and, for a bounded version,
/// drains the partitions read to their end; returns how many partials, and whether a
/// partition was drained.
fn publish_final<A: Computed>(
    parts: &mut BTreeMap<u32, Part<A>>,
    touched: &[u32],
    ends: &[u64],
    out: &Out,
    sink: &mut KafkaSink,
) -> Result<(u64, bool)> {
    let (mut n, mut drained) = (0, false);
    for &p in touched {
        let part = parts.get_mut(&p).expect("touched partitions are owned");
        let partials = part.core.advance_partials();
        let through = part.core.finalized_through();
        if through <= part.published {
            continue;
        }
        let checkpoint = part
            .cursor
            .checkpoint_due()
            .map(|at| (at, part.core.max_event_time(0)));
        n += out.publish_windows(sink, p, part, partials, through, checkpoint)?;
    }
    // A bounded version (an in-place correction's scratch): a partition read to its end has
    // every window made final, as a single process's drain does.
    for (&p, part) in parts.iter_mut() {
        let Some(&end) = ends.get(p as usize) else {
            continue;
        };
        if part.cursor.next < end || part.published == i64::MAX {
            continue;
        }
        let partials = part.core.drain_partials();
        n += out.publish_windows(sink, p, part, partials, i64::MAX, None)?;
        drained = true;
    }
    Ok((n, drained))
}

/// Once a second, the log's end offsets, and for the main version's worker (`report`) its
/// status and lag gauges; a worker that owns nothing (more workers than partitions) exports
/// no lag.
fn refresh_ends<A: Computed>(
    source: &mut KafkaSource,
    out: &mut Out,
    parts: &BTreeMap<u32, Part<A>>,
    report: Option<(&Shared, &Metrics)>,
    last: &mut Instant,
) -> Result<()> {
    if last.elapsed() < Duration::from_secs(1) {
        return Ok(());
    }
    if source.lag_known() {
        out.ends = source.end_offsets()?;
        if let Some((shared, metrics)) = report {
            publish_status(shared, metrics, parts, &out.ends);
        }
        *last = Instant::now();
    } else if let (Some((_, metrics)), true) = (report, parts.is_empty()) {
        metrics.consumer_lag.reset();
        *last = Instant::now();
    }
    Ok(())
}

/// The worker's `/api/status` partitions and its lag gauges (only of the partitions it
/// owns: a partition that moved to another worker is that worker's lag, not also this
/// one's — autoscalers sum them).
fn publish_status<A: Computed>(
    shared: &Shared,
    metrics: &Metrics,
    parts: &BTreeMap<u32, Part<A>>,
    ends: &[u64],
) {
    for p in (0..u32::try_from(ends.len()).unwrap_or(u32::MAX)).filter(|p| !parts.contains_key(p)) {
        let _ = metrics.consumer_lag.remove_label_values(&[&p.to_string()]);
    }
    let partitions: Vec<PartitionStatus> = parts
        .iter()
        .map(|(&p, part)| {
            let end = ends.get(p as usize).copied().unwrap_or(0);
            let lag = end.saturating_sub(part.cursor.next);
            metrics
                .consumer_lag
                .with_label_values(&[&p.to_string()])
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
            let wm = part.core.partition_watermark(0);
            PartitionStatus {
                partition: p,
                position: part.cursor.next,
                end_offset: end,
                lag,
                watermark_ms: (wm != i64::MIN).then_some(wm),
                idle: part.idle,
                owned: true,
            }
        })
        .collect();
    let mut st = shared.status.lock().expect("status lock");
    st.open_windows = parts.values().map(|p| p.core.open_state().0).sum();
    st.partitions = partitions;
}

/// Publishes the totals, waits until Kafka acknowledged everything published, then commits
/// each owned partition's resume offset to the group with its resume state as the
/// metadata (one request: the broker keeps both or neither).
fn commit<A: Computed>(
    sink: &mut KafkaSink,
    source: &KafkaSource,
    parts: &BTreeMap<u32, Part<A>>,
    version: &str,
    out: &Out,
) -> Result<()> {
    out.totals(sink, parts)?;
    sink.finish()?;
    let entries: Vec<(u32, u64, String)> = parts
        .iter()
        .map(|(&p, part)| {
            let (o, m) = part.commit_entry(version);
            (p, o, m)
        })
        .collect();
    if let Err(e) = source.commit_with_metadata(&entries) {
        // Typically a rebalance in progress: the next owner resumes from the previous
        // commit and re-publishes; nothing is lost.
        tracing::warn!("{e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_metadata_round_trips_and_belongs_to_one_version() {
        let r = Resume {
            max_ts_before: -5,
            published: 1_700_000_060_000,
            handled: 42,
            counts: Counts {
                read: 50,
                rebuilt: 8,
                accepted: 39,
                duplicates: 1,
                late: 1,
                invalid: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
        };
        let m = encode_meta("v1", 9, r);
        assert_eq!(decode_meta("v1", &m), Some((9, r)));
        assert_eq!(decode_meta("v2", &m), None);
        assert_eq!(decode_meta("v1", ""), None);
        assert_eq!(decode_meta("v1", &format!("{m} 7")), None);
        let fresh = encode_meta(
            "v1",
            0,
            Resume {
                max_ts_before: i64::MIN,
                published: i64::MIN,
                handled: 0,
                counts: Counts::default(),
            },
        );
        assert!(decode_meta("v1", &fresh).is_some());
        // A state written before the totals were kept resumes with zeros.
        let old = format!("{META} v1 9 -5 1700000060000 42");
        assert_eq!(
            decode_meta("v1", &old),
            Some((
                9,
                Resume {
                    counts: Counts::default(),
                    ..r
                }
            ))
        );
    }
}
