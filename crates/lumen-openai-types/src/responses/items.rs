//! `GET /v1/responses/{id}/input_items`: a page of a stored response's input, in OpenAI's list
//! shape. Sans-IO: the gateway loads the items and parses the query; this builds the page.
//!
//! Clients send most items without an `id`, but the list's cursor (`after`, `first_id`,
//! `last_id`) needs one on every item, and the official SDKs page with it. An item without an
//! id gets one made from the response's id and its position, so the same item has the same id on
//! every read (a cursor stays valid) and no two items of a response share one.

use serde_json::{Value, json};

use super::{Content, ContentPart, InputItem};

/// The most items one page holds (OpenAI's bound), and the default.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 20;

/// Which end of the input a page starts from. OpenAI's default is newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// The list's query: `limit`, `order`, `after` (an item id: the page starts after it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemsQuery {
    pub limit: Option<usize>,
    pub order: Order,
    pub after: Option<String>,
}

/// A query the list cannot answer, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemsQueryError {
    #[error("`limit` must be an integer from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("`order` must be `asc` or `desc`")]
    Order,
    #[error("`after` must name an item of this response's input")]
    After,
}

impl ItemsQueryError {
    /// The query parameter at fault, for the error's `param`.
    #[must_use]
    pub fn param(&self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Order => "order",
            Self::After => "after",
        }
    }
}

impl ItemsQuery {
    /// Reads a URL query string (`limit=2&order=asc&after=msg_...`). Unknown parameters
    /// (`include[]`) are ignored, as the list has nothing more to include.
    ///
    /// # Errors
    /// A `limit` that is not 1..=100 or an `order` that is neither `asc` nor `desc`.
    pub fn parse(query: &str) -> Result<Self, ItemsQueryError> {
        let mut q = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    let n: usize = value.parse().map_err(|_| ItemsQueryError::Limit)?;
                    if !(1..=MAX_LIMIT).contains(&n) {
                        return Err(ItemsQueryError::Limit);
                    }
                    q.limit = Some(n);
                }
                "order" => {
                    q.order = match value {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => return Err(ItemsQueryError::Order),
                    };
                }
                // Item ids are made of `[A-Za-z0-9_-]`: nothing to percent-decode in ours; a
                // client's own id with other bytes is simply not found.
                "after" if !value.is_empty() => q.after = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The page of `items` (the input of `response_id`) the query asks for, as OpenAI lists it:
/// `{object: "list", data, first_id, last_id, has_more}`.
///
/// # Errors
/// [`ItemsQueryError::After`] when `after` names no item of this input.
pub fn input_items_page(
    response_id: &str,
    items: &[InputItem],
    query: &ItemsQuery,
) -> Result<Value, ItemsQueryError> {
    let ids: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| item_id(response_id, i, item))
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    if query.order == Order::Desc {
        order.reverse();
    }
    let start = match &query.after {
        None => 0,
        Some(after) => {
            order
                .iter()
                .position(|&i| ids[i] == *after)
                .ok_or(ItemsQueryError::After)?
                + 1
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let page = order.get(start..).unwrap_or_default();
    let has_more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let data: Vec<Value> = page.iter().map(|&i| listed(&items[i], &ids[i])).collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": page.first().map(|&i| ids[i].as_str()),
        "last_id": page.last().map(|&i| ids[i].as_str()),
        "has_more": has_more,
    }))
}

/// The item's own id, else one made from the response's id and the item's position, with the
/// prefix OpenAI gives that type.
fn item_id(response_id: &str, index: usize, item: &InputItem) -> String {
    let (own, prefix) = match item {
        InputItem::Message(m) => (m.id.as_deref(), "msg"),
        InputItem::FunctionCall(c) => (c.id.as_deref(), "fc"),
        InputItem::FunctionCallOutput(o) => (o.id.as_deref(), "fco"),
        InputItem::CustomToolCall(c) => (c.id.as_deref(), "ctc"),
        InputItem::CustomToolCallOutput(o) => (o.id.as_deref(), "ctco"),
        InputItem::ToolSearchCall(c) => (c.id.as_deref(), "tsc"),
        InputItem::ToolSearchOutput(o) => (o.id.as_deref(), "tso"),
        InputItem::Reasoning(r) => (r.id.as_deref(), "rs"),
        InputItem::Other { .. } => (None, "item"),
    };
    match own {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
            format!("{prefix}_{base}_{index}")
        }
    }
}

/// One item as the list shows it: with its id, a message's `status`, and a message's string
/// content as the one text part it stands for (`input_text`, or `output_text` for the
/// assistant), since the list's items always carry parts.
fn listed(item: &InputItem, id: &str) -> Value {
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    if let InputItem::Message(m) = item {
        if let Content::Text(text) = &m.content {
            let part = if m.role == "assistant" {
                ContentPart::OutputText { text: text.clone() }
            } else {
                ContentPart::InputText { text: text.clone() }
            };
            value["content"] = serde_json::to_value([part]).unwrap_or(Value::Null);
        }
        value["status"] = json!("completed");
    }
    if let Value::Object(map) = &mut value {
        map.insert("id".to_owned(), json!(id));
    }
    value
}

#[cfg(test)]
mod tests;
