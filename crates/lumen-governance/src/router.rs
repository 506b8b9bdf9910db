//! The live routing table and the routing decision.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use lumen_openai_types::Model;

use crate::config::{CacheAwareConfig, GovernanceConfig, InvalidConfig, Policy};
use crate::index::{MAX_TRACKED, PrefixIndex};
use crate::load::{self, EngineState, Load};
use crate::prefix::PromptKey;
use crate::{AUTO, GovernanceError, hash, policy};

/// A backend as the router tracks it. Shared by every table that contains it, so its in-flight
/// count and availability survive discovery and reload.
pub struct Slot<B> {
    /// Unique for the process; identifies the backend in `exclude` lists.
    pub id: u64,
    pub name: String,
    pub backend: B,
    pub weight: u32,
    /// Identity of the backend's settings: a reload keeps the slot when name and key match.
    key: String,
    name_hash: u64,
    in_flight: AtomicUsize,
    available: AtomicBool,
    /// The engine has answered discovery at least once (always true for fixed model lists).
    discovered: AtomicBool,
    /// The engine's own load reports (scraped by the core).
    engine: EngineState,
    /// This backend's bit in the cache-aware indexes; `None` past the 64th backend.
    bit: Option<u8>,
    /// Prompt bytes Lumen sent that the engine has not prefilled yet: the sum over its
    /// requests here that have no first byte back (see [`Lease::prefilled`]).
    backlog: AtomicU64,
}

/// What a request whose prompt Lumen did not read adds to a backlog: about a 500-token prompt.
pub(crate) const UNREAD_PROMPT_BYTES: u32 = 2048;

impl<B> Slot<B> {
    /// The engine's own load reports, for the scrape loop to write and reports to read.
    pub fn engine(&self) -> &EngineState {
        &self.engine
    }

    /// The load a decision would see now (milliseconds on the router's clock).
    pub fn load(&self, now_ms: u64, stale_ms: u64) -> Load {
        load::estimate(self.engine.snapshot(), self.in_flight(), now_ms, stale_ms)
    }

    /// False while a backend whose models are discovered has never answered discovery (its
    /// engine was down when Lumen started): its models are not known yet.
    pub fn has_discovered(&self) -> bool {
        self.discovered.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Bytes of prefill queued here by Lumen: what its requests on this backend that have not
    /// received their first byte yet must have prefilled (their uncached part when
    /// `cache_aware` knows it, else their prompt's length). Exact for Lumen's own traffic: an
    /// engine answers (the first chunk of a stream, or the whole answer) only once it has
    /// prefilled the prompt, so no drain rate is guessed.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// False while health checks or a circuit breaker keep the backend out of rotation.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Relaxed);
    }
}

impl<B> std::fmt::Debug for Slot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("in_flight", &self.in_flight())
            .field("available", &self.is_available())
            .finish()
    }
}

/// A request counted as in flight on a backend until dropped, and its prompt as queued for
/// prefill there until [`prefilled`](Self::prefilled) or the drop. Move it into whatever lives
/// as long as the request (the response future or the stream) so the counts stay exact through
/// streams, errors and cancellation.
pub struct Lease<B> {
    slot: Arc<Slot<B>>,
    /// Prompt bytes it still holds in the slot's backlog: 0 once prefilled.
    prefill: u32,
}

impl<B> Lease<B> {
    fn new(slot: Arc<Slot<B>>, prefill: u32) -> Self {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        slot.backlog
            .fetch_add(u64::from(prefill), Ordering::Relaxed);
        Self { slot, prefill }
    }

    pub fn slot(&self) -> &Arc<Slot<B>> {
        &self.slot
    }

    /// The engine's first byte arrived (a stream's first chunk, or a whole answer), or the
    /// attempt ended without one: its prefill is no longer queued there. Idempotent; the drop
    /// does it too, so an error, a timeout or a cancelled request never leaves bytes behind.
    pub fn prefilled(&mut self) {
        let bytes = std::mem::take(&mut self.prefill);
        if bytes > 0 {
            self.slot
                .backlog
                .fetch_sub(u64::from(bytes), Ordering::Relaxed);
        }
    }
}

