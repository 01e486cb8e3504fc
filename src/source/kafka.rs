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
//! - A partition whose offsets go backwards (topic recreated or truncated) stops the
//!   pipeline with a clear error rather than silently mixing two logs.

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

use super::{Source, SourceError};
use crate::config::KafkaSection;
use crate::log::RecordBatch;
use crate::metrics::Metrics;
use crate::store::Store;

/// State the librdkafka callbacks share with the source.
#[derive(Default)]
struct Shared {
    /// A new assignment the pipeline has not taken yet.
    assignment: Mutex<Option<Vec<u32>>>,
    /// Offsets the rebalance callback assigned, per partition.
    assigned_at: Mutex<HashMap<u32, u64>>,
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
    /// Bounded runs read from the beginning where the store has no position (like a
    /// replay) instead of from the group's committed offsets.
    bounded: bool,
    metrics: Arc<Metrics>,
    /// Where positions live; None for a worker, whose positions are the group's committed
    /// offsets (with its resume state in their metadata).
    store: Option<Store>,
    /// A worker's state topic (`kafka.worker-state-topic`): read on every assignment; and
    /// where partitions start that have neither a state nor a committed offset (a replay).
    state_topic: Option<(KafkaSection, HashMap<u32, u64>)>,
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

    /// Assigns `owned` at the resume offsets the store holds (the group's committed
    /// offsets where it holds none) and announces the new assignment to the pipeline.
    fn assign_from_store(&self, consumer: &BaseConsumer<Self>, owned: Vec<u32>) {
        self.metrics.kafka_rebalances.inc();
        let Some(store) = &self.store else {
            return self.assign_from_group(consumer, owned);
        };
        let stored: HashMap<u32, (u64, u64)> = match store.load_state(&self.version) {
            Ok(Some((_, positions))) => positions
                .iter()
                .map(|p| (p.partition, (p.resume_offset, p.next_offset)))
                .collect(),
            Ok(None) => HashMap::new(),
            Err(e) => {
                tracing::error!("reading positions from the store: {e}");
                HashMap::new()
            }
        };
        let mut tpl = TopicPartitionList::new();
        {
            let mut assigned = self.shared.assigned_at.lock().expect("assigned lock");
            assigned.clear();
            for &p in &owned {
                let offset = match stored.get(&p) {
                    Some(&(resume, _)) => {
                        assigned.insert(p, resume);
                        Offset::Offset(i64::try_from(resume).unwrap_or(i64::MAX))
                    }
                    None if self.bounded => Offset::Beginning,
                    None => Offset::Stored,
                };
                tpl.add_partition_offset(&self.topic, i32::try_from(p).unwrap_or(i32::MAX), offset)
                    .ok();
            }
        }
        self.assign_and_announce(consumer, &tpl, owned, "the store's positions");
    }
}

