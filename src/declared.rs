//! Declared aggregates (issue 20): the `[[aggregates]]` declarations, checked and
//! compiled into a [`Plan`] with one-line errors naming the aggregate and the field; the
//! canonical text a version's fingerprint holds; the declared paths' values, taken out by
//! the event scanner in its own pass ([`crate::event::decode_capturing`]) or by a walk of
//! their own ([`Paths::extract`]); the window state that evaluates a declaration over
//! events ([`Window`]: filter, group-by on field paths and derived keys, `count`, `sum`,
//! `min`, `max`, `count_distinct`, `top_k`), mergeable and exact; and [`Declared`], their
//! aggregator for the window operator, which the pipeline runs beside the shop's
//! (`pipeline/declared.rs`). docs/DECLARED-AGGREGATES.md says what is not built.
//!
//! ```toml
//! [[aggregates]]
//! name = "views-by-os"
//! types = ["view"]
//! where = [{ field = "device.os", in = ["ios", "android"] }, { field = "price", ge = 10 }]
//! group-by = ["device.os", "hour_of_day()"]
//! measures = ["count", "sum(price)", "max(price)"]
//! sizes = ["10s", "1h"]
//! ```
//!
//! Decisions (where the issue is silent):
//! - a group-by path the event does not have is the key part `null`, as SQL groups a
//!   missing column under NULL; a string is its text, any other value its JSON text as
//!   written;
//! - `sum`, `min` and `max` read a number's text exactly, in hundredths (money, and every
//!   integer; `1.500` and `2e3` too), or a string holding such a number (the shop's
//!   prices are written `"19.99"`); a value that is missing, not a number or not a whole
//!   number of hundredths is left out of that measure and counted in the row's `skipped`,
//!   never rounded; `eq` and `in` compare numbers by that exact value;
//! - a filter condition on a missing field is false (`exists = false` asks for that).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rollup::{Calendar, Unit};

/// One `[[aggregates]]` entry as written in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Declaration {
    /// Its name: letters, digits, `-` and `_`.
    pub name: String,
    /// The stream it reads (`events`, the default).
    #[serde(default = "events")]
    pub stream: String,
    /// Event types counted (`search`, `view`, `add_cart`, `purchase`); all when absent.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Conditions every counted event meets.
    #[serde(default, rename = "where")]
    pub conditions: Vec<Condition>,
    /// Keys: field paths into the event's JSON (`device.os`), or `hour_of_day()` and
    /// `day_of_week()` in the configured zone.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `count`, `sum(path)`, `min(path)`, `max(path)`, `count_distinct(path)`, and at most
    /// one `top_k(n, measure)`: only the window's `n` groups ranked first by that measure.
    pub measures: Vec<String>,
    /// Window sizes, 1 s and up (`10s`, `1h`).
    pub sizes: Vec<String>,
    /// Distinct values a group counts exactly for `count_distinct`; past it, a sketch.
    #[serde(default = "distinct_bound")]
    pub distinct_bound: usize,
}

fn events() -> String {
    "events".into()
}

fn distinct_bound() -> usize {
    10_000
}

/// A condition on one field: exactly one of the operators is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The field path.
    pub field: String,
    /// Equal to this value (a string, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Value>,
    /// Equal to one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// Present (true) or absent (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// A number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Value>,
    /// A number at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<Value>,
    /// A number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Value>,
    /// A number at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<Value>,
}

mod core;
pub mod distinct;
pub mod extract;

pub use core::{Declared, DeclaredFinal, DeclaredPartial, Item, Rows};
use distinct::Distinct;
pub use extract::{Paths, Values};

/// A field path: the keys from the event object's top level down, and its id among the
/// plan's paths ([`Paths`]; set by [`Plan::compile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    parts: Vec<String>,
    id: usize,
}

impl Path {
    fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("{text:?} is not a field path (a.b.c)"));
        }
        Ok(Self {
            parts,
            id: usize::MAX,
        })
    }

    /// Its value among an event's extracted `values`.
    fn get<'r>(&self, values: &[Option<&'r [u8]>]) -> Option<&'r [u8]> {
        values.get(self.id).copied().flatten()
    }

    /// Its value in hundredths, read from `values`.
    fn number(&self, values: &[Option<&[u8]>]) -> Option<i128> {
        self.get(values).and_then(value_hundredths)
    }
}

/// The most aggregates a configuration declares (a record's admitted ones are a bitmask).
pub const MAX_AGGREGATES: usize = 64;

/// A record's numbers, each read once however many filters and measures read it: the
/// first four paths read are kept (a record rarely has more numbers declared on it).
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    kept: u8,
    ids: [usize; 4],
    values: [Option<i128>; 4],
}

impl Numbers {
    /// `p`'s number, read from `values` the first time it is asked for.
    #[inline]
    fn read(&mut self, p: &Path, values: &[Option<&[u8]>]) -> Option<i128> {
        if let Some(n) = self.kept(p) {
            return n;
        }
        let kept = usize::from(self.kept);
        let n = p.number(values);
        if kept < self.ids.len() {
            self.ids[kept] = p.id;
            self.values[kept] = n;
            self.kept += 1;
        }
        n
    }

