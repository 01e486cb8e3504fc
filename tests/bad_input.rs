//! Bad input at every door: a corpus of malformed events through `kappa produce --input`
//! (embedded log) — every record is aggregated or dead-lettered with a reason, the counts
//! add up, the pipeline stays up — and bad CLI flags, config files and HTTP requests get
//! one clear error with the right exit or status code.

mod common;

use common::corpus::{check_accounted, corpus, produce_corpus};
use common::{Server, kappa, ok, temp};
use serde_json::Value;

#[test]
fn a_malformed_corpus_through_produce_input_is_aggregated_or_dead_lettered_and_adds_up() {
    let t = temp();
    let records = corpus();
    produce_corpus(kappa(t.path()), &records);
    check_accounted(|| kappa(t.path()), &records);
    // The pipeline stayed up and serves.
    let server = Server::start(t.path(), &[]);
    // Ready once the pipeline has its partitions (a moment after /healthz answers).
    server.wait_for(|s| s.get("/readyz").0 == 200, "readyz");
    let (code, body) = server.get("/api/dead-letters?limit=100");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    for d in v["dead_letters"].as_array().unwrap() {
        assert!(
            d["raw"].as_str().unwrap().len() <= 4096 * 4,
            "the API never returns more"
        );
    }
}

#[test]
fn bad_flags_and_config_files_get_one_line_and_a_non_zero_exit() {
    let t = temp();
    let bad_config = t.path().join("bad.toml");
    let cases: Vec<(Vec<String>, Option<&str>, i32, &str)> = vec![
        (
            vec!["run".into(), "--nope".into()],
            None,
            2,
            "unexpected argument",
        ),
        (
            vec!["produce".into(), "--rate".into(), "fast".into()],
            None,
            2,
            "invalid value",
        ),
        (
            vec!["demo".into(), "--duration".into(), "soon".into()],
            None,
            2,
            "not a duration",
        ),
        (
            vec!["run".into(), "--max-delay".into(), "30x".into()],
            None,
            1,
            "max-delay",
        ),
        (
            vec!["run".into(), "--window-sizes".into(), "1.5s".into()],
            None,
            1,
            "window-sizes",
        ),
        (
            vec!["run".into(), "--listen".into(), "nowhere".into()],
            None,
            1,
            "listen",
        ),
        (
            vec!["config".into()],
            Some("[pipeline]\ntop-k = 0\n"),
            1,
            "top-k",
        ),
        (
            vec!["config".into()],
            Some("[pipeline]\nwhat = 1\n"),
            1,
            "what",
        ),
        (
            vec!["config".into()],
            Some("this is not toml"),
            1,
            "bad.toml",
        ),
        (
            vec!["config".into()],
            Some("[pipeline]\naccept-schemas = [7]\n"),
            1,
            "accept-schemas",
        ),
    ];
    for (args, config, code, want) in cases {
        let mut c = kappa(t.path());
        if let Some(text) = config {
            std::fs::write(&bad_config, text).unwrap();
            c.arg("--config").arg(&bad_config);
        }
        let out = c.args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        if err.contains("TOML parse error") {
            // A syntax error keeps the parser's line, column and caret under its one line.
            assert!(
                err.lines().next().unwrap().contains("line 1, column"),
                "{err}"
            );
            assert!(err.lines().any(|l| l.trim_end().ends_with('^')), "{err}");
        } else {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        }
    }
}

