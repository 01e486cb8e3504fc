//! The merger (`kappa run --role merger`): reads `kappa.partials` from the positions in its
//! store, keeps the partials of open windows, and makes a window final once every source
//! partition has reported past its end. Final windows, the merger's state and its positions
//! on `kappa.partials` are written in one redb transaction, so a restart resumes exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Scaled;
use super::{Msg, Published};
use super::{Result, ScaleError};
use crate::config::Config;
use crate::declared::{Declared, DeclaredFinal};
use crate::log::RecordBatch;
use crate::metrics::Metrics;
use crate::pipeline::{Counts, PartitionStatus, Shared, Status};
use crate::review::agg::{ReviewFinal, Reviews};
use crate::source::{KafkaSource, Source};
use crate::store::{Commit, DeadLetter, LateRecord, PartitionPosition, Store};
use crate::stream::Stream;
use crate::window::{FinalWindow, Mergeable, PartialAgg, Shop, Windows};

/// An open window at the merger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct OpenWindow<P> {
    /// The first partial received per source partition.
    parts: BTreeMap<u32, P>,
    /// Source partitions whose progress said this window has a partial.
    needed: BTreeSet<u32>,
}

impl<P> Default for OpenWindow<P> {
    fn default() -> Self {
        Self {
            parts: BTreeMap::new(),
            needed: BTreeSet::new(),
        }
    }
}

/// What the merger knows about one stream of one output version (`P`: the stream's
/// partial sums); persisted with every commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MergeState<P = PartialAgg> {
    /// Source partitions in all (0 until the first message).
    partitions: u32,
    /// Per source partition: every window ending at or before this is complete on it.
    covered: Vec<i64>,
    /// Per source partition: reported idle by its worker (left out of the minimum).
    idle: Vec<bool>,
    /// Open windows by (end, size).
    open: BTreeMap<(i64, i64), OpenWindow<P>>,
    /// Every window ending at or before this is final here.
    finalized_through: i64,
    /// Progress ranges that did not join the covered range (logged once each).
    gaps: u64,
    /// `created_ms` of the version this state belongs to (a state left by a dropped
    /// version of the same name is not taken).
    created_ms: i64,
}

impl<P> Default for MergeState<P> {
    fn default() -> Self {
        Self {
            partitions: 0,
            covered: Vec::new(),
            idle: Vec::new(),
            open: BTreeMap::new(),
            finalized_through: i64::MIN,
            gaps: 0,
            created_ms: 0,
        }
    }
}

/// A record a worker set aside, for the merger to store with the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// An invalid record.
    Dead(DeadLetter),
    /// A late event.
    Late(LateRecord),
}

impl<P> MergeState<P> {
    /// The same state with each partial turned by `f`.
    fn map<Q>(self, f: impl Fn(P) -> Q) -> MergeState<Q> {
        MergeState {
            partitions: self.partitions,
            covered: self.covered,
            idle: self.idle,
            open: self
                .open
                .into_iter()
                .map(|(k, w)| {
                    let parts = w.parts.into_iter().map(|(p, x)| (p, f(x))).collect();
                    let needed = w.needed;
                    (k, OpenWindow { parts, needed })
                })
                .collect(),
            finalized_through: self.finalized_through,
            gaps: self.gaps,
            created_ms: self.created_ms,
        }
    }
}

impl<P: Published> MergeState<P> {
    /// Takes one message of this version in; returns a record to store, if any.
    ///
    /// # Errors
    /// A message whose partition count differs from the one seen first, or a partial of
    /// another stream.
    pub fn apply(&mut self, msg: Msg) -> Result<Option<Kept>, String> {
        let msg = match P::of(msg) {
            Ok((head, sums)) => {
                self.take_partitions(head.partitions)?;
                let end = head.start_ms + head.size_ms;
                if end > self.finalized_through && head.partition < self.partitions {
                    self.open
                        .entry((end, head.size_ms))
                        .or_default()
                        .parts
                        .entry(head.partition)
                        .or_insert(sums);
                }
                return Ok(None);
            }
            Err(msg) => msg,
        };
        let partitions = match msg {
            Msg::Progress { partitions, .. }
            | Msg::Idle { partitions, .. }
            | Msg::Totals { partitions, .. } => partitions,
            Msg::Dead { letter, .. } => return Ok(Some(Kept::Dead(letter))),
            Msg::Late { record, .. } => return Ok(Some(Kept::Late(record))),
            Msg::Partial { .. }
            | Msg::ReviewPartial { .. }
            | Msg::ShopPartial { .. }
            | Msg::DeclaredPartial { .. } => {
                return Err("a partial of another stream".into());
            }
        };
        self.take_partitions(partitions)?;
        match msg {
            Msg::Progress {
                partition,
                from,
                through,
                nonempty,
                ..
            } => {
                let Some(covered) = self.covered.get_mut(partition as usize) else {
                    return Ok(None);
                };
                self.idle[partition as usize] = false;
                if from > *covered {
                    // Ranges of one partition arrive in order (one key, one partition of
                    // kappa.partials); a gap means its history is missing (retention).
                    self.gaps += 1;
                    if self.gaps < 100 {
                        tracing::error!(
                            partition,
                            from,
                            covered = *covered,
                            "progress range does not join the covered range: partials history is missing; windows wait"
                        );
                    }
                    return Ok(None);
                }
                *covered = (*covered).max(through);
                for (size, start) in nonempty {
                    if start + size > self.finalized_through {
                        self.open
                            .entry((start + size, size))
                            .or_default()
                            .needed
                            .insert(partition);
                    }
                }
            }
            Msg::Idle {
                partition, idle, ..
            } => {
                if let Some(i) = self.idle.get_mut(partition as usize) {
                    *i = idle;
                }
            }
            // The counters', not the state's (`Reported`).
            Msg::Totals { .. } => {}
            _ => unreachable!("handled above"),
        }
        Ok(None)
    }

