//! The file-level import graph of every crate, read from its `use crate::…` and `use super::…`
//! lines, so "no file imports another in a circle" is a test rather than a sentence.
//!
//! A path resolves to the deepest file that exists for it (`crate::a::b::X` is `src/a/b.rs`
//! when that exists, else `src/a.rs`, else `lib.rs`, where re-exports and root items live).
//! Test modules (`tests.rs`, `tests/`) are left out: they import their parent by design.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src`, by path relative to it.
fn sources(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(p.strip_prefix(src).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file: `a/b.rs` is `[a, b]`, `lib.rs` and `main.rs` are `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.as_slice(), [one] if one == "lib" || one == "main") {
        parts.clear();
    }
    parts
}

/// The `use` statements of a source text, each as one string without `pub`/`use`/`;`.
fn use_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(cur) = current.as_mut() {
            cur.push_str(t);
        } else {
            let rest = t
                .strip_prefix("pub(crate) use ")
                .or_else(|| t.strip_prefix("pub(super) use "))
                .or_else(|| t.strip_prefix("pub use "))
                .or_else(|| t.strip_prefix("use "));
            match rest {
                Some(r) => current = Some(r.to_owned()),
                None => continue,
            }
        }
        if current.as_ref().is_some_and(|c| c.contains(';')) {
            let s = current.take().unwrap();
            out.push(s.split(';').next().unwrap().to_owned());
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.replace(' ', "");
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The file a `use` path (already made absolute: `[a, b, X]`) lands in.
fn resolve(files: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains(m))
        .unwrap_or_default()
}

/// Edges file → file of one crate's `src`.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: Vec<PathBuf> = sources(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let me = module_of(f);
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        for stmt in use_statements(&text) {
            for path in expand(&stmt) {
                let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                let absolute: Vec<String> = match segs.first() {
                    Some(&"crate") => segs[1..].iter().map(|s| (*s).to_owned()).collect(),
                    Some(&"super") => {
                        let mut base = me.clone();
                        let mut rest = &segs[..];
                        while rest.first() == Some(&"super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.extend(rest.iter().map(|s| (*s).to_owned()));
                        base
                    }
                    _ => continue,
                };
                let target = resolve(&modules, &absolute);
                if target != me {
                    edges.entry(me.clone()).or_default().insert(target);
                }
            }
        }
    }
    edges
}

/// One circle of the graph, if there is any (depth-first search).
fn find_circle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle: Vec<String> = stack[at..].iter().map(|m| name(m)).collect();
            circle.push(name(node));
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib.rs".to_owned()
    } else {
        format!("{}.rs", m.join("/"))
    }
}

fn crate_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for parent in ["crates", "bins"] {
        for e in std::fs::read_dir(root.join(parent)).unwrap() {
            let src = e.unwrap().path().join("src");
            if src.is_dir() {
                out.push(src);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_file_imports_another_in_a_circle_in_any_crate() {
    let mut circles = Vec::new();
    let mut edges_seen = 0;
    for src in crate_dirs() {
        let g = graph(&src);
        edges_seen += g.values().map(BTreeSet::len).sum::<usize>();
        if let Some(c) = find_circle(&g) {
            circles.push(format!("{}: {}", src.display(), c.join(" -> ")));
        }
    }
    // Positive control: the graphs were read, so the check above can fail.
    assert!(edges_seen > 50, "only {edges_seen} import edges found");
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_finds_a_circle_it_is_shown() {
    let dir = std::env::temp_dir().join(format!("lumen-imports-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    // A grouped, multi-line `use` and a `super::` path through a child module.
    std::fs::write(
        src.join("a.rs"),
        "mod c;\nuse crate::{b::{X,\n    Y}, a::c::Z};\n",
    )
    .unwrap();
    std::fs::write(src.join("a/c.rs"), "pub struct Z;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub(crate) use super::a::c::Z as W;\n").unwrap();
    let acyclic = graph(&src);
    assert_eq!(find_circle(&acyclic), None, "{acyclic:?}");
    std::fs::write(src.join("a/c.rs"), "use super::super::b::X;\n").unwrap();
    let g = graph(&src);
    let _ = std::fs::remove_dir_all(&dir);
    let circle = find_circle(&g).expect("b.rs -> a/c.rs -> b.rs");
    assert!(
        circle.contains(&"b.rs".to_owned()) && circle.contains(&"a/c.rs".to_owned()),
        "{circle:?}"
    );
}
