//! The trace record: one solved question, its reasoning, how it was checked.
//!
//! A [`TraceRecord`] is what the device keeps and later reports. Its `id` is
//! a content hash (see [`content_id`]) so the same trace stored twice, or
//! reported twice, is recognised as one. Records are versioned
//! ([`SCHEMA_VERSION`]); [`TraceRecord::validate`] refuses anything out of
//! shape before it is stored, exported or accepted by a host.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scaling::{Sample, Solution, Spend};

/// The record layout this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest question, in bytes.
pub const MAX_QUESTION_BYTES: usize = 64 * 1024;
/// Longest prompt, trace, sample text or judge text, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Longest short field (model name, strategy, stage, an answer), in bytes.
pub const MAX_SHORT_BYTES: usize = 4096;
/// Most samples in one record.
pub const MAX_SAMPLES: usize = 1024;
/// Most verifier votes in one record.
pub const MAX_VOTES: usize = 256;
/// Largest record as JSON, in bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Why a record was refused. Each variant names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("trace record schema version {found} is not supported (this build reads version {supported})")]
    SchemaVersion { found: u32, supported: u32 },
    #[error("trace record id {id:?} does not match its content (expected {expected})")]
    IdMismatch { id: String, expected: String },
    #[error("trace record field {field} is empty")]
    Empty { field: String },
    #[error("trace record field {field} is not a finite number ({value})")]
    NotFinite { field: String, value: f64 },
    #[error("trace record field {field} is {value}, outside {range}")]
    OutOfRange {
        field: String,
        value: f64,
        range: &'static str,
    },
    #[error("trace record field {field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("trace record field {field} has {count} entries, more than the limit of {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("trace record field {field} is {value:?}, not 64 lowercase hex digits")]
    NotSha256 { field: String, value: String },
    #[error("trace record is not valid JSON for schema version {SCHEMA_VERSION}: {0}")]
    Json(#[source] serde_json::Error),
}

/// The model that produced a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    /// Lowercase hex sha256 of the GGUF file.
    pub sha256: String,
}

/// Compute spent (by the strategy or by the verifier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpend {
    pub samples: u64,
    /// Tokens generated.
    pub tokens: u64,
    pub wall_secs: f64,
}

impl From<Spend> for TraceSpend {
    fn from(s: Spend) -> Self {
        TraceSpend {
            samples: s.samples as u64,
            tokens: s.tokens as u64,
            wall_secs: s.wall_secs,
        }
    }
}

/// One sampled trace of the strategy, with its extracted answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSample {
    pub text: String,
    pub answer: Option<String>,
    pub mean_logprob: f32,
    pub tokens: u64,
}

impl From<&Sample> for TraceSample {
    fn from(s: &Sample) -> Self {
        TraceSample {
            text: s.text.clone(),
            answer: s.answer.clone(),
            mean_logprob: s.mean_logprob,
            tokens: s.tokens as u64,
        }
    }
}

/// One judgement of one verifier stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierVote {
    /// The stage that asked, e.g. `agreement`, `cycle`, `factuality`, `correctness`.
    pub stage: String,
    /// `Some(true)` accept, `Some(false)` reject, `None` no verdict found.
    pub verdict: Option<bool>,
    /// What the judge wrote.
    pub judge_text: String,
}

/// Outcome of self-verification: every vote and what checking cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub accepted: bool,
    pub votes: Vec<VerifierVote>,
    pub spend: TraceSpend,
}

/// Everything a record holds except what [`TraceRecord::new`] derives
/// (schema version and id).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceParts {
    pub model: ModelInfo,
    /// Unix time in seconds (UTC).
    pub created_at: u64,
    pub question: String,
    /// The rendered prompt the model saw (chat-templated, or few-shot text).
    pub prompt: String,
    pub answer: Option<String>,
    /// The chosen sample's text.
    pub trace: String,
    pub samples: Vec<TraceSample>,
    pub strategy: String,
    pub confidence: f64,
    pub spend: TraceSpend,
    pub verification: Verification,
    pub consent: bool,
}

