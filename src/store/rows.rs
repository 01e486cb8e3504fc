//! What the store keeps: row types of each aggregate and the bookkeeping records.

use serde::{Deserialize, Serialize};

use super::{StoreError, decode, encode};
use crate::event::EventType;
use crate::review::agg::{ReviewFinal, average};
use crate::stream::Stream;
use crate::window::FinalWindow;

/// The aggregates of a window: five of the events, six of the reviews. The discriminant is
/// part of the stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    /// Purchases, units and revenue per category (key: category).
    SalesByCategory = 1,
    /// Top-K products by units (key: rank).
    TopProductsByUnits = 2,
    /// Top-K products by revenue (key: rank).
    TopProductsByRevenue = 3,
    /// Count per event type (key: event type).
    EventsByType = 4,
    /// Top-K normalised search queries (key: rank).
    TopSearches = 5,
    /// Reviews per rating 1–5 (key: the rating).
    RatingHistogram = 6,
    /// Reviews and the sum of their ratings (one row, key `all`).
    AverageRating = 7,
    /// Top-K products by reviews (key: rank).
    MostReviewedProducts = 8,
    /// Top-K products by mean rating, with a minimum of reviews (key: rank).
    BestRatedProducts = 9,
    /// Bottom-K products by mean rating, with a minimum of reviews (key: rank).
    WorstRatedProducts = 10,
    /// Reviews per aspect and sentiment (key: `aspect/sentiment`).
    ReviewAspects = 11,
}

impl Aggregate {
    /// The events' aggregates, in key order.
    pub const EVENTS: [Aggregate; 5] = [
        Self::SalesByCategory,
        Self::TopProductsByUnits,
        Self::TopProductsByRevenue,
        Self::EventsByType,
        Self::TopSearches,
    ];

    /// The reviews' aggregates, in key order.
    pub const REVIEWS: [Aggregate; 6] = [
        Self::RatingHistogram,
        Self::AverageRating,
        Self::MostReviewedProducts,
        Self::BestRatedProducts,
        Self::WorstRatedProducts,
        Self::ReviewAspects,
    ];

    /// Every aggregate, in key order.
    pub const ALL: [Aggregate; 11] = [
        Self::SalesByCategory,
        Self::TopProductsByUnits,
        Self::TopProductsByRevenue,
        Self::EventsByType,
        Self::TopSearches,
        Self::RatingHistogram,
        Self::AverageRating,
        Self::MostReviewedProducts,
        Self::BestRatedProducts,
        Self::WorstRatedProducts,
        Self::ReviewAspects,
    ];

    /// The aggregates of one stream's windows, in key order.
    #[must_use]
    pub fn of(stream: Stream) -> &'static [Aggregate] {
        match stream {
            Stream::Events => &Self::EVENTS,
            Stream::Reviews => &Self::REVIEWS,
            Stream::Products | Stream::Clicks => &[],
        }
    }

    /// The stream whose windows have this aggregate.
    #[must_use]
    pub fn stream(self) -> Stream {
        if Self::REVIEWS.contains(&self) {
            Stream::Reviews
        } else {
            Stream::Events
        }
    }

    /// The aggregate every final window of `stream` has rows of (the events' funnel, the
    /// reviews' average): windows are found through it.
    #[must_use]
    pub fn marker(stream: Stream) -> Aggregate {
        match stream {
            // The catalogue has no windows, the clicks only declared ones: nothing is ever
            // found through it.
            Stream::Events | Stream::Products | Stream::Clicks => Self::EventsByType,
            Stream::Reviews => Self::AverageRating,
        }
    }

    /// Name used in the API and exports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SalesByCategory => "sales_by_category",
            Self::TopProductsByUnits => "top_products_by_units",
            Self::TopProductsByRevenue => "top_products_by_revenue",
            Self::EventsByType => "events_by_type",
            Self::TopSearches => "top_searches",
            Self::RatingHistogram => "rating_histogram",
            Self::AverageRating => "average_rating",
            Self::MostReviewedProducts => "most_reviewed_products",
            Self::BestRatedProducts => "best_rated_products",
            Self::WorstRatedProducts => "worst_rated_products",
            Self::ReviewAspects => "review_aspects",
        }
    }

    /// Parses [`Aggregate::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| *a as u8 == v)
    }
}

/// Sales of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesRow {
    /// Purchase events.
    pub purchases: u64,
    /// Units sold.
    pub units: u64,
    /// Revenue, minor units.
    pub revenue_minor: u128,
}

