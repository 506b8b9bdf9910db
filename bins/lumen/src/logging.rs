//! The process's log subscriber: text or JSON on stderr, filtered by `RUST_LOG` or `log.level`.

use std::ffi::OsStr;
use std::io::IsTerminal;

use lumen_server::config::{LogFormat, LumenConfig};

/// Installs the subscriber. Colour only where a person reads it: a container's log collector
/// stores stderr byte for byte, so escape codes written to a pipe or a file end up as
/// `\x1b[2m` noise in every stored line (and break `grep`).
pub(crate) fn init(cfg: &LumenConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match cfg.log.format {
        LogFormat::Json => {
            lumen_server::Text::json_logs();
            builder.json().try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether text logs get ANSI colour: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(colour(true, None));
        assert!(colour(true, empty), "an empty NO_COLOR counts as unset");
        assert!(!colour(true, set));
        assert!(
            !colour(false, None),
            "a pipe or a file gets no escape codes"
        );
        assert!(!colour(false, set));
        assert!(!colour(false, empty));
    }
}
