//! The HTTP API: results, errors and status codes.

mod common;

use common::*;
use serde_json::Value;

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
