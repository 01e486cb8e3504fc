//! Shopping-session state machine: searches → views (→ `add_cart`) → purchases.

use rand::Rng;

use super::catalogue::Catalogue;
use super::queries::build_query;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventType {
    Search,
    View,
    AddCart,
    Purchase,
}

impl EventType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventType::Search => "search",
            EventType::View => "view",
            EventType::AddCart => "add_cart",
            EventType::Purchase => "purchase",
        }
    }
}

/// `(type, os, weight)`.
pub(super) const DEVICES: &[(&str, &str, u32)] = &[
    ("mobile", "iOS", 30),
    ("mobile", "Android", 30),
    ("desktop", "Windows", 15),
    ("desktop", "macOS", 10),
    ("desktop", "Linux", 3),
    ("tablet", "iPadOS", 7),
    ("tablet", "Android", 5),
];
/// `(version, weight)`.
pub(super) const APP_VERSIONS: &[(&str, u32)] = &[
    ("5.2.1", 40),
    ("5.2.0", 20),
    ("5.1.4", 15),
    ("5.0.9", 10),
    ("4.9.12", 10),
    ("5.3.0-beta.1", 5),
];
/// `(referrer, weight)`.
pub(super) const REFERRERS: &[(&str, u32)] = &[
    ("google_search", 30),
    ("direct", 25),
    ("email", 10),
    ("facebook", 8),
    ("instagram", 8),
    ("tiktok", 6),
    ("bing_search", 5),
    ("affiliate", 5),
    ("push_notification", 3),
];
/// `(id, name)`; the last entry is the sale campaign, used only when sale > 1.
pub(super) const CAMPAIGNS: &[(&str, &str)] = &[
    ("camp_101", "summer-sale"),
    ("camp_123", "newsletter-weekly"),
    ("camp_207", "retargeting"),
    ("camp_311", "influencer-q4"),
    ("camp_900", "black-friday-sale"),
];
pub(super) const SALE_CAMPAIGN: u8 = 4;
pub(super) const NONE8: u8 = u8::MAX;
const NONE32: u32 = u32::MAX;
const MAX_VIEWS: u8 = 6;

/// Session-independent behaviour knobs derived from the config.
pub(super) struct Behaviour {
    pub users: u32,
    pub p_cart: f64,
    pub p_buy: f64,
    pub sale: bool,
}

impl Behaviour {
    pub(super) fn new(users: u32, sale: f64) -> Self {
        let boost = (sale - 1.0).max(0.0);
        Behaviour {
            users,
            p_cart: (0.25 * (1.0 + 0.1 * boost)).min(0.5),
            p_buy: (0.45 * (1.0 + 0.25 * boost)).min(0.9),
            sale: sale > 1.0,
        }
    }
}

/// What one session step produced.
pub(super) struct Step {
    pub etype: EventType,
    /// Product index (unused for searches).
    pub product: u32,
    pub quantity: u8,
}

pub(super) struct Session {
    pub id: u64,
    pub user: u32,
    pub device: u8,
    pub app: u8,
    pub referrer: u8,
    pub campaign: u8,
    /// Product events: 0 = `"query":null`, 1 = no query field.
    pub query_absent: bool,
    searches_left: u8,
    views_left: u8,
    focus_cat: u8,
    target: u32,
    target_view_pending: bool,
    pending_cart: Option<(u32, u8)>,
    buys: [(u32, u8); MAX_VIEWS as usize],
    buys_len: u8,
    buys_pos: u8,
}

fn weighted<R: Rng, T>(rng: &mut R, table: &[T], weight: impl Fn(&T) -> u32) -> u8 {
    let total: u32 = table.iter().map(&weight).sum();
    let mut pick = rng.random_range(0..total);
    for (i, t) in table.iter().enumerate() {
        let w = weight(t);
        if pick < w {
            return u8::try_from(i).expect("small table");
        }
        pick -= w;
    }
    unreachable!("pick < total")
}

