//! The HTTP server (warp): `/metrics`, `/healthz`, `/readyz` and the JSON API.
//!
//! Every error is JSON `{"error": "..."}` with a fitting status code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::metrics::Metrics;
use crate::pipeline::Shared;
use crate::query::{self, parse_size, parse_time};
use crate::store::{Aggregate, Store};

/// Failures of an API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad parameter (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing there (404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed (500).
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The results store.
    pub store: Store,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Pipeline status and provisional windows.
    pub shared: Arc<Shared>,
    /// Replays and versions (a running `kappa run`; none in tests of the read API).
    pub control: Option<Arc<crate::control::Control>>,
    /// Bearer token of the state-changing endpoints (empty: none required).
    pub token: String,
}

/// The built-in live page (`/`): one HTML file with its CSS and script, no external assets.
pub const LIVE_PAGE: &str = include_str!("page/index.html");

/// Whether a state-changing request carries the configured token.
fn authorised(st: &AppState, header: Option<&str>) -> bool {
    st.token.is_empty()
        || header
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), st.token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorised() -> Response {
    json_reply(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "this endpoint changes state: send `Authorization: Bearer <http.token>`"}),
    )
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

fn result(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => json_reply(StatusCode::OK, &v),
        Err(e) => json_reply(e.status(), &json!({ "error": e.to_string() })),
    }
}

/// Longest query string a read endpoint accepts.
const MAX_QUERY_BYTES: usize = 8 << 10;

/// Query parameters, checked against the names an endpoint accepts.
struct Params(HashMap<String, String>);

impl Params {
    fn check(q: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        let len: usize = q.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if len > MAX_QUERY_BYTES {
            return Err(ApiError::BadRequest(format!(
                "query string of {len} bytes; at most {MAX_QUERY_BYTES}"
            )));
        }
        if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {k:?}; accepted: {}",
                allowed.join(", ")
            )));
        }
        Ok(Self(q))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    fn time(&self, k: &str, default: i64) -> Result<i64, ApiError> {
        self.get(k).map_or(Ok(default), |v| {
            parse_time(v).map_err(|e| ApiError::BadRequest(format!("{k}: {e}")))
        })
    }
    fn size(&self) -> Result<i64, ApiError> {
        parse_size(self.get("size").unwrap_or("1m")).map_err(ApiError::BadRequest)
    }
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "limit must be between 1 and {max}, got {v:?}"
                ))),
            },
        }
    }
    fn version(&self, st: &AppState) -> Result<String, ApiError> {
        match self.get("version") {
            Some(v) => Ok(v.to_string()),
            None => Ok(st.store.serving()?),
        }
    }
}

fn windows(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(
        q,
        &[
            "aggregate",
            "size",
            "from",
            "to",
            "version",
            "limit",
            "flat",
        ],
    )?;
    let agg_name = p
        .get("aggregate")
        .ok_or_else(|| ApiError::BadRequest("aggregate is required".into()))?;
    let agg = Aggregate::parse(agg_name).ok_or_else(|| {
        let names: Vec<&str> = Aggregate::ALL.iter().map(|a| a.as_str()).collect();
        ApiError::BadRequest(format!(
            "unknown aggregate {agg_name:?}; one of {}",
            names.join(", ")
        ))
    })?;
    let size = p.size()?;
    let version = p.version(st)?;
    // `from=latest`: the latest final window of that size only.
    let from = if p.get("from") == Some("latest") {
        st.store.latest_window(&version, size)?.unwrap_or(i64::MAX)
    } else {
        p.time("from", i64::MIN)?
    };
    let to = p.time("to", i64::MAX)?;
    let flat = match p.get("flat") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "flat must be true or false, got {v:?}"
            )));
        }
    };
    let ws = st
        .store
        .windows(&version, agg, size, from, to, p.limit(1000, 100_000)?)?;
    if flat {
        // One row per (window, key) with the window's start and end on it: what table-
        // shaped readers (Grafana's Infinity data source) want.
        let rows: Vec<Value> = ws
            .iter()
            .flat_map(|w| {
                let head = query::window_json(w);
                w.rows.iter().map(move |r| {
                    let mut o = r.to_json();
                    o.insert("window_start".into(), head["window_start"].clone());
                    o.insert("window_end".into(), head["window_end"].clone());
                    Value::Object(o)
                })
            })
            .collect();
        return Ok(json!({ "version": version, "aggregate": agg.as_str(), "rows": rows }));
    }
    Ok(
        json!({ "version": version, "windows": ws.iter().map(query::window_json).collect::<Vec<_>>() }),
    )
}

