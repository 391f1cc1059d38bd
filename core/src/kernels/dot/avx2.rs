//! AVX2 + FMA + F16C kernels for x86_64 (Haswell, Zen and later), selected
//! at runtime.
//!
//! The integer dot products follow ggml's: `_mm256_maddubs_epi16` multiplies
//! unsigned by signed bytes and adds pairs into i16, `_mm256_madd_epi16`
//! widens to i32 (multiplying by ones, or by the K-quants' sub-block scales).
//! Where the CPU has AVX-VNNI, they do both in one
//! `_mm256_dpbusd_avx_epi32` ([`dot_rows_vnni`]). Where it has AVX-512 (BW,
//! VL, VNNI), the same kernels run at 256-bit width with the EVEX form of
//! that instruction, and Q5_0's fifth bits are added under a bit mask
//! ([`dot_rows_avx512`]).
//!
//! Q4_0, Q4_1 and Q5_0 weights repacked eight rows at a time
//! ([`PackedRows`]) run [`run_packed`]: one vector holds eight rows' bytes,
//! so each row's sum stays in its own lane and eight scales are one load.
//!
//! The 32-value formats keep the byte products of eight blocks in integers
//! and scale them once, as one vector ([`tile32`]). With several columns,
//! one row's block is multiplied by eight columns at once, read from
//! interleaved column groups ([`Block8x8`], [`groups32`]), with the
//! same float operations per column, so a column's result does not depend
//! on its neighbours. The K-quants and float weights use a register tile
//! of one row × up to eight columns that unpacks each weight block once and
//! uses it for every column. Weight loads are unaligned: weights come from
//! memory-mapped files.

#![allow(clippy::needless_range_loop)] // index loops over register tiles and block lanes read best

use std::arch::x86_64::*;
use std::ops::Range;

use crate::quant::{q4k_scales_mins, round_f16, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, QK_K};

use super::super::matmul::QMatrix;
use super::super::packed::{group_block_bytes, quants_offset, PackedRows, PACK_ROWS};
use super::{dispatch_tile, for_each_tile, Acts, Block32, Block8x8, Block8x8K, TileOut};

/// Whether this CPU has the features every function here requires.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether this CPU can also run the AVX-VNNI variants ([`dot_rows_vnni`]).
pub(crate) fn vnni_available() -> bool {
    available() && is_x86_feature_detected!("avxvnni")
}

/// Whether this CPU can also run the AVX-512 variants ([`dot_rows_avx512`]).
pub(crate) fn avx512_available() -> bool {
    available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

// Instruction tiers of the kernels (a const generic parameter `X`): the
// same code, with the byte dot products and Q5_0's unpacking done by the
// best instructions of each.
/// AVX2, FMA and F16C.
const AVX2: u8 = 0;
/// [`AVX2`] and AVX-VNNI.
const AVX_VNNI: u8 = 1;
/// [`AVX2`] and AVX-512 F, BW, VL and VNNI, at 256-bit width.
const AVX512: u8 = 2;

/// Tile shape of F32/F16 weights when `n > 1`.
const MRF: usize = 4;
const NRF: usize = 2;

// Weight formats of the 32-value tile kernel (a const generic parameter).
const K_Q4_0: u8 = 0;
const K_Q4_1: u8 = 1;
const K_Q5_0: u8 = 2;
const K_Q8_0: u8 = 3;

/// Computes `out(r, c, dot)` for rows `rows` of `w` and columns `0..n`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`available`]).
///
/// # Panics
/// If `w` and `acts` do not match (type or size) or `rows` is out of range.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows<F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    dot_rows_with::<AVX2, F>(w, rows, acts, n, out)
}

/// [`dot_rows`] with the 32-value formats' byte products summed by AVX-VNNI
/// (`vpdpbusd`, one instruction where AVX2 takes two); bit for bit the same
/// results.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-VNNI ([`vnni_available`]).
///
/// # Panics
/// As [`dot_rows`].
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn dot_rows_vnni<F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    dot_rows_with::<AVX_VNNI, F>(w, rows, acts, n, out)
}

/// [`dot_rows`] with AVX-512 instructions at 256-bit width: the byte
/// products summed by `vpdpbusd` as in [`dot_rows_vnni`], and Q5_0's fifth
/// bits added under a mask; bit for bit the same results.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI
/// ([`avx512_available`]).
///
/// # Panics
/// As [`dot_rows`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn dot_rows_avx512<F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    dot_rows_with::<AVX512, F>(w, rows, acts, n, out)
}

/// The body of the `dot_rows` variants, inlined into each; `X` is the
/// instruction tier.
#[inline(always)]
unsafe fn dot_rows_with<const X: u8, F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    let rb = w.row_bytes();
    // The raw-pointer kernels below rely on these bounds.
    assert!(rows.start <= rows.end && rows.end <= w.rows);
    assert!(w.data.len() >= w.rows * rb);
    assert_eq!(w.cols % w.dtype.block_len(), 0);
    let base = w.data.as_ptr();
    let cols = w.cols;
    if let Some(p) = w.packed {
        if rows.start.is_multiple_of(PACK_ROWS) && rows.end.is_multiple_of(PACK_ROWS) {
            match acts {
                Acts::Q8_0 {
                    blocks,
                    sums,
                    scales,
                    ..
                } if p.dtype == GgmlType::Q4_0 => {
                    return run_packed::<K_Q4_0, X, _, F>(p, rows, blocks, sums, scales, n, out)
                }
                Acts::Q8_0 {
                    blocks,
                    sums,
                    scales,
                    ..
                } if p.dtype == GgmlType::Q5_0 => {
                    return run_packed::<K_Q5_0, X, _, F>(p, rows, blocks, sums, scales, n, out)
                }
                Acts::Q8_1 {
                    blocks,
                    sums,
                    scales,
                    ..
                } if p.dtype == GgmlType::Q4_1 => {
                    return run_packed::<K_Q4_1, X, _, F>(p, rows, blocks, sums, scales, n, out)
                }
                _ => {}
            }
        }
    }
    match (w.dtype, acts) {
        (
            GgmlType::Q4_0,
            Acts::Q8_0 {
                blocks,
                sums,
                scales,
                groups,
            },
        ) => run32::<K_Q4_0, X, _, F>(base, rb, rows, blocks, sums, scales, groups, cols, n, out),
        (
            GgmlType::Q5_0,
            Acts::Q8_0 {
                blocks,
                sums,
                scales,
                groups,
            },
        ) => run32::<K_Q5_0, X, _, F>(base, rb, rows, blocks, sums, scales, groups, cols, n, out),
        (
            GgmlType::Q8_0,
            Acts::Q8_0 {
                blocks,
                sums,
                scales,
                groups,
            },
        ) => run32::<K_Q8_0, X, _, F>(base, rb, rows, blocks, sums, scales, groups, cols, n, out),
        (
            GgmlType::Q4_1,
            Acts::Q8_1 {
                blocks,
                sums,
                scales,
                groups,
            },
        ) => run32::<K_Q4_1, X, _, F>(base, rb, rows, blocks, sums, scales, groups, cols, n, out),
        (GgmlType::Q4K, Acts::Q8K { blocks, groups }) => {
            run_k::<true, X, F>(base, rb, rows, blocks, groups, cols, n, out)
        }
        (GgmlType::Q6K, Acts::Q8K { blocks, groups }) => {
            run_k::<false, X, F>(base, rb, rows, blocks, groups, cols, n, out)
        }
        (GgmlType::F32, Acts::F32(x)) => run_f::<4, F>(base, rb, rows, x, cols, n, out),
        (GgmlType::F16, Acts::F32(x)) => run_f::<2, F>(base, rb, rows, x, cols, n, out),
        (t, a) => panic!("no AVX2 dot product for {t} weights with {a:?} activations"),
    }
}

