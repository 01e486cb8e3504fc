//! The reviews stream end to end on the real binary: generated reviews (with re-deliveries
//! and malformed records) go through `kappa produce --stream reviews`, `kappa run` and
//! `kappa export`, and every exported review row is held to a batch computation written
//! here from the records themselves.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::*;
use serde_json::{Value, json};

const SIZES: [(i64, &str); 2] = [(60_000, "1m"), (3_600_000, "1h")];
const TOP_K: usize = 10;

/// (review id, product, rating, text, event time).
type Rv = (String, String, u64, String, i64);

/// A valid review as the model reads it, or `None` (a dead letter).
fn valid(line: &str) -> Option<Rv> {
    let v: Value = serde_json::from_str(line).ok()?;
    let o = v.as_object()?;
    if o.get("schema")? != &json!(1) {
        return None;
    }
    let text_field = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (id, product, _user) = (
        text_field("review_id")?,
        text_field("product_id")?,
        text_field("user_id")?,
    );
    let rating = o.get("rating")?.as_u64().filter(|r| (1..=5).contains(r))?;
    let text = o.get("text")?.as_str()?.to_string();
    if let Some(images) = o.get("images") {
        images
            .as_array()?
            .iter()
            .all(Value::is_string)
            .then_some(())?;
    }
    let at = chrono::DateTime::parse_from_rfc3339(o.get("created_at")?.as_str()?).ok()?;
    Some((id, product, rating, text, at.timestamp_millis()))
}

/// `sum / count` with two decimals, half up, from the truncated thousandths.
fn average(sum: u64, count: u64) -> String {
    let thousandths = sum * 1000 / count;
    let hundredths = thousandths / 10 + u64::from(thousandths % 10 >= 5);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Every review export row the batch model expects, ranking best and worst rated among
/// products with at least `min_reviews` reviews.
fn model(lines: &str, min_reviews: u64) -> BTreeSet<String> {
    let dict = kappa::review::Dictionary::built_in();
    let mut seen = HashSet::new();
    let reviews: Vec<_> = lines
        .lines()
        .filter_map(valid)
        .filter(|r| seen.insert(r.0.clone()))
        .collect();
    let mut out = BTreeSet::new();
    for (size, name) in SIZES {
        let mut windows: BTreeMap<i64, Vec<&Rv>> = BTreeMap::new();
        for r in &reviews {
            windows
                .entry(r.4 - r.4.rem_euclid(size))
                .or_default()
                .push(r);
        }
        for (start, rs) in windows {
            let row = |agg: &str, fields: Value| {
                let mut o = json!({
                    "version": "v1", "aggregate": agg, "size": name,
                    "window_start": time(start), "window_end": time(start + size),
                });
                o.as_object_mut()
                    .unwrap()
                    .extend(fields.as_object().unwrap().clone());
                o.to_string()
            };
            let norm = |s: String| serde_json::from_str::<Value>(&s).unwrap().to_string();
            let mut products: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            let mut aspects: BTreeMap<(String, String), u64> = BTreeMap::new();
            for rating in 1..=5u64 {
                let n = rs.iter().filter(|r| r.2 == rating).count();
                out.insert(norm(row(
                    "rating_histogram",
                    json!({"rating": rating, "count": n}),
                )));
            }
            for r in &rs {
                let p = products.entry(&r.1).or_default();
                p.0 += 1;
                p.1 += r.2;
                let pairs: BTreeSet<_> = dict.classify(&r.3).into_iter().collect();
                for (a, s) in pairs {
                    *aspects
                        .entry((a.as_str().into(), s.as_str().into()))
                        .or_default() += 1;
                }
            }
            let (count, sum): (u64, u64) = (rs.len() as u64, rs.iter().map(|r| r.2).sum());
            out.insert(norm(row(
                "average_rating",
                json!({"reviews": count, "rating_sum": sum, "average": average(sum, count)}),
            )));
            let ranked = |name: &str,
                          list: Vec<(&&str, &(u64, u64))>,
                          out: &mut BTreeSet<String>| {
                for (i, (p, &(c, s))) in list.into_iter().take(TOP_K).enumerate() {
                    out.insert(norm(row(
                        name,
                        json!({"rank": i + 1, "product_id": p, "reviews": c, "rating_sum": s, "average": average(s, c)}),
                    )));
                }
            };
            let mut most: Vec<_> = products.iter().collect();
            most.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
            ranked("most_reviewed_products", most, &mut out);
            #[allow(clippy::cast_precision_loss)]
            let mean = |&(c, s): &(u64, u64)| s as f64 / c as f64;
            let rated: Vec<_> = products.iter().filter(|p| p.1.0 >= min_reviews).collect();
            let mut best = rated.clone();
            best.sort_by(|a, b| {
                mean(b.1)
                    .total_cmp(&mean(a.1))
                    .then(b.1.0.cmp(&a.1.0))
                    .then(a.0.cmp(b.0))
            });
            ranked("best_rated_products", best, &mut out);
            let mut worst = rated;
            worst.sort_by(|a, b| {
                mean(a.1)
                    .total_cmp(&mean(b.1))
                    .then(b.1.0.cmp(&a.1.0))
                    .then(a.0.cmp(b.0))
            });
            ranked("worst_rated_products", worst, &mut out);
            for a in ["delivery", "quality", "packaging", "price", "overall"] {
                for s in ["positive", "negative", "neutral"] {
                    let n = aspects.get(&(a.into(), s.into())).copied().unwrap_or(0);
                    out.insert(norm(row(
                        "review_aspects",
                        json!({"aspect": a, "sentiment": s, "count": n}),
                    )));
                }
            }
        }
    }
    out
}

#[test]
fn review_aggregates_equal_a_batch_computation_of_the_records() {
    let dir = temp();
    let file = dir.path().join("reviews.jsonl");
    let mut c = kappa(dir.path());
    c.args([
        "produce",
        "--stream",
        "reviews",
        "--rate",
        "0",
        "--sim-rate",
        "20",
    ])
    .args(["--events", "6000", "--seed", "11", "--products", "60"])
    .args([
        "--duplicate-share",
        "0.03",
        "--malformed-share",
        "0.02",
        "--output",
    ])
    .arg(&file);
    ok(c);
    // A truncated record may end inside a character: read the lines as bytes.
    let lines = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    let mut c = kappa(dir.path());
    c.args(["produce", "--stream", "reviews", "--input"])
        .arg(&file);
    ok(c);
    produce(dir.path(), 5_000, 11);
    let out = run_drain(dir.path(), &[]);
    let invalid = lines.lines().filter(|l| valid(l).is_none()).count();
    assert!(invalid > 50, "the generator wrote malformed reviews");
    assert!(
        out.contains("reviews: 6000 read") && out.contains(&format!("{invalid} invalid")),
        "{out}"
    );

    let expected = model(&lines, 3);
    assert!(expected.len() > 250, "{} rows", expected.len());
    assert_rows(&export_reviews(dir.path()), &expected);
    // Every invalid review is a dead letter of the reviews, none of the events'.
    let mut c = kappa(dir.path());
    c.args([
        "dead-letters",
        "--stream",
        "reviews",
        "--limit",
        "10000",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), invalid);

    // Another minimum for the rankings: a run refuses it and names the replay, which
    // recomputes the reviews with it and leaves the events as they were.
    let events_before = export_events(dir.path());
    let mut c = kappa(dir.path());
    c.args(RUN_DRAIN).env("KAPPA_REVIEWS__MIN_REVIEWS", "2");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("kappa replay --stream reviews"),
        "{err}"
    );
    let mut c = kappa(dir.path());
    c.args(["replay", "--stream", "reviews"])
        .env("KAPPA_REVIEWS__MIN_REVIEWS", "2");
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("6000 reviews read"), "{out}");
    // The replay leaves the windows its watermark did not pass open, for the next run.
    let replayed = export_reviews(dir.path());
    let mut c = kappa(dir.path());
    c.args(RUN_DRAIN).env("KAPPA_REVIEWS__MIN_REVIEWS", "2");
    ok(c);
    let drained = export_reviews(dir.path());
    assert!(replayed.len() < drained.len() && replayed.is_subset(&drained));
    let again = model(&lines, 2);
    assert_ne!(again, expected);
    assert_rows(&export_reviews(dir.path()), &again);
    assert_eq!(export_events(dir.path()), events_before);
}

