//! Result fingerprints: a content hash of each final window, written with the window.
//!
//! The hash of a window is xxh3-128 over its canonical export rows: for every aggregate in
//! key order ([`Aggregate::ALL`]), every row in store-key order, the JSON line `kappa
//! export` writes for it without its `version` field, each followed by `\n`. It depends on
//! nothing but the window's results, so two versions, two stores or two machines that
//! computed the same window have the same hash. The digest of a list of windows is
//! xxh3-128 over `(size ms, start ms, hash)` of each, in (size, start) order, as 8 + 8 + 16
//! little-endian bytes.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3Default;

use super::rows::{Aggregate, Row};

/// One export line's fields, without the version: `aggregate, size, window_start,
/// window_end` and the row's own fields, in that order. `kappa export` writes the version
/// first and then these.
#[must_use]
pub fn export_fields(agg: Aggregate, size_ms: i64, start_ms: i64, row: &Row) -> Map<String, Value> {
    use crate::event::time::format_rfc3339_ms;
    let mut obj = Map::new();
    obj.insert("aggregate".into(), agg.as_str().into());
    obj.insert("size".into(), crate::event::time::size_name(size_ms).into());
    obj.insert("window_start".into(), format_rfc3339_ms(start_ms).into());
    obj.insert(
        "window_end".into(),
        format_rfc3339_ms(start_ms.saturating_add(size_ms)).into(),
    );
    obj.extend(row.to_json());
    obj
}

/// Hashes one window's rows as they come in (aggregate, key) order.
pub(crate) struct WindowHasher {
    h: Xxh3Default,
    /// `,"size":…,"window_start":…,"window_end":…` of the window, formatted once.
    times: Vec<u8>,
    line: Vec<u8>,
}

impl WindowHasher {
    pub(crate) fn new(size_ms: i64, start_ms: i64) -> Self {
        use crate::event::time::format_rfc3339_ms;
        let mut times = Vec::new();
        for (key, value) in [
            ("size", crate::event::time::size_name(size_ms).to_string()),
            ("window_start", format_rfc3339_ms(start_ms)),
            (
                "window_end",
                format_rfc3339_ms(start_ms.saturating_add(size_ms)),
            ),
        ] {
            times.push(b',');
            json_to(&mut times, key);
            times.push(b':');
            json_to(&mut times, &value);
        }
        Self {
            h: Xxh3Default::new(),
            times,
            line: Vec::new(),
        }
    }

    /// Adds one row; rows must come in store-key order. The line is the bytes
    /// `serde_json` writes for [`export_fields`] (compact: `{"k":v,…}`), written without
    /// building that map (`export_lines_hash_as_the_window_hasher` checks they agree).
    pub(crate) fn row(&mut self, agg: Aggregate, row: &Row) {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"aggregate\":");
        json_to(line, agg.as_str());
        line.extend_from_slice(&self.times);
        for (key, value) in row.to_json() {
            line.push(b',');
            json_to(line, &key);
            line.push(b':');
            json_to(line, &value);
        }
        line.push(b'}');
        self.h.update(line);
        self.h.update(b"\n");
    }

    pub(crate) fn finish(&self) -> u128 {
        self.h.digest128()
    }
}

/// Appends `v` as compact JSON.
fn json_to(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, v).expect("strings and JSON values always serialise");
}

/// The fingerprint of a window given as its rows per aggregate (any order: they are put
/// in store-key order first).
pub(crate) fn of_rows(size_ms: i64, start_ms: i64, aggs: &[(Aggregate, Vec<Row>)]) -> u128 {
    let mut h = WindowHasher::new(size_ms, start_ms);
    let mut aggs: Vec<&(Aggregate, Vec<Row>)> = aggs.iter().collect();
    aggs.sort_by_key(|(a, _)| *a as u8);
    for (agg, rows) in aggs {
        let mut keyed: Vec<(String, &Row)> = rows.iter().map(|r| (r.key(), r)).collect();
        keyed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (_, row) in keyed {
            h.row(*agg, row);
        }
    }
    h.finish()
}

/// One final window's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPrint {
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// xxh3-128 of its canonical export rows.
    pub hash: u128,
}

/// The digest of windows listed in (size, start) order.
#[must_use]
pub fn digest(prints: &[WindowPrint]) -> u128 {
    let mut h = Xxh3Default::new();
    for p in prints {
        h.update(&p.size_ms.to_le_bytes());
        h.update(&p.start_ms.to_le_bytes());
        h.update(&p.hash.to_le_bytes());
    }
    h.digest128()
}

/// A hash as 32 lowercase hex digits.
#[must_use]
pub fn hex(h: u128) -> String {
    format!("{h:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{FinalWindow, ProductSales};

    /// The hasher writes each row's line itself: the same bytes as serialising
    /// [`export_fields`] (what `kappa export` writes after the version).
    #[test]
    fn export_lines_hash_as_the_window_hasher() {
        let p = |id: &str, units: u64| ProductSales {
            product_id: id.into(),
            units,
            revenue_minor: u128::from(units) * 1999,
        };
        let w = FinalWindow {
            size_ms: 60_000,
            start_ms: 1_764_000_000_000,
            sales_by_category: Vec::new(),
            top_by_units: vec![p("p_\"1\"", 3), p("p_é", 2)],
            top_by_revenue: vec![p("p_2", 1)],
            events_by_type: [1, 2, 3, 4],
            top_searches: Vec::new(),
            sums: None,
        };
        let rows = super::super::rows::rows_of(&w);
        let mut want = Xxh3Default::new();
        let mut h = WindowHasher::new(w.size_ms, w.start_ms);
        for (agg, list) in &rows {
            for row in list {
                let line = serde_json::to_vec(&export_fields(*agg, w.size_ms, w.start_ms, row));
                want.update(&line.unwrap());
                want.update(b"\n");
                h.row(*agg, row);
            }
        }
        assert!(rows.iter().map(|r| r.1.len()).sum::<usize>() > 4);
        assert_eq!(h.finish(), want.digest128());
    }
}
