//! Every key's sums per final hour and the calendar rollups made of them
//! ([`crate::rollup`]), in the table `sums` keyed `(version, unit, start)`; and ranges
//! answered from them.
//!
//! Where each guarantee is enforced:
//! - an hour's sums are written by [`Store::commit_all`] in the transaction that writes its
//!   1-hour window's rows ([`write_hour`]);
//! - a rollup is written once every hour in it is final (its end at or before the
//!   version's `finalized_through`), in that same transaction, from the smaller buckets
//!   ([`roll_up`]: quarters of a day and days from hours, weeks and months from days,
//!   years from months);
//! - an in-place correction that rewrites hours rewrites every final rollup holding them
//!   in its swap's transaction ([`copy_hours`]);
//! - a range is answered from rollups that exist and hours ([`Store::range`]), so a bucket
//!   never computed (a store from before, a day without events) is read as its hours.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Result, Store, encode};
use crate::rollup::{Calendar, HOUR_MS, Sums, Unit};

/// `(version, unit, start) → Sums`: time-major, what ranges read.
pub(super) const SUMS: TableDefinition<(&str, u8, i64), &[u8]> = TableDefinition::new("sums");

/// `(version, product, day start) → [(hour start, KeySums)]`: the product-major index of
/// the final days' hours, written with each day's rollup, what one product's history reads
/// (docs/PERFORMANCE.md, "The storage layout experiment").
pub(super) const PRODUCT_DAYS: TableDefinition<(&str, &str, i64), &[u8]> =
    TableDefinition::new("product_days");

/// The answer to a range: the sums, the part of the range they cover and the buckets read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSums {
    /// The sums of every final hour in the range.
    pub sums: Sums,
    /// Start of the range (hour-aligned).
    pub from: i64,
    /// End of the part of the range that is final (at most the range's end).
    pub to: i64,
    /// The buckets read, in order (unit, start).
    pub tiles: Vec<(Unit, i64)>,
    /// The version's time zone (of its days and hours of the day).
    pub time_zone: &'static str,
}

/// Writes the sums of the final hour starting at `start`, its events counted at its hour
/// of the day in `cal`'s zone.
pub(super) fn write_hour(
    tx: &redb::WriteTransaction,
    version: &str,
    cal: &Calendar,
    start: i64,
    sums: &Sums,
) -> Result<()> {
    let mut sums = sums.clone();
    sums.by_hour = [0; 24];
    sums.by_hour[cal.hour_of_day(start)] = sums.events.iter().sum();
    tx.open_table(SUMS)?
        .insert((version, Unit::Hour as u8, start), encode(&sums).as_slice())?;
    Ok(())
}

/// A damaged `sums` value.
fn corrupt(reason: String) -> super::StoreError {
    super::StoreError::Corrupt {
        table: "sums",
        reason,
    }
}

/// The [`Sums`] bytes of a stored value (after its [`super::FORMAT`] byte).
fn payload(v: &[u8]) -> Result<&[u8]> {
    match v.split_first() {
        Some((&super::FORMAT, rest)) => Ok(rest),
        _ => Err(corrupt("unknown format version".into())),
    }
}

/// The products of a stored value, names borrowed from it.
fn products(v: &[u8]) -> Result<Vec<(&str, crate::rollup::KeySums)>> {
    crate::rollup::products_of(payload(v)?).map_err(corrupt)
}

