//! The storage layout experiment (issue 19, item 5): the same hourly sums stored
//! time-major (`(version, unit, start) → every key's sums`, what `kappa run` writes) and
//! product-major (`(version, product, hour) → one product's sums`), on three queries: a
//! time range (all products), one product over all time, one product over a 7-day range.
//!
//! Reads the hours of a store `kappa run` wrote, writes the product-major table into a
//! second redb file, and times each query on each layout (20 random picks each).
//!
//!     cargo run --release --example layout -- DATA_DIR/kappa.redb
//!
//! Prints the sizes, then a table: query, layout, p50/p99 ms, kB of values read.

use std::time::Instant;

use kappa::rollup::{Calendar, HOUR_MS, KeySums, Sums, Unit, merge_encoded};
use redb::{ReadableDatabase, TableDefinition};

const SUMS: TableDefinition<(&str, u8, i64), &[u8]> = TableDefinition::new("sums");
const BY_PRODUCT: TableDefinition<(&str, &str, i64), &[u8]> = TableDefinition::new("product_hours");
/// What `kappa run` keeps: one row per product and day holding its hours.
const BY_PRODUCT_DAY: TableDefinition<(&str, &str, i64), &[u8]> =
    TableDefinition::new("product_days");
const DAY_MS: i64 = 24 * HOUR_MS;

fn decode<T: serde::de::DeserializeOwned>(v: &[u8]) -> T {
    bincode::serde::decode_from_slice(&v[1..], bincode::config::standard())
        .expect("decodes")
        .0
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![1u8];
    bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
        .expect("encodes");
    out
}

struct Stats(Vec<f64>, u64);

impl Stats {
    fn line(&self, query: &str, layout: &str) {
        let mut ms = self.0.clone();
        ms.sort_by(f64::total_cmp);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "| {query} | {layout} | {:.2} | {:.2} | {:.1} |",
            p(0.5),
            p(0.99),
            self.1 as f64 / ms.len() as f64 / 1e3
        );
    }
}

fn time<T>(stats: &mut Stats, f: impl FnOnce(&mut u64) -> T) -> T {
    let t = Instant::now();
    let out = f(&mut stats.1);
    stats.0.push(t.elapsed().as_secs_f64() * 1e3);
    out
}

