//! Gemma 3: embeddings scaled by sqrt(n_embd), per-head Q/K RMSNorm, extra
//! RMSNorms after attention and after the GeGLU feed-forward, NeoX rope, and
//! interleaved attention: five sliding-window layers (window from
//! `gemma3.attention.sliding_window`, rope base 10 000) for every global one.
//! The GGUF converter already folds Gemma's `1 + weight` into the norm weights.

use crate::gguf::Metadata;

use super::config::{Activation, Architecture, ModelConfig, RopeStyle};
use super::ModelError;

/// One global layer follows every five sliding-window layers.
const SLIDING_PATTERN: usize = 6;
/// Rope base of the sliding-window layers when the file does not set one.
const LOCAL_ROPE_BASE: f32 = 10_000.0;

/// The configuration of a gemma3-architecture file.
pub(super) fn config(meta: &Metadata) -> Result<ModelConfig, ModelError> {
    let mut c = ModelConfig::common(meta, Architecture::Gemma3)?;
    let keys = super::config::Keys {
        meta,
        arch: "gemma3",
    };
    c.rope_style = RopeStyle::Neox;
    c.activation = Activation::Gelu;
    c.qk_norm = true;
    c.post_norms = true;
    c.embedding_scale = (c.n_embd as f32).sqrt();
    // Gemma 3 scales queries by 1/sqrt(query_pre_attn_scalar), which equals
    // the head dimension for every size but 27B.
    c.attention_scale = if c.n_layers == 62 {
        1.0 / ((c.n_embd / c.n_heads) as f32).sqrt()
    } else {
        1.0 / (c.head_dim as f32).sqrt()
    };
    if let Some(window) = keys.opt_count("attention.sliding_window", 1 << 24)? {
        c.sliding_window = Some(window);
        c.sliding_layers = (0..c.n_layers)
            .map(|il| il % SLIDING_PATTERN < SLIDING_PATTERN - 1)
            .collect();
        c.rope_base_local = keys
            .opt_positive("rope.freq_base_swa")?
            .unwrap_or(LOCAL_ROPE_BASE);
    }
    c.final_logit_softcap = keys.opt_positive("final_logit_softcapping")?;
    Ok(c)
}
