//! A single-pass JSON scanner for one event record: it validates the JSON (as
//! `serde_json` would: syntax, escapes, UTF-8 of the strings it reads, nesting ≤ 128),
//! reads only the fields kappa uses — borrowing strings without escapes — and skips the
//! rest without building anything. About twice as fast as `serde_json`'s borrowed
//! deserializer on the generator's records, which was 59 % of the pipeline's time.
//!
//! Classification, matching `serde_json` + `#[derive(Deserialize)]` on the same struct:
//! syntax errors (including trailing characters and too deep nesting) → `NotJson`; a field
//! of the wrong JSON type, a number that does not fit, or a top level that is valid JSON
//! but not an object → `BadType`; a field given twice → `BadValue`. `tests` (and the `decode` fuzz target)
//! compare it with the `serde_json` decoder it replaced.

use std::borrow::Cow;

use super::invalid::{DecodeError, InvalidKind};
use crate::declared::Values;
use crate::declared::extract::Node;

/// The raw text of `price`: the inside of a string (escapes not decoded), a number, or any
/// other JSON value (a type error later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawPrice<'a> {
    /// `"59.90"` → `59.90`.
    Str(&'a str),
    /// `59.9`.
    Num(&'a str),
    /// Anything else (`true`, `{}`, …), as written.
    Other(&'a str),
}

/// The fields any known schema version may carry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub schema: Option<u64>,
    pub event_id: Option<Cow<'a, str>>,
    pub event_type: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub product_id: Option<Cow<'a, str>>,
    pub category: Option<Cow<'a, str>>,
    pub price: Option<RawPrice<'a>>,
    pub quantity: Option<i64>,
    pub ts: Option<Cow<'a, str>>,
    pub query: Option<Cow<'a, str>>,
    pub unit_price_minor: Option<i64>,
    pub currency: Option<Cow<'a, str>>,
    pub qty: Option<i64>,
}

const MAX_DEPTH: usize = 128;

fn syntax(msg: &str, at: usize) -> DecodeError {
    DecodeError::new(InvalidKind::NotJson, format!("{msg} at byte {at}"))
}

fn bad_type(field: &str, what: &str) -> DecodeError {
    DecodeError::new(
        InvalidKind::BadType,
        format!("invalid type for `{field}`: {what}"),
    )
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Set by [`Scanner::raw_string`] when a byte >= 0x80 may be in the string (false: the
    /// string is ASCII, so valid UTF-8 without a check).
    high: bool,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace and `c`, or fails naming `what`. Inlined for the common case (no
    /// whitespace before `c`: a compact record); the rest is [`Scanner::expect_after_ws`].
    #[inline]
    fn expect(&mut self, c: u8, what: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(c) {
            self.i += 1;
            return Ok(());
        }
        self.expect_after_ws(c, what)
    }

    #[cold]
    #[inline(never)]
    fn expect_after_ws(&mut self, c: u8, what: &str) -> Result<(), DecodeError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(syntax(&format!("EOF while expecting {what}"), self.i))
        } else {
            Err(syntax(&format!("expected {what}"), self.i))
        }
    }

    /// After the opening quote: the raw bytes up to the closing quote and whether they hold
    /// escapes; validates escapes and control characters, not UTF-8.
    #[inline]
    fn raw_string(&mut self) -> Result<(&'a [u8], bool), DecodeError> {
        let start = self.i;
        self.high = false;
        // Inlined for the common case: no escape, the closing quote found eight bytes at a
        // time; the rest is [`Scanner::raw_string_from`].
        self.skip_plain();
        if self.peek() == Some(b'"') {
            let raw = &self.b[start..self.i];
            self.i += 1;
            return Ok((raw, false));
        }
        self.raw_string_from(start)
    }

    /// [`Scanner::raw_string`] from where its fast path stopped (`start`: after the quote).
    #[inline(never)]
    fn raw_string_from(&mut self, start: usize) -> Result<(&'a [u8], bool), DecodeError> {
        let mut escaped = false;
        loop {
            self.skip_plain();
            let Some(&c) = self.b.get(self.i) else {
                return Err(syntax("EOF while parsing a string", self.i));
            };
            match c {
                b'"' => {
                    let raw = &self.b[start..self.i];
                    self.i += 1;
                    return Ok((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(syntax("invalid \\u escape", self.i));
                            }
                            self.i += 5;
                        }
                        Some(_) => return Err(syntax("invalid escape", self.i)),
                        None => return Err(syntax("EOF while parsing a string", self.i)),
                    }
                }
                0..=0x1f => return Err(syntax("control character in a string", self.i)),
                c => {
                    self.high |= c >= 0x80;
                    self.i += 1;
                }
            }
        }
    }

    /// Skips string bytes that need no attention (not `"`, `\\` or a control character),
    /// eight at a time.
    #[inline]
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            // A byte is "interesting" when it is '"', '\\' or < 0x20 (bytes >= 0x80 are not).
            let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
            let quote = has_zero(v ^ (ONES * u64::from(b'"')));
            let backslash = has_zero(v ^ (ONES * u64::from(b'\\')));
            let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
            let hit = quote | backslash | control;
            // Conservative: bytes past the hit count too (then the UTF-8 check runs).
            self.high |= v & HIGHS != 0;
            if hit != 0 {
                self.i += (hit.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
    }

    /// The text of the string [`Scanner::raw_string`] just returned: checked as UTF-8 only
    /// when it is not all ASCII (UTF-8 checks were a tenth of the decoding time).
    #[inline]
    fn text(&self, raw: &'a [u8]) -> Option<&'a str> {
        if self.high {
            std::str::from_utf8(raw).ok()
        } else {
            debug_assert!(raw.is_ascii());
            // SAFETY: no byte of `raw` is >= 0x80 (`high` is false), and ASCII is UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(raw) })
        }
    }

    /// A string value that is read: UTF-8 checked, escapes decoded (borrowed when none).
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let at = self.i;
        let (raw, escaped) = self.raw_string()?;
        let text = self
            .text(raw)
            .ok_or_else(|| syntax("invalid UTF-8 in a string", at))?;
        if escaped {
            unescape(text)
                .map(Cow::Owned)
                .ok_or_else(|| syntax("invalid escape in a string", at))
        } else {
            Ok(Cow::Borrowed(text))
        }
    }

    /// A JSON number's text (grammar checked).
    fn number(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(syntax("invalid number", self.i));
                }
            }
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return Err(syntax("invalid number", self.i)),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(syntax("invalid number", self.i));
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(syntax("invalid number", self.i));
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        // ASCII only: the slice is valid UTF-8.
        Ok(std::str::from_utf8(&self.b[start..self.i]).unwrap_or_default())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), DecodeError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(syntax("expected a value", self.i))
        }
    }

    /// Skips any value (validating it); returns what kind it was.
    fn skip(&mut self, depth: usize) -> Result<Kind, DecodeError> {
        self.ws();
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.raw_string()?;
                Ok(Kind::Str)
            }
            // Keys of skipped objects are skipped like strings (serde_json does not check
            // their UTF-8 either).
            Some(b'{') => self.members(depth, |s, _, _| s.skip(depth + 1).map(drop)),
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(syntax("recursion limit exceeded", self.i));
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Kind::Other);
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Kind::Other);
                        }
                        _ => return Err(syntax("expected ',' or ']'", self.i)),
                    }
                }
            }
            Some(b't') => self.literal(b"true").map(|()| Kind::Other),
            Some(b'f') => self.literal(b"false").map(|()| Kind::Other),
            Some(b'n') => self.literal(b"null").map(|()| Kind::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| Kind::Num),
            Some(_) => Err(syntax("expected a value", self.i)),
            None => Err(syntax("EOF while parsing a value", self.i)),
        }
    }

    /// Walks the object whose `{` is next (validating it as [`Scanner::skip`] does),
    /// calling `member` with each key's raw bytes (and whether they hold escapes) and the
    /// scanner at its value, which `member` reads.
    #[inline]
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a [u8], bool) -> Result<(), DecodeError>,
    ) -> Result<Kind, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(syntax("recursion limit exceeded", self.i));
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Kind::Other);
        }
        loop {
            self.expect(b'"', "a key")?;
            let (raw, escaped) = self.raw_string()?;
            self.expect(b':', "':'")?;
            member(self, raw, escaped)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Kind::Other);
                }
                _ => return Err(syntax("expected ',' or '}'", self.i)),
            }
        }
    }

    /// A value of the wrong type for `field`: like serde_json, a scalar is read (and must
    /// be valid) before the type error; an object or array is not looked into.
    fn wrong_type(&mut self, field: &str, expected: &str) -> Result<Kind, DecodeError> {
        match self.peek() {
            Some(b'{' | b'[') => Err(bad_type(field, expected)),
            Some(b'"') => {
                self.i += 1;
                self.string()?;
                Err(bad_type(field, expected))
            }
            _ => match self.skip(1)? {
                Kind::Null => Ok(Kind::Null),
                _ => Err(bad_type(field, expected)),
            },
        }
    }

    /// `null` → `None`, a string → its text, anything else → a type error.
    fn opt_string(&mut self, field: &str) -> Result<Option<Cow<'a, str>>, DecodeError> {
        self.ws();
        if self.peek() == Some(b'"') {
            self.i += 1;
            return self.string().map(Some);
        }
        self.wrong_type(field, "expected a string").map(|_| None)
    }

    /// `null` → `None`, an integer that fits → it, anything else → a type error.
    fn opt_int<T: TryFrom<i128>>(&mut self, field: &str) -> Result<Option<T>, DecodeError> {
        self.ws();
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                let text = self.number()?;
                // serde_json reads `-0` as the float -0.0, not as an integer.
                if text.contains(['.', 'e', 'E']) || text == "-0" {
                    return Err(bad_type(
                        field,
                        &format!("floating point `{text}`, expected an integer"),
                    ));
                }
                text.parse::<i128>()
                    .ok()
                    .and_then(|v| T::try_from(v).ok())
                    .map(Some)
                    .ok_or_else(|| bad_type(field, &format!("integer `{text}` out of range")))
            }
            _ => self.wrong_type(field, "expected an integer").map(|_| None),
        }
    }

    fn price(&mut self) -> Result<Option<RawPrice<'a>>, DecodeError> {
        self.ws();
        let start = self.i;
        let kind = self.skip(1)?;
        let text = std::str::from_utf8(&self.b[start..self.i])
            .map_err(|_| syntax("invalid UTF-8", start))?;
        Ok(match kind {
            Kind::Null => None,
            Kind::Str => Some(RawPrice::Str(&text[1..text.len() - 1])),
            Kind::Num => Some(RawPrice::Num(text)),
            Kind::Other => Some(RawPrice::Other(text)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Num,
    Null,
    Other,
}

/// Decodes JSON escapes of a string known to be well-formed except possibly for lone
/// surrogates (→ `None`).
pub(crate) fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
                    let h: String = chars.by_ref().take(4).collect();
                    u32::from_str_radix(&h, 16).ok()
                };
                let hi = hex(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return None;
                } else {
                    hi
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Declared paths (issue 20) whose values a scan takes out as it goes, and where to.
pub(crate) struct Capture<'c, 'a> {
    pub(crate) root: &'c Node,
    pub(crate) out: &'c mut Values<'a>,
}

impl<'a> Scanner<'a> {
    /// Reads a value some declared path goes into (`node`, its key's): an object walked
    /// for the paths below, anything else skipped; validated as [`Scanner::skip`] does.
    fn capture(
        &mut self,
        node: &Node,
        out: &mut Values<'a>,
        depth: usize,
    ) -> Result<Kind, DecodeError> {
        self.ws();
        if self.peek() != Some(b'{') || !node.has_children() {
            return self.skip(depth);
        }
        self.members(depth, |s, raw, escaped| {
            let child = if escaped {
                // A key that is not UTF-8 names no path (and is not an error, as in `skip`).
                let key = std::str::from_utf8(raw).ok().and_then(unescape);
                key.and_then(|k| node.child(k.as_bytes()))
            } else {
                node.child(raw)
            };
            match child {
                Some(c) => s.member(c, out, depth + 1),
                None => s.skip(depth + 1).map(drop),
            }
        })
    }

    /// The value of a key some path goes through (`node`): walked by [`Scanner::capture`],
    /// kept for the paths ending there.
    fn member(
        &mut self,
        node: &Node,
        out: &mut Values<'a>,
        depth: usize,
    ) -> Result<(), DecodeError> {
        node.clear(out);
        self.ws();
        let start = self.i;
        self.capture(node, out, depth)?;
        for &id in &node.leaves {
            out[id] = Some(&self.b[start..self.i]);
        }
        Ok(())
    }
}

/// Scans one record value into [`Fields`].
pub(crate) fn scan(value: &[u8]) -> Result<Fields<'_>, DecodeError> {
    scan_capturing(value, None)
}

/// [`scan`], taking out the values of declared paths as it goes (with `capture`).
pub(crate) fn scan_capturing<'a>(
    value: &'a [u8],
    mut capture: Option<Capture<'_, 'a>>,
) -> Result<Fields<'a>, DecodeError> {
    let mut s = Scanner {
        b: value,
        i: 0,
        high: false,
    };
    let mut f = Fields::default();
    s.ws();
    if s.peek() != Some(b'{') {
        // Another JSON value is a type error once it is read whole (`[[[` unterminated or
        // `42 x` are not JSON at all). It counts as a level of nesting, as the object would.
        s.skip(1)?;
        s.ws();
        if s.i != value.len() {
            return Err(syntax("trailing characters", s.i));
        }
        return Err(DecodeError::new(
            InvalidKind::BadType,
            "invalid type: expected a JSON object",
        ));
    }
    s.i += 1;
    s.ws();
    let mut seen: u16 = 0;
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"', "a key")?;
            let at = s.i;
            let (raw, escaped) = s.raw_string()?;
            let key: Cow<'_, str> = {
                let text = s
                    .text(raw)
                    .ok_or_else(|| syntax("invalid UTF-8 in a key", at))?;
                if escaped {
                    Cow::Owned(unescape(text).ok_or_else(|| syntax("invalid escape in a key", at))?)
                } else {
                    Cow::Borrowed(text)
                }
            };
            s.expect(b':', "':'")?;
            // A key a declared path goes through: its value is kept (and walked) as well.
            let node = capture.as_ref().and_then(|c| c.root.child(key.as_bytes()));
            if let (Some(n), Some(c)) = (node, capture.as_mut()) {
                n.clear(c.out);
                s.ws();
            }
            let start = s.i;
            let bit = match key.as_ref() {
                "schema" => {
                    f.schema = s.opt_int("schema")?;
                    0
                }
                "event_id" => {
                    f.event_id = s.opt_string("event_id")?;
                    1
                }
                "event_type" => {
                    f.event_type = s.opt_string("event_type")?;
                    2
                }
                "user_id" => {
                    f.user_id = s.opt_string("user_id")?;
                    3
                }
                "session_id" => {
                    f.session_id = s.opt_string("session_id")?;
                    4
                }
                "product_id" => {
                    f.product_id = s.opt_string("product_id")?;
                    5
                }
                "category" => {
                    f.category = s.opt_string("category")?;
                    6
                }
                "price" => {
                    f.price = s.price()?;
                    7
                }
                "quantity" => {
                    f.quantity = s.opt_int("quantity")?;
                    8
                }
                "ts" => {
                    f.ts = s.opt_string("ts")?;
                    9
                }
                "query" => {
                    f.query = s.opt_string("query")?;
                    10
                }
                "unit_price_minor" => {
                    f.unit_price_minor = s.opt_int("unit_price_minor")?;
                    11
                }
                "currency" => {
                    f.currency = s.opt_string("currency")?;
                    12
                }
                "qty" => {
                    f.qty = s.opt_int("qty")?;
                    13
                }
                _ => {
                    match (node, capture.as_mut()) {
                        (Some(n), Some(c)) => s.capture(n, c.out, 1)?,
                        _ => s.skip(1)?,
                    };
                    16
                }
            };
            if let (Some(n), Some(c)) = (node, capture.as_mut()) {
                for &id in &n.leaves {
                    c.out[id] = Some(&value[start..s.i]);
                }
            }
            if bit < 16 {
                if seen & (1 << bit) != 0 {
                    return Err(DecodeError::new(
                        InvalidKind::BadValue,
                        format!("duplicate field `{key}`"),
                    ));
                }
                seen |= 1 << bit;
            }
            s.ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                None => return Err(syntax("EOF while parsing an object", s.i)),
                _ => return Err(syntax("expected ',' or '}'", s.i)),
            }
        }
    }
    s.ws();
    if s.i != value.len() {
        return Err(syntax("trailing characters", s.i));
    }
    Ok(f)
}
