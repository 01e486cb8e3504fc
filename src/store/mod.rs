//! The results store: one redb file with final window results, positions, the event-time
//! index, dead letters, late-event records and output versions.
//!
//! Exactly-once effect: [`Store::commit`] writes a batch's final windows together with the
//! positions the pipeline resumes from, in one write transaction. Window rows are keyed by
//! `(version, aggregate, size, window start, key)` and a window is rewritten by deleting its
//! key range first, so writing the same window twice leaves the same bytes.
//!
//! Values are bincode 2.0.1 behind a one-byte format version ([`FORMAT`]).

pub mod compare;
mod declared;
mod fingerprint;
mod rows;
mod sums;

pub use declared::{DeclaredTotal, DeclaredWindow};
pub(crate) use fingerprint::of_rows as hash_rows;
pub use fingerprint::{WindowPrint, digest, export_fields, hex};
pub use rows::{
    Aggregate, CatalogueEpoch, CountRow, DEAD_LETTER_RAW_BYTES, DeadLetter, LateRecord, Outcome,
    PartitionPosition, ProductRow, QueryRow, RatedRow, RatingRow, ReplayRecord, Row, SalesRow,
    VersionInfo, VersionState, WindowRows, review_rows_of, rows_of,
};
pub use sums::{RangeSums, SumsSizes};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::review::agg::ReviewFinal;
use crate::stream::Stream;
use crate::window::FinalWindow;

/// Format byte in front of every stored value.
pub const FORMAT: u8 = 1;

type ResultKey<'a> = (&'a str, u8, i64, i64, &'a str);
/// Prefix of the scratch versions in-place corrections compute into (never listed).
pub const SCRATCH_PREFIX: &str = "_replay-";

const RESULTS: TableDefinition<ResultKey, &[u8]> = TableDefinition::new("results");
const POSITIONS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("positions");
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
/// Event-time index: (partition, offset) → max event time of the partition before offset.
const EVENT_INDEX: TableDefinition<(u32, u64), i64> = TableDefinition::new("event_time_index");
const DEAD_LETTERS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("dead_letters");
/// The catalogue epochs of a version's catalogue part: `(version, epoch)`.
const CATALOGUE_EPOCHS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("catalogue_epochs");
/// Dead letters of the streams other than the events: `(stream, partition, offset)`.
const STREAM_DEAD_LETTERS: TableDefinition<(&str, u32, u64), &[u8]> =
    TableDefinition::new("stream_dead_letters");
const LATE: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("late_events");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const REPLAYS: TableDefinition<u64, &[u8]> = TableDefinition::new("replays");
/// Content hash of each final window: (version, size, start) → xxh3-128 of its canonical
/// export rows (see [`fingerprint`]), written in the transaction that writes the window.
const FINGERPRINTS: TableDefinition<(&str, i64, i64), u128> = TableDefinition::new("fingerprints");
/// The diff of each in-place correction (and dry run with `--diff`): replay id → JSON of
/// its [`compare::Comparison`], written with the replay's end.
const REPLAY_DIFFS: TableDefinition<u64, &[u8]> = TableDefinition::new("replay_diffs");
/// The full diff beside the bounded one: (replay id, n) → JSON of the n-th differing
/// window's [`compare::WindowDiff`] with every changed row.
const REPLAY_DIFF_WINDOWS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("replay_diff_windows");
/// A merger's open state per version (`kappa run --role merger`).
const MERGER: TableDefinition<&str, &[u8]> = TableDefinition::new("merger_state");

/// Failures at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the file open.
    #[error(
        "the store {0} is in use by another kappa process (is `kappa run` serving? use its HTTP API, or stop it)"
    )]
    Locked(PathBuf),
    /// redb refused to open the file.
    #[error("cannot open the store {path}: {cause}")]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: redb::DatabaseError,
    },
    /// The file is damaged beyond what redb's recovery handles.
    #[error(
        "the store {0} is corrupt (redb could not read its own structures): restore it from a backup, or move it away and rebuild the results from the log (`kappa run` recomputes them)"
    )]
    Damaged(PathBuf),
    /// A redb operation failed.
    #[error("store error: {0}")]
    Redb(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("corrupt value in table {table}: {reason}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The store belongs to another log or configuration, or the request is refused in
    /// the state the store is in (a 409 over HTTP).
    #[error("{0}")]
    Mismatch(String),
    /// No such output version (a 404 over HTTP).
    #[error("no output version {0}")]
    NoVersion(String),
    /// The database is closed for a reopen after an I/O failure (disk full, …).
    #[error("the store is closed after an I/O failure and is being reopened")]
    Closed,
    /// The directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            bincode::serde::decode_from_slice(rest, bincode::config::standard())
                .map(|(v, _)| v)
                .map_err(|e| StoreError::Corrupt {
                    table,
                    reason: e.to_string(),
                })
        }
        Some((f, _)) => Err(StoreError::Corrupt {
            table,
            reason: format!("unknown format version {f}"),
        }),
        None => Err(StoreError::Corrupt {
            table,
            reason: "empty value".into(),
        }),
    }
}

/// A stored [`VersionInfo`], whichever layout wrote it.
fn version_info(bytes: &[u8]) -> Result<VersionInfo, StoreError> {
    decode::<VersionInfo>("versions", bytes).or_else(|e| {
        decode::<rows::VersionInfoV1>("versions", bytes)
            .map_err(|_| e)
            .map(Into::into)
    })
}

/// META key of the log incarnation a version (one creation of it) reads.
fn incarnation_key(version: &str, created_ms: i64) -> String {
    format!("incarnation/{version}/{created_ms}")
}

/// What a promotion gate found, comparing the new version with the serving one.
#[derive(Debug, Clone, Copy)]
pub struct GateCheck<'a> {
    /// The serving version it was compared with (the promotion is refused if another
    /// one is serving by the time it would happen).
    pub against: &'a str,
    /// Why the gate does not hold; `None` when it does.
    pub refusal: Option<&'a str>,
}

/// How a replay ends, written in one transaction with its history record (so the history
/// never disagrees with the store, whatever instant the process dies at).
#[derive(Debug, Clone, Copy)]
pub enum ReplayEnd<'a> {
    /// A new version caught up: it is [`VersionState::Ready`], and serving if its replay
    /// promised so.
    CaughtUp {
        /// The version built.
        version: &'a str,
        /// Its promotion gate's verdict (`--promote-if`), when it has one.
        gate: Option<GateCheck<'a>>,
    },
    /// An in-place correction: the scratch version's final windows with starts in
    /// `[from_ms, to_ms)` replace its target's, and the scratch version is removed. What
    /// it changes (target → scratch, [`compare::compare`]) is recorded as the
    /// replay's diff, computed in the same transaction.
    Swap {
        /// The scratch version.
        scratch: &'a str,
        /// First window start rewritten.
        from_ms: i64,
        /// Windows starting at or after this are left alone.
        to_ms: i64,
        /// An audit: the target's fingerprints are recomputed from its rows, and nothing
        /// is swapped when nothing differs.
        audit: bool,
        /// The declared aggregates' windows compared (target → scratch), recorded with the
        /// diff (computed before: they are read by content, not in this transaction).
        declared: Option<&'a compare::DeclaredComparison>,
    },
    /// A dry run of an in-place correction (`--dry-run --diff`): what the swap would
    /// change is recorded as the replay's diff, and the scratch version is removed.
    DryRun {
        /// The scratch version.
        scratch: &'a str,
        /// First window start compared.
        from_ms: i64,
        /// Windows starting at or after this are not compared.
        to_ms: i64,
        /// An audit (see `Swap`).
        audit: bool,
        /// The declared aggregates' windows compared (see `Swap`).
        declared: Option<&'a compare::DeclaredComparison>,
    },
    /// Cancelled or failed: what the replay built is removed.
    Discard {
        /// The new or scratch version.
        version: &'a str,
    },
    /// Nothing to change but the record.
    RecordOnly,
}

