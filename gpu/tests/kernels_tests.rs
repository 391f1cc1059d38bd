//! Every GPU kernel against edgeloop-core's CPU reference, on whatever
//! adapter `WGPU_BACKEND` selects (CI: lavapipe, `WGPU_BACKEND=vulkan`).
//!
//! Without an adapter these tests fail, saying what to install, unless
//! `EDGELOOP_SKIP_GPU_TESTS=1` is set, in which case they report that they
//! were skipped and pass.

mod common;

use std::sync::OnceLock;

use edgeloop_core::kernels::{MatmulScratch, QMatrix, ThreadPool};
use edgeloop_core::model::ops;
use edgeloop_core::quant::{
    dequantize, quantize, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, BlockQ8K,
    BlockQ8_0, BlockQ8_1, GgmlType,
};
use edgeloop_gpu::buffer::{plan_chunks, GpuVec};
use edgeloop_gpu::kernels::attention::{attend, kv_store, scratch_len, AttentionShape, GpuKvLayer};
use edgeloop_gpu::kernels::elementwise::{self, RopeTable};
use edgeloop_gpu::kernels::matmul::{embed, matmul, round_activations, GpuMatrix};
use edgeloop_gpu::quant::{ActFormat, WeightType, ALL};
use edgeloop_gpu::{GpuContext, GpuError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Relative error allowed for the matrix products, against the largest |y|
/// of the same activation column. With the activations rounded as the CPU
/// quantizes them (the default), the reference is edgeloop-core's `matmul`;
/// with f32 activations ([`GpuContext::set_round_activations`] off), the
/// f64 product of core's dequantized matrix. Either way the GPU multiplies
/// the same values as the reference, so the only difference is f32
/// rounding of the products and of the sums over up to 1024 terms (64
/// per-thread partial sums, then a tree; the CPU sums the integer products
/// of a block exactly): about sqrt(cols) * 2^-24 of the column's magnitude,
/// ~2e-6 at 1024 columns. Measured on lavapipe (see the printed maxima with
/// `--nocapture`): at most 1.1e-6 against core's `matmul` (Q4_K), 6.3e-7
/// against the exact product; 1e-5 leaves a margin of ~9× while a wrong
/// block layout gives errors of order 1, and products of unrounded
/// activations differ from core's by ~4e-3.
const MATMUL_TOL: f32 = 1e-5;

fn shared() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    match CTX.get_or_init(|| GpuContext::new().map_err(|e| e.to_string())) {
        Ok(ctx) => Some(ctx),
        Err(e) => common::no_adapter(e),
    }
}

fn own() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => common::no_adapter(&e.to_string()),
    }
}

fn core_type(t: WeightType) -> GgmlType {
    GgmlType::from_id(t.ggml_id()).expect("a GGUF type id")
}

