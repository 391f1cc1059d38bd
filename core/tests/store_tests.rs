//! The trace record and the SQLite trace store, on real files: round trips,
//! dedup, states, eviction, refusal of foreign and damaged files, redaction,
//! bundles, and kill -9 in the middle of writes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeloop_core::scaling::{Sample, Solution, Spend};
use edgeloop_core::trace::{
    chosen_sample, content_id, read_bundle, read_bundle_limited, DefaultRedactor, Inserted,
    ListFilter, ModelInfo, NoRedaction, RecordError, StoreError, StoreOptions, TraceRecord,
    TraceState, TraceStore, Verification, VerifierVote, SCHEMA_VERSION,
};

const MODEL_SHA: &str = "4f3c9a1b2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

fn model() -> ModelInfo {
    ModelInfo {
        name: "smollm2-135m-instruct".into(),
        sha256: MODEL_SHA.into(),
    }
}

fn solution(n: u64) -> Solution {
    let sample = |answer: u64, lp: f32| Sample {
        text: format!("Step 1: {n:08} plus {n:08}. Working it out carefully.\nAnswer: {answer:09}"),
        answer: Some(format!("{answer:09}")),
        mean_logprob: lp,
        tokens: 24,
    };
    Solution {
        strategy: "self-consistency",
        prompt: format!(
            "<|im_start|>user\nWhat is {n:08} + {n:08}?<|im_end|>\n<|im_start|>assistant\n"
        ),
        thinking: None,
        answer: Some(format!("{:09}", 2 * n)),
        confidence: 2.0 / 3.0,
        samples: vec![
            sample(2 * n, -0.4),
            sample(2 * n + 1, -0.1),
            sample(2 * n, -0.2),
        ],
        spend: Spend {
            samples: 3,
            tokens: 72,
            wall_secs: 0.5,
            limited: false,
            judgements: 0,
            scored_tokens: 0,
        },
    }
}

/// A record for question `n`, created at `1_700_000_000 + n`; records of
/// different `n` below 10^8 have the same JSON size.
fn record(n: u64, accepted: bool) -> TraceRecord {
    let question = format!("What is {n:08} + {n:08}?");
    let verification = Verification {
        accepted,
        votes: vec![VerifierVote {
            stage: "correctness".into(),
            verdict: Some(accepted),
            // Of equal JSON size either way ("true" is shorter than "false").
            judge_text: if accepted { "[[Y]] sure" } else { "[[N]] no" }.into(),
        }],
        spend: Default::default(),
    };
    let mut r = TraceRecord::from_solution(
        model(),
        &question,
        &format!("<|im_start|>user\n{question}<|im_end|>\n"),
        &solution(n),
        verification,
        true,
    );
    r.created_at = 1_700_000_000 + n;
    r
}

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("traces.sqlite")
}

fn capped(max_bytes: u64) -> StoreOptions {
    StoreOptions {
        max_bytes: Some(max_bytes),
        keep_rejected: true,
    }
}

fn ids(traces: &[edgeloop_core::trace::StoredTrace]) -> Vec<u64> {
    traces
        .iter()
        .map(|t| t.record.created_at - 1_700_000_000)
        .collect()
}

#[test]
fn record_from_solution_takes_the_best_sample_of_the_answer() {
    let s = solution(7);
    assert_eq!(chosen_sample(&s).unwrap().mean_logprob, -0.2);
    let r = record(7, true);
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    assert_eq!(r.trace, s.samples[2].text);
    assert_eq!(r.answer.as_deref(), Some("000000014"));
    assert_eq!(r.samples.len(), 3);
    assert_eq!(r.spend.tokens, 72);
    assert_eq!(r.id, content_id(MODEL_SHA, &r.question, &r.trace));
    assert_eq!(r.id.len(), 64);
    r.validate().unwrap();
    assert_eq!(TraceRecord::from_json(&r.to_json()).unwrap(), r);
}

