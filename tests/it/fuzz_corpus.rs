//! The fuzz smoke, in one place: every file of every target's corpus (`fuzz/corpus/<target>/`,
//! the seeds plus inputs that once failed) through that target's body, on stable and without a
//! fuzzer. The bodies are the crates' doc-hidden `fuzz` functions, the same ones the cargo-fuzz
//! targets in `fuzz/` call.

use std::path::PathBuf;

/// Runs `body` over every file of `fuzz/corpus/<target>/`; the corpus must not be empty.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let run = std::panic::catch_unwind(|| body(&data));
        assert!(run.is_ok(), "fuzz target {target} fails on {}", f.display());
    }
}

#[test]
fn sse_corpus() {
    replay("sse", lumen_openai_types::fuzz::sse);
}

#[test]
fn peek_corpus() {
    replay("peek", lumen_openai_types::fuzz::peek);
}

#[test]
fn request_corpus() {
    replay("request", lumen_server::fuzz::request);
}

#[test]
fn headers_corpus() {
    replay("headers", lumen_server::fuzz::headers);
}

#[test]
fn h1_request_corpus() {
    replay("h1_request", lumen_server::fuzz::h1_request);
}

#[test]
fn h1_response_corpus() {
    replay("h1_response", lumen_backend_vllm::fuzz::h1_response);
}

/// Every target with a corpus is replayed above (a new target cannot be forgotten here).
#[test]
fn every_corpus_is_replayed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "h1_request",
            "h1_response",
            "headers",
            "peek",
            "request",
            "sse"
        ]
    );
}