impl<'a> ReplayEnd<'a> {
    /// A correction's end with its declared windows' comparison (other ends as they are).
    #[must_use]
    pub fn with_declared(mut self, d: Option<&'a compare::DeclaredComparison>) -> Self {
        if let Self::Swap { declared, .. } | Self::DryRun { declared, .. } = &mut self {
            *declared = d;
        }
        self
    }
}

/// Everything one pipeline batch makes durable, atomically.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// Output version written.
    pub version: &'a str,
    /// Windows that became final (the events').
    pub finals: &'a [FinalWindow],
    /// Windows that became final (the reviews', committed under `{version}/reviews`).
    pub review_finals: &'a [ReviewFinal],
    /// Per-partition resume information.
    pub positions: &'a [PartitionPosition],
    /// Every window ending at or before this is final.
    pub finalized_through: i64,
    /// New event-time index checkpoints `(partition, offset, max event time before offset)`.
    pub checkpoints: &'a [(u32, u64, i64)],
    /// Invalid records.
    pub dead_letters: &'a [DeadLetter],
    /// Late events.
    pub late: &'a [LateRecord],
    /// A merger's open state, written with its results and positions.
    pub merger_state: Option<&'a [u8]>,
    /// New catalogue epochs (the catalogue's part: `{version}/products`).
    pub epochs: &'a [(u32, CatalogueEpoch)],
    /// Windows of the declared aggregates that became final.
    pub declared: &'a [crate::declared::DeclaredFinal],
    /// Every declared window ending at or before this is final (none: no declared core).
    pub declared_through: Option<i64>,
    /// A merger's open state of the events' declared aggregates (kept under the version's
    /// [`crate::scale::declared_part`]).
    pub declared_merger_state: Option<&'a [u8]>,
}

