use serde_json::{Value, json};

use super::*;

fn items() -> Vec<InputItem> {
    serde_json::from_value(json!([
        {"role": "user", "content": "first"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"type": "message", "id": "msg_client", "role": "assistant", "content": "said"},
        {"role": "user", "content": [{"type": "input_text", "text": "last"}]}
    ]))
    .unwrap()
}

fn page(query: &str) -> Value {
    input_items_page("resp_abc", &items(), &ItemsQuery::parse(query).unwrap()).unwrap()
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

#[test]
fn every_item_has_an_id_and_the_default_is_newest_first() {
    let p = page("");
    assert_eq!(
        ids(&p),
        [
            "msg_abc_4",
            "msg_client",
            "fco_abc_2",
            "fc_abc_1",
            "msg_abc_0"
        ],
        "a client's own id is kept; the others are made from the response and the position"
    );
    assert_eq!(p["object"], "list");
    assert_eq!(p["first_id"], "msg_abc_4");
    assert_eq!(p["last_id"], "msg_abc_0");
    assert_eq!(p["has_more"], false);
}

#[test]
fn string_content_is_listed_as_its_one_text_part() {
    let p = page("order=asc");
    assert_eq!(
        p["data"][0],
        json!({"type": "message", "id": "msg_abc_0", "role": "user", "status": "completed",
               "content": [{"type": "input_text", "text": "first"}]})
    );
    assert_eq!(
        p["data"][3]["content"],
        json!([{"type": "output_text", "text": "said"}]),
        "the assistant's text is output text"
    );
    assert_eq!(p["data"][2]["output"], "42", "a tool's output is as sent");
}

#[test]
fn pages_follow_the_cursor_to_the_end_in_either_order() {
    for (order, all) in [
        (
            "asc",
            [
                "msg_abc_0",
                "fc_abc_1",
                "fco_abc_2",
                "msg_client",
                "msg_abc_4",
            ],
        ),
        (
            "desc",
            [
                "msg_abc_4",
                "msg_client",
                "fco_abc_2",
                "fc_abc_1",
                "msg_abc_0",
            ],
        ),
    ] {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let p = page(&format!("order={order}&limit=2&after={after}"));
            seen.extend(ids(&p).into_iter().map(str::to_owned));
            if p["has_more"] == false {
                break;
            }
            after = p["last_id"].as_str().unwrap().to_owned();
        }
        assert_eq!(seen, all, "{order}");
    }
}

#[test]
fn a_page_after_the_last_item_is_empty() {
    let p = page("order=asc&after=msg_abc_4");
    assert_eq!(p["data"], json!([]));
    assert_eq!(p["first_id"], Value::Null);
    assert_eq!(p["has_more"], false);
}

#[test]
fn a_query_the_list_cannot_answer_names_its_parameter() {
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("order=newest", "order"),
    ] {
        assert_eq!(
            ItemsQuery::parse(query).unwrap_err().param(),
            param,
            "{query}"
        );
    }
    let q = ItemsQuery::parse("after=msg_nope").unwrap();
    assert_eq!(
        input_items_page("resp_abc", &items(), &q)
            .unwrap_err()
            .param(),
        "after"
    );
    assert_eq!(
        ItemsQuery::parse("include[]=x&limit=100").unwrap().limit,
        Some(100),
        "unknown parameters are ignored"
    );
}
