//! Apache Kafka as a [`Source`] (rdkafka, consumer group, auto-commit off).
//!
//! - Positions live in redb: on every assignment the rebalance callback assigns each
//!   partition at the resume offset the store holds for it (the group's committed offset
//!   only when the store has none); the pipeline then rebuilds its state for the new
//!   assignment. On revoke, uncommitted work is dropped (the next owner resumes from the
//!   store), so nothing is counted twice.
//! - After every store commit the same offsets are committed to the group (asynchronously)
//!   so that standard lag tooling works; kappa never reads them back while the store has
//!   positions.
//! - Lag comes from the high watermark that fetch responses carry (librdkafka statistics,
//!   `statistics.interval.ms`), "caught up" from partition EOF; no ListOffsets round trip.
//! - Records are taken in batches (`rd_kafka_consume_batch_queue`) from one queue that
//!   every assigned partition's fetch queue is forwarded to, set up in the rebalance
//!   callback before the partition is assigned; rebalances, statistics and errors stay on
//!   the consumer queue, served first on every poll. Per-record `poll` cost two clock reads
//!   and a queue hand-off per record: kappa reached 53 % of a bare consumer with it.
//! - kappa never silently reads another history than the one it indexed: the consumer
//!   never resets an offset by itself (`auto.offset.reset=error`; partitions with no
//!   position start at the beginning explicitly). A position out of range (the topic was
//!   deleted and recreated, or records were deleted by retention or `deleteRecords` before
//!   kappa read them) or offsets that go backwards make the source *diverged*: one error
//!   line, `kappa_kafka_history_diverged` 1, nothing more read, not ready; the pipeline
//!   reports state `diverged`. A bounded run stops with the error instead.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::{Assignment, Source, SourceError, Starts};
use crate::config::KafkaSection;
use crate::log::RecordBatch;
use crate::metrics::Metrics;

/// State the librdkafka callbacks share with the source.
#[derive(Default)]
struct Shared {
    /// A new assignment the pipeline has not taken yet.
    assignment: Mutex<Option<Vec<u32>>>,
    /// Offsets the rebalance callback assigned, per partition.
    assigned_at: Mutex<HashMap<u32, u64>>,
    /// Per assigned partition, the offset the store says kappa has read up to (its next
    /// offset): the log's end can never be below it.
    read_to: Mutex<HashMap<u32, u64>>,
    /// High watermark per partition from the latest statistics.
    high: Mutex<HashMap<u32, u64>>,
    /// Set by error callbacks when no broker can be reached; cleared by traffic.
    broker_down: AtomicBool,

    /// Without a store (a worker): each assigned partition's committed offset and metadata
    /// in the group, as read by the rebalance callback (offset None: nothing committed).
    group_state: Mutex<HashMap<u32, (Option<u64>, String)>>,
}

impl Shared {
    /// Traffic arrived: the brokers are reachable (logged once after a loss).
    fn regained(&self) {
        if self.broker_down.swap(false, Ordering::Relaxed) {
            tracing::info!("kafka brokers reachable again");
        }
    }
}

/// The consumer context: rebalances from the store, statistics, errors.
pub struct Ctx {
    shared: Arc<Shared>,
    /// Explicit: every partition, from the kept positions or the beginning (like a
    /// replay), never from the group's committed offsets.
    assignment: Assignment,
    metrics: Arc<Metrics>,
    /// Where assigned partitions start.
    starts: Arc<dyn Starts>,
    version: String,
    topic: String,
    /// Where assigned partitions' records go (None once the source is dropped).
    fetch: Mutex<Option<FetchQueue>>,
}

/// An application queue of librdkafka that partition fetch queues are forwarded to.
struct FetchQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka queues are thread-safe; the handle is only a reference count.
unsafe impl Send for FetchQueue {}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_new and is destroyed once, here.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

/// Message handles taken from the fetch queue by one batch call.
struct Taken(Vec<*mut rdsys::rd_kafka_message_t>);

// SAFETY: the handles are owned (destroyed before `poll` returns) and librdkafka messages
// may be destroyed from any thread; between polls the vector is empty.
unsafe impl Send for Taken {}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        // A broker connection is up again: reachable, even when no record or end-of-log
        // event follows (a broker back within the group session, nothing new to read).
        if s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP") {
            self.shared.regained();
        }
        if let Some(t) = s.topics.get(&self.topic) {
            let mut high = self.shared.high.lock().expect("high lock");
            for (&p, part) in &t.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    high.insert(p.unsigned_abs(), part.hi_offset.unsigned_abs());
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        if matches!(
            error.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                    | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
            )
        ) {
            // One line when the brokers go away; the retries that follow stay at debug.
            if !self.shared.broker_down.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "kafka brokers lost ({error}: {reason}); retrying with backoff, not ready meanwhile"
                );
                return;
            }
            tracing::debug!("kafka: {error}: {reason}");
            return;
        }
        tracing::warn!("kafka: {error}: {reason}");
    }
}

