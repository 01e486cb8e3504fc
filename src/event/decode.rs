//! Decoding a record value into an [`Event`]: JSON, schema dispatch, validation.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::money::parse_price_minor;
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

fn price_of(raw: &RawValue) -> Result<u64, DecodeError> {
    let text = raw.get();
    let digits = if let Some(inner) = text.strip_prefix('"') {
        inner.strip_suffix('"').unwrap_or(inner)
    } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        text
    } else {
        return Err(DecodeError::new(
            InvalidKind::BadType,
            format!("price must be a decimal string or number, got {text}"),
        ));
    };
    parse_price_minor(digits)
        .map_err(|e| DecodeError::new(InvalidKind::BadValue, format!("{e}: {text}")))
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
    if value.len() > max_bytes {
        return Err(DecodeError::new(
            InvalidKind::Oversize,
            format!("record is {} bytes, limit {max_bytes}", value.len()),
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
    let schema = required(w.schema, "schema")?;
    if !KNOWN_SCHEMAS.contains(&schema) || !schemas.contains(&schema) {
        return Err(DecodeError::new(
            InvalidKind::UnknownSchema,
            format!("unknown schema version {schema}"),
        ));
    }
    let event_id = required(w.event_id, "event_id")?.0;
    if event_id.is_empty() {
        return Err(DecodeError::new(InvalidKind::BadValue, "event_id is empty"));
    }
    let type_name = required(w.event_type, "event_type")?.0;
    let event_type = EventType::parse(&type_name).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::UnknownEventType,
            format!("unknown event_type {type_name:?}"),
        )
    })?;
    required(w.user_id, "user_id")?;
    required(w.session_id, "session_id")?;
    let ts_text = required(w.ts, "ts")?.0;
    let ts_ms = parse_rfc3339_ms(&ts_text).ok_or_else(|| {
        DecodeError::new(
            InvalidKind::BadValue,
            format!("ts is not an RFC 3339 time: {ts_text:?}"),
        )
    })?;
    if event_type == EventType::Search {
        let query = required(w.query, "query")?.0;
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
    let product_id = required(w.product_id, "product_id")?.0;
    let category = required(w.category, "category")?.0;
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
        let currency = required(w.currency, "currency")?.0;
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
}
