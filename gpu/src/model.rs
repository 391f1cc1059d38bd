//! A whole model on the GPU: every weight of an `edgeloop_core` [`Model`]
//! uploaded once, a key/value cache per layer on the device, and the
//! forward pass of `edgeloop_core`'s `forward.rs` recorded from the kernels
//! of this crate.
//!
//! [`GpuModel::forward`] runs consecutive tokens of one sequence (a prompt
//! or a single decoded token) in chunks of up to [`MAX_N`] tokens, the
//! matrix kernels' column limit; each chunk is one command encoder and one
//! submission, and only the last token's logits are read back.

use edgeloop_core::model::{ops, Activation, MatrixRef, Model, ModelConfig, RopeStyle};

use crate::buffer::GpuVec;
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::attention::{attend, kv_store, scratch_len, AttentionShape, GpuKvLayer};
use crate::kernels::elementwise::{self, RopeTable};
use crate::kernels::matmul::{embed, matmul, GpuMatrix, MAX_N};
use crate::quant::WeightType;

/// One transformer block's weights on the device.
#[derive(Debug)]
struct GpuLayer {
    attn_norm: GpuVec,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    q_norm: Option<GpuVec>,
    k_norm: Option<GpuVec>,
    post_attn_norm: Option<GpuVec>,
    ffn_norm: GpuVec,
    w_gate: GpuMatrix,
    w_up: GpuMatrix,
    w_down: GpuMatrix,
    post_ffn_norm: Option<GpuVec>,
}

/// The key/value cache of one sequence on the device: one [`GpuKvLayer`] per
/// layer, with the number of positions filled so far.
#[derive(Debug)]
pub struct GpuKvCache {
    layers: Vec<GpuKvLayer>,
    len: usize,
    capacity: usize,
}

impl GpuKvCache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it holds room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the positions from `len` on (the rows stay allocated).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A model whose weights live on the GPU, with its forward pass there.
#[derive(Debug)]
pub struct GpuModel<'c> {
    ctx: &'c GpuContext,
    config: ModelConfig,
    token_embd: GpuMatrix,
    layers: Vec<GpuLayer>,
    output_norm: GpuVec,
    output: GpuMatrix,
    rope_global: RopeTable,
    rope_local: RopeTable,
}

/// Uploads the matrix `m` of `bytes` (the model file's bytes) in its GGML
/// layout.
fn upload_matrix(ctx: &GpuContext, bytes: &[u8], m: &MatrixRef) -> Result<GpuMatrix> {
    let dtype = WeightType::from_ggml_id(m.dtype.id())?;
    let data = bytes.get(m.bytes.clone()).ok_or_else(|| {
        GpuError::Shape(format!(
            "tensor {:?} at bytes {:?} lies outside the file's {} bytes",
            m.name,
            m.bytes,
            bytes.len()
        ))
    })?;
    GpuMatrix::upload(ctx, dtype, m.rows, m.cols, data)
}

/// Uploads an optional norm vector.
fn upload_opt(ctx: &GpuContext, w: &Option<Vec<f32>>) -> Option<GpuVec> {
    w.as_ref().map(|w| GpuVec::from_slice(ctx, w))
}

/// Scratch vectors of one chunk of `n` tokens.
struct Buffers {
    x: GpuVec,
    h: GpuVec,
    q0: GpuVec,
    q: GpuVec,
    k0: GpuVec,
    k: GpuVec,
    v: GpuVec,
    attn: GpuVec,
    o: GpuVec,
    gate: GpuVec,
    up: GpuVec,
    scores: GpuVec,
}

