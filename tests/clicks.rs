//! The clicks stream (issue 20, item 5) on the real binary: Flink's example verbatim —
//! `{"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:01"}` counted per
//! page per 10-second tumbling window — against the rows Flink SQL's `TUMBLE` gives for
//! the same file (Apache Flink run here, `scripts/flink`), and against a batch model
//! computed here; restarts and SIGKILLs leave the same windows; a clicks aggregate is
//! added by one replay into a new version.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The clicks' time as Flink's example writes it, and its query as a declaration.
const CLICKS: &str = r#"
[clicks]
time-field = "timestamp"
time-format = "%Y-%m-%d %H:%M:%S"

[[aggregates]]
name = "page-views"
stream = "clicks"
group-by = ["page"]
measures = ["count"]
sizes = ["10s"]
"#;

/// Flink's example, a malformed line and a click without its time.
const EXAMPLE: &str = r#"{"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:01"}
{"user_id":102,"page":"/products/2","timestamp":"2024-04-25 10:00:03"}
{"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:07"}
{"user_id":103,"page":"/products/1","timestamp":"2024-04-25 10:00:12"}
{"user_id":102,"page":"/cart","timestamp":"2024-04-25 10:00:15"}
{"user_id":101,"page":"/products/2","timestamp":"2024-04-25 10:00:31"}
not json
{"user_id":104,"page":"/cart"}
"#;

/// (window start, window end, page) → views, times written `2024-04-25T10:00:00`.
type Rows = BTreeMap<(String, String, String), u64>;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn with_config(dir: &Path, cfg: &Path) -> Command {
    let mut c = kappa(dir);
    c.arg("--config").arg(cfg);
    c
}

/// Appends `file` to the clicks log.
fn produce_clicks(dir: &Path, cfg: &Path, file: &Path) {
    let mut c = with_config(dir, cfg);
    c.args(["produce", "--stream", "clicks", "--input"])
        .arg(file);
    ok(c);
}

/// kappa's `page-views` rows of `version`, from its export.
fn kappa_rows(dir: &Path, version: &str) -> Rows {
    let mut c = kappa(dir);
    c.args(["export", "--version", version]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let mut rows = Rows::new();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["aggregate"] != "page-views" {
            continue;
        }
        let t = |k: &str| v[k].as_str().unwrap().trim_end_matches('Z').to_string();
        let key = (
            t("window_start"),
            t("window_end"),
            v["key"]["page"].as_str().unwrap().to_string(),
        );
        assert!(
            rows.insert(key, v["count"].as_u64().unwrap()).is_none(),
            "{line}"
        );
    }
    rows
}

/// Flink SQL's rows for `file`: `TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10'
/// SECOND)` grouped by window and page (`tests/flink/ClicksTumble.java`, Apache Flink
/// installed by `scripts/flink`).
fn flink_rows(file: &Path) -> Rows {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var("FLINK_LIBS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let out = Command::new(root.join("scripts/flink")).output().unwrap();
            assert!(
                out.status.success(),
                "scripts/flink failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
    };
    let classes = dir.parent().unwrap().join("classes");
    // A short-lived JVM: the first compiler tier and the serial collector start faster.
    let out = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
        .arg(format!("{}/*:{}", dir.display(), classes.display()))
        .arg("ClicksTumble")
        .arg(file)
        .arg("10")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Flink failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = Rows::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 4, "{line}");
        rows.insert(
            (f[0].to_string(), f[1].to_string(), f[2].to_string()),
            f[3].parse().unwrap(),
        );
    }
    rows
}

/// The batch model: every line with a page and a time `%Y-%m-%d %H:%M:%S`, counted in
/// the 10-second window its time falls in.
fn model(jsonl: &str) -> Rows {
    let mut rows = Rows::new();
    for line in jsonl.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(page), Some(ts)) = (v["page"].as_str(), v["timestamp"].as_str()) else {
            continue;
        };
        // `2024-04-25 10:00:17` → the window `10:00:10`–`10:00:20`.
        let (date, time) = ts.split_once(' ').unwrap();
        let hms: Vec<u32> = time.split(':').map(|x| x.parse().unwrap()).collect();
        let start = (hms[0] * 3600 + hms[1] * 60 + hms[2]) / 10 * 10;
        let at = |x: u32| format!("{date}T{:02}:{:02}:{:02}", x / 3600, x / 60 % 60, x % 60);
        *rows
            .entry((at(start), at(start + 10), page.to_string()))
            .or_default() += 1;
    }
    rows
}

