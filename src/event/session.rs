//! Nested session documents (issue 18, item 3): one JSON object per session, exploded into
//! ordinary schema-1 events.
//!
//! ```json
//! {"schema": "session/1", "session_id": "s_9", "user_id": "u_4",
//!  "device": {...}, "context": {...},
//!  "events": [{"type": "search", "query": "running shoes", "ts": "…"},
//!             {"type": "view", "product_id": "p_12", "ts": "…"},
//!             {"type": "purchase", "product_id": "p_12", "category": "shoes",
//!              "price": "59.00", "quantity": 1, "ts": "…", "event_id": "…"}]}
//! ```
//!
//! Each inner event inherits `session_id`, `user_id`, `device` and `context` from the
//! document (an inner `device` or `context` of its own wins). An inner event without an
//! `event_id` gets one derived from the document — xxh3 of (session id, its index, its
//! type, its time), 16 hex digits like the generator's — so a document delivered twice
//! gives the same ids: duplicates, not double counts. Each inner event is judged alone: a
//! malformed one is its own error (its message names `events[i]`), and the others count.
//!
//! The pipeline calls [`explode`] when the event decoder refuses a record that
//! [`is_session`] (`pipeline::Cursor::ingest_document`); an inner event that leaves out its
//! `category` or price gets them from the product catalogue at its time
//! (`event::decode_joined`).

use serde_json::{Map, Value};

use super::object::{missing, non_empty};
use super::{DecodeError, InvalidKind};

/// The `schema` of a session document.
pub const SESSION_SCHEMA: &str = "session/1";

/// Envelope fields every inner event inherits.
const INHERITED: [&str; 4] = ["session_id", "user_id", "device", "context"];

/// Whether `value` is a session document rather than an event: a JSON object whose
/// `"schema"` is the string `session/1`, wherever the field is. Asked only of records the
/// event decoder refused (a document is not an event), so its full parse costs nothing on
/// the path of valid events.
#[must_use]
pub fn is_session(value: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        schema: Option<std::borrow::Cow<'a, str>>,
    }
    // The bytes first: most refused records are not documents.
    value
        .windows(SESSION_SCHEMA.len())
        .any(|w| w == SESSION_SCHEMA.as_bytes())
        && serde_json::from_slice::<Head<'_>>(value)
            .is_ok_and(|h| h.schema.as_deref() == Some(SESSION_SCHEMA))
}

/// One inner event of a document: its index, and the schema-1 event record it becomes
/// (for the ordinary decoder), or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    /// Its index in `events`.
    pub index: usize,
    /// The event record, or what is wrong with it.
    pub record: Result<Vec<u8>, DecodeError>,
}

