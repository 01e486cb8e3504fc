//! kappa against a real Apache Kafka broker (KRaft, one node on 127.0.0.1, one per test
//! binary; some tests start their own to stop and restart it).

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::*;
use rand::SeedableRng;
use serde_json::Value;

/// One broker for the whole test binary; each test uses its own topic and group.
fn shared() -> &'static (std::sync::Mutex<Broker>, String) {
    static B: OnceLock<(std::sync::Mutex<Broker>, String)> = OnceLock::new();
    B.get_or_init(|| {
        let b = Broker::start();
        let addr = b.bootstrap.clone();
        (std::sync::Mutex::new(b), addr)
    })
}

/// The shared broker's bootstrap address.
fn broker() -> &'static str {
    &shared().1
}

/// Runs a Kafka command-line tool against the shared broker (see [`Broker::tool`]).
fn tool(main: &str, args: &[&str]) -> String {
    shared()
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tool(main, args)
}

/// The Kafka tests run one at a time: group joins and session timeouts are wall-clock
/// bound, and two cores shared by five broker-heavy tests make them flaky.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Short group session so that joins and restarts are quick.
const KAFKA_ENV: [(&str, &str); 2] = [
    ("KAPPA_KAFKA__SESSION_TIMEOUT", "3s"),
    ("KAPPA_KAFKA__STATISTICS_INTERVAL", "500ms"),
];

fn kk(dir: &std::path::Path, topic: &str) -> Command {
    let mut c = kappa(dir);
    c.args(["--kafka", broker(), "--topic", topic])
        .envs(KAFKA_ENV)
        .env("KAPPA_KAFKA__GROUP_ID", format!("g-{topic}"));
    c
}

/// Creates `topic` with 4 partitions through `kappa topics apply`.
fn create_topic(topic: &str) {
    create_topic_with(topic, 4);
}

/// Creates `topic` with `partitions` partitions through `kappa topics apply`.
fn create_topic_with(topic: &str, partitions: u32) {
    let specs = temp();
    std::fs::write(specs.path().join("t.toml"), format!("name = \"{topic}\"\npartitions = {partitions}\nreplication-factor = 1\n[config]\n\"retention.ms\" = \"-1\"\n")).unwrap();
    let mut c = kk(specs.path(), topic);
    c.args(["topics", "apply", "--dir"]).arg(specs.path());
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        out.contains("created") || out.contains("up to date"),
        "{out}"
    );
}

/// A fixed first event time for events produced into both a topic and an embedded log:
/// `--start auto` continues after what an embedded log holds, and a topic is not read back.
const FIXED_START: [&str; 2] = ["--start", "2026-11-23T00:00:00Z"];

/// The same events into the topic and into an embedded log.
fn produce_both(kdir: &std::path::Path, edir: &std::path::Path, topic: &str, n: u64, seed: u64) {
    let mut c = kk(kdir, topic);
    c.args(produce_args(n, seed)).args(FIXED_START);
    ok(c);
    let mut c = kappa(edir);
    c.args(produce_args(n, seed)).args(FIXED_START);
    ok(c);
}

fn drain_kafka(dir: &std::path::Path, topic: &str) -> String {
    let mut c = kk(dir, topic);
    c.args(RUN_DRAIN);
    String::from_utf8(ok(c).stdout).unwrap()
}

fn new_records(s: &Server) -> u64 {
    let v: Value = serde_json::from_str(&s.get("/api/status").1).unwrap_or_default();
    ["accepted", "late", "duplicates", "invalid"]
        .iter()
        .map(|k| v[k].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn results_over_kafka_equal_the_embedded_log_run() {
    let _serial = serial();
    let topic = "t-equal";
    create_topic(topic);
    // The reviews stream too: its own topic, read next to the events.
    let reviews = "t-equal-reviews";
    create_topic(reviews);
    let (kdir, edir) = (temp(), temp());
    produce_both(kdir.path(), edir.path(), topic, 40_000, 21);
    let review_args = review_args(2000, 21);
    let mut c = kk(kdir.path(), topic);
    c.args(&review_args)
        .args(FIXED_START)
        .env("KAPPA_KAFKA__REVIEWS_TOPIC", reviews);
    ok(c);
    let mut c = kappa(edir.path());
    c.args(&review_args).args(FIXED_START);
    ok(c);
    // And the clicks of Flink's example, counted by the aggregate declared on them.
    let clicks = "t-equal-clicks";
    create_topic(clicks);
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let clicks_cfg = examples.join("clicks.toml");
    let clicks_input = examples.join("clicks.jsonl");
    let mut c = kk(kdir.path(), topic);
    c.args(["produce", "--stream", "clicks", "--input"])
        .arg(&clicks_input)
        .env("KAPPA_KAFKA__CLICKS_TOPIC", clicks);
    ok(c);
    let mut c = kappa(edir.path());
    c.args(["produce", "--stream", "clicks", "--input"])
        .arg(&clicks_input);
    ok(c);
    let mut c = kk(kdir.path(), topic);
    c.arg("--config")
        .arg(&clicks_cfg)
        .args(RUN_DRAIN)
        .env("KAPPA_KAFKA__REVIEWS_TOPIC", reviews)
        .env("KAPPA_KAFKA__CLICKS_TOPIC", clicks);
    let kout = String::from_utf8(ok(c).stdout).unwrap();
    let eout = run_drain(edir.path(), &["--config", clicks_cfg.to_str().unwrap()]);
    assert!(
        kout.contains("clicks: 7 read, 6 accepted, 0 late, 0 duplicates, 1 invalid"),
        "{kout}"
    );
    let k = counts(&kout);
    let e = counts(&eout);
    assert_eq!(k, e);
    assert_eq!(k.iter().sum::<u64>(), 40_000);
    assert!(kout.contains("reviews: 2000 read"), "{kout}");
    let summary = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("reviews:"))
            .map(str::to_string)
    };
    assert_eq!(summary(&kout), summary(&eout));
    let kx = export(kdir.path());
    assert!(String::from_utf8_lossy(&kx).contains("\"aggregate\":\"review_aspects\""));
    assert!(String::from_utf8_lossy(&kx).contains("\"aggregate\":\"page-views\""));
    assert!(kx == export(edir.path()), "exports differ");
}

#[test]
fn stop_and_restart_resume_from_the_store_without_double_counting() {
    let _serial = serial();
    let topic = "t-restart";
    create_topic(topic);
    let (kdir, edir) = (temp(), temp());
    produce_both(kdir.path(), edir.path(), topic, 20_000, 1);
    let s = Server::start_env(kdir.path(), &["--idle-timeout", "0s"], &kafka_env(topic));
    s.wait_for(|s| new_records(s) == 20_000, "20000 records read");
    assert!(s.interrupt().success());
    produce_both(kdir.path(), edir.path(), topic, 10_000, 2);
    let s = Server::start_env(kdir.path(), &["--idle-timeout", "0s"], &kafka_env(topic));
    s.wait_for(|s| new_records(s) == 10_000, "the 10000 new records read");
    // Lag tooling sees the committed positions; readiness holds.
    assert_eq!(s.get("/readyz").0, 200);
    assert!(s.interrupt().success());
    let k = counts(&drain_kafka(kdir.path(), topic));
    assert_eq!(
        k.iter().sum::<u64>(),
        0,
        "nothing new, nothing counted twice"
    );
    run_drain(edir.path(), &[]);
    assert!(
        export(kdir.path()) == export(edir.path()),
        "exports differ after a restart"
    );
}

fn kafka_env(topic: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = KAFKA_ENV
        .iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect();
    v.push(("KAPPA_KAFKA__BROKERS".into(), broker().to_string()));
    v.push(("KAPPA_KAFKA__TOPIC".into(), topic.to_string()));
    v.push(("KAPPA_KAFKA__GROUP_ID".into(), format!("g-{topic}")));
    v
}