#[test]
fn round_trip_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    let r = record(1, true);
    assert_eq!(store.insert(&r).unwrap(), Inserted::New);
    let got = store.get(&r.id).unwrap().unwrap();
    assert_eq!(got.record, r);
    assert_eq!(got.state, TraceState::Stored);
    assert_eq!(got.size, r.to_json().len() as u64);
    assert!(store.get(&"0".repeat(64)).unwrap().is_none());
    assert_eq!(
        store.ids_with_prefix(&r.id[..6], 2).unwrap(),
        [r.id.as_str()]
    );
    assert_eq!(
        store.ids_with_prefix(&r.id.to_uppercase(), 2).unwrap(),
        [r.id.as_str()]
    );
    assert!(store.ids_with_prefix("%", 2).unwrap().is_empty());
}

#[test]
fn inserting_twice_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    let r = record(1, true);
    assert_eq!(store.insert(&r).unwrap(), Inserted::New);
    let mut again = r.clone();
    again.created_at += 100;
    assert_eq!(store.insert(&again).unwrap(), Inserted::Duplicate);
    assert_eq!(store.stats().unwrap().traces, 1);
    assert_eq!(store.get(&r.id).unwrap().unwrap().record, r);

    // A rejected copy is replaced by an accepted one, never the reverse.
    let rejected = record(2, false);
    assert_eq!(store.insert(&rejected).unwrap(), Inserted::New);
    assert_eq!(store.insert(&rejected).unwrap(), Inserted::Duplicate);
    let accepted = record(2, true);
    assert_eq!(accepted.id, rejected.id);
    assert_eq!(store.insert(&accepted).unwrap(), Inserted::Upgraded);
    assert_eq!(store.insert(&rejected).unwrap(), Inserted::Duplicate);
    let got = store.get(&accepted.id).unwrap().unwrap();
    assert!(got.record.verification.accepted);
    let s = store.stats().unwrap();
    assert_eq!((s.traces, s.accepted, s.rejected), (2, 2, 0));
}

#[test]
fn rejected_traces_are_dropped_when_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_bytes: None,
        keep_rejected: false,
    };
    let mut store = TraceStore::open_with(store_path(&dir), options).unwrap();
    assert_eq!(
        store.insert(&record(1, false)).unwrap(),
        Inserted::Discarded
    );
    assert_eq!(store.insert(&record(2, true)).unwrap(), Inserted::New);
    assert_eq!(store.stats().unwrap().traces, 1);
}

#[test]
fn traces_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let records: Vec<_> = (0..20).map(|n| record(n, n % 3 != 0)).collect();
    {
        let mut store = TraceStore::open(&path).unwrap();
        for r in &records {
            store.insert(r).unwrap();
        }
        store.mark_reported(&[&records[1].id]).unwrap();
    }
    let store = TraceStore::open(&path).unwrap();
    for r in &records {
        assert_eq!(store.get(&r.id).unwrap().unwrap().record, *r);
    }
    let reported = store.get(&records[1].id).unwrap().unwrap();
    assert_eq!(reported.state, TraceState::Reported);
    assert_eq!(store.stats().unwrap().traces, 20);
}

#[test]
fn reporting_moves_accepted_traces_from_stored_to_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    // Inserted out of age order; unreported() goes by age.
    for n in [5, 1, 4, 2, 3] {
        store.insert(&record(n, n != 4)).unwrap();
    }
    let unreported = store.unreported(10).unwrap();
    let ages: Vec<u64> = unreported
        .iter()
        .map(|r| r.created_at - 1_700_000_000)
        .collect();
    assert_eq!(ages, [1, 2, 3, 5], "oldest first, accepted only");
    assert_eq!(store.unreported(2).unwrap().len(), 2);

    let first: Vec<String> = unreported[..2].iter().map(|r| r.id.clone()).collect();
    assert_eq!(store.mark_reported(&first).unwrap(), 2);
    assert_eq!(store.mark_reported(&first).unwrap(), 0, "already reported");
    let unknown = ["f".repeat(64)];
    assert_eq!(store.mark_reported(&unknown).unwrap(), 0);
    let ages: Vec<u64> = store
        .unreported(10)
        .unwrap()
        .iter()
        .map(|r| r.created_at - 1_700_000_000)
        .collect();
    assert_eq!(ages, [3, 5]);

    let s = store.stats().unwrap();
    assert_eq!(
        (
            s.traces,
            s.stored,
            s.reported,
            s.accepted,
            s.rejected,
            s.unreported_accepted
        ),
        (5, 3, 2, 4, 1, 2)
    );
    assert_eq!(s.record_bytes, 5 * record(1, true).to_json().len() as u64);
    assert!(s.file_bytes > 0);

    let all = store.list(&ListFilter::default()).unwrap();
    assert_eq!(ids(&all), [5, 4, 3, 2, 1], "newest first");
    let reported = ListFilter {
        state: Some(TraceState::Reported),
        ..Default::default()
    };
    assert_eq!(ids(&store.list(&reported).unwrap()), [2, 1]);
    let rejected = ListFilter {
        accepted: Some(false),
        ..Default::default()
    };
    assert_eq!(ids(&store.list(&rejected).unwrap()), [4]);
    let page = ListFilter {
        limit: Some(2),
        offset: 1,
        ..Default::default()
    };
    assert_eq!(ids(&store.list(&page).unwrap()), [4, 3]);
}

