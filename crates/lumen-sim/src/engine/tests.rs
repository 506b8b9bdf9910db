//! The engine model under a paused clock. Every duration below is computed from the
//! configuration's step formula, so a change in the scheduling rules shows as a failure. The
//! engine's schedule is exact to the nanosecond; tokio's timer wakes its driver on the next
//! millisecond, so what a request observes is compared within a millisecond ([`near`]).

use std::time::Duration;

use tokio::time::Instant;

use super::blocks::{BLOCK_SIZE, BlockPool, chain};
use super::offline::{self, Arrival};
use super::{Engine, EngineConfig, InvalidEngineConfig, NewSeq, Refusal, Ticket};

/// A request of `prompt` token ids generating `max_tokens` tokens (ids from a range no prompt
/// uses, so answers never collide with prompts).
fn seq(prompt: impl IntoIterator<Item = u32>, max_tokens: u32) -> NewSeq {
    NewSeq {
        prompt: prompt.into_iter().collect(),
        max_tokens,
        output: (900_000..900_000 + max_tokens).collect(),
    }
}

fn engine(cfg: EngineConfig) -> Engine {
    Engine::new(cfg, 8192)
}

/// Submits and waits for the first token: the time it took, and the ticket.
async fn first_token(e: &Engine, s: NewSeq) -> (Duration, Ticket) {
    let t0 = Instant::now();
    let mut t = e.submit(s).unwrap();
    assert!(t.next_token().await, "a first token");
    (t0.elapsed(), t)
}

/// Asserts that an observed time is the engine's `exact` one, as delivered by a timer with
/// millisecond resolution.
#[track_caller]
fn near(observed: Duration, exact: Duration) {
    let diff = observed.abs_diff(exact);
    assert!(
        diff < Duration::from_millis(1),
        "observed {observed:?}, engine's {exact:?}"
    );
}