#[test]
fn bad_http_requests_get_json_errors_with_the_right_status() {
    let t = temp();
    common::produce(t.path(), 3000, 5);
    let server = Server::start(t.path(), &[]);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let long = "x".repeat(50_000);
    let cases: Vec<(&str, String, Option<Vec<u8>>, u16)> = vec![
        ("GET", "/nope".into(), None, 404),
        ("GET", "/api/windows".into(), None, 400),
        ("GET", "/api/windows?aggregate=nope".into(), None, 400),
        (
            "GET",
            "/api/windows?aggregate=events_by_type&from=tomorrow".into(),
            None,
            400,
        ),
        (
            "GET",
            "/api/windows?aggregate=events_by_type&limit=0".into(),
            None,
            400,
        ),
        (
            "GET",
            "/api/windows?aggregate=events_by_type&flat=maybe".into(),
            None,
            400,
        ),
        ("GET", "/api/top-products?size=0s".into(), None, 400),
        ("GET", "/api/dead-letters?after=x".into(), None, 400),
        ("GET", "/api/replays/abc".into(), None, 400),
        ("DELETE", "/api/replays/abc".into(), None, 400),
        ("GET", "/api/replays/999".into(), None, 404),
        ("DELETE", "/api/versions/v9".into(), None, 404),
        (
            "POST",
            "/api/replays".into(),
            Some(br#"{"from":"x"}"#.to_vec()),
            400,
        ),
        ("POST", "/api/replays".into(), Some(b"{".to_vec()), 400),
        ("GET", format!("/api/windows?aggregate={long}"), None, 400),
    ];
    for (method, path, body, want) in cases {
        let url = format!("{}{path}", server.base);
        let resp = match (method, body) {
            ("POST", Some(b)) => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&b[..]),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => agent.get(&url).call(),
        };
        let mut resp = resp.unwrap();
        let code = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(code, want, "{method} {path}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: JSON: {text}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {text}"
        );
    }
    // An oversized body is refused on its declared length (a raw request: a client still
    // sending the body when the 413 comes and the connection closes may miss the answer).
    {
        use std::io::{Read, Write};
        let addr = server.base.trim_start_matches("http://");
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        sock.write_all(
            format!("POST /api/replays HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 66000\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        let _ = sock.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("too large"), "{answer}");
    }
    assert_eq!(server.get("/healthz").0, 200, "still up");
}

#[test]
fn secrets_stay_out_of_logs_metrics_and_listings() {
    let t = temp();
    common::produce(t.path(), 3000, 6);
    let cfg = t.path().join("secret.toml");
    std::fs::write(
        &cfg,
        "[http]\ntoken = \"tok-S3CRET-1\"\n[kafka.properties]\n\"sasl.password\" = \"sasl-S3CRET-2\"\n\"sasl.username\" = \"kappa\"\n",
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap();
    let server = Server::start_env(
        t.path(),
        &["--config", cfg_arg],
        &[("RUST_LOG".to_string(), "debug".to_string())],
    );
    server.wait_for(
        |s| s.get("/api/status").1.contains("\"lag\":0"),
        "caught up",
    );
    let mut seen = String::new();
    for path in [
        "/metrics",
        "/api/status",
        "/api/versions",
        "/api/replays",
        "/",
    ] {
        seen.push_str(&server.get(path).1);
    }
    let mut c = kappa(t.path());
    c.args(["--config", cfg_arg, "versions", "list"]);
    seen.push_str(&String::from_utf8(ok(c).stdout).unwrap());
    let mut c = kappa(t.path());
    c.args(["--config", cfg_arg, "config"]);
    let config = String::from_utf8(ok(c).stdout).unwrap();
    assert!(config.contains("token = \"********\""), "{config}");
    assert!(
        config.contains("\"sasl.password\" = \"********\""),
        "{config}"
    );
    assert!(config.contains("\"sasl.username\" = \"kappa\""), "{config}");
    seen.push_str(&config);
    seen.push_str(&server.stderr_text());
    let _ = server.interrupt();
    for secret in ["S3CRET-1", "S3CRET-2"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}

/// `--partitions` is `log.partitions`: the one validation (1–1024) whether the value comes
/// from the flag, the config file or the environment; nothing is created when refused.
#[test]
fn partitions_out_of_range_are_refused_from_the_flag_the_file_and_the_environment() {
    let t = temp();
    let produce = ["produce", "--rate", "0", "--events", "10"];
    let file = t.path().join("p.toml");
    for n in ["5000", "0"] {
        let mut by_flag = kappa(t.path());
        by_flag.args(produce).args(["--partitions", n]);
        std::fs::write(&file, format!("[log]\npartitions = {n}\n")).unwrap();
        let mut by_file = kappa(t.path());
        by_file.arg("--config").arg(&file).args(produce);
        let mut by_env = kappa(t.path());
        by_env.env("KAPPA_LOG__PARTITIONS", n).args(produce);
        for (how, mut c) in [("flag", by_flag), ("file", by_file), ("env", by_env)] {
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{n} by {how}: {err}");
            assert_eq!(
                err.trim(),
                format!(
                    "error: invalid configuration: log.partitions must be between 1 and 1024, got {n}"
                ),
                "{n} by {how}"
            );
            assert!(!t.path().join("log").exists(), "{n} by {how}: no log made");
        }
    }
    // In range, the flag still decides the count of a new log.
    let mut c = kappa(t.path());
    c.args(produce).args(["--partitions", "3"]);
    ok(c);
    let meta = std::fs::read_to_string(t.path().join("log/meta.json")).unwrap();
    assert!(meta.contains("\"partitions\":3"), "{meta}");
}

/// A purchase line of schema 2 (`unit_price_minor` in `currency`) or 1 (`price`), all of
/// one user (one partition: dead letters come back in line order).
fn purchase(id: &str, price: &str, currency: Option<&str>) -> String {
    let head = format!(
        r#""event_id":"{id}","event_type":"purchase","user_id":"u","session_id":"s","product_id":"p_1","category":"shoes","ts":"2026-11-23T10:00:05Z""#
    );
    match currency {
        Some(c) => {
            format!(r#"{{"schema":2,{head},"unit_price_minor":{price},"currency":"{c}","qty":1}}"#)
        }
        None => format!(r#"{{"schema":1,{head},"price":"{price}","quantity":1}}"#),
    }
}

/// Dead-letter kinds and the revenue of `shoes` in the latest 1-minute window.
fn kinds_and_shoe_revenue(dir: &std::path::Path, extra: &[&str]) -> (Vec<String>, String) {
    common::run_drain(dir, extra);
    let mut c = kappa(dir);
    c.args(extra).args(["dead-letters", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let kinds = v["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d["kind"].as_str().unwrap(),
                d["reason"].as_str().unwrap()
            )
        })
        .collect();
    let mut c = kappa(dir);
    c.args(extra).args(["query", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let minute = v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["size"] == "1m")
        .unwrap();
    let shoes = &minute["aggregates"]["sales_by_category"][0];
    assert_eq!(shoes["category"], "shoes", "{minute}");
    (kinds, shoes["revenue"].as_str().unwrap().to_string())
}

/// Schema 2 money: one configured currency (`pipeline.currency`, EUR by default); prices in
/// another are dead letters, never summed with it; the price bound is schema 1's; in yen
/// (no minor unit) ¥100 is revenue "100.00", from either schema.
#[test]
fn prices_in_one_configured_currency_others_dead_lettered_and_yen_in_whole_units() {
    let t = temp();
    let lines = [
        purchase("eur", "5990", Some("EUR")),
        purchase("usd", "1000", Some("USD")),
        purchase("jpy", "100", Some("JPY")),
        purchase("max", "9223372036854775807", Some("EUR")),
        purchase("v1", "10.00", None),
    ];
    common::produce_lines(t.path(), &lines.join("\n"));
    let (kinds, revenue) = kinds_and_shoe_revenue(t.path(), &[]);
    assert_eq!(revenue, "69.90", "EUR 59.90 + schema 1 10.00 only");
    assert_eq!(
        kinds,
        [
            "currency_mismatch: currency USD is not the configured currency EUR (pipeline.currency)",
            "currency_mismatch: currency JPY is not the configured currency EUR (pipeline.currency)",
            "bad_value: price is too large: unit_price_minor 9223372036854775807 EUR",
        ]
    );

    let t = temp();
    let yen = t.path().join("yen.toml");
    std::fs::write(&yen, "[pipeline]\ncurrency = \"JPY\"\n").unwrap();
    let lines = [
        purchase("jpy", "100", Some("JPY")),
        purchase("v1", "250", None),
        purchase("half", "2.5", None),
        purchase("eur", "5990", Some("EUR")),
    ];
    common::produce_lines(t.path(), &lines.join("\n"));
    let config = ["--config", yen.to_str().unwrap()];
    let (kinds, revenue) = kinds_and_shoe_revenue(t.path(), &config);
    assert_eq!(revenue, "350.00", "¥100 + ¥250");
    assert_eq!(
        kinds,
        [
            "bad_value: price has more than 0 decimal places: 2.5",
            "currency_mismatch: currency EUR is not the configured currency JPY (pipeline.currency)",
        ]
    );
}

/// Top searches: composed and decomposed spellings of one query, and zero-width characters,
/// make one key; a query empty once normalised is dead-lettered, not counted as "".
#[test]
fn top_searches_normalise_unicode_and_dead_letter_empty_queries() {
    let t = temp();
    let search = |id: &str, q: &str| {
        format!(
            r#"{{"schema":1,"event_id":"{id}","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:05Z","query":"{q}"}}"#
        )
    };
    let lines = [
        search("nfc", "Caf\\u00e9"),
        search("nfd", "CAFE\\u0301"),
        search("zw", "caf\\u200b\\u00e9\\ufeff"),
        search("blank", " \\u200b\\u2060 "),
        search("empty", ""),
    ];
    common::produce_lines(t.path(), &lines.join("\n"));
    common::run_drain(t.path(), &[]);
    let mut c = kappa(t.path());
    c.args(["query", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let minute = v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["size"] == "1m")
        .unwrap();
    let top = &minute["aggregates"]["top_searches"];
    assert_eq!(
        top,
        &serde_json::json!([{"rank": 1, "query": "caf\u{e9}", "count": 3}]),
        "{minute}"
    );
    let mut c = kappa(t.path());
    c.args(["dead-letters", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let kinds: Vec<&str> = v["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["empty_query", "empty_query"]);
}

/// Bytes a terminal acts on: C0 controls but the line feed, DEL, and C1 controls (UTF-8).
fn raw_controls(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.chars()
        .filter(|&c| c != '\n' && c.is_control())
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect()
}

/// Input with ESC, OSC, BEL, CR and C1 CSI in queries, product ids, malformed records, a
/// replay reason and a config key: every human-readable output shows them escaped; JSON
/// output keeps them exact.
#[test]
fn human_readable_output_never_writes_raw_control_characters() {
    let t = temp();
    let dir = t.path();
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\rX\u{9b}31m";
    let json_evil = serde_json::to_string(evil).unwrap(); // quoted, escaped
    let lines = [
        format!(
            r#"{{"schema":1,"event_id":"q","event_type":"search","user_id":"u","session_id":"s","ts":"2026-11-23T10:00:05Z","query":{json_evil}}}"#
        ),
        format!(
            r#"{{"schema":1,"event_id":"p","event_type":"purchase","user_id":"u","session_id":"s","product_id":{json_evil},"category":{json_evil},"price":"1.00","quantity":1,"ts":"2026-11-23T10:00:05Z"}}"#
        ),
        format!(
            r#"{{"schema":1,"event_id":"t","event_type":{json_evil},"user_id":"u","session_id":"s","ts":"2026-11-23T10:00:05Z"}}"#
        ),
        // Raw control bytes: not JSON, dead-lettered with them in `raw`.
        format!("{{\"schema\":1,\"event_id\":\"{evil}\"}}"),
    ];
    common::produce_lines(dir, &lines.join("\n"));
    common::run_drain(dir, &[]);
    let mut c = kappa(dir);
    c.args([
        "replay",
        "--from",
        "earliest",
        "--to",
        "2026-11-23T11:00:00Z",
        "--reason",
        evil,
    ]);
    let replay = ok(c);
    let bad_config = dir.join("evil.toml");
    std::fs::write(&bad_config, format!("[pipeline]\n{json_evil} = 1\n")).unwrap();
    let mut config_error = kappa(dir);
    config_error.arg("--config").arg(&bad_config).arg("query");
    let config_error = config_error.output().unwrap();
    assert_eq!(config_error.status.code(), Some(1));

    let mut outputs = vec![
        ("replay (plan)", replay.stdout),
        ("config error", config_error.stderr),
    ];
    for args in [
        &["query"][..],
        &["dead-letters"],
        &["replay", "history"],
        &["versions", "list"],
    ] {
        let mut c = kappa(dir);
        c.args(args);
        outputs.push((args.join(" ").leak(), ok(c).stdout));
    }
    for (what, out) in &outputs {
        assert_eq!(
            raw_controls(out),
            Vec::<String>::new(),
            "{what}: {}",
            String::from_utf8_lossy(out)
        );
    }
    let shown = |what: &str| {
        let (_, out) = outputs.iter().find(|(w, _)| *w == what).unwrap();
        String::from_utf8_lossy(out).into_owned()
    };
    let escaped = "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\rX\\u{9b}31m";
    for what in ["query", "replay history", "config error"] {
        assert!(shown(what).contains(escaped), "{what}: {}", shown(what));
    }
    assert!(
        shown("dead-letters").contains("\\u{1b}"),
        "{}",
        shown("dead-letters")
    );

    // JSON keeps the exact text.
    let mut c = kappa(dir);
    c.args(["query", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let minute = v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["size"] == "1m")
        .unwrap();
    let query = minute["aggregates"]["top_searches"][0]["query"]
        .as_str()
        .unwrap();
    let mut normalised = String::new();
    kappa::event::normalize_query(evil, &mut normalised);
    assert!(normalised.contains('\u{1b}'));
    assert_eq!(query, normalised);
}

/// A 40 MiB line — more than a log record holds — is appended cut (still oversize for any
/// configuration) and dead-lettered at its position like any invalid record; the import
/// goes on with the lines after it.
#[test]
fn a_line_too_large_for_the_log_is_dead_lettered_in_place_and_the_import_goes_on() {
    let t = temp();
    let file = t.path().join("in.jsonl");
    let big = format!(
        r#"{{"schema":1,"event_id":"big","user_id":"u","note":"{}"}}"#,
        "a".repeat(40 << 20)
    );
    let lines = [
        purchase("g0", "1.00", None),
        purchase("g1", "1.00", None),
        big,
        purchase("g2", "1.00", None),
        purchase("g3", "1.00", None),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut c = kappa(t.path());
    c.args(["produce", "--input"]).arg(&file);
    let out = ok(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3 of ") && err.contains("to be dead-lettered (oversize)"),
        "{err}"
    );
    assert!(err.contains("appended 5 records"), "{err}");
    let counts = common::counts(&common::run_drain(t.path(), &[]));
    assert_eq!(counts, [4, 0, 0, 1], "accepted, late, duplicates, invalid");
    let mut c = kappa(t.path());
    c.args(["dead-letters", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let d = &v["dead_letters"][0];
    assert_eq!(d["kind"], "oversize", "{d}");
    assert_eq!(
        d["offset"], 2,
        "the third line of the one user's partition: {d}"
    );
    assert!(
        d["raw"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"schema":1,"event_id":"big""#),
        "{d}"
    );
}

/// The disk fills up during `produce --input`: one error line naming the cause once, how
/// many lines went in and the line to resume from (and how many later lines are in
/// already); resuming from there loses nothing and counts nothing twice.
#[test]
fn a_full_disk_during_produce_input_says_how_many_lines_went_in_and_where_to_resume() {
    let t = temp();
    let data = t.path().join("data");
    let disk = common::Tmpfs::mount(&data, "2m");
    let lines: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                r#"{{"schema":1,"event_id":"e{i}","event_type":"purchase","user_id":"u{i}","session_id":"s","product_id":"p_{}","category":"shoes","price":"1.00","quantity":1,"ts":"2026-11-23T10:00:05Z","context":{{"referrer":"google_search","campaign":{{"id":"camp_123","name":"summer-sale"}}}}}}"#,
                i % 50
            )
        })
        .collect();
    let file = t.path().join("in.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() > 2 << 20);
    let mut c = kappa(&data);
    c.args(["produce", "--input"]).arg(&file);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    let number_before = |tail: &str| -> u64 {
        let at = err
            .find(tail)
            .unwrap_or_else(|| panic!("{tail:?} in {err}"));
        err[..at]
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("a number before {tail:?}: {err}"))
    };
    let appended = number_before(" lines appended");
    let resume: u64 = err
        .split("resume from line ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let later = if err.contains(" later lines are in the log already") {
        number_before(" later lines are in the log already")
    } else {
        0
    };
    assert!(appended > 0 && appended < 10_000, "{err}");
    assert_eq!(appended, resume - 1 + later, "{err}");

    // Space again; the rest, from the line named.
    disk.resize("64m");
    let rest = t.path().join("rest.jsonl");
    std::fs::write(&rest, lines[(resume - 1) as usize..].join("\n")).unwrap();
    let mut c = kappa(&data);
    c.args(["produce", "--input"]).arg(&rest);
    ok(c);
    let counts = common::counts(&common::run_drain(&data, &[]));
    assert_eq!(
        counts,
        [10_000, 0, later, 0],
        "every line once, the later ones again as duplicates ({err})"
    );
}
