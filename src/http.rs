//! The HTTP server (warp): `/metrics`, `/healthz`, `/readyz` and the JSON API.
//!
//! Every error is JSON `{"error": "..."}` with a fitting status code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::metrics::Metrics;
use crate::pipeline::Shared;
use crate::query::{self, parse_size, parse_time};
use crate::range::Report;
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

impl From<query::VersionError> for ApiError {
    fn from(e: query::VersionError) -> Self {
        match e {
            query::VersionError::Unknown(_) => Self::NotFound(e.to_string()),
            query::VersionError::Store(s) => Self::Store(s),
        }
    }
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

/// Whether a state-changing request carries the configured token (`Authorization: Bearer
/// TOKEN`, the scheme in any case as RFC 9110 says).
fn authorised_token(token: &str, header: Option<&str>) -> bool {
    token.is_empty()
        || header
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, t)| constant_time_eq(t.trim().as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

fn error_reply(e: &ApiError) -> Response {
    json_reply(e.status(), &json!({ "error": e.to_string() }))
}

fn result(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => json_reply(StatusCode::OK, &v),
        Err(e) => error_reply(&e),
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
        Ok(query::output_version(&st.store, self.get("version"))?)
    }
}

/// `/api/aggregates`: the version's declared aggregates (issue 20), as declared.
fn aggregates(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["version"])?;
    let version = p.version(st)?;
    let plan = query::version_plan(&st.store, &version)?;
    let list: Vec<Value> = plan
        .aggregates
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "stream": a.stream.as_str(),
                "sizes": a.sizes_ms.iter().map(|&s| query::size_name(s)).collect::<Vec<_>>(),
                "group_by": a.key_names,
                "measures": a.measure_names,
            })
        })
        .collect();
    Ok(json!({ "version": version, "aggregates": list }))
}

/// `/api/windows` of a declared aggregate (issue 20): every size unless `size` is given;
/// `from=latest`, the latest final window of `size` (the aggregate's smallest by default).
fn declared_windows(st: &AppState, p: &Params, name: &str) -> Result<Value, ApiError> {
    let version = p.version(st)?;
    let plan = query::version_plan(&st.store, &version)?;
    let mut size_ms = p.get("size").map(|_| p.size()).transpose()?;
    let from = if p.get("from") == Some("latest") {
        let agg = plan.get(name);
        size_ms = size_ms.or(agg.and_then(|a| a.sizes_ms.first().copied()));
        match (agg, size_ms) {
            (Some(a), Some(s)) => st
                .store
                .latest_declared(&a.stream.version(&version), name, s)?
                .unwrap_or(i64::MAX),
            _ => i64::MAX,
        }
    } else {
        p.time("from", i64::MIN)?
    };
    let q = query::DeclaredQuery {
        name,
        size_ms,
        from,
        to: p.time("to", i64::MAX)?,
        limit: p.limit(1000, 100_000)?,
    };
    if p.get("total") == Some("true") {
        return query::declared_total(&st.store, &version, &plan, &q).map_err(|e| match e {
            query::TotalError::Version(v) => v.into(),
            query::TotalError::Refused(m) => ApiError::BadRequest(m),
        });
    }
    let flat = p.get("flat") == Some("true");
    query::declared_windows(&st.store, &version, &plan, &q, flat)?.ok_or_else(|| {
        let names: Vec<&str> = Aggregate::ALL
            .iter()
            .map(|a| a.as_str())
            .chain(plan.aggregates.iter().map(|a| a.name.as_str()))
            .collect();
        ApiError::BadRequest(format!(
            "unknown aggregate {name:?}; one of {}",
            names.join(", ")
        ))
    })
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
            "total",
        ],
    )?;
    let agg_name = p
        .get("aggregate")
        .ok_or_else(|| ApiError::BadRequest("aggregate is required".into()))?;
    let Some(agg) = Aggregate::parse(agg_name) else {
        return declared_windows(st, &p, agg_name);
    };
    let size = p.size()?;
    let version = p.version(st)?;
    // Where the aggregate's stream keeps its part of the version.
    let stored = agg.stream().version(&version);
    // `from=latest`: the latest final window of that size only.
    let from = if p.get("from") == Some("latest") {
        st.store.latest_window(&stored, size)?.unwrap_or(i64::MAX)
    } else {
        p.time("from", i64::MIN)?
    };
    let to = p.time("to", i64::MAX)?;
    if p.get("from") != Some("latest") && from > to {
        return Err(ApiError::BadRequest(format!(
            "from ({}) is after to ({})",
            p.get("from").unwrap_or_default(),
            p.get("to").unwrap_or_default()
        )));
    }
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
        .windows(&stored, agg, size, from, to, p.limit(1000, 100_000)?)?;
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

