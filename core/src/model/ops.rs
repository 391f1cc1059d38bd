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
    let mut cs = vec![(0.0, 0.0); inv_freq.len()];
    rope_cos_sin(pos, inv_freq, &mut cs);
    rope_with(head, &cs, neox);
}

/// The rotation of position `pos`, `(cos θ_i, sin θ_i)` with
/// `θ_i = pos * inv_freq[i]`, into `cs`: computed once per token and shared
/// by all its heads (see [`rope_with`]).
pub fn rope_cos_sin(pos: usize, inv_freq: &[f32], cs: &mut [(f32, f32)]) {
    for (c, &f) in cs.iter_mut().zip(inv_freq) {
        let (sin, cos) = (pos as f32 * f).sin_cos();
        *c = (cos, sin);
    }
}

/// Rotary embedding of one head by the rotation [`rope_cos_sin`] computed.
pub fn rope_with(head: &mut [f32], cs: &[(f32, f32)], neox: bool) {
    let half = cs.len();
    for (i, &(cos, sin)) in cs.iter().enumerate() {
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

/// GELU (tanh approximation, as Gemma uses) of one value, in f32.
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// GELU(gate) * up, into `gate`, as ggml computes it: the input rounded to
/// f16 and looked up in a table of [`gelu`] of every f16 value (itself
/// rounded to f16); 0 at and below -10, the identity at and above 10. One
/// load instead of a `tanh` per value, and the same values as llama.cpp.
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[to_f16(x) as usize] * u
        };
    }
}

/// `round_f16(gelu(x))` for each of the 65536 f16 bit patterns `x`, built
/// on first use (256 KiB).
fn gelu_table() -> &'static [f32] {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Box<[f32]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| round_f16(gelu(from_f16(bits))))
            .collect()
    })
}

/// `a += b`.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Log-softmax normaliser: `log(sum(exp(x)))`, computed stably.
pub fn log_sum_exp(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f16c_available() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { f16c::log_sum_exp(x) };
    }
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

/// Attention of a group of query heads that share one key/value head, over
/// rows `rows` of an f16 key and value cache: per head,
/// `out = sum_p f16(softmax(scale * q·k_p)_p) * v_p`.
///
/// `q` holds the heads one after another, `hd` values each, and `out`
/// receives them in the same layout. Row `p` of the key/value head is
/// `keys[p * stride + offset..][..hd]` (the same in `values`). `q` should
/// already be rounded to f16 (llama.cpp multiplies an f16 cache with an f16
/// query); `scores` is scratch of at least `heads * rows.len()` values.
/// Each head gets exactly what [`dot_f16`] per row, a softmax, and
/// [`axpy_f16`] of each f16-rounded weight in row order give, up to the
/// rounding of the exponentials and of their sum.
///
/// # Panics
/// If `hd` is 0 or does not divide `q.len()`, if the rows are out of range
/// of `keys` or `values`, if `rows` is empty, or if `scores` or `out` are
/// too short.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    q: &[f32],
    hd: usize,
    keys: &[u16],
    values: &[u16],
    stride: usize,
    offset: usize,
    rows: std::ops::Range<usize>,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    assert!(hd > 0 && q.len().is_multiple_of(hd), "query of whole heads");
    assert!(rows.start < rows.end, "attention over no rows");
    let last = (rows.end - 1) * stride + offset + hd;
    assert!(
        keys.len() >= last && values.len() >= last,
        "rows out of range"
    );
    assert!(offset + hd <= stride, "head wider than a row");
    let heads = q.len() / hd;
    let n = rows.end - rows.start;
    let scores = &mut scores[..heads * n];
    let out = &mut out[..heads * hd];
    #[cfg(target_arch = "x86_64")]
    if f16c_available() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked above); the
        // bounds of every row and the buffer lengths were checked above.
        unsafe {
            f16c::attend(
                q, hd, keys, values, stride, offset, rows, scale, scores, out,
            )
        };
        return;
    }
    let row = |p: usize| p * stride + offset..p * stride + offset + hd;
    for ((qh, sc), oh) in q
        .chunks_exact(hd)
        .zip(scores.chunks_exact_mut(n))
        .zip(out.chunks_exact_mut(hd))
    {
        let mut max = f32::NEG_INFINITY;
        for (j, s) in sc.iter_mut().enumerate() {
            *s = dot_f16(qh, &keys[row(rows.start + j)]) * scale;
            max = max.max(*s);
        }
        let inv = softmax_inv(sc, max);
        oh.fill(0.0);
        for (j, &s) in sc.iter().enumerate() {
            axpy_f16(oh, round_f16(s * inv), &values[row(rows.start + j)]);
        }
    }
}

