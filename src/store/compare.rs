//! Comparing results: window fingerprints of a version, and the one comparison of two
//! versions' final windows that `kappa versions compare`, a correction's diff (`kappa
//! replay --diff`, the history's stored diff) and their HTTP routes all use.
//!
//! Windows whose fingerprints are equal are skipped without reading their rows; the others
//! are compared row by row: per aggregate, rows are matched by identity (category, event
//! type, product id, query), so a top-K entry that moved shows as a rank move.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Aggregate, Row, Store, StoreError, WindowPrint, WindowReader, digest, hash_rows, hex};
use crate::event::money::format_minor;
use crate::event::time::format_rfc3339_ms;
use crate::event::time::size_name;

/// The fingerprints of `version`'s final windows starting in `[from, to)` as JSON: one
/// hash per window, a digest per size and one for the whole range.
///
/// # Errors
/// Store failure.
pub fn fingerprint_json(
    store: &Store,
    version: &str,
    from: i64,
    to: i64,
) -> Result<Value, StoreError> {
    let prints = store.fingerprints(version, from, to)?;
    let mut sizes: Vec<Value> = Vec::new();
    for chunk in prints.chunk_by(|a, b| a.size_ms == b.size_ms) {
        sizes.push(json!({
            "size": size_name(chunk[0].size_ms),
            "windows": chunk.len(),
            "digest": hex(digest(chunk)),
        }));
    }
    Ok(json!({
        "version": version,
        "from": bound(from),
        "to": bound(to),
        "windows": prints.iter().map(|p| json!({
            "size": size_name(p.size_ms),
            "window_start": format_rfc3339_ms(p.start_ms),
            "hash": hex(p.hash),
        })).collect::<Vec<_>>(),
        "sizes": sizes,
        "window_count": prints.len(),
        "digest": hex(digest(&prints)),
    }))
}

/// A range bound as RFC 3339, or none (null in JSON) when unbounded.
fn bound(t: i64) -> Option<String> {
    (t != i64::MIN && t != i64::MAX).then(|| format_rfc3339_ms(t))
}

/// What to compare and how much to show.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// First window start compared.
    pub from: i64,
    /// Windows starting at or after this are not compared.
    pub to: i64,
    /// At most this many changed rows listed per window (every change is counted).
    pub rows_per_window: usize,
    /// At most this many differing windows listed (every one is counted).
    pub max_windows: usize,
    /// Also add up the old side's revenue over every window compared, per size (reads
    /// the rows of windows with equal fingerprints too): what a relative revenue delta
    /// is measured against.
    pub revenue_base: bool,
    /// Recompute the old side's fingerprints from its stored rows instead of reading its
    /// stored hashes (an audit trusts nothing it checks); a window whose rows do not read
    /// counts as differing, with no old rows.
    pub verify: bool,
}

/// Everything, with the bounds a correction's recorded diff keeps: 100 differing windows,
/// 100 changed rows each (every change is counted in the totals).
impl Default for Scope {
    fn default() -> Self {
        Self {
            from: i64::MIN,
            to: i64::MAX,
            rows_per_window: 100,
            max_windows: 100,
            revenue_base: false,
            verify: false,
        }
    }
}

/// Two versions' common final windows compared: `a` is the old (serving) side, `b` the new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Old side.
    pub a: String,
    /// New side.
    pub b: String,
    /// First window start compared (RFC 3339), if bounded.
    pub from: Option<String>,
    /// End of the range (RFC 3339), if bounded.
    pub to: Option<String>,
    /// Windows ending at or before this are final in both, so compared.
    pub final_through: Option<String>,
    /// Totals over every window compared.
    pub summary: Summary,
    /// The differing windows, oldest first per size (at most `max_windows`).
    pub windows: Vec<WindowDiff>,
    /// More windows differ than are listed.
    pub windows_truncated: bool,
    /// The declared aggregates' windows compared by their hashes (issue 20), when either
    /// version declares some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<DeclaredComparison>,
}