fn put_f16(bytes: &mut [u8], off: usize, v: f32) {
    bytes[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// A `rows` × `cols` matrix of `t` in GGML's layout: quantized from normal-ish
/// random values with core's quantizers where core has one, otherwise random
/// bytes with sane f16 scales.
fn random_matrix(t: WeightType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = rows * cols;
    match t {
        WeightType::F32
        | WeightType::F16
        | WeightType::Q8_0
        | WeightType::Q4_0
        | WeightType::Q4_1 => {
            let src: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            quantize(core_type(t), &src).expect("core quantizes it")
        }
        _ => {
            let bytes_len = rows * t.row_bytes(cols).unwrap();
            let mut b: Vec<u8> = (0..bytes_len).map(|_| rng.gen()).collect();
            for blk in b.chunks_exact_mut(t.block_bytes()) {
                match t {
                    WeightType::Q5_0 => put_f16(blk, 0, rng.gen_range(0.001..0.05)),
                    WeightType::Q4K => {
                        put_f16(blk, 0, rng.gen_range(0.0005..0.01));
                        put_f16(blk, 2, rng.gen_range(0.0005..0.01));
                    }
                    WeightType::Q6K => put_f16(blk, 208, rng.gen_range(0.0001..0.002)),
                    _ => unreachable!(),
                }
            }
            b
        }
    }
}

fn dequant(t: WeightType, data: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize(core_type(t), data, &mut out).expect("core dequantizes it");
    out
}

fn random_vec(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

/// Largest |a - b| over the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// The CPU reference of `w` times `n` columns `x`: core's `matmul` (which
/// quantizes `x` to the weight type's 8-bit format) when `rounded`, else
/// the f64 product of core's dequantized matrix with the f32 `x`.
fn reference_matmul(
    t: WeightType,
    data: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    rounded: bool,
) -> Vec<f32> {
    if rounded {
        static POOL: OnceLock<ThreadPool> = OnceLock::new();
        let pool = POOL.get_or_init(|| ThreadPool::new(1));
        let w = QMatrix::new(core_type(t), data, rows, cols).expect("a core matrix");
        let mut y = vec![0.0; n * rows];
        edgeloop_core::kernels::matmul(pool, &w, x, n, &mut y, &mut MatmulScratch::default());
        return y;
    }
    let wf = dequant(t, data, rows * cols);
    (0..n)
        .flat_map(|j| {
            let wf = &wf;
            (0..rows).map(move |r| {
                (0..cols)
                    .map(|c| wf[r * cols + c] as f64 * x[j * cols + c] as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect()
}

/// The GPU product of `w` with `n` columns `x` against [`reference_matmul`]
/// (rounded activations when the context rounds them); returns the worst
/// per-column relative error.
fn check_matmul(
    ctx: &GpuContext,
    t: WeightType,
    rows: usize,
    cols: usize,
    n: usize,
    seed: u64,
) -> f32 {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = random_matrix(t, rows, cols, &mut rng);
    let x = random_vec(n * cols, &mut rng);
    let w = GpuMatrix::upload(ctx, t, rows, cols, &data).unwrap();
    let xg = GpuVec::from_slice(ctx, &x);
    let yg = GpuVec::zeros(ctx, n * rows);
    ctx.submit("matmul", |enc| matmul(ctx, enc, &w, &xg, n, &yg))
        .unwrap();
    let y = yg.read(ctx).unwrap();
    let want = reference_matmul(t, &data, rows, cols, &x, n, ctx.rounds_activations());
    let mut worst = 0f32;
    for j in 0..n {
        let col = j * rows..(j + 1) * rows;
        let e = rel_err(&y[col.clone()], &want[col]);
        assert!(
            e <= MATMUL_TOL,
            "{} {rows}x{cols} n={n} rounded={}: column {j} relative error {e}",
            t.name(),
            ctx.rounds_activations()
        );
        worst = worst.max(e);
    }
    worst
}

/// Shapes of the matrix product tests per block length: (rows, cols, n).
fn matmul_shapes(t: WeightType) -> &'static [(usize, usize, usize)] {
    if t.block_len() == 256 {
        &[
            (1, 256, 1),
            (9, 768, 1),
            (7, 512, 3),
            (64, 1024, 1),
            (33, 256, 16),
            (256, 256, 4),
        ]
    } else if t.block_len() == 1 {
        // Odd widths: F16 rows that end inside a 32-bit word.
        &[
            (1, 1, 1),
            (5, 33, 2),
            (64, 1024, 1),
            (33, 511, 16),
            (256, 256, 4),
        ]
    } else {
        &[
            (1, 32, 1),
            (13, 96, 1),
            (7, 96, 3),
            (64, 1024, 1),
            (33, 512, 16),
            (256, 256, 4),
        ]
    }
}

#[test]
fn matmul_matches_cpu_for_every_type_and_shape() {
    let Some(ctx) = shared() else { return };
    eprintln!(
        "adapter: {:?}, subgroup reduction: {}",
        ctx.adapter_info(),
        ctx.uses_subgroups()
    );
    assert!(ctx.rounds_activations(), "rounding is the default");
    for (i, t) in ALL.into_iter().enumerate() {
        let mut worst = 0f32;
        for (k, &(rows, cols, n)) in matmul_shapes(t).iter().enumerate() {
            worst = worst.max(check_matmul(ctx, t, rows, cols, n, (i * 100 + k) as u64));
        }
        eprintln!("matmul {:5}: max relative error {worst:.2e}", t.name());
    }
}

#[test]
fn matmul_with_f32_activations_matches_the_exact_product() {
    let Some(mut ctx) = own() else { return };
    ctx.set_round_activations(false);
    assert!(!ctx.rounds_activations());
    for (i, t) in ALL.into_iter().enumerate() {
        let mut worst = 0f32;
        for (k, &(rows, cols, n)) in matmul_shapes(t).iter().enumerate() {
            worst = worst.max(check_matmul(&ctx, t, rows, cols, n, (i * 100 + k) as u64));
        }
        eprintln!(
            "matmul {:5} f32 activations: max relative error {worst:.2e}",
            t.name()
        );
    }
}

/// Activations for the rounding tests, `blocks` blocks of `block_len`:
/// random values of magnitudes from 1e-6 to 1e4 (small ones put Q8_0's
/// scale among the f16 subnormals), then special blocks: zeros, a single
/// non-zero value, values halfway between integers after scaling (ties of
/// round-half-to-even), scales that are f16 ties, a largest magnitude
/// with both signs (Q8_K takes the first), and for the 32-value formats a
/// block below 2^-118 (rounded to zeros on both sides).
fn rounding_data(block_len: usize, blocks: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x = Vec::with_capacity(block_len * blocks);
    let mut block = |f: &mut dyn FnMut(usize) -> f32| {
        x.extend((0..block_len).map(&mut *f));
    };
    // Zeros; one value.
    block(&mut |_| 0.0);
    block(&mut |i| if i == 5 { -0.37 } else { 0.0 });
    // Largest magnitude 127 (scale 1): every other value is a tie k + 0.5.
    for sign in [1.0f32, -1.0] {
        let mut r2 = StdRng::seed_from_u64(block_len as u64);
        block(&mut |i| {
            if i == 3 {
                127.0 * sign
            } else {
                (r2.gen_range(-127..127) as f32 + 0.5) * if i % 3 == 0 { 1.0 } else { -1.0 }
            }
        });
    }
    // Scales d = amax / 127 exactly halfway between two f16 values: normal
    // (around 1 and 2^-5) and subnormal (multiples of 2^-25).
    for t in [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2f32.powi(-5) * (1.0 + 5.0 * 2f32.powi(-11)),
        2f32.powi(-25) * 5.0,
        2f32.powi(-25) * 7.0,
        2f32.powi(-25) * 2047.0,
    ] {
        let amax = 127.0 * t;
        let mut r2 = StdRng::seed_from_u64(t.to_bits() as u64);
        block(&mut |i| {
            if i == 1 {
                -amax
            } else {
                r2.gen_range(-amax..amax)
            }
        });
    }
    // The largest magnitude twice, with both signs, in either order.
    block(&mut |i| match i {
        2 => 3.5,
        9 => -3.5,
        _ => (i as f32 * 0.37).sin(),
    });
    block(&mut |i| match i {
        2 => -3.5,
        9 => 3.5,
        _ => (i as f32 * 0.41).cos(),
    });
    if block_len == 32 {
        block(&mut |i| (i as f32 - 10.0) * 1e-37);
    }
    let special = x.len() / block_len;
    for k in special..blocks {
        let scale = 10f32.powi((k % 11) as i32 - 6);
        x.extend((0..block_len).map(|_| rng.gen_range(-1.0f32..1.0) * scale));
    }
    x
}

/// Core's values for `x` in `format`: `d * q` per value, then for Q8_1 each
/// block's `s`.
fn core_rounded(format: ActFormat, x: &[f32]) -> Vec<f32> {
    match format {
        ActFormat::Q8_0 => {
            let mut b = vec![BlockQ8_0::default(); x.len() / 32];
            quantize_row_q8_0(x, &mut b);
            b.iter()
                .flat_map(|b| b.qs.map(|q| b.d * q as f32))
                .collect()
        }
        ActFormat::Q8_1 => {
            let mut b = vec![BlockQ8_1::default(); x.len() / 32];
            quantize_row_q8_1(x, &mut b);
            let mut v: Vec<f32> = b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * q as f32))
                .collect();
            v.extend(b.iter().map(|b| b.s));
            v
        }
        ActFormat::Q8K => {
            let mut b = vec![BlockQ8K::default(); x.len() / 256];
            quantize_row_q8_k(x, &mut b);
            b.iter()
                .flat_map(|b| b.qs.map(|q| b.d * q as f32))
                .collect()
        }
    }
}

/// The GPU rounding of `format` on [`rounding_data`] must give exactly
/// core's `d * q` (and Q8_1's `s`) for every value.
fn check_rounding(format: ActFormat) {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(20 + format.block_len() as u64);
    let blocks = 4096 * 32 / format.block_len();
    let x = rounding_data(format.block_len(), blocks, &mut rng);
    let xg = GpuVec::from_slice(ctx, &x);
    let out = GpuVec::zeros(ctx, format.rounded_len(x.len()));
    ctx.submit("round", |enc| {
        round_activations(ctx, enc, format, &xg, &out)
    })
    .unwrap();
    let got = out.read(ctx).unwrap();
    let want = core_rounded(format, &x);
    assert_eq!(got.len(), want.len());
    let bad: Vec<(usize, f32, f32)> = got
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, (&g, &w))| (i, g, w))
        .collect();
    eprintln!(
        "round {format:?}: {} values, {} differ from core",
        got.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{format:?}: {} of {} values differ from core's (index, gpu, cpu): {:?}",
        bad.len(),
        got.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(
        want.iter().any(|&v| v != 0.0 && v.abs() < 1e-5),
        "tiny values are covered"
    );
}

#[test]
fn q8_0_rounding_matches_core() {
    check_rounding(ActFormat::Q8_0);
}

#[test]
fn q8_1_rounding_matches_core() {
    check_rounding(ActFormat::Q8_1);
}

#[test]
fn q8_k_rounding_matches_core() {
    check_rounding(ActFormat::Q8K);
}

#[test]
fn rounding_picks_each_weight_types_format() {
    use WeightType::*;
    let formats: Vec<Option<ActFormat>> = ALL.into_iter().map(WeightType::act_format).collect();
    assert_eq!(ALL, [F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4K, Q6K]);
    assert_eq!(
        formats,
        [
            None,
            None,
            Some(ActFormat::Q8_0),
            Some(ActFormat::Q8_1),
            Some(ActFormat::Q8_0),
            Some(ActFormat::Q8_0),
            Some(ActFormat::Q8K),
            Some(ActFormat::Q8K),
        ]
    );
}

#[test]
fn matmul_with_either_reduction_matches_cpu() {
    // The shared test above uses subgroupAdd where the device has it; this
    // one runs both reductions on a context of its own.
    let Some(mut ctx) = own() else { return };
    let variants = if ctx.features().subgroups {
        vec![true, false]
    } else {
        vec![false]
    };
    for on in variants {
        ctx.set_use_subgroups(on);
        assert_eq!(ctx.uses_subgroups(), on);
        for (i, t) in ALL.into_iter().enumerate() {
            let cols = if t.block_len() == 256 { 512 } else { 320 };
            let e = check_matmul(&ctx, t, 19, cols, 5, 1000 + i as u64);
            eprintln!(
                "matmul {:5} subgroups={on}: max relative error {e:.2e}",
                t.name()
            );
        }
    }
}

#[test]
fn matmul_splits_large_matrices_into_row_chunks() {
    let Some(mut ctx) = own() else { return };
    for t in [WeightType::Q8_0, WeightType::Q4K, WeightType::F16] {
        let cols = 256;
        let row_bytes = t.row_bytes(cols).unwrap();
        // Three and a bit rows per binding: 41 rows become 13 chunks.
        ctx.set_max_binding_size((row_bytes * 3 + row_bytes / 2).div_ceil(4) as u64 * 4);
        let mut rng = StdRng::seed_from_u64(7);
        let data = random_matrix(t, 41, cols, &mut rng);
        let w = GpuMatrix::upload(&ctx, t, 41, cols, &data).unwrap();
        assert!(w.chunk_count() >= 11, "{} chunks", w.chunk_count());
        let e = check_matmul(&ctx, t, 41, cols, 2, 7);
        eprintln!("split matmul {}: max relative error {e:.2e}", t.name());
        // Embedding lookups find rows in every chunk.
        let ids = [0u32, 40, 3, 4, 21];
        let out = GpuVec::zeros(&ctx, ids.len() * cols);
        ctx.submit("embed", |enc| embed(&ctx, enc, &w, &ids, &out))
            .unwrap();
        let got = out.read(&ctx).unwrap();
        let wf = dequant(t, &data, 41 * cols);
        for (k, &id) in ids.iter().enumerate() {
            let row = &wf[id as usize * cols..(id as usize + 1) * cols];
            assert_eq!(&got[k * cols..(k + 1) * cols], row, "{} row {id}", t.name());
        }
    }
}

#[test]
fn plan_chunks_keeps_rows_whole_and_fails_on_a_row_too_large() {
    let plan = plan_chunks(10, 34, 100).unwrap();
    assert_eq!(plan, vec![(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]);
    assert_eq!(plan_chunks(3, 8, 1 << 20).unwrap(), vec![(0, 3)]);
    assert!(matches!(
        plan_chunks(3, 210, 200),
        Err(GpuError::TooLarge { .. })
    ));
}

#[test]
fn kernels_reject_bad_shapes() {
    let Some(ctx) = shared() else { return };
    let data = vec![0u8; 4 * 34];
    assert!(GpuMatrix::upload(ctx, WeightType::Q8_0, 2, 33, &data).is_err());
    assert!(GpuMatrix::upload(ctx, WeightType::Q8_0, 3, 64, &data).is_err());
    let w = GpuMatrix::upload(ctx, WeightType::Q8_0, 2, 64, &data).unwrap();
    let x = GpuVec::zeros(ctx, 64);
    let y = GpuVec::zeros(ctx, 3);
    let r = ctx.submit("bad", |enc| matmul(ctx, enc, &w, &x, 1, &y));
    assert!(matches!(r, Err(GpuError::Shape(_))), "{r:?}");
    let y = GpuVec::zeros(ctx, 2 * 17);
    let r = ctx.submit("bad", |enc| matmul(ctx, enc, &w, &x, 17, &y));
    assert!(matches!(r, Err(GpuError::Shape(_))), "{r:?}");
    let out = GpuVec::zeros(ctx, 64);
    let r = ctx.submit("bad", |enc| embed(ctx, enc, &w, &[2], &out));
    assert!(matches!(r, Err(GpuError::Shape(_))), "{r:?}");
    for (format, len, out_len) in [
        (ActFormat::Q8_0, 48, 48),
        (ActFormat::Q8K, 64, 64),
        (ActFormat::Q8_1, 64, 64),
    ] {
        let (x, o) = (GpuVec::zeros(ctx, len), GpuVec::zeros(ctx, out_len));
        let r = ctx.submit("bad", |enc| round_activations(ctx, enc, format, &x, &o));
        assert!(matches!(r, Err(GpuError::Shape(_))), "{format:?}: {r:?}");
    }
    let layer = GpuKvLayer::new(ctx, 64, 8).unwrap();
    assert!(GpuKvLayer::new(ctx, 63, 8).is_err());
    let s = AttentionShape {
        n_heads: 3,
        n_kv_heads: 2,
        head_dim: 32,
        scale: 1.0,
        window: None,
    };
    let q = GpuVec::zeros(ctx, 96);
    let r = ctx.submit("bad", |enc| {
        attend(ctx, enc, &layer, &q, &[0], &s, &out, &q)
    });
    assert!(matches!(r, Err(GpuError::Shape(_))), "{r:?}");
    let s = AttentionShape { n_heads: 2, ..s };
    let q = GpuVec::zeros(ctx, 64);
    let r = ctx.submit("bad", |enc| {
        attend(ctx, enc, &layer, &q, &[8], &s, &out, &q)
    });
    assert!(
        matches!(r, Err(GpuError::Shape(_))),
        "position past the cache: {r:?}"
    );
}

#[test]
fn embed_matches_core_dequantization_for_every_type() {
    let Some(ctx) = shared() else { return };
    for t in ALL {
        let (rows, cols) = (50, if t.block_len() == 256 { 512 } else { 96 });
        let mut rng = StdRng::seed_from_u64(t.ggml_id() as u64);
        let data = random_matrix(t, rows, cols, &mut rng);
        let wf = dequant(t, &data, rows * cols);
        let w = GpuMatrix::upload(ctx, t, rows, cols, &data).unwrap();
        let ids = [0u32, 49, 7, 7, 23];
        let out = GpuVec::zeros(ctx, ids.len() * cols);
        ctx.submit("embed", |enc| embed(ctx, enc, &w, &ids, &out))
            .unwrap();
        let got = out.read(ctx).unwrap();
        let mut worst = 0f32;
        for (k, &id) in ids.iter().enumerate() {
            let want = &wf[id as usize * cols..(id as usize + 1) * cols];
            worst = worst.max(rel_err(&got[k * cols..(k + 1) * cols], want));
        }
        // The same f32 operations in the same order as core's dequantizer;
        // only a fused multiply-add could differ in the last bit.
        assert!(worst <= 1e-6, "embed {}: relative error {worst}", t.name());
        eprintln!("embed {:5}: max relative error {worst:.2e}", t.name());
    }
}

#[test]
fn rms_norm_matches_core() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    for (rows, cols) in [(1, 64), (3, 896), (5, 1000)] {
        let x = random_vec(rows * cols, &mut rng);
        let w = random_vec(cols, &mut rng);
        let (xg, wg, out) = (
            GpuVec::from_slice(ctx, &x),
            GpuVec::from_slice(ctx, &w),
            GpuVec::zeros(ctx, rows * cols),
        );
        ctx.submit("rms_norm", |enc| {
            elementwise::rms_norm(ctx, enc, &xg, &wg, 1e-6, &out)
        })
        .unwrap();
        let got = out.read(ctx).unwrap();
        let mut want = vec![0.0; rows * cols];
        for r in 0..rows {
            let s = r * cols..(r + 1) * cols;
            ops::rms_norm_into(&mut want[s.clone()], &x[s], &w, 1e-6);
        }
        let e = rel_err(&got, &want);
        eprintln!("rms_norm {rows}x{cols}: max relative error {e:.2e}");
        // Sum of squares in a different order, then one sqrt and divide.
        assert!(e <= 1e-5, "rms_norm {rows}x{cols}: {e}");
    }
}

#[test]
fn rope_matches_core_in_both_layouts() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    let positions = [0u32, 1, 17, 300, 1500];
    let (heads, head_dim) = (4, 64);
    for neox in [false, true] {
        for rope_dims in [64, 32] {
            let inv_freq = ops::rope_inv_freq(rope_dims, 10000.0, 1.0);
            let table = RopeTable::new(ctx, &inv_freq);
            let x = random_vec(positions.len() * heads * head_dim, &mut rng);
            let xg = GpuVec::from_slice(ctx, &x);
            ctx.submit("rope", |enc| {
                elementwise::rope(ctx, enc, &xg, &positions, heads, head_dim, &table, neox)
            })
            .unwrap();
            let got = xg.read(ctx).unwrap();
            let mut want = x.clone();
            for (t, &p) in positions.iter().enumerate() {
                for h in 0..heads {
                    let s = (t * heads + h) * head_dim;
                    ops::rope(&mut want[s..s + head_dim], p as usize, &inv_freq, neox);
                }
            }
            let e = rel_err(&got, &want);
            eprintln!("rope neox={neox} rope_dims={rope_dims}: max relative error {e:.2e}");
            // sin/cos of angles up to 1500 rad. lavapipe measures ~1e-7, but
            // hardware GPUs use fast sin/cos whose range reduction loses
            // ~ulp(1500) ≈ 1e-4 of the angle; a wrong pairing gives ~1.
            assert!(e <= 1e-3, "rope neox={neox} rope_dims={rope_dims}: {e}");
        }
    }
}

#[test]
fn softmax_matches_reference() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(13);
    for (rows, cols) in [(1, 1), (4, 100), (2, 1000)] {
        let x: Vec<f32> = (0..rows * cols)
            .map(|_| rng.gen_range(-20.0..20.0))
            .collect();
        let xg = GpuVec::from_slice(ctx, &x);
        ctx.submit("softmax", |enc| elementwise::softmax(ctx, enc, &xg, cols))
            .unwrap();
        let got = xg.read(ctx).unwrap();
        let mut worst = 0f32;
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = ops::log_sum_exp(row);
            let want: Vec<f32> = row.iter().map(|v| (v - lse).exp()).collect();
            assert!(max.is_finite());
            worst = worst.max(rel_err(&got[r * cols..(r + 1) * cols], &want));
        }
        eprintln!("softmax {rows}x{cols}: max relative error {worst:.2e}");
        assert!(worst <= 1e-5, "softmax {rows}x{cols}: {worst}");
    }
}

#[test]
fn gated_activations_and_add_match_core() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(14);
    for n in [1, 100, 4864] {
        let mut gate: Vec<f32> = (0..n).map(|_| rng.gen_range(-12.0..12.0)).collect();
        if n > 10 {
            gate[0] = -100.0;
            gate[1] = 100.0;
        }
        let up = random_vec(n, &mut rng);
        let upg = GpuVec::from_slice(ctx, &up);
        type CpuOp = fn(&mut [f32], &[f32]);
        let cases: [(&str, CpuOp, f32); 3] = [
            ("silu_mul", ops::silu_mul, 1e-5),
            // Both round GELU's result to f16; where tanh's last bits differ
            // across a rounding boundary they are one f16 step apart.
            ("gelu_mul", ops::gelu_mul, 1e-3),
            ("add", ops::add_assign, 0.0),
        ];
        for (name, cpu, tol) in cases {
            let g = GpuVec::from_slice(ctx, &gate);
            ctx.submit(name, |enc| match name {
                "silu_mul" => elementwise::silu_mul(ctx, enc, &g, &upg),
                "gelu_mul" => elementwise::gelu_mul(ctx, enc, &g, &upg),
                _ => elementwise::add(ctx, enc, &g, &upg),
            })
            .unwrap();
            let got = g.read(ctx).unwrap();
            let mut want = gate.clone();
            cpu(&mut want, &up);
            let e = rel_err(&got, &want);
            eprintln!("{name} n={n}: max relative error {e:.2e}");
            // exp and tanh are the GPU's own approximations (a few ulps).
            assert!(e <= tol, "{name} n={n}: {e}");
            if name == "gelu_mul" {
                // Rounded alike, nearly every value is the CPU's to within
                // f32 rounding; one f16 step is 5e-4 relative.
                let differ = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| (*g - *w).abs() > 1e-5 * w.abs().max(1.0))
                    .count();
                assert!(differ * 100 <= n, "gelu_mul n={n}: {differ} values differ");
            }
        }
    }
}

