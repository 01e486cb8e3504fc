//! What a new user trips over (issue 16), on the real binary: stray `KAPPA_*` variables,
//! a mistyped version name, the replay bookkeeping after Ctrl-C or `kill -9`, the history's
//! "who", `replay status ID`, and the version workflow after a promotion.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{kappa, ok, temp};

fn fails(mut c: std::process::Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn only_kappa_variables_that_name_a_key_are_configuration_and_a_typo_is_named() {
    let t = temp();
    let dir = t.path();
    common::produce(dir, 2000, 11);
    common::run_drain(dir, &[]);
    // A compose file's own variable is not configuration.
    let mut c = kappa(dir);
    c.env("KAPPA_TOKEN", "abc").args(["query"]);
    ok(c);
    // A key, set through the environment, is.
    let mut c = kappa(dir);
    c.env("KAPPA_PIPELINE__TOP_K", "0").args(["query"]);
    assert!(fails(c).contains("pipeline.top-k"));
    // A typo of a key is an error that names the key.
    let mut c = kappa(dir);
    c.env("KAPPA_HTTP__TOKN", "abc").args(["query"]);
    let err = fails(c);
    assert!(
        err.contains("KAPPA_HTTP__TOKN") && err.contains("KAPPA_HTTP__TOKEN"),
        "{err}"
    );
}

#[test]
fn a_mistyped_version_is_refused_with_the_versions_and_create_makes_a_new_one() {
    let t = temp();
    let dir = t.path();
    common::produce(dir, 2000, 13);
    common::run_drain(dir, &[]);
    let mut c = kappa(dir);
    c.args(common::RUN_DRAIN).args(["--version", "v1x"]);
    let err = fails(c);
    assert!(
        err.contains("no output version v1x") && err.contains("v1"),
        "{err}"
    );
    let mut c = kappa(dir);
    c.args(["export", "--version", "v1x"]);
    assert!(
        fails(c).contains("no output version v1x"),
        "nothing was created"
    );
    common::run_drain(dir, &["--version", "v1x", "--create"]);
    assert_eq!(
        common::export_version(dir, "v1x"),
        common::export_version(dir, "v1"),
        "the created version computes the same results"
    );
}

/// Starts a foreground replay and waits until it says it started.
fn foreground_replay(dir: &Path, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = kappa(dir);
    c.args(["replay", "--from", "earliest"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("started") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no start line");
    }
    (child, out)
}

fn history(dir: &Path) -> String {
    let mut c = kappa(dir);
    c.args(["replay", "history"]);
    String::from_utf8(ok(c).stdout).unwrap()
}

#[test]
fn replay_bookkeeping_after_kill_and_ctrl_c_and_who_asked() {
    let t = temp();
    let dir = t.path();
    common::produce(dir, 300_000, 17);
    common::run_drain(dir, &[]);
    // kill -9 mid-way: the next command's history says interrupted, not running.
    let mut killed = false;
    for _ in 0..5 {
        let (mut child, _out) = foreground_replay(dir, &["--version", "v2"]);
        // The replay reads its 300 000 records in about 0.3 s here: a third of that in,
        // it is running (one that ended before is retried).
        std::thread::sleep(Duration::from_millis(100));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            killed = true;
            break;
        }
        ok({
            let mut c = kappa(dir);
            c.args(["versions", "drop", "v2"]);
            c
        });
    }
    assert!(killed, "the replay ran long enough to be killed");
    let h = history(dir);
    let last = h.lines().last().unwrap();
    assert!(last.contains("interrupted"), "{h}");
    assert!(!h.contains("running"), "{h}");
    // Without a server, dropping the version it left cancels that replay.
    ok({
        let mut c = kappa(dir);
        c.args(["versions", "drop", "v2"]);
        c
    });
    // Ctrl-C: cancelled, not 100 %, and a non-zero exit; the history says who asked.
    let mut interrupted = false;
    for _ in 0..5 {
        let (child, mut out) =
            foreground_replay(dir, &["--version", "v3", "--requested-by", "ops-oncall"]);
        // The replay reads its 300 000 records in about 0.3 s here: a third of that in,
        // it is running (one that ended before is retried).
        std::thread::sleep(Duration::from_millis(100));
        let mut child = child;
        if child.try_wait().unwrap().is_some() {
            ok({
                let mut c = kappa(dir);
                c.args(["versions", "drop", "v3"]);
                c
            });
            continue;
        }
        common::signal(&child, "INT");
        let status = child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(
            !status.success(),
            "a cancelled replay exits non-zero: {rest}"
        );
        assert!(rest.contains("cancelled"), "{rest}");
        interrupted = true;
        break;
    }
    assert!(interrupted, "the replay ran long enough to be interrupted");
    let h = history(dir);
    assert!(h.contains("ops-oncall"), "{h}");
    // `replay status ID` is a table with the progress; --json is the API's answer.
    let id = h
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut c = kappa(dir);
    c.args(["replay", "status", &id]);
    let table = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        table.contains("progress") && !table.trim_start().starts_with('{'),
        "{table}"
    );
    assert!(
        !table.contains("100.0%"),
        "a cancelled replay is not done: {table}"
    );
    let mut c = kappa(dir);
    c.args(["replay", "status", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["outcome"], "cancelled");
    // Without --requested-by or $USER, the user is found all the same.
    let (mut child, _out) = {
        let mut c = kappa(dir);
        c.env_remove("USER")
            .env_remove("LOGNAME")
            .args(["replay", "--from", "earliest", "--version", "v4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out)
    };
    child.wait().unwrap();
    let h = history(dir);
    let last = h.lines().last().unwrap();
    assert!(!last.contains("(unknown)") && last.contains('('), "{h}");
}

#[test]
fn a_plain_run_after_promoting_a_version_with_another_configuration_does_not_warn() {
    let t = temp();
    let dir = t.path();
    common::produce(dir, 3000, 19);
    common::run_drain(dir, &[]);
    let cfg = dir.join("new.toml");
    std::fs::write(&cfg, "[pipeline]\ntop-k = 20\n").unwrap();
    ok({
        let mut c = kappa(dir);
        c.arg("--config").arg(&cfg).args([
            "replay",
            "--from",
            "earliest",
            "--version",
            "v2",
            "--promote",
        ]);
        c
    });
    let mut c = kappa(dir);
    c.args(common::RUN_DRAIN);
    let out = ok(c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("configuration"), "no warning: {err}");
    // A configuration given that differs from the serving version's still warns.
    let mut c = kappa(dir);
    c.env("KAPPA_PIPELINE__TOP_K", "5").args(common::RUN_DRAIN);
    let out = ok(c);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps the configuration"),
        "a given configuration that differs is worth a warning"
    );
}

#[test]
fn errors_say_what_would_do_and_bare_kappa_lists_the_commands() {
    let t = temp();
    let dir = t.path();
    // A bad flag value lists the values that would do; no source location leaks.
    let mut c = kappa(dir);
    c.args(["query", "--format", "yaml"]);
    let err = fails(c);
    assert!(err.contains("table") && err.contains("json"), "{err}");
    let mut c = kappa(dir);
    c.args(["run", "--max-delay", "10x"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains(".rs:"), "{err}");
    // An unknown key: its name and the keys there, without nested quoting.
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[pipeline]\ntopk = 3\n").unwrap();
    let mut c = kappa(dir);
    c.arg("--config").arg(&file).arg("config");
    let err = fails(c);
    assert!(
        err.contains("\"topk\"") && err.contains("top-k") && !err.contains("``"),
        "{err}"
    );
    // A TOML syntax error keeps its line, column and caret.
    std::fs::write(&file, "[pipeline]\ntop-k = \n").unwrap();
    let mut c = kappa(dir);
    c.arg("--config").arg(&file).arg("config");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 2, column 9") && err.lines().any(|l| l.trim() == "|         ^".trim()),
        "{err}"
    );
    // Bare `kappa`: the command list, not one line.
    let out = std::process::Command::new(common::bin()).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("replay") && text.contains("versions") && text.contains("demo"),
        "{text}"
    );
}

#[test]
fn the_demo_banner_names_the_live_page_and_how_it_stops() {
    let t = temp();
    let mut c = kappa(t.path());
    c.args(["demo", "--duration", "1s", "--listen", "127.0.0.1:0"]);
    let out = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains("live page") && l.trim_end().ends_with('/')),
        "{out}"
    );
    assert!(
        out.contains("stops after 1s") && !out.contains("Ctrl-C to stop"),
        "{out}"
    );
}

