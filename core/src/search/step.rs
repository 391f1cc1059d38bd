//! Verifier-guided step search: a beam over reasoning steps.
//!
//! A step ends at a line break that follows some text. Each round samples
//! `candidates` continuations of one step, shared out among the kept
//! partial solutions still open (all from the question in the first round,
//! `candidates / keep` from each of the `keep` best later); those of one
//! partial are sampled together, sharing its KV cache. Every new candidate
//! is scored once by the [`StepJudge`]; the `keep` best of all are
//! expanded again. A candidate is complete when the model ends its
//! turn, when `is_complete` accepts its text (e.g. an answer line was
//! written) or when it reaches `max_tokens`; complete candidates are not
//! expanded, and the search ends when every kept one is complete or after
//! `max_steps`.

use std::ops::ControlFlow;

use super::judge::StepJudge;
use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;
use crate::scaling::prompt::cut_at_stop;
use crate::session::{FinishReason, GenerateOptions, Session, MAX_PARALLEL};

/// Settings of [`step_search`].
#[derive(Clone, Debug)]
pub struct StepOptions {
    /// Continuations sampled per step, over all kept partials.
    pub candidates: usize,
    /// Partials kept after each step (divides `candidates`).
    pub keep: usize,
    /// Most expansion rounds.
    pub max_steps: usize,
    /// Most tokens of one step.
    pub step_tokens: usize,
    /// Most tokens of one whole solution.
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// A partial solution whose text reaches one of these is complete, and
    /// its text ends before it.
    pub stop_strings: Vec<String>,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            candidates: 4,
            keep: 1,
            max_steps: 8,
            step_tokens: 64,
            max_tokens: 256,
            temperature: 0.7,
            top_p: 0.95,
            seed: 0,
            stop_strings: Vec::new(),
        }
    }
}

impl StepOptions {
    fn validate(&self) -> Result<()> {
        if self.keep == 0
            || self.candidates == 0
            || self.candidates > MAX_PARALLEL
            || !self.candidates.is_multiple_of(self.keep)
        {
            return Err(Error::Invalid(format!(
                "step search needs 1 <= keep ({}) dividing candidates ({}) <= {MAX_PARALLEL}",
                self.keep, self.candidates
            )));
        }
        if self.max_steps == 0 || self.step_tokens == 0 || self.max_tokens == 0 {
            return Err(Error::Invalid(format!(
                "step search needs max_steps ({}), step_tokens ({}) and max_tokens ({}) of at least 1",
                self.max_steps, self.step_tokens, self.max_tokens
            )));
        }
        Ok(())
    }
}

/// A partial (or complete) solution.
#[derive(Clone, Debug)]
pub struct Partial {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Sum of its tokens' log-probabilities.
    pub logprob: f32,
    pub steps: usize,
    /// The judge's probability that it is correct so far.
    pub score: f64,
    pub complete: bool,
}

impl Partial {
    /// Mean log-probability of its tokens.
    pub fn mean_logprob(&self) -> f32 {
        self.logprob / self.tokens.len().max(1) as f32
    }
}

/// What a search spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Expansion rounds run.
    pub rounds: usize,
    /// Tokens sampled over all candidates.
    pub generated_tokens: usize,
    /// Candidates judged (one forward pass each).
    pub judged: usize,
    /// Judge-prompt tokens computed (the rest came from its cache).
    pub judge_tokens: usize,
}

/// The result of [`step_search`].
#[derive(Clone, Debug)]
pub struct StepResult {
    /// Every complete candidate seen, best score first.
    pub complete: Vec<Partial>,
    /// The partials kept after the last round, best first.
    pub kept: Vec<Partial>,
    pub stats: StepStats,
}

/// What a step search solves.
#[derive(Clone, Copy)]
pub struct Problem<'a> {
    /// The question as the judge sees it.
    pub question: &'a str,
    /// Its chat-rendered prompt, which the solutions continue.
    pub prompt: &'a [u32],
    /// Whether a solution's text is complete (e.g. has an answer line).
    pub is_complete: &'a dyn Fn(&str) -> bool,
}

