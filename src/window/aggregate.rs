//! The aggregates of one window, while open and once final.

use std::collections::HashMap;

use crate::event::EventType;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// Sales of one category in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySales {
    /// Category name.
    pub category: String,
    /// Number of purchase events.
    pub purchases: u64,
    /// Units sold.
    pub units: u64,
    /// Revenue in minor units (`price × quantity` summed).
    pub revenue_minor: u128,
}

/// One product's line in a top-K list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSales {
    /// Product id.
    pub product_id: String,
    /// Units sold.
    pub units: u64,
    /// Revenue in minor units.
    pub revenue_minor: u128,
}

/// One normalised search query and how often it was searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCount {
    /// Normalised query text.
    pub query: String,
    /// Number of searches.
    pub count: u64,
}

/// All aggregates of one window, in their final (sorted, truncated) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalWindow {
    /// Window size (ms).
    pub size_ms: i64,
    /// Window start (epoch ms, inclusive).
    pub start_ms: i64,
    /// Sales by category, sorted by category name.
    pub sales_by_category: Vec<CategorySales>,
    /// Top-K products by units (ties: product id ascending).
    pub top_by_units: Vec<ProductSales>,
    /// Top-K products by revenue (ties: product id ascending).
    pub top_by_revenue: Vec<ProductSales>,
    /// Event counts indexed by [`EventType`] discriminant.
    pub events_by_type: [u64; 4],
    /// Top-K normalised queries (ties: query ascending).
    pub top_searches: Vec<QueryCount>,
    /// Every key's sums, for the 1-hour window only (what rollups and ranges are made of;
    /// stored apart from the rows).
    pub sums: Option<Box<crate::rollup::Sums>>,
}

impl FinalWindow {
    /// End of the window (exclusive).
    #[must_use]
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.size_ms
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sales {
    purchases: u64,
    units: u64,
    revenue: u128,
}

/// One source partition's full sums for one window (every key, not only the top K): what a
/// worker publishes and a merger adds up. Lists are sorted by name, so equal partials
/// encode to equal bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartialAgg {
    /// Event counts indexed by [`EventType`] discriminant.
    pub counts: [u64; 4],
    /// (category, purchases, units, revenue in minor units).
    pub categories: Vec<(String, u64, u64, u128)>,
    /// (product id, purchases, units, revenue in minor units).
    pub products: Vec<(String, u64, u64, u128)>,
    /// (normalised query, searches).
    pub queries: Vec<(String, u64)>,
    /// (product id, views, add-to-carts): 1-hour windows only.
    pub product_funnel: Vec<(String, u64, u64)>,
    /// (category, views, add-to-carts): 1-hour windows only.
    pub category_funnel: Vec<(String, u64, u64)>,
}

/// [`PartialAgg`] as kappas before the funnel per key wrote it (in `Msg::Partial` and in
/// stored merger states); read as one without a funnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartialAggV1 {
    /// See [`PartialAgg`].
    pub counts: [u64; 4],
    /// See [`PartialAgg`].
    pub categories: Vec<(String, u64, u64, u128)>,
    /// See [`PartialAgg`].
    pub products: Vec<(String, u64, u64, u128)>,
    /// See [`PartialAgg`].
    pub queries: Vec<(String, u64)>,
}

impl From<PartialAggV1> for PartialAgg {
    fn from(p: PartialAggV1) -> Self {
        Self {
            counts: p.counts,
            categories: p.categories,
            products: p.products,
            queries: p.queries,
            ..Self::default()
        }
    }
}

/// An open window's running aggregates. Products and categories are interned ids.
#[derive(Debug, Clone)]
pub struct WindowAgg {
    categories: FastMap<u32, Sales>,
    products: FastMap<u32, Sales>,
    counts: [u64; 4],
    queries: FastMap<Box<str>, u64>,
    /// Views and add-to-carts per product and category (1-hour windows only).
    funnel: Option<Box<Funnels>>,
}

/// (views, add-to-carts) per interned product and category.
#[derive(Debug, Clone, Default)]
struct Funnels {
    products: FastMap<u32, (u64, u64)>,
    categories: FastMap<u32, (u64, u64)>,
}

