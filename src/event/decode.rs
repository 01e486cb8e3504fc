//! Decoding a record value into an [`Event`]: JSON, schema dispatch, validation.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::invalid::{DecodeError, InvalidKind};
use super::money::{Currency, bounded, parse_price};
use super::scan::{Fields, RawPrice};
use super::time::{MAX_EVENT_MS, MIN_EVENT_MS, format_rfc3339_ms, parse_rfc3339_ms};
use super::{Event, EventType, KNOWN_SCHEMAS, query_is_blank};

/// Largest accepted quantity on one event.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// A string that borrows from the input when it has no escapes. (serde's own `Cow<str>`
/// always copies when wrapped in an `Option`.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Every field any known schema version may carry. Unknown fields are skipped by serde.
#[derive(Deserialize)]
struct Wire<'a> {
    schema: Option<u64>,
    #[serde(borrow)]
    event_id: Option<Str<'a>>,
    #[serde(borrow)]
    event_type: Option<Str<'a>>,
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
    #[serde(borrow)]
    session_id: Option<Str<'a>>,
    #[serde(borrow)]
    product_id: Option<Str<'a>>,
    #[serde(borrow)]
    category: Option<Str<'a>>,
    #[serde(borrow)]
    price: Option<&'a RawValue>,
    quantity: Option<i64>,
    #[serde(borrow)]
    ts: Option<Str<'a>>,
    #[serde(borrow)]
    query: Option<Str<'a>>,
    /// Schema 2: integer price in minor units (replaces `price`).
    unit_price_minor: Option<i64>,
    /// Schema 2: ISO 4217 code of `unit_price_minor`.
    #[serde(borrow)]
    currency: Option<Str<'a>>,
    /// Schema 2: `quantity` renamed.
    qty: Option<i64>,
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, DecodeError> {
    v.ok_or_else(|| DecodeError::new(InvalidKind::MissingField, format!("missing field `{name}`")))
}

fn price_of(raw: RawPrice<'_>, currency: Currency) -> Result<u64, DecodeError> {
    let (digits, text) = match raw {
        RawPrice::Str(inner) => (inner, inner),
        RawPrice::Num(n) => (n, n),
        RawPrice::Other(text) => {
            return Err(DecodeError::new(
                InvalidKind::BadType,
                format!("price must be a decimal string or number, got {text}"),
            ));
        }
    };
    parse_price(digits, currency)
        .map_err(|e| DecodeError::new(InvalidKind::BadValue, format!("{e}: {text}")))
}

/// A set of schema versions (of those this build knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schemas(u64);

impl Schemas {
    /// The known versions among `versions`.
    #[must_use]
    pub fn of(versions: &[u64]) -> Self {
        Self(
            versions
                .iter()
                .filter(|v| KNOWN_SCHEMAS.contains(v))
                .fold(0, |set, v| set | 1 << v),
        )
    }

    /// Whether `version` is in the set.
    #[must_use]
    pub fn contains(self, version: u64) -> bool {
        version < 64 && self.0 & (1 << version) != 0
    }
}

/// What a configuration accepts: the record size limit, the schema versions and the
/// currency of prices (`pipeline.max-record-bytes`, `accept-schemas`, `currency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Records larger than this are `oversize`.
    pub max_bytes: usize,
    /// Schema versions decoded; others are `unknown_schema`.
    pub schemas: Schemas,
    /// Schema 2 prices in another currency are `currency_mismatch`; schema 1 prices are in
    /// this currency.
    pub currency: Currency,
}

impl Rules {
    /// Every known schema, euros, and `max_bytes`.
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            schemas: Schemas::of(KNOWN_SCHEMAS),
            currency: Currency::EUR,
        }
    }
}

