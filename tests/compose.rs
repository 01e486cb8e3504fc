//! The deployment files — `Dockerfile`, `docker-compose.yml`, `prometheus/`, `grafana/` —
//! checked against the repository and the real binary, without a Docker engine.
//!
//! YAML is read by PyYAML (`python3`, with duplicate keys rejected as Compose does); the
//! rest is plain Rust. What is checked: build contexts and `COPY` sources exist, bind
//! mounts exist, every `KAPPA_*` variable and every kappa command line is accepted by
//! `kappa` itself, the services agree on brokers, topic, ports and start order, and
//! Prometheus, Grafana and the dashboard point at things that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value};

/// Loads one YAML file and prints it as JSON. Duplicate keys are an error (Compose
/// rejects them; PyYAML alone would keep the last one silently); merge keys (`<<`) work.
const LOAD_YAML: &str = r#"
import json, sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: python3 -m pip install pyyaml")

class Strict(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)

Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
with open(sys.argv[1], encoding="utf-8") as f:
    json.dump(yaml.load(f, Loader=Strict), sys.stdout, default=str)
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A YAML file of the repository as JSON.
fn yaml(rel: &str) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(LOAD_YAML)
        .arg(root().join(rel))
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to read {rel}: {e}"));
    assert!(
        out.status.success(),
        "reading {rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `docker-compose.yml`, with the accessors the checks need.
struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Self {
        let doc = yaml("docker-compose.yml");
        assert!(
            doc["services"].is_object(),
            "docker-compose.yml has no services"
        );
        Self { doc }
    }

    fn services(&self) -> &Map<String, Value> {
        self.doc["services"].as_object().unwrap()
    }

    fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
    }

    /// Services built from the repository root: they run the kappa image.
    fn kappa_services(&self) -> Vec<(&str, &Value)> {
        let here = root().canonicalize().unwrap();
        let v: Vec<_> = self
            .services()
            .iter()
            .filter(|(_, s)| {
                build_context(s)
                    .and_then(|(ctx, _)| root().join(ctx).canonicalize().ok())
                    .is_some_and(|p| p == here)
            })
            .map(|(n, s)| (n.as_str(), s))
            .collect();
        assert!(!v.is_empty(), "no service is built from ./Dockerfile");
        v
    }

    /// The kappa service whose command is `subcommand` (e.g. `run`), exactly one; a `run`
    /// with `--role worker|merger` (scaling out) does not count.
    fn kappa_running(&self, subcommand: &str) -> (&str, &Value) {
        let found: Vec<_> = self
            .kappa_services()
            .into_iter()
            .filter(|(_, s)| kappa_subcommand(&command(s)).as_deref() == Some(subcommand))
            .filter(|(_, s)| flag_value(&command(s), "--role").is_none())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one kappa service running `{subcommand}`, found {:?}",
            found.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        found[0]
    }

    /// Container ports of a service: published (`ports`) and `expose`d.
    fn container_ports(&self, name: &str) -> BTreeSet<u16> {
        let s = self.service(name);
        let mut set: BTreeSet<u16> = ports(s).into_iter().map(|(_, c)| c).collect();
        for e in s["expose"].as_array().into_iter().flatten() {
            set.insert(as_str(e).unwrap().parse().unwrap());
        }
        set
    }
}

/// `build:` as (context, dockerfile).
fn build_context(s: &Value) -> Option<(String, String)> {
    match &s["build"] {
        Value::String(c) => Some((c.clone(), "Dockerfile".into())),
        Value::Object(b) => Some((
            b.get("context")
                .and_then(as_str)
                .unwrap_or_else(|| ".".into()),
            b.get("dockerfile")
                .and_then(as_str)
                .unwrap_or_else(|| "Dockerfile".into()),
        )),
        _ => None,
    }
}

