//! Property tests of the GGUF reader, the model loader and the tokenizer
//! built from metadata, on a tiny valid llama file (`common::tiny_llama_writer`)
//! that is truncated, bit-flipped, overwritten, cut and extended at random.
//!
//! Every mutated file must be rejected with an error or load into a model
//! that runs; nothing may panic, and the peak heap in use while parsing and
//! loading stays within [`alloc_bound`] of the input's length.
//!
//! Cases per property: 256, or `EDGELOOP_PROPTEST_CASES` for long runs, e.g.
//! `EDGELOOP_PROPTEST_CASES=100000 cargo test --release -p edgeloop-core --test gguf_props`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use edgeloop_core::engine::tokenizer_spec;
use edgeloop_core::gguf::{Array, GgufFile, Value};
use edgeloop_core::kernels::ThreadPool;
use edgeloop_core::model::{BatchToken, ForwardScratch, Model};
use edgeloop_core::quant::GgmlType;
use edgeloop_core::tokenizer::{encode_chat, ChatMessage, ChatTemplate, Tokenizer};
use proptest::prelude::*;

/// Counts the bytes in use on the heap and their peak, for the whole test
/// binary; measurements hold [`MEASURE`] so that tests do not overlap.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static MEASURE: Mutex<()> = Mutex::new(());

fn grew(n: usize) {
    let now = IN_USE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    IN_USE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most heap that parsing and loading a file of `len` bytes may hold at
/// once: 32 bytes per input byte (a GGUF string of n bytes costs 8 + n in the
/// file and becomes a 24-byte `String` plus n bytes, then is indexed again
/// by the tokenizer's maps and the byte-level BPE model), plus 8 MiB for
/// what does not depend on the input (the pre-tokenizer's regular
/// expressions, the template environment). The base file (10.8 KB) peaks
/// near 620 KB, nearly all of it that fixed part; a rejected header stays
/// under 10 KB.
fn alloc_bound(len: usize) -> usize {
    32 * len + 8 * 1024 * 1024
}

/// The unmutated file and the length of its header (where mutations matter
/// most: the rest is tensor data).
fn base() -> &'static (Vec<u8>, usize) {
    static BASE: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    BASE.get_or_init(|| {
        let bytes = common::tiny_llama_writer(|_, _| {}).to_bytes().unwrap();
        let header = GgufFile::from_bytes(bytes.clone()).unwrap().data_offset() as usize;
        (bytes, header)
    })
}

/// How far a mutated file got.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The reader refused it.
    Rejected,
    /// It parsed; the model and the tokenizer each loaded or failed cleanly.
    Parsed { model: bool, tokenizer: bool },
}

/// Parses, loads the model and builds the tokenizer and chat template, as
/// `Engine::load` does; returns what loaded.
fn parse_and_load(bytes: Vec<u8>) -> (Outcome, Option<Model>) {
    let file = match GgufFile::from_bytes(bytes) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return (Outcome::Rejected, None);
        }
    };
    let model = Model::from_gguf(file.clone()).ok();
    let tokenizer = tokenizer_spec(file.metadata())
        .ok()
        .and_then(|spec| Tokenizer::from_spec(&spec).ok());
    if let Some(tok) = &tokenizer {
        // Whatever the vocabulary became, encoding and decoding answer.
        if let Ok(ids) = tok.encode("hello world <|im_start|>") {
            let _ = tok.decode(&ids, false);
        }
        if let Ok(tmpl) = ChatTemplate::for_tokenizer(tok) {
            let _ = encode_chat(tok, &tmpl, &[ChatMessage::user("hello")], true);
        }
    }
    let outcome = Outcome::Parsed {
        model: model.is_some(),
        tokenizer: tokenizer.is_some(),
    };
    (outcome, model)
}

/// Runs [`parse_and_load`] under the allocation counter and checks the
/// bound; a model that loaded then decodes one token.
fn check(bytes: Vec<u8>) -> Result<Outcome, TestCaseError> {
    let len = bytes.len();
    let guard = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let (outcome, model) = parse_and_load(bytes);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    drop(guard);
    prop_assert!(
        peak <= alloc_bound(len),
        "{peak} bytes of heap for a {len}-byte file (bound {}); outcome {outcome:?}",
        alloc_bound(len)
    );
    if let Some(model) = model {
        run_one_token(&model)?;
    }
    Ok(outcome)
}