/// The id [`WindowAgg::view`] takes for an event without a category.
pub(crate) const NO_CATEGORY: u32 = u32::MAX;

impl WindowAgg {
    /// Without the funnel per key.
    pub(crate) fn new() -> Self {
        Self {
            categories: FastMap::default(),
            products: FastMap::default(),
            counts: [0; 4],
            queries: FastMap::default(),
            funnel: None,
        }
    }

    /// With views and add-to-carts per product and category, and every key's sums in its
    /// final form ([`FinalWindow::sums`]).
    pub(crate) fn with_funnel() -> Self {
        Self {
            funnel: Some(Box::default()),
            ..Self::new()
        }
    }

    /// A view (`cart`: an add-to-cart) of `product` in `category`, counted per key when
    /// the window keeps the funnel.
    #[inline]
    pub(crate) fn view(&mut self, category: u32, product: u32, cart: bool) {
        if let Some(f) = &mut self.funnel {
            let bump = |m: &mut FastMap<u32, (u64, u64)>, k: u32| {
                let e = m.entry(k).or_default();
                if cart {
                    e.1 += 1;
                } else {
                    e.0 += 1;
                }
            };
            bump(&mut f.products, product);
            if category != NO_CATEGORY {
                bump(&mut f.categories, category);
            }
        }
    }

    pub(crate) fn count(&mut self, t: EventType) {
        self.counts[t as usize] += 1;
    }

    pub(crate) fn purchase(&mut self, category: u32, product: u32, units: u64, revenue: u128) {
        for s in [
            self.categories.entry(category).or_default(),
            self.products.entry(product).or_default(),
        ] {
            s.purchases += 1;
            s.units += units;
            s.revenue += revenue;
        }
    }

    pub(crate) fn search(&mut self, normalized: &str) {
        if let Some(c) = self.queries.get_mut(normalized) {
            *c += 1;
        } else {
            self.queries.insert(normalized.into(), 1);
        }
    }

    /// Distinct keys held (products + categories + queries), for memory accounting.
    #[must_use]
    pub fn keys(&self) -> usize {
        let funnel = self
            .funnel
            .as_ref()
            .map_or(0, |f| f.products.len() + f.categories.len());
        self.categories.len() + self.products.len() + self.queries.len() + funnel
    }

    /// Every key's sums, names resolved (a 1-hour window's).
    fn sums(&self, f: &Funnels, names: &[Box<str>]) -> crate::rollup::Sums {
        use crate::rollup::KeySums;
        let keyed = |sales: &FastMap<u32, Sales>, funnel: &FastMap<u32, (u64, u64)>| {
            let mut m: HashMap<&str, KeySums> = HashMap::new();
            for (&id, s) in sales {
                let k = m.entry(&names[id as usize]).or_default();
                k.purchases = s.purchases;
                k.units = s.units;
                k.revenue = s.revenue;
            }
            for (&id, &(views, carts)) in funnel {
                let k = m.entry(&names[id as usize]).or_default();
                k.views = views;
                k.carts = carts;
            }
            crate::rollup::sorted(m)
        };
        crate::rollup::Sums {
            events: self.counts,
            products: keyed(&self.products, &f.products),
            categories: keyed(&self.categories, &f.categories),
            queries: crate::rollup::sorted(self.queries.iter().map(|(q, &n)| (&**q, n)).collect()),
            by_hour: [0; 24],
        }
    }