/// Lets the driver run up to its next sleep, without moving the clock.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_prefix_is_reported_and_makes_the_first_token_sooner() {
    let cfg = EngineConfig::default();
    let e = engine(cfg.clone());
    let doc: Vec<u32> = (0..1000).collect();
    let (cold, mut a) = first_token(&e, seq(doc.clone(), 4)).await;
    a.finish().await;
    assert_eq!(a.cached_tokens(), Some(0));
    // One step computes the whole 1,000-token prompt (within the 2,048-token budget).
    near(cold, cfg.step_time(1000, 1000));

    // The same document with a question after it: every full block of the document is reused.
    let asked = doc.iter().copied().chain(5000..5040);
    let (warm, b) = first_token(&e, seq(asked, 4)).await;
    assert_eq!(b.cached_tokens(), Some(992), "62 full blocks of 16");
    near(warm, cfg.step_time(1040 - 992, 1040));
    assert!(warm * 5 < cold, "{warm:?} vs {cold:?}");

    let r = e.report();
    assert_eq!(r.stats.prefix_queries, 1000 + 1040);
    assert_eq!(r.stats.prefix_hits, 992);
    assert_eq!(r.stats.ttft_count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_fully_cached_prompt_still_computes_its_last_block() {
    let e = engine(EngineConfig::default());
    let p: Vec<u32> = (0..320).collect();
    let (_, mut a) = first_token(&e, seq(p.clone(), 1)).await;
    a.finish().await;
    let (_, b) = first_token(&e, seq(p, 1)).await;
    // 320 tokens are 20 full blocks, but at most 319 may come from the cache (the last token
    // must be computed to sample from), so 19 blocks.
    assert_eq!(b.cached_tokens(), Some(19 * 16));
}

#[tokio::test(start_paused = true)]
async fn under_pressure_the_least_recently_used_blocks_are_evicted_tail_first() {
    let cfg = EngineConfig {
        num_blocks: 64,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, 1024);
    let a: Vec<u32> = (0..480).collect(); // 30 blocks
    let (_, mut t) = first_token(&e, seq(a.clone(), 1)).await;
    t.finish().await;
    assert_eq!(
        e.report().kv_usage,
        0.0,
        "cached blocks nobody uses count as free"
    );

    // 50 blocks for an unrelated prompt: the 34 never-used blocks, then 16 of the first
    // prompt's, its last ones first (vLLM frees a sequence's blocks tail first, so its
    // leading blocks, the most shareable, are evicted last).
    let mut c = e.submit(seq(100_000..100_800, 1)).unwrap();
    settle().await;
    assert_eq!(e.report().kv_usage, 50.0 / 64.0);
    c.finish().await;

    let (_, again) = first_token(&e, seq(a, 1)).await;
    assert_eq!(
        again.cached_tokens(),
        Some(14 * 16),
        "the first 14 blocks survived"
    );
}

#[tokio::test(start_paused = true)]
async fn beyond_max_num_seqs_requests_wait_in_order() {
    let cfg = EngineConfig {
        max_num_seqs: 2,
        ..EngineConfig::default()
    };
    let e = engine(cfg.clone());
    let mut tickets: Vec<Ticket> = (0..4)
        .map(|i| e.submit(seq(i * 1000..i * 1000 + 100, 3)).unwrap())
        .collect();
    settle().await;
    let r = e.report();
    assert_eq!((r.running, r.waiting), (2, 2));

    let t0 = Instant::now();
    tickets[0].finish().await;
    let first_done = t0.elapsed();
    // Prefill of both (one step), then two decode steps: the third token ends the request.
    let decode = cfg.step_time(2, 101 + 101) + cfg.step_time(2, 102 + 102);
    near(first_done, cfg.step_time(200, 200) + decode);
    assert!(tickets[2].next_token().await);
    // The third request started only when the first two had left: one prefill step later.
    near(t0.elapsed(), first_done + cfg.step_time(200, 200));
    let r = e.report();
    assert_eq!((r.running, r.waiting), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn decode_steps_slow_down_as_the_batch_grows() {
    let cfg = EngineConfig::default();
    // Inter-token time of one request alone, then of one among 32 (their prefills fill one
    // step: 32 × 64 = 2,048 tokens, the default budget).
    let itl = |batch: u32| {
        let cfg = cfg.clone();
        async move {
            let e = engine(cfg);
            let mut ts: Vec<Ticket> = (0..batch)
                .map(|i| e.submit(seq(i * 100..i * 100 + 64, 4)).unwrap())
                .collect();
            assert!(ts[0].next_token().await);
            let t = Instant::now();
            assert!(ts[0].next_token().await);
            t.elapsed()
        }
    };
    let alone = itl(1).await;
    let among_32 = itl(32).await;
    near(alone, cfg.step_time(1, 65));
    near(among_32, cfg.step_time(32, 32 * 65));
    assert!(among_32 > alone, "{among_32:?} vs {alone:?}");
}

#[tokio::test(start_paused = true)]
async fn a_sequence_that_outgrows_the_cache_preempts_the_newest_and_all_finish() {
    // 8 blocks: two 40-token prompts fit (3 blocks each) but not their 60 tokens of answer.
    let cfg = EngineConfig {
        num_blocks: 8,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, 128);
    let mut a = e.submit(seq(0..40, 60)).unwrap();
    let mut b = e.submit(seq(1000..1040, 60)).unwrap();
    let (mut na, mut nb) = (0, 0);
    while a.next_token().await {
        na += 1;
    }
    while b.next_token().await {
        nb += 1;
    }
    assert_eq!((na, nb), (60, 60));
    let r = e.report();
    assert!(r.stats.preemptions >= 1, "{:?}", r.stats);
    assert_eq!((r.running, r.waiting, r.kv_usage), (0, 0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_ticket_aborts_the_request_and_frees_its_blocks() {
    let e = engine(EngineConfig::default());
    let (_, t) = first_token(&e, seq(0..500, 100)).await;
    let r = e.report();
    assert_eq!(r.running, 1);
    assert!(r.kv_usage > 0.0);
    drop(t);
    let r = e.report();
    assert_eq!((r.running, r.kv_usage), (0, 0.0));
    // And the engine goes on serving.
    let (_, mut t) = first_token(&e, seq(0..500, 2)).await;
    t.finish().await;
}

#[tokio::test(start_paused = true)]
async fn with_prefix_caching_off_nothing_is_reused() {
    let e = engine(EngineConfig {
        prefix_caching: false,
        ..EngineConfig::default()
    });
    for _ in 0..2 {
        let (_, mut t) = first_token(&e, seq(0..400, 1)).await;
        t.finish().await;
        assert_eq!(t.cached_tokens(), Some(0));
    }
    assert_eq!(e.report().stats.prefix_hits, 0);
}

#[tokio::test(start_paused = true)]
async fn requests_that_cannot_fit_are_refused() {
    let e = Engine::new(
        EngineConfig {
            num_blocks: 4,
            ..EngineConfig::default()
        },
        8192,
    );
    let too_long = Engine::new(EngineConfig::default(), 100);
    assert!(matches!(
        too_long.submit(seq(0..90, 20)).err(),
        Some(Refusal::ContextLength { total: 110, .. })
    ));
    let msg = too_long.submit(seq(0..90, 20)).err().unwrap().to_string();
    assert!(
        msg.contains("maximum context length is 100 tokens"),
        "{msg}"
    );
    assert!(matches!(
        e.submit(seq(0..60, 10)).err(),
        Some(Refusal::CacheTooSmall { blocks: 5, .. })
    ));
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let ok = EngineConfig::default();
    assert_eq!(ok.validate(8192), Ok(()));
    let zero = EngineConfig {
        max_num_seqs: 0,
        ..ok.clone()
    };
    assert_eq!(
        zero.validate(8192),
        Err(InvalidEngineConfig::Zero("max_num_seqs"))
    );
    let small = EngineConfig {
        num_blocks: 100,
        ..ok
    };
    let err = small.validate(8192).unwrap_err();
    assert!(matches!(
        err,
        InvalidEngineConfig::CacheTooSmall {
            cache_tokens: 1600,
            ..
        }
    ));
}

/// The benchmark estimates capacity with the offline runner: it must agree with the engine the
/// HTTP server drives (the engine's own schedule to the nanosecond, what requests observe to
/// the timer's millisecond).
#[tokio::test(start_paused = true)]
async fn the_offline_runner_matches_the_served_engine() {
    let cfg = EngineConfig {
        max_num_seqs: 8,
        num_blocks: 512,
        ..EngineConfig::default()
    };
    // Staggered arrivals, shared and unique prefixes, varied lengths. Arrivals fall on whole
    // milliseconds, where the test's own timers can place them exactly.
    let arrivals: Vec<Arrival> = (0u32..40)
        .map(|i| {
            let shared = (i % 3) * 10_000;
            let prompt =
                (shared..shared + 200).chain(50_000 + i * 100..50_000 + i * 100 + 37 * (i % 5 + 1));
            Arrival {
                at: Duration::from_millis(u64::from(i * 7 + i % 3)),
                seq: seq(prompt, 3 + i % 7),
            }
        })
        .collect();
    let expected = offline::run(&cfg, arrivals.clone());

    let e = Engine::new(cfg, 8192);
    let start = Instant::now();
    let tasks: Vec<_> = arrivals
        .into_iter()
        .map(|a| {
            let e = e.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + a.at).await;
                let (ttft, mut t) = first_token(&e, a.seq).await;
                t.finish().await;
                ttft
            })
        })
        .collect();
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.unwrap());
    }
    assert_eq!(served.len(), expected.ttft.len());
    for (s, x) in served.iter().zip(&expected.ttft) {
        near(*s, *x);
    }
    let r = e.report();
    assert_eq!(r.stats.ttft_sum, expected.stats.ttft_sum);
    assert_eq!(r.stats.ttft_buckets, expected.stats.ttft_buckets);
    assert_eq!(r.stats.prefix_hits, expected.stats.prefix_hits);
    assert!(r.stats.prefix_hits > 0);
    assert_eq!(r.stats.finished, 40);
    assert!(expected.throughput() > 0.0);
}

#[test]
fn the_block_pool_keeps_one_block_per_prefix_and_evicts_from_the_head() {
    let mut pool = BlockPool::new(4);
    let h0 = chain(7, &[1; BLOCK_SIZE]);
    let h1 = chain(h0, &[2; BLOCK_SIZE]);
    assert_ne!(h1, chain(7, &[2; BLOCK_SIZE]), "hashes are chained");
    let a = pool.allocate(2).unwrap();
    assert!(pool.cache(a[0], h0) && pool.cache(a[1], h1));
    // A second sequence that computed the same first block does not replace the first.
    let b = pool.allocate(1).unwrap();
    assert!(!pool.cache(b[0], h0));
    assert_eq!(pool.lookup(&[h0, h1], 2), a);
    assert_eq!(pool.lookup(&[h0, h1], 1), a[..1]);
    pool.free(&b);
    pool.free(&a);
    assert_eq!(pool.num_free(), 4);
    // The uncached block is reused first, then the never-used one, then a's tail, then its
    // head: taking three leaves only a's first block cached.
    let c = pool.allocate(3).unwrap();
    assert_eq!(c[0], b[0]);
    assert_eq!(pool.lookup(&[h0, h1], 2), a[..1]);
    assert_eq!(pool.allocate(2), None, "one block left");
    assert_eq!(pool.unreferenced(&a[..1]), 1);
    pool.touch(&a[..1]);
    assert_eq!(pool.num_free(), 0);
}

#[test]
fn a_step_never_admits_a_request_that_arrived_after_it_started() {
    // The served driver can wake a millisecond late; requests that came in that millisecond
    // must wait for the next step, as they would on the offline runner's exact clock.
    let mut core = super::core::Core::new(EngineConfig::default());
    core.add(seq(0..64, 1), Duration::from_millis(5));
    let mut events = Vec::new();
    assert_eq!(core.schedule(Duration::from_millis(4), &mut events), None);
    assert_eq!(core.next_arrival(), Some(Duration::from_millis(5)));
    let plan = core
        .schedule(Duration::from_millis(5), &mut events)
        .unwrap();
    assert_eq!(plan.tokens, 64);
    assert_eq!(events, [(0, super::Event::Scheduled { cached_tokens: 0 })]);
}