/// One entry of a top-products list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRow {
    /// Product id.
    pub product_id: String,
    /// Units sold.
    pub units: u64,
    /// Revenue, minor units.
    pub revenue_minor: u128,
}

/// A count (events by type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    /// Number of events.
    pub count: u64,
}

/// One entry of the top searches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRow {
    /// Normalised query.
    pub query: String,
    /// Searches.
    pub count: u64,
}

/// Reviews and the sum of their ratings (`average_rating`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingRow {
    /// Reviews.
    pub reviews: u64,
    /// Sum of their ratings.
    pub rating_sum: u64,
}

/// One product of a review ranking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedRow {
    /// Product id.
    pub product_id: String,
    /// Its reviews in the window.
    pub reviews: u64,
    /// Sum of their ratings.
    pub rating_sum: u64,
}

/// One stored row with its key, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// `sales_by_category`.
    Sales {
        /// Category.
        category: String,
        /// Values.
        row: SalesRow,
    },
    /// `top_products_by_units` / `top_products_by_revenue`.
    Product {
        /// 1-based rank.
        rank: u32,
        /// Values.
        row: ProductRow,
    },
    /// `events_by_type`.
    Count {
        /// Event type.
        event_type: String,
        /// Values.
        row: CountRow,
    },
    /// `top_searches`.
    Query {
        /// 1-based rank.
        rank: u32,
        /// Values.
        row: QueryRow,
    },
    /// `rating_histogram`.
    Rating {
        /// 1–5.
        rating: u8,
        /// Reviews with it.
        row: CountRow,
    },
    /// `average_rating`.
    Average {
        /// Values.
        row: RatingRow,
    },
    /// `most_reviewed_products`, `best_rated_products`, `worst_rated_products`.
    Rated {
        /// 1-based rank.
        rank: u32,
        /// Values.
        row: RatedRow,
    },
    /// `review_aspects`.
    Aspect {
        /// delivery, quality, packaging, price, overall.
        aspect: String,
        /// positive, negative, neutral.
        sentiment: String,
        /// Reviews saying so.
        row: CountRow,
    },
}

/// Key of the one row of `average_rating`.
const AVERAGE_KEY: &str = "all";

fn rank_key(rank: usize) -> String {
    format!("{rank:04}")
}

impl Row {
    pub(crate) fn decode(agg: Aggregate, key: &str, value: &[u8]) -> Result<Self, StoreError> {
        let rank = || {
            key.parse::<u32>().map_err(|_| StoreError::Corrupt {
                table: "results",
                reason: format!("bad rank key {key:?}"),
            })
        };
        let bad = |what: &str| StoreError::Corrupt {
            table: "results",
            reason: format!("bad {what} key {key:?}"),
        };
        Ok(match agg {
            Aggregate::RatingHistogram => Row::Rating {
                rating: key.parse().map_err(|_| bad("rating"))?,
                row: decode("results", value)?,
            },
            Aggregate::AverageRating => Row::Average {
                row: decode("results", value)?,
            },
            Aggregate::MostReviewedProducts
            | Aggregate::BestRatedProducts
            | Aggregate::WorstRatedProducts => Row::Rated {
                rank: rank()?,
                row: decode("results", value)?,
            },
            Aggregate::ReviewAspects => {
                let (aspect, sentiment) = key.split_once('/').ok_or_else(|| bad("aspect"))?;
                Row::Aspect {
                    aspect: aspect.into(),
                    sentiment: sentiment.into(),
                    row: decode("results", value)?,
                }
            }
            Aggregate::SalesByCategory => Row::Sales {
                category: key.to_string(),
                row: decode("results", value)?,
            },
            Aggregate::TopProductsByUnits | Aggregate::TopProductsByRevenue => Row::Product {
                rank: rank()?,
                row: decode("results", value)?,
            },
            Aggregate::EventsByType => Row::Count {
                event_type: key.to_string(),
                row: decode("results", value)?,
            },
            Aggregate::TopSearches => Row::Query {
                rank: rank()?,
                row: decode("results", value)?,
            },
        })
    }

    /// The last component of the row's store key: category, event type, or the rank as
    /// four digits (so ranks sort).
    pub(crate) fn key(&self) -> String {
        match self {
            Row::Sales { category, .. } => category.clone(),
            Row::Count { event_type, .. } => event_type.clone(),
            Row::Product { rank, .. } | Row::Query { rank, .. } | Row::Rated { rank, .. } => {
                rank_key(*rank as usize)
            }
            Row::Rating { rating, .. } => rating.to_string(),
            Row::Average { .. } => AVERAGE_KEY.into(),
            Row::Aspect {
                aspect, sentiment, ..
            } => format!("{aspect}/{sentiment}"),
        }
    }

