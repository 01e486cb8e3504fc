//! The window core against a naive batch model, for random logs, interleavings, batch
//! sizes and crash points.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::assign::window_start;
use super::*;
use crate::event::{Event, EventType, normalize_query};

#[derive(Debug, Clone)]
struct Ev {
    id: u16,
    ts: i64,
    ty: EventType,
    product: u8,
    price: u64,
    qty: u32,
    query: &'static str,
}

const CATEGORIES: [&str; 3] = ["books", "shoes", "toys"];
const QUERIES: [&str; 4] = ["cheap boots", " Cheap  Boots", "red hat", "a b"];

impl Ev {
    fn product_id(&self) -> String {
        format!("p_{}", self.product)
    }
    fn category(&self) -> &'static str {
        CATEGORIES[self.product as usize % 3]
    }
    fn to_event(&self) -> Event<'static> {
        Event {
            event_id: Cow::Owned(format!("e{}", self.id)),
            event_type: self.ty,
            ts_ms: self.ts,
            product_id: Cow::Owned(self.product_id()),
            category: Cow::Borrowed(self.category()),
            price_minor: self.price,
            quantity: self.qty,
            query: Cow::Borrowed(self.query),
        }
    }
}

fn ev_strategy(base: i64) -> impl Strategy<Value = Ev> {
    (
        0u16..40,
        -25_000i64..60_000,
        prop::sample::select(EventType::ALL.to_vec()),
        0u8..12,
        1u64..5000,
        0u32..4,
        prop::sample::select(QUERIES.to_vec()),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            move |(id, jitter, ty, product, price, qty, query, far_late)| Ev {
                id,
                ts: base + jitter - if far_late { 120_000 } else { 0 },
                ty,
                product,
                price,
                qty,
                query,
            },
        )
}

