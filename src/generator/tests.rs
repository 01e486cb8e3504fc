//! Generator tests. A small strict schema-v1 checker lives here; valid
//! records must pass it and malformed ones must fail it.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_lossless,
    clippy::many_single_char_names,
    clippy::float_cmp
)]

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::event::{Event, Fault, PriceMode, write_event};
use super::malformed::{MalformedKind, write_malformed};
use super::*;

// ---------------------------------------------------------------- checker --

/// Hinnant's `days_from_civil` (independent of the generator's inverse).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Strict `YYYY-MM-DDTHH:MM:SS.mmmZ` → epoch ms.
fn parse_ts(s: &str) -> Result<i64, String> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return Err(format!("ts length {}: {s:?}", b.len()));
    }
    for (i, &c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            23 => Some(b'Z'),
            _ => None,
        };
        match want {
            Some(w) if c != w => return Err(format!("ts punctuation: {s:?}")),
            None if !c.is_ascii_digit() => return Err(format!("ts digit: {s:?}")),
            _ => {}
        }
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, mo, d, h, mi, se, ms) = (
        n(0..4),
        n(5..7),
        n(8..10),
        n(11..13),
        n(14..16),
        n(17..19),
        n(20..23),
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(format!("ts month: {s:?}")),
    };
    if !(1..=mdays).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return Err(format!("ts range: {s:?}"));
    }
    Ok(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

/// Price (string or number) with at most 2 decimals → cents.
fn parse_price(v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            let ok = !int.is_empty()
                && int.bytes().all(|c| c.is_ascii_digit())
                && frac.len() <= 2
                && frac.bytes().all(|c| c.is_ascii_digit())
                && (s.contains('.') != frac.is_empty());
            if !ok {
                return Err(format!("price string {s:?}"));
            }
            let f: u64 = format!("{frac:0<2}").parse().unwrap();
            Ok(int.parse::<u64>().map_err(|e| e.to_string())? * 100 + f)
        }
        Value::Number(n) => {
            let x = n.as_f64().ok_or("price number")?;
            let c = (x * 100.0).round();
            if x < 0.0 || (x * 100.0 - c).abs() > 1e-6 {
                return Err(format!("price number {n}"));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(c as u64)
        }
        other => Err(format!("price type {other}")),
    }
}

#[derive(Debug)]
struct Checked {
    event_type: String,
    event_id: String,
    user: String,
    session: String,
    ts_ms: i64,
    /// (`product_id`, category, cents, quantity, price was a JSON number)
    product: Option<(String, String, u64, u64, bool)>,
    query: Option<String>,
    obj: serde_json::Map<String, Value>,
}

fn str_field<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> Result<&'a str, String> {
    o.get(k)
        .ok_or(format!("missing {k}"))?
        .as_str()
        .ok_or(format!("{k} not a string"))
}

fn prefixed_number(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
}

/// The optional `device` and `context` objects, and no field the schema lacks.
fn check_envelope(o: &serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(d) = o.get("device") {
        let d = d.as_object().ok_or("device")?;
        for k in ["type", "os", "app_version"] {
            str_field(d, k)?;
        }
    }
    if let Some(c) = o.get("context") {
        let c = c.as_object().ok_or("context")?;
        str_field(c, "referrer")?;
        if let Some(camp) = c.get("campaign") {
            let camp = camp.as_object().ok_or("campaign")?;
            str_field(camp, "id")?;
            str_field(camp, "name")?;
        }
    }
    let known = [
        "schema",
        "event_id",
        "event_type",
        "user_id",
        "session_id",
        "product_id",
        "category",
        "price",
        "quantity",
        "ts",
        "device",
        "context",
        "query",
    ];
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown field {k}"));
    }
    Ok(())
}

