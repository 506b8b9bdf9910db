//! Against a real `redis-server` on a free port (`tests/run.sh` installs it), like the
//! crate's other tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;

use super::*;

/// A throwaway `redis-server`, killed on drop.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let server = Self { port, child };
        for _ in 0..2_000 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start");
    }

    /// One replica's view: its own connection to the shared server.
    fn replica(&self, retention_days: u32) -> RedisUsageStore {
        RedisUsageStore::new(Arc::new(state(self.port)), retention_days)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn state(port: u16) -> RedisState {
    RedisState::new(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_secs(2),
        Duration::from_secs(1),
    )
    .unwrap()
}

fn today() -> Day {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Day::from_unix_ms(ms)
}

fn counts(n: u64) -> Counts {
    Counts {
        requests: 1,
        input_tokens: n,
        output_tokens: 3 * n,
        cached_tokens: n / 2,
        errors: u64::from(n % 5 == 0),
    }
}

fn delta<'a>(key: &'a str, model: &'a str, day: Day, c: Counts) -> UsageDelta<'a> {
    UsageDelta {
        key,
        model,
        requested: None,
        day,
        counts: c,
    }
}

fn range(from: Day, to: Day) -> UsageQuery {
    UsageQuery::new(from, to).unwrap()
}

#[test]
fn escaping_is_injective_and_leaves_no_separator() {
    let names = [
        "",
        "a",
        "a|b",
        "a%7Cb",
        "%",
        "%25",
        "|",
        "||",
        "a:b",
        "x|y",
        "%7",
        "ü|模型/%",
    ];
    let mut seen = std::collections::HashSet::new();
    for n in names {
        let mut e = String::new();
        escape_into(&mut e, n);
        assert!(!e.contains('|'), "{n:?} → {e:?}");
        assert_eq!(unescape(&e).as_deref(), Some(n));
        assert!(seen.insert(e), "{n:?} collides");
    }
    for bad in ["%", "%7", "%7c", "%41", "a|b", "%2"] {
        assert_eq!(unescape(bad), None, "{bad:?}");
    }
    // Row prefixes: the (key, model) split cannot be moved by a separator in a name.
    assert_ne!(row_prefix("a|b", "c", None), row_prefix("a", "b|c", None));
    assert_ne!(row_prefix("a", "b", Some("")), row_prefix("a", "b", None));
    assert_ne!(
        row_prefix("a", "b|c", None),
        row_prefix("a", "b", Some("c"))
    );
    let field = format!("{}o", row_prefix("a|b", "m", Some("r%")));
    assert_eq!(
        parse_field(field.as_bytes()),
        Some((("a|b".into(), "m".into(), Some("r%".into())), 2))
    );
    for junk in ["", "k|m", "k|m|x", "k|m|rr", "k|m|a|b|r", "k%zz|m|r"] {
        assert_eq!(parse_field(junk.as_bytes()), None, "{junk:?}");
    }
    assert_eq!(parse_field(b"k|\xff|r"), None);
}

/// Three replicas (three stores, three connections, one server) record at once; one query
/// from any of them sums exactly.
#[tokio::test]
async fn three_replicas_recording_concurrently_report_one_exact_total() {
    let server = Server::start().await;
    let replicas = [server.replica(30), server.replica(30), server.replica(30)];
    let day = today();
    let keys = ["team-a", "team-b"];
    let models = ["org/model-1", "model-2"];
    let per_task = 150u64;
    let tasks = replicas.iter().enumerate().flat_map(|(r, store)| {
        (0..4u64).map(move |t| async move {
            for i in 0..per_task {
                let n = (r as u64 * 1_000 + t * 100 + i) % 97;
                let key = keys[(i % 2) as usize];
                let model = models[((i / 2) % 2) as usize];
                let mut d = delta(key, model, day, counts(n));
                // Odd and even `i`: both keys, both models.
                if i % 5 == 1 {
                    d.requested = Some("big-model");
                }
                store.record(d).await.unwrap();
            }
        })
    });
    futures::future::join_all(tasks).await;

    let mut want = Counts::default();
    for r in 0..3u64 {
        for t in 0..4u64 {
            for i in 0..per_task {
                want.add(&counts((r * 1_000 + t * 100 + i) % 97));
            }
        }
    }
    for store in &replicas {
        let rows = store.query(&range(day, day)).await.unwrap();
        // 2 keys × 2 models, each also with its fallback row.
        assert_eq!(rows.len(), 8, "{rows:?}");
        let mut total = Counts::default();
        for r in &rows {
            assert_eq!(r.day, day);
            total.add(&r.counts);
        }
        assert_eq!(total, want);
        assert_eq!(total.requests, 3 * 4 * per_task);
        let fallbacks: u64 = rows
            .iter()
            .filter(|r| r.requested.as_deref() == Some("big-model"))
            .map(|r| r.counts.requests)
            .sum();
        assert_eq!(fallbacks, 3 * 4 * per_task / 5);
    }
}

#[tokio::test]
async fn each_day_hash_expires_at_the_end_of_the_retention() {
    let server = Server::start().await;
    let store = server.replica(3);
    let day = today();
    store.record(delta("k", "m", day, counts(4))).await.unwrap();
    let mut conn = store.state.conn.clone();
    let ttl: i64 = conn.ttl(day_key(day)).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let want = day.start_unix_secs() + 3 * 86_400 - now;
    assert!(
        (want - 5..=want + 5).contains(&ttl),
        "ttl {ttl}, want {want}"
    );
    assert!(
        ttl > 2 * 86_400,
        "today is kept for three days, today included"
    );

    // A day already past the retention leaves nothing behind.
    let old = day.saturating_add_days(-3);
    store.record(delta("k", "m", old, counts(4))).await.unwrap();
    let exists: bool = conn.exists(day_key(old)).await.unwrap();
    assert!(!exists);
    let rows = store.query(&range(old, day)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].day, day);
    // The last day kept.
    let last = day.saturating_add_days(-2);
    store
        .record(delta("k", "m", last, counts(4)))
        .await
        .unwrap();
    let ttl: i64 = conn.ttl(day_key(last)).await.unwrap();
    assert!((0..=86_400).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn hostile_names_never_collide() {
    let server = Server::start().await;
    let store = server.replica(30);
    let day = today();
    let long_a = "a".repeat(4_096);
    let long_b = format!("{}|", "a".repeat(4_095));
    let pairs: Vec<(String, String, Option<String>)> = vec![
        ("a:b".into(), "m".into(), None),
        ("a".into(), "b:m".into(), None),
        ("x|y".into(), "m".into(), None),
        ("x".into(), "y|m".into(), None),
        ("x".into(), "y".into(), Some("m".into())),
        ("x".into(), "y".into(), Some(String::new())),
        ("x".into(), "y".into(), None),
        ("x%7Cy".into(), "m".into(), None),
        ("x%".into(), "7Cy|m".into(), None),
        ("ключ-🔑".into(), "модель/模型".into(), Some("ü".into())),
        (long_a.clone(), long_b.clone(), None),
        (long_b.clone(), long_a.clone(), Some(long_b.clone())),
        ("k\r\n,\"".into(), "m\0".into(), None),
    ];
    for (i, (k, m, r)) in pairs.iter().enumerate() {
        let d = UsageDelta {
            requested: r.as_deref(),
            ..delta(k, m, day, counts(i as u64 + 1))
        };
        store.record(d).await.unwrap();
    }
    let rows = store.query(&range(day, day)).await.unwrap();
    assert_eq!(rows.len(), pairs.len());
    for (i, (k, m, r)) in pairs.iter().enumerate() {
        let found: Vec<&UsageRow> = rows
            .iter()
            .filter(|row| &row.key == k && &row.model == m && &row.requested == r)
            .collect();
        assert_eq!(found.len(), 1, "pair {i}");
        assert_eq!(found[0].counts, counts(i as u64 + 1));
    }
    // Filters match exact names.
    let only = store
        .query(&range(day, day).with_key("x").with_model("y"))
        .await
        .unwrap();
    assert_eq!(only.len(), 3);
    assert_eq!(
        only.iter()
            .map(|r| r.requested.as_deref())
            .collect::<Vec<_>>(),
        [None, Some(""), Some("m")]
    );
}

#[tokio::test]
async fn queries_span_days_filter_and_skip_foreign_fields() {
    let server = Server::start().await;
    let store = server.replica(30);
    let day = today();
    let days: Vec<Day> = (0..10).map(|i| day.saturating_add_days(-i)).collect();
    for (i, d) in days.iter().enumerate() {
        store
            .record(delta(
                "k",
                if i % 2 == 0 { "even" } else { "odd" },
                *d,
                counts(1),
            ))
            .await
            .unwrap();
    }
    // Something Lumen did not write, in a day's hash.
    let mut conn = store.state.conn.clone();
    let _: i64 = conn.hset(day_key(day), "garbage", 7).await.unwrap();
    let _: i64 = conn.hset(day_key(day), "k|even|z", 7).await.unwrap();

    let all = store.query(&range(days[9], day)).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].day < w[1].day), "sorted by day");
    assert!(all.iter().all(|r| r.counts == counts(1)));
    let odd = store
        .query(&range(days[9], day).with_model("odd"))
        .await
        .unwrap();
    assert_eq!(odd.len(), 5);
    assert!(odd.iter().all(|r| r.model == "odd"));
    let week = store.query(&range(days[6], days[0])).await.unwrap();
    assert_eq!(week.len(), 7);
    assert!(
        store
            .query(&range(day, day).with_key("other"))
            .await
            .unwrap()
            .is_empty()
    );
    // An all-zero delta writes nothing.
    let empty_day = day.saturating_add_days(-20);
    store
        .record(delta("k", "m", empty_day, Counts::default()))
        .await
        .unwrap();
    let exists: bool = conn.exists(day_key(empty_day)).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = free_port();
    let store = RedisUsageStore::new(
        Arc::new(
            RedisState::new(
                &format!("redis://127.0.0.1:{port}"),
                Duration::from_millis(200),
                Duration::from_secs(1),
            )
            .unwrap(),
        ),
        30,
    );
    let day = today();
    let recorded = tokio::time::timeout(
        Duration::from_secs(5),
        store.record(delta("k", "m", day, counts(1))),
    )
    .await
    .expect("bounded by the deadline");
    assert!(recorded.is_err());
    let queried = tokio::time::timeout(Duration::from_secs(5), store.query(&range(day, day)))
        .await
        .expect("bounded by the deadline");
    assert!(queried.is_err());
}