#[test]
fn eviction_takes_reported_then_rejected_and_never_unreported_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let size = record(1, true).to_json().len() as u64;
    assert_eq!(record(2, false).to_json().len() as u64, size);
    let mut store = TraceStore::open_with(store_path(&dir), capped(3 * size)).unwrap();
    store.insert(&record(1, true)).unwrap();
    store.insert(&record(2, false)).unwrap();
    store.insert(&record(3, true)).unwrap();
    store.mark_reported(&[&record(1, true).id]).unwrap();

    // Full: the reported trace goes first, though the rejected one is younger.
    assert_eq!(store.insert(&record(4, true)).unwrap(), Inserted::New);
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [4, 3, 2]);
    // Then the rejected one.
    assert_eq!(store.insert(&record(5, true)).unwrap(), Inserted::New);
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [5, 4, 3]);

    // Only unreported accepted traces left: a new one is refused, nothing lost.
    let e = store.insert(&record(6, true)).unwrap_err();
    assert!(matches!(e, StoreError::Full { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("traces.sqlite") && msg.contains("full"),
        "{msg}"
    );
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [5, 4, 3]);
    // A rejected one does not push out an accepted one either.
    assert!(matches!(
        store.insert(&record(7, false)),
        Err(StoreError::Full { .. })
    ));

    // Once the host has one, there is room again.
    store.mark_reported(&[&record(3, true).id]).unwrap();
    assert_eq!(store.insert(&record(6, true)).unwrap(), Inserted::New);
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [6, 5, 4]);

    // A record larger than the whole cap never fits.
    drop(store);
    let mut tiny = TraceStore::open_with(store_path(&dir), capped(size / 2)).unwrap();
    assert!(matches!(
        tiny.insert(&record(8, false)),
        Err(StoreError::Full { .. })
    ));
}

#[test]
fn evict_brings_a_store_under_a_lowered_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let size = record(1, true).to_json().len() as u64;
    {
        let mut store = TraceStore::open(&path).unwrap();
        for n in 1..=6 {
            store.insert(&record(n, n % 2 == 0)).unwrap();
        }
        // Reported: 2 and 4; rejected: 1, 3, 5; unreported accepted: 6.
        store
            .mark_reported(&[&record(2, true).id, &record(4, true).id])
            .unwrap();
        assert_eq!(store.evict().unwrap().traces, 0, "no cap, no eviction");
    }
    let mut store = TraceStore::open_with(&path, capped(3 * size)).unwrap();
    let e = store.evict().unwrap();
    assert_eq!((e.traces, e.bytes), (3, 3 * size));
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [6, 5, 3]);
    drop(store);
    let mut store = TraceStore::open_with(&path, capped(0)).unwrap();
    assert_eq!(store.evict().unwrap().traces, 2);
    assert_eq!(ids(&store.list(&ListFilter::default()).unwrap()), [6]);
}

fn file_digest(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn assert_untouched(path: &Path, before: &[u8]) {
    assert_eq!(file_digest(path), before, "{} was changed", path.display());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "a write-ahead log was created");
}

