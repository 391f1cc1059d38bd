//! The `edgeloop` binary as a user runs it: real commands on the real
//! default model, and clear errors for mistakes.

use std::path::Path;
use std::process::{Command, Output};

fn edgeloop(args: &[&str], models_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeloop"));
    cmd.args(args);
    if let Some(dir) = models_dir {
        cmd.env("EDGELOOP_MODELS_DIR", dir);
    }
    cmd.output().expect("edgeloop runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn models_list_names_both_students() {
    let out = edgeloop(&["models", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("smollm2-135m-instruct") && s.contains("(default)"),
        "{s}"
    );
    assert!(s.contains("gemma3-270m"), "{s}");
}

#[test]
fn generate_streams_an_answer_from_the_default_model() {
    let out = edgeloop(
        &[
            "generate",
            "--offline",
            "-n",
            "12",
            "What is the capital of France? Answer in one word.",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Paris"), "{}", text(&out.stdout));
}

#[test]
fn models_info_describes_gemma() {
    let out = edgeloop(
        &["models", "info", "--offline", "--model", "gemma3-270m"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "architecture:  gemma3",
        "Q4_K",
        "Q6_K",
        "Q8_0",
        "sliding window: 512 on 15 of 18 layers",
        "vocabulary:    262144",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}

/// `edgeloop bench --offline -r 1 --json` with `args`: its JSON report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let all = [&["bench", "--offline", "-r", "1", "--json"], args].concat();
    let out = edgeloop(&all, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object")
}

#[test]
fn bench_json_reports_speed_and_memory() {
    let v = bench_json(&["-p", "16", "-n", "8"]);
    for key in [
        "load_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "peak_rss_mb",
        "weights_mb_per_token",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["architecture"], "llama");
    // Auto: a hardware GPU when there is one, else the CPU.
    assert!(v["backend"] == "cpu" || v["backend"] == "wgpu", "{v}");
    assert!(v["device"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
}

#[test]
fn backend_flag_picks_the_cpu_and_refuses_unknown_names() {
    let v = bench_json(&["--backend", "cpu", "--threads", "1", "-p", "4", "-n", "2"]);
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["device"], "1 thread");
    // On the CPU: the time to the first token includes the load, and the
    // bandwidth bound is the read bandwidth over the bytes of each token.
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(f("first_token_ms") >= f("load_ms"), "{v}");
    assert!(f("read_gb_s") > 0.0, "{v}");
    let bound = f("read_gb_s") * 1e3 / f("weights_mb_per_token");
    assert!((f("bound_tok_s") - bound).abs() <= 1e-6 * bound, "{v}");

    let out = edgeloop(&["generate", "--offline", "--backend", "cuda", "hi"], None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cuda") && err.contains("auto, cpu, wgpu"),
        "{err}"
    );
}

#[test]
fn unknown_model_and_offline_misses_are_clear_errors() {
    let out = edgeloop(&["generate", "--model", "no-such-model", "hi"], None);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown model \"no-such-model\"") && e.contains("smollm2-135m-instruct"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = edgeloop(&["generate", "--offline", "hi"], Some(empty.path()));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("edgeloop pull smollm2-135m-instruct"), "{e}");

    let out = edgeloop(&["generate", "--model", "/nonexistent/x.gguf", "hi"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/x.gguf"));

    let out = edgeloop(&["generate", "--offline", "--temperature=-1", "hi"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("temperature"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupt_model_file_is_rejected_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = edgeloop(&["generate", "--model", path.to_str().unwrap(), "hi"], None);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("broken.gguf") && e.contains("truncated"), "{e}");
}

#[test]
fn pull_fetches_verifies_and_places_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgeloop(&["pull", "smollm2-135m-instruct"], Some(dir.path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 98_362_432);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the model is left: {leftovers:?}");
    // A second pull finds it verified and fetches nothing.
    let out = edgeloop(&["pull", "smollm2-135m-instruct"], Some(dir.path()));
    assert!(
        text(&out.stderr).contains("already in"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn chat_answers_two_turns_from_stdin_and_quits_on_an_empty_line() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeloop"))
        .args(["chat", "--offline", "-n", "16"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France? Answer in one word.\nAnd of Italy?\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("Paris"), "{s}");
    assert!(
        s.trim_end()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
            >= 2,
        "two replies: {s}"
    );
    assert_eq!(
        text(&out.stderr).matches("> ").count(),
        3,
        "three prompts shown"
    );
}

#[test]
fn tasks_gen_and_solve_json() {
    let out = edgeloop(
        &[
            "tasks",
            "gen",
            "arithmetic",
            "--digits",
            "2",
            "--ops",
            "add,mul",
            "-n",
            "5",
            "--seed",
            "9",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|t| t["question"].is_string() && t["answer"].is_string()));

    let out = edgeloop(
        &[
            "solve",
            "--offline",
            "--strategy",
            "greedy",
            "--max-tokens",
            "48",
            "--json",
            "What is 7 + 5?",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(s["strategy"], "greedy");
    assert_eq!(s["spend"]["samples"], 1);
    assert_eq!(s["samples"].as_array().unwrap().len(), 1);

    let out = edgeloop(&["tasks", "gen", "arithmetic", "--ops", "div"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown operation \"div\""));
}

#[test]
fn traces_stats_json_on_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store/traces.sqlite");
    let out = edgeloop(
        &[
            "traces",
            "stats",
            "--json",
            "--store",
            store.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "traces",
        "stored",
        "reported",
        "accepted",
        "rejected",
        "record_bytes",
    ] {
        assert_eq!(v[key], 0, "{key} in {v}");
    }
    assert_eq!(v["path"], store.to_str().unwrap());
    assert!(store.is_file());

    // The store named by the environment, listed and exported while empty.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeloop"));
    let out = cmd
        .args(["traces", "list", "--json"])
        .env("EDGELOOP_TRACES", &store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
    let bundle = dir.path().join("b.jsonl.gz");
    let out = edgeloop(
        &[
            "traces",
            "--store",
            store.to_str().unwrap(),
            "export",
            "--out",
            bundle.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("exported 0 traces"));
    assert!(bundle.is_file());
}

#[test]
fn traces_refuses_a_file_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(
        &notes,
        "not a database, just some notes that are long enough ".repeat(4),
    )
    .unwrap();
    let out = edgeloop(
        &["traces", "stats", "--store", notes.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("not an SQLite database"),
        "{err}"
    );
}

#[test]
fn eval_budget_sweep_tabulates_each_strategy_per_budget_and_plots_them() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("sums.jsonl");
    std::fs::write(
        &tasks,
        "{\"question\":\"What is 2 + 3?\",\"answer\":\"5\"}\n\
         {\"question\":\"What is 4 + 4?\",\"answer\":\"8\"}\n",
    )
    .unwrap();
    let plot = dir.path().join("accuracy.png");
    let out = edgeloop(
        &[
            "eval",
            "--offline",
            "--backend",
            "cpu",
            "--tasks",
            tasks.to_str().unwrap(),
            "--strategy",
            "greedy,beam,self-consistency@3",
            "--budget",
            "1,2",
            "--max-tokens",
            "24",
            "--plot",
            plot.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&text(&out.stdout)).unwrap();
    let labels: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    // Greedy does not sample: one run; an explicit @N is not swept.
    assert_eq!(labels, ["greedy", "beam@1", "beam@2", "self-consistency@3"]);
    for r in &runs {
        assert_eq!(r["questions"], 2);
        let acc = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(r["mean_tokens"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(runs[2]["samples_per_question"], 2);
    let png = std::fs::read(&plot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(png.len() > 10_000, "a drawn chart, not an empty image");
}

#[test]
fn eval_fits_an_auto_policy_that_solve_and_eval_then_use() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("sums.jsonl");
    std::fs::write(
        &tasks,
        "{\"question\":\"What is 2 + 3?\",\"answer\":\"5\"}\n\
         {\"question\":\"What is 6 + 3?\",\"answer\":\"9\"}\n\
         {\"question\":\"What is 9 - 4?\",\"answer\":\"5\"}\n",
    )
    .unwrap();
    let policy = dir.path().join("sums.policy.json");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--offline",
            "--backend",
            "cpu",
            "--tasks",
            tasks.to_str().unwrap(),
            "--max-tokens",
            "32",
            "--json",
        ];
        args.extend_from_slice(extra);
        edgeloop(&args, None)
    };
    let out = eval(&[
        "--strategy",
        "greedy,beam@2",
        "--fit-policy",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&text(&out.stdout)).unwrap();
    for p in runs[0]["trace_confidences"].as_array().unwrap() {
        let p = p.as_f64().unwrap();
        assert!(p > 0.0 && p <= 1.0, "a mean token probability: {p}");
    }
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert_eq!(settings["beams"], 2, "the only width it was given");
    assert!(["answer-line", "trace"].contains(&settings["gate"].as_str().unwrap()));
    // The fit's replayed score is at least the better fixed strategy's.
    let err = text(&out.stderr);
    assert!(
        err.contains("auto fitted") && err.contains("in replay"),
        "{err}"
    );
    let best = runs
        .iter()
        .map(|r| r["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let replayed: f64 = err
        .split("beams: ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(replayed + 1e-6 >= 100.0 * best, "{err}");

    let out = eval(&["--strategy", "auto", "--policy", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(runs[0]["strategy"], "auto[sums.policy]");
    assert_eq!(runs[0]["samples_per_question"], 2);

    // Bad policy files are refused with their name and the reason.
    for (body, reason) in [
        (
            "{\"gate\": \"trace\", \"confidence\": 0.5}",
            "not a valid auto policy",
        ),
        (
            "{\"gate\": \"trace\", \"confidence\": 0.5, \"beams\": 0}",
            "beam count 0",
        ),
        (
            "{\"gate\": \"trace\", \"confidence\": 9, \"beams\": 2}",
            "confidence 9",
        ),
    ] {
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, body).unwrap();
        let out = edgeloop(
            &[
                "solve",
                "--offline",
                "--policy",
                bad.to_str().unwrap(),
                "What is 1 + 1?",
            ],
            None,
        );
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("bad.json") && err.contains(reason), "{err}");
    }
}