/// Explodes a session document into its events.
///
/// # Errors
/// The document as a whole: too large, not a JSON object, another schema, a missing or
/// non-string `session_id`/`user_id`, `events` missing or not an array.
pub fn explode(value: &[u8], max_bytes: usize) -> Result<Vec<Inner>, DecodeError> {
    if value.len() > max_bytes {
        return Err(DecodeError::new(
            InvalidKind::Oversize,
            format!(
                "session document of {} bytes exceeds the limit of {max_bytes}",
                value.len()
            ),
        ));
    }
    let doc: Value = serde_json::from_slice(value)
        .map_err(|e| DecodeError::new(InvalidKind::NotJson, format!("not JSON: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(DecodeError::new(InvalidKind::NotJson, "not a JSON object"));
    };
    match doc.get("schema") {
        Some(Value::String(s)) if s == SESSION_SCHEMA => {}
        Some(other) => {
            return Err(DecodeError::new(
                InvalidKind::UnknownSchema,
                format!("not a {SESSION_SCHEMA} document: schema {other}"),
            ));
        }
        None => return Err(missing("schema")),
    }
    let session_id = non_empty(&doc, "session_id")?;
    non_empty(&doc, "user_id")?;
    let events = match doc.get("events") {
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(DecodeError::new(
                InvalidKind::BadType,
                "events must be an array",
            ));
        }
        None => return Err(missing("events")),
    };
    Ok(events
        .iter()
        .enumerate()
        .map(|(index, e)| Inner {
            index,
            record: inner(&doc, session_id, index, e),
        })
        .collect())
}

/// Inner event `index` as a schema-1 record; errors name `events[index]`.
fn inner(
    doc: &Map<String, Value>,
    session_id: &str,
    index: usize,
    e: &Value,
) -> Result<Vec<u8>, DecodeError> {
    let at =
        |kind: InvalidKind, what: &str| DecodeError::new(kind, format!("events[{index}]: {what}"));
    let Value::Object(e) = e else {
        return Err(at(InvalidKind::BadType, "not an object"));
    };
    let event_type = match e.get("type").or_else(|| e.get("event_type")) {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) => {
            return Err(at(InvalidKind::MissingField, "missing field `type`"));
        }
        Some(_) => return Err(at(InvalidKind::BadType, "type must be a string")),
    };
    let ts = match e.get("ts") {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) => {
            return Err(at(InvalidKind::MissingField, "missing field `ts`"));
        }
        Some(_) => return Err(at(InvalidKind::BadType, "ts must be a string")),
    };
    let mut out = Map::new();
    out.insert("schema".into(), Value::from(1));
    let event_id = match e.get("event_id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => derived_id(session_id, index, event_type, ts),
        Some(_) => return Err(at(InvalidKind::BadType, "event_id must be a string")),
    };
    out.insert("event_id".into(), Value::from(event_id));
    out.insert("event_type".into(), Value::from(event_type));
    for (k, v) in e {
        if !matches!(k.as_str(), "type" | "event_type" | "event_id" | "schema") {
            out.insert(k.clone(), v.clone());
        }
    }
    for k in INHERITED {
        if let (false, Some(v)) = (out.contains_key(k), doc.get(k)) {
            out.insert(k.into(), v.clone());
        }
    }
    Ok(serde_json::to_vec(&Value::Object(out)).expect("a JSON value serialises"))
}

