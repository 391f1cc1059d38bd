//! The memory read bandwidth a matrix-vector product could at best stream
//! weights at: what `edgeloop bench` divides by the bytes of a token to get
//! its bandwidth bound, and what the kernel timing examples compare with.

use std::time::Instant;

/// Memory read bandwidth with `threads` threads in GB/s: the best of a few
/// passes in which each thread sums its own share of a 512 MiB buffer.
pub fn read_bandwidth_gb_s(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    const PASSES: usize = 5;
    let threads = threads.max(1);
    // Written first, so every page is backed before the timing.
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64 | 1).collect();
    let share = buf.len().div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..PASSES {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(share)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let secs = t.elapsed().as_secs_f64();
        // Using the sum keeps the reads from being optimised away.
        std::hint::black_box(total);
        best = best.max(BYTES as f64 / secs / 1e9);
    }
    best
}

/// A wrapping sum of `words` in eight independent lanes, so the loop is
/// bound by loads rather than by one chain of additions.
fn sum_words(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for (l, &w) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(w);
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, &w| a.wrapping_add(w));
    lanes.iter().fold(rest, |a, &l| a.wrapping_add(l))
}