/// Strict schema-v1 check.
fn check(value: &[u8]) -> Result<Checked, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("utf8: {e}"))?;
    let v: Value = serde_json::from_str(text).map_err(|e| format!("json: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not an object".into());
    };
    if o.get("schema").and_then(Value::as_u64) != Some(1) {
        return Err("schema".into());
    }
    let event_id = str_field(&o, "event_id")?;
    if event_id.len() != 16
        || !event_id
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!("event_id {event_id:?}"));
    }
    let event_type = str_field(&o, "event_type")?;
    let user = str_field(&o, "user_id")?;
    let session = str_field(&o, "session_id")?;
    if !prefixed_number(user, "u_") || !prefixed_number(session, "s_") {
        return Err("user/session id".into());
    }
    let ts_ms = parse_ts(str_field(&o, "ts")?)?;
    let product_keys = ["product_id", "category", "price", "quantity"];
    let mut product = None;
    let mut query = None;
    match event_type {
        "search" => {
            if product_keys.iter().any(|k| o.contains_key(*k)) {
                return Err("product field on search".into());
            }
            query = Some(str_field(&o, "query")?.to_string());
        }
        "view" | "add_cart" | "purchase" => {
            let pid = str_field(&o, "product_id")?;
            if !prefixed_number(pid, "p_") {
                return Err("product_id".into());
            }
            let cat = str_field(&o, "category")?;
            if !category_names().any(|c| c == cat) {
                return Err(format!("category {cat:?}"));
            }
            let price_v = o.get("price").ok_or("missing price")?;
            let cents = parse_price(price_v)?;
            let q = o
                .get("quantity")
                .and_then(Value::as_u64)
                .ok_or("quantity not a u64")?;
            if q < 1 || (event_type == "view" && q != 1) {
                return Err(format!("quantity {q}"));
            }
            if !matches!(o.get("query"), None | Some(Value::Null)) {
                return Err("query on product event".into());
            }
            product = Some((
                pid.to_string(),
                cat.to_string(),
                cents,
                q,
                price_v.is_number(),
            ));
        }
        other => return Err(format!("event_type {other:?}")),
    }
    check_envelope(&o)?;
    Ok(Checked {
        event_type: event_type.to_string(),
        event_id: event_id.to_string(),
        user: user.to_string(),
        session: session.to_string(),
        ts_ms,
        product,
        query,
        obj: o,
    })
}

// ---------------------------------------------------------------- helpers --

fn faulty() -> GenConfig {
    GenConfig {
        duplicate_share: 0.05,
        malformed_share: 0.02,
        late_share: 0.01,
        ..GenConfig::default()
    }
}

fn generate(cfg: GenConfig, n: usize) -> Vec<GenRecord> {
    let mut g = Generator::new(cfg);
    (0..n)
        .map(|_| {
            let mut r = GenRecord::default();
            g.next_into(&mut r);
            r
        })
        .collect()
}

fn normalise(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

// ------------------------------------------------------------------ tests --

#[test]
fn another_start_with_the_same_seed_repeats_no_event_id() {
    let ids = |start_ms: i64| -> HashSet<String> {
        generate(
            GenConfig {
                start_ms,
                ..faulty()
            },
            5_000,
        )
        .iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).ok()?;
            Some(v["event_id"].as_str()?.to_string())
        })
        .collect()
    };
    let (a, b) = (ids(DEFAULT_START_MS), ids(DEFAULT_START_MS + 60_000));
    assert!(a.len() > 4_000 && b.len() > 4_000);
    assert_eq!(
        a.intersection(&b).count(),
        0,
        "event ids repeated across starts"
    );
}

