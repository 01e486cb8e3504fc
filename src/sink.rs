//! Sinks: where `kappa produce` appends records — the embedded log or a Kafka topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::config::KafkaSection;
use crate::log::{LogError, LogWriter};
use crate::metrics::Metrics;

/// Failures appending records.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Writing a file failed.
    #[error("writing the output: {0}")]
    Io(std::io::Error),
    /// Kafka refused or could not deliver.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Appends keyed records with a timestamp.
pub trait Sink: Send {
    /// Label for metrics (`embedded`, `kafka`).
    fn kind(&self) -> &'static str;
    /// Appends one record (buffered); its `(partition, offset)` when the sink assigns it
    /// at once (the embedded log).
    ///
    /// # Errors
    /// The record cannot be accepted.
    fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<Option<(u32, u64)>, SinkError>;
    /// After a failure: drops what is not written yet (see [`LogWriter::discard_pending`])
    /// and says, per partition, the offset below which appended records are in the log
    /// ([`LogWriter::written_ends`]); `None` when the sink cannot tell (Kafka, files).
    fn abandon(&mut self) -> Option<Vec<u64>> {
        None
    }
    /// Makes appended records visible to readers (embedded) / serves delivery reports.
    ///
    /// # Errors
    /// I/O failure.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Final flush: everything durable or delivered, or an error saying what was not.
    ///
    /// # Errors
    /// Undelivered records.
    fn finish(&mut self) -> Result<(), SinkError>;
}

impl Sink for LogWriter {
    fn kind(&self) -> &'static str {
        "embedded"
    }
    fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<Option<(u32, u64)>, SinkError> {
        Ok(Some(LogWriter::append(self, key, value, timestamp_ms)?))
    }
    fn abandon(&mut self) -> Option<Vec<u64>> {
        let ends = LogWriter::written_ends(self);
        self.discard_pending();
        Some(ends)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(LogWriter::flush(self)?)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(self.sync()?)
    }
}

/// JSON lines (the record values, one per line) into a file or stdout: `produce --output`.
pub struct LinesSink(pub Box<dyn std::io::Write + Send>);

impl Sink for LinesSink {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn append(
        &mut self,
        _key: &[u8],
        value: &[u8],
        _timestamp_ms: i64,
    ) -> Result<Option<(u32, u64)>, SinkError> {
        self.0
            .write_all(value)
            .and_then(|()| self.0.write_all(b"\n"))
            .map_err(SinkError::Io)?;
        Ok(None)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.flush().map_err(SinkError::Io)
    }
}

/// Delivery reports, counted.
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    metrics: Arc<Metrics>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .produced_records
                    .with_label_values(&["kafka"])
                    .inc();
            }
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!("kafka delivery failed: {e}");
                }
                self.metrics
                    .produce_failures
                    .with_label_values(&["kafka"])
                    .inc();
            }
        }
    }
}

/// An idempotent Kafka producer (`enable.idempotence`, lz4, key = `user_id`, partitioned
/// like the embedded log: murmur2 of the key, as Kafka's Java clients do).
pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    topic: String,
    sent: u64,
}

impl KafkaSink {
    /// Creates the producer of `kappa produce` and checks that the brokers answer within
    /// `kafka.connect-timeout` and have the topic: a dead broker or a missing topic is one
    /// line at once, not minutes of retries.
    ///
    /// # Errors
    /// Invalid configuration; brokers that do not answer; no such topic.
    pub fn new(k: &KafkaSection, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
        let sink = Self::for_topic(k, &k.topic, metrics)?;
        let md = crate::topics::reachable(sink.producer.client(), k, Some(&k.topic)).map_err(
            |e| match e {
                crate::topics::TopicsError::Unreachable(m) => SinkError::Kafka(m),
                other => SinkError::Kafka(other.to_string()),
            },
        )?;
        if md
            .topics()
            .first()
            .is_none_or(|t| t.error().is_some() || t.partitions().is_empty())
        {
            return Err(SinkError::Kafka(format!(
                "no topic {} on {} (create it with `kappa topics apply`)",
                k.topic, k.brokers
            )));
        }
        Ok(sink)
    }

    /// Creates a producer for `topic` (a worker's partials).
    ///
    /// # Errors
    /// Invalid configuration.
    pub fn for_topic(
        k: &KafkaSection,
        topic: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &k.brokers)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "120000")
            // Records up to the embedded log's limit (32 MiB) get through, so that an
            // oversized event reaches the consumer and is dead-lettered there, with its
            // position, like on the embedded log (the topic's max.message.bytes must allow it).
            .set(
                "message.max.bytes",
                (crate::log::MAX_RECORD_BYTES + (1 << 20)).to_string(),
            );
        for (key, v) in &k.properties {
            c.set(key, v);
        }
        let ctx = Deliveries {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            metrics,
        };
        let producer = c
            .create_with_context(ctx)
            .map_err(|e| SinkError::Kafka(format!("creating the producer: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            sent: 0,
        })
    }
}

impl Sink for KafkaSink {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<Option<(u32, u64)>, SinkError> {
        loop {
            let rec = BaseRecord::to(&self.topic)
                .key(key)
                .payload(value)
                .timestamp(timestamp_ms);
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(SinkError::Kafka(format!(
                        "producing to {}: {e}",
                        self.topic
                    )));
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(None)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(|e| SinkError::Kafka(format!("final flush: {e}")))?;
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(SinkError::Kafka(format!(
                "{failed} of {} records were not delivered",
                self.sent
            )));
        }
        Ok(())
    }
}
