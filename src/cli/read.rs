//! `kappa query`, `kappa export`, `kappa dead-letters`: read the store directly, or through
//! the HTTP API of the `kappa run` that holds it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::client::{Access, access};
use super::text::printable;
use crate::config::Config;

/// `kappa query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Output version [default: the serving one].
    #[arg(long = "version", value_name = "NAME")]
    pub output_version: Option<String>,
    /// URL of a running kappa, used when the store is held by it [default: http://<http.listen>].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Answer over a time range from this whole hour (RFC 3339 or epoch ms), with `--to`,
    /// instead of the latest windows.
    #[arg(long, value_name = "TIME", requires = "to")]
    pub from: Option<String>,
    /// End of the range (exclusive, a whole hour).
    #[arg(long, value_name = "TIME", requires = "from")]
    pub to: Option<String>,
    /// What to answer over the range.
    #[arg(long, value_enum, default_value = "top-products")]
    pub report: crate::range::Report,
    /// Length of the range's ranked lists.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub k: u64,
    /// Views a product needs to be ranked by conversion (`--report funnel`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_views: u64,
    /// A declared aggregate's final windows (`[[aggregates]]`), instead of the latest
    /// built-in ones; `--from`/`--to` bound the window starts (any time).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["report", "k", "min_views"])]
    pub aggregate: Option<String>,
    /// With `--aggregate`: only windows of this size (`10s`) [default: every size].
    #[arg(long, value_name = "SIZE", requires = "aggregate")]
    pub size: Option<String>,
    /// With `--aggregate`, `--from` and `--to`: one row per key over the whole range, its
    /// windows added up (`count`, `sum`, `min`, `max` add up exactly; the range's ends on
    /// a boundary of one of the aggregate's sizes).
    #[arg(long, requires_all = ["aggregate", "from", "to"], conflicts_with = "size")]
    pub total: bool,
}

/// `kappa export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output version [default: the serving one].
    #[arg(long = "version", value_name = "NAME")]
    pub output_version: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// URL of a running kappa, used when the store is held by it.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// `kappa fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Output version [default: the serving one].
    #[arg(long = "version", value_name = "NAME")]
    pub output_version: Option<String>,
    /// First window start (RFC 3339 or epoch ms) [default: the first].
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Windows starting at or after this are left out [default: none].
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// URL of a running kappa, used when the store is held by it.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// `kappa dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    /// Whose dead letters: `events`, `reviews` or `clicks`.
    #[arg(long, default_value = "events", value_parser = crate::stream::Stream::parse)]
    pub stream: crate::stream::Stream,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Start after this position (`partition:offset`).
    #[arg(long, value_name = "P:O")]
    pub after: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// URL of a running kappa, used when the store is held by it.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Table,
    /// For machines.
    Json,
}

fn version_param(v: Option<&String>) -> String {
    v.map(|v| format!("?version={v}")).unwrap_or_default()
}

/// `kappa query`.
///
/// # Errors
/// No store, or it cannot be read.
pub fn query(cfg: &Config, a: &QueryArgs) -> anyhow::Result<()> {
    if let Some(name) = &a.aggregate {
        return query_declared(cfg, a, name);
    }
    if let (Some(from), Some(to)) = (&a.from, &a.to) {
        return query_range(cfg, a, from, to);
    }
    let latest: Value = match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let version = crate::query::output_version(&store, a.output_version.as_deref())?;
            crate::query::latest(&store, &version)?
        }
        Access::Remote(server) => serde_json::from_slice(&server.get(&format!(
            "/api/latest{}",
            version_param(a.output_version.as_ref())
        ))?)?,
    };
    emit(a.format, &latest, print_table)
}

