//! Scaling out: workers and a merger coordinated through Kafka (two-tier aggregation).
//!
//! Late and duplicate decisions are made per source partition, so the sums of window `W`
//! over partition `p` are a pure function of `p`'s log. A worker keeps one window core per
//! source partition it owns and, when that partition's own watermark passes a window's end,
//! publishes the window's full sums for the partition (a [`Msg::Partial`]) to
//! `kappa.partials`, then a [`Msg::Progress`] saying which windows of the partition are now
//! complete and which of them had events. The merger adds the partials of a window up once
//! every source partition has reported past its end; the sorted, top-K form is then
//! computed exactly as a single process does ([`crate::window::WindowCore::merge_partials`]).
//!
//! Nothing here needs Kafka transactions: a partial keyed by (version, window, partition) is
//! the same whoever computes it and however often, so the merger keeps the first one and
//! ignores repeats. Completeness never depends on the order of messages across
//! `kappa.partials` partitions: a window waits until each source partition has a progress
//! range covering its end and, where that range lists it as having events, the partial.

pub mod group;
pub mod merger;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::declared::{Declared, DeclaredPartial};
use crate::pipeline::Counts;
use crate::review::agg::ReviewWindow;
use crate::store::{DeadLetter, LateRecord};
use crate::window::{PartialAgg, PartialAggV1};

/// Failures of a worker or a merger.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Reading the source or the partials topic failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// Publishing partials or control orders failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// The merger's store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A worker's pipeline step failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// What was read does not make sense (a state that does not decode, a version that
    /// does not match): the message says what.
    #[error("{0}")]
    Invalid(String),
    /// Encoding the merger's state failed.
    #[error("encoding the merge state: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A worker's thread could not be started.
    #[error("starting a worker thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A worker's thread panicked.
    #[error("the worker thread panicked")]
    Panicked,
}

/// A worker's or a merger's result.
pub type Result<T, E = ScaleError> = std::result::Result<T, E>;

/// What `kappa run --role` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Role {
    /// Today's single process: read, window, store and serve.
    #[default]
    All,
    /// Read source partitions in a consumer group, publish partials to `kappa.partials`.
    Worker,
    /// Read `kappa.partials`, merge, store final windows, serve.
    Merger,
}

impl Role {
    /// The name `--role` takes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Worker => "worker",
            Self::Merger => "merger",
        }
    }
}

/// Per output version and source partition, the furthest position workers reported
/// (shared by the merger's loop with its control plane, for replay progress).
pub type Positions = std::sync::Arc<
    std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<u32, u64>>>,
>;

/// What the merger tells the workers about one output version (`kafka.control-topic`,
/// key = version, JSON): compute it with this configuration, or stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionOrder {
    /// Output version.
    pub version: String,
    /// Compute it (true) or stop (false: dropped, cancelled).
    pub active: bool,
    /// Its result-deciding configuration (`Config::results_fingerprint`).
    pub config: String,
    /// Where each source partition starts when nothing was computed for it yet:
    /// (partition, offset, max event time before it). Empty: the beginning.
    #[serde(default)]
    pub starts: Vec<(u32, u64, i64)>,
    /// An in-place correction's scratch version: read each partition up to this offset,
    /// then make every window of it final. Empty: live, no end.
    #[serde(default)]
    pub ends: Vec<u64>,
    /// Which creation of the version (its `created_ms`): a name used again after a drop
    /// gets a new consumer group and new resume states, never the old ones.
    #[serde(default)]
    pub incarnation: i64,
}

