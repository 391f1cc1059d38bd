//! The transformer forward pass shared by every architecture, over a batch
//! of tokens that may belong to several sequences (each with its own
//! [`KvCache`]). Architecture differences are flags of [`ModelConfig`].

use std::collections::HashMap;

use crate::kernels::{
    matmul, matmul_many, MatmulScratch, PackedRows, QMatrix, ThreadPool, MAX_MANY,
};
use crate::quant;

use super::config::{Activation, ModelConfig, RopeStyle};
use super::kv_cache::KvCache;
use super::ops;
use super::weights::{MatrixRef, Weights};
use super::ModelError;

/// Longest head the attention kernel handles (its accumulator lives on the stack).
pub const MAX_HEAD_DIM: usize = 512;

/// One token of a batch: which token, at which position of which sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchToken {
    pub token: u32,
    pub pos: usize,
    pub seq: usize,
}

/// Buffers reused across forward passes so that decoding allocates nothing.
#[derive(Default)]
pub struct ForwardScratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    last: Vec<f32>,
    scores: Vec<f32>,
    /// One token's rotation, `(cos, sin)` per frequency.
    rope: Vec<(f32, f32)>,
    mm: MatmulScratch,
}

fn fit<T: Default + Clone>(buf: &mut Vec<T>, n: usize) -> &mut [T] {
    if buf.len() < n {
        buf.resize(n, T::default());
    }
    &mut buf[..n]
}

/// A raw pointer that threads of the pool may write through at disjoint offsets.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every user writes only to indices no other thread touches.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Through a method, so closures capture the `Sync` wrapper and not the raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

pub(crate) struct Forward<'a> {
    pub config: &'a ModelConfig,
    pub weights: &'a Weights,
    pub bytes: &'a [u8],
    /// Repacked copies of some matrices, by the offset of their bytes.
    pub packed: &'a HashMap<usize, PackedRows>,
    pub rope_global: &'a [f32],
    pub rope_local: &'a [f32],
    pub pool: &'a ThreadPool,
}