    /// `p`'s number: as read before, else read now (and not kept).
    #[inline]
    fn get(&self, p: &Path, values: &[Option<&[u8]>]) -> Option<i128> {
        self.kept(p).unwrap_or_else(|| p.number(values))
    }

    /// `p`'s number if it was kept.
    #[inline]
    fn kept(&self, p: &Path) -> Option<Option<i128>> {
        let kept = usize::from(self.kept);
        let i = self.ids[..kept].iter().position(|&id| id == p.id)?;
        Some(self.values[i])
    }
}

/// A group-by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A field's value.
    Field(Path),
    /// The hour of the day of the event's time, 0–23, in the zone.
    HourOfDay,
    /// The ISO day of the week of the event's time, 1 (Monday) – 7, in the zone.
    DayOfWeek,
}

/// A measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// Events.
    Count,
    /// The sum of a field, exact in hundredths.
    Sum(Path),
    /// The least value of a field.
    Min(Path),
    /// The greatest value of a field.
    Max(Path),
    /// Distinct values of a field ([`distinct`]).
    CountDistinct(Path),
}

/// An operator of a [`Condition`], its operand checked.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Value),
    In(Vec<Value>),
    Exists(bool),
    /// A comparison with a number in hundredths: which orderings pass.
    Cmp(Vec<std::cmp::Ordering>, i128),
}

/// A checked declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Its name.
    pub name: String,
    /// The stream it reads.
    pub stream: crate::stream::Stream,
    /// Event type names counted (none: all).
    pub types: Option<Vec<crate::event::EventType>>,
    conditions: Vec<(Path, Test)>,
    /// The keys, in order.
    pub keys: Vec<Key>,
    /// The keys as declared (`device.os`, `hour_of_day()`), the names of the key's parts.
    pub key_names: Vec<String>,
    /// The measures, in order.
    pub measures: Vec<Measure>,
    /// The measures as declared (`count`, `sum(price)`), the names of their values.
    pub measure_names: Vec<String>,
    /// `top_k(n, measure)`: `n` and the index of the measure that ranks the groups.
    pub top: Option<(usize, usize)>,
    /// Distinct values a group counts exactly.
    pub distinct_bound: usize,
    /// Window sizes in milliseconds, ascending.
    pub sizes_ms: Vec<i64>,
    /// The declaration's canonical text (JSON, fields in a fixed order).
    pub canonical: String,
}

/// Every declared aggregate, checked, and the paths they read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// In name order.
    pub aggregates: Vec<Aggregate>,
    /// Every path any of them reads, each once: what [`Paths::extract`] takes out of an
    /// event for all of them.
    pub paths: Paths,
}

/// `"{aggregate}": {what}` — one line naming the aggregate and the field.
fn bad(name: &str, what: impl std::fmt::Display) -> String {
    format!("aggregate {name:?}: {what}")
}

/// A JSON number's text in hundredths, exactly: digits, an optional fraction and exponent,
/// whose value is a whole number of hundredths (`19.99`, `1.500`, `2e3`); none otherwise
/// (more precision, not a number, out of range).
#[inline]
fn hundredths(text: &[u8]) -> Option<i128> {
    plain_hundredths(text).or_else(|| any_hundredths(text))
}

/// [`hundredths`] of the common form, `-?d{1,17}(.d{1,2})?`, in one pass without
/// overflow checks (17 digits and two more stay below 2^63); `None` for any other text,
/// which [`any_hundredths`] then reads.
#[inline]
fn plain_hundredths(text: &[u8]) -> Option<i128> {
    let (neg, t) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let int = t.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || int > 17 {
        return None;
    }
    let mut n = t[..int]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    let frac = match &t[int..] {
        [] => 0,
        [b'.', d @ ..] if (1..=2).contains(&d.len()) && d.iter().all(u8::is_ascii_digit) => {
            for &x in d {
                n = n * 10 + u64::from(x - b'0');
            }
            d.len()
        }
        _ => return None,
    };
    let n = i128::from(
        n * if frac == 2 {
            1
        } else {
            10u64.pow(2 - frac as u32)
        },
    );
    Some(if neg { -n } else { n })
}

/// [`hundredths`] of any number's text: exponents, more decimals (zeros), up to i128.
fn any_hundredths(text: &[u8]) -> Option<i128> {
    let (neg, t) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exp) = match t.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (
            &t[..i],
            std::str::from_utf8(&t[i + 1..]).ok()?.parse::<i32>().ok()?,
        ),
        None => (t, 0),
    };
    let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    // The digits as one integer, times 10^shift hundredths: with a negative shift, the
    // last -shift digits are below a hundredth and must be zeros.
    let shift = exp
        .checked_add(2)?
        .checked_sub(i32::try_from(frac.len()).ok()?)?;
    let below = usize::try_from(shift.min(0).unsigned_abs()).ok()?;
    let keep = (int.len() + frac.len()).saturating_sub(below);
    let mut n: i128 = 0;
    for (i, &d) in int.iter().chain(frac).enumerate() {
        if i < keep {
            n = n.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
        } else if d != b'0' {
            return None;
        }
    }
    for _ in 0..shift.max(0) {
        n = n.checked_mul(10)?;
    }
    Some(if neg { -n } else { n })
}

