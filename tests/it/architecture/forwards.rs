//! The server is the HTTP edge, not a second face of the core: no file of `lumen-server`
//! defines a method whose whole body hands the call on to the core (`self.inner.core.x(..)`,
//! `self.core().x(..)`). Callers reach the core through `Gateway::core()` instead, so there is
//! one place where each operation lives.

use std::path::Path;

/// `(file, line, fn name)` of every method whose body is one call into the core.
fn forwards(src: &Path) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            out.extend(
                forwarding_fns(&text)
                    .into_iter()
                    .map(|(line, name)| (p.display().to_string(), line, name)),
            );
        }
    }
    out
}

/// Methods of `text` whose body is a single line calling into the core.
fn forwarding_fns(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !is_fn {
            i += 1;
            continue;
        }
        let name = t
            .split("fn ")
            .nth(1)
            .and_then(|r| r.split(['(', '<']).next())
            .unwrap_or("")
            .to_owned();
        // The signature may span lines; the body starts after the line ending in `{`.
        let start = i;
        while i < lines.len() && !lines[i].trim_end().ends_with('{') {
            i += 1;
        }
        let body: Vec<&str> = lines
            .iter()
            .skip(i + 1)
            .take_while(|l| l.trim() != "}")
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .collect();
        if let [only] = body.as_slice() {
            if only.starts_with("self.inner.core.") || only.starts_with("self.core().") {
                out.push((start + 1, name));
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_server_method_only_forwards_to_the_core() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/lumen-server/src");
    let found = forwards(&src);
    assert!(
        found.is_empty(),
        "methods that only forward to the core (call `core()` at the call site instead):\n{found:#?}"
    );
}

#[test]
fn the_reader_sees_a_forward_when_there_is_one() {
    let text = "impl Gateway {\n    pub async fn chat(\n        &self,\n        req: Req,\n    ) -> R {\n        self.inner.core.chat(req).await\n    }\n\n    fn own(&self) -> u32 {\n        let x = self.inner.core.queued();\n        x as u32 + 1\n    }\n}\n";
    assert_eq!(forwarding_fns(text), vec![(2, "chat".to_owned())]);
}
