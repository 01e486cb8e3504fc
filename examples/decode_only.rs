//! Decode-only benchmark (`scripts/bench` runs it): every line of a JSON-lines file through
//! kappa's decoder (its scanner) and through the serde_json decoder it replaced, from
//! memory, one thread; best of 3 passes each.
//!
//!     cargo run --release --example decode_only -- events.jsonl

use std::time::Instant;

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
}