/// An extracted value's hundredths: a JSON number, or a string holding one exactly as a
/// number is written (the shop's prices are `"19.99"`).
fn value_hundredths(raw: &[u8]) -> Option<i128> {
    match raw {
        [b'"', inner @ .., b'"'] => hundredths(inner),
        _ => hundredths(raw),
    }
}

/// A value operand's hundredths (a number given in the configuration).
fn operand_hundredths(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => hundredths(n.to_string().as_bytes()),
        _ => None,
    }
}

/// Whether the extracted `raw` value equals the operand `want`: numbers by their exact
/// value (`1`, `1.0` and `1e0` are equal), anything else as JSON values.
fn equals(raw: &[u8], want: &Value) -> bool {
    match (want, value_hundredths(raw)) {
        (Value::Number(_), Some(x)) => operand_hundredths(want) == Some(x),
        (Value::String(w), _) => string_text(raw).is_some_and(|t| *t == *w.as_bytes()),
        _ => serde_json::from_slice::<Value>(raw).is_ok_and(|v| v == *want),
    }
}

/// The text of an extracted JSON string (`"…"`): borrowed when it holds no escape; none
/// for any other value.
fn string_text(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => Some(Cow::Borrowed(inner)),
        [b'"', inner @ .., b'"'] => std::str::from_utf8(inner)
            .ok()
            .and_then(crate::event::scan::unescape)
            .map(|t| Cow::Owned(t.into_bytes())),
        _ => None,
    }
}

impl Condition {
    fn compile(&self, name: &str) -> Result<(Path, Test), String> {
        let path = Path::parse(&self.field).map_err(|e| bad(name, format!("where: {e}")))?;
        let cmp = |v: &Value, pass: Vec<std::cmp::Ordering>| -> Result<Test, String> {
            operand_hundredths(v)
                .map(|x| Test::Cmp(pass, x))
                .ok_or_else(|| {
                    bad(
                        name,
                        format!(
                            "where {}: {v} is not a number with at most two decimals",
                            self.field
                        ),
                    )
                })
        };
        use std::cmp::Ordering::{Equal, Greater, Less};
        let mut tests = Vec::new();
        if let Some(v) = &self.eq {
            tests.push(Test::Eq(v.clone()));
        }
        if let Some(v) = &self.one_of {
            tests.push(Test::In(v.clone()));
        }
        if let Some(v) = self.exists {
            tests.push(Test::Exists(v));
        }
        for (op, pass) in [
            (&self.gt, vec![Greater]),
            (&self.ge, vec![Greater, Equal]),
            (&self.lt, vec![Less]),
            (&self.le, vec![Less, Equal]),
        ] {
            if let Some(v) = op {
                tests.push(cmp(v, pass)?);
            }
        }
        match (tests.pop(), tests.is_empty()) {
            (Some(t), true) => Ok((path, t)),
            _ => Err(bad(
                name,
                format!(
                    "where {}: give exactly one of eq, in, exists, gt, ge, lt, le",
                    self.field
                ),
            )),
        }
    }
}

/// `top_k(n, measure)` of the aggregate `name` whose measures are `names`: `n` and the
/// index of the measure.
fn top_k(name: &str, text: &str, names: &[String]) -> Result<(usize, usize), String> {
    let bad_top = || {
        bad(
            name,
            format!(
                "measures: {text:?}: give top_k(n, measure) with n from 1 to 10000 and a measure of the list"
            ),
        )
    };
    let (_, args) = call(text).ok_or_else(bad_top)?;
    let (n, by) = args.split_once(',').ok_or_else(bad_top)?;
    let n: usize = n.trim().parse().map_err(|_| bad_top())?;
    let by = by.trim();
    let at = names
        .iter()
        .position(|m| m.trim() == by)
        .ok_or_else(bad_top)?;
    if !(1..=10_000).contains(&n) {
        return Err(bad_top());
    }
    Ok((n, at))
}

impl Measure {
    /// A measure of the aggregate `name`: `count`, `sum(path)`, `min(path)`, `max(path)`
    /// or `count_distinct(path)`.
    fn parse(name: &str, m: &str) -> Result<Self, String> {
        let path = |p: &str| Path::parse(p).map_err(|e| bad(name, format!("measures: {e}")));
        match (m.trim(), call(m)) {
            ("count", _) => Ok(Measure::Count),
            (_, Some(("sum", p))) => Ok(Measure::Sum(path(p)?)),
            (_, Some(("min", p))) => Ok(Measure::Min(path(p)?)),
            (_, Some(("max", p))) => Ok(Measure::Max(path(p)?)),
            (_, Some(("count_distinct", p))) => Ok(Measure::CountDistinct(path(p)?)),
            _ => Err(bad(
                name,
                format!(
                    "measures: {m:?} is not count, sum(field), min(field), max(field), count_distinct(field) or top_k(n, measure)"
                ),
            )),
        }
    }
}

