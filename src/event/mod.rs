//! Events: the schema(s) on the wire, decoding and upcasting into one internal type.
//!
//! The decoder borrows from the record bytes: strings without escapes are not copied.

mod decode;
pub(crate) use decode::check_size;
mod invalid;
pub mod money;
pub(crate) mod object;
pub(crate) mod scan;
pub mod session;
pub mod time;

pub use decode::{
    Join, Rules, Schemas, decode, decode_capturing, decode_joined, decode_serde, decode_with,
};
pub use invalid::{DecodeError, InvalidKind};

use std::borrow::Cow;

/// Schema versions this build decodes; anything else is invalid input.
pub const KNOWN_SCHEMAS: &[u64] = &[1, 2];

/// The four kinds of event a shop emits, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A search; carries the query.
    Search = 0,
    /// A product page view.
    View = 1,
    /// A product added to the cart.
    AddCart = 2,
    /// A purchase of `quantity` units at `price`.
    Purchase = 3,
}

impl EventType {
    /// Every type, in funnel order (the index is the discriminant).
    pub const ALL: [EventType; 4] = [Self::Search, Self::View, Self::AddCart, Self::Purchase];

    /// The wire name (`add_cart`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Search => "search",
            Self::View => "view",
            Self::AddCart => "add_cart",
            Self::Purchase => "purchase",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "search" => Self::Search,
            "view" => Self::View,
            "add_cart" => Self::AddCart,
            "purchase" => Self::Purchase,
            _ => return None,
        })
    }
}

/// One decoded event, whatever schema version it arrived in. Borrows from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Producer-assigned id; duplicates share it.
    pub event_id: Cow<'a, str>,
    /// What happened.
    pub event_type: EventType,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
    /// Product (empty for searches).
    pub product_id: Cow<'a, str>,
    /// Product category (empty for searches).
    pub category: Cow<'a, str>,
    /// Unit price in minor units (0 for searches).
    pub price_minor: u64,
    /// Units (1 for views, 0 for searches).
    pub quantity: u32,
    /// The raw search query (empty unless a search).
    pub query: Cow<'a, str>,
}

/// Zero-width characters a query may carry invisibly (zero-width space, non-joiner,
/// joiner, word joiner, byte-order mark): dropped by [`normalize_query`].
#[must_use]
pub fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// Whether [`normalize_query`] makes `query` empty (only whitespace and zero-width
/// characters): such a search is dead-lettered (`empty_query`).
#[must_use]
pub fn query_is_blank(query: &str) -> bool {
    query.chars().all(|c| c.is_whitespace() || is_zero_width(c))
}

/// Normalises a search query into `out`: lower-cased, Unicode NFC (composed and decomposed
/// spellings of one query are one key), zero-width characters dropped, trimmed, inner
/// whitespace collapsed to single spaces. The one normaliser of `top_searches` (the window
/// core and the tests' batch model).
pub fn normalize_query(query: &str, out: &mut String) {
    use unicode_normalization::UnicodeNormalization;
    out.clear();
    if query.is_ascii() {
        for word in query.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        }
        return;
    }
    let folded: String = query
        .chars()
        .filter(|&c| !is_zero_width(c))
        .flat_map(char::to_lowercase)
        .nfc()
        .collect();
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_queries() {
        let mut s = String::new();
        normalize_query("  Nike   Running\tShoes 42 ", &mut s);
        assert_eq!(s, "nike running shoes 42");
        normalize_query("ÉTÉ  Robe", &mut s);
        assert_eq!(s, "été robe");
        normalize_query("   ", &mut s);
        assert_eq!(s, "");
    }

    #[test]
    fn composed_and_decomposed_spellings_are_one_query() {
        let (mut a, mut b) = (String::new(), String::new());
        normalize_query("Caf\u{e9} Cr\u{e8}me", &mut a);
        normalize_query("CAFE\u{301} cre\u{300}me", &mut b);
        assert_eq!(a, "caf\u{e9} cr\u{e8}me");
        assert_eq!(a, b);
        normalize_query("\u{FEFF}red\u{200B} \u{2060} shoes\u{200D}", &mut a);
        assert_eq!(a, "red shoes");
        for blank in ["", "  \t", "\u{200B}\u{FEFF}", " \u{2060} \u{200C} "] {
            assert!(query_is_blank(blank), "{blank:?}");
            normalize_query(blank, &mut a);
            assert_eq!(a, "", "{blank:?}");
        }
        assert!(!query_is_blank(" a\u{200B}"));
    }
}
