//! `edgeloop solve` and the test-time scaling settings it shares with
//! `edgeloop eval`.

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use edgeloop_core::scaling::{self, Limits, SolveOptions, Strategy};

use crate::ModelArgs;

/// How much compute to spend per question, beyond the strategy's name.
#[derive(Args, Clone, Debug)]
pub struct ScalingArgs {
    /// Sample count (self-consistency, best-of-n, confidence) or cap
    /// (adaptive, auto).
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// Answer kind: number, choice or text.
    #[arg(long, default_value = "number")]
    pub kind: String,
    /// Longest trace per sample.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
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
    /// Cap on tokens generated over all samples of one question.
    #[arg(long)]
    pub max_total_tokens: Option<usize>,
    /// Text appended to each question (default: a request to think step by
    /// step and end with an "Answer:" line).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Cap on wall time per question, in seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
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
            Strategy::Auto { max_samples, .. } => Strategy::Auto {
                confidence: self.confidence,
                max_samples,
                wave: self.wave,
                threshold: self.threshold,
            },
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
        })
    }
}

/// Arguments of `edgeloop solve`.
#[derive(Args)]
pub struct SolveArgs {
    #[command(flatten)]
    model: ModelArgs,
    question: String,
    /// greedy, self-consistency, best-of-n, confidence, adaptive, budget or auto.
    #[arg(long, default_value = "auto")]
    strategy: String,
    #[command(flatten)]
    scaling: ScalingArgs,
    /// Print the whole result (every sample) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &SolveArgs) -> Result<()> {
    let options = args.scaling.options(&args.strategy)?;
    let engine = args.model.load()?;
    let s = scaling::solve(&engine, &args.question, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("answer:     {}", s.answer.as_deref().unwrap_or("(none)"));
    println!("confidence: {:.2}", s.confidence);
    println!(
        "spend:      {} samples, {} tokens, {:.2} s ({}{})",
        s.spend.samples,
        s.spend.tokens,
        s.spend.wall_secs,
        s.strategy,
        if s.spend.limited {
            ", stopped by a limit"
        } else {
            ""
        }
    );
    if let Some(t) = s.thinking {
        println!(
            "thinking:   {} tokens, {} waits{}",
            t.thinking_tokens,
            t.waits,
            if t.forced_end {
                ", ended at the maximum"
            } else {
                ""
            }
        );
    }
    Ok(())
}
