//! Quantized weight matrix × f32 activations, split across a [`ThreadPool`].
//!
//! A call quantizes the activations once to the weight type's dot-product
//! format (ggml's `vec_dot_type`), then the threads claim chunks of weight
//! rows and compute those rows against every activation column, so each
//! weight byte is read from memory once per call whatever `n` is.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::quant::{byte_len, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, QuantError, QK_K};

use super::dot::{self, Acts, Block32, Block8x8, Block8x8K, Isa};
use super::packed::PackedRows;
use super::pool::ThreadPool;

/// A row-major matrix of quantized weights borrowed from tensor data: each of
/// the `rows` rows holds `cols` elements in `dtype.bytes_for(cols)` bytes.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub dtype: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// The same rows repacked for the x86 kernels, which then read these
    /// instead of `data` (see [`QMatrix::with_packed`]).
    pub packed: Option<&'a PackedRows>,
}

impl<'a> QMatrix<'a> {
    /// Describes `data` as a `rows × cols` matrix of `dtype`, checking that the
    /// type has kernels, that `cols` is a whole number of blocks and that
    /// `data` has exactly the size of the matrix.
    pub fn new(
        dtype: GgmlType,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        let m = QMatrix {
            dtype,
            data,
            rows,
            cols,
            packed: None,
        };
        m.validate()?;
        Ok(m)
    }

    /// The matrix with its rows also available repacked (`packed` made from
    /// `data` by [`PackedRows::new`]); ignored when `packed` describes a
    /// matrix of another type or shape.
    pub fn with_packed(mut self, packed: Option<&'a PackedRows>) -> Self {
        self.packed =
            packed.filter(|p| p.dtype == self.dtype && p.rows == self.rows && p.cols == self.cols);
        self
    }

