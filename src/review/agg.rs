//! The review aggregates of one window (issue 18, item 2), pure: what the reviews stream
//! will fold per event-time window, merge across workers and store.
//!
//! Per window:
//! - `rating_histogram`: reviews per rating 1–5;
//! - `average_rating`: the exact sum and count of ratings, and the mean shown with 2
//!   decimals, rounded half up (4.565 → 4.57; [`average`]);
//! - `most_reviewed_products`: the top K by review count (ties: product id ascending);
//! - `best_rated_products` / `worst_rated_products`: the top K by mean rating among the
//!   products with at least `min_reviews` reviews in the window, compared exactly (as
//!   fractions, never as rounded decimals; ties: more reviews first, then product id);
//! - `review_aspects`: reviews per (aspect, sentiment), from [`super::Dictionary`].
//!
//! A window's state merges with another's ([`ReviewWindow::merge`]) into exactly what one
//! state over both inputs holds, so that partials from workers add up.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{Aspect, Dictionary, Review, Sentiment};
use crate::window::{Aggregator, Mergeable};

/// The reviews stream's aggregator: what [`crate::window::Windows`] folds per window.
#[derive(Debug)]
pub struct Reviews {
    dictionary: Dictionary,
    min_reviews: u64,
}

impl Reviews {
    /// Reading texts with the built-in dictionary; best and worst rated rank products with
    /// at least `min_reviews` reviews in the window.
    #[must_use]
    pub fn new(min_reviews: u64) -> Self {
        Self {
            dictionary: Dictionary::built_in(),
            min_reviews,
        }
    }
}

/// One final (or provisional) window of the reviews stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewFinal {
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// The aggregates.
    pub results: ReviewResults,
}

impl Aggregator for Reviews {
    type Item<'a> = Review;
    /// What the text says, read once per review.
    type Prepared = Vec<(Aspect, Sentiment)>;
    type Window = ReviewWindow;
    type Final = ReviewFinal;

    fn key(r: &Review) -> (&str, i64) {
        (&r.review_id, r.created_ms)
    }

    fn prepare(&mut self, r: &Review) -> Vec<(Aspect, Sentiment)> {
        self.dictionary.classify(&r.text)
    }

    fn open(&self, _size_ms: i64) -> ReviewWindow {
        ReviewWindow::default()
    }

    fn add(&self, w: &mut ReviewWindow, r: &Review, labels: &Vec<(Aspect, Sentiment)>) {
        w.add(r.rating, &r.product_id, labels);
    }

    fn finish(&self, w: &ReviewWindow, size_ms: i64, start_ms: i64, top_k: usize) -> ReviewFinal {
        ReviewFinal {
            size_ms,
            start_ms,
            results: w.finish(top_k, self.min_reviews),
        }
    }

    fn keys(w: &ReviewWindow) -> usize {
        w.products.len()
    }
}

impl Mergeable for Reviews {
    type Partial = ReviewWindow;

    fn partial(&self, w: &ReviewWindow) -> ReviewWindow {
        w.clone()
    }

    fn merged<'p>(
        &mut self,
        partials: impl IntoIterator<Item = &'p ReviewWindow>,
        size_ms: i64,
        start_ms: i64,
        top_k: usize,
    ) -> ReviewFinal {
        let mut w = ReviewWindow::default();
        for p in partials {
            w.merge(p);
        }
        self.finish(&w, size_ms, start_ms, top_k)
    }

    fn partial_keys(p: &ReviewWindow) -> usize {
        p.products.len()
    }
}

/// Sums of one product's reviews.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProductSums {
    /// Reviews.
    pub count: u64,
    /// Sum of their ratings.
    pub rating_sum: u64,
}

/// One window's review sums: everything the aggregates are computed from (and what a
/// worker publishes per window and source partition).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReviewWindow {
    /// Reviews per rating 1–5.
    pub histogram: [u64; 5],
    /// Per product.
    pub products: BTreeMap<String, ProductSums>,
    /// Reviews per aspect (as [`Aspect::ALL`]) and sentiment (as [`Sentiment::ALL`]).
    pub aspects: [[u64; 3]; 5],
}

/// One product's line of a ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// 1-based rank.
    pub rank: u32,
    /// The product.
    pub product_id: String,
    /// Its sums in the window.
    pub sums: ProductSums,
}

