//! ARCHITECTURE.md's invariants, checked against the manifests so they cannot drift silently.

use std::path::Path;

/// The `[dependencies]` names of a crate (dev-dependencies do not count: tests may use anything).
fn deps(krate: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("crates")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside {
            if let Some((name, _)) = line.split_once(['=', '.']) {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('#') {
                    out.push(name.to_owned());
                }
            }
        }
    }
    assert!(
        !out.is_empty() || krate == "lumen-openai-types",
        "{krate}: no dependencies parsed"
    );
    out
}

fn assert_none(krate: &str, forbidden: &[&str]) {
    let d = deps(krate);
    for f in forbidden {
        assert!(
            !d.iter().any(|x| x == f),
            "{krate} must not depend on {f}: {d:?}"
        );
    }
}

#[test]
fn crate_dependency_rules_hold() {
    let lumen = |c: &str| format!("lumen-{c}");
    let all_lumen: Vec<String> = [
        "backend",
        "governance",
        "resilience",
        "backend-vllm",
        "server",
        "sim",
    ]
    .iter()
    .map(|c| lumen(c))
    .collect();
    // The types crate: no runtime, no HTTP, no other Lumen crate.
    let mut f: Vec<&str> = all_lumen.iter().map(String::as_str).collect();
    f.extend(["tokio", "hyper", "hyper-util", "figment", "futures"]);
    assert_none("lumen-openai-types", &f);
    // The seam: no HTTP, nothing above it.
    assert_none(
        "lumen-backend",
        &[
            "hyper",
            "hyper-util",
            "figment",
            "lumen-governance",
            "lumen-resilience",
            "lumen-backend-vllm",
            "lumen-server",
        ],
    );
    // Governance: no HTTP, no resilience, no backend crate (not even the trait).
    assert_none(
        "lumen-governance",
        &[
            "hyper",
            "hyper-util",
            "figment",
            "tokio",
            "lumen-resilience",
            "lumen-backend",
            "lumen-backend-vllm",
            "lumen-server",
        ],
    );
    // Resilience: no HTTP, no governance, no concrete backend.
    assert_none(
        "lumen-resilience",
        &[
            "hyper",
            "hyper-util",
            "figment",
            "lumen-governance",
            "lumen-backend-vllm",
            "lumen-server",
        ],
    );
    // The vLLM backend: a leaf that knows engines only.
    assert_none(
        "lumen-backend-vllm",
        &[
            "figment",
            "lumen-governance",
            "lumen-resilience",
            "lumen-server",
        ],
    );
    // Redis lives in its own crate; governance only defines the store traits.
    assert_none("lumen-governance", &["redis", "lumen-redis"]);
    assert_none(
        "lumen-redis",
        &[
            "hyper",
            "hyper-util",
            "figment",
            "lumen-server",
            "lumen-backend-vllm",
        ],
    );
    // Only the server knows figment.
    for c in [
        "lumen-openai-types",
        "lumen-backend",
        "lumen-governance",
        "lumen-resilience",
        "lumen-backend-vllm",
        "lumen-sim",
    ] {
        assert_none(c, &["figment"]);
    }
    // Positive controls: the parser sees real dependencies, so the checks above can fail.
    assert!(deps("lumen-server").contains(&"figment".to_owned()));
    assert!(deps("lumen-backend-vllm").contains(&"hyper".to_owned()));
    assert!(deps("lumen-governance").contains(&"lumen-openai-types".to_owned()));
}