/// Searches for a solution of `problem` step by step. `session` generates,
/// `judge_session` scores. `on_token` sees every sampled token;
/// `ControlFlow::Break` stops the search after the current round.
pub fn step_search(
    session: &mut Session<'_>,
    judge_session: &mut Session<'_>,
    judge: &StepJudge,
    problem: Problem<'_>,
    options: &StepOptions,
    on_token: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<StepResult> {
    options.validate()?;
    let Problem {
        question,
        prompt,
        is_complete,
    } = problem;
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let engine = session.engine();
    let tokenizer = engine.tokenizer();
    let mut stats = StepStats::default();
    let mut kept = vec![Partial {
        text: String::new(),
        tokens: Vec::new(),
        logprob: 0.0,
        steps: 0,
        score: 1.0,
        complete: false,
    }];
    let mut complete: Vec<Partial> = Vec::new();
    let mut stopped = false;
    let mut draws = 0u64;
    while stats.rounds < options.max_steps && !stopped && kept.iter().any(|p| !p.complete) {
        stats.rounds += 1;
        let mut fresh: Vec<Partial> = Vec::new();
        // The round's candidates are shared out among the partials still
        // open (all of them go to the question itself in the first round).
        let open: Vec<&Partial> = kept.iter().filter(|p| !p.complete).collect();
        for (k, parent) in open.iter().enumerate() {
            let per_partial =
                options.candidates / open.len() + usize::from(k < options.candidates % open.len());
            let room = options.max_tokens - parent.tokens.len();
            let ids = [prompt, parent.tokens.as_slice()].concat();
            let opts = GenerateOptions {
                max_tokens: options.step_tokens.min(room),
                sampler: SamplerConfig {
                    temperature: options.temperature,
                    top_p: options.top_p,
                    seed: options.seed.wrapping_add(draws),
                    ..Default::default()
                },
                ..Default::default()
            };
            draws += per_partial as u64;
            // A step ends at a line break after some text of its own.
            let mut step_text = vec![String::new(); per_partial];
            let gens = session.generate_parallel(&ids, per_partial, &opts, &mut |i, ev| {
                stats.generated_tokens += 1;
                stopped |= on_token().is_break();
                let text = &mut step_text[i];
                text.push_str(ev.text);
                let line_done = text.ends_with('\n') && !text.trim().is_empty();
                if line_done || stopped {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            for g in gens {
                let mut tokens = parent.tokens.clone();
                tokens.extend(g.tokens.iter().map(|t| t.token));
                let mut text = tokenizer.decode(&tokens, true)?;
                let whole = text.len();
                text.truncate(cut_at_stop(&text, &options.stop_strings).len());
                let done = g.finish_reason == FinishReason::Stop
                    || text.len() < whole
                    || tokens.len() >= options.max_tokens
                    || is_complete(&text);
                fresh.push(Partial {
                    logprob: parent.logprob + g.tokens.iter().map(|t| t.logprob).sum::<f32>(),
                    text,
                    tokens,
                    steps: parent.steps + 1,
                    score: 0.0,
                    complete: done,
                });
            }
        }
        for p in &mut fresh {
            let j = judge.judge(judge_session, question, p.text.trim_end())?;
            p.score = j.p_yes;
            stats.judged += 1;
            stats.judge_tokens += j.computed_tokens;
        }
        complete.extend(fresh.iter().filter(|p| p.complete).cloned());
        let mut pool: Vec<Partial> = kept.into_iter().filter(|p| p.complete).collect();
        pool.extend(fresh);
        pool.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.mean_logprob().total_cmp(&a.mean_logprob()))
        });
        pool.truncate(options.keep);
        kept = pool;
    }
    complete.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(StepResult {
        complete,
        kept,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let e = StepOptions {
            candidates: 6,
            keep: 4,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("keep (4)") && e.contains("candidates (6)"),
            "{e}"
        );
        for o in [
            StepOptions {
                keep: 0,
                ..Default::default()
            },
            StepOptions {
                max_steps: 0,
                ..Default::default()
            },
            StepOptions {
                step_tokens: 0,
                ..Default::default()
            },
        ] {
            assert!(o.validate().is_err(), "{o:?}");
        }
        assert!(StepOptions::default().validate().is_ok());
    }
}
