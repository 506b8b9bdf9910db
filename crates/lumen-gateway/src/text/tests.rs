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

/// A value is cut at `Text::MAX` bytes, on a character boundary, and the cut is marked.
#[test]
fn long_values_are_cut() {
    let long = "é".repeat(Text::MAX);
    let shown = Text(&long).to_string();
    assert_eq!(shown, format!("{}…", "é".repeat(Text::MAX / 2)));
    let spaced = format!("a {}", "b".repeat(2 * Text::MAX));
    let shown = Text(&spaced).to_string();
    assert!(
        shown.starts_with("\"a bbb") && shown.ends_with("b…\""),
        "{shown}"
    );
    assert_eq!(shown.len(), Text::MAX + "…".len() + 2);
    let exact = "x".repeat(Text::MAX);
    assert_eq!(Text(&exact).to_string(), exact, "not cut at the limit");
}

/// Once the logs are JSON, values go to the encoder as they are (it escapes them): quoting
/// here as well would escape them twice. Its own process: the switch is the process's.
#[test]
fn json_logs_get_values_as_they_are() {
    let child = std::env::var_os("LUMEN_TEXT_JSON_CHILD").is_some();
    if !child {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "text::tests::json_logs_get_values_as_they_are"])
            .env("LUMEN_TEXT_JSON_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran the test: {stdout}"
        );
        return;
    }
    Text::json_logs();
    assert_eq!(Text("a b=c").to_string(), "a b=c");
    assert_eq!(Text("q\"uote\n").to_string(), "q\"uote\n");
    let line = serde_json::json!({ "error": Text("connection refused").to_string() });
    assert_eq!(line.to_string(), r#"{"error":"connection refused"}"#);
}
