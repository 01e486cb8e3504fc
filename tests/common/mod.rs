//! Helpers shared by the black-box tests: run the real `kappa` binary in temp dirs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `kappa run` up to the log end as it is now, every window final (a bounded run).
pub const RUN_DRAIN: [&str; 5] = [
    "run",
    "--until-caught-up",
    "--drain",
    "--listen",
    "127.0.0.1:0",
];

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kappa")
}

/// A `kappa` command on `dir`, logging quietly.
pub fn kappa(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env_remove("KAPPA_DATA_DIR");
    c
}

/// Runs to completion; panics with stderr if it failed.
pub fn ok(mut c: Command) -> Output {
    let out = c.output().expect("spawn kappa");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        c,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `produce` arguments for `n` generated events with some disorder, lateness, duplicates
/// and malformed records (shared by the embedded-log and Kafka tests).
pub fn produce_args(n: u64, seed: u64) -> Vec<String> {
    let args = [
        "produce",
        "--rate",
        "0",
        "--late-share",
        "0.01",
        "--duplicate-share",
        "0.02",
        "--malformed-share",
        "0.005",
        "--disorder",
        "10s",
    ];
    let mut v: Vec<String> = args.iter().map(ToString::to_string).collect();
    v.extend([
        "--events".into(),
        n.to_string(),
        "--seed".into(),
        seed.to_string(),
    ]);
    v
}

/// `produce` arguments for `n` generated reviews, 50 a second of event time, 2 % delivered
/// twice and 1 % malformed (shared by the embedded-log and Kafka tests).
pub fn review_args(n: u64, seed: u64) -> Vec<String> {
    review_args_at(n, seed, 50)
}

/// [`review_args`] at `per_second` reviews a second of event time.
pub fn review_args_at(n: u64, seed: u64, per_second: u32) -> Vec<String> {
    let per_second = per_second.to_string();
    let args = [
        "produce",
        "--stream",
        "reviews",
        "--rate",
        "0",
        "--sim-rate",
        &per_second,
        "--duplicate-share",
        "0.02",
        "--malformed-share",
        "0.01",
    ];
    let mut v: Vec<String> = args.iter().map(ToString::to_string).collect();
    v.extend([
        "--events".into(),
        n.to_string(),
        "--seed".into(),
        seed.to_string(),
    ]);
    v
}

/// Generated events as JSON lines (`kappa produce --output`, with `args`), written to
/// `dir/events.jsonl` and returned.
pub fn generate(dir: &Path, args: &[&str]) -> String {
    let file = dir.join("events.jsonl");
    let mut c = kappa(dir);
    c.args(["produce", "--rate", "0", "--output"])
        .arg(&file)
        .args(args);
    ok(c);
    std::fs::read_to_string(file).unwrap()
}

/// Epoch ms of an RFC 3339 time.
pub fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis()
}

/// Generates `n` events into the embedded log of `dir` (see [`produce_args`]).
pub fn produce(dir: &Path, n: u64, seed: u64) {
    let mut c = kappa(dir);
    c.args(produce_args(n, seed));
    ok(c);
}

