//! Log values that may come from clients or engines.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the process's logs are JSON (set once by whoever installs the subscriber).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// A log field value that may come from a client (a request id, a passthrough model name) or
/// an engine (an error message). In text logs, plain values print as they are; anything with
/// whitespace, `=`, quotes, backslashes or control characters prints quoted and escaped, as
/// logfmt does, so a value can never end a line or forge `key=value` fields. In JSON logs
/// ([`Text::json_logs`]) values print as they are: the JSON encoder escapes every one, and
/// quoting here too would show `"\"connection refused\""` in every log pipeline.
///
/// Values are cut at [`Text::MAX`] bytes (marked `…`): a client's 20 MB model name must not
/// become a 20 MB log line.
pub struct Text<'a>(pub &'a str);

impl Text<'_> {
    /// The most of a value a log line shows.
    pub const MAX: usize = 1024;

    /// Says the process's logs are JSON. The log format is the process's, like its subscriber:
    /// call this where the JSON subscriber is installed.
    pub fn json_logs() {
        JSON_LOGS.store(true, Ordering::Relaxed);
    }

    /// Whether `s` can go in a text log as it is.
    fn plain(s: &str) -> bool {
        !s.is_empty()
            && s.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '=' | '"' | '\\'))
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = self.0.len() > Self::MAX;
        let mut end = self.0.len().min(Self::MAX);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let shown = &self.0[..end];
        let mark = if cut { "…" } else { "" };
        if JSON_LOGS.load(Ordering::Relaxed) || Self::plain(shown) {
            f.write_str(shown)?;
            f.write_str(mark)
        } else if cut {
            // Rare: the mark inside the quotes costs a copy of the shown part.
            write!(f, "{:?}", format!("{shown}{mark}"))
        } else {
            write!(f, "{shown:?}")
        }
    }
}

#[cfg(test)]
mod tests;
