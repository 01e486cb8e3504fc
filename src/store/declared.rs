//! The declared aggregates' final windows (issue 20): one value per (version, aggregate,
//! size, window start), its rows by key, written in the transaction of the events' window
//! results and positions; and the point through which they are final, which the declared
//! core keeps apart from the built-in one (a drain finalises each core's own windows).
//!
//! A window is rewritten whole, so writing it twice leaves the same bytes.
//!
//! Rollups: an aggregate whose measures add up across windows
//! ([`Aggregate::rollup_size`]) keeps every final hour's rows, added up from its windows of
//! the largest size dividing an hour, and the calendar's rollups made of them as the
//! built-in sums are ([`super::sums`]: quarters of a day and days from hours, weeks and
//! months from days, years from months, in the version's time zone). Where each is
//! enforced:
//! - a bucket is written once it is final (its end at or before the declared final
//!   point), in the transaction that moves that point past it ([`write`], [`roll_up`]);
//! - an in-place correction computes the buckets holding the windows it swaps again, in
//!   its swap's transaction ([`copy`]);
//! - a range reads the largest stored buckets that fit, then hours, and windows for what
//!   no bucket holds ([`Store::declared_total`]), so a bucket never computed (a store from
//!   before rollups, a quiet day) is read as its windows.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::{Result, Store, decode, encode};
use crate::declared::{Aggregate, DeclaredFinal, Rows};
use crate::rollup::{Calendar, HOUR_MS, Unit};

/// `(version, aggregate, size ms, start ms)` → the window's rows (bincode of [`Rows`]).
const DECLARED: TableDefinition<(&str, &str, i64, i64), &[u8]> =
    TableDefinition::new("declared_windows");

/// version → every declared window ending at or before this is final.
const DECLARED_THROUGH: TableDefinition<&str, i64> = TableDefinition::new("declared_through");

/// `(version, aggregate, unit, start ms)` → the bucket's rows (bincode of [`Rows`]; a
/// bucket without rows is not kept).
const ROLLUPS: TableDefinition<(&str, &str, u8, i64), &[u8]> =
    TableDefinition::new("declared_rollups");

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

/// Writes `finals` of `version` (configured by fingerprint `config`; `cal`, the calendar
/// of the version it is part of) and, when given, the point they are final through, with
/// the rollups that became final.
pub(super) fn write(
    tx: &redb::WriteTransaction,
    (version, config, cal): (&str, &str, &Calendar),
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
    drop(t);
    let Some(through) = through else {
        return Ok(());
    };
    let old = tx
        .open_table(DECLARED_THROUGH)?
        .insert(version, through)?
        .map_or(i64::MIN, |g| g.value());
    // Nothing became final unless an hour's end was passed (every bucket ends on one).
    if through <= old || (old > i64::MIN && old.div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS > through) {
        return Ok(());
    }
    roll_up(
        tx,
        version,
        &rolled(config, version),
        cal,
        old,
        through,
        through,
    )
}

/// The aggregates of `version`'s part (a stored name) that keep rollups, from its
/// configuration's fingerprint.
fn rolled(config: &str, version: &str) -> Vec<Aggregate> {
    let plan = crate::config::Config::default()
        .with_fingerprint(config)
        .map(|c| c.plan())
        .unwrap_or_default();
    let (_, base) = crate::stream::Stream::of_version(version);
    plan.aggregates
        .into_iter()
        .filter(|a| a.rollup_size().is_some() && a.stream.version(base) == version)
        .collect()
}

