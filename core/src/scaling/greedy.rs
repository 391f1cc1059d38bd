//! `greedy`: one call, and the answer confidence `auto` decides on.

use super::run::{within, Run};
use super::{extract, AnswerKind};
use crate::engine::Engine;
use crate::error::Result;
use crate::session::{GenerateOptions, Generation};
use crate::tokenizer::TokenStream;

/// One greedy trace as `auto` sees it.
pub(super) struct GreedyTrace {
    pub answer: Option<String>,
    /// See [`answer_confidence`].
    pub answer_confidence: f64,
    /// The mean token probability of the whole trace.
    pub trace_confidence: f64,
    /// The tokens chosen, in order.
    pub tokens: Vec<u32>,
    /// The trace's rank among beam hypotheses: the log-probability of its
    /// tokens and of the end-of-turn token that ended it, per token
    /// (as [`crate::search::Hypothesis::score`] with length penalty 1).
    pub beam_score: f32,
}

impl Run<'_, '_> {
    pub(super) fn greedy(&mut self) -> Result<(Option<String>, f64)> {
        let g = self.greedy_trace()?;
        Ok((g.answer, g.answer_confidence))
    }

    /// One greedy trace, recorded as a sample that votes once.
    pub(super) fn greedy_trace(&mut self) -> Result<GreedyTrace> {
        let opts = GenerateOptions {
            max_tokens: self.options.max_tokens,
            stop_strings: self.stops.clone(),
            ..Default::default()
        };
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let g = self.session.generate(&self.prompt, &opts, &mut |_| {
            within(&limits, deadline, &mut spent, &mut limited)
        })?;
        self.spent = spent;
        self.limited |= limited;
        let answer_confidence = answer_confidence(&g, self.engine, self.options.kind);
        let trace_confidence = (g.mean_logprob() as f64).exp();
        let tokens: Vec<u32> = g.tokens.iter().map(|t| t.token).collect();
        let logprob: f32 = g.tokens.iter().chain(&g.end).map(|t| t.logprob).sum();
        let beam_score = logprob / tokens.len().max(1) as f32;
        let (answer, _) = self.record(g, Some(1.0));
        Ok(GreedyTrace {
            answer,
            answer_confidence,
            trace_confidence,
            tokens,
            beam_score,
        })
    }
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
    // The first token whose text reaches past the marker, found by
    // streaming the tokens once as generation did.
    let mut stream = TokenStream::new(tokenizer, true);
    let mut len = 0;
    let mut first = None;
    for (k, t) in g.tokens.iter().enumerate() {
        match stream.push(t.token) {
            Ok(piece) => len += piece.len(),
            Err(_) => return whole,
        }
        if len > marker + "Answer:".len() {
            first = Some(k);
            break;
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
