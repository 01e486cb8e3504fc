//! Hourly sums, calendar rollups and range answers (issue 19), through the binary: a
//! correction of one hour reaches its day, week, month and year; the API answers ranges
//! and refuses bad ones.

mod common;

use common::*;
use serde_json::Value;

/// `kappa query --from --to --report funnel --format json` on `dir`.
fn funnel(dir: &std::path::Path, from: &str, to: &str) -> Value {
    let mut c = kappa(dir);
    c.args(["query", "--from", from, "--to", to, "--report", "funnel"])
        .args(["--format", "json", "--min-views", "1", "--k", "10000"]);
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

/// Events per type of an answer.
fn events(v: &Value) -> Vec<u64> {
    ["search", "view", "add_cart", "purchase"]
        .iter()
        .map(|t| v["events_by_type"][*t].as_u64().unwrap())
        .collect()
}

fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn a_corrected_hour_is_reflected_in_its_day_week_month_and_year() {
    let dir = temp();
    // From Tuesday 2025-12-30 to Monday 2026-01-05 01:30: the week of 2025-12-31
    // (Monday the 29th to the 5th), its day, December and 2025 all end before the events
    // do, so all are final after the run; 2 % of the events arrive 1–10 minutes late.
    let mut c = kappa(dir.path());
    c.args([
        "produce",
        "--events",
        "60000",
        "--rate",
        "0",
        "--sim-rate",
        "0.1145",
    ])
    .args([
        "--start",
        "2025-12-30T00:00:00Z",
        "--late-share",
        "0.02",
        "--seed",
        "9",
    ])
    .args(["--disorder", "10s", "--flat"]);
    ok(c);
    run_drain(dir.path(), &[]);
    let buckets = [
        ("day", "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("week", "2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z"),
        ("month", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("year", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ];
    let before: Vec<Value> = buckets
        .iter()
        .map(|(_, from, to)| funnel(dir.path(), from, to))
        .collect();
    for ((unit, ..), v) in buckets.iter().zip(&before) {
        assert_eq!(v["buckets"][*unit], 1, "{unit} answered by its rollup: {v}");
    }
    // The live run left the late events of 10:00–11:00 on the 31st out; a correction of
    // that hour with a lateness bound that takes them in.
    let mut c = kappa(dir.path());
    c.args([
        "replay",
        "--from",
        "2025-12-31T10:00:00Z",
        "--to",
        "2025-12-31T11:00:00Z",
    ])
    .args(["--max-delay", "15m"]);
    ok(c);
    let hour =
        |d: &std::path::Path| events(&funnel(d, "2025-12-31T10:00:00Z", "2025-12-31T11:00:00Z"));
    let corrected_hour = hour(dir.path());
    for (((unit, from, to), old), i) in buckets.iter().zip(&before).zip(0..) {
        let new = funnel(dir.path(), from, to);
        assert_eq!(new["buckets"][*unit], 1, "{unit} answered by its rollup");
        let (old, new) = (events(old), events(&new));
        assert!(
            new.iter().sum::<u64>() > old.iter().sum::<u64>(),
            "the correction of 10:00 is not in its {unit}: {old:?} → {new:?}"
        );
        // The rollup equals the same range read as its first hour and the rest (other
        // buckets: hours, days, weeks).
        let first = ms(from) + 3_600_000;
        let first = chrono::DateTime::from_timestamp_millis(first)
            .unwrap()
            .to_rfc3339();
        let parts = add(
            &events(&funnel(dir.path(), from, &first)),
            &events(&funnel(dir.path(), &first, to)),
        );
        assert_eq!(new, parts, "{unit} ≠ its parts");
        if i == 0 {
            // Only the corrected hour changed in the day.
            let day_before = events(&before[0]);
            let diff: u64 = new.iter().sum::<u64>() - day_before.iter().sum::<u64>();
            assert!(diff > 0 && diff < corrected_hour.iter().sum::<u64>());
        }
    }
}

#[test]
fn the_api_answers_ranges_and_refuses_bad_ones() {
    let dir = temp();
    let mut c = kappa(dir.path());
    c.args([
        "produce",
        "--events",
        "20000",
        "--rate",
        "0",
        "--sim-rate",
        "2",
    ])
    .args(["--start", "2026-11-23T00:00:00Z", "--seed", "3"]);
    ok(c);
    run_drain(dir.path(), &[]);
    let s = Server::start(dir.path(), &[]);
    let q = "from=2026-11-23T00:00:00Z&to=2026-11-23T02:00:00Z";
    let (code, body) = s.get(&format!("/api/top-products?{q}&k=3"));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["buckets"]["hour"], 2, "{v}");
    assert_eq!(v["by_units"].as_array().unwrap().len(), 3, "{v}");
    let units: Vec<u64> = v["by_units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["units"].as_u64().unwrap())
        .collect();
    assert!(units.windows(2).all(|w| w[0] >= w[1]), "{units:?}");
    for endpoint in ["sales-by-category", "top-searches", "funnel"] {
        let (code, body) = s.get(&format!("/api/{endpoint}?{q}"));
        assert_eq!(code, 200, "{endpoint}: {body}");
    }
    // The same range through the CLI, which reads through the server holding the store.
    let mut c = kappa(dir.path());
    c.args([
        "query",
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-23T02:00:00Z",
    ])
    .args(["--format", "json", "--k", "3", "--server", &s.base]);
    let cli: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(cli, v);
    for (query, error) in [
        (
            "from=2026-11-23T00:30:00Z&to=2026-11-23T02:00:00Z",
            "whole hour",
        ),
        (
            "from=2026-11-23T03:00:00Z&to=2026-11-23T02:00:00Z",
            "before",
        ),
        ("from=2026-11-23T00:00:00Z", "required"),
        (&format!("{q}&k=0"), "k must be"),
    ] {
        let (code, body) = s.get(&format!("/api/funnel?{query}"));
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(error), "{query}: {body}");
    }
    // Every read endpoint is routed (the range endpoints were once added at the expense
    // of others).
    for endpoint in [
        "fingerprint",
        "windows",
        "top-products",
        "sales-by-category",
        "top-searches",
        "funnel",
        "provisional",
        "latest",
        "dead-letters",
        "late-events",
    ] {
        let (code, body) = s.get(&format!("/api/{endpoint}"));
        assert!(
            code != 404 || !body.contains("no such endpoint"),
            "{endpoint}: {code} {body}"
        );
    }
    // One product's history from the product-major index: its hours add up to what the
    // range says of it.
    let top = &v["by_units"][0];
    let id = top["product_id"].as_str().unwrap();
    let (code, body) = s.get(&format!("/api/products/{id}/history?{q}"));
    assert_eq!(code, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    let hours = h["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 2, "{h}");
    let units: u64 = hours.iter().map(|r| r["units"].as_u64().unwrap()).sum();
    assert_eq!(units, top["units"].as_u64().unwrap(), "{h}");
    assert_eq!(h["total"]["units"], top["units"], "{h}");
    assert_eq!(h["total"]["views"], top["views"], "{h}");
    let (code, body) = s.get(&format!("/api/products/{id}/history"));
    assert_eq!(code, 200, "{body}");
    let all: Value = serde_json::from_str(&body).unwrap();
    assert!(all["hours"].as_array().unwrap().len() >= 2, "{all}");
    let (code, _) = s.get(&format!(
        "/api/products/{id}/history?from=2026-11-23T00:10:00Z"
    ));
    assert_eq!(code, 400);
    // A range reaching back to year 1 is answered from the version's years only (it was
    // once walked hour by hour: 17 M hours).
    let (code, body) = s.get("/api/funnel?from=0001-01-01T00:00:00Z&to=2026-11-23T02:00:00Z");
    assert_eq!(code, 200, "{body}");
    let far: Value = serde_json::from_str(&body).unwrap();
    // (The generator's disorder puts a few events before 00:00.)
    let (_, body) = s.get("/api/funnel?from=2026-11-22T00:00:00Z&to=2026-11-23T02:00:00Z");
    let near: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(far["events_by_type"], near["events_by_type"]);
    // A period instead of from and to: it ends where the final hours end.
    let (code, body) = s.get("/api/top-products?period=last-24h&k=3");
    assert_eq!(code, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["final_to"], p["to"], "{p}");
    assert!(!p["by_units"].as_array().unwrap().is_empty(), "{p}");
    let (code, body) = s.get("/api/funnel?period=yesterday");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("last-24h"), "{body}");
    assert!(s.interrupt().success());
}
