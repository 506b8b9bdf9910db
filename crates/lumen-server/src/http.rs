//! The HTTP surface: routes, body limits, request ids, JSON and SSE responses.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use lumen_backend::{BackendError, RequestContext};
use lumen_openai_types::sse::{DONE_FRAME, data_frame};
use lumen_openai_types::{
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, HasModel, request,
};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::ResponseBody;
use crate::error::{ApiError, full};
use crate::gateway::{Gateway, GatewayStream};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's own deadline in milliseconds; it can only lower the configured caps.
pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-lumen-timeout-ms");

/// Session key for `session_affinity` (the `user` field is the fallback).
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");

/// Longest client-supplied request id that is accepted as is.
const MAX_REQUEST_ID: usize = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
    Model,
    Health,
}

impl Endpoint {
    fn resolve(path: &str) -> Option<Self> {
        Some(match path {
            "/v1/chat/completions" => Self::Chat,
            "/v1/completions" => Self::Completions,
            "/v1/embeddings" => Self::Embeddings,
            "/v1/models" => Self::Models,
            "/health" => Self::Health,
            p if p.starts_with("/v1/models/") && p.len() > "/v1/models/".len() => Self::Model,
            _ => return None,
        })
    }

    fn allowed(self) -> &'static str {
        match self {
            Self::Chat | Self::Completions | Self::Embeddings => "POST",
            Self::Models | Self::Model | Self::Health => "GET, HEAD",
        }
    }

    fn accepts(self, m: &Method) -> bool {
        match self {
            Self::Chat | Self::Completions | Self::Embeddings => m == Method::POST,
            _ => m == Method::GET || m == Method::HEAD,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Model => "model",
            Self::Health => "health",
        }
    }
}

impl Gateway {
    /// Serves one HTTP request. Never fails: every error is an OpenAI-shaped response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = Instant::now();
        let request_id = request_id(&req);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            id = %request_id.to_str().unwrap_or_default(),
            endpoint = tracing::field::Empty,
        );
        async {
            let resp = match self.dispatch(req, &request_id).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(&request_id),
            };
            tracing::info!(
                method = %method,
                path = %path,
                status = resp.status().as_u16(),
                duration_us = start.elapsed().as_micros() as u64,
                "access"
            );
            resp
        }
        .instrument(span)
        .await
    }

    async fn dispatch<B>(
        &self,
        req: Request<B>,
        request_id: &HeaderValue,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        let Some(endpoint) = Endpoint::resolve(path) else {
            return Err(ApiError::route_not_found(req.method().as_str(), path));
        };
        if !endpoint.accepts(req.method()) {
            return Err(ApiError::method_not_allowed(
                req.method().as_str(),
                path,
                endpoint.allowed(),
            ));
        }
        let mut cx = RequestContext::new(request_id.to_str().unwrap_or_default());
        cx.session_id = req
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= MAX_REQUEST_ID)
            .map(str::to_owned);
        if let Some(v) = req.headers().get(TIMEOUT_MS) {
            let ms = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0);
            match ms {
                Some(ms) => cx.timeout = Some(std::time::Duration::from_millis(ms)),
                None => return Err(ApiError::invalid_header(TIMEOUT_MS.as_str())),
            }
        }
        tracing::Span::current().record("endpoint", endpoint.as_str());
        match endpoint {
            Endpoint::Health => Ok(with_id(Response::new(full(Bytes::new())), request_id)),
            Endpoint::Models => Ok(json(StatusCode::OK, &self.models(), request_id)),
            Endpoint::Model => {
                let id = percent_decode(&path["/v1/models/".len()..]);
                match self.model(&id) {
                    Some(m) => Ok(json(StatusCode::OK, &m, request_id)),
                    None => Err(ApiError::model_not_found(&id)),
                }
            }
            Endpoint::Chat => {
                let body = self.read_body(req).await?;
                let r: ChatCompletionRequest = request::parse(&body)?;
                r.validate()?;
                if r.is_stream() {
                    Ok(sse(self.chat_stream(r, &cx).await?, request_id))
                } else {
                    Ok(json(StatusCode::OK, &self.chat(r, &cx).await?, request_id))
                }
            }
            Endpoint::Completions => {
                let body = self.read_body(req).await?;
                let r: CompletionRequest = request::parse(&body)?;
                r.validate()?;
                if r.is_stream() {
                    Ok(sse(self.completions_stream(r, &cx).await?, request_id))
                } else {
                    Ok(json(
                        StatusCode::OK,
                        &self.completions(r, &cx).await?,
                        request_id,
                    ))
                }
            }
            Endpoint::Embeddings => {
                let body = self.read_body(req).await?;
                let r: EmbeddingRequest = request::parse(&body)?;
                r.validate()?;
                Ok(json(
                    StatusCode::OK,
                    &self.embeddings(r, &cx).await?,
                    request_id,
                ))
            }
        }
    }

    /// Reads the body up to the limit. A declared length over the limit is refused before a
    /// byte is read; an undeclared one is cut off as soon as it passes the limit.
    async fn read_body<B>(&self, req: Request<B>) -> Result<Bytes, ApiError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.max_body_bytes();
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::body_too_large(limit));
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::body_too_large(limit))
            }
            Err(_) => Err(ApiError::unreadable_body()),
        }
    }
}

/// The client's `x-request-id` when it is sane (printable ASCII, at most 128 bytes), else a
/// fresh time-ordered UUIDv7.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(v) = req.headers().get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x20..0x7f).contains(c))
        {
            return v.clone();
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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

fn sse<T: Serialize + HasModel + Send + 'static>(
    stream: GatewayStream<T>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut resp = Response::new(SseBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies in front of Lumen not to buffer the stream.
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    with_id(resp, request_id)
}

pin_project_lite::pin_project! {
    /// Server-sent events for a committed stream: one frame per engine chunk (its original
    /// bytes when unchanged), then `data: [DONE]`. A failure after commit becomes one
    /// `data: {"error": ...}` event followed by `data: [DONE]`, and the body ends cleanly.
    /// Dropping the body (client gone) drops the engine stream, which aborts generation.
    struct SseBody<T> {
        #[pin]
        inner: GatewayStream<T>,
        finished: bool,
    }
}

impl<T> SseBody<T> {
    fn new(inner: GatewayStream<T>) -> Self {
        Self {
            inner,
            finished: false,
        }
    }
}

impl<T: Serialize + HasModel> Body for SseBody<T> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        let bytes = match ready!(this.inner.poll_next(cx)) {
            Some(Ok(chunk)) => match chunk.to_json() {
                Ok(json) => data_frame(&json),
                Err(e) => {
                    *this.finished = true;
                    error_event(BackendError::Protocol {
                        backend: String::new(),
                        message: format!("could not encode a chunk: {e}"),
                    })
                }
            },
            Some(Err(e)) => {
                *this.finished = true;
                tracing::warn!(error = %e, kind = e.kind(), "stream failed after commit");
                error_event(e)
            }
            None => {
                *this.finished = true;
                Bytes::from_static(DONE_FRAME)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

fn error_event(e: BackendError) -> Bytes {
    let api = ApiError::from(e);
    let mut out = data_frame(&api.body_json()).to_vec();
    out.extend_from_slice(DONE_FRAME);
    Bytes::from(out)
}

/// Decodes `%XX` escapes so `/v1/models/org%2Fname` finds `org/name`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
