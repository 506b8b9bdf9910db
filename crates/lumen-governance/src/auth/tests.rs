use futures::FutureExt;

use super::*;
use crate::cache::MemoryKeyStore;
use crate::keys::to_hex;
use crate::limits::LimitSpec;

fn key(name: &str, secret: &str) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: to_hex(&digest(secret)),
        models: None,
        limits: LimitSpec::default(),
        per_model: Default::default(),
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    // The in-memory store answers at once.
    f.now_or_never().unwrap()
}

#[test]
fn configured_keys_then_run_time_keys_then_refusal() {
    let ring = KeyRing::new(&[key("cfg", "sk-cfg")]).unwrap();
    let store = MemoryKeyStore::default();
    assert!(run(store.insert(key("rt", "sk-rt"))).unwrap());
    assert_eq!(
        run(authorize(&ring, &store, Some("sk-cfg"))).unwrap().name,
        "cfg"
    );
    assert_eq!(
        run(authorize(&ring, &store, Some("sk-rt"))).unwrap().name,
        "rt"
    );
    assert_eq!(
        run(authorize(&ring, &store, Some("sk-nope"))).unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(
        run(authorize(&ring, &store, None)).unwrap_err(),
        AuthError::Missing
    );
}
