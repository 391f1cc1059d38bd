//! A whole model on the GPU: every weight of an `edgeloop_core` [`Model`]
//! uploaded once, a key/value cache per layer on the device, and the
//! forward pass of `edgeloop_core`'s `forward.rs` recorded from the kernels
//! of this crate.
//!
//! [`GpuModel::forward`] runs consecutive tokens of one sequence (a prompt
//! or a single decoded token) in chunks of up to [`MAX_N`] tokens, the
//! matrix kernels' column limit; each chunk is one command encoder and one
//! submission, and only the last token's logits are read back.

use edgeloop_core::model::{ops, Activation, BatchToken, MatrixRef, Model, ModelConfig, RopeStyle};

use std::sync::Mutex;

use crate::buffer::{map_f32, readback_buffer, GpuVec};
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::attention::{attend, kv_store, AttentionShape, GpuKvLayer};
use crate::kernels::elementwise::{self, RopeTable};
use crate::kernels::matmul::{embed, matmul, GpuMatrix, MAX_N};
use crate::quant::WeightType;
use crate::record::{RecordStats, Recorder};

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
    /// A cache holding nothing and no memory (a released slot).
    pub fn empty() -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
        }
    }

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

    /// Bytes of device memory held (f16 keys and values).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| 2 * 2 * l.kv_dim() * l.capacity())
            .sum()
    }
}

