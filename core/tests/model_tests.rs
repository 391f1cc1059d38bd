//! Loading models: supported architectures and types, and clear errors for
//! files whose hyper-parameters or tensors are inconsistent.

use std::sync::Arc;

use edgeloop_core::gguf::{GgufFile, GgufWriter, Value};
use edgeloop_core::model::{Model, ModelError};
use edgeloop_core::quant::GgmlType;

mod common;

/// The tiny llama model of `common`, edited, loaded from memory.
fn tiny_llama(
    edit: impl FnOnce(&mut GgufWriter, &mut Vec<common::TinyTensor>),
) -> Result<Model, ModelError> {
    let w = common::tiny_llama_writer(edit);
    let file = GgufFile::from_bytes(w.to_bytes().unwrap())?;
    Model::from_gguf(Arc::new(file))
}

fn expect_err(r: Result<Model, ModelError>, needle: &str) {
    let e = r
        .err()
        .unwrap_or_else(|| panic!("model loaded, expected an error containing {needle:?}"))
        .to_string();
    assert!(
        e.contains(needle),
        "error {e:?} does not contain {needle:?}"
    );
}

#[test]
fn a_consistent_tiny_model_loads() {
    let m = tiny_llama(|_, _| {}).unwrap();
    assert_eq!(m.config().n_layers, 1);
    assert_eq!(m.config().head_dim, 16);
    assert_eq!(
        m.weights().output.name,
        "token_embd.weight",
        "output tied to the embedding"
    );
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    expect_err(
        tiny_llama(|w, _| {
            w.set("general.architecture", Value::String("mamba".into()));
        }),
        "unsupported architecture \"mamba\" (supported: llama, qwen3, gemma3)",
    );
}

#[test]
fn unsupported_quant_type_lists_the_supported_ones() {
    expect_err(
        tiny_llama(|_, t| t[4].2 = GgmlType::Q5_1),
        "has type Q5_1, which edgeloop cannot compute with (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)",
    );
}

#[test]
fn block_count_out_of_range_or_inconsistent_with_tensors() {
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.block_count", Value::U32(0));
        }),
        "llama.block_count = 0 is out of range",
    );
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.block_count", Value::U32(100_000));
        }),
        "out of range",
    );
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.block_count", Value::U32(2));
        }),
        "missing tensor \"blk.1.attn_norm.weight\"",
    );
    expect_err(
        tiny_llama(|_, t| t.push(("blk.7.attn_norm.weight".into(), vec![32], GgmlType::F32))),
        "beyond block_count 1",
    );
}

#[test]
fn head_counts_must_be_consistent() {
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.attention.head_count_kv", Value::U32(3));
        }),
        "not a multiple of 3 key/value heads",
    );
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.attention.head_count", Value::U32(0));
        }),
        "head_count = 0 is out of range",
    );
}

#[test]
fn tensor_shapes_must_match_the_hyper_parameters() {
    expect_err(
        tiny_llama(|_, t| t[5].1 = vec![32, 32]),
        "tensor \"blk.0.attn_k.weight\" has shape [32, 32], expected [32, 16]",
    );
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.embedding_length", Value::U32(64));
        }),
        "has shape",
    );
}

#[test]
fn missing_or_mistyped_keys_name_the_key() {
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.context_length", Value::String("lots".into()));
        }),
        "metadata key \"llama.context_length\": expected a non-negative integer, found string",
    );
    expect_err(
        tiny_llama(|w, _| {
            w.set("llama.rope.freq_base", Value::F32(f32::NAN));
        }),
        "llama.rope.freq_base = NaN must be a positive finite number",
    );
}

/// Logits of a few tokens through `model`, one at a time.
fn logits_of(model: &Model) -> Vec<f32> {
    let pool = edgeloop_core::kernels::ThreadPool::new(2);
    let mut caches = vec![model.new_cache(8)];
    let mut scratch = edgeloop_core::model::ForwardScratch::default();
    let mut all = Vec::new();
    for (pos, token) in [1u32, 7, 3, 60].into_iter().enumerate() {
        let batch = [edgeloop_core::model::BatchToken { token, pos, seq: 0 }];
        let mut logits = Vec::new();
        model
            .forward(&pool, &batch, &mut caches, &[0], &mut logits, &mut scratch)
            .unwrap();
        all.extend(logits);
    }
    all
}

#[test]
fn packed_weights_are_cached_beside_the_model_and_remade_when_stale_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let writer = common::tiny_llama_writer(|_, _| {});
    writer.write_file(&path).unwrap();
    let cache = dir.path().join("tiny.gguf.packed");
    let modified = || std::fs::metadata(&cache).unwrap().modified().unwrap();

    let first = logits_of(&Model::open(&path).unwrap());
    if !edgeloop_core::kernels::packed_rows_used() {
        assert!(
            !cache.exists(),
            "no packed weights where the kernels do not read them"
        );
        return;
    }
    let made = modified();
    let size = std::fs::metadata(&cache).unwrap().len();
    assert!(size > 0, "the cache holds the packed matrices");

    // A second load maps the cache as it is, and computes the same logits.
    let second = logits_of(&Model::open(&path).unwrap());
    assert_eq!(first, second);
    assert_eq!(modified(), made, "a valid cache is read, not written again");

    // A changed model file makes the cache stale: it is written again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    writer.write_file(&path).unwrap();
    assert_eq!(logits_of(&Model::open(&path).unwrap()), first);
    assert_ne!(modified(), made, "a stale cache is remade");

    // A damaged cache (cut short, garbage, empty) is ignored and remade.
    let whole = std::fs::read(&cache).unwrap();
    for damaged in [&whole[..whole.len() - 1], &b"not a cache"[..], &[][..]] {
        std::fs::write(&cache, damaged).unwrap();
        assert_eq!(logits_of(&Model::open(&path).unwrap()), first);
        assert_eq!(
            std::fs::read(&cache).unwrap(),
            whole,
            "the damaged cache is rewritten"
        );
    }
}
