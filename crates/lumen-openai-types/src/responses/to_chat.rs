//! A Responses request as a chat completion request, for engines without `/v1/responses`.
//!
//! The mapping follows what vLLM does for its own chat-backed Responses path and what LiteLLM's
//! bridge does, with two differences: nothing unsupported is dropped (it is a
//! [`ResponsesError`]), and consecutive `function_call` items become one assistant message with
//! several `tool_calls` (parallel calls), as the model produced them, rather than one message
//! each, which chat templates render as turns the model never took.

use serde_json::json;

use super::{
    Content, ContentPart, Input, InputItem, RawJson, Reasoning, Response, ResponsesError,
    ResponsesRequest, TOOL_SEARCH, TextFormat, Tool, ToolChoice,
};
use crate::chat::{ChatCompletionRequest, ChatMessage, MessageContent};
use crate::stream::StreamOptions;

/// Most tools one request may declare. Real agents send tens; a list of thousands only costs
/// the engine prompt space and the gateway memory.
pub const MAX_TOOLS: usize = 512;

/// Most unknown top-level fields kept and forwarded. The Responses API has about 30 fields;
/// more unknown ones than this is a body built to make the forwarder work.
pub const MAX_UNKNOWN_FIELDS: usize = 64;

/// `include` values that can be accepted: they ask for parts of outputs this translation never
/// produces (built-in tool results are refused anyway), or for encrypted reasoning that Codex
/// asks for with `store: false` and that an engine simply does not have.
const HARMLESS_INCLUDES: &[&str] = &[
    "reasoning.encrypted_content",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "message.input_image.image_url",
];

/// Responses-only fields with no chat counterpart that change nothing in the answer (routing
/// and caching hints): accepted, not forwarded.
const IGNORED_FIELDS: &[&str] = &[
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "stream_options",
    // Codex's installation, session and turn identifiers: the client's business, not the
    // engine's (an engine that refuses unknown fields would refuse the request).
    "client_metadata",
];

/// Responses-only fields whose meaning chat cannot carry: refused, with what they are.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    ("prompt", "stored prompt templates"),
    (
        "conversation",
        "the Conversations API (use previous_response_id)",
    ),
    ("max_tool_calls", "a cap on built-in tool calls"),
    ("top_logprobs", "log probabilities"),
];

/// The chat request for `req`. `history` is the conversation named by `previous_response_id`,
/// oldest first, as the gateway's store kept it (see [`history_items`]); it is empty when there
/// is none. Only `req.instructions` is used: like OpenAI, earlier turns' instructions do not
/// carry over.
pub fn to_chat(
    req: &ResponsesRequest,
    history: &[InputItem],
) -> Result<ChatCompletionRequest, ResponsesError> {
    check_refused(req)?;

    let mut b = Builder::default();
    if let Some(instructions) = &req.instructions {
        b.push(Msg::text("system", instructions.clone()));
    }
    for item in history {
        b.item(item, || "previous_response_id".to_owned())?;
    }
    match &req.input {
        Input::Text(t) => b.push(Msg::text("user", t.clone())),
        Input::Items(items) => {
            for (i, item) in items.iter().enumerate() {
                b.item(item, || format!("input[{i}]"))?;
            }
        }
    }
    if b.msgs.is_empty() {
        return Err(ResponsesError::invalid(
            "input",
            "the request has no input and no instructions",
        ));
    }
    if req.max_output_tokens == Some(0) {
        return Err(ResponsesError::invalid(
            "max_output_tokens",
            "0 is less than the minimum of 1",
        ));
    }

    let loaded = std::mem::take(&mut b.loaded);
    let mut chat = ChatCompletionRequest {
        model: req.model.clone(),
        messages: b.finish()?.into(),
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user.clone(),
        ..ChatCompletionRequest::default()
    };
    if req.is_stream() {
        chat.stream = Some(true);
        // Usage arrives only when asked for, and the final event must carry it.
        chat.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            ..StreamOptions::default()
        });
    }
    // Engine extras first, so a field this function sets replaces a client's copy.
    for (k, v) in req.extra.entries() {
        if !IGNORED_FIELDS.contains(&k.as_ref()) {
            chat.extra.push(&k, v);
        }
    }
    let set = |chat: &mut ChatCompletionRequest, key: &str, v: &serde_json::Value| {
        chat.extra
            .insert(key, v)
            .map_err(|e| ResponsesError::invalid(key.to_owned(), e.to_string()))
    };
    // The request's tools, then those a client tool search loaded (`tool_search_output`
    // items) that it does not already offer.
    let mut tools: Vec<Tool> = req.tools.clone().unwrap_or_default();
    for t in loaded {
        if !tools.iter().any(|have| same_name(have, &t)) {
            tools.push(t);
        }
    }
    if tools.len() > MAX_TOOLS {
        return Err(ResponsesError::TooMany {
            param: "tools",
            max: MAX_TOOLS,
            got: tools.len(),
        });
    }
    if !tools.is_empty() {
        set(&mut chat, "tools", &chat_tools(&tools)?)?;
    }
    if let Some(choice) = &req.tool_choice {
        set(
            &mut chat,
            "tool_choice",
            &chat_tool_choice(choice, req.tools.as_deref())?,
        )?;
    }
    if let Some(parallel) = req.parallel_tool_calls {
        set(&mut chat, "parallel_tool_calls", &json!(parallel))?;
    }
    if let Some(text) = &req.text {
        if let Some(format) = &text.format {
            if let Some(rf) = response_format(format)? {
                set(&mut chat, "response_format", &rf)?;
            }
        }
        if let Some(v) = &text.verbosity {
            set(&mut chat, "verbosity", &json!(v))?;
        }
    }
    if let Some(effort) = req.reasoning.as_ref().and_then(|r| r.effort.as_ref()) {
        set(&mut chat, "reasoning_effort", &json!(effort))?;
    }
    Ok(chat)
}

