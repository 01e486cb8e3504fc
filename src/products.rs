//! The product catalogue as a stream (issue 18, item 4): entries valid from a time, and the
//! as-of lookup that fills an event's category and price from the entry valid at the
//! event's time.
//!
//! A record of `shop.products` is `{"schema":"product/1", "product_id", "name", "brand",
//! "category", "price", "valid_from"}` (`price` a decimal string like the events', in the
//! configured currency; `valid_from` RFC 3339). The key is (product, valid_from): a later
//! record with the same key replaces the earlier one, as on a compacted topic. A CSV with
//! the header `product_id,name,brand,category,price,valid_from` gives the same records
//! ([`from_csv`]); `generator::products_csv` writes one for the generator's catalogue.
//!
//! Every events pipeline reads the stream into an [`AsOf`] (`pipeline/catalogue.rs`) and
//! the decoder joins with it (`event::decode_joined`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::event::money::{Currency, format_minor, parse_price};
use crate::event::object::non_empty;
use crate::event::time::{format_rfc3339_ms, parse_rfc3339_ms};
use crate::event::{DecodeError, InvalidKind};

/// The `schema` of a catalogue record.
pub const PRODUCT_SCHEMA: &str = "product/1";

/// The CSV header [`from_csv`] reads.
pub const CSV_HEADER: [&str; 6] = [
    "product_id",
    "name",
    "brand",
    "category",
    "price",
    "valid_from",
];

/// One product as of a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `p_N`.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Brand.
    pub brand: String,
    /// Category, as events carry it.
    pub category: String,
    /// Price in hundredths of the currency.
    pub price: u64,
    /// From when it holds (epoch ms).
    pub valid_from_ms: i64,
}

impl Entry {
    /// The record key, `product_id@valid_from`: what a compacted topic keeps one record of.
    #[must_use]
    pub fn key(&self) -> String {
        format!(
            "{}@{}",
            self.product_id,
            format_rfc3339_ms(self.valid_from_ms)
        )
    }

    /// The record of `shop.products`.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        let v = json!({
            "schema": PRODUCT_SCHEMA,
            "product_id": self.product_id,
            "name": self.name,
            "brand": self.brand,
            "category": self.category,
            "price": format_minor(u128::from(self.price)),
            "valid_from": format_rfc3339_ms(self.valid_from_ms),
        });
        serde_json::to_vec(&v).expect("a JSON value serialises")
    }
}

/// An entry from its fields (shared by the JSON and CSV readers).
fn entry(
    field: &dyn Fn(&str) -> Result<String, DecodeError>,
    currency: Currency,
) -> Result<Entry, DecodeError> {
    let price_text = field("price")?;
    let price = parse_price(&price_text, currency)
        .map_err(|e| DecodeError::new(InvalidKind::BadValue, format!("{e}: {price_text:?}")))?;
    let valid_from = field("valid_from")?;
    let valid_from_ms = parse_rfc3339_ms(&valid_from).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::BadValue,
            format!("valid_from is not an RFC 3339 time: {valid_from:?}"),
        )
    })?;
    Ok(Entry {
        product_id: field("product_id")?,
        name: field("name")?,
        brand: field("brand")?,
        category: field("category")?,
        price,
        valid_from_ms,
    })
}

