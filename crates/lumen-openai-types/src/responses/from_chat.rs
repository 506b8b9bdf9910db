//! Chat completion answers as Responses: a whole answer as a [`Response`], a stream of chunks
//! as [`ResponseEvent`]s through [`StreamTranslator`].
//!
//! Ids are derived from the response's own id (`resp_<seed>` gives `msg_<seed>_<n>`,
//! `fc_<seed>_<n>`, `rs_<seed>_<n>`, `call_<seed>_<n>`), so a translation is a pure function of
//! its inputs and the tests compare bytes.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::event::ResponseEvent;
use super::{
    IncompleteDetails, ItemStatus, OutputItem, OutputText, ReasoningPart, Response,
    ResponseErrorBody, ResponseUsage, Status, TOOL_SEARCH, Tool,
};
use crate::chat::{ChatCompletionChunk, ChatCompletionResponse};
use crate::stream::Usage;
use crate::{Extra, RawExtra};

/// How an engine's reasoning is shown to the client.
///
/// The engine's reasoning is its whole chain of thought, which the Responses API calls
/// `reasoning_text` (vLLM and gpt-oss stream it so). OpenAI's own models only ever show a
/// `summary_text`, and some clients know only those events and ignore (or choke on) the
/// others. The gateway picks per client or per route; the text is the same either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReasoningStyle {
    /// `content: [{"type":"reasoning_text"}]`, `response.reasoning_text.*` events.
    #[default]
    Text,
    /// `summary: [{"type":"summary_text"}]`, `response.reasoning_summary_*` events.
    Summary,
}

impl ReasoningStyle {
    fn item(self, id: String, status: ItemStatus, text: Option<String>) -> OutputItem {
        let (summary, content) = match (self, text) {
            (_, None) => (Vec::new(), Vec::new()),
            (Self::Text, Some(t)) => (Vec::new(), vec![ReasoningPart::reasoning_text(t)]),
            (Self::Summary, Some(t)) => (vec![ReasoningPart::summary_text(t)], Vec::new()),
        };
        OutputItem::Reasoning {
            id,
            status,
            summary,
            content,
        }
    }
}

/// Makes the ids of one response's items.
#[derive(Debug, Clone)]
struct Ids {
    seed: String,
    next: u32,
}

impl Ids {
    fn for_response(r: &Response) -> Self {
        Self {
            seed: r.id.strip_prefix("resp_").unwrap_or(&r.id).to_owned(),
            next: 0,
        }
    }

    fn make(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}_{}_{}", self.seed, self.next);
        self.next += 1;
        id
    }
}

/// `usage` in the Responses shape, cached and reasoning counts read from chat's details.
fn usage(u: &Usage) -> ResponseUsage {
    let detail = |outer: &str, inner: &str| {
        u.extra
            .get(outer)
            .and_then(|d| d.get(inner))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    ResponseUsage {
        input_tokens: u.prompt_tokens,
        input_tokens_details: super::InputTokensDetails {
            cached_tokens: detail("prompt_tokens_details", "cached_tokens"),
        },
        output_tokens: u.completion_tokens,
        output_tokens_details: super::OutputTokensDetails {
            reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
        },
        total_tokens: u
            .total_tokens
            .max(u.prompt_tokens.saturating_add(u.completion_tokens)),
    }
}

/// Status and details for a chat `finish_reason`.
fn outcome(finish_reason: Option<&str>) -> (Status, Option<IncompleteDetails>) {
    let incomplete = |reason: &str| {
        (
            Status::Incomplete,
            Some(IncompleteDetails {
                reason: reason.to_owned(),
            }),
        )
    };
    match finish_reason {
        Some("length") => incomplete("max_output_tokens"),
        Some("content_filter") => incomplete("content_filter"),
        _ => (Status::Completed, None),
    }
}

/// A chat tool call, with `arguments` a string as OpenAI sends it or (some engines) an object.
#[derive(Deserialize)]
struct ChatToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChatFunction>,
}

#[derive(Deserialize)]
struct ChatFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Box<RawValue>>,
}

/// The arguments as text: a JSON string's contents, or any other JSON value as written.
fn arguments_text(raw: Option<&RawValue>) -> String {
    match raw {
        None => String::new(),
        Some(r) if r.get() == "null" => String::new(),
        Some(r) => serde_json::from_str::<String>(r.get()).unwrap_or_else(|_| r.get().to_owned()),
    }
}

