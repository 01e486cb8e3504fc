//! The reference for the Kafka catch-up benchmark: a bare rdkafka consumer that reads a
//! topic from the beginning to the end of every partition (explicit assignment, EOF), and
//! touches each payload — no decoding, no windows, no store.
//!
//!     cargo run --release --example bare_consumer -- BROKERS TOPIC [property=value ...]
//!
//! Extra arguments are librdkafka properties (the benchmark passes kappa's fetch settings
//! to compare like with like).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn main() {
    let mut args = std::env::args().skip(1);
    let (brokers, topic) = match (args.next(), args.next()) {
        (Some(b), Some(t)) => (b, t),
        _ => {
            eprintln!("usage: bare_consumer BROKERS TOPIC");
            std::process::exit(2);
        }
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bare-consumer-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for kv in args {
        let (k, v) = kv
            .split_once('=')
            .expect("extra arguments are property=value");
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    let parts = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(
            &topic,
            i32::try_from(p).expect("partition"),
            Offset::Beginning,
        )
        .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let (mut n, mut bytes, mut checksum) = (0u64, 0u64, 0u64);
    let mut eof = vec![false; parts];
    while !eof.iter().all(|e| *e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v = m.payload().unwrap_or_default();
                n += 1;
                bytes += v.len() as u64;
                checksum = checksum.wrapping_add(u64::from(v.first().copied().unwrap_or(0)));
                eof[usize::try_from(m.partition()).expect("partition")] = false;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof[usize::try_from(p).expect("partition")] = true
            }
            Some(Err(e)) => eprintln!("{e}"),
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!(
        "bare consumer: {n} records ({:.1} MB) in {secs:.3} s: {rate:.0} records/s (checksum {checksum})",
        bytes as f64 / 1e6
    );
}
