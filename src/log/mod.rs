//! Embedded log: a durable, partitioned, append-only log in a local directory
//! (a tiny single-machine Kafka).
//!
//! One [`LogWriter`] (one process at a time, guarded by a lock file) appends
//! records; any number of [`LogReader`]s, in any process, read and tail the log
//! concurrently with the writer.
//!
//! # On-disk format
//!
//! ```text
//! {dir}/meta.json            {"format":1,"partitions":4,"id":"<16 random hex chars>"}
//! {dir}/writer.lock          held (flock) by the live writer
//! {dir}/p-0000/              one directory per partition, p-{partition:04}
//!     00000000000000000000.log   segment, named by the offset of its first record (20 digits)
//!     00000000000000000000.idx   sparse index of that segment
//!     00000000000000012345.log   next segment, base offset 12345
//!     ...
//! ```
//!
//! Offsets are numbered from 0 per partition and are contiguous across segments:
//! a segment's base offset is the offset following the last record of the previous one.
//!
//! **Frame** (one per record, all integers little endian):
//!
//! ```text
//! u32 body_len | u32 crc32(body) | body
//! body = u64 offset | i64 timestamp_ms | u32 key_len | key | value
//! ```
//!
//! The CRC is crc32 (IEEE, `crc32fast`) of the body. `key.len() + value.len()` is
//! at most [`MAX_RECORD_BYTES`]. A frame is never split across segments; a new
//! segment is started when the next frame would push the current one past
//! `segment_bytes` (a single larger frame gets a segment of its own).
//!
//! **Index entry** (fixed 24 bytes): `u64 offset | u64 file position | i64 max_ts`,
//! where `max_ts` is the largest record timestamp of the partition *before* that
//! offset (`i64::MIN` if none). An entry is written for the first frame of every
//! segment and then every ~64 KiB of segment data. Index entries are written after
//! the data they point to, and readers trust an entry only after checking that the
//! frame at that position is complete, CRC-valid and has that offset; otherwise
//! they fall back to an earlier entry or to the segment start. A torn index tail
//! is therefore harmless.
//!
//! # Durability (fsync policy)
//!
//! * [`LogWriter::append`] encodes into per-partition memory buffers.
//! * [`LogWriter::flush`] writes each partition's buffer with one `write(2)`: the
//!   data is then visible to readers and survives a crash of the process.
//! * `fdatasync` of data and index files happens at most every
//!   `fsync_interval` (checked at `flush`), and always on [`LogWriter::sync`],
//!   on drop of the writer and before a segment roll (the partition directory is
//!   fsynced after a new segment is created). A power loss can therefore lose up
//!   to `fsync_interval` of flushed appends.
//! * A torn tail (an incomplete or bad-CRC last frame of the last segment) is
//!   ignored by readers and truncated by the next [`LogWriter::open`]. A bad frame
//!   that is followed by a later segment is real corruption: [`LogError::Corrupt`].
//!
//! Only Unix is supported (positional reads via `FileExt::read_at`).

mod batch;
mod partitioner;
mod reader;
mod segment;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use batch::{Record, RecordBatch};
pub use partitioner::{murmur2, partition_for};
pub use reader::LogReader;
pub use writer::LogWriter;

/// Largest `key.len() + value.len()` accepted by the writer.
pub const MAX_RECORD_BYTES: usize = 32 << 20;

/// Writer configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Number of partitions (fixed when the log is created).
    pub partitions: u32,
    /// A new segment is started when the current one would exceed this size.
    pub segment_bytes: u64,
    /// Longest time flushed data may stay without `fdatasync`.
    pub fsync_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            segment_bytes: 256 << 20,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

