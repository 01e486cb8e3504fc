//! Range-query latency and the store's growth from hourly sums (issue 19).
//!
//! Writes DAYS days of final 1-hour windows whose sums hold PRODUCTS products each (every
//! product in every hour: the saturated case of a busy shop), through `Store::commit` as
//! the pipeline does (the rollups follow), then times `Store::range` over random
//! hour-aligned 30-day ranges (and whole months), and reports the bytes the sums take per
//! day.
//!
//!     cargo run --release --example range_latency -- [DAYS] [PRODUCTS] [QUERIES]
//!
//! Prints `30-day ranges over P products: p50 … ms, p99 … ms (N ranges)` and the store's
//! bytes per day.

use std::time::Instant;

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
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let days = args.first().copied().unwrap_or(62);
    let products = u32::try_from(args.get(1).copied().unwrap_or(50_000))?;
    let queries = u32::try_from(args.get(2).copied().unwrap_or(2_000))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kappa.redb");
    let store = Store::open(&path)?;
    store.ensure_version(&VersionInfo {
        name: "v1".into(),
        config: "bench".into(),
        created_ms: 0,
        finalized_through: i64::MIN,
        state: VersionState::Ready,
    })?;
    let size_before = std::fs::metadata(&path)?.len();
    let t = Instant::now();
    for h in 0..days * 24 {
        let start = BASE + i64::try_from(h)? * HOUR_MS;
        let finals = [hour(start, products, queries, h)];
        store.commit(&Commit {
            version: "v1",
            finals: &finals,
            review_finals: &[],
            positions: &[],
            finalized_through: start + HOUR_MS,
            checkpoints: &[],
            dead_letters: &[],
            late: &[],
            merger_state: None,
            epochs: &[],
        })?;
    }
    let write = t.elapsed();
    let bytes = std::fs::metadata(&path)?.len() - size_before;
    #[allow(clippy::cast_precision_loss)]
    let per_day = bytes as f64 / days as f64 / 1e6;
    println!(
        "{days} days of hours with {products} products and {queries} queries each: written in {:.1} s; store {:.1} MB ({per_day:.1} MB a day, rollups included)",
        write.as_secs_f64(),
        bytes as f64 / 1e6
    );
    let mut x = 88_172_645_463_325_252u64;
    let span_hours = i64::try_from(days * 24)? - 30 * 24;
    for (what, len_hours, n) in [("30-day ranges", 30 * 24, 40), ("7-day ranges", 7 * 24, 40)] {
        let mut ms: Vec<f64> = Vec::new();
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = i64::try_from(x % u64::try_from(span_hours.max(1))?)?;
            let from = BASE + off * HOUR_MS;
            let t = Instant::now();
            let r = store.range("v1", from, from + len_hours * HOUR_MS)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(r.sums.products.len(), products as usize);
        }
        ms.sort_by(f64::total_cmp);
        let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{what} over {products} products: p50 {:.1} ms, p99 {:.1} ms ({n} ranges)",
            p(0.5),
            p(0.99)
        );
    }
    Ok(())
}
