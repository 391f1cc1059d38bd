//! `edgeloop eval`: accuracy and spend of several strategies side by side
//! on a task file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use edgeloop_core::scaling::{self, normalize, SolveOptions, Strategy};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::ModelArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL file of `{"question", "answer"}` objects.
    #[arg(long)]
    tasks: PathBuf,
    /// Strategies to compare (greedy, self-consistency, best-of-n, confidence, adaptive, auto).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "greedy,self-consistency,adaptive,auto"
    )]
    strategy: Vec<String>,
    /// Sample count (self-consistency) or cap (adaptive, auto).
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Only the first N tasks.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 192)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the results here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct StrategyResult {
    strategy: String,
    questions: usize,
    accuracy: f64,
    mean_samples: f64,
    mean_tokens: f64,
    mean_wall_secs: f64,
    answers: Vec<Option<String>>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let engine = args.model.load()?;
    let mut tasks = crate::tasks::read(&args.tasks)?;
    if let Some(n) = args.limit {
        tasks.truncate(n);
    }
    let strategies = args
        .strategy
        .iter()
        .map(|s| Strategy::parse(s, args.samples))
        .collect::<Result<Vec<_>, _>>()?;
    let bar = ProgressBar::new((tasks.len() * strategies.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    for strategy in strategies {
        bar.set_message(strategy.name());
        let options = SolveOptions {
            strategy: strategy.clone(),
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..Default::default()
        };
        let (mut correct, mut samples, mut tokens, mut wall) = (0usize, 0usize, 0usize, 0f64);
        let mut answers = Vec::new();
        for task in &tasks {
            let s = scaling::solve(&engine, &task.question, &options)?;
            if s.answer.is_some() && s.answer == normalize(&task.answer, options.kind) {
                correct += 1;
            }
            samples += s.spend.samples;
            tokens += s.spend.tokens;
            wall += s.spend.wall_secs;
            answers.push(s.answer);
            bar.inc(1);
        }
        let q = tasks.len() as f64;
        results.push(StrategyResult {
            strategy: strategy.name().to_string(),
            questions: tasks.len(),
            accuracy: correct as f64 / q,
            mean_samples: samples as f64 / q,
            mean_tokens: tokens as f64 / q,
            mean_wall_secs: wall / q,
            answers,
        });
    }
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json)?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{:<18} {:>9} {:>9} {:>10} {:>10}",
            "strategy", "accuracy", "samples", "tokens", "wall s"
        );
        for r in &results {
            println!(
                "{:<18} {:>8.1}% {:>9.2} {:>10.1} {:>10.2}",
                r.strategy,
                100.0 * r.accuracy,
                r.mean_samples,
                r.mean_tokens,
                r.mean_wall_secs
            );
        }
    }
    Ok(())
}
