//! Attention over an f16 key/value cache kept on the device: storing keys
//! and values, and causal (optionally sliding-window) grouped-query
//! attention with the semantics of `edgeloop_core::model::ops::attend_f16`
//! as the CPU forward pass calls it (query rounded to f16, softmax weights
//! rounded to f16).

use crate::buffer::{uniform, GpuVec};
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::{grid, WG};
use crate::record::Recorder;

/// The largest head dimension the attention kernel takes.
pub const MAX_HEAD_DIM: usize = 256;

/// One layer's keys and values: `capacity` rows of `kv_dim` f16 values each,
/// row `p` holding position `p` (the layout of core's `KvCache`).
#[derive(Debug)]
pub struct GpuKvLayer {
    keys: wgpu::Buffer,
    values: wgpu::Buffer,
    kv_dim: usize,
    capacity: usize,
}

impl GpuKvLayer {
    /// A zeroed layer. `kv_dim` must be even; each of the two buffers must
    /// fit in one storage binding.
    pub fn new(ctx: &GpuContext, kv_dim: usize, capacity: usize) -> Result<Self> {
        if kv_dim == 0 || !kv_dim.is_multiple_of(2) || capacity == 0 {
            return Err(GpuError::Shape(format!(
                "a key/value cache of {capacity} rows of {kv_dim} (even, non-zero) values"
            )));
        }
        let bytes = (kv_dim * capacity * 2) as u64;
        if bytes > ctx.max_binding_size() {
            return Err(GpuError::TooLarge {
                what: "one layer's keys".into(),
                bytes,
                limit: ctx.max_binding_size(),
            });
        }
        let make = |label| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            keys: make("keys"),
            values: make("values"),
            kv_dim,
            capacity,
        })
    }

    /// Values per row.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Rows (positions) it holds room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fails when a position lies beyond the layer's rows.
    fn check_positions(&self, positions: &[u32]) -> Result<()> {
        match positions.iter().find(|&&p| p as usize >= self.capacity) {
            Some(&p) => Err(GpuError::Shape(format!(
                "position {p} beyond the cache's {} rows",
                self.capacity
            ))),
            None => Ok(()),
        }
    }

    /// Records the copy of this layer's first `rows` rows into `dst` (of the
    /// same row width and at least `rows` rows).
    pub fn copy_rows_to(&self, rec: &mut Recorder, dst: &GpuKvLayer, rows: usize) -> Result<()> {
        if dst.kv_dim != self.kv_dim || rows > self.capacity || rows > dst.capacity {
            return Err(GpuError::Shape(format!(
                "copying {rows} rows of a {}x{} cache into a {}x{} one",
                self.capacity, self.kv_dim, dst.capacity, dst.kv_dim
            )));
        }
        let bytes = (rows * self.kv_dim * 2) as u64;
        if bytes > 0 {
            rec.copy(&self.keys, 0, &dst.keys, 0, bytes);
            rec.copy(&self.values, 0, &dst.values, 0, bytes);
        }
        Ok(())
    }

    /// Writes f16 rows (as bits) starting at row `first`, e.g. a cache
    /// filled on the CPU.
    pub fn write_f16(
        &self,
        ctx: &GpuContext,
        first: usize,
        keys: &[u16],
        values: &[u16],
    ) -> Result<()> {
        if keys.len() != values.len()
            || !keys.len().is_multiple_of(self.kv_dim)
            || first * self.kv_dim + keys.len() > self.capacity * self.kv_dim
        {
            return Err(GpuError::Shape(format!(
                "writing {} key and {} value halves at row {first} of a {}x{} cache",
                keys.len(),
                values.len(),
                self.capacity,
                self.kv_dim
            )));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let off = (first * self.kv_dim * 2) as u64;
        ctx.queue
            .write_buffer(&self.keys, off, bytemuck::cast_slice(keys));
        ctx.queue
            .write_buffer(&self.values, off, bytemuck::cast_slice(values));
        Ok(())
    }
}

