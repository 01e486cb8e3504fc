//! A real Apache Kafka broker for the black-box tests: one JVM per `Broker`, a single-node
//! KRaft cluster (combined broker and controller) on free ports of 127.0.0.1, its log
//! directory in a temp dir that survives `stop`/`start` (a restart keeps every record,
//! committed offset and topic).
//!
//! The jars come from `$KAFKA_LIBS`, else from the cache where `scripts/kafka` installs
//! them (`scripts/test` runs that script). A missing install is a test failure, never a
//! silent skip. The broker's output goes to a log file in the temp dir (kept when the test
//! panics); its path is in every panic message. Brokers die with their test binary (a
//! watchdog per JVM), and on drop.
//!
//! Listeners: PLAINTEXT (`bootstrap`), SASL_PLAINTEXT with SCRAM-SHA-512 (`sasl_bootstrap`,
//! user [`SASL_USER`] / [`SASL_PASSWORD`], created at format time) and the controller's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The Apache Kafka version `scripts/kafka` installs (keep both, and docker-compose.yml, in
/// step).
pub const KAFKA_VERSION: &str = "4.4.0";
/// The SCRAM-SHA-512 user of the SASL listener.
pub const SASL_USER: &str = "kappa";
/// Its password.
pub const SASL_PASSWORD: &str = "kappa-test-secret-7f3a";

/// How long a broker may take to start (two cores shared by several builds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Fresh ports tried by `start` when the broker exits at once (a port taken meanwhile).
const PORT_ATTEMPTS: usize = 3;
/// The line the broker logs once it serves requests (logger `kafka.server.KafkaRaftServer`).
const STARTED: &str = "Kafka Server started";
/// A fixed cluster id (any valid base64 UUID; each broker has its own log directory).
const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

/// A running (or stopped) Apache Kafka broker; killed on drop.
pub struct Broker {
    /// `127.0.0.1:PORT` of the PLAINTEXT listener, for `bootstrap.servers`.
    pub bootstrap: String,
    pub port: u16,
    /// `127.0.0.1:PORT` of the SASL_PLAINTEXT (SCRAM-SHA-512) listener.
    pub sasl_bootstrap: String,
    /// The broker's output (all its runs, appended).
    pub log: PathBuf,
    child: Option<Child>,
    libs: PathBuf,
    ports: Ports,
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
struct Ports {
    plain: u16,
    sasl: u16,
    controller: u16,
}

impl Broker {
    /// Formats a new log directory and starts a broker on free ports; waits until it
    /// serves requests.
    pub fn start() -> Self {
        let libs = kafka_libs();
        let dir = tempfile::Builder::new()
            .prefix("kappa-kafka-")
            .tempdir()
            .expect("temp dir for the broker");
        let log = dir.path().join("kafka.log");
        let mut b = Self {
            bootstrap: String::new(),
            port: 0,
            sasl_bootstrap: String::new(),
            log,
            child: None,
            libs,
            ports: Ports {
                plain: 0,
                sasl: 0,
                controller: 0,
            },
            dir,
        };
        let t0 = Instant::now();
        let mut exits = Vec::new();
        for attempt in 0..PORT_ATTEMPTS {
            b.set_ports(Ports {
                plain: free_port(),
                sasl: free_port(),
                controller: free_port(),
            });
            if attempt == 0 {
                b.format();
            }
            match b.spawn_and_wait() {
                Ok(()) => {
                    static ONCE: Once = Once::new();
                    ONCE.call_once(|| {
                        eprintln!(
                            "test broker: Apache Kafka {KAFKA_VERSION} (KRaft, one node) formatted and started in {:.1} s",
                            t0.elapsed().as_secs_f64()
                        );
                    });
                    return b;
                }
                Err(e) => exits.push(e),
            }
        }
        b.keep();
        panic!(
            "the test broker did not start {PORT_ATTEMPTS} times ({}); log {}:\n{}",
            exits.join("; "),
            b.log.display(),
            tail(&b.log)
        );
    }

    /// Starts the stopped broker again on the same ports and log directory (every record,
    /// topic and committed offset kept); waits until it serves requests.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running broker");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        // The ports may still be held for a moment after the stop: retry until the deadline.
        while Instant::now() < deadline {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        self.keep();
        panic!(
            "the test broker did not start again on {} within {READY_TIMEOUT:?} ({last}); log {}:\n{}",
            self.bootstrap,
            self.log.display(),
            tail(&self.log)
        );
    }

