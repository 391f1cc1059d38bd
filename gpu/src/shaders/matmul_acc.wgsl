// The per-thread sums of the matrix product (see matmul_common.wgsl): every
// element dequantized with `deq` and multiplied with x, f32 or rounded to an
// 8-bit format's values (act_round.wgsl).

// This thread's partial sums of row r for every activation column: the
// threads of a workgroup stride over the row's blocks.
fn accumulate(r: u32, lid: u32) -> array<f32, 16> {
    let nb = p.cols / BLOCK_LEN;
    let row_base = r * nb * BLOCK_BYTES;
    var acc: array<f32, 16>;
    for (var b = lid; b < nb; b += WG) {
        let base = row_base + b * BLOCK_BYTES;
        let xb = b * BLOCK_LEN;
        for (var j = 0u; j < BLOCK_LEN; j++) {
            let v = deq(base, j);
            for (var n = 0u; n < p.n; n++) {
                acc[n] += v * x[n * p.cols + xb + j];
            }
        }
    }
    return acc;
}
