//! Times single-column matrix products that stream their weights from
//! memory, as decode does: many distinct matrices, together far larger than
//! the caches, each multiplied once per round. Prints GB/s of weights per
//! weight type and thread count, beside `edgeloop bench`'s plain read.
//!
//! `cargo run --release -p edgeloop-core --example cpu_stream_times [TYPE]`
//! (TYPE, e.g. `q4_1`, times that weight type only).

use std::time::Instant;

use edgeloop_core::kernels::{
    matmul, read_bandwidth_gb_s, MatmulScratch, PackedRows, QMatrix, ThreadPool,
};
use edgeloop_core::quant::GgmlType;

mod common;

/// Bytes of weights streamed per round (well past a 32 MiB L3).
const TOTAL: usize = 192 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shapes = [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_0, 1536, 576),
        (GgmlType::Q5_0, 2048, 640),
        (GgmlType::Q8_0, 2048, 640),
        (GgmlType::Q4K, 640, 2048),
        (GgmlType::Q6K, 640, 2048),
    ];
    let only = std::env::args().nth(1);
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        let mut scratch = MatmulScratch::default();
        println!(
            "threads {threads}: plain read {:.1} GB/s (the bench's probe)",
            read_bandwidth_gb_s(threads)
        );
        for (t, rows, cols) in shapes {
            if only
                .as_ref()
                .is_some_and(|o| !format!("{t:?}").eq_ignore_ascii_case(o))
            {
                continue;
            }
            let one = common::weights(t, rows, cols);
            let copies = TOTAL / one.len();
            let all: Vec<u8> = one
                .iter()
                .copied()
                .cycle()
                .take(copies * one.len())
                .collect();
            let packed: Vec<Option<PackedRows>> = all
                .chunks_exact(one.len())
                .map(|b| common::packed(t, b, rows, cols))
                .collect();
            let mats: Vec<QMatrix> = all
                .chunks_exact(one.len())
                .zip(&packed)
                .map(|(b, p)| Ok(QMatrix::new(t, b, rows, cols)?.with_packed(p.as_ref())))
                .collect::<Result<_, edgeloop_core::quant::QuantError>>()?;
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let mut y = vec![0.0; rows];
            let mut best = f64::MAX;
            for _ in 0..5 {
                let started = Instant::now();
                for w in &mats {
                    matmul(&pool, w, &x, 1, &mut y, &mut scratch);
                }
                best = best.min(started.elapsed().as_secs_f64());
            }
            println!(
                "  {:<6} {:>11} ×{copies:<4} {:>7.1} GB/s{}",
                format!("{t:?}"),
                format!("{rows}×{cols}"),
                all.len() as f64 / best / 1e9,
                if packed[0].is_some() {
                    " (repacked)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
