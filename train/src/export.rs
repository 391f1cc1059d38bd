//! From trained f32 weights back to a quantized GGUF file the device runs:
//! the parent's metadata (tokenizer, chat template, hyper-parameters) kept,
//! provenance added, every matrix quantized to the chosen type, and a check
//! that the file, reloaded by edgeloop's own CPU path, predicts what the
//! trained weights predict.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use edgeloop_core::gguf::{GgufFile, GgufWriter, Value};
use edgeloop_core::kernels::ThreadPool;
use edgeloop_core::model::{BatchToken, ForwardScratch, Model};
use edgeloop_core::quant::{self, GgmlType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_err, Result, TrainError};
use crate::student::Student;

/// Metadata key of the parent model's sha256.
pub const KEY_PARENT: &str = "edgeloop.parent_sha256";
/// Metadata key of the training dataset's sha256.
pub const KEY_DATASET: &str = "edgeloop.dataset_sha256";
/// Metadata key of the distillation round (1 for the first student).
pub const KEY_ROUND: &str = "edgeloop.round";

/// Where a student came from, written into its file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub parent_sha256: String,
    pub dataset_sha256: String,
    pub round: u32,
}

impl Provenance {
    /// Reads the provenance keys of a file, if it has them.
    pub fn read(file: &GgufFile) -> Option<Provenance> {
        let m = file.metadata();
        Some(Provenance {
            parent_sha256: m.opt_str(KEY_PARENT).ok()??.to_string(),
            dataset_sha256: m.opt_str(KEY_DATASET).ok()??.to_string(),
            round: m.opt_u64(KEY_ROUND).ok()?? as u32,
        })
    }
}

/// The weight types a student can be exported as.
pub const EXPORT_TYPES: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::F16,
    GgmlType::F32,
];

/// `general.file_type` as llama.cpp numbers it (`enum llama_ftype`).
fn file_type(dtype: GgmlType) -> u32 {
    match dtype {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        _ => unreachable!("only EXPORT_TYPES are exported"),
    }
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Writes `student` as a GGUF file at `path`: tensors in the parent's order
/// and names, matrices as `dtype` (vectors stay f32), the parent's metadata
/// with `general.file_type` and the provenance keys set. Tensors of the
/// parent the student does not hold are copied unchanged.
pub fn write_gguf(
    student: &Student,
    parent: &GgufFile,
    dtype: GgmlType,
    provenance: &Provenance,
    path: &Path,
) -> Result<()> {
    if !EXPORT_TYPES.contains(&dtype) {
        return Err(TrainError::Options(format!(
            "cannot export as {dtype}; choose one of Q8_0, Q4_0, Q4_1, F16, F32"
        )));
    }
    let mut w = GgufWriter::new();
    w.set_all(parent.metadata());
    w.set("general.file_type", Value::U32(file_type(dtype)));
    w.set(KEY_PARENT, Value::String(provenance.parent_sha256.clone()));
    w.set(
        KEY_DATASET,
        Value::String(provenance.dataset_sha256.clone()),
    );
    w.set(KEY_ROUND, Value::U32(provenance.round));
    let weights = student.weights()?;
    for info in parent.tensors() {
        match weights.get(&info.name) {
            Some(t) => {
                let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
                let row = info.dims[0] as usize;
                let t = if info.dims.len() == 1 || !row.is_multiple_of(dtype.block_len()) {
                    GgmlType::F32
                } else {
                    dtype
                };
                w.add_tensor(&info.name, &info.dims, t, quant::quantize(t, &data)?)?;
            }
            None => {
                w.add_tensor(
                    &info.name,
                    &info.dims,
                    info.dtype,
                    parent.tensor_data(info).to_vec(),
                )?;
            }
        }
    }
    w.write_file(path)?;
    Ok(())
}

/// How closely an exported file follows the trained weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportCheck {
    pub prompts: usize,
    /// Positions compared (each prompt's continuation, teacher-forced).
    pub positions: usize,
    /// Fraction of positions where the file's top-1 token is the trained
    /// weights' top-1 token.
    pub top1_agreement: f64,
    /// Fraction of positions where the file's top-1 token is within
    /// [`TIE_MARGIN`] of the best logit of the trained weights (a near tie
    /// that quantization may break either way).
    pub tolerant_agreement: f64,
    /// Mean over prompts of how many greedy tokens the file generates
    /// before its first difference from the trained weights' greedy tokens.
    pub mean_greedy_prefix: f64,
    /// Greedy tokens generated per prompt.
    pub greedy_tokens: usize,
    /// Largest absolute logit difference seen.
    pub max_logit_diff: f32,
    /// The compared sequences (each prompt and the trained weights' greedy
    /// continuation), for checks by other runtimes.
    #[serde(skip)]
    pub sequences: Vec<Vec<u32>>,
    /// The file's top-1 token at every position of each sequence.
    #[serde(skip)]
    pub top1: Vec<Vec<u32>>,
}

