//! Property tests of trace record decoding: a valid record's JSON, mutated
//! as a JSON tree (values replaced by any other JSON, keys removed or
//! added) or as text (characters flipped, inserted, cut), is either refused
//! by `TraceRecord::from_json` or decodes into a record that passes
//! `validate()` and round-trips. Nothing panics.
//!
//! Cases per property: 256, or `EDGELOOP_PROPTEST_CASES` for long runs.

mod common;

use edgeloop_core::scaling::{Sample, Solution, Spend};
use edgeloop_core::trace::{ModelInfo, TraceRecord, Verification, VerifierVote};
use proptest::prelude::*;
use serde_json::Value;

fn base_json() -> String {
    let sample = |answer: &str, lp: f32| Sample {
        text: format!("Step 1: 12 plus 30.\nAnswer: {answer}"),
        answer: Some(answer.into()),
        mean_logprob: lp,
        tokens: 12,
    };
    let solution = Solution {
        strategy: "self-consistency",
        prompt: "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n".into(),
        thinking: None,
        answer: Some("42".into()),
        confidence: 2.0 / 3.0,
        samples: vec![sample("42", -0.4), sample("41", -0.1), sample("42", -0.2)],
        spend: Spend {
            samples: 3,
            tokens: 36,
            wall_secs: 0.5,
            limited: false,
            judgements: 1,
            scored_tokens: 0,
        },
    };
    let verification = Verification {
        accepted: true,
        votes: vec![VerifierVote {
            stage: "correctness".into(),
            verdict: Some(true),
            judge_text: "[[Y]]".into(),
        }],
        spend: Default::default(),
    };
    let model = ModelInfo {
        name: "smollm2-135m-instruct".into(),
        sha256: "4f3c9a1b2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8".into(),
    };
    let r = TraceRecord::from_solution(
        model,
        "What is 12 + 30?",
        &solution.prompt,
        &solution,
        verification,
        true,
    );
    r.to_json()
}

/// Any JSON value, with the numbers and strings that stress a decoder.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(serde_json::json!(0)),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!(i64::MIN)),
            Just(serde_json::json!(1e308)),
            Just(serde_json::json!(-0.0)),
            Just(serde_json::json!(0.5)),
            any::<i64>().prop_map(|v| serde_json::json!(v)),
            any::<f64>().prop_map(|v| serde_json::json!(v)),
        ],
        prop_oneof![
            Just(String::new()),
            Just("x".repeat(70_000)),
            Just("0".repeat(64)),
            Just("\u{0}\u{fffd}\u{1F600}".into()),
            ".{0,16}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum TreeEdit {
    /// Replaces the value reached by the path (indices taken modulo the
    /// number of children) with another.
    Replace(Vec<usize>, Value),
    /// Removes the key or element reached by the path.
    Remove(Vec<usize>),
    /// Adds a key to the object reached by the path.
    AddKey(Vec<usize>, String, Value),
}

fn path() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..4)
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    prop_oneof![
        4 => (path(), any_json()).prop_map(|(p, v)| TreeEdit::Replace(p, v)),
        2 => path().prop_map(TreeEdit::Remove),
        1 => (path(), "[a-z_]{1,12}", any_json()).prop_map(|(p, k, v)| TreeEdit::AddKey(p, k, v)),
    ]
}

/// The child of `v` chosen by `i`, if `v` has children.
fn child(v: &mut Value, i: usize) -> Option<&mut Value> {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let n = m.len();
            m.values_mut().nth(i % n)
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(i % n)
        }
        _ => None,
    }
}

fn walk<'a>(mut v: &'a mut Value, path: &[usize]) -> &'a mut Value {
    for &i in path {
        if child(v, i).is_none() {
            break;
        }
        v = child(v, i).unwrap();
    }
    v
}

fn apply(root: &mut Value, e: &TreeEdit) {
    match e {
        TreeEdit::Replace(p, new) => *walk(root, p) = new.clone(),
        TreeEdit::Remove(p) if !p.is_empty() => {
            let (last, parent) = p.split_last().unwrap();
            match walk(root, parent) {
                Value::Object(m) if !m.is_empty() => {
                    let key = m.keys().nth(last % m.len()).unwrap().clone();
                    m.remove(&key);
                }
                Value::Array(a) if !a.is_empty() => {
                    let n = a.len();
                    a.remove(last % n);
                }
                _ => {}
            }
        }
        TreeEdit::AddKey(p, k, v) => {
            if let Value::Object(m) = walk(root, p) {
                m.insert(k.clone(), v.clone());
            }
        }
        _ => {}
    }
}

/// What every decoded record must satisfy.
fn check(json: &str) -> Result<(), TestCaseError> {
    if let Ok(r) = TraceRecord::from_json(json) {
        prop_assert!(r.validate().is_ok(), "accepted but invalid: {r:?}");
        let again = TraceRecord::from_json(&r.to_json());
        prop_assert_eq!(again.ok(), Some(r));
    }
    Ok(())
}

#[test]
fn the_base_record_decodes() {
    let json = base_json();
    TraceRecord::from_json(&json).unwrap();
}

proptest! {
    #![proptest_config(common::proptest_config("tests/proptest-regressions/trace_props.txt"))]

    /// The record's JSON tree edited one to four times.
    #[test]
    fn edited_records_are_errors_or_valid(edits in prop::collection::vec(tree_edit(), 1..=4)) {
        let mut v: Value = serde_json::from_str(&base_json()).unwrap();
        for e in &edits {
            apply(&mut v, e);
        }
        check(&v.to_string())?;
    }

    /// The record's text with characters replaced, inserted or cut, and
    /// possibly truncated.
    #[test]
    fn garbled_records_are_errors_or_valid(
        edits in prop::collection::vec((any::<usize>(), any::<char>(), 0..3u8), 1..=8),
        keep in 0.0..=1.0f64,
    ) {
        let mut chars: Vec<char> = base_json().chars().collect();
        for &(i, c, op) in &edits {
            let i = i % chars.len().max(1);
            match op {
                0 if !chars.is_empty() => chars[i] = c,
                1 => chars.insert(i.min(chars.len()), c),
                _ if !chars.is_empty() => {
                    chars.remove(i);
                }
                _ => {}
            }
        }
        chars.truncate((chars.len() as f64 * keep).ceil() as usize);
        check(&chars.into_iter().collect::<String>())?;
    }
}