impl<'c> GpuModel<'c> {
    /// Uploads every weight of `model` to `ctx`'s device once: the matrices
    /// as their GGML bytes (the tied output matrix, when there is one, is
    /// uploaded a second time as `output`), the norm vectors as f32, and the
    /// global and local rope frequency tables as core computes them.
    ///
    /// Fails with [`GpuError::Unsupported`] for a weight type without a GPU
    /// kernel and [`GpuError::Shape`] for a head dimension the attention
    /// kernel does not take.
    pub fn new(ctx: &'c GpuContext, model: &Model) -> Result<Self> {
        let c = model.config().clone();
        if c.head_dim > crate::kernels::attention::MAX_HEAD_DIM {
            return Err(GpuError::Shape(format!(
                "head dimension {} is above the GPU attention's {}",
                c.head_dim,
                crate::kernels::attention::MAX_HEAD_DIM
            )));
        }
        let bytes = model.gguf().bytes();
        let w = model.weights();
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            layers.push(GpuLayer {
                attn_norm: GpuVec::from_slice(ctx, &lw.attn_norm),
                wq: upload_matrix(ctx, bytes, &lw.wq)?,
                wk: upload_matrix(ctx, bytes, &lw.wk)?,
                wv: upload_matrix(ctx, bytes, &lw.wv)?,
                wo: upload_matrix(ctx, bytes, &lw.wo)?,
                q_norm: upload_opt(ctx, &lw.q_norm),
                k_norm: upload_opt(ctx, &lw.k_norm),
                post_attn_norm: upload_opt(ctx, &lw.post_attn_norm),
                ffn_norm: GpuVec::from_slice(ctx, &lw.ffn_norm),
                w_gate: upload_matrix(ctx, bytes, &lw.w_gate)?,
                w_up: upload_matrix(ctx, bytes, &lw.w_up)?,
                w_down: upload_matrix(ctx, bytes, &lw.w_down)?,
                post_ffn_norm: upload_opt(ctx, &lw.post_ffn_norm),
            });
        }
        let rope_global = RopeTable::new(
            ctx,
            &ops::rope_inv_freq(c.rope_dims, c.rope_base, c.rope_scale),
        );
        let rope_local = RopeTable::new(
            ctx,
            &ops::rope_inv_freq(c.rope_dims, c.rope_base_local, 1.0),
        );
        Ok(Self {
            ctx,
            token_embd: upload_matrix(ctx, bytes, &w.token_embd)?,
            output: upload_matrix(ctx, bytes, &w.output)?,
            output_norm: GpuVec::from_slice(ctx, &w.output_norm),
            layers,
            rope_global,
            rope_local,
            config: c,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A key/value cache for one sequence of up to `capacity` positions, on
    /// the device (f16, `2 * kv_dim * capacity` bytes per layer).
    pub fn new_cache(&self, capacity: usize) -> Result<GpuKvCache> {
        let layers = (0..self.config.n_layers)
            .map(|_| GpuKvLayer::new(self.ctx, self.config.kv_dim(), capacity))
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuKvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Runs `tokens`, consecutive tokens of one sequence starting at
    /// position `start_pos` (at most `cache.len()`: positions from there on
    /// are overwritten), storing their keys and values in `cache`.
    ///
    /// Returns the logits (`vocab_size` values) after the last token when
    /// `want_logits`, else an empty vector (e.g. for all but the last part
    /// of a long prompt). Tokens go through in chunks of up to [`MAX_N`],
    /// each recorded into one command encoder and submitted once.
    pub fn forward(
        &self,
        cache: &mut GpuKvCache,
        tokens: &[u32],
        start_pos: usize,
        want_logits: bool,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(GpuError::Shape("forward of no tokens".into()));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(GpuError::Shape(format!(
                "token {t} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        if start_pos > cache.len {
            return Err(GpuError::Shape(format!(
                "position {start_pos} leaves a gap after the {} cached positions",
                cache.len
            )));
        }
        if start_pos + tokens.len() > cache.capacity {
            return Err(GpuError::Shape(format!(
                "positions up to {} are beyond the cache's {}",
                start_pos + tokens.len(),
                cache.capacity
            )));
        }
        cache.len = start_pos;
        let mut logits = Vec::new();
        let chunks = tokens.len().div_ceil(MAX_N);
        for (i, chunk) in tokens.chunks(MAX_N).enumerate() {
            let last = want_logits && i + 1 == chunks;
            let pos = start_pos + i * MAX_N;
            logits = self.run_chunk(cache, chunk, pos, last)?;
            cache.len = pos + chunk.len();
        }
        Ok(logits)
    }

    /// The scratch vectors of a chunk of `n` tokens.
    fn buffers(&self, n: usize, cache: &GpuKvCache) -> Result<Buffers> {
        let c = &self.config;
        let ctx = self.ctx;
        let (d, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
        let z = |len| GpuVec::zeros(ctx, len);
        let layer = cache
            .layers
            .first()
            .ok_or_else(|| GpuError::Shape("a cache without layers".into()))?;
        let shape = self.shape(None);
        Ok(Buffers {
            x: z(n * d),
            h: z(n * d),
            q0: z(n * qd),
            q: z(n * qd),
            k0: z(n * kvd),
            k: z(n * kvd),
            v: z(n * kvd),
            attn: z(n * qd),
            o: z(n * d),
            gate: z(n * c.n_ff),
            up: z(n * c.n_ff),
            scores: z(scratch_len(&shape, n, layer)),
        })
    }

    fn shape(&self, window: Option<usize>) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            scale: c.attention_scale,
            window,
        }
    }

    /// One chunk of at most [`MAX_N`] tokens at positions `pos..`, in one
    /// submission; the last token's logits when `logits`.
    fn run_chunk(
        &self,
        cache: &GpuKvCache,
        ids: &[u32],
        pos: usize,
        logits: bool,
    ) -> Result<Vec<f32>> {
        let ctx = self.ctx;
        let c = &self.config;
        let n = ids.len();
        let d = c.n_embd;
        let positions: Vec<u32> = (pos..pos + n).map(|p| p as u32).collect();
        let b = self.buffers(n, cache)?;
        let last = GpuVec::zeros(ctx, d);
        let normed = GpuVec::zeros(ctx, d);
        let out = GpuVec::zeros(ctx, c.vocab_size);
        let neox = c.rope_style == RopeStyle::Neox;
        ctx.submit("forward", |enc| {
            embed(ctx, enc, &self.token_embd, ids, &b.x)?;
            if c.embedding_scale != 1.0 {
                elementwise::scale(ctx, enc, &b.x, c.embedding_scale)?;
            }
            for (il, lw) in self.layers.iter().enumerate() {
                let kv = &cache.layers[il];
                // Attention.
                elementwise::rms_norm(ctx, enc, &b.x, &lw.attn_norm, c.rms_eps, &b.h)?;
                matmul(ctx, enc, &lw.wq, &b.h, n, &b.q0)?;
                matmul(ctx, enc, &lw.wk, &b.h, n, &b.k0)?;
                matmul(ctx, enc, &lw.wv, &b.h, n, &b.v)?;
                let q = match &lw.q_norm {
                    Some(w) => {
                        elementwise::rms_norm(ctx, enc, &b.q0, w, c.rms_eps, &b.q)?;
                        &b.q
                    }
                    None => &b.q0,
                };
                let k = match &lw.k_norm {
                    Some(w) => {
                        elementwise::rms_norm(ctx, enc, &b.k0, w, c.rms_eps, &b.k)?;
                        &b.k
                    }
                    None => &b.k0,
                };
                let sliding = c.sliding_layers.get(il).copied().unwrap_or(false);
                let table = if sliding {
                    &self.rope_local
                } else {
                    &self.rope_global
                };
                let hd = c.head_dim;
                elementwise::rope(ctx, enc, q, &positions, c.n_heads, hd, table, neox)?;
                elementwise::rope(ctx, enc, k, &positions, c.n_kv_heads, hd, table, neox)?;
                kv_store(ctx, enc, kv, k, &b.v, &positions)?;
                let window = if sliding { c.sliding_window } else { None };
                let shape = self.shape(window);
                attend(ctx, enc, kv, q, &positions, &shape, &b.scores, &b.attn)?;
                matmul(ctx, enc, &lw.wo, &b.attn, n, &b.o)?;
                self.residual(enc, &b, lw.post_attn_norm.as_ref())?;

                // Feed-forward.
                elementwise::rms_norm(ctx, enc, &b.x, &lw.ffn_norm, c.rms_eps, &b.h)?;
                matmul(ctx, enc, &lw.w_gate, &b.h, n, &b.gate)?;
                matmul(ctx, enc, &lw.w_up, &b.h, n, &b.up)?;
                match c.activation {
                    Activation::Silu => elementwise::silu_mul(ctx, enc, &b.gate, &b.up)?,
                    Activation::Gelu => elementwise::gelu_mul(ctx, enc, &b.gate, &b.up)?,
                }
                matmul(ctx, enc, &lw.w_down, &b.gate, n, &b.o)?;
                self.residual(enc, &b, lw.post_ffn_norm.as_ref())?;
            }
            if logits {
                let row = (d * 4) as u64;
                enc.copy_buffer_to_buffer(
                    b.x.buffer(),
                    (n - 1) as u64 * row,
                    last.buffer(),
                    0,
                    row,
                );
                elementwise::rms_norm(ctx, enc, &last, &self.output_norm, c.rms_eps, &normed)?;
                matmul(ctx, enc, &self.output, &normed, 1, &out)?;
                if let Some(cap) = c.final_logit_softcap {
                    elementwise::softcap(ctx, enc, &out, cap)?;
                }
            }
            Ok(())
        })?;
        if logits {
            out.read(ctx)
        } else {
            Ok(Vec::new())
        }
    }

    /// Records `x += norm(o)` (or `x += o` without a post-norm), through
    /// `h` as the normed copy.
    fn residual(
        &self,
        enc: &mut wgpu::CommandEncoder,
        b: &Buffers,
        post_norm: Option<&GpuVec>,
    ) -> Result<()> {
        match post_norm {
            Some(w) => {
                elementwise::rms_norm(self.ctx, enc, &b.o, w, self.config.rms_eps, &b.h)?;
                elementwise::add(self.ctx, enc, &b.x, &b.h)
            }
            None => elementwise::add(self.ctx, enc, &b.x, &b.o),
        }
    }
}