/// The finished aggregates of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewResults {
    /// Reviews per rating 1–5.
    pub histogram: [u64; 5],
    /// Sum of all ratings.
    pub rating_sum: u64,
    /// Reviews.
    pub count: u64,
    /// Top K by review count.
    pub most_reviewed: Vec<Ranked>,
    /// Top K by mean rating, at least `min_reviews` each.
    pub best_rated: Vec<Ranked>,
    /// Bottom K by mean rating, at least `min_reviews` each.
    pub worst_rated: Vec<Ranked>,
    /// Reviews per (aspect, sentiment), every pair (zeros included).
    pub aspects: Vec<(Aspect, Sentiment, u64)>,
}

impl ReviewWindow {
    /// Folds in one review: its rating (1–5), product and what its text says (a pair
    /// given twice counts once: these are reviews per pair).
    ///
    /// # Panics
    /// A rating outside 1–5 (the decoder lets none through).
    pub fn add(&mut self, rating: u8, product_id: &str, labels: &[(Aspect, Sentiment)]) {
        assert!((1..=5).contains(&rating), "rating {rating}");
        self.histogram[usize::from(rating - 1)] += 1;
        let p = self.products.entry(product_id.to_string()).or_default();
        p.count += 1;
        p.rating_sum += u64::from(rating);
        let mut seen = [[false; 3]; 5];
        for &(a, s) in labels {
            let once = &mut seen[a as usize][s as usize];
            if !*once {
                *once = true;
                self.aspects[a as usize][s as usize] += 1;
            }
        }
    }

    /// Adds `other`'s sums (another partition's partial of the same window).
    pub fn merge(&mut self, other: &Self) {
        for (h, o) in self.histogram.iter_mut().zip(other.histogram) {
            *h += o;
        }
        for (id, o) in &other.products {
            let p = self.products.entry(id.clone()).or_default();
            p.count += o.count;
            p.rating_sum += o.rating_sum;
        }
        for (row, o) in self.aspects.iter_mut().zip(other.aspects) {
            for (c, x) in row.iter_mut().zip(o) {
                *c += x;
            }
        }
    }

    /// The aggregates, with rankings of `k` and at least `min_reviews` reviews for the
    /// best and worst rated.
    #[must_use]
    pub fn finish(&self, k: usize, min_reviews: u64) -> ReviewResults {
        let count: u64 = self.histogram.iter().sum();
        let rating_sum: u64 = self.histogram.iter().zip(1u64..).map(|(n, r)| n * r).sum();
        let ranked = |mut v: Vec<(&String, &ProductSums)>,
                      cmp: &dyn Fn(&ProductSums, &ProductSums) -> Ordering| {
            v.sort_by(|a, b| cmp(a.1, b.1).then_with(|| a.0.cmp(b.0)));
            v.into_iter()
                .take(k)
                .zip(1u32..)
                .map(|((id, s), rank)| Ranked {
                    rank,
                    product_id: id.clone(),
                    sums: *s,
                })
                .collect::<Vec<_>>()
        };
        let all: Vec<_> = self.products.iter().collect();
        let rated: Vec<_> = self
            .products
            .iter()
            .filter(|(_, s)| s.count >= min_reviews.max(1))
            .collect();
        ReviewResults {
            histogram: self.histogram,
            rating_sum,
            count,
            most_reviewed: ranked(all, &|a, b| b.count.cmp(&a.count)),
            best_rated: ranked(rated.clone(), &|a, b| {
                mean_cmp(b, a).then(b.count.cmp(&a.count))
            }),
            worst_rated: ranked(rated, &|a, b| mean_cmp(a, b).then(b.count.cmp(&a.count))),
            aspects: Aspect::ALL
                .iter()
                .flat_map(|&a| {
                    Sentiment::ALL
                        .iter()
                        .map(move |&s| (a, s, self.aspects[a as usize][s as usize]))
                })
                .collect(),
        }
    }
}

/// Compares two products' mean ratings exactly: a.sum / a.count against b.sum / b.count.
fn mean_cmp(a: &ProductSums, b: &ProductSums) -> Ordering {
    (u128::from(a.rating_sum) * u128::from(b.count))
        .cmp(&(u128::from(b.rating_sum) * u128::from(a.count)))
}

