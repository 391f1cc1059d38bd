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
mod response;
mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use edgeloop_core::CancelToken;
use edgeloop_desktop::http;
use http_body_util::LengthLimitError;
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;

use crate::ModelArgs;
use error::ApiError;
use response::{completion_body, completion_id, sse, CancelOnDrop, Meta};
use worker::{Event, Job, Refused, Worker};

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
            .with_graceful_shutdown(http::shutdown_signal())
            .await
            .context("serve")
    })
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
    let given = http::bearer(headers);
    let matches = given.is_some_and(|given| http::token_matches(given, want));
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
