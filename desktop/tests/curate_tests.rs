//! `edgeloop-trainer curate` on real host stores: each filter, exact and
//! near duplicates, the cap per question, a split that depends on the seed
//! and not on the order traces arrived in, and outputs that read back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use edgeloop_core::trace::{
    ModelInfo, TraceParts, TraceRecord, TraceSample, TraceSpend, TraceStore, Verification,
    VerifierVote,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{ListAccessor, RowAccessor};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MODEL_SHA: &str = "4f3c9a1b2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const INSTRUCTION: &str = "Give the final answer on a last line starting with \"Answer:\".";

/// What a test varies in a record; the rest is as a device writes it.
struct Spec<'a> {
    question: &'a str,
    trace: &'a str,
    answer: &'a str,
    /// The samples' answers; the record's answer is `answer`.
    samples: &'a [&'a str],
    accepted: bool,
    confidence: f64,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            question: "What is 1 + 1?",
            trace: "1 plus 1 is 2.\nAnswer: 2",
            answer: "2",
            samples: &["2"],
            accepted: true,
            confidence: 1.0,
        }
    }
}

fn record(s: Spec) -> TraceRecord {
    let prompt = format!(
        "<|im_start|>user\n{}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n",
        s.question
    );
    TraceRecord::new(TraceParts {
        model: ModelInfo {
            name: "smollm2-135m-instruct".into(),
            sha256: MODEL_SHA.into(),
        },
        created_at: 1_700_000_000,
        question: s.question.into(),
        prompt,
        answer: Some(s.answer.into()),
        trace: s.trace.into(),
        samples: s
            .samples
            .iter()
            .map(|a| TraceSample {
                text: s.trace.into(),
                answer: Some((*a).into()),
                mean_logprob: -0.3,
                tokens: 20,
            })
            .collect(),
        strategy: "self-consistency".into(),
        confidence: s.confidence,
        spend: TraceSpend {
            samples: s.samples.len() as u64,
            tokens: 20,
            wall_secs: 0.1,
        },
        verification: Verification {
            accepted: s.accepted,
            votes: vec![VerifierVote {
                stage: "correctness".into(),
                verdict: Some(s.accepted),
                judge_text: if s.accepted { "[[Y]]" } else { "[[N]]" }.into(),
            }],
            spend: TraceSpend::default(),
        },
        consent: true,
    })
}

/// A host store at `path` holding `records`, inserted in that order.
fn store(path: &Path, records: &[TraceRecord]) {
    let mut store = TraceStore::open(path).unwrap();
    for r in records {
        store.insert(r).unwrap();
    }
}

