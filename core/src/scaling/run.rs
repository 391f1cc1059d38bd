//! The state of one [`super::solve`] call, shared by the strategies: the
//! session, the samples and votes so far, and what has been spent against
//! the caller's [`Limits`].

use std::ops::ControlFlow;
use std::time::Instant;

use super::{extract, Limits, PromptStyle, Sample, SolveOptions, Thinking, Vote};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;
use crate::session::{GenerateOptions, Generation, Session};

/// Refuses a sample count outside 1..=[`crate::session::MAX_PARALLEL`].
pub(super) fn check_samples(n: usize) -> Result<()> {
    if n == 0 || n > crate::session::MAX_PARALLEL {
        return Err(Error::Invalid(format!(
            "sample count {n} is out of range (1 to {})",
            crate::session::MAX_PARALLEL
        )));
    }
    Ok(())
}

/// The state of one [`solve`] call.
pub(super) struct Run<'e, 'o> {
    pub(super) engine: &'e Engine,
    pub(super) session: Session<'e>,
    pub(super) prompt: Vec<u32>,
    /// The prompt's form, resolved (`Chat` or `FewShot`).
    pub(super) style: PromptStyle,
    /// Strings that end a sample (the few-shot prompt's next example).
    pub(super) stops: Vec<String>,
    pub(super) options: &'o SolveOptions,
    pub(super) samples: Vec<Sample>,
    pub(super) vote: Vote,
    /// Sampled (non-greedy) traces so far: the next wave's seed offset.
    pub(super) drawn: u64,
    /// When [`Limits::max_wall`] runs out.
    pub(super) deadline: Option<Instant>,
    /// Tokens generated so far (for [`Limits::max_tokens`]).
    pub(super) spent: usize,
    /// Whether a limit stopped generation.
    pub(super) limited: bool,
    pub(super) thinking: Option<Thinking>,
    /// Judgements generated to rank samples, and their tokens.
    pub(super) judgements: usize,
    pub(super) judge_tokens: usize,
    /// Tokens generated for samples and searches (pruned branches
    /// included), judgements not.
    pub(super) generated: usize,
    /// Judge-prompt tokens read to score candidates.
    pub(super) scored_tokens: usize,
}

impl Run<'_, '_> {
    /// Keeps a sample; it votes with `weight` unless that is `None`.
    pub(super) fn record(&mut self, g: Generation, weight: Option<f64>) -> (Option<String>, f32) {
        let mean = g.mean_logprob();
        let mut text = g.text;
        text.truncate(super::prompt::cut_at_stop(&text, &self.stops).len());
        let answer = extract(&text, self.options.kind);
        self.generated += g.tokens.len();
        if let Some(w) = weight {
            self.vote.add(answer.as_deref(), w);
        }
        self.samples.push(Sample {
            text,
            answer: answer.clone(),
            mean_logprob: mean,
            tokens: g.tokens.len(),
        });
        (answer, mean)
    }

    /// Whether a cap of [`Limits`] is reached.
    pub(super) fn exhausted(&self) -> bool {
        exhausted(&self.options.limits, self.deadline, self.spent)
    }

    /// Draws `n` samples decoded together, each voting once.
    pub(super) fn wave(&mut self, n: usize) -> Result<()> {
        for g in self.draw(n, 0, &mut |_, _| ControlFlow::Continue(()))? {
            self.record(g, Some(1.0));
        }
        Ok(())
    }

    /// Samples `n` traces decoded together (with `top_logprobs` alternatives
    /// per token), streaming each token to `on_event`.
    pub(super) fn draw(
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
            stop_strings: self.stops.clone(),
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

    pub(super) fn verdict(&self) -> (Option<String>, f64) {
        match self.vote.winner() {
            Some((answer, _)) => (Some(answer), self.vote.share()),
            None => (None, 0.0),
        }
    }
}

pub(super) fn exhausted(limits: &Limits, deadline: Option<Instant>, spent: usize) -> bool {
    limits.max_tokens.is_some_and(|cap| spent >= cap)
        || deadline.is_some_and(|d| Instant::now() >= d)
}

/// Counts one generated token against `limits`; `Break` once a cap is hit.
pub(super) fn within(
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
