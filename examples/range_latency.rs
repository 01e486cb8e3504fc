//! Range-query latency and the store's growth from hourly sums (issue 19).
//!
//! Writes DAYS days of final 1-hour windows whose sums hold PRODUCTS products each (every
//! product in every hour: the saturated case of a busy shop), through `Store::commit` as
//! the pipeline does (the rollups follow), then times `Store::range` over random
//! hour-aligned 30-day ranges (and whole months), and reports the bytes the sums take per
//! day.
//!
//!     cargo run --release --example range_latency -- [DAYS] [PRODUCTS] [QUERIES] [DIR]
//!
//! With DIR, the store is kept in DIR/kappa.redb, and a store already written there whole
//! with the same DAYS, PRODUCTS and QUERIES (DIR/kappa.written says so) is queried without
//! being written again (to time the queries alone, again and again).
//!
//! Prints `30-day ranges over P products: p50 … ms, p99 … ms (N ranges; …)` (and the same
//! for the same ranges read again, for 7-day ranges, and for 30-day answers of `GET /api/top-products` without the HTTP),
//! the buckets each range read, and the store's bytes per day.

use std::time::Instant;

use kappa::range::{self, Question, Report};
use kappa::rollup::{HOUR_MS, KeySums, Sums};
use kappa::store::{Commit, Store, VersionInfo, VersionState};
use kappa::window::FinalWindow;

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000;

fn hour(start: i64, products: u32, queries: u32, seed: u64) -> FinalWindow {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 1000
    };
    let sums = Sums {
        events: [1, 2, 3, 4],
        products: (0..products)
            .map(|p| {
                let views = next() + 1;
                let s = KeySums {
                    views,
                    carts: views / 4,
                    purchases: views / 10,
                    units: views / 8,
                    revenue: u128::from(views) * 1999,
                };
                (format!("p_{p:06}"), s)
            })
            .collect(),
        categories: (0..40)
            .map(|c| (format!("category_{c:02}"), KeySums::default()))
            .collect(),
        queries: (0..queries)
            .map(|q| (format!("query {q}"), next() + 1))
            .collect(),
        by_hour: [0; 24],
    };
    FinalWindow {
        size_ms: HOUR_MS,
        start_ms: start,
        sales_by_category: Vec::new(),
        top_by_units: Vec::new(),
        top_by_revenue: Vec::new(),
        events_by_type: sums.events,
        top_searches: Vec::new(),
        sums: Some(Box::new(sums)),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let keep = (args.len() > 3).then(|| std::path::PathBuf::from(args.remove(3)));
    let args: Vec<u64> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let days = args.first().copied().unwrap_or(62);
    let products = u32::try_from(args.get(1).copied().unwrap_or(50_000))?;
    let queries = u32::try_from(args.get(2).copied().unwrap_or(2_000))?;
    let dir = tempfile::tempdir()?;
    let path = keep.as_deref().unwrap_or(dir.path()).join("kappa.redb");
    // A kept store is reused only when it was written whole, with these arguments.
    let marker = path.with_extension("written");
    let shape = format!("{days} {products} {queries}");
    let written = std::fs::read_to_string(&marker).is_ok_and(|m| m == shape);
    if !written && path.exists() {
        std::fs::remove_file(&path)?;
    }
    let store = Store::open(&path)?;
    store.ensure_version(&VersionInfo {
        name: "v1".into(),
        config: "bench".into(),
        created_ms: 0,
        finalized_through: i64::MIN,
        state: VersionState::Ready,
    })?;
    let size_before = if written {
        0
    } else {
        std::fs::metadata(&path)?.len()
    };
    let t = Instant::now();
    for h in (0..days * 24).filter(|_| !written) {
        let start = BASE + i64::try_from(h)? * HOUR_MS;
        let finals = [hour(start, products, queries, h)];
        store.commit(&Commit {
            version: "v1",
            finals: &finals,
            finalized_through: start + HOUR_MS,
            ..Commit::default()
        })?;
    }
    let write = t.elapsed();
    if keep.is_some() && !written {
        std::fs::write(&marker, &shape)?;
    }
    let bytes = std::fs::metadata(&path)?.len() - size_before;
    #[allow(clippy::cast_precision_loss)]
    let per_day = bytes as f64 / days as f64 / 1e6;
    println!(
        "{days} days of hours with {products} products and {queries} queries each: {} in {:.1} s; store {:.1} MB ({per_day:.1} MB a day, rollups included)",
        if written {
            "kept from before, opened"
        } else {
            "written"
        },
        write.as_secs_f64(),
        bytes as f64 / 1e6
    );
    const SEED: u64 = 88_172_645_463_325_252;
    let mut x = SEED;
    let span_hours = i64::try_from(days * 24)? - 30 * 24;
    // (what, hours, ranges, answered as the API does, the same ranges as the first line)
    for (what, len_hours, n, answered, again) in [
        ("30-day ranges", 30 * 24, 40, false, false),
        // What reading them costs when this process has just read them.
        ("the same 30-day ranges again", 30 * 24, 40, false, true),
        ("7-day ranges", 7 * 24, 40, false, false),
        (
            "30-day top-products answers (the API's JSON)",
            30 * 24,
            40,
            true,
            false,
        ),
    ] {
        if again {
            x = SEED;
        }
        let mut ms: Vec<f64> = Vec::new();
        let mut tiles: Vec<(usize, f64, usize)> = Vec::new();
        for i in 1..=n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = i64::try_from(x % u64::try_from(span_hours.max(1))?)?;
            let from = BASE + off * HOUR_MS;
            let t = Instant::now();
            let to = from + len_hours * HOUR_MS;
            let tiles_read = if answered {
                let q = Question::new("v1".into(), from, to, 10, 0)?;
                let a = range::answer(&store, &q, Report::TopProducts)?;
                assert_eq!(a["by_units"].as_array().map(Vec::len), Some(10));
                a["buckets"].as_object().map_or(0, |b| {
                    b.values()
                        .filter_map(serde_json::Value::as_u64)
                        .sum::<u64>() as usize
                })
            } else {
                let r = store.range("v1", from, to)?;
                assert_eq!(r.sums.products.len(), products as usize);
                r.tiles.len()
            };
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            tiles.push((tiles_read, ms[ms.len() - 1], i));
        }
        ms.sort_by(f64::total_cmp);
        tiles.sort_by(|a, b| a.1.total_cmp(&b.1));
        let counts: Vec<usize> = tiles.iter().map(|t| t.0).collect();
        let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        // Whether the slowest is the process's first range (its tree pages read cold).
        let slowest = tiles.last().map_or(0, |t| t.2);
        println!(
            "{what} over {products} products: p50 {:.1} ms, p99 {:.1} ms ({n} ranges; the slowest is range {slowest}, the next {:.1} ms; buckets read, fastest to slowest: {counts:?})",
            p(0.5),
            p(0.99),
            ms[ms.len().saturating_sub(2)]
        );
    }
    Ok(())
}