#[test]
fn a_foreign_sqlite_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for app_id in [0, 0x1234_5678] {
        let path = dir.path().join(format!("other-{app_id}.db"));
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "PRAGMA application_id = {app_id};
                 CREATE TABLE traces (x); INSERT INTO traces VALUES (1);"
            ))
            .unwrap();
        }
        let before = file_digest(&path);
        let e = TraceStore::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("another application"),
            "{msg}"
        );
        assert_untouched(&path, &before);
    }
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "notes.txt",
            b"these are my notes, not a database. ".repeat(10),
        ),
        ("short.bin", b"SQLite".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let e = TraceStore::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::NotADatabase { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
        assert_untouched(&path, &bytes);
    }
    let e = TraceStore::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

/// A closed store of `n` traces, its write-ahead log merged into the file.
fn filled_store(path: &Path, n: u64) -> u64 {
    let mut store = TraceStore::open(path).unwrap();
    for i in 0..n {
        store.insert(&record(i, true)).unwrap();
    }
    drop(store);
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_truncated_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let len = filled_store(&path, 200);
    assert!(len > 64 * 1024, "{len}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let e = TraceStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("traces.sqlite"), "{e}");
}

#[test]
fn a_store_with_damaged_pages_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let len = filled_store(&path, 200);
    let mut bytes = std::fs::read(&path).unwrap();
    // Scribble over every page but the first (the header stays valid).
    let mut x = 0x9e37_79b9u32;
    for b in bytes[4096..len as usize].iter_mut().step_by(7) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    match TraceStore::open(&path) {
        Err(e) => assert!(matches!(e, StoreError::Corrupt { .. }), "{e}"),
        Ok(store) => {
            // Whatever opened must still fail cleanly on reading.
            let e = store.list(&ListFilter::default()).unwrap_err();
            assert!(e.to_string().contains("traces.sqlite"), "{e}");
        }
    }
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    filled_store(&path, 1);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let e = TraceStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
}

#[test]
fn an_empty_file_becomes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/folder/traces.sqlite");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    let mut store = TraceStore::open(&path).unwrap();
    store.insert(&record(1, true)).unwrap();
    let fresh = dir.path().join("new/dir/traces.sqlite");
    TraceStore::open(&fresh).unwrap();
    assert!(fresh.is_file());
}

#[test]
fn a_store_whose_creation_was_cut_short_is_completed() {
    // Creation first commits an empty database without an application id.
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    let mut store = TraceStore::open(&path).unwrap();
    assert_eq!(store.insert(&record(1, true)).unwrap(), Inserted::New);
}

fn assert_invalid(r: &TraceRecord, field: &str) {
    let e = r.validate().unwrap_err();
    assert!(e.to_string().contains(field), "{field}: {e}");
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    let e = store.insert(r).unwrap_err();
    assert!(matches!(e, StoreError::InvalidRecord { .. }), "{e}");
    assert_eq!(store.stats().unwrap().traces, 0);
}

#[test]
fn invalid_records_are_refused_naming_the_field() {
    let good = record(1, true);
    let with = |f: &dyn Fn(&mut TraceRecord)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    assert_invalid(&with(&|r| r.schema_version = 2), "schema version 2");
    assert_invalid(&with(&|r| r.trace.push('!')), "does not match its content");
    assert_invalid(&with(&|r| r.id = "xyz".into()), "field id");
    assert_invalid(&with(&|r| r.model.sha256 = "ABC".into()), "model.sha256");
    let empty = |r: &mut TraceRecord| {
        r.question = "  ".into();
        r.id = content_id(&r.model.sha256, &r.question, &r.trace);
    };
    assert_invalid(&with(&empty), "field question is empty");
    assert_invalid(&with(&|r| r.model.name.clear()), "model.name");
    assert_invalid(&with(&|r| r.confidence = f64::NAN), "confidence");
    assert_invalid(&with(&|r| r.confidence = 1.5), "confidence");
    let lp = |r: &mut TraceRecord| r.samples[1].mean_logprob = f32::INFINITY;
    assert_invalid(&with(&lp), "samples[1].mean_logprob");
    assert_invalid(&with(&|r| r.spend.wall_secs = -1.0), "spend.wall_secs");
    let long = |r: &mut TraceRecord| {
        r.question = "x".repeat(100_000);
        r.id = content_id(&r.model.sha256, &r.question, &r.trace);
    };
    assert_invalid(&with(&long), "question is 100000 bytes");
    let judge = |r: &mut TraceRecord| r.verification.votes[0].judge_text = "j".repeat(2 << 20);
    assert_invalid(&with(&judge), "verification.votes[0].judge_text");
    let many = |r: &mut TraceRecord| r.samples = vec![r.samples[0].clone(); 2000];
    assert_invalid(&with(&many), "samples has 2000 entries");
}