fn top_products(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["size", "window", "version", "by"])?;
    let size = p.size()?;
    let version = p.version(st)?;
    let start = match p.get("window").unwrap_or("latest") {
        "latest" => st.store.latest_window(&version, size)?.ok_or_else(|| {
            ApiError::NotFound(format!("no final {} window yet", query::size_name(size)))
        })?,
        w => parse_time(w).map_err(|e| ApiError::BadRequest(format!("window: {e}")))?,
    };
    let by = p.get("by");
    let mut out = serde_json::Map::new();
    out.insert("version".into(), version.clone().into());
    out.insert("size".into(), query::size_name(size).into());
    out.insert(
        "window_start".into(),
        crate::event::time::format_rfc3339_ms(start).into(),
    );
    out.insert(
        "window_end".into(),
        crate::event::time::format_rfc3339_ms(start + size).into(),
    );
    for (name, agg) in [
        ("by_units", Aggregate::TopProductsByUnits),
        ("by_revenue", Aggregate::TopProductsByRevenue),
    ] {
        if by.is_some_and(|b| format!("by_{b}") != name) {
            continue;
        }
        let ws = st.store.windows(&version, agg, size, start, start + 1, 1)?;
        let rows: Vec<Value> = ws
            .first()
            .map(|w| w.rows.iter().map(|r| Value::Object(r.to_json())).collect())
            .unwrap_or_default();
        out.insert(name.into(), Value::Array(rows));
    }
    if let Some(b) = by.filter(|b| !["units", "revenue"].contains(b)) {
        return Err(ApiError::BadRequest(format!(
            "by must be units or revenue, got {b:?}"
        )));
    }
    if st
        .store
        .latest_window(&version, size)?
        .is_none_or(|l| start > l)
        || st
            .store
            .windows(&version, Aggregate::EventsByType, size, start, start + 1, 1)?
            .is_empty()
    {
        return Err(ApiError::NotFound(format!(
            "no final {} window starting at {}",
            query::size_name(size),
            crate::event::time::format_rfc3339_ms(start)
        )));
    }
    Ok(Value::Object(out))
}

fn provisional(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["size"])?;
    let size = p.get("size").map(|_| p.size()).transpose()?;
    let open = st.shared.provisional.read().expect("provisional lock");
    let ws: Vec<Value> = open
        .iter()
        .filter(|w| size.is_none_or(|s| s == w.size_ms))
        .map(|w| query::full_window_json(w, true))
        .collect();
    Ok(json!({ "windows": ws }))
}

fn latest(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["version"])?;
    Ok(query::latest(&st.store, &p.version(st)?)?)
}

fn dead_letters(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["after", "limit"])?;
    let after = p
        .get("after")
        .map(query::parse_position)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    Ok(query::dead_letters(
        &st.store,
        after,
        p.limit(100, 10_000)?,
    )?)
}

fn late_events(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["version", "limit"])?;
    let version = p.version(st)?;
    let items = st.store.late_events(&version, p.limit(100, 10_000)?)?;
    Ok(json!({
        "version": version,
        "late_events": items.iter().map(|l| json!({
            "partition": l.partition, "offset": l.offset,
            "event_time": crate::event::time::format_rfc3339_ms(l.event_ts),
            "window_start": crate::event::time::format_rfc3339_ms(l.window_start),
            "window_size": query::size_name(l.window_size),
            "reason": l.reason,
        })).collect::<Vec<_>>(),
    }))
}

fn export(st: &AppState, q: HashMap<String, String>) -> Response {
    let r = Params::check(q, &["version"])
        .and_then(|p| p.version(st))
        .and_then(|v| {
            let mut buf = Vec::new();
            query::export(&st.store, &v, &mut buf).map_err(|e| match e {
                query::ExportError::Store(s) => ApiError::Store(s),
                query::ExportError::Io(io) => ApiError::BadRequest(io.to_string()),
            })?;
            Ok(buf)
        });
    match r {
        Ok(buf) => {
            warp::reply::with_header(buf, "content-type", "application/x-ndjson").into_response()
        }
        Err(e) => json_reply(e.status(), &json!({ "error": e.to_string() })),
    }
}

/// The JSON read endpoints by name (`/api/{name}`), with their handlers.
const READ_ENDPOINTS: [(&str, Handler); 6] = [
    ("windows", windows),
    ("top-products", top_products),
    ("provisional", provisional),
    ("latest", latest),
    ("dead-letters", dead_letters),
    ("late-events", late_events),
];

