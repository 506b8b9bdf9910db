//! The admin API, behind the admin key: API keys created and revoked at run time (stored in
//! Redis when configured, so every replica sees them) and current usage per key.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use lumen_governance::keys::{ApiKey, digest, generate, to_hex};
use lumen_governance::limits::LimitSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gateway::Gateway;

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    limits: LimitSpec,
    #[serde(default)]
    per_model: std::collections::BTreeMap<String, LimitSpec>,
}

/// Key names appear in logs, URLs and usage reports: a small, documented alphabet that never
/// needs escaping.
fn valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

fn describe(k: &ApiKey, source: &str) -> Value {
    json!({"name": k.name, "models": k.models, "limits": k.limits, "per_model": k.per_model, "source": source})
}

/// What the admin API answers: JSON, or CSV for the usage history when asked for it.
pub(crate) enum Answer {
    Json(StatusCode, Value),
    Csv(String),
}

/// Serves `/admin/*`. Without `auth.admin_key_sha256` the admin API does not exist (404).
pub(crate) async fn handle(
    gw: &Gateway,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Answer, ApiError> {
    if (method, path) == (&Method::GET, "/admin/usage/history") {
        admin(gw, method, path, headers)?;
        return history(gw, query, headers).await;
    }
    json_api(gw, method, path, headers, body)
        .await
        .map(|(status, value)| Answer::Json(status, value))
}

/// The admin key check: `Err` when the admin API is off (404) or the key is wrong (401).
fn admin(gw: &Gateway, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    match crate::shared::is_admin(headers, gw.settings().admin_digest) {
        None => Err(ApiError::route_not_found(method.as_str(), path)),
        Some(false) => Err(ApiError::invalid_key()),
        Some(true) => Ok(()),
    }
}

/// `GET /admin/usage/history?from=YYYY-MM-DD&to=YYYY-MM-DD[&key=][&model=]`: requests and
/// tokens per key, model and day (UTC), with their cost when `accounting.prices` names the
/// model; CSV with `Accept: text/csv`. Without `from`/`to`: today.
async fn history(gw: &Gateway, query: &str, headers: &HeaderMap) -> Result<Answer, ApiError> {
    use lumen_governance::accounting::{Day, UsageQuery, to_csv};
    let mut from = None;
    let mut to = None;
    let mut key = None;
    let mut model = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::path::percent_decode(&value.replace('+', " "));
        let day = |v: &str| {
            v.parse::<Day>().map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    crate::error::INVALID_REQUEST,
                    e.to_string(),
                )
                .with_param(name)
            })
        };
        match name {
            "from" => from = Some(day(&value)?),
            "to" => to = Some(day(&value)?),
            "key" => key = Some(value),
            "model" => model = Some(value),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    crate::error::INVALID_REQUEST,
                    "Unknown parameter: use from, to, key and model.",
                )
                .with_param(name));
            }
        }
    }
    let today = Day::from_unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let to = to.unwrap_or(today);
    let mut q = UsageQuery::new(from.unwrap_or(to), to).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::error::INVALID_REQUEST,
            e.to_string(),
        )
        .with_param("from")
    })?;
    if let Some(k) = key {
        q = q.with_key(k);
    }
    if let Some(m) = model {
        q = q.with_model(m);
    }
    let mut rows = gw.core().policy().usage_history(&q).await?;
    let prices = gw.settings().prices.clone();
    prices.apply(&mut rows);
    let csv = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if csv {
        return Ok(Answer::Csv(to_csv(&rows, !prices.is_empty())));
    }
    Ok(Answer::Json(
        StatusCode::OK,
        json!({"object": "list", "data": rows}),
    ))
}

async fn json_api(
    gw: &Gateway,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(StatusCode, Value), ApiError> {
    match crate::shared::is_admin(headers, gw.settings().admin_digest) {
        None => return Err(ApiError::route_not_found(method.as_str(), path)),
        Some(false) => return Err(ApiError::invalid_key()),
        Some(true) => {}
    }
    let policy = gw.core().policy();
    let store_err = |e: lumen_governance::store::StoreError| {
        policy.store_failed("admin", &e);
        ApiError::shared_state_unavailable()
    };
    match (method, path) {
        (&Method::GET, "/admin/keys") => {
            let mut out: Vec<Value> = policy
                .settings()
                .keys()
                .iter()
                .map(|k| describe(k, "config"))
                .collect();
            let runtime = policy.key_store().list().await.map_err(store_err)?;
            out.extend(runtime.iter().map(|k| describe(k, "runtime")));
            Ok((StatusCode::OK, json!({"object": "list", "data": out})))
        }
        (&Method::POST, "/admin/keys") => {
            let req: NewKey = lumen_openai_types::request::parse(body)?;
            if !valid_key_name(&req.name) {
                return Err(lumen_openai_types::RequestError::invalid(
                        "'name' must be 1 to 64 characters from A-Z, a-z, 0-9, '-', '_', '.', ':' and '@'.",
                        "name",
                    )
                    .into());
            }
            if policy.settings().keys().iter().any(|k| k.name == req.name) {
                return Err(lumen_openai_types::RequestError::invalid(
                    "A key with this name is defined in the configuration.",
                    "name",
                )
                .into());
            }
            let secret = generate().map_err(|_| ApiError::shared_state_unavailable())?;
            let key = ApiKey {
                name: req.name,
                sha256: to_hex(&digest(&secret)),
                models: req.models,
                limits: req.limits,
                per_model: req.per_model,
            };
            let mut shown = describe(&key, "runtime");
            if !policy.key_store().insert(key).await.map_err(store_err)? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    crate::error::INVALID_REQUEST,
                    "A run-time key with this name exists; delete it first to replace it.",
                )
                .with_param("name")
                .with_code("key_exists"));
            }
            // The only time the secret is ever shown.
            shown["key"] = Value::String(secret);
            Ok((StatusCode::CREATED, shown))
        }
        (&Method::DELETE, p) if p.starts_with("/admin/keys/") => {
            // Decoded, so a key whose name was created with characters that need escaping
            // (before names were restricted) can still be revoked.
            let name = crate::path::percent_decode(&p["/admin/keys/".len()..]);
            let name = name.as_str();
            if policy.key_store().remove(name).await.map_err(store_err)? {
                Ok((StatusCode::OK, json!({"name": name, "deleted": true})))
            } else {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    crate::error::INVALID_REQUEST,
                    format!("No run-time key named `{name}`."),
                ))
            }
        }
        (&Method::GET, "/admin/usage") => {
            let mut keys = policy.settings().keys().to_vec();
            keys.extend(policy.key_store().list().await.map_err(store_err)?);
            let mut out = Vec::new();
            for k in keys {
                let usage = policy.limiter().usage(&k).await.map_err(store_err)?;
                let counters: Vec<Value> = usage
                    .into_iter()
                    .map(|u| {
                        let mut c = json!({"counter": u.counter, "used": u.used, "limit": u.limit, "reset_seconds": u.reset.as_secs()});
                        if let Some(m) = u.model {
                            c["model"] = Value::String(m);
                        }
                        c
                    })
                    .collect();
                out.push(json!({"name": k.name, "counters": counters}));
            }
            Ok((StatusCode::OK, json!({"object": "list", "data": out})))
        }
        _ => Err(ApiError::route_not_found(method.as_str(), path)),
    }
}
