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
