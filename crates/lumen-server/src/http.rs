//! The HTTP surface: routes, body limits, request ids and trace context, JSON and SSE
//! responses, health and metrics endpoints, and the per-request access record.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use lumen_backend::{BackendError, RequestContext};
use lumen_openai_types::continuation::StreamPiece;
use lumen_openai_types::{HasModel, HasUsage};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::ResponseBody;
use crate::access::Access;
use crate::dialect::{
    AnthropicFrames, Dialect, Frames, Keep, NativeHome, NativeResponsesFrames, OpenAiFrames,
    ResponsesFrames,
};
use crate::error::{ApiError, full};
use crate::gateway::{Gateway, GatewayStream};
use crate::headers::{self, CACHE_HEADER, REQUEST_ID, SERVED_MODEL};
use crate::metrics::Metrics;
use lumen_anthropic_types::MessagesRequest;
use lumen_anthropic_types::translate::{self, TranslateOptions};
use lumen_gateway::messages::MessagesCall;
use lumen_gateway::operation::{
    Chat, Classify, Completions, Detokenize, Embeddings, ExtraCall, ExtraJson, FormCall, Messages,
    NativeResponses, Operation, Pooling, Rerank, RerankBare, RerankPath, RerankV2, Score,
    ScoreBare, Tokenize, Transcriptions, Translations,
};
use lumen_gateway::policy::Principal;
use lumen_gateway::responses::ResponsesCall;
use lumen_gateway::{Answer, Call, Served};
use lumen_governance::limits::RateHeaders;
use lumen_openai_types::multipart::{FormError, FormRequest, FormScanner};
use lumen_openai_types::responses::{self, ResponsesRequest};
use lumen_openai_types::{ChatCompletionResponse, RequestError};

