//! Sources: where the pipeline reads records from. The embedded log is the default;
//! Kafka implements the same trait.

mod embedded;

pub use embedded::EmbeddedSource;

use crate::log::{LogError, RecordBatch};

/// Failures reading a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A partitioned, offset-addressed log the pipeline consumes.
pub trait Source: Send {
    /// Stable identity of the log (the store remembers which log it was built from).
    fn id(&self) -> String;
    /// Short name for metric labels (`embedded`, `kafka`).
    fn kind(&self) -> &'static str;
    /// Number of partitions.
    fn partitions(&self) -> u32;
    /// The next record returned for `partition` will be the one at `offset`.
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), SourceError>;
    /// Appends up to `max_records` records to `batch`, each partition's in offset order,
    /// never returning a record at or past `stop[p]` when `stop` is given. Returns how many
    /// were added; 0 means nothing is available right now.
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max_records: usize,
        stop: Option<&[u64]>,
    ) -> Result<usize, SourceError>;
    /// The next offset that will be written on each partition (the log end), as of now.
    ///
    /// # Errors
    /// I/O or protocol failure.
    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError>;
}
