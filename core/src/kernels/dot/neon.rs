//! NEON kernels for aarch64 (Advanced SIMD is part of every aarch64 CPU).
//!
//! Stable Rust has no intrinsics for the `sdot` dot-product extension, so
//! 8-bit products use `vmull_s8` (16-bit products) and pairwise widening
//! adds, as ggml does on cores without it. NEON multiplies signed by signed
//! bytes, so every format is unpacked to its signed values directly.
//!
//! For `n > 1` each weight row is unpacked once per column from L1: the
//! row is loaded from memory once per call, columns are the inner loop.
//! All weight loads are byte loads (`vld1q_u8`): no alignment is assumed.

#![allow(clippy::needless_range_loop)] // index loops over register tiles and block lanes read best

use std::arch::aarch64::*;
use std::ops::Range;

use crate::quant::{q4k_scales_mins, read_f16, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, QK_K};

use super::super::matmul::QMatrix;
use super::Acts;

/// Computes `out(r, c, dot)` for rows `rows` of `w` and columns `0..n`.
///
/// # Safety
/// The CPU must support NEON (always true on aarch64).
///
/// # Panics
/// If `w` and `acts` do not match (type or size) or `rows` is out of range.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_rows<F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    let rb = w.row_bytes();
    assert!(rows.start <= rows.end && rows.end <= w.rows);
    assert!(w.data.len() >= w.rows * rb);
    let cols = w.cols;
    let nb32 = cols / 32;
    let nbk = cols / QK_K;
    // SAFETY (every arm): `each` hands the kernel a pointer to one whole row
    // of `w` and to one column of `per_col` activation items, both checked
    // to be in bounds, which is exactly what each kernel reads.
    match (w.dtype, acts) {
        (GgmlType::Q4_0, Acts::Q8_0 { blocks, .. }) => {
            each(w, rows, blocks, nb32, n, out, |p, a| dot32::<0>(p, a, nb32))
        }
        (GgmlType::Q5_0, Acts::Q8_0 { blocks, .. }) => {
            each(w, rows, blocks, nb32, n, out, |p, a| dot32::<2>(p, a, nb32))
        }
        (GgmlType::Q8_0, Acts::Q8_0 { blocks, .. }) => {
            each(w, rows, blocks, nb32, n, out, |p, a| dot32::<3>(p, a, nb32))
        }
        (GgmlType::Q4_1, Acts::Q8_1 { blocks, .. }) => {
            each(w, rows, blocks, nb32, n, out, |p, a| dot_q4_1(p, a, nb32))
        }
        (GgmlType::Q4K, Acts::Q8K { blocks: a, .. }) => {
            each(w, rows, a, nbk, n, out, |p, a| dot_q4_k(p, a, nbk))
        }
        (GgmlType::Q6K, Acts::Q8K { blocks: a, .. }) => {
            each(w, rows, a, nbk, n, out, |p, a| dot_q6_k(p, a, nbk))
        }
        (GgmlType::F32, Acts::F32(x)) => each(w, rows, x, cols, n, out, |p, x| dot_f32(p, x, cols)),
        (GgmlType::F16, Acts::F32(x)) => each(w, rows, x, cols, n, out, |p, x| dot_f16(p, x, cols)),
        (t, a) => panic!("no NEON dot product for {t} weights with {a:?} activations"),
    }
}

/// Row-outer, column-inner loop: `dot(row_ptr, column_ptr)`.
///
/// # Safety
/// `dot` must read at most one row of `w` and `per_col` items of a column.
#[inline(always)]
unsafe fn each<A, F, D>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: &[A],
    per_col: usize,
    n: usize,
    out: &mut F,
    dot: D,
) where
    F: FnMut(usize, usize, f32),
    D: Fn(*const u8, *const A) -> f32,
{
    assert!(acts.len() >= n * per_col);
    let rb = w.row_bytes();
    for r in rows {
        let row = w.data.as_ptr().add(r * rb);
        for c in 0..n {
            out(r, c, dot(row, acts.as_ptr().add(c * per_col)));
        }
    }
}

/// Mask selecting bit `k % 8` in byte `k`.
const BIT_MASK: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// Signed dot product of 16 + 16 bytes, as four i32 partial sums.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot32_i8(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> int32x4_t {
    // |a*b| <= 128*128 fits in i16; pairs are summed into i32.
    let s = vpaddlq_s16(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)));
    let s = vpadalq_s16(s, vmull_high_s8(a0, b0));
    let s = vpadalq_s16(s, vmull_s8(vget_low_s8(a1), vget_low_s8(b1)));
    vpadalq_s16(s, vmull_high_s8(a1, b1))
}

