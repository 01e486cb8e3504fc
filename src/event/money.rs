//! Exact money: decimals with at most two places, as integer minor units (cents).

/// Largest accepted price, in minor units (10 billion currency units).
pub const MAX_PRICE_MINOR: u64 = 1_000_000_000_000;

/// Why a price was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceError {
    /// Not a plain decimal (`12`, `12.3`, `12.30`): empty, signs, exponents, letters.
    NotDecimal,
    /// A negative price.
    Negative,
    /// More than two significant decimal places (`12.345`).
    TooManyPlaces,
    /// Above [`MAX_PRICE_MINOR`].
    TooLarge,
}

impl std::fmt::Display for PriceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotDecimal => "price is not a plain decimal number",
            Self::Negative => "price is negative",
            Self::TooManyPlaces => "price has more than 2 decimal places",
            Self::TooLarge => "price is too large",
        })
    }
}

/// Parses `59.90`, `59.9`, `59`, `59.900` (trailing zeros beyond two places are exact and
/// accepted) into minor units. No floating point is involved at any step.
///
/// # Errors
/// See [`PriceError`].
pub fn parse_price_minor(text: &str) -> Result<u64, PriceError> {
    let b = text.as_bytes();
    if b.first() == Some(&b'-') {
        return Err(PriceError::Negative);
    }
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(dot) => (&b[..dot], &b[dot + 1..]),
        None => (b, &b[b.len()..]),
    };
    if int.is_empty()
        || !int.iter().all(u8::is_ascii_digit)
        || !frac.iter().all(u8::is_ascii_digit)
        || (b.len() > int.len() && frac.is_empty())
    {
        return Err(PriceError::NotDecimal);
    }
    if frac.len() > 2 && frac[2..].iter().any(|&c| c != b'0') {
        return Err(PriceError::TooManyPlaces);
    }
    let mut units: u64 = 0;
    for &c in int {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(u64::from(c - b'0')))
            .ok_or(PriceError::TooLarge)?;
    }
    let cents = frac
        .iter()
        .take(2)
        .fold(0u64, |a, &c| a * 10 + u64::from(c - b'0'))
        * if frac.len() == 1 { 10 } else { 1 };
    let minor = units
        .checked_mul(100)
        .and_then(|m| m.checked_add(cents))
        .ok_or(PriceError::TooLarge)?;
    if minor > MAX_PRICE_MINOR {
        return Err(PriceError::TooLarge);
    }
    Ok(minor)
}

/// Formats minor units as a decimal string with exactly two places: `5990` → `"59.90"`.
#[must_use]
pub fn format_minor(minor: u128) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_price_minor("59.90"), Ok(5990));
        assert_eq!(parse_price_minor("59.9"), Ok(5990));
        assert_eq!(parse_price_minor("59"), Ok(5900));
        assert_eq!(parse_price_minor("0.01"), Ok(1));
        assert_eq!(parse_price_minor("19.900"), Ok(1990));
        assert_eq!(parse_price_minor("0.29"), Ok(29));
    }

    #[test]
    fn rejects_bad_prices() {
        assert_eq!(parse_price_minor("12.345"), Err(PriceError::TooManyPlaces));
        assert_eq!(parse_price_minor("-1.00"), Err(PriceError::Negative));
        for s in ["", ".5", "5.", "1e3", "12,50", "abc", "+3", " 3"] {
            assert_eq!(parse_price_minor(s), Err(PriceError::NotDecimal), "{s:?}");
        }
        assert_eq!(
            parse_price_minor("99999999999999999999999"),
            Err(PriceError::TooLarge)
        );
        assert_eq!(
            parse_price_minor("10000000000.01"),
            Err(PriceError::TooLarge)
        );
    }

    #[test]
    fn formats_two_places() {
        assert_eq!(format_minor(5990), "59.90");
        assert_eq!(format_minor(7), "0.07");
        assert_eq!(format_minor(0), "0.00");
    }
}