/// Which endpoints a listener serves: everything, or (on the admin listener) only the
/// operational ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The API; also `/metrics` and health unless an admin listener takes them.
    Api { operational: bool },
    /// Only `/metrics`, `/health*` and `/ready`.
    Admin,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Tokenize,
    Detokenize,
    Rerank,
    Messages,
    CountTokens,
    Score,
    Classify,
    Pool,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/responses/input_tokens`.
    ResponseTokens,
    /// `GET` / `DELETE /v1/responses/{id}`.
    Response,
    /// `POST /v1/responses/{id}/cancel`.
    ResponseCancel,
    /// `GET /v1/responses/{id}/input_items`.
    ResponseItems,
    /// `POST /v1/audio/transcriptions` (multipart/form-data).
    Transcriptions,
    /// `POST /v1/audio/translations` (multipart/form-data).
    Translations,
    /// A configured `server.extra_json_paths` path.
    Extra,
    Models,
    Model,
    Health,
    HealthInference,
    Ready,
    Metrics,
    HealthRedis,
    AdminKeys,
    AdminKey,
    AdminUsage,
}

impl Endpoint {
    fn resolve(path: &str) -> Option<Self> {
        Some(match path {
            Chat::PATH => Self::Chat,
            Completions::PATH => Self::Completions,
            Embeddings::PATH => Self::Embeddings,
            Tokenize::PATH => Self::Tokenize,
            Detokenize::PATH => Self::Detokenize,
            Rerank::PATH | RerankBare::PATH | RerankV2::PATH => Self::Rerank,
            Score::PATH | ScoreBare::PATH => Self::Score,
            Classify::PATH => Self::Classify,
            Pooling::PATH => Self::Pool,
            Transcriptions::PATH => Self::Transcriptions,
            Translations::PATH => Self::Translations,
            "/v1/messages" => Self::Messages,
            "/v1/responses" => Self::Responses,
            "/v1/responses/input_tokens" => Self::ResponseTokens,
            p if response_id(p).is_some() => match p.rsplit_once('/') {
                Some((_, "cancel")) if p.matches('/').count() == 4 => Self::ResponseCancel,
                Some((_, "input_items")) if p.matches('/').count() == 4 => Self::ResponseItems,
                _ => Self::Response,
            },
            "/v1/messages/count_tokens" => Self::CountTokens,
            "/v1/models" => Self::Models,
            "/health" => Self::Health,
            "/health/inference" => Self::HealthInference,
            "/ready" => Self::Ready,
            "/metrics" => Self::Metrics,
            "/health/redis" => Self::HealthRedis,
            "/admin/keys" => Self::AdminKeys,
            "/admin/usage" | "/admin/usage/history" => Self::AdminUsage,
            p if p.starts_with("/admin/keys/") && p.len() > "/admin/keys/".len() => Self::AdminKey,
            p if p.starts_with("/v1/models/") && p.len() > "/v1/models/".len() => Self::Model,
            _ => return None,
        })
    }

    fn operational(self) -> bool {
        matches!(
            self,
            Self::Health
                | Self::HealthInference
                | Self::Ready
                | Self::Metrics
                | Self::HealthRedis
                | Self::AdminKeys
                | Self::AdminKey
                | Self::AdminUsage
        )
    }

    fn served_on(self, surface: Surface) -> bool {
        match surface {
            Surface::Admin => self.operational(),
            Surface::Api { operational } => {
                operational || !self.operational() || self == Self::Health
            }
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Self::Chat
            | Self::Completions
            | Self::Embeddings
            | Self::Tokenize
            | Self::Detokenize
            | Self::Rerank
            | Self::Messages
            | Self::CountTokens
            | Self::Score
            | Self::Classify
            | Self::Pool
            | Self::Transcriptions
            | Self::Translations
            | Self::Extra
            | Self::Responses
            | Self::ResponseTokens
            | Self::ResponseCancel => "POST",
            Self::Response => "GET, DELETE",
            Self::ResponseItems => "GET",
            Self::AdminKeys => "GET, POST",
            Self::AdminKey => "DELETE",
            _ => "GET, HEAD",
        }
    }

    fn accepts(self, m: &Method) -> bool {
        match self {
            Self::Chat
            | Self::Completions
            | Self::Embeddings
            | Self::Tokenize
            | Self::Detokenize
            | Self::Rerank
            | Self::Messages
            | Self::CountTokens
            | Self::Score
            | Self::Classify
            | Self::Pool
            | Self::Transcriptions
            | Self::Translations
            | Self::Extra
            | Self::Responses
            | Self::ResponseTokens
            | Self::ResponseCancel => m == Method::POST,
            Self::Response => m == Method::GET || m == Method::DELETE,
            Self::ResponseItems => m == Method::GET,
            Self::AdminKeys => m == Method::GET || m == Method::POST,
            Self::AdminKey => m == Method::DELETE,
            _ => m == Method::GET || m == Method::HEAD,
        }
    }

    /// The OpenAI API proper: authenticated when auth is on.
    fn is_api(self) -> bool {
        matches!(
            self,
            Self::Chat
                | Self::Completions
                | Self::Embeddings
                | Self::Tokenize
                | Self::Detokenize
                | Self::Rerank
                | Self::Messages
                | Self::CountTokens
                | Self::Score
                | Self::Classify
                | Self::Pool
                | Self::Transcriptions
                | Self::Translations
                | Self::Extra
                | Self::Responses
                | Self::ResponseTokens
                | Self::Response
                | Self::ResponseCancel
                | Self::ResponseItems
                | Self::Models
                | Self::Model
        )
    }

    /// The API dialect its answers and errors are written in.
    fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::CountTokens => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// The GenAI operation name and the route of an inference endpoint (`None`: not traced).
    fn traced(self, path: &str) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::Chat => ("chat", "/v1/chat/completions"),
            Self::Completions => ("text_completion", "/v1/completions"),
            Self::Embeddings => ("embeddings", "/v1/embeddings"),
            Self::Tokenize => ("tokenize", "/tokenize"),
            Self::Detokenize => ("detokenize", "/detokenize"),
            Self::Messages => ("chat", "/v1/messages"),
            Self::CountTokens => ("count_tokens", "/v1/messages/count_tokens"),
            Self::Score => (
                "score",
                if path == ScoreBare::PATH {
                    ScoreBare::PATH
                } else {
                    Score::PATH
                },
            ),
            Self::Classify => ("classify", Classify::PATH),
            Self::Pool => ("pooling", Pooling::PATH),
            Self::Transcriptions => ("transcription", Transcriptions::PATH),
            Self::Translations => ("translation", Translations::PATH),
            Self::Responses => ("chat", "/v1/responses"),
            Self::Rerank => (
                "rerank",
                match path {
                    "/rerank" => "/rerank",
                    "/v2/rerank" => "/v2/rerank",
                    _ => "/v1/rerank",
                },
            ),
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Tokenize => "tokenize",
            Self::Detokenize => "detokenize",
            Self::Rerank => "rerank",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Score => "score",
            Self::Classify => "classify",
            Self::Pool => "pooling",
            Self::Transcriptions => "transcriptions",
            Self::Translations => "translations",
            // One label for every configured path: the path is not a label value.
            Self::Extra => "extra",
            Self::Responses => "responses",
            Self::ResponseTokens => "response_input_tokens",
            Self::Response | Self::ResponseCancel | Self::ResponseItems => "response",
            Self::Models => "models",
            Self::Model => "model",
            Self::Health => "health",
            Self::HealthInference => "health_inference",
            Self::Ready => "ready",
            Self::Metrics => "metrics",
            Self::HealthRedis => "health_redis",
            Self::AdminKeys | Self::AdminKey => "admin_keys",
            Self::AdminUsage => "admin_usage",
        }
    }
}

/// The HTTP face of a [`Gateway`] on one listener: routes each request to the right
/// endpoint and turns every outcome into a response. Cheap to clone (one per connection).
#[derive(Clone)]
pub struct Api {
    gw: Gateway,
    surface: Surface,
}

/// The request headers the pipeline reads, kept before reading the body consumes the request.
struct CallHeaders {
    cache_control: Option<HeaderValue>,
    priority: Option<HeaderValue>,
}

impl CallHeaders {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            cache_control: req.headers().get(CACHE_CONTROL).cloned(),
            priority: req.headers().get(crate::headers::PRIORITY).cloned(),
        }
    }

    /// The call as the pipeline sees it: the key, the body's size (the prompt estimate) and
    /// what the caller asked of the cache and the queue.
    fn call<'a>(&'a self, principal: &'a Principal, body_len: usize) -> Call<'a> {
        Call {
            principal,
            body_len,
            cache_control: self.cache_control.as_ref().and_then(|v| v.to_str().ok()),
            priority: self.priority.as_ref().and_then(|v| v.to_str().ok()),
        }
    }
}

/// What a unary operation's pipeline cannot give: a stream (its request refused `stream`).
fn never_streamed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::error::SERVER_ERROR,
        "internal error",
    )
}

/// What one request's handling produced: the response, and for a stream, the body that will
/// close the access record when it ends.
enum Outcome {
    Done(Response<ResponseBody>),
    Streaming(Response<ResponseBody>),
}

/// What routing a request gave: its answer already, or the endpoint's future, boxed and owning
/// all it needs. Routing (authentication, the checks) runs in a box of its own that is freed
/// once it is done, so a stream waiting for its first token holds only its endpoint's state,
/// not routing's too (issue 24).
enum Routed {
    Now(Outcome),
    Later(Pin<Box<dyn Future<Output = Result<Outcome, ApiError>> + Send>>),
}

impl Routed {
    /// The endpoint's future, boxed on its own.
    fn later(
        endpoint: impl Future<Output = Result<Outcome, ApiError>> + Send + 'static,
    ) -> Result<Self, ApiError> {
        Ok(Self::Later(Box::pin(endpoint)))
    }
}

impl Api {
    /// The endpoints `surface` serves, answered by `gw`.
    pub fn new(gw: Gateway, surface: Surface) -> Self {
        Self { gw, surface }
    }

    /// Serves one HTTP request on this surface. Never fails: every error is an
    /// OpenAI-shaped response.
    ///
    /// Not an `async fn`: what it needs from the request is read here, and the request moves
    /// straight into the endpoint's future, which is boxed once. An `async fn` (and every
    /// `async` wrapper between here and the endpoint) keeps a dead copy of each argument for
    /// its whole life, and a stream waits for its first token inside all of them (issue 24:
    /// the request, 256 bytes, was held eight times over).
    pub fn handle<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        use futures::future::Either;
        use futures::{FutureExt, TryFutureExt};
        let surface = self.surface;
        let request_id = headers::request_id(req.headers());
        let endpoint = Endpoint::resolve(req.uri().path())
            .or_else(|| {
                (surface != Surface::Admin)
                    .then(|| self.gw.settings().extra_path(req.uri().path()))
                    .flatten()
                    .map(|_| Endpoint::Extra)
            })
            .filter(|e| e.served_on(surface));
        // Inference requests get spans when trace export is on (feature `otel`).
        let tracer = self
            .gw
            .inner
            .tracer
            .as_ref()
            .zip(endpoint.and_then(|e| e.traced(req.uri().path())));
        let trace = headers::trace_context(req.headers(), tracer.map(|(t, _)| t.sampler()));
        let span = tracing::info_span!(
            "request",
            id = %lumen_gateway::Text(request_id.to_str().unwrap_or_default()),
            trace_id = %trace.trace_id,
        );
        let mut access = Access::new(
            request_id.to_str().unwrap_or_default().to_owned(),
            trace.trace_id.clone(),
            endpoint.map_or("unknown", Endpoint::as_str),
        );
        if endpoint.is_none() {
            access.unknown_route = Some(crate::access::unknown_route(
                req.method().as_str(),
                req.uri().path(),
            ));
        }
        if let Some((tracer, (operation, route))) = tracer.filter(|_| trace.sampled()) {
            access.trace = Some(Box::new(tracer.begin(
                &trace,
                operation,
                route,
                access.start,
            )));
        }
        // Whether this request writes an access line (`/metrics`, `/health` and the like do
        // not, unless they fail).
        let logged = endpoint.is_some_and(|e| !e.operational());
        // Boxed once: the request's future is several KB, and every wrapper below (the access
        // scope, the span, the connection) would otherwise copy it when moved. Its errors
        // carry the access record as it stood when they happened (read inside the scope).
        let route = Box::pin(
            self.clone()
                .route(req, endpoint, request_id.clone(), trace.header),
        );
        let work = Box::pin(Abandonable {
            work: route
                .and_then(|routed| match routed {
                    Routed::Now(outcome) => Either::Left(std::future::ready(Ok(outcome))),
                    Routed::Later(endpoint) => Either::Right(endpoint),
                })
                .map_err(|e| (e, current_access())),
            gw: logged.then(|| self.gw.clone()),
        });
        let gw = self.gw.clone();
        access
            .scope(work)
            .map(move |(result, mut access)| match result {
                Ok(Outcome::Streaming(resp)) => resp,
                Ok(Outcome::Done(resp)) => {
                    if logged {
                        access.finish(
                            &gw.inner.metrics,
                            resp.status().as_u16(),
                            "ok",
                            access.overhead(),
                        );
                    }
                    resp
                }
                Err((e, mut access)) => {
                    if let Some(t) = access.trace.as_deref_mut() {
                        t.set_error_type(e.error.code.as_deref().unwrap_or(&e.error.kind));
                    }
                    let dialect = endpoint.map_or(Dialect::OpenAi, Endpoint::dialect);
                    let resp = e.into_response_in(dialect, &request_id);
                    access.finish(
                        &gw.inner.metrics,
                        resp.status().as_u16(),
                        "error",
                        access.overhead(),
                    );
                    resp
                }
            })
            .instrument(span)
    }

    /// Authenticates and checks the request, then answers it or hands back its endpoint's
    /// future. Each endpoint's future is boxed on its own: their sizes differ (a Responses
    /// call's is several KB), and a chat stream would otherwise carry the largest until its
    /// first token (issue 24: futures were a third of an open stream's memory).
    ///
    /// Owns what it is given (the connection's future must be `'static`).
    async fn route<B>(
        self,
        req: Request<B>,
        endpoint: Option<Endpoint>,
        id: HeaderValue,
        traceparent: String,
    ) -> Result<Routed, ApiError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let request_id = &id;
        let path = req.uri().path().to_owned();
        let Some(endpoint) = endpoint else {
            return Err(ApiError::route_not_found(req.method().as_str(), &path));
        };
        if !endpoint.accepts(req.method()) {
            return Err(ApiError::method_not_allowed(
                req.method().as_str(),
                &path,
                endpoint.allowed(),
            ));
        }
        let cx = self.context(&req, request_id, traceparent)?;
        let principal = if endpoint.is_api() {
            // Anthropic's clients send their key as `x-api-key`.
            let token = headers::bearer(req.headers()).or_else(|| {
                (endpoint.dialect() == Dialect::Anthropic)
                    .then(|| headers::api_key(req.headers()))
                    .flatten()
            });
            self.gw
                .core()
                .policy()
                .authenticate(token)
                .await
                .map_err(|e| match (e, endpoint.dialect()) {
                    (lumen_gateway::PolicyError::MissingKey, Dialect::Anthropic) => {
                        ApiError::missing_anthropic_key()
                    }
                    (e, _) => e.into(),
                })?
        } else {
            None
        };
        let done = |r| Ok(Routed::Now(Outcome::Done(r)));
        match endpoint {
            Endpoint::Health => done(with_id(Response::new(full(Bytes::new())), request_id)),
            Endpoint::HealthInference => {
                let report = self.gw.inference_report();
                let status = if report.status == "healthy" {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                done(json(status, &report, request_id))
            }
            Endpoint::Ready => {
                let mut report = self.gw.ready_report();
                if self.gw.settings().redis_required
                    && !matches!(self.gw.redis_health().await, Some(Ok(_)))
                {
                    report.ready = false;
                    report.missing.push("redis".to_owned());
                }
                let status = if report.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                done(json(status, &report, request_id))
            }
            Endpoint::HealthRedis => match self.gw.redis_health().await {
                None => Err(ApiError::route_not_found(req.method().as_str(), &path)),
                Some(Ok(latency)) => done(json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "latency_ms": latency.as_secs_f64() * 1e3}),
                    request_id,
                )),
                Some(Err(e)) => done(json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "unavailable", "error": e.to_string()}),
                    request_id,
                )),
            },
            Endpoint::Metrics => {
                let mut resp = Response::new(full(self.gw.render_metrics()));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                done(with_id(resp, request_id))
            }
            Endpoint::AdminKeys | Endpoint::AdminKey | Endpoint::AdminUsage => {
                let (parts, body) = req.into_parts();
                if parts.method == Method::POST {
                    check_json_request(&parts.headers)?;
                }
                let (body, _budget) = Box::pin(crate::body::read(
                    body,
                    declared_length(&parts.headers),
                    self.gw.settings().body_limits(),
                    &self.gw.inner.body_budget,
                ))
                .await?;
                let query = parts.uri.query().unwrap_or_default();
                match Box::pin(crate::admin::handle(
                    &self.gw,
                    &parts.method,
                    &path,
                    query,
                    &parts.headers,
                    &body,
                ))
                .await?
                {
                    crate::admin::Answer::Json(status, value) => {
                        done(json(status, &value, request_id))
                    }
                    crate::admin::Answer::Csv(csv) => {
                        let mut resp = Response::new(full(csv));
                        resp.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/csv; charset=utf-8"),
                        );
                        done(with_id(resp, request_id))
                    }
                }
            }
            Endpoint::Models => {
                let mut list = self.gw.core().models();
                if let Some(k) = &principal {
                    list.data.retain(|m| k.allows(&m.id));
                }
                done(json(StatusCode::OK, &list, request_id))
            }
            Endpoint::Model => {
                let id = crate::path::percent_decode(&path["/v1/models/".len()..]);
                match self
                    .gw
                    .core()
                    .model(&id)
                    .filter(|_| principal.as_ref().is_none_or(|k| k.allows(&id)))
                {
                    Some(m) => done(json(StatusCode::OK, &m, request_id)),
                    None => Err(ApiError::model_not_found(&id)),
                }
            }
            Endpoint::Chat => Routed::later(self.inference::<Chat, B>(req, principal, id, cx)),
            Endpoint::Completions => {
                Routed::later(self.inference::<Completions, B>(req, principal, id, cx))
            }
            Endpoint::Embeddings => {
                Routed::later(self.inference::<Embeddings, B>(req, principal, id, cx))
            }
            Endpoint::Tokenize => {
                Routed::later(self.inference::<Tokenize, B>(req, principal, id, cx))
            }
            Endpoint::Detokenize => {
                Routed::later(self.inference::<Detokenize, B>(req, principal, id, cx))
            }
            Endpoint::Messages => Routed::later(self.messages(req, principal, id, cx)),
            Endpoint::Responses => Routed::later(self.responses(req, principal, id, cx)),
            Endpoint::ResponseTokens => {
                Routed::later(self.response_input_tokens(req, principal, id, cx))
            }
            Endpoint::Response | Endpoint::ResponseCancel | Endpoint::ResponseItems => {
                let id = response_id(&path).unwrap_or_default();
                // A native engine's response: the call is that engine's to answer.
                if let Some(home) = self
                    .gw
                    .core()
                    .policy()
                    .native_response(id, &owner(&principal))
                    .await?
                {
                    let query = req.uri().query().map(str::to_owned);
                    return Box::pin(self.stored_native(
                        endpoint,
                        req.method(),
                        query,
                        id,
                        home,
                        cx,
                        request_id,
                    ))
                    .await
                    .map(Routed::Now);
                }
                let stored = self
                    .gw
                    .core()
                    .policy()
                    .load_response(id, &owner(&principal))
                    .await?
                    .ok_or_else(|| ApiError::response_not_found(id))?;
                match (endpoint, req.method()) {
                    (Endpoint::ResponseItems, _) => {
                        let query =
                            responses::ItemsQuery::parse(req.uri().query().unwrap_or_default())?;
                        let page = responses::input_items_page(
                            &stored.response.id,
                            &stored.input,
                            &query,
                        )?;
                        done(json(StatusCode::OK, &page, request_id))
                    }
                    // Lumen runs no background responses (they are refused): there is
                    // never one to cancel.
                    (Endpoint::ResponseCancel, _) => Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        crate::error::INVALID_REQUEST,
                        "Only responses created with background=true can be cancelled.",
                    )),
                    (_, &Method::DELETE) => {
                        self.gw.core().policy().delete_response(id).await?;
                        done(json(
                            StatusCode::OK,
                            &serde_json::json!({"id": id, "object": "response", "deleted": true}),
                            request_id,
                        ))
                    }
                    _ => done(json(StatusCode::OK, &stored.response, request_id)),
                }
            }
            // Each score path keeps its own shape on the engine (and in the cache).
            Endpoint::Score if path == ScoreBare::PATH => {
                Routed::later(self.inference::<ScoreBare, B>(req, principal, id, cx))
            }
            Endpoint::Score => Routed::later(self.inference::<Score, B>(req, principal, id, cx)),
            Endpoint::Classify => {
                Routed::later(self.inference::<Classify, B>(req, principal, id, cx))
            }
            Endpoint::Pool => Routed::later(self.inference::<Pooling, B>(req, principal, id, cx)),
            Endpoint::CountTokens => Routed::later(self.count_tokens(req, principal, id, cx)),
            Endpoint::Transcriptions => {
                Routed::later(self.form::<Transcriptions, B>(req, principal, id, cx))
            }
            Endpoint::Translations => {
                Routed::later(self.form::<Translations, B>(req, principal, id, cx))
            }
            Endpoint::Extra => Routed::later(self.extra(req, principal, id, cx)),
            // Each path keeps its own shape on the engine (and in the cache).
            Endpoint::Rerank => match RerankPath::of(&path) {
                RerankPath::V1 => {
                    Routed::later(self.inference::<Rerank, B>(req, principal, id, cx))
                }
                RerankPath::Bare => {
                    Routed::later(self.inference::<RerankBare, B>(req, principal, id, cx))
                }
                RerankPath::V2 => {
                    Routed::later(self.inference::<RerankV2, B>(req, principal, id, cx))
                }
            },
        }
    }

    /// An operation over HTTP: reads and parses the body within the operation's limit, then
    /// runs the core's pipeline ([`lumen_gateway::Gateway::serve`]) and renders what it gives.
    async fn inference<O: Operation, B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let call_headers = CallHeaders::of(&req);
        let settings = self.gw.settings();
        let limit = O::max_body_bytes(settings.max_body_bytes, settings.max_tokenizer_body_bytes);
        // `_budget` is the body's share of the memory budget: kept until this call returns, by
        // when the parsed request has been consumed by the engine call (a stream's, at commit).
        let (body, _budget) = self.read_body(req, limit).await?;
        // A chat, completions or embeddings request keeps the body's bytes (its messages,
        // prompt or input are a slice of them, and they are what the engine is sent); other
        // requests hold what is forwarded, and the body is freed here rather than kept for the
        // whole engine call.
        let r = O::read_shared(&body, settings.max_n)?;
        let body_len = body.len();
        drop(body);
        let call = call_headers.call(&principal, body_len);
        Ok(match self.gw.core().serve::<O>(r, call, cx).await? {
            Served::Stream { stream, rate } => self.sse(stream, request_id, rate, OpenAiFrames),
            Served::Answer(answer) => Outcome::Done(answer_response(answer, request_id)),
        })
    }

    /// An audio endpoint: a `multipart/form-data` upload routed by its `model` field. The form
    /// is scanned as it arrives (a broken one is refused before the rest is read), kept whole
    /// within `server.max_body_bytes` and the body budget (the attempts may send it more than
    /// once), and forwarded byte for byte with the engine's model id spliced in. The answer
    /// keeps the engine's content type (JSON, or text for `text`, `srt`, `vtt`).
    async fn form<O: Operation<Request = FormCall>, B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let call_headers = CallHeaders::of(&req);
        check_encodings(req.headers())?;
        let mut types = req.headers().get_all(CONTENT_TYPE).iter();
        let content_type = match (types.next(), types.next()) {
            (Some(v), None) => v.to_str().map_err(|_| FormError::NotMultipart)?.to_owned(),
            _ => return Err(FormError::NotMultipart.into()),
        };
        let mut scanner = FormScanner::new(&content_type)?;
        let declared = declared_length(req.headers());
        let settings = self.gw.settings();
        let mut limits = settings.body_limits();
        limits.max_bytes =
            O::max_body_bytes(settings.max_body_bytes, settings.max_tokenizer_body_bytes);
        let read = crate::body::read_inspected(
            req.into_body(),
            declared,
            limits,
            &self.gw.inner.body_budget,
            &mut |data| scanner.feed(data),
        )
        .await;
        let (body, _budget) = match read {
            Err(crate::body::BodyError::Refused) => {
                return Err(scanner
                    .error()
                    .cloned()
                    .unwrap_or(FormError::Malformed("the form was refused"))
                    .into());
            }
            r => r?,
        };
        let fields = scanner.finish()?;
        if fields.stream {
            return Err(RequestError::invalid(
                "'stream': true is not supported through Lumen for audio yet: ask for the whole \
                 answer (see docs/audio.md).",
                "stream",
            )
            .into());
        }
        let body_len = body.len();
        let r = FormCall(FormRequest::new(content_type, body, fields));
        let call = call_headers.call(&principal, body_len);
        match self.gw.core().serve::<O>(r, call, cx).await? {
            Served::Answer(answer) => Ok(Outcome::Done(answer_response(answer, request_id))),
            // Never streamed: `stream` was refused above.
            Served::Stream { .. } => Err(never_streamed()),
        }
    }

    /// A configured extra JSON path: the body read and parsed as any JSON endpoint's, then
    /// the same pipeline, to the same path on the engine.
    async fn extra<B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let settings = self.gw.settings();
        let Some(path) = settings.extra_path(req.uri().path()) else {
            // Reloaded away between routing and here.
            return Err(ApiError::route_not_found(
                req.method().as_str(),
                req.uri().path(),
            ));
        };
        let call_headers = CallHeaders::of(&req);
        let (body, _budget) = self.read_body(req, settings.max_body_bytes).await?;
        let json: lumen_openai_types::JsonRequest = lumen_openai_types::request::parse(&body)?;
        let body_len = body.len();
        drop(body);
        let r = ExtraCall { path, json };
        ExtraJson::validate(&r, settings.max_n)?;
        let call = call_headers.call(&principal, body_len);
        match self.gw.core().serve::<ExtraJson>(r, call, cx).await? {
            Served::Answer(answer) => Ok(Outcome::Done(answer_response(answer, request_id))),
            Served::Stream { .. } => Err(never_streamed()),
        }
    }

    /// `POST /v1/messages`: Anthropic's Messages API through the same pipeline as chat (keys,
    /// model lists, limits, cache, retries, fallbacks, billing on the engine's usage). The body
    /// is checked and translated here, once; each attempt then forwards the client's bytes to
    /// an engine that serves the API (with its `anthropic-version` and `anthropic-beta`), or
    /// the translation to one that does not (`lumen_gateway::messages`). The answer, its
    /// stream and its errors are in Anthropic's shape either way.
    async fn messages<B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let call_headers = CallHeaders::of(&req);
        let mut cx = cx;
        cx.headers = headers::anthropic(req.headers());
        let settings = self.gw.settings();
        let (body, _budget) = self.read_body(req, settings.max_body_bytes).await?;
        let request = MessagesRequest::parse(&body)?;
        let translated = translate::to_chat(&request, &TranslateOptions::default())?;
        let body_len = body.len();
        let r = MessagesCall::new(body, &request, translated)
            .map_err(|e| RequestError::invalid(e.to_string(), "model"))?;
        drop(request);
        Messages::validate(&r, settings.max_n)?;
        let call = call_headers.call(&principal, body_len);
        Ok(match self.gw.core().serve::<Messages>(r, call, cx).await? {
            Served::Stream { stream, rate } => self.sse(stream, request_id, rate, AnthropicFrames),
            Served::Answer(answer) => Outcome::Done(answer_response(answer, request_id)),
        })
    }

    /// `POST /v1/responses`: OpenAI's Responses API. To a model whose backends all serve it
    /// themselves (`backends[].native_responses`), or continuing a response one of them keeps,
    /// the body goes as sent (`responses_native`). Otherwise it is translated to a chat
    /// completion and run through the same pipeline as chat; with `store` (the default) the
    /// response and its conversation are kept (`PolicyStep::save_response`), so
    /// `previous_response_id`, `GET /v1/responses/{id}` and `input_items` work on any engine,
    /// for the key that created it only.
    async fn responses<B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let call_headers = CallHeaders::of(&req);
        let settings = self.gw.settings();
        let (body, _budget) = self.read_body(req, settings.max_body_bytes).await?;
        let owner = owner(&principal);
        let call = call_headers.call(&principal, body.len());
        if let Some(native) = self.native_plan(&body, &principal, &owner).await? {
            return self
                .responses_native(body, native, owner, call, request_id, cx)
                .await;
        }
        let request: ResponsesRequest = lumen_openai_types::request::parse(&body)?;
        let core = self.gw.core();
        let conversation = self.conversation(&request, &owner).await?;
        let chat = responses::to_chat(&request, &conversation).map_err(RequestError::from)?;
        Chat::validate(&chat, settings.max_n)?;
        let body_len = body.len();
        drop(body);
        let mut seed = uuid::Uuid::encode_buffer();
        let seed = uuid::Uuid::now_v7().simple().encode_lower(&mut seed);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let started = responses::Response::start(&request, seed, created);
        let keep = request.store.unwrap_or(true).then(|| Keep {
            core: core.clone(),
            owner,
            conversation,
            input: request.input.clone(),
        });
        drop(request);
        let call = Call { body_len, ..call };
        let style = responses::ReasoningStyle::Text;
        Ok(match core.serve::<Chat>(chat, call, cx).await? {
            Served::Stream { stream, rate } => self.sse(
                stream,
                request_id,
                rate,
                ResponsesFrames::new(responses::StreamTranslator::new(started, style), keep),
            ),
            Served::Answer(mut answer) => {
                let chat: ChatCompletionResponse = serde_json::from_slice(&answer.json)
                    .map_err(|e| translation_failed(&e.to_string()))?;
                let response = responses::response_from_chat(started, &chat, style);
                answer.json = serde_json::to_vec(&response)
                    .map_err(|e| translation_failed(&e.to_string()))?
                    .into();
                if let Some(keep) = keep {
                    keep.save(&response);
                }
                Outcome::Done(answer_response(answer, request_id))
            }
        })
    }

    /// Whether a Responses request goes to an engine as sent, and where: when it continues a
    /// response a native engine keeps (`previous_response_id` mapped to it, for this key), that
    /// engine only; else when its model resolves (for this key) to a pool whose backends all
    /// serve the API themselves, any of them. The choice is made once per request, from the
    /// pool as configured: a pool that mixes native and translated backends is translated, so
    /// its retries and fallbacks may go anywhere (ARCHITECTURE.md). `None`: translated (which
    /// also words every error about the body or the model, as before).
    async fn native_plan(
        &self,
        body: &[u8],
        principal: &Principal,
        owner: &str,
    ) -> Result<Option<NativePlan>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Peek {
            #[serde(default)]
            model: String,
            #[serde(default)]
            previous_response_id: Option<String>,
            #[serde(default)]
            store: Option<bool>,
        }
        let Ok(peek) = serde_json::from_slice::<Peek>(body) else {
            return Ok(None);
        };
        let core = self.gw.core();
        let store = peek.store.unwrap_or(true);
        if let Some(id) = peek.previous_response_id {
            return Ok(core
                .policy()
                .native_response(&id, owner)
                .await?
                .map(|home| NativePlan {
                    pin: Some((id, home.backend)),
                    store,
                }));
        }
        let allowed = |m: &str| principal.as_ref().is_none_or(|k| k.allows(m));
        let Ok(public) = core.resolve(&peek.model, &allowed) else {
            return Ok(None);
        };
        let pool = core.router().backends_for(&public);
        let native = !pool.is_empty() && pool.iter().all(|s| s.backend.backend.native_responses());
        Ok(native.then_some(NativePlan { pin: None, store }))
    }

    /// `POST /v1/responses` to an engine that serves it: the body as sent (the model spliced
    /// per attempt), through the same pipeline as every other request (keys, model lists,
    /// limits billed on the engine's Responses usage, retries, fallbacks among native
    /// backends). The answer or stream is the engine's; its response id is mapped to the
    /// backend and this key, so what follows (`previous_response_id`, `GET`, `DELETE`) goes
    /// back there.
    async fn responses_native(
        &self,
        body: Bytes,
        plan: NativePlan,
        owner: String,
        call: Call<'_>,
        request_id: &HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError> {
        let mut r = ResponsesCall::read(body).map_err(|e| {
            ApiError::from(RequestError::invalid(
                format!("The body is not a Responses request: {e}"),
                "model",
            ))
        })?;
        let (continued, pin) = plan.pin.unzip();
        r.pin = pin;
        let core = self.gw.core();
        let served = match core.serve::<NativeResponses>(r, call, cx).await {
            Ok(served) => served,
            Err(lumen_gateway::ServeError::Gateway(e))
                if continued.is_some() && e.engine_unavailable() =>
            {
                let id = continued.unwrap_or_default();
                tracing::warn!(error = %lumen_gateway::Text(&e.to_string()), "the engine that holds a continued response is unavailable");
                return Err(ApiError::response_engine_unavailable(&id));
            }
            Err(e) => return Err(e.into()),
        };
        let home = |backend: &str| {
            plan.store.then(|| NativeHome {
                core: core.clone(),
                owner: owner.clone(),
                backend: backend.to_owned(),
            })
        };
        Ok(match served {
            Served::Stream { stream, rate } => {
                let frames = NativeResponsesFrames::new(home(stream.backend()));
                self.sse(stream, request_id, rate, frames)
            }
            Served::Answer(answer) => {
                #[derive(serde::Deserialize)]
                struct Id {
                    #[serde(default)]
                    id: String,
                }
                let id = serde_json::from_slice::<Id>(&answer.json).map(|a| a.id);
                if let (Some(home), Ok(id)) = (answer.backend.as_deref().and_then(home), id) {
                    home.save(&id);
                }
                Outcome::Done(answer_response(answer, request_id))
            }
        })
    }

    /// `GET`/`DELETE /v1/responses/{id}`, `cancel` and `input_items` of a response a native
    /// engine keeps (the caller's own: `home` was found for its key): forwarded to that
    /// engine, its answer as it sent it. A `DELETE` the engine did also forgets the mapping.
    /// The engine gone or unreachable is `response_engine_unavailable`, never another
    /// engine's answer.
    #[allow(clippy::too_many_arguments)]
    async fn stored_native(
        &self,
        endpoint: Endpoint,
        method: &Method,
        query: Option<String>,
        id: &str,
        home: lumen_gateway::NativeResponseHome,
        cx: RequestContext,
        request_id: &HeaderValue,
    ) -> Result<Outcome, ApiError> {
        use lumen_backend::EngineMethod;
        let (verb, path) = match (endpoint, method) {
            (Endpoint::ResponseItems, _) => {
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                (
                    EngineMethod::Get,
                    format!("/v1/responses/{id}/input_items{query}"),
                )
            }
            (Endpoint::ResponseCancel, _) => {
                (EngineMethod::Post, format!("/v1/responses/{id}/cancel"))
            }
            (_, &Method::DELETE) => (EngineMethod::Delete, format!("/v1/responses/{id}")),
            _ => (EngineMethod::Get, format!("/v1/responses/{id}")),
        };
        let core = self.gw.core();
        crate::access::note(|a| a.backend = Some(home.backend.clone()));
        let reply = core
            .call_backend_at(&home.backend, verb, path, &cx)
            .await
            .map_err(|e| {
                if e.engine_unavailable() {
                    tracing::warn!(error = %lumen_gateway::Text(&e.to_string()), "the engine that holds a response is unavailable");
                    ApiError::response_engine_unavailable(id)
                } else {
                    e.into()
                }
            })?;
        if verb == EngineMethod::Delete {
            core.policy().delete_native_response(id).await?;
        }
        let json = reply
            .to_json()
            .map_err(|e| translation_failed(&e.to_string()))?;
        let mut resp = Response::new(full(json));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Outcome::Done(with_id(resp, request_id)))
    }

    /// The stored conversation a request continues (`previous_response_id`), when `owner`
    /// created it; 404 otherwise, the same for every reason.
    async fn conversation(
        &self,
        request: &ResponsesRequest,
        owner: &str,
    ) -> Result<Vec<responses::InputItem>, ApiError> {
        let Some(id) = &request.previous_response_id else {
            return Ok(Vec::new());
        };
        Ok(self
            .gw
            .core()
            .policy()
            .load_response(id, owner)
            .await?
            .ok_or_else(|| ApiError::response_not_found(id))?
            .conversation)
    }

    /// `POST /v1/responses/input_tokens`: the input (and instructions, tools, the conversation
    /// it continues) through the engine's tokenizer with its chat template, as
    /// `{"object": "response.input_tokens", "input_tokens": n}`; charged as a request only.
    async fn response_input_tokens<B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let settings = self.gw.settings();
        let limit =
            Tokenize::max_body_bytes(settings.max_body_bytes, settings.max_tokenizer_body_bytes);
        let (body, _budget) = self.read_body(req, limit).await?;
        let request: ResponsesRequest = lumen_openai_types::request::parse(&body)?;
        let conversation = self.conversation(&request, &owner(&principal)).await?;
        let chat = responses::to_chat(&request, &conversation).map_err(RequestError::from)?;
        let n = self
            .tokens_of(&chat, &principal, body.len(), cx, settings.max_n)
            .await?;
        Ok(Outcome::Done(json(
            StatusCode::OK,
            &serde_json::json!({"object": "response.input_tokens", "input_tokens": n}),
            request_id,
        )))
    }

    /// Tokens of a chat request's messages (and tools) through the engine's `/tokenize`, with
    /// its chat template; the call is charged as a tokenizer call (a request, no tokens).
    async fn tokens_of(
        &self,
        chat: &lumen_openai_types::ChatCompletionRequest,
        principal: &Principal,
        body_len: usize,
        cx: RequestContext,
        max_n: u32,
    ) -> Result<u64, ApiError> {
        let tokenize = serde_json::to_vec(&CountTokensBody {
            model: &chat.model,
            messages: &chat.messages,
            tools: chat.extra.get("tools"),
        })
        .map_err(|e| translation_failed(&e.to_string()))?;
        let r = Tokenize::read(&tokenize, max_n)?;
        let call = Call {
            principal,
            body_len,
            cache_control: None,
            priority: None,
        };
        match self.gw.core().serve::<Tokenize>(r, call, cx).await? {
            Served::Answer(answer) => {
                let counted: TokenCount = serde_json::from_slice(&answer.json)
                    .map_err(|e| translation_failed(&e.to_string()))?;
                Ok(counted.count)
            }
            Served::Stream { .. } => {
                Err(translation_failed("the tokenizer answered with a stream"))
            }
        }
    }

    /// `POST /v1/messages/count_tokens`: the messages (and tools) through the engine's
    /// tokenizer with its chat template (`/tokenize`), answered as `{"input_tokens": n}`. Like
    /// `/tokenize`, charged as a request, never as tokens.
    async fn count_tokens<B>(
        self,
        req: Request<B>,
        principal: Principal,
        request_id: HeaderValue,
        cx: RequestContext,
    ) -> Result<Outcome, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = &request_id;
        let settings = self.gw.settings();
        let limit =
            Tokenize::max_body_bytes(settings.max_body_bytes, settings.max_tokenizer_body_bytes);
        let (body, _budget) = self.read_body(req, limit).await?;
        let request = MessagesRequest::parse_count_tokens(&body)?;
        let chat = translate::count_tokens_to_chat(&request)?;
        drop(request);
        let n = self
            .tokens_of(&chat, &principal, body.len(), cx, settings.max_n)
            .await?;
        Ok(Outcome::Done(json(
            StatusCode::OK,
            &serde_json::json!({"input_tokens": n}),
            request_id,
        )))
    }

    /// What the gateway needs from the request's headers.
    fn context<B>(
        &self,
        req: &Request<B>,
        request_id: &HeaderValue,
        traceparent: String,
    ) -> Result<RequestContext, ApiError> {
        let mut cx = RequestContext::new(request_id.to_str().unwrap_or_default());
        cx.traceparent = Some(traceparent);
        cx.session_id = headers::session_id(req.headers()).map(str::to_owned);
        cx.timeout = headers::timeout(req.headers())?;
        Ok(cx)
    }

    /// Reads the body within `limit`, the body deadline and the memory budget (`body.rs`): a
    /// declared length over the limit is refused before a byte is read, an undeclared one as
    /// soon as it passes the limit. Only JSON is read: a form or text body (which a browser can
    /// send cross-site without a preflight) and any content or transfer coding are refused
    /// before reading.
    async fn read_body<B>(
        &self,
        req: Request<B>,
        limit: usize,
    ) -> Result<(Bytes, crate::body::BodyPermit), ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        check_json_request(req.headers())?;
        let declared = declared_length(req.headers());
        let mut limits = self.gw.settings().body_limits();
        limits.max_bytes = limit;
        Ok(crate::body::read(
            req.into_body(),
            declared,
            limits,
            &self.gw.inner.body_budget,
        )
        .await?)
    }

    /// A committed stream as SSE. The access record moves into the body and is closed when the
    /// stream ends (or the client goes away), with its time to first token and tokens; `prompt`
    /// is the request's prompt estimate, charged with what was relayed when the engine's usage
    /// never arrives.
    fn sse<
        T: Serialize
            + HasModel
            + HasUsage
            + StreamPiece
            + serde::de::DeserializeOwned
            + Default
            + Send
            + 'static,
        F: Frames<T>,
    >(
        &self,
        stream: GatewayStream<T>,
        request_id: &HeaderValue,
        rate: RateHeaders,
        frames: F,
    ) -> Outcome {
        let mut access = current_access();
        // Read before the stream and the record move into the body.
        let fell_back = access
            .requested
            .as_deref()
            .is_some_and(|r| r != stream.model())
            .then(|| HeaderValue::from_str(stream.model()).ok())
            .flatten();
        access.ttft = Some(access.start.elapsed());
        let overhead = access.overhead();
        let tpot = self
            .gw
            .inner
            .metrics
            .handles(
                access.model_label(),
                access.backend.as_deref().unwrap_or("none"),
                access.endpoint,
                200,
            )
            .tpot
            .clone();
        let mut closing = self.gw.inner.closing.subscribe();
        let body = SseBody {
            frames,
            tpot,
            closing: Box::pin(async move {
                // An error means the gateway is gone; then nothing will ever close the stream.
                if closing.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }),
            inner: stream,
            finished: false,
            last_chunk: Instant::now(),
            chunks: 0,
            record: Some(Record {
                access,
                overhead,
                gateway: self.gw.clone(),
                error: None,
            }),
            span: tracing::Span::current(),
        };
        let mut resp = Response::new(body.boxed_unsync());
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tell nginx-style proxies in front of Lumen not to buffer the stream.
        h.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        crate::error::rate_headers(h, &rate);
        if let Some(v) = fell_back {
            h.insert(SERVED_MODEL, v);
        }
        Outcome::Streaming(with_id(resp, request_id))
    }
}