/// [`decode_with`] with `serde_json` (borrowed) reading the fields: the decoder kappa
/// used before its own scanner; kept to check the scanner against (tests, the `decode`
/// fuzz target).
#[doc(hidden)]
pub fn decode_serde<'a>(value: &'a [u8], rules: &Rules) -> Result<Event<'a>, DecodeError> {
    check_size(value, rules.max_bytes)?;
    build(serde_fields(value)?, rules, None)
}

/// Records larger than `max_bytes` are rejected before parsing.
pub(crate) fn check_size(value: &[u8], max_bytes: usize) -> Result<(), DecodeError> {
    if value.len() > max_bytes {
        return Err(DecodeError::new(
            InvalidKind::Oversize,
            format!("record is {} bytes, limit {max_bytes}", value.len()),
        ));
    }
    Ok(())
}

fn serde_fields(value: &[u8]) -> Result<Fields<'_>, DecodeError> {
    // Like the scanner: any other JSON value at the top is a type error, but only once it
    // is read whole (serde would read an array as the struct's fields, and call `[[[`
    // unterminated a type error).
    let json_ws = |c: &&u8| matches!(c, b' ' | b'\n' | b'\r' | b'\t');
    if value.iter().find(|c| !json_ws(c)) != Some(&b'{') {
        serde_json::from_slice::<serde_json::Value>(value)
            .map_err(|e| DecodeError::new(InvalidKind::NotJson, e.to_string()))?;
        return Err(DecodeError::new(
            InvalidKind::BadType,
            "invalid type: expected a JSON object",
        ));
    }
    let w: Wire<'_> = serde_json::from_slice(value).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => {
                let msg = e.to_string();
                if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
                    InvalidKind::BadType
                } else if msg.starts_with("missing field") {
                    InvalidKind::MissingField
                } else {
                    InvalidKind::BadValue
                }
            }
            _ => InvalidKind::NotJson,
        };
        DecodeError::new(kind, e.to_string())
    })?;
    let price = w.price.map(|raw| {
        let text = raw.get();
        if let Some(inner) = text.strip_prefix('"') {
            RawPrice::Str(inner.strip_suffix('"').unwrap_or(inner))
        } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            RawPrice::Num(text)
        } else {
            RawPrice::Other(text)
        }
    });
    Ok(Fields {
        schema: w.schema,
        event_id: w.event_id.map(|s| s.0),
        event_type: w.event_type.map(|s| s.0),
        user_id: w.user_id.map(|s| s.0),
        session_id: w.session_id.map(|s| s.0),
        product_id: w.product_id.map(|s| s.0),
        category: w.category.map(|s| s.0),
        price,
        quantity: w.quantity,
        ts: w.ts.map(|s| s.0),
        query: w.query.map(|s| s.0),
        unit_price_minor: w.unit_price_minor,
        currency: w.currency.map(|s| s.0),
        qty: w.qty,
    })
}

/// Decodes one record value. `max_bytes` is the size limit (the record is rejected before
/// parsing when larger).
///
/// # Errors
/// A [`DecodeError`] naming what is wrong; the caller dead-letters the record.
pub fn decode(value: &[u8], max_bytes: usize) -> Result<Event<'_>, DecodeError> {
    decode_with(value, &Rules::new(max_bytes))
}

/// [`decode`] under a configuration's [`Rules`] (a version configured for schema 1 only
/// dead-letters schema 2 records, as a build that predates it would).
///
/// # Errors
/// A [`DecodeError`] naming what is wrong; the caller dead-letters the record.
pub fn decode_with<'a>(value: &'a [u8], rules: &Rules) -> Result<Event<'a>, DecodeError> {
    decode_joined(value, rules, None)
}

/// Fills what an event omits — its category, its price — from the product catalogue
/// valid at the event's time (issue 18, [`crate::products::AsOf`]).
pub trait Join: Sync {
    /// The category and unit price (hundredths of the configured currency) of `product`
    /// at `ts_ms`.
    ///
    /// # Errors
    /// No entry valid then: why, for the dead-letter store.
    fn lookup(&self, product: &str, ts_ms: i64) -> Result<(&str, u64), String>;
}

