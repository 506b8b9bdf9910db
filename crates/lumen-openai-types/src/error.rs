//! The OpenAI error body, and a parser for every error shape engines send.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `{"error": {...}}`, the only error shape a Lumen client ever sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The inner error object. `param` and `code` are always present (as `null` when unknown),
/// because OpenAI's SDKs read them without checking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub param: Option<String>,
    /// vLLM sends an integer (the HTTP status); OpenAI sends a string. Both become a string.
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
}

impl ErrorObject {
    pub fn new(message: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn into_body(self) -> ErrorBody {
        ErrorBody { error: self }
    }

    /// Parses an engine's error body, whatever its shape:
    ///
    /// - OpenAI and current vLLM: `{"error": {"message", "type", "param", "code"}}`
    /// - older vLLM and SGLang: `{"object": "error", "message", "type", "param", "code": 400}`
    /// - TGI: `{"error": "text", "error_type": "validation"}`; Ollama and llama.cpp variants: `{"error": "text"}`
    /// - FastAPI: `{"detail": "text"}` or `{"detail": [{"msg": ...}]}`
    ///
    /// Returns `None` when the bytes are not JSON or carry no message at all.
    pub fn from_upstream(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        match obj.get("error") {
            Some(Value::Object(_)) => {
                let inner = obj.get("error").cloned()?;
                let e: ErrorObject = serde_json::from_value(inner).ok()?;
                return (!e.message.is_empty() || !e.kind.is_empty()).then_some(e);
            }
            Some(Value::String(message)) => {
                let kind = obj
                    .get("error_type")
                    .or_else(|| obj.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Some(Self::new(message.clone(), kind));
            }
            _ => {}
        }
        if obj.contains_key("message") {
            let e: ErrorObject = serde_json::from_value(v.clone()).ok()?;
            return Some(e);
        }
        match obj.get("detail") {
            Some(Value::String(s)) => Some(Self::new(s.clone(), "")),
            Some(Value::Array(items)) => {
                let msgs: Vec<&str> = items
                    .iter()
                    .filter_map(|i| i.get("msg").and_then(Value::as_str))
                    .collect();
                (!msgs.is_empty()).then(|| Self::new(msgs.join("; "), ""))
            }
            _ => None,
        }
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests;