type Handler = fn(&AppState, HashMap<String, String>) -> Result<Value, ApiError>;

/// Answers `GET /api/{endpoint}?{query}` without the HTTP layer: the same parameter
/// parsing and handlers the server runs (the query-parameter fuzz target drives this).
///
/// # Errors
/// What the endpoint answers with an error status.
pub fn read_api(st: &AppState, endpoint: &str, query: &str) -> Result<Value, ApiError> {
    let q: HashMap<String, String> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let (_, f) = READ_ENDPOINTS
        .iter()
        .find(|(name, _)| *name == endpoint)
        .ok_or_else(|| ApiError::NotFound("no such endpoint".into()))?;
    f(st, q)
}

fn control_error(e: &crate::control::ControlError) -> Response {
    use crate::control::ControlError as E;
    let code = match e {
        E::Invalid(_) => StatusCode::BAD_REQUEST,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) => StatusCode::CONFLICT,
        E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_reply(code, &json!({ "error": e.to_string() }))
}

/// Runs a control request off the async threads (it touches the store and may wait for a
/// pipeline to stop).
async fn control<T: serde::Serialize + Send + 'static>(
    st: AppState,
    ok: StatusCode,
    f: impl FnOnce(&Arc<crate::control::Control>) -> Result<T, crate::control::ControlError>
    + Send
    + 'static,
) -> Result<Response, Infallible> {
    let Some(c) = st.control.clone() else {
        return Ok(json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "this process has no replay or version control: ask `kappa run` or the merger (a worker has none)"}),
        ));
    };
    let r = tokio::task::spawn_blocking(move || f(&c)).await;
    Ok(match r {
        Ok(Ok(v)) => json_reply(ok, &serde_json::to_value(v).unwrap_or_default()),
        Ok(Err(e)) => control_error(&e),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": e.to_string() }),
        ),
    })
}

/// [`control`] for a state-changing request: refused (401) without the token.
async fn control_authorised<T: serde::Serialize + Send + 'static>(
    st: AppState,
    header: Option<String>,
    ok: StatusCode,
    f: impl FnOnce(&Arc<crate::control::Control>) -> Result<T, crate::control::ControlError>
    + Send
    + 'static,
) -> Result<Response, Infallible> {
    if !authorised(&st, header.as_deref()) {
        return Ok(unauthorised());
    }
    control(st, ok, f).await
}

/// The control routes: replays and versions.
fn control_routes(
    st: AppState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    use crate::replay::ReplayRequest;
    let with = move || {
        let st = st.clone();
        warp::any().map(move || st.clone())
    };
    let auth = || warp::header::optional::<String>("authorization");
    let start = warp::path!("api" / "replays")
        .and(warp::post())
        .and(auth())
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::json::<ReplayRequest>())
        .and(with())
        .and_then(
            |h: Option<String>, req: ReplayRequest, st: AppState| async move {
                if req.dry_run {
                    control_authorised(st, h, StatusCode::OK, move |c| {
                        let plan = c.plan(&req)?;
                        Ok(json!({ "dry_run": true, "lines": plan.describe(), "plan": plan }))
                    })
                    .await
                } else {
                    control_authorised(st, h, StatusCode::ACCEPTED, move |c| c.start_replay(&req))
                        .await
                }
            },
        );
    let list = warp::path!("api" / "replays")
        .and(warp::get())
        .and(with())
        .and_then(|st: AppState| {
            control(st, StatusCode::OK, |c| {
                Ok(json!({ "replays": c.replays()? }))
            })
        });
    let one = warp::path!("api" / "replays" / u64)
        .and(warp::get())
        .and(with())
        .and_then(|id: u64, st: AppState| control(st, StatusCode::OK, move |c| c.replay(id)));
    let cancel = warp::path!("api" / "replays" / u64)
        .and(warp::delete())
        .and(auth())
        .and(with())
        .and_then(|id: u64, h: Option<String>, st: AppState| async move {
            control_authorised(st, h, StatusCode::OK, move |c| c.cancel(id)).await
        });
    let versions = warp::path!("api" / "versions")
        .and(warp::get())
        .and(with())
        .and_then(|st: AppState| {
            control(st, StatusCode::OK, |c| {
                Ok(json!({ "versions": c.versions()? }))
            })
        });
    let promote = warp::path!("api" / "versions" / String / "promote")
        .and(warp::post())
        .and(auth())
        .and(with())
        .and_then(|v: String, h: Option<String>, st: AppState| async move {
            control_authorised(st, h, StatusCode::OK, move |c| {
                c.promote(&v)?;
                Ok(json!({ "serving": v }))
            })
            .await
        });
    let drop = warp::path!("api" / "versions" / String)
        .and(warp::delete())
        .and(auth())
        .and(with())
        .and_then(|v: String, h: Option<String>, st: AppState| async move {
            control_authorised(st, h, StatusCode::OK, move |c| {
                c.drop_version(&v)?;
                Ok(json!({ "dropped": v }))
            })
            .await
        });
    start
        .or(list)
        .unify()
        .or(one)
        .unify()
        .or(cancel)
        .unify()
        .or(versions)
        .unify()
        .or(promote)
        .unify()
        .or(drop)
        .unify()
}

