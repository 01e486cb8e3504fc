use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::event::EventType;

fn parse(toml_text: &str) -> Result<Plan, String> {
    #[derive(Deserialize)]
    struct File {
        aggregates: Vec<Declaration>,
    }
    let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    Plan::compile(&f.aggregates)
}

const EXAMPLE: &str = r#"
[[aggregates]]
name = "views-by-os"
types = ["view"]
where = [{ field = "device.os", in = ["ios", "android"] }, { field = "price", ge = 10 }]
group-by = ["device.os", "hour_of_day()"]
measures = ["count", "sum(price)", "max(price)"]
sizes = ["10s", "1h"]
"#;

#[test]
fn the_documented_declaration_compiles() {
    let p = parse(EXAMPLE).unwrap();
    let a = &p.aggregates[0];
    assert_eq!(a.sizes_ms, vec![10_000, 3_600_000]);
    let os = Path {
        parts: vec!["device".into(), "os".into()],
        id: 0,
    };
    assert_eq!(a.keys, vec![Key::Field(os), Key::HourOfDay]);
    // device.os (the condition's and the key's) once, then price.
    let mut values = Values::new();
    p.paths
        .extract(br#"{"price": 12.50, "device": {"os": "ios"}}"#, &mut values)
        .unwrap();
    assert_eq!(
        values.as_slice(),
        [Some(&b"\"ios\""[..]), Some(&b"12.50"[..])]
    );
    assert!(a.admits(Some(EventType::View), &values));
    assert!(!a.admits(Some(EventType::Purchase), &values));
    assert_eq!(a.types, Some(vec![EventType::View]));
}

#[test]
fn a_bad_declaration_is_one_line_naming_the_aggregate_and_the_field() {
    let base = |line: &str| {
        format!(
            "[[aggregates]]\nname = \"a1\"\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n{line}\n"
        )
    };
    for (line, names) in [
        ("types = [\"click\"]", "types"),
        ("group-by = [\"device..os\"]", "group-by"),
        (
            "where = [{ field = \"price\", gt = 1, lt = 3 }]",
            "where price",
        ),
        ("where = [{ field = \"price\", gt = \"x\" }]", "where price"),
        ("where = [{ field = \"price\", gt = 1.234 }]", "where price"),
        ("where = [{ field = \"price\" }]", "where price"),
        ("stream = \"reviews\"", "stream"),
    ] {
        let e = parse(&base(line)).unwrap_err();
        assert!(
            e.starts_with("aggregate \"a1\": ") && e.contains(names),
            "{line}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
    for (text, names) in [
        (
            "[[aggregates]]\nname = \"a2\"\nmeasures = [\"median(price)\"]\nsizes = [\"10s\"]\n",
            "measures",
        ),
        (
            "[[aggregates]]\nname = \"a2\"\nmeasures = [\"count\"]\nsizes = [\"500ms\"]\n",
            "sizes",
        ),
        (
            "[[aggregates]]\nname = \"a2\"\nmeasures = []\nsizes = [\"10s\"]\n",
            "measures",
        ),
        (
            "[[aggregates]]\nname = \"a b\"\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n",
            "name",
        ),
        (
            "[[aggregates]]\nname = \"a2\"\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n[[aggregates]]\nname = \"a2\"\nmeasures = [\"count\"]\nsizes = [\"1m\"]\n",
            "declared twice",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(
            e.starts_with("aggregate \"a") && e.contains(names),
            "{text}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn a_dry_run_names_what_is_new_changed_and_dropped() {
    let decl = |name: &str, size: &str| {
        format!("[[aggregates]]\nname = \"{name}\"\nmeasures = [\"count\"]\nsizes = [\"{size}\"]\n")
    };
    let old = parse(&format!("{}{}", decl("kept", "10s"), decl("gone", "10s"))).unwrap();
    let new = parse(&format!(
        "{}{}{}",
        decl("kept", "10s"),
        decl("new", "1m"),
        decl("gone2", "10s")
    ))
    .unwrap();
    assert_eq!(
        old.changes(&new),
        (
            vec!["gone2".to_string(), "new".to_string()],
            vec![],
            vec!["gone".to_string()]
        )
    );
    let changed = parse(&decl("kept", "1m")).unwrap();
    assert_eq!(
        old.changes(&changed),
        (vec![], vec!["kept".to_string()], vec!["gone".to_string()])
    );
}

#[test]
fn numbers_are_read_in_hundredths_exactly_or_not_at_all() {
    for text in [
        "1.",
        "-",
        "",
        "-.5",
        ".5",
        "1.2.3",
        "01.10",
        "00",
        "-0",
        "99999999999999999.99",
        "999999999999999999",
    ] {
        assert_eq!(
            hundredths(text.as_bytes()),
            any_hundredths(text.as_bytes()),
            "{text}"
        );
    }
    for (text, want) in [
        ("12", Some(1200)),
        ("12.5", Some(1250)),
        ("-0.07", Some(-7)),
        ("19.99", Some(1999)),
        ("1.500", Some(150)),
        ("2e3", Some(200_000)),
        ("25E-1", Some(250)),
        ("1.234", None),
        ("1e-3", None),
        ("\"12\"", None),
        ("1e300", None),
        ("true", None),
        ("12345678901234567.89", Some(1_234_567_890_123_456_789)),
        ("18446744073709551615", Some(i128::from(u64::MAX) * 100)),
    ] {
        assert_eq!(hundredths(text.as_bytes()), want, "{text}");
    }
    assert!(equals(b"1.0", &json!(1)) && equals(b"1e0", &json!(1.0)));
    assert!(equals(b"\"ios\"", &json!("ios")) && !equals(b"\"ios\"", &json!("IOS")));
}

#[test]
fn derived_keys_follow_the_zone() {
    let seoul = Calendar::new("Asia/Seoul").unwrap();
    let utc = Calendar::new("UTC").unwrap();
    // 2026-12-07 is a Monday.
    let t = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:30:00Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(day_of_week(&utc, t), 1);
    // 09:30 on Monday in Seoul.
    assert_eq!(day_of_week(&seoul, t), 1);
    // 2026-12-06T14:30Z is 23:30 on Sunday in Seoul, 14:30 on Sunday in UTC.
    let sunday = t - 10 * 3_600_000;
    assert_eq!(
        (day_of_week(&seoul, sunday), seoul.hour_of_day(sunday)),
        (7, 23)
    );
    assert_eq!(
        (day_of_week(&utc, sunday), utc.hour_of_day(sunday)),
        (7, 14)
    );
}

/// A generated event: what the batch model reads directly, and its JSON.
#[derive(Debug, Clone)]
struct Ev {
    ty: EventType,
    t_ms: i64,
    os: Option<&'static str>,
    /// Price in hundredths, and whether it is written with three decimals (unreadable).
    price: Option<(i64, bool)>,
    campaign: Option<u8>,
}

impl Ev {
    fn json(&self) -> Value {
        let mut v = json!({ "event_type": self.ty.as_str(), "context": {} });
        if let Some(os) = self.os {
            v["device"] = json!({ "os": os });
        }
        if let Some((p, three)) = self.price {
            let text = if three {
                format!("{}.{:03}", p / 100, (p % 100) * 10 + 1)
            } else {
                format!("{}.{:02}", p / 100, p % 100)
            };
            // Some as strings, as the shop writes prices (`"19.99"`).
            v["price"] = if p % 7 == 0 {
                Value::String(text)
            } else {
                serde_json::from_str(&text).unwrap()
            };
        }
        if let Some(c) = self.campaign {
            v["context"]["campaign"] = json!({ "id": c });
        }
        v
    }
}

fn event() -> impl Strategy<Value = Ev> {
    (
        prop::sample::select(EventType::ALL.to_vec()),
        0..200_000i64,
        prop::option::of(prop::sample::select(vec!["ios", "android", "linux"])),
        // Prices on the 20.00 boundary of the `ge` condition often.
        prop::option::of((
            prop_oneof![0..5_000i64, Just(2_000), Just(1_999)],
            prop::bool::weighted(0.1),
        )),
        prop::option::of(0..3u8),
    )
        .prop_map(|(ty, t, os, price, campaign)| Ev {
            ty,
            t_ms: 1_765_000_000_000 + t * 100,
            os,
            price,
            campaign,
        })
}

/// The batch model's windows: (start, key) → (events, sum, min, max, skipped).
type Model = BTreeMap<(i64, Vec<String>), (u64, Option<i128>, Option<i128>, Option<i128>, u64)>;

/// A declaration from a small grammar, and the same choices for the model.
#[derive(Debug, Clone)]
struct Choice {
    views_only: bool,
    /// 0: none; 1: os in {ios, android}; 2: price >= 20.00; 3: campaign exists.
    condition: u8,
    /// Keys: 0 device.os, 1 hour_of_day(), 2 context.campaign.id.
    keys: Vec<u8>,
    size_s: i64,
}

impl Choice {
    fn toml(&self) -> String {
        let cond = [
            "",
            "where = [{ field = \"device.os\", in = [\"ios\", \"android\"] }]",
            "where = [{ field = \"price\", ge = 20.00 }]",
            "where = [{ field = \"context.campaign\", exists = true }]",
        ][usize::from(self.condition)];
        let keys: Vec<&str> = self
            .keys
            .iter()
            .map(|k| {
                [
                    "\"device.os\"",
                    "\"hour_of_day()\"",
                    "\"context.campaign.id\"",
                ][usize::from(*k)]
            })
            .collect();
        format!(
            "[[aggregates]]\nname = \"g\"\n{}\n{cond}\ngroup-by = [{}]\nmeasures = [\"count\", \"sum(price)\", \"min(price)\", \"max(price)\"]\nsizes = [\"{}s\"]\n",
            if self.views_only {
                "types = [\"view\"]"
            } else {
                ""
            },
            keys.join(", "),
            self.size_s
        )
    }

    /// The model: which events count, their key, their readable price.
    fn admits(&self, e: &Ev) -> bool {
        (!self.views_only || e.ty == EventType::View)
            && match self.condition {
                1 => matches!(e.os, Some("ios" | "android")),
                2 => matches!(e.price, Some((p, false)) if p >= 2000),
                3 => e.campaign.is_some(),
                _ => true,
            }
    }

    /// The batch model, from the fields: (start, key) → (events, sum, min, max, skipped).
    fn model(&self, events: &[Ev]) -> Model {
        let size = self.size_s * 1000;
        let mut model = Model::new();
        for e in events.iter().filter(|e| self.admits(e)) {
            let m = model
                .entry((e.t_ms.div_euclid(size) * size, self.key(e)))
                .or_default();
            m.0 += 1;
            match e.price {
                Some((p, false)) => {
                    let p = i128::from(p);
                    m.1 = Some(m.1.unwrap_or(0) + p);
                    m.2 = Some(m.2.map_or(p, |x| x.min(p)));
                    m.3 = Some(m.3.map_or(p, |x| x.max(p)));
                }
                _ => m.4 += 3,
            }
        }
        model
    }

    fn key(&self, e: &Ev) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| match k {
                0 => e.os.unwrap_or("null").to_string(),
                1 => ((e.t_ms / 3_600_000) % 24).to_string(),
                _ => e.campaign.map_or("null".into(), |c| c.to_string()),
            })
            .collect()
    }
}

fn choice() -> impl Strategy<Value = Choice> {
    (
        any::<bool>(),
        0..4u8,
        prop::collection::vec(0..3u8, 0..3),
        prop::sample::select(vec![1i64, 10, 60, 3600]),
    )
        .prop_map(|(views_only, condition, keys, size_s)| Choice {
            views_only,
            condition,
            keys,
            size_s,
        })
}

proptest! {
    /// The one-pass reading of plain numbers agrees with the general one on any text of
    /// number characters.
    #[test]
    fn plain_numbers_read_as_any_number(text in "[-0-9.eE]{0,22}") {
        prop_assert_eq!(hundredths(text.as_bytes()), any_hundredths(text.as_bytes()));
    }
}

proptest! {
    /// A declared aggregate's windows, fed in any order and split into parts merged
    /// after, equal a batch model computed from the events' fields directly.
    #[test]
    fn declared_windows_equal_a_batch_model(
        c in choice(),
        events in prop::collection::vec(event(), 0..80),
        parts in 1..4usize,
        seed in any::<u64>(),
    ) {
        let plan = parse(&c.toml()).unwrap();
        let agg = &plan.aggregates[0];
        let cal = Calendar::new("UTC").unwrap();
        let size = c.size_s * 1000;
        let model = c.model(&events);
        // The windows: events shuffled, dealt into parts, each part's windows merged.
        let mut order: Vec<usize> = (0..events.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut part_windows: Vec<BTreeMap<i64, Window>> = vec![BTreeMap::new(); parts];
        for (n, &i) in order.iter().enumerate() {
            let e = &events[i];
            let bytes = serde_json::to_vec(&e.json()).unwrap();
            let mut values = Values::new();
            plan.paths.extract(&bytes, &mut values).unwrap();
            if agg.admits(Some(e.ty), &values) {
                part_windows[n % parts]
                    .entry(e.t_ms.div_euclid(size) * size)
                    .or_default()
                    .add(agg, &cal, e.t_ms, &values);
            }
        }
        let mut all: BTreeMap<i64, Window> = BTreeMap::new();
        for p in &part_windows {
            for (s, w) in p {
                all.entry(*s).or_default().absorb(agg, &published(w));
            }
        }
        let got: Model = all
            .into_iter()
            .flat_map(|(s, w)| w.finish(agg).into_iter().map(move |(k, r)| {
                assert_eq!(r.values[0], Some(i128::from(r.events)));
                ((s, k), (r.events, r.values[1], r.values[2], r.values[3], r.skipped))
            }))
            .collect();
        prop_assert_eq!(got, model);
    }
}

/// `w` as a worker publishes it and a merger reads it: its partial, through bincode.
fn published(w: &Window) -> super::WindowPartial {
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(w.to_partial(), cfg).unwrap();
    bincode::serde::decode_from_slice(&bytes, cfg).unwrap().0
}

/// Random JSON: nested objects (keys from a small set, so paths hit and repeat), arrays,
/// strings with escapes, numbers, literals.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1000.0..1000.0f64).prop_map(|f| json!(f)),
        "[a-c\"\\\\\u{e9}\n ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[abc]|a\"b|\u{e9}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// The record's text with a repeated key and odd whitespace, as a producer might write it.
fn written(v: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(v).unwrap()
    } else {
        serde_json::to_vec(v).unwrap()
    }
}

/// `bytes` (the text of `v`) with `v`'s first key written once more before it, its value
/// `{"a":1}`: the last value is the one that counts.
fn repeated_first_key(v: &Value, bytes: Vec<u8>) -> Vec<u8> {
    match v.as_object().and_then(|o| o.iter().next()) {
        Some((k, _)) if bytes.first() == Some(&b'{') => {
            let mut text = format!("{{{}:{{\"a\":1}},", serde_json::to_string(k).unwrap());
            text.push_str(std::str::from_utf8(&bytes[1..]).unwrap());
            text.into_bytes()
        }
        _ => bytes,
    }
}

proptest! {
    /// What the walk takes out for a path is what `serde_json` finds there.
    #[test]
    fn extracted_values_are_what_serde_json_finds(
        v in json_value(),
        paths in prop::collection::vec(prop::collection::vec("[abc]|a\"b|\u{e9}", 1..4), 0..6),
        pretty in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let mut bytes = written(&v, pretty);
        if repeat {
            bytes = repeated_first_key(&v, bytes);
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let trie = Paths::new(&paths);
        let mut out = Values::new();
        trie.extract(&bytes, &mut out).unwrap();
        for (p, got) in paths.iter().zip(&out) {
            let want = p.iter().try_fold(&parsed, |v, k| v.as_object()?.get(k));
            let got: Option<Value> = got.map(|raw| serde_json::from_slice(raw).unwrap());
            prop_assert_eq!(got.as_ref(), want, "path {:?} in {}", p, String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn a_key_is_a_strings_text_or_a_values_json_text_or_null() {
    let plan = parse(
        "[[aggregates]]\nname = \"k\"\ngroup-by = [\"device.os\", \"day_of_week()\"]\nmeasures = [\"count\"]\nsizes = [\"1h\"]\n",
    )
    .unwrap();
    let (agg, cal) = (&plan.aggregates[0], Calendar::new("UTC").unwrap());
    // 2026-12-07T00:30Z, a Monday.
    let t = 1_796_603_400_000;
    assert_eq!(day_of_week(&cal, t), 1);
    let mut w = Window::default();
    for record in [
        br#"{"device": {"os": "a\"b\u00e9"}}"#.as_slice(),
        br#"{"device": {"os": 12.50}}"#,
        br#"{"device": {"os": "plain"}}"#,
        br#"{"device": {}}"#,
        br#"{"device": {"os": "plain"}}"#,
    ] {
        let mut values = Values::new();
        plan.paths.extract(record, &mut values).unwrap();
        w.add(agg, &cal, t, &values);
    }
    let keys: Vec<(Vec<String>, u64)> = w
        .finish(agg)
        .into_iter()
        .map(|(k, r)| (k, r.events))
        .collect();
    let k = |os: &str| vec![os.to_string(), "1".to_string()];
    assert_eq!(
        keys,
        vec![
            (k("12.50"), 1),
            (k("a\"b\u{e9}"), 1),
            (k("null"), 1),
            (k("plain"), 2)
        ]
    );
}

proptest! {
    /// The event scanner's capture takes out what the separate walk does, and scans the
    /// record as it does without capturing (the same fields, the same errors).
    #[test]
    fn the_scanners_capture_equals_the_walk(
        v in json_value(),
        paths in prop::collection::vec(prop::collection::vec("[abc]|a\"b|\u{e9}|price", 1..4), 0..6),
        price in prop::option::of(-1000.0..1000.0f64),
        pretty in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let mut v = v;
        if let (Some(p), Some(o)) = (price, v.as_object_mut()) {
            o.insert("price".into(), json!(p));
        }
        let mut bytes = written(&v, pretty);
        if repeat {
            bytes = repeated_first_key(&v, bytes);
        }
        let trie = Paths::new(&paths);
        let mut walked = Values::new();
        trie.extract(&bytes, &mut walked).unwrap();
        let mut captured = Values::new();
        trie.reset(&mut captured);
        let capture = crate::event::scan::Capture { root: trie.root(), out: &mut captured };
        let with = crate::event::scan::scan_capturing(&bytes, Some(capture));
        let without = crate::event::scan::scan(&bytes);
        prop_assert_eq!(format!("{with:?}"), format!("{without:?}"));
        if with.is_ok() {
            prop_assert_eq!(captured, walked);
        }
    }
}

#[test]
fn an_event_is_decoded_with_its_declared_values_in_one_pass() {
    let plan = parse(EXAMPLE).unwrap();
    let line = br#"{"schema":1,"event_id":"e1","event_type":"view","user_id":"u","session_id":"s","product_id":"p","category":"c","price":12.50,"quantity":1,"ts":"2026-12-07T10:00:00Z","device":{"type":"mobile","os":"ios"}}"#;
    let mut values = Values::new();
    let rules = crate::event::Rules::new(65_536);
    let ev = crate::event::decode_capturing(line, &rules, None, &plan.paths, &mut values).unwrap();
    assert_eq!(ev, crate::event::decode(line, 65_536).unwrap());
    assert_eq!(
        values.as_slice(),
        [Some(&b"\"ios\""[..]), Some(&b"12.50"[..])]
    );
    assert!(plan.aggregates[0].admits(Some(ev.event_type), &values));
}

/// `e` as a whole schema-1 event record with id `id` (a price on every product event,
/// none on searches).
fn record(e: &Ev, id: usize) -> Vec<u8> {
    let mut v = e.json();
    let ts = chrono::DateTime::from_timestamp_millis(e.t_ms).unwrap();
    v["schema"] = json!(1);
    v["event_id"] = json!(format!("e{id}"));
    v["user_id"] = json!("u");
    v["session_id"] = json!("s");
    v["ts"] = json!(ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    if e.ty == EventType::Search {
        v["query"] = json!("red hat");
        v.as_object_mut().unwrap().remove("price");
    } else {
        v["product_id"] = json!("p1");
        v["category"] = json!("c1");
        v["quantity"] = json!(1);
        let p = e.price.map_or(1999, |(p, _)| p);
        v["price"] = serde_json::from_str(&format!("{}.{:02}", p / 100, p % 100)).unwrap();
    }
    serde_json::to_vec(&v).unwrap()
}

proptest! {
    /// Declared aggregates in the window operator (`Windows<Declared>`): events decoded
    /// with their values captured, in time order with some records twice, drained; the
    /// final windows equal the batch model of the distinct events.
    #[test]
    fn the_window_operator_gives_declared_windows_equal_to_a_batch_model(
        c in choice(),
        mut events in prop::collection::vec(event(), 0..60),
        twice in prop::collection::vec(any::<bool>(), 60),
    ) {
        use crate::window::{Outcome, Windows};
        events.sort_by_key(|e| e.t_ms);
        // Every product event carries a readable price in its record.
        for e in &mut events {
            e.price = (e.ty != EventType::Search).then(|| (e.price.map_or(1999, |p| p.0), false));
        }
        let plan = parse(&c.toml()).unwrap();
        let decl = Declared::new(plan.clone(), Calendar::new("UTC").unwrap());
        let cfg = decl.window_config(5_000);
        let mut core = Windows::with(cfg, 1, decl);
        let rules = crate::event::Rules::new(65_536);
        let mut offset = 0;
        for (i, e) in events.iter().enumerate() {
            let bytes = record(e, i);
            for _ in 0..if twice[i] { 2 } else { 1 } {
                let mut values = Values::new();
                let event = crate::event::decode_capturing(&bytes, &rules, None, &plan.paths, &mut values).unwrap();
                let outcome = core.on_event(0, offset, &Item::of_event(&event, &values), false);
                prop_assert!(matches!(outcome, Outcome::Accepted | Outcome::Duplicate), "{outcome:?}");
                offset += 1;
            }
        }
        let mut finals = core.advance();
        finals.extend(core.drain());
        let size = c.size_s * 1000;
        let model = c.model(&events);
        let mut got: Model = BTreeMap::new();
        for f in finals {
            prop_assert_eq!(f.size_ms, size);
            for (name, rows) in f.aggregates {
                prop_assert_eq!(name.as_str(), "g");
                for (k, r) in rows {
                    got.insert((f.start_ms, k), (r.events, r.values[1], r.values[2], r.values[3], r.skipped));
                }
            }
        }
        prop_assert_eq!(got, model);
    }
}

proptest! {
    /// `count_distinct` is exact while a group has at most `distinct-bound` values and
    /// within the sketch's documented error past it, whatever the order and the split
    /// into parts; `top_k` keeps the `n` groups with the most events, ties by key.
    #[test]
    fn count_distinct_and_top_k_equal_a_batch_model(
        events in prop::collection::vec((0..6u8, 0..60u16, 0..100_000i64), 0..300),
        bound in 1..40usize,
        k in 1..5usize,
        parts in 1..4usize,
    ) {
        let toml_text = format!(
            "[[aggregates]]\nname = \"d\"\ngroup-by = [\"page\"]\nmeasures = [\"count\", \"count_distinct(user)\", \"top_k({k}, count)\"]\nsizes = [\"1m\"]\ndistinct-bound = {bound}\n"
        );
        let plan = parse(&toml_text).unwrap();
        let agg = &plan.aggregates[0];
        let cal = Calendar::new("UTC").unwrap();
        // The model: (window, page) → (events, distinct users).
        let mut model: BTreeMap<i64, BTreeMap<String, (u64, std::collections::BTreeSet<u16>)>> =
            BTreeMap::new();
        let mut windows: Vec<BTreeMap<i64, Window>> = vec![BTreeMap::new(); parts];
        for (n, &(page, user, t)) in events.iter().enumerate() {
            let t_ms = 1_765_000_000_000 + t * 10;
            let start = t_ms.div_euclid(60_000) * 60_000;
            // Users as numbers and as strings: `7` and `"7"` are one value (their text).
            let record = if user % 2 == 0 {
                format!(r#"{{"page":"/p/{page}","user":{user}}}"#)
            } else {
                format!(r#"{{"page":"/p/{page}","user":"{user}"}}"#)
            };
            let mut values = Values::new();
            plan.paths.extract(record.as_bytes(), &mut values).unwrap();
            windows[n % parts].entry(start).or_default().add(agg, &cal, t_ms, &values);
            let m = model.entry(start).or_default().entry(format!("/p/{page}")).or_default();
            m.0 += 1;
            m.1.insert(user);
        }
        let mut all: BTreeMap<i64, Window> = BTreeMap::new();
        for p in &windows {
            for (s, w) in p {
                all.entry(*s).or_default().absorb(agg, &published(w));
            }
        }
        prop_assert_eq!(all.len(), model.len());
        for (start, w) in &all {
            let rows = w.finish(agg);
            let mut want: Vec<(&String, &(u64, std::collections::BTreeSet<u16>))> =
                model[start].iter().collect();
            want.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
            want.truncate(k);
            prop_assert_eq!(rows.len(), want.len());
            for ((key, row), (page, (events, users))) in rows.iter().zip(&want) {
                prop_assert_eq!(&key[0], *page);
                prop_assert_eq!(row.events, *events);
                let got = row.values[1].unwrap();
                let n = users.len() as i128;
                if users.len() <= bound {
                    prop_assert_eq!(got, n, "exact within the bound");
                } else {
                    // 1.04 / √16384 = 0.81 %: three of them, and one for rounding.
                    prop_assert!((got - n).abs() as f64 <= 1.0 + 0.025 * n as f64, "{} for {}", got, n);
                }
            }
        }
    }
}

#[test]
fn more_than_64_aggregates_are_refused_naming_the_first_too_many() {
    let text: String = (0..65)
        .map(|i| {
            format!(
                "[[aggregates]]\nname = \"a{i:02}\"\nmeasures = [\"count\"]\nsizes = [\"10s\"]\n"
            )
        })
        .collect();
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("a64") && err.contains("at most 64") && err.lines().count() == 1,
        "{err}"
    );
    let fewer: String = text
        .split("[[aggregates]]")
        .skip(1)
        .take(64)
        .map(|d| format!("[[aggregates]]{d}"))
        .collect();
    assert_eq!(parse(&fewer).unwrap().aggregates.len(), 64);
}

#[test]
fn numbers_past_the_four_kept_are_read_each_time_they_are_asked_for() {
    let paths: Vec<Path> = (0..6)
        .map(|id| Path {
            parts: vec![format!("n{id}")],
            id,
        })
        .collect();
    let texts: Vec<String> = (0..6).map(|i| format!("{i}.5")).collect();
    let values: Vec<Option<&[u8]>> = texts.iter().map(|t| Some(t.as_bytes())).collect();
    let mut numbers = Numbers::default();
    for p in paths.iter().rev() {
        assert_eq!(numbers.read(p, &values), p.number(&values));
    }
    for p in &paths {
        let want = Some(i128::try_from(p.id).unwrap() * 100 + 50);
        assert_eq!(numbers.get(p, &values), want);
        assert_eq!(numbers.read(p, &values), want);
    }
}
