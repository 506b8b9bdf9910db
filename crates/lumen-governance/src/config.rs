//! Governance settings: plain serde types with defaults, validated once before use.

use std::collections::BTreeMap;

use serde::Deserialize;

mod access;
mod signals;

pub use access::{AuthConfig, CacheConfig, DEFAULT_CACHE_MAX_BYTES, LimitsConfig};
pub use signals::{CacheAwareConfig, SignalsConfig};

/// How requests are spread across the backends of one model's pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// The backend with the fewest requests in flight.
    LeastInFlight,
    /// Two random backends, the one with fewer in flight.
    PowerOfTwo,
    /// Consistent (rendezvous) hashing on `x-session-id` or the `user` field.
    SessionAffinity,
    /// Bounded-load rendezvous hashing on the prompt's leading content (KV-cache reuse).
    PrefixAffinity,
    /// The backend that holds the longest prefix of the prompt (an index learned from the
    /// traffic routed), unless its engine's queue or KV cache is out of balance; otherwise a
    /// deterministic placement every replica agrees on (`policy/cache_aware.rs`). The default:
    /// on the fleet benchmark it cuts round robin's p99 time to first token to a third where
    /// prompts are reused and stays within a few percent of it where they are not
    /// (`docs/tuning.md`).
    #[default]
    CacheAware,
    /// The lowest expected wait from the engine's own queue, batch and KV use, plus what Lumen
    /// sent it since it last reported (`policy/load_aware.rs`).
    LoadAware,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastInFlight => "least_in_flight",
            Self::PowerOfTwo => "power_of_two",
            Self::SessionAffinity => "session_affinity",
            Self::PrefixAffinity => "prefix_affinity",
            Self::CacheAware => "cache_aware",
            Self::LoadAware => "load_aware",
        }
    }

    /// Whether the policy reads the engines' own load reports.
    pub fn reads_signals(self) -> bool {
        matches!(self, Self::CacheAware | Self::LoadAware)
    }
}

/// Everything governance decides by. Lives under `[routing]` in Lumen's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Used when a request leaves `model` blank. With none set and exactly one model exposed,
    /// that model is used.
    pub default_model: Option<String>,
    /// Allowlist of public ids (aliases or discovered ids). `None` exposes everything routable.
    pub exposed_models: Option<Vec<String>>,
    /// Public name → engine model id. Requests are rewritten on the way in, responses back.
    pub aliases: BTreeMap<String, String>,
    pub auto: AutoConfig,
    pub passthrough: PassthroughConfig,
    /// Balancing policy for models without their own.
    pub policy: Policy,
    /// Per-model settings, keyed by public or engine id.
    pub models: BTreeMap<String, ModelConfig>,
    /// How many leading bytes of the prompt `prefix_affinity` hashes.
    pub prefix_bytes: usize,
    /// `prefix_affinity` load bound: a backend takes a request only while its in-flight count
    /// stays within this factor of the pool's average.
    pub prefix_load_factor: f64,
    /// Seed for `power_of_two`'s random choices; random when unset.
    pub seed: Option<u64>,
    /// Background refresh of engines' model lists, in milliseconds.
    pub discovery_interval_ms: u64,
    /// Public model → the models to try, in order, when its own pool cannot serve a request
    /// (every retryable attempt failed, every backend is out, or its queue is full).
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Public model → larger-context models, tried once, only when an engine answers that
    /// the request exceeds the model's context length.
    pub context_fallbacks: BTreeMap<String, Vec<String>>,
    /// Finish a stream that broke after it started on another backend (or a fallback) by
    /// asking it to continue the partial answer. Off by default: another engine may not say
    /// what the first would have. `models.<id>.stream_continuation` overrides it per model.
    pub stream_continuation: bool,
    /// The engines' own load reports (`/metrics`) and the thresholds read on them.
    pub signals: SignalsConfig,
    /// The index behind `cache_aware`.
    pub cache_aware: CacheAwareConfig,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            default_model: None,
            exposed_models: None,
            aliases: BTreeMap::new(),
            auto: AutoConfig::default(),
            passthrough: PassthroughConfig::default(),
            policy: Policy::default(),
            models: BTreeMap::new(),
            prefix_bytes: 1024,
            prefix_load_factor: 1.25,
            seed: None,
            discovery_interval_ms: 30_000,
            fallbacks: BTreeMap::new(),
            context_fallbacks: BTreeMap::new(),
            stream_continuation: false,
            signals: SignalsConfig::default(),
            cache_aware: CacheAwareConfig::default(),
        }
    }
}