/// One earlier turn as the store should keep it: its input items, then its output. The gateway
/// concatenates the turns of a `previous_response_id` chain, oldest first, and passes them to
/// [`to_chat`] as `history`.
pub fn history_items(input: &Input, response: &Response) -> Vec<InputItem> {
    let mut items = match input {
        Input::Text(t) => vec![InputItem::Message(super::InputMessage {
            id: None,
            role: "user".to_owned(),
            content: Content::Text(t.clone()),
        })],
        Input::Items(v) => v.clone(),
    };
    items.extend(response.output_as_input());
    items
}

fn check_refused(req: &ResponsesRequest) -> Result<(), ResponsesError> {
    if req.background == Some(true) {
        return Err(ResponsesError::unsupported("background", "background mode"));
    }
    if req.truncation.as_deref() == Some("auto") {
        return Err(ResponsesError::unsupported(
            "truncation",
            "automatic truncation of the conversation",
        ));
    }
    if let Some(include) = &req.include {
        if let Some((i, v)) = include
            .iter()
            .enumerate()
            .find(|(_, v)| !HARMLESS_INCLUDES.contains(&v.as_str()))
        {
            return Err(ResponsesError::unsupported(
                format!("include[{i}]"),
                format!("include '{v}'"),
            ));
        }
    }
    let unknown = req.extra.len();
    if unknown > MAX_UNKNOWN_FIELDS {
        return Err(ResponsesError::TooMany {
            param: "(unknown fields)",
            max: MAX_UNKNOWN_FIELDS,
            got: unknown,
        });
    }
    for (key, what) in REFUSED_FIELDS {
        if let Some(v) = req.extra.get(key) {
            // `null` (and `top_logprobs: 0`) ask for nothing.
            if v.get() != "null" && v.get() != "0" {
                return Err(ResponsesError::unsupported(*key, *what));
            }
        }
    }
    if let Some(tools) = &req.tools {
        if tools.len() > MAX_TOOLS {
            return Err(ResponsesError::TooMany {
                param: "tools",
                max: MAX_TOOLS,
                got: tools.len(),
            });
        }
    }
    Ok(())
}

/// The names a tool is offered to the model under (a namespace's: its functions').
fn offered_names(t: &Tool) -> Vec<&str> {
    match t {
        Tool::Function(f) => vec![f.name.as_str()],
        Tool::Namespace { tools, .. } => tools.iter().map(|f| f.name.as_str()).collect(),
        Tool::Custom(c) => vec![c.name.as_str()],
        Tool::ToolSearch(_) => vec![TOOL_SEARCH],
        Tool::Other { .. } => Vec::new(),
    }
}

/// Whether every name `b` is offered under is already offered by `a`.
fn same_name(a: &Tool, b: &Tool) -> bool {
    let (have, theirs) = (offered_names(a), offered_names(b));
    !theirs.is_empty() && theirs.iter().all(|n| have.contains(n))
}

