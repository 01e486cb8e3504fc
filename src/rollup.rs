//! Any time range, exactly (issue 19): every key's sums per final hour, calendar rollups
//! (quarter of a day, day, ISO week, month, year) computed from them, and the tiling that
//! answers a range from the largest final buckets.
//!
//! An hour's [`Sums`] hold every product, category and query of the hour (not a top K),
//! and the funnel (views, add-to-carts) per product and category. They come from the 1-hour
//! window when it becomes final ([`crate::window::FinalWindow::sums`]) and are written in
//! the same store transaction as its rows. A quarter of a day (from local 00, 06, 12 and 18
//! o'clock) and a day are the sums of their hours, a week and a month the sum of their days, a year the sum of its months — in the version's time zone
//! (`rollups.time-zone`, UTC by default), so a day in Asia/Seoul starts at 15:00 UTC and a
//! day in Europe/Berlin across a DST change has 23 or 25 hours. Every sum is of integers,
//! so a rollup equals the sums of its events whatever the order they were added in.

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One hour in milliseconds: the smallest bucket.
pub const HOUR_MS: i64 = 3_600_000;

/// What one key (a product or a category) did in a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySums {
    /// View events.
    pub views: u64,
    /// Add-to-cart events.
    pub carts: u64,
    /// Purchase events.
    pub purchases: u64,
    /// Units bought.
    pub units: u64,
    /// Revenue in minor units.
    pub revenue: u128,
}

impl KeySums {
    /// Adds `o`'s counts in.
    pub fn add(&mut self, o: &KeySums) {
        self.views += o.views;
        self.carts += o.carts;
        self.purchases += o.purchases;
        self.units += o.units;
        self.revenue += o.revenue;
    }
}

#[cfg(test)]
impl KeySums {
    /// One view, add-to-cart or purchase of `qty` at `price`, as the batch models count it.
    pub(crate) fn count(&mut self, ty: crate::event::EventType, qty: u32, price: u64) {
        use crate::event::EventType;
        match ty {
            EventType::View => self.views += 1,
            EventType::AddCart => self.carts += 1,
            EventType::Purchase => {
                self.purchases += 1;
                self.units += u64::from(qty);
                self.revenue += u128::from(price) * u128::from(qty);
            }
            EventType::Search => {}
        }
    }
}

/// Every key's sums over one bucket (an hour, a rollup, a range). Lists are sorted by
/// key, so equal sums are equal bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    /// Events per type, indexed by [`crate::event::EventType`] discriminant.
    pub events: [u64; 4],
    /// Per product id.
    pub products: Vec<(String, KeySums)>,
    /// Per category.
    pub categories: Vec<(String, KeySums)>,
    /// Searches per normalised query.
    pub queries: Vec<(String, u64)>,
    /// Events per hour of the day in the version's time zone (an hour's are all in one;
    /// set when the hour is stored).
    pub by_hour: [u64; 24],
}

impl Sums {
    /// Whether nothing happened.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events == [0; 4]
            && self.products.is_empty()
            && self.categories.is_empty()
            && self.queries.is_empty()
    }
}

/// The first two fields of stored [`Sums`], names borrowed from the bytes (bincode reads a
/// struct's fields in order, so the rest is left unread).
#[derive(Debug, Deserialize)]
struct ProductsRef<'a> {
    _events: [u64; 4],
    #[serde(borrow)]
    products: Vec<(&'a str, KeySums)>,
}

/// The products of stored [`Sums`] bytes (bincode), names borrowed from them.
///
/// # Errors
/// Bytes that do not decode.
pub fn products_of(blob: &[u8]) -> Result<Vec<(&str, KeySums)>, String> {
    bincode::serde::borrow_decode_from_slice::<ProductsRef<'_>, _>(
        blob,
        bincode::config::standard(),
    )
    .map(|(s, _)| s.products)
    .map_err(|e| e.to_string())
}

