//! The pipeline: [`Gateway::serve`] runs the chain that is the product —
//! resolve the model once → authorize the key on the result → charge its limits in the
//! engine's scope → the cache → the attempts → settle on the real usage (for a stream, when it
//! ends, however it ends) — for any [`Operation`](crate::operation::Operation). The server
//! reads HTTP and renders answers in the caller's dialect; an embedder calls `serve` directly
//! and gets keys, limits and the cache without the server crate.
//!
//! `serve` is written here rather than in `gateway.rs`: the operations it runs name the
//! [`Gateway`] they call, so `gateway.rs` must not name them back (no file imports another in
//! a circle).

use std::sync::Arc;

use bytes::Bytes;
use lumen_backend::RequestContext;
use lumen_governance::limits::RateHeaders;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::observer::Event;
use crate::operation::{Caching, Operation};
use crate::policy::{
    Accountant, CachePlan, FallbackLimits, PASSTHROUGH, PolicyError, Principal, Settlement,
    prompt_estimate,
};
use crate::stream::GatewayStream;
use lumen_governance::accounting::Counts;

impl Gateway {
    /// The pipeline for one request of operation `O`: resolves the request's model once
    /// (blank, `auto`, alias, passthrough) and authorizes the caller's key on the result (the
    /// request then carries that id, so the attempts route exactly the model authorized);
    /// charges the key's limits in the engine's scope; answers from the cache when it may;
    /// runs the attempts; and settles the reservation on the real usage — at once for an
    /// answer, when it ends for a stream. Fallbacks skip the models the key may not use and
    /// pass its per-model limits first.
    pub async fn serve<O: Operation>(
        &self,
        mut r: O::Request,
        call: Call<'_>,
        mut cx: RequestContext,
    ) -> Result<Served<O::Chunk>, ServeError> {
        let principal = call.principal;
        cx.models = principal
            .as_ref()
            .and_then(|k| k.models.as_ref())
            .map(|m| m.as_slice().into());
        // Each key is its own flow in the admission queue: one key's flood waits behind its
        // own requests, not in front of everyone else's.
        // The key's name, not its namespace: a key deleted and re-created under its name may
        // share its place in the queue; formatting the namespace costs every request.
        cx.fairness = principal.as_ref().map(|k| lumen_backend::Fairness {
            flow: k.name.clone(),
            weight: k.limits.weight.unwrap_or(1),
            rank: k.limits.rank(call.priority),
        });
        let allowed = |m: &str| principal.as_ref().is_none_or(|k| k.allows(m));
        // A model the key may not use is reported as not found, as it is absent from that
        // key's model list.
        let model = O::model(&mut r);
        *model = self.resolve(model, &allowed)?;
        let model = model.clone();
        self.emit(&Event::Resolved { model: &model });
        let policy = self.policy();
        let engine_scope = principal.as_ref().and_then(|k| self.limit_scope(k, &model));
        let scope = engine_scope.as_deref().unwrap_or(&model);
        let estimate = if O::BILLS_TOKENS {
            policy.estimate(call.body_len, O::completion_budget(&r), O::choices(&r))
        } else {
            0
        };
        let (mut settlement, rate) = policy.admit(principal, scope, estimate).await?;
        // A fallback model's limits are checked and charged before the request moves there.
        // Only keys with per-model limits need it: the key's own counters are the same
        // whichever model serves.
        if let (Some(key), Some(s)) = (
            principal.as_ref().filter(|k| !k.per_model.is_empty()),
            &settlement,
        ) {
            cx.admission = Some(Arc::new(FallbackLimits::new(
                self,
                key.clone(),
                estimate,
                s,
            )));
        }
        // Usage per key, model and day: every request of a key whose model resolved. A
        // passthrough name is the caller's own string: it is counted as `passthrough`, so no
        // client string becomes a row.
        let router = self.router();
        let label = |m: &str| -> String {
            if router.is_known(m) {
                m.to_owned()
            } else {
                PASSTHROUGH.to_owned()
            }
        };
        let account = |served: &str, requested: Option<&str>, counts: Counts| {
            if let Some(k) = principal {
                let requested = requested.map(label);
                policy.account(&k.name, &label(served), requested.as_deref(), counts);
            }
        };
        let failed = Counts {
            requests: 1,
            errors: 1,
            ..Counts::default()
        };
        if O::streams(&r) {
            return match O::stream(self, r, &cx).await {
                Ok(mut stream) => {
                    let accounting = principal
                        .as_ref()
                        .map(|k| (Accountant::of(policy), k.name.clone(), label(&model)));
                    stream.bill(settlement, prompt_estimate(call.body_len), accounting);
                    Ok(Served::Stream { stream, rate })
                }
                Err(e) => {
                    settlement.as_mut().map(Settlement::refund);
                    account(&model, None, failed);
                    Err(e.into())
                }
            };
        }
        let deterministic = match O::caching(&r) {
            Caching::IfDeterministic { temperature, seed } => Some(Some((temperature, seed))),
            Caching::Always => Some(None),
            Caching::Never => None,
        };
        let plan = match deterministic {
            Some(deterministic) => policy.cache_plan(
                principal,
                call.cache_control,
                O::NAME,
                &model,
                deterministic,
                || O::canonical(&r),
            ),
            None => CachePlan::bypass(),
        };
        let cache_on = policy.settings().cache_enabled();
        if let Some(json) = policy.cache_get(&plan).await {
            settlement.as_mut().map(Settlement::refund);
            // A cached answer is charged nothing; it is still a request.
            account(
                &model,
                None,
                Counts {
                    requests: 1,
                    ..Counts::default()
                },
            );
            return Ok(Served::Answer(Answer {
                json,
                content_type: None,
                tokens: None,
                cache: cache_on.then(|| plan.result(true)),
                fell_back: None,
                backend: None,
                rate,
            }));
        }
        let answered = match O::call(self, r, &cx).await {
            Ok(a) => a,
            Err(e) => {
                settlement.as_mut().map(Settlement::refund);
                account(&model, None, failed);
                return Err(e.into());
            }
        };
        let tokens = answered.reply.tokens();
        let (input, output) = tokens.unwrap_or_default();
        account(
            answered.fell_back.as_deref().unwrap_or(&model),
            answered.fell_back.is_some().then_some(model.as_str()),
            Counts {
                requests: 1,
                input_tokens: input,
                output_tokens: output,
                ..Counts::default()
            },
        );
        if let Some(s) = settlement.as_mut() {
            s.tokens = tokens.map(|(i, o)| i.saturating_add(o));
        }
        // The engine's own bytes unless the answer was edited.
        let json = answered.reply.to_json().map_err(ServeError::Encode)?;
        if answered.fell_back.is_none() && answered.content_type.is_none() {
            policy.cache_put(&plan, json.clone());
        }
        Ok(Served::Answer(Answer {
            json,
            content_type: answered.content_type,
            tokens,
            cache: cache_on.then(|| plan.result(false)),
            fell_back: answered.fell_back,
            backend: Some(answered.backend),
            rate,
        }))
    }
}

