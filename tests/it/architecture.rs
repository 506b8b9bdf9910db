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
        "lumen-gateway",
    ] {
        assert_none(c, &["figment"]);
    }
    // Positive controls: the parser sees real dependencies, so the checks above can fail.
    assert!(deps("lumen-server").contains(&"figment".to_owned()));
    assert!(deps("lumen-backend-vllm").contains(&"hyper".to_owned()));
    assert!(deps("lumen-governance").contains(&"lumen-openai-types".to_owned()));
}

/// The core crate is embeddable without the server's weight: nothing in its whole dependency
/// tree (not only its manifest) is an HTTP server, figment, Redis, rustls or Prometheus.
#[test]
fn the_core_crate_pulls_in_no_server_dependencies() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "lumen-gateway",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for forbidden in [
        "hyper",
        "hyper-util",
        "figment",
        "redis",
        "lumen-redis",
        "rustls",
        "prometheus-client",
        "lumen-server",
        "lumen-backend-vllm",
    ] {
        assert!(
            !names.contains(&forbidden),
            "lumen-gateway must not depend on {forbidden}: {names:?}"
        );
    }
    // Positive controls: the tree was read, so the checks above can fail.
    for expected in [
        "tokio",
        "lumen-governance",
        "lumen-resilience",
        "lumen-backend",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    println!("lumen-gateway: {} packages", {
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        unique.len()
    });
}
mod forwards;
mod imports;
mod unsafe_code;