fn chat_tools(tools: &[Tool]) -> Result<serde_json::Value, ResponsesError> {
    let mut out = Vec::with_capacity(tools.len());
    let search = tools.iter().any(|t| matches!(t, Tool::ToolSearch(_)));
    for (i, tool) in tools.iter().enumerate() {
        // Its calls are told apart by name: another tool of that name would be ambiguous.
        if search
            && !matches!(tool, Tool::ToolSearch(_))
            && offered_names(tool).contains(&TOOL_SEARCH)
        {
            return Err(ResponsesError::invalid(
                format!("tools[{i}].name"),
                format!("'{TOOL_SEARCH}' names the client's tool search tool too"),
            ));
        }
        match tool {
            Tool::Function(f) => out.push(function_tool(i, f)?),
            // A namespace's tools are offered one by one, as the functions they are.
            Tool::Namespace { tools, .. } => {
                for f in tools {
                    out.push(function_tool(i, f)?);
                }
            }
            Tool::Custom(c) => out.push(custom_tool(i, c)?),
            Tool::ToolSearch(t) => out.push(tool_search_tool(i, t)?),
            Tool::Other { kind } => {
                return Err(ResponsesError::unsupported(
                    format!("tools[{i}].type"),
                    format!("the built-in tool '{kind}'"),
                ));
            }
        }
    }
    Ok(serde_json::Value::Array(out))
}

/// A custom tool's `format`: free text, or text a grammar constrains.
#[derive(serde::Deserialize)]
struct CustomFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    syntax: Option<String>,
    #[serde(default)]
    definition: Option<String>,
}

/// A custom tool as a chat function of one string parameter, `input`: chat engines know only
/// JSON arguments. The grammar (Codex's `apply_patch` format) goes in the parameter's
/// description, so the model writes the text it describes; the engine does not enforce it,
/// and the client checks the input as it would OpenAI's.
fn custom_tool(i: usize, c: &super::CustomTool) -> Result<serde_json::Value, ResponsesError> {
    if c.name.is_empty() {
        return Err(ResponsesError::invalid(
            format!("tools[{i}].name"),
            "a custom tool needs a non-empty name",
        ));
    }
    let format = match &c.format {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<CustomFormat>(raw.get()).map_err(|e| {
                ResponsesError::invalid(format!("tools[{i}].format"), e.to_string())
            })?,
        ),
    };
    let described = match format {
        None => "The tool's input, as free text.".to_owned(),
        Some(f) if f.kind == "text" => "The tool's input, as free text.".to_owned(),
        Some(f) if f.kind == "grammar" => {
            let definition = f.definition.ok_or_else(|| {
                ResponsesError::invalid(
                    format!("tools[{i}].format.definition"),
                    "a grammar format needs `definition`",
                )
            })?;
            format!(
                "The tool's input, as free text that follows this {} grammar exactly:\n{definition}",
                f.syntax.as_deref().unwrap_or("lark")
            )
        }
        Some(f) => {
            return Err(ResponsesError::unsupported(
                format!("tools[{i}].format.type"),
                format!("the custom tool format '{}'", f.kind),
            ));
        }
    };
    let mut function = serde_json::Map::new();
    function.insert("name".to_owned(), json!(c.name));
    if let Some(d) = &c.description {
        function.insert("description".to_owned(), json!(d));
    }
    function.insert(
        "parameters".to_owned(),
        json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": described}},
            "required": ["input"],
            "additionalProperties": false,
        }),
    );
    Ok(json!({"type": "function", "function": function}))
}

/// A client-executed tool search as the function `tool_search`, with the client's description
/// and schema (a `query` string when it sent none).
fn tool_search_tool(
    i: usize,
    t: &super::ToolSearchTool,
) -> Result<serde_json::Value, ResponsesError> {
    let mut function = serde_json::Map::new();
    function.insert("name".to_owned(), json!(TOOL_SEARCH));
    function.insert(
        "description".to_owned(),
        json!(t.description.as_deref().unwrap_or(
            "Searches the tools not yet offered and makes the matching ones available for the next call."
        )),
    );
    let parameters = match &t.parameters {
        Some(p) => raw_to_value(p, || format!("tools[{i}].parameters"))?,
        None => json!({
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What the tools needed should do."}},
            "required": ["query"],
        }),
    };
    function.insert("parameters".to_owned(), parameters);
    Ok(json!({"type": "function", "function": function}))
}

/// The arguments a chat engine gets back for a custom tool's call: its input as the one
/// string parameter [`custom_tool`] declares.
fn custom_arguments(input: &str) -> String {
    json!({ "input": input }).to_string()
}

