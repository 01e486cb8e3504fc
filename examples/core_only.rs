//! Window-core benchmark and state-size probe (`scripts/bench` runs it).
//!
//! Reads an embedded log in chunks, decodes each chunk (not timed), then feeds the decoded
//! events to the window core as the pipeline does — `on_event` per event, `advance` per
//! chunk, `drain` at the end — and times only that. A counting allocator, switched on only
//! inside the core's calls, gives the heap the core holds; the report divides it by the
//! open (window, key) pairs at the chunk where that heap peaked.
//!
//!     cargo run --release --example core_only -- DATA_DIR/log
//!
//! Prints `window core only: N events in S s: R events/s; …`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use kappa::log::{LogReader, RecordBatch};
use kappa::window::{WindowConfig, WindowCore};

/// Net heap bytes allocated while `COUNTING` is on (the example is single-threaded).
static CORE_HEAP: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

struct Counting;

fn track(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        CORE_HEAP.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size().cast_signed());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-layout.size().cast_signed());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size.cast_signed() - layout.size().cast_signed());
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` with the counter on.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.store(true, Ordering::Relaxed);
    let out = f();
    COUNTING.store(false, Ordering::Relaxed);
    out
}

const CHUNK: usize = 8192;

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: core_only DATA_DIR/log");
        std::process::exit(2);
    };
    let mut reader = LogReader::open(std::path::Path::new(&dir)).expect("an embedded log");
    let partitions = reader.partitions();
    let defaults = WindowConfig::default();
    let mut core = WindowCore::new(defaults, partitions as usize);
    let mut batch = RecordBatch::new();
    let (mut events, mut records) = (0u64, 0u64);
    let mut in_core = Duration::ZERO;
    let (mut peak_heap, mut peak_keys, mut peak_windows) = (0isize, 0usize, 0usize);
    loop {
        let mut got = 0;
        for p in 0..partitions {
            got += reader.read(p, CHUNK, &mut batch).expect("readable log");
        }
        if got == 0 {
            break;
        }
        records += got as u64;
        let decoded: Vec<_> = batch
            .iter()
            .filter_map(|r| {
                let ev = kappa::event::decode(r.value, 65_536).ok()?;
                Some((r.partition as usize, r.offset, ev))
            })
            .collect();
        events += decoded.len() as u64;
        let t = Instant::now();
        counted(|| {
            for (p, offset, ev) in &decoded {
                std::hint::black_box(core.on_event(*p, *offset, ev, false));
            }
            drop(std::hint::black_box(core.advance()));
        });
        in_core += t.elapsed();
        drop(decoded);
        batch.clear();
        let heap = CORE_HEAP.load(Ordering::Relaxed);
        if heap > peak_heap {
            peak_heap = heap;
            (peak_windows, peak_keys) = core.open_state();
        }
    }
    let t = Instant::now();
    counted(|| drop(std::hint::black_box(core.drain())));
    in_core += t.elapsed();
    let secs = in_core.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_key = peak_heap as f64 / peak_keys.max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let rate = events as f64 / secs;
    println!(
        "window core only: {events} events in {secs:.3} s: {rate:.0} events/s; \
         at the heap peak {peak_windows} open windows, {peak_keys} open (window, key) pairs, \
         {:.1} MB core heap, {per_key:.0} bytes per (window, key) ({records} records)",
        peak_heap as f64 / 1e6
    );
}
