//! The library's `Server` in this process, on port 0: fast checks of what `kappa run` wires
//! together (the role's thread, the replay registry, the HTTP API and their stop), without
//! starting a binary for each.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{produce, temp};
use kappa::config::Config;
use kappa::metrics::Metrics;
use kappa::pipeline::Mode;
use kappa::scale::Role;
use kappa::server::{Ended, Options, SERVER_FILE, Server};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    // The log is not written to any more: its partitions go idle at once and every
    // window becomes final.
    cfg.pipeline.idle_timeout = Duration::from_millis(200);
    cfg
}

const LIVE: Options = Options {
    role: Role::All,
    mode: Mode::Live,
    create: false,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn start(cfg: &Config, opts: Options, stop: &CancellationToken) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::start(cfg, opts, listener, stop, Arc::new(Metrics::new())).await
}

/// GET or POST (with a JSON body) on the server, off the runtime's threads: (status, JSON).
async fn call(s: &Server, path: &str, post: Option<Value>) -> (u16, Value) {
    let method = if post.is_some() { "POST" } else { "GET" };
    request(s, method, path, post, None).await
}

/// Any request, with a bearer token when given: (status, JSON).
async fn request(
    s: &Server,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", s.addr);
    let auth = token.map(|t| format!("Bearer {t}"));
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut r = match (method, body) {
            ("POST", body) => {
                let mut req = agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req.send_json(body.unwrap_or_else(|| serde_json::json!({})))
                    .unwrap()
            }
            ("DELETE", _) => {
                let mut req = agent.delete(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req.call().unwrap()
            }
            _ => agent.get(&url).call().unwrap(),
        };
        let text = r.body_mut().read_to_string().unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (r.status().as_u16(), v)
    })
    .await
    .unwrap()
}