    /// Takes the source partition count of a message: the first one sets it, later ones
    /// must agree.
    fn take_partitions(&mut self, partitions: u32) -> Result<(), String> {
        if self.partitions == 0 {
            self.partitions = partitions;
            self.covered = vec![i64::MIN; partitions as usize];
            self.idle = vec![false; partitions as usize];
        } else if partitions != self.partitions {
            return Err(format!(
                "a worker reports {partitions} source partitions, others {}: the source topic changed under a running merger",
                self.partitions
            ));
        }
        Ok(())
    }

    /// Every source partition's coverage, the minimum: windows ending at or before it have
    /// all their progress.
    /// Idle partitions are left out, as a single process leaves them out of its watermark;
    /// with every partition idle, the furthest one counts (as there too).
    fn covered_through(&self) -> i64 {
        self.covered
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(c, _)| *c)
            .min()
            .or_else(|| self.covered.iter().copied().max())
            .unwrap_or(i64::MIN)
    }

    /// Makes final every complete window, oldest end first, stopping at the first one
    /// still waiting for a partial.
    pub fn take_final<A: Mergeable<Partial = P>>(
        &mut self,
        core: &mut Windows<A>,
    ) -> Vec<A::Final> {
        let through = self.covered_through();
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let (end, size) = *entry.key();
            let w = entry.get();
            if end > through || !w.needed.iter().all(|p| w.parts.contains_key(p)) {
                // Final: everything before this window's end, and nothing past the coverage.
                let upto = through.min(end.saturating_sub(1));
                self.finalized_through = self.finalized_through.max(upto);
                return out;
            }
            let w = entry.remove();
            out.push(core.merge_partials(size, end - size, w.parts.values()));
        }
        self.finalized_through = self.finalized_through.max(through);
        out
    }

    /// The open windows in final form from the partials received so far: provisional,
    /// they grow as the other source partitions report (a worker publishes a partition's
    /// partial once that partition's watermark passes the window's end).
    pub fn provisional<A: Mergeable<Partial = P>>(&self, core: &mut Windows<A>) -> Vec<A::Final> {
        self.open
            .iter()
            .filter(|(_, w)| !w.parts.is_empty())
            .map(|(&(end, size), w)| core.merge_partials(size, end - size, w.parts.values()))
            .collect()
    }

    /// Every window ending at or before this is final.
    #[must_use]
    pub fn finalized_through(&self) -> i64 {
        self.finalized_through
    }

    /// Open windows and the partials they hold.
    #[must_use]
    pub fn open_windows(&self) -> (usize, usize) {
        (
            self.open.len(),
            self.open.values().map(|w| w.parts.len()).sum(),
        )
    }
}

/// What the workers reported about the main version's source partitions: what the merger's
/// `/metrics` and `/api/status` show, as a single process over the same log would.
#[derive(Debug, Default)]
struct Reported {
    /// Whose partitions: the events' (the process's counters and status) or another
    /// stream's (its `kappa_stream_records_total`).
    stream: Stream,
    /// Per source partition: the outcome totals with the most records (repeats and older
    /// totals after a rebalance are not counted twice), its position and its end offset.
    parts: Vec<(Counts, u64, u64)>,
}

impl Reported {
    /// Takes in one partition's totals: their growth goes to the counters.
    fn totals(
        &mut self,
        partition: u32,
        counts: &Counts,
        position: u64,
        end: u64,
        metrics: &Metrics,
        shared: &Shared,
    ) {
        let i = partition as usize;
        if self.parts.len() <= i {
            self.parts.resize(i + 1, Default::default());
        }
        let (seen, at, known_end) = &mut self.parts[i];
        *at = (*at).max(position);
        *known_end = (*known_end).max(end);
        if counts.new_records() <= seen.new_records() {
            return;
        }
        // Records read for the first time only: re-reads after a rebalance are a worker's
        // own business (its /metrics counts them).
        let mut growth = counts.since(seen);
        growth.read = counts.new_records() - seen.new_records();
        growth.rebuilt = 0;
        *seen = *counts;
        if self.stream != Stream::Events {
            growth.apply_stream(self.stream, metrics);
            return;
        }
        let mut st = shared.status.lock().expect("status lock");
        growth.apply(partition, "kafka", metrics, &mut st);
        metrics.dead_letters.inc_by(growth.invalid_total());
    }

    /// The merger's status: finalisation, open windows and the source partitions.
    fn status(&self, state: &MergeState, st: &mut Status) {
        let ft = state.finalized_through();
        st.finalized_through_ms = (ft > i64::MIN).then_some(ft);
        st.watermark_ms = st.finalized_through_ms;
        st.open_windows = state.open_windows().0;
        st.partitions = (0..state.covered.len())
            .map(|p| {
                let (_, position, end) = self.parts.get(p).copied().unwrap_or_default();
                let covered = state.covered[p];
                PartitionStatus {
                    partition: u32::try_from(p).expect("partition fits u32"),
                    position,
                    end_offset: end,
                    lag: end.saturating_sub(position),
                    watermark_ms: (covered > i64::MIN).then_some(covered),
                    idle: state.idle[p],
                    owned: true,
                }
            })
            .collect();
    }
}

