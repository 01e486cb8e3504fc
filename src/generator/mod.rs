//! Seeded, deterministic e-commerce event generator behind `kappa produce`.
//!
//! The output is a pure function of [`GenConfig`]: the same config yields a
//! byte-identical record sequence. Records are schema-v1 JSON events keyed by
//! user id, with optional disorder, late events, duplicates and malformed
//! records injected.
//!
//! Model: a seed-derived [`Catalogue`] with Zipf popularity; a pool of
//! [`POOL_SIZE`] concurrently active shopping sessions, each walking
//! searches → views (→ `add_cart`) → purchases; a simulated event-time
//! clock whose rate follows an hourly traffic curve times the sale factor.

mod catalogue;
mod event;
mod json;
mod malformed;
pub mod products;
mod queries;
pub mod reviews;
mod session;
#[cfg(test)]
mod tests;

use rand::distr::{Bernoulli, Distribution};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use catalogue::{Catalogue, Product, ZIPF_S, category_names};
pub use json::{civil_from_days, push_rfc3339_ms};
pub use malformed::MalformedKind;

use event::{Event, Fault, Field, PriceMode, push_user, write_event};
use session::{Behaviour, EventType, Session};

/// Number of concurrently active sessions.
pub const POOL_SIZE: usize = 256;

/// 2026-11-23T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_795_392_000_000;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// Largest accepted `start-ms` (9999-12-31T23:59:59.999Z).
const MAX_START_MS: i64 = 253_402_300_799_999;
/// Upper bound for `disorder-ms` and `late-max-ms` (30 days).
const MAX_OFFSET_MS: i64 = 30 * DAY_MS;
const MAX_PRODUCTS: u32 = 10_000_000;

/// Relative traffic per hour of day (UTC); normalised to mean 1 at startup.
/// Night trough ≈ 0.25, evening peak ≈ 1.8.
const TRAFFIC_CURVE: [f64; 24] = [
    0.55, 0.38, 0.28, 0.25, 0.25, 0.30, 0.45, 0.70, 0.90, 1.05, 1.15, 1.20, //
    1.30, 1.25, 1.15, 1.10, 1.15, 1.30, 1.50, 1.70, 1.80, 1.75, 1.40, 0.90,
];

/// The normalised traffic multiplier for `hour` (0–23); averages 1 over a day.
#[must_use]
pub fn traffic_curve(hour: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let mean = TRAFFIC_CURVE.iter().sum::<f64>() / TRAFFIC_CURVE.len() as f64;
    TRAFFIC_CURVE[hour % 24] / mean
}

/// Generator settings; the output is a pure function of these.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// RNG seed for the catalogue and the event stream.
    pub seed: u64,
    /// Start of the simulated event-time clock (epoch ms).
    pub start_ms: i64,
    /// Mean events per simulated second (before curve and sale).
    pub base_rate: f64,
    /// Traffic multiplier (> 1 also raises conversion and adds a sale campaign).
    pub sale: f64,
    /// Ignore the hourly traffic curve: exactly `base_rate × sale` events per second.
    pub flat: bool,
    /// Number of catalogue products (`p_1` … `p_N`).
    pub products: u32,
    /// Size of the user-id space; session users are drawn from `u_1` … `u_N`.
    pub users: u32,
    /// Every event's ts lags its emit time by uniform(0, `disorder_ms`).
    pub disorder_ms: i64,
    /// Probability an event gets a late offset uniform(`late_min_ms`, `late_max_ms`).
    pub late_share: f64,
    /// Smallest late offset (ms).
    pub late_min_ms: i64,
    /// Largest late offset (ms); at least `late_min_ms`.
    pub late_max_ms: i64,
    /// Probability a well-formed record is re-emitted 1–50 records later.
    pub duplicate_share: f64,
    /// Probability a record is replaced by a malformed one.
    pub malformed_share: f64,
    /// Probability a record is a session document (`"schema":"session/1"`) carrying the
    /// next 2–5 steps of one session, its views without an `event_id` (kappa derives one)
    /// and its purchases without category and price (kappa joins the catalogue).
    pub session_doc_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            start_ms: DEFAULT_START_MS,
            base_rate: 1000.0,
            sale: 1.0,
            flat: false,
            products: 5000,
            users: 100_000,
            disorder_ms: 5000,
            late_share: 0.0,
            late_min_ms: 60_000,
            late_max_ms: 600_000,
            duplicate_share: 0.0,
            malformed_share: 0.0,
            session_doc_share: 0.0,
        }
    }
}

