//! RFC 3339 timestamps as event time: a strict, allocation-free parser and a formatter.
//!
//! Event time is carried internally as milliseconds since the Unix epoch (`i64`). Parsing
//! is on the hot path, so it is hand-written (checked against `chrono` in the tests).

/// Earliest event time kappa windows: 0001-01-01T00:00:00Z.
pub const MIN_EVENT_MS: i64 = -62_135_596_800_000;
/// Latest event time kappa windows: 9998-12-31T23:59:59.999Z. With windows of at most 31
/// days, every window start and end is then a four-digit year (no "10000-01-01…").
pub const MAX_EVENT_MS: i64 = 253_370_764_799_999;

/// Days since 1970-01-01 of a proleptic Gregorian civil date (Howard Hinnant's algorithm).
#[must_use]
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: `(year, month, day)`.
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// Parses an RFC 3339 date-time (`2026-11-23T10:00:01.234Z`, `…+02:00`) into epoch
/// milliseconds. Fractions beyond milliseconds are truncated; a leap second (`:60`) counts
/// as the first instant of the next minute. Returns `None` for anything else.
#[must_use]
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = i64::from(digits(&b[11..13])?);
    let minute = i64::from(digits(&b[14..16])?);
    let second = i64::from(digits(&b[17..19])?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = i64::from(digits(&b[i + 1..i + 3])?);
            let om = i64::from(digits(&b[i + 4..i + 6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Formats epoch milliseconds as RFC 3339 UTC: `2026-11-23T10:00:00Z`, with `.mmm` only
/// when the milliseconds are not zero.
#[must_use]
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    }
}

/// Formats a duration the way the configuration writes it (`1m`, `1h30m`, `250ms`,
/// `31days`): days, hours, minutes, seconds and below — never months or years (which
/// `humantime` counts as 30.44 and 365.25 days). Below 30 days the text is `humantime`'s,
/// so stored version configurations read the same; `humantime` parses it back.
#[must_use]
pub fn fmt_duration(d: std::time::Duration) -> String {
    use std::fmt::Write;
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if secs == 0 && nanos == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let days = secs / 86_400;
    if days > 0 {
        let _ = write!(out, "{days}day{}", if days == 1 { "" } else { "s" });
    }
    for (v, unit) in [
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1000 % 1000), "us"),
        (u64::from(nanos % 1000), "ns"),
    ] {
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    out
}

/// A window size as people write it: `1m` for 60000 ms.
#[must_use]
pub fn size_name(size_ms: i64) -> String {
    fmt_duration(std::time::Duration::from_millis(size_ms.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono_ms(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis())
    }

    #[test]
    fn parses_known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T10:00:01.234Z"),
            chrono_ms("2026-11-23T10:00:01.234Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T23:59:59.999+01:00"),
            chrono_ms("2024-02-29T23:59:59.999+01:00")
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.5Z"), Some(-500));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T10:00:01.123456789Z"),
            chrono_ms("2026-11-23T10:00:01.123Z")
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "yesterday",
            "2026-11-23",
            "2026-11-23T10:00:01",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:00:01.Z",
            "2026-11-23T10:00:01Zjunk",
            "2026-11-23T10:00:01+0100",
            "+026-11-23T10:00:01Z",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s}");
        }
    }

    #[test]
    fn the_event_time_range_is_years_1_to_9998() {
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), Some(MIN_EVENT_MS));
        assert_eq!(
            parse_rfc3339_ms("9998-12-31T23:59:59.999Z"),
            Some(MAX_EVENT_MS)
        );
        let window = 31 * 86_400_000;
        let last_end = (MAX_EVENT_MS.div_euclid(window) + 1) * window;
        assert!(format_rfc3339_ms(last_end).starts_with("9999-"));
        let first_start = MIN_EVENT_MS.div_euclid(window) * window;
        assert!(format_rfc3339_ms(first_start).starts_with("0000-"));
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339_ms(-500), "1969-12-31T23:59:59.500Z");
        let ms = parse_rfc3339_ms("2026-11-23T10:00:01.234Z").unwrap();
        assert_eq!(format_rfc3339_ms(ms), "2026-11-23T10:00:01.234Z");
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(ms in -62_135_596_800_000i64..253_402_300_799_999i64, off_min in -1439i64..1440) {
            let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            let tz = chrono::FixedOffset::east_opt(i32::try_from(off_min * 60).unwrap()).unwrap();
            let s = dt.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            prop_assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{}", s);
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }
}