#[test]
fn sigkill_over_kafka_then_restart_gives_identical_results() {
    let _serial = serial();
    let topic = "t-crash";
    create_topic(topic);
    let (kdir, edir) = (temp(), temp());
    produce_both(kdir.path(), edir.path(), topic, 200_000, 5);
    run_drain(edir.path(), &[]);
    let expected = export(edir.path());
    let seed: u64 = rand::random();
    eprintln!("kafka crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env = [
        ("KAPPA_PIPELINE__BATCH_RECORDS", "1000"),
        ("KAPPA_PIPELINE__COMMIT_INTERVAL", "5ms"),
    ];
    // How long one bounded run over Kafka takes here, to spread the kills over it.
    let probe = temp();
    let t0 = Instant::now();
    {
        let mut c = kk(probe.path(), topic);
        c.args(RUN_DRAIN).envs(env);
        ok(c);
    }
    let run_ms = u64::try_from(t0.elapsed().as_millis()).unwrap().max(100);
    let kills = 5;
    kill_bounded_runs(
        kills,
        run_ms,
        &mut rng,
        || {
            let mut c = kk(kdir.path(), topic);
            c.envs(env);
            c
        },
        || std::fs::remove_file(kdir.path().join("kappa.redb")).unwrap(),
    );
    drain_kafka(kdir.path(), topic);
    assert!(
        export(kdir.path()) == expected,
        "results differ after {kills} SIGKILLs over Kafka (seed {seed})"
    );
}