/// The product-major lines of the day `[s, e)` of `version` from its hours, in place of
/// the ones its previous rollup had (called before that rollup is rewritten).
fn index_day(
    t: &redb::Table<(&str, u8, i64), &[u8]>,
    idx: &mut redb::Table<(&str, &str, i64), &[u8]>,
    version: &str,
    s: i64,
    e: i64,
) -> Result<()> {
    if let Some(old) = t.get((version, Unit::Day as u8, s))? {
        for (p, _) in products(old.value())? {
            idx.remove((version, p, s))?;
        }
    }
    let guards = t
        .range((version, Unit::Hour as u8, s)..(version, Unit::Hour as u8, e))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lines: std::collections::BTreeMap<&str, Vec<(i64, crate::rollup::KeySums)>> =
        std::collections::BTreeMap::new();
    for (k, v) in &guards {
        let hour = k.value().2;
        for (p, sums) in products(v.value())? {
            lines.entry(p).or_default().push((hour, sums));
        }
    }
    for (p, hours) in lines {
        idx.insert((version, p, s), encode(&hours).as_slice())?;
    }
    Ok(())
}

/// The sum of stored values (each [`super::FORMAT`], then a [`Sums`]).
fn merge_stored<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Sums> {
    let payloads = values
        .into_iter()
        .map(payload)
        .collect::<Result<Vec<_>>>()?;
    crate::rollup::merge_encoded(&payloads).map_err(corrupt)
}

/// The sum of the stored buckets of `unit` of `version` starting in `[from, to)`.
fn sum_range(
    t: &impl ReadableTable<(&'static str, u8, i64), &'static [u8]>,
    version: &str,
    unit: Unit,
    from: i64,
    to: i64,
) -> Result<Sums> {
    let guards = t
        .range((version, unit as u8, from)..(version, unit as u8, to))?
        .map(|r| Ok(r?.1))
        .collect::<Result<Vec<_>>>()?;
    merge_stored(guards.iter().map(|g| g.value()))
}

type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;
type SumsTable = redb::ReadOnlyTable<(&'static str, u8, i64), &'static [u8]>;
/// The tiles taken, in order, and the stored values among them.
type Tiled<'a> = (Vec<(Unit, i64)>, Vec<Guard<'a>>);

/// Reads the buckets `tile` planned (`planned`, in order): each one stored, or, for a
/// rollup that is not, its span tiled by [`read_tiles`]. The tiles taken and their values.
fn read_planned<'a>(
    t: &'a SumsTable,
    cal: &Calendar,
    version: &str,
    planned: &[(Unit, i64)],
) -> Result<Tiled<'a>> {
    let (mut tiles, mut guards) = (Vec::new(), Vec::new());
    for &(unit, s) in planned {
        match t.get((version, unit as u8, s))? {
            Some(g) => {
                tiles.push((unit, s));
                guards.push(g);
            }
            // An hour without events.
            None if unit == Unit::Hour => tiles.push((unit, s)),
            None => {
                let (more_tiles, more) = read_tiles(t, cal, version, s, cal.end(unit, s))?;
                tiles.extend(more_tiles);
                guards.extend(more);
            }
        }
    }
    Ok((tiles, guards))
}

/// `[from, to)` tiled by the largest stored buckets, asking the store for each rollup
/// that would fit: the tiles and the values of those stored.
fn read_tiles<'a>(
    t: &'a SumsTable,
    cal: &Calendar,
    version: &str,
    from: i64,
    to: i64,
) -> Result<Tiled<'a>> {
    // A rollup `tile` asks for and finds is one it takes: its value is kept then, so
    // each bucket is looked up once; hours are read after.
    let mut guards = Vec::new();
    let mut failed = None;
    let mut has = |unit: Unit, s: i64| -> bool {
        match t.get((version, unit as u8, s)) {
            Ok(Some(g)) => {
                guards.push(g);
                true
            }
            Ok(None) => false,
            Err(e) => {
                failed.get_or_insert(e);
                false
            }
        }
    };
    let tiles = cal.tile(from, to, &mut has);
    if let Some(e) = failed {
        return Err(e.into());
    }
    for &(unit, s) in tiles.iter().filter(|t| t.0 == Unit::Hour) {
        guards.extend(t.get((version, unit as u8, s))?);
    }
    Ok((tiles, guards))
}