/// What one merger run did.
#[derive(Debug, Default)]
pub struct MergerSummary {
    /// Messages read from `kappa.partials`.
    pub messages: u64,
    /// Partials among them.
    pub partials: u64,
    /// Keys (products, categories, queries) in those partials.
    pub keys: u64,
    /// Windows made final.
    pub windows: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time spent decoding, merging and committing (wall time less waiting for messages).
    pub busy: Duration,
}

/// First bytes of a merge state stored since partials carry the funnel per key. Earlier
/// states start with a bincode varint, which is never 0xFF.
const STATE_V2: [u8; 2] = [0xFF, 2];

/// A stored merge state, of either layout (an earlier one's partials read as
/// [`Scaled::Legacy`]).
fn decode_state<A: Scaled>(bytes: &[u8]) -> Result<MergeState<A::Partial>, String> {
    let cfg = bincode::config::standard();
    match bytes.strip_prefix(&STATE_V2[..]) {
        Some(rest) => bincode::serde::decode_from_slice(rest, cfg).map(|(s, _)| s),
        None => bincode::serde::decode_from_slice::<MergeState<A::Legacy>, _>(bytes, cfg)
            .map(|(s, _)| s.map(Into::into)),
    }
    .map_err(|e| e.to_string())
}

/// One stream of one output version being merged.
struct Merged<A: Scaled> {
    state: MergeState<A::Partial>,
    core: Windows<A>,
    /// Its result-deciding configuration: workers must send the same.
    fingerprint: String,
}

impl<A: Scaled> Merged<A> {
    /// The merge state of `info` (a version or a stream's part of one) as last committed,
    /// and a core with its configuration.
    fn load(store: &Store, cfg: &Config, info: &crate::store::VersionInfo) -> Result<Self> {
        let (version, fingerprint) = (&info.name, &info.config);
        let mut state: MergeState<A::Partial> = match store.merger_state(version)? {
            Some(bytes) => decode_state::<A>(&bytes).map_err(|e| {
                ScaleError::Invalid(format!(
                    "the merger state of {version} does not decode: {e}"
                ))
            })?,
            None => MergeState::default(),
        };
        if state.created_ms != info.created_ms {
            state = MergeState {
                created_ms: info.created_ms,
                ..MergeState::default()
            };
        }
        let vcfg = cfg
            .for_stream(Stream::of_version(version).0)
            .with_fingerprint(fingerprint)
            .map_err(|e| ScaleError::Invalid(format!("version {version}: {e}")))?;
        Ok(Self {
            state,
            core: A::core(&vcfg, 0),
            fingerprint: fingerprint.clone(),
        })
    }

    /// Takes one message of this stream in (after checking the configuration it was
    /// computed with); returns a record to store, if any.
    fn apply(&mut self, v: &str, msg: Msg) -> Result<Option<Kept>> {
        if let Some(config) = msg.config()
            && config != self.fingerprint
        {
            return Err(ScaleError::Invalid(format!(
                "a worker computes {v} with another configuration ({config}) than the merger's store holds for it ({}): run every worker with the same window sizes, delay and limits",
                self.fingerprint
            )));
        }
        self.state
            .apply(msg)
            .map_err(|e| ScaleError::Invalid(format!("version {v}: {e}")))
    }

    /// The merge state's bytes, as committed: [`STATE_V2`], then bincode.
    fn blob(&self) -> Result<Vec<u8>> {
        let mut out = STATE_V2.to_vec();
        bincode::serde::encode_into_std_write(&self.state, &mut out, bincode::config::standard())?;
        Ok(out)
    }
}

/// One output version being merged: its events and, when the store has them, its
/// reviews and clicks parts, and the aggregates declared on its events.
struct Merging {
    events: Merged<Shop>,
    reviews: Option<Merged<Reviews>>,
    clicks: Option<Merged<Declared>>,
    /// Under the version's [`super::declared_part`]; stored with the version.
    declared: Option<Merged<Declared>>,
}

impl Merging {
    fn load(store: &Store, cfg: &Config, info: &crate::store::VersionInfo) -> Result<Self> {
        let vcfg = cfg
            .with_fingerprint(&info.config)
            .map_err(|e| ScaleError::Invalid(format!("version {}: {e}", info.name)))?;
        let declared = if vcfg.declared_plan(Stream::Events).aggregates.is_empty() {
            None
        } else {
            let part = crate::store::VersionInfo {
                name: super::declared_part(&info.name),
                ..info.clone()
            };
            Some(Merged::load(store, cfg, &part)?)
        };
        // A new version the workers replay reads the clicks it declares aggregates on (the
        // main one's part is made at start; a correction's scratch recomputes the events).
        let clicks = Stream::Clicks.version(&info.name);
        let scratch = info.name.starts_with(crate::store::SCRATCH_PREFIX);
        if vcfg.reads_clicks() && !scratch && store.version(&clicks)?.is_none() {
            store.ensure_version(&crate::store::VersionInfo {
                name: clicks,
                config: vcfg.for_stream(Stream::Clicks).results_fingerprint(),
                created_ms: info.created_ms,
                finalized_through: i64::MIN,
                state: crate::store::VersionState::Ready,
            })?;
        }
        Ok(Self {
            events: Merged::load(store, cfg, info)?,
            reviews: Self::part(store, cfg, &info.name, Stream::Reviews)?,
            clicks: Self::part(store, cfg, &info.name, Stream::Clicks)?,
            declared,
        })
    }

