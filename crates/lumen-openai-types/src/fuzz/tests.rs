//! The fuzz smoke: every file of the targets' corpora (`fuzz/corpus/<target>/`, the seeds plus
//! inputs that once failed) through the targets' bodies, on stable and without a fuzzer.

use std::path::PathBuf;

/// Runs `body` over every file of `fuzz/corpus/<target>/`; the corpus must not be empty.
pub(crate) fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
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
    replay("sse", super::sse);
}

#[test]
fn peek_corpus() {
    replay("peek", super::peek);
}
