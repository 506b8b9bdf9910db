//! What the engines report on `/metrics`: the counters the benchmark takes deltas of.

use std::net::SocketAddr;

use crate::soak::client::{Client, Read};

/// One engine's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub prefix_queries: f64,
    pub prefix_hits: f64,
    pub requests: f64,
    pub preemptions: f64,
}

impl Counters {
    /// `self − earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            prefix_queries: self.prefix_queries - earlier.prefix_queries,
            prefix_hits: self.prefix_hits - earlier.prefix_hits,
            requests: self.requests - earlier.requests,
            preemptions: self.preemptions - earlier.preemptions,
        }
    }

    /// Reads the counters from a Prometheus text page (every series of a name summed).
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            match name {
                "vllm:prefix_cache_queries_total" => c.prefix_queries += v,
                "vllm:prefix_cache_hits_total" => c.prefix_hits += v,
                "vllm:request_success_total" => c.requests += v,
                "vllm:num_preemptions_total" => c.preemptions += v,
                _ => {}
            }
        }
        c
    }
}

/// Every engine's counters, in order.
pub async fn all(engines: &[SocketAddr]) -> Result<Vec<Counters>, String> {
    let mut out = Vec::with_capacity(engines.len());
    for &addr in engines {
        let mut c = Client::new(addr);
        let a = c
            .send(
                b"GET /metrics HTTP/1.1\r\nhost: engine\r\nconnection: close\r\n\r\n",
                Read::Full,
            )
            .await
            .map_err(|e| format!("scrape {addr}: {e}"))?;
        if a.status != 200 {
            return Err(format!("scrape {addr}: status {}", a.status));
        }
        out.push(Counters::parse(&String::from_utf8_lossy(&a.body)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_name_whatever_the_labels() {
        let text = r#"# HELP vllm:prefix_cache_hits_total Prefix cache hits.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{model_name="m",engine="0"} 992.0
vllm:prefix_cache_queries_total{model_name="m",engine="0"} 2040.0
vllm:request_success_total{model_name="m",engine="0"} 2
vllm:time_to_first_token_seconds_bucket{model_name="m",engine="0",le="0.001"} 0.0
"#;
        let c = Counters::parse(text);
        assert_eq!(
            c,
            Counters {
                prefix_queries: 2040.0,
                prefix_hits: 992.0,
                requests: 2.0,
                preemptions: 0.0
            }
        );
        assert_eq!(c.since(&c), Counters::default());
    }
}
