//! OpenAI's Responses API passed through to engines that serve `/v1/responses` themselves
//! ([`lumen_backend::Backend::native_responses`]).
//!
//! The client's body goes to the engine unchanged but for `model`, and its answer or events
//! come back as it sent them ([`NativeResponse`]), billed by the Responses usage they carry.
//! The engine keeps the response: a later `previous_response_id`, `GET`, `DELETE`, `cancel` or
//! `input_items` for it must reach that engine, so a request that continues one names its
//! backend ([`ResponsesCall::pin`]) and is served there or not at all.
//!
//! Which requests come here is the server's choice, once per request (see ARCHITECTURE.md):
//! the others are translated to chat completions there, with Lumen's own store.

use bytes::Bytes;
use lumen_backend::BackendError;
use lumen_openai_types::responses::NativeResponse;
use lumen_openai_types::{HasModel, JsonAnswer, JsonBody, Reply};

use crate::upstream::Upstream;

/// The engine path of the Responses API.
pub const RESPONSES_PATH: &str = "/v1/responses";

/// A Responses request for an engine that serves the API: the client's body (its `model` the
/// one each attempt splices in), and what the gateway reads from it.
#[derive(Debug, Clone)]
pub struct ResponsesCall {
    pub body: JsonBody,
    pub stream: bool,
    /// `max_output_tokens`: the completion budget the limits reserve.
    pub max_output_tokens: Option<u32>,
    /// The backend that holds the response this request continues (`previous_response_id`):
    /// its state is there, so no other backend may serve it, retries and fallbacks included.
    pub pin: Option<String>,
}

#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    /// vLLM makes a client's `request_id` the response's id: a key could name another key's
    /// response and have Lumen map that id to itself. Refused (also when escaped: serde
    /// compares names unescaped).
    #[serde(default)]
    request_id: Option<serde::de::IgnoredAny>,
}

impl ResponsesCall {
    /// From the client's body: a JSON object with a string `model`; `stream` a boolean and
    /// `max_output_tokens` a count when present. The engine checks the rest.
    pub fn read(body: Bytes) -> Result<Self, serde_json::Error> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(serde::de::Error::custom("the body is not a JSON object"));
        }
        let peek: Peek = serde_json::from_slice(&body)?;
        if peek.request_id.is_some() {
            return Err(serde::de::Error::custom(
                "`request_id` is not accepted: an engine makes it the response's id, and ids \
                 are Lumen's to give out per key",
            ));
        }
        Ok(Self {
            body: JsonBody::parse(body)?,
            stream: peek.stream.unwrap_or(false),
            max_output_tokens: peek.max_output_tokens,
            pin: None,
        })
    }
}

impl HasModel for ResponsesCall {
    fn model(&self) -> &str {
        &self.body.model
    }
    fn model_mut(&mut self) -> &mut String {
        &mut self.body.model
    }
}

impl<'de> serde::Deserialize<'de> for ResponsesCall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Self::read(Bytes::copy_from_slice(raw.get().as_bytes())).map_err(serde::de::Error::custom)
    }
}

/// Which backends a request's attempts may use, beyond health and capacity.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Need<'a> {
    /// Any that serves the model.
    #[default]
    Any,
    /// Only those that serve the Responses API themselves.
    NativeResponses,
    /// Only this one (by name), which must serve it: it holds the response continued.
    Backend(&'a str),
}

impl<'a> Need<'a> {
    /// A Responses request's: the backend it is pinned to, else any native one.
    pub(crate) fn responses(pin: Option<&'a str>) -> Self {
        pin.map_or(Self::NativeResponses, Self::Backend)
    }

    pub(crate) fn admits(self, up: &Upstream) -> bool {
        match self {
            Self::Any => true,
            Self::NativeResponses => up.backend.native_responses(),
            Self::Backend(name) => up.backend.native_responses() && up.name == name,
        }
    }
}

/// An engine's answer: a `response` object, else a protocol error (the engine's bytes are not
/// shown to the client as an answer).
pub(crate) fn native_answer(
    reply: Reply<JsonAnswer>,
    backend: &str,
) -> Result<Reply<NativeResponse>, BackendError> {
    let json = reply.to_json().map_err(|e| protocol(backend, &e))?;
    NativeResponse::answer(&json)
        .map(Reply::new)
        .map_err(|e| protocol(backend, &e))
}

fn protocol(backend: &str, e: &dyn std::fmt::Display) -> BackendError {
    BackendError::Protocol {
        backend: backend.to_owned(),
        message: format!("the engine's answer is not a Responses object: {e}"),
    }
}

#[cfg(test)]
mod tests;
