//! Sources: where the pipeline reads records from. The embedded log is the default;
//! Kafka implements the same trait.

mod embedded;
mod kafka;

pub use embedded::EmbeddedSource;
pub use kafka::{KafkaSource, read_latest};

use crate::log::{LogError, RecordBatch};

/// Failures reading a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Kafka failed in a way retries do not fix.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Stopped (Ctrl-C, SIGTERM) before the source was ready: not a failure.
    #[error("stopped while waiting for the brokers")]
    Cancelled,
}

/// A partitioned, offset-addressed log the pipeline consumes.
pub trait Source: Send {
    /// Stable identity of the log (the store remembers which log it was built from).
    fn id(&self) -> String;
    /// Short name for metric labels (`embedded`, `kafka`).
    fn kind(&self) -> &'static str;
    /// For messages: what is being read.
    fn describe(&self) -> String;
    /// Number of partitions of the log.
    fn partitions(&self) -> u32;
    /// A new set of partitions this process owns, when it changed since the last call (the
    /// first call always answers). The pipeline then rebuilds its state from the store and
    /// seeks the owned partitions.
    fn take_assignment(&mut self) -> Option<Vec<u32>>;
    /// The next record returned for `partition` will be the one at `offset`.
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), SourceError>;
    /// From now on, read only up to the end of the log as it is now (embedded: the end
    /// offsets now; Kafka: until each owned partition reports EOF).
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn set_bounded(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// In bounded mode: nothing is left to read.
    fn exhausted(&mut self) -> bool;
    /// Appends up to `max_records` records of owned partitions to `batch`, each partition's
    /// in offset order. Returns how many; 0 means nothing is available right now.
    ///
    /// # Errors
    /// I/O or protocol failure, or a log that went backwards.
    fn poll(&mut self, batch: &mut RecordBatch, max_records: usize) -> Result<usize, SourceError>;
    /// The next offset that will be written on each partition (the log end), as last known.
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError>;
    /// Called after each store commit with the committed next offsets (Kafka commits them
    /// to the consumer group for standard lag tooling; the store stays the truth).
    fn commit_positions(&mut self, _positions: &[(u32, u64)]) {}
    /// Whether [`Source::end_offsets`] reflects the log (Kafka: a fetch response or an EOF
    /// reported each owned partition's end), so a small lag means caught up.
    fn lag_known(&mut self) -> bool {
        true
    }
    /// False while the log cannot be reached (readiness).
    fn healthy(&self) -> bool {
        true
    }
    /// Set once the log no longer holds the history the store was built from (Kafka: a
    /// topic deleted and recreated, records deleted before they were read): what happened.
    /// The source then delivers nothing more; the pipeline reports the state.
    fn diverged(&self) -> Option<String> {
        None
    }
    /// Where the source started `partition` in its latest assignment, when it chose (Kafka:
    /// the group's committed offset or a stored position; `None`: its beginning, or not
    /// known before the first record).
    fn assigned_offset(&self, _partition: u32) -> Option<u64> {
        None
    }
    /// The identity of the log's current incarnation, when it has one (Kafka: the topic
    /// id, which a deleted and recreated topic does not keep).
    fn incarnation(&self) -> Option<String> {
        None
    }
    /// The log is not the one the store was built from (`what`): stop delivering, as
    /// [`Source::diverged`] describes.
    ///
    /// # Errors
    /// A bounded read fails with it instead.
    fn history_changed(&mut self, what: &str) -> Result<(), SourceError> {
        Err(SourceError::Kafka(what.to_string()))
    }
}

/// Opens the configured source for output version `version`: the embedded log under the
/// data directory, or Kafka when `kafka.brokers` is set. `standalone` reads every
/// partition by explicit assignment (replays, versions other than the live one, bounded
/// runs) instead of joining the consumer group; Kafka connects with retries until
/// `cancel` returns true.
///
/// # Errors
/// The log cannot be opened; Kafka configuration errors.
pub fn open(
    cfg: &crate::config::Config,
    store: &crate::store::Store,
    version: &str,
    standalone: bool,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    cancel: &dyn Fn() -> bool,
) -> Result<Box<dyn Source>, SourceError> {
    if cfg.kafka.brokers.is_empty() {
        Ok(Box::new(EmbeddedSource::open(
            &cfg.log_dir(),
            cfg.log.partitions,
        )?))
    } else {
        Ok(Box::new(KafkaSource::connect(
            &cfg.kafka,
            Some(store.clone()),
            version,
            standalone,
            metrics,
            cancel,
        )?))
    }
}

/// Per partition, the first offset whose record time (the ingest time) is at or after
/// `ms`, or the log end when there is none: every record before it was written earlier.
/// Kafka answers with `offsetsForTimes`; the embedded log with its timestamp index. For
/// replays from a time kappa's own event-time index does not cover.
///
/// # Errors
/// The log cannot be opened or the brokers not reached.
pub fn offsets_for_time(cfg: &crate::config::Config, ms: i64) -> Result<Vec<u64>, SourceError> {
    if cfg.kafka.brokers.is_empty() {
        EmbeddedSource::open(&cfg.log_dir(), cfg.log.partitions)?.offsets_for_time(ms)
    } else {
        kafka::offsets_for_time(&cfg.kafka, ms)
    }
}

/// The identity of the log's current incarnation (Kafka: the topic id; the embedded log:
/// none needed, its id is bound to the store).
///
/// # Errors
/// The brokers not reached.
pub fn incarnation(cfg: &crate::config::Config) -> Result<Option<String>, SourceError> {
    if cfg.kafka.brokers.is_empty() {
        Ok(None)
    } else {
        kafka::topic_id_of(&cfg.kafka)
    }
}

/// The log's end offset per partition, now: for plans and progress totals (a Kafka
/// broker's answer to a watermark query; the pipeline itself never depends on it).
///
/// # Errors
/// The log cannot be opened or the brokers not reached.
pub fn log_end_offsets(cfg: &crate::config::Config) -> Result<Vec<u64>, SourceError> {
    if cfg.kafka.brokers.is_empty() {
        EmbeddedSource::open(&cfg.log_dir(), cfg.log.partitions)?.end_offsets()
    } else {
        kafka::high_watermarks(&cfg.kafka)
    }
}
