//! What keys and limits cost per request: the same request through Lumen with no keys, with a
//! key and limits in memory, with a key and limits on Redis (a local `redis-server`, started
//! here; skipped when it is not installed), and on Redis with block leases for rpm and tpm
//! (`redis.lease`). Two keys: rpm + tpm + max_concurrent (concurrency is never leased, so
//! every request still goes to Redis for its slot), and rpm + tpm only. Sequential on one
//! keep-alive connection, then a closed loop. Run with
//! `cargo bench -p lumen-benches --bench shared_state`.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use common::{latencies, pct, throughput};
use lumen_governance::keys::{ApiKey, digest, to_hex};
use lumen_governance::limits::{LeaseSettings, LimitSpec};
use lumen_server::config::{AuthConfig, RedisConfig};

const PATH: &str = "/v1/chat/completions";
const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}"#;
const SECRET: &str = "sk-bench";

async fn lumen(
    sim: std::net::SocketAddr,
    auth: Option<AuthConfig>,
    redis: Option<RedisConfig>,
) -> std::net::SocketAddr {
    let backend = lumen_backend_vllm::VllmBackend::new(lumen_backend_vllm::VllmConfig::new(
        "sim",
        format!("http://{sim}"),
    ))
    .unwrap();
    let mut b = lumen_server::Gateway::builder().backend("sim", backend, None);
    if let Some(a) = auth {
        b = b.auth(a);
    }
    if let Some(r) = redis {
        b = b.redis(r);
    }
    let gw = b.build().unwrap();
    gw.core().discover().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lumen_server::serve(listener, gw, std::future::pending()));
    addr
}

/// The bench key: rpm and tpm, and `max_concurrent` when `concurrency`.
fn auth(concurrency: bool) -> AuthConfig {
    AuthConfig {
        enabled: true,
        admin_key_sha256: None,
        keys: vec![ApiKey {
            name: "bench".into(),
            sha256: to_hex(&digest(SECRET)),
            models: None,
            limits: LimitSpec {
                rpm: Some(u64::MAX / 2),
                tpm: Some(u64::MAX / 2),
                max_concurrent: concurrency.then_some(1_000),
                ..Default::default()
            },
            per_model: Default::default(),
        }],
    }
}

/// Blocks of 1 % of a limit, capped: with the bench's huge limits, 1,000 requests or
/// 1,000,000 tokens a block (the defaults' caps).
const LEASE: LeaseSettings = LeaseSettings {
    fraction: 0.01,
    max_requests: 1_000,
    max_tokens: 1_000_000,
};

