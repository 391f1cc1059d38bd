//! SIMD kernels against the scalar reference on random data.

use super::*;
use crate::kernels::PackedRows;
use crate::quant::tests::{random_f32s, random_weights, Rng};
use crate::quant::{dequantize, GgmlType, SUPPORTED};

/// Activations of `n` columns of `cols` values for `dtype`, quantized with
/// the scalar reference.
struct TestActs {
    f32: Vec<f32>,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8K>,
    sums_0: Vec<f32>,
    sums_1: Vec<f32>,
    scales_0: Vec<f32>,
    scales_1: Vec<f32>,
    groups_0: Vec<Block8x8>,
    groups_1: Vec<Block8x8>,
    groups_k: Vec<Block8x8K>,
}

impl TestActs {
    fn new(x: Vec<f32>, n: usize) -> TestActs {
        let nb = x.len() / 32;
        let mut q8_0 = vec![BlockQ8_0::default(); nb];
        let mut q8_1 = vec![BlockQ8_1::default(); nb];
        let mut q8_k = vec![BlockQ8K::default(); x.len() / 256];
        let (mut sums_0, mut sums_1) = (vec![0.0; nb], vec![0.0; nb]);
        let (mut scales_0, mut scales_1) = (vec![0.0; nb], vec![0.0; nb]);
        if x.len().is_multiple_of(32) {
            crate::quant::quantize_row_q8_0(&x, &mut q8_0);
            crate::quant::quantize_row_q8_1(&x, &mut q8_1);
            block_sums(&q8_0, &mut sums_0);
            block_sums(&q8_1, &mut sums_1);
            block_scales(&q8_0, &mut scales_0);
            block_scales(&q8_1, &mut scales_1);
        }
        // Column groups for every `n > 1`, as `matmul` builds them.
        let (mut groups_0, mut groups_1) = (Vec::new(), Vec::new());
        if n > 1 && x.len().is_multiple_of(32) {
            let per_col = nb / n;
            groups_0 = vec![Block8x8::default(); n.div_ceil(8) * per_col];
            groups_1 = groups_0.clone();
            interleave_8x8(&q8_0, &scales_0, &sums_0, n, per_col, 0, &mut groups_0);
            interleave_8x8(&q8_1, &scales_1, &sums_1, n, per_col, 0, &mut groups_1);
        }
        let mut groups_k = Vec::new();
        if x.len().is_multiple_of(256) {
            crate::quant::quantize_row_q8_k(&x, &mut q8_k);
            if n > 1 {
                let per_col = q8_k.len() / n;
                groups_k = vec![Block8x8K::default(); n.div_ceil(8) * per_col];
                interleave_8x8_k(&q8_k, n, per_col, 0, &mut groups_k);
            }
        }
        TestActs {
            f32: x,
            q8_0,
            q8_1,
            q8_k,
            sums_0,
            sums_1,
            scales_0,
            scales_1,
            groups_0,
            groups_1,
            groups_k,
        }
    }

    fn for_type(&self, dtype: GgmlType) -> Acts<'_> {
        match dtype {
            GgmlType::F32 | GgmlType::F16 => Acts::F32(&self.f32),
            GgmlType::Q4_1 => Acts::Q8_1 {
                blocks: &self.q8_1,
                sums: &self.sums_1,
                scales: &self.scales_1,
                groups: &self.groups_1,
            },
            GgmlType::Q4K | GgmlType::Q6K => Acts::Q8K {
                blocks: &self.q8_k,
                groups: &self.groups_k,
            },
            _ => Acts::Q8_0 {
                blocks: &self.q8_0,
                sums: &self.sums_0,
                scales: &self.scales_0,
                groups: &self.groups_0,
            },
        }
    }
}

/// All results of `dot_rows` over the whole matrix, `[col][row]`.
fn run(isa: Isa, w: &QMatrix, acts: Acts, n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    let rows = w.rows;
    dot_rows(isa, w, 0..w.rows, acts, n, &mut |r, c, v| {
        y[c * rows + r] = v
    });
    y
}

/// `sum |w| * |x|` per (row, column): the scale errors are measured against.
fn magnitudes(w: &QMatrix, x: &[f32], n: usize) -> Vec<f32> {
    let mut wd = vec![0.0; w.rows * w.cols];
    dequantize(w.dtype, w.data, &mut wd).unwrap();
    let mut m = vec![0.0; n * w.rows];
    for c in 0..n {
        for r in 0..w.rows {
            let row = &wd[r * w.cols..(r + 1) * w.cols];
            let xc = &x[c * w.cols..(c + 1) * w.cols];
            m[c * w.rows + r] = row.iter().zip(xc).map(|(a, b)| (a * b).abs()).sum();
        }
    }
    m
}

