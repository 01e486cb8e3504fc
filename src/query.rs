//! Reading results: parameter parsing and the JSON shapes shared by the HTTP API, `kappa
//! query` and `kappa export`.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Value, json};

use crate::event::time::{format_rfc3339_ms, parse_rfc3339_ms};
use crate::store::{Aggregate, Store, StoreError, WindowRows};
use crate::stream::Stream;
use crate::window::FinalWindow;

/// Parses a time parameter: RFC 3339 or epoch milliseconds.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    parse_rfc3339_ms(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time or epoch milliseconds"))
}

/// Parses a window size (`1m`, `1h`, `90s`) into milliseconds.
///
/// # Errors
/// A message naming the problem.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("size {s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("size {s:?} must be positive"));
    }
    i64::try_from(d.as_millis()).map_err(|_| format!("size {s:?} is too large"))
}

/// A version a read names that the store does not hold.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// No such output version (or only a replay's scratch copy).
    #[error("no output version {0}")]
    Unknown(String),
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The output version a read is about: `named` when the store holds it, else the serving
/// one. Every read that takes a version (the API, `kappa query`, `kappa export`) resolves
/// it here, so a name that does not exist is an error rather than an empty answer.
///
/// # Errors
/// [`VersionError::Unknown`] for a name the store does not hold; store failure.
pub fn output_version(store: &Store, named: Option<&str>) -> Result<String, VersionError> {
    let Some(name) = named else {
        return Ok(store.serving()?);
    };
    if name.starts_with(crate::store::SCRATCH_PREFIX)
        || crate::stream::is_part(name)
        || store.version(name)?.is_none()
    {
        return Err(VersionError::Unknown(name.to_string()));
    }
    Ok(name.to_string())
}

/// Parses a log position `partition:offset`.
///
/// # Errors
/// A message naming the expected form.
pub fn parse_position(s: &str) -> Result<(u32, u64), String> {
    s.split_once(':')
        .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)))
        .ok_or_else(|| format!("after must be partition:offset, got {s:?}"))
}

/// A page of dead letters after `after` (exclusive): `{"dead_letters": [...], "next"}`,
/// `next` being the cursor of the following page when this one is full.
///
/// # Errors
/// Store failure.
pub fn dead_letters(
    store: &Store,
    stream: Stream,
    after: Option<(u32, u64)>,
    limit: usize,
) -> Result<Value, StoreError> {
    let items = store.stream_dead_letters(stream, after, limit)?;
    let next = (items.len() == limit)
        .then(|| {
            items
                .last()
                .map(|d| format!("{}:{}", d.partition, d.offset))
        })
        .flatten();
    Ok(json!({
        "stream": stream.as_str(),
        "dead_letters": items.iter().map(|d| json!({
            "partition": d.partition, "offset": d.offset,
            "record_time": format_rfc3339_ms(d.record_ts),
            "kind": d.kind, "reason": d.reason, "size": d.size,
            "raw": String::from_utf8_lossy(&d.raw),
        })).collect::<Vec<_>>(),
        "next": next,
    }))
}

pub use crate::event::time::size_name;

/// One final window of one aggregate as JSON.
#[must_use]
pub fn window_json(w: &WindowRows) -> Value {
    json!({
        "aggregate": w.aggregate.as_str(),
        "size": size_name(w.size_ms),
        "window_start": format_rfc3339_ms(w.start_ms),
        "window_end": format_rfc3339_ms(w.start_ms + w.size_ms),
        "rows": w.rows.iter().map(|r| Value::Object(r.to_json())).collect::<Vec<_>>(),
    })
}

/// A whole window (every aggregate) as JSON; used for provisional windows.
#[must_use]
pub fn full_window_json(f: &FinalWindow, provisional: bool) -> Value {
    let mut aggs = serde_json::Map::new();
    for (agg, rows) in crate::store::rows_of(f) {
        aggs.insert(
            agg.as_str().into(),
            Value::Array(rows.iter().map(|r| Value::Object(r.to_json())).collect()),
        );
    }
    json!({
        "size": size_name(f.size_ms),
        "window_start": format_rfc3339_ms(f.start_ms),
        "window_end": format_rfc3339_ms(f.end_ms()),
        "provisional": provisional,
        "aggregates": aggs,
    })
}

