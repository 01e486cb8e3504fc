//! What a review's text says about delivery, quality, packaging, price and the product
//! overall, and with which sentiment: a keyword dictionary (`dictionaries/review-aspects.toml`,
//! which documents the rules) matched on normalised clauses. No morphological analyser: a
//! Hangul term matches inside a word, so 배송이 counts as 배송.

use serde::Deserialize;

/// What a clause talks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aspect {
    /// Shipping speed and the courier.
    Delivery,
    /// The product itself.
    Quality,
    /// Box and wrapping.
    Packaging,
    /// Price and value for money.
    Price,
    /// A clause that names none of the above.
    Overall,
}

impl Aspect {
    /// Every aspect, in export order.
    pub const ALL: [Self; 5] = [
        Self::Delivery,
        Self::Quality,
        Self::Packaging,
        Self::Price,
        Self::Overall,
    ];

    /// The name exported and configured.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivery => "delivery",
            Self::Quality => "quality",
            Self::Packaging => "packaging",
            Self::Price => "price",
            Self::Overall => "overall",
        }
    }
}

/// How a clause feels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sentiment {
    /// Praise.
    Positive,
    /// Complaint.
    Negative,
    /// Neither ("보통", "okay").
    Neutral,
}

impl Sentiment {
    /// Every sentiment, in export order.
    pub const ALL: [Self; 3] = [Self::Positive, Self::Negative, Self::Neutral];

    /// The name exported.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::Neutral => "neutral",
        }
    }

    /// Which wins between equally long cues: negative, then neutral, then positive.
    fn precedence(self) -> u8 {
        match self {
            Self::Negative => 2,
            Self::Neutral => 1,
            Self::Positive => 0,
        }
    }
}

