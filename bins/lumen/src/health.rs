//! `lumen health`: a one-request HTTP probe, so the container image needs no curl or shell
//! for its `HEALTHCHECK` (distroless-friendly; nothing else to patch).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// GETs `url` (plain `http://host:port/path`) and succeeds on a 200 status line.
/// Messages show the URL redacted, and errors never repeat its authority.
pub fn probe(url: &str, timeout_ms: u64) -> ExitCode {
    let shown = || lumen_server::redact::url(url);
    match get_status(url, Duration::from_millis(timeout_ms.max(1))) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("lumen health: {} answered {status}", shown());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lumen health: --url {}: {e}", shown());
            ExitCode::FAILURE
        }
    }
}

fn get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host: {e}"))?
        .next()
        .ok_or("the host resolves to no address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    // The status line fits in the first read; the body does not matter.
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })
}