/// [`decode_with`], filling a product event's missing `category` and price from
/// `catalogue` (without one they are missing fields, as always). An event that carries
/// them keeps its own.
///
/// # Errors
/// As [`decode_with`]; [`InvalidKind::NoCatalogueEntry`] when the catalogue has nothing
/// for the product at the event's time.
pub fn decode_joined<'a>(
    value: &'a [u8],
    rules: &Rules,
    catalogue: Option<&dyn Join>,
) -> Result<Event<'a>, DecodeError> {
    check_size(value, rules.max_bytes)?;
    let w = super::scan::scan(value)?;
    build(w, rules, catalogue)
}

/// [`decode_joined`], also taking out the values of the declared paths `paths` into `out`
/// (issue 20) in the same pass over the record: a key no path names costs what it did.
///
/// # Errors
/// As [`decode_joined`] (`out` is then left as the scan got it).
pub fn decode_capturing<'a>(
    value: &'a [u8],
    rules: &Rules,
    catalogue: Option<&dyn Join>,
    paths: &crate::declared::Paths,
    out: &mut crate::declared::Values<'a>,
) -> Result<Event<'a>, DecodeError> {
    check_size(value, rules.max_bytes)?;
    paths.reset(out);
    let capture = super::scan::Capture {
        root: paths.root(),
        out,
    };
    let w = super::scan::scan_capturing(value, Some(capture))?;
    build(w, rules, catalogue)
}

/// Checks and upcasts scanned fields into an [`Event`].
fn build<'a>(
    w: Fields<'a>,
    rules: &Rules,
    catalogue: Option<&dyn Join>,
) -> Result<Event<'a>, DecodeError> {
    let schema = required(w.schema, "schema")?;
    if !rules.schemas.contains(schema) {
        return Err(DecodeError::new(
            InvalidKind::UnknownSchema,
            format!("unknown schema version {schema}"),
        ));
    }
    let event_id = required(w.event_id, "event_id")?;
    if event_id.is_empty() {
        return Err(DecodeError::new(InvalidKind::BadValue, "event_id is empty"));
    }
    let type_name = required(w.event_type, "event_type")?;
    let event_type = EventType::parse(&type_name).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::UnknownEventType,
            format!("unknown event_type {type_name:?}"),
        )
    })?;
    required(w.user_id, "user_id")?;
    required(w.session_id, "session_id")?;
    let ts_ms = event_time(&required(w.ts, "ts")?)?;
    if event_type == EventType::Search {
        let query = required(w.query, "query")?;
        if query_is_blank(&query) {
            return Err(DecodeError::new(
                InvalidKind::EmptyQuery,
                format!("query {query:?} is empty once normalised"),
            ));
        }
        return Ok(Event {
            event_id,
            event_type,
            ts_ms,
            product_id: Cow::Borrowed(""),
            category: Cow::Borrowed(""),
            price_minor: 0,
            quantity: 0,
            query,
        });
    }
    let product_id = required(w.product_id, "product_id")?;
    let price_absent = if schema == 2 {
        w.unit_price_minor.is_none()
    } else {
        w.price.is_none()
    };
    let joined = join(
        catalogue,
        &product_id,
        ts_ms,
        w.category.is_none() || price_absent,
    )?;
    let category = match (w.category, joined) {
        (None, Some((c, _))) => Cow::Owned(c.to_string()),
        (c, _) => required(c, "category")?,
    };
    if product_id.is_empty() || category.is_empty() {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            "product_id and category must not be empty",
        ));
    }
    // Upcasting: schema 2 spells the price as integer minor units with a currency and
    // renames `quantity` to `qty`; both become the one internal event.
    let (price_minor, quantity) = if let (true, Some((_, price))) = (price_absent, joined) {
        (price, if schema == 2 { w.qty } else { w.quantity })
    } else if schema == 2 {
        let hundredths = minor_price(
            required(w.unit_price_minor, "unit_price_minor")?,
            w.currency,
            rules.currency,
        )?;
        (hundredths, w.qty)
    } else {
        (
            price_of(required(w.price, "price")?, rules.currency)?,
            w.quantity,
        )
    };
    let quantity = match (quantity, event_type) {
        (None, EventType::View) => 1,
        (q, _) => quantity_of(required(q, if schema == 2 { "qty" } else { "quantity" })?)?,
    };
    Ok(Event {
        event_id,
        event_type,
        ts_ms,
        product_id,
        category,
        price_minor,
        quantity,
        query: Cow::Borrowed(""),
    })
}