/// First hour start and last hour end of `version` (none: no hour yet).
fn hour_span(
    t: &impl ReadableTable<(&'static str, u8, i64), &'static [u8]>,
    version: &str,
) -> Result<Option<(i64, i64)>> {
    let h = Unit::Hour as u8;
    let mut r = t.range((version, h, i64::MIN)..=(version, h, i64::MAX))?;
    let first = r.next().transpose()?.map(|(k, _)| k.value().2);
    let last = r.next_back().transpose()?.map(|(k, _)| k.value().2);
    Ok(first.map(|f| (f, last.unwrap_or(f) + HOUR_MS)))
}

/// Recomputes every rollup of `version` overlapping `[lo, hi)` (finite: the callers bound
/// it) that is final (ending at or before `final_through`), in order: quarters of a day
/// and days from hours, weeks and months from days, years from months; a day's product
/// index with it.
pub(super) fn roll_up(
    tx: &redb::WriteTransaction,
    version: &str,
    cal: &Calendar,
    lo: i64,
    hi: i64,
    final_through: i64,
) -> Result<()> {
    let mut t = tx.open_table(SUMS)?;
    let t = &mut t;
    let mut idx = tx.open_table(PRODUCT_DAYS)?;
    for unit in Unit::ROLLUPS {
        let buckets: Vec<(i64, i64)> = cal
            .overlapping(unit, lo, hi)
            .filter(|&(_, e)| e <= final_through)
            .collect();
        for (s, e) in buckets {
            if unit == Unit::Day {
                index_day(t, &mut idx, version, s, e)?;
            }
            let sums = sum_range(t, version, unit.child(), s, e)?;
            let key = (version, unit as u8, s);
            if sums.is_empty() {
                t.remove(key)?;
            } else {
                t.insert(key, encode(&sums).as_slice())?;
            }
        }
    }
    Ok(())
}

/// After a commit moved `version`'s final point from `old` to `new`: the rollups that
/// became final. Nothing to do unless a quarter of a day was passed (every rollup ends on
/// one).
pub(super) fn roll_up_after_commit(
    tx: &redb::WriteTransaction,
    version: &str,
    cal: &Calendar,
    old: i64,
    new: i64,
) -> Result<()> {
    if new <= old {
        return Ok(());
    }
    if old > i64::MIN && cal.end(Unit::SixHours, cal.start(Unit::SixHours, old)) > new {
        return Ok(());
    }
    let Some((first, last_end)) = hour_span(&tx.open_table(SUMS)?, version)? else {
        return Ok(());
    };
    // From the old final point (the first hour on a first commit) to the new one, but
    // not past the last hour: the buckets holding the old point are computed even when
    // the hours before the new point are empty (a quiet last hour of the day).
    let lo = if old == i64::MIN { first } else { old };
    let hi = new.min(last_end.max(lo.saturating_add(1)));
    roll_up(tx, version, cal, lo, hi, new)
}

/// An in-place correction's swap: the hours of `from` in `[from_ms, hi)` replace `to`'s,
/// and `to`'s final rollups holding them are computed again.
pub(super) fn copy_hours(
    tx: &redb::WriteTransaction,
    from: &str,
    to: &str,
    from_ms: i64,
    hi: i64,
    cal: &Calendar,
    final_through: i64,
) -> Result<()> {
    let h = Unit::Hour as u8;
    let before = hour_span(&tx.open_table(SUMS)?, to)?;
    let read = |version: &str| -> Result<Vec<(i64, Sums)>> {
        let t = tx.open_table(SUMS)?;
        t.range((version, h, from_ms)..(version, h, hi))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().2, super::decode::<Sums>("sums", v.value())?))
            })
            .collect()
    };
    tx.open_table(SUMS)?
        .retain_in((to, h, from_ms)..(to, h, hi), |_, _| false)?;
    for (start, s) in read(from)? {
        write_hour(tx, to, cal, start, &s)?;
    }
    // The days holding them are summed and indexed again, over the hours the target had
    // and has (a correction may empty the first or last ones).
    let after = hour_span(&tx.open_table(SUMS)?, to)?;
    let Some((first, last_end)) = before
        .into_iter()
        .chain(after)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    else {
        return Ok(());
    };
    let (lo, hi) = (from_ms.max(first), hi.min(last_end));
    if lo < hi {
        roll_up(tx, to, cal, lo, hi, final_through)?;
    }
    Ok(())
}

