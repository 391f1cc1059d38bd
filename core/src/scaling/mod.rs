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

pub mod answer;
pub mod budget;
pub mod vote;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;
use crate::session::{GenerateOptions, Generation, Session};
use crate::tokenizer::ChatMessage;

pub use answer::{extract, normalize, AnswerKind};
pub use budget::ThinkingBudget;
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
    /// One greedy answer when the model's confidence in it reaches
    /// `confidence`; otherwise escalate to `Adaptive` (waves of `wave`,
    /// stopping at `threshold` or `max_samples`), the greedy answer voting.
    Auto {
        confidence: f64,
        max_samples: usize,
        wave: usize,
        threshold: f64,
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
            "auto" => Ok(Strategy::Auto {
                confidence: AUTO_CONFIDENCE,
                max_samples: samples,
                wave: 4,
                threshold: 0.95,
            }),
            other => Err(Error::Invalid(format!(
                "unknown strategy {other:?} (known: {})",
                Strategy::NAMES.join(", ")
            ))),
        }
    }

    /// The names [`Strategy::parse`] knows.
    pub const NAMES: [&'static str; 7] = [
        "greedy",
        "self-consistency",
        "best-of-n",
        "confidence",
        "adaptive",
        "budget",
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
            Strategy::Auto { .. } => "auto",
        }
    }
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
    pub instruction: Option<String>,
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

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            strategy: Strategy::Auto {
                confidence: AUTO_CONFIDENCE,
                max_samples: 16,
                wave: 4,
                threshold: 0.95,
            },
            kind: AnswerKind::Number,
            max_tokens: 256,
            temperature: DEFAULT_TEMPERATURE,
            top_p: 0.95,
            seed: 0,
            thinking: None,
            limits: Limits::default(),
            instruction: None,
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
    /// The chat-rendered prompt every sample continued.
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
    let suffix = options
        .instruction
        .as_deref()
        .unwrap_or_else(|| instruction(options.kind));
    let message = ChatMessage::user(if suffix.is_empty() {
        question.to_string()
    } else {
        format!("{question}\n{suffix}")
    });
    let rendered =
        engine
            .template()
            .render_with_thinking(std::slice::from_ref(&message), true, thinking)?;
    let prompt = engine.encode_chat(&[message], thinking)?;
    let mut run = Run {
        engine,
        session: engine.session(),
        prompt,
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
        Strategy::Auto {
            confidence,
            max_samples,
            wave,
            threshold,
        } => {
            let (answer, c) = run.greedy()?;
            if answer.is_some() && c >= confidence {
                (answer, c)
            } else {
                // The greedy sample counts as the first vote.
                run.adaptive(wave, max_samples, threshold, None)?
            }
        }
    };
    Ok(Solution {
        strategy: options.strategy.name(),
        prompt: rendered,
        answer,
        confidence,
        spend: Spend {
            samples: run.samples.len(),
            tokens: run.samples.iter().map(|s| s.tokens).sum::<usize>() + run.judge_tokens,
            wall_secs: start.elapsed().as_secs_f64(),
            limited: run.limited,
            judgements: run.judgements,
        },
        samples: run.samples,
        thinking: run.thinking,
    })
}

/// Most tokens of the answer after budget-forced thinking.
const ANSWER_TOKENS: usize = 32;

fn check_samples(n: usize) -> Result<()> {
    if n == 0 || n > crate::session::MAX_PARALLEL {
        return Err(Error::Invalid(format!(
            "sample count {n} is out of range (1 to {})",
            crate::session::MAX_PARALLEL
        )));
    }
    Ok(())
}

/// The state of one [`solve`] call.
struct Run<'e, 'o> {
    engine: &'e Engine,
    session: Session<'e>,
    prompt: Vec<u32>,
    options: &'o SolveOptions,
    samples: Vec<Sample>,
    vote: Vote,
    /// Sampled (non-greedy) traces so far: the next wave's seed offset.
    drawn: u64,
    /// When [`Limits::max_wall`] runs out.
    deadline: Option<Instant>,
    /// Tokens generated so far (for [`Limits::max_tokens`]).
    spent: usize,
    /// Whether a limit stopped generation.
    limited: bool,
    thinking: Option<Thinking>,
    /// Judgements generated to rank samples, and their tokens.
    judgements: usize,
    judge_tokens: usize,
}