/// The parameters of a range answer.
const RANGE_PARAMS: [&str; 6] = ["from", "to", "period", "version", "k", "min_views"];

/// `GET /api/{report}?from=&to=` (or `?period=`): `report` over an hour-aligned range.
fn range(st: &AppState, q: HashMap<String, String>, report: Report) -> Result<Value, ApiError> {
    let p = Params::check(q, &RANGE_PARAMS)?;
    let version = p.version(st)?;
    let (from, to) = match (p.get("period"), p.get("from"), p.get("to")) {
        (Some(name), None, None) => crate::range::period(&st.store, &version, name)
            .map_err(ApiError::BadRequest)?
            .unwrap_or((0, 0)),
        (None, Some(_), Some(_)) => (p.time("from", 0)?, p.time("to", 0)?),
        _ => {
            return Err(ApiError::BadRequest(
                "from and to are required (RFC 3339 or epoch ms, whole hours), or a period alone"
                    .into(),
            ));
        }
    };
    let number = |k: &str, default: u64, max: u64| -> Result<u64, ApiError> {
        match p.get(k) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!(
                    "{k} must be between 1 and {max}, got {v:?}"
                ))),
            },
        }
    };
    let question = crate::range::Question::new(
        version,
        from,
        to,
        usize::try_from(number("k", 10, 10_000)?).unwrap_or(10),
        number("min_views", 10, u64::MAX)?,
    )
    .map_err(ApiError::BadRequest)?;
    Ok(crate::range::answer(&st.store, &question, report)?)
}

/// `GET /api/products/{id}/history?from=&to=`: one product's final hours (all of them
/// without bounds).
fn product_history(st: &AppState, id: &str, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["from", "to", "version"])?;
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("the product id is not UTF-8".into()))?;
    let (from, to) = (p.time("from", i64::MIN)?, p.time("to", i64::MAX)?);
    for (name, t) in [("from", from), ("to", to)] {
        if t != i64::MIN && t != i64::MAX {
            crate::range::whole_hour(name, t).map_err(ApiError::BadRequest)?;
        }
    }
    Ok(crate::range::history(
        &st.store,
        &p.version(st)?,
        &id,
        from,
        to,
    )?)
}

fn top_products(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    if ["from", "to", "period"].iter().any(|k| q.contains_key(*k)) {
        return range(st, q, Report::TopProducts);
    }
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
    let p = Params::check(q, &["after", "limit", "stream"])?;
    let after = p
        .get("after")
        .map(query::parse_position)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let stream = crate::stream::Stream::parse(p.get("stream").unwrap_or("events"))
        .map_err(ApiError::BadRequest)?;
    Ok(query::dead_letters(
        &st.store,
        stream,
        after,
        p.limit(100, 10_000)?,
    )?)
}

fn late_events(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["version", "limit", "stream"])?;
    let version = p.version(st)?;
    let stream = match crate::stream::Stream::parse(p.get("stream").unwrap_or("events")) {
        Ok(crate::stream::Stream::Products) => {
            Err("stream products has no late events (the catalogue is not windowed)".to_string())
        }
        other => other,
    }
    .map_err(ApiError::BadRequest)?;
    let items = st
        .store
        .late_events(&stream.version(&version), p.limit(100, 10_000)?)?;
    Ok(json!({
        "version": version,
        "stream": stream.as_str(),
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
                query::ExportError::Version(v) => v.into(),
            })?;
            Ok(buf)
        });
    match r {
        Ok(buf) => {
            warp::reply::with_header(buf, "content-type", "application/x-ndjson").into_response()
        }
        Err(e) => error_reply(&e),
    }
}

fn fingerprint(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["version", "from", "to"])?;
    let version = p.version(st)?;
    Ok(query::fingerprint(
        &st.store,
        &version,
        p.time("from", i64::MIN)?,
        p.time("to", i64::MAX)?,
    )?)
}