/// Signed values of a Q4_0 (`K = 0`), Q5_0 (`K = 2`) or Q8_0 (`K = 3`)
/// block at `p`: elements 0..16 and 16..32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn values32<const K: u8>(p: *const u8) -> (int8x16_t, int8x16_t) {
    match K {
        0 => {
            let bytes = vld1q_u8(p.add(2));
            let lo = vandq_u8(bytes, vdupq_n_u8(0xF));
            let hi = vshrq_n_u8::<4>(bytes);
            let eight = vdupq_n_s8(8);
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), eight),
                vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            )
        }
        2 => {
            let qh = p.add(2).cast::<u32>().read_unaligned().to_le();
            let bytes = vld1q_u8(p.add(6));
            let mask = vld1q_u8(BIT_MASK.as_ptr());
            let x10 = vdupq_n_u8(0x10);
            // Byte k gets 0x10 when bit k of qh is set.
            let bits_lo = vcombine_u8(vdup_n_u8(qh as u8), vdup_n_u8((qh >> 8) as u8));
            let bits_hi = vcombine_u8(vdup_n_u8((qh >> 16) as u8), vdup_n_u8((qh >> 24) as u8));
            let h_lo = vandq_u8(vtstq_u8(bits_lo, mask), x10);
            let h_hi = vandq_u8(vtstq_u8(bits_hi, mask), x10);
            let lo = vorrq_u8(vandq_u8(bytes, vdupq_n_u8(0xF)), h_lo);
            let hi = vorrq_u8(vshrq_n_u8::<4>(bytes), h_hi);
            let sixteen = vdupq_n_s8(16);
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), sixteen),
                vsubq_s8(vreinterpretq_s8_u8(hi), sixteen),
            )
        }
        _ => (
            vreinterpretq_s8_u8(vld1q_u8(p.add(2))),
            vreinterpretq_s8_u8(vld1q_u8(p.add(18))),
        ),
    }
}

/// Bytes per block of the formats of [`values32`].
const fn bytes32(k: u8) -> usize {
    match k {
        0 => 18,
        2 => 22,
        _ => 34,
    }
}

/// A row of Q4_0 / Q5_0 / Q8_0 against a Q8_0 column of `nb` blocks.
///
/// # Safety
/// `w` holds `nb` blocks of the format; `a` holds `nb` blocks.
#[target_feature(enable = "neon")]
unsafe fn dot32<const K: u8>(w: *const u8, a: *const BlockQ8_0, nb: usize) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    for b in 0..nb {
        let p = w.add(b * bytes32(K));
        let y = &*a.add(b);
        let (x0, x1) = values32::<K>(p);
        let y0 = vld1q_s8(y.qs.as_ptr());
        let y1 = vld1q_s8(y.qs.as_ptr().add(16));
        let s = vcvtq_f32_s32(dot32_i8(x0, x1, y0, y1));
        let d = read_f16(std::slice::from_raw_parts(p, 2), 0) * y.d;
        acc[b % 2] = vfmaq_f32(acc[b % 2], s, vdupq_n_f32(d));
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// A row of Q4_1 against a Q8_1 column: `d*d_a*sum(q*a) + m*s` per block.
///
/// # Safety
/// `w` holds `nb` Q4_1 blocks; `a` holds `nb` blocks.
#[target_feature(enable = "neon")]
unsafe fn dot_q4_1(w: *const u8, a: *const BlockQ8_1, nb: usize) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut mins = 0.0f32;
    for b in 0..nb {
        let p = w.add(b * 20);
        let y = &*a.add(b);
        let head = std::slice::from_raw_parts(p, 4);
        let bytes = vld1q_u8(p.add(4));
        let x0 = vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(0xF)));
        let x1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(bytes));
        let y0 = vld1q_s8(y.qs.as_ptr());
        let y1 = vld1q_s8(y.qs.as_ptr().add(16));
        let s = vcvtq_f32_s32(dot32_i8(x0, x1, y0, y1));
        acc[b % 2] = vfmaq_f32(acc[b % 2], s, vdupq_n_f32(read_f16(head, 0) * y.d));
        mins += read_f16(head, 2) * y.s;
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + mins
}

