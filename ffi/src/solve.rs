//! Answering with test-time scaling ([`Engine::solve`]), the
//! self-verification cascade ([`Engine::verify`]) and both together with
//! the trace kept ([`Engine::solve_checked`]).

use std::sync::Arc;
use std::time::Duration;

use edgeloop_core::scaling::{self, Limits, PromptStyle, SolveOptions, Strategy};
use edgeloop_core::trace::{TraceRecord, Verification};
use edgeloop_core::verify::{self, Candidate, Stage, VerifyOptions};

use crate::engine::{Engine, Shared};
use crate::error::{count, guard, EdgeloopError};
use crate::traces::Traces;

/// Most samples or votes one call may ask for.
const MAX_SAMPLES: usize = edgeloop_core::session::MAX_PARALLEL;

/// How to answer a question. Every field has a default.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SolveConfig {
    /// `greedy`, `self-consistency`, `best-of-n`, `confidence`,
    /// `adaptive`, `budget`, `beam`, `step-search` or `auto` (greedy when
    /// the model is confident, a beam wave otherwise).
    #[uniffi(default = "auto")]
    pub strategy: String,
    /// Samples drawn (self-consistency, best-of-n, confidence), beams
    /// (beam, and auto's wave), candidates per step (step-search) or the
    /// cap (adaptive).
    #[uniffi(default = 16)]
    pub samples: u32,
    /// Adaptive and auto: samples drawn together per wave.
    #[uniffi(default = 4)]
    pub wave: u32,
    /// Adaptive and auto: stop once the leading answer leads with this
    /// probability.
    #[uniffi(default = 0.95)]
    pub threshold: f64,
    /// `number`, `choice` or `text`: how answers are read and compared.
    #[uniffi(default = "number")]
    pub kind: String,
    /// Longest reasoning per sample, in tokens.
    #[uniffi(default = 256)]
    pub max_tokens: u32,
    #[uniffi(default = 0.3)]
    pub temperature: f32,
    #[uniffi(default = 0.95)]
    pub top_p: f32,
    #[uniffi(default = 0)]
    pub seed: u64,
    /// Cap on tokens over all samples.
    #[uniffi(default = None)]
    pub max_total_tokens: Option<u64>,
    /// Cap on wall time, in seconds.
    #[uniffi(default = None)]
    pub max_seconds: Option<f64>,
    /// Auto: a policy fitted to the app's kind of question (the JSON that
    /// `edgeloop eval --fit-policy` writes): its confidence gate, threshold
    /// and beam count replace the defaults and `samples`.
    #[uniffi(default = None)]
    pub auto_policy: Option<String>,
}

impl Default for SolveConfig {
    fn default() -> Self {
        SolveConfig {
            strategy: "auto".into(),
            samples: 16,
            wave: 4,
            threshold: 0.95,
            kind: "number".into(),
            max_tokens: 256,
            temperature: scaling::DEFAULT_TEMPERATURE,
            top_p: 0.95,
            seed: 0,
            max_total_tokens: None,
            max_seconds: None,
            auto_policy: None,
        }
    }
}

/// What compute was spent.
#[derive(Clone, Copy, Debug, uniffi::Record)]
pub struct Spend {
    pub samples: u32,
    /// Tokens generated over all samples.
    pub tokens: u64,
    pub wall_seconds: f64,
    /// Whether a cap stopped the call.
    pub limited: bool,
}

/// One sampled reasoning trace.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SampleResult {
    pub text: String,
    /// The extracted answer; `None` is an abstention.
    pub answer: Option<String>,
    pub mean_logprob: f32,
    pub tokens: u32,
}

/// An answer and how it was reached.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SolveResult {
    pub strategy: String,
    pub answer: Option<String>,
    /// The answer's vote share (one sample: its mean token probability).
    pub confidence: f64,
    pub samples: Vec<SampleResult>,
    pub spend: Spend,
}

