//! Unsafe code lives in one file. The workspace lint is `deny`, not `forbid`, only so that the
//! allocator's two calls into C (`bins/lumen/src/alloc.rs`: turning transparent huge pages off
//! and giving an idle worker's heap back) can allow it; this test keeps every other file
//! without it, so `deny` is as strict as `forbid` everywhere else.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_the_allocator_module_allows_unsafe_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["crates", "bins", "tests", "examples", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 100,
        "the tree was read: {} files",
        files.len()
    );
    let allowed = Path::new("bins/lumen/src/alloc.rs");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Split so that this file does not match itself.
        if text.contains(concat!("allow(", "unsafe_code)")) {
            found.push(f.strip_prefix(&root).unwrap().to_path_buf());
        }
    }
    assert_eq!(found, [allowed], "files that allow unsafe code");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("unsafe_code = \"deny\""),
        "the workspace still denies unsafe code"
    );
}