/// Core's attention (as `forward.rs` calls it) of each token over a CPU
/// f16 cache: `[tokens][n_heads * head_dim]`.
fn cpu_attention(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    positions: &[u32],
    s: &AttentionShape,
) -> Vec<f32> {
    let (hd, qd) = (s.head_dim, s.n_heads * s.head_dim);
    let kvd = s.n_kv_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let mut out = vec![0.0; q.len()];
    let mut scores = vec![0.0; group * 1024];
    for (t, &p) in positions.iter().enumerate() {
        let p = p as usize;
        let first = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
        for kv in 0..s.n_kv_heads {
            let range = t * qd + kv * group * hd..t * qd + (kv + 1) * group * hd;
            let qr: Vec<f32> = q[range.clone()]
                .iter()
                .map(|&x| ops::round_f16(x))
                .collect();
            ops::attend_f16(
                &qr,
                hd,
                keys,
                values,
                kvd,
                kv * hd,
                first..p + 1,
                s.scale,
                &mut scores,
                &mut out[range],
            );
        }
    }
    out
}

/// Relative error allowed for attention: each softmax weight is rounded to
/// f16 on both sides, and a score that differs in its last f32 bit (other
/// summation order of q·k) can round the other way: one f16 ulp (2^-11
/// relative) of one weight. Measured on lavapipe: at most 1.5e-5 (most
/// shapes bit-exact: same f16 weights, values summed in row order).
const ATTENTION_TOL: f32 = 2e-3;

