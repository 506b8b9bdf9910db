//! OpenAI's Responses API served natively with state, as vLLM does with
//! `VLLM_ENABLE_RESPONSES_API_STORE`: the same deterministic answer as chat, as a `response`
//! object or its typed event stream (`response.created`, `response.in_progress`, the message
//! item and its text part, one `response.output_text.delta` per token, their `.done` events,
//! `response.completed` with the usage), each event with its `sequence_number`. Responses are
//! kept (unless `store: false`): `previous_response_id` adds the stored conversation's tokens
//! to the prompt, and `GET`/`DELETE /v1/responses/{id}` and `input_items` read and drop them;
//! an unknown id is a 404.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Body, Running, admit, answer_len, error, now};
use crate::State;
use crate::config::Faults;
use crate::stored::Stored;
use crate::text;

/// Ids unique across every simulator in the process (two engines never name the same
/// response, as real ones do not).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}_{t:x}{n:04x}")
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    sim: Option<Faults>,
}

fn not_found(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
        false,
    )
}

/// The input as items: a string is one user message.
fn input_items(input: &RawValue, id: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(input.get()) {
        Ok(Value::String(text)) => vec![json!({
            "id": format!("msg_in_{id}"),
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })],
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => Vec::new(),
    }
}

/// `POST /v1/responses`.
pub(super) async fn create(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: Request<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("invalid JSON: {e}");
            return error(StatusCode::BAD_REQUEST, &msg, false);
        }
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(input) = req.input else {
        return error(StatusCode::BAD_REQUEST, "Field required: input", false);
    };
    let before = match &req.previous_response_id {
        None => 0,
        Some(prev) => match state.responses.get(prev) {
            Some(stored) => stored.tokens,
            None => return not_found(prev),
        },
    };
    let max_tokens = req
        .max_output_tokens
        .unwrap_or(state.cfg.default_max_tokens);
    let n = answer_len(max_tokens, state.cfg.answer_tokens);
    let prompt = before
        + text::estimate_tokens(
            input.get().len() + req.instructions.as_deref().map_or(0, str::len),
        );
    let id = new_id("resp");
    let response = Answer {
        id: id.clone(),
        msg: format!("msg_{}", &id[5..]),
        model,
        created: now(),
        n,
        prompt,
        previous: req.previous_response_id.clone(),
        store: req.store.unwrap_or(true),
    };
    let kept = response
        .store
        .then(|| (input_items(input, &id), prompt + u64::from(n)));
    let ttft = faults
        .ttft_ms
        .map(Duration::from_millis)
        .unwrap_or(state.cfg.ttft);
    let itl = faults
        .itl_ms
        .map(Duration::from_millis)
        .unwrap_or(state.cfg.itl);
    let running = Running::new(&state);
    if req.stream.unwrap_or(false) {
        return stream(state, response, kept, (ttft, itl), &faults, running);
    }
    tokio::time::sleep(ttft + itl * n.saturating_sub(1)).await;
    let whole = response.object("completed", n, true);
    response.finish(&state, kept, &whole);
    drop(running);
    super::json(StatusCode::OK, whole.to_string())
}

/// What one answer is made of.
struct Answer {
    id: String,
    msg: String,
    model: String,
    created: u64,
    n: u32,
    prompt: u64,
    previous: Option<String>,
    store: bool,
}

impl Answer {
    /// The response object with the first `upto` tokens of text (`usage` once done).
    fn object(&self, status: &str, upto: u32, done: bool) -> Value {
        let output = if upto == 0 && !done {
            Vec::new()
        } else {
            vec![self.item(upto, if done { "completed" } else { "in_progress" })]
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "previous_response_id": self.previous,
            "store": self.store,
            "usage": if done {
                json!({
                    "input_tokens": self.prompt,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": self.n,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": self.prompt + u64::from(self.n),
                })
            } else {
                Value::Null
            },
        })
    }

    fn item(&self, upto: u32, status: &str) -> Value {
        json!({
            "id": self.msg,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text::answer(upto), "annotations": []}],
        })
    }

    /// Keeps the answer (when stored) and counts it, as a finished request.
    fn finish(&self, state: &State, kept: Option<(Vec<Value>, u64)>, whole: &Value) {
        if let Some((input, tokens)) = kept {
            let stored = Stored {
                json: whole.clone(),
                input,
                tokens,
            };
            state.responses.put(self.id.clone(), stored);
        }
        state
            .prompt_tokens
            .fetch_add(self.prompt, Ordering::Relaxed);
        state
            .generation_tokens
            .fetch_add(u64::from(self.n), Ordering::Relaxed);
        state.success.fetch_add(1, Ordering::Relaxed);
    }
}

