//! Tool-call ids between an engine (`call_abc`, `chatcmpl-tool-9f…`) and Anthropic clients
//! (`toolu_…`).
//!
//! Clients send the ids of earlier calls back in `tool_use` and `tool_result` blocks, and the
//! engine's chat template pairs calls with results by id, so the mapping must be a pure function
//! of the id (no table: a conversation outlives any one gateway replica) and must give every
//! engine id back exactly. Anthropic allows `[A-Za-z0-9_-]` in ids, which is also what the
//! engines commonly use: such an id is just prefixed. Anything else (or an id that could be
//! mistaken for an encoded one) is hex-encoded behind a marker.
//!
//! Ids a client made up, or that came from Anthropic itself (`toolu_01…`, when a conversation
//! moves from Anthropic to a self-hosted model), map to the engine as the part after `toolu_`;
//! a call and its result map the same way, so they still pair.

/// Anthropic's tool-use id prefix.
pub const PREFIX: &str = "toolu_";
/// Marks an engine id that was hex-encoded.
const ENCODED: &str = "lmnx_";

/// The `toolu_` id for an engine's tool-call id.
pub fn to_anthropic(engine_id: &str) -> String {
    if safe(engine_id) && !engine_id.starts_with(ENCODED) {
        let mut out = String::with_capacity(PREFIX.len() + engine_id.len());
        out.push_str(PREFIX);
        out.push_str(engine_id);
        return out;
    }
    let mut out = String::with_capacity(PREFIX.len() + ENCODED.len() + 2 * engine_id.len());
    out.push_str(PREFIX);
    out.push_str(ENCODED);
    for b in engine_id.bytes() {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0xf));
    }
    out
}

/// The engine's tool-call id for a client's `tool_use.id` or `tool_result.tool_use_id`.
pub fn to_engine(anthropic_id: &str) -> String {
    let Some(rest) = anthropic_id.strip_prefix(PREFIX) else {
        return anthropic_id.to_owned();
    };
    if let Some(hex) = rest.strip_prefix(ENCODED)
        && let Some(decoded) = unhex(hex)
    {
        return decoded;
    }
    if rest.is_empty() {
        // `toolu_` alone: keep it whole rather than send the engine an empty id.
        return anthropic_id.to_owned();
    }
    rest.to_owned()
}

fn safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0xf)])
}

fn unhex(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests;
