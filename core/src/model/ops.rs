//! Element-wise and per-row f32 operations of the forward pass. They are a
//! small share of the time next to the quantized matrix products.

/// In-place RMSNorm of one row: `x * w / sqrt(mean(x^2) + eps)`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = *v * inv * w;
    }
}

/// RMSNorm of `src` into `dst`.
pub fn rms_norm_into(dst: &mut [f32], src: &[f32], w: &[f32], eps: f32) {
    dst.copy_from_slice(src);
    rms_norm(dst, w, eps);
}

/// Rotary embedding of one head at position `pos`.
/// `inv_freq[i] = base^(-2i/rope_dims)`, already multiplied by the position scale.
pub fn rope(head: &mut [f32], pos: usize, inv_freq: &[f32], neox: bool) {
    let half = inv_freq.len();
    for (i, &f) in inv_freq.iter().enumerate() {
        let theta = pos as f32 * f;
        let (sin, cos) = theta.sin_cos();
        let (a, b) = if neox {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

/// The rope frequencies for a head of `rope_dims` rotated dimensions.
pub fn rope_inv_freq(rope_dims: usize, base: f32, scale: f32) -> Vec<f32> {
    (0..rope_dims / 2)
        .map(|i| scale * base.powf(-2.0 * i as f32 / rope_dims as f32))
        .collect()
}

/// SiLU(gate) * up, into `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// GELU(gate) * up (tanh approximation, as Gemma and ggml use), into `gate`.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh()) * u;
    }
}

/// `a += b`.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Log-softmax normaliser: `log(sum(exp(x)))`, computed stably.
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// f32 → IEEE f16 bits, rounding to nearest even (as F16C and ggml do).
#[inline]
pub fn to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// IEEE f16 bits → f32.
#[inline]
pub fn from_f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// `x` rounded to the nearest f16 value.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    from_f16(to_f16(x))
}

/// Dot product of f32 values with f16 values, accumulated in f32.
#[inline]
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f16c_available() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
        return unsafe { f16c::dot(a, b) };
    }
    a.iter().zip(b).map(|(x, &y)| x * from_f16(y)).sum()
}

/// `acc += w * v` for f16 values `v`.
#[inline]
pub fn axpy_f16(acc: &mut [f32], w: f32, v: &[u16]) {
    #[cfg(target_arch = "x86_64")]
    if f16c_available() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
        return unsafe { f16c::axpy(acc, w, v) };
    }
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += w * from_f16(x);
    }
}

#[cfg(target_arch = "x86_64")]
fn f16c_available() -> bool {
    use std::sync::OnceLock;
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n bounds both loads.
            let x = _mm256_loadu_ps(a.as_ptr().add(i));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(x, y, acc);
            i += 8;
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut sum = _mm_cvtss_f32(s);
        while i < n {
            sum += a[i] * super::from_f16(b[i]);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(acc: &mut [f32], w: f32, v: &[u16]) {
        let n = acc.len().min(v.len());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n bounds the loads and the store.
            let y = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
            let p = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(wv, y, _mm256_loadu_ps(p)));
            i += 8;
        }
        while i < n {
            acc[i] += w * super::from_f16(v[i]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod f16_tests {
    use super::*;

    #[test]
    fn f16_dot_and_axpy_match_the_scalar_definition() {
        let a: Vec<f32> = (0..45).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<u16> = (0..45)
            .map(|i| to_f16((i as f32 * 0.11).cos() * 3.0))
            .collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, &y)| x * from_f16(y)).sum();
        assert!((dot_f16(&a, &b) - expected).abs() < 1e-4);
        let mut acc = a.clone();
        axpy_f16(&mut acc, 0.5, &b);
        for i in 0..45 {
            assert!((acc[i] - (a[i] + 0.5 * from_f16(b[i]))).abs() < 1e-6);
        }
        assert_eq!(round_f16(1.0 + 1.0 / 4096.0), 1.0, "ties round to even");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let mut x = vec![1.0, -2.0, 3.0, 4.0];
        rms_norm(&mut x, &[1.0, 1.0, 2.0, 0.5], 0.0);
        let r = (30.0f32 / 4.0).sqrt();
        assert!((x[0] - 1.0 / r).abs() < 1e-6);
        assert!((x[2] - 6.0 / r).abs() < 1e-6);
        assert!((x[3] - 2.0 / r).abs() < 1e-6);
    }

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let f = rope_inv_freq(8, 10_000.0, 1.0);
        let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        for neox in [false, true] {
            let mut h = orig.clone();
            rope(&mut h, 0, &f, neox);
            assert_eq!(h, orig);
            rope(&mut h, 17, &f, neox);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = h.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let l = log_sum_exp(&[0.0, 0.0]);
        assert!((l - 2f32.ln()).abs() < 1e-6);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }
}