/// Two versions' declared-aggregate windows compared by content hash (their export lines
/// without the version), on the windows final in both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredComparison {
    /// Windows compared (in either version).
    pub compared: u64,
    /// Of which only the old side has.
    pub only_in_a: u64,
    /// Of which only the new side has.
    pub only_in_b: u64,
    /// The windows that differ, or that one side only has (at most `max_windows`):
    /// `(aggregate, size, window_start)`.
    pub differing: Vec<(String, String, String)>,
    /// How many differ in all (listed or not).
    pub differing_count: u64,
    /// The rows that differ in the listed windows (at most [`DECLARED_ROWS`] a window),
    /// in their order.
    #[serde(default)]
    pub rows: Vec<DeclaredRowDiff>,
}

/// Differing rows listed per declared window of a comparison.
pub const DECLARED_ROWS: usize = 10;

/// One group of a declared window whose row differs between the versions, or that one of
/// them only has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredRowDiff {
    /// The aggregate.
    pub aggregate: String,
    /// Window size.
    pub size: String,
    /// Window start.
    pub window_start: String,
    /// The group's key as exported: each group-by key's part by its name.
    pub key: serde_json::Value,
    /// Its row in the old version, as exported (`events`, the measures, `skipped`).
    pub a: Option<serde_json::Value>,
    /// Its row in the new version.
    pub b: Option<serde_json::Value>,
}

/// Totals of a [`Comparison`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Final windows compared (in either version).
    pub windows_compared: u64,
    /// Of which differ.
    pub windows_differing: u64,
    /// Windows only the old side has.
    pub windows_only_in_a: u64,
    /// Windows only the new side has.
    pub windows_only_in_b: u64,
    /// Rows only the new side has.
    pub rows_added: u64,
    /// Rows only the old side has.
    pub rows_removed: u64,
    /// Rows both have, with other values (or rank).
    pub rows_changed: u64,
    /// Per window size.
    pub sizes: Vec<SizeSummary>,
}

/// Totals of one window size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeSummary {
    /// Window size (`1m`).
    pub size: String,
    /// Windows compared.
    pub windows_compared: u64,
    /// Windows differing.
    pub windows_differing: u64,
    /// Revenue of the new side minus the old one's, over these windows (two decimals).
    pub revenue_delta: String,
    /// The same in minor units.
    #[serde(skip)]
    pub revenue_delta_minor: i128,
    /// The old side's revenue over these windows, minor units (with
    /// [`Scope::revenue_base`] only).
    #[serde(skip)]
    pub revenue_a_minor: Option<i128>,
}

/// Whether a differing window is in both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// In both, with different rows.
    Changed,
    /// Only the old side has it.
    OnlyInA,
    /// Only the new side has it.
    OnlyInB,
}

/// One differing window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowDiff {
    /// Size (`1m`).
    pub size: String,
    /// Start (RFC 3339).
    pub window_start: String,
    /// End (RFC 3339).
    pub window_end: String,
    /// In both or in one.
    pub status: WindowStatus,
    /// Old fingerprint.
    pub hash_a: Option<String>,
    /// New fingerprint.
    pub hash_b: Option<String>,
    /// Revenue delta (new − old).
    pub revenue_delta: String,
    /// Rows added.
    pub rows_added: u64,
    /// Rows removed.
    pub rows_removed: u64,
    /// Rows changed.
    pub rows_changed: u64,
    /// The first changes, in aggregate order.
    pub changes: Vec<RowChange>,
    /// More changes than listed.
    pub changes_truncated: bool,
}

/// How a row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the new side.
    Added,
    /// Only in the old side.
    Removed,
    /// In both, different.
    Changed,
}

