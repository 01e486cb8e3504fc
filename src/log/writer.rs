//! [`LogWriter`]: the single writer of a log directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::segment::{
    Cursor, INDEX_ENTRY_LEN, INDEX_INTERVAL_BYTES, IndexEntry, SCAN_CHUNK, encode_frame, frame_len,
    index_path, last_valid_entry, list_segments, read_index, segment_path,
};
use super::{
    LOCK_FILE, LogConfig, LogError, MAX_RECORD_BYTES, open_or_create_meta, partition_dir,
    partition_for, sync_dir,
};

/// A partition's buffer is written out (before the next append) once it holds this much.
const AUTO_WRITE_BYTES: usize = 8 << 20;

/// Appends records to a log directory. One writer per directory at a time,
/// enforced by an exclusive lock on `{dir}/writer.lock` held for the writer's lifetime.
pub struct LogWriter {
    dir: PathBuf,
    cfg: LogConfig,
    log_id: String,
    partitions: u32,
    parts: Vec<PartWriter>,
    last_sync: Instant,
    _lock: File,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .field("end_offsets", &self.end_offsets())
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Opens the log in `dir` for writing, creating it if missing, and repairs a
    /// torn tail of each partition's last segment.
    ///
    /// # Errors
    /// [`LogError::Locked`] if another writer holds the lock,
    /// [`LogError::PartitionMismatch`] if the log has another partition count,
    /// [`LogError::Corrupt`] if a partition's frames do not reach its last segment,
    /// and I/O or meta file errors.
    pub fn open(dir: &Path, cfg: &LogConfig) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(LogError::io(lock_path, e)),
        }
        // For humans: which process holds the lock.
        let _ = lock
            .set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()));

        let meta = open_or_create_meta(dir, cfg.partitions)?;
        let parts = (0..meta.partitions)
            .map(|p| PartWriter::open(partition_dir(dir, p)))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            dir = %dir.display(),
            log_id = %meta.id,
            partitions = meta.partitions,
            end_offsets = ?parts.iter().map(|p| p.next_offset).collect::<Vec<_>>(),
            "opened log for writing"
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            log_id: meta.id,
            partitions: meta.partitions,
            parts,
            last_sync: Instant::now(),
            _lock: lock,
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

    /// Per partition, the offset below which appended records are written to the segment
    /// files (visible to readers; those at or above it are still buffered). After a failed
    /// [`flush`](Self::flush) or append, this says exactly which records are in the log.
    #[must_use]
    pub fn written_ends(&self) -> Vec<u64> {
        self.parts
            .iter()
            .map(|p| p.next_offset - p.pending_records)
            .collect()
    }

    /// Drops the appended records not yet written (after a failed write: so that the log
    /// holds exactly what [`written_ends`](Self::written_ends) said, and closing does not
    /// retry them). Their offsets are given out again.
    pub fn discard_pending(&mut self) {
        for p in &mut self.parts {
            p.next_offset -= p.pending_records;
            p.pending_records = 0;
            p.pending.clear();
            p.pending_index.clear();
        }
    }

    /// Appends to partition [`partition_for`]`(key)`; returns `(partition, offset)`.
    /// Buffered in memory until [`flush`](Self::flush) (a segment roll, or a
    /// partition buffer beyond 8 MiB, writes that partition's buffer earlier).
    ///
    /// # Errors
    /// [`LogError::RecordTooLarge`], or an I/O error when a full buffer is
    /// written out or a segment is rolled (the record is then not appended).
    pub fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<(u32, u64), LogError> {
        let partition = partition_for(key, self.partitions());
        let offset = self.append_to(partition, key, value, timestamp_ms)?;
        Ok((partition, offset))
    }

    /// Appends to `partition`; returns the record's offset.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    ///
    /// # Panics
    /// If `partition >= self.partitions()`.
    pub fn append_to(
        &mut self,
        partition: u32,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<u64, LogError> {
        let size = key.len() + value.len();
        if size > MAX_RECORD_BYTES {
            return Err(LogError::RecordTooLarge {
                size,
                max: MAX_RECORD_BYTES,
            });
        }
        let n = self.parts.len();
        let part = self
            .parts
            .get_mut(partition as usize)
            .unwrap_or_else(|| panic!("partition {partition} out of range (log has {n})"));
        part.append(self.cfg.segment_bytes, key, value, timestamp_ms)
    }

    /// Writes the buffered records (one `write(2)` per partition), making them
    /// visible to readers; `fdatasync`s if `fsync_interval` has elapsed since the last sync.
    ///
    /// # Errors
    /// I/O errors; buffered records that could not be written stay buffered.
    pub fn flush(&mut self) -> Result<(), LogError> {
        for part in &mut self.parts {
            part.write_pending()?;
        }
        if self.last_sync.elapsed() >= self.cfg.fsync_interval {
            self.sync_written()?;
        }
        Ok(())
    }

    /// Flushes and `fdatasync`s data and index files now.
    ///
    /// # Errors
    /// I/O errors.
    pub fn sync(&mut self) -> Result<(), LogError> {
        for part in &mut self.parts {
            part.write_pending()?;
        }
        self.sync_written()
    }

    fn sync_written(&mut self) -> Result<(), LogError> {
        for part in &mut self.parts {
            part.sync()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Next offset per partition (counting buffered records).
    #[must_use]
    pub fn end_offsets(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.next_offset).collect()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not sync the log on close");
        }
    }
}