impl Session {
    pub(super) fn new<R: Rng>(id: u64, rng: &mut R, b: &Behaviour) -> Self {
        let user = rng.random_range(1..=b.users);
        let searches_left = match rng.random_range(0..100u32) {
            0..=29 => 0,
            30..=64 => 1,
            65..=84 => 2,
            _ => 3,
        };
        let views_left = rng.random_range(1..=MAX_VIEWS);
        let (device, app) = if rng.random_bool(0.9) {
            (
                weighted(rng, DEVICES, |d| d.2),
                weighted(rng, APP_VERSIONS, |a| a.1),
            )
        } else {
            (NONE8, NONE8)
        };
        let (referrer, campaign) = if rng.random_bool(0.8) {
            let r = weighted(rng, REFERRERS, |r| r.1);
            let c = if b.sale && rng.random_bool(0.4) {
                SALE_CAMPAIGN
            } else if rng.random_bool(0.15) {
                rng.random_range(0..SALE_CAMPAIGN)
            } else {
                NONE8
            };
            (r, c)
        } else {
            (NONE8, NONE8)
        };
        Session {
            id,
            user,
            device,
            app,
            referrer,
            campaign,
            query_absent: rng.random_bool(0.3),
            searches_left,
            views_left,
            focus_cat: NONE8,
            target: NONE32,
            target_view_pending: false,
            pending_cart: None,
            buys: [(0, 0); MAX_VIEWS as usize],
            buys_len: 0,
            buys_pos: 0,
        }
    }

    /// True once the session has emitted its last event.
    pub(super) fn done(&self) -> bool {
        self.pending_cart.is_none()
            && self.searches_left == 0
            && self.views_left == 0
            && self.buys_pos == self.buys_len
    }

    /// Advance by one event. For searches the query text is written to
    /// `query`. Must not be called once [`Session::done`].
    pub(super) fn step<R: Rng>(
        &mut self,
        rng: &mut R,
        cat: &Catalogue,
        b: &Behaviour,
        query: &mut Vec<u8>,
    ) -> Step {
        if let Some((product, quantity)) = self.pending_cart.take() {
            if rng.random_bool(b.p_buy) {
                self.buys[usize::from(self.buys_len)] = (product, quantity);
                self.buys_len += 1;
            }
            return Step {
                etype: EventType::AddCart,
                product,
                quantity,
            };
        }
        if self.searches_left > 0 {
            self.searches_left -= 1;
            if self.target == NONE32 || rng.random_bool(0.35) {
                self.target = if self.focus_cat != NONE8 && rng.random_bool(0.3) {
                    cat.sample_in(rng, self.focus_cat)
                } else {
                    cat.sample(rng)
                };
            }
            let p = cat.product(self.target);
            let generic = rng.random_bool(0.25);
            build_query(rng, p, cat.spec(self.target), generic, b.sale, query);
            self.focus_cat = p.cat;
            self.target_view_pending = true;
            return Step {
                etype: EventType::Search,
                product: self.target,
                quantity: 0,
            };
        }
        if self.views_left > 0 {
            self.views_left -= 1;
            let product = if self.target_view_pending && rng.random_bool(0.6) {
                self.target
            } else if self.focus_cat != NONE8 && rng.random_bool(0.8) {
                cat.sample_in(rng, self.focus_cat)
            } else {
                cat.sample(rng)
            };
            self.target_view_pending = false;
            if self.focus_cat == NONE8 && rng.random_bool(0.5) {
                self.focus_cat = cat.product(product).cat;
            }
            if rng.random_bool(b.p_cart) {
                let quantity = match rng.random_range(0..100u32) {
                    0..=74 => 1,
                    75..=92 => 2,
                    _ => 3,
                };
                self.pending_cart = Some((product, quantity));
            }
            return Step {
                etype: EventType::View,
                product,
                quantity: 1,
            };
        }
        debug_assert!(
            self.buys_pos < self.buys_len,
            "step() on a finished session"
        );
        let (product, quantity) = self.buys[usize::from(self.buys_pos)];
        self.buys_pos += 1;
        Step {
            etype: EventType::Purchase,
            product,
            quantity,
        }
    }
}