impl<B> Deref for Lease<B> {
    type Target = Slot<B>;
    fn deref(&self) -> &Slot<B> {
        &self.slot
    }
}

impl<B> Drop for Lease<B> {
    fn drop(&mut self) {
        self.prefilled();
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One backend as configured: what the router needs to build a table.
#[derive(Debug, Clone)]
pub struct BackendSpec<B> {
    pub name: String,
    pub backend: B,
    pub weight: u32,
    /// Fixed model ids; `None` means "discovered from the engine".
    pub models: Option<Vec<String>>,
    /// Identity of the settings (URL, key, kind, ...). Same name and key on reload keeps the
    /// slot, its connection pool, its in-flight count and its discovered models.
    pub key: String,
}

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteRequest<'a> {
    /// The model the caller asked for (may be blank, `auto` or an alias).
    pub model: &'a str,
    /// `x-session-id` or the `user` field, for `session_affinity`.
    pub session: Option<&'a str>,
    /// Leading prompt content, for `prefix_affinity` (the router truncates it).
    pub prefix: Option<&'a [u8]>,
    /// Slot ids already tried by this request; avoided while another backend exists.
    pub exclude: &'a [u64],
    /// The prompt's blocks and keys, for `cache_aware` (and its length, for `load_aware`).
    pub prompt: Option<&'a PromptKey>,
    /// Now, in milliseconds on the clock the engine reports are stamped with (the core's).
    pub now_ms: u64,
}

/// A routing decision.
pub struct Route<B> {
    /// The id the caller should see in responses.
    pub public_model: String,
    /// The id to send to the engine.
    pub engine_model: String,
    pub policy: Policy,
    /// The model is not in the table: a passthrough name the caller chose. Never use
    /// `public_model` as a metric label then; callers can invent any number of them.
    pub passthrough: bool,
    /// The chosen backend, counted as in flight until dropped.
    pub lease: Lease<B>,
}

impl<B> std::fmt::Debug for Route<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("public_model", &self.public_model)
            .field("engine_model", &self.engine_model)
            .field("policy", &self.policy)
            .field("backend", &self.lease.name)
            .finish()
    }
}

impl<B> Route<B> {
    /// True when responses must be rewritten (alias) to show the public id.
    pub fn rewrites_model(&self) -> bool {
        self.public_model != self.engine_model
    }
}

struct Member<B> {
    slot: Arc<Slot<B>>,
    fixed: Option<Vec<String>>,
    discovered: Vec<Model>,
}

impl<B> Clone for Member<B> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
            fixed: self.fixed.clone(),
            discovered: self.discovered.clone(),
        }
    }
}

impl<B> Member<B> {
    fn model_ids(&self) -> Vec<String> {
        match &self.fixed {
            Some(ids) => ids.clone(),
            None => self.discovered.iter().map(|m| m.id.clone()).collect(),
        }
    }
}

/// The backends serving one engine model id, with their balancing state.
pub(crate) struct Pool {
    /// Indices into the table's members.
    pub(crate) members: Vec<usize>,
    /// Smooth weighted round-robin order over `members` (indices into `members`).
    pub(crate) schedule: Vec<usize>,
    pub(crate) cursor: AtomicU64,
}

impl Pool {
    fn new<B>(members: Vec<usize>, all: &[Member<B>]) -> Self {
        let weights: Vec<u32> = members.iter().map(|&i| all[i].slot.weight).collect();
        Self {
            schedule: policy::smooth_schedule(&weights),
            members,
            cursor: AtomicU64::new(0),
        }
    }
}

/// One immutable routing table.
struct Table<B> {
    cfg: Arc<GovernanceConfig>,
    members: Vec<Member<B>>,
    /// Engine model id → pool. Fx hashing: looked up on every request, and the entries come
    /// from configuration, so callers cannot fill it with colliding keys.
    pools: rustc_hash::FxHashMap<String, Pool>,
    /// Exposed, routable public ids → (engine id, metadata shown to callers).
    public: BTreeMap<String, (String, Model)>,
    passthrough: Option<Pool>,
    /// Every model id an engine has reported while this router lived (engine ids and the
    /// public ids over them). Such a model that has no backend now is temporarily unavailable
    /// (503), not unknown (404). Filled from discovery only, never from requests.
    known: std::collections::BTreeSet<String>,
    /// Some pool has more than one backend (see [`Router::has_choice`]).
    choice: bool,
}