impl GenConfig {
    /// Check every field; the error is one line naming the offending field
    /// (in its CLI spelling).
    ///
    /// # Errors
    /// The first invalid field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0..=MAX_START_MS).contains(&self.start_ms) {
            return Err(format!(
                "start-ms must be between 0 and {MAX_START_MS} (1970 to year 9999), got {}",
                self.start_ms
            ));
        }
        if !(0.001..=1e9).contains(&self.base_rate) {
            return Err(format!(
                "base-rate must be between 0.001 and 1000000000, got {}",
                self.base_rate
            ));
        }
        if !(0.01..=1000.0).contains(&self.sale) {
            return Err(format!(
                "sale must be between 0.01 and 1000, got {}",
                self.sale
            ));
        }
        if !(1..=MAX_PRODUCTS).contains(&self.products) {
            return Err(format!(
                "products must be between 1 and {MAX_PRODUCTS}, got {}",
                self.products
            ));
        }
        if self.users == 0 {
            return Err("users must be at least 1, got 0".to_string());
        }
        if !(0..=MAX_OFFSET_MS).contains(&self.disorder_ms) {
            return Err(format!(
                "disorder-ms must be between 0 and {MAX_OFFSET_MS}, got {}",
                self.disorder_ms
            ));
        }
        for (name, v) in [
            ("late-share", self.late_share),
            ("duplicate-share", self.duplicate_share),
            ("malformed-share", self.malformed_share),
            ("session-docs", self.session_doc_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if !(0..=MAX_OFFSET_MS).contains(&self.late_min_ms) {
            return Err(format!(
                "late-min-ms must be between 0 and {MAX_OFFSET_MS}, got {}",
                self.late_min_ms
            ));
        }
        if !(self.late_min_ms..=MAX_OFFSET_MS).contains(&self.late_max_ms) {
            return Err(format!(
                "late-max-ms must be between late-min-ms ({}) and {MAX_OFFSET_MS}, got {}",
                self.late_min_ms, self.late_max_ms
            ));
        }
        Ok(())
    }
}

/// How a record was generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordKind {
    /// A well-formed event with ordinary disorder.
    #[default]
    Valid,
    /// A well-formed event generated with a late offset (it may or may not
    /// end up late in kappa).
    Late,
    /// A byte-identical re-emission of an earlier Valid/Late record.
    Duplicate,
    /// Not a valid schema-v1 event.
    Malformed,
}

/// One generated record; reuse it across [`Generator::next_into`] calls.
#[derive(Clone, Debug, Default)]
pub struct GenRecord {
    /// `user_id` bytes (`u_N`).
    pub key: Vec<u8>,
    /// The record payload: a JSON event, or malformed bytes.
    pub value: Vec<u8>,
    /// Simulated emit time (epoch ms), monotone non-decreasing.
    pub emit_at_ms: i64,
    /// How this record was generated.
    pub kind: RecordKind,
}

