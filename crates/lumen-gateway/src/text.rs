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
pub struct Text<'a>(pub &'a str);

impl Text<'_> {
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
        if JSON_LOGS.load(Ordering::Relaxed) || Self::plain(self.0) {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

#[cfg(test)]
mod tests;