impl Run<'_, '_> {
    /// Keeps a sample; it votes with `weight` unless that is `None`.
    fn record(&mut self, g: Generation, weight: Option<f64>) -> (Option<String>, f32) {
        let answer = extract(&g.text, self.options.kind);
        let mean = g.mean_logprob();
        if let Some(w) = weight {
            self.vote.add(answer.as_deref(), w);
        }
        self.samples.push(Sample {
            text: g.text,
            answer: answer.clone(),
            mean_logprob: mean,
            tokens: g.tokens.len(),
        });
        (answer, mean)
    }

    /// Whether a cap of [`Limits`] is reached.
    fn exhausted(&self) -> bool {
        exhausted(&self.options.limits, self.deadline, self.spent)
    }

    fn greedy(&mut self) -> Result<(Option<String>, f64)> {
        let opts = GenerateOptions {
            max_tokens: self.options.max_tokens,
            ..Default::default()
        };
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let g = self.session.generate(&self.prompt, &opts, &mut |_| {
            within(&limits, deadline, &mut spent, &mut limited)
        })?;
        self.spent = spent;
        self.limited |= limited;
        let confidence = answer_confidence(&g, self.engine, self.options.kind);
        let (answer, _) = self.record(g, Some(1.0));
        Ok((answer, confidence))
    }

    fn budget(&mut self, budget: ThinkingBudget) -> Result<(Option<String>, f64)> {
        let opts = GenerateOptions::default();
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let trace = budget::think_with_budget(
            &mut self.session,
            self.engine,
            &self.prompt,
            &budget,
            &opts,
            &mut |_| within(&limits, deadline, &mut spent, &mut limited),
        )?;
        self.spent = spent;
        self.limited |= limited;
        self.thinking = Some(Thinking {
            thinking_tokens: trace.thinking_tokens,
            waits: trace.waits,
            forced_end: trace.forced_end,
        });
        let g = Generation {
            text: trace.text,
            tokens: trace.tokens,
            finish_reason: crate::session::FinishReason::Stop,
            timings: Default::default(),
        };
        let (answer, mean) = self.record(g, Some(1.0));
        Ok((answer, (mean as f64).exp()))
    }

    /// Draws `n` samples decoded together, each voting once.
    fn wave(&mut self, n: usize) -> Result<()> {
        for g in self.draw(n, 0, &mut |_, _| ControlFlow::Continue(()))? {
            self.record(g, Some(1.0));
        }
        Ok(())
    }