/// A 32-value format over rows × column groups: a lone column runs
/// [`tile32`], two or more of a group [`groups32`]. Both give a column the
/// same float operations in the same order, so a sequence decoded in a
/// batch gets bit for bit the logits it gets alone.
///
/// # Safety
/// AVX2/FMA/F16C available; `base` holds `rows.end` rows of `rb` bytes of
/// format `K`; `cols` is a multiple of 32.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn run32<const K: u8, const X: u8, A: Block32, F: FnMut(usize, usize, f32)>(
    base: *const u8,
    rb: usize,
    rows: Range<usize>,
    a: &[A],
    sums: &[f32],
    scales: &[f32],
    groups: &[Block8x8],
    cols: usize,
    n: usize,
    out: &mut F,
) {
    let nb = cols / 32;
    assert!(a.len() >= n * nb && sums.len() >= n * nb && scales.len() >= n * nb);
    assert!(n < 2 || groups.len() >= n.div_ceil(8) * nb, "column groups");
    // SAFETY (all blocks below): the rows and columns are in bounds
    // (asserted above and by the caller); the CPU features are the caller's
    // contract.
    let lone = |r: usize, c: usize| unsafe {
        let (wp, ap) = (base.add(r * rb), a.as_ptr().add(c * nb));
        if n == 1 {
            prefetch_ahead(wp, rb);
        }
        let (sp, dp) = (sums.as_ptr().add(c * nb), scales.as_ptr().add(c * nb));
        match X {
            AVX2 => tile32::<K, A>(wp, ap, sp, dp, nb),
            AVX_VNNI => tile32_vnni::<K, A>(wp, ap, sp, dp, nb),
            _ => tile32_avx512::<K, A>(wp, ap, sp, dp, nb),
        }
    };
    // A row's blocks are unpacked once for all its column groups (once per
    // group when the row is longer than the cache).
    let mut u = Unpacked32::default();
    // SAFETY: as above.
    let unpack = |wp: *const u8, blocks: Range<usize>, u: &mut Unpacked32| unsafe {
        if X == AVX512 {
            unpack_blocks_avx512::<K>(wp, blocks, u)
        } else {
            unpack_blocks::<K>(wp, blocks, u)
        }
    };
    let group = |r: usize, c0: usize| unsafe {
        let wp = base.add(r * rb);
        if c0 == 0 && nb <= CACHED {
            unpack(wp, 0..nb, &mut u);
        }
        let gp = groups.as_ptr().add(c0 / 8 * nb);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for b0 in (0..nb).step_by(CACHED) {
            let blocks = b0..nb.min(b0 + CACHED);
            if nb > CACHED {
                unpack(wp, blocks.clone(), &mut u);
            }
            match X {
                AVX2 => groups32::<K>(&u, blocks, gp, &mut acc),
                AVX_VNNI => groups32_vnni::<K>(&u, blocks, gp, &mut acc),
                _ => groups32_avx512::<K>(&u, blocks, gp, &mut acc),
            }
        }
        sum_groups(&acc)
    };
    by_groups(rows, n, lone, group, out)
}

/// Q4_0, Q4_1 or Q5_0 rows repacked eight at a time ([`PackedRows`]): each
/// group of eight rows against one column ([`packed_group`]) or up to
/// [`PACKED_COLS`] columns at once ([`packed_columns`]). A column gets the
/// same operations alone and among others.
///
/// # Safety
/// AVX2/FMA/F16C available; `p` is of format `K`; `rows` lies within it
/// and starts and ends on a multiple of [`PACK_ROWS`]; `a`, `sums` and
/// `scales` hold `n` columns of `p.cols / 32` blocks.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn run_packed<const K: u8, const X: u8, A: Block32, F: FnMut(usize, usize, f32)>(
    p: &PackedRows,
    rows: Range<usize>,
    a: &[A],
    sums: &[f32],
    scales: &[f32],
    n: usize,
    out: &mut F,
) {
    let nb = p.cols / 32;
    let gb = group_block_bytes(p.dtype);
    let data = p.bytes();
    assert!(rows.end <= p.rows && data.len() >= p.rows / PACK_ROWS * nb * gb);
    assert!(a.len() >= n * nb && sums.len() >= n * nb && scales.len() >= n * nb);
    for g in rows.start / PACK_ROWS..rows.end / PACK_ROWS {
        // SAFETY: group `g` is within `data` and the columns within the
        // activations (asserted above).
        unsafe {
            let gp = data.as_ptr().add(g * nb * gb);
            if n == 1 {
                prefetch_ahead(gp, nb * gb);
            }
            let mut emit = |c: usize, v: __m256| {
                let mut lanes = [0f32; PACK_ROWS];
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                for (i, &y) in lanes.iter().enumerate() {
                    out(g * PACK_ROWS + i, c, y);
                }
            };
            if n == 1 {
                let v = packed_group::<K, X, A>(gp, a.as_ptr(), sums.as_ptr(), scales.as_ptr(), nb);
                emit(0, v);
                continue;
            }
            let mut acc = [_mm256_setzero_ps(); PACKED_COLS];
            for c0 in (0..n).step_by(PACKED_COLS) {
                let cc = PACKED_COLS.min(n - c0);
                let (ap, sp, dp) = (
                    a.as_ptr().add(c0 * nb),
                    sums.as_ptr().add(c0 * nb),
                    scales.as_ptr().add(c0 * nb),
                );
                packed_columns::<K, X, A>(gp, ap, sp, dp, nb, &mut acc[..cc]);
                for (j, &v) in acc[..cc].iter().enumerate() {
                    emit(c0 + j, v);
                }
            }
        }
    }
}

/// Columns a packed group of rows meets per pass over its blocks
/// ([`packed_columns`]): their accumulators stay in L1.
const PACKED_COLS: usize = 64;

/// Eight packed rows at `gp` · one column, `nb` blocks: row `i`'s dot
/// product in lane `i`. Per block, each row's byte products stay in its
/// lane, are converted to float once, and are scaled as [`group32`] scales
/// them: by the activation scale, then the weight scale, then the offset
/// times the activation block sum.
#[inline(always)]
unsafe fn packed_group<const K: u8, const X: u8, A: Block32>(
    gp: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        let block = PackedBlock::new::<K, X>(gp, b);
        acc = block.add_column::<X, A>(acc, a.add(b), *sums.add(b), *scales.add(b));
    }
    acc
}

/// [`packed_group`] for `acc.len()` columns `nb` blocks apart (the first at
/// `a`, `sums`, `scales`): each block is unpacked once for all of them, and
/// each column gets the operations it gets alone.
#[inline(always)]
unsafe fn packed_columns<const K: u8, const X: u8, A: Block32>(
    gp: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
    acc: &mut [__m256],
) {
    acc.fill(_mm256_setzero_ps());
    for b in 0..nb {
        let block = PackedBlock::new::<K, X>(gp, b);
        for (c, v) in acc.iter_mut().enumerate() {
            let i = c * nb + b;
            *v = block.add_column::<X, A>(*v, a.add(i), *sums.add(i), *scales.add(i));
        }
    }
}

