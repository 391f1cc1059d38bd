//! A student model as trainable candle variables: every weight of a GGUF
//! file dequantized to f32, the same forward pass as core's CPU path
//! (pre-norm blocks, grouped-query attention, rope in either layout,
//! SwiGLU/GeGLU, the optional Qwen3/Gemma 3 norms, sliding windows and
//! soft-capping), built from differentiable tensor operations so that
//! `backward` reaches every weight.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use edgeloop_core::model::{Activation, MatrixRef, Model, ModelConfig, RopeStyle};
use edgeloop_core::quant;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The name under which the token embedding is stored (and the output
/// projection, when the file ties them).
pub const TOKEN_EMBD: &str = "token_embd.weight";
/// The output projection's name in files that do not tie it to the embedding.
pub const OUTPUT: &str = "output.weight";

/// Low-rank adapters (LoRA): each target matrix `W` runs as
/// `W + (alpha / rank) · B·A` with `A` (`rank × in`) and `B` (`out × rank`,
/// zero at the start) trained and every other weight frozen; the product
/// is merged into `W` for export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Which projections get adapters, by their GGUF name inside a block
    /// (`attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`,
    /// `ffn_down`).
    pub targets: Vec<String>,
    /// Seed of `A`'s initialization.
    pub seed: u64,
}

/// The projections LoRA may target.
pub const LORA_TARGETS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

struct Lora {
    config: LoraConfig,
    /// `NAME.lora_a` and `NAME.lora_b` for each adapted weight `NAME`.
    vars: BTreeMap<String, Var>,
}

/// A trainable copy of a model's weights and the configuration to run them.
pub struct Student {
    config: ModelConfig,
    /// Every weight by its GGUF tensor name.
    vars: BTreeMap<String, Var>,
    /// Whether the output projection is the token embedding.
    tied: bool,
    device: Device,
    lora: Option<Lora>,
}

impl std::fmt::Debug for Student {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Student")
            .field("config", &self.config)
            .field("parameters", &self.parameter_count())
            .field("tied", &self.tied)
            .finish()
    }
}

fn matrix(model: &Model, m: &MatrixRef, device: &Device) -> Result<Var> {
    let bytes = &model.gguf().bytes()[m.bytes.clone()];
    let mut out = vec![0f32; m.rows * m.cols];
    quant::dequantize(m.dtype, bytes, &mut out)?;
    Ok(Var::from_vec(out, (m.rows, m.cols), device)?)
}

fn vector(v: &[f32], device: &Device) -> Result<Var> {
    Ok(Var::from_slice(v, v.len(), device)?)
}