fn curate(db: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeloop-trainer"))
        .args(["curate", "--db"])
        .arg(db)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn curate_ok(db: &Path, out: &Path, args: &[&str]) -> Value {
    let o = curate(db, out, args);
    assert!(
        o.status.success(),
        "curate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    manifest(out)
}

fn manifest(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

/// (user, assistant) of each line of a JSONL file, checking its shape.
fn read_jsonl(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let m = v["messages"].as_array().unwrap();
            assert_eq!(m.len(), 2);
            assert_eq!(m[0]["role"], "user");
            assert_eq!(m[1]["role"], "assistant");
            (
                m[0]["content"].as_str().unwrap().to_string(),
                m[1]["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (id, user, assistant) of each row of a Parquet file written by curate.
fn read_parquet(path: &Path) -> Vec<(String, String, String)> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let fields: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.path().string())
        .collect();
    assert_eq!(
        fields,
        [
            "messages.list.element.role",
            "messages.list.element.content",
            "id"
        ]
    );
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let messages = row.get_list(0).unwrap();
            assert_eq!(messages.len(), 2);
            let user = messages.get_group(0).unwrap();
            let assistant = messages.get_group(1).unwrap();
            assert_eq!(user.get_string(0).unwrap(), "user");
            assert_eq!(assistant.get_string(0).unwrap(), "assistant");
            (
                row.get_string(1).unwrap().clone(),
                user.get_string(1).unwrap().clone(),
                assistant.get_string(1).unwrap().clone(),
            )
        })
        .collect()
}

fn count(m: &Value, key: &str) -> u64 {
    m["counts"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key}"))
}

fn ids(m: &Value, side: &str) -> BTreeSet<String> {
    m[format!("{side}_ids")]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn all_ids(m: &Value) -> BTreeSet<String> {
    let mut all = ids(m, "train");
    all.extend(ids(m, "val"));
    all
}

/// Every record leaves at one step: the drops and the kept add up to those read.
fn assert_counts_add_up(m: &Value) {
    let dropped: u64 = [
        "rejected",
        "too_few_votes",
        "wrong_length",
        "exact_duplicates",
        "near_duplicates",
        "over_question_cap",
    ]
    .iter()
    .map(|k| count(m, k))
    .sum();
    assert_eq!(count(m, "read"), dropped + count(m, "kept"));
    assert_eq!(count(m, "kept"), count(m, "train") + count(m, "val"));
    assert_eq!(
        count(m, "clusters"),
        count(m, "train_clusters") + count(m, "val_clusters")
    );
    assert_eq!(ids(m, "train").len() as u64, count(m, "train"));
    assert_eq!(ids(m, "val").len() as u64, count(m, "val"));
}

#[test]
fn each_filter_drops_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let good = record(Spec::default());
    let rejected = record(Spec {
        question: "What is 2 + 2?",
        trace: "2 plus 2 is 4.\nAnswer: 4",
        answer: "4",
        samples: &["4", "4"],
        accepted: false,
        ..Spec::default()
    });
    // One of three samples agrees: below --min-votes 2.
    let one_vote = record(Spec {
        question: "What is 3 + 3?",
        trace: "3 plus 3 is 6.\nAnswer: 6",
        answer: "6",
        samples: &["6", "5", "7"],
        ..Spec::default()
    });
    // Two of five agree: enough votes, below --min-share 0.5.
    let low_share = record(Spec {
        question: "What is 4 + 4?",
        trace: "4 plus 4 is 8.\nAnswer: 8",
        answer: "8",
        samples: &["8", "8", "7", "9", "6"],
        ..Spec::default()
    });
    let too_short = record(Spec {
        question: "What is 5 + 5?",
        trace: "10",
        answer: "10",
        samples: &["10", "10"],
        ..Spec::default()
    });
    let long_trace = format!("{}\nAnswer: 12", "6 plus 6 is 12. ".repeat(40));
    let too_long = record(Spec {
        question: "What is 6 + 6?",
        trace: &long_trace,
        answer: "12",
        samples: &["12", "12"],
        ..Spec::default()
    });
    let good2 = record(Spec {
        question: "What is 7 + 7?",
        trace: "7 plus 7 is 14.\nAnswer: 14",
        answer: "14",
        samples: &["14", "14", "13"],
        ..Spec::default()
    });
    store(
        &db,
        &[
            good.clone(),
            rejected.clone(),
            one_vote,
            low_share,
            too_short,
            too_long,
            good2.clone(),
        ],
    );
    let filters = [
        "--min-votes",
        "2",
        "--min-share",
        "0.5",
        "--min-chars",
        "10",
        "--max-chars",
        "200",
    ];

    // A single sample is one vote: below --min-votes 2 as well.
    let out = dir.path().join("a");
    let m = curate_ok(&db, &out, &filters);
    assert_eq!(count(&m, "read"), 7);
    assert_eq!(count(&m, "rejected"), 1);
    assert_eq!(count(&m, "too_few_votes"), 3);
    assert_eq!(count(&m, "wrong_length"), 2);
    assert_eq!(all_ids(&m), BTreeSet::from([good2.id.clone()]));
    assert_counts_add_up(&m);

    let out = dir.path().join("b");
    let mut args = filters.to_vec();
    args.push("--include-rejected");
    let m = curate_ok(&db, &out, &args);
    assert_eq!(count(&m, "rejected"), 0);
    assert_eq!(
        all_ids(&m),
        BTreeSet::from([good2.id.clone(), rejected.id.clone()])
    );
    assert_eq!(m["options"]["include_rejected"], true);
    assert_counts_add_up(&m);

    // The defaults keep every accepted trace with an agreeing sample.
    let out = dir.path().join("c");
    let m = curate_ok(&db, &out, &[]);
    assert_eq!(count(&m, "rejected"), 1);
    assert_eq!(count(&m, "kept"), 6);
    assert!(all_ids(&m).contains(&good.id));
    assert_counts_add_up(&m);
}

#[test]
fn exact_and_near_duplicates_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let add = "3 plus 4 is 7.\nAnswer: 7";
    let farm = "The farmer had 12 and bought 7, so 19.\nAnswer: 19";
    let records = [
        // The same question written twice, the same trace: exact duplicates.
        record(Spec {
            question: "What is 3 + 4?",
            trace: add,
            answer: "7",
            samples: &["7", "7"],
            confidence: 0.9,
            ..Spec::default()
        }),
        record(Spec {
            question: "what is 3+4 ?",
            trace: add,
            answer: "7",
            samples: &["7", "7"],
            confidence: 0.8,
            ..Spec::default()
        }),
        // A paraphrase with the same trace: a near duplicate.
        record(Spec {
            question:
                "A farmer has 12 apples and buys 7 more. How many apples does the farmer have now?",
            trace: farm,
            answer: "19",
            samples: &["19"],
            ..Spec::default()
        }),
        record(Spec {
            question:
                "A farmer has 12 apples and buys 7 more. How many apples does the farmer have?",
            trace: farm,
            answer: "19",
            samples: &["19"],
            confidence: 0.5,
            ..Spec::default()
        }),
        // The same words with another number: another problem, kept.
        record(Spec {
            question:
                "A farmer has 13 apples and buys 7 more. How many apples does the farmer have now?",
            trace: "The farmer had 13 and bought 7, so 20.\nAnswer: 20",
            answer: "20",
            samples: &["20"],
            ..Spec::default()
        }),
        // Another trace for the paraphrase: kept, in the same cluster.
        record(Spec {
            question:
                "A farmer has 12 apples and buys 7 more. How many apples does the farmer have?",
            trace: "12 + 7 = 19.\nAnswer: 19",
            answer: "19",
            samples: &["19"],
            confidence: 0.7,
            ..Spec::default()
        }),
    ];
    store(&db, &records);
    let out = dir.path().join("out");
    let m = curate_ok(&db, &out, &["--val-fraction", "0"]);
    assert_eq!(count(&m, "exact_duplicates"), 1);
    assert_eq!(count(&m, "near_duplicates"), 1);
    assert_eq!(count(&m, "kept"), 4);
    // 3 + 4; the two farmer questions with 12 apples; the one with 13.
    assert_eq!(count(&m, "clusters"), 3);
    // The more confident copy of each duplicate is the one kept.
    let kept = all_ids(&m);
    assert!(kept.contains(&records[0].id) && !kept.contains(&records[1].id));
    assert!(kept.contains(&records[2].id) && !kept.contains(&records[3].id));
    assert!(kept.contains(&records[4].id) && kept.contains(&records[5].id));
    assert_counts_add_up(&m);

    // A threshold of 1 asks for identical shingles: the paraphrases stay.
    let out = dir.path().join("strict");
    let m = curate_ok(
        &db,
        &out,
        &["--val-fraction", "0", "--near-dup-threshold", "1"],
    );
    assert_eq!(count(&m, "near_duplicates"), 0);
    assert_eq!(count(&m, "clusters"), 4);
}

#[test]
fn at_most_m_traces_per_question_the_most_confident() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let traces: Vec<String> = (0..5)
        .map(|i| format!("Way {i}: 9 times 9 is 81.\nAnswer: 81"))
        .collect();
    let records: Vec<TraceRecord> = traces
        .iter()
        .enumerate()
        .map(|(i, t)| {
            record(Spec {
                question: "What is 9 * 9?",
                trace: t,
                answer: "81",
                samples: &["81"],
                confidence: 0.1 * (i + 1) as f64,
                ..Spec::default()
            })
        })
        .collect();
    store(&db, &records);
    let out = dir.path().join("out");
    let m = curate_ok(&db, &out, &["--max-per-question", "2"]);
    assert_eq!(count(&m, "over_question_cap"), 3);
    assert_eq!(
        all_ids(&m),
        BTreeSet::from([records[3].id.clone(), records[4].id.clone()])
    );
    assert_counts_add_up(&m);
}

