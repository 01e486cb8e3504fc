//! Streams (issue 18): one log each — a Kafka topic or an embedded-log directory — with
//! its own schema family and aggregates.
//!
//! | stream | topic (default) | embedded log | read as |
//! |---|---|---|---|
//! | `events` | `kafka.topic` (`shop.events`) | `{data-dir}/log` | [`crate::window::Shop`] |
//! | `reviews` | `kafka.reviews-topic` (`shop.reviews`) | `{data-dir}/streams/reviews` | [`crate::review::Reviews`] |
//! | `products` | `kafka.products-topic` (`shop.products`) | `{data-dir}/streams/products` | the catalogue the events are joined with ([`crate::products::AsOf`]) |
//! | `clicks` | `kafka.clicks-topic` (`shop.clicks`) | `{data-dir}/streams/clicks` | any JSON objects, time field and format configured (`[clicks]`), for declared aggregates ([`crate::clicks`]) |
//!
//! A stream's results, positions, late records and final point are kept under its own
//! output version name: the events' under the version itself (`v1`, as before streams
//! existed), another stream's under `v1/reviews` ([`Stream::version`]). People name
//! versions without `/`, so the two never meet; one store transaction commits the
//! versions of every stream a pipeline reads ([`crate::store::Store::commit_all`]).

use std::path::{Path, PathBuf};

/// A stream kappa reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Search, view, add-to-cart, purchase (`shop.events`).
    #[default]
    Events,
    /// Reviews: a rating and free text (`shop.reviews`).
    Reviews,
    /// The product catalogue: entries valid from a time (`shop.products`).
    Products,
    /// Any JSON objects with a time field (`shop.clicks`): read only by the aggregates
    /// declared on it (issue 20).
    Clicks,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 4] = [Self::Events, Self::Reviews, Self::Products, Self::Clicks];

    /// `events`, `reviews`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Reviews => "reviews",
            Self::Products => "products",
            Self::Clicks => "clicks",
        }
    }

    /// Parses [`Stream::as_str`].
    ///
    /// # Errors
    /// An unknown name, with the known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("unknown stream {s:?}; one of events, reviews, products, clicks")
            })
    }

    /// The embedded log directory of this stream under `data_dir`.
    #[must_use]
    pub fn log_dir(self, data_dir: &Path) -> PathBuf {
        match self {
            Self::Events => data_dir.join("log"),
            other => data_dir.join("streams").join(other.as_str()),
        }
    }

    /// The output version name holding this stream's part of version `version`.
    #[must_use]
    pub fn version(self, version: &str) -> String {
        match self {
            Self::Events => version.to_string(),
            other => format!("{version}/{}", other.as_str()),
        }
    }

    /// The stream whose part `stored` (a name [`Stream::version`] made) holds, and the
    /// version it is part of.
    #[must_use]
    pub fn of_version(stored: &str) -> (Self, &str) {
        match stored.rsplit_once('/') {
            Some((base, s)) => match Self::parse(s) {
                Ok(s) => (s, base),
                Err(_) => (Self::Events, stored),
            },
            None => (Self::Events, stored),
        }
    }
}

/// Whether `stored` names a stream's part of a version (`v1/reviews`), not a version.
#[must_use]
pub fn is_part(stored: &str) -> bool {
    Stream::of_version(stored).0 != Stream::Events
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_streams_round_trip() {
        for s in Stream::ALL {
            let v = s.version("v1");
            assert_eq!(Stream::of_version(&v), (s, "v1"));
            assert_eq!(Stream::parse(s.as_str()), Ok(s));
        }
        assert_eq!(Stream::version(Stream::Events, "v2"), "v2");
        assert_eq!(Stream::version(Stream::Reviews, "v2"), "v2/reviews");
        assert_eq!(Stream::version(Stream::Clicks, "v2"), "v2/clicks");
        assert!(
            Stream::parse("taps")
                .unwrap_err()
                .contains("events, reviews, products, clicks")
        );
        let d = Path::new("/d");
        assert_eq!(Stream::Events.log_dir(d), Path::new("/d/log"));
        assert_eq!(Stream::Reviews.log_dir(d), Path::new("/d/streams/reviews"));
    }
}