fn event(kind: &str, seq: u64, mut data: Value) -> Bytes {
    if let Some(obj) = data.as_object_mut() {
        obj.insert("type".to_owned(), json!(kind));
        obj.insert("sequence_number".to_owned(), json!(seq));
    }
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

enum Step {
    Wait(Duration),
    /// Token `i`'s delta.
    Delta(u32),
    /// Everything after the last delta, up to `response.completed`.
    End,
    /// `drop_after`: the connection is cut.
    Fail,
    /// `error_after`: `response.failed`, as an engine whose generation failed ends a stream.
    Failed,
    /// `garbage_after`: a frame that is not JSON.
    Garbage,
}

/// The fault at token `i` of a Responses stream, as for chat (`fault_at` in `server.rs`).
fn fault_at(faults: &Faults, i: u32) -> Option<Step> {
    if faults.drop_after == Some(i) {
        return Some(Step::Fail);
    }
    if faults.garbage_after == Some(i) {
        return Some(Step::Garbage);
    }
    faults
        .error_after
        .filter(|at| *at == i)
        .map(|_| Step::Failed)
}

fn stream(
    state: Arc<State>,
    answer: Answer,
    kept: Option<(Vec<Value>, u64)>,
    (ttft, itl): (Duration, Duration),
    faults: &Faults,
    running: Running,
) -> Response<Body> {
    let mut steps = vec![Step::Wait(ttft)];
    let mut cut = false;
    for i in 0..answer.n {
        if let Some(fault) = fault_at(faults, i) {
            steps.push(fault);
            cut = true;
            break;
        }
        if i > 0 {
            steps.push(Step::Wait(itl));
        }
        steps.push(Step::Delta(i));
    }
    if !cut {
        steps.push(Step::End);
    }
    let opening = [
        event(
            "response.created",
            0,
            json!({"response": answer.object("in_progress", 0, false)}),
        ),
        event(
            "response.in_progress",
            1,
            json!({"response": answer.object("in_progress", 0, false)}),
        ),
        event(
            "response.output_item.added",
            2,
            json!({"output_index": 0, "item": {"id": answer.msg, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        event(
            "response.content_part.added",
            3,
            json!({"item_id": answer.msg, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    let mut first = Some(opening.concat());
    let live = (state, answer, kept, running, 4u64);
    let frames = futures::stream::unfold(
        (steps.into_iter(), live),
        move |(mut steps, mut live)| {
            let opening = first.take();
            async move {
                let (state, answer, kept, _running, seq) = &mut live;
                loop {
                    match steps.next()? {
                        Step::Wait(d) => {
                            if !d.is_zero() {
                                tokio::time::sleep(d).await;
                            }
                        }
                        Step::Delta(i) => {
                            let delta = event(
                                "response.output_text.delta",
                                *seq,
                                json!({"item_id": answer.msg, "output_index": 0, "content_index": 0, "delta": text::token(i)}),
                            );
                            *seq += 1;
                            let mut out = opening.map(|o| o.to_vec()).unwrap_or_default();
                            out.extend_from_slice(&delta);
                            return Some((Ok(Frame::data(Bytes::from(out))), (steps, live)));
                        }
                        Step::Fail => {
                            // Let hyper flush what was produced before the cut.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            let err = std::io::Error::new(
                                std::io::ErrorKind::ConnectionAborted,
                                "injected drop",
                            );
                            return Some((Err(err), (steps, live)));
                        }
                        Step::Garbage => {
                            let mut out = opening.map(|o| o.to_vec()).unwrap_or_default();
                            out.extend_from_slice(
                                b"event: response.output_text.delta\ndata: {this is not json\n\n",
                            );
                            return Some((Ok(Frame::data(Bytes::from(out))), (steps, live)));
                        }
                        Step::Failed => {
                            let mut failed = answer.object("failed", 0, false);
                            failed["error"] = json!({"code": "server_error", "message": "injected engine failure"});
                            let mut out = opening.map(|o| o.to_vec()).unwrap_or_default();
                            out.extend_from_slice(&event(
                                "response.failed",
                                *seq,
                                json!({"response": failed}),
                            ));
                            *seq += 1;
                            return Some((Ok(Frame::data(Bytes::from(out))), (steps, live)));
                        }
                        Step::End => {
                            let text = text::answer(answer.n);
                            let whole = answer.object("completed", answer.n, true);
                            let mut out = opening.map(|o| o.to_vec()).unwrap_or_default();
                            for (kind, data) in [
                                (
                                    "response.output_text.done",
                                    json!({"item_id": answer.msg, "output_index": 0, "content_index": 0, "text": text}),
                                ),
                                (
                                    "response.content_part.done",
                                    json!({"item_id": answer.msg, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
                                ),
                                (
                                    "response.output_item.done",
                                    json!({"output_index": 0, "item": answer.item(answer.n, "completed")}),
                                ),
                                ("response.completed", json!({"response": whole})),
                            ] {
                                out.extend_from_slice(&event(kind, *seq, data));
                                *seq += 1;
                            }
                            answer.finish(state, kept.take(), &whole);
                            return Some((Ok(Frame::data(Bytes::from(out))), (steps, live)));
                        }
                    }
                }
            }
        },
    );
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET`/`DELETE /v1/responses/{id}`, `GET .../input_items`, `POST .../cancel`; `None` for a
/// path that is none of them.
pub(super) fn stored(state: &State, method: &Method, path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/v1/responses/")?;
    let (id, what) = match rest.split_once('/') {
        Some((id, what)) => (id, Some(what)),
        None => (rest, None),
    };
    if id.is_empty() {
        return None;
    }
    let ok = |v: Value| super::json(StatusCode::OK, v.to_string());
    Some(match (method, what) {
        (&Method::GET, None) => match state.responses.get(id) {
            Some(s) => ok(s.json),
            None => not_found(id),
        },
        (&Method::DELETE, None) => {
            if state.responses.remove(id) {
                ok(json!({"id": id, "object": "response", "deleted": true}))
            } else {
                not_found(id)
            }
        }
        (&Method::GET, Some("input_items")) => match state.responses.get(id) {
            Some(s) => ok(json!({
                "object": "list",
                "data": s.input,
                "first_id": s.input.first().and_then(|i| i.get("id")).cloned(),
                "last_id": s.input.last().and_then(|i| i.get("id")).cloned(),
                "has_more": false,
            })),
            None => not_found(id),
        },
        (&Method::POST, Some("cancel")) => match state.responses.get(id) {
            Some(_) => error(
                StatusCode::BAD_REQUEST,
                "Cannot cancel a synchronous response.",
                false,
            ),
            None => not_found(id),
        },
        _ => return None,
    })
}
