//! The 8-bit formats activations are quantized to before a quantized dot
//! product (ggml's `vec_dot_type`): Q8_0, Q8_1 and Q8_K.
//!
//! These blocks live only in scratch memory, never in files, so they are
//! plain aligned Rust structs rather than byte layouts. Their values are the
//! ones ggml computes: the f16 scales of Q8_0/Q8_1 are rounded to f16 and
//! kept as f32 so the kernels need no conversion.

use super::{round_f16, QK32, QK_K};

/// 32 activations quantized to int8 with one scale: `x[i] ≈ d * qs[i]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, rounded to f16 precision as ggml stores it.
    pub d: f32,
    /// Quantized values in `-127..=127`.
    pub qs: [i8; QK32],
}

/// A Q8_0 block that also carries `s = d * sum(qs)`, used by weights with a
/// per-block offset (Q4_1): `sum(x * (dw*q + m)) = dw*d*sum(q*qs) + m*s`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale, rounded to f16 precision.
    pub d: f32,
    /// `d * sum(qs)` (with the unrounded scale), rounded to f16 precision.
    pub s: f32,
    /// Quantized values in `-127..=127`.
    pub qs: [i8; QK32],
}

/// 256 activations for the K-quant dot products: one f32 scale and the sums
/// of each group of 16 values (used to apply the weights' block minimums).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale: `x[i] ≈ d * qs[i]`.
    pub d: f32,
    /// Quantized values in `-128..=127`.
    pub qs: [i8; QK_K],
    /// `bsums[j] = sum(qs[16*j .. 16*j + 16])`.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// Largest absolute value of `x` (0 for an empty slice).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    // Eight independent lanes so the compiler can vectorise the reduction.
    let mut m = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            m[k] = m[k].max(c[k].abs());
        }
    }
    for &v in chunks.remainder() {
        m[0] = m[0].max(v.abs());
    }
    m.iter().fold(0.0f32, |a, &b| a.max(b))
}

/// Quantizes one 32-value block the way ggml's AVX2 `quantize_row_q8_0`
/// does: scale `amax/127`, values rounded half to even. Returns the
/// unrounded scale and the sum of the quantized values.
#[inline(always)]
fn quantize_block32(src: &[f32], qs: &mut [i8; QK32]) -> (f32, i32) {
    let amax = abs_max(src);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(src) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    (d, sum)
}

/// Quantizes `src` (a whole number of 32-value blocks) to Q8_0 blocks.
///
/// # Panics
/// If `dst.len() * 32 != src.len()`.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    assert_eq!(src.len(), dst.len() * QK32, "Q8_0 activation length");
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK32)) {
        let (d, _) = quantize_block32(x, &mut b.qs);
        b.d = round_f16(d);
    }
}

/// Quantizes `src` (a whole number of 32-value blocks) to Q8_1 blocks.
///
/// # Panics
/// If `dst.len() * 32 != src.len()`.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    assert_eq!(src.len(), dst.len() * QK32, "Q8_1 activation length");
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK32)) {
        let (d, sum) = quantize_block32(x, &mut b.qs);
        b.d = round_f16(d);
        b.s = round_f16(d * sum as f32);
    }
}

/// Quantizes `src` (a whole number of 256-value super-blocks) to Q8_K blocks,
/// exactly as ggml's `quantize_row_q8_K_ref`.
///
/// # Panics
/// If `dst.len() * 256 != src.len()`.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [BlockQ8K]) {
    assert_eq!(src.len(), dst.len() * QK_K, "Q8_K activation length");
    for (b, x) in dst.iter_mut().zip(src.chunks_exact(QK_K)) {
        quantize_block_q8_k(x, b);
    }
}

/// One Q8_K super-block; shared with the SIMD quantizers' tails.
pub(crate) fn quantize_block_q8_k(x: &[f32], b: &mut BlockQ8K) {
    // The signed value of largest magnitude, the first one on ties.
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        *b = BlockQ8K::default();
        return;
    }
    // ggml maps the extreme value to -127 (not -128) so that the AVX
    // versions of some IQ kernels stay simple; we keep its numbers.
    let iscale = -127.0 / max;
    quantize_q8_k_values(x, iscale, b);
}

/// Fills `qs`, `bsums` and `d` of a Q8_K block for the given inverse scale.
#[inline(always)]
pub(crate) fn quantize_q8_k_values(x: &[f32], iscale: f32, b: &mut BlockQ8K) {
    for (q, &v) in b.qs.iter_mut().zip(x) {
        // nearest_int: round half to even, then clamp the top.
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
}