impl Forward<'_> {
    fn matrix<'m>(&'m self, m: &MatrixRef) -> QMatrix<'m> {
        QMatrix {
            dtype: m.dtype,
            data: &self.bytes[m.bytes.clone()],
            rows: m.rows,
            cols: m.cols,
            packed: None,
        }
        .with_packed(self.packed.get(&m.bytes.start))
    }

    /// Runs `batch` through the model, appending keys and values to each
    /// token's sequence cache, and writes the logits of the tokens listed in
    /// `logit_rows` (indices into `batch`) to `logits`, one row of
    /// `vocab_size` per entry.
    pub fn run(
        &self,
        batch: &[BatchToken],
        caches: &mut [KvCache],
        logit_rows: &[usize],
        logits: &mut Vec<f32>,
        s: &mut ForwardScratch,
    ) -> Result<(), ModelError> {
        let c = self.config;
        let n = batch.len();
        let d = c.n_embd;
        for t in batch {
            if t.token as usize >= c.vocab_size {
                return Err(ModelError::TokenOutOfRange {
                    token: t.token,
                    vocab_size: c.vocab_size,
                });
            }
            let cache = caches.get(t.seq).ok_or(ModelError::NoSuchSequence(t.seq))?;
            if t.pos >= cache.capacity() {
                return Err(ModelError::ContextFull {
                    pos: t.pos,
                    capacity: cache.capacity(),
                });
            }
            if t.pos > cache.len() && !batch.iter().any(|o| o.seq == t.seq && o.pos + 1 == t.pos) {
                return Err(ModelError::PositionGap {
                    seq: t.seq,
                    pos: t.pos,
                    cached: cache.len(),
                });
            }
        }

        // Embeddings.
        let x = fit(&mut s.x, n * d);
        let emb = &self.weights.token_embd;
        let row_bytes = emb.bytes.len() / emb.rows;
        for (i, t) in batch.iter().enumerate() {
            let start = emb.bytes.start + t.token as usize * row_bytes;
            quant::dequantize(
                emb.dtype,
                &self.bytes[start..start + row_bytes],
                &mut x[i * d..(i + 1) * d],
            )
            .map_err(|e| ModelError::Config(e.to_string()))?;
            if c.embedding_scale != 1.0 {
                x[i * d..(i + 1) * d]
                    .iter_mut()
                    .for_each(|v| *v *= c.embedding_scale);
            }
        }

        for (il, lw) in self.weights.layers.iter().enumerate() {
            // Attention.
            let h = fit(&mut s.h, n * d);
            for i in 0..n {
                ops::rms_norm_into(
                    &mut h[i * d..(i + 1) * d],
                    &s.x[i * d..(i + 1) * d],
                    &lw.attn_norm,
                    c.rms_eps,
                );
            }
            let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
            let q = fit(&mut s.q, n * qd);
            let k = fit(&mut s.k, n * kvd);
            let v = fit(&mut s.v, n * kvd);
            self.project(
                &[&lw.wq, &lw.wk, &lw.wv],
                h,
                n,
                &mut [&mut *q, &mut *k, &mut *v],
                &mut s.mm,
            );

            let sliding = c.sliding_layers[il];
            let inv_freq = if sliding {
                self.rope_local
            } else {
                self.rope_global
            };
            let neox = c.rope_style == RopeStyle::Neox;
            let cs = fit(&mut s.rope, inv_freq.len());
            for (i, t) in batch.iter().enumerate() {
                ops::rope_cos_sin(t.pos, inv_freq, cs);
                for head in q[i * qd..(i + 1) * qd].chunks_exact_mut(hd) {
                    if let Some(w) = &lw.q_norm {
                        ops::rms_norm(head, w, c.rms_eps);
                    }
                    ops::rope_with(&mut head[..c.rope_dims], cs, neox);
                }
                for head in k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd) {
                    if let Some(w) = &lw.k_norm {
                        ops::rms_norm(head, w, c.rms_eps);
                    }
                    ops::rope_with(&mut head[..c.rope_dims], cs, neox);
                }
                let (kc, vc) = caches[t.seq].layer_mut(il);
                let row = t.pos * kvd..(t.pos + 1) * kvd;
                for (dst, &src) in kc[row.clone()].iter_mut().zip(&k[i * kvd..(i + 1) * kvd]) {
                    *dst = ops::to_f16(src);
                }
                for (dst, &src) in vc[row].iter_mut().zip(&v[i * kvd..(i + 1) * kvd]) {
                    *dst = ops::to_f16(src);
                }
            }

            let attn = fit(&mut s.attn, n * qd);
            let window = if sliding { c.sliding_window } else { None };
            self.attention(batch, caches, il, q, attn, window, &mut s.scores);

            let o = fit(&mut s.o, n * d);
            matmul(self.pool, &self.matrix(&lw.wo), attn, n, o, &mut s.mm);
            for i in 0..n {
                let row = &mut o[i * d..(i + 1) * d];
                if let Some(w) = &lw.post_attn_norm {
                    ops::rms_norm(row, w, c.rms_eps);
                }
                ops::add_assign(&mut s.x[i * d..(i + 1) * d], row);
            }

            // Feed-forward.
            let h = fit(&mut s.h, n * d);
            for i in 0..n {
                ops::rms_norm_into(
                    &mut h[i * d..(i + 1) * d],
                    &s.x[i * d..(i + 1) * d],
                    &lw.ffn_norm,
                    c.rms_eps,
                );
            }
            let ff = c.n_ff;
            let gate = fit(&mut s.gate, n * ff);
            let up = fit(&mut s.up, n * ff);
            self.project(
                &[&lw.w_gate, &lw.w_up],
                h,
                n,
                &mut [&mut *gate, &mut *up],
                &mut s.mm,
            );
            let act: fn(&mut [f32], &[f32]) = match c.activation {
                Activation::Silu => ops::silu_mul,
                Activation::Gelu => ops::gelu_mul,
            };
            if n == 1 {
                act(gate, up);
            } else {
                // Token by token, spread over the pool.
                let up = &*up;
                self.pool
                    .for_each_chunk_mut(gate, ff, &|i, g| act(g, &up[i * ff..(i + 1) * ff]));
            }
            let o = fit(&mut s.o, n * d);
            matmul(self.pool, &self.matrix(&lw.w_down), gate, n, o, &mut s.mm);
            for i in 0..n {
                let row = &mut o[i * d..(i + 1) * d];
                if let Some(w) = &lw.post_ffn_norm {
                    ops::rms_norm(row, w, c.rms_eps);
                }
                ops::add_assign(&mut s.x[i * d..(i + 1) * d], row);
            }
        }

        for t in batch {
            let cache = &mut caches[t.seq];
            if t.pos + 1 > cache.len() {
                cache.set_len(t.pos + 1);
            }
        }

        // Final norm and output projection, only for the rows asked for.
        let m = logit_rows.len();
        if m == 0 {
            return Ok(());
        }
        let last = fit(&mut s.last, m * d);
        for (j, &i) in logit_rows.iter().enumerate() {
            ops::rms_norm_into(
                &mut last[j * d..(j + 1) * d],
                &s.x[i * d..(i + 1) * d],
                &self.weights.output_norm,
                c.rms_eps,
            );
        }
        logits.resize(m * c.vocab_size, 0.0);
        matmul(
            self.pool,
            &self.matrix(&self.weights.output),
            last,
            m,
            logits,
            &mut s.mm,
        );
        if let Some(cap) = c.final_logit_softcap {
            logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
        }
        Ok(())
    }

    /// `ys[k] = ms[k] · x` for projections of the same input: one
    /// [`matmul_many`] call (one activation quantization, one meeting of the
    /// threads) when the matrices share a type and width, as they usually
    /// do, else one [`matmul`] each.
    fn project(
        &self,
        ms: &[&MatrixRef],
        x: &[f32],
        n: usize,
        ys: &mut [&mut [f32]],
        mm: &mut MatmulScratch,
    ) {
        let m0 = self.matrix(ms[0]);
        if ms.iter().all(|m| m.dtype == m0.dtype && m.cols == m0.cols) {
            let mut qs = [m0; MAX_MANY];
            for (q, m) in qs.iter_mut().zip(ms) {
                *q = self.matrix(m);
            }
            let refs: [&QMatrix; MAX_MANY] = std::array::from_fn(|i| &qs[i]);
            matmul_many(self.pool, &refs[..ms.len()], x, n, ys, mm);
        } else {
            for (m, y) in ms.iter().zip(ys.iter_mut()) {
                matmul(self.pool, &self.matrix(m), x, n, y, mm);
            }
        }
    }

    /// Causal (optionally sliding-window) attention of every token of the
    /// batch over its sequence's f16 cache. The query and the attention
    /// weights are rounded to f16 before their products, as llama.cpp does
    /// with an f16 cache, so both runtimes make the same near-tie decisions.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        batch: &[BatchToken],
        caches: &[KvCache],
        il: usize,
        q: &[f32],
        out: &mut [f32],
        window: Option<usize>,
        scores: &mut Vec<f32>,
    ) {
        let c = self.config;
        let (hd, qd, kvd) = (c.head_dim, c.q_dim(), c.kv_dim());
        let group = c.n_heads / c.n_kv_heads;
        // One job per token and key/value head; its query heads go through
        // the kernel up to `HEADS` at a time, sharing each key and value.
        const HEADS: usize = 4;
        let jobs = batch.len() * c.n_kv_heads;
        let span = HEADS * batch.iter().map(|t| t.pos + 1).max().unwrap_or(0);
        let nt = self.pool.n_threads();
        if scores.len() < nt * span {
            scores.resize(nt * span, 0.0);
        }
        let out_ptr = SharedMut(out.as_mut_ptr());
        let scores_ptr = SharedMut(scores.as_mut_ptr());
        let scale = c.attention_scale;
        self.pool.run(&|tid, nt| {
            // SAFETY: each thread index owns its own `span`-long slice of
            // `scores`, and every index runs exactly once per call.
            let sc =
                unsafe { std::slice::from_raw_parts_mut(scores_ptr.get().add(tid * span), span) };
            let mut qr = [0f32; HEADS * MAX_HEAD_DIM];
            for job in (tid..jobs).step_by(nt) {
                let (i, kv_head) = (job / c.n_kv_heads, job % c.n_kv_heads);
                let t = batch[i];
                let (keys, values) = caches[t.seq].layer(il);
                let first = match window {
                    Some(w) => (t.pos + 1).saturating_sub(w),
                    None => 0,
                };
                let mut head = kv_head * group;
                while head < (kv_head + 1) * group {
                    let g = HEADS.min((kv_head + 1) * group - head);
                    let qr = &mut qr[..g * hd];
                    let src = &q[i * qd + head * hd..i * qd + (head + g) * hd];
                    for (r, &x) in qr.iter_mut().zip(src) {
                        *r = ops::round_f16(x);
                    }
                    // SAFETY: heads `head..head + g` of token `i` belong to
                    // this job only, so this slice of `out` is written by
                    // exactly one thread.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.get().add(i * qd + head * hd),
                            g * hd,
                        )
                    };
                    ops::attend_f16(
                        qr,
                        hd,
                        keys,
                        values,
                        kvd,
                        kv_head * hd,
                        first..t.pos + 1,
                        scale,
                        sc,
                        dst,
                    );
                    head += g;
                }
            }
        });
    }
}