    /// The stored value: format byte + bincode.
    pub(crate) fn encode_value(&self) -> Vec<u8> {
        match self {
            Row::Sales { row, .. } => encode(row),
            Row::Product { row, .. } => encode(row),
            Row::Count { row, .. } => encode(row),
            Row::Query { row, .. } => encode(row),
            Row::Rating { row, .. } | Row::Aspect { row, .. } => encode(row),
            Row::Average { row } => encode(row),
            Row::Rated { row, .. } => encode(row),
        }
    }

    /// The row's fields as JSON (revenue as a decimal string with two places).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use crate::event::money::format_minor;
        use serde_json::json;
        let v = match self {
            Row::Sales { category, row } => json!({
                "category": category, "purchases": row.purchases, "units": row.units,
                "revenue": format_minor(row.revenue_minor),
            }),
            Row::Product { rank, row } => json!({
                "rank": rank, "product_id": row.product_id, "units": row.units,
                "revenue": format_minor(row.revenue_minor),
            }),
            Row::Count { event_type, row } => {
                json!({ "event_type": event_type, "count": row.count })
            }
            Row::Query { rank, row } => {
                json!({ "rank": rank, "query": row.query, "count": row.count })
            }
            Row::Rating { rating, row } => json!({ "rating": rating, "count": row.count }),
            Row::Average { row } => json!({
                "reviews": row.reviews, "rating_sum": row.rating_sum,
                "average": average(row.rating_sum, row.reviews),
            }),
            Row::Rated { rank, row } => json!({
                "rank": rank, "product_id": row.product_id, "reviews": row.reviews,
                "rating_sum": row.rating_sum, "average": average(row.rating_sum, row.reviews),
            }),
            Row::Aspect {
                aspect,
                sentiment,
                row,
            } => json!({ "aspect": aspect, "sentiment": sentiment, "count": row.count }),
        };
        match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("json! of an object"),
        }
    }
}

/// The rows of every aggregate of a final window, in key order within each aggregate.
#[must_use]
pub fn rows_of(w: &FinalWindow) -> Vec<(Aggregate, Vec<Row>)> {
    let rank = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
    let products = |list: &[crate::window::ProductSales]| {
        list.iter()
            .enumerate()
            .map(|(i, p)| Row::Product {
                rank: rank(i),
                row: ProductRow {
                    product_id: p.product_id.clone(),
                    units: p.units,
                    revenue_minor: p.revenue_minor,
                },
            })
            .collect()
    };
    vec![
        (
            Aggregate::SalesByCategory,
            w.sales_by_category
                .iter()
                .map(|c| Row::Sales {
                    category: c.category.clone(),
                    row: SalesRow {
                        purchases: c.purchases,
                        units: c.units,
                        revenue_minor: c.revenue_minor,
                    },
                })
                .collect(),
        ),
        (Aggregate::TopProductsByUnits, products(&w.top_by_units)),
        (Aggregate::TopProductsByRevenue, products(&w.top_by_revenue)),
        (
            Aggregate::EventsByType,
            EventType::ALL
                .iter()
                .map(|t| Row::Count {
                    event_type: t.as_str().to_string(),
                    row: CountRow {
                        count: w.events_by_type[*t as usize],
                    },
                })
                .collect(),
        ),
        (
            Aggregate::TopSearches,
            w.top_searches
                .iter()
                .enumerate()
                .map(|(i, q)| Row::Query {
                    rank: rank(i),
                    row: QueryRow {
                        query: q.query.clone(),
                        count: q.count,
                    },
                })
                .collect(),
        ),
    ]
}

