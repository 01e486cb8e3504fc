//! The HTTP API: results, errors and status codes.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn api_serves_results_and_clear_errors() {
    let dir = temp();
    produce(dir.path(), 30_000, 5);
    run_drain(dir.path(), &[]);
    let s = Server::start(dir.path(), &[]);
    let json = |path: &str| {
        let (code, body) = s.get(path);
        (
            code,
            serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    };

    let (code, v) = json("/api/windows?aggregate=sales_by_category&size=1m");
    assert_eq!(code, 200);
    let ws = v["windows"].as_array().unwrap();
    assert!(ws.len() >= 2, "{v}");
    assert!(
        ws.windows(2)
            .all(|w| w[0]["window_start"].as_str() < w[1]["window_start"].as_str())
    );
    let first_start = ws[1]["window_start"].as_str().unwrap().to_string();

    let (code, v) = json(&format!(
        "/api/windows?aggregate=events_by_type&size=1m&from={first_start}&to={first_start}"
    ));
    assert_eq!(
        (code, v["windows"].as_array().unwrap().len()),
        (200, 0),
        "to is exclusive"
    );
    let (_, v) = json(&format!(
        "/api/windows?aggregate=events_by_type&size=1m&from={first_start}&limit=1"
    ));
    assert_eq!(v["windows"][0]["window_start"], first_start.as_str());

    let (code, v) = json("/api/top-products?size=1m&window=latest");
    assert_eq!(code, 200);
    assert!(
        !v["by_units"].as_array().unwrap().is_empty()
            && !v["by_revenue"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert_eq!(v["by_units"][0]["rank"], 1);
    let (code, v) = json(&format!(
        "/api/top-products?size=1m&window={first_start}&by=revenue"
    ));
    assert_eq!(code, 200);
    assert!(v.get("by_units").is_none() && v["by_revenue"].is_array());

    for (path, want) in [
        ("/api/windows?size=1m", 400),
        ("/api/windows?aggregate=nope", 400),
        ("/api/windows?aggregate=top_searches&size=forever", 400),
        ("/api/windows?aggregate=top_searches&from=yesterday", 400),
        ("/api/windows?aggregate=top_searches&limit=0", 400),
        ("/api/windows?aggregate=top_searches&colour=red", 400),
        ("/api/top-products?window=1970-01-01T00:00:00Z", 404),
        ("/api/top-products?size=7m&window=latest", 404),
        ("/api/dead-letters?after=banana", 400),
        ("/no/such/route", 404),
    ] {
        let (code, v) = json(path);
        assert_eq!(code, want, "{path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {v}"
        );
    }

    let (code, v) = json("/api/latest");
    assert_eq!(code, 200);
    assert_eq!(
        v["windows"].as_array().unwrap().len(),
        2,
        "one latest window per size: {v}"
    );
    let (code, _) = json("/api/provisional?size=1m");
    assert_eq!(code, 200);
    let (code, v) = json("/api/status");
    assert_eq!(code, 200);
    assert_eq!(v["partitions"].as_array().unwrap().len(), 4);
    let (code, v) = json("/api/dead-letters?limit=2");
    assert_eq!(code, 200);
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), 2);
    let (code, body) = s.get("/api/export");
    assert_eq!(code, 200);
    assert_eq!(body.as_bytes(), export_via_file(&dir));
}

fn export_via_file(dir: &tempfile::TempDir) -> Vec<u8> {
    // The server holds the store; read the file through a copy.
    let copy = temp();
    copy_dir(dir.path(), copy.path());
    export(copy.path())
}

