//! Product catalogue: categories, products with fixed prices, Zipf popularity.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Static description of one product category.
pub(super) struct CategorySpec {
    pub name: &'static str,
    /// Relative share of catalogue products in this category.
    pub weight: u32,
    pub items: &'static [&'static str],
    pub brands: &'static [&'static str],
    /// Size / variant words used in queries (`{brand} {item} {size}`).
    pub sizes: &'static [&'static str],
    /// Used in `best {item} for {activity}`.
    pub activities: &'static [&'static str],
    /// Price range in cents; prices are drawn log-triangular inside it.
    pub min_cents: u64,
    pub max_cents: u64,
}

pub(super) const CATEGORIES: &[CategorySpec] = &[
    CategorySpec {
        name: "shoes",
        weight: 10,
        items: &[
            "sneakers",
            "running shoes",
            "boots",
            "sandals",
            "loafers",
            "hiking boots",
            "slippers",
            "high heels",
        ],
        brands: &[
            "Nike",
            "Adidas",
            "Puma",
            "New Balance",
            "Asics",
            "Dr. Martens",
            "Birkenstock",
        ],
        sizes: &["size 42", "size 9", "10.5", "us 8", "eu 39", "wide fit"],
        activities: &[
            "running",
            "hiking",
            "work",
            "the gym",
            "a wedding",
            "winter",
        ],
        min_cents: 1_999,
        max_cents: 24_999,
    },
    CategorySpec {
        name: "electronics",
        weight: 12,
        items: &[
            "headphones",
            "laptop",
            "phone charger",
            "smartwatch",
            "bluetooth speaker",
            "tablet",
            "usb-c cable",
            "monitor",
            "keyboard",
            "webcam",
        ],
        brands: &[
            "Sony", "Samsung", "Apple", "Anker", "Logitech", "Bose", "Lenovo",
        ],
        sizes: &["64gb", "128gb", "15 inch", "27\"", "1m", "2 pack"],
        activities: &[
            "gaming",
            "travel",
            "working from home",
            "students",
            "music",
            "video calls",
        ],
        min_cents: 1_500,
        max_cents: 150_000,
    },
    CategorySpec {
        name: "books",
        weight: 9,
        items: &[
            "novel",
            "cookbook",
            "biography",
            "thriller",
            "fantasy novel",
            "children's book",
            "travel guide",
            "textbook",
        ],
        brands: &[
            "Penguin",
            "HarperCollins",
            "Vintage",
            "O'Reilly",
            "Bloomsbury",
        ],
        sizes: &["paperback", "hardcover", "large print", "box set"],
        activities: &["beginners", "kids", "summer reading", "a book club"],
        min_cents: 500,
        max_cents: 4_000,
    },
    CategorySpec {
        name: "home",
        weight: 10,
        items: &[
            "coffee maker",
            "duvet cover",
            "desk lamp",
            "frying pan",
            "bath towel",
            "vacuum cleaner",
            "storage box",
            "throw pillow",
        ],
        brands: &["IKEA", "Philips", "Tefal", "Dyson", "Maison Café"],
        sizes: &["queen", "king", "large", "set of 4", "24cm"],
        activities: &["small apartments", "the kitchen", "guests", "pets"],
        min_cents: 800,
        max_cents: 60_000,
    },
    CategorySpec {
        name: "toys",
        weight: 7,
        items: &[
            "lego set",
            "puzzle",
            "plush bear",
            "board game",
            "rc car",
            "doll house",
            "building blocks",
        ],
        brands: &["LEGO", "Hasbro", "Mattel", "Ravensburger", "Playmobil"],
        sizes: &["1000 pieces", "age 3+", "age 8+", "large"],
        activities: &[
            "toddlers",
            "family night",
            "a birthday gift",
            "a 10 year old",
        ],
        min_cents: 500,
        max_cents: 20_000,
    },
    CategorySpec {
        name: "beauty",
        weight: 8,
        items: &[
            "face cream",
            "shampoo",
            "lipstick",
            "perfume",
            "sunscreen",
            "hair dryer",
            "mascara",
        ],
        brands: &["L'Oréal", "Nivea", "Clinique", "Dior", "The Ordinary"],
        sizes: &["50ml", "100ml", "spf 50", "travel size"],
        activities: &["dry skin", "sensitive skin", "summer", "men"],
        min_cents: 300,
        max_cents: 15_000,
    },
    CategorySpec {
        name: "sports",
        weight: 8,
        items: &[
            "yoga mat",
            "dumbbells",
            "tennis racket",
            "football",
            "bike helmet",
            "running shorts",
            "water bottle",
        ],
        brands: &["Decathlon", "Wilson", "Under Armour", "Garmin", "Head"],
        sizes: &["5kg", "2x10kg", "medium", "size 5", "750ml"],
        activities: &["home workouts", "beginners", "marathon training", "kids"],
        min_cents: 800,
        max_cents: 40_000,
    },
    CategorySpec {
        name: "grocery",
        weight: 8,
        items: &[
            "coffee beans",
            "olive oil",
            "green tea",
            "dark chocolate",
            "pasta",
            "protein bar",
            "honey",
        ],
        brands: &["Lavazza", "Barilla", "Lindt", "Twinings", "Müller"],
        sizes: &["1kg", "500g", "12 pack", "750ml"],
        activities: &["breakfast", "keto", "vegans", "espresso"],
        min_cents: 150,
        max_cents: 5_000,
    },
    CategorySpec {
        name: "fashion",
        weight: 12,
        items: &[
            "t-shirt",
            "hoodie",
            "jeans",
            "winter jacket",
            "dress",
            "scarf",
            "sweater",
        ],
        brands: &["Zara", "H&M", "Levi's", "Uniqlo", "Tommy Hilfiger"],
        sizes: &["s", "m", "l", "xl", "32/32"],
        activities: &["winter", "the office", "a party", "summer"],
        min_cents: 999,
        max_cents: 29_999,
    },
    CategorySpec {
        name: "garden",
        weight: 6,
        items: &[
            "garden hose",
            "lawn mower",
            "plant pot",
            "pruning shears",
            "bird feeder",
            "seed kit",
        ],
        brands: &["Gardena", "Bosch", "Fiskars", "Husqvarna"],
        sizes: &["25m", "30cm", "large", "set of 3"],
        activities: &["a small garden", "a balcony", "tomatoes", "beginners"],
        min_cents: 500,
        max_cents: 80_000,
    },
    CategorySpec {
        name: "automotive",
        weight: 5,
        items: &[
            "car phone holder",
            "dash cam",
            "tire inflator",
            "seat covers",
            "jump starter",
            "wiper blades",
        ],
        brands: &["Bosch", "Michelin", "Thule", "3M", "Garmin"],
        sizes: &["universal", "24 inch", "12v", "set of 2"],
        activities: &["road trips", "winter", "an suv", "long drives"],
        min_cents: 700,
        max_cents: 50_000,
    },
    CategorySpec {
        name: "jewelry",
        weight: 5,
        items: &[
            "necklace", "ring", "earrings", "bracelet", "watch", "pendant",
        ],
        brands: &["Pandora", "Swarovski", "Fossil", "Tiffany & Co.", "Casio"],
        sizes: &["size 7", "18k", "45cm", "silver"],
        activities: &["a wedding", "an anniversary gift", "everyday wear", "her"],
        min_cents: 1_500,
        max_cents: 250_000,
    },
];