impl Ctx {
    /// Forwards the fetch queues of `partitions` to the batch fetch queue; librdkafka keeps
    /// an application forward across the fetch start of the assign that follows and clears
    /// it when the partition is revoked.
    fn forward(&self, consumer: &BaseConsumer<Self>, partitions: &[u32]) {
        let fetch = self.fetch.lock().expect("fetch queue lock");
        let Some(fetch) = fetch.as_ref() else { return };
        let Ok(topic) = CString::new(self.topic.as_str()) else {
            return;
        };
        for &p in partitions {
            // SAFETY: the client pointer is live for the call; the partition queue handle
            // is destroyed right after forwarding (the forward holds its own reference).
            unsafe {
                let q = rdsys::rd_kafka_queue_get_partition(
                    consumer.client().native_ptr(),
                    topic.as_ptr(),
                    i32::try_from(p).unwrap_or(i32::MAX),
                );
                if !q.is_null() {
                    rdsys::rd_kafka_queue_forward(q, fetch.0);
                    rdsys::rd_kafka_queue_destroy(q);
                }
            }
        }
    }

    /// Assigns `owned` at the kept resume offsets (the group's committed offsets where
    /// none is kept) and announces the new assignment to the pipeline.
    fn assign_from_store(&self, consumer: &BaseConsumer<Self>, owned: Vec<u32>) {
        self.metrics.kafka_rebalances.inc();
        if self.starts.in_group() {
            return self.assign_from_group(consumer, owned);
        }
        let stored = self.starts.kept(&self.version).unwrap_or_else(|e| {
            tracing::error!("reading the kept positions: {e}");
            HashMap::new()
        });
        // Partitions with no kept position start at the group's committed offset (live)
        // or at the beginning: explicitly, as the consumer never resets by itself.
        let committed = if self.assignment == Assignment::Explicit {
            HashMap::new()
        } else {
            match self.committed(consumer, owned.iter().filter(|p| !stored.contains_key(p))) {
                Some(c) => c,
                None => return, // the consumer is closing
            }
        };
        let mut tpl = TopicPartitionList::new();
        {
            let mut assigned = self.shared.assigned_at.lock().expect("assigned lock");
            assigned.clear();
            let mut read_to = self.shared.read_to.lock().expect("read_to lock");
            read_to.clear();
            for &p in &owned {
                let offset = match (stored.get(&p), committed.get(&p)) {
                    (Some(&(resume, next)), _) => {
                        assigned.insert(p, resume);
                        read_to.insert(p, next);
                        Offset::Offset(i64::try_from(resume).unwrap_or(i64::MAX))
                    }
                    (None, Some(&at)) => {
                        assigned.insert(p, at);
                        Offset::Offset(i64::try_from(at).unwrap_or(i64::MAX))
                    }
                    (None, None) => Offset::Beginning,
                };
                tpl.add_partition_offset(&self.topic, i32::try_from(p).unwrap_or(i32::MAX), offset)
                    .ok();
            }
        }
        self.assign_and_announce(consumer, &tpl, owned, "the store's positions");
    }
}

impl Ctx {
    /// The group's committed offsets of `partitions` (those with one), retried until the
    /// coordinator answers.
    fn committed<'a>(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: impl Iterator<Item = &'a u32>,
    ) -> Option<HashMap<u32, u64>> {
        let mut want = TopicPartitionList::new();
        for &p in partitions {
            want.add_partition(&self.topic, i32::try_from(p).unwrap_or(i32::MAX));
        }
        if want.count() == 0 {
            return Some(HashMap::new());
        }
        let got = committed_list(consumer, &want)?;
        Some(
            got.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => {
                        Some((e.partition().unsigned_abs(), o.unsigned_abs()))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// A worker's assignment: each partition at the group's committed offset, whose
    /// metadata the worker reads back (through `take_group_state`) to restore its state.
    fn assign_from_group(&self, consumer: &BaseConsumer<Self>, owned: Vec<u32>) {
        let mut want = TopicPartitionList::new();
        for &p in &owned {
            want.add_partition(&self.topic, i32::try_from(p).unwrap_or(i32::MAX));
        }
        let Some(committed) = committed_list(consumer, &want) else {
            return; // the consumer is closing
        };
        // Each partition's resume state rides in the metadata of its committed offset (one
        // commit request writes both); what lag tooling sees is that offset.
        let mut tpl = TopicPartitionList::new();
        let mut state = self.shared.group_state.lock().expect("group state lock");
        state.clear();
        for e in committed.elements() {
            let p = e.partition().unsigned_abs();
            let at = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o.unsigned_abs()),
                _ => None,
            };
            let entry = (at, e.metadata().to_string());
            let at = at.or_else(|| self.starts.seed(p));
            state.insert(p, entry);
            let offset = at.map_or(Offset::Beginning, |o| {
                Offset::Offset(i64::try_from(o).unwrap_or(i64::MAX))
            });
            tpl.add_partition_offset(&self.topic, e.partition(), offset)
                .ok();
        }
        drop(state);
        self.assign_and_announce(consumer, &tpl, owned, "the group's committed offsets");
    }

    /// Forwards `owned` to the batch queue, assigns `tpl` and announces the assignment.
    fn assign_and_announce(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
        mut owned: Vec<u32>,
        from: &str,
    ) {
        self.forward(consumer, &owned);
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!("assigning partitions: {e}");
        }
        owned.sort_unstable();
        tracing::info!(?owned, "partitions assigned; resuming from {from}");
        *self.shared.assignment.lock().expect("assignment lock") = Some(owned);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let owned: Vec<u32> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.partition().unsigned_abs())
                    .collect();
                self.assign_from_store(consumer, owned);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(
                    "partitions revoked; uncommitted work on them is dropped (the {} has the last commit)",
                    if self.starts.in_group() {
                        "group"
                    } else {
                        "store"
                    }
                );
                consumer.unassign().ok();
                *self.shared.assignment.lock().expect("assignment lock") = Some(Vec::new());
            }
            other => {
                tracing::error!("rebalance error: {other:?}");
                consumer.unassign().ok();
                *self.shared.assignment.lock().expect("assignment lock") = Some(Vec::new());
            }
        }
    }
}

