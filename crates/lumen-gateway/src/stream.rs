//! A committed stream: what the caller reads after the commit point, and how a stream that
//! breaks is finished on another engine (mid-stream continuation).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use futures::future::BoxFuture;
use lumen_backend::{BackendError, Continuation, RequestContext, TimeoutKind};
use lumen_governance::Route;
use lumen_openai_types::continuation::{Piece, Resumable, StreamPiece};
use lumen_openai_types::{
    ChatCompletionRequest, Chunk, CompletionRequest, HasModel, HasUsage, Usage,
};
use lumen_resilience::config::Operation;
use lumen_resilience::{CircuitBreaker, Guarded, Permit, Timeouts};
use tokio::time::Instant;

use crate::gateway::{Gateway, Hints};
use crate::observer::{Event, Observer};
use crate::upstream::{AttemptBreakers, Upstream};

/// A successful attempt, with what must live as long as the response.
pub(crate) struct Served<T> {
    pub(crate) value: T,
    pub(crate) route: Route<Upstream>,
    pub(crate) breakers: AttemptBreakers,
    /// The gateway admission permit; a continuation has none (its stream keeps the first).
    pub(crate) global: Option<Permit>,
    /// The backend's concurrency slot.
    pub(crate) slot: Permit,
    /// When the request was admitted: a continuation shares its total deadline.
    pub(crate) admitted: Instant,
}

/// Opens a stream on one backend under the given deadlines.
pub(crate) type Open<Req, T> = for<'a> fn(
    Upstream,
    Req,
    &'a RequestContext,
    Timeouts,
) -> BoxFuture<'a, Result<Guarded<T>, BackendError>>;

/// A streamed request that another engine can be asked to continue.
pub(crate) trait Continue: Resumable {
    /// Adds what an engine of this `style` needs beyond the partial answer.
    fn for_engine(&mut self, style: Continuation);
}

impl Continue for ChatCompletionRequest {
    fn for_engine(&mut self, style: Continuation) {
        if style == Continuation::ContinueFinalMessage {
            // Both or neither: vLLM refuses `continue_final_message` with a generation prompt.
            let _ = self.extra.insert("continue_final_message", &true);
            let _ = self.extra.insert("add_generation_prompt", &false);
        }
    }
}

impl Continue for CompletionRequest {
    /// A prompt that ends with the partial answer is continued by any completion engine.
    fn for_engine(&mut self, _: Continuation) {}
}

/// The answer so far, when a stream broke.
pub(crate) struct Partial {
    pub(crate) text: String,
    /// Text chunks streamed so far: the tokens already generated, as engines stream them.
    pub(crate) sent: u32,
    /// The public model that was serving.
    pub(crate) model: String,
    /// Backends whose streams broke: not asked to continue it.
    pub(crate) avoid: Vec<Arc<CircuitBreaker>>,
    /// The backend whose stream broke.
    pub(crate) from: String,
}

/// What a stream keeps to continue itself: the request and how to open it again.
pub(crate) struct Resumer<Req, T> {
    pub(crate) gateway: Gateway,
    pub(crate) op: Operation,
    pub(crate) req: Req,
    pub(crate) cx: RequestContext,
    pub(crate) hints: Hints,
    pub(crate) start: Instant,
    pub(crate) open: Open<Req, T>,
}

/// A continuation under way: the next part's stream, once an engine took it on.
type Resuming<T> = BoxFuture<'static, Option<Served<Guarded<T>>>>;

/// [`Resumer`] with its request type erased, so the stream is generic over chunks only.
pub(crate) trait Resume<T>: Send + Sync {
    fn resume(self: Arc<Self>, partial: Partial) -> Resuming<T>;
}

impl<Req, T> Resume<T> for Resumer<Req, T>
where
    Req: Clone + HasModel + Continue + Send + Sync + 'static,
    T: Send + 'static,
{
    fn resume(self: Arc<Self>, partial: Partial) -> Resuming<T> {
        Box::pin(async move { self.gateway.continue_stream(&self, partial).await })
    }
}

/// At most this many continuations per stream: an answer that keeps breaking is reported.
const MAX_CONTINUATIONS: u32 = 2;

/// A longer answer is no longer kept for a continuation (it would be sent back whole): an
/// engine that streams without end cannot make Lumen hold its text without end.
const MAX_PARTIAL_BYTES: usize = 4 * 1024 * 1024;

