//! A committed stream: what the caller reads after the commit point.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use lumen_backend::BackendError;
use lumen_governance::Route;
use lumen_openai_types::{Chunk, HasModel, HasUsage};
use lumen_resilience::{Guarded, Permit};

use std::sync::Arc;

use crate::observer::{Event, Observer};
use crate::upstream::{AttemptBreakers, Upstream};

/// A successful attempt, with what must live as long as the response.
pub(crate) struct Served<T> {
    pub(crate) value: T,
    pub(crate) route: Route<Upstream>,
    pub(crate) breakers: AttemptBreakers,
    pub(crate) permits: [Permit; 2],
}

/// A committed stream. Holds its backend lease and admission permits until the stream ends or
/// is dropped, reports a mid-stream engine failure to the backend's breaker, shows the public
/// model id in every chunk when it differs from the engine's, and keeps the token usage: Lumen
/// always asks the engine for it and drops the usage-only chunk when the client did not ask.
pub struct GatewayStream<T> {
    inner: Guarded<T>,
    rewrite: Option<String>,
    strip_usage: bool,
    tokens: Option<(u64, u64)>,
    route: Route<Upstream>,
    breakers: AttemptBreakers,
    observer: Arc<dyn Observer>,
    /// The kind of the failure that ended the stream, if one did.
    error: Option<&'static str>,
    _permits: [Permit; 2],
}

impl<T> GatewayStream<T> {
    pub(crate) fn new(
        served: Served<Guarded<T>>,
        strip_usage: bool,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            inner: served.value,
            rewrite: served
                .route
                .rewrites_model()
                .then(|| served.route.public_model.clone()),
            strip_usage,
            tokens: None,
            route: served.route,
            breakers: served.breakers,
            observer,
            error: None,
            _permits: served.permits,
        }
    }

    /// (input, output) tokens, once the engine's usage chunk has passed.
    pub fn tokens(&self) -> Option<(u64, u64)> {
        self.tokens
    }

    /// The public model id this stream answers as.
    pub fn model(&self) -> &str {
        &self.route.public_model
    }

    /// The backend serving this stream.
    pub fn backend(&self) -> &str {
        &self.route.lease.name
    }
}

impl<T> Drop for GatewayStream<T> {
    fn drop(&mut self) {
        self.observer.event(&Event::StreamEnded {
            model: &self.route.public_model,
            backend: &self.route.lease.name,
            tokens: self.tokens,
            error: self.error,
        });
    }
}

impl<T: HasModel + HasUsage + serde::de::DeserializeOwned + Default> Stream for GatewayStream<T> {
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            return match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if let Some(t) = chunk.tokens() {
                        this.tokens = Some(t);
                    }
                    if this.strip_usage && chunk.is_usage_only() {
                        continue;
                    }
                    if let Some(public) = &this.rewrite {
                        public.clone_into(chunk.get_mut().model_mut());
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.breakers.on_error(&e);
                    if let BackendError::Timeout { kind } = &e {
                        this.observer.event(&Event::Timeout { kind: *kind });
                    }
                    this.error = Some(e.kind());
                    Poll::Ready(Some(Err(e)))
                }
                other => other,
            };
        }
    }
}

/// Asks the engine for usage on every stream (so tokens are always counted) and reports
/// whether the caller did not ask, in which case the usage chunk is stripped.
pub(crate) fn force_usage(opts: &mut Option<lumen_openai_types::StreamOptions>) -> bool {
    let wanted = opts.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    if !wanted {
        opts.get_or_insert_with(Default::default).include_usage = Some(true);
    }
    !wanted
}
