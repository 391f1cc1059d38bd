//! `edgeloop solve` and the test-time scaling settings it shares with
//! `edgeloop eval`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use edgeloop_core::scaling::{self, Limits, SolveOptions, Strategy};
use edgeloop_core::trace::{self, TraceRecord, TraceStore, Verification};
use edgeloop_core::verify::{self, Candidate, Stage, VerifyOptions};
use edgeloop_core::Engine;

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
    /// Check the answer with the self-verification cascade and keep the
    /// trace in the trace store.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    verifier: VerifyArgs,
    /// The trace store (default: $EDGELOOP_TRACES, else traces.sqlite in
    /// edgeloop's data folder).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Verify without storing the trace.
    #[arg(long)]
    no_store: bool,
    /// Mark the stored trace as consented for reporting to the host.
    #[arg(long)]
    consent: bool,
    /// Print the whole result (every sample) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &SolveArgs) -> Result<()> {
    let options = args.scaling.options(&args.strategy)?;
    let (engine, path) = args.model.load_with_path()?;
    let s = scaling::solve(&engine, &args.question, &options)?;
    let mut checked = None;
    if args.verify {
        let vopts = args.verifier.options(&engine, args.scaling.seed)?;
        let v = verify::verify_solution(&engine, &args.question, &s, &vopts)?;
        if !args.no_store {
            let model = trace::ModelInfo {
                name: crate::pull::model_name(&path),
                sha256: edgeloop_core::manifest::sha256_file(&path)
                    .with_context(|| format!("hashing {}", path.display()))?,
            };
            let record = TraceRecord::from_solution(
                model,
                &args.question,
                &s.prompt,
                &s,
                v.clone(),
                args.consent,
            );
            let store_path = args.store.clone().unwrap_or_else(trace::default_path);
            let mut store = TraceStore::open(&store_path)?;
            let inserted = store.insert(&record)?;
            eprintln!(
                "trace {} ({inserted:?}) in {}",
                record.id,
                store_path.display()
            );
        }
        checked = Some(v);
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            solution: &'a scaling::Solution,
            verification: Option<&'a Verification>,
        }
        let out = Out {
            solution: &s,
            verification: checked.as_ref(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
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
    if let Some(v) = &checked {
        print_verification(v, false)?;
    }
    Ok(())
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

/// Arguments of `edgeloop verify`.
#[derive(Args)]
pub struct VerifyCommandArgs {
    #[command(flatten)]
    model: ModelArgs,
    question: String,
    answer: String,
    /// The reasoning that led to the answer.
    #[arg(long, default_value = "")]
    reasoning: String,
    #[command(flatten)]
    verifier: VerifyArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print every vote as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_verify(args: &VerifyCommandArgs) -> Result<()> {
    let engine = args.model.load()?;
    let options = args.verifier.options(&engine, args.seed)?;
    let v = verify::verify(
        &engine,
        &Candidate {
            question: &args.question,
            answer: &args.answer,
            reasoning: &args.reasoning,
            vote_share: None,
        },
        &options,
    )?;
    print_verification(&v, args.json)
}

fn print_verification(v: &Verification, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    println!(
        "verified:   {}",
        if v.accepted { "accepted" } else { "rejected" }
    );
    for vote in &v.votes {
        let verdict = match vote.verdict {
            Some(true) => "Y",
            Some(false) => "N",
            None => "-",
        };
        let first = vote.judge_text.lines().last().unwrap_or("").trim();
        println!("  {:<12} {verdict}  {}", vote.stage, clip(first, 72));
    }
    println!(
        "checking:   {} judgements, {} tokens, {:.2} s",
        v.spend.samples, v.spend.tokens, v.spend.wall_secs
    );
    Ok(())
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
