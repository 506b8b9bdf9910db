//! Against a real `redis-server` on a free port (`tests/run.sh` installs it).

use std::process::{Child, Command, Stdio};

use lumen_governance::accounting::UsageStore;
use lumen_governance::store::Expiry;

use super::*;

/// A throwaway `redis-server`, killed on drop.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    /// On `port` (a server that was there before and went away, coming back empty).
    async fn start_on(port: u16) -> Self {
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

    fn state(&self) -> RedisState {
        RedisState::new(
            &format!("redis://127.0.0.1:{}", self.port),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ticket(id: &str) -> Ticket {
    Ticket {
        id: id.into(),
        key: format!("lumen:rl:{{k}}:req:{id}"),
    }
}

fn lease(limit: u64, d: Duration) -> Counter {
    Counter {
        key: "lumen:rl:{k}:*:conc".into(),
        limit,
        cost: 1,
        expiry: Expiry::Lease(d),
    }
}

fn window(key: &str, limit: u64, cost: u64) -> Counter {
    Counter {
        key: key.into(),
        limit,
        cost,
        expiry: Expiry::Window(Duration::from_secs(60)),
    }
}

async fn values(s: &RedisState, counters: &[Counter]) -> Vec<u64> {
    s.read(counters)
        .await
        .unwrap()
        .iter()
        .map(|c| c.value)
        .collect()
}

#[tokio::test]
async fn a_limit_of_zero_refuses_every_charge() {
    let server = Server::start().await;
    let s = server.state();
    for c in [
        window("lumen:rl:{k}:*:rpm", 0, 1),
        lease(0, Duration::from_secs(30)),
    ] {
        let v = s.acquire(&ticket("a"), std::slice::from_ref(&c)).await;
        assert!(
            matches!(v, Ok(Verdict::Refused { index: 0, .. })),
            "{c:?}: {v:?}"
        );
    }
}

#[tokio::test]
async fn each_request_holds_its_own_slot_until_settled_or_expired() {
    let server = Server::start().await;
    let s = server.state();
    let short = lease(2, Duration::from_millis(200));
    let long = lease(2, Duration::from_secs(60));
    assert!(matches!(
        s.acquire(&ticket("lost"), std::slice::from_ref(&short))
            .await,
        Ok(Verdict::Admitted(_))
    ));
    assert!(matches!(
        s.acquire(&ticket("live"), std::slice::from_ref(&long))
            .await,
        Ok(Verdict::Admitted(_))
    ));
    assert!(matches!(
        s.acquire(&ticket("third"), std::slice::from_ref(&long))
            .await,
        Ok(Verdict::Refused { .. })
    ));
    // The lost slot expires by itself, although the key stays busy.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(values(&s, std::slice::from_ref(&long)).await, [1]);
    assert!(matches!(
        s.acquire(&ticket("third"), std::slice::from_ref(&long))
            .await,
        Ok(Verdict::Admitted(_))
    ));
    s.settle(&ticket("live"), &[], std::slice::from_ref(&long.key))
        .await
        .unwrap();
    assert_eq!(values(&s, std::slice::from_ref(&long)).await, [1]);
}

#[tokio::test]
async fn renewing_extends_only_the_live_slot() {
    let server = Server::start().await;
    let s = server.state();
    let c = lease(5, Duration::from_secs(60));
    s.acquire(&ticket("a"), std::slice::from_ref(&c))
        .await
        .unwrap();
    let mut conn = s.conn.clone();
    let before: f64 = conn.zscore(&c.key, "a").await.unwrap();
    s.renew(
        &ticket("a"),
        std::slice::from_ref(&c.key),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let after: f64 = conn.zscore(&c.key, "a").await.unwrap();
    assert!(after >= before + 60_000.0, "{before} → {after}");
    s.settle(&ticket("a"), &[], std::slice::from_ref(&c.key))
        .await
        .unwrap();
    s.renew(
        &ticket("a"),
        std::slice::from_ref(&c.key),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let gone: Option<f64> = conn.zscore(&c.key, "a").await.unwrap();
    assert_eq!(gone, None, "a freed slot is not brought back");
}

/// The undo of an admission Lumen gave up on: whether it runs after the late charge (refund)
/// or before it (tombstone), the charge ends up not counted.
#[tokio::test]
async fn an_undone_admission_never_counts_in_either_order() {
    let server = Server::start().await;
    let s = server.state();
    let counters = [
        window("lumen:rl:{k}:*:rpm", 10, 1),
        window("lumen:rl:{k}:*:tpm", 1_000, 300),
        lease(2, Duration::from_secs(60)),
    ];
    // Someone else's request, so the window counters exist and the refund shows.
    s.acquire(&ticket("other"), &counters).await.unwrap();
    let cancel = |id: &'static str| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CANCEL)
            .arg(counters.len() + 1)
            .arg(ticket(id).key)
            .arg(counters.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
            .arg(id)
            .arg(60_000);
        for c in &counters {
            cmd.arg(c.cost).arg(mode(c.expiry).1);
        }
        cmd
    };
    let mut conn = s.conn.clone();

    // The charge landed, then the undo: refunded.
    s.acquire(&ticket("late"), &counters).await.unwrap();
    assert_eq!(values(&s, &counters).await, [2, 600, 2]);
    cancel("late").exec_async(&mut conn).await.unwrap();
    assert_eq!(values(&s, &counters).await, [1, 300, 1]);
    cancel("late").exec_async(&mut conn).await.unwrap();
    assert_eq!(values(&s, &counters).await, [1, 300, 1], "idempotent");

    // The undo landed first: the charge is refused when it arrives.
    cancel("early").exec_async(&mut conn).await.unwrap();
    assert!(s.acquire(&ticket("early"), &counters).await.is_err());
    assert_eq!(values(&s, &counters).await, [1, 300, 1]);
}

/// A write batch that timed out is sent again under the same marker: whether the first
/// attempt landed (late) or was lost, the settlement and the usage record count once.
#[tokio::test]
async fn a_retried_write_applies_once() {
    let server = Server::start().await;
    let s = server.state();
    let tpm = window("lumen:rl:{k}:*:tpm", 1_000, 300);
    let conc = lease(2, Duration::from_secs(60));
    let counters = [tpm.clone(), conc.clone()];
    let settle = |id: &str| Write::Settle {
        ticket: ticket(id),
        deltas: vec![(tpm.key.clone(), -200)],
        leases: vec![conc.key.clone()],
    };
    let usage = Write::Usage {
        hash: "lumen:usage:test".into(),
        expires_at: 4_000_000_000,
        fields: vec![("k|m|r".into(), 1)],
    };
    let mut conn = s.conn.clone();
    let requests = |conn: &mut ConnectionManager| {
        let mut conn = conn.clone();
        async move {
            let n: Option<i64> = conn.hget("lumen:usage:test", "k|m|r").await.unwrap();
            n.unwrap_or(0)
        }
    };

    // The first attempt landed (late): the retry finds its marker and changes nothing.
    s.acquire(&ticket("a"), &counters).await.unwrap();
    let call = calls::write_call("lumen:write:t1", 60_000, &[settle("a"), usage.clone()]).unwrap();
    call.cmd("EVAL", calls::WRITE)
        .exec_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(values(&s, &counters).await, [100, 0]);
    call.cmd("EVAL", calls::WRITE)
        .exec_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(values(&s, &counters).await, [100, 0], "not settled twice");
    assert_eq!(requests(&mut conn).await, 1, "not recorded twice");

    // The first attempt was lost: the retry applies it.
    s.acquire(&ticket("b"), &counters).await.unwrap();
    assert_eq!(values(&s, &counters).await, [400, 1]);
    let call = calls::write_call("lumen:write:t2", 60_000, &[settle("b"), usage]).unwrap();
    for _ in 0..2 {
        call.cmd("EVAL", calls::WRITE)
            .exec_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(values(&s, &counters).await, [200, 0]);
    assert_eq!(requests(&mut conn).await, 2);
}

/// Many requests at once: their admissions go in batches, yet the limit is exact (never one
/// admission past it), and every settlement and usage record is written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_counted_exactly() {
    let server = Server::start().await;
    let s = Arc::new(server.state());
    let usage = crate::RedisUsageStore::new(s.clone(), 30);
    let usage = Arc::new(usage);
    let rpm = window("lumen:rl:{k}:*:rpm", 300, 1);
    let tpm = window("lumen:rl:{k}:*:tpm", 1_000_000, 100);
    let conc = lease(1_000, Duration::from_secs(60));
    let counters = vec![rpm.clone(), tpm.clone(), conc.clone()];
    let day = lumen_governance::accounting::Day::from_unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let (s, usage, counters) = (s.clone(), usage.clone(), counters.clone());
            let (tpm, conc) = (tpm.key.clone(), conc.key.clone());
            tokio::spawn(async move {
                let t = ticket(&format!("r{i}"));
                let admitted = matches!(s.acquire(&t, &counters).await, Ok(Verdict::Admitted(_)));
                if admitted {
                    // Each used 40 tokens of the 100 reserved.
                    s.settle(&t, &[(tpm, -60)], &[conc]).await.unwrap();
                    let counts = lumen_governance::accounting::Counts {
                        requests: 1,
                        input_tokens: 30,
                        output_tokens: 10,
                        ..Default::default()
                    };
                    let delta = lumen_governance::accounting::UsageDelta {
                        key: "k",
                        model: "m",
                        requested: None,
                        day,
                        counts,
                    };
                    usage.record(delta).await.unwrap();
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += u64::from(t.await.unwrap());
    }
    assert_eq!(admitted, 300, "exactly the limit admitted");
    assert_eq!(values(&s, &counters).await, [300, 300 * 40, 0]);
    let q = lumen_governance::accounting::UsageQuery::new(day, day).unwrap();
    let rows = usage.query(&q).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].counts.requests,
            rows[0].counts.input_tokens,
            rows[0].counts.output_tokens
        ),
        (300, 300 * 30, 300 * 10)
    );
    let mut conn = s.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let scripts = calls("evalsha") + calls("eval");
    // 400 admissions, 300 settlements and 300 records: far fewer calls when batched.
    assert!(
        scripts < 1_000,
        "{scripts} script calls for 1,000 operations"
    );
}

/// Shutdown: `flush` returns once everything queued before it is written.
#[tokio::test]
async fn flush_waits_for_what_was_queued() {
    let server = Server::start().await;
    let s = Arc::new(server.state());
    let pending: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(Write::Usage {
                    hash: "lumen:usage:flush".into(),
                    expires_at: 4_000_000_000,
                    fields: vec![(format!("f{}", i % 5), 2)],
                })
                .await
            })
        })
        .collect();
    // Let every task queue its record, then flush without awaiting the tasks.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.flush().await.unwrap();
    let mut conn = s.conn.clone();
    let all: Vec<(String, i64)> = conn.hgetall("lumen:usage:flush").await.unwrap();
    assert_eq!(all.iter().map(|(_, v)| v).sum::<i64>(), 100, "{all:?}");
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

/// Settlements and usage records queued with no one waiting (a request's way out, without a
/// task each) are written with the next batch; when Redis is gone, the queue reports each
/// one's failure under the operation the request path would have named.
#[tokio::test]
async fn writes_no_one_waits_for_land_or_are_reported() {
    let server = Server::start().await;
    let s = Arc::new(server.state());
    let reported = Arc::new(std::sync::Mutex::new(Vec::new()));
    s.report_write_errors({
        let reported = reported.clone();
        Arc::new(move |op, _| reported.lock().unwrap().push(op))
    });
    let usage = crate::RedisUsageStore::new(s.clone(), 30);
    let rpm = window("lumen:rl:{k}:*:tpm", 1_000, 100);
    let conc = lease(10, Duration::from_secs(60));
    let counters = [rpm.clone(), conc.clone()];
    let t = ticket("q");
    s.acquire(&t, &counters).await.unwrap();
    assert!(s.try_queue_settle(
        &t,
        &[(rpm.key.clone(), -60)],
        std::slice::from_ref(&conc.key)
    ));
    let day = lumen_governance::accounting::Day::from_unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let delta = lumen_governance::accounting::UsageDelta {
        key: "k",
        model: "m",
        requested: None,
        day,
        counts: lumen_governance::accounting::Counts {
            requests: 1,
            input_tokens: 40,
            ..Default::default()
        },
    };
    assert!(usage.try_queue(&delta));
    s.flush().await.unwrap();
    assert_eq!(values(&s, &counters).await, [40, 0]);
    let q = lumen_governance::accounting::UsageQuery::new(day, day).unwrap();
    let rows = usage.query(&q).await.unwrap();
    assert_eq!(rows[0].counts.input_tokens, 40);
    assert!(reported.lock().unwrap().is_empty());
    drop(server);
    assert!(s.try_queue_settle(&t, &[(rpm.key.clone(), -10)], &[]));
    assert!(usage.try_queue(&delta));
    let _ = s.flush().await;
    let mut got = reported.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, ["settle", "usage"]);
}