/// `sum(path)` and the like: the function's name and its argument.
fn call(text: &str) -> Option<(&str, &str)> {
    let (f, rest) = text.split_once('(')?;
    Some((f.trim(), rest.strip_suffix(')')?.trim()))
}

impl Declaration {
    /// The declaration checked.
    ///
    /// # Errors
    /// One line naming the aggregate and what is wrong with it.
    pub fn compile(&self) -> Result<Aggregate, String> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(name, "name: letters, digits, - and _ only"));
        }
        if crate::store::Aggregate::parse(name).is_some() {
            return Err(bad(name, "name: a built-in aggregate has it"));
        }
        let stream = match self.stream.as_str() {
            "events" => crate::stream::Stream::Events,
            "clicks" => crate::stream::Stream::Clicks,
            other => {
                return Err(bad(
                    name,
                    format!("stream {other:?}: declared aggregates read \"events\" or \"clicks\""),
                ));
            }
        };
        if stream == crate::stream::Stream::Clicks && self.types.is_some() {
            return Err(bad(
                name,
                "types: clicks have no event types (filter on a field with `where`)",
            ));
        }
        let types = self
            .types
            .as_ref()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        crate::event::EventType::parse(t)
                            .ok_or_else(|| bad(name, format!("types: unknown event type {t:?}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let conditions = self
            .conditions
            .iter()
            .map(|c| c.compile(name))
            .collect::<Result<_, _>>()?;
        let keys = self
            .group_by
            .iter()
            .map(|k| match k.as_str() {
                "hour_of_day()" => Ok(Key::HourOfDay),
                "day_of_week()" => Ok(Key::DayOfWeek),
                _ => Path::parse(k)
                    .map(Key::Field)
                    .map_err(|e| bad(name, format!("group-by: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        let (tops, measure_names): (Vec<&String>, Vec<&String>) = self
            .measures
            .iter()
            .partition(|m| call(m).is_some_and(|(f, _)| f == "top_k"));
        if measure_names.is_empty() {
            return Err(bad(name, "measures: none given (count, sum(field), …)"));
        }
        let measures = measure_names
            .iter()
            .map(|m| Measure::parse(name, m))
            .collect::<Result<_, _>>()?;
        let measure_names: Vec<String> = measure_names.into_iter().cloned().collect();
        let top = match tops.as_slice() {
            [] => None,
            [t] => Some(top_k(name, t, &measure_names)?),
            _ => return Err(bad(name, "measures: top_k given more than once")),
        };
        if self.distinct_bound == 0 || self.distinct_bound > 1_000_000 {
            return Err(bad(
                name,
                format!(
                    "distinct-bound: {} is not between 1 and 1000000",
                    self.distinct_bound
                ),
            ));
        }
        if self.sizes.is_empty() {
            return Err(bad(name, "sizes: none given (10s, 1m, 1h, …)"));
        }
        let mut sizes_ms = Vec::new();
        for text in &self.sizes {
            let s = humantime::parse_duration(text)
                .map_err(|e| bad(name, format!("sizes: {text:?}: {e}")))?;
            if s.as_millis() < 1000 || s.as_millis() % 1000 != 0 {
                return Err(bad(
                    name,
                    format!("sizes: {text:?} is not a whole number of seconds, 1s or more"),
                ));
            }
            sizes_ms.push(i64::try_from(s.as_millis()).map_err(|_| bad(name, "sizes: too large"))?);
        }
        sizes_ms.sort_unstable();
        sizes_ms.dedup();
        // The same declaration written differently (sizes as `60s` or `1m`) has one text.
        let mut normal = self.clone();
        normal.sizes = sizes_ms
            .iter()
            .map(|&ms| {
                humantime::format_duration(Duration::from_millis(ms.unsigned_abs())).to_string()
            })
            .collect();
        let canonical = serde_json::to_string(&normal).expect("a declaration serialises");
        Ok(Aggregate {
            name: name.clone(),
            stream,
            types,
            conditions,
            keys,
            key_names: self.group_by.clone(),
            measures,
            measure_names,
            top,
            distinct_bound: self.distinct_bound,
            sizes_ms,
            canonical,
        })
    }
}

impl Plan {
    /// Every declaration checked, names unique.
    ///
    /// # Errors
    /// The first declaration that is wrong, in one line naming it and the field.
    pub fn compile(declarations: &[Declaration]) -> Result<Self, String> {
        if let Some(d) = declarations.get(MAX_AGGREGATES) {
            return Err(bad(
                &d.name,
                format!("at most {MAX_AGGREGATES} aggregates may be declared"),
            ));
        }
        let mut by_name = BTreeMap::new();
        for d in declarations {
            let a = d.compile()?;
            if by_name.insert(a.name.clone(), a).is_some() {
                return Err(bad(&d.name, "name: declared twice"));
            }
        }
        Ok(Self::numbered(by_name.into_values().collect(), Vec::new()))
    }

    /// `aggregates` with their paths numbered after the `first` ones (ids 0, 1, …).
    fn numbered(mut aggregates: Vec<Aggregate>, first: Vec<Vec<String>>) -> Self {
        let mut parts = first;
        for a in &mut aggregates {
            for p in a.paths_mut() {
                p.id = parts.iter().position(|q| *q == p.parts).unwrap_or_else(|| {
                    parts.push(p.parts.clone());
                    parts.len() - 1
                });
            }
        }
        Self {
            aggregates,
            paths: Paths::new(&parts),
        }
    }

    /// The aggregates declared on `stream`, their paths numbered after `first` (a click's
    /// time and id fields: one walk takes out everything a record is read for).
    #[must_use]
    pub fn only(&self, stream: crate::stream::Stream, first: &[&str]) -> Self {
        let first = first
            .iter()
            .map(|p| p.split('.').map(str::to_string).collect())
            .collect();
        let aggregates = self
            .aggregates
            .iter()
            .filter(|a| a.stream == stream)
            .cloned()
            .collect();
        Self::numbered(aggregates, first)
    }

    /// The aggregate named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Aggregate> {
        self.aggregates.iter().find(|a| a.name == name)
    }

    /// What `--dry-run` says of going from `self` to `new`: names added, changed and
    /// dropped, each in name order.
    #[must_use]
    pub fn changes(&self, new: &Plan) -> (Vec<String>, Vec<String>, Vec<String>) {
        let old: BTreeMap<&str, &str> = self
            .aggregates
            .iter()
            .map(|a| (a.name.as_str(), a.canonical.as_str()))
            .collect();
        let now: BTreeMap<&str, &str> = new
            .aggregates
            .iter()
            .map(|a| (a.name.as_str(), a.canonical.as_str()))
            .collect();
        let names = |f: &dyn Fn(&str, &str) -> bool, from: &BTreeMap<&str, &str>| {
            from.iter()
                .filter(|(n, c)| f(n, c))
                .map(|(n, _)| (*n).to_string())
                .collect()
        };
        (
            names(&|n, _| !old.contains_key(n), &now),
            names(&|n, c| old.get(n).is_some_and(|o| *o != c), &now),
            names(&|n, _| !now.contains_key(n), &old),
        )
    }
}

/// One group's measures: in the [`Aggregate`]'s order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Row {
    /// Events counted in the group.
    pub events: u64,
    /// Per measure: `count` the events, `sum` the total in hundredths, `min`/`max` the
    /// extreme in hundredths (none: no value yet).
    pub values: Vec<Option<i128>>,
    /// Values left out of a `sum`, `min`, `max` or `count_distinct` (missing, not a
    /// number, more than two decimals), over all of them.
    pub skipped: u64,
    /// The distinct values of each `count_distinct` measure, in order, while the window is
    /// open (a final row holds their counts in `values`).
    #[serde(skip)]
    distinct: Vec<Distinct>,
}

impl Row {
    fn new(measures: &[Measure]) -> Self {
        Self {
            events: 0,
            values: vec![None; measures.len()],
            skipped: 0,
            distinct: measures
                .iter()
                .filter(|m| matches!(m, Measure::CountDistinct(_)))
                .map(|_| Distinct::default())
                .collect(),
        }
    }

    /// Adds `o`'s measures in (`agg`'s measures say how each combines).
    fn merge(&mut self, o: &Row, agg: &Aggregate) {
        self.events += o.events;
        self.skipped += o.skipped;
        for ((x, y), m) in self.values.iter_mut().zip(&o.values).zip(&agg.measures) {
            *x = combine(*x, *y, m);
        }
        for (d, e) in self.distinct.iter_mut().zip(&o.distinct) {
            d.merge(e, agg.distinct_bound);
        }
    }

    /// The final row: each `count_distinct`'s count in its value.
    fn finished(&self, measures: &[Measure]) -> Row {
        let mut counts = self.distinct.iter().map(Distinct::count);
        Row {
            events: self.events,
            values: (self.values.iter().zip(measures))
                .map(|(v, m)| match m {
                    Measure::CountDistinct(_) => counts.next().map(i128::from),
                    _ => *v,
                })
                .collect(),
            skipped: self.skipped,
            distinct: Vec::new(),
        }
    }
}

fn combine(x: Option<i128>, y: Option<i128>, m: &Measure) -> Option<i128> {
    match (x, y) {
        (Some(a), Some(b)) => Some(match m {
            Measure::Count | Measure::Sum(_) | Measure::CountDistinct(_) => a + b,
            Measure::Min(_) => a.min(b),
            Measure::Max(_) => a.max(b),
        }),
        (a, b) => a.or(b),
    }
}

/// The text of the derived keys' values (hours 0–23, days 1–7), without formatting each.
const NUMBERS: [&str; 24] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23",
];

/// The key part of an extracted value.
fn key_part(raw: Option<&[u8]>) -> Cow<'_, [u8]> {
    match raw {
        None => Cow::Borrowed(b"null"),
        Some(raw) => string_text(raw).unwrap_or(Cow::Borrowed(raw)),
    }
}

/// A key as a window keeps it: its parts, each after its length.
fn encode_key<P: AsRef<[u8]>>(parts: impl IntoIterator<Item = P>) -> Vec<u8> {
    let mut key = Vec::new();
    for part in parts {
        let part = part.as_ref();
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        key.extend_from_slice(&len.to_le_bytes());
        key.extend_from_slice(&part[..len as usize]);
    }
    key
}

/// The parts of a key [`encode_key`] wrote.
fn encoded_parts(mut key: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = key.split_first_chunk::<4>()?;
        let (part, rest) = rest.split_at((u32::from_le_bytes(*len) as usize).min(rest.len()));
        key = rest;
        Some(part)
    })
}

