//! Block leases (`lumen_governance::limits::LeaseSettings`) against a real Redis: limiter
//! instances on one server stand for replicas.

use std::sync::atomic::AtomicU64;

use lumen_governance::keys::ApiKey;
use lumen_governance::limits::{LeaseSettings, LimitError, LimitSpec, Limiter, RateHeaders};
use lumen_governance::store::Clock;

use super::*;

fn wall_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

fn api_key(name: &str, limits: LimitSpec) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: String::new(),
        models: None,
        limits,
        per_model: Default::default(),
    }
}

fn replica(s: &Arc<RedisState>, clock: Clock, lease: LeaseSettings) -> Limiter {
    Limiter::new(s.clone() as Arc<dyn LimitStore>, clock).with_leases(lease)
}

/// Leases off (`fraction = 0`): every request charged exactly (the default is 1 %).
const OFF: LeaseSettings = LeaseSettings {
    fraction: 0.0,
    max_requests: 1_000,
    max_tokens: 1_000_000,
};

const LEASE: LeaseSettings = LeaseSettings {
    fraction: 0.05,
    max_requests: 1_000,
    max_tokens: 1_000_000,
};

async fn get(s: &RedisState, key: &str) -> (u64, i64) {
    let mut conn = s.conn.clone();
    let v: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    (v.unwrap_or(0), ttl)
}

