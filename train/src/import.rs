//! Checkpoints from other trainers: a Hugging Face `transformers`
//! safetensors state dict (same architecture as the student) mapped onto
//! the student's GGUF tensor names, with the conversions llama.cpp's
//! converter applies (Q/K rows permuted for llama's interleaved rope,
//! Gemma's norm weights stored as `1 + w`). Names already in GGUF form are
//! taken as they are.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use edgeloop_core::model::{Architecture, ModelConfig};

use crate::error::{Result, TrainError};
use crate::student::{Student, OUTPUT, TOKEN_EMBD};

/// The GGUF name of a Hugging Face parameter name, if it is one the
/// student has a place for.
pub fn gguf_name(hf: &str) -> Option<String> {
    let name = hf.strip_prefix("model.").unwrap_or(hf);
    match name {
        "embed_tokens.weight" => return Some(TOKEN_EMBD.into()),
        "norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some(OUTPUT.into()),
        _ => {}
    }
    let rest = name.strip_prefix("layers.")?;
    let (layer, param) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gguf = match param {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        "pre_feedforward_layernorm.weight" => "ffn_norm",
        "post_feedforward_layernorm.weight" => "post_ffw_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.weight"))
}

/// Gemma 3's `post_attention_layernorm` is the norm after attention, not
/// before the feed-forward as in llama.
fn gemma_name(hf: &str) -> Option<String> {
    let name = hf.strip_prefix("model.").unwrap_or(hf);
    if let Some(rest) = name.strip_prefix("layers.") {
        if let Some((layer, "post_attention_layernorm.weight")) = rest.split_once('.') {
            return Some(format!("blk.{layer}.post_attention_norm.weight"));
        }
    }
    gguf_name(hf)
}

/// Reorders the rows of a Q or K projection from Hugging Face's rotate-half
/// layout to the interleaved layout GGUF llama files use.
fn permute_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    Ok(w.reshape((heads, 2, half, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Maps a state dict onto the student's tensor names. Every tensor of the
/// student must be covered (a tied output may be absent); a tensor with no
/// place in the student is an error.
pub fn from_hf(
    tensors: BTreeMap<String, Tensor>,
    student: &Student,
) -> Result<BTreeMap<String, Tensor>> {
    let c: &ModelConfig = student.config();
    let gemma = c.arch == Architecture::Gemma3;
    let mut out = BTreeMap::new();
    for (name, t) in tensors {
        let already = student.vars().contains_key(&name);
        let target = if already {
            name.clone()
        } else if gemma {
            gemma_name(&name).ok_or_else(|| unknown(&name))?
        } else {
            gguf_name(&name).ok_or_else(|| unknown(&name))?
        };
        if target == OUTPUT && student.tied() {
            continue;
        }
        let mut t = t.to_dtype(DType::F32)?;
        if !already {
            if c.arch == Architecture::Llama {
                if target.ends_with("attn_q.weight") {
                    t = permute_rows(&t, c.n_heads)?;
                } else if target.ends_with("attn_k.weight") {
                    t = permute_rows(&t, c.n_kv_heads)?;
                }
            }
            if gemma && target.ends_with("norm.weight") {
                t = (t + 1.0)?;
            }
        }
        if out.insert(target.clone(), t).is_some() {
            return Err(TrainError::Student(format!(
                "the checkpoint holds {target:?} twice"
            )));
        }
    }
    if let Some(missing) = student.vars().keys().find(|k| !out.contains_key(*k)) {
        return Err(TrainError::Student(format!(
            "the checkpoint has no tensor for {missing:?}"
        )));
    }
    Ok(out)
}

fn unknown(name: &str) -> TrainError {
    TrainError::Student(format!(
        "checkpoint tensor {name:?} has no place in this student"
    ))
}

/// Inverse of the Q/K permutation, for writing a student's weights in
/// Hugging Face layout (see [`to_hf`]).
fn unpermute_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    Ok(w.reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// A llama student's weights under Hugging Face names and layout, as an
/// external trainer would read and write them.
pub fn to_hf(student: &Student) -> Result<BTreeMap<String, Tensor>> {
    let c = student.config();
    if c.arch != Architecture::Llama {
        return Err(TrainError::Student(
            "Hugging Face export is written for llama students".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, t) in student.weights()? {
        let hf = match name.as_str() {
            TOKEN_EMBD => "model.embed_tokens.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".into(),
            OUTPUT => "lm_head.weight".into(),
            _ => {
                let rest = name.strip_prefix("blk.").expect("block tensor");
                let (layer, param) = rest.split_once('.').expect("blk.N.name");
                let p = match param {
                    "attn_norm.weight" => "input_layernorm.weight",
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    other => {
                        return Err(TrainError::Student(format!(
                            "no Hugging Face name for {other:?}"
                        )))
                    }
                };
                format!("model.layers.{layer}.{p}")
            }
        };
        let t = if name.ends_with("attn_q.weight") {
            unpermute_rows(&t, c.n_heads)?
        } else if name.ends_with("attn_k.weight") {
            unpermute_rows(&t, c.n_kv_heads)?
        } else {
            t
        };
        out.insert(hf, t);
    }
    Ok(out)
}
