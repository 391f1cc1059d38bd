//! `edgeloop-trainer serve`: the HTTP endpoint devices report to.
//!
//! `POST /v1/traces` takes a batch (gzip or plain JSON) under a bearer
//! token; it is checked whole (size on the wire and decompressed, JSON,
//! schema version, every record) before anything is stored, stored in one
//! transaction that is synced before the answer goes out, and answered with
//! the ids now held (`{"accepted":[...],"duplicates":[...]}`). `GET
//! /v1/health` says the host is up.
//!
//! With a models folder (`--models`, filled by `publish`), the same token
//! also opens `GET /v1/models` (`{"models":[manifest,...]}` by name), `GET
//! /v1/models/NAME` (the manifest) and `GET /v1/models/NAME/gguf` (the
//! file, streamed from disk). Without one, those answer 404.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edgeloop_core::manifest::{check_published_name, Published};
use edgeloop_core::trace::{StoreError, TraceStore, TRACES_PATH};
use edgeloop_desktop::http;
use http_body_util::LengthLimitError;
use tokio::io::AsyncReadExt;

use super::publish;
use edgeloop_core::trace::ingest::{self, Refusal};

/// How the endpoint is run.
pub struct ServeOptions {
    pub db: PathBuf,
    pub listen: SocketAddr,
    pub token: String,
    /// Most bytes of a request body as sent (compressed).
    pub max_body: usize,
    /// Most bytes of a batch's JSON once decompressed.
    pub max_json: usize,
    /// Folder of published students, if this host offers any.
    pub models: Option<PathBuf>,
}

struct Shared {
    store: Mutex<TraceStore>,
    token: String,
    max_body: usize,
    max_json: usize,
    models: Option<PathBuf>,
}

pub fn run(opts: ServeOptions) -> Result<()> {
    let store = TraceStore::open(&opts.db)
        .with_context(|| format!("open the host store {}", opts.db.display()))?;
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        token: opts.token,
        max_body: opts.max_body,
        max_json: opts.max_json,
        models: opts.models.clone(),
    });
    let app = Router::new()
        .route(TRACES_PATH, post(traces))
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}", get(model_manifest))
        .route("/v1/models/{name}/gguf", get(model_file))
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
        if let Some(dir) = &opts.models {
            eprintln!("edgeloop-trainer: offering the models in {}", dir.display());
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(http::shutdown_signal())
            .await
            .context("serve")
    })
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
    http::bearer(headers).is_some_and(|given| http::token_matches(given, token))
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

/// Why a models request is answered with an error: the status and the
/// message of [`error`]'s body.
type Refused = (StatusCode, String);

/// The models folder, once the request is authorized.
fn models_dir<'a>(s: &'a Shared, headers: &HeaderMap) -> Result<&'a Path, Refused> {
    if !authorized(headers, &s.token) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ));
    }
    s.models.as_deref().ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "this host publishes no models (serve was started without --models)".into(),
        )
    })
}

/// The manifest of `name`: 400 for a name that is not valid, 404 when
/// nothing is published under it.
async fn find_manifest(models: &Path, name: &str) -> Result<Published, Refused> {
    if let Err(e) = check_published_name(name) {
        return Err((StatusCode::BAD_REQUEST, e.to_string()));
    }
    let (dir, owned) = (models.to_path_buf(), name.to_string());
    match tokio::task::spawn_blocking(move || publish::read_manifest(&dir, &owned)).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err((
            StatusCode::NOT_FOUND,
            format!("no published model named {name:?}"),
        )),
        Ok(Err(e)) => {
            log::error!("{e:#}");
            Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let dir = match models_dir(&s, &headers) {
        Ok(d) => d.to_path_buf(),
        Err((status, m)) => return error(status, m),
    };
    match tokio::task::spawn_blocking(move || publish::list(&dir)).await {
        Ok(Ok(all)) => json(&serde_json::json!({ "models": all })),
        Ok(Err(e)) => {
            log::error!("{e:#}");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn model_manifest(
    State(s): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let found = match models_dir(&s, &headers) {
        Ok(dir) => find_manifest(dir, &name).await,
        Err(refused) => Err(refused),
    };
    match found {
        Ok(m) => json(&m),
        Err((status, m)) => error(status, m),
    }
}

/// Bytes read from the file per chunk of the answer.
const CHUNK: usize = 256 * 1024;

async fn model_file(
    State(s): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let dir = match models_dir(&s, &headers) {
        Ok(d) => d,
        Err((status, m)) => return error(status, m),
    };
    if let Err((status, m)) = find_manifest(dir, &name).await {
        return error(status, m);
    }
    let path = publish::gguf_path(dir, &name);
    // The open file keeps its bytes even if a new publish renames another
    // file over the name meanwhile.
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(
                StatusCode::NOT_FOUND,
                format!("the file of {name:?} is missing"),
            )
        }
        Err(e) => {
            log::error!("{}: {e}", path.display());
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // Never more than the Content-Length announced, whatever happens to
    // the file while it is sent; fewer ends the answer short, which the
    // client sees as a cut-off body.
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