    /// Bytes per row (`cols` is a whole number of blocks, see
    /// [`QMatrix::new`]).
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_len() * self.dtype.block_bytes()
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Checks the invariants [`QMatrix::new`] establishes (the fields are
    /// public, so the kernels re-check them before trusting them).
    pub fn validate(&self) -> Result<(), QuantError> {
        let dtype = self.dtype;
        if !dtype.is_supported() {
            return Err(QuantError::Unsupported {
                dtype,
                operation: "matmul",
            });
        }
        let row_bytes = byte_len(dtype, self.cols)?;
        let expected = row_bytes
            .checked_mul(self.rows)
            .ok_or(QuantError::TooLarge {
                dtype,
                elements: usize::MAX,
            })?;
        if self.data.len() != expected {
            return Err(QuantError::SizeMismatch {
                dtype,
                elements: self.rows.saturating_mul(self.cols),
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Reusable buffers for quantized activations; they grow to the largest call
/// seen and never shrink, so a decode loop allocates nothing after warm-up.
#[derive(Default, Debug)]
pub struct MatmulScratch {
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8K>,
    /// Per-block activation sums for the 32-value formats.
    sums: Vec<f32>,
    /// Per-block activation scales for the 32-value formats.
    scales: Vec<f32>,
    /// The 32-value activations in column groups, for kernels that read them.
    groups: Vec<Block8x8>,
    /// The same for the K-quants' activations.
    groups_k: Vec<Block8x8K>,
}

/// Grows `v` to at least `len` elements and returns its first `len`.
fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// `y[i*rows + r] = dot(W[r, :], x[i*cols .. (i+1)*cols])` for `i in 0..n`.
///
/// The activations are quantized once to the weight type's dot-product
/// format, so results match ggml's to within float rounding.
///
/// # Panics
/// If `w` does not satisfy [`QMatrix::validate`], if
/// `x.len() != n * w.cols` or if `y.len() != n * w.rows`. [`try_matmul`]
/// returns these as errors instead.
pub fn matmul(
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    if let Err(e) = try_matmul(pool, w, x, n, y, scratch) {
        panic!("matmul: {e}");
    }
}

/// [`matmul`] returning shape errors instead of panicking.
pub fn try_matmul(
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), QuantError> {
    check_shapes(w, x, n, y)?;
    matmul_with(Isa::best(), pool, w, x, n, y, scratch);
    Ok(())
}

/// `w` is a valid matrix, `x` holds `n` columns of its width and `y` room
/// for `n` columns of its height.
fn check_shapes(w: &QMatrix, x: &[f32], n: usize, y: &[f32]) -> Result<(), QuantError> {
    w.validate()?;
    check_len("x", n.checked_mul(w.cols), x.len())?;
    check_len("y", n.checked_mul(w.rows), y.len())
}

fn check_len(what: &'static str, expected: Option<usize>, actual: usize) -> Result<(), QuantError> {
    match expected {
        Some(e) if e == actual => Ok(()),
        _ => Err(QuantError::LengthMismatch {
            what,
            expected: expected.unwrap_or(usize::MAX),
            actual,
        }),
    }
}

/// A pointer to `y` that the pool's threads may share: each chunk of rows is
/// written by exactly one thread.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the pointer is only dereferenced for disjoint elements (rows
// claimed through an atomic counter) while `matmul` holds `&mut y`.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// A method (rather than field access) so closures capture the whole
    /// `Sync` wrapper, not the raw pointer field.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// The most matrices one [`matmul_many`] call takes (a layer's query, key
/// and value projections).
pub const MAX_MANY: usize = 3;

/// `ys[k] = ws[k] · x` for several matrices of the same type and width
/// (e.g. a layer's query, key and value projections, or its gate and up
/// projections): the activations are quantized once and the rows of all the
/// matrices are shared out in one job of the pool, so the threads meet once
/// instead of once per matrix. Each `ys[k]` gets exactly what [`matmul`]
/// would give it.
///
/// # Panics
/// As [`matmul`] for each pair, if there are more than [`MAX_MANY`]
/// matrices, or if their types or widths differ.
pub fn matmul_many(
    pool: &ThreadPool,
    ws: &[&QMatrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    assert!(
        ws.len() == ys.len() && ws.len() <= MAX_MANY,
        "matmul_many: {} matrices and {} outputs (at most {MAX_MANY})",
        ws.len(),
        ys.len()
    );
    for (w, y) in ws.iter().zip(ys.iter()) {
        if let Err(e) = check_shapes(w, x, n, y) {
            panic!("matmul_many: {e}");
        }
        assert!(
            w.dtype == ws[0].dtype && w.cols == ws[0].cols,
            "matmul_many: a {} matrix of width {} beside a {} matrix of width {}",
            w.dtype,
            w.cols,
            ws[0].dtype,
            ws[0].cols
        );
    }
    matmul_many_with(Isa::best(), pool, ws, x, n, ys, scratch);
}

/// [`matmul`] on a given instruction set, with shapes already checked.
pub(crate) fn matmul_with(
    isa: Isa,
    pool: &ThreadPool,
    w: &QMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    matmul_many_with(isa, pool, &[w], x, n, &mut [y], scratch);
}

/// [`matmul_many`] on a given instruction set, with shapes already checked.
fn matmul_many_with(
    isa: Isa,
    pool: &ThreadPool,
    ws: &[&QMatrix],
    x: &[f32],
    n: usize,
    ys: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) {
    debug_assert!(ws.len() == ys.len() && ws.len() <= MAX_MANY);
    if n == 0 || ws.is_empty() {
        return;
    }
    if ws[0].cols == 0 {
        ys.iter_mut().for_each(|y| y.fill(0.0));
        return;
    }
    let acts = quantize_acts(isa, pool, ws[0].dtype, x, n, scratch);

    let nt = pool.n_threads();
    let total: usize = ws.iter().map(|w| w.rows).sum();
    // Chunks of 16 rows (64 bytes of each y column) or more, so threads do
    // not share cache lines of y; about 8 chunks per thread so a thread that
    // is descheduled on a busy machine does not hold up the others. Chunks
    // never span two matrices: matrix k owns chunks first[k]..first[k + 1].
    let chunk = (total / (nt * 8)).clamp(16, 1024).next_multiple_of(16);
    let mut first = [0usize; MAX_MANY + 1];
    let mut outs = [SharedOut(std::ptr::null_mut()); MAX_MANY];
    for (k, (w, y)) in ws.iter().zip(ys.iter_mut()).enumerate() {
        debug_assert!(w.validate().is_ok());
        debug_assert_eq!(x.len(), n * w.cols);
        debug_assert_eq!(y.len(), n * w.rows);
        first[k + 1] = first[k] + w.rows.div_ceil(chunk);
        outs[k] = SharedOut(y.as_mut_ptr());
    }
    let n_chunks = first[ws.len()];
    let run_chunk = |ci: usize| {
        let k = (0..ws.len()).find(|&k| ci < first[k + 1]).unwrap_or(0);
        let w = ws[k];
        let rows = w.rows;
        let r0 = (ci - first[k]) * chunk;
        let r1 = (r0 + chunk).min(rows);
        let yp = outs[k].ptr();
        dot::dot_rows(isa, w, r0..r1, acts, n, &mut |r, c, v| {
            debug_assert!(r < rows && c < n);
            // SAFETY: `r < rows` and `c < n`, and ys[k].len() == n * rows;
            // each row belongs to exactly one chunk and each chunk to one
            // thread, and `pool.run` returns only after every thread is
            // done, while `ys` is still mutably borrowed.
            unsafe { yp.add(c * rows + r).write(v) }
        });
    };
    if nt == 1 || n_chunks == 1 {
        (0..n_chunks).for_each(run_chunk);
    } else {
        let spans = Spans::new(n_chunks, nt);
        pool.run(&|tid, _| spans.work(tid, &run_chunk));
    }
}

/// The chunks `0..n` of a job, in one contiguous span per thread: each
/// thread streams its own span's weights in address order (which the
/// hardware prefetchers follow; chunks dealt out in turn halve a decode
/// step's read bandwidth on two threads), then helps with the others'
/// spans, so a descheduled thread does not hold up the job.
struct Spans {
    /// Chunks in the job.
    n: usize,
    /// `next[t]`: the next unclaimed chunk of span `t`, which holds chunks
    /// `t * n / len..(t + 1) * n / len`.
    next: [Counter; MAX_SPANS],
    /// Spans in use: the thread count, at most [`MAX_SPANS`] and `n`.
    len: usize,
}

/// The most spans one job is split into; more threads share spans.
const MAX_SPANS: usize = 32;

/// A counter on a cache line of its own, so that threads claiming chunks
/// of their own spans do not contend for one line.
#[repr(align(64))]
struct Counter(AtomicUsize);

impl Spans {
    fn new(n: usize, threads: usize) -> Spans {
        let len = threads.clamp(1, MAX_SPANS).min(n.max(1));
        let next = std::array::from_fn(|t| Counter(AtomicUsize::new(t.min(len) * n / len)));
        Spans { n, next, len }
    }

    /// Runs `f` on chunks claimed for thread `tid`: its own span's first,
    /// then whatever is left of the following spans.
    fn work(&self, tid: usize, f: &dyn Fn(usize)) {
        for s in (0..self.len).map(|k| (tid % self.len + k) % self.len) {
            loop {
                let ci = self.next[s].0.fetch_add(1, Ordering::Relaxed);
                if ci >= (s + 1) * self.n / self.len {
                    break;
                }
                f(ci);
            }
        }
    }
}

/// Converts the `n` activation columns to the dot-product format of
/// `dtype`, in parallel when there are many.
fn quantize_acts<'s>(
    isa: Isa,
    pool: &ThreadPool,
    dtype: GgmlType,
    x: &'s [f32],
    n: usize,
    scratch: &'s mut MatmulScratch,
) -> Acts<'s> {
    match dtype {
        GgmlType::F32 | GgmlType::F16 => Acts::F32(x),
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            let s = scratch;
            let (blocks, sums, scales, groups) = quantize32(
                isa,
                pool,
                x,
                n,
                &mut s.q8_0,
                &mut s.sums,
                &mut s.scales,
                &mut s.groups,
            );
            Acts::Q8_0 {
                blocks,
                sums,
                scales,
                groups,
            }
        }
        GgmlType::Q4_1 => {
            let s = scratch;
            let (blocks, sums, scales, groups) = quantize32(
                isa,
                pool,
                x,
                n,
                &mut s.q8_1,
                &mut s.sums,
                &mut s.scales,
                &mut s.groups,
            );
            Acts::Q8_1 {
                blocks,
                sums,
                scales,
                groups,
            }
        }
        GgmlType::Q4K | GgmlType::Q6K => {
            let blocks = grow(&mut scratch.q8_k, x.len() / QK_K);
            par_map(pool, x, blocks, QK_K, |src, dst| {
                dot::quantize_q8_k(isa, src, dst)
            });
            let groups = groups_k(isa, pool, &mut scratch.groups_k, n, blocks);
            Acts::Q8K { blocks, groups }
        }
        t => unreachable!("validated matrix of unsupported type {t}"),
    }
}

/// The parts of a 32-value activation format for `n` columns of `x`, built
/// in the given buffers: the blocks, their contiguous sums and scales, and
/// their column groups (see [`groups`]).
#[allow(clippy::too_many_arguments)]
fn quantize32<'s, B: Block32>(
    isa: Isa,
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    blocks: &'s mut Vec<B>,
    sums: &'s mut Vec<f32>,
    scales: &'s mut Vec<f32>,
    groups_buf: &'s mut Vec<Block8x8>,
) -> (&'s [B], &'s [f32], &'s [f32], &'s [Block8x8]) {
    let nb = x.len() / 32;
    let blocks = grow(blocks, nb);
    par_map(pool, x, blocks, 32, |src, dst| B::quantize(isa, src, dst));
    let sums = grow(sums, nb);
    par_map(pool, blocks, sums, 1, dot::block_sums);
    let scales = grow(scales, nb);
    par_map(pool, blocks, scales, 1, dot::block_scales);
    let groups = groups(isa, pool, groups_buf, n, blocks, scales, sums);
    (blocks, sums, scales, groups)
}

/// The `n` columns of 32-value activations `blocks` in [`Block8x8`]
/// column groups, if `isa` reads them and `n > 1`; else empty.
fn groups<'s, B: Block32>(
    isa: Isa,
    pool: &ThreadPool,
    buf: &'s mut Vec<Block8x8>,
    n: usize,
    blocks: &[B],
    scales: &[f32],
    sums: &[f32],
) -> &'s [Block8x8] {
    if n < 2 || !isa.wants_groups() {
        return &[];
    }
    let nb = scales.len() / n;
    let dst = grow(buf, n.div_ceil(8) * nb);
    par_groups(pool, dst, &|first, part| {
        dot::interleave_8x8(blocks, scales, sums, n, nb, first, part)
    });
    dst
}

/// The [`Block8x8K`] column groups of `n` columns of Q8_K blocks, as
/// [`groups`].
fn groups_k<'s>(
    isa: Isa,
    pool: &ThreadPool,
    buf: &'s mut Vec<Block8x8K>,
    n: usize,
    blocks: &[BlockQ8K],
) -> &'s [Block8x8K] {
    if n < 2 || !isa.wants_groups() {
        return &[];
    }
    let nb = blocks.len() / n;
    let dst = grow(buf, n.div_ceil(8) * nb);
    par_groups(pool, dst, &|first, part| {
        dot::interleave_8x8_k(blocks, n, nb, first, part)
    });
    dst
}