/// `n` clicks of 2024-04-25 from 08:00, a few a second, out of order within 10 s (under
/// the 30 s lateness bound), over 40 pages; a few malformed or without a time.
fn random_clicks(n: usize, seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = String::new();
    let mut t = 8 * 3600;
    for i in 0..n {
        t += rng.random_range(0..2);
        let at = (t + rng.random_range(0..10)).min(23 * 3600);
        let (h, m, s) = (at / 3600, at / 60 % 60, at % 60);
        let page = format!("/products/{}", rng.random_range(0..40));
        let user = rng.random_range(100..400);
        match i % 997 {
            13 => out.push_str("{\"user_id\":1,\"page\":\n"),
            14 => out.push_str(&format!("{{\"user_id\":{user},\"page\":\"{page}\"}}\n")),
            _ => out.push_str(&format!(
                "{{\"user_id\":{user},\"page\":\"{page}\",\"timestamp\":\"2024-04-25 {h:02}:{m:02}:{s:02}\"}}\n"
            )),
        }
    }
    out
}

#[test]
fn flinks_example_gives_the_rows_flink_sql_gives() {
    let dir = temp();
    let cfg = write(dir.path(), "clicks.toml", CLICKS);
    let input = write(dir.path(), "clicks.jsonl", EXAMPLE);
    produce_clicks(dir.path(), &cfg, &input);
    let mut c = with_config(dir.path(), &cfg);
    c.args(RUN_DRAIN);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        out.contains("clicks: 8 read, 6 accepted, 0 late, 0 duplicates, 2 invalid"),
        "{out}"
    );
    let got = kappa_rows(dir.path(), "v1");
    // Flink's semantics, by hand: windows [start, start + 10 s) aligned to the epoch,
    // window_end = start + 10 s, no row for an empty window (10:00:20).
    let want: Rows = [
        ("10:00:00", "10:00:10", "/products/1", 2),
        ("10:00:00", "10:00:10", "/products/2", 1),
        ("10:00:10", "10:00:20", "/cart", 1),
        ("10:00:10", "10:00:20", "/products/1", 1),
        ("10:00:30", "10:00:40", "/products/2", 1),
    ]
    .into_iter()
    .map(|(s, e, p, n)| {
        (
            (
                format!("2024-04-25T{s}"),
                format!("2024-04-25T{e}"),
                p.to_string(),
            ),
            n,
        )
    })
    .collect();
    assert_eq!(got, want);
    assert_eq!(flink_rows(&input), want, "Flink SQL on the same file");

    // The two lines Flink skips are kappa's dead letters, with their reasons.
    let mut c = with_config(dir.path(), &cfg);
    c.args(["dead-letters", "--stream", "clicks", "--format", "json"]);
    let dead = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        dead.contains("not_json") && dead.contains("missing_field"),
        "{dead}"
    );
}

#[test]
fn random_clicks_equal_flink_and_a_batch_model_across_restarts() {
    let dir = temp();
    let cfg = write(dir.path(), "clicks.toml", CLICKS);
    let jsonl = random_clicks(20_000, 7);
    let lines: Vec<&str> = jsonl.lines().collect();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let first = write(dir.path(), "first.jsonl", &(first.join("\n") + "\n"));
    let rest = write(dir.path(), "rest.jsonl", &(rest.join("\n") + "\n"));
    // Half, a run that stops with windows open, the rest, a run to the end.
    produce_clicks(dir.path(), &cfg, &first);
    let mut c = with_config(dir.path(), &cfg);
    c.args(["run", "--until-caught-up"]);
    ok(c);
    produce_clicks(dir.path(), &cfg, &rest);
    let mut c = with_config(dir.path(), &cfg);
    c.args(RUN_DRAIN);
    ok(c);
    let got = kappa_rows(dir.path(), "v1");
    let want = model(&jsonl);
    assert!(want.len() > 1000, "{}", want.len());
    assert_eq!(got, want, "kappa against the batch model");
    let all = write(dir.path(), "all.jsonl", &jsonl);
    assert_eq!(flink_rows(&all), want, "Flink SQL against the batch model");
}