impl TraceParts {
    /// The parts of a solved question, created now, not yet verified
    /// (`verification` is empty and not accepted) and without consent.
    /// The trace is the sample [`chosen_sample`] picks (empty without samples).
    pub fn from_solution(model: ModelInfo, question: &str, prompt: &str, s: &Solution) -> Self {
        TraceParts {
            model,
            created_at: unix_now(),
            question: question.to_string(),
            prompt: prompt.to_string(),
            answer: s.answer.clone(),
            trace: chosen_sample(s).map(|c| c.text.clone()).unwrap_or_default(),
            samples: s.samples.iter().map(TraceSample::from).collect(),
            strategy: s.strategy.to_string(),
            confidence: s.confidence,
            spend: s.spend.into(),
            verification: Verification::default(),
            consent: false,
        }
    }
}

/// The sample that stands for a solution: among the samples whose answer is
/// the solution's answer (all samples if it has none), the one with the
/// highest mean token log-probability; the first one on ties.
pub fn chosen_sample(s: &Solution) -> Option<&Sample> {
    let mut best: Option<&Sample> = None;
    for c in s.samples.iter().filter(|c| match &s.answer {
        Some(a) => c.answer.as_ref() == Some(a),
        None => true,
    }) {
        if best.is_none_or(|b| c.mean_logprob > b.mean_logprob) {
            best = Some(c);
        }
    }
    best
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The content id of a trace: lowercase hex sha256 over a domain tag and the
/// model's sha256, the question and the trace text, each prefixed with its
/// length as 8 little-endian bytes so no two different field splits hash alike.
pub fn content_id(model_sha256: &str, question: &str, trace: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"edgeloop-trace\0");
    for field in [model_sha256, question, trace] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A solved question kept as a reasoning trace (schema version 1).
///
/// `created_at` is Unix time in seconds (UTC). `id` is [`content_id`] of
/// `model.sha256`, `question` and `trace` as they were produced. Redaction
/// ([`TraceRecord::redacted`]) rewrites texts but keeps the id, so a redacted
/// copy is still recognised as the same trace; it sets `redacted`, and the id
/// of a redacted record is not checked against its (rewritten) content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    pub schema_version: u32,
    pub id: String,
    pub model: ModelInfo,
    pub created_at: u64,
    pub question: String,
    pub prompt: String,
    pub answer: Option<String>,
    pub trace: String,
    pub samples: Vec<TraceSample>,
    pub strategy: String,
    pub confidence: f64,
    pub spend: TraceSpend,
    pub verification: Verification,
    pub consent: bool,
    /// Texts were rewritten by a [`Redactor`]; `id` is that of the original.
    #[serde(default)]
    pub redacted: bool,
}

impl TraceRecord {
    /// A record of the current schema version with its content id.
    pub fn new(p: TraceParts) -> Self {
        TraceRecord {
            schema_version: SCHEMA_VERSION,
            id: content_id(&p.model.sha256, &p.question, &p.trace),
            model: p.model,
            created_at: p.created_at,
            question: p.question,
            prompt: p.prompt,
            answer: p.answer,
            trace: p.trace,
            samples: p.samples,
            strategy: p.strategy,
            confidence: p.confidence,
            spend: p.spend,
            verification: p.verification,
            consent: p.consent,
            redacted: false,
        }
    }

    /// The record of a solved question, created now (see
    /// [`TraceParts::from_solution`]), with its verification and consent.
    pub fn from_solution(
        model: ModelInfo,
        question: &str,
        prompt: &str,
        solution: &Solution,
        verification: Verification,
        consent: bool,
    ) -> Self {
        let mut p = TraceParts::from_solution(model, question, prompt, solution);
        p.verification = verification;
        p.consent = consent;
        Self::new(p)
    }