mod lease;

/// Redis restarted while the replica was idle: its connection is dead, which shows only at its
/// next use. That use (an admission, a usage write) is sent again on the new connection instead
/// of failing: the Redis that answers now never saw it (found by attack: with `fail_closed`,
/// each idle replica's first request after a restart was a 503).
#[tokio::test]
async fn the_first_call_after_a_restart_goes_through() {
    let server = Server::start().await;
    let port = server.port;
    let s = server.state();
    let rpm = window("lumen:rl:{k}:*:rpm", 100, 1);
    assert!(matches!(
        s.acquire(&ticket("before"), std::slice::from_ref(&rpm))
            .await,
        Ok(Verdict::Admitted(_))
    ));
    drop(server);
    let _back = Server::start_on(port).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = s
        .acquire(&ticket("after"), std::slice::from_ref(&rpm))
        .await;
    assert!(matches!(after, Ok(Verdict::Admitted(_))), "{after:?}");
    assert_eq!(
        values(&s, std::slice::from_ref(&rpm)).await,
        [1],
        "counted once, on the new Redis"
    );
    // The same for a run-time key's lookup, on the request path too.
    drop(_back);
    let _again = Server::start_on(port).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let found = lumen_governance::store::KeyStore::find(&s, &[7; 32]).await;
    assert!(matches!(found, Ok(None)), "{found:?}");
}
