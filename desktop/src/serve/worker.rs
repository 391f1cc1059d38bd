//! The generation thread: the one place the engine runs.
//!
//! The engine is loaded on a dedicated thread that then takes jobs from a
//! bounded queue one at a time; a job's `n` samples are decoded together
//! there ([`Session::generate_parallel`](edgeloop_core::Session)). Each
//! job reports through its own channel: `Started` once the prompt fits
//! the context, text pieces while streaming, then `Done` or `Failed`. A
//! job whose client went away (its channel closed or its [`CancelToken`]
//! set) is skipped, or stopped at the next token; a panic while serving a
//! job fails that job and leaves the thread serving.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use axum::http::StatusCode;
use edgeloop_core::scaling::{self, Spend};
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::trace::chosen_sample;
use edgeloop_core::{CancelToken, Engine, FinishReason, GenerateOptions, Prompt, SamplerConfig};
use tokio::sync::mpsc::UnboundedSender;

use super::error::{from_core, ApiError};
use super::request::{ChatRequest, Solve};
use crate::ModelArgs;

/// One request waiting for the engine.
pub struct Job {
    pub request: ChatRequest,
    /// Set when the client goes away.
    pub cancel: CancelToken,
    pub events: UnboundedSender<Event>,
}

/// What a job reports, in order: `Started`, any `Delta`s, then `Done` or
/// `Failed` (or `Failed` alone when it is refused before starting).
#[derive(Debug)]
pub enum Event {
    Started,
    /// Text generated for choice `index` (streaming requests only).
    Delta {
        index: usize,
        text: String,
    },
    Done(Outcome),
    Failed(ApiError),
}

/// A finished job.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub choices: Vec<Choice>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Samples drawn.
    pub samples: usize,
    pub wall_secs: f64,
    /// Whether the choices' text went out as `Delta`s already.
    pub streamed: bool,
    /// Set for a request with an `edgeloop` strategy.
    pub solution: Option<Solved>,
}

/// One choice's text and why it ended (`stop` or `length`).
#[derive(Clone, Debug)]
pub struct Choice {
    pub text: String,
    pub finish_reason: &'static str,
}

/// What a strategy concluded.
#[derive(Clone, Debug)]
pub struct Solved {
    pub answer: Option<String>,
    pub confidence: f64,
    pub strategy: &'static str,
    pub spend: Spend,
}

/// Counters for `GET /health`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs waiting in the queue.
    pub queued: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    /// Jobs stopped or skipped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests answered 503 because the queue was full.
    pub rejected: AtomicU64,
}

/// The handle the HTTP side holds: the queue into the generation thread.
pub struct Worker {
    queue: SyncSender<Job>,
    /// The loaded model's name (what `model` must say).
    pub model: String,
    pub context: usize,
    pub stats: Arc<Stats>,
}

/// Why a job was not queued.
pub enum Refused {
    Full,
    Gone,
}

impl Worker {
    /// Loads the model on a new thread, which then serves jobs from a queue
    /// holding at most `queue` waiting jobs.
    pub fn start(model: ModelArgs, queue: usize) -> Result<Worker> {
        let (jobs, waiting) = mpsc::sync_channel::<Job>(queue);
        let (ready_tx, ready) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("edgeloop-generate".into())
            .spawn(move || {
                let (engine, path) = match model.load_with_path() {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((crate::pull::model_name(&path), engine.context_size())));
                for job in waiting {
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    serve(&engine, job, &counters);
                }
            })
            .context("start the generation thread")?;
        let (model, context) = ready
            .recv()
            .map_err(|_| anyhow!("the generation thread ended while loading the model"))??;
        Ok(Worker {
            queue: jobs,
            model,
            context,
            stats,
        })
    }

    /// Queues a job, or says why not (503 when full).
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let refused = match self.queue.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Refused::Full
            }
            Err(TrySendError::Disconnected(_)) => Refused::Gone,
        };
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        Err(refused)
    }
}

/// Runs one job and reports its end.
fn serve(engine: &Engine, job: Job, stats: &Stats) {
    if job.cancel.is_cancelled() || job.events.is_closed() {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let result = catch_unwind(AssertUnwindSafe(|| match &job.request.solve {
        Some(s) => solve(engine, &job, s),
        None => generate(engine, &job),
    }));
    let event = match result {
        Ok(Ok(outcome)) => {
            if job.cancel.is_cancelled() {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Event::Done(outcome)
        }
        Ok(Err(e)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            Event::Failed(e)
        }
        Err(panic) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("a generation panicked: {what}");
            Event::Failed(ApiError::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the generation failed unexpectedly",
            ))
        }
    };
    // The client may be gone by now; nothing more to do then.
    let _ = job.events.send(event);
}

