//! A real Kafka-protocol broker for the black-box tests: Tansu (Apache-2.0, written in Rust),
//! one process per `Broker`, in-memory storage, on a free port of 127.0.0.1.
//!
//! The binary comes from `$TANSU_BIN`, else from the cache where `scripts/tansu` installs
//! it (`scripts/test` runs that script and sets the variable). A missing binary is a test
//! failure, never a silent skip. The broker's output goes to a log file in a temp dir (kept
//! when the test panics); its path is in every panic message.
//!
//! Known Tansu 0.6 quirks (see the report in the issue): the high watermark reported by
//! ListOffsets is the base offset of the last batch + 1 (not the last offset + 1) when the
//! last batch holds several records; ListOffsets by timestamp answers offset 0; joining a
//! consumer group takes about `session.timeout.ms / 2`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried by `start` when the broker exits at once (port taken meanwhile).
const PORT_ATTEMPTS: usize = 5;

/// A running Tansu broker; killed on drop.
pub struct Broker {
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub bootstrap: String,
    pub port: u16,
    /// The broker's stdout and stderr (all its runs, appended).
    pub log: PathBuf,
    child: Child,
    bin: PathBuf,
    running: bool,
    dir: tempfile::TempDir,
}

/// Why a broker did not become ready.
enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let bin = tansu_bin();
        let dir = tempfile::Builder::new()
            .prefix("kappa-tansu-")
            .tempdir()
            .expect("temp dir for the broker log");
        let log = dir.path().join("tansu.log");
        let mut exits = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(&bin, port, &log);
            match wait_ready(&mut child, port, READY_TIMEOUT) {
                Ok(()) => {
                    return Self {
                        bootstrap: format!("127.0.0.1:{port}"),
                        port,
                        log,
                        child,
                        bin,
                        running: true,
                        dir,
                    };
                }
                Err(NotReady::Exited(status)) => exits.push(format!("port {port}: {status}")),
                Err(NotReady::TimedOut) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = dir.keep();
                    panic!(
                        "the test broker did not listen on 127.0.0.1:{port} within {READY_TIMEOUT:?}; log {}:\n{}",
                        log.display(),
                        tail(&log)
                    );
                }
            }
        }
        let _ = dir.keep();
        panic!(
            "the test broker exited at start {PORT_ATTEMPTS} times ({}); log {}:\n{}",
            exits.join(", "),
            log.display(),
            tail(&log)
        );
    }

    /// Kills the broker and starts a new one on the same port (memory storage: all data is
    /// lost), waiting until it listens again.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            let mut child = spawn(&self.bin, self.port, &self.log);
            match wait_ready(&mut child, self.port, deadline - Instant::now()) {
                Ok(()) => {
                    self.child = child;
                    self.running = true;
                    return;
                }
                // The port may still be held for a moment (or was taken meanwhile): retry.
                Err(NotReady::Exited(status)) => {
                    last = format!("exited with {status}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(NotReady::TimedOut) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "timed out".into();
                }
            }
        }
        panic!(
            "the test broker did not listen again on {} within {READY_TIMEOUT:?} ({last}); log {}:\n{}",
            self.bootstrap,
            self.log.display(),
            tail(&self.log)
        );
    }

    /// Kills the broker and waits for it (idempotent).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.running = false;
        }
    }

    /// The broker's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temp dir holding the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("test broker log kept at {}", self.log.display());
        }
    }
}

/// The Tansu binary: `$TANSU_BIN`, else the `scripts/tansu` cache path. Panics if missing.
pub fn tansu_bin() -> PathBuf {
    let path = match nonempty("TANSU_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => default_path(),
    };
    match path {
        Some(p) if p.is_file() => p,
        other => panic!(
            "the test broker is not installed: run scripts/tansu (scripts/test does it); looked for {}",
            other.map_or_else(
                || "$HOME/.cache/kappa/tansu/tansu".into(),
                |p| p.display().to_string()
            )
        ),
    }
}

/// `${TANSU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa}/tansu/tansu`, as in scripts/tansu.
fn default_path() -> Option<PathBuf> {
    let cache = match nonempty("TANSU_CACHE_DIR") {
        Some(c) => PathBuf::from(c),
        None => match nonempty("XDG_CACHE_HOME") {
            Some(x) => PathBuf::from(x).join("kappa"),
            None => PathBuf::from(nonempty("HOME")?)
                .join(".cache")
                .join("kappa"),
        },
    };
    Some(cache.join("tansu").join("tansu"))
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

/// Starts `tansu broker` on `port`, its output appended to `log`.
fn spawn(bin: &Path, port: u16, log: &Path) -> Child {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open broker log {}: {e}", log.display()));
    let url = format!("tcp://127.0.0.1:{port}");
    let args = [
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ];
    let _ = writeln!(out, "=== {} {}", bin.display(), args.join(" "));
    let err: File = out.try_clone().expect("clone log file handle");
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the test broker is not installed or does not run ({}: {e}): run scripts/tansu (scripts/test does it)",
                bin.display()
            )
        });
    // The broker outlives a test binary that exits without dropping it (statics are not
    // dropped): a watchdog stops it once this process is gone.
    let _ = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
            std::process::id(),
            child.id()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    child
}

/// Waits until `child` is alive, accepts TCP connections on `port`, and (where /proc tells)
/// is the process listening there, not something that took the port meanwhile.
fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Exited(status));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
            && listens_on(child.id(), port)
        {
            // Tansu exits (status 0) right after failing to bind: be sure it is still up.
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether process `pid` owns a listening IPv4 TCP socket on `port` (Linux /proc); `true`
/// where /proc cannot tell.
fn listens_on(pid: u32, port: u16) -> bool {
    let (Ok(table), Ok(fds)) = (
        std::fs::read_to_string(format!("/proc/{pid}/net/tcp")),
        std::fs::read_dir(format!("/proc/{pid}/fd")),
    ) else {
        return true;
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let port_hex = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        f.len() > 9 && f[1].ends_with(&port_hex) && f[3] == "0A" && inodes.iter().any(|i| i == f[9])
    })
}

/// The last lines of a log, for panic messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