impl Student {
    /// Dequantizes every weight of `model` into f32 variables on the CPU.
    pub fn from_model(model: &Model) -> Result<Self> {
        let device = Device::Cpu;
        let w = model.weights();
        let mut vars = BTreeMap::new();
        vars.insert(
            TOKEN_EMBD.to_string(),
            matrix(model, &w.token_embd, &device)?,
        );
        let tied = w.output.name == w.token_embd.name;
        if !tied {
            vars.insert(OUTPUT.to_string(), matrix(model, &w.output, &device)?);
        }
        vars.insert(
            "output_norm.weight".into(),
            vector(&w.output_norm, &device)?,
        );
        for (i, l) in w.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            vars.insert(n("attn_norm"), vector(&l.attn_norm, &device)?);
            vars.insert(n("ffn_norm"), vector(&l.ffn_norm, &device)?);
            for (name, m) in [
                ("attn_q", &l.wq),
                ("attn_k", &l.wk),
                ("attn_v", &l.wv),
                ("attn_output", &l.wo),
                ("ffn_gate", &l.w_gate),
                ("ffn_up", &l.w_up),
                ("ffn_down", &l.w_down),
            ] {
                vars.insert(n(name), matrix(model, m, &device)?);
            }
            for (name, v) in [
                ("attn_q_norm", &l.q_norm),
                ("attn_k_norm", &l.k_norm),
                ("post_attention_norm", &l.post_attn_norm),
                ("post_ffw_norm", &l.post_ffn_norm),
            ] {
                if let Some(v) = v {
                    vars.insert(n(name), vector(v, &device)?);
                }
            }
        }
        Ok(Student {
            config: model.config().clone(),
            vars,
            tied,
            device,
            lora: None,
        })
    }

    /// Freezes every weight and adds low-rank adapters to the targets.
    pub fn with_lora(mut self, config: LoraConfig) -> Result<Self> {
        if config.rank == 0 || !(config.alpha.is_finite() && config.alpha > 0.0) {
            return Err(TrainError::Options(
                "LoRA rank must be at least 1 and alpha a positive number".into(),
            ));
        }
        if config.targets.is_empty() {
            return Err(TrainError::Options("LoRA needs at least one target".into()));
        }
        if let Some(t) = config
            .targets
            .iter()
            .find(|t| !LORA_TARGETS.contains(&t.as_str()))
        {
            return Err(TrainError::Options(format!(
                "unknown LoRA target {t:?} (choose from {})",
                LORA_TARGETS.join(", ")
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
        let mut vars = BTreeMap::new();
        for (name, w) in &self.vars {
            let target = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').nth(1))
                .is_some_and(|p| config.targets.iter().any(|t| t == p));
            if !target {
                continue;
            }
            let (rows, cols) = w.dims2()?;
            if config.rank > rows.min(cols) {
                return Err(TrainError::Options(format!(
                    "LoRA rank {} is above the smaller side of {name} ({rows}×{cols})",
                    config.rank
                )));
            }
            let bound = 1.0 / (cols as f32).sqrt();
            let a: Vec<f32> = (0..config.rank * cols)
                .map(|_| rng.gen_range(-bound..bound))
                .collect();
            vars.insert(
                format!("{name}.lora_a"),
                Var::from_vec(a, (config.rank, cols), &self.device)?,
            );
            vars.insert(
                format!("{name}.lora_b"),
                Var::zeros((rows, config.rank), DType::F32, &self.device)?,
            );
        }
        self.lora = Some(Lora { config, vars });
        Ok(self)
    }

    /// The LoRA settings, when the student trains adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|l| &l.config)
    }

    /// What training updates: the adapters with LoRA, else every weight.
    pub fn trainable(&self) -> &BTreeMap<String, Var> {
        match &self.lora {
            Some(l) => &l.vars,
            None => &self.vars,
        }
    }

    /// Snapshot of [`Student::trainable`], for checkpoints.
    pub fn trainable_tensors(&self) -> BTreeMap<String, Tensor> {
        self.trainable()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Restores [`Student::trainable_tensors`]; every one must be present
    /// with its shape.
    pub fn set_trainable(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        set_all(self.trainable(), tensors, false, &self.device)
    }

    /// Opens a GGUF file and dequantizes it (see [`Student::from_model`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_model(&Model::open(path)?)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every weight by its GGUF tensor name, in name order.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// Whether the output projection is the token embedding.
    pub fn tied(&self) -> bool {
        self.tied
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// The weight `name` as the forward pass uses it: frozen (detached)
    /// under LoRA, with its adapter's product added when it has one.
    fn var(&self, name: &str) -> Result<Tensor> {
        self.opt(name)
            .transpose()?
            .ok_or_else(|| TrainError::Student(format!("no weight {name:?}")))
    }

    /// [`Student::var`] for weights a model may not have.
    fn opt(&self, name: &str) -> Option<Result<Tensor>> {
        let base = self.vars.get(name)?.as_tensor();
        let Some(lora) = &self.lora else {
            return Some(Ok(base.clone()));
        };
        let merged = || -> Result<Tensor> {
            let base = base.detach();
            match (
                lora.vars.get(&format!("{name}.lora_a")),
                lora.vars.get(&format!("{name}.lora_b")),
            ) {
                (Some(a), Some(b)) => {
                    let scale = lora.config.alpha / lora.config.rank as f64;
                    Ok((base + (b.as_tensor().matmul(a.as_tensor())? * scale)?)?)
                }
                _ => Ok(base),
            }
        };
        Some(merged())
    }

    /// Replaces every weight with the tensor of the same name in `weights`
    /// (same shapes; names not in the student are an error, missing ones
    /// keep their value only when `partial`).
    pub fn set_weights(&self, weights: &BTreeMap<String, Tensor>, partial: bool) -> Result<()> {
        set_all(&self.vars, weights, partial, &self.device)
    }

    /// The weights as plain tensors by GGUF name (a snapshot, detached from
    /// the graph), adapters merged in.
    pub fn weights(&self) -> Result<BTreeMap<String, Tensor>> {
        self.vars
            .keys()
            .map(|k| Ok((k.clone(), self.var(k)?.detach())))
            .collect()
    }

    /// The hidden states after the final norm for `tokens` (`[batch, seq]`,
    /// u32), shape `[batch, seq, n_embd]`. Sequences are causal from
    /// position 0; padding at the end of a row does not change the earlier
    /// positions.
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = tokens.dims2()?;
        let d = c.n_embd;
        let emb = self.var(TOKEN_EMBD)?;
        let mut x = emb
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        if c.embedding_scale != 1.0 {
            x = (x * c.embedding_scale as f64)?;
        }
        let global = Rope::new(c, c.rope_base, c.rope_scale, t, &self.device)?;
        let local = Rope::new(c, c.rope_base_local, 1.0, t, &self.device)?;
        let causal = mask(t, None, &self.device)?;
        let windowed = match c.sliding_window {
            Some(w) => Some(mask(t, Some(w), &self.device)?),
            None => None,
        };
        for il in 0..c.n_layers {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let sliding = c.sliding_layers.get(il).copied().unwrap_or(false);
            let (rope, mask) = match (&windowed, sliding) {
                (Some(w), true) => (&local, w),
                _ => (&global, &causal),
            };
            let h = rms_norm(&x, &self.var(&n("attn_norm"))?, c.rms_eps)?;
            let mut a = self.attention(&h, il, rope, mask)?;
            if let Some(w) = self.opt(&n("post_attention_norm")) {
                a = rms_norm(&a, &w?, c.rms_eps)?;
            }
            x = (x + a)?;
            let h = rms_norm(&x, &self.var(&n("ffn_norm"))?, c.rms_eps)?;
            let gate = linear(&h, &self.var(&n("ffn_gate"))?)?;
            let up = linear(&h, &self.var(&n("ffn_up"))?)?;
            let act = match c.activation {
                Activation::Silu => gate.silu()?,
                Activation::Gelu => gate.gelu()?,
            };
            let mut f = linear(&(act * up)?, &self.var(&n("ffn_down"))?)?;
            if let Some(w) = self.opt(&n("post_ffw_norm")) {
                f = rms_norm(&f, &w?, c.rms_eps)?;
            }
            x = (x + f)?;
        }
        rms_norm(&x, &self.var("output_norm.weight")?, c.rms_eps)
    }

    /// Logits for hidden states of shape `[.., n_embd]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let out = if self.tied {
            self.var(TOKEN_EMBD)?
        } else {
            self.var(OUTPUT)?
        };
        let mut logits = linear(hidden, &out)?;
        if let Some(cap) = self.config.final_logit_softcap {
            logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
        }
        Ok(logits)
    }

    /// Logits for every position of `tokens` (`[batch, seq]` → `[batch, seq, vocab]`).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        self.logits(&self.hidden(tokens)?)
    }

    fn attention(&self, h: &Tensor, il: usize, rope: &Rope, mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let (b, t, _) = h.dims3()?;
        let hd = c.head_dim;
        let heads = |x: Tensor, count: usize, norm: Option<Result<Tensor>>| -> Result<Tensor> {
            let mut x = x.reshape((b, t, count, hd))?;
            if let Some(w) = norm {
                x = rms_norm(&x, &w?, c.rms_eps)?;
            }
            Ok(x.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(
            linear(h, &self.var(&n("attn_q"))?)?,
            c.n_heads,
            self.opt(&n("attn_q_norm")),
        )?;
        let k = heads(
            linear(h, &self.var(&n("attn_k"))?)?,
            c.n_kv_heads,
            self.opt(&n("attn_k_norm")),
        )?;
        let v = heads(linear(h, &self.var(&n("attn_v"))?)?, c.n_kv_heads, None)?;
        let q = rope.apply(&q)?;
        let k = rope.apply(&k)?;
        let group = c.n_heads / c.n_kv_heads;
        let (k, v) = if group > 1 {
            (repeat_kv(&k, group)?, repeat_kv(&v, group)?)
        } else {
            (k, v)
        };
        let scores = (q.matmul(&k.t()?)? * c.attention_scale as f64)?;
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs.matmul(&v)?; // [b, heads, t, hd]
        let out = out.transpose(1, 2)?.reshape((b, t, c.n_heads * hd))?;
        linear(&out, &self.var(&n("attn_output"))?)
    }
}

/// Sets each variable of `vars` to the tensor of the same name.
fn set_all(
    vars: &BTreeMap<String, Var>,
    tensors: &BTreeMap<String, Tensor>,
    partial: bool,
    device: &Device,
) -> Result<()> {
    if let Some(extra) = tensors.keys().find(|k| !vars.contains_key(*k)) {
        return Err(TrainError::Student(format!(
            "weight {extra:?} is not part of this student"
        )));
    }
    for (name, var) in vars {
        match tensors.get(name) {
            Some(t) => {
                if t.dims() != var.dims() {
                    return Err(TrainError::Student(format!(
                        "weight {name:?} has shape {:?}, the student's is {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
            }
            None if partial => {}
            None => return Err(TrainError::Student(format!("weight {name:?} is missing"))),
        }
    }
    Ok(())
}

/// `x @ w^T` for a weight stored as `[out, in]` (GGUF's and PyTorch's layout).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_matmul(&w.t()?)?)
}

/// RMSNorm over the last dimension, from differentiable operations.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps as f64)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// `[b, kv_heads, t, hd]` → `[b, kv_heads * group, t, hd]`, each key/value
/// head repeated for the query heads of its group.
fn repeat_kv(x: &Tensor, group: usize) -> Result<Tensor> {
    let (b, kvh, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kvh, group, t, hd))?
        .reshape((b, kvh * group, t, hd))?)
}

/// Additive attention mask `[t, t]`: 0 where key `j` is visible from query
/// `i` (`j <= i`, and within the window when there is one), -inf elsewhere.
fn mask(t: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (t, t), device)?)
}

/// Rope tables for positions `0..t` and how to apply them.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    dims: usize,
    head_dim: usize,
    neox: bool,
}

