//! [`LogReader`]: reads and tails a log, concurrently with its writer.

use std::path::{Path, PathBuf};

use super::batch::RecordBatch;
use super::segment::{Cursor, SCAN_CHUNK, last_valid_entry, list_segments, read_index};
use super::{LogError, Meta, open_or_create_meta, partition_dir, read_meta};

/// Read chunk of the record cursors (hot path).
const READ_CHUNK: usize = 2 << 20;

/// Reads a log directory. Any number of readers, in any process, may read
/// concurrently with the writer; a reader sees records as soon as the writer
/// has flushed them.
pub struct LogReader {
    dir: PathBuf,
    log_id: String,
    partitions: u32,
    parts: Vec<PartReader>,
}

struct PartReader {
    dir: PathBuf,
    cursor: Cursor,
    /// Next offset to be returned (records below it are skipped after a seek).
    position: u64,
    /// Incremental scanner behind [`LogReader::end_offset`], created on first use.
    end: Option<Cursor>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .field(
                "positions",
                &self.parts.iter().map(|p| p.position).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// Opens an existing log; every partition starts at offset 0.
    ///
    /// # Errors
    /// [`LogError::NotFound`] if `dir` holds no log, meta file and I/O errors.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let meta = read_meta(dir)?.ok_or_else(|| LogError::NotFound {
            dir: dir.to_path_buf(),
        })?;
        Self::with_meta(dir, meta)
    }

    /// Opens the log in `dir`, creating an empty one with `partitions`
    /// partitions if there is none (no writer lock needed).
    ///
    /// # Errors
    /// [`LogError::PartitionMismatch`] if the log exists with another partition
    /// count, meta file and I/O errors.
    pub fn open_or_create(dir: &Path, partitions: u32) -> Result<Self, LogError> {
        let meta = open_or_create_meta(dir, partitions)?;
        Self::with_meta(dir, meta)
    }

    fn with_meta(dir: &Path, meta: Meta) -> Result<Self, LogError> {
        let parts = (0..meta.partitions)
            .map(|p| {
                let pdir = partition_dir(dir, p);
                let base = list_segments(&pdir)?.first().copied().unwrap_or(0);
                Ok(PartReader {
                    cursor: Cursor::new(pdir.clone(), base, 0, base, READ_CHUNK),
                    dir: pdir,
                    position: base,
                    end: None,
                })
            })
            .collect::<Result<Vec<_>, LogError>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            log_id: meta.id,
            partitions: meta.partitions,
            parts,
        })
    }

    /// Number of partitions.
    #[must_use]
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Random id created with the log (a store remembers which log it was built from).
    #[must_use]
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    fn part(&mut self, partition: u32) -> &mut PartReader {
        let n = self.parts.len();
        self.parts
            .get_mut(partition as usize)
            .unwrap_or_else(|| panic!("partition {partition} out of range (log has {n})"))
    }

    /// The next read of `partition` starts at `offset`. Seeking beyond the
    /// current end is allowed: records are returned once they exist.
    ///
    /// # Errors
    /// I/O errors.
    ///
    /// # Panics
    /// If `partition >= self.partitions()` (as do the other per-partition methods).
    pub fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        let part = self.part(partition);
        let (base, pos, next) = locate(&part.dir, offset)?;
        part.cursor.reset(base, pos, next);
        part.position = offset;
        Ok(())
    }

    /// Next offset to be returned by [`read`](Self::read).
    #[must_use]
    pub fn position(&self, partition: u32) -> u64 {
        self.parts[partition as usize].position
    }

    /// Appends up to `max_records` complete, CRC-valid records of `partition`
    /// to `batch` in offset order, as available on disk now; returns how many.
    /// 0 means nothing more for now.
    ///
    /// # Errors
    /// [`LogError::Corrupt`] for a bad frame that is followed by a later segment
    /// (reported once the records before it have been returned), I/O errors.
    pub fn read(
        &mut self,
        partition: u32,
        max_records: usize,
        batch: &mut RecordBatch,
    ) -> Result<usize, LogError> {
        let part = self.part(partition);
        let mut n = 0;
        while n < max_records {
            let frame = match part.cursor.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                // The cursor stays at the bad frame: the error comes again on the next call.
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            };
            if frame.offset < part.position {
                continue;
            }
            batch.push_joined(
                partition,
                frame.offset,
                frame.timestamp_ms,
                part.cursor.key_value(&frame),
                frame.key_len,
            );
            part.position = frame.offset + 1;
            n += 1;
        }
        Ok(n)
    }

    /// Next offset that would be assigned on `partition`, as visible on disk
    /// now. Incremental: each call scans only what was appended since the last.
    ///
    /// # Errors
    /// [`LogError::Corrupt`], I/O errors.
    pub fn end_offset(&mut self, partition: u32) -> Result<u64, LogError> {
        let part = self.part(partition);
        let cursor = if let Some(c) = &mut part.end {
            c
        } else {
            let (base, pos, next) = locate(&part.dir, u64::MAX)?;
            part.end
                .insert(Cursor::new(part.dir.clone(), base, pos, next, SCAN_CHUNK))
        };
        while cursor.next_frame()?.is_some() {}
        Ok(cursor.next_offset())
    }

    /// First offset of `partition` whose record timestamp is `>= ts_ms`, or the
    /// end offset if there is none. Uses the index's running maximum timestamp,
    /// so timestamps need not be monotone.
    ///
    /// # Errors
    /// [`LogError::Corrupt`], I/O errors.
    pub fn offset_for_timestamp(&mut self, partition: u32, ts_ms: i64) -> Result<u64, LogError> {
        let dir = self.part(partition).dir.clone();
        let bases = list_segments(&dir)?;
        let Some(&first) = bases.first() else {
            return Ok(0);
        };
        // Start after the last point before which every record is older than ts_ms.
        let mut start = (first, 0, first);
        for &base in bases.iter().rev() {
            let entries = read_index(&dir, base)?;
            if let Some((_, e)) = last_valid_entry(&dir, base, &entries, |e| e.max_ts < ts_ms)? {
                start = (base, e.position, e.offset);
                break;
            }
        }
        let mut cursor = Cursor::new(dir, start.0, start.1, start.2, SCAN_CHUNK);
        while let Some(f) = cursor.next_frame()? {
            if f.timestamp_ms >= ts_ms {
                return Ok(f.offset);
            }
        }
        Ok(cursor.next_offset())
    }
}

/// Where to start scanning for `offset`: `(segment base, file position, offset there)`,
/// from the last valid index entry at or before it.
fn locate(dir: &Path, offset: u64) -> Result<(u64, u64, u64), LogError> {
    let bases = list_segments(dir)?;
    let Some(&first) = bases.first() else {
        return Ok((0, 0, 0));
    };
    let base = bases
        .iter()
        .rev()
        .copied()
        .find(|&b| b <= offset)
        .unwrap_or(first);
    let entries = read_index(dir, base)?;
    Ok(
        match last_valid_entry(dir, base, &entries, |e| e.offset <= offset)? {
            Some((_, e)) => (base, e.position, e.offset),
            None => (base, 0, base),
        },
    )
}
