//! The test broker itself: Tansu starts, speaks the Kafka protocol, restarts on the same
//! port, and stops.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::broker::Broker;

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

#[test]
fn broker_starts_speaks_kafka_restarts_on_the_same_port_and_stops() {
    let mut b = Broker::start();
    assert!(b.bootstrap.starts_with("127.0.0.1:"), "{}", b.bootstrap);
    TcpStream::connect(&b.bootstrap).expect("broker accepts connections");
    assert_eq!(
        api_versions(&b.bootstrap),
        (4242, 0),
        "log {}",
        b.log.display()
    );

    let before = b.bootstrap.clone();
    b.restart();
    assert_eq!(b.bootstrap, before, "restart keeps the port");
    TcpStream::connect(&b.bootstrap).expect("broker accepts connections after restart");
    assert_eq!(
        api_versions(&b.bootstrap),
        (4242, 0),
        "log {}",
        b.log.display()
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
