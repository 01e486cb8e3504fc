//! Replays you can trust before applying them, on the real binary: window fingerprints
//! (equal for equal results whatever the batching and crashes, different after a one-event
//! change, the hash of the window's export lines), `versions compare`, and correction
//! diffs checked against the test's own batch model.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use common::{copy_dir, generate, kappa, ms, ok, temp};
use rand::SeedableRng;
use serde_json::Value;

/// `kappa fingerprint --format json` (plus `args`).
fn fingerprint(dir: &Path, args: &[&str]) -> Value {
    let mut c = kappa(dir);
    c.args(["fingerprint", "--format", "json"]).args(args);
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

/// (size, window start) → hash, from `kappa fingerprint --format json`.
fn hashes(v: &Value) -> BTreeMap<(String, String), String> {
    v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                (
                    w["size"].as_str().unwrap().to_string(),
                    w["window_start"].as_str().unwrap().to_string(),
                ),
                w["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The test's own fingerprint of each window: xxh3-128 of its `kappa export` lines without
/// the version field, in export order, each followed by a newline.
fn hashes_of_export(dir: &Path, version: &str) -> BTreeMap<(String, String), String> {
    let mut c = kappa(dir);
    c.args(["export", "--version", version]);
    let text = String::from_utf8(ok(c).stdout).unwrap();
    let tag = format!("\"version\":\"{version}\",");
    let mut per_window: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["size"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
        );
        let bytes = per_window.entry(key).or_default();
        bytes.extend_from_slice(line.replacen(&tag, "", 1).as_bytes());
        bytes.push(b'\n');
    }
    per_window
        .into_iter()
        .map(|(k, b)| (k, format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&b))))
        .collect()
}

/// The digest `kappa versions list` and `GET /api/versions` show for `version`.
fn listed_digest(dir: &Path, version: &str) -> String {
    let mut c = kappa(dir);
    c.args(["versions", "list"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let line = out
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == version))
        .unwrap_or_else(|| panic!("{version} in {out}"));
    line.split_whitespace()
        .find(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("a digest in {line}"))
        .to_string()
}

