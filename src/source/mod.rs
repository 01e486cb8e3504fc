//! Sources: where the pipeline reads records from. The embedded log is the default;
//! Kafka implements the same trait.

mod embedded;
mod kafka;

pub use embedded::EmbeddedSource;
pub use kafka::{KafkaSource, read_latest, topic_exists};

use std::collections::HashMap;

use crate::log::{LogError, RecordBatch};

/// Failures reading a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Kafka failed (a client call, or the topic's history changed): what kappa was doing,
    /// and the client's error when there is one.
    #[error("kafka: {context}{}", cause.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Kafka {
        /// What kappa was doing.
        context: String,
        /// The client's error.
        cause: Option<rdkafka::error::KafkaError>,
    },
    /// Stopped (Ctrl-C, SIGTERM) before the source was ready: not a failure.
    #[error("stopped while waiting for the brokers")]
    Cancelled,
}

impl SourceError {
    /// A Kafka client call failed while doing `context`.
    pub(crate) fn kafka(context: impl Into<String>, cause: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            cause: Some(cause),
        }
    }

    /// Kafka refused what kappa needs (`why`), with no client error behind it.
    pub(crate) fn kafka_msg(why: impl Into<String>) -> Self {
        Self::Kafka {
            context: why.into(),
            cause: None,
        }
    }

    /// Whether retrying may succeed: the brokers were unreachable or slow, a leader or
    /// coordinator was moving. Bad configuration, missing topics, refused credentials and
    /// a changed history are not transient.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        let Self::Kafka { cause: Some(e), .. } = self else {
            return false;
        };
        matches!(
            e.rdkafka_error_code(),
            Some(
                C::BrokerTransportFailure
                    | C::AllBrokersDown
                    | C::OperationTimedOut
                    | C::RequestTimedOut
                    | C::NetworkException
                    | C::LeaderNotAvailable
                    | C::NotLeaderForPartition
                    | C::CoordinatorLoadInProgress
                    | C::CoordinatorNotAvailable
                    | C::NotCoordinator
                    | C::Resolve
            )
        )
    }
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
    /// Read the next batch on a thread of its own while the caller works on this one
    /// (the embedded log; a Kafka client fetches ahead by itself). Whether it will.
    fn read_ahead(&mut self) -> bool {
        false
    }
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
        Err(SourceError::kafka_msg(what))
    }

    /// From now on a poll that finds nothing returns at once instead of waiting a little
    /// for records: a second stream is polled between the main stream's batches.
    fn no_wait(&mut self) {}
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
    starts: std::sync::Arc<dyn Starts>,
    version: &str,
    assignment: Assignment,
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
            &cfg.kafka, starts, version, assignment, metrics, cancel,
        )?))
    }
}

/// The source of a stream read next to the events (reviews, the catalogue): every partition
/// by explicit assignment, positioned by `starts`. `None` when, on Kafka, the brokers say
/// the topic does not exist (a deployment without that stream); brokers that do not answer
/// are retried for `kafka.connect-timeout`, then the error stands — a stream is never
/// turned off by a hiccup.
///
/// # Errors
/// The log cannot be opened; the brokers did not answer in time.
pub fn open_stream(
    cfg: &crate::config::Config,
    starts: std::sync::Arc<dyn Starts>,
    version: &str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<Option<Box<dyn Source>>, SourceError> {
    if !cfg.kafka.brokers.is_empty() {
        let deadline = std::time::Instant::now() + cfg.kafka.connect_timeout;
        loop {
            match kafka::topic_exists(&cfg.kafka) {
                Ok(true) => break,
                Ok(false) => return Ok(None),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!("looking for topic {}: {e}; retrying", cfg.kafka.topic);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
    }
    let deadline = std::time::Instant::now() + cfg.kafka.connect_timeout;
    open(cfg, starts, version, Assignment::Explicit, metrics, &|| {
        std::time::Instant::now() >= deadline
    })
    .map(Some)
}

/// How a source gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// As a member of the consumer group (live): partitions come and go with rebalances,
    /// and the group's committed offsets follow kappa's commits.
    Group,
    /// Every partition, by explicit assignment (bounded runs, replays, new versions): the
    /// live group is never joined, and its offsets are never touched.
    Explicit,
}

/// Where a source starts the partitions it is given (the Kafka source asks at every
/// assignment; the embedded log is positioned by the pipeline). Implemented by kappa's
/// store (`crate::store::Store`: the positions it committed) and by a worker's group
/// state (`crate::scale::worker`: the group's committed offsets carry it).
pub trait Starts: Send + Sync {
    /// Per partition with a kept position for `version`: (offset to resume reading at,
    /// offset it had been read up to).
    ///
    /// # Errors
    /// The positions cannot be read (logged; the partitions then start as if none).
    fn kept(&self, version: &str) -> Result<HashMap<u32, (u64, u64)>, String>;
    /// A partition with no kept position and nothing committed in the group starts here
    /// (`None`: at the beginning).
    fn seed(&self, _partition: u32) -> Option<u64> {
        None
    }
    /// Positions are kept in the group itself: its committed offsets, with the reader's
    /// state in their metadata (a worker), which the source hands back
    /// ([`KafkaSource::take_group_state`]).
    fn in_group(&self) -> bool {
        false
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

#[cfg(test)]
mod tests {
    use super::SourceError;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_kafka_error_keeps_its_cause_and_says_whether_a_retry_may_help() {
        let down = SourceError::kafka(
            "committing offsets to the group",
            KafkaError::ConsumerCommit(RDKafkaErrorCode::AllBrokersDown),
        );
        assert!(down.is_transient());
        assert!(
            down.to_string()
                .starts_with("kafka: committing offsets to the group: "),
            "{down}"
        );
        let unknown = SourceError::kafka(
            "seeking partition 3 to 10",
            KafkaError::Seek("Local: Unknown partition".into()),
        );
        assert!(!unknown.is_transient());
        let auth = SourceError::kafka(
            "reading t",
            KafkaError::MessageConsumption(RDKafkaErrorCode::SaslAuthenticationFailed),
        );
        assert!(!auth.is_transient());
        let changed = SourceError::kafka_msg("topic t no longer holds the history kappa indexed");
        assert!(!changed.is_transient());
        assert_eq!(
            changed.to_string(),
            "kafka: topic t no longer holds the history kappa indexed"
        );
    }
}