/// `command:` as arguments (list form, or a string split on whitespace).
fn command(s: &Value) -> Vec<String> {
    match &s["command"] {
        Value::Array(a) => a
            .iter()
            .map(|v| as_str(v).expect("command arguments are strings"))
            .collect(),
        Value::String(c) => c.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// `environment:` in either form, values as YAML gave them.
fn environment(s: &Value) -> BTreeMap<String, Value> {
    match &s["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let e = e.as_str().expect("environment entries are strings");
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), Value::String(v.to_string()))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `ports:` as (published, container) pairs.
fn ports(s: &Value) -> Vec<(Option<u16>, u16)> {
    let num = |t: &str| -> u16 {
        let t = t.split('/').next().unwrap();
        t.parse()
            .unwrap_or_else(|_| panic!("port {t:?} is not a number"))
    };
    s["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::String(p) => {
                let parts: Vec<&str> = p.split(':').collect();
                let container = num(parts[parts.len() - 1]);
                let published = (parts.len() >= 2).then(|| num(parts[parts.len() - 2]));
                (published, container)
            }
            Value::Object(o) => (
                o.get("published").and_then(as_str).map(|p| num(&p)),
                num(&as_str(&o["target"]).unwrap()),
            ),
            other => panic!("port {other} must be a quoted string (YAML reads 22:22 as a number)"),
        })
        .collect()
}

/// One entry of `volumes:`.
struct Mount {
    /// Host path of a bind mount, the name of a named volume, none for an anonymous one.
    source: Option<String>,
    target: String,
    bind: bool,
}

fn mounts(s: &Value) -> Vec<Mount> {
    s["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::String(v) => {
                let parts: Vec<&str> = v.split(':').collect();
                if parts.len() == 1 {
                    Mount {
                        source: None,
                        target: parts[0].into(),
                        bind: false,
                    }
                } else {
                    let src = parts[0];
                    Mount {
                        source: Some(src.into()),
                        target: parts[1].into(),
                        bind: src.starts_with(['.', '/', '~']),
                    }
                }
            }
            Value::Object(o) => Mount {
                source: o.get("source").and_then(as_str),
                target: as_str(&o["target"]).unwrap(),
                bind: o.get("type").and_then(Value::as_str) == Some("bind"),
            },
            other => panic!("volume {other} is neither a string nor a mapping"),
        })
        .collect()
}

/// The host path behind `container_path` in service `s`, through its bind mounts.
fn host_path(s: &Value, container_path: &str) -> Option<PathBuf> {
    let m = mounts(s)
        .into_iter()
        .filter(|m| m.bind && Path::new(container_path).starts_with(&m.target))
        .max_by_key(|m| m.target.len())?;
    let rest = Path::new(container_path).strip_prefix(&m.target).ok()?;
    let host = root().join(m.source?);
    Some(if rest.as_os_str().is_empty() {
        host
    } else {
        host.join(rest)
    })
}

/// The kappa subcommand of an argument list: the first word that is not a global flag or
/// its value.
fn kappa_subcommand(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if GLOBAL_FLAGS.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a.clone());
        }
    }
    None
}

/// kappa's global flags that take a value (they may stand anywhere on the line).
const GLOBAL_FLAGS: [&str; 4] = ["--config", "--data-dir", "--kafka", "--topic"];

/// The global flags (and values) of an argument list, for `kappa ... config`.
fn global_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if GLOBAL_FLAGS.contains(&a.as_str()) {
            out.push(a.clone());
            out.extend(it.next().cloned());
        } else if GLOBAL_FLAGS.iter().any(|f| a.starts_with(&format!("{f}="))) {
            out.push(a.clone());
        }
    }
    out
}

/// The value of `--flag V` or `--flag=V`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(String::from)
        }
    })
}

/// One Dockerfile instruction (continuation lines joined), with the stage it is in.
struct Instruction {
    stage: usize,
    op: String,
    args: String,
}

fn dockerfile(rel: &str) -> Vec<Instruction> {
    let text = read(rel);
    let mut out = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        // Comments (the `# syntax=` directive too) may also stand inside a continuation.
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let full = std::mem::take(&mut pending);
        let (op, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" && !out.is_empty() {
            stage += 1;
        }
        out.push(Instruction {
            stage,
            op,
            args: args.trim().to_string(),
        });
    }
    out
}

