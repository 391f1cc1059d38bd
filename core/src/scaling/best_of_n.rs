//! `best-of-n`: the samples' distinct answers ranked by the verifier's
//! correctness verdicts, or by mean log-probability.

use super::run::Run;
use super::Sample;
use crate::error::Result;

impl Run<'_, '_> {
    /// Each distinct answer judged `judges` times by the verifier's
    /// correctness stage (with its most likely trace as reasoning); the most
    /// accepted answer wins, the higher mean log-probability on ties. The
    /// confidence is the winner's share of accepting judges.
    pub(super) fn best_judged(
        &mut self,
        question: &str,
        judges: usize,
    ) -> Result<(Option<String>, f64)> {
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
    pub(super) fn best(&self) -> (Option<String>, f64) {
        self.samples
            .iter()
            .filter(|s| s.answer.is_some())
            .max_by(|a, b| a.mean_logprob.total_cmp(&b.mean_logprob))
            .map(|s| (s.answer.clone(), (s.mean_logprob as f64).exp()))
            .unwrap_or((None, 0.0))
    }
}
