//! Test-time scaling: spend more samples only where a question needs them.
//!
//! [`solve`] asks the model a question under a [`Strategy`]: one greedy
//! answer, a majority vote over N parallel samples (self-consistency), the
//! most likely of N samples (best-of-N), a confidence-weighted vote that
//! stops unconfident traces early (DeepConf), or
//! sampling in waves until the vote is settled (adaptive consistency, with
//! the early-stopping window rule), or one trace whose thinking length is
//! forced between bounds (budget forcing), or `auto`, which answers from one
//! cheap sample when the model is confident and escalates otherwise, within
//! the caller's [`Limits`]. Samples of a
//! wave share the prompt's KV cache and are decoded together
//! ([`Session::generate_parallel`]), so extra samples cost little more than one.

mod adaptive;
pub mod answer;
mod best_of_n;
pub mod budget;
mod confidence;
pub mod fit;
mod greedy;
mod policy;
pub mod prompt;
mod run;
mod search;
pub mod vote;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Engine, Prompt};
use crate::error::{Error, Result};
use crate::tokenizer::ChatMessage;
use run::{check_samples, Run};

pub use answer::{extract, normalize, AnswerKind};
pub use budget::ThinkingBudget;
pub use fit::AutoSettings;
pub use policy::Gate;
pub use prompt::PromptStyle;
pub use vote::Vote;

/// How much compute to spend on a question.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// One greedy answer.
    Greedy,
    /// `samples` samples decoded together, majority vote.
    SelfConsistency { samples: usize },
    /// Waves of `wave` samples until the two leading answers are separated
    /// with probability `threshold` (Adaptive-Consistency), or the last
    /// `window` answers agree (Early-Stopping Self-Consistency), or
    /// `max_samples` were drawn.
    Adaptive {
        wave: usize,
        max_samples: usize,
        threshold: f64,
        window: Option<usize>,
    },
    /// `samples` samples decoded together, ranked by the model's own
    /// verdicts: each distinct answer is judged `judges` times by the
    /// verifier's correctness stage, the answer with the most `[[Y]]` wins,
    /// mean token log-probability breaking ties. With `judges = 0` the
    /// answered sample with the highest mean log-probability wins.
    BestOfN { samples: usize, judges: usize },
    /// DeepConf (online): `warmup` traces set a confidence threshold that
    /// keeps about `keep_percent`% of traces; the other traces, up to
    /// `samples` in all, are stopped as soon as the mean token confidence of
    /// their last `window` tokens falls below it and do not vote; the rest
    /// vote weighted by their lowest window confidence.
    Confidence {
        warmup: usize,
        samples: usize,
        keep_percent: f64,
        window: usize,
    },
    /// One greedy trace whose thinking is kept between `min_thinking` and
    /// `max_thinking` tokens: an early end is replaced by "Wait" (at most
    /// `max_waits` times), the end is forced at the maximum (s1).
    Budget {
        min_thinking: usize,
        max_thinking: usize,
        max_waits: usize,
    },
    /// Beam search over `beams` beams split into `groups` diverse groups
    /// (`diversity`: the penalty for a token an earlier group chose at the
    /// same step), on the batched decode path. The answered hypothesis with
    /// the best length-normalized log-likelihood wins; with `judge`, the one
    /// the model's own verdict scores highest.
    Beam {
        beams: usize,
        groups: usize,
        diversity: f32,
        judge: bool,
    },
    /// A beam over reasoning steps (lines): `candidates` continuations
    /// sampled per step from the `keep` best partial solutions, each scored
    /// by the model's probability of `[[Y]]` for it (one forward pass);
    /// at most `max_steps` steps of `step_tokens` tokens. Complete
    /// solutions vote, weighted by their scores.
    StepSearch {
        candidates: usize,
        keep: usize,
        max_steps: usize,
        step_tokens: usize,
    },
    /// The compute-optimal policy: one greedy answer when the model's
    /// confidence in it, measured as `gate` says, reaches `confidence`; else a wave of `max_samples`
    /// beams, whose best answer stands when at least `agreement` of the
    /// answers so far agree with it; else sampled waves of `wave` vote, all
    /// earlier answers included, until the vote is settled at `threshold`
    /// or `max_samples` more traces were spent.
    Auto {
        gate: Gate,
        confidence: f64,
        max_samples: usize,
        wave: usize,
        threshold: f64,
        agreement: f64,
    },
}

