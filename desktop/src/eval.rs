//! `edgeloop eval`: accuracy and spend of several strategies side by side
//! on a task file.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use edgeloop_core::scaling::{self, fit, Strategy};
use edgeloop_core::verify::{self, Stage};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::solve::{ScalingArgs, VerifyArgs};
use crate::ModelArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL file of `{"question", "answer"}` objects.
    #[arg(long)]
    tasks: PathBuf,
    /// Strategies to compare (greedy, self-consistency, best-of-n,
    /// confidence, adaptive, budget, beam, step-search, auto);
    /// `self-consistency@16` sets the sample count of one entry.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "greedy,self-consistency,adaptive,auto"
    )]
    strategy: Vec<String>,
    /// Only the first N tasks.
    #[arg(long)]
    limit: Option<usize>,
    /// Sweep: run each strategy (without an `@N` of its own) at each of
    /// these sample counts, e.g. `1,4,8,16`; strategies that do not sample
    /// run once.
    #[arg(long, value_delimiter = ',')]
    budget: Vec<usize>,
    /// Draw accuracy against mean tokens per question, one line per
    /// strategy, to this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    scaling: ScalingArgs,
    /// Also run the verifier cascade on every answer and report each
    /// stage's acceptance rate and the accuracy of accepted and rejected
    /// answers.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    verifier: VerifyArgs,
    /// Also write the results here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fit `auto` to these tasks from the per-question results of
    /// `greedy` and of one or more `beam@N` entries, and write the policy
    /// (gate, confidence, beams) to this file for `--policy`.
    #[arg(long)]
    fit_policy: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct StrategyResult {
    /// The entry's label: `name` or `name@samples`.
    strategy: String,
    /// The strategy's name.
    name: String,
    /// Its sample count, where it has one.
    samples_per_question: Option<usize>,
    questions: usize,
    accuracy: f64,
    mean_samples: f64,
    mean_tokens: f64,
    /// Judge-prompt tokens read to score candidates, per question.
    mean_scored_tokens: f64,
    mean_wall_secs: f64,
    answers: Vec<Option<String>>,
    /// Per question: whether the answer was right.
    correct: Vec<bool>,
    /// Per question: the strategy's confidence in its answer.
    confidences: Vec<f64>,
    /// Per question: the mean token probability of the first trace.
    trace_confidences: Vec<f64>,
    /// Per question: samples drawn.
    samples: Vec<usize>,
    /// Per question: tokens generated.
    tokens: Vec<usize>,
    /// With `--verify`: how the cascade judged the answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<VerifyReport>,
}

/// The verifier's record over one strategy's answers.
#[derive(Default, Serialize)]
struct VerifyReport {
    /// Per stage, in order: answers that reached it and answers it passed.
    stages: Vec<StageCount>,
    accepted: usize,
    accepted_correct: usize,
    rejected: usize,
    rejected_correct: usize,
    mean_judge_tokens: f64,
    mean_judge_secs: f64,
    /// Per question: accepted or not.
    verdicts: Vec<bool>,
}

#[derive(Serialize)]
struct StageCount {
    stage: String,
    reached: usize,
    passed: usize,
}

