//! The CPU path against independent references on real weights:
//! llama.cpp's tokenization, next-token logits and greedy continuations for
//! SmolLM2-135M and Gemma-3-270M (golden files made by
//! tests/reference/make_golden.py), and Hugging Face transformers' Qwen3 on
//! a tiny random model converted to GGUF by edgeloop's own writer.

mod common;

use std::collections::HashMap;

use common::{gemma3, golden, ids, smollm2};
use edgeloop_core::gguf::{Array, GgufWriter, Value};
use edgeloop_core::kernels::ThreadPool;
use edgeloop_core::model::{BatchToken, ForwardScratch, Model};
use edgeloop_core::quant::GgmlType;
use edgeloop_core::Engine;

fn check_tokenizer(engine: &Engine, model: &str) {
    let g = golden(&format!("{model}/tokenizer.json"));
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "corpus has {} strings", cases.len());
    let tok = engine.tokenizer();
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        let got = tok.encode(text).unwrap();
        if got != expected {
            mismatches.push(format!("{text:?}: got {got:?}, llama.cpp {expected:?}"));
        }
        let back = tok.decode(&got, false).unwrap();
        assert_eq!(back, text, "decode(encode(s)) != s");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} strings differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    check_tokenizer(smollm2(), "smollm2-135m-instruct");
}

#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    check_tokenizer(gemma3(), "gemma3-270m");
}

/// Below this gap between llama.cpp's two best logits, a position is a near
/// tie: 8-bit activation quantization moves logits by this much in llama.cpp
/// and in edgeloop alike (both measured against an f64 evaluation of the same
/// dequantized weights), so either token is a correct answer.
const NEAR_TIE: f32 = 1.0;

