//! Events: the schema(s) on the wire, decoding and upcasting into one internal type.
//!
//! The decoder borrows from the record bytes: strings without escapes are not copied.

mod decode;
pub mod money;
mod scan;
pub mod time;

pub use decode::{DecodeError, InvalidKind, decode, decode_schemas, decode_serde};

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

/// Normalises a search query into `out`: trimmed, lower-cased, inner whitespace collapsed
/// to single spaces.
pub fn normalize_query(query: &str, out: &mut String) {
    out.clear();
    for word in query.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.is_ascii() {
            out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
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
}