/// One raw HTTP/1.1 request (the test chooses every header, `Host` included): (status,
/// body).
fn raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    sock.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    let code = answer
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The `error` text of a JSON error body.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_tokenless_server_refuses_cross_site_and_rebound_state_changes() {
    let dir = temp();
    produce(dir.path(), 2_000, 3);
    run_drain(dir.path(), &[]);
    let s = Server::start(dir.path(), &[]);
    let host = s.base.trim_start_matches("http://").to_string();
    let port = host.rsplit(':').next().unwrap().to_string();
    let json = ("Content-Type", "application/json");
    let replay = r#"{"from":"earliest","version":"v2"}"#;
    // A foreign page's "simple request", a DNS-rebound name, a form post: refused, and
    // nothing happens.
    for (method, path, headers, body, want, says) in [
        (
            "POST",
            "/api/versions/v1/promote",
            vec![
                ("Host", host.as_str()),
                ("Origin", "http://evil.example"),
                json,
            ],
            "",
            403,
            "Origin",
        ),
        (
            "POST",
            "/api/replays",
            vec![("Host", "evil.example"), json],
            replay,
            403,
            "Host",
        ),
        (
            "POST",
            "/api/replays",
            vec![
                ("Host", &format!("evil.example:{port}")),
                ("Origin", &format!("http://evil.example:{port}")),
                json,
            ],
            replay,
            403,
            "Host",
        ),
        (
            "DELETE",
            "/api/versions/v1",
            vec![("Host", host.as_str()), ("Origin", "null")],
            "",
            403,
            "Origin",
        ),
        (
            "DELETE",
            "/api/replays/1",
            vec![("Host", "evil.example")],
            "",
            403,
            "Host",
        ),
        (
            "POST",
            "/api/replays",
            vec![("Host", host.as_str()), ("Content-Type", "text/plain")],
            replay,
            415,
            "application/json",
        ),
        (
            "POST",
            "/api/versions/v1/promote",
            vec![("Host", host.as_str())],
            "",
            415,
            "application/json",
        ),
    ] {
        let (code, body) = raw(&s.base, method, path, &headers, body);
        assert_eq!(code, want, "{method} {path} {headers:?}: {body}");
        assert!(error_of(&body).contains(says), "{method} {path}: {body}");
    }
    let (_, body) = s.get("/api/replays");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["replays"],
        serde_json::json!([]),
        "no refused request started a replay"
    );
    // The server's own loopback names, same-origin pages and the CLI are admitted.
    for h in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        host.clone(),
    ] {
        let origin = format!("http://{h}");
        let (code, body) = raw(
            &s.base,
            "POST",
            "/api/versions/v1/promote",
            &[
                ("Host", &h),
                ("Origin", &origin),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            "{}",
        );
        assert_eq!(code, 200, "{h}: {body}");
    }
    let (code, body) = raw(
        &s.base,
        "POST",
        "/api/replays",
        &[("Host", &host), json],
        r#"{"from":"earliest","dry_run":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    let mut c = kappa(dir.path());
    c.args(["versions", "promote", "v1"]);
    ok(c);
    let mut c = kappa(dir.path());
    c.args([
        "replay",
        "--from",
        "earliest",
        "--version",
        "v2",
        "--detach",
    ]);
    ok(c);
}

#[test]
fn with_a_token_the_bearer_scheme_is_case_insensitive_and_foreign_origins_are_refused() {
    let dir = temp();
    produce(dir.path(), 2_000, 3);
    run_drain(dir.path(), &[]);
    let token = [("KAPPA_HTTP__TOKEN".to_string(), "s3cret".to_string())];
    let s = Server::start_env(dir.path(), &[], &token);
    // Behind a proxy or tunnel the Host is another name: the token protects, Origin must
    // still be the Host's own.
    let proxied = "kappa.example.com:8443";
    let promote = |auth: &str, origin: Option<&str>| {
        let mut h = vec![
            ("Host", proxied),
            ("Content-Type", "application/json"),
            ("Authorization", auth),
        ];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        raw(&s.base, "POST", "/api/versions/v1/promote", &h, "{}")
    };
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        assert_eq!(promote(auth, None).0, 200, "{auth}");
    }
    assert_eq!(promote("bearer wrong", None).0, 401);
    assert_eq!(promote("Basic s3cret", None).0, 401);
    assert_eq!(
        promote("bearer s3cret", Some("https://kappa.example.com:8443")).0,
        200
    );
    let (code, body) = promote("bearer s3cret", Some("http://evil.example"));
    assert_eq!(code, 403, "{body}");
}

#[test]
fn reads_of_a_version_that_does_not_exist_are_errors() {
    let dir = temp();
    produce(dir.path(), 2_000, 3);
    run_drain(dir.path(), &[]);
    let s = Server::start(dir.path(), &[]);
    for path in [
        "/api/windows?aggregate=events_by_type&version=nosuch",
        "/api/latest?version=nosuch",
        "/api/late-events?version=nosuch",
        "/api/export?version=nosuch",
        "/api/top-products?version=nosuch",
    ] {
        let (code, body) = s.get(path);
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(error_of(&body), "no output version nosuch", "{path}");
    }
    let (code, body) = s.get(
        "/api/windows?aggregate=events_by_type&from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
    );
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).contains("after"), "{body}");
    let (code, body) = raw(
        &s.base,
        "DELETE",
        "/api/replays/abc",
        &[("Host", s.base.trim_start_matches("http://"))],
        "",
    );
    assert_eq!(code, 400, "{body}");
    // The CLI, through the server that holds the store and on the store itself.
    let check = |how: &str| {
        for cmd in ["export", "query"] {
            let out = kappa(dir.path())
                .args([cmd, "--version", "nosuch"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} {how}");
            assert!(out.stdout.is_empty(), "{cmd} {how}");
            assert_eq!(err.lines().count(), 1, "{cmd} {how}: {err}");
            assert!(
                err.contains("no output version nosuch"),
                "{cmd} {how}: {err}"
            );
        }
    };
    check("through the server");
    assert!(s.interrupt().success());
    check("on the store");
}
