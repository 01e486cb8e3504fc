//! Crash safety on the real binary: SIGKILL `kappa run` at random moments, restart, and
//! compare the final results with an uninterrupted run, byte for byte.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

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
    let crashed = temp();
    copy_dir(&reference.path().join("log"), &crashed.path().join("log"));

    // Small batches and frequent commits, so that kills land between many commits.
    let env = [
        ("KAPPA_PIPELINE__BATCH_RECORDS", "2000"),
        ("KAPPA_PIPELINE__COMMIT_INTERVAL", "5ms"),
    ];

    let t0 = Instant::now();
    let out = {
        let mut c = kappa(reference.path());
        c.args([
            "run",
            "--until-caught-up",
            "--drain",
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env);
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

    let mut kills = 0;
    let mut attempts = 0;
    while kills < 6 {
        attempts += 1;
        assert!(attempts < 200, "could not kill a running pipeline 6 times");
        let mut c = kappa(crashed.path());
        c.args([
            "run",
            "--until-caught-up",
            "--drain",
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        // Anywhere in a run, weighted towards its later part where windows are final.
        let wait = Duration::from_millis(rng.random_range(run_ms / 10..run_ms));
        let t = Instant::now();
        while t.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        } else {
            // It finished before the kill: start over from an empty store to keep killing.
            std::fs::remove_file(crashed.path().join("kappa.redb")).unwrap();
        }
    }
    let out = run_drain(crashed.path(), &[]);
    let got = export(crashed.path());
    assert!(
        got == expected,
        "results differ after {kills} SIGKILLs (seed {seed}): {} vs {} bytes",
        got.len(),
        expected.len()
    );

    // Dead letters are keyed by position: no duplicates after restarts.
    let dl = |dir: &std::path::Path| {
        let mut c = kappa(dir);
        c.args(["dead-letters", "--limit", "10000", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
        v["dead_letters"].as_array().unwrap().len()
    };
    assert_eq!(dl(crashed.path()), dl(reference.path()));
    assert_eq!(dl(reference.path()) as u64, invalid);
    let _ = out;
}
