//! URL path segments as clients send them.

/// Decodes `%XX` escapes so `/v1/models/org%2Fname` finds `org/name`.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Exactly two hex digits: `from_str_radix` alone would also take `%+1`.
        if let (b'%', Some(&hi), Some(&lo)) = (b[i], b.get(i + 1), b.get(i + 2)) {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests;