/// How to check an answer. Every field has a default.
#[derive(Clone, Debug, uniffi::Record)]
pub struct VerifyConfig {
    /// Among `agreement`, `cycle`, `factuality`, `correctness` (empty: all
    /// four); they run in that order and every one must accept.
    #[uniffi(default = [])]
    pub stages: Vec<String>,
    /// Judgements per stage; all must accept.
    #[uniffi(default = 3)]
    pub votes: u32,
    /// Agreement stage: smallest vote share accepted.
    #[uniffi(default = 0.5)]
    pub min_share: f64,
    /// Longest judgement, in tokens.
    #[uniffi(default = 128)]
    pub judge_tokens: u32,
    #[uniffi(default = 0)]
    pub seed: u64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            stages: Vec::new(),
            votes: 3,
            min_share: 0.5,
            judge_tokens: 128,
            seed: 0,
        }
    }
}

/// One judgement.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Vote {
    pub stage: String,
    /// `Some(true)` accepted, `Some(false)` rejected, `None` no verdict.
    pub verdict: Option<bool>,
    pub judge_text: String,
}

/// The cascade's outcome.
#[derive(Clone, Debug, uniffi::Record)]
pub struct VerifyResult {
    pub accepted: bool,
    pub votes: Vec<Vote>,
    pub spend: Spend,
}

/// A checked answer, and the trace kept for it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct CheckedSolution {
    pub solution: SolveResult,
    pub verification: VerifyResult,
    /// The stored trace's id; `None` when no store was given.
    pub trace_id: Option<String>,
}

#[uniffi::export]
impl Engine {
    /// Answers `question`, spending compute as `config` says.
    pub fn solve(
        &self,
        question: String,
        config: SolveConfig,
    ) -> Result<SolveResult, EdgeloopError> {
        guard(|| solve_core(&self.shared, &question, &config).map(|s| solve_result(&s)))
    }

    /// [`Engine::solve`] without blocking the caller.
    pub async fn solve_async(
        &self,
        question: String,
        config: SolveConfig,
    ) -> Result<SolveResult, EdgeloopError> {
        let shared = self.shared.clone();
        crate::blocking::spawn("edgeloop-solve", move || {
            solve_core(&shared, &question, &config).map(|s| solve_result(&s))
        })
        .await
    }

    /// Asks the model to check `answer` to `question` (with the reasoning
    /// behind it, which may be empty).
    pub fn verify(
        &self,
        question: String,
        answer: String,
        reasoning: String,
        config: VerifyConfig,
    ) -> Result<VerifyResult, EdgeloopError> {
        guard(|| {
            let options = verify_options(&self.shared, &config)?;
            let v = verify::verify(
                &self.shared.core,
                &Candidate {
                    question: &question,
                    answer: &answer,
                    reasoning: &reasoning,
                    vote_share: None,
                },
                &options,
            )?;
            Ok(verify_result(&v))
        })
    }

    /// Solves, verifies the answer, and keeps the trace in `traces` (when
    /// given), marked `consent` for reporting to the host.
    pub fn solve_checked(
        &self,
        question: String,
        solve: SolveConfig,
        verify: VerifyConfig,
        traces: Option<Arc<Traces>>,
        consent: bool,
    ) -> Result<CheckedSolution, EdgeloopError> {
        guard(|| {
            let options = verify_options(&self.shared, &verify)?;
            let s = solve_core(&self.shared, &question, &solve)?;
            let v = verify::verify_solution(&self.shared.core, &question, &s, &options)?;
            let trace_id = match traces {
                Some(store) => {
                    let record = TraceRecord::from_solution(
                        self.shared.trace_model()?,
                        &question,
                        &s.prompt,
                        &s,
                        v.clone(),
                        consent,
                    );
                    store.insert(&record)?;
                    Some(record.id)
                }
                None => None,
            };
            Ok(CheckedSolution {
                solution: solve_result(&s),
                verification: verify_result(&v),
                trace_id,
            })
        })
    }
}

fn solve_core(
    shared: &Shared,
    question: &str,
    config: &SolveConfig,
) -> Result<scaling::Solution, EdgeloopError> {
    let options = solve_options(config)?;
    Ok(scaling::solve(&shared.core, question, &options)?)
}

