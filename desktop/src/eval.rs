//! `edgeloop eval`: accuracy and spend of several strategies side by side
//! on a task file.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use edgeloop_core::scaling::{self, normalize};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::solve::ScalingArgs;
use crate::ModelArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL file of `{"question", "answer"}` objects.
    #[arg(long)]
    tasks: PathBuf,
    /// Strategies to compare (greedy, self-consistency, best-of-n,
    /// confidence, adaptive, budget, auto); `self-consistency@16` sets the
    /// sample count of one entry.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "greedy,self-consistency,adaptive,auto"
    )]
    strategy: Vec<String>,
    /// Only the first N tasks.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    scaling: ScalingArgs,
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
    /// Per question: whether the answer was right.
    correct: Vec<bool>,
    /// Per question: the strategy's confidence in its answer.
    confidences: Vec<f64>,
    /// Per question: samples drawn.
    samples: Vec<usize>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let engine = args.model.load()?;
    let mut tasks = crate::tasks::read(&args.tasks)?;
    if let Some(n) = args.limit {
        tasks.truncate(n);
    }
    let runs = args
        .strategy
        .iter()
        .map(|entry| {
            let (name, samples) = match entry.split_once('@') {
                Some((name, n)) => (
                    name,
                    n.parse()
                        .map_err(|_| anyhow!("{entry:?}: sample count {n:?} is not a number"))?,
                ),
                None => (entry.as_str(), args.scaling.samples),
            };
            let scaling = ScalingArgs {
                samples,
                ..args.scaling.clone()
            };
            Ok((entry.clone(), scaling.options(name)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = ProgressBar::new((tasks.len() * runs.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    for (label, options) in runs {
        bar.set_message(label.clone());
        let (mut correct, mut samples, mut tokens, mut wall) = (0usize, 0usize, 0usize, 0f64);
        let (mut answers, mut confidences, mut right, mut drawn) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for task in &tasks {
            let s = scaling::solve(&engine, &task.question, &options)?;
            let ok = s.answer.is_some() && s.answer == normalize(&task.answer, options.kind);
            correct += usize::from(ok);
            right.push(ok);
            confidences.push(s.confidence);
            drawn.push(s.spend.samples);
            samples += s.spend.samples;
            tokens += s.spend.tokens;
            wall += s.spend.wall_secs;
            answers.push(s.answer);
            bar.inc(1);
        }
        let q = tasks.len() as f64;
        results.push(StrategyResult {
            strategy: label,
            questions: tasks.len(),
            accuracy: correct as f64 / q,
            mean_samples: samples as f64 / q,
            mean_tokens: tokens as f64 / q,
            mean_wall_secs: wall / q,
            answers,
            correct: right,
            confidences,
            samples: drawn,
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
