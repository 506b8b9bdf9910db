use super::*;

#[test]
fn raw_extra_keeps_order_reads_last_and_replaces_on_insert() {
    let mut e = RawExtra::new();
    assert!(e.is_empty());
    assert_eq!(e.as_json(), "{}");
    let one: Box<RawValue> = serde_json::from_str("1").unwrap();
    let obj: Box<RawValue> = serde_json::from_str(r#"{"b": [1, 2]}"#).unwrap();
    e.push("z", &one);
    e.push("a\"q", &obj);
    e.push("z", &obj);
    assert_eq!(e.len(), 3);
    assert_eq!(e.get("z").unwrap().get(), r#"{"b": [1, 2]}"#);
    assert_eq!(e.get("a\"q").unwrap().get(), r#"{"b": [1, 2]}"#);
    assert!(e.get("missing").is_none());
    e.insert("z", &5).unwrap();
    assert_eq!(e.get_as::<u32>("z"), Some(5));
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"a\"q":{"b": [1, 2]},"z":5}"#
    );
    assert!(e.remove("a\"q"));
    assert!(!e.remove("a\"q"));
    assert_eq!(e.as_json(), r#"{"z":5}"#);
}

#[test]
fn elements_reads_an_array_one_value_at_a_time() {
    let got: Vec<u32> = Elements::<u32>::new(" [ 1 ,2,\n3 ] ")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(Elements::<u32>::new("[]").count(), 0);
    assert_eq!(Elements::<u32>::new("[ ]").count(), 0);
    let strs: Vec<String> = Elements::<String>::new(r#"["a,b","]"]"#)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(strs, ["a,b", "]"]);
    assert!(Elements::<u32>::new("{}").next().unwrap().is_err());
}