/// One row that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowChange {
    /// Aggregate (`sales_by_category`, …).
    pub aggregate: String,
    /// Added, removed or changed.
    pub change: ChangeKind,
    /// The row's identity: category, event type, product id or query.
    pub key: String,
    /// Old row (its export fields).
    pub old: Option<Map<String, Value>>,
    /// New row.
    pub new: Option<Map<String, Value>>,
    /// New − old of each number (revenue with two decimals), for a changed row.
    pub delta: Option<Map<String, Value>>,
    /// Old and new rank of a top-K entry that moved.
    pub rank: Option<(u32, u32)>,
}

/// A signed amount of minor units with two decimals (`-12.30`, `+0.05`, `0.00`).
fn signed_money(d: i128) -> String {
    let s = format_minor(d.unsigned_abs());
    match d.signum() {
        -1 => format!("-{s}"),
        1 => format!("+{s}"),
        _ => s,
    }
}

/// A row's identity within its aggregate, its rank, and its numbers.
fn identity(row: &Row) -> (String, Option<u32>) {
    match row {
        Row::Sales { category, .. } => (category.clone(), None),
        Row::Count { event_type, .. } => (event_type.clone(), None),
        Row::Product { rank, row } => (row.product_id.clone(), Some(*rank)),
        Row::Query { rank, row } => (row.query.clone(), Some(*rank)),
        Row::Rated { rank, row } => (row.product_id.clone(), Some(*rank)),
        Row::Rating { .. } | Row::Average { .. } | Row::Aspect { .. } => (row.key(), None),
    }
}

/// The numbers of a row by field name (revenue in minor units).
fn numbers(row: &Row) -> Vec<(&'static str, i128)> {
    let i = |v: u64| i128::from(v);
    let r = |v: u128| i128::try_from(v).unwrap_or(i128::MAX);
    match row {
        Row::Sales { row, .. } => vec![
            ("purchases", i(row.purchases)),
            ("units", i(row.units)),
            ("revenue", r(row.revenue_minor)),
        ],
        Row::Product { row, .. } => {
            vec![("units", i(row.units)), ("revenue", r(row.revenue_minor))]
        }
        Row::Count { row, .. } => vec![("count", i(row.count))],
        Row::Query { row, .. } => vec![("count", i(row.count))],
        Row::Rating { row, .. } | Row::Aspect { row, .. } => vec![("count", i(row.count))],
        Row::Average { row } => vec![
            ("reviews", i(row.reviews)),
            ("rating_sum", i(row.rating_sum)),
        ],
        Row::Rated { row, .. } => vec![
            ("reviews", i(row.reviews)),
            ("rating_sum", i(row.rating_sum)),
        ],
    }
}

fn revenue(rows: &[(Aggregate, Vec<Row>)]) -> i128 {
    rows.iter()
        .filter(|(a, _)| *a == Aggregate::SalesByCategory)
        .flat_map(|(_, rs)| rs)
        .map(|r| match r {
            Row::Sales { row, .. } => i128::try_from(row.revenue_minor).unwrap_or(i128::MAX),
            _ => 0,
        })
        .sum()
}