/// The name right after `version` in key order: no name lies between the two.
fn after(version: &str) -> String {
    format!("{version}\0")
}

/// The keys of `version`'s product index lines (`next` = [`after`]`(version)`): keys sort by
/// version first, so exactly the version's, not every later version's.
fn product_lines<'k>(version: &'k str, next: &'k str) -> std::ops::Range<(&'k str, &'k str, i64)> {
    (version, "", i64::MIN)..(next, "", i64::MIN)
}

/// Removes every bucket of `version` and its product index.
pub(super) fn remove(tx: &redb::WriteTransaction, version: &str) -> Result<()> {
    tx.open_table(SUMS)?.retain_in(
        (version, 0u8, i64::MIN)..=(version, u8::MAX, i64::MAX),
        |_, _| false,
    )?;
    let next = after(version);
    tx.open_table(PRODUCT_DAYS)?
        .retain_in(product_lines(version, &next), |_, _| false)?;
    Ok(())
}

/// What a version's sums take, from [`Store::sums_sizes`]: (entries, bytes of keys and
/// values) per bucket unit (indexed by its stored number, [`Unit`]) and of the product index.
#[derive(Clone, Copy, Debug, Default)]
pub struct SumsSizes {
    /// Per stored unit number: hours (0), days, ISO weeks, months, years, quarters (5).
    pub units: [(u64, u64); 6],
    /// Product lines of the product-major index (one per product and final day).
    pub index: (u64, u64),
}

impl SumsSizes {
    /// Bytes of all of it.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.units.iter().map(|u| u.1).sum::<u64>() + self.index.1
    }
}

impl Store {
    /// Bytes (keys and values) of `version`'s hourly sums and rollups.
    ///
    /// # Errors
    /// Store failure.
    pub fn sums_bytes(&self, version: &str) -> Result<u64> {
        Ok(self.sums_sizes(version)?.total())
    }