/// Records the storing of `positions.len()` tokens' keys `k` and values `v`
/// (`[tokens][kv_dim]` f32 each) at rows `positions`, rounded to f16.
pub fn kv_store(
    ctx: &GpuContext,
    rec: &mut Recorder,
    layer: &GpuKvLayer,
    k: &GpuVec,
    v: &GpuVec,
    positions: &[u32],
) -> Result<()> {
    let tokens = positions.len();
    if tokens == 0 || k.len() != tokens * layer.kv_dim || v.len() != k.len() {
        return Err(GpuError::Shape(format!(
            "kv_store of {tokens} tokens: k has {} values, v {}, rows of {}",
            k.len(),
            v.len(),
            layer.kv_dim
        )));
    }
    layer.check_positions(positions)?;
    let pipeline = ctx.pipeline(
        "kv_store",
        || include_str!("../shaders/kv_store.wgsl").into(),
        "main",
    )?;
    let pos = ctx.stage("positions", bytemuck::cast_slice(positions));
    let (gx, gy) = grid(((tokens * layer.kv_dim / 2) as u32).div_ceil(WG));
    let params = uniform(ctx, &[tokens as u32, layer.kv_dim as u32, gx]);
    rec.dispatch(
        &pipeline,
        &[k, v, &pos, &layer.keys, &layer.values, &params],
        (gx, gy, 1),
    );
    Ok(())
}

/// The shape of an attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`; query head `h` reads key/value
    /// head `h / (n_heads / n_kv_heads)`).
    pub n_kv_heads: usize,
    /// Values per head (at most [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
    /// Factor of the scores (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a token at position `p` sees rows
    /// `p + 1 - window ..= p`; `None`: all rows `0..=p`.
    pub window: Option<usize>,
}

/// The length of the scratch vector [`attend`] needs for `tokens` tokens:
/// one score per token, query head and cache row.
pub fn scratch_len(shape: &AttentionShape, tokens: usize, layer: &GpuKvLayer) -> usize {
    tokens * shape.n_heads * layer.capacity
}

/// Records causal attention of `positions.len()` tokens of one sequence
/// (queries `q`, `[tokens][n_heads * head_dim]`) over rows `..= positions[t]`
/// of `layer`, into `out` (same layout as `q`). `scratch` holds
/// [`scratch_len`] values.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    ctx: &GpuContext,
    rec: &mut Recorder,
    layer: &GpuKvLayer,
    q: &GpuVec,
    positions: &[u32],
    shape: &AttentionShape,
    scratch: &GpuVec,
    out: &GpuVec,
) -> Result<()> {
    let tokens = positions.len();
    let s = shape;
    let qd = s.n_heads * s.head_dim;
    let ok = tokens > 0
        && s.n_kv_heads > 0
        && s.n_heads.is_multiple_of(s.n_kv_heads)
        && s.head_dim > 0
        && s.head_dim <= MAX_HEAD_DIM
        && s.n_kv_heads * s.head_dim == layer.kv_dim
        && q.len() == tokens * qd
        && out.len() == q.len()
        && scratch.len() >= scratch_len(s, tokens, layer)
        && s.window != Some(0);
    if !ok {
        return Err(GpuError::Shape(format!(
            "attention of {tokens} tokens, {shape:?}, cache rows of {}, q {} values, \
             out {}, scratch {}",
            layer.kv_dim,
            q.len(),
            out.len(),
            scratch.len()
        )));
    }
    layer.check_positions(positions)?;
    let pipeline = ctx.pipeline(
        "attention",
        || include_str!("../shaders/attention.wgsl").into(),
        "main",
    )?;
    let pos = ctx.stage("positions", bytemuck::cast_slice(positions));
    let params = uniform(
        ctx,
        &[
            tokens as u32,
            s.n_heads as u32,
            s.n_kv_heads as u32,
            s.head_dim as u32,
            layer.kv_dim as u32,
            layer.capacity as u32,
            s.window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
            s.scale.to_bits(),
        ],
    );
    rec.dispatch(
        &pipeline,
        &[q, &layer.keys, &layer.values, &pos, scratch, out, &params],
        (s.n_heads as u32, tokens as u32, 1),
    );
    Ok(())
}
