//! The test-time scaling and verifier settings `edgeloop solve`, `edgeloop
//! eval` and `edgeloop-trainer eval|round` share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use edgeloop_core::scaling::{self, Limits, SolveOptions, Strategy};
use edgeloop_core::verify::{Stage, VerifyOptions};
use edgeloop_core::Engine;

/// How much compute to spend per question, beyond the strategy's name.
#[derive(Args, Clone, Debug)]
pub struct ScalingArgs {
    /// Sample count (self-consistency, best-of-n, confidence), beams
    /// (beam), candidates per step (step-search) or cap (adaptive, auto).
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// Answer kind: number, choice or text.
    #[arg(long, default_value = "number")]
    pub kind: String,
    /// Longest trace per sample.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature of the voting strategies.
    #[arg(long, default_value_t = scaling::DEFAULT_TEMPERATURE)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Adaptive and auto: samples drawn together per wave.
    #[arg(long, default_value_t = 4)]
    pub wave: usize,
    /// Adaptive and auto: stop when the leading answer leads with this
    /// probability.
    #[arg(long, default_value_t = 0.95)]
    pub threshold: f64,
    /// Adaptive: also stop when the last N answers agree.
    #[arg(long)]
    pub window: Option<usize>,
    /// Budget strategy: thinking shorter than this is extended with "Wait".
    #[arg(long, default_value_t = 64)]
    pub min_thinking: usize,
    /// Budget strategy: thinking is ended here.
    #[arg(long, default_value_t = 256)]
    pub max_thinking: usize,
    /// Budget strategy: most "Wait"s appended.
    #[arg(long, default_value_t = 4)]
    pub max_waits: usize,
    /// Thinking on or off for models with a thinking switch (Qwen3).
    #[arg(long)]
    pub thinking: Option<bool>,
    /// Auto: the answer confidence that ends the search after one sample.
    #[arg(long, default_value_t = scaling::AUTO_CONFIDENCE)]
    pub confidence: f64,
    /// Auto: how that confidence is measured: `answer-line` (its least
    /// likely token) or `trace` (the whole trace's mean token probability).
    #[arg(long, default_value = "answer-line")]
    pub gate: String,
    /// Auto: a policy file (`edgeloop eval --fit-policy`) whose gate,
    /// confidence and beam count replace `--gate`, `--confidence` and
    /// `--samples`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Auto: the share of answers agreeing with the beam wave's that ends
    /// the search there.
    #[arg(long, default_value_t = scaling::AUTO_AGREEMENT)]
    pub agreement: f64,
    /// Beam: diverse beam groups (0: two when the beam count is even).
    #[arg(long, default_value_t = 0)]
    pub groups: usize,
    /// Beam: score penalty for a token an earlier group chose at the same
    /// step.
    #[arg(long, default_value_t = 0.5)]
    pub diversity: f32,
    /// Beam: rank the answered hypotheses by the model's own verdict
    /// instead of their likelihood.
    #[arg(long)]
    pub judge_beams: bool,
    /// Step search: partials kept per step (0: a quarter of the candidates).
    #[arg(long, default_value_t = 0)]
    pub keep: usize,
    /// Step search: most steps.
    #[arg(long, default_value_t = 8)]
    pub max_steps: usize,
    /// Step search: most tokens per step.
    #[arg(long, default_value_t = 64)]
    pub step_tokens: usize,
    /// Cap on tokens generated over all samples of one question.
    #[arg(long)]
    pub max_total_tokens: Option<usize>,
    /// Text appended to each question (default: a request to end with an
    /// "Answer:" line); in a few-shot prompt, its first line (default: none).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Cap on wall time per question, in seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// How questions are put to the model: a chat turn (`chat`), worked
    /// examples to continue (`few-shot`, for base models), or `auto`: chat
    /// when the model file has a chat template.
    #[arg(long, default_value = "auto")]
    pub prompt_style: String,
}