impl<B> Table<B> {
    fn build(
        cfg: Arc<GovernanceConfig>,
        members: Vec<Member<B>>,
        mut known: std::collections::BTreeSet<String>,
    ) -> Self {
        let mut by_model: HashMap<String, Vec<usize>> = HashMap::new();
        let mut meta: HashMap<String, Model> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            for id in m.model_ids() {
                by_model.entry(id.clone()).or_default().push(i);
            }
            for model in &m.discovered {
                meta.entry(model.id.clone())
                    .or_insert_with(|| model.clone());
            }
        }
        let mut public = BTreeMap::new();
        for engine in by_model.keys() {
            if cfg.is_exposed(engine) {
                let m = meta
                    .get(engine)
                    .cloned()
                    .unwrap_or_else(|| Model::new(engine.clone()));
                public.insert(engine.clone(), (engine.clone(), m));
            }
        }
        for (alias, target) in &cfg.aliases {
            if by_model.contains_key(target) && cfg.is_exposed(alias) {
                let mut m = meta
                    .get(target)
                    .cloned()
                    .unwrap_or_else(|| Model::new(target.clone()));
                m.id = alias.clone();
                m.extra.insert("root".to_owned(), target.clone().into());
                public.insert(alias.clone(), (target.clone(), m));
            }
        }
        let passthrough = cfg.passthrough.enabled.then(|| {
            let names = &cfg.passthrough.backends;
            let idx = (0..members.len())
                .filter(|&i| names.is_empty() || names.contains(&members[i].slot.name))
                .collect();
            Pool::new(idx, &members)
        });
        known.extend(public.keys().cloned());
        known.extend(by_model.keys().cloned());
        let pools: rustc_hash::FxHashMap<String, Pool> = by_model
            .into_iter()
            .map(|(id, idx)| (id, Pool::new(idx, &members)))
            .collect();
        let choice = pools.values().any(|p| p.members.len() > 1)
            || passthrough.as_ref().is_some_and(|p| p.members.len() > 1);
        Self {
            cfg,
            members,
            pools,
            public,
            passthrough,
            known,
            choice,
        }
    }
}

/// The live routing table plus the balancing state.
pub struct Router<B> {
    table: ArcSwap<Table<B>>,
    rng: AtomicU64,
    /// `cache_aware`'s index per engine model (`""` for passthrough names, which share one:
    /// callers choose those names). Kept across table swaps; bounded by the models routed.
    indexes: Mutex<rustc_hash::FxHashMap<String, Arc<Mutex<PrefixIndex>>>>,
}

static NEXT_SLOT_ID: AtomicU64 = AtomicU64::new(1);

impl<B: Clone> Router<B> {
    pub fn new(
        cfg: GovernanceConfig,
        backends: Vec<BackendSpec<B>>,
    ) -> Result<Self, InvalidConfig> {
        let seed = cfg.seed.unwrap_or_else(random_seed);
        let table = Self::make_table(cfg, backends, &[], None)?;
        Ok(Self {
            table: ArcSwap::from_pointee(table),
            rng: AtomicU64::new(seed),
            indexes: Mutex::new(rustc_hash::FxHashMap::default()),
        })
    }

