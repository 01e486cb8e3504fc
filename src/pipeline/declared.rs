//! The declared aggregates (issue 20) in the events' pipeline: a second window core, a
//! follower of the shop's ([`Windows::follow`]), over the same decoded records.
//!
//! Where the guarantees are enforced:
//! - one decision per record: lateness and duplicates are the shop core's (one watermark,
//!   one dedup set); the follower folds the items it accepted (re-read ones included)
//!   into its windows not final yet, and finalises at the shop core's final point, so a
//!   declared aggregate never changes a built-in result;
//! - restarts: the positions committed are the earlier of both cores' resume points
//!   ([`Follower::resume_earlier`]), both cores are rebuilt from those same positions, the
//!   follower's final point is its own ([`crate::store::Store::declared_through`]); a
//!   record re-read below what a core needs goes only into windows that are not final
//!   (a duplicate re-read as fresh has all its windows final in both cores: the record it
//!   repeats contributed to no open window, or the positions would be at or before it);
//! - exactly once: its final windows and final point go in the events' commit
//!   transaction ([`crate::store::Commit::declared`]).

use std::sync::Arc;

use crate::config::Config;
use crate::declared::{Declared, DeclaredFinal, DeclaredPartial, Item, Paths, Plan, Values};
use crate::event::Event;
use crate::rollup::Calendar;
use crate::store::{PartitionPosition, Store, StoreError};
use crate::window::{PartitionResume, Windows};

/// The declared aggregates' core and what it finalised since the last commit.
pub(crate) struct Follower {
    plan: Plan,
    cal: Calendar,
    max_delay_ms: i64,
    core: Windows<Declared>,
    /// Every declared path, for the scanner to take out (shared with the decoding threads
    /// while a batch is decoded).
    pub(crate) paths: Arc<Paths>,
    /// Final windows not committed yet.
    pub(crate) finals: Vec<DeclaredFinal>,
}

impl Follower {
    /// The follower of `cfg`'s aggregates declared on the events, or `None` when there
    /// are none.
    pub(crate) fn open(cfg: &Config, partitions: usize) -> Option<Self> {
        let plan = cfg.declared_plan(crate::stream::Stream::Events);
        if plan.aggregates.is_empty() {
            return None;
        }
        let cal = Calendar::new(&cfg.rollups.time_zone).expect("validated zone");
        let max_delay_ms = cfg.window_config().max_delay_ms;
        Some(Self {
            core: Self::core_of(&plan, cal, max_delay_ms, partitions),
            paths: Arc::new(plan.paths.clone()),
            plan,
            cal,
            max_delay_ms,
            finals: Vec::new(),
        })
    }

    fn core_of(
        plan: &Plan,
        cal: Calendar,
        max_delay_ms: i64,
        partitions: usize,
    ) -> Windows<Declared> {
        let declared = Declared::new(plan.clone(), cal);
        Windows::with(declared.window_config(max_delay_ms), partitions, declared)
    }

    /// Rebuilds the core from what `version` committed (the positions the shop's core
    /// resumes from too), for the `owned` partitions; the uncommitted finals are dropped.
    pub(crate) fn restore(
        &mut self,
        store: &Store,
        version: &str,
        resume: &[PartitionResume],
        owned: &[u32],
    ) -> Result<(), StoreError> {
        self.restore_at(store.declared_through(version)?, resume);
        self.core.set_owned(owned);
        Ok(())
    }

    /// Rebuilds the core, final through `finalized_through`, resuming at `resume` (a
    /// worker's, whose state is in its consumer group); the uncommitted finals are dropped.
    pub(crate) fn restore_at(&mut self, finalized_through: i64, resume: &[PartitionResume]) {
        let mut core = Self::core_of(&self.plan, self.cal, self.max_delay_ms, resume.len());
        core.restore(finalized_through, resume);
        self.core = core;
        self.finals.clear();
    }

    /// Folds an event the shop's core accepted at `offset` of `partition`.
    #[inline]
    pub(crate) fn follow(
        &mut self,
        partition: usize,
        offset: u64,
        max_before: i64,
        event: &Event<'_>,
        values: &Values<'_>,
    ) {
        let item = Item::of_event(event, values);
        self.core.follow(partition, offset, max_before, &item);
    }

    /// [`Follower::follow`] for a session document's inner event: its declared paths are
    /// taken out of its bytes by a walk of their own.
    pub(crate) fn follow_inner(
        &mut self,
        partition: usize,
        offset: u64,
        max_before: i64,
        event: &Event<'_>,
        bytes: &[u8],
    ) {
        let mut values = Values::new();
        // The inner event decoded, so its bytes are JSON: the walk cannot fail on them.
        if self.paths.extract(bytes, &mut values).is_ok() {
            self.follow(partition, offset, max_before, event, &values);
        }
    }

    /// Finalises what the shop's core made final (`through`).
    pub(crate) fn advance_to(&mut self, through: i64) {
        let finals = self.core.advance_to(through);
        self.finals.extend(finals);
    }

    /// [`Follower::advance_to`], handing out each window's full sums (a worker's
    /// partials) as (size, start, sums).
    pub(crate) fn advance_partials(&mut self, through: i64) -> Vec<(i64, i64, DeclaredPartial)> {
        self.core.advance_partials_to(through)
    }

    /// [`Follower::drain`], as partials.
    pub(crate) fn drain_partials(&mut self) -> Vec<(i64, i64, DeclaredPartial)> {
        self.core.drain_partials()
    }

    /// Finalises every open window, as if the input had ended.
    pub(crate) fn drain(&mut self) {
        let finals = self.core.drain();
        self.finals.extend(finals);
    }

    /// The point its windows are final through, to commit.
    pub(crate) fn finalized_through(&self) -> i64 {
        self.core.finalized_through()
    }

    /// Each partition's resume point for this core, given where reading is.
    pub(crate) fn resume_points(&self, next: &[u64]) -> Vec<PartitionResume> {
        self.core.resume_points(next)
    }

    /// Moves each position's resume point back to this core's where it is earlier.
    pub(crate) fn resume_earlier(&self, next: &[u64], positions: &mut [PartitionPosition]) {
        let resume = self.resume_points(next);
        for p in positions {
            let r = resume[p.partition as usize];
            if r.offset < p.resume_offset {
                p.resume_offset = r.offset;
                p.resume_max_ts = r.max_ts_before;
            }
        }
    }

    /// Open windows and the keys they hold.
    pub(crate) fn open_state(&self) -> (usize, usize) {
        self.core.open_state()
    }
}