/// Runs the GPU attention of queries `q` at `positions` over `layer` and
/// returns its largest relative error against core's attention over the
/// same f16 keys and values (which must not be trivially zero).
fn attend_vs_core(
    ctx: &GpuContext,
    layer: &GpuKvLayer,
    (keys, values): (&[u16], &[u16]),
    q: &[f32],
    positions: &[u32],
    s: &AttentionShape,
) -> f32 {
    let qg = GpuVec::from_slice(ctx, q);
    let out = GpuVec::zeros(ctx, q.len());
    let scratch = GpuVec::zeros(ctx, scratch_len(s, positions.len(), layer));
    ctx.submit("attention", |enc| {
        attend(ctx, enc, layer, &qg, positions, s, &scratch, &out)
    })
    .unwrap();
    let got = out.read(ctx).unwrap();
    let want = cpu_attention(q, keys, values, positions, s);
    assert!(
        want.iter().any(|v| v.abs() > 0.01),
        "a non-trivial reference"
    );
    rel_err(&got, &want)
}

#[test]
fn attention_matches_core_over_an_f16_cache() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(15);
    let capacity = 300;
    for (n_heads, n_kv_heads, head_dim, window) in [
        (8, 2, 64, None),
        (8, 2, 64, Some(16)),
        (4, 4, 128, None),
        (6, 1, 32, Some(100)),
    ] {
        let s = AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
        };
        let kvd = n_kv_heads * head_dim;
        let keys: Vec<u16> = (0..capacity * kvd)
            .map(|_| ops::to_f16(rng.gen_range(-2.0..2.0)))
            .collect();
        let values: Vec<u16> = (0..capacity * kvd)
            .map(|_| ops::to_f16(rng.gen_range(-1.0..1.0)))
            .collect();
        let layer = GpuKvLayer::new(ctx, kvd, capacity).unwrap();
        layer.write_f16(ctx, 0, &keys, &values).unwrap();
        let positions = [0u32, 5, 64, 299];
        let q = random_vec(positions.len() * n_heads * head_dim, &mut rng);
        let e = attend_vs_core(ctx, &layer, (&keys, &values), &q, &positions, &s);
        eprintln!("attention {s:?}: max relative error {e:.2e}");
        assert!(e <= ATTENTION_TOL, "attention {s:?}: {e}");
    }
}