/// Questions with distinct numbers, so none is a near duplicate of another.
fn many_records(n: usize) -> Vec<TraceRecord> {
    (0..n)
        .map(|i| {
            let q = format!("What is {i} + {}?", i + 11);
            let t = format!(
                "{i} plus {} is {}.\nAnswer: {}",
                i + 11,
                2 * i + 11,
                2 * i + 11
            );
            let a = (2 * i + 11).to_string();
            record(Spec {
                question: &q,
                trace: &t,
                answer: &a,
                samples: &[a.as_str()],
                ..Spec::default()
            })
        })
        .collect()
}

fn file_bytes(out: &Path) -> BTreeMap<String, Vec<u8>> {
    ["train.jsonl", "val.jsonl", "train.parquet", "val.parquet"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(out.join(f)).unwrap()))
        .collect()
}

#[test]
fn split_depends_on_the_seed_not_on_the_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let records = many_records(300);
    let forward = dir.path().join("forward.sqlite");
    store(&forward, &records);
    let backward = dir.path().join("backward.sqlite");
    let mut reversed = records.clone();
    reversed.reverse();
    store(&backward, &reversed);

    let a = dir.path().join("a");
    let ma = curate_ok(&forward, &a, &["--seed", "7"]);
    let b = dir.path().join("b");
    let mb = curate_ok(&backward, &b, &["--seed", "7"]);
    assert_eq!(file_bytes(&a), file_bytes(&b));
    assert_eq!(ma["files"], mb["files"]);
    assert_eq!(ids(&ma, "val"), ids(&mb, "val"));
    let val = count(&ma, "val");
    assert!((10..=60).contains(&val), "{val} of 300 in validation");

    let c = dir.path().join("c");
    let mc = curate_ok(&forward, &c, &["--seed", "8"]);
    assert_ne!(ids(&ma, "val"), ids(&mc, "val"));
    assert_eq!(all_ids(&ma), all_ids(&mc));
    assert!(ids(&ma, "train").is_disjoint(&ids(&ma, "val")));
    assert_counts_add_up(&ma);
}