#[test]
fn same_seed_same_bytes_different_seed_differs() {
    let a = generate(faulty(), 10_000);
    let b = generate(faulty(), 10_000);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            (&x.key, &x.value, x.emit_at_ms, x.kind),
            (&y.key, &y.value, y.emit_at_ms, y.kind),
            "record {i}"
        );
    }
    // Reusing one GenRecord gives the same bytes as fresh ones.
    let mut g = Generator::new(faulty());
    let mut r = GenRecord::default();
    for x in &a {
        g.next_into(&mut r);
        assert_eq!((&r.key, &r.value, r.kind), (&x.key, &x.value, x.kind));
    }
    let c = generate(
        GenConfig {
            seed: 43,
            ..faulty()
        },
        10_000,
    );
    let same = a.iter().zip(&c).filter(|(x, y)| x.value == y.value).count();
    assert!(same < 10, "{same} identical records across seeds");
    assert_ne!(
        Catalogue::new(42, 5000).products()[0].price_minor,
        Catalogue::new(43, 5000).products()[0].price_minor
    );
}

#[test]
fn records_pass_or_fail_the_strict_checker_by_kind() {
    let recs = generate(faulty(), 100_000);
    let mut ids = HashSet::new();
    let mut bad_utf8 = 0;
    let mut not_json = 0;
    for (i, r) in recs.iter().enumerate() {
        match r.kind {
            RecordKind::Malformed => {
                assert!(
                    check(&r.value).is_err(),
                    "malformed record {i} passed: {}",
                    String::from_utf8_lossy(&r.value)
                );
                if std::str::from_utf8(&r.value).is_err() {
                    bad_utf8 += 1;
                } else if serde_json::from_slice::<Value>(&r.value).is_err() {
                    not_json += 1;
                }
                assert!(prefixed_number(std::str::from_utf8(&r.key).unwrap(), "u_"));
            }
            kind => {
                let c = check(&r.value).unwrap_or_else(|e| {
                    panic!(
                        "record {i} ({kind:?}) rejected: {e}: {}",
                        String::from_utf8_lossy(&r.value)
                    )
                });
                assert_eq!(c.user.as_bytes(), &r.key[..], "key must be the user id");
                if kind != RecordKind::Duplicate {
                    assert!(
                        ids.insert(c.event_id.clone()),
                        "event_id repeated: {}",
                        c.event_id
                    );
                }
                if let Some((_, _, _, q, _)) = c.product {
                    assert!((1..=3).contains(&q));
                }
            }
        }
    }
    assert!(
        bad_utf8 > 0 && not_json > 0,
        "utf8 {bad_utf8} not-json {not_json}"
    );
}