/// One block of eight packed rows, unpacked: the values of its four quant
/// vectors (low nibbles of vector `k` at `2k`, high ones at `2k + 1`), the
/// eight scales and the eight offset coefficients.
struct PackedBlock {
    values: [__m256i; 8],
    d: __m256,
    off: __m256,
}

impl PackedBlock {
    /// Block `b` of the packed group at `gp`, of format `K`.
    #[inline(always)]
    unsafe fn new<const K: u8, const X: u8>(gp: *const u8, b: usize) -> PackedBlock {
        let dtype = match K {
            K_Q4_0 => GgmlType::Q4_0,
            K_Q4_1 => GgmlType::Q4_1,
            _ => GgmlType::Q5_0,
        };
        let bp = gp.add(b * group_block_bytes(dtype));
        let q = bp.add(quants_offset(dtype));
        let low = _mm256_set1_epi8(0xF);
        // Q5_0: the fifth bits of nibble vector `m` (see `PackedRows`).
        let fifth = |v: __m256i, m: usize| {
            if K == K_Q5_0 {
                with_fifth_bits::<X>(v, bp.add(16 + 4 * m))
            } else {
                v
            }
        };
        let mut values = [_mm256_setzero_si256(); 8];
        for k in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * k).cast());
            values[2 * k] = fifth(_mm256_and_si256(v, low), 2 * k);
            values[2 * k + 1] = fifth(_mm256_and_si256(_mm256_srli_epi16::<4>(v), low), 2 * k + 1);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(bp.cast()));
        let off = match K {
            K_Q4_1 => _mm256_cvtph_ps(_mm_loadu_si128(bp.add(16).cast())),
            K_Q5_0 => _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
            _ => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
        };
        PackedBlock { values, d, off }
    }

    /// `acc` plus this block times the activation block `y` (with its
    /// contiguous `sum` and `scale`), row `i` in lane `i`.
    #[inline(always)]
    unsafe fn add_column<const X: u8, A: Block32>(
        &self,
        acc: __m256,
        y: *const A,
        sum: f32,
        scale: f32,
    ) -> __m256 {
        let qs = (*y).qs().as_ptr();
        let word = |k: usize| _mm256_set1_epi32(qs.add(4 * k).cast::<i32>().read_unaligned());
        let mut isum = _mm256_setzero_si256();
        for k in 0..4 {
            isum = dot_bytes::<X>(isum, self.values[2 * k], word(k));
            isum = dot_bytes::<X>(isum, self.values[2 * k + 1], word(4 + k));
        }
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(scale));
        let acc = _mm256_fmadd_ps(t, self.d, acc);
        _mm256_fmadd_ps(self.off, _mm256_set1_ps(sum), acc)
    }
}

/// Walks `rows` (outermost) × columns `0..n` in groups of eight and hands
/// each result to `out(row, col, value)`: a lone column (when `n == 1`, or
/// the last group holds one) through `lone(row, col)`, a group of two or
/// more through `group(row, first_col)`, which returns all eight lanes.
#[inline(always)]
fn by_groups<F: FnMut(usize, usize, f32)>(
    rows: Range<usize>,
    n: usize,
    lone: impl Fn(usize, usize) -> f32,
    mut group: impl FnMut(usize, usize) -> [f32; GROUP],
    out: &mut F,
) {
    for r in rows {
        for c0 in (0..n).step_by(GROUP) {
            let cc = GROUP.min(n - c0);
            if cc == 1 {
                out(r, c0, lone(r, c0));
            } else {
                let res = group(r, c0);
                for c in 0..cc {
                    out(r, c0 + c, res[c]);
                }
            }
        }
    }
}

/// Q4_K (`Q4 == true`) or Q6_K over rows × column groups: a lone
/// column runs [`dot_q4_k`] / [`dot_q6_k`], two or more of a group
/// [`groups_q4_k`] / [`groups_q6_k`].
///
/// # Safety
/// As [`run32`], for Q4_K / Q6_K rows and `cols` a multiple of 256.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn run_k<const Q4: bool, const X: u8, F: FnMut(usize, usize, f32)>(
    base: *const u8,
    rb: usize,
    rows: Range<usize>,
    a: &[BlockQ8K],
    groups: &[Block8x8K],
    cols: usize,
    n: usize,
    out: &mut F,
) {
    let nb = cols / QK_K;
    assert!(a.len() >= n * nb);
    assert!(n < 2 || groups.len() >= n.div_ceil(8) * nb, "column groups");
    // SAFETY (both): as in `run32`.
    let lone = |r: usize, c: usize| unsafe {
        let (wp, ap) = (base.add(r * rb), a.as_ptr().add(c * nb));
        if n == 1 {
            prefetch_ahead(wp, rb);
        }
        if Q4 {
            dot_q4_k(wp, ap, nb)
        } else {
            dot_q6_k(wp, ap, nb)
        }
    };
    let group = |r: usize, c0: usize| unsafe {
        let (wp, gp) = (base.add(r * rb), groups.as_ptr().add(c0 / 8 * nb));
        match (Q4, X) {
            (true, AVX2) => groups_q4_k(wp, gp, nb),
            (true, AVX_VNNI) => groups_q4_k_vnni(wp, gp, nb),
            (true, _) => groups_q4_k_avx512(wp, gp, nb),
            (false, AVX2) => groups_q6_k(wp, gp, nb),
            (false, AVX_VNNI) => groups_q6_k_vnni(wp, gp, nb),
            (false, _) => groups_q6_k_avx512(wp, gp, nb),
        }
    };
    by_groups(rows, n, lone, group, out)
}

/// Tiles F32 (`ES = 4`) or F16 (`ES = 2`) weights over rows × columns.
///
/// # Safety
/// As [`run32`], with `x` holding `n` columns of `cols` values.
#[inline(always)]
unsafe fn run_f<const ES: usize, F: FnMut(usize, usize, f32)>(
    base: *const u8,
    rb: usize,
    rows: Range<usize>,
    x: &[f32],
    cols: usize,
    n: usize,
    out: &mut F,
) {
    assert!(x.len() >= n * cols);
    let (mr, nr) = if n == 1 { (4, 1) } else { (MRF, NRF) };
    for_each_tile(
        rows,
        n,
        mr,
        nr,
        |r0, rr, c0, cc, res| {
            // SAFETY: as in `run32`.
            unsafe {
                let wp = base.add(r0 * rb);
                let xp = x.as_ptr().add(c0 * cols);
                dispatch_tile!(
                    tile_f, [ES], rr, cc,
                    rows [1, 2, 3, 4], cols [1, 2],
                    (wp, rb, xp, cols, res)
                )
            }
        },
        out,
    )
}

/// How far ahead of the row being multiplied a matrix-vector product asks
/// for weights: a few rows, so that more reads are in flight than the
/// hardware prefetchers alone keep (7 % more GB/s for one thread streaming
/// Q4_1 weights, `cpu_stream_times`).
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the `len` bytes [`PREFETCH_AHEAD`] past `row` to be brought into
/// the cache. Prefetches never fault, so addresses past the matrix are fine.
#[inline(always)]
unsafe fn prefetch_ahead(row: *const u8, len: usize) {
    let ahead = row.wrapping_add(PREFETCH_AHEAD);
    for offset in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(offset).cast());
    }
}

