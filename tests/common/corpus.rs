//! A corpus of malformed (and some valid) events, one record per line, shared by the
//! embedded-log and Kafka bad-input tests.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use super::{RUN_DRAIN, ok};

const GOOD: &str = r#"{"schema":1,"event_id":"EID","event_type":"purchase","user_id":"u_1","session_id":"s_1","product_id":"p_1","category":"shoes","price":"59.90","quantity":2,"ts":"2026-11-23T10:00:01.234Z"}"#;

fn with(id: &str, from: &str, to: &str) -> Vec<u8> {
    GOOD.replace("EID", id).replace(from, to).into_bytes()
}

/// The malformed corpus: (what, record bytes). Each record is one line (no raw newline).
/// The corpus: (what, record bytes).
pub fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("valid", with("ok-1", "", "")),
        ("valid, schema 2", br#"{"schema":2,"event_id":"ok-2","event_type":"add_cart","user_id":"u_2","session_id":"s","product_id":"p_2","category":"toys","unit_price_minor":1999,"currency":"EUR","qty":1,"ts":"2026-11-23T10:00:02Z"}"#.to_vec()),
        ("truncated JSON", with("t", "", "")[..60].to_vec()),
        ("not JSON at all", b"purchase,u_1,p_1,59.90".to_vec()),
        ("quantity as a string", with("q-s", r#""quantity":2"#, r#""quantity":"2""#)),
        ("price as a boolean", with("p-b", r#""price":"59.90""#, r#""price":true"#)),
        ("huge quantity", with("q-h", r#""quantity":2"#, r#""quantity":123456789012345678901234567890"#)),
        ("quantity 1e400", with("q-e", r#""quantity":2"#, r#""quantity":1e400"#)),
        ("huge price", with("p-h", r#""59.90""#, r#""99999999999999999999999.99""#)),
        ("negative quantity", with("q-n", r#""quantity":2"#, r#""quantity":-1"#)),
        ("fractional quantity", with("q-f", r#""quantity":2"#, r#""quantity":1.5"#)),
        ("price with 3 decimals", with("p-3", r#""59.90""#, r#""1.999""#)),
        ("negative price", with("p-n", r#""59.90""#, r#""-1.00""#)),
        ("invalid UTF-8", {
            let mut b = with("utf", "p_1", "p_\u{1}");
            let at = b.iter().position(|&c| c == 1).unwrap();
            b[at] = 0xff;
            b.insert(at, 0xfe);
            b
        }),
        ("NUL byte in a string", {
            let mut b = with("nul", "p_1", "p_\u{1}");
            let at = b.iter().position(|&c| c == 1).unwrap();
            b[at] = 0;
            b
        }),
        ("escaped NUL in a string", with("nul-esc", "p_1", "p_\\u0000")),
        ("deeply nested", {
            let mut b = br#"{"schema":1,"x":"#.to_vec();
            b.extend(std::iter::repeat_n(b'[', 100_000));
            b
        }),
        ("10 MB record", {
            let big = "a".repeat(10 << 20);
            with("big", r#""quantity":2"#, &format!(r#""quantity":2,"note":"{big}""#))
        }),
        ("far past", with("past", "2026-11-23T10:00:01.234Z", "0001-01-01T00:00:00Z")),
        ("far future", with("future", "2026-11-23T10:00:01.234Z", "2099-12-31T23:59:59Z")),
        ("year 9999 (no window end in four digits)", with("y9999", "2026-11-23T10:00:01.234Z", "9999-12-31T23:59:59Z")),
        ("unterminated nested arrays", b"[[[".to_vec()),
        ("schema 2 in another currency", br#"{"schema":2,"event_id":"yen","event_type":"purchase","user_id":"u_2","session_id":"s","product_id":"p_2","category":"toys","unit_price_minor":100,"currency":"JPY","qty":1,"ts":"2026-11-23T10:00:02Z"}"#.to_vec()),
        ("schema 2 price above the bound", br#"{"schema":2,"event_id":"max","event_type":"purchase","user_id":"u_2","session_id":"s","product_id":"p_2","category":"toys","unit_price_minor":9223372036854775807,"currency":"EUR","qty":1,"ts":"2026-11-23T10:00:02Z"}"#.to_vec()),
        ("search with a zero-width query", br#"{"schema":1,"event_id":"zw","event_type":"search","user_id":"u_3","session_id":"s","ts":"2026-11-23T10:00:03Z","query":" \u200b "}"#.to_vec()),
        ("bad timestamp", with("bad-ts", "2026-11-23T10:00:01.234Z", "yesterday")),
        ("unknown schema", with("s3", r#""schema":1"#, r#""schema":3"#)),
        ("schema as a string", with("s-str", r#""schema":1"#, r#""schema":"1""#)),
        ("no schema", with("s-none", r#""schema":1,"#, "")),
        ("unknown event type", with("et", "purchase", "refund")),
        ("empty event id", with("", "", "")),
        ("JSON array", b"[1,2,3]".to_vec()),
        ("JSON null", b"null".to_vec()),
    ];
    // A few duplicates and more valid ones in between.
    v.push(("duplicate of a valid one", with("ok-1", "", "")));
    for i in 0..20 {
        v.push(("valid", with(&format!("more-{i}"), "", "")));
    }
    v
}

/// Writes the records through `kappa produce --input -` (`c` is a `kappa` command).
pub fn produce_corpus(mut c: std::process::Command, records: &[(&str, Vec<u8>)]) {
    c.args(["produce", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (_, r) in records {
            stdin.write_all(r).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce --input: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every record aggregated or dead-lettered with a reason; the counts add up. `k` makes
/// a `kappa` command on the data directory (with the source's flags).
pub fn check_accounted(k: impl Fn() -> std::process::Command, records: &[(&str, Vec<u8>)]) {
    let mut c = k();
    c.args(RUN_DRAIN);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let [accepted, late, dups, invalid] = super::counts(&out);
    assert_eq!(
        accepted + late + dups + invalid,
        records.len() as u64,
        "every record is counted once: {out}"
    );
    assert_eq!(dups, 1, "{out}");
    let mut c = k();
    c.args(["dead-letters", "--format", "json", "--limit", "1000"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let dead = v["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len() as u64, invalid);
    for d in dead {
        assert!(!d["reason"].as_str().unwrap().is_empty(), "{d}");
        assert!(
            d["raw"].as_str().unwrap().len() <= 4096 * 4,
            "raw is truncated: {d}"
        );
    }
    let sizes: Vec<u64> = dead.iter().map(|d| d["size"].as_u64().unwrap()).collect();
    assert!(
        sizes.iter().any(|&s| s > 10 << 20),
        "the 10 MB record is a dead letter"
    );
    let kinds: std::collections::BTreeSet<&str> =
        dead.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "not_json",
        "bad_type",
        "bad_value",
        "oversize",
        "unknown_schema",
        "future_timestamp",
        "missing_field",
        "unknown_event_type",
        "currency_mismatch",
        "empty_query",
    ] {
        assert!(kinds.contains(k), "a {k} dead letter among {kinds:?}");
    }
}