    /// Stops and starts the broker (its data kept).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the broker (SIGKILL: an abrupt loss, as a crash or a network cut) and waits
    /// for it; idempotent. The log directory stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The broker's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temp dir holding the log and the data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a Kafka command-line tool (`main` class, e.g.
    /// `org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`) against this broker's
    /// PLAINTEXT listener (`--bootstrap-server` is added); panics unless it succeeds.
    pub fn tool(&self, main: &str, args: &[&str]) -> String {
        let out = self.tool_output(main, args);
        assert!(
            out.status.success(),
            "{main} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Broker::tool`] without the success check.
    pub fn tool_output(&self, main: &str, args: &[&str]) -> Output {
        java(&self.libs)
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", main])
            .args(["--bootstrap-server", &self.bootstrap])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running java {main}: {e}"))
    }

    fn set_ports(&mut self, p: Ports) {
        self.ports = p;
        self.port = p.plain;
        self.bootstrap = format!("127.0.0.1:{}", p.plain);
        self.sasl_bootstrap = format!("127.0.0.1:{}", p.sasl);
        let data = self.dir.path().join("data");
        let props = format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{c}
listeners=PLAINTEXT://127.0.0.1:{p},SASL_PLAINTEXT://127.0.0.1:{s},CONTROLLER://127.0.0.1:{c}
advertised.listeners=PLAINTEXT://127.0.0.1:{p},SASL_PLAINTEXT://127.0.0.1:{s}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs={data}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=100
group.min.session.timeout.ms=1000
log.flush.interval.messages=9223372036854775807
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
auto.create.topics.enable=false
delete.topic.enable=true
",
            p = p.plain,
            s = p.sasl,
            c = p.controller,
            data = data.display(),
        );
        std::fs::write(self.props(), props).expect("write server.properties");
    }

    fn props(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    /// `StorageTool format`: a new log directory with the SCRAM user.
    fn format(&self) {
        let scram = format!("SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]");
        let props = self.props();
        let mut c = java(&self.libs);
        c.args([
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "kafka.tools.StorageTool",
        ])
        .args(["format", "--cluster-id", CLUSTER_ID, "--config"])
        .arg(&props)
        .args(["--add-scram", &scram])
        .stdin(Stdio::null());
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("running java (Java >= 17 is needed): {e}"));
        let mut log = self.open_log();
        let _ = writeln!(log, "=== {c:?}");
        let _ = log.write_all(&out.stdout);
        let _ = log.write_all(&out.stderr);
        assert!(
            out.status.success(),
            "formatting the broker's log directory failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn open_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open broker log {}: {e}", self.log.display()))
    }

    /// Spawns the broker JVM and waits until it logs that it started (or exits).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut out = self.open_log();
        let mut c = java(&self.libs);
        c.args([
            "-Xms64m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            "kafka.Kafka",
        ])
        .arg(self.props());
        let _ = writeln!(out, "=== {c:?}");
        let err = out.try_clone().expect("clone log file handle");
        let mut child = c
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("running java (Java >= 17 is needed): {e}"));
        watchdog(child.id());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("broker exited with {status}"));
            }
            if self.logged_since(from, STARTED)
                && TcpStream::connect_timeout(
                    &std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.plain)),
                    Duration::from_millis(500),
                )
                .is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not started within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the log has `needle` after byte `from`.
    fn logged_since(&self, from: u64, needle: &str) -> bool {
        std::fs::read(&self.log).is_ok_and(|b| {
            let from = usize::try_from(from).unwrap_or(usize::MAX).min(b.len());
            String::from_utf8_lossy(&b[from..]).contains(needle)
        })
    }

    fn keep(&mut self) {
        self.dir.disable_cleanup(true);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.keep();
            eprintln!("test broker log kept at {}", self.log.display());
        }
    }
}

/// `java -cp LIBS/*`.
fn java(libs: &Path) -> Command {
    let mut c = Command::new(java_bin());
    c.arg("-cp").arg(libs.join("*"));
    c
}

/// `$JAVA_HOME/bin/java` or `java` on the PATH.
fn java_bin() -> PathBuf {
    nonempty("JAVA_HOME").map_or_else(
        || PathBuf::from("java"),
        |h| PathBuf::from(h).join("bin").join("java"),
    )
}

/// The directory of the Kafka jars: `$KAFKA_LIBS`, else the `scripts/kafka` cache path.
/// Panics if it is not there.
pub fn kafka_libs() -> PathBuf {
    let path = match nonempty("KAFKA_LIBS") {
        Some(p) => Some(PathBuf::from(p)),
        None => default_libs(),
    };
    match path {
        Some(p) if p.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).is_file() => p,
        other => panic!(
            "the test broker (Apache Kafka {KAFKA_VERSION}) is not installed: run scripts/kafka (scripts/test does it); looked in {}",
            other.map_or_else(
                || format!("$HOME/.cache/kappa/kafka-{KAFKA_VERSION}/libs"),
                |p| p.display().to_string()
            )
        ),
    }
}

/// `${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa}/kafka-VERSION/libs`, as in
/// scripts/kafka.
fn default_libs() -> Option<PathBuf> {
    let cache = match nonempty("KAFKA_CACHE_DIR") {
        Some(c) => PathBuf::from(c),
        None => match nonempty("XDG_CACHE_HOME") {
            Some(x) => PathBuf::from(x).join("kappa"),
            None => PathBuf::from(nonempty("HOME")?)
                .join(".cache")
                .join("kappa"),
        },
    };
    Some(cache.join(format!("kafka-{KAFKA_VERSION}")).join("libs"))
}

fn nonempty(var: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(var).filter(|v| !v.is_empty())
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The broker outlives a test binary that exits without dropping it (statics are not
/// dropped): a watchdog kills it once this process is gone.
fn watchdog(pid: u32) {
    let _ = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -0 {me} 2>/dev/null || kill -9 {pid} 2>/dev/null",
            me = std::process::id(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The last lines of a log, for panic messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
