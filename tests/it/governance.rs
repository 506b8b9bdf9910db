//! Governance end to end: 3 simulated engines, 2 models, an alias, `auto`, passthrough,
//! session affinity, and hot reload under load. Configured through a real TOML file.

use std::path::PathBuf;
use std::time::Duration;

use lumen_server::Gateway;
use lumen_server::config::{self, Overrides};
use lumen_tests::*;
use serde_json::Value;

struct Fleet {
    lumen: Lumen,
    sims: Vec<lumen_sim::Simulator>,
    urls: Vec<String>,
    file: PathBuf,
}

fn toml(urls: &[String], extra_routing: &str) -> String {
    format!(
        r#"
[[backends]]
name = "a"
url = "{a}"
[[backends]]
name = "b"
url = "{b}"
[[backends]]
name = "c"
url = "{c}"
kind = "sglang"

[routing]
default_model = "chat"
exposed_models = ["llama", "qwen", "chat"]
seed = 1
{extra_routing}

[routing.aliases]
chat = "llama"

[routing.auto]
preference = ["qwen", "llama"]

[routing.passthrough]
enabled = true
backends = ["c"]

[routing.models.qwen]
policy = "session_affinity"
"#,
        a = urls[0],
        b = urls[1],
        c = urls[2]
    )
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lumen-test-{}-{}", std::process::id(), next_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn fleet() -> Fleet {
    let (a, sa) = sim(&["llama", "qwen"]).await;
    let (b, sb) = sim(&["llama"]).await;
    let (c, sc) = sim(&["qwen", "experimental"]).await;
    let urls = vec![a, b, c];
    let file = temp_file("lumen.toml");
    std::fs::write(&file, toml(&urls, "")).unwrap();
    let cfg = config::load(Some(&file), &Overrides::default()).unwrap();
    let lumen = Lumen::start(Gateway::from_config(&cfg).unwrap()).await;
    Fleet {
        lumen,
        sims: vec![sa, sb, sc],
        urls,
        file,
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":2}}"#)
}

fn last_model_seen(sim: &lumen_sim::Simulator) -> Option<String> {
    sim.records()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn models_lists_exactly_what_can_be_routed() {
    let f = fleet().await;
    let v = get(&f.lumen.url("/v1/models")).await.json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["chat", "llama", "qwen", "auto"],
        "allowlisted, routable; not `experimental`"
    );
    let chat = get(&f.lumen.url("/v1/models/chat")).await.json();
    assert_eq!(
        chat["max_model_len"], 8192,
        "engine metadata survives aliasing"
    );
    assert_eq!(chat["root"], "llama");
    assert_eq!(
        get(&f.lumen.url("/v1/models/experimental")).await.status,
        404
    );
}

#[tokio::test]
async fn alias_is_rewritten_both_ways_streamed_and_not() {
    let f = fleet().await;
    let r = post(&f.lumen.url("/v1/chat/completions"), &chat("chat")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "chat", "the caller sees the alias");
    let seen: Vec<Option<String>> = f.sims[..2].iter().map(last_model_seen).collect();
    assert!(
        seen.contains(&Some("llama".into())),
        "the engine saw its own id: {seen:?}"
    );

    let body = r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream_options":{"include_usage":true}}"#;
    let r = post(&f.lumen.url("/v1/chat/completions"), body).await;
    let events = r.sse_data();
    assert_eq!(events.last().unwrap(), "[DONE]");
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["model"], "chat", "every chunk shows the alias: {e}");
    }
    // Default model: blank means the alias `chat`.
    let r = post(
        &f.lumen.url("/v1/chat/completions"),
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.json()["model"], "chat");
}

