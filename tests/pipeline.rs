//! The pipeline end to end on the real binary and the embedded log.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn ev(id: &str, ty: &str, ts: &str, extra: &str) -> String {
    format!(
        r#"{{"schema":1,"event_id":"{id}","event_type":"{ty}","user_id":"u_1","session_id":"s_1","ts":"{ts}"{extra}}}"#
    )
}

fn buy(id: &str, ts: &str, product: &str, category: &str, price: &str, qty: i32) -> String {
    ev(
        id,
        "purchase",
        ts,
        &format!(
            r#","product_id":"{product}","category":"{category}","price":{price},"quantity":{qty}"#
        ),
    )
}

fn rows(export: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(rows: &'a [Value], agg: &str, size: &str, start: &str, key: (&str, &str)) -> &'a Value {
    rows.iter()
        .find(|r| {
            r["aggregate"] == agg
                && r["size"] == size
                && r["window_start"] == start
                && r[key.0] == key.1
        })
        .unwrap_or_else(|| panic!("no {agg} {size} {start} {key:?} row"))
}

#[test]
fn known_answers_from_a_hand_written_log() {
    let dir = temp();
    // One user: every record lands on one partition, in this order.
    let lines = [
        buy(
            "e1",
            "2026-11-23T10:00:01Z",
            "p_1",
            "shoes",
            r#""10.50""#,
            2,
        ),
        buy("e2", "2026-11-23T10:00:05.500Z", "p_2", "books", "3", 1),
        buy("e3", "2026-11-23T10:00:20Z", "p_1", "shoes", "10.5", 1),
        buy(
            "e1",
            "2026-11-23T10:00:01Z",
            "p_1",
            "shoes",
            r#""10.50""#,
            2,
        ), // duplicate delivery
        ev(
            "e4",
            "view",
            "2026-11-23T10:00:02Z",
            r#","product_id":"p_1","category":"shoes","price":"10.50""#,
        ),
        ev(
            "e5",
            "view",
            "2026-11-23T10:00:03Z",
            r#","product_id":"p_1","category":"shoes","price":"10.50""#,
        ),
        ev(
            "e6",
            "add_cart",
            "2026-11-23T10:00:04Z",
            r#","product_id":"p_1","category":"shoes","price":"10.50","quantity":1"#,
        ),
        ev(
            "e7",
            "search",
            "2026-11-23T10:00:06Z",
            r#","query":"  Cheap   Boots ""#,
        ),
        ev(
            "e8",
            "search",
            "2026-11-23T10:00:07Z",
            r#","query":"cheap boots","device":{"type":"mobile"},"new_field":[1,2]"#,
        ),
        ev(
            "e9",
            "search",
            "2026-11-23T10:00:08Z",
            r#","query":"red hat""#,
        ),
        "not json at all".to_string(),
        buy(
            "e10",
            "2026-11-23T10:00:09Z",
            "p_3",
            "toys",
            r#""12.345""#,
            1,
        ),
        buy(
            "e11",
            "2026-11-23T10:00:09Z",
            "p_3",
            "toys",
            r#""1.00""#,
            -1,
        ),
        ev(
            "e12",
            "view",
            "2026-11-23T10:05:00Z",
            r#","product_id":"p_9","category":"toys","price":"1.00""#,
        ),
        // Watermark is now 10:04:30: this one is late.
        buy(
            "e13",
            "2026-11-23T10:00:30Z",
            "p_2",
            "books",
            r#""99.00""#,
            5,
        ),
    ];
    produce_lines(dir.path(), &(lines.join("\n") + "\n"));
    let out = run_drain(dir.path(), &[]);
    // e1 e2 e3 e4 e5 e6 e7 e8 e9 e12 accepted; e1 again duplicate; e13 late; 3 invalid.
    assert_eq!(counts(&out), [10, 1, 1, 3], "{out}");

    let r = rows(&export(dir.path()));
    let start = "2026-11-23T10:00:00Z";
    let shoes = find(&r, "sales_by_category", "1m", start, ("category", "shoes"));
    assert_eq!(
        (
            shoes["purchases"].as_u64(),
            shoes["units"].as_u64(),
            shoes["revenue"].as_str()
        ),
        (Some(2), Some(3), Some("31.50"))
    );
    let books = find(&r, "sales_by_category", "1m", start, ("category", "books"));
    assert_eq!(
        (
            books["purchases"].as_u64(),
            books["units"].as_u64(),
            books["revenue"].as_str()
        ),
        (Some(1), Some(1), Some("3.00"))
    );
    let top = find(
        &r,
        "top_products_by_units",
        "1m",
        start,
        ("product_id", "p_1"),
    );
    assert_eq!(
        (top["rank"].as_u64(), top["units"].as_u64()),
        (Some(1), Some(3))
    );
    let second = find(
        &r,
        "top_products_by_revenue",
        "1m",
        start,
        ("product_id", "p_2"),
    );
    assert_eq!(
        (second["rank"].as_u64(), second["revenue"].as_str()),
        (Some(2), Some("3.00"))
    );
    let q = find(&r, "top_searches", "1m", start, ("query", "cheap boots"));
    assert_eq!(
        (q["rank"].as_u64(), q["count"].as_u64()),
        (Some(1), Some(2))
    );
    for (t, n) in [("search", 3), ("view", 2), ("add_cart", 1), ("purchase", 3)] {
        assert_eq!(
            find(&r, "events_by_type", "1m", start, ("event_type", t))["count"].as_u64(),
            Some(n),
            "{t}"
        );
    }
    // The hour window holds the same plus the 10:05 view; the late purchase is nowhere.
    let hour_views = find(&r, "events_by_type", "1h", start, ("event_type", "view"));
    assert_eq!(hour_views["count"].as_u64(), Some(3));
    let hour_books = find(&r, "sales_by_category", "1h", start, ("category", "books"));
    assert_eq!(hour_books["units"].as_u64(), Some(1));
    let first = &r[0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        &keys[..5],
        ["version", "aggregate", "size", "window_start", "window_end"]
    );
}

#[test]
fn bad_input_never_stops_the_pipeline_and_counts_add_up() {
    let dir = temp();
    let mut c = kappa(dir.path());
    c.args([
        "produce",
        "--rate",
        "0",
        "--events",
        "30000",
        "--seed",
        "3",
        "--malformed-share",
        "0.05",
        "--duplicate-share",
        "0.03",
        "--late-share",
        "0.02",
    ]);
    ok(c);
    let [a, l, d, i] = counts(&run_drain(dir.path(), &[]));
    assert_eq!(a + l + d + i, 30_000, "every record is accounted for");
    assert!(i > 1000 && d > 500 && l > 100, "{a} {l} {d} {i}");
    let mut c = kappa(dir.path());
    c.args(["dead-letters", "--limit", "10000", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let dl = v["dead_letters"].as_array().unwrap();
    assert_eq!(dl.len() as u64, i);
    assert!(dl.iter().all(
        |d| !d["reason"].as_str().unwrap().is_empty() && !d["raw"].as_str().unwrap().is_empty()
    ));
    // A second run over the same log finds nothing new and changes nothing.
    let before = export(dir.path());
    assert_eq!(counts(&run_drain(dir.path(), &[])), [0, 0, 0, 0]);
    assert_eq!(export(dir.path()), before);
}

#[test]
fn live_run_tails_a_producer_in_another_process() {
    let dir = temp();
    let server = Server::start(dir.path(), &["--idle-timeout", "0s"]);
    server.wait_for(|s| s.get("/readyz").0 == 200, "readiness once consuming");
    produce(dir.path(), 20_000, 11);
    server.wait_for(
        |s| {
            let (_, body) = s.get("/api/status");
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["records"] == 20_000)
        },
        "the live run to read all 20000 records",
    );
    let (code, metrics) = server.get("/metrics");
    assert_eq!(code, 200);
    let consumed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kappa_records_consumed_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(consumed > 0.0, "{metrics}");
    for name in [
        "kappa_late_records_total",
        "kappa_duplicate_records_total",
        "kappa_invalid_records_total",
        "kappa_partition_watermark_seconds",
        "kappa_watermark_seconds",
        "kappa_windows_finalised_total",
        "kappa_store_commit_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    // The store is held by the server: query goes through its API.
    let mut c = kappa(dir.path());
    c.args(["query", "--format", "json", "--server", &server.base]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert!(!v["windows"].as_array().unwrap().is_empty(), "{v}");
    let status = server.interrupt();
    assert!(status.success(), "Ctrl-C exits 0");
    // Released: the CLI can open the store itself now.
    assert!(!export(dir.path()).is_empty());
}

#[test]
fn sigterm_stops_gracefully_like_ctrl_c() {
    // `docker stop` and systemd send SIGTERM: the run commits what it read and exits 0.
    let dir = temp();
    produce(dir.path(), 5_000, 12);
    let mut server = Server::start(dir.path(), &["--idle-timeout", "0s"]);
    server.wait_for(
        |s| {
            let (_, body) = s.get("/api/status");
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v["records"] == 5_000)
        },
        "the run to read all 5000 records",
    );
    signal(&server.child, "TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(
        server.stderr_text().contains("stopping: committing"),
        "{}",
        server.stderr_text()
    );
    // Its last commit holds every record: a bounded run re-reads the open windows' records
    // to rebuild them, and finds nothing new.
    let out = run_drain(dir.path(), &[]);
    assert!(
        out.contains("new records: 0 accepted, 0 late, 0 duplicates, 0 invalid"),
        "{out}"
    );
}

#[test]
fn a_second_writer_is_refused_with_a_clear_message() {
    let dir = temp();
    let mut first = kappa(dir.path());
    first
        .args(["produce", "--rate", "50", "--duration", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let meta = dir.path().join("log").join("meta.json");
    let t = std::time::Instant::now();
    while !meta.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = kappa(dir.path())
        .args(["produce", "--events", "10", "--rate", "0"])
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is writing"), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn generated_traffic_is_reproducible_from_the_seed() {
    let dir = temp();
    let generate = |seed: &str| {
        let mut c = kappa(dir.path());
        c.args([
            "produce",
            "--rate",
            "0",
            "--events",
            "3000",
            "--seed",
            seed,
            "--output",
            "-",
            "--duplicate-share",
            "0.05",
            "--malformed-share",
            "0.01",
        ]);
        ok(c).stdout
    };
    let a = generate("9");
    assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 3000);
    assert_eq!(a, generate("9"));
    assert_ne!(a, generate("10"));
}

#[test]
fn bad_flags_and_config_are_one_line_errors() {
    let dir = temp();
    let out = kappa(dir.path())
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"));

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[pipeline]\nmax-dealy = \"10s\"\n").unwrap();
    let out = kappa(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--until-caught-up"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("max-dealy"), "{err}");

    let out = kappa(dir.path())
        .args(["run", "--until-caught-up", "--max-delay", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-delay"));

    let out = kappa(dir.path())
        .env("KAPPA_PIPELINE__TOP_K", "0")
        .args(["run", "--until-caught-up"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top-k"));
}

/// Two user ids whose records land on different partitions (of 4).
fn users_on_two_partitions() -> (String, String) {
    let a = "u_0".to_string();
    let pa = kappa::log::partition_for(a.as_bytes(), 4);
    let b = (1..)
        .map(|i| format!("u_{i}"))
        .find(|u| kappa::log::partition_for(u.as_bytes(), 4) != pa)
        .unwrap();
    (a, b)
}

fn view(id: &str, user: &str, ts: &str) -> String {
    format!(
        r#"{{"schema":1,"event_id":"{id}","event_type":"view","user_id":"{user}","session_id":"s","ts":"{ts}","product_id":"p_1","category":"toys","price":"1.00"}}"#
    )
}

#[test]
fn a_restart_keeps_the_late_decisions_taken_while_a_partition_was_idle() {
    let dir = temp();
    let (a, b) = users_on_two_partitions();
    produce_lines(
        dir.path(),
        &(view("a0", &a, "2026-11-23T10:00:05Z")
            + "\n"
            + &view("b0", &b, "2026-11-23T10:00:12Z")
            + "\n"),
    );
    let flags = [
        "--idle-timeout",
        "1s",
        "--max-delay",
        "0s",
        "--window-sizes",
        "10s,1m",
    ];
    let server = Server::start(dir.path(), &flags);
    // A moves on; B (and the empty partitions) go idle: [10:00:10, 10:00:20) becomes final.
    produce_lines(dir.path(), &(view("a1", &a, "2026-11-23T10:00:25Z") + "\n"));
    server.wait_for(
        |s| {
            s.get("/api/windows?aggregate=events_by_type&size=10s")
                .1
                .contains(r#""window_start":"2026-11-23T10:00:10Z""#)
        },
        "the 10s window to close while B is idle",
    );
    // B's next event is not below B's watermark, but its 10s window is final: late.
    produce_lines(dir.path(), &(view("b1", &b, "2026-11-23T10:00:13Z") + "\n"));
    server.wait_for(
        |s| s.get("/api/late-events").1.contains("\"offset\":1"),
        "the late record to be committed",
    );
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    // The restart re-reads B from b0 (its contribution to the open 1m window): b1 must stay late.
    run_drain(dir.path(), &flags[2..]);
    let r = rows(&export(dir.path()));
    let minute = find(
        &r,
        "events_by_type",
        "1m",
        "2026-11-23T10:00:00Z",
        ("event_type", "view"),
    );
    assert_eq!(
        minute["count"].as_u64(),
        Some(3),
        "a0, b0, a1 — not the late b1"
    );
}
