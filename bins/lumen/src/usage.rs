//! `lumen usage`: a running Lumen's usage history (`GET /admin/usage/history`) as a table, or
//! as CSV, for finance: requests and tokens per key, model and day, with their cost when
//! `accounting.prices` names the model.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// What to ask for.
pub struct Query<'a> {
    pub url: &'a str,
    pub admin_key: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub key: Option<&'a str>,
    pub model: Option<&'a str>,
    pub csv: bool,
}

/// Prints to stdout by design: the history is the command's output.
#[allow(clippy::print_stdout)]
pub fn print(q: &Query<'_>) -> ExitCode {
    let shown = lumen_server::redact::url(q.url);
    match fetch(q) {
        Ok(body) if q.csv => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok(body) => match serde_json::from_str::<Value>(&body) {
            Ok(v) => {
                print!(
                    "{}",
                    table(v["data"].as_array().map_or(&[][..], Vec::as_slice))
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lumen usage: {shown} did not answer JSON: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("lumen usage: --url {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Query values are percent-encoded: model ids hold `/` and `:`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fetch(q: &Query<'_>) -> Result<String, String> {
    let rest = q
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported (the admin listener is plain HTTP)")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut path = "/admin/usage/history?".to_owned();
    for (name, v) in [
        ("from", q.from),
        ("to", q.to),
        ("key", q.key),
        ("model", q.model),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("{name}={}&", encode(v)));
        }
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host: {e}"))?
        .next()
        .ok_or("the host resolves to no address")?;
    let timeout = Duration::from_secs(30);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let accept = if q.csv {
        "text/csv"
    } else {
        "application/json"
    };
    s.write_all(
        format!(
            "GET {} HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {}\r\naccept: {accept}\r\nconnection: close\r\n\r\n",
            path.trim_end_matches(['&', '?']),
            q.admin_key
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        let why = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("answered {status}: {why}"));
    }
    Ok(body.to_owned())
}

/// The rows as aligned columns, with a total line.
fn table(rows: &[Value]) -> String {
    const HEAD: [&str; 10] = [
        "day",
        "key",
        "model",
        "requested",
        "requests",
        "input",
        "output",
        "cached",
        "errors",
        "cost",
    ];
    let cell = |r: &Value, f: &str| match &r[f] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    let fields = [
        "day",
        "key",
        "model",
        "requested",
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "errors",
        "cost",
    ];
    let mut lines: Vec<Vec<String>> = vec![HEAD.iter().map(|h| (*h).to_owned()).collect()];
    let mut total = [0u64; 5];
    let mut cost = 0.0;
    for r in rows {
        lines.push(fields.iter().map(|f| cell(r, f)).collect());
        for (t, f) in total.iter_mut().zip(&fields[4..9]) {
            *t += r[*f].as_u64().unwrap_or(0);
        }
        cost += r["cost"].as_f64().unwrap_or(0.0);
    }
    let mut sum = vec![
        "total".to_owned(),
        String::new(),
        String::new(),
        String::new(),
    ];
    sum.extend(total.iter().map(u64::to_string));
    sum.push(if cost > 0.0 {
        format!("{cost:.6}")
    } else {
        String::new()
    });
    lines.push(sum);
    let widths: Vec<usize> = (0..HEAD.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let row: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (v, w))| {
                if c >= 4 {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        out.push_str(row.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_aligned_columns_with_a_total() {
        let rows = serde_json::json!([
            {"day": "2026-12-01", "key": "team-a", "model": "m", "requested": null, "requests": 3, "input_tokens": 30, "output_tokens": 12, "cached_tokens": 0, "errors": 1, "cost": 0.5},
            {"day": "2026-12-02", "key": "team-b", "model": "org/model:7b", "requested": "m", "requests": 10, "input_tokens": 100, "output_tokens": 40, "cached_tokens": 4, "errors": 0, "cost": null}
        ]);
        let t = table(rows.as_array().unwrap());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("day"));
        assert!(lines[2].contains("org/model:7b"));
        assert!(lines[3].starts_with("total"));
        assert!(
            lines[3].contains("13") && lines[3].contains("130") && lines[3].contains("0.500000")
        );
        assert_eq!(encode("org/model:7b"), "org%2Fmodel%3A7b");
    }
}