/// Whether the request offered `name` as a custom tool (translated as a function of one
/// string, `input`), whose calls are answered as `custom_tool_call` items.
fn is_custom(tools: &[Tool], name: &str) -> bool {
    tools
        .iter()
        .any(|t| matches!(t, Tool::Custom(c) if c.name == name))
}

/// What a call of `name` answers as: a `custom_tool_call` for a custom tool, a
/// `tool_search_call` for the client's tool search, else a `function_call`.
#[derive(Clone, Copy, PartialEq)]
enum CallKind {
    Function,
    Custom,
    ToolSearch,
}

impl CallKind {
    fn of(tools: &[Tool], name: &str) -> Self {
        if is_custom(tools, name) {
            Self::Custom
        } else if name == TOOL_SEARCH && tools.iter().any(|t| matches!(t, Tool::ToolSearch(_))) {
            Self::ToolSearch
        } else {
            Self::Function
        }
    }

    /// The prefix of the item's id.
    fn prefix(self) -> &'static str {
        match self {
            Self::Function => "fc",
            Self::Custom => "ctc",
            Self::ToolSearch => "tsc",
        }
    }

    /// The item, before its arguments or input are read (streamed) or with them (whole).
    fn item(
        self,
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        args: &str,
    ) -> OutputItem {
        match self {
            Self::Function => OutputItem::FunctionCall {
                id,
                status,
                call_id,
                name,
                arguments: args.to_owned(),
            },
            Self::Custom => OutputItem::CustomToolCall {
                id,
                status,
                call_id,
                name,
                input: custom_input(args),
            },
            Self::ToolSearch => OutputItem::ToolSearchCall {
                id,
                status,
                call_id,
                arguments: search_arguments(args),
                execution: "client".to_owned(),
            },
        }
    }
}

/// A tool search call's arguments: the JSON the model wrote (`{}` when it wrote none), or its
/// text as a string when that is not JSON, so nothing it wrote is lost.
fn search_arguments(arguments: &str) -> serde_json::Value {
    if arguments.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(arguments)
        .unwrap_or_else(|_| serde_json::Value::String(arguments.to_owned()))
}

/// The free text of a custom tool's call, from the arguments a chat engine wrote for the
/// one-string function it was offered as (`{"input": "..."}`). Anything else the model wrote
/// (a bare JSON string, text that is not JSON) is taken as the input whole, so nothing it
/// wrote is lost.
fn custom_input(arguments: &str) -> String {
    #[derive(Deserialize)]
    struct Args {
        input: String,
    }
    if let Ok(a) = serde_json::from_str::<Args>(arguments) {
        return a.input;
    }
    serde_json::from_str::<String>(arguments).unwrap_or_else(|_| arguments.to_owned())
}

/// The reasoning a chat message or delta carries: `reasoning_content` (DeepSeek, vLLM before
/// 0.10, llama.cpp, SGLang) or `reasoning` (newer vLLM, Ollama).
fn raw_reasoning(extra: &RawExtra) -> Option<String> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|k| extra.get_as::<Option<String>>(k).flatten())
        .filter(|s| !s.is_empty())
}

fn delta_reasoning(extra: &Extra) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|k| extra.get(k).and_then(serde_json::Value::as_str))
        .filter(|s| !s.is_empty())
}

