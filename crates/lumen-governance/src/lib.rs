//! Model governance and routing.
//!
//! Decides which model ids a caller may use and which backend serves each request. It is plain
//! Rust over a generic backend handle `B`, so it needs no HTTP stack and no backend crate, and an
//! embedder can use it with their own handle type.
//!
//! The routing table is immutable and swapped atomically ([`arc_swap`]): model discovery (and,
//! later, config reload) builds a new table while requests in flight keep the one they started on.
//!
//! # Layout
//! - [`Router`]: the live table plus the pick.
//! - [`RoutingTable`], [`BackendEntry`]: one immutable snapshot.
//! - [`GovernanceError`]: why a request cannot be routed.
//!
//! # Must not depend on
//! hyper, the resilience crate, or any backend crate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use lumen_openai_types::Model;

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    ModelNotFound { model: String },
    #[error("you must provide a model parameter")]
    ModelRequired,
}

/// One backend and the models it serves (fixed in config, or discovered from the engine).
#[derive(Debug, Clone)]
pub struct BackendEntry<B> {
    pub name: String,
    pub backend: B,
    pub models: Vec<Model>,
    /// True when `models` came from config and discovery must not replace it.
    pub fixed_models: bool,
}

/// An immutable snapshot of what can be routed where.
#[derive(Debug)]
pub struct RoutingTable<B> {
    backends: Vec<BackendEntry<B>>,
    /// Model id to the indices of the backends that serve it.
    pools: HashMap<String, Vec<usize>>,
    /// Each routable model once, with the metadata of the first backend that reported it.
    models: BTreeMap<String, Model>,
}

impl<B> RoutingTable<B> {
    pub fn new(backends: Vec<BackendEntry<B>>) -> Self {
        let mut pools: HashMap<String, Vec<usize>> = HashMap::new();
        let mut models = BTreeMap::new();
        for (i, b) in backends.iter().enumerate() {
            for m in &b.models {
                pools.entry(m.id.clone()).or_default().push(i);
                models.entry(m.id.clone()).or_insert_with(|| m.clone());
            }
        }
        Self {
            backends,
            pools,
            models,
        }
    }

    pub fn backends(&self) -> &[BackendEntry<B>] {
        &self.backends
    }

    /// Every routable model, sorted by id.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }
}

/// A routing decision.
#[derive(Debug, Clone)]
pub struct Route<B> {
    /// The model id to send to the backend (the default filled in if the caller gave none).
    pub model: String,
    pub backend: B,
    pub backend_name: String,
}

/// The live routing table and the balancing state.
pub struct Router<B> {
    table: ArcSwap<RoutingTable<B>>,
    default_model: Option<String>,
    next: AtomicUsize,
}

impl<B: Clone> Router<B> {
    pub fn new(table: RoutingTable<B>, default_model: Option<String>) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            default_model: default_model.filter(|m| !m.is_empty()),
            next: AtomicUsize::new(0),
        }
    }

    /// The current snapshot; hold it for the length of one decision, not longer.
    pub fn table(&self) -> Arc<RoutingTable<B>> {
        self.table.load_full()
    }

    /// Picks a backend for `model` (round robin across the backends that serve it).
    ///
    /// An empty `model` uses the configured default, or the only routable model if there is
    /// exactly one (as a single engine does).
    pub fn route(&self, model: &str) -> Result<Route<B>, GovernanceError> {
        let table = self.table.load();
        let model = if model.is_empty() {
            match (&self.default_model, table.models.len()) {
                (Some(d), _) => d.clone(),
                (None, 1) => table.models.keys().next().cloned().unwrap_or_default(),
                (None, _) => return Err(GovernanceError::ModelRequired),
            }
        } else {
            model.to_owned()
        };
        let pool = match table.pools.get(&model) {
            Some(p) if !p.is_empty() => p,
            _ => return Err(GovernanceError::ModelNotFound { model }),
        };
        let i = pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
        let entry = &table.backends[i];
        Ok(Route {
            model,
            backend: entry.backend.clone(),
            backend_name: entry.name.clone(),
        })
    }

    /// Records the models a backend reported; ignored for backends with a fixed list.
    /// Builds and swaps a new table, so requests in flight are unaffected.
    pub fn set_discovered(&self, backend_name: &str, models: Vec<Model>) {
        self.table.rcu(|current| {
            let backends = current
                .backends
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    if b.name == backend_name && !b.fixed_models {
                        b.models = models.clone();
                    }
                    b
                })
                .collect();
            RoutingTable::new(backends)
        });
    }
}

#[cfg(test)]
mod tests;
