//! The self-verification cascade: the model checks its own answer before
//! the answer becomes a trace worth keeping.
//!
//! Stages run in order and stop at the first rejection:
//! 0. [`Stage::Agreement`]: the answer's vote share reaches a threshold
//!    (only when the strategy produced votes);
//! 1. [`Stage::Cycle`]: from the answer and its reasoning the model infers
//!    the question, then judges whether it asks what the original asked and
//!    whether the answer addresses it;
//! 2. [`Stage::Factuality`]: a strict search for wrong facts, numbers,
//!    formulas or logical flaws in the reasoning;
//! 3. [`Stage::Correctness`]: the model works out its own solution, then
//!    judges whether the answer is fully correct.
//!
//! Each judging stage asks the model `votes` times, sampled in parallel, and
//! passes only when every vote accepts. Verdicts are `[[Y]]` / `[[N]]`
//! ([`parse_verdict`]); a judge that ends without one is asked for it once
//! more by appending `Verdict: [[`, and no verdict at all is a rejection.
//! Reasoning inside `<think>` is stripped before judging. The prompts are
//! [`JudgePrompts`], built in per model family, overridable from a file.

pub mod prompts;
pub mod verdict;

use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sampler::SamplerConfig;
use crate::scaling::Solution;
use crate::session::{FinishReason, GenerateOptions, Session};
use crate::tokenizer::ChatMessage;
use crate::trace::{chosen_sample, TraceSpend, Verification, VerifierVote};

pub use crate::scaling::answer::strip_think;
pub use prompts::JudgePrompts;
pub use verdict::parse_verdict;

/// One check of the cascade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Stage {
    Agreement,
    Cycle,
    Factuality,
    Correctness,
}

impl Stage {
    /// Every stage, in cascade order.
    pub const ALL: [Stage; 4] = [
        Stage::Agreement,
        Stage::Cycle,
        Stage::Factuality,
        Stage::Correctness,
    ];

    /// The name recorded in votes and accepted by [`Stage::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Stage::Agreement => "agreement",
            Stage::Cycle => "cycle",
            Stage::Factuality => "factuality",
            Stage::Correctness => "correctness",
        }
    }

    /// Parses a stage name.
    pub fn parse(name: &str) -> Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown verifier stage {name:?} (known: agreement, cycle, factuality, correctness)"
                ))
            })
    }
}

/// Settings of the cascade.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Stages to run; they always run in cascade order.
    pub stages: Vec<Stage>,
    /// Judgements per stage, all of which must accept.
    pub votes: usize,
    /// Smallest vote share the agreement stage accepts.
    pub min_share: f64,
    /// Longest judgement.
    pub max_tokens: usize,
    /// Sampling of the judgements.
    pub temperature: f32,
    pub seed: u64,
    pub prompts: JudgePrompts,
}

impl VerifyOptions {
    /// Every stage, 3 votes, the built-in prompts of the engine's model family.
    pub fn for_engine(engine: &Engine) -> Self {
        VerifyOptions {
            stages: Stage::ALL.to_vec(),
            votes: 3,
            min_share: 0.5,
            max_tokens: 128,
            temperature: 0.7,
            seed: 0,
            prompts: JudgePrompts::for_family(engine.model().config().arch.name()),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.votes == 0 || self.votes > crate::session::MAX_PARALLEL {
            return Err(Error::Invalid(format!(
                "verifier votes {} out of range (1 to {})",
                self.votes,
                crate::session::MAX_PARALLEL
            )));
        }
        if !(0.0..=1.0).contains(&self.min_share) {
            return Err(Error::Invalid(format!(
                "agreement threshold {} is not in [0, 1]",
                self.min_share
            )));
        }
        if self.max_tokens == 0 {
            return Err(Error::ZeroMaxTokens);
        }
        Ok(())
    }
}

/// What is being checked.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    /// The reasoning that led to the answer (may be empty).
    pub reasoning: &'a str,
    /// The answer's share of the strategy's votes, when it voted.
    pub vote_share: Option<f64>,
}

/// Checks a solution: its answer, the reasoning of its chosen sample and
/// (for voting strategies) its vote share. A solution without an answer is
/// rejected without asking the model.
pub fn verify_solution(
    engine: &Engine,
    question: &str,
    solution: &Solution,
    options: &VerifyOptions,
) -> Result<Verification> {
    let Some(answer) = solution.answer.as_deref() else {
        return Ok(Verification {
            accepted: false,
            votes: vec![VerifierVote {
                stage: "answer".into(),
                verdict: None,
                judge_text: "the solution has no answer".into(),
            }],
            spend: TraceSpend::default(),
        });
    };
    let reasoning = chosen_sample(solution).map_or("", |s| s.text.as_str());
    let voted = solution.samples.len() > 1 && solution.strategy != "best-of-n";
    verify(
        engine,
        &Candidate {
            question,
            answer,
            reasoning,
            vote_share: voted.then_some(solution.confidence),
        },
        options,
    )
}