/// The row changes between two windows' rows (each in [`Aggregate::ALL`] order).
fn row_changes(a: &[(Aggregate, Vec<Row>)], b: &[(Aggregate, Vec<Row>)]) -> Vec<RowChange> {
    let mut out = Vec::new();
    for agg in Aggregate::ALL {
        let of = |side: &[(Aggregate, Vec<Row>)]| -> BTreeMap<String, (Option<u32>, Row)> {
            side.iter()
                .filter(|(x, _)| *x == agg)
                .flat_map(|(_, rs)| rs)
                .map(|r| {
                    let (id, rank) = identity(r);
                    (id, (rank, r.clone()))
                })
                .collect()
        };
        let (old, new) = (of(a), of(b));
        let mut ids: Vec<&String> = old.keys().chain(new.keys()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let change = match (old.get(id), new.get(id)) {
                (Some((_, o)), None) => RowChange {
                    aggregate: agg.as_str().into(),
                    change: ChangeKind::Removed,
                    key: id.clone(),
                    old: Some(o.to_json()),
                    new: None,
                    delta: None,
                    rank: None,
                },
                (None, Some((_, n))) => RowChange {
                    aggregate: agg.as_str().into(),
                    change: ChangeKind::Added,
                    key: id.clone(),
                    old: None,
                    new: Some(n.to_json()),
                    delta: None,
                    rank: None,
                },
                (Some((or, o)), Some((nr, n))) if o != n => {
                    let mut delta = Map::new();
                    for ((name, ov), (_, nv)) in numbers(o).into_iter().zip(numbers(n)) {
                        let d = nv - ov;
                        if d != 0 {
                            delta.insert(
                                name.into(),
                                if name == "revenue" {
                                    signed_money(d).into()
                                } else {
                                    i64::try_from(d).unwrap_or(i64::MAX).into()
                                },
                            );
                        }
                    }
                    RowChange {
                        aggregate: agg.as_str().into(),
                        change: ChangeKind::Changed,
                        key: id.clone(),
                        old: Some(o.to_json()),
                        new: Some(n.to_json()),
                        delta: Some(delta),
                        rank: match (or, nr) {
                            (Some(x), Some(y)) if x != y => Some((*x, *y)),
                            _ => None,
                        },
                    }
                }
                _ => continue,
            };
            out.push(change);
        }
    }
    out
}

/// Compares `a` (old) with `b` (new) on their final windows in `scope`: the windows final
/// in both (ending at or before the smaller of their `finalized_through`) that either has.
/// Windows with equal fingerprints are not read.
///
/// # Errors
/// Unknown version; store failure.
pub fn compare(
    store: &impl WindowReader,
    a: &str,
    b: &str,
    scope: Scope,
) -> Result<Comparison, StoreError> {
    compare_each(store, a, b, scope, &mut |_| Ok(()))
}

/// Window fingerprints by (size, start).
type Prints = BTreeMap<(i64, i64), u128>;

/// Fingerprints of the windows of `scope` final in both `a` and `b`: how far both are
/// final, and each side's (size, start) → hash; with `scope.verify`, `a`'s recomputed
/// from its stored rows (a row that no longer reads hashes as 0: it differs).
fn final_prints(
    store: &impl WindowReader,
    a: &str,
    b: &str,
    scope: Scope,
) -> Result<(i64, Prints, Prints), StoreError> {
    let through = |v: &str| -> Result<i64, StoreError> {
        store
            .finalized_through(v)?
            .ok_or_else(|| StoreError::NoVersion(v.to_string()))
    };
    let through = through(a)?.min(through(b)?);
    let final_in = |p: &WindowPrint| p.start_ms.saturating_add(p.size_ms) <= through;
    let side = |v: &str| -> Result<Prints, StoreError> {
        Ok(store
            .prints(v, scope.from, scope.to)?
            .into_iter()
            .filter(final_in)
            .map(|p| ((p.size_ms, p.start_ms), p.hash))
            .collect())
    };
    let (mut pa, pb) = (side(a)?, side(b)?);
    if scope.verify {
        for ((size, start), hash) in &mut pa {
            *hash = store
                .rows(a, *size, *start)
                .map_or(0, |rows| hash_rows(*size, *start, &rows));
        }
    }
    Ok((through, pa, pb))
}