/// What the catalogue says of `product` at `ts_ms`, when the event leaves something out
/// (`absent`) and there is a catalogue.
fn join<'c>(
    catalogue: Option<&'c dyn Join>,
    product: &str,
    ts_ms: i64,
    absent: bool,
) -> Result<Option<(&'c str, u64)>, DecodeError> {
    match catalogue {
        Some(c) if absent => c
            .lookup(product, ts_ms)
            .map(Some)
            .map_err(|why| DecodeError::new(InvalidKind::NoCatalogueEntry, why)),
        _ => Ok(None),
    }
}

/// An event time: RFC 3339, within the range kappa windows.
fn event_time(ts_text: &str) -> Result<i64, DecodeError> {
    let ts_ms = parse_rfc3339_ms(ts_text).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::BadValue,
            format!("ts is not an RFC 3339 time: {ts_text:?}"),
        )
    })?;
    if !(MIN_EVENT_MS..=MAX_EVENT_MS).contains(&ts_ms) {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            format!(
                "ts {ts_text:?} is outside the event times kappa windows ({} to {})",
                format_rfc3339_ms(MIN_EVENT_MS),
                format_rfc3339_ms(MAX_EVENT_MS)
            ),
        ));
    }
    Ok(ts_ms)
}

/// Schema 2's price: integer minor units of `currency`, which must be the configured one;
/// in hundredths, bounded. (Checked in this order: the sign, then the currency.)
fn minor_price(
    minor: i64,
    currency: Option<Cow<'_, str>>,
    configured: Currency,
) -> Result<u64, DecodeError> {
    let minor_units = u64::try_from(minor).map_err(|_| {
        DecodeError::new(
            InvalidKind::BadValue,
            format!("negative unit_price_minor {minor}"),
        )
    })?;
    let currency = required(currency, "currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            format!("currency {currency:?} is not an ISO 4217 code"),
        ));
    }
    if currency != configured.code() {
        return Err(DecodeError::new(
            InvalidKind::CurrencyMismatch,
            format!(
                "currency {currency} is not the configured currency {} (pipeline.currency)",
                configured
            ),
        ));
    }
    let hundredths = minor_units
        .checked_mul(configured.hundredths_per_minor())
        .ok_or(super::money::PriceError::TooLarge)
        .and_then(bounded)
        .map_err(|e| {
            DecodeError::new(
                InvalidKind::BadValue,
                format!("{e}: unit_price_minor {minor} {currency}"),
            )
        })?;
    Ok(hundredths)
}