#[test]
fn kv_store_rounds_like_core_and_feeds_attention() {
    let Some(ctx) = shared() else { return };
    let mut rng = StdRng::seed_from_u64(16);
    let s = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        scale: 0.125,
        window: None,
    };
    let (kvd, capacity, tokens) = (128, 40, 40);
    let k = random_vec(tokens * kvd, &mut rng);
    let v = random_vec(tokens * kvd, &mut rng);
    let layer = GpuKvLayer::new(ctx, kvd, capacity).unwrap();
    // Stored out of order, in two batches.
    let order: Vec<u32> = (0..tokens as u32).rev().collect();
    let reorder = |x: &[f32]| -> Vec<f32> {
        order
            .iter()
            .flat_map(|&p| x[p as usize * kvd..(p as usize + 1) * kvd].to_vec())
            .collect()
    };
    let (kr, vr) = (reorder(&k), reorder(&v));
    for half in [0..20, 20..40] {
        let kg = GpuVec::from_slice(ctx, &kr[half.start * kvd..half.end * kvd]);
        let vg = GpuVec::from_slice(ctx, &vr[half.start * kvd..half.end * kvd]);
        ctx.submit("kv_store", |enc| {
            kv_store(ctx, enc, &layer, &kg, &vg, &order[half.clone()])
        })
        .unwrap();
    }
    let keys: Vec<u16> = k.iter().map(|&x| ops::to_f16(x)).collect();
    let values: Vec<u16> = v.iter().map(|&x| ops::to_f16(x)).collect();
    let positions = [39u32, 0, 12];
    let q = random_vec(positions.len() * 4 * 64, &mut rng);
    let e = attend_vs_core(ctx, &layer, (&keys, &values), &q, &positions, &s);
    eprintln!("kv_store + attention: max relative error {e:.2e}");
    assert!(e <= ATTENTION_TOL, "kv_store + attention: {e}");
}