/// `KAPPA_*` variables that the final stage of the Dockerfile sets with `ENV`.
fn image_env(instructions: &[Instruction]) -> BTreeMap<String, String> {
    let last = instructions.last().map_or(0, |i| i.stage);
    let mut env = BTreeMap::new();
    for i in instructions
        .iter()
        .filter(|i| i.stage == last && i.op == "ENV")
    {
        if i.args.contains('=') {
            for kv in i.args.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("ENV K=V");
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        } else if let Some((k, v)) = i.args.split_once(char::is_whitespace) {
            env.insert(k.to_string(), v.trim().to_string());
        }
    }
    env
}

/// The environment a kappa container starts with: image `ENV`, then the service's.
fn kappa_env(service: &str, s: &Value) -> BTreeMap<String, String> {
    let mut env = image_env(&dockerfile("Dockerfile"));
    for (k, v) in environment(s) {
        let v = as_str(&v).unwrap_or_else(|| {
            panic!("{service}: environment {k} = {v} must be a string (quote it)")
        });
        env.insert(k, v);
    }
    env
}

/// Runs the real binary with exactly `env` (nothing inherited: a stray `KAPPA_*` of the
/// test's own environment must not decide the result).
fn kappa(args: &[String], env: &BTreeMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kappa"))
        .args(args)
        .env_clear()
        .envs(env)
        .env("RUST_LOG", "error")
        .output()
        .expect("spawn kappa")
}

/// The effective configuration of a kappa service (`kappa <global flags> config`).
fn effective_config(service: &str, s: &Value) -> toml::Value {
    let env = kappa_env(service, s);
    let mut args = global_flags(&command(s));
    args.push("config".into());
    let out = kappa(&args, &env);
    assert!(
        out.status.success(),
        "{service}: kappa rejects its configuration (env {env:?}, args {args:?}): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("kappa config prints TOML")
}

#[test]
fn build_contexts_have_a_dockerfile_and_its_sources() {
    let compose = Compose::load();
    for (name, s) in compose.services() {
        let Some((ctx, file)) = build_context(s) else {
            assert!(s["image"].is_string(), "{name}: neither build nor image");
            continue;
        };
        let dir = root().join(&ctx);
        assert!(
            dir.is_dir(),
            "{name}: build context {ctx} is not a directory"
        );
        assert!(
            dir.join(&file).is_file(),
            "{name}: no {file} in build context {ctx}"
        );
    }

    // The COPY sources exist and are not excluded from the build context.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_string())
        .collect();
    for i in dockerfile("Dockerfile").iter().filter(|i| i.op == "COPY") {
        if i.args.split_whitespace().any(|a| a.starts_with("--from")) {
            continue;
        }
        let words: Vec<&str> = i
            .args
            .split_whitespace()
            .filter(|a| !a.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            assert!(
                root().join(src).exists(),
                "Dockerfile: COPY {src}: no such file in the repository"
            );
            let first = Path::new(src.trim_matches('/'))
                .components()
                .find_map(|c| match c {
                    Component::Normal(n) => n.to_str(),
                    _ => None,
                })
                .unwrap_or_default();
            assert!(
                !ignored.iter().any(|p| p == first),
                "Dockerfile: COPY {src}, but .dockerignore excludes {first}"
            );
        }
    }
    for excluded in ["target", ".git", "data"] {
        assert!(
            ignored.iter().any(|p| p == excluded),
            ".dockerignore should exclude {excluded}/"
        );
    }
}

#[test]
fn the_image_runs_kappa_as_a_non_root_user_from_app() {
    let df = dockerfile("Dockerfile");
    let last = df.last().unwrap().stage;
    let final_stage: Vec<&Instruction> = df.iter().filter(|i| i.stage == last).collect();
    let get = |op: &str| {
        final_stage
            .iter()
            .rev()
            .find(|i| i.op == op)
            .map(|i| i.args.clone())
            .unwrap_or_else(|| panic!("Dockerfile: no {op} in the final stage"))
    };
    assert!(
        df.iter().filter(|i| i.op == "FROM").count() >= 2,
        "Dockerfile: expected a multi-stage build"
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(&get("ENTRYPOINT")).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(entrypoint, ["/app/kappa"]);
    assert!(
        final_stage
            .iter()
            .any(|i| i.op == "COPY" && i.args.ends_with("/app/kappa")),
        "Dockerfile: the binary is not copied to /app/kappa"
    );
    // `kappa topics apply` reads topics/*.toml relative to the working directory.
    assert_eq!(get("WORKDIR"), "/app");
    assert!(
        final_stage.iter().any(|i| i.op == "COPY"
            && i.args.starts_with("topics")
            && i.args.contains("/app/topics")),
        "Dockerfile: topics/ is not copied to /app/topics"
    );
    let user = get("USER");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap()),
        "Dockerfile: runs as root"
    );
    // kappa commits and exits on SIGINT (Ctrl-C); it installs no SIGTERM handler.
    assert_eq!(get("STOPSIGNAL"), "SIGINT");
    assert!(get("EXPOSE").split_whitespace().any(|p| p == "9464"));
}

