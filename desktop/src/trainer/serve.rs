//! `edgeloop-trainer serve`: the HTTP endpoint devices report to.
//!
//! `POST /v1/traces` takes a batch (gzip or plain JSON) under a bearer
//! token; it is checked whole (size on the wire and decompressed, JSON,
//! schema version, every record) before anything is stored, stored in one
//! transaction that is synced before the answer goes out, and answered with
//! the ids now held (`{"accepted":[...],"duplicates":[...]}`). `GET
//! /v1/health` says the host is up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edgeloop_core::trace::{StoreError, TraceStore, TRACES_PATH};
use http_body_util::LengthLimitError;

use super::ingest::{self, Refusal};

/// How the endpoint is run.
pub struct ServeOptions {
    pub db: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    /// Most bytes of a request body as sent (compressed).
    pub max_body: usize,
    /// Most bytes of a batch's JSON once decompressed.
    pub max_json: usize,
}

struct Shared {
    store: Mutex<TraceStore>,
    token: String,
    max_body: usize,
    max_json: usize,
}

pub fn run(opts: ServeOptions) -> Result<()> {
    let store = TraceStore::open(&opts.db)
        .with_context(|| format!("open the host store {}", opts.db.display()))?;
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        token: opts.token,
        max_body: opts.max_body,
        max_json: opts.max_json,
    });
    let app = Router::new()
        .route(TRACES_PATH, post(traces))
        .route("/v1/health", get(health))
        .with_state(shared);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        // One line on stdout once the socket is open, for whoever started us.
        println!("listening on http://{addr}");
        eprintln!("edgeloop-trainer: storing traces in {}", opts.db.display());
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn json(value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string(value).expect("plain data serializes");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Whether the request carries `Authorization: Bearer <token>`; compares in
/// time independent of where the tokens differ.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let want = token.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn traces(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let headers = req.headers().clone();
    if !authorized(&headers, &s.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than the limit of {} bytes", s.max_body),
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), s.max_body).await {
        Ok(b) => b,
        Err(e) => {
            let inner = e.into_inner();
            if inner.downcast_ref::<LengthLimitError>().is_some() {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body is larger than the limit of {} bytes", s.max_body),
                );
            }
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {inner}"),
            );
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let shared = s.clone();
    // Decompressing, parsing and storing are CPU and disk work: off the
    // async workers.
    let result = tokio::task::spawn_blocking(move || {
        let json = ingest::decode_body(&body, encoding.as_deref(), shared.max_json)?;
        let records = ingest::parse_batch(&json)?;
        let mut store = shared
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ingest::store_batch(&mut store, &records).map_err(Failure::Store)
    })
    .await;
    match result {
        Ok(Ok(ack)) => {
            log::info!(
                "stored {} traces, {} duplicates",
                ack.accepted.len(),
                ack.duplicates.len()
            );
            json(&ack)
        }
        Ok(Err(Failure::Refused(Refusal::Bad(m)))) => error(StatusCode::BAD_REQUEST, m),
        Ok(Err(Failure::Refused(Refusal::TooLarge(m)))) => error(StatusCode::PAYLOAD_TOO_LARGE, m),
        Ok(Err(Failure::Refused(Refusal::Encoding(m)))) => {
            error(StatusCode::UNSUPPORTED_MEDIA_TYPE, m)
        }
        Ok(Err(Failure::Store(e))) => {
            log::error!("{e}");
            let status = match e {
                StoreError::Full { .. } | StoreError::DiskFull { .. } => {
                    StatusCode::INSUFFICIENT_STORAGE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, format!("could not store the batch: {e}"))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing the batch failed: {e}"),
        ),
    }
}

enum Failure {
    Refused(Refusal),
    Store(StoreError),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        let store = s.store.lock().unwrap_or_else(|p| p.into_inner());
        store.stats()
    })
    .await;
    match result {
        Ok(Ok(stats)) => json(&serde_json::json!({ "status": "ok", "traces": stats.traces })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
