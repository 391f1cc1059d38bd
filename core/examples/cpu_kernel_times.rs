//! Times the CPU matrix products on the shapes of SmolLM2-135M and Gemma 3
//! 270M: for each weight type and shape, one column (decode) and 8 and 64
//! columns (batched decode, prefill), on one thread, the best of several
//! rounds, as microseconds per call and GB/s of weights streamed.
//!
//! `cargo run --release -p edgeloop-core --example cpu_kernel_times`

use std::time::Instant;

use edgeloop_core::kernels::{matmul, MatmulScratch, QMatrix, ThreadPool};
use edgeloop_core::quant::GgmlType;

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPool::new(1);
    let mut scratch = MatmulScratch::default();
    let shapes = [
        (GgmlType::Q4_1, 192, 576),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q5_0, 2048, 640),
        (GgmlType::Q8_0, 2048, 640),
        (GgmlType::Q8_0, 49152, 576),
        (GgmlType::Q4K, 640, 2048),
        (GgmlType::Q6K, 640, 2048),
    ];
    println!(
        "{:<6} {:>11} {:>4} {:>10} {:>8}",
        "type", "rows×cols", "n", "µs/call", "GB/s"
    );
    for (t, rows, cols) in shapes {
        let bytes = common::weights(t, rows, cols);
        let packed = common::packed(t, &bytes, rows, cols);
        let w = QMatrix::new(t, &bytes, rows, cols)?.with_packed(packed.as_ref());
        for n in [1, 8, 64] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let mut y = vec![0.0; n * rows];
            let reps = (2_000_000 / (rows * cols * n)).max(3);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let started = Instant::now();
                for _ in 0..reps {
                    matmul(&pool, &w, &x, n, &mut y, &mut scratch);
                }
                best = best.min(started.elapsed().as_secs_f64() / reps as f64);
            }
            println!(
                "{:<6} {:>11} {:>4} {:>10.1} {:>8.1}",
                format!("{t:?}"),
                format!("{rows}×{cols}"),
                n,
                best * 1e6,
                bytes.len() as f64 / best / 1e9
            );
        }
    }
    Ok(())
}