impl Strategy {
    /// Parses a strategy name (see [`Strategy::NAMES`]) with the given sample
    /// count or cap; `budget` thinks for 64 to 256 tokens.
    pub fn parse(name: &str, samples: usize) -> Result<Self> {
        match name {
            "greedy" => Ok(Strategy::Greedy),
            "self-consistency" | "sc" => Ok(Strategy::SelfConsistency { samples }),
            "best-of-n" => Ok(Strategy::BestOfN { samples, judges: 3 }),
            "confidence" => Ok(Strategy::Confidence {
                warmup: (samples / 4).max(1),
                samples,
                keep_percent: 90.0,
                window: 16,
            }),
            "adaptive" => Ok(Strategy::Adaptive {
                wave: 4,
                max_samples: samples,
                threshold: 0.95,
                window: None,
            }),
            "budget" => Ok(Strategy::Budget {
                min_thinking: 64,
                max_thinking: 256,
                max_waits: 4,
            }),
            "beam" => Ok(Strategy::Beam {
                beams: samples,
                groups: if samples >= 2 && samples.is_multiple_of(2) {
                    2
                } else {
                    1
                },
                diversity: 0.5,
                judge: false,
            }),
            "step-search" => Ok(Strategy::StepSearch {
                candidates: samples,
                keep: step_keep(samples),
                max_steps: 8,
                step_tokens: 64,
            }),
            "auto" => Ok(Strategy::Auto {
                gate: Gate::AnswerLine,
                confidence: AUTO_CONFIDENCE,
                max_samples: samples,
                wave: 4,
                threshold: 0.95,
                agreement: AUTO_AGREEMENT,
            }),
            other => Err(Error::Invalid(format!(
                "unknown strategy {other:?} (known: {})",
                Strategy::NAMES.join(", ")
            ))),
        }
    }

    /// The names [`Strategy::parse`] knows.
    pub const NAMES: [&'static str; 9] = [
        "greedy",
        "self-consistency",
        "best-of-n",
        "confidence",
        "adaptive",
        "budget",
        "beam",
        "step-search",
        "auto",
    ];

    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Greedy => "greedy",
            Strategy::SelfConsistency { .. } => "self-consistency",
            Strategy::BestOfN { .. } => "best-of-n",
            Strategy::Confidence { .. } => "confidence",
            Strategy::Adaptive { .. } => "adaptive",
            Strategy::Budget { .. } => "budget",
            Strategy::Beam { .. } => "beam",
            Strategy::StepSearch { .. } => "step-search",
            Strategy::Auto { .. } => "auto",
        }
    }
}

/// Partials step search keeps for `candidates` per step: a quarter, so
/// each kept one is expanded four ways (at least one kept, dividing
/// `candidates`).
pub fn step_keep(candidates: usize) -> usize {
    let mut keep = (candidates / 4).max(1);
    while !candidates.is_multiple_of(keep) {
        keep -= 1;
    }
    keep
}

/// Settings of [`solve`].
#[derive(Clone, Debug)]
pub struct SolveOptions {
    pub strategy: Strategy,
    /// What an answer looks like (for extraction and voting).
    pub kind: AnswerKind,
    /// Longest reasoning trace per sample.
    pub max_tokens: usize,
    /// Sampling of the non-greedy samples.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Thinking on or off for models whose chat template reads
    /// `enable_thinking` (Qwen3); `None` keeps the template's default.
    pub thinking: Option<bool>,
    /// The caller's budget over all samples.
    pub limits: Limits,
    /// Text appended to the question; `None` uses [`instruction`] for `kind`.
    /// In a few-shot prompt it is the first line, and `None` adds nothing.
    pub instruction: Option<String>,
    /// Chat turn or worked examples; `Auto` picks by the model file.
    pub prompt_style: PromptStyle,
}