#[test]
fn bind_mounts_exist_and_named_volumes_are_declared() {
    let compose = Compose::load();
    let declared: BTreeSet<&str> = compose.doc["volumes"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for (name, s) in compose.services() {
        for m in mounts(s) {
            assert!(
                m.target.starts_with('/'),
                "{name}: mount target {} is not absolute",
                m.target
            );
            match (m.bind, m.source) {
                (true, Some(src)) => assert!(
                    root().join(&src).exists(),
                    "{name}: bind mount source {src} does not exist in the repository"
                ),
                (false, Some(vol)) => assert!(
                    declared.contains(vol.as_str()),
                    "{name}: volume {vol} is not declared under top-level volumes"
                ),
                _ => {}
            }
        }
    }
}

#[test]
fn scalars_are_what_compose_expects() {
    let compose = Compose::load();
    for (name, s) in compose.services() {
        // `restart: no` unquoted is YAML's false, which Compose rejects.
        if let Some(r) = s.get("restart") {
            let r = r
                .as_str()
                .unwrap_or_else(|| panic!("{name}: restart {r} must be a quoted string"));
            assert!(
                ["no", "always", "unless-stopped", "on-failure"].contains(&r)
                    || r.starts_with("on-failure:"),
                "{name}: restart {r:?}"
            );
        }
        for (k, v) in environment(s) {
            assert!(
                v.is_string() || v.is_number() || v.is_null(),
                "{name}: environment {k} = {v}: quote it (Compose rejects booleans)"
            );
        }
        ports(s); // panics on an unquoted port
    }
}

#[test]
fn startup_follows_health_and_completion() {
    let compose = Compose::load();
    for (name, s) in compose.services() {
        let deps: Vec<(String, Option<String>)> = match &s["depends_on"] {
            Value::Array(a) => a.iter().map(|d| (as_str(d).unwrap(), None)).collect(),
            Value::Object(m) => m
                .iter()
                .map(|(d, c)| (d.clone(), c.get("condition").and_then(as_str)))
                .collect(),
            _ => Vec::new(),
        };
        for (dep, condition) in deps {
            let target = compose.service(&dep);
            match condition.as_deref() {
                None | Some("service_started") => {}
                Some("service_healthy") => assert!(
                    target["healthcheck"].is_object(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                Some("service_completed_successfully") => assert_eq!(
                    target["restart"].as_str().unwrap_or("no"),
                    "no",
                    "{name} waits for {dep} to complete, so {dep} must not restart"
                ),
                Some(other) => panic!("{name}: unknown depends_on condition {other}"),
            }
        }
    }

    // Topics first: whatever reads or writes the log waits for `topics apply` to succeed.
    let (topics, _) = compose.kappa_running("topics");
    for (name, s) in compose.kappa_services() {
        if name == topics {
            continue;
        }
        assert_eq!(
            s["depends_on"][topics]["condition"], "service_completed_successfully",
            "{name} must wait for {topics} to complete"
        );
    }
}

#[test]
fn kappa_accepts_every_service_command_and_environment() {
    let compose = Compose::load();
    let kafka = compose.service("kafka");
    let advertised: BTreeSet<String> = environment(kafka)
        .get("KAFKA_ADVERTISED_LISTENERS")
        .and_then(as_str)
        .expect("kafka: KAFKA_ADVERTISED_LISTENERS")
        .split(',')
        .filter_map(|l| l.split_once("://").map(|(_, a)| a.to_string()))
        .collect();
    let mut topics = BTreeSet::new();
    for (name, s) in compose.kappa_services() {
        let env = kappa_env(name, s);
        for k in environment(s).keys() {
            assert!(
                k.starts_with("KAPPA_") || k == "RUST_LOG",
                "{name}: {k} is not a kappa setting"
            );
        }

        // The command line parses (with --help appended, nothing runs).
        let mut args = command(s);
        assert!(
            kappa_subcommand(&args).is_some(),
            "{name}: no kappa subcommand"
        );
        args.push("--help".into());
        let out = kappa(&args, &env);
        assert!(
            out.status.success(),
            "{name}: kappa rejects `{}`: {}",
            command(s).join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );

        // The environment is valid configuration, and its brokers are Kafka's.
        let cfg = effective_config(name, s);
        let brokers = cfg["kafka"]["brokers"].as_str().unwrap().to_string();
        assert!(!brokers.is_empty(), "{name}: no Kafka brokers configured");
        for b in brokers.split(',') {
            assert!(
                advertised.contains(b),
                "{name}: broker {b} is not one of kafka's advertised listeners {advertised:?}"
            );
        }
        topics.insert(cfg["kafka"]["topic"].as_str().unwrap().to_string());
    }
    assert_eq!(
        topics.len(),
        1,
        "the kappa services disagree on the topic: {topics:?}"
    );

    // The pipeline's store is on a volume, so it survives a recreated container.
    let (name, s) = compose.kappa_running("run");
    let cfg = effective_config(name, s);
    let data_dir = cfg["data-dir"].as_str().unwrap();
    assert!(
        mounts(s).iter().any(|m| m.target == data_dir),
        "{name}: data-dir {data_dir} is not a mounted volume"
    );
}

/// The address `kappa run` listens on: `--listen`, else the configuration.
fn run_listen(compose: &Compose) -> (String, SocketAddr) {
    let (name, s) = compose.kappa_running("run");
    let listen = flag_value(&command(s), "--listen").unwrap_or_else(|| {
        effective_config(name, s)["http"]["listen"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let addr: SocketAddr = listen
        .parse()
        .unwrap_or_else(|e| panic!("{name}: listen {listen}: {e}"));
    (name.to_string(), addr)
}

#[test]
fn kappa_http_is_published_health_checked_and_scraped() {
    let compose = Compose::load();
    let (name, addr) = run_listen(&compose);
    let s = compose.service(&name);
    assert!(
        addr.ip().is_unspecified(),
        "{name}: listens on {addr}, unreachable from other containers"
    );
    assert!(
        ports(s).iter().any(|&(_, c)| c == addr.port()),
        "{name}: listens on port {} but does not publish it",
        addr.port()
    );
    if let Some(test) = s["healthcheck"]["test"].as_array() {
        let test: Vec<String> = test.iter().filter_map(as_str).collect();
        assert!(
            test.join(" ").contains(&format!("/{}", addr.port())),
            "{name}: the healthcheck does not probe port {}",
            addr.port()
        );
    }

    let prom = compose.service("prometheus");
    assert_eq!(
        host_path(prom, "/etc/prometheus/prometheus.yml"),
        Some(root().join("./prometheus/prometheus.yml")),
        "prometheus: prometheus/prometheus.yml is not mounted as its configuration"
    );
    let cfg = yaml("prometheus/prometheus.yml");
    let jobs = cfg["scrape_configs"].as_array().expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"] == "kappa")
        .expect("prometheus.yml: no job kappa");
    assert_eq!(job["scrape_interval"], "5s");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let targets: Vec<String> = job["static_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| as_str(&t))
        .collect();
    assert_eq!(targets, [format!("{name}:{}", addr.port())]);
}

/// The provisioned data sources: uid → (type, url).
fn datasources() -> BTreeMap<String, (String, String)> {
    let doc = yaml("grafana/provisioning/datasources/datasources.yml");
    assert_eq!(doc["apiVersion"], 1);
    let list = doc["datasources"].as_array().expect("datasources");
    assert_eq!(
        list.iter().filter(|d| d["isDefault"] == true).count(),
        1,
        "exactly one default data source"
    );
    list.iter()
        .map(|d| {
            (
                as_str(&d["uid"]).expect("every data source has a uid"),
                (
                    as_str(&d["type"]).unwrap(),
                    as_str(&d["url"]).unwrap_or_default(),
                ),
            )
        })
        .collect()
}

#[test]
fn grafana_provisioning_points_at_compose_services() {
    let compose = Compose::load();
    let grafana = compose.service("grafana");
    let env = environment(grafana);
    assert_eq!(
        host_path(grafana, "/etc/grafana/provisioning"),
        Some(root().join("./grafana/provisioning"))
    );

    let ds = datasources();
    assert_eq!(ds["prometheus"].0, "prometheus");
    assert_eq!(ds["kappa-api"].0, "yesoreyeram-infinity-datasource");
    let plugins: String = [
        "GF_PLUGINS_PREINSTALL_SYNC",
        "GF_PLUGINS_PREINSTALL",
        "GF_INSTALL_PLUGINS",
    ]
    .iter()
    .filter_map(|k| env.get(*k).and_then(as_str))
    .collect::<Vec<_>>()
    .join(",");
    for (uid, (kind, url)) in &ds {
        if kind != "prometheus" {
            assert!(
                plugins
                    .split(',')
                    .any(|p| p.trim().split(['@', ':']).next() == Some(kind.as_str())),
                "data source {uid}: plugin {kind} is not installed by the grafana service"
            );
        }
        let host_port = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("data source {uid}: url {url} is not http://"))
            .trim_end_matches('/');
        let (host, port) = host_port.split_once(':').expect("url with a port");
        assert!(
            compose.services().contains_key(host),
            "data source {uid}: {host} is not a compose service"
        );
        let port: u16 = port.parse().unwrap();
        let listens = if compose.kappa_running("run").0 == host {
            BTreeSet::from([run_listen(&compose).1.port()])
        } else {
            compose.container_ports(host)
        };
        assert!(
            listens.contains(&port),
            "data source {uid}: {host} does not listen on {port} ({listens:?})"
        );
    }

    // The dashboards provider reads the directory where grafana/dashboards is mounted.
    let doc = yaml("grafana/provisioning/dashboards/dashboards.yml");
    let providers = doc["providers"].as_array().expect("providers");
    assert!(!providers.is_empty());
    for p in providers {
        assert_eq!(p["type"], "file");
        let path = p["options"]["path"].as_str().expect("options.path");
        let host = host_path(grafana, path)
            .unwrap_or_else(|| panic!("dashboards provider path {path} is not mounted"));
        assert!(
            host.join("kappa-pipeline.json").is_file(),
            "{} has no kappa-pipeline.json",
            host.display()
        );
    }
    if let Some(home) = env
        .get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        .and_then(as_str)
    {
        assert!(
            host_path(grafana, &home).is_some_and(|p| p.is_file()),
            "home dashboard {home} is not a mounted file"
        );
    }
}

/// Metric names kappa registers (string literals `"kappa_…"` in src/metrics.rs) and the
/// label names it uses.
fn catalogue() -> (BTreeSet<String>, BTreeSet<String>) {
    let src = read("src/metrics.rs");
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::from(["le".to_string()]);
    for (i, _) in src.match_indices("\"kappa_") {
        let name: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        metrics.insert(name);
    }
    for (i, _) in src.match_indices("&[\"") {
        let list = &src[i + 2..i + src[i..].find(']').unwrap()];
        labels.extend(
            list.split(',')
                .map(|l| l.trim().trim_matches('"').to_string()),
        );
    }
    assert!(metrics.len() > 5, "no metric names found in src/metrics.rs");
    (metrics, labels)
}

/// `kappa_…` identifiers of a PromQL expression, with what precedes each.
fn metric_refs(expr: &str) -> Vec<(String, String)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (i, _) in expr.match_indices("kappa_") {
        if expr[..i].chars().next_back().is_some_and(ident) {
            continue;
        }
        let name: String = expr[i..].chars().take_while(|&c| ident(c)).collect();
        out.push((expr[..i].to_string(), name));
    }
    out
}

#[test]
fn dashboard_queries_use_metrics_kappa_exports() {
    let (metrics, labels) = catalogue();
    let ds = datasources();
    let dash: Value = serde_json::from_str(&read("grafana/dashboards/kappa-pipeline.json"))
        .expect("kappa-pipeline.json is JSON");
    assert_eq!(dash["uid"], "kappa-pipeline");
    assert_eq!(dash["title"], "kappa — pipeline");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId"
            );
            for d in [&p["datasource"], &t["datasource"]] {
                if let Some(uid) = d["uid"].as_str() {
                    assert!(
                        ds.contains_key(uid),
                        "{title}: data source {uid} is not provisioned"
                    );
                }
            }
            let expr = t["expr"].as_str().expect("expr");
            let found = metric_refs(expr);
            assert!(!found.is_empty(), "{title}: {expr} reads no kappa metric");
            for (before, name) in found {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| metrics.contains(*b)))
                    .unwrap_or(&name);
                assert!(
                    metrics.contains(base),
                    "{title}: {name} is not a metric of src/metrics.rs"
                );
                if before.trim_end().ends_with("rate(") {
                    assert!(
                        name.ends_with("_total") || name.ends_with("_bucket"),
                        "{title}: rate() of {name}, which is not a counter"
                    );
                }
                used.insert(base.to_string());
            }
            // Labels in `by (…)` and in the legend exist on kappa's metrics.
            let mut named: Vec<String> = Vec::new();
            for (i, _) in expr.match_indices("by (") {
                let list = &expr[i + 4..i + expr[i..].find(')').unwrap()];
                named.extend(list.split(',').map(|l| l.trim().to_string()));
            }
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            for (i, _) in legend.match_indices("{{") {
                let end = i + legend[i..].find("}}").expect("}} in legendFormat");
                named.push(legend[i + 2..end].trim().to_string());
            }
            for l in named {
                assert!(
                    labels.contains(&l),
                    "{title}: label {l} is not one of {labels:?}"
                );
            }
        }
    }
    for m in [
        "kappa_records_consumed_total",
        "kappa_consumer_lag_records",
        "kappa_watermark_lag_seconds",
        "kappa_late_records_total",
        "kappa_duplicate_records_total",
        "kappa_invalid_records_total",
        "kappa_store_commit_duration_seconds",
        "kappa_finalisation_delay_seconds",
    ] {
        assert!(used.contains(m), "the pipeline dashboard shows no {m}");
    }
}