/// The stored [`Rows`] values of a range of `table`, added up by `agg`.
fn total_of<'a, K: 'a>(
    range: impl Iterator<
        Item = std::result::Result<(K, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>,
    >,
    agg: &Aggregate,
    table: &'static str,
) -> Result<Rows> {
    let rows = range
        .map(|r| decode::<Rows>(table, r?.1.value()))
        .collect::<Result<Vec<_>>>()?;
    Ok(agg.total(&rows))
}

/// Computes the buckets of each of `aggs` of `version` overlapping `[lo, hi)` that are
/// final (ending at or before `final_through`), in order: hours from windows, then the
/// calendar's rollups, each from the unit below it. The span is bounded by the windows
/// and buckets the aggregate has, so an unbounded `hi` (a drain) reads no empty years.
pub(super) fn roll_up(
    tx: &redb::WriteTransaction,
    version: &str,
    aggs: &[Aggregate],
    cal: &Calendar,
    lo: i64,
    hi: i64,
    final_through: i64,
) -> Result<()> {
    let windows = tx.open_table(DECLARED)?;
    let mut t = tx.open_table(ROLLUPS)?;
    for agg in aggs {
        let (Some(base), name) = (agg.rollup_size(), agg.name.as_str()) else {
            continue;
        };
        let Some((first, last)) = extent(&windows, &t, version, name, base)? else {
            continue;
        };
        let lo = lo.max(first);
        let hi = hi.min(last.max(lo.saturating_add(1)));
        for unit in std::iter::once(Unit::Hour).chain(Unit::ROLLUPS) {
            let buckets: Vec<(i64, i64)> = cal
                .overlapping(unit, lo, hi)
                .filter(|&(_, e)| e <= final_through)
                .collect();
            for (s, e) in buckets {
                let rows = if unit == Unit::Hour {
                    let keys = (version, name, base, s)..(version, name, base, e);
                    total_of(windows.range(keys)?, agg, "declared_windows")?
                } else {
                    let c = unit.child() as u8;
                    let keys = (version, name, c, s)..(version, name, c, e);
                    total_of(t.range(keys)?, agg, "declared_rollups")?
                };
                let key = (version, name, unit as u8, s);
                if rows.is_empty() {
                    t.remove(key)?;
                } else {
                    t.insert(key, encode(&rows).as_slice())?;
                }
            }
        }
    }
    Ok(())
}

/// The first start and last end of `name`'s windows of size `base` and stored hours in
/// `version` (none: it has neither).
fn extent(
    windows: &impl ReadableTable<(&'static str, &'static str, i64, i64), &'static [u8]>,
    rollups: &impl ReadableTable<(&'static str, &'static str, u8, i64), &'static [u8]>,
    version: &str,
    name: &str,
    base: i64,
) -> Result<Option<(i64, i64)>> {
    fn span<K: redb::Key + 'static>(
        mut r: redb::Range<'_, K, &'static [u8]>,
        start: impl Fn(&K::SelfType<'_>) -> i64,
        len: i64,
    ) -> Result<Option<(i64, i64)>> {
        let first = r.next().transpose()?.map(|(k, _)| start(&k.value()));
        let last = r.next_back().transpose()?.map(|(k, _)| start(&k.value()));
        Ok(first.map(|f| (f, last.unwrap_or(f) + len)))
    }
    let w = span(
        windows.range((version, name, base, i64::MIN)..=(version, name, base, i64::MAX))?,
        |k| k.3,
        base,
    )?;
    let h = Unit::Hour as u8;
    let r = span(
        rollups.range((version, name, h, i64::MIN)..=(version, name, h, i64::MAX))?,
        |k| k.3,
        HOUR_MS,
    )?;
    Ok(w.into_iter()
        .chain(r)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1))))
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
    let all = (version, "", 0, i64::MIN)..=(version, "\u{10FFFF}", u8::MAX, i64::MAX);
    tx.open_table(ROLLUPS)?.retain_in(all, |_, _| false)?;
    Ok(())
}