#[test]
fn sigkills_at_random_moments_leave_the_same_windows() {
    let reference = temp();
    // Days in Seoul: the clicks' rollups follow the events' zone.
    let zoned = format!("[rollups]\ntime-zone = \"Asia/Seoul\"\n{CLICKS}");
    let cfg = write(reference.path(), "clicks.toml", &zoned);
    let jsonl = random_clicks(200_000, 3);
    let input = write(reference.path(), "clicks.jsonl", &jsonl);
    produce_clicks(reference.path(), &cfg, &input);
    let started = std::time::Instant::now();
    let mut c = with_config(reference.path(), &cfg);
    c.args(RUN_DRAIN);
    ok(c);
    let run_ms = u64::try_from(started.elapsed().as_millis())
        .unwrap()
        .max(50);
    let want = kappa_rows(reference.path(), "v1");
    assert_eq!(want, model(&jsonl));

    let killed = temp();
    let fresh = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        produce_clicks(dir, &cfg, &input);
    };
    fresh(killed.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    kill_bounded_runs(
        5,
        run_ms,
        &mut rng,
        || with_config(killed.path(), &cfg),
        || fresh(killed.path()),
    );
    let mut c = with_config(killed.path(), &cfg);
    c.args(RUN_DRAIN);
    ok(c);
    assert_eq!(kappa_rows(killed.path(), "v1"), want);

    // A range total over the quarters of a Seoul day (from 18:00 and 00:00 there), read
    // from their rollups, equals the model's windows added up.
    let mut c = with_config(killed.path(), &cfg);
    c.args([
        "query",
        "--aggregate",
        "page-views",
        "--total",
        "--format",
        "json",
    ])
    .args([
        "--from",
        "2024-04-25T09:00:00Z",
        "--to",
        "2024-04-25T21:00:00Z",
    ]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["buckets"]["six_hours"], 2, "{v}");
    let got: BTreeMap<String, u64> = (v["rows"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["key"]["page"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut model_total: BTreeMap<String, u64> = BTreeMap::new();
    for ((start, _, page), n) in &want {
        if ("2024-04-25T09:00:00".."2024-04-25T21:00:00").contains(&start.as_str()) {
            *model_total.entry(page.clone()).or_default() += n;
        }
    }
    assert_eq!(got, model_total);
}

#[test]
fn a_clicks_aggregate_is_added_by_one_replay_into_a_new_version() {
    let dir = temp();
    let input = write(dir.path(), "clicks.jsonl", &random_clicks(5_000, 9));
    let plain = write(dir.path(), "plain.toml", "");
    produce_clicks(dir.path(), &plain, &input);
    produce(dir.path(), 5_000, 2);
    run_drain(dir.path(), &[]);
    assert!(kappa_rows(dir.path(), "v1").is_empty());

    let cfg = write(dir.path(), "clicks.toml", CLICKS);
    let replay = |last: &str| {
        let mut c = kappa(dir.path());
        c.args([
            "replay",
            "--from",
            "earliest",
            "--version",
            "v2",
            "--config",
        ])
        .arg(&cfg)
        .arg(last);
        c
    };
    let dry = String::from_utf8(ok(replay("--dry-run")).stdout).unwrap();
    assert!(
        dry.contains("new: page-views; changed: none; dropped: none"),
        "{dry}"
    );
    let c = replay("--promote");
    let done = String::from_utf8(ok(c).stdout).unwrap();
    assert!(done.contains("promoted"), "{done}");
    // The serving version keeps its configuration: a run without --config finalises it.
    run_drain(dir.path(), &[]);
    let want = model(&std::fs::read_to_string(&input).unwrap());
    assert_eq!(kappa_rows(dir.path(), "v2"), want);

    let mut c = kappa(dir.path());
    c.args(["query", "--aggregate", "page-views", "--format", "json"]);
    let q: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let rows: usize = q["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["rows"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows, want.len(), "{q}");
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.get("/api/aggregates");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""stream":"clicks""#), "{body}");
    let (status, body) = server.get("/api/windows?aggregate=page-views&from=latest");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["windows"].as_array().unwrap().len(), 1, "{api}");
}