/// `GET /api/replays/{id}/diff/windows?offset=&limit=`: a page of the full diff recorded
/// with a replay — its differing windows from `offset` on, every changed row listed.
fn diff_page(st: &AppState, id: &str, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let id = replay_id(id)?;
    let p = Params::check(q, &["offset", "limit"])?;
    let limit = p.limit(100, 1000)?;
    let offset = match p.get("offset") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("offset must be a whole number, got {v:?}"))
        })?,
    };
    if st.store.replay_diff(id)?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no diff recorded for replay {id} (only in-place corrections and `--dry-run --diff` record one)"
        )));
    }
    let (page, total) = st.store.replay_diff_windows(id, offset, limit as u64)?;
    let windows: Vec<Value> = page
        .iter()
        .map(|j| serde_json::from_slice(j).unwrap_or(Value::Null))
        .collect();
    let next = offset + windows.len() as u64;
    Ok(json!({
        "replay": id,
        "offset": offset,
        "total": total,
        "windows": windows,
        "next_offset": (next < total).then_some(next),
    }))
}

/// `GET /api/versions/compare?a=&b=`: `a` defaults to the serving version.
fn compare_versions(st: &AppState, q: HashMap<String, String>) -> Result<Value, ApiError> {
    let p = Params::check(q, &["a", "b", "from", "to", "limit", "windows"])?;
    let a = query::output_version(&st.store, p.get("a"))?;
    let b = p.get("b").ok_or_else(|| {
        ApiError::BadRequest("b (the version to compare with a) is required".into())
    })?;
    let b = query::output_version(&st.store, Some(b))?;
    let windows = match p.get("windows") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("windows must be between 1 and 10000, got {v:?}"))
            })?,
    };
    let scope = crate::compare::Scope {
        from: p.time("from", i64::MIN)?,
        to: p.time("to", i64::MAX)?,
        rows_per_window: p.limit(20, 10_000)?,
        max_windows: windows,
        revenue_base: false,
        verify: false,
    };
    let mut c = crate::compare::compare(&st.store, &a, &b, scope)?;
    c.declared = query::compare_declared(&st.store, &a, &b, (scope.from, scope.to), windows)?;
    Ok(serde_json::to_value(c).unwrap_or_default())
}

/// The JSON read endpoints by name (`/api/{name}`), with their handlers.
const READ_ENDPOINTS: [(&str, Handler); 11] = [
    ("aggregates", aggregates),
    ("fingerprint", fingerprint),
    ("windows", windows),
    ("top-products", top_products),
    ("sales-by-category", |st, q| {
        range(st, q, Report::SalesByCategory)
    }),
    ("top-searches", |st, q| range(st, q, Report::TopSearches)),
    ("funnel", |st, q| range(st, q, Report::Funnel)),
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

/// Why a state-changing request is refused before it runs (403, 401 or 415).
#[derive(Debug)]
struct Refused(StatusCode, String);

impl warp::reject::Reject for Refused {}

/// Admits a state-changing request (replay, cancel, promote, drop) or says why not. A
/// browser on this machine can send such a request to a loopback server without a
/// preflight, and DNS rebinding can make a foreign page same-origin with it, so:
/// - an `Origin` header, when sent, must be the origin of the address the request went
///   to (its `Host`): no cross-site request changes state;
/// - without `http.token` (only allowed on loopback), `Host` must be a loopback name of
///   this server's port (`localhost`, `127.0.0.1`, `[::1]` or the listen address): a
///   rebound foreign name is refused;
/// - a POST must say `content-type: application/json`, which a browser sends cross-site
///   only after a CORS preflight this server never grants;
/// - with `http.token`, the `Authorization: Bearer` header must carry it.
fn admitted(
    token: String,
    listen: SocketAddr,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::host::optional())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            move |method: warp::http::Method,
                  host: Option<warp::host::Authority>,
                  origin: Option<String>,
                  content_type: Option<String>,
                  authorization: Option<String>| {
                let r = admit(
                    &token,
                    listen,
                    &method,
                    host.as_ref().map(warp::host::Authority::as_str),
                    origin.as_deref(),
                    content_type.as_deref(),
                    authorization.as_deref(),
                );
                std::future::ready(r.map_err(warp::reject::custom))
            },
        )
        .untuple_one()
}

