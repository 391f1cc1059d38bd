//! Shared helpers of the integration tests: where the real models and the
//! golden reference files are, and a tiny synthetic model file.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use edgeloop_core::gguf::{Array, GgufWriter, Value};
use edgeloop_core::manifest;
use edgeloop_core::quant::{self, GgmlType};
use edgeloop_core::{Engine, EngineOptions};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A golden reference file under tests/golden.
pub fn golden(rel: &str) -> serde_json::Value {
    let path = repo_root().join("tests/golden").join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Path of a pulled real model; fails with instructions when it is missing.
pub fn model_path(name: &str) -> PathBuf {
    let m = manifest::find(name).expect("known model");
    let path = m.path_in(&manifest::cache_dir());
    assert!(
        path.is_file(),
        "{} is missing: run `cargo run --release -p edgeloop-desktop -- pull {name}` (or `bash tests/run.sh`), \
         or point EDGELOOP_MODELS_DIR at a directory holding it",
        path.display()
    );
    path
}

fn load(name: &str) -> Engine {
    Engine::load(
        model_path(name),
        EngineOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The default student, loaded once per test binary.
pub fn smollm2() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| load("smollm2-135m-instruct"))
}

/// Gemma 3 270M, loaded once per test binary.
pub fn gemma3() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| load("gemma3-270m"))
}

/// JSON array of integers as token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A tensor of the tiny model: name, dims (GGML order) and type.
pub type TinyTensor = (String, Vec<u64>, GgmlType);

/// A tiny llama model as a GGUF writer: 1 layer, width 32, 2 heads (1
/// key/value head), vocabulary 64 with a byte-level BPE tokenizer (3 control
/// tokens, merges) and a ChatML template. `edit` may change the metadata and
/// the tensor list before the tensors are added.
pub fn tiny_llama_writer(edit: impl FnOnce(&mut GgufWriter, &mut Vec<TinyTensor>)) -> GgufWriter {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(('a'..='z').map(String::from));
    tokens.extend(["Ġ", "Ċ", "he", "ll", "hell", "hello", "Ġw", "or"].map(String::from));
    let n_plain = tokens.len();
    tokens.extend((n_plain..64).map(|i| format!("t{i}")));
    let mut types = vec![3i32; 3];
    types.resize(64, 1);
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r"];
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .set("llama.block_count", Value::U32(1))
        .set("llama.context_length", Value::U32(128))
        .set("llama.embedding_length", Value::U32(32))
        .set("llama.feed_forward_length", Value::U32(64))
        .set("llama.attention.head_count", Value::U32(2))
        .set("llama.attention.head_count_kv", Value::U32(1))
        .set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String("smollm".into()))
        .set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens.into())))
        .set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .set(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(merges.map(String::from).to_vec().into())),
        )
        .set("tokenizer.ggml.bos_token_id", Value::U32(1))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .set(
            "tokenizer.chat_template",
            Value::String(
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                 {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                    .into(),
            ),
        );
    let mut tensors: Vec<TinyTensor> = vec![
        ("token_embd.weight".into(), vec![32, 64], GgmlType::Q8_0),
        ("output_norm.weight".into(), vec![32], GgmlType::F32),
        ("blk.0.attn_norm.weight".into(), vec![32], GgmlType::F32),
        ("blk.0.ffn_norm.weight".into(), vec![32], GgmlType::F32),
        ("blk.0.attn_q.weight".into(), vec![32, 32], GgmlType::Q4_1),
        ("blk.0.attn_k.weight".into(), vec![32, 16], GgmlType::Q4_1),
        ("blk.0.attn_v.weight".into(), vec![32, 16], GgmlType::Q4_1),
        (
            "blk.0.attn_output.weight".into(),
            vec![32, 32],
            GgmlType::Q4_1,
        ),
        ("blk.0.ffn_gate.weight".into(), vec![32, 64], GgmlType::Q4_1),
        ("blk.0.ffn_up.weight".into(), vec![32, 64], GgmlType::Q4_1),
        ("blk.0.ffn_down.weight".into(), vec![64, 32], GgmlType::Q4_1),
    ];
    edit(&mut w, &mut tensors);
    for (name, dims, dtype) in tensors {
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 97) as f32 / 97.0) - 0.5)
            .collect();
        let data = if matches!(
            dtype,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1
        ) {
            quant::quantize(dtype, &values).unwrap()
        } else {
            vec![0u8; dtype.bytes_for(n).unwrap() as usize]
        };
        w.add_tensor(name, &dims, dtype, data).unwrap();
    }
    w
}

/// Property-test settings: `EDGELOOP_PROPTEST_CASES` cases (256 by default,
/// raise it for long runs), failures kept in `regressions` (a path under
/// `core/`, e.g. `tests/proptest-regressions/NAME.txt`).
pub fn proptest_config(regressions: &'static str) -> proptest::test_runner::Config {
    let cases = std::env::var("EDGELOOP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(regressions),
        )),
        ..proptest::test_runner::Config::default()
    }
}