/// Publishes `order` to the control topic and waits until Kafka has it.
///
/// # Errors
/// Kafka refused or could not deliver.
pub fn publish_order(
    k: &crate::config::KafkaSection,
    order: &VersionOrder,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<(), crate::sink::SinkError> {
    use crate::sink::Sink;
    let mut sink = crate::sink::KafkaSink::for_topic(k, &k.control_topic, metrics)?;
    let value = serde_json::to_vec(order).expect("serialisable");
    sink.append(
        order.version.as_bytes(),
        &value,
        chrono::Utc::now().timestamp_millis(),
    )?;
    sink.finish()
}

/// The latest order per version on the control topic.
///
/// # Errors
/// Kafka failures (an unknown topic included).
pub fn read_orders(
    k: &crate::config::KafkaSection,
) -> Result<std::collections::BTreeMap<String, VersionOrder>, crate::source::SourceError> {
    let mut c = k.clone();
    c.topic.clone_from(&k.control_topic);
    Ok(crate::source::read_latest(&c)?
        .into_values()
        .filter_map(|v| serde_json::from_str::<VersionOrder>(&v).ok())
        .map(|o| (o.version.clone(), o))
        .collect())
}

/// A stream computed across roles: its aggregator, as a version's configuration asks for
/// it, and the partials its workers publish.
pub(crate) trait Scaled:
    crate::window::Mergeable<Partial: Published + Serialize + serde::de::DeserializeOwned> + Sized
{
    /// Its partial as merger states stored by earlier kappas hold it.
    type Legacy: serde::de::DeserializeOwned + Into<Self::Partial>;
    /// The aggregator `cfg` asks for (of the stream it is for, `cfg.stream`).
    fn with_config(cfg: &crate::config::Config) -> Self;
    /// A window core of it over `partitions`, with `cfg`'s window sizes and delay.
    fn core(cfg: &crate::config::Config, partitions: usize) -> crate::window::Windows<Self> {
        crate::window::Windows::with(cfg.window_config(), partitions, Self::with_config(cfg))
    }
}

impl Scaled for crate::window::Shop {
    type Legacy = PartialAggV1;
    fn with_config(_: &crate::config::Config) -> Self {
        Self::default()
    }
}

impl Scaled for crate::review::agg::Reviews {
    type Legacy = ReviewWindow;
    fn with_config(cfg: &crate::config::Config) -> Self {
        Self::new(cfg.reviews.min_reviews)
    }
}

/// The aggregates declared on the stream of `cfg`: the clicks' (a stream of their own
/// across roles), or the events' (their windows travel beside the shop's, under the
/// version's [`declared_part`]).
impl Scaled for Declared {
    type Legacy = DeclaredPartial;
    fn with_config(cfg: &crate::config::Config) -> Self {
        Declared::new(
            cfg.declared_plan(cfg.stream),
            crate::rollup::Calendar::new(&cfg.rollups.time_zone).expect("validated zone"),
        )
    }
    /// The declared sizes, not the built-in ones.
    fn core(cfg: &crate::config::Config, partitions: usize) -> crate::window::Windows<Self> {
        let declared = Self::with_config(cfg);
        let wc = declared.window_config(cfg.window_config().max_delay_ms);
        crate::window::Windows::with(wc, partitions, declared)
    }
}

/// What the messages about the events' declared aggregates of `version` are addressed to:
/// their windows, progress and idleness, merged apart from the shop's (their sizes are
/// their own) and stored with the version.
#[must_use]
pub fn declared_part(version: &str) -> String {
    format!("{version}{DECLARED_SUFFIX}")
}

/// The version whose events' declared aggregates `name` is the [`declared_part`] of.
#[must_use]
pub fn of_declared_part(name: &str) -> Option<&str> {
    name.strip_suffix(DECLARED_SUFFIX)
}

const DECLARED_SUFFIX: &str = "/declared";

/// First byte of every message: the encoding's version. New variants go at the end of
/// [`Msg`], so that messages of older workers still decode.
const FORMAT: u8 = 1;

/// One message on `kappa.partials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// One source partition's full sums for one window of the shop events, as kappas
    /// before the funnel per key published them (read, never written).
    Partial {
        /// Which window of which partition.
        head: PartialHead,
        /// Sums over every key.
        sums: PartialAggV1,
    },
    /// Every window of `partition` ending in `(from, through]` is complete on it; the ones
    /// listed in `nonempty` (size, start) have a partial, the others had no events.
    Progress {
        /// Output version.
        version: String,
        /// Source partitions in all.
        partitions: u32,
        /// The source partition.
        partition: u32,
        /// The worker's result-deciding configuration (the merger refuses another).
        config: String,
        /// Exclusive start of the range (the partition's previous finalisation point).
        from: i64,
        /// Inclusive end of the range (the partition's watermark).
        through: i64,
        /// Windows of the range with a partial.
        nonempty: Vec<(i64, i64)>,
        /// An event-time index checkpoint of the partition: (offset, max event time before
        /// it), about every 10 000 records (the merger's store keeps them for replays).
        checkpoint: Option<(u64, i64)>,
        /// The worker's next offset to read on the partition (a replay's progress).
        position: u64,
    },
    /// A source partition went idle (caught up with its log end and silent for
    /// `pipeline.idle-timeout`: it no longer holds windows back) or active again.
    Idle {
        /// Output version.
        version: String,
        /// Source partitions in all.
        partitions: u32,
        /// The source partition.
        partition: u32,
        /// Idle (true) or active again (false).
        idle: bool,
    },
    /// An invalid record a worker read (the merger stores it with the results).
    Dead {
        /// Output version.
        version: String,
        /// The record and why it was refused.
        letter: DeadLetter,
    },
    /// What a source partition's records did, from its start through `position`, across
    /// owners: the merger's counters (what a single process would have counted). Sent
    /// after each progress message.
    Totals {
        /// Output version.
        version: String,
        /// Source partitions in all.
        partitions: u32,
        /// The source partition.
        partition: u32,
        /// The worker's next offset to read on the partition.
        position: u64,
        /// The partition's end offset as the worker last read it (0: not known yet).
        end: u64,
        /// The outcome totals.
        counts: Counts,
    },
    /// A late event a worker read (the merger stores it for a later replay).
    Late {
        /// Output version.
        version: String,
        /// The event's record.
        record: LateRecord,
    },
    /// One source partition's full sums for one window of the reviews (their messages
    /// carry the version's reviews part, `v1/reviews`).
    ReviewPartial {
        /// Which window of which partition.
        head: PartialHead,
        /// Sums over every product.
        sums: ReviewWindow,
    },
    /// One source partition's full sums for one window of the shop events, with the
    /// funnel per key of a 1-hour window.
    ShopPartial {
        /// Which window of which partition.
        head: PartialHead,
        /// Sums over every key.
        sums: PartialAgg,
    },
    /// One source partition's full sums for one window of the declared aggregates of its
    /// size: the clicks' (the version's clicks part, `v1/clicks`) or the events' (its
    /// [`declared_part`], `v1/declared`).
    DeclaredPartial {
        /// Which window of which partition.
        head: PartialHead,
        /// Each aggregate's groups with their distinct values.
        sums: DeclaredPartial,
    },
}

