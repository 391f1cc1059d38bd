//! `edgeloop`: run small GGUF language models offline from the command line.

mod bench;
mod eval;
mod plot;
mod pull;
mod serve;
mod solve;
mod traces;

use edgeloop_desktop::tasks;

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use edgeloop_core::manifest;
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{BackendChoice, Engine, EngineOptions, GenerateOptions, Prompt, SamplerConfig};

#[derive(Parser)]
#[command(
    name = "edgeloop",
    version,
    about = "Run small GGUF language models on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a reply to a prompt (chat-templated), streamed to stdout.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// The prompt.
        prompt: String,
        /// Plain completion of the prompt, without the chat template.
        #[arg(long)]
        raw: bool,
        /// System message for the chat template.
        #[arg(long)]
        system: Option<String>,
    },
    /// Interactive multi-turn chat on stdin/stdout.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[arg(long)]
        system: Option<String>,
    },
    /// List, pull and describe models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Pull a model (same as `models pull`), or with --from a student a
    /// host publishes (`edgeloop-trainer serve --models`), which then runs
    /// as `--model NAME`.
    Pull {
        name: String,
        /// The host's URL (http://HOST:PORT).
        #[arg(long)]
        from: Option<String>,
        /// The host's bearer token (else $EDGELOOP_HOST_TOKEN).
        #[arg(long, requires = "from")]
        token: Option<String>,
    },
    /// Measure load time, prefill and decode speed, and peak memory.
    Bench(bench::BenchArgs),
    /// Answer a question with test-time scaling; prints answer, confidence and spend.
    Solve(solve::SolveArgs),
    /// Check an answer with the self-verification cascade.
    Verify(solve::VerifyCommandArgs),
    /// Compare strategies on a task file.
    Eval(eval::EvalArgs),
    /// Development task sets with known answers.
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
    },
    /// List, show, count, export and report the stored reasoning traces.
    Traces(traces::TracesArgs),
    /// Serve the model over a local OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// The supported models and whether they are pulled.
    List,
    /// Fetch a model into the cache.
    Pull { name: String },
    /// Print the cache path of a model (pulling it unless --offline).
    Path {
        name: String,
        #[arg(long)]
        offline: bool,
    },
    /// Architecture, quantization mix, sizes, context and template of a model.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Which model to use and how to run it.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A model name from `edgeloop models list` or a path to a GGUF file
    /// (default: the default student).
    #[arg(long, short)]
    model: Option<String>,
    /// Never fetch: fail if the model is not already pulled.
    #[arg(long)]
    offline: bool,
    /// Kernel threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Context size in tokens (0 = model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    context: usize,
    /// What runs the model: auto (a hardware GPU when one is usable, else
    /// the CPU, saying why), cpu, or wgpu (the GPU, software adapters
    /// included; WGPU_BACKEND picks among vulkan, metal, dx12).
    #[arg(long, default_value = "auto", value_parser = BackendChoice::NAMES)]
    backend: String,
}

impl ModelArgs {
    /// Resolves (pulling if needed) and loads the model.
    pub fn load(&self) -> Result<Engine> {
        Ok(self.load_with_path()?.0)
    }

    /// [`ModelArgs::load`], also giving the model file's path.
    pub fn load_with_path(&self) -> Result<(Engine, std::path::PathBuf)> {
        let path = pull::resolve_model(self.model.as_deref(), self.offline)?;
        let choice: BackendChoice = self.backend.parse()?;
        // The GPU search runs while the model loads.
        let probe = edgeloop_gpu::Probe::start(choice);
        let mut engine = Engine::load(
            &path,
            EngineOptions {
                threads: self.threads,
                context: self.context,
                ..Default::default()
            },
        )
        .with_context(|| format!("loading {}", path.display()))?;
        let selection = probe
            .select(&mut engine)
            .with_context(|| format!("starting the {choice} backend"))?;
        match &selection.fallback {
            Some(why) => log::warn!("running on the CPU: {why}"),
            None => log::info!("running on {}: {}", selection.backend, selection.device),
        }
        Ok((engine, path))
    }
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print speed figures to stderr at the end.
    #[arg(long)]
    stats: bool,
}

impl SamplingArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
            ..Default::default()
        }
    }
}

fn main() {
    // Output piped into `head` and the like ends quietly when the reader
    // closes, as for other command-line tools, instead of failing a write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal at start-up,
    // before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model,
            sampling,
            prompt,
            raw,
            system,
        } => {
            let engine = model.load()?;
            let prompt = if raw {
                Prompt::Text(prompt)
            } else {
                Prompt::Chat(messages(system.as_deref(), vec![user(&prompt)]))
            };
            let ids = engine.encode(&prompt)?;
            let mut session = engine.session();
            let g = stream(&mut session, &ids, &sampling.options())?;
            println!();
            if sampling.stats {
                print_stats(&g);
            }
            Ok(())
        }
        Command::Chat {
            model,
            sampling,
            system,
        } => chat(&model.load()?, &sampling, system.as_deref()),
        Command::Models { command } => match command {
            ModelsCommand::List => list_models(),
            ModelsCommand::Pull { name } => pull_model(&name),
            ModelsCommand::Path { name, offline } => {
                println!("{}", pull::resolve_model(Some(&name), offline)?.display());
                Ok(())
            }
            ModelsCommand::Info { model } => info(&model),
        },
        Command::Pull {
            name,
            from: Some(url),
            token,
        } => {
            let token = token.or_else(|| {
                std::env::var(pull::HOST_TOKEN_ENV)
                    .ok()
                    .filter(|t| !t.is_empty())
            });
            pull::pull_published(&name, &url, token.as_deref(), &manifest::cache_dir())?;
            Ok(())
        }
        Command::Pull {
            name, from: None, ..
        } => pull_model(&name),
        Command::Bench(args) => bench::run(&args),
        Command::Solve(args) => solve::run(&args),
        Command::Verify(args) => solve::run_verify(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Tasks { command } => tasks::run(&command),
        Command::Traces(args) => traces::run(&args),
        Command::Serve(args) => serve::run(&args),
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: "user".into(),
        content: text.into(),
    }
}

