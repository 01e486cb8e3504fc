//! Reviews (issue 18, item 2): the record of the `shop.reviews` stream, its checks, and
//! what its text says ([`aspects`]).
//!
//! One JSON object per record:
//! `{"schema":1, "review_id", "product_id", "user_id", "rating" (1–5), "text",
//! "images" (array of URLs), "created_at"}`. `created_at` (RFC 3339) is the event time
//! and `review_id` the dedup key. `text` may be empty; `images` may be absent (none).
//!
//! The main pipeline reads the stream next to the events (`pipeline/lane.rs`) and folds it
//! with [`agg::Reviews`]; the generator is `generator::reviews`.

pub mod agg;
pub mod aspects;

use serde_json::Value;

use crate::event::object::{field, non_empty, string};
use crate::event::time::{MAX_EVENT_MS, MIN_EVENT_MS, parse_rfc3339_ms};
use crate::event::{DecodeError, InvalidKind};

pub use aspects::{Aspect, Dictionary, Sentiment};

/// One review, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// The dedup key.
    pub review_id: String,
    /// The product reviewed.
    pub product_id: String,
    /// Its author.
    pub user_id: String,
    /// 1–5 stars.
    pub rating: u8,
    /// Free text, any language, possibly empty.
    pub text: String,
    /// Image URLs.
    pub images: Vec<String>,
    /// `created_at`, epoch milliseconds: the event time.
    pub created_ms: i64,
}

/// Checks one record; the error names the field and the reason, as the events' do.
///
/// # Errors
/// A [`DecodeError`] with the same kinds as an event's: oversize, not JSON, a missing
/// field, a wrong type, a bad value, an unknown schema.
pub fn decode(value: &[u8], max_bytes: usize) -> Result<Review, DecodeError> {
    if value.len() > max_bytes {
        return Err(DecodeError::new(
            InvalidKind::Oversize,
            format!(
                "record of {} bytes exceeds the limit of {max_bytes}",
                value.len()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(value)
        .map_err(|e| DecodeError::new(InvalidKind::NotJson, format!("not JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(DecodeError::new(InvalidKind::NotJson, "not a JSON object"));
    };
    match field(&o, "schema")? {
        Value::Number(n) if n.as_u64() == Some(1) => {}
        Value::Number(n) => {
            return Err(DecodeError::new(
                InvalidKind::UnknownSchema,
                format!("unknown review schema version {n}"),
            ));
        }
        _ => return Err(bad_type("schema", "a number")),
    }
    let review_id = non_empty(&o, "review_id")?.to_string();
    let product_id = non_empty(&o, "product_id")?.to_string();
    let user_id = non_empty(&o, "user_id")?.to_string();
    let rating = match field(&o, "rating")? {
        Value::Number(n) => n
            .as_u64()
            .filter(|r| (1..=5).contains(r))
            .and_then(|r| u8::try_from(r).ok())
            .ok_or_else(|| {
                DecodeError::new(
                    InvalidKind::BadValue,
                    format!("rating {n} is not a whole number from 1 to 5"),
                )
            })?,
        _ => return Err(bad_type("rating", "a number")),
    };
    let text = string(&o, "text")?.to_string();
    let images = match o.get("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|i| match i {
                Value::String(u) if u.starts_with("https://") || u.starts_with("http://") => {
                    Ok(u.clone())
                }
                Value::String(u) => Err(DecodeError::new(
                    InvalidKind::BadValue,
                    format!("images: {u:?} is not an http(s) URL"),
                )),
                _ => Err(bad_type("images", "an array of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_type("images", "an array of strings")),
    };
    let created = string(&o, "created_at")?;
    let created_ms = parse_rfc3339_ms(created)
        .filter(|t| (MIN_EVENT_MS..=MAX_EVENT_MS).contains(t))
        .ok_or_else(|| {
            DecodeError::new(
                InvalidKind::BadValue,
                format!("created_at is not an RFC 3339 time kappa windows: {created:?}"),
            )
        })?;
    Ok(Review {
        review_id,
        product_id,
        user_id,
        rating,
        text,
        images,
        created_ms,
    })
}

fn bad_type(name: &str, want: &str) -> DecodeError {
    DecodeError::new(InvalidKind::BadType, format!("{name} must be {want}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"schema":1,"review_id":"r_1","product_id":"p_7","user_id":"u_3","rating":4,"text":"배송 빨라요","images":["https://img.example/1.jpg"],"created_at":"2026-11-23T10:00:00Z"}"#;

    #[test]
    fn a_review_decodes_with_its_event_time() {
        let r = decode(GOOD.as_bytes(), 65_536).unwrap();
        assert_eq!(r.review_id, "r_1");
        assert_eq!(r.rating, 4);
        assert_eq!(r.text, "배송 빨라요");
        assert_eq!(r.images, ["https://img.example/1.jpg"]);
        assert_eq!(r.created_ms, 1_795_428_000_000);
        let no_images = GOOD.replace(r#","images":["https://img.example/1.jpg"]"#, "");
        assert_eq!(
            decode(no_images.as_bytes(), 65_536).unwrap().images.len(),
            0
        );
    }

    #[test]
    fn each_fault_has_its_kind() {
        let cases = [
            (
                GOOD.replace("\"rating\":4", "\"rating\":6"),
                InvalidKind::BadValue,
            ),
            (
                GOOD.replace("\"rating\":4", "\"rating\":4.5"),
                InvalidKind::BadValue,
            ),
            (
                GOOD.replace("\"rating\":4", "\"rating\":\"4\""),
                InvalidKind::BadType,
            ),
            (GOOD.replace("\"rating\":4,", ""), InvalidKind::MissingField),
            (
                GOOD.replace("\"schema\":1", "\"schema\":2"),
                InvalidKind::UnknownSchema,
            ),
            (
                GOOD.replace("\"review_id\":\"r_1\"", "\"review_id\":\"\""),
                InvalidKind::BadValue,
            ),
            (
                GOOD.replace("https://img", "ftp://img"),
                InvalidKind::BadValue,
            ),
            (
                GOOD.replace("[\"https://img.example/1.jpg\"]", "\"x\""),
                InvalidKind::BadType,
            ),
            (
                GOOD.replace("2026-11-23T10:00:00Z", "yesterday"),
                InvalidKind::BadValue,
            ),
            (
                GOOD.replace("\"text\":\"배송 빨라요\"", "\"text\":null"),
                InvalidKind::MissingField,
            ),
            (GOOD[..40].to_string(), InvalidKind::NotJson),
            ("[1]".to_string(), InvalidKind::NotJson),
        ];
        for (record, kind) in cases {
            let e = decode(record.as_bytes(), 65_536).unwrap_err();
            assert_eq!(e.kind, kind, "{record}: {e}");
        }
        let e = decode(GOOD.as_bytes(), 64).unwrap_err();
        assert_eq!(e.kind, InvalidKind::Oversize);
    }
}
