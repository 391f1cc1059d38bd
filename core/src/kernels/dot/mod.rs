//! Dot products of quantized weight rows with quantized activation columns,
//! per weight type and instruction set.
//!
//! Every backend exposes the same entry point, `dot_rows`, which computes
//! `dot(W[r, :], column c)` for a range of rows and all activation columns
//! and hands each result to a writer `out(row, col, value)`. Backends walk
//! the rows in small tiles and, for each tile, all columns, so a tile of
//! weights is loaded from memory once per call and then reused from L1.

use std::ops::Range;

use crate::quant::{BlockQ8K, BlockQ8_0, BlockQ8_1};

use super::matmul::QMatrix;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod scalar;

#[cfg(test)]
mod tests;

/// The activations of one matmul call, already converted to the format the
/// weight type's dot product consumes; `n` columns stored one after another.
// The per-block sums are only read by the AVX2 kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Acts<'a> {
    /// Plain f32 (for F32 and F16 weights): `cols` values per column.
    F32(&'a [f32]),
    /// One `BlockQ8_0` per 32 values (Q4_0, Q5_0, Q8_0 weights); per block
    /// `d * sum(qs)`, contiguous so SIMD kernels can apply the weights'
    /// constant offsets (-8, -16) eight blocks at a time; and the blocks'
    /// `d` again, contiguous, for their scales. `groups` holds the same
    /// blocks as [`Block8x8`]s, `nb` per eight columns, when the kernels of
    /// [`Isa::wants_groups`] run several columns; otherwise it is empty.
    Q8_0 {
        blocks: &'a [BlockQ8_0],
        sums: &'a [f32],
        scales: &'a [f32],
        groups: &'a [Block8x8],
    },
    /// One `BlockQ8_1` per 32 values (Q4_1 weights), and the blocks' `s`
    /// and `d` again, contiguous (`s` for the weights' block minimums).
    /// `groups` as for `Q8_0`.
    Q8_1 {
        blocks: &'a [BlockQ8_1],
        sums: &'a [f32],
        scales: &'a [f32],
        groups: &'a [Block8x8],
    },
    /// One `BlockQ8K` per 256 values (Q4_K, Q6_K weights); `groups` as for
    /// `Q8_0`, in [`Block8x8K`]s.
    Q8K {
        blocks: &'a [BlockQ8K],
        groups: &'a [Block8x8K],
    },
}

/// The instruction set a call runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable reference code.
    Scalar,
    /// x86_64 with AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86_64 with AVX2, FMA, F16C and AVX-VNNI (Alder Lake, Zen 4 and
    /// later): the AVX2 kernels with fused byte dot products.
    #[cfg(target_arch = "x86_64")]
    Avx2Vnni,
    /// x86_64 with AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI (Ice Lake,
    /// Zen 4 and later): the AVX2 kernels at 256-bit width with AVX-512's
    /// fused byte dot products and byte masks.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 Advanced SIMD (always present on aarch64).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Whether this instruction set's kernels read [`Block8x8`] column
    /// groups when a call has several columns.
    pub(crate) fn wants_groups(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512) {
            return true;
        }
        false
    }

    /// The fastest instruction set this CPU supports.
    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if avx2::avx512_available() {
            return Isa::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::vnni_available() {
            return Isa::Avx2Vnni;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            return Isa::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Scalar
    }
}

/// Computes `out(r, c, dot(W[r, :], column c))` for every `r` in `rows` and
/// `c` in `0..n`.
///
/// `acts` must match the weight type (see [`Acts`]) and hold at least `n`
/// columns; `isa` must be supported by this CPU (as [`Isa::best`] returns).
pub(crate) fn dot_rows<F: FnMut(usize, usize, f32)>(
    isa: Isa,
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    debug_assert!(rows.end <= w.rows);
    match isa {
        Isa::Scalar => scalar::dot_rows(w, rows, acts, n, out),
        // SAFETY: `Isa::Avx2` is only produced by `Isa::best` after checking
        // the CPU features (tests construct it the same way).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot_rows(w, rows, acts, n, out) },
        // SAFETY: as above, with AVX-VNNI detected too.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Vnni => unsafe { avx2::dot_rows_vnni(w, rows, acts, n, out) },
        // SAFETY: as above, with AVX-512 F/BW/VL/VNNI detected too.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx2::dot_rows_avx512(w, rows, acts, n, out) },
        // SAFETY: as above, NEON was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::dot_rows(w, rows, acts, n, out) },
    }
}

/// Quantizes activations to Q8_0 blocks (bit-identical on every `isa`).
pub(crate) fn quantize_q8_0(isa: Isa, src: &[f32], dst: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), dst.len() * 32, "Q8_0 activation length");
    match isa {
        Isa::Scalar => crate::quant::quantize_row_q8_0(src, dst),
        // SAFETY: AVX2/NEON availability as in `dot_rows`; lengths checked.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512 => unsafe { avx2::quantize_q8_0(src, dst) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::quantize_q8_0(src, dst) },
    }
}