    fn make_table(
        cfg: GovernanceConfig,
        backends: Vec<BackendSpec<B>>,
        previous: &[Member<B>],
        previous_known: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<Table<B>, InvalidConfig> {
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        cfg.validate(&names)?;
        let kept: Vec<Option<&Member<B>>> = backends
            .iter()
            .map(|spec| {
                previous.iter().find(|m| {
                    m.slot.name == spec.name
                        && m.slot.key == spec.key
                        && m.slot.weight == spec.weight.max(1)
                })
            })
            .collect();
        // Index bits: kept backends keep theirs; new ones take the lowest free.
        let mut used = [false; MAX_TRACKED];
        for m in kept.iter().flatten() {
            if let Some(b) = m.slot.bit {
                used[usize::from(b)] = true;
            }
        }
        let mut free_bit = || {
            let b = used.iter().position(|u| !*u)?;
            used[b] = true;
            u8::try_from(b).ok()
        };
        let members = backends
            .into_iter()
            .zip(kept)
            .map(|(spec, kept)| {
                let fixed = spec.models.is_some();
                match kept {
                    Some(m) => Member {
                        slot: m.slot.clone(),
                        fixed: spec.models,
                        discovered: m.discovered.clone(),
                    },
                    None => Member {
                        slot: Arc::new(Slot {
                            id: NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed),
                            name_hash: hash::fnv1a(spec.name.as_bytes()),
                            name: spec.name,
                            backend: spec.backend,
                            weight: spec.weight.max(1),
                            key: spec.key,
                            in_flight: AtomicUsize::new(0),
                            available: AtomicBool::new(true),
                            discovered: AtomicBool::new(fixed),
                            engine: EngineState::default(),
                            bit: free_bit(),
                            backlog: AtomicU64::new(0),
                        }),
                        fixed: spec.models,
                        discovered: Vec::new(),
                    },
                }
            })
            .collect();
        let known = previous_known.cloned().unwrap_or_default();
        Ok(Table::build(Arc::new(cfg), members, known))
    }

    /// Validates and swaps in a new configuration (hot reload). Requests already routed keep
    /// their backends; unchanged backends keep their slots. On error the old table stays live.
    pub fn reconfigure(
        &self,
        cfg: GovernanceConfig,
        backends: Vec<BackendSpec<B>>,
    ) -> Result<(), InvalidConfig> {
        let current = self.table.load_full();
        let table = Self::make_table(cfg, backends, &current.members, Some(&current.known))?;
        // A new backend may reuse the bit of one that left: what the index learned about
        // the old one is not true of it.
        let fresh_bits: Vec<u8> = table
            .members
            .iter()
            .filter(|m| !current.members.iter().any(|c| c.slot.id == m.slot.id))
            .filter_map(|m| m.slot.bit)
            .collect();
        let resized = table.cfg.cache_aware != current.cfg.cache_aware;
        self.table.store(Arc::new(table));
        let mut indexes = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
        if resized {
            indexes.clear();
        } else if !fresh_bits.is_empty() {
            for index in indexes.values() {
                let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
                for &b in &fresh_bits {
                    index.forget(b);
                }
            }
        }
        Ok(())
    }

