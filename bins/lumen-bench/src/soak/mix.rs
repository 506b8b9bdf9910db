//! The soak's request mix: what each kind sends, how much of the answer it reads, and which
//! outcomes are expected of it (anything else is counted as unexpected and fails the run).

use super::client::{Answer, Read};

/// The API keys Lumen is configured with for the soak (secret, SHA-256 of the secret, limits).
/// Limits live in Redis (the config sets `redis.url`), so every keyed request runs the
/// admission script.
pub const KEYS: &[(&str, &str, &str)] = &[
    // Limits high enough never to refuse: the path every normal request takes.
    (
        "sk-bench",
        "c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29",
        "{rpm=1000000000, tpm=1000000000000, max_concurrent=100000}",
    ),
    // 120 requests a minute: most of its requests get 429 from the minute window.
    (
        "sk-soak-tight",
        "d673b2785d8b805c6718ac4415c821ab10efd9152eef73d653a633431ae2bbf8",
        "{rpm=120}",
    ),
    // One stream at a time: overlapping streams get 429 (concurrency lease).
    (
        "sk-soak-narrow",
        "9e257068c9e8956b64b0fcee459ba0bb8095213a120544a43233624681d9f784",
        "{max_concurrent=1}",
    ),
    // A small daily quota: spent within seconds, then 429 insufficient_quota.
    (
        "sk-soak-quota",
        "52134366e10c2915838de3ec0569bb1a60326d38162c2093af859275c2240964",
        "{daily_tokens=2000}",
    ),
];

/// Models the simulator serves. Each has its own circuit breaker (5 failures in a row open it),
/// so faults are kept apart from the traffic that must succeed: `m` only ever sees clean
/// traffic; `flaky` fails one attempt in ten (retried; a run of five, which opens its breaker,
/// is rare); on `midstream` one stream in four fails after its first tokens, the others are
/// clean and come between them; `broken` always fails (its breaker is open most of the time).
pub const MODELS: &str = "m,flaky,midstream,broken";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Chat,
    Stream,
    StreamBesideFaults,
    StreamHangUp,
    Cached,
    Completions,
    Embeddings,
    Models,
    Retried,
    RetryAfter,
    StreamEngineError,
    StreamEngineDrop,
    EngineDown,
    UnknownModel,
    BadKey,
    NoKey,
    RpmLimited,
    ConcurrencyLimited,
    QuotaSpent,
    BadJson,
    HangUpEarly,
}

/// Kinds and their share of the requests, in percent (they add up to 100).
pub const WEIGHTS: &[(Kind, u32)] = &[
    (Kind::Chat, 31),
    (Kind::Stream, 10),
    (Kind::StreamBesideFaults, 8),
    (Kind::StreamHangUp, 5),
    (Kind::Cached, 5),
    (Kind::Completions, 3),
    (Kind::Embeddings, 3),
    (Kind::Models, 2),
    (Kind::Retried, 8),
    (Kind::RetryAfter, 1),
    (Kind::StreamEngineError, 2),
    (Kind::StreamEngineDrop, 1),
    (Kind::EngineDown, 2),
    (Kind::UnknownModel, 3),
    (Kind::BadKey, 3),
    (Kind::NoKey, 1),
    (Kind::RpmLimited, 4),
    (Kind::ConcurrencyLimited, 3),
    (Kind::QuotaSpent, 2),
    (Kind::BadJson, 2),
    (Kind::HangUpEarly, 1),
];

/// The kind of request number `i`: the weights laid out over 100 slots, visited with a stride
/// coprime to 100 so that consecutive requests are of different kinds.
pub fn kind_of(i: u64, table: &[Kind]) -> Kind {
    table[((i * 37) % table.len() as u64) as usize]
}

pub fn table() -> Vec<Kind> {
    WEIGHTS
        .iter()
        .flat_map(|&(k, w)| std::iter::repeat_n(k, w as usize))
        .collect()
}