/// The same deltas into the in-memory store and into Redis give the same report, row for
/// row and in the same order: the admin API does not depend on which store is configured.
#[tokio::test]
async fn redis_and_memory_report_the_same_rows() {
    use lumen_governance::accounting::MemoryUsageStore;

    let server = Server::start().await;
    let redis = server.replica(30);
    let memory = MemoryUsageStore::new(
        Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }),
        UsageBounds {
            retention_days: 30,
            max_rows: 10_000,
        },
    );
    let day = today();
    let keys = ["b", "a", "a|b", "ä"];
    let models = ["z/1", "m", "m|"];
    let requested = [None, Some("m"), Some("big"), Some("")];
    for i in 0..200u64 {
        let d = UsageDelta {
            key: keys[(i % 4) as usize],
            model: models[(i % 3) as usize],
            requested: requested[((i / 3) % 4) as usize],
            day: day.saturating_add_days(-((i % 5) as i64)),
            counts: counts(i),
        };
        redis.record(d).await.unwrap();
        memory.record(d).await.unwrap();
    }
    for q in [
        range(day.saturating_add_days(-6), day),
        range(day.saturating_add_days(-2), day.saturating_add_days(-1)).with_key("a"),
        range(day.saturating_add_days(-6), day).with_model("m"),
    ] {
        let from_redis = redis.query(&q).await.unwrap();
        assert!(!from_redis.is_empty());
        assert_eq!(from_redis, memory.query(&q).await.unwrap(), "{q:?}");
    }
}