#[test]
fn records_of_another_schema_or_shape_do_not_parse() {
    let json = record(1, true).to_json();
    let v2 = json.replace("\"schema_version\":1", "\"schema_version\":2");
    assert!(matches!(
        TraceRecord::from_json(&v2),
        Err(RecordError::SchemaVersion { found: 2, .. })
    ));
    let extra = json.replacen('{', "{\"surprise\":true,", 1);
    let e = TraceRecord::from_json(&extra).unwrap_err();
    assert!(e.to_string().contains("surprise"), "{e}");
    let e = TraceRecord::from_json(&json.replace("\"confidence\"", "\"x\"")).unwrap_err();
    assert!(matches!(e, RecordError::Json(_)), "{e}");
    let tampered = json.replace("What is", "What was");
    let e = TraceRecord::from_json(&tampered).unwrap_err();
    assert!(matches!(e, RecordError::IdMismatch { .. }), "{e}");
}

fn private_record() -> TraceRecord {
    let question =
        "My card is 4111 1111 1111 1111 and mail is ann.lee@example.org; what is 12 * 12?";
    let mut s = solution(1);
    for sample in &mut s.samples {
        sample.text = format!(
            "Call +1 555-123-4567 or ann.lee@example.org. 12 * 12 = 144.\n{}",
            sample.text
        );
    }
    TraceRecord::from_solution(
        model(),
        question,
        &format!("<user>{question}</user>"),
        &s,
        Verification {
            accepted: true,
            votes: vec![VerifierVote {
                stage: "cycle".into(),
                verdict: Some(true),
                judge_text: format!("The question was: {question} [[Y]]"),
            }],
            spend: Default::default(),
        },
        true,
    )
}

#[test]
fn redaction_masks_private_data_and_keeps_the_id() {
    let r = private_record();
    let red = r.redacted(&DefaultRedactor::default());
    assert_eq!(red.id, r.id);
    assert!(red.redacted && !r.redacted);
    red.validate().unwrap();
    let json = red.to_json();
    for secret in ["4111", "ann.lee", "example.org", "555-123"] {
        assert!(!json.contains(secret), "{secret} left in {json}");
    }
    assert!(red.question.contains("[number]") && red.question.contains("[email]"));
    assert!(red.prompt.contains("[email]"));
    assert!(red.trace.contains("[email]") && red.trace.contains("12 * 12 = 144"));
    assert!(red.samples.iter().all(|s| s.text.contains("[number]")));
    assert!(red.verification.votes[0].judge_text.contains("[email]"));
    // The redacted text no longer hashes to the id; only the flag makes that fine.
    let mut unflagged = red.clone();
    unflagged.redacted = false;
    assert!(matches!(
        unflagged.validate(),
        Err(RecordError::IdMismatch { .. })
    ));
    assert_eq!(r.redacted(&NoRedaction).question, r.question);
}