    /// The full sums with names resolved (a worker's partial).
    pub(crate) fn to_partial(&self, names: &[Box<str>]) -> PartialAgg {
        let sales = |m: &FastMap<u32, Sales>| {
            let mut v: Vec<(String, u64, u64, u128)> = m
                .iter()
                .map(|(&id, s)| {
                    (
                        names[id as usize].to_string(),
                        s.purchases,
                        s.units,
                        s.revenue,
                    )
                })
                .collect();
            v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut queries: Vec<(String, u64)> = self
            .queries
            .iter()
            .map(|(q, &c)| (q.to_string(), c))
            .collect();
        queries.sort_unstable();
        let funnel = |m: &FastMap<u32, (u64, u64)>| {
            let mut v: Vec<(String, u64, u64)> = m
                .iter()
                .map(|(&id, &(views, carts))| (names[id as usize].to_string(), views, carts))
                .collect();
            v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (product_funnel, category_funnel) = self.funnel.as_ref().map_or_else(
            || (Vec::new(), Vec::new()),
            |f| (funnel(&f.products), funnel(&f.categories)),
        );
        PartialAgg {
            counts: self.counts,
            categories: sales(&self.categories),
            products: sales(&self.products),
            queries,
            product_funnel,
            category_funnel,
        }
    }

    /// Adds a partial's sums (a merger); `intern` maps a name to its id.
    pub(crate) fn absorb(&mut self, p: &PartialAgg, intern: &mut impl FnMut(&str) -> u32) {
        for (c, n) in self.counts.iter_mut().zip(p.counts) {
            *c += n;
        }
        for (map, list) in [
            (&mut self.categories, &p.categories),
            (&mut self.products, &p.products),
        ] {
            for (name, purchases, units, revenue) in list {
                let s = map.entry(intern(name)).or_default();
                s.purchases += purchases;
                s.units += units;
                s.revenue += revenue;
            }
        }
        for (q, n) in &p.queries {
            *self.queries.entry(q.as_str().into()).or_default() += n;
        }
        if let Some(f) = &mut self.funnel {
            for (map, list) in [
                (&mut f.products, &p.product_funnel),
                (&mut f.categories, &p.category_funnel),
            ] {
                for (name, views, carts) in list {
                    let e = map.entry(intern(name)).or_default();
                    e.0 += views;
                    e.1 += carts;
                }
            }
        }
    }

    /// The final form: names resolved, lists sorted with total orders, top-K truncated.
    pub(crate) fn finish(
        &self,
        size_ms: i64,
        start_ms: i64,
        top_k: usize,
        names: &[Box<str>],
    ) -> FinalWindow {
        let name = |id: u32| names[id as usize].to_string();
        let mut sales_by_category: Vec<CategorySales> = self
            .categories
            .iter()
            .map(|(&c, s)| CategorySales {
                category: name(c),
                purchases: s.purchases,
                units: s.units,
                revenue_minor: s.revenue,
            })
            .collect();
        sales_by_category.sort_unstable_by(|a, b| a.category.cmp(&b.category));

        let products: Vec<(&str, Sales)> = self
            .products
            .iter()
            .map(|(&p, &s)| (&*names[p as usize], s))
            .collect();
        let top = |key: &dyn Fn(&Sales) -> u128| {
            let mut v: Vec<&(&str, Sales)> = products.iter().collect();
            let cmp = |a: &&(&str, Sales), b: &&(&str, Sales)| {
                key(&b.1).cmp(&key(&a.1)).then_with(|| a.0.cmp(b.0))
            };
            if v.len() > top_k && top_k > 0 {
                v.select_nth_unstable_by(top_k - 1, cmp);
            }
            v.truncate(top_k);
            v.sort_unstable_by(cmp);
            v.into_iter()
                .map(|(p, s)| ProductSales {
                    product_id: (*p).to_string(),
                    units: s.units,
                    revenue_minor: s.revenue,
                })
                .collect::<Vec<_>>()
        };
        let top_by_units = top(&|s| u128::from(s.units));
        let top_by_revenue = top(&|s| s.revenue);

        let mut qs: Vec<(&str, u64)> = self.queries.iter().map(|(q, &c)| (&**q, c)).collect();
        let qcmp = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        if qs.len() > top_k && top_k > 0 {
            qs.select_nth_unstable_by(top_k - 1, qcmp);
        }
        qs.truncate(top_k);
        qs.sort_unstable_by(qcmp);
        let top_searches = qs
            .into_iter()
            .map(|(q, c)| QueryCount {
                query: q.to_string(),
                count: c,
            })
            .collect();

        FinalWindow {
            size_ms,
            start_ms,
            sales_by_category,
            top_by_units,
            top_by_revenue,
            events_by_type: self.counts,
            top_searches,
            sums: self.funnel.as_ref().map(|f| Box::new(self.sums(f, names))),
        }
    }
}
