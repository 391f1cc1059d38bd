//! `round`: one whole turn of the loop in one command. The parent student
//! solves unlabeled seed questions with test-time scaling and checks its
//! answers with the verifier cascade (the device code, run here); the
//! traces go into the host store, are curated, distilled into a new
//! student, exported, evaluated against the parent on held-out questions,
//! and optionally published.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use edgeloop_core::scaling;
use edgeloop_core::trace::{ModelInfo, TraceRecord, TraceStore};
use edgeloop_core::verify;
use edgeloop_desktop::score::Score;
use edgeloop_desktop::settings::{ScalingArgs, VerifyArgs};
use edgeloop_train::export::{sha256_file, ExportCheck};
use edgeloop_train::Student;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::curate::{self, CurateOptions};
use crate::student::{self as st, DistillArgs};
use edgeloop_core::trace::ingest;

#[derive(Args)]
pub struct RoundArgs {
    /// The current student (GGUF).
    #[arg(long)]
    pub parent: PathBuf,
    /// Seed questions, JSONL with a "question" field (answers, if present,
    /// are not used).
    #[arg(long)]
    pub questions: PathBuf,
    /// Held-out tasks (`{"question","answer"}` JSONL) for the evaluation.
    #[arg(long)]
    pub eval: PathBuf,
    /// Working folder: host store, dataset, training run, new student, report.
    #[arg(long)]
    pub work: PathBuf,
    /// The round number written into the new student (parent's + 1 by default).
    #[arg(long)]
    pub round: Option<u32>,
    /// Strategy the parent solves the seed questions with.
    #[arg(long, default_value = "adaptive")]
    pub strategy: String,
    /// The parent's test-time-scaled strategy evaluated as the target the
    /// new student's single call is compared with.
    #[arg(long, default_value = "auto")]
    pub target_strategy: String,
    #[command(flatten)]
    pub scaling: ScalingArgs,
    #[command(flatten)]
    pub verifier: VerifyArgs,
    /// Train on every trace, accepted or not (the control that measures
    /// what the verifier's filtering is worth).
    #[arg(long)]
    pub no_filter: bool,
    /// Most traces per question kept by curation.
    #[arg(long, default_value_t = 1)]
    pub max_per_question: usize,
    #[command(flatten)]
    pub distill: DistillArgs,
    /// Weight type of the new student (q8_0, q4_0, q4_1, f16, f32).
    #[arg(long = "type", default_value = "q8_0")]
    pub dtype: String,
    /// Use the traces already in this host store instead of solving the
    /// seed questions again (e.g. the same traces with and without the
    /// verifier's filtering).
    #[arg(long)]
    pub traces: Option<PathBuf>,
    /// Skip evaluating the parent (when an earlier round already did).
    #[arg(long)]
    pub skip_parent_eval: bool,
}

/// What a round did and reached.
#[derive(Serialize)]
struct RoundReport {
    round: u32,
    parent: String,
    student: String,
    seed_questions: usize,
    traces_stored: usize,
    traces_accepted: usize,
    /// Accepted traces whose answer is right (when the seed file has answers).
    accepted_correct: Option<usize>,
    train_examples: usize,
    val_examples: usize,
    filtered_by_verifier: bool,
    solve_secs: f64,
    distill: edgeloop_train::distill::DistillReport,
    export: ExportCheck,
    evaluation: Vec<(String, Score)>,
}

