//! Against a real `redis-server` on a free port (`tests/run.sh` installs it).

use std::process::{Child, Command, Stdio};

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

#[tokio::test]
async fn a_retried_settlement_applies_once() {
    let server = Server::start().await;
    let s = server.state();
    let tpm = window("lumen:rl:{k}:*:tpm", 1_000, 300);
    let conc = lease(2, Duration::from_secs(60));
    let counters = [tpm.clone(), conc.clone()];
    let deltas = [(tpm.key.clone(), -200)];
    let leases = [conc.key.clone()];
    let mut conn = s.conn.clone();

    // The first attempt landed (late): the retry finds the ticket closed.
    s.acquire(&ticket("a"), &counters).await.unwrap();
    s.settle(&ticket("a"), &deltas, &leases).await.unwrap();
    assert_eq!(values(&s, &counters).await, [100, 0]);
    let retry = settle_retry(&ticket("a"), &deltas, &leases);
    retry.exec_async(&mut conn).await.unwrap();
    assert_eq!(values(&s, &counters).await, [100, 0], "not settled twice");

    // The first attempt was lost: the retry settles.
    s.acquire(&ticket("b"), &counters).await.unwrap();
    assert_eq!(values(&s, &counters).await, [400, 1]);
    let retry = settle_retry(&ticket("b"), &deltas, &leases);
    retry.exec_async(&mut conn).await.unwrap();
    retry.exec_async(&mut conn).await.unwrap();
    assert_eq!(values(&s, &counters).await, [200, 0]);
}