#[allow(clippy::too_many_lines)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: layout DATA_DIR/kappa.redb")?;
    let db = redb::Database::open(&path)?;
    let v = "v1";
    // The time-major hours, as kappa wrote them.
    let hours: Vec<(i64, Vec<u8>)> = {
        let tx = db.begin_read()?;
        let t = tx.open_table(SUMS)?;
        t.range((v, 0u8, i64::MIN)..=(v, 0u8, i64::MAX))?
            .map(|r| r.map(|(k, val)| (k.value().2, val.value().to_vec())))
            .collect::<Result<_, _>>()?
    };
    let time_major_bytes: u64 = {
        let tx = db.begin_read()?;
        let t = tx.open_table(SUMS)?;
        t.range((v, 0u8, i64::MIN)..=(v, u8::MAX, i64::MAX))?
            .map(|r| r.map(|(_, val)| val.value().len() as u64 + 11))
            .sum::<Result<u64, _>>()?
    };
    let (first, last) = (hours[0].0, hours[hours.len() - 1].0);
    // The product-major table, in its own file.
    let dir = tempfile::tempdir()?;
    let pm_path = dir.path().join("by-product.redb");
    let pm = redb::Database::create(&pm_path)?;
    let t0 = Instant::now();
    let mut products: Vec<String> = Vec::new();
    let mut pm_bytes = 0u64;
    {
        let tx = pm.begin_write()?;
        {
            let mut t = tx.open_table(BY_PRODUCT)?;
            for (h, blob) in &hours {
                let s: Sums = decode(blob);
                for (p, k) in &s.products {
                    let val = encode(k);
                    pm_bytes += (v.len() + p.len() + 8 + val.len()) as u64;
                    t.insert((v, p.as_str(), *h), val.as_slice())?;
                }
                if s.products.len() > products.len() {
                    products = s.products.iter().map(|p| p.0.clone()).collect();
                }
            }
        }
        tx.commit()?;
    }
    let build = t0.elapsed();
    let t1 = Instant::now();
    let mut pd_bytes = 0u64;
    {
        let mut days: std::collections::BTreeMap<(String, i64), Vec<(i64, KeySums)>> =
            std::collections::BTreeMap::new();
        for (h, blob) in &hours {
            let s: Sums = decode(blob);
            for (p, k) in s.products {
                days.entry((p, h.div_euclid(DAY_MS) * DAY_MS))
                    .or_default()
                    .push((*h, k));
            }
        }
        let tx = pm.begin_write()?;
        {
            let mut t = tx.open_table(BY_PRODUCT_DAY)?;
            for ((p, d), hs) in &days {
                let val = encode(hs);
                pd_bytes += (v.len() + p.len() + 8 + val.len()) as u64;
                t.insert((v, p.as_str(), *d), val.as_slice())?;
            }
        }
        tx.commit()?;
    }
    let build_days = t1.elapsed();
    println!(
        "{} hours ({} → {}), {} products in the busiest hour",
        hours.len(),
        kappa::event::time::format_rfc3339_ms(first),
        kappa::event::time::format_rfc3339_ms(last + HOUR_MS),
        products.len()
    );
    println!(
        "time-major: {:.1} MB of keys and values (hours and rollups); product-major: {:.1} MB, built in {:.1} s (file {:.1} MB)",
        time_major_bytes as f64 / 1e6,
        pm_bytes as f64 / 1e6,
        build.as_secs_f64(),
        std::fs::metadata(&pm_path)?.len() as f64 / 1e6
    );
    println!(
        "product-major by day: {:.1} MB, built in {:.1} s",
        pd_bytes as f64 / 1e6,
        build_days.as_secs_f64()
    );
    println!("| query | layout | p50 ms | p99 ms | kB of values read per query |");
    println!("|---|---|---|---|---|");
    // What `Store::range` does, on this file: the largest stored buckets that tile the
    // range, merged in place.
    let time_major = |from: i64, to: i64, bytes: &mut u64| -> Sums {
        let tx = db.begin_read().expect("read");
        let t = tx.open_table(SUMS).expect("table");
        let mut has = |u: Unit, s: i64| matches!(t.get((v, u as u8, s)), Ok(Some(_)));
        let tiles = Calendar::default().tile(from, to, &mut has);
        let guards: Vec<_> = tiles
            .iter()
            .filter_map(|&(u, s)| t.get((v, u as u8, s)).expect("get"))
            .collect();
        *bytes += guards.iter().map(|g| g.value().len() as u64).sum::<u64>();
        let blobs: Vec<&[u8]> = guards.iter().map(|g| &g.value()[1..]).collect();
        merge_encoded(&blobs).expect("sums decode")
    };
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let span = u64::try_from((last - first) / HOUR_MS)?;
    let week = 7 * 24;
    let picks: Vec<(i64, String)> = (0..20)
        .map(|_| {
            let h = first + i64::try_from(rnd(span.saturating_sub(week)))? * HOUR_MS;
            let p = products[usize::try_from(rnd(products.len() as u64))?].clone();
            Ok((h, p))
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let week_ms = i64::try_from(week)? * HOUR_MS;
    // 1. A 7-day range, every product.
    let (mut a, mut b) = (Stats(Vec::new(), 0), Stats(Vec::new(), 0));
    for (h, _) in &picks {
        let r = time(&mut a, |bytes| {
            time_major(*h, h + week_ms, bytes).products.len()
        });
        let n = time(&mut b, |bytes| {
            // Every product's hours in the range: a scan of the whole table.
            let tx = pm.begin_read().expect("read");
            let t = tx.open_table(BY_PRODUCT).expect("table");
            let mut acc: std::collections::BTreeMap<String, KeySums> = Default::default();
            for r in t
                .range((v, "", i64::MIN)..=(v, "\u{10ffff}", i64::MAX))
                .expect("range")
            {
                let (k, val) = r.expect("row");
                let (_, p, hour) = k.value();
                *bytes += val.value().len() as u64;
                if (*h..h + week_ms).contains(&hour) {
                    let s: KeySums = decode(val.value());
                    let e = acc.entry(p.to_string()).or_default();
                    e.views += s.views;
                    e.purchases += s.purchases;
                    e.units += s.units;
                    e.revenue += s.revenue;
                }
            }
            acc.len()
        });
        assert!(n <= r.max(n));
    }
    a.line("7-day range, every product", "time-major (rollups)");
    b.line(
        "7-day range, every product",
        "product-major, a row per hour",
    );
    // 2. One product over all time; 3. one product over 7 days.
    for (label, all) in [
        ("one product, all time", true),
        ("one product, 7 days", false),
    ] {
        let (mut a, mut b, mut c) = (
            Stats(Vec::new(), 0),
            Stats(Vec::new(), 0),
            Stats(Vec::new(), 0),
        );
        for (h, p) in &picks {
            let (from, to) = if all {
                (first, last + HOUR_MS)
            } else {
                (*h, h + week_ms)
            };
            let ta = time(&mut a, |bytes| {
                // The buckets that tile the range, each decoded to find the product.
                time_major(from, to, bytes)
                    .products
                    .iter()
                    .find(|(id, _)| id == p)
                    .map_or(0, |(_, s)| s.views)
            });
            let tb = time(&mut b, |bytes| {
                let tx = pm.begin_read().expect("read");
                let t = tx.open_table(BY_PRODUCT).expect("table");
                let mut views = 0;
                for r in t
                    .range((v, p.as_str(), from)..(v, p.as_str(), to))
                    .expect("range")
                {
                    let (_, val) = r.expect("row");
                    *bytes += val.value().len() as u64;
                    views += decode::<KeySums>(val.value()).views;
                }
                views
            });
            let tc = time(&mut c, |bytes| {
                let tx = pm.begin_read().expect("read");
                let t = tx.open_table(BY_PRODUCT_DAY).expect("table");
                let day0 = from.div_euclid(DAY_MS) * DAY_MS;
                let mut views = 0;
                for r in t
                    .range((v, p.as_str(), day0)..(v, p.as_str(), to))
                    .expect("range")
                {
                    let (_, val) = r.expect("row");
                    *bytes += val.value().len() as u64;
                    let hs: Vec<(i64, KeySums)> = decode(val.value());
                    views += hs
                        .iter()
                        .filter(|(h, _)| (from..to).contains(h))
                        .map(|(_, k)| k.views)
                        .sum::<u64>();
                }
                views
            });
            assert_eq!(ta, tb, "both layouts agree on {p}");
            assert_eq!(ta, tc, "both layouts agree on {p}");
        }
        a.line(label, "time-major (rollups)");
        b.line(label, "product-major, a row per hour");
        c.line(label, "product-major, a row per day (kept)");
    }
    Ok(())
}
