//! `edgeloop-trainer`: the host side of the loop. Devices upload traces to
//! `serve`; bundles carried by hand go through `import`; `stats` counts
//! what the host holds; `curate` turns it into a fine-tuning dataset;
//! `distill` fine-tunes a student on it, `export` writes the result as a
//! quantized GGUF, `import-checkpoint` brings weights from another trainer,
//! `eval` compares students, `round` runs the whole turn, and `publish`
//! puts a student where `serve --models` offers it to devices. The host
//! keeps traces in its own trace store (the same SQLite layout as a
//! device's).

mod curate;
mod publish;
mod round;
mod serve;
mod student;

use edgeloop_core::trace::ingest;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgeloop_core::trace::{read_bundle_limited, TraceStore};

#[derive(Parser)]
#[command(
    name = "edgeloop-trainer",
    version,
    about = "Receive, import, count and curate the reasoning traces devices report; publish students"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /v1/traces and GET /v1/health, and with --models the
    /// published students (GET /v1/models, /v1/models/NAME,
    /// /v1/models/NAME/gguf).
    Serve {
        /// The host's trace store (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Address to listen on; loopback unless told otherwise. Port 0
        /// picks a free one (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: SocketAddr,
        /// Bearer token devices must send (else $EDGELOOP_TRAINER_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Largest request body as sent (compressed), in bytes.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_body: usize,
        /// Largest batch once decompressed, in bytes.
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        max_json: usize,
        /// Folder of published students (see `publish`) to offer devices.
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Publish a student GGUF file under NAME in the models folder `serve
    /// --models` offers (replacing what NAME was); prints the manifest.
    Publish {
        /// The models folder (created if missing).
        #[arg(long)]
        models: PathBuf,
        /// 1 to 64 characters of a-z, 0-9, '.', '_', '-', not starting with '.'.
        #[arg(long)]
        name: String,
        /// The student file.
        file: PathBuf,
    },
    /// Store the traces of bundles written by `edgeloop traces export`
    /// (JSON Lines, plain or gzip). Each bundle is checked whole first;
    /// traces without consent are skipped; known ids are skipped.
    Import {
        #[arg(long)]
        db: PathBuf,
        /// Largest bundle once decompressed, in bytes.
        #[arg(long, default_value_t = 1024 * 1024 * 1024)]
        max_bytes: u64,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Counts and sizes of the host's store.
    Stats {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build a chat fine-tuning dataset from the host's store: train and
    /// validation as JSON Lines and Parquet, with a manifest.
    Curate {
        #[arg(long)]
        db: PathBuf,
        /// Folder for train.jsonl, val.jsonl, train.parquet, val.parquet
        /// and manifest.json (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        options: curate::CurateOptions,
    },
    /// Fine-tune a student on a curated dataset (train.jsonl, val.jsonl):
    /// loss on the assistant's tokens, AdamW, warm-up and cosine decay.
    /// Resumes from the checkpoint in --out.
    Distill {
        /// The student to start from (GGUF).
        #[arg(long)]
        student: PathBuf,
        /// Folder written by `curate`.
        #[arg(long)]
        data: PathBuf,
        /// Folder for the checkpoint, weights.safetensors and report.json.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        args: student::DistillArgs,
    },
    /// Write trained weights (a `distill` run's weights.safetensors) as a
    /// quantized GGUF with the parent's tokenizer and template and
    /// provenance, then check it against the weights with edgeloop's CPU path.
    Export {
        #[arg(long)]
        weights: PathBuf,
        /// The training data (hashed into the provenance).
        #[arg(long)]
        dataset: PathBuf,
        #[command(flatten)]
        export: student::ExportArgs,
    },
    /// Bring a safetensors checkpoint of another trainer (Hugging Face
    /// names, same architecture as --parent) into GGUF through `export`.
    ImportCheckpoint {
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        export: student::ExportArgs,
    },
    /// Accuracy of students side by side on held-out tasks
    /// (`{"question","answer"}` JSONL).
    Eval {
        /// Student GGUF files (repeat the flag).
        #[arg(long = "student", required = true)]
        students: Vec<PathBuf>,
        #[arg(long)]
        tasks: PathBuf,
        /// Strategies, e.g. greedy,auto,adaptive@8.
        #[arg(long, value_delimiter = ',', default_value = "greedy")]
        strategy: Vec<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        scaling: edgeloop_desktop::settings::ScalingArgs,
        /// Also write the results as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One whole round: solve and verify seed questions with the parent,
    /// store, curate, distill, export, evaluate against the parent.
    Round(Box<round::RoundArgs>),
}

/// Environment variable with the serve token, so it need not be on the
/// command line.
const TOKEN_ENV: &str = "EDGELOOP_TRAINER_TOKEN";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            db,
            listen,
            token,
            max_body,
            max_json,
            models,
        } => {
            let token = match token {
                Some(t) => t,
                None => std::env::var(TOKEN_ENV)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .with_context(|| format!("give --token or set {TOKEN_ENV}"))?,
            };
            if token.len() < 8 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("the token must be at least 8 printable ASCII characters without spaces");
            }
            if max_body == 0 || max_json == 0 {
                bail!("--max-body and --max-json must be at least 1");
            }
            if let Some(dir) = &models {
                if !dir.is_dir() {
                    bail!("--models {}: not a folder", dir.display());
                }
            }
            serve::run(serve::ServeOptions {
                db,
                listen,
                token,
                max_body,
                max_json,
                models,
            })
        }
        Command::Publish { models, name, file } => {
            let m = publish::publish(&models, &name, &file)?;
            eprintln!(
                "published {} ({} bytes, sha256 {}) in {}",
                m.name,
                m.size,
                m.sha256,
                publish::model_dir(&models, &m.name).display()
            );
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        Command::Import {
            db,
            max_bytes,
            files,
        } => {
            let mut store = TraceStore::open(&db)?;
            for file in &files {
                import(&mut store, file, max_bytes)?;
            }
            Ok(())
        }
        Command::Stats { db, json } => {
            if !db.exists() {
                bail!("no host store at {}", db.display());
            }
            let store = TraceStore::open(&db)?;
            let s = store.stats()?;
            if json {
                let mut v = serde_json::to_value(&s)?;
                v["path"] = db.display().to_string().into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("store:        {}", db.display());
                println!("traces:       {}", s.traces);
                println!("accepted:     {}", s.accepted);
                println!("rejected:     {}", s.rejected);
                println!("record bytes: {}", s.record_bytes);
                println!("file bytes:   {}", s.file_bytes);
            }
            Ok(())
        }
        Command::Curate { db, out, options } => curate::run(&db, &out, &options),
        Command::Distill {
            student,
            data,
            out,
            args,
        } => student::run_distill(&student, &data, &out, &args).map(drop),
        Command::Export {
            weights,
            dataset,
            export,
        } => {
            let s = student::student_with(&export.parent, &student::read_safetensors(&weights)?)?;
            export.run(&s, &dataset)
        }
        Command::ImportCheckpoint { checkpoint, export } => {
            let s = edgeloop_train::Student::open(&export.parent)?;
            let weights =
                edgeloop_train::import::from_hf(student::read_safetensors(&checkpoint)?, &s)?;
            s.set_weights(&weights, false)?;
            export.run(&s, &checkpoint)
        }
        Command::Eval {
            students,
            tasks,
            strategy,
            limit,
            scaling,
            out,
        } => {
            let scores = student::compare(&students, &tasks, &strategy, &scaling, limit)?;
            student::print_scores(&scores);
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_vec_pretty(&scores)?)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            Ok(())
        }
        Command::Round(args) => round::run(&args),
    }
}

/// Imports one bundle: a regular file, read as one JSON Lines stream. A
/// bundle names no other files, so nothing in it is ever used as a path.
fn import(store: &mut TraceStore, file: &Path, max_bytes: u64) -> Result<()> {
    let meta = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", file.display());
    }
    let records = read_bundle_limited(file, max_bytes)?;
    let total = records.len();
    let consented: Vec<_> = records.into_iter().filter(|r| r.consent).collect();
    let skipped = total - consented.len();
    let ack = ingest::store_batch(store, &consented)?;
    eprintln!(
        "{}: {} new, {} already held, {} without consent skipped",
        file.display(),
        ack.accepted.len(),
        ack.duplicates.len(),
        skipped
    );
    Ok(())
}