// ---------------------------------------------------------------------------
// Small helpers. All are `unsafe` only because of their target features
// (and raw pointers, which must be valid for the bytes they read).

/// The little-endian f16 at `p`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = p.cast::<u16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// 16 packed bytes at `p` → 32 nibble values: the low nibbles in bytes
/// 0..16, the high nibbles in bytes 16..32 (ggml's element order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
    let both = _mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(both, _mm256_set1_epi8(0xF))
}

/// The 32 bits at `p` → 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits(p: *const u8) -> __m256i {
    let x = p.cast::<u32>().read_unaligned() as i32;
    // Byte k of the result gets byte k/8 of x ...
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
    // ... and keeps only bit k%8: all ones exactly when that bit is set.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

// ---------------------------------------------------------------------------
// 32-value formats. Q4_0, Q4_1 and Q5_0 are multiplied as unsigned values
// (`maddubs` and `vpdpbusd` take them directly) and their per-block offset
// is applied separately: with `w = d*u + o` (o = -8d, m, -16d),
// `sum(w*x) = d*d_a*sum(u*q) + o*(d_a*sum(q))`, where `d_a*sum(q)` is the
// column's contiguous block sum. Q8_0 uses the sign trick.
//
// The kernel walks the blocks in groups of eight. A block's byte products
// stay integer until the eight blocks' sums are reduced into the eight
// lanes of one vector (`reduce8`); only then are they converted to float and
// scaled, by eight weight scales gathered from the group's blocks and eight
// contiguous activation scales. Lane k of a column's accumulator sums the
// blocks k, k + 8, k + 16, ... one after another, and its eight lanes are
// added at the end, so every column goes through the same operations in the
// same order whatever the tile width.

/// Bytes per block of format `K`.
const fn bytes32(k: u8) -> usize {
    match k {
        K_Q4_0 => 18,
        K_Q4_1 => 20,
        K_Q5_0 => 22,
        _ => 34,
    }
}

/// Blocks per group: one vector lane each.
const GROUP: usize = 8;

/// Runs `$body` with `$g` (a group's block count, 1 to 8) bound to `$n` as
/// a constant, so that a group kernel inlined there unrolls its loops and
/// keeps its arrays in registers for a row's last, partial group too.
macro_rules! with_group_len {
    ($g:expr, $n:ident => $body:expr) => {
        with_group_len!(@arms $g, $n => $body; 1 2 3 4 5 6 7)
    };
    (@arms $g:expr, $n:ident => $body:expr; $($k:literal)*) => {
        match $g {
            $($k => {
                const $n: usize = $k;
                $body
            })*
            g => {
                debug_assert_eq!(g, GROUP);
                const $n: usize = GROUP;
                $body
            }
        }
    };
}

/// The 32 values of the block at `p`: unsigned, except Q8_0's signed ones.
/// Inlined into each tier's kernels (`X`).
#[inline(always)]
unsafe fn values32<const K: u8, const X: u8>(p: *const u8) -> __m256i {
    match K {
        K_Q4_0 => nibbles(p.add(2)),
        K_Q4_1 => nibbles(p.add(4)),
        K_Q5_0 => with_fifth_bits::<X>(nibbles(p.add(6)), p.add(2)),
        _ => _mm256_loadu_si256(p.add(2).cast()),
    }
}

/// `v` (nibbles) plus 16 in the bytes whose bit is set in the 32-bit mask
/// at `p`: Q5_0's fifth bits. One masked byte add with AVX-512; a bit
/// spread, and and or without.
#[inline(always)]
unsafe fn with_fifth_bits<const X: u8>(v: __m256i, p: *const u8) -> __m256i {
    if X == AVX512 {
        fifth_bits_avx512(v, p)
    } else {
        let high = _mm256_and_si256(bytes_from_bits(p), _mm256_set1_epi8(0x10));
        _mm256_or_si256(v, high)
    }
}

/// [`with_fifth_bits`] under AVX-512: the mask loaded straight into a mask
/// register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn fifth_bits_avx512(v: __m256i, p: *const u8) -> __m256i {
    let high: __mmask32 = p.cast::<u32>().read_unaligned();
    _mm256_mask_add_epi8(v, high, v, _mm256_set1_epi8(0x10))
}

/// The scales and offset coefficients (0 for Q8_0) of the `g <= 8` blocks
/// from `p` on, one per lane; lanes `g..` are 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales32<const K: u8>(p: *const u8, g: usize) -> (__m256, __m256) {
    // The first 4 bytes of block k (Q4_1: d and m; otherwise d and more).
    let head = |k: usize| -> i32 {
        if k < g {
            p.add(k * bytes32(K)).cast::<i32>().read_unaligned()
        } else {
            0
        }
    };
    let heads = _mm256_setr_epi32(
        head(0),
        head(1),
        head(2),
        head(3),
        head(4),
        head(5),
        head(6),
        head(7),
    );
    // [d0 x0 d1 x1 | d2 x2 d3 x3] and [d4 x4 d5 x5 | d6 x6 d7 x7] as f32.
    let lo = _mm256_cvtph_ps(_mm256_castsi256_si128(heads));
    let hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(heads));
    // Even f16 lanes are the scales, odd ones (Q4_1) the minimums; the
    // shuffle leaves the blocks in order 0 1 4 5 2 3 6 7.
    let order =
        |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    let d = order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi));
    let off = match K {
        K_Q4_0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
        K_Q4_1 => order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)),
        K_Q5_0 => _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
        _ => _mm256_setzero_ps(),
    };
    (d, off)
}

/// Eight contiguous floats at `p`, of which the first `g` are read and the
/// rest are 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_first(p: *const f32, g: usize) -> __m256 {
    if g == GROUP {
        _mm256_loadu_ps(p)
    } else {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(g as i32), lane);
        _mm256_maskload_ps(p, mask)
    }
}

/// `[sum(v[0]), ..., sum(v[7])]`: the lane sums of eight vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(v: &[__m256i; GROUP]) -> __m256i {
    // Per 128-bit half: pairs, then quads of each vector's lanes.
    let a01 = _mm256_hadd_epi32(v[0], v[1]);
    let a23 = _mm256_hadd_epi32(v[2], v[3]);
    let a45 = _mm256_hadd_epi32(v[4], v[5]);
    let a67 = _mm256_hadd_epi32(v[6], v[7]);
    // Low halves: lanes 0..4 sums of v[0..4] / v[4..8]; high halves: 4..8.
    let b0 = _mm256_hadd_epi32(a01, a23);
    let b1 = _mm256_hadd_epi32(a45, a67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(b0, b1),
        _mm256_permute2x128_si256::<0x31>(b0, b1),
    )
}

/// One row · one column of a 32-value format, `nb` blocks each: the
/// matrix-vector product, and a column group's last column when it is
/// alone. Returns the dot product.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds at least `nb` blocks of format `K`;
/// `a`, `sums` and `scales` hold `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile32<const K: u8, A: Block32>(
    w: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
) -> f32 {
    tile32_with::<K, A, AVX2>(w, a, sums, scales, nb)
}