#[test]
fn bundles_are_written_whole_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    let mut records: Vec<_> = (1..=5).map(|n| record(n, n != 3)).collect();
    records.push(private_record());
    for r in &records {
        store.insert(r).unwrap();
    }
    store.mark_reported(&[&records[0].id]).unwrap();
    records.sort_by_key(|r| r.created_at);
    let expected: Vec<_> = records
        .iter()
        .map(|r| r.redacted(&DefaultRedactor::default()))
        .collect();

    for name in ["bundle.jsonl", "bundle.jsonl.gz"] {
        let out = dir.path().join(name);
        assert_eq!(
            store
                .export_bundle(&out, &DefaultRedactor::default())
                .unwrap(),
            6
        );
        let raw = std::fs::read(&out).unwrap();
        assert_eq!(
            name.ends_with(".gz"),
            raw.starts_with(&[0x1f, 0x8b]),
            "{name}"
        );
        let back = read_bundle(&out).unwrap();
        assert_eq!(back, expected, "{name}");
        assert!(!String::from_utf8_lossy(&raw).contains("ann.lee"));
    }
    let plain = std::fs::read_to_string(dir.path().join("bundle.jsonl")).unwrap();
    assert_eq!(plain.lines().count(), 6);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Unredacted export, empty store, and a folder that does not exist.
    let out = dir.path().join("raw.jsonl");
    store.export_bundle(&out, &NoRedaction).unwrap();
    assert!(read_bundle(&out)
        .unwrap()
        .iter()
        .any(|r| r.question.contains("ann.lee")));
    let empty = TraceStore::open(dir.path().join("empty.sqlite")).unwrap();
    let out = dir.path().join("empty.jsonl.gz");
    assert_eq!(
        empty
            .export_bundle(&out, &DefaultRedactor::default())
            .unwrap(),
        0
    );
    assert!(read_bundle(&out).unwrap().is_empty());
    let e = store
        .export_bundle(
            &dir.path().join("missing/b.jsonl"),
            &DefaultRedactor::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn bad_bundle_lines_are_reported_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.jsonl");
    let good = record(1, true).to_json();
    std::fs::write(&path, format!("{good}\n\n{{\"schema_version\":1}}\n")).unwrap();
    let e = read_bundle(&path).unwrap_err();
    assert!(e.to_string().contains("line 3"), "{e}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"\xff\xfe not utf-8\n").unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let e = read_bundle(&path).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

// Kill -9 in the middle of writes. The parent re-runs this test binary with
// only `crash_child` selected and CRASH_STORE set; the child writes until it
// is killed, printing each step only after the store call returned.

const CRASH_STORE: &str = "EDGELOOP_TEST_CRASH_STORE";
const CRASH_ROUND: &str = "EDGELOOP_TEST_CRASH_ROUND";
const CRASH_CAP: u64 = 64 * 1024;

#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_STORE) else {
        return; // Only does something when run by the crash test.
    };
    let round: u64 = std::env::var(CRASH_ROUND).unwrap().parse().unwrap();
    let mut store = TraceStore::open_with(&path, capped(CRASH_CAP)).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out).unwrap(); // off the line where the harness names the test
    for i in 0u64.. {
        let r = record(round * 1_000_000 + i, i % 4 != 3);
        store.insert(&r).unwrap();
        let kind = if r.verification.accepted {
            "accepted"
        } else {
            "rejected"
        };
        writeln!(out, "{kind} {}", r.id).unwrap();
        out.flush().unwrap();
        if i % 3 == 2 {
            // Report all but the newest two; announce before, confirm after.
            let pending = store.unreported(1000).unwrap();
            let ids: Vec<&str> = pending
                .iter()
                .rev()
                .skip(2)
                .map(|r| r.id.as_str())
                .collect();
            for id in &ids {
                writeln!(out, "reporting {id}").unwrap();
            }
            out.flush().unwrap();
            store.mark_reported(&ids).unwrap();
            for id in &ids {
                writeln!(out, "reported {id}").unwrap();
            }
            out.flush().unwrap();
        }
        if i % 10 == 9 {
            store.evict().unwrap();
        }
    }
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos.wrapping_mul(6_364_136_223_846_793_005) % max
}

/// How many times the kill -9 test kills its writer: `EDGELOOP_KILLS`
/// (8 unset, the short form CI runs).
fn kills() -> u64 {
    std::env::var("EDGELOOP_KILLS")
        .map(|v| v.parse().expect("EDGELOOP_KILLS is a count"))
        .unwrap_or(8)
}