/// Caps on what one [`solve`] call may spend. Samples running when a cap is
/// reached are stopped; those without an answer abstain.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Tokens generated over all samples.
    pub max_tokens: Option<usize>,
    /// Wall time of the whole call.
    pub max_wall: Option<Duration>,
}

/// Default sampling temperature of the voting strategies. Small students
/// agree more and vote better when sampled cool (SmolLM2-135M, 40 one-digit
/// sums and differences, self-consistency@16: 67.5% at 0.3, 57.5% at 0.5,
/// 52.5% at 0.7).
pub const DEFAULT_TEMPERATURE: f32 = 0.3;

/// Default confidence `auto` needs to answer from its first sample.
pub const AUTO_CONFIDENCE: f64 = 0.7;

/// Default share of the answers that must agree with `auto`'s beam wave
/// for it to stop there: any. Sampled votes did worse than the beams' own
/// ranking when the small students disagreed with themselves (SmolLM2-135M,
/// 40 one-digit sums and differences: `auto@4` 42.5% with 0.75, 55.0%
/// with 0).
pub const AUTO_AGREEMENT: f64 = 0.0;

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            strategy: Strategy::Auto {
                gate: Gate::AnswerLine,
                confidence: AUTO_CONFIDENCE,
                max_samples: 16,
                wave: 4,
                threshold: 0.95,
                agreement: AUTO_AGREEMENT,
            },
            kind: AnswerKind::Number,
            max_tokens: 256,
            temperature: DEFAULT_TEMPERATURE,
            top_p: 0.95,
            seed: 0,
            thinking: None,
            limits: Limits::default(),
            instruction: None,
            prompt_style: PromptStyle::Auto,
        }
    }
}

/// One sampled reasoning trace.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub text: String,
    /// The extracted, normalized answer; `None` is an abstention.
    pub answer: Option<String>,
    pub mean_logprob: f32,
    pub tokens: usize,
}

/// What a solution cost.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spend {
    pub samples: usize,
    /// Tokens generated over all samples.
    pub tokens: usize,
    pub wall_secs: f64,
    /// Whether a cap of [`Limits`] stopped the call.
    pub limited: bool,
    /// Judgements generated to rank samples (best-of-n), counted in
    /// `tokens` too.
    pub judgements: usize,
    /// Prompt tokens the model read to score candidates (step search and
    /// judged beams: the judge prompts, less what its cache held); not in
    /// `tokens`.
    pub scored_tokens: usize,
}

/// How a budget-forced trace thought.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thinking {
    pub thinking_tokens: usize,
    /// "Wait"s appended to extend thinking.
    pub waits: usize,
    /// Whether thinking was cut at the maximum.
    pub forced_end: bool,
}

/// The answer to a question and how it was reached.
#[derive(Clone, Debug, Serialize)]
pub struct Solution {
    pub strategy: &'static str,
    /// The rendered prompt every sample continued (chat-templated, or the
    /// few-shot text).
    pub prompt: String,
    pub answer: Option<String>,
    /// Vote share of the answer (for one sample: its mean token probability).
    pub confidence: f64,
    pub samples: Vec<Sample>,
    pub spend: Spend,
    /// Present for the budget strategy.
    pub thinking: Option<Thinking>,
}

/// The instruction appended to every question so answers can be extracted.
/// Small models answer arithmetic more accurately without a request to
/// think step by step (SmolLM2-135M: 65% against 48% on one-digit sums);
/// models that think in tags reason before answering regardless.
pub fn instruction(kind: AnswerKind) -> &'static str {
    match kind {
        AnswerKind::Number => {
            "Give the final answer as a number on a last line starting with \"Answer:\"."
        }
        AnswerKind::Choice => {
            "Give the letter of the correct option on a last line starting with \"Answer:\"."
        }
        AnswerKind::Text => "Give the final answer on a last line starting with \"Answer:\".",
    }
}