/// Polls `path` every 100 ms until `done` holds for its JSON, up to 60 s.
async fn until(s: &Server, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let (code, v) = call(s, path, None).await;
        if code == 200 && done(&v) {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_server_in_process_computes_serves_replays_and_stops_with_its_summary() {
    let t = temp();
    produce(t.path(), 20_000, 7);
    let cfg = config(t.path());
    runtime().block_on(async {
        let stop = CancellationToken::new();
        let s = start(&cfg, LIVE, &stop).await.unwrap();
        // The CLI's commands on this data directory find the server.
        let file = std::fs::read_to_string(t.path().join(SERVER_FILE)).unwrap();
        assert_eq!(file.trim(), format!("http://{}", s.addr));

        let status = until(&s, "/api/status", "the log is not read", |v| {
            v["records"] == 20_000
        })
        .await;
        assert_eq!(status["version"], "v1", "{status}");
        let (code, ready) = call(&s, "/readyz", None).await;
        assert_eq!(code, 200, "{ready}");
        // Every window of the idle log becomes final, and is served.
        until(
            &s,
            "/api/windows?aggregate=events_by_type&size=1m",
            "no final window",
            |v| v["windows"].as_array().is_some_and(|w| !w.is_empty()),
        )
        .await;

        // A replay into a new version, through the HTTP API and the registry.
        let (code, v) = call(
            &s,
            "/api/replays",
            Some(serde_json::json!({"from": "earliest", "version": "v2"})),
        )
        .await;
        assert_eq!(code, 202, "{v}");
        let id = v["id"].as_u64().unwrap();
        until(&s, &format!("/api/replays/{id}"), "the replay ran", |v| {
            v["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("caught-up"))
        })
        .await;
        let (_, cmp) = call(&s, "/api/versions/compare?a=v1&b=v2", None).await;
        assert_eq!(cmp["summary"]["windows_differing"], 0, "{cmp}");
        assert!(
            cmp["summary"]["windows_compared"].as_u64().unwrap() > 0,
            "{cmp}"
        );

        stop.cancel();
        let Ended::Pipeline(summary) = s.finish().await.unwrap() else {
            panic!("--role all ends as a pipeline");
        };
        assert_eq!(summary.records, 20_000);
        assert!(
            !t.path().join(SERVER_FILE).exists(),
            "the server file stays"
        );
    });
}

#[test]
fn a_server_refuses_roles_it_cannot_run_before_opening_anything() {
    let t = temp();
    let cfg = config(t.path());
    runtime().block_on(async {
        let stop = CancellationToken::new();
        let worker = Options {
            role: Role::Worker,
            ..LIVE
        };
        let e = start(&cfg, worker, &stop).await.err().unwrap().to_string();
        assert!(
            e.contains("--role worker needs Kafka: set kafka.brokers"),
            "{e}"
        );
        let mut kafka = cfg.clone();
        kafka.kafka.brokers = "127.0.0.1:9".into();
        let bounded = Options {
            role: Role::Merger,
            mode: Mode::UntilCaughtUp {
                drain: false,
                until_final: None,
            },
            create: false,
        };
        let e = start(&kafka, bounded, &stop)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--until-caught-up is for --role all"), "{e}");
        let mut open = cfg.clone();
        open.http.listen = "0.0.0.0:0".parse().unwrap();
        let e = start(&open, LIVE, &stop).await.err().unwrap().to_string();
        assert!(
            e.contains("is not a loopback address: set http.token"),
            "{e}"
        );
        // Nothing was created: none of them opened the store.
        assert!(!t.path().join("kappa.redb").exists());
        // A named version the store lacks is refused unless created.
        let mut named = cfg.clone();
        named.pipeline.version = "v7".into();
        let s = start(&cfg, LIVE, &stop).await.unwrap();
        stop.cancel();
        s.finish().await.unwrap();
        let stop = CancellationToken::new();
        let e = start(&named, LIVE, &stop).await.err().unwrap().to_string();
        assert!(e.contains("no output version v7 (the store has v1)"), "{e}");
    });
}

#[test]
fn versions_are_built_promoted_and_dropped_through_the_api_only_with_the_token() {
    let t = temp();
    produce(t.path(), 5_000, 9);
    let mut cfg = config(t.path());
    cfg.http.token = "s3cret".into();
    runtime().block_on(async {
        let stop = CancellationToken::new();
        let s = start(&cfg, LIVE, &stop).await.unwrap();
        until(&s, "/api/status", "the log is not read", |v| {
            v["records"] == 5_000
        })
        .await;
        let build = serde_json::json!({"from": "earliest", "version": "v2"});
        // Without the token, or with another: refused, nothing started.
        let (code, v) = request(&s, "POST", "/api/replays", Some(build.clone()), None).await;
        assert_eq!(code, 401, "{v}");
        let (code, v) = request(
            &s,
            "POST",
            "/api/replays",
            Some(build.clone()),
            Some("nope"),
        )
        .await;
        assert_eq!(code, 401, "{v}");
        let (_, v) = call(&s, "/api/replays", None).await;
        assert_eq!(v["replays"].as_array().map(Vec::len), Some(0), "{v}");
        let (code, v) = request(&s, "POST", "/api/replays", Some(build), Some("s3cret")).await;
        assert_eq!(code, 202, "{v}");
        let id = v["id"].as_u64().unwrap();
        until(&s, &format!("/api/replays/{id}"), "v2 caught up", |v| {
            v["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("caught-up"))
        })
        .await;
        let promote = "/api/versions/v2/promote";
        let (code, v) = request(&s, "POST", promote, None, None).await;
        assert_eq!(code, 401, "{v}");
        let (code, v) = request(&s, "POST", promote, None, Some("s3cret")).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["serving"], "v2");
        let (_, v) = call(&s, "/api/versions", None).await;
        let serving: Vec<&str> = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["serving"] == true)
            .filter_map(|x| x["name"].as_str())
            .collect();
        assert_eq!(serving, ["v2"], "{v}");
        // v1 is the main pipeline's version: dropping it needs a restart first.
        let (code, v) = request(&s, "DELETE", "/api/versions/v1", None, Some("s3cret")).await;
        assert_eq!(code, 409, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("restart `kappa run`"),
            "{v}"
        );
        // Nor can the serving version go.
        let (code, v) = request(&s, "DELETE", "/api/versions/v2", None, Some("s3cret")).await;
        assert_eq!(code, 409, "{v}");
        assert!(v["error"].as_str().unwrap().contains("serving"), "{v}");
        stop.cancel();
        s.finish().await.unwrap();
    });
}