/// Quantizes activations to Q8_1 blocks (bit-identical on every `isa`).
pub(crate) fn quantize_q8_1(isa: Isa, src: &[f32], dst: &mut [BlockQ8_1]) {
    assert_eq!(src.len(), dst.len() * 32, "Q8_1 activation length");
    match isa {
        Isa::Scalar => crate::quant::quantize_row_q8_1(src, dst),
        // SAFETY: AVX2/NEON availability as in `dot_rows`; lengths checked.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512 => unsafe { avx2::quantize_q8_1(src, dst) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::quantize_q8_1(src, dst) },
    }
}

/// An activation block of the 32-value formats ([`BlockQ8_0`] for Q4_0,
/// Q5_0 and Q8_0 weights, [`BlockQ8_1`] for Q4_1): what `matmul` and the
/// kernels read from it.
pub(crate) trait Block32: Copy + Default + Send + Sync {
    /// Quantizes `src` (32 values per block of `dst`) with `isa`'s code.
    fn quantize(isa: Isa, src: &[f32], dst: &mut [Self]);
    /// The scale `d`.
    fn scale(&self) -> f32;
    /// `d * sum(qs)`: computed for Q8_0, stored (`s`) in Q8_1.
    fn sum(&self) -> f32;
    /// The quantized values.
    fn qs(&self) -> &[i8; 32];
}

impl Block32 for BlockQ8_0 {
    fn quantize(isa: Isa, src: &[f32], dst: &mut [Self]) {
        quantize_q8_0(isa, src, dst)
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d
    }
    fn sum(&self) -> f32 {
        self.d * self.qs.iter().map(|&q| q as i32).sum::<i32>() as f32
    }
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl Block32 for BlockQ8_1 {
    fn quantize(isa: Isa, src: &[f32], dst: &mut [Self]) {
        quantize_q8_1(isa, src, dst)
    }
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d
    }
    fn sum(&self) -> f32 {
        self.s
    }
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// The contiguous per-block sums of [`Acts::Q8_0`] / [`Acts::Q8_1`]:
/// [`Block32::sum`] of each block.
pub(crate) fn block_sums<B: Block32>(blocks: &[B], sums: &mut [f32]) {
    for (s, b) in sums.iter_mut().zip(blocks) {
        *s = b.sum();
    }
}

/// The contiguous block scales of [`Acts::Q8_0`] / [`Acts::Q8_1`]: each
/// block's `d`.
pub(crate) fn block_scales<B: Block32>(blocks: &[B], scales: &mut [f32]) {
    for (s, b) in scales.iter_mut().zip(blocks) {
        *s = b.scale();
    }
}

/// The same block of eight activation columns, interleaved four bytes at a
/// time so that one 256-bit load holds bytes `4k..4k + 4` of all eight, with
/// the blocks' scales and sums side by side.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Block8x8 {
    /// `qs[k][c]`: bytes `4k..4k + 4` of column `c`'s block.
    pub(crate) qs: [[[i8; 4]; 8]; 8],
    /// Column `c`'s block scale `d`.
    pub(crate) d: [f32; 8],
    /// Column `c`'s block sum (as in the `sums` of [`Acts`]).
    pub(crate) s: [f32; 8],
}

/// Interleaves `n` columns of `nb` blocks each (`blocks`, `scales`, `sums`
/// as in [`Acts`]) into column groups: the blocks of columns `8g..8g + 8` at
/// `[g * nb..(g + 1) * nb]`, columns past `n` zeros. `dst` holds the groups
/// from block `first` of that numbering on.
pub(crate) fn interleave_8x8<B: Block32>(
    blocks: &[B],
    scales: &[f32],
    sums: &[f32],
    n: usize,
    nb: usize,
    first: usize,
    dst: &mut [Block8x8],
) {
    debug_assert!(first + dst.len() <= n.div_ceil(8) * nb);
    for (i, out) in (first..).zip(dst.iter_mut()) {
        let (g, b) = (i / nb, i % nb);
        *out = Block8x8::default();
        for c in 0..8.min(n - 8 * g) {
            let j = (8 * g + c) * nb + b;
            let q = blocks[j].qs();
            for k in 0..8 {
                out.qs[k][c].copy_from_slice(&q[4 * k..4 * k + 4]);
            }
            out.d[c] = scales[j];
            out.s[c] = sums[j];
        }
    }
}

/// The same Q8_K block of eight activation columns, interleaved like
/// [`Block8x8`], with the columns' scales and block sums side by side.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(crate) struct Block8x8K {
    /// `qs[k][c]`: bytes `4k..4k + 4` of column `c`'s block.
    pub(crate) qs: [[[i8; 4]; 8]; 64],
    /// Column `c`'s scale `d`.
    pub(crate) d: [f32; 8],
    /// `bsums[j][c]`: column `c`'s `bsums[2j]` and `bsums[2j + 1]`, the
    /// sums of the two halves of 32-value sub-block `j`.
    pub(crate) bsums: [[[i16; 2]; 8]; 8],
}