    /// The merging of `stream`'s part of `version`, when the store has the part.
    fn part<A: Scaled>(
        store: &Store,
        cfg: &Config,
        version: &str,
        stream: Stream,
    ) -> Result<Option<Merged<A>>> {
        match store.version(&stream.version(version))? {
            Some(part) => Ok(Some(Merged::load(store, cfg, &part)?)),
            None => Ok(None),
        }
    }

    /// Makes final every complete window of each of its streams.
    fn take_final(&mut self) -> Round {
        fn finals<A: Scaled>(m: Option<&mut Merged<A>>) -> Vec<A::Final> {
            m.map_or_else(Vec::new, |m| m.state.take_final(&mut m.core))
        }
        Round {
            events: self.events.state.take_final(&mut self.events.core),
            reviews: finals(self.reviews.as_mut()),
            clicks: finals(self.clicks.as_mut()),
            declared: finals(self.declared.as_mut()),
        }
    }
}

/// The windows of one version made final in one round, per stream.
struct Round {
    events: Vec<FinalWindow>,
    reviews: Vec<ReviewFinal>,
    clicks: Vec<DeclaredFinal>,
    declared: Vec<DeclaredFinal>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.reviews.is_empty()
            && self.clicks.is_empty()
            && self.declared.is_empty()
    }
}

/// Adds the store's versions not merged yet (a replay across roles created one) and
/// forgets dropped ones; `main` always stays.
fn refresh(
    store: &Store,
    cfg: &Config,
    main: &str,
    merging: &mut BTreeMap<String, Merging>,
) -> Result<()> {
    let versions = store.versions()?;
    // Forgotten: dropped versions, and versions dropped and created again under their name.
    merging.retain(|v, m| {
        versions
            .iter()
            .any(|i| &i.name == v && i.created_ms == m.events.state.created_ms)
    });
    for info in versions {
        if merging.contains_key(&info.name) {
            continue;
        }
        tracing::info!(version = info.name, "merging this output version");
        let m = Merging::load(store, cfg, &info)?;
        merging.insert(info.name, m);
    }
    if !merging.contains_key(main) {
        return Err(ScaleError::Invalid(format!(
            "output version {main} is not in the store"
        )));
    }
    Ok(())
}

/// Rolls back the in-place corrections a previous merger left unfinished: the workers are
/// told to stop each scratch version (which `recover_interrupted` then drops and marks).
///
/// # Errors
/// Store or Kafka failures.
pub fn roll_back_unfinished(cfg: &Config, store: &Store, metrics: &Arc<Metrics>) -> Result<()> {
    for v in store.versions()? {
        if v.name.starts_with(crate::store::SCRATCH_PREFIX) {
            let stop = super::VersionOrder {
                version: v.name.clone(),
                active: false,
                config: v.config.clone(),
                starts: Vec::new(),
                ends: Vec::new(),
                incarnation: v.created_ms,
            };
            super::publish_order(&cfg.kafka, &stop, metrics.clone())?;
        }
    }
    Ok(())
}

/// Runs the merger until `cancel`: `version` (its positions on `kappa.partials` are kept
/// under it) and every other output version of the store.
///
/// # Errors
/// Store or Kafka failures, or partials that contradict each other.
pub fn run(
    cfg: &Config,
    version: &str,
    store: Store,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    positions: &super::Positions,
    cancel: &CancellationToken,
) -> Result<MergerSummary> {
    let started = Instant::now();
    let (mut m, mut source) =
        Merger::open(cfg, version, store, metrics, shared, positions, cancel)?;
    tracing::info!(version, topic = m.topic, "merger started");
    // Up while merging, as a single process's pipeline is while it consumes.
    m.metrics.pipeline_up.set(1);
    let mut batch = RecordBatch::new();
    let mut last_commit = Instant::now();
    let mut last_refresh = Instant::now();
    while !cancel.is_cancelled() {
        if source.take_assignment().is_some() {
            m.shared.set_ready(source.healthy());
        }
        batch.clear();
        let n = source.poll(&mut batch, cfg.pipeline.batch_records)?;
        let work = Instant::now();
        for rec in batch.iter() {
            m.take(rec.partition, rec.offset, rec.value)?;
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            m.refresh()?;
            last_refresh = Instant::now();
        }
        let finals: Finals = m
            .merging
            .iter_mut()
            .map(|(v, mv)| (v.clone(), mv.take_final()))
            .collect();
        let any_final = finals.iter().any(|(_, r)| !r.is_empty());
        let due = any_final || (m.dirty && last_commit.elapsed() >= cfg.pipeline.commit_interval);
        if due || (cancel.is_cancelled() && m.dirty) {
            m.commit(&finals)?;
            last_commit = Instant::now();
        }
        if n > 0 || due {
            m.summary.busy += work.elapsed();
        }
        m.shared.set_ready(source.healthy());
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    m.metrics.pipeline_up.set(0);
    m.summary.elapsed = started.elapsed();
    Ok(m.summary)
}

/// Windows made final in one round, per version.
type Finals = Vec<(String, Round)>;

/// `c` of the version or part `state` names, with its merge states and what is pending
/// for it.
fn with_state<'c>(
    c: Commit<'c>,
    (name, blob, declared): &'c (String, Vec<u8>, Option<Vec<u8>>),
    pending: &'c Pending,
) -> Commit<'c> {
    Commit {
        version: name,
        dead_letters: pending.dead.get(name).map_or(&[], Vec::as_slice),
        late: pending.late.get(name).map_or(&[], Vec::as_slice),
        merger_state: Some(blob),
        declared_merger_state: declared.as_deref(),
        ..c
    }
}

