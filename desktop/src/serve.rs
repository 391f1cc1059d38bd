//! `edgeloop serve`: a local OpenAI-compatible chat completions server.
//!
//! `GET /v1/models`, `GET /v1/models/{id}` and `POST /v1/chat/completions`
//! (plain or streamed as server-sent events) answer in OpenAI's shapes, so
//! OpenAI clients work against it unchanged; `GET /health` says the server
//! is up and counts jobs. The `edgeloop` object of a request asks for a
//! test-time scaling strategy instead of a plain completion, and every
//! answer carries `edgeloop.spend`, what it cost.
//!
//! Requests are checked whole before they are queued (bearer token, JSON
//! content type, body size, every field: see [`request`]); the engine runs
//! on one generation thread fed by a bounded queue ([`worker`]), and a
//! request that finds the queue full is answered 503 at once. A client
//! that disconnects cancels its generation.

mod error;
mod request;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use edgeloop_core::CancelToken;
use http_body_util::LengthLimitError;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::ModelArgs;
use error::ApiError;
use worker::{Event, Job, Outcome, Refused, Worker};

/// Arguments of `edgeloop serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (loopback by default: only this machine).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed once ready).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 (else
    /// $EDGELOOP_API_KEY, if set).
    #[arg(long)]
    api_key: Option<String>,
    /// Most requests waiting for the engine; more are answered 503.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    queue: u16,
    /// Most bytes of a request body (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
}

/// The environment variable `--api-key` falls back to.
pub const API_KEY_ENV: &str = "EDGELOOP_API_KEY";

struct Shared {
    worker: Worker,
    api_key: Option<String>,
    max_body: usize,
    /// When the server started (the models' `created`).
    started: u64,
}

/// Loads the model, then serves until Ctrl-C or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var(API_KEY_ENV).ok())
        .filter(|k| !k.is_empty());
    let worker = Worker::start(args.model.clone(), args.queue as usize)?;
    eprintln!(
        "edgeloop: serving {} (context {} tokens, queue {})",
        worker.model, worker.context, args.queue
    );
    let shared = Arc::new(Shared {
        worker,
        api_key,
        max_body: args.max_body,
        started: unix_now(),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .with_state(shared.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && shared.api_key.is_none() {
            eprintln!("edgeloop: warning: listening beyond this machine without --api-key");
        }
        // One line on stdout once the socket is open, for whoever started us.
        println!("listening on http://{addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serve")
    })
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

/// Refuses a request without the bearer key, when one is set; compares in
/// time independent of where the keys differ.
fn authorize(s: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = &s.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let matches = given.is_some_and(|given| {
        given.len() == want.len()
            && given
                .iter()
                .zip(want.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::request(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            if given.is_none() {
                "missing API key: send Authorization: Bearer KEY"
            } else {
                "incorrect API key"
            },
        ))
    }
}

async fn not_found() -> Response {
    ApiError::request(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let st = &s.worker.stats;
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model": s.worker.model,
            "queued": st.queued.load(Ordering::Relaxed),
            "completed": st.completed.load(Ordering::Relaxed),
            "failed": st.failed.load(Ordering::Relaxed),
            "cancelled": st.cancelled.load(Ordering::Relaxed),
            "rejected": st.rejected.load(Ordering::Relaxed),
        }),
    )
}

fn model_object(s: &Shared) -> Value {
    json!({
        "id": s.worker.model,
        "object": "model",
        "created": s.started,
        "owned_by": "edgeloop",
    })
}

async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e.into_response();
    }
    json_response(
        StatusCode::OK,
        &json!({ "object": "list", "data": [model_object(&s)] }),
    )
}

async fn model(
    State(s): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e.into_response();
    }
    if id != s.worker.model {
        return ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(
                "model",
                "model_not_found",
                format!("the model {id:?} does not exist"),
            )
        }
        .into_response();
    }
    json_response(StatusCode::OK, &model_object(&s))
}

/// Cancels the job when the request's future or stream is dropped: when
/// the answer is complete, or when the client went away first.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The parts every answer of one completion shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

async fn chat_completions(State(s): State<Arc<Shared>>, req: Request) -> Response {
    match completion(&s, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn completion(s: &Shared, req: Request) -> Result<Response, ApiError> {
    authorize(s, req.headers())?;
    let body = read_json_body(s, req).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let request = request::parse(&value, &s.worker.model)?;
    let (stream, include_usage) = (request.stream, request.include_usage);
    let n = request.n;
    let cancel = CancelToken::new();
    let guard = CancelOnDrop(cancel.clone());
    let (events, mut rx) = unbounded_channel();
    s.worker
        .submit(Job {
            request,
            cancel,
            events,
        })
        .map_err(|refused| match refused {
            Refused::Full => ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                "the server is busy: too many requests are waiting; retry later",
            ),
            Refused::Gone => ApiError::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_gone",
                "the generation thread has stopped",
            ),
        })?;
    let meta = Meta {
        id: completion_id(),
        created: unix_now(),
        model: s.worker.model.clone(),
    };
    // Errors found before generating (the context) are still plain answers.
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(gone()),
    }
    if stream {
        return Ok(sse(rx, guard, meta, n, include_usage));
    }
    loop {
        match rx.recv().await {
            Some(Event::Done(outcome)) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &completion_body(&meta, &outcome),
                ))
            }
            Some(Event::Failed(e)) => return Err(e),
            Some(_) => {}
            None => return Err(gone()),
        }
    }
}