#[test]
fn scale_out_services_can_be_scaled_and_share_the_kafka_settings() {
    let compose = Compose::load();
    let role = |name: &str| {
        let s = compose.service(name);
        assert_eq!(
            kappa_subcommand(&command(s)).as_deref(),
            Some("run"),
            "{name}"
        );
        flag_value(&command(s), "--role")
    };
    assert_eq!(role("worker").as_deref(), Some("worker"));
    assert_eq!(role("merger").as_deref(), Some("merger"));
    // `--scale worker=3` needs a worker without a fixed host port or container name.
    let worker = compose.service("worker");
    assert!(
        ports(worker).iter().all(|(host, _)| host.is_none()),
        "worker publishes a host port: it could not be scaled"
    );
    assert!(
        worker["container_name"].is_null(),
        "worker has a container_name"
    );
    // Workers and merger agree on the topics they exchange partials through.
    let w = effective_config("worker", worker);
    let m = effective_config("merger", compose.service("merger"));
    for key in ["brokers", "topic", "partials-topic", "control-topic"] {
        assert_eq!(w["kafka"][key], m["kafka"][key], "kafka.{key}");
    }
    // The merger's store (results and positions) survives a recreated container.
    let merger = compose.service("merger");
    let data_dir = m["data-dir"].as_str().unwrap();
    assert!(
        mounts(merger).iter().any(|mt| mt.target == data_dir),
        "merger: data-dir {data_dir} is not a mounted volume"
    );
    // Topics as code: the partials and control topics exist in topics/.
    for t in ["kappa.partials", "kappa.control"] {
        assert!(
            std::fs::read_dir(root().join("topics"))
                .unwrap()
                .any(|f| read(&format!(
                    "topics/{}",
                    f.unwrap().file_name().to_string_lossy()
                ))
                .contains(&format!("name = \"{t}\""))),
            "topics/ has no {t}"
        );
    }
}