    /// Records the models a backend reported (ignored for fixed lists) and swaps the table.
    pub fn set_discovered(&self, backend_name: &str, models: Vec<Model>) {
        for m in self.table.load().members.iter() {
            if m.slot.name == backend_name {
                m.slot.discovered.store(true, Ordering::Relaxed);
            }
        }
        self.table.rcu(|t| {
            let members = t
                .members
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if m.slot.name == backend_name && m.fixed.is_none() {
                        m.discovered = models.clone();
                    }
                    m
                })
                .collect();
            Table::build(t.cfg.clone(), members, t.known.clone())
        });
    }

    /// Every backend slot in the current table (for health checks, breakers and metrics).
    pub fn slots(&self) -> Vec<Arc<Slot<B>>> {
        self.table
            .load()
            .members
            .iter()
            .map(|m| m.slot.clone())
            .collect()
    }

    /// Backends whose models are discovered rather than fixed.
    pub fn discoverable(&self) -> Vec<Arc<Slot<B>>> {
        let t = self.table.load();
        t.members
            .iter()
            .filter(|m| m.fixed.is_none())
            .map(|m| m.slot.clone())
            .collect()
    }

    pub fn config(&self) -> Arc<GovernanceConfig> {
        self.table.load().cfg.clone()
    }

    /// Exactly the ids a caller can route to by name, with engine metadata; `auto` included
    /// when it has something to pick.
    pub fn models(&self) -> Vec<Model> {
        let t = self.table.load();
        let mut out: Vec<Model> = t.public.values().map(|(_, m)| m.clone()).collect();
        if t.cfg
            .auto
            .preference
            .iter()
            .any(|p| t.public.contains_key(p))
        {
            out.push(Model::new(AUTO));
        }
        out
    }

    /// The model ids a backend serves (fixed or discovered), by backend name.
    pub fn slot_models(&self, name: &str) -> Vec<String> {
        let t = self.table.load();
        t.members
            .iter()
            .find(|m| m.slot.name == name)
            .map(Member::model_ids)
            .unwrap_or_default()
    }

    /// The backends that serve a public model id (an alias resolves to its target's pool).
    pub fn backends_for(&self, public: &str) -> Vec<Arc<Slot<B>>> {
        let t = self.table.load();
        t.public
            .get(public)
            .and_then(|(engine, _)| t.pools.get(engine))
            .map(|pool| {
                pool.members
                    .iter()
                    .map(|&i| t.members[i].slot.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The engine model id a public id routes to (an alias's target, else itself).
    /// Whether `public` is a model of the table (configured or discovered), not a passthrough
    /// name a caller chose: only those may become labels or rows anywhere.
    pub fn is_known(&self, public: &str) -> bool {
        self.table.load().public.contains_key(public)
    }

    pub fn engine_for(&self, public: &str) -> Option<String> {
        self.table.load().public.get(public).map(|(e, _)| e.clone())
    }

    pub fn model(&self, id: &str) -> Option<Model> {
        self.models().into_iter().find(|m| m.id == id)
    }

    /// The public model a request's `model` names, for a caller that may use only the models
    /// `allowed` accepts: blank is the default model (or the only exposed one), `auto` the first
    /// preferred model the caller may use that has a usable backend, anything else itself
    /// (an exposed id, an alias, or a passthrough name). Access is decided on this result, never
    /// on what the caller typed, so no spelling of a model reaches one the caller may not use.
    ///
    /// A blank model whose default the caller may not use is refused without naming the
    /// default ([`GovernanceError::DefaultModelNotAllowed`]).
    pub fn resolve(
        &self,
        model: &str,
        allowed: &dyn Fn(&str) -> bool,
        usable: &dyn Fn(&B, &str) -> bool,
    ) -> Result<String, GovernanceError> {
        let t = self.table.load();
        let public = resolve_in(&t, model, allowed, usable)?;
        if allowed(&public) {
            Ok(public)
        } else if model.is_empty() {
            Err(GovernanceError::DefaultModelNotAllowed)
        } else {
            Err(GovernanceError::ModelNotFound {
                model: model.to_owned(),
            })
        }
    }

    /// Chooses the backend for one request (or one retry attempt).
    pub fn route(&self, req: &RouteRequest<'_>) -> Result<Route<B>, GovernanceError> {
        self.route_filtered(req, &|_, _| true)
    }

    /// As [`route`](Self::route), skipping backends for which `usable(backend, engine_model)` is
    /// false (an open circuit breaker for the backend or for that model on it, a full
    /// per-backend queue): the caller's notion of availability, on top of the slot's own.
    pub fn route_filtered(
        &self,
        req: &RouteRequest<'_>,
        usable: &dyn Fn(&B, &str) -> bool,
    ) -> Result<Route<B>, GovernanceError> {
        let t = self.table.load();
        let cfg = &t.cfg;
        let public = resolve_in(&t, req.model, &|_| true, usable)?;
        let public = public.as_str();
        let (engine, pool, passthrough) = match t.public.get(public) {
            Some((engine, _)) => match t.pools.get(engine) {
                Some(pool) => (engine.as_str(), pool, false),
                None => return Err(missing(&t, public)),
            },
            None => match &t.passthrough {
                Some(pool) if !cfg.aliases.contains_key(public) => (public, pool, true),
                _ => return Err(missing(&t, public)),
            },
        };
        let policy = cfg.policy_for(public, engine);
        let index_key = if passthrough { "" } else { engine };
        let (slot, bytes) = self
            .pick(&t, pool, policy, req, index_key, &|b| usable(b, engine))
            .ok_or_else(|| GovernanceError::NoHealthyBackend {
                model: public.to_owned(),
            })?;
        Ok(Route {
            public_model: public.to_owned(),
            engine_model: engine.to_owned(),
            policy,
            passthrough,
            lease: Lease::new(slot, bytes),
        })
    }

    fn pick(
        &self,
        t: &Table<B>,
        pool: &Pool,
        policy: Policy,
        req: &RouteRequest<'_>,
        index_key: &str,
        ok: &dyn Fn(&B) -> bool,
    ) -> Option<(Arc<Slot<B>>, u32)> {
        let slot = |k: usize| &t.members[pool.members[k]].slot;
        let usable = |k: &usize| slot(*k).is_available() && ok(&slot(*k).backend);
        // Prefer available backends this request has not tried; then available ones it has.
        let mut cands: Vec<usize> = (0..pool.members.len())
            .filter(|k| usable(k) && !req.exclude.contains(&slot(*k).id))
            .collect();
        if cands.is_empty() {
            cands = (0..pool.members.len()).filter(usable).collect();
        }
        if cands.is_empty() {
            return None;
        }
        let bytes_unread = req
            .prompt
            .map_or(UNREAD_PROMPT_BYTES, PromptKey::prompt_len);
        if pool.members.len() == 1 {
            // A pool of one: no choice to make, so no policy work (no index lookup, nothing
            // recorded). A pool narrowed to one by exclusions still runs its policy, which
            // keeps round robin's turn moving as it always has.
            return Some((slot(cands[0]).clone(), bytes_unread));
        }
        let view = policy::View {
            cands: &cands,
            in_flight: &|k| slot(k).in_flight(),
            weight: &|k| slot(k).weight,
            node: &|k| slot(k).name_hash,
        };
        // What the chosen engine must prefill: the whole prompt unless `cache_aware` knows
        // better.
        let mut bytes = bytes_unread;
        let chosen = match policy {
            Policy::RoundRobin => policy::round_robin(&view, &pool.schedule, &pool.cursor),
            Policy::LeastInFlight => policy::least_in_flight(&view, &pool.cursor),
            Policy::PowerOfTwo => policy::power_of_two(&view, &self.rng),
            Policy::SessionAffinity => match req.session {
                Some(s) => policy::rendezvous(&view, hash::fnv1a(s.as_bytes())),
                None => policy::round_robin(&view, &pool.schedule, &pool.cursor),
            },
            Policy::PrefixAffinity => match req.prefix {
                Some(p) => {
                    let p = &p[..p.len().min(t.cfg.prefix_bytes)];
                    policy::bounded_rendezvous(&view, hash::fnv1a(p), t.cfg.prefix_load_factor)
                }
                None => policy::least_in_flight(&view, &pool.cursor),
            },
            Policy::LoadAware => self.load_aware(t, pool, &cands, req.now_ms, bytes),
            Policy::CacheAware => match req.prompt {
                Some(prompt) => {
                    let (k, uncached) =
                        self.cache_aware(t, pool, &cands, prompt, req.now_ms, index_key);
                    bytes = uncached;
                    k
                }
                None => self.load_aware(t, pool, &cands, req.now_ms, bytes),
            },
        };
        Some((slot(chosen).clone(), bytes))
    }

    /// `load_aware`: the lowest expected wait by each candidate's backlog and KV use, in units
    /// of this request's prompt.
    fn load_aware(
        &self,
        t: &Table<B>,
        pool: &Pool,
        cands: &[usize],
        now_ms: u64,
        bytes: u32,
    ) -> usize {
        let stale = t.cfg.signals.stale_ms;
        let slot = |k: usize| &t.members[pool.members[k]].slot;
        let loads: Vec<Load> = cands.iter().map(|&k| slot(k).load(now_ms, stale)).collect();
        let backlog: Vec<f64> = cands.iter().map(|&k| slot(k).backlog() as f64).collect();
        let i = policy::load_aware(
            &loads,
            &backlog,
            f64::from(bytes),
            t.cfg.signals.kv_weight,
            &pool.cursor,
        );
        cands[i]
    }

    /// `cache_aware`: reads the model's index for how deep each candidate holds the prompt,
    /// decides (`policy::cache_aware`), and records where the prompt went. Returns the
    /// choice and what it must prefill there.
    fn cache_aware(
        &self,
        t: &Table<B>,
        pool: &Pool,
        cands: &[usize],
        prompt: &PromptKey,
        now_ms: u64,
        index_key: &str,
    ) -> (usize, u32) {
        let cfg = &t.cfg;
        let slot = |k: usize| &t.members[pool.members[k]].slot;
        let index = self.index(index_key, &cfg.cache_aware);
        let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
        let mask = cands
            .iter()
            .filter_map(|&k| slot(k).bit)
            .fold(0u64, |m, b| m | 1u64 << b);
        let depths = index.depths(prompt, mask, now_ms);
        let shared = prompt.section.is_some_and(|(section, _)| {
            index.is_shared(section, cfg.cache_aware.shared_after, now_ms)
        });
        let discount = match prompt.section {
            Some((_, len)) if shared => len,
            _ => 0,
        };
        let stale = cfg.signals.stale_ms;
        let view: Vec<policy::Candidate> = cands
            .iter()
            .map(|&k| {
                let s = slot(k);
                policy::Candidate {
                    node: s.name_hash,
                    weight: s.weight,
                    load: s.load(now_ms, stale),
                    depth: depths.of(s.bit),
                    backlog: s.backlog() as f64,
                }
            })
            .collect();
        let thresholds = policy::Thresholds {
            queue_slack: f64::from(cfg.signals.queue_slack),
            kv_threshold: cfg.signals.kv_threshold,
            kv_weight: cfg.signals.kv_weight,
            min_gain: crate::prefix::FIRST_BLOCK,
            agreement: AGREEMENT * index.reuse(),
            work: WORK,
        };
        let d = policy::cache_aware(
            &view,
            &policy::Prompt {
                key: prompt.placement(shared),
                len: prompt.prompt_len(),
                discount,
                strong: prompt.session.is_some(),
            },
            &thresholds,
        );
        index.observe_reuse(d.known);
        let chosen = cands[d.index];
        if let Some(bit) = slot(chosen).bit {
            index.record(prompt, bit, now_ms);
        }
        (chosen, d.uncached)
    }

    /// The cache-aware index of one engine model, created on first use.
    fn index(&self, key: &str, cfg: &CacheAwareConfig) -> Arc<Mutex<PrefixIndex>> {
        let mut map = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = map.get(key) {
            return i.clone();
        }
        let index = Arc::new(Mutex::new(PrefixIndex::new(cfg.max_entries, cfg.ttl_ms)));
        map.insert(key.to_owned(), index.clone());
        index
    }

    /// Whether any pool (or the passthrough pool) has more than one backend: otherwise no
    /// policy has a choice to make, and the caller need not read prompts for one.
    pub fn has_choice(&self) -> bool {
        self.table.load().choice
    }

    /// Whether the engines' `/metrics` should be scraped now: as configured
    /// (`GovernanceConfig::scrapes_signals`), except that a policy reading them asks for them
    /// only while some pool has a choice to make (saturation holding, or
    /// `routing.signals.enabled = true`, still scrape a lone engine). With `cache_aware` the
    /// default, a deployment of one engine a model sends it nothing it did not send before.
    pub fn scrapes_signals(&self) -> bool {
        let t = self.table.load();
        let s = &t.cfg.signals;
        match s.enabled {
            Some(on) => on,
            None => s.saturation_queue > 0 || (t.cfg.scrapes_signals() && t.choice),
        }
    }

    /// Entries in the cache-aware indexes, summed (for reports: each costs about 80 bytes).
    pub fn indexed_entries(&self) -> usize {
        let map = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
        map.values()
            .map(|i| i.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether every usable backend of the model's pool is queueing at least
    /// `routing.signals.saturation_queue` requests by its fresh report (see
    /// `load::saturated`): the caller then holds the request instead of routing it.
    pub fn saturated(&self, model: &str, now_ms: u64, usable: &dyn Fn(&B, &str) -> bool) -> bool {
        let t = self.table.load();
        let threshold = t.cfg.signals.saturation_queue;
        if threshold == 0 {
            return false;
        }
        let Ok(public) = resolve_in(&t, model, &|_| true, usable) else {
            return false;
        };
        let (engine, pool) = match t.public.get(public.as_str()) {
            Some((engine, _)) => match t.pools.get(engine) {
                Some(pool) => (engine.as_str(), pool),
                None => return false,
            },
            None => match &t.passthrough {
                Some(pool) => (public.as_str(), pool),
                None => return false,
            },
        };
        let stale = t.cfg.signals.stale_ms;
        let loads: Vec<Load> = pool
            .members
            .iter()
            .map(|&i| &t.members[i].slot)
            .filter(|s| s.is_available() && usable(&s.backend, engine))
            .map(|s| s.load(now_ms, stale))
            .collect();
        load::saturated(&loads, threshold)
    }
}

/// `cache_aware`: what leaving the hash's choice for a prompt nobody holds costs, in its own
/// bytes, when prompts do come back (scaled by the index's reuse estimate; see
/// `policy::Thresholds::agreement`).
const AGREEMENT: f64 = 1.0;

/// `cache_aware`: the weight of a candidate's own uncached prefill against the backlog queued
/// there (see `policy::Thresholds::work`). The offline fleet (2026-12-07) is flat from 2 to 5
/// and clearly worse at 1 (docs hit rate 64% against 81%); 3 is the middle.
const WORK: f64 = 3.0;

/// Why a public id has no pool: not ready (503) when an engine reported it earlier, or when
/// the configuration names it while an engine that could serve it has not answered discovery
/// yet (it was down at start); otherwise not found (404). A name only a caller typed never
/// becomes "not ready", so typos stay 404s.
fn missing<B>(t: &Table<B>, public: &str) -> GovernanceError {
    let cfg = &t.cfg;
    let target = cfg.aliases.get(public).map_or(public, String::as_str);
    let named = cfg.aliases.contains_key(public)
        || cfg
            .exposed_models
            .as_ref()
            .is_some_and(|l| l.iter().any(|m| m == public))
        || cfg.default_model.as_deref() == Some(public)
        || cfg.auto.preference.iter().any(|m| m == public)
        || cfg.models.contains_key(public);
    let pending = t
        .members
        .iter()
        .any(|m| m.fixed.is_none() && !m.slot.has_discovered());
    let exposed = cfg.is_exposed(public);
    if exposed && (t.known.contains(public) || t.known.contains(target) || (named && pending)) {
        GovernanceError::ModelNotReady {
            model: public.to_owned(),
        }
    } else {
        GovernanceError::ModelNotFound {
            model: public.to_owned(),
        }
    }
}

/// See [`Router::resolve`]; `allowed` only narrows what `auto` may pick.
fn resolve_in<B>(
    t: &Table<B>,
    model: &str,
    allowed: &dyn Fn(&str) -> bool,
    usable: &dyn Fn(&B, &str) -> bool,
) -> Result<String, GovernanceError> {
    let cfg = &t.cfg;
    let asked = if model.is_empty() {
        match (&cfg.default_model, t.public.len()) {
            (Some(d), _) => d.as_str(),
            (None, 1) => t.public.keys().next().map_or("", String::as_str),
            (None, _) => return Err(GovernanceError::ModelRequired),
        }
    } else {
        model
    };
    if asked != AUTO || cfg.auto.preference.is_empty() {
        return Ok(asked.to_owned());
    }
    if !cfg.auto.preference.iter().any(|p| allowed(p)) {
        // Nothing `auto` could pick is this caller's: as absent for it as any other model.
        return Err(GovernanceError::ModelNotFound {
            model: AUTO.to_owned(),
        });
    }
    cfg.auto
        .preference
        .iter()
        .find(|p| {
            allowed(p)
                && t.public
                    .get(p.as_str())
                    .and_then(|(engine, _)| t.pools.get(engine).map(|pool| (engine, pool)))
                    .is_some_and(|(engine, pool)| {
                        pool.members.iter().any(|&i| {
                            let s = &t.members[i].slot;
                            s.is_available() && usable(&s.backend, engine)
                        })
                    })
        })
        .cloned()
        .ok_or_else(|| GovernanceError::NoHealthyBackend {
            model: AUTO.to_owned(),
        })
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    hash::mix(t ^ (std::process::id() as u64) << 32)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests;