/// The dictionary file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    aspects: Aspects,
    sentiment: Sentiments,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Aspects {
    delivery: Vec<String>,
    quality: Vec<String>,
    packaging: Vec<String>,
    price: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sentiments {
    positive: Vec<String>,
    negative: Vec<String>,
    neutral: Vec<String>,
}

/// One term, normalised as the text is.
#[derive(Debug, Clone)]
struct Term {
    text: String,
    /// Hangul terms match anywhere; others at the start of a word.
    anywhere: bool,
}

impl Term {
    fn new(raw: &str) -> Self {
        let mut text = String::new();
        crate::event::normalize_query(raw, &mut text);
        let anywhere = text.chars().any(is_hangul);
        Self { text, anywhere }
    }

    /// Whether the term occurs in `clause` (normalised).
    fn in_clause(&self, clause: &str) -> bool {
        clause.match_indices(&self.text).any(|(i, _)| {
            self.anywhere
                || clause[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !c.is_alphanumeric())
        })
    }
}

fn is_hangul(c: char) -> bool {
    matches!(c, '\u{AC00}'..='\u{D7A3}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
}

/// The aspect and sentiment terms.
#[derive(Debug, Clone)]
pub struct Dictionary {
    aspects: Vec<(Aspect, Vec<Term>)>,
    cues: Vec<(Sentiment, Term)>,
}

/// The dictionary kappa ships.
pub const BUILT_IN: &str = include_str!("../../dictionaries/review-aspects.toml");

impl Dictionary {
    /// The dictionary kappa ships (`dictionaries/review-aspects.toml`).
    ///
    /// # Panics
    /// Never: the file is checked by the tests.
    #[must_use]
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("the built-in review dictionary parses")
    }

    /// A dictionary from the TOML text of `dictionaries/review-aspects.toml`'s shape.
    ///
    /// # Errors
    /// Not that shape, or an empty term: the message names it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| format!("review dictionary: {e}"))?;
        let terms = |name: &str, list: &[String]| -> Result<Vec<Term>, String> {
            list.iter()
                .map(|t| {
                    let term = Term::new(t);
                    if term.text.is_empty() {
                        Err(format!("review dictionary: an empty term in {name}"))
                    } else {
                        Ok(term)
                    }
                })
                .collect()
        };
        let a = &f.aspects;
        let aspects = vec![
            (Aspect::Delivery, terms("aspects.delivery", &a.delivery)?),
            (Aspect::Quality, terms("aspects.quality", &a.quality)?),
            (Aspect::Packaging, terms("aspects.packaging", &a.packaging)?),
            (Aspect::Price, terms("aspects.price", &a.price)?),
        ];
        let s = &f.sentiment;
        let mut cues = Vec::new();
        for (sentiment, name, list) in [
            (Sentiment::Positive, "sentiment.positive", &s.positive),
            (Sentiment::Negative, "sentiment.negative", &s.negative),
            (Sentiment::Neutral, "sentiment.neutral", &s.neutral),
        ] {
            cues.extend(terms(name, list)?.into_iter().map(|t| (sentiment, t)));
        }
        Ok(Self { aspects, cues })
    }

    /// Every (aspect, sentiment) the text expresses, each once, sorted.
    #[must_use]
    pub fn classify(&self, text: &str) -> Vec<(Aspect, Sentiment)> {
        use unicode_normalization::UnicodeNormalization;
        // Composed first, so that the connectives are found in decomposed Hangul too.
        let text: String = if text.is_ascii() {
            text.to_string()
        } else {
            text.nfc().collect()
        };
        let mut out = Vec::new();
        let mut clause = String::new();
        for raw in clauses(&text) {
            crate::event::normalize_query(raw, &mut clause);
            let Some(sentiment) = self.sentiment(&clause) else {
                continue;
            };
            let mut named = false;
            for (aspect, terms) in &self.aspects {
                if terms.iter().any(|t| t.in_clause(&clause)) {
                    out.push((*aspect, sentiment));
                    named = true;
                }
            }
            if !named {
                out.push((Aspect::Overall, sentiment));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The sentiment of the longest cue in `clause` (ties: negative, neutral, positive).
    fn sentiment(&self, clause: &str) -> Option<Sentiment> {
        self.cues
            .iter()
            .filter(|(_, t)| t.in_clause(clause))
            .max_by_key(|(s, t)| (t.text.chars().count(), s.precedence()))
            .map(|(s, _)| *s)
    }
}

/// The clauses of `text`: cut at . , ! ? ; ~ and line breaks, before "but", "however" and
/// "although", and after "지만".
fn clauses(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for piece in text.split(['.', ',', '!', '?', ';', '~', '\n', '\r', '。']) {
        let mut rest = piece;
        while let Some(at) = next_break(rest) {
            out.push(&rest[..at]);
            rest = &rest[at..];
        }
        out.push(rest);
    }
    out.retain(|c| !c.trim().is_empty());
    out
}

/// Where the next clause starts inside `s`: at " but ", " however ", " although " (the
/// connective begins the next clause), or just after "지만".
fn next_break(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let english = [" but ", " however ", " although "]
        .iter()
        .filter_map(|w| lower.find(w).map(|i| i + 1))
        .min();
    let korean = s.find("지만").map(|i| i + "지만".len());
    [english, korean]
        .into_iter()
        .flatten()
        .min()
        .filter(|&i| i > 0 && i < s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Aspect::*;
    use Sentiment::*;

    fn classify(text: &str) -> Vec<(Aspect, Sentiment)> {
        Dictionary::built_in().classify(text)
    }

    #[test]
    fn the_issue_phrases_get_their_labels() {
        let cases: &[(&str, &[(Aspect, Sentiment)])] = &[
            ("배송 빨라요", &[(Delivery, Positive)]),
            ("배송이 늦었어요", &[(Delivery, Negative)]),
            ("배송은 보통", &[(Delivery, Neutral)]),
            ("품질 좋아요", &[(Quality, Positive)]),
            ("가격대비 괜찮아요", &[(Price, Positive)]),
            ("별로에요", &[(Overall, Negative)]),
            ("포장 꼼꼼해요", &[(Packaging, Positive)]),
            ("포장이 아쉬워요", &[(Packaging, Negative)]),
            ("재구매 의사 있어요", &[(Overall, Positive)]),
            ("다신 안살듯", &[(Overall, Negative)]),
            ("보통이에요", &[(Overall, Neutral)]),
            ("품질이 안 좋아요", &[(Quality, Negative)]),
            (
                "배송은 빨랐지만 포장이 아쉬워요",
                &[(Delivery, Positive), (Packaging, Negative)],
            ),
            (
                "Fast delivery, but the box was crushed!",
                &[(Delivery, Positive), (Packaging, Negative)],
            ),
            ("The quality is not good", &[(Quality, Negative)]),
            ("not bad for the price", &[(Price, Neutral)]),
            (
                "배송 빨라요 👍 Great quality",
                &[(Delivery, Positive), (Quality, Positive)],
            ),
            ("", &[]),
            ("ㅋㅋㅋ", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text), *want, "{text:?}");
        }
    }

    #[test]
    fn latin_terms_match_at_word_starts_and_hangul_terms_inside_words() {
        // "late" inside "chocolate" is not a complaint; "packag" starts "packaging".
        assert_eq!(
            classify("The chocolate arrived quickly"),
            [(Delivery, Positive)]
        );
        assert_eq!(classify("Packaging: excellent"), [(Packaging, Positive)]);
        assert_eq!(classify("택배가 너무 늦게 왔어요"), [(Delivery, Negative)]);
        // Normalised: upper case and runs of spaces do not matter; NFD Hangul is NFC.
        let nfd: String = {
            use unicode_normalization::UnicodeNormalization;
            "배송은 빨랐지만   포장이 아쉬워요".nfd().collect()
        };
        assert_eq!(
            classify(&nfd),
            [(Delivery, Positive), (Packaging, Negative)]
        );
        assert_eq!(classify("DELIVERY   WAS   SLOW"), [(Delivery, Negative)]);
    }

    #[test]
    fn a_bad_dictionary_names_what_is_wrong() {
        let e = Dictionary::parse("[aspects]\ndelivery = []\n").unwrap_err();
        assert!(e.starts_with("review dictionary:"), "{e}");
        let empty = BUILT_IN.replace("\"배송\",", "\" \",");
        let e = Dictionary::parse(&empty).unwrap_err();
        assert!(e.contains("an empty term in aspects.delivery"), "{e}");
    }

    #[test]
    fn clauses_split_at_punctuation_and_connectives() {
        assert_eq!(
            clauses("a. b, c but d\n배송은 빨랐지만 포장이"),
            ["a", " b", " c ", "but d", "배송은 빨랐지만", " 포장이"]
        );
    }
}
