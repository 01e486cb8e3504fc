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

pub mod merger;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::store::DeadLetter;
use crate::window::PartialAgg;

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

/// The default topic of partials (`kafka.partials-topic`).
pub const PARTIALS_TOPIC: &str = "kappa.partials";

/// First byte of every message: the encoding's version.
const FORMAT: u8 = 1;

/// One message on `kappa.partials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// One source partition's full sums for one window.
    Partial {
        /// Output version.
        version: String,
        /// Source partitions in all (every one must report before a window is final).
        partitions: u32,
        /// The source partition.
        partition: u32,
        /// Window size (ms).
        size_ms: i64,
        /// Window start (epoch ms).
        start_ms: i64,
        /// The partition's watermark when published.
        watermark: i64,
        /// Sums over every key.
        sums: PartialAgg,
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
        /// Exclusive start of the range (the partition's previous finalisation point).
        from: i64,
        /// Inclusive end of the range (the partition's watermark).
        through: i64,
        /// Windows of the range with a partial.
        nonempty: Vec<(i64, i64)>,
    },
    /// An invalid record a worker read (the merger stores it with the results).
    Dead {
        /// Output version.
        version: String,
        /// The record and why it was refused.
        letter: DeadLetter,
    },
}

impl Msg {
    /// The Kafka key: partials by (version, window), so that repeats of one partial land in
    /// one partition in order; progress and dead letters by (version, source partition).
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Msg::Partial {
                version,
                size_ms,
                start_ms,
                ..
            } => format!("{version}/w/{size_ms}/{start_ms}"),
            Msg::Progress {
                version, partition, ..
            } => format!("{version}/p/{partition}"),
            Msg::Dead { version, letter } => format!("{version}/p/{}", letter.partition),
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
            from: i64::MIN,
            through: 1_700_000_060_000,
            nonempty: vec![(60_000, 1_700_000_000_000)],
        };
        let bytes = m.encode();
        assert_eq!(Msg::decode(&bytes).unwrap(), m);
        assert_eq!(m.key(), "v1/p/2");
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Msg::decode(&other).unwrap_err().contains("format 9"));
        assert!(Msg::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
