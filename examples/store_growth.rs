//! The store's growth per day of generated traffic (issue 19), through the code the pipeline
//! runs: the seeded generator's records are decoded by `kappa::event::decode`, folded by the
//! window core (1-minute and 1-hour windows, the hour with every key's sums) and committed
//! by `Store::commit` (rows, hourly sums, quarter/day/week/month/year rollups and the
//! product index). Only the log is left out: an hour at 50,000 events/s would be 58 GB of
//! it.
//!
//!     cargo run --release --example store_growth -- RATE HOURS PRODUCTS DIR
//!
//! RATE events per second of event time (flat: no hourly curve), from
//! 2026-11-23T00:00:00Z, for HOURS hours, over a catalogue of PRODUCTS products; the store
//! is DIR/kappa.redb (removed first). Prints a line per final hour (its distinct keys, and
//! what its commit added to the sums, rollups and index: at a quarter's or a day's end,
//! those rollups too; below about 18 events/s one commit holds several hours, and each
//! line shows the commit's total). At the end: the rows' bytes, the sums' bytes per unit
//! and the index's, and what a day adds. Sizing the sums reads them whole at every final
//! hour: fine for a day or two, slow for months.

use std::sync::mpsc;
use std::time::Instant;

use kappa::generator::{GenConfig, GenRecord, Generator};
use kappa::rollup::HOUR_MS;
use kappa::store::{Commit, Store, VersionInfo, VersionState};
use kappa::window::{FinalWindow, WindowConfig, WindowCore};

/// Records per batch handed from the generator's thread to the fold.
const BATCH: usize = 65_536;

fn usage() -> ! {
    eprintln!("usage: store_growth RATE HOURS PRODUCTS DIR");
    std::process::exit(2);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [rate, hours, products, dir] = args.as_slice() else {
        usage()
    };
    let (rate, hours, products): (f64, i64, u32) =
        (rate.parse()?, hours.parse()?, products.parse()?);
    let path = std::path::Path::new(dir).join("kappa.redb");
    std::fs::create_dir_all(dir)?;
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let store = Store::open(&path)?;
    store.ensure_version(&VersionInfo {
        name: "v1".into(),
        config: "store_growth".into(),
        created_ms: 0,
        finalized_through: i64::MIN,
        state: VersionState::Ready,
    })?;
    let gen_cfg = GenConfig {
        base_rate: rate,
        flat: true,
        products,
        // Event time equals emit time: no event before the first hour (a partial hour and
        // day would skew the averages); disorder does not change what is stored.
        disorder_ms: 0,
        ..GenConfig::default()
    };
    let start = gen_cfg.start_ms;
    let end = start + hours * HOUR_MS;
    let (tx, rx) = mpsc::sync_channel::<Vec<GenRecord>>(4);
    // Batches go back to the generator's thread to be refilled (their buffers reused).
    let (back, used) = mpsc::channel::<Vec<GenRecord>>();
    let producer = std::thread::spawn(move || {
        let mut g = Generator::new(gen_cfg);
        loop {
            let mut batch = used.try_recv().unwrap_or_default();
            batch.resize_with(BATCH, GenRecord::default);
            for r in &mut batch {
                g.next_into(r);
            }
            let done = batch.last().is_some_and(|r| r.emit_at_ms >= end);
            batch.retain(|r| r.emit_at_ms < end);
            if tx.send(batch).is_err() || done {
                return;
            }
        }
    });
    let cfg = WindowConfig::default();
    let mut core = WindowCore::new(cfg, 1);
    let t = Instant::now();
    let (mut offset, mut events) = (0u64, 0u64);
    for batch in rx {
        for r in &batch {
            if let Ok(ev) = kappa::event::decode(&r.value, 65_536) {
                core.on_event(0, offset, &ev, false);
                events += 1;
            }
            offset += 1;
        }
        let finals = core.advance();
        commit(&store, &finals, core.finalized_through())?;
        // The generator may have finished: a batch it no longer wants is dropped.
        let _ = back.send(batch);
    }
    producer
        .join()
        .map_err(|_| "the generator's thread panicked")?;
    let finals = core.drain();
    commit(&store, &finals, end)?;
    report(
        &store,
        &path,
        rate,
        hours,
        products,
        events,
        t.elapsed().as_secs_f64(),
    )?;
    drop(store);
    #[allow(clippy::cast_precision_loss)]
    let closed = std::fs::metadata(&path)?.len() as f64 / 1e6;
    println!("the redb file closed: {closed:.1} MB");
    Ok(())
}

