//! The reference floor of `scripts/bench`: what a straightforward implementation does with
//! the same events — read JSON lines, `serde_json` into an owned struct, fold the same
//! aggregates (sales by category, top products by units and revenue, events by type, top
//! searches; 1-minute and 1-hour windows) into `HashMap`s; one thread, no watermarks, no
//! lateness, no deduplication, no store.
//!
//!     cargo bench --bench reference -- events.jsonl
//!
//! Prints `reference: N records in S s: R records/s`.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Event {
    schema: u64,
    event_id: String,
    event_type: String,
    user_id: String,
    session_id: String,
    product_id: Option<String>,
    category: Option<String>,
    price: Option<serde_json::Value>,
    quantity: Option<i64>,
    ts: String,
    query: Option<String>,
}

#[derive(Default)]
struct Window {
    sales: HashMap<String, (u64, u64, u64)>,
    products: HashMap<String, (u64, u64)>,
    types: HashMap<String, u64>,
    queries: HashMap<String, u64>,
}

fn cents(v: &serde_json::Value) -> Option<u64> {
    let f = match v {
        serde_json::Value::String(s) => s.parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    Some((f * 100.0).round() as u64)
}

fn main() {
    let Some(path) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) else {
        eprintln!("usage: cargo bench --bench reference -- EVENTS.jsonl");
        return;
    };
    let file = std::fs::File::open(&path).expect("the events file");
    let start = Instant::now();
    let mut windows: HashMap<(i64, i64), Window> = HashMap::new();
    let (mut n, mut bad) = (0u64, 0u64);
    for line in std::io::BufReader::with_capacity(1 << 20, file).lines() {
        let Ok(line) = line else {
            bad += 1;
            continue;
        };
        n += 1;
        let Ok(e) = serde_json::from_str::<Event>(&line) else {
            bad += 1;
            continue;
        };
        let Ok(ts) = chrono::DateTime::parse_from_rfc3339(&e.ts) else {
            bad += 1;
            continue;
        };
        let ms = ts.timestamp_millis();
        for size in [60_000, 3_600_000] {
            let w = windows
                .entry((size, ms.div_euclid(size) * size))
                .or_default();
            *w.types.entry(e.event_type.clone()).or_default() += 1;
            match e.event_type.as_str() {
                "search" => {
                    let q = e
                        .query
                        .as_deref()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase();
                    *w.queries.entry(q).or_default() += 1;
                }
                "purchase" => {
                    let qty = e.quantity.unwrap_or(1).max(0) as u64;
                    let rev = e.price.as_ref().and_then(cents).unwrap_or(0) * qty;
                    let c = w
                        .sales
                        .entry(e.category.clone().unwrap_or_default())
                        .or_default();
                    c.0 += 1;
                    c.1 += qty;
                    c.2 += rev;
                    let p = w
                        .products
                        .entry(e.product_id.clone().unwrap_or_default())
                        .or_default();
                    p.0 += qty;
                    p.1 += rev;
                }
                _ => {}
            }
        }
    }
    // Top 10 of every window.
    let mut checksum = 0u64;
    for w in windows.values() {
        let mut by_units: Vec<_> = w.products.iter().collect();
        by_units.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let mut queries: Vec<_> = w.queries.iter().collect();
        queries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        checksum += by_units.iter().take(10).map(|p| p.1.0).sum::<u64>()
            + queries.iter().take(10).map(|q| *q.1).sum::<u64>();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "reference: {n} records in {secs:.3} s: {:.0} records/s ({bad} unreadable, {} windows, checksum {checksum})",
        n as f64 / secs,
        windows.len()
    );
}
