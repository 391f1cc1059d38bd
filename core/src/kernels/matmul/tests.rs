//! `matmul` against a dequantize-then-f64 reference, across types, shapes
//! and thread counts.

use super::*;
use crate::quant::tests::{random_f32s, random_weights, Rng};
use crate::quant::{dequantize, quantize, SUPPORTED};

/// Reference `y` in f64 from the dequantized weights and the exact `x`, and
/// for each output an error bound: the activation quantization error
/// (half a step of each block, plus f16 rounding of the scales) weighted by
/// `|w|`, plus float rounding.
fn reference(w: &QMatrix, x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (w.rows, w.cols);
    let mut wd = vec![0.0f32; rows * cols];
    dequantize(w.dtype, w.data, &mut wd).unwrap();
    let act_block = match w.dtype {
        GgmlType::F32 | GgmlType::F16 => 0,
        GgmlType::Q4K | GgmlType::Q6K => 256,
        _ => 32,
    };
    let mut y = vec![0.0f64; n * rows];
    let mut bound = vec![0.0f64; n * rows];
    for c in 0..n {
        let xc = &x[c * cols..(c + 1) * cols];
        // Per-element bound on |x - dequant(quant(x))|.
        let mut ex = vec![0.0f64; cols];
        let mut amaxes = vec![0.0f64; cols];
        if act_block > 0 {
            for (e, (xb, am)) in ex
                .chunks_mut(act_block)
                .zip(xc.chunks(act_block).zip(amaxes.chunks_mut(act_block)))
            {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                e.fill(amax * (1.0 / 254.0 + 1.0 / 2048.0));
                am.fill(amax);
            }
        }
        for r in 0..rows {
            let row = &wd[r * cols..(r + 1) * cols];
            let mut s = 0.0f64;
            let mut mag = 0.0f64;
            let mut qerr = 0.0f64;
            for j in 0..cols {
                s += row[j] as f64 * xc[j] as f64;
                mag += (row[j] as f64 * xc[j] as f64).abs();
                qerr += (row[j] as f64).abs() * ex[j];
            }
            if w.dtype == GgmlType::Q4_1 {
                // The block minimum times the f16-rounded `s` of Q8_1.
                for b in 0..cols / 32 {
                    let wmax = row[32 * b..32 * b + 32]
                        .iter()
                        .fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                    qerr += wmax * 32.0 * amaxes[32 * b] / 2048.0;
                }
            }
            y[c * rows + r] = s;
            bound[c * rows + r] = qerr + 1e-5 * mag + 1e-6;
        }
    }
    (y, bound)
}

fn check(w: &QMatrix, x: &[f32], n: usize, y: &[f32], what: &str) {
    let (want, bound) = reference(w, x, n);
    for i in 0..n * w.rows {
        assert!(
            (y[i] as f64 - want[i]).abs() <= bound[i],
            "{what}: {} rows={} cols={} n={n} [{i}]: got {} want {} (bound {})",
            w.dtype,
            w.rows,
            w.cols,
            y[i],
            want[i],
            bound[i]
        );
    }
}