/// Logit distance from the best under which the trained weights' own
/// ranking is a near tie, for [`ExportCheck::tolerant_agreement`].
pub const TIE_MARGIN: f32 = 1.0;

/// Greedy continuation of `prompt` by the f32 student (full recompute each step).
pub fn student_greedy(student: &Student, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let h = student.hidden(&t)?;
        let last = h.narrow(1, ids.len() - 1, 1)?.squeeze(1)?;
        let next = student.logits(&last)?.argmax(D::Minus1)?.to_vec1::<u32>()?[0];
        ids.push(next);
    }
    Ok(ids[prompt.len()..].to_vec())
}

/// Logits of core's CPU path for every position of `tokens`, row-major.
pub fn core_logits(model: &Model, pool: &ThreadPool, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut caches = vec![model.new_cache(tokens.len())];
    let batch: Vec<BatchToken> = tokens
        .iter()
        .enumerate()
        .map(|(pos, &token)| BatchToken { token, pos, seq: 0 })
        .collect();
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let mut logits = Vec::new();
    let mut scratch = ForwardScratch::default();
    model.forward(pool, &batch, &mut caches, &rows, &mut logits, &mut scratch)?;
    Ok(logits)
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Compares the file at `path`, run by edgeloop's CPU path, with `student`
/// on `prompts` (token ids): the student's greedy continuation of
/// `greedy_tokens` tokens is teacher-forced through both, and the file's own
/// greedy continuation is compared with the student's.
pub fn check_export(
    student: &Student,
    path: &Path,
    prompts: &[Vec<u32>],
    greedy_tokens: usize,
    threads: usize,
) -> Result<ExportCheck> {
    let model = Model::open(path)?;
    let pool = ThreadPool::new(threads.max(1));
    let vocab = model.config().vocab_size;
    let mut agree = 0usize;
    let mut tolerant = 0usize;
    let mut positions = 0usize;
    let mut prefix_sum = 0usize;
    let mut max_diff = 0f32;
    let mut sequences = Vec::new();
    let mut top1 = Vec::new();
    for prompt in prompts {
        let want = student_greedy(student, prompt, greedy_tokens)?;
        let mut seq = prompt.clone();
        seq.extend_from_slice(&want);
        let core = core_logits(&model, &pool, &seq)?;
        top1.push(core.chunks_exact(vocab).map(argmax).collect());
        let t = Tensor::new(seq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let reference: Vec<f32> = student.forward(&t)?.squeeze(0)?.flatten_all()?.to_vec1()?;
        for p in prompt.len() - 1..seq.len() - 1 {
            let row = &core[p * vocab..(p + 1) * vocab];
            let r = &reference[p * vocab..(p + 1) * vocab];
            positions += 1;
            let (mine, best) = (argmax(row) as usize, argmax(r) as usize);
            agree += usize::from(mine == best);
            tolerant += usize::from(r[mine] >= r[best] - TIE_MARGIN);
            for (a, b) in row.iter().zip(r) {
                max_diff = max_diff.max((a - b).abs());
            }
        }
        // The file's own greedy continuation, step by step.
        let mut own = prompt.clone();
        for _ in 0..greedy_tokens {
            let logits = core_logits(&model, &pool, &own)?;
            own.push(argmax(&logits[(own.len() - 1) * vocab..]));
        }
        prefix_sum += own[prompt.len()..]
            .iter()
            .zip(&want)
            .take_while(|(a, b)| a == b)
            .count();
        sequences.push(seq);
    }
    Ok(ExportCheck {
        prompts: prompts.len(),
        positions,
        top1_agreement: agree as f64 / positions.max(1) as f64,
        tolerant_agreement: tolerant as f64 / positions.max(1) as f64,
        mean_greedy_prefix: prefix_sum as f64 / prompts.len().max(1) as f64,
        greedy_tokens,
        max_logit_diff: max_diff,
        sequences,
        top1,
    })
}
