//! Session documents end to end: a log with `session/1` documents gives exactly the results
//! of the same log with each document replaced by its events, exploded here by the test's
//! own reading of the format (inherited envelope fields, an id for inner events without
//! one that a re-delivered document repeats). Both read the same catalogue, which
//! completes the purchases the documents carry without category and price.

mod common;

use common::*;
use serde_json::{Map, Value};

/// The events of one line: itself, or a document's inner events.
fn exploded(line: &str) -> Vec<String> {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(line) else {
        return vec![line.to_string()];
    };
    if doc.get("schema") != Some(&Value::from("session/1")) {
        return vec![line.to_string()];
    }
    let events = doc["events"].as_array().unwrap();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let Value::Object(e) = e else {
                return "17".to_string(); // not an object: invalid either way
            };
            let mut out = Map::new();
            out.insert("schema".into(), 1.into());
            for (k, v) in e {
                out.insert(k.clone(), v.clone());
            }
            out.remove("type");
            if let Some(t) = e.get("type") {
                out.insert("event_type".into(), t.clone());
            }
            for k in ["session_id", "user_id", "device", "context"] {
                if !out.contains_key(k)
                    && let Some(v) = doc.get(k)
                {
                    out.insert(k.into(), v.clone());
                }
            }
            if !out.contains_key("event_id") {
                let id = format!(
                    "{}#{i}#{}#{}",
                    doc["session_id"].as_str().unwrap(),
                    out["event_type"].as_str().unwrap_or(""),
                    out["ts"].as_str().unwrap_or("")
                );
                out.insert("event_id".into(), id.into());
            }
            Value::Object(out).to_string()
        })
        .collect()
}

#[test]
fn session_documents_count_exactly_as_their_events_would() {
    let docs = temp();
    let lines = generate(
        docs.path(),
        &[
            "--events",
            "40000",
            "--sim-rate",
            "200",
            "--seed",
            "23",
            "--session-docs",
            "0.05",
            "--duplicate-share",
            "0.02",
            "--late-share",
            "0.01",
        ],
    );
    let n_docs = lines
        .lines()
        .filter(|l| l.contains(r#""schema":"session/1""#))
        .count();
    assert!(n_docs > 1000, "{n_docs} documents");
    // A document with a bad inner event: the others count, the bad one is named.
    let bad = r#"{"schema":"session/1","session_id":"s_x","user_id":"u_7","events":[{"type":"search","query":"red shoes","ts":"2026-11-23T00:05:00Z"},{"type":"purchase","ts":"2026-11-23T00:05:01Z"},{"type":"view","product_id":"p_1","category":"toys","price":"3.00","ts":"2026-11-23T00:05:02Z"}]}"#;
    let text = format!("{lines}{bad}\n");
    produce_lines(docs.path(), &text);

    let flat = temp();
    // The catalogue the documents' purchases are completed from, in both.
    for dir in [docs.path(), flat.path()] {
        let mut c = kappa(dir);
        c.args(["produce", "--stream", "products", "--seed", "23"]);
        ok(c);
    }
    let flat_text: String = text.lines().flat_map(exploded).map(|l| l + "\n").collect();
    produce_lines(flat.path(), &flat_text);

    let a = run_drain(docs.path(), &[]);
    let b = run_drain(flat.path(), &[]);
    // Per event: accepted, late and duplicates agree; the flat log's bad event is its
    // own dead letter, the document's is the document's.
    assert_eq!(counts(&a), counts(&b), "{a}\n{b}");
    assert!(
        export(docs.path()) == export(flat.path()),
        "results differ between documents and their events"
    );
    let letters = dead_letters(docs.path());
    let doc_letter = letters
        .iter()
        .find(|d| d["reason"].as_str().unwrap().contains("session document"))
        .expect("the bad document is a dead letter");
    assert!(
        doc_letter["reason"]
            .as_str()
            .unwrap()
            .contains("1 of 3 events of the session document: events[1]"),
        "{doc_letter}"
    );
    assert_eq!(letters.len(), dead_letters(flat.path()).len());
}
