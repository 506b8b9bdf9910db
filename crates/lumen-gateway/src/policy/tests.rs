use super::settlement::charge;
use super::*;

#[test]
fn a_request_is_charged_its_usage_else_at_least_its_reservation_and_what_it_used() {
    // The engine's usage, whatever the reservation.
    assert_eq!(charge(Some(70), Some(5_000), 1_054), Some(70));
    // No usage: a stream that relayed more than it reserved pays for what it relayed...
    assert_eq!(charge(None, Some(2_464), 1_046), Some(2_464));
    // ...and one that relayed less keeps its reservation (`None`: nothing to correct).
    assert_eq!(charge(None, Some(300), 1_046), None);
    assert_eq!(charge(None, None, 1_046), None);
    assert_eq!(prompt_estimate(0), 1);
    assert_eq!(prompt_estimate(90), 22);
    assert_eq!(
        estimate_tokens(90, None, 1, 1_024),
        prompt_estimate(90) + 1_024
    );
}

fn step() -> PolicyStep {
    let (stores, _) = PolicyStores::in_memory(&CacheConfig::default());
    PolicyStep::new(
        stores,
        PolicySettings::default(),
        Arc::new(crate::observer::NoopObserver),
    )
}

/// A stored response is found the moment it is saved, before its background write has run:
/// an agent asks for it by `previous_response_id` as soon as the last event arrives.
#[tokio::test(flavor = "current_thread")]
async fn a_saved_response_is_found_before_its_write_lands() {
    let policy = step();
    let req: lumen_openai_types::responses::ResponsesRequest =
        serde_json::from_value(serde_json::json!({"model": "m", "input": "hi"})).unwrap();
    let response = lumen_openai_types::responses::Response::start(&req, "seed", 1);
    let id = response.id.clone();
    policy.save_response(&StoredResponse {
        owner: "team-a".into(),
        response,
        conversation: Vec::new(),
        input: Vec::new(),
    });
    // No yield since the save: its spawned write has not run on this thread.
    let found = policy.load_response(&id, "team-a").await.unwrap();
    assert_eq!(found.map(|s| s.response.id), Some(id.clone()));
    assert!(
        policy.load_response(&id, "team-b").await.unwrap().is_none(),
        "owner only"
    );
    tokio::task::yield_now().await;
    assert!(
        policy.unsettled.get(&response_key(&id)).is_none(),
        "settled once written"
    );
    assert!(
        policy.load_response(&id, "team-a").await.unwrap().is_some(),
        "from the store"
    );
    policy.delete_response(&id).await.unwrap();
    assert!(policy.load_response(&id, "team-a").await.unwrap().is_none());
}

/// The same for a native response's home; and an entry in flight never shadows another key's
/// home in the store, nor takes it over.
#[tokio::test(flavor = "current_thread")]
async fn a_native_home_is_found_before_its_write_lands_and_never_shadows_another_keys() {
    let policy = step();
    policy.save_native_response("resp_1", "team-a", "gpu-1");
    assert_eq!(
        backend_of(&policy, "team-a").await.as_deref(),
        Some("gpu-1")
    );
    tokio::task::yield_now().await;
    // Another key is answered the same id by an engine: its entry in flight is not read over
    // the store's, and its write does not replace it.
    policy.save_native_response("resp_1", "team-b", "gpu-2");
    assert_eq!(backend_of(&policy, "team-b").await, None);
    assert_eq!(
        backend_of(&policy, "team-a").await.as_deref(),
        Some("gpu-1")
    );
    tokio::task::yield_now().await;
    assert_eq!(backend_of(&policy, "team-b").await, None);
    assert!(policy.unsettled.get(&native_key("resp_1")).is_none());
}

/// The backend `owner` is told holds `resp_1`.
async fn backend_of(policy: &PolicyStep, owner: &str) -> Option<String> {
    let home = policy.native_response("resp_1", owner).await.unwrap();
    home.map(|h| h.backend)
}