/// Checks one record of `shop.products`.
///
/// # Errors
/// Not JSON, another schema, a missing, mistyped or bad field (the kinds the events use).
pub fn decode(value: &[u8], currency: Currency) -> Result<Entry, DecodeError> {
    let v: Value = serde_json::from_slice(value)
        .map_err(|e| DecodeError::new(InvalidKind::NotJson, format!("not JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(DecodeError::new(InvalidKind::NotJson, "not a JSON object"));
    };
    let schema = non_empty(&o, "schema")?;
    if schema != PRODUCT_SCHEMA {
        return Err(DecodeError::new(
            InvalidKind::UnknownSchema,
            format!("not a {PRODUCT_SCHEMA} record: schema {schema:?}"),
        ));
    }
    entry(&|name| non_empty(&o, name).map(str::to_string), currency)
}

/// The entries of a catalogue CSV (header [`CSV_HEADER`], in any column order).
///
/// # Errors
/// A missing column, a row that does not parse: one line naming the CSV line and why.
pub fn from_csv(input: impl std::io::Read, currency: Currency) -> Result<Vec<Entry>, String> {
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = r
        .headers()
        .map_err(|e| format!("catalogue CSV: {e}"))?
        .clone();
    let mut column = HashMap::new();
    for name in CSV_HEADER {
        let at = header.iter().position(|h| h == name).ok_or_else(|| {
            format!(
                "catalogue CSV: no column {name:?} (the header must name {})",
                CSV_HEADER.join(",")
            )
        })?;
        column.insert(name, at);
    }
    let mut out = Vec::new();
    for row in r.records() {
        let row = row.map_err(|e| format!("catalogue CSV: {e}"))?;
        let line = row.position().map_or(0, csv::Position::line);
        let field = |name: &str| -> Result<String, DecodeError> {
            let v = row.get(column[name]).unwrap_or_default();
            if v.is_empty() {
                return Err(DecodeError::new(
                    InvalidKind::MissingField,
                    format!("{name} is empty"),
                ));
            }
            Ok(v.to_string())
        };
        out.push(entry(&field, currency).map_err(|e| format!("catalogue CSV line {line}: {e}"))?);
    }
    Ok(out)
}

/// Every product's entries by validity start: the as-of lookup. Each entry carries the
/// epoch it was read in (`pipeline/catalogue.rs`): a lookup as of an epoch sees the entries
/// of that epoch and earlier ones only, so an event is joined with exactly the entries read
/// before it, whenever it is read again.
#[derive(Debug, Clone, Default)]
pub struct AsOf {
    /// Per product, per `valid_from`, every record of that key in read order with its epoch.
    by_product: HashMap<String, BTreeMap<i64, Vec<(u32, Entry)>>>,
}

impl AsOf {
    /// Adds `e` read in epoch 0 (a catalogue read at once).
    pub fn insert(&mut self, e: Entry) {
        self.insert_in(e, 0);
    }

    /// Adds `e`, read in `epoch`; a later record of the same product and `valid_from`
    /// replaces it for the lookups of its epoch on.
    pub fn insert_in(&mut self, e: Entry, epoch: u32) {
        self.by_product
            .entry(e.product_id.clone())
            .or_default()
            .entry(e.valid_from_ms)
            .or_default()
            .push((epoch, e));
    }

    /// The entry of `product_id` valid at `ts_ms` among every entry read: the one with the
    /// latest `valid_from` at or before it.
    ///
    /// # Errors
    /// None valid then: why, for the dead-letter store.
    pub fn at(&self, product_id: &str, ts_ms: i64) -> Result<&Entry, String> {
        self.at_epoch(product_id, ts_ms, u32::MAX)
    }

    /// [`AsOf::at`] among the entries read in `epoch` or before.
    ///
    /// # Errors
    /// None valid then: why, for the dead-letter store.
    pub fn at_epoch(&self, product_id: &str, ts_ms: i64, epoch: u32) -> Result<&Entry, String> {
        fn seen(records: &[(u32, Entry)], epoch: u32) -> Option<&Entry> {
            records
                .iter()
                .rev()
                .find(|(e, _)| *e <= epoch)
                .map(|(_, entry)| entry)
        }
        let entries = self.by_product.get(product_id);
        if let Some(e) =
            entries.and_then(|m| m.range(..=ts_ms).rev().find_map(|(_, r)| seen(r, epoch)))
        {
            return Ok(e);
        }
        let first = entries.and_then(|m| m.iter().find(|(_, r)| seen(r, epoch).is_some()));
        Err(match first {
            None => format!("no catalogue entry for {product_id}"),
            Some((&from, _)) => format!(
                "no catalogue entry for {product_id} at {} (its first is valid from {})",
                format_rfc3339_ms(ts_ms),
                format_rfc3339_ms(from)
            ),
        })
    }

    /// Products with at least one entry.
    #[must_use]
    pub fn products(&self) -> usize {
        self.by_product.len()
    }

    /// Entries held (one per product and `valid_from`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_product.values().map(BTreeMap::len).sum()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_product.is_empty()
    }
}

impl crate::event::Join for AsOf {
    fn lookup(&self, product: &str, ts_ms: i64) -> Result<(&str, u64), String> {
        self.at(product, ts_ms)
            .map(|e| (e.category.as_str(), e.price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, price: u64, from: &str) -> Entry {
        Entry {
            product_id: id.into(),
            name: "Trail runner".into(),
            brand: "Kestrel".into(),
            category: "shoes".into(),
            price,
            valid_from_ms: parse_rfc3339_ms(from).unwrap(),
        }
    }

    #[test]
    fn a_price_change_holds_from_its_valid_from_exactly() {
        let mut t = AsOf::default();
        t.insert(e("p_1", 5900, "2026-11-23T00:00:00Z"));
        t.insert(e("p_1", 4900, "2026-11-23T12:00:00Z"));
        let at = |t: &AsOf, ts: &str| t.at("p_1", parse_rfc3339_ms(ts).unwrap()).map(|e| e.price);
        assert_eq!(at(&t, "2026-11-23T11:59:59.999Z"), Ok(5900));
        assert_eq!(at(&t, "2026-11-23T12:00:00Z"), Ok(4900));
        assert_eq!(at(&t, "2027-01-01T00:00:00Z"), Ok(4900));
        assert_eq!(
            at(&t, "2026-11-22T23:59:59Z"),
            Err("no catalogue entry for p_1 at 2026-11-22T23:59:59Z (its first is valid from 2026-11-23T00:00:00Z)".into())
        );
        assert_eq!(t.at("p_2", 0).unwrap_err(), "no catalogue entry for p_2");
        // The same key again replaces (a compacted topic's last write).
        t.insert(e("p_1", 4500, "2026-11-23T12:00:00Z"));
        assert_eq!(at(&t, "2026-11-23T13:00:00Z"), Ok(4500));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn records_round_trip_and_bad_ones_name_the_field() {
        let x = e("p_7", 1999, "2026-11-23T08:00:00Z");
        assert_eq!(decode(&x.to_json(), Currency::EUR), Ok(x.clone()));
        let good = String::from_utf8(x.to_json()).unwrap();
        for (bad, kind) in [
            (
                good.replace("\"19.99\"", "\"19.999\""),
                InvalidKind::BadValue,
            ),
            (good.replace("\"19.99\"", "19.99"), InvalidKind::BadType),
            (
                good.replace("product/1", "product/2"),
                InvalidKind::UnknownSchema,
            ),
            (
                good.replace("\"brand\":\"Kestrel\",", ""),
                InvalidKind::MissingField,
            ),
            (
                good.replace("2026-11-23T08:00:00Z", "noon"),
                InvalidKind::BadValue,
            ),
            ("{".to_string(), InvalidKind::NotJson),
        ] {
            assert_eq!(
                decode(bad.as_bytes(), Currency::EUR).unwrap_err().kind,
                kind,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_csv_reads_in_any_column_order_and_errors_name_the_line() {
        let csv = "valid_from,product_id,name,brand,category,price\n\
                   2026-11-23T00:00:00Z,p_1,\"Shoe, trail\",Kestrel,shoes,59.00\n\
                   2026-11-23T12:00:00Z,p_1,\"Shoe, trail\",Kestrel,shoes,49\n\
                   2026-11-23T00:00:00Z,p_2,러닝화,한강,shoes, 39.90 \n";
        let entries = from_csv(csv.as_bytes(), Currency::EUR).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].name, "Shoe, trail");
        assert_eq!(entries[1].price, 4900);
        assert_eq!(entries[2].name, "러닝화");
        assert_eq!(entries[2].price, 3990);
        let e = from_csv("product_id,name\np_1,x\n".as_bytes(), Currency::EUR).unwrap_err();
        assert!(e.starts_with("catalogue CSV: no column \"brand\""), "{e}");
        let bad = csv.replace("59.00", "59,00");
        let e = from_csv(bad.as_bytes(), Currency::EUR).unwrap_err();
        assert!(e.starts_with("catalogue CSV"), "{e}");
        let bad = csv.replace(" 39.90 ", "cheap");
        let e = from_csv(bad.as_bytes(), Currency::EUR).unwrap_err();
        assert!(e.starts_with("catalogue CSV line 4: bad_value"), "{e}");
    }
}

/// The batch answer of the as-of join (for the tests): among `entries`, in the order
/// they were appended, the entry of `p_{product}` with the latest `valid_from` at or
/// before `ts`, the last appended of equal ones.
#[cfg(test)]
pub(crate) fn model_entry(entries: &[Entry], product: u8, ts: i64) -> Option<&Entry> {
    let id = format!("p_{product}");
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.product_id == id && e.valid_from_ms <= ts)
        .max_by_key(|(i, e)| (e.valid_from_ms, *i))
        .map(|(_, e)| e)
}

/// The as-of join through the decoder, against a batch model: catalogue entries and events
/// interleaved at random (with replacements of an entry, events before any entry, events
/// that carry their own category and price), each event joined with the entries appended
/// before it — what a live pipeline does — and, after all of them, with every entry — what
/// a replay does.
#[cfg(test)]
mod join_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::{Rules, decode_joined};

    const BASE: i64 = 1_700_000_000_000;

    #[derive(Debug, Clone)]
    enum Op {
        Entry {
            product: u8,
            from: i64,
            price: u64,
            category: u8,
        },
        Event {
            product: u8,
            ts: i64,
            own: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, 0i64..20, 1u64..10_000, 0u8..3).prop_map(
                |(product, from, price, category)| Op::Entry {
                    product,
                    from: BASE + from * 60_000,
                    price,
                    category,
                }
            ),
            (0u8..5, -2i64..25, prop::bool::weighted(0.2)).prop_map(|(product, ts, own)| {
                Op::Event {
                    product,
                    ts: BASE + ts * 60_000 + 30_000,
                    own,
                }
            }),
        ]
    }

    fn entry(product: u8, from: i64, price: u64, category: u8) -> Entry {
        Entry {
            product_id: format!("p_{product}"),
            name: "n".into(),
            brand: "b".into(),
            category: ["books", "shoes", "toys"][usize::from(category)].into(),
            price,
            valid_from_ms: from,
        }
    }

    fn record(product: u8, ts: i64, own: bool) -> String {
        let own = if own {
            r#","category":"own","price":"1.00""#
        } else {
            ""
        };
        format!(
            r#"{{"schema":1,"event_id":"e","event_type":"purchase","user_id":"u","session_id":"s","product_id":"p_{product}","quantity":1,"ts":"{}"{own}}}"#,
            crate::event::time::format_rfc3339_ms(ts)
        )
    }

    /// The batch answer: the entry of the product with the latest `valid_from` at or
    /// before `ts` among `entries`, the last appended of equal ones.
    fn model(entries: &[Entry], product: u8, ts: i64, own: bool) -> Option<(String, u64)> {
        if own {
            return Some(("own".into(), 100));
        }
        model_entry(entries, product, ts).map(|e| (e.category.clone(), e.price))
    }

    fn joined(asof: &AsOf, product: u8, ts: i64, own: bool) -> Option<(String, u64)> {
        let rec = record(product, ts, own);
        match decode_joined(rec.as_bytes(), &Rules::new(65_536), Some(asof)) {
            Ok(ev) => Some((ev.category.into_owned(), ev.price_minor)),
            Err(e) => {
                assert_eq!(e.kind, InvalidKind::NoCatalogueEntry, "{e}");
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn events_join_the_entries_appended_before_them_and_a_replay_joins_all(
            ops in prop::collection::vec(op(), 0..60),
        ) {
            let mut asof = AsOf::default();
            let mut appended = Vec::new();
            let mut events = Vec::new();
            for op in &ops {
                match *op {
                    Op::Entry { product, from, price, category } => {
                        let e = entry(product, from, price, category);
                        asof.insert(e.clone());
                        appended.push(e);
                    }
                    Op::Event { product, ts, own } => {
                        prop_assert_eq!(
                            joined(&asof, product, ts, own),
                            model(&appended, product, ts, own),
                            "live, after {} entries", appended.len()
                        );
                        events.push((product, ts, own));
                    }
                }
            }
            // A replay reads the whole catalogue first.
            for &(product, ts, own) in &events {
                prop_assert_eq!(joined(&asof, product, ts, own), model(&appended, product, ts, own));
            }
        }
    }
}