impl Ctx {
    /// A worker's assignment: each partition at the group's committed offset, whose
    /// metadata the worker reads back (through `take_group_state`) to restore its state.
    fn assign_from_group(&self, consumer: &BaseConsumer<Self>, owned: Vec<u32>) {
        let mut want = TopicPartitionList::new();
        for &p in &owned {
            want.add_partition(&self.topic, i32::try_from(p).unwrap_or(i32::MAX));
        }
        let committed = loop {
            match consumer.committed_offsets(want.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!("reading the group's committed offsets: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
        // The state topic holds each partition's latest resume state (offset included); the
        // group's committed offset is the fallback (and what lag tooling sees).
        let saved = match &self.state_topic {
            Some((k, _)) => loop {
                match read_latest(k) {
                    Ok(m) => break m,
                    Err(e) => tracing::warn!("reading {}: {e}; retrying", k.topic),
                }
                std::thread::sleep(Duration::from_millis(500));
            },
            None => HashMap::new(),
        };
        let mut tpl = TopicPartitionList::new();
        let mut state = self.shared.group_state.lock().expect("group state lock");
        state.clear();
        for e in committed.elements() {
            let p = e.partition().unsigned_abs();
            let at = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o.unsigned_abs()),
                _ => None,
            };
            let entry = match saved.get(&format!("{}/{p}", self.version)) {
                Some(meta) => match crate::scale::worker::state_offset(&self.version, meta) {
                    Some(o) => (Some(o), meta.clone()),
                    None => (at, String::new()),
                },
                None => (at, e.metadata().to_string()),
            };
            let seed = self
                .state_topic
                .as_ref()
                .and_then(|(_, s)| s.get(&p).copied());
            let at = entry.0.or(seed);
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
                    "partitions revoked; uncommitted work on them is dropped (the store has the last commit)"
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
    topic: String,
    owned: Vec<u32>,
    /// Next offset expected per partition (to detect a log that went backwards).
    next: Vec<Option<u64>>,
    /// Partition reached its end and nothing arrived since.
    eof: Vec<bool>,
}

impl Tracked {
    /// Appends one fetched record to `batch` unless its partition is no longer owned;
    /// `Ok(true)` when appended.
    fn accept(
        &mut self,
        batch: &mut RecordBatch,
        partition: i32,
        offset: i64,
        ts: i64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<bool, SourceError> {
        let p = partition.unsigned_abs();
        if !self.owned.contains(&p) {
            return Ok(false); // fetched before a revoke
        }
        let offset = offset.unsigned_abs();
        if let Some(expected) = self.next[p as usize]
            && offset < expected
        {
            return Err(SourceError::Kafka(format!(
                "partition {p} of {} went back from offset {expected} to {offset}: the topic was recreated or truncated; kappa stops rather than mix two logs (use a new data directory, or replay)",
                self.topic
            )));
        }
        self.next[p as usize] = Some(offset + 1);
        self.eof[p as usize] = false;
        batch.push(p, offset, ts.max(0), key, payload);
        Ok(true)
    }

    /// A partition reached its end.
    fn at_eof(&mut self, partition: i32) {
        if let Some(e) = self.eof.get_mut(partition.unsigned_abs() as usize) {
            *e = true;
        }
    }
}

/// librdkafka properties of the consumer.
fn consumer_config(k: &KafkaSection) -> ClientConfig {
    let mut c = ClientConfig::new();
    let session = k.session_timeout.as_millis().max(1000);
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.to_string())
        .set(
            "heartbeat.interval.ms",
            (session / 6).clamp(100, 3000).to_string(),
        )
        .set(
            "statistics.interval.ms",
            k.statistics_interval.as_millis().max(100).to_string(),
        )
        // librdkafka paces fetching by its local queue: with its defaults a consumer that
        // spends ~1 µs per record between polls got 30 % of the bare read rate (the fetcher
        // backed off); a deeper queue and no backoff keep it fetching while kappa works.
        // Costs up to 256 MiB of prefetched records; override in [kafka.properties].
        .set("fetch.queue.backoff.ms", "0")
        .set("queued.min.messages", "500000")
        .set("queued.max.messages.kbytes", "262144")
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
        store: Option<Store>,
        version: &str,
        bounded: bool,
        metrics: Arc<Metrics>,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Self, SourceError> {
        Self::connect_with(k, store, None, version, bounded, metrics, cancel)
    }

    /// [`KafkaSource::connect`] for a worker: no store; resume states come from
    /// `state_topic` (the latest record per `version/partition`), else from the group.
    ///
    /// # Errors
    /// As [`KafkaSource::connect`].
    pub fn connect_with(
        k: &KafkaSection,
        store: Option<Store>,
        state_topic: Option<(KafkaSection, HashMap<u32, u64>)>,
        version: &str,
        bounded: bool,
        metrics: Arc<Metrics>,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Self, SourceError> {
        let shared = Arc::new(Shared::default());
        let ctx = Ctx {
            shared: shared.clone(),
            bounded,
            metrics,
            store,
            state_topic,
            version: version.to_string(),
            topic: k.topic.clone(),
            fetch: Mutex::new(None),
        };
        let consumer: BaseConsumer<Ctx> = consumer_config(k)
            .create_with_context(ctx)
            .map_err(|e| SourceError::Kafka(format!("creating the consumer: {e}")))?;
        // SAFETY: the client is live; the queue is destroyed (Drop) before the consumer.
        let q = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        if q.is_null() {
            return Err(SourceError::Kafka("creating the fetch queue".into()));
        }
        *consumer.context().fetch.lock().expect("fetch queue lock") = Some(FetchQueue(q));
        let mut backoff = Duration::from_millis(200);
        let partitions = loop {
            match consumer.fetch_metadata(Some(&k.topic), Duration::from_secs(2)) {
                Ok(md) => match md.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        break u32::try_from(t.partitions().len()).unwrap_or(u32::MAX);
                    }
                    _ => tracing::warn!(
                        "topic {} not found on {} (create it with `kappa topics apply`); retrying in {backoff:?}",
                        k.topic,
                        k.brokers
                    ),
                },
                Err(e) => tracing::warn!(
                    "kafka brokers {} unreachable ({e}); retrying in {backoff:?}",
                    k.brokers
                ),
            }
            if cancel() {
                return Err(SourceError::Kafka(
                    "cancelled while waiting for the brokers".into(),
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        if bounded {
            // A bounded run reads every partition by explicit assignment, like a replay: it
            // never joins (or disturbs) the live consumer group.
            consumer
                .context()
                .assign_from_store(&consumer, (0..partitions).collect());
        } else {
            consumer
                .subscribe(&[&k.topic])
                .map_err(|e| SourceError::Kafka(format!("subscribing to {}: {e}", k.topic)))?;
        }
        let n = partitions as usize;
        Ok(Self {
            consumer,
            shared,
            topic: k.topic.clone(),
            partitions,
            pos: Tracked {
                topic: k.topic.clone(),
                owned: Vec::new(),
                next: vec![None; n],
                eof: vec![false; n],
            },
            bootstrap: k.brokers.clone(),
            taken: Taken(Vec::new()),
        })
    }
}

impl KafkaSource {
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
                .map_err(|e| SourceError::Kafka(format!("offset {o}: {e}")))?;
            e.set_metadata(meta);
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| SourceError::Kafka(format!("committing offsets to the group: {e}")))
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
                        match self.pos.accept(
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
                    SourceError::Kafka(format!("seeking partition {partition} to {offset}: {e}"))
                })?;
        }
        self.pos.next[partition as usize] = Some(offset);
        Ok(())
    }

    fn poll(&mut self, batch: &mut RecordBatch, max_records: usize) -> Result<usize, SourceError> {
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
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let (key, payload) =
                        (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                    answered = true;
                    if self
                        .pos
                        .accept(batch, m.partition(), m.offset(), ts, key, payload)?
                    {
                        n += 1;
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    answered = true;
                    self.pos.at_eof(p);
                }
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
            n += self.fetch(batch, max_records - n, if n == 0 { 50 } else { 0 })?;
        }
        Ok(n)
    }

    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError> {
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
        if self.consumer.context().bounded {
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
        !self.shared.broker_down.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("topic {} on {}", self.topic, self.bootstrap)
    }
}

/// The latest value per key of topic `k.topic`, read from the beginning to the end as it
/// is now (a compacted state topic: small).
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
        .map_err(|e| SourceError::Kafka(format!("creating a client: {e}")))?;
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
        .map_err(|e| SourceError::Kafka(format!("assigning {}: {e}", k.topic)))?;
    let mut next = vec![0u64; ends.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if std::time::Instant::now() > deadline {
            return Err(SourceError::Kafka(format!("reading {} timed out", k.topic)));
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
            Some(Err(e)) => return Err(SourceError::Kafka(format!("reading {}: {e}", k.topic))),
            None => {}
        }
    }
    Ok(out)
}

/// High watermark per partition of the topic (one metadata and one ListOffsets request
/// per partition), for replay plans.
///
/// # Errors
/// Brokers unreachable within 10 s, or an unknown topic.
pub fn high_watermarks(k: &KafkaSection) -> Result<Vec<u64>, SourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    // A secured cluster needs its SASL/TLS settings here as everywhere.
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| SourceError::Kafka(format!("creating a client: {e}")))?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(&k.topic), timeout)
        .map_err(|e| SourceError::Kafka(format!("brokers {} unreachable: {e}", k.brokers)))?;
    let parts = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().len(),
        _ => {
            return Err(SourceError::Kafka(format!(
                "topic {} not found on {}",
                k.topic, k.brokers
            )));
        }
    };
    (0..parts)
        .map(|p| {
            let p = i32::try_from(p).unwrap_or(i32::MAX);
            consumer
                .fetch_watermarks(&k.topic, p, timeout)
                .map(|(_, high)| high.unsigned_abs())
                .map_err(|e| SourceError::Kafka(format!("watermarks of partition {p}: {e}")))
        })
        .collect()
}