/// Runs the cascade on `candidate`.
pub fn verify(
    engine: &Engine,
    candidate: &Candidate<'_>,
    options: &VerifyOptions,
) -> Result<Verification> {
    options.validate()?;
    if candidate.question.trim().is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let start = Instant::now();
    let reasoning = strip_think(candidate.reasoning).unwrap_or_default();
    let mut judge = Judge {
        engine,
        session: engine.session(),
        options,
        votes: Vec::new(),
        samples: 0,
        tokens: 0,
        calls: 0,
    };
    let mut accepted = true;
    for stage in Stage::ALL
        .into_iter()
        .filter(|s| options.stages.contains(s))
    {
        let passed = match stage {
            Stage::Agreement => match candidate.vote_share {
                Some(share) => {
                    let ok = share >= options.min_share;
                    judge.votes.push(VerifierVote {
                        stage: stage.name().into(),
                        verdict: Some(ok),
                        judge_text: format!(
                            "vote share {share:.3} {} {:.3}",
                            if ok { ">=" } else { "<" },
                            options.min_share
                        ),
                    });
                    ok
                }
                None => continue,
            },
            Stage::Cycle => {
                let ask = prompts::fill(
                    &options.prompts.infer_question,
                    candidate.question,
                    candidate.answer,
                    &reasoning,
                    "",
                );
                let inferred = judge.infer(&ask)?;
                let prompt = prompts::fill(
                    &options.prompts.cycle,
                    candidate.question,
                    candidate.answer,
                    &reasoning,
                    &inferred,
                );
                judge.stage(
                    stage,
                    &prompt,
                    &format!("Inferred question: {inferred}\n\n"),
                )?
            }
            Stage::Factuality | Stage::Correctness => {
                let template = if stage == Stage::Factuality {
                    &options.prompts.factuality
                } else {
                    &options.prompts.correctness
                };
                let prompt = prompts::fill(
                    template,
                    candidate.question,
                    candidate.answer,
                    &reasoning,
                    "",
                );
                judge.stage(stage, &prompt, "")?
            }
        };
        if !passed {
            accepted = false;
            break;
        }
    }
    Ok(Verification {
        accepted,
        spend: TraceSpend {
            samples: judge.samples as u64,
            tokens: judge.tokens as u64,
            wall_secs: start.elapsed().as_secs_f64(),
        },
        votes: judge.votes,
    })
}

/// Text appended to a judgement that ended without a verdict.
const ASK_VERDICT: &str = "\nVerdict: [[";
/// Longest inferred question.
const INFER_TOKENS: usize = 64;

/// The model as a judge, counting what it spends.
struct Judge<'e, 'o> {
    engine: &'e Engine,
    session: Session<'e>,
    options: &'o VerifyOptions,
    votes: Vec<VerifierVote>,
    samples: usize,
    tokens: usize,
    /// Sampling calls so far: offsets the seed of the next.
    calls: u64,
}

impl Judge<'_, '_> {
    fn chat(&self, text: &str) -> Result<Vec<u32>> {
        self.engine.encode_chat(&[ChatMessage::user(text)], None)
    }

    /// The question the model infers (greedy, first line of its reply).
    fn infer(&mut self, prompt: &str) -> Result<String> {
        let ids = self.chat(prompt)?;
        let opts = GenerateOptions {
            max_tokens: INFER_TOKENS,
            ..Default::default()
        };
        let g = self
            .session
            .generate(&ids, &opts, &mut |_| ControlFlow::Continue(()))?;
        self.samples += 1;
        self.tokens += g.tokens.len();
        let visible = strip_think(&g.text).unwrap_or_default();
        Ok(visible
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string())
    }

    /// Asks `votes` judges in parallel; passes when all accept.
    fn stage(&mut self, stage: Stage, prompt: &str, note: &str) -> Result<bool> {
        let ids = self.chat(prompt)?;
        let opts = GenerateOptions {
            max_tokens: self.options.max_tokens,
            sampler: SamplerConfig {
                temperature: self.options.temperature,
                seed: self.options.seed.wrapping_add(self.calls * 1_000_003),
                ..Default::default()
            },
            ..Default::default()
        };
        self.calls += 1;
        let judged =
            self.session
                .generate_parallel(&ids, self.options.votes, &opts, &mut |_, _| {
                    ControlFlow::Continue(())
                })?;
        self.samples += judged.len();
        let mut all = true;
        for g in judged {
            self.tokens += g.tokens.len();
            let mut text = g.text;
            let mut verdict = parse_verdict(&text);
            if verdict.is_none() && strip_think(&text).is_some() {
                text = self.ask_verdict(&ids, text)?;
                verdict = parse_verdict(&text);
            }
            all &= verdict == Some(true);
            self.votes.push(VerifierVote {
                stage: stage.name().into(),
                verdict,
                judge_text: format!("{note}{text}"),
            });
        }
        Ok(all)
    }

    /// Continues a judgement with `Verdict: [[` and reads the reply.
    fn ask_verdict(&mut self, prompt: &[u32], text: String) -> Result<String> {
        let mut text = text.trim_end().to_string();
        text.push_str(ASK_VERDICT);
        let mut ids = prompt.to_vec();
        ids.extend(self.engine.tokenizer().encode_with_special(&text)?);
        let opts = GenerateOptions {
            max_tokens: 4,
            stop_strings: vec!["]]".into()],
            ..Default::default()
        };
        let g = self
            .session
            .generate(&ids, &opts, &mut |_| ControlFlow::Continue(()))?;
        self.tokens += g.tokens.len();
        text.push_str(&g.text);
        if g.finish_reason == FinishReason::StopString {
            text.push_str("]]");
        }
        Ok(text)
    }
}