fn function_tool(i: usize, f: &super::FunctionTool) -> Result<serde_json::Value, ResponsesError> {
    if f.name.is_empty() {
        return Err(ResponsesError::invalid(
            format!("tools[{i}].name"),
            "a function tool needs a non-empty name",
        ));
    }
    let mut function = serde_json::Map::new();
    function.insert("name".to_owned(), json!(f.name));
    if let Some(d) = &f.description {
        function.insert("description".to_owned(), json!(d));
    }
    if let Some(p) = &f.parameters {
        function.insert(
            "parameters".to_owned(),
            raw_to_value(p, || format!("tools[{i}].parameters"))?,
        );
    }
    if let Some(s) = f.strict {
        function.insert("strict".to_owned(), json!(s));
    }
    Ok(json!({"type": "function", "function": function}))
}

/// A kept schema as a value, to nest it (schemas are small; nesting depth was capped when the
/// body was parsed).
fn raw_to_value(
    raw: &RawJson,
    param: impl FnOnce() -> String,
) -> Result<serde_json::Value, ResponsesError> {
    serde_json::from_str(raw.get()).map_err(|e| ResponsesError::invalid(param(), e.to_string()))
}

fn chat_tool_choice(
    choice: &ToolChoice,
    tools: Option<&[Tool]>,
) -> Result<serde_json::Value, ResponsesError> {
    Ok(match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function { name } => {
            let declared = tools.unwrap_or_default().iter().any(|t| match t {
                Tool::Function(f) => &f.name == name,
                Tool::Namespace { tools, .. } => tools.iter().any(|f| &f.name == name),
                Tool::Custom(_) | Tool::ToolSearch(_) | Tool::Other { .. } => false,
            });
            if !declared {
                return Err(ResponsesError::invalid(
                    "tool_choice.name",
                    format!("tool_choice names '{name}', which is not in tools"),
                ));
            }
            json!({"type": "function", "function": {"name": name}})
        }
        ToolChoice::Custom { name } => {
            let declared = tools
                .unwrap_or_default()
                .iter()
                .any(|t| matches!(t, Tool::Custom(c) if &c.name == name));
            if !declared {
                return Err(ResponsesError::invalid(
                    "tool_choice.name",
                    format!("tool_choice names the custom tool '{name}', which is not in tools"),
                ));
            }
            json!({"type": "function", "function": {"name": name}})
        }
        ToolChoice::Other { kind } => {
            return Err(ResponsesError::unsupported(
                "tool_choice",
                format!("tool_choice '{kind}'"),
            ));
        }
    })
}

fn response_format(f: &TextFormat) -> Result<Option<serde_json::Value>, ResponsesError> {
    Ok(match f.kind.as_str() {
        "text" => None,
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let schema = f.schema.as_ref().ok_or_else(|| {
                ResponsesError::invalid("text.format.schema", "a json_schema format needs `schema`")
            })?;
            let mut js = serde_json::Map::new();
            js.insert(
                "name".to_owned(),
                json!(f.name.as_deref().unwrap_or("response")),
            );
            if let Some(d) = &f.description {
                js.insert("description".to_owned(), json!(d));
            }
            js.insert(
                "schema".to_owned(),
                raw_to_value(schema, || "text.format.schema".to_owned())?,
            );
            if let Some(s) = f.strict {
                js.insert("strict".to_owned(), json!(s));
            }
            Some(json!({"type": "json_schema", "json_schema": js}))
        }
        other => {
            return Err(ResponsesError::unsupported(
                "text.format.type",
                format!("the text format '{other}'"),
            ));
        }
    })
}

/// A chat message being built: tool calls are collected before it is serialised.
struct Msg {
    role: &'static str,
    content: Option<MessageContent>,
    tool_calls: Vec<serde_json::Value>,
    tool_call_id: Option<String>,
    reasoning: Option<String>,
}

impl Msg {
    fn text(role: &'static str, text: String) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text)),
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning: None,
        }
    }
}

#[derive(Default)]
struct Builder {
    msgs: Vec<Msg>,
    /// Reasoning read from a `reasoning` item, given to the next assistant message (chat
    /// carries reasoning on the message, Responses as an item before it).
    reasoning: Option<String>,
    /// Images returned by tool calls (Codex's `view_image`), waiting for the end of the run of
    /// tool results they belong to: chat's tool messages carry text only, and templates want
    /// an assistant's tool results together right after it, so the images follow them as one
    /// user message.
    tool_images: Vec<serde_json::Value>,
    /// The tools `tool_search_output` items loaded, offered with the request's own.
    loaded: Vec<Tool>,
}

