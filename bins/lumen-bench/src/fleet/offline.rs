//! The fleet on a virtual clock (`lumen-bench fleet --offline`): the engine model's scheduler
//! (`lumen_sim::engine::offline::Stepper`, the code the served engines run) behind Lumen's own
//! router (`lumen_governance::Router`, the code every replica runs), with the same workloads
//! and Poisson arrivals as the live benchmark, and no process, socket or wall clock.
//!
//! Why it exists: the live fleet shares two cores with its own load generator and replicas,
//! so a cell takes seconds of wall time and its tail moves with whatever else the machine
//! does; a policy change measured only there is measured through noise. Here a whole cell
//! takes well under a second of CPU, the same seed gives the same numbers, and a change to a
//! policy shows its effect alone. What it leaves out is what the live run measures: HTTP,
//! Lumen's own latency, and scrapes that take time (a report here is exact at its instant,
//! every `routing.signals.interval_ms`, each replica on its own phase). So the live run stays
//! the benchmark of record; this one is the policy's.
//!
//! Everything the router sees comes the way it does in Lumen: a request's [`PromptKey`] from
//! its messages in template order, its lease held until the answer ends and marked
//! prefilled at its first token, and the engines' reports (running, waiting, KV use) recorded
//! on each replica's slots with that replica's in-flight count at the time.

use std::collections::HashMap;
use std::time::Duration;

use lumen_governance::{
    BackendSpec, GovernanceConfig, Lease, Policy, PromptHasher, PromptKey, RouteRequest, Router,
};
use lumen_sim::engine::offline::Stepper;
use lumen_sim::engine::{Event, chat_request};

use super::capacity;
use super::drive::Outcome;
use super::report;
use super::scrape::Counters;
use super::workload::{Generator, Kind, Request};
use super::{FleetArgs, Plan};

/// How much prompt the gateway hashes for `cache_aware` (`lumen-gateway`'s `MAX_PROMPT`).
const MAX_PROMPT: usize = 256 * 1024;

/// A request at an engine: its lease on the router that placed it, and its outcome so far.
struct Live {
    lease: Lease<usize>,
    outcome: usize,
}

/// Where each request went, for `--trace`.
#[derive(Debug, Clone, Copy, Default)]
struct Placement {
    replica: usize,
    engine: usize,
    /// Hash of the first message after the system prompt: names the conversation or document.
    conversation: u64,
}

/// The router's configuration for `policy`, as the live run's replicas get it (defaults but
/// the policy, and a fixed seed so runs repeat).
fn config(policy: &str) -> Result<GovernanceConfig, String> {
    let policy: Policy = serde_json::from_value(serde_json::Value::String(policy.to_owned()))
        .map_err(|e| format!("policy {policy}: {e}"))?;
    Ok(GovernanceConfig {
        policy,
        seed: Some(1),
        ..GovernanceConfig::default()
    })
}

/// The routing key Lumen's gateway builds for a chat request with these messages: system and
/// developer messages lead as the shared section, then the conversation in order.
fn prompt_key(messages: &serde_json::Value, key_bytes: usize) -> PromptKey {
    let mut h = PromptHasher::new(MAX_PROMPT, key_bytes);
    let mut shared = true;
    for m in messages.as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or("user");
        let text = m["content"].as_str().unwrap_or("");
        if shared && (role == "system" || role == "developer") {
            h.shared(role, text.as_bytes());
        } else {
            shared = false;
            h.message(role, text.as_bytes());
        }
    }
    h.finish(None)
}

/// `prefix_affinity`'s key as the gateway takes it: the leading system messages and the first
/// other message, `role:text` lines.
fn leading(messages: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages.as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or("user");
        out.extend_from_slice(role.as_bytes());
        out.push(b':');
        out.extend_from_slice(m["content"].as_str().unwrap_or("").as_bytes());
        out.push(b'\n');
        if role != "system" && role != "developer" {
            break;
        }
    }
    out
}

fn counters(e: &Stepper) -> Counters {
    let s = e.stats();
    Counters {
        prefix_queries: s.prefix_queries as f64,
        prefix_hits: s.prefix_hits as f64,
        requests: s.finished as f64,
        preemptions: s.preemptions as f64,
    }
}

