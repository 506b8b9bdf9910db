use super::*;

#[test]
fn digest_and_lookup() {
    // sha256("sk-test") from coreutils: echo -n sk-test | sha256sum
    let hex = to_hex(&digest("sk-test"));
    assert_eq!(hex.len(), 64);
    let ring = KeyRing::new(&[ApiKey {
        name: "a".into(),
        sha256: hex.clone(),
        models: Some(vec!["m1".into()]),
        limits: LimitSpec::default(),
        per_model: Default::default(),
    }])
    .unwrap();
    let k = ring.lookup("sk-test").unwrap();
    assert_eq!(k.name, "a");
    assert!(k.allows("m1") && !k.allows("m2"));
    assert!(ring.lookup("sk-tesT").is_none());
    assert!(digest_matches(&hex, &digest("sk-test")));
    assert_eq!(parse_hex(&hex), Some(digest("sk-test")));
}

#[test]
fn a_digest_is_hex_digits_only() {
    assert_eq!(parse_hex(&"+f".repeat(32)), None, "a sign is not a digit");
    assert_eq!(parse_hex(&"0f".repeat(32)), Some([0x0f; 32]));
    assert_eq!(parse_hex(&"0F".repeat(32)), Some([0x0f; 32]));
}

#[test]
fn a_namespace_changes_with_the_secret_not_only_the_name() {
    let k = |secret: &str| ApiKey {
        name: "tenant".into(),
        sha256: to_hex(&digest(secret)),
        models: None,
        limits: LimitSpec::default(),
        per_model: Default::default(),
    };
    assert_ne!(k("one").namespace(), k("two").namespace());
    assert_eq!(k("one").namespace(), k("one").namespace());
    assert!(k("one").namespace().starts_with("tenant#"));
}

#[test]
fn bad_keys_are_rejected_with_the_key_path() {
    let k = |name: &str, sha: &str| ApiKey {
        name: name.into(),
        sha256: sha.into(),
        models: None,
        limits: LimitSpec::default(),
        per_model: Default::default(),
    };
    assert_eq!(
        KeyRing::new(&[k("a", "zz")]).unwrap_err().key,
        "auth.keys[0].sha256"
    );
    let h = to_hex(&digest("x"));
    assert_eq!(
        KeyRing::new(&[k("a", &h), k("a", &to_hex(&digest("y")))])
            .unwrap_err()
            .key,
        "auth.keys[1].name"
    );
}

#[test]
fn generated_keys_are_random_and_well_formed() {
    let a = generate().unwrap();
    let b = generate().unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with("lumen-") && a.len() == 6 + 48);
}

#[test]
fn a_request_gets_its_keys_class_and_may_ask_only_up_to_the_keys_highest() {
    let spec = |priority: Option<&str>, max: Option<&str>| LimitSpec {
        priority: priority.map(str::to_owned),
        max_priority: max.map(str::to_owned),
        ..LimitSpec::default()
    };
    // Standard unless set; asking for more than the key may have is not granted.
    assert_eq!(spec(None, None).rank(None), 1);
    assert_eq!(spec(None, None).rank(Some("interactive")), 1);
    assert_eq!(spec(None, None).rank(Some("batch")), 2);
    assert_eq!(spec(Some("batch"), None).rank(Some("standard")), 2);
    assert_eq!(
        spec(Some("batch"), Some("interactive")).rank(Some("interactive")),
        0
    );
    assert_eq!(spec(Some("batch"), Some("interactive")).rank(None), 2);
    assert_eq!(spec(Some("interactive"), None).rank(Some("nonsense")), 0);
    // Configuration that cannot be used is refused when the keys load.
    let mut k = ApiKey {
        name: "k".into(),
        sha256: to_hex(&digest("s")),
        models: None,
        limits: LimitSpec {
            weight: Some(0),
            ..LimitSpec::default()
        },
        per_model: Default::default(),
    };
    assert!(KeyRing::new(std::slice::from_ref(&k)).is_err());
    k.limits = spec(Some("urgent"), None);
    let e = KeyRing::new(std::slice::from_ref(&k)).unwrap_err();
    assert_eq!(e.key, "auth.keys[0].limits.priority");
    k.limits = spec(Some("batch"), Some("interactive"));
    assert!(KeyRing::new(&[k]).is_ok());
}
