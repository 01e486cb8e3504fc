//! How the CLI reaches results: the store itself, or the HTTP API of the `kappa run` (or
//! merger) that holds it — with connect and read timeouts and errors that say which
//! address failed and why the CLI went there.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, fmt_duration};
use crate::store::{Store, StoreError};

/// File in the data directory where a running `kappa run` writes its URL.
pub(super) use crate::server::SERVER_FILE;

/// The store itself, or the process that holds it.
pub(super) enum Access {
    Local(Store),
    Remote(Remote),
}

/// Why the CLI talks to a server rather than the store.
#[derive(Debug, Clone)]
enum Via {
    /// `--server URL` was given.
    Flag,
    /// The store is locked by another process; the data directory's `kappa.server` names
    /// this address.
    ServerFile(PathBuf),
    /// The store is locked by another process and no `kappa.server` names an address:
    /// `http.listen` is a guess.
    Listen(PathBuf),
}

/// A running kappa's HTTP API, with the CLI's timeouts.
#[derive(Debug, Clone)]
pub(super) struct Remote {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    via: Via,
    connect_timeout: Duration,
    read_timeout: Duration,
    /// The configuration key `read_timeout` came from (named in the timeout error).
    read_timeout_key: &'static str,
}

/// The store, or — when `server` is given or another process holds the store — the
/// server to ask.
///
/// # Errors
/// No store and no `--server`; a store that cannot be opened.
pub(super) fn access(cfg: &Config, server: Option<&String>) -> anyhow::Result<Access> {
    let remote = |base: String, via: Via| {
        Access::Remote(Remote {
            base: base.trim_end_matches('/').to_string(),
            via,
            connect_timeout: cfg.http.client_connect_timeout,
            read_timeout: cfg.http.client_read_timeout,
            read_timeout_key: "http.client-read-timeout",
        })
    };
    if let Some(url) = server {
        return Ok(remote(url.clone(), Via::Flag));
    }
    if !cfg.store_path().exists() {
        anyhow::bail!(
            "no results yet: {} does not exist (run `kappa run` or `kappa demo` first)",
            cfg.store_path().display()
        );
    }
    match Store::open(&cfg.store_path()) {
        // This process holds the store alone, so nothing runs a replay: what a process that
        // died left half-done is cleaned up first (history `running` → `interrupted`, …).
        Ok(s) => {
            crate::control::recover_interrupted(&s)?;
            Ok(Access::Local(s))
        }
        // The running server says where it listens (it may not be http.listen: --listen).
        Err(StoreError::Locked(_)) => {
            let file = cfg.data_dir.join(SERVER_FILE);
            Ok(
                match std::fs::read_to_string(&file)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| s.starts_with("http://"))
                {
                    Some(url) => remote(url, Via::ServerFile(file)),
                    None => remote(format!("http://{}", cfg.http.listen), Via::Listen(file)),
                },
            )
        }
        Err(e) => Err(e.into()),
    }
}

impl Remote {
    /// The same server, waiting up to `http.client-export-timeout` for each read: the
    /// server writes a whole export before its first byte.
    pub(super) fn for_export(&self, cfg: &Config) -> Self {
        Self {
            read_timeout: cfg.http.client_export_timeout,
            read_timeout_key: "http.client-export-timeout",
            ..self.clone()
        }
    }

    /// `GET {base}{path}`.
    pub(super) fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.call("GET", path, None, "")
    }

    /// One request to `{base}{path}` (with the bearer `token` unless empty); a non-2xx
    /// answer becomes its `error` text. A POST always carries a JSON body (`{}` when there
    /// is none): the server takes state changes only as `application/json`.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_resolve(Some(self.connect_timeout))
            .timeout_per_read(Some(self.read_timeout))
            .timeout_per_write(Some(self.read_timeout))
            .build()
            .new_agent();
        let bearer = format!("Bearer {token}");
        let empty = Value::Object(serde_json::Map::new());
        let sent = match method {
            "POST" => agent
                .post(&url)
                .header("authorization", &bearer)
                .send_json(body.unwrap_or(&empty)),
            "DELETE" => agent.delete(&url).header("authorization", &bearer).call(),
            _ => agent.get(&url).call(),
        };
        let mut resp = sent.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 34)
            .read_to_vec()
            .map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{url}: {status}: {msg}");
        }
        Ok(body)
    }

    /// One line: which address failed, how, and why the CLI asked it.
    fn unreachable(&self, e: &ureq::Error) -> anyhow::Error {
        use std::io::ErrorKind;
        use ureq::Timeout;
        let base = &self.base;
        let what = match e {
            ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => format!(
                "could not connect to {base} within {} (http.client-connect-timeout)",
                fmt_duration(self.connect_timeout)
            ),
            ureq::Error::Timeout(_) => format!(
                "{base} did not answer within {} ({}); is it a kappa server?",
                fmt_duration(self.read_timeout),
                self.read_timeout_key
            ),
            ureq::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
                format!("nothing listens at {base}")
            }
            ureq::Error::ConnectionFailed => format!("could not connect to {base}"),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::UnexpectedEof
                        | ErrorKind::BrokenPipe
                ) =>
            {
                format!("{base} closed the connection without an answer; is it a kappa server?")
            }
            ureq::Error::Protocol(_) => {
                format!("{base} did not answer in HTTP; is it a kappa server?")
            }
            other => format!("{base}: {other}"),
        };
        let why = match &self.via {
            Via::Flag => " (--server)".to_string(),
            Via::ServerFile(f) => format!(
                " (the store is locked by another process; {} names this address)",
                f.display()
            ),
            Via::Listen(f) => format!(
                " (the store is locked by another process and there is no {}, so this is http.listen)",
                f.display()
            ),
        };
        anyhow::anyhow!("{what}{why}")
    }
}
