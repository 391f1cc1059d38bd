//! `auto`: spend compute by difficulty (compute-optimal scaling, Snell et
//! al. 2024), with difficulty estimated as the question is answered.
//!
//! 1. **Easy**: one greedy answer. When the model's confidence in it
//!    reaches `confidence`, it is the answer. The [`Gate`] says how that
//!    confidence is measured: by the least likely token of the answer line,
//!    or by the mean token probability of the whole trace.
//! 2. **Medium**: a wave of `max_samples` beams (two diverse groups, on the
//!    batched path, sharing the prompt). Its best answered hypothesis is the
//!    answer when at least `agreement` of the answers so far (greedy and
//!    beams) agree with it: low answer entropy. Two beams are two groups of
//!    one, and the first group's beam is greedy decoding, already done: only
//!    the second group runs, led by the greedy trace, and the likelier of
//!    the two traces wins.
//! 3. **Hard**: the answers disagree. Sampled waves of `wave` vote, the
//!    earlier answers included, until Adaptive-Consistency's rule is settled
//!    at `threshold` or `max_samples` more traces were spent.
//!
//! On the generated task sets of `edgeloop eval`, the small students rank
//! answers better by beam likelihood than by votes when their samples
//! disagree, so the default `agreement` is 0: the third stage is there for
//! models whose votes are worth more.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::run::{check_samples, Run};
use super::vote;
use crate::error::{Error, Result};

/// How `auto` measures its confidence in the greedy answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// The probability of the least likely token of the final `Answer:`
    /// line: the tokens that decide the answer.
    #[default]
    AnswerLine,
    /// The mean token probability of the whole trace. For models that
    /// write their answer line with near certainty whether it is right or
    /// not, the reasoning before it tells more.
    Trace,
}

impl Gate {
    /// Its name on the command line and in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Gate::AnswerLine => "answer-line",
            Gate::Trace => "trace",
        }
    }
}

impl FromStr for Gate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "answer-line" => Ok(Gate::AnswerLine),
            "trace" => Ok(Gate::Trace),
            other => Err(Error::Invalid(format!(
                "unknown confidence gate {other:?} (known: answer-line, trace)"
            ))),
        }
    }
}

/// The settings of the policy (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Policy {
    pub gate: Gate,
    pub confidence: f64,
    pub wave: usize,
    pub agreement: f64,
    pub max_samples: usize,
    pub threshold: f64,
}

impl Run<'_, '_> {
    pub(super) fn auto(&mut self, question: &str, p: Policy) -> Result<(Option<String>, f64)> {
        check_samples(p.max_samples)?;
        if p.wave == 0 {
            return Err(Error::Invalid("wave size must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&p.agreement) {
            return Err(Error::Invalid(format!(
                "agreement {} must be in [0, 1]",
                p.agreement
            )));
        }
        let g = self.greedy_trace()?;
        let c = match p.gate {
            Gate::AnswerLine => g.answer_confidence,
            Gate::Trace => g.trace_confidence,
        };
        let greedy = g.answer;
        if (greedy.is_some() && c >= p.confidence) || self.exhausted() {
            return Ok((greedy, c));
        }

        // Medium: a beam wave; its choice stands if the answers agree.
        let beams = p.max_samples;
        let choice = if beams == 2 {
            // The second group of `beam@2`, the greedy trace its first;
            // the better-ranked answered trace of the two wins, as there.
            let first = self.samples.len();
            self.beam(question, 1, 1, 0.5, false, &g.tokens)?;
            let greedy_rank = greedy.is_some().then_some((g.beam_score, &greedy));
            self.samples[first..]
                .iter()
                .filter(|s| s.answer.is_some())
                .map(|s| (s.mean_logprob, &s.answer))
                .chain(greedy_rank)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .and_then(|(_, a)| a.clone())
        } else {
            let groups = if beams.is_multiple_of(2) { 2 } else { 1 };
            self.beam(question, beams, groups, 0.5, false, &[])?.0
        };
        let answers: Vec<&str> = self
            .samples
            .iter()
            .filter_map(|s| s.answer.as_deref())
            .collect();
        let choice = choice.or(greedy.clone());
        let agree = choice
            .as_deref()
            .map_or(0, |a| answers.iter().filter(|&&x| x == a).count());
        let share = agree as f64 / answers.len().max(1) as f64;
        // The confidence of a wave's answer is its share of the answers.
        if choice.is_some() && share >= p.agreement {
            return Ok((choice, share));
        }

        // Hard: every answer so far votes; sampled waves until settled.
        self.vote = vote::Vote::new();
        for s in &self.samples {
            self.vote.add(s.answer.as_deref(), 1.0);
        }
        let before = self.samples.len();
        let cap = before + p.max_samples;
        while self.samples.len() < cap && !self.exhausted() {
            let counts: Vec<usize> = self.vote.counts().iter().map(|c| c.1).collect();
            if self.samples.len() > before && vote::should_stop_adaptive(&counts, p.threshold) {
                break;
            }
            self.wave(p.wave.min(cap - self.samples.len()))?;
        }
        Ok(self.verdict())
    }
}