/// Appends JSON lines from `text` through `kappa produce --input -`.
pub fn produce_lines(dir: &Path, text: &str) {
    let mut c = kappa(dir);
    c.args(["produce", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce --input failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kappa run --until-caught-up --drain` with extra args; returns stdout.
pub fn run_drain(dir: &Path, extra: &[&str]) -> String {
    let mut c = kappa(dir);
    c.args(RUN_DRAIN).args(extra);
    String::from_utf8(ok(c).stdout).unwrap()
}

/// `kappa export` of the serving version.
pub fn export(dir: &Path) -> Vec<u8> {
    let mut c = kappa(dir);
    c.arg("export");
    ok(c).stdout
}

/// Export lines of `version` without the version field, sorted: comparable across versions.
pub fn export_version(dir: &Path, version: &str) -> Vec<String> {
    export_version_by(kappa(dir), version)
}

/// [`export_version`] through `c`, a `kappa` command on the data directory (and log).
pub fn export_version_by(mut c: Command, version: &str) -> Vec<String> {
    c.args(["export", "--version", version]);
    let tag = format!("\"version\":\"{version}\",");
    let mut lines: Vec<String> = String::from_utf8(ok(c).stdout)
        .unwrap()
        .lines()
        .map(|l| l.replacen(&tag, "", 1))
        .collect();
    lines.sort();
    lines
}

/// Every dead letter in the store, as `kappa dead-letters --format json` lists them (all on
/// one page).
pub fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let mut c = kappa(dir);
    c.args(["dead-letters", "--format", "json", "--limit", "10000"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert!(v["next"].is_null(), "all dead letters on one page");
    v["dead_letters"].as_array().unwrap().clone()
}

/// Number of dead letters in the store.
pub fn dead_letter_count(dir: &Path) -> usize {
    dead_letters(dir).len()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Reads the `new records: A accepted, L late, D duplicates, I invalid` line.
pub fn counts(stdout: &str) -> [u64; 4] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("new records:"))
        .unwrap_or_else(|| panic!("no counts in {stdout}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    [nums[0], nums[1], nums[2], nums[3]]
}

/// A `kappa run` in the background, with the address it listens on.
pub struct Server {
    pub child: Child,
    pub base: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `kappa run` (live) on a free port and waits until `/healthz` answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_env(dir, extra, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(String, String)]) -> Self {
        let mut c = kappa(dir);
        c.args(["run", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        // The binary prints "listening on http://ADDR" on stderr once bound; keep the rest.
        let stderr = child.stderr.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = text.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    tx.send(addr.to_string()).ok();
                    sent = true;
                }
                let mut t = sink.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("kappa run did not start listening");
        let s = Self {
            child,
            base,
            stderr: text,
        };
        s.wait_for(|s| s.get("/healthz").0 == 200, "healthz");
        s
    }

    /// What the process wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        // Give the reader thread a moment to drain a process that just exited.
        std::thread::sleep(Duration::from_millis(200));
        self.stderr.lock().unwrap().clone()
    }

    /// GET; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        get(&format!("{}{}", self.base, path))
    }

    /// Polls `f` for up to 60 s.
    pub fn wait_for(&self, f: impl Fn(&Self) -> bool, what: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    /// SIGINT, then waits; returns the exit status.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        signal(&self.child, "INT");
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1).
pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

/// A plain HTTP GET: (status, body).
pub fn get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    match agent.get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// A fresh temp dir.
pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Where temp dirs live (for messages).
pub fn path(t: &tempfile::TempDir) -> PathBuf {
    t.path().to_path_buf()
}
/// SIGKILLs bounded runs (`run --until-caught-up --drain`) started by `command` at random
/// moments within `run_ms` (weighted towards the later part of a run, where windows are
/// final) until `kills` of them died mid-run. A run that finished before its kill calls
/// `finished` (which starts the store over) and does not count.
pub fn kill_bounded_runs(
    kills: usize,
    run_ms: u64,
    rng: &mut impl rand::Rng,
    mut command: impl FnMut() -> Command,
    mut finished: impl FnMut(),
) {
    let mut done = 0;
    for _ in 0..kills * 20 {
        if done == kills {
            return;
        }
        let mut c = command();
        c.args(RUN_DRAIN)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let wait = Duration::from_millis(rng.random_range(run_ms / 10..run_ms));
        let t = Instant::now();
        while t.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            done += 1;
        } else {
            finished();
        }
    }
    assert_eq!(
        done, kills,
        "could not kill a running pipeline {kills} times"
    );
}

pub mod broker;
pub mod corpus;

/// A tmpfs of `size` mounted at `at` (root only), unmounted on drop.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs for the store (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }

    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A replay from a time kappa's event-time index does not reach: two paced batches (event
/// time = wall clock) written seconds apart, each read by a bounded `kappa run` with 1 s
/// windows (too few records per partition for an index checkpoint). A new version from a
/// time between them must start every partition at the second batch's first record —
/// found by the log's record times — and compute the windows from there exactly as the
/// live run did. `cmd` is a `kappa` command on the data directory and the log.
pub fn replay_from_before_the_index(cmd: &dyn Fn() -> Command) {
    let cfg = temp();
    let file = cfg.path().join("k.toml");
    std::fs::write(
        &file,
        "[pipeline]\nwindow-sizes = [\"1s\"]\nmax-delay = \"1s\"\nmax-future = \"1s\"\n",
    )
    .unwrap();
    let k = |args: &[&str]| {
        let mut c = cmd();
        c.arg("--config").arg(&file).args(args);
        String::from_utf8(ok(c).stdout).unwrap()
    };
    let batch = [
        "produce",
        "--rate",
        "1000",
        "--flat",
        "--start",
        "now",
        "--events",
        "3000",
        "--late-share",
        "0",
        "--duplicate-share",
        "0",
        "--malformed-share",
        "0",
        "--disorder",
        "0s",
    ];
    // The value after `label` in a plan line: `0:690,1:822,…`.
    let field = |text: &str, label: &str| -> String {
        let at = text
            .find(label)
            .unwrap_or_else(|| panic!("no {label:?} in {text}"));
        text[at + label.len()..]
            .split([' ', ')', '\n'])
            .next()
            .unwrap()
            .to_string()
    };
    k(&batch);
    k(&RUN_DRAIN);
    let first_ends = field(
        &k(&[
            "replay",
            "--version",
            "probe",
            "--from",
            "earliest",
            "--dry-run",
        ]),
        "log end now: ",
    );
    // T − max-delay − max-future is after every record of the first batch.
    std::thread::sleep(Duration::from_secs(3));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    k(&batch);
    k(&RUN_DRAIN);
    let plan = k(&["replay", "--version", "v2", "--from", &t, "--dry-run"]);
    assert_eq!(
        field(&plan, "start offset per partition: "),
        first_ends,
        "each partition starts after the first batch:\n{plan}"
    );
    assert!(
        plan.contains("start at their first record written at or after"),
        "{plan}"
    );
    k(&["replay", "--version", "v2", "--from", &t]);
    let export = |v: &str| export_version_by(cmd(), v);
    let start = |l: &str| {
        ms(l.split("\"window_start\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap())
    };
    // Windows starting at --from or later, up to the last one the replay finalised (it
    // stops when caught up; the window holding --from began before it).
    let from = ms(&t);
    let replayed: Vec<String> = export("v2")
        .into_iter()
        .filter(|l| start(l) >= from)
        .collect();
    assert!(
        !replayed.is_empty(),
        "the replay finalised no window from {t}"
    );
    let last = replayed.iter().map(|l| start(l)).max().unwrap();
    let live: Vec<String> = export("v1")
        .into_iter()
        .filter(|l| (from..=last).contains(&start(l)))
        .collect();
    let differ: Vec<&String> = replayed
        .iter()
        .filter(|l| !live.contains(l))
        .chain(live.iter().filter(|l| !replayed.contains(l)))
        .take(4)
        .collect();
    assert!(
        differ.is_empty(),
        "the replay's windows from {t} differ from the live run's ({} vs {} lines), e.g. {differ:#?}",
        replayed.len(),
        live.len()
    );
}
