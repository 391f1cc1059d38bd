//! `edgeloop bench`: load time, time to first token, prefill and decode
//! speed, peak memory, and the machine's memory read bandwidth with the
//! decode speed it bounds. Figures to compare side by side with llama.cpp's
//! `llama-bench` (see `tests/bench/vs_llamacpp.sh`); never used as a
//! pass/fail test.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use edgeloop_core::{GenerateOptions, SamplerConfig};
use serde::Serialize;

use crate::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens processed in the prefill test (like llama-bench -p).
    #[arg(long, short = 'p', default_value_t = 256)]
    prompt_tokens: usize,
    /// Tokens generated in the decode test (like llama-bench -n).
    #[arg(long, short = 'n', default_value_t = 128)]
    gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, short = 'r', default_value_t = 3)]
    repetitions: usize,
    /// Also measure aggregate decode speed of N sequences sharing the
    /// prompt, for each N in this comma-separated list (like
    /// `llama-batched-bench -pps -npl 1,4,8,16`).
    #[arg(long, value_delimiter = ',')]
    parallel: Vec<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ParallelReport {
    sequences: usize,
    /// Generated tokens of all sequences per second of decoding.
    decode_tok_s: f64,
    /// Peak resident memory after this run, MB.
    peak_rss_mb: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    architecture: String,
    /// `cpu` or `wgpu`.
    backend: String,
    /// Threads, or the GPU adapter.
    device: String,
    threads: usize,
    load_ms: f64,
    prompt_tokens: usize,
    prefill_tok_s: f64,
    gen_tokens: usize,
    decode_tok_s: f64,
    weights_mb_per_token: f64,
    /// From the start of the load to the first generated token of a
    /// one-token prompt, ms.
    first_token_ms: f64,
    /// Memory read bandwidth with `threads` threads, GB/s (best of a few
    /// passes over a buffer much larger than the caches); 0 on the GPU.
    read_gb_s: f64,
    /// Decode speed if every token only had to stream the weights once at
    /// `read_gb_s`: the bandwidth bound; 0 on the GPU.
    bound_tok_s: f64,
    peak_rss_mb: f64,
    parallel: Vec<ParallelReport>,
}

/// Greedy decoding of exactly `max_tokens` tokens (end of sequence ignored).
fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::default(),
        ignore_eos: true,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in MB; 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let engine = args.model.load()?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let vocab = engine.tokenizer().vocab_size() as u64;
    // Token ids spread over the vocabulary, as llama-bench uses random tokens.
    let prompt: Vec<u32> = (0..args.prompt_tokens.max(1) as u64)
        .map(|i| ((i * 2_654_435_761 + 1000) % (vocab - 1000).max(1) + 100) as u32)
        .collect();
    let first = greedy(1);
    engine.session().generate(&prompt[..1], &first, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    let first_token_ms = started.elapsed().as_secs_f64() * 1e3;
    let reps = args.repetitions.max(1);
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..reps {
        let mut s = engine.session();
        let t = Instant::now();
        s.prefill(&prompt)?;
        pp.push(args.prompt_tokens as f64 / t.elapsed().as_secs_f64());

        let mut s = engine.session();
        let opts = greedy(args.gen_tokens + 1);
        let g = s.generate(&prompt[..1], &opts, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        tg.push(g.timings.decode_tokens_per_sec());
    }
    let mut parallel = Vec::new();
    for &n in &args.parallel {
        let opts = greedy(args.gen_tokens);
        let mut runs = Vec::new();
        for _ in 0..reps {
            let mut s = engine.session();
            let out = s.generate_parallel(&prompt, n, &opts, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })?;
            let tokens: usize = out.iter().map(|g| g.tokens.len()).sum();
            let secs = out
                .iter()
                .map(|g| g.timings.decode_secs)
                .fold(0.0, f64::max);
            runs.push(tokens as f64 / secs.max(1e-9));
        }
        parallel.push(ParallelReport {
            sequences: n,
            decode_tok_s: median(runs),
            peak_rss_mb: peak_rss_mb(),
        });
    }
    let c = engine.model().config();
    let weights_per_token = engine.model().weights().bytes_per_token() as f64;
    let threads = engine.pool().n_threads();
    // Before the bandwidth test's buffer raises it.
    let peak_rss = peak_rss_mb();
    let read_gb_s = if engine.backend().name() == "cpu" {
        edgeloop_core::kernels::read_bandwidth_gb_s(threads)
    } else {
        0.0
    };
    let report = Report {
        model: engine
            .model()
            .gguf()
            .path()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        architecture: c.arch.name().to_string(),
        backend: engine.backend().name().to_string(),
        device: engine.backend().device(),
        threads,
        load_ms,
        prompt_tokens: args.prompt_tokens,
        prefill_tok_s: median(pp),
        gen_tokens: args.gen_tokens,
        decode_tok_s: median(tg),
        weights_mb_per_token: weights_per_token / 1e6,
        first_token_ms,
        read_gb_s,
        bound_tok_s: read_gb_s * 1e9 / weights_per_token.max(1.0),
        peak_rss_mb: peak_rss,
        parallel,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("model         {} ({})", report.model, report.architecture);
        println!("backend       {} ({})", report.backend, report.device);
        println!("load          {:.1} ms", report.load_ms);
        println!(
            "first token   {:.1} ms after the load began",
            report.first_token_ms
        );
        println!(
            "prefill pp{}  {:.1} tok/s",
            report.prompt_tokens, report.prefill_tok_s
        );
        println!(
            "decode  tg{}  {:.1} tok/s",
            report.gen_tokens, report.decode_tok_s
        );
        println!("weights/token {:.1} MB", report.weights_mb_per_token);
        if report.read_gb_s > 0.0 {
            println!(
                "bandwidth     {:.1} GB/s read ({} threads): bound {:.1} tok/s, decode at {:.0}% of it",
                report.read_gb_s,
                report.threads,
                report.bound_tok_s,
                100.0 * report.decode_tok_s / report.bound_tok_s
            );
        }
        println!("peak RSS      {:.1} MB", report.peak_rss_mb);
        for p in &report.parallel {
            println!(
                "parallel N={:<3} {:.1} tok/s aggregate decode (pp{} shared, tg{} each), peak RSS {:.1} MB",
                p.sequences, p.decode_tok_s, report.prompt_tokens, report.gen_tokens, p.peak_rss_mb
            );
        }
    }
    Ok(())
}
