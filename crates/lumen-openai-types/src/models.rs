//! `GET /v1/models` and `GET /v1/models/{id}`.

use serde::{Deserialize, Serialize};

use crate::Extra;

/// One model. Engine metadata (vLLM's `max_model_len`, `root`, `parent`, ...) stays in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    #[serde(default = "object_model")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default = "owner")]
    pub owned_by: String,
    #[serde(flatten)]
    pub extra: Extra,
}

fn object_model() -> String {
    "model".to_owned()
}

fn owner() -> String {
    "lumen".to_owned()
}

impl Model {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: object_model(),
            created: 0,
            owned_by: owner(),
            extra: Extra::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default = "crate::embeddings::object_list")]
    pub object: String,
    #[serde(default)]
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: crate::embeddings::object_list(),
            data,
        }
    }
}
