//! Llama (SmolLM2 and other llama-architecture GGUFs): pre-norm blocks,
//! SwiGLU feed-forward, interleaved rope (Q and K were permuted for it by
//! the GGUF converter), output matrix tied to the embedding when absent.

use crate::gguf::Metadata;

use super::config::{Activation, Architecture, ModelConfig, RopeStyle};
use super::ModelError;

/// The configuration of a llama-architecture file.
pub(super) fn config(meta: &Metadata) -> Result<ModelConfig, ModelError> {
    let mut c = ModelConfig::common(meta, Architecture::Llama)?;
    c.rope_style = RopeStyle::Interleaved;
    c.activation = Activation::Silu;
    Ok(c)
}
