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
    size_ms: i64,
    start_ms: i64,
}

impl WindowHasher {
    pub(crate) fn new(size_ms: i64, start_ms: i64) -> Self {
        Self {
            h: Xxh3Default::new(),
            size_ms,
            start_ms,
        }
    }

    /// Adds one row; rows must come in store-key order.
    pub(crate) fn row(&mut self, agg: Aggregate, row: &Row) {
        let line = serde_json::to_vec(&export_fields(agg, self.size_ms, self.start_ms, row))
            .expect("a JSON map always serialises");
        self.h.update(&line);
        self.h.update(b"\n");
    }

    pub(crate) fn finish(&self) -> u128 {
        self.h.digest128()
    }
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
