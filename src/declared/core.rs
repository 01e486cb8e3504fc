//! Declared aggregates as an [`Aggregator`] of the window operator: a `Windows<Declared>`
//! gives them the watermark, the duplicate filter and the finalisation every stream has,
//! for the union of their window sizes; each window opens only the aggregates declared
//! with its size.

use super::{Plan, Row, Window, WindowPartial};
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
        Self { plan, cal }
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
    type Prepared = ();
    type Window = Open;
    type Final = DeclaredFinal;

    fn key<'i>(item: &'i Item<'_>) -> (&'i str, i64) {
        (item.id, item.ts_ms)
    }

    fn prepare(&mut self, _item: &Item<'_>) {}

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

    fn add(&self, w: &mut Open, item: &Item<'_>, (): &()) {
        for (i, win) in &mut w.windows {
            let a = &self.plan.aggregates[*i];
            if a.admits(item.event_type, item.values) {
                win.add(a, &self.cal, item.ts_ms, item.values);
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