/// Fills `dst` with `f(first, part)` on parts of it, `first` being the
/// index of `part[0]`, on the pool when there are many groups.
fn par_groups<T: Send>(pool: &ThreadPool, dst: &mut [T], f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    // Groups per part: a few thousand bytes' worth of copies each.
    const PART: usize = 64;
    if pool.n_threads() == 1 || dst.len() <= PART {
        f(0, dst);
        return;
    }
    pool.for_each_chunk_mut(dst, PART, &|i, part| f(i * PART, part));
}

/// Runs `f(src_part, dst_part)` over matching parts of `src` and `dst`
/// (`per_item` source values per destination item), on the pool when the
/// input is large.
fn par_map<S: Sync, T: Send>(
    pool: &ThreadPool,
    src: &[S],
    dst: &mut [T],
    per_item: usize,
    f: impl Fn(&[S], &mut [T]) + Sync,
) {
    // Below this, waking the workers costs more than the work.
    const PARALLEL_MIN: usize = 1 << 15;
    if pool.n_threads() == 1 || src.len() < PARALLEL_MIN {
        f(src, dst);
        return;
    }
    const ITEMS_PER_PART: usize = 256;
    pool.for_each_chunk_mut(dst, ITEMS_PER_PART, &|i, part: &mut [T]| {
        let start = i * ITEMS_PER_PART * per_item;
        f(&src[start..start + part.len() * per_item], part);
    });
}

#[cfg(test)]
mod tests;