/// The id of an inner event that carries none: the same for the same document.
fn derived_id(session_id: &str, index: usize, event_type: &str, ts: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        session_id.as_bytes(),
        &index.to_le_bytes(),
        event_type.as_bytes(),
        ts.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    format!("{:016x}", h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, decode};

    const DOC: &str = r#"{"schema":"session/1","session_id":"s_9","user_id":"u_4",
        "device":{"type":"mobile","os":"ios","app_version":"5.1.0"},
        "context":{"referrer":"search"},
        "events":[
          {"type":"search","query":"Running Shoes","ts":"2026-11-23T10:00:00Z"},
          {"type":"view","product_id":"p_12","category":"shoes","price":"59.00","ts":"2026-11-23T10:00:05Z"},
          {"type":"purchase","ts":"2026-11-23T10:01:00Z"},
          {"type":"purchase","product_id":"p_12","category":"shoes","price":"59.00","quantity":1,
           "ts":"2026-11-23T10:02:00Z","event_id":"e_given"},
          17
        ]}"#;

    #[test]
    fn a_document_becomes_events_that_inherit_its_envelope() {
        assert!(is_session(DOC.as_bytes()));
        assert!(!is_session(br#"{"schema":1,"event_id":"a"}"#));
        // The field is found wherever it is, and only as the schema.
        assert!(is_session(
            br#"{"session_id":"s","user_id":"u","events":[],"schema":"session/1"}"#
        ));
        assert!(!is_session(
            br#"{"schema":1,"session_id":"session/1","event_type":"view"}"#
        ));
        let inner = explode(DOC.as_bytes(), 65_536).unwrap();
        assert_eq!(inner.len(), 5);
        let ok: Vec<_> = inner
            .iter()
            .map(|i| i.record.as_ref().map(|r| decode(r, 65_536)))
            .collect();
        let search = ok[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(search.event_type, EventType::Search);
        assert_eq!(search.query, "Running Shoes");
        let view = ok[1].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(view.event_type, EventType::View);
        assert_eq!(view.product_id, "p_12");
        // The inherited fields are in the record.
        let v: Value = serde_json::from_slice(inner[1].record.as_ref().unwrap()).unwrap();
        assert_eq!(v["session_id"], "s_9");
        assert_eq!(v["user_id"], "u_4");
        assert_eq!(v["device"]["os"], "ios");
        assert_eq!(v["context"]["referrer"], "search");
        // A purchase without product fields is an ordinary invalid event (until the
        // catalogue fills them): the decoder names the field.
        let e = ok[2].as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, InvalidKind::MissingField, "{e}");
        // A given id is kept.
        assert_eq!(
            ok[3].as_ref().unwrap().as_ref().unwrap().event_id,
            "e_given"
        );
        // A non-object inner event is its own error; the others count.
        let e = inner[4].record.as_ref().unwrap_err();
        assert_eq!(e.kind, InvalidKind::BadType);
        assert!(e.message.starts_with("events[4]:"), "{e}");
    }

    #[test]
    fn a_document_delivered_twice_gives_the_same_ids_and_others_differ() {
        let ids = |doc: &str| -> Vec<String> {
            explode(doc.as_bytes(), 65_536)
                .unwrap()
                .into_iter()
                .filter_map(|i| i.record.ok())
                .map(|r| {
                    let v: Value = serde_json::from_slice(&r).unwrap();
                    v["event_id"].as_str().unwrap().to_string()
                })
                .collect()
        };
        let first = ids(DOC);
        assert_eq!(first, ids(DOC));
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len(), "{first:?}");
        assert!(first[0].len() == 16 && first[0].bytes().all(|b| b.is_ascii_hexdigit()));
        // Another session with the same events: other ids.
        assert_ne!(ids(&DOC.replace("s_9", "s_10"))[0], first[0]);
        // More events appended later keep the earlier ones' ids.
        let longer = DOC.replace(
            "17\n",
            "17,{\"type\":\"search\",\"query\":\"socks\",\"ts\":\"2026-11-23T10:03:00Z\"}\n",
        );
        assert_eq!(ids(&longer)[..first.len()], first[..]);
    }

    #[test]
    fn a_bad_document_is_one_error_naming_what_is_wrong() {
        let cases = [
            (
                DOC.replace("\"session/1\"", "\"session/9\""),
                InvalidKind::UnknownSchema,
            ),
            (
                DOC.replace("\"session_id\":\"s_9\",", ""),
                InvalidKind::MissingField,
            ),
            (
                DOC.replace("\"user_id\":\"u_4\"", "\"user_id\":4"),
                InvalidKind::BadType,
            ),
            (
                DOC.replace("\"events\":[", "\"events\":{\"x\":[")
                    .replace("17\n        ]}", "17]}}"),
                InvalidKind::BadType,
            ),
            ("[]".to_string(), InvalidKind::NotJson),
            (DOC[..50].to_string(), InvalidKind::NotJson),
        ];
        for (doc, kind) in cases {
            let e = explode(doc.as_bytes(), 65_536).unwrap_err();
            assert_eq!(e.kind, kind, "{doc}: {e}");
        }
        let e = explode(DOC.as_bytes(), 100).unwrap_err();
        assert_eq!(e.kind, InvalidKind::Oversize);
        // Inner events missing their type or time.
        let inner = explode(
            br#"{"schema":"session/1","session_id":"s","user_id":"u","events":[{"ts":"2026-11-23T10:00:00Z"},{"type":"view"}]}"#,
            65_536,
        )
        .unwrap();
        let kinds: Vec<_> = inner
            .iter()
            .map(|i| i.record.as_ref().unwrap_err().message.clone())
            .collect();
        assert_eq!(
            kinds,
            [
                "events[0]: missing field `type`",
                "events[1]: missing field `ts`"
            ]
        );
    }
}
