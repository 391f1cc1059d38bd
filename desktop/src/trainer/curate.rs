//! `curate`: from the host's trace store to a chat fine-tuning dataset.
//!
//! The steps, in order, each counted in the manifest: accepted traces only;
//! enough samples agreeing with the answer; trace length; exact duplicates
//! (same normalized question and trace); near duplicates (a question close
//! to another by MinHash, with the same trace); at most M traces per
//! question; a train/validation split by question.
//!
//! Questions close to each other form one cluster: the cap and the split
//! treat a cluster as one question, so no paraphrase of a validation
//! question is trained on. The result depends only on the set of records
//! and the options, never on the order the store returns them in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches};
use edgeloop_core::trace::{ListFilter, TraceRecord, TraceStore};
use indicatif::{ProgressBar, ProgressStyle};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What `curate` keeps and how it splits (also its command-line flags).
#[derive(Args, Clone, Debug, Serialize)]
pub struct CurateOptions {
    /// Fewest samples whose answer is the trace's answer.
    #[arg(long, default_value_t = 1)]
    pub min_votes: usize,
    /// Smallest share of the samples agreeing with the answer (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub min_share: f64,
    /// Most traces per question (near duplicates count as one question);
    /// the most confident are kept.
    #[arg(long, default_value_t = 4)]
    pub max_per_question: usize,
    /// Shortest trace, in characters.
    #[arg(long, default_value_t = 1)]
    pub min_chars: usize,
    /// Longest trace, in characters.
    #[arg(long, default_value_t = 16_384)]
    pub max_chars: usize,
    /// MinHash Jaccard estimate from which two questions are near
    /// duplicates (0 to 1).
    #[arg(long, default_value_t = 0.8)]
    pub near_dup_threshold: f64,
    /// Share of the question clusters held out for validation (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seeds the MinHash functions and the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep traces the verifier rejected (a control without its
    /// filtering; not for real training data).
    #[arg(long)]
    pub include_rejected: bool,
}

impl Default for CurateOptions {
    /// The command line's defaults.
    fn default() -> Self {
        let cmd = CurateOptions::augment_args(clap::Command::new("curate"));
        CurateOptions::from_arg_matches(&cmd.get_matches_from(["curate"]))
            .expect("the defaults parse")
    }
}

impl CurateOptions {
    /// Refuses options that cannot mean anything.
    pub fn check(&self) -> Result<()> {
        let unit = |name: &str, v: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1, got {v}");
            }
            Ok(())
        };
        unit("--min-share", self.min_share)?;
        unit("--near-dup-threshold", self.near_dup_threshold)?;
        unit("--val-fraction", self.val_fraction)?;
        if self.near_dup_threshold == 0.0 {
            bail!("--near-dup-threshold must be above 0 (0 would make every question a duplicate)");
        }
        if self.max_per_question == 0 {
            bail!("--max-per-question must be at least 1");
        }
        if self.min_chars > self.max_chars {
            bail!(
                "--min-chars ({}) is more than --max-chars ({})",
                self.min_chars,
                self.max_chars
            );
        }
        Ok(())
    }
}

/// How many records each step took in and let through.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub read: usize,
    pub rejected: usize,
    pub too_few_votes: usize,
    pub wrong_length: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    pub over_question_cap: usize,
    pub kept: usize,
    pub clusters: usize,
    pub train: usize,
    pub val: usize,
    pub train_clusters: usize,
    pub val_clusters: usize,
}

/// One training example.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: String,
    /// The user turn as the device asked it.
    pub user: String,
    pub trace: String,
}

/// The dataset before it is written.
#[derive(Debug, Default)]
pub struct Curated {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub counts: Counts,
}

/// A record that passed the per-record filters.
struct Candidate {
    record: TraceRecord,
    question: String,
    trace: String,
    share: f64,
}

/// Samples agreeing with the record's answer, and their share of all
/// samples (0 without an answer or samples).
pub fn votes(r: &TraceRecord) -> (usize, f64) {
    let Some(answer) = &r.answer else {
        return (0, 0.0);
    };
    let agree = r
        .samples
        .iter()
        .filter(|s| s.answer.as_deref().map(str::trim) == Some(answer.trim()))
        .count();
    let share = if r.samples.is_empty() {
        0.0
    } else {
        agree as f64 / r.samples.len() as f64
    };
    (agree, share)
}