/// All routes.
pub fn routes(st: AppState) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let controls = control_routes(st.clone());
    let with = move || {
        let st = st.clone();
        warp::any().map(move || st.clone())
    };
    let q = || warp::query::<HashMap<String, String>>();
    let api = |name: &'static str| {
        warp::get()
            .and(warp::path("api"))
            .and(warp::path(name))
            .and(warp::path::end())
    };
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .and(with())
        .map(|st: AppState| {
            warp::reply::with_header(
                st.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });
    let page = warp::get().and(warp::path::end()).map(|| {
        warp::reply::with_header(LIVE_PAGE, "content-type", "text/html; charset=utf-8")
            .into_response()
    });
    let healthz = warp::get()
        .and(warp::path("healthz"))
        .and(warp::path::end())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let readyz = warp::get()
        .and(warp::path("readyz"))
        .and(warp::path::end())
        .and(with())
        .map(|st: AppState| {
            if st.shared.is_ready() {
                json_reply(StatusCode::OK, &json!({"ready": true}))
            } else {
                let s = st.shared.status();
                json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "state": s.state, "error": s.error}),
                )
            }
        });
    let status = api("status").and(with()).map(|st: AppState| {
        json_reply(
            StatusCode::OK,
            &serde_json::to_value(st.shared.status()).unwrap_or_default(),
        )
    });
    let handler = |name: &'static str, f: Handler| {
        api(name)
            .and(with())
            .and(q())
            .map(move |st: AppState, q| result(f(&st, q)))
    };
    let export = api("export")
        .and(with())
        .and(q())
        .map(|st: AppState, q| export(&st, q));
    page.or(metrics)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(status)
        .unify()
        .or(handler(READ_ENDPOINTS[0].0, READ_ENDPOINTS[0].1))
        .unify()
        .or(handler(READ_ENDPOINTS[1].0, READ_ENDPOINTS[1].1))
        .unify()
        .or(handler(READ_ENDPOINTS[2].0, READ_ENDPOINTS[2].1))
        .unify()
        .or(handler(READ_ENDPOINTS[3].0, READ_ENDPOINTS[3].1))
        .unify()
        .or(handler(READ_ENDPOINTS[4].0, READ_ENDPOINTS[4].1))
        .unify()
        .or(handler(READ_ENDPOINTS[5].0, READ_ENDPOINTS[5].1))
        .unify()
        .or(export)
        .unify()
        .or(controls)
        .unify()
        .recover(|rej: warp::Rejection| async move {
            // The most specific rejection first: a POST with a bad body is also "method not
            // allowed" for every GET route it was tried against.
            let (code, msg) =
                if let Some(e) = rej.find::<warp::filters::body::BodyDeserializeError>() {
                    (StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
                } else if rej.find::<warp::reject::UnsupportedMediaType>().is_some() {
                    (
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "send the body as JSON (content-type: application/json)".to_string(),
                    )
                } else if rej.find::<warp::reject::PayloadTooLarge>().is_some() {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large".to_string(),
                    )
                } else if rej.find::<warp::reject::LengthRequired>().is_some() {
                    (
                        StatusCode::LENGTH_REQUIRED,
                        "content-length required".to_string(),
                    )
                } else if rej.is_not_found() {
                    (StatusCode::NOT_FOUND, "no such endpoint".to_string())
                } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method not allowed".to_string(),
                    )
                } else if let Some(e) = rej.find::<warp::reject::InvalidQuery>() {
                    (StatusCode::BAD_REQUEST, e.to_string())
                } else {
                    (StatusCode::BAD_REQUEST, format!("{rej:?}"))
                };
            Ok::<_, Infallible>(json_reply(code, &json!({ "error": msg })))
        })
        .unify()
}

/// Serves `routes` on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    st: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(st))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