/// [`compare`], handing every differing window, with all its changes, to `each` as it
/// goes (the full diff a correction records beside its bounded one), oldest first per
/// size.
///
/// # Errors
/// Unknown version; store failure; what `each` returns.
pub fn compare_each(
    store: &impl WindowReader,
    a: &str,
    b: &str,
    scope: Scope,
    each: &mut dyn FnMut(&WindowDiff) -> Result<(), StoreError>,
) -> Result<Comparison, StoreError> {
    let (through, pa, pb) = final_prints(store, a, b, scope)?;
    let old_rows = |size: i64, start: i64| match store.rows(a, size, start) {
        Err(_) if scope.verify => Ok(Vec::new()),
        r => r,
    };
    let mut keys: Vec<(i64, i64)> = pa.keys().chain(pb.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut summary = Summary::default();
    let mut sizes: BTreeMap<i64, (SizeSummary, i128)> = BTreeMap::new();
    let mut windows = Vec::new();
    let mut windows_truncated = false;
    for (size, start) in keys {
        let (ha, hb) = (pa.get(&(size, start)), pb.get(&(size, start)));
        let (s, rev) = sizes.entry(size).or_insert_with(|| {
            (
                SizeSummary {
                    size: size_name(size),
                    ..SizeSummary::default()
                },
                0,
            )
        });
        s.windows_compared += 1;
        summary.windows_compared += 1;
        if scope.revenue_base && ha.is_some() {
            *s.revenue_a_minor.get_or_insert(0) += revenue(&old_rows(size, start)?);
        }
        if ha == hb {
            continue;
        }
        s.windows_differing += 1;
        summary.windows_differing += 1;
        let ra = old_rows(size, start)?;
        let rb = store.rows(b, size, start)?;
        let (mut w, delta) = window_diff(size, start, (ha, hb), &ra, &rb);
        *rev += delta;
        match w.status {
            WindowStatus::OnlyInA => summary.windows_only_in_a += 1,
            WindowStatus::OnlyInB => summary.windows_only_in_b += 1,
            WindowStatus::Changed => {}
        }
        summary.rows_added += w.rows_added;
        summary.rows_removed += w.rows_removed;
        summary.rows_changed += w.rows_changed;
        each(&w)?;
        if windows.len() == scope.max_windows {
            windows_truncated = true;
            continue;
        }
        w.changes_truncated = w.changes.len() > scope.rows_per_window;
        w.changes.truncate(scope.rows_per_window);
        windows.push(w);
    }
    summary.sizes = sizes
        .into_values()
        .map(|(mut s, rev)| {
            s.revenue_delta = signed_money(rev);
            s.revenue_delta_minor = rev;
            s
        })
        .collect();
    Ok(Comparison {
        a: a.to_string(),
        b: b.to_string(),
        from: bound(scope.from),
        to: bound(scope.to),
        final_through: bound(through),
        summary,
        windows,
        windows_truncated,
        declared: None,
    })
}

/// One differing window: its status, every changed row (old rows `ra`, new `rb`, matched
/// by identity), the counts, and the revenue delta in minor units.
fn window_diff(
    size: i64,
    start: i64,
    (ha, hb): (Option<&u128>, Option<&u128>),
    ra: &[(Aggregate, Vec<Row>)],
    rb: &[(Aggregate, Vec<Row>)],
) -> (WindowDiff, i128) {
    let status = match (ha, hb) {
        (Some(_), None) => WindowStatus::OnlyInA,
        (None, Some(_)) => WindowStatus::OnlyInB,
        _ => WindowStatus::Changed,
    };
    let delta = revenue(rb) - revenue(ra);
    let changes = row_changes(ra, rb);
    let count = |k: ChangeKind| changes.iter().filter(|c| c.change == k).count() as u64;
    let w = WindowDiff {
        size: size_name(size),
        window_start: format_rfc3339_ms(start),
        window_end: format_rfc3339_ms(start.saturating_add(size)),
        status,
        hash_a: ha.map(|h| hex(*h)),
        hash_b: hb.map(|h| hex(*h)),
        revenue_delta: signed_money(delta),
        rows_added: count(ChangeKind::Added),
        rows_removed: count(ChangeKind::Removed),
        rows_changed: count(ChangeKind::Changed),
        changes,
        changes_truncated: false,
    };
    (w, delta)
}

/// A promotion gate (`kappa replay --version V --promote-if …`): conditions on the
/// comparison of the new version with the serving one, every one of which must hold for
/// the promotion. Comma-separated: `max-changed-windows=N` (windows that differ, or that
/// only one side has), `revenue-delta<=X%` (per window size, |revenue delta| at most X % of
/// the serving version's revenue over the windows compared) or `revenue-delta<=X` (in
/// currency units), `max-changed-declared-windows=N` (windows of the declared aggregates
/// both versions declare, by name, that differ or that only one side has).
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    text: String,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    MaxChangedWindows(u64),
    MaxChangedDeclared(u64),
    RevenueDeltaPercent(f64),
    RevenueDeltaMinor(i128),
}

