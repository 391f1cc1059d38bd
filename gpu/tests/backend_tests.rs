//! The wgpu backend behind edgeloop-core's `Backend` boundary: an engine put
//! on the GPU with `edgeloop_gpu::select` answers through the same
//! `Session` API as on the CPU — the same next-token scores up to near
//! ties, the same answer to a question, parallel sequences
//! decoded in one batch equal to the same sequences decoded alone, a
//! conversation's cache reused across turns — and `auto` never settles on
//! a software adapter. Real model: SmolLM2-135M.
//!
//! Without an adapter these tests fail, saying what to install, unless
//! `EDGELOOP_SKIP_GPU_TESTS=1` is set.

mod common;

use std::ops::ControlFlow;

use edgeloop_core::model::BatchToken;
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{
    manifest, BackendChoice, Engine, GenerateOptions, Generation, Prompt, SamplerConfig,
};
use edgeloop_gpu::{select, GpuContext, GpuModel};

fn model_path() -> std::path::PathBuf {
    let m = manifest::default_model();
    let (name, path) = (&m.name, m.path_in(&manifest::cache_dir()));
    assert!(
        path.exists(),
        "{} is missing: run `edgeloop pull {name}` first",
        path.display()
    );
    path
}

/// The default model on the CPU.
fn cpu_engine() -> Engine {
    Engine::load(model_path(), Default::default()).expect("load the model")
}

/// The default model on the GPU (software adapters included), or `None`
/// when skipping.
fn gpu_engine() -> Option<Engine> {
    if let Err(e) = GpuContext::new() {
        return common::no_adapter(&e.to_string());
    }
    let mut engine = cpu_engine();
    let selection = select(&mut engine, BackendChoice::Wgpu).expect("the wgpu backend");
    assert_eq!(selection.backend, "wgpu");
    assert_eq!(engine.backend().name(), "wgpu");
    assert_eq!(selection.fallback, None);
    Some(engine)
}

fn chat(engine: &Engine, messages: &[(&str, &str)]) -> Vec<u32> {
    let messages = messages
        .iter()
        .map(|&(role, content)| ChatMessage::new(role, content))
        .collect();
    engine.encode(&Prompt::Chat(messages)).expect("encode")
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

fn ids(g: &Generation) -> Vec<u32> {
    g.tokens.iter().map(|t| t.token).collect()
}

fn run(engine: &Engine, prompt: &[u32], options: &GenerateOptions) -> Generation {
    engine
        .session()
        .generate(prompt, options, &mut |_| ControlFlow::Continue(()))
        .expect("generate")
}

/// The two best logits of a row: (best index, best - second best).
fn top2(row: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x > best.1 {
            second = best.1;
            best = (i, x);
        } else if x > second {
            second = x;
        }
    }
    (best.0, best.1 - second)
}

/// Largest relative difference between the two paths' logits allowed per
/// position: the CPU and GPU round each product's activations to the same
/// 8-bit values, but last-bit differences of the f32 operations around
/// them move some values across a rounding step, so whole-model logits
/// differ by about the quantization error (measured: at most ~0.06 of the
/// largest logit, see `model_tests.rs`).
const REL_TOL: f32 = 0.15;

#[test]
fn a_session_on_the_gpu_scores_the_cpu_sessions_tokens_alike() {
    let Some(gpu) = gpu_engine() else { return };
    let cpu = cpu_engine();
    let prompt = chat(&cpu, &[("user", "Name three colours of the rainbow.")]);
    let reply = run(&cpu, &prompt, &greedy(24));
    // Teacher forcing: the prompt and the CPU's greedy reply through each
    // backend in one call (chunked prefill, logits at every position).
    let tokens = [prompt.clone(), ids(&reply)].concat();
    let on_cpu = cpu.session().logits_all(&tokens).expect("CPU logits");
    let on_gpu = gpu.session().logits_all(&tokens).expect("GPU logits");
    assert_eq!(on_gpu.len(), on_cpu.len());
    let vocab = cpu.model().config().vocab_size;
    let mut agree = 0;
    for (i, next) in (prompt.len() - 1..tokens.len() - 1).enumerate() {
        let c = &on_cpu[next * vocab..(next + 1) * vocab];
        let g = &on_gpu[next * vocab..(next + 1) * vocab];
        let scale = c.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = c.iter().zip(g).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= REL_TOL * scale,
            "step {i}: max |Δ| {diff} of {scale}"
        );
        let (want, cpu_gap) = top2(c);
        let (got, _) = top2(g);
        assert_eq!(want as u32, tokens[next + 1], "the CPU's own greedy token");
        if got == want {
            agree += 1;
        } else {
            // Only a near tie may flip: the two best are closer on the CPU
            // than the two paths differ.
            assert!(cpu_gap <= diff, "step {i}: gap {cpu_gap} > Δ {diff}");
            eprintln!("step {i}: near tie (gap {cpu_gap}, Δ {diff}) flipped");
        }
    }
    eprintln!(
        "{agree} of {} greedy tokens agree",
        tokens.len() - prompt.len()
    );
    assert!(
        agree * 10 >= (tokens.len() - prompt.len()) * 8,
        "{agree} agree"
    );
}