/// Most records one poll takes from the fetch queue (see `consumer_config`).
const FETCH_TAKE_MAX: usize = 16_384;

/// Reads a Kafka topic in a consumer group.
pub struct KafkaSource {
    consumer: BaseConsumer<Ctx>,
    shared: Arc<Shared>,
    topic: String,
    partitions: u32,
    /// Owned partitions and where each one is.
    pos: Tracked,
    bootstrap: String,
    /// Reused buffer of message handles for batch fetches.
    taken: Taken,
    /// Set once the topic no longer holds the history kappa indexed: what happened.
    diverged: Option<String>,
    /// The topic's id (`DescribeTopics`), when the broker gave one.
    topic_id: Option<String>,
    /// How long a poll that finds nothing waits for records (ms).
    wait_ms: i32,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The fetch queue goes before the consumer closes (librdkafka wants application
        // queues destroyed before the client).
        self.consumer
            .context()
            .fetch
            .lock()
            .expect("fetch queue lock")
            .take();
    }
}

/// The partitions the source owns and where each one is.
struct Tracked {
    owned: Vec<u32>,
    /// Next offset expected per partition (to detect a log that went backwards).
    next: Vec<Option<u64>>,
    /// Partition reached its end and nothing arrived since.
    eof: Vec<bool>,
    /// Per partition, the offset kappa has read up to according to the store.
    read_to: Vec<Option<u64>>,
}

/// What became of one fetched record.
enum Accepted {
    Appended,
    /// Its partition is no longer owned (fetched before a revoke).
    Skipped,
    /// Its offset is before the next one expected: the log went backwards.
    WentBack {
        partition: u32,
        expected: u64,
    },
}

impl Tracked {
    /// Appends one fetched record to `batch` unless its partition is no longer owned or
    /// its offset goes backwards.
    fn accept(
        &mut self,
        batch: &mut RecordBatch,
        partition: i32,
        offset: i64,
        ts: i64,
        key: &[u8],
        payload: &[u8],
    ) -> Accepted {
        let p = partition.unsigned_abs();
        if !self.owned.contains(&p) {
            return Accepted::Skipped;
        }
        let offset = offset.unsigned_abs();
        if let Some(expected) = self.next[p as usize]
            && offset < expected
        {
            return Accepted::WentBack {
                partition: p,
                expected,
            };
        }
        self.next[p as usize] = Some(offset + 1);
        self.eof[p as usize] = false;
        batch.push(p, offset, ts.max(0), key, payload);
        Accepted::Appended
    }

    /// A partition reached its end.
    fn at_eof(&mut self, partition: i32) {
        if let Some(e) = self.eof.get_mut(partition.unsigned_abs() as usize) {
            *e = true;
        }
    }
}

