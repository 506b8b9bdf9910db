//! Pieces of the single HTTP mapping that are easiest to check directly.

use super::*;
#[test]
fn rate_limit_values_are_plain_decimals() {
    assert_eq!(decimal(0, ""), "0");
    assert_eq!(decimal(60, "s"), "60s");
    assert_eq!(decimal(u64::MAX, ""), "18446744073709551615");
    assert_eq!(decimal(u64::MAX, "s"), "18446744073709551615s");
}

/// An upstream's "overloaded" (529, Anthropic's dialect) reaches an OpenAI client as the 503
/// it means, with the engine's `Retry-After`; other unknown 5xx stay 502.
#[test]
fn an_upstreams_529_is_a_503() {
    let up = |status| {
        ApiError::from(lumen_backend::BackendError::Upstream {
            backend: "b".into(),
            status,
            error: Box::default(),
            retry_after: Some(std::time::Duration::from_secs(3)),
        })
    };
    let e = up(529);
    assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.error.code.as_deref(), Some("upstream_unavailable"));
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(3)));
    assert_eq!(up(599).status, http::StatusCode::BAD_GATEWAY);
}