/// [`tile32`] summing byte products with AVX-VNNI.
///
/// # Safety
/// As [`tile32`], and AVX-VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile32_vnni<const K: u8, A: Block32>(
    w: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
) -> f32 {
    tile32_with::<K, A, AVX_VNNI>(w, a, sums, scales, nb)
}

/// [`tile32`] with AVX-512 instructions.
///
/// # Safety
/// As [`tile32`], and AVX-512 F/BW/VL/VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile32_avx512<const K: u8, A: Block32>(
    w: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
) -> f32 {
    tile32_with::<K, A, AVX512>(w, a, sums, scales, nb)
}

/// The body of the `tile32` variants, inlined into each.
#[inline(always)]
unsafe fn tile32_with<const K: u8, A: Block32, const X: u8>(
    w: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    nb: usize,
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut b0 = 0;
    while b0 + GROUP <= nb {
        group32::<K, A, X>(w, a, sums, scales, b0, GROUP, &mut acc);
        b0 += GROUP;
    }
    if b0 < nb {
        with_group_len!(nb - b0, G => group32::<K, A, X>(w, a, sums, scales, b0, G, &mut acc))
    }
    hsum(acc)
}

/// Adds blocks `b0..b0 + g` (`g <= 8`) to `acc`, block `b0 + k` in lane
/// `k`. Inlined with `g == GROUP` for whole groups, so its loops unroll and
/// its arrays stay in registers.
#[inline(always)]
unsafe fn group32<const K: u8, A: Block32, const X: u8>(
    w: *const u8,
    a: *const A,
    sums: *const f32,
    scales: *const f32,
    b0: usize,
    g: usize,
    acc: &mut __m256,
) {
    let signed = K == K_Q8_0;
    let bs = bytes32(K);
    let p = w.add(b0 * bs);
    let (dw, off) = scales32::<K>(p, g);
    let mut part = [_mm256_setzero_si256(); GROUP];
    for k in 0..g {
        let q = values32::<K, X>(p.add(k * bs));
        let mut qy = _mm256_loadu_si256((*a.add(b0 + k)).qs().as_ptr().cast());
        // The byte products want their first operand unsigned.
        let x = if signed {
            qy = _mm256_sign_epi8(qy, q);
            _mm256_sign_epi8(q, q)
        } else {
            q
        };
        part[k] = dot_bytes::<X>(_mm256_setzero_si256(), x, qy);
    }
    let dot = _mm256_cvtepi32_ps(reduce8(&part));
    let t = _mm256_mul_ps(dot, load_first(scales.add(b0), g));
    *acc = _mm256_fmadd_ps(t, dw, *acc);
    if !signed {
        *acc = _mm256_fmadd_ps(off, load_first(sums.add(b0), g), *acc);
    }
}

/// `acc` plus, per i32 lane, the sum of the lane's four products of
/// unsigned bytes of `x` with signed bytes of `a`: one `vpdpbusd` with
/// AVX-VNNI or AVX-512 VNNI, `maddubs` + `madd` + add without. The i16 pair sums of
/// `maddubs` cannot saturate here (x <= 128 with |a| <= 127, or x <= 63
/// with |a| <= 128), so both ways give the exact i32 sums.
#[inline(always)]
unsafe fn dot_bytes<const X: u8>(acc: __m256i, x: __m256i, a: __m256i) -> __m256i {
    if X == AVX512 {
        _mm256_dpbusd_epi32(acc, x, a)
    } else if X == AVX_VNNI {
        _mm256_dpbusd_avx_epi32(acc, x, a)
    } else {
        let pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(x, a), _mm256_set1_epi16(1));
        _mm256_add_epi32(acc, pairs)
    }
}

/// The eight four-byte words of `v`, each broadcast to all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn words(v: __m256i) -> [__m256i; 8] {
    let lo = _mm256_permute2x128_si256::<0x00>(v, v);
    let hi = _mm256_permute2x128_si256::<0x11>(v, v);
    [
        _mm256_shuffle_epi32::<0x00>(lo),
        _mm256_shuffle_epi32::<0x55>(lo),
        _mm256_shuffle_epi32::<0xAA>(lo),
        _mm256_shuffle_epi32::<0xFF>(lo),
        _mm256_shuffle_epi32::<0x00>(hi),
        _mm256_shuffle_epi32::<0x55>(hi),
        _mm256_shuffle_epi32::<0xAA>(hi),
        _mm256_shuffle_epi32::<0xFF>(hi),
    ]
}

/// The scale and offset coefficient (0 for Q8_0) of the block at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale32<const K: u8>(p: *const u8) -> (f32, f32) {
    let d = f16_at(p);
    let off = match K {
        K_Q4_0 => d * -8.0,
        K_Q4_1 => f16_at(p.add(2)),
        K_Q5_0 => d * -16.0,
        _ => 0.0,
    };
    (d, off)
}

/// Blocks of a row that [`run32`] unpacks once for all column groups.
const CACHED: usize = 64;

/// Unpacked blocks of one row of a 32-value format.
struct Unpacked32 {
    /// The values, unsigned (Q8_0: signed).
    x: [__m256i; CACHED],
    /// Scales.
    d: [f32; CACHED],
    /// Offset coefficients (0 for Q8_0).
    off: [f32; CACHED],
}

impl Default for Unpacked32 {
    fn default() -> Self {
        // SAFETY: all-zero bits are valid for every field.
        unsafe { std::mem::zeroed() }
    }
}

/// Unpacks `blocks` (at most [`CACHED`]) of the row at `w` into `u`, block
/// `blocks.start` first.
///
/// Kept out of line (so are the other tiers'): inlined into the column-group
/// loop, it made that loop 20–30 % slower.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds the row's blocks of format `K`.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_blocks<const K: u8>(w: *const u8, blocks: Range<usize>, u: &mut Unpacked32) {
    unpack_blocks_with::<K, AVX2>(w, blocks, u)
}

/// [`unpack_blocks`] with AVX-512 instructions (Q5_0's masked add).
///
/// # Safety
/// As [`unpack_blocks`], and AVX-512 F/BW/VL available.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn unpack_blocks_avx512<const K: u8>(
    w: *const u8,
    blocks: Range<usize>,
    u: &mut Unpacked32,
) {
    unpack_blocks_with::<K, AVX512>(w, blocks, u)
}

/// The body of the `unpack_blocks` variants.
#[inline(always)]
unsafe fn unpack_blocks_with<const K: u8, const X: u8>(
    w: *const u8,
    blocks: Range<usize>,
    u: &mut Unpacked32,
) {
    debug_assert!(blocks.len() <= CACHED);
    for (i, b) in blocks.enumerate() {
        let p = w.add(b * bytes32(K));
        let q = values32::<K, X>(p);
        u.x[i] = q;
        (u.d[i], u.off[i]) = scale32::<K>(p);
    }
}

/// One row's unpacked `blocks` (`u` holds them from `blocks.start` on)
/// against the eight columns of the column group at `g`, added to `acc`.
///
/// Each block's eight column sums come out of the byte products in the
/// eight lanes of one vector, and go through the same float operations, in
/// the same order, as a single column's in [`tile32`]: lane `c` of
/// accumulator `b % 8` gets block `b` of column `c`, and [`sum_groups`]
/// adds the accumulators in [`hsum`]'s order. A column's result therefore
/// does not depend on the columns it is computed with.
///
/// # Safety
/// AVX2/FMA/F16C available; `g` points to the group's blocks from 0 to
/// `blocks.end`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn groups32<const K: u8>(
    u: &Unpacked32,
    blocks: Range<usize>,
    g: *const Block8x8,
    acc: &mut [__m256; GROUP],
) {
    groups32_with::<K, AVX2>(u, blocks, g, acc)
}