/// A model that loaded is usable: one token through the forward pass gives
/// a row of logits (their values are whatever the mutated weights make).
fn run_one_token(model: &Model) -> Result<(), TestCaseError> {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| ThreadPool::new(1));
    let mut caches = vec![model.new_cache(4)];
    let mut logits = Vec::new();
    let mut scratch = ForwardScratch::default();
    let batch = [BatchToken {
        token: 1,
        pos: 0,
        seq: 0,
    }];
    model
        .forward(pool, &batch, &mut caches, &[0], &mut logits, &mut scratch)
        .map_err(|e| TestCaseError::fail(format!("a loaded model failed to run: {e}")))?;
    prop_assert_eq!(logits.len(), model.config().vocab_size);
    Ok(())
}

/// A position in the base file: three times in four within the header.
fn position() -> impl Strategy<Value = usize> {
    let (bytes, header) = base();
    prop_oneof![3 => 0..*header, 1 => 0..bytes.len()]
}

/// Values that stress counts, lengths, type ids and offsets when they land
/// on one (little-endian, 1, 4 or 8 bytes).
fn interesting() -> impl Strategy<Value = Vec<u8>> {
    let words = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(31),
        Just(32),
        Just(0x7f),
        Just(0xff),
        Just(0xffff),
        Just(0xffff_ffff),
        Just(1 << 32),
        Just((1 << 42) + 1),
        Just(1 << 63),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        any::<u64>(),
    ];
    (words, prop_oneof![Just(1usize), Just(4), Just(8)])
        .prop_map(|(w, n)| w.to_le_bytes()[..n].to_vec())
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte with a non-zero mask.
    Flip(usize, u8),
    /// Write bytes over the file from a position (clipped at its end).
    Overwrite(usize, Vec<u8>),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes from a position.
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (position(), 1..=255u8).prop_map(|(p, m)| Mutation::Flip(p, m)),
        2 => (position(), any::<u8>()).prop_map(|(p, b)| Mutation::Overwrite(p, vec![b])),
        2 => (position(), interesting()).prop_map(|(p, v)| Mutation::Overwrite(p, v)),
        1 => (position(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (position(), interesting()).prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (position(), 1..16usize).prop_map(|(p, n)| Mutation::Remove(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip(p, mask) => {
            if let Some(b) = bytes.get_mut(*p) {
                *b ^= mask;
            }
        }
        Mutation::Overwrite(p, v) => {
            for (i, &b) in v.iter().enumerate() {
                if let Some(x) = bytes.get_mut(p + i) {
                    *x = b;
                }
            }
        }
        Mutation::Insert(p, v) => {
            let p = (*p).min(bytes.len());
            bytes.splice(p..p, v.iter().copied());
        }
        Mutation::Remove(p, n) => {
            let p = (*p).min(bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
    }
}

/// One to eight byte mutations, a single one half of the time (several
/// almost always break a length in the header).
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![1 => Just(1usize), 1 => 2..=8usize]
        .prop_flat_map(|n| prop::collection::vec(mutation(), n))
}

/// A metadata value of any type, with the values that stress the loader.
fn any_value() -> impl Strategy<Value = Value> {
    let int = prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(3),
        Just(16),
        Just(32),
        Just(63),
        Just(64),
        Just(65),
        Just(4096),
        Just(1 << 20),
        Just(u32::MAX),
        any::<u32>(),
    ];
    let float = prop_oneof![
        Just(0.0f32),
        Just(-1.0),
        Just(1e-6),
        Just(1e30),
        Just(f32::NAN),
        Just(f32::INFINITY),
        any::<f32>(),
    ];
    let text = prop_oneof![
        Just(String::new()),
        Just("llama".to_string()),
        Just("gpt2".to_string()),
        Just("gemma3".to_string()),
        Just("qwen3".to_string()),
        Just("<|im_start|>".to_string()),
        Just("h e".to_string()),
        Just("{% for x in messages %}{{ x }}".to_string()),
        Just("{% for i in range(1000000) %}{{ i }}{% endfor %}".to_string()),
        "[a-z<>|_ .{}%]{0,24}",
    ];
    prop_oneof![
        int.clone().prop_map(Value::U32),
        int.clone().prop_map(|v| Value::I32(v as i32)),
        int.clone().prop_map(|v| Value::U64(u64::from(v) << 8)),
        float.clone().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        text.clone().prop_map(Value::String),
        prop::collection::vec(text, 0..70).prop_map(|v| Value::Array(Array::String(v.into()))),
        prop::collection::vec(int.prop_map(|v| v as i32), 0..70)
            .prop_map(|v| Value::Array(Array::I32(v))),
        prop::collection::vec(float, 0..70).prop_map(|v| Value::Array(Array::F32(v))),
    ]
}

/// A change the writer can express: the file stays well-formed, so the
/// model loader and the tokenizer see every inconsistency.
#[derive(Debug, Clone)]
enum Edit {
    /// Sets a key of the base file (by index) to a value.
    Set(usize, Value),
    /// Gives a tensor (by index) new dims.
    Dims(usize, Vec<u64>),
    /// Gives a tensor another type (its data is rewritten to match).
    Type(usize, GgmlType),
    /// Drops a tensor.
    Drop(usize),
}

const TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q6K,
];

fn edit() -> impl Strategy<Value = Edit> {
    let dim = prop_oneof![Just(1u64), Just(16), Just(32), Just(64), Just(256)];
    prop_oneof![
        4 => (0..32usize, any_value()).prop_map(|(k, v)| Edit::Set(k, v)),
        1 => (0..16usize, prop::collection::vec(dim, 1..=3)).prop_map(|(t, d)| Edit::Dims(t, d)),
        1 => (0..16usize, prop::sample::select(&TYPES[..])).prop_map(|(t, ty)| Edit::Type(t, ty)),
        1 => (0..16usize).prop_map(Edit::Drop),
    ]
}

/// The tiny model with the edits applied; edits the writer refuses (a row
/// length that is not a multiple of a type's block) and tensors above 64K
/// elements are left out.
fn edited(edits: &[Edit]) -> Vec<u8> {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        common::tiny_llama_writer(|_, _| {})
            .metadata()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect()
    });
    common::tiny_llama_writer(|w, tensors| {
        for e in edits {
            match e {
                Edit::Set(k, v) => {
                    w.set(keys[k % keys.len()].clone(), v.clone());
                }
                Edit::Dims(t, d) if !tensors.is_empty() => {
                    let i = t % tensors.len();
                    let fits = d[0] % tensors[i].2.block_len() as u64 == 0;
                    if fits && d.iter().product::<u64>() <= 1 << 16 {
                        tensors[i].1 = d.clone();
                    }
                }
                Edit::Type(t, ty) if !tensors.is_empty() => {
                    let i = t % tensors.len();
                    if tensors[i].1[0] % ty.block_len() as u64 == 0 {
                        tensors[i].2 = *ty;
                    }
                }
                Edit::Drop(t) if !tensors.is_empty() => {
                    let i = t % tensors.len();
                    tensors.remove(i);
                }
                _ => {}
            }
        }
    })
    .to_bytes()
    .unwrap()
}