/// Write state of one partition: its last (active) segment.
struct PartWriter {
    dir: PathBuf,
    next_offset: u64,
    /// Largest timestamp appended so far in the partition.
    max_ts: i64,
    seg_base: u64,
    log: File,
    idx: File,
    /// Bytes in the segment file (excluding `pending`).
    seg_len: u64,
    /// Bytes in the index file (excluding `pending_index`).
    idx_len: u64,
    /// Index entries of the segment, written or pending.
    index_count: u64,
    /// Segment position of the last index entry.
    last_index_pos: u64,
    pending: Vec<u8>,
    pending_index: Vec<u8>,
    /// Records whose frames are in `pending` (the last ones appended).
    pending_records: u64,
    /// Written but not yet fdatasync'ed.
    unsynced: bool,
}

impl PartWriter {
    /// Opens a partition: finds the end of its valid frames (scanning from the
    /// last trustworthy index entry) and truncates a torn tail.
    fn open(dir: PathBuf) -> Result<Self, LogError> {
        let bases = list_segments(&dir)?;
        let Some(&last) = bases.last() else {
            let (log, idx) = create_segment(&dir, 0, false)?;
            return Ok(Self::new(dir, 0, i64::MIN, log, idx, 0, &[]));
        };

        // Start scanning at the last valid index entry (of the last segment, or
        // of an earlier one if the last segment's index is lost).
        let mut start = None;
        let mut last_entries = Vec::new();
        for &base in bases.iter().rev() {
            let entries = read_index(&dir, base)?;
            if let Some((i, e)) = last_valid_entry(&dir, base, &entries, |_| true)? {
                if base == last {
                    last_entries = entries[..=i].to_vec();
                }
                start = Some((base, e));
                break;
            }
        }
        let (start_base, start_pos, start_offset, mut max_ts) = match start {
            Some((b, e)) => (b, e.position, e.offset, e.max_ts),
            None => (bases[0], 0, bases[0], i64::MIN),
        };
        let mut cursor = Cursor::new(dir.clone(), start_base, start_pos, start_offset, SCAN_CHUNK);
        while let Some(f) = cursor.next_frame()? {
            max_ts = max_ts.max(f.timestamp_ms);
        }
        if cursor.seg_base() != last {
            return Err(LogError::Corrupt {
                path: segment_path(&dir, cursor.seg_base()),
                position: cursor.position(),
                reason: format!(
                    "frames end at offset {} but a later segment {last:020}.log exists",
                    cursor.next_offset()
                ),
            });
        }
        let end = cursor.position();
        let next_offset = cursor.next_offset();
        drop(cursor);

        let log_path = segment_path(&dir, last);
        let log = open_append(&log_path, false)?;
        let len = log
            .metadata()
            .map_err(|e| LogError::io(&log_path, e))?
            .len();
        if len > end {
            tracing::warn!(
                segment = %log_path.display(),
                valid_bytes = end,
                dropped_bytes = len - end,
                next_offset,
                "truncating torn tail of the log"
            );
            log.set_len(end).map_err(|e| LogError::io(&log_path, e))?;
            log.sync_data().map_err(|e| LogError::io(&log_path, e))?;
        }
        let idx_path = index_path(&dir, last);
        let idx = open_append(&idx_path, true)?;
        let idx_len = idx
            .metadata()
            .map_err(|e| LogError::io(&idx_path, e))?
            .len();
        let keep = (last_entries.len() * INDEX_ENTRY_LEN) as u64;
        if idx_len != keep {
            idx.set_len(keep).map_err(|e| LogError::io(&idx_path, e))?;
            idx.sync_data().map_err(|e| LogError::io(&idx_path, e))?;
        }
        let mut part = Self::new(dir, last, max_ts, log, idx, end, &last_entries);
        part.next_offset = next_offset;
        Ok(part)
    }