impl VerifyReport {
    fn add(&mut self, v: &edgeloop_core::trace::Verification, correct: bool) {
        let mut stages: Vec<&str> = Vec::new();
        for vote in &v.votes {
            if stages.last() != Some(&vote.stage.as_str()) {
                stages.push(&vote.stage);
            }
        }
        for (i, stage) in stages.iter().enumerate() {
            let passed = v
                .votes
                .iter()
                .filter(|x| x.stage == *stage)
                .all(|x| x.verdict == Some(true));
            let entry = match self.stages.iter_mut().position(|s| s.stage == *stage) {
                Some(k) => &mut self.stages[k],
                None => {
                    self.stages.push(StageCount {
                        stage: stage.to_string(),
                        reached: 0,
                        passed: 0,
                    });
                    self.stages.last_mut().expect("just pushed")
                }
            };
            entry.reached += 1;
            entry.passed += usize::from(passed && (i + 1 < stages.len() || v.accepted));
        }
        let order = |name: &str| Stage::ALL.iter().position(|s| s.name() == name);
        self.stages.sort_by_key(|s| order(&s.stage));
        if v.accepted {
            self.accepted += 1;
            self.accepted_correct += usize::from(correct);
        } else {
            self.rejected += 1;
            self.rejected_correct += usize::from(correct);
        }
        self.mean_judge_tokens += v.spend.tokens as f64;
        self.mean_judge_secs += v.spend.wall_secs;
        self.verdicts.push(v.accepted);
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let (engine, model_path) = args.model.load_with_path()?;
    let mut tasks = crate::tasks::read(&args.tasks)?;
    if let Some(n) = args.limit {
        tasks.truncate(n);
    }
    let runs = plan(&args.strategy, &args.budget, args.scaling.samples)?
        .into_iter()
        .map(|(label, name, samples)| {
            let scaling = ScalingArgs {
                samples: samples.unwrap_or(args.scaling.samples),
                ..args.scaling.clone()
            };
            let options = scaling.options(&name)?;
            // Under a policy file, `auto`'s beam count is the file's.
            let (label, samples) = match (&options.strategy, &args.scaling.policy) {
                (Strategy::Auto { max_samples, .. }, Some(path)) => (
                    format!(
                        "auto[{}]",
                        path.file_stem().unwrap_or_default().to_string_lossy()
                    ),
                    Some(*max_samples),
                ),
                _ => (label, samples),
            };
            Ok((label, name, samples, options))
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = ProgressBar::new((tasks.len() * runs.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    for (label, name, per_question, options) in runs {
        bar.set_message(label.clone());
        let (mut correct, mut samples, mut tokens, mut wall) = (0usize, 0usize, 0usize, 0f64);
        let mut scored = 0usize;
        let (mut answers, mut confidences, mut right, mut drawn) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut trace_confidences = Vec::new();
        let mut per_question_tokens = Vec::new();
        let mut report = args.verify.then(VerifyReport::default);
        let vopts = if args.verify {
            Some(args.verifier.options(&engine, options.seed)?)
        } else {
            None
        };
        for task in &tasks {
            let s = scaling::solve(&engine, &task.question, &options)?;
            let ok = task.is_answered_by(&s.answer, options.kind);
            correct += usize::from(ok);
            right.push(ok);
            confidences.push(s.confidence);
            trace_confidences.push(
                s.samples
                    .first()
                    .map_or(0.0, |x| (x.mean_logprob as f64).exp()),
            );
            drawn.push(s.spend.samples);
            per_question_tokens.push(s.spend.tokens);
            if let (Some(report), Some(vopts)) = (report.as_mut(), vopts.as_ref()) {
                let v = verify::verify_solution(&engine, &task.question, &s, vopts)?;
                report.add(&v, ok);
            }
            samples += s.spend.samples;
            tokens += s.spend.tokens;
            scored += s.spend.scored_tokens;
            wall += s.spend.wall_secs;
            answers.push(s.answer);
            bar.inc(1);
        }
        let q = tasks.len() as f64;
        if let Some(r) = report.as_mut() {
            r.mean_judge_tokens /= q;
            r.mean_judge_secs /= q;
        }
        results.push(StrategyResult {
            strategy: label,
            name,
            samples_per_question: per_question,
            questions: tasks.len(),
            accuracy: correct as f64 / q,
            mean_samples: samples as f64 / q,
            mean_tokens: tokens as f64 / q,
            mean_scored_tokens: scored as f64 / q,
            mean_wall_secs: wall / q,
            answers,
            correct: right,
            confidences,
            trace_confidences,
            samples: drawn,
            tokens: per_question_tokens,
            verification: report,
        });
    }
    bar.finish_and_clear();
    let fitted = match &args.fit_policy {
        Some(path) => Some(fit_policy(&results, path)?),
        None => None,
    };
    if let Some(path) = &args.plot {
        let title = format!(
            "{} on {} ({} questions)",
            model_path
                .file_name()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            args.tasks
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            tasks.len()
        );
        let mut series: Vec<crate::plot::Series> = Vec::new();
        for r in &results {
            let point = (r.mean_tokens, r.accuracy);
            match series.iter_mut().find(|s| s.name == r.name) {
                Some(s) => s.points.push(point),
                None => series.push(crate::plot::Series {
                    name: r.name.clone(),
                    points: vec![point],
                }),
            }
        }
        crate::plot::accuracy_vs_tokens(path, &title, &series)?;
    }
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json)?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{:<22} {:>9} {:>9} {:>10} {:>10} {:>10}",
            "strategy", "accuracy", "samples", "tokens", "scored", "wall s"
        );
        for r in &results {
            println!(
                "{:<22} {:>8.1}% {:>9.2} {:>10.1} {:>10.1} {:>10.2}",
                r.strategy,
                100.0 * r.accuracy,
                r.mean_samples,
                r.mean_tokens,
                r.mean_scored_tokens,
                r.mean_wall_secs
            );
        }
        for r in &results {
            if let Some(v) = &r.verification {
                print_verification(&r.strategy, v);
            }
        }
    }
    if let (Some(f), Some(path)) = (fitted, &args.fit_policy) {
        let s = f.settings;
        eprintln!(
            "auto fitted: gate {}, confidence {:.3}, {} beams: {:.1}% at {:.1} tokens in replay; \
             best fixed {}: {:.1}% at {:.1} tokens; written to {}",
            s.gate.name(),
            s.confidence,
            s.beams,
            100.0 * f.score.accuracy,
            f.score.mean_tokens,
            f.best_fixed,
            100.0 * f.best_fixed_score.accuracy,
            f.best_fixed_score.mean_tokens,
            path.display()
        );
    }
    Ok(())
}

/// Fits `auto` to the results of `greedy` and the `beam@N` entries and
/// writes the policy to `path`.
fn fit_policy(results: &[StrategyResult], path: &std::path::Path) -> Result<fit::Fitted> {
    let greedy = results
        .iter()
        .find(|r| r.name == "greedy")
        .ok_or_else(|| anyhow!("--fit-policy needs a greedy entry in --strategy"))?;
    let greedy: Vec<fit::GreedyOutcome> = (0..greedy.questions)
        .map(|i| fit::GreedyOutcome {
            outcome: fit::Outcome {
                correct: greedy.correct[i],
                tokens: greedy.tokens[i],
            },
            answered: greedy.answers[i].is_some(),
            answer_confidence: greedy.confidences[i],
            trace_confidence: greedy.trace_confidences[i],
        })
        .collect();
    let beams: Vec<(usize, Vec<fit::Outcome>)> = results
        .iter()
        .filter(|r| r.name == "beam")
        .filter_map(|r| {
            let n = r.samples_per_question?;
            let outcomes = r
                .correct
                .iter()
                .zip(&r.tokens)
                .map(|(&correct, &tokens)| fit::Outcome { correct, tokens })
                .collect();
            Some((n, outcomes))
        })
        .collect();
    if beams.is_empty() {
        return Err(anyhow!(
            "--fit-policy needs beam entries with their beam count in --strategy, e.g. beam@2,beam@4"
        ));
    }
    let fitted = fit::fit(&greedy, &beams)?;
    let json = serde_json::to_string_pretty(&fitted.settings)?;
    std::fs::write(path, json + "\n")
        .map_err(|e| anyhow!("writing policy file {}: {e}", path.display()))?;
    Ok(fitted)
}

/// The runs of an evaluation: `(label, strategy name, sample count)` per
/// entry of `--strategy`, each entry without `@N` once per `--budget` value
/// (once with `default_samples` when there is none); strategies whose
/// settings do not depend on a sample count run once.
fn plan(
    entries: &[String],
    budgets: &[usize],
    default_samples: usize,
) -> Result<Vec<(String, String, Option<usize>)>> {
    let mut runs = Vec::new();
    for entry in entries {
        let (name, fixed) = match entry.split_once('@') {
            Some((name, n)) => (
                name,
                Some(
                    n.parse::<usize>()
                        .map_err(|_| anyhow!("{entry:?}: sample count {n:?} is not a number"))?,
                ),
            ),
            None => (entry.as_str(), None),
        };
        let samples_matter = Strategy::parse(name, 1)? != Strategy::parse(name, 2)?;
        let counts: Vec<usize> = match fixed {
            Some(n) => vec![n],
            None if !samples_matter => vec![default_samples],
            None if budgets.is_empty() => vec![default_samples],
            None => budgets.to_vec(),
        };
        for n in counts {
            let label = if samples_matter && (fixed.is_some() || !budgets.is_empty()) {
                format!("{name}@{n}")
            } else {
                name.to_string()
            };
            runs.push((label, name.to_string(), samples_matter.then_some(n)));
        }
    }
    Ok(runs)
}

fn print_verification(strategy: &str, v: &VerifyReport) {
    let pct = |a: usize, b: usize| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * a as f64 / b as f64)
        }
    };
    println!("\nverifier on {strategy}:");
    for s in &v.stages {
        println!(
            "  {:<12} passed {:>4}/{:<4} ({})",
            s.stage,
            s.passed,
            s.reached,
            pct(s.passed, s.reached)
        );
    }
    println!(
        "  accepted {:>4}: {} correct   rejected {:>4}: {} correct   ({:.0} judge tokens, {:.2} s per question)",
        v.accepted,
        pct(v.accepted_correct, v.accepted),
        v.rejected,
        pct(v.rejected_correct, v.rejected),
        v.mean_judge_tokens,
        v.mean_judge_secs
    );
}
