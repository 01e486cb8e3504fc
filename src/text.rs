//! Text for people: what the CLI prints in tables and messages comes from input (queries,
//! product ids, dead-letter records and reasons, replay reasons, error messages), so it is
//! made printable first — a raw ESC, OSC or CR would drive the reader's terminal. JSON
//! output is escaped by `serde_json` instead, and stays exact.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal raw: control characters (C0, DEL, C1: ESC, CR,
/// BEL, the 8-bit CSI/OSC…) and the bidirectional overrides and isolates that reorder
/// what is displayed.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character that could drive a terminal escaped as Rust writes it (`\n`,
/// `\r`, `\t`, `\u{1b}`); borrowed when there is none. The one escape of all
/// human-readable output.
#[must_use]
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            printable("café 59.90"),
            Cow::Borrowed("café 59.90")
        ));
        assert_eq!(
            printable("a\u{1b}[31mred\u{1b}]0;title\u{7}\r\nb\t\u{9b}c\u{202e}d"),
            "a\\u{1b}[31mred\\u{1b}]0;title\\u{7}\\r\\nb\\t\\u{9b}c\\u{202e}d"
        );
    }
}