/// Whether the kept `key` is the one of `parts`.
fn key_is<P: AsRef<[u8]>>(key: &[u8], parts: impl IntoIterator<Item = P>) -> bool {
    let mut kept = encoded_parts(key);
    parts.into_iter().all(|p| kept.next() == Some(p.as_ref())) && kept.next().is_none()
}

/// The parts of a key, as text.
fn key_parts(key: &[u8]) -> Vec<String> {
    encoded_parts(key)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// The ISO day of the week (1 = Monday) of `t_ms` in `cal`'s zone.
fn day_of_week(cal: &Calendar, t_ms: i64) -> u32 {
    let (mut day, today) = (cal.start(Unit::Week, t_ms), cal.start(Unit::Day, t_ms));
    let mut n = 1;
    while day < today {
        day = cal.end(Unit::Day, day);
        n += 1;
    }
    n
}

/// A value in hundredths as JSON: an integer when whole, else a number with its two
/// decimals (exact as text below 2^53 hundredths; a string beyond, never rounded).
fn hundredths_json(h: i128) -> Value {
    if h % 100 == 0
        && let Ok(n) = i64::try_from(h / 100)
    {
        return n.into();
    }
    let text = format!(
        "{}{}.{:02}",
        if h < 0 { "-" } else { "" },
        (h / 100).abs(),
        (h % 100).abs()
    );
    if h.unsigned_abs() < 1 << 53 {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    } else {
        Value::String(text)
    }
}

impl Aggregate {
    /// A row as JSON: `key` (each group-by key's part by its name), `events`, each
    /// measure by its text as declared (`count`, `sum(price)`; `null` when no event had a
    /// value for it), and `skipped`.
    #[must_use]
    pub fn row_json(&self, key: &[String], row: &Row) -> serde_json::Map<String, Value> {
        let mut o = serde_json::Map::new();
        let parts = self.key_names.iter().zip(key);
        o.insert(
            "key".into(),
            Value::Object(parts.map(|(n, v)| (n.clone(), v.clone().into())).collect()),
        );
        o.insert("events".into(), row.events.into());
        for ((name, m), v) in self
            .measure_names
            .iter()
            .zip(&self.measures)
            .zip(&row.values)
        {
            let v = match (m, v) {
                (_, None) => Value::Null,
                (Measure::Count | Measure::CountDistinct(_), Some(n)) => {
                    u64::try_from(*n).map_or(Value::Null, Value::from)
                }
                (_, Some(h)) => hundredths_json(*h),
            };
            o.insert(name.clone(), v);
        }
        o.insert("skipped".into(), row.skipped.into());
        o
    }

    /// Whether its rows over many windows add up to the rows of their whole range: `count`,
    /// `sum`, `min` and `max` do; a final window keeps a `count_distinct`'s count, not its
    /// values, and a `top_k` window only its first groups.
    ///
    /// # Errors
    /// The measure that does not, in one line.
    pub fn mergeable(&self) -> Result<(), String> {
        if let Some(m) = self
            .measures
            .iter()
            .zip(&self.measure_names)
            .find(|(m, _)| matches!(m, Measure::CountDistinct(_)))
            .map(|(_, n)| n)
        {
            return Err(format!(
                "aggregate {:?}: {m} does not add up across windows (a window keeps the count, not the values): ask for its windows",
                self.name
            ));
        }
        if self.top.is_some() {
            return Err(format!(
                "aggregate {:?}: top_k keeps a window's first groups only, so a range's total would miss the others: ask for its windows",
                self.name
            ));
        }
        Ok(())
    }

    /// The window size its hourly rollups are added up from: its largest size that divides
    /// an hour, when its measures add up across windows ([`Aggregate::mergeable`]); none
    /// keeps no rollups (its range totals read windows).
    #[must_use]
    pub fn rollup_size(&self) -> Option<i64> {
        self.mergeable().ok()?;
        let hour = crate::rollup::HOUR_MS;
        self.sizes_ms.iter().rev().copied().find(|&s| hour % s == 0)
    }

    /// The largest of its sizes that `from` and `to` both fall on (window starts are
    /// multiples of the size since the epoch).
    #[must_use]
    pub fn tiling_size(&self, from: i64, to: i64) -> Option<i64> {
        self.sizes_ms
            .iter()
            .rev()
            .copied()
            .find(|&s| from.rem_euclid(s) == 0 && to.rem_euclid(s) == 0)
    }

    /// The rows of `windows` (of one size, not overlapping) added up by key: a range's
    /// rows, exact when [`Aggregate::mergeable`].
    #[must_use]
    pub fn total<'w>(&self, windows: impl IntoIterator<Item = &'w Rows>) -> Rows {
        let mut by_key: BTreeMap<&[String], Row> = BTreeMap::new();
        for rows in windows {
            for (key, row) in rows {
                by_key
                    .entry(key.as_slice())
                    .or_insert_with(|| Row::new(&self.measures))
                    .merge(row, self);
            }
        }
        by_key
            .into_iter()
            .map(|(k, r)| (k.to_vec(), r.finished(&self.measures)))
            .collect()
    }

    /// Every path it reads, to be numbered by the plan.
    fn paths_mut(&mut self) -> impl Iterator<Item = &mut Path> {
        let conditions = self.conditions.iter_mut().map(|(p, _)| p);
        let keys = self.keys.iter_mut().filter_map(|k| match k {
            Key::Field(p) => Some(p),
            _ => None,
        });
        let measures = self.measures.iter_mut().filter_map(|m| match m {
            Measure::Count => None,
            Measure::Sum(p) | Measure::Min(p) | Measure::Max(p) | Measure::CountDistinct(p) => {
                Some(p)
            }
        });
        conditions.chain(keys).chain(measures)
    }

    /// Whether a record of type `ty` (a click has none) whose paths have `values` is
    /// counted.
    #[must_use]
    pub fn admits(&self, ty: Option<crate::event::EventType>, values: &[Option<&[u8]>]) -> bool {
        self.admits_reading(ty, values, &mut Numbers::default())
    }

    /// [`Aggregate::admits`], the numbers its comparisons read kept in `numbers`.
    pub(crate) fn admits_reading(
        &self,
        ty: Option<crate::event::EventType>,
        values: &[Option<&[u8]>],
        numbers: &mut Numbers,
    ) -> bool {
        self.types
            .as_ref()
            .is_none_or(|ts| ty.is_some_and(|ty| ts.contains(&ty)))
            && self.conditions.iter().all(|(p, t)| {
                let x = p.get(values);
                match t {
                    Test::Exists(want) => x.is_some() == *want,
                    Test::Eq(want) => x.is_some_and(|x| equals(x, want)),
                    Test::In(set) => x.is_some_and(|x| set.iter().any(|w| equals(x, w))),
                    Test::Cmp(pass, n) => numbers
                        .read(p, values)
                        .is_some_and(|x| pass.contains(&x.cmp(n))),
                }
            })
    }

    /// Reads the numbers its `sum`, `min` and `max` measures fold into `numbers`.
    pub(crate) fn read_measures(&self, values: &[Option<&[u8]>], numbers: &mut Numbers) {
        for m in &self.measures {
            if let Measure::Sum(p) | Measure::Min(p) | Measure::Max(p) = m {
                numbers.read(p, values);
            }
        }
    }

    /// The group of an event at `t_ms` whose paths have `values`, part by part: a field's
    /// string text (its JSON text as written when not a string, `null` when absent), a
    /// derived key's number. Each pass over it reads the parts again (nothing is kept).
    fn group_of<'s, 'v: 's>(
        &'s self,
        cal: &'s Calendar,
        t_ms: i64,
        values: &'s [Option<&'v [u8]>],
    ) -> impl Iterator<Item = Cow<'v, [u8]>> + Clone + 's {
        self.keys.iter().map(move |k| match k {
            Key::Field(p) => key_part(p.get(values)),
            Key::HourOfDay => Cow::Borrowed(NUMBERS[cal.hour_of_day(t_ms)].as_bytes()),
            Key::DayOfWeek => Cow::Borrowed(NUMBERS[day_of_week(cal, t_ms) as usize].as_bytes()),
        })
    }

    /// Adds one event (its paths' `values`, the numbers read of them) into its group's row.
    fn fold(&self, r: &mut Row, values: &[Option<&[u8]>], numbers: &Numbers) {
        r.events += 1;
        let mut distinct = r.distinct.iter_mut();
        for (x, m) in r.values.iter_mut().zip(&self.measures) {
            let n = match m {
                Measure::Count => Some(1),
                Measure::Sum(p) | Measure::Min(p) | Measure::Max(p) => {
                    let n = numbers.get(p, values);
                    r.skipped += u64::from(n.is_none());
                    n
                }
                Measure::CountDistinct(p) => {
                    let d = distinct.next().expect("a set per count_distinct");
                    match p.get(values) {
                        // As SQL's COUNT(DISTINCT …), a null is no value.
                        Some(b"null") => {}
                        Some(raw) => {
                            let text = string_text(raw).unwrap_or(Cow::Borrowed(raw));
                            d.add(distinct::hash(&text), self.distinct_bound);
                        }
                        None => r.skipped += 1,
                    }
                    continue;
                }
            };
            *x = combine(*x, n, m);
        }
    }

    /// Ranks `rows` by the `top_k` measure (greatest first, a group without a value
    /// last, equal ones by key) and keeps the first `n`; without `top_k`, as they are.
    fn rank(&self, rows: &mut Rows) {
        let Some((n, at)) = self.top else {
            return;
        };
        let by = |r: &Row| std::cmp::Reverse(r.values[at].map_or((0, 0), |v| (1, v)));
        rows.sort_unstable_by(|a, b| by(&a.1).cmp(&by(&b.1)).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(n);
    }
}

