//! The open-loop load: requests sent at their Poisson arrival times whatever the answers do
//! (no coordinated omission), dealt round robin over Lumen's replicas by request (as a
//! Kubernetes Service spreads connections), each timed from its scheduled send to its first
//! SSE event (time to first token at the client) and to its end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::workload::Generator;
use crate::soak::client::{Client, Read};

/// How one request went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scheduled send, from the start of the run.
    pub at: Duration,
    pub ttft: Option<Duration>,
    /// From the start of the run to the last byte.
    pub done: Duration,
    pub ok: bool,
    /// The prompt tokens the engine found cached (from the usage chunk).
    pub cached_tokens: u64,
    pub prompt_tokens: u64,
}

/// Keep-alive connections to one replica, reused one request at a time, most recently used
/// first.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<(Client, Instant)>>,
}

/// Connections idle longer are not reused: Lumen closes idle connections (30 s by default),
/// and a request sent on one it is closing would fail for the client's sake, not the fleet's.
const MAX_IDLE: Duration = Duration::from_secs(10);

impl Pool {
    fn take(&self) -> Client {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.pop() {
            Some((c, since)) if since.elapsed() < MAX_IDLE => c,
            // The freshest is too old, so are the rest.
            Some(_) => {
                idle.clear();
                Client::new(self.addr)
            }
            None => Client::new(self.addr),
        }
    }

    fn give(&self, c: Client) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((c, Instant::now()));
    }
}

/// Longest a request may take before it counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);

/// Sends `gen`'s requests at `arrivals` (offsets from now, sorted) until `until`, to `targets`
/// in turn; returns when every answer is in.
pub async fn run(
    targets: &[SocketAddr],
    mut generator: Generator,
    arrivals: &[Duration],
    until: Duration,
) -> Vec<Outcome> {
    let pools: Vec<Arc<Pool>> = targets
        .iter()
        .map(|&addr| {
            Arc::new(Pool {
                addr,
                idle: Mutex::new(Vec::new()),
            })
        })
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, &at) in arrivals.iter().enumerate() {
        if at >= until {
            break;
        }
        // Built before its time, so building never delays a send.
        let body = generator.next_request().body();
        let wire = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: lumen\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::time::sleep_until(start + at).await;
        let pool = pools[i % pools.len()].clone();
        tasks.push(tokio::spawn(async move {
            let scheduled = start + at;
            let mut client = pool.take();
            let got =
                tokio::time::timeout(REQUEST_DEADLINE, client.send(wire.as_bytes(), Read::Full))
                    .await;
            let done = start.elapsed();
            match got {
                Ok(Ok(answer)) => {
                    let ok = answer.status == 200
                        && answer.has(b"data: [DONE]")
                        && !answer.has(b"data: {\"error\"");
                    let (prompt_tokens, cached_tokens) = usage(&answer.body);
                    pool.give(client);
                    Outcome {
                        at,
                        ttft: answer
                            .first_event
                            .filter(|_| ok)
                            .map(|t| t.saturating_duration_since(scheduled)),
                        done,
                        ok,
                        cached_tokens,
                        prompt_tokens,
                    }
                }
                _ => Outcome {
                    at,
                    ttft: None,
                    done,
                    ok: false,
                    cached_tokens: 0,
                    prompt_tokens: 0,
                },
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            out.push(o);
        }
    }
    out
}

/// `prompt_tokens` and `prompt_tokens_details.cached_tokens` from a stream's usage chunk.
fn usage(body: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(body);
    let find = |key: &str| -> u64 {
        text.rfind(key)
            .map(|at| &text[at + key.len()..])
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    (find("\"prompt_tokens\":"), find("\"cached_tokens\":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_last_chunk() {
        let body = br#"data: {"choices":[]}

data: {"choices":[],"usage":{"prompt_tokens":1234,"total_tokens":1240,"completion_tokens":6,"prompt_tokens_details":{"cached_tokens":1200}}}

data: [DONE]

"#;
        assert_eq!(usage(body), (1234, 1200));
        assert_eq!(usage(b"data: [DONE]\n\n"), (0, 0));
    }
}