    fn new(
        dir: PathBuf,
        seg_base: u64,
        max_ts: i64,
        log: File,
        idx: File,
        seg_len: u64,
        entries: &[IndexEntry],
    ) -> Self {
        Self {
            dir,
            next_offset: seg_base,
            max_ts,
            seg_base,
            log,
            idx,
            seg_len,
            idx_len: (entries.len() * INDEX_ENTRY_LEN) as u64,
            index_count: entries.len() as u64,
            last_index_pos: entries.last().map_or(0, |e| e.position),
            pending: Vec::new(),
            pending_index: Vec::new(),
            pending_records: 0,
            unsynced: false,
        }
    }

    fn append(
        &mut self,
        segment_bytes: u64,
        key: &[u8],
        value: &[u8],
        timestamp_ms: i64,
    ) -> Result<u64, LogError> {
        if self.pending.len() >= AUTO_WRITE_BYTES {
            self.write_pending()?;
        }
        let len = frame_len(key.len() + value.len()) as u64;
        let mut pos = self.seg_len + self.pending.len() as u64;
        if pos > 0 && pos + len > segment_bytes {
            self.roll()?;
            pos = 0;
        }
        if self.index_count == 0 || pos >= self.last_index_pos + INDEX_INTERVAL_BYTES {
            IndexEntry {
                offset: self.next_offset,
                position: pos,
                max_ts: self.max_ts,
            }
            .encode(&mut self.pending_index);
            self.index_count += 1;
            self.last_index_pos = pos;
        }
        let offset = self.next_offset;
        encode_frame(&mut self.pending, offset, timestamp_ms, key, value);
        self.pending_records += 1;
        self.next_offset += 1;
        self.max_ts = self.max_ts.max(timestamp_ms);
        Ok(offset)
    }

    /// Writes the pending frames, then the pending index entries.
    fn write_pending(&mut self) -> Result<(), LogError> {
        if !self.pending.is_empty() {
            if let Err(e) = self.log.write_all(&self.pending) {
                // Undo a partial write so that a retry does not duplicate bytes.
                let _ = self.log.set_len(self.seg_len);
                return Err(LogError::io(segment_path(&self.dir, self.seg_base), e));
            }
            self.seg_len += self.pending.len() as u64;
            self.pending.clear();
            self.pending_records = 0;
            if self.pending.capacity() > 2 * AUTO_WRITE_BYTES {
                self.pending.shrink_to(AUTO_WRITE_BYTES);
            }
            self.unsynced = true;
        }
        if !self.pending_index.is_empty() {
            if let Err(e) = self.idx.write_all(&self.pending_index) {
                let _ = self.idx.set_len(self.idx_len);
                return Err(LogError::io(index_path(&self.dir, self.seg_base), e));
            }
            self.idx_len += self.pending_index.len() as u64;
            self.pending_index.clear();
            self.unsynced = true;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.unsynced {
            self.log
                .sync_data()
                .map_err(|e| LogError::io(segment_path(&self.dir, self.seg_base), e))?;
            self.idx
                .sync_data()
                .map_err(|e| LogError::io(index_path(&self.dir, self.seg_base), e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Completes the current segment (written and synced) and starts a new one
    /// named by the next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        self.write_pending()?;
        self.sync()?;
        let base = self.next_offset;
        let (log, idx) = create_segment(&self.dir, base, true)?;
        tracing::debug!(dir = %self.dir.display(), base, previous_bytes = self.seg_len, "rolled log segment");
        self.log = log;
        self.idx = idx;
        self.seg_base = base;
        self.seg_len = 0;
        self.idx_len = 0;
        self.index_count = 0;
        self.last_index_pos = 0;
        Ok(())
    }
}

fn open_append(path: &Path, create: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
        .map_err(|e| LogError::io(path, e))
}

/// Creates (or, unless `new_only`, opens) the files of segment `base` and fsyncs the directory.
fn create_segment(dir: &Path, base: u64, new_only: bool) -> Result<(File, File), LogError> {
    let log_path = segment_path(dir, base);
    let log = OpenOptions::new()
        .read(true)
        .append(true)
        .create(!new_only)
        .create_new(new_only)
        .open(&log_path)
        .map_err(|e| LogError::io(&log_path, e))?;
    let idx_path = index_path(dir, base);
    let idx = open_append(&idx_path, true)?;
    if new_only {
        // A stale index without its segment (an interrupted roll) must not survive.
        idx.set_len(0).map_err(|e| LogError::io(&idx_path, e))?;
    }
    sync_dir(dir)?;
    Ok((log, idx))
}
