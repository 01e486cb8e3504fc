//! The declared aggregates' final windows (issue 20): one value per (version, aggregate,
//! size, window start), its rows by key, written in the transaction of the events' window
//! results and positions; and the point through which they are final, which the declared
//! core keeps apart from the built-in one (a drain finalises each core's own windows).
//!
//! A window is rewritten whole, so writing it twice leaves the same bytes.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::{Result, Store, decode, encode};
use crate::declared::{DeclaredFinal, Rows};

/// `(version, aggregate, size ms, start ms)` → the window's rows (bincode of [`Rows`]).
const DECLARED: TableDefinition<(&str, &str, i64, i64), &[u8]> =
    TableDefinition::new("declared_windows");

/// version → every declared window ending at or before this is final.
const DECLARED_THROUGH: TableDefinition<&str, i64> = TableDefinition::new("declared_through");

/// One final window of one declared aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredWindow {
    /// The aggregate's name.
    pub aggregate: String,
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// (key parts, row), by key.
    pub rows: Rows,
}

/// Every key of `version` in `declared_windows` (aggregate names are ASCII, below
/// U+10FFFF).
fn every(version: &str) -> std::ops::RangeInclusive<(&str, &str, i64, i64)> {
    (version, "", i64::MIN, i64::MIN)..=(version, "\u{10FFFF}", i64::MAX, i64::MAX)
}

/// A stored window read back.
fn window_of(name: &str, size_ms: i64, start_ms: i64, value: &[u8]) -> Result<DeclaredWindow> {
    Ok(DeclaredWindow {
        aggregate: name.to_string(),
        size_ms,
        start_ms,
        rows: decode::<Rows>("declared_windows", value)?,
    })
}

/// Writes `finals` of `version` and, when given, the point they are final through.
pub(super) fn write(
    tx: &redb::WriteTransaction,
    version: &str,
    finals: &[DeclaredFinal],
    through: Option<i64>,
) -> Result<()> {
    if finals.is_empty() && through.is_none() {
        return Ok(());
    }
    let mut t = tx.open_table(DECLARED)?;
    for f in finals {
        for (name, rows) in &f.aggregates {
            t.insert(
                (version, name.as_str(), f.size_ms, f.start_ms),
                encode(rows).as_slice(),
            )?;
        }
    }
    if let Some(through) = through {
        tx.open_table(DECLARED_THROUGH)?.insert(version, through)?;
    }
    Ok(())
}

/// Whether a commit created the declared tables (a store that never had declared
/// aggregates is left without them: its layout stays what it was).
fn present(tx: &redb::WriteTransaction) -> Result<bool> {
    Ok(tx
        .list_tables()?
        .any(|t| t.name() == DECLARED_THROUGH.name()))
}

/// Deletes `version`'s declared windows and final point.
pub(super) fn remove(tx: &redb::WriteTransaction, version: &str) -> Result<()> {
    if !present(tx)? {
        return Ok(());
    }
    tx.open_table(DECLARED)?
        .retain_in(every(version), |_, _| false)?;
    tx.open_table(DECLARED_THROUGH)?.remove(version)?;
    Ok(())
}

/// An in-place correction's swap: the declared windows of `from` (the scratch version)
/// starting in `[from_ms, to_ms)` and final in both versions replace those of `to` (a
/// window the correction left empty goes), as the built-in windows are copied.
pub(super) fn copy(
    tx: &redb::WriteTransaction,
    from: &str,
    to: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<()> {
    if !present(tx)? {
        return Ok(());
    }
    let through = tx.open_table(DECLARED_THROUGH)?;
    let final_of = |v: &str| -> Result<i64> { Ok(through.get(v)?.map_or(i64::MIN, |g| g.value())) };
    let through_both = final_of(from)?.min(final_of(to)?);
    drop(through);
    let mut t = tx.open_table(DECLARED)?;
    // Every (aggregate, size) either version has.
    let mut series: Vec<(String, i64)> = Vec::new();
    for v in [from, to] {
        for r in t.range(every(v))? {
            let (k, _) = r?;
            let (_, name, size, _) = k.value();
            if !series.iter().any(|(n, s)| n == name && *s == size) {
                series.push((name.to_string(), size));
            }
        }
    }
    for (name, size) in series {
        // start ∈ [from_ms, to_ms) and start + size <= through.
        let hi = to_ms.min(through_both.saturating_sub(size).saturating_add(1));
        if hi <= from_ms {
            continue;
        }
        let n = name.as_str();
        t.retain_in((to, n, size, from_ms)..(to, n, size, hi), |_, _| false)?;
        let moved: Vec<(i64, Vec<u8>)> = t
            .range((from, n, size, from_ms)..(from, n, size, hi))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().3, v.value().to_vec()))
            })
            .collect::<Result<_>>()?;
        for (start, value) in moved {
            t.insert((to, n, size, start), value.as_slice())?;
        }
    }
    Ok(())
}