/// Refuses a prompt that leaves no room in the context, and a `max_tokens`
/// that does not fit after the prompt; gives the tokens to generate.
fn fit(prompt: usize, max_tokens: Option<usize>, context: usize) -> Result<usize, ApiError> {
    if prompt >= context {
        return Err(ApiError::invalid(
            "messages",
            "context_length_exceeded",
            format!(
                "the prompt is {prompt} tokens, but the context holds {context} tokens \
                 (the prompt and at least one generated token must fit)"
            ),
        ));
    }
    match max_tokens {
        Some(m) if prompt + m > context => Err(ApiError::invalid(
            "max_tokens",
            "context_length_exceeded",
            format!(
                "the prompt's {prompt} tokens plus max_tokens {m} exceed the context of \
                 {context} tokens (at most {} can be generated)",
                context - prompt
            ),
        )),
        Some(m) => Ok(m),
        None => Ok(context - prompt),
    }
}

/// A plain completion: `n` samples decoded together.
fn generate(engine: &Engine, job: &Job) -> Result<Outcome, ApiError> {
    let r = &job.request;
    let prompt = engine
        .encode(&Prompt::Chat(r.messages.clone()))
        .map_err(from_core)?;
    let max_tokens = fit(prompt.len(), r.max_tokens, engine.context_size())?;
    let options = GenerateOptions {
        max_tokens,
        sampler: SamplerConfig {
            temperature: r.temperature,
            top_p: r.top_p,
            seed: r.seed,
            ..Default::default()
        },
        stop_strings: r.stop.clone(),
        ignore_eos: false,
        cancel: Some(job.cancel.clone()),
    };
    options
        .sampler
        .validate()
        .map_err(|e| from_core(e.into()))?;
    if job.events.send(Event::Started).is_err() {
        job.cancel.cancel();
    }
    let start = Instant::now();
    let mut session = engine.session();
    let generations = session
        .generate_parallel(&prompt, r.n, &options, &mut |index, ev| {
            if job.events.is_closed() {
                job.cancel.cancel();
                return ControlFlow::Break(());
            }
            if r.stream && !ev.text.is_empty() {
                let text = ev.text.to_string();
                if job.events.send(Event::Delta { index, text }).is_err() {
                    job.cancel.cancel();
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(from_core)?;
    let completion_tokens = generations.iter().map(|g| g.tokens.len()).sum();
    Ok(Outcome {
        samples: generations.len(),
        choices: generations
            .into_iter()
            .map(|g| Choice {
                finish_reason: match g.finish_reason {
                    FinishReason::Length => "length",
                    FinishReason::Stop | FinishReason::StopString | FinishReason::Cancelled => {
                        "stop"
                    }
                },
                text: g.text,
            })
            .collect(),
        prompt_tokens: prompt.len(),
        completion_tokens,
        wall_secs: start.elapsed().as_secs_f64(),
        streamed: r.stream,
        solution: None,
    })
}

/// A request with a strategy: the last user message answered by
/// [`scaling::solve`]; the chosen sample's text is the reply.
fn solve(engine: &Engine, job: &Job, s: &Solve) -> Result<Outcome, ApiError> {
    // The prompt `solve` builds: the question and the answer instruction.
    let suffix = s
        .options
        .instruction
        .as_deref()
        .unwrap_or_else(|| scaling::instruction(s.options.kind));
    let message = if suffix.is_empty() {
        s.question.clone()
    } else {
        format!("{}\n{suffix}", s.question)
    };
    let prompt = engine
        .encode_chat(&[ChatMessage::user(message)], s.options.thinking)
        .map_err(from_core)?;
    fit(
        prompt.len(),
        Some(s.options.max_tokens),
        engine.context_size(),
    )?;
    if job.events.send(Event::Started).is_err() {
        job.cancel.cancel();
        return Err(ApiError::server(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cancelled",
            "the client went away",
        ));
    }
    let solution = scaling::solve(engine, &s.question, &s.options).map_err(from_core)?;
    let text = chosen_sample(&solution)
        .map(|c| c.text.clone())
        .unwrap_or_default();
    Ok(Outcome {
        choices: vec![Choice {
            text,
            finish_reason: if solution.spend.limited {
                "length"
            } else {
                "stop"
            },
        }],
        prompt_tokens: prompt.len(),
        completion_tokens: solution.spend.tokens,
        samples: solution.spend.samples,
        wall_secs: solution.spend.wall_secs,
        streamed: false,
        solution: Some(Solved {
            answer: solution.answer,
            confidence: solution.confidence,
            strategy: solution.strategy,
            spend: solution.spend,
        }),
    })
}
