//! # kappa
//!
//! A Kappa-architecture stream processor for e-commerce events: one pipeline reads an
//! append-only log, computes event-time tumbling windows under watermarks and writes
//! idempotent, final window results to redb. History is recomputed by replaying the log.
//!
//! # Layout
//! - [`event`]: the wire schema, decoding into one internal event type, money and time;
//! - [`window`]: assigner, watermarks, deduplication and aggregates — pure, no I/O;
pub mod event;
pub mod window;