/// `kappa query --aggregate NAME`: a declared aggregate's final windows.
fn query_declared(cfg: &Config, a: &QueryArgs, name: &str) -> anyhow::Result<()> {
    let size_ms = a
        .size
        .as_deref()
        .map(crate::query::parse_size)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    let v: Value = match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let version = crate::query::output_version(&store, a.output_version.as_deref())?;
            let q = crate::query::DeclaredQuery {
                name,
                size_ms,
                from: time_flag("--from", a.from.as_ref(), i64::MIN)?,
                to: time_flag("--to", a.to.as_ref(), i64::MAX)?,
                limit: 100_000,
            };
            let plan = crate::query::version_plan(&store, &version)?;
            if a.total {
                let v = crate::query::declared_total(&store, &version, &plan, &q)?;
                return emit(a.format, &v, print_total);
            }
            let Some(v) = crate::query::declared_windows(&store, &version, &plan, &q, false)?
            else {
                let names: Vec<&str> = plan.aggregates.iter().map(|a| a.name.as_str()).collect();
                let declared = if names.is_empty() {
                    format!("version {version} declares no aggregates")
                } else {
                    format!("version {version} declares {}", names.join(", "))
                };
                anyhow::bail!("--aggregate: no aggregate {name:?}; {declared}");
            };
            v
        }
        Access::Remote(server) => serde_json::from_slice(&server.get(&format!(
            "/api/windows{}",
            query_string(&[
                ("aggregate", Some(name)),
                ("version", a.output_version.as_deref()),
                ("size", a.size.as_deref()),
                ("from", a.from.as_deref()),
                ("to", a.to.as_deref()),
                ("limit", Some("100000")),
                ("total", a.total.then_some("true")),
            ])
        ))?)?,
    };
    if a.total {
        return emit(a.format, &v, print_total);
    }
    emit(a.format, &v, print_declared)
}

/// A declared aggregate's windows as text: a line per window, a row per key.
fn print_declared(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let windows = v["windows"].as_array().cloned().unwrap_or_default();
    if windows.is_empty() {
        writeln!(
            out,
            "no final windows of {} in version {}",
            t(&v["aggregate"]),
            t(&v["version"])
        )?;
    }
    for w in &windows {
        writeln!(
            out,
            "── {} {} window {} → {} (final, version {})",
            t(&v["aggregate"]),
            t(&w["size"]),
            t(&w["window_start"]),
            t(&w["window_end"]),
            t(&v["version"])
        )?;
        print_rows(out, &w["rows"])?;
    }
    Ok(())
}

/// A declared aggregate's rows, one line each: its key's parts, then its measures.
fn print_rows(out: &mut dyn Write, rows: &Value) -> std::io::Result<()> {
    for r in rows.as_array().into_iter().flatten() {
        let mut cells: Vec<String> = r["key"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", t(v)))
            .collect();
        if let Some(o) = r.as_object() {
            cells.extend(
                o.iter()
                    .filter(|(k, _)| *k != "key" && (*k != "skipped" || v_nonzero(&o["skipped"])))
                    .map(|(k, v)| format!("{k} {}", t(v))),
            );
        }
        writeln!(out, "  {}", cells.join("  "))?;
    }
    Ok(())
}

/// `kappa query --aggregate NAME --total`: one header, the range's rows.
fn print_total(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let buckets: Vec<String> = (v["buckets"].as_object().into_iter().flatten())
        .map(|(unit, n)| format!("{unit} {n}"))
        .collect();
    let rollups = if buckets.is_empty() {
        String::new()
    } else {
        format!("rollups ({}) and ", buckets.join(", "))
    };
    writeln!(
        out,
        "── {} {} → {} (final to {}, version {}; from {rollups}{} windows)",
        t(&v["aggregate"]),
        t(&v["from"]),
        t(&v["to"]),
        t(&v["final_to"]),
        t(&v["version"]),
        t(&v["windows"]),
    )?;
    print_rows(out, &v["rows"])
}

fn v_nonzero(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n > 0)
}

/// `v` on stdout: pretty JSON, or as `table` prints it.
fn emit(
    format: Format,
    v: &Value,
    table: fn(&mut dyn Write, &Value) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, v)?;
        writeln!(out)?;
    } else {
        table(&mut out, v)?;
    }
    Ok(())
}

/// `kappa query --from --to`: a range answer.
fn query_range(cfg: &Config, a: &QueryArgs, from: &str, to: &str) -> anyhow::Result<()> {
    let (k, min_views) = (a.k.to_string(), a.min_views.to_string());
    let v: Value = match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let q = crate::range::Question::new(
                crate::query::output_version(&store, a.output_version.as_deref())?,
                time_flag("--from", a.from.as_ref(), 0)?,
                time_flag("--to", a.to.as_ref(), 0)?,
                usize::try_from(a.k)?,
                a.min_views,
            )
            .map_err(|e| anyhow::anyhow!("--{e}"))?;
            crate::range::answer(&store, &q, a.report)?
        }
        Access::Remote(server) => serde_json::from_slice(&server.get(&format!(
            "/api/{}{}",
            a.report.endpoint(),
            query_string(&[
                ("version", a.output_version.as_deref()),
                ("from", Some(from)),
                ("to", Some(to)),
                ("k", Some(&k)),
                ("min_views", Some(&min_views)),
            ])
        ))?)?,
    };
    emit(a.format, &v, print_range)
}