/// [`groups32`] summing byte products with AVX-VNNI.
///
/// # Safety
/// As [`groups32`], and AVX-VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn groups32_vnni<const K: u8>(
    u: &Unpacked32,
    blocks: Range<usize>,
    g: *const Block8x8,
    acc: &mut [__m256; GROUP],
) {
    groups32_with::<K, AVX_VNNI>(u, blocks, g, acc)
}

/// [`groups32`] with AVX-512 instructions.
///
/// # Safety
/// As [`groups32`], and AVX-512 F/BW/VL/VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn groups32_avx512<const K: u8>(
    u: &Unpacked32,
    blocks: Range<usize>,
    g: *const Block8x8,
    acc: &mut [__m256; GROUP],
) {
    groups32_with::<K, AVX512>(u, blocks, g, acc)
}

/// The body of the `groups32` variants.
#[inline(always)]
unsafe fn groups32_with<const K: u8, const X: u8>(
    u: &Unpacked32,
    blocks: Range<usize>,
    g: *const Block8x8,
    acc: &mut [__m256; GROUP],
) {
    let signed = K == K_Q8_0;
    let first = blocks.start;
    for b in blocks {
        let i = b - first;
        let y = &*g.add(b);
        // The block's four-byte words, each against the same four bytes of
        // all eight columns.
        let q = u.x[i];
        let x = words(if signed { _mm256_sign_epi8(q, q) } else { q });
        // Q8_0: the weights' signs go onto the activations.
        let signs = if signed { words(q) } else { x };
        let mut part = [_mm256_setzero_si256(); 2];
        for k in 0..8 {
            let mut a = _mm256_load_si256(y.qs[k].as_ptr().cast());
            if signed {
                a = _mm256_sign_epi8(a, signs[k]);
            }
            part[k % 2] = dot_bytes::<X>(part[k % 2], x[k], a);
        }
        let dot = _mm256_cvtepi32_ps(_mm256_add_epi32(part[0], part[1]));
        let t = _mm256_mul_ps(dot, _mm256_load_ps(y.d.as_ptr()));
        let k = b % GROUP;
        acc[k] = _mm256_fmadd_ps(t, _mm256_set1_ps(u.d[i]), acc[k]);
        if !signed {
            let s = _mm256_load_ps(y.s.as_ptr());
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(u.off[i]), s, acc[k]);
        }
    }
}

/// A column group's eight results: lane `c` of the eight accumulators
/// added in [`hsum`]'s order, as a single column's eight lanes are.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_groups(acc: &[__m256; GROUP]) -> [f32; GROUP] {
    let s = [
        _mm256_add_ps(acc[4], acc[0]),
        _mm256_add_ps(acc[5], acc[1]),
        _mm256_add_ps(acc[6], acc[2]),
        _mm256_add_ps(acc[7], acc[3]),
    ];
    let total = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let mut lanes = [0.0f32; GROUP];
    _mm256_storeu_ps(lanes.as_mut_ptr(), total);
    lanes
}

// ---------------------------------------------------------------------------
// K-quants with Q8_K activations.

/// The integer sums of one Q4_K block at `p` against one Q8_K block, to be
/// added across lanes: `sum_j(sc_j * q·a)` and `sum_j(m_j * bsum_j)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_sums(p: *const u8, y: &BlockQ8K) -> (__m256i, __m256i) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let m4 = _mm256_set1_epi8(0xF);
    // Unpack the 6-bit scales and mins (ggml's utmp shuffle): afterwards
    // bytes 0..8 are the scales, 8..16 the mins.
    let s = p.add(4).cast::<u32>();
    let mut u = [
        s.read_unaligned(),
        s.add(1).read_unaligned(),
        s.add(2).read_unaligned(),
        0,
    ];
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    let mins_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
        u[3] as i32,
        u[2] as i32,
        u[1] as i32,
        u[0] as i32,
    ));
    let sc128 = _mm256_castsi256_si128(mins_scales);
    let mins = _mm256_extracti128_si256::<1>(mins_scales);
    let scales = _mm256_set_m128i(sc128, sc128);

    let q4 = p.add(16);
    let mut sumi = _mm256_setzero_si256();
    for j in 0..4 {
        // The 16-bit scale of sub-block i in every lane.
        let sel_l = _mm256_set1_epi16((((4 * j + 1) << 8) | (4 * j)) as i16);
        let sel_h = _mm256_set1_epi16((((4 * j + 3) << 8) | (4 * j + 2)) as i16);
        let scale_l = _mm256_shuffle_epi8(scales, sel_l);
        let scale_h = _mm256_shuffle_epi8(scales, sel_h);
        let bits = _mm256_loadu_si256(q4.add(32 * j).cast());
        let q4l = _mm256_and_si256(bits, m4);
        let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
        let qs = y.qs.as_ptr().add(64 * j);
        let q8l = _mm256_loadu_si256(qs.cast());
        let q8h = _mm256_loadu_si256(qs.add(32).cast());
        let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
        let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
    }
    // Activation sums per 32-value sub-block, times the mins.
    let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
    let q8s = _mm_hadd_epi16(
        _mm256_castsi256_si128(bs),
        _mm256_extracti128_si256::<1>(bs),
    );
    let min = _mm256_set_m128i(_mm_setzero_si128(), _mm_madd_epi16(mins, q8s));
    (sumi, min)
}

/// One Q4_K row · one column of `nb` blocks: per block,
/// `d*d_a*sum_j(sc_j * q·a) - dmin*d_a*sum_j(m_j * bsum_j)`, the integer
/// sums of eight blocks scaled together as one vector, block `b` in lane
/// `b % 8` (as [`tile32`] does).
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds `nb` 144-byte Q4_K blocks and `a`
/// `nb` `BlockQ8K`s.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k(w: *const u8, a: *const BlockQ8K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut b0 = 0;
    while b0 + GROUP <= nb {
        group_q4_k(w, a, b0, GROUP, &mut acc);
        b0 += GROUP;
    }
    if b0 < nb {
        with_group_len!(nb - b0, G => group_q4_k(w, a, b0, G, &mut acc))
    }
    hsum(acc)
}

/// Adds Q4_K blocks `b0..b0 + g` (`g <= 8`) to `acc`, as [`group32`].
#[inline(always)]
unsafe fn group_q4_k(w: *const u8, a: *const BlockQ8K, b0: usize, g: usize, acc: &mut __m256) {
    let mut sums = [_mm256_setzero_si256(); GROUP];
    let mut mins = [_mm256_setzero_si256(); GROUP];
    // Per block d*d_a and -dmin*d_a; 0 past `g`.
    let mut dd = [0.0f32; GROUP];
    let mut dm = [0.0f32; GROUP];
    for k in 0..g {
        let p = w.add((b0 + k) * 144);
        let y = &*a.add(b0 + k);
        (sums[k], mins[k]) = q4_k_sums(p, y);
        dd[k] = y.d * f16_at(p);
        dm[k] = y.d * -f16_at(p.add(2));
    }
    let isum = _mm256_cvtepi32_ps(reduce8(&sums));
    let imin = _mm256_cvtepi32_ps(reduce8(&mins));
    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(dd.as_ptr()), isum, *acc);
    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(dm.as_ptr()), imin, *acc);
}