#[test]
fn a_near_duplicate_cluster_lands_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let mut records = Vec::new();
    let mut cluster_of = HashMap::new();
    for n in 20..80 {
        for (k, tail) in ["left?", "left now?", "left at the end?"]
            .iter()
            .enumerate()
        {
            let q = format!("Tom has {n} marbles and gives 3 of them to Ann. How many marbles does Tom have {tail}");
            let t = format!("Way {k}: {n} minus 3 is {}.\nAnswer: {}", n - 3, n - 3);
            let a = (n - 3).to_string();
            let r = record(Spec {
                question: &q,
                trace: &t,
                answer: &a,
                samples: &[a.as_str()],
                ..Spec::default()
            });
            cluster_of.insert(r.id.clone(), n);
            records.push(r);
        }
    }
    store(&db, &records);
    for seed in ["1", "2", "3"] {
        let out = dir.path().join(seed);
        let m = curate_ok(
            &db,
            &out,
            &[
                "--seed",
                seed,
                "--val-fraction",
                "0.5",
                "--near-dup-threshold",
                "0.6",
            ],
        );
        assert_eq!(count(&m, "kept"), 180);
        assert_eq!(count(&m, "clusters"), 60);
        let train: BTreeSet<u32> = ids(&m, "train").iter().map(|i| cluster_of[i]).collect();
        let val: BTreeSet<u32> = ids(&m, "val").iter().map(|i| cluster_of[i]).collect();
        assert!(!train.is_empty() && !val.is_empty());
        assert!(train.is_disjoint(&val), "a cluster on both sides");
        assert_counts_add_up(&m);
    }
}

#[test]
fn outputs_read_back_and_match_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let mut records = many_records(40);
    // A prompt that does not hold the question: the question is used.
    let mut odd = record(Spec {
        question: "What is 100 + 1?",
        trace: "100 plus 1 is 101.\nAnswer: 101",
        answer: "101",
        samples: &["101"],
        ..Spec::default()
    });
    odd.prompt = "<|im_start|>user\nsomething else<|im_end|>\n".into();
    records.push(odd.clone());
    store(&db, &records);
    let out = dir.path().join("out");
    let m = curate_ok(&db, &out, &["--val-fraction", "0.3"]);
    assert_counts_add_up(&m);
    assert_eq!(count(&m, "kept"), 41);

    let by_id: HashMap<&str, &TraceRecord> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    for side in ["train", "val"] {
        let lines = read_jsonl(&out.join(format!("{side}.jsonl")));
        let rows = read_parquet(&out.join(format!("{side}.parquet")));
        let listed: Vec<String> = m[format!("{side}_ids")]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(lines.len(), rows.len());
        assert_eq!(lines.len(), listed.len());
        assert!(!lines.is_empty());
        for ((line, row), id) in lines.iter().zip(&rows).zip(&listed) {
            assert_eq!(&row.0, id);
            assert_eq!((&line.0, &line.1), (&row.1, &row.2));
            let r = by_id[id.as_str()];
            assert_eq!(line.1, r.trace);
            if r.id == odd.id {
                assert_eq!(line.0, r.question);
            } else {
                assert_eq!(line.0, format!("{}\n{INSTRUCTION}", r.question));
            }
        }
        for f in [format!("{side}.jsonl"), format!("{side}.parquet")] {
            let digest: String = Sha256::digest(std::fs::read(out.join(&f)).unwrap())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(m["files"][&f], digest.as_str(), "{f}");
        }
    }
    assert_eq!(m["options"]["val_fraction"], 0.3);
    assert_eq!(m["options"]["seed"], 0);
}

#[test]
fn refuses_an_empty_store_and_nonsense_options() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let out = dir.path().join("out");
    let err = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(curate(&db, &out, &[])).contains("no host store"));
    store(&db, &[]);
    assert!(err(curate(&db, &out, &[])).contains("holds no traces"));
    store(&db, &many_records(3));
    let e = err(curate(&db, &out, &["--val-fraction", "1.5"]));
    assert!(e.contains("--val-fraction must be between 0 and 1"), "{e}");
    let e = err(curate(&db, &out, &["--min-share=-0.1"]));
    assert!(e.contains("--min-share"), "{e}");
    let e = err(curate(
        &db,
        &out,
        &["--min-chars", "50", "--max-chars", "10"],
    ));
    assert!(e.contains("--min-chars"), "{e}");
    let e = err(curate(&db, &out, &["--min-votes", "5"]));
    assert!(e.contains("no trace passed the filters"), "{e}");
    assert!(!out.join("manifest.json").exists());
}