/// The group's committed offsets of `want`, retried until the coordinator answers; None
/// once the consumer is closing (a rebalance served while it closes must not retry
/// forever: the process would never exit).
fn committed_list<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    want: &TopicPartitionList,
) -> Option<TopicPartitionList> {
    loop {
        match consumer.committed_offsets(want.clone(), Duration::from_secs(10)) {
            Ok(c) => return Some(c),
            Err(e) => {
                // SAFETY: the client is live for the call.
                if unsafe { rdsys::rd_kafka_consumer_closed(consumer.client().native_ptr()) } != 0 {
                    tracing::debug!("reading the group's committed offsets: {e}; closing");
                    return None;
                }
                tracing::warn!("reading the group's committed offsets: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// librdkafka properties of the consumer.
fn consumer_config(k: &KafkaSection) -> ClientConfig {
    let mut c = ClientConfig::new();
    let session = k.session_timeout.as_millis().max(1000);
    c.set("bootstrap.servers", &k.brokers)
        // Which process a group member is (the merger's `kappa_partition_owner_info`).
        .set("client.id", format!("kappa/{}", std::process::id()))
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Never jump to another offset silently: an out-of-range position is reported
        // (the source diverges) instead of read from the log start or end.
        .set("auto.offset.reset", "error")
        .set("session.timeout.ms", session.to_string())
        .set(
            "heartbeat.interval.ms",
            (session / 6).clamp(100, 3000).to_string(),
        )
        .set(
            "statistics.interval.ms",
            k.statistics_interval.as_millis().max(100).to_string(),
        )
        // librdkafka paces fetching by its local queue: with its defaults (a 1 s backoff once
        // the queue is full) a consumer that spends ~1 µs per record between polls got 30 %
        // of the bare read rate. A short backoff keeps it fetching while kappa works (0 made
        // the fetch thread spin on a full queue, taking a core from kappa on 2 cores), and
        // 16 MiB of prefetch with takes of 16 k records keep peak RSS under 100 MB
        // (scripts/bench-kafka; docs/PERFORMANCE.md has the trade-off against a deeper
        // queue). Override in [kafka.properties].
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "500000")
        .set("queued.max.messages.kbytes", "16384")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

impl KafkaSource {
    /// Connects (retrying with backoff until `deadline` passes or `cancel` is set), reads
    /// the topic's partition count and subscribes.
    ///
    /// # Errors
    /// Bad configuration, an unknown topic, or no broker before the deadline.
    pub fn connect(
        k: &KafkaSection,
        starts: Arc<dyn Starts>,
        version: &str,
        assignment: Assignment,
        metrics: Arc<Metrics>,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Self, SourceError> {
        let shared = Arc::new(Shared::default());
        let ctx = Ctx {
            shared: shared.clone(),
            assignment,
            metrics,
            starts,
            version: version.to_string(),
            topic: k.topic.clone(),
            fetch: Mutex::new(None),
        };
        let consumer: BaseConsumer<Ctx> = consumer_config(k)
            .create_with_context(ctx)
            .map_err(|e| SourceError::kafka("creating the consumer", e))?;
        // SAFETY: the client is live; the queue is destroyed (Drop) before the consumer.
        let q = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        if q.is_null() {
            return Err(SourceError::kafka_msg("creating the fetch queue"));
        }
        *consumer.context().fetch.lock().expect("fetch queue lock") = Some(FetchQueue(q));
        let mut backoff = Duration::from_millis(200);
        // What the last retry said: a reason is logged once, its repeats at debug.
        let mut said = String::new();
        let partitions = loop {
            let why = match consumer.fetch_metadata(Some(&k.topic), Duration::from_secs(2)) {
                Ok(md) => match md.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        break u32::try_from(t.partitions().len()).unwrap_or(u32::MAX);
                    }
                    _ => format!(
                        "topic {} not found on {} (create it with `kappa topics apply`)",
                        k.topic, k.brokers
                    ),
                },
                // librdkafka reports refused SASL credentials as a transport failure here.
                Err(e) => match k.properties.get("sasl.username") {
                    Some(user) => format!(
                        "kafka brokers {} unreachable or refusing the SASL credentials of user {user} ({e})",
                        k.brokers
                    ),
                    None => format!("kafka brokers {} unreachable ({e})", k.brokers),
                },
            };
            if why == said {
                tracing::debug!("{why}; retrying in {backoff:?}");
            } else {
                tracing::warn!("{why}; retrying with backoff");
                said = why;
            }
            if cancel() {
                return Err(SourceError::Cancelled);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        if assignment == Assignment::Explicit {
            // Every partition by explicit assignment, like a replay: it never joins (or
            // disturbs) the live consumer group.
            consumer
                .context()
                .assign_from_store(&consumer, (0..partitions).collect());
        } else {
            consumer
                .subscribe(&[&k.topic])
                .map_err(|e| SourceError::kafka(format!("subscribing to {}", k.topic), e))?;
        }
        let topic_id = topic_id(consumer.client(), &k.topic);
        let n = partitions as usize;
        Ok(Self {
            consumer,
            shared,
            topic: k.topic.clone(),
            partitions,
            pos: Tracked {
                owned: Vec::new(),
                next: vec![None; n],
                eof: vec![false; n],
                read_to: vec![None; n],
            },
            bootstrap: k.brokers.clone(),
            taken: Taken(Vec::new()),
            diverged: None,
            topic_id,
            wait_ms: 50,
        })
    }
}

impl KafkaSource {
    /// The topic no longer holds the history kappa indexed (`what`, on `partition`): one
    /// error line, the metric, every partition paused, nothing more delivered. A bounded
    /// run stops with the error instead (it would never reach the end).
    fn diverge(&mut self, partition: Option<u32>, what: &str) -> Result<(), SourceError> {
        if self.diverged.is_some() {
            return Ok(());
        }
        let which = partition.map_or_else(String::new, |p| format!("partition {p} of "));
        let msg = format!(
            "{which}topic {} no longer holds the history kappa indexed: {what}; kappa stopped reading rather than mix two histories (replay into a new version, or start on a new data directory)",
            self.topic
        );
        if self.consumer.context().assignment == Assignment::Explicit {
            return Err(SourceError::kafka_msg(msg));
        }
        tracing::error!("{msg}");
        self.consumer
            .context()
            .metrics
            .kafka_history_diverged
            .set(1);
        if let Ok(a) = self.consumer.assignment() {
            let _ = self.consumer.pause(&a);
        }
        self.diverged = Some(msg);
        Ok(())
    }

    /// The broker refused the position `offset` of `partition` (out of range): says which
    /// way from the partition's log start and end.
    fn out_of_range(&mut self, partition: i32, offset: i64) -> Result<(), SourceError> {
        let p = partition.unsigned_abs();
        let at = if offset >= 0 {
            offset.unsigned_abs()
        } else {
            self.pos
                .next
                .get(p as usize)
                .copied()
                .flatten()
                .unwrap_or(0)
        };
        let what = match self.consumer.fetch_watermarks(
            &self.topic,
            partition,
            Duration::from_secs(10),
        ) {
            Ok((_, high)) if at > high.unsigned_abs() => format!(
                "its position {at} is beyond the log end {high} (the topic was deleted and recreated, or truncated)"
            ),
            Ok((low, _)) if at < low.unsigned_abs() => format!(
                "records {at}..{low} were deleted (retention or deleteRecords) before kappa read them"
            ),
            Ok((low, high)) => {
                format!("the broker refused position {at} (the log holds {low}..{high})")
            }
            Err(e) => format!("the broker refused position {at} ({e})"),
        };
        self.diverge(Some(p), &what)
    }

    /// The log of `partition` ends at `end`: below what kappa read there (the topic was
    /// deleted and recreated, or truncated) the source diverges.
    fn check_end(&mut self, partition: i32, end: i64) -> Result<(), SourceError> {
        let p = partition.unsigned_abs();
        match self.pos.read_to.get(p as usize).copied().flatten() {
            Some(read) if end >= 0 && end.unsigned_abs() < read => self.diverge(
                Some(p),
                &format!(
                    "its log ends at {end}, below offset {read} kappa had read (the topic was deleted and recreated, or truncated)"
                ),
            ),
            _ => Ok(()),
        }
    }

    /// One fetched record: appended, skipped, or the log went backwards (diverged).
    fn take_record(
        &mut self,
        batch: &mut RecordBatch,
        partition: i32,
        offset: i64,
        ts: i64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<bool, SourceError> {
        if self.diverged.is_some() {
            return Ok(false);
        }
        match self.pos.accept(batch, partition, offset, ts, key, payload) {
            Accepted::Appended => Ok(true),
            Accepted::Skipped => Ok(false),
            Accepted::WentBack {
                partition,
                expected,
            } => self
                .diverge(
                    Some(partition),
                    &format!(
                        "its offsets went back from {expected} to {offset} (the topic was deleted and recreated, or truncated)"
                    ),
                )
                .map(|()| false),
        }
    }

    /// A worker's view of its latest assignment: per partition, the group's committed
    /// offset (None: nothing committed) and the metadata committed with it.
    #[must_use]
    pub fn take_group_state(&self) -> HashMap<u32, (Option<u64>, String)> {
        std::mem::take(&mut *self.shared.group_state.lock().expect("group state lock"))
    }

    /// Commits `(partition, offset, metadata)` to the group and waits for the answer (a
    /// worker's positions: only after what they cover has been published).
    ///
    /// # Errors
    /// The commit failed (for instance: the partitions were reassigned meanwhile).
    pub fn commit_with_metadata(&self, entries: &[(u32, u64, String)]) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o, meta) in entries {
            let mut e = tpl.add_partition(&self.topic, i32::try_from(*p).unwrap_or(i32::MAX));
            e.set_offset(Offset::Offset(i64::try_from(*o).unwrap_or(i64::MAX)))
                .map_err(|e| SourceError::kafka(format!("offset {o}"), e))?;
            e.set_metadata(meta);
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| SourceError::kafka("committing offsets to the group", e))
    }

    /// Takes up to `max` records from the fetch queue in one call, waiting up to `wait_ms`
    /// for the first when none is there.
    fn fetch(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        wait_ms: i32,
    ) -> Result<usize, SourceError> {
        let Some(q) = self
            .consumer
            .context()
            .fetch
            .lock()
            .expect("fetch queue lock")
            .as_ref()
            .map(|f| f.0)
        else {
            return Ok(0);
        };
        let mut taken = std::mem::take(&mut self.taken.0);
        taken.clear();
        taken.reserve(max);
        // SAFETY: `q` lives until `self` drops; librdkafka writes at most the given number
        // of handles into the vector's spare capacity and returns how many it wrote.
        unsafe {
            let mut got = rdsys::rd_kafka_consume_batch_queue(q, 0, taken.as_mut_ptr(), max);
            if got == 0 && wait_ms > 0 {
                got = rdsys::rd_kafka_consume_batch_queue(q, wait_ms, taken.as_mut_ptr(), 1);
            }
            let got = usize::try_from(got).unwrap_or(0).min(max);
            taken.set_len(got);
        }
        let mut n = 0;
        let mut result = Ok(());
        // A record or an EOF means a fetch answered: the brokers are reachable (checked
        // once per batch, not per record).
        let mut answered = false;
        for &m in &taken {
            if result.is_ok() {
                // SAFETY: `m` is a live message handle from the batch call; its payload and
                // key are valid for `len`/`key_len` bytes until it is destroyed below.
                let (msg, ts) = unsafe {
                    (
                        &*m,
                        rdsys::rd_kafka_message_timestamp(m, std::ptr::null_mut()),
                    )
                };
                let bytes = |ptr: *mut std::ffi::c_void, len: usize| -> &[u8] {
                    if ptr.is_null() {
                        &[]
                    } else {
                        // SAFETY: see above.
                        unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
                    }
                };
                match msg.err {
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {
                        answered = true;
                        match self.take_record(
                            batch,
                            msg.partition,
                            msg.offset,
                            ts,
                            bytes(msg.key, msg.key_len),
                            bytes(msg.payload, msg.len),
                        ) {
                            Ok(true) => n += 1,
                            Ok(false) => {}
                            Err(e) => result = Err(e),
                        }
                    }
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                        answered = true;
                        self.pos.at_eof(msg.partition);
                        if result.is_ok() {
                            result = self.check_end(msg.partition, msg.offset);
                        }
                    }
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET => {
                        answered = true;
                        result = self.out_of_range(msg.partition, msg.offset);
                    }
                    err => {
                        let text = String::from_utf8_lossy(bytes(msg.payload, msg.len));
                        tracing::warn!(
                            "kafka consumer: {err:?} on partition {}: {text}",
                            msg.partition
                        );
                    }
                }
            }
            // SAFETY: each handle is destroyed exactly once.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        taken.clear();
        self.taken.0 = taken;
        if answered {
            self.shared.regained();
        }
        result.map(|()| n)
    }
}

impl Source for KafkaSource {
    fn id(&self) -> String {
        format!("kafka:{}", self.topic)
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), SourceError> {
        let assigned = self
            .shared
            .assigned_at
            .lock()
            .expect("assigned lock")
            .get(&partition)
            .copied();
        if assigned != Some(offset) && self.pos.owned.contains(&partition) {
            self.consumer
                .seek(
                    &self.topic,
                    i32::try_from(partition).unwrap_or(i32::MAX),
                    Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX)),
                    Duration::from_secs(10),
                )
                .map_err(|e| {
                    SourceError::kafka(format!("seeking partition {partition} to {offset}"), e)
                })?;
        }
        self.pos.next[partition as usize] = Some(offset);
        Ok(())
    }

    fn poll(&mut self, batch: &mut RecordBatch, max_records: usize) -> Result<usize, SourceError> {
        // Smaller takes than the pipeline's batch: one take must leave the prefetch queue
        // (16 MiB, ~50 k records) refilling while kappa works, not empty it.
        let max_records = max_records.min(FETCH_TAKE_MAX);
        let mut n = 0;
        let mut answered = false;
        // The consumer queue first: rebalances, statistics and errors, and any record
        // fetched before its partition's queue was forwarded (kept in offset order: a
        // partition is forwarded before it is assigned, so it has none of those after).
        while n < max_records {
            let Some(res) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            match res {
                Ok(m) => {
                    // Copied out of the message (which borrows the consumer): records only
                    // land here before their partition is forwarded, a handful at most.
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let (key, payload) = (
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().unwrap_or_default().to_vec(),
                    );
                    let (p, o) = (m.partition(), m.offset());
                    drop(m);
                    answered = true;
                    if self.take_record(batch, p, o, ts, &key, &payload)? {
                        n += 1;
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    answered = true;
                    self.pos.at_eof(p);
                }
                Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
                )) => {
                    // Not forwarded yet, so the partition is not told here.
                    self.diverge(None, "a position is out of range")?;
                }
                // Already said once by the error callback (brokers lost).
                Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                    | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
                )) => {}
                Err(e) => tracing::warn!("kafka consumer: {e}"),
            }
        }
        if answered {
            self.shared.regained();
        }
        if self
            .shared
            .assignment
            .lock()
            .expect("assignment lock")
            .is_some()
        {
            return Ok(n); // the pipeline takes the new assignment before any more records
        }
        if n < max_records {
            n += self.fetch(
                batch,
                max_records - n,
                if n == 0 { self.wait_ms } else { 0 },
            )?;
        }
        Ok(n)
    }

    fn no_wait(&mut self) {
        self.wait_ms = 0;
    }

    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError> {
        let owned_high: Vec<(u32, u64)> = {
            let high = self.shared.high.lock().expect("high lock");
            self.pos
                .owned
                .iter()
                .filter_map(|p| Some((*p, *high.get(p)?)))
                .collect()
        };
        for (p, h) in owned_high {
            self.check_end(
                i32::try_from(p).unwrap_or(i32::MAX),
                i64::try_from(h).unwrap_or(i64::MAX),
            )?;
        }
        let high = self.shared.high.lock().expect("high lock");
        Ok((0..self.partitions)
            .map(|p| {
                high.get(&p)
                    .copied()
                    .or(self.pos.next[p as usize])
                    .unwrap_or(0)
            })
            .collect())
    }

    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        let a = self
            .shared
            .assignment
            .lock()
            .expect("assignment lock")
            .take()?;
        self.pos.owned.clone_from(&a);
        for &p in &a {
            self.pos.eof[p as usize] = false;
            self.pos.read_to[p as usize] = self
                .shared
                .read_to
                .lock()
                .expect("read_to lock")
                .get(&p)
                .copied();
            self.pos.next[p as usize] = self
                .shared
                .assigned_at
                .lock()
                .expect("assigned lock")
                .get(&p)
                .copied();
        }
        Some(a)
    }

    fn lag_known(&mut self) -> bool {
        let high = self.shared.high.lock().expect("high lock");
        !self.pos.owned.is_empty()
            && self
                .pos
                .owned
                .iter()
                .all(|p| self.pos.eof[*p as usize] || high.contains_key(p))
    }

    fn exhausted(&mut self) -> bool {
        !self.pos.owned.is_empty() && self.pos.owned.iter().all(|&p| self.pos.eof[p as usize])
    }

    fn commit_positions(&mut self, positions: &[(u32, u64)]) {
        if self.consumer.context().assignment == Assignment::Explicit {
            return; // not a group member: leave the live group's offsets alone
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in positions.iter().filter(|(p, _)| self.pos.owned.contains(p)) {
            tpl.add_partition_offset(
                &self.topic,
                i32::try_from(p).unwrap_or(i32::MAX),
                Offset::Offset(i64::try_from(o).unwrap_or(i64::MAX)),
            )
            .ok();
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!("committing offsets to the group: {e}");
        }
    }

    fn healthy(&self) -> bool {
        self.diverged.is_none() && !self.shared.broker_down.load(Ordering::Relaxed)
    }

    fn diverged(&self) -> Option<String> {
        self.diverged.clone()
    }

    fn incarnation(&self) -> Option<String> {
        self.topic_id.clone()
    }

    fn assigned_offset(&self, partition: u32) -> Option<u64> {
        self.shared
            .assigned_at
            .lock()
            .expect("assigned lock")
            .get(&partition)
            .copied()
    }

    fn history_changed(&mut self, what: &str) -> Result<(), SourceError> {
        self.diverge(None, what)
    }

    fn describe(&self) -> String {
        format!("topic {} on {}", self.topic, self.bootstrap)
    }
}

