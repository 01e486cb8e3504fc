//! Hand-rolled JSON / text writers used on the hot path (no allocation).

/// Append the decimal representation of `n`.
pub(super) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Append `n` as exactly `width` zero-padded digits (`n` must fit).
fn push_padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut tmp = [b'0'; 10];
    let mut v = n;
    for slot in tmp[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.extend_from_slice(&tmp[..width]);
}

/// Append `x` as 16 lowercase hex digits.
pub(super) fn push_hex16(buf: &mut Vec<u8>, x: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    for (i, slot) in tmp.iter_mut().enumerate() {
        *slot = HEX[((x >> (60 - 4 * i)) & 0xf) as usize];
    }
    buf.extend_from_slice(&tmp);
}

/// Append an amount in minor units (cents) as `major.mm`.
pub(super) fn push_cents(buf: &mut Vec<u8>, cents: u64) {
    push_u64(buf, cents / 100);
    buf.push(b'.');
    push_padded(buf, (cents % 100) as u32, 2);
}

/// Append an amount in minor units with trailing zero decimals trimmed the
/// way a float serialiser would print it: `59.9`, `59.99`, `59.0`.
pub(super) fn push_cents_trimmed(buf: &mut Vec<u8>, cents: u64) {
    push_u64(buf, cents / 100);
    buf.push(b'.');
    let frac = (cents % 100) as u32;
    if frac.is_multiple_of(10) {
        push_padded(buf, frac / 10, 1);
    } else {
        push_padded(buf, frac, 2);
    }
}

/// Append `s` as a quoted JSON string, escaping `"`, `\` and control
/// characters. Non-ASCII bytes are copied as-is (input must be UTF-8).
pub(super) fn push_json_str(buf: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        } else {
            buf.extend_from_slice(esc);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&s[start..]);
    buf.push(b'"');
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`, valid for the whole i64 day range we use.
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

/// Append epoch milliseconds as RFC 3339 UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`
/// (no quotes). Years outside 0..=9999 are clamped into that range (the
/// generator's validated configs never produce them).
pub fn push_rfc3339_ms(buf: &mut Vec<u8>, epoch_ms: i64) {
    let days = epoch_ms.div_euclid(86_400_000);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms_of_day = epoch_ms.rem_euclid(86_400_000) as u32;
    let (y, m, d) = civil_from_days(days);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    push_padded(buf, y.clamp(0, 9999) as u32, 4);
    buf.push(b'-');
    push_padded(buf, m, 2);
    buf.push(b'-');
    push_padded(buf, d, 2);
    buf.push(b'T');
    push_padded(buf, ms_of_day / 3_600_000, 2);
    buf.push(b':');
    push_padded(buf, ms_of_day / 60_000 % 60, 2);
    buf.push(b':');
    push_padded(buf, ms_of_day / 1000 % 60, 2);
    buf.push(b'.');
    push_padded(buf, ms_of_day % 1000, 3);
    buf.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> String {
        let mut b = Vec::new();
        push_rfc3339_ms(&mut b, ms);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(ts(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(ts(4_107_542_400_000 - 1), "2100-02-28T23:59:59.999Z");
        assert_eq!(ts(946_684_799_999), "1999-12-31T23:59:59.999Z");
        assert_eq!(ts(1_795_392_000_000), "2026-11-23T00:00:00.000Z");
        assert_eq!(ts(1_795_428_001_234), "2026-11-23T10:00:01.234Z");
        assert_eq!(ts(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_roundtrip_every_day_1900_2200() {
        // Compare against a naive day-by-day walk.
        let mut y = 1900i64;
        let mut m = 1u32;
        let mut d = 1u32;
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mdays = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in -25_567..84_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "days={days}");
            d += 1;
            if d > mdays(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn numbers_and_escapes() {
        let mut b = Vec::new();
        push_u64(&mut b, 0);
        b.push(b' ');
        push_u64(&mut b, u64::MAX);
        b.push(b' ');
        push_cents(&mut b, 5990);
        b.push(b' ');
        push_cents(&mut b, 5);
        b.push(b' ');
        push_cents_trimmed(&mut b, 5990);
        b.push(b' ');
        push_cents_trimmed(&mut b, 5900);
        b.push(b' ');
        push_cents_trimmed(&mut b, 5999);
        b.push(b' ');
        push_hex16(&mut b, 0x0123_4567_89ab_cdef);
        b.push(b' ');
        push_json_str(&mut b, "a\"b\\c\td\u{1}é".as_bytes());
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "0 18446744073709551615 59.90 0.05 59.9 59.0 59.99 0123456789abcdef \"a\\\"b\\\\c\\td\\u0001é\""
        );
    }
}