/// Answers `question` with the model under `options.strategy`.
pub fn solve(engine: &Engine, question: &str, options: &SolveOptions) -> Result<Solution> {
    if question.trim().is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let start = Instant::now();
    let budget_forcing = matches!(options.strategy, Strategy::Budget { .. });
    if budget_forcing && options.thinking == Some(false) && engine.thinks_in_tags() {
        return Err(Error::Invalid(
            "the budget strategy controls thinking, so thinking cannot be switched off".into(),
        ));
    }
    let thinking = if budget_forcing && engine.thinks_in_tags() {
        Some(true)
    } else {
        options.thinking
    };
    let style = options.prompt_style.resolve(engine);
    let (rendered, prompt, stops) = match style {
        PromptStyle::FewShot => {
            let text = prompt::few_shot(question, options.kind, options.instruction.as_deref());
            let ids = engine.encode(&Prompt::Text(text.clone()))?;
            let stops = prompt::FEW_SHOT_STOPS.map(String::from).to_vec();
            (text, ids, stops)
        }
        _ => {
            let suffix = options
                .instruction
                .as_deref()
                .unwrap_or_else(|| instruction(options.kind));
            let message = ChatMessage::user(if suffix.is_empty() {
                question.to_string()
            } else {
                format!("{question}\n{suffix}")
            });
            let rendered = engine.template().render_with_thinking(
                std::slice::from_ref(&message),
                true,
                thinking,
            )?;
            (
                rendered,
                engine.encode_chat(&[message], thinking)?,
                Vec::new(),
            )
        }
    };
    let mut run = Run {
        engine,
        session: engine.session(),
        prompt,
        style,
        stops,
        options,
        samples: Vec::new(),
        vote: Vote::new(),
        drawn: 0,
        deadline: options.limits.max_wall.map(|d| start + d),
        spent: 0,
        limited: false,
        thinking: None,
        judgements: 0,
        judge_tokens: 0,
        generated: 0,
        scored_tokens: 0,
    };
    let (answer, confidence) = match options.strategy {
        Strategy::Greedy => run.greedy()?,
        Strategy::SelfConsistency { samples } => {
            check_samples(samples)?;
            run.wave(samples)?;
            run.verdict()
        }
        Strategy::BestOfN { samples, judges } => {
            check_samples(samples)?;
            run.wave(samples)?;
            if judges == 0 {
                run.best()
            } else {
                run.best_judged(question, judges)?
            }
        }
        Strategy::Confidence {
            warmup,
            samples,
            keep_percent,
            window,
        } => run.confidence(warmup, samples, keep_percent, window)?,
        Strategy::Adaptive {
            wave,
            max_samples,
            threshold,
            window,
        } => run.adaptive(wave, max_samples, threshold, window)?,
        Strategy::Budget {
            min_thinking,
            max_thinking,
            max_waits,
        } => run.budget(ThinkingBudget {
            min_thinking,
            max_thinking,
            max_waits,
            answer_tokens: ANSWER_TOKENS,
        })?,
        Strategy::Beam {
            beams,
            groups,
            diversity,
            judge,
        } => run.beam(question, beams, groups, diversity, judge, &[])?,
        Strategy::StepSearch {
            candidates,
            keep,
            max_steps,
            step_tokens,
        } => run.step_search(question, candidates, keep, max_steps, step_tokens)?,
        Strategy::Auto {
            gate,
            confidence,
            max_samples,
            wave,
            threshold,
            agreement,
        } => run.auto(
            question,
            policy::Policy {
                gate,
                confidence,
                wave,
                agreement,
                max_samples,
                threshold,
            },
        )?,
    };
    Ok(Solution {
        strategy: options.strategy.name(),
        prompt: rendered,
        answer,
        confidence,
        spend: Spend {
            samples: run.samples.len(),
            tokens: run.generated + run.judge_tokens,
            wall_secs: start.elapsed().as_secs_f64(),
            limited: run.limited,
            judgements: run.judgements,
            scored_tokens: run.scored_tokens,
        },
        samples: run.samples,
        thinking: run.thinking,
    })
}

/// Most tokens of the answer after budget-forced thinking.
pub(crate) const ANSWER_TOKENS: usize = 32;
