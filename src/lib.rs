//! # kappa
//!
//! A Kappa-architecture stream processor for e-commerce events: one pipeline reads an
//! append-only log, computes event-time tumbling windows under watermarks and writes
//! idempotent, final window results to redb. History is recomputed by replaying the log.
//!
//! # Layout
//! - [`event`]: the wire schema, decoding into one internal event type, money and time;
//! - [`log`]: the embedded log — partitioned, append-only segment files on local disk;
//! - [`source`]: what the pipeline reads from (the embedded log, Kafka);
//! - [`sink`]: where `kappa produce` appends (the embedded log, Kafka);
//! - [`window`]: assigner, watermarks, deduplication and aggregates — pure, no I/O;
//! - [`pipeline`]: the loop that drives source → decode → window core → store;
//! - [`store`]: redb — final results, positions, event-time index, dead letters, versions;
//! - [`stream`]: the streams kappa reads (events, reviews, products, clicks): log, topic, output
//!   version;
//! - [`products`]: the product catalogue as a stream of entries valid from a time, and the
//!   as-of lookup that completes the events;
//! - [`review`]: reviews — the record of `shop.reviews`, the aspect × sentiment reading of
//!   their text and the window aggregates the reviews stream computes;
//! - [`replay`]: replays — plans, in-place corrections, audits, new output versions;
//! - [`control`]: the running server's replays and version pipelines;
//! - [`scale`]: scale-out — workers publishing partial aggregates, the merger that makes
//!   them final, the control topic of replays across them;
//! - [`compare`] (in [`store`]): window fingerprints and the comparison of two versions
//!   (compare, diffs, audits);
//! - [`query`]: reading results back (JSON shapes shared by the API and the CLI);
//! - [`server`]: one process started and stopped as a whole — its role's thread, its
//!   replays and the HTTP API (used by `kappa run`, `kappa demo` and the tests);
//! - [`http`]: the warp server — metrics, health, JSON API;
//! - [`metrics`]: the catalogue of Prometheus metrics;
//! - [`generator`]: the seeded, realistic traffic generator behind `kappa produce`;
//! - [`topics`]: topics as code (`topics/*.toml`, `kappa topics apply|list`);
//! - [`config`]: the layered configuration tree;
//! - [`declared`]: declared aggregates — the `[[aggregates]]` declarations checked into a
//!   plan and their windows' evaluation (issue 20), over the events or the clicks;
//! - [`clicks`]: the clicks stream — any JSON objects, their time field and format
//!   configured (`[clicks]`);
//! - [`text`]: making input printable for people (tables, messages);
//! - [`cli`]: the `kappa` command line.

#![warn(missing_docs)]

pub mod cli;
pub mod clicks;
pub mod config;
pub mod control;
pub mod declared;
pub mod event;
pub mod generator;
pub mod http;
pub mod log;
pub mod metrics;
pub mod pipeline;
pub mod products;
pub mod query;
pub mod range;
pub mod replay;
pub mod review;
pub mod rollup;
pub mod scale;
pub mod server;
pub mod sink;
pub mod source;
pub mod store;
pub mod stream;
pub mod text;
pub mod topics;
pub mod window;

pub use store::compare;