/// A row of Q4_K against a Q8_K column.
///
/// # Safety
/// `w` holds `nb` Q4_K blocks; `a` holds `nb` blocks.
#[target_feature(enable = "neon")]
unsafe fn dot_q4_k(w: *const u8, a: *const BlockQ8K, nb: usize) -> f32 {
    let m4 = vdupq_n_u8(0xF);
    let mut sum = 0.0f32;
    for b in 0..nb {
        let blk = std::slice::from_raw_parts(w.add(b * 144), 144);
        let y = &*a.add(b);
        let (sc, m) = q4k_scales_mins(&blk[4..16]);
        // Activation sums per 32-value sub-block, times the mins.
        let q8sums = vpaddq_s16(
            vld1q_s16(y.bsums.as_ptr()),
            vld1q_s16(y.bsums.as_ptr().add(8)),
        );
        let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m.as_ptr())));
        let prod = vaddq_s32(
            vmull_s16(vget_low_s16(q8sums), vget_low_s16(mins)),
            vmull_high_s16(q8sums, mins),
        );
        let msum = vaddvq_s32(prod);
        let q4 = blk.as_ptr().add(16);
        let q8 = y.qs.as_ptr();
        let mut isum = 0i32;
        for j in 0..4 {
            let b0 = vld1q_u8(q4.add(32 * j));
            let b1 = vld1q_u8(q4.add(32 * j + 16));
            let lo = dot32_i8(
                vreinterpretq_s8_u8(vandq_u8(b0, m4)),
                vreinterpretq_s8_u8(vandq_u8(b1, m4)),
                vld1q_s8(q8.add(64 * j)),
                vld1q_s8(q8.add(64 * j + 16)),
            );
            let hi = dot32_i8(
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(b0)),
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(b1)),
                vld1q_s8(q8.add(64 * j + 32)),
                vld1q_s8(q8.add(64 * j + 48)),
            );
            isum += vaddvq_s32(lo) * sc[2 * j] as i32 + vaddvq_s32(hi) * sc[2 * j + 1] as i32;
        }
        let d = read_f16(blk, 0) * y.d;
        let dmin = read_f16(blk, 2) * y.d;
        sum += d * isum as f32 - dmin * msum as f32;
    }
    sum
}

/// A row of Q6_K against a Q8_K column.
///
/// # Safety
/// `w` holds `nb` Q6_K blocks; `a` holds `nb` blocks.
#[target_feature(enable = "neon")]
unsafe fn dot_q6_k(w: *const u8, a: *const BlockQ8K, nb: usize) -> f32 {
    let m4 = vdupq_n_u8(0xF);
    let m3 = vdupq_n_u8(3);
    let off = vdupq_n_s8(32);
    let mut sum = 0.0f32;
    for b in 0..nb {
        let p = w.add(b * 210);
        let y = &*a.add(b);
        let mut isum = vdupq_n_s32(0);
        for half in 0..2 {
            let ql = p.add(64 * half);
            let qh = p.add(128 + 32 * half);
            let sc = p.add(192 + 8 * half).cast::<i8>();
            let q8 = y.qs.as_ptr().add(128 * half);
            for l16 in 0..2 {
                let ql0 = vld1q_u8(ql.add(16 * l16));
                let ql1 = vld1q_u8(ql.add(32 + 16 * l16));
                let h = vld1q_u8(qh.add(16 * l16));
                // The four 16-value groups of this half, as signed values.
                let q = [
                    vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(h, m3))),
                    vorrq_u8(
                        vandq_u8(ql1, m4),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(h), m3)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(ql0),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(h), m3)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(h))),
                ];
                for (g, &qg) in q.iter().enumerate() {
                    let x = vsubq_s8(vreinterpretq_s8_u8(qg), off);
                    let yv = vld1q_s8(q8.add(32 * g + 16 * l16));
                    let s = vpaddlq_s16(vmull_s8(vget_low_s8(x), vget_low_s8(yv)));
                    let s = vpadalq_s16(s, vmull_high_s8(x, yv));
                    isum = vmlaq_n_s32(isum, s, *sc.add(l16 + 2 * g) as i32);
                }
            }
        }
        let d = read_f16(std::slice::from_raw_parts(p.add(208), 2), 0) * y.d;
        sum += d * vaddvq_s32(isum) as f32;
    }
    sum
}