/// One window of one declared aggregate as a worker publishes it: each group's key, row and
/// distinct values (a [`Row`] is stored without them), by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowPartial {
    rows: Vec<(Vec<u8>, Row, Vec<Distinct>)>,
}

impl WindowPartial {
    /// Groups it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds no group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One window of one declared aggregate: its groups' rows, by key ([`encode_key`]).
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Looked up by the hash of the key's parts ([`hash_key`]): an event's key is found
    /// without being written out, and only a new group's is kept.
    rows: hashbrown::HashTable<(Vec<u8>, Row)>,
    state: ahash::RandomState,
}

/// The hash of a key's parts (each after its length, so no two keys' parts run together).
fn hash_key<P: AsRef<[u8]>>(state: &ahash::RandomState, parts: impl IntoIterator<Item = P>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = state.build_hasher();
    for part in parts {
        let part = part.as_ref();
        h.write_usize(part.len());
        h.write(part);
    }
    h.finish()
}

impl Window {
    /// Counts an event (already admitted by `agg`) at `t_ms` whose paths have `values`.
    pub fn add(&mut self, agg: &Aggregate, cal: &Calendar, t_ms: i64, values: &[Option<&[u8]>]) {
        self.add_read(agg, cal, (t_ms, values), &Numbers::default());
    }