impl Gate {
    /// Reads a gate.
    ///
    /// # Errors
    /// One line naming what is wrong and what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let help = "use max-changed-windows=N, max-changed-declared-windows=N, revenue-delta<=X% or revenue-delta<=X (comma-separated, all must hold)";
        let mut conditions = Vec::new();
        for part in text.split(',').map(str::trim) {
            let bad = || format!("--promote-if {part:?}: {help}");
            let c = if let Some(n) = part.strip_prefix("max-changed-windows=") {
                Condition::MaxChangedWindows(n.trim().parse().map_err(|_| bad())?)
            } else if let Some(n) = part.strip_prefix("max-changed-declared-windows=") {
                Condition::MaxChangedDeclared(n.trim().parse().map_err(|_| bad())?)
            } else if let Some(x) = part.strip_prefix("revenue-delta<=") {
                let x = x.trim();
                match x.strip_suffix('%') {
                    Some(p) => {
                        let p: f64 = p.trim().parse().map_err(|_| bad())?;
                        if !(p.is_finite() && p >= 0.0) {
                            return Err(bad());
                        }
                        Condition::RevenueDeltaPercent(p)
                    }
                    None => Condition::RevenueDeltaMinor(i128::from(
                        crate::event::money::parse_price_minor(x).map_err(|_| bad())?,
                    )),
                }
            } else {
                return Err(bad());
            };
            conditions.push(c);
        }
        Ok(Self {
            text: text.trim().to_string(),
            conditions,
        })
    }

    /// The gate as given.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it needs the declared aggregates' windows compared
    /// ([`Comparison::declared`], of the aggregates both versions declare).
    #[must_use]
    pub fn needs_declared(&self) -> bool {
        (self.conditions.iter()).any(|c| matches!(c, Condition::MaxChangedDeclared(_)))
    }

    /// How to compare for this gate: windows starting at `from` (the replay's `--from`)
    /// or later, the ones the new version computed in full.
    #[must_use]
    pub fn scope(&self, from: i64) -> Scope {
        Scope {
            from,
            revenue_base: self
                .conditions
                .iter()
                .any(|c| matches!(c, Condition::RevenueDeltaPercent(_))),
            ..Scope::default()
        }
    }

    /// Why `c` (made with [`Gate::scope`]) fails the gate, or `None` when every condition
    /// holds.
    #[must_use]
    pub fn refusal(&self, c: &Comparison) -> Option<String> {
        let common =
            c.summary.windows_compared - c.summary.windows_only_in_a - c.summary.windows_only_in_b;
        if common == 0 {
            // Nothing in common is nothing checked: no promotion on an empty comparison.
            return Some(format!(
                "--promote-if {:?} cannot be checked: {} and {} have no final window in common yet (promote by hand with `kappa versions promote {}` once `kappa versions compare {} {}` satisfies you)",
                self.text, c.a, c.b, c.b, c.a, c.b
            ));
        }
        let failed: Vec<String> = self
            .conditions
            .iter()
            .filter_map(|cond| match cond {
                Condition::MaxChangedWindows(n) => (c.summary.windows_differing > *n).then(|| {
                    format!(
                        "{} windows differ (at most {n} allowed)",
                        c.summary.windows_differing
                    )
                }),
                Condition::MaxChangedDeclared(n) => {
                    let d = c.declared.as_ref().map_or(0, |d| d.differing_count);
                    (d > *n).then(|| format!("{d} declared windows differ (at most {n} allowed)"))
                }
                Condition::RevenueDeltaMinor(max) => c
                    .summary
                    .sizes
                    .iter()
                    .find(|s| s.revenue_delta_minor.abs() > *max)
                    .map(|s| {
                        format!(
                            "{} revenue delta {} (at most {} allowed)",
                            s.size,
                            s.revenue_delta,
                            format_minor(max.unsigned_abs())
                        )
                    }),
                Condition::RevenueDeltaPercent(pct) => {
                    c.summary.sizes.iter().find_map(|s| {
                        let base = s.revenue_a_minor.unwrap_or(0);
                        // Any delta over no revenue is over every percentage.
                        #[allow(clippy::cast_precision_loss)]
                        let share = if base == 0 {
                            if s.revenue_delta_minor == 0 {
                                0.0
                            } else {
                                f64::INFINITY
                            }
                        } else {
                            s.revenue_delta_minor.abs() as f64 * 100.0 / base.abs() as f64
                        };
                        (share > *pct).then(|| {
                            format!(
                                "{} revenue delta {} is {share:.3}% of {} (at most {pct}% allowed)",
                                s.size,
                                s.revenue_delta,
                                format_minor(base.unsigned_abs())
                            )
                        })
                    })
                }
            })
            .collect();
        (!failed.is_empty()).then(|| {
            format!(
                "--promote-if {:?} does not hold against {}: {}; `kappa versions compare {} {}` shows the differences",
                self.text,
                c.a,
                failed.join("; "),
                c.a,
                c.b
            )
        })
    }
}