/// A table read, or `None` when no commit has created it yet.
fn opened<T>(t: std::result::Result<T, redb::TableError>) -> Result<Option<T>> {
    match t {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bytes of `version`'s declared windows (keys and values), for its size.
pub(super) fn bytes(tx: &redb::ReadTransaction, version: &str) -> Result<u64> {
    let Some(t) = opened(tx.open_table(DECLARED))? else {
        return Ok(0);
    };
    let mut n = 0u64;
    for r in t.range(every(version))? {
        let (k, v) = r?;
        let (_, name, _, _) = k.value();
        n += (version.len() + name.len() + 16 + v.value().len()) as u64;
    }
    Ok(n)
}

impl Store {
    /// Every declared window of `version` ending at or before this is final (`i64::MIN`
    /// when none is).
    ///
    /// # Errors
    /// Store failure.
    pub fn declared_through(&self, version: &str) -> Result<i64> {
        let tx = self.db()?.begin_read()?;
        let Some(t) = opened(tx.open_table(DECLARED_THROUGH))? else {
            return Ok(i64::MIN);
        };
        Ok(t.get(version)?.map_or(i64::MIN, |g| g.value()))
    }

    /// The final windows of declared aggregate `name` of `version` (of size `size_ms`, or
    /// every size) with `from <= start < to`, by size then start, at most `limit`.
    ///
    /// # Errors
    /// Store failure, or a stored value that does not decode.
    pub fn declared_windows(
        &self,
        version: &str,
        name: &str,
        size_ms: Option<i64>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<DeclaredWindow>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let tx = self.db()?.begin_read()?;
        let Some(t) = opened(tx.open_table(DECLARED))? else {
            return Ok(Vec::new());
        };
        // One size: its starts in [from, to) only; every size: each size's starts.
        let keys = match size_ms {
            Some(s) => (version, name, s, from)..(version, name, s, to),
            None => (version, name, i64::MIN, i64::MIN)..(version, name, i64::MAX, i64::MAX),
        };
        let mut out = Vec::new();
        for r in t.range(keys)? {
            let (k, v) = r?;
            let (_, _, size, start) = k.value();
            if start < from || start >= to {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push(window_of(name, size, start, v.value())?);
        }
        Ok(out)
    }

    /// The start of the latest final window of declared aggregate `name` and size
    /// `size_ms` of `version`.
    ///
    /// # Errors
    /// Store failure.
    pub fn latest_declared(&self, version: &str, name: &str, size_ms: i64) -> Result<Option<i64>> {
        let tx = self.db()?.begin_read()?;
        let Some(t) = opened(tx.open_table(DECLARED))? else {
            return Ok(None);
        };
        let last = t
            .range((version, name, size_ms, i64::MIN)..=(version, name, size_ms, i64::MAX))?
            .next_back()
            .transpose()?;
        Ok(last.map(|(k, _)| k.value().3))
    }

    /// Every declared window of `version`, by aggregate name, size and start (export).
    ///
    /// # Errors
    /// Store failure, or a stored value that does not decode.
    pub fn all_declared(&self, version: &str) -> Result<Vec<DeclaredWindow>> {
        let tx = self.db()?.begin_read()?;
        let Some(t) = opened(tx.open_table(DECLARED))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for r in t.range(every(version))? {
            let (k, v) = r?;
            let (_, name, size, start) = k.value();
            out.push(window_of(name, size, start, v.value())?);
        }
        Ok(out)
    }
}