#[test]
fn kill_9_during_writes_loses_no_accepted_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let mut accepted = HashSet::new();
    let mut reporting = HashSet::new();
    let mut reported = HashSet::new();
    let kills = kills();
    for round in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_STORE, &path)
            .env(CRASH_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    // A line cut by the kill has no newline and is not a report.
                    Ok(n) if n > 0 && line.ends_with(b"\n") => {
                        let _ = tx.send(String::from_utf8_lossy(&line).trim().to_string());
                    }
                    _ => return,
                }
            }
        });
        let mut lines = Vec::new();
        if round == 0 {
            // Possibly while the store is being created.
            std::thread::sleep(Duration::from_millis(5 + jitter_ms(40)));
        } else {
            // Once the child is writing, let it run for a random while.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(l) if l.starts_with("accepted") || l.starts_with("rejected") => {
                        lines.push(l);
                        break;
                    }
                    Ok(l) => lines.push(l),
                    Err(_) => {}
                }
            }
            assert!(!lines.is_empty(), "round {round}: the child never wrote");
            std::thread::sleep(Duration::from_millis(20 + jitter_ms(400)));
        }
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for l in &lines {
            match l.split_once(' ') {
                Some(("accepted", id)) => assert!(accepted.insert(id.to_string())),
                Some(("reporting", id)) => _ = reporting.insert(id.to_string()),
                Some(("reported", id)) => _ = reported.insert(id.to_string()),
                _ => {}
            }
        }

        let store = TraceStore::open_with(&path, capped(CRASH_CAP)).unwrap();
        for id in &accepted {
            let t = store.get(id).unwrap();
            if reporting.contains(id) {
                // Maybe reported, then maybe evicted; if still here, right state.
                if reported.contains(id) {
                    assert!(t.is_none_or(|t| t.state == TraceState::Reported), "{id}");
                }
            } else {
                let t = t.unwrap_or_else(|| panic!("round {round}: accepted trace {id} lost"));
                assert_eq!(t.state, TraceState::Stored);
                assert!(t.record.verification.accepted);
            }
        }
        let s = store.stats().unwrap();
        assert_eq!(
            s.traces as usize,
            store.list(&ListFilter::default()).unwrap().len()
        );
    }
    assert!(
        accepted.len() >= 7,
        "only {} accepted traces written",
        accepted.len()
    );
    assert!(!reported.is_empty());
    let s = TraceStore::open(&path).unwrap().stats().unwrap();
    assert!(s.record_bytes <= CRASH_CAP, "{s:?}");
    eprintln!(
        "{kills} kills: {} accepted traces written, {} reported, none lost or duplicated",
        accepted.len(),
        reported.len()
    );
}

// A full disk: the child runs under a file size limit (`ulimit -f`, with
// SIGXFSZ ignored so writes past it fail as they do on a full disk).

const FULL_STORE: &str = "EDGELOOP_TEST_FULL_STORE";

