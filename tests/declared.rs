//! Declared aggregates (issue 20) on the real binary: their final windows against a batch
//! model computed here from the JSON lines produced; the built-in results unchanged by
//! declaring them; adding one by a replay into a new version, end to end; bad
//! declarations refused at start-up in one line.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::*;
use serde_json::Value;

/// Three aggregates over nested fields, filters, derived keys and two sizes.
const DECLARED: &str = r#"
[[aggregates]]
name = "views-by-os"
types = ["view"]
group-by = ["device.os"]
measures = ["count"]
sizes = ["10s", "1m"]

[[aggregates]]
name = "campaign-sales"
types = ["purchase"]
where = [{ field = "context.campaign", exists = true }]
group-by = ["context.campaign.id", "hour_of_day()"]
measures = ["count", "sum(price)", "min(price)", "max(price)"]
sizes = ["1h"]

[[aggregates]]
name = "big-tickets"
where = [{ field = "price", ge = 100 }]
group-by = ["device.type", "context.referrer"]
measures = ["count", "max(price)"]
sizes = ["1m"]
"#;

/// A decimal's text (`"62.67"`, `11547.9`, `3`) in hundredths.
fn hundredths(text: &str) -> i128 {
    let text = text.trim_matches('"');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(frac.len() <= 2, "{text}");
    let frac = format!("{frac:0<2}");
    let sign = if int.starts_with('-') { -1 } else { 1 };
    int.parse::<i128>().unwrap() * 100 + sign * frac.parse::<i128>().unwrap()
}

/// (aggregate, size, window start, key parts) → (events, measures in hundredths or counts).
type Windows = BTreeMap<(String, String, String, Vec<String>), (u64, Vec<Option<i128>>)>;

