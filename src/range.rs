//! Answers over any hour-aligned time range (issue 19): top products, sales by category,
//! top searches and the funnel with conversion, from [`crate::store::Store::range`]. Rates
//! are derived from the exact integer sums when answering (4 decimals, rounded half up).

use std::cmp::Ordering;

use serde_json::{Value, json};

use crate::event::EventType;
use crate::event::money::format_minor;
use crate::event::time::format_rfc3339_ms;
use crate::rollup::{KeySums, Unit};
use crate::store::{RangeSums, Store, StoreError};

/// What a range answer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Report {
    /// Top K products by units and by revenue.
    TopProducts,
    /// Every category's sales and funnel.
    SalesByCategory,
    /// Top K normalised queries.
    TopSearches,
    /// Events by type, the funnel's rates, the top K products by conversion and the
    /// events per hour of day.
    Funnel,
}

impl Report {
    /// The API endpoint name (`top-products`, …).
    #[must_use]
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::TopProducts => "top-products",
            Self::SalesByCategory => "sales-by-category",
            Self::TopSearches => "top-searches",
            Self::Funnel => "funnel",
        }
    }
}

/// A range question.
#[derive(Debug, Clone)]
pub struct Question {
    /// Output version.
    pub version: String,
    /// Range start (epoch ms; rounded down to the hour).
    pub from: i64,
    /// Range end (epoch ms, exclusive).
    pub to: i64,
    /// Ranked lists' length.
    pub k: usize,
    /// Views a product needs to be ranked by conversion.
    pub min_views: u64,
}

impl Question {
    /// A question over `[from, to)`.
    ///
    /// # Errors
    /// A bound that is not a whole hour, or `to` before `from` (the message says which).
    pub fn new(
        version: String,
        from: i64,
        to: i64,
        k: usize,
        min_views: u64,
    ) -> Result<Self, String> {
        whole_hour("from", from)?;
        whole_hour("to", to)?;
        if to < from {
            return Err("to is before from".into());
        }
        Ok(Self {
            version,
            from,
            to,
            k,
            min_views,
        })
    }
}

/// Refuses a bound `name` = `t` that is not a whole hour.
///
/// # Errors
/// The message says which bound.
pub fn whole_hour(name: &str, t: i64) -> Result<(), String> {
    if t.rem_euclid(crate::rollup::HOUR_MS) == 0 {
        Ok(())
    } else {
        Err(format!("{name} must be a whole hour"))
    }
}

/// The periods a range can be named by (the live page's and the sales dashboard's picker).
pub const PERIODS: [&str; 4] = ["last-24h", "last-7d", "last-30d", "this-month"];

/// `[from, to)` of a named period of `version`, ending where its final hours end (the
/// latest final hour, which is the last hour before now when it runs live; a replayed or
/// drained history's last hour otherwise): `last-24h`, `last-7d`, `last-30d`, or
/// `this-month` (the calendar month holding that hour, in the version's zone). `None`
/// when nothing is final yet.
///
/// # Errors
/// An unknown period name (the message lists the known ones), an unknown version, a
/// store failure.
pub fn period(store: &Store, version: &str, name: &str) -> Result<Option<(i64, i64)>, String> {
    let info = store
        .version(version)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no output version {version}"))?;
    let hours = match name {
        "last-24h" => 24,
        "last-7d" => 7 * 24,
        "last-30d" => 30 * 24,
        "this-month" => 0,
        other => {
            return Err(format!(
                "unknown period {other:?}; known: {}",
                PERIODS.join(", ")
            ));
        }
    };
    // A bounded version made final through the end of time ends at its data, which is
    // never more than 7 days (the largest max-future) after now.
    let ft = info
        .finalized_through
        .min(chrono::Utc::now().timestamp_millis() + 7 * 86_400_000);
    if ft == i64::MIN {
        return Ok(None);
    }
    let to = ft.div_euclid(crate::rollup::HOUR_MS) * crate::rollup::HOUR_MS;
    let from = if hours == 0 {
        let cal = crate::rollup::Calendar::of_fingerprint(&info.config);
        cal.start(Unit::Month, to - 1)
    } else {
        to - hours * crate::rollup::HOUR_MS
    };
    Ok(Some((from, to)))
}