/// The finished response for a whole chat answer. `started` is [`Response::start`] for the
/// request; its id seeds the item ids. Only the first choice is read (a Responses request
/// asks for one). An answer with no choice becomes a `failed` response, not an error: the
/// engine, not the client, is at fault.
pub fn response_from_chat(
    mut started: Response,
    chat: &ChatCompletionResponse,
    style: ReasoningStyle,
) -> Response {
    let mut ids = Ids::for_response(&started);
    started.usage = chat.usage.as_ref().map(usage);
    let Some(choice) = chat.choices.first() else {
        started.status = Status::Failed;
        started.error = Some(ResponseErrorBody {
            code: "server_error".to_owned(),
            message: "the engine returned no choices".to_owned(),
        });
        return started;
    };
    let (status, details) = outcome(choice.finish_reason.as_deref());
    let msg = &choice.message;
    let mut output = Vec::new();
    if let Some(text) = raw_reasoning(&msg.extra) {
        output.push(style.item(ids.make("rs"), ItemStatus::Completed, Some(text)));
    }
    let calls = msg
        .extra
        .get_as::<Option<Vec<ChatToolCall>>>("tool_calls")
        .flatten()
        .unwrap_or_default();
    let text = msg.content.as_ref().map(|c| c.text()).unwrap_or_default();
    if !text.is_empty() || calls.is_empty() {
        output.push(OutputItem::Message {
            id: ids.make("msg"),
            status: ItemStatus::Completed,
            role: "assistant".to_owned(),
            content: vec![OutputText::new(text)],
        });
    }
    for call in calls {
        let f = call.function.unwrap_or(ChatFunction {
            name: None,
            arguments: None,
        });
        let name = f.name.unwrap_or_default();
        let kind = CallKind::of(&started.tools, &name);
        let id = ids.make(kind.prefix());
        let call_id = call
            .id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ids.make("call"));
        let arguments = arguments_text(f.arguments.as_deref());
        let arguments = if kind == CallKind::Function {
            non_empty_arguments(arguments)
        } else {
            arguments
        };
        output.push(kind.item(id, ItemStatus::Completed, call_id, name, &arguments));
    }
    if status == Status::Incomplete {
        if let Some(last) = output.last_mut() {
            set_status(last, ItemStatus::Incomplete);
        }
    }
    started.status = status;
    started.incomplete_details = details;
    started.output = output;
    started
}

/// A call without arguments has `{}`, what a function of no parameters gets from OpenAI.
fn non_empty_arguments(a: String) -> String {
    if a.trim().is_empty() {
        "{}".to_owned()
    } else {
        a
    }
}

fn set_status(item: &mut OutputItem, s: ItemStatus) {
    match item {
        OutputItem::Message { status, .. }
        | OutputItem::FunctionCall { status, .. }
        | OutputItem::CustomToolCall { status, .. }
        | OutputItem::ToolSearchCall { status, .. }
        | OutputItem::Reasoning { status, .. } => *status = s,
    }
}

/// A streamed tool call in a chat delta.
#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Which text item is open: reasoning or message, at this output index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    None,
    Reasoning(usize),
    Message(usize),
}

/// Chat chunks in, Responses events out, one chunk at a time and without I/O.
///
/// Call [`push`](Self::push) for every chunk, then [`finish`](Self::finish) when the engine's
/// stream ends (at `[DONE]`), or [`fail`](Self::fail) when it breaks. The first call also
/// emits `response.created` and `response.in_progress`; or call [`start`](Self::start) to send
/// them before the engine answers. After a terminal event every call returns nothing.
///
/// Reasoning deltas open a reasoning item, text a message, each tool call a `function_call`
/// item; a new kind closes the open text item, so items never interleave except tool calls
/// (engines stream them one after another, but each delta names its call, so any order is
/// placed right). Everything still open is closed when a `finish_reason` arrives.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    response: Response,
    style: ReasoningStyle,
    ids: Ids,
    seq: u64,
    started: bool,
    ended: bool,
    open: Open,
    /// chat tool-call index → output index, for calls not yet closed.
    calls: Vec<(u32, usize)>,
    /// The arguments of custom tools' and tool search calls not yet closed, by output index:
    /// their input (or arguments) is read from the whole JSON when the call ends.
    custom_args: Vec<(usize, String)>,
    finish_reason: Option<String>,
    usage: Option<ResponseUsage>,
}

