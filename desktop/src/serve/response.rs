//! The answers' shapes: `chat.completion` objects, and the
//! `chat.completion.chunk` server-sent events of a stream.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use edgeloop_core::CancelToken;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::gone;
use super::worker::{Event, Outcome};

/// Cancels the job when the request's future or stream is dropped: when
/// the answer is complete, or when the client went away first.
pub struct CancelOnDrop(pub CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The parts every answer of one completion shares.
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// `chatcmpl-` and 24 hex digits, unique within this process.
pub fn completion_id() -> String {
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
pub fn completion_body(meta: &Meta, o: &Outcome) -> Value {
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
pub fn sse(
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
