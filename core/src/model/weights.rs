//! The model's tensors, located in the memory map and checked against the
//! configuration. Nothing is copied except the small f32 norm vectors.

use std::ops::Range;

use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

use super::config::ModelConfig;
use super::ModelError;

/// A 2-D weight matrix borrowed from the file: `rows` rows of `cols` elements.
#[derive(Clone, Debug)]
pub struct MatrixRef {
    pub name: String,
    pub dtype: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Byte range in the file.
    pub bytes: Range<usize>,
}

/// The weights of one transformer block.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: MatrixRef,
    pub wk: MatrixRef,
    pub wv: MatrixRef,
    pub wo: MatrixRef,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: MatrixRef,
    pub w_up: MatrixRef,
    pub w_down: MatrixRef,
    pub post_ffn_norm: Option<Vec<f32>>,
}

/// All weights of a model.
#[derive(Debug)]
pub struct Weights {
    pub token_embd: MatrixRef,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// The output projection; the token embedding when the file ties them.
    pub output: MatrixRef,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<MatrixRef, ModelError> {
        let t = self.info(name)?;
        self.matrix_from(t, cols, rows)
    }

    fn matrix_from(
        &self,
        t: &TensorInfo,
        cols: usize,
        rows: usize,
    ) -> Result<MatrixRef, ModelError> {
        let expected = [cols as u64, rows as u64];
        if t.dims != expected {
            return Err(ModelError::TensorShape {
                name: t.name.clone(),
                expected: expected.to_vec(),
                found: t.dims.clone(),
            });
        }
        if !t.dtype.is_supported() {
            return Err(ModelError::UnsupportedType {
                name: t.name.clone(),
                dtype: t.dtype,
            });
        }
        let start = (self.file.data_offset() + t.offset) as usize;
        Ok(MatrixRef {
            name: t.name.clone(),
            dtype: t.dtype,
            rows,
            cols,
            bytes: start..start + t.n_bytes as usize,
        })
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.info(name)?;
        if t.dims != [len as u64] {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: vec![len as u64],
                found: t.dims.clone(),
            });
        }
        let mut out = vec![0f32; len];
        crate::quant::dequantize(t.dtype, self.file.tensor_data(t), &mut out)
            .map_err(|e| ModelError::Config(format!("tensor {name:?}: {e}")))?;
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Config(format!(
                "tensor {name:?} holds a non-finite value at index {i}"
            )));
        }
        Ok(out)
    }

    fn opt_vector(
        &self,
        name: &str,
        len: usize,
        wanted: bool,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        if wanted {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Weights {
    /// Locates and checks every tensor the configuration calls for.
    pub fn load(file: &GgufFile, c: &ModelConfig) -> Result<Self, ModelError> {
        let l = Loader { file };
        let d = c.n_embd;
        let token_embd = l.matrix("token_embd.weight", d, c.vocab_size)?;
        let output = match file.tensor("output.weight") {
            Some(t) => l.matrix_from(t, d, c.vocab_size)?,
            None => token_embd.clone(),
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm"), d)?,
                wq: l.matrix(&n("attn_q"), d, c.q_dim())?,
                wk: l.matrix(&n("attn_k"), d, c.kv_dim())?,
                wv: l.matrix(&n("attn_v"), d, c.kv_dim())?,
                wo: l.matrix(&n("attn_output"), c.q_dim(), d)?,
                q_norm: l.opt_vector(&n("attn_q_norm"), c.head_dim, c.qk_norm)?,
                k_norm: l.opt_vector(&n("attn_k_norm"), c.head_dim, c.qk_norm)?,
                post_attn_norm: l.opt_vector(&n("post_attention_norm"), d, c.post_norms)?,
                ffn_norm: l.vector(&n("ffn_norm"), d)?,
                w_gate: l.matrix(&n("ffn_gate"), d, c.n_ff)?,
                w_up: l.matrix(&n("ffn_up"), d, c.n_ff)?,
                w_down: l.matrix(&n("ffn_down"), c.n_ff, d)?,
                post_ffn_norm: l.opt_vector(&n("post_ffw_norm"), d, c.post_norms)?,
            });
        }
        if let Some(extra) = file.tensors().iter().find(|t| {
            t.name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next()?.parse::<usize>().ok())
                .is_some_and(|b| b >= c.n_layers)
        }) {
            return Err(ModelError::Config(format!(
                "tensor {:?} belongs to a block beyond block_count {}",
                extra.name, c.n_layers
            )));
        }
        Ok(Weights {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
        })
    }

    /// Bytes of weights read to produce one token (every matrix once).
    pub fn bytes_per_token(&self) -> usize {
        let layer: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .map(|m| m.bytes.len())
                    .sum::<usize>()
            })
            .sum();
        layer + self.output.bytes.len()
    }
}