fn current_access() -> Access {
    let mut out = None;
    crate::access::note(|a| out = Some(a.clone()));
    out.unwrap_or_else(|| Access::new(String::new(), String::new(), "unknown"))
}

/// `x-lumen-served-model`, when a fallback served the request with another model than the
/// caller's (the body's `model` names it too).
fn served_model_header(resp: &mut Response<ResponseBody>, served: Option<&str>) {
    if let Some(v) = served.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert(SERVED_MODEL, v);
    }
}

/// A whole answer as JSON, with its rate-limit, cache and served-model headers.
fn answer_response(a: Answer, request_id: &HeaderValue) -> Response<ResponseBody> {
    if a.tokens.is_some() {
        crate::access::note(|x| x.tokens = a.tokens);
    }
    let mut resp = Response::new(full(a.json));
    // Room for content type, request id, six rate-limit headers and the cache header up
    // front, instead of growing the map twice.
    resp.headers_mut().reserve(12);
    // An engine's text answer keeps its type (audio as `text`, `srt`, `vtt`).
    let content_type = a
        .content_type
        .and_then(|t| HeaderValue::from_str(&t).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    served_model_header(&mut resp, a.fell_back.as_deref());
    let h = resp.headers_mut();
    crate::error::rate_headers(h, &a.rate);
    if let Some(cache) = a.cache {
        h.insert(CACHE_HEADER, HeaderValue::from_static(cache));
    }
    with_id(resp, request_id)
}

/// An engine answer that could not be written in the caller's dialect.
fn translation_failed(why: &str) -> ApiError {
    tracing::warn!(error = %lumen_gateway::Text(why), "answer translation failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        crate::error::SERVER_ERROR,
        format!("The engine's answer could not be translated: {why}"),
    )
}

/// vLLM's `/tokenize` body for a count: the chat messages and tools with the template applied.
#[derive(Serialize)]
struct CountTokensBody<'a> {
    model: &'a str,
    messages: &'a lumen_openai_types::Messages,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a serde_json::value::RawValue>,
}