const HELLO: &str = r#""messages":[{"role":"user","content":"hello there"}]"#;

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Stream => "stream",
            Kind::StreamBesideFaults => "stream, on the model whose other streams fail",
            Kind::StreamHangUp => "stream, client hangs up after the first event",
            Kind::Cached => "chat, cacheable (temperature 0, 64 prompts)",
            Kind::Completions => "completions",
            Kind::Embeddings => "embeddings",
            Kind::Models => "GET /v1/models",
            Kind::Retried => "chat, engine fails 10% of attempts with 500 (retried)",
            Kind::RetryAfter => "chat, engine 503 + Retry-After: 1 on 30% (retried after 1 s)",
            Kind::StreamEngineError => "stream, engine sends an in-band error after 3 tokens",
            Kind::StreamEngineDrop => "stream, engine drops the connection after 3 tokens",
            Kind::EngineDown => "chat, engine always answers 500",
            Kind::UnknownModel => "unknown model (a new name each time)",
            Kind::BadKey => "wrong API key (a new one each time)",
            Kind::NoKey => "no Authorization header",
            Kind::RpmLimited => "key with rpm = 120",
            Kind::ConcurrencyLimited => "stream, key with max_concurrent = 1",
            Kind::QuotaSpent => "key with daily_tokens = 2000",
            Kind::BadJson => "truncated JSON body",
            Kind::HangUpEarly => "client hangs up right after sending",
        }
    }

    pub fn read(self) -> Read {
        match self {
            Kind::StreamHangUp => Read::FirstEvent,
            Kind::HangUpEarly => Read::Nothing,
            _ => Read::Full,
        }
    }

    /// The whole request, head and body, for request number `i`.
    pub fn wire(self, i: u64) -> Vec<u8> {
        let main = Some("sk-bench");
        let (path, key, body): (&str, Option<&str>, String) = match self {
            Kind::Chat | Kind::HangUpEarly => (CHAT, main, chat("m", "")),
            Kind::Stream => (CHAT, main, chat("m", r#","stream":true"#)),
            Kind::StreamBesideFaults => (CHAT, main, chat("midstream", r#","stream":true"#)),
            Kind::StreamHangUp => (
                CHAT,
                main,
                format!(
                    r#"{{"model":"m",{HELLO},"max_tokens":64,"stream":true,"sim":{{"itl_ms":2}}}}"#
                ),
            ),
            Kind::Cached => (
                CHAT,
                main,
                format!(
                    r#"{{"model":"m","messages":[{{"role":"user","content":"cache me {}"}}],"max_tokens":16,"temperature":0}}"#,
                    i % 64
                ),
            ),
            Kind::Completions => (
                "/v1/completions",
                main,
                r#"{"model":"m","prompt":"once upon a time","max_tokens":16}"#.to_owned(),
            ),
            Kind::Embeddings => (
                "/v1/embeddings",
                main,
                r#"{"model":"m","input":["the quick brown fox","jumps"]}"#.to_owned(),
            ),
            Kind::Models => return get("/v1/models", main),
            Kind::Retried => (
                CHAT,
                main,
                chat("flaky", r#","sim":{"error_rate":0.1,"fail_status":500}"#),
            ),
            Kind::RetryAfter => (
                CHAT,
                main,
                chat("flaky", r#","sim":{"error_rate":0.3,"fail_status":503}"#),
            ),
            Kind::StreamEngineError => (
                CHAT,
                main,
                chat("midstream", r#","stream":true,"sim":{"error_after":3}"#),
            ),
            Kind::StreamEngineDrop => (
                CHAT,
                main,
                chat("midstream", r#","stream":true,"sim":{"drop_after":3}"#),
            ),
            Kind::EngineDown => (CHAT, main, chat("broken", r#","sim":{"status":500}"#)),
            Kind::UnknownModel => (CHAT, main, chat(&format!("nope-{i}"), "")),
            Kind::BadKey => {
                let key = format!("sk-wrong-{i}");
                return post(CHAT, Some(&key), &chat("m", ""));
            }
            Kind::NoKey => (CHAT, None, chat("m", "")),
            Kind::RpmLimited => (CHAT, Some("sk-soak-tight"), chat("m", "")),
            Kind::ConcurrencyLimited => (
                CHAT,
                Some("sk-soak-narrow"),
                chat("m", r#","stream":true,"sim":{"itl_ms":1}"#),
            ),
            Kind::QuotaSpent => (CHAT, Some("sk-soak-quota"), chat("m", "")),
            Kind::BadJson => (
                CHAT,
                main,
                r#"{"model":"m","messages":[{"role":"#.to_owned(),
            ),
        };
        post(path, key, &body)
    }

    /// Whether `a` is an answer this kind may get. Errors must be OpenAI-shaped; streams that
    /// complete must end with `[DONE]`.
    pub fn expected(self, a: &Answer) -> bool {
        let err = |codes: &[u16]| codes.contains(&a.status) && a.is_error_shaped();
        let full_stream = || a.status == 200 && a.has(b"data: [DONE]") && a.events() >= 2;
        // A stream that failed after its first chunk: one in-band error event, then [DONE].
        let broken_stream =
            || a.status == 200 && a.has(b"data: {\"error\":") && a.has(b"data: [DONE]");
        match self {
            Kind::Chat | Kind::Cached | Kind::Completions | Kind::Embeddings | Kind::Models => {
                a.status == 200 && a.body.starts_with(b"{")
            }
            Kind::Stream => full_stream(),
            // Its model's breaker opens now and then (a run of failing streams).
            Kind::StreamBesideFaults => full_stream() || err(&[503]),
            Kind::StreamHangUp => a.status == 200 && a.has(b"data: "),
            // Retries hide most failures; the rest exhaust the attempts or the retry budget,
            // or meet the model's open breaker.
            Kind::Retried | Kind::RetryAfter => a.status == 200 || err(&[500, 502, 503]),
            Kind::StreamEngineError | Kind::StreamEngineDrop => {
                broken_stream() || err(&[500, 502, 503])
            }
            Kind::EngineDown => err(&[500, 502, 503]),
            Kind::UnknownModel => err(&[404]),
            // An unknown key is looked up among the run-time keys on Redis: when that takes
            // longer than `redis.timeout_ms` (50 ms) the key cannot be verified, and the
            // documented answer is 503 `shared_state_unavailable` (docs/keys-and-limits.md).
            Kind::BadKey => err(&[401]) || (err(&[503]) && a.has(b"shared_state_unavailable")),
            Kind::NoKey => err(&[401]),
            Kind::RpmLimited | Kind::QuotaSpent => {
                (a.status == 200 && a.body.starts_with(b"{")) || err(&[429])
            }
            Kind::ConcurrencyLimited => full_stream() || err(&[429]),
            Kind::BadJson => err(&[400]),
            Kind::HangUpEarly => true,
        }
    }
}

const CHAT: &str = "/v1/chat/completions";

fn chat(model: &str, extra: &str) -> String {
    format!(r#"{{"model":"{model}",{HELLO},"max_tokens":16{extra}}}"#)
}

fn head(method: &str, path: &str, key: Option<&str>) -> String {
    let mut w = format!("{method} {path} HTTP/1.1\r\nhost: soak\r\n");
    if let Some(k) = key {
        w.push_str("authorization: Bearer ");
        w.push_str(k);
        w.push_str("\r\n");
    }
    w
}

fn post(path: &str, key: Option<&str>, body: &str) -> Vec<u8> {
    let mut w = head("POST", path, key);
    w.push_str("content-type: application/json\r\ncontent-length: ");
    w.push_str(&body.len().to_string());
    w.push_str("\r\n\r\n");
    w.push_str(body);
    w.into_bytes()
}

fn get(path: &str, key: Option<&str>) -> Vec<u8> {
    let mut w = head("GET", path, key);
    w.push_str("\r\n");
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_add_up_to_a_hundred_and_the_stride_visits_every_slot() {
        let t = table();
        assert_eq!(t.len(), 100);
        let mut seen = [false; 100];
        for i in 0..100 {
            seen[((i * 37) % 100) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        for &(k, w) in WEIGHTS {
            let n = (0..1000).filter(|&i| kind_of(i, &t) == k).count();
            assert_eq!(n, w as usize * 10, "{k:?}");
        }
    }

    #[test]
    fn requests_are_well_formed_http() {
        for &(k, _) in WEIGHTS {
            let wire = k.wire(7);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(len) = req.parse(&wire).unwrap() else {
                panic!("{k:?}: incomplete head");
            };
            let declared = req
                .headers
                .iter()
                .find(|h| h.name == "content-length")
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            assert_eq!(wire.len() - len, declared, "{k:?}");
        }
    }

    #[test]
    fn expectations_reject_what_they_should() {
        let ok = Answer {
            status: 200,
            body: b"{\"id\":1}".to_vec(),
            ..Answer::default()
        };
        let not_found = Answer {
            status: 404,
            body: br#"{"error":{"message":"no","type":"invalid_request_error"}}"#.to_vec(),
            ..Answer::default()
        };
        let bare_404 = Answer {
            status: 404,
            body: b"not found".to_vec(),
            ..Answer::default()
        };
        assert!(Kind::Chat.expected(&ok));
        assert!(!Kind::Chat.expected(&not_found));
        assert!(Kind::UnknownModel.expected(&not_found));
        assert!(
            !Kind::UnknownModel.expected(&bare_404),
            "errors must be OpenAI-shaped"
        );
        assert!(!Kind::UnknownModel.expected(&ok));
        let cut = Answer {
            status: 200,
            body: b"data: {\"id\":1}\n\n".to_vec(),
            ..Answer::default()
        };
        assert!(
            !Kind::Stream.expected(&cut),
            "a stream must end with [DONE]"
        );
    }
}
