//! Tests of the block formats, plus random data generators shared with the
//! kernel tests.

use super::*;

/// A small deterministic generator (SplitMix64), so tests need no crates.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Roughly normal (sum of uniforms), scaled by `scale`, with occasional
    /// outliers as real activations have.
    pub(crate) fn activation(&mut self, scale: f32) -> f32 {
        let g = (0..4).map(|_| self.unit()).sum::<f32>() - 2.0;
        if self.next_u64().is_multiple_of(64) {
            g * scale * 8.0
        } else {
            g * scale
        }
    }

    pub(crate) fn fill_bytes(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next_u64() as u8;
        }
    }
}

/// Random activations.
pub(crate) fn random_f32s(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.activation(scale)).collect()
}

fn put_f16(b: &mut [u8], off: usize, x: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(x).to_le_bytes());
}

/// Random bytes forming `rows × cols` valid weights of `dtype`: every bit
/// pattern of the quantized values, with finite, realistic scales.
pub(crate) fn random_weights(rng: &mut Rng, dtype: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    match dtype {
        GgmlType::F32 => random_f32s(rng, n, 0.05)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        GgmlType::F16 => random_f32s(rng, n, 0.05)
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => {
            let mut data = vec![0u8; byte_len(dtype, n).unwrap()];
            rng.fill_bytes(&mut data);
            for b in data.chunks_exact_mut(dtype.block_bytes()) {
                let s = rng.range(0.002, 0.03) * if rng.unit() < 0.5 { -1.0 } else { 1.0 };
                match dtype {
                    GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put_f16(b, 0, s),
                    GgmlType::Q4_1 => {
                        put_f16(b, 0, s.abs());
                        put_f16(b, 2, -rng.range(0.0, 0.2));
                    }
                    GgmlType::Q4K => {
                        put_f16(b, 0, s.abs() / 16.0);
                        put_f16(b, 2, rng.range(0.0, 0.01));
                    }
                    GgmlType::Q6K => put_f16(b, 208, s / 64.0),
                    t => panic!("no random generator for {t}"),
                }
            }
            data
        }
    }
}

fn deq(dtype: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize(dtype, data, &mut out).unwrap();
    out
}

#[test]
fn dequantize_checks_sizes_and_types() {
    let mut out = [0.0f32; 32];
    assert_eq!(
        dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out),
        Err(QuantError::SizeMismatch {
            dtype: GgmlType::Q4_0,
            elements: 32,
            expected: 18,
            actual: 17
        })
    );
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 18], &mut out[..31]),
        Err(QuantError::PartialBlock {
            elements: 31,
            block_len: 32,
            ..
        })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q2K, &[0u8; 84], &mut [0.0; 256]),
        Err(QuantError::Unsupported {
            dtype: GgmlType::Q2K,
            ..
        })
    ));
    let msg = dequantize(GgmlType::Q8_0, &[0u8; 35], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q8_0") && msg.contains("34") && msg.contains("35"),
        "{msg}"
    );
    // Empty is fine.
    dequantize(GgmlType::Q4K, &[], &mut []).unwrap();
}

#[test]
fn quantize_checks_types_and_lengths() {
    assert!(matches!(
        quantize(GgmlType::Q4K, &[0.0; 256]),
        Err(QuantError::Unsupported {
            dtype: GgmlType::Q4K,
            ..
        })
    ));
    assert!(matches!(
        quantize(GgmlType::Q8_0, &[0.0; 33]),
        Err(QuantError::PartialBlock { elements: 33, .. })
    ));
    assert_eq!(quantize(GgmlType::F16, &[1.0; 3]).unwrap().len(), 6);
}