/// The question as compared for duplicates: lowercased, words and single
/// punctuation marks separated by one space, so "What is 3 + 4?" and
/// "what is 3+4 ?" are the same while "3 4" and "34" stay apart.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_word = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if !in_word && !out.is_empty() {
                out.push(' ');
            }
            out.push(c);
            in_word = true;
        } else if c.is_whitespace() {
            in_word = false;
        } else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push(c);
            in_word = false;
        }
    }
    out
}

/// The numbers a normalized question holds, in order. Questions that differ
/// in a number are different problems however alike their words, so they
/// are never near duplicates.
fn numbers(normalized: &str) -> Vec<&str> {
    normalized
        .split(' ')
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .collect()
}

/// The user turn the device sent, recovered from the rendered prompt: from
/// the question to the first end-of-turn marker after it. The device asks
/// the question followed by an answer-format instruction, and training on
/// exactly that keeps the student's prompt the one it will be asked.
/// Falls back to the bare question when the prompt does not hold it or no
/// known marker closes the turn.
pub fn user_turn(r: &TraceRecord) -> String {
    const END_MARKERS: &[&str] = &[
        "<|im_end|>",
        "<|eot_id|>",
        "<|end|>",
        "<|endoftext|>",
        "<end_of_turn>",
        "</s>",
        "[/INST]",
        "<\u{ff5c}end",
        "<|assistant|>",
    ];
    let Some(start) = r.prompt.rfind(r.question.as_str()) else {
        return r.question.clone();
    };
    let rest = &r.prompt[start..];
    let after = &rest[r.question.len()..];
    match END_MARKERS.iter().filter_map(|m| after.find(m)).min() {
        Some(end) => rest[..r.question.len() + end].trim_end().to_string(),
        None => r.question.clone(),
    }
}

/// Runs every step on `records` (in any order).
pub fn curate(records: Vec<TraceRecord>, opts: &CurateOptions, bar: &ProgressBar) -> Curated {
    let mut counts = Counts {
        read: records.len(),
        ..Counts::default()
    };

    // Per-record filters.
    let mut candidates = Vec::new();
    for r in records {
        bar.inc(1);
        if !r.verification.accepted && !opts.include_rejected {
            counts.rejected += 1;
            continue;
        }
        let (agree, share) = votes(&r);
        if agree < opts.min_votes || share < opts.min_share {
            counts.too_few_votes += 1;
            continue;
        }
        let chars = r.trace.chars().count();
        if chars < opts.min_chars || chars > opts.max_chars || r.trace.trim().is_empty() {
            counts.wrong_length += 1;
            continue;
        }
        candidates.push(Candidate {
            question: normalize(&r.question),
            trace: normalize_trace(&r.trace),
            share,
            record: r,
        });
    }
    // Best first everywhere below: the first of a duplicate group is kept.
    candidates.sort_by(better);

    // Exact duplicates.
    let mut seen = HashSet::new();
    candidates.retain(|c| {
        let fresh = seen.insert((c.question.clone(), c.trace.clone()));
        if !fresh {
            counts.exact_duplicates += 1;
        }
        fresh
    });

    // Near-duplicate clusters of the distinct questions. Sorted, so a
    // cluster's root (its smallest index) is its smallest question, whatever
    // the input order: that question names the cluster.
    let questions: Vec<String> = {
        let mut q: Vec<String> = candidates.iter().map(|c| c.question.clone()).collect();
        q.sort_unstable();
        q.dedup();
        q
    };
    let root = cluster(&questions, opts);
    let index: HashMap<&str, usize> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| (q.as_str(), i))
        .collect();

    // Near duplicates: the same trace under another form of the question.
    let mut seen = HashSet::new();
    let candidates: Vec<(usize, Candidate)> = candidates
        .into_iter()
        .map(|c| (root[index[c.question.as_str()]], c))
        .filter(|(canon, c)| {
            let fresh = seen.insert((*canon, c.trace.clone()));
            if !fresh {
                counts.near_duplicates += 1;
            }
            fresh
        })
        .collect();

    // The cap per cluster, then the split; BTreeMap for a stable output order.
    let mut by_cluster: BTreeMap<usize, Vec<Candidate>> = BTreeMap::new();
    for (canon, c) in candidates {
        let list = by_cluster.entry(canon).or_default();
        if list.len() < opts.max_per_question {
            list.push(c);
        } else {
            counts.over_question_cap += 1;
        }
    }
    let mut out = Curated::default();
    counts.clusters = by_cluster.len();
    for (canon, list) in by_cluster {
        let val = is_validation(&questions[canon], opts);
        if val {
            counts.val_clusters += 1;
        } else {
            counts.train_clusters += 1;
        }
        let side = if val { &mut out.val } else { &mut out.train };
        for c in list {
            side.push(Example {
                id: c.record.id.clone(),
                user: user_turn(&c.record),
                trace: c.record.trace.clone(),
            });
        }
    }
    counts.train = out.train.len();
    counts.val = out.val.len();
    counts.kept = counts.train + counts.val;
    out.counts = counts;
    out
}