#[test]
fn every_malformed_variant_is_rejected() {
    let cat = Catalogue::new(7, 100);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    for (pi, p) in cat.products().iter().enumerate().take(20) {
        let ev = Event {
            id: 0xdead_beef,
            type_name: ["view", "add_cart", "purchase"][pi % 3],
            user: 81,
            session: 3,
            product: Some(p),
            quantity: 1,
            price_mode: PriceMode::String,
            ts_ms: DEFAULT_START_MS,
            device: 0,
            app: 0,
            referrer: 0,
            campaign: 0,
            query: None,
            query_absent: false,
        };
        out.clear();
        write_event(&mut out, &ev, &Fault::NONE);
        check(&out).expect("template event is valid");
        for kind in MalformedKind::ALL {
            for variant in 0..30 {
                out.clear();
                write_malformed(&mut rng, kind, variant, &ev, &mut scratch, &mut out);
                assert!(
                    check(&out).is_err(),
                    "{kind:?}/{variant} accepted: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
}

#[test]
fn shares_are_close_to_configured() {
    let recs = generate(faulty(), 100_000);
    let count = |k| recs.iter().filter(|r| r.kind == k).count() as f64;
    let (mal, late, dup) = (
        count(RecordKind::Malformed),
        count(RecordKind::Late),
        count(RecordKind::Duplicate),
    );
    let fresh_ok = recs.len() as f64 - mal - dup;
    let n = recs.len() as f64;
    // malformed: share of fresh (non-duplicate) records.
    let mal_frac = mal / (n - dup);
    assert!((mal_frac - 0.02).abs() < 0.003, "malformed {mal_frac}");
    let late_frac = late / fresh_ok;
    assert!((late_frac - 0.01).abs() < 0.0025, "late {late_frac}");
    // Each well-formed record is re-emitted with p = 0.05.
    let dup_frac = dup / fresh_ok;
    assert!((dup_frac - 0.05).abs() < 0.005, "dup {dup_frac}");

    let clean = generate(GenConfig::default(), 100_000);
    assert!(clean.iter().all(|r| r.kind == RecordKind::Valid));
    assert!(clean.iter().all(|r| check(&r.value).is_ok()));
}

#[test]
fn duplicates_are_byte_identical_to_a_recent_record_with_the_same_key() {
    let recs = generate(faulty(), 100_000);
    let mut seen: HashMap<&[u8], (usize, &[u8])> = HashMap::new();
    let mut dups = 0;
    for (i, r) in recs.iter().enumerate() {
        if r.kind == RecordKind::Duplicate {
            dups += 1;
            let &(j, key) = seen
                .get(&r.value[..])
                .unwrap_or_else(|| panic!("duplicate {i} has no original"));
            assert_eq!(key, &r.key[..]);
            assert!(
                i - j <= 100,
                "duplicate {i} is {} records after its original",
                i - j
            );
        } else if r.kind != RecordKind::Malformed {
            assert!(
                seen.insert(&r.value, (i, &r.key)).is_none(),
                "fresh record {i} repeats bytes"
            );
        }
    }
    assert!(dups > 1000);
}

#[test]
fn clock_and_disorder() {
    let cfg = GenConfig {
        late_share: 0.02,
        disorder_ms: 3000,
        late_min_ms: 61_000,
        late_max_ms: 300_000,
        ..faulty()
    };
    let recs = generate(cfg.clone(), 100_000);
    assert_eq!(recs[0].emit_at_ms, cfg.start_ms);
    let mut lates = 0;
    for w in recs.windows(2) {
        assert!(w[0].emit_at_ms <= w[1].emit_at_ms, "emit_at not monotone");
    }
    for r in &recs {
        if matches!(r.kind, RecordKind::Malformed | RecordKind::Duplicate) {
            continue;
        }
        let lag = r.emit_at_ms - check(&r.value).unwrap().ts_ms;
        if r.kind == RecordKind::Late {
            lates += 1;
            assert!(
                (cfg.late_min_ms..=cfg.late_max_ms).contains(&lag),
                "late lag {lag}"
            );
        } else {
            assert!((0..=cfg.disorder_ms).contains(&lag), "lag {lag}");
        }
    }
    assert!(lates > 1000);
}

#[test]
fn sim_clock_follows_rate_curve_and_sale() {
    // Exactly the spec's figure, on the clock alone: 86_400 × 1000 ticks ≈ 1 day.
    let mut g = Generator::new(GenConfig::default());
    for _ in 0..86_400_000u64 {
        g.tick();
    }
    let span = (g.sim_us / 1000 - DEFAULT_START_MS) as f64;
    assert!((span / 86_400_000.0 - 1.0).abs() < 0.05, "span {span}");

    // Full records at a low base rate, and with a sale factor.
    // (A half-day span would not test the sale: the curve is not flat.)
    for (sale, n) in [(1.0, 172_800), (2.0, 345_600)] {
        let cfg = GenConfig {
            base_rate: 2.0,
            sale,
            ..GenConfig::default()
        };
        let recs = generate(cfg, n);
        let span = (recs.last().unwrap().emit_at_ms - recs[0].emit_at_ms) as f64 / 86_400_000.0;
        assert!((span - 1.0).abs() < 0.05, "sale {sale}: span {span} days");
        let mut per_hour = [0u32; 24];
        for r in &recs {
            per_hour[((r.emit_at_ms % 86_400_000) / 3_600_000) as usize] += 1;
        }
        if sale == 1.0 {
            let ratio = f64::from(per_hour[20]) / f64::from(per_hour[3]);
            assert!(
                ratio > 5.0 && ratio < 9.0,
                "evening/night ratio {ratio}: {per_hour:?}"
            );
        }
    }
    let mean = (0..24).map(traffic_curve).sum::<f64>() / 24.0;
    assert!((mean - 1.0).abs() < 1e-12);
}

#[test]
fn flat_rate_ignores_the_curve() {
    let cfg = GenConfig {
        base_rate: 2.0,
        flat: true,
        ..GenConfig::default()
    };
    let recs = generate(cfg, 172_800);
    let mut per_hour = [0u32; 24];
    for r in &recs {
        per_hour[((r.emit_at_ms % 86_400_000) / 3_600_000) as usize] += 1;
    }
    // 7 200 per hour at 2 events/s; the curve would make hour 20 about 7× hour 3.
    for (h, n) in per_hour.iter().enumerate() {
        assert!(
            (6_700..7_700).contains(n),
            "hour {h}: {n} events: {per_hour:?}"
        );
    }
}

struct Stats {
    by_type: HashMap<String, usize>,
    views_per_product: HashMap<String, usize>,
    buy_over_cart: f64,
}

fn stats(cfg: GenConfig, n: usize) -> Stats {
    let cat = Catalogue::new(cfg.seed, cfg.products);
    let mut by_type: HashMap<String, usize> = HashMap::new();
    let mut views_per_product: HashMap<String, usize> = HashMap::new();
    for r in generate(cfg, n) {
        let c = check(&r.value).unwrap();
        if let Some((pid, category, cents, _, _)) = &c.product {
            let p = cat.get(pid).expect("product exists");
            assert_eq!(
                (p.category, p.price_minor),
                (category.as_str(), *cents),
                "{pid} changed price/category"
            );
            if c.event_type == "view" {
                *views_per_product.entry(pid.clone()).or_default() += 1;
            }
        }
        *by_type.entry(c.event_type).or_default() += 1;
    }
    let buy_over_cart = by_type["purchase"] as f64 / by_type["add_cart"] as f64;
    Stats {
        by_type,
        views_per_product,
        buy_over_cart,
    }
}

#[test]
fn funnel_zipf_and_constant_prices() {
    let s = stats(GenConfig::default(), 200_000);
    let t = |k: &str| s.by_type[k];
    let total: usize = s.by_type.values().sum();
    assert!(
        t("view") > t("add_cart") && t("add_cart") > t("purchase"),
        "{:?}",
        s.by_type
    );
    let search_share = t("search") as f64 / total as f64;
    assert!(
        (0.15..=0.25).contains(&search_share),
        "search share {search_share}"
    );
    let cart_per_view = t("add_cart") as f64 / t("view") as f64;
    assert!(
        (0.2..0.3).contains(&cart_per_view),
        "cart/view {cart_per_view}"
    );
    assert!(
        (0.4..0.5).contains(&s.buy_over_cart),
        "buy/cart {}",
        s.buy_over_cart
    );

    let mut counts: Vec<usize> = s.views_per_product.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = counts.iter().take(50).sum(); // top 1% of 5000 products
    let share = top as f64 / t("view") as f64;
    assert!(share > 0.2, "top-1% view share {share}");

    let sale = stats(
        GenConfig {
            sale: 3.0,
            ..GenConfig::default()
        },
        100_000,
    );
    assert!(
        sale.buy_over_cart > s.buy_over_cart + 0.1,
        "sale conversion {}",
        sale.buy_over_cart
    );
}

#[test]
fn popularity_order_is_shuffled_by_seed() {
    let top = |seed| {
        let c = Catalogue::new(seed, 5000);
        c.products()
            .iter()
            .find(|p| p.rank == 0)
            .unwrap()
            .id
            .clone()
    };
    let tops: HashSet<String> = (0..8).map(top).collect();
    assert!(tops.len() > 4, "{tops:?}");
    assert!(!tops.contains("p_1") || tops.len() > 1);
    let c = Catalogue::new(1, 5000);
    for p in c.products() {
        assert_eq!(c.get(&p.id).unwrap().id, p.id);
        assert!(p.price_minor > 0);
        assert_eq!(
            p.price_text,
            format!("{}.{:02}", p.price_minor / 100, p.price_minor % 100)
        );
    }
    let books: Vec<u64> = c
        .products()
        .iter()
        .filter(|p| p.category == "books")
        .map(|p| p.price_minor)
        .collect();
    assert!(books.iter().all(|&c| (500..=4000).contains(&c)));
    let nines = c
        .products()
        .iter()
        .filter(|p| p.price_minor % 100 == 99 || p.price_minor % 100 == 90)
        .count();
    assert!(nines > 1500, "retail price endings {nines}");
}

#[test]
fn queries_device_context_and_price_spelling() {
    let recs = generate(
        GenConfig {
            sale: 2.0,
            ..GenConfig::default()
        },
        100_000,
    );
    let cat = Catalogue::new(42, 5000);
    let mut searches = 0;
    let (mut upper, mut spaced, mut quote, mut non_ascii) = (0, 0, 0, 0);
    let (mut numeric_price, mut products) = (0, 0);
    let (mut with_device, mut with_context, mut sale_campaign) = (0, 0, 0);
    let mut device_types = HashSet::new();
    let mut oses = HashSet::new();
    let mut versions = HashSet::new();
    let mut referrers = HashSet::new();
    // session → normalised last query; checked against the next view.
    let mut last_query: HashMap<String, String> = HashMap::new();
    let (mut followed, mut matched) = (0, 0);
    for r in &recs {
        let c = check(&r.value).unwrap();
        if let Some(q) = &c.query {
            searches += 1;
            upper += usize::from(q.chars().any(|ch| ch.is_ascii_uppercase()));
            spaced += usize::from(
                q.contains("  ") || q.starts_with(' ') || q.ends_with(' ') || q.contains('\t'),
            );
            quote += usize::from(q.contains('"'));
            non_ascii += usize::from(!q.is_ascii());
            let n = normalise(q);
            assert!(!n.is_empty());
            last_query.insert(c.session.clone(), n);
        }
        if let Some((pid, _, _, _, is_num)) = &c.product {
            products += 1;
            numeric_price += usize::from(*is_num);
            if c.event_type == "view"
                && let Some(q) = last_query.remove(&c.session)
            {
                followed += 1;
                matched += usize::from(q.contains(cat.get(pid).unwrap().item));
            }
        }
        if let Some(d) = c.obj.get("device") {
            with_device += 1;
            device_types.insert(d["type"].as_str().unwrap().to_string());
            oses.insert(d["os"].as_str().unwrap().to_string());
            versions.insert(d["app_version"].as_str().unwrap().to_string());
        }
        if let Some(ctx) = c.obj.get("context") {
            with_context += 1;
            referrers.insert(ctx["referrer"].as_str().unwrap().to_string());
            if ctx
                .get("campaign")
                .is_some_and(|c| c["name"] == "black-friday-sale")
            {
                sale_campaign += 1;
            }
        }
    }
    let n = recs.len();
    assert!(
        upper > searches / 20 && spaced > searches / 20,
        "upper {upper} spaced {spaced} of {searches}"
    );
    assert!(
        quote > 0 && non_ascii > 0,
        "quote {quote} non-ascii {non_ascii}"
    );
    let num = numeric_price as f64 / products as f64;
    assert!((0.07..0.13).contains(&num), "numeric price share {num}");
    let matched_share = matched as f64 / followed as f64;
    assert!(
        matched_share > 0.4,
        "views after a search matching its item: {matched_share}"
    );
    assert!(
        with_device > n * 8 / 10 && with_device < n * 97 / 100,
        "device {with_device}"
    );
    assert!(
        with_context > n * 7 / 10 && with_context < n * 9 / 10,
        "context {with_context}"
    );
    assert!(
        device_types.len() == 3 && oses.len() >= 5 && versions.len() >= 5 && referrers.len() >= 8
    );
    assert!(sale_campaign > n / 10, "sale campaign {sale_campaign}");

    let plain = generate(GenConfig::default(), 20_000);
    assert!(
        !plain
            .iter()
            .any(|r| r.value.windows(17).any(|w| w == b"black-friday-sale"))
    );
}

#[test]
fn validate_names_the_field() {
    assert_eq!(GenConfig::default().validate(), Ok(()));
    assert_eq!(
        GenConfig {
            late_share: 1.5,
            ..GenConfig::default()
        }
        .validate(),
        Err("late-share must be between 0 and 1, got 1.5".to_string())
    );
    let cases: Vec<(GenConfig, &str)> = vec![
        (
            GenConfig {
                duplicate_share: -0.1,
                ..GenConfig::default()
            },
            "duplicate-share",
        ),
        (
            GenConfig {
                malformed_share: f64::NAN,
                ..GenConfig::default()
            },
            "malformed-share",
        ),
        (
            GenConfig {
                base_rate: 0.0,
                ..GenConfig::default()
            },
            "base-rate",
        ),
        (
            GenConfig {
                base_rate: f64::INFINITY,
                ..GenConfig::default()
            },
            "base-rate",
        ),
        (
            GenConfig {
                sale: -1.0,
                ..GenConfig::default()
            },
            "sale",
        ),
        (
            GenConfig {
                products: 0,
                ..GenConfig::default()
            },
            "products",
        ),
        (
            GenConfig {
                users: 0,
                ..GenConfig::default()
            },
            "users",
        ),
        (
            GenConfig {
                disorder_ms: -1,
                ..GenConfig::default()
            },
            "disorder-ms",
        ),
        (
            GenConfig {
                late_min_ms: -5,
                ..GenConfig::default()
            },
            "late-min-ms",
        ),
        (
            GenConfig {
                late_min_ms: 10,
                late_max_ms: 5,
                ..GenConfig::default()
            },
            "late-max-ms",
        ),
        (
            GenConfig {
                start_ms: -1,
                ..GenConfig::default()
            },
            "start-ms",
        ),
    ];
    for (cfg, field) in cases {
        let e = cfg.validate().unwrap_err();
        assert!(e.starts_with(field) && !e.contains('\n'), "{field}: {e}");
    }
}

#[test]
fn tiny_catalogue_and_user_base_work() {
    let cfg = GenConfig {
        products: 1,
        users: 1,
        disorder_ms: 0,
        ..faulty()
    };
    for r in generate(cfg, 5_000) {
        assert_eq!(r.key, b"u_1");
        if r.kind != RecordKind::Malformed {
            let c = check(&r.value).unwrap();
            assert!(c.product.is_none_or(|p| p.0 == "p_1"));
        }
    }
}

/// `cargo test --release -- --ignored --nocapture throughput`
#[test]
#[ignore = "benchmark"]
fn throughput() {
    for cfg in [GenConfig::default(), faulty()] {
        let mut g = Generator::new(cfg);
        let mut r = GenRecord::default();
        let n = 5_000_000u32;
        let mut bytes = 0usize;
        let t = std::time::Instant::now();
        for _ in 0..n {
            g.next_into(&mut r);
            bytes += r.value.len();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:.2} M records/s, {:.0} MB/s, avg {} bytes",
            f64::from(n) / secs / 1e6,
            bytes as f64 / secs / 1e6,
            bytes / n as usize
        );
        if !cfg!(debug_assertions) {
            assert!(f64::from(n) / secs > 1e6);
        }
    }
}