impl StreamTranslator {
    /// `started` is [`Response::start`] for the request.
    pub fn new(started: Response, style: ReasoningStyle) -> Self {
        Self {
            style,
            ids: Ids::for_response(&started),
            response: started,
            seq: 0,
            started: false,
            ended: false,
            open: Open::None,
            calls: Vec::new(),
            custom_args: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// The response as it stands (its output so far; the final one after a terminal event).
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// True once a terminal event was produced.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// `response.created` and `response.in_progress`, once.
    pub fn start(&mut self) -> Vec<ResponseEvent> {
        let mut out = Vec::new();
        self.start_into(&mut out);
        out
    }

    fn start_into(&mut self, out: &mut Vec<ResponseEvent>) {
        if self.started || self.ended {
            return;
        }
        self.started = true;
        let response = Box::new(self.response.clone());
        out.push(ResponseEvent::Created {
            sequence_number: self.seq(),
            response: response.clone(),
        });
        out.push(ResponseEvent::InProgress {
            sequence_number: self.seq(),
            response,
        });
    }

    /// The events for one chat chunk.
    pub fn push(&mut self, chunk: &ChatCompletionChunk) -> Vec<ResponseEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.start_into(&mut out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(usage(u));
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return out;
        };
        if self.finish_reason.is_some() {
            // Content after the finish: nothing may follow a closed item.
            return out;
        }
        let delta = &choice.delta;
        if let Some(r) = delta_reasoning(&delta.extra) {
            self.reasoning_delta(r, &mut out);
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.text_delta(text, &mut out);
        }
        if let Some(calls) = delta.extra.get("tool_calls").filter(|v| !v.is_null()) {
            let calls = Vec::<ToolCallDelta>::deserialize(calls).unwrap_or_default();
            for (n, call) in calls.into_iter().enumerate() {
                self.call_delta(call, n, &mut out);
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
            let last = if outcome(Some(reason)).0 == Status::Incomplete {
                ItemStatus::Incomplete
            } else {
                ItemStatus::Completed
            };
            self.close_all(last, &mut out);
        }
        out
    }

    /// The engine's stream ended: closes what is open and sends `response.completed` (or
    /// `response.incomplete` for `length` and `content_filter`) with the whole response and
    /// the usage chunk's counts. A stream that ended without a `finish_reason` was cut off:
    /// that is `response.failed`, not a short answer passed off as complete.
    pub fn finish(&mut self) -> Vec<ResponseEvent> {
        if self.finish_reason.is_none() {
            return self.fail("the engine's stream ended before the answer was finished");
        }
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.start_into(&mut out);
        self.close_all(ItemStatus::Completed, &mut out);
        let (status, details) = outcome(self.finish_reason.as_deref());
        self.response.status = status;
        self.response.incomplete_details = details;
        self.response.usage = self.usage.clone();
        self.ended = true;
        let response = Box::new(self.response.clone());
        let sequence_number = self.seq();
        out.push(match status {
            Status::Incomplete => ResponseEvent::Incomplete {
                sequence_number,
                response,
            },
            _ => ResponseEvent::Completed {
                sequence_number,
                response,
            },
        });
        out
    }

    /// The stream broke (engine error, timeout): `response.failed` carrying `message`, the
    /// output so far, and usage if it had arrived.
    pub fn fail(&mut self, message: &str) -> Vec<ResponseEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.start_into(&mut out);
        self.response.status = Status::Failed;
        self.response.error = Some(ResponseErrorBody {
            code: "server_error".to_owned(),
            message: message.to_owned(),
        });
        self.response.usage = self.usage.clone();
        self.ended = true;
        out.push(ResponseEvent::Failed {
            sequence_number: self.seq(),
            response: Box::new(self.response.clone()),
        });
        out
    }

    fn add_item(&mut self, item: OutputItem, out: &mut Vec<ResponseEvent>) -> usize {
        let index = self.response.output.len();
        out.push(ResponseEvent::OutputItemAdded {
            sequence_number: self.seq(),
            output_index: index as u32,
            item: item.clone(),
        });
        self.response.output.push(item);
        index
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut Vec<ResponseEvent>) {
        let index = match self.open {
            Open::Reasoning(i) => i,
            _ => {
                self.close_text(ItemStatus::Completed, out);
                let id = self.ids.make("rs");
                let item = self.style.item(id.clone(), ItemStatus::InProgress, None);
                let i = self.add_item(item, out);
                if self.style == ReasoningStyle::Summary {
                    out.push(ResponseEvent::ReasoningSummaryPartAdded {
                        sequence_number: self.seq(),
                        item_id: id,
                        output_index: i as u32,
                        summary_index: 0,
                        part: ReasoningPart::summary_text(""),
                    });
                }
                self.open = Open::Reasoning(i);
                i
            }
        };
        let sequence_number = self.seq();
        let style = self.style;
        if let Some(OutputItem::Reasoning {
            id,
            content,
            summary,
            ..
        }) = self.response.output.get_mut(index)
        {
            let (parts, make): (_, fn(&str) -> ReasoningPart) = match style {
                ReasoningStyle::Text => (content, |t| ReasoningPart::reasoning_text(t)),
                ReasoningStyle::Summary => (summary, |t| ReasoningPart::summary_text(t)),
            };
            match parts.first_mut() {
                Some(part) => part.text.push_str(delta),
                None => parts.push(make(delta)),
            }
            let (item_id, output_index, delta) = (id.clone(), index as u32, delta.to_owned());
            out.push(match style {
                ReasoningStyle::Text => ResponseEvent::ReasoningTextDelta {
                    sequence_number,
                    item_id,
                    output_index,
                    content_index: 0,
                    delta,
                },
                ReasoningStyle::Summary => ResponseEvent::ReasoningSummaryTextDelta {
                    sequence_number,
                    item_id,
                    output_index,
                    summary_index: 0,
                    delta,
                },
            });
        }
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<ResponseEvent>) {
        let index = match self.open {
            Open::Message(i) => i,
            _ => {
                self.close_text(ItemStatus::Completed, out);
                let id = self.ids.make("msg");
                let item = OutputItem::Message {
                    id: id.clone(),
                    status: ItemStatus::InProgress,
                    role: "assistant".to_owned(),
                    content: Vec::new(),
                };
                let i = self.add_item(item, out);
                out.push(ResponseEvent::ContentPartAdded {
                    sequence_number: self.seq(),
                    item_id: id,
                    output_index: i as u32,
                    content_index: 0,
                    part: OutputText::new(""),
                });
                self.open = Open::Message(i);
                i
            }
        };
        let sequence_number = self.seq();
        if let Some(OutputItem::Message { id, content, .. }) = self.response.output.get_mut(index) {
            match content.first_mut() {
                Some(part) => part.text.push_str(delta),
                None => content.push(OutputText::new(delta)),
            }
            out.push(ResponseEvent::OutputTextDelta {
                sequence_number,
                item_id: id.clone(),
                output_index: index as u32,
                content_index: 0,
                delta: delta.to_owned(),
                logprobs: Vec::new(),
            });
        }
    }

    fn call_delta(&mut self, call: ToolCallDelta, position: usize, out: &mut Vec<ResponseEvent>) {
        // Engines that omit `index` send one call per delta, in order.
        let key = call.index.unwrap_or(position as u32);
        let (name, arguments) = match call.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let index = match self.calls.iter().find(|(k, _)| *k == key) {
            Some(&(_, i)) => i,
            None => {
                self.close_text(ItemStatus::Completed, out);
                let name = name.unwrap_or_default();
                let kind = CallKind::of(&self.response.tools, &name);
                let id = self.ids.make(kind.prefix());
                let call_id = call
                    .id
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| self.ids.make("call"));
                let item = kind.item(id, ItemStatus::InProgress, call_id, name, "");
                let i = self.add_item(item, out);
                self.calls.push((key, i));
                if kind != CallKind::Function {
                    self.custom_args.push((i, String::new()));
                }
                i
            }
        };
        let Some(delta) = arguments.filter(|a| !a.is_empty()) else {
            return;
        };
        if let Some((_, args)) = self.custom_args.iter_mut().find(|(i, _)| *i == index) {
            args.push_str(&delta);
            return;
        }
        let sequence_number = self.seq();
        if let Some(OutputItem::FunctionCall { id, arguments, .. }) =
            self.response.output.get_mut(index)
        {
            arguments.push_str(&delta);
            out.push(ResponseEvent::FunctionCallArgumentsDelta {
                sequence_number,
                item_id: id.clone(),
                output_index: index as u32,
                delta,
            });
        }
    }

