//! Epoch-aligned tumbling window arithmetic. Windows are half-open `[start, end)`.

/// Start of the window of `size_ms` containing `ts_ms` (also for negative times).
#[must_use]
pub fn window_start(ts_ms: i64, size_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(size_ms)
}

/// End (exclusive) of the window of `size_ms` containing `ts_ms`.
#[must_use]
pub fn window_end(ts_ms: i64, size_ms: i64) -> i64 {
    window_start(ts_ms, size_ms).saturating_add(size_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_half_open() {
        assert_eq!(window_start(0, 60_000), 0);
        assert_eq!(window_start(59_999, 60_000), 0);
        assert_eq!(window_start(60_000, 60_000), 60_000);
        assert_eq!(window_start(-1, 60_000), -60_000);
        assert_eq!(window_end(59_999, 60_000), 60_000);
    }
}
