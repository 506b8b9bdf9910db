use super::*;

#[test]
fn determinism_rule() {
    assert!(is_deterministic(Some(0.0), None));
    assert!(is_deterministic(Some(0.7), Some(1)));
    assert!(
        !is_deterministic(None, None),
        "the engine default temperature is not 0"
    );
    assert!(!is_deterministic(Some(0.2), None));
}

#[test]
fn keys_separate_tenants_models_and_bodies() {
    let k = |ns: &str, m: &str, body: &str| cache_key(ns, "chat", m, body.as_bytes());
    assert_eq!(k("a", "m", "{}"), k("a", "m", "{}"));
    assert_ne!(k("a", "m", "{}"), k("b", "m", "{}"));
    assert_ne!(k("a", "m", "{}"), k("a", "n", "{}"));
    assert_ne!(k("a", "m", "{}"), k("a", "m", "{ }"));
    // Length prefixes: moving bytes between fields changes the key.
    assert_ne!(cache_key("ab", "c", "", b""), cache_key("a", "bc", "", b""));
}

#[tokio::test]
async fn memory_cache_round_trip() {
    let c = MemoryCache::new(1 << 20, Duration::from_secs(60));
    let key = cache_key("", "chat", "m", b"x");
    assert_eq!(c.get(&key).await.unwrap(), None);
    c.put(&key, Bytes::from_static(b"answer"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        c.get(&key).await.unwrap(),
        Some(Bytes::from_static(b"answer"))
    );
}

/// Issue 20, item 17: what the cache holds is what it counts. An answer sliced from a larger
/// buffer (an engine connection's read buffer) is stored as a copy of its own size, so the
/// buffer is not kept alive by the entry; and `weighted_bytes` reports answers plus 64 each.
#[tokio::test]
async fn the_memory_cache_holds_and_counts_only_the_answer() {
    let c = MemoryCache::new(1 << 20, Duration::from_secs(60));
    assert_eq!(c.weighted_bytes(), 0);
    let buffer = Bytes::from(vec![b'a'; 64 * 1024]);
    let answer = buffer.slice(100..1_100);
    let key = cache_key("", "chat", "m", b"x");
    c.put(&key, answer.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    let stored = c.get(&key).await.unwrap().unwrap();
    assert_eq!(stored, answer);
    assert!(
        !std::ptr::eq(stored.as_ptr(), answer.as_ptr()),
        "a copy, not a view into the 64 KiB buffer"
    );
    assert_eq!(c.weighted_bytes(), 1_000 + 64);
    let other = cache_key("", "chat", "m", b"y");
    c.put(&other, Bytes::from_static(b"ok"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.weighted_bytes(), 1_000 + 64 + 2 + 64);
}