/// Handle on the redb file; cheap to clone, shareable between the pipeline (writer) and
/// the HTTP server (readers).
#[derive(Clone)]
pub struct Store {
    /// `None` while closed for a reopen ([`Store::reopen`]).
    db: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Result type of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl Store {
    /// Opens (creating if needed) the store file. Fails with [`StoreError::Locked`] when
    /// another process holds it.
    ///
    /// # Errors
    /// Locked, unreadable or corrupt file.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // redb answers most damage with an error, but some with a panic: both become one
        // clear error, never a crash.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(|| Database::create(path));
        std::panic::set_hook(hook);
        let opened = opened.map_err(|_| StoreError::Damaged(path.to_path_buf()))?;
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
                StoreError::Damaged(path.to_path_buf())
            }
            cause => StoreError::Open {
                path: path.to_path_buf(),
                cause,
            },
        })?;
        let store = Self {
            db: Arc::new(std::sync::RwLock::new(Some(Arc::new(db)))),
            path: path.to_path_buf(),
        };
        let tx = store.db()?.begin_write()?;
        {
            tx.open_table(RESULTS)?;
            tx.open_table(POSITIONS)?;
            tx.open_table(VERSIONS)?;
            tx.open_table(EVENT_INDEX)?;
            tx.open_table(DEAD_LETTERS)?;
            tx.open_table(STREAM_DEAD_LETTERS)?;
            tx.open_table(CATALOGUE_EPOCHS)?;
            tx.open_table(LATE)?;
            tx.open_table(META)?;
            tx.open_table(REPLAYS)?;
            tx.open_table(FINGERPRINTS)?;
            tx.open_table(REPLAY_DIFFS)?;
            tx.open_table(REPLAY_DIFF_WINDOWS)?;
            backfill_fingerprints(&tx)?;
        }
        tx.commit()?;
        Ok(store)
    }

    fn db(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Whether `e` is a failure of the storage itself (an I/O error such as a full disk)
    /// after which redb wants the database closed and reopened, rather than a problem with
    /// the data or the request.
    #[must_use]
    pub fn is_io_failure(e: &StoreError) -> bool {
        matches!(e, StoreError::Redb(_) | StoreError::Closed)
    }

    /// Closes and reopens the file (redb refuses every operation after an I/O failure until
    /// then); recovery of the last committed state happens on open. Fails while another
    /// handle (an HTTP read in flight) still holds the old database: retry.
    ///
    /// # Errors
    /// The file cannot be opened yet.
    pub fn reopen(&self) -> Result<()> {
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(slot.take());
        match Database::create(&self.path) {
            Ok(db) => {
                *slot = Some(Arc::new(db));
                Ok(())
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Closed),
            Err(cause) => Err(StoreError::Open {
                path: self.path.clone(),
                cause,
            }),
        }
    }

    /// Path of the file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads a meta value.
    ///
    /// # Errors
    /// Store failure.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_string()))
    }

    /// Binds the store to one source log (`id`), or checks it is the one it was built from.
    ///
    /// # Errors
    /// [`StoreError::Mismatch`] when the store was built from another log.
    pub fn bind_source(&self, id: &str) -> Result<()> {
        self.bind_stream_source(Stream::Events, id)
    }

    /// [`Store::bind_source`] for the log of `stream`.
    ///
    /// # Errors
    /// [`StoreError::Mismatch`] when the store was built from another log.
    pub fn bind_stream_source(&self, stream: Stream, id: &str) -> Result<()> {
        let key = match stream {
            Stream::Events => "source".to_string(),
            other => format!("source/{other}"),
        };
        let tx = self.db()?.begin_write()?;
        {
            let mut t = tx.open_table(META)?;
            let existing = t.get(key.as_str())?.map(|v| v.value().to_string());
            match existing {
                Some(e) if e != id => {
                    return Err(StoreError::Mismatch(format!(
                        "the store {} holds results of log `{e}`, not of `{id}`: use another --data-dir (or remove the store to start over)",
                        self.path.display()
                    )));
                }
                Some(_) => {}
                None => {
                    t.insert(key.as_str(), id)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the incarnation `id` of the log (Kafka: the topic id) that the version
    /// created at `created_ms` reads, or checks it is the one recorded: the recorded id
    /// when it differs.
    ///
    /// # Errors
    /// Store failure.
    pub fn bind_incarnation(
        &self,
        version: &str,
        created_ms: i64,
        id: &str,
    ) -> Result<Option<String>> {
        let key = incarnation_key(version, created_ms);
        let tx = self.db()?.begin_write()?;
        let old = {
            let mut t = tx.open_table(META)?;
            let old = t.get(key.as_str())?.map(|v| v.value().to_string());
            if old.is_none() {
                t.insert(key.as_str(), id)?;
            }
            old
        };
        tx.commit()?;
        Ok(old.filter(|o| o != id))
    }

    /// The incarnation of the log (Kafka: topic id) version `info` recorded, if any.
    ///
    /// # Errors
    /// Store failure.
    pub fn incarnation(&self, info: &VersionInfo) -> Result<Option<String>> {
        self.meta(&incarnation_key(&info.name, info.created_ms))
    }

    /// Creates `version` with `info`, or checks that an existing one was built with the same
    /// pipeline configuration. The first version created becomes serving.
    ///
    /// # Errors
    /// [`StoreError::Mismatch`] if the configuration differs.
    pub fn ensure_version(&self, info: &VersionInfo) -> Result<VersionInfo> {
        let tx = self.db()?.begin_write()?;
        let out = {
            let mut t = tx.open_table(VERSIONS)?;
            let existing = t.get(info.name.as_str())?.map(|v| version_info(v.value()));
            if let Some(existing) = existing {
                let existing = existing?;
                if existing.config != info.config {
                    let remedy = match Stream::of_version(&info.name).0 {
                        Stream::Reviews => {
                            "recompute the reviews with it (`kappa replay --stream reviews`)"
                        }
                        _ => "replay into a new version",
                    };
                    return Err(StoreError::Mismatch(format!(
                        "output version {} was computed with {}; this run asks for {}: keep the configuration, or {remedy}",
                        info.name, existing.config, info.config
                    )));
                }
                existing
            } else {
                t.insert(info.name.as_str(), encode(info).as_slice())?;
                let mut m = tx.open_table(META)?;
                if m.get("serving")?.is_none() {
                    m.insert("serving", info.name.as_str())?;
                }
                info.clone()
            }
        };
        tx.commit()?;
        Ok(out)
    }

    /// The serving version (`v1` on a fresh store).
    ///
    /// # Errors
    /// Store failure.
    pub fn serving(&self) -> Result<String> {
        Ok(self.meta("serving")?.unwrap_or_else(|| "v1".to_string()))
    }

    /// All versions (by their names: a version's part of another stream, `v1/reviews`,
    /// is not one).
    ///
    /// # Errors
    /// Store failure.
    pub fn versions(&self) -> Result<Vec<VersionInfo>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(VERSIONS)?;
        // A version's other streams (`v1/reviews`) are parts of it, not versions.
        t.iter()?
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |(k, _)| !crate::stream::is_part(k.value()))
            })
            .map(|r| version_info(r?.1.value()))
            .collect()
    }

    /// A version's committed state: `(finalized_through, positions by partition)`, or
    /// `None` if it never committed.
    ///
    /// # Errors
    /// Store failure.
    pub fn load_state(&self, version: &str) -> Result<Option<(i64, Vec<PartitionPosition>)>> {
        let tx = self.db()?.begin_read()?;
        let v = tx.open_table(VERSIONS)?;
        let Some(info) = v
            .get(version)?
            .map(|g| version_info(g.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let t = tx.open_table(POSITIONS)?;
        let mut positions = Vec::new();
        for r in t.range((version, 0u32)..=(version, u32::MAX))? {
            positions.push(decode("positions", r?.1.value())?);
        }
        if positions.is_empty() {
            return Ok(None);
        }
        Ok(Some((info.finalized_through, positions)))
    }

    /// Makes one batch durable (see [`Commit`]).
    ///
    /// # Errors
    /// Store failure; nothing of the batch is then written.
    pub fn commit(&self, c: &Commit<'_>) -> Result<()> {
        self.commit_all(std::slice::from_ref(c))
    }

    /// Several versions' commits in one transaction (a merger's: every version it merges,
    /// with its positions on `kappa.partials` in one of them).
    ///
    /// # Errors
    /// Store failure (nothing is written then).
    pub fn commit_all(&self, commits: &[Commit<'_>]) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        for c in commits {
            let mut versions = tx.open_table(VERSIONS)?;
            let info = versions
                .get(c.version)?
                .map(|g| version_info(g.value()))
                .transpose()?;
            let Some(mut info) = info else {
                // Dropped while its pipeline was stopping: nothing of it is written, so no
                // rows or positions outlive the version.
                tracing::warn!(
                    "not committing for output version {}: it was dropped",
                    c.version
                );
                continue;
            };
            let old_through = info.finalized_through;
            info.finalized_through = c.finalized_through;
            versions.insert(c.version, encode(&info).as_slice())?;
            let mut results = tx.open_table(RESULTS)?;
            let mut prints = tx.open_table(FINGERPRINTS)?;
            let windows = (c.finals.iter())
                .map(|w| (w.size_ms, w.start_ms, rows::rows_of(w)))
                .chain(
                    (c.review_finals.iter())
                        .map(|w| (w.size_ms, w.start_ms, rows::review_rows_of(w))),
                );
            for (size, start, rows) in windows {
                write_window(&mut results, &mut prints, c.version, size, start, rows)?;
            }
            // Every key's sums of the final hours, and the rollups that became final.
            if !c.finals.is_empty() || c.finalized_through > old_through {
                let cal = crate::rollup::Calendar::of_fingerprint(&info.config);
                for w in c.finals {
                    if let Some(s) = &w.sums {
                        sums::write_hour(&tx, c.version, &cal, w.start_ms, s)?;
                    }
                }
                sums::roll_up_after_commit(&tx, c.version, &cal, old_through, c.finalized_through)?;
            }
            let mut pos = tx.open_table(POSITIONS)?;
            for p in c.positions {
                pos.insert((c.version, p.partition), encode(p).as_slice())?;
            }
            let mut idx = tx.open_table(EVENT_INDEX)?;
            for &(p, off, ts) in c.checkpoints {
                idx.insert((p, off), ts)?;
            }
            match Stream::of_version(c.version).0 {
                Stream::Events => {
                    let mut dl = tx.open_table(DEAD_LETTERS)?;
                    for d in c.dead_letters {
                        dl.insert((d.partition, d.offset), encode(d).as_slice())?;
                    }
                }
                stream => {
                    let mut dl = tx.open_table(STREAM_DEAD_LETTERS)?;
                    for d in c.dead_letters {
                        dl.insert(
                            (stream.as_str(), d.partition, d.offset),
                            encode(d).as_slice(),
                        )?;
                    }
                }
            }
            let mut late = tx.open_table(LATE)?;
            for l in c.late {
                late.insert((c.version, l.partition, l.offset), encode(l).as_slice())?;
            }
            if let Some(state) = c.merger_state {
                tx.open_table(MERGER)?.insert(c.version, state)?;
            }
            if let Some(state) = c.declared_merger_state {
                let key = crate::scale::declared_part(c.version);
                tx.open_table(MERGER)?.insert(key.as_str(), state)?;
            }
            let mut epochs = tx.open_table(CATALOGUE_EPOCHS)?;
            for (n, e) in c.epochs {
                epochs.insert((c.version, *n), encode(e).as_slice())?;
            }
            if c.declared_through.is_some() || !c.declared.is_empty() {
                // Buckets are in the zone of the version a part (the clicks') is part of.
                let base = match Stream::of_version(c.version) {
                    (Stream::Events, _) => None,
                    (_, base) => versions
                        .get(base)?
                        .map(|g| version_info(g.value()))
                        .transpose()?,
                };
                let zone = base.as_ref().map_or(info.config.as_str(), |b| &b.config);
                let cal = crate::rollup::Calendar::of_fingerprint(zone);
                let at = (c.version, info.config.as_str(), &cal);
                declared::write(&tx, at, c.declared, c.declared_through)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A merger's state for `version` (or its [`crate::scale::declared_part`]), as last
    /// committed.
    ///
    /// # Errors
    /// Store failure.
    pub fn merger_state(&self, version: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db()?.begin_read()?;
        let t = match tx.open_table(MERGER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(version)?.map(|g| g.value().to_vec()))
    }

    /// Final windows of one aggregate and size with `from <= start < to`, oldest first, at
    /// most `limit` windows.
    ///
    /// # Errors
    /// Store failure.
    pub fn windows(
        &self,
        version: &str,
        agg: Aggregate,
        size_ms: i64,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<WindowRows>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(RESULTS)?;
        let mut out: Vec<WindowRows> = Vec::new();
        for r in
            t.range((version, agg as u8, size_ms, from, "")..(version, agg as u8, size_ms, to, ""))?
        {
            let (k, v) = r?;
            let (_, _, _, start, key) = k.value();
            if out.last().is_none_or(|w| w.start_ms != start) {
                if out.len() == limit {
                    break;
                }
                out.push(WindowRows {
                    aggregate: agg,
                    size_ms,
                    start_ms: start,
                    rows: Vec::new(),
                });
            }
            let row = Row::decode(agg, key, v.value())?;
            out.last_mut().expect("pushed above").rows.push(row);
        }
        Ok(out)
    }

    /// Start of the latest final window of `size_ms` (using the funnel aggregate, which every
    /// final window has).
    ///
    /// # Errors
    /// Store failure.
    pub fn latest_window(&self, version: &str, size_ms: i64) -> Result<Option<i64>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(RESULTS)?;
        let agg = marker(version);
        let last = t
            .range((version, agg, size_ms, i64::MIN, "")..(version, agg, size_ms, i64::MAX, ""))?
            .next_back();
        Ok(match last {
            Some(r) => Some(r?.0.value().3),
            None => None,
        })
    }

    /// Window sizes (ms) with at least one final window in `version`.
    ///
    /// # Errors
    /// Store failure.
    pub fn sizes(&self, version: &str) -> Result<Vec<i64>> {
        let tx = self.db()?.begin_read()?;
        sizes_in(&tx.open_table(RESULTS)?, version)
    }

    /// Visits every final row of `version` in key order (aggregate, size, start, key).
    ///
    /// # Errors
    /// Store failure, or what `f` returns.
    pub fn for_each_row<E: From<StoreError>>(
        &self,
        version: &str,
        mut f: impl FnMut(Aggregate, i64, i64, &Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let tx = self.db()?.begin_read().map_err(StoreError::from)?;
        let t = tx.open_table(RESULTS).map_err(StoreError::from)?;
        for r in t
            .range(
                (version, 0u8, i64::MIN, i64::MIN, "")..(version, u8::MAX, i64::MIN, i64::MIN, ""),
            )
            .map_err(StoreError::from)?
        {
            let (k, v) = r.map_err(StoreError::from)?;
            let (_, agg, size, start, key) = k.value();
            let agg = Aggregate::from_u8(agg).ok_or_else(|| StoreError::Corrupt {
                table: "results",
                reason: format!("unknown aggregate {agg}"),
            })?;
            let row = Row::decode(agg, key, v.value())?;
            f(agg, size, start, &row)?;
        }
        Ok(())
    }

    /// Dead letters of the events after `(partition, offset)` (exclusive), at most `limit`.
    ///
    /// # Errors
    /// Store failure.
    pub fn dead_letters(&self, after: Option<(u32, u64)>, limit: usize) -> Result<Vec<DeadLetter>> {
        self.stream_dead_letters(Stream::Events, after, limit)
    }

    /// Dead letters of `stream` after `(partition, offset)` (exclusive), at most `limit`.
    ///
    /// # Errors
    /// Store failure.
    pub fn stream_dead_letters(
        &self,
        stream: Stream,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let tx = self.db()?.begin_read()?;
        let (p, o) = after.map_or((0, 0), |(p, o)| (p, o.saturating_add(1)));
        if stream == Stream::Events {
            let t = tx.open_table(DEAD_LETTERS)?;
            return t
                .range((p, o)..)?
                .take(limit)
                .map(|r| decode("dead_letters", r?.1.value()))
                .collect();
        }
        let t = tx.open_table(STREAM_DEAD_LETTERS)?;
        let name = stream.as_str();
        t.range((name, p, o)..=(name, u32::MAX, u64::MAX))?
            .take(limit)
            .map(|r| decode("dead_letters", r?.1.value()))
            .collect()
    }

    /// Number of dead letters and of late-event records of `version`.
    ///
    /// # Errors
    /// Store failure.
    pub fn counts(&self, version: &str) -> Result<(u64, u64)> {
        let tx = self.db()?.begin_read()?;
        let dl = tx.open_table(DEAD_LETTERS)?.len()?;
        let late = tx
            .open_table(LATE)?
            .range((version, 0u32, 0u64)..=(version, u32::MAX, u64::MAX))?
            .count() as u64;
        Ok((dl, late))
    }

    /// Late-event records of `version`, in (partition, offset) order.
    ///
    /// # Errors
    /// Store failure.
    pub fn late_events(&self, version: &str, limit: usize) -> Result<Vec<LateRecord>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(LATE)?;
        t.range((version, 0u32, 0u64)..=(version, u32::MAX, u64::MAX))?
            .take(limit)
            .map(|r| decode("late_events", r?.1.value()))
            .collect()
    }

    /// The catalogue epochs committed for `version` (a catalogue part), in order.
    ///
    /// # Errors
    /// Store failure.
    pub fn catalogue_epochs(&self, version: &str) -> Result<Vec<CatalogueEpoch>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(CATALOGUE_EPOCHS)?;
        t.range((version, 0u32)..=(version, u32::MAX))?
            .map(|r| decode("catalogue_epochs", r?.1.value()))
            .collect()
    }

    /// The late-event records of `version` on `partition` in `[from, to)`.
    ///
    /// # Errors
    /// Store failure.
    pub fn late_between(
        &self,
        version: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<LateRecord>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(LATE)?;
        t.range((version, partition, from)..(version, partition, to))?
            .map(|r| decode("late_events", r?.1.value()))
            .collect()
    }

    /// Creates `info.name` with positions to start from (a replay's starting point), in one
    /// transaction. Refused when the version exists.
    ///
    /// # Errors
    /// [`StoreError::Mismatch`] when the version exists; store failure.
    pub fn create_version(
        &self,
        info: &VersionInfo,
        positions: &[PartitionPosition],
    ) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        {
            let mut v = tx.open_table(VERSIONS)?;
            if v.get(info.name.as_str())?.is_some() {
                return Err(StoreError::Mismatch(format!(
                    "output version {} already exists: pick a new name, or drop it first (`kappa versions drop {}`)",
                    info.name, info.name
                )));
            }
            v.insert(info.name.as_str(), encode(info).as_slice())?;
            let mut pos = tx.open_table(POSITIONS)?;
            for p in positions {
                pos.insert((info.name.as_str(), p.partition), encode(p).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// One version's description, if it exists.
    ///
    /// # Errors
    /// Store failure.
    pub fn version(&self, name: &str) -> Result<Option<VersionInfo>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(VERSIONS)?;
        t.get(name)?.map(|g| version_info(g.value())).transpose()
    }

    /// Makes `name` the serving version (atomically: readers see the old or the new one).
    /// Checked in the same transaction: it exists and is complete ([`VersionState::Ready`]),
    /// and no in-place correction of the version serving now is running (it would land in
    /// a version nobody reads any more).
    ///
    /// # Errors
    /// Unknown version, one being built or dropped, a correction in flight; store failure.
    pub fn promote(&self, name: &str) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        {
            let versions = tx.open_table(VERSIONS)?;
            let info = user_version(&versions, name)?;
            let mut meta = tx.open_table(META)?;
            let serving = meta.get("serving")?.map(|v| v.value().to_string());
            refuse_unless_ready(&info, "promoted")?;
            if serving.as_deref() != Some(name)
                && let Some((replay, target)) = correction_of(&versions, serving.as_deref())?
            {
                return Err(StoreError::Mismatch(format!(
                    "replay {replay} is correcting {target} in place: promoting {name} now would leave that correction in a version nobody reads; wait for it to complete (`kappa replay status {replay}`) or cancel it (`kappa replay cancel {replay}`)"
                )));
            }
            meta.insert("serving", name)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a version — its results, positions, late records and description — in one
    /// transaction that also checks it may go: not serving, not being corrected. For a
    /// process that holds the store alone (no replay can be running elsewhere): a version a
    /// dead process left being built goes too, and its replay is recorded `cancelled`.
    ///
    /// # Errors
    /// Serving, unknown or busy version; store failure.
    pub fn drop_version(&self, name: &str) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        let info = check_droppable(&tx, name, true)?;
        if let VersionState::Building { replay, .. } = info.state {
            let mut replays = tx.open_table(REPLAYS)?;
            let record = replays
                .get(replay)?
                .map(|g| decode::<ReplayRecord>("replays", g.value()))
                .transpose()?;
            if let Some(mut r) = record {
                r.outcome = Outcome::Cancelled(Some(format!("{name} was dropped")));
                r.ended_ms = Some(chrono::Utc::now().timestamp_millis());
                replays.insert(replay, encode(&r).as_slice())?;
            }
        }
        remove_version(&tx, name)?;
        tx.commit()?;
        Ok(())
    }

    /// First half of dropping a version a pipeline computes: checks it may go (as
    /// [`Store::drop_version`]) and marks it [`VersionState::Dropping`] in one transaction,
    /// so that nothing promotes it while its pipeline stops; [`Store::remove_version`] then
    /// deletes it (or the next start does, see [`Store::remove_unfinished`]).
    ///
    /// # Errors
    /// Serving, unknown or busy version; store failure.
    pub fn begin_drop(&self, name: &str) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        let mut info = check_droppable(&tx, name, false)?;
        info.state = VersionState::Dropping;
        tx.open_table(VERSIONS)?
            .insert(name, encode(&info).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a version without checks: the second half of [`Store::begin_drop`].
    ///
    /// # Errors
    /// Store failure.
    pub fn remove_version(&self, name: &str) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        remove_version(&tx, name)?;
        tx.commit()?;
        Ok(())
    }

    /// Puts version `from` (every row, position, fingerprint and late record of it) in the
    /// place of version `to`, in one transaction: what was `to` is gone, `from` no longer
    /// exists. A replay of one stream (`kappa replay --stream reviews`) computes into a
    /// scratch part and moves it over the version's part this way.
    ///
    /// # Errors
    /// Store failure; `from` does not exist.
    pub fn replace_version(&self, from: &str, to: &str) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        {
            let versions = tx.open_table(VERSIONS)?;
            let mut info = versions
                .get(from)?
                .map(|g| version_info(g.value()))
                .transpose()?
                .ok_or_else(|| StoreError::NoVersion(from.to_string()))?;
            drop(versions);
            remove_version(&tx, to)?;
            info.name = to.to_string();
            tx.open_table(VERSIONS)?
                .insert(to, encode(&info).as_slice())?;
            let mut results = tx.open_table(RESULTS)?;
            let rows: Vec<(u8, i64, i64, String, Vec<u8>)> = results
                .range(
                    (from, 0u8, i64::MIN, i64::MIN, "")..(from, u8::MAX, i64::MAX, i64::MAX, ""),
                )?
                .map(|r| {
                    let (k, v) = r?;
                    let (_, a, size, start, key) = k.value();
                    Ok((a, size, start, key.to_string(), v.value().to_vec()))
                })
                .collect::<Result<_>>()?;
            for (a, size, start, key, value) in rows {
                results.insert((to, a, size, start, key.as_str()), value.as_slice())?;
            }
            let mut pos = tx.open_table(POSITIONS)?;
            let moved: Vec<(u32, Vec<u8>)> = pos
                .range((from, 0u32)..=(from, u32::MAX))?
                .map(|r| {
                    let (k, v) = r?;
                    Ok((k.value().1, v.value().to_vec()))
                })
                .collect::<Result<_>>()?;
            for (p, v) in moved {
                pos.insert((to, p), v.as_slice())?;
            }
            let mut late = tx.open_table(LATE)?;
            let moved: Vec<(u32, u64, Vec<u8>)> = late
                .range((from, 0u32, 0u64)..=(from, u32::MAX, u64::MAX))?
                .map(|r| {
                    let (k, v) = r?;
                    let (_, p, o) = k.value();
                    Ok((p, o, v.value().to_vec()))
                })
                .collect::<Result<_>>()?;
            for (p, o, v) in moved {
                late.insert((to, p, o), v.as_slice())?;
            }
            let mut prints = tx.open_table(FINGERPRINTS)?;
            let moved: Vec<(i64, i64, u128)> = prints
                .range((from, i64::MIN, i64::MIN)..=(from, i64::MAX, i64::MAX))?
                .map(|r| {
                    let (k, v) = r?;
                    let (_, size, start) = k.value();
                    Ok((size, start, v.value()))
                })
                .collect::<Result<_>>()?;
            for (size, start, h) in moved {
                prints.insert((to, size, start), h)?;
            }
        }
        remove_version(&tx, from)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes what a process that died left half-done: versions being dropped, and the
    /// scratch versions of in-place corrections (the serving version was never
    /// half-written: a swap is one transaction).
    ///
    /// # Errors
    /// Store failure.
    pub fn remove_unfinished(&self) -> Result<()> {
        for v in self.versions()? {
            if matches!(
                v.state,
                VersionState::Dropping | VersionState::Correcting { .. }
            ) {
                self.remove_version(&v.name)?;
            }
        }
        Ok(())
    }

    /// Ends a replay: `end`'s change to the versions and the replay's history record, in
    /// one transaction. A new version promised to be promoted is not, when an in-place
    /// correction of the serving version is running (the correction would land in a version
    /// nobody reads): the record's outcome then says so. Returns the windows in the record
    /// (for a swap, those it rewrote).
    ///
    /// # Errors
    /// Unknown version; store failure (nothing is written then).
    pub fn end_replay(&self, record: &mut ReplayRecord, end: ReplayEnd<'_>) -> Result<u64> {
        let tx = self.db()?.begin_write()?;
        match end {
            ReplayEnd::CaughtUp { version, gate } => {
                let mut versions = tx.open_table(VERSIONS)?;
                let mut info = user_version(&versions, version)?;
                if let VersionState::Building { promote: true, .. } = info.state {
                    let mut meta = tx.open_table(META)?;
                    let serving = meta.get("serving")?.map(|v| v.value().to_string());
                    let refused = match (correction_of(&versions, serving.as_deref())?, gate) {
                        (Some((replay, target)), _) => Some(format!(
                            "replay {replay} was correcting {target} in place (promote it with `kappa versions promote {version}`)"
                        )),
                        (None, Some(g)) if serving.as_deref() != Some(g.against) => Some(format!(
                            "--promote-if compared {version} with {}, but {} is serving now (compare again, then `kappa versions promote {version}`)",
                            g.against,
                            serving.as_deref().unwrap_or("no version")
                        )),
                        (
                            None,
                            Some(GateCheck {
                                refusal: Some(why), ..
                            }),
                        ) => Some(why.to_string()),
                        (None, _) => None,
                    };
                    match refused {
                        Some(why) => record.outcome = Outcome::CaughtUpNotPromoted(why),
                        None => {
                            meta.insert("serving", version)?;
                        }
                    }
                }
                info.state = VersionState::Ready;
                versions.insert(version, encode(&info).as_slice())?;
            }
            ReplayEnd::Swap {
                scratch,
                from_ms,
                to_ms,
                audit,
                declared,
            }
            | ReplayEnd::DryRun {
                scratch,
                from_ms,
                to_ms,
                audit,
                declared,
            } => {
                let info = tx
                    .open_table(VERSIONS)?
                    .get(scratch)?
                    .map(|g| version_info(g.value()))
                    .transpose()?
                    .ok_or_else(|| StoreError::NoVersion(scratch.to_string()))?;
                let VersionState::Correcting { target, .. } = info.state else {
                    return Err(StoreError::Mismatch(format!(
                        "{scratch} is not the scratch version of a correction"
                    )));
                };
                let diff = record_diff(
                    &tx,
                    record.id,
                    (&target, scratch),
                    (from_ms, to_ms),
                    (audit, declared),
                )?;
                let nothing_to_repair = audit
                    && diff.summary.windows_differing == 0
                    && declared.is_none_or(|d| d.differing_count == 0);
                if matches!(end, ReplayEnd::Swap { .. }) && !nothing_to_repair {
                    record.windows = copy_windows(&tx, scratch, &target, from_ms, to_ms)?;
                }
                remove_version(&tx, scratch)?;
            }
            ReplayEnd::Discard { version } => remove_version(&tx, version)?,
            ReplayEnd::RecordOnly => {}
        }
        tx.open_table(REPLAYS)?
            .insert(record.id, encode(&*record).as_slice())?;
        tx.commit()?;
        Ok(record.windows)
    }

    /// Bytes of results, late records, hourly sums and declared windows a version holds
    /// (keys and values; the file's own overhead is not counted).
    ///
    /// # Errors
    /// Store failure.
    pub fn version_bytes(&self, name: &str) -> Result<u64> {
        let tx = self.db()?.begin_read()?;
        let mut n = 0u64;
        for r in tx
            .open_table(RESULTS)?
            .range((name, 0u8, i64::MIN, i64::MIN, "")..(name, u8::MAX, i64::MAX, i64::MAX, ""))?
        {
            let (k, v) = r?;
            n += (k.value().0.len() + 21 + k.value().4.len() + v.value().len()) as u64;
        }
        for r in tx
            .open_table(LATE)?
            .range((name, 0u32, 0u64)..=(name, u32::MAX, u64::MAX))?
        {
            n += (name.len() + 12 + r?.1.value().len()) as u64;
        }
        // Its declared aggregates' windows, the clicks' ones included.
        for part in [name.to_string(), Stream::Clicks.version(name)] {
            n += declared::bytes(&tx, &part)?;
        }
        Ok(n + self.sums_bytes(name)?)
    }

    /// Number of final windows of `version` over every size in `sizes_ms`.
    ///
    /// # Errors
    /// Store failure.
    pub fn window_count_all(&self, version: &str, sizes_ms: &[i64]) -> Result<u64> {
        sizes_ms
            .iter()
            .map(|&size| self.window_count(version, size, i64::MIN, i64::MAX))
            .sum()
    }

    /// Number of final windows of `size_ms` in `version` starting in `[from, to)`.
    ///
    /// # Errors
    /// Store failure.
    pub fn window_count(&self, version: &str, size_ms: i64, from: i64, to: i64) -> Result<u64> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(RESULTS)?;
        let a = marker(version);
        let mut n = 0;
        let mut last = None;
        for r in t.range((version, a, size_ms, from, "")..(version, a, size_ms, to, ""))? {
            let start = r?.0.value().3;
            if last != Some(start) {
                n += 1;
                last = Some(start);
            }
        }
        Ok(n)
    }

    /// Records (or updates) one replay in the history.
    ///
    /// # Errors
    /// Store failure.
    pub fn record_replay(&self, r: &ReplayRecord) -> Result<()> {
        self.record_replay_gated(r, None)
    }

    /// [`Store::record_replay`], with the promotion gate (`--promote-if`) of its new
    /// version kept beside it, so that a replay carried on after a restart keeps it.
    ///
    /// # Errors
    /// Store failure.
    pub fn record_replay_gated(&self, r: &ReplayRecord, gate: Option<&str>) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        tx.open_table(REPLAYS)?.insert(r.id, encode(r).as_slice())?;
        if let Some(g) = gate {
            tx.open_table(META)?
                .insert(format!("promote-if/{}", r.id).as_str(), g)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The promotion gate replay `id` was started with, if any.
    ///
    /// # Errors
    /// Store failure.
    pub fn replay_gate(&self, id: u64) -> Result<Option<String>> {
        self.meta(&format!("promote-if/{id}"))
    }

    /// The replay history, oldest first.
    ///
    /// # Errors
    /// Store failure.
    pub fn replays(&self) -> Result<Vec<ReplayRecord>> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(REPLAYS)?;
        t.iter()?.map(|r| decode("replays", r?.1.value())).collect()
    }

    /// Fingerprints of the final windows of `version` starting in `[from, to)`, every size,
    /// in (size, start) order.
    ///
    /// # Errors
    /// Store failure.
    pub fn fingerprints(&self, version: &str, from: i64, to: i64) -> Result<Vec<WindowPrint>> {
        let tx = self.db()?.begin_read()?;
        prints_in(&tx.open_table(FINGERPRINTS)?, version, from, to)
    }

    /// The diff recorded with replay `id` (JSON of a [`compare::Comparison`]).
    ///
    /// # Errors
    /// Store failure.
    pub fn replay_diff(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let tx = self.db()?.begin_read()?;
        Ok(tx
            .open_table(REPLAY_DIFFS)?
            .get(id)?
            .map(|g| g.value().to_vec()))
    }

    /// A page of the full diff recorded with replay `id`: its differing windows
    /// `offset..offset + limit` (JSON of [`compare::WindowDiff`], every changed row
    /// listed), and how many there are.
    ///
    /// # Errors
    /// Store failure.
    pub fn replay_diff_windows(
        &self,
        id: u64,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Vec<u8>>, u64)> {
        let tx = self.db()?.begin_read()?;
        let t = tx.open_table(REPLAY_DIFF_WINDOWS)?;
        let total = match t.range((id, 0)..=(id, u64::MAX))?.next_back() {
            Some(r) => r?.0.value().1 + 1,
            None => 0,
        };
        let end = offset.saturating_add(limit);
        let page = t
            .range((id, offset)..(id, end))?
            .map(|r| Ok(r?.1.value().to_vec()))
            .collect::<Result<_>>()?;
        Ok((page, total))
    }

    /// Every aggregate's rows of the final window `(size, start)` of `version`, in
    /// [`Aggregate::ALL`] order (empty lists when there is no such window).
    ///
    /// # Errors
    /// Store failure.
    pub fn window_rows(
        &self,
        version: &str,
        size_ms: i64,
        start_ms: i64,
    ) -> Result<Vec<(Aggregate, Vec<Row>)>> {
        let tx = self.db()?.begin_read()?;
        stored_window(&tx.open_table(RESULTS)?, version, size_ms, start_ms)
    }

    /// Marks `partition` as read from `offset` on with what came before never read: its
    /// event-time checkpoints are not used from now on ([`Store::checkpoints`]).
    ///
    /// # Errors
    /// Store failure.
    pub fn mark_unindexed(&self, partition: u32, offset: u64) -> Result<()> {
        let tx = self.db()?.begin_write()?;
        {
            let mut t = tx.open_table(META)?;
            let key = format!("unindexed/{partition}");
            if t.get(key.as_str())?.is_none() {
                t.insert(key.as_str(), offset.to_string().as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Event-time index checkpoints of one partition: `(offset, max event time before)`.
    ///
    /// # Errors
    /// Store failure.
    pub fn checkpoints(&self, partition: u32) -> Result<Vec<(u64, i64)>> {
        let tx = self.db()?.begin_read()?;
        // A partition kappa began reading past records it never read: no checkpoint can
        // say what came before (replays use the log's record times instead).
        if tx
            .open_table(META)?
            .get(format!("unindexed/{partition}").as_str())?
            .is_some()
        {
            return Ok(Vec::new());
        }
        let t = tx.open_table(EVENT_INDEX)?;
        t.range((partition, 0u64)..=(partition, u64::MAX))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().1, v.value()))
            })
            .collect()
    }
}

/// Reading final windows: their version's `finalized_through`, fingerprints and rows —
/// from a read snapshot ([`Store`]) or inside a write transaction, so that what a
/// transaction records about windows (a correction's diff) is what it acts on.
pub trait WindowReader {
    /// The version's `finalized_through`, or `None` for no such version.
    ///
    /// # Errors
    /// Store failure.
    fn finalized_through(&self, version: &str) -> Result<Option<i64>>;
    /// See [`Store::fingerprints`].
    ///
    /// # Errors
    /// Store failure.
    fn prints(&self, version: &str, from: i64, to: i64) -> Result<Vec<WindowPrint>>;
    /// See [`Store::window_rows`].
    ///
    /// # Errors
    /// Store failure.
    fn rows(
        &self,
        version: &str,
        size_ms: i64,
        start_ms: i64,
    ) -> Result<Vec<(Aggregate, Vec<Row>)>>;
}

impl WindowReader for Store {
    fn finalized_through(&self, version: &str) -> Result<Option<i64>> {
        Ok(self.version(version)?.map(|v| v.finalized_through))
    }
    fn prints(&self, version: &str, from: i64, to: i64) -> Result<Vec<WindowPrint>> {
        self.fingerprints(version, from, to)
    }
    fn rows(
        &self,
        version: &str,
        size_ms: i64,
        start_ms: i64,
    ) -> Result<Vec<(Aggregate, Vec<Row>)>> {
        self.window_rows(version, size_ms, start_ms)
    }
}

/// A source starts its partitions at the positions this store committed for the version.
impl crate::source::Starts for Store {
    fn kept(
        &self,
        version: &str,
    ) -> std::result::Result<std::collections::HashMap<u32, (u64, u64)>, String> {
        Ok(self
            .load_state(version)
            .map_err(|e| format!("reading positions from the store: {e}"))?
            .map(|(_, positions)| {
                positions
                    .iter()
                    .map(|p| (p.partition, (p.resume_offset, p.next_offset)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// A write transaction, read as it stands.
struct InTx<'a>(&'a redb::WriteTransaction);

impl WindowReader for InTx<'_> {
    fn finalized_through(&self, version: &str) -> Result<Option<i64>> {
        self.0
            .open_table(VERSIONS)?
            .get(version)?
            .map(|g| version_info(g.value()).map(|v| v.finalized_through))
            .transpose()
    }
    fn prints(&self, version: &str, from: i64, to: i64) -> Result<Vec<WindowPrint>> {
        prints_in(&self.0.open_table(FINGERPRINTS)?, version, from, to)
    }
    fn rows(
        &self,
        version: &str,
        size_ms: i64,
        start_ms: i64,
    ) -> Result<Vec<(Aggregate, Vec<Row>)>> {
        stored_window(&self.0.open_table(RESULTS)?, version, size_ms, start_ms)
    }
}

/// Fingerprints of `version`'s windows starting in `[from, to)`, in (size, start) order.
fn prints_in(
    t: &impl ReadableTable<(&'static str, i64, i64), u128>,
    version: &str,
    from: i64,
    to: i64,
) -> Result<Vec<WindowPrint>> {
    let mut out = Vec::new();
    for r in t.range((version, i64::MIN, i64::MIN)..=(version, i64::MAX, i64::MAX))? {
        let (k, v) = r?;
        let (_, size_ms, start_ms) = k.value();
        if (from..to).contains(&start_ms) {
            out.push(WindowPrint {
                size_ms,
                start_ms,
                hash: v.value(),
            });
        }
    }
    Ok(out)
}

type Prints<'t> = redb::Table<'t, (&'static str, i64, i64), u128>;

/// The key byte of the aggregate every final window of `version`'s stream has.
fn marker(version: &str) -> u8 {
    Aggregate::marker(Stream::of_version(version).0) as u8
}

/// Writes a final window's rows and its fingerprint.
fn write_window(
    t: &mut redb::Table<ResultKey, &[u8]>,
    prints: &mut Prints<'_>,
    version: &str,
    size: i64,
    start: i64,
    all: Vec<(Aggregate, Vec<Row>)>,
) -> Result<()> {
    prints.insert(
        (version, size, start),
        fingerprint::of_rows(size, start, &all),
    )?;
    for (agg, rows) in all {
        let a = agg as u8;
        t.retain_in(
            (version, a, size, start, "")..(version, a, size, start.saturating_add(1), ""),
            |_, _| false,
        )?;
        for row in rows {
            t.insert(
                (version, a, size, start, row.key().as_str()),
                row.encode_value().as_slice(),
            )?;
        }
    }
    Ok(())
}

type Versions<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// A version people name (not an in-place correction's scratch), read in `versions`.
fn user_version(versions: &Versions<'_>, name: &str) -> Result<VersionInfo> {
    // A stream's part of a version (`v1/reviews`) is not one: promoted or dropped with it.
    if crate::stream::is_part(name) {
        return Err(StoreError::NoVersion(name.to_string()));
    }
    let info = versions
        .get(name)?
        .map(|g| version_info(g.value()))
        .transpose()?;
    match info {
        Some(i) if !matches!(i.state, VersionState::Correcting { .. }) => Ok(i),
        _ => Err(StoreError::NoVersion(name.to_string())),
    }
}

/// Refuses to act (`what`: "promoted", "dropped") on a version that is not complete.
fn refuse_unless_ready(info: &VersionInfo, what: &str) -> Result<()> {
    let name = &info.name;
    match &info.state {
        VersionState::Ready => Ok(()),
        VersionState::Building { replay, promote } => Err(StoreError::Mismatch(format!(
            "{name} is still being built by replay {replay}{}; it cannot be {what} before that replay ends (`kappa replay status {replay}`; `kappa replay cancel {replay}` stops it and removes {name})",
            if *promote {
                ", which promotes it once caught up"
            } else {
                ""
            }
        ))),
        VersionState::Dropping => Err(StoreError::Mismatch(format!("{name} is being dropped"))),
        VersionState::Correcting { .. } => Err(StoreError::NoVersion(name.clone())),
    }
}

/// The running in-place correction of `target`, if any: `(replay, target)`.
fn correction_of(versions: &Versions<'_>, target: Option<&str>) -> Result<Option<(u64, String)>> {
    let Some(target) = target else {
        return Ok(None);
    };
    for r in versions.iter()? {
        if let VersionState::Correcting { replay, target: t } = version_info(r?.1.value())?.state
            && t == target
        {
            return Ok(Some((replay, t)));
        }
    }
    Ok(None)
}

/// Checks, in the transaction that drops it, that `name` may be dropped; one a replay
/// builds only when `building_ok` (no replay can be running).
fn check_droppable(
    tx: &redb::WriteTransaction,
    name: &str,
    building_ok: bool,
) -> Result<VersionInfo> {
    let versions = tx.open_table(VERSIONS)?;
    let info = user_version(&versions, name)?;
    let serving = tx
        .open_table(META)?
        .get("serving")?
        .map(|v| v.value().to_string());
    if serving.as_deref() == Some(name) {
        return Err(StoreError::Mismatch(format!(
            "{name} is the serving version: promote another one first (`kappa versions promote …`)"
        )));
    }
    if !(building_ok && matches!(info.state, VersionState::Building { .. })) {
        refuse_unless_ready(&info, "dropped")?;
    }
    if let Some((replay, _)) = correction_of(&versions, Some(name))? {
        return Err(StoreError::Mismatch(format!(
            "replay {replay} is correcting {name} in place: wait for it or cancel it (`kappa replay cancel {replay}`) first"
        )));
    }
    Ok(info)
}

/// Deletes a version's results, positions, late records, merger state and description.
fn remove_version(tx: &redb::WriteTransaction, name: &str) -> Result<()> {
    if !crate::stream::is_part(name) {
        // Its other streams' parts go with it.
        for s in Stream::ALL.into_iter().filter(|&s| s != Stream::Events) {
            remove_version(tx, &s.version(name))?;
        }
    }
    tx.open_table(VERSIONS)?.remove(name)?;
    tx.open_table(RESULTS)?.retain_in(
        (name, 0u8, i64::MIN, i64::MIN, "")..(name, u8::MAX, i64::MAX, i64::MAX, ""),
        |_, _| false,
    )?;
    tx.open_table(POSITIONS)?
        .retain_in((name, 0u32)..=(name, u32::MAX), |_, _| false)?;
    tx.open_table(LATE)?
        .retain_in((name, 0u32, 0u64)..=(name, u32::MAX, u64::MAX), |_, _| {
            false
        })?;
    tx.open_table(MERGER)?.remove(name)?;
    tx.open_table(MERGER)?
        .remove(crate::scale::declared_part(name).as_str())?;
    tx.open_table(CATALOGUE_EPOCHS)?
        .retain_in((name, 0u32)..=(name, u32::MAX), |_, _| false)?;
    tx.open_table(FINGERPRINTS)?.retain_in(
        (name, i64::MIN, i64::MIN)..=(name, i64::MAX, i64::MAX),
        |_, _| false,
    )?;
    declared::remove(tx, name)?;
    sums::remove(tx, name)
}

/// The rows of every aggregate of the final window `(size, start)` of `version`, read in
/// `results` (empty lists when it has none).
fn stored_window(
    results: &impl ReadableTable<ResultKey<'static>, &'static [u8]>,
    version: &str,
    size: i64,
    start: i64,
) -> Result<Vec<(Aggregate, Vec<Row>)>> {
    let mut out = Vec::new();
    for &agg in Aggregate::of(Stream::of_version(version).0) {
        let a = agg as u8;
        let mut rows = Vec::new();
        for r in results.range((version, a, size, start, "")..(version, a, size, start + 1, ""))? {
            let (k, v) = r?;
            rows.push(Row::decode(agg, k.value().4, v.value())?);
        }
        out.push((agg, rows));
    }
    Ok(out)
}

/// Every final window `(version, size, start)` in `results`, found through its stream's
/// marker aggregate (which every final window has).
fn stored_windows(
    results: &impl ReadableTable<ResultKey<'static>, &'static [u8]>,
) -> Result<Vec<(String, i64, i64)>> {
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    for r in results.iter()? {
        let (k, _) = r?;
        let (v, a, size, start, _) = k.value();
        if a == marker(v)
            && out
                .last()
                .is_none_or(|(lv, ls, lst)| (lv.as_str(), *ls, *lst) != (v, size, start))
        {
            out.push((v.to_string(), size, start));
        }
    }
    Ok(out)
}

/// Gives every final window of a store written before fingerprints its fingerprint, once
/// (the `fingerprints` meta key records that it was done).
fn backfill_fingerprints(tx: &redb::WriteTransaction) -> Result<()> {
    let mut meta = tx.open_table(META)?;
    if meta.get("fingerprints")?.is_some() {
        return Ok(());
    }
    let results = tx.open_table(RESULTS)?;
    let mut prints = tx.open_table(FINGERPRINTS)?;
    for (version, size, start) in stored_windows(&results)? {
        let rows = stored_window(&results, &version, size, start)?;
        prints.insert(
            (version.as_str(), size, start),
            fingerprint::of_rows(size, start, &rows),
        )?;
    }
    meta.insert("fingerprints", "xxh3-128 of canonical export rows")?;
    Ok(())
}

/// Window sizes (ms) with at least one final window of `version` in `results` (one seek
/// per size, through the funnel aggregate every final window has).
fn sizes_in(
    results: &impl ReadableTable<ResultKey<'static>, &'static [u8]>,
    version: &str,
) -> Result<Vec<i64>> {
    let agg = marker(version);
    let mut sizes = Vec::new();
    let mut next = i64::MIN;
    while let Some(r) = results
        .range((version, agg, next, i64::MIN, "")..(version, agg, i64::MAX, i64::MIN, ""))?
        .next()
    {
        let size = r?.0.value().2;
        sizes.push(size);
        next = size + 1;
    }
    Ok(sizes)
}

/// Records what a correction (`scratch`, of `target`) changes over `[from_ms, to_ms)`
/// with replay `id`, in `tx`: the bounded diff in `replay_diffs` with the declared windows'
/// comparison, and every differing window in `replay_diff_windows`. Returns the diff.
fn record_diff(
    tx: &redb::WriteTransaction,
    id: u64,
    (target, scratch): (&str, &str),
    (from_ms, to_ms): (i64, i64),
    (audit, declared): (bool, Option<&compare::DeclaredComparison>),
) -> Result<compare::Comparison> {
    let scope = compare::Scope {
        from: from_ms,
        to: to_ms,
        verify: audit,
        ..compare::Scope::default()
    };
    let mut full = tx.open_table(REPLAY_DIFF_WINDOWS)?;
    let mut n = 0u64;
    let mut diff = compare::compare_each(&InTx(tx), target, scratch, scope, &mut |w| {
        let json = serde_json::to_vec(w).expect("a window diff serialises");
        full.insert((id, n), json.as_slice())?;
        n += 1;
        Ok(())
    })?;
    drop(full);
    // People read it as a change to the target, not to a scratch name.
    diff.b = if audit {
        format!("{target} recomputed by audit {id}")
    } else {
        format!("{target} corrected by replay {id}")
    };
    diff.declared = declared.cloned();
    let json = serde_json::to_vec(&diff).expect("a comparison serialises");
    tx.open_table(REPLAY_DIFFS)?.insert(id, json.as_slice())?;
    Ok(diff)
}

/// Replaces `to`'s final windows whose start is in `[from_ms, to_ms)` by `from`'s, for
/// every size — only windows final in both versions (a window still open in `to` is left
/// to the pipeline computing it). Returns the number of windows (of all sizes) rewritten.
fn copy_windows(
    tx: &redb::WriteTransaction,
    from: &str,
    to: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<u64> {
    let mut windows = 0;
    let versions = tx.open_table(VERSIONS)?;
    let final_through = |name: &str| -> Result<i64> {
        versions
            .get(name)?
            .map(|g| version_info(g.value()))
            .transpose()?
            .map(|v| v.finalized_through)
            .ok_or_else(|| StoreError::NoVersion(name.to_string()))
    };
    let through = final_through(from)?.min(final_through(to)?);
    // The hours (and the rollups holding them) move with the windows.
    let hour_hi = to_ms.min(
        through
            .saturating_sub(crate::rollup::HOUR_MS)
            .saturating_add(1),
    );
    let config = versions
        .get(to)?
        .map(|g| version_info(g.value()))
        .transpose()?
        .map(|v| v.config)
        .unwrap_or_default();
    if hour_hi > from_ms {
        let cal = crate::rollup::Calendar::of_fingerprint(&config);
        sums::copy_hours(tx, from, to, from_ms, hour_hi, &cal, final_through(to)?)?;
    }
    let mut results = tx.open_table(RESULTS)?;
    for size in sizes_in(&results, from)? {
        // start ∈ [from_ms, to_ms) and start + size <= through.
        let hi = to_ms.min(through.saturating_sub(size).saturating_add(1));
        if hi <= from_ms {
            continue;
        }
        for &agg in Aggregate::of(Stream::of_version(from).0) {
            let a = agg as u8;
            results.retain_in((to, a, size, from_ms, "")..(to, a, size, hi, ""), |_, _| {
                false
            })?;
            let rows: Vec<(i64, String, Vec<u8>)> = results
                .range((from, a, size, from_ms, "")..(from, a, size, hi, ""))?
                .map(|r| {
                    let (k, v) = r?;
                    let (_, _, _, start, key) = k.value();
                    Ok((start, key.to_string(), v.value().to_vec()))
                })
                .collect::<Result<_>>()?;
            if a == marker(from) {
                let mut starts: Vec<i64> = rows.iter().map(|r| r.0).collect();
                starts.dedup();
                windows += starts.len() as u64;
            }
            for (start, key, value) in rows {
                results.insert((to, a, size, start, key.as_str()), value.as_slice())?;
            }
        }
        // The fingerprints move with the windows.
        let mut prints = tx.open_table(FINGERPRINTS)?;
        prints.retain_in((to, size, from_ms)..(to, size, hi), |_, _| false)?;
        let moved: Vec<(i64, u128)> = prints
            .range((from, size, from_ms)..(from, size, hi))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().2, v.value()))
            })
            .collect::<Result<_>>()?;
        for (start, hash) in moved {
            prints.insert((to, size, start), hash)?;
        }
    }
    declared::copy(tx, from, to, &config, (from_ms, to_ms))?;
    Ok(windows)
}

#[cfg(test)]
mod tests;
