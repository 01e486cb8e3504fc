//! The embedded log as a [`Source`].

use std::path::Path;

use super::{Source, SourceError};
use crate::log::{LogReader, RecordBatch};

/// Reads an embedded log directory, partitions in round-robin.
pub struct EmbeddedSource {
    reader: LogReader,
    /// Next partition to serve first (rotates so no partition starves).
    next: u32,
    /// In bounded mode, the end offsets when it was set.
    stop: Option<Vec<u64>>,
    /// Whether the (single, whole) assignment was handed out.
    assigned: bool,
    dir: std::path::PathBuf,
    /// A poll at the tail waits a little for the writer ([`Source::no_wait`] turns it off).
    wait: bool,
}

impl EmbeddedSource {
    /// Opens the log in `dir`, creating an empty one with `partitions` if none exists yet
    /// (an existing log keeps its own partition count).
    ///
    /// # Errors
    /// I/O failure or a malformed log.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, SourceError> {
        let reader = if dir.join("meta.json").exists() {
            LogReader::open(dir)?
        } else {
            LogReader::open_or_create(dir, partitions)?
        };
        Ok(Self {
            reader,
            next: 0,
            stop: None,
            assigned: false,
            dir: dir.to_path_buf(),
            wait: true,
        })
    }
}

impl EmbeddedSource {
    /// Per partition, the first offset whose record (ingest) time is at or after `ms`, or
    /// the end: every record before it was written earlier.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn offsets_for_time(&mut self, ms: i64) -> Result<Vec<u64>, SourceError> {
        (0..self.reader.partitions())
            .map(|p| Ok(self.reader.offset_for_timestamp(p, ms)?))
            .collect()
    }
}

impl Source for EmbeddedSource {
    fn id(&self) -> String {
        format!("embedded:{}", self.reader.log_id())
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn describe(&self) -> String {
        format!("the embedded log in {}", self.dir.display())
    }

    fn partitions(&self) -> u32 {
        self.reader.partitions()
    }

    fn take_assignment(&mut self) -> Option<Vec<u32>> {
        if self.assigned {
            return None;
        }
        self.assigned = true;
        Some((0..self.reader.partitions()).collect())
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), SourceError> {
        Ok(self.reader.seek(partition, offset)?)
    }

    fn set_bounded(&mut self) -> Result<(), SourceError> {
        self.stop = Some(self.end_offsets()?);
        Ok(())
    }

    fn exhausted(&mut self) -> bool {
        self.stop.as_ref().is_some_and(|stop| {
            (0..self.reader.partitions()).all(|p| self.reader.position(p) >= stop[p as usize])
        })
    }

    fn poll(&mut self, batch: &mut RecordBatch, max_records: usize) -> Result<usize, SourceError> {
        let n = self.reader.partitions();
        let share = (max_records / n as usize).max(1);
        let mut total = 0;
        for i in 0..n {
            let p = (self.next + i) % n;
            let mut want = share.min(max_records - total);
            if let Some(stop) = &self.stop {
                let left = stop[p as usize].saturating_sub(self.reader.position(p));
                want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            if want > 0 {
                total += self.reader.read(p, want, batch)?;
            }
            if total >= max_records {
                break;
            }
        }
        self.next = (self.next + 1) % n;
        if total == 0 && self.wait {
            // At the tail: wait a little for the writer instead of spinning (files give no
            // notification; 5 ms bounds the added latency).
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(total)
    }

    fn no_wait(&mut self) {
        self.wait = false;
    }

    fn end_offsets(&mut self) -> Result<Vec<u64>, SourceError> {
        (0..self.reader.partitions())
            .map(|p| Ok(self.reader.end_offset(p)?))
            .collect()
    }
}