/// `num / den` with 4 decimals, rounded half up; `null` when `den` is 0.
#[must_use]
pub fn rate(num: u64, den: u64) -> Value {
    if den == 0 {
        return Value::Null;
    }
    // Ten-thousandths, half up: floor((20000 num + den) / (2 den)).
    let t = (20_000 * u128::from(num) + u128::from(den)) / (2 * u128::from(den));
    Value::String(format!("{}.{:04}", t / 10_000, t % 10_000))
}

fn key_json(name: &str, field: &str, s: &KeySums) -> serde_json::Map<String, Value> {
    let v = json!({
        field: name,
        "views": s.views,
        "add_to_carts": s.carts,
        "purchases": s.purchases,
        "units": s.units,
        "revenue": format_minor(s.revenue),
        "view_to_cart": rate(s.carts, s.views),
        "cart_to_purchase": rate(s.purchases, s.carts),
        "view_to_purchase": rate(s.purchases, s.views),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

/// The `k` first of `items` by `cmp`, each with its 1-based rank.
fn ranked<T>(
    mut items: Vec<&T>,
    k: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> impl Iterator<Item = (usize, &T)> {
    // The k first picked out of (up to) 50,000 products, then only they are sorted.
    if k < items.len() {
        items.select_nth_unstable_by(k, |a, b| cmp(a, b));
        items.truncate(k);
    }
    items.sort_unstable_by(|a, b| cmp(a, b));
    items
        .into_iter()
        .take(k)
        .enumerate()
        .map(|(i, t)| (i + 1, t))
}

/// The answer to `q` as `report` asks, as the API serves it.
///
/// # Errors
/// Unknown version; store failure.
pub fn answer(store: &Store, q: &Question, report: Report) -> Result<Value, StoreError> {
    let r = store.range(&q.version, q.from, q.to)?;
    let mut out = header(q, &r);
    let s = &r.sums;
    let sold: Vec<&(String, KeySums)> = s.products.iter().filter(|p| p.1.purchases > 0).collect();
    match report {
        Report::TopProducts => {
            for (name, by) in [
                (
                    "by_units",
                    (|s: &KeySums| u128::from(s.units)) as fn(&KeySums) -> u128,
                ),
                ("by_revenue", |s: &KeySums| s.revenue),
            ] {
                let rows: Vec<Value> = ranked(sold.clone(), q.k, |a, b| {
                    by(&b.1).cmp(&by(&a.1)).then_with(|| a.0.cmp(&b.0))
                })
                .map(|(rank, (id, s))| {
                    let mut m = key_json(id, "product_id", s);
                    m.insert("rank".into(), rank.into());
                    Value::Object(m)
                })
                .collect();
                out.insert(name.into(), rows.into());
            }
        }
        Report::SalesByCategory => {
            let rows: Vec<Value> = s
                .categories
                .iter()
                .map(|(c, s)| Value::Object(key_json(c, "category", s)))
                .collect();
            out.insert("categories".into(), rows.into());
        }
        Report::TopSearches => {
            let rows: Vec<Value> = ranked(s.queries.iter().collect(), q.k, |a, b| {
                b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
            })
            .map(|(rank, (query, n))| json!({ "rank": rank, "query": query, "count": n }))
            .collect();
            out.insert("top_searches".into(), rows.into());
        }
        Report::Funnel => funnel(q, s, &mut out),
    }
    Ok(Value::Object(out))
}

/// One product's final hours over `[from, to)` (`GET /api/products/{id}/history`), from
/// the product-major index: each hour with the product's sums, and their total.
///
/// # Errors
/// Store failure.
pub fn history(
    store: &Store,
    version: &str,
    product: &str,
    from: i64,
    to: i64,
) -> Result<Value, StoreError> {
    let hours = store.product_history(version, product, from, to)?;
    let mut total = KeySums::default();
    let rows: Vec<Value> = hours
        .iter()
        .map(|(h, s)| {
            total.views += s.views;
            total.carts += s.carts;
            total.purchases += s.purchases;
            total.units += s.units;
            total.revenue += s.revenue;
            let mut m = key_json(&format_rfc3339_ms(*h), "hour_start", s);
            for k in ["view_to_cart", "cart_to_purchase", "view_to_purchase"] {
                m.remove(k);
            }
            Value::Object(m)
        })
        .collect();
    let mut total = key_json(product, "product_id", &total);
    total.remove("product_id");
    let bound = |t: i64| (t != i64::MIN && t != i64::MAX).then(|| format_rfc3339_ms(t));
    Ok(json!({
        "version": version,
        "product_id": product,
        "from": bound(from),
        "to": bound(to),
        "hours": rows,
        "total": total,
    }))
}

fn header(q: &Question, r: &RangeSums) -> serde_json::Map<String, Value> {
    let mut buckets = serde_json::Map::new();
    for u in Unit::LARGEST_FIRST {
        let n = r.tiles.iter().filter(|t| t.0 == u).count();
        buckets.insert(u.as_str().into(), n.into());
    }
    let mut m = serde_json::Map::new();
    m.insert("version".into(), q.version.clone().into());
    m.insert("from".into(), format_rfc3339_ms(r.from).into());
    m.insert("to".into(), format_rfc3339_ms(q.to.max(r.from)).into());
    // Hours after the version's final point are not in the answer.
    m.insert("final_to".into(), format_rfc3339_ms(r.to).into());
    m.insert("buckets".into(), Value::Object(buckets));
    m.insert("time_zone".into(), r.time_zone.into());
    m
}

fn funnel(q: &Question, s: &crate::rollup::Sums, out: &mut serde_json::Map<String, Value>) {
    let by_type: serde_json::Map<String, Value> = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_string(), s.events[*t as usize].into()))
        .collect();
    let count = |t: EventType| s.events[t as usize];
    let (views, carts, purchases) = (
        count(EventType::View),
        count(EventType::AddCart),
        count(EventType::Purchase),
    );
    out.insert("events_by_type".into(), Value::Object(by_type));
    out.insert("view_to_cart".into(), rate(carts, views));
    out.insert("cart_to_purchase".into(), rate(purchases, carts));
    out.insert("view_to_purchase".into(), rate(purchases, views));
    let min = q.min_views.max(1);
    let viewed: Vec<&(String, KeySums)> = s.products.iter().filter(|p| p.1.views >= min).collect();
    // purchases/views descending, compared as exact fractions; then views, then id.
    let rows: Vec<Value> = ranked(viewed, q.k, |a, b| {
        (u128::from(b.1.purchases) * u128::from(a.1.views))
            .cmp(&(u128::from(a.1.purchases) * u128::from(b.1.views)))
            .then(b.1.views.cmp(&a.1.views))
            .then_with(|| a.0.cmp(&b.0))
    })
    .map(|(rank, (id, s))| {
        let mut m = key_json(id, "product_id", s);
        m.insert("rank".into(), rank.into());
        Value::Object(m)
    })
    .collect();
    out.insert("min_views".into(), min.into());
    out.insert("top_by_conversion".into(), rows.into());
    out.insert("events_by_hour_of_day".into(), s.by_hour.to_vec().into());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The k first picked before sorting are the k first of the whole list sorted, ties
        /// broken by name.
        #[test]
        fn ranked_takes_the_first_k_of_the_sorted_list(
            items in proptest::collection::vec((0..30u8, 0..5u64), 0..60),
            k in 0..70usize,
        ) {
            let items: Vec<(String, u64)> = items.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            let cmp = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
            let mut all: Vec<&(String, u64)> = items.iter().collect();
            all.sort_by(|a, b| cmp(a, b));
            let want: Vec<(usize, &(String, u64))> = all.into_iter().take(k).enumerate().map(|(i, t)| (i + 1, t)).collect();
            prop_assert_eq!(ranked(items.iter().collect(), k, cmp).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn rates_are_exact_fractions_rounded_half_up() {
        assert_eq!(rate(1, 3), json!("0.3333"));
        assert_eq!(rate(2, 3), json!("0.6667"));
        assert_eq!(rate(1, 20_000), json!("0.0001"));
        assert_eq!(rate(1, 20_001), json!("0.0000"));
        assert_eq!(rate(5, 5), json!("1.0000"));
        assert_eq!(rate(0, 0), Value::Null);
    }
}
