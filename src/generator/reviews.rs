//! Reviews for the `shop.reviews` stream (issue 18, item 2): seeded and deterministic like
//! the events, written as a shop's customers write them.
//!
//! A review's rating is drawn first (J-shaped, as star ratings are: many 5s, some 1s);
//! each aspect it talks about (0 to 3 of delivery, quality, packaging, price, overall) gets a
//! sentiment that follows the rating. The text is those clauses from Korean and English
//! templates — the phrases of `dictionaries/review-aspects.toml` — in Korean (60 %), English
//! (25 %) or both (15 %), separated by punctuation or line breaks, with colloquial endings
//! (빨라여, 좋아용), Korean emoticons (ㅋㅋ, ㅠㅠ), emoji, an occasional doubled letter. A
//! review talks about 1 to 3 aspects; 4 % have an empty text (a rating alone) and about 1 %
//! a very long one (its clauses repeated past 2 000 characters).
//! [`Generated::labels`] keeps what each text was written to say, so that the classifier
//! can be checked against it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::catalogue::Catalogue;
use super::json::push_rfc3339_ms;
use crate::review::{Aspect, Sentiment};

/// What to generate.
#[derive(Debug, Clone)]
pub struct ReviewConfig {
    /// Seed: the same seed gives the same bytes.
    pub seed: u64,
    /// Event time of the first review (epoch ms).
    pub start_ms: i64,
    /// Reviews per second of event time.
    pub per_second: f64,
    /// Products in the catalogue (the events' catalogue for the same seed).
    pub products: u32,
    /// Distinct users.
    pub users: u32,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            start_ms: super::DEFAULT_START_MS,
            per_second: 5.0,
            products: 5_000,
            users: 100_000,
        }
    }
}

/// One generated review.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The record key: the author (`u_N`), as the events are keyed by user.
    pub key: Vec<u8>,
    /// The record (one JSON object).
    pub bytes: Vec<u8>,
    /// Its event time (`created_at`, epoch ms).
    pub created_ms: i64,
    /// What the text was written to say, each (aspect, sentiment) once, sorted.
    pub labels: Vec<(Aspect, Sentiment)>,
    /// Whether a letter of it was doubled (a typo the dictionary may miss).
    pub typo: bool,
}

/// The review stream of one seed.
pub struct ReviewGen {
    cfg: ReviewConfig,
    rng: ChaCha8Rng,
    catalogue: Catalogue,
    n: u64,
}

/// Star ratings 1–5, cumulative: 10 %, 8 %, 12 %, 25 %, 45 %.
const RATING_CDF: [f64; 5] = [0.10, 0.18, 0.30, 0.55, 1.0];

/// Per rating 1–5, the chance of a positive and of a negative clause (the rest neutral).
const MOOD: [(f64, f64); 5] = [
    (0.03, 0.90),
    (0.10, 0.70),
    (0.25, 0.25),
    (0.70, 0.10),
    (0.90, 0.02),
];

