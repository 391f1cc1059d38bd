//! Fitting `auto` to a task family. Which strategy is compute-optimal
//! depends on the model, the kind of question and its difficulty (Snell et
//! al. 2024), so the policy's settings are chosen on a calibration set:
//! from the per-question outcomes of greedy decoding and of fixed beam
//! searches, the confidence gate, threshold and escalation width whose
//! replay answers best within the tokens of the best fixed strategy.
//!
//! The replay of a question: greedy's outcome when its answer's confidence
//! reaches the threshold, else the beam search's, at the greedy tokens plus
//! the beam search's (less the greedy ones for two beams, whose first is
//! the greedy trace; see [`super::policy`]).

use serde::{Deserialize, Serialize};

use super::policy::Gate;
use crate::error::{Error, Result};
use crate::session::MAX_PARALLEL;

/// The settings of `auto` a fit chooses: a policy file holds them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoSettings {
    /// How the greedy answer's confidence is measured.
    pub gate: Gate,
    /// The confidence at which the greedy answer stands; above 1, never.
    pub confidence: f64,
    /// Beams of the escalation.
    pub beams: usize,
}

impl AutoSettings {
    /// Reads a policy (the JSON [`fit`]'s settings are written as) and
    /// checks it with [`AutoSettings::validate`].
    pub fn from_json(json: &str) -> Result<Self> {
        let settings: AutoSettings = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("not a valid auto policy: {e}")))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses a confidence that is not a finite number in [0, 2] and a
    /// beam count outside 1..=[`MAX_PARALLEL`].
    pub fn validate(&self) -> Result<()> {
        if !(self.confidence.is_finite() && (0.0..=2.0).contains(&self.confidence)) {
            return Err(Error::Invalid(format!(
                "auto confidence {} must be a number in [0, 2]",
                self.confidence
            )));
        }
        if self.beams == 0 || self.beams > MAX_PARALLEL {
            return Err(Error::Invalid(format!(
                "auto beam count {} is out of range (1 to {MAX_PARALLEL})",
                self.beams
            )));
        }
        Ok(())
    }
}

/// One question's outcome under a fixed strategy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub correct: bool,
    /// Tokens generated.
    pub tokens: usize,
}

/// One question's greedy outcome and the confidences `auto` can gate on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GreedyOutcome {
    pub outcome: Outcome,
    /// Whether greedy gave an answer at all (`auto` escalates when not).
    pub answered: bool,
    /// See [`Gate::AnswerLine`].
    pub answer_confidence: f64,
    /// See [`Gate::Trace`].
    pub trace_confidence: f64,
}

impl GreedyOutcome {
    fn confidence(&self, gate: Gate) -> f64 {
        match gate {
            Gate::AnswerLine => self.answer_confidence,
            Gate::Trace => self.trace_confidence,
        }
    }
}

/// Accuracy (0 to 1) and mean tokens per question.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub accuracy: f64,
    pub mean_tokens: f64,
}

/// What [`fit`] chose, with its replayed score and the best fixed
/// strategy's (`"greedy"` or `"beam@N"`) it had to match.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    pub settings: AutoSettings,
    pub score: Score,
    pub best_fixed: String,
    pub best_fixed_score: Score,
}

/// `auto` with `settings` replayed over the outcomes; `beams` are those of
/// a fixed beam search of `settings.beams` beams, question by question.
pub fn replay(greedy: &[GreedyOutcome], beams: &[Outcome], settings: &AutoSettings) -> Score {
    let (mut right, mut tokens) = (0usize, 0usize);
    for (g, b) in greedy.iter().zip(beams) {
        tokens += g.outcome.tokens;
        if g.answered && g.confidence(settings.gate) >= settings.confidence {
            right += usize::from(g.outcome.correct);
        } else {
            right += usize::from(b.correct);
            tokens += if settings.beams == 2 {
                b.tokens.saturating_sub(g.outcome.tokens)
            } else {
                b.tokens
            };
        }
    }
    let n = greedy.len().max(1) as f64;
    Score {
        accuracy: right as f64 / n,
        mean_tokens: tokens as f64 / n,
    }
}

