//! Diagnostic for the Kafka catch-up benchmark: reads a topic end to end through kappa's
//! `KafkaSource` alone (explicit assignment, as a bounded run does) — no decoding,
//! windows or store — and prints records/s and the number of polls.
//!
//!     cargo run --release --example kafka_source_only -- BROKERS TOPIC

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kappa::source::{Assignment, KafkaSource, Source, Starts};

/// Nothing kept: every partition from its beginning.
struct FromTheBeginning;

impl Starts for FromTheBeginning {
    fn kept(&self, _version: &str) -> Result<HashMap<u32, (u64, u64)>, String> {
        Ok(HashMap::new())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic)) = (args.next(), args.next()) else {
        eprintln!("usage: kafka_source_only BROKERS TOPIC");
        std::process::exit(2);
    };
    let k = kappa::config::KafkaSection {
        brokers,
        topic,
        ..kappa::config::KafkaSection::default()
    };
    let mut src = KafkaSource::connect(
        &k,
        Arc::new(FromTheBeginning),
        "v1",
        Assignment::Explicit,
        Arc::new(kappa::metrics::Metrics::new()),
        &|| false,
    )
    .expect("connect");
    src.take_assignment();
    let mut batch = kappa::log::RecordBatch::new();
    let start = Instant::now();
    let (mut n, mut polls) = (0u64, 0u64);
    loop {
        batch.clear();
        let got = src.poll(&mut batch, 65_536).expect("poll");
        polls += 1;
        n += got as u64;
        if got == 0 && src.exhausted() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!("kafka source only: {n} records in {secs:.3} s: {rate:.0} records/s, {polls} polls");
}