fn gone() -> ApiError {
    ApiError::server(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the generation ended without an answer",
    )
}

/// The body, once the content type and size are right.
async fn read_json_body(s: &Shared, req: Request) -> Result<axum::body::Bytes, ApiError> {
    let headers = req.headers();
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(ApiError::request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the body is larger than the limit of {} bytes", s.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), s.max_body)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner.downcast_ref::<LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::request(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("could not read the body: {inner}"),
                )
            }
        })
}

/// `chatcmpl-` and 24 hex digits, unique within this process.
fn completion_id() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("chatcmpl-{nanos:016x}{:08x}", count as u32)
}

fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
    })
}

/// The `edgeloop` object of an answer: what it cost, and for a strategy
/// what it concluded.
fn extension(o: &Outcome) -> Value {
    match &o.solution {
        Some(s) => json!({
            "answer": s.answer,
            "confidence": s.confidence,
            "strategy": s.strategy,
            "spend": {
                "samples": s.spend.samples,
                "tokens": s.spend.tokens,
                "wall_secs": s.spend.wall_secs,
                "limited": s.spend.limited,
            },
        }),
        None => json!({
            "spend": {
                "samples": o.samples,
                "tokens": o.completion_tokens,
                "wall_secs": o.wall_secs,
                "limited": false,
            },
        }),
    }
}

/// A `chat.completion` object.
fn completion_body(meta: &Meta, o: &Outcome) -> Value {
    let choices: Vec<Value> = o
        .choices
        .iter()
        .enumerate()
        .map(|(index, c)| {
            json!({
                "index": index,
                "message": { "role": "assistant", "content": c.text },
                "logprobs": null,
                "finish_reason": c.finish_reason,
            })
        })
        .collect();
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage(o),
        "edgeloop": extension(o),
    })
}

/// A `chat.completion.chunk` with the given choices.
fn chunk(meta: &Meta, choices: Value) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    })
}

fn event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// The end of a stream: any text not streamed yet, each choice's finish
/// reason (the last chunk carrying `edgeloop`), usage if asked, `[DONE]`.
fn stream_end(meta: &Meta, o: &Outcome, include_usage: bool) -> String {
    let mut out = String::new();
    if !o.streamed {
        for (index, c) in o.choices.iter().enumerate() {
            let delta = json!([{ "index": index, "delta": { "content": c.text }, "logprobs": null, "finish_reason": null }]);
            out += &event(&chunk(meta, delta));
        }
    }
    let last = o.choices.len().saturating_sub(1);
    for (index, c) in o.choices.iter().enumerate() {
        let mut v = chunk(
            meta,
            json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": c.finish_reason }]),
        );
        if index == last {
            v["edgeloop"] = extension(o);
        }
        out += &event(&v);
    }
    if include_usage {
        let mut v = chunk(meta, json!([]));
        v["usage"] = usage(o);
        out += &event(&v);
    }
    out + "data: [DONE]\n\n"
}

/// Where a stream is.
enum Phase {
    /// The role chunks are yet to go out.
    Opening,
    Running,
    Ended,
}

/// Streams the job's events as server-sent events. The stream owns the
/// guard, so a client that goes away (the body dropped) cancels the job.
fn sse(
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    meta: Meta,
    n: usize,
    include_usage: bool,
) -> Response {
    let state = (rx, guard, meta, Phase::Opening);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut rx, guard, meta, phase)| async move {
            let piece = match phase {
                Phase::Ended => return None,
                Phase::Opening => {
                    let mut out = String::new();
                    for index in 0..n {
                        let delta = json!([{ "index": index, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]);
                        out += &event(&chunk(&meta, delta));
                    }
                    return Some((
                        Ok::<_, std::convert::Infallible>(out),
                        (rx, guard, meta, Phase::Running),
                    ));
                }
                Phase::Running => rx.recv().await,
            };
            let (text, next) = match piece {
                Some(Event::Delta { index, text }) => {
                    let delta = json!([{ "index": index, "delta": { "content": text }, "logprobs": null, "finish_reason": null }]);
                    (event(&chunk(&meta, delta)), Phase::Running)
                }
                Some(Event::Done(o)) => (stream_end(&meta, &o, include_usage), Phase::Ended),
                Some(Event::Failed(e)) => (event(&e.body()), Phase::Ended),
                Some(Event::Started) => (String::new(), Phase::Running),
                None => (event(&gone().body()), Phase::Ended),
            };
            Some((Ok(text), (rx, guard, meta, next)))
        },
    );
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