#[test]
fn disk_full_child() {
    let Some(path) = std::env::var_os(FULL_STORE) else {
        return; // Only does something when run by the disk-full test.
    };
    let mut store = TraceStore::open(&path).unwrap();
    println!(); // off the line where the harness names the test
    for i in 0u64..100_000 {
        let r = record(i, true);
        match store.insert(&r) {
            Ok(_) => println!("accepted {}", r.id),
            Err(e) => {
                println!("error {e}");
                return;
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn a_full_disk_is_an_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "disk_full_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FULL_STORE, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let error = stdout
        .lines()
        .find_map(|l| l.strip_prefix("error "))
        .unwrap_or_else(|| panic!("the child never ran out of space:\n{stdout}"));
    assert!(error.contains("traces.sqlite"), "{error}");
    let accepted: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("accepted "))
        .collect();
    assert!(!accepted.is_empty(), "{stdout}");

    let mut store = TraceStore::open(&path).unwrap();
    for id in &accepted {
        assert!(store.get(id).unwrap().is_some(), "{id} lost");
    }
    assert_eq!(store.stats().unwrap().traces as usize, accepted.len());
    assert_eq!(
        store.insert(&record(1_000_000, true)).unwrap(),
        Inserted::New
    );
}

#[test]
fn stored_files_hold_json_text_per_trace() {
    // The layout a later version migrates from: readable with plain SQLite.
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(&dir);
    filled_store(&path, 3);
    let c = rusqlite::Connection::open(&path).unwrap();
    let (v, app): (i64, i64) = c
        .query_row(
            "SELECT * FROM pragma_user_version, pragma_application_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((v, app), (1, 0x4544_4C54));
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut stmt = c.prepare("SELECT id, record FROM traces").unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (id, json) in rows {
        assert_eq!(TraceRecord::from_json(&json).unwrap().id, id);
    }
    let mut f = std::fs::File::open(&path).unwrap();
    let mut header = [0u8; 16];
    f.read_exact(&mut header).unwrap();
    assert_eq!(&header, b"SQLite format 3\0");
}

#[test]
fn a_batch_is_stored_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    store.insert(&record(1, true)).unwrap();
    let mut bad = record(3, true);
    bad.confidence = 2.0;
    let e = store
        .insert_batch(&[record(2, true), bad])
        .unwrap_err()
        .to_string();
    assert!(e.contains("confidence"), "{e}");
    assert_eq!(store.stats().unwrap().traces, 1);
    let got = store
        .insert_batch(&[
            record(1, true),
            record(2, true),
            record(2, true),
            record(4, false),
        ])
        .unwrap();
    assert_eq!(
        got,
        [
            Inserted::Duplicate,
            Inserted::New,
            Inserted::Duplicate,
            Inserted::New
        ]
    );
    assert_eq!(store.stats().unwrap().traces, 3);
}

#[test]
fn reportable_traces_are_accepted_unreported_and_consented() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    for n in 1..=6 {
        let mut r = record(n, n != 2);
        if n == 3 {
            r = TraceRecord::new(edgeloop_core::trace::TraceParts {
                model: r.model.clone(),
                created_at: r.created_at,
                question: r.question.clone(),
                prompt: r.prompt.clone(),
                answer: r.answer.clone(),
                trace: r.trace.clone(),
                samples: r.samples.clone(),
                strategy: r.strategy.clone(),
                confidence: r.confidence,
                spend: r.spend,
                verification: r.verification.clone(),
                consent: false,
            });
        }
        store.insert(&r).unwrap();
    }
    store.mark_reported(&[record(4, true).id]).unwrap();
    let got: Vec<u64> = store
        .reportable(10)
        .unwrap()
        .iter()
        .map(|r| r.created_at - 1_700_000_000)
        .collect();
    assert_eq!(got, [1, 5, 6]);
    assert_eq!(store.reportable_count().unwrap(), 3);
    assert_eq!(store.reportable(2).unwrap().len(), 2);
}

#[test]
fn a_bundle_past_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TraceStore::open(store_path(&dir)).unwrap();
    for n in 0..20 {
        store.insert(&record(n, true)).unwrap();
    }
    let out = dir.path().join("b.jsonl.gz");
    store.export_bundle(&out, &NoRedaction).unwrap();
    assert_eq!(read_bundle_limited(&out, 10 << 20).unwrap().len(), 20);
    let e = read_bundle_limited(&out, 5000).unwrap_err().to_string();
    assert!(e.contains("more than 5000 bytes"), "{e}");
}

/// Writes the seed corpora of the trace record and upload body fuzz
/// targets (`fuzz/corpus/`). Run with `cargo test -p edgeloop-core --test
/// store_tests -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use edgeloop_core::trace::BATCH_SCHEMA_VERSION;
    use flate2::{write::GzEncoder, Compression};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let gzip = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let accepted = record(1, true);
    let rejected = record(2, false);
    write(
        "trace_record",
        "accepted.json",
        accepted.to_json().as_bytes(),
    );
    write(
        "trace_record",
        "rejected.json",
        rejected.to_json().as_bytes(),
    );
    let mut other: serde_json::Value = serde_json::from_str(&accepted.to_json()).unwrap();
    other["schema_version"] = 2.into();
    write(
        "trace_record",
        "other-version.json",
        other.to_string().as_bytes(),
    );

    let batch = format!(
        r#"{{"schema_version":{BATCH_SCHEMA_VERSION},"traces":[{},{}]}}"#,
        accepted.to_json(),
        rejected.to_json()
    );
    // The first byte picks the encoding: even gzip, odd none.
    let with = |sel: u8, body: &[u8]| [&[sel][..], body].concat();
    write(
        "upload_body",
        "batch.json.gz",
        &with(0, &gzip(batch.as_bytes())),
    );
    write("upload_body", "batch.json", &with(1, batch.as_bytes()));
    write(
        "upload_body",
        "empty-batch.json.gz",
        &with(
            0,
            &gzip(format!(r#"{{"schema_version":{BATCH_SCHEMA_VERSION},"traces":[]}}"#).as_bytes()),
        ),
    );
    // 4 MiB of zeros in about 4 KB: past the fuzz target's 1 MiB cap.
    write(
        "upload_body",
        "bomb.gz",
        &with(0, &gzip(&vec![0u8; 4 << 20])),
    );
}
