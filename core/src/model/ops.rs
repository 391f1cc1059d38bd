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

/// Dot product of two f32 slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `acc = acc * scale + v * w` over a row.
#[inline]
pub fn scale_add(acc: &mut [f32], scale: f32, v: &[f32], w: f32) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = *a * scale + x * w;
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
    fn dot_and_log_sum_exp() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
        let l = log_sum_exp(&[0.0, 0.0]);
        assert!((l - 2f32.ln()).abs() < 1e-6);
    }
}