/// The checks of [`admitted`], without warp.
fn admit(
    token: &str,
    listen: SocketAddr,
    method: &warp::http::Method,
    host: Option<&str>,
    origin: Option<&str>,
    content_type: Option<&str>,
    authorization: Option<&str>,
) -> Result<(), Refused> {
    let forbidden = |m: String| Err(Refused(StatusCode::FORBIDDEN, m));
    let Some(host) = host else {
        return forbidden("refused: the request has no Host header".into());
    };
    if let Some(o) = origin {
        let authority = o
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'))
            .unwrap_or_default();
        if !authority.eq_ignore_ascii_case(host) {
            return forbidden(format!(
                "refused: Origin {o:?} is not this server ({host}); the control API takes no cross-site requests"
            ));
        }
    }
    if token.is_empty() {
        let port = listen.port();
        let names = loopback_hosts(listen);
        let ok = names.iter().any(|n| host.eq_ignore_ascii_case(n))
            || (port == 80
                && names
                    .iter()
                    .any(|n| host.eq_ignore_ascii_case(n.trim_end_matches(":80"))));
        if !ok {
            return forbidden(format!(
                "refused: Host {host:?} is not this server's address ({}); without http.token only its loopback names may change state",
                names.join(", ")
            ));
        }
    }
    if !authorised_token(token, authorization) {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "this endpoint changes state: send `Authorization: Bearer <http.token>`".into(),
        ));
    }
    let json = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if method == warp::http::Method::POST && !json {
        return Err(Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send content-type: application/json (got {}); promote takes an empty body or {{}}",
                content_type.map_or_else(|| "none".to_string(), |c| format!("{c:?}"))
            ),
        ));
    }
    Ok(())
}

/// The `Host` values under which a token-less server on `listen` accepts state changes.
fn loopback_hosts(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .map(|n| format!("{n}:{port}"))
        .collect();
    let own = listen.to_string();
    if !names.contains(&own) {
        names.push(own);
    }
    names
}

/// The replay id of a path, or 400 naming it.
fn replay_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("a replay id is a number, got {id:?}")))
}

/// A filter handing each request the server's state.
fn with_state(
    st: &AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone + use<> {
    let st = st.clone();
    warp::any().map(move || st.clone())
}

/// The state-changing and control routes: replays, then versions.
fn control_routes(
    st: AppState,
    listen: SocketAddr,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    replay_routes(st.clone(), listen)
        .or(version_routes(st, listen))
        .unify()
}

/// `/api/replays…`: start (or plan), list, one, its recorded diff (bounded, and paged in
/// full), cancel.
fn replay_routes(
    st: AppState,
    listen: SocketAddr,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    use crate::replay::ReplayRequest;
    let start = warp::path!("api" / "replays")
        .and(warp::post())
        .and(admitted(st.token.clone(), listen))
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::json::<ReplayRequest>())
        .and(with_state(&st))
        .and_then(|req: ReplayRequest, st: AppState| async move {
            if req.dry_run && !req.diff {
                control(st, StatusCode::OK, move |c| {
                    let plan = c.plan(&req)?;
                    Ok(json!({ "dry_run": true, "lines": plan.describe(), "plan": plan }))
                })
                .await
            } else {
                control(st, StatusCode::ACCEPTED, move |c| c.start_replay(&req)).await
            }
        });
    let list = warp::path!("api" / "replays")
        .and(warp::get())
        .and(with_state(&st))
        .and_then(|st: AppState| {
            control(st, StatusCode::OK, |c| {
                Ok(json!({ "replays": c.replays()? }))
            })
        });
    let one = warp::path!("api" / "replays" / String)
        .and(warp::get())
        .and(with_state(&st))
        .and_then(|id: String, st: AppState| async move {
            match replay_id(&id) {
                Ok(id) => control(st, StatusCode::OK, move |c| c.replay(id)).await,
                Err(e) => Ok(error_reply(&e)),
            }
        });
    let diff = warp::path!("api" / "replays" / String / "diff")
        .and(warp::get())
        .and(with_state(&st))
        .map(|id: String, st: AppState| recorded_diff(&st, &id));
    let diff_windows = warp::path!("api" / "replays" / String / "diff" / "windows")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(&st))
        .map(
            |id: String, q: HashMap<String, String>, st: AppState| match diff_page(&st, &id, q) {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => error_reply(&e),
            },
        );
    let cancel = warp::path!("api" / "replays" / String)
        .and(warp::delete())
        .and(admitted(st.token.clone(), listen))
        .and(with_state(&st))
        .and_then(|id: String, st: AppState| async move {
            match replay_id(&id) {
                Ok(id) => control(st, StatusCode::OK, move |c| c.cancel(id)).await,
                Err(e) => Ok(error_reply(&e)),
            }
        });
    start
        .or(list)
        .unify()
        .or(one)
        .unify()
        .or(diff)
        .unify()
        .or(diff_windows)
        .unify()
        .or(cancel)
        .unify()
}

