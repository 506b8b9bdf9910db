use super::*;

fn entry(name: &str, models: &[&str]) -> BackendEntry<&'static str> {
    BackendEntry {
        name: name.to_owned(),
        backend: Box::leak(name.to_owned().into_boxed_str()),
        models: models.iter().map(|m| Model::new(*m)).collect(),
        fixed_models: false,
    }
}

#[test]
fn routes_round_robin_within_a_models_pool() {
    let r = Router::new(
        RoutingTable::new(vec![
            entry("a", &["m1"]),
            entry("b", &["m1", "m2"]),
            entry("c", &["m2"]),
        ]),
        None,
    );
    let picks: Vec<_> = (0..4)
        .map(|_| r.route("m1").unwrap().backend_name)
        .collect();
    assert_eq!(picks.iter().filter(|n| *n == "a").count(), 2);
    assert_eq!(picks.iter().filter(|n| *n == "b").count(), 2);
    for _ in 0..10 {
        assert_ne!(r.route("m2").unwrap().backend_name, "a");
    }
}

#[test]
fn unknown_and_missing_models() {
    let r = Router::new(RoutingTable::new(vec![entry("a", &["m1", "m2"])]), None);
    assert_eq!(
        r.route("zzz").unwrap_err(),
        GovernanceError::ModelNotFound {
            model: "zzz".into()
        }
    );
    assert_eq!(r.route("").unwrap_err(), GovernanceError::ModelRequired);
    let r = Router::new(
        RoutingTable::new(vec![entry("a", &["m1", "m2"])]),
        Some("m2".into()),
    );
    assert_eq!(r.route("").unwrap().model, "m2");
    let single = Router::new(RoutingTable::new(vec![entry("a", &["only"])]), None);
    assert_eq!(single.route("").unwrap().model, "only");
}

#[test]
fn discovery_swaps_the_table_but_not_fixed_lists() {
    let mut fixed = entry("fixed", &["pinned"]);
    fixed.fixed_models = true;
    let r = Router::new(RoutingTable::new(vec![entry("a", &[]), fixed]), None);
    let before = r.table();
    assert!(r.route("new").is_err());
    r.set_discovered("a", vec![Model::new("new")]);
    r.set_discovered("fixed", vec![Model::new("other")]);
    assert_eq!(r.route("new").unwrap().backend_name, "a");
    assert!(r.route("pinned").is_ok());
    assert!(r.route("other").is_err());
    // A snapshot taken earlier is unchanged: in-flight requests keep their view.
    assert!(before.model("new").is_none());
    let ids: Vec<_> = r.table().models().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec!["new", "pinned"]);
}