/// The SIMD backends this CPU runs (the scalar one is the reference).
fn isas() -> Vec<Isa> {
    let best = Isa::best();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        let vnni = std::arch::is_x86_feature_detected!("avxvnni");
        // The lower tiers' kernels are checked on a CPU that has a higher one.
        if avx512 {
            assert_eq!(best, Isa::Avx512, "an AVX-512 VNNI CPU must use it");
            let mut isas = vec![Isa::Avx512, Isa::Avx2];
            if vnni {
                isas.insert(1, Isa::Avx2Vnni);
            }
            return isas;
        }
        if vnni {
            assert_eq!(best, Isa::Avx2Vnni, "an AVX-VNNI CPU must use it");
            return vec![Isa::Avx2Vnni, Isa::Avx2];
        }
        assert_eq!(best, Isa::Avx2, "an AVX2 CPU must select the AVX2 backend");
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(best, Isa::Neon, "aarch64 must select the NEON backend");
    vec![best]
}

#[test]
fn simd_dot_equals_scalar_reference() {
    let mut rng = Rng::new(11);
    for &dtype in SUPPORTED {
        let k_quant = dtype.block_len() == 256;
        let col_choices: &[usize] = if k_quant {
            &[256, 512, 1536]
        } else {
            &[32, 64, 96, 256, 576, 1536]
        };
        for &cols in col_choices {
            for &rows in &[1usize, 3, 4, 6, 8, 9, 16, 17] {
                let data = random_weights(&mut rng, dtype, rows, cols);
                let w = QMatrix::new(dtype, &data, rows, cols).unwrap();
                // Q4_0 and Q4_1 with whole groups of rows: also repacked.
                let packed = PackedRows::new(dtype, &data, rows, cols);
                let layouts: Vec<QMatrix> = std::iter::once(w)
                    .chain(packed.as_ref().map(|p| w.with_packed(Some(p))))
                    .collect();
                for &n in &[1usize, 2, 3, 4, 5, 8, 17] {
                    let x = random_f32s(&mut rng, n * cols, 1.0);
                    let acts = TestActs::new(x, n);
                    let reference = run(Isa::Scalar, &w, acts.for_type(dtype), n);
                    let mag = magnitudes(&w, &acts.f32, n);
                    for (isa, w) in isas()
                        .into_iter()
                        .flat_map(|i| layouts.iter().map(move |w| (i, w)))
                    {
                        let got = run(isa, w, acts.for_type(dtype), n);
                        let layout = if w.packed.is_some() { "packed" } else { "file" };
                        for i in 0..n * rows {
                            let tol = 2e-6 * mag[i] + 1e-7;
                            assert!(
                                (got[i] - reference[i]).abs() <= tol,
                                "{dtype} {isa:?} {layout} rows={rows} cols={cols} n={n} [{i}]: {} vs {} (tol {tol})",
                                got[i],
                                reference[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_column_gets_the_same_bits_alone_and_among_others() {
    // Batched decode relies on this: a sequence's logits must not depend on
    // the sequences decoded with it.
    let mut rng = Rng::new(13);
    for &dtype in SUPPORTED {
        let cols = if dtype.block_len() == 256 { 512 } else { 576 };
        // 16 rows: Q4_0 and Q4_1 run repacked too (see `PackedRows`).
        for rows in [9, 16] {
            let data = random_weights(&mut rng, dtype, rows, cols);
            let packed = PackedRows::new(dtype, &data, rows, cols);
            let w = QMatrix::new(dtype, &data, rows, cols)
                .unwrap()
                .with_packed(packed.as_ref());
            for &n in &[2usize, 3, 8, 17] {
                let x = random_f32s(&mut rng, n * cols, 1.0);
                let together = TestActs::new(x.clone(), n);
                for isa in isas() {
                    let all = run(isa, &w, together.for_type(dtype), n);
                    for c in 0..n {
                        let alone = TestActs::new(x[c * cols..(c + 1) * cols].to_vec(), 1);
                        let one = run(isa, &w, alone.for_type(dtype), 1);
                        for r in 0..rows {
                            assert_eq!(
                                all[c * rows + r].to_bits(),
                                one[r].to_bits(),
                                "{dtype} {isa:?} n={n} column {c} row {r}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_dot_equals_dequantized_dot_of_quantized_activations() {
    // The reference itself: the integer formulation must equal the plain
    // dot product of the dequantized weights and dequantized activations.
    let mut rng = Rng::new(12);
    for &dtype in SUPPORTED {
        let cols = 512;
        let data = random_weights(&mut rng, dtype, 5, cols);
        let w = QMatrix::new(dtype, &data, 5, cols).unwrap();
        let x = random_f32s(&mut rng, cols, 1.0);
        let acts = TestActs::new(x.clone(), 1);
        // Dequantized activations as the kernel sees them.
        let xa: Vec<f32> = match acts.for_type(dtype) {
            Acts::F32(x) => x.to_vec(),
            Acts::Q8_0 { blocks, .. } => blocks
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
            Acts::Q8_1 { blocks, .. } => blocks
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
            Acts::Q8K { blocks: a, .. } => a
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                .collect(),
        };
        let got = run(Isa::Scalar, &w, acts.for_type(dtype), 1);
        let mut wd = vec![0.0; 5 * cols];
        dequantize(dtype, &data, &mut wd).unwrap();
        for r in 0..5 {
            let row = &wd[r * cols..(r + 1) * cols];
            let exact: f64 = row
                .iter()
                .zip(&xa)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let mag: f64 = row
                .iter()
                .zip(&xa)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            // Q4_1's `s` is rounded to f16, as in ggml: allow for it.
            let extra = if dtype == GgmlType::Q4_1 {
                let mut m = 0.0f64;
                for (blk, a) in data[r * w.row_bytes()..]
                    .chunks(20)
                    .zip(&acts.q8_1)
                    .take(cols / 32)
                {
                    let mw = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32() as f64;
                    m += (mw * a.s as f64).abs() / 1024.0;
                }
                m
            } else {
                0.0
            };
            assert!(
                (got[r] as f64 - exact).abs() <= 1e-5 * mag + extra + 1e-6,
                "{dtype} row {r}: {} vs {exact}",
                got[r]
            );
        }
    }
}

#[test]
fn simd_activation_quantizers_are_bit_identical() {
    let mut rng = Rng::new(13);
    for len in [256usize, 512, 4096] {
        let mut x = random_f32s(&mut rng, len, 3.0);
        x[..32].fill(0.0);
        x[40] = -1e-30; // tiny values
        x[64..96]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 15.5); // exact halves
        if len > 256 {
            x[256..512].fill(0.0);
        }
        for isa in isas() {
            let mut a = vec![BlockQ8_0::default(); len / 32];
            let mut b = a.clone();
            crate::quant::quantize_row_q8_0(&x, &mut a);
            quantize_q8_0(isa, &x, &mut b);
            assert_eq!(a, b, "Q8_0 {isa:?}");

            let mut a = vec![BlockQ8_1::default(); len / 32];
            let mut b = a.clone();
            crate::quant::quantize_row_q8_1(&x, &mut a);
            quantize_q8_1(isa, &x, &mut b);
            assert_eq!(a, b, "Q8_1 {isa:?}");

            let mut a = vec![BlockQ8K::default(); len / 256];
            let mut b = a.clone();
            crate::quant::quantize_row_q8_k(&x, &mut a);
            quantize_q8_k(isa, &x, &mut b);
            assert_eq!(a, b, "Q8_K {isa:?}");
        }
    }
}

#[test]
fn f32_and_f16_weights_handle_odd_column_counts() {
    let mut rng = Rng::new(14);
    for dtype in [GgmlType::F32, GgmlType::F16] {
        for cols in [1usize, 7, 9, 31, 100] {
            let data = random_weights(&mut rng, dtype, 5, cols);
            let w = QMatrix::new(dtype, &data, 5, cols).unwrap();
            for n in [1usize, 3] {
                let acts = TestActs::new(random_f32s(&mut rng, n * cols, 1.0), n);
                let reference = run(Isa::Scalar, &w, acts.for_type(dtype), n);
                let mag = magnitudes(&w, &acts.f32, n);
                for isa in isas() {
                    let got = run(isa, &w, acts.for_type(dtype), n);
                    for i in 0..n * 5 {
                        assert!((got[i] - reference[i]).abs() <= 2e-6 * mag[i] + 1e-7);
                    }
                }
            }
        }
    }
}
