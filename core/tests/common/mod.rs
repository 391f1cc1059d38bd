//! Shared helpers of the integration tests: where the real models and the
//! golden reference files are.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use edgeloop_core::manifest;
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
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tokenizer.json");
    let e = Engine::load(
        model_path(name),
        EngineOptions {
            threads: 2,
            tokenizer_cache: Some(cache),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    std::mem::forget(dir);
    e
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