/// The count in a `/tokenize` answer.
#[derive(serde::Deserialize)]
struct TokenCount {
    count: u64,
}

/// Where a Responses request goes as sent (see `Api::native_plan`).
struct NativePlan {
    /// The response it continues and the backend that keeps it: the only one that may serve.
    pin: Option<(String, String)>,
    /// `store` (default true): the engine keeps the response, so its id is mapped.
    store: bool,
}

/// The id in `/v1/responses/{id}` (and its `/cancel`, `/input_items`), when the path has one.
fn response_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/responses/")?;
    let id = rest
        .strip_suffix("/cancel")
        .or_else(|| rest.strip_suffix("/input_items"))
        .unwrap_or(rest);
    (!id.is_empty() && !id.contains('/') && id != "input_tokens").then_some(id)
}

/// Who owns a stored response: the key's namespace (a key re-created under the same name is
/// another owner), or nobody in particular when auth is off.
fn owner(principal: &Principal) -> String {
    principal
        .as_ref()
        .map(|k| k.namespace())
        .unwrap_or_default()
}

fn with_id(mut resp: Response<ResponseBody>, request_id: &HeaderValue) -> Response<ResponseBody> {
    resp.headers_mut().insert(REQUEST_ID, request_id.clone());
    resp
}

fn json<T: Serialize>(
    status: StatusCode,
    value: &T,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            with_id(resp, request_id)
        }
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::error::SERVER_ERROR,
                "internal error",
            )
            .into_response(request_id)
        }
    }
}