pub(super) const COLORS: &[&str] = &[
    "black", "white", "red", "blue", "navy", "green", "grey", "pink", "beige", "brown", "silver",
    "gold", "purple", "orange", "yellow",
];

/// Zipf exponent for product popularity.
pub const ZIPF_S: f64 = 1.1;

/// The names of all categories, in a fixed order.
pub fn category_names() -> impl Iterator<Item = &'static str> {
    CATEGORIES.iter().map(|c| c.name)
}

/// One catalogue product. Its price and category never change.
#[derive(Clone, Debug)]
pub struct Product {
    /// `p_1` … `p_N`.
    pub id: String,
    /// Category name, e.g. `shoes`.
    pub category: &'static str,
    /// Price in cents.
    pub price_minor: u64,
    /// Brand name, drawn from the category's brands.
    pub brand: &'static str,
    /// Item kind, drawn from the category's items (e.g. `sneakers`).
    pub item: &'static str,
    /// Colour word, e.g. `navy`.
    pub color: &'static str,
    /// Popularity rank, 0 = most popular.
    pub rank: u32,
    /// Price as `major.mm` text, e.g. `59.90`.
    pub price_text: String,
    pub(super) cat: u8,
}

/// Seed-derived product catalogue with a Zipf popularity model.
#[derive(Debug)]
pub struct Catalogue {
    products: Vec<Product>,
    /// Product index by popularity rank.
    by_rank: Vec<u32>,
    /// Cumulative Zipf weights by rank (unnormalised).
    cdf: Vec<f64>,
    /// Per category: product indices by rank, and cumulative weights.
    cat_members: Vec<Vec<u32>>,
    cat_cdf: Vec<Vec<f64>>,
}