/// The next offset per partials partition, as the store has it for `version`.
fn stored_next(store: &Store, version: &str, partitions: u32) -> Result<Vec<u64>> {
    let mut next = vec![0u64; partitions as usize];
    if let Some((_, positions)) = store.load_state(version)? {
        for p in positions {
            if let Some(n) = next.get_mut(p.partition as usize) {
                *n = p.next_offset;
            }
        }
    }
    Ok(next)
}

/// What the merger kept from messages since its last commit.
#[derive(Default)]
struct Pending {
    /// The main version's dead letters (per source record, not per version), per stream
    /// (under the names of the version and its parts).
    dead: BTreeMap<String, Vec<DeadLetter>>,
    /// Late-event records, per version and stream.
    late: BTreeMap<String, Vec<LateRecord>>,
    /// The main version's event-time checkpoints (partition, offset, max event time).
    checkpoints: Vec<(u32, u64, i64)>,
}

/// The merger's loop state between polls.
struct Merger<'a> {
    cfg: &'a Config,
    /// The main version (its positions on the partials topic are kept under it).
    version: &'a str,
    topic: String,
    store: Store,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    positions: &'a super::Positions,
    merging: BTreeMap<String, Merging>,
    /// Versions of another store (remembered, not looked up again until the refresh).
    foreign: std::collections::HashSet<String>,
    /// Next offset per partials partition.
    next: Vec<u64>,
    pending: Pending,
    /// What the workers reported about the main version's events, reviews and clicks.
    reported: Reported,
    reviews_reported: Reported,
    clicks_reported: Reported,
    summary: MergerSummary,
    /// The main version's final windows when the merger started, and since.
    already: u64,
    main_windows: u64,
    /// Messages taken since the last commit.
    dirty: bool,
}

impl<'a> Merger<'a> {
    /// The merger of `version` over the store, with its source (the partials topic) at
    /// the positions the store has.
    fn open(
        cfg: &'a Config,
        version: &'a str,
        store: Store,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
        positions: &'a super::Positions,
        cancel: &CancellationToken,
    ) -> Result<(Self, KafkaSource)> {
        // The version, and its reviews and clicks parts when the workers compute them.
        let reviews = cfg.reviews.read.then(|| cfg.for_stream(Stream::Reviews));
        let clicks = cfg.reads_clicks().then(|| cfg.for_stream(Stream::Clicks));
        for c in std::iter::once(cfg).chain(&reviews).chain(&clicks) {
            store.ensure_version(&crate::store::VersionInfo {
                name: c.stream.version(version),
                config: c.results_fingerprint(),
                created_ms: chrono::Utc::now().timestamp_millis(),
                finalized_through: i64::MIN,
                state: crate::store::VersionState::Ready,
            })?;
        }
        let mut merging: BTreeMap<String, Merging> = BTreeMap::new();
        refresh(&store, cfg, version, &mut merging)?;
        let mut k = cfg.kafka.clone();
        k.topic.clone_from(&cfg.kafka.partials_topic);
        let source = KafkaSource::connect(
            &k,
            Arc::new(store.clone()),
            version,
            crate::source::Assignment::Explicit,
            metrics.clone(),
            &|| cancel.is_cancelled(),
        )?;
        store.bind_source(&source.id())?;
        metrics
            .serving_version
            .with_label_values(&[&store.serving()?])
            .set(1);
        let next = stored_next(&store, version, source.partitions())?;
        // The status counts every final window of the main version, across restarts.
        let already = store.window_count_all(version, &cfg.window_config().sizes_ms)?;
        {
            let mut st = shared.status.lock().expect("status lock");
            st.state = crate::pipeline::State::Running;
            st.windows_finalised = already;
        }
        let m = Self {
            cfg,
            version,
            topic: k.topic,
            store,
            metrics,
            shared,
            positions,
            merging,
            foreign: std::collections::HashSet::new(),
            next,
            pending: Pending::default(),
            reported: Reported::default(),
            reviews_reported: Reported {
                stream: Stream::Reviews,
                ..Reported::default()
            },
            clicks_reported: Reported {
                stream: Stream::Clicks,
                ..Reported::default()
            },
            summary: MergerSummary::default(),
            already,
            main_windows: 0,
            dirty: false,
        };
        Ok((m, source))
    }

    /// Once a second: the main version's open windows for the status, and the versions
    /// to merge from the store.
    fn refresh(&mut self) -> Result<()> {
        if let Some(main) = self.merging.get_mut(self.version) {
            let e = &mut main.events;
            *self.shared.provisional.write().expect("provisional lock") =
                e.state.provisional(&mut e.core);
        }
        refresh(&self.store, self.cfg, self.version, &mut self.merging)?;
        self.foreign.clear();
        Ok(())
    }