#[test]
fn matmul_matches_dequantized_reference() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    let mut rng = Rng::new(21);
    let mut scratch = MatmulScratch::default();
    for &dtype in SUPPORTED {
        let col_choices: &[usize] = if dtype.block_len() == 256 {
            &[256, 768]
        } else {
            &[32, 96, 576]
        };
        for &cols in col_choices {
            for &rows in &[1usize, 5, 70] {
                let data = random_weights(&mut rng, dtype, rows, cols);
                let w = QMatrix::new(dtype, &data, rows, cols).unwrap();
                for &n in &[1usize, 2, 3, 5, 8, 17] {
                    let x = random_f32s(&mut rng, n * cols, 1.0);
                    let mut first: Option<Vec<f32>> = None;
                    for pool in &pools {
                        let mut y = vec![f32::NAN; n * rows];
                        matmul(pool, &w, &x, n, &mut y, &mut scratch);
                        check(&w, &x, n, &y, &format!("{} threads", pool.n_threads()));
                        // Each row is computed the same way whichever
                        // thread takes it.
                        match &first {
                            None => first = Some(y),
                            Some(f) => assert_eq!(
                                f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                "{dtype}: thread count changed results"
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_of_quantized_float_matrix_is_close_to_float_matmul() {
    // The export path: quantize a float matrix, multiply, compare with the
    // float product (weight and activation quantization errors combined).
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    let mut rng = Rng::new(22);
    let (rows, cols, n) = (300, 576, 4);
    let wf = random_f32s(&mut rng, rows * cols, 0.05);
    let x = random_f32s(&mut rng, n * cols, 1.0);
    for dtype in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_0,
    ] {
        let data = quantize(dtype, &wf).unwrap();
        let w = QMatrix::new(dtype, &data, rows, cols).unwrap();
        let mut y = vec![0.0; n * rows];
        matmul(&pool, &w, &x, n, &mut y, &mut scratch);
        let rel = match dtype {
            GgmlType::F32 => 1e-5,
            GgmlType::F16 => 2e-3,
            GgmlType::Q8_0 => 2e-2,
            _ => 0.15,
        };
        for c in 0..n {
            for r in 0..rows {
                let row = &wf[r * cols..(r + 1) * cols];
                let xc = &x[c * cols..(c + 1) * cols];
                let want: f32 = row.iter().zip(xc).map(|(a, b)| a * b).sum();
                let mag: f32 = row.iter().zip(xc).map(|(a, b)| (a * b).abs()).sum();
                let got = y[c * rows + r];
                assert!(
                    (got - want).abs() <= rel * mag,
                    "{dtype} [{c},{r}]: {got} vs {want} (mag {mag})"
                );
            }
        }
    }
}

#[test]
fn many_rows_are_split_into_chunks_correctly() {
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    let mut rng = Rng::new(23);
    for (dtype, cols) in [(GgmlType::Q8_0, 64), (GgmlType::Q4K, 256)] {
        let rows = 4099; // several chunks, a partial last one
        let data = random_weights(&mut rng, dtype, rows, cols);
        let w = QMatrix::new(dtype, &data, rows, cols).unwrap();
        for n in [1, 3] {
            let x = random_f32s(&mut rng, n * cols, 1.0);
            let mut y = vec![f32::NAN; n * rows];
            matmul(&pool, &w, &x, n, &mut y, &mut scratch);
            check(&w, &x, n, &y, "chunks");
        }
    }
}

#[test]
fn large_batches_quantize_in_parallel() {
    // n * cols above the parallel-quantization threshold, and (Q4_1, Q4_0,
    // Q4_K) more column groups than one part of their parallel build.
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    let mut rng = Rng::new(24);
    for (dtype, cols) in [
        (GgmlType::Q4_1, 512),
        (GgmlType::Q4_0, 512),
        (GgmlType::Q6K, 512),
        (GgmlType::Q4K, 2048),
    ] {
        let (rows, n) = (24, 80);
        let data = random_weights(&mut rng, dtype, rows, cols);
        let w = QMatrix::new(dtype, &data, rows, cols).unwrap();
        let x = random_f32s(&mut rng, n * cols, 1.0);
        let mut y = vec![f32::NAN; n * rows];
        matmul(&pool, &w, &x, n, &mut y, &mut scratch);
        check(&w, &x, n, &y, "parallel quantization");
    }
}

#[test]
fn scratch_is_reused_across_shapes() {
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    let mut rng = Rng::new(25);
    let data = random_weights(&mut rng, GgmlType::Q4_1, 8, 128);
    let w = QMatrix::new(GgmlType::Q4_1, &data, 8, 128).unwrap();
    let x = random_f32s(&mut rng, 9 * 128, 1.0);
    let mut y9 = vec![0.0; 9 * 8];
    matmul(&pool, &w, &x, 9, &mut y9, &mut scratch);
    let cap = scratch.q8_1.len();
    let mut y1 = vec![0.0; 8];
    matmul(&pool, &w, &x[..128], 1, &mut y1, &mut scratch);
    assert_eq!(scratch.q8_1.len(), cap, "scratch never shrinks");
    assert_eq!(&y9[..8], &y1[..]);
}

#[test]
fn shapes_are_checked() {
    let pool = ThreadPool::new(1);
    let mut scratch = MatmulScratch::default();
    let data = vec![0u8; 2 * 20];
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_1, &data, 2, 33),
        Err(QuantError::PartialBlock { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_1, &data, 3, 32),
        Err(QuantError::SizeMismatch {
            expected: 60,
            actual: 40,
            ..
        })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q5_1, &data, 1, 32),
        Err(QuantError::Unsupported { .. })
    ));
    let w = QMatrix::new(GgmlType::Q4_1, &data, 2, 32).unwrap();
    assert_eq!(w.row(1).len(), 20);
    let mut y = vec![0.0; 2];
    assert!(matches!(
        try_matmul(&pool, &w, &[0.0; 31], 1, &mut y, &mut scratch),
        Err(QuantError::LengthMismatch { what: "x", .. })
    ));
    assert!(matches!(
        try_matmul(&pool, &w, &[0.0; 32], 1, &mut [0.0; 3], &mut scratch),
        Err(QuantError::LengthMismatch { what: "y", .. })
    ));
    // A struct built by hand with a wrong size is caught too.
    let bad = QMatrix {
        dtype: GgmlType::Q4_1,
        data: &data[..39],
        rows: 2,
        cols: 32,
        packed: None,
    };
    assert!(try_matmul(&pool, &bad, &[0.0; 32], 1, &mut y, &mut scratch).is_err());
    // n = 0 is a no-op.
    matmul(&pool, &w, &[], 0, &mut [], &mut scratch);
}

#[test]
#[should_panic(expected = "matmul")]
fn matmul_panics_on_bad_lengths() {
    let pool = ThreadPool::new(1);
    let data = vec![0u8; 20];
    let w = QMatrix::new(GgmlType::Q4_1, &data, 1, 32).unwrap();
    matmul(
        &pool,
        &w,
        &[0.0; 16],
        1,
        &mut [0.0; 1],
        &mut MatmulScratch::default(),
    );
}

/// Throughput of the decode-shaped matmuls; run with
/// `cargo test --release -- --ignored --nocapture bench_matmul`
/// (`BENCH_THREADS` sets the pool size, default 2; `BENCH_ONLY=Q4_1` one
/// type; `BENCH_N=1,8,128` the batch sizes).
///
/// "GB/s" is weight bytes per second, the figure of merit of a memory-bound
/// matvec. Copies of the small matrices are cycled through so that they
/// stream from DRAM (more than the L3 cache), as in a real decode step; the
/// "hot" figure reuses one copy (cache-resident: kernel compute speed).
/// Per-call times are reported as the minimum and median over many calls,
/// since a shared machine preempts some of them.
#[test]
#[ignore]
fn bench_matmul() {
    use std::time::Instant;
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    let mut scratch = MatmulScratch::default();
    let mut rng = Rng::new(99);
    for (dtype, rows, cols) in [
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 576, 1536),
        (GgmlType::Q4_0, 576, 1536),
        (GgmlType::Q5_0, 640, 2048),
        (GgmlType::Q4K, 640, 2048),
        (GgmlType::Q6K, 640, 2048),
        (GgmlType::F16, 576, 1536),
        (GgmlType::Q8_0, 262_144, 640),
    ] {
        // BENCH_ONLY=Q4_1 (a type name) narrows the run.
        if let Ok(only) = std::env::var("BENCH_ONLY") {
            if !only.eq_ignore_ascii_case(dtype.name()) {
                continue;
            }
        }
        let one = random_weights(&mut rng, dtype, rows, cols);
        let copies = ((256 << 20) / one.len()).clamp(1, 512);
        let data: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
        let mats: Vec<QMatrix> = data
            .iter()
            .map(|d| QMatrix::new(dtype, d, rows, cols).unwrap())
            .collect();
        // BENCH_N=1,8,128 sets the batch sizes.
        let ns: Vec<usize> = std::env::var("BENCH_N")
            .ok()
            .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 8]);
        for &n in &ns {
            let x = random_f32s(&mut rng, n * cols, 1.0);
            let mut y = vec![0.0; n * rows];
            for hot in [false, true] {
                if hot && copies == 1 {
                    continue;
                }
                let mut times = Vec::new();
                let t0 = Instant::now();
                let mut i = 0;
                while t0.elapsed().as_secs_f64() < 0.4 || times.len() < 5 {
                    let m = if hot { &mats[0] } else { &mats[i % copies] };
                    let t = Instant::now();
                    matmul(&pool, m, &x, n, &mut y, &mut scratch);
                    times.push(t.elapsed().as_secs_f64());
                    i += 1;
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (min, med) = (times[0], times[times.len() / 2]);
                println!(
                    "{dtype:>5} {rows:>6}x{cols:<5} n={n:<2} t={threads} {}: min {:8.1} us ({:5.1} GB/s), median {:8.1} us ({:5.1} GB/s), {:7.1} us/column",
                    if hot { "hot " } else { "DRAM" },
                    min * 1e6,
                    one.len() as f64 / min / 1e9,
                    med * 1e6,
                    one.len() as f64 / med / 1e9,
                    min * 1e6 / n as f64
                );
            }
        }
    }
}

#[test]
fn matmul_many_equals_one_matmul_per_matrix() {
    // Query, key and value shaped projections of one input (different row
    // counts, chunks that would straddle matrices), at several thread counts
    // and batch sizes: bit for bit what separate calls give.
    let mut rng = Rng::new(25);
    let mut scratch = MatmulScratch::default();
    for (dtype, cols) in [
        (GgmlType::Q4_1, 96),
        (GgmlType::Q4K, 256),
        (GgmlType::Q8_0, 64),
    ] {
        let shapes = [300usize, 37, 1100];
        let datas: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&rows| random_weights(&mut rng, dtype, rows, cols))
            .collect();
        let ws: Vec<QMatrix> = datas
            .iter()
            .zip(shapes)
            .map(|(d, rows)| QMatrix::new(dtype, d, rows, cols).unwrap())
            .collect();
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for n in [1usize, 4] {
                let x = random_f32s(&mut rng, n * cols, 1.0);
                let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![f32::NAN; n * r]).collect();
                {
                    let refs: Vec<&QMatrix> = ws.iter().collect();
                    let mut outs: Vec<&mut [f32]> =
                        ys.iter_mut().map(|y| y.as_mut_slice()).collect();
                    matmul_many(&pool, &refs, &x, n, &mut outs, &mut scratch);
                }
                for (w, y) in ws.iter().zip(&ys) {
                    let mut alone = vec![f32::NAN; n * w.rows];
                    matmul(&pool, w, &x, n, &mut alone, &mut scratch);
                    assert_eq!(
                        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{dtype} rows={} n={n} threads={threads}",
                        w.rows
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "matmul_many")]
fn matmul_many_refuses_matrices_of_different_types() {
    let mut rng = Rng::new(26);
    let a = random_weights(&mut rng, GgmlType::Q8_0, 4, 32);
    let b = random_weights(&mut rng, GgmlType::Q4_0, 4, 32);
    let wa = QMatrix::new(GgmlType::Q8_0, &a, 4, 32).unwrap();
    let wb = QMatrix::new(GgmlType::Q4_0, &b, 4, 32).unwrap();
    let x = vec![1.0; 32];
    let (mut ya, mut yb) = (vec![0.0; 4], vec![0.0; 4]);
    matmul_many(
        &ThreadPool::new(1),
        &[&wa, &wb],
        &x,
        1,
        &mut [&mut ya, &mut yb],
        &mut MatmulScratch::default(),
    );
}

#[test]
fn spans_hand_out_every_chunk_once_in_order_per_thread() {
    for (chunks, threads) in [(1, 2), (2, 2), (5, 2), (16, 2), (17, 3), (3, 8), (100, 7)] {
        // A thread alone takes its own span first, in address order, then
        // the spans after it, wrapping around.
        let spans_len = threads.min(chunks);
        for tid in 0..threads {
            let got = std::sync::Mutex::new(Vec::new());
            Spans::new(chunks, threads).work(tid, &|ci| got.lock().unwrap().push(ci));
            let start = tid % spans_len * chunks / spans_len;
            let expected: Vec<usize> = (start..chunks).chain(0..start).collect();
            assert_eq!(
                got.into_inner().unwrap(),
                expected,
                "{chunks} chunks, thread {tid}"
            );
        }
        // All threads together on a pool: every chunk exactly once.
        let spans = Spans::new(chunks, threads);
        let pool = ThreadPool::new(threads);
        let seen: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
        pool.run(&|tid, _| {
            spans.work(tid, &|ci| {
                seen[ci].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(
            seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
            "{chunks} chunks on {threads} threads"
        );
    }
}