/// One Q4_K row against the eight columns of the column group at
/// `g` (`nb` blocks), each column's block sums in one lane, with the float
/// operations of [`dot_q4_k`] (see [`groups32`]).
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds `nb` 144-byte Q4_K blocks; `g`
/// points to `nb` column-group blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn groups_q4_k(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q4_k_with::<AVX2>(w, g, nb)
}

/// [`groups_q4_k`] summing byte products with AVX-VNNI.
///
/// # Safety
/// As [`groups_q4_k`], and AVX-VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn groups_q4_k_vnni(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q4_k_with::<AVX_VNNI>(w, g, nb)
}

/// [`groups_q4_k`] with AVX-512 instructions.
///
/// # Safety
/// As [`groups_q4_k`], and AVX-512 F/BW/VL/VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn groups_q4_k_avx512(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q4_k_with::<AVX512>(w, g, nb)
}

/// The body of the `groups_q4_k` variants.
#[inline(always)]
unsafe fn groups_q4_k_with<const X: u8>(
    w: *const u8,
    g: *const Block8x8K,
    nb: usize,
) -> [f32; GROUP] {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); GROUP];
    for b in 0..nb {
        let p = w.add(b * 144);
        let y = &*g.add(b);
        let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
        let mut isum = _mm256_setzero_si256();
        let mut imin = _mm256_setzero_si256();
        for j in 0..8 {
            // Sub-block 2i is the low nibbles of bytes 32i..32i+32, 2i+1
            // their high nibbles.
            let bits = _mm256_loadu_si256(p.add(16 + 32 * (j / 2)).cast());
            let v = if j % 2 == 0 {
                bits
            } else {
                _mm256_srli_epi16::<4>(bits)
            };
            let x = words(_mm256_and_si256(v, m4));
            let mut part = [_mm256_setzero_si256(); 2];
            for k in 0..8 {
                let a = _mm256_load_si256(y.qs[8 * j + k].as_ptr().cast());
                part[k % 2] = dot_bytes::<X>(part[k % 2], x[k], a);
            }
            let sub = _mm256_add_epi32(part[0], part[1]);
            isum = _mm256_add_epi32(
                isum,
                _mm256_mullo_epi32(sub, _mm256_set1_epi32(sc[j] as i32)),
            );
            let bs = _mm256_load_si256(y.bsums[j].as_ptr().cast());
            imin = _mm256_add_epi32(imin, _mm256_madd_epi16(bs, _mm256_set1_epi16(mn[j] as i16)));
        }
        let yd = _mm256_load_ps(y.d.as_ptr());
        let dd = _mm256_mul_ps(yd, _mm256_set1_ps(f16_at(p)));
        let dm = _mm256_mul_ps(yd, _mm256_set1_ps(-f16_at(p.add(2))));
        let k = b % GROUP;
        acc[k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(isum), acc[k]);
        acc[k] = _mm256_fmadd_ps(dm, _mm256_cvtepi32_ps(imin), acc[k]);
    }
    sum_groups(&acc)
}

/// The 256 values of the Q6_K block at `p`, unsigned (0..64), as eight
/// vectors of 32 in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_values(p: *const u8) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    let mut q = [_mm256_setzero_si256(); 8];
    for half in 0..2 {
        let ql = p.add(64 * half);
        let bits1 = _mm256_loadu_si256(ql.cast());
        let bits2 = _mm256_loadu_si256(ql.add(32).cast());
        let bits_h = _mm256_loadu_si256(p.add(128 + 32 * half).cast());
        q[4 * half] = _mm256_or_si256(
            _mm256_and_si256(bits1, m15),
            _mm256_slli_epi16::<4>(_mm256_and_si256(bits_h, m3)),
        );
        q[4 * half + 1] = _mm256_or_si256(
            _mm256_and_si256(bits2, m15),
            _mm256_slli_epi16::<2>(_mm256_and_si256(bits_h, _mm256_set1_epi8(12))),
        );
        q[4 * half + 2] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m15),
            _mm256_and_si256(bits_h, _mm256_set1_epi8(48)),
        );
        q[4 * half + 3] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m15),
            _mm256_srli_epi16::<2>(_mm256_and_si256(bits_h, _mm256_set1_epi8(-64))),
        );
    }
    q
}

/// The integer sum of one Q6_K block at `p` against one Q8_K block, to be
/// added across lanes: the unsigned 6-bit values are multiplied as they
/// are, and `32 * sum_j(sc_j * bsum_j)` is subtracted.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_sum(p: *const u8, y: &BlockQ8K) -> __m256i {
    let scales = _mm_loadu_si128(p.add(192).cast());
    let q = q6_k_values(p);
    let mut sumi = _mm256_setzero_si256();
    for (i, &qi) in q.iter().enumerate() {
        // Scales of sub-blocks 2i and 2i+1, each for 8 i16 lanes.
        let i = i as i64;
        let sel = _mm_set_epi64x(
            (2 * i + 1) * 0x0101_0101_0101_0101,
            (2 * i) * 0x0101_0101_0101_0101,
        );
        let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, sel));
        let q8 = _mm256_loadu_si256(y.qs.as_ptr().add(32 * i as usize).cast());
        // 63 * 127 * 2 fits in i16.
        let p16 = _mm256_maddubs_epi16(qi, q8);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
    }
    let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(scales)));
    _mm256_sub_epi32(sumi, offset)
}

/// One Q6_K row · one column of `nb` blocks, `d*d_a` times each block's
/// integer sum, eight blocks scaled together as in [`dot_q4_k`].
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds `nb` 210-byte Q6_K blocks and `a`
/// `nb` `BlockQ8K`s.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k(w: *const u8, a: *const BlockQ8K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut b0 = 0;
    while b0 + GROUP <= nb {
        group_q6_k(w, a, b0, GROUP, &mut acc);
        b0 += GROUP;
    }
    if b0 < nb {
        with_group_len!(nb - b0, G => group_q6_k(w, a, b0, G, &mut acc))
    }
    hsum(acc)
}

/// Adds Q6_K blocks `b0..b0 + g` (`g <= 8`) to `acc`, as [`group32`].
#[inline(always)]
unsafe fn group_q6_k(w: *const u8, a: *const BlockQ8K, b0: usize, g: usize, acc: &mut __m256) {
    let mut sums = [_mm256_setzero_si256(); GROUP];
    let mut dd = [0.0f32; GROUP];
    for k in 0..g {
        let p = w.add((b0 + k) * 210);
        let y = &*a.add(b0 + k);
        sums[k] = q6_k_sum(p, y);
        dd[k] = y.d * f16_at(p.add(208));
    }
    let isum = _mm256_cvtepi32_ps(reduce8(&sums));
    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(dd.as_ptr()), isum, *acc);
}

/// One Q6_K row against the eight columns of the column group at
/// `g` (`nb` blocks), with the float operations of [`dot_q6_k`] (see
/// [`groups32`]).
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds `nb` 210-byte Q6_K blocks; `g`
/// points to `nb` column-group blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn groups_q6_k(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q6_k_with::<AVX2>(w, g, nb)
}