fn score(outcomes: &[Outcome]) -> Score {
    let n = outcomes.len().max(1) as f64;
    Score {
        accuracy: outcomes.iter().filter(|o| o.correct).count() as f64 / n,
        mean_tokens: outcomes.iter().map(|o| o.tokens).sum::<usize>() as f64 / n,
    }
}

/// Whether `a` is better than `b`: more accurate, or as accurate for fewer
/// tokens.
fn better(a: &Score, b: &Score) -> bool {
    const SAME: f64 = 1e-9;
    a.accuracy > b.accuracy + SAME
        || (a.accuracy > b.accuracy - SAME && a.mean_tokens < b.mean_tokens - SAME)
}

/// The settings that replay best, among every gate, every beam count of
/// `beams` (`(beam count, outcomes)`, question by question as `greedy`)
/// and every threshold between two observed confidences, spending at most
/// the mean tokens of the best fixed strategy (greedy or one of the beam
/// searches).
pub fn fit(greedy: &[GreedyOutcome], beams: &[(usize, Vec<Outcome>)]) -> Result<Fitted> {
    if greedy.is_empty() {
        return Err(Error::Invalid("no questions to fit auto on".into()));
    }
    if beams.is_empty() {
        return Err(Error::Invalid(
            "fitting auto needs at least one beam search's outcomes".into(),
        ));
    }
    for (n, outcomes) in beams {
        if outcomes.len() != greedy.len() {
            return Err(Error::Invalid(format!(
                "beam@{n} has {} outcomes for {} questions",
                outcomes.len(),
                greedy.len()
            )));
        }
    }
    let greedy_outcomes: Vec<Outcome> = greedy.iter().map(|g| g.outcome).collect();
    let mut best_fixed = ("greedy".to_string(), score(&greedy_outcomes));
    for (n, outcomes) in beams {
        let s = score(outcomes);
        if better(&s, &best_fixed.1) {
            best_fixed = (format!("beam@{n}"), s);
        }
    }
    let cap = best_fixed.1.mean_tokens + 1e-9;

    let mut best: Option<(AutoSettings, Score)> = None;
    for gate in [Gate::AnswerLine, Gate::Trace] {
        for threshold in thresholds(greedy, gate) {
            for (n, outcomes) in beams {
                let settings = AutoSettings {
                    gate,
                    confidence: threshold,
                    beams: *n,
                };
                let s = replay(greedy, outcomes, &settings);
                if s.mean_tokens <= cap && best.as_ref().is_none_or(|(_, b)| better(&s, b)) {
                    best = Some((settings, s));
                }
            }
        }
    }
    // The threshold 0 (greedy unless it gave no answer) spends no more
    // than greedy, so something fits unless escalating the unanswered
    // questions alone costs more than the best fixed strategy.
    let (settings, s) = best.ok_or_else(|| {
        Error::Invalid(format!(
            "no setting of auto spends at most the {:.1} tokens of {}",
            best_fixed.1.mean_tokens, best_fixed.0
        ))
    })?;
    Ok(Fitted {
        settings,
        score: s,
        best_fixed: best_fixed.0,
        best_fixed_score: best_fixed.1,
    })
}

