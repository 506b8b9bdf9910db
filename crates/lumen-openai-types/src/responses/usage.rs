//! Token counts of native Responses answers, for limits, quotas and metrics.
//!
//! Only `usage` is read; every other field is skipped without being kept, so billing a large
//! answer costs a scan, not a parse into values.

use serde::Deserialize;

use super::ResponseUsage;

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

/// `usage` of a whole (non-streamed) Responses answer; `None` when absent or malformed.
pub fn usage_of_answer(body: &[u8]) -> Option<ResponseUsage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

/// `response.usage` of a stream event's data when it is the terminal `response.completed`,
/// `response.incomplete` or `response.failed` (the only events that carry the final counts).
pub fn usage_of_event(data: &[u8]) -> Option<ResponseUsage> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        response: Option<WithUsage>,
    }
    let e = serde_json::from_slice::<Event<'_>>(data).ok()?;
    match e.kind.as_ref() {
        "response.completed" | "response.incomplete" | "response.failed" => e.response?.usage,
        _ => None,
    }
}