impl Default for Block8x8K {
    fn default() -> Self {
        Block8x8K {
            qs: [[[0; 4]; 8]; 64],
            d: [0.0; 8],
            bsums: [[[0; 2]; 8]; 8],
        }
    }
}

/// [`interleave_8x8`] for Q8_K blocks: `n` columns of `nb` blocks.
pub(crate) fn interleave_8x8_k(
    blocks: &[BlockQ8K],
    n: usize,
    nb: usize,
    first: usize,
    dst: &mut [Block8x8K],
) {
    debug_assert!(first + dst.len() <= n.div_ceil(8) * nb);
    for (i, out) in (first..).zip(dst.iter_mut()) {
        let (g, b) = (i / nb, i % nb);
        *out = Block8x8K::default();
        for c in 0..8.min(n - 8 * g) {
            let y = &blocks[(8 * g + c) * nb + b];
            for k in 0..64 {
                out.qs[k][c].copy_from_slice(&y.qs[4 * k..4 * k + 4]);
            }
            out.d[c] = y.d;
            for j in 0..8 {
                out.bsums[j][c] = [y.bsums[2 * j], y.bsums[2 * j + 1]];
            }
        }
    }
}

/// Quantizes activations to Q8_K blocks (bit-identical on every `isa`).
pub(crate) fn quantize_q8_k(isa: Isa, src: &[f32], dst: &mut [BlockQ8K]) {
    assert_eq!(src.len(), dst.len() * 256, "Q8_K activation length");
    match isa {
        Isa::Scalar => crate::quant::quantize_row_q8_k(src, dst),
        // SAFETY: AVX2/NEON availability as in `dot_rows`; lengths checked.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512 => unsafe { avx2::quantize_q8_k(src, dst) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::quantize_q8_k(src, dst) },
    }
}

// Register tiling helpers, used by the AVX2 kernels (NEON walks rows and
// columns directly).

/// Most rows of a register tile.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const MAX_TILE_ROWS: usize = 4;
/// Most columns of a register tile.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const MAX_TILE_COLS: usize = 8;

/// Results of one tile: `[row][col]`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) type TileOut = [[f32; MAX_TILE_COLS]; MAX_TILE_ROWS];

/// Walks `rows` × `0..n` in tiles of at most `mr` rows × `nr` columns (row
/// tiles outermost, so each weight tile is reused across all columns while
/// it is hot) and forwards each tile's results to `out`.
///
/// `tile(r0, rr, c0, cc, &mut res)` computes rows `r0..r0 + rr` against
/// columns `c0..c0 + cc` into `res[..rr][..cc]`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn for_each_tile<T, F>(
    rows: Range<usize>,
    n: usize,
    mr: usize,
    nr: usize,
    mut tile: T,
    out: &mut F,
) where
    T: FnMut(usize, usize, usize, usize, &mut TileOut),
    F: FnMut(usize, usize, f32),
{
    debug_assert!((1..=MAX_TILE_ROWS).contains(&mr) && (1..=MAX_TILE_COLS).contains(&nr));
    let mut res: TileOut = [[0.0; MAX_TILE_COLS]; MAX_TILE_ROWS];
    let mut r0 = rows.start;
    while r0 < rows.end {
        let rr = mr.min(rows.end - r0);
        let mut c0 = 0;
        while c0 < n {
            let cc = nr.min(n - c0);
            tile(r0, rr, c0, cc, &mut res);
            for (i, row) in res.iter().enumerate().take(rr) {
                for (j, &v) in row.iter().enumerate().take(cc) {
                    out(r0 + i, c0 + j, v);
                }
            }
            c0 += cc;
        }
        r0 += rr;
    }
}

/// Calls `f::<G.., R, C>(args)` for runtime tile sizes: `rr` must be one of
/// the listed row counts and `cc` one of the column counts; each pair is a
/// separate instantiation with its accumulators in registers.
///
/// `dispatch_tile!(f, [G..], rr, cc, rows [1, 2], cols [1, 2, 3], (args..))`
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! dispatch_tile {
    ($f:ident, $gen:tt, $rr:expr, $cc:expr, rows [$($r:literal),*], cols $cols:tt, $args:tt) => {
        match $rr {
            $( $r => dispatch_tile!(@cols $f, $gen, $r, $cc, $cols, $args), )*
            _ => unreachable!("unexpected tile row count"),
        }
    };
    (@cols $f:ident, $gen:tt, $r:literal, $cc:expr, [$($c:literal),*], $args:tt) => {
        match $cc {
            $( $c => dispatch_tile!(@call $f, $gen, $r, $c, $args), )*
            _ => unreachable!("unexpected tile column count"),
        }
    };
    (@call $f:ident, [$($g:tt),*], $r:literal, $c:literal, ($($args:expr),*)) => {
        $f::<$($g,)* $r, $c>($($args),*)
    };
}
#[allow(unused_imports)]
pub(crate) use dispatch_tile;
