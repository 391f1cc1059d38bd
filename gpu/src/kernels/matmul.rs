//! Quantized matrix × f32 activations (`y[n][r] = sum_c W[r][c] * x[n][c]`)
//! and embedding row lookup, for every [`WeightType`].
//!
//! Block-quantized matrices (32- and 256-value blocks) go through
//! `shaders/matvec.wgsl`: a workgroup of 64 threads takes 8 rows, 8
//! threads a row; each thread strides over the row's 32-value units,
//! reading four weights at a time from whole words of the block
//! (`deq4` of `shaders/quant_*.wgsl`), and the 8 partial sums of a row
//! are added in shared memory. Decode (one activation column) has a kernel
//! compiled for exactly one column. F32 and F16 matrices, whose rows may
//! end inside a word, run one workgroup per row, dequantizing element by
//! element, with partial sums reduced by `subgroupAdd` where the device
//! has subgroups ([`GpuContext::uses_subgroups`]), else by a tree in
//! shared memory.
//!
//! Before the product the activations are rounded, by default, to the
//! values edgeloop-core quantizes them to for its integer dot products
//! ([`round_activations`], `shaders/act_round.wgsl`): Q8_0 for Q4_0, Q5_0
//! and Q8_0 weights, Q8_1 for Q4_1 (whose block minimums then multiply the
//! CPU's per-block sums), Q8_K for Q4_K and Q6_K; F32 and F16 weights take
//! the f32 activations as on the CPU. The GPU product then differs from the
//! CPU's only by f32 rounding in the sums.

use std::sync::Arc;

use crate::buffer::{plan_chunks, uniform, upload_bytes, Chunk, GpuVec};
use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::{grid, WG};
use crate::quant::{ActFormat, WeightType};
use crate::record::{Bind, Kernel, Recorder};

/// The most activation columns one [`matmul`] call takes.
pub const MAX_N: usize = 16;

/// A weight matrix of `rows` × `cols` in a GGML block format, uploaded once,
/// in chunks of whole rows that each fit in one storage binding.
#[derive(Debug)]
pub struct GpuMatrix {
    dtype: WeightType,
    rows: usize,
    cols: usize,
    pub(crate) chunks: Vec<Chunk>,
}