/// The open access record of a stream, closed exactly once.
struct Record {
    access: Access,
    overhead: Duration,
    gateway: Gateway,
    error: Option<&'static str>,
}

pin_project_lite::pin_project! {
    /// A request's work, which writes the access line (499 `client_disconnected`) when it is
    /// dropped unfinished: the client went away before its answer started (a stream before its
    /// first token, a request waiting in the queue or for its engine). Dropped inside the
    /// access scope (tokio drops a scoped future with its task-local set), so the record is
    /// the request's as it stood. Only for endpoints that write access lines (`gw`).
    struct Abandonable<F> {
        #[pin]
        work: F,
        gw: Option<Gateway>,
    }

    impl<F> PinnedDrop for Abandonable<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(gw) = this.project().gw.take() {
                crate::access::note(|access| {
                    let overhead = access.overhead();
                    access.finish(&gw.inner.metrics, 499, "client_disconnected", overhead);
                });
            }
        }
    }
}

impl<F: Future> Future for Abandonable<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = ready!(this.work.poll(cx));
        // Finished: the access line is the caller's (or the stream's) to write.
        *this.gw = None;
        Poll::Ready(out)
    }
}

pin_project_lite::pin_project! {
    /// Server-sent events for a committed stream, written by the dialect's [`Frames`] (OpenAI:
    /// one frame per engine chunk, its original bytes when unchanged, then `data: [DONE]`; a
    /// failure after commit is one error event and the body ends cleanly). Dropping the body
    /// (client gone) drops the engine stream, which aborts generation.
    struct SseBody<T, F> {
        #[pin]
        inner: GatewayStream<T>,
        frames: F,
        finished: bool,
        last_chunk: Instant,
        chunks: u64,
        record: Option<Record>,
        // Resolves when the shutdown grace runs out (`Gateway::end_streams`).
        closing: Pin<Box<dyn Future<Output = ()> + Send>>,
        // Resolved once per stream: observing costs no label lookup per chunk.
        tpot: prometheus_client::metrics::histogram::Histogram,
        // hyper polls the body outside the request's future; re-entering the span keeps the
        // request id on every log line the stream writes.
        span: tracing::Span,
    }

    impl<T, F> PinnedDrop for SseBody<T, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let _entered = this.span.enter();
            if let Some(mut r) = this.record.take() {
                // Dropped unfinished after the shutdown grace ended the streams: the client
                // did not leave, shutdown cut it (a client too stalled to be sent the end).
                let noop = &mut Context::from_waker(std::task::Waker::noop());
                let outcome = if *this.finished {
                    "ok"
                } else if this.closing.as_mut().poll(noop).is_ready() {
                    r.error = Some("shutdown");
                    "shutdown"
                } else {
                    "client_disconnected"
                };
                close(r, this.inner.get_mut(), outcome);
            }
        }
    }
}