    /// Closes the open reasoning or message item.
    fn close_text(&mut self, status: ItemStatus, out: &mut Vec<ResponseEvent>) {
        let open = std::mem::replace(&mut self.open, Open::None);
        let index = match open {
            Open::None => return,
            Open::Reasoning(i) | Open::Message(i) => i,
        };
        let Some(item) = self.response.output.get_mut(index) else {
            return;
        };
        set_status(item, status);
        let item = item.clone();
        let output_index = index as u32;
        match &item {
            OutputItem::Reasoning {
                id,
                content,
                summary,
                ..
            } => match self.style {
                ReasoningStyle::Text => {
                    let text = content.first().map(|p| p.text.clone()).unwrap_or_default();
                    out.push(ResponseEvent::ReasoningTextDone {
                        sequence_number: self.seq(),
                        item_id: id.clone(),
                        output_index,
                        content_index: 0,
                        text,
                    });
                }
                ReasoningStyle::Summary => {
                    let part = summary
                        .first()
                        .cloned()
                        .unwrap_or_else(|| ReasoningPart::summary_text(""));
                    out.push(ResponseEvent::ReasoningSummaryTextDone {
                        sequence_number: self.seq(),
                        item_id: id.clone(),
                        output_index,
                        summary_index: 0,
                        text: part.text.clone(),
                    });
                    out.push(ResponseEvent::ReasoningSummaryPartDone {
                        sequence_number: self.seq(),
                        item_id: id.clone(),
                        output_index,
                        summary_index: 0,
                        part,
                    });
                }
            },
            OutputItem::Message { id, content, .. } => {
                let part = content
                    .first()
                    .cloned()
                    .unwrap_or_else(|| OutputText::new(""));
                out.push(ResponseEvent::OutputTextDone {
                    sequence_number: self.seq(),
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    text: part.text.clone(),
                    logprobs: Vec::new(),
                });
                out.push(ResponseEvent::ContentPartDone {
                    sequence_number: self.seq(),
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    part,
                });
            }
            OutputItem::FunctionCall { .. }
            | OutputItem::CustomToolCall { .. }
            | OutputItem::ToolSearchCall { .. } => {}
        }
        out.push(ResponseEvent::OutputItemDone {
            sequence_number: self.seq(),
            output_index,
            item,
        });
    }