    /// Takes the message at `offset` of partials partition `partition` into the merge
    /// state of its version. A message that does not decode, or a worker computing with
    /// another configuration, stops the merger (skipping one could stall a partition).
    fn take(&mut self, partition: u32, offset: u64, value: &[u8]) -> Result<()> {
        self.next[partition as usize] = offset + 1;
        self.summary.messages += 1;
        self.dirty = true;
        let msg = Msg::decode(value).map_err(|e| {
            ScaleError::Invalid(format!(
                "{} partition {partition} offset {offset}: {e}",
                self.topic
            ))
        })?;
        let keys = match &msg {
            Msg::Partial { sums, .. } => {
                Some(sums.categories.len() + sums.products.len() + sums.queries.len())
            }
            Msg::ShopPartial { sums, .. } => Some(Shop::partial_keys(sums)),
            Msg::ReviewPartial { sums, .. } => Some(Reviews::partial_keys(sums)),
            Msg::DeclaredPartial { sums, .. } => Some(Declared::partial_keys(sums)),
            _ => None,
        };
        if let Some(keys) = keys {
            self.summary.partials += 1;
            self.summary.keys += keys as u64;
        }
        let v = msg.version().to_string();
        // The events' declared aggregates travel under the version's declared part.
        let (declared, (stream, base)) = match super::of_declared_part(&v) {
            Some(base) => (true, (Stream::Events, base)),
            None => (false, Stream::of_version(&v)),
        };
        let base = base.to_string();
        // A replay creates its version before ordering it, so an unknown version is
        // looked up at once (versions of another store are remembered, not re-read).
        if !self.merging.contains_key(&base) && !self.foreign.contains(&base) {
            refresh(&self.store, self.cfg, self.version, &mut self.merging)?;
            if !self.merging.contains_key(&base) {
                self.foreign.insert(base.clone());
            }
        }
        let main = base == self.version;
        if main && !declared {
            self.report(stream, &msg);
        }
        let Some(m) = self.merging.get_mut(&base) else {
            return Ok(()); // a version this store does not have
        };
        if stream == Stream::Events && !declared {
            // Where each worker is: progress comes with finalised windows, totals with
            // every worker commit (so a caught-up version's position is current).
            if let Msg::Progress {
                partition,
                position,
                ..
            }
            | Msg::Totals {
                partition,
                position,
                ..
            } = &msg
            {
                let mut pos = self.positions.lock().expect("positions lock");
                let at = pos
                    .entry(v.clone())
                    .or_default()
                    .entry(*partition)
                    .or_default();
                *at = (*at).max(*position);
            }
        }
        // A part this store does not have is not merged.
        let kept = match stream {
            Stream::Events if declared => match m.declared.as_mut() {
                Some(d) => d.apply(&v, msg)?,
                None => return Ok(()),
            },
            Stream::Events => m.events.apply(&v, msg)?,
            Stream::Reviews => match m.reviews.as_mut() {
                Some(r) => r.apply(&v, msg)?,
                None => return Ok(()),
            },
            Stream::Clicks => match m.clicks.as_mut() {
                Some(c) => c.apply(&v, msg)?,
                None => return Ok(()),
            },
            Stream::Products => return Ok(()),
        };
        match kept {
            // Dead letters are per source record, not per version: the main one's count.
            Some(Kept::Dead(d)) if main => self.pending.dead.entry(v).or_default().push(d),
            Some(Kept::Late(l)) => self.pending.late.entry(v).or_default().push(l),
            Some(Kept::Dead(_)) | None => {}
        }
        Ok(())
    }

    /// What the workers report about the main version's source partitions: the outcome
    /// totals (the counters and the status) and the event-time checkpoints.
    fn report(&mut self, stream: Stream, msg: &Msg) {
        let reported = match stream {
            Stream::Reviews => &mut self.reviews_reported,
            Stream::Clicks => &mut self.clicks_reported,
            Stream::Events | Stream::Products => &mut self.reported,
        };
        match msg {
            Msg::Totals {
                partition,
                position,
                end,
                counts,
                ..
            } => {
                reported.totals(
                    *partition,
                    counts,
                    *position,
                    *end,
                    &self.metrics,
                    &self.shared,
                );
            }
            Msg::Progress {
                partition,
                checkpoint: Some((offset, ts)),
                ..
            } if stream == Stream::Events => {
                self.pending.checkpoints.push((*partition, *offset, *ts));
            }
            _ => {}
        }
    }