/// Commits `finals` as the pipeline does, printing each final hour's keys and sums bytes.
fn commit(
    store: &Store,
    finals: &[FinalWindow],
    through: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    if finals.is_empty() {
        return Ok(());
    }
    // Sizing the sums reads them whole: only around a commit holding a final hour.
    let hour = finals.iter().any(|f| f.sums.is_some());
    let before = if hour { store.sums_bytes("v1")? } else { 0 };
    store.commit(&Commit {
        version: "v1",
        finals,
        finalized_through: through,
        ..Commit::default()
    })?;
    for f in finals {
        if let Some(s) = f.sums.as_deref() {
            println!(
                "hour {}: {} events, {} products, {} categories, {} queries; sums and rollups +{:.1} kB",
                kappa::event::time::format_rfc3339_ms(f.start_ms),
                s.events.iter().sum::<u64>(),
                s.products.len(),
                s.categories.len(),
                s.queries.len(),
                (store.sums_bytes("v1")? - before) as f64 / 1e3
            );
        }
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn report(
    store: &Store,
    path: &std::path::Path,
    rate: f64,
    hours: i64,
    products: u32,
    events: u64,
    secs: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let days = hours as f64 / 24.0;
    let mb = |b: u64| b as f64 / 1e6;
    let open_file = std::fs::metadata(path)?.len();
    let sizes = store.sums_sizes("v1")?;
    let rows = store.version_bytes("v1")? - sizes.total();
    println!(
        "{events} events ({rate} events/s for {hours} h, {products} products) in {secs:.0} s; \
         rows of the 1-minute and 1-hour windows {:.2} MB, {:.2} MB a day",
        mb(rows),
        mb(rows) / days
    );
    for (unit, (n, bytes)) in ["hour", "day", "week", "month", "year", "quarter"]
        .iter()
        .zip(sizes.units)
    {
        println!("  {unit:>7}: {n:>4} final buckets, {:.3} MB", mb(bytes));
    }
    let each = |(n, bytes): (u64, u64)| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
    let [hour, day, _, _, _, quarter] = sizes.units;
    let (lines, index) = sizes.index;
    // The index gets a product's line when its day is final.
    let index_day = if day.0 == 0 {
        0.0
    } else {
        index as f64 / day.0 as f64
    };
    println!(
        "  product index: {lines} lines, {:.3} MB ({:.2} MB per final day)",
        mb(index),
        index_day / 1e6
    );
    // What each day adds: 24 hours, 4 quarters, the day and its index lines (sizes as
    // measured here), then a seventh of a week, 12/365 of a month and 1/365 of a year. Those
    // are written once, when final, and hold every key of their days: at least a day's
    // bucket each, which is what is counted for them (a run shorter than them has none).
    let measured = 24.0 * each(hour) + 4.0 * each(quarter) + each(day) + index_day;
    let larger = each(day) * (1.0 / 7.0 + 12.0 / 365.0 + 1.0 / 365.0);
    println!(
        "a day of this traffic adds {:.2} MB of hours, quarters, the day and its index, \
         {:.2} MB with weeks, months and years (at least), {:.2} MB with the rows \
         (keys and values; the redb file was {:.1} MB while open)",
        measured / 1e6,
        (measured + larger) / 1e6,
        (measured + larger) / 1e6 + mb(rows) / days,
        mb(open_file)
    );
    Ok(())
}