    /// Closes every open item in output order; the last one gets `last` (an answer cut by
    /// `length` ends inside its last item), the others `completed`.
    fn close_all(&mut self, last: ItemStatus, out: &mut Vec<ResponseEvent>) {
        let last_index = self.response.output.len().checked_sub(1);
        let status_of = |i: usize| {
            if Some(i) == last_index {
                last
            } else {
                ItemStatus::Completed
            }
        };
        let calls = std::mem::take(&mut self.calls);
        let text_index = match self.open {
            Open::Reasoning(i) | Open::Message(i) => Some(i),
            Open::None => None,
        };
        let mut pending: Vec<usize> = calls.iter().map(|&(_, i)| i).collect();
        pending.extend(text_index);
        pending.sort_unstable();
        for i in pending {
            if Some(i) == text_index {
                self.close_text(status_of(i), out);
            } else {
                self.close_call(i, status_of(i), out);
            }
        }
    }

    fn close_call(&mut self, index: usize, status: ItemStatus, out: &mut Vec<ResponseEvent>) {
        let Some(item) = self.response.output.get_mut(index) else {
            return;
        };
        set_status(item, status);
        match item {
            OutputItem::FunctionCall { arguments, .. } if arguments.trim().is_empty() => {
                "{}".clone_into(arguments);
            }
            OutputItem::CustomToolCall { input, .. } => {
                if let Some(at) = self.custom_args.iter().position(|(i, _)| *i == index) {
                    *input = custom_input(&self.custom_args.swap_remove(at).1);
                }
            }
            // No argument events: the item is shown whole when done, as OpenAI does.
            OutputItem::ToolSearchCall { arguments, .. } => {
                if let Some(at) = self.custom_args.iter().position(|(i, _)| *i == index) {
                    *arguments = search_arguments(&self.custom_args.swap_remove(at).1);
                }
            }
            _ => {}
        }
        let item = item.clone();
        if let OutputItem::CustomToolCall { id, input, .. } = &item {
            if !input.is_empty() {
                out.push(ResponseEvent::CustomToolCallInputDelta {
                    sequence_number: self.seq(),
                    item_id: id.clone(),
                    output_index: index as u32,
                    delta: input.clone(),
                });
            }
            out.push(ResponseEvent::CustomToolCallInputDone {
                sequence_number: self.seq(),
                item_id: id.clone(),
                output_index: index as u32,
                input: input.clone(),
            });
        }
        if let OutputItem::FunctionCall {
            id,
            name,
            arguments,
            ..
        } = &item
        {
            out.push(ResponseEvent::FunctionCallArgumentsDone {
                sequence_number: self.seq(),
                item_id: id.clone(),
                output_index: index as u32,
                name: name.clone(),
                arguments: arguments.clone(),
            });
        }
        out.push(ResponseEvent::OutputItemDone {
            sequence_number: self.seq(),
            output_index: index as u32,
            item,
        });
    }
}
