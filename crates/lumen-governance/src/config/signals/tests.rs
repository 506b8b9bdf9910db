use crate::config::{GovernanceConfig, ModelConfig, Policy};

fn parse(json: &str) -> GovernanceConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_new_policies_and_sections_parse_with_defaults() {
    let c = parse(r#"{"policy":"cache_aware","signals":{"interval_ms":250,"stale_ms":1000}}"#);
    assert_eq!(c.policy, Policy::CacheAware);
    assert_eq!((c.signals.interval_ms, c.signals.timeout_ms), (250, 400));
    assert_eq!(c.cache_aware.max_entries, 262_144);
    assert!(c.validate(&[]).is_ok());
    assert_eq!(Policy::LoadAware.as_str(), "load_aware");
    assert!(serde_json::from_str::<GovernanceConfig>(r#"{"signals":{"bogus":1}}"#).is_err());
}

#[test]
fn bad_settings_name_their_key() {
    for (json, key) in [
        (
            r#"{"signals":{"interval_ms":0}}"#,
            "routing.signals.interval_ms",
        ),
        (
            r#"{"signals":{"interval_ms":5000}}"#,
            "routing.signals.stale_ms",
        ),
        (
            r#"{"signals":{"kv_threshold":1.5}}"#,
            "routing.signals.kv_threshold",
        ),
        (
            r#"{"signals":{"kv_weight":-1}}"#,
            "routing.signals.kv_weight",
        ),
        (
            r#"{"cache_aware":{"max_entries":0}}"#,
            "routing.cache_aware.max_entries",
        ),
        (
            r#"{"cache_aware":{"ttl_ms":10}}"#,
            "routing.cache_aware.ttl_ms",
        ),
        (
            r#"{"cache_aware":{"shared_after":0}}"#,
            "routing.cache_aware.shared_after",
        ),
    ] {
        let err = parse(json).validate(&[]).unwrap_err();
        assert_eq!(err.key, key, "{json}");
    }
}

#[test]
fn signals_are_scraped_when_something_reads_them() {
    // The default policy (`cache_aware`) reads them.
    assert!(GovernanceConfig::default().scrapes_signals());
    let mut c = GovernanceConfig {
        policy: Policy::RoundRobin,
        ..GovernanceConfig::default()
    };
    assert!(!c.scrapes_signals());
    c.models.insert(
        "m".into(),
        ModelConfig {
            policy: Some(Policy::LoadAware),
            ..ModelConfig::default()
        },
    );
    assert!(c.scrapes_signals() && c.uses(Policy::LoadAware) && !c.uses(Policy::CacheAware));
    c.models.clear();
    c.signals.saturation_queue = 4;
    assert!(c.scrapes_signals());
    c.signals.enabled = Some(false);
    assert!(!c.scrapes_signals(), "an explicit setting wins");
    let on = GovernanceConfig {
        signals: crate::config::SignalsConfig {
            enabled: Some(true),
            ..Default::default()
        },
        ..GovernanceConfig::default()
    };
    assert!(on.scrapes_signals());
}
