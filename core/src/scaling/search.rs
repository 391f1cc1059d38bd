//! `beam` and `step-search`: the token-tree searches of [`crate::search`]
//! as strategies, with their samples, answers and spend.

use super::run::{check_samples, within, Run};
use super::{extract, Sample, Vote};
use crate::error::Result;
use crate::search::{beam_search, step_search, BeamOptions, Problem, StepJudge, StepOptions};

impl Run<'_, '_> {
    /// Beam search (`leader`: see [`BeamOptions::leader`]); the answered
    /// hypothesis with the best length-normalized log-likelihood wins, or
    /// with `judge` the one the step judge scores highest (one forward pass
    /// per distinct answer). The confidence is the winner's mean token
    /// probability, or its judge score.
    pub(super) fn beam(
        &mut self,
        question: &str,
        beams: usize,
        groups: usize,
        diversity: f32,
        judge: bool,
        leader: &[u32],
    ) -> Result<(Option<String>, f64)> {
        check_samples(beams)?;
        let opts = BeamOptions {
            beams,
            groups,
            diversity,
            length_penalty: 1.0,
            max_tokens: self.options.max_tokens,
            stop_strings: self.stops.clone(),
            leader: leader.to_vec(),
            cancel: None,
        };
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let result = beam_search(&mut self.session, &self.prompt, &opts, &mut |live| {
            for _ in 0..live {
                within(&limits, deadline, &mut spent, &mut limited)?;
            }
            std::ops::ControlFlow::Continue(())
        })?;
        self.spent = spent;
        self.limited |= limited;
        self.generated += result.stats.tokens;
        let first = self.samples.len();
        for h in &result.hypotheses {
            self.samples.push(Sample {
                answer: extract(&h.text, self.options.kind),
                text: h.text.clone(),
                mean_logprob: h.logprob / h.tokens.len().max(1) as f32,
                tokens: h.tokens.len(),
            });
        }
        // Hypotheses are best first: the first answered one wins unless judged.
        let answered = self.samples[first..].iter().filter(|s| s.answer.is_some());
        if !judge {
            return Ok(answered
                .map(|s| (s.answer.clone(), (s.mean_logprob as f64).exp()))
                .next()
                .unwrap_or((None, 0.0)));
        }
        let judge = StepJudge::new(self.engine, self.style)?;
        let mut session = self.engine.session();
        let mut best: Option<(f64, Option<String>)> = None;
        let mut seen: Vec<&Option<String>> = Vec::new();
        for s in answered {
            if seen.contains(&&s.answer) {
                continue;
            }
            seen.push(&s.answer);
            let j = judge.judge(&mut session, question, s.text.trim_end())?;
            self.scored_tokens += j.computed_tokens;
            if best.as_ref().is_none_or(|(p, _)| j.p_yes > *p) {
                best = Some((j.p_yes, s.answer.clone()));
            }
        }
        Ok(best.map_or((None, 0.0), |(p, a)| (a, p)))
    }

    /// Verifier-guided step search; complete candidates vote with their
    /// judge scores as weights. Without a complete candidate, the best kept
    /// partial answers if it can.
    pub(super) fn step_search(
        &mut self,
        question: &str,
        candidates: usize,
        keep: usize,
        max_steps: usize,
        step_tokens: usize,
    ) -> Result<(Option<String>, f64)> {
        check_samples(candidates)?;
        let judge = StepJudge::new(self.engine, self.style)?;
        let mut judge_session = self.engine.session();
        let opts = StepOptions {
            candidates,
            keep,
            max_steps,
            step_tokens,
            max_tokens: self.options.max_tokens,
            temperature: self.options.temperature,
            top_p: self.options.top_p,
            seed: self.options.seed,
            stop_strings: self.stops.clone(),
        };
        let kind = self.options.kind;
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let result = step_search(
            &mut self.session,
            &mut judge_session,
            &judge,
            Problem {
                question,
                prompt: &self.prompt,
                is_complete: &|text| extract(text, kind).is_some() && text.ends_with('\n'),
            },
            &opts,
            &mut || within(&limits, deadline, &mut spent, &mut limited),
        )?;
        self.spent = spent;
        self.limited |= limited;
        self.generated += result.stats.generated_tokens;
        self.scored_tokens += result.stats.judge_tokens;
        let voters = if result.complete.is_empty() {
            &result.kept
        } else {
            &result.complete
        };
        let mut vote = Vote::new();
        for p in voters {
            let answer = extract(&p.text, kind);
            vote.add(answer.as_deref(), p.score.max(1e-6));
            self.samples.push(Sample {
                text: p.text.clone(),
                answer,
                mean_logprob: p.mean_logprob(),
                tokens: p.tokens.len(),
            });
        }
        self.vote = vote;
        Ok(self.verdict())
    }
}