/// A range answer as a table: its header, then each list it has.
fn print_range(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    let b = &v["buckets"];
    let tiles: Vec<String> = crate::rollup::Unit::LARGEST_FIRST
        .iter()
        .filter_map(|u| {
            let n = b[u.as_str()].as_u64().filter(|&n| n > 0)?;
            let name = match u {
                crate::rollup::Unit::SixHours => "quarter day",
                _ => u.as_str(),
            };
            Some(format!("{n} {name}{}", if n == 1 { "" } else { "s" }))
        })
        .collect();
    writeln!(
        out,
        "── {} → {} (final to {}, version {}, {}; from {})",
        t(&v["from"]),
        t(&v["to"]),
        t(&v["final_to"]),
        t(&v["version"]),
        t(&v["time_zone"]),
        if tiles.is_empty() {
            "nothing".into()
        } else {
            tiles.join(", ")
        }
    )?;
    if let Some(e) = v["events_by_type"].as_object() {
        let by: Vec<String> = e.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "  events: {}", by.join(" · "))?;
        writeln!(
            out,
            "  view → cart {} · cart → purchase {} · view → purchase {}",
            t(&v["view_to_cart"]),
            t(&v["cart_to_purchase"]),
            t(&v["view_to_purchase"])
        )?;
    }
    for (title, key, name) in [
        ("top products by units", "by_units", "product_id"),
        ("top products by revenue", "by_revenue", "product_id"),
        ("categories", "categories", "category"),
        (
            "top products by conversion",
            "top_by_conversion",
            "product_id",
        ),
    ] {
        let Some(rows) = v[key].as_array() else {
            continue;
        };
        writeln!(out, "  {title}:")?;
        writeln!(
            out,
            "    {:>3} {:<16} {:>8} {:>8} {:>9} {:>7} {:>14} {:>8}",
            "#", name, "views", "carts", "purchases", "units", "revenue", "v→p"
        )?;
        for (i, r) in rows.iter().enumerate() {
            let rank = r["rank"].as_u64().map_or(i as u64 + 1, |n| n);
            writeln!(
                out,
                "    {rank:>3} {:<16} {:>8} {:>8} {:>9} {:>7} {:>14} {:>8}",
                t(&r[name]),
                t(&r["views"]),
                t(&r["add_to_carts"]),
                t(&r["purchases"]),
                t(&r["units"]),
                t(&r["revenue"]),
                t(&r["view_to_purchase"])
            )?;
        }
    }
    if let Some(rows) = v["top_searches"].as_array() {
        writeln!(out, "  top searches:")?;
        for r in rows {
            writeln!(
                out,
                "    {:>3}. {:<24} {:>8}",
                t(&r["rank"]),
                t(&r["query"]),
                t(&r["count"])
            )?;
        }
    }
    Ok(())
}