fn messages(system: Option<&str>, mut turns: Vec<ChatMessage>) -> Vec<ChatMessage> {
    if let Some(s) = system {
        turns.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: s.into(),
            },
        );
    }
    turns
}

fn stream(
    session: &mut edgeloop_core::Session<'_>,
    ids: &[u32],
    options: &GenerateOptions,
) -> Result<edgeloop_core::Generation> {
    let mut out = std::io::stdout().lock();
    let g = session.generate(ids, options, &mut |ev| {
        let _ = out.write_all(ev.text.as_bytes());
        let _ = out.flush();
        ControlFlow::Continue(())
    })?;
    Ok(g)
}

fn print_stats(g: &edgeloop_core::Generation) {
    let t = &g.timings;
    eprintln!(
        "[{} prompt tokens ({} cached): {:.1} tok/s | {} generated: {:.1} tok/s | finish: {}]",
        t.prompt_tokens,
        t.cached_tokens,
        t.prefill_tokens_per_sec(),
        t.generated_tokens,
        t.decode_tokens_per_sec(),
        g.finish_reason.as_str()
    );
}

fn chat(engine: &Engine, sampling: &SamplingArgs, system: Option<&str>) -> Result<()> {
    let mut history = messages(system, Vec::new());
    let mut session = engine.session();
    let stdin = std::io::stdin();
    eprintln!(
        "chatting with {} — empty line or Ctrl-D to quit",
        engine.model().config().arch.name()
    );
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        history.push(user(line.trim_end_matches(['\n', '\r'])));
        let ids = engine.encode(&Prompt::Chat(history.clone()))?;
        let g = stream(&mut session, &ids, &sampling.options())?;
        println!();
        if sampling.stats {
            print_stats(&g);
        }
        history.push(ChatMessage {
            role: "assistant".into(),
            content: g.text,
        });
    }
}

fn list_models() -> Result<()> {
    let dir = manifest::cache_dir();
    println!("models in {}:", dir.display());
    for m in manifest::builtin() {
        let pulled = if m.path_in(&dir).is_file() {
            "pulled"
        } else {
            "not pulled"
        };
        let default = if m.default { " (default)" } else { "" };
        println!(
            "  {:<24} {:<8} {:>7.1} MB  {}{}  — {}",
            m.name,
            m.architecture,
            m.size as f64 / 1e6,
            pulled,
            default,
            m.description
        );
    }
    let published = pull::pulled_published(&dir);
    if !published.is_empty() {
        println!(
            "published models in {}:",
            manifest::published_dir(&dir).display()
        );
        for m in published {
            let round = m.round.map(|r| format!("round {r}")).unwrap_or_default();
            println!(
                "  {:<24} {:>7.1} MB  {:<9} sha256 {}  published {}",
                m.name,
                m.size as f64 / 1e6,
                round,
                &m.sha256[..12],
                m.published
            );
        }
    }
    Ok(())
}

fn pull_model(name: &str) -> Result<()> {
    let m = manifest::find(name)?;
    pull::pull(&m, &manifest::cache_dir())?;
    Ok(())
}

fn info(args: &ModelArgs) -> Result<()> {
    let engine = args.load()?;
    let model = engine.model();
    let c = model.config();
    let file = model.gguf();
    let mut mix: Vec<(String, usize, u64)> = Vec::new();
    for t in file.tensors() {
        match mix.iter_mut().find(|m| m.0 == t.dtype.name()) {
            Some(m) => {
                m.1 += 1;
                m.2 += t.n_bytes;
            }
            None => mix.push((t.dtype.name().to_string(), 1, t.n_bytes)),
        }
    }
    mix.sort_by_key(|m| std::cmp::Reverse(m.2));
    let meta = file.metadata();
    println!(
        "file:          {}",
        file.path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!(
        "name:          {}",
        meta.opt_str("general.name")?.unwrap_or("?")
    );
    println!("architecture:  {}", c.arch.name());
    println!(
        "size:          {:.1} MB ({} tensors, GGUF v{})",
        file.file_len() as f64 / 1e6,
        file.tensors().len(),
        file.version()
    );
    println!(
        "quant mix:     {}",
        mix.iter()
            .map(|(n, k, b)| format!("{n} ×{k} ({:.1} MB)", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "layers:        {}  embedding {}  feed-forward {}",
        c.n_layers, c.n_embd, c.n_ff
    );
    println!(
        "heads:         {} (kv {})  head dim {}",
        c.n_heads, c.n_kv_heads, c.head_dim
    );
    println!("vocabulary:    {}", c.vocab_size);
    println!(
        "context:       {} (model), {} (used)",
        c.context_length,
        engine.context_size()
    );
    if let Some(w) = c.sliding_window {
        println!(
            "sliding window: {w} on {} of {} layers",
            c.sliding_layers.iter().filter(|&&s| s).count(),
            c.n_layers
        );
    }
    println!(
        "weights/token: {:.1} MB",
        model.weights().bytes_per_token() as f64 / 1e6
    );
    println!("KV per token:  {} bytes", c.kv_bytes_per_token());
    println!(
        "load time:     {:.1} ms",
        engine.load_time().as_secs_f64() * 1e3
    );
    println!("chat template: {:?}", engine.template().kind());
    Ok(())
}