#[test]
fn the_base_file_loads_and_runs() {
    let (bytes, _) = base();
    assert_eq!(
        check(bytes.clone()).unwrap(),
        Outcome::Parsed {
            model: true,
            tokenizer: true
        }
    );
}

/// Every prefix that stops before the last tensor's data ends is refused
/// (the reader test does this for the reader alone; here through loading,
/// under the allocation bound).
#[test]
fn every_truncation_is_refused_within_the_bound() {
    let (bytes, _) = base();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let end = file
        .tensors()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for len in 0..end {
        let outcome = check(bytes[..len].to_vec()).unwrap();
        assert_eq!(outcome, Outcome::Rejected, "prefix of {len} bytes");
    }
}

proptest! {
    #![proptest_config(common::proptest_config("tests/proptest-regressions/gguf_props.txt"))]

    /// A prefix of any length is an error or, past the last tensor's end,
    /// the same model.
    #[test]
    fn truncated_files_are_errors_or_models(len in 0..=base().0.len()) {
        check(base().0[..len].to_vec())?;
    }

    /// One to eight mutations anywhere (mostly in the header): never a
    /// panic, never more heap than the bound, and a model that loads runs.
    #[test]
    fn mutated_files_are_errors_or_models(ms in mutations()) {
        let mut bytes = base().0.clone();
        for m in &ms {
            apply(&mut bytes, m);
        }
        check(bytes)?;
    }

    /// Mutated and then truncated.
    #[test]
    fn mutated_and_truncated_files_are_errors_or_models(
        ms in prop::collection::vec(mutation(), 1..=4),
        keep in 0.0..=1.0f64,
    ) {
        let mut bytes = base().0.clone();
        for m in &ms {
            apply(&mut bytes, m);
        }
        bytes.truncate((bytes.len() as f64 * keep) as usize);
        check(bytes)?;
    }

    /// Well-formed files whose metadata values, tensor shapes, types and
    /// tensor list are changed: the loader and the tokenizer refuse them
    /// cleanly or load something that runs.
    #[test]
    fn inconsistent_models_are_errors_or_models(edits in prop::collection::vec(edit(), 1..=4)) {
        check(edited(&edits))?;
    }
}