/// Checks `config` and builds core's options from it.
fn solve_options(config: &SolveConfig) -> Result<SolveOptions, EdgeloopError> {
    let samples = count("samples", config.samples, MAX_SAMPLES)?;
    let wave = count("wave", config.wave, MAX_SAMPLES)?;
    if !(config.threshold > 0.0 && config.threshold < 1.0) {
        return Err(EdgeloopError::invalid(format!(
            "threshold = {} is not between 0 and 1",
            config.threshold
        )));
    }
    let strategy = match Strategy::parse(&config.strategy, samples)? {
        Strategy::Adaptive { window, .. } => Strategy::Adaptive {
            wave,
            max_samples: samples,
            threshold: config.threshold,
            window,
        },
        Strategy::Auto {
            gate,
            confidence,
            agreement,
            ..
        } => {
            let settings = match &config.auto_policy {
                Some(json) => scaling::AutoSettings::from_json(json)
                    .map_err(|e| EdgeloopError::invalid(format!("auto_policy: {e}")))?,
                None => scaling::AutoSettings {
                    gate,
                    confidence,
                    beams: samples,
                },
            };
            Strategy::Auto {
                gate: settings.gate,
                confidence: settings.confidence,
                max_samples: settings.beams,
                wave,
                threshold: config.threshold,
                agreement,
            }
        }
        other => other,
    };
    let max_wall = match config.max_seconds {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(EdgeloopError::invalid(format!(
                "max_seconds = {s} is not a positive number"
            )))
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let max_tokens = match config.max_total_tokens {
        Some(0) => {
            return Err(EdgeloopError::invalid(
                "max_total_tokens must be at least 1",
            ))
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    Ok(SolveOptions {
        strategy,
        kind: config
            .kind
            .parse()
            .map_err(|e| EdgeloopError::invalid(format!("kind: {e}")))?,
        max_tokens: config.max_tokens as usize,
        temperature: config.temperature,
        top_p: config.top_p,
        seed: config.seed,
        thinking: None,
        limits: Limits {
            max_tokens,
            max_wall,
        },
        instruction: None,
        prompt_style: PromptStyle::Auto,
    })
}

fn verify_options(shared: &Shared, config: &VerifyConfig) -> Result<VerifyOptions, EdgeloopError> {
    let mut o = VerifyOptions::for_engine(&shared.core);
    if !config.stages.is_empty() {
        o.stages = config
            .stages
            .iter()
            .map(|s| Stage::parse(s))
            .collect::<Result<_, _>>()?;
    }
    o.votes = count("votes", config.votes, MAX_SAMPLES)?;
    o.min_share = config.min_share;
    o.max_tokens = config.judge_tokens as usize;
    o.seed = config.seed;
    Ok(o)
}

fn solve_result(s: &scaling::Solution) -> SolveResult {
    SolveResult {
        strategy: s.strategy.to_string(),
        answer: s.answer.clone(),
        confidence: s.confidence,
        samples: s
            .samples
            .iter()
            .map(|x| SampleResult {
                text: x.text.clone(),
                answer: x.answer.clone(),
                mean_logprob: x.mean_logprob,
                tokens: x.tokens as u32,
            })
            .collect(),
        spend: Spend {
            samples: s.spend.samples as u32,
            tokens: s.spend.tokens as u64,
            wall_seconds: s.spend.wall_secs,
            limited: s.spend.limited,
        },
    }
}

fn verify_result(v: &Verification) -> VerifyResult {
    VerifyResult {
        accepted: v.accepted,
        votes: v
            .votes
            .iter()
            .map(|x| Vote {
                stage: x.stage.clone(),
                verdict: x.verdict,
                judge_text: x.judge_text.clone(),
            })
            .collect(),
        spend: Spend {
            samples: v.spend.samples as u32,
            tokens: v.spend.tokens,
            wall_seconds: v.spend.wall_secs,
            limited: false,
        },
    }
}