#[test]
fn dequantize_known_blocks() {
    // Q4_0: d = 0.5, nibbles j and 15 - j.
    let mut b = vec![0u8; 18];
    put_f16(&mut b, 0, 0.5);
    for j in 0..16 {
        b[2 + j] = j as u8 | ((15 - j as u8) << 4);
    }
    let y = deq(GgmlType::Q4_0, &b, 32);
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
    }

    // Q4_1: value = d * q + m.
    let mut b = vec![0u8; 20];
    put_f16(&mut b, 0, 0.25);
    put_f16(&mut b, 2, -1.0);
    for j in 0..16 {
        b[4 + j] = j as u8 | (3 << 4);
    }
    let y = deq(GgmlType::Q4_1, &b, 32);
    for j in 0..16 {
        assert_eq!(y[j], j as f32 * 0.25 - 1.0);
        assert_eq!(y[j + 16], 3.0 * 0.25 - 1.0);
    }

    // Q5_0: fifth bits set for even elements.
    let mut b = vec![0u8; 22];
    put_f16(&mut b, 0, 1.0);
    b[2..6].copy_from_slice(&0x5555_5555u32.to_le_bytes());
    for j in 0..16 {
        b[6 + j] = 0x21;
    }
    let y = deq(GgmlType::Q5_0, &b, 32);
    for (j, &v) in y.iter().enumerate() {
        let q = if j < 16 { 1 } else { 2 } + if j % 2 == 0 { 16 } else { 0 };
        assert_eq!(v, (q - 16) as f32, "element {j}");
    }

    // Q8_0.
    let mut b = vec![0u8; 34];
    put_f16(&mut b, 0, 2.0);
    for j in 0..32 {
        b[2 + j] = (j as i8 - 16) as u8;
    }
    let y = deq(GgmlType::Q8_0, &b, 32);
    assert!(y
        .iter()
        .enumerate()
        .all(|(j, &v)| v == (j as f32 - 16.0) * 2.0));

    // Q6_K: all q6 = 33 (value +1), scales = sub-block index + 1.
    let mut b = vec![0u8; 210];
    for v in &mut b[..128] {
        *v = 0x11; // low 4 bits = 1 in both nibbles
    }
    for v in &mut b[128..192] {
        *v = 0b1010_1010; // upper 2 bits = 2 for all four groups
    }
    for (i, v) in b[192..208].iter_mut().enumerate() {
        *v = i as u8 + 1;
    }
    put_f16(&mut b, 208, 0.5);
    let y = deq(GgmlType::Q6K, &b, 256);
    for (j, &v) in y.iter().enumerate() {
        assert_eq!(v, 0.5 * (j / 16 + 1) as f32 * 1.0, "element {j}");
    }

    // Q4_K: scales 1..=8, mins 0, nibbles 1 (low) and 2 (high).
    let mut b = vec![0u8; 144];
    put_f16(&mut b, 0, 1.0);
    put_f16(&mut b, 2, 1.0);
    let sc: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    let mins: [u8; 8] = [0, 1, 0, 1, 0, 1, 0, 40];
    b[4..8].copy_from_slice(&sc[..4]);
    b[8..12].copy_from_slice(&mins[..4]);
    for j in 4..8 {
        b[8 + j] = (sc[j] & 0xF) | ((mins[j] & 0xF) << 4);
        b[4 + j - 4] |= (sc[j] >> 4) << 6;
        b[4 + j] |= (mins[j] >> 4) << 6;
    }
    for v in &mut b[16..144] {
        *v = 0x21;
    }
    let y = deq(GgmlType::Q4K, &b, 256);
    for (j, &v) in y.iter().enumerate() {
        let sub = j / 32;
        let q = if sub % 2 == 0 { 1.0 } else { 2.0 };
        assert_eq!(v, sc[sub] as f32 * q - mins[sub] as f32, "element {j}");
    }
}