/// `/api/versions…`: list, promote, drop.
fn version_routes(
    st: AppState,
    listen: SocketAddr,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let versions = warp::path!("api" / "versions")
        .and(warp::get())
        .and(with_state(&st))
        .and_then(|st: AppState| {
            control(st, StatusCode::OK, |c| {
                Ok(json!({ "versions": c.versions()? }))
            })
        });
    let promote = warp::path!("api" / "versions" / String / "promote")
        .and(warp::post())
        .and(admitted(st.token.clone(), listen))
        .and(with_state(&st))
        .and_then(|v: String, st: AppState| async move {
            control(st, StatusCode::OK, move |c| {
                c.promote(&v)?;
                Ok(json!({ "serving": v }))
            })
            .await
        });
    let drop = warp::path!("api" / "versions" / String)
        .and(warp::delete())
        .and(admitted(st.token.clone(), listen))
        .and(with_state(&st))
        .and_then(|v: String, st: AppState| async move {
            control(st, StatusCode::OK, move |c| {
                c.drop_version(&v)?;
                Ok(json!({ "dropped": v }))
            })
            .await
        });
    versions.or(promote).unify().or(drop).unify()
}

/// `GET /api/replays/{id}/diff`: the bounded diff a replay recorded, as stored.
fn recorded_diff(st: &AppState, id: &str) -> Response {
    match replay_id(id) {
        Ok(id) => match st.store.replay_diff(id) {
            Ok(Some(json)) => {
                warp::reply::with_header(json, "content-type", "application/json").into_response()
            }
            Ok(None) => error_reply(&ApiError::NotFound(format!(
                "no diff recorded for replay {id} (only in-place corrections and `--dry-run --diff` record one)"
            ))),
            Err(e) => error_reply(&e.into()),
        },
        Err(e) => error_reply(&e),
    }
}

/// All routes.
///
/// `listen` is the address the server is bound to: a token-less server takes state changes
/// only under its loopback names (see [`admitted`]).
pub fn routes(
    st: AppState,
    listen: SocketAddr,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let controls = control_routes(st.clone(), listen);
    let probes = probe_routes(st.clone());
    let with = move || with_state(&st);
    let q = || warp::query::<HashMap<String, String>>();
    let api = |name: &'static str| {
        warp::get()
            .and(warp::path("api"))
            .and(warp::path(name))
            .and(warp::path::end())
    };
    let status = api("status").and(with()).map(|st: AppState| {
        json_reply(
            StatusCode::OK,
            &serde_json::to_value(st.shared.status()).unwrap_or_default(),
        )
    });
    // Every read endpoint by its name (one route: an endpoint added to READ_ENDPOINTS is
    // served without more code here).
    let reads = warp::get()
        .and(warp::path("api"))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and_then(|name: String| async move {
            READ_ENDPOINTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, f)| f)
                .ok_or_else(warp::reject::not_found)
        })
        .and(with())
        .and(q())
        .map(|f: Handler, st: AppState, q| result(f(&st, q)));
    let history = warp::get()
        .and(warp::path!("api" / "products" / String / "history"))
        .and(with())
        .and(q())
        .map(|id: String, st: AppState, q| result(product_history(&st, &id, q)));
    let compare = warp::get()
        .and(warp::path!("api" / "versions" / "compare"))
        .and(with())
        .and(q())
        .map(|st: AppState, q| result(compare_versions(&st, q)));
    let export = api("export")
        .and(with())
        .and(q())
        .map(|st: AppState, q| export(&st, q));
    probes
        .or(status)
        .unify()
        .or(reads)
        .unify()
        .or(history)
        .unify()
        .or(compare)
        .unify()
        .or(export)
        .unify()
        .or(controls)
        .unify()
        .recover(|rej: warp::Rejection| async move { Ok::<_, Infallible>(rejection_reply(&rej)) })
        .unify()
}

