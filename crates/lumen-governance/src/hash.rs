//! Small, stable hashes: the same input maps to the same backend across processes and restarts,
//! which is what affinity needs (std's hasher is randomised per process).

/// FNV-1a, 64-bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finaliser: mixes a counter or a combined hash into well-spread bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Weighted rendezvous (highest-random-weight) score of `node` for `key`: `-w / ln(u)`, with
/// `u` uniform in (0, 1). The highest score wins; removing a node moves only its own keys.
pub(crate) fn rendezvous(key: u64, node: u64, weight: u32) -> f64 {
    let h = mix(key ^ mix(node));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}