#[test]
fn compose_runs_the_kafka_version_the_tests_run() {
    // scripts/kafka pins the version the test broker (tests/common/broker.rs) runs.
    let script = std::fs::read_to_string(root().join("scripts/kafka")).unwrap();
    let pinned = script
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION=\"${KAFKA_VERSION:-")?
                .strip_suffix("}\"")
        })
        .expect("scripts/kafka: a VERSION=\"${KAFKA_VERSION:-X}\" line");
    let broker = std::fs::read_to_string(root().join("tests/common/broker.rs")).unwrap();
    assert!(
        broker.contains(&format!("pub const KAFKA_VERSION: &str = \"{pinned}\";")),
        "tests/common/broker.rs runs another Kafka version than scripts/kafka ({pinned})"
    );
    let compose = Compose::load();
    let image = compose.service("kafka")["image"]
        .as_str()
        .expect("kafka: an image");
    assert_eq!(
        image,
        format!("apache/kafka:{pinned}"),
        "docker-compose.yml runs another Kafka than the tests"
    );
}

#[test]
fn the_keda_manifest_scales_the_workers_on_what_they_export() {
    let m = yaml("docs/keda/worker-scaledobject.yaml");
    assert_eq!(m["kind"], "ScaledObject");
    let defaults = kappa::config::Config::default();
    let max = m["spec"]["maxReplicaCount"].as_u64().unwrap();
    // At most one worker per partition of the source topic (more would own nothing).
    let topic = read("topics/shop-events.toml");
    assert!(
        topic.contains(&format!("name = \"{}\"", defaults.kafka.topic)),
        "{topic}"
    );
    assert!(
        topic.contains(&format!("partitions = {max}\n")),
        "maxReplicaCount {max} is not the partitions of {}",
        defaults.kafka.topic
    );
    let trigger = &m["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    let query = trigger["metadata"]["query"].as_str().unwrap();
    // The metric exists, on workers (the role label prometheus.yml gives them).
    assert!(
        query.contains("kappa_consumer_lag_records{role=\"worker\"}"),
        "{query}"
    );
    assert!(
        read("docs/METRICS.md").contains("| `kappa_consumer_lag_records` | gauge | `partition` |"),
        "the lag metric is not documented as a gauge by partition"
    );
    let prom = read("prometheus/prometheus.yml");
    assert!(prom.contains("replacement: worker"), "{prom}");
    // The threshold is scale-demo's default, which docs/SCALING.md shows at work.
    let threshold = trigger["metadata"]["threshold"].as_str().unwrap();
    assert!(
        read("scripts/scale-demo").contains(&format!("\"LAG_THRESHOLD\", {threshold})")),
        "threshold {threshold} is not scale-demo's"
    );
}