/// One cell on the virtual clock.
pub fn cell(
    args: &FleetArgs,
    plan: &Plan,
    kind: Kind,
    load: u32,
    rate: f64,
    policy: &str,
    replicas: usize,
) -> Result<report::Cell, String> {
    let cfg = config(policy)?;
    let interval = Duration::from_millis(cfg.signals.interval_ms);
    let key_bytes = cfg.prefix_bytes;
    let specs: Vec<BackendSpec<usize>> = (0..args.engines)
        .map(|i| BackendSpec {
            name: format!("engine-{i}"),
            backend: i,
            weight: 1,
            models: Some(vec!["m".to_owned()]),
            key: format!("engine-{i}"),
        })
        .collect();
    let routers = (0..replicas)
        .map(|_| Router::new(cfg.clone(), specs.clone()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut engines: Vec<Stepper> = (0..args.engines)
        .map(|_| Stepper::new(&plan.engine))
        .collect();
    // Each replica scrapes on its own phase, as processes started one after another do.
    let mut scrapes: Vec<Duration> = (0..replicas)
        .map(|r| interval.mul_f64((r + 1) as f64 / replicas as f64))
        .collect();

    let until = plan.warmup + plan.measure;
    let n = ((rate * until.as_secs_f64()) * 1.5) as usize + 100;
    let arrivals = capacity::arrivals(args.seed, rate, n);
    let mut generator = Generator::new(kind, plan.shape.clone(), args.seed);

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut placements: Vec<Placement> = Vec::new();
    let mut live: HashMap<(usize, u64), Live> = HashMap::new();
    let mut before: Option<Vec<Counters>> = None;
    let mut next = 0;
    loop {
        let arrival = arrivals.get(next).copied().filter(|&at| at < until);
        let step = engines
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.busy_until().map(|t| (t, i)))
            .min();
        let Some(now) = [arrival, step.map(|s| s.0)].into_iter().flatten().min() else {
            break;
        };
        // Reports first: a scrape due before the next event is taken on the engines as they are.
        for (r, due) in scrapes.iter_mut().enumerate() {
            while *due <= now {
                scrape(&routers[r], &engines, *due);
                *due += interval;
            }
        }
        if before.is_none() && now >= plan.warmup {
            before = Some(engines.iter().map(counters).collect());
        }
        if let Some((end, i)) = step.filter(|s| s.0 == now) {
            for (id, ev) in engines[i].finish_step() {
                let Some(l) = live.get_mut(&(i, id)) else {
                    continue;
                };
                let o = &mut outcomes[l.outcome];
                match ev {
                    Event::Scheduled { cached_tokens } => o.cached_tokens = cached_tokens.into(),
                    Event::Token => {
                        if o.ttft.is_none() {
                            o.ttft = Some(end - o.at);
                            l.lease.prefilled();
                        }
                    }
                    Event::Finished => {
                        o.done = end;
                        o.ok = o.ttft.is_some();
                        live.remove(&(i, id));
                    }
                }
            }
            continue;
        }
        // An arrival: routed by the replica it was dealt to, at its instant.
        let at = now;
        let r = next % replicas;
        next += 1;
        let req = generator.next_request();
        let outcome = outcomes.len();
        outcomes.push(Outcome {
            at,
            ttft: None,
            done: at,
            ok: false,
            cached_tokens: 0,
            prompt_tokens: 0,
        });
        placements.push(Placement {
            replica: r,
            ..Placement::default()
        });
        if let Some(p) = dispatch(&routers[r], &mut engines, &req, at, key_bytes)? {
            outcomes[outcome].prompt_tokens = p.tokens;
            placements[outcome].engine = p.engine;
            placements[outcome].conversation = p.conversation;
            live.insert(
                (p.engine, p.id),
                Live {
                    lease: p.lease,
                    outcome,
                },
            );
        }
    }
    if let Some(path) = &args.trace {
        write_trace(
            path,
            &format!("{}/{policy}/x{replicas}", kind.name()),
            &outcomes,
            &placements,
        )?;
    }
    let after: Vec<Counters> = engines.iter().map(counters).collect();
    let before = before.unwrap_or_else(|| vec![Counters::default(); engines.len()]);
    Ok(report::cell(
        kind,
        load,
        rate,
        policy,
        replicas,
        plan.warmup,
        &outcomes,
        &before,
        &after,
    ))
}

/// A request queued at an engine.
struct Placed {
    engine: usize,
    id: u64,
    lease: Lease<usize>,
    /// Its prompt as the engine tokenized it.
    tokens: u64,
    conversation: u64,
}

/// Routes one request and queues it at the chosen engine; `None` when the engine refuses it
/// (longer than its cache), which the outcome records as an error.
fn dispatch(
    router: &Router<usize>,
    engines: &mut [Stepper],
    req: &Request,
    at: Duration,
    key_bytes: usize,
) -> Result<Option<Placed>, String> {
    let messages: serde_json::Value =
        serde_json::from_str(&req.messages).map_err(|e| format!("workload messages: {e}"))?;
    let key = prompt_key(&messages, key_bytes);
    let prefix = leading(&messages);
    let route = router
        .route(&RouteRequest {
            model: "m",
            prefix: Some(&prefix),
            prompt: Some(&key),
            now_ms: millis(at),
            ..RouteRequest::default()
        })
        .map_err(|e| format!("routing: {e}"))?;
    let engine = route.lease.slot().backend;
    let seq = chat_request(&req.messages, None, req.max_tokens, 0)?;
    let tokens = seq.prompt.len() as u64;
    let conversation = messages
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] != "system"))
        .map_or(0, |m| {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            m["content"].as_str().hash(&mut h);
            h.finish()
        });
    Ok(engines[engine].add(seq, at).map(|id| Placed {
        engine,
        id,
        lease: route.lease,
        tokens,
        conversation,
    }))
}

/// One replica's scrape of every engine at `at`.
fn scrape(router: &Router<usize>, engines: &[Stepper], at: Duration) {
    for slot in router.slots() {
        let (running, waiting, kv) = engines[slot.backend].load();
        slot.engine().record(
            &lumen_governance::load::EngineReport {
                running: running as f64,
                waiting: waiting as f64,
                kv_usage: Some(kv),
            },
            slot.in_flight(),
            millis(at),
        );
    }
}

/// Appends one cell's requests to the `--trace` CSV (the header when the file is new).
fn write_trace(
    path: &std::path::Path,
    cell: &str,
    outcomes: &[Outcome],
    placements: &[Placement],
) -> Result<(), String> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut text = String::new();
    if !path.exists() {
        text.push_str(
            "cell,at_ms,replica,engine,conversation,prompt_tokens,cached_tokens,ttft_ms\n",
        );
    }
    for (o, p) in outcomes.iter().zip(placements) {
        let _ = writeln!(
            text,
            "{cell},{:.1},{},{},{:016x},{},{},{:.1}",
            o.at.as_secs_f64() * 1e3,
            p.replica,
            p.engine,
            p.conversation,
            o.prompt_tokens,
            o.cached_tokens,
            o.ttft.map_or(f64::NAN, |t| t.as_secs_f64() * 1e3)
        );
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
