//! Kafka's default (Java client) partitioner.

/// Kafka's `Utils.murmur2` (32-bit `MurmurHash2`, seed `0x9747b28c`).
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka mixes the length in as a Java int; lengths beyond i32 are impossible there.
    #[allow(clippy::cast_possible_truncation)]
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() == 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h.cast_signed()
}

/// Kafka's default partition for a keyed record:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// # Panics
/// If `partitions` is 0.
#[must_use]
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "partition count must be at least 1");
    (murmur2(key).cast_unsigned() & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_vectors() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
            ("", 275_646_681),
        ];
        for &(s, want) in cases {
            assert_eq!(murmur2(s.as_bytes()), want, "murmur2({s:?})");
        }
    }

    #[test]
    fn partition_for_is_positive_modulo() {
        // murmur2("21") = -973932308 -> & 0x7fffffff = 1173551340
        assert_eq!(
            partition_for(b"21", 1_000_000_007),
            1_173_551_340 % 1_000_000_007
        );
        assert_eq!(partition_for(b"21", 4), 1_173_551_340 % 4);
        assert_eq!(partition_for(b"abc", 7), 479_470_107 % 7);
        for p in 1..20 {
            assert!(partition_for(b"foobar", p) < p);
        }
    }
}