impl Builder {
    fn push(&mut self, mut m: Msg) {
        if m.role != "tool" {
            self.flush_tool_images();
        }
        if m.role == "assistant" {
            m.reasoning = self.reasoning.take();
        }
        self.msgs.push(m);
    }

    /// The images of the tool results just read, as a user message after them.
    fn flush_tool_images(&mut self) {
        if self.tool_images.is_empty() {
            return;
        }
        let mut parts = vec![json!({"type": "text", "text": TOOL_IMAGES_TEXT})];
        parts.append(&mut self.tool_images);
        if let Ok(raw) = serde_json::value::to_raw_value(&parts) {
            self.msgs.push(Msg {
                role: "user",
                content: Some(MessageContent::Parts(raw)),
                tool_calls: Vec::new(),
                tool_call_id: None,
                reasoning: None,
            });
        }
    }

    fn item(&mut self, item: &InputItem, at: impl Fn() -> String) -> Result<(), ResponsesError> {
        match item {
            InputItem::Message(m) => {
                let role = match m.role.as_str() {
                    "user" => "user",
                    "assistant" => "assistant",
                    // Most chat templates know only `system`; `developer` is its new name.
                    "system" | "developer" => "system",
                    other => {
                        return Err(ResponsesError::invalid(
                            format!("{}.role", at()),
                            format!("unknown role '{other}'"),
                        ));
                    }
                };
                let content = content(&m.content, role == "user", || format!("{}.content", at()))?;
                self.push(Msg {
                    role,
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    reasoning: None,
                });
            }
            InputItem::FunctionCall(c) => {
                // Empty arguments are `{}`: templates parse them as JSON.
                let arguments = if c.arguments.trim().is_empty() {
                    "{}"
                } else {
                    c.arguments.as_str()
                };
                self.call(&c.call_id, &c.name, arguments);
            }
            InputItem::CustomToolCall(c) => {
                self.call(&c.call_id, &c.name, &custom_arguments(&c.input));
            }
            InputItem::ToolSearchCall(c) => self.call(&c.call_id, TOOL_SEARCH, c.arguments.get()),
            InputItem::ToolSearchOutput(o) => {
                // The model reads what was loaded; the tools themselves join `tools`.
                let text = serde_json::to_string(&o.tools).map_err(|e| {
                    ResponsesError::invalid(format!("{}.tools", at()), e.to_string())
                })?;
                self.loaded.extend(o.tools.iter().cloned());
                self.push(Msg {
                    role: "tool",
                    content: Some(MessageContent::Text(text)),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(o.call_id.clone()),
                    reasoning: None,
                });
            }
            InputItem::FunctionCallOutput(o) | InputItem::CustomToolCallOutput(o) => {
                let (text, mut images) = tool_output(&o.output, || format!("{}.output", at()))?;
                self.tool_images.append(&mut images);
                self.push(Msg {
                    role: "tool",
                    content: Some(MessageContent::Text(text)),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(o.call_id.clone()),
                    reasoning: None,
                });
            }
            InputItem::Reasoning(r) => {
                let text = reasoning_text(r);
                if !text.is_empty() {
                    self.reasoning = Some(text);
                }
            }
            InputItem::Other { kind } => {
                let what = if kind == "item_reference" {
                    "an item_reference (only stored responses can be referenced)".to_owned()
                } else {
                    format!("the input item type '{kind}'")
                };
                return Err(ResponsesError::unsupported(format!("{}.type", at()), what));
            }
        }
        Ok(())
    }

    /// A tool call: consecutive calls (and a call right after assistant text) share one
    /// assistant message, as the model produced them.
    fn call(&mut self, call_id: &str, name: &str, arguments: &str) {
        let call = json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        });
        match self.msgs.last_mut() {
            Some(last) if last.role == "assistant" && self.reasoning.is_none() => {
                last.tool_calls.push(call);
            }
            _ => self.push(Msg {
                role: "assistant",
                content: None,
                tool_calls: vec![call],
                tool_call_id: None,
                reasoning: None,
            }),
        }
    }

    fn finish(mut self) -> Result<Vec<ChatMessage>, ResponsesError> {
        self.flush_tool_images();
        self.msgs
            .into_iter()
            .map(|m| {
                let mut msg = ChatMessage {
                    role: m.role.to_owned(),
                    content: m.content,
                    ..ChatMessage::default()
                };
                let err = |e: serde_json::Error| ResponsesError::invalid("input", e.to_string());
                if !m.tool_calls.is_empty() {
                    msg.extra.insert("tool_calls", &m.tool_calls).map_err(err)?;
                }
                if let Some(id) = &m.tool_call_id {
                    msg.extra.insert("tool_call_id", id).map_err(err)?;
                }
                if let Some(r) = &m.reasoning {
                    msg.extra.insert("reasoning_content", r).map_err(err)?;
                }
                Ok(msg)
            })
            .collect()
    }
}

