//! The per-row and element-wise f32 kernels of the forward pass: RMSNorm,
//! rotary embedding, softmax, SiLU/GELU gating and addition. Each matches
//! the function of the same name in `edgeloop_core::model::ops`.

use crate::buffer::{uniform, upload_bytes, GpuVec};
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::{grid, with_round_f16, WG};
use crate::record::Recorder;

fn shape_err(what: &str) -> GpuError {
    GpuError::Shape(what.to_string())
}

/// Records `out[r] = rms_norm(x[r]) * w` for each of the `x.len() / w.len()`
/// rows of `x` (`out` may not be `x`).
pub fn rms_norm(
    ctx: &GpuContext,
    rec: &mut Recorder,
    x: &GpuVec,
    w: &GpuVec,
    eps: f32,
    out: &GpuVec,
) -> Result<()> {
    let cols = w.len();
    if cols == 0 || !x.len().is_multiple_of(cols) || out.len() != x.len() || x.is_empty() {
        return Err(shape_err(
            "rms_norm: x and out must be whole rows of w's length",
        ));
    }
    let rows = (x.len() / cols) as u32;
    let pipeline = ctx.pipeline(
        "rms_norm",
        || include_str!("../shaders/rms_norm.wgsl").into(),
        "main",
    )?;
    let (gx, gy) = grid(rows);
    let params = uniform(ctx, &[rows, cols as u32, eps.to_bits(), gx]);
    rec.dispatch(&pipeline, &[x, w, out, &params], (gx, gy, 1));
    Ok(())
}

/// Records the in-place softmax of each row of `x` (`cols` values a row).
pub fn softmax(ctx: &GpuContext, rec: &mut Recorder, x: &GpuVec, cols: usize) -> Result<()> {
    if cols == 0 || x.is_empty() || !x.len().is_multiple_of(cols) {
        return Err(shape_err("softmax: x must be whole rows"));
    }
    let rows = (x.len() / cols) as u32;
    let pipeline = ctx.pipeline(
        "softmax",
        || include_str!("../shaders/softmax.wgsl").into(),
        "main",
    )?;
    let (gx, gy) = grid(rows);
    let params = uniform(ctx, &[rows, cols as u32, gx]);
    rec.dispatch(&pipeline, &[x, &params], (gx, gy, 1));
    Ok(())
}

/// The frequencies of a rope: `inv_freq` as from
/// `edgeloop_core::model::ops::rope_inv_freq` (`rope_dims / 2` values),
/// uploaded once.
#[derive(Debug)]
pub struct RopeTable {
    buf: wgpu::Buffer,
    half: usize,
}

impl RopeTable {
    /// Uploads `inv_freq`.
    pub fn new(ctx: &GpuContext, inv_freq: &[f32]) -> Self {
        Self {
            buf: upload_bytes(ctx, "rope inv_freq", bytemuck::cast_slice(inv_freq)),
            half: inv_freq.len(),
        }
    }
}

/// Records the rotary embedding, in place, of `x` laid out
/// `[positions.len()][heads][head_dim]`, token `t` at position
/// `positions[t]`: NeoX pairs (`i`, `i + rope_dims / 2`) when `neox`, else
/// adjacent pairs, as `edgeloop_core::model::ops::rope` per head.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    ctx: &GpuContext,
    rec: &mut Recorder,
    x: &GpuVec,
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    table: &RopeTable,
    neox: bool,
) -> Result<()> {
    let tokens = positions.len();
    if tokens == 0
        || heads == 0
        || table.half == 0
        || 2 * table.half > head_dim
        || x.len() != tokens * heads * head_dim
    {
        return Err(shape_err(
            "rope: x must be tokens × heads × head_dim with rope_dims <= head_dim",
        ));
    }
    let pipeline = ctx.pipeline(
        "rope",
        || include_str!("../shaders/rope.wgsl").into(),
        "main",
    )?;
    let pos = ctx.stage("positions", bytemuck::cast_slice(positions));
    let threads = (tokens * heads * table.half) as u32;
    let (gx, gy) = grid(threads.div_ceil(WG));
    let params = uniform(
        ctx,
        &[
            tokens as u32,
            heads as u32,
            head_dim as u32,
            table.half as u32,
            neox as u32,
            gx,
        ],
    );
    rec.dispatch(&pipeline, &[x, &pos, &table.buf, &params], (gx, gy, 1));
    Ok(())
}

fn binary(
    ctx: &GpuContext,
    rec: &mut Recorder,
    entry: &'static str,
    a: &GpuVec,
    b: &GpuVec,
) -> Result<()> {
    if a.len() != b.len() || a.is_empty() {
        return Err(GpuError::Shape(format!(
            "{entry}: operands of {} and {} values",
            a.len(),
            b.len()
        )));
    }
    let pipeline = ctx.pipeline(
        &format!("act_{entry}"),
        || with_round_f16(include_str!("../shaders/act.wgsl")),
        entry,
    )?;
    let (gx, gy) = grid((a.len() as u32).div_ceil(WG));
    let params = uniform(ctx, &[a.len() as u32, gx]);
    rec.dispatch(&pipeline, &[a, b, &params], (gx, gy, 1));
    Ok(())
}

/// Records `gate = SiLU(gate) * up`.
pub fn silu_mul(ctx: &GpuContext, rec: &mut Recorder, gate: &GpuVec, up: &GpuVec) -> Result<()> {
    binary(ctx, rec, "silu_mul", gate, up)
}

/// Records `gate = GELU(gate) * up` (tanh approximation).
pub fn gelu_mul(ctx: &GpuContext, rec: &mut Recorder, gate: &GpuVec, up: &GpuVec) -> Result<()> {
    binary(ctx, rec, "gelu_mul", gate, up)
}

/// Records `a += b`.
pub fn add(ctx: &GpuContext, rec: &mut Recorder, a: &GpuVec, b: &GpuVec) -> Result<()> {
    binary(ctx, rec, "add", a, b)
}

fn unary(
    ctx: &GpuContext,
    rec: &mut Recorder,
    entry: &'static str,
    a: &GpuVec,
    s: f32,
) -> Result<()> {
    if a.is_empty() {
        return Err(GpuError::Shape(format!("{entry}: an empty vector")));
    }
    let pipeline = ctx.pipeline(
        &format!("unary_{entry}"),
        || include_str!("../shaders/unary.wgsl").into(),
        entry,
    )?;
    let (gx, gy) = grid((a.len() as u32).div_ceil(WG));
    let params = uniform(ctx, &[a.len() as u32, gx, s.to_bits()]);
    rec.dispatch(&pipeline, &[a, &params], (gx, gy, 1));
    Ok(())
}

/// Records `a *= s` (the embedding scale of Gemma).
pub fn scale(ctx: &GpuContext, rec: &mut Recorder, a: &GpuVec, s: f32) -> Result<()> {
    unary(ctx, rec, "scale", a, s)
}

/// Records `a = tanh(a / cap) * cap` (the final logit soft-cap).
pub fn softcap(ctx: &GpuContext, rec: &mut Recorder, a: &GpuVec, cap: f32) -> Result<()> {
    if cap <= 0.0 || !cap.is_finite() {
        return Err(GpuError::Shape(format!(
            "softcap: cap {cap} must be positive"
        )));
    }
    unary(ctx, rec, "softcap", a, cap)
}
