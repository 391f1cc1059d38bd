//! The model's own judgement of a partial solution, read from one forward
//! pass: the judge prompt ends with `Verdict: [[` in the assistant's turn
//! (after the plain-text prompt, for base models), and the score is the
//! probability of `Y` against `N` as the next token. Nothing is sampled.

use crate::engine::{Engine, Prompt};
use crate::error::{Error, Result};
use crate::scaling::PromptStyle;
use crate::session::Session;
use crate::tokenizer::ChatMessage;

/// Text the judge's reply is started with; the next token is the verdict.
const VERDICT_PREFIX: &str = "Verdict: [[";

/// Scores partial solutions with the model as a judge.
#[derive(Clone, Debug)]
pub struct StepJudge {
    /// The judge's question, with `{question}` and `{partial}` placeholders.
    template: String,
    /// A chat turn, or plain text for base models.
    style: PromptStyle,
    /// The tokens of `VERDICT_PREFIX`, appended to the rendered judge prompt.
    prefix: Vec<u32>,
    yes: u32,
    no: u32,
}

/// One judgement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// Probability of `[[Y` against `[[N`, in [0, 1].
    pub p_yes: f64,
    /// Prompt tokens computed for it (the rest came from the judge
    /// session's cache).
    pub computed_tokens: usize,
}

/// The built-in judge prompt.
pub const STEP_JUDGE_PROMPT: &str = "Question: {question}\n\nPartial solution:\n{partial}\n\n\
     Check the steps so far. Is every step correct? \
     Reply [[Y]] if they are, or [[N]] if any step is wrong.";

impl StepJudge {
    /// A judge for `engine`'s model with the built-in prompt, put as a chat
    /// turn or as plain text (`style`, resolved for the engine). Fails when
    /// the tokenizer cannot give `Y` and `N` tokens of their own after `[[`.
    pub fn new(engine: &Engine, style: PromptStyle) -> Result<Self> {
        Self::with_prompt(engine, style, STEP_JUDGE_PROMPT)
    }

    /// A judge with `template` (placeholders `{question}` and `{partial}`).
    pub fn with_prompt(engine: &Engine, style: PromptStyle, template: &str) -> Result<Self> {
        if !template.contains("{partial}") {
            return Err(Error::Invalid(
                "step judge prompt has no {partial} placeholder".into(),
            ));
        }
        let tok = engine.tokenizer();
        let prefix = tok.encode(VERDICT_PREFIX)?;
        let letter = |c: &str| -> Result<u32> {
            let ids = tok.encode(&format!("{VERDICT_PREFIX}{c}"))?;
            match ids.strip_prefix(prefix.as_slice()) {
                Some([id]) => Ok(*id),
                _ => Err(Error::Invalid(format!(
                    "the tokenizer does not end {VERDICT_PREFIX:?} + {c:?} with a token for {c:?} alone, \
                     so the verdict cannot be read from one next-token distribution"
                ))),
            }
        };
        Ok(StepJudge {
            template: template.to_string(),
            style: style.resolve(engine),
            yes: letter("Y")?,
            no: letter("N")?,
            prefix,
        })
    }

    /// Token ids of the judge prompt for `partial`, ending just before the
    /// verdict letter.
    pub fn prompt(&self, engine: &Engine, question: &str, partial: &str) -> Result<Vec<u32>> {
        let text = crate::verify::prompts::fill_with(
            &self.template,
            &[("{question}", question), ("{partial}", partial)],
        );
        let mut ids = match self.style {
            PromptStyle::FewShot => engine.encode(&Prompt::Text(format!("{text}\n\n")))?,
            _ => engine.encode_chat(&[ChatMessage::user(text)], Some(false))?,
        };
        ids.extend_from_slice(&self.prefix);
        Ok(ids)
    }

    /// The probability that `partial` is correct so far, from one forward
    /// pass of `session` over the judge prompt (sharing what it can with the
    /// session's previous judgement).
    pub fn judge(
        &self,
        session: &mut Session<'_>,
        question: &str,
        partial: &str,
    ) -> Result<Judgement> {
        let ids = self.prompt(session.engine(), question, partial)?;
        let cached = session.reusable_prefix(&ids);
        let logits = session.logits_after(&ids)?;
        Ok(Judgement {
            p_yes: self.p_yes(logits),
            computed_tokens: ids.len() - cached,
        })
    }

    /// `P(Y) / (P(Y) + P(N))` from next-token logits.
    pub fn p_yes(&self, logits: &[f32]) -> f64 {
        let (y, n) = (logits[self.yes as usize], logits[self.no as usize]);
        1.0 / (1.0 + ((n - y) as f64).exp())
    }
}