    /// Parses one record from JSON and validates it. The schema version is
    /// read first, so a record of another version is refused as such.
    pub fn from_json(json: &str) -> Result<Self, RecordError> {
        if json.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLong {
                field: "record".into(),
                len: json.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let v: Version = serde_json::from_str(json).map_err(RecordError::Json)?;
        if v.schema_version != SCHEMA_VERSION {
            return Err(RecordError::SchemaVersion {
                found: v.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        let r: TraceRecord = serde_json::from_str(json).map_err(RecordError::Json)?;
        r.validate()?;
        Ok(r)
    }

    /// The record as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and vectors cannot fail.
        serde_json::to_string(self).expect("trace record serializes")
    }

    /// Checks everything a store or a host relies on: the schema version,
    /// the id (unless redacted), non-empty question and model, finite
    /// numbers in range, and size limits.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(RecordError::SchemaVersion {
                found: self.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        sha256_field("id", &self.id)?;
        sha256_field("model.sha256", &self.model.sha256)?;
        non_empty("model.name", &self.model.name)?;
        non_empty("question", &self.question)?;
        non_empty("strategy", &self.strategy)?;

        let mut total = 0usize;
        let mut text = |field: &str, s: &str, max: usize| -> Result<(), RecordError> {
            total += s.len();
            if s.len() > max {
                return Err(RecordError::TooLong {
                    field: field.to_string(),
                    len: s.len(),
                    max,
                });
            }
            Ok(())
        };
        text("model.name", &self.model.name, MAX_SHORT_BYTES)?;
        text("question", &self.question, MAX_QUESTION_BYTES)?;
        text("prompt", &self.prompt, MAX_TEXT_BYTES)?;
        text(
            "answer",
            self.answer.as_deref().unwrap_or(""),
            MAX_SHORT_BYTES,
        )?;
        text("trace", &self.trace, MAX_TEXT_BYTES)?;
        text("strategy", &self.strategy, MAX_SHORT_BYTES)?;
        count("samples", self.samples.len(), MAX_SAMPLES)?;
        for (i, s) in self.samples.iter().enumerate() {
            text(&format!("samples[{i}].text"), &s.text, MAX_TEXT_BYTES)?;
            let answer = s.answer.as_deref().unwrap_or("");
            text(&format!("samples[{i}].answer"), answer, MAX_SHORT_BYTES)?;
        }
        let votes = &self.verification.votes;
        count("verification.votes", votes.len(), MAX_VOTES)?;
        for (i, v) in votes.iter().enumerate() {
            let field = format!("verification.votes[{i}]");
            text(&format!("{field}.stage"), &v.stage, MAX_SHORT_BYTES)?;
            text(
                &format!("{field}.judge_text"),
                &v.judge_text,
                MAX_TEXT_BYTES,
            )?;
        }
        if total > MAX_RECORD_BYTES {
            return Err(RecordError::TooLong {
                field: "record".into(),
                len: total,
                max: MAX_RECORD_BYTES,
            });
        }

        in_range("confidence", self.confidence, 0.0, 1.0, "[0, 1]")?;
        in_range(
            "spend.wall_secs",
            self.spend.wall_secs,
            0.0,
            f64::MAX,
            ">= 0",
        )?;
        let vs = self.verification.spend.wall_secs;
        in_range("verification.spend.wall_secs", vs, 0.0, f64::MAX, ">= 0")?;
        for (i, s) in self.samples.iter().enumerate() {
            let field = format!("samples[{i}].mean_logprob");
            in_range(&field, s.mean_logprob as f64, f64::MIN, f64::MAX, "finite")?;
        }

        if !self.redacted {
            let expected = content_id(&self.model.sha256, &self.question, &self.trace);
            if expected != self.id {
                return Err(RecordError::IdMismatch {
                    id: self.id.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// A copy rewritten by `redactor` and marked `redacted`; the id stays
    /// the content id of the original.
    pub fn redacted(&self, redactor: &dyn Redactor) -> TraceRecord {
        let mut r = self.clone();
        redactor.redact(&mut r);
        r.id.clone_from(&self.id);
        r.redacted = true;
        r
    }
}

fn non_empty(field: &str, s: &str) -> Result<(), RecordError> {
    if s.trim().is_empty() {
        return Err(RecordError::Empty {
            field: field.to_string(),
        });
    }
    Ok(())
}

fn count(field: &str, count: usize, max: usize) -> Result<(), RecordError> {
    if count > max {
        return Err(RecordError::TooMany {
            field: field.to_string(),
            count,
            max,
        });
    }
    Ok(())
}

fn in_range(field: &str, v: f64, lo: f64, hi: f64, range: &'static str) -> Result<(), RecordError> {
    if !v.is_finite() {
        return Err(RecordError::NotFinite {
            field: field.to_string(),
            value: v,
        });
    }
    if v < lo || v > hi {
        return Err(RecordError::OutOfRange {
            field: field.to_string(),
            value: v,
            range,
        });
    }
    Ok(())
}

fn sha256_field(field: &str, s: &str) -> Result<(), RecordError> {
    let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(RecordError::NotSha256 {
            field: field.to_string(),
            value: s.chars().take(80).collect(),
        });
    }
    Ok(())
}

/// Rewrites a record's texts before it leaves the device (export, reporting).
pub trait Redactor {
    fn redact(&self, record: &mut TraceRecord);
}

/// Leaves records as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRedaction;

impl Redactor for NoRedaction {
    fn redact(&self, _record: &mut TraceRecord) {}
}

/// Masks e-mail addresses as `[email]` and runs of at least `min_digits`
/// digits (optionally split by single spaces or hyphens, as phone and card
/// numbers are written) as `[number]`, in every free text of a record:
/// question, prompt, trace, answers, sample texts and judge texts. Numbers
/// that long in a calculation are masked too; raise `min_digits` where
/// traces are known to hold no personal numbers.
#[derive(Clone, Copy, Debug)]
pub struct DefaultRedactor {
    pub min_digits: usize,
}

impl Default for DefaultRedactor {
    fn default() -> Self {
        DefaultRedactor { min_digits: 9 }
    }
}

impl DefaultRedactor {
    /// `text` with e-mail addresses and long digit runs masked.
    pub fn mask(&self, text: &str) -> String {
        mask_digits(&mask_emails(text), self.min_digits)
    }
}

impl Redactor for DefaultRedactor {
    fn redact(&self, r: &mut TraceRecord) {
        let m = |s: &mut String| *s = self.mask(s);
        m(&mut r.question);
        m(&mut r.prompt);
        m(&mut r.trace);
        if let Some(a) = &mut r.answer {
            m(a);
        }
        for s in &mut r.samples {
            m(&mut s.text);
            if let Some(a) = &mut s.answer {
                m(a);
            }
        }
        for v in &mut r.verification.votes {
            m(&mut v.judge_text);
        }
    }
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-')
}

fn mask_emails(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0; // chars before i are in `out`
    let mut at = 0;
    while at < chars.len() {
        if chars[at] != '@' {
            at += 1;
            continue;
        }
        let mut start = at;
        while start > i && is_local_char(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len() && is_domain_char(chars[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(chars[end - 1], '.' | '-') {
            end -= 1;
        }
        let domain: String = chars[at + 1..end].iter().collect();
        let tld_ok = domain
            .rsplit_once('.')
            .is_some_and(|(host, tld)| !host.is_empty() && tld.len() >= 2);
        if start < at && tld_ok {
            out.extend(&chars[i..start]);
            out.push_str("[email]");
            i = end;
            at = end;
        } else {
            at += 1;
        }
    }
    out.extend(&chars[i..]);
    out
}

fn mask_digits(text: &str, min_digits: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, with single separators between digits.
        let mut end = i;
        let mut digits = 0;
        loop {
            while end < chars.len() && chars[end].is_ascii_digit() {
                end += 1;
                digits += 1;
            }
            let sep = end + 1 < chars.len()
                && matches!(chars[end], ' ' | '-')
                && chars[end + 1].is_ascii_digit();
            if !sep {
                break;
            }
            end += 1;
        }
        if digits >= min_digits {
            out.push_str("[number]");
        } else {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_long_numbers_only() {
        let r = DefaultRedactor::default();
        let m = |s| r.mask(s);
        assert_eq!(m("mail a.b+c@ex-ample.co.uk."), "mail [email].");
        assert_eq!(m("x@y and @home and a@b"), "x@y and @home and a@b");
        assert_eq!(m("call 555-123-4567 now"), "call [number] now");
        assert_eq!(m("card 4111 1111 1111 1111"), "card [number]");
        assert_eq!(m("12 + 345 = 357, 12345678"), "12 + 345 = 357, 12345678");
        assert_eq!(m("123456789"), "[number]");
        assert_eq!(m("ünï 123456789 ü@x.de"), "ünï [number] [email]");
        let lax = DefaultRedactor { min_digits: 20 };
        assert_eq!(lax.mask("123456789 x@y.io"), "123456789 [email]");
    }

    #[test]
    fn content_id_separates_fields() {
        let a = content_id("ab", "c", "d");
        assert_ne!(a, content_id("a", "bc", "d"));
        assert_ne!(a, content_id("ab", "cd", ""));
        assert_eq!(a.len(), 64);
    }
}