/// `model: "auto"`: the first model in `preference` that has an available backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoConfig {
    pub preference: Vec<String>,
}

/// Unknown model ids go, unchanged, to these backends (off by default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassthroughConfig {
    pub enabled: bool,
    /// Backend names; empty means every backend.
    pub backends: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub policy: Option<Policy>,
    /// Overrides `routing.stream_continuation` for this model.
    pub stream_continuation: Option<bool>,
}

/// A governance setting that cannot work, with the key that names it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        key: key.into(),
        reason: reason.into(),
    }
}

impl GovernanceConfig {
    /// Whether any model may have its broken streams continued.
    pub fn continues_any_stream(&self) -> bool {
        self.stream_continuation
            || self
                .models
                .values()
                .any(|m| m.stream_continuation == Some(true))
    }

    /// Whether a broken stream of this model (public or engine id, as `models` is keyed) may be
    /// continued on another engine.
    pub fn continues_streams(&self, public: &str, engine: &str) -> bool {
        [public, engine]
            .iter()
            .find_map(|m| self.models.get(*m).and_then(|c| c.stream_continuation))
            .unwrap_or(self.stream_continuation)
    }

    /// Checks the settings against each other and against the configured backend names.
    pub fn validate(&self, backend_names: &[&str]) -> Result<(), InvalidConfig> {
        for (key, chains) in [
            ("routing.fallbacks", &self.fallbacks),
            ("routing.context_fallbacks", &self.context_fallbacks),
        ] {
            for (model, chain) in chains {
                if model.is_empty() || chain.iter().any(String::is_empty) {
                    return Err(invalid(key, "model ids must not be empty"));
                }
                if chain.iter().any(|m| m == model || m == crate::AUTO) {
                    return Err(invalid(
                        format!("{key}.{model}"),
                        "a model cannot fall back to itself or to `auto`",
                    ));
                }
            }
        }
        for (public, target) in &self.aliases {
            if public.is_empty() || target.is_empty() {
                return Err(invalid(
                    "routing.aliases",
                    "alias names and targets must not be empty",
                ));
            }
            if public == crate::AUTO {
                return Err(invalid("routing.aliases", "`auto` is reserved"));
            }
            if self.aliases.contains_key(target) {
                return Err(invalid(
                    format!("routing.aliases.{public}"),
                    format!("target {target:?} is itself an alias; aliases do not chain"),
                ));
            }
        }
        if let Some(list) = &self.exposed_models {
            if list.iter().any(String::is_empty) {
                return Err(invalid(
                    "routing.exposed_models",
                    "model ids must not be empty",
                ));
            }
        }
        if self.auto.preference.iter().any(|m| m == crate::AUTO) {
            return Err(invalid(
                "routing.auto.preference",
                "`auto` cannot prefer itself",
            ));
        }
        for name in &self.passthrough.backends {
            if !backend_names.contains(&name.as_str()) {
                return Err(invalid(
                    "routing.passthrough.backends",
                    format!("no backend is named {name:?}"),
                ));
            }
        }
        if !(self.prefix_load_factor >= 1.0 && self.prefix_load_factor.is_finite()) {
            return Err(invalid(
                "routing.prefix_load_factor",
                "must be a number >= 1.0",
            ));
        }
        if self.prefix_bytes == 0 {
            return Err(invalid("routing.prefix_bytes", "must be greater than 0"));
        }
        if self.discovery_interval_ms == 0 {
            return Err(invalid(
                "routing.discovery_interval_ms",
                "must be greater than 0",
            ));
        }
        self.signals.validate()?;
        self.cache_aware.validate()?;
        Ok(())
    }

    /// Whether any model may be routed by `policy` (the default or a model's own).
    pub fn uses(&self, policy: Policy) -> bool {
        self.policy == policy || self.models.values().any(|m| m.policy == Some(policy))
    }

    /// Whether the engines' `/metrics` should be scraped: as configured, else when a policy
    /// reads them or saturation holding is on.
    pub fn scrapes_signals(&self) -> bool {
        self.signals.enabled.unwrap_or_else(|| {
            self.signals.saturation_queue > 0
                || self.policy.reads_signals()
                || self
                    .models
                    .values()
                    .any(|m| m.policy.is_some_and(Policy::reads_signals))
        })
    }

    pub(crate) fn policy_for(&self, public: &str, engine: &str) -> Policy {
        self.models
            .get(public)
            .or_else(|| self.models.get(engine))
            .and_then(|m| m.policy)
            .unwrap_or(self.policy)
    }

    pub(crate) fn is_exposed(&self, public: &str) -> bool {
        self.exposed_models
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == public))
    }
}