/// The rows of every aggregate of a final reviews window, in key order within each.
#[must_use]
pub fn review_rows_of(w: &ReviewFinal) -> Vec<(Aggregate, Vec<Row>)> {
    let r = &w.results;
    let ranked = |list: &[crate::review::agg::Ranked]| {
        list.iter()
            .map(|p| Row::Rated {
                rank: p.rank,
                row: RatedRow {
                    product_id: p.product_id.clone(),
                    reviews: p.sums.count,
                    rating_sum: p.sums.rating_sum,
                },
            })
            .collect()
    };
    let mut aspects: Vec<Row> = r
        .aspects
        .iter()
        .map(|(a, s, n)| Row::Aspect {
            aspect: a.as_str().into(),
            sentiment: s.as_str().into(),
            row: CountRow { count: *n },
        })
        .collect();
    aspects.sort_by_key(Row::key);
    vec![
        (
            Aggregate::RatingHistogram,
            (1u8..)
                .zip(r.histogram)
                .map(|(rating, count)| Row::Rating {
                    rating,
                    row: CountRow { count },
                })
                .collect(),
        ),
        (
            Aggregate::AverageRating,
            vec![Row::Average {
                row: RatingRow {
                    reviews: r.count,
                    rating_sum: r.rating_sum,
                },
            }],
        ),
        (Aggregate::MostReviewedProducts, ranked(&r.most_reviewed)),
        (Aggregate::BestRatedProducts, ranked(&r.best_rated)),
        (Aggregate::WorstRatedProducts, ranked(&r.worst_rated)),
        (Aggregate::ReviewAspects, aspects),
    ]
}

/// The rows of one final window of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRows {
    /// Aggregate.
    pub aggregate: Aggregate,
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// Rows in key order.
    pub rows: Vec<Row>,
}

/// One epoch of the product catalogue as an events pipeline read it: the events from
/// `events_from` (per events partition) on were joined with the catalogue entries read
/// below `catalogue_to` (per catalogue partition), until the next epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueEpoch {
    /// Per events partition, the first offset joined in this epoch.
    pub events_from: Vec<u64>,
    /// Per catalogue partition, the position read to.
    pub catalogue_to: Vec<u64>,
}

/// Where a partition stands for one output version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Source partition.
    pub partition: u32,
    /// Every offset below this was handled; records from here on are new.
    pub next_offset: u64,
    /// Where a restart starts re-reading to rebuild the open windows.
    pub resume_offset: u64,
    /// The partition's max event time before `resume_offset`.
    pub resume_max_ts: i64,
    /// The partition's max event time before `next_offset`.
    pub max_ts: i64,
}

/// An output version: one complete set of results from one pipeline configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// `v1`, `v2`, …
    pub name: String,
    /// Canonical summary of the result-deciding configuration (sizes, delay, K, limits).
    pub config: String,
    /// Creation time (epoch ms).
    pub created_ms: i64,
    /// Every window ending at or before this is final.
    pub finalized_through: i64,
    /// Where it is in its life: what a replay promised about it survives a restart.
    pub state: VersionState,
}

/// Where an output version is in its life. Stored with the version, so that a decision
/// taken about it (promote it once caught up, it is being dropped, it is the scratch of a
/// correction of another version) is checked and acted on in the transaction that changes
/// it, and carried on by the next process after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    /// Computed live; complete as far as its positions go.
    #[default]
    Ready,
    /// Being built by replay `replay`; made serving once caught up when `promote`.
    Building {
        /// The replay building it.
        replay: u64,
        /// It becomes serving once caught up (`--promote`).
        promote: bool,
    },
    /// Scratch version of in-place correction `replay`, whose windows go into `target`.
    Correcting {
        /// The correction.
        replay: u64,
        /// The version corrected.
        target: String,
    },
    /// Being dropped: its pipeline is stopping; it is removed then (or at the next start).
    Dropping,
}

impl VersionState {
    /// Its name on the wire (`ready`, `building`, `correcting`, `dropping`).
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Building { .. } => "building",
            Self::Correcting { .. } => "correcting",
            Self::Dropping => "dropping",
        }
    }
}

/// [`VersionInfo`] as stores written before [`VersionState`] hold it.
#[derive(Deserialize)]
pub(super) struct VersionInfoV1 {
    name: String,
    config: String,
    created_ms: i64,
    finalized_through: i64,
}

impl From<VersionInfoV1> for VersionInfo {
    fn from(v: VersionInfoV1) -> Self {
        Self {
            name: v.name,
            config: v.config,
            created_ms: v.created_ms,
            finalized_through: v.finalized_through,
            state: VersionState::Ready,
        }
    }
}

/// An invalid record, set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Record (ingest) timestamp, epoch ms.
    pub record_ts: i64,
    /// Class (metric label).
    pub kind: String,
    /// What was wrong.
    pub reason: String,
    /// Size of the whole record value.
    pub size: u64,
    /// The first bytes of the value (at most [`DEAD_LETTER_RAW_BYTES`]).
    pub raw: Vec<u8>,
}