/// What a partial says besides its sums. (Its fields are the first fields of the flat
/// `Partial` of earlier kappas, in their order: bincode writes a nested struct's fields
/// in line, so their messages still decode.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialHead {
    /// Output version (or a stream's part of it).
    pub version: String,
    /// Source partitions in all (every one must report before a window is final).
    pub partitions: u32,
    /// The source partition.
    pub partition: u32,
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// The partition's watermark when published.
    pub watermark: i64,
    /// The worker's result-deciding configuration (the merger refuses another).
    pub config: String,
}

/// A stream's partial sums as a message on `kappa.partials`, and back.
pub trait Published: Sized {
    /// The message carrying `sums`.
    fn message(head: PartialHead, sums: Self) -> Msg;
    /// The head and sums `msg` carries, if it is a partial of this stream.
    ///
    /// # Errors
    /// `msg` itself, when it is not (handed back as it came, not copied).
    #[allow(clippy::result_large_err)]
    fn of(msg: Msg) -> Result<(PartialHead, Self), Msg>;
}

impl Published for PartialAgg {
    fn message(head: PartialHead, sums: Self) -> Msg {
        Msg::ShopPartial { head, sums }
    }
    #[allow(clippy::result_large_err)]
    fn of(msg: Msg) -> Result<(PartialHead, Self), Msg> {
        match msg {
            Msg::ShopPartial { head, sums } => Ok((head, sums)),
            Msg::Partial { head, sums } => Ok((head, sums.into())),
            other => Err(other),
        }
    }
}

impl Published for ReviewWindow {
    fn message(head: PartialHead, sums: Self) -> Msg {
        Msg::ReviewPartial { head, sums }
    }
    #[allow(clippy::result_large_err)]
    fn of(msg: Msg) -> Result<(PartialHead, Self), Msg> {
        match msg {
            Msg::ReviewPartial { head, sums } => Ok((head, sums)),
            other => Err(other),
        }
    }
}

impl Published for DeclaredPartial {
    fn message(head: PartialHead, sums: Self) -> Msg {
        Msg::DeclaredPartial { head, sums }
    }
    #[allow(clippy::result_large_err)]
    fn of(msg: Msg) -> Result<(PartialHead, Self), Msg> {
        match msg {
            Msg::DeclaredPartial { head, sums } => Ok((head, sums)),
            other => Err(other),
        }
    }
}

impl Msg {
    /// The output version it is about.
    #[must_use]
    pub fn version(&self) -> &str {
        match self {
            Self::Partial { head, .. }
            | Self::ReviewPartial { head, .. }
            | Self::ShopPartial { head, .. }
            | Self::DeclaredPartial { head, .. } => &head.version,
            Self::Progress { version, .. }
            | Self::Idle { version, .. }
            | Self::Dead { version, .. }
            | Self::Late { version, .. }
            | Self::Totals { version, .. } => version,
        }
    }

    /// The result-deciding configuration a partial or a progress message was computed
    /// with.
    #[must_use]
    pub fn config(&self) -> Option<&str> {
        match self {
            Self::Partial { head, .. }
            | Self::ReviewPartial { head, .. }
            | Self::ShopPartial { head, .. }
            | Self::DeclaredPartial { head, .. } => Some(&head.config),
            Self::Progress { config, .. } => Some(config),
            _ => None,
        }
    }

