// The per-thread sums of the matrix product (see matmul_common.wgsl) for
// Q4_1 weights with activations rounded to Q8_1 (act_round.wgsl): x holds
// the n × cols rounded values, then n × (cols / 32) block terms s. As in
// core's Q4_1 · Q8_1 dot product, a block contributes
// sum_j d * q_j * x̂_j + m * s, the minimum m times s rather than times the
// sum of the rounded values. Needs `deq_scaled` (quant_q4_1.wgsl).

// This thread's partial sums of row r for every activation column: the
// threads of a workgroup stride over the row's blocks.
fn accumulate(r: u32, lid: u32) -> array<f32, 16> {
    let nb = p.cols / BLOCK_LEN;
    let row_base = r * nb * BLOCK_BYTES;
    let sums = p.n * p.cols;
    var acc: array<f32, 16>;
    for (var b = lid; b < nb; b += WG) {
        let base = row_base + b * BLOCK_BYTES;
        let xb = b * BLOCK_LEN;
        for (var j = 0u; j < BLOCK_LEN; j++) {
            let v = deq_scaled(base, j);
            for (var n = 0u; n < p.n; n++) {
                acc[n] += v * x[n * p.cols + xb + j];
            }
        }
        let m = f16_at(base + 2u);
        for (var n = 0u; n < p.n; n++) {
            acc[n] += m * x[sums + n * nb + b];
        }
    }
    return acc;
}