/// CPU time (user + system) of this process, or of `pid`, in µs, from /proc (0 elsewhere).
fn cpu_us(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() * 10_000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (sim, _s) = lumen_sim::spawn(lumen_sim::SimConfig {
        models: vec!["m".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let bearer = format!("Bearer {SECRET}");
    let key = [("authorization", bearer.as_str())];
    let n = 10_000;
    let plain = lumen(sim, None, None).await;
    // (name, Lumen, headers, index of the in-memory run it compares with)
    let mut runs = vec![
        ("no keys", plain, &[][..], 1),
        (
            "rpm+tpm+conc, memory",
            lumen(sim, Some(auth(true)), None).await,
            &key[..],
            1,
        ),
        (
            "rpm+tpm, memory",
            lumen(sim, Some(auth(false)), None).await,
            &key[..],
            2,
        ),
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    let mut redis = redis.ok();
    if redis.is_some() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cfg = RedisConfig {
            url: Some(lumen_server::config::Secret::new(format!(
                "redis://127.0.0.1:{port}"
            ))),
            timeout_ms: 1_000,
            // Exact: every request charged on Redis on its own (leases are on by default).
            lease: LeaseSettings {
                fraction: 0.0,
                ..LeaseSettings::default()
            },
            ..Default::default()
        };
        let leased = RedisConfig {
            lease: LEASE,
            ..cfg.clone()
        };
        for (name, conc, cfg, memory) in [
            ("rpm+tpm+conc, Redis", true, &cfg, 1),
            ("rpm+tpm+conc, Redis+lease", true, &leased, 1),
            ("rpm+tpm, Redis", false, &cfg, 2),
            ("rpm+tpm, Redis+lease", false, &leased, 2),
        ] {
            runs.push((
                name,
                lumen(sim, Some(auth(conc)), Some(cfg.clone())).await,
                &key[..],
                memory,
            ));
        }
    } else {
        println!("redis-server not installed: skipping the Redis run");
    }
    for (_, addr, h, _) in &runs {
        latencies(*addr, PATH, BODY, h, 1_000).await;
    }
    println!("sequential non-streamed chat, {n} requests each, one keep-alive connection");
    let base = latencies(plain, PATH, BODY, &[], n).await;
    for (name, addr, h, _) in &runs {
        let l = if *name == "no keys" {
            base.clone()
        } else {
            latencies(*addr, PATH, BODY, h, n).await
        };
        println!(
            "  {name:<28} p50 {:>7.1} µs  p99 {:>7.1} µs   added vs no keys: p50 {:>6.1} µs  p99 {:>6.1} µs",
            pct(&l, 0.5),
            pct(&l, 0.99),
            pct(&l, 0.5) - pct(&base, 0.5),
            pct(&l, 0.99) - pct(&base, 0.99)
        );
    }
    // Closed loop (issue 24: throughput with limits on Redis at least 0.8x in memory): 32
    // connections, each sending the next request when the last is answered, 5 s a run, runs
    // alternated three times so drift on a shared machine hits each alike; medians. CPU time
    // per request (this process: Lumen, the simulator and the load; and redis-server) is read
    // from /proc around each run: steadier than req/s on a shared machine.
    const CONNS: usize = 32;
    const SECS: u64 = 5;
    const ROUNDS: usize = 3;
    println!(
        "closed loop, {CONNS} connections, {SECS} s a run, each run {ROUNDS} times (alternated)"
    );
    let redis_pid = redis.as_ref().map(|r| r.id());
    let on_redis = |name: &str| name.contains("Redis");
    let redis_cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if redis.is_some() {
        redis_cli(&["CONFIG", "RESETSTAT"]);
    }
    let mut rates = vec![Vec::new(); runs.len()];
    let mut cpu = vec![Vec::new(); runs.len()];
    // Redis's command counts per configuration: (requests served, INFO commandstats).
    let mut commands: Vec<(f64, Vec<(String, f64)>)> = vec![(0.0, Vec::new()); runs.len()];
    let stats = |info: Option<String>| -> Vec<(String, f64)> {
        info.unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .map(|line| {
                let (name, rest) = line.split_once(':').unwrap_or((line, ""));
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                (name.trim_start_matches("cmdstat_").to_owned(), calls)
            })
            .collect()
    };
    for _ in 0..ROUNDS {
        for (i, (name, addr, h, _)) in runs.iter().enumerate() {
            let stats_before = on_redis(name).then(|| stats(redis_cli(&["INFO", "commandstats"])));
            let before = (cpu_us(None), redis_pid.map(|p| cpu_us(Some(p))));
            let rate = throughput(*addr, PATH, BODY, h, CONNS, SECS).await;
            let after = (cpu_us(None), redis_pid.map(|p| cpu_us(Some(p))));
            let served = rate * SECS as f64;
            let redis_us = match (before.1, after.1, on_redis(name)) {
                (Some(b), Some(a), true) => (a - b) / served,
                _ => 0.0,
            };
            if let Some(b) = stats_before {
                let a = stats(redis_cli(&["INFO", "commandstats"]));
                let c = &mut commands[i];
                c.0 += served;
                for (cmd, n) in a {
                    let was = b.iter().find(|(x, _)| *x == cmd).map_or(0.0, |x| x.1);
                    match c.1.iter_mut().find(|(x, _)| *x == cmd) {
                        Some(slot) => slot.1 += n - was,
                        None => c.1.push((cmd, n - was)),
                    }
                }
            }
            rates[i].push(rate);
            cpu[i].push(((after.0 - before.0) / served, redis_us));
        }
    }
    // What each request costs Redis: its commands, per request of each Redis configuration.
    for ((name, _, _, _), (served, cmds)) in runs.iter().zip(&commands) {
        if *served == 0.0 {
            continue;
        }
        let per: Vec<String> = cmds
            .iter()
            .filter(|(c, n)| *n > 0.0 && c != "info")
            .map(|(c, n)| format!("{c} {:.3}", n / served))
            .collect();
        println!("  Redis commands a request, {name}: {}", per.join(", "));
    }
    let runs_names: Vec<&str> = runs.iter().map(|r| r.0).collect();
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (((name, _, _, memory), r), c) in runs.iter().zip(&rates).zip(&cpu) {
        let memory_rate = median(&rates[*memory]);
        let runs: Vec<String> = r.iter().map(|x| format!("{x:.0}")).collect();
        let own: Vec<f64> = c.iter().map(|x| x.0).collect();
        let redis: Vec<f64> = c.iter().map(|x| x.1).collect();
        println!(
            "  {name:<28} {:>8.0} req/s (median of {}), {:.2}x {}; CPU a request: {:.0} µs here, {:.1} µs redis-server",
            median(r),
            runs.join(" / "),
            median(r) / memory_rate,
            runs_names[*memory],
            median(&own),
            median(&redis),
        );
    }
    if let Some(r) = redis.as_mut() {
        let _ = r.kill();
        let _ = r.wait();
    }
}