/// Replaces each score by `exp(s - max)` and returns `1 / sum` (summed in f64).
#[inline]
fn softmax_inv(sc: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f64;
    for s in sc.iter_mut() {
        *s = (*s - max).exp();
        sum += *s as f64;
    }
    (1.0 / sum) as f32
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

    /// Sum of the 8 lanes, in the order [`dot`] adds them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(acc: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Eight f16 values at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }

    /// [`super::attend_f16`] with every row in bounds: the heads go through
    /// in groups of up to four, so that each key and value is converted from
    /// f16 once per group.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available; rows `rows` of `keys` and `values` (at
    /// `p * stride + offset`, `hd` values) in bounds; `q.len() == out.len()`
    /// is a multiple of `hd`; `sc.len() == q.len() / hd * rows.len()`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend(
        q: &[f32],
        hd: usize,
        keys: &[u16],
        values: &[u16],
        stride: usize,
        offset: usize,
        rows: std::ops::Range<usize>,
        scale: f32,
        sc: &mut [f32],
        out: &mut [f32],
    ) {
        let n = rows.len();
        let kp = keys.as_ptr().add(rows.start * stride + offset);
        let vp = values.as_ptr().add(rows.start * stride + offset);
        let heads = q.len() / hd;
        let mut h = 0;
        while h < heads {
            let g = (heads - h).min(4);
            let (qg, sg, og) = (
                q.as_ptr().add(h * hd),
                sc.as_mut_ptr().add(h * n),
                out.as_mut_ptr().add(h * hd),
            );
            match g {
                1 => group::<1, 4>(qg, hd, kp, vp, stride, n, scale, sg, og),
                2 => group::<2, 4>(qg, hd, kp, vp, stride, n, scale, sg, og),
                3 => group::<3, 2>(qg, hd, kp, vp, stride, n, scale, sg, og),
                _ => group::<4, 2>(qg, hd, kp, vp, stride, n, scale, sg, og),
            }
            h += g;
        }
    }

    /// `G` heads (`q`, `hd` values each) against `n` rows at `kp` / `vp`,
    /// `P` rows at a time for the scores.
    ///
    /// # Safety
    /// As [`attend`]: `q` and `out` hold `G * hd` values, `sc` `G * n`, and
    /// `n` rows of `hd` values `stride` apart are readable at `kp` and `vp`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group<const G: usize, const P: usize>(
        q: *const f32,
        hd: usize,
        kp: *const u16,
        vp: *const u16,
        stride: usize,
        n: usize,
        scale: f32,
        sc: *mut f32,
        out: *mut f32,
    ) {
        let main = hd / 8 * 8;
        // The tail of `dot` (head dimensions past the last multiple of 8).
        let tail = |qh: *const f32, k: *const u16, mut sum: f32| {
            for i in main..hd {
                sum += *qh.add(i) * super::from_f16(*k.add(i));
            }
            sum
        };

        // Scores: `P` rows × `G` heads of independent FMA chains.
        let mut j = 0;
        while j < n {
            let p = P.min(n - j);
            if p == P {
                let mut a = [[_mm256_setzero_ps(); P]; G];
                let mut i = 0;
                while i < main {
                    let mut k = [_mm256_setzero_ps(); P];
                    for (r, kr) in k.iter_mut().enumerate() {
                        *kr = load_f16(kp.add((j + r) * stride + i));
                    }
                    for (g, ag) in a.iter_mut().enumerate() {
                        let x = _mm256_loadu_ps(q.add(g * hd + i));
                        for (r, ar) in ag.iter_mut().enumerate() {
                            *ar = _mm256_fmadd_ps(x, k[r], *ar);
                        }
                    }
                    i += 8;
                }
                for (g, ag) in a.iter().enumerate() {
                    for (r, ar) in ag.iter().enumerate() {
                        let k = kp.add((j + r) * stride);
                        *sc.add(g * n + j + r) = tail(q.add(g * hd), k, hsum(*ar)) * scale;
                    }
                }
            } else {
                for r in j..n {
                    let k = kp.add(r * stride);
                    for g in 0..G {
                        let qh = q.add(g * hd);
                        let mut a = _mm256_setzero_ps();
                        let mut i = 0;
                        while i < main {
                            a = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(i)), load_f16(k.add(i)), a);
                            i += 8;
                        }
                        *sc.add(g * n + r) = tail(qh, k, hsum(a)) * scale;
                    }
                }
            }
            j += p;
        }

        // Softmax weights, rounded to f16 (to nearest even, as `to_f16`).
        for g in 0..G {
            let s = std::slice::from_raw_parts_mut(sc.add(g * n), n);
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let inv = _mm256_set1_ps(exp_sum_inv(s, max));
            const RND: i32 = _MM_FROUND_TO_NEAREST_INT;
            let mut j = 0;
            while j + 8 <= n {
                let p = s.as_mut_ptr().add(j);
                let w = _mm256_mul_ps(_mm256_loadu_ps(p), inv);
                _mm256_storeu_ps(p, _mm256_cvtph_ps(_mm256_cvtps_ph::<RND>(w)));
                j += 8;
            }
            let inv = _mm256_cvtss_f32(inv);
            for v in &mut s[j..] {
                *v = super::round_f16(*v * inv);
            }
        }

        // Weighted values: `K` vectors of 8 dimensions per head stay in
        // registers while the rows go by; then 8 at a time; then the tail.
        let mut i = 0;
        let wide = if G == 1 { 64 } else { 16 };
        while i + wide <= main {
            if G == 1 {
                weighted::<G, 8>(vp, stride, n, sc, i, hd, out);
            } else {
                weighted::<G, 2>(vp, stride, n, sc, i, hd, out);
            }
            i += wide;
        }
        while i < main {
            weighted::<G, 1>(vp, stride, n, sc, i, hd, out);
            i += 8;
        }
        for i in main..hd {
            for g in 0..G {
                let mut acc = 0f32;
                for j in 0..n {
                    acc += *sc.add(g * n + j) * super::from_f16(*vp.add(j * stride + i));
                }
                *out.add(g * hd + i) = acc;
            }
        }
    }

    /// Dimensions `i..i + 8 * K` of the `G` heads' outputs: the sum over
    /// the `n` rows of each head's weight times the row's values.
    ///
    /// # Safety
    /// As [`group`], with `i + 8 * K <= hd`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted<const G: usize, const K: usize>(
        vp: *const u16,
        stride: usize,
        n: usize,
        sc: *const f32,
        i: usize,
        hd: usize,
        out: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); K]; G];
        for j in 0..n {
            let v = vp.add(j * stride + i);
            let mut x = [_mm256_setzero_ps(); K];
            for (k, xk) in x.iter_mut().enumerate() {
                *xk = load_f16(v.add(8 * k));
            }
            for (g, ag) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*sc.add(g * n + j));
                for (k, a) in ag.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, x[k], *a);
                }
            }
        }
        for (g, ag) in acc.iter().enumerate() {
            for (k, a) in ag.iter().enumerate() {
                _mm256_storeu_ps(out.add(g * hd + i + 8 * k), *a);
            }
        }
    }

    /// [`exp_sum_inv`], for the tests.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    #[cfg(test)]
    pub unsafe fn exp_sum_inv_for_tests(s: &mut [f32], max: f32) -> f32 {
        exp_sum_inv(s, max)
    }

    /// [`super::log_sum_exp`] eight values at a time (a vocabulary's worth
    /// of logits per sampled token).
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn log_sum_exp(x: &[f32]) -> f32 {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut j = 0;
        while j + 8 <= x.len() {
            m = _mm256_max_ps(m, _mm256_loadu_ps(x.as_ptr().add(j)));
            j += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let max = lanes
            .iter()
            .chain(&x[j..])
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return max;
        }
        let mv = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut j = 0;
        while j + 8 <= x.len() {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(j)), mv));
            sum = _mm256_add_ps(sum, e);
            j += 8;
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        let mut total: f32 = lanes.iter().sum();
        for v in &x[j..] {
            total += (v - max).exp();
        }
        max + total.ln()
    }

    /// Replaces each score `s` by `exp(s - max)` and returns `1 / sum`
    /// (summed in f64), eight scores at a time.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn exp_sum_inv(s: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_pd();
        let mut j = 0;
        while j + 8 <= s.len() {
            let p = s.as_mut_ptr().add(j);
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(p), m));
            _mm256_storeu_ps(p, e);
            sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
            j += 8;
        }
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), sum);
        let mut total = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
        for v in &mut s[j..] {
            *v = (*v - max).exp();
            total += *v as f64;
        }
        (1.0 / total) as f32
    }

    /// `e^x` for `x <= 0` (the shifted scores of a softmax), within about
    /// 2 ulp of `f32::exp`; values below -87 give about 1.6e-38 instead of
    /// smaller numbers or 0. The reduction `x = n ln2 + b` and the
    /// polynomial are those of ggml's `ggml_v_expf`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000)); // 1.5 * 2^23
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r); // log2(e)
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(f32::from_bits(0x35bf_be8e)), // ln2, low part
            _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x), // ln2, high part
        );
        // 2^n, from the integer in the low bits of `z`.
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(
                    _mm256_set1_ps(f32::from_bits(0x3c07_2010)),
                    b,
                    _mm256_set1_ps(f32::from_bits(0x3d2b_9f17)),
                ),
                u,
                _mm256_fmadd_ps(
                    _mm256_set1_ps(f32::from_bits(0x3e2a_af33)),
                    b,
                    _mm256_set1_ps(f32::from_bits(0x3eff_fedb)),
                ),
            ),
            u,
            _mm256_mul_ps(_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), b),
        );
        _mm256_fmadd_ps(j, k, k)
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

    #[test]
    fn fused_attention_matches_its_definition() {
        // Head widths with and without wide blocks and a scalar tail; row
        // counts with and without remainders; groups of 1 to 6 heads.
        for hd in [2usize, 8, 46, 64, 136] {
            let stride = hd * 3 + 2;
            let offset = hd + 1;
            let rows = 23;
            let keys: Vec<u16> = (0..rows * stride)
                .map(|i| to_f16(((i * 7 % 31) as f32 * 0.13).sin() * 2.0))
                .collect();
            let values: Vec<u16> = (0..rows * stride)
                .map(|i| to_f16(((i * 5 % 29) as f32 * 0.21).cos() * 1.5))
                .collect();
            for heads in 1..=6 {
                let q: Vec<f32> = (0..heads * hd)
                    .map(|i| round_f16((i as f32 * 0.53).sin() * 3.0))
                    .collect();
                for range in [0..1, 0..5, 3..12, 0..rows] {
                    let row = |p: usize| p * stride + offset..p * stride + offset + hd;
                    let mut expected = vec![0f32; heads * hd];
                    for (qh, eh) in q.chunks_exact(hd).zip(expected.chunks_exact_mut(hd)) {
                        let sc: Vec<f32> = range
                            .clone()
                            .map(|p| dot_f16(qh, &keys[row(p)]) * 0.125)
                            .collect();
                        let max = sc.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                        let e: Vec<f64> = sc.iter().map(|&s| ((s - max) as f64).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for (j, &w) in e.iter().enumerate() {
                            let w = (w / sum) as f32;
                            axpy_f16(eh, w, &values[row(range.start + j)]);
                        }
                    }
                    let mut scores = vec![0f32; heads * rows];
                    let mut out = vec![f32::NAN; heads * hd];
                    attend_f16(
                        &q,
                        hd,
                        &keys,
                        &values,
                        stride,
                        offset,
                        range.clone(),
                        0.125,
                        &mut scores,
                        &mut out,
                    );
                    // The weights are rounded to f16 (relative error 2^-11).
                    for (k, (a, b)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - b).abs() <= 2e-3 * (1.0 + b.abs()),
                            "hd {hd}, {heads} heads, rows {range:?}, [{k}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_close_to_exp() {
        if !f16c_available() {
            return;
        }
        // Below -87 (far under the largest score) the result is clamped to
        // about 1.6e-38, which no f16 weight can tell from 0.
        let mut s: Vec<f32> = [-100.0, -300.0, f32::MIN]
            .into_iter()
            .chain((0..4000).map(|i| -(i as f32) * 0.0217))
            .collect();
        let orig = s.clone();
        // SAFETY: the features were checked above.
        let inv = unsafe { f16c::exp_sum_inv_for_tests(&mut s, 0.0) };
        let mut sum = 0f64;
        for (&e, &x) in s.iter().zip(&orig) {
            if x < -87.0 {
                assert!((0.0..2e-38).contains(&e), "exp({x}) = {e}");
            } else {
                let want = x.exp();
                let tol = 4.0 * f32::EPSILON * want;
                assert!((e - want).abs() <= tol, "exp({x}) = {e}, not {want}");
            }
            sum += e as f64;
        }
        assert!(((1.0 / sum) as f32 - inv).abs() <= f32::EPSILON * inv);
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
    fn gelu_mul_is_the_f16_rounded_definition() {
        // Against GELU in f64 on inputs across the range, the saturation
        // boundaries included: within the f16 rounding of input and output.
        let gelu64 = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        };
        let xs: Vec<f32> = (-1300..=1300)
            .map(|i| i as f32 * 0.01)
            .chain([-10.0, 10.0, -50.0, 50.0])
            .collect();
        let up: Vec<f32> = xs
            .iter()
            .map(|&x| if x > 0.0 { 2.0 } else { -0.5 })
            .collect();
        let mut got = xs.clone();
        gelu_mul(&mut got, &up);
        for ((&x, &u), &g) in xs.iter().zip(&up).zip(&got) {
            let want = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                (x * u) as f64
            } else {
                gelu64(x as f64) * u as f64
            };
            // Rounding x to f16 moves it by up to 2^-11 relative, GELU's slope
            // is at most ~1.13, and the result's own rounding adds 2^-11.
            let tol = 2.5e-3 * (want.abs() + (x as f64 * u as f64).abs()) + 1e-7;
            assert!(
                (g as f64 - want).abs() <= tol,
                "gelu({x}) * {u}: {g}, want {want}"
            );
        }
        // Exactly the table ggml uses: f16(gelu(f16(x))).
        let x = 0.7317f32;
        let mut g = [x];
        gelu_mul(&mut g, &[1.0]);
        assert_eq!(g[0], round_f16(gelu(round_f16(x))));
    }

    #[test]
    fn rope_with_shared_rotation_equals_rope() {
        let f = rope_inv_freq(16, 10_000.0, 1.0);
        let orig: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        // Opaque, so that no call's sines are folded at compile time.
        let pos = std::hint::black_box(123);
        let mut cs = vec![(0.0, 0.0); f.len()];
        rope_cos_sin(pos, &f, &mut cs);
        for neox in [false, true] {
            let mut a = orig.clone();
            rope(&mut a, pos, &f, neox);
            let mut b = orig.clone();
            rope_with(&mut b, &cs, neox);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let l = log_sum_exp(&[0.0, 0.0]);
        assert!((l - 2f32.ln()).abs() < 1e-6);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn log_sum_exp_matches_f64_over_a_vocabulary() {
        // Logits of a vocabulary-sized row, with an odd tail.
        let x: Vec<f32> = (0..49_157)
            .map(|i| ((i * 7919 % 10_007) as f32 / 10_007.0 - 0.5) * 40.0)
            .collect();
        let max = x
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |a, b| a.max(b as f64));
        let exact = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let got = log_sum_exp(&x) as f64;
        assert!((got - exact).abs() < 1e-4, "{got} vs {exact}");
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 9]), f32::NEG_INFINITY);
        assert!((log_sum_exp(&[0.0; 17]) - 17f32.ln()).abs() < 1e-6);
    }
}
