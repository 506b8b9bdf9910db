//! Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) for Lumen.
//!
//! Claude Code and the Anthropic SDKs speak this API. Engines that serve it natively (vLLM,
//! SGLang, llama.cpp) get the client's body unchanged and Lumen only reads the usage of their
//! answer ([`usage`]); engines that do not (TGI, Ollama, generic OpenAI-compatible servers) get a
//! chat completion request translated from it ([`translate`]), and their answer is translated
//! back, streamed ones through a sans-IO state machine ([`translate::StreamTranslator`]).
//!
//! # Layout
//! - [`request`]: the request body, parsed tolerantly (unknown fields are kept, not refused) and
//!   validated with the real API's rules; mistakes are a [`RequestError`] naming the field.
//! - [`response`]: the `message` object, content blocks, usage, `count_tokens`' answer.
//! - [`event`]: stream events and their `event:`/`data:` framing.
//! - [`error`]: the error body and the HTTP status → Anthropic error type mapping.
//! - [`ids`]: the reversible mapping between engine tool-call ids and `toolu_` ids.
//! - [`translate`]: Messages ⇄ chat completions, pure functions and the stream state machine.
//! - [`usage`]: billing usage read from a native answer (`message_start`, `message_delta`).
//! - [`native`]: an answer or stream event as relayed, on either path, with its usage read.
//!
//! # Must not depend on
//! Any async runtime, hyper, or a Lumen crate other than `lumen-openai-types`.

pub mod error;
pub mod event;
pub mod ids;
pub mod native;
pub mod request;
pub mod response;
pub mod translate;
pub mod usage;

pub use error::{ErrorBody, ErrorObject, ErrorType, RequestError};
pub use event::{Delta, MessageDelta, StreamEvent};
pub use native::NativeEvent;
pub use request::{
    ContentBlock, ImageSource, Message, MessageContent, MessagesRequest, ResultBlock, Role, System,
    Thinking, Tool, ToolChoice, ToolResultContent,
};
pub use response::{CountTokensResponse, MessagesResponse, ResponseBlock, StopReason, Usage};
pub use translate::{
    ReplyContext, ReplyError, StreamTranslator, ThinkingStyle, TranslateOptions, Translated,
};
pub use usage::NativeUsage;