/// A quantity: not negative, at most [`MAX_QUANTITY`].
fn quantity_of(q: i64) -> Result<u32, DecodeError> {
    if q < 0 {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            format!("negative quantity {q}"),
        ));
    }
    if q > MAX_QUANTITY {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            format!("quantity {q} above the limit {MAX_QUANTITY}"),
        ));
    }
    Ok(u32::try_from(q).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PURCHASE: &str = r#"{"schema":1,"event_id":"9f1c","event_type":"purchase","user_id":"u_81","session_id":"s_3",
 "product_id":"p_1042","category":"shoes","price":"59.90","quantity":2,
 "ts":"2026-11-23T10:00:01.234Z",
 "device":{"type":"mobile","os":"iOS","app_version":"5.2.1"},
 "context":{"referrer":"google_search","campaign":{"id":"camp_123","name":"summer-sale"}},
 "query":null, "added_later": [1, {"x": null}]}"#;

    fn kind_of(s: &[u8]) -> InvalidKind {
        decode(s, 65_536).unwrap_err().kind
    }

    #[test]
    fn decodes_the_design_example() {
        let e = decode(PURCHASE.as_bytes(), 65_536).unwrap();
        assert_eq!(e.event_type, EventType::Purchase);
        assert_eq!(e.price_minor, 5990);
        assert_eq!(e.quantity, 2);
        assert_eq!(e.product_id, "p_1042");
        assert_eq!(e.category, "shoes");
        assert_eq!(
            e.ts_ms,
            parse_rfc3339_ms("2026-11-23T10:00:01.234Z").unwrap()
        );
        assert!(
            matches!(e.event_id, Cow::Borrowed(_)),
            "no copy for unescaped strings"
        );
    }

    const PURCHASE_V2: &str = r#"{"schema":2,"event_id":"9f1c","event_type":"purchase","user_id":"u_81","session_id":"s_3",
 "product_id":"p_1042","category":"shoes","unit_price_minor":5990,"currency":"EUR","qty":2,
 "ts":"2026-11-23T10:00:01.234Z","channel":"app"}"#;

    #[test]
    fn schema_2_upcasts_to_the_same_event_as_schema_1() {
        let v1 = decode(PURCHASE.as_bytes(), 65_536).unwrap();
        let v2 = decode(PURCHASE_V2.as_bytes(), 65_536).unwrap();
        assert_eq!(v1, v2);
        let view = PURCHASE_V2
            .replace("purchase", "view")
            .replace(r#""qty":2,"#, "");
        assert_eq!(decode(view.as_bytes(), 65_536).unwrap().quantity, 1);
    }

    #[test]
    fn schema_2_rejects_what_schema_2_forbids() {
        let bad = |from: &str, to: &str| {
            let s = PURCHASE_V2.replace(from, to);
            decode(s.as_bytes(), 65_536).unwrap_err()
        };
        assert_eq!(bad(r#""qty":2"#, r#""qty":-1"#).kind, InvalidKind::BadValue);
        assert_eq!(bad("5990", "-5").kind, InvalidKind::BadValue);
        assert_eq!(bad("5990", r#""59.90""#).kind, InvalidKind::BadType);
        assert_eq!(bad(r#""EUR""#, r#""euro""#).kind, InvalidKind::BadValue);
        let e = bad(r#""currency":"EUR","#, "");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (InvalidKind::MissingField, "missing field `currency`")
        );
        let e = bad(r#""qty":2"#, r#""quantity":2"#);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (InvalidKind::MissingField, "missing field `qty`")
        );
    }

    #[test]
    fn a_schema_1_only_decoder_dead_letters_schema_2() {
        let rules = Rules {
            schemas: Schemas::of(&[1]),
            ..Rules::new(65_536)
        };
        let e = decode_with(PURCHASE_V2.as_bytes(), &rules).unwrap_err();
        assert_eq!(e.kind, InvalidKind::UnknownSchema);
        assert!(decode_with(PURCHASE.as_bytes(), &rules).is_ok());
    }

    /// Both decoders, which must agree, under `rules`.
    fn both(s: &str, rules: &Rules) -> Result<Event<'static>, DecodeError> {
        let owned: &'static [u8] = Box::leak(s.as_bytes().to_vec().into_boxed_slice());
        let a = decode_with(owned, rules);
        assert_eq!(a, decode_serde(owned, rules), "the decoders differ on {s}");
        a
    }

    #[test]
    fn schema_2_prices_have_the_schema_1_bound() {
        let eur = Rules::new(65_536);
        let price = |minor: &str| both(&PURCHASE_V2.replace("5990", minor), &eur);
        assert_eq!(
            price("1000000000000").unwrap().price_minor,
            crate::event::money::MAX_PRICE_MINOR
        );
        for over in ["1000000000001", "9223372036854775807"] {
            let e = price(over).unwrap_err();
            assert_eq!(e.kind, InvalidKind::BadValue, "{over}");
            assert!(e.message.starts_with("price is too large"), "{e}");
        }
        // The same bound as schema 1's.
        let e = both(&PURCHASE.replace("59.90", "10000000000.01"), &eur).unwrap_err();
        assert_eq!(e.kind, InvalidKind::BadValue);
    }

    #[test]
    fn prices_in_another_currency_are_dead_lettered_not_summed() {
        let eur = Rules::new(65_536);
        for other in ["USD", "JPY"] {
            let e = both(&PURCHASE_V2.replace("EUR", other), &eur).unwrap_err();
            assert_eq!(e.kind, InvalidKind::CurrencyMismatch, "{other}");
            assert_eq!(
                e.message,
                format!("currency {other} is not the configured currency EUR (pipeline.currency)")
            );
        }
        // In yen (no minor unit): ¥100 is 100.00, whichever schema says it.
        let jpy = Rules {
            currency: Currency::parse("JPY").unwrap(),
            ..Rules::new(65_536)
        };
        let v2 = PURCHASE_V2.replace("EUR", "JPY").replace("5990", "100");
        assert_eq!(both(&v2, &jpy).unwrap().price_minor, 10_000);
        let v1 = PURCHASE.replace("59.90", "100");
        assert_eq!(both(&v1, &jpy).unwrap().price_minor, 10_000);
        let e = both(&PURCHASE.replace("59.90", "100.5"), &jpy).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (
                InvalidKind::BadValue,
                "price has more than 0 decimal places: 100.5"
            )
        );
        assert_eq!(
            both(PURCHASE_V2, &jpy).unwrap_err().kind,
            InvalidKind::CurrencyMismatch
        );
        // ¥10 billion is the bound in yen too.
        let e = both(&v2.replace(":100,", ":10000000001,"), &jpy).unwrap_err();
        assert_eq!(e.kind, InvalidKind::BadValue);
    }

    #[test]
    fn event_times_outside_years_1_to_9998_are_bad_values() {
        let at = |ts: &str| {
            both(
                &PURCHASE.replace("2026-11-23T10:00:01.234Z", ts),
                &Rules::new(65_536),
            )
        };
        assert!(at("0001-01-01T00:00:00Z").is_ok());
        assert!(at("9998-12-31T23:59:59.999Z").is_ok());
        for ts in [
            "9999-12-31T23:59:59Z",
            "9999-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
        ] {
            let e = at(ts).unwrap_err();
            assert_eq!(e.kind, InvalidKind::BadValue, "{ts}");
            assert!(e.message.contains("outside the event times"), "{e}");
        }
    }

    #[test]
    fn searches_with_an_empty_normalised_query_are_dead_lettered() {
        let search = |q: &str| {
            both(
                &format!(
                    r#"{{"schema":1,"event_id":"a","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:00Z","query":"{q}"}}"#
                ),
                &Rules::new(65_536),
            )
        };
        for q in ["", "   ", r"\u200b\ufeff", r" \u2060\t"] {
            assert_eq!(search(q).unwrap_err().kind, InvalidKind::EmptyQuery, "{q}");
        }
        assert_eq!(search(r"a\u200b").unwrap().query, "a\u{200b}");
    }

    #[test]
    fn price_as_number_is_exact() {
        let s = PURCHASE.replace(r#""59.90""#, "19.99");
        assert_eq!(decode(s.as_bytes(), 65_536).unwrap().price_minor, 1999);
        let s = PURCHASE.replace(r#""59.90""#, "0.1");
        assert_eq!(decode(s.as_bytes(), 65_536).unwrap().price_minor, 10);
    }

    #[test]
    fn search_needs_query_and_no_product() {
        let s = br#"{"schema":1,"event_id":"a","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:00Z","query":"Cheap  Boots"}"#;
        let e = decode(s, 65_536).unwrap();
        assert_eq!(e.query, "Cheap  Boots");
        let s = br#"{"schema":1,"event_id":"a","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:00Z","query":null}"#;
        assert_eq!(kind_of(s), InvalidKind::MissingField);
    }

    #[test]
    fn view_defaults_quantity() {
        let s = PURCHASE
            .replace("\"purchase\"", "\"view\"")
            .replace("\"quantity\":2,", "");
        assert_eq!(decode(s.as_bytes(), 65_536).unwrap().quantity, 1);
    }

    #[test]
    fn classifies_invalid_records() {
        assert_eq!(kind_of(b"not json"), InvalidKind::NotJson);
        assert_eq!(kind_of(&PURCHASE.as_bytes()[..40]), InvalidKind::NotJson);
        assert_eq!(kind_of(b"[1,2]"), InvalidKind::BadType);
        assert_eq!(kind_of(b"42"), InvalidKind::BadType);
        // Not JSON at all, though it starts like an array or a number.
        for s in ["[[[", "[[[1,2", "[1] x", "42 x", "[1,]"] {
            assert_eq!(kind_of(s.as_bytes()), InvalidKind::NotJson, "{s}");
            let serde = decode_serde(s.as_bytes(), &Rules::new(65_536)).unwrap_err();
            assert_eq!(serde.kind, InvalidKind::NotJson, "{s}");
        }
        assert_eq!(
            kind_of(PURCHASE.replace("\"event_id\":\"9f1c\",", "").as_bytes()),
            InvalidKind::MissingField
        );
        assert_eq!(
            kind_of(
                PURCHASE
                    .replace("\"quantity\":2", "\"quantity\":\"two\"")
                    .as_bytes()
            ),
            InvalidKind::BadType
        );
        assert_eq!(
            kind_of(
                PURCHASE
                    .replace("\"quantity\":2", "\"quantity\":1.5")
                    .as_bytes()
            ),
            InvalidKind::BadType
        );
        assert_eq!(
            kind_of(
                PURCHASE
                    .replace("\"quantity\":2", "\"quantity\":-1")
                    .as_bytes()
            ),
            InvalidKind::BadValue
        );
        assert_eq!(
            kind_of(
                PURCHASE
                    .replace("\"quantity\":2", "\"quantity\":99999999999999999999")
                    .as_bytes()
            ),
            InvalidKind::BadType
        );
        assert_eq!(
            kind_of(PURCHASE.replace("\"59.90\"", "\"12.345\"").as_bytes()),
            InvalidKind::BadValue
        );
        assert_eq!(
            kind_of(PURCHASE.replace("\"59.90\"", "true").as_bytes()),
            InvalidKind::BadType
        );
        assert_eq!(
            kind_of(PURCHASE.replace("\"59.90\"", "1e3").as_bytes()),
            InvalidKind::BadValue
        );
        assert_eq!(
            kind_of(PURCHASE.replace("\"purchase\"", "\"refund\"").as_bytes()),
            InvalidKind::UnknownEventType
        );
        assert_eq!(
            kind_of(PURCHASE.replace("\"schema\":1", "\"schema\":99").as_bytes()),
            InvalidKind::UnknownSchema
        );
        assert_eq!(
            kind_of(
                PURCHASE
                    .replace("2026-11-23T10:00:01.234Z", "yesterday")
                    .as_bytes()
            ),
            InvalidKind::BadValue
        );
        let mut bad_utf8 = PURCHASE.as_bytes().to_vec();
        let at = PURCHASE.find("shoes").unwrap();
        bad_utf8[at] = 0xff;
        assert_eq!(kind_of(&bad_utf8), InvalidKind::NotJson);
        assert_eq!(
            decode(PURCHASE.as_bytes(), 100).unwrap_err().kind,
            InvalidKind::Oversize
        );
        let deep = format!("{{\"x\":{}", "[".repeat(10_000));
        assert_eq!(kind_of(deep.as_bytes()), InvalidKind::NotJson);
    }

    /// The scanner against the serde_json decoder it replaced, on mutations of real
    /// records: the same events, the same accept/reject decisions and, but for numbers
    /// too large for any integer type (serde: syntax; scanner: type), the same kinds.
    mod against_serde {
        use super::*;
        use proptest::prelude::*;

        const V2: &str = r#"{"schema":2,"event_id":"e2","event_type":"add_cart","user_id":"u","session_id":"s","product_id":"p_\u00e9","category":"toys","unit_price_minor":1999,"currency":"EUR","qty":1,"ts":"2026-11-23T10:00:02+01:00","extra":{"a":[1,2.5e3,-0,true,null,"x\n"]}}"#;
        const SEARCH: &str = r#"{"schema":1,"event_id":"e3","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:03Z","query":"  Red \"Shoes\" "}"#;

        fn same(input: &[u8]) -> Result<(), TestCaseError> {
            let a = decode(input, 65_536);
            let b = decode_serde(input, &Rules::new(65_536));
            match (&a, &b) {
                (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                (Err(x), Err(y)) => {
                    // Numbers too large for any integer type (serde: syntax; scanner: type).
                    let huge = y.kind == InvalidKind::NotJson && x.kind == InvalidKind::BadType;
                    prop_assert!(
                        x.kind == y.kind || huge,
                        "scanner {:?} / serde {:?} on {:?}",
                        x,
                        y,
                        String::from_utf8_lossy(input)
                    );
                }
                _ => prop_assert!(
                    false,
                    "scanner {:?} / serde {:?} on {:?}",
                    a,
                    b,
                    String::from_utf8_lossy(input)
                ),
            }
            Ok(())
        }

        /// Found by the `decode` fuzz target: serde_json reads `-0` as a float.
        #[test]
        fn minus_zero_is_not_an_integer() {
            let s = V2.replace(r#""qty":1"#, r#""qty":-0"#);
            assert_eq!(kind_of(s.as_bytes()), InvalidKind::BadType);
            same(s.as_bytes()).unwrap();
        }

        #[test]
        fn the_seeds_agree() {
            for s in [
                PURCHASE,
                V2,
                SEARCH,
                "[1,2]",
                "null",
                "{}",
                "{\"schema\":1} x",
                "{\"schema\":1,\"schema\":1}",
                "[[[",
                "[1,2] x",
                " 42 ",
            ] {
                same(s.as_bytes()).unwrap();
            }
            // Around the nesting limit, at the top and inside the object.
            for n in 120..135 {
                let nested = format!("{}{}", "[".repeat(n), "]".repeat(n));
                same(nested.as_bytes()).unwrap();
                same(
                    PURCHASE
                        .replace("\"query\":null", &format!("\"query\":{nested}"))
                        .as_bytes(),
                )
                .unwrap();
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn mutations_agree(
                seed in 0usize..3,
                edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
            ) {
                let mut b = [PURCHASE, V2, SEARCH][seed].as_bytes().to_vec();
                const BYTES: &[u8] = b"{}[]\",:0123456789-+.eE\\u tnrfalsenull\x00\xff\xc3";
                for (at, op, byte) in edits {
                    if b.is_empty() { break; }
                    let i = at.index(b.len());
                    let c = BYTES[usize::from(byte) % BYTES.len()];
                    match op {
                        0 => { b.remove(i); }
                        1 => b.insert(i, c),
                        2 => b[i] = c,
                        _ => { b.truncate(i); }
                    }
                }
                same(&b)?;
            }
        }
    }
}