/// The trace as compared for duplicates: whitespace runs made one space.
fn normalize_trace(trace: &str) -> String {
    trace.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Most confident first, then the larger vote share, then the smaller id
/// (a total order, so ties never depend on the input order).
fn better(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.record
        .confidence
        .total_cmp(&a.record.confidence)
        .then(b.share.total_cmp(&a.share))
        .then_with(|| a.record.id.cmp(&b.record.id))
}

/// Whether a cluster goes to validation: a seeded hash of its canonical
/// question, so the side of a question never depends on the others.
fn is_validation(canonical: &str, opts: &CurateOptions) -> bool {
    let h = Sha256::new()
        .chain_update(opts.seed.to_le_bytes())
        .chain_update(canonical.as_bytes())
        .finalize();
    let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    // 53 bits as a uniform fraction in [0, 1).
    ((x >> 11) as f64 / (1u64 << 53) as f64) < opts.val_fraction
}

/// MinHash functions per question.
const HASHES: usize = 128;
/// LSH bands of `HASHES / BANDS` rows: pairs from a Jaccard of about 0.4
/// upward share a band with high probability and are then compared whole.
const BANDS: usize = 32;
/// Characters per shingle.
const SHINGLE: usize = 5;

/// The cluster root of each question (sorted, distinct, normalized), the
/// smallest index in its cluster: the connected components of "estimated Jaccard ≥ threshold and the same
/// numbers".
fn cluster(questions: &[String], opts: &CurateOptions) -> Vec<usize> {
    let signatures: Vec<[u64; HASHES]> =
        questions.iter().map(|q| signature(q, opts.seed)).collect();
    let number_keys: Vec<u64> = questions
        .iter()
        .map(|q| fnv1a(numbers(q).join(" ").as_bytes(), 0))
        .collect();
    let mut parent: Vec<usize> = (0..questions.len()).collect();
    let rows = HASHES / BANDS;
    let mut compared = HashSet::new();
    for band in 0..BANDS {
        let mut buckets: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        for (i, sig) in signatures.iter().enumerate() {
            let key = sig[band * rows..(band + 1) * rows]
                .iter()
                .fold(band as u64, |h, v| mix(h ^ v));
            buckets.entry((number_keys[i], key)).or_default().push(i);
        }
        for members in buckets.values() {
            for (k, &i) in members.iter().enumerate() {
                for &j in &members[k + 1..] {
                    if !compared.insert((i, j)) {
                        continue;
                    }
                    if numbers(&questions[i]) != numbers(&questions[j]) {
                        continue;
                    }
                    let same = signatures[i]
                        .iter()
                        .zip(&signatures[j])
                        .filter(|(a, b)| a == b)
                        .count();
                    if same as f64 / HASHES as f64 >= opts.near_dup_threshold {
                        union(&mut parent, i, j);
                    }
                }
            }
        }
    }
    (0..questions.len()).map(|i| find(&mut parent, i)).collect()
}

/// MinHash signature of a question's character shingles (the whole
/// question when it is shorter than one shingle).
fn signature(q: &str, seed: u64) -> [u64; HASHES] {
    let chars: Vec<char> = q.chars().collect();
    let mut sig = [u64::MAX; HASHES];
    let width = SHINGLE.min(chars.len().max(1));
    let shingles = chars.len().saturating_sub(width) + 1;
    let mut buf = String::new();
    for s in 0..shingles {
        buf.clear();
        buf.extend(&chars[s..(s + width).min(chars.len())]);
        let base = fnv1a(buf.as_bytes(), seed);
        for (k, slot) in sig.iter_mut().enumerate() {
            let h = mix(base ^ mix(seed.wrapping_add(k as u64 + 1)));
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ mix(seed);
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: a fixed bijection that scatters bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    // The smaller index is the root, so roots do not depend on pair order.
    let (lo, hi) = (ra.min(rb), ra.max(rb));
    parent[hi] = lo;
}

/// `edgeloop-trainer curate`: reads the store at `db`, writes the dataset
/// into `out`.
pub fn run(db: &Path, out: &Path, opts: &CurateOptions) -> Result<()> {
    opts.check()?;
    if !db.exists() {
        bail!("no host store at {}", db.display());
    }
    let store = TraceStore::open(db)?;
    let records: Vec<TraceRecord> = store
        .list(&ListFilter::default())?
        .into_iter()
        .map(|t| t.record)
        .collect();
    if records.is_empty() {
        bail!("the store at {} holds no traces", db.display());
    }
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("curating");
    let curated = curate(records, opts, &bar);
    bar.finish_and_clear();
    if curated.counts.kept == 0 {
        bail!(
            "no trace passed the filters ({} read, {} rejected, {} with too few votes, {} of the wrong length)",
            curated.counts.read,
            curated.counts.rejected,
            curated.counts.too_few_votes,
            curated.counts.wrong_length
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = BTreeMap::new();
    for (name, examples) in [("train", &curated.train), ("val", &curated.val)] {
        let jsonl = out.join(format!("{name}.jsonl"));
        write_jsonl(&jsonl, examples)?;
        let parquet = out.join(format!("{name}.parquet"));
        write_parquet(&parquet, examples)?;
        for p in [jsonl, parquet] {
            files.insert(file_name(&p), sha256_file(&p)?);
        }
    }
    let manifest = Manifest {
        format: "chat-messages",
        user_content:
            "the user turn of the rendered prompt (question and instruction), else the question",
        options: opts,
        counts: &curated.counts,
        files,
        train_ids: curated.train.iter().map(|e| e.id.as_str()).collect(),
        val_ids: curated.val.iter().map(|e| e.id.as_str()).collect(),
    };
    let path = out.join("manifest.json");
    write_atomic(&path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    let c = &curated.counts;
    eprintln!(
        "{} read: {} rejected, {} too few votes, {} wrong length, {} exact and {} near duplicates, {} over the cap per question",
        c.read, c.rejected, c.too_few_votes, c.wrong_length, c.exact_duplicates, c.near_duplicates, c.over_question_cap
    );
    eprintln!(
        "{} kept in {} question clusters: {} train, {} val, in {}",
        c.kept,
        c.clusters,
        c.train,
        c.val,
        out.display()
    );
    Ok(())
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    user_content: &'static str,
    options: &'a CurateOptions,
    counts: &'a Counts,
    /// File name to lowercase hex sha256.
    files: BTreeMap<String, String>,
    train_ids: Vec<&'a str>,
    val_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatLine<'a> {
    messages: [Message<'a>; 2],
}

fn write_jsonl(path: &Path, examples: &[Example]) -> Result<()> {
    let mut text = Vec::new();
    for e in examples {
        let line = ChatLine {
            messages: [
                Message {
                    role: "user",
                    content: &e.user,
                },
                Message {
                    role: "assistant",
                    content: &e.trace,
                },
            ],
        };
        serde_json::to_writer(&mut text, &line)?;
        text.push(b'\n');
    }
    write_atomic(path, &text)
}

/// The Parquet layout: `messages` as the standard three-level list of
/// {role, content} structs, and the trace `id`.
const PARQUET_SCHEMA: &str = "
message chat {
  REQUIRED GROUP messages (LIST) {
    REPEATED GROUP list {
      REQUIRED GROUP element {
        REQUIRED BYTE_ARRAY role (UTF8);
        REQUIRED BYTE_ARRAY content (UTF8);
      }
    }
  }
  REQUIRED BYTE_ARRAY id (UTF8);
}";

fn write_parquet(path: &Path, examples: &[Example]) -> Result<()> {
    let tmp = temp_path(path);
    let write = || -> Result<()> {
        let schema = Arc::new(parse_message_type(PARQUET_SCHEMA)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_created_by(format!("edgeloop-trainer {}", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let file = File::create(&tmp)?;
        let mut writer = SerializedFileWriter::new(file, schema, props)?;
        // Leaf columns in schema order; each row is a two-message list.
        let roles: Vec<ByteArray> = examples
            .iter()
            .flat_map(|_| [ByteArray::from("user"), ByteArray::from("assistant")])
            .collect();
        let contents: Vec<ByteArray> = examples
            .iter()
            .flat_map(|e| {
                [
                    ByteArray::from(e.user.as_str()),
                    ByteArray::from(e.trace.as_str()),
                ]
            })
            .collect();
        let ids: Vec<ByteArray> = examples
            .iter()
            .map(|e| ByteArray::from(e.id.as_str()))
            .collect();
        let def = vec![1i16; roles.len()];
        let rep: Vec<i16> = (0..roles.len()).map(|i| (i % 2) as i16).collect();
        let mut group = writer.next_row_group()?;
        let mut leaf = 0;
        while let Some(mut col) = group.next_column()? {
            let w = col.typed::<ByteArrayType>();
            match leaf {
                0 => w.write_batch(&roles, Some(&def), Some(&rep))?,
                1 => w.write_batch(&contents, Some(&def), Some(&rep))?,
                _ => w.write_batch(&ids, None, None)?,
            };
            col.close()?;
            leaf += 1;
        }
        group.close()?;
        writer.close()?;
        Ok(())
    };
    write()
        .and_then(|()| {
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })
        .with_context(|| format!("writing {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it, so a
/// reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = BufWriter::new(File::create(&tmp)?);
        f.write_all(bytes)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sha256_file(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_ignores_case_and_spacing_around_punctuation_only() {
        assert_eq!(normalize("What is 3 + 4?"), "what is 3 + 4 ?");
        assert_eq!(normalize("what is 3+4 ?"), normalize("What is 3 + 4?"));
        assert_eq!(
            normalize("  WHAT\tis 3 +\n4 ? "),
            normalize("What is 3 + 4?")
        );
        assert_ne!(normalize("What is 3 4?"), normalize("What is 34?"));
        assert_eq!(numbers(&normalize("Add 12 and 3.5")), ["12", "3", "5"]);
    }

    #[test]
    fn near_duplicates_need_the_same_numbers() {
        let opts = CurateOptions::default();
        let q = |s: &str| normalize(s);
        let mut questions = vec![
            q("A farmer has 12 apples and buys 7 more. How many apples does the farmer have now?"),
            q("A farmer has 12 apples and buys 7 more. How many apples does the farmer have?"),
            q("A farmer has 13 apples and buys 7 more. How many apples does the farmer have now?"),
        ];
        questions.sort();
        let root = cluster(&questions, &opts);
        let of = |s: &str| root[questions.iter().position(|x| *x == q(s)).unwrap()];
        assert_eq!(
            of("A farmer has 12 apples and buys 7 more. How many apples does the farmer have now?"),
            of("A farmer has 12 apples and buys 7 more. How many apples does the farmer have?")
        );
        assert_ne!(
            of("A farmer has 12 apples and buys 7 more. How many apples does the farmer have now?"),
            of("A farmer has 13 apples and buys 7 more. How many apples does the farmer have now?")
        );
    }

    fn with_prompt(question: &str, prompt: &str) -> TraceRecord {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": "x", "model": {"name": "m", "sha256": "0"},
            "created_at": 0, "question": question, "prompt": prompt, "answer": null,
            "trace": "t", "samples": [], "strategy": "greedy", "confidence": 1.0,
            "spend": {"samples": 0, "tokens": 0, "wall_secs": 0.0},
            "verification": {"accepted": true, "votes": [],
                "spend": {"samples": 0, "tokens": 0, "wall_secs": 0.0}},
            "consent": true
        }))
        .unwrap()
    }

    #[test]
    fn user_turn_is_recovered_from_common_templates() {
        let asked = "What is 2 + 2?\nAnswer on a last line.";
        for prompt in [
            "<|im_start|>user\nWhat is 2 + 2?\nAnswer on a last line.<|im_end|>\n<|im_start|>assistant\n",
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?\nAnswer on a last line.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "<bos><start_of_turn>user\nWhat is 2 + 2?\nAnswer on a last line.<end_of_turn>\n<start_of_turn>model\n",
        ] {
            assert_eq!(user_turn(&with_prompt("What is 2 + 2?", prompt)), asked);
        }
        // No known marker closes the turn, or the prompt lacks the question.
        for prompt in [
            "User: What is 2 + 2? Assistant:",
            "<|im_start|>user\nelse<|im_end|>",
        ] {
            assert_eq!(
                user_turn(&with_prompt("What is 2 + 2?", prompt)),
                "What is 2 + 2?"
            );
        }
    }
}
