//! A committed stream: what the caller reads after the commit point, and how a stream that
//! breaks is finished on another engine (mid-stream continuation).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use futures::future::BoxFuture;
use lumen_backend::{BackendError, RequestContext, TimeoutKind};
use lumen_governance::Route;
use lumen_openai_types::continuation::{Piece, Resumable, StreamPiece};
use lumen_openai_types::{
    ChatCompletionRequest, Chunk, CompletionRequest, HasModel, HasUsage, Usage,
};
use lumen_resilience::{CircuitBreaker, FairPermit, Guarded, Permit, Timeouts};
use serde::Serialize;
use tokio::time::Instant;

use crate::observer::{Event, Observer};
use crate::policy::{Accountant, Settlement};
use crate::upstream::{AttemptBreakers, Upstream};
use lumen_governance::accounting::Counts;

mod blocked;
mod relayed;
mod seam;

pub(crate) use blocked::{Blocked, Candidate, avoided, blocked};
use relayed::Relayed;

/// A backend (by its breaker) and the engine model on it: what a continuation must not ask
/// again. Per model, not per backend: one engine often serves several models (llama.cpp's
/// router mode, Ollama, a vLLM with several), and a fallback model on the engine whose stream
/// broke may well finish the answer.
pub(crate) type Avoid = (Arc<CircuitBreaker>, String);

/// A successful attempt, with what must live as long as the response.
pub(crate) struct Success<T> {
    pub(crate) value: T,
    pub(crate) route: Route<Upstream>,
    pub(crate) breakers: AttemptBreakers,
    /// The gateway admission permit; a continuation has none (its stream keeps the first).
    pub(crate) global: Option<FairPermit>,
    /// The backend's concurrency slot.
    pub(crate) slot: Permit,
    /// When the request was admitted: a continuation shares its total deadline.
    pub(crate) admitted: Instant,
    /// A fallback model serves (not the one the request named).
    pub(crate) fell_back: bool,
}

/// Opens a stream on one backend under the given deadlines.
pub(crate) type Open<Req, T> = for<'a> fn(
    Upstream,
    Req,
    &'a RequestContext,
    Timeouts,
) -> BoxFuture<'a, Result<Guarded<T>, BackendError>>;

/// A streamed request that another engine can be asked to continue (the engine's own fields
/// for it are added by its backend, which sees `RequestContext::continuing`).
pub(crate) trait Continue: Resumable {}

impl Continue for ChatCompletionRequest {}

impl Continue for CompletionRequest {}

impl<T: Continue> Continue for Box<T> {}

/// The answer so far, when a stream broke.
pub(crate) struct Partial {
    pub(crate) text: String,
    /// Tokens already generated: the engine's count where it sent one, else the estimate of
    /// [`Relayed`] (never the number of chunks: an engine may pack several tokens in one).
    pub(crate) sent: u32,
    /// The public model that was serving.
    pub(crate) model: String,
    /// The (backend, engine model) pairs whose streams broke: not asked to continue it.
    pub(crate) avoid: Vec<Avoid>,
    /// The backend whose stream broke.
    pub(crate) from: String,
}

/// A continuation under way: the next part's stream, once an engine took it on.
pub(crate) type Resuming<T> = BoxFuture<'static, Option<Success<Guarded<T>>>>;

/// How a stream continues itself, with the request type erased (so the stream is generic
/// over chunks only). The core implements it (`gateway.rs`); the stream only calls it.
pub(crate) trait Resume<T>: Send + Sync {
    fn resume(self: Arc<Self>, partial: Partial) -> Resuming<T>;
}

/// At most this many continuations per stream: an answer that keeps breaking is reported.
const MAX_CONTINUATIONS: u32 = 2;

/// A longer answer is no longer kept for a continuation (it would be sent back whole): an
/// engine that streams without end cannot make Lumen hold its text without end.
const MAX_PARTIAL_BYTES: usize = 4 * 1024 * 1024;