/// The live page, `/metrics`, `/healthz` and `/readyz`.
fn probe_routes(
    st: AppState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .and(with_state(&st))
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
        .and(with_state(&st))
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
    page.or(metrics)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
}

/// The JSON error answering a request no route took.
fn rejection_reply(rej: &warp::Rejection) -> Response {
    // The most specific rejection first: a POST with a bad body is also "method not
    // allowed" for every GET route it was tried against.
    let (code, msg) = if let Some(Refused(code, msg)) = rej.find::<Refused>() {
        (*code, msg.clone())
    } else if let Some(e) = rej.find::<warp::filters::body::BodyDeserializeError>() {
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
    json_reply(code, &json!({ "error": msg }))
}

/// Serves `routes` on an already bound listener until `shutdown` resolves.
///
/// HTTP/1.1 through hyper directly (warp's own server has no timeouts): a connection that
/// does not send a complete request head within `http.header-read-timeout` of opening or
/// of its previous response is closed, so half-sent requests and idle keep-alive
/// connections cannot pile up; at most `http.max-connections` are open, a new one beyond
/// closing the connection that has been silent longest, so `/healthz` and `/readyz` stay
/// reachable for a client that sends its request at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    st: AppState,
    http: crate::config::HttpSection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let listen = listener.local_addr().unwrap_or(http.listen);
    let service = warp::service(routes(st, listen));
    let conns = Arc::new(Connections::new(http.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_read_timeout = http.header_read_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    conns.accept_failed(&e);
                    // Out of descriptors: the connection just shed frees one shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (id, activity, evict) = conns.admit();
        let io = hyper_util::rt::TokioIo::new(Tracked {
            inner: stream,
            activity,
            epoch: conns.epoch,
        });
        let routes = hyper_util::service::TowerToHyperService::new(service.clone());
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            use hyper::service::Service;
            routes.call(req.map(|body| StallGuard::new(body, header_read_timeout)))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let conns = conns.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("HTTP connection closed: {e}");
                },
                () = evict.cancelled() => {}
            }
            conns.remove(id);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The open connections of [`serve`]: their last activity and a way to close each.
struct Connections {
    /// `http.max-connections`.
    max: usize,
    /// Start of the activity clock (milliseconds since it in [`Tracked::activity`]).
    epoch: std::time::Instant,
    inner: std::sync::Mutex<ConnTable>,
}

#[derive(Default)]
struct ConnTable {
    next_id: u64,
    open: HashMap<u64, ConnSlot>,
    /// At the cap since the last "cap reached" line (logged once per episode).
    capped: bool,
    /// Connections closed to make room in this episode.
    shed: u64,
}

struct ConnSlot {
    activity: Arc<std::sync::atomic::AtomicU64>,
    evict: tokio_util::sync::CancellationToken,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max,
            epoch: std::time::Instant::now(),
            inner: std::sync::Mutex::new(ConnTable::default()),
        }
    }

    /// Registers a new connection, closing the longest-silent one first when at the cap.
    fn admit(
        &self,
    ) -> (
        u64,
        Arc<std::sync::atomic::AtomicU64>,
        tokio_util::sync::CancellationToken,
    ) {
        let mut t = self.inner.lock().expect("connections lock");
        if t.open.len() >= self.max {
            self.shed_oldest(&mut t, "http.max-connections");
        }
        t.next_id += 1;
        let id = t.next_id;
        let activity = Arc::new(std::sync::atomic::AtomicU64::new(Tracked::now_ms(
            self.epoch,
        )));
        let evict = tokio_util::sync::CancellationToken::new();
        t.open.insert(
            id,
            ConnSlot {
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        (id, activity, evict)
    }

    /// `accept` failed: out of file descriptors sheds a connection like the cap does.
    fn accept_failed(&self, e: &std::io::Error) {
        // EMFILE (24) and ENFILE (23): the process's or the system's descriptor limit.
        if matches!(e.raw_os_error(), Some(23 | 24)) {
            let mut t = self.inner.lock().expect("connections lock");
            self.shed_oldest(&mut t, "the file descriptor limit (ulimit -n)");
        } else {
            tracing::debug!("HTTP accept failed: {e}");
        }
    }

    fn shed_oldest(&self, t: &mut ConnTable, limit: &str) {
        let oldest = t
            .open
            .iter()
            .min_by_key(|(_, s)| s.activity.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(id, _)| *id);
        if let Some(slot) = oldest.and_then(|id| t.open.remove(&id)) {
            slot.evict.cancel();
            t.shed += 1;
        }
        if !t.capped {
            t.capped = true;
            tracing::warn!(
                "HTTP connection limit reached ({} open, limit from {limit}): each new connection now closes the one silent longest until fewer are open",
                t.open.len() + 1
            );
        }
    }

    fn remove(&self, id: u64) {
        let mut t = self.inner.lock().expect("connections lock");
        t.open.remove(&id);
        // Hysteresis: one line per episode, not one per connection at the edge.
        if t.capped && t.open.len() < self.max - self.max / 10 {
            tracing::info!(
                "HTTP connections below the limit again ({} open); {} were closed to make room",
                t.open.len(),
                t.shed
            );
            t.capped = false;
            t.shed = 0;
        }
    }
}

/// A request body that fails when no data arrives for `timeout`: a client that sends its
/// head and then stalls the body holds no connection longer than one that stalls the head.
struct StallGuard<B> {
    inner: B,
    timeout: std::time::Duration,
    /// Armed while the body waits for data; dropped when data comes.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> StallGuard<B> {
    fn new(inner: B, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> http_body::Body for StallGuard<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            std::task::Poll::Ready(frame) => {
                this.sleep = None;
                std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            std::task::Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(Some(Err(format!(
                        "no request body data for {} (http.header-read-timeout)",
                        crate::config::fmt_duration(timeout)
                    )
                    .into())));
                }
                std::task::Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that records when it last moved bytes (milliseconds since `epoch`).
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

impl Tracked {
    fn now_ms(epoch: std::time::Instant) -> u64 {
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.activity.store(
            Self::now_ms(self.epoch),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_of_state_changes() {
        let listen: SocketAddr = "[::1]:9464".parse().unwrap();
        let json = Some("application/json");
        let check = |method: &warp::http::Method,
                     host: Option<&str>,
                     origin: Option<&str>,
                     content_type: Option<&str>,
                     auth: Option<&str>,
                     token: &str| {
            admit(token, listen, method, host, origin, content_type, auth).map_err(|r| r.0)
        };
        let (post, delete) = (&warp::http::Method::POST, &warp::http::Method::DELETE);
        // Token-less: loopback names of the port only, same origin only, JSON POSTs only.
        for host in [
            "[::1]:9464",
            "localhost:9464",
            "LOCALHOST:9464",
            "127.0.0.1:9464",
        ] {
            assert_eq!(
                check(post, Some(host), None, json, None, ""),
                Ok(()),
                "{host}"
            );
        }
        let same = Some("http://localhost:9464");
        let typed = Some("Application/JSON; charset=utf-8");
        assert_eq!(
            check(post, Some("localhost:9464"), same, typed, None, ""),
            Ok(())
        );
        for (host, origin) in [
            (Some("localhost:9465"), None),
            (Some("localhost"), None),
            (Some("evil.example:9464"), Some("http://evil.example:9464")),
            (Some("localhost:9464"), Some("http://evil.example")),
            (Some("localhost:9464"), Some("null")),
            (None, None),
        ] {
            assert_eq!(
                check(post, host, origin, json, None, ""),
                Err(StatusCode::FORBIDDEN),
                "{host:?} {origin:?}"
            );
        }
        assert_eq!(
            check(
                post,
                Some("localhost:9464"),
                None,
                Some("text/plain"),
                None,
                ""
            ),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            check(delete, Some("localhost:9464"), None, None, None, ""),
            Ok(())
        );
        // With a token any Host (a proxy's name), the scheme in any case, Origin still checked.
        let proxied = Some("kappa.example.com");
        for auth in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(
                check(post, proxied, None, json, Some(auth), "t0k"),
                Ok(()),
                "{auth}"
            );
        }
        for auth in [
            None,
            Some("Bearer t0"),
            Some("Basic t0k"),
            Some("Bearert0k"),
        ] {
            assert_eq!(
                check(post, proxied, None, json, auth, "t0k"),
                Err(StatusCode::UNAUTHORIZED),
                "{auth:?}"
            );
        }
        assert_eq!(
            check(
                post,
                proxied,
                Some("https://evil.example"),
                json,
                Some("bearer t0k"),
                "t0k"
            ),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