#[test]
fn fingerprints_agree_across_batch_sizes_and_crashes_and_differ_after_a_one_event_change() {
    let t = temp();
    let events = generate(
        t.path(),
        &["--events", "60000", "--sim-rate", "200", "--seed", "5"],
    );
    let (a, b, changed) = (temp(), temp(), temp());
    common::produce_lines(a.path(), &events);
    copy_dir(&a.path().join("log"), &b.path().join("log"));

    // a: big batches, one uninterrupted run.
    let t0 = Instant::now();
    let mut c = kappa(a.path());
    c.args(common::RUN_DRAIN)
        .env("KAPPA_PIPELINE__BATCH_RECORDS", "50000");
    ok(c);
    let run_ms = u64::try_from(t0.elapsed().as_millis()).unwrap().max(50);

    // b: small batches and SIGKILLs at random moments, then a run to the end.
    let env = [
        ("KAPPA_PIPELINE__BATCH_RECORDS", "700"),
        ("KAPPA_PIPELINE__COMMIT_INTERVAL", "5ms"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    common::kill_bounded_runs(
        2,
        run_ms,
        &mut rng,
        || {
            let mut c = kappa(b.path());
            c.envs(env);
            c
        },
        || std::fs::remove_file(b.path().join("kappa.redb")).unwrap(),
    );
    let mut c = kappa(b.path());
    c.args(common::RUN_DRAIN).envs(env);
    ok(c);

    let fa = fingerprint(a.path(), &[]);
    let fb = fingerprint(b.path(), &[]);
    let ha = hashes(&fa);
    assert!(ha.len() > 5, "windows: {}", ha.len());
    assert_eq!(ha, hashes(&fb), "per-window hashes");
    assert_eq!(fa["digest"], fb["digest"]);
    assert_eq!(fa["sizes"], fb["sizes"]);
    // The hash is that of the window's export lines (so stored with the right rows).
    assert_eq!(ha, hashes_of_export(a.path(), "v1"));
    let digest = fa["digest"].as_str().unwrap();
    assert_eq!(listed_digest(a.path(), "v1"), digest[..16]);
    assert_eq!(listed_digest(b.path(), "v1"), digest[..16]);

    // A range: only windows starting in it, with their own digest.
    let ranged = fingerprint(
        a.path(),
        &[
            "--from",
            "2026-11-23T00:01:00Z",
            "--to",
            "2026-11-23T00:03:00Z",
        ],
    );
    let starts: Vec<&str> = ranged["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window_start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2026-11-23T00:01:00Z", "2026-11-23T00:02:00Z"]);
    assert_ne!(ranged["digest"], fa["digest"]);

    // One event fewer (a view in the middle): exactly its 1m and 1h windows differ.
    let lines: Vec<&str> = events.lines().collect();
    let (i, gone) = lines
        .iter()
        .enumerate()
        .skip(lines.len() / 2)
        .find(|(_, l)| l.contains("\"event_type\":\"view\""))
        .expect("a page view");
    let ts = serde_json::from_str::<Value>(gone).unwrap()["ts"]
        .as_str()
        .unwrap()
        .to_string();
    let mut edited: Vec<&str> = lines.clone();
    edited.remove(i);
    common::produce_lines(changed.path(), &(edited.join("\n") + "\n"));
    common::run_drain(changed.path(), &[]);
    let fc = fingerprint(changed.path(), &[]);
    assert_ne!(fc["digest"], fa["digest"]);
    let hc = hashes(&fc);
    let differing: Vec<&(String, String)> = ha
        .keys()
        .chain(hc.keys())
        .filter(|k| ha.get(*k) != hc.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let ms = chrono::DateTime::parse_from_rfc3339(&ts)
        .unwrap()
        .timestamp_millis();
    let start = |size: i64| {
        chrono::DateTime::from_timestamp_millis(ms.div_euclid(size) * size)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    assert_eq!(
        differing,
        [
            &("1h".to_string(), start(3_600_000)),
            &("1m".to_string(), start(60_000)),
        ],
        "the removed event was at {ts}"
    );
}

/// Events by type per 1-minute window start (epoch ms) → event type → count.
type Counts = BTreeMap<i64, BTreeMap<String, u64>>;

/// The naive batch computation over the whole log (no lateness, no duplicates here).
fn model_counts(events: &str) -> Counts {
    let mut m = Counts::new();
    for line in events.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let start = ms(v["ts"].as_str().unwrap()).div_euclid(60_000) * 60_000;
        *m.entry(start)
            .or_default()
            .entry(v["event_type"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

/// The same from the store's export of v1.
fn exported_counts(dir: &Path) -> Counts {
    let mut c = kappa(dir);
    c.args(["export", "--version", "v1"]);
    let mut m = Counts::new();
    for l in String::from_utf8(ok(c).stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["aggregate"] == "events_by_type" && v["size"] == "1m" && v["count"] != 0 {
            m.entry(ms(v["window_start"].as_str().unwrap()))
                .or_default()
                .insert(
                    v["event_type"].as_str().unwrap().to_string(),
                    v["count"].as_u64().unwrap(),
                );
        }
    }
    m
}

/// `kappa replay show ID --format json`'s diff.
fn recorded_diff(dir: &Path, id: u64) -> Value {
    let mut c = kappa(dir);
    c.args(["replay", "show", &id.to_string(), "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert!(v["diff"].is_object(), "replay {id} has a diff: {v}");
    v["diff"].clone()
}

/// Window start → (event type → count delta) of the 1m windows a diff lists.
fn diff_counts(diff: &Value) -> BTreeMap<i64, BTreeMap<String, i64>> {
    diff["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["size"] == "1m")
        .map(|w| {
            let deltas = w["changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["aggregate"] == "events_by_type" && c["change"] == "changed")
                .map(|c| {
                    (
                        c["key"].as_str().unwrap().to_string(),
                        c["delta"]["count"].as_i64().unwrap(),
                    )
                })
                .collect();
            (ms(w["window_start"].as_str().unwrap()), deltas)
        })
        .collect()
}

#[test]
fn a_correction_diff_lists_exactly_the_windows_late_data_changes_and_nothing_over_unchanged_history()
 {
    let t = temp();
    let dir = t.path();
    // 8 minutes of event time with 5 % of events 1–10 minutes late (live max-delay: 30 s).
    let events = generate(
        dir,
        &[
            "--events",
            "120000",
            "--sim-rate",
            "250",
            "--late-share",
            "0.05",
            "--seed",
            "11",
        ],
    );
    common::produce_lines(dir, &events);
    common::run_drain(dir, &[]);
    let before = exported_counts(dir);
    let digest_before = fingerprint(dir, &[])["digest"].clone();

    // What the model says the correction changes: the windows of the range whose counts
    // differ from the live ones, by how much.
    let (from, to) = ("2026-11-23T00:03:00Z", "2026-11-23T00:06:00Z");
    let (lo, hi) = (ms(from), ms(to));
    let model = model_counts(&events);
    let expected: BTreeMap<i64, BTreeMap<String, i64>> = model
        .iter()
        .filter(|(s, m)| (lo..hi).contains(*s) && before.get(*s) != Some(*m))
        .map(|(s, m)| {
            let old = before.get(s).cloned().unwrap_or_default();
            let d = m
                .iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        i64::try_from(*n).unwrap()
                            - i64::try_from(old.get(k).copied().unwrap_or(0)).unwrap(),
                    )
                })
                .filter(|(_, d)| *d != 0)
                .collect();
            (*s, d)
        })
        .collect();
    assert!(!expected.is_empty(), "late data changes windows in range");

    let replay = |extra: &[&str]| {
        let mut c = kappa(dir);
        c.args([
            "replay",
            "--from",
            from,
            "--to",
            to,
            "--max-delay",
            "2h",
            "--diff",
        ])
        .args(extra);
        String::from_utf8(ok(c).stdout).unwrap()
    };

    // Dry run: the diff, and nothing changed.
    let out = replay(&["--dry-run"]);
    assert!(out.contains("nothing changed"), "{out}");
    let dry = recorded_diff(dir, 1);
    assert_eq!(diff_counts(&dry), expected, "dry-run diff vs the model");
    assert_eq!(
        fingerprint(dir, &[])["digest"],
        digest_before,
        "a dry run changes nothing"
    );
    assert_eq!(exported_counts(dir), before);

    // The correction: the same diff, recorded in the history; the results are the model's.
    let out = replay(&["--reason", "late data"]);
    assert!(out.contains("completed"), "{out}");
    let applied = recorded_diff(dir, 2);
    assert_eq!(
        diff_counts(&applied),
        expected,
        "recorded diff vs the model"
    );
    assert_eq!(applied["windows"], dry["windows"]);
    assert_eq!(applied["summary"], dry["summary"]);
    // The full diff, read page by page: every differing window with every changed row.
    let full = |extra: &[&str]| -> Value {
        let mut c = kappa(dir);
        c.args(["replay", "show", "2", "--format", "json", "--full"])
            .args(extra);
        let out = ok(c);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("no full diff"), "{stderr}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["diff"]["windows"].clone()
    };
    let all = full(&[]);
    let all = all.as_array().unwrap();
    let s = &applied["summary"];
    assert_eq!(all.len() as u64, s["windows_differing"].as_u64().unwrap());
    assert!(all.len() >= 2, "{s}");
    let rows: u64 = all
        .iter()
        .map(|w| w["changes"].as_array().unwrap().len() as u64)
        .sum();
    let counted: u64 = ["rows_added", "rows_removed", "rows_changed"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum();
    assert_eq!(rows, counted, "every changed row listed");
    assert_eq!(
        diff_counts(&serde_json::json!({ "windows": all })),
        expected
    );
    assert_eq!(
        full(&["--offset", "1", "--limit", "1"]),
        serde_json::json!([all[1].clone()])
    );
    let after = exported_counts(dir);
    for s in expected.keys() {
        assert_eq!(after.get(s), model.get(s), "window {s} corrected");
    }
    // The swapped windows carry their own fingerprints.
    assert_eq!(hashes(&fingerprint(dir, &[])), hashes_of_export(dir, "v1"));

    // Over history that is now right, a correction changes nothing, and says so.
    replay(&["--reason", "again"]);
    let again = recorded_diff(dir, 3);
    assert_eq!(again["summary"]["windows_differing"], 0, "{again}");
    assert!(
        again["summary"]["windows_compared"].as_u64().unwrap() >= 3,
        "{again}"
    );
    assert_eq!(again["windows"], serde_json::json!([]));

    // `versions compare` uses the same comparison: a version equals itself.
    let mut c = kappa(dir);
    c.args(["versions", "compare", "v1", "v1", "--json"]);
    let same: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(same["summary"]["windows_differing"], 0);
    assert!(same["summary"]["windows_compared"].as_u64().unwrap() > 8);
}

#[test]
fn a_running_server_answers_the_same_fingerprints_comparisons_and_diffs() {
    let t = temp();
    let dir = t.path();
    let events = generate(
        dir,
        &[
            "--events",
            "30000",
            "--sim-rate",
            "250",
            "--late-share",
            "0.05",
            "--seed",
            "2",
        ],
    );
    common::produce_lines(dir, &events);
    common::run_drain(dir, &[]);
    let local = fingerprint(dir, &[]);
    let server = common::Server::start(dir, &[]);
    // The store is held: the CLI asks the server, which answers the same.
    let remote = fingerprint(dir, &[]);
    assert_eq!(hashes(&remote), hashes(&local));
    let (code, body) = server.get("/api/versions");
    assert_eq!(code, 200, "{body}");
    let versions: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        versions["versions"][0]["digest"].as_str().unwrap().len(),
        32
    );
    let (code, body) = server.get("/api/versions/compare?a=v1&b=v1");
    assert_eq!(code, 200, "{body}");
    let same: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(same["summary"]["windows_differing"], 0, "{same}");
    let (code, body) = server.get("/api/versions/compare?a=v1&b=nosuch");
    assert_eq!(code, 404, "{body}");
    let (code, _) = server.get("/api/replays/1/diff");
    assert_eq!(code, 404);

    // A dry-run diff through the server: recorded, readable over HTTP, nothing changed.
    let mut c = kappa(dir);
    c.args([
        "replay",
        "--from",
        "2026-11-23T00:01:00Z",
        "--to",
        "2026-11-23T00:02:00Z",
        "--max-delay",
        "2h",
        "--dry-run",
        "--diff",
    ]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("1 differ"), "{out}");
    let (code, body) = server.get("/api/replays/1/diff");
    assert_eq!(code, 200, "{body}");
    let diff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(diff["summary"]["windows_differing"], 1, "{diff}");
    // Its full diff, paged: the one window, with every changed row.
    let (code, body) = server.get("/api/replays/1/diff/windows?offset=0&limit=5");
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["next_offset"], Value::Null, "{page}");
    assert_eq!(
        page["windows"][0]["window_start"],
        diff["windows"][0]["window_start"]
    );
    let (code, body) = server.get("/api/replays/1/diff/windows?limit=0");
    assert_eq!(code, 400, "{body}");
    assert_eq!(fingerprint(dir, &[])["digest"], local["digest"]);
    server.interrupt();
}

/// `kappa replay …` on `dir` (no server: in the foreground), with `config` as `--config`.
fn replay(dir: &Path, config: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut c = kappa(dir);
    if let Some(f) = config {
        c.arg("--config").arg(f);
    }
    c.arg("replay").args(args);
    c.output().unwrap()
}

/// The serving version: the line `versions list` marks with `*`.
fn serving(dir: &Path) -> String {
    let mut c = kappa(dir);
    c.args(["versions", "list"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("* "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no serving version in {out}"))
        .to_string()
}

#[test]
fn a_promotion_gate_accepts_an_identical_version_and_refuses_a_different_top_k() {
    let t = temp();
    let dir = t.path();
    // 100 events per second of event time: 5 minutes, so that a version with a lateness
    // bound of 2 minutes has final windows in common with the serving one.
    let mut c = kappa(dir);
    c.args(common::produce_args(30_000, 17))
        .args(["--sim-rate", "100"]);
    ok(c);
    common::run_drain(dir, &[]);
    // `replay --from FROM --version V --promote-if GATE` (plus `extra`): Ok, or the
    // error exit's stderr, then its stdout.
    let gated = |config: Option<&Path>, from: &str, version: &str, gate: &str, extra: &[&str]| {
        let mut args = vec!["--from", from, "--version", version, "--promote-if", gate];
        args.extend(extra);
        let out = replay(dir, config, &args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{err}\n{}", String::from_utf8_lossy(&out.stdout)))
        }
    };
    // The same configuration: every common final window equal, promoted.
    gated(None, "earliest", "v2", "max-changed-windows=0", &[]).unwrap();
    assert_eq!(serving(dir), "v2");
    // Top 3 instead of 10: the top-K rows differ in every window, refused (an error exit),
    // and said why; v3 stays, unpromoted.
    let cfg = temp();
    let file = cfg.path().join("top3.toml");
    std::fs::write(&file, "[pipeline]\ntop-k = 3\n").unwrap();
    let err = gated(Some(&file), "earliest", "v3", "max-changed-windows=0", &[]).unwrap_err();
    assert!(err.contains("windows differ"), "{err}");
    // ... and shown: the comparison with the serving version, window by window.
    assert!(
        err.contains("v2 → v3: ") && err.contains("── 1m window"),
        "{err}"
    );
    assert_eq!(serving(dir), "v2");
    let mut c = kappa(dir);
    c.args(["versions", "list"]);
    assert!(String::from_utf8(ok(c).stdout).unwrap().contains("v3 "));
    // A revenue bound: the same top 3 moves no revenue (sales by category are unchanged),
    // so 0 % holds; a larger lateness bound takes late purchases (1–10 minutes late) in,
    // so 0 % does not.
    gated(Some(&file), "earliest", "v4", "revenue-delta<=0%", &[]).unwrap();
    assert_eq!(serving(dir), "v4");
    let err = gated(
        Some(&file),
        "earliest",
        "v5",
        "revenue-delta<=0%",
        &["--max-delay", "2m"],
    )
    .unwrap_err();
    assert!(err.contains("revenue delta"), "{err}");
    assert_eq!(serving(dir), "v4");
    // A version from a time: compared from that time on (the serving version's earlier
    // windows are not the new one's), identical there, promoted.
    gated(
        Some(&file),
        "2026-11-23T00:02:00Z",
        "v7",
        "max-changed-windows=0",
        &[],
    )
    .unwrap();
    assert_eq!(serving(dir), "v7");
    // A gate that does not read, or on an in-place correction, is one clear line.
    let err = gated(None, "earliest", "v6", "fewer-bugs", &[]).unwrap_err();
    assert!(err.contains("max-changed-windows=N"), "{err}");
    let out = replay(
        dir,
        None,
        &[
            "--from",
            "earliest",
            "--promote-if",
            "max-changed-windows=0",
        ],
    );
    assert!(!out.status.success());
}

/// `kappa audit …` on `dir` with `--json` (no server: in the foreground).
fn audit(dir: &Path, args: &[&str]) -> (bool, Value) {
    let mut c = kappa(dir);
    c.args(["audit", "--json"]).args(args);
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The plan and outcome lines come first; the JSON object is the rest.
    let json = &text[text.find("\n{").map_or(0, |i| i + 1)..];
    let v = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

#[test]
fn an_audit_finds_a_window_corrupted_in_the_store_and_repairs_it() {
    let t = temp();
    let dir = t.path();
    // 4 minutes of event time, some late and duplicate records.
    let events = generate(
        dir,
        &[
            "--events",
            "60000",
            "--sim-rate",
            "250",
            "--late-share",
            "0.02",
            "--seed",
            "5",
        ],
    );
    common::produce_lines(dir, &events);
    common::run_drain(dir, &[]);
    let export_before = common::export_version(dir, "v1");
    let digest_before = fingerprint(dir, &[])["digest"].clone();
    let (from, to) = ("2026-11-23T00:01:00Z", "2026-11-23T00:03:00Z");
    let args = ["--from", from, "--to", to];

    // Untouched: every window of the range equals its recomputation.
    let (success, clean) = audit(dir, &args);
    assert!(success, "{clean}");
    assert_eq!(clean["result"], "equal", "{clean}");
    assert_eq!(
        clean["windows_checked"], 2,
        "two 1m windows in range: {clean}"
    );
    assert_eq!(clean["windows_differing"], 0, "{clean}");

    // Corrupt one window behind kappa's back: a category row of the 00:02 minute goes
    // (its stored fingerprint stays as it was).
    remove_a_category_row(dir, ms("2026-11-23T00:02:00Z"));
    assert_ne!(
        common::export_version(dir, "v1"),
        export_before,
        "corrupted"
    );

    // Found: exactly that window, the missing row added back by the recomputation; not
    // repaired, so the exit code is 1 and the store stays as it is.
    let (success, found) = audit(dir, &args);
    assert!(!success, "a mismatch without --repair fails: {found}");
    assert_eq!(found["result"], "mismatched", "{found}");
    assert_eq!(found["windows_differing"], 1, "{found}");
    let w = &found["diff"]["windows"][0];
    assert_eq!(w["size"], "1m", "{found}");
    assert_eq!(w["window_start"], "2026-11-23T00:02:00Z", "{found}");
    assert_eq!(w["rows_added"], 1, "{found}");
    assert_eq!(w["rows_removed"], 0, "{found}");
    assert_eq!(w["rows_changed"], 0, "{found}");
    assert_ne!(
        common::export_version(dir, "v1"),
        export_before,
        "not repaired"
    );

    // Repaired in place: the results and their digest are the ones computed live.
    let (success, repaired) = audit(dir, &[&args[..], &["--repair"]].concat());
    assert!(success, "{repaired}");
    assert_eq!(repaired["result"], "repaired", "{repaired}");
    assert_eq!(repaired["windows_differing"], 1, "{repaired}");
    assert_eq!(common::export_version(dir, "v1"), export_before);
    assert_eq!(fingerprint(dir, &[])["digest"], digest_before);
    let (success, again) = audit(dir, &args);
    assert!(success && again["result"] == "equal", "{again}");

    // A correction with a larger lateness bound takes in events that were late live: an
    // audit with the version's own bound finds its windows different, says why, and will
    // not undo it; audited with the correction's bound, they are equal.
    let mut c = kappa(dir);
    c.args(["replay", "--from", from, "--to", to, "--max-delay", "2h"]);
    ok(c);
    let (success, corrected) = audit(dir, &args);
    assert!(
        !success && corrected["result"] == "mismatched",
        "{corrected}"
    );
    let mut c = kappa(dir);
    c.args(["audit", "--repair"]).args(args);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--repair would undo corrections"),
        "{stderr}"
    );
    let (success, with_bound) = audit(dir, &[&args[..], &["--max-delay", "2h"]].concat());
    assert!(success && with_bound["result"] == "equal", "{with_bound}");

    // The history: every audit is there with reason audit; the repair is the completed one.
    let mut c = kappa(dir);
    c.args(["replay", "history"]);
    let history = String::from_utf8(ok(c).stdout).unwrap();
    let audits: Vec<&str> = history.lines().filter(|l| l.contains(" audit (")).collect();
    assert_eq!(audits.len(), 6, "{history}");
    assert_eq!(
        audits.iter().filter(|l| l.contains("completed")).count(),
        1,
        "{history}"
    );
}

/// Removes one `sales_by_category` row of v1's 1-minute window at `start` straight from the
/// store file, leaving the window's stored fingerprint as it was.
fn remove_a_category_row(dir: &Path, start: i64) {
    use redb::ReadableTable;
    let db = redb::Database::open(dir.join("kappa.redb")).unwrap();
    let table: redb::TableDefinition<(&str, u8, i64, i64, &str), &[u8]> =
        redb::TableDefinition::new("results");
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(table).unwrap();
        let key: String = {
            let mut rows = t
                .range(("v1", 1u8, 60_000i64, start, "")..("v1", 1u8, 60_000i64, start + 1, ""))
                .unwrap();
            let (k, _) = rows.next().expect("a category row").unwrap();
            k.value().4.to_string()
        };
        t.remove(("v1", 1u8, 60_000i64, start, key.as_str()))
            .unwrap()
            .expect("removed");
    }
    tx.commit().unwrap();
}

/// The value of an unlabelled sample, or of the one with `label` (`result="equal"`).
fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    let prefix = if label.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{label}}} ")
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn scheduled_audits_check_the_newly_final_windows_and_repair_when_configured() {
    let t = temp();
    let dir = t.path();
    // Six hours of event time, final through 06:00 once drained.
    let events = generate(
        dir,
        &["--events", "36000", "--sim-rate", "5", "--seed", "8"],
    );
    common::produce_lines(dir, &events);
    common::run_drain(dir, &[]);
    let export_before = common::export_version(dir, "v1");
    remove_a_category_row(dir, ms("2026-11-23T04:30:00Z"));

    // Audits every second, repairing: the first covers the hour of windows before the
    // last hour final, 04:00–05:00 (60 one-minute windows and one of an hour); nothing
    // new is final after it, so no other audit runs.
    let env = [
        ("KAPPA_PIPELINE__AUDIT_EVERY".to_string(), "1s".to_string()),
        (
            "KAPPA_PIPELINE__AUDIT_REPAIR".to_string(),
            "true".to_string(),
        ),
    ];
    let server = common::Server::start_env(dir, &[], &env);
    let mismatched = |m: &str| sample(m, "kappa_audits_total", "result=\"mismatched\"");
    server.wait_for(
        |s| mismatched(&s.get("/metrics").1) >= 1.0,
        "a scheduled audit",
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let metrics = server.get("/metrics").1;
    assert_eq!(mismatched(&metrics), 1.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "kappa_audits_total", "result=\"equal\""),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "kappa_audit_windows_checked_total", ""),
        61.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "kappa_audit_windows_mismatched_total", ""),
        1.0,
        "{metrics}"
    );
    let (_, history) = server.get("/api/replays");
    assert!(
        history.contains("kappa (pipeline.audit-every)") && history.contains("\"completed\""),
        "{history}"
    );
    assert!(server.interrupt().success());
    assert_eq!(common::export_version(dir, "v1"), export_before, "repaired");
}
