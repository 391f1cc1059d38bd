//! `distill`, `export`, `import-checkpoint` and `eval`: from a curated
//! dataset to a new quantized student, and students compared side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use edgeloop_core::gguf::GgufFile;
use edgeloop_core::quant::GgmlType;
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{Engine, EngineOptions};
use edgeloop_desktop::score::{score, Score};
use edgeloop_desktop::settings::ScalingArgs;
use edgeloop_train::data::read_jsonl;
use edgeloop_train::distill::{distill, save_tensors, DistillOptions, DistillReport};
use edgeloop_train::export::{check_export, sha256_file, write_gguf, ExportCheck, Provenance};
use edgeloop_train::optim::AdamWConfig;
use edgeloop_train::student::LoraConfig;
use edgeloop_train::Student;
use indicatif::{ProgressBar, ProgressStyle};

/// Fine-tuning settings on the command line.
#[derive(Args, Clone, Debug)]
pub struct DistillArgs {
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Examples per forward/backward pass (gradients are accumulated).
    #[arg(long, default_value_t = 4)]
    pub micro_batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Longest example in tokens; longer ones are an error.
    #[arg(long, default_value_t = 512)]
    pub max_seq: usize,
    /// Seed of the example order.
    #[arg(long, default_value_t = 0)]
    pub train_seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: usize,
    /// Train low-rank adapters of this rank instead of every weight
    /// (merged into the weights at the end).
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA scale numerator: adapters contribute (alpha / rank) · B·A.
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Projections that get adapters.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down"
    )]
    pub lora_targets: Vec<String>,
}

impl DistillArgs {
    pub fn options(&self) -> DistillOptions {
        DistillOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            learning_rate: self.lr,
            warmup_steps: self.warmup,
            min_lr_ratio: self.min_lr_ratio,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                max_grad_norm: self.max_grad_norm,
                ..AdamWConfig::default()
            },
            seed: self.train_seed,
            checkpoint_every: self.checkpoint_every,
            stop_after: None,
        }
    }
}

/// The trained weights of a run, beside its checkpoint.
pub fn weights_path(out: &Path) -> PathBuf {
    out.join("weights.safetensors")
}

