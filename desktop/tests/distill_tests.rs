//! `edgeloop-trainer distill`, `export`, `eval` and `round` as a host
//! operator runs them, on the real default model: the loss goes down, a
//! second run resumes instead of starting over, the exported student
//! carries its provenance and runs in `edgeloop`, and one whole round goes
//! from unlabeled questions to a new, evaluated student.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::base_model;

use edgeloop_core::gguf::GgufFile;
use edgeloop_core::manifest::sha256_file;
use edgeloop_train::export::Provenance;

fn run(bin: &str, args: &[&str]) -> Output {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn trainer(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_edgeloop-trainer"), args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A curated dataset as `curate` writes it: chat lines in train.jsonl and val.jsonl.
fn dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let line = |q: &str, a: &str| {
        serde_json::json!({"messages": [
            {"role": "user", "content": format!("{q}\nGive the final answer as a number on a last line starting with \"Answer:\".")},
            {"role": "assistant", "content": format!("Answer: {a}")},
        ]})
        .to_string()
            + "\n"
    };
    let train: String = [
        ("What is 2 + 3?", "5"),
        ("What is 4 + 4?", "8"),
        ("What is 9 - 6?", "3"),
        ("What is 1 + 7?", "8"),
    ]
    .iter()
    .map(|(q, a)| line(q, a))
    .collect();
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    std::fs::write(dir.join("val.jsonl"), line("What is 5 + 2?", "7")).unwrap();
}

fn report(run_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn distill_resume_export_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_model();
    let data = dir.path().join("data");
    dataset(&data);
    let out = dir.path().join("run");
    let args = [
        "distill",
        "--student",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--micro-batch",
        "1",
        "--lr",
        "1e-4",
        "--warmup",
        "1",
    ];
    trainer(&args);
    let r = report(&out);
    assert_eq!(r["steps_done"], 4);
    assert_eq!(r["resumed_from"], 0);
    let (before, after) = (
        r["train_loss_before"].as_f64().unwrap(),
        r["train_loss_after"].as_f64().unwrap(),
    );
    assert!(after < before, "training loss {before} -> {after}");
    assert!(r["val_loss_after"].as_f64().is_some());
    let weights = std::fs::read(out.join("weights.safetensors")).unwrap();

    // The same command again finds the finished checkpoint and trains no more.
    trainer(&args);
    let again = report(&out);
    assert_eq!(again["resumed_from"], 4);
    assert_eq!(
        std::fs::read(out.join("weights.safetensors")).unwrap(),
        weights
    );

    // Other options are refused rather than mixed into the old run.
    let mut other = args.to_vec();
    let lr = other.len() - 3;
    other[lr] = "3e-4";
    let o = Command::new(env!("CARGO_BIN_EXE_edgeloop-trainer"))
        .args(&other)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("other options"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let student = dir.path().join("student.gguf");
    let o = trainer(&[
        "export",
        "--parent",
        s(&base),
        "--weights",
        s(&out.join("weights.safetensors")),
        "--dataset",
        s(&data.join("train.jsonl")),
        "--round",
        "1",
        "--type",
        "q8_0",
        "--out",
        s(&student),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("top-1 agreement"));
    let file = GgufFile::open(&student).unwrap();
    assert_eq!(
        Provenance::read(&file).unwrap(),
        Provenance {
            parent_sha256: sha256_file(&base).unwrap(),
            dataset_sha256: sha256_file(&data.join("train.jsonl")).unwrap(),
            round: 1,
        }
    );
    let g = run(
        env!("CARGO_BIN_EXE_edgeloop"),
        &[
            "generate",
            "--model",
            s(&student),
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "What is 2 + 3?",
        ],
    );
    assert!(!g.stdout.is_empty());

    let tasks = dir.path().join("tasks.jsonl");
    std::fs::write(&tasks, "{\"question\":\"What is 2 + 3?\",\"answer\":\"5\"}\n{\"question\":\"What is 6 + 1?\",\"answer\":\"7\"}\n").unwrap();
    let scores = dir.path().join("scores.json");
    trainer(&[
        "eval",
        "--student",
        s(&base),
        "--student",
        s(&student),
        "--tasks",
        s(&tasks),
        "--strategy",
        "greedy",
        "--max-tokens",
        "48",
        "--out",
        s(&scores),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per student");
    for row in rows {
        assert_eq!(row[1]["questions"], 2);
        assert_eq!(row[1]["correct"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn one_round_from_unlabeled_questions_to_an_evaluated_student() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_model();
    let seeds = dir.path().join("seeds.jsonl");
    let questions: String = [
        "What is 2 + 2?",
        "What is 3 + 5?",
        "What is 7 - 2?",
        "What is 1 + 1?",
        "What is 6 + 3?",
        "What is 8 - 4?",
    ]
    .iter()
    .map(|q| serde_json::json!({"question": q}).to_string() + "\n")
    .collect();
    std::fs::write(&seeds, questions).unwrap();
    let held_out = dir.path().join("eval.jsonl");
    std::fs::write(&held_out, "{\"question\":\"What is 4 + 1?\",\"answer\":\"5\"}\n{\"question\":\"What is 9 - 3?\",\"answer\":\"6\"}\n").unwrap();
    let work = dir.path().join("round");
    trainer(&[
        "round",
        "--parent",
        s(&base),
        "--questions",
        s(&seeds),
        "--eval",
        s(&held_out),
        "--work",
        s(&work),
        "--strategy",
        "self-consistency",
        "--samples",
        "4",
        "--target-strategy",
        "self-consistency",
        "--max-tokens",
        "48",
        "--stages",
        "agreement",
        "--min-share",
        "0.5",
        "--no-filter",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--micro-batch",
        "2",
        "--lr",
        "1e-5",
    ]);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("round.json")).unwrap()).unwrap();
    assert_eq!(r["round"], 1);
    assert_eq!(r["seed_questions"], 6);
    assert_eq!(r["traces_stored"], 6);
    assert!(
        r["accepted_correct"].is_null(),
        "unlabeled seeds: no precision figure"
    );
    let student = work.join("student-r1.gguf");
    let p = Provenance::read(&GgufFile::open(&student).unwrap()).unwrap();
    assert_eq!((p.round, p.parent_sha256), (1, sha256_file(&base).unwrap()));
    let eval = r["evaluation"].as_array().unwrap();
    // Parent greedy, parent target strategy, student greedy.
    assert_eq!(eval.len(), 3);
    assert!(eval[2][0].as_str().unwrap().ends_with("student-r1.gguf"));
    assert!(r["export"]["tolerant_agreement"].as_f64().unwrap() >= 0.95);
}
