//! Declared aggregates as an [`Aggregator`] of the window operator: a `Windows<Declared>`
//! gives them the watermark, the duplicate filter and the finalisation every stream has,
//! for the union of their window sizes; each window opens only the aggregates declared
//! with its size.

use super::{Numbers, Plan, Row, Window, WindowPartial};
use crate::event::{Event, EventType};
use crate::rollup::Calendar;
use crate::window::{Aggregator, Mergeable, WindowConfig};

/// What the declared aggregates fold: a decoded record (an event or a click) and its
/// declared paths' values ([`crate::event::decode_capturing`], [`super::Paths::extract`]).
#[derive(Debug)]
pub struct Item<'a> {
    /// What the duplicate filter knows it by (an event's `event_id`).
    pub id: &'a str,
    /// Its event time (epoch ms).
    pub ts_ms: i64,
    /// An event's type (a click has none).
    pub event_type: Option<EventType>,
    /// Its declared paths' values, by path id.
    pub values: &'a [Option<&'a [u8]>],
}

impl<'a> Item<'a> {
    /// An event's item.
    #[must_use]
    pub fn of_event(event: &'a Event<'a>, values: &'a [Option<&'a [u8]>]) -> Self {
        Self {
            id: &event.event_id,
            ts_ms: event.ts_ms,
            event_type: Some(event.event_type),
            values,
        }
    }
}

/// Every declared aggregate of a plan, folded in the version's zone.
#[derive(Debug)]
pub struct Declared {
    plan: Plan,
    cal: Calendar,
    /// Each window size and the aggregates declared with it (bit `i`: the plan's `i`th).
    by_size: Vec<(i64, u64)>,
}

/// What a record is to the declared aggregates, decided once for all its windows: which
/// aggregates admit it (bit `i`: the plan's `i`th), and the numbers they read.
#[derive(Debug)]
pub struct Admitted {
    aggregates: u64,
    numbers: Numbers,
}

/// An open window of one size: the windows of the aggregates declared with it (by index
/// in the plan).
#[derive(Debug, Clone, Default)]
pub struct Open {
    windows: Vec<(usize, Window)>,
}

/// An aggregate's rows in one window: (key parts, row), by key.
pub type Rows = Vec<(Vec<String>, Row)>;

/// One window of the declared aggregates of its size as a worker publishes it: (aggregate
/// name, its full sums) for each aggregate with events in it, in plan order.
pub type DeclaredPartial = Vec<(String, WindowPartial)>;

/// One final window of the declared aggregates of its size: each one's rows by key (an
/// aggregate with no events in the window has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredFinal {
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms).
    pub start_ms: i64,
    /// (aggregate name, its rows by key), in name order.
    pub aggregates: Vec<(String, Rows)>,
}

impl Declared {
    /// The aggregates of `plan`, days and hours of the day in `cal`'s zone.
    #[must_use]
    pub fn new(plan: Plan, cal: Calendar) -> Self {
        assert!(
            plan.aggregates.len() <= super::MAX_AGGREGATES,
            "a compiled plan"
        );
        let mut by_size: Vec<(i64, u64)> = Vec::new();
        for (i, a) in plan.aggregates.iter().enumerate() {
            for &s in &a.sizes_ms {
                match by_size.iter_mut().find(|b| b.0 == s) {
                    Some(b) => b.1 |= 1 << i,
                    None => by_size.push((s, 1 << i)),
                }
            }
        }
        Self { plan, cal, by_size }
    }

    /// The window operator's configuration: every declared size once, ascending.
    #[must_use]
    pub fn window_config(&self, max_delay_ms: i64) -> WindowConfig {
        let mut sizes_ms: Vec<i64> = self
            .plan
            .aggregates
            .iter()
            .flat_map(|a| a.sizes_ms.iter().copied())
            .collect();
        sizes_ms.sort_unstable();
        sizes_ms.dedup();
        WindowConfig {
            sizes_ms,
            max_delay_ms,
            top_k: 0,
        }
    }
}

impl Aggregator for Declared {
    type Item<'a> = Item<'a>;
    type Prepared = Admitted;
    type Window = Open;
    type Final = DeclaredFinal;

    fn key<'i>(item: &'i Item<'_>) -> (&'i str, i64) {
        (item.id, item.ts_ms)
    }

    fn prepare(&mut self, item: &Item<'_>) -> Admitted {
        let mut numbers = Numbers::default();
        let mut aggregates = 0;
        for (i, a) in self.plan.aggregates.iter().enumerate() {
            if a.admits_reading(item.event_type, item.values, &mut numbers) {
                a.read_measures(item.values, &mut numbers);
                aggregates |= 1 << i;
            }
        }
        Admitted {
            aggregates,
            numbers,
        }
    }

    fn takes(&self, p: &Admitted, size_ms: i64) -> bool {
        (self.by_size.iter())
            .find(|b| b.0 == size_ms)
            .is_some_and(|b| b.1 & p.aggregates != 0)
    }

    fn open(&self, size_ms: i64) -> Open {
        Open {
            windows: self
                .plan
                .aggregates
                .iter()
                .enumerate()
                .filter(|(_, a)| a.sizes_ms.contains(&size_ms))
                .map(|(i, _)| (i, Window::default()))
                .collect(),
        }
    }

    fn add(&self, w: &mut Open, item: &Item<'_>, p: &Admitted) {
        for (i, win) in &mut w.windows {
            if p.aggregates & (1 << *i) != 0 {
                let a = &self.plan.aggregates[*i];
                win.add_read(a, &self.cal, (item.ts_ms, item.values), &p.numbers);
            }
        }
    }

    fn finish(&self, w: &Open, size_ms: i64, start_ms: i64, _top_k: usize) -> DeclaredFinal {
        DeclaredFinal {
            size_ms,
            start_ms,
            aggregates: w
                .windows
                .iter()
                .filter(|(_, win)| !win.is_empty())
                .map(|(i, win)| {
                    let a = &self.plan.aggregates[*i];
                    (a.name.clone(), win.finish(a))
                })
                .collect(),
        }
    }

    fn keys(w: &Open) -> usize {
        w.windows.iter().map(|(_, win)| win.len()).sum()
    }
}

impl Mergeable for Declared {
    type Partial = DeclaredPartial;

    fn partial(&self, w: &Open) -> DeclaredPartial {
        w.windows
            .iter()
            .filter(|(_, win)| !win.is_empty())
            .map(|(i, win)| (self.plan.aggregates[*i].name.clone(), win.to_partial()))
            .collect()
    }

    fn merged<'p>(
        &mut self,
        partials: impl IntoIterator<Item = &'p DeclaredPartial>,
        size_ms: i64,
        start_ms: i64,
        top_k: usize,
    ) -> DeclaredFinal {
        let mut w = self.open(size_ms);
        for p in partials {
            for (name, part) in p {
                // The workers' configuration is the merger's (checked by its fingerprint),
                // so every name is one of the window's aggregates.
                let at = w
                    .windows
                    .iter_mut()
                    .find(|(i, _)| self.plan.aggregates[*i].name == *name);
                if let Some((i, win)) = at {
                    win.absorb(&self.plan.aggregates[*i], part);
                }
            }
        }
        self.finish(&w, size_ms, start_ms, top_k)
    }

    fn partial_keys(p: &DeclaredPartial) -> usize {
        p.iter().map(|(_, w)| w.len()).sum()
    }
}
