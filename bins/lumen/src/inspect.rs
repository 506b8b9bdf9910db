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
/// checks backend URLs, Redis and TLS settings) without discovering models or binding a port.
#[allow(clippy::print_stdout)]
pub fn check(file: &Path, overrides: &Overrides) -> ExitCode {
    match validated(Some(file), overrides) {
        Ok(cfg) => {
            // Trace settings never fail a check (they never stop Lumen), but say so.
            for w in &cfg.otel.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: OK ({} backend(s))", file.display(), cfg.backends.len());
            ExitCode::SUCCESS
        }
        Err(errors) => refuse(&file.display().to_string(), &errors),
    }
}

/// The merged settings as TOML, one commented section per top-level key. A configuration that
/// `check` refuses is not printed, and exits 64 the same way: `print` once showed a Redis URL
/// that no Redis client could parse (and the password in it), and exited 0.
#[allow(clippy::print_stdout)]
pub fn print(file: Option<&Path>, overrides: &Overrides) -> ExitCode {
    let source = file.map_or_else(|| "lumen".to_owned(), |f| f.display().to_string());
    if let Err(errors) = validated(file, overrides) {
        return refuse(&source, &errors);
    }
    match config::effective(file, overrides) {
        Ok(sections) => {
            print!("{}", render(&sections));
            ExitCode::SUCCESS
        }
        Err(e) => refuse(&source, &[e.to_string()]),
    }
}

/// What `check` and `print` both require: the configuration `lumen` would start with, or every
/// reason it would not start.
fn validated(
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<config::LumenConfig, Vec<String>> {
    let cfg = config::check(file, overrides).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![e.to_string()])?;
    let _guard = rt.enter();
    Gateway::from_config(&cfg).map_err(|e| vec![e.to_string()])?;
    Ok(cfg)
}

/// Every error on stderr, one per line, and `EX_USAGE`.
fn refuse(source: &str, errors: &[String]) -> ExitCode {
    eprintln!("{source}: {} error(s) in the configuration:", errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
    ExitCode::from(EX_USAGE)
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
