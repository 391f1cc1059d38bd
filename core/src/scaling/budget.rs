//! Budget forcing (s1, Muennighoff et al. 2025): the caller sets how long
//! the model may think.
//!
//! The model reasons until it writes its end-of-thinking delimiter: `</think>`
//! for models that think in tags (Qwen3), otherwise the `Answer:` line the
//! solve prompt asks for. When it gets there before `min_thinking` tokens,
//! the delimiter is dropped and "Wait" appended, so the model reconsiders;
//! when it reaches `max_thinking` tokens, the delimiter is forced and only
//! the answer is generated after it. Each phase continues the previous one
//! in the same [`Session`], so the shared prefix is not recomputed.

use std::ops::ControlFlow;

use super::run::{within, Run};
use super::Thinking;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampler::TokenChoice;
use crate::session::{FinishReason, GenerateOptions, Generation, Session, StreamEvent};

/// The text that ends a model's reasoning, and what is appended to force it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delimiters {
    /// What the model writes when it stops thinking.
    pub end: &'static str,
    /// What is appended to end thinking (the delimiter on a line of its own).
    pub forced_end: &'static str,
    /// What is appended to make the model think on.
    pub wait: &'static str,
}

impl Delimiters {
    /// `</think>` for models whose vocabulary has think tags, else the
    /// `Answer:` line.
    pub fn for_engine(engine: &Engine) -> Self {
        if engine.thinks_in_tags() {
            Delimiters {
                end: "</think>",
                forced_end: "\n</think>\n\n",
                wait: "Wait",
            }
        } else {
            Delimiters {
                end: "Answer:",
                forced_end: "\nAnswer:",
                wait: "Wait",
            }
        }
    }
}

/// Limits of one budget-forced trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinkingBudget {
    /// Thinking shorter than this is extended with "Wait".
    pub min_thinking: usize,
    /// Thinking is ended at this many tokens.
    pub max_thinking: usize,
    /// Most "Wait"s appended (then an early end is accepted).
    pub max_waits: usize,
    /// Most tokens of the answer after thinking ends.
    pub answer_tokens: usize,
}

impl ThinkingBudget {
    fn validate(&self) -> Result<()> {
        if self.max_thinking == 0
            || self.min_thinking > self.max_thinking
            || self.answer_tokens == 0
        {
            return Err(Error::Invalid(format!(
                "thinking budget needs 0 <= min_thinking ({}) <= max_thinking ({}), max_thinking >= 1 and answer_tokens >= 1 ({})",
                self.min_thinking, self.max_thinking, self.answer_tokens
            )));
        }
        Ok(())
    }
}

/// A budget-forced trace.
#[derive(Clone, Debug)]
pub struct ForcedTrace {
    /// Everything after the prompt: reasoning, inserted "Wait"s, the
    /// delimiter and the answer.
    pub text: String,
    /// The tokens the model chose (appended text is not among them).
    pub tokens: Vec<TokenChoice>,
    /// Tokens the model spent thinking.
    pub thinking_tokens: usize,
    /// "Wait"s appended.
    pub waits: usize,
    /// Whether thinking was cut at `max_thinking`.
    pub forced_end: bool,
}

/// Generates one trace after `prompt` under `budget`. `options` gives the
/// sampler and cancellation; its `max_tokens` is replaced per phase, and its
/// stop strings end thinking like the end delimiter and end the answer (a
/// few-shot prompt's next example). `on_event` sees every generated token.
pub fn think_with_budget(
    session: &mut Session<'_>,
    engine: &Engine,
    prompt: &[u32],
    budget: &ThinkingBudget,
    options: &GenerateOptions,
    on_event: &mut dyn FnMut(StreamEvent<'_>) -> ControlFlow<()>,
) -> Result<ForcedTrace> {
    budget.validate()?;
    let delims = Delimiters::for_engine(engine);
    let tokenizer = engine.tokenizer();
    // Appended text: a few tokens per "Wait" and for the delimiter.
    let appended = 8 * (budget.max_waits + 1);
    let needed = prompt.len() + budget.max_thinking + appended + budget.answer_tokens;
    if needed > engine.context_size() {
        return Err(Error::ContextOverflow {
            prompt: prompt.len(),
            max_tokens: needed - prompt.len(),
            context: engine.context_size(),
        });
    }

    let mut trace = ForcedTrace {
        text: String::new(),
        tokens: Vec::new(),
        thinking_tokens: 0,
        waits: 0,
        forced_end: false,
    };
    let mut stopped = false;
    loop {
        let ids = continued(prompt, tokenizer, &trace.text)?;
        let mut stop_strings = vec![delims.end.to_string()];
        stop_strings.extend(options.stop_strings.iter().cloned());
        let phase = GenerateOptions {
            max_tokens: budget.max_thinking - trace.thinking_tokens,
            stop_strings,
            ..options.clone()
        };
        let g = session.generate(&ids, &phase, on_event)?;
        trace.thinking_tokens += g.tokens.len();
        trace.text.push_str(&g.text);
        trace.tokens.extend(g.tokens);
        match g.finish_reason {
            FinishReason::Length => {
                trace.forced_end = true;
                break;
            }
            FinishReason::Cancelled => {
                stopped = true;
                break;
            }
            FinishReason::Stop | FinishReason::StopString => {
                if trace.thinking_tokens < budget.min_thinking && trace.waits < budget.max_waits {
                    let kept = trace.text.trim_end().len();
                    trace.text.truncate(kept);
                    trace.text.push('\n');
                    trace.text.push_str(delims.wait);
                    trace.waits += 1;
                } else {
                    break;
                }
            }
        }
        if trace.thinking_tokens >= budget.max_thinking {
            trace.forced_end = true;
            break;
        }
    }
    if stopped {
        return Ok(trace);
    }
    // End thinking and let the model answer.
    let kept = trace.text.trim_end().len();
    trace.text.truncate(kept);
    trace.text.push_str(delims.forced_end);
    let ids = continued(prompt, tokenizer, &trace.text)?;
    let phase = GenerateOptions {
        max_tokens: budget.answer_tokens,
        ..options.clone()
    };
    let g = session.generate(&ids, &phase, on_event)?;
    trace.text.push_str(&g.text);
    trace.tokens.extend(g.tokens);
    Ok(trace)
}

/// The prompt followed by the trace so far. The trace is the model's own
/// text plus delimiters this module wrote, so tags in it are read as tags.
fn continued(
    prompt: &[u32],
    tokenizer: &crate::tokenizer::Tokenizer,
    text: &str,
) -> Result<Vec<u32>> {
    let mut ids = prompt.to_vec();
    if !text.is_empty() {
        ids.extend(tokenizer.encode_with_special(text)?);
    }
    Ok(ids)
}

impl Run<'_, '_> {
    pub(super) fn budget(&mut self, budget: ThinkingBudget) -> Result<(Option<String>, f64)> {
        let opts = GenerateOptions {
            stop_strings: self.stops.clone(),
            ..Default::default()
        };
        let (limits, deadline, mut spent, mut limited) =
            (self.options.limits, self.deadline, self.spent, false);
        let trace = think_with_budget(
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
            end: None,
            finish_reason: crate::session::FinishReason::Stop,
            timings: Default::default(),
        };
        let (answer, mean) = self.record(g, Some(1.0));
        Ok((answer, (mean as f64).exp()))
    }
}