/// A comparison for people: the summary, then each differing window with its changes;
/// `more` says how to see what a bounded comparison leaves out (a flag, a command).
#[must_use]
pub fn describe(c: &Comparison, more: &str) -> Vec<String> {
    let s = &c.summary;
    let mut out = vec![format!(
        "{} → {}: {} final windows compared{}, {} differ ({} only in {}, {} only in {}); rows +{} −{} ~{}",
        c.a,
        c.b,
        s.windows_compared,
        c.final_through
            .as_deref()
            .map(|t| format!(" (final through {t})"))
            .unwrap_or_default(),
        s.windows_differing,
        s.windows_only_in_a,
        c.a,
        s.windows_only_in_b,
        c.b,
        s.rows_added,
        s.rows_removed,
        s.rows_changed,
    )];
    for z in &s.sizes {
        out.push(format!(
            "  {:<4} {} compared, {} differ, revenue {}",
            z.size, z.windows_compared, z.windows_differing, z.revenue_delta
        ));
    }
    for w in &c.windows {
        out.extend(describe_window(w, &c.a, &c.b, more));
    }
    if c.windows_truncated {
        out.push(format!(
            "… {} more differing windows ({more})",
            s.windows_differing - c.windows.len() as u64
        ));
    }
    if let Some(d) = &c.declared {
        out.push(format!(
            "declared aggregates: {} final windows compared, {} differ ({} only in {}, {} only in {})",
            d.compared, d.differing_count, d.only_in_a, c.a, d.only_in_b, c.b
        ));
        for (name, size, start) in &d.differing {
            out.push(format!("  {name} {size} window {start}"));
            let rows = d
                .rows
                .iter()
                .filter(|r| (&r.aggregate, &r.size, &r.window_start) == (name, size, start));
            for r in rows {
                let row = |x: &Option<serde_json::Value>| {
                    x.as_ref()
                        .map_or_else(|| "–".to_string(), ToString::to_string)
                };
                let key: Vec<String> = (r.key.as_object().into_iter().flatten())
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), String::from)
                        )
                    })
                    .collect();
                let key = key.join("  ");
                out.push(format!("    {key}: {} → {}", row(&r.a), row(&r.b)));
            }
        }
        if d.differing_count > d.differing.len() as u64 {
            out.push(format!(
                "  … {} more ({more})",
                d.differing_count - d.differing.len() as u64
            ));
        }
    }
    out
}

