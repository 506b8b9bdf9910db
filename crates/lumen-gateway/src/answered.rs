//! A non-streamed answer as the attempt loop gives it to an operation.

use lumen_openai_types::Reply;

/// A non-streamed answer, and the fallback model that gave it when it is not the requested
/// model's answer (then it is never cached under the requested model's key).
pub struct Answered<T> {
    pub reply: Reply<T>,
    pub fell_back: Option<String>,
    /// The answer's content type when it is not JSON (an audio transcription as text);
    /// `None` for JSON.
    pub content_type: Option<Box<str>>,
    /// The backend that answered (a native Responses answer is kept there: its id is mapped
    /// to it).
    pub backend: String,
}
