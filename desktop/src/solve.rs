//! `edgeloop solve` and `edgeloop verify`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edgeloop_core::scaling;
use edgeloop_core::trace::{self, TraceRecord, TraceStore, Verification};
use edgeloop_core::verify::{self, Candidate};

pub use edgeloop_desktop::settings::{ScalingArgs, VerifyArgs};

use crate::ModelArgs;

/// Arguments of `edgeloop solve`.
#[derive(Args)]
pub struct SolveArgs {
    #[command(flatten)]
    model: ModelArgs,
    question: String,
    /// greedy, self-consistency, best-of-n, confidence, adaptive, budget,
    /// beam, step-search or auto.
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
