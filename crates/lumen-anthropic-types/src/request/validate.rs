//! The rules the real API checks before inference, so a client learns of its mistake from Lumen
//! with the field named, not from an engine's template error.

use super::{
    ContentBlock, MAX_STOP_SEQUENCES, MAX_TOOLS, MessageContent, MessagesRequest, Thinking,
    ToolChoice,
};
use crate::RequestError;

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u32 = 1024;

impl MessagesRequest {
    /// `create` is true for `/v1/messages` (needs `max_tokens`), false for `count_tokens`.
    pub(super) fn validate(&self, create: bool) -> Result<(), RequestError> {
        if self.messages.is_empty() {
            return Err(RequestError::invalid(
                "messages",
                "at least one message is required",
            ));
        }
        match (create, self.max_tokens) {
            (true, None) => return Err(RequestError::invalid("max_tokens", "Field required")),
            (true, Some(0)) => {
                return Err(RequestError::invalid(
                    "max_tokens",
                    "must be greater than or equal to 1",
                ));
            }
            _ => {}
        }
        for (value, field) in [(self.temperature, "temperature"), (self.top_p, "top_p")] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(RequestError::invalid(
                    field,
                    "must be between 0 and 1 inclusive",
                ));
            }
        }
        if self.stop_sequences.len() > MAX_STOP_SEQUENCES {
            return Err(RequestError::TooMany {
                field: "stop_sequences".to_owned(),
                limit: MAX_STOP_SEQUENCES,
            });
        }
        if let Some(i) = self.stop_sequences.iter().position(|s| s.trim().is_empty()) {
            return Err(RequestError::invalid(
                format!("stop_sequences[{i}]"),
                "each stop sequence must contain non-whitespace",
            ));
        }
        self.validate_tools()?;
        self.validate_messages()?;
        if let Some(Thinking::Enabled { budget_tokens }) = self.thinking {
            if budget_tokens < MIN_THINKING_BUDGET {
                return Err(RequestError::invalid(
                    "thinking.budget_tokens",
                    format!("must be greater than or equal to {MIN_THINKING_BUDGET}"),
                ));
            }
            if let Some(max) = self.max_tokens
                && budget_tokens >= max
            {
                return Err(RequestError::invalid(
                    "thinking.budget_tokens",
                    "must be less than max_tokens",
                ));
            }
        }
        Ok(())
    }

    fn validate_tools(&self) -> Result<(), RequestError> {
        if self.tools.len() > MAX_TOOLS {
            return Err(RequestError::TooMany {
                field: "tools".to_owned(),
                limit: MAX_TOOLS,
            });
        }
        for (i, tool) in self.tools.iter().enumerate() {
            if !valid_tool_name(&tool.name) {
                return Err(RequestError::invalid(
                    format!("tools[{i}].name"),
                    "must match ^[a-zA-Z0-9_-]{1,128}$",
                ));
            }
            let client_tool = matches!(tool.kind.as_deref(), None | Some("custom"));
            if client_tool {
                match &tool.input_schema {
                    None => {
                        return Err(RequestError::invalid(
                            format!("tools[{i}].input_schema"),
                            "Field required",
                        ));
                    }
                    Some(s) if !s.get().starts_with('{') => {
                        return Err(RequestError::invalid(
                            format!("tools[{i}].input_schema"),
                            "must be a JSON schema object",
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(ToolChoice::Tool { name, .. }) = &self.tool_choice
            && !self.tools.iter().any(|t| &t.name == name)
        {
            return Err(RequestError::invalid(
                "tool_choice.name",
                format!("no tool named {name:?} in tools"),
            ));
        }
        Ok(())
    }

    fn validate_messages(&self) -> Result<(), RequestError> {
        for (i, m) in self.messages.iter().enumerate() {
            let MessageContent::Blocks(blocks) = &m.content else {
                continue;
            };
            for (j, b) in blocks.iter().enumerate() {
                let field = || format!("messages[{i}].content[{j}]");
                match b {
                    ContentBlock::ToolUse { id, name, .. } => {
                        if id.is_empty() {
                            return Err(RequestError::invalid(
                                format!("{}.id", field()),
                                "must not be empty",
                            ));
                        }
                        if name.is_empty() {
                            return Err(RequestError::invalid(
                                format!("{}.name", field()),
                                "must not be empty",
                            ));
                        }
                    }
                    ContentBlock::ToolResult { tool_use_id, .. } if tool_use_id.is_empty() => {
                        return Err(RequestError::invalid(
                            format!("{}.tool_use_id", field()),
                            "must not be empty",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
