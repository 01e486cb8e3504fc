//! The test broker itself: Apache Kafka (KRaft, one node) starts, speaks the Kafka
//! protocol, keeps its data across a restart on the same ports, and stops.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::broker::Broker;
use common::{kappa, ok, temp};

/// Sends a Kafka ApiVersions v0 request; returns (correlation id, error code) of the answer.
fn api_versions(bootstrap: &str) -> (i32, i16) {
    let mut s =
        TcpStream::connect(bootstrap).unwrap_or_else(|e| panic!("connect {bootstrap}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let client = b"kappa-smoke";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&4242i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    assert!(resp.len() >= 6, "short ApiVersions answer: {resp:?}");
    (
        i32::from_be_bytes(resp[0..4].try_into().unwrap()),
        i16::from_be_bytes(resp[4..6].try_into().unwrap()),
    )
}

/// The end offsets of `topic` as Kafka's own GetOffsetShell prints them (`topic:p:offset`).
fn end_offsets(b: &Broker, topic: &str) -> String {
    let mut lines: Vec<String> = b
        .tool("org.apache.kafka.tools.GetOffsetShell", &["--topic", topic])
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines.join(",")
}

#[test]
fn broker_starts_speaks_kafka_keeps_data_across_a_restart_and_stops() {
    let mut b = Broker::start();
    assert!(b.bootstrap.starts_with("127.0.0.1:"), "{}", b.bootstrap);
    assert_eq!(
        api_versions(&b.bootstrap),
        (4242, 0),
        "log {}",
        b.log.display()
    );
    assert_eq!(api_versions(&b.sasl_bootstrap).0, 4242, "SASL listener");

    // A topic with records, written through kappa.
    let dir = temp();
    std::fs::write(
        dir.path().join("t.toml"),
        "name = \"smoke\"\npartitions = 2\nreplication-factor = 1\n",
    )
    .unwrap();
    let mut c = kappa(dir.path());
    c.args(["--kafka", &b.bootstrap, "topics", "apply", "--dir"])
        .arg(dir.path());
    ok(c);
    let mut c = kappa(dir.path());
    c.args([
        "--kafka",
        &b.bootstrap,
        "--topic",
        "smoke",
        "produce",
        "--rate",
        "0",
        "--events",
        "500",
    ]);
    ok(c);
    let before = end_offsets(&b, "smoke");
    let total = |s: &str| -> u64 {
        s.split(',')
            .filter_map(|l| l.rsplit(':').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(total(&before), 500, "{before}");

    let addr = b.bootstrap.clone();
    b.restart();
    assert_eq!(b.bootstrap, addr, "restart keeps the port");
    assert_eq!(
        api_versions(&b.bootstrap),
        (4242, 0),
        "log {}",
        b.log.display()
    );
    assert_eq!(
        end_offsets(&b, "smoke"),
        before,
        "the records survive a restart"
    );

    b.stop();
    assert!(
        TcpStream::connect(&b.bootstrap).is_err(),
        "nothing listens on {} after stop",
        b.bootstrap
    );
    b.stop(); // idempotent
}

#[test]
fn two_brokers_run_side_by_side() {
    let a = Broker::start();
    let b = Broker::start();
    assert_ne!(a.bootstrap, b.bootstrap);
    assert_eq!(api_versions(&a.bootstrap).1, 0, "log {}", a.log.display());
    assert_eq!(api_versions(&b.bootstrap).1, 0, "log {}", b.log.display());
}