/// Who calls and how, beside the request itself.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The caller's key, from [`PolicyStep::authenticate`](crate::PolicyStep::authenticate).
    pub principal: &'a Principal,
    /// The request body's size: the prompt part of the token estimate.
    pub body_len: usize,
    /// The caller's `Cache-Control` (`no-store` bypasses the cache, `no-cache` refreshes it).
    pub cache_control: Option<&'a str>,
    /// The priority class the caller asks for (`x-lumen-priority`), granted up to its key's
    /// `max_priority`.
    pub priority: Option<&'a str>,
}

/// What the pipeline produced. Not boxed: it is moved once, out of `serve`, and taken apart
/// at once; a box would cost every stream an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Served<C> {
    /// A whole answer, from an engine or the cache.
    Answer(Answer),
    /// A committed stream. Its reservation rides inside it and settles when it ends
    /// ([`GatewayStream::settle`]), with the engine's usage or, when that never arrived, the
    /// prompt estimate plus the output relayed.
    Stream {
        stream: GatewayStream<C>,
        rate: RateHeaders,
    },
}

/// A whole answer as JSON: the engine's own bytes unless Lumen edited it.
pub struct Answer {
    pub json: Bytes,
    /// The answer's content type when it is not JSON (an audio transcription as text).
    pub content_type: Option<Box<str>>,
    /// (input, output) tokens the engine reported; `None` from the cache.
    pub tokens: Option<(u64, u64)>,
    /// What the cache did (`hit`, `miss`, `refresh`, `bypass`); `None` when the cache is off.
    pub cache: Option<&'static str>,
    /// The fallback model that answered, when it is not the requested one.
    pub fell_back: Option<String>,
    /// The backend that answered; `None` from the cache.
    pub backend: Option<String>,
    /// The key's rate-limit state, for `x-ratelimit-*`.
    pub rate: RateHeaders,
}

/// Why the pipeline could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key's limits refused it (or the store that keeps them could not answer).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Routing refused it, or the engines failed it after every retry and fallback.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The answer could not be encoded (an engine answer Lumen edited).
    #[error("the answer could not be encoded: {0}")]
    Encode(serde_json::Error),
}
