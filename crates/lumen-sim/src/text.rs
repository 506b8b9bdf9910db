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

/// `n` tokens of the answer from token `start` on: the rest of an answer whose first `start`
/// tokens were generated elsewhere.
pub(crate) fn answer_from(start: u32, n: u32) -> String {
    (start..start.saturating_add(n)).map(token).collect()
}

/// Where an answer that ends `text` stops: the number of tokens of the longest beginning of
/// the simulator's answer that `text` ends with (0 when it ends with none).
pub(crate) fn continued_from(text: &str) -> u32 {
    let first = WORDS[0];
    for (at, _) in text.match_indices(first) {
        let tail = &text[at..];
        let n = count_tokens(tail);
        if n <= u64::from(u32::MAX) && answer(n as u32) == tail {
            return n as u32;
        }
    }
    0
}

/// A rough token count: one token per four bytes of prompt JSON, at least one.
pub(crate) fn estimate_tokens(raw_len: usize) -> u64 {
    (raw_len as u64 / 4).max(1)
}

// The simulator's tokenizer, laid out like Llama's SentencePiece vocabulary so ids look familiar:
// specials first, then a byte-fallback token per byte, then one token per entry of `WORDS`
// (its first occurrence, as `,` appears twice). Encoding is greedy longest match over the words
// with bytes for everything else, so any text round-trips exactly through `/detokenize`, and the
// simulator's own answers cost one token per word.
//
// This is not how completions count `usage.prompt_tokens` (`estimate_tokens` over the raw JSON,
// kept because it costs nothing on the benchmark path), so `/tokenize`'s `count` can differ.

/// Unknown token; never produced, accepted by `/detokenize`.
pub(crate) const UNK: u32 = 0;
/// Beginning of sequence, prepended when `add_special_tokens` is set.
pub(crate) const BOS: u32 = 1;
pub(crate) const EOS: u32 = 2;
const FIRST_BYTE: u32 = 3;
const FIRST_WORD: u32 = FIRST_BYTE + 256;
/// Ids at or above this are out of vocabulary.
pub(crate) const VOCAB_SIZE: u32 = FIRST_WORD + WORDS.len() as u32;

/// Calls `emit` with each id of `text` (no special tokens), so counting needs no allocation.
pub(crate) fn encode(text: &str, mut emit: impl FnMut(u32)) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(&first) = bytes.get(at) {
        let rest = &bytes[at..];
        // Longest word wins (" and" over " a"); among equals the first occurrence.
        let word = WORDS
            .iter()
            .enumerate()
            .filter(|(_, w)| rest.starts_with(w.as_bytes()))
            .max_by_key(|(i, w)| (w.len(), usize::MAX - i));
        match word {
            Some((i, w)) => {
                emit(FIRST_WORD + i as u32);
                at += w.len();
            }
            None => {
                emit(FIRST_BYTE + u32::from(first));
                at += 1;
            }
        }
    }
}

/// How many tokens `text` encodes to (no special tokens).
pub(crate) fn count_tokens(text: &str) -> u64 {
    let mut n = 0;
    encode(text, |_| n += 1);
    n
}

/// The text of `ids`, special tokens skipped (as vLLM does when asked to skip them) so that
/// `/detokenize` of `/tokenize` gives the prompt back. Byte runs that are not UTF-8 become U+FFFD.
/// `Err` carries the first id outside the vocabulary.
pub(crate) fn decode(ids: &[u32]) -> Result<String, u32> {
    let mut bytes = Vec::with_capacity(ids.len() * 4);
    for &id in ids {
        match id {
            UNK | BOS | EOS => {}
            b if b < FIRST_WORD => bytes.push((b - FIRST_BYTE) as u8),
            w if w < VOCAB_SIZE => {
                bytes.extend_from_slice(WORDS[(w - FIRST_WORD) as usize].as_bytes());
            }
            bad => return Err(bad),
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The bytes an id stands for, as llama.cpp's `with_pieces` reports them: the word, the one byte
/// of a byte token, the special token's text; `None` outside the vocabulary.
pub(crate) fn piece(id: u32) -> Option<Vec<u8>> {
    match id {
        UNK | BOS | EOS => Some(token_str(id).into_bytes()),
        b if b < FIRST_WORD => Some(vec![(b - FIRST_BYTE) as u8]),
        w => WORDS
            .get((w - FIRST_WORD) as usize)
            .map(|s| s.as_bytes().to_vec()),
    }
}

/// The vocabulary entry of an in-vocabulary id, as `return_token_strs` shows it: Llama's
/// `<0xNN>` for byte tokens, the word itself (leading space included) for words.
pub(crate) fn token_str(id: u32) -> String {
    match id {
        UNK => "<unk>".to_owned(),
        BOS => "<s>".to_owned(),
        EOS => "</s>".to_owned(),
        b if b < FIRST_WORD => format!("<0x{:02X}>", b - FIRST_BYTE),
        w => WORDS
            .get((w - FIRST_WORD) as usize)
            .map_or_else(|| "<unk>".to_owned(), |s| (*s).to_owned()),
    }
}

/// Rerank's relevance: the fraction of the query's distinct words (alphanumeric runs, compared
/// case-insensitively) that occur in the document. Crude, but deterministic and easy to predict
/// in a test; 0 for a query without words.
pub(crate) fn relevance(query_words: &[String], document: &str) -> f64 {
    if query_words.is_empty() {
        return 0.0;
    }
    let doc = words(document);
    let hits = query_words
        .iter()
        .filter(|w| doc.binary_search(w).is_ok())
        .count();
    hits as f64 / query_words.len() as f64
}

/// The distinct lower-cased alphanumeric runs of `text`, sorted.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
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
