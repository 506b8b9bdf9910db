//! What a request holds of its key's limits until it ends: the reservation, settled on the real
//! usage when the request's answer (or stream) is done, on every path out, and the limits of a
//! fallback model it moved to.

use std::sync::{Arc, Mutex, PoisonError};

use lumen_governance::keys::ApiKey;
use lumen_governance::limits::{LimitError, Limiter, Reservation};

use super::store_failed;
use crate::gateway::Gateway;
use crate::observer::Observer;

/// Releases concurrency and replaces the token estimate with real usage when dropped, on every
/// path out of a request: success, error, or the client going away. Until then it renews the
/// request's concurrency slots, which otherwise expire (so a lost release cannot hold a slot).
pub struct Settlement {
    limiter: Limiter,
    reservation: Reservation,
    /// What was reserved.
    estimate: u64,
    /// Real (input + output) tokens, once known. `None` keeps the estimate.
    pub tokens: Option<u64>,
    /// The least a request whose usage never arrived is charged (a stream: the prompt
    /// estimate plus the output it relayed), when more than the estimate. See [`charge`].
    pub floor: Option<u64>,
    observer: Arc<dyn Observer>,
    renewal: Option<tokio::task::AbortHandle>,
    /// Set by [`FallbackLimits`] when a fallback model took the request over.
    moved: Moved,
}

/// A fallback model's hold on a request: `Some` once the request moved to another model, with
/// that model's own reservation (`None` inside when the key has no limits there).
type Moved = Arc<Mutex<Option<Option<Settlement>>>>;

/// What a request is charged when it settles: the engine's usage when it arrived; otherwise
/// its reservation, or what it is known to have used when that is more (`None` keeps the
/// reservation). A stream the client cut off, or whose engine never sent usage, can so never
/// cost less than what it relayed, nor less than it reserved.
pub(crate) fn charge(usage: Option<u64>, floor: Option<u64>, estimate: u64) -> Option<u64> {
    usage.or(floor.filter(|f| *f > estimate))
}

impl Settlement {
    pub(crate) fn new(
        limiter: Limiter,
        reservation: Reservation,
        estimate: u64,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let renewal = reservation.has_leases().then(|| {
            let (limiter, reservation, observer) =
                (limiter.clone(), reservation.clone(), observer.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Limiter::RENEW_EVERY).await;
                    if let Err(e) = limiter.renew(&reservation).await {
                        store_failed(observer.as_ref(), "renew", &e);
                    }
                }
            })
            .abort_handle()
        });
        Self {
            limiter,
            reservation,
            estimate,
            tokens: None,
            floor: None,
            observer,
            renewal,
            moved: Moved::default(),
        }
    }

    /// Nothing was served (the request failed before an answer, or came from the cache): the
    /// reservation is given back.
    pub fn refund(&mut self) {
        self.tokens = Some(0);
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        let tokens = charge(self.tokens, self.floor, self.estimate);
        // A fallback served: the tokens are that model's (its reservation settles them), and
        // the model admitted at the door gets its per-model estimate back. The key's own
        // counters settle the same tokens either way.
        let moved = self
            .moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(fallback) = moved {
            self.reservation.mark_moved();
            if let Some(mut f) = fallback {
                f.tokens = tokens;
            }
        }
        if !self.reservation.needs_settling(tokens) {
            return;
        }
        // A store that queues the settlement (Redis) writes it, and reports its failure, by
        // itself: no task for it.
        let Some(op) = self.limiter.settle_detached(&self.reservation, tokens) else {
            return;
        };
        let observer = self.observer.clone();
        let settle = async move {
            if let Err(e) = op.await {
                store_failed(observer.as_ref(), "settle", &e);
            }
        };
        // The in-memory store completes at once: settle inline. Otherwise (a remote store
        // whose queue is full) a task, so the response never waits for it.
        let mut settle = Box::pin(settle);
        if futures::FutureExt::now_or_never(settle.as_mut()).is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(settle);
            }
        }
    }
}

/// The limits of a model a fallback moves a request to (the gateway asks before each move):
/// the key's `per_model` entry for it is checked and charged with the request's estimate, so a
/// key suspended or out of tokens on a model cannot reach it by asking for a broken one. The
/// key's own limits were charged at the door and are not charged twice.
pub(crate) struct FallbackLimits {
    limiter: Limiter,
    observer: Arc<dyn Observer>,
    fail_closed: bool,
    key: Arc<ApiKey>,
    estimate: u64,
    /// To name a public model by the engine id when the key's limits use that (see
    /// [`Gateway::limit_scope`]).
    core: Gateway,
    moved: Moved,
}

impl FallbackLimits {
    /// The gate for a request admitted with `settlement` (the two share what a move records).
    pub(crate) fn new(
        core: &Gateway,
        key: Arc<ApiKey>,
        estimate: u64,
        settlement: &Settlement,
    ) -> Self {
        let policy = core.policy();
        Self {
            limiter: policy.limiter().clone(),
            observer: policy.observer().clone(),
            fail_closed: policy.settings().fail_closed(),
            key,
            estimate,
            core: core.clone(),
            moved: settlement.moved.clone(),
        }
    }

    async fn enter(&self, model: &str) -> bool {
        let scope = self.core.limit_scope(&self.key, model);
        let scope = scope.as_deref().unwrap_or(model);
        let held = match self
            .limiter
            .admit_model(&self.key, scope, self.estimate)
            .await
        {
            Ok(r) => Some(Settlement::new(
                self.limiter.clone(),
                r,
                self.estimate,
                self.observer.clone(),
            )),
            Err(LimitError::Store(e)) => {
                store_failed(self.observer.as_ref(), "limits", &e);
                if self.fail_closed {
                    return false;
                }
                None
            }
            Err(e) => {
                tracing::info!(model = %crate::Text(model), reason = e.reason(), "the key's limits refuse the fallback model");
                return false;
            }
        };
        let previous = self
            .moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(held);
        // An earlier fallback that did not serve gets its estimate back.
        if let Some(Some(mut earlier)) = previous {
            earlier.tokens = Some(0);
        }
        true
    }
}

impl lumen_backend::ModelAdmission for FallbackLimits {
    fn admit<'a>(&'a self, model: &'a str) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(self.enter(model))
    }
}