    /// [`Window::add`] with the numbers already read of the event's values.
    pub(crate) fn add_read(
        &mut self,
        agg: &Aggregate,
        cal: &Calendar,
        (t_ms, values): (i64, &[Option<&[u8]>]),
        numbers: &Numbers,
    ) {
        let parts = agg.group_of(cal, t_ms, values);
        let state = &self.state;
        let hash = hash_key(state, parts.clone());
        let entry = self.rows.entry(
            hash,
            |(k, _)| key_is(k, parts.clone()),
            |(k, _)| hash_key(state, encoded_parts(k)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                agg.fold(&mut e.get_mut().1, values, numbers)
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let mut row = Row::new(&agg.measures);
                agg.fold(&mut row, values, numbers);
                e.insert((encode_key(parts), row));
            }
        }
    }

    /// The row of the group kept as `key`, a new one if none.
    fn row_mut(&mut self, agg: &Aggregate, key: &[u8]) -> &mut Row {
        let state = &self.state;
        let entry = self.rows.entry(
            hash_key(state, encoded_parts(key)),
            |(k, _)| k == key,
            |(k, _)| hash_key(state, encoded_parts(k)),
        );
        &mut (entry
            .or_insert_with(|| (key.to_vec(), Row::new(&agg.measures)))
            .into_mut())
        .1
    }