/// A stream's continuation state; boxed, so streams of models without continuation stay small.
struct Resumption<T> {
    resumer: Arc<dyn Resume<T>>,
    /// The text the caller has been sent (all parts).
    answer: String,
    /// A choice finished: there is nothing left to continue.
    finished: bool,
    /// The answer is no longer tracked (see [`Resumption::see`]).
    stopped: bool,
    broke: Vec<Avoid>,
    /// The stream's id and creation time as the caller first saw them; later parts keep them.
    first: Option<(String, u64)>,
    /// Tokens relayed before each part after the first began.
    starts: Vec<u32>,
    /// While a new part's text may still be a copy of `answer`: the bytes it repeated so far.
    seam: Option<usize>,
    /// The new part's chunks that repeated `answer` so far (sent only if it turns out not to
    /// be a copy).
    held: Vec<Chunk<T>>,
    /// Chunks read and accepted, to be relayed in order.
    ready: VecDeque<Chunk<T>>,
    /// The continuation under way, and the failure to report if it does not succeed.
    pending: Option<(Resuming<T>, BackendError)>,
}

impl<T: StreamPiece + HasModel + serde::de::DeserializeOwned + Default> Resumption<T> {
    fn new(resumer: Arc<dyn Resume<T>>) -> Self {
        Self {
            resumer,
            answer: String::new(),
            finished: false,
            stopped: false,
            broke: Vec::new(),
            first: None,
            starts: Vec::new(),
            seam: None,
            held: Vec::new(),
            ready: VecDeque::new(),
            pending: None,
        }
    }

    /// Reads one chunk. A later part's opening chunk is dropped (the caller has one); while a
    /// later part's text repeats the answer already sent, its chunks are held, and dropped once
    /// the copy is whole (cut at the seam when it ends inside a chunk) or sent as they are
    /// when it turns out not to be a copy. Everything else is accepted.
    fn see(&mut self, mut chunk: Chunk<T>) {
        if chunk.finishes() {
            self.finished = true;
        }
        if chunk.get().piece() == Piece::Opening && !self.starts.is_empty() {
            return;
        }
        if let Some(matched) = self.seam {
            let step = match chunk.get().piece() {
                Piece::Text("") | Piece::Opening => None,
                Piece::Text(t) => Some(seam::step(&self.answer, matched, t)),
                Piece::Other | Piece::Unsupported => Some(seam::Step::NotACopy),
            };
            match step {
                None => {}
                Some(seam::Step::Copy { matched }) => {
                    self.seam = Some(matched);
                    self.held.push(chunk);
                    return;
                }
                Some(seam::Step::Ends { at }) => {
                    self.seam = None;
                    self.held.clear();
                    tracing::info!(
                        bytes = self.answer.len(),
                        "the continuation began by repeating the answer so far; the copy was dropped"
                    );
                    let rest = match chunk.get().piece() {
                        Piece::Text(t) => t.get(at..).unwrap_or_default().to_owned(),
                        _ => String::new(),
                    };
                    if rest.is_empty() && !chunk.finishes() {
                        return;
                    }
                    chunk.get_mut().set_text(&rest);
                }
                Some(seam::Step::NotACopy) => self.release(),
            }
        }
        self.accept(chunk);
    }

    /// Ends the seam check: what was held back was the engine's own text after all.
    fn release(&mut self) {
        self.seam = None;
        for held in std::mem::take(&mut self.held) {
            self.accept(held);
        }
    }