/// A JSON value as plain, printable text (strings without quotes, control characters
/// escaped), so width formatting applies.
fn t(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_table(out: &mut dyn Write, latest: &Value) -> std::io::Result<()> {
    let windows = latest["windows"].as_array().cloned().unwrap_or_default();
    if windows.is_empty() {
        writeln!(
            out,
            "no final windows yet in version {} (a window is final once the watermark passes its end)",
            t(&latest["version"])
        )?;
        return Ok(());
    }
    for w in &windows {
        let aggs = &w["aggregates"];
        writeln!(
            out,
            "── {} {}window {} → {} (final, version {})",
            t(&w["size"]),
            if w["stream"] == "reviews" {
                "reviews "
            } else {
                ""
            },
            t(&w["window_start"]),
            t(&w["window_end"]),
            t(&latest["version"])
        )?;
        if w["stream"] == "reviews" {
            print_reviews(out, aggs)?;
            continue;
        }
        let funnel: Vec<String> = aggs["events_by_type"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{} {}", t(&r["event_type"]), t(&r["count"])))
            .collect();
        writeln!(out, "  events: {}", funnel.join(" · "))?;
        writeln!(
            out,
            "  {:<16} {:>10} {:>8} {:>14}",
            "category", "purchases", "units", "revenue"
        )?;
        for r in aggs["sales_by_category"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {:<16} {:>10} {:>8} {:>14}",
                t(&r["category"]),
                t(&r["purchases"]),
                t(&r["units"]),
                t(&r["revenue"])
            )?;
        }
        for (title, key) in [
            ("top products by units", "top_products_by_units"),
            ("top products by revenue", "top_products_by_revenue"),
        ] {
            writeln!(out, "  {title}:")?;
            for r in aggs[key].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "    {:>2}. {:<12} {:>6} units {:>12}",
                    t(&r["rank"]),
                    t(&r["product_id"]),
                    t(&r["units"]),
                    t(&r["revenue"])
                )?;
            }
        }
        writeln!(out, "  top searches:")?;
        for r in aggs["top_searches"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "    {:>2}. {:<40} {:>6}",
                t(&r["rank"]),
                t(&r["query"]),
                t(&r["count"])
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The review aggregates of one window (`kappa query`).
fn print_reviews(out: &mut dyn Write, aggs: &Value) -> std::io::Result<()> {
    let list = |key: &str| aggs[key].as_array().cloned().unwrap_or_default();
    let avg = list("average_rating");
    let avg = avg.first().cloned().unwrap_or_default();
    let histogram: Vec<String> = list("rating_histogram")
        .iter()
        .map(|r| format!("{}★ {}", t(&r["rating"]), t(&r["count"])))
        .collect();
    writeln!(
        out,
        "  reviews: {} · average {} · {}",
        t(&avg["reviews"]),
        t(&avg["average"]),
        histogram.join(" · ")
    )?;
    for (title, key) in [
        ("most reviewed", "most_reviewed_products"),
        ("best rated", "best_rated_products"),
        ("worst rated", "worst_rated_products"),
    ] {
        writeln!(out, "  {title}:")?;
        for r in list(key) {
            writeln!(
                out,
                "    {:>2}. {:<12} {:>4} reviews  average {}",
                t(&r["rank"]),
                t(&r["product_id"]),
                t(&r["reviews"]),
                t(&r["average"])
            )?;
        }
    }
    writeln!(
        out,
        "  {:<10} {:>9} {:>9} {:>9}",
        "aspect", "positive", "negative", "neutral"
    )?;
    let rows = list("review_aspects");
    for aspect in crate::review::Aspect::ALL {
        let count = |sentiment: &str| {
            rows.iter()
                .find(|r| r["aspect"] == aspect.as_str() && r["sentiment"] == sentiment)
                .map_or_else(|| "0".into(), |r| t(&r["count"]))
        };
        writeln!(
            out,
            "  {:<10} {:>9} {:>9} {:>9}",
            aspect.as_str(),
            count("positive"),
            count("negative"),
            count("neutral")
        )?;
    }
    writeln!(out)
}

/// `kappa export`.
///
/// # Errors
/// No store, unreadable store, or an unwritable output.
pub fn export(cfg: &Config, a: &ExportArgs) -> anyhow::Result<()> {
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let version = crate::query::output_version(&store, a.output_version.as_deref())?;
            crate::query::export(&store, &version, &mut out)?;
        }
        Access::Remote(server) => {
            out.write_all(&server.for_export(cfg).get(&format!(
                "/api/export{}",
                version_param(a.output_version.as_ref())
            ))?)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `kappa dead-letters`.
///
/// # Errors
/// No store, or it cannot be read.
pub fn dead_letters(cfg: &Config, a: &DeadLetterArgs) -> anyhow::Result<()> {
    let mut url_params = format!("?limit={}&stream={}", a.limit, a.stream);
    if let Some(after) = &a.after {
        url_params.push_str(&format!("&after={after}"));
    }
    let v: Value = match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let after = a
                .after
                .as_deref()
                .map(crate::query::parse_position)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            if a.limit == 0 || a.limit > 10_000 {
                anyhow::bail!("--limit must be between 1 and 10000, got {}", a.limit);
            }
            crate::query::dead_letters(&store, a.stream, after, a.limit)?
        }
        Access::Remote(server) => {
            serde_json::from_slice(&server.get(&format!("/api/dead-letters{url_params}"))?)?
        }
    };
    let mut out = std::io::stdout().lock();
    if a.format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let items = v["dead_letters"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(out, "no dead letters")?;
    }
    for d in &items {
        let raw: String = d["raw"].as_str().unwrap_or("").chars().take(80).collect();
        writeln!(
            out,
            "{}:{} {} {}: {}\n    {}",
            t(&d["partition"]),
            t(&d["offset"]),
            t(&d["record_time"]),
            t(&d["kind"]),
            t(&d["reason"]),
            printable(&raw)
        )?;
    }
    if let Some(next) = v["next"].as_str() {
        writeln!(out, "more: --after {}", printable(next))?;
    }
    Ok(())
}

/// A query string of the parameters given (`?a=1&b=2`, or nothing).
pub(super) fn query_string(params: &[(&str, Option<&str>)]) -> String {
    let given: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    if given.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(given).expect("strings always encode")
    )
}