/// [`groups_q6_k`] summing byte products with AVX-VNNI.
///
/// # Safety
/// As [`groups_q6_k`], and AVX-VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn groups_q6_k_vnni(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q6_k_with::<AVX_VNNI>(w, g, nb)
}

/// [`groups_q6_k`] with AVX-512 instructions.
///
/// # Safety
/// As [`groups_q6_k`], and AVX-512 F/BW/VL/VNNI available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn groups_q6_k_avx512(w: *const u8, g: *const Block8x8K, nb: usize) -> [f32; GROUP] {
    groups_q6_k_with::<AVX512>(w, g, nb)
}

/// The body of the `groups_q6_k` variants.
#[inline(always)]
unsafe fn groups_q6_k_with<const X: u8>(
    w: *const u8,
    g: *const Block8x8K,
    nb: usize,
) -> [f32; GROUP] {
    let mut acc = [_mm256_setzero_ps(); GROUP];
    for b in 0..nb {
        let p = w.add(b * 210);
        let y = &*g.add(b);
        let sc = p.add(192).cast::<i8>();
        let mut isum = _mm256_setzero_si256();
        let mut ioff = _mm256_setzero_si256();
        for (j, &q) in q6_k_values(p).iter().enumerate() {
            // Words 0..4 are 16-value sub-block 2j, words 4..8 sub-block 2j+1.
            let x = words(q);
            let mut part = [_mm256_setzero_si256(); 2];
            for k in 0..8 {
                let a = _mm256_load_si256(y.qs[8 * j + k].as_ptr().cast());
                part[k / 4] = dot_bytes::<X>(part[k / 4], x[k], a);
            }
            let (s0, s1) = (*sc.add(2 * j) as i32, *sc.add(2 * j + 1) as i32);
            isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(part[0], _mm256_set1_epi32(s0)));
            isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(part[1], _mm256_set1_epi32(s1)));
            // Both sub-blocks' sums times their scales, one i16 pair per lane.
            let pair = (s0 & 0xFFFF) | (s1 << 16);
            let bs = _mm256_load_si256(y.bsums[j].as_ptr().cast());
            ioff = _mm256_add_epi32(ioff, _mm256_madd_epi16(bs, _mm256_set1_epi32(pair)));
        }
        let isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<5>(ioff));
        let dd = _mm256_mul_ps(
            _mm256_load_ps(y.d.as_ptr()),
            _mm256_set1_ps(f16_at(p.add(208))),
        );
        let k = b % GROUP;
        acc[k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(isum), acc[k]);
    }
    sum_groups(&acc)
}

// ---------------------------------------------------------------------------
// F32 / F16 weights with f32 activations.

/// Eight weights at `p` as f32: F32 when `ES == 4`, F16 when `ES == 2`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const ES: usize>(p: *const u8) -> __m256 {
    if ES == 4 {
        _mm256_loadu_ps(p.cast())
    } else {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
}

/// One weight at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load1<const ES: usize>(p: *const u8) -> f32 {
    if ES == 4 {
        p.cast::<f32>().read_unaligned()
    } else {
        f16_at(p)
    }
}

/// `R` rows × `C` columns of F32/F16 weights against f32 columns of `cols`
/// values.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` holds `R` rows of `row_bytes >= cols * ES`
/// bytes; `x` holds `C` columns of `cols` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_f<const ES: usize, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    cols: usize,
    res: &mut TileOut,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let main = cols / 8 * 8;
    let mut k = 0;
    while k < main {
        for r in 0..R {
            let wv = load8::<ES>(w.add(r * row_bytes + k * ES));
            for c in 0..C {
                let xv = _mm256_loadu_ps(x.add(c * cols + k));
                acc[r][c] = _mm256_fmadd_ps(wv, xv, acc[r][c]);
            }
        }
        k += 8;
    }
    for r in 0..R {
        for c in 0..C {
            let mut s = hsum(acc[r][c]);
            for k in main..cols {
                s += load1::<ES>(w.add(r * row_bytes + k * ES)) * *x.add(c * cols + k);
            }
            res[r][c] = s;
        }
    }
}

// ---------------------------------------------------------------------------
// Activation quantizers, bit-identical to the scalar ones in `crate::quant`.

/// Quantizes 32 floats at `x`: returns the unrounded scale, the values
/// (in order) and their sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize32(x: *const f32) -> (f32, __m256i, i32) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for &vi in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vi));
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    let amax = _mm_cvtss_f32(m4);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    const RND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let mut i = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        i[k] = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[k], id)));
    }
    let sum = hsum_i32(_mm256_add_epi32(
        _mm256_add_epi32(i[0], i[1]),
        _mm256_add_epi32(i[2], i[3]),
    ));
    // Pack to bytes; the packs interleave 128-bit lanes, the permute
    // restores element order.
    let p = _mm256_packs_epi16(
        _mm256_packs_epi32(i[0], i[1]),
        _mm256_packs_epi32(i[2], i[3]),
    );
    let q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    (d, q, sum)
}

/// AVX2 version of [`crate::quant::quantize_row_q8_0`].
///
/// # Safety
/// AVX2/FMA/F16C available; `src.len() == 32 * dst.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    debug_assert_eq!(src.len(), dst.len() * 32);
    for (i, b) in dst.iter_mut().enumerate() {
        let (d, q, _) = quantize32(src.as_ptr().add(32 * i));
        b.d = round_f16(d);
        _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
    }
}

/// AVX2 version of [`crate::quant::quantize_row_q8_1`].
///
/// # Safety
/// AVX2/FMA/F16C available; `src.len() == 32 * dst.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    debug_assert_eq!(src.len(), dst.len() * 32);
    for (i, b) in dst.iter_mut().enumerate() {
        let (d, q, sum) = quantize32(src.as_ptr().add(32 * i));
        b.d = round_f16(d);
        b.s = round_f16(d * sum as f32);
        _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
    }
}

/// AVX2 version of [`crate::quant::quantize_row_q8_k`].
///
/// # Safety
/// AVX2/FMA/F16C available; `src.len() == 256 * dst.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k(src: &[f32], dst: &mut [BlockQ8K]) {
    debug_assert_eq!(src.len(), dst.len() * QK_K);
    let sign = _mm256_set1_ps(-0.0);
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
        let xp = x.as_ptr();
        let mut m = _mm256_setzero_ps();
        for k in (0..QK_K).step_by(8) {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xp.add(k))));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let amax = lanes.iter().fold(0.0f32, |a, &v| a.max(v));
        if amax == 0.0 {
            *b = BlockQ8K::default();
            continue;
        }
        // The first value of largest magnitude, with its sign.
        let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        const RND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        for k in (0..QK_K).step_by(32) {
            let mut i = [_mm256_setzero_si256(); 4];
            for j in 0..4 {
                let v = _mm256_mul_ps(is, _mm256_loadu_ps(xp.add(k + 8 * j)));
                i[j] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps::<RND>(v)), top);
            }
            let p = _mm256_packs_epi16(
                _mm256_packs_epi32(i[0], i[1]),
                _mm256_packs_epi32(i[2], i[3]),
            );
            let q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(b.qs.as_mut_ptr().add(k).cast(), q);
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}