/// The latest value per key of topic `k.topic`, read from the beginning to the end as it
/// is now (a compacted topic: small).
///
/// # Errors
/// Brokers unreachable, an unknown topic, or a read that does not finish in 30 s.
pub fn read_latest(k: &KafkaSection) -> Result<HashMap<String, String>, SourceError> {
    let ends = high_watermarks(k)?;
    let mut out = HashMap::new();
    if ends.iter().all(|&e| e == 0) {
        return Ok(out);
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", "kappa-state-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| SourceError::kafka("creating a client", e))?;
    let mut tpl = TopicPartitionList::new();
    for (p, _) in ends.iter().enumerate().filter(|(_, e)| **e > 0) {
        tpl.add_partition_offset(
            &k.topic,
            i32::try_from(p).unwrap_or(i32::MAX),
            Offset::Beginning,
        )
        .ok();
    }
    consumer
        .assign(&tpl)
        .map_err(|e| SourceError::kafka(format!("assigning {}", k.topic), e))?;
    let mut next = vec![0u64; ends.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if std::time::Instant::now() > deadline {
            return Err(SourceError::kafka_msg(format!(
                "reading {} timed out",
                k.topic
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let p = m.partition().unsigned_abs() as usize;
                if let Some(n) = next.get_mut(p) {
                    *n = m.offset().unsigned_abs() + 1;
                }
                if let (Some(key), Some(v)) = (m.key(), m.payload()) {
                    out.insert(
                        String::from_utf8_lossy(key).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            Some(Err(e)) => return Err(SourceError::kafka(format!("reading {}", k.topic), e)),
            None => {}
        }
    }
    Ok(out)
}

/// The id of `topic` (base64, as Kafka's tools print it) from `DescribeTopics`, or `None`
/// when the broker does not answer within 10 s (the check it serves is then skipped).
fn topic_id<C: ClientContext>(client: &rdkafka::client::Client<C>, topic: &str) -> Option<String> {
    let name = CString::new(topic).ok()?;
    let mut names = [name.as_ptr()];
    // SAFETY: every handle created here is destroyed here; the result's strings are copied
    // before the event that owns them is destroyed.
    unsafe {
        let rk = client.native_ptr();
        let queue = rdsys::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return None;
        }
        let topics = rdsys::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        rdsys::rd_kafka_DescribeTopics(rk, topics, std::ptr::null(), queue);
        let ev = rdsys::rd_kafka_queue_poll(queue, 10_000);
        let mut out = None;
        if ev.is_null() {
            tracing::warn!(
                "the brokers did not describe topic {topic} within 10 s: its id is not checked this time"
            );
        } else {
            let res = rdsys::rd_kafka_event_DescribeTopics_result(ev);
            if rdsys::rd_kafka_event_error(ev) == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                && !res.is_null()
            {
                let mut n = 0usize;
                let descs = rdsys::rd_kafka_DescribeTopics_result_topics(res, &raw mut n);
                if n == 1 && !descs.is_null() {
                    let d = *descs;
                    let err = rdsys::rd_kafka_TopicDescription_error(d);
                    if err.is_null()
                        || rdsys::rd_kafka_error_code(err)
                            == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        let id = rdsys::rd_kafka_TopicDescription_topic_id(d);
                        if !id.is_null() {
                            let text = rdsys::rd_kafka_Uuid_base64str(id);
                            if !text.is_null() {
                                out = std::ffi::CStr::from_ptr(text)
                                    .to_str()
                                    .ok()
                                    .map(str::to_string);
                            }
                        }
                    }
                }
            }
            rdsys::rd_kafka_event_destroy(ev);
        }
        rdsys::rd_kafka_TopicCollection_destroy(topics);
        rdsys::rd_kafka_queue_destroy(queue);
        // Brokers without topic ids answer the zero id.
        out.filter(|id| id.bytes().any(|b| b != b'A'))
    }
}

/// The id of `k.topic` (see [`topic_id`]), from a plain client.
///
/// # Errors
/// Brokers unreachable within 10 s, or an unknown topic.
pub fn topic_id_of(k: &KafkaSection) -> Result<Option<String>, SourceError> {
    let (consumer, _) = topic_client(k)?;
    Ok(topic_id(consumer.client(), &k.topic))
}

/// Whether `k.topic` exists (with partitions): the brokers' answer.
///
/// # Errors
/// Brokers unreachable within 5 s.
pub fn topic_exists(k: &KafkaSection) -> Result<bool, SourceError> {
    Ok(topic_metadata(k, Duration::from_secs(5))?.1.is_some())
}

/// High watermark per partition of the topic (one metadata and one ListOffsets request
/// per partition), for replay plans.
///
/// # Errors
/// Brokers unreachable within 10 s, or an unknown topic.
pub fn high_watermarks(k: &KafkaSection) -> Result<Vec<u64>, SourceError> {
    let (consumer, parts) = topic_client(k)?;
    watermarks_of(&consumer, &k.topic, parts)
}

/// The high watermarks of `topic`'s `parts` partitions, asked through `consumer`.
fn watermarks_of(
    consumer: &BaseConsumer,
    topic: &str,
    parts: usize,
) -> Result<Vec<u64>, SourceError> {
    let timeout = Duration::from_secs(10);
    (0..parts)
        .map(|p| {
            let p = i32::try_from(p).unwrap_or(i32::MAX);
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| high.unsigned_abs())
                .map_err(|e| SourceError::kafka(format!("watermarks of partition {p}"), e))
        })
        .collect()
}

/// Per partition, the earliest offset whose record timestamp is at or after `ms`
/// (`offsetsForTimes`), or the high watermark when there is none.
///
/// # Errors
/// Brokers unreachable within 10 s, or an unknown topic.
pub fn offsets_for_time(k: &KafkaSection, ms: i64) -> Result<Vec<u64>, SourceError> {
    let (consumer, parts) = topic_client(k)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(
            &k.topic,
            i32::try_from(p).unwrap_or(i32::MAX),
            Offset::Offset(ms.max(0)),
        )
        .map_err(|e| SourceError::kafka(format!("partition {p}"), e))?;
    }
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_err(|e| SourceError::kafka(format!("offsetsForTimes on {}", k.topic), e))?;
    let ends = watermarks_of(&consumer, &k.topic, parts)?;
    (0..parts)
        .map(|p| {
            let e = found
                .find_partition(&k.topic, i32::try_from(p).unwrap_or(i32::MAX))
                .ok_or_else(|| {
                    SourceError::kafka_msg(format!("offsetsForTimes: no partition {p}"))
                })?;
            if let Err(err) = e.error() {
                return Err(SourceError::kafka_msg(format!(
                    "offsetsForTimes, partition {p}: {err}"
                )));
            }
            Ok(match e.offset() {
                Offset::Offset(o) => o.unsigned_abs().min(ends[p]),
                // No record at or after the time: the partition's end.
                _ => ends[p],
            })
        })
        .collect()
}

/// A plain client for `k.topic` (with the configured SASL/TLS settings) and the topic's
/// partition count.
fn topic_client(k: &KafkaSection) -> Result<(BaseConsumer, usize), SourceError> {
    match topic_metadata(k, Duration::from_secs(10))? {
        (consumer, Some(parts)) => Ok((consumer, parts)),
        (_, None) => Err(SourceError::kafka_msg(format!(
            "topic {} not found on {}",
            k.topic, k.brokers
        ))),
    }
}

/// A plain client (with the configured SASL/TLS settings) and `k.topic`'s partition count
/// as the brokers answer within `timeout` (`None`: no such topic).
fn topic_metadata(
    k: &KafkaSection,
    timeout: Duration,
) -> Result<(BaseConsumer, Option<usize>), SourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    // A secured cluster needs its SASL/TLS settings here as everywhere.
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| SourceError::kafka("creating a client", e))?;
    let md = consumer
        .fetch_metadata(Some(&k.topic), timeout)
        .map_err(|e| SourceError::kafka(format!("brokers {} unreachable", k.brokers), e))?;
    let parts = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Some(t.partitions().len()),
        _ => None,
    };
    Ok((consumer, parts))
}