/// A row of F32 weights (possibly unaligned) against f32 activations.
///
/// # Safety
/// `w` holds `cols` f32 values; `x` holds `cols` values.
#[target_feature(enable = "neon")]
unsafe fn dot_f32(w: *const u8, x: *const f32, cols: usize) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let main = cols / 8 * 8;
    let mut k = 0;
    while k < main {
        for h in 0..2 {
            let wv = vreinterpretq_f32_u8(vld1q_u8(w.add(4 * (k + 4 * h))));
            acc[h] = vfmaq_f32(acc[h], wv, vld1q_f32(x.add(k + 4 * h)));
        }
        k += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for k in main..cols {
        s += w.add(4 * k).cast::<f32>().read_unaligned() * *x.add(k);
    }
    s
}

/// A row of F16 weights against f32 activations (converted eight at a time:
/// the f16 vector types are not stable in Rust yet).
///
/// # Safety
/// `w` holds `cols` f16 values; `x` holds `cols` values.
#[target_feature(enable = "neon")]
unsafe fn dot_f16(w: *const u8, x: *const f32, cols: usize) -> f32 {
    let row = std::slice::from_raw_parts(w, 2 * cols);
    let mut acc = [vdupq_n_f32(0.0); 2];
    let main = cols / 8 * 8;
    let mut buf = [0.0f32; 8];
    let mut k = 0;
    while k < main {
        for (i, v) in buf.iter_mut().enumerate() {
            *v = read_f16(row, 2 * (k + i));
        }
        for h in 0..2 {
            let wv = vld1q_f32(buf.as_ptr().add(4 * h));
            acc[h] = vfmaq_f32(acc[h], wv, vld1q_f32(x.add(k + 4 * h)));
        }
        k += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for k in main..cols {
        s += read_f16(row, 2 * k) * *x.add(k);
    }
    s
}

// ---------------------------------------------------------------------------
// Activation quantizers, bit-identical to the scalar ones in `crate::quant`.

/// Quantizes the 32 floats at `x` into `qs`: returns the unrounded scale
/// and the sum of the quantized values.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quantize32(x: *const f32, qs: *mut i8) -> (f32, i32) {
    let mut v = [vdupq_n_f32(0.0); 8];
    for (k, vk) in v.iter_mut().enumerate() {
        *vk = vld1q_f32(x.add(4 * k));
    }
    let mut m = vabsq_f32(v[0]);
    for vk in &v[1..] {
        m = vmaxq_f32(m, vabsq_f32(*vk));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = vdupq_n_s32(0);
    for k in 0..4 {
        // Round to nearest, ties to even, like `f32::round_ties_even`.
        let i0 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * k], id));
        let i1 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * k + 1], id));
        sum = vaddq_s32(sum, vaddq_s32(i0, i1));
        let h = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
        vst1_s8(qs.add(8 * k), vqmovn_s16(h));
    }
    (d, vaddvq_s32(sum))
}

/// NEON version of [`crate::quant::quantize_row_q8_0`].
///
/// # Safety
/// `src.len() == 32 * dst.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    debug_assert_eq!(src.len(), dst.len() * 32);
    for (i, b) in dst.iter_mut().enumerate() {
        let (d, _) = quantize32(src.as_ptr().add(32 * i), b.qs.as_mut_ptr());
        b.d = crate::quant::round_f16(d);
    }
}

/// NEON version of [`crate::quant::quantize_row_q8_1`].
///
/// # Safety
/// `src.len() == 32 * dst.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    debug_assert_eq!(src.len(), dst.len() * 32);
    for (i, b) in dst.iter_mut().enumerate() {
        let (d, sum) = quantize32(src.as_ptr().add(32 * i), b.qs.as_mut_ptr());
        b.d = crate::quant::round_f16(d);
        b.s = crate::quant::round_f16(d * sum as f32);
    }
}

/// NEON version of [`crate::quant::quantize_row_q8_k`].
///
/// # Safety
/// `src.len() == 256 * dst.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_q8_k(src: &[f32], dst: &mut [BlockQ8K]) {
    debug_assert_eq!(src.len(), dst.len() * QK_K);
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
        let xp = x.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        for k in (0..QK_K).step_by(4) {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xp.add(k))));
        }
        let amax = vmaxvq_f32(m);
        if amax == 0.0 {
            *b = BlockQ8K::default();
            continue;
        }
        // The first value of largest magnitude, with its sign.
        let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
        let iscale = -127.0 / max;
        let top = vdupq_n_s32(127);
        for k in (0..QK_K).step_by(8) {
            let i0 = vminq_s32(
                vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xp.add(k)), iscale)),
                top,
            );
            let i1 = vminq_s32(
                vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xp.add(k + 4)), iscale)),
                top,
            );
            let h = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
            vst1_s8(b.qs.as_mut_ptr().add(k), vqmovn_s16(h));
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}