/// Teacher-forced logits at 64 positions and a 32-token greedy continuation
/// compared with llama.cpp.
fn check_logits(engine: &Engine, model: &str, max_tolerance: f32, mean_tolerance: f32) {
    let g = golden(&format!("{model}/logits.json"));
    let vocab = engine.model().config().vocab_size;
    let mut failures = Vec::new();
    for p in g["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["prompt_ids"]);
        let seq = ids(&p["sequence"]);
        assert_eq!(seq.len(), 64);
        let logits = engine.session().logits_all(&seq).unwrap();
        if let Some(dir) = std::env::var_os("EDGELOOP_DUMP_LOGITS") {
            // For tests/reference/f64_forward.py --edgeloop-logits.
            let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(
                std::path::Path::new(&dir).join(format!("{model}-{name}.f32")),
                bytes,
            )
            .unwrap();
        }
        let (mut worst, mut sum, mut count, mut ties) = (0f32, 0f32, 0usize, 0usize);
        let mut margins = Vec::new();
        for (pos, row) in p["logits"].as_array().unwrap().iter().enumerate() {
            let ours = &logits[pos * vocab..(pos + 1) * vocab];
            let top: Vec<(u32, f32)> = row["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                .collect();
            let gap = top[0].1 - top[1].1;
            margins.push(gap);
            let our_top = edgeloop_core::sampler::argmax(ours);
            if our_top != top[0].0 {
                if top
                    .iter()
                    .any(|t| t.0 == our_top && top[0].1 - t.1 < NEAR_TIE)
                {
                    ties += 1;
                } else {
                    failures.push(format!("{model}/{name} position {pos}: top-1 {our_top}, llama.cpp {} (gap {gap:.3})", top[0].0));
                }
            }
            for &(id, l) in &top {
                let e = (ours[id as usize] - l).abs();
                worst = worst.max(e);
                sum += e;
                count += 1;
            }
        }
        let mean = sum / count as f32;
        eprintln!(
            "{model}/{name}: logits vs llama.cpp over its top-20 at 64 positions: max abs error {worst:.3}, mean {mean:.3}; \
             top-1 differs only at {ties} near ties"
        );
        if worst >= max_tolerance || mean >= mean_tolerance {
            failures.push(format!("{model}/{name}: logit error max {worst:.3} (limit {max_tolerance}), mean {mean:.3} (limit {mean_tolerance})"));
        }

        let expected = ids(&p["greedy"]);
        let opts = edgeloop_core::GenerateOptions {
            max_tokens: expected.len(),
            ignore_eos: true,
            ..Default::default()
        };
        let out = engine
            .session()
            .generate(&prompt, &opts, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        let got: Vec<u32> = out.tokens.iter().map(|t| t.token).collect();
        match got.iter().zip(&expected).position(|(a, b)| a != b) {
            None => eprintln!(
                "{model}/{name}: greedy continuation identical for {} tokens",
                expected.len()
            ),
            Some(i) => {
                // The sequence is the prompt followed by llama.cpp's greedy
                // tokens, so its logits give llama.cpp's own margin there.
                let margin = margins
                    .get(prompt.len() - 1 + i)
                    .copied()
                    .unwrap_or(f32::INFINITY);
                let msg = format!(
                    "{model}/{name}: greedy continuation identical for {i} tokens, then {} vs llama.cpp {} (llama.cpp margin {margin:.3})",
                    got[i], expected[i]
                );
                eprintln!("{msg}");
                if margin >= NEAR_TIE {
                    failures.push(msg);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_logits_and_greedy_match_llama_cpp() {
    check_logits(smollm2(), "smollm2-135m-instruct", 2.0, 0.3);
}

#[test]
fn gemma3_logits_and_greedy_match_llama_cpp() {
    check_logits(gemma3(), "gemma3-270m", 4.0, 0.4);
}

/// Converts the Hugging Face Qwen3 checkpoint to GGUF (F32) with edgeloop's writer.
fn qwen3_tiny_gguf() -> Vec<u8> {
    let dir = common::repo_root().join("tests/golden/qwen3-tiny");
    let cfg = golden("qwen3-tiny/config.json");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = |k: &str| cfg[k].as_u64().unwrap();
    let mut w = GgufWriter::new();
    let u32v = |v: u64| Value::U32(v as u32);
    w.set("general.architecture", Value::String("qwen3".into()))
        .set("qwen3.block_count", u32v(n("num_hidden_layers")))
        .set("qwen3.context_length", u32v(n("max_position_embeddings")))
        .set("qwen3.embedding_length", u32v(n("hidden_size")))
        .set("qwen3.feed_forward_length", u32v(n("intermediate_size")))
        .set("qwen3.attention.head_count", u32v(n("num_attention_heads")))
        .set(
            "qwen3.attention.head_count_kv",
            u32v(n("num_key_value_heads")),
        )
        .set("qwen3.attention.key_length", u32v(n("head_dim")))
        .set("qwen3.attention.value_length", u32v(n("head_dim")))
        .set("qwen3.vocab_size", u32v(n("vocab_size")))
        .set(
            "qwen3.rope.freq_base",
            Value::F32(cfg["rope_theta"].as_f64().unwrap() as f32),
        )
        .set(
            "qwen3.attention.layer_norm_rms_epsilon",
            Value::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        )
        .set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(
                (0..n("vocab_size")).map(|i| format!("t{i}")).collect(),
            )),
        );
    let mut names: HashMap<String, String> = HashMap::new();
    names.insert(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
    );
    names.insert("model.norm.weight".into(), "output_norm.weight".into());
    names.insert("lm_head.weight".into(), "output.weight".into());
    for l in 0..n("num_hidden_layers") {
        for (hf, gg) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("self_attn.q_norm", "attn_q_norm"),
            ("self_attn.k_norm", "attn_k_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ] {
            names.insert(
                format!("model.layers.{l}.{hf}.weight"),
                format!("blk.{l}.{gg}.weight"),
            );
        }
    }
    let mut hf_names: Vec<_> = st.names().into_iter().cloned().collect();
    hf_names.sort();
    for hf in hf_names {
        let t = st.tensor(&hf).unwrap();
        let gg = names
            .get(&hf)
            .unwrap_or_else(|| panic!("unexpected tensor {hf}"));
        // Hugging Face shapes are [out, in]; GGUF lists the row length first.
        let dims: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        w.add_tensor(gg.clone(), &dims, GgmlType::F32, t.data().to_vec())
            .unwrap();
    }
    w.to_bytes().unwrap()
}

#[test]
fn qwen3_matches_transformers_on_a_tiny_random_model() {
    let file = edgeloop_core::gguf::GgufFile::from_bytes(qwen3_tiny_gguf()).unwrap();
    let model = Model::from_gguf(std::sync::Arc::new(file)).unwrap();
    let vocab = model.config().vocab_size;
    let pool = ThreadPool::new(2);
    let g = golden("qwen3-tiny/logits.json");
    for case in g["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let mut cache = vec![model.new_cache(input.len())];
        // Feed the first half as one batch and the rest token by token, so
        // both the prefill and the decode path are compared.
        let split = input.len() / 2;
        let mut all = Vec::new();
        let mut scratch = ForwardScratch::default();
        let mut logits = Vec::new();
        let batch: Vec<BatchToken> = (0..split)
            .map(|i| BatchToken {
                token: input[i],
                pos: i,
                seq: 0,
            })
            .collect();
        let rows: Vec<usize> = (0..split).collect();
        model
            .forward(&pool, &batch, &mut cache, &rows, &mut logits, &mut scratch)
            .unwrap();
        all.extend_from_slice(&logits[..split * vocab]);
        for (i, &token) in input.iter().enumerate().skip(split) {
            model
                .forward(
                    &pool,
                    &[BatchToken {
                        token,
                        pos: i,
                        seq: 0,
                    }],
                    &mut cache,
                    &[0],
                    &mut logits,
                    &mut scratch,
                )
                .unwrap();
            all.extend_from_slice(&logits[..vocab]);
        }
        let mut worst = 0f32;
        for (pos, row) in case["logits"].as_array().unwrap().iter().enumerate() {
            let reference: Vec<f32> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = &all[pos * vocab..(pos + 1) * vocab];
            for (a, b) in ours.iter().zip(&reference) {
                worst = worst.max((a - b).abs());
            }
            assert_eq!(
                edgeloop_core::sampler::argmax(ours),
                edgeloop_core::sampler::argmax(&reference),
                "top-1 differs at position {pos}"
            );
        }
        eprintln!(
            "qwen3-tiny, {} tokens: max abs logit error vs transformers {worst:.2e}",
            input.len()
        );
        assert!(worst < 2e-2, "max abs logit error {worst}");
    }
}