const REVIEW_AGGREGATES: [&str; 6] = [
    "rating_histogram",
    "average_rating",
    "most_reviewed_products",
    "best_rated_products",
    "worst_rated_products",
    "review_aspects",
];

fn export_lines(dir: &std::path::Path, reviews: bool) -> BTreeSet<String> {
    String::from_utf8(export(dir))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| REVIEW_AGGREGATES.contains(&v["aggregate"].as_str().unwrap()) == reviews)
        .map(|v| v.to_string())
        .collect()
}

fn export_reviews(dir: &std::path::Path) -> BTreeSet<String> {
    export_lines(dir, true)
}

fn export_events(dir: &std::path::Path) -> BTreeSet<String> {
    export_lines(dir, false)
}

fn assert_rows(got: &BTreeSet<String>, expected: &BTreeSet<String>) {
    let missing: Vec<_> = expected.difference(got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nunexpected {extra:#?}"
    );
}

/// A review far behind its partition's watermark is late, kept for a replay, and listed
/// by `/api/late-events?stream=reviews` (the events' list stays empty).
#[test]
fn late_reviews_are_listed_apart_from_late_events() {
    let dir = temp();
    let review = |id: &str, at: &str| {
        format!(
            r#"{{"schema":1,"review_id":"{id}","product_id":"p_1","user_id":"u_1","rating":4,"text":"배송 빨라요","created_at":"{at}"}}"#
        )
    };
    let file = dir.path().join("reviews.jsonl");
    std::fs::write(
        &file,
        [
            review("r1", "2026-11-23T00:10:00Z"),
            review("r2", "2026-11-23T00:00:00Z"),
        ]
        .join("\n"),
    )
    .unwrap();
    let mut c = kappa(dir.path());
    c.args(["produce", "--stream", "reviews", "--input"])
        .arg(&file);
    ok(c);
    let out = run_drain(dir.path(), &[]);
    assert!(out.contains("reviews: 2 read, 1 accepted, 1 late"), "{out}");
    let s = Server::start(dir.path(), &[]);
    let (code, body) = s.get("/api/late-events?stream=reviews");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(v["stream"], "reviews");
    let late = v["late_events"].as_array().unwrap();
    assert_eq!(late.len(), 1, "{body}");
    assert_eq!(late[0]["event_time"], "2026-11-23T00:00:00Z");
    let (_, body) = s.get("/api/late-events");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["late_events"].as_array().unwrap().len(), 0, "{body}");
    let (code, body) = s.get("/api/late-events?stream=products");
    assert_eq!(code, 400, "{body}");
}