fn part(v: Option<&Value>) -> String {
    match v {
        None => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The model: every distinct event of `jsonl` (by `event_id`), each aggregate computed
/// from its fields directly.
fn model(jsonl: &str) -> Windows {
    model_in(jsonl, 0)
}

/// [`model`] with hours of the day `offset_hours` from UTC (a zone without DST).
fn model_in(jsonl: &str, offset_hours: i64) -> Windows {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut out = Windows::new();
    for line in jsonl.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let id = e["event_id"].as_str().unwrap().to_string();
        if let Some(first) = seen.get(&id) {
            assert_eq!(first, &e, "a duplicate is a copy");
            continue;
        }
        seen.insert(id, e.clone());
        let ts = ms(e["ts"].as_str().unwrap());
        let ty = e["event_type"].as_str().unwrap();
        let price = e
            .get("price")
            .filter(|p| !p.is_null())
            .map(|p| hundredths(&p.to_string()));
        let at = |path: &str| e.pointer(&format!("/{}", path.replace('.', "/")));
        let mut add =
            |name: &str, size_s: i64, key: Vec<String>, measures: &[(&str, Option<i128>)]| {
                let size = size_s * 1000;
                let start = chrono::DateTime::from_timestamp_millis(ts.div_euclid(size) * size)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let size_name = match size_s {
                    10 => "10s",
                    60 => "1m",
                    _ => "1h",
                };
                let w = out
                    .entry((name.into(), size_name.into(), start, key))
                    .or_insert_with(|| (0, vec![None; measures.len()]));
                w.0 += 1;
                for (x, (kind, v)) in w.1.iter_mut().zip(measures) {
                    *x = match (*x, *v) {
                        (Some(a), Some(b)) => Some(match *kind {
                            "min" => a.min(b),
                            "max" => a.max(b),
                            _ => a + b,
                        }),
                        (a, b) => a.or(b),
                    };
                }
            };
        if ty == "view" {
            for size in [10, 60] {
                add(
                    "views-by-os",
                    size,
                    vec![part(at("device.os"))],
                    &[("count", Some(1))],
                );
            }
        }
        if ty == "purchase" && at("context.campaign").is_some() {
            let hour = chrono::DateTime::from_timestamp_millis(ts + offset_hours * 3_600_000)
                .unwrap()
                .format("%-H");
            add(
                "campaign-sales",
                3600,
                vec![part(at("context.campaign.id")), hour.to_string()],
                &[
                    ("count", Some(1)),
                    ("sum", price),
                    ("min", price),
                    ("max", price),
                ],
            );
        }
        if price.is_some_and(|p| p >= 10_000) {
            add(
                "big-tickets",
                60,
                vec![part(at("device.type")), part(at("context.referrer"))],
                &[("count", Some(1)), ("max", price)],
            );
        }
    }
    out
}

/// The declared aggregates' lines of an export, as the model's shape.
fn declared_of(lines: &[String]) -> Windows {
    let measures: HashMap<&str, &[&str]> = HashMap::from([
        ("views-by-os", &["count"][..]),
        (
            "campaign-sales",
            &["count", "sum(price)", "min(price)", "max(price)"][..],
        ),
        ("big-tickets", &["count", "max(price)"][..]),
    ]);
    let mut out = Windows::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let name = v["aggregate"].as_str().unwrap();
        let Some(ms) = measures.get(name) else {
            continue;
        };
        let key: Vec<String> = v["key"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let values = ms
            .iter()
            .map(|m| match &v[*m] {
                Value::Null => None,
                n if *m == "count" => Some(i128::from(n.as_u64().unwrap())),
                n => Some(hundredths(&n.to_string())),
            })
            .collect();
        let at = (
            name.to_string(),
            v["size"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
            key,
        );
        let events = v["events"].as_u64().unwrap();
        assert!(
            out.insert(at, (events, values)).is_none(),
            "one line per key: {l}"
        );
    }
    out
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("declared.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn declared_windows_equal_a_batch_model_and_leave_the_built_in_results_as_they_were() {
    let plain = temp();
    // Duplicates and disorder within the lateness bound: every distinct event counts.
    let jsonl = generate(
        plain.path(),
        &[
            "--events",
            "30000",
            "--seed",
            "11",
            "--duplicate-share",
            "0.05",
            "--disorder",
            "10s",
        ],
    );
    produce_lines(plain.path(), &jsonl);
    let declared = temp();
    copy_dir(&plain.path().join("log"), &declared.path().join("log"));
    let cfg = write_config(declared.path(), DECLARED);

    let out = run_drain(plain.path(), &[]);
    let mut c = kappa(declared.path());
    c.arg("--config").arg(&cfg).args(RUN_DRAIN);
    let out_declared = String::from_utf8(ok(c).stdout).unwrap();
    let [accepted, late, dups, invalid] = counts(&out_declared);
    assert_eq!([late, invalid], [0, 0], "{out_declared}");
    assert!(accepted > 25_000 && dups > 500, "{out_declared}");
    assert_eq!(counts(&out), counts(&out_declared));

    let lines = export_version(declared.path(), "v1");
    let got = declared_of(&lines);
    let want = model(&jsonl);
    assert!(want.len() > 100, "the model has windows: {}", want.len());
    for name in ["views-by-os", "campaign-sales", "big-tickets"] {
        assert!(want.keys().any(|k| k.0 == name), "{name} in the model");
    }
    if got != want {
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(*v))
            .take(5)
            .collect();
        panic!("declared windows differ from the model: want {missing:?}, got {extra:?}");
    }
    // The built-in lines are the run's without declared aggregates, byte for byte.
    let builtin: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains(r#""key":{"#))
        .cloned()
        .collect();
    assert_eq!(builtin, export_version(plain.path(), "v1"));
}

#[test]
fn adding_an_aggregate_is_one_replay_into_a_new_version() {
    let dir = temp();
    produce(dir.path(), 20_000, 5);
    run_drain(dir.path(), &[]);
    let cfg = write_config(dir.path(), DECLARED);
    let replay = |extra: &[&str]| {
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
        .args(extra);
        String::from_utf8(ok(c).stdout).unwrap()
    };
    let dry = replay(&["--dry-run"]);
    assert!(
        dry.contains("declared aggregates against the serving version: new: big-tickets, campaign-sales, views-by-os; changed: none; dropped: none"),
        "{dry}"
    );
    assert!(dry.contains("dry run: nothing changed"), "{dry}");
    // The plan's first line names the declarations; it does not print them whole.
    let first = dry.lines().next().unwrap();
    assert!(
        first.ends_with("aggregates=[big-tickets,campaign-sales,views-by-os])"),
        "{first}"
    );
    let done = replay(&["--promote"]);
    assert!(done.contains("promoted"), "{done}");
    // The serving version keeps its configuration: a run without --config finalises it.
    run_drain(dir.path(), &[]);
    let v2 = export_version(dir.path(), "v2");
    let v1 = export_version(dir.path(), "v1");
    assert!(v1.iter().all(|l| !l.contains(r#""key":{"#)));
    // The same as a store that had the aggregates from the start.
    let fresh = temp();
    copy_dir(&dir.path().join("log"), &fresh.path().join("log"));
    let mut c = kappa(fresh.path());
    c.arg("--config").arg(&cfg).args(RUN_DRAIN);
    ok(c);
    // (`export_version` leaves the version out.)
    assert_eq!(v2, export_version(fresh.path(), "v1"));
    // Their fingerprints agree on the declared windows too; each window's hash is that of
    // its export lines without the version.
    let print = |dir: &Path, version: &str| -> Value {
        let mut c = kappa(dir);
        c.args(["fingerprint", "--version", version, "--format", "json"]);
        serde_json::from_slice(&ok(c).stdout).unwrap()
    };
    let (p2, fresh_print) = (print(dir.path(), "v2"), print(fresh.path(), "v1"));
    assert_eq!(p2["declared"], fresh_print["declared"]);
    assert_eq!(p2["declared_digest"], fresh_print["declared_digest"]);
    assert!(print(dir.path(), "v1").get("declared").is_none());
    let w = &p2["declared"][3];
    let mut c = kappa(dir.path());
    c.args(["export", "--version", "v2"]);
    let raw = String::from_utf8(ok(c).stdout).unwrap();
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for line in raw
        .lines()
        .map(|l| l.replacen(r#""version":"v2","#, "", 1))
        .filter(|l| {
            l.contains(&format!(
                r#""aggregate":{},"size":{},"window_start":{},"#,
                w["aggregate"], w["size"], w["window_start"]
            ))
        })
    {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    assert_eq!(w["hash"], format!("{:032x}", h.digest128()), "{w}");

    // A changed declaration, reviewed before promoting: only its windows differ.
    let changed = dir.path().join("changed.toml");
    std::fs::write(
        &changed,
        DECLARED.replace("field = \"price\", ge = 100", "field = \"price\", ge = 200"),
    )
    .unwrap();
    let mut c = kappa(dir.path());
    c.args([
        "replay",
        "--from",
        "earliest",
        "--version",
        "v3",
        "--config",
    ])
    .arg(&changed);
    ok(c);
    // Finalised to the end as v2 was (the serving run drained it).
    run_drain(
        dir.path(),
        &["--version", "v3", "--config", changed.to_str().unwrap()],
    );
    let mut c = kappa(dir.path());
    c.args(["versions", "compare", "v2", "v3", "--json"]);
    let cmp: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let d = &cmp["declared"];
    let listed = d["differing"].as_array().unwrap();
    assert!(d["compared"].as_u64().unwrap() > 8, "{d}");
    assert!(!listed.is_empty(), "{d}");
    assert!(
        listed.iter().all(|w| w[0] == "big-tickets"),
        "only big-tickets changed: {d}"
    );
    assert_eq!([&d["only_in_a"], &d["only_in_b"]], [0, 0], "{d}");
    // And its rows: a group counts fewer events in v3 (price ≥ 200 admits fewer), or is
    // gone; none counts more, and no row of another aggregate is listed.
    let rows = d["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{d}");
    let events = |r: &Value| r.as_object().map(|o| o["events"].as_u64().unwrap());
    for r in rows {
        assert_eq!(r["aggregate"], "big-tickets", "{r}");
        assert!(
            events(&r["a"]).unwrap() > events(&r["b"]).unwrap_or(0),
            "{r}"
        );
        assert_eq!(r["key"].as_object().unwrap().len(), 2, "{r}");
    }
    let mut c = kappa(dir.path());
    c.args(["versions", "compare", "v2", "v3"]);
    let text = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("    ") && l.contains("\"events\":") && l.contains(" → ")),
        "{text}"
    );
    let mut c = kappa(dir.path());
    c.args(["versions", "compare", "v1", "v2"]);
    let text = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("declared aggregates:") && l.contains("only in v2")),
        "{text}"
    );
    assert!(
        v2.iter()
            .filter(|l| l.contains(r#""aggregate":"views-by-os""#))
            .count()
            > 10
    );

    // Read back through the CLI and the API.
    let mut c = kappa(dir.path());
    c.args([
        "query",
        "--aggregate",
        "views-by-os",
        "--size",
        "1m",
        "--format",
        "json",
    ]);
    let q: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let windows = q["windows"].as_array().unwrap();
    assert!(
        !windows.is_empty() && windows.iter().all(|w| w["size"] == "1m"),
        "{q}"
    );
    let lines_1m = v2
        .iter()
        .filter(|l| l.contains(r#""aggregate":"views-by-os","size":"1m""#))
        .count();
    let rows: usize = windows
        .iter()
        .map(|w| w["rows"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows, lines_1m);
    let mut c = kappa(dir.path());
    c.args(["query", "--aggregate", "nope"]);
    let o = c.output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("big-tickets, campaign-sales, views-by-os"),
        "{err}"
    );

    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.get("/api/windows?aggregate=views-by-os&size=1m");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["windows"], q["windows"]);
    let (status, body) = server.get("/api/windows?aggregate=nope");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("views-by-os"), "{body}");
    // A version's size counts its declared windows: v2 holds v1's rows and theirs.
    let (status, body) = server.get("/api/versions");
    assert_eq!(status, 200, "{body}");
    let versions: Value = serde_json::from_str(&body).unwrap();
    let size = |name: &str| {
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["size_bytes"].as_u64())
            .unwrap()
    };
    assert!(size("v2") > size("v1") + 1000, "{body}");
}

#[test]
fn a_bad_declaration_stops_start_up_with_one_line_naming_the_aggregate_and_the_field() {
    let dir = temp();
    for (text, want) in [
        (
            "[[aggregates]]\nname = \"x\"\nmeasures = [\"avg(price)\"]\nsizes = [\"1m\"]\n",
            r#"aggregate "x": measures: "avg(price)" is not"#,
        ),
        (
            "[[aggregates]]\nname = \"y\"\ngroup-by = [\"device..os\"]\nmeasures = [\"count\"]\nsizes = [\"1m\"]\n",
            r#"aggregate "y": group-by:"#,
        ),
        (
            "[[aggregates]]\nname = \"top_searches\"\nmeasures = [\"count\"]\nsizes = [\"1m\"]\n",
            r#"aggregate "top_searches": name: a built-in aggregate has it"#,
        ),
        (
            "[[aggregates]]\nname = \"p\"\nstream = \"clicks\"\ntypes = [\"view\"]\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n",
            r#"aggregate "p": types: clicks have no event types"#,
        ),
        (
            "[[aggregates]]\nname = \"r\"\nstream = \"reviews\"\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n",
            r#"aggregate "r": stream "reviews": declared aggregates read "events" or "clicks""#,
        ),
        (
            "[clicks]\ntime-format = \"%H:%M\"\n",
            r#"clicks.time-format: "%H:%M" does not read a whole date and time"#,
        ),
    ] {
        let cfg = write_config(dir.path(), text);
        let mut c = kappa(dir.path());
        c.arg("--config").arg(&cfg).args(RUN_DRAIN);
        let o = c.output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn declared_windows_are_the_same_after_sigkills_at_random_moments() {
    let seed: u64 = std::env::var("KAPPA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set KAPPA_CRASH_SEED to reproduce)");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let reference = temp();
    let jsonl = generate(
        reference.path(),
        &[
            "--events",
            "100000",
            "--seed",
            "12",
            "--duplicate-share",
            "0.05",
            "--disorder",
            "10s",
            "--sim-rate",
            "2",
        ],
    );
    produce_lines(reference.path(), &jsonl);
    let crashed = temp();
    copy_dir(&reference.path().join("log"), &crashed.path().join("log"));
    // The built-in windows are only 10 s long, so the shop's core alone would resume far
    // later than the declared hour windows need: the positions must be the earlier of both.
    let conf = temp();
    let cfg = write_config(
        conf.path(),
        &format!("[pipeline]\nwindow-sizes = [\"10s\"]\n{DECLARED}"),
    );
    let env = [
        ("KAPPA_PIPELINE__BATCH_RECORDS", "2000"),
        ("KAPPA_PIPELINE__COMMIT_INTERVAL", "5ms"),
    ];
    let t0 = std::time::Instant::now();
    let mut c = kappa(reference.path());
    c.arg("--config").arg(&cfg).args(RUN_DRAIN).envs(env);
    ok(c);
    let run_ms = u64::try_from(t0.elapsed().as_millis()).unwrap().max(50);
    let expected = export_version(reference.path(), "v1");
    assert_eq!(declared_of(&expected), model(&jsonl));

    kill_bounded_runs(
        5,
        run_ms,
        &mut rng,
        || {
            let mut c = kappa(crashed.path());
            c.arg("--config").arg(&cfg).envs(env);
            c
        },
        || std::fs::remove_file(crashed.path().join("kappa.redb")).unwrap(),
    );
    run_drain(crashed.path(), &["--config", cfg.to_str().unwrap()]);
    let got = export_version(crashed.path(), "v1");
    assert!(
        got == expected,
        "results differ after 5 SIGKILLs (seed {seed})"
    );
    // The rollups written through the kills add up to the model's windows.
    let want = model(&jsonl);
    let starts = || want.keys().map(|k| ms(&k.2));
    let hour = 3_600_000;
    let from = (starts().min().unwrap() + hour - 1).div_euclid(hour) * hour;
    let to = starts().max().unwrap().div_euclid(hour) * hour;
    for (name, size) in [("views-by-os", "10s"), ("campaign-sales", "1h")] {
        let v = query_total(crashed.path(), name, from, to);
        assert!(v["buckets"]["six_hours"].as_u64() > Some(0), "{v}");
        assert_eq!(
            total_rows(&v),
            model_total(&want, name, size, from, to),
            "{name} (seed {seed})"
        );
    }
}

/// Runs `cfg` to the end in `dir` (the default lateness bound), and in `wide` (a copy of
/// its log) with a lateness bound of a day, what a correction with `--max-delay 1d` gives;
/// returns the late events `dir`'s run set aside.
fn run_then_wide(dir: &Path, wide: &Path, cfg: &Path) -> u64 {
    let mut c = kappa(dir);
    c.arg("--config").arg(cfg).args(RUN_DRAIN);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let mut c = kappa(wide);
    c.arg("--config")
        .arg(cfg)
        .args(RUN_DRAIN)
        .env("KAPPA_PIPELINE__MAX_DELAY", "1d");
    ok(c);
    counts(&out)[1]
}

#[test]
fn an_in_place_correction_rewrites_the_declared_windows_too() {
    let dir = temp();
    let mut c = kappa(dir.path());
    c.args(["produce", "--rate", "0", "--events", "30000", "--seed", "3"])
        .args(["--late-share", "0.05"]);
    ok(c);
    let wide = temp();
    copy_dir(&dir.path().join("log"), &wide.path().join("log"));
    let cfg = write_config(dir.path(), DECLARED);
    let declared_lines = |d: &Path| -> Vec<String> {
        export_version(d, "v1")
            .into_iter()
            .filter(|l| l.contains(r#""key":{"#))
            .collect()
    };
    let late = run_then_wide(dir.path(), wide.path(), &cfg);
    assert!(late > 500, "late events: {late}");
    let want = declared_lines(wide.path());
    let before = declared_lines(dir.path());
    assert_ne!(before, want, "the late events change windows");
    let mut c = kappa(dir.path());
    c.args(["replay", "--from", "earliest", "--max-delay", "1d"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("completed"), "{out}");
    assert_eq!(declared_lines(dir.path()), want);

    // The correction's recorded diff lists the declared windows it changed, with rows.
    let windows = |lines: &[String]| -> BTreeMap<String, Vec<String>> {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            let at = format!("{} {} {}", v["aggregate"], v["size"], v["window_start"]);
            by.entry(at).or_default().push(l.clone());
        }
        by
    };
    let (old, new) = (windows(&before), windows(&want));
    let changed = old
        .keys()
        .chain(new.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .count();
    assert!(changed > 0);
    let mut c = kappa(dir.path());
    c.args(["replay", "show", "1", "--format", "json"]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let d = &v["diff"]["declared"];
    assert_eq!(d["differing_count"], changed, "{d}");
    assert!(!d["rows"].as_array().unwrap().is_empty(), "{d}");
}

#[test]
fn a_range_total_adds_up_the_windows_exactly_and_refuses_what_does_not_add_up() {
    let dir = temp();
    let jsonl = generate(
        dir.path(),
        &["--events", "30000", "--seed", "13", "--disorder", "10s"],
    );
    produce_lines(dir.path(), &jsonl);
    let text = format!(
        "{DECLARED}\n[[aggregates]]\nname = \"shoppers\"\ngroup-by = [\"product_id\"]\nmeasures = [\"count\", \"count_distinct(user_id)\"]\nsizes = [\"10s\"]\n"
    );
    let cfg = write_config(dir.path(), &text);
    let mut c = kappa(dir.path());
    c.arg("--config").arg(&cfg).args(RUN_DRAIN);
    ok(c);

    // The model's 10 s windows of views-by-os, added up by key over [from, to).
    let want = model(&jsonl);
    let starts: Vec<i64> = want
        .keys()
        .filter(|k| k.0 == "views-by-os" && k.1 == "10s")
        .map(|k| ms(&k.2))
        .collect();
    let (first, last) = (*starts.iter().min().unwrap(), *starts.iter().max().unwrap());
    let (from, to) = (first + 10_000, last);
    assert!(
        to - from >= 20_000,
        "a range of several windows: {first}..{last}"
    );
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for ((name, size, start, key), (events, _)) in &want {
        let t = ms(start);
        if name == "views-by-os" && size == "10s" && (from..to).contains(&t) {
            *totals.entry(key[0].clone()).or_default() += events;
        }
    }
    let iso = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let total = |name: &str, from: i64, to: i64| {
        let mut c = kappa(dir.path());
        c.args(["query", "--aggregate", name, "--total", "--format", "json"])
            .args(["--from", &iso(from), "--to", &iso(to)]);
        c.output().unwrap()
    };
    let o = total("views-by-os", from, to);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: BTreeMap<String, u64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["events"], r["count"], "{r}");
            (
                part(r["key"].get("device.os")),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!totals.is_empty());
    assert_eq!(got, totals, "{v}");
    assert_eq!(v["final_to"], iso(to), "{v}");

    // Through the API too.
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.get(&format!(
        "/api/windows?aggregate=views-by-os&total=true&from={}&to={}",
        iso(from),
        iso(to)
    ));
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["rows"], v["rows"]);
    let (status, body) = server.get("/api/windows?aggregate=shoppers&total=true&from=0&to=10000");
    assert_eq!(status, 400, "{body}");
    drop(server);

    // What does not add up is refused in one line.
    for (name, from, to, want) in [
        (
            "shoppers",
            from,
            to,
            "count_distinct(user_id) does not add up",
        ),
        (
            "views-by-os",
            from + 1000,
            to,
            "on a boundary of one of its window sizes (10s, 1m)",
        ),
    ] {
        let o = total(name, from, to);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(want) && err.trim().lines().count() == 1,
            "{err}"
        );
    }
}

/// The measures of [`DECLARED`]'s aggregates, and how each combines.
fn measures_of(name: &str) -> &'static [&'static str] {
    match name {
        "views-by-os" => &["count"],
        "campaign-sales" => &["count", "sum(price)", "min(price)", "max(price)"],
        _ => &["count", "max(price)"],
    }
}

/// Rows by key: (events, measures in hundredths or counts).
type Total = BTreeMap<Vec<String>, (u64, Vec<Option<i128>>)>;

/// The model's windows of `name` and `size` starting in `[from, to)`, added up by key.
fn model_total(want: &Windows, name: &str, size: &str, from: i64, to: i64) -> Total {
    let mut out = Total::new();
    for ((n, s, start, key), (events, values)) in want {
        if n != name || s != size || !(from..to).contains(&ms(start)) {
            continue;
        }
        let row = out
            .entry(key.clone())
            .or_insert_with(|| (0, vec![None; values.len()]));
        row.0 += events;
        for ((x, y), m) in row.1.iter_mut().zip(values).zip(measures_of(name)) {
            *x = match (*x, *y) {
                (Some(a), Some(b)) if m.starts_with("min") => Some(a.min(b)),
                (Some(a), Some(b)) if m.starts_with("max") => Some(a.max(b)),
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
    out
}

/// `kappa query --aggregate NAME --total` over `[from, to)` in `dir`, as JSON.
fn query_total(dir: &Path, name: &str, from: i64, to: i64) -> Value {
    let fmt = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut c = kappa(dir);
    c.args(["query", "--aggregate", name, "--total", "--format", "json"])
        .args(["--from", &fmt(from), "--to", &fmt(to)]);
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

/// A `--total` answer's rows, as [`model_total`]'s.
fn total_rows(v: &Value) -> Total {
    let name = v["aggregate"].as_str().unwrap();
    (v["rows"].as_array().unwrap().iter())
        .map(|r| {
            let key = (r["key"].as_object().unwrap().values())
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            let values = (measures_of(name).iter())
                .map(|m| match &r[*m] {
                    Value::Null => None,
                    n if *m == "count" => Some(i128::from(n.as_u64().unwrap())),
                    n => Some(hundredths(&n.to_string())),
                })
                .collect();
            (key, (r["events"].as_u64().unwrap(), values))
        })
        .collect()
}

#[test]
fn range_totals_read_rollups_in_the_zone_exactly_also_after_an_in_place_correction() {
    // Nine days of events from Monday 00:00 in Seoul, 5 % of them late.
    let dir = temp();
    let jsonl = generate(
        dir.path(),
        &[
            "--events",
            "40000",
            "--seed",
            "29",
            "--sim-rate",
            "0.05",
            "--start",
            "2026-11-22T15:00:00Z",
            "--late-share",
            "0.05",
        ],
    );
    produce_lines(dir.path(), &jsonl);
    let wide = temp();
    copy_dir(&dir.path().join("log"), &wide.path().join("log"));
    let cfg = write_config(
        dir.path(),
        &format!("[rollups]\ntime-zone = \"Asia/Seoul\"\n{DECLARED}"),
    );
    // With a lateness bound of a day, `wide` has every event, as the model.
    let late = run_then_wide(dir.path(), wide.path(), &cfg);
    assert!(late > 100, "late events: {late}");
    let want = model_in(&jsonl, 9);
    assert_eq!(declared_of(&export_version(wide.path(), "v1")), want);

    // Ranges from whole weeks in Seoul down to 10 s windows at their ends.
    let monday = ms("2026-11-22T15:00:00Z");
    let (hour, day) = (3_600_000, 86_400_000);
    let ranges = [
        ("views-by-os", "10s", monday, monday + 7 * day, "week"),
        (
            "views-by-os",
            "10s",
            monday + 10_000,
            monday + 8 * day + 20_000,
            "day",
        ),
        (
            "views-by-os",
            "10s",
            monday - day,
            monday + 30 * day,
            "week",
        ),
        (
            "campaign-sales",
            "1h",
            monday + 5 * hour,
            monday + 2 * day + 7 * hour,
            "six_hours",
        ),
        ("campaign-sales", "1h", monday, monday + 9 * day, "week"),
        (
            "big-tickets",
            "1m",
            monday + 90 * 60_000,
            monday + 3 * day + 60_000,
            "day",
        ),
    ];
    let mut changed = 0;
    let mut before = Vec::new();
    for &(name, size, from, to, unit) in &ranges {
        let v = query_total(wide.path(), name, from, to);
        assert!(
            v["buckets"][unit].as_u64() > Some(0),
            "read from {unit}s: {v}"
        );
        let rows = total_rows(&v);
        assert!(!rows.is_empty(), "{v}");
        assert_eq!(rows, model_total(&want, name, size, from, to), "{name} {v}");
        before.push(total_rows(&query_total(dir.path(), name, from, to)));
    }
    // The correction rewrites the windows of its range and every rollup holding them.
    let mut c = kappa(dir.path());
    c.args(["replay", "--from", "earliest", "--max-delay", "1d"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("completed"), "{out}");
    for (&(name, size, from, to, _), old) in ranges.iter().zip(&before) {
        let rows = total_rows(&query_total(dir.path(), name, from, to));
        changed += usize::from(&rows != old);
        assert_eq!(
            rows,
            model_total(&want, name, size, from, to),
            "{name} corrected"
        );
    }
    assert!(changed > 0, "the late events change totals");
}

#[test]
fn a_promotion_gate_counts_the_declared_windows_of_the_aggregates_both_versions_declare() {
    let dir = temp();
    produce(dir.path(), 20_000, 5);
    let cfg = write_config(dir.path(), DECLARED);
    let mut c = kappa(dir.path());
    c.arg("--config").arg(&cfg).args(RUN_DRAIN);
    ok(c);
    let replay = |version: &str, text: &str, gate: &str| {
        let file = dir.path().join(format!("{version}.toml"));
        std::fs::write(&file, text).unwrap();
        let mut c = kappa(dir.path());
        c.args(["replay", "--from", "earliest", "--version", version])
            .arg("--config")
            .arg(&file)
            .args(["--promote-if", gate]);
        c.output().unwrap()
    };
    let both = "max-changed-windows=0,max-changed-declared-windows=0";
    // A new aggregate's windows are no change to the ones both declare.
    let added = format!(
        "{DECLARED}\n[[aggregates]]\nname = \"views-by-type\"\ntypes = [\"view\"]\ngroup-by = [\"device.type\"]\nmeasures = [\"count\"]\nsizes = [\"1m\"]\n"
    );
    let o = replay("v2", &added, both);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("promoted"), "{out}");
    assert!(!out.contains("not promoted"), "{out}");
    // A stricter filter changes big-tickets' windows: refused, in one line, exit 1.
    let stricter = DECLARED.replace("ge = 100", "ge = 200");
    assert_ne!(stricter, DECLARED);
    let o = replay("v3", &stricter, both);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("not promoted") && out.contains("declared windows differ (at most 0 allowed)"),
        "{out}"
    );
    // The built-in windows alone agree: that gate passes the same change.
    let o = replay("v4", &stricter, "max-changed-windows=0");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !out.contains("not promoted"), "{out}");
}