/// A model whose weights live on the GPU, with its forward pass there.
#[derive(Debug)]
pub struct GpuModel {
    ctx: GpuContext,
    config: ModelConfig,
    token_embd: GpuMatrix,
    layers: Vec<GpuLayer>,
    output_norm: GpuVec,
    output: GpuMatrix,
    rope_global: RopeTable,
    rope_local: RopeTable,
    /// The forward pass's scratch vectors, kept between calls (and held
    /// from recording to readback).
    scratch: Mutex<Option<Scratch>>,
    /// What the last chunk's submission recorded.
    last_recording: Mutex<RecordStats>,
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
#[derive(Debug)]
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

impl GpuModel {
    /// Uploads every weight of `model` to `ctx`'s device once: the matrices
    /// as their GGML bytes (the tied output matrix, when there is one, is
    /// uploaded a second time as `output`), the norm vectors as f32, and the
    /// global and local rope frequency tables as core computes them.
    ///
    /// Fails with [`GpuError::Unsupported`] for a weight type without a GPU
    /// kernel and [`GpuError::Shape`] for a head dimension the attention
    /// kernel does not take.
    pub fn new(ctx: &GpuContext, model: &Model) -> Result<Self> {
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
            ctx: ctx.clone(),
            token_embd: upload_matrix(ctx, bytes, &w.token_embd)?,
            output: upload_matrix(ctx, bytes, &w.output)?,
            output_norm: GpuVec::from_slice(ctx, &w.output_norm),
            layers,
            rope_global,
            rope_local,
            config: c,
            scratch: Mutex::new(None),
            last_recording: Mutex::new(RecordStats::default()),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// What the submission of the last forward pass (its last chunk of
    /// tokens) recorded: dispatches, compute passes, new bind groups.
    pub fn last_recording(&self) -> RecordStats {
        *self
            .last_recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A key/value cache for one sequence of up to `capacity` positions, on
    /// the device (f16, `2 * kv_dim * capacity` bytes per layer); an empty
    /// one for a capacity of 0.
    pub fn new_cache(&self, capacity: usize) -> Result<GpuKvCache> {
        if capacity == 0 {
            return Ok(GpuKvCache::empty());
        }
        let layers = (0..self.config.n_layers)
            .map(|_| GpuKvLayer::new(&self.ctx, self.config.kv_dim(), capacity))
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuKvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// A new cache of `capacity` positions holding a copy of the first
    /// `len` positions of `src` (at most what it holds).
    pub fn fork_cache(&self, src: &GpuKvCache, len: usize, capacity: usize) -> Result<GpuKvCache> {
        let len = len.min(src.len).min(capacity);
        let mut copy = self.new_cache(capacity)?;
        if len > 0 {
            self.ctx.submit("copy key/value cache", |rec| {
                for (from, to) in src.layers.iter().zip(&copy.layers) {
                    from.copy_rows_to(rec, to, len)?;
                }
                Ok(())
            })?;
        }
        copy.len = len;
        Ok(copy)
    }

    /// Grows `cache` to hold at least `capacity` positions, keeping what it
    /// holds.
    pub fn grow_cache(&self, cache: &mut GpuKvCache, capacity: usize) -> Result<()> {
        if capacity > cache.capacity {
            *cache = self.fork_cache(cache, cache.len, capacity)?;
        }
        Ok(())
    }

    /// Runs `tokens`, consecutive tokens of one sequence starting at
    /// position `start_pos` (at most `cache.len()`: positions from there on
    /// are overwritten), storing their keys and values in `cache`.
    ///
    /// Returns the logits (`vocab_size` values) after the last token when
    /// `want_logits`, else an empty vector (e.g. for all but the last part
    /// of a long prompt). See [`GpuModel::forward_batch`].
    pub fn forward(
        &self,
        cache: &mut GpuKvCache,
        tokens: &[u32],
        start_pos: usize,
        want_logits: bool,
    ) -> Result<Vec<f32>> {
        let batch: Vec<BatchToken> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| BatchToken {
                token,
                pos: start_pos + i,
                seq: 0,
            })
            .collect();
        let rows: Vec<usize> = if want_logits && !tokens.is_empty() {
            vec![tokens.len() - 1]
        } else {
            Vec::new()
        };
        self.forward_batch(std::slice::from_mut(cache), &batch, &rows)
    }

    /// Runs `batch`, tokens of one or more sequences (token `t` belongs to
    /// `caches[t.seq]`), as core's `Model::forward` does: the tokens of a
    /// sequence are consecutive positions, its first one at most the
    /// positions its cache holds (later ones are overwritten). Returns the
    /// logits of the batch rows in `logit_rows`, `vocab_size` per row, in
    /// that order.
    ///
    /// The batch goes through in chunks of up to [`MAX_N`] tokens, each one
    /// command encoder and one submission: every matrix product reads the
    /// weights once for all tokens of the chunk, and attention runs per
    /// sequence over its own cache.
    pub fn forward_batch(
        &self,
        caches: &mut [GpuKvCache],
        batch: &[BatchToken],
        logit_rows: &[usize],
    ) -> Result<Vec<f32>> {
        self.check_batch(caches, batch, logit_rows)?;
        let vocab = self.config.vocab_size;
        let mut logits = vec![0.0; logit_rows.len() * vocab];
        for (ci, chunk) in batch.chunks(MAX_N).enumerate() {
            let first = ci * MAX_N;
            let wanted: Vec<(usize, usize)> = logit_rows
                .iter()
                .enumerate()
                .filter(|&(_, &r)| r >= first && r < first + chunk.len())
                .map(|(k, &r)| (k, r - first))
                .collect();
            let rows: Vec<usize> = wanted.iter().map(|&(_, r)| r).collect();
            let out = self.run_chunk(caches, chunk, &rows)?;
            for (j, &(k, _)) in wanted.iter().enumerate() {
                logits[k * vocab..(k + 1) * vocab]
                    .copy_from_slice(&out[j * vocab..(j + 1) * vocab]);
            }
            for t in chunk {
                caches[t.seq].len = t.pos + 1;
            }
        }
        Ok(logits)
    }

    /// Checks a batch against the caches before anything runs, so a bad
    /// one changes nothing.
    fn check_batch(
        &self,
        caches: &[GpuKvCache],
        batch: &[BatchToken],
        logit_rows: &[usize],
    ) -> Result<()> {
        if batch.is_empty() {
            return Err(GpuError::Shape("forward of no tokens".into()));
        }
        if let Some(&r) = logit_rows.iter().find(|&&r| r >= batch.len()) {
            return Err(GpuError::Shape(format!(
                "logits asked for row {r} of a batch of {}",
                batch.len()
            )));
        }
        // The next position each sequence may take.
        let mut next: Vec<Option<usize>> = vec![None; caches.len()];
        for t in batch {
            if t.token as usize >= self.config.vocab_size {
                return Err(GpuError::Shape(format!(
                    "token {} is outside the vocabulary of {}",
                    t.token, self.config.vocab_size
                )));
            }
            let cache = caches.get(t.seq).ok_or_else(|| {
                GpuError::Shape(format!(
                    "token of sequence {} in a batch over {} caches",
                    t.seq,
                    caches.len()
                ))
            })?;
            let ok = match next[t.seq] {
                None => t.pos <= cache.len,
                Some(p) => t.pos == p,
            };
            if !ok {
                return Err(GpuError::Shape(format!(
                    "sequence {}: position {} leaves a gap after the {} cached positions",
                    t.seq,
                    t.pos,
                    next[t.seq].unwrap_or(cache.len)
                )));
            }
            if t.pos >= cache.capacity {
                return Err(GpuError::Shape(format!(
                    "sequence {}: position {} is beyond the cache's {} positions",
                    t.seq, t.pos, cache.capacity
                )));
            }
            next[t.seq] = Some(t.pos + 1);
        }
        Ok(())
    }

    /// The scratch vectors of a chunk of `n` tokens whose attention may
    /// read caches of up to `rows` positions, with room for `logit_rows`
    /// rows of logits: `scratch`'s, grown first where they are too small
    /// (they never shrink, so that consecutive passes bind the same
    /// buffers and reuse their bind groups).
    fn scratch<'a>(
        &self,
        scratch: &'a mut Option<Scratch>,
        n: usize,
        rows: usize,
        logit_rows: usize,
    ) -> &'a Scratch {
        let c = &self.config;
        let fits = |s: &Scratch| s.tokens >= n && s.rows >= rows && s.logit_rows >= logit_rows;
        if !scratch.as_ref().is_some_and(fits) {
            let (old_n, old_rows, old_k) = scratch
                .as_ref()
                .map_or((0, 0, 0), |s| (s.tokens, s.rows, s.logit_rows));
            let n = n.max(old_n);
            let rows = rows.max(old_rows);
            let k = logit_rows.max(old_k).max(1);
            let z = |len| GpuVec::zeros(&self.ctx, len);
            let (d, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
            *scratch = Some(Scratch {
                tokens: n,
                rows,
                logit_rows: k,
                b: Buffers {
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
                    scores: z(n * c.n_heads * rows.max(1)),
                },
                last: z(k * d),
                normed: z(k * d),
                logits: z(k * c.vocab_size),
                readback: readback_buffer(&self.ctx, (k * c.vocab_size * 4) as u64),
            });
        }
        scratch.as_ref().expect("scratch allocated above")
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

    /// One chunk of at most [`MAX_N`] checked tokens in one submission;
    /// the logits of its rows `rows`.
    fn run_chunk(
        &self,
        caches: &[GpuKvCache],
        toks: &[BatchToken],
        rows: &[usize],
    ) -> Result<Vec<f32>> {
        let started = std::time::Instant::now();
        let ctx = &self.ctx;
        let c = &self.config;
        let n = toks.len();
        let d = c.n_embd;
        let ids: Vec<u32> = toks.iter().map(|t| t.token).collect();
        let positions: Vec<u32> = toks.iter().map(|t| t.pos as u32).collect();
        let groups = SeqGroups::new(ctx, c, toks);
        let widest = groups.0.iter().map(|g| caches[g.seq].capacity).max();
        let k_rows = rows.len();
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.scratch(&mut scratch, n, widest.unwrap_or(0), k_rows);
        let b = s.b.for_tokens(n, c);
        let last = s.last.prefix(k_rows * d);
        let normed = s.normed.prefix(k_rows * d);
        let out = s.logits.prefix(k_rows * c.vocab_size);
        let neox = c.rope_style == RopeStyle::Neox;
        let stats = ctx.submit("forward", |rec| {
            embed(ctx, rec, &self.token_embd, &ids, &b.x)?;
            if c.embedding_scale != 1.0 {
                elementwise::scale(ctx, rec, &b.x, c.embedding_scale)?;
            }
            for (il, lw) in self.layers.iter().enumerate() {
                // Attention.
                elementwise::rms_norm(ctx, rec, &b.x, &lw.attn_norm, c.rms_eps, &b.h)?;
                matmul(ctx, rec, &lw.wq, &b.h, n, &b.q0)?;
                matmul(ctx, rec, &lw.wk, &b.h, n, &b.k0)?;
                matmul(ctx, rec, &lw.wv, &b.h, n, &b.v)?;
                let q = match &lw.q_norm {
                    Some(w) => {
                        elementwise::rms_norm(ctx, rec, &b.q0, w, c.rms_eps, &b.q)?;
                        &b.q
                    }
                    None => &b.q0,
                };
                let k = match &lw.k_norm {
                    Some(w) => {
                        elementwise::rms_norm(ctx, rec, &b.k0, w, c.rms_eps, &b.k)?;
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
                elementwise::rope(ctx, rec, q, &positions, c.n_heads, hd, table, neox)?;
                elementwise::rope(ctx, rec, k, &positions, c.n_kv_heads, hd, table, neox)?;
                let window = if sliding { c.sliding_window } else { None };
                let shape = self.shape(window);
                for g in &groups.0 {
                    let kv = &caches[g.seq].layers[il];
                    let pos = &positions[g.start..g.end];
                    let (qd, kvd) = (c.q_dim(), c.kv_dim());
                    match &g.staging {
                        // The sequence's rows, bound in place.
                        None => {
                            let rows = |v: &GpuVec, width| {
                                v.rows(ctx, g.start, g.len(), width).ok_or_else(|| {
                                    GpuError::Shape(format!(
                                        "rows {}..{} of {width} values cannot be bound in place",
                                        g.start, g.end
                                    ))
                                })
                            };
                            let (gq, gk, gv) = (rows(q, qd)?, rows(k, kvd)?, rows(&b.v, kvd)?);
                            let out = rows(&b.attn, qd)?;
                            kv_store(ctx, rec, kv, &gk, &gv, pos)?;
                            attend(ctx, rec, kv, &gq, pos, &shape, &b.scores, &out)?;
                        }
                        Some(s) => {
                            copy_rows(rec, q, g.start, qd, &s.q, 0, g.len());
                            copy_rows(rec, k, g.start, kvd, &s.k, 0, g.len());
                            copy_rows(rec, &b.v, g.start, kvd, &s.v, 0, g.len());
                            kv_store(ctx, rec, kv, &s.k, &s.v, pos)?;
                            attend(ctx, rec, kv, &s.q, pos, &shape, &b.scores, &s.out)?;
                            copy_rows(rec, &s.out, 0, qd, &b.attn, g.start, g.len());
                        }
                    }
                }
                matmul(ctx, rec, &lw.wo, &b.attn, n, &b.o)?;
                self.residual(rec, &b, lw.post_attn_norm.as_ref())?;

                // Feed-forward.
                elementwise::rms_norm(ctx, rec, &b.x, &lw.ffn_norm, c.rms_eps, &b.h)?;
                matmul(ctx, rec, &lw.w_gate, &b.h, n, &b.gate)?;
                matmul(ctx, rec, &lw.w_up, &b.h, n, &b.up)?;
                match c.activation {
                    Activation::Silu => elementwise::silu_mul(ctx, rec, &b.gate, &b.up)?,
                    Activation::Gelu => elementwise::gelu_mul(ctx, rec, &b.gate, &b.up)?,
                }
                matmul(ctx, rec, &lw.w_down, &b.gate, n, &b.o)?;
                self.residual(rec, &b, lw.post_ffn_norm.as_ref())?;
            }
            if k_rows > 0 {
                // Every row in order (decode): no copy, so no second pass.
                let all_rows = rows.iter().copied().eq(0..n);
                let last = if all_rows {
                    &b.x
                } else {
                    for (j, &r) in rows.iter().enumerate() {
                        copy_rows(rec, &b.x, r, d, &last, j, 1);
                    }
                    &last
                };
                elementwise::rms_norm(ctx, rec, last, &self.output_norm, c.rms_eps, &normed)?;
                matmul(ctx, rec, &self.output, &normed, k_rows, &out)?;
                if let Some(cap) = c.final_logit_softcap {
                    elementwise::softcap(ctx, rec, &out, cap)?;
                }
                rec.copy(
                    out.buffer(),
                    out.offset(),
                    &s.readback,
                    0,
                    (out.len() * 4) as u64,
                );
            }
            Ok(())
        })?;
        let recorded = started.elapsed();
        *self
            .last_recording
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = stats;
        let logits = if k_rows > 0 {
            map_f32(ctx, &s.readback, out.len())?
        } else {
            Vec::new()
        };
        log::debug!(
            "forward of {n} tokens: {:.2} ms to record and submit ({} dispatches in {} compute \
             passes, {} new bind groups), {:.2} ms more until the logits are read",
            recorded.as_secs_f64() * 1e3,
            stats.dispatches,
            stats.passes,
            stats.bind_groups_created,
            (started.elapsed() - recorded).as_secs_f64() * 1e3
        );
        Ok(logits)
    }

    /// Records `x += norm(o)` (or `x += o` without a post-norm), through
    /// `h` as the normed copy.
    fn residual(&self, rec: &mut Recorder, b: &Buffers, post_norm: Option<&GpuVec>) -> Result<()> {
        match post_norm {
            Some(w) => {
                elementwise::rms_norm(&self.ctx, rec, &b.o, w, self.config.rms_eps, &b.h)?;
                elementwise::add(&self.ctx, rec, &b.x, &b.h)
            }
            None => elementwise::add(&self.ctx, rec, &b.x, &b.o),
        }
    }
}

/// The forward pass's scratch vectors for up to `tokens` tokens at once,
/// attention over caches of up to `rows` positions, and `logit_rows` rows
/// of logits with the host-mapped buffer they are read back through.
#[derive(Debug)]
struct Scratch {
    tokens: usize,
    rows: usize,
    logit_rows: usize,
    b: Buffers,
    last: GpuVec,
    normed: GpuVec,
    logits: GpuVec,
    readback: wgpu::Buffer,
}

impl Buffers {
    /// The vectors' first `n` tokens (all of the attention scores).
    fn for_tokens(&self, n: usize, c: &ModelConfig) -> Buffers {
        let (d, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
        Buffers {
            x: self.x.prefix(n * d),
            h: self.h.prefix(n * d),
            q0: self.q0.prefix(n * qd),
            q: self.q.prefix(n * qd),
            k0: self.k0.prefix(n * kvd),
            k: self.k.prefix(n * kvd),
            v: self.v.prefix(n * kvd),
            attn: self.attn.prefix(n * qd),
            o: self.o.prefix(n * d),
            gate: self.gate.prefix(n * c.n_ff),
            up: self.up.prefix(n * c.n_ff),
            scores: self.scores.prefix(self.scores.len()),
        }
    }
}

/// Records the copy of `count` rows of `width` values from row `from` of
/// `src` to row `to` of `dst`.
fn copy_rows(
    rec: &mut Recorder,
    src: &GpuVec,
    from: usize,
    width: usize,
    dst: &GpuVec,
    to: usize,
    count: usize,
) {
    let row = (width * 4) as u64;
    rec.copy(
        src.buffer(),
        src.offset() + from as u64 * row,
        dst.buffer(),
        dst.offset() + to as u64 * row,
        count as u64 * row,
    );
}

/// Where one sequence's attention inputs and output are staged when a
/// chunk holds several sequences whose rows the device cannot bind in
/// place (their offsets miss its storage offset alignment).
struct Staging {
    q: GpuVec,
    k: GpuVec,
    v: GpuVec,
    out: GpuVec,
}

/// A run of consecutive tokens of one sequence within a chunk.
struct SeqGroup {
    seq: usize,
    start: usize,
    end: usize,
    staging: Option<Staging>,
}

impl SeqGroup {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// A chunk's tokens as runs of one sequence each.
struct SeqGroups(Vec<SeqGroup>);

impl SeqGroups {
    fn new(ctx: &GpuContext, c: &ModelConfig, toks: &[BatchToken]) -> Self {
        let mut groups: Vec<SeqGroup> = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if g.seq == t.seq => g.end = i + 1,
                _ => groups.push(SeqGroup {
                    seq: t.seq,
                    start: i,
                    end: i + 1,
                    staging: None,
                }),
            }
        }
        let in_place = |start: usize| {
            ctx.can_bind_at((start * c.q_dim() * 4) as u64)
                && ctx.can_bind_at((start * c.kv_dim() * 4) as u64)
        };
        if !groups.iter().all(|g| in_place(g.start)) {
            for g in &mut groups {
                let n = g.len();
                g.staging = Some(Staging {
                    q: GpuVec::zeros(ctx, n * c.q_dim()),
                    k: GpuVec::zeros(ctx, n * c.kv_dim()),
                    v: GpuVec::zeros(ctx, n * c.kv_dim()),
                    out: GpuVec::zeros(ctx, n * c.q_dim()),
                });
            }
        }
        Self(groups)
    }
}