/// A `--from`/`--to` value, or the bound when not given.
pub(super) fn time_flag(flag: &str, v: Option<&String>, default: i64) -> anyhow::Result<i64> {
    v.map_or(Ok(default), |s| {
        crate::query::parse_time(s).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    })
}

/// `kappa fingerprint`.
///
/// # Errors
/// Unknown version, bad time, store or server failure.
pub fn fingerprint(cfg: &Config, a: &FingerprintArgs) -> anyhow::Result<()> {
    let from = time_flag("--from", a.from.as_ref(), i64::MIN)?;
    let to = time_flag("--to", a.to.as_ref(), i64::MAX)?;
    let v: Value = match access(cfg, a.server.as_ref())? {
        Access::Local(store) => {
            let version = crate::query::output_version(&store, a.output_version.as_deref())?;
            crate::query::fingerprint(&store, &version, from, to)?
        }
        Access::Remote(server) => serde_json::from_slice(&server.get(&format!(
            "/api/fingerprint{}",
            query_string(&[
                ("version", a.output_version.as_deref()),
                ("from", a.from.as_deref()),
                ("to", a.to.as_deref()),
            ])
        ))?)?,
    };
    let mut out = std::io::stdout().lock();
    if a.format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    for w in v["windows"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<4} {}  {}",
            t(&w["size"]),
            t(&w["window_start"]),
            t(&w["hash"])
        )?;
    }
    for w in v["declared"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} {:<4} {}  {}",
            t(&w["aggregate"]),
            t(&w["size"]),
            t(&w["window_start"]),
            t(&w["hash"])
        )?;
    }
    if let Some(d) = v["declared_digest"].as_str() {
        writeln!(
            out,
            "declared digest {d}  ({} windows)",
            v["declared"].as_array().map_or(0, Vec::len)
        )?;
    }
    for s in v["sizes"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "digest {:<4} {}  ({} windows)",
            t(&s["size"]),
            t(&s["digest"]),
            t(&s["windows"])
        )?;
    }
    writeln!(
        out,
        "digest {} {}  ({} windows{}{})",
        t(&v["version"]),
        t(&v["digest"]),
        t(&v["window_count"]),
        v["from"]
            .as_str()
            .map(|f| format!(", from {}", printable(f)))
            .unwrap_or_default(),
        v["to"]
            .as_str()
            .map(|f| format!(", to {}", printable(f)))
            .unwrap_or_default(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The header names every kind of bucket that answered, quarters of a day included
    /// (they were left out when that unit came).
    #[test]
    fn a_range_header_lists_every_bucket_kind() {
        let v = serde_json::json!({
            "from": "2026-11-23T06:00:00Z", "to": "2026-11-25T00:00:00Z",
            "final_to": "2026-11-25T00:00:00Z", "version": "v1", "time_zone": "UTC",
            "buckets": {"year": 0, "month": 0, "week": 0, "day": 1, "six_hours": 3, "hour": 1},
        });
        let mut out = Vec::new();
        super::print_range(&mut out, &v).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("from 1 day, 3 quarter days, 1 hour)"),
            "{text}"
        );
    }
}