/// Adds the key-sorted list `b` into the key-sorted list `acc` (equal keys added),
/// through `spare` (cleared first; it then holds what `acc` held).
fn merge_sorted<'a, V: Copy>(
    acc: &mut Vec<(&'a [u8], V)>,
    b: impl IntoIterator<Item = (&'a [u8], V)>,
    add: fn(&mut V, &V),
    spare: &mut Vec<(&'a [u8], V)>,
) {
    use std::cmp::Ordering;
    let (a, out) = (&*acc, &mut *spare);
    out.clear();
    out.reserve(a.len());
    let mut i = 0;
    for y in b {
        loop {
            match a.get(i).map(|x| key_cmp(x.0, y.0)) {
                Some(Ordering::Less) => out.push(a[i]),
                Some(Ordering::Equal) => {
                    let mut x = a[i];
                    add(&mut x.1, &y.1);
                    out.push(x);
                    i += 1;
                    break;
                }
                _ => {
                    out.push(y);
                    break;
                }
            }
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    std::mem::swap(acc, spare);
}

/// The order of two names' bytes (that of the strings), with no call out for the first
/// eight bytes, which decide or match most of them (product ids, queries).
#[inline]
fn key_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        (Some(x), Some(y)) => u64::from_be_bytes(*x)
            .cmp(&u64::from_be_bytes(*y))
            .then_with(|| match (&a[8..], &b[8..]) {
                ([], []) => std::cmp::Ordering::Equal,
                (x, y) => x.cmp(y),
            }),
        _ => a.cmp(b),
    }
}

/// Adds counts `n` into `acc`, element by element.
fn add_counts(acc: &mut [u64], n: &[u64]) {
    for (x, n) in acc.iter_mut().zip(n) {
        *x += n;
    }
}

/// Why stored bytes are not [`Sums`] (a `&'static str`: the hot path returns it cheaply).
type Bad = &'static str;

/// Stored [`Sums`] bytes read field by field, in bincode's standard layout (varint
/// integers, a length before each list and string, fixed arrays without one) — what
/// [`merge_encoded`] walks without serde: a range reads a million keys.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.bytes.len() {
            return Err("stored sums end early");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }

    /// A varint: one byte under 251, else a marker (251–254) and 2, 4, 8 or 16 bytes.
    #[inline]
    fn uint(&mut self) -> Result<u128, Bad> {
        match self.bytes.split_first() {
            Some((&b, rest)) if b < 251 => {
                self.bytes = rest;
                Ok(u128::from(b))
            }
            _ => self.uint_long(),
        }
    }

    /// [`Cursor::uint`] of more than one byte.
    #[inline]
    fn uint_long(&mut self) -> Result<u128, Bad> {
        let (&first, rest) = self.bytes.split_first().ok_or("stored sums end early")?;
        self.bytes = rest;
        match first {
            0..=250 => Ok(u128::from(first)),
            251 => Ok(u16::from_le_bytes(self.array()?).into()),
            252 => Ok(u32::from_le_bytes(self.array()?).into()),
            253 => Ok(u64::from_le_bytes(self.array()?).into()),
            254 => Ok(u128::from_le_bytes(self.array()?)),
            _ => Err("an invalid integer marker"),
        }
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, Bad> {
        match self.bytes.split_first() {
            Some((&b, rest)) if b < 251 => {
                self.bytes = rest;
                Ok(u64::from(b))
            }
            _ => u64::try_from(self.uint_long()?).map_err(|_| "an integer larger than u64"),
        }
    }

    fn len(&mut self) -> Result<usize, Bad> {
        usize::try_from(self.uint()?).map_err(|_| "a length larger than memory")
    }

    /// A string's bytes (checked to be UTF-8 once merged, [`Merged::into_sums`]).
    fn name(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.len()?;
        self.take(n)
    }

    fn key_sums(&mut self) -> Result<KeySums, Bad> {
        Ok(KeySums {
            views: self.u64()?,
            carts: self.u64()?,
            purchases: self.u64()?,
            units: self.u64()?,
            revenue: self.uint()?,
        })
    }

    /// Adds `N` counts into `acc`.
    fn add_counts<const N: usize>(&mut self, acc: &mut [u64; N]) -> Result<(), Bad> {
        for x in acc {
            *x += self.u64()?;
        }
        Ok(())
    }

    /// Merges a stored key-sorted list into `acc` (through `spare`) as it is read.
    fn merge_list<V: Copy>(
        &mut self,
        acc: &mut Vec<(&'a [u8], V)>,
        spare: &mut Vec<(&'a [u8], V)>,
        value: fn(&mut Self) -> Result<V, Bad>,
        add: fn(&mut V, &V),
    ) -> Result<(), Bad> {
        let n = self.len()?;
        let mut err = None;
        let items = (0..n).map_while(|_| match self.name().and_then(|k| Ok((k, value(self)?))) {
            Ok(x) => Some(x),
            Err(e) => {
                err = Some(e);
                None
            }
        });
        merge_sorted(acc, items, add, spare);
        err.map_or(Ok(()), Err)
    }
}

/// Sums with names borrowed from stored bytes, lists sorted by key.
#[derive(Default)]
struct Merged<'a> {
    events: [u64; 4],
    by_hour: [u64; 24],
    products: Vec<(&'a [u8], KeySums)>,
    categories: Vec<(&'a [u8], KeySums)>,
    queries: Vec<(&'a [u8], u64)>,
}

impl<'a> Merged<'a> {
    /// The sum of `blobs`, each merged in as it is decoded, into lists that are reused.
    fn of(blobs: &[&'a [u8]]) -> Result<Self, String> {
        let mut m = Merged::default();
        let mut spare = Merged::default();
        for b in blobs {
            let mut c = Cursor { bytes: b };
            c.add_counts(&mut m.events)?;
            c.merge_list(
                &mut m.products,
                &mut spare.products,
                Cursor::key_sums,
                KeySums::add,
            )?;
            c.merge_list(
                &mut m.categories,
                &mut spare.categories,
                Cursor::key_sums,
                KeySums::add,
            )?;
            c.merge_list(&mut m.queries, &mut spare.queries, Cursor::u64, |a, b| {
                *a += b;
            })?;
            c.add_counts(&mut m.by_hour)?;
            // A field the merge does not know (added to `Sums`) is not silently dropped.
            if !c.bytes.is_empty() {
                return Err(format!("{} bytes after the stored sums", c.bytes.len()));
            }
        }
        Ok(m)
    }

    /// Adds `o` in, through `spare`'s lists.
    fn absorb(&mut self, o: Merged<'a>, spare: &mut Merged<'a>) {
        add_counts(&mut self.events, &o.events);
        add_counts(&mut self.by_hour, &o.by_hour);
        merge_sorted(
            &mut self.products,
            o.products,
            KeySums::add,
            &mut spare.products,
        );
        merge_sorted(
            &mut self.categories,
            o.categories,
            KeySums::add,
            &mut spare.categories,
        );
        merge_sorted(
            &mut self.queries,
            o.queries,
            |a, b| *a += b,
            &mut spare.queries,
        );
    }

    /// The sums, names owned: each checked to be UTF-8 here, once.
    fn into_sums(self) -> Result<Sums, String> {
        fn owned<V>(v: Vec<(&[u8], V)>) -> Result<Vec<(String, V)>, String> {
            v.into_iter()
                .map(|(k, s)| {
                    let k = std::str::from_utf8(k).map_err(|e| format!("a stored name: {e}"))?;
                    Ok((k.to_string(), s))
                })
                .collect()
        }
        Ok(Sums {
            events: self.events,
            products: owned(self.products)?,
            categories: owned(self.categories)?,
            queries: owned(self.queries)?,
            by_hour: self.by_hour,
        })
    }
}

/// The sum of stored [`Sums`] (bincode, each list sorted by key, as the window's finish
/// writes them), merged list by list as `Cursor` reads them, without hashing or
/// copying names until the end, on up to 4 threads: what a range query runs.
///
/// # Errors
/// Bytes that do not decode.
pub fn merge_encoded(blobs: &[&[u8]]) -> Result<Sums, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    let chunk = blobs.len().div_ceil(threads).max(4);
    let parts: Vec<Merged<'_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = blobs
            .chunks(chunk)
            .map(|c| scope.spawn(move || Merged::of(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a merging thread panicked"))
            .collect::<Result<_, _>>()
    })?;
    let mut parts = parts.into_iter();
    let mut m = parts.next().unwrap_or_default();
    let mut spare = Merged::default();
    for p in parts {
        m.absorb(p, &mut spare);
    }
    m.into_sums()
}

/// `map` as a list sorted by key.
pub fn sorted<V>(map: HashMap<&str, V>) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = map.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A bucket size (its discriminant is stored in keys: not ordered by size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One UTC hour (the 1-hour window).
    Hour = 0,
    /// A calendar day in the zone.
    Day = 1,
    /// An ISO week (Monday to Sunday) in the zone.
    Week = 2,
    /// A calendar month in the zone.
    Month = 3,
    /// A calendar year in the zone.
    Year = 4,
    /// A quarter of a day in the zone: from local 00:00, 06:00, 12:00 and 18:00 (a DST
    /// change makes one of 5 or 7 hours). Only a range's first and last days use it.
    SixHours = 5,
}

impl Unit {
    /// The rollups, in the order they are computed (each from the ones before).
    pub const ROLLUPS: [Unit; 5] = [
        Unit::SixHours,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// Every unit, largest first: the order a range is tiled in.
    pub const LARGEST_FIRST: [Unit; 6] = [
        Unit::Year,
        Unit::Month,
        Unit::Week,
        Unit::Day,
        Unit::SixHours,
        Unit::Hour,
    ];

    /// Its name in the API (`hour`, `six_hours`, `day`, `week`, `month`, `year`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::SixHours => "six_hours",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The unit a rollup is summed from.
    #[must_use]
    pub fn child(self) -> Unit {
        match self {
            Self::Hour | Self::SixHours | Self::Day => Self::Hour,
            Self::Week | Self::Month => Self::Day,
            Self::Year => Self::Month,
        }
    }
}

/// Where buckets start and end: a time zone for days and larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
}

impl Default for Calendar {
    fn default() -> Self {
        Self { tz: Tz::UTC }
    }
}

impl Calendar {
    /// The calendar of IANA zone `name` (`UTC`, `Asia/Seoul`, …).
    ///
    /// # Errors
    /// An unknown zone, or one whose offset from UTC is not a whole number of hours at
    /// some time from 2000 to 2100 (its days would not be made of whole UTC hours).
    pub fn new(name: &str) -> Result<Self, String> {
        let tz: Tz = name
            .parse()
            .map_err(|_| format!("unknown time zone {name:?} (an IANA name such as Asia/Seoul)"))?;
        let mut t = chrono::Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid instant");
        let end = chrono::Utc
            .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid instant");
        while t < end {
            use chrono::Offset;
            let off = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            if off.local_minus_utc() % 3600 != 0 {
                return Err(format!(
                    "time zone {name} is {} s from UTC on {}: rollups need whole-hour offsets",
                    off.local_minus_utc(),
                    t.date_naive()
                ));
            }
            t += Duration::days(7);
        }
        Ok(Self { tz })
    }

    /// The calendar a version's result-deciding configuration names (`time-zone=…`;
    /// UTC when it names none). The zone was checked when the version was created.
    #[must_use]
    pub fn of_fingerprint(fingerprint: &str) -> Self {
        let tz = fingerprint
            .split_whitespace()
            .find_map(|item| item.strip_prefix("time-zone="))
            .and_then(|name| name.parse().ok())
            .unwrap_or(Tz::UTC);
        Self { tz }
    }

    /// The zone's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.tz.name()
    }

    /// Start (epoch ms) of the bucket of `unit` holding instant `t_ms`.
    #[must_use]
    pub fn start(&self, unit: Unit, t_ms: i64) -> i64 {
        if unit == Unit::Hour {
            return t_ms.div_euclid(HOUR_MS) * HOUR_MS;
        }
        let date = self.local_date(t_ms);
        if unit == Unit::SixHours {
            return self.first_instant(date, self.hour_of_day(t_ms) / 6 * 6);
        }
        let first = match unit {
            Unit::Hour | Unit::SixHours | Unit::Day => date,
            Unit::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Unit::Month => date.with_day(1).expect("day 1 exists"),
            Unit::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).expect("1 January exists"),
        };
        self.midnight(first)
    }

    /// End (exclusive, epoch ms) of the bucket of `unit` starting at `start_ms`.
    #[must_use]
    pub fn end(&self, unit: Unit, start_ms: i64) -> i64 {
        if unit == Unit::Hour {
            return start_ms + HOUR_MS;
        }
        let date = self.local_date(start_ms);
        if unit == Unit::SixHours {
            let next = self.hour_of_day(start_ms) / 6 * 6 + 6;
            return if next < 24 {
                self.first_instant(date, next)
            } else {
                self.midnight(date + Duration::days(1))
            };
        }
        let next = match unit {
            Unit::Hour | Unit::SixHours | Unit::Day => date + Duration::days(1),
            Unit::Week => date + Duration::days(7),
            Unit::Month => date
                .checked_add_months(chrono::Months::new(1))
                .expect("a month later exists"),
            Unit::Year => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1).expect("a year later"),
        };
        self.midnight(next)
    }

    /// The hour of the day (0–23) in the zone at instant `t_ms`.
    #[must_use]
    pub fn hour_of_day(&self, t_ms: i64) -> usize {
        use chrono::Timelike;
        let utc = chrono::DateTime::from_timestamp_millis(t_ms).unwrap_or_default();
        utc.with_timezone(&self.tz).hour() as usize
    }

    fn local_date(&self, t_ms: i64) -> NaiveDate {
        let utc = chrono::DateTime::from_timestamp_millis(t_ms).unwrap_or_default();
        utc.with_timezone(&self.tz).date_naive()
    }

    /// The first instant of `date` in the zone.
    fn midnight(&self, date: NaiveDate) -> i64 {
        self.first_instant(date, 0)
    }

    /// The first instant of `date` at `hour` o'clock in the zone, or where that falls in
    /// a gap (a DST change; Pacific/Apia skipped 30 December 2011), the first hour after
    /// it that exists.
    fn first_instant(&self, date: NaiveDate, hour: usize) -> i64 {
        let hour = u32::try_from(hour).expect("an hour of the day");
        let mut local = date.and_hms_opt(hour, 0, 0).expect("an hour of the day");
        for _ in 0..48 {
            if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
                return t.timestamp_millis();
            }
            local += Duration::hours(1);
        }
        unreachable!("no zone skips more than a day")
    }

    /// The buckets of `unit` overlapping `[lo, hi)`.
    pub fn overlapping(&self, unit: Unit, lo: i64, hi: i64) -> impl Iterator<Item = (i64, i64)> {
        let cal = *self;
        let mut s = cal.start(unit, lo);
        std::iter::from_fn(move || {
            if s >= hi {
                return None;
            }
            let e = cal.end(unit, s);
            let b = (s, e);
            s = e;
            Some(b)
        })
    }

    /// Tiles `[from, to)` (hour-aligned) with the largest buckets that start where the
    /// previous one ended and fit, `has` telling which rollups exist: years, months,
    /// weeks, days, quarters of a day, then hours.
    pub fn tile(
        &self,
        from: i64,
        to: i64,
        has: &mut dyn FnMut(Unit, i64) -> bool,
    ) -> Vec<(Unit, i64)> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            // The rollups, largest first; hours are always there to take (and not asked
            // for: the caller reads them).
            let unit = Unit::ROLLUPS
                .into_iter()
                .rev()
                .find(|&u| self.start(u, t) == t && self.end(u, t) <= to && has(u, t))
                .unwrap_or(Unit::Hour);
            out.push((unit, t));
            t = self.end(unit, t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn buckets_follow_the_zone_across_dst() {
        let berlin = Calendar::new("Europe/Berlin").unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00, a day of 23 hours.
        let s = berlin.start(Unit::Day, ms("2026-03-29T12:00:00Z"));
        assert_eq!(s, ms("2026-03-28T23:00:00Z"));
        assert_eq!(berlin.end(Unit::Day, s) - s, 23 * HOUR_MS);
        // 2026-10-25: back from 03:00 to 02:00, 25 hours.
        // Its first quarter has 5 hours, the others 6.
        let q = berlin.start(Unit::SixHours, ms("2026-03-29T03:00:00Z"));
        assert_eq!(q, s);
        assert_eq!(berlin.end(Unit::SixHours, q), ms("2026-03-29T04:00:00Z"));
        let q = berlin.start(Unit::SixHours, ms("2026-03-29T21:59:00Z"));
        assert_eq!(q, ms("2026-03-29T16:00:00Z"));
        assert_eq!(berlin.end(Unit::SixHours, q), ms("2026-03-29T22:00:00Z"));
        let s = berlin.start(Unit::Day, ms("2026-10-25T12:00:00Z"));
        assert_eq!(berlin.end(Unit::Day, s) - s, 25 * HOUR_MS);
        // The quarter holding the hour that comes twice has 7 hours.
        let q = berlin.start(Unit::SixHours, ms("2026-10-25T01:30:00Z"));
        assert_eq!(berlin.end(Unit::SixHours, q) - q, 7 * HOUR_MS);
        let seoul = Calendar::new("Asia/Seoul").unwrap();
        assert_eq!(
            seoul.start(Unit::Day, ms("2026-11-23T16:00:00Z")),
            ms("2026-11-23T15:00:00Z")
        );
        // ISO weeks start on Monday (2026-11-23 is one), months and years on the 1st.
        let utc = Calendar::default();
        assert_eq!(
            utc.start(Unit::Week, ms("2026-11-29T23:00:00Z")),
            ms("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            utc.end(Unit::Month, ms("2026-02-01T00:00:00Z")),
            ms("2026-03-01T00:00:00Z")
        );
        assert_eq!(
            seoul.start(Unit::Year, ms("2026-06-01T00:00:00Z")),
            ms("2025-12-31T15:00:00Z")
        );
        assert!(
            Calendar::new("Asia/Kolkata")
                .unwrap_err()
                .contains("whole-hour")
        );
        assert!(
            Calendar::new("Mars/Olympus")
                .unwrap_err()
                .contains("unknown")
        );
    }

    /// What a range merges reads the layout `Sums` is stored in: one stored value comes
    /// back whole, two add up key by key, and bytes it does not know are an error.
    #[test]
    fn stored_sums_merge_back_exactly() {
        let k = |views: u64| KeySums {
            views,
            carts: 2,
            purchases: 3,
            units: 4,
            revenue: 5,
        };
        let a = Sums {
            events: [1, 2, 3, 4],
            products: vec![("p1".into(), k(1)), ("p3".into(), k(3))],
            categories: vec![("c\u{e9}".into(), k(7))],
            queries: vec![("red hat".into(), 2)],
            by_hour: std::array::from_fn(|i| i as u64),
        };
        let b = Sums {
            products: vec![("p2".into(), k(2)), ("p3".into(), k(30))],
            queries: vec![("blue".into(), 1), ("red hat".into(), 5)],
            ..Sums::default()
        };
        let enc = |s: &Sums| bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap();
        let (ea, eb) = (enc(&a), enc(&b));
        assert_eq!(merge_encoded(&[&ea]).unwrap(), a);
        let both = merge_encoded(&[&ea, &eb]).unwrap();
        let mut p3 = k(3);
        p3.add(&k(30));
        assert_eq!(
            both.products,
            vec![("p1".into(), k(1)), ("p2".into(), k(2)), ("p3".into(), p3)]
        );
        assert_eq!(
            both.queries,
            vec![("blue".into(), 1), ("red hat".into(), 7)]
        );
        assert_eq!((both.events, both.by_hour), (a.events, a.by_hour));
        let mut longer = ea.clone();
        longer.push(0);
        assert!(
            merge_encoded(&[&longer])
                .unwrap_err()
                .contains("after the stored sums")
        );
        assert!(merge_encoded(&[&ea[..ea.len() - 1]]).is_err());
    }

    /// Lists of `(name, value)` sorted by name, names from a small alphabet so that lists
    /// share keys, some longer than the eight bytes compared at once.
    fn sorted_list<V: std::fmt::Debug + Clone>(
        value: impl Strategy<Value = V>,
    ) -> impl Strategy<Value = Vec<(String, V)>> {
        proptest::collection::btree_map("[ab\u{e9}]{0,10}", value, 0..12)
            .prop_map(|m| m.into_iter().collect())
    }

    fn key_sums() -> impl Strategy<Value = KeySums> {
        // Every width of varint, summed a few times without overflow.
        let n = prop_oneof![0..251u64, 251..70_000u64, any::<u64>().prop_map(|x| x >> 4)];
        let rev = prop_oneof![0..70_000u128, any::<u128>().prop_map(|x| x >> 4)];
        (n.clone(), n.clone(), n.clone(), n, rev).prop_map(|(v, c, p, u, r)| KeySums {
            views: v,
            carts: c,
            purchases: p,
            units: u,
            revenue: r,
        })
    }

    fn sums() -> impl Strategy<Value = Sums> {
        (
            proptest::array::uniform4(any::<u64>().prop_map(|x| x >> 4)),
            sorted_list(key_sums()),
            sorted_list(key_sums()),
            sorted_list(any::<u64>().prop_map(|x| x >> 4)),
        )
            .prop_map(|(events, products, categories, queries)| Sums {
                events,
                products,
                categories,
                queries,
                by_hour: std::array::from_fn(|i| events[i % 4] / 3),
            })
    }

    proptest! {
        /// The hand-written reader of stored sums adds up what serde's bincode decoding of
        /// them adds up, over every varint width and names sharing their first bytes.
        #[test]
        fn merging_stored_sums_equals_decoding_and_adding(all in proptest::collection::vec(sums(), 0..10)) {
            let enc = |s: &Sums| bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap();
            let blobs: Vec<Vec<u8>> = all.iter().map(enc).collect();
            let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
            let mut want = Sums::default();
            let (mut p, mut c, mut q) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
            for b in &blobs {
                let s: Sums = bincode::serde::decode_from_slice(b, bincode::config::standard()).unwrap().0;
                add_counts(&mut want.events, &s.events);
                add_counts(&mut want.by_hour, &s.by_hour);
                for (k, v) in s.products { p.entry(k).or_insert_with(KeySums::default).add(&v); }
                for (k, v) in s.categories { c.entry(k).or_insert_with(KeySums::default).add(&v); }
                for (k, v) in s.queries { *q.entry(k).or_insert(0) += v; }
            }
            want.products = p.into_iter().collect();
            want.categories = c.into_iter().collect();
            want.queries = q.into_iter().collect();
            prop_assert_eq!(merge_encoded(&refs).unwrap(), want);
        }
    }

    #[test]
    fn a_range_is_tiled_by_the_largest_buckets_that_exist() {
        let utc = Calendar::default();
        let from = ms("2026-11-22T16:00:00Z");
        let to = ms("2026-12-02T09:00:00Z");
        let tiles = utc.tile(from, to, &mut |_, _| true);
        let units: Vec<Unit> = tiles.iter().map(|t| t.0).collect();
        // 2 hours and the last quarter of the 22nd, the week from Monday the 23rd, the
        // 30th and December's 1st as days (December does not fit), the first quarter and
        // 3 hours of the 2nd.
        assert_eq!(
            units,
            [
                vec![Unit::Hour; 2],
                vec![
                    Unit::SixHours,
                    Unit::Week,
                    Unit::Day,
                    Unit::Day,
                    Unit::SixHours
                ],
                vec![Unit::Hour; 3]
            ]
            .concat()
        );
        // Without rollups, hours.
        assert_eq!(utc.tile(from, to, &mut |_, _| false).len(), 233);
        // The tiles cover the range exactly, one after the other.
        let mut t = from;
        for (u, s) in tiles {
            assert_eq!(s, t);
            t = utc.end(u, s);
        }
        assert_eq!(t, to);
    }
}