/// A stream's continuation state; boxed, so streams of models without continuation stay small.
struct Resumption<T> {
    resumer: Arc<dyn Resume<T>>,
    answer: String,
    sent: u32,
    /// A choice finished: there is nothing left to continue.
    finished: bool,
    /// The answer is no longer tracked (see [`Resumption::see`]).
    stopped: bool,
    broke: Vec<Arc<CircuitBreaker>>,
    /// The stream's id and creation time as the caller first saw them; later parts keep them.
    first: Option<(String, u64)>,
    /// Text chunks streamed before each part after the first began.
    starts: Vec<u32>,
    /// The continuation under way, and the failure to report if it does not succeed.
    pending: Option<(Resuming<T>, BackendError)>,
}

/// What to do with a chunk after continuation has read it.
enum Seen {
    Pass,
    /// A later part's opening chunk: the caller already has one.
    Drop,
}

impl<T: StreamPiece + HasModel + serde::de::DeserializeOwned + Default> Resumption<T> {
    fn new(resumer: Arc<dyn Resume<T>>) -> Self {
        Self {
            resumer,
            answer: String::new(),
            sent: 0,
            finished: false,
            stopped: false,
            broke: Vec::new(),
            first: None,
            starts: Vec::new(),
            pending: None,
        }
    }

    /// Reads one chunk: its text joins the answer, and a later part's chunk is shown as part of
    /// the first (its opening chunk dropped). A chunk a continuation could not reproduce (tool
    /// calls, several choices), or an answer past `MAX_PARTIAL_BYTES`, ends the tracking: the
    /// stream is no longer continued, but the parts already joined still count in its usage.
    fn see(&mut self, chunk: &mut Chunk<T>) -> Seen {
        if chunk.finishes() {
            self.finished = true;
        }
        let piece = chunk.get().piece();
        if piece == Piece::Opening && !self.starts.is_empty() {
            return Seen::Drop;
        }
        if !self.stopped {
            match piece {
                Piece::Unsupported => self.stop(),
                Piece::Text(t) if !t.is_empty() => {
                    if self.answer.len() + t.len() > MAX_PARTIAL_BYTES {
                        self.stop();
                    } else {
                        self.answer.push_str(t);
                        self.sent = self.sent.saturating_add(1);
                    }
                }
                Piece::Text(_) | Piece::Opening | Piece::Other => {}
            }
        }
        match &self.first {
            None => {
                let (id, created) = chunk.get().stream_id();
                self.first = Some((id.to_owned(), created));
            }
            Some((id, created)) if !self.starts.is_empty() => {
                if chunk.get().stream_id() != (id.as_str(), *created) {
                    chunk.get_mut().set_stream_id(id, *created);
                }
            }
            Some(_) => {}
        }
        Seen::Pass
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.answer = String::new();
    }

    /// The usage of the whole answer, from the last part's: every broken part read the prompt
    /// and the answer before it, and generated the text chunks it streamed.
    fn total(&self, (input, output): (u64, u64)) -> (u64, u64) {
        let Some(&last) = self.starts.last() else {
            return (input, output);
        };
        let prompt = input.saturating_sub(u64::from(last));
        let earlier: u64 = std::iter::once(0)
            .chain(self.starts.iter().copied())
            .take(self.starts.len())
            .map(|k| prompt.saturating_add(u64::from(k)))
            .fold(0u64, u64::saturating_add);
        (
            input.saturating_add(earlier),
            output.saturating_add(u64::from(last)),
        )
    }

    fn can_continue(&self, e: &BackendError) -> bool {
        !self.finished
            && !self.stopped
            && (self.starts.len() as u32) < MAX_CONTINUATIONS
            && !matches!(
                e,
                BackendError::Timeout {
                    kind: TimeoutKind::Total
                }
            )
    }
}

/// A committed stream. Holds its backend lease and admission permits until the stream ends or
/// is dropped, reports a mid-stream engine failure to the backend's breakers, shows the public
/// model id in every chunk when it differs from the engine's, and keeps the token usage: Lumen
/// always asks the engine for it and drops the usage-only chunk when the client did not ask.
///
/// With stream continuation on for its model, a failure after commit (the engine died, went
/// quiet past the idle deadline, or sent something malformed) does not end the stream: the
/// answer so far is sent to another engine as a partial answer to continue, and its chunks
/// follow in the same stream under the first part's id. The caller sees the original failure
/// only when no engine could continue.
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
    resumption: Option<Box<Resumption<T>>>,
    continuations: u32,
    _global: Option<Permit>,
    _slot: Permit,
}

