//! Times the matrix products and attention of the GPU backend on the shapes
//! of SmolLM2-135M and Gemma 3 270M, on the adapter `WGPU_BACKEND` selects:
//! each kernel recorded `REPS` times in one submission, then the mean wall
//! time per call. `NOROUND=1` turns the activation rounding off.
//!
//! `cargo run --release -p edgeloop-gpu --example gpu_kernel_times`

use std::time::Instant;

use edgeloop_gpu::buffer::GpuVec;
use edgeloop_gpu::kernels::attention::{attend, kv_store, AttentionShape, GpuKvLayer};
use edgeloop_gpu::kernels::matmul::{matmul, GpuMatrix};
use edgeloop_gpu::quant::WeightType;
use edgeloop_gpu::GpuContext;

const REPS: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ctx = GpuContext::new()?;
    if std::env::var_os("NOROUND").is_some() {
        ctx.set_round_activations(false);
    }
    println!("{:?}", ctx.adapter_info().name);
    let shapes = [
        (WeightType::Q4_1, 576, 576, 1),
        (WeightType::Q4_1, 1536, 576, 1),
        (WeightType::Q4_1, 576, 1536, 1),
        (WeightType::Q8_0, 49152, 576, 1),
        (WeightType::Q4K, 1024, 1024, 1),
        (WeightType::Q6K, 1024, 1024, 1),
        (WeightType::Q4_1, 1536, 576, 16),
    ];
    for (t, rows, cols, n) in shapes {
        let bytes = vec![0x11u8; rows * t.row_bytes(cols)?];
        let w = GpuMatrix::upload(&ctx, t, rows, cols, &bytes)?;
        let x = GpuVec::from_slice(&ctx, &vec![0.5; n * cols]);
        let y = GpuVec::zeros(&ctx, n * rows);
        ctx.submit("warm-up", |rec| matmul(&ctx, rec, &w, &x, n, &y))?;
        y.read(&ctx)?;
        let started = Instant::now();
        ctx.submit("matmul", |rec| {
            (0..REPS).try_for_each(|_| matmul(&ctx, rec, &w, &x, n, &y))
        })?;
        y.read(&ctx)?;
        let ms = started.elapsed().as_secs_f64() * 1e3 / REPS as f64;
        println!(
            "matmul {} {rows}x{cols}, {n} column(s): {ms:.3} ms",
            t.name()
        );
    }

    let (heads, kv_heads, head_dim, rows) = (9, 3, 64, 256);
    let layer = GpuKvLayer::new(&ctx, kv_heads * head_dim, 2 * rows)?;
    let k = GpuVec::from_slice(&ctx, &vec![0.1; kv_heads * head_dim]);
    let positions: Vec<u32> = (0..rows as u32).collect();
    for p in &positions {
        ctx.submit("kv_store", |rec| {
            kv_store(&ctx, rec, &layer, &k, &k, std::slice::from_ref(p))
        })?;
    }
    let q = GpuVec::from_slice(&ctx, &vec![0.1; heads * head_dim]);
    let out = GpuVec::zeros(&ctx, heads * head_dim);
    let scores = GpuVec::zeros(&ctx, heads * 2 * rows);
    let shape = AttentionShape {
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim,
        scale: 0.125,
        window: None,
    };
    let last = [rows as u32 - 1];
    let started = Instant::now();
    ctx.submit("attention", |rec| {
        (0..REPS).try_for_each(|_| attend(&ctx, rec, &layer, &q, &last, &shape, &scores, &out))
    })?;
    out.read(&ctx)?;
    let ms = started.elapsed().as_secs_f64() * 1e3 / REPS as f64;
    println!("attention, {heads} heads over {rows} rows: {ms:.3} ms");
    Ok(())
}