/// `sum / count` with 2 decimals, rounded half up ("4.57"); "-" for no reviews.
#[must_use]
pub fn average(sum: u64, count: u64) -> String {
    if count == 0 {
        return "-".into();
    }
    // Hundredths, half up: floor((200 sum + count) / (2 count)).
    let h = (200 * u128::from(sum) + u128::from(count)) / (2 * u128::from(count));
    format!("{}.{:02}", h / 100, h % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn averages_round_half_up_from_the_exact_sum() {
        assert_eq!(average(0, 0), "-");
        assert_eq!(average(9, 2), "4.50");
        assert_eq!(average(13, 3), "4.33");
        assert_eq!(average(14, 3), "4.67");
        // 4.565 exactly: half up.
        assert_eq!(average(913, 200), "4.57");
        assert_eq!(average(5, 1), "5.00");
        assert_eq!(average(1, 8), "0.13"); // 0.125
    }

    /// One review: (product 0–5, rating 1–5, labels).
    type TestReview = (u8, u8, Vec<(Aspect, Sentiment)>);

    fn review() -> impl Strategy<Value = TestReview> {
        (
            0u8..6,
            1u8..=5,
            proptest::collection::vec((0usize..5, 0usize..3), 0..4),
        )
            .prop_map(|(p, r, l)| {
                // Repeats allowed: a pair counts once per review.
                let labels: Vec<_> = l
                    .into_iter()
                    .map(|(a, s)| (Aspect::ALL[a], Sentiment::ALL[s]))
                    .collect();
                (p, r, labels)
            })
    }

    /// The batch model: each aggregate straight from the list of reviews.
    fn model(reviews: &[TestReview], k: usize, min: u64) -> ReviewResults {
        let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (p, r, _) in reviews {
            let e = per.entry(format!("p_{p}")).or_default();
            e.0 += 1;
            e.1 += u64::from(*r);
        }
        let line = |(i, (id, (c, s))): (usize, (&String, &(u64, u64)))| Ranked {
            rank: u32::try_from(i + 1).unwrap(),
            product_id: id.clone(),
            sums: ProductSums {
                count: *c,
                rating_sum: *s,
            },
        };
        let mut most: Vec<_> = per.iter().collect();
        most.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        // Means as f64 are exact enough to order sums of at most 5 × 64 over counts ≤ 64.
        let mean = |v: &(u64, u64)| v.1 as f64 / v.0 as f64;
        let mut rated: Vec<_> = per.iter().filter(|(_, v)| v.0 >= min.max(1)).collect();
        rated.sort_by(|a, b| {
            mean(b.1)
                .partial_cmp(&mean(a.1))
                .unwrap()
                .then(b.1.0.cmp(&a.1.0))
                .then(a.0.cmp(b.0))
        });
        let best: Vec<_> = rated
            .iter()
            .copied()
            .take(k)
            .enumerate()
            .map(line)
            .collect();
        rated.sort_by(|a, b| {
            mean(a.1)
                .partial_cmp(&mean(b.1))
                .unwrap()
                .then(b.1.0.cmp(&a.1.0))
                .then(a.0.cmp(b.0))
        });
        let worst: Vec<_> = rated.into_iter().take(k).enumerate().map(line).collect();
        let mut histogram = [0; 5];
        for (_, r, _) in reviews {
            histogram[usize::from(*r) - 1] += 1;
        }
        let aspects = Aspect::ALL
            .iter()
            .flat_map(|&a| Sentiment::ALL.iter().map(move |&s| (a, s)))
            .map(|(a, s)| {
                let n = reviews.iter().filter(|r| r.2.contains(&(a, s))).count();
                (a, s, n as u64)
            })
            .collect();
        ReviewResults {
            histogram,
            rating_sum: reviews.iter().map(|r| u64::from(r.1)).sum(),
            count: reviews.len() as u64,
            most_reviewed: most.into_iter().take(k).enumerate().map(line).collect(),
            best_rated: best,
            worst_rated: worst,
            aspects,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Split over random partitions (in any order), folded per partition and merged:
        /// the same results as the batch model over all of them.
        #[test]
        fn partials_merged_equal_the_batch_model(
            reviews in proptest::collection::vec(review(), 0..64),
            parts in proptest::collection::vec(0usize..4, 64),
            k in 1usize..4,
            min in 0u64..4,
        ) {
            let mut partials = vec![ReviewWindow::default(); 4];
            for (i, (p, r, labels)) in reviews.iter().enumerate() {
                partials[parts[i]].add(*r, &format!("p_{p}"), labels);
            }
            let mut merged = ReviewWindow::default();
            for p in partials.iter().rev() {
                merged.merge(p);
            }
            prop_assert_eq!(merged.finish(k, min), model(&reviews, k, min));
        }
    }

    #[test]
    fn rows_are_one_per_key() {
        let mut w = ReviewWindow::default();
        w.add(5, "p_1", &[(Aspect::Delivery, Sentiment::Positive)]);
        w.add(4, "p_1", &[]);
        w.add(1, "p_2", &[(Aspect::Overall, Sentiment::Negative)]);
        // As exported: the store's rows of the window, each with its aggregate.
        let fin = ReviewFinal {
            size_ms: 60_000,
            start_ms: 0,
            results: w.finish(10, 2),
        };
        let rows: Vec<Value> = crate::store::review_rows_of(&fin)
            .into_iter()
            .flat_map(|(agg, rows)| {
                rows.into_iter().map(move |r| {
                    let mut o = r.to_json();
                    o.insert("aggregate".into(), agg.as_str().into());
                    Value::Object(o)
                })
            })
            .collect();
        assert_eq!(
            rows[3],
            json!({"aggregate": "rating_histogram", "rating": 4, "count": 1})
        );
        assert_eq!(
            rows[5],
            json!({"aggregate": "average_rating", "reviews": 3, "rating_sum": 10, "average": "3.33"})
        );
        let best: Vec<&Value> = rows
            .iter()
            .filter(|r| r["aggregate"] == "best_rated_products")
            .collect();
        // p_2 has one review, below the minimum of 2.
        assert_eq!(best.len(), 1);
        assert_eq!(best[0]["product_id"], "p_1");
        assert_eq!(best[0]["average"], "4.50");
        let aspects = rows
            .iter()
            .filter(|r| r["aggregate"] == "review_aspects")
            .count();
        assert_eq!(aspects, 15);
    }
}

/// The reviews stream end to end through the window operator: random logs (duplicates,
/// late reviews), interleavings of partitions, batch sizes and crash points, against a
/// batch model written without any of the aggregator's code.
#[cfg(test)]
mod stream_tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::*;
    use crate::window::assign::window_start;
    use crate::window::{WindowConfig, Windows};

    const TEXTS: [&str; 6] = [
        "배송 빨라요",
        "품질 별로에요. 포장이 아쉬워요",
        "",
        "Fast delivery, poor packaging",
        "가격대비 괜찮아요 재구매 의사 있어요",
        "배송은 보통 ㅋㅋ",
    ];

    #[derive(Debug, Clone)]
    struct Rv {
        id: u16,
        ts: i64,
        product: u8,
        rating: u8,
        text: &'static str,
    }

    impl Rv {
        fn review(&self) -> Review {
            Review {
                review_id: format!("r{}", self.id),
                product_id: format!("p_{}", self.product),
                user_id: "u_1".into(),
                rating: self.rating,
                text: self.text.into(),
                images: Vec::new(),
                created_ms: self.ts,
            }
        }
    }

    fn logs() -> impl Strategy<Value = Vec<Vec<Rv>>> {
        let rv = |i: usize| {
            (
                0u16..30,
                -25_000i64..60_000,
                0u8..6,
                1u8..=5,
                prop::sample::select(TEXTS.to_vec()),
                prop::bool::weighted(0.05),
            )
                .prop_map(move |(id, jitter, product, rating, text, far_late)| Rv {
                    id,
                    ts: 1_700_000_000_000 + i as i64 * 3_000 + jitter
                        - if far_late { 120_000 } else { 0 },
                    product,
                    rating,
                    text,
                })
        };
        prop::collection::vec(0usize..50, 1..4).prop_flat_map(move |lens| {
            lens.into_iter()
                .map(|n| (0..n).map(rv).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
    }

    fn model(cfg: &WindowConfig, min: u64, logs: &[Vec<Rv>]) -> BTreeMap<(i64, i64), ReviewFinal> {
        let dict = Dictionary::built_in();
        let bucket = cfg.dedup_bucket_ms();
        let mut accepted = Vec::new();
        for log in logs {
            let (mut max, mut seen) = (i64::MIN, HashSet::new());
            for r in log {
                if r.ts < max.saturating_sub(cfg.max_delay_ms) {
                    continue;
                }
                max = max.max(r.ts);
                if seen.insert((window_start(r.ts, bucket), r.id)) {
                    accepted.push(r.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        for &size in &cfg.sizes_ms {
            let starts: BTreeSet<i64> = accepted.iter().map(|r| window_start(r.ts, size)).collect();
            for start in starts {
                let mut histogram = [0u64; 5];
                let mut products: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let mut aspects: BTreeMap<(Aspect, Sentiment), u64> = BTreeMap::new();
                for r in accepted
                    .iter()
                    .filter(|r| window_start(r.ts, size) == start)
                {
                    histogram[usize::from(r.rating) - 1] += 1;
                    let p = products.entry(format!("p_{}", r.product)).or_default();
                    p.0 += 1;
                    p.1 += u64::from(r.rating);
                    let pairs: BTreeSet<_> = dict.classify(r.text).into_iter().collect();
                    for pair in pairs {
                        *aspects.entry(pair).or_default() += 1;
                    }
                }
                let line = |(rank, (id, &(count, sum))): (usize, (&String, &(u64, u64)))| Ranked {
                    rank: u32::try_from(rank + 1).unwrap(),
                    product_id: id.clone(),
                    sums: ProductSums {
                        count,
                        rating_sum: sum,
                    },
                };
                #[allow(clippy::cast_precision_loss)]
                let mean = |&(c, s): &(u64, u64)| s as f64 / c as f64;
                let mut most: Vec<_> = products.iter().collect();
                most.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
                let rated: Vec<_> = products.iter().filter(|p| p.1.0 >= min.max(1)).collect();
                let mut best = rated.clone();
                best.sort_by(|a, b| {
                    mean(b.1)
                        .total_cmp(&mean(a.1))
                        .then(b.1.0.cmp(&a.1.0))
                        .then(a.0.cmp(b.0))
                });
                let mut worst = rated;
                worst.sort_by(|a, b| {
                    mean(a.1)
                        .total_cmp(&mean(b.1))
                        .then(b.1.0.cmp(&a.1.0))
                        .then(a.0.cmp(b.0))
                });
                let k = cfg.top_k;
                out.insert(
                    (size, start),
                    ReviewFinal {
                        size_ms: size,
                        start_ms: start,
                        results: ReviewResults {
                            histogram,
                            rating_sum: products.values().map(|p| p.1).sum(),
                            count: products.values().map(|p| p.0).sum(),
                            most_reviewed: most.into_iter().take(k).enumerate().map(line).collect(),
                            best_rated: best.into_iter().take(k).enumerate().map(line).collect(),
                            worst_rated: worst.into_iter().take(k).enumerate().map(line).collect(),
                            aspects: Aspect::ALL
                                .iter()
                                .flat_map(|&a| Sentiment::ALL.iter().map(move |&s| (a, s)))
                                .map(|(a, s)| (a, s, aspects.get(&(a, s)).copied().unwrap_or(0)))
                                .collect(),
                        },
                    },
                );
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn reviews_equal_the_batch_model_across_interleavings_and_crashes(
            logs in logs(),
            sizes in prop::sample::select(vec![vec![10_000i64], vec![6_000, 15_000], vec![60_000, 3_600_000]]),
            max_delay_ms in prop::sample::select(vec![0i64, 5_000, 20_000]),
            top_k in 1usize..4,
            min in 1u64..3,
            schedule in prop::collection::vec((0usize..8, 1usize..20, prop::bool::weighted(0.25)), 0..40),
        ) {
            let cfg = WindowConfig { sizes_ms: sizes, max_delay_ms, top_k };
            let parts = logs.len();
            let got = crate::window::tests::run_windows(
                &|| Windows::with(cfg.clone(), parts, Reviews::new(min)),
                &logs,
                &Rv::review,
                &schedule,
                &|f: &ReviewFinal| (f.size_ms, f.start_ms),
            );
            prop_assert_eq!(got, model(&cfg, min, &logs));
        }
    }
}