/// The latest final window of each size, every aggregate.
///
/// # Errors
/// Store failure.
pub fn latest(store: &Store, version: &str) -> Result<Value, StoreError> {
    let mut windows = Vec::new();
    for stream in Stream::ALL {
        let stored = stream.version(version);
        for size in store.sizes(&stored)? {
            if let Some(start) = store.latest_window(&stored, size)? {
                let mut w = window_at(store, &stored, size, start)?;
                w["stream"] = stream.as_str().into();
                windows.push(w);
            }
        }
    }
    Ok(json!({ "version": version, "windows": windows }))
}

/// Every aggregate of the final window `(size, start)`.
///
/// # Errors
/// Store failure.
pub fn window_at(store: &Store, version: &str, size: i64, start: i64) -> Result<Value, StoreError> {
    let mut aggs = serde_json::Map::new();
    for &agg in Aggregate::of(Stream::of_version(version).0) {
        let rows = store.windows(version, agg, size, start, start + 1, 1)?;
        let rows: Vec<Value> = rows
            .first()
            .map(|w| w.rows.iter().map(|r| Value::Object(r.to_json())).collect())
            .unwrap_or_default();
        aggs.insert(agg.as_str().into(), Value::Array(rows));
    }
    Ok(json!({
        "size": size_name(size),
        "window_start": format_rfc3339_ms(start),
        "window_end": format_rfc3339_ms(start + size),
        "provisional": false,
        "aggregates": aggs,
    }))
}

