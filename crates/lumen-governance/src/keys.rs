//! API keys: stored only as SHA-256 digests, compared in constant time, each with the models it
//! may use and its limits.

use rustc_hash::FxHashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::InvalidConfig;
use crate::spec::LimitSpec;

/// A key as configured or created at run time. Never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Shown in logs, metrics labels are never keyed by it.
    pub name: String,
    /// Hex SHA-256 of the secret (`lumen keys hash` prints it).
    pub sha256: String,
    /// Public model ids the key may use; absent means every exposed model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: LimitSpec,
    /// Limits per model, on top of the key's own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub per_model: std::collections::BTreeMap<String, LimitSpec>,
}

impl ApiKey {
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    pub fn digest(&self) -> Option<[u8; 32]> {
        parse_hex(&self.sha256)
    }

    /// What the key's counters and cached answers are kept under: its name (readable in
    /// Redis) and the first 16 hex digits of its secret's digest. A key deleted and created
    /// again under the same name has another secret, so it starts with fresh counters and
    /// never reads the old key's cached (possibly private) answers.
    pub fn namespace(&self) -> String {
        let d = self.sha256.trim();
        let short = d.get(..16).unwrap_or(d).to_ascii_lowercase();
        format!("{}#{short}", self.name)
    }
}

/// SHA-256 of a presented secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn to_hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    // Hex digits only: `from_str_radix` alone would also take a sign (`+f`).
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// A new random secret: `lumen-` and 48 hex characters from the OS's CSPRNG.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "lumen-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The keys from configuration, indexed by digest.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// Indexed by SHA-256 output, which no caller can steer into collisions: Fx is enough.
    by_digest: FxHashMap<[u8; 32], Arc<ApiKey>>,
}

impl KeyRing {
    pub fn new(keys: &[ApiKey]) -> Result<Self, InvalidConfig> {
        let mut by_digest = FxHashMap::default();
        let mut names = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            let d = k.digest().ok_or_else(|| InvalidConfig {
                key: format!("auth.keys[{i}].sha256"),
                reason: "must be 64 hex characters (a SHA-256 digest; see `lumen keys hash`)"
                    .to_owned(),
            })?;
            if k.name.is_empty() || !names.insert(k.name.clone()) {
                return Err(InvalidConfig {
                    key: format!("auth.keys[{i}].name"),
                    reason: "key names must be present and unique".to_owned(),
                });
            }
            if let Some((field, reason)) = k.limits.fairness_error() {
                return Err(InvalidConfig {
                    key: format!("auth.keys[{i}].limits.{field}"),
                    reason: reason.to_owned(),
                });
            }
            if by_digest.insert(d, Arc::new(k.clone())).is_some() {
                return Err(InvalidConfig {
                    key: format!("auth.keys[{i}].sha256"),
                    reason: "two keys have the same digest".to_owned(),
                });
            }
        }
        Ok(Self { by_digest })
    }

    /// Finds the key for a presented secret. The map is keyed by digest, so timing can at most
    /// reveal something about a SHA-256 output; the final comparison is constant time anyway.
    pub fn lookup(&self, secret: &str) -> Option<Arc<ApiKey>> {
        let d = digest(secret);
        let (stored, k) = self.by_digest.get_key_value(&d)?;
        bool::from(stored.ct_eq(&d)).then(|| k.clone())
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Constant-time digest comparison, for keys found in a store.
pub fn digest_matches(stored_hex: &str, presented: &[u8; 32]) -> bool {
    parse_hex(stored_hex).is_some_and(|d| bool::from(d.ct_eq(presented)))
}

#[cfg(test)]
mod tests;