    /// Groups it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds no group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Its full sums as a worker publishes them: every group with its distinct values, by
    /// key.
    #[must_use]
    pub fn to_partial(&self) -> WindowPartial {
        let mut rows: Vec<_> = self
            .rows
            .iter()
            .map(|(k, r)| {
                let row = Row {
                    events: r.events,
                    values: r.values.clone(),
                    skipped: r.skipped,
                    distinct: Vec::new(),
                };
                (k.clone(), row, r.distinct.clone())
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        WindowPartial { rows }
    }

    /// Adds a published window's rows in (a merger's: another partition's part).
    pub fn absorb(&mut self, agg: &Aggregate, p: &WindowPartial) {
        for (k, row, distinct) in &p.rows {
            let theirs = Row {
                distinct: distinct.clone(),
                ..row.clone()
            };
            self.row_mut(agg, k).merge(&theirs, agg);
        }
    }

    /// The rows of `agg`'s window, by key (with `top_k`, in rank order, the first `n`).
    #[must_use]
    pub fn finish(&self, agg: &Aggregate) -> Rows {
        let mut rows: Vec<_> = self
            .rows
            .iter()
            .map(|(k, r)| (key_parts(k), r.finished(&agg.measures)))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        agg.rank(&mut rows);
        rows
    }
}

#[cfg(test)]
mod tests;
