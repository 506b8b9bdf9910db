//! Who may call, how much, and which answers are reused: the settings of the core's policy
//! step (`lumen_gateway::PolicyStep`). Plain serde types, as the routing settings are, so the
//! server's configuration embeds them and an embedder fills them in without the server crate.

use serde::Deserialize;

use crate::keys::ApiKey;

/// `[auth]`: API keys. Off by default; when on, every `/v1/*` call needs a key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    /// SHA-256 (hex) of the key that may use `/admin/*`; without it the admin API is off.
    pub admin_key_sha256: Option<String>,
    /// Keys from configuration (digests only). More can be created at run time via `/admin/keys`.
    pub keys: Vec<ApiKey>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Completion tokens assumed when a request sets no `max_tokens`, for the TPM reservation
    /// (settled to the real usage afterwards).
    pub default_max_tokens: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 1_024,
        }
    }
}

/// `[cache]`: exact-match response cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl_ms: u64,
    /// Larger answers are not cached.
    pub max_entry_bytes: usize,
    /// In-memory cache capacity, as answer bytes plus 64 per entry (with Redis, Redis's own
    /// memory policy applies).
    pub max_bytes: u64,
    /// Models whose answers are cached even when not deterministic (temperature > 0, no seed).
    pub any_temperature_models: Vec<String>,
}

/// The in-memory cache's default size: it fits beside the streams and the body budget in the
/// shipped Kubernetes manifest's memory limit (docs/deploy.md, Sizing), where it is what a
/// replica uses when Redis is not configured.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_ms: 3_600_000,
            max_entry_bytes: 1024 * 1024,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            any_temperature_models: Vec::new(),
        }
    }
}
