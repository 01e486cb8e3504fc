//! Decode-only benchmark (`scripts/bench` runs it): every line of a JSON-lines file through
//! kappa's decoder (its scanner) and through the serde_json decoder it replaced, from
//! memory, one thread; best of 3 passes each. Then the scanner again with three declared
//! aggregates (issue 20) evaluated on each valid event: their paths taken out of the
//! record (by the scanner as it goes, then by a second walk), filtered, grouped and added
//! into windows of their sizes.
//!
//!     cargo run --release --example decode_only -- events.jsonl

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use kappa::declared::{Declaration, Plan, Window};

/// Three declarations on the generator's nested fields, of the kinds the issue names
/// (`scripts/bench`'s `declared` phase runs the pipeline with the same file).
const DECLARED: &str = include_str!("../scripts/bench-declared.toml");

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: decode_only EVENTS.jsonl");
        std::process::exit(2);
    };
    let data = std::fs::read(&path).expect("the events file");
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let rules = kappa::event::Rules::new(65_536);
    let run = |name: &str, f: &dyn Fn(&[u8]) -> bool| {
        let mut best = f64::MAX;
        let mut ok = 0;
        for _ in 0..3 {
            let t = Instant::now();
            ok = lines.iter().filter(|l| f(l)).count();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "decode only, {name}: {} records ({:.1} MB) in {best:.3} s: {:.0} records/s, {:.1} MB/s ({ok} valid)",
            lines.len(),
            bytes as f64 / 1e6,
            lines.len() as f64 / best,
            bytes as f64 / 1e6 / best
        );
    };
    run("kappa scanner", &|l| {
        kappa::event::decode(l, 65_536).is_ok()
    });
    run("serde_json (borrowed)", &|l| {
        kappa::event::decode_serde(l, &rules).is_ok()
    });
    #[derive(serde::Deserialize)]
    struct File {
        aggregates: Vec<Declaration>,
    }
    let file: File = toml::from_str(DECLARED).expect("the declarations");
    let plan = Plan::compile(&file.aggregates).expect("a plan");
    let cal = kappa::rollup::Calendar::new("UTC").expect("UTC");
    // Per aggregate, its windows by (size, start).
    let windows: RefCell<Vec<HashMap<(i64, i64), Window>>> =
        RefCell::new(vec![HashMap::new(); plan.aggregates.len()]);
    let fold = |ev: &kappa::event::Event<'_>, values: &kappa::declared::Values<'_>| {
        let mut windows = windows.borrow_mut();
        for (a, ws) in plan.aggregates.iter().zip(windows.iter_mut()) {
            if a.admits(Some(ev.event_type), values) {
                for &size in &a.sizes_ms {
                    let start = ev.ts_ms.div_euclid(size) * size;
                    ws.entry((size, start))
                        .or_default()
                        .add(a, &cal, ev.ts_ms, values);
                }
            }
        }
    };
    run(
        "kappa scanner + 3 declared aggregates, captured in the scan",
        &|l| {
            // A list per record (the values borrow from it), inline as the pipeline keeps it.
            let mut values = kappa::declared::Values::new();
            let Ok(ev) = kappa::event::decode_capturing(l, &rules, None, &plan.paths, &mut values)
            else {
                return false;
            };
            fold(&ev, &values);
            true
        },
    );
    run(
        "kappa scanner + 3 declared aggregates, a second walk",
        &|l| {
            let Ok(ev) = kappa::event::decode(l, 65_536) else {
                return false;
            };
            let mut values = kappa::declared::Values::new();
            if plan.paths.extract(l, &mut values).is_err() {
                return false;
            }
            fold(&ev, &values);
            true
        },
    );
    let rows: usize = windows
        .into_inner()
        .into_iter()
        .zip(&plan.aggregates)
        .flat_map(|(ws, a)| ws.into_values().map(move |w| w.finish(a).len()))
        .sum();
    println!("(declared: {rows} rows over the six passes' windows)");
}
