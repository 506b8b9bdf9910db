//! Deterministic generated content.

/// Words the simulator "generates", cycled by token index so output is reproducible.
const WORDS: &[&str] = &[
    "Lumen", " routes", " every", " request", " to", " a", " healthy", " engine", ",", " streams",
    " tokens", " as", " they", " arrive", ",", " and", " retries", " before", " the", " first",
    " byte", ".",
];

/// The `i`-th token of every answer.
pub(crate) fn token(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// The whole answer of `n` tokens.
pub(crate) fn answer(n: u32) -> String {
    (0..n).map(token).collect()
}

/// A rough token count: one token per four bytes of prompt JSON, at least one.
pub(crate) fn estimate_tokens(raw_len: usize) -> u64 {
    (raw_len as u64 / 4).max(1)
}

/// A deterministic unit-ish vector for a text (FNV-1a seeded xorshift).
pub(crate) fn embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..dim)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Standard base64 of the little-endian f32s, as OpenAI's `encoding_format: "base64"`.
pub(crate) fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Splitmix64: a stateless hash of a counter, for deterministic error rates.
pub(crate) fn unit_from_counter(n: u64) -> f64 {
    let mut z = n.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
