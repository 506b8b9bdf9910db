//! Log values that may come from clients or engines.

/// A log field value that may come from a client (a request id, a passthrough model name) or
/// an engine (an error message). Plain values print as they are; anything with whitespace,
/// `=`, quotes, backslashes or control characters prints quoted and escaped, as logfmt does,
/// so a value can never end a line or forge `key=value` fields in a text log.
pub struct Text<'a>(pub &'a str);

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '=' | '"' | '\\'));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

#[cfg(test)]
mod tests;