#[test]
fn matmul_and_embed_cover_more_rows_than_one_dispatch_dimension() {
    let Some(ctx) = shared() else { return };
    // 70 000 rows (an output vocabulary) need a two-dimensional grid of
    // workgroups: at most 65 535 along x.
    let e = check_matmul(ctx, WeightType::Q8_0, 70_000, 32, 1, 17);
    eprintln!("matmul Q8_0 70000x32: max relative error {e:.2e}");
    let mut rng = StdRng::seed_from_u64(18);
    let data = random_matrix(WeightType::Q4_0, 70_000, 32, &mut rng);
    let w = GpuMatrix::upload(ctx, WeightType::Q4_0, 70_000, 32, &data).unwrap();
    let ids = [69_999u32, 65_535, 65_536, 1];
    let out = GpuVec::zeros(ctx, ids.len() * 32);
    ctx.submit("embed", |enc| embed(ctx, enc, &w, &ids, &out))
        .unwrap();
    let got = out.read(ctx).unwrap();
    let wf = dequant(WeightType::Q4_0, &data, 70_000 * 32);
    for (k, &id) in ids.iter().enumerate() {
        let row = &wf[id as usize * 32..(id as usize + 1) * 32];
        assert_eq!(&got[k * 32..(k + 1) * 32], row, "row {id}");
    }
}

#[test]
fn context_reports_adapter_and_features() {
    let Some(ctx) = shared() else { return };
    let info = ctx.adapter_info();
    assert!(!info.name.is_empty());
    assert!(ctx.max_binding_size() >= 1 << 20);
    eprintln!(
        "{} ({:?}, {:?}): {:?}, max binding {} bytes",
        info.name,
        info.backend,
        info.device_type,
        ctx.features(),
        ctx.max_binding_size()
    );
}
