//! The catalogue as a CSV for `shop.products` (issue 18, item 4): every product of the
//! generator's [`Catalogue`] for a seed, valid from a start time at its price, and about one
//! product in ten repriced later that day (20–50 % off, a sale) — the price changes an
//! as-of join has to get right.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::catalogue::Catalogue;
use crate::event::money::format_minor;
use crate::event::time::format_rfc3339_ms;
use crate::products::CSV_HEADER;

/// Writes the catalogue of `seed` with `products` products as CSV (header
/// [`CSV_HEADER`]), valid from `start_ms`.
///
/// # Errors
/// Writing to `out` failed.
pub fn products_csv(
    seed: u64,
    products: u32,
    start_ms: i64,
    out: impl std::io::Write,
) -> std::io::Result<()> {
    let catalogue = Catalogue::new(seed, products.max(1));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5052_4f44);
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for p in catalogue.products() {
        let name = format!("{} {} {}", p.brand, p.color, p.item);
        let mut row = |price: u64, from: i64| {
            w.write_record([
                p.id.as_str(),
                &name,
                p.brand,
                p.category,
                &format_minor(u128::from(price)),
                &format_rfc3339_ms(from),
            ])
        };
        row(p.price_minor, start_ms)?;
        if rng.random_bool(0.1) {
            let off = rng.random_range(20..=50u64);
            let at = start_ms + rng.random_range(1..86_400_000);
            row((p.price_minor * (100 - off) / 100).max(1), at)?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::money::Currency;
    use crate::products::{AsOf, from_csv};

    fn csv(seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        products_csv(seed, 500, super::super::DEFAULT_START_MS, &mut out).unwrap();
        out
    }

    #[test]
    fn the_csv_is_the_generators_catalogue_with_some_price_changes() {
        assert_eq!(csv(3), csv(3));
        assert_ne!(csv(3), csv(4));
        let entries = from_csv(&csv(3)[..], Currency::EUR).unwrap();
        let changes = entries.len() - 500;
        assert!((20..=90).contains(&changes), "{changes} price changes");
        let catalogue = Catalogue::new(3, 500);
        let mut t = AsOf::default();
        for e in entries {
            t.insert(e);
        }
        let start = super::super::DEFAULT_START_MS;
        let mut cheaper = 0;
        for p in catalogue.products() {
            let first = t.at(&p.id, start).unwrap();
            assert_eq!(
                (first.price, first.category.as_str()),
                (p.price_minor, p.category)
            );
            let late = t.at(&p.id, start + 86_400_000).unwrap();
            assert!(late.price <= p.price_minor);
            cheaper += usize::from(late.price < p.price_minor);
        }
        assert_eq!(cheaper, changes);
    }
}
