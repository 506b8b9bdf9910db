use super::Text;

#[test]
fn log_values_are_quoted_when_they_could_forge_fields() {
    assert_eq!(Text("m1").to_string(), "m1");
    assert_eq!(Text("org/model-7b").to_string(), "org/model-7b");
    assert_eq!(Text("").to_string(), r#""""#);
    assert_eq!(Text("a b=c").to_string(), r#""a b=c""#);
    assert_eq!(
        Text("x\nINFO forged=1").to_string(),
        r#""x\nINFO forged=1""#
    );
    assert_eq!(Text("q\"uote").to_string(), r#""q\"uote""#);
}
