//! Several sequences decoded together from one shared prompt: the same
//! tokens as decoding each alone, independent finishing, memory budgets.

mod common;

use std::ops::ControlFlow;

use common::smollm2;
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{
    Engine, EngineOptions, Error, FinishReason, GenerateOptions, Prompt, SamplerConfig,
};

fn prompt(engine: &Engine) -> Vec<u32> {
    engine
        .encode(&Prompt::Chat(vec![ChatMessage::user(
            "Write a short poem about the moon.",
        )]))
        .unwrap()
}

fn tokens(g: &edgeloop_core::Generation) -> Vec<u32> {
    g.tokens.iter().map(|t| t.token).collect()
}

fn sampled(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 24,
        sampler: SamplerConfig {
            temperature: 0.9,
            top_p: 0.95,
            seed,
            ..Default::default()
        },
        ignore_eos: true,
        ..Default::default()
    }
}

#[test]
fn each_parallel_sequence_equals_decoding_it_alone() {
    let e = smollm2();
    let ids = prompt(e);
    let together = e
        .session()
        .generate_parallel(
            &ids,
            4,
            &sampled(100),
            &mut |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(together.len(), 4);
    for (i, g) in together.iter().enumerate() {
        let alone = e
            .session()
            .generate(&ids, &sampled(100 + i as u64), &mut |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(tokens(g), tokens(&alone), "sequence {i}");
        assert_eq!(g.text, alone.text);
    }
    // Different seeds give different samples.
    assert_ne!(together[0].text, together[1].text);
}

#[test]
fn sequences_finish_independently_and_stream_with_their_index() {
    let e = smollm2();
    let ids = prompt(e);
    let mut streamed = vec![String::new(); 3];
    let mut calls = [0usize; 3];
    let out = e
        .session()
        .generate_parallel(&ids, 3, &sampled(7), &mut |i, ev| {
            streamed[i].push_str(ev.text);
            calls[i] += 1;
            if i == 1 && calls[1] == 5 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(out[1].finish_reason, FinishReason::Cancelled);
    assert_eq!(out[1].tokens.len(), 5);
    for i in [0, 2] {
        assert_eq!(out[i].finish_reason, FinishReason::Length);
        assert_eq!(out[i].tokens.len(), 24);
    }
    for i in 0..3 {
        assert_eq!(streamed[i], out[i].text, "sequence {i}");
    }
}

#[test]
fn greedy_parallel_sequences_agree_with_each_other() {
    let e = smollm2();
    let ids = prompt(e);
    let opts = GenerateOptions {
        max_tokens: 16,
        ..Default::default()
    };
    let out = e
        .session()
        .generate_parallel(&ids, 5, &opts, &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
    let single = e
        .session()
        .generate(&ids, &opts, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    for g in &out {
        assert_eq!(tokens(g), tokens(&single));
    }
}

#[test]
fn parallel_requests_beyond_the_memory_budget_are_refused_up_front() {
    let path = common::model_path("smollm2-135m-instruct");
    let model_bytes = std::fs::metadata(&path).unwrap().len();
    let e = Engine::load(
        &path,
        EngineOptions {
            threads: 1,
            // Room for the model and about 1,000 positions of KV cache.
            memory_budget: Some(model_bytes + 1000 * 23_040),
            ..Default::default()
        },
    )
    .unwrap();
    let ids = prompt(&e);
    let opts = GenerateOptions {
        max_tokens: 100,
        ..Default::default()
    };
    let mut s = e.session();
    let err = s
        .generate_parallel(&ids, 16, &opts, &mut |_, _| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(matches!(err, Error::MemoryBudget { .. }), "{err}");
    assert!(s
        .generate_parallel(&ids, 4, &opts, &mut |_, _| ControlFlow::Continue(()))
        .is_ok());
    let err = s
        .generate_parallel(&ids, 0, &opts, &mut |_, _| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("parallel sequences 0"), "{err}");
}