/// Writes the seed corpora of the GGUF, tokenizer and chat template fuzz
/// targets (`fuzz/corpus/`): the tiny llama file, tokenizer-only files
/// (byte-level BPE and SentencePiece) and chat templates with messages.
/// Run with `cargo test -p edgeloop-core --test gguf_props -- --ignored
/// write_fuzz_seeds`; the crafted bad files of `gguf_tests` are added by
/// running that test file with `EDGELOOP_FUZZ_SEEDS` set (see fuzz/README.md).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let corpus = common::repo_root().join("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let (tiny, _) = base();
    write("gguf_load", "tiny-llama.gguf", tiny);
    // Missing the feed-forward tensors: refused by the loader, not the reader.
    let no_ffn = common::tiny_llama_writer(|_, tensors| {
        tensors.retain(|t| !t.0.starts_with("blk.0.ffn_"));
    });
    write(
        "gguf_load",
        "tiny-llama-no-ffn.gguf",
        &no_ffn.to_bytes().unwrap(),
    );

    let bpe = common::tiny_llama_writer(|_, tensors| tensors.clear());
    write("tokenizer_build", "bpe.gguf", &bpe.to_bytes().unwrap());
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![2, 3, 3, 3, 3];
    for b in (0x00..=0x0Au8).chain(0x41..=0x46) {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for t in ["▁", "a", "b", "h", "i", "ab", "▁a", "hi", "▁hi", "\n\n"] {
        tokens.push(t.into());
        types.push(if t == "\n\n" { 4 } else { 1 });
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let mut spm = edgeloop_core::gguf::GgufWriter::new();
    spm.set("general.architecture", Value::String("gemma3".into()))
        .set("tokenizer.ggml.model", Value::String("llama".into()))
        .set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(tokens.into())),
        )
        .set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)))
        .set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .set("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .set("tokenizer.ggml.bos_token_id", Value::U32(1))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    write("tokenizer_build", "spm.gguf", &spm.to_bytes().unwrap());

    let messages =
        "\0system\0Be brief.\0user\0What is 2 + 2? <|im_start|>\0assistant\0<think>4</think>4";
    for (name, source) in CHAT_TEMPLATE_SEEDS {
        write(
            "chat_template",
            &format!("{name}.txt"),
            format!("{source}{messages}").as_bytes(),
        );
    }
}

/// Chat templates for the fuzz seeds: SmolLM2-135M-Instruct's (from its
/// GGUF metadata), edgeloop's built-in Gemma and ChatML ones, and a Llama 3
/// style one using `strftime_now`, `raise_exception`, namespaces and loop
/// controls.
const CHAT_TEMPLATE_SEEDS: &[(&str, &str)] = &[
    (
        "smollm2",
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ),
    (
        "gemma-builtin",
        "{{- bos_token -}}\n{%- set ns = namespace(prefix='') -%}\n{%- for message in messages -%}\n{%- if message.role == 'system' and not loop.last -%}\n{%- set ns.prefix = ns.prefix ~ message.content ~ '\\n\\n' -%}\n{%- else -%}\n{{- '<start_of_turn>' ~ ('model' if message.role == 'assistant' else 'user') ~ '\\n' ~ ns.prefix ~ message.content ~ '<end_of_turn>\\n' -}}\n{%- set ns.prefix = '' -%}\n{%- endif -%}\n{%- endfor -%}\n{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
    ),
    (
        "chatml-builtin",
        "{%- for message in messages -%}\n{{- '<|im_start|>' ~ message.role ~ '\\n' ~ message.content ~ '<|im_end|>\\n' -}}\n{%- endfor -%}\n{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
    ),
    (
        "llama3-style",
        "{{- bos_token }}\n{%- set date_string = strftime_now('%d %b %Y') %}\n{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}\n{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + date_string + '\\n\\n' + system_message + '<|eot_id|>' }}\n{%- for message in messages %}{%- if message.role not in ['user', 'assistant', 'tool'] %}{{ raise_exception('bad role') }}{%- endif %}{%- if message.content is string and '</think>' in message.content %}{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}{%- else %}{%- set content = message.content %}{%- endif %}{%- if loop.index > 32 %}{% break %}{% endif %}{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + content | trim + '<|eot_id|>' }}{%- endfor %}\n{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}",
    ),
];