#[test]
fn two_processes_in_one_group_split_the_partitions() {
    let _serial = serial();
    let topic = "t-group";
    create_topic(topic);
    let (a, b, e) = (temp(), temp(), temp());
    let mut env = kafka_env(topic);
    // Assignments and restores in the failure message.
    env.push(("RUST_LOG".into(), "info".into()));
    let sa = Server::start_env(a.path(), &["--idle-timeout", "0s"], &env);
    let sb = Server::start_env(b.path(), &["--idle-timeout", "0s"], &env);
    produce_both(a.path(), e.path(), topic, 20_000, 9);
    // (owned partition, position, end offset) per member, from its status.
    let owned = |s: &Server| -> Vec<(u64, u64, u64)> {
        let v: Value = serde_json::from_str(&s.get("/api/status").1).unwrap_or_default();
        v["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["owned"] == true)
                    .map(|p| {
                        let n = |k: &str| p[k].as_u64().unwrap();
                        (n("partition"), n("position"), n("end_offset"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Done when the members own disjoint partitions covering the topic and each has
    // read its own to their end (the ends add up to every record produced). The status
    // counters may count more than 20,000: a member that loses a partition in a
    // rebalance drops its uncommitted work on it, and the next owner reads it again.
    let t = Instant::now();
    loop {
        let (oa, ob) = (owned(&sa), owned(&sb));
        let mut parts: Vec<u64> = oa.iter().chain(&ob).map(|p| p.0).collect();
        parts.sort_unstable();
        let read: u64 = oa.iter().chain(&ob).map(|p| p.1).sum();
        let at_end = oa.iter().chain(&ob).all(|p| p.1 == p.2);
        if !oa.is_empty() && !ob.is_empty() && parts == [0, 1, 2, 3] && at_end && read == 20_000 {
            assert!(
                new_records(&sa) + new_records(&sb) >= 20_000,
                "the members counted fewer records than they read"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the members to split the partitions and read every record once: {oa:?} {ob:?}\n{}\n{}",
            sa.stderr_text(),
            sb.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn broker_loss_makes_kappa_unready_without_crashing_and_it_recovers() {
    let _serial = serial();
    // Its own broker: this test stops and restarts it.
    let mut own = Broker::start();
    let topic = "t-loss";
    let dir = temp();
    let specs = temp();
    std::fs::write(
        specs.path().join("t.toml"),
        format!("name = \"{topic}\"\npartitions = 2\nreplication-factor = 1\n"),
    )
    .unwrap();
    let apply = |bootstrap: &str| {
        let mut c = kappa(dir.path());
        c.args(["--kafka", bootstrap, "topics", "apply", "--dir"])
            .arg(specs.path());
        ok(c);
    };
    apply(&own.bootstrap);
    let produce = |bootstrap: &str, n: &str| {
        let mut c = kappa(dir.path());
        c.args([
            "--kafka", bootstrap, "--topic", topic, "produce", "--rate", "0", "--events", n,
        ]);
        ok(c);
    };
    produce(&own.bootstrap, "2000");
    let env = vec![
        ("KAPPA_KAFKA__BROKERS".to_string(), own.bootstrap.clone()),
        ("KAPPA_KAFKA__TOPIC".to_string(), topic.to_string()),
        ("KAPPA_KAFKA__SESSION_TIMEOUT".to_string(), "3s".to_string()),
    ];
    let mut s = Server::start_env(dir.path(), &["--idle-timeout", "0s"], &env);
    s.wait_for(
        |s| new_records(s) == 2000 && s.get("/readyz").0 == 200,
        "the first 2000 records",
    );
    own.stop();
    s.wait_for(
        |s| s.get("/readyz").0 == 503,
        "/readyz to turn 503 while the broker is down",
    );
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "no crash while the broker is away"
    );
    // Down longer than the group session (3 s): the member loses its partitions; still no
    // crash, still not ready.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "kappa exited while the broker was down"
        );
        assert_eq!(s.get("/readyz").0, 503);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The broker comes back with its data: kappa rejoins (a new member: its session
    // expired), resumes from its store and reads only what is new.
    own.start_again();
    s.wait_for(
        |s| s.get("/readyz").0 == 200,
        "/readyz to recover once the broker is back",
    );
    assert!(s.child.try_wait().unwrap().is_none(), "still running");
    produce(&own.bootstrap, "1000");
    s.wait_for(|s| new_records(s) >= 3000, "the 1000 new records");
    assert!(s.interrupt().success());
    // Nothing counted twice: a bounded run over the whole topic on a fresh store reads
    // every record once; kappa's results equal it.
    let fresh = temp();
    let mut c = kappa(fresh.path());
    c.args(["--kafka", &own.bootstrap, "--topic", topic])
        .args(RUN_DRAIN);
    ok(c);
    let mut c = kappa(dir.path());
    c.args(["--kafka", &own.bootstrap, "--topic", topic])
        .args(RUN_DRAIN);
    ok(c);
    assert!(
        export(dir.path()) == export(fresh.path()),
        "an outage longer than the session changed the results"
    );
}

#[test]
fn broker_unreachable_at_start_means_unready_until_it_appears() {
    let _serial = serial();
    // Learn a port, then stop the broker: kappa starts against nothing.
    let mut own = Broker::start();
    own.stop();
    let topic = "t-late-broker";
    let dir = temp();
    let env = vec![
        ("KAPPA_KAFKA__BROKERS".to_string(), own.bootstrap.clone()),
        ("KAPPA_KAFKA__TOPIC".to_string(), topic.to_string()),
        ("KAPPA_KAFKA__SESSION_TIMEOUT".to_string(), "3s".to_string()),
    ];
    let s = Server::start_env(dir.path(), &["--idle-timeout", "0s"], &env);
    let status =
        |s: &Server| serde_json::from_str::<Value>(&s.get("/api/status").1).unwrap_or_default();
    assert_eq!(s.get("/readyz").0, 503);
    assert_eq!(status(&s)["state"], "connecting");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.get("/readyz").0, 503, "still retrying, still unready");
    // The broker appears, the topic is created and filled: kappa connects and consumes.
    own.start_again();
    let specs = temp();
    std::fs::write(
        specs.path().join("t.toml"),
        format!("name = \"{topic}\"\npartitions = 2\nreplication-factor = 1\n"),
    )
    .unwrap();
    let mut c = kappa(dir.path());
    c.args(["--kafka", &own.bootstrap, "topics", "apply", "--dir"])
        .arg(specs.path());
    ok(c);
    let mut c = kappa(dir.path());
    c.args([
        "--kafka",
        &own.bootstrap,
        "--topic",
        topic,
        "produce",
        "--rate",
        "0",
        "--events",
        "1000",
    ]);
    ok(c);
    s.wait_for(
        |s| s.get("/readyz").0 == 200 && new_records(s) == 1000,
        "kappa to connect and read the 1000 records",
    );
    let err = s.stderr_text();
    assert!(
        err.contains("unreachable") || err.contains("Connection refused"),
        "a clear log line while waiting: {err}"
    );
}

#[test]
fn replays_over_kafka_rebuild_and_correct_exactly_as_on_the_embedded_log() {
    let _serial = serial();
    let topic = "t-replay";
    create_topic(topic);
    let (kdir, edir) = (temp(), temp());
    produce_both(kdir.path(), edir.path(), topic, 60_000, 23);
    let mut c = kk(kdir.path(), topic);
    c.args([
        "run",
        "--until-caught-up",
        "--window-sizes",
        "10s,1m",
        "--listen",
        "127.0.0.1:0",
    ]);
    ok(c);
    let mut c = kappa(edir.path());
    c.args([
        "run",
        "--until-caught-up",
        "--window-sizes",
        "10s,1m",
        "--listen",
        "127.0.0.1:0",
    ]);
    ok(c);
    // A new version read by explicit assignment from the beginning equals the live one.
    let mut c = kk(kdir.path(), topic);
    c.args(["replay", "--from", "earliest", "--version", "v2"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("caught-up"), "{out}");
    let v1 = export_version(kdir.path(), "v1");
    assert!(v1.len() > 100);
    assert!(
        export_version(kdir.path(), "v2") == v1,
        "v2 over Kafka differs from v1"
    );
    // An in-place correction by event time, on both logs: the same windows come out.
    for (dir, kafka) in [(kdir.path(), true), (edir.path(), false)] {
        let mut c = if kafka { kk(dir, topic) } else { kappa(dir) };
        c.args([
            "replay",
            "--from",
            "2026-11-23T00:00:20Z",
            "--to",
            "2026-11-23T00:00:50Z",
            "--max-delay",
            "15m",
        ]);
        let out = String::from_utf8(ok(c).stdout).unwrap();
        assert!(out.contains("completed"), "{out}");
    }
    assert!(
        export_version(kdir.path(), "v1") == export_version(edir.path(), "v1"),
        "in-place corrections over Kafka and the embedded log differ"
    );
    assert!(
        export_version(kdir.path(), "v1") != v1,
        "the correction changed something"
    );
}

#[test]
fn a_malformed_corpus_through_kafka_is_aggregated_or_dead_lettered_and_adds_up() {
    use common::corpus::{check_accounted, corpus, produce_corpus};
    let _serial = serial();
    let topic = "t-bad-input";
    create_topic(topic);
    let t = temp();
    let records = corpus();
    produce_corpus(kk(t.path(), topic), &records);
    check_accounted(|| kk(t.path(), topic), &records);
}

/// Environment of a worker or merger process for `topic` (its own partials topic and
/// worker group).
fn role_env(topic: &str) -> Vec<(String, String)> {
    let mut env = kafka_env(topic);
    env.push((
        "KAPPA_KAFKA__PARTIALS_TOPIC".into(),
        format!("{topic}.partials"),
    ));
    env.push(("KAPPA_KAFKA__WORKER_GROUP_ID".into(), format!("w-{topic}")));
    env.push((
        "KAPPA_KAFKA__CONTROL_TOPIC".into(),
        format!("{topic}.control"),
    ));
    env.push((
        "KAPPA_KAFKA__PRODUCTS_TOPIC".into(),
        format!("{topic}.products"),
    ));
    env.push((
        "KAPPA_KAFKA__REVIEWS_TOPIC".into(),
        format!("{topic}.reviews"),
    ));
    env.push((WINDOWS_1M_5M.0.into(), WINDOWS_1M_5M.1.into()));
    // As the single-process reference (a bounded run never uses idleness).
    env.push(("KAPPA_PIPELINE__IDLE_TIMEOUT".into(), "0s".into()));
    env
}

/// Windows short enough that resume points move on within a test (a 1-hour window would
/// keep every record of the test open, and a restart re-read everything).
const WINDOWS_1M_5M: (&str, &str) = ("KAPPA_PIPELINE__WINDOW_SIZES", "1m,5m");

fn windows_final(s: &Server) -> u64 {
    let v: Value = serde_json::from_str(&s.get("/api/status").1).unwrap_or_default();
    v["windows_finalised"].as_u64().unwrap_or(0)
}

/// Polls the merger for up to `secs` until it holds `n` final windows.
fn wait_windows(s: &Server, n: u64, secs: u64, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if windows_final(s) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what}: the merger has {} of {n} final windows after {secs} s\n{}",
        windows_final(s),
        s.stderr_text()
    );
}

#[test]
fn three_workers_and_a_merger_equal_one_process_through_kills() {
    let _serial = serial();
    let topic = "t-scale";
    create_topic_with(topic, 6);
    create_topic_with(&format!("{topic}.partials"), 6);
    create_topic_with(&format!("{topic}.control"), 1);
    create_topic_with(&format!("{topic}.products"), 1);
    // Reviews on fewer partitions than the events: their windows complete on their own.
    create_topic_with(&format!("{topic}.reviews"), 3);
    let env = role_env(topic);
    let (single, merger_dir) = (temp(), temp());
    // The catalogue, which completes the purchases of the session documents below, in
    // the workers as in the single process.
    let mut c = kk(single.path(), topic);
    c.args(["produce", "--stream", "products", "--seed", "17"])
        .envs(env.clone());
    ok(c);
    // Three parts of 40 000 records, 20 minutes of event time each, 5 % of them session
    // documents, and 1 200 reviews over the same 20 minutes, produced while the workers
    // and the merger run, so that the kills fall between open windows.
    let produce_part = |i: u32| {
        let start = format!("2026-11-23T00:{:02}:00Z", i * 20);
        let mut c = kk(single.path(), topic);
        c.args(produce_args(40_000, 17 + u64::from(i))).args([
            "--sim-rate",
            "33",
            "--session-docs",
            "0.05",
            "--start",
            &start,
        ]);
        ok(c);
        let mut c = kk(single.path(), topic);
        c.args(review_args_at(1200, 40 + u64::from(i), 1))
            .args(["--start", &start])
            .envs(env.clone());
        ok(c);
    };
    produce_part(0);
    let worker_dirs = [temp(), temp(), temp()];
    let start_worker =
        |d: &tempfile::TempDir| Server::start_env(d.path(), &["--role", "worker"], &env);
    let mut merger = Server::start_env(merger_dir.path(), &["--role", "merger"], &env);
    let mut workers: Vec<Server> = worker_dirs.iter().map(start_worker).collect();
    wait_windows(&merger, 10, 90, "the first part");
    // A worker dies: its partitions move to the other two, which resume from its last
    // commit and re-publish what it had published since.
    let victim = workers.remove(1);
    signal(&victim.child, "KILL");
    drop(victim);
    produce_part(1);
    wait_windows(&merger, 25, 90, "the second part");
    // The merger dies too, and comes back on its store.
    signal(&merger.child, "KILL");
    drop(merger);
    produce_part(2);
    merger = Server::start_env(merger_dir.path(), &["--role", "merger"], &env);
    // The reference: one process over the same topic, up to the log end (no drain: the
    // workers run live, so the same windows are final: those every partition passed).
    let mut c = kk(single.path(), topic);
    c.args(["run", "--until-caught-up", "--listen", "127.0.0.1:0"])
        .env(WINDOWS_1M_5M.0, WINDOWS_1M_5M.1)
        .env("KAPPA_KAFKA__PRODUCTS_TOPIC", format!("{topic}.products"))
        .env("KAPPA_KAFKA__REVIEWS_TOPIC", format!("{topic}.reviews"));
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let expected_windows: u64 = out
        .split_whitespace()
        .zip(out.split_whitespace().skip(1))
        .find(|(_, w)| *w == "windows")
        .and_then(|(n, _)| n.parse().ok())
        .expect("a window count");
    assert!(expected_windows > 50, "{out}");
    let expected = export(single.path());
    let expected_dead = dead_letter_count(single.path());
    let expected_review_dead = review_dead_letters(single.path());
    assert!(expected_review_dead > 0, "no invalid review: a weak test");
    // The reviews' final windows (one average_rating row each).
    let review_windows = String::from_utf8_lossy(&expected)
        .matches("\"aggregate\":\"average_rating\"")
        .count();
    assert!(review_windows > 50, "{review_windows} review windows");

    wait_windows(&merger, expected_windows, 120, "after the kills");
    poll(60, "the merger's final review windows", || {
        merger_review_windows(&merger) >= review_windows
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        windows_final(&merger),
        expected_windows,
        "no window beyond the reference"
    );
    assert_eq!(merger_review_windows(&merger), review_windows);
    // The reviews' outcome counters, from the workers' totals, as the reference counted.
    let accepted: f64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("reviews: ")?
                .split(", ")
                .nth(1)?
                .strip_suffix(" accepted")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no reviews line in {out}"));
    poll(30, "the merger's review counters", || {
        let m = merger.get("/metrics").1;
        let line = m.lines().find(|l| {
            l.starts_with("kappa_stream_records_total{")
                && l.contains("outcome=\"accepted\"")
                && l.contains("stream=\"reviews\"")
        });
        line.and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()) == Some(accepted)
    });

    // A replay into a new version across roles: the merger tells the workers (control
    // topic), they compute v2 in their own group, the merger merges it and reports it
    // caught up once it is final as far as v1. Equal to the single process's replay.
    // Starts a replay on the merger (detached) and waits up to 2 minutes for its outcome.
    let replay_on_merger = |merger: &Server, args: &[&str]| -> String {
        replay_across_roles(merger, merger_dir.path(), args, &[])
    };
    assert_eq!(
        replay_on_merger(&merger, &["--from", "earliest", "--version", "v2"]),
        "caught-up",
        "{}",
        merger.stderr_text()
    );
    // Dropped and built again under the same name: a new consumer group and new resume
    // states, nothing of the first one.
    let mut c = kappa(merger_dir.path());
    c.args(["versions", "drop", "v2"]);
    ok(c);
    assert_eq!(
        replay_on_merger(&merger, &["--from", "earliest", "--version", "v2"]),
        "caught-up",
        "{}",
        merger.stderr_text()
    );
    let products = ("KAPPA_KAFKA__PRODUCTS_TOPIC", format!("{topic}.products"));
    let mut c = kk(single.path(), topic);
    c.args(["replay", "--from", "earliest", "--version", "v2"])
        .env(WINDOWS_1M_5M.0, WINDOWS_1M_5M.1)
        .env(products.0, &products.1);
    ok(c);

    // An in-place correction across roles with a larger lateness bound (it takes in events
    // that were late live): the workers compute a scratch version to the log end and drain
    // it, the merger swaps its windows of the range into v1. Equal to the single process's
    // correction.
    let correction = [
        "--from",
        "2026-11-23T00:10:00Z",
        "--to",
        "2026-11-23T00:40:00Z",
        "--max-delay",
        "10m",
    ];
    assert_eq!(
        replay_on_merger(&merger, &correction),
        "completed",
        "{}",
        merger.stderr_text()
    );
    let mut c = kk(single.path(), topic);
    c.arg("replay")
        .args(correction)
        .env(WINDOWS_1M_5M.0, WINDOWS_1M_5M.1)
        .env(products.0, &products.1);
    ok(c);
    let corrected = export(single.path());
    assert!(
        corrected != expected,
        "the correction changed nothing: a weak test"
    );
    // Audits across roles (the workers recompute a scratch version, the merger compares
    // it with the stored rows): with the version's own lateness bound the corrected
    // windows differ, by design; with the correction's, every window is equal.
    let audit_on_merger = |extra: &[&str]| -> (bool, String) {
        let mut c = kappa(merger_dir.path());
        c.args(["audit", "--json"])
            .args(&correction[..4])
            .args(extra);
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (equal, text) = audit_on_merger(&[]);
    assert!(
        !equal && text.contains("\"result\": \"mismatched\""),
        "{text}"
    );
    let (equal, text) = audit_on_merger(&["--max-delay", "10m"]);
    assert!(
        equal && text.contains("\"result\": \"equal\""),
        "{text}\n{}",
        merger.stderr_text()
    );
    assert!(merger.interrupt().success());
    for w in workers {
        // After the kill, the survivors took over partitions at the victim's last resume
        // states (read back from the state topic).
        let log = w.stderr_text();
        assert!(!log.contains("no resume state"), "{log}");
        assert!(w.interrupt().success());
    }
    assert!(
        export(merger_dir.path()) == corrected,
        "the merger's results differ from the single process's"
    );
    let v2 = export_version(merger_dir.path(), "v2");
    assert!(v2.len() > 50, "{} lines of v2", v2.len());
    assert!(
        v2 == export_version(single.path(), "v2"),
        "the replay across roles differs from the single process's replay"
    );
    assert_eq!(dead_letter_count(merger_dir.path()), expected_dead);
    assert_eq!(review_dead_letters(merger_dir.path()), expected_review_dead);
    // A replay of the reviews alone is a single process's: refused on a merger's store.
    let mut c = kappa(merger_dir.path());
    c.args(["replay", "--stream", "reviews"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("merged from workers' partials"),
        "{err}"
    );
}

/// Starts a replay on the merger of `dir` (detached), with `env`, and waits up to 2 minutes for
/// its outcome; the workers reported progress through the merger.
fn replay_across_roles(
    merger: &Server,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(String, String)],
) -> String {
    let mut c = kappa(dir);
    c.arg("replay")
        .args(args)
        .arg("--detach")
        .envs(env.iter().cloned());
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let id = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("replay ")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no replay id in {out}"));
    let outcome = || -> String {
        let v: Value =
            serde_json::from_str(&merger.get(&format!("/api/replays/{id}")).1).unwrap_or_default();
        v["outcome"].as_str().unwrap_or_default().to_string()
    };
    let t = Instant::now();
    while outcome() == "running" && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Progress comes from the positions the workers report through the merger.
    let v: Value =
        serde_json::from_str(&merger.get(&format!("/api/replays/{id}")).1).unwrap_or_default();
    assert!(
        v["done"].as_u64().unwrap_or(0) > 0,
        "no progress reported: {v}"
    );
    outcome()
}

/// Final review windows the merger serves (both sizes).
fn merger_review_windows(merger: &Server) -> usize {
    ["1m", "5m"]
        .iter()
        .map(|size| {
            let q = format!("/api/windows?aggregate=average_rating&size={size}&limit=100000");
            let v: Value = serde_json::from_str(&merger.get(&q).1).unwrap_or_default();
            v["windows"].as_array().map_or(0, Vec::len)
        })
        .sum()
}

/// The reviews' dead letters in the store.
fn review_dead_letters(dir: &std::path::Path) -> usize {
    let mut c = kappa(dir);
    c.args([
        "dead-letters",
        "--stream",
        "reviews",
        "--format",
        "json",
        "--limit",
        "10000",
    ]);
    let v: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    v["dead_letters"].as_array().map_or(0, Vec::len)
}

/// `kappa` on `dir` against the broker at `bootstrap`, quietly.
fn kappa_at(dir: &std::path::Path, bootstrap: &str) -> Command {
    let mut c = kappa(dir);
    c.args(["--kafka", bootstrap]);
    c
}

/// Creates `topic` with `partitions` partitions on `bootstrap`; retries while a deletion
/// of the same name is still going on. Panics unless it is created.
fn create_topic_at(bootstrap: &str, topic: &str, partitions: u32) {
    let specs = temp();
    std::fs::write(
        specs.path().join("t.toml"),
        format!("name = \"{topic}\"\npartitions = {partitions}\nreplication-factor = 1\n[config]\n\"retention.ms\" = \"-1\"\n"),
    )
    .unwrap();
    let t = Instant::now();
    loop {
        let mut c = kappa_at(specs.path(), bootstrap);
        c.args(["topics", "apply", "--dir"]).arg(specs.path());
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("created") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "topic {topic} not created: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn status(s: &Server) -> Value {
    serde_json::from_str(&s.get("/api/status").1).unwrap_or_default()
}

/// Waits until `s` reports the diverged state (naming `what`) on /readyz and /api/status,
/// the metric, and exactly one log line; it keeps running.
fn assert_diverged(s: &mut Server, what: &str) {
    let t = Instant::now();
    loop {
        let (code, body) = s.get("/readyz");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if code == 503 && v["state"] == "diverged" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no diverged state: /readyz {code} {body}\n{}",
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status(s);
    assert_eq!(st["state"], "diverged", "{st}");
    let err = st["error"].as_str().unwrap_or_default();
    assert!(err.contains(what), "the error says {what}: {err}");
    let metrics = s.get("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l == "kappa_kafka_history_diverged 1"),
        "metric: {}",
        metrics
            .lines()
            .filter(|l| l.contains("diverged"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = s.stderr_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("no longer holds the history"))
            .count(),
        1,
        "one log line: {log}"
    );
    assert!(s.child.try_wait().unwrap().is_none(), "kappa keeps running");
}

/// Reads all `n` records of `topic` live on `dir`, then stops (the store has positions).
fn read_live(dir: &std::path::Path, topic: &str, n: u64) {
    let s = Server::start_env(dir, &["--idle-timeout", "0s"], &kafka_env(topic));
    s.wait_for(|s| new_records(s) == n, "every record read");
    assert!(s.interrupt().success());
}

/// kappa reads 4000 records of `topic`; the topic is deleted, recreated and refilled with
/// `refill` records while kappa is stopped; the next server must report the divergence
/// (`expect` in its reason) and read nothing of the new history. Returns the data
/// directory.
fn recreate_while_stopped(topic: &str, refill: u64, expect: &str) -> tempfile::TempDir {
    create_topic_with(topic, 2);
    let dir = temp();
    let mut c = kk(dir.path(), topic);
    c.args(produce_args(4000, 31));
    ok(c);
    read_live(dir.path(), topic, 4000);
    tool(
        "org.apache.kafka.tools.TopicCommand",
        &["--delete", "--topic", topic],
    );
    create_topic_at(broker(), topic, 2);
    let mut c = kk(dir.path(), topic);
    c.args(produce_args(refill, 32));
    ok(c);
    let mut s = Server::start_env(dir.path(), &["--idle-timeout", "0s"], &kafka_env(topic));
    assert_diverged(&mut s, expect);
    assert_eq!(new_records(&s), 0, "nothing of the new history read");
    dir
}

#[test]
fn a_deleted_and_recreated_topic_is_reported_and_never_read() {
    let _serial = serial();
    // Fewer records than kappa read.
    drop(recreate_while_stopped(
        "t-recreate",
        200,
        "deleted and recreated",
    ));
}

#[test]
fn a_recreated_topic_refilled_past_kappas_positions_is_known_by_its_id() {
    let _serial = serial();
    // More records than kappa read: every position is valid, only the topic id differs.
    let dir = recreate_while_stopped("t-refill", 12_000, "its id was");
    // Nor does a correction of the serving version splice the new history into it.
    let mut c = kk(dir.path(), "t-refill");
    c.args(["replay", "--from", "2026-11-23T00:05:00Z", "--dry-run"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("deleted and recreated"),
        "{err}"
    );
}

#[test]
fn records_deleted_before_kappa_read_them_are_reported_never_skipped() {
    let _serial = serial();
    let topic = "t-delete-records";
    create_topic_with(topic, 2);
    let dir = temp();
    let mut c = kk(dir.path(), topic);
    c.args(produce_args(4000, 41));
    ok(c);
    read_live(dir.path(), topic, 4000);
    let mut c = kk(dir.path(), topic);
    c.args(produce_args(4000, 42));
    ok(c);
    // deleteRecords on partition 0 up to its end: what kappa has not read there is gone.
    let ends = tool("org.apache.kafka.tools.GetOffsetShell", &["--topic", topic]);
    let end0: u64 = ends
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{topic}:0:"))?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no end offset of partition 0 in {ends}"));
    let json = temp();
    let file = json.path().join("delete.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"version":1,"partitions":[{{"topic":"{topic}","partition":0,"offset":{end0}}}]}}"#
        ),
    )
    .unwrap();
    tool(
        "org.apache.kafka.tools.DeleteRecordsCommand",
        &["--offset-json-file", file.to_str().unwrap()],
    );
    let mut s = Server::start_env(dir.path(), &["--idle-timeout", "0s"], &kafka_env(topic));
    assert_diverged(&mut s, "were deleted");
}

#[test]
fn a_broker_restart_within_the_group_session_loses_and_doubles_nothing() {
    let _serial = serial();
    let mut own = Broker::start();
    let topic = "t-bounce";
    create_topic_at(&own.bootstrap, topic, 4);
    let (kdir, edir) = (temp(), temp());
    // A fixed start for both (see `produce_both` above).
    let produce_both = |bootstrap: &str, seed: u64| {
        let mut c = kappa_at(kdir.path(), bootstrap);
        c.args(["--topic", topic])
            .args(produce_args(10_000, seed))
            .args(FIXED_START);
        ok(c);
        let mut c = kappa(edir.path());
        c.args(produce_args(10_000, seed)).args(FIXED_START);
        ok(c);
    };
    produce_both(&own.bootstrap, 51);
    // A session long enough to outlast the broker's restart: the member keeps its
    // partitions, no rebalance.
    let env = vec![
        ("KAPPA_KAFKA__BROKERS".to_string(), own.bootstrap.clone()),
        ("KAPPA_KAFKA__TOPIC".to_string(), topic.to_string()),
        ("KAPPA_KAFKA__GROUP_ID".to_string(), "g-bounce".to_string()),
        (
            "KAPPA_KAFKA__SESSION_TIMEOUT".to_string(),
            "45s".to_string(),
        ),
        (
            "KAPPA_KAFKA__STATISTICS_INTERVAL".to_string(),
            "500ms".to_string(),
        ),
    ];
    let s = Server::start_env(kdir.path(), &["--idle-timeout", "0s"], &env);
    s.wait_for(
        |s| new_records(s) == 10_000 && s.get("/readyz").0 == 200,
        "the first 10000 records",
    );
    own.stop();
    s.wait_for(
        |s| s.get("/readyz").0 == 503,
        "/readyz to turn 503 while the broker is down",
    );
    own.start_again();
    let back = Instant::now();
    while s.get("/readyz").0 != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "/readyz not 200 within 10 s of the broker's return: {}\n{}",
            s.get("/readyz").1,
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    produce_both(&own.bootstrap, 52);
    s.wait_for(|s| new_records(s) == 20_000, "the next 10000 records");
    assert!(s.interrupt().success());
    let mut c = kappa_at(kdir.path(), &own.bootstrap);
    c.args(["--topic", topic]).args(RUN_DRAIN);
    ok(c);
    run_drain(edir.path(), &[]);
    assert!(
        export(kdir.path()) == export(edir.path()),
        "a broker restart changed the results"
    );
}

/// `kafka-consumer-groups --describe` of `group`: partition → (current offset, log end
/// offset, lag), for the rows of `topic`.
fn describe_group(group: &str, topic: &str) -> std::collections::BTreeMap<u64, (u64, u64, u64)> {
    let out = tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--describe", "--group", group],
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[1] != topic {
                return None;
            }
            Some((
                f[2].parse().ok()?,
                (f[3].parse().ok()?, f[4].parse().ok()?, f[5].parse().ok()?),
            ))
        })
        .collect()
}

#[test]
fn kafka_consumer_groups_describes_the_positions_and_lag_kappa_reports() {
    let _serial = serial();
    let topic = "t-lag";
    create_topic(topic);
    let dir = temp();
    let mut c = kk(dir.path(), topic);
    c.args(produce_args(8000, 61));
    ok(c);
    let s = Server::start_env(dir.path(), &["--idle-timeout", "0s"], &kafka_env(topic));
    s.wait_for(|s| new_records(s) == 8000, "every record read");
    // kappa's view: position, end offset (real high watermarks) and lag per partition.
    let kappa_view = |s: &Server| -> std::collections::BTreeMap<u64, (u64, u64, u64)> {
        status(s)["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["partition"].as_u64().unwrap(),
                            (
                                p["position"].as_u64().unwrap(),
                                p["end_offset"].as_u64().unwrap(),
                                p["lag"].as_u64().unwrap(),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    s.wait_for(
        |s| {
            let v = kappa_view(s);
            v.len() == 4 && v.values().map(|x| x.1).sum::<u64>() == 8000
        },
        "kappa to see every partition's end (8000 records)",
    );
    let ours = kappa_view(&s);
    // The group's committed offsets follow the store's commits: poll the tool until they
    // agree (at most 60 s).
    let t = Instant::now();
    let mut theirs = describe_group("g-t-lag", topic);
    while theirs != ours {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "kafka-consumer-groups {theirs:?} vs kappa {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
        theirs = describe_group("g-t-lag", topic);
    }
    assert!(s.interrupt().success());
    // Stopped, with 1000 more records: the tool's lag is exactly those, from kappa's last
    // positions.
    let mut c = kk(dir.path(), topic);
    c.args(["produce", "--rate", "0", "--events", "1000", "--seed", "62"]);
    ok(c);
    let after = describe_group("g-t-lag", topic);
    assert_eq!(after.values().map(|x| x.2).sum::<u64>(), 1000, "{after:?}");
    for (p, (current, _, _)) in &after {
        assert_eq!(*current, ours[p].0, "partition {p}: {after:?} vs {ours:?}");
    }
}

/// A config file with the SASL_PLAINTEXT SCRAM-SHA-512 client settings and `password`.
fn sasl_config(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    let path = dir.join("sasl.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{}\"\n\"sasl.password\" = \"{password}\"\n",
            common::broker::SASL_USER
        ),
    )
    .unwrap();
    path
}

#[test]
fn sasl_scram_reads_with_the_right_password_and_a_wrong_one_is_one_clear_line_never_leaked() {
    let _serial = serial();
    let topic = "t-sasl";
    create_topic_with(topic, 2);
    let dir = temp();
    let mut c = kk(dir.path(), topic);
    c.args(["produce", "--rate", "0", "--events", "1000"]);
    ok(c);
    let sasl = shared()
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .sasl_bootstrap
        .clone();
    let env = |group: &str| {
        let mut e = kafka_env(topic);
        e.retain(|(k, _)| k != "KAPPA_KAFKA__BROKERS" && k != "KAPPA_KAFKA__GROUP_ID");
        e.push(("KAPPA_KAFKA__BROKERS".into(), sasl.clone()));
        e.push(("KAPPA_KAFKA__GROUP_ID".into(), group.into()));
        e
    };
    // Every answer kappa gives, to look for a password in.
    let everything = |s: &Server| -> String {
        [
            "/readyz",
            "/api/status",
            "/metrics",
            "/api/versions",
            "/api/replays",
        ]
        .iter()
        .map(|p| s.get(p).1)
        .chain([s.stderr_text()])
        .collect::<Vec<_>>()
        .join("\n")
    };
    let right = common::broker::SASL_PASSWORD;
    let good = temp();
    let cfg = sasl_config(good.path(), right);
    let s = Server::start_env(
        good.path(),
        &["--config", cfg.to_str().unwrap(), "--idle-timeout", "0s"],
        &env("g-sasl-good"),
    );
    let t = Instant::now();
    while !(new_records(&s) == 1000 && s.get("/readyz").0 == 200) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the 1000 records over SASL: {}\n{}",
            s.get("/readyz").1,
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = everything(&s);
    assert!(!seen.contains(right), "the password leaked: {seen}");
    assert!(s.interrupt().success());

    let wrong = "not-the-password-5b1c";
    let bad = temp();
    let cfg = sasl_config(bad.path(), wrong);
    let mut s = Server::start_env(
        bad.path(),
        &["--config", cfg.to_str().unwrap(), "--idle-timeout", "0s"],
        &env("g-sasl-bad"),
    );
    let auth_lines = |s: &Server| -> Vec<String> {
        s.stderr_text()
            .lines()
            .filter(|l| l.contains("SASL credentials"))
            .map(str::to_string)
            .collect()
    };
    let t = Instant::now();
    while auth_lines(&s).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no line about the credentials: {}",
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several retries later: still one line, still unready, still running.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(auth_lines(&s).len(), 1, "{}", s.stderr_text());
    assert_eq!(s.get("/readyz").0, 503);
    assert_eq!(new_records(&s), 0);
    assert!(s.child.try_wait().unwrap().is_none(), "no crash");
    let seen = everything(&s);
    assert!(!seen.contains(wrong), "the password leaked: {seen}");
}

// ---- Issue 15, items 1–2 and issue 16, item 3: scale-out parity of what is kept and
// counted (workers publish late-event records and dead letters; the merger stores them and
// exports the single process's counters).

/// The non-zero samples of the counters a single process exports about its input, from a
/// `/metrics` text: (sample name with labels, value).
fn input_counters(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    const NAMES: [&str; 5] = [
        "kappa_records_consumed_total",
        "kappa_late_records_total",
        "kappa_duplicate_records_total",
        "kappa_invalid_records_total",
        "kappa_dead_letters_total",
    ];
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            let name = sample.split('{').next()?;
            let v: f64 = value.parse().ok()?;
            (NAMES.contains(&name) && v != 0.0).then(|| (sample.to_string(), v))
        })
        .collect()
}

/// A metric's samples summed (every label).
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Every late-event record `s` serves (one page).
fn late_events(s: &Server) -> Value {
    let (code, body) = s.get("/api/late-events?limit=10000");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["late_events"].clone()
}

/// Polls up to `secs` for `f`, then fails with `what`.
fn poll(secs: u64, what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} after {secs} s");
}

/// Whether the merger reports `n` workers in the group, owning the 4 partitions between
/// them (each once, each worker by kappa's client id).
fn owners_reported(merger: &Server, n: usize) -> bool {
    let m = merger.get("/metrics").1;
    let series: Vec<(String, String)> = m
        .lines()
        .filter_map(|l| l.strip_prefix("kappa_partition_owner_info{"))
        .filter_map(|l| {
            let labels = l.split_once('}')?.0;
            let get = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some((get("partition")?, get("worker")?))
        })
        .collect();
    let parts: std::collections::BTreeSet<&String> = series.iter().map(|s| &s.0).collect();
    let workers: std::collections::BTreeSet<&String> = series.iter().map(|s| &s.1).collect();
    m.contains(&format!("kappa_workers_active {n}\n"))
        && series.len() == 4
        && parts.len() == 4
        && workers.len() == n
        && workers.iter().all(|w| w.starts_with("kappa/"))
}

/// The partitions of every `kappa_consumer_lag_records` series the workers export, sorted
/// (a partition twice: two workers export its lag).
fn lag_partitions(workers: &[Server]) -> Vec<String> {
    let mut seen = Vec::new();
    for w in workers {
        let m = w.get("/metrics").1;
        seen.extend(
            m.lines()
                .filter_map(|l| l.strip_prefix("kappa_consumer_lag_records{partition=\""))
                .filter_map(|l| l.split_once('"').map(|(p, _)| p.to_string())),
        );
    }
    seen.sort();
    seen
}

/// The merger's status and version list account for all `total` records of the source.
fn assert_merger_positions(merger: &Server, total: u64) {
    // The merger's status says how far results are final and where each partition is.
    let st: Value = serde_json::from_str(&merger.get("/api/status").1).unwrap();
    assert!(st["finalized_through_ms"].as_i64().is_some(), "{st}");
    let parts = st["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{st}");
    assert_eq!(
        parts
            .iter()
            .map(|p| p["position"].as_u64().unwrap())
            .sum::<u64>(),
        total,
        "{st}"
    );
    assert_eq!(st["records"].as_u64(), Some(total), "{st}");
    let m = merger.get("/metrics").1;
    assert!(
        m.contains("kappa_pipeline_up 1"),
        "a merging merger is up: {m}"
    );
    // `versions list` on the merger measures the source topic's lag from the workers'
    // positions (its own store positions are on the partials topic).
    let vs: Value = serde_json::from_str(&merger.get("/api/versions").1).unwrap();
    let v = &vs["versions"][0];
    assert_eq!(v["lag"].as_u64(), Some(0), "{vs}");
    assert_eq!(
        v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .sum::<u64>(),
        total,
        "{vs}"
    );
}

#[test]
fn workers_and_a_merger_keep_and_count_late_and_invalid_records_as_one_process() {
    let _serial = serial();
    let topic = "t-parity";
    create_topic_with(topic, 4);
    create_topic_with(&format!("{topic}.partials"), 4);
    create_topic_with(&format!("{topic}.control"), 1);
    let (single_dir, merger_dir) = (temp(), temp());
    let produce_part = |i: u32| {
        let mut c = kk(single_dir.path(), topic);
        c.args(produce_args(20_000, 40 + u64::from(i)))
            .args(["--sim-rate", "33", "--start"])
            .arg(format!("2026-11-23T00:{:02}:00Z", i * 10));
        ok(c);
    };
    produce_part(0);
    let env = role_env(topic);
    let worker_dirs = [temp(), temp(), temp()];
    let start_worker =
        |d: &tempfile::TempDir| Server::start_env(d.path(), &["--role", "worker"], &env);
    let merger = Server::start_env(merger_dir.path(), &["--role", "merger"], &env);
    let mut workers: Vec<Server> = worker_dirs.iter().map(start_worker).collect();
    wait_windows(&merger, 5, 90, "the first part");
    // Workers report what they do: up, and the records they consumed (which one read
    // how much depends on when the group split the partitions between them).
    let mut consumed = 0.0;
    for w in &workers {
        let m = w.get("/metrics").1;
        assert!(m.contains("kappa_pipeline_up 1"), "{m}");
        consumed += metric_sum(&m, "kappa_records_consumed_total");
    }
    assert!(consumed > 0.0, "the running workers consumed nothing");
    // The merger says which workers are in the group and which partitions each reads.
    poll(
        60,
        "the merger does not report 3 workers owning the 4 partitions",
        || owners_reported(&merger, 3),
    );
    // One worker dies mid-way: the other resumes its partitions from its last state and
    // re-reads and re-publishes what it had done since; nothing is counted twice.
    let victim = workers.remove(1);
    signal(&victim.child, "KILL");
    drop(victim);
    produce_part(1);
    let total = 40_000.0;
    poll(
        60,
        "the merger does not report the 2 workers left owning the 4 partitions",
        || owners_reported(&merger, 2),
    );
    // Each worker exports the lag of the partitions it owns only (an autoscaler sums them).
    poll(
        60,
        "the workers' lag series overlap or miss a partition",
        || lag_partitions(&workers) == ["0", "1", "2", "3"],
    );

    // The reference: one live process over the same topic and settings.
    let mut single_env = kafka_env(topic);
    single_env.push((WINDOWS_1M_5M.0.into(), WINDOWS_1M_5M.1.into()));
    single_env.push(("KAPPA_PIPELINE__IDLE_TIMEOUT".into(), "0s".into()));
    let single = Server::start_env(single_dir.path(), &[], &single_env);
    poll(120, "the single process has not read the topic", || {
        metric_sum(&single.get("/metrics").1, "kappa_records_consumed_total") >= total
    });
    poll(120, "the merger's counters do not cover the topic", || {
        metric_sum(&merger.get("/metrics").1, "kappa_records_consumed_total") >= total
    });
    // Both have committed what they read (dead letters and late records are stored with
    // the next commit after reading).
    let expected_late = late_events(&single);
    poll(60, "the merger's late-event records differ", || {
        late_events(&merger) == late_events(&single)
    });
    assert!(
        expected_late.as_array().unwrap().len() > 50,
        "too few late events for a test: {expected_late}"
    );
    let expected = input_counters(&single.get("/metrics").1);
    assert!(
        expected
            .keys()
            .any(|k| k.starts_with("kappa_invalid_records_total")),
        "{expected:?}"
    );
    assert_eq!(input_counters(&merger.get("/metrics").1), expected);

    assert_merger_positions(&merger, 40_000);

    assert!(single.interrupt().success());

    // A correction with a larger lateness bound takes the late events in, across roles as
    // in one process.
    let before = export(single_dir.path());
    let correction = CORRECTION;
    let mut c = kk(single_dir.path(), topic);
    c.arg("replay")
        .args(correction)
        .env(WINDOWS_1M_5M.0, WINDOWS_1M_5M.1);
    ok(c);
    let corrected = export(single_dir.path());
    assert!(corrected != before, "the correction changed nothing");
    let mut c = kappa(merger_dir.path());
    c.arg("replay").args(correction).arg("--detach");
    let out = String::from_utf8(ok(c).stdout).unwrap();
    let id: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("replay ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no replay id in {out}"));
    poll(120, "the correction across roles did not complete", || {
        let v: Value =
            serde_json::from_str(&merger.get(&format!("/api/replays/{id}")).1).unwrap_or_default();
        v["outcome"] == "completed"
    });
    assert!(merger.interrupt().success());
    for w in workers {
        assert!(w.interrupt().success());
    }
    assert!(
        export(merger_dir.path()) == corrected,
        "the correction across roles differs from the single process's"
    );
    // The same dead letters: each record, its position, kind, reason and bytes.
    let dead = common::dead_letters(single_dir.path());
    assert!(dead.len() > 50, "{} dead letters", dead.len());
    assert!(
        common::dead_letters(merger_dir.path()) == dead,
        "the merger's dead letters differ from the single process's"
    );
}

#[test]
fn a_replay_from_before_the_event_time_index_looks_up_offsets_for_times() {
    let _serial = serial();
    let topic = "t-by-time";
    create_topic(topic);
    let t = temp();
    let dir = t.path().to_path_buf();
    common::replay_from_before_the_index(&|| kk(&dir, topic));
}

/// Aggregates declared on the events (nested paths, a filter, `count_distinct` past a small
/// bound, `top_k`) and on the clicks, for the test across roles.
const DECLARED_ACROSS_ROLES: &str = r#"
[clicks]
time-field = "timestamp"
time-format = "%Y-%m-%d %H:%M:%S"

[[aggregates]]
name = "views-by-os"
types = ["view"]
group-by = ["device.os"]
measures = ["count"]
sizes = ["10s", "1m"]

[[aggregates]]
name = "sales-by-category"
types = ["purchase"]
group-by = ["category"]
measures = ["count", "sum(price)", "min(price)", "max(price)"]
sizes = ["10s"]

[[aggregates]]
name = "shoppers-by-product"
types = ["view", "add_cart", "purchase"]
group-by = ["product_id"]
measures = ["count", "count_distinct(user_id)", "top_k(10, count_distinct(user_id))"]
sizes = ["1m"]
distinct-bound = 3

[[aggregates]]
name = "page-views"
stream = "clicks"
group-by = ["page"]
measures = ["count", "count_distinct(user_id)"]
sizes = ["10s"]
distinct-bound = 5

[[aggregates]]
name = "top-pages"
stream = "clicks"
group-by = ["page"]
measures = ["count", "top_k(3, count)"]
sizes = ["1m"]
"#;

/// Clicks `from..to` in Flink's shape: 30 ms apart from 2026-11-23 00:00, up to 2 s out of
/// order, 97 users (as numbers) over 11 pages.
fn clicks_jsonl(from: u64, to: u64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let mut out = String::new();
    for i in from..to {
        let t = start + i64::try_from(i * 30 + (i * 7919) % 2000).unwrap();
        let ts = chrono::DateTime::from_timestamp_millis(t).unwrap();
        out.push_str(&format!(
            "{{\"user_id\":{},\"page\":\"/p/{}\",\"timestamp\":\"{}\"}}\n",
            (i * 31) % 97,
            (i * 13) % 11,
            ts.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    out
}

/// The in-place correction both scale tests run across roles and in one process: ten
/// minutes with a larger lateness bound.
const CORRECTION: [&str; 6] = [
    "--from",
    "2026-11-23T00:05:00Z",
    "--to",
    "2026-11-23T00:15:00Z",
    "--max-delay",
    "10m",
];

/// Final windows of declared aggregate `name` the server holds (every size).
fn declared_windows(s: &Server, name: &str) -> usize {
    let q = format!("/api/windows?aggregate={name}&limit=100000");
    let v: Value = serde_json::from_str(&s.get(&q).1).unwrap_or_default();
    v["windows"].as_array().map_or(0, Vec::len)
}

#[test]
fn declared_aggregates_across_workers_and_a_merger_equal_one_process_through_kills() {
    let _serial = serial();
    let topic = "t-declared";
    create_topic_with(topic, 4);
    create_topic_with(&format!("{topic}.partials"), 4);
    create_topic_with(&format!("{topic}.control"), 1);
    create_topic_with(&format!("{topic}.products"), 1);
    create_topic_with(&format!("{topic}.clicks"), 3);
    let (single, merger_dir, files) = (temp(), temp(), temp());
    let cfg = files.path().join("declared.toml");
    std::fs::write(&cfg, DECLARED_ACROSS_ROLES).unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut env = role_env(topic);
    env.push((
        "KAPPA_KAFKA__CLICKS_TOPIC".into(),
        format!("{topic}.clicks"),
    ));
    // Two parts of 20 000 events and 10 000 clicks, 10 and 5 minutes of event time; the
    // second part's events from 00:51, so the first hour becomes final (and rolled up).
    let produce_part = |i: u64| {
        let start = format!("2026-11-23T00:{:02}:00Z", i * 51);
        let mut c = kk(single.path(), topic);
        c.args(produce_args(20_000, 70 + i))
            .args(["--sim-rate", "33", "--start", &start]);
        ok(c);
        let input = files.path().join(format!("clicks-{i}.jsonl"));
        std::fs::write(&input, clicks_jsonl(i * 10_000, (i + 1) * 10_000)).unwrap();
        let mut c = kk(single.path(), topic);
        c.args(["--config", &cfg, "produce", "--stream", "clicks", "--input"])
            .arg(&input)
            .envs(env.clone());
        ok(c);
    };
    produce_part(0);
    let roles = |role: &str| -> Vec<String> {
        ["--role", role, "--config", &cfg]
            .map(String::from)
            .to_vec()
    };
    let start = |d: &tempfile::TempDir, role: &str| {
        let args = roles(role);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_env(d.path(), &args, &env)
    };
    let worker_dirs = [temp(), temp()];
    let mut merger = start(&merger_dir, "merger");
    let mut workers: Vec<Server> = worker_dirs.iter().map(|d| start(d, "worker")).collect();
    let t = Instant::now();
    while declared_windows(&merger, "views-by-os") < 20
        || declared_windows(&merger, "page-views") < 10
    {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the first part's declared windows: {} views-by-os, {} page-views after 90 s\n{}\n{}",
            declared_windows(&merger, "views-by-os"),
            declared_windows(&merger, "page-views"),
            merger.stderr_text(),
            workers[0].stderr_text(),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A worker dies: the other resumes its partitions from its last commit, both cores
    // from the earlier of their resume points.
    let victim = workers.remove(1);
    signal(&victim.child, "KILL");
    drop(victim);
    produce_part(1);
    // The merger dies too, and comes back on its store (the declared merge states with it).
    std::thread::sleep(Duration::from_secs(3));
    signal(&merger.child, "KILL");
    drop(merger);
    merger = start(&merger_dir, "merger");
    workers.push(start(&worker_dirs[1], "worker"));

    // The reference: one process over the same topics, up to the log ends.
    let mut c = kk(single.path(), topic);
    c.args([
        "--config",
        &cfg,
        "run",
        "--until-caught-up",
        "--listen",
        "127.0.0.1:0",
    ])
    .envs(env.clone());
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(out.contains("clicks: 20000 read"), "{out}");
    let expected = export(single.path());
    let text = String::from_utf8_lossy(&expected).into_owned();
    // Each aggregate's windows: (size, start) of its export lines.
    let count = |name: &str| {
        let windows: std::collections::BTreeSet<(String, String)> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["aggregate"] == name)
            .map(|v| (v["size"].to_string(), v["window_start"].to_string()))
            .collect();
        windows.len()
    };
    let names = [
        "views-by-os",
        "sales-by-category",
        "shoppers-by-product",
        "page-views",
        "top-pages",
    ];
    for name in names {
        // 10 minutes of clicks: 9 final 1-minute windows of top-pages.
        assert!(count(name) >= 9, "{} {name} windows in\n{out}", count(name));
    }
    poll(120, "the merger's declared windows", || {
        names
            .iter()
            .all(|n| declared_windows(&merger, n) >= count(n))
    });
    std::thread::sleep(Duration::from_secs(1));
    // The merger keeps the first hour's rollup as one process does.
    let hour_totals = |name: &str| -> (Value, Value) {
        let q = format!(
            "/api/windows?aggregate={name}&total=true&from=2026-11-23T00:00:00Z&to=2026-11-23T01:00:00Z"
        );
        let (status, body) = merger.get(&q);
        assert_eq!(status, 200, "{body}");
        let mut c = kappa(single.path());
        c.args(["query", "--aggregate", name, "--total", "--format", "json"])
            .args([
                "--from",
                "2026-11-23T00:00:00Z",
                "--to",
                "2026-11-23T01:00:00Z",
            ]);
        let single: Value = serde_json::from_slice(&ok(c).stdout).unwrap();
        let merged: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(merged["buckets"]["hour"], 1, "{merged}");
        assert!(!merged["rows"].as_array().unwrap().is_empty(), "{merged}");
        (merged["rows"].clone(), single["rows"].clone())
    };
    let (merged, single_total) = hour_totals("sales-by-category");
    assert_eq!(merged, single_total);

    // Changing, adding and dropping declarations across roles is one replay into a new
    // version on the merger: the workers compute it, its clicks included, equal to the
    // single process's replay with the same configuration.
    let changed = files.path().join("changed.toml");
    let text2 = DECLARED_ACROSS_ROLES
        .replace("sizes = [\"10s\", \"1m\"]", "sizes = [\"1m\"]")
        .replace("name = \"top-pages\"", "name = \"pages-per-minute\"");
    std::fs::write(&changed, text2).unwrap();
    let changed = changed.to_str().unwrap();
    let mut c = kk(single.path(), topic);
    c.args([
        "--config",
        changed,
        "replay",
        "--from",
        "earliest",
        "--version",
        "v2",
    ])
    .envs(env.clone());
    ok(c);
    let expected_v2 = export_version(single.path(), "v2");
    let v2_names = ["views-by-os", "page-views", "pages-per-minute"];
    let in_v2 = |name: &str| {
        let tag = format!("\"aggregate\":\"{name}\"");
        let windows: std::collections::BTreeSet<String> = expected_v2
            .iter()
            .filter(|l| l.contains(&tag))
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                format!("{}{}", v["size"], v["window_start"])
            })
            .collect();
        windows.len()
    };
    for name in v2_names {
        assert!(in_v2(name) >= 9, "{} {name} windows in v2", in_v2(name));
    }
    let args = ["--from", "earliest", "--version", "v2", "--config", changed];
    let outcome = replay_across_roles(&merger, merger_dir.path(), &args, &env);
    assert_eq!(outcome, "caught-up", "{}", merger.stderr_text());
    let in_merger_v2 = |n: &str| {
        let q = format!("/api/windows?aggregate={n}&version=v2&limit=100000");
        let v: Value = serde_json::from_str(&merger.get(&q).1).unwrap_or_default();
        v["windows"].as_array().map_or(0, Vec::len)
    };
    let t = Instant::now();
    while !v2_names.iter().all(|n| in_merger_v2(n) >= in_v2(n)) {
        let counts: Vec<(usize, usize)> = v2_names
            .iter()
            .map(|n| (in_merger_v2(n), in_v2(n)))
            .collect();
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the merger's v2 declared windows (merger, single) {counts:?}\n{}\n{}",
            merger.stderr_text(),
            workers[0].stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An in-place correction across roles with a larger lateness bound rewrites the
    // declared windows of its range too: the scratch's declared part is merged and drained
    // before the swap. Equal to the single process's correction.
    let correction = CORRECTION;
    let outcome = replay_across_roles(&merger, merger_dir.path(), &correction, &env);
    assert_eq!(outcome, "completed", "{}", merger.stderr_text());
    let mut c = kk(single.path(), topic);
    c.args(["--config", &cfg, "replay"])
        .args(correction)
        .envs(env.clone());
    ok(c);
    let corrected = String::from_utf8_lossy(&export(single.path())).into_owned();
    let views = |t: &str| -> Vec<String> {
        let tag = "\"aggregate\":\"views-by-os\"";
        t.lines()
            .filter(|l| l.contains(tag))
            .map(String::from)
            .collect()
    };
    assert!(
        views(&corrected) != views(&text),
        "the correction changed no declared window: a weak test"
    );
    // The corrected hour's rollup too (its windows swapped on both sides).
    let (merged, single_total) = hour_totals("views-by-os");
    assert_eq!(merged, single_total);
    std::thread::sleep(Duration::from_secs(1));
    assert!(merger.interrupt().success());
    for w in workers {
        assert!(w.interrupt().success());
    }
    let got_v2 = export_version(merger_dir.path(), "v2");
    assert!(
        got_v2 == expected_v2,
        "v2 across roles: {} lines against {}",
        got_v2.len(),
        expected_v2.len()
    );
    let got = export(merger_dir.path());
    let (got, expected) = (String::from_utf8_lossy(&got), corrected);
    let first = got
        .lines()
        .zip(expected.lines())
        .find(|(g, e)| g != e)
        .map(|(g, e)| format!("the merger's\n{g}\nthe single process's\n{e}"));
    assert!(
        got == expected,
        "{} lines against {}; first differing: {first:?}",
        got.lines().count(),
        expected.lines().count()
    );
}