struct PendingDup {
    due: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The deterministic record generator.
pub struct Generator {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    catalogue: Catalogue,
    behaviour: Behaviour,
    pool: Vec<Session>,
    next_session: u64,
    /// Sim clock in µs plus the sub-µs remainder carried between ticks.
    sim_us: i64,
    carry_us: f64,
    /// Inter-event gap (µs) per hour of day.
    gap_us: [f64; 24],
    id_key: u64,
    events: u64,
    records: u64,
    /// Next malformed kind (index into [`MalformedKind::ALL`]) and how many
    /// full cycles of kinds have been emitted (selects sub-variants).
    malformed_kind: usize,
    malformed_round: u64,
    late: Bernoulli,
    dup: Bernoulli,
    malformed: Bernoulli,
    docs: Bernoulli,
    pending: Vec<PendingDup>,
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    query: Vec<u8>,
    scratch: Vec<u8>,
}

/// splitmix64 finaliser: a bijection on u64.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Generator {
    /// # Panics
    /// If `cfg.validate()` fails.
    #[must_use]
    pub fn new(cfg: GenConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid generator config: {e}");
        }
        let catalogue = Catalogue::new(cfg.seed, cfg.products);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let behaviour = Behaviour::new(cfg.users, cfg.sale);
        // The start is part of the ids' key: a second run with the same seed but another
        // start (a restarted `produce --start now`, a second `demo`) must not repeat the
        // first run's event ids, which the pipeline would drop as duplicates.
        let id_key = rng.next_u64() ^ mix64(cfg.start_ms.cast_unsigned());
        let mut next_session = 1;
        let mut query = Vec::with_capacity(128);
        let pool = (0..POOL_SIZE)
            .map(|_| {
                let mut s = Session::new(next_session, &mut rng, &behaviour);
                next_session += 1;
                // Warm-up: start sessions at staggered points of their walk so
                // the first records are not all searches.
                for _ in 0..rng.random_range(0..4u32) {
                    s.step(&mut rng, &catalogue, &behaviour, &mut query);
                    if s.done() {
                        s = Session::new(next_session, &mut rng, &behaviour);
                        next_session += 1;
                    }
                }
                s
            })
            .collect();
        let mut gap_us = [0.0; 24];
        for (h, g) in gap_us.iter_mut().enumerate() {
            let curve = if cfg.flat { 1.0 } else { traffic_curve(h) };
            *g = 1e6 / (cfg.base_rate * curve * cfg.sale);
        }
        let bern = |p: f64| Bernoulli::new(p).expect("validated share");
        Generator {
            rng,
            catalogue,
            behaviour,
            pool,
            next_session,
            sim_us: cfg.start_ms * 1000,
            carry_us: 0.0,
            gap_us,
            id_key,
            events: 0,
            records: 0,
            malformed_kind: 0,
            malformed_round: 0,
            late: bern(cfg.late_share),
            dup: bern(cfg.duplicate_share),
            malformed: bern(cfg.malformed_share),
            docs: bern(cfg.session_doc_share),
            pending: Vec::with_capacity(64),
            spare: Vec::new(),
            query,
            scratch: Vec::with_capacity(64),
            cfg,
        }
    }

    /// The product catalogue this generator draws from.
    #[must_use]
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The configuration this generator was built with.
    #[must_use]
    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Advance the sim clock by one inter-event gap at the current hour's rate.
    fn tick(&mut self) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let hour = ((self.sim_us / 1000).rem_euclid(DAY_MS) / HOUR_MS) as usize;
        let gap = self.gap_us[hour] + self.carry_us;
        let whole = gap.floor();
        self.carry_us = gap - whole;
        #[allow(clippy::cast_possible_truncation)]
        {
            self.sim_us = self.sim_us.saturating_add(whole as i64);
        }
    }

    fn next_event_id(&mut self) -> u64 {
        let id = mix64(self.id_key ^ self.events);
        self.events += 1;
        id
    }

    fn draw_ts(&mut self, emit_at: i64) -> (i64, RecordKind) {
        if self.late.sample(&mut self.rng) {
            let off = self
                .rng
                .random_range(self.cfg.late_min_ms..=self.cfg.late_max_ms);
            (emit_at - off, RecordKind::Late)
        } else {
            (
                emit_at - self.rng.random_range(0..=self.cfg.disorder_ms),
                RecordKind::Valid,
            )
        }
    }

    /// Fill `out` with the next record, reusing its buffers.
    pub fn next_into(&mut self, out: &mut GenRecord) {
        let emit_at = self.sim_us / 1000;
        self.tick();
        let record = self.records;
        self.records += 1;
        out.emit_at_ms = emit_at;
        out.key.clear();
        out.value.clear();

        // A duplicate that has come due takes this slot.
        if let Some(i) = self.due_duplicate(record) {
            let d = self.pending.swap_remove(i);
            out.key.extend_from_slice(&d.key);
            out.value.extend_from_slice(&d.value);
            out.kind = RecordKind::Duplicate;
            self.spare.push((d.key, d.value));
            return;
        }

        if self.malformed.sample(&mut self.rng) {
            self.write_malformed(out, emit_at);
            out.kind = RecordKind::Malformed;
            return;
        }

        // Drawn only when asked for: without documents, a seed gives the same bytes as
        // before they existed.
        if self.cfg.session_doc_share > 0.0 && self.docs.sample(&mut self.rng) {
            self.write_document(out, emit_at);
            out.kind = RecordKind::Valid;
            return;
        }

        let idx = self.rng.random_range(0..POOL_SIZE);
        push_user(&mut out.key, self.pool[idx].user);
        let mut kind = RecordKind::Valid;
        self.write_step(
            idx,
            &mut out.value,
            |g| {
                let ts_ms;
                (ts_ms, kind) = g.draw_ts(emit_at);
                let price_mode = match g.rng.random_range(0..20u32) {
                    0 => PriceMode::Number,
                    1 => PriceMode::NumberTrimmed,
                    _ => PriceMode::String,
                };
                (ts_ms, price_mode)
            },
            |_| Fault::NONE,
        );
        out.kind = kind;

        if self.dup.sample(&mut self.rng) {
            let due = record + self.rng.random_range(1..=50u64);
            let (mut key, mut value) = self.spare.pop().unwrap_or_default();
            key.clear();
            key.extend_from_slice(&out.key);
            value.clear();
            value.extend_from_slice(&out.value);
            self.pending.push(PendingDup { due, key, value });
        }
    }

    /// The next step of session `idx` as an event into `buf`: its time and price
    /// spelling from `time` (drawn after the step), its fault from `fault` (by type).
    /// A session that is done is replaced; returns whether it was.
    fn write_step(
        &mut self,
        idx: usize,
        buf: &mut Vec<u8>,
        time: impl FnOnce(&mut Self) -> (i64, PriceMode),
        fault: impl Fn(EventType) -> Fault<'static>,
    ) -> bool {
        let step = self.pool[idx].step(
            &mut self.rng,
            &self.catalogue,
            &self.behaviour,
            &mut self.query,
        );
        let (ts_ms, price_mode) = time(self);
        let event_id = self.next_event_id();
        let s = &self.pool[idx];
        let is_search = step.etype == EventType::Search;
        let ev = Event {
            id: event_id,
            type_name: step.etype.as_str(),
            user: s.user,
            session: s.id,
            product: (!is_search).then(|| self.catalogue.product(step.product)),
            quantity: step.quantity,
            price_mode,
            ts_ms,
            device: s.device,
            app: s.app,
            referrer: s.referrer,
            campaign: s.campaign,
            query: is_search.then_some(&self.query[..]),
            query_absent: s.query_absent,
        };
        write_event(buf, &ev, &fault(step.etype));
        let done = self.pool[idx].done();
        if done {
            self.pool[idx] = Session::new(self.next_session, &mut self.rng, &self.behaviour);
            self.next_session += 1;
        }
        done
    }

    /// A session document: the next 2–5 steps of one session as the inner events of one
    /// `session/1` record (each a full event object, a view without its `event_id`).
    fn write_document(&mut self, out: &mut GenRecord, emit_at: i64) {
        let idx = self.rng.random_range(0..POOL_SIZE);
        let (user, session) = (self.pool[idx].user, self.pool[idx].id);
        push_user(&mut out.key, user);
        out.value
            .extend_from_slice(br#"{"schema":"session/1","session_id":"s_"#);
        out.value.extend_from_slice(session.to_string().as_bytes());
        out.value.extend_from_slice(br#"","user_id":""#);
        push_user(&mut out.value, user);
        out.value.extend_from_slice(br#"","events":["#);
        let steps = self.rng.random_range(2..=5);
        for i in 0..steps {
            if i > 0 {
                out.value.push(b',');
            }
            let disorder = self.cfg.disorder_ms;
            // Views carry no id (kappa derives one); purchases leave their category and
            // price to the catalogue valid at their time (`kappa produce --stream
            // products` writes the generator's).
            let done = self.write_step(
                idx,
                &mut out.value,
                |g| {
                    let ts_ms = emit_at - g.rng.random_range(0..=disorder);
                    (ts_ms, PriceMode::String)
                },
                |etype| match etype {
                    EventType::View => Fault {
                        omit: Field::EventId,
                        ..Fault::NONE
                    },
                    EventType::Purchase => Fault {
                        omit: Field::Category,
                        omit_too: Field::Price,
                        ..Fault::NONE
                    },
                    EventType::Search | EventType::AddCart => Fault::NONE,
                },
            );
            if done {
                break;
            }
        }
        out.value.extend_from_slice(b"]}");
    }

    /// The pending duplicate with the smallest due index ≤ `record`.
    fn due_duplicate(&self, record: u64) -> Option<usize> {
        let (i, d) = self.pending.iter().enumerate().min_by_key(|(_, d)| d.due)?;
        (d.due <= record).then_some(i)
    }

    /// A malformed record derived from a synthetic product event of a random
    /// active session (the session itself is not advanced).
    fn write_malformed(&mut self, out: &mut GenRecord, emit_at: i64) {
        let kind = MalformedKind::ALL[self.malformed_kind];
        let variant = self.malformed_round;
        self.malformed_kind += 1;
        if self.malformed_kind == MalformedKind::ALL.len() {
            self.malformed_kind = 0;
            self.malformed_round += 1;
        }
        let s = &self.pool[self.rng.random_range(0..POOL_SIZE)];
        let (user, session, device, app, referrer, campaign) =
            (s.user, s.id, s.device, s.app, s.referrer, s.campaign);
        let product = self.catalogue.sample(&mut self.rng);
        let etype =
            [EventType::View, EventType::AddCart, EventType::Purchase][self.rng.random_range(0..3)];
        let ts_ms = emit_at - self.rng.random_range(0..=self.cfg.disorder_ms);
        let event_id = self.next_event_id();
        let ev = Event {
            id: event_id,
            type_name: etype.as_str(),
            user,
            session,
            product: Some(self.catalogue.product(product)),
            quantity: 1,
            price_mode: PriceMode::String,
            ts_ms,
            device,
            app,
            referrer,
            campaign,
            query: None,
            query_absent: false,
        };
        push_user(&mut out.key, user);
        malformed::write_malformed(
            &mut self.rng,
            kind,
            variant,
            &ev,
            &mut self.scratch,
            &mut out.value,
        );
    }
}

impl Iterator for Generator {
    type Item = GenRecord;

    /// Allocating convenience wrapper around [`Generator::next_into`]; never ends.
    fn next(&mut self) -> Option<GenRecord> {
        let mut r = GenRecord::default();
        self.next_into(&mut r);
        Some(r)
    }
}