/// Where a stream stops joining ready events into one frame: past this, the frame goes and
/// the rest waits for the next poll (a frame a client can take in one or two reads).
const JOIN_LIMIT: usize = 16 * 1024;

/// The events of one frame: the first as it came (a stream that keeps up never copies), any
/// more copied behind it.
#[derive(Default)]
struct Joined {
    first: Bytes,
    more: Option<bytes::BytesMut>,
}

impl Joined {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), |m| m.len())
    }

    fn push(&mut self, bytes: Bytes) {
        if let Some(more) = &mut self.more {
            more.extend_from_slice(&bytes);
        } else if self.first.is_empty() {
            self.first = bytes;
        } else {
            let mut more = bytes::BytesMut::with_capacity(self.first.len() + bytes.len());
            more.extend_from_slice(&self.first);
            more.extend_from_slice(&bytes);
            self.more = Some(more);
        }
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, bytes::BytesMut::freeze)
    }
}

/// Closes the access record of a stream that ended, after settling the caller's reservation
/// (so the usage is final when the end is seen).
fn close<T>(mut r: Record, stream: &mut GatewayStream<T>, outcome: &str) {
    let (tokens, estimated) = stream.charged();
    stream.settle();
    r.access.tokens = Some(tokens);
    r.access.tokens_estimated = estimated;
    r.access.continuations = stream.continuations();
    if stream.continuations() > 0 {
        // The request counts against the backend (and model) that finished it; the line
        // names every backend that served a part.
        r.access.backend = Some(stream.backend().to_owned());
        r.access.model = Some(stream.model().to_owned());
        r.access.backends = Some(stream.backends().collect::<Vec<_>>().join(","));
    }
    let outcome = r.error.unwrap_or(outcome);
    r.access
        .finish(&r.gateway.inner.metrics, 200, outcome, r.overhead);
}