    /// [`Store::sums_bytes`] by bucket unit, and the product index's.
    ///
    /// # Errors
    /// Store failure.
    pub fn sums_sizes(&self, version: &str) -> Result<SumsSizes> {
        let mut out = SumsSizes::default();
        let tx = self.db()?.begin_read()?;
        let t = match tx.open_table(SUMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for r in t.range((version, 0u8, i64::MIN)..=(version, u8::MAX, i64::MAX))? {
            let (k, v) = r?;
            // Every stored unit is one of `Unit`'s (a later build's would not be counted).
            if let Some(u) = out.units.get_mut(usize::from(k.value().1)) {
                u.0 += 1;
                u.1 += (version.len() + 9 + v.value().len()) as u64;
            }
        }
        let by_product = match tx.open_table(PRODUCT_DAYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        let next = after(version);
        for r in by_product.range(product_lines(version, &next))? {
            let (k, v) = r?;
            out.index.0 += 1;
            out.index.1 += (version.len() + k.value().1.len() + 8 + v.value().len()) as u64;
        }
        Ok(out)
    }

    /// One product's final hours of `version` in `[from, to)`: (hour start, its sums),
    /// oldest first. Final days from the product-major index; the hours of a day not rolled
    /// up yet (the current one) from the hours themselves.
    ///
    /// # Errors
    /// Unknown version; store failure.
    pub fn product_history(
        &self,
        version: &str,
        product: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, crate::rollup::KeySums)>> {
        let info = self
            .version(version)?
            .ok_or_else(|| super::StoreError::NoVersion(version.to_string()))?;
        let cal = Calendar::of_fingerprint(&info.config);
        let tx = self.db()?.begin_read()?;
        let t = match tx.open_table(SUMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        // No index before the version's first final day: its hours are read.
        let idx = match tx.open_table(PRODUCT_DAYS) {
            Ok(i) => Some(i),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some((first, last_end)) = hour_span(&t, version)? else {
            return Ok(Vec::new());
        };
        let (from, to) = (from.max(first), to.min(last_end));
        let mut out = Vec::new();
        for (ds, de) in cal.overlapping(Unit::Day, from, to) {
            // A day is indexed when its rollup is written.
            let indexed = t.get((version, Unit::Day as u8, ds))?.is_some();
            if let (true, Some(idx)) = (indexed, &idx) {
                if let Some(v) = idx.get((version, product, ds))? {
                    let hours: Vec<(i64, crate::rollup::KeySums)> =
                        super::decode("product_days", v.value())?;
                    out.extend(hours.into_iter().filter(|h| (from..to).contains(&h.0)));
                }
                continue;
            }
            let h = Unit::Hour as u8;
            for r in t.range((version, h, ds.max(from))..(version, h, de.min(to)))? {
                let (k, v) = r?;
                let hour = products(v.value())?;
                if let Ok(i) = hour.binary_search_by(|(p, _)| (*p).cmp(product)) {
                    out.push((k.value().2, hour[i].1));
                }
            }
        }
        Ok(out)
    }

    /// The sums of `version` over `[from, to)` (hour-aligned; the part after the
    /// version's final point is left out), from the largest rollups that tile it.
    ///
    /// # Errors
    /// Unknown version; store failure.
    pub fn range(&self, version: &str, from: i64, to: i64) -> Result<RangeSums> {
        let tx = self.db()?.begin_read()?;
        // The version as of this snapshot: its final point and its sums agree.
        let info = tx
            .open_table(super::VERSIONS)?
            .get(version)?
            .map(|g| super::version_info(g.value()))
            .transpose()?
            .ok_or_else(|| super::StoreError::NoVersion(version.to_string()))?;
        let cal = Calendar::of_fingerprint(&info.config);
        let from = from.div_euclid(HOUR_MS).saturating_mul(HOUR_MS);
        let end = to.min(
            info.finalized_through
                .div_euclid(HOUR_MS)
                .saturating_mul(HOUR_MS),
        );
        let t = match tx.open_table(SUMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(RangeSums {
                    sums: Sums::default(),
                    from,
                    to: end.max(from),
                    tiles: Vec::new(),
                    time_zone: cal.name(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // Tiled within the years of the hours the version has: a range reaching far
        // before or after them is not walked hour by hour (and buckets starting before
        // the first hour still fit).
        let (lo, hi) = hour_span(&t, version)?.map_or((from, from), |(first, last_end)| {
            // ISO weeks straddle years: the outer bound of the two.
            let outer_start = |u: Unit| cal.start(u, first);
            let outer_end = |u: Unit| cal.end(u, cal.start(u, last_end - 1));
            (
                from.max(outer_start(Unit::Year).min(outer_start(Unit::Week))),
                end.min(outer_end(Unit::Year).max(outer_end(Unit::Week))),
            )
        });
        // Tiled as if every rollup in it were stored (every bucket of the range is final),
        // then read on several threads: a bucket first read by this process is copied out
        // of the file, about a millisecond for a 50,000-product one. A rollup that is not
        // there (nothing happened in it, or the store is older than its unit) is tiled
        // again by the smaller buckets that are.
        let planned = cal.tile(lo, hi, &mut |_, _| true);
        // Up to 8 readers whatever the cores: from a cold disk the reads wait on it.
        let chunk = planned.len().div_ceil(8).max(2);
        let (t, cal) = (&t, &cal);
        let parts = if planned.len() <= chunk {
            vec![read_planned(t, cal, version, &planned)?]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = planned
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || read_planned(t, cal, version, part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a reading thread panicked"))
                    .collect::<Result<Vec<_>>>()
            })?
        };
        let (mut tiles, mut guards) = (Vec::new(), Vec::new());
        for (part_tiles, part_guards) in parts {
            tiles.extend(part_tiles);
            guards.extend(part_guards);
        }
        Ok(RangeSums {
            sums: merge_stored(guards.iter().map(|g| g.value()))?,
            from,
            to: end.max(from),
            tiles,
            time_zone: cal.name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{Event, EventType, normalize_query};
    use crate::rollup::KeySums;
    use crate::store::{VersionInfo, VersionState};
    use crate::window::{WindowConfig, WindowCore};

    /// 2025-12-20T00:00Z: the events run past a year's end, month ends and Europe's DST
    /// change of 2026-03-29.
    const BASE: i64 = 1_766_188_800_000;
    const SPAN_HOURS: i64 = 24 * 105;
    const QUERIES: [&str; 3] = ["red hat", " Red  Hat", "boots"];

    #[derive(Debug, Clone)]
    struct Ev {
        ts: i64,
        ty: EventType,
        product: u8,
        qty: u32,
        price: u64,
        query: &'static str,
    }

    impl Ev {
        fn event(&self, id: usize) -> Event<'static> {
            Event {
                event_id: Cow::Owned(format!("e{id}")),
                event_type: self.ty,
                ts_ms: self.ts,
                product_id: Cow::Owned(format!("p{}", self.product)),
                category: Cow::Owned(format!("c{}", self.product % 3)),
                price_minor: self.price,
                quantity: self.qty,
                query: Cow::Borrowed(self.query),
            }
        }
    }

    fn events() -> impl Strategy<Value = Vec<Ev>> {
        let ev = (
            0..SPAN_HOURS * 3_600_000,
            prop::sample::select(EventType::ALL.to_vec()),
            0u8..8,
            0u32..4,
            1u64..10_000,
            prop::sample::select(QUERIES.to_vec()),
        )
            .prop_map(|(off, ty, product, qty, price, query)| Ev {
                ts: BASE + off,
                ty,
                product,
                qty,
                price,
                query,
            });
        prop::collection::vec(ev, 1..400).prop_map(|mut v| {
            v.sort_by_key(|e| e.ts);
            v
        })
    }

    /// The sums of `evs` with times in `[from, to)`, summed naively; hours of the day in
    /// `cal`'s zone.
    fn model(evs: &[Ev], from: i64, to: i64, cal: &Calendar) -> Sums {
        let mut products: BTreeMap<String, KeySums> = BTreeMap::new();
        let mut categories: BTreeMap<String, KeySums> = BTreeMap::new();
        let mut queries: BTreeMap<String, u64> = BTreeMap::new();
        let mut s = Sums::default();
        for e in evs.iter().filter(|e| (from..to).contains(&e.ts)) {
            s.events[e.ty as usize] += 1;
            s.by_hour[cal.hour_of_day(e.ts)] += 1;
            if e.ty == EventType::Search {
                let mut q = String::new();
                normalize_query(e.query, &mut q);
                *queries.entry(q).or_default() += 1;
                continue;
            }
            for k in [
                products.entry(format!("p{}", e.product)).or_default(),
                categories.entry(format!("c{}", e.product % 3)).or_default(),
            ] {
                k.count(e.ty, e.qty, e.price);
            }
        }
        s.products = products.into_iter().collect();
        s.categories = categories.into_iter().collect();
        s.queries = queries.into_iter().collect();
        s
    }

    /// A store holding an empty version `v1` whose rollups are in `zone`.
    fn store_v1(zone: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kappa.redb")).unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.rollups.time_zone = zone.to_string();
        store
            .ensure_version(&VersionInfo {
                name: "v1".into(),
                config: cfg.results_fingerprint(),
                created_ms: 0,
                finalized_through: i64::MIN,
                state: VersionState::Ready,
            })
            .unwrap();
        (dir, store)
    }

    fn commit(store: &Store, finals: &[crate::window::FinalWindow], through: i64) {
        crate::store::tests::commit_through(store, "v1", finals, through);
    }

    /// The last hour of a day is quiet and the final point passes midnight in two
    /// commits, neither of which stores an hour: the day is still rolled up, and so its
    /// week, month and year hold it.
    #[test]
    fn a_day_whose_last_hours_are_quiet_is_rolled_up() {
        let (_dir, store) = store_v1("UTC");
        let mut core = WindowCore::new(
            WindowConfig {
                sizes_ms: vec![60_000, HOUR_MS],
                max_delay_ms: 1_800_000,
                top_k: 3,
            },
            1,
        );
        // 2025-12-30 10:00 (its hour final at the second event), then 00:10 and 00:50
        // of the 31st, then the 7th of January (the week of the 30th is final).
        let at = |h: i64, m: i64| BASE + 10 * 86_400_000 + h * HOUR_MS + m * 60_000;
        let evs: Vec<Ev> = [at(10, 0), at(24, 10), at(24, 50), at(24 * 8, 0)]
            .into_iter()
            .map(|ts| Ev {
                ts,
                ty: EventType::View,
                product: 1,
                qty: 0,
                price: 1,
                query: "",
            })
            .collect();
        for (i, e) in evs.iter().enumerate() {
            core.on_event(0, i as u64, &e.event(i), false);
            let finals = core.advance();
            commit(&store, &finals, core.finalized_through());
        }
        let cal = Calendar::default();
        let day = cal.start(Unit::Day, at(10, 0));
        let week = cal.start(Unit::Week, day);
        let r = store.range("v1", week, cal.end(Unit::Week, week)).unwrap();
        assert_eq!(r.tiles, vec![(Unit::Week, week)], "the week's rollup");
        assert_eq!(r.sums, model(&evs, week, cal.end(Unit::Week, week), &cal));
    }

    /// Before the version's first day is final there is no product index yet: a
    /// product's history is read from the hours (it was empty).
    #[test]
    fn a_history_before_the_first_final_day_is_read_from_the_hours() {
        let (_dir, store) = store_v1("UTC");
        let mut core = WindowCore::new(
            WindowConfig {
                sizes_ms: vec![HOUR_MS],
                max_delay_ms: 0,
                top_k: 3,
            },
            1,
        );
        let e = Ev {
            ts: BASE + HOUR_MS + 60_000,
            ty: EventType::View,
            product: 1,
            qty: 0,
            price: 1,
            query: "",
        };
        core.on_event(0, 0, &e.event(0), false);
        let finals = core.advance();
        commit(&store, &finals, core.finalized_through());
        let finals = core.drain();
        commit(&store, &finals, core.finalized_through());
        let h = store
            .product_history("v1", "p1", BASE, BASE + 86_400_000)
            .unwrap();
        let one = KeySums {
            views: 1,
            ..KeySums::default()
        };
        assert_eq!(h, vec![(BASE + HOUR_MS, one)]);
    }

    /// Removing a version removes its product index lines and no other version's, even
    /// one whose name starts with it.
    #[test]
    fn removing_a_version_removes_exactly_its_product_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kappa.redb")).unwrap();
        let names = ["v0", "v1", "v1-fix", "v10", "v2"];
        let tx = store.db().unwrap().begin_write().unwrap();
        {
            let mut idx = tx.open_table(PRODUCT_DAYS).unwrap();
            for v in names {
                for p in ["", "p1", "p2"] {
                    idx.insert((v, p, 0), [0u8].as_slice()).unwrap();
                }
            }
        }
        tx.commit().unwrap();
        store.remove_version("v1").unwrap();
        let tx = store.db().unwrap().begin_read().unwrap();
        let left: Vec<String> = tx
            .open_table(PRODUCT_DAYS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().0.to_string())
            .collect();
        let want: Vec<String> = ["v0", "v1-fix", "v10", "v2"]
            .iter()
            .flat_map(|v| [v.to_string(), v.to_string(), v.to_string()])
            .collect();
        assert_eq!(left, want);
    }

    /// Removes every stored bucket of `units` (of version `v1`).
    fn forget(store: &Store, units: &[Unit]) {
        let tx = store.db().unwrap().begin_write().unwrap();
        {
            let mut t = tx.open_table(SUMS).unwrap();
            for &u in units {
                let u = u as u8;
                t.retain_in(("v1", u, i64::MIN)..=("v1", u, i64::MAX), |_, _| false)
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Hours committed in any batches, then rollups: every range equals the batch
        /// model of the events in it, whichever buckets answer it.
        #[test]
        fn ranges_equal_the_batch_model_of_their_events(
            evs in events(),
            batches in prop::collection::vec(1usize..80, 1..8),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "Asia/Seoul"]),
            drain in any::<bool>(),
            max_delay_ms in prop::sample::select(vec![0i64, 1_800_000, 7_200_000]),
            ranges in prop::collection::vec((0..SPAN_HOURS, 0..SPAN_HOURS), 1..6),
            missing in prop::sample::subsequence(Unit::ROLLUPS.to_vec(), 0..=3),
        ) {
            let (_dir, store) = store_v1(zone);
            let cal = Calendar::new(zone).unwrap();
            let mut core = WindowCore::new(
                WindowConfig { sizes_ms: vec![60_000, HOUR_MS], max_delay_ms, top_k: 3 },
                1,
            );
            let mut i = 0;
            for n in batches.iter().cycle() {
                if i >= evs.len() {
                    break;
                }
                for (j, e) in evs.iter().enumerate().skip(i).take(*n) {
                    core.on_event(0, j as u64, &e.event(j), false);
                }
                i += n;
                let finals = core.advance();
                commit(&store, &finals, core.finalized_through());
            }
            if drain {
                let finals = core.drain();
                commit(&store, &finals, core.finalized_through());
            }
            let through = core.finalized_through();
            // Rollups a store lacks (one older than the unit): ranges are tiled around them.
            forget(&store, &missing);
            for (a, b) in ranges {
                let (from, to) = (BASE + a.min(b) * HOUR_MS, BASE + a.max(b) * HOUR_MS + HOUR_MS);
                let r = store.range("v1", from, to).unwrap();
                let end = to.min(through.div_euclid(HOUR_MS) * HOUR_MS);
                prop_assert_eq!(r.to, end.max(from));
                let m = model(&evs, from, end, &cal);
                prop_assert_eq!(&r.sums, &m);
                // Each product's hours in the product-major index add up to the same.
                for (p, want) in &m.products {
                    let mut got = KeySums::default();
                    for (_, k) in store.product_history("v1", p, from, end).unwrap() {
                        got.add(&k);
                    }
                    prop_assert_eq!(&got, want, "{}", p);
                }
            }
            // The whole span: rollups answer for what is final.
            let all = store.range("v1", BASE - 86_400_000, BASE + SPAN_HOURS * HOUR_MS).unwrap();
            prop_assert_eq!(&all.sums, &model(&evs, i64::MIN, all.to, &cal));
            // Some rollup is read when one holding an event is final.
            let q = Unit::SixHours;
            if missing.is_empty() && evs.iter().any(|e| cal.end(q, cal.start(q, e.ts)) <= all.to) {
                prop_assert!(all.tiles.iter().any(|t| t.0 != Unit::Hour), "{:?}", all.tiles);
            }
        }
    }
}