/// What introduces the images tool calls returned, in the user message that carries them.
pub(crate) const TOOL_IMAGES_TEXT: &str = "The images returned by the tool calls above:";

/// A tool result's text for the tool message, and its images for the user message after the
/// run of tool results (see [`Builder::tool_images`]). Text parts are joined by newlines; an
/// output of images only says where they went, so the model does not read an empty result.
fn tool_output(
    c: &Content,
    at: impl Fn() -> String,
) -> Result<(String, Vec<serde_json::Value>), ResponsesError> {
    let parts = match c {
        Content::Text(t) => return Ok((t.clone(), Vec::new())),
        Content::Parts(p) => p,
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::InputImage {
                image_url: Some(url),
                detail,
                ..
            } => {
                let mut image = json!({"url": url});
                if let (Some(d), Some(obj)) = (detail, image.as_object_mut()) {
                    obj.insert("detail".to_owned(), json!(d));
                }
                images.push(json!({"type": "image_url", "image_url": image}));
            }
            _ => {
                // Text, refusals and what is refused, as in any other content.
                let one = Content::Parts(vec![part.clone()]);
                if let MessageContent::Text(t) = content(&one, false, || format!("{}[{j}]", at()))?
                {
                    texts.push(t);
                }
            }
        }
    }
    let text = if texts.is_empty() && !images.is_empty() {
        format!(
            "({} image{} returned, shown in the next message)",
            images.len(),
            if images.len() == 1 { "" } else { "s" }
        )
    } else {
        texts.join("\n")
    };
    Ok((text, images))
}

/// The reasoning text of an item: its `reasoning_text` parts, else its summary.
fn reasoning_text(r: &Reasoning) -> String {
    let parts = if r.content.is_empty() {
        &r.summary
    } else {
        &r.content
    };
    parts
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Chat content for Responses content. Text only becomes a string (chat templates of
/// assistant, system and tool turns often accept nothing else); images are allowed only where
/// `images` (user turns), as `image_url` parts.
fn content(
    c: &Content,
    images: bool,
    at: impl Fn() -> String,
) -> Result<MessageContent, ResponsesError> {
    let parts = match c {
        Content::Text(t) => return Ok(MessageContent::Text(t.clone())),
        Content::Parts(p) => p,
    };
    let mut out = Vec::with_capacity(parts.len());
    let mut all_text = true;
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::InputText { text } | ContentPart::OutputText { text } => {
                out.push(json!({"type": "text", "text": text}));
            }
            ContentPart::Refusal { refusal } => {
                out.push(json!({"type": "text", "text": refusal}));
            }
            ContentPart::InputImage {
                image_url, detail, ..
            } => {
                let Some(url) = image_url else {
                    return Err(ResponsesError::unsupported(
                        format!("{}[{j}].file_id", at()),
                        "an image given by file id (send image_url)",
                    ));
                };
                if !images {
                    return Err(ResponsesError::unsupported(
                        format!("{}[{j}]", at()),
                        "an image outside a user message",
                    ));
                }
                all_text = false;
                let mut image = json!({"url": url});
                if let (Some(d), Some(obj)) = (detail, image.as_object_mut()) {
                    obj.insert("detail".to_owned(), json!(d));
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            ContentPart::Other { kind } => {
                return Err(ResponsesError::unsupported(
                    format!("{}[{j}].type", at()),
                    format!("the content part type '{kind}'"),
                ));
            }
        }
    }
    // One text part, or text anywhere but a user turn: a plain string.
    if all_text && (out.len() == 1 || !images) {
        let text = out
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        return Ok(MessageContent::Text(text));
    }
    serde_json::value::to_raw_value(&out)
        .map(MessageContent::Parts)
        .map_err(|e| ResponsesError::invalid(at(), e.to_string()))
}