impl ReviewGen {
    /// The generator for `cfg`.
    #[must_use]
    pub fn new(cfg: ReviewConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5245_5649_4557),
            catalogue: Catalogue::new(cfg.seed, cfg.products.max(1)),
            cfg,
            n: 0,
        }
    }

    /// The next review.
    pub fn next_review(&mut self) -> Generated {
        let rng = &mut self.rng;
        let u: f64 = rng.random();
        let rating = 1 + RATING_CDF.iter().position(|&c| u < c).unwrap_or(4);
        let (p_pos, p_neg) = MOOD[rating - 1];
        let mut aspects: Vec<Aspect> = Aspect::ALL.to_vec();
        let mentioned = rng.random_range(1..=3);
        let mut clauses: Vec<(Aspect, Sentiment)> = Vec::new();
        for _ in 0..mentioned {
            let a = aspects.remove(rng.random_range(0..aspects.len()));
            let x: f64 = rng.random();
            let s = if x < p_pos {
                Sentiment::Positive
            } else if x < p_pos + p_neg {
                Sentiment::Negative
            } else {
                Sentiment::Neutral
            };
            clauses.push((a, s));
        }
        let shape: f64 = rng.random();
        let (empty, long) = (shape < 0.04, shape > 0.99);
        if empty {
            clauses.clear();
        }
        let lang: f64 = rng.random();
        let mut text = String::new();
        let mut typo = false;
        for (i, &(a, s)) in clauses.iter().enumerate() {
            let korean = match lang {
                l if l < 0.60 => true,
                l if l < 0.85 => false,
                _ => i % 2 == 0,
            };
            if i > 0 {
                text.push_str(pick(rng, &[". ", ", ", "! ", "\n", " ~ "]));
            }
            typo |= write_clause(rng, &mut text, a, s, korean);
        }
        if long && !text.is_empty() {
            let once = text.clone();
            while text.chars().count() < 2_000 {
                text.push('\n');
                text.push_str(&once);
            }
        }
        let mut labels = clauses;
        labels.sort_unstable();
        labels.dedup();
        let (key, bytes, created_ms) = self.record(rating, &text);
        self.n += 1;
        Generated {
            key,
            bytes,
            created_ms,
            labels,
            typo,
        }
    }

    /// The key, the JSON object (fields in the schema's order) and its event time.
    fn record(&mut self, rating: usize, text: &str) -> (Vec<u8>, Vec<u8>, i64) {
        let rng = &mut self.rng;
        let review_id = format!("r_{:016x}", rng.random::<u64>());
        let product = self.catalogue.product(self.catalogue.sample(rng));
        let user = rng.random_range(1..=self.cfg.users.max(1));
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let created_ms = self.cfg.start_ms
            + (self.n as f64 * 1000.0 / self.cfg.per_second.max(1e-3)) as i64
            + rng.random_range(0..1000);
        let mut out = Vec::with_capacity(256 + text.len());
        out.extend_from_slice(br#"{"schema":1,"review_id":""#);
        out.extend_from_slice(review_id.as_bytes());
        out.extend_from_slice(br#"","product_id":""#);
        out.extend_from_slice(product.id.as_bytes());
        out.extend_from_slice(
            format!(r#"","user_id":"u_{user}","rating":{rating},"text":"#).as_bytes(),
        );
        out.extend_from_slice(
            serde_json::to_string(text)
                .expect("a string serialises")
                .as_bytes(),
        );
        out.extend_from_slice(br#","images":["#);
        for k in 0..rng.random_range(0..=2u32) {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(
                format!(
                    "\"https://img.shop.example/reviews/{review_id}/{}.jpg\"",
                    k + 1
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(br#"],"created_at":""#);
        push_rfc3339_ms(&mut out, created_ms);
        out.extend_from_slice(b"\"}");
        (format!("u_{user}").into_bytes(), out, created_ms)
    }
}

/// Reviews as log records, for `kappa produce --stream reviews`: some delivered twice (the
/// same key and bytes again, right after: a producer's retry) and some malformed (a rating
/// out of range, a missing `created_at`, not JSON), in the shares asked for.
pub struct ReviewRecords {
    reviews: ReviewGen,
    rng: ChaCha8Rng,
    duplicate_share: f64,
    malformed_share: f64,
    again: Option<(Vec<u8>, Vec<u8>, i64)>,
    malformed: u64,
}

impl ReviewRecords {
    /// The records of `cfg`'s reviews with these shares of duplicates and malformed ones.
    #[must_use]
    pub fn new(cfg: ReviewConfig, duplicate_share: f64, malformed_share: f64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x4455_5045),
            reviews: ReviewGen::new(cfg),
            duplicate_share,
            malformed_share,
            again: None,
            malformed: 0,
        }
    }

    /// The next record into `out` (key, value, emit time = the review's event time).
    pub fn next_into(&mut self, out: &mut super::GenRecord) {
        out.key.clear();
        out.value.clear();
        if let Some((key, value, at)) = self.again.take() {
            out.key = key;
            out.value = value;
            out.emit_at_ms = at;
            out.kind = super::RecordKind::Duplicate;
            return;
        }
        let g = self.reviews.next_review();
        out.emit_at_ms = g.created_ms;
        out.key.extend_from_slice(&g.key);
        if self.rng.random_bool(self.malformed_share.clamp(0.0, 1.0)) {
            let text = String::from_utf8_lossy(&g.bytes).into_owned();
            match self.malformed % 3 {
                0 => out.value.extend_from_slice(
                    text.replacen(r#""rating":"#, r#""rating":9,"was":"#, 1)
                        .as_bytes(),
                ),
                1 => out.value.extend_from_slice(
                    text.split_once(r#","created_at""#)
                        .map_or(text.clone(), |(head, _)| format!("{head}}}"))
                        .as_bytes(),
                ),
                _ => out.value.extend_from_slice(&g.bytes[..g.bytes.len() / 2]),
            }
            self.malformed += 1;
            out.kind = super::RecordKind::Malformed;
            return;
        }
        out.value.extend_from_slice(&g.bytes);
        out.kind = super::RecordKind::Valid;
        if self.rng.random_bool(self.duplicate_share.clamp(0.0, 1.0)) {
            self.again = Some((g.key, g.bytes, g.created_ms));
        }
    }
}

impl Iterator for ReviewGen {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        Some(self.next_review())
    }
}

fn pick<'a, R: Rng>(rng: &mut R, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// Appends one clause saying `s` about `a`; returns whether it carries a doubled letter.
fn write_clause<R: Rng>(
    rng: &mut R,
    out: &mut String,
    a: Aspect,
    s: Sentiment,
    korean: bool,
) -> bool {
    let phrase = pick(rng, phrases(a, s, korean));
    let start = out.len();
    out.push_str(phrase);
    if korean {
        // Colloquial endings: 빨라요 → 빨라여 / 빨라용.
        if out.ends_with('요') && rng.random_bool(0.15) {
            out.pop();
            out.push_str(pick(rng, &["여", "용"]));
        }
        if rng.random_bool(0.15) {
            out.push(' ');
            out.push_str(match s {
                Sentiment::Negative => pick(rng, &["ㅠㅠ", "ㅡㅡ"]),
                _ => pick(rng, &["ㅋㅋ", "ㅎㅎ"]),
            });
        }
    }
    if rng.random_bool(0.12) {
        out.push(' ');
        out.push_str(match s {
            Sentiment::Positive => pick(rng, &["👍", "😊", "❤️", "🙏"]),
            Sentiment::Negative => pick(rng, &["😡", "😞", "👎"]),
            Sentiment::Neutral => pick(rng, &["🙂", "😐"]),
        });
    }
    // A doubled letter, as fast typing makes.
    if !korean && rng.random_bool(0.05) {
        let letters: Vec<usize> = out[start..]
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphabetic())
            .map(|(i, _)| start + i)
            .collect();
        if !letters.is_empty() {
            let at = letters[rng.random_range(0..letters.len())];
            let c = out[at..].chars().next().expect("a letter");
            out.insert(at, c);
            return true;
        }
    }
    false
}

/// The templates for one aspect and sentiment.
fn phrases(a: Aspect, s: Sentiment, korean: bool) -> &'static [&'static str] {
    use Aspect::*;
    use Sentiment::*;
    match (a, s, korean) {
        (Delivery, Positive, true) => &["배송 빨라요", "배송이 빨랐어요", "택배가 빨리 왔어요"],
        (Delivery, Negative, true) => {
            &["배송이 늦었어요", "배송 느려요", "택배가 너무 늦게 왔어요"]
        }
        (Delivery, Neutral, true) => &["배송은 보통", "배송은 그냥 그래요"],
        (Quality, Positive, true) => &["품질 좋아요", "재질이 튼튼해요", "마감이 꼼꼼해요"],
        (Quality, Negative, true) => &["품질이 별로에요", "재질이 안 좋아요", "마감이 엉망이에요"],
        (Quality, Neutral, true) => &["품질은 보통이에요", "품질은 무난해요"],
        (Packaging, Positive, true) => &["포장 꼼꼼해요", "박스 포장이 꼼꼼했어요"],
        (Packaging, Negative, true) => &["포장이 아쉬워요", "박스가 찢어져서 왔어요"],
        (Packaging, Neutral, true) => &["포장은 평범해요", "포장은 그냥 그래요"],
        (Price, Positive, true) => &["가격대비 괜찮아요", "가성비 최고", "가격이 저렴해요"],
        (Price, Negative, true) => &["가격이 비싸요", "가성비 별로"],
        (Price, Neutral, true) => &["가격은 그럭저럭", "가격은 보통"],
        (Overall, Positive, true) => &["재구매 의사 있어요", "추천해요", "만족합니다"],
        (Overall, Negative, true) => &["다신 안살듯", "별로에요", "실망했어요", "최악"],
        (Overall, Neutral, true) => &["보통이에요", "그냥 그래요", "무난해요"],
        (Delivery, Positive, false) => &["Fast delivery", "Shipping was quick", "Arrived fast"],
        (Delivery, Negative, false) => &["Delivery was slow", "The courier was late"],
        (Delivery, Neutral, false) => &["Delivery was okay", "Shipping was average"],
        (Quality, Positive, false) => &["Great quality", "Very solid build", "Excellent material"],
        (Quality, Negative, false) => &["Quality is bad", "The material is not good"],
        (Quality, Neutral, false) => &["Quality is okay", "Quality as expected"],
        (Packaging, Positive, false) => &["Packaging was perfect", "Nicely wrapped and good"],
        (Packaging, Negative, false) => &["The box was crushed", "Packaging was damaged"],
        (Packaging, Neutral, false) => &["Packaging was fine"],
        (Price, Positive, false) => &["Worth it", "Great value for money"],
        (Price, Negative, false) => &["Too expensive for what it is", "The price is bad"],
        (Price, Neutral, false) => &["Price is average", "The price is okay"],
        (Overall, Positive, false) => &["Would recommend", "Love it", "Happy with it"],
        (Overall, Negative, false) => &["Never again", "Terrible", "Disappointed"],
        (Overall, Neutral, false) => &["It's okay", "Average product"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::{Dictionary, decode};

    fn sample(n: usize, seed: u64) -> Vec<Generated> {
        ReviewGen::new(ReviewConfig {
            seed,
            ..ReviewConfig::default()
        })
        .take(n)
        .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        let a: Vec<Vec<u8>> = sample(500, 1).into_iter().map(|g| g.bytes).collect();
        let b: Vec<Vec<u8>> = sample(500, 1).into_iter().map(|g| g.bytes).collect();
        let c: Vec<Vec<u8>> = sample(500, 2).into_iter().map(|g| g.bytes).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_review_is_valid_and_the_mix_is_what_the_issue_asks_for() {
        let all = sample(5_000, 7);
        let mut ids = std::collections::HashSet::new();
        let mut ratings = [0usize; 5];
        let (mut empty, mut long, mut korean, mut english, mut emoji) = (0, 0, 0, 0, 0);
        let mut last = i64::MIN;
        for g in &all {
            let r = decode(&g.bytes, 65_536)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&g.bytes)));
            assert!(ids.insert(r.review_id.clone()), "duplicate id");
            ratings[usize::from(r.rating) - 1] += 1;
            empty += usize::from(r.text.is_empty());
            long += usize::from(r.text.chars().count() >= 2_000);
            korean += usize::from(r.text.chars().any(|c| ('가'..='힣').contains(&c)));
            english += usize::from(r.text.chars().any(|c| c.is_ascii_alphabetic()));
            emoji += usize::from(r.text.chars().any(|c| u32::from(c) >= 0x1F300));
            assert!(
                r.created_ms >= last.saturating_sub(1_000),
                "event time goes back more than 1 s"
            );
            last = r.created_ms;
            assert!(r.images.iter().all(|u| u.starts_with("https://")));
        }
        assert!(ratings.iter().all(|&n| n > 100), "{ratings:?}");
        assert!(
            ratings[4] > ratings[3] && ratings[0] > ratings[1],
            "J-shaped: {ratings:?}"
        );
        for (what, n, lo) in [
            ("empty", empty, 100),
            ("long", long, 20),
            ("korean", korean, 2_000),
            ("english", english, 1_000),
            ("emoji", emoji, 200),
        ] {
            assert!(n >= lo, "{what}: {n} of 5000");
        }
    }

    #[test]
    fn the_dictionary_reads_what_each_review_was_written_to_say() {
        let dict = Dictionary::built_in();
        let all = sample(5_000, 11);
        let mut wrong_typo_free = Vec::new();
        let mut wrong = 0;
        for g in &all {
            let r = decode(&g.bytes, 65_536).unwrap();
            if dict.classify(&r.text) != g.labels {
                wrong += 1;
                if !g.typo {
                    wrong_typo_free.push((r.text, g.labels.clone()));
                }
            }
        }
        assert!(
            wrong_typo_free.is_empty(),
            "{} typo-free reviews misread, e.g. {:?}",
            wrong_typo_free.len(),
            &wrong_typo_free[..wrong_typo_free.len().min(3)]
        );
        assert!(
            wrong * 100 < all.len() * 3,
            "{wrong} of {} misread",
            all.len()
        );
    }

    #[test]
    fn ratings_follow_the_sentiment_of_the_text() {
        let dict = Dictionary::built_in();
        let (mut pos, mut neg) = ((0u64, 0u64), (0u64, 0u64));
        for g in sample(5_000, 3) {
            let r = decode(&g.bytes, 65_536).unwrap();
            let labels = dict.classify(&r.text);
            let sum = |t: &mut (u64, u64)| {
                t.0 += u64::from(r.rating);
                t.1 += 1;
            };
            if !labels.is_empty() && labels.iter().all(|l| l.1 == Sentiment::Positive) {
                sum(&mut pos);
            } else if labels.iter().any(|l| l.1 == Sentiment::Negative) {
                sum(&mut neg);
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = |t: (u64, u64)| t.0 as f64 / t.1 as f64;
        assert!(
            mean(pos) > 4.0 && mean(neg) < 3.0,
            "{} vs {}",
            mean(pos),
            mean(neg)
        );
    }
}
