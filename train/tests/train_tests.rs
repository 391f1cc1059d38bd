//! The trainer library on real files: the trainable student against core's
//! CPU path on real weights, fine-tuning a tiny model (loss down,
//! deterministic, resumable), and export back to GGUF reloaded by core.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use edgeloop_core::gguf::GgufFile;
use edgeloop_core::kernels::ThreadPool;
use edgeloop_core::model::Model;
use edgeloop_core::quant::GgmlType;
use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::Engine;
use edgeloop_train::data::{encode_example, read_jsonl, Example};
use edgeloop_train::distill::{distill, DistillOptions};
use edgeloop_train::export::{check_export, core_logits, write_gguf, Provenance};
use edgeloop_train::{Student, TrainError};

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Compares the student's logits with core's on `tokens`: (top-1
/// agreement, largest absolute difference relative to the logits' range).
fn parity(student: &Student, model: &Model, tokens: &[u32]) -> (f64, f32) {
    let pool = ThreadPool::new(2);
    let core = core_logits(model, &pool, tokens).unwrap();
    let t = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ours: Vec<f32> = student
        .forward(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(ours.len(), core.len());
    let v = model.config().vocab_size;
    let mut agree = 0;
    let mut max_diff = 0f32;
    let mut range = 0f32;
    for p in 0..tokens.len() {
        let (a, b) = (&core[p * v..(p + 1) * v], &ours[p * v..(p + 1) * v]);
        agree += (argmax(a) == argmax(b)) as usize;
        for (x, y) in a.iter().zip(b) {
            max_diff = max_diff.max((x - y).abs());
            range = range.max(x.abs());
        }
    }
    (agree as f64 / tokens.len() as f64, max_diff / range)
}

fn real_prompt(engine: &Engine) -> Vec<u32> {
    engine
        .encode_chat(
            &[ChatMessage::user(
                "What is 7 + 5? Explain briefly, then give the final answer.",
            )],
            None,
        )
        .unwrap()
}

#[test]
fn student_matches_core_on_smollm2() {
    let engine = common::smollm2();
    let student = Student::from_model(engine.model()).unwrap();
    assert!(student.tied(), "SmolLM2 ties its output to the embedding");
    let tokens = real_prompt(engine);
    let (agree, rel) = parity(&student, engine.model(), &tokens);
    eprintln!("smollm2: top-1 agreement {agree:.3}, max diff / max |logit| {rel:.4}");
    assert!(agree >= 0.95, "top-1 agreement {agree}");
    assert!(rel < 0.1, "relative difference {rel}");
}

#[test]
fn student_matches_core_on_gemma3() {
    let engine = common::gemma3();
    let student = Student::from_model(engine.model()).unwrap();
    let tokens = real_prompt(engine);
    let (agree, rel) = parity(&student, engine.model(), &tokens);
    eprintln!("gemma3: top-1 agreement {agree:.3}, max diff / max |logit| {rel:.4}");
    assert!(agree >= 0.95, "top-1 agreement {agree}");
    assert!(rel < 0.1, "relative difference {rel}");
}

/// The tiny llama file of core's tests, loaded as engine and student.
fn tiny() -> (tempfile::TempDir, std::path::PathBuf, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    common::tiny_llama_writer(|_, _| {})
        .write_file(&path)
        .unwrap();
    let engine = Engine::load(&path, Default::default()).unwrap();
    (dir, path, engine)
}

fn tiny_examples(engine: &Engine) -> Vec<Example> {
    let pairs = [
        ("hello", "world"),
        ("hell", "or"),
        ("he", "llo"),
        ("or", "hello world"),
        ("w", "hello"),
        ("ll", "he"),
    ];
    pairs
        .iter()
        .map(|(q, a)| {
            encode_example(
                engine.tokenizer(),
                engine.template(),
                &[ChatMessage::user(*q), ChatMessage::assistant(*a)],
                128,
            )
            .unwrap()
        })
        .collect()
}

fn tiny_options() -> DistillOptions {
    DistillOptions {
        epochs: 12,
        batch_size: 3,
        micro_batch: 2,
        learning_rate: 1e-2,
        warmup_steps: 2,
        checkpoint_every: 2,
        ..Default::default()
    }
}

#[test]
fn examples_put_the_loss_on_the_answer_only() {
    let (_dir, _path, engine) = tiny();
    let e = &tiny_examples(&engine)[0];
    let answer = engine
        .tokenizer()
        .decode(&e.tokens[e.first_target..], false)
        .unwrap();
    assert_eq!(answer, "world<|im_end|>\n");
    let prompt = engine
        .tokenizer()
        .decode(&e.tokens[..e.first_target], false)
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
}

#[test]
fn a_tiny_student_learns_its_examples() {
    let (_dir, _path, engine) = tiny();
    let student = Student::from_model(engine.model()).unwrap();
    let train = tiny_examples(&engine);
    let mut logged = Vec::new();
    let report = distill(
        &student,
        &train,
        &train[..2],
        &tiny_options(),
        None,
        &mut |s| logged.push(s.loss),
    )
    .unwrap();
    assert_eq!(report.steps_done, 24);
    assert_eq!(logged.len(), 24);
    assert!(
        report.train_loss_after < 0.5 * report.train_loss_before,
        "loss {} -> {}",
        report.train_loss_before,
        report.train_loss_after
    );
    assert!(report.val_loss_after.unwrap() < report.val_loss_before.unwrap());
}

fn weights_of(s: &Student) -> BTreeMap<String, Vec<f32>> {
    s.weights()
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn training_is_deterministic_and_resumes_where_it_stopped() {
    let (dir, _path, engine) = tiny();
    let train = tiny_examples(&engine);
    let opts = tiny_options();

    let straight = Student::from_model(engine.model()).unwrap();
    distill(&straight, &train, &[], &opts, None, &mut |_| {}).unwrap();
    let again = Student::from_model(engine.model()).unwrap();
    distill(&again, &train, &[], &opts, None, &mut |_| {}).unwrap();
    assert_eq!(
        weights_of(&straight),
        weights_of(&again),
        "same seed, same weights"
    );

    let out = dir.path().join("run");
    let first = Student::from_model(engine.model()).unwrap();
    let part = DistillOptions {
        stop_after: Some(3),
        ..opts.clone()
    };
    let r = distill(&first, &train, &[], &part, Some(&out), &mut |_| {}).unwrap();
    assert_eq!(r.steps_done, 3);
    drop(first);
    // A new process: a fresh student from the parent, resumed from the checkpoint.
    let resumed = Student::from_model(engine.model()).unwrap();
    let r = distill(&resumed, &train, &[], &opts, Some(&out), &mut |_| {}).unwrap();
    assert_eq!((r.resumed_from, r.steps_done), (3, 24));
    assert_eq!(r.steps.len(), 24, "the log spans the whole run");
    assert_eq!(weights_of(&straight), weights_of(&resumed));

    // Other options do not silently reuse the checkpoint.
    let other = DistillOptions {
        learning_rate: 1e-3,
        ..opts
    };
    let err = distill(&resumed, &train, &[], &other, Some(&out), &mut |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
}

#[test]
fn exported_students_reload_with_the_trained_predictions() {
    let (dir, path, engine) = tiny();
    let student = Student::from_model(engine.model()).unwrap();
    let train = tiny_examples(&engine);
    distill(&student, &train, &[], &tiny_options(), None, &mut |_| {}).unwrap();
    let parent = GgufFile::open(&path).unwrap();
    let prov = Provenance {
        parent_sha256: "ab".repeat(32),
        dataset_sha256: "cd".repeat(32),
        round: 1,
    };
    let prompts: Vec<Vec<u32>> = train
        .iter()
        .map(|e| e.tokens[..e.first_target].to_vec())
        .collect();
    for dtype in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_0,
    ] {
        let out = dir.path().join(format!("student-{dtype}.gguf"));
        write_gguf(&student, &parent, dtype, &prov, &out).unwrap();
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(Provenance::read(&file), Some(prov.clone()));
        assert_eq!(
            file.metadata().opt_str("tokenizer.chat_template").unwrap(),
            parent
                .metadata()
                .opt_str("tokenizer.chat_template")
                .unwrap()
        );
        assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().dtype, dtype);
        assert_eq!(
            file.tensor("blk.0.attn_norm.weight").unwrap().dtype,
            GgmlType::F32
        );
        let check = check_export(&student, &out, &prompts, 4, 1).unwrap();
        eprintln!("{dtype}: {check:?}");
        let floor = if dtype == GgmlType::F32 { 1.0 } else { 0.75 };
        assert!(check.top1_agreement >= floor, "{dtype}: {check:?}");
        // The exported model runs in the engine, tokenizer and template included.
        let e = Engine::load(&out, Default::default()).unwrap();
        assert_eq!(
            e.encode_chat(&[ChatMessage::user("hello")], None).unwrap(),
            prompts[0]
        );
    }
}

#[test]
fn bad_dataset_lines_are_errors_that_name_the_line() {
    let (dir, _path, engine) = tiny();
    let cases = [
        ("not json\n", "expected"),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"he\"}]}\n", "assistant"),
        (
            "{\"messages\": [{\"role\": \"wizard\", \"content\": \"he\"}, {\"role\": \"assistant\", \"content\": \"or\"}]}\n",
            "wizard",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.jsonl"));
        let good = "{\"messages\": [{\"role\": \"user\", \"content\": \"he\"}, {\"role\": \"assistant\", \"content\": \"or\"}]}\n";
        std::fs::write(&path, format!("{good}{text}")).unwrap();
        let err = read_jsonl(&path, engine.tokenizer(), engine.template(), 128).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(":2:") && msg.contains(needle), "{msg}");
    }
    let long = dir.path().join("long.jsonl");
    std::fs::write(
        &long,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello hello hello\"}, {\"role\": \"assistant\", \"content\": \"or\"}]}\n",
    )
    .unwrap();
    let err = read_jsonl(&long, engine.tokenizer(), engine.template(), 8).unwrap_err();
    assert!(err.to_string().contains("longest sequence"), "{err}");
}

#[test]
fn hugging_face_checkpoints_map_onto_the_student() {
    let (dir, path, engine) = tiny();
    let trained = Student::from_model(engine.model()).unwrap();
    distill(
        &trained,
        &tiny_examples(&engine),
        &[],
        &tiny_options(),
        None,
        &mut |_| {},
    )
    .unwrap();
    let hf = edgeloop_train::import::to_hf(&trained).unwrap();
    assert!(hf.contains_key("model.layers.0.self_attn.q_proj.weight"));
    assert!(hf.contains_key("model.embed_tokens.weight"));
    // Through a safetensors file, as another trainer would hand it over.
    let file = dir.path().join("checkpoint.safetensors");
    edgeloop_train::distill::save_tensors(hf, &file).unwrap();
    let loaded: BTreeMap<String, Tensor> = candle_core::safetensors::load(&file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    let fresh = Student::open(&path).unwrap();
    let mapped = edgeloop_train::import::from_hf(loaded.clone(), &fresh).unwrap();
    fresh.set_weights(&mapped, false).unwrap();
    assert_eq!(weights_of(&fresh), weights_of(&trained));

    let mut extra = loaded.clone();
    extra.insert(
        "model.layers.0.mlp.experts.weight".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let err = edgeloop_train::import::from_hf(extra, &fresh).unwrap_err();
    assert!(err.to_string().contains("experts"), "{err}");
    let mut missing = loaded;
    missing.remove("model.layers.0.mlp.up_proj.weight");
    let err = edgeloop_train::import::from_hf(missing, &fresh).unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_up.weight"), "{err}");
}

#[test]
fn lora_trains_only_the_adapters_and_merges_into_the_export() {
    let (dir, path, engine) = tiny();
    let parent = Student::from_model(engine.model()).unwrap();
    let before = weights_of(&parent);
    let lora = edgeloop_train::student::LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["attn_q".into(), "attn_v".into(), "ffn_up".into()],
        seed: 1,
    };
    let student = Student::from_model(engine.model())
        .unwrap()
        .with_lora(lora.clone())
        .unwrap();
    // B starts at zero: the adapted student is the parent.
    assert_eq!(weights_of(&student), before);
    assert_eq!(student.trainable().len(), 6, "A and B for three matrices");
    let train = tiny_examples(&engine);
    let opts = DistillOptions {
        learning_rate: 3e-2,
        epochs: 30,
        ..tiny_options()
    };
    let report = distill(
        &student,
        &train,
        &[],
        &opts,
        Some(&dir.path().join("lora")),
        &mut |_| {},
    )
    .unwrap();
    assert!(
        report.train_loss_after < 0.8 * report.train_loss_before,
        "{} -> {}",
        report.train_loss_before,
        report.train_loss_after
    );
    let after = weights_of(&student);
    for (name, w) in &after {
        let adapted = ["attn_q", "attn_v", "ffn_up"]
            .iter()
            .any(|t| name.contains(t));
        assert_eq!(w != &before[name], adapted, "{name}");
    }
    // Merged into the exported file: it predicts what the adapted student does.
    let out = dir.path().join("lora.gguf");
    write_gguf(
        &student,
        &GgufFile::open(&path).unwrap(),
        GgmlType::F32,
        &Provenance::default(),
        &out,
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = train
        .iter()
        .map(|e| e.tokens[..e.first_target].to_vec())
        .collect();
    let check = check_export(&student, &out, &prompts, 4, 1).unwrap();
    assert_eq!(check.top1_agreement, 1.0, "{check:?}");
    // Bad settings are refused.
    for bad in [
        edgeloop_train::student::LoraConfig {
            rank: 0,
            ..lora.clone()
        },
        edgeloop_train::student::LoraConfig {
            targets: vec!["attn_x".into()],
            ..lora.clone()
        },
        edgeloop_train::student::LoraConfig { rank: 64, ..lora },
    ] {
        assert!(Student::from_model(engine.model())
            .unwrap()
            .with_lora(bad)
            .is_err());
    }
}