/// 0 (escalate only unanswered questions), the midpoints between
/// consecutive distinct confidences of the answered questions, and a
/// threshold above them all (escalate every question).
fn thresholds(greedy: &[GreedyOutcome], gate: Gate) -> Vec<f64> {
    let mut seen: Vec<f64> = greedy
        .iter()
        .filter(|g| g.answered)
        .map(|g| g.confidence(gate))
        .filter(|c| c.is_finite())
        .collect();
    seen.sort_by(f64::total_cmp);
    seen.dedup();
    let mut out = vec![0.0];
    out.extend(seen.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    out.push(seen.last().map_or(1.0, |&m| m.max(1.0)) + 0.01);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(correct: bool, tokens: usize, answer: f64, trace: f64) -> GreedyOutcome {
        GreedyOutcome {
            outcome: Outcome { correct, tokens },
            answered: true,
            answer_confidence: answer,
            trace_confidence: trace,
        }
    }

    fn o(correct: bool, tokens: usize) -> Outcome {
        Outcome { correct, tokens }
    }

    #[test]
    fn replay_spends_greedy_then_the_beams_and_reuses_greedy_for_two() {
        let greedy = [g(true, 10, 0.9, 0.5), g(false, 10, 0.3, 0.9)];
        let beams = [o(false, 40), o(true, 40)];
        let four = AutoSettings {
            gate: Gate::AnswerLine,
            confidence: 0.5,
            beams: 4,
        };
        // The first stays greedy (right), the second escalates (right).
        assert_eq!(
            replay(&greedy, &beams, &four),
            Score {
                accuracy: 1.0,
                mean_tokens: (10.0 + 10.0 + 40.0) / 2.0
            }
        );
        let two = AutoSettings { beams: 2, ..four };
        assert_eq!(
            replay(&greedy, &beams, &two).mean_tokens,
            (10.0 + 40.0) / 2.0
        );
        // Gated on the trace, the first escalates (wrong), the second not.
        let trace = AutoSettings {
            gate: Gate::Trace,
            confidence: 0.6,
            ..four
        };
        assert_eq!(replay(&greedy, &beams, &trace).accuracy, 0.0);
    }

    #[test]
    fn fit_finds_the_gate_that_separates_right_from_wrong() {
        // Greedy is right exactly when its trace is likely; its answer
        // line is equally sure either way. The beams fix the rest.
        let greedy: Vec<GreedyOutcome> = (0..20)
            .map(|i| g(i % 2 == 0, 10, 0.95, if i % 2 == 0 { 0.9 } else { 0.6 }))
            .collect();
        let beams: Vec<Outcome> = (0..20).map(|_| o(true, 30)).collect();
        let f = fit(&greedy, &[(4, beams)]).unwrap();
        assert_eq!(f.best_fixed, "beam@4");
        assert_eq!(f.settings.gate, Gate::Trace);
        assert!(f.settings.confidence > 0.6 && f.settings.confidence <= 0.9);
        assert_eq!(f.score.accuracy, 1.0);
        assert_eq!(f.score.mean_tokens, 10.0 + 15.0);
    }

    #[test]
    fn fit_keeps_greedy_when_the_beams_do_worse() {
        let greedy: Vec<GreedyOutcome> = (0..10).map(|i| g(i < 6, 10, 0.5, 0.5)).collect();
        let beams: Vec<Outcome> = (0..10).map(|i| o(i < 4, 30)).collect();
        let f = fit(&greedy, &[(2, beams.clone()), (4, beams)]).unwrap();
        assert_eq!(f.best_fixed, "greedy");
        assert_eq!(f.score.accuracy, 0.6);
        assert_eq!(f.score.mean_tokens, 10.0);
    }

    #[test]
    fn policies_are_read_from_json_and_checked() {
        let s = AutoSettings::from_json(r#"{"gate": "trace", "confidence": 0.9, "beams": 4}"#);
        assert_eq!(
            s.unwrap(),
            AutoSettings {
                gate: Gate::Trace,
                confidence: 0.9,
                beams: 4
            }
        );
        for bad in [
            r#"{"gate": "trace", "confidence": 0.9}"#,
            r#"{"gate": "vibes", "confidence": 0.9, "beams": 4}"#,
            r#"{"gate": "trace", "confidence": 0.9, "beams": 4, "extra": 1}"#,
            r#"{"gate": "trace", "confidence": 0.9, "beams": 0}"#,
        ] {
            assert!(AutoSettings::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let greedy = [g(true, 10, 0.9, 0.9)];
        assert!(fit(&greedy, &[]).is_err());
        assert!(fit(&greedy, &[(4, vec![])]).is_err());
        assert!(fit(&[], &[(4, vec![])]).is_err());
        for (confidence, beams) in [(f64::NAN, 4), (-0.1, 4), (3.0, 4), (0.5, 0), (0.5, 999)] {
            let s = AutoSettings {
                gate: Gate::Trace,
                confidence,
                beams,
            };
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