#[test]
fn the_gpu_answers_a_question_like_the_cpu() {
    let Some(gpu) = gpu_engine() else { return };
    let prompt = chat(
        &gpu,
        &[("user", "What is the capital of France? Answer in one word.")],
    );
    let answer = run(&gpu, &prompt, &greedy(8));
    assert!(answer.text.contains("Paris"), "{:?}", answer.text);
}

#[test]
fn parallel_sequences_decoded_together_equal_each_decoded_alone() {
    let Some(engine) = gpu_engine() else { return };
    let prompt = chat(&engine, &[("user", "Write a word that rhymes with cat.")]);
    let options = GenerateOptions {
        max_tokens: 3,
        ignore_eos: true,
        sampler: SamplerConfig {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut session = engine.session();
    // Cache the prompt first, so the parallel run's own caches are all that
    // could change the session's memory.
    session
        .generate(&prompt, &greedy(1), &mut |_| ControlFlow::Continue(()))
        .expect("warm the cache");
    let before = session.kv_bytes();
    let together = session
        .generate_parallel(&prompt, 3, &options, &mut |_, _| ControlFlow::Continue(()))
        .expect("parallel generation");
    assert_eq!(
        session.kv_bytes(),
        before,
        "the parallel sequences' caches are freed when they finish"
    );
    for (i, g) in together.iter().enumerate() {
        let alone = run(
            &engine,
            &prompt,
            &GenerateOptions {
                sampler: SamplerConfig {
                    seed: 7 + i as u64,
                    ..options.sampler.clone()
                },
                ..options.clone()
            },
        );
        eprintln!("sequence {i}: {:?} / alone {:?}", g.text, alone.text);
        assert_eq!(ids(g), ids(&alone), "sequence {i}");
    }
    let distinct: std::collections::HashSet<Vec<u32>> = together.iter().map(ids).collect();
    assert!(distinct.len() > 1, "three seeds sampled one continuation");
}

#[test]
fn a_second_turn_reuses_the_cache_and_matches_a_fresh_session() {
    let Some(engine) = gpu_engine() else { return };
    let first = chat(&engine, &[("user", "Say hello.")]);
    let mut session = engine.session();
    let reply = session
        .generate(&first, &greedy(3), &mut |_| ControlFlow::Continue(()))
        .expect("first turn");
    let second = chat(
        &engine,
        &[
            ("user", "Say hello."),
            ("assistant", reply.text.as_str()),
            ("user", "Now say goodbye."),
        ],
    );
    let turn = session
        .generate(&second, &greedy(2), &mut |_| ControlFlow::Continue(()))
        .expect("second turn");
    assert!(
        turn.timings.cached_tokens > first.len() / 2,
        "{} of {} prompt tokens came from the cache",
        turn.timings.cached_tokens,
        second.len()
    );
    let fresh = run(&engine, &second, &greedy(2));
    assert_eq!(ids(&turn), ids(&fresh));
}

#[test]
fn auto_never_settles_on_a_software_adapter() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => return common::no_adapter(&e.to_string()).unwrap_or(()),
    };
    let software = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let mut engine = cpu_engine();
    let selection = select(&mut engine, BackendChoice::Auto).expect("auto");
    if software {
        assert_eq!(selection.backend, "cpu");
        let why = selection.fallback.expect("a reason to stay on the CPU");
        assert!(why.contains("software rasterizer"), "{why}");
    } else {
        assert_eq!(selection.backend, "wgpu", "{:?}", selection.fallback);
    }
    assert_eq!(engine.backend().name(), selection.backend);
    let mut engine = cpu_engine();
    let cpu = select(&mut engine, BackendChoice::Cpu).expect("cpu");
    assert_eq!((cpu.backend, cpu.fallback), ("cpu", None));
}

#[test]
fn a_bad_batch_is_refused_and_leaves_the_cache_alone() {
    let Some(ctx) = GpuContext::new()
        .map_err(|e| e.to_string())
        .map_or_else(|e| common::no_adapter(&e), Some)
    else {
        return;
    };
    let engine = cpu_engine();
    let model = GpuModel::new(&ctx, engine.model()).expect("upload");
    let vocab = engine.model().config().vocab_size as u32;
    let mut caches = vec![model.new_cache(8).expect("cache")];
    let tok = |token, pos, seq| BatchToken { token, pos, seq };
    let cases: [(&[BatchToken], &[usize], &str); 6] = [
        (&[], &[], "no tokens"),
        (&[tok(vocab, 0, 0)], &[], "outside the vocabulary"),
        (&[tok(1, 1, 0)], &[], "gap"),
        (&[tok(1, 0, 0), tok(2, 2, 0)], &[], "gap"),
        (&[tok(1, 0, 1)], &[], "sequence 1"),
        (&[tok(1, 0, 0)], &[1], "row 1"),
    ];
    for (batch, rows, what) in cases {
        let err = model
            .forward_batch(&mut caches, batch, rows)
            .expect_err(what)
            .to_string();
        assert!(err.contains(what), "{what}: {err}");
        assert_eq!(caches[0].len(), 0, "{what}: the cache was touched");
    }
    let beyond: Vec<BatchToken> = (0..9).map(|p| tok(1, p, 0)).collect();
    let err = model
        .forward_batch(&mut caches, &beyond, &[])
        .expect_err("9 positions in a cache of 8")
        .to_string();
    assert!(err.contains("beyond the cache's 8"), "{err}");
    assert_eq!(caches[0].len(), 0);
}