/// Errors of the embedded log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("I/O error on {path}: {source}", path = .path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the writer lock.
    #[error(
        "another process is writing to the log in {dir} (lock file {dir}/writer.lock is held); stop it or use another --data-dir",
        dir = .dir.display()
    )]
    Locked {
        /// Log directory.
        dir: PathBuf,
    },
    /// No log in the directory.
    #[error(
        "no log in {dir}: produce events first (kappa produce) or point --data-dir at an existing log",
        dir = .dir.display()
    )]
    NotFound {
        /// Log directory.
        dir: PathBuf,
    },
    /// The log exists with another partition count.
    #[error(
        "the log in {dir} has {existing} partitions, but {requested} were requested; use the same partition count or another --data-dir",
        dir = .dir.display()
    )]
    PartitionMismatch {
        /// Log directory.
        dir: PathBuf,
        /// Partitions of the existing log.
        existing: u32,
        /// Partitions asked for.
        requested: u32,
    },
    /// A bad frame that is not the tail of the log.
    #[error("corrupt log segment {path} at byte {position}: {reason}", path = .path.display())]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the bad frame.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record above [`MAX_RECORD_BYTES`].
    #[error("record too large: {size} bytes of key and value (at most {max})")]
    RecordTooLarge {
        /// Key plus value bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `meta.json` is unreadable or inconsistent.
    #[error("bad log meta file {path}: {reason}", path = .path.display())]
    BadMeta {
        /// The meta file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}

pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const LOCK_FILE: &str = "writer.lock";
const FORMAT: u32 = 1;

/// Contents of `meta.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    pub format: u32,
    pub partitions: u32,
    pub id: String,
}

pub(crate) fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("p-{partition:04}"))
}

/// Reads `{dir}/meta.json`; `Ok(None)` if it does not exist.
pub(crate) fn read_meta(dir: &Path) -> Result<Option<Meta>, LogError> {
    let path = dir.join(META_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let meta: Meta = serde_json::from_slice(&text).map_err(|e| LogError::BadMeta {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if meta.format != FORMAT {
        return Err(LogError::BadMeta {
            path,
            reason: format!("unsupported format {} (expected {FORMAT})", meta.format),
        });
    }
    if meta.partitions == 0 {
        return Err(LogError::BadMeta {
            path,
            reason: "partition count is 0".into(),
        });
    }
    Ok(Some(meta))
}

/// Opens the log in `dir`, creating it (meta file and partition directories) if
/// missing. Safe against concurrent creators: the meta file is written to a
/// temporary file and hard-linked into place (which fails if another process won
/// the race, whose meta file is then used).
pub(crate) fn open_or_create_meta(dir: &Path, partitions: u32) -> Result<Meta, LogError> {
    let meta_path = dir.join(META_FILE);
    if partitions == 0 {
        return Err(LogError::BadMeta {
            path: meta_path,
            reason: "cannot create a log with 0 partitions".into(),
        });
    }
    let meta = if let Some(m) = read_meta(dir)? {
        m
    } else {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let fresh = Meta {
            format: FORMAT,
            partitions,
            id: format!("{:016x}", rand::random::<u64>()),
        };
        let tmp = dir.join(format!(
            ".meta.json.{}.{}.tmp",
            std::process::id(),
            fresh.id
        ));
        let mut text = serde_json::to_vec(&fresh).expect("meta serializes");
        text.push(b'\n');
        write_file_synced(&tmp, &text)?;
        // A hard link fails if the meta file exists (another process won the race).
        // File systems without hard links: fall back to a rename if still absent.
        let result = match fs::hard_link(&tmp, &meta_path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists && !meta_path.exists() => {
                fs::rename(&tmp, &meta_path).map_err(|e| LogError::io(&meta_path, e))
            }
            _ => Ok(()),
        };
        let _ = fs::remove_file(&tmp);
        result?;
        sync_dir(dir)?;
        read_meta(dir)?.ok_or_else(|| LogError::BadMeta {
            path: meta_path.clone(),
            reason: "meta file vanished right after creation".into(),
        })?
    };
    if meta.partitions != partitions {
        return Err(LogError::PartitionMismatch {
            dir: dir.to_path_buf(),
            existing: meta.partitions,
            requested: partitions,
        });
    }
    for p in 0..partitions {
        let pd = partition_dir(dir, p);
        fs::create_dir_all(&pd).map_err(|e| LogError::io(&pd, e))?;
    }
    Ok(meta)
}

fn write_file_synced(path: &Path, data: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(|e| LogError::io(path, e))?;
    f.write_all(data).map_err(|e| LogError::io(path, e))?;
    f.sync_all().map_err(|e| LogError::io(path, e))
}

/// fsync a directory so that newly created entries survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    match fs::File::open(dir).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        // Some file systems refuse fsync on directories; nothing more we can do.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(LogError::io(dir, e)),
    }
}

#[cfg(test)]
mod tests;