/// Error of [`export`]: the store, or the output.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// No such version.
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// Writes every final row of `version` as JSON lines — the events', then every other
/// stream's — each in key order (aggregate, size, window start, key):
/// `{"version","aggregate","size","window_start","window_end",...fields}`. Returns the
/// number of lines.
///
/// # Errors
/// Store or output failure.
pub fn export(store: &Store, version: &str, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut n = 0u64;
    for stream in Stream::ALL {
        store.for_each_row(&stream.version(version), |agg, size, start, row| {
            // The version, then the fields a window's fingerprint hashes.
            let mut obj = serde_json::Map::new();
            obj.insert("version".into(), version.into());
            obj.extend(crate::store::export_fields(agg, size, start, row));
            serde_json::to_writer(&mut *out, &obj).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            n += 1;
            Ok::<(), ExportError>(())
        })?;
    }
    // The declared aggregates' rows, after the built-in ones.
    let (plan, declared) = every_declared(store, version, &DECLARING)?;
    for (i, _, w) in &declared {
        for line in declared_lines(&plan.aggregates[*i], w) {
            let mut obj = serde_json::Map::new();
            obj.insert("version".into(), version.into());
            obj.extend(line);
            serde_json::to_writer(&mut *out, &obj).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

/// A declared window, the index of its aggregate in its version's plan and the final
/// point of its stream's part ([`every_declared`]).
type Placed = (usize, i64, crate::store::DeclaredWindow);

/// Every final window of `version`'s declared aggregates — the events', then the clicks'
/// — in export order (name, size, start), with the index of its aggregate in the
/// version's plan and the final point of its stream's part; and that plan.
///
/// # Errors
/// Store failure; no such version.
fn every_declared(
    store: &Store,
    version: &str,
    streams: &[Stream],
) -> Result<(crate::declared::Plan, Vec<Placed>), VersionError> {
    let plan = version_plan(store, version)?;
    let mut out = Vec::new();
    for &stream in streams {
        let part = stream.version(version);
        let windows = store.all_declared(&part)?;
        if windows.is_empty() {
            continue;
        }
        let through = store.declared_through(&part)?;
        for w in windows {
            if let Some(i) = plan.aggregates.iter().position(|a| a.name == w.aggregate) {
                out.push((i, through, w));
            }
        }
    }
    Ok((plan, out))
}

/// The export lines of declared window `w` of `agg`, without the version:
/// `{"aggregate","size","window_start","window_end","key",…measures}`, by key.
fn declared_lines<'w>(
    agg: &'w crate::declared::Aggregate,
    w: &'w crate::store::DeclaredWindow,
) -> impl Iterator<Item = serde_json::Map<String, Value>> + 'w {
    w.rows.iter().map(move |(key, row)| {
        let mut obj = serde_json::Map::new();
        obj.insert("aggregate".into(), w.aggregate.clone().into());
        obj.extend(declared_head(w));
        obj.extend(agg.row_json(key, row));
        obj
    })
}

/// `kappa fingerprint` and `/api/fingerprint`: the built-in windows' fingerprint
/// ([`crate::compare::fingerprint_json`]) and, when the version declares aggregates, their
/// windows starting in `[from, to)`: `declared` (each `aggregate`, `size`,
/// `window_start`, `hash`: xxh3-128 of the window's export lines without the version, each
/// ending in `\n`) and `declared_digest` (xxh3-128 of each window's name, size, start and
/// hash, in export order). Equal windows have equal hashes in any version or store.
///
/// # Errors
/// Store failure; no such version.
pub fn fingerprint(
    store: &Store,
    version: &str,
    from: i64,
    to: i64,
) -> Result<Value, VersionError> {
    let mut v = crate::compare::fingerprint_json(store, version, from, to)?;
    let prints = declared_prints(store, version, (from, to), &DECLARING)?;
    if prints.is_empty() {
        return Ok(v);
    }
    let mut digest = xxhash_rust::xxh3::Xxh3Default::new();
    let mut windows = Vec::new();
    for p in &prints {
        for part in [
            p.aggregate.as_bytes(),
            &p.size_ms.to_le_bytes(),
            &p.start_ms.to_le_bytes(),
            &p.hash.to_le_bytes(),
        ] {
            digest.update(&(part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        windows.push(json!({
            "aggregate": p.aggregate,
            "size": size_name(p.size_ms),
            "window_start": format_rfc3339_ms(p.start_ms),
            "hash": crate::store::hex(p.hash),
        }));
    }
    v["declared"] = Value::Array(windows);
    v["declared_digest"] = crate::store::hex(digest.digest128()).into();
    Ok(v)
}

/// The streams aggregates are declared on.
const DECLARING: [Stream; 2] = [Stream::Events, Stream::Clicks];

/// One declared window's content hash, and the point its stream's part of the version is
/// final through.
struct DeclaredPrint {
    aggregate: String,
    size_ms: i64,
    start_ms: i64,
    hash: u128,
    through: i64,
}

/// The content hash of each of `version`'s declared windows starting in `[from, to)`, in
/// export order.
fn declared_prints(
    store: &Store,
    version: &str,
    (from, to): (i64, i64),
    streams: &[Stream],
) -> Result<Vec<DeclaredPrint>, VersionError> {
    let (plan, declared) = every_declared(store, version, streams)?;
    let mut out = Vec::new();
    for (i, through, w) in declared {
        if !(from..to).contains(&w.start_ms) {
            continue;
        }
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        for line in declared_lines(&plan.aggregates[i], &w) {
            h.update(Value::Object(line).to_string().as_bytes());
            h.update(b"\n");
        }
        out.push(DeclaredPrint {
            through,
            aggregate: w.aggregate,
            size_ms: w.size_ms,
            start_ms: w.start_ms,
            hash: h.digest128(),
        });
    }
    Ok(out)
}

/// Versions `a` and `b`'s declared windows starting in `[from, to)` compared by content
/// hash, on the windows final in both (ending at or before both sides' final points of
/// that aggregate's stream), listing at most `max_windows`; `None` when neither declares
/// aggregates.
///
/// # Errors
/// Store failure; no such version.
pub fn compare_declared(
    store: &Store,
    a: &str,
    b: &str,
    range: (i64, i64),
    max_windows: usize,
) -> Result<Option<crate::compare::DeclaredComparison>, VersionError> {
    compare_declared_of(store, (a, b), range, max_windows, &DECLARING)
}

/// [`compare_declared`] over the aggregates both versions declare (by name): what a
/// promotion gate counts, so a new aggregate's windows are not a change.
///
/// # Errors
/// Store failure; no such version.
pub fn compare_declared_shared(
    store: &Store,
    pair: (&str, &str),
    range: (i64, i64),
    max_windows: usize,
) -> Result<Option<crate::compare::DeclaredComparison>, VersionError> {
    compare_prints(store, pair, range, max_windows, (&DECLARING, true))
}

/// [`compare_declared`] over the aggregates declared on `streams` only (an in-place
/// correction recomputes the events, not the clicks).
///
/// # Errors
/// Store failure; no such version.
pub fn compare_declared_of(
    store: &Store,
    (a, b): (&str, &str),
    range: (i64, i64),
    max_windows: usize,
    streams: &[Stream],
) -> Result<Option<crate::compare::DeclaredComparison>, VersionError> {
    compare_prints(store, (a, b), range, max_windows, (streams, false))
}

/// The comparison of [`compare_declared_of`]; with `shared_only`, of the aggregates both
/// versions declare (by name) only.
fn compare_prints(
    store: &Store,
    (a, b): (&str, &str),
    range: (i64, i64),
    max_windows: usize,
    (streams, shared_only): (&[Stream], bool),
) -> Result<Option<crate::compare::DeclaredComparison>, VersionError> {
    // Each side's plan, for the shared names and the rows of the listed windows.
    let plans = (version_plan(store, a)?, version_plan(store, b)?);
    let both = |n: &str| plans.0.get(n).is_some() && plans.1.get(n).is_some();
    let named = |p: &DeclaredPrint| !shared_only || both(&p.aggregate);
    let (mut pa, mut pb) = (
        declared_prints(store, a, range, streams)?,
        declared_prints(store, b, range, streams)?,
    );
    pa.retain(named);
    pb.retain(named);
    if pa.is_empty() && pb.is_empty() {
        return Ok(None);
    }
    // A window is compared once final on both sides: a side that has not got there yet
    // is not "missing" it (a side without the aggregate at all has no final point for it).
    let throughs = |ps: &[DeclaredPrint]| -> std::collections::HashMap<String, i64> {
        ps.iter()
            .map(|p| (p.aggregate.clone(), p.through))
            .collect()
    };
    let (ta, tb) = (throughs(&pa), throughs(&pb));
    let keyed = |ps: &[DeclaredPrint]| -> BTreeMap<(String, i64, i64), u128> {
        ps.iter()
            .map(|p| ((p.aggregate.clone(), p.size_ms, p.start_ms), p.hash))
            .collect()
    };
    let (ka, kb) = (keyed(&pa), keyed(&pb));
    let mut c = crate::compare::DeclaredComparison::default();
    let keys: std::collections::BTreeSet<&(String, i64, i64)> =
        ka.keys().chain(kb.keys()).collect();
    for key @ (name, size, start) in keys {
        let both = ta
            .get(name)
            .copied()
            .unwrap_or(i64::MAX)
            .min(tb.get(name).copied().unwrap_or(i64::MAX));
        if start.saturating_add(*size) > both {
            continue;
        }
        c.compared += 1;
        let differs = match (ka.get(key), kb.get(key)) {
            (Some(x), Some(y)) => x != y,
            (Some(_), None) => {
                c.only_in_a += 1;
                true
            }
            _ => {
                c.only_in_b += 1;
                true
            }
        };
        if differs {
            c.differing_count += 1;
            if c.differing.len() < max_windows {
                c.differing
                    .push((name.clone(), size_name(*size), format_rfc3339_ms(*start)));
                let (ra, rb) = (
                    declared_rows(store, a, &plans.0, name, *size, *start)?,
                    declared_rows(store, b, &plans.1, name, *size, *start)?,
                );
                c.rows.extend(row_diffs(name, *size, *start, &ra, &rb));
            }
        }
    }
    Ok(Some(c))
}

/// The declared aggregates of output version `version`, as its configuration had them.
///
/// # Errors
/// Store failure; no such version.
pub fn version_plan(store: &Store, version: &str) -> Result<crate::declared::Plan, VersionError> {
    let info = store
        .version(version)?
        .ok_or_else(|| VersionError::Unknown(version.to_string()))?;
    Ok(crate::config::Config::default()
        .with_fingerprint(&info.config)
        .map(|c| c.plan())
        .unwrap_or_default())
}

/// The rows of `version`'s window (`size`, `start`) of declared aggregate `name` of its
/// `plan` by key:
/// (the key as exported, the rest of the row); none when it does not have it.
fn declared_rows(
    store: &Store,
    version: &str,
    plan: &crate::declared::Plan,
    name: &str,
    size: i64,
    start: i64,
) -> Result<BTreeMap<Vec<String>, (Value, Value)>, VersionError> {
    let Some(agg) = plan.get(name) else {
        return Ok(BTreeMap::new());
    };
    let part = agg.stream.version(version);
    let windows = store.declared_windows(&part, name, Some(size), start, start + 1, 1)?;
    Ok(windows
        .iter()
        .flat_map(|w| &w.rows)
        .map(|(key, row)| {
            let mut o = agg.row_json(key, row);
            let named = o.shift_remove("key").unwrap_or_default();
            (key.clone(), (named, Value::Object(o)))
        })
        .collect())
}

/// The groups whose rows differ between `a` and `b` (one window), at most
/// [`crate::compare::DECLARED_ROWS`].
fn row_diffs(
    name: &str,
    size: i64,
    start: i64,
    a: &BTreeMap<Vec<String>, (Value, Value)>,
    b: &BTreeMap<Vec<String>, (Value, Value)>,
) -> Vec<crate::compare::DeclaredRowDiff> {
    let keys: std::collections::BTreeSet<&Vec<String>> = a.keys().chain(b.keys()).collect();
    let row = |m: &BTreeMap<Vec<String>, (Value, Value)>, k: &Vec<String>| {
        m.get(k).map(|(_, r)| r.clone())
    };
    keys.into_iter()
        .filter(|k| row(a, k) != row(b, k))
        .take(crate::compare::DECLARED_ROWS)
        .map(|k| crate::compare::DeclaredRowDiff {
            aggregate: name.to_string(),
            size: size_name(size),
            window_start: format_rfc3339_ms(start),
            key: a
                .get(k)
                .or(b.get(k))
                .map(|(named, _)| named.clone())
                .unwrap_or_default(),
            a: row(a, k),
            b: row(b, k),
        })
        .collect()
}

/// `size`, `window_start`, `window_end` of a declared window.
fn declared_head(w: &crate::store::DeclaredWindow) -> serde_json::Map<String, Value> {
    let mut o = serde_json::Map::new();
    o.insert("size".into(), size_name(w.size_ms).into());
    o.insert("window_start".into(), format_rfc3339_ms(w.start_ms).into());
    o.insert(
        "window_end".into(),
        format_rfc3339_ms(w.start_ms.saturating_add(w.size_ms)).into(),
    );
    o
}

/// Where a declared aggregate's windows are read: its name, a size (every size when
/// none), starts in `[from, to)`, at most `limit` windows.
#[derive(Debug, Clone)]
pub struct DeclaredQuery<'a> {
    /// The aggregate's name.
    pub name: &'a str,
    /// Window size (ms).
    pub size_ms: Option<i64>,
    /// First window start.
    pub from: i64,
    /// End of the window starts (exclusive).
    pub to: i64,
    /// Windows at most.
    pub limit: usize,
}

/// Why a declared aggregate's range total cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum TotalError {
    /// No such version; store failure.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The aggregate, its measures or the range do not allow it (one line).
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for TotalError {
    fn from(e: StoreError) -> Self {
        Self::Version(e.into())
    }
}

/// A declared aggregate's rows over the range `[q.from, q.to)`, one per key: its stored
/// rollups that fit (hours, quarters of a day, days, weeks, months, years in the version's
/// zone) and its final windows for the rest, added up (exact for `count`, `sum`, `min`,
/// `max`; [`crate::declared::Aggregate::mergeable`]). Windows after its final point are
/// not there yet: `final_to` says where the answer stops.
/// `{"version","aggregate","from","to","final_to","size","windows","buckets":{unit: n},"rows":[…]}`
/// (`size`: the largest window size both ends fall on; `windows` and `buckets`: what was
/// read).
///
/// # Errors
/// No such version or aggregate, a measure that does not add up, a range no size tiles;
/// store failure.
pub fn declared_total(
    store: &Store,
    version: &str,
    plan: &crate::declared::Plan,
    q: &DeclaredQuery<'_>,
) -> Result<Value, TotalError> {
    let agg = plan.get(q.name).ok_or_else(|| {
        let names: Vec<&str> = plan.aggregates.iter().map(|a| a.name.as_str()).collect();
        TotalError::Refused(format!(
            "no declared aggregate {:?} in version {version} (it declares {})",
            q.name,
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        ))
    })?;
    agg.mergeable().map_err(TotalError::Refused)?;
    let size = agg
        .tiling_size(q.from, q.to)
        .filter(|_| q.from < q.to && q.from != i64::MIN && q.to != i64::MAX)
        .ok_or_else(|| {
            let sizes: Vec<String> = agg.sizes_ms.iter().map(|&s| size_name(s)).collect();
            TotalError::Refused(format!(
                "a total of {:?} needs from < to, both on a boundary of one of its window sizes ({})",
                q.name,
                sizes.join(", ")
            ))
        })?;
    let stored = agg.stream.version(version);
    let info = store
        .version(version)?
        .ok_or_else(|| VersionError::Unknown(version.to_string()))?;
    let cal = crate::rollup::Calendar::of_fingerprint(&info.config);
    let t = store.declared_total(&stored, (agg, &cal), size, q.from, q.to)?;
    let final_to = store.declared_through(&stored)?.clamp(q.from, q.to);
    let rows: Vec<Value> = (t.rows.iter())
        .map(|(k, r)| Value::Object(agg.row_json(k, r)))
        .collect();
    let buckets: serde_json::Map<String, Value> = (t.buckets.iter())
        .map(|&(u, n)| (u.as_str().to_string(), n.into()))
        .collect();
    Ok(json!({
        "version": version,
        "aggregate": q.name,
        "from": format_rfc3339_ms(q.from),
        "to": format_rfc3339_ms(q.to),
        "final_to": format_rfc3339_ms(final_to),
        "size": size_name(size),
        "windows": t.windows,
        "buckets": buckets,
        "rows": rows,
    }))
}

/// Whether `name` is a declared aggregate of `plan` (`version`'s, [`version_plan`]): then
/// its final windows as JSON,
/// `{"version","aggregate","windows":[{"size","window_start","window_end","rows":[…]}]}`
/// (with `flat`, `rows` of every window, each with its window's start and end).
///
/// # Errors
/// Store failure; no such version.
pub fn declared_windows(
    store: &Store,
    version: &str,
    plan: &crate::declared::Plan,
    q: &DeclaredQuery<'_>,
    flat: bool,
) -> Result<Option<Value>, VersionError> {
    let Some(agg) = plan.get(q.name) else {
        return Ok(None);
    };
    // The clicks' aggregates are kept under the version's clicks part.
    let stored = agg.stream.version(version);
    let ws = store.declared_windows(&stored, q.name, q.size_ms, q.from, q.to, q.limit)?;
    let rows_of = |w: &crate::store::DeclaredWindow| -> Vec<Value> {
        let head = declared_head(w);
        w.rows
            .iter()
            .map(|(k, r)| {
                let mut o = agg.row_json(k, r);
                if flat {
                    o.insert("window_start".into(), head["window_start"].clone());
                    o.insert("window_end".into(), head["window_end"].clone());
                }
                Value::Object(o)
            })
            .collect()
    };
    if flat {
        let rows: Vec<Value> = ws.iter().flat_map(rows_of).collect();
        return Ok(Some(
            json!({ "version": version, "aggregate": q.name, "rows": rows }),
        ));
    }
    let windows: Vec<Value> = ws
        .iter()
        .map(|w| {
            let mut o = declared_head(w);
            o.insert("rows".into(), Value::Array(rows_of(w)));
            Value::Object(o)
        })
        .collect();
    Ok(Some(
        json!({ "version": version, "aggregate": q.name, "windows": windows }),
    ))
}
