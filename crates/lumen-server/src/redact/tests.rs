use super::*;

/// Hostile URLs: each secret is the word SECRET (or a part of it), wherever it sits.
#[test]
fn no_secret_survives_whatever_its_position() {
    let table = [
        // userinfo: password, user name alone, both
        (
            "redis://:SECRET@redis:6379/0",
            "redis://<redacted>@redis:6379/0",
        ),
        (
            "redis://default:SECRET@redis:6379",
            "redis://<redacted>@redis:6379",
        ),
        (
            "https://SECRET@otlp.example/v1/traces",
            "https://<redacted>@otlp.example/v1/traces",
        ),
        // unencoded `/`, `#`, `?` and `@` inside the password
        (
            "redis://:SEC/RET@redis:6379/0",
            "redis://<redacted>@redis:6379/0",
        ),
        ("redis://:SEC#RET@redis:6379", "redis://<redacted>"),
        ("redis://:SEC?RET@redis:6379", "redis://<redacted>"),
        ("redis://u:S/E#C?R@ET@redis:6379/1", "redis://<redacted>"),
        (
            "redis://:S@E/CRET@redis:6379/1",
            "redis://<redacted>@redis:6379/1",
        ),
        // query secrets: redis+unix's `pass`, an engine's `api_key`, an item without `=`
        (
            "redis+unix:///run/redis.sock?pass=SECRET&db=0",
            "redis+unix:///run/redis.sock?pass=<redacted>&db=<redacted>",
        ),
        (
            "unix:///run/redis.sock?db=1&pass=SECRET",
            "unix:///run/redis.sock?db=<redacted>&pass=<redacted>",
        ),
        (
            "http://gpu:8000/v1?api_key=SECRET",
            "http://gpu:8000/v1?api_key=<redacted>",
        ),
        ("http://gpu:8000/?SECRET", "http://gpu:8000/?<redacted>"),
        (
            "http://gpu:8000/?a=1&&SECRET",
            "http://gpu:8000/?a=<redacted>&&<redacted>",
        ),
        // all at once, and a fragment
        (
            "https://u:SECRET@h:1/p?token=SECRET#SECRET",
            "https://<redacted>@h:1/p?token=<redacted>#<redacted>",
        ),
        // no scheme, or something that only looks like one
        ("user:SECRET@host:6379", "<redacted>@host:6379"),
        ("SECRET@host", "<redacted>@host"),
        ("ht tp://SECRET@host", "<redacted>@host"),
        ("host:6379?password=SECRET", "host:6379?password=<redacted>"),
        // an `@` only in a query value or the fragment: the host is hidden with it
        ("http://h/?mail=a@SECRET", "http://<redacted>"),
        ("http://h/#a@SECRET", "http://<redacted>"),
    ];
    for (input, want) in table {
        let got = url(input);
        assert_eq!(got, want, "{input}");
        assert!(
            !got.contains("SEC") && !got.contains("RET"),
            "{input} → {got}"
        );
    }
}

#[test]
fn urls_without_secrets_are_unchanged() {
    for u in [
        "http://127.0.0.1:8000",
        "http://[::1]:8000/v1",
        "https://otlp.example:4318/v1/traces",
        "redis://redis:6379/0",
        "redis+unix:///run/redis.sock",
        "gpu-1:8000",
        "",
        "http://h/?",
        "http://h/#",
    ] {
        assert_eq!(url(u), u);
    }
}
