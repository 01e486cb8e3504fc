//! Crash safety on the real binary: SIGKILL `kappa run` at random moments, restart, and
//! compare the final results with an uninterrupted run, byte for byte — over every stream
//! at once (events with session documents joined with the catalogue, and reviews,
//! committed in the same transactions).

mod common;

use std::time::Instant;

use common::*;
use rand::SeedableRng;

#[test]
fn sigkill_at_random_moments_then_restart_gives_identical_results() {
    let seed: u64 = std::env::var("KAPPA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set KAPPA_CRASH_SEED to reproduce)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let reference = temp();
    produce(reference.path(), 200_000, 7);
    // The catalogue, and session documents whose purchases it completes.
    let mut c = kappa(reference.path());
    c.args(["produce", "--stream", "products", "--seed", "7"]);
    ok(c);
    let mut c = kappa(reference.path());
    c.args(["produce", "--rate", "0", "--events", "20000", "--seed", "8"])
        .args(["--session-docs", "0.2"]);
    ok(c);
    // Reviews over the same 200 s of event time, with duplicates and malformed ones.
    let mut c = kappa(reference.path());
    c.args(review_args(10_000, 7));
    ok(c);
    let crashed = temp();
    copy_dir(&reference.path().join("log"), &crashed.path().join("log"));
    copy_dir(
        &reference.path().join("streams"),
        &crashed.path().join("streams"),
    );

    // Small batches and frequent commits, so that kills land between many commits.
    let env = [
        ("KAPPA_PIPELINE__BATCH_RECORDS", "2000"),
        ("KAPPA_PIPELINE__COMMIT_INTERVAL", "5ms"),
    ];

    // Declared aggregates too (issue 20): their core follows the shop's across restarts.
    let conf = temp();
    let cfg = conf.path().join("declared.toml");
    std::fs::write(
        &cfg,
        r#"
[[aggregates]]
name = "views-by-os"
types = ["view"]
group-by = ["device.os"]
measures = ["count"]
sizes = ["10s", "1d"]

[[aggregates]]
name = "sales-by-referrer"
types = ["purchase"]
group-by = ["context.referrer", "day_of_week()"]
measures = ["count", "sum(price)", "max(price)"]
sizes = ["1m"]
"#,
    )
    .unwrap();

    let t0 = Instant::now();
    let out = {
        let mut c = kappa(reference.path());
        c.arg("--config").arg(&cfg).args(RUN_DRAIN).envs(env);
        String::from_utf8(ok(c).stdout).unwrap()
    };
    let run_ms = u64::try_from(t0.elapsed().as_millis()).unwrap().max(50);
    let expected = export(reference.path());
    assert!(
        expected.len() > 10_000,
        "the reference run produced results"
    );
    let [accepted, late, dups, invalid] = counts(&out);
    assert!(accepted > 0 && late > 0 && dups > 0 && invalid > 0, "{out}");
    let text = String::from_utf8_lossy(&expected);
    assert!(
        text.contains(r#""aggregate":"rating_histogram""#)
            && text.contains(r#""aggregate":"review_aspects""#),
        "the reference run has review windows"
    );
    assert!(out.contains("reviews: 10000 read"), "{out}");
    for name in ["views-by-os", "sales-by-referrer"] {
        assert!(
            text.contains(&format!(r#""aggregate":"{name}""#)),
            "the reference run has {name} windows"
        );
    }

    let kills = 6;
    kill_bounded_runs(
        kills,
        run_ms,
        &mut rng,
        || {
            let mut c = kappa(crashed.path());
            c.arg("--config").arg(&cfg).envs(env);
            c
        },
        || std::fs::remove_file(crashed.path().join("kappa.redb")).unwrap(),
    );
    let out = run_drain(crashed.path(), &["--config", cfg.to_str().unwrap()]);
    let got = export(crashed.path());
    assert!(
        got == expected,
        "results differ after {kills} SIGKILLs (seed {seed}): {} vs {} bytes",
        got.len(),
        expected.len()
    );

    // Dead letters are keyed by position: no duplicates after restarts.
    let dl = |dir: &std::path::Path, stream: &str| {
        let mut c = kappa(dir);
        c.args(["dead-letters", "--limit", "10000", "--format", "json"])
            .args(["--stream", stream]);
        let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
        v["dead_letters"].as_array().unwrap().len()
    };
    assert_eq!(dl(crashed.path(), "events"), dl(reference.path(), "events"));
    assert_eq!(dl(reference.path(), "events") as u64, invalid);
    let review_dead = dl(reference.path(), "reviews");
    assert!(review_dead > 0);
    assert_eq!(dl(crashed.path(), "reviews"), review_dead);
    let _ = out;
}
