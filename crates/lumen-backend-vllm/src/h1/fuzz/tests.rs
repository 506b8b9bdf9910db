//! The fuzz smoke: every file of `fuzz/corpus/h1_response/` (the seeds plus inputs that once
//! failed) through the target's body, on stable and without a fuzzer.

use std::path::PathBuf;

#[test]
fn h1_response_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h1_response");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let run = std::panic::catch_unwind(|| super::h1_response(&data));
        assert!(run.is_ok(), "h1_response fails on {}", f.display());
    }
}
