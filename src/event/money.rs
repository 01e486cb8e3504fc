//! Exact money: amounts of the one configured currency, as integer hundredths of its
//! major unit ("minor units" below: cents for EUR/USD; for a currency without decimals such
//! as JPY, ¥100 is 10000 hundredths), so revenue always prints with two places.

use std::fmt;

/// Largest accepted unit price, in hundredths of the currency's major unit (10 billion
/// currency units), whichever schema carries the price.
pub const MAX_PRICE_MINOR: u64 = 1_000_000_000_000;

/// `minor` (hundredths) if it is within [`MAX_PRICE_MINOR`]: the one bound of every price.
///
/// # Errors
/// [`PriceError::TooLarge`].
pub fn bounded(minor: u64) -> Result<u64, PriceError> {
    if minor > MAX_PRICE_MINOR {
        return Err(PriceError::TooLarge);
    }
    Ok(minor)
}

/// Active ISO 4217 codes whose minor unit is not 2 decimals, with their decimals.
const NOT_TWO_DECIMALS: &[(&str, u8)] = &[
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    ("CLF", 4),
    ("UYW", 4),
];

/// ISO 4217 codes without a minor unit (metals, units of account, test codes).
const NO_MINOR_UNIT: &[&str] = &[
    "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX",
];

/// The currency of every price (`pipeline.currency`): an ISO 4217 code whose minor unit is
/// 0 or 2 decimals (amounts are kept in hundredths, so 3- and 4-decimal currencies such as
/// KWD or CLF are refused rather than rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    decimals: u8,
}

impl Currency {
    /// The default: euros.
    pub const EUR: Currency = Currency {
        code: *b"EUR",
        decimals: 2,
    };

    /// Parses a code (`EUR`, `JPY`).
    ///
    /// # Errors
    /// A message naming the code and why it is refused.
    pub fn parse(code: &str) -> Result<Currency, String> {
        let b: [u8; 3] = code
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; 3]| b.iter().all(u8::is_ascii_uppercase))
            .ok_or_else(|| format!("{code:?} is not an ISO 4217 code (three capital letters)"))?;
        if NO_MINOR_UNIT.contains(&code) {
            return Err(format!("{code} has no minor unit; prices need a currency"));
        }
        let decimals = NOT_TWO_DECIMALS
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(2, |&(_, d)| d);
        if decimals > 2 {
            return Err(format!(
                "{code} has {decimals} decimal places; kappa keeps amounts in hundredths, so \
                 only currencies with 0 or 2 are supported"
            ));
        }
        Ok(Currency { code: b, decimals })
    }

    /// The ISO 4217 code.
    #[must_use]
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Decimal places of its minor unit (0 or 2).
    #[must_use]
    pub fn decimals(&self) -> u8 {
        self.decimals
    }

    /// Hundredths of the major unit in one ISO minor unit (100 for JPY, 1 for EUR).
    #[must_use]
    pub fn hundredths_per_minor(&self) -> u64 {
        10u64.pow(u32::from(2 - self.decimals))
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self::EUR
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a price was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceError {
    /// Not a plain decimal (`12`, `12.3`, `12.30`): empty, signs, exponents, letters.
    NotDecimal,
    /// A negative price.
    Negative,
    /// More significant decimal places than the currency has (`12.345`; `1.5` in JPY).
    TooManyPlaces(u8),
    /// Above [`MAX_PRICE_MINOR`].
    TooLarge,
}

impl std::fmt::Display for PriceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotDecimal => "price is not a plain decimal number",
            Self::Negative => "price is negative",
            Self::TooManyPlaces(n) => return write!(f, "price has more than {n} decimal places"),
            Self::TooLarge => "price is too large",
        })
    }
}

/// Parses `59.90`, `59.9`, `59`, `59.900` (trailing zeros beyond two places are exact and
/// accepted) into minor units (hundredths). No floating point is involved at any step.
///
/// # Errors
/// See [`PriceError`].
pub fn parse_price_minor(text: &str) -> Result<u64, PriceError> {
    parse_price(text, Currency::EUR)
}

/// [`parse_price_minor`] of a price in `currency`: at most its decimal places significant
/// (`100` or `100.00` in JPY, not `100.5`), into hundredths.
///
/// # Errors
/// See [`PriceError`].
pub fn parse_price(text: &str, currency: Currency) -> Result<u64, PriceError> {
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
    let places = usize::from(currency.decimals());
    if frac.len() > places && frac[places..].iter().any(|&c| c != b'0') {
        return Err(PriceError::TooManyPlaces(currency.decimals()));
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
    bounded(minor)
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
        assert_eq!(
            parse_price_minor("12.345"),
            Err(PriceError::TooManyPlaces(2))
        );
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
    fn a_currency_without_decimals_takes_whole_units_into_hundredths() {
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!((jpy.decimals(), jpy.hundredths_per_minor()), (0, 100));
        assert_eq!(parse_price("100", jpy), Ok(10_000));
        assert_eq!(parse_price("100.00", jpy), Ok(10_000));
        assert_eq!(parse_price("100.5", jpy), Err(PriceError::TooManyPlaces(0)));
        assert_eq!(
            format_minor(u128::from(parse_price("100", jpy).unwrap())),
            "100.00"
        );
    }

    #[test]
    fn currencies_are_iso_codes_with_0_or_2_decimals() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        assert_eq!(Currency::parse("USD").unwrap().hundredths_per_minor(), 1);
        for bad in ["eur", "EURO", "", "E1R"] {
            assert!(
                Currency::parse(bad).unwrap_err().contains("ISO 4217"),
                "{bad}"
            );
        }
        assert!(
            Currency::parse("KWD")
                .unwrap_err()
                .contains("3 decimal places")
        );
        assert!(
            Currency::parse("XAU")
                .unwrap_err()
                .contains("no minor unit")
        );
    }

    #[test]
    fn formats_two_places() {
        assert_eq!(format_minor(5990), "59.90");
        assert_eq!(format_minor(7), "0.07");
        assert_eq!(format_minor(0), "0.00");
    }
}