/// One differing window of a comparison of `a` (old) with `b` as lines for people (`more`:
/// as for [`describe`]).
#[must_use]
pub fn describe_window(w: &WindowDiff, a: &str, b: &str, more: &str) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "── {} window {} ({}): revenue {}, rows +{} −{} ~{}",
        w.size,
        w.window_start,
        match w.status {
            WindowStatus::Changed => "changed".to_string(),
            WindowStatus::OnlyInA => format!("only in {a}"),
            WindowStatus::OnlyInB => format!("only in {b}"),
        },
        w.revenue_delta,
        w.rows_added,
        w.rows_removed,
        w.rows_changed
    ));
    for ch in &w.changes {
        let fields = |m: &Option<Map<String, Value>>| {
            m.as_ref()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| {
                            !matches!(
                                k.as_str(),
                                "category" | "event_type" | "product_id" | "query"
                            )
                        })
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str().map_or_else(|| v.to_string(), String::from)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let line = match ch.change {
            ChangeKind::Added => format!("+ {}", fields(&ch.new)),
            ChangeKind::Removed => format!("- {}", fields(&ch.old)),
            ChangeKind::Changed => {
                let delta = ch
                    .delta
                    .as_ref()
                    .map(|d| {
                        d.iter()
                            .map(|(k, v)| {
                                format!(
                                    "{k} {}",
                                    v.as_i64().map_or_else(
                                        || v.as_str().unwrap_or_default().to_string(),
                                        |n| format!("{n:+}")
                                    )
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let rank = ch
                    .rank
                    .map(|(o, n)| format!(" rank {o}→{n}"))
                    .unwrap_or_default();
                let delta = if delta.is_empty() {
                    String::new()
                } else {
                    format!(" ({delta})")
                };
                format!("~ {} → {}{delta}{rank}", fields(&ch.old), fields(&ch.new))
            }
        };
        out.push(format!(
            "    {:<24} {:<24} {}",
            ch.aggregate,
            crate::text::printable(&ch.key),
            line
        ));
    }
    if w.changes_truncated {
        out.push(format!(
            "    … {} more changed rows ({more})",
            w.rows_added + w.rows_removed + w.rows_changed - w.changes.len() as u64
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ProductRow;

    fn product(rank: u32, id: &str, units: u64) -> Row {
        Row::Product {
            rank,
            row: ProductRow {
                product_id: id.into(),
                units,
                revenue_minor: u128::from(units) * 100,
            },
        }
    }

    #[test]
    fn top_k_entries_are_matched_by_product_so_moves_show_as_rank_changes() {
        let agg = Aggregate::TopProductsByUnits;
        let a = vec![(
            agg,
            vec![
                product(1, "p1", 9),
                product(2, "p2", 5),
                product(3, "p3", 4),
            ],
        )];
        let b = vec![(
            agg,
            vec![
                product(1, "p2", 10),
                product(2, "p1", 9),
                product(3, "p4", 4),
            ],
        )];
        let changes = row_changes(&a, &b);
        let by_key = |k: &str| changes.iter().find(|c| c.key == k).unwrap();
        assert_eq!(changes.len(), 4, "{changes:#?}");
        assert_eq!(by_key("p1").change, ChangeKind::Changed);
        assert_eq!(by_key("p1").rank, Some((1, 2)));
        assert_eq!(by_key("p1").delta.as_ref().unwrap().len(), 0);
        assert_eq!(by_key("p2").rank, Some((2, 1)));
        let d = by_key("p2").delta.clone().unwrap();
        assert_eq!(d["units"], 5);
        assert_eq!(d["revenue"], "+5.00");
        assert_eq!(by_key("p3").change, ChangeKind::Removed);
        assert_eq!(by_key("p4").change, ChangeKind::Added);
        assert!(row_changes(&a, &a).is_empty());
    }

    #[test]
    fn signed_money_has_a_sign_and_two_places() {
        assert_eq!(signed_money(-1230), "-12.30");
        assert_eq!(signed_money(5), "+0.05");
        assert_eq!(signed_money(0), "0.00");
    }
}
