//! A request's prompt as `cache_aware` routing reads it: in the order an engine's chat template
//! renders it (system and developer messages, then the tools, then the conversation), read
//! from the request's JSON one message at a time, and the client's session hint.

use lumen_backend::RequestContext;
use lumen_governance::{PromptHasher, PromptKey};
use lumen_openai_types::{ChatCompletionRequest, Prompt, RawExtra};

/// At most this much prompt is hashed into blocks: past about 64k tokens where a prompt was
/// cached no longer changes where it should go, and reading it must stay cheap.
const MAX_PROMPT: usize = 256 * 1024;

/// The client's hint of which conversation a request belongs to, strongest first: a session
/// header (`x-session-id`, or an agent client's own, which the server maps to it), OpenAI's
/// `prompt_cache_key` (Codex sets it to its conversation id), then `user`.
pub(crate) fn session_hint<'a>(
    cx: &'a RequestContext,
    extra: &'a RawExtra,
    user: Option<&'a String>,
) -> Option<String> {
    cx.session_id
        .clone()
        .or_else(|| extra.get_as::<String>("prompt_cache_key"))
        .or_else(|| user.cloned())
        .filter(|s| !s.is_empty())
}

/// A chat request's routing key. `key_bytes` caps how much of the first message after the
/// shared section names the conversation (`routing.prefix_bytes`).
pub(crate) fn chat(
    req: &ChatCompletionRequest,
    cx: &RequestContext,
    key_bytes: usize,
) -> PromptKey {
    let mut h = PromptHasher::new(MAX_PROMPT, key_bytes);
    let tools = req.extra.get("tools").map(|t| t.get().as_bytes());
    let mut shared = true;
    let mut read = 0;
    let mut text = Vec::new();
    for m in req.messages.views() {
        if read >= MAX_PROMPT {
            break;
        }
        text.clear();
        m.text_into(&mut text, MAX_PROMPT - read);
        read += text.len();
        if shared && (m.role == "system" || m.role == "developer") {
            h.shared(&m.role, &text);
            continue;
        }
        if shared {
            shared = false;
            if let Some(t) = tools {
                h.shared("tools", t);
            }
        }
        h.message(&m.role, &text);
    }
    if shared {
        if let Some(t) = tools {
            h.shared("tools", t);
        }
    }
    let session = session_hint(cx, &req.extra, req.user.as_ref());
    h.finish(session.as_deref())
}

/// A completions request's routing key: the prompt is plain text, its start names it.
pub(crate) fn completion(
    prompt: &Prompt,
    extra: &RawExtra,
    user: Option<&String>,
    cx: &RequestContext,
    key_bytes: usize,
) -> PromptKey {
    let mut h = PromptHasher::new(MAX_PROMPT, key_bytes);
    h.text(&prompt.leading_bytes(MAX_PROMPT));
    let session = session_hint(cx, extra, user);
    h.finish(session.as_deref())
}

#[cfg(test)]
mod tests;