    /// Samples `n` traces decoded together (with `top_logprobs` alternatives
    /// per token), streaming each token to `on_event`.
    fn draw(
        &mut self,
        n: usize,
        top_logprobs: usize,
        on_event: &mut dyn FnMut(usize, crate::session::StreamEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<Generation>> {
        let opts = GenerateOptions {
            max_tokens: self.options.max_tokens,
            sampler: SamplerConfig {
                temperature: self.options.temperature,
                top_p: self.options.top_p,
                seed: self.options.seed.wrapping_add(self.drawn),
                top_logprobs,
                ..Default::default()
            },
            ..Default::default()
        };
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let out = self
            .session
            .generate_parallel(&self.prompt, n, &opts, &mut |i, ev| {
                within(&limits, deadline, &mut spent, &mut limited)?;
                on_event(i, ev)
            })?;
        self.spent = spent;
        self.limited |= limited;
        self.drawn += n as u64;
        Ok(out)
    }

    fn confidence(
        &mut self,
        warmup: usize,
        samples: usize,
        keep_percent: f64,
        window: usize,
    ) -> Result<(Option<String>, f64)> {
        check_samples(samples)?;
        if warmup == 0 || warmup > samples || window == 0 || !(0.0..=100.0).contains(&keep_percent)
        {
            return Err(Error::Invalid(format!(
                "confidence strategy needs 1 <= warmup ({warmup}) <= samples ({samples}), window >= 1 ({window}) and keep_percent in [0, 100] ({keep_percent})"
            )));
        }
        const TOP: usize = 5;
        let confidences = |g: &Generation| -> Vec<f32> {
            g.tokens
                .iter()
                .map(|t| vote::token_confidence(&t.top.iter().map(|x| x.1).collect::<Vec<_>>()))
                .collect()
        };
        // Warm-up: complete traces set the bar.
        let warm = self.draw(warmup, TOP, &mut |_, _| ControlFlow::Continue(()))?;
        let scores: Vec<f32> = warm
            .iter()
            .map(|g| vote::lowest_window_mean(&confidences(g), window))
            .collect();
        let threshold = vote::percentile_threshold(&scores, keep_percent);
        for (g, score) in warm.into_iter().zip(scores) {
            self.record(g, Some(score.max(0.0) as f64));
        }
        // The rest stop as soon as a window falls below the bar.
        let rest = samples - warmup;
        if rest > 0 {
            let mut running: Vec<Vec<f32>> = vec![Vec::new(); rest];
            let out = self.draw(rest, TOP, &mut |i, ev| {
                let c = &mut running[i];
                c.push(vote::token_confidence(
                    &ev.token.top.iter().map(|x| x.1).collect::<Vec<_>>(),
                ));
                if c.len() >= window
                    && c[c.len() - window..].iter().sum::<f32>() / (window as f32) < threshold
                {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            for g in out {
                let stopped = g.finish_reason == crate::session::FinishReason::Cancelled;
                let score = vote::lowest_window_mean(&confidences(&g), window);
                self.record(g, (!stopped).then_some(score.max(0.0) as f64));
            }
        }
        Ok(self.verdict())
    }

    fn adaptive(
        &mut self,
        wave: usize,
        max_samples: usize,
        threshold: f64,
        window: Option<usize>,
    ) -> Result<(Option<String>, f64)> {
        check_samples(max_samples)?;
        if wave == 0 {
            return Err(Error::Invalid("wave size must be at least 1".into()));
        }
        if !(0.5..1.0).contains(&threshold) {
            return Err(Error::Invalid(format!(
                "stopping threshold {threshold} must be in [0.5, 1)"
            )));
        }
        while self.samples.len() < max_samples && !self.exhausted() {
            self.wave(wave.min(max_samples - self.samples.len()))?;
            let counts: Vec<usize> = self.vote.counts().iter().map(|c| c.1).collect();
            let answers: Vec<Option<String>> =
                self.samples.iter().map(|s| s.answer.clone()).collect();
            if vote::should_stop_adaptive(&counts, threshold)
                || window.is_some_and(|w| vote::window_agrees(&answers, w))
            {
                break;
            }
        }
        Ok(self.verdict())
    }

    /// Each distinct answer judged `judges` times by the verifier's
    /// correctness stage (with its most likely trace as reasoning); the most
    /// accepted answer wins, the higher mean log-probability on ties. The
    /// confidence is the winner's share of accepting judges.
    fn best_judged(&mut self, question: &str, judges: usize) -> Result<(Option<String>, f64)> {
        let mut candidates: Vec<&Sample> = Vec::new();
        for s in self.samples.iter().filter(|s| s.answer.is_some()) {
            match candidates.iter_mut().find(|c| c.answer == s.answer) {
                Some(c) if c.mean_logprob < s.mean_logprob => *c = s,
                Some(_) => {}
                None => candidates.push(s),
            }
        }
        let options = crate::verify::VerifyOptions {
            stages: vec![crate::verify::Stage::Correctness],
            votes: judges,
            seed: self.options.seed,
            ..crate::verify::VerifyOptions::for_engine(self.engine)
        };
        let mut best: Option<(usize, f32, Option<String>)> = None;
        let (mut judgements, mut tokens) = (0, 0);
        for c in candidates {
            if self.exhausted() {
                self.limited = true;
                break;
            }
            let answer = c.answer.as_deref().expect("answered");
            let v = crate::verify::verify(
                self.engine,
                &crate::verify::Candidate {
                    question,
                    answer,
                    reasoning: &c.text,
                    vote_share: None,
                },
                &options,
            )?;
            judgements += v.spend.samples as usize;
            tokens += v.spend.tokens as usize;
            let yes = v.votes.iter().filter(|x| x.verdict == Some(true)).count();
            if best
                .as_ref()
                .is_none_or(|(y, lp, _)| yes > *y || (yes == *y && c.mean_logprob > *lp))
            {
                best = Some((yes, c.mean_logprob, c.answer.clone()));
            }
        }
        self.judgements += judgements;
        self.spent += tokens;
        self.judge_tokens += tokens;
        Ok(best.map_or((None, 0.0), |(yes, _, answer)| {
            (answer, yes as f64 / judges as f64)
        }))
    }

    /// The answered sample with the highest mean log-probability.
    fn best(&self) -> (Option<String>, f64) {
        self.samples
            .iter()
            .filter(|s| s.answer.is_some())
            .max_by(|a, b| a.mean_logprob.total_cmp(&b.mean_logprob))
            .map(|s| (s.answer.clone(), (s.mean_logprob as f64).exp()))
            .unwrap_or((None, 0.0))
    }

    fn verdict(&self) -> (Option<String>, f64) {
        match self.vote.winner() {
            Some((answer, _)) => (Some(answer), self.vote.share()),
            None => (None, 0.0),
        }
    }
}

fn exhausted(limits: &Limits, deadline: Option<Instant>, spent: usize) -> bool {
    limits.max_tokens.is_some_and(|cap| spent >= cap)
        || deadline.is_some_and(|d| Instant::now() >= d)
}

/// Counts one generated token against `limits`; `Break` once a cap is hit.
fn within(
    limits: &Limits,
    deadline: Option<Instant>,
    spent: &mut usize,
    limited: &mut bool,
) -> ControlFlow<()> {
    if exhausted(limits, deadline, *spent) {
        *limited = true;
        return ControlFlow::Break(());
    }
    *spent += 1;
    ControlFlow::Continue(())
}

/// The model's confidence in the answer of one trace: the probability of
/// the least likely token of the final `Answer:` line (the tokens that
/// decide the answer), or the mean token probability of the whole trace
/// when it has no such line.
fn answer_confidence(g: &Generation, engine: &Engine, kind: AnswerKind) -> f64 {
    let whole = (g.mean_logprob() as f64).exp();
    let Some(marker) = g.text.rfind("Answer:") else {
        return whole;
    };
    if extract(&g.text, kind).is_none() {
        return 0.0;
    }
    let tokenizer = engine.tokenizer();
    let ids: Vec<u32> = g.tokens.iter().map(|t| t.token).collect();
    // The first token whose text reaches past the marker.
    let mut first = None;
    for k in 1..=ids.len() {
        match tokenizer.decode(&ids[..k], true) {
            Ok(text) if text.len() > marker + "Answer:".len() => {
                first = Some(k - 1);
                break;
            }
            Ok(_) => {}
            Err(_) => return whole,
        }
    }
    let Some(first) = first else {
        return whole;
    };
    let mut lowest: Option<f32> = None;
    for t in &g.tokens[first..] {
        let piece = tokenizer.decode(&[t.token], true).unwrap_or_default();
        if piece.contains('\n') && lowest.is_some() {
            break;
        }
        if piece.chars().any(|c| c.is_alphanumeric()) {
            lowest = Some(lowest.map_or(t.logprob, |l| l.min(t.logprob)));
        }
    }
    lowest.map_or(whole, |l| (l as f64).exp())
}