impl Rope {
    fn new(c: &ModelConfig, base: f32, scale: f32, t: usize, device: &Device) -> Result<Self> {
        let inv = edgeloop_core::model::ops::rope_inv_freq(c.rope_dims, base, scale);
        let half = inv.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (t, half), device)?,
            sin: Tensor::from_vec(sin, (t, half), device)?,
            dims: c.rope_dims,
            head_dim: c.head_dim,
            neox: c.rope_style == RopeStyle::Neox,
        })
    }

    /// Rotates the first `dims` dimensions of each head of `x` (`[b, h, t, hd]`).
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, t, _) = x.dims4()?;
        let half = self.dims / 2;
        let rot = x.narrow(3, 0, self.dims)?;
        let out = if self.neox {
            let x0 = rot.narrow(3, 0, half)?;
            let x1 = rot.narrow(3, half, half)?;
            let a = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
            let c = (x0.broadcast_mul(&self.sin)? + x1.broadcast_mul(&self.cos)?)?;
            Tensor::cat(&[a, c], 3)?
        } else {
            let pairs = rot.reshape((b, h, t, half, 2))?;
            let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
            let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
            let a = (x0.broadcast_mul(&self.cos)? - x1.broadcast_mul(&self.sin)?)?;
            let c = (x0.broadcast_mul(&self.sin)? + x1.broadcast_mul(&self.cos)?)?;
            Tensor::stack(&[a, c], 4)?.reshape((b, h, t, self.dims))?
        };
        if self.dims == self.head_dim {
            Ok(out)
        } else {
            let pass = x.narrow(3, self.dims, self.head_dim - self.dims)?;
            Ok(Tensor::cat(&[out, pass], 3)?)
        }
    }
}