#[test]
fn q4k_scale_unpacking_matches_ggml_formula() {
    let mut rng = Rng::new(7);
    for _ in 0..100 {
        let mut q = [0u8; 12];
        rng.fill_bytes(&mut q);
        let (sc, m) = q4k_scales_mins(&q);
        for j in 0..8 {
            let (d, mm) = if j < 4 {
                (q[j] & 63, q[j + 4] & 63)
            } else {
                (
                    (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
                    (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
                )
            };
            assert_eq!((sc[j], m[j]), (d, mm));
        }
    }
}

#[test]
fn round_trips_stay_within_quantization_error() {
    let mut rng = Rng::new(1);
    let n = 32 * 64;
    let mut x = random_f32s(&mut rng, n, 1.0);
    x[..32].fill(0.0); // an all-zero block
    x[32..64].fill(-3.0); // a constant block
    for dtype in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ] {
        let bytes = quantize(dtype, &x).unwrap();
        assert_eq!(bytes.len(), byte_len(dtype, n).unwrap());
        let y = deq(dtype, &bytes, n);
        for (bx, by) in x.chunks(32).zip(y.chunks(32)) {
            let amax = bx.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let (lo, hi) = bx
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            // Half a quantization step, plus f16 rounding of the scale(s).
            let bound = match dtype {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => amax / 1024.0,
                GgmlType::Q8_0 => amax / 127.0 * 0.5 + amax / 1024.0,
                // The side opposite the extreme value is clipped at 7
                // steps instead of 8: up to a whole step of error.
                GgmlType::Q4_0 => amax / 8.0 + amax / 512.0,
                _ => (hi - lo) / 15.0 * 0.5 + (hi - lo + lo.abs()) / 512.0,
            };
            for (&a, &b) in bx.iter().zip(by) {
                assert!(
                    (a - b).abs() <= bound * 1.0001 + 1e-7,
                    "{dtype}: {a} -> {b} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn quantize_matches_ggml_reference_rounding() {
    // Q8_0: exact halves round away from zero, like roundf.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    let b = quantize(GgmlType::Q8_0, &x).unwrap();
    assert_eq!(half::f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
    assert_eq!(&b[2..6], &[127, 3, (-3i8) as u8, 1]);

    // Q4_0: the value of largest magnitude maps to nibble 0 (-8 * d).
    let mut x = [0.0f32; 32];
    x[5] = -4.0;
    x[6] = 3.0;
    let b = quantize(GgmlType::Q4_0, &x).unwrap();
    assert_eq!(half::f16::from_le_bytes([b[0], b[1]]).to_f32(), 0.5);
    assert_eq!(b[2 + 5] & 0xF, 0);
    assert_eq!(b[2 + 6] & 0xF, 14);
    assert_eq!(b[2] & 0xF, 8);

    // Q4_1: min and max map to 0 and 15.
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let b = quantize(GgmlType::Q4_1, &x).unwrap();
    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    assert!((d - 31.0 / 15.0).abs() < 1e-3);
    assert_eq!(half::f16::from_le_bytes([b[2], b[3]]).to_f32(), 0.0);
    assert_eq!(b[4] & 0xF, 0);
    assert_eq!(b[4 + 15] >> 4, 15);
}

#[test]
fn activation_quantizers_are_consistent() {
    let mut rng = Rng::new(3);
    let mut x = random_f32s(&mut rng, 512, 2.0);
    x[32..64].fill(0.0);
    x[300] = 100.0; // an outlier in the second super-block

    let mut q0 = vec![BlockQ8_0::default(); 16];
    quantize_row_q8_0(&x, &mut q0);
    let mut q1 = vec![BlockQ8_1::default(); 16];
    quantize_row_q8_1(&x, &mut q1);
    for ((a, b), xs) in q0.iter().zip(&q1).zip(x.chunks(32)) {
        assert_eq!(a.d, b.d);
        assert_eq!(a.qs, b.qs);
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((a.d - amax / 127.0).abs() <= amax / 127.0 / 1000.0);
        let sum: i32 = a.qs.iter().map(|&q| q as i32).sum();
        assert!((b.s - a.d * sum as f32).abs() <= 1e-3 * (a.d * sum as f32).abs() + 1e-6);
        for (&v, &q) in xs.iter().zip(&a.qs) {
            assert!((v - a.d * q as f32).abs() <= amax / 254.0 + amax / 1024.0);
        }
    }
    assert_eq!(q0[1].d, 0.0);
    assert!(q0[1].qs.iter().all(|&q| q == 0));

    let mut qk = vec![BlockQ8K::default(); 2];
    quantize_row_q8_k(&x, &mut qk);
    for (b, xs) in qk.iter().zip(x.chunks(256)) {
        for (j, s) in b.bsums.iter().enumerate() {
            assert_eq!(
                *s as i32,
                b.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>()
            );
        }
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (&v, &q) in xs.iter().zip(&b.qs) {
            assert!((v - b.d * q as f32).abs() <= amax / 254.0 * 1.0001);
        }
    }
    // The outlier is positive, so ggml's convention maps it to -127.
    assert_eq!(qk[1].qs[300 - 256], -127);
    assert!(qk[1].d < 0.0);
}

#[test]
fn activation_formats_dequantize_from_ggml_bytes() {
    // Q8_1 bytes: d, s, qs; Q8_K bytes: f32 d, qs, bsums.
    let mut b = vec![0u8; 36];
    put_f16(&mut b, 0, 0.5);
    put_f16(&mut b, 2, 99.0);
    for j in 0..32 {
        b[4 + j] = (j as i8 - 3) as u8;
    }
    let y = deq(GgmlType::Q8_1, &b, 32);
    assert!(y
        .iter()
        .enumerate()
        .all(|(j, &v)| v == (j as f32 - 3.0) * 0.5));

    let mut b = vec![0u8; 292];
    b[..4].copy_from_slice(&0.25f32.to_le_bytes());
    for j in 0..256 {
        b[4 + j] = (j as u8).wrapping_sub(128);
    }
    let y = deq(GgmlType::Q8K, &b, 256);
    assert!(y
        .iter()
        .enumerate()
        .all(|(j, &v)| v == ((j as u8).wrapping_sub(128) as i8) as f32 * 0.25));
}

#[test]
fn random_weights_dequantize_to_finite_values() {
    let mut rng = Rng::new(5);
    for &dtype in SUPPORTED {
        let data = random_weights(&mut rng, dtype, 3, 512);
        let y = deq(dtype, &data, 3 * 512);
        assert!(y.iter().all(|v| v.is_finite() && v.abs() < 10.0), "{dtype}");
    }
}