#[test]
fn a_second_batch_into_the_same_log_continues_in_event_time_and_is_not_late() {
    let t = temp();
    let dir = t.path();
    // First as the README's live example writes (event time = now), then a batch with
    // the defaults.
    for (seed, start) in [("1", Some("now")), ("2", None)] {
        ok({
            let mut c = kappa(dir);
            c.args(["produce", "--rate", "0", "--events", "3000", "--seed", seed]);
            if let Some(s) = start {
                c.args(["--start", s]);
            }
            c
        });
        // A live-style run (no drain): the second batch is read after the first's windows
        // moved the watermark on.
        let out = ok({
            let mut c = kappa(dir);
            c.args(["run", "--until-caught-up", "--listen", "127.0.0.1:0"]);
            c
        });
        let [accepted, late, _, _] = common::counts(&String::from_utf8_lossy(&out.stdout));
        assert_eq!((accepted, late), (3000, 0), "batch with seed {seed}");
    }
}

#[test]
fn kafka_commands_against_a_dead_broker_give_up_in_bounded_time_with_one_line() {
    let t = temp();
    let dead = "127.0.0.1:1";
    for args in [
        &["topics", "list"][..],
        &["topics", "apply", "--dry-run"],
        &["produce", "--events", "10", "--rate", "0"],
    ] {
        let mut c = kappa(t.path());
        c.args(["--kafka", dead])
            .args(args)
            .env("KAPPA_KAFKA__CONNECT_TIMEOUT", "1s");
        let err = fails(c);
        assert!(
            err.contains(dead) && err.contains("kafka.connect-timeout"),
            "{args:?}: {err}"
        );
    }
    // Outside the repository, the topic specifications built into kappa are used.
    let mut c = kappa(t.path());
    c.current_dir(t.path())
        .args(["--kafka", dead, "topics", "apply", "--dry-run"])
        .env("KAPPA_KAFKA__CONNECT_TIMEOUT", "1s");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("built into kappa") && !err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn sigterm_while_run_waits_for_the_brokers_is_a_graceful_exit() {
    let t = temp();
    let mut c = kappa(t.path());
    c.args(["--kafka", "127.0.0.1:1", "run", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Wait until it listens (it serves /readyz 503 meanwhile), then SIGTERM.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no listening line");
    }
    std::thread::sleep(Duration::from_millis(500));
    common::signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigterm_stops_a_producer_gracefully_like_ctrl_c() {
    let t = temp();
    let mut c = kappa(t.path());
    c.args(["produce", "--rate", "1000", "--start", "now"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // Time to install its handlers, even on a loaded machine.
    std::thread::sleep(Duration::from_secs(3));
    common::signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {}", out.status);
    // The summary (on stderr, as after Ctrl-C): what was flushed into the log.
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("produced"), "no summary: {text}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let t = temp();
    common::produce(t.path(), 3000, 5);
    common::run_drain(t.path(), &[]);
    let mut c = kappa(t.path());
    c.args(["replay", "--from", "earliest", "--version", "v2"]);
    common::ok(c);
    for args in [
        &["replay", "show", "1"][..],
        &["replay", "history"],
        &["versions", "compare", "v1", "v2", "--json"],
    ] {
        let mut c = kappa(t.path());
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        // The reader goes away before kappa writes (`kappa … | head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {} {err}", out.status);
    }
}
