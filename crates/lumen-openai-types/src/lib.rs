//! OpenAI-compatible wire types for Lumen.
//!
//! Plain data plus two small codecs. Nothing here does I/O or knows HTTP, so an embedder, a backend
//! and the server can all share these types without pulling in a runtime.
//!
//! # Layout
//! - [`chat`], [`completions`], [`embeddings`], [`models`]: requests, responses and stream chunks.
//!   Every request keeps unknown fields in `extra` so engine-specific parameters (`top_k`,
//!   `guided_json`, `chat_template_kwargs`, ...) are forwarded unchanged. Request parts Lumen does
//!   not read (unknown fields, `messages`, prompt and input arrays) stay raw JSON, so parsing a
//!   body costs at most a small multiple of its size whatever its shape (`tests/alloc.rs`).
//! - [`continuation`]: the request that asks an engine to finish another's partial answer, and
//!   what each stream chunk adds to the answer.
//! - [`multipart`]: the sans-IO `multipart/form-data` scanner of the audio endpoints, and the
//!   form forwarded byte for byte with its `model` replaced in place.
//! - [`json`]: requests and answers of the engine endpoints Lumen routes without reading their
//!   shape (tokenize, detokenize, rerank).
//! - [`error`]: the OpenAI error body, and a tolerant parser for the shapes engines really send.
//! - [`request`]: body parsing that reports the failing JSON path as OpenAI's `param`.
//! - [`Source`]: a parsed request's own bytes, so a chat, completions or embeddings request is
//!   forwarded as the client sent it with only what Lumen changed spliced in
//!   ([`Forwardable::forwarded`]).
//! - [`sse`]: a sans-IO server-sent-events decoder, correct at any byte boundary, and the encoder.
//! - [`stream`]: [`stream::Chunk`], a parsed stream event that remembers its original bytes so
//!   unchanged chunks are passed through without re-serialising.
//!
//! # Must not depend on
//! Any async runtime, hyper, or another Lumen crate.

pub mod chat;
pub mod completions;
pub mod continuation;
pub mod embeddings;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod json;
pub mod models;
pub mod multipart;
mod raw;
pub mod request;
pub mod responses;
mod source;
pub mod sse;
pub mod stream;
mod util;

pub use chat::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatMessage, MessageContent, MessageView, Messages,
};
pub use completions::{
    CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse, Prompt,
};
pub use embeddings::{
    Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
};
pub use error::{ErrorBody, ErrorObject};
pub use json::{JsonAnswer, JsonBody, JsonRequest};
pub use models::{Model, ModelList};
pub use raw::{RawExtra, RawJson};
pub use request::RequestError;
pub use source::{Forwardable, Source};
pub use stream::{Chunk, HasModel, HasUsage, Reply, StreamOptions, Usage};

/// Unknown JSON fields of response types, as a map of values. Requests (and anything that holds
/// a message) use [`RawExtra`] instead: raw JSON, so a huge unknown field costs its own size.
pub type Extra = serde_json::Map<String, serde_json::Value>;
