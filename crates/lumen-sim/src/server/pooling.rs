//! vLLM's pooling endpoints: `/score` and `/v1/score` (a relevance score per pair of texts),
//! `/classify` (a label and class probabilities per input) and `/pooling` (a vector per
//! input), in vLLM's shapes with `usage`, so a gateway's pass-through of them (and its billing
//! on their usage) is tested against an engine that answers them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use serde::Deserialize;

use super::{Body, admit, error, field_required, json, json_str, parse, start};
use crate::config::Faults;
use crate::{State, text};

/// A text or a list of texts (vLLM accepts both wherever it takes inputs).
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn all(&self) -> Vec<&str> {
        match self {
            Texts::One(t) => vec![t.as_str()],
            Texts::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize)]
struct ScoreRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    text_1: Option<Texts>,
    #[serde(default)]
    text_2: Option<Texts>,
    #[serde(default)]
    sim: Option<Faults>,
}

#[derive(Deserialize)]
struct InputRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Texts>,
    #[serde(default)]
    sim: Option<Faults>,
}

/// Which pooling endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pooling {
    Score,
    Classify,
    Pool,
}

pub(super) async fn answer(state: Arc<State>, what: Pooling, body: &[u8]) -> Response<Body> {
    match what {
        Pooling::Score => score(state, body).await,
        Pooling::Classify | Pooling::Pool => per_input(state, what, body).await,
    }
}

fn usage(tokens: u64) -> String {
    format!(r#""usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens},"completion_tokens":0}}"#)
}

async fn score(state: Arc<State>, body: &[u8]) -> Response<Body> {
    let req: ScoreRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let (Some(t1), Some(t2)) = (req.text_1, req.text_2) else {
        return field_required("text_1", &faults);
    };
    let (left, right) = (t1.all(), t2.all());
    // vLLM pairs one text_1 with every text_2, or the two lists item by item.
    let pairs: Vec<(&str, &str)> = match (left.len(), right.len()) {
        (1, _) => right.iter().map(|r| (left[0], *r)).collect(),
        (l, r) if l == r => left.iter().copied().zip(right.iter().copied()).collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "text_1 and text_2 must have the same length, or text_1 a single text",
                faults.flat_error,
            );
        }
    };
    let _running = start(&state, &faults, state.cfg.ttft).await;
    let mut tokens = 0;
    let mut out = format!(
        r#"{{"id":"score-{}","object":"list","model":{},"data":["#,
        state.requests.load(Ordering::Relaxed),
        json_str(&model)
    );
    for (i, (a, b)) in pairs.iter().enumerate() {
        tokens += text::count_tokens(a) + text::count_tokens(b);
        let s = text::relevance(&text::words(a), b);
        let s = serde_json::to_string(&s).unwrap_or_else(|_| "0.0".to_owned());
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(
            out,
            r#"{comma}{{"index":{i},"object":"score","score":{s}}}"#
        );
    }
    let _ = write!(out, "],{}}}", usage(tokens));
    done(&state, tokens);
    json(StatusCode::OK, out)
}

async fn per_input(state: Arc<State>, what: Pooling, body: &[u8]) -> Response<Body> {
    let req: InputRequest = match parse(body) {
        Ok(r) => r,
        Err(reject) => return reject.response(),
    };
    let (faults, model) = match admit(&state, req.sim.as_ref(), req.model.as_deref()) {
        Ok(admitted) => admitted,
        Err(reject) => return reject.response(),
    };
    let Some(input) = req.input else {
        return field_required("input", &faults);
    };
    let _running = start(&state, &faults, state.cfg.ttft).await;
    let (prefix, object) = match what {
        Pooling::Classify => ("classify", "classification"),
        _ => ("pool", "pooling"),
    };
    let mut tokens = 0;
    let mut out = format!(
        r#"{{"id":"{prefix}-{}","object":"list","model":{},"data":["#,
        state.requests.load(Ordering::Relaxed),
        json_str(&model)
    );
    for (i, t) in input.all().iter().enumerate() {
        let n = text::count_tokens(t);
        tokens += n;
        // Deterministic: the share of words with an even length is the "positive" class.
        let words = text::words(t);
        let even = words.iter().filter(|w| w.len() % 2 == 0).count();
        let p = if words.is_empty() {
            0.5
        } else {
            even as f64 / words.len() as f64
        };
        let comma = if i > 0 { "," } else { "" };
        let _ = match what {
            Pooling::Classify => write!(
                out,
                r#"{comma}{{"index":{i},"object":"{object}","label":"{}","probs":[{},{}],"num_classes":2}}"#,
                if p >= 0.5 { "positive" } else { "negative" },
                1.0 - p,
                p
            ),
            _ => write!(
                out,
                r#"{comma}{{"index":{i},"object":"{object}","data":[{p},{},{}]}}"#,
                1.0 - p,
                n as f64
            ),
        };
    }
    let _ = write!(out, "],{}}}", usage(tokens));
    done(&state, tokens);
    json(StatusCode::OK, out)
}

fn done(state: &State, tokens: u64) {
    state.prompt_tokens.fetch_add(tokens, Ordering::Relaxed);
    state.success.fetch_add(1, Ordering::Relaxed);
}
