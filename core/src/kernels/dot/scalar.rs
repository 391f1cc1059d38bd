//! Portable reference dot products, following ggml's `*_generic` kernels:
//! integer sums per block, then one float scale per block.
//!
//! These are the definition the SIMD kernels are tested against and the
//! fallback for CPUs without a SIMD backend.

#![allow(clippy::needless_range_loop)] // index loops over register tiles and block lanes read best

use std::ops::Range;

use crate::quant::{q4k_scales_mins, read_f16, read_f32, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType};

use super::super::matmul::QMatrix;
use super::Acts;

/// See [`super::dot_rows`].
pub(crate) fn dot_rows<F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: Acts,
    n: usize,
    out: &mut F,
) {
    let cols = w.cols;
    match (w.dtype, acts) {
        (GgmlType::F32, Acts::F32(x)) => each(w, rows, x, cols, n, out, dot_f32),
        (GgmlType::F16, Acts::F32(x)) => each(w, rows, x, cols, n, out, dot_f16),
        (GgmlType::Q4_0, Acts::Q8_0 { blocks: a, .. }) => {
            each(w, rows, a, cols / 32, n, out, dot_q4_0)
        }
        (GgmlType::Q5_0, Acts::Q8_0 { blocks: a, .. }) => {
            each(w, rows, a, cols / 32, n, out, dot_q5_0)
        }
        (GgmlType::Q8_0, Acts::Q8_0 { blocks: a, .. }) => {
            each(w, rows, a, cols / 32, n, out, dot_q8_0)
        }
        (GgmlType::Q4_1, Acts::Q8_1 { blocks: a, .. }) => {
            each(w, rows, a, cols / 32, n, out, dot_q4_1)
        }
        (GgmlType::Q4K, Acts::Q8K { blocks: a, .. }) => {
            each(w, rows, a, cols / 256, n, out, dot_q4_k)
        }
        (GgmlType::Q6K, Acts::Q8K { blocks: a, .. }) => {
            each(w, rows, a, cols / 256, n, out, dot_q6_k)
        }
        (t, a) => panic!("no dot product for {t} weights with {a:?} activations"),
    }
}

/// Row-outer, column-inner loop over one dot function.
#[inline(always)]
fn each<A, F: FnMut(usize, usize, f32)>(
    w: &QMatrix,
    rows: Range<usize>,
    acts: &[A],
    per_col: usize,
    n: usize,
    out: &mut F,
    dot: fn(&[u8], &[A]) -> f32,
) {
    for r in rows {
        let row = w.row(r);
        for c in 0..n {
            out(r, c, dot(row, &acts[c * per_col..(c + 1) * per_col]));
        }
    }
}

/// F32 weights · f32 activations.
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    // Eight partial sums, as the SIMD versions keep, for similar rounding.
    let mut acc = [0.0f32; 8];
    for (i, (b, &v)) in row.chunks_exact(4).zip(x).enumerate() {
        acc[i % 8] += read_f32(b, 0) * v;
    }
    acc.iter().sum()
}

/// F16 weights · f32 activations.
pub(crate) fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (i, (b, &v)) in row.chunks_exact(2).zip(x).enumerate() {
        acc[i % 8] += read_f16(b, 0) * v;
    }
    acc.iter().sum()
}

/// Q4_0 · Q8_0: `sum(d_w * d_a * sum((q - 8) * a))`.
pub(crate) fn dot_q4_0(row: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(18).zip(a) {
        let qs = &b[2..18];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((qs[j] & 0xF) as i32 - 8) * y.qs[j] as i32;
            isum += ((qs[j] >> 4) as i32 - 8) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (read_f16(b, 0) * y.d);
    }
    sum
}

/// Q4_1 · Q8_1: `sum(d_w * d_a * sum(q * a) + m_w * s_a)`.
pub(crate) fn dot_q4_1(row: &[u8], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(20).zip(a) {
        let qs = &b[4..20];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (qs[j] & 0xF) as i32 * y.qs[j] as i32;
            isum += (qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (read_f16(b, 0) * y.d) + read_f16(b, 2) * y.s;
    }
    sum
}

/// Q5_0 · Q8_0: `sum(d_w * d_a * sum((q5 - 16) * a))`.
pub(crate) fn dot_q5_0(row: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(22).zip(a) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let mut isum = 0i32;
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            isum += (((qs[j] & 0xF) as u32 | h0) as i32 - 16) * y.qs[j] as i32;
            isum += (((qs[j] >> 4) as u32 | h1) as i32 - 16) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (read_f16(b, 0) * y.d);
    }
    sum
}

/// Q8_0 · Q8_0.
pub(crate) fn dot_q8_0(row: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(34).zip(a) {
        let isum: i32 = b[2..34]
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| q as i8 as i32 * v as i32)
            .sum();
        sum += isum as f32 * (read_f16(b, 0) * y.d);
    }
    sum
}

/// Q4_K · Q8_K: per super-block
/// `d_w*d_a*sum_j(sc_j * sum(q*a)) - dmin_w*d_a*sum_j(m_j * sum(a))`,
/// where the activation sums come from `bsums`.
pub(crate) fn dot_q4_k(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(144).zip(a) {
        let (sc, m) = q4k_scales_mins(&b[4..16]);
        let qs = &b[16..144];
        let mut isum = 0i32;
        for j in 0..4 {
            let q = &qs[32 * j..32 * j + 32];
            let a = &y.qs[64 * j..64 * j + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += (q[l] & 0xF) as i32 * a[l] as i32;
                hi += (q[l] >> 4) as i32 * a[l + 32] as i32;
            }
            isum += sc[2 * j] as i32 * lo + sc[2 * j + 1] as i32 * hi;
        }
        let msum: i32 = (0..8)
            .map(|j| m[j] as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32))
            .sum();
        sum += read_f16(b, 0) * y.d * isum as f32 - read_f16(b, 2) * y.d * msum as f32;
    }
    sum
}

/// Q6_K · Q8_K: per super-block `d_w*d_a*sum_j(sc_j * sum((q6 - 32) * a))`
/// over sixteen 16-value sub-blocks.
pub(crate) fn dot_q6_k(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(210).zip(a) {
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &b[64 * half..64 * half + 64];
            let qh = &b[128 + 32 * half..128 + 32 * half + 32];
            let sc = &b[192 + 8 * half..192 + 8 * half + 8];
            let a = &y.qs[128 * half..128 * half + 128];
            // Sub-block sums, indexed like the scales.
            let mut sub = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                sub[is] += q1 * a[l] as i32;
                sub[is + 2] += q2 * a[l + 32] as i32;
                sub[is + 4] += q3 * a[l + 64] as i32;
                sub[is + 6] += q4 * a[l + 96] as i32;
            }
            for (s, &scale) in sub.iter().zip(sc) {
                isum += s * scale as i8 as i32;
            }
        }
        sum += read_f16(b, 208) * y.d * isum as f32;
    }
    sum
}
