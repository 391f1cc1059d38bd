//! Qwen3: Llama's block with per-head RMSNorm on Q and K before rope,
//! NeoX-style rope, and a head dimension independent of the embedding width.

use crate::gguf::Metadata;

use super::config::{Activation, Architecture, ModelConfig, RopeStyle};
use super::ModelError;

/// The configuration of a qwen3-architecture file.
pub(super) fn config(meta: &Metadata) -> Result<ModelConfig, ModelError> {
    let mut c = ModelConfig::common(meta, Architecture::Qwen3)?;
    c.rope_style = RopeStyle::Neox;
    c.activation = Activation::Silu;
    c.qk_norm = true;
    Ok(c)
}
