//! Hyper-parameters of a transformer, read from GGUF metadata and checked.

use crate::gguf::{GgufError, Metadata};

use super::ModelError;

/// The supported architectures (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen3,
    Gemma3,
}

/// Names of the supported architectures, for error messages.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen3", "gemma3"];

impl Architecture {
    /// The architecture named by `general.architecture`.
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        match name {
            "llama" => Ok(Architecture::Llama),
            "qwen3" => Ok(Architecture::Qwen3),
            "gemma3" => Ok(Architecture::Gemma3),
            other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The GGUF name, which prefixes the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

/// How rotary position embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's "normal" rope, for which the
    /// converter permutes Q and K of Llama models.
    Interleaved,
    /// Pairs (i, i + d/2): GPT-NeoX style, used by Qwen3 and Gemma 3.
    Neox,
}

/// Feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SiLU-gated (SwiGLU).
    Silu,
    /// GELU (tanh approximation) gated (GeGLU).
    Gelu,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    /// Number of dimensions of each head that are rotated.
    pub rope_dims: usize,
    pub rope_base: f32,
    /// Position scale for linear rope scaling (1.0 = none).
    pub rope_scale: f32,
    /// Rope base of sliding-window layers (Gemma 3 uses a different base there).
    pub rope_base_local: f32,
    /// Sliding attention window and which layers use it.
    pub sliding_window: Option<usize>,
    pub sliding_layers: Vec<bool>,
    pub activation: Activation,
    /// Per-head RMSNorm of Q and K before rope (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm after attention and after the feed-forward (Gemma 3).
    pub post_norms: bool,
    /// Factor applied to the token embeddings (Gemma 3: sqrt(n_embd)).
    pub embedding_scale: f32,
    /// Scale of attention scores.
    pub attention_scale: f32,
    /// tanh soft-capping of the final logits, if any.
    pub final_logit_softcap: Option<f32>,
}

/// Largest values accepted for the hyper-parameters: far above any 0.1-10B
/// model, low enough that products of them cannot overflow.
const MAX_LAYERS: u64 = 512;
const MAX_DIM: u64 = 1 << 16;
const MAX_HEADS: u64 = 1024;
const MAX_VOCAB: u64 = 1 << 22;
const MAX_CONTEXT: u64 = 1 << 24;

/// Typed reads of `{arch}.*` keys with range checks.
pub(super) struct Keys<'a> {
    pub meta: &'a Metadata,
    pub arch: &'static str,
}

impl Keys<'_> {
    pub fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    /// A required count in `1..=max`.
    pub fn count(&self, suffix: &str, max: u64) -> Result<usize, ModelError> {
        let key = self.key(suffix);
        let v = self.meta.u64(&key)?;
        check_range(&key, v, max)
    }

    /// An optional count in `1..=max`.
    pub fn opt_count(&self, suffix: &str, max: u64) -> Result<Option<usize>, ModelError> {
        let key = self.key(suffix);
        self.meta
            .opt_u64(&key)?
            .map(|v| check_range(&key, v, max))
            .transpose()
    }

    /// An optional positive finite float.
    pub fn opt_positive(&self, suffix: &str) -> Result<Option<f32>, ModelError> {
        let key = self.key(suffix);
        match self.meta.opt_f64(&key)? {
            None => Ok(None),
            Some(v) if v.is_finite() && v > 0.0 && v < f32::MAX as f64 => Ok(Some(v as f32)),
            Some(v) => Err(ModelError::Config(format!(
                "{key} = {v} must be a positive finite number"
            ))),
        }
    }
}

fn check_range(key: &str, v: u64, max: u64) -> Result<usize, ModelError> {
    if v == 0 || v > max {
        return Err(ModelError::Config(format!(
            "{key} = {v} is out of range (1 to {max})"
        )));
    }
    Ok(v as usize)
}

impl ModelConfig {
    /// Reads the configuration shared by all architectures; each
    /// architecture's module then adjusts what differs.
    pub(super) fn common(meta: &Metadata, arch: Architecture) -> Result<Self, ModelError> {
        let k = Keys {
            meta,
            arch: arch.name(),
        };
        let n_layers = k.count("block_count", MAX_LAYERS)?;
        let n_embd = k.count("embedding_length", MAX_DIM)?;
        let n_ff = k.count("feed_forward_length", MAX_DIM * 4)?;
        let n_heads = k.count("attention.head_count", MAX_HEADS)?;
        let n_kv_heads = k
            .opt_count("attention.head_count_kv", MAX_HEADS)?
            .unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(ModelError::Config(format!(
                "{n_heads} attention heads are not a multiple of {n_kv_heads} key/value heads"
            )));
        }
        let head_dim = match k.opt_count("attention.key_length", MAX_DIM)? {
            Some(d) => d,
            None if n_embd % n_heads == 0 => n_embd / n_heads,
            None => {
                return Err(ModelError::Config(format!(
                "embedding length {n_embd} is not a multiple of {n_heads} heads and {} is not set",
                k.key("attention.key_length")
            )))
            }
        };
        if let Some(v) = k.opt_count("attention.value_length", MAX_DIM)? {
            if v != head_dim {
                return Err(ModelError::Config(format!(
                    "value length {v} differs from key length {head_dim} (not supported)"
                )));
            }
        }
        if head_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "head dimension {head_dim} is odd"
            )));
        }
        let rope_dims = k
            .opt_count("rope.dimension_count", MAX_DIM)?
            .unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope dimension count {rope_dims} must be even and at most the head dimension {head_dim}"
            )));
        }
        let vocab_size = match k.opt_count("vocab_size", MAX_VOCAB)? {
            Some(v) => v,
            None => meta
                .opt_strings("tokenizer.ggml.tokens")?
                .map(|t| t.len())
                .filter(|&n| n > 0 && n as u64 <= MAX_VOCAB)
                .ok_or_else(|| {
                    ModelError::Config(
                        "vocabulary size unknown: no vocab_size and no tokens".into(),
                    )
                })?,
        };
        let context_length = k.count("context_length", MAX_CONTEXT)?;
        let rms_eps = k
            .opt_positive("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5);
        let rope_base = k.opt_positive("rope.freq_base")?.unwrap_or(10_000.0);
        let rope_scale = match meta.opt_str(&k.key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / k.opt_positive("rope.scaling.factor")?.unwrap_or(1.0),
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "rope scaling {other:?} is not supported (supported: none, linear)"
                )))
            }
        };
        Ok(ModelConfig {
            arch,
            n_layers,
            n_embd,
            n_ff,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length,
            rms_eps,
            rope_style: RopeStyle::Neox,
            rope_dims,
            rope_base,
            rope_scale,
            rope_base_local: rope_base,
            sliding_window: None,
            sliding_layers: vec![false; n_layers],
            activation: Activation::Silu,
            qk_norm: false,
            post_norms: false,
            embedding_scale: 1.0,
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            final_logit_softcap: None,
        })
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes of KV cache per token of context (f16 keys and values).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layers * self.kv_dim() * std::mem::size_of::<u16>()
    }
}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}