impl Catalogue {
    /// Build the catalogue for `seed` with `products` products (≥ 1).
    /// Deterministic; independent of every other generator setting.
    ///
    /// # Panics
    /// If `products` is 0.
    #[must_use]
    pub fn new(seed: u64, products: u32) -> Self {
        assert!(products > 0, "catalogue needs at least one product");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0xCA7A_1006);
        let n = products as usize;
        let total_weight: u32 = CATEGORIES.iter().map(|c| c.weight).sum();

        // Popularity rank order is a seed-dependent shuffle.
        let mut by_rank: Vec<u32> = (0..products).collect();
        by_rank.shuffle(&mut rng);
        let mut rank_of = vec![0u32; n];
        for (rank, &p) in by_rank.iter().enumerate() {
            rank_of[p as usize] = u32::try_from(rank).expect("rank fits u32");
        }

        let mut products_v = Vec::with_capacity(n);
        for (i, &rank) in rank_of.iter().enumerate() {
            let mut pick = rng.random_range(0..total_weight);
            let mut cat = 0usize;
            while pick >= CATEGORIES[cat].weight {
                pick -= CATEGORIES[cat].weight;
                cat += 1;
            }
            let spec = &CATEGORIES[cat];
            let price_minor = draw_price(&mut rng, spec);
            let mut price_text = String::with_capacity(8);
            let mut tmp = Vec::with_capacity(8);
            super::json::push_cents(&mut tmp, price_minor);
            price_text.push_str(std::str::from_utf8(&tmp).expect("ascii"));
            products_v.push(Product {
                id: format!("p_{}", i + 1),
                category: spec.name,
                price_minor,
                brand: spec.brands[rng.random_range(0..spec.brands.len())],
                item: spec.items[rng.random_range(0..spec.items.len())],
                color: COLORS[rng.random_range(0..COLORS.len())],
                rank,
                price_text,
                cat: u8::try_from(cat).expect("few categories"),
            });
        }

        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        let mut cat_members = vec![Vec::new(); CATEGORIES.len()];
        let mut cat_cdf = vec![Vec::new(); CATEGORIES.len()];
        let mut cat_acc = vec![0.0f64; CATEGORIES.len()];
        for (rank, &p) in by_rank.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let w = 1.0 / ((rank + 1) as f64).powf(ZIPF_S);
            acc += w;
            cdf.push(acc);
            let c = usize::from(products_v[p as usize].cat);
            cat_acc[c] += w;
            cat_members[c].push(p);
            cat_cdf[c].push(cat_acc[c]);
        }
        Catalogue {
            products: products_v,
            by_rank,
            cdf,
            cat_members,
            cat_cdf,
        }
    }

    /// All products; index `i` has id `p_{i+1}`.
    #[must_use]
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// Product by id (`p_N`), if it exists.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Product> {
        let n: usize = id.strip_prefix("p_")?.parse().ok()?;
        self.products.get(n.checked_sub(1)?)
    }

    pub(super) fn product(&self, idx: u32) -> &Product {
        &self.products[idx as usize]
    }

    pub(super) fn spec(&self, idx: u32) -> &'static CategorySpec {
        &CATEGORIES[usize::from(self.products[idx as usize].cat)]
    }

    /// Draw a product index by global Zipf popularity.
    pub(super) fn sample<R: Rng>(&self, rng: &mut R) -> u32 {
        let total = *self.cdf.last().expect("non-empty");
        let u = rng.random::<f64>() * total;
        let r = self
            .cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1);
        self.by_rank[r]
    }

    /// Draw a product of category `cat` by Zipf popularity (falls back to
    /// the global draw if the category is empty).
    pub(super) fn sample_in<R: Rng>(&self, rng: &mut R, cat: u8) -> u32 {
        let cdf = &self.cat_cdf[usize::from(cat)];
        let Some(&total) = cdf.last() else {
            return self.sample(rng);
        };
        let u = rng.random::<f64>() * total;
        let r = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
        self.cat_members[usize::from(cat)][r]
    }
}

/// Log-triangular price in the category range, with retail-style endings.
fn draw_price<R: Rng>(rng: &mut R, spec: &CategorySpec) -> u64 {
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = ((spec.min_cents as f64).ln(), (spec.max_cents as f64).ln());
    // Mean of two uniforms: peaks in the middle of the log range.
    let t = f64::midpoint(rng.random::<f64>(), rng.random::<f64>());
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cents = (lo + t * (hi - lo)).exp().round() as u64;
    let whole = cents / 100 * 100;
    let cents = match rng.random_range(0..10u32) {
        0..=3 => whole + 99,
        4 | 5 => whole + 90,
        6 => whole.max(100),
        _ => cents,
    };
    cents.clamp(1, spec.max_cents)
}
