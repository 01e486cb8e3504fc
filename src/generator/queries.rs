//! Search query synthesis, with the sloppy casing/whitespace real users type.

use rand::Rng;

use super::catalogue::{COLORS, CategorySpec, Product};
use super::json::push_u64;

/// Write a query about `product` (or, when `generic`, about a random item of
/// the product's category) into `out` (cleared first). The bytes are UTF-8.
pub(super) fn build_query<R: Rng>(
    rng: &mut R,
    product: &Product,
    spec: &CategorySpec,
    generic: bool,
    sale: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    let (brand, item, color) = if generic {
        (
            spec.brands[rng.random_range(0..spec.brands.len())],
            spec.items[rng.random_range(0..spec.items.len())],
            COLORS[rng.random_range(0..COLORS.len())],
        )
    } else {
        (product.brand, product.item, product.color)
    };
    let pattern = rng.random_range(0..if sale { 12 } else { 11 });
    let mut put = |s: &str| out.extend_from_slice(s.as_bytes());
    match pattern {
        0 | 1 => {
            put(brand);
            put(" ");
            put(item);
            put(" ");
            put(spec.sizes[rng.random_range(0..spec.sizes.len())]);
        }
        2 => {
            put(item);
            put(" ");
            put(color);
            put(" recommendation");
        }
        3 => {
            put("cheap ");
            put(item);
        }
        4 => {
            put("best ");
            put(item);
            put(" for ");
            put(spec.activities[rng.random_range(0..spec.activities.len())]);
        }
        5 | 6 => {
            put(color);
            put(" ");
            put(item);
        }
        7 => {
            put(item);
            put(" under ");
            push_u64(out, budget(product.price_minor));
        }
        8 => {
            put(brand);
            put(" ");
            put(item);
        }
        9 => {
            put(item);
        }
        10 => {
            put(brand);
            put(" ");
            put(item);
            put(" review");
        }
        _ => {
            put(item);
            put(" black friday deal");
        }
    }
    add_noise(rng, out);
}

/// A round budget strictly above the price: 10, 20, 50, 100, 200, 500, …
fn budget(price_minor: u64) -> u64 {
    let mut decade = 10u64;
    loop {
        for m in [1, 2, 5] {
            let c = decade * m;
            if c * 100 > price_minor {
                return c;
            }
        }
        decade *= 10;
    }
}

/// Random capitalisation and whitespace sloppiness (kappa normalises these).
fn add_noise<R: Rng>(rng: &mut R, q: &mut Vec<u8>) {
    match rng.random_range(0..100u32) {
        0..=5 => q.make_ascii_uppercase(),
        6..=13 => {
            let mut at_start = true;
            for b in q.iter_mut() {
                if at_start {
                    b.make_ascii_uppercase();
                }
                at_start = *b == b' ';
            }
        }
        14..=17 => {
            let bits: u64 = rng.random();
            for (i, b) in q.iter_mut().enumerate() {
                if bits >> (i % 64) & 1 == 1 {
                    b.make_ascii_uppercase();
                }
            }
        }
        _ => {}
    }
    match rng.random_range(0..100u32) {
        0..=5 => {
            // Double one inner space.
            if let Some(pos) = q.iter().position(|&b| b == b' ') {
                q.insert(pos, b' ');
            }
        }
        6..=9 => q.insert(0, b' '),
        10..=13 => q.extend_from_slice(b"  "),
        14 => {
            // A tab between words (escaped as \t in JSON).
            if let Some(pos) = q.iter().rposition(|&b| b == b' ') {
                q[pos] = b'\t';
            }
        }
        15 => {
            q.insert(0, b' ');
            q.push(b' ');
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::budget;

    #[test]
    fn budgets_are_round_and_above_price() {
        assert_eq!(budget(500), 10);
        assert_eq!(budget(1_500), 20);
        assert_eq!(budget(1_999), 20);
        assert_eq!(budget(2_000), 50);
        assert_eq!(budget(4_999), 50);
        assert_eq!(budget(5_990), 100);
        assert_eq!(budget(14_999), 200);
        assert_eq!(budget(45_000), 500);
        assert_eq!(budget(150_000), 2000);
    }
}