impl<T: StreamPiece + HasModel + serde::de::DeserializeOwned + Default> GatewayStream<T> {
    pub(crate) fn new(
        served: Served<Guarded<T>>,
        strip_usage: bool,
        observer: Arc<dyn Observer>,
        resume: Option<Arc<dyn Resume<T>>>,
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
            resumption: resume.map(|r| Box::new(Resumption::new(r))),
            continuations: 0,
            _global: served.global,
            _slot: served.slot,
        }
    }
}

impl<T> GatewayStream<T> {
    /// (input, output) tokens, once the engine's usage chunk has passed (for a continued
    /// stream, the sum over its parts).
    pub fn tokens(&self) -> Option<(u64, u64)> {
        self.tokens
    }

    /// The public model id this stream answers as (after a continuation on a fallback, the
    /// fallback's).
    pub fn model(&self) -> &str {
        &self.route.public_model
    }

    /// The backend serving this stream.
    pub fn backend(&self) -> &str {
        &self.route.lease.name
    }

    /// How many times this stream was continued on another engine.
    pub fn continuations(&self) -> u32 {
        self.continuations
    }

    /// Takes over a continuation's engine stream; the old lease and slot are released.
    fn switch_to(&mut self, served: Served<Guarded<T>>) {
        self.inner = served.value;
        self.rewrite = served
            .route
            .rewrites_model()
            .then(|| served.route.public_model.clone());
        self.route = served.route;
        self.breakers = served.breakers;
        self._slot = served.slot;
        self.continuations += 1;
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

impl<T> Stream for GatewayStream<T>
where
    T: StreamPiece + HasModel + HasUsage + serde::de::DeserializeOwned + Default,
{
    type Item = Result<Chunk<T>, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(r) = this.resumption.as_mut() {
                if let Some((pending, _)) = r.pending.as_mut() {
                    let served = ready!(pending.as_mut().poll(cx));
                    let Some((_, original)) = r.pending.take() else {
                        continue;
                    };
                    let from = this.route.lease.name.clone();
                    match served {
                        Some(served) => {
                            this.switch_to(served);
                            this.observer.event(&Event::Continued {
                                model: &this.route.public_model,
                                passthrough: this.route.passthrough,
                                from: &from,
                                to: Some(&this.route.lease.name),
                                reason: original.kind(),
                            });
                            tracing::info!(from = %from, to = %this.route.lease.name, reason = original.kind(), "stream continued on another engine");
                            continue;
                        }
                        None => {
                            this.observer.event(&Event::Continued {
                                model: &this.route.public_model,
                                passthrough: this.route.passthrough,
                                from: &from,
                                to: None,
                                reason: original.kind(),
                            });
                            this.resumption = None;
                            this.error = Some(original.kind());
                            return Poll::Ready(Some(Err(original)));
                        }
                    }
                }
            }
            return match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(mut chunk)) => {
                    if let Some(r) = this.resumption.as_mut() {
                        if let Seen::Drop = r.see(&mut chunk) {
                            continue;
                        }
                    }
                    if let Some(t) = chunk.tokens() {
                        let t = match &this.resumption {
                            Some(r) if !r.starts.is_empty() => {
                                let total = r.total(t);
                                *chunk.get_mut().usage_mut() = Some(Usage {
                                    prompt_tokens: total.0,
                                    completion_tokens: total.1,
                                    total_tokens: total.0.saturating_add(total.1),
                                    ..Usage::default()
                                });
                                total
                            }
                            _ => t,
                        };
                        this.tokens = Some(t);
                    }
                    if this.strip_usage && chunk.is_usage_only() {
                        continue;
                    }
                    if let Some(public) = &this.rewrite {
                        if chunk.get().model() != public {
                            public.clone_into(chunk.get_mut().model_mut());
                        }
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Some(Err(e)) => {
                    this.breakers.on_error(&e);
                    if let BackendError::Timeout { kind } = &e {
                        this.observer.event(&Event::Timeout { kind: *kind });
                    }
                    if let Some(r) = this.resumption.as_mut().filter(|r| r.can_continue(&e)) {
                        r.broke.push(this.route.lease.backend.breaker.clone());
                        r.starts.push(r.sent);
                        let partial = Partial {
                            text: r.answer.clone(),
                            sent: r.sent,
                            model: this.route.public_model.clone(),
                            avoid: r.broke.clone(),
                            from: this.route.lease.name.clone(),
                        };
                        tracing::warn!(error = %crate::Text(&e.to_string()), kind = e.kind(), "stream failed after commit; continuing it on another engine");
                        r.pending = Some((r.resumer.clone().resume(partial), e));
                        continue;
                    }
                    this.error = Some(e.kind());
                    Poll::Ready(Some(Err(e)))
                }
                None => Poll::Ready(None),
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