    /// The Kafka key: partials by (version, window), so that repeats of one partial land in
    /// one partition in order; progress and dead letters by (version, source partition).
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Msg::Partial { head, .. }
            | Msg::ReviewPartial { head, .. }
            | Msg::ShopPartial { head, .. }
            | Msg::DeclaredPartial { head, .. } => {
                format!("{}/w/{}/{}", head.version, head.size_ms, head.start_ms)
            }
            Msg::Progress {
                version, partition, ..
            }
            | Msg::Idle {
                version, partition, ..
            }
            | Msg::Totals {
                version, partition, ..
            } => format!("{version}/p/{partition}"),
            Msg::Dead { version, letter } => format!("{version}/p/{}", letter.partition),
            Msg::Late { version, record } => format!("{version}/p/{}", record.partition),
        }
    }

    /// Bytes on the wire: a format byte, then bincode.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("encoding into memory");
        out
    }

    /// The message in `bytes`.
    ///
    /// # Errors
    /// An unknown format byte or bytes that do not decode.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => {
                bincode::serde::decode_from_slice(rest, bincode::config::standard())
                    .map(|(m, _)| m)
                    .map_err(|e| format!("undecodable partials message: {e}"))
            }
            Some((v, _)) => Err(format!(
                "partials message format {v} (this kappa reads {FORMAT})"
            )),
            None => Err("empty partials message".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_other_formats() {
        let m = Msg::Progress {
            version: "v1".into(),
            partitions: 6,
            partition: 2,
            config: "window-sizes=[1m]".into(),
            from: i64::MIN,
            through: 1_700_000_060_000,
            nonempty: vec![(60_000, 1_700_000_000_000)],
            checkpoint: Some((10_000, 1_699_999_999_000)),
            position: 10_000,
        };
        let bytes = m.encode();
        assert_eq!(Msg::decode(&bytes).unwrap(), m);
        assert_eq!(m.key(), "v1/p/2");
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Msg::decode(&other).unwrap_err().contains("format 9"));
        assert!(Msg::decode(&bytes[..bytes.len() - 1]).is_err());
        let t = Msg::Totals {
            version: "v1".into(),
            partitions: 6,
            partition: 2,
            position: 10_000,
            end: 12_000,
            counts: Counts {
                read: 10_000,
                accepted: 9_990,
                late: 10,
                ..Counts::default()
            },
        };
        assert_eq!(Msg::decode(&t.encode()).unwrap(), t);
        assert_eq!(t.key(), "v1/p/2");
    }

    #[test]
    fn a_partial_of_an_earlier_kappa_decodes_and_review_partials_round_trip() {
        // The flat `Partial` earlier workers wrote (variant 0).
        #[derive(Serialize)]
        enum Flat {
            Partial {
                version: String,
                partitions: u32,
                partition: u32,
                size_ms: i64,
                start_ms: i64,
                watermark: i64,
                config: String,
                sums: PartialAggV1,
            },
        }
        let sums = PartialAggV1 {
            counts: [3, 2, 1, 4],
            categories: vec![("shoes".into(), 1, 2, 3_000)],
            products: vec![("p1".into(), 1, 2, 3_000)],
            queries: vec![("red".into(), 4)],
        };
        let flat = Flat::Partial {
            version: "v1".into(),
            partitions: 6,
            partition: 2,
            size_ms: 60_000,
            start_ms: 1_700_000_000_000,
            watermark: 1_700_000_061_000,
            config: "c".into(),
            sums: sums.clone(),
        };
        let mut bytes = vec![FORMAT];
        bincode::serde::encode_into_std_write(&flat, &mut bytes, bincode::config::standard())
            .unwrap();
        let head = PartialHead {
            version: "v1".into(),
            partitions: 6,
            partition: 2,
            size_ms: 60_000,
            start_ms: 1_700_000_000_000,
            watermark: 1_700_000_061_000,
            config: "c".into(),
        };
        let m = Msg::Partial {
            head: head.clone(),
            sums,
        };
        assert_eq!(Msg::decode(&bytes).unwrap(), m);
        assert_eq!(m.encode(), bytes);
        assert_eq!(m.key(), "v1/w/60000/1700000000000");
        // Read as a partial without the funnel per key; published as a ShopPartial.
        let (h, new) = PartialAgg::of(m.clone()).unwrap();
        assert_eq!(new.counts, [3, 2, 1, 4]);
        assert!(new.product_funnel.is_empty());
        let shop = PartialAgg::message(h, new.clone());
        assert_eq!(Msg::decode(&shop.encode()).unwrap(), shop);
        assert_eq!(PartialAgg::of(shop).unwrap().1, new);

        let mut w = ReviewWindow::default();
        w.add(4, "p1", &[]);
        let r = ReviewWindow::message(
            PartialHead {
                version: "v1/reviews".into(),
                ..head
            },
            w.clone(),
        );
        assert_eq!(Msg::decode(&r.encode()).unwrap(), r);
        assert_eq!(r.version(), "v1/reviews");
        assert_eq!(ReviewWindow::of(r).unwrap().1, w);
        assert!(ReviewWindow::of(m).is_err());
    }
}