/// A log: per partition, events whose times drift forward with the offset.
fn logs_strategy() -> impl Strategy<Value = Vec<Vec<Ev>>> {
    prop::collection::vec(prop::collection::vec(0i64..1, 0..60), 1..4).prop_flat_map(|shape| {
        shape
            .into_iter()
            .map(|p| {
                let n = p.len();
                (0..n)
                    .map(|i| ev_strategy(1_700_000_000_000 + i as i64 * 2_000))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    })
}

fn cfg_strategy() -> impl Strategy<Value = WindowConfig> {
    (
        prop::sample::select(vec![
            vec![10_000i64],
            vec![10_000, 30_000],
            vec![6_000, 15_000],
            vec![60_000, 3_600_000],
        ]),
        prop::sample::select(vec![0i64, 1_000, 5_000, 20_000]),
        1usize..4,
    )
        .prop_map(|(sizes_ms, max_delay_ms, top_k)| WindowConfig {
            sizes_ms,
            max_delay_ms,
            top_k,
        })
}

/// The ten-line batch answer: per-partition sequential decisions, then plain sums and sorts.
fn model(cfg: &WindowConfig, logs: &[Vec<Ev>]) -> BTreeMap<(i64, i64), FinalWindow> {
    let bucket = cfg.dedup_bucket_ms();
    let mut accepted = Vec::new();
    for log in logs {
        let mut max = i64::MIN;
        let mut seen = HashSet::new();
        for e in log {
            if e.ts < max.saturating_sub(cfg.max_delay_ms) {
                continue;
            }
            max = max.max(e.ts);
            if seen.insert((window_start(e.ts, bucket), e.id)) {
                accepted.push(e.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for &size in &cfg.sizes_ms {
        let starts: std::collections::BTreeSet<i64> =
            accepted.iter().map(|e| window_start(e.ts, size)).collect();
        for start in starts {
            let evs: Vec<&Ev> = accepted
                .iter()
                .filter(|e| window_start(e.ts, size) == start)
                .collect();
            let mut counts = [0u64; 4];
            let mut cats: BTreeMap<String, (u64, u64, u128)> = BTreeMap::new();
            let mut prods: BTreeMap<String, (u64, u128)> = BTreeMap::new();
            let mut queries: BTreeMap<String, u64> = BTreeMap::new();
            for e in &evs {
                counts[e.ty as usize] += 1;
                if e.ty == EventType::Purchase {
                    let c = cats.entry(e.category().to_string()).or_default();
                    c.0 += 1;
                    c.1 += u64::from(e.qty);
                    c.2 += u128::from(e.price) * u128::from(e.qty);
                    let p = prods.entry(e.product_id()).or_default();
                    p.0 += u64::from(e.qty);
                    p.1 += u128::from(e.price) * u128::from(e.qty);
                }
                if e.ty == EventType::Search {
                    let mut q = String::new();
                    normalize_query(e.query, &mut q);
                    *queries.entry(q).or_default() += 1;
                }
            }
            let mut by_units: Vec<ProductSales> = prods
                .iter()
                .map(|(p, &(u, r))| ProductSales {
                    product_id: p.clone(),
                    units: u,
                    revenue_minor: r,
                })
                .collect();
            let mut by_revenue = by_units.clone();
            by_units.sort_by(|a, b| b.units.cmp(&a.units).then(a.product_id.cmp(&b.product_id)));
            by_revenue.sort_by(|a, b| {
                b.revenue_minor
                    .cmp(&a.revenue_minor)
                    .then(a.product_id.cmp(&b.product_id))
            });
            by_units.truncate(cfg.top_k);
            by_revenue.truncate(cfg.top_k);
            let mut qs: Vec<QueryCount> = queries
                .into_iter()
                .map(|(query, count)| QueryCount { query, count })
                .collect();
            qs.sort_by(|a, b| b.count.cmp(&a.count).then(a.query.cmp(&b.query)));
            qs.truncate(cfg.top_k);
            out.insert(
                (size, start),
                FinalWindow {
                    size_ms: size,
                    start_ms: start,
                    sales_by_category: cats
                        .into_iter()
                        .map(
                            |(category, (purchases, units, revenue_minor))| CategorySales {
                                category,
                                purchases,
                                units,
                                revenue_minor,
                            },
                        )
                        .collect(),
                    top_by_units: by_units,
                    top_by_revenue: by_revenue,
                    events_by_type: counts,
                    top_searches: qs,
                    sums: (size == crate::rollup::HOUR_MS).then(|| Box::new(model_sums(&evs))),
                },
            );
        }
    }
    out
}

/// Every key's sums of a 1-hour window's accepted events, summed naively.
fn model_sums(evs: &[&Ev]) -> crate::rollup::Sums {
    use crate::rollup::KeySums;
    let mut products: BTreeMap<String, KeySums> = BTreeMap::new();
    let mut categories: BTreeMap<String, KeySums> = BTreeMap::new();
    let mut queries: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = [0u64; 4];
    for e in evs {
        events[e.ty as usize] += 1;
        if e.ty == EventType::Search {
            let mut q = String::new();
            normalize_query(e.query, &mut q);
            *queries.entry(q).or_default() += 1;
            continue;
        }
        for k in [
            products.entry(e.product_id()).or_default(),
            categories.entry(e.category().to_string()).or_default(),
        ] {
            k.count(e.ty, e.qty, e.price);
        }
    }
    crate::rollup::Sums {
        events,
        products: products.into_iter().collect(),
        categories: categories.into_iter().collect(),
        queries: queries.into_iter().collect(),
        by_hour: [0; 24],
    }
}

/// Drives the core over `logs` with a schedule of (partition choice, batch size) steps and
/// crash points; returns the committed final windows.
fn run_core(
    cfg: &WindowConfig,
    logs: &[Vec<Ev>],
    schedule: &[(usize, usize, bool)],
) -> BTreeMap<(i64, i64), FinalWindow> {
    run_windows(
        &|| WindowCore::new(cfg.clone(), logs.len()),
        logs,
        &Ev::to_event,
        schedule,
        &|f: &FinalWindow| (f.size_ms, f.start_ms),
    )
}

/// [`run_core`] for any stream: `new_core` makes an empty core, `item` turns a log entry
/// into the stream's item, `key` names a final window by (size, start).
pub(crate) fn run_windows<A: Aggregator, T>(
    new_core: &dyn Fn() -> Windows<A>,
    logs: &[Vec<T>],
    item: &dyn Fn(&T) -> A::Item<'static>,
    schedule: &[(usize, usize, bool)],
    key: &dyn Fn(&A::Final) -> (i64, i64),
) -> BTreeMap<(i64, i64), A::Final> {
    let parts = logs.len();
    let mut committed: BTreeMap<(i64, i64), A::Final> = BTreeMap::new();
    let emit = |finals: Vec<A::Final>, committed: &mut BTreeMap<(i64, i64), A::Final>| {
        for f in finals {
            let k = key(&f);
            let prev = committed.insert(k, f);
            assert!(prev.is_none(), "window finalised twice: {k:?}");
        }
    };
    let mut core = new_core();
    let mut pos = vec![0u64; parts]; // next offset to read
    let mut committed_pos = vec![0u64; parts]; // what a crash resumes from
    let mut replay_until = vec![0u64; parts];
    let mut pending: Vec<A::Final> = Vec::new();
    let mut saved = (
        i64::MIN,
        vec![
            PartitionResume {
                offset: 0,
                max_ts_before: i64::MIN
            };
            parts
        ],
    );
    let step =
        |core: &mut Windows<A>, pos: &mut Vec<u64>, p: usize, n: usize, replay_until: &[u64]| {
            for _ in 0..n {
                let off = pos[p];
                let Some(e) = logs[p].get(off as usize) else {
                    break;
                };
                core.on_event(p, off, &item(e), off < replay_until[p]);
                pos[p] += 1;
            }
        };
    for &(pick, n, crash) in schedule {
        let p = pick % parts;
        step(&mut core, &mut pos, p, n, &replay_until);
        pending.extend(core.advance());
        if crash {
            // Crash: whatever was not committed is lost; restart from the saved state.
            pending.clear();
            core = new_core();
            core.restore(saved.0, &saved.1);
            replay_until.clone_from(&committed_pos);
            for (p, r) in saved.1.iter().enumerate() {
                pos[p] = r.offset;
            }
        } else {
            // Commit: finals + positions + resume points in one go.
            emit(std::mem::take(&mut pending), &mut committed);
            // The "already handled" mark never moves back, even when a commit happens
            // while re-reading after a restart.
            for p in 0..parts {
                committed_pos[p] = pos[p].max(replay_until[p]);
            }
            saved = (core.finalized_through(), core.resume_points(&pos));
        }
    }
    // Finish: read everything, drain.
    for p in 0..parts {
        step(&mut core, &mut pos, p, usize::MAX, &replay_until);
        pending.extend(core.advance());
    }
    pending.extend(core.drain());
    emit(pending, &mut committed);
    committed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn core_equals_model_for_any_interleaving(
        cfg in cfg_strategy(),
        logs in logs_strategy(),
        schedule in prop::collection::vec((0usize..8, 1usize..20, Just(false)), 0..40),
    ) {
        let expected = model(&cfg, &logs);
        let got = run_core(&cfg, &logs, &schedule);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn core_equals_model_across_crashes(
        cfg in cfg_strategy(),
        logs in logs_strategy(),
        schedule in prop::collection::vec((0usize..8, 1usize..20, prop::bool::weighted(0.3)), 0..40),
    ) {
        let expected = model(&cfg, &logs);
        let got = run_core(&cfg, &logs, &schedule);
        prop_assert_eq!(got, expected);
    }
}

/// Two-tier aggregation: one core per partition (a worker's view), each publishing partials
/// at its own watermark in batches of the schedule's sizes; a merger adds them up.
fn run_partials(
    cfg: &WindowConfig,
    logs: &[Vec<Ev>],
    batches: &[usize],
) -> BTreeMap<(i64, i64), FinalWindow> {
    let mut partials: BTreeMap<(i64, i64), Vec<PartialAgg>> = BTreeMap::new();
    for log in logs {
        let mut core = WindowCore::new(cfg.clone(), 1);
        let mut sizes = batches.iter().cycle();
        let mut off = 0usize;
        let mut out = Vec::new();
        while off < log.len() {
            let n = *sizes.next().unwrap_or(&1);
            for e in log.iter().skip(off).take(n) {
                core.on_event(0, off as u64, &e.to_event(), false);
                off += 1;
            }
            out.extend(core.advance_partials());
        }
        out.extend(core.drain_partials());
        for (size, start, agg) in out {
            partials.entry((size, start)).or_default().push(agg);
        }
    }
    let mut merger = WindowCore::new(cfg.clone(), 0);
    partials
        .iter()
        .map(|(&(size, start), parts)| ((size, start), merger.merge_partials(size, start, parts)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn merged_partials_equal_model(
        cfg in cfg_strategy(),
        logs in logs_strategy(),
        batches in prop::collection::vec(1usize..20, 1..10),
    ) {
        let expected = model(&cfg, &logs);
        let got = run_partials(&cfg, &logs, &batches);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn late_and_duplicate_decisions() {
    let cfg = WindowConfig {
        sizes_ms: vec![60_000],
        max_delay_ms: 10_000,
        top_k: 3,
    };
    let mut core = WindowCore::new(cfg, 1);
    let ev = |id: u16, ts: i64| Ev {
        id,
        ts,
        ty: EventType::View,
        product: 1,
        price: 100,
        qty: 1,
        query: "",
    };
    assert_eq!(
        core.on_event(0, 0, &ev(1, 100_000).to_event(), false),
        Outcome::Accepted
    );
    assert_eq!(
        core.on_event(0, 1, &ev(1, 100_000).to_event(), false),
        Outcome::Duplicate
    );
    assert_eq!(
        core.on_event(0, 2, &ev(2, 95_000).to_event(), false),
        Outcome::Accepted
    );
    assert_eq!(
        core.on_event(0, 3, &ev(3, 89_999).to_event(), false),
        Outcome::Late(LateReason::BelowWatermark)
    );
    assert_eq!(core.partition_watermark(0), 90_000);
    assert!(
        core.advance().is_empty(),
        "window [60s,120s) still open at wm 90s"
    );
    core.on_event(0, 4, &ev(4, 130_000).to_event(), false);
    let finals = core.advance();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].start_ms, 60_000);
    assert_eq!(finals[0].events_by_type[EventType::View as usize], 2);
}

#[test]
fn idle_partition_releases_the_watermark_and_late_records_follow() {
    let cfg = WindowConfig {
        sizes_ms: vec![60_000],
        max_delay_ms: 0,
        top_k: 3,
    };
    let mut core = WindowCore::new(cfg, 2);
    let ev = |id: u16, ts: i64| Ev {
        id,
        ts,
        ty: EventType::View,
        product: 1,
        price: 100,
        qty: 1,
        query: "",
    };
    core.on_event(0, 0, &ev(1, 10_000).to_event(), false);
    core.on_event(0, 1, &ev(2, 70_000).to_event(), false);
    assert!(core.advance().is_empty(), "partition 1 holds the watermark");
    core.set_idle(1, true);
    assert_eq!(core.advance().len(), 1);
    core.set_idle(1, false);
    assert_eq!(
        core.on_event(1, 0, &ev(3, 20_000).to_event(), false),
        Outcome::Late(LateReason::WindowClosed)
    );
    // Everything idle: the largest partition watermark (partition 0's, 150 s) rules.
    core.on_event(0, 2, &ev(4, 150_000).to_event(), false);
    core.on_event(1, 1, &ev(5, 90_000).to_event(), false);
    assert!(
        core.advance().is_empty(),
        "partition 1 at 90 s holds [60 s, 120 s) back"
    );
    core.set_idle(0, true);
    core.set_idle(1, true);
    assert_eq!(core.pipeline_watermark(), Some(150_000));
    assert_eq!(
        core.advance().len(),
        1,
        "all idle: [60 s, 120 s) becomes final"
    );
}
