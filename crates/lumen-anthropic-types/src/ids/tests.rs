use super::*;

#[test]
fn common_engine_ids_are_prefixed_and_come_back() {
    for (engine, client) in [
        ("call_x", "toolu_call_x"),
        ("chatcmpl-tool-9f8e7d", "toolu_chatcmpl-tool-9f8e7d"),
        ("abc123XYZ", "toolu_abc123XYZ"),
        ("toolu_01A", "toolu_toolu_01A"),
    ] {
        assert_eq!(to_anthropic(engine), client);
        assert_eq!(to_engine(client), engine);
    }
}

#[test]
fn any_engine_id_round_trips_and_stays_in_anthropics_alphabet() {
    let ids = [
        "",
        "call:1",
        "call 1",
        "a/b",
        "héllo",
        "lmnx_41",
        "lmnx_",
        "x\"y",
        "\n",
        "functions.get_weather:0",
    ];
    for id in ids {
        let client = to_anthropic(id);
        assert!(client.starts_with("toolu_"), "{client}");
        assert!(
            client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{client}"
        );
        assert_eq!(to_engine(&client), id, "{client}");
    }
    // Deterministic.
    assert_eq!(to_anthropic("call:1"), to_anthropic("call:1"));
    assert_eq!(
        to_anthropic("functions.get_weather:0"),
        "toolu_lmnx_66756e6374696f6e732e6765745f776561746865723a30"
    );
}

#[test]
fn client_ids_pair_up_consistently() {
    // Anthropic's own ids and made-up ones: a call and its result map alike.
    for id in [
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "my-call",
        "toolu_",
        "toolu_lmnx_zz",
    ] {
        assert_eq!(to_engine(id), to_engine(id));
        assert!(!to_engine(id).is_empty());
    }
    assert_eq!(
        to_engine("toolu_01T1x1fJ34qAmk2tNTrN7Up6"),
        "01T1x1fJ34qAmk2tNTrN7Up6"
    );
    assert_eq!(to_engine("toolu_lmnx_zz"), "lmnx_zz");
}