impl<T, F> Body for SseBody<T, F>
where
    T: Serialize + HasModel + HasUsage + StreamPiece + serde::de::DeserializeOwned + Default,
    F: Frames<T>,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        let _entered = this.span.enter();
        if this.closing.as_mut().poll(cx).is_ready() {
            *this.finished = true;
            tracing::warn!("stream ended by shutdown");
            if let Some(mut r) = this.record.take() {
                r.error = Some("shutdown");
                close(r, this.inner.as_mut().get_mut(), "shutdown");
            }
            return Poll::Ready(Some(Ok(Frame::data(
                this.frames.fail(&ApiError::shutting_down()),
            ))));
        }
        // Every chunk that is ready now goes out in this one frame: a client that fell behind
        // (or an engine that sent several events in one read) costs one write, not one per
        // event, and an HTTP/2 client gets one DATA frame. Nothing waits to be joined, so a
        // stream that keeps up still sends each event the moment it arrives.
        let mut joined = Joined::default();
        loop {
            let next = match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending if joined.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            };
            let bytes = match next {
                Some(Ok(chunk)) => {
                    *this.chunks += 1;
                    if *this.chunks > 1 {
                        Metrics::observe(this.tpot, this.last_chunk.elapsed());
                    }
                    *this.last_chunk = Instant::now();
                    match this.frames.chunk(&chunk) {
                        // A chunk a dialect writes nothing for (yet): read the next one.
                        Ok(frames) if frames.is_empty() => continue,
                        Ok(frames) => frames,
                        Err(e) => {
                            *this.finished = true;
                            this.frames.fail(&ApiError::from(BackendError::Protocol {
                                backend: String::new(),
                                message: format!("could not encode a chunk: {e}"),
                            }))
                        }
                    }
                }
                Some(Err(e)) => {
                    *this.finished = true;
                    tracing::warn!(error = %lumen_gateway::Text(&e.to_string()), kind = e.kind(), "stream failed after commit");
                    if let Some(r) = this.record.as_mut() {
                        r.error = Some(e.kind());
                    }
                    this.frames.fail(&ApiError::from(e))
                }
                None => {
                    *this.finished = true;
                    this.frames.end()
                }
            };
            joined.push(bytes);
            if *this.finished || joined.len() >= JOIN_LIMIT {
                break;
            }
        }
        if *this.finished {
            if let Some(r) = this.record.take() {
                close(r, this.inner.as_mut().get_mut(), "ok");
            }
        }
        Poll::Ready(Some(Ok(Frame::data(joined.into_bytes()))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

/// The `Content-Length` a request declares, when it is a number (hyper has already refused a
/// malformed or doubled one).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Refuses what Lumen cannot read as JSON: a body that is not `application/json` (or a
/// `+json` type), and any `Content-Encoding` or `Transfer-Encoding` other than chunked framing
/// (hyper removes the chunking; `gzip, chunked` would leave compressed bytes behind it). A
/// missing type is accepted only for an empty body, which then gets the empty-body error.
fn check_json_request(headers: &http::HeaderMap) -> Result<(), ApiError> {
    check_encodings(headers)?;
    if headers.get_all(CONTENT_TYPE).iter().count() > 1 {
        return Err(ApiError::unsupported_media_type());
    }
    match headers.get(CONTENT_TYPE) {
        Some(v) => {
            let essence = v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .map(|t| t.trim().to_ascii_lowercase());
            match essence {
                Some(t) if t == "application/json" || t.ends_with("+json") => Ok(()),
                _ => Err(ApiError::unsupported_media_type()),
            }
        }
        None => {
            let empty = headers
                .get(CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
            if empty {
                Ok(())
            } else {
                Err(ApiError::unsupported_media_type())
            }
        }
    }
}

/// Refuses a `Content-Encoding` or a `Transfer-Encoding` other than chunked framing (hyper
/// removes the chunking; `gzip, chunked` would leave compressed bytes behind it).
fn check_encodings(headers: &http::HeaderMap) -> Result<(), ApiError> {
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        let ok = v.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|c| c.trim().eq_ignore_ascii_case("chunked"))
        });
        if !ok {
            return Err(ApiError::unsupported_encoding("Transfer-Encoding"));
        }
    }
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        if !v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(ApiError::unsupported_encoding("Content-Encoding"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
