//! `lumen config check` and `lumen config print`: the configuration without serving, so a
//! file can be checked in CI or before a rollout and the merged result read with no secrets.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use lumen_server::Gateway;
use lumen_server::config::{self, Overrides};
use serde_json::Value;

use crate::EX_USAGE;

/// Parses and validates `file` plus the environment and flags, then builds the gateway (which
/// checks backend URLs) without discovering models or binding a port.
#[allow(clippy::print_stdout)]
pub fn check(file: &Path, overrides: &Overrides) -> ExitCode {
    let errors = match config::check(Some(file), overrides) {
        Ok(cfg) => {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    let _guard = rt.enter();
                    Gateway::from_config(&cfg).map_err(|e| e.to_string())
                });
            match built {
                Ok(_) => {
                    // Trace settings never fail a check (they never stop Lumen), but say so.
                    for w in &cfg.otel.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}: OK ({} backend(s))", file.display(), cfg.backends.len());
                    return ExitCode::SUCCESS;
                }
                Err(e) => vec![e],
            }
        }
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    };
    eprintln!(
        "{}: {} error(s) in the configuration:",
        file.display(),
        errors.len()
    );
    for e in errors {
        eprintln!("  {e}");
    }
    ExitCode::from(EX_USAGE)
}

/// The merged settings as TOML, one commented section per top-level key.
#[allow(clippy::print_stdout)]
pub fn print(file: Option<&Path>, overrides: &Overrides) -> ExitCode {
    match config::effective(file, overrides) {
        Ok(sections) => {
            print!("{}", render(&sections));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lumen: invalid configuration: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn render(sections: &[config::Effective]) -> String {
    let mut out = String::from(
        "# Effective Lumen configuration; settings not listed are at their defaults \
         (docs/config.md). Secrets are redacted.\n",
    );
    // Plain values first: TOML puts everything after a [table] header inside that table.
    let (tables, plain): (Vec<_>, Vec<_>) = sections
        .iter()
        .partition(|s| matches!(s.value, Value::Object(_)));
    for s in plain.into_iter().chain(tables) {
        let _ = writeln!(out, "\n# from {}", s.origins.join(", "));
        match &s.value {
            Value::Object(m) => {
                let _ = writeln!(out, "[{}]", key(&s.key));
                for (k, v) in m {
                    let _ = writeln!(out, "{} = {}", key(k), inline(v));
                }
            }
            v => {
                let _ = writeln!(out, "{} = {}", key(&s.key), inline(v));
            }
        }
    }
    out
}

/// A bare key when TOML allows one, else a quoted one (model ids contain `/` and `.`).
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        quoted(k)
    }
}

/// JSON string escapes are valid in TOML basic strings.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_toml_shapes() {
        let sections = vec![
            config::Effective {
                key: "routing".into(),
                origins: vec!["file x".into()],
                value: serde_json::json!({"aliases": {"meta/llama-3.1": "m"}, "policy": "round_robin"}),
            },
            config::Effective {
                key: "profile".into(),
                origins: vec!["LUMEN_PROFILE".into()],
                value: serde_json::json!("small"),
            },
        ];
        let text = render(&sections);
        let profile = text.find("profile = \"small\"").unwrap();
        let routing = text.find("[routing]").unwrap();
        assert!(profile < routing, "{text}");
        assert!(
            text.contains("aliases = { \"meta/llama-3.1\" = \"m\" }"),
            "{text}"
        );
    }
}