/// How much of an invalid record's bytes the dead-letter store keeps.
pub const DEAD_LETTER_RAW_BYTES: usize = 4096;

/// A late event, recorded so that a replay with a larger `max_delay` can take it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRecord {
    /// Source partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Event time (epoch ms).
    pub event_ts: i64,
    /// Start of the smallest window it belonged to.
    pub window_start: i64,
    /// Size of that window (ms).
    pub window_size: i64,
    /// Why it was late.
    pub reason: String,
}

/// One replay, as recorded in the store's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// Sequence number (1, 2, …).
    pub id: u64,
    /// Output version written (the serving one for an in-place correction).
    pub version: String,
    /// An in-place correction of `version` rather than a new version.
    pub in_place: bool,
    /// `--from` as given.
    pub from: String,
    /// `--to` as given.
    pub to: Option<String>,
    /// Configuration of the replay (the version's fingerprint).
    pub config: String,
    /// Plan file, when run from one.
    pub plan: Option<String>,
    /// Why (`--reason`).
    pub reason: String,
    /// Who asked (the user name of the process that asked).
    pub requested_by: String,
    /// Start, epoch ms.
    pub started_ms: i64,
    /// End, epoch ms (none while running).
    pub ended_ms: Option<i64>,
    /// Start offset per partition.
    pub starts: Vec<u64>,
    /// Log end per partition when the replay started (what "caught up" is measured to).
    pub ends: Vec<u64>,
    /// Records read.
    pub records: u64,
    /// Windows rewritten (in place) or final so far (new version).
    pub windows: u64,
    /// Where it stands or how it ended.
    pub outcome: Outcome,
}

/// How a replay stands or ended. Stored and shown as its text ([`Outcome::as_str`] plus,
/// for some, a detail after `: `), so the history's bytes and the API's `outcome` strings
/// are what they were before this type existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reading.
    Running,
    /// An in-place correction swapped in.
    Completed,
    /// A new version caught up.
    CaughtUp,
    /// A new version caught up and was made serving.
    CaughtUpPromoted,
    /// A new version caught up; its promised promotion was not done (why).
    CaughtUpNotPromoted(String),
    /// Stopped on request (why, if not the operator's cancel).
    Cancelled(Option<String>),
    /// Failed (the error).
    Failed(String),
    /// Its process died; a new version's replay is carried on by the next server.
    Interrupted,
    /// `--dry-run --diff`: the diff is recorded, nothing changed.
    DryRun,
}

impl Outcome {
    /// The kind, without detail: `running`, `completed`, `caught-up`,
    /// `caught-up, promoted`, `caught-up, not promoted`, `cancelled`, `failed`,
    /// `interrupted`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::CaughtUp => "caught-up",
            Self::CaughtUpPromoted => "caught-up, promoted",
            Self::CaughtUpNotPromoted(_) => "caught-up, not promoted",
            Self::Cancelled(_) => "cancelled",
            Self::Failed(_) => "failed",
            Self::Interrupted => "interrupted",
            Self::DryRun => "dry run",
        }
    }

    /// It got to its end (the swap, or the version caught up).
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::CaughtUp
                | Self::CaughtUpPromoted
                | Self::CaughtUpNotPromoted(_)
        )
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Self::CaughtUpNotPromoted(d) | Self::Failed(d) => Some(d),
            Self::Cancelled(d) => d.as_deref(),
            Self::DryRun => Some("diff recorded, nothing changed"),
            _ => None,
        }
    }

    /// Reads the stored text back (text it does not know is kept as a failure's detail).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let (kind, detail) = match text.split_once(": ") {
            Some((k, d)) => (k, Some(d.to_string())),
            None => (text, None),
        };
        match (kind, detail) {
            ("running", None) => Self::Running,
            ("completed", None) => Self::Completed,
            ("caught-up", None) => Self::CaughtUp,
            ("caught-up, promoted", None) => Self::CaughtUpPromoted,
            ("caught-up, not promoted", d) => Self::CaughtUpNotPromoted(d.unwrap_or_default()),
            ("cancelled", d) => Self::Cancelled(d),
            ("failed", d) => Self::Failed(d.unwrap_or_default()),
            ("interrupted", None) => Self::Interrupted,
            ("dry run", _) => Self::DryRun,
            _ => Self::Failed(text.to_string()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.detail() {
            Some(d) => write!(f, "{}: {d}", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}