/// Loads a student for solving and scoring, on every core.
pub fn engine(path: &Path) -> Result<Engine> {
    Engine::load(
        path,
        EngineOptions {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", path.display()))
}

/// Fine-tunes the student at `parent` on `data/train.jsonl` (validation
/// loss on `data/val.jsonl` when present), writing the weights and a
/// report to `out`. Resumes from a checkpoint in `out`.
pub fn run_distill(
    parent: &Path,
    data: &Path,
    out: &Path,
    args: &DistillArgs,
) -> Result<DistillReport> {
    let engine = engine(parent)?;
    let (tok, tmpl) = (engine.tokenizer(), engine.template());
    let train = read_jsonl(&data.join("train.jsonl"), tok, tmpl, args.max_seq)?;
    let val_path = data.join("val.jsonl");
    let val = if val_path.is_file() {
        read_jsonl(&val_path, tok, tmpl, args.max_seq)?
    } else {
        Vec::new()
    };
    if train.is_empty() {
        bail!("{} holds no examples", data.join("train.jsonl").display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut student = Student::from_model(engine.model())?;
    drop(engine);
    if let Some(rank) = args.lora_rank {
        student = student.with_lora(LoraConfig {
            rank,
            alpha: args.lora_alpha,
            targets: args.lora_targets.clone(),
            seed: args.train_seed,
        })?;
    }
    let opts = args.options();
    eprintln!(
        "distilling {} of {} parameters on {} examples ({} validation), {} steps",
        student
            .trainable()
            .values()
            .map(|v| v.elem_count())
            .sum::<usize>(),
        student.parameter_count(),
        train.len(),
        val.len(),
        opts.total_steps(train.len())
    );
    let bar = ProgressBar::new(opts.total_steps(train.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})")
            .expect("valid template"),
    );
    let report = distill(&student, &train, &val, &opts, Some(out), &mut |s| {
        bar.set_position(s.step as u64);
        bar.set_message(format!("loss {:.3} lr {:.1e}", s.loss, s.learning_rate));
        if bar.is_hidden() {
            eprintln!(
                "step {}/{}: loss {:.4}, lr {:.2e}, grad norm {:.2}, {} tokens, {:.1} s",
                s.step, s.total_steps, s.loss, s.learning_rate, s.grad_norm, s.tokens, s.seconds
            );
        }
    })?;
    bar.finish_and_clear();
    save_tensors(student.weights()?, &weights_path(out))?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    eprintln!(
        "train loss {:.4} -> {:.4}, validation loss {} -> {} ({} steps, {:.0} s)",
        report.train_loss_before,
        report.train_loss_after,
        fmt_loss(report.val_loss_before),
        fmt_loss(report.val_loss_after),
        report.steps_done,
        report.seconds
    );
    Ok(report)
}

fn fmt_loss(l: Option<f32>) -> String {
    l.map_or("-".into(), |l| format!("{l:.4}"))
}

/// Parses an export type name (q8_0, q4_0, q4_1, f16, f32).
pub fn parse_type(name: &str) -> Result<GgmlType> {
    let t = match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "f16" => GgmlType::F16,
        "f32" => GgmlType::F32,
        _ => bail!("unknown export type {name:?}: choose q8_0, q4_0, q4_1, f16 or f32"),
    };
    Ok(t)
}

/// Smallest share of positions where an export's top-1 token must be the
/// trained weights' best or within a near tie of it
/// ([`ExportCheck::tolerant_agreement`]): the precision of the type bounds
/// how closely it can follow them.
pub fn agreement_floor(dtype: GgmlType) -> f64 {
    match dtype {
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 => 0.95,
        _ => 0.85,
    }
}

/// Questions the export check runs through both the trained weights and
/// the exported file.
const CHECK_QUESTIONS: [&str; 4] = [
    "What is 7 + 5?",
    "What is 12 - 4?",
    "Name a colour of the sky.",
    "Write one short sentence about rivers.",
];

/// Where and how `export` and `import-checkpoint` write a student.
#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// The student the weights belong to (its tokenizer, template and
    /// hyper-parameters are kept; its sha256 goes into the provenance).
    #[arg(long)]
    pub parent: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub round: u32,
    /// q8_0, q4_0, q4_1, f16 or f32.
    #[arg(long = "type", default_value = "q8_0")]
    pub dtype: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Also run the file in llama.cpp: a folder from which the
    /// llama-cpp-python package (`llama_cpp`) imports.
    #[arg(long)]
    pub llama_cpp_python: Option<PathBuf>,
}

impl ExportArgs {
    /// Exports `student`, with `source` (the data or checkpoint it came
    /// from) hashed into the provenance, and checks the file.
    pub fn run(&self, student: &Student, source: &Path) -> Result<()> {
        let dtype = parse_type(&self.dtype)?;
        let prov = provenance(&self.parent, source, self.round)?;
        let check = export_student(student, &self.parent, dtype, &prov, &self.out)?;
        if let Some(dir) = &self.llama_cpp_python {
            llama_cpp_agreement(&self.out, &check, dir)?;
        }
        Ok(())
    }
}

/// Writes `student` as `out` with `dtype` and checks the file against it.
pub fn export_student(
    student: &Student,
    parent: &Path,
    dtype: GgmlType,
    provenance: &Provenance,
    out: &Path,
) -> Result<ExportCheck> {
    let parent_file = GgufFile::open(parent)?;
    write_gguf(student, &parent_file, dtype, provenance, out)?;
    let engine = engine(out)?;
    let prompts = CHECK_QUESTIONS
        .iter()
        .map(|q| engine.encode_chat(&[ChatMessage::user(*q)], None))
        .collect::<Result<Vec<_>, _>>()?;
    drop(engine);
    let check = check_export(student, out, &prompts, 16, 2)?;
    eprintln!(
        "{}: top-1 agreement with the trained weights {:.1}% over {} positions \
         ({:.1}% counting near ties), greedy tokens identical for {:.1} of {} on average",
        out.display(),
        100.0 * check.top1_agreement,
        check.positions,
        100.0 * check.tolerant_agreement,
        check.mean_greedy_prefix,
        check.greedy_tokens
    );
    if check.tolerant_agreement < agreement_floor(dtype) {
        bail!(
            "{} follows the trained weights on only {:.1}% of positions, near ties counted \
             (at least {:.0}% expected for {dtype})",
            out.display(),
            100.0 * check.tolerant_agreement,
            100.0 * agreement_floor(dtype)
        );
    }
    Ok(check)
}

/// Runs the exported file in llama.cpp (llama-cpp-python importable from
/// `pythonpath`) over the export check's sequences and returns the share
/// of positions where llama.cpp's top-1 token is edgeloop's.
pub fn llama_cpp_agreement(out: &Path, check: &ExportCheck, pythonpath: &Path) -> Result<f64> {
    use std::io::Write;
    let request = serde_json::json!({"model": out, "sequences": check.sequences});
    let python = std::env::var("EDGELOOP_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .arg("-c")
        .arg(include_str!("../../../tests/reference/llamacpp_top1.py"))
        .env("PYTHONPATH", pythonpath)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(request.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("llama.cpp could not run {}", out.display());
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        top1: Vec<Vec<u32>>,
    }
    let reply: Reply =
        serde_json::from_slice(&output.stdout).context("reading llama.cpp's top-1 tokens")?;
    let (mut same, mut total) = (0usize, 0usize);
    for (theirs, ours) in reply.top1.iter().zip(&check.top1) {
        same += theirs.iter().zip(ours).filter(|(a, b)| a == b).count();
        total += ours.len();
    }
    let share = same as f64 / total.max(1) as f64;
    eprintln!(
        "{}: llama.cpp's top-1 token is edgeloop's at {:.1}% of {total} positions",
        out.display(),
        100.0 * share
    );
    Ok(share)
}

/// The provenance of a student trained from `parent` on `dataset`.
pub fn provenance(parent: &Path, dataset: &Path, round: u32) -> Result<Provenance> {
    Ok(Provenance {
        parent_sha256: sha256_file(parent)?,
        dataset_sha256: sha256_file(dataset)?,
        round,
    })
}

/// Loads trained weights into a student of `parent`'s architecture.
pub fn student_with(parent: &Path, weights: &BTreeMap<String, Tensor>) -> Result<Student> {
    let student = Student::open(parent)?;
    student.set_weights(weights, false)?;
    Ok(student)
}

/// Reads a safetensors file into named f32 tensors.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(tensors.into_iter().collect())
}

/// Scores each student with each strategy on `tasks`.
pub fn compare(
    students: &[PathBuf],
    tasks_path: &Path,
    strategies: &[String],
    scaling: &ScalingArgs,
    limit: Option<usize>,
) -> Result<Vec<(String, Score)>> {
    let mut tasks = edgeloop_desktop::tasks::read(tasks_path)?;
    if let Some(n) = limit {
        tasks.truncate(n);
    }
    let bar = ProgressBar::new((tasks.len() * students.len() * strategies.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template"),
    );
    let mut out = Vec::new();
    for path in students {
        let engine = engine(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into(),
        );
        for entry in strategies {
            let (strategy, samples) = match entry.split_once('@') {
                Some((s, n)) => (
                    s,
                    n.parse()
                        .with_context(|| format!("{entry:?}: {n:?} is not a sample count"))?,
                ),
                None => (entry.as_str(), scaling.samples),
            };
            let options = ScalingArgs {
                samples,
                ..scaling.clone()
            }
            .options(strategy)?;
            bar.set_message(format!("{name} {entry}"));
            let s = score(&engine, &tasks, entry, &options, &mut || bar.inc(1))?;
            out.push((path.display().to_string(), s));
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Prints [`compare`]'s results as a table.
pub fn print_scores(scores: &[(String, Score)]) {
    println!(
        "{:<48} {:<20} {:>9} {:>8} {:>8}",
        "student", "strategy", "accuracy", "samples", "tokens"
    );
    for (student, s) in scores {
        println!(
            "{:<48} {:<20} {:>8.1}% {:>8.2} {:>8.1}",
            student,
            s.strategy,
            100.0 * s.accuracy,
            s.mean_samples,
            s.mean_tokens
        );
    }
}
