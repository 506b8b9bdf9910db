use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    fleet: FleetArgs,
}

fn args(extra: &[&str]) -> FleetArgs {
    let mut argv = vec![
        "fleet",
        "--offline",
        "--quick",
        "--warmup",
        "2",
        "--measure",
        "6",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().fleet
}

#[test]
fn a_cell_repeats_exactly_and_every_request_is_answered() {
    let a = args(&[]);
    let plan = a.plan().unwrap();
    let run =
        |policy: &str, replicas| cell(&a, &plan, Kind::Chat, 80, 25.0, policy, replicas).unwrap();
    let first = run("cache_aware", 3);
    let again = run("cache_aware", 3);
    assert_eq!(
        (
            first.ttft_p50_ms,
            first.ttft_p99_ms,
            first.hit_rate,
            first.measured
        ),
        (
            again.ttft_p50_ms,
            again.ttft_p99_ms,
            again.hit_rate,
            again.measured
        )
    );
    // 25 req/s for 6 s measured: about 150 requests, all answered.
    assert!(first.measured > 100, "{first:?}");
    assert_eq!(first.errors, 0, "{first:?}");
    assert!(first.ttft_p50_ms > 0.0 && first.ttft_p99_ms >= first.ttft_p50_ms);
}

#[test]
fn the_router_sees_the_prompts_as_the_gateway_builds_them() {
    // Conversations resent whole each turn: the policy that reads the index finds them where
    // they went, round robin scatters them; the engines' own counters tell the difference.
    let a = args(&[]);
    let plan = a.plan().unwrap();
    let rr = cell(&a, &plan, Kind::Chat, 80, 25.0, "round_robin", 1).unwrap();
    let ca = cell(&a, &plan, Kind::Chat, 80, 25.0, "cache_aware", 1).unwrap();
    assert!(ca.hit_rate > rr.hit_rate, "{rr:?}\n{ca:?}");
    // A bad policy name is the router's configuration error, not a panic.
    assert!(cell(&a, &plan, Kind::Chat, 80, 25.0, "fastest", 1).is_err());
}

#[test]
fn the_key_follows_the_template_order() {
    let m = serde_json::json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
    ]);
    let mut h = PromptHasher::new(MAX_PROMPT, 64);
    h.shared("system", b"be brief");
    h.message("user", b"hello");
    h.message("assistant", b"hi");
    assert_eq!(prompt_key(&m, 64), h.finish(None));
    assert_eq!(leading(&m), b"system:be brief\nuser:hello\n");
}
