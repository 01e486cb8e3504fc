//! Decoding a record value into an [`Event`]: JSON, schema dispatch, validation.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::money::parse_price_minor;
use super::scan::{Fields, RawPrice};
use super::time::parse_rfc3339_ms;
use super::{Event, EventType, KNOWN_SCHEMAS};

/// Largest accepted quantity on one event.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// The class of an invalid record: a bounded set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    /// Larger than the configured record size limit.
    Oversize,
    /// Not a JSON object (syntax error, truncated, invalid UTF-8).
    NotJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    BadType,
    /// A field has the right type but an unacceptable value (negative quantity, price with
    /// three decimals, unparseable timestamp, ...).
    BadValue,
    /// `event_type` is not one of the four known types.
    UnknownEventType,
    /// `schema` is not a version this build knows.
    UnknownSchema,
    /// Event time too far ahead of the record's ingest time.
    FutureTimestamp,
}

impl InvalidKind {
    /// Every kind, for pre-registering metric labels.
    pub const ALL: [InvalidKind; 8] = [
        Self::Oversize,
        Self::NotJson,
        Self::MissingField,
        Self::BadType,
        Self::BadValue,
        Self::UnknownEventType,
        Self::UnknownSchema,
        Self::FutureTimestamp,
    ];

    /// Snake-case label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::NotJson => "not_json",
            Self::MissingField => "missing_field",
            Self::BadType => "bad_type",
            Self::BadValue => "bad_value",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownSchema => "unknown_schema",
            Self::FutureTimestamp => "future_timestamp",
        }
    }
}

/// Why a record is not a valid event. The message is what the dead-letter store keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind_str}: {message}", kind_str = .kind.as_str())]
pub struct DecodeError {
    /// Class of failure.
    pub kind: InvalidKind,
    /// Human-readable detail.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn new(kind: InvalidKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

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

fn price_of(raw: RawPrice<'_>) -> Result<u64, DecodeError> {
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
    parse_price_minor(digits)
        .map_err(|e| DecodeError::new(InvalidKind::BadValue, format!("{e}: {text}")))
}

/// [`decode_schemas`] with `serde_json` (borrowed) reading the fields: the decoder kappa
/// used before its own scanner; kept to check the scanner against (tests, the `decode`
/// fuzz target).
#[doc(hidden)]
pub fn decode_serde<'a>(
    value: &'a [u8],
    max_bytes: usize,
    schemas: &[u64],
) -> Result<Event<'a>, DecodeError> {
    check_size(value, max_bytes)?;
    build(serde_fields(value)?, schemas)
}

/// Records larger than `max_bytes` are rejected before parsing.
fn check_size(value: &[u8], max_bytes: usize) -> Result<(), DecodeError> {
    if value.len() > max_bytes {
        return Err(DecodeError::new(
            InvalidKind::Oversize,
            format!("record is {} bytes, limit {max_bytes}", value.len()),
        ));
    }
    Ok(())
}

fn serde_fields(value: &[u8]) -> Result<Fields<'_>, DecodeError> {
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
    decode_schemas(value, max_bytes, KNOWN_SCHEMAS)
}

/// [`decode`] accepting only the schema versions in `schemas` (a version configured for
/// schema 1 only dead-letters schema 2 records, as a build that predates it would).
///
/// # Errors
/// A [`DecodeError`] naming what is wrong; the caller dead-letters the record.
pub fn decode_schemas<'a>(
    value: &'a [u8],
    max_bytes: usize,
    schemas: &[u64],
) -> Result<Event<'a>, DecodeError> {
    check_size(value, max_bytes)?;
    let w = super::scan::scan(value)?;
    build(w, schemas)
}

/// Checks and upcasts scanned fields into an [`Event`].
fn build<'a>(w: Fields<'a>, schemas: &[u64]) -> Result<Event<'a>, DecodeError> {
    let schema = required(w.schema, "schema")?;
    if !KNOWN_SCHEMAS.contains(&schema) || !schemas.contains(&schema) {
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
    let ts_text = required(w.ts, "ts")?;
    let ts_ms = parse_rfc3339_ms(&ts_text).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::BadValue,
            format!("ts is not an RFC 3339 time: {ts_text:?}"),
        )
    })?;
    if event_type == EventType::Search {
        let query = required(w.query, "query")?;
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
    let category = required(w.category, "category")?;
    if product_id.is_empty() || category.is_empty() {
        return Err(DecodeError::new(
            InvalidKind::BadValue,
            "product_id and category must not be empty",
        ));
    }
    // Upcasting: schema 2 spells the price as integer minor units with a currency and
    // renames `quantity` to `qty`; both become the one internal event.
    let (price_minor, quantity) = if schema == 2 {
        let minor = required(w.unit_price_minor, "unit_price_minor")?;
        let minor = u64::try_from(minor).map_err(|_| {
            DecodeError::new(
                InvalidKind::BadValue,
                format!("negative unit_price_minor {minor}"),
            )
        })?;
        let currency = required(w.currency, "currency")?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DecodeError::new(
                InvalidKind::BadValue,
                format!("currency {currency:?} is not an ISO 4217 code"),
            ));
        }
        (minor, w.qty)
    } else {
        (price_of(required(w.price, "price")?)?, w.quantity)
    };
    let quantity = match (quantity, event_type) {
        (None, EventType::View) => 1,
        (q, _) => {
            let q = required(q, if schema == 2 { "qty" } else { "quantity" })?;
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
            u32::try_from(q).unwrap_or(u32::MAX)
        }
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
        let e = decode_schemas(PURCHASE_V2.as_bytes(), 65_536, &[1]).unwrap_err();
        assert_eq!(e.kind, InvalidKind::UnknownSchema);
        assert!(decode_schemas(PURCHASE.as_bytes(), 65_536, &[1]).is_ok());
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
            let b = decode_serde(input, 65_536, KNOWN_SCHEMAS);
            match (&a, &b) {
                (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                (Err(x), Err(y)) => {
                    // Numbers too large for any integer type (serde: syntax; scanner: type),
                    // and top-level arrays (serde reads them as the struct's fields).
                    let huge = y.kind == InvalidKind::NotJson && x.kind == InvalidKind::BadType;
                    let array = input.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[');
                    prop_assert!(
                        x.kind == y.kind || huge || array,
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
            ] {
                same(s.as_bytes()).unwrap();
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
