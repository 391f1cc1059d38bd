//! Supervised fine-tuning of a student on curated traces: next-token loss on
//! the assistant's tokens only, AdamW with warm-up and cosine decay,
//! gradient accumulation over micro-batches, validation loss, and
//! checkpoints a killed run resumes from with the same result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{Batch, Example};
use crate::error::{io_err, Result, TrainError};
use crate::optim::{learning_rate, AdamW, AdamWConfig};
use crate::student::Student;

/// How to fine-tune.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Examples per forward/backward pass; gradients of the micro-batches of
    /// a step are accumulated.
    pub micro_batch: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// The learning rate at the last step, as a fraction of the peak.
    pub min_lr_ratio: f64,
    pub adamw: AdamWConfig,
    /// Seed of the example order.
    pub seed: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: usize,
    /// Stop after this many steps of the schedule (the schedule itself still
    /// spans every epoch); used to run a schedule in parts.
    pub stop_after: Option<usize>,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions {
            epochs: 2,
            batch_size: 8,
            micro_batch: 4,
            learning_rate: 2e-5,
            warmup_steps: 5,
            min_lr_ratio: 0.1,
            adamw: AdamWConfig::default(),
            seed: 0,
            checkpoint_every: 25,
            stop_after: None,
        }
    }
}

impl DistillOptions {
    /// Refuses options that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::Options(m.into()));
        if self.epochs == 0 {
            return bad("epochs must be at least 1");
        }
        if self.batch_size == 0 || self.micro_batch == 0 {
            return bad("batch size and micro-batch must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min-lr-ratio must be within 0..=1");
        }
        let a = &self.adamw;
        if !((0.0..1.0).contains(&a.beta1) && (0.0..1.0).contains(&a.beta2)) {
            return bad("AdamW betas must be within 0..1");
        }
        if !(a.weight_decay >= 0.0 && a.max_grad_norm >= 0.0 && a.eps > 0.0) {
            return bad("weight decay and gradient clipping must be ≥ 0, eps > 0");
        }
        Ok(())
    }

    /// Optimizer steps in the whole schedule for `n` training examples.
    pub fn total_steps(&self, n: usize) -> usize {
        (self.epochs * n).div_ceil(self.batch_size)
    }
}

/// One optimizer step as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step number.
    pub step: usize,
    pub total_steps: usize,
    /// Mean loss per target token over the step's examples.
    pub loss: f32,
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Target tokens in the step.
    pub tokens: usize,
    pub seconds: f64,
}

/// What a run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillReport {
    pub options: DistillOptions,
    pub train_examples: usize,
    pub val_examples: usize,
    pub total_steps: usize,
    /// Steps done, resumed ones included.
    pub steps_done: usize,
    /// The step the run resumed after (0 for a fresh run).
    pub resumed_from: usize,
    /// Mean per-token loss on the training set before the first and after
    /// the last step.
    pub train_loss_before: f32,
    pub train_loss_after: f32,
    /// Mean per-token validation loss before and after (None without a
    /// validation set).
    pub val_loss_before: Option<f32>,
    pub val_loss_after: Option<f32>,
    pub steps: Vec<StepLog>,
    pub seconds: f64,
}

/// The checkpoint's bookkeeping beside its tensors.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    steps_done: usize,
    /// Identifies the options and dataset the run was started with; a run
    /// resumes only with the same.
    fingerprint: String,
    train_loss_before: f32,
    val_loss_before: Option<f32>,
    steps: Vec<StepLog>,
}

/// Sum of the negative log-likelihood of a batch's targets.
pub fn batch_nll(student: &Student, batch: &Batch) -> Result<Tensor> {
    let hidden = student.hidden(&batch.tokens)?;
    let (b, t, d) = hidden.dims3()?;
    let picked = hidden
        .reshape((b * t, d))?
        .index_select(&batch.positions, 0)?;
    let logits = student.logits(&picked)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let nll = log_probs
        .gather(&batch.targets.unsqueeze(1)?, 1)?
        .sum_all()?
        .neg()?;
    Ok(nll)
}

/// Mean per-token loss of `examples` (no gradients), `micro_batch` at a time.
pub fn mean_loss(student: &Student, examples: &[Example], micro_batch: usize) -> Result<f32> {
    let mut total = 0f64;
    let mut tokens = 0usize;
    for chunk in examples.chunks(micro_batch.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::new(&refs, student.device())?;
        total += batch_nll(student, &batch)?.detach().to_scalar::<f32>()? as f64;
        tokens += batch.n_targets;
    }
    Ok((total / tokens.max(1) as f64) as f32)
}

/// Example indices in training order: each epoch a seeded shuffle.
fn schedule(n: usize, epochs: usize, seed: u64) -> Vec<usize> {
    let mut order = Vec::with_capacity(n * epochs);
    for epoch in 0..epochs {
        let mut idx: Vec<usize> = (0..n).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        idx.shuffle(&mut rng);
        order.extend(idx);
    }
    order
}

fn fingerprint(opts: &DistillOptions, train: &[Example], student: &Student) -> String {
    let mut h = Sha256::new();
    let mut o = opts.clone();
    o.stop_after = None;
    o.checkpoint_every = 0;
    h.update(serde_json::to_vec(&o).expect("options serialize"));
    for e in train {
        h.update((e.tokens.len() as u64).to_le_bytes());
        h.update((e.first_target as u64).to_le_bytes());
        for t in &e.tokens {
            h.update(t.to_le_bytes());
        }
    }
    for (name, v) in student.trainable() {
        h.update(name.as_bytes());
        h.update(format!("{:?}", v.dims()).as_bytes());
    }
    h.update(serde_json::to_vec(&student.lora()).expect("LoRA settings serialize"));
    format!("{:x}", h.finalize())
}

