//! The HTTP server under connection abuse, and the CLI against servers that do not answer.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Whether the server closed `sock` (EOF or reset) within a generous deadline.
fn closed_by_server(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an answer (a 408, say) before the close
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                );
            }
        }
    }
}

#[test]
fn half_sent_requests_stalled_bodies_and_idle_connections_are_closed_and_health_stays_reachable() {
    let dir = temp();
    produce(dir.path(), 1_000, 1);
    let env = [
        ("KAPPA_HTTP__HEADER_READ_TIMEOUT", "20s"),
        ("KAPPA_HTTP__MAX_CONNECTIONS", "50"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let s = Server::start_env(dir.path(), &[], &env);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Six times the cap of connections that send half a request head and wait.
    let mut half: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect();
    // Health and readiness answer while half-sent requests still hold the server's
    // connections (a prober that sends at once gets in; waiting for the header timeouts
    // would take six rounds of 20 s).
    s.wait_for(
        |s| s.get("/healthz").0 == 200,
        "healthz with the cap reached",
    );
    s.wait_for(|s| s.get("/readyz").0 != 0, "readyz with the cap reached");
    // A shed connection is closed by its own task: on a loaded machine the last few may
    // take a moment, so count until the cap holds (or a generous deadline passes).
    let count_open = |half: &mut Vec<TcpStream>| {
        half.iter_mut()
            .map(|c| {
                c.set_nonblocking(true).unwrap();
                let open = matches!(c.read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                c.set_nonblocking(false).unwrap();
                usize::from(open)
            })
            .sum::<usize>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut still_open = count_open(&mut half);
    while still_open > 50 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        still_open = count_open(&mut half);
    }
    assert!(
        (1..=50).contains(&still_open),
        "{still_open} half-sent connections open: the cap holds and health got in before their timeout"
    );
    // A control request whose head came and whose body stalls.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/replays HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .unwrap();
    // A keep-alive connection that got its answer and then idles.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // Every one of them is closed by the server: shed at the cap or timed out.
    for (i, c) in half.iter_mut().enumerate() {
        assert!(closed_by_server(c), "half-sent connection {i} still open");
    }
    assert!(
        closed_by_server(&mut idle),
        "idle keep-alive connection still open"
    );
    assert!(
        closed_by_server(&mut stalled),
        "stalled request body still open"
    );
    assert_eq!(s.get("/healthz").0, 200);
    let log = s.stderr_text();
    assert_eq!(
        log.matches("HTTP connection limit reached").count(),
        1,
        "one line for the episode: {log}"
    );
}

/// Runs `cmd`, killing it if it has not ended within a generous deadline.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(90) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still waiting after 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Every CLI command that talks to a server, pointed at `url`.
fn server_commands(url: &str) -> Vec<Vec<String>> {
    let cmds: [&[&str]; 10] = [
        &["query", "--server", url],
        &["export", "--server", url],
        &["dead-letters", "--server", url],
        &["replay", "status", "1", "--server", url],
        &["replay", "history", "--server", url],
        &["replay", "cancel", "1", "--server", url],
        &["replay", "--from", "earliest", "--server", url],
        &["versions", "list", "--server", url],
        &["versions", "promote", "v2", "--server", url],
        &["versions", "drop", "v2", "--server", url],
    ];
    cmds.iter()
        .map(|c| c.iter().map(ToString::to_string).collect())
        .collect()
}

/// A listener on loopback that hands each accepted connection to `each` on its own thread.
fn fake_server(each: fn(TcpStream)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || each(c));
        }
    });
    addr
}

fn check_cli_against(addr: &str, says: &str) {
    let dir = temp(); // no store here
    let url = format!("http://{addr}");
    for args in server_commands(&url) {
        let mut c = kappa(dir.path());
        c.args(&args)
            .env("KAPPA_HTTP__CLIENT_READ_TIMEOUT", "1s")
            .env("KAPPA_HTTP__CLIENT_EXPORT_TIMEOUT", "1s");
        let out = run_bounded(c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(addr) && err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("held by"), "{args:?}: {err}");
    }
}

#[test]
fn the_cli_gives_up_on_a_server_that_never_answers() {
    // Accepts, reads the request, and never answers.
    let addr = fake_server(|mut c| {
        let mut buf = [0u8; 4096];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    check_cli_against(&addr, "did not answer within 1s (http.client-");
}

#[test]
fn the_cli_says_which_address_reset_the_connection() {
    // Closes with the request unread, which resets the connection.
    let addr = fake_server(|c| {
        let mut b = [0u8; 1];
        let _ = c.peek(&mut b);
        drop(c);
    });
    check_cli_against(&addr, "closed the connection without an answer");
}