impl GpuMatrix {
    /// Uploads `data`, the `rows` × `cols` matrix in `dtype`'s GGML layout
    /// (rows one after another), split at the context's binding size.
    pub fn upload(
        ctx: &GpuContext,
        dtype: WeightType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self> {
        let row_bytes = dtype.row_bytes(cols)?;
        if rows == 0 || data.len() != rows * row_bytes {
            return Err(GpuError::Shape(format!(
                "{rows} rows of {cols} {} values take {} bytes, not {}",
                dtype.name(),
                rows * row_bytes,
                data.len()
            )));
        }
        let chunks = plan_chunks(rows, row_bytes, ctx.max_binding_size())?
            .into_iter()
            .map(|(row_start, n)| Chunk {
                buf: upload_bytes(
                    ctx,
                    dtype.name(),
                    &data[row_start * row_bytes..(row_start + n) * row_bytes],
                ),
                row_start,
                rows: n,
            })
            .collect();
        Ok(Self {
            dtype,
            rows,
            cols,
            chunks,
        })
    }

    /// The weight type.
    pub fn dtype(&self) -> WeightType {
        self.dtype
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How many buffers the matrix was split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

/// Records `y[j][r] = sum_c w[r][c] * x[j][c]` for `n` activation columns:
/// `x` holds `n` × `cols` values, `y` receives `n` × `rows`. One dispatch per
/// chunk of the matrix.
///
/// Where [`GpuContext::rounds_activations`] (the default) and the weight
/// type has an [`ActFormat`], one dispatch first rounds `x` into the
/// context's scratch buffer as [`round_activations`] does, and the product
/// reads that: the result is edgeloop-core's `matmul` up to f32 summation
/// order.
pub fn matmul(
    ctx: &GpuContext,
    rec: &mut Recorder,
    w: &GpuMatrix,
    x: &GpuVec,
    n: usize,
    y: &GpuVec,
) -> Result<()> {
    if n == 0 || n > MAX_N {
        return Err(GpuError::Shape(format!(
            "{n} activation columns (1..={MAX_N})"
        )));
    }
    if x.len() != n * w.cols || y.len() != n * w.rows {
        return Err(GpuError::Shape(format!(
            "matmul of a {}x{} matrix with {n} columns: x has {} values, y {}",
            w.rows,
            w.cols,
            x.len(),
            y.len()
        )));
    }
    let format = w.dtype.act_format().filter(|_| ctx.rounds_activations());
    let scratch;
    let xbuf: &dyn Bind = match format {
        Some(f) => {
            scratch = ctx.act_scratch((f.rounded_len(x.len()) * 4) as u64);
            record_round(ctx, rec, f, x, x.len(), &scratch)?;
            &scratch
        }
        None => x,
    };
    // Q4_1 with Q8_1 activations applies the block minimums to the
    // activations' per-block sums, as the CPU does.
    let q8_1 = format == Some(ActFormat::Q8_1);
    if w.dtype.block_len() >= VEC_UNIT {
        return record_blocks(ctx, rec, w, xbuf, n, y, q8_1);
    }
    let (variant, reduction) = if ctx.uses_subgroups() {
        ("subgroup", include_str!("../shaders/matmul_subgroup.wgsl"))
    } else {
        ("shared", include_str!("../shaders/matmul.wgsl"))
    };
    let key = format!("matmul_{}_{variant}", w.dtype.name());
    let pipeline = ctx.pipeline(
        &key,
        || {
            w.dtype.shader(&format!(
                "{}\n{}\n{}\n{reduction}",
                include_str!("../shaders/matmul_params.wgsl"),
                include_str!("../shaders/matmul_common.wgsl"),
                include_str!("../shaders/matmul_acc.wgsl")
            ))
        },
        "main",
    )?;
    dispatch_chunks(ctx, rec, w, &pipeline, xbuf, n, y, 1);
    Ok(())
}

/// Values of the units the block kernel's threads stride over
/// (`shaders/matvec_acc.wgsl`): block types of 32 and 256 values.
const VEC_UNIT: usize = 32;

/// Rows of a 64-thread workgroup of the block kernel
/// (`shaders/matvec.wgsl`, which takes it as `ROWS`).
const VEC_ROWS: u32 = 8;

/// Records the product of a block-quantized matrix (32- and 256-value
/// blocks): several rows per workgroup, four weights read at a time
/// (`shaders/matvec.wgsl`). One activation column (decode) has a kernel of
/// its own, compiled for exactly one column.
#[allow(clippy::too_many_arguments)]
fn record_blocks(
    ctx: &GpuContext,
    rec: &mut Recorder,
    w: &GpuMatrix,
    x: &dyn Bind,
    n: usize,
    y: &GpuVec,
    q8_1: bool,
) -> Result<()> {
    let (acc_name, acc) = if q8_1 {
        ("_q8_1", include_str!("../shaders/matvec_acc_q8_1.wgsl"))
    } else {
        ("", include_str!("../shaders/matvec_acc.wgsl"))
    };
    let max_cols = if n == 1 { 1 } else { MAX_N };
    let key = format!("matvec{max_cols}_{}{acc_name}", w.dtype.name());
    let pipeline = ctx.pipeline(
        &key,
        || {
            w.dtype.shader(&format!(
                "const MAX_COLS: u32 = {max_cols}u;\nconst ROWS: u32 = {VEC_ROWS}u;\n{}\n{}\n{acc}",
                include_str!("../shaders/matmul_params.wgsl"),
                include_str!("../shaders/matvec.wgsl")
            ))
        },
        "main",
    )?;
    dispatch_chunks(ctx, rec, w, &pipeline, x, n, y, VEC_ROWS);
    Ok(())
}

/// Records one dispatch of a product kernel per chunk of `w`, over the
/// chunk's rows in workgroups of `rows_per_group` rows, with the
/// parameters of `shaders/matmul_params.wgsl`.
#[allow(clippy::too_many_arguments)]
fn dispatch_chunks(
    ctx: &GpuContext,
    rec: &mut Recorder,
    w: &GpuMatrix,
    pipeline: &Arc<Kernel>,
    x: &dyn Bind,
    n: usize,
    y: &GpuVec,
    rows_per_group: u32,
) {
    for c in &w.chunks {
        let (gx, gy) = grid((c.rows as u32).div_ceil(rows_per_group));
        let params = uniform(
            ctx,
            &[
                c.rows as u32,
                w.cols as u32,
                n as u32,
                w.rows as u32,
                c.row_start as u32,
                gx,
            ],
        );
        rec.dispatch(pipeline, &[&c.buf, x, y, &params], (gx, gy, 1));
    }
}

/// Records the rounding of the activations `x` (a whole number of
/// `format`'s blocks) to the values edgeloop-core's quantizer of `format`
/// represents, `d * q` with the CPU's `d` (rounded to f16 for Q8_0 and
/// Q8_1) and `q`, into the first `x.len()` values of `out`; for Q8_1, `out`
/// then holds each block's `s`. `out` has
/// [`ActFormat::rounded_len`]`(x.len())` values. Blocks whose largest
/// magnitude is below 2^-118 become zeros (the CPU's Q8_K values of such a
/// block are smaller than that).
pub fn round_activations(
    ctx: &GpuContext,
    rec: &mut Recorder,
    format: ActFormat,
    x: &GpuVec,
    out: &GpuVec,
) -> Result<()> {
    if x.is_empty()
        || !x.len().is_multiple_of(format.block_len())
        || out.len() != format.rounded_len(x.len())
    {
        return Err(GpuError::Shape(format!(
            "rounding {} activations to {format:?} ({}-value blocks) into {} values",
            x.len(),
            format.block_len(),
            out.len()
        )));
    }
    record_round(ctx, rec, format, x, x.len(), out)
}

/// [`round_activations`] on buffers, shapes checked by the caller.
fn record_round(
    ctx: &GpuContext,
    rec: &mut Recorder,
    format: ActFormat,
    x: &dyn Bind,
    len: usize,
    out: &dyn Bind,
) -> Result<()> {
    let pipeline = ctx.pipeline(
        &format!("act_round_{}", format.entry()),
        || super::with_round_f16(include_str!("../shaders/act_round.wgsl")),
        format.entry(),
    )?;
    let blocks = (len / format.block_len()) as u32;
    let (gx, gy) = grid(blocks.div_ceil(WG));
    let params = uniform(ctx, &[len as u32, gx]);
    rec.dispatch(&pipeline, &[x, out, &params], (gx, gy, 1));
    Ok(())
}

/// Records the lookup of rows `ids` of `w` into `out` (`ids.len()` × `cols`
/// f32 values), dequantized. Ids out of range leave their row untouched.
pub fn embed(
    ctx: &GpuContext,
    rec: &mut Recorder,
    w: &GpuMatrix,
    ids: &[u32],
    out: &GpuVec,
) -> Result<()> {
    if ids.is_empty() || out.len() != ids.len() * w.cols {
        return Err(GpuError::Shape(format!(
            "embedding {} tokens of {} values into {}",
            ids.len(),
            w.cols,
            out.len()
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= w.rows) {
        return Err(GpuError::Shape(format!(
            "token {bad} is out of range of {} rows",
            w.rows
        )));
    }
    let key = format!("embed_{}", w.dtype.name());
    let pipeline = ctx.pipeline(
        &key,
        || w.dtype.shader(include_str!("../shaders/embed.wgsl")),
        "main",
    )?;
    let ids_buf = ctx.stage("token ids", bytemuck::cast_slice(ids));
    for c in &w.chunks {
        let params = uniform(
            ctx,
            &[
                c.rows as u32,
                w.cols as u32,
                ids.len() as u32,
                c.row_start as u32,
            ],
        );
        rec.dispatch(
            &pipeline,
            &[&c.buf, &ids_buf, out, &params],
            ((w.cols as u32).div_ceil(WG), ids.len() as u32, 1),
        );
    }
    Ok(())
}
