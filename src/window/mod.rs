//! Event-time tumbling windows under watermarks — pure logic, no I/O.
//!
//! - [`assign`]: epoch-aligned window arithmetic;
//! - [`watermark`]: one partition's watermark and duplicate filter;
//! - [`aggregate`]: the per-window aggregates and their final form (top-K etc.);
//! - [`core`]: [`Windows`], which routes a stream's items, decides late / duplicate, and
//!   emits final windows when the pipeline watermark passes their end; what it folds is the
//!   stream's [`Aggregator`] ([`WindowCore`] = the shop events' [`Shop`]).
//!
//! Nothing here knows about tokio, redb or the log: the pipeline drives it.

pub mod aggregate;
pub mod assign;
pub mod core;
pub mod watermark;

pub use aggregate::{
    CategorySales, FinalWindow, PartialAgg, PartialAggV1, ProductSales, QueryCount,
};
pub use core::{
    Aggregator, LateReason, Mergeable, Outcome, PartitionResume, Shop, WindowCore, Windows,
};

/// The part of the pipeline configuration that decides results. Two runs with equal
/// `WindowConfig`s over the same log produce byte-identical final results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window sizes in milliseconds, ascending, each a whole number of seconds.
    pub sizes_ms: Vec<i64>,
    /// Bounded out-of-orderness: `wm_p = max event time on p − max_delay`.
    pub max_delay_ms: i64,
    /// How many entries the top-K aggregates keep.
    pub top_k: usize,
}

impl WindowConfig {
    /// Width of a duplicate-filter bucket: the greatest common divisor of the window sizes,
    /// so every bucket lies inside exactly one window of each size.
    #[must_use]
    pub fn dedup_bucket_ms(&self) -> i64 {
        self.sizes_ms.iter().copied().fold(0, gcd).max(1)
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            sizes_ms: vec![60_000, 3_600_000],
            max_delay_ms: 30_000,
            top_k: 10,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