/// An in-place correction's swap: the declared windows of `from` (the scratch version)
/// starting in `[from_ms, to_ms)` and final in both versions replace those of `to` (a
/// window the correction left empty goes), as the built-in windows are copied; `to`'s
/// final buckets holding them are computed again (`config`: its fingerprint).
pub(super) fn copy(
    tx: &redb::WriteTransaction,
    from: &str,
    to: &str,
    config: &str,
    (from_ms, to_ms): (i64, i64),
) -> Result<()> {
    if !present(tx)? {
        return Ok(());
    }
    let through = tx.open_table(DECLARED_THROUGH)?;
    let final_of = |v: &str| -> Result<i64> { Ok(through.get(v)?.map_or(i64::MIN, |g| g.value())) };
    let (through_to, through_both) = (final_of(to)?, final_of(from)?.min(final_of(to)?));
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
    drop(t);
    let hi = to_ms.min(through_both);
    if from_ms < hi {
        let cal = Calendar::of_fingerprint(config);
        roll_up(tx, to, &rolled(config, to), &cal, from_ms, hi, through_to)?;
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
    if let Some(t) = opened(tx.open_table(ROLLUPS))? {
        let all = (version, "", 0, i64::MIN)..=(version, "\u{10FFFF}", u8::MAX, i64::MAX);
        for r in t.range(all)? {
            let (k, v) = r?;
            n += (version.len() + k.value().1.len() + 9 + v.value().len()) as u64;
        }
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

/// A declared aggregate's rows over a range, and what they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTotal {
    /// One row per key, added up.
    pub rows: Rows,
    /// Final windows read (where no stored bucket covered the range).
    pub windows: usize,
    /// Stored buckets read, by unit, largest first (units read none of left out).
    pub buckets: Vec<(Unit, usize)>,
}

/// What a range is read from.
enum Piece {
    /// Windows of a size starting in `[s, e)`.
    Windows(i64, i64, i64),
    /// A stored bucket.
    Bucket(Unit, i64),
}

/// `[from, to)` cut into windows at its ends and the largest stored buckets between its
/// first and last whole hours (hours not stored read as windows of size `base`); none
/// when an end's part is on no window size (then the whole range is read as windows).
fn pieces(
    rollups: &redb::ReadOnlyTable<(&'static str, &'static str, u8, i64), &'static [u8]>,
    (version, agg, base, cal): (&str, &Aggregate, i64, &Calendar),
    from: i64,
    to: i64,
) -> Result<Option<Vec<Piece>>> {
    let (hf, ht) = (
        (from + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS,
        to.div_euclid(HOUR_MS) * HOUR_MS,
    );
    if hf >= ht {
        return Ok(None);
    }
    let name = agg.name.as_str();
    let mut out = Vec::new();
    for (s, e) in [(from, hf), (ht, to)] {
        if s < e {
            let Some(size) = agg.tiling_size(s, e) else {
                return Ok(None);
            };
            out.push(Piece::Windows(size, s, e));
        }
    }
    let mut failed = None;
    let mut has = |unit: Unit, s: i64| match rollups.get((version, name, unit as u8, s)) {
        Ok(g) => g.is_some(),
        Err(e) => {
            failed.get_or_insert(e);
            false
        }
    };
    for (unit, s) in cal.tile(hf, ht, &mut has) {
        out.push(if unit != Unit::Hour || has(unit, s) {
            Piece::Bucket(unit, s)
        } else {
            Piece::Windows(base, s, s + HOUR_MS)
        });
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(Some(out))
}

impl Store {
    /// `agg`'s rows over `[from, to)` of `version` (the part holding them): its largest
    /// stored buckets that fit ([`roll_up`]), and its final windows of the largest size
    /// that tiles what they leave (`size`, the one both ends fall on, when no buckets fit).
    /// Exact when the aggregate adds up ([`Aggregate::mergeable`]).
    ///
    /// # Errors
    /// Store failure, or a stored value that does not decode.
    pub fn declared_total(
        &self,
        version: &str,
        (agg, cal): (&Aggregate, &Calendar),
        size: i64,
        from: i64,
        to: i64,
    ) -> Result<DeclaredTotal> {
        let tx = self.db()?.begin_read()?;
        let Some(windows) = opened(tx.open_table(DECLARED))? else {
            return Ok(DeclaredTotal {
                rows: Vec::new(),
                windows: 0,
                buckets: Vec::new(),
            });
        };
        let rollups = opened(tx.open_table(ROLLUPS))?;
        let planned = match (agg.rollup_size(), &rollups) {
            (Some(base), Some(r)) => pieces(r, (version, agg, base, cal), from, to)?,
            _ => None,
        };
        let planned = planned.unwrap_or_else(|| vec![Piece::Windows(size, from, to)]);
        let name = agg.name.as_str();
        let (mut all, mut n, mut by_unit) = (Vec::new(), 0, Vec::<(Unit, usize)>::new());
        for p in planned {
            match p {
                Piece::Windows(size, s, e) => {
                    for r in windows.range((version, name, size, s)..(version, name, size, e))? {
                        all.push(decode::<Rows>("declared_windows", r?.1.value())?);
                        n += 1;
                    }
                }
                Piece::Bucket(unit, s) => {
                    let t = rollups.as_ref().expect("buckets come from the rollups");
                    if let Some(g) = t.get((version, name, unit as u8, s))? {
                        all.push(decode::<Rows>("declared_rollups", g.value())?);
                    }
                    match by_unit.iter_mut().find(|u| u.0 == unit) {
                        Some(u) => u.1 += 1,
                        None => by_unit.push((unit, 1)),
                    }
                }
            }
        }
        by_unit.sort_by_key(|u| Unit::LARGEST_FIRST.iter().position(|x| *x == u.0));
        Ok(DeclaredTotal {
            rows: agg.total(&all),
            windows: n,
            buckets: by_unit,
        })
    }
}