    /// Commits `finals` of every version and stream, the merge states, the positions and
    /// what is pending, in one store transaction; then the metrics and the status.
    fn commit(&mut self, finals: &Finals) -> Result<()> {
        let positions: Vec<PartitionPosition> = self
            .next
            .iter()
            .enumerate()
            .map(|(q, &o)| PartitionPosition {
                partition: u32::try_from(q).expect("partition fits u32"),
                next_offset: o,
                resume_offset: o,
                resume_max_ts: i64::MIN,
                max_ts: i64::MIN,
            })
            .collect();
        // The name and merge states of each version and its parts, in the order of the
        // commits below (which borrow them).
        let mut states: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (v, _) in finals {
            let m = &self.merging[v];
            let declared = m.declared.as_ref().map(Merged::blob).transpose()?;
            states.push((v.clone(), m.events.blob()?, declared));
            if let Some(rm) = &m.reviews {
                states.push((Stream::Reviews.version(v), rm.blob()?, None));
            }
            if let Some(cm) = &m.clicks {
                states.push((Stream::Clicks.version(v), cm.blob()?, None));
            }
        }
        let pending = &self.pending;
        let mut states = states.iter();
        let mut with_state = |c| with_state(c, states.next().expect("one per commit"), pending);
        let mut commits = Vec::new();
        for (v, round) in finals {
            let m = &self.merging[v];
            // Every version keeps the positions: whichever is the main one after a restart
            // (a promotion changes it) resumes from them. A stream's part has none of its
            // own here (the merger reads one topic).
            commits.push(with_state(Commit {
                finals: &round.events,
                positions: &positions,
                finalized_through: m.events.state.finalized_through(),
                checkpoints: if v == self.version {
                    &pending.checkpoints
                } else {
                    &[]
                },
                declared: &round.declared,
                declared_through: m.declared.as_ref().map(|d| d.state.finalized_through()),
                ..Commit::default()
            }));
            if let Some(rm) = &m.reviews {
                commits.push(with_state(Commit {
                    review_finals: &round.reviews,
                    finalized_through: rm.state.finalized_through(),
                    ..Commit::default()
                }));
            }
            if let Some(cm) = &m.clicks {
                let through = cm.state.finalized_through();
                commits.push(with_state(Commit {
                    declared: &round.clicks,
                    declared_through: Some(through),
                    finalized_through: through,
                    ..Commit::default()
                }));
            }
        }
        self.store.commit_all(&commits)?;
        self.pending = Pending::default();
        for (v, round) in finals {
            let (f, r, c) = (&round.events, &round.reviews, &round.clicks);
            self.summary.windows += (f.len() + r.len() + c.len() + round.declared.len()) as u64;
            if v == self.version {
                self.main_windows += f.len() as u64;
            }
            self.metrics
                .stream_windows_finalised
                .with_label_values(&[Stream::Clicks.as_str()])
                .inc_by(c.len() as u64);
            for w in f {
                self.metrics
                    .windows_finalised
                    .with_label_values(&[&crate::event::time::size_name(w.size_ms)])
                    .inc();
            }
            self.metrics
                .stream_windows_finalised
                .with_label_values(&[Stream::Reviews.as_str()])
                .inc_by(r.len() as u64);
        }
        self.dirty = false;
        let main_state = &self.merging[self.version].events.state;
        let (open, held) = main_state.open_windows();
        let mut st = self.shared.status.lock().expect("status lock");
        st.windows_finalised = self.already + self.main_windows;
        self.reported.status(main_state, &mut st);
        tracing::debug!(open, held, "merger committed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::agg::ReviewWindow;
    use crate::window::{WindowConfig, WindowCore};

    fn head(p: u32, start: i64) -> super::super::PartialHead {
        super::super::PartialHead {
            version: "v1".into(),
            partitions: 2,
            partition: p,
            size_ms: 60_000,
            start_ms: start,
            watermark: 0,
            config: String::new(),
        }
    }

    fn partial(p: u32, start: i64, views: u64) -> Msg {
        Msg::ShopPartial {
            head: head(p, start),
            sums: PartialAgg {
                counts: [views, 0, 0, 0],
                ..PartialAgg::default()
            },
        }
    }

    #[test]
    fn a_merge_state_stored_before_the_funnel_decodes_and_a_new_one_round_trips() {
        let mut old: MergeState<crate::window::PartialAggV1> = MergeState::default();
        let v1 = Msg::Partial {
            head: head(0, 0),
            sums: crate::window::PartialAggV1 {
                counts: [7, 0, 0, 0],
                ..Default::default()
            },
        };
        // The old layout, as an earlier merger wrote it (no prefix).
        let mut new: MergeState<PartialAgg> = MergeState::default();
        let (h, sums) = PartialAgg::of(v1).unwrap();
        new.apply(PartialAgg::message(h, sums.clone())).unwrap();
        old.open
            .entry((60_000, 60_000))
            .or_default()
            .parts
            .insert(0, {
                crate::window::PartialAggV1 {
                    counts: sums.counts,
                    ..Default::default()
                }
            });
        old.partitions = 2;
        old.covered = vec![i64::MIN; 2];
        old.idle = vec![false; 2];
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        assert_eq!(decode_state::<Shop>(&bytes).unwrap(), new);
        let m = Merged::<Shop> {
            state: new.clone(),
            core: Windows::new(WindowConfig::default(), 0),
            fingerprint: String::new(),
        };
        assert_eq!(decode_state::<Shop>(&m.blob().unwrap()).unwrap(), new);
    }

    fn progress(p: u32, from: i64, through: i64, nonempty: &[i64]) -> Msg {
        Msg::Progress {
            version: "v1".into(),
            partitions: 2,
            partition: p,
            config: String::new(),
            from,
            through,
            nonempty: nonempty.iter().map(|&s| (60_000, s)).collect(),
            checkpoint: None,
            position: 0,
        }
    }

    #[test]
    fn a_window_waits_for_every_partition_and_every_announced_partial() {
        let mut core = WindowCore::new(WindowConfig::default(), 0);
        let mut s = MergeState::default();
        // Partition 0 is complete through 60 s with a partial; partition 1's progress
        // announces a partial that has not arrived (another kappa.partials partition).
        s.apply(partial(0, 0, 3)).unwrap();
        s.apply(progress(0, i64::MIN, 60_000, &[0])).unwrap();
        assert!(
            s.take_final(&mut core).is_empty(),
            "partition 1 has not reported"
        );
        s.apply(progress(1, i64::MIN, 70_000, &[0])).unwrap();
        assert!(
            s.take_final(&mut core).is_empty(),
            "partition 1's partial is missing"
        );
        // Provisional meanwhile: the sums of the partitions that have reported.
        let p = s.provisional(&mut core);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].events_by_type[0], 3);
        s.apply(partial(1, 0, 4)).unwrap();
        // A repeat (another worker after a rebalance) is ignored: the first one counts.
        s.apply(partial(1, 0, 4)).unwrap();
        assert_eq!(s.provisional(&mut core)[0].events_by_type[0], 7);
        let f = s.take_final(&mut core);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].events_by_type[0], 7);
        assert_eq!(s.finalized_through(), 60_000);
        // A repeat of an already final window does not reopen it.
        s.apply(partial(0, 0, 3)).unwrap();
        assert!(s.take_final(&mut core).is_empty());
        assert_eq!(s.open_windows(), (0, 0));
        assert!(s.provisional(&mut core).is_empty(), "nothing open");
    }

    #[test]
    fn a_window_without_events_on_a_partition_completes_on_progress_alone() {
        let mut core = WindowCore::new(WindowConfig::default(), 0);
        let mut s = MergeState::default();
        s.apply(partial(0, 0, 2)).unwrap();
        s.apply(progress(0, i64::MIN, 60_000, &[0])).unwrap();
        s.apply(progress(1, i64::MIN, 30_000, &[])).unwrap();
        assert!(s.take_final(&mut core).is_empty());
        s.apply(progress(1, 30_000, 61_000, &[])).unwrap();
        assert_eq!(s.take_final(&mut core).len(), 1);
    }

    fn idle(p: u32, idle: bool) -> Msg {
        Msg::Idle {
            version: "v1".into(),
            partitions: 2,
            partition: p,
            idle,
        }
    }

    #[test]
    fn an_idle_partition_does_not_hold_windows_back_and_its_late_partials_are_ignored() {
        let mut core = WindowCore::new(WindowConfig::default(), 0);
        let mut s = MergeState::default();
        s.apply(partial(0, 0, 2)).unwrap();
        s.apply(progress(0, i64::MIN, 120_000, &[0])).unwrap();
        s.apply(progress(1, i64::MIN, 30_000, &[])).unwrap();
        assert!(
            s.take_final(&mut core).is_empty(),
            "partition 1 holds the window"
        );
        s.apply(idle(1, true)).unwrap();
        let f = s.take_final(&mut core);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].events_by_type[0], 2);
        // Active again: its partial of the closed window comes too late and is ignored, as
        // a single process records late events of a closed window.
        s.apply(partial(1, 0, 5)).unwrap();
        s.apply(progress(1, 30_000, 70_000, &[0])).unwrap();
        assert!(s.take_final(&mut core).is_empty());
        assert_eq!(s.open_windows(), (0, 0));
        // Every partition idle: the furthest coverage counts, as a single process's
        // furthest watermark does.
        s.apply(partial(0, 120_000, 1)).unwrap();
        s.apply(progress(0, 120_000, 200_000, &[120_000])).unwrap();
        s.apply(idle(0, true)).unwrap();
        s.apply(idle(1, true)).unwrap();
        assert_eq!(s.take_final(&mut core).len(), 1);
    }

    #[test]
    fn a_gap_in_a_partitions_progress_holds_its_windows() {
        let mut core = WindowCore::new(WindowConfig::default(), 0);
        let mut s = MergeState::default();
        s.apply(partial(0, 0, 2)).unwrap();
        s.apply(progress(0, i64::MIN, 60_000, &[0])).unwrap();
        s.apply(progress(1, 10_000, 61_000, &[])).unwrap();
        assert!(s.take_final(&mut core).is_empty());
        assert_eq!(s.gaps, 1);
    }

    #[test]
    fn review_partials_merge_into_what_one_window_over_both_partitions_holds() {
        let mut core = Windows::with(WindowConfig::default(), 0, Reviews::new(2));
        let mut s: MergeState<ReviewWindow> = MergeState::default();
        let (mut a, mut b, mut both) = (
            ReviewWindow::default(),
            ReviewWindow::default(),
            ReviewWindow::default(),
        );
        for (first, rating, product) in [(true, 5, "p1"), (true, 2, "p2"), (false, 4, "p1")] {
            let w = if first { &mut a } else { &mut b };
            w.add(rating, product, &[]);
            both.add(rating, product, &[]);
        }
        s.apply(ReviewWindow::message(head(0, 0), a)).unwrap();
        s.apply(progress(0, i64::MIN, 60_000, &[0])).unwrap();
        s.apply(progress(1, i64::MIN, 60_000, &[0])).unwrap();
        assert!(s.take_final(&mut core).is_empty(), "partition 1's partial");
        // An events' partial is not one of the reviews'.
        assert!(s.apply(partial(1, 0, 3)).is_err());
        s.apply(ReviewWindow::message(head(1, 0), b)).unwrap();
        let f = s.take_final(&mut core);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].results, both.finish(10, 2));
        assert_eq!(f[0].results.count, 3);
        assert_eq!(f[0].results.best_rated[0].product_id, "p1");
    }
}