/// Two replicas, each with its own connection to one Redis, 64 tasks each hammering one key:
/// the window admits at most its limit (blocks are charged on Redis before they are spent),
/// and at least the limit less one block a replica; Redis's count is never below what was
/// admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_at_most_the_limit_and_strand_at_most_a_block_each() {
    let server = Server::start().await;
    let (limit, block) = (1_000, 50);
    let k = Arc::new(api_key(
        "shared",
        LimitSpec {
            rpm: Some(limit),
            tpm: Some(100 * limit),
            ..Default::default()
        },
    ));
    let replicas: Vec<Limiter> = (0..2)
        .map(|_| replica(&Arc::new(server.state()), wall_clock(), LEASE))
        .collect();
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..128)
        .map(|i| {
            let (l, k, admitted) = (replicas[i % 2].clone(), k.clone(), admitted.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    match l.admit(&k, "m", 100).await {
                        Ok((r, _)) => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            l.settle(&r, Some(100)).await.unwrap();
                        }
                        Err(LimitError::RateLimited { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let admitted = admitted.load(Ordering::SeqCst);
    assert!(admitted <= limit, "{admitted} admitted, limit {limit}");
    assert!(
        admitted >= limit - 2 * block,
        "{admitted} admitted: more than a block a replica stranded"
    );
    let s = server.state();
    let (rpm, _) = get(&s, "lumen:rl:{shared#}:*:rpm").await;
    assert!(rpm >= admitted && rpm <= limit, "rpm {rpm}");
    let (tpm, _) = get(&s, "lumen:rl:{shared#}:*:tpm").await;
    assert!(tpm >= admitted * 100, "tpm {tpm} < used");
}

/// A block never outlives its Redis window: its end on the replica's clock is read before
/// the call, so it is no later than Redis's. When the window rolls, the next request takes
/// a block of the new window.
#[tokio::test]
async fn a_block_ends_no_later_than_its_redis_window() {
    let server = Server::start().await;
    let s = Arc::new(server.state());
    let t = Arc::new(AtomicU64::new(0));
    let offset = t.clone();
    let wall = wall_clock();
    let clock: Clock = Arc::new(move || wall() + offset.load(Ordering::SeqCst));
    let l = replica(&s, clock.clone(), LEASE);
    let k = api_key(
        "roll",
        LimitSpec {
            rpm: Some(1_000),
            ..Default::default()
        },
    );
    let before = clock();
    let (_, h) = l.admit(&k, "m", 1).await.unwrap();
    let (count, pttl) = get(&s, "lumen:rl:{roll#}:*:rpm").await;
    assert_eq!(count, 50, "one block");
    let reset = h.requests.unwrap().2.as_millis() as u64;
    let after = clock();
    assert!(
        before + reset <= after + pttl as u64 + 1,
        "the block ends before Redis's window: {before} + {reset} vs {after} + {pttl}"
    );
    // Redis's window ends (expired early here); on the replica's clock, so does the block.
    let mut conn = s.conn.clone();
    let _: () = redis::cmd("PEXPIRE")
        .arg("lumen:rl:{roll#}:*:rpm")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.fetch_add(60_000, Ordering::SeqCst);
    let (_, h) = l.admit(&k, "m", 1).await.unwrap();
    assert_eq!(h.requests.unwrap().1, 999, "a fresh window");
    let (count, pttl) = get(&s, "lumen:rl:{roll#}:*:rpm").await;
    assert_eq!(count, 50, "a block of the new window");
    assert!(pttl > 59_000, "{pttl}");
}

/// Redis goes away mid-block: the block (charged already) keeps admitting, then the next
/// refill fails with the store's error, as every admission does without leases (the policy
/// then fails open or closed). When Redis is back, blocks resume.
#[tokio::test]
async fn redis_going_away_mid_block_fails_like_without_leases() {
    let server = Server::start().await;
    let port = server.port;
    let s = Arc::new(server.state());
    let l = replica(&s, wall_clock(), LEASE);
    let k = api_key(
        "gone",
        LimitSpec {
            rpm: Some(200),
            ..Default::default()
        },
    );
    l.admit(&k, "m", 1).await.unwrap();
    drop(server);
    for i in 0..9 {
        assert!(
            l.admit(&k, "m", 1).await.is_ok(),
            "request {i} of the block"
        );
    }
    assert!(matches!(
        l.admit(&k, "m", 1).await,
        Err(LimitError::Store(_))
    ));
    let exact = replica(&s, wall_clock(), OFF);
    assert!(
        matches!(exact.admit(&k, "m", 1).await, Err(LimitError::Store(_))),
        "the same error without leases"
    );
    let back = Server::start_on(port).await;
    let mut ok = false;
    for _ in 0..50 {
        if l.admit(&k, "m", 1).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "blocks resume when Redis is back");
    let (count, _) = get(&back.state(), "lumen:rl:{gone#}:*:rpm").await;
    assert_eq!(count, 10, "a new block on the new server");
}

/// Leases off: the same requests give the same answers and leave the same counts on Redis as
/// a limiter built without the setting (today's exact behaviour).
#[tokio::test]
async fn leases_off_is_todays_exact_limiter_on_redis() {
    let server = Server::start().await;
    let s = Arc::new(server.state());
    let plain = Limiter::new(s.clone() as Arc<dyn LimitStore>, wall_clock());
    let off = replica(&s, wall_clock(), OFF);
    let spec = LimitSpec {
        rpm: Some(12),
        tpm: Some(1_000),
        max_concurrent: Some(4),
        ..Default::default()
    };
    let (a, b) = (api_key("a", spec.clone()), api_key("b", spec));
    for i in 0..16 {
        let (x, y) = (plain.admit(&a, "m", 70).await, off.admit(&b, "m", 70).await);
        match (x, y) {
            (Ok((rx, hx)), Ok((ry, hy))) => {
                let strip =
                    |h: RateHeaders| (h.requests.map(|r| (r.0, r.1)), h.tokens.map(|t| (t.0, t.1)));
                assert_eq!(strip(hx), strip(hy), "request {i}");
                if i % 2 == 0 {
                    plain.settle(&rx, Some(30)).await.unwrap();
                    off.settle(&ry, Some(30)).await.unwrap();
                }
            }
            (Err(ex), Err(ey)) => assert_eq!(ex.reason(), ey.reason(), "request {i}"),
            (x, y) => panic!("request {i}: {x:?} vs {y:?}"),
        }
    }
    s.flush().await.unwrap();
    for suffix in ["rpm", "tpm"] {
        assert_eq!(
            get(&s, &format!("lumen:rl:{{a#}}:*:{suffix}")).await.0,
            get(&s, &format!("lumen:rl:{{b#}}:*:{suffix}")).await.0,
            "{suffix}"
        );
    }
}