impl ScalingArgs {
    /// Solve options for the strategy `name`.
    pub fn options(&self, name: &str) -> Result<SolveOptions> {
        let strategy = match Strategy::parse(name, self.samples)? {
            Strategy::Budget { .. } => Strategy::Budget {
                min_thinking: self.min_thinking,
                max_thinking: self.max_thinking,
                max_waits: self.max_waits,
            },
            Strategy::Adaptive { max_samples, .. } => Strategy::Adaptive {
                wave: self.wave,
                max_samples,
                threshold: self.threshold,
                window: self.window,
            },
            Strategy::Beam { beams, groups, .. } => Strategy::Beam {
                beams,
                groups: if self.groups == 0 {
                    groups
                } else {
                    self.groups
                },
                diversity: self.diversity,
                judge: self.judge_beams,
            },
            Strategy::StepSearch {
                candidates, keep, ..
            } => Strategy::StepSearch {
                candidates,
                keep: if self.keep == 0 { keep } else { self.keep },
                max_steps: self.max_steps,
                step_tokens: self.step_tokens,
            },
            Strategy::Auto { max_samples, .. } => {
                let settings = match &self.policy {
                    Some(path) => read_policy(path)?,
                    None => scaling::AutoSettings {
                        gate: self.gate.parse().map_err(|e| anyhow!("--gate: {e}"))?,
                        confidence: self.confidence,
                        beams: max_samples,
                    },
                };
                Strategy::Auto {
                    gate: settings.gate,
                    confidence: settings.confidence,
                    max_samples: settings.beams,
                    wave: self.wave,
                    threshold: self.threshold,
                    agreement: self.agreement,
                }
            }
            other => other,
        };
        let max_wall = match self.max_seconds {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                return Err(anyhow!("--max-seconds must be a positive number, not {s}"))
            }
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        };
        Ok(SolveOptions {
            strategy,
            kind: self.kind.parse().map_err(|e| anyhow!("{e}"))?,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            thinking: self.thinking,
            limits: Limits {
                max_tokens: self.max_total_tokens,
                max_wall,
            },
            instruction: self.instruction.clone(),
            prompt_style: self.prompt_style.parse().map_err(|e| anyhow!("{e}"))?,
        })
    }
}

/// Settings of the self-verification cascade.
#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    /// Verifier stages (agreement, cycle, factuality, correctness); they run
    /// in that order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "agreement,cycle,factuality,correctness"
    )]
    pub stages: Vec<String>,
    /// Judgements per stage; all must accept.
    #[arg(long, default_value_t = 3)]
    pub votes: usize,
    /// Agreement stage: smallest vote share accepted.
    #[arg(long, default_value_t = 0.5)]
    pub min_share: f64,
    /// Longest judgement, in tokens.
    #[arg(long, default_value_t = 128)]
    pub judge_tokens: usize,
    /// A TOML file replacing judge prompts (keys: infer_question, cycle,
    /// factuality, correctness).
    #[arg(long)]
    pub judge_prompts: Option<PathBuf>,
}

impl VerifyArgs {
    pub fn options(&self, engine: &Engine, seed: u64) -> Result<VerifyOptions> {
        let mut o = VerifyOptions::for_engine(engine);
        o.stages = self
            .stages
            .iter()
            .map(|s| Stage::parse(s))
            .collect::<Result<_, _>>()?;
        o.votes = self.votes;
        o.min_share = self.min_share;
        o.max_tokens = self.judge_tokens;
        o.seed = seed;
        if let Some(path) = &self.judge_prompts {
            o.prompts = o.prompts.with_overrides(path)?;
        }
        Ok(o)
    }
}

/// Largest policy file read: a few settings, far below this.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// Reads and checks an `auto` policy file.
pub fn read_policy(path: &Path) -> Result<scaling::AutoSettings> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading policy file {}", path.display()))?
        .len();
    if len > MAX_POLICY_BYTES {
        return Err(anyhow!(
            "policy file {} is {len} bytes; a policy is a few settings (at most {MAX_POLICY_BYTES} bytes)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading policy file {}", path.display()))?;
    scaling::AutoSettings::from_json(&text)
        .with_context(|| format!("policy file {}", path.display()))
}