    /// A chunk on its way to the caller: its text joins the answer, and a later part's chunk
    /// is shown as part of the first. A chunk a continuation could not reproduce (tool calls,
    /// several choices), or an answer past `MAX_PARTIAL_BYTES`, ends the tracking: the stream
    /// is no longer continued, but the parts already joined still count in its usage.
    fn accept(&mut self, mut chunk: Chunk<T>) {
        if !self.stopped {
            match chunk.get().piece() {
                Piece::Unsupported => self.stop(),
                Piece::Text(t) if !t.is_empty() => {
                    if self.answer.len() + t.len() > MAX_PARTIAL_BYTES {
                        self.stop();
                    } else {
                        self.answer.push_str(t);
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
        self.ready.push_back(chunk);
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.answer = String::new();
    }

    /// The usage of the whole answer, from the last part's: every broken part read the prompt
    /// and the answer before it, and generated the tokens it relayed.
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
/// It also counts the output it relays ([`GatewayStream::relayed`]), which is what a stream
/// whose usage never arrives is charged.
///
/// With stream continuation on for its model, a failure after commit (the engine died, went
/// quiet past the idle deadline, or sent something malformed) does not end the stream: the
/// answer so far is sent to another engine as a partial answer to continue, and its chunks
/// follow in the same stream under the first part's id. The caller sees the original failure
/// only when no engine could continue.
pub struct GatewayStream<T> {
    inner: Guarded<T>,
    rewrite: Option<String>,
    usage: UsageAsk,
    /// The last usage the engine reported (a running count, or the answer's).
    tokens: Option<(u64, u64)>,
    /// `tokens` is the whole answer's: the usage-only chunk passed, or the stream ended.
    usage_final: bool,
    /// The engine ended the stream (later polls must not reach it).
    ended: bool,
    relayed: Relayed,
    route: Route<Upstream>,
    breakers: AttemptBreakers,
    observer: Arc<dyn Observer>,
    /// The kind of the failure that ended the stream, if one did.
    error: Option<&'static str>,
    resumption: Option<Box<Resumption<T>>>,
    /// The backends that served the parts before the current one.
    earlier: Vec<String>,
    /// The caller's reservation, settled when the stream ends ([`GatewayStream::settle`]).
    settlement: Option<Settlement>,
    /// The request's prompt estimate: its input tokens when the engine's usage never comes.
    prompt: u64,
    /// Where the stream's usage is counted when it settles: the key's name and the model the
    /// request named.
    accounting: Option<Box<(Accountant, String, String)>>,
    _global: Option<FairPermit>,
    _slot: Permit,
}

impl<T: StreamPiece + HasModel + serde::de::DeserializeOwned + Default> GatewayStream<T> {
    pub(crate) fn new(
        served: Success<Guarded<T>>,
        usage: UsageAsk,
        observer: Arc<dyn Observer>,
        resume: Option<Arc<dyn Resume<T>>>,
    ) -> Self {
        Self {
            inner: served.value,
            rewrite: served
                .route
                .rewrites_model()
                .then(|| served.route.public_model.clone()),
            usage,
            tokens: None,
            usage_final: false,
            ended: false,
            relayed: Relayed::default(),
            route: served.route,
            breakers: served.breakers,
            observer,
            error: None,
            resumption: resume.map(|r| Box::new(Resumption::new(r))),
            earlier: Vec::new(),
            settlement: None,
            prompt: 0,
            accounting: None,
            _global: served.global,
            _slot: served.slot,
        }
    }
}

impl<T> GatewayStream<T> {
    /// (input, output) tokens of the whole answer, once the engine's final usage has passed
    /// (for a continued stream, the sum over its parts); `None` while the stream runs, and for
    /// good when it broke or was dropped before that. See [`GatewayStream::relayed`] then.
    pub fn tokens(&self) -> Option<(u64, u64)> {
        self.tokens.filter(|_| self.usage_final)
    }

    /// Output tokens relayed to the caller so far, over every choice and part: the engine's
    /// running count where its chunks carry one, else bytes of text / 4 rounded up per
    /// choice, at least one token per chunk with text. What a stream is charged at least when
    /// its usage never arrives.
    pub fn relayed(&self) -> u64 {
        self.relayed.tokens()
    }

    /// The public model id this stream answers as (after a continuation on a fallback, the
    /// fallback's).
    pub fn model(&self) -> &str {
        &self.route.public_model
    }

    /// The backend serving this stream (after a continuation, the one that took it over).
    pub fn backend(&self) -> &str {
        &self.route.lease.name
    }

    /// Every backend that served a part of this stream, in order (one unless continued).
    pub fn backends(&self) -> impl Iterator<Item = &str> {
        self.earlier
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.backend()))
    }

    /// How many times this stream was continued on another engine.
    pub fn continuations(&self) -> u32 {
        self.earlier.len() as u32
    }

    /// The caller's reservation rides with the stream from here, and `prompt` (the request's
    /// prompt estimate) is its input when the engine's usage never arrives.
    pub(crate) fn bill(
        &mut self,
        settlement: Option<Settlement>,
        prompt: u64,
        accounting: Option<(Accountant, String, String)>,
    ) {
        self.settlement = settlement;
        self.prompt = prompt;
        self.accounting = accounting.map(Box::new);
    }

    /// (input, output) tokens the stream is charged, and whether they are Lumen's estimate:
    /// the engine's usage when it arrived, else the output relayed with the prompt the engine
    /// already reported (Anthropic's `message_start`, vLLM's running counts) or, when it
    /// reported none, the prompt estimate (a client that left, an engine that broke or never
    /// sent usage).
    pub fn charged(&self) -> ((u64, u64), bool) {
        match self.tokens() {
            Some(t) => (t, false),
            None => {
                let prompt = self
                    .tokens
                    .map(|(input, _)| input)
                    .filter(|input| *input > 0)
                    .unwrap_or(self.prompt);
                ((prompt, self.relayed()), true)
            }
        }
    }

    /// Settles the caller's reservation on what the stream is charged now (see
    /// [`charged`](Self::charged)); at most once, and when dropped if not before. A caller
    /// that reports the stream's end settles first, so its usage is final when the end is seen.
    pub fn settle(&mut self) {
        let (tokens, estimated) = self.charged();
        if let Some(accounting) = self.accounting.take() {
            let (accountant, key, requested) = *accounting;
            let served = if self.route.passthrough {
                crate::policy::PASSTHROUGH
            } else {
                self.model()
            };
            accountant.record(
                &key,
                served,
                (requested != served).then_some(requested.as_str()),
                Counts {
                    requests: 1,
                    input_tokens: tokens.0,
                    output_tokens: tokens.1,
                    errors: u64::from(self.error.is_some()),
                    ..Counts::default()
                },
            );
        }
        let Some(mut s) = self.settlement.take() else {
            return;
        };
        s.tokens = self.tokens().map(|(i, o)| i.saturating_add(o));
        s.floor = estimated.then(|| tokens.0.saturating_add(tokens.1));
    }

    /// Takes over a continuation's engine stream; the old lease and slot are released.
    fn switch_to(&mut self, served: Success<Guarded<T>>) {
        self.inner = served.value;
        self.rewrite = served
            .route
            .rewrites_model()
            .then(|| served.route.public_model.clone());
        let old = std::mem::replace(&mut self.route, served.route);
        self.earlier.push(old.lease.name.clone());
        self.breakers = served.breakers;
        self._slot = served.slot;
        self.relayed.next_part();
    }
}

impl<T> Drop for GatewayStream<T> {
    fn drop(&mut self) {
        self.settle();
        self.observer.event(&Event::StreamEnded {
            model: &self.route.public_model,
            backend: &self.route.lease.name,
            tokens: self.tokens(),
            error: self.error,
        });
    }
}

impl<T> GatewayStream<T>
where
    T: StreamPiece + HasModel + HasUsage + Serialize + serde::de::DeserializeOwned + Default,
{
    /// The last steps before a chunk reaches the caller: counts its output, keeps its usage
    /// (summed over the parts of a continued stream), strips the usage Lumen asked for and the
    /// caller did not, and shows the public model. `None` when nothing is left to send.
    fn relay(&mut self, mut chunk: Chunk<T>) -> Option<Chunk<T>> {
        self.relayed.count(&chunk);
        if let Some(t) = chunk.tokens() {
            let usage_only = chunk.is_usage_only();
            let t = match &self.resumption {
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
            self.tokens = Some(t);
            if usage_only {
                self.usage_final = true;
                if self.usage.strip {
                    return None;
                }
            } else if self.usage.strip_running {
                *chunk.get_mut().usage_mut() = None;
            }
        }
        if let Some(public) = &self.rewrite {
            if chunk.get().model() != public {
                public.clone_into(chunk.get_mut().model_mut());
            }
        }
        Some(chunk)
    }
}

impl<T> Stream for GatewayStream<T>
where
    T: StreamPiece + HasModel + HasUsage + Serialize + serde::de::DeserializeOwned + Default,
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
                            if let Some(r) = this.resumption.as_mut() {
                                r.seam = (!r.answer.is_empty()).then_some(0);
                            }
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
                if let Some(chunk) = r.ready.pop_front() {
                    match this.relay(chunk) {
                        Some(chunk) => return Poll::Ready(Some(Ok(chunk))),
                        None => continue,
                    }
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            return match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    if let Some(r) = this.resumption.as_mut() {
                        r.see(chunk);
                        continue;
                    }
                    match this.relay(chunk) {
                        Some(chunk) => Poll::Ready(Some(Ok(chunk))),
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    this.breakers.on_error(&e);
                    if let BackendError::Timeout { kind } = &e {
                        this.observer.event(&Event::Timeout { kind: *kind });
                    }
                    let sent = u32::try_from(this.relayed.tokens()).unwrap_or(u32::MAX);
                    if let Some(r) = this.resumption.as_mut().filter(|r| r.can_continue(&e)) {
                        // A copy of the answer that was still being held is not the answer.
                        r.seam = None;
                        r.held.clear();
                        r.broke.push((
                            this.route.lease.backend.breaker.clone(),
                            this.route.engine_model.clone(),
                        ));
                        r.starts.push(sent);
                        let partial = Partial {
                            text: r.answer.clone(),
                            sent,
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
                None => {
                    this.ended = true;
                    // An engine that puts usage on its last chunk (or only running counts)
                    // has said all it will: what it said last is the answer's.
                    this.usage_final |= this.tokens.is_some();
                    match this.resumption.as_mut() {
                        // A part that ended while it still looked like a copy was not one.
                        Some(r) if !r.held.is_empty() => {
                            r.release();
                            continue;
                        }
                        _ => Poll::Ready(None),
                    }
                }
            };
        }
    }
}

/// What Lumen asked the engine about usage beyond what the caller asked, and so must strip.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UsageAsk {
    /// The final usage-only chunk (`include_usage`).
    pub(crate) strip: bool,
    /// The running counts in every chunk (`continuous_usage_stats`).
    pub(crate) strip_running: bool,
}

/// Asks the engine for usage on every stream (so tokens are always counted) and, when the
/// stream may be continued (`running`), for its running count in every chunk too, so a broken
/// answer's tokens are the engine's own count, not an estimate (vLLM and SGLang send it;
/// other engines ignore the field). Reports what the caller did not ask for, to be stripped.
pub(crate) fn ask_usage(
    opts: &mut Option<lumen_openai_types::StreamOptions>,
    running: bool,
) -> UsageAsk {
    let wanted = opts.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    let opts = opts.get_or_insert_with(Default::default);
    if !wanted {
        opts.include_usage = Some(true);
    }
    const RUNNING: &str = "continuous_usage_stats";
    let wanted_running = opts.extra.get_as::<bool>(RUNNING) == Some(true);
    if running && !wanted_running {
        let _ = opts.extra.insert(RUNNING, &true);
    }
    UsageAsk {
        strip: !wanted,
        strip_running: running && !wanted_running,
    }
}