#[tokio::test]
async fn auto_names_the_model_that_served() {
    let f = fleet().await;
    let r = post(&f.lumen.url("/v1/chat/completions"), &chat("auto")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["model"],
        "qwen",
        "first preference with a healthy backend"
    );
    // With every qwen backend out of rotation, auto falls to llama.
    for s in f.lumen.gateway.core().router().slots() {
        if s.name == "a" || s.name == "c" {
            s.set_available(false);
        }
    }
    let r = post(&f.lumen.url("/v1/chat/completions"), &chat("auto")).await;
    assert_eq!(r.json()["model"], "llama");
    assert_eq!(
        f.sims[1].generation_count(),
        1,
        "served by b, the only llama engine left"
    );
}

#[tokio::test]
async fn passthrough_sends_unknown_ids_unchanged_to_its_pool() {
    let f = fleet().await;
    let r = post(&f.lumen.url("/v1/chat/completions"), &chat("experimental")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "experimental");
    assert_eq!(last_model_seen(&f.sims[2]).as_deref(), Some("experimental"));
    // An id no engine knows reaches the pool too, and the engine's own 404 comes back.
    let r = post(
        &f.lumen.url("/v1/chat/completions"),
        &chat("nobody-serves-this"),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "The model `nobody-serves-this` does not exist."
    );
    assert_eq!(
        f.sims[0].generation_count() + f.sims[1].generation_count(),
        0
    );
}

#[tokio::test]
async fn session_affinity_keeps_a_session_on_one_engine() {
    let f = fleet().await;
    for session in ["alice", "bob", "carol", "dave"] {
        let before: Vec<u64> = f.sims.iter().map(|s| s.generation_count()).collect();
        for _ in 0..5 {
            let r = send(
                http::Method::POST,
                &f.lumen.url("/v1/chat/completions"),
                &chat("qwen"),
                &[("x-session-id", session)],
            )
            .await;
            assert_eq!(r.status, 200);
        }
        let grew: Vec<u64> = f
            .sims
            .iter()
            .zip(&before)
            .map(|(s, b)| s.generation_count() - b)
            .collect();
        assert!(
            grew.contains(&5),
            "all five requests of {session} on one engine: {grew:?}"
        );
    }
}

#[tokio::test]
async fn reload_under_load_loses_nothing_and_bad_files_are_rejected() {
    let f = fleet().await;
    let total_per_client = 150;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let url = f.lumen.url("/v1/chat/completions");
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..total_per_client {
                    let model = ["chat", "qwen", "llama", "auto"][(c + i) % 4];
                    let r = post(&url, &chat(model)).await;
                    assert_eq!(r.status, 200, "{model}: {}", r.text());
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let gw = f.lumen.gateway.clone();
    let policies = [
        "round_robin",
        "least_in_flight",
        "power_of_two",
        "prefix_affinity",
    ];
    for round in 0..20 {
        let extra = format!("policy = \"{}\"", policies[round % policies.len()]);
        if round == 10 {
            std::fs::write(&f.file, "this is [not toml").unwrap();
            assert!(
                gw.reload_from(Some(&f.file), &Overrides::default())
                    .is_err()
            );
            std::fs::write(&f.file, toml(&f.urls, "policy = \"sideways\"")).unwrap();
            let err = gw
                .reload_from(Some(&f.file), &Overrides::default())
                .unwrap_err();
            assert!(err.to_string().contains("policy"), "{err}");
        }
        std::fs::write(&f.file, toml(&f.urls, &extra)).unwrap();
        gw.reload_from(Some(&f.file), &Overrides::default())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut served = 0;
    for c in clients {
        served += c.await.unwrap();
    }
    assert_eq!(served, 4 * total_per_client);
    let engines: u64 = f.sims.iter().map(|s| s.generation_count()).sum();
    assert_eq!(
        engines,
        4 * total_per_client as u64,
        "every request reached exactly one engine"
    );
    assert_eq!(gw.reload_counts(), (20, 2));
    assert!(
        gw.core()
            .router()
            .slots()
            .iter()
            .all(|s| s.in_flight() == 0)
    );
}
