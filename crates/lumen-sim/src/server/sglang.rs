//! SGLang's `GET /get_load` (with `SimConfig::sglang_get_load`): what SGLang's router polls
//! for its `power_of_two` policy, one object per data-parallel rank, as SGLang's scheduler
//! answers it: `num_reqs` (running plus waiting), `num_waiting_reqs`, and `num_tokens`, the
//! KV-cache tokens held by requests (cached but unreferenced ones are evictable, so not held)
//! plus the tokens of the waiting requests. The router sums `num_tokens` over the ranks and
//! sends each request to the lighter of two engines drawn at random; without the route it
//! reads every engine's load as -1 and the draw alone decides.
//!
//! Without the engine model there are no tokens to report: running requests only.

use std::sync::atomic::Ordering;

use http::{Response, StatusCode};

use super::{Body, json};
use crate::State;

pub(super) fn get_load(state: &State) -> Response<Body> {
    let (running, waiting, tokens) = match state.engine.as_ref().map(crate::engine::Engine::report)
    {
        Some(r) => (r.running, r.waiting, r.used_tokens + r.waiting_tokens),
        None => (state.running.load(Ordering::Relaxed), 0, 0),
    };
    json(
        StatusCode::OK,
        format!(
            r#"[{{"dp_rank":0,"num_reqs":{},"num_waiting_reqs":{waiting},"num_tokens":{tokens}}}]"#,
            running + waiting
        ),
    )
}