pub fn run(args: &RoundArgs) -> Result<()> {
    let dtype = st::parse_type(&args.dtype)?;
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("creating {}", args.work.display()))?;
    let tasks = edgeloop_desktop::tasks::read(&args.questions)?;
    if tasks.is_empty() {
        bail!("{} holds no questions", args.questions.display());
    }
    let parent_file = edgeloop_core::gguf::GgufFile::open(&args.parent)?;
    let round = args.round.unwrap_or_else(|| {
        edgeloop_train::export::Provenance::read(&parent_file).map_or(1, |p| p.round + 1)
    });
    drop(parent_file);

    // 1. Solve and verify with the parent, as devices do; store as the host.
    let t0 = std::time::Instant::now();
    let (db, (stored, accepted, accepted_correct)) = match &args.traces {
        Some(db) => (
            db.clone(),
            held(db, &tasks, args.scaling.options(&args.strategy)?.kind)?,
        ),
        None => {
            let db = args.work.join("host.sqlite");
            let counts = solve_and_store(args, &tasks, &db)?;
            (db, counts)
        }
    };
    let solve_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "round {round}: {stored} traces stored, {accepted} accepted by the verifier{}",
        accepted_correct.map_or(String::new(), |c| format!(" ({c} of them right)"))
    );

    // 2. Curate.
    let data = args.work.join("data");
    curate::run(
        &db,
        &data,
        &CurateOptions {
            max_per_question: args.max_per_question,
            include_rejected: args.no_filter,
            seed: args.distill.train_seed,
            ..CurateOptions::default()
        },
    )?;

    // 3. Distill.
    let train_dir = args.work.join("train");
    let report = st::run_distill(&args.parent, &data, &train_dir, &args.distill)?;

    // 4. Export and check.
    let weights = st::read_safetensors(&st::weights_path(&train_dir))?;
    let student: Student = st::student_with(&args.parent, &weights)?;
    drop(weights);
    let out = args.work.join(format!("student-r{round}.gguf"));
    let prov = st::provenance(&args.parent, &data.join("train.jsonl"), round)?;
    let export = st::export_student(&student, &args.parent, dtype, &prov, &out)?;
    drop(student);

    // 5. Evaluate: the new student's single call against the parent's.
    let greedy = ["greedy".to_string()];
    let mut evaluation = Vec::new();
    if !args.skip_parent_eval {
        let parent_strategies = ["greedy".to_string(), args.target_strategy.clone()];
        evaluation.extend(st::compare(
            std::slice::from_ref(&args.parent),
            &args.eval,
            &parent_strategies,
            &args.scaling,
            None,
        )?);
    }
    evaluation.extend(st::compare(
        std::slice::from_ref(&out),
        &args.eval,
        &greedy,
        &args.scaling,
        None,
    )?);
    st::print_scores(&evaluation);

    let counts = |name: &str| -> Result<usize> {
        let text = std::fs::read_to_string(data.join(name))?;
        Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
    };
    let summary = RoundReport {
        round,
        parent: args.parent.display().to_string(),
        student: out.display().to_string(),
        seed_questions: tasks.len(),
        traces_stored: stored,
        traces_accepted: accepted,
        accepted_correct,
        train_examples: counts("train.jsonl")?,
        val_examples: counts("val.jsonl")?,
        filtered_by_verifier: !args.no_filter,
        solve_secs,
        distill: report,
        export,
        evaluation,
    };
    let path = args.work.join("round.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    eprintln!(
        "new student {} (round {round}); report {}",
        out.display(),
        path.display()
    );
    Ok(())
}

/// The counts [`solve_and_store`] reports, for traces already in `db`.
fn held(
    db: &Path,
    tasks: &[edgeloop_desktop::tasks::Task],
    kind: scaling::AnswerKind,
) -> Result<(usize, usize, Option<usize>)> {
    if !db.is_file() {
        bail!("no host store at {}", db.display());
    }
    let store = TraceStore::open(db)?;
    let records = store.list(&edgeloop_core::trace::ListFilter::default())?;
    let labelled = tasks.iter().all(|t| !t.answer.is_empty());
    let (mut accepted, mut right) = (0usize, 0usize);
    for t in &records {
        let r = &t.record;
        if r.verification.accepted {
            accepted += 1;
            let truth = tasks.iter().find(|k| k.question == r.question);
            right += usize::from(truth.is_some_and(|k| k.is_answered_by(&r.answer, kind)));
        }
    }
    Ok((records.len(), accepted, labelled.then_some(right)))
}

/// Solves every seed question with the parent, verifies the answer and
/// stores the trace in the host store at `db`. Returns (stored, accepted,
/// accepted and right when the seed file carries answers).
fn solve_and_store(
    args: &RoundArgs,
    tasks: &[edgeloop_desktop::tasks::Task],
    db: &Path,
) -> Result<(usize, usize, Option<usize>)> {
    let engine = st::engine(&args.parent)?;
    let options = args.scaling.options(&args.strategy)?;
    let vopts = args.verifier.options(&engine, args.scaling.seed)?;
    let model = ModelInfo {
        name: args
            .parent
            .file_stem()
            .map_or("student".into(), |s| s.to_string_lossy().into()),
        sha256: sha256_file(&args.parent)?,
    };
    let bar = ProgressBar::new(tasks.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("solving [{bar:30}] {pos}/{len} {elapsed} (eta {eta}) {msg}")
            .expect("valid template"),
    );
    let mut records = Vec::with_capacity(tasks.len());
    let (mut accepted, mut right) = (0usize, 0usize);
    let labelled = tasks.iter().all(|t| !t.answer.is_empty());
    for task in tasks {
        let s = scaling::solve(&engine, &task.question, &options)?;
        let v = verify::verify_solution(&engine, &task.question, &s, &vopts)?;
        if v.accepted {
            accepted += 1;
            right += usize::from(labelled && task.is_answered_by(&s.answer, options.kind));
        }
        records.push(TraceRecord::from_solution(
            model.clone(),
            &task.question,
            &s.prompt,
            &s,
            v,
            true,
        ));
        bar.inc(1);
        bar.set_message(format!("{accepted} accepted"));
    }
    bar.finish_and_clear();
    let mut store = TraceStore::open(db)?;
    let ack = ingest::store_batch(&mut store, &records)?;
    Ok((
        ack.accepted.len() + ack.duplicates.len(),
        accepted,
        labelled.then_some(right),
    ))
}