/// Where a run keeps its checkpoint.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

fn save_checkpoint(
    dir: &Path,
    student: &Student,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(".checkpoint.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    save_tensors(
        student.trainable_tensors(),
        &tmp.join("weights.safetensors"),
    )?;
    save_tensors(opt.state(), &tmp.join("optimizer.safetensors"))?;
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    std::fs::write(tmp.join("state.json"), json).map_err(io_err(&tmp))?;
    let old = parent.join(".checkpoint.old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    student: &Student,
    opt: &mut AdamW,
    fingerprint: &str,
) -> Result<CheckpointState> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let text = std::fs::read(dir.join("state.json")).map_err(io_err(dir.join("state.json")))?;
    let state: CheckpointState =
        serde_json::from_slice(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    if state.fingerprint != fingerprint {
        return Err(bad(
            "it was written for other options, another dataset or another student; \
             remove it or train into another directory"
                .into(),
        ));
    }
    let device = student.device();
    let weights: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("weights.safetensors"), device)?
            .into_iter()
            .collect();
    student.set_trainable(&weights)?;
    let moments: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), device)?
            .into_iter()
            .collect();
    opt.restore(&moments, state.steps_done).map_err(bad)?;
    Ok(state)
}

/// Writes named tensors as a safetensors file.
pub fn save_tensors(tensors: BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path)?;
    Ok(())
}

/// Adds `g` into `acc` for every variable.
fn accumulate(acc: &mut Option<GradStore>, g: GradStore, student: &Student) -> Result<()> {
    match acc {
        None => *acc = Some(g),
        Some(a) => {
            for v in student.trainable().values() {
                if let Some(new) = g.get(v) {
                    let sum = match a.get(v) {
                        Some(old) => (old + new)?,
                        None => new.clone(),
                    };
                    a.insert(v, sum);
                }
            }
        }
    }
    Ok(())
}

/// Fine-tunes `student` in place on `train`, reporting each step to
/// `progress`. With `out`, a checkpoint is kept in [`checkpoint_dir`]`(out)`
/// and a run finding one there (same options and data) resumes after its
/// last step.
pub fn distill(
    student: &Student,
    train: &[Example],
    val: &[Example],
    opts: &DistillOptions,
    out: Option<&Path>,
    progress: &mut dyn FnMut(&StepLog),
) -> Result<DistillReport> {
    opts.validate()?;
    if train.is_empty() {
        return Err(TrainError::Options("the training set is empty".into()));
    }
    let started = Instant::now();
    let total = opts.total_steps(train.len());
    let order = schedule(train.len(), opts.epochs, opts.seed);
    let fp = fingerprint(opts, train, student);
    let mut opt = AdamW::new(student.trainable(), opts.adamw)?;
    let ckpt = out.map(checkpoint_dir);

    let mut state = match &ckpt {
        Some(dir) if dir.join("state.json").is_file() => {
            let s = load_checkpoint(dir, student, &mut opt, &fp)?;
            log::info!("resuming after step {} of {total}", s.steps_done);
            s
        }
        _ => CheckpointState {
            steps_done: 0,
            fingerprint: fp,
            train_loss_before: mean_loss(student, train, opts.micro_batch)?,
            val_loss_before: if val.is_empty() {
                None
            } else {
                Some(mean_loss(student, val, opts.micro_batch)?)
            },
            steps: Vec::new(),
        },
    };
    let resumed_from = state.steps_done;
    let last = opts.stop_after.map_or(total, |s| s.min(total));

    while state.steps_done < last {
        let step = state.steps_done;
        let t0 = Instant::now();
        let lo = step * opts.batch_size;
        let hi = ((step + 1) * opts.batch_size).min(order.len());
        let examples: Vec<&Example> = order[lo..hi].iter().map(|&i| &train[i]).collect();
        let tokens: usize = examples.iter().map(|e| e.targets()).sum();
        let mut grads = None;
        let mut nll = 0f64;
        for chunk in examples.chunks(opts.micro_batch) {
            let batch = Batch::new(chunk, student.device())?;
            let loss = (batch_nll(student, &batch)? / tokens.max(1) as f64)?;
            nll += loss.to_scalar::<f32>()? as f64;
            accumulate(&mut grads, loss.backward()?, student)?;
        }
        let loss = nll as f32;
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                step: step + 1,
                loss,
            });
        }
        let lr = learning_rate(
            step,
            total,
            opts.warmup_steps,
            opts.learning_rate,
            opts.min_lr_ratio,
        );
        let grad_norm = opt.step(
            student.trainable(),
            &grads.expect("a step has examples"),
            lr,
        )?;
        let log = StepLog {
            step: step + 1,
            total_steps: total,
            loss,
            learning_rate: lr,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress(&log);
        state.steps.push(log);
        state.steps_done += 1;
        if let Some(dir) = &ckpt {
            let every = opts.checkpoint_every;
            if (every > 0 && state.steps_done % every == 0) || state.steps_done == last {
                save_checkpoint(dir, student, &opt, &state)?;
            }
        }
    }

    Ok(DistillReport {
        options: opts.clone(),
        train_examples: train.len(),
        val_examples: val.len(),
        total_steps: total,
        steps_done: state.steps_done,
        resumed_from,
        train_loss_before: state.train_loss_before,
        train_loss_after: mean_loss(student, train, opts.micro_batch)?,
        val_loss_before: state.val_loss_before,
        val_loss_after: if val.is_empty() {
            None
        } else {
            Some(mean_loss(student, val, opts.micro_batch)?)
        },
        steps: state.steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}
